//! What the format readers share: the state of reading one file, the column layout of
//! fixed-column formats, and line splitting, decoding and naming helpers.

use std::path::Path;

use super::{RawRow, ReadOptions};
use crate::error::{Result, TrainError};

/// A row's fields, or why the row is malformed.
pub(super) type Fields = std::result::Result<Vec<String>, String>;

/// The state of reading one file.
pub(super) struct Reader<'a> {
    pub(super) path: &'a Path,
    pub(super) options: &'a ReadOptions,
    pub(super) skipped: Vec<(usize, String)>,
}

impl Reader<'_> {
    /// Records a malformed row, or fails with it unless bad rows are skipped.
    pub(super) fn bad(&mut self, line: usize, message: String) -> Result<()> {
        if self.options.skip_bad_rows {
            self.skipped.push((line, message));
            Ok(())
        } else {
            Err(bad_row(self.path, line, message))
        }
    }

    /// Rows of fixed columns `names` (before renaming).
    pub(super) fn tabular(
        &mut self,
        names: Vec<String>,
        records: impl Iterator<Item = (usize, Fields)>,
    ) -> Result<(Vec<RawRow>, Vec<String>)> {
        let layout = Layout::new(self.path, self.options, names)?;
        let mut rows = Vec::new();
        for (line, fields) in records {
            match fields.and_then(|fields| layout.row(line, fields)) {
                Ok(row) => rows.push(row),
                Err(message) => self.bad(line, message)?,
            }
        }
        let tasks = layout.tasks.into_iter().map(|(name, _)| name).collect();
        Ok((rows, tasks))
    }
}

/// Which fields of a fixed-column file are the text and the tasks.
struct Layout {
    width: usize,
    text: usize,
    /// `(task name, field index)`.
    tasks: Vec<(String, usize)>,
}

impl Layout {
    fn new(path: &Path, options: &ReadOptions, names: Vec<String>) -> Result<Layout> {
        let names: Vec<String> = names.into_iter().map(|n| renamed(options, n)).collect();
        let config = |message: String| {
            TrainError::Config(format!(
                "{}: {message} (columns: {})",
                path.display(),
                names.join(", ")
            ))
        };
        if let Some(name) = duplicate(&names) {
            return Err(config(format!("column `{name}` appears twice")));
        }
        let text = text_column(path, options, &names)?;
        let tasks = match &options.tasks {
            Some(wanted) => wanted
                .iter()
                .map(|task| match names.iter().position(|n| n == task) {
                    Some(i) if i != text => Ok((task.clone(), i)),
                    _ => Err(config(format!("no task column `{task}`"))),
                })
                .collect::<Result<_>>()?,
            None => names
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != text)
                .map(|(i, name)| (name.clone(), i))
                .collect(),
        };
        Ok(Layout {
            width: names.len(),
            text,
            tasks,
        })
    }

    /// The row made of `fields`, or why they do not fit the columns.
    fn row(&self, line: usize, mut fields: Vec<String>) -> std::result::Result<RawRow, String> {
        if fields.len() != self.width {
            return Err(format!(
                "expected {} fields, found {}",
                self.width,
                fields.len()
            ));
        }
        let labels = self
            .tasks
            .iter()
            .filter_map(|(task, i)| label(&fields[*i]).map(|l| (task.clone(), l)))
            .collect();
        Ok(RawRow {
            line,
            text: std::mem::take(&mut fields[self.text]),
            labels,
        })
    }
}

pub(super) fn bad_row(path: &Path, line: usize, message: String) -> TrainError {
    TrainError::BadRow {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// `name` after `options.rename`.
pub(super) fn renamed(options: &ReadOptions, name: String) -> String {
    match options.rename.iter().find(|(from, _)| *from == name) {
        Some((_, to)) => to.clone(),
        None => name,
    }
}

/// The first name that occurs twice.
pub(super) fn duplicate(names: &[String]) -> Option<&String> {
    names
        .iter()
        .enumerate()
        .find_map(|(i, n)| names[..i].contains(n).then_some(n))
}

/// The index of the text column among `names`: `options.text_column`, else `text`, else
/// `sentence`.
pub(super) fn text_column(path: &Path, options: &ReadOptions, names: &[String]) -> Result<usize> {
    let wanted: Vec<&str> = match &options.text_column {
        Some(name) => vec![name],
        None => vec!["text", "sentence"],
    };
    wanted
        .iter()
        .find_map(|w| names.iter().position(|n| n == w))
        .ok_or_else(|| {
            TrainError::Config(format!(
                "{}: no text column `{}` (columns found: {})",
                path.display(),
                wanted.join("` or `"),
                names.join(", ")
            ))
        })
}

/// A label field trimmed, or `None` when empty.
pub(super) fn label(field: &str) -> Option<String> {
    let label = field.trim();
    (!label.is_empty()).then(|| label.to_owned())
}

/// The lines of a file with their 1-based numbers, split on `\n` with one trailing `\r` removed;
/// the empty piece after a final `\n` is not a line.
pub(super) fn split_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
}

pub(super) fn decode_utf8(raw: &[u8]) -> std::result::Result<String, String> {
    String::from_utf8(raw.to_vec()).map_err(|e| {
        format!(
            "not valid UTF-8 (byte {} of the line)",
            e.utf8_error().valid_up_to() + 1
        )
    })
}
