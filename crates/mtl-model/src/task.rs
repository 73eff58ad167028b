//! `TaskSpec`: a named classification task and its label names.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// A classification task: its name and label names (the number of classes is the number of labels).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// The task's name, unique within a model.
    pub name: String,
    /// The label names; label `i` is class `i`.
    pub labels: Vec<String>,
}

impl TaskSpec {
    /// A task from a name and label names.
    pub fn new(
        name: impl Into<String>,
        labels: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            labels: labels.into_iter().map(Into::into).collect(),
        }
    }

    /// Parses `NAME=LABEL,LABEL,...`.
    pub fn parse(spec: &str) -> Result<Self> {
        let (name, labels) = spec.split_once('=').ok_or_else(|| {
            ModelError::InvalidHead(format!("task {spec:?} is not NAME=LABEL,LABEL,..."))
        })?;
        let task = Self::new(name.trim(), labels.split(',').map(str::trim));
        task.validate()?;
        Ok(task)
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// The index of a label name.
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == label)
    }

    /// Checks the name and that there are at least 2 distinct labels.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(ModelError::EmptyTaskName);
        }
        for (i, label) in self.labels.iter().enumerate() {
            if self.labels[..i].contains(label) {
                return Err(ModelError::DuplicateLabel {
                    task: self.name.clone(),
                    label: label.clone(),
                });
            }
        }
        if self.labels.len() < 2 {
            return Err(ModelError::TooFewLabels {
                task: self.name.clone(),
                labels: self.labels.clone(),
            });
        }
        Ok(())
    }
}

/// Checks every task and that names are unique.
pub fn validate_tasks(tasks: &[TaskSpec]) -> Result<()> {
    if tasks.is_empty() {
        return Err(ModelError::NoTasks);
    }
    for (i, task) in tasks.iter().enumerate() {
        task.validate()?;
        if tasks[..i].iter().any(|t| t.name == task.name) {
            return Err(ModelError::DuplicateTask(task.name.clone()));
        }
    }
    Ok(())
}

/// The seed configuration's tasks: `classification` (3 classes) and `sentiment` (2 classes).
pub fn seed_tasks() -> Vec<TaskSpec> {
    vec![
        TaskSpec::new("classification", ["class_0", "class_1", "class_2"]),
        TaskSpec::new("sentiment", ["negative", "positive"]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_errors() {
        let dup = vec![
            TaskSpec::new("a", ["x", "y"]),
            TaskSpec::new("a", ["x", "y"]),
        ];
        assert!(matches!(validate_tasks(&dup), Err(ModelError::DuplicateTask(n)) if n == "a"));
        let few = vec![TaskSpec::new("a", ["x"])];
        assert!(matches!(
            validate_tasks(&few),
            Err(ModelError::TooFewLabels { .. })
        ));
        let same = vec![TaskSpec::new("a", ["x", "x"])];
        assert!(matches!(
            validate_tasks(&same),
            Err(ModelError::DuplicateLabel { .. })
        ));
        let empty = vec![TaskSpec::new(" ", ["x", "y"])];
        assert!(matches!(
            validate_tasks(&empty),
            Err(ModelError::EmptyTaskName)
        ));
        assert!(matches!(validate_tasks(&[]), Err(ModelError::NoTasks)));
        assert!(validate_tasks(&seed_tasks()).is_ok());
    }

    #[test]
    fn parses_name_and_labels() {
        let t = TaskSpec::parse("topic=sports, politics ,tech").unwrap();
        assert_eq!(t, TaskSpec::new("topic", ["sports", "politics", "tech"]));
        assert_eq!(t.label_index("tech"), Some(2));
        assert!(TaskSpec::parse("topic").is_err());
        assert!(TaskSpec::parse("topic=one").is_err());
    }
}
