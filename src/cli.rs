//! Small helpers shared by the examples.

use std::path::Path;

/// The sentences of `input` (one per line, verbatim; an empty line is an empty sentence) followed
/// by `extra`; an error when there are none or the file cannot be read.
pub fn read_sentences(input: Option<&Path>, extra: &[String]) -> Result<Vec<String>, String> {
    let mut texts = Vec::new();
    if let Some(path) = input {
        let content = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        texts.extend(
            content
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string()),
        );
    }
    texts.extend(extra.iter().cloned());
    if texts.is_empty() {
        return Err("no sentences: give them as arguments or with --input FILE".into());
    }
    Ok(texts)
}
