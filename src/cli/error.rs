//! The command's error type and how it is printed: `error: <message>`, then each cause as
//! `caused by: ...`, exit code 1 (2 for a usage error).

use std::error::Error as _;
use std::path::PathBuf;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A flag's value is unusable (exit code 2).
    #[error("{flag}: {message}")]
    Usage { flag: String, message: String },
    /// `--model` names neither a directory nor a cached Hugging Face model.
    #[error("{0}")]
    ModelNotFound(String),
    /// An input file cannot be used.
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// An output file cannot be written.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the server stopped")]
    Server(#[source] std::io::Error),
    /// The load test could not run or got a wrong answer.
    #[error("load test: {0}")]
    LoadTest(String),
    /// Training, data or evaluation failed.
    #[error(transparent)]
    Train(#[from] mtl_train::TrainError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] mtl_model::ModelError),
    /// The encoder failed.
    #[error(transparent)]
    Encoder(#[from] mtl_encoder::EncoderError),
    /// The server could not start.
    #[error(transparent)]
    Serve(#[from] mtl_serve::ServeError),
}

impl CliError {
    /// A usage error naming `flag`.
    pub fn usage(flag: &str, message: impl Into<String>) -> Self {
        Self::Usage {
            flag: flag.to_string(),
            message: message.into(),
        }
    }

    /// The process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage { .. } => 2,
            _ => 1,
        }
    }
}

/// The lines printed for `error`: the message, then every cause whose text the lines above do
/// not already contain.
pub fn report(error: &CliError) -> Vec<String> {
    let mut lines = vec![format!("error: {error}")];
    let mut shown = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !shown.contains(&text) {
            lines.push(format!("caused by: {text}"));
            shown.push_str(&text);
        }
        cause = e.source();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_follow_the_message_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let error = CliError::Write {
            path: "out.jsonl".into(),
            source: io,
        };
        assert_eq!(
            report(&error),
            vec!["error: cannot write out.jsonl", "caused by: denied"]
        );
        let nested = CliError::Train(mtl_train::TrainError::Io {
            path: "a.tsv".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        });
        // The cause is already part of the message: not repeated.
        assert_eq!(report(&nested), vec!["error: cannot access a.tsv: gone"]);
        assert_eq!(error.exit_code(), 1);
        assert_eq!(CliError::usage("--pooling", "x").exit_code(), 2);
    }
}
