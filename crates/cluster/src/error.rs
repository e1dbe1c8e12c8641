//! The cluster's one error type, each with an [`ErrorKind`] that the router maps to a gRPC
//! code through the server's one mapping ([`latentdb_server::code`]).

use latentdb::ErrorKind;

/// `Result` with the cluster's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the cluster layer can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed (the caller's fault).
    #[error("{0}")]
    InvalidArgument(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the request creates exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The cluster is not in the state the request needs (too few nodes, an old NATS server,
    /// a stream without atomic publish).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A service the cluster stands on (etcd, NATS, a data node) cannot be reached now;
    /// retrying may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// etcd answered with an error.
    #[error("etcd: {0}")]
    Etcd(String),
    /// NATS or JetStream answered with an error.
    #[error("nats: {0}")]
    Nats(String),
    /// The local database failed.
    #[error(transparent)]
    Db(#[from] latentdb::Error),
    /// Stored cluster metadata or a log entry does not decode.
    #[error("corrupt cluster data: {0}")]
    Corrupt(String),
    /// A worker task failed, or another broken invariant.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Error::Unavailable(_) | Error::Etcd(_) | Error::Nats(_) => ErrorKind::Unavailable,
            Error::Db(e) => e.kind(),
            Error::Corrupt(_) => ErrorKind::DataLoss,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// This error as a gRPC status (the server's code mapping; internal details are logged,
    /// not sent).
    pub fn into_status(self) -> tonic::Status {
        let code = latentdb_server::code(self.kind());
        if matches!(code, tonic::Code::Internal | tonic::Code::DataLoss) {
            tracing::error!(error = %self, "cluster call failed");
            return tonic::Status::new(code, "internal error (see the router's log)");
        }
        tonic::Status::new(code, self.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.into_status()
    }
}
