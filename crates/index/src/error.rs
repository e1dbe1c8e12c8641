//! The one error type of the index crate.

use std::path::PathBuf;

use latentdb_types::ErrorKind;

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
    #[error("{} holds a non-finite value", whose(*id))]
    NonFiniteVector {
        /// The point id (`u32::MAX` for a query).
        id: u32,
    },
    /// Caller fault: a zero vector cannot be normalised for the cosine metric.
    #[error("{} has zero length and cannot be used with the cosine metric", whose(*id))]
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
    /// Caller fault: a vector's squared norm overflows `f32`, so its scores would be infinite
    /// or NaN (components around 1e19 and beyond).
    #[error("{} has a norm that overflows f32; scale the vector down", whose(*id))]
    VectorOverflow {
        /// The point id (`u32::MAX` for a query).
        id: u32,
    },
    /// Caller fault (a limit): what the request asks for needs more memory than allowed or
    /// available, e.g. an index capacity whose arrays cannot be allocated.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
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
    /// System fault: data handed back to the index disagrees with it (e.g. a vector fetched
    /// for rescoring has the wrong dimension).
    #[error("internal error: {0}")]
    Internal(String),
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
    /// The class of the error. A corrupt dump is `Internal`, not `DataLoss`: the dump is
    /// derived from storage, which the caller rebuilds it from, so nothing is lost.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::DimensionMismatch { .. }
            | Error::NonFiniteVector { .. }
            | Error::ZeroVector { .. }
            | Error::VectorOverflow { .. }
            | Error::InvalidArgument(_)
            | Error::InvalidFilter { .. }
            | Error::Npy { .. } => ErrorKind::InvalidArgument,
            Error::DuplicateId(_) => ErrorKind::AlreadyExists,
            Error::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Error::CorruptDump { .. } | Error::Io { .. } | Error::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// True when the error is the caller's fault (bad input); false for system faults.
    pub fn is_caller_fault(&self) -> bool {
        self.kind().is_caller_fault()
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// "the vector of point 7", or "the query vector" for the id `u32::MAX` that queries use.
fn whose(id: u32) -> String {
    if id == u32::MAX {
        "the query vector".to_string()
    } else {
        format!("the vector of point {id}")
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_put_the_fault_where_it_is() {
        let io = Error::io("x", std::io::Error::other("disk"));
        let corrupt = Error::CorruptDump {
            dir: "d".into(),
            reason: "r".into(),
        };
        for system in [&io, &corrupt] {
            assert_eq!(system.kind(), ErrorKind::Internal, "{system}");
            assert!(!system.is_caller_fault());
        }
        let caller = [
            (Error::VectorOverflow { id: 1 }, ErrorKind::InvalidArgument),
            (Error::ZeroVector { id: 1 }, ErrorKind::InvalidArgument),
            (
                Error::InvalidArgument("k".into()),
                ErrorKind::InvalidArgument,
            ),
            (Error::DuplicateId(3), ErrorKind::AlreadyExists),
            (
                Error::ResourceExhausted("mem".into()),
                ErrorKind::ResourceExhausted,
            ),
        ];
        for (e, kind) in caller {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.is_caller_fault(), "{e}");
        }
        assert!(
            Error::NonFiniteVector { id: u32::MAX }
                .to_string()
                .contains("query vector")
        );
    }
}
