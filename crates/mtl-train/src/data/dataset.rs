//! Datasets: the tasks and label sets fixed from the training tables, and every table's rows
//! mapped onto them as label indices.

use std::collections::{BTreeSet, HashMap};

use mtl_model::TaskSpec;

use super::reader::duplicate;
use super::{RawRow, RawTable};
use crate::error::{Result, TrainError};

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
    pub tasks: Vec<TaskSpec>,
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
                Ok(TaskSpec {
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
    pub fn with_tasks(
        tasks: &[TaskSpec],
        tables: &[RawTable],
        skip_bad_rows: bool,
    ) -> Result<Dataset> {
        let mapping = LabelMap::new(tasks, skip_bad_rows);
        let mut examples = Vec::new();
        let mut skipped = 0;
        for table in tables {
            skipped += table.skipped.len();
            if let Some(name) = table
                .tasks
                .iter()
                .find(|t| !mapping.task_of.contains_key(t.as_str()))
            {
                return Err(mapping.not_trained(table, name));
            }
            for row in &table.rows {
                let (labels, lost) = mapping.labels(table, row)?;
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

/// Task and label names to indices.
struct LabelMap<'a> {
    tasks: &'a [TaskSpec],
    task_of: HashMap<&'a str, usize>,
    label_of: Vec<HashMap<&'a str, usize>>,
    skip_bad_rows: bool,
}

impl<'a> LabelMap<'a> {
    fn new(tasks: &'a [TaskSpec], skip_bad_rows: bool) -> Self {
        let task_of = tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let label_of = tasks
            .iter()
            .map(|t| {
                t.labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.as_str(), i))
                    .collect()
            })
            .collect();
        Self {
            tasks,
            task_of,
            label_of,
            skip_bad_rows,
        }
    }

    /// The error for a task of `table` that is not a training task.
    fn not_trained(&self, table: &RawTable, name: &str) -> TrainError {
        let known: Vec<&str> = self.tasks.iter().map(|t| t.name.as_str()).collect();
        TrainError::Data(format!(
            "{}: task `{name}` is not a training task (tasks: {})",
            table.path.display(),
            known.join(", ")
        ))
    }

    /// The label index per task of `row`, and whether an unknown label was dropped (only with
    /// `skip_bad_rows`; otherwise it is an `UnknownLabel` error).
    fn labels(&self, table: &RawTable, row: &RawRow) -> Result<(Vec<Option<usize>>, bool)> {
        let mut labels = vec![None; self.tasks.len()];
        let mut lost = false;
        for (task, label) in &row.labels {
            let &t = self
                .task_of
                .get(task.as_str())
                .ok_or_else(|| self.not_trained(table, task))?;
            match self.label_of[t].get(label.as_str()) {
                Some(&l) => labels[t] = Some(l),
                None if self.skip_bad_rows => lost = true,
                None => {
                    return Err(TrainError::UnknownLabel {
                        path: table.path.clone(),
                        line: row.line,
                        task: task.clone(),
                        label: label.clone(),
                        known: self.tasks[t].labels.join(", "),
                    })
                }
            }
        }
        Ok((labels, lost))
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
    use super::super::test_util::*;
    use super::*;
    use crate::data::{read_table, RawRow, ReadOptions};

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
                TaskSpec {
                    name: "domain".into(),
                    labels: strings(&["amazon", "imdb", "yelp"])
                },
                TaskSpec {
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
    fn tables_combine_per_task_and_label_order() {
        let domain = TempFile::new("domain.tsv", b"text\tdomain\nd1\tweb\nd2\tnews\nd3\t\n");
        let stars = TempFile::new("stars.tsv", b"text\tstars\ns1\t10\ns2\t9\ns3\t2\ns4\t9\n");
        let tables = [read(&domain.0), read(&stars.0)];
        let ds = Dataset::from_train(&tables, &[]).unwrap();
        assert_eq!(
            ds.tasks,
            vec![
                TaskSpec {
                    name: "domain".into(),
                    labels: strings(&["news", "web"])
                },
                TaskSpec {
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
