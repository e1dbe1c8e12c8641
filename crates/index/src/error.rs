//! The one error type of the index crate.

use std::path::PathBuf;

/// Everything that can go wrong in the index crate.
///
/// Variants are grouped by who is at fault: the *caller* (bad input, fix the request) or the
/// *system* (I/O, a damaged dump: rebuild from storage or retry).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Caller fault: a vector's length differs from the index dimension.
    #[error("vector has dimension {got}, the index expects {expected}")]
    DimensionMismatch {
        /// The index dimension.
        expected: usize,
        /// The length of the vector that was passed.
        got: usize,
    },
    /// Caller fault: a vector holds a NaN or an infinity.
    #[error("vector for point {id} holds a non-finite value")]
    NonFiniteVector {
        /// The point id (`u32::MAX` for a query).
        id: u32,
    },
    /// Caller fault: a zero vector cannot be normalised for the cosine metric.
    #[error("vector for point {id} has zero length and cannot be used with the cosine metric")]
    ZeroVector {
        /// The point id (`u32::MAX` for a query).
        id: u32,
    },
    /// Caller fault: the point id is already in the index (ids are never reused).
    #[error("point {0} is already in the index")]
    DuplicateId(u32),
    /// Caller fault: an argument is out of range (dimension 0, k = 0, M < 2, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Caller fault: unknown metric name.
    #[error("unknown metric {0:?} (expected cosine, dot or l2)")]
    UnknownMetric(String),
    /// Caller fault: a metadata filter is malformed, uses an unknown operator or mixes types.
    #[error("invalid filter at {path}: {reason}")]
    InvalidFilter {
        /// Where in the filter document the problem is (e.g. `$and[1].price.$gt`).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Caller fault: a `.npy` file is not a float32 (or integer), C-order, 2-d array.
    #[error("unsupported .npy file {path}: {reason}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// System fault: a persisted index is damaged or does not match its manifest. The caller
    /// should rebuild the index from storage.
    #[error("corrupt index dump in {dir}: {reason}")]
    CorruptDump {
        /// The dump directory.
        dir: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// System fault: reading or writing files failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the error is the caller's fault (bad input); false for system faults.
    pub fn is_caller_fault(&self) -> bool {
        !matches!(self, Error::CorruptDump { .. } | Error::Io { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
