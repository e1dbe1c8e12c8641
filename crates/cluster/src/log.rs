//! The write log: one JetStream stream per collection, one subject per shard.
//!
//! [`ShardLog`] is what the router and the data nodes need of a log; [`JetStreamLog`] is its
//! implementation on NATS JetStream. A write that spans shards is appended as one **atomic
//! batch** (ADR-50, server ≥ 2.12): either every shard's entry is stored or none is. The stream
//! is replicated (up to 3 servers), on file storage, and its servers must run with
//! `sync_interval: always` for an acknowledged entry to survive a power loss.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::shard::{shard_subject, stream_name};

/// How long [`JetStreamLog::connect`] keeps trying to reach a NATS server.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// How long an append keeps retrying a batch whose fate is unknown (a NATS server or the
/// stream's leader failing: a new leader takes a few seconds).
pub const APPEND_PATIENCE: Duration = Duration::from_secs(30);

/// JetStream's error code for an atomic batch holding a message id it has stored already.
const ERR_DUPLICATE_IN_BATCH: u64 = 10201;
/// JetStream's error code for a stream that does not exist.
const ERR_STREAM_NOT_FOUND: u64 = 10059;

/// How one attempt at an append ended, when not stored.
enum Attempt {
    /// An earlier attempt of this batch committed (its ids are stored).
    Committed,
    /// The fate is unknown or the failure passing: send it again.
    Retry(Error),
    /// It cannot succeed.
    Failed(Error),
}

/// The oldest NATS server with atomic batch publish.
pub const MIN_SERVER_VERSION: (u64, u64) = (2, 12);

/// One entry of a shard's log, as a consumer receives it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Its stream sequence (increasing along the shard's subject, with gaps).
    pub seq: u64,
    /// The encoded [`crate::pb::cluster::ShardOp`].
    pub payload: Bytes,
}

/// What the cluster needs of a write log.
pub trait ShardLog: Send + Sync + 'static {
    /// Creates the log of the collection `uid` if it does not exist (idempotent).
    fn create(&self, uid: u64) -> BoxFuture<'_, Result<()>>;
    /// Deletes the log of the collection `uid` (idempotent).
    fn remove(&self, uid: u64) -> BoxFuture<'_, Result<()>>;
    /// Appends `entries` (`(shard, payload)`) atomically: all are stored, in order, or none.
    /// `batch_id` (at most 64 characters) names the batch; an append retried with the same
    /// id and entries inside the log's duplicate window is not stored twice. Returns each
    /// entry's sequence.
    fn append(
        &self,
        uid: u64,
        batch_id: String,
        entries: Vec<(u32, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<u64>>>;
    /// The entries of shard `shard` of collection `uid` after sequence `after`, in order, and
    /// then as they are appended.
    fn read(
        &self,
        uid: u64,
        shard: u32,
        after: u64,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<LogEntry>>>>;
    /// The sequence of the last entry of shard `shard` of collection `uid` (0: none).
    fn last_seq(&self, uid: u64, shard: u32) -> BoxFuture<'_, Result<u64>>;
}

/// The log on NATS JetStream.
#[derive(Clone, Debug)]
pub struct JetStreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
}

fn nats<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Error + '_ {
    move |e| Error::Nats(format!("{what}: {e}"))
}

/// `major.minor` of a server version string.
fn parse_version(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

impl JetStreamLog {
    /// Connects to the comma-separated NATS `urls` and checks the server: it must have
    /// JetStream and atomic batch publish (version ≥ 2.12). Streams are created with
    /// `replicas` copies, or, when `None`, as many as the cluster has servers, up to 3.
    pub async fn connect(urls: &str, replicas: Option<usize>) -> Result<JetStreamLog> {
        let mut addrs = Vec::new();
        for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            addrs.push(
                u.parse::<async_nats::ServerAddr>()
                    .map_err(|e| Error::InvalidArgument(format!("NATS url {u:?}: {e}")))?,
            );
        }
        if addrs.is_empty() {
            return Err(Error::InvalidArgument("no NATS url given".into()));
        }
        // Servers started together with the node may not listen yet: retry for a while.
        let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
        let client = loop {
            match async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(3))
                .request_timeout(Some(Duration::from_secs(10)))
                .connect(addrs.clone())
                .await
            {
                Ok(c) => break c,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Unavailable(format!(
                        "cannot connect to NATS at {urls}: {e}"
                    )));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "NATS not reachable yet");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let info = client.server_info();
        match parse_version(&info.version) {
            Some(v) if v >= MIN_SERVER_VERSION => {}
            _ => {
                return Err(Error::FailedPrecondition(format!(
                    "NATS server {} is too old: the write log needs atomic batch publish \
                     (nats-server {}.{} or later)",
                    info.version, MIN_SERVER_VERSION.0, MIN_SERVER_VERSION.1
                )));
            }
        }
        if !info.jetstream {
            return Err(Error::FailedPrecondition(
                "the NATS server runs without JetStream (start it with -js)".into(),
            ));
        }
        let replicas = replicas.unwrap_or(1 + info.connect_urls.len()).clamp(1, 3);
        let js = jetstream::new(client.clone());
        Ok(JetStreamLog {
            client,
            js,
            replicas,
        })
    }

    /// How many copies new streams get.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The NATS client (for tests and tools).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    async fn do_create(&self, uid: u64) -> Result<()> {
        let config = stream::Config {
            name: stream_name(uid),
            subjects: vec![format!("latentdb.{uid}.*")],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            allow_atomic_publish: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let mut s = self
            .js
            .get_or_create_stream(config)
            .await
            .map_err(nats("create stream"))?;
        let info = s.info().await.map_err(nats("stream info"))?;
        if !info.config.allow_atomic_publish {
            return Err(Error::FailedPrecondition(format!(
                "stream {} has no atomic publish (allow_atomic): the NATS server ignores it \
                 (it must be 2.12 or later)",
                stream_name(uid)
            )));
        }
        Ok(())
    }

    /// Appends with retries: a batch whose fate is unknown (the connection or the stream's
    /// leader failed mid-way) is sent again whole, under the same batch and message ids, for
    /// up to [`APPEND_PATIENCE`]. JetStream rejects a batch holding an id it has stored
    /// (within the duplicate window), so a batch that had committed is never stored twice:
    /// that rejection means the first attempt committed.
    async fn do_append(
        &self,
        uid: u64,
        batch_id: String,
        entries: Vec<(u32, Vec<u8>)>,
    ) -> Result<Vec<u64>> {
        let n = entries.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > 1000 {
            return Err(Error::InvalidArgument(format!(
                "an atomic batch holds at most 1000 entries, got {n}"
            )));
        }
        let entries: Vec<(u32, Bytes)> = entries
            .into_iter()
            .map(|(s, p)| (s, Bytes::from(p)))
            .collect();
        let deadline = tokio::time::Instant::now() + APPEND_PATIENCE;
        loop {
            match self.append_once(uid, &batch_id, &entries).await {
                Ok(seqs) => return Ok(seqs),
                Err(Attempt::Committed) => {
                    // An earlier attempt committed; its sequences are at most each shard's
                    // last one now (enough for read-your-writes).
                    let mut seqs = Vec::with_capacity(n);
                    for (shard, _) in &entries {
                        seqs.push(self.do_last_seq(uid, *shard).await?);
                    }
                    return Ok(seqs);
                }
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Retry(e)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, %batch_id, "append failed: sending the batch again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// One attempt at an atomic batch.
    async fn append_once(
        &self,
        uid: u64,
        batch_id: &str,
        entries: &[(u32, Bytes)],
    ) -> std::result::Result<Vec<u64>, Attempt> {
        let n = entries.len();
        let mut ack = None;
        for (i, (shard, payload)) in entries.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", batch_id);
            headers.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
            headers.insert("Nats-Msg-Id", format!("{batch_id}.{i}").as_str());
            let last = i + 1 == n;
            if last {
                headers.insert("Nats-Batch-Commit", "1");
            }
            let subject = shard_subject(uid, *shard);
            if i == 0 || last {
                // The first entry is acknowledged (the server says at once when the stream
                // takes no batches); the commit's answer is the batch's acknowledgement.
                let reply = self
                    .client
                    .request_with_headers(subject, headers, payload.clone())
                    .await
                    .map_err(|e| {
                        Attempt::Retry(Error::Unavailable(format!("append to the write log: {e}")))
                    })?;
                if !last && reply.payload.is_empty() {
                    // The first entry's flow-control answer: taken, nothing to report.
                    continue;
                }
                let parsed: serde_json::Value =
                    serde_json::from_slice(&reply.payload).map_err(|e| {
                        Attempt::Retry(Error::Nats(format!(
                            "append: an answer that is not JSON: {e}"
                        )))
                    })?;
                if let Some(err) = parsed.get("error") {
                    let code = err.get("err_code").and_then(serde_json::Value::as_u64);
                    let status = err.get("code").and_then(serde_json::Value::as_u64);
                    return Err(match (code, status) {
                        (Some(ERR_DUPLICATE_IN_BATCH), _) => Attempt::Committed,
                        (Some(ERR_STREAM_NOT_FOUND), _) | (_, Some(404)) => Attempt::Failed(
                            Error::NotFound(format!("the write log refused the batch: {err}")),
                        ),
                        _ => Attempt::Retry(Error::Nats(format!("append refused: {err}"))),
                    });
                }
                if last {
                    ack = Some(parsed);
                }
            } else {
                self.client
                    .publish_with_headers(subject, headers, payload.clone())
                    .await
                    .map_err(|e| {
                        Attempt::Retry(Error::Unavailable(format!("append to the write log: {e}")))
                    })?;
            }
        }
        let ack =
            ack.ok_or_else(|| Attempt::Failed(Error::Internal("a batch without a commit".into())))?;
        let last_seq = ack
            .get("seq")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                Attempt::Retry(Error::Nats(format!(
                    "append: acknowledgement without a sequence: {ack}"
                )))
            })?;
        let count = ack
            .get("count")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(1);
        if count != n as u64 {
            return Err(Attempt::Failed(Error::Nats(format!(
                "append: the batch of {n} entries was stored as {count}"
            ))));
        }
        // A committed batch occupies consecutive sequences ending at the commit's.
        let first = last_seq + 1 - n as u64;
        Ok((0..n as u64).map(|i| first + i).collect())
    }

    async fn do_read(
        &self,
        uid: u64,
        shard: u32,
        after: u64,
    ) -> Result<BoxStream<'static, Result<LogEntry>>> {
        let s = self
            .js
            .get_stream(stream_name(uid))
            .await
            .map_err(nats("get stream"))?;
        let consumer = s
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: shard_subject(uid, shard),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(nats("create consumer"))?;
        let messages = consumer.messages().await.map_err(nats("consume"))?;
        Ok(messages
            .map(|m| {
                let m = m.map_err(nats("read the log"))?;
                let seq = m.info().map_err(nats("message info"))?.stream_sequence;
                Ok(LogEntry {
                    seq,
                    payload: m.payload.clone(),
                })
            })
            .boxed())
    }

    async fn do_last_seq(&self, uid: u64, shard: u32) -> Result<u64> {
        let s = self
            .js
            .get_stream(stream_name(uid))
            .await
            .map_err(nats("get stream"))?;
        match s
            .get_last_raw_message_by_subject(&shard_subject(uid, shard))
            .await
        {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(Error::Nats(format!("last entry: {e}"))),
        }
    }
}

impl ShardLog for JetStreamLog {
    fn create(&self, uid: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.do_create(uid))
    }

    fn remove(&self, uid: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.js.delete_stream(stream_name(uid)).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("not found") => Ok(()),
                Err(e) => Err(Error::Nats(format!("delete stream: {e}"))),
            }
        })
    }

    fn append(
        &self,
        uid: u64,
        batch_id: String,
        entries: Vec<(u32, Vec<u8>)>,
    ) -> BoxFuture<'_, Result<Vec<u64>>> {
        Box::pin(self.do_append(uid, batch_id, entries))
    }

    fn read(
        &self,
        uid: u64,
        shard: u32,
        after: u64,
    ) -> BoxFuture<'_, Result<BoxStream<'static, Result<LogEntry>>>> {
        Box::pin(self.do_read(uid, shard, after))
    }

    fn last_seq(&self, uid: u64, shard: u32) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.do_last_seq(uid, shard))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_parse() {
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("v2.9.10"), Some((2, 9)));
        assert!(parse_version("2.9.10") < Some((2, 12)));
        assert_eq!(parse_version("x"), None);
    }
}
