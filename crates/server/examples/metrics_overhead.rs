//! What scraping `/metrics` costs the searches: search QPS of a loopback server under a fixed
//! client load, without metrics, with metrics and nobody scraping, and with a scraper hitting
//! `/metrics` every 100 ms (the last two alternated over several rounds, medians reported).
//!
//! ```sh
//! cargo run -p latentdb-server --example metrics_overhead -- [DOCS] [SECS_PER_PHASE] [CLIENTS] [ROUNDS]
//! ```
//!
//! Defaults: 20 000 documents of 64 dimensions, 3 s per phase, 8 clients, 3 rounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use latentdb::Database;
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use latentdb_server::{PreparedServer, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

const DIM: usize = 64;
const COLLECTION: &str = "bench";

fn vector(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..DIM)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

async fn start(
    db: Arc<Database>,
    metrics: bool,
) -> (
    SocketAddr,
    Option<SocketAddr>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut config = ServerConfig::default();
    if metrics {
        config = config.metrics_addr("127.0.0.1:0".parse().expect("addr"));
    }
    let server: PreparedServer = latentdb_server::prepare(db, config, listener)
        .await
        .expect("prepare");
    let (addr, maddr) = (server.local_addr(), server.metrics_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    (addr, maddr, stop)
}

async fn client(addr: SocketAddr) -> LatentDbClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    LatentDbClient::new(channel)
}

/// Searches per second of `clients` concurrent clients over `secs`, with a scraper every
/// 100 ms when `scrape` is given; also the scrapes made and their mean duration.
async fn measure(
    addr: SocketAddr,
    clients: u64,
    secs: u64,
    scrape: Option<SocketAddr>,
) -> (f64, u64, f64) {
    let done = Arc::new(AtomicBool::new(false));
    let searches = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (done, searches) = (Arc::clone(&done), Arc::clone(&searches));
        let mut client = client(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut i = c * 1_000_000;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                client
                    .search(pb::SearchRequest {
                        collection: COLLECTION.into(),
                        vector: vector(i),
                        k: 10,
                        ..Default::default()
                    })
                    .await
                    .expect("search");
                searches.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let scraper = scrape.map(|maddr| {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let (mut n, mut spent) = (0u64, Duration::ZERO);
            let mut every = tokio::time::interval(Duration::from_millis(100));
            while !done.load(Ordering::Relaxed) {
                every.tick().await;
                let t = Instant::now();
                let mut s = tokio::net::TcpStream::connect(maddr)
                    .await
                    .expect("connect");
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .expect("write");
                let mut body = Vec::new();
                s.read_to_end(&mut body).await.expect("read");
                assert!(body.starts_with(b"HTTP/1.1 200"));
                spent += t.elapsed();
                n += 1;
            }
            (n, spent)
        })
    });
    // Warm up, then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_count = searches.load(Ordering::Relaxed);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let counted = searches.load(Ordering::Relaxed) - start_count;
    let qps = counted as f64 / t.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("client");
    }
    let (scrapes, spent) = match scraper {
        Some(s) => s.await.expect("scraper"),
        None => (0, Duration::ZERO),
    };
    let mean_ms = if scrapes == 0 {
        0.0
    } else {
        spent.as_secs_f64() * 1000.0 / scrapes as f64
    };
    (qps, scrapes, mean_ms)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let docs = arg(1, 20_000);
    let secs = arg(2, 3);
    let clients = arg(3, 8);
    let rounds = arg(4, 3).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Database::open(dir.path()).expect("open"));

    // Phase 0: no recorder installed at all.
    let (addr, _, stop) = start(Arc::clone(&db), false).await;
    let mut c = client(addr).await;
    c.create_collection(pb::CreateCollectionRequest {
        name: COLLECTION.into(),
        dimension: DIM as u32,
        metric: pb::Metric::Cosine as i32,
        ..Default::default()
    })
    .await
    .expect("create");
    let t = Instant::now();
    for from in (0..docs).step_by(1000) {
        let documents = (from..(from + 1000).min(docs))
            .map(|i| pb::Document {
                id: format!("d{i}"),
                vector: vector(i),
                ..Default::default()
            })
            .collect();
        c.upsert(pb::UpsertRequest {
            collection: COLLECTION.into(),
            documents,
        })
        .await
        .expect("upsert");
    }
    println!(
        "{docs} docs x {DIM} dims loaded in {:.1} s; {clients} clients, {secs} s per phase, {rounds} rounds",
        t.elapsed().as_secs_f64()
    );
    let (no_recorder, _, _) = measure(addr, clients, secs, None).await;
    println!("no metrics recorder:        {no_recorder:>9.0} searches/s");
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Then with the endpoint, alternating no scraper and a scraper every 100 ms.
    let (addr, maddr, stop) = start(Arc::clone(&db), true).await;
    let maddr = maddr.expect("metrics endpoint");
    let (mut quiet, mut scraped, mut changes) = (Vec::new(), Vec::new(), Vec::new());
    let mut scrape_cpu = Vec::new();
    for round in 0..rounds {
        // Alternate which phase runs first, so that a drift of the machine cancels out.
        let ((q, _, _), (s, n, ms)) = if round % 2 == 0 {
            let q = measure(addr, clients, secs, None).await;
            (q, measure(addr, clients, secs, Some(maddr)).await)
        } else {
            let s = measure(addr, clients, secs, Some(maddr)).await;
            (measure(addr, clients, secs, None).await, s)
        };
        let change = (s - q) / q * 100.0;
        println!(
            "round {round}: metrics, no scraper {q:>9.0}/s; scraped every 100 ms {s:>9.0}/s \
             ({n} scrapes, {ms:.2} ms each); change {change:+.2}%"
        );
        quiet.push(q);
        scraped.push(s);
        changes.push(change);
        // The share of one core the scrapes took (their wall time, an upper bound).
        scrape_cpu.push(n as f64 * ms / (secs as f64 * 1000.0) * 100.0);
    }
    let (q, s) = (median(&mut quiet), median(&mut scraped));
    println!(
        "median: metrics on, no scraper {q:.0}/s; scraped every 100 ms {s:.0}/s; scrape overhead \
         {:+.2}% (median of the paired rounds: {:+.2}%; scrapes took {:.1}% of one core's time; \
         recording itself vs no recorder: {:+.2}%)",
        (s - q) / q * 100.0,
        median(&mut changes),
        median(&mut scrape_cpu),
        (q - no_recorder) / no_recorder * 100.0
    );
    let _ = stop.send(());
}
