//! The training crate's error type.

use std::path::PathBuf;

/// Every failure of reading data, configuring or running training, naming the file and line or
/// the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A data row is malformed (wrong number of fields, undecodable text, bad JSON...).
    #[error("{path}:{line}: {message}")]
    BadRow {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A dev/test row carries a label the task does not know.
    #[error(
        "{path}:{line}: label {label:?} of task `{task}` was not seen in training (known: {known})"
    )]
    UnknownLabel {
        path: PathBuf,
        line: usize,
        task: String,
        label: String,
        known: String,
    },
    /// The data as a whole is unusable (no rows, no tasks, a task with one label...).
    #[error("data: {0}")]
    Data(String),
    /// A training setting is out of range or inconsistent (including resuming a checkpoint
    /// written by a run with other settings).
    #[error("configuration: {0}")]
    Config(String),
    /// The tasks of a data split differ from the model's (names, or labels and their order).
    #[error("the {split} tasks {data} differ from the model's {model}")]
    TaskMismatch {
        /// `training`, `dev` or `test`.
        split: String,
        /// The data's tasks and labels.
        data: String,
        /// The model's tasks and labels.
        model: String,
    },
    /// A file written by an earlier run (`state.json`, `optimizer.json`, `metrics.jsonl`) is
    /// corrupt or from an incompatible version.
    #[error("{path}: malformed training state: {message}")]
    MalformedState { path: PathBuf, message: String },
    /// A collective call between the peers of a run failed.
    #[error("rank {rank}, {what}: {message}")]
    Collective {
        rank: usize,
        what: String,
        message: String,
    },
    /// A collective call got no answer in time: a peer or node died or never joined.
    #[error("rank {rank}, {what}: no answer within {seconds} s, waiting for {missing} (--collective-timeout)")]
    CollectiveTimeout {
        rank: usize,
        what: String,
        seconds: f64,
        /// The ranks or nodes waited for.
        missing: String,
    },
    /// Peers were started with different configurations or data.
    #[error("rank {rank}: the {what} differ between ranks: this rank has {mine}, {others}; start every rank with the same flags, files and model (and, to resume, rank 0's checkpoint folder in every node's --out)")]
    PeerMismatch {
        rank: usize,
        /// What was compared.
        what: String,
        /// This rank's hash.
        mine: String,
        /// The ranks that differ, with their hashes.
        others: String,
    },
    /// The encoder failed.
    #[error(transparent)]
    Encoder(#[from] mtl_encoder::EncoderError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] mtl_model::ModelError),
}

/// The training crate's result type.
pub type Result<T> = std::result::Result<T, TrainError>;
