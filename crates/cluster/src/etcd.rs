//! A small etcd v3 client over tonic: the key-value calls, transactions on a key's revision
//! (for fencing) and leases with keep-alive: what the cluster's metadata needs, no more.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::pb::etcd::{
    Compare, DeleteRangeRequest, KeyValue, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, compare::TargetUnion,
    kv_client::KvClient, lease_client::LeaseClient, request_op::Request,
};

/// `Compare.result`: equal.
const CMP_EQUAL: i32 = 0;
/// `Compare.target`: the key's create revision (0: the key does not exist).
const TARGET_CREATE: i32 = 1;
/// `Compare.target`: the key's last modification revision.
const TARGET_MOD: i32 = 2;

/// How long one etcd call may take before it fails as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to an etcd cluster (one or more endpoints, balanced).
#[derive(Clone, Debug)]
pub struct Etcd {
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
}

fn status(e: tonic::Status) -> Error {
    Error::Etcd(format!("{}: {}", e.code(), e.message()))
}

/// The end of the key range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): the whole key space from `prefix` on.
    vec![0]
}

impl Etcd {
    /// Connects to the comma-separated `endpoints` (`http://127.0.0.1:2379,...`; a bare
    /// `host:port` means `http://host:port`). The connection is made lazily; the first call
    /// fails as unavailable when no endpoint answers.
    pub fn connect(endpoints: &str) -> Result<Etcd> {
        let mut list = Vec::new();
        for e in endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let url = if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            };
            let ep = Endpoint::from_shared(url)
                .map_err(|err| Error::InvalidArgument(format!("etcd endpoint {e:?}: {err}")))?
                .connect_timeout(Duration::from_secs(2))
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true);
            list.push(ep);
        }
        if list.is_empty() {
            return Err(Error::InvalidArgument("no etcd endpoint given".into()));
        }
        let channel = Channel::balance_list(list.into_iter());
        Ok(Etcd {
            kv: KvClient::new(channel.clone()),
            lease: LeaseClient::new(channel),
        })
    }

    /// The value of `key`, with its revisions.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .kv
            .clone()
            .range(RangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        Ok(resp.into_inner().kvs.into_iter().next())
    }

    /// Every key starting with `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let resp = self
            .kv
            .clone()
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        Ok(resp.into_inner().kvs)
    }

    /// Writes `key` (bound to `lease` when not 0); returns the store's revision after it.
    pub async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<i64> {
        let resp = self
            .kv
            .clone()
            .put(PutRequest {
                key: key.as_bytes().to_vec(),
                value,
                lease,
                prev_kv: false,
            })
            .await
            .map_err(status)?;
        Ok(resp.into_inner().header.map_or(0, |h| h.revision))
    }

    /// Writes `key` only if it does not exist; true when written.
    pub async fn create(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<bool> {
        self.put_if(key, value, lease, TARGET_CREATE, 0).await
    }

    /// Writes `key` only if its last modification is still `mod_revision` (a fenced update:
    /// fails, writing nothing, when someone else changed it meanwhile); true when written.
    pub async fn update(&self, key: &str, value: Vec<u8>, mod_revision: i64) -> Result<bool> {
        self.put_if(key, value, 0, TARGET_MOD, mod_revision).await
    }

    async fn put_if(
        &self,
        key: &str,
        value: Vec<u8>,
        lease: i64,
        target: i32,
        revision: i64,
    ) -> Result<bool> {
        let union = if target == TARGET_CREATE {
            TargetUnion::CreateRevision(revision)
        } else {
            TargetUnion::ModRevision(revision)
        };
        let resp = self
            .kv
            .clone()
            .txn(TxnRequest {
                compare: vec![Compare {
                    result: CMP_EQUAL,
                    target,
                    key: key.as_bytes().to_vec(),
                    target_union: Some(union),
                }],
                success: vec![RequestOp {
                    request: Some(Request::RequestPut(PutRequest {
                        key: key.as_bytes().to_vec(),
                        value,
                        lease,
                        prev_kv: false,
                    })),
                }],
                failure: Vec::new(),
            })
            .await
            .map_err(status)?;
        Ok(resp.into_inner().succeeded)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.kv
            .clone()
            .delete_range(DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// Deletes every key starting with `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        self.kv
            .clone()
            .delete_range(DeleteRangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix.as_bytes()),
                prev_kv: false,
            })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// Grants a lease of `ttl_s` seconds (etcd may grant more); returns its id.
    pub async fn grant(&self, ttl_s: i64) -> Result<i64> {
        let resp = self
            .lease
            .clone()
            .lease_grant(LeaseGrantRequest { ttl: ttl_s, id: 0 })
            .await
            .map_err(status)?
            .into_inner();
        if !resp.error.is_empty() {
            return Err(Error::Etcd(resp.error));
        }
        Ok(resp.id)
    }

    /// Revokes lease `id` (its keys disappear at once).
    pub async fn revoke(&self, id: i64) -> Result<()> {
        self.lease
            .clone()
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .map_err(status)?;
        Ok(())
    }

    /// Keeps lease `id` alive, refreshing it every `every`, until the lease is lost (expired,
    /// or revoked) or the stream fails; returns why it stopped.
    pub async fn keep_alive(&self, id: i64, every: Duration) -> Error {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // The first request is queued before the call: etcd may answer the call's headers
        // only once it has a request to answer.
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            return Error::Internal("keep-alive channel closed".into());
        }
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut inbound = match self.lease.clone().lease_keep_alive(outbound).await {
            Ok(resp) => resp.into_inner(),
            Err(e) => return status(e),
        };
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            match tokio::time::timeout(CALL_TIMEOUT, inbound.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl > 0 => {}
                Ok(Ok(Some(_))) => return Error::Etcd(format!("lease {id:x} expired")),
                Ok(Ok(None)) => return Error::Etcd("lease keep-alive stream ended".into()),
                Ok(Err(e)) => return status(e),
                Err(_) => return Error::Unavailable("etcd did not answer a keep-alive".into()),
            }
            tick.tick().await;
            if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                return Error::Etcd("lease keep-alive stream closed".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends_cover_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
