//! The one error type of the backup crate.

use latentdb_types::ErrorKind;

/// Everything that can go wrong in the backup crate.
///
/// `location` fields hold the backup's location as a URL-ish string (a local path or
/// `s3://bucket/prefix`); `file` fields hold a file's path relative to that location.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Caller fault: a malformed target URL, part name, option or configuration.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// There is no committed backup at the location: its manifest is absent (the backup was
    /// never finished, or the location is not a backup).
    #[error("no backup at {location} (no manifest: incomplete or not a backup)")]
    NoBackup {
        /// The location that was opened.
        location: String,
    },
    /// A file asked for by name does not exist (a target object, or a part the manifest does
    /// not list).
    #[error("not found in {location}: {file}")]
    NotFound {
        /// The backup location.
        location: String,
        /// The missing file or part name.
        file: String,
    },
    /// Something that is only ever created once exists already: a backup's manifest (a second
    /// backup into the same location), or a part name used twice in one backup.
    #[error("already exists in {location}: {file}")]
    AlreadyExists {
        /// The backup location.
        location: String,
        /// The existing file or part name.
        file: String,
    },
    /// A committed backup is damaged: a flipped byte in the manifest or in a chunk, a chunk of
    /// the wrong size, a chunk missing. Nothing read from it can be trusted.
    #[error("backup at {location} is damaged: {file}: {reason}")]
    Corrupt {
        /// The backup location.
        location: String,
        /// The damaged or missing file.
        file: String,
        /// What check failed.
        reason: String,
    },
    /// The manifest is intact but written in a format version this build cannot read.
    #[error(
        "backup at {location} has format version {found}; this build reads version {supported}"
    )]
    UnsupportedVersion {
        /// The backup location.
        location: String,
        /// The version in the manifest.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },
    /// System fault: a local file operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// System fault: an object store request failed (network, credentials, the service).
    #[error("object store error on {location}: {source}")]
    Store {
        /// The object's URL.
        location: String,
        /// The underlying error.
        #[source]
        source: Box<object_store::Error>,
    },
}

impl Error {
    /// The class of the error: a damaged backup is `DataLoss`; a missing backup `NotFound`; a
    /// second backup into one location `AlreadyExists`; I/O and the object store `Internal`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NoBackup { .. } | Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Corrupt { .. } => ErrorKind::DataLoss,
            Error::UnsupportedVersion { .. } => ErrorKind::FailedPrecondition,
            Error::Io { .. } | Error::Store { .. } => ErrorKind::Internal,
        }
    }

    /// True when the error is the caller's fault (bad input); false for system faults.
    pub fn is_caller_fault(&self) -> bool {
        self.kind().is_caller_fault()
    }

    /// The crate's error back out of an `io::Error` from [`crate::PartWriter`]'s `Write` or
    /// [`crate::PartReader`]'s `Read`; any other `io::Error` becomes [`Error::Io`] on `path`.
    pub fn from_io(err: std::io::Error, path: impl std::fmt::Display) -> Error {
        match err.downcast::<Error>() {
            Ok(ours) => ours,
            Err(other) => Error::io(path, other),
        }
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn corrupt(
        location: impl std::fmt::Display,
        file: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            location: location.to_string(),
            file: file.to_string(),
            reason: reason.into(),
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
        let cases = [
            (
                Error::InvalidArgument("x".into()),
                ErrorKind::InvalidArgument,
            ),
            (
                Error::NoBackup {
                    location: "/b".into(),
                },
                ErrorKind::NotFound,
            ),
            (
                Error::AlreadyExists {
                    location: "/b".into(),
                    file: "MANIFEST".into(),
                },
                ErrorKind::AlreadyExists,
            ),
            (Error::corrupt("/b", "p.00000", "crc"), ErrorKind::DataLoss),
            (
                Error::io("/b/x", std::io::Error::other("disk")),
                ErrorKind::Internal,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
        }
        let none = Error::NoBackup {
            location: "/b".into(),
        };
        assert_eq!(
            none.to_string(),
            "no backup at /b (no manifest: incomplete or not a backup)"
        );
        let damaged = Error::corrupt("/b", "p.00001", "crc32 mismatch");
        assert!(damaged.to_string().contains("p.00001"), "{damaged}");
    }
}
