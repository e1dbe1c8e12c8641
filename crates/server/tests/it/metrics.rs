//! The Prometheus endpoint: scraped over plain HTTP during a small concurrent load, its
//! documented names carry plausible values.
//!
//! The `metrics` recorder is process-wide: other tests in this binary count into it too, so
//! request counters are compared as differences between two scrapes and only lower bounds
//! are asserted for them; per-collection gauges use this test's own collection names.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use latentdb::Database;
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use latentdb_server::{ServeError, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::vector;

const DIM: usize = 8;

/// A server with a metrics endpoint, both on ephemeral loopback ports.
struct MetricsServer {
    grpc: SocketAddr,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl MetricsServer {
    async fn start() -> MetricsServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Database::open(dir.path()).expect("open"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let config = ServerConfig::default().metrics_addr("127.0.0.1:0".parse().expect("addr"));
        let server = latentdb_server::prepare(db, config, listener)
            .await
            .expect("prepare");
        let grpc = server.local_addr();
        let metrics = server.metrics_addr().expect("a metrics endpoint");
        assert_ne!(metrics.port(), 0);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        MetricsServer {
            grpc,
            metrics,
            _dir: dir,
            stop,
            task,
        }
    }

    async fn client(&self) -> LatentDbClient<Channel> {
        let channel = Channel::from_shared(format!("http://{}", self.grpc))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        LatentDbClient::new(channel)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("server task").expect("serve");
    }
}

/// One HTTP/1.1 GET over a fresh connection: (status line, body).
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("a response within 30 s")
        .expect("read");
    let text = String::from_utf8(raw).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or("").to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .expect("a length");
    assert_eq!(length, body.len(), "content-length matches the body");
    (status, body.to_owned())
}

/// A parsed exposition: samples by `name{sorted labels}`, and each family's type.
#[derive(Debug, Default)]
struct Exposition {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
    /// `(labels without le, le, value)` of every `_bucket` sample, by family.
    buckets: HashMap<String, Vec<(String, f64, f64)>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').expect("a TYPE line");
                e.types.insert(name.into(), ty.into());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a number in {line:?}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("}"))),
                None => (series, Vec::new()),
            };
            if let Some(family) = name.strip_suffix("_bucket") {
                let le = labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.clone())
                    .expect("le");
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().expect("le")
                };
                let rest: Vec<_> = labels.iter().filter(|(k, _)| k != "le").cloned().collect();
                e.buckets
                    .entry(family.into())
                    .or_default()
                    .push((key("", &rest), le, value));
            }
            e.samples.insert(key(name, &labels), value);
        }
        e
    }

    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples.get(&key(name, &labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?}"))
    }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label=\"");
        let end = after.find('"').expect("closing quote");
        out.push((
            k.trim_start_matches(',').to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[end + 1..];
    }
    out
}

fn key(name: &str, labels: &[(String, String)]) -> String {
    let mut l = labels.to_vec();
    l.sort();
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

async fn scrape(addr: SocketAddr) -> Exposition {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    Exposition::parse(&body)
}

async fn create(c: &mut LatentDbClient<Channel>, name: &str) {
    c.create_collection(pb::CreateCollectionRequest {
        name: name.into(),
        dimension: DIM as u32,
        metric: pb::Metric::Cosine as i32,
        ..Default::default()
    })
    .await
    .expect("create");
}

async fn upsert(c: &mut LatentDbClient<Channel>, name: &str, from: u64, n: u64) {
    let documents = (from..from + n)
        .map(|i| pb::Document {
            id: format!("d{i}"),
            text: None,
            metadata: None,
            vector: vector(i, DIM),
        })
        .collect();
    c.upsert(pb::UpsertRequest {
        collection: name.into(),
        documents,
    })
    .await
    .expect("upsert");
}

fn search(name: &str, seed: u64) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: name.into(),
        vector: vector(seed, DIM),
        k: 5,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scrape_during_load_finds_the_documented_metrics() {
    let server = MetricsServer::start().await;
    let before = scrape(server.metrics).await;
    let searches_ok = |e: &Exposition| {
        e.get(
            "latentdb_grpc_requests_total",
            &[("rpc", "Search"), ("code", "OK")],
        )
        .unwrap_or(0.0)
    };
    let count_not_found = |e: &Exposition| {
        e.get(
            "latentdb_grpc_requests_total",
            &[("rpc", "Count"), ("code", "NOT_FOUND")],
        )
        .unwrap_or(0.0)
    };

    let mut c = server.client().await;
    let name = "metrics_load";
    create(&mut c, name).await;

    // Four writers and four searchers at once, scraped while they run.
    const WRITERS: u64 = 4;
    const BATCHES: u64 = 5;
    const PER_BATCH: u64 = 20;
    const SEARCHERS: u64 = 4;
    const SEARCHES: u64 = 30;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..BATCHES {
                upsert(&mut c, name, (w * BATCHES + b) * PER_BATCH, PER_BATCH).await;
            }
        }));
    }
    for s in 0..SEARCHERS {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..SEARCHES {
                c.search(search(name, s * 1000 + i)).await.expect("search");
            }
        }));
    }
    let during = scrape(server.metrics).await;
    assert!(during.types.contains_key("latentdb_grpc_requests_total"));
    for t in tasks {
        t.await.expect("task");
    }
    // Failed calls are counted under their code.
    for _ in 0..3 {
        let err = c
            .count(pb::CountRequest {
                collection: "metrics_no_such_collection".into(),
            })
            .await
            .expect_err("no such collection");
        assert_eq!(err.code(), Code::NotFound);
    }
    let docs = WRITERS * BATCHES * PER_BATCH;

    let after = scrape(server.metrics).await;
    assert_eq!(
        after
            .types
            .get("latentdb_grpc_requests_total")
            .map(String::as_str),
        Some("counter")
    );
    let searched = searches_ok(&after) - searches_ok(&before);
    assert!(
        searched >= (SEARCHERS * SEARCHES) as f64,
        "{searched} successful searches counted"
    );
    let failed = count_not_found(&after) - count_not_found(&before);
    assert!(failed >= 3.0, "{failed} failed counts counted");
    assert!(
        after.value(
            "latentdb_grpc_requests_total",
            &[("rpc", "Upsert"), ("code", "OK")]
        ) >= (WRITERS * BATCHES) as f64
    );

    // The duration histogram: buckets non-decreasing, +Inf equal to the count.
    assert_eq!(
        after
            .types
            .get("latentdb_grpc_request_duration_seconds")
            .map(String::as_str),
        Some("histogram")
    );
    let buckets = &after.buckets["latentdb_grpc_request_duration_seconds"];
    let search_key = key("", &[("rpc".into(), "Search".into())]);
    let mut search_buckets: Vec<(f64, f64)> = buckets
        .iter()
        .filter(|(labels, _, _)| *labels == search_key)
        .map(|(_, le, v)| (*le, *v))
        .collect();
    assert!(search_buckets.len() >= 10, "{search_buckets:?}");
    search_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    for pair in search_buckets.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "buckets not monotone: {search_buckets:?}"
        );
    }
    let (last_le, last) = *search_buckets.last().expect("buckets");
    assert!(last_le.is_infinite());
    let count = after.value(
        "latentdb_grpc_request_duration_seconds_count",
        &[("rpc", "Search")],
    );
    assert_eq!(last, count);
    assert!(count >= (SEARCHERS * SEARCHES) as f64);
    let sum = after.value(
        "latentdb_grpc_request_duration_seconds_sum",
        &[("rpc", "Search")],
    );
    assert!(sum > 0.0 && sum < count * 60.0, "sum {sum} of {count}");

    // Scrape-time gauges: points, tombstones, resident memory.
    assert_eq!(
        after.value("latentdb_collection_points", &[("collection", name)]),
        docs as f64
    );
    assert_eq!(
        after.value("latentdb_collection_index_deleted", &[("collection", name)]),
        0.0
    );
    // The collection's index holds at least its f32 vectors; its payload at least the ids.
    let index_bytes = after.value(
        "latentdb_collection_index_memory_bytes",
        &[("collection", name)],
    );
    assert!(
        index_bytes >= (docs as usize * DIM * 4) as f64,
        "index {index_bytes}"
    );
    let payload_bytes = after.value(
        "latentdb_collection_payload_memory_bytes",
        &[("collection", name)],
    );
    assert!(
        payload_bytes >= (docs * 32) as f64,
        "payload {payload_bytes}"
    );
    let rss = after.value("latentdb_process_resident_memory_bytes", &[]);
    assert!(rss > 1e6 && rss < 1e12, "resident memory {rss}");
    // The change log grows with the writes and empties when the index is dumped.
    assert_eq!(
        after.value(
            "latentdb_collection_changelog_length",
            &[("collection", name)]
        ),
        docs as f64
    );
    // Backups: registered before the first one runs.
    assert_eq!(
        after
            .types
            .get("latentdb_backups_running")
            .map(String::as_str),
        Some("gauge")
    );
    assert!(
        after
            .get("latentdb_backups_completed_total", &[("result", "ok")])
            .is_some()
    );
    assert!(
        after
            .get("latentdb_backups_completed_total", &[("result", "error")])
            .is_some()
    );

    // A flush dumps the index: change log 0, one more dump and one more flush timed.
    let dumps = |e: &Exposition| {
        e.get(
            "latentdb_index_dump_duration_seconds_count",
            &[("collection", name)],
        )
        .unwrap_or(0.0)
    };
    let flushes = |e: &Exposition| {
        e.get("latentdb_storage_flush_duration_seconds_count", &[])
            .unwrap_or(0.0)
    };
    c.flush(pb::FlushRequest {}).await.expect("flush");
    let flushed = scrape(server.metrics).await;
    assert_eq!(
        flushed.value(
            "latentdb_collection_changelog_length",
            &[("collection", name)]
        ),
        0.0
    );
    assert!(dumps(&flushed) >= dumps(&after) + 1.0);
    assert!(flushes(&flushed) >= flushes(&after) + 1.0);

    // A dropped collection leaves the per-collection gauges.
    let gone = "metrics_dropped";
    create(&mut c, gone).await;
    upsert(&mut c, gone, 0, 7).await;
    let with = scrape(server.metrics).await;
    assert_eq!(
        with.value("latentdb_collection_points", &[("collection", gone)]),
        7.0
    );
    assert_eq!(
        with.value(
            "latentdb_collection_changelog_length",
            &[("collection", gone)]
        ),
        7.0
    );
    c.delete_collection(pb::DeleteCollectionRequest { name: gone.into() })
        .await
        .expect("drop");
    let without = scrape(server.metrics).await;
    assert_eq!(
        without.get("latentdb_collection_points", &[("collection", gone)]),
        None
    );
    assert_eq!(
        without.get(
            "latentdb_collection_changelog_length",
            &[("collection", gone)]
        ),
        None
    );

    server.stop().await;
}

#[tokio::test]
async fn the_endpoint_answers_only_metrics() {
    let server = MetricsServer::start().await;
    let (status, _) = http_get(server.metrics, "/").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http_get(server.metrics, "/metricsx").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, body) = http_get(server.metrics, "/metrics?x=1").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("latentdb_process_resident_memory_bytes"));

    // A request head that never ends is refused, not waited on forever.
    let mut s = tokio::net::TcpStream::connect(server.metrics)
        .await
        .expect("connect");
    s.write_all(&[b'a'; 9_000]).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .expect("read");
    assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 400"));
    server.stop().await;
}

#[tokio::test]
async fn a_taken_metrics_address_fails_before_serving() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Database::open(dir.path()).expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ServerConfig::default().metrics_addr(taken.local_addr().expect("addr"));
    match latentdb_server::prepare(db, config, listener).await {
        Err(ServeError::Bind { addr, .. }) => assert_eq!(addr, taken.local_addr().expect("a")),
        other => panic!("expected a bind error, got {other:?}"),
    }
}
