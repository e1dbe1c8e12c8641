//! A bounded load test over loopback: an in-process server, `--docs` documents loaded over
//! gRPC, then `--clients` concurrent clients mixing searches and upserts for `--seconds`.
//! Checks that no call failed and no acknowledged write is missing; prints one JSON object
//! with QPS and p50/p99 latencies.
//!
//! ```text
//! cargo run --release -p latentdb-server --example load -- --clients 16 --seconds 30 --docs 50000
//! ```
//!
//! Options: `--dim N` (default 128), `--upsert-percent P` (default 20), `--batch N` documents
//! per upsert (default 10), `--k N` (default 10).

use std::sync::Arc;
use std::time::{Duration, Instant};

use latentdb_server::pb::latent_db_client::LatentDbClient;
use latentdb_server::{ServerConfig, pb};
use tonic::transport::Channel;

struct Opts {
    clients: usize,
    seconds: u64,
    docs: usize,
    dim: usize,
    upsert_percent: u64,
    batch: usize,
    k: u32,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        clients: 16,
        seconds: 30,
        docs: 50_000,
        dim: 128,
        upsert_percent: 20,
        batch: 10,
        k: 10,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--clients" => o.clients = n as usize,
            "--seconds" => o.seconds = n,
            "--docs" => o.docs = n as usize,
            "--dim" => o.dim = n as usize,
            "--upsert-percent" => o.upsert_percent = n.min(100),
            "--batch" => o.batch = n as usize,
            "--k" => o.k = n as u32,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.clients == 0 || o.dim == 0 || o.batch == 0 {
        return Err("--clients, --dim and --batch must be positive".into());
    }
    Ok(o)
}

/// A small xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim)
            .map(|_| (self.next() % 20_000) as f32 / 10_000.0 - 1.0)
            .collect()
    }
}

fn document(id: String, rng: &mut Rng, dim: usize) -> pb::Document {
    let group = rng.next() % 10;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "group".to_string(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(group as f64)),
        },
    );
    pb::Document {
        id,
        text: None,
        metadata: Some(prost_types::Struct { fields }),
        vector: rng.vector(dim),
    }
}

#[derive(Default)]
struct ClientStats {
    search_us: Vec<u64>,
    upsert_us: Vec<u64>,
    errors: Vec<String>,
    written: Vec<String>,
}

async fn client_loop(
    mut c: LatentDbClient<Channel>,
    id: usize,
    o: Arc<Opts>,
    deadline: Instant,
) -> ClientStats {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut s = ClientStats::default();
    let mut seq = 0usize;
    while Instant::now() < deadline {
        if rng.next() % 100 < o.upsert_percent {
            let docs: Vec<pb::Document> = (0..o.batch)
                .map(|_| {
                    seq += 1;
                    document(format!("c{id}-{seq}"), &mut rng, o.dim)
                })
                .collect();
            let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
            let t = Instant::now();
            let r = c
                .upsert(pb::UpsertRequest {
                    collection: "load".into(),
                    documents: docs,
                })
                .await;
            s.upsert_us.push(t.elapsed().as_micros() as u64);
            match r {
                Ok(_) => s.written.extend(ids),
                Err(e) => s.errors.push(format!("upsert: {e}")),
            }
        } else {
            let filtered = rng.next().is_multiple_of(4);
            let req = pb::SearchRequest {
                collection: "load".into(),
                vector: rng.vector(o.dim),
                k: o.k,
                filter: filtered.then(|| pb::Filter {
                    kind: Some(pb::filter::Kind::Json(format!(
                        "{{\"group\": {}}}",
                        rng.next() % 10
                    ))),
                }),
                with_text: Some(false),
                ..Default::default()
            };
            let t = Instant::now();
            let r = c.search(req).await;
            s.search_us.push(t.elapsed().as_micros() as u64);
            match r {
                Ok(resp) if resp.get_ref().hits.len() == o.k as usize => {}
                Ok(resp) => s.errors.push(format!(
                    "search returned {} hits, expected {}",
                    resp.get_ref().hits.len(),
                    o.k
                )),
                Err(e) => s.errors.push(format!("search: {e}")),
            }
        }
    }
    s
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn summary(mut us: Vec<u64>, seconds: f64) -> serde_json::Value {
    us.sort_unstable();
    serde_json::json!({
        "calls": us.len(),
        "qps": (us.len() as f64 / seconds * 10.0).round() / 10.0,
        "p50_ms": percentile(&us, 0.50),
        "p99_ms": percentile(&us, 0.99),
        "max_ms": percentile(&us, 1.0),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = Arc::new(parse()?);
    let dir = tempfile::tempdir()?;
    let db = Arc::new(latentdb::Database::open(dir.path())?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(latentdb_server::serve_with_listener(
        Arc::clone(&db),
        ServerConfig::default(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));
    let url = format!("http://{addr}");
    let connect = || async {
        Channel::from_shared(url.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())
    };
    let mut c = LatentDbClient::new(connect().await?).max_decoding_message_size(64 << 20);
    c.create_collection(pb::CreateCollectionRequest {
        name: "load".into(),
        dimension: o.dim as u32,
        metric: pb::Metric::Cosine as i32,
        ..Default::default()
    })
    .await?;

    // Load the documents over gRPC.
    let t = Instant::now();
    let mut rng = Rng(42);
    let mut loaded = 0;
    while loaded < o.docs {
        let n = (o.docs - loaded).min(1000);
        let docs = (loaded..loaded + n)
            .map(|i| document(format!("base-{i}"), &mut rng, o.dim))
            .collect();
        c.upsert(pb::UpsertRequest {
            collection: "load".into(),
            documents: docs,
        })
        .await?;
        loaded += n;
    }
    let load_seconds = t.elapsed().as_secs_f64();
    eprintln!("loaded {} documents in {load_seconds:.1} s", o.docs);

    // The mixed phase: each client has its own connection.
    let deadline = Instant::now() + Duration::from_secs(o.seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..o.clients {
        let client = LatentDbClient::new(connect().await?);
        tasks.push(tokio::spawn(client_loop(
            client,
            id,
            Arc::clone(&o),
            deadline,
        )));
    }
    let mut all = ClientStats::default();
    for t in tasks {
        let s = t.await?;
        all.search_us.extend(s.search_us);
        all.upsert_us.extend(s.upsert_us);
        all.errors.extend(s.errors);
        all.written.extend(s.written);
    }
    let seconds = start.elapsed().as_secs_f64();

    // No lost writes: every acknowledged id is there and the count adds up.
    let mut lost = 0usize;
    for chunk in all.written.chunks(5000) {
        let got = c
            .get(pb::GetRequest {
                collection: "load".into(),
                ids: chunk.to_vec(),
                ..Default::default()
            })
            .await?
            .into_inner();
        lost += got.missing_ids.len();
    }
    let count = c
        .count(pb::CountRequest {
            collection: "load".into(),
        })
        .await?
        .into_inner()
        .count;
    let expected = (o.docs + all.written.len()) as u64;

    let total = all.search_us.len() + all.upsert_us.len();
    let report = serde_json::json!({
        "clients": o.clients,
        "seconds": (seconds * 10.0).round() / 10.0,
        "docs_loaded": o.docs,
        "dim": o.dim,
        "load_docs_per_s": (o.docs as f64 / load_seconds).round(),
        "upsert_batch": o.batch,
        "k": o.k,
        "total_qps": (total as f64 / seconds * 10.0).round() / 10.0,
        "search": summary(all.search_us, seconds),
        "upsert": summary(all.upsert_us, seconds),
        "documents_written": all.written.len(),
        "errors": all.errors.len(),
        "first_errors": all.errors.iter().take(5).collect::<Vec<_>>(),
        "lost_writes": lost,
        "count": count,
        "expected_count": expected,
    });
    println!("{report}");

    let _ = stop.send(());
    server.await??;
    if !all.errors.is_empty() || lost > 0 || count != expected {
        return Err("load test failed: errors or lost writes (see the report)".into());
    }
    Ok(())
}
