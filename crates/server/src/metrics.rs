//! Prometheus metrics: the process-wide recorder ([`install_metrics_recorder`]), what the
//! handlers record, and the `/metrics` endpoint (a small HTTP/1.1 responder on its own
//! listener).
//!
//! Request counters and durations are recorded through the `metrics` facade as calls finish;
//! the library records index dump and embedding durations the same way. Per-collection
//! gauges (points, tombstones) and the process's resident memory are read when `/metrics` is
//! scraped, never on a request's path. Every name is prefixed `latentdb_`; the README's
//! "Metrics" section lists them.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use latentdb::Database;
use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tonic::Code;

use crate::error::ServeError;

/// Requests handled, by RPC and status code.
pub const GRPC_REQUESTS: &str = "latentdb_grpc_requests_total";
/// Request durations, by RPC.
pub const GRPC_DURATION: &str = "latentdb_grpc_request_duration_seconds";
/// Live documents per collection (read at scrape time).
pub const COLLECTION_POINTS: &str = "latentdb_collection_points";
/// Tombstoned index points per collection awaiting compaction (read at scrape time).
pub const COLLECTION_INDEX_DELETED: &str = "latentdb_collection_index_deleted";
/// Bytes of memory a collection's vector index holds (vectors or codes, links, ids; read at
/// scrape time).
pub const COLLECTION_INDEX_BYTES: &str = "latentdb_collection_index_memory_bytes";
/// Bytes of memory a collection's payload index holds (ids, metadata, postings; read at
/// scrape time).
pub const COLLECTION_PAYLOAD_BYTES: &str = "latentdb_collection_payload_memory_bytes";
/// Changes since the collection's index was last dumped (set by the library after writes).
pub const COLLECTION_CHANGELOG: &str = "latentdb_collection_changelog_length";
/// Index dump durations, by collection (recorded by the library).
pub const INDEX_DUMP_DURATION: &str = "latentdb_index_dump_duration_seconds";
/// Durations of the server's `Database::flush` calls (the `Flush` RPC and shutdown).
pub const FLUSH_DURATION: &str = "latentdb_storage_flush_duration_seconds";
/// Embedding batch durations, by model.
pub const EMBED_DURATION: &str = "latentdb_embed_batch_duration_seconds";
/// Texts embedded, by model.
pub const EMBED_TEXTS: &str = "latentdb_embed_texts_total";
/// Backups running now.
pub const BACKUPS_RUNNING: &str = "latentdb_backups_running";
/// Backups finished, by result (`ok` or `error`).
pub const BACKUPS_COMPLETED: &str = "latentdb_backups_completed_total";
/// The process's resident memory (read at scrape time).
pub const RESIDENT_MEMORY: &str = "latentdb_process_resident_memory_bytes";

/// Histogram buckets (upper bounds, seconds) of every `*_seconds` histogram: 100 µs to 60 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// The Prometheus handle of the recorder this crate installed.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs latentdb's Prometheus recorder as the process's `metrics` recorder (once; later
/// calls return the same handle) and describes every `latentdb_` metric.
///
/// Call it before opening the database to also count what the open does (index dumps). Fails
/// with [`ServeError::Config`] when another `metrics` recorder is already installed.
pub fn install_metrics_recorder() -> Result<PrometheusHandle, ServeError> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _once = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
        .map_err(|e| ServeError::Setup(format!("metrics buckets: {e}")))?;
    let handle = builder.install_recorder().map_err(|e| {
        ServeError::Config(format!(
            "cannot install the Prometheus metrics recorder ({e}): another `metrics` recorder \
             is installed in this process"
        ))
    })?;
    describe();
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// Describes the metrics and registers those that must show before their first event.
fn describe() {
    describe_counter!(GRPC_REQUESTS, "gRPC calls handled, by RPC and status code");
    describe_histogram!(GRPC_DURATION, Unit::Seconds, "gRPC call durations, by RPC");
    describe_gauge!(
        COLLECTION_CHANGELOG,
        "Changes applied to the collection since its index was last dumped"
    );
    describe_histogram!(
        INDEX_DUMP_DURATION,
        Unit::Seconds,
        "Index dump (persist) durations, by collection"
    );
    describe_histogram!(
        FLUSH_DURATION,
        Unit::Seconds,
        "Durations of Database::flush called by the server (Flush RPC, shutdown)"
    );
    describe_histogram!(
        EMBED_DURATION,
        Unit::Seconds,
        "Embedding batch durations, by model"
    );
    describe_counter!(EMBED_TEXTS, "Texts embedded, by model");
    describe_gauge!(BACKUPS_RUNNING, "Backups running now");
    describe_counter!(BACKUPS_COMPLETED, "Backups finished, by result (ok, error)");
    gauge!(BACKUPS_RUNNING).increment(0.0);
    for result in ["ok", "error"] {
        counter!(BACKUPS_COMPLETED, "result" => result).increment(0);
    }
}

/// Records one finished call: its count under its status code, and its duration.
pub(crate) fn record_call(rpc: &'static str, code: Code, elapsed: Duration) {
    counter!(GRPC_REQUESTS, "rpc" => rpc, "code" => code_name(code)).increment(1);
    metrics::histogram!(GRPC_DURATION, "rpc" => rpc).record(elapsed.as_secs_f64());
}

/// Records one embedding batch of the server's `Embed` RPC.
pub(crate) fn record_embed(model: &str, texts: usize, elapsed: Duration) {
    metrics::histogram!(EMBED_DURATION, "model" => model.to_owned()).record(elapsed.as_secs_f64());
    counter!(EMBED_TEXTS, "model" => model.to_owned()).increment(texts as u64);
}

/// Runs `db.flush()` and records its duration.
pub(crate) fn timed_flush(db: &Database) -> latentdb::Result<()> {
    let start = Instant::now();
    let out = db.flush();
    metrics::histogram!(FLUSH_DURATION).record(start.elapsed().as_secs_f64());
    out
}

/// The canonical gRPC name of a status code (`OK`, `NOT_FOUND`, ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `/metrics` endpoint of one database: a listener, the recorder's handle, and the
/// database its per-collection gauges are read from.
pub(crate) struct MetricsEndpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
    db: Arc<Database>,
}

/// Longest request head the endpoint reads.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes answered at once; more connections wait.
const MAX_SCRAPES: usize = 8;
/// How often the recorder's upkeep runs (drains histogram samples when nobody scrapes).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

impl MetricsEndpoint {
    /// Binds `addr` and installs the recorder.
    pub(crate) async fn bind(addr: SocketAddr, db: Arc<Database>) -> Result<Self, ServeError> {
        let handle = install_metrics_recorder()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(MetricsEndpoint {
            listener,
            handle,
            db,
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Answers scrapes until `stop` turns true.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        let MetricsEndpoint {
            listener,
            handle,
            db,
        } = self;
        let permits = Arc::new(Semaphore::new(MAX_SCRAPES));
        let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                _ = upkeep.tick() => handle.run_upkeep(),
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        // Out of descriptors, say: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return };
                    let (handle, db) = (handle.clone(), Arc::clone(&db));
                    tokio::spawn(async move {
                        let _permit = permit;
                        if let Err(e) = answer(stream, handle, db).await {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                    });
                }
            }
        }
    }
}

/// Reads one HTTP/1.x request head and answers it, then closes the connection.
async fn answer(
    mut stream: TcpStream,
    handle: PrometheusHandle,
    db: Arc<Database>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok::<_, std::io::Error>(Some(end));
            }
            if buf.len() > MAX_REQUEST_BYTES {
                return Ok(None);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    let Ok(Ok(Some(end))) = head else {
        return respond(&mut stream, "400 Bad Request", "bad request\n", true).await;
    };
    let line = String::from_utf8_lossy(&buf[..end]);
    let mut parts = line.lines().next().unwrap_or("").split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return respond(&mut stream, "404 Not Found", "see /metrics\n", true).await;
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, "405 Method Not Allowed", "GET only\n", true).await;
    }
    let body = tokio::task::spawn_blocking(move || render(&handle, &db))
        .await
        .unwrap_or_else(|_| String::new());
    respond(&mut stream, "200 OK", &body, method == "GET").await
}

/// Writes a response and shuts the connection down.
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    body: &str,
    with_body: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if with_body {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

/// The whole exposition: the recorder's metrics, then the gauges read now.
pub(crate) fn render(handle: &PrometheusHandle, db: &Database) -> String {
    let collections = db.list_collections();
    let live: HashSet<&str> = collections.iter().map(|c| c.name.as_str()).collect();
    let recorded = handle.render();
    let mut out = String::with_capacity(recorded.len() + 256 * (collections.len() + 1));
    for line in recorded.lines() {
        // A dropped collection's last change-log gauge would stay forever: leave it out.
        if let Some(rest) = line.strip_prefix(COLLECTION_CHANGELOG)
            && let Some(name) = label_value(rest, "collection")
            && !live.contains(name.as_str())
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }

    header(
        &mut out,
        COLLECTION_POINTS,
        "Live documents in the collection",
    );
    for c in &collections {
        let _ = writeln!(
            out,
            "{COLLECTION_POINTS}{{collection=\"{}\"}} {}",
            escape(&c.name),
            c.count
        );
    }
    // One index_stats per collection for all the index gauges.
    let stats: Vec<_> = collections
        .iter()
        .filter_map(|c| Some((escape(&c.name), db.index_stats(&c.name).ok()?)))
        .collect();
    let gauges: [(&str, &str, IndexGauge); 3] = [
        (
            COLLECTION_INDEX_DELETED,
            "Tombstoned index points awaiting compaction",
            |i| i.deleted,
        ),
        (
            COLLECTION_INDEX_BYTES,
            "Bytes of memory the collection's vector index holds",
            |i| i.index_bytes,
        ),
        (
            COLLECTION_PAYLOAD_BYTES,
            "Bytes of memory the collection's payload index holds",
            |i| i.payload_bytes,
        ),
    ];
    for (metric, help, value) in gauges {
        header(&mut out, metric, help);
        for (name, info) in &stats {
            let _ = writeln!(out, "{metric}{{collection=\"{name}\"}} {}", value(info));
        }
    }
    if let Some(rss) = resident_memory_bytes() {
        header(
            &mut out,
            RESIDENT_MEMORY,
            "Resident memory of the server process",
        );
        let _ = writeln!(out, "{RESIDENT_MEMORY} {rss}");
    }
    out
}

/// What a per-collection index gauge reads from the collection's index statistics.
type IndexGauge = fn(&latentdb::IndexInfo) -> usize;

/// `# HELP` and `# TYPE` lines of a gauge.
fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The value of label `name` in the `{...}` part of a sample line (unescaped).
pub(crate) fn label_value(rest: &str, name: &str) -> Option<String> {
    let inner = rest.strip_prefix('{')?;
    let start = inner.find(&format!("{name}=\""))? + name.len() + 2;
    let mut value = String::new();
    let mut chars = inner[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The process's resident memory in bytes (`VmRSS` of `/proc/self/status`; Linux only).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_unescape() {
        assert_eq!(
            label_value(r#"{collection="a\"b\\c",x="y"} 3"#, "collection").as_deref(),
            Some("a\"b\\c")
        );
        assert_eq!(
            label_value(r#"{x="y",collection="n"} 3"#, "collection").as_deref(),
            Some("n")
        );
        assert_eq!(label_value(r#"{x="y"} 3"#, "collection"), None);
        assert_eq!(label_value(" 3", "collection"), None);
        assert_eq!(
            label_value(r#"{collection="unterminated"#, "collection"),
            None
        );
        assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }

    #[test]
    fn every_code_has_its_canonical_name() {
        assert_eq!(code_name(Code::Ok), "OK");
        assert_eq!(code_name(Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn resident_memory_is_read() {
        let rss = resident_memory_bytes().expect("VmRSS");
        assert!(rss > 1 << 20, "{rss}");
    }
}
