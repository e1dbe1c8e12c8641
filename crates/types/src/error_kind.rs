//! [`ErrorKind`]: who is at fault for an error, and what the caller can do about it.

use std::fmt;

/// The class of an error, shared by every crate's error type and mapped to one gRPC status
/// code in one place (the server's error module).
///
/// The first group is the caller's fault (fix the request); the second is the system's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or out of range (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// What the request names does not exist (`NOT_FOUND`).
    NotFound,
    /// What the request creates exists already (`ALREADY_EXISTS`).
    AlreadyExists,
    /// The request is valid but the state it needs does not hold (`FAILED_PRECONDITION`):
    /// a collection without an embedder asked to embed, a quarantined collection.
    FailedPrecondition,
    /// A limit was reached: too many items, too much memory asked for (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
    /// The service cannot take the request now (shutting down, locked by another process);
    /// retrying later may succeed (`UNAVAILABLE`).
    Unavailable,
    /// The caller went away or cancelled (`CANCELLED`).
    Cancelled,
    /// The call's deadline passed before the work finished (`DEADLINE_EXCEEDED`).
    DeadlineExceeded,
    /// Stored data is damaged or lost (`DATA_LOSS`): a database whose storage opens behind its
    /// own records of acknowledged writes, a record that does not decode.
    DataLoss,
    /// The system failed: I/O, a panicked worker, a broken invariant (`INTERNAL`).
    Internal,
}

impl ErrorKind {
    /// True when the request itself was wrong, so that retrying it unchanged cannot succeed.
    pub fn is_caller_fault(self) -> bool {
        matches!(
            self,
            ErrorKind::InvalidArgument
                | ErrorKind::NotFound
                | ErrorKind::AlreadyExists
                | ErrorKind::FailedPrecondition
                | ErrorKind::ResourceExhausted
                | ErrorKind::Cancelled
                | ErrorKind::DeadlineExceeded
        )
    }

    /// A stable lower-case name (`invalid_argument`, `not_found`, ...), used in JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::FailedPrecondition => "failed_precondition",
            ErrorKind::ResourceExhausted => "resource_exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::DataLoss => "data_loss",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_faults_are_not_the_callers() {
        for k in [
            ErrorKind::Unavailable,
            ErrorKind::DataLoss,
            ErrorKind::Internal,
        ] {
            assert!(!k.is_caller_fault(), "{k}");
        }
        assert!(ErrorKind::NotFound.is_caller_fault());
        assert_eq!(
            ErrorKind::FailedPrecondition.to_string(),
            "failed_precondition"
        );
    }
}
