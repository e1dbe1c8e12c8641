//! The storage error type.

use std::fmt;
use std::path::PathBuf;

use latentdb_types::ErrorKind;

/// The most characters of a caller-supplied name or id an error message shows.
pub const MAX_ECHO_CHARS: usize = 128;

/// The most characters of a free-form message (which may quote caller input) shown.
const MAX_MESSAGE_CHARS: usize = 512;

/// Displays a caller-supplied string quoted and cut to at most `max` characters (with "…").
pub(crate) struct Bounded<'a>(&'a str, usize);

impl fmt::Display for Bounded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(self.1) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
        }
    }
}

/// A name or id as shown in a message: quoted, at most [`MAX_ECHO_CHARS`] characters.
fn q(s: &str) -> Bounded<'_> {
    Bounded(s, MAX_ECHO_CHARS)
}

/// A free-form message cut to a bounded length (unquoted).
struct Msg<'a>(&'a str);

impl fmt::Display for Msg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(MAX_MESSAGE_CHARS) {
            None => f.write_str(self.0),
            Some((cut, _)) => write!(f, "{}…", &self.0[..cut]),
        }
    }
}

fn m(s: &str) -> Msg<'_> {
    Msg(s)
}

pub use latentdb_types::truncate_echo;

/// Everything that can go wrong in the storage engine.
///
/// [`Error::kind`] classifies each variant; [`Error::is_caller_fault`] tells whether the request
/// was wrong (fix the input and retry) or the system failed (disk, corruption, lock). Every
/// message that quotes caller input (names, ids) shows at most [`MAX_ECHO_CHARS`] characters of
/// it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- caller faults -------------------------------------------------------------------
    /// The collection name breaks the naming rules.
    #[error("invalid collection name {}: {reason}", q(name))]
    InvalidCollectionName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No collection of that name exists.
    #[error("collection {} does not exist", q(.0))]
    CollectionNotFound(String),
    /// A collection of that name already exists.
    #[error("collection {} already exists", q(.0))]
    CollectionExists(String),
    /// The collection's dimension is out of range.
    #[error("invalid dimension {dim}: must be between 1 and {max}")]
    InvalidDimension {
        /// The rejected dimension.
        dim: usize,
        /// The largest supported dimension.
        max: usize,
    },
    /// A document's vector has the wrong number of components.
    #[error(
        "document {}: vector has {got} components, collection dimension is {expected}",
        q(id)
    )]
    DimensionMismatch {
        /// The document id.
        id: String,
        /// The collection's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A vector component is NaN or infinite.
    #[error("document {}: vector component {index} is not a finite number", q(id))]
    NonFiniteVector {
        /// The document id.
        id: String,
        /// Index of the first bad component.
        index: usize,
    },
    /// A document has no vector (and nothing upstream embedded its text).
    #[error("document {} has no vector", q(id))]
    MissingVector {
        /// The document id.
        id: String,
    },
    /// A document id is empty or too long.
    #[error("invalid document id {}: {}", q(id), m(reason))]
    InvalidId {
        /// The rejected id (truncated for display if very long).
        id: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Metadata is not a JSON object.
    #[error("document {}: metadata must be a JSON object, got {kind}", q(id))]
    InvalidMetadata {
        /// The document id.
        id: String,
        /// The JSON type that was given instead.
        kind: &'static str,
    },
    /// A document's text is longer than the configured limit.
    #[error("document {}: text is {len} bytes, the limit is {limit}", q(id))]
    TextTooLong {
        /// The document id.
        id: String,
        /// The text length in bytes.
        len: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The same id appears twice in one batch.
    #[error("document id {} appears more than once in the batch", q(id))]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
    /// A scroll page size of zero, or another bad argument.
    #[error("invalid argument: {}", m(.0))]
    InvalidArgument(String),

    // ---- system faults -------------------------------------------------------------------
    /// Another process holds the database directory.
    #[error("database {path} is locked by another process")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// The database was written by an incompatible version of latentdb.
    #[error(
        "unsupported storage format version {found} (this build reads versions {} to \
         {supported})",
        crate::store::OLDEST_READABLE_FORMAT
    )]
    UnsupportedFormat {
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads (and the one it writes).
        supported: u32,
    },
    /// Stored bytes could not be decoded.
    #[error("corrupt data: {}", m(.0))]
    Corrupt(String),
    /// The collection ran out of internal point ids (more than 2^32 writes): compact it.
    #[error("collection {} has exhausted its internal id space; compact it", q(.0))]
    IdSpaceExhausted(String),
    /// Storage holds fewer changes of a collection than were acknowledged to writers: the
    /// database's files were damaged or truncated (see `docs/FORMAT.md`, "Watermark"). The
    /// database refuses to open unless [`crate::StorageOptions::accept_data_loss`] is set.
    #[error(
        "data loss in collection {}: changes up to sequence {expected} were acknowledged but \
         storage holds only up to sequence {found}{}; the database was not opened: restore a \
         backup, or open anyway with --accept-data-loss (OpenOptions::accept_data_loss), which \
         keeps what is left and the evidence",
        q(collection),
        if *found == 0 { " (or lost the collection entirely)" } else { "" }
    )]
    DataLoss {
        /// The collection's name.
        collection: String,
        /// The last change sequence acknowledged to a writer.
        expected: u64,
        /// The last change sequence found in storage (0 when the collection is missing).
        found: u64,
    },
    /// A broken internal invariant (a bug, not the caller's input or the disk).
    #[error("internal error: {}", m(.0))]
    Internal(String),
    /// A filesystem operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The sled engine failed.
    #[error("storage engine error: {0}")]
    Sled(#[from] sled::Error),
}

impl Error {
    /// The class of this error (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidCollectionName { .. }
            | Error::InvalidDimension { .. }
            | Error::DimensionMismatch { .. }
            | Error::NonFiniteVector { .. }
            | Error::MissingVector { .. }
            | Error::InvalidId { .. }
            | Error::InvalidMetadata { .. }
            | Error::DuplicateId { .. }
            | Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::TextTooLong { .. } => ErrorKind::ResourceExhausted,
            Error::CollectionNotFound(_) => ErrorKind::NotFound,
            Error::CollectionExists(_) => ErrorKind::AlreadyExists,
            Error::IdSpaceExhausted(_) => ErrorKind::ResourceExhausted,
            Error::Locked { .. } => ErrorKind::Unavailable,
            Error::DataLoss { .. } | Error::Corrupt(_) => ErrorKind::DataLoss,
            Error::Sled(sled::Error::Corruption { .. }) => ErrorKind::DataLoss,
            Error::UnsupportedFormat { .. }
            | Error::Internal(_)
            | Error::Io { .. }
            | Error::Sled(_) => ErrorKind::Internal,
        }
    }

    /// True when the request itself was wrong (bad input, unknown or existing collection);
    /// false when the system failed.
    pub fn is_caller_fault(&self) -> bool {
        self.kind().is_caller_fault()
    }
}

impl From<latentdb_types::UnknownMetric> for Error {
    fn from(e: latentdb_types::UnknownMetric) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Self {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::Sled(e),
        }
    }
}

/// The storage result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_echo_of_caller_input_is_bounded() {
        let huge = "n".repeat(16 * 1024);
        let errors = [
            Error::CollectionNotFound(huge.clone()),
            Error::CollectionExists(huge.clone()),
            Error::InvalidCollectionName {
                name: huge.clone(),
                reason: "r",
            },
            Error::DimensionMismatch {
                id: huge.clone(),
                expected: 1,
                got: 2,
            },
            Error::NonFiniteVector {
                id: huge.clone(),
                index: 0,
            },
            Error::MissingVector { id: huge.clone() },
            Error::InvalidId {
                id: huge.clone(),
                reason: huge.clone(),
            },
            Error::InvalidMetadata {
                id: huge.clone(),
                kind: "a string",
            },
            Error::TextTooLong {
                id: huge.clone(),
                len: 1,
                limit: 0,
            },
            Error::DuplicateId { id: huge.clone() },
            Error::InvalidArgument(huge.clone()),
            Error::Corrupt(huge.clone()),
            Error::IdSpaceExhausted(huge.clone()),
            Error::DataLoss {
                collection: huge.clone(),
                expected: 2,
                found: 1,
            },
            Error::Internal(huge.clone()),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.chars().count() < 1_400, "{} chars: {e:?}", msg.len());
            assert!(msg.contains('…'), "{msg}");
        }
        // Short input is shown whole, quoted, and multi-byte characters are never split.
        assert_eq!(
            Error::CollectionNotFound("é".repeat(200)).to_string(),
            format!("collection \"{}\"… does not exist", "é".repeat(128))
        );
        assert_eq!(
            Error::CollectionNotFound("x".into()).to_string(),
            "collection \"x\" does not exist"
        );
    }

    #[test]
    fn kinds_separate_the_callers_faults_from_the_systems() {
        use ErrorKind as K;
        let io = || Error::Io {
            path: PathBuf::from("/x"),
            source: std::io::Error::other("disk"),
        };
        for (e, kind) in [
            (Error::CollectionNotFound("c".into()), K::NotFound),
            (Error::CollectionExists("c".into()), K::AlreadyExists),
            (Error::InvalidArgument("x".into()), K::InvalidArgument),
            (Error::DuplicateId { id: "a".into() }, K::InvalidArgument),
            (Error::IdSpaceExhausted("c".into()), K::ResourceExhausted),
            (
                Error::Locked {
                    path: PathBuf::from("/x"),
                },
                K::Unavailable,
            ),
            (Error::Corrupt("x".into()), K::DataLoss),
            (
                Error::DataLoss {
                    collection: "c".into(),
                    expected: 2,
                    found: 1,
                },
                K::DataLoss,
            ),
            (
                Error::UnsupportedFormat {
                    found: 3,
                    supported: 2,
                },
                K::Internal,
            ),
            (Error::Internal("x".into()), K::Internal),
            (io(), K::Internal),
            (
                Error::Sled(sled::Error::Unsupported("x".into())),
                K::Internal,
            ),
        ] {
            assert_eq!(e.kind(), kind, "{e}");
            assert_eq!(e.is_caller_fault(), kind.is_caller_fault(), "{e}");
        }
        assert!(!io().is_caller_fault());
        assert!(Error::InvalidArgument("x".into()).is_caller_fault());
    }
}
