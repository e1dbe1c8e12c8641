//! The facade's error type.

use latentdb_types::ErrorKind;

/// Everything the latentdb library can fail with.
///
/// [`Error::kind`] classifies every error (invalid argument, not found, ..., internal);
/// [`Error::is_caller_fault`] tells whether the request was wrong or the system failed. The
/// gRPC server maps each kind to one status code.
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
    /// What the request names does not exist (or no longer: a collection dropped since the
    /// caller bound to it).
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the state it needs does not hold (a collection without a
    /// model asked to embed, a model path the database is not allowed to load, ...).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A limit was reached (too many loaded models, ...).
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller stopped a long call part-way (a cancel hook such as
    /// [`Evaluator::cancel_when`](crate::eval::Evaluator::cancel_when) said so).
    #[error("{0}")]
    Cancelled(String),
    /// The system failed: a panicked worker thread, a broken invariant. Never the caller's
    /// fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// A collection whose stored state could not be opened (see
    /// [`Database::quarantined`](crate::Database::quarantined)): every operation on it but
    /// `drop_collection` fails with this, until it is dropped.
    #[error(
        "collection {collection:?} is quarantined: {reason} (drop it to reuse the name; the rest of the database is unaffected)"
    )]
    Quarantined {
        /// The collection (bounded).
        collection: String,
        /// Why it could not be opened (bounded).
        reason: String,
    },
    /// Acknowledged writes are missing from storage: the collection's index dump reflects
    /// more changes than storage holds. The open is refused; the dump is left untouched as
    /// evidence. Opening with `DatabaseOptions::accept_data_loss(true)` (`--accept-data-loss`)
    /// opens with what is left, moving the dump aside.
    #[error(
        "data loss in collection {collection:?}: its index dump reflects change {expected} but storage holds changes only up to {found}; acknowledged writes are missing. Nothing was changed; to open with what is left, pass --accept-data-loss (DatabaseOptions::accept_data_loss)"
    )]
    DataLoss {
        /// The collection (bounded).
        collection: String,
        /// The change sequence the dump reflects (acknowledged and durable once).
        expected: u64,
        /// The change sequence storage holds now.
        found: u64,
    },
    /// An error from the vector index.
    #[error(transparent)]
    Index(#[from] latentdb_index::Error),
    /// An error from the lexical index (its dump, its analyzer settings).
    #[error(transparent)]
    Text(#[from] latentdb_text::Error),
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
    /// A backup cannot be written, read or verified.
    #[error(transparent)]
    Backup(#[from] latentdb_backup::Error),
    /// An evaluation dataset cannot be read.
    #[error(transparent)]
    Dataset(#[from] crate::eval::BeirError),
}

impl Error {
    /// The class of this error; the leaf crates' errors classify themselves.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Storage(e) => e.kind(),
            Error::InvalidArgument(_) | Error::InvalidFilter(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::FailedPrecondition(_) | Error::ModelMismatch { .. } => {
                ErrorKind::FailedPrecondition
            }
            Error::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Quarantined { .. } => ErrorKind::FailedPrecondition,
            Error::DataLoss { .. } => ErrorKind::DataLoss,
            Error::Index(e) => e.kind(),
            Error::Text(e) => e.kind(),
            Error::Backup(e) => e.kind(),
            Error::Embed(e) => e.kind(),
            Error::Source(e) => source_kind(e),
            Error::Dataset(e) => match e {
                crate::eval::BeirError::Io { source, .. } => io_kind(source),
                crate::eval::BeirError::Parse { .. } => ErrorKind::InvalidArgument,
            },
        }
    }

    /// True when the request itself was wrong; false when the system failed.
    pub fn is_caller_fault(&self) -> bool {
        self.kind().is_caller_fault()
    }

    /// An [`Error::Internal`] for a worker thread that panicked while doing `what`.
    pub(crate) fn panicked(what: &str) -> Error {
        Error::Internal(format!("{what}: a worker thread panicked"))
    }

    /// The error for a collection that does not exist (or was dropped meanwhile).
    pub(crate) fn collection_not_found(name: &str) -> Error {
        latentdb_storage::Error::CollectionNotFound(bounded(name)).into()
    }
}

/// The kind of an ingestion source error: a file the caller named that is missing or
/// unreadable is theirs to fix; any other read failure is the system's.
fn source_kind(e: &crate::ingest::SourceError) -> ErrorKind {
    use crate::ingest::SourceError as S;
    match e {
        S::Io { source, .. } => io_kind(source),
        S::TooLarge { .. } => ErrorKind::ResourceExhausted,
        _ if e.is_caller_fault() => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    }
}

/// The kind of an I/O error on a file the caller named.
fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::InvalidData => {
            ErrorKind::InvalidArgument
        }
        _ => ErrorKind::Internal,
    }
}

/// The most characters of caller input an error message echoes.
pub(crate) const MAX_ECHO_CHARS: usize = 128;

/// `s` cut to [`MAX_ECHO_CHARS`] characters (marked with `…` when cut), for error messages
/// that echo caller input.
pub(crate) fn bounded(s: &str) -> String {
    latentdb_types::truncate_echo(s, MAX_ECHO_CHARS)
}

/// The facade's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_failures_are_internal_and_caller_mistakes_are_not() {
        let internal = Error::panicked("search");
        assert_eq!(internal.kind(), ErrorKind::Internal);
        assert!(!internal.is_caller_fault());
        for (e, kind) in [
            (
                Error::InvalidArgument("x".into()),
                ErrorKind::InvalidArgument,
            ),
            (Error::InvalidFilter("x".into()), ErrorKind::InvalidArgument),
            (Error::NotFound("x".into()), ErrorKind::NotFound),
            (
                Error::FailedPrecondition("x".into()),
                ErrorKind::FailedPrecondition,
            ),
            (
                Error::ResourceExhausted("x".into()),
                ErrorKind::ResourceExhausted,
            ),
            (
                Error::ModelMismatch {
                    collection: "c".into(),
                    reason: "r".into(),
                },
                ErrorKind::FailedPrecondition,
            ),
            (Error::collection_not_found("c"), ErrorKind::NotFound),
            (
                crate::eval::BeirError::Io {
                    path: "corpus.jsonl".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                }
                .into(),
                ErrorKind::NotFound,
            ),
        ] {
            assert_eq!(e.kind(), kind, "{e}");
            assert!(e.is_caller_fault(), "{e}");
        }
        let io: Error = crate::eval::BeirError::Io {
            path: "corpus.jsonl".into(),
            source: std::io::Error::other("disk on fire"),
        }
        .into();
        assert_eq!(io.kind(), ErrorKind::Internal);
    }

    #[test]
    fn echoes_are_bounded() {
        let long = "é".repeat(10_000);
        let shown = bounded(&long);
        assert_eq!(shown.chars().count(), MAX_ECHO_CHARS + 1);
        assert!(shown.ends_with('…'));
        assert_eq!(bounded("short"), "short");
        assert!(Error::collection_not_found(&long).to_string().len() < 400);
    }
}
