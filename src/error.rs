//! The facade's error type.

/// Everything the latentdb library can fail with.
///
/// [`Error::is_caller_fault`] tells whether the request was wrong (bad input, unknown
/// collection, ...) or the system failed; the gRPC server maps each variant to a status code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from the storage engine.
    #[error(transparent)]
    Storage(#[from] latentdb_storage::Error),
    /// A request argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A metadata filter is malformed, uses an unknown operator or mixes types.
    #[error("{0}")]
    InvalidFilter(String),
    /// An error from the vector index.
    #[error(transparent)]
    Index(#[from] latentdb_index::Error),
    /// An error from the embedder (loading a model, tokenizing, running it).
    #[error(transparent)]
    Embed(#[from] latentdb_embed::Error),
    /// A collection's stored model differs from the model offered or found at its path.
    #[error("collection {collection:?}: {reason}")]
    ModelMismatch {
        /// The collection.
        collection: String,
        /// What differs, naming both models.
        reason: String,
    },
    /// A source file or line for ingestion cannot be read.
    #[error(transparent)]
    Source(#[from] crate::ingest::SourceError),
    /// An evaluation dataset cannot be read.
    #[error(transparent)]
    Dataset(#[from] crate::eval::BeirError),
}

impl Error {
    /// True when the request itself was wrong; false when the system failed.
    pub fn is_caller_fault(&self) -> bool {
        match self {
            Error::Storage(e) => e.is_caller_fault(),
            Error::InvalidArgument(_) | Error::InvalidFilter(_) => true,
            Error::Index(e) => e.is_caller_fault(),
            Error::Embed(e) => matches!(
                e,
                latentdb_embed::Error::ModelNotFound { .. }
                    | latentdb_embed::Error::MissingFile(_)
                    | latentdb_embed::Error::InvalidArgument(_)
                    | latentdb_embed::Error::InvalidConfig(_)
            ),
            Error::ModelMismatch { .. } | Error::Dataset(_) => true,
            Error::Source(e) => e.is_caller_fault(),
        }
    }
}

/// The facade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
