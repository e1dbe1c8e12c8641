//! The crate's error type.

use std::path::PathBuf;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a model or embedding text.
///
/// Each variant's documentation says whether the caller (bad input, a missing model) or the
/// system (I/O, a corrupt file, a numerical library) is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Caller: the default model is not installed in the model cache.
    #[error(
        "model `{name}` is not installed at {}: run `latentdb model fetch` first (or pass a model directory)",
        path.display()
    )]
    ModelNotFound {
        /// The model's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Caller: a model directory lacks a required file.
    #[error("model file missing: {}", .0.display())]
    MissingFile(PathBuf),
    /// Caller: a configuration file or an option is invalid or unsupported.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Caller: an argument (an option, a task name, an input) is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// System or caller: a weights file lacks a tensor, has one of the wrong shape, or has
    /// tensors the model does not use.
    #[error("weights do not match the model: {0}")]
    Weights(String),
    /// System: a downloaded file does not have the expected checksum.
    #[error("checksum mismatch for {}: expected {expected}, got {actual}", path.display())]
    Checksum {
        /// The file that was checked.
        path: PathBuf,
        /// The expected sha256 (hex).
        expected: String,
        /// The actual sha256 (hex).
        actual: String,
    },
    /// System: fetching a model failed (the package installer or the archive).
    #[error("fetching the model failed: {0}")]
    Fetch(String),
    /// System: an I/O error, with the path involved.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// System: a JSON file could not be parsed.
    #[error("cannot parse {}: {source}", path.display())]
    Json {
        /// The file being parsed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// System: the tensor library failed.
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// System or caller: the tokenizer failed or could not be loaded.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile(path.to_path_buf())
        } else {
            Error::io(path, e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
