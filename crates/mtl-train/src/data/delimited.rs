//! TSV and CSV: rows of fields under a header line (or named `columns`).

use std::path::Path;

use super::reader::{decode_utf8, split_lines, Fields, Reader};
use super::RawRow;
use crate::error::{Result, TrainError};

impl Reader<'_> {
    /// A TSV file: rows split on `\n` (one trailing `\r` dropped), fields on `\t`, no quoting.
    pub(super) fn tsv(&mut self, bytes: &[u8]) -> Result<(Vec<RawRow>, Vec<String>)> {
        self.delimited(split_lines(bytes).map(|(line, raw)| {
            let fields = decode_utf8(raw).map(|s| s.split('\t').map(str::to_owned).collect());
            (line, fields)
        }))
    }

    /// A CSV file (RFC 4180 quoting).
    pub(super) fn csv(&mut self, bytes: &[u8]) -> Result<(Vec<RawRow>, Vec<String>)> {
        let records = csv_records(self.path, bytes)?;
        self.delimited(records.into_iter())
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
            Some(fields.map_err(|message| super::reader::bad_row(self.path, line, message))?)
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

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::data::{read_table, Dataset, RawRow, ReadOptions};
    use crate::error::TrainError;

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
}
