//! The TREC question classification format: `COARSE:fine question text` per line, decoded as
//! Latin-1 when the file is not valid UTF-8; the coarse label is the task `coarse`.

use super::reader::{decode_utf8, split_lines, Fields, Reader};
use super::RawRow;
use crate::error::Result;

impl Reader<'_> {
    /// A TREC `.label` file (it has no header: the columns are `text` and `coarse`).
    pub(super) fn trec(&mut self, bytes: &[u8]) -> Result<(Vec<RawRow>, Vec<String>)> {
        let latin1 = std::str::from_utf8(bytes).is_err();
        let names = vec!["text".to_owned(), "coarse".to_owned()];
        self.tabular(
            names,
            split_lines(bytes).map(|(line, raw)| (line, trec_fields(raw, latin1))),
        )
    }
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

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::data::{read_table, Dataset, RawRow, ReadOptions};
    use crate::error::TrainError;

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
}
