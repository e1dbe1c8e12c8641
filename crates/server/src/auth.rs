//! API key authentication: a tonic interceptor.

use std::sync::Arc;

use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Checks `authorization: Bearer KEY` or `x-api-key: KEY` on every call of the services it
/// wraps (everything but health). Without a key it lets every call through.
#[derive(Debug, Clone, Default)]
pub struct ApiKeyAuth {
    key: Option<Arc<[u8]>>,
}

impl ApiKeyAuth {
    /// An interceptor that requires `key`, or nothing when `None`.
    pub fn new(key: Option<&str>) -> Self {
        ApiKeyAuth {
            key: key.map(|k| Arc::from(k.as_bytes())),
        }
    }

    /// True when the request metadata carries the key.
    fn authorized<T>(&self, req: &Request<T>) -> bool {
        let Some(key) = &self.key else {
            return true;
        };
        let md = req.metadata();
        let bearer = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let header = md.get("x-api-key").and_then(|v| v.to_str().ok());
        [bearer, header]
            .into_iter()
            .flatten()
            .any(|given| constant_time_eq(given.trim().as_bytes(), key))
    }
}

impl Interceptor for ApiKeyAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.authorized(&req) {
            Ok(req)
        } else {
            tracing::warn!(remote = ?req.remote_addr(), "unauthenticated call rejected");
            Err(Status::unauthenticated(
                "missing or wrong API key: send `authorization: Bearer KEY` or `x-api-key: KEY`",
            ))
        }
    }
}

/// Compares without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&'static str, &str)]) -> Request<()> {
        let mut r = Request::new(());
        for (k, v) in headers {
            r.metadata_mut().insert(*k, v.parse().expect("ascii"));
        }
        r
    }

    #[test]
    fn keys_are_checked() {
        let mut auth = ApiKeyAuth::new(Some("s3cret"));
        assert!(
            auth.call(req(&[("authorization", "Bearer s3cret")]))
                .is_ok()
        );
        assert!(auth.call(req(&[("x-api-key", "s3cret")])).is_ok());
        assert!(auth.call(req(&[("x-api-key", "s3cre")])).is_err());
        assert!(auth.call(req(&[("authorization", "s3cret")])).is_err());
        assert!(auth.call(req(&[])).is_err());
        let mut open = ApiKeyAuth::new(None);
        assert!(open.call(req(&[])).is_ok());
    }
}
