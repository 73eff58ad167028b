//! JSON Lines: one object per line, keys in file order; the text key is fixed by the first
//! object, every other key is a task.

use super::reader::{decode_utf8, duplicate, label, renamed, split_lines, text_column, Reader};
use super::RawRow;
use crate::error::Result;

impl Reader<'_> {
    /// JSON Lines: each non-blank line an object; the text key is fixed by the first object.
    pub(super) fn json_lines(&mut self, bytes: &[u8]) -> Result<(Vec<RawRow>, Vec<String>)> {
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
            let label = match json_label(&key, value) {
                Ok(label) => label,
                Err(message) => return Ok(Err(message)),
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

/// A JSON value as a label (`None`: null or blank), or why it cannot be one.
fn json_label(key: &str, value: serde_json::Value) -> std::result::Result<Option<String>, String> {
    match value {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::String(s) => Ok(label(&s)),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
        _ => Err(format!("`{key}` must be a string, number, bool or null")),
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

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::data::{read_table, RawRow, ReadOptions};
    use crate::error::TrainError;

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
}
