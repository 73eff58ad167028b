//! Reading labelled sentences and turning them into datasets of label indices.
//!
//! [`read_table`] reads one file (TSV, CSV, JSON Lines or the TREC `.label` format) into a
//! [`RawTable`] of text plus `(task, label)` strings, keeping every text verbatim. [`Dataset`] then
//! fixes the tasks and their label sets from the training tables and maps dev/test tables onto
//! them. Several tables can be combined, e.g. one file per task: a row simply has no label for the
//! tasks its file lacks. Every problem with the input is a typed error naming the file and line.
//!
//! One file per format ([`delimited`] for TSV and CSV, [`jsonl`], [`trec`]); [`reader`] holds
//! what they share (column layout, line splitting, decoding).

mod dataset;
mod delimited;
mod jsonl;
mod reader;
#[cfg(test)]
mod test_util;
mod trec;

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};
use reader::Reader;

pub use dataset::{Dataset, Example};

/// The layout of a data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Tab-separated: rows split on `\n` (one trailing `\r` dropped), fields on `\t`, no quoting.
    Tsv,
    /// Comma-separated with RFC 4180 quoting.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// TREC question classification: `COARSE:fine question text` per line, Latin-1 allowed.
    TrecLabel,
}

impl Format {
    /// The format implied by the file extension: `.tsv`/`.txt` TSV, `.csv` CSV, `.jsonl`/`.json`
    /// JSON Lines, `.label` TREC; anything else is a `Config` error.
    pub fn from_path(path: &Path) -> Result<Format> {
        let extension = path.extension().and_then(|e| e.to_str());
        match extension.map(str::to_ascii_lowercase).as_deref() {
            Some("tsv" | "txt") => Ok(Format::Tsv),
            Some("csv") => Ok(Format::Csv),
            Some("jsonl" | "json") => Ok(Format::Jsonl),
            Some("label") => Ok(Format::TrecLabel),
            _ => Err(TrainError::Config(format!(
                "{}: cannot tell the data format from the file name (expected .tsv, .txt, .csv, \
                 .jsonl, .json or .label); name the format explicitly",
                path.display()
            ))),
        }
    }
}

/// How [`read_table`] interprets a file. Column names in `text_column` and `tasks` are the names
/// after `rename`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadOptions {
    /// The file format; `None` picks it from the extension ([`Format::from_path`]).
    pub format: Option<Format>,
    /// Whether the first line names the columns (TSV and CSV; default true).
    pub header: bool,
    /// Column names, required when there is no header; with a header, they replace its names.
    pub columns: Option<Vec<String>>,
    /// The column holding the sentence; default `text`, else `sentence`.
    pub text_column: Option<String>,
    /// The columns that are tasks; default every column but the text. Other columns are ignored.
    pub tasks: Option<Vec<String>>,
    /// Renames `(from, to)` applied to column names (and JSON keys, and TREC's `coarse` task).
    pub rename: Vec<(String, String)>,
    /// Record malformed rows in [`RawTable::skipped`] instead of failing (default false).
    pub skip_bad_rows: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            format: None,
            header: true,
            columns: None,
            text_column: None,
            tasks: None,
            rename: Vec::new(),
            skip_bad_rows: false,
        }
    }
}

/// One row of a file, before labels are mapped to indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRow {
    /// 1-based line of the file where the row starts.
    pub line: usize,
    /// The sentence, verbatim.
    pub text: String,
    /// `(task, label)` pairs, labels trimmed of surrounding whitespace; empty labels are omitted.
    pub labels: Vec<(String, String)>,
}

/// The rows of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTable {
    /// The file read.
    pub path: PathBuf,
    /// Its well-formed rows, in file order.
    pub rows: Vec<RawRow>,
    /// The task columns of the file, in column order (JSON Lines: order of first appearance).
    pub tasks: Vec<String>,
    /// `(line, reason)` of each malformed row skipped under `skip_bad_rows`.
    pub skipped: Vec<(usize, String)>,
}

/// Reads one labelled file.
///
/// Fails with `Io` when the file cannot be read, `Config` when the format, the text column or a
/// task column cannot be found, and `BadRow` (file and line) for a malformed row unless
/// `options.skip_bad_rows`. Invalid UTF-8 is a bad row, except in TREC files, which are decoded as
/// Latin-1 when the file is not valid UTF-8.
pub fn read_table(path: &Path, options: &ReadOptions) -> Result<RawTable> {
    let format = match options.format {
        Some(format) => format,
        None => Format::from_path(path)?,
    };
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = Reader {
        path,
        options,
        skipped: Vec::new(),
    };
    let (rows, tasks) = match format {
        Format::Tsv => reader.tsv(&bytes)?,
        Format::Csv => reader.csv(&bytes)?,
        Format::Jsonl => reader.json_lines(&bytes)?,
        Format::TrecLabel => reader.trec(&bytes)?,
    };
    Ok(RawTable {
        path: path.to_path_buf(),
        rows,
        tasks,
        skipped: reader.skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn formats_from_extensions() {
        let f = |p: &str| Format::from_path(Path::new(p));
        assert_eq!(f("a/train.tsv").unwrap(), Format::Tsv);
        assert_eq!(f("imdb_labelled.txt").unwrap(), Format::Tsv);
        assert_eq!(f("x.CSV").unwrap(), Format::Csv);
        assert_eq!(f("x.jsonl").unwrap(), Format::Jsonl);
        assert_eq!(f("x.json").unwrap(), Format::Jsonl);
        assert_eq!(f("TREC_10.label").unwrap(), Format::TrecLabel);
        for bad in ["x.parquet", "noext"] {
            let err = f(bad).unwrap_err();
            assert!(
                matches!(&err, TrainError::Config(m) if m.contains(bad)),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_file_and_missing_text_column() {
        let path = std::env::temp_dir().join("mtl-data-test-does-not-exist.tsv");
        match read_table(&path, &ReadOptions::default()) {
            Err(TrainError::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("unexpected {other:?}"),
        }
        let file = TempFile::new("cols.tsv", b"review\tlabel\ngood\t1\n");
        let err = try_read(&file.0).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, TrainError::Config(_)));
        assert!(message.contains(&file.0.display().to_string()), "{message}");
        assert!(message.contains("review, label"), "{message}");
        let options = ReadOptions {
            text_column: Some("review".into()),
            ..ReadOptions::default()
        };
        assert_eq!(read_table(&file.0, &options).unwrap().rows[0].text, "good");
        let options = ReadOptions {
            tasks: Some(strings(&["stars"])),
            ..ReadOptions::default()
        };
        let err = read_table(&data("sst2/train.tsv"), &options).unwrap_err();
        assert!(
            matches!(&err, TrainError::Config(m) if m.contains("`stars`")),
            "{err}"
        );
    }
}
