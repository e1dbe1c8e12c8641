//! The one error type of the text crate.

use std::path::PathBuf;

use latentdb_types::ErrorKind;

/// Everything that can go wrong in the text crate.
///
/// Variants are grouped by who is at fault: the *caller* (a bad analyzer configuration or
/// BM25 parameter) or the *system* (I/O, a damaged dump: rebuild from storage or retry).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Caller fault: an analyzer setting or a BM25 parameter is malformed or out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Caller fault (a limit): loading a dump needs more memory than can be reserved.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// System fault: a persisted lexical index is damaged, of another format version, or does
    /// not match its manifest. The caller should rebuild the index from the stored texts.
    #[error("corrupt lexical index dump in {dir}: {reason}")]
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
    /// The class of the error. A corrupt dump is `Internal`, not `DataLoss`: the dump is
    /// derived from the stored texts, which the caller rebuilds it from, so nothing is lost.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Error::CorruptDump { .. } | Error::Io { .. } => ErrorKind::Internal,
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
        let bad = Error::InvalidArgument("k1".into());
        assert_eq!(bad.kind(), ErrorKind::InvalidArgument);
        assert!(bad.is_caller_fault());
        let big = Error::ResourceExhausted("mem".into());
        assert_eq!(big.kind(), ErrorKind::ResourceExhausted);
        assert!(corrupt.to_string().contains("corrupt lexical index dump"));
    }
}
