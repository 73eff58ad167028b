//! Small helpers shared by the examples: the sentence arguments and JSON Lines output.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the sentences come from and where the results go.
#[derive(clap::Args, Debug)]
pub struct SentenceArgs {
    /// A file with one sentence per line (taken verbatim; an empty line is an empty sentence).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Write one JSON line per sentence here, in input order.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Sentences (after those of --input).
    pub sentences: Vec<String>,
}

impl SentenceArgs {
    /// The sentences of `--input` followed by the arguments (see [`read_sentences`]).
    pub fn texts(&self) -> Result<Vec<String>, String> {
        read_sentences(self.input.as_deref(), &self.sentences)
    }
}

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

/// Writes one JSON value per line to `path`; the number of lines written.
pub fn write_jsonl<T: serde::Serialize>(
    path: &Path,
    lines: impl IntoIterator<Item = T>,
) -> Result<usize, String> {
    let error = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let file = std::fs::File::create(path).map_err(error)?;
    let mut out = std::io::BufWriter::new(file);
    let mut count = 0;
    for line in lines {
        serde_json::to_writer(&mut out, &line).map_err(|e| error(e.into()))?;
        out.write_all(b"\n").map_err(error)?;
        count += 1;
    }
    out.flush().map_err(error)?;
    Ok(count)
}
