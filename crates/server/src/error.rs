//! Errors of the service and their gRPC status codes.
//!
//! Every error has an [`ErrorKind`] (its own, or the library's [`latentdb::Error::kind`]), and
//! [`code`] maps each kind to one status code: the one place where codes are chosen. A
//! caller's mistake gets a caller-fault code and a message that says what was wrong, cut to
//! [`MAX_STATUS_MESSAGE_BYTES`]; `INTERNAL` and `DATA_LOSS` are logged here and sent without
//! details.

use std::borrow::Cow;

use latentdb_types::ErrorKind;
use tonic::{Code, Status};

/// The longest status message sent, in bytes: messages that quote caller input are cut here
/// (with "…"), whatever the layer below did, so that no request can make the server send an
/// unbounded message (gRPC clients cap metadata at a few KiB).
pub const MAX_STATUS_MESSAGE_BYTES: usize = 512;

/// Everything a call can fail with. Converted to a [`Status`] by [`ServiceError::into_status`].
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The database failed or rejected the request.
    #[error(transparent)]
    Db(#[from] latentdb::Error),
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
    /// The server is shutting down and takes no new work.
    #[error("{0}")]
    Unavailable(String),
    /// The call's deadline (`grpc-timeout`) passed before its work started or finished.
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    /// The client went away before its work started.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// A blocking task panicked or was cancelled.
    #[error("worker task failed: {0}")]
    Worker(String),
}

/// Shorthand for a limit error.
pub(crate) fn limit(what: &str, got: usize, max: usize) -> ServiceError {
    ServiceError::Limit(format!("{what} is {got}, the server limit is {max}"))
}

/// The gRPC status code of an error kind: the one mapping of the server.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    }
}

/// `s` cut to at most `max` bytes at a character boundary, with "…" when cut.
pub(crate) fn truncate(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    Cow::Owned(format!("{}…", &s[..cut]))
}

/// Caller input quoted for a message, at most 64 bytes of it.
pub(crate) fn echo(s: &str) -> String {
    format!("{:?}", truncate(s, 64))
}

impl ServiceError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Db(e) => e.kind(),
            ServiceError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            ServiceError::NotFound(_) => ErrorKind::NotFound,
            ServiceError::Limit(_) => ErrorKind::ResourceExhausted,
            ServiceError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            ServiceError::Unavailable(_) => ErrorKind::Unavailable,
            ServiceError::DeadlineExceeded(_) => ErrorKind::DeadlineExceeded,
            ServiceError::Cancelled(_) => ErrorKind::Cancelled,
            ServiceError::Worker(_) => ErrorKind::Internal,
        }
    }

    /// The gRPC status for this error: the [`code`] of its [`kind`](Self::kind) and its
    /// message, bounded. `INTERNAL` and `DATA_LOSS` are logged here with their details and
    /// sent without them.
    pub fn into_status(self) -> Status {
        let kind = self.kind();
        match kind {
            ErrorKind::Internal => {
                tracing::error!(error = %self, "internal error");
                Status::internal("internal error (see the server log)")
            }
            ErrorKind::DataLoss => {
                tracing::error!(error = %self, "data loss");
                Status::data_loss("stored data is damaged or lost (see the server log)")
            }
            _ => {
                if kind == ErrorKind::ResourceExhausted {
                    tracing::warn!(error = %self, "request over a limit");
                }
                let message = self.to_string();
                Status::new(
                    code(kind),
                    truncate(&message, MAX_STATUS_MESSAGE_BYTES).into_owned(),
                )
            }
        }
    }
}

/// An embedder error is classified as the library classifies it.
impl From<latentdb::embed::Error> for ServiceError {
    fn from(e: latentdb::embed::Error) -> Self {
        ServiceError::Db(latentdb::Error::Embed(e))
    }
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
    /// The configuration is unsafe or inconsistent (an empty API key, ...).
    #[error("invalid server configuration: {0}")]
    Config(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(e: latentdb::storage::Error) -> Status {
        ServiceError::Db(latentdb::Error::Storage(e)).into_status()
    }

    #[test]
    fn every_kind_has_its_code() {
        use ErrorKind as K;
        let pairs = [
            (K::InvalidArgument, Code::InvalidArgument),
            (K::NotFound, Code::NotFound),
            (K::AlreadyExists, Code::AlreadyExists),
            (K::FailedPrecondition, Code::FailedPrecondition),
            (K::ResourceExhausted, Code::ResourceExhausted),
            (K::Unavailable, Code::Unavailable),
            (K::Cancelled, Code::Cancelled),
            (K::DeadlineExceeded, Code::DeadlineExceeded),
            (K::DataLoss, Code::DataLoss),
            (K::Internal, Code::Internal),
        ];
        for (kind, c) in pairs {
            assert_eq!(code(kind), c, "{kind}");
        }
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
            limit("k", 2, 1).into_status().code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            ServiceError::Db(latentdb::Error::InvalidFilter("f".into()))
                .into_status()
                .code(),
            Code::InvalidArgument
        );
        // A panicked worker is the server's failure, not the caller's.
        assert_eq!(
            ServiceError::Db(latentdb::Error::Internal("worker panicked".into()))
                .into_status()
                .code(),
            Code::Internal
        );
        assert_eq!(
            ServiceError::Db(latentdb::Error::Storage(S::Io {
                path: "/x".into(),
                source: std::io::Error::other("disk"),
            }))
            .into_status()
            .code(),
            Code::Internal
        );
    }

    #[test]
    fn internal_errors_do_not_leak() {
        let s = storage(latentdb::storage::Error::Corrupt(
            "/secret/path/db key 0xdeadbeef".into(),
        ));
        assert!(matches!(s.code(), Code::Internal | Code::DataLoss));
        assert!(!s.message().contains("secret"));
        assert!(!s.message().contains("deadbeef"));
        let s = ServiceError::Worker("panicked at src/x.rs".into()).into_status();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("src/x.rs"));
    }

    #[test]
    fn messages_are_bounded() {
        let long = "é".repeat(20_000);
        let s = ServiceError::InvalidArgument(format!("bad name {long}")).into_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(
            s.message().len() <= MAX_STATUS_MESSAGE_BYTES,
            "{}",
            s.message().len()
        );
        assert!(s.message().ends_with('…'));
        assert_eq!(truncate("short", 10), "short");
        assert!(echo(&long).len() < 80);
    }
}
