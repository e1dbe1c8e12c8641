//! The storage error type.

use std::path::PathBuf;

/// Everything that can go wrong in the storage engine.
///
/// Variants are grouped by who is at fault: [`Error::is_caller_fault`] tells whether the request
/// was wrong (fix the input and retry) or the system failed (disk, corruption, lock).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // ---- caller faults -------------------------------------------------------------------
    /// The collection name breaks the naming rules.
    #[error("invalid collection name {name:?}: {reason}")]
    InvalidCollectionName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No collection of that name exists.
    #[error("collection {0:?} does not exist")]
    CollectionNotFound(String),
    /// A collection of that name already exists.
    #[error("collection {0:?} already exists")]
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
    #[error("document {id:?}: vector has {got} components, collection dimension is {expected}")]
    DimensionMismatch {
        /// The document id.
        id: String,
        /// The collection's dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A vector component is NaN or infinite.
    #[error("document {id:?}: vector component {index} is not a finite number")]
    NonFiniteVector {
        /// The document id.
        id: String,
        /// Index of the first bad component.
        index: usize,
    },
    /// A document has no vector (and nothing upstream embedded its text).
    #[error("document {id:?} has no vector")]
    MissingVector {
        /// The document id.
        id: String,
    },
    /// A document id is empty or too long.
    #[error("invalid document id {id:?}: {reason}")]
    InvalidId {
        /// The rejected id (truncated for display if very long).
        id: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Metadata is not a JSON object.
    #[error("document {id:?}: metadata must be a JSON object, got {kind}")]
    InvalidMetadata {
        /// The document id.
        id: String,
        /// The JSON type that was given instead.
        kind: &'static str,
    },
    /// A document's text is longer than the configured limit.
    #[error("document {id:?}: text is {len} bytes, the limit is {limit}")]
    TextTooLong {
        /// The document id.
        id: String,
        /// The text length in bytes.
        len: usize,
        /// The configured limit in bytes.
        limit: usize,
    },
    /// The same id appears twice in one batch.
    #[error("document id {id:?} appears more than once in the batch")]
    DuplicateId {
        /// The repeated id.
        id: String,
    },
    /// A scroll page size of zero, or another bad argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    // ---- system faults -------------------------------------------------------------------
    /// Another process holds the database directory.
    #[error("database {path} is locked by another process")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// The database was written by an incompatible version of latentdb.
    #[error("unsupported storage format version {found} (this build reads version {supported})")]
    UnsupportedFormat {
        /// The version found on disk.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// Stored bytes could not be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The collection ran out of internal point ids (more than 2^32 writes): compact it.
    #[error("collection {0:?} has exhausted its internal id space; compact it")]
    IdSpaceExhausted(String),
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
    /// True when the request itself was wrong (bad input, unknown or existing collection);
    /// false when the system failed.
    pub fn is_caller_fault(&self) -> bool {
        matches!(
            self,
            Error::InvalidCollectionName { .. }
                | Error::CollectionNotFound(_)
                | Error::CollectionExists(_)
                | Error::InvalidDimension { .. }
                | Error::DimensionMismatch { .. }
                | Error::NonFiniteVector { .. }
                | Error::MissingVector { .. }
                | Error::InvalidId { .. }
                | Error::InvalidMetadata { .. }
                | Error::TextTooLong { .. }
                | Error::DuplicateId { .. }
                | Error::InvalidArgument(_)
        )
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
