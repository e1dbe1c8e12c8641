//! Errors of the service and their gRPC status codes, mapped in one exhaustive place
//! ([`ServiceError::into_status`]).

use tonic::{Code, Status};

/// Everything a call can fail with. Converted to a [`Status`] by [`ServiceError::into_status`].
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database failed or rejected the request.
    #[error(transparent)]
    Db(#[from] latentdb::Error),
    /// The embedder failed or rejected the request.
    #[error(transparent)]
    Embed(#[from] latentdb::embed::Error),
    /// The request is malformed (caught by the server before the database sees it).
    #[error("{0}")]
    InvalidArgument(String),
    /// Something asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A server limit was exceeded.
    #[error("{0}")]
    Limit(String),
    /// The call needs something the server does not have (an embedder).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A blocking task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Worker(String),
}

/// Shorthand for a limit error.
pub(crate) fn limit(what: &str, got: usize, max: usize) -> ServiceError {
    ServiceError::Limit(format!("{what} is {got}, the server limit is {max}"))
}

impl ServiceError {
    /// The gRPC status for this error: bad input `INVALID_ARGUMENT`, a missing collection or
    /// document `NOT_FOUND`, an existing collection `ALREADY_EXISTS`, limits
    /// `RESOURCE_EXHAUSTED`; anything else is `INTERNAL`, logged here and never sent.
    pub fn into_status(self) -> Status {
        use latentdb::storage::Error as S;
        let caller = |code: Code, msg: String| Status::new(code, msg);
        match self {
            ServiceError::Db(e) => match e {
                latentdb::Error::Storage(s) => match s {
                    S::CollectionNotFound(_) => caller(Code::NotFound, s.to_string()),
                    S::CollectionExists(_) => caller(Code::AlreadyExists, s.to_string()),
                    S::InvalidCollectionName { .. }
                    | S::InvalidDimension { .. }
                    | S::DimensionMismatch { .. }
                    | S::NonFiniteVector { .. }
                    | S::MissingVector { .. }
                    | S::InvalidId { .. }
                    | S::InvalidMetadata { .. }
                    | S::DuplicateId { .. }
                    | S::InvalidArgument(_) => caller(Code::InvalidArgument, s.to_string()),
                    S::TextTooLong { .. } => caller(Code::ResourceExhausted, s.to_string()),
                    S::Locked { .. }
                    | S::UnsupportedFormat { .. }
                    | S::Corrupt(_)
                    | S::IdSpaceExhausted(_)
                    | S::Io { .. }
                    | S::Sled(_) => internal(&s),
                },
                latentdb::Error::InvalidArgument(m) | latentdb::Error::InvalidFilter(m) => {
                    caller(Code::InvalidArgument, m)
                }
                latentdb::Error::Index(i) => {
                    use latentdb::index::Error as I;
                    match i {
                        I::DimensionMismatch { .. }
                        | I::NonFiniteVector { .. }
                        | I::ZeroVector { .. }
                        | I::InvalidArgument(_)
                        | I::UnknownMetric(_)
                        | I::InvalidFilter { .. } => caller(Code::InvalidArgument, i.to_string()),
                        // The server never hands the index point ids or files.
                        I::DuplicateId(_)
                        | I::Npy { .. }
                        | I::CorruptDump { .. }
                        | I::Io { .. } => internal(&i),
                    }
                }
                latentdb::Error::Embed(e) => embed_status(e),
                m @ latentdb::Error::ModelMismatch { .. } => {
                    caller(Code::FailedPrecondition, m.to_string())
                }
                // Ingestion sources and evaluation datasets are files: no RPC reads them, so
                // these are caller faults only in the CLI; here they are the server's.
                other @ (latentdb::Error::Source(_) | latentdb::Error::Dataset(_)) => {
                    internal(&other)
                }
            },
            ServiceError::Embed(e) => embed_status(e),
            ServiceError::InvalidArgument(m) => caller(Code::InvalidArgument, m),
            ServiceError::NotFound(m) => caller(Code::NotFound, m),
            ServiceError::Limit(m) => {
                tracing::warn!(limit = %m, "request over a server limit");
                caller(Code::ResourceExhausted, m)
            }
            ServiceError::FailedPrecondition(m) => caller(Code::FailedPrecondition, m),
            ServiceError::Worker(m) => internal(&m),
        }
    }
}

/// The status of an embedder error: bad input `INVALID_ARGUMENT`, the rest `INTERNAL`.
fn embed_status(e: latentdb::embed::Error) -> Status {
    use latentdb::embed::Error as E;
    match e {
        E::InvalidArgument(_) => Status::invalid_argument(e.to_string()),
        E::ModelNotFound { .. }
        | E::MissingFile(_)
        | E::InvalidConfig(_)
        | E::Weights(_)
        | E::Checksum { .. }
        | E::Fetch(_)
        | E::Io { .. }
        | E::Json { .. }
        | E::Candle(_)
        | E::Tokenizer(_) => internal(&e),
    }
}

/// Logs a system fault and returns an `INTERNAL` status that says nothing about it.
fn internal(e: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error (see the server log)")
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        e.into_status()
    }
}

/// Why [`crate::serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding or accepting on the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The transport failed.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set, or a worker task
    /// failed.
    #[error("server setup failed: {0}")]
    Setup(String),
    /// Flushing the database at shutdown failed.
    #[error("flush at shutdown failed: {0}")]
    Flush(#[source] latentdb::Error),
    /// The TLS certificate or key is unusable (caller fault: not PEM, no key, mismatched).
    #[error("invalid TLS certificate or key: {0}")]
    Tls(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(e: latentdb::storage::Error) -> Status {
        ServiceError::Db(latentdb::Error::Storage(e)).into_status()
    }

    #[test]
    fn codes() {
        use latentdb::storage::Error as S;
        assert_eq!(
            storage(S::CollectionNotFound("c".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            storage(S::CollectionExists("c".into())).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            storage(S::InvalidArgument("x".into())).code(),
            Code::InvalidArgument
        );
        assert_eq!(
            storage(S::TextTooLong {
                id: "a".into(),
                len: 2,
                limit: 1
            })
            .code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            limit("k", 2, 1).into_status().code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            ServiceError::Db(latentdb::Error::InvalidFilter("f".into()))
                .into_status()
                .code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let s = storage(latentdb::storage::Error::Corrupt(
            "/secret/path/db key 0xdeadbeef".into(),
        ));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("secret"));
        assert!(!s.message().contains("deadbeef"));
        let s = ServiceError::Worker("panicked at src/x.rs".into()).into_status();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("src/x.rs"));
    }
}
