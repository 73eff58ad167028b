//! Arguments and files shared by the commands: the model, the sentences in, JSON Lines out,
//! progress bars.

use std::io::Write;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::error::CliError;
use super::model_ref::ModelArg;

/// The model, where the sentences come from and where the results go.
#[derive(clap::Args)]
pub struct SentenceArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A file with one sentence per line (taken verbatim; an empty line is an empty sentence).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Write one JSON line per sentence here, in input order.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Sentences per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Sentences (after those of --input).
    pub sentences: Vec<String>,
}

/// Sentences per progress update of [`SentenceArgs::map_chunks`].
const CHUNK: usize = 1024;

impl SentenceArgs {
    /// The sentences of `--input` followed by the arguments (see [`read_sentences`]).
    pub fn texts(&self) -> Result<Vec<String>, CliError> {
        read_sentences(self.input.as_deref(), &self.sentences)
    }

    /// `f` on `texts` a chunk at a time, the results concatenated in order, with a progress
    /// bar when there is more than one chunk (and no `--quiet`).
    pub fn map_chunks<T, E>(
        &self,
        texts: &[String],
        mut f: impl FnMut(&[&str]) -> Result<Vec<T>, E>,
    ) -> Result<Vec<T>, E> {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let bar = progress(refs.len(), self.quiet || refs.len() <= CHUNK, "sentences");
        let mut out = Vec::with_capacity(refs.len());
        for chunk in refs.chunks(CHUNK) {
            out.extend(f(chunk)?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(out)
    }
}

/// The sentences of `input` (one per line, verbatim; an empty line is an empty sentence) followed
/// by `extra`; an error when there are none or the file cannot be read.
pub fn read_sentences(input: Option<&Path>, extra: &[String]) -> Result<Vec<String>, CliError> {
    let mut texts = Vec::new();
    if let Some(path) = input {
        let content = std::fs::read_to_string(path).map_err(|e| CliError::Input {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        let content = content.strip_suffix('\n').unwrap_or(&content);
        texts.extend(
            content
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string()),
        );
    }
    texts.extend(extra.iter().cloned());
    if texts.is_empty() {
        return Err(CliError::usage(
            "sentences",
            "none given: pass them as arguments or with --input FILE",
        ));
    }
    Ok(texts)
}

/// Writes one JSON value per line to `path`; the number of lines written.
pub fn write_jsonl<T: serde::Serialize>(
    path: &Path,
    lines: impl IntoIterator<Item = T>,
) -> Result<usize, CliError> {
    let error = |source: std::io::Error| CliError::Write {
        path: path.to_path_buf(),
        source,
    };
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

/// Writes pretty JSON to `path`.
pub fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), CliError> {
    let mut text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
    text.push('\n');
    std::fs::write(path, text).map_err(|source| CliError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A progress bar over `len` items on stderr; hidden with `quiet` or when stderr is not a
/// terminal.
pub fn progress(len: usize, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {what} ({{per_sec}})");
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("template")
            .progress_chars("=> "),
    );
    bar
}

/// Splits a `FROM=TO`-style flag value.
pub fn pair(s: &str, flag: &str) -> Result<(String, String), CliError> {
    s.split_once('=')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .ok_or_else(|| CliError::usage(flag, format!("{s:?} is not A=B")))
}

/// How data files are read (shared by `train` and `eval`).
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// The text column (default: text, else sentence).
    #[arg(long)]
    pub text_column: Option<String>,
    /// Columns that are tasks (default: all but the text), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Option<Vec<String>>,
    /// Rename a column: FROM=TO (repeatable).
    #[arg(long)]
    pub rename: Vec<String>,
    /// Files have no header; their columns are these (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Skip malformed rows (they are counted and reported) instead of failing.
    #[arg(long)]
    pub skip_bad_rows: bool,
}

impl DataArgs {
    /// The reader's options.
    pub fn read_options(&self) -> Result<mtl_train::ReadOptions, CliError> {
        let rename = self
            .rename
            .iter()
            .map(|r| pair(r, "--rename"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(mtl_train::ReadOptions {
            header: self.columns.is_none(),
            columns: self.columns.clone(),
            text_column: self.text_column.clone(),
            tasks: self.tasks.clone(),
            rename,
            skip_bad_rows: self.skip_bad_rows,
            ..mtl_train::ReadOptions::default()
        })
    }

    /// The tables of `paths`.
    pub fn read(&self, paths: &[PathBuf]) -> Result<Vec<mtl_train::RawTable>, CliError> {
        let options = self.read_options()?;
        Ok(paths
            .iter()
            .map(|p| mtl_train::read_table(p, &options))
            .collect::<Result<_, _>>()?)
    }
}

/// The metrics of one evaluation as a table.
pub fn print_metrics(
    title: &str,
    tasks: &std::collections::BTreeMap<String, mtl_train::TaskMetrics>,
) {
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>8}",
        title, "accuracy", "macro-F1", "MCC", "support"
    );
    for (task, m) in tasks {
        println!(
            "{task:<14} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            m.accuracy, m.macro_f1, m.mcc, m.support
        );
    }
}
