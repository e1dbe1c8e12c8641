//! [`Call`]: what a handler knows about its call beyond the request: its deadline
//! (`grpc-timeout`) and whether its client is still waiting.
//!
//! A handler makes one `Call` from its request and keeps it until it returns. When the client
//! goes away (or tonic's own `grpc-timeout` timer fires), the handler future is dropped, and
//! with it the `Call`: that marks its [`CallToken`]s gone. Blocking work checks its token
//! before it starts and between batches, so work for a client that left or a deadline that
//! passed is not started.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::Request;

use crate::error::ServiceError;

/// A call in progress: its deadline, and a flag set when the handler is dropped.
#[derive(Debug)]
pub(crate) struct Call {
    token: CallToken,
}

/// A cheap copy of a call's deadline and liveness for work off the handler (blocking tasks).
#[derive(Debug, Clone)]
pub(crate) struct CallToken {
    deadline: Option<Instant>,
    gone: Arc<AtomicBool>,
}

impl Call {
    /// The call of `req`: its deadline from `grpc-timeout` (none if absent or unparsable).
    pub(crate) fn of<T>(req: &Request<T>) -> Call {
        let timeout = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Call::with_timeout(timeout)
    }

    /// A call that must finish within `timeout` (none: no deadline).
    pub(crate) fn with_timeout(timeout: Option<Duration>) -> Call {
        Call {
            token: CallToken {
                deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
                gone: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    /// A token for work done elsewhere on this call's behalf.
    pub(crate) fn token(&self) -> CallToken {
        self.token.clone()
    }

    /// Runs `body` within the call's deadline: `DEADLINE_EXCEEDED` when it passes first (the
    /// body is dropped, which stops waiting for its blocking work).
    pub(crate) async fn within<T>(
        &self,
        body: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        match self.token.deadline {
            None => body.await,
            Some(deadline) => tokio::time::timeout_at(deadline, body)
                .await
                .unwrap_or_else(|_| Err(deadline_exceeded())),
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.token.gone.store(true, Ordering::Release);
    }
}

impl CallToken {
    /// `Err` when the deadline has passed (`DEADLINE_EXCEEDED`) or the client is gone
    /// (`CANCELLED`): do not start more work.
    pub(crate) fn check(&self) -> Result<(), ServiceError> {
        if self.gone.load(Ordering::Acquire) {
            return Err(ServiceError::Cancelled(
                "the client went away before the work started".into(),
            ));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(deadline_exceeded());
        }
        Ok(())
    }
}

fn deadline_exceeded() -> ServiceError {
    ServiceError::DeadlineExceeded("the call's deadline (grpc-timeout) passed".into())
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let digits = &v[..v.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("-5S"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[tokio::test]
    async fn a_dropped_call_stops_its_work() {
        let call = Call::with_timeout(None);
        let token = call.token();
        assert!(token.check().is_ok());
        drop(call);
        assert!(matches!(token.check(), Err(ServiceError::Cancelled(_))));
    }

    #[tokio::test]
    async fn a_passed_deadline_stops_work() {
        let call = Call::with_timeout(Some(Duration::ZERO));
        assert!(matches!(
            call.token().check(),
            Err(ServiceError::DeadlineExceeded(_))
        ));
        let out: Result<(), _> = call
            .within(async {
                std::future::pending::<()>().await;
                Ok(())
            })
            .await;
        assert!(matches!(out, Err(ServiceError::DeadlineExceeded(_))));
    }
}
