//! The encoder crate's error type.

use std::path::PathBuf;

/// Every failure of loading, tokenizing or encoding, naming the file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// The model directory does not exist.
    #[error("model directory {path} does not exist or is not a directory")]
    MissingDirectory { path: PathBuf },
    /// A required file of the model directory is absent.
    #[error("missing file {path}")]
    MissingFile { path: PathBuf },
    /// A file exists but could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("malformed JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A configuration parsed but its values are unusable.
    #[error("invalid configuration in {path}: {message}")]
    InvalidConfig { path: PathBuf, message: String },
    /// The safetensors file is truncated or malformed.
    #[error("cannot read safetensors file {path}: {message}")]
    Safetensors { path: PathBuf, message: String },
    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor `{name}` is missing from {path} (looked for: {tried})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        tried: String,
    },
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` in {path} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype that cannot be cast to f32.
    #[error("tensor `{name}` in {path} has unsupported dtype {dtype}")]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// The tokenizer file could not be loaded or configured.
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// Tokenizing input text failed.
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// A module parameter that the key rule in use does not name.
    #[error("parameter `{path}` has no checkpoint key")]
    NoCheckpointKey { path: String },
    /// A caller-supplied argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// The encoder crate's result type.
pub type Result<T> = std::result::Result<T, EncoderError>;

/// Reads a whole file, mapping a missing file and other I/O failures to typed errors.
pub(crate) fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EncoderError::MissingFile {
                path: path.to_path_buf(),
            }
        } else {
            EncoderError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|source| EncoderError::Json {
        path: path.to_path_buf(),
        source,
    })
}
