//! The model crate's error type.

use std::path::PathBuf;

/// Every failure of building, running, saving or loading a multi-task model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The encoder failed (loading, tokenizing, saving its files).
    #[error(transparent)]
    Encoder(#[from] mtl_encoder::EncoderError),
    /// A task name is empty.
    #[error("a task name is empty")]
    EmptyTaskName,
    /// Two tasks share a name.
    #[error("task `{0}` is declared twice")]
    DuplicateTask(String),
    /// A task has fewer than two distinct labels.
    #[error("task `{task}` needs at least 2 distinct labels, got {labels:?}")]
    TooFewLabels { task: String, labels: Vec<String> },
    /// A task has the same label twice.
    #[error("task `{task}` lists label {label:?} twice")]
    DuplicateLabel { task: String, label: String },
    /// No task is declared.
    #[error("a multi-task model needs at least one task")]
    NoTasks,
    /// A task name that the model does not have.
    #[error("unknown task `{name}` (the model has: {known})")]
    UnknownTask { name: String, known: String },
    /// A forward pass was asked for no sentences at all.
    #[error("no sentences to run the model on: give at least one")]
    NoSentences,
    /// A head setting is out of range.
    #[error("invalid head configuration: {0}")]
    InvalidHead(String),
    /// A freezing policy that cannot apply to this model.
    #[error("invalid freezing policy: {0}")]
    InvalidFreeze(String),
    /// The model directory's `mtl.json` is missing or unusable.
    #[error("{path}: {message}")]
    ModelFile { path: PathBuf, message: String },
}

/// The model crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;
