//! Reading labelled sentences and turning them into datasets of label indices.
//!
//! [`read_table`] reads one file (TSV, CSV, JSON Lines or the TREC `.label` format) into a
//! [`RawTable`] of text plus `(task, label)` strings, keeping every text verbatim. [`Dataset`] then
//! fixes the tasks and their label sets from the training tables and maps dev/test tables onto
//! them. Several tables can be combined, e.g. one file per task: a row simply has no label for the
//! tasks its file lacks. Every problem with the input is a typed error naming the file and line.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

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
        Format::Tsv => reader.delimited(split_lines(&bytes).map(|(line, raw)| {
            let fields = decode_utf8(raw).map(|s| s.split('\t').map(str::to_owned).collect());
            (line, fields)
        }))?,
        Format::Csv => reader.delimited(csv_records(path, &bytes)?.into_iter())?,
        Format::Jsonl => reader.json_lines(&bytes)?,
        Format::TrecLabel => {
            let latin1 = std::str::from_utf8(&bytes).is_err();
            let names = vec!["text".to_owned(), "coarse".to_owned()];
            reader.tabular(
                names,
                split_lines(&bytes).map(|(line, raw)| (line, trec_fields(raw, latin1))),
            )?
        }
    };
    Ok(RawTable {
        path: path.to_path_buf(),
        rows,
        tasks,
        skipped: reader.skipped,
    })
}

/// A row's fields, or why the row is malformed.
type Fields = std::result::Result<Vec<String>, String>;

/// The state of reading one file.
struct Reader<'a> {
    path: &'a Path,
    options: &'a ReadOptions,
    skipped: Vec<(usize, String)>,
}

impl Reader<'_> {
    /// Records a malformed row, or fails with it unless bad rows are skipped.
    fn bad(&mut self, line: usize, message: String) -> Result<()> {
        if self.options.skip_bad_rows {
            self.skipped.push((line, message));
            Ok(())
        } else {
            Err(bad_row(self.path, line, message))
        }
    }

    /// TSV or CSV records: the header (if any) names the columns, unless `columns` does.
    fn delimited(
        &mut self,
        mut records: impl Iterator<Item = (usize, Fields)>,
    ) -> Result<(Vec<RawRow>, Vec<String>)> {
        let header = if self.options.header {
            let Some((line, fields)) = records.next() else {
                return Err(TrainError::Data(format!(
                    "{}: the file is empty, expected a header line",
                    self.path.display()
                )));
            };
            Some(fields.map_err(|message| bad_row(self.path, line, message))?)
        } else {
            None
        };
        let names = match (&self.options.columns, header) {
            (Some(columns), _) => columns.clone(),
            (None, Some(header)) => header,
            (None, None) => {
                return Err(TrainError::Config(format!(
                    "{}: the file has no header line, so `columns` must name its columns",
                    self.path.display()
                )))
            }
        };
        self.tabular(names, records)
    }

    /// Rows of fixed columns `names` (before renaming).
    fn tabular(
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

    /// JSON Lines: each non-blank line an object; the text key is fixed by the first object.
    fn json_lines(&mut self, bytes: &[u8]) -> Result<(Vec<RawRow>, Vec<String>)> {
        let mut text_key = None;
        let mut tasks = self.options.tasks.clone().unwrap_or_default();
        let mut rows = Vec::new();
        for (line, raw) in split_lines(bytes) {
            if raw.trim_ascii().is_empty() {
                continue;
            }
            match self.json_row(line, raw, &mut text_key)? {
                Ok((row, keys)) => {
                    for key in keys {
                        if !tasks.contains(&key) {
                            tasks.push(key);
                        }
                    }
                    rows.push(row);
                }
                Err(message) => self.bad(line, message)?,
            }
        }
        Ok((rows, tasks))
    }

    /// One JSON line: the row and its task keys in order, or why the row is malformed. Fails only
    /// when the first object has no text key.
    fn json_row(
        &self,
        line: usize,
        raw: &[u8],
        text_key: &mut Option<String>,
    ) -> Result<std::result::Result<(RawRow, Vec<String>), String>> {
        let object = match decode_utf8(raw).and_then(|s| {
            serde_json::from_str::<Object>(&s).map_err(|e| format!("invalid JSON object: {e}"))
        }) {
            Ok(object) => object,
            Err(message) => return Ok(Err(message)),
        };
        let fields: Vec<(String, serde_json::Value)> = object
            .0
            .into_iter()
            .map(|(key, value)| (renamed(self.options, key), value))
            .collect();
        let keys: Vec<String> = fields.iter().map(|(key, _)| key.clone()).collect();
        if let Some(key) = duplicate(&keys) {
            return Ok(Err(format!("key `{key}` appears twice")));
        }
        let text_key = match text_key {
            Some(key) => key.clone(),
            None => text_key
                .insert(keys[text_column(self.path, self.options, &keys)?].clone())
                .clone(),
        };
        let mut text = None;
        let mut labels = Vec::new();
        let mut tasks = Vec::new();
        for (key, value) in fields {
            if key == text_key {
                match value {
                    serde_json::Value::String(s) => text = Some(s),
                    _ => return Ok(Err(format!("`{key}` is not a string"))),
                }
                continue;
            }
            if self
                .options
                .tasks
                .as_ref()
                .is_some_and(|wanted| !wanted.contains(&key))
            {
                continue;
            }
            let label = match value {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => label(&s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => {
                    return Ok(Err(format!(
                        "`{key}` must be a string, number, bool or null"
                    )))
                }
            };
            if let Some(label) = label {
                labels.push((key.clone(), label));
            }
            tasks.push(key);
        }
        Ok(match text {
            Some(text) => Ok((RawRow { line, text, labels }, tasks)),
            None => Err(format!("no `{text_key}` key")),
        })
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

/// A JSON object with its keys in file order (serde_json's own map sorts them).
struct Object(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Object, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Object(entries))
            }
        }
        d.deserialize_map(Entries)
    }
}

fn bad_row(path: &Path, line: usize, message: String) -> TrainError {
    TrainError::BadRow {
        path: path.to_path_buf(),
        line,
        message,
    }
}

/// `name` after `options.rename`.
fn renamed(options: &ReadOptions, name: String) -> String {
    match options.rename.iter().find(|(from, _)| *from == name) {
        Some((_, to)) => to.clone(),
        None => name,
    }
}

/// The first name that occurs twice.
fn duplicate(names: &[String]) -> Option<&String> {
    names
        .iter()
        .enumerate()
        .find_map(|(i, n)| names[..i].contains(n).then_some(n))
}

/// The index of the text column among `names`: `options.text_column`, else `text`, else
/// `sentence`.
fn text_column(path: &Path, options: &ReadOptions, names: &[String]) -> Result<usize> {
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
fn label(field: &str) -> Option<String> {
    let label = field.trim();
    (!label.is_empty()).then(|| label.to_owned())
}

/// The lines of a file with their 1-based numbers, split on `\n` with one trailing `\r` removed;
/// the empty piece after a final `\n` is not a line.
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
}

fn decode_utf8(raw: &[u8]) -> std::result::Result<String, String> {
    String::from_utf8(raw.to_vec()).map_err(|e| {
        format!(
            "not valid UTF-8 (byte {} of the line)",
            e.utf8_error().valid_up_to() + 1
        )
    })
}

/// A TREC line `COARSE:fine question` as fields `[question, COARSE]`.
fn trec_fields(raw: &[u8], latin1: bool) -> Fields {
    let line = if latin1 {
        raw.iter().map(|&b| char::from(b)).collect()
    } else {
        decode_utf8(raw)?
    };
    let (label, text) = line
        .split_once(' ')
        .ok_or_else(|| "expected `COARSE:fine question`, found no space".to_owned())?;
    let (coarse, _fine) = label
        .split_once(':')
        .ok_or_else(|| format!("expected `COARSE:fine` before the first space, found {label:?}"))?;
    Ok(vec![text.to_owned(), coarse.to_owned()])
}

/// Every CSV record with the line it starts on.
fn csv_records(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, Fields)>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true) // field counts are checked against the columns, naming the line
        .from_reader(bytes);
    let mut records = Vec::new();
    for record in reader.byte_records() {
        let record = record.map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        records.push((line, record.iter().map(decode_utf8).collect()));
    }
    Ok(records)
}

/// A classification task and its label set; a label's index is its position.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// The task (column) name.
    pub name: String,
    /// The class names.
    pub labels: Vec<String>,
}

/// A sentence and its label index for each task of its [`Dataset`] (`None`: not labelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// The sentence, verbatim.
    pub text: String,
    /// Label index per task, in the order of [`Dataset::tasks`].
    pub labels: Vec<Option<usize>>,
}

/// Examples labelled for one or more tasks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dataset {
    /// The tasks, in order of first appearance in the training tables.
    pub tasks: Vec<Task>,
    /// The labelled rows of all tables, in table and file order.
    pub examples: Vec<Example>,
    /// Rows left out or left short: malformed rows skipped while reading, rows without any label,
    /// and rows that lost a label unknown to its task (each row counted once).
    pub skipped: usize,
}

impl Dataset {
    /// The training set: tasks in order of first appearance across `tables`, each with its labels
    /// from `given` when listed there (a row label outside them is `UnknownLabel`), else the
    /// labels found in the data, sorted (numerically when all are integers, else
    /// lexicographically). Rows with no label are dropped and counted in `skipped`.
    ///
    /// Fails with `Data` when there is no labelled row, a task has fewer than 2 labels, `given`
    /// names a task no table has or repeats a label.
    pub fn from_train(tables: &[RawTable], given: &[(String, Vec<String>)]) -> Result<Dataset> {
        let mut names: Vec<&str> = Vec::new();
        for name in tables.iter().flat_map(|t| &t.tasks) {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        if let Some((name, _)) = given.iter().find(|(n, _)| !names.contains(&n.as_str())) {
            return Err(TrainError::Data(format!(
                "labels are given for task `{name}`, which no training file has (tasks: {})",
                names.join(", ")
            )));
        }
        let tasks = names
            .iter()
            .map(|&name| {
                let labels = match given.iter().find(|(n, _)| n == name) {
                    Some((_, labels)) => {
                        if let Some(label) = duplicate(labels) {
                            return Err(TrainError::Data(format!(
                                "the labels given for task `{name}` repeat {label:?}"
                            )));
                        }
                        labels.clone()
                    }
                    None => sorted_labels(
                        tables
                            .iter()
                            .flat_map(|t| &t.rows)
                            .flat_map(|r| &r.labels)
                            .filter(|(task, _)| task == name)
                            .map(|(_, label)| label.as_str()),
                    ),
                };
                if labels.len() < 2 {
                    return Err(TrainError::Data(format!(
                        "task `{name}` has {} distinct label(s) [{}]; at least 2 are needed",
                        labels.len(),
                        labels.join(", ")
                    )));
                }
                Ok(Task {
                    name: name.to_owned(),
                    labels,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dataset = Self::with_tasks(&tasks, tables, false)?;
        if dataset.examples.is_empty() {
            let files: Vec<String> = tables
                .iter()
                .map(|t| t.path.display().to_string())
                .collect();
            return Err(TrainError::Data(format!(
                "no labelled training rows in [{}]",
                files.join(", ")
            )));
        }
        Ok(dataset)
    }

    /// A dev/test set mapped onto the training `tasks`. A label unknown to its task is
    /// `UnknownLabel` (file, line, task, label, known labels), or with `skip_bad_rows` dropped
    /// from the row and counted in `skipped`; rows left with no label are dropped and counted. A
    /// table task that is not a training task is a `Data` error.
    pub fn with_tasks(tasks: &[Task], tables: &[RawTable], skip_bad_rows: bool) -> Result<Dataset> {
        let task_of: HashMap<&str, usize> = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let label_of: Vec<HashMap<&str, usize>> = tasks
            .iter()
            .map(|t| {
                t.labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.as_str(), i))
                    .collect()
            })
            .collect();
        let mut examples = Vec::new();
        let mut skipped = 0;
        for table in tables {
            skipped += table.skipped.len();
            let not_trained = |name: &str| {
                let known: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
                TrainError::Data(format!(
                    "{}: task `{name}` is not a training task (tasks: {})",
                    table.path.display(),
                    known.join(", ")
                ))
            };
            if let Some(name) = table
                .tasks
                .iter()
                .find(|t| !task_of.contains_key(t.as_str()))
            {
                return Err(not_trained(name));
            }
            for row in &table.rows {
                let mut labels = vec![None; tasks.len()];
                let mut lost = false;
                for (task, label) in &row.labels {
                    let &t = task_of
                        .get(task.as_str())
                        .ok_or_else(|| not_trained(task))?;
                    match label_of[t].get(label.as_str()) {
                        Some(&l) => labels[t] = Some(l),
                        None if skip_bad_rows => lost = true,
                        None => {
                            return Err(TrainError::UnknownLabel {
                                path: table.path.clone(),
                                line: row.line,
                                task: task.clone(),
                                label: label.clone(),
                                known: tasks[t].labels.join(", "),
                            })
                        }
                    }
                }
                let labelled = labels.iter().any(Option::is_some);
                if lost || !labelled {
                    skipped += 1;
                }
                if labelled {
                    examples.push(Example {
                        text: row.text.clone(),
                        labels,
                    });
                }
            }
        }
        Ok(Dataset {
            tasks: tasks.to_vec(),
            examples,
            skipped,
        })
    }

    /// The index of the task called `name`.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }

    /// Examples per label of task `task` (empty for an unknown task index).
    pub fn label_counts(&self, task: usize) -> Vec<usize> {
        let mut counts = vec![0; self.tasks.get(task).map_or(0, |t| t.labels.len())];
        for example in &self.examples {
            if let Some(Some(label)) = example.labels.get(task) {
                if let Some(count) = counts.get_mut(*label) {
                    *count += 1;
                }
            }
        }
        counts
    }
}

/// The distinct labels, in numeric order when all are integers, else lexicographic.
fn sorted_labels<'a>(labels: impl Iterator<Item = &'a str>) -> Vec<String> {
    let distinct: BTreeSet<&str> = labels.collect();
    let mut labels: Vec<String> = distinct.into_iter().map(str::to_owned).collect();
    if labels.iter().all(|l| l.parse::<i64>().is_ok()) {
        labels.sort_by_key(|l| l.parse::<i64>().unwrap_or_default());
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The shared data folder: `$MTL_SHARED`, else `shared/` beside the workspace.
    fn shared() -> PathBuf {
        std::env::var_os("MTL_SHARED").map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared")),
            PathBuf::from,
        )
    }

    fn data(file: &str) -> PathBuf {
        shared().join("data").join(file)
    }

    /// A temporary file holding `contents`, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("mtl-data-test-{}-{n}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn try_read(path: &Path) -> Result<RawTable> {
        read_table(path, &ReadOptions::default())
    }

    fn read(path: &Path) -> RawTable {
        try_read(path).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

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
    fn uci_multi_task_splits() {
        let train = read(&data("uci-mtl/train.tsv"));
        assert_eq!(train.rows.len(), 2397);
        assert_eq!(train.tasks, strings(&["domain", "sentiment"]));
        assert!(train.skipped.is_empty());
        assert_eq!(
            train.rows[0],
            RawRow {
                line: 2,
                text: "An extensive menu provides lots of options for breakfast.".into(),
                labels: pairs(&[("domain", "yelp"), ("sentiment", "positive")]),
            }
        );
        let ds = Dataset::from_train(&[train], &[]).unwrap();
        assert_eq!(ds.examples.len(), 2397);
        assert_eq!(ds.skipped, 0);
        assert_eq!(
            ds.tasks,
            vec![
                Task {
                    name: "domain".into(),
                    labels: strings(&["amazon", "imdb", "yelp"])
                },
                Task {
                    name: "sentiment".into(),
                    labels: strings(&["negative", "positive"])
                },
            ]
        );
        assert_eq!(ds.examples[0].labels, [Some(2), Some(1)]);
        assert_eq!(ds.task_index("sentiment"), Some(1));
        assert_eq!(ds.task_index("topic"), None);
        assert_eq!(ds.label_counts(0), [798, 800, 799]);
        assert_eq!(ds.label_counts(1), [1198, 1199]);
        assert!(ds.label_counts(2).is_empty());

        let dev = Dataset::with_tasks(&ds.tasks, &[read(&data("uci-mtl/dev.tsv"))], false).unwrap();
        assert_eq!(dev.examples.len(), 301);
        assert_eq!(dev.label_counts(0), [101, 100, 100]);
        assert_eq!(dev.label_counts(1), [151, 150]);
        let test =
            Dataset::with_tasks(&ds.tasks, &[read(&data("uci-mtl/test.tsv"))], false).unwrap();
        assert_eq!(test.examples.len(), 302);
        assert_eq!(test.label_counts(0), [101, 100, 101]);
        assert_eq!(test.examples[0].text, "Bad Quality.");
    }

    #[test]
    fn sst2_uses_the_sentence_column_and_numeric_labels() {
        let train = read(&data("sst2/train.tsv"));
        assert_eq!(train.rows.len(), 67349);
        assert_eq!(train.tasks, strings(&["label"]));
        // Text is verbatim, trailing space included.
        assert_eq!(
            train.rows[0].text,
            "hide new secretions from the parental units "
        );
        let ds = Dataset::from_train(&[train], &[]).unwrap();
        assert_eq!(ds.tasks[0].labels, strings(&["0", "1"]));
        assert_eq!(ds.label_counts(0), [29780, 37569]);

        let options = ReadOptions {
            rename: pairs(&[("label", "sentiment")]),
            ..ReadOptions::default()
        };
        let renamed = read_table(&data("sst2/train.tsv"), &options).unwrap();
        assert_eq!(renamed.tasks, strings(&["sentiment"]));
        assert_eq!(renamed.rows[0].labels, pairs(&[("sentiment", "0")]));
    }

    #[test]
    fn trec_latin1_questions() {
        let train = read(&data("trec/train_5500.label"));
        assert_eq!(train.rows.len(), 5452);
        assert_eq!(train.tasks, strings(&["coarse"]));
        assert_eq!(
            train.rows[0],
            RawRow {
                line: 1,
                text: "How did serfdom develop in and then leave Russia ?".into(),
                labels: pairs(&[("coarse", "DESC")]),
            }
        );
        // Byte 0xF0 decoded as Latin-1.
        assert_eq!(train.rows[65].line, 66);
        assert_eq!(
            train.rows[65].text,
            "Which city has the oldest relationship as a sister\u{f0}city with Los Angeles ?"
        );
        let ds = Dataset::from_train(&[train], &[]).unwrap();
        assert_eq!(
            ds.tasks[0].labels,
            strings(&["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"])
        );
        assert_eq!(ds.label_counts(0), [86, 1162, 1250, 1223, 835, 896]);
        let test =
            Dataset::with_tasks(&ds.tasks, &[read(&data("trec/TREC_10.label"))], false).unwrap();
        assert_eq!(test.examples.len(), 500);
        assert_eq!(test.label_counts(0), [9, 138, 94, 65, 81, 113]);

        let options = ReadOptions {
            rename: pairs(&[("coarse", "question")]),
            header: false, // ignored: TREC files have no header
            ..ReadOptions::default()
        };
        let renamed = read_table(&data("trec/TREC_10.label"), &options).unwrap();
        assert_eq!(renamed.tasks, strings(&["question"]));
        assert_eq!(renamed.rows.len(), 500);
    }

    #[test]
    fn headerless_source_file_keeps_quotes_and_control_characters() {
        let options = ReadOptions {
            header: false,
            columns: Some(strings(&["text", "sentiment"])),
            ..ReadOptions::default()
        };
        let path = data("sentiment-labelled-sentences/imdb_labelled.txt");
        let table = read_table(&path, &options).unwrap();
        assert_eq!(table.rows.len(), 1000);
        assert_eq!(table.rows[0].line, 1);
        let r = &table.rows[14];
        assert!(r.text.starts_with("This is a very \"right on case\" movie"));
        let r = &table.rows[178];
        assert_eq!(r.text, "The script is\u{85}was there a script?  ");
        assert_eq!(r.labels, pairs(&[("sentiment", "0")]));
        assert!(table.rows[18].text.contains('\u{96}'));
        let ds = Dataset::from_train(&[table], &[]).unwrap();
        assert_eq!(ds.label_counts(0), [500, 500]);

        // Without a header the columns must be named.
        let options = ReadOptions {
            header: false,
            ..ReadOptions::default()
        };
        let err = read_table(&path, &options).unwrap_err();
        assert!(
            matches!(&err, TrainError::Config(m) if m.contains("`columns`")),
            "{err}"
        );
    }

    #[test]
    fn wrong_field_count_names_file_and_line() {
        let file = TempFile::new(
            "bad.tsv",
            b"text\tlabel\na \"quoted\tpos\nno label here\nok\tneg\r\n\n",
        );
        let err = try_read(&file.0).unwrap_err();
        match &err {
            TrainError::BadRow {
                path,
                line,
                message,
            } => {
                assert_eq!(path, &file.0);
                assert_eq!(*line, 3);
                assert_eq!(message, "expected 2 fields, found 1");
            }
            other => panic!("unexpected {other}"),
        }
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("{}:3: ", file.0.display())),
            "{shown}"
        );

        let options = ReadOptions {
            skip_bad_rows: true,
            ..ReadOptions::default()
        };
        let table = read_table(&file.0, &options).unwrap();
        // Line 5 is empty (one field): also bad; the final newline ends the file.
        assert_eq!(
            table.skipped,
            vec![
                (3, "expected 2 fields, found 1".to_string()),
                (5, "expected 2 fields, found 1".to_string())
            ]
        );
        assert_eq!(
            table.rows,
            vec![
                RawRow {
                    line: 2,
                    text: "a \"quoted".into(),
                    labels: pairs(&[("label", "pos")])
                },
                RawRow {
                    line: 4,
                    text: "ok".into(),
                    labels: pairs(&[("label", "neg")])
                },
            ]
        );
        let ds = Dataset::from_train(&[table], &[]).unwrap();
        assert_eq!(ds.skipped, 2);
        assert_eq!(ds.examples.len(), 2);
    }

    #[test]
    fn invalid_utf8_is_a_bad_row_outside_trec() {
        let file = TempFile::new("latin.tsv", b"text\tlabel\nfine\t1\ncaf\xe9\t0\n");
        let err = try_read(&file.0).unwrap_err();
        assert!(
            matches!(&err, TrainError::BadRow { line: 3, message, .. } if message.contains("UTF-8")),
            "{err}"
        );
        let file = TempFile::new(
            "latin.label",
            b"NUM:date When ?\nHUM:ind Who is Andr\xe9 ?\n",
        );
        let table = read(&file.0);
        assert_eq!(table.rows[1].text, "Who is Andr\u{e9} ?");
        assert_eq!(table.rows[1].labels, pairs(&[("coarse", "HUM")]));
        let file = TempFile::new("broken.label", b"NUM:date When ?\nnospace\nHUM Who ?\n");
        let options = ReadOptions {
            skip_bad_rows: true,
            ..ReadOptions::default()
        };
        let table = read_table(&file.0, &options).unwrap();
        assert_eq!(table.rows.len(), 1);
        assert_eq!(
            table.skipped.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
            [2, 3]
        );
    }

    #[test]
    fn csv_quoting_and_line_numbers() {
        let file = TempFile::new(
            "q.csv",
            b"sentence,label,source\n\"hello, \"\"world\"\"\",pos,a\n\"two\nlines\",neg,b\nshort,pos\n,,c\n",
        );
        let err = try_read(&file.0).unwrap_err();
        assert!(
            matches!(&err, TrainError::BadRow { line: 5, message, .. } if message == "expected 3 fields, found 2"),
            "{err}"
        );
        let options = ReadOptions {
            skip_bad_rows: true,
            tasks: Some(strings(&["label"])),
            ..ReadOptions::default()
        };
        let table = read_table(&file.0, &options).unwrap();
        assert_eq!(table.tasks, strings(&["label"]));
        assert_eq!(table.skipped.len(), 1);
        let got: Vec<(usize, &str, usize)> = table
            .rows
            .iter()
            .map(|r| (r.line, r.text.as_str(), r.labels.len()))
            .collect();
        assert_eq!(
            got,
            [(2, "hello, \"world\"", 1), (3, "two\nlines", 1), (6, "", 0)]
        );
    }

    #[test]
    fn json_lines_keys_in_file_order() {
        let file = TempFile::new(
            "rows.jsonl",
            br#"{"text":"a","topic":"x","stars":5}
{"stars":null,"text":"b","lang":"en","ok":true}

{"text":"c","topic":""}
[1,2]
{"topic":"y"}
{"text":"d","topic":["x"]}
"#,
        );
        let err = try_read(&file.0).unwrap_err();
        assert!(
            matches!(&err, TrainError::BadRow { line: 5, message, .. } if message.starts_with("invalid JSON object")),
            "{err}"
        );
        let options = ReadOptions {
            skip_bad_rows: true,
            ..ReadOptions::default()
        };
        let table = read_table(&file.0, &options).unwrap();
        assert_eq!(table.tasks, strings(&["topic", "stars", "lang", "ok"]));
        assert_eq!(
            table.rows,
            vec![
                RawRow {
                    line: 1,
                    text: "a".into(),
                    labels: pairs(&[("topic", "x"), ("stars", "5")])
                },
                RawRow {
                    line: 2,
                    text: "b".into(),
                    labels: pairs(&[("lang", "en"), ("ok", "true")])
                },
                RawRow {
                    line: 4,
                    text: "c".into(),
                    labels: vec![]
                },
            ]
        );
        assert_eq!(
            table.skipped,
            vec![
                (5, table.skipped[0].1.clone()),
                (6, "no `text` key".to_string()),
                (
                    7,
                    "`topic` must be a string, number, bool or null".to_string()
                ),
            ]
        );

        let file = TempFile::new("nokey.jsonl", br#"{"body":"a","topic":"x"}"#);
        let err = try_read(&file.0).unwrap_err();
        assert!(
            matches!(&err, TrainError::Config(m) if m.contains("nokey.jsonl") && m.contains("body, topic")),
            "{err}"
        );
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

    #[test]
    fn tables_combine_per_task_and_label_order() {
        let domain = TempFile::new("domain.tsv", b"text\tdomain\nd1\tweb\nd2\tnews\nd3\t\n");
        let stars = TempFile::new("stars.tsv", b"text\tstars\ns1\t10\ns2\t9\ns3\t2\ns4\t9\n");
        let tables = [read(&domain.0), read(&stars.0)];
        let ds = Dataset::from_train(&tables, &[]).unwrap();
        assert_eq!(
            ds.tasks,
            vec![
                Task {
                    name: "domain".into(),
                    labels: strings(&["news", "web"])
                },
                Task {
                    name: "stars".into(),
                    labels: strings(&["2", "9", "10"])
                },
            ]
        );
        let labels: Vec<&[Option<usize>]> = ds.examples.iter().map(|e| &e.labels[..]).collect();
        assert_eq!(
            labels,
            [
                &[Some(1), None][..],
                &[Some(0), None],
                &[None, Some(2)],
                &[None, Some(1)],
                &[None, Some(0)],
                &[None, Some(1)],
            ]
        );
        // d3 has no label.
        assert_eq!(ds.skipped, 1);
        assert_eq!(ds.examples[2].text, "s1");

        let given = [("domain".to_string(), strings(&["web", "news", "blog"]))];
        let ds = Dataset::from_train(&tables, &given).unwrap();
        assert_eq!(ds.tasks[0].labels, strings(&["web", "news", "blog"]));
        assert_eq!(ds.examples[0].labels, [Some(0), None]);
        assert_eq!(ds.label_counts(0), [1, 1, 0]);

        let given = [("domain".to_string(), strings(&["web", "blog"]))];
        let err = Dataset::from_train(&tables, &given).unwrap_err();
        assert!(
            matches!(&err, TrainError::UnknownLabel { line: 3, label, .. } if label == "news"),
            "{err}"
        );
        let given = [("topic".to_string(), strings(&["a", "b"]))];
        assert!(
            matches!(Dataset::from_train(&tables, &given), Err(TrainError::Data(m)) if m.contains("`topic`"))
        );
    }

    #[test]
    fn training_needs_rows_and_two_labels() {
        let one = TempFile::new("one.tsv", b"text\ttopic\na\tx\nb\tx\n");
        let err = Dataset::from_train(&[read(&one.0)], &[]).unwrap_err();
        assert!(
            matches!(&err, TrainError::Data(m) if m.contains("`topic`") && m.contains("1 distinct")),
            "{err}"
        );
        let empty = TempFile::new("empty.tsv", b"text\ttopic\n");
        let err = Dataset::from_train(&[read(&empty.0)], &[]).unwrap_err();
        assert!(
            matches!(&err, TrainError::Data(m) if m.contains("0 distinct")),
            "{err}"
        );
        let err = Dataset::from_train(&[], &[]).unwrap_err();
        assert!(
            matches!(&err, TrainError::Data(m) if m.contains("no labelled training rows")),
            "{err}"
        );
        let nothing = TempFile::new("nothing.tsv", b"");
        assert!(matches!(
            read_table(&nothing.0, &ReadOptions::default()),
            Err(TrainError::Data(_))
        ));
    }

    #[test]
    fn unknown_dev_labels() {
        let train = TempFile::new(
            "train.tsv",
            b"text\tdomain\tsentiment\na\tweb\tpos\nb\tnews\tneg\n",
        );
        let dev = TempFile::new(
            "dev.tsv",
            b"text\tdomain\tsentiment\nc\tweb\tneg\nd\tblog\tpos\ne\tblog\t\n",
        );
        let train = Dataset::from_train(&[read(&train.0)], &[]).unwrap();
        let err = Dataset::with_tasks(&train.tasks, &[read(&dev.0)], false).unwrap_err();
        match &err {
            TrainError::UnknownLabel {
                path,
                line,
                task,
                label,
                known,
            } => {
                assert_eq!((path, *line), (&dev.0, 3));
                assert_eq!((task.as_str(), label.as_str()), ("domain", "blog"));
                assert_eq!(known, "news, web");
            }
            other => panic!("unexpected {other}"),
        }
        let shown = err.to_string();
        assert!(
            shown.contains(&format!("{}:3:", dev.0.display())) && shown.contains("\"blog\""),
            "{shown}"
        );

        let ds = Dataset::with_tasks(&train.tasks, &[read(&dev.0)], true).unwrap();
        let labels: Vec<&[Option<usize>]> = ds.examples.iter().map(|e| &e.labels[..]).collect();
        assert_eq!(labels, [&[Some(1), Some(0)][..], &[None, Some(1)]]);
        // Line 3 lost its domain, line 4 lost everything.
        assert_eq!(ds.skipped, 2);

        let other = TempFile::new("other.tsv", b"text\ttopic\nf\tx\n");
        let err = Dataset::with_tasks(&train.tasks, &[read(&other.0)], true).unwrap_err();
        assert!(
            matches!(&err, TrainError::Data(m) if m.contains("`topic`") && m.contains("other.tsv")),
            "{err}"
        );
    }
}
