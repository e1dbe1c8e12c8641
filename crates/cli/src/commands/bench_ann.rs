//! `latentdb bench ann | gen-data`: the ANN benchmark through the same code path users take
//! (storage included), and seeded data for it.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use latentdb::index::{bench, npy, synth};
use latentdb::{CollectionSpec, Database, DatabaseOptions, Document, Durability, SearchRequest};

use crate::cli::{Global, MetricArg, QuantizationArg};
use crate::commands::open_database_with;
use crate::commands::scratch::{ScratchDir, Spent, peak_rss, rss};
use crate::output::Out;

/// Arguments of `bench ann`.
#[derive(Debug, Args)]
pub struct BenchAnnArgs {
    /// Base vectors: a float32 `.npy` of shape [n, d].
    #[arg(long)]
    pub base: PathBuf,
    /// Query vectors: a float32 `.npy` of shape [q, d].
    #[arg(long)]
    pub queries: PathBuf,
    /// Ground truth: an integer `.npy` of shape [q, >= k] (row numbers of `--base`); computed
    /// by brute force when absent.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// The similarity metric.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Search candidate list sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
    pub ef: Vec<usize>,
    /// HNSW M.
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    /// HNSW ef_construction.
    #[arg(long, default_value_t = 200)]
    pub ef_construction: usize,
    /// Threads for the build (default: all cores). Queries always run on one thread.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Documents per upsert batch.
    #[arg(long, default_value_t = 10_000)]
    pub batch_size: usize,
    /// How the index keeps vectors: `int8` codes (searches rescore `k * oversampling`
    /// candidates with the stored vectors) or `none` (f32).
    #[arg(long, value_enum, default_value_t = QuantizationArg::None)]
    pub quantization: QuantizationArg,
    /// With `--quantization int8`: candidates per result rescored (1-100) [default: 3].
    #[arg(long)]
    pub oversampling: Option<usize>,
    /// Give every document the metadata `latentdb ingest` gives a chunk (parent, source,
    /// chunk_index, chunk_count, char_start, char_end, content_sha256, chunking; 8 chunks per
    /// parent), so that the payload index holds what it holds for an ingested corpus.
    #[arg(long)]
    pub metadata: bool,
    /// Build the database in this directory and keep it (it must not exist, or be empty);
    /// `latentdb --data DIR bench open` then measures reopening it. Default: a temporary
    /// directory removed at the end.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Also build the HNSW graph alone (the index crate, in memory: no storage, payload or
    /// rescoring file) from the same batches and parameters, print its build rate as a
    /// `graph_build` row, and report the database's build rate against it (`vs_graph`) and
    /// its CPU time per vector against the graph's (`cpu_vs_graph`: the graph's CPU time per
    /// vector over the database's, which `vs_graph` follows wherever both keep every core
    /// busy, as the linking does with `--threads` at the core count). The
    /// two are built batch by batch in turn (alternating which goes first), each timed on its
    /// own, so that a host whose speed drifts hits both alike; the build row's peak RSS then
    /// includes the graph alone. Without quantization, the graph alone also answers the same
    /// queries at every ef, in turn with the database within each pass (`Index::search`: the
    /// query's checks and normalisation, the walk, the hits as point ids), and each search row
    /// gets its `graph_qps`, `graph_recall` and `vs_graph_qps` (the database's QPS over it):
    /// what the database adds to a search, measured in one process. The search rows' RSS then
    /// includes the graph too.
    #[arg(long)]
    pub graph_baseline: bool,
    /// Time every ef this many times, cycling through the `--ef` list, and report each ef's
    /// median QPS (latency percentiles over all passes): a host whose speed drifts within
    /// seconds then skews no single ef's row. 1 = one timed pass per ef.
    #[arg(long, default_value_t = 1)]
    pub passes: usize,
}

/// Arguments of `bench open`.
#[derive(Debug, Args)]
pub struct BenchOpenArgs {
    /// Also search these query vectors (a float32 `.npy` of shape [q, d]) in this collection
    /// right after opening, and report the QPS of that first pass (caches cold).
    #[arg(long, requires = "collection")]
    pub queries: Option<PathBuf>,
    /// The collection to search with `--queries`.
    #[arg(long)]
    pub collection: Option<String>,
    /// Neighbours per query.
    #[arg(short, long, default_value_t = 10)]
    pub k: usize,
    /// Search candidate list size.
    #[arg(long, default_value_t = 64)]
    pub ef: usize,
}

/// Arguments of `bench gen-data`.
#[derive(Debug, Args)]
pub struct GenDataArgs {
    /// Base vectors.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Dimension.
    #[arg(long, default_value_t = 384)]
    pub dim: usize,
    /// Query vectors (drawn from the same clusters as the base, not part of it).
    #[arg(long, default_value_t = 1_000)]
    pub queries: usize,
    /// Cluster centres.
    #[arg(long, default_value_t = 100)]
    pub clusters: usize,
    /// Power-law decay of the within-cluster noise (0: isotropic, hardest; 0.5: like
    /// sentence embeddings).
    #[arg(long, default_value_t = 0.5)]
    pub alpha: f32,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Also write `gt.npy`: the exact `k` nearest base rows of each query under `--metric`.
    #[arg(long)]
    pub gt_k: Option<usize>,
    /// The metric of the ground truth.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
    /// Output directory (base.npy, queries.npy, gt.npy).
    #[arg(long)]
    pub out: PathBuf,
}

fn metrics(m: MetricArg) -> (latentdb::Metric, latentdb::index::Metric) {
    match m {
        MetricArg::Cosine => (latentdb::Metric::Cosine, latentdb::index::Metric::Cosine),
        MetricArg::Dot => (latentdb::Metric::Dot, latentdb::index::Metric::Dot),
        MetricArg::L2 => (latentdb::Metric::L2, latentdb::index::Metric::L2),
    }
}

/// The metadata `latentdb ingest` gives chunk `i` (8 chunks per parent document).
fn chunk_metadata(i: usize) -> serde_json::Value {
    let parent = i / 8;
    let chunk = i % 8;
    // Chunk lengths differ between documents, so offsets take many values, as they do.
    let len = 800 + parent * 7919 % 600;
    // A stand-in for the parent's content hash: 64 hex digits, one value per parent.
    let mut h = (parent as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let sha: String = (0..64)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            char::from_digit((h % 16) as u32, 16).unwrap_or('0')
        })
        .collect();
    json!({
        "parent": format!("doc-{parent}"),
        "source": format!("corpus/part-{}/doc-{parent}.md", parent / 1000),
        "chunk_index": chunk,
        "chunk_count": 8,
        "char_start": chunk * len,
        "char_end": chunk * len + len - 20,
        "content_sha256": sha,
        "chunking": "tokens:256:32",
    })
}

/// The HNSW graph alone: an in-memory index with the collection's parameters, fed the same
/// batches as the database (point ids are the row numbers), and the time its inserts took.
struct GraphBaseline {
    index: latentdb::index::Index,
    timed: Spent,
}

impl GraphBaseline {
    fn new(
        base: &npy::Matrix<f32>,
        metric: latentdb::index::Metric,
        spec_index: &serde_json::Value,
    ) -> anyhow::Result<Self> {
        let params = latentdb::index::IndexParams::from_json(spec_index)?;
        Ok(Self {
            index: latentdb::index::Index::new(metric, base.cols, params)?,
            timed: Spent::default(),
        })
    }

    /// Inserts rows `rows` of `base` (timed: the inserts alone).
    fn insert(&mut self, base: &npy::Matrix<f32>, rows: Range<usize>) -> anyhow::Result<()> {
        let points: Vec<(u32, &[f32])> = rows.map(|i| (i as u32, base.row(i))).collect();
        let index = &mut self.index;
        self.timed.time(|| index.insert_batch(&points))?;
        Ok(())
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn ann(a: BenchAnnArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.k == 0 || a.ef.is_empty() || a.batch_size == 0 || a.passes == 0 {
        bail!("-k, --ef, --batch-size and --passes must be positive");
    }
    if let Some(d) = &a.db
        && std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some())
    {
        bail!("--db {}: the directory is not empty", d.display());
    }
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .context("cannot size the thread pool")?;
    }
    let base = npy::read_f32(&a.base)?;
    let queries = npy::read_f32(&a.queries)?;
    if base.cols != queries.cols || base.rows == 0 || queries.rows == 0 {
        bail!(
            "base is {}x{} and queries {}x{}: need non-empty arrays of one dimension",
            base.rows,
            base.cols,
            queries.rows,
            queries.cols
        );
    }
    let dim = base.cols;
    let (metric, index_metric) = metrics(a.metric);
    let truth: Vec<Vec<u32>> = match &a.gt {
        Some(p) => {
            let gt = npy::read_ids(p)?;
            if gt.rows != queries.rows || gt.cols < a.k {
                bail!(
                    "ground truth is {}x{}, need {}x(>= {})",
                    gt.rows,
                    gt.cols,
                    queries.rows,
                    a.k
                );
            }
            (0..gt.rows).map(|i| gt.row(i)[..a.k].to_vec()).collect()
        }
        None => bench::ground_truth(index_metric, dim, &base.data, &queries.data, a.k),
    };

    let mut index = json!({
        "m": a.m,
        "ef_construction": a.ef_construction,
        "quantization": a.quantization.as_str(),
    });
    if let Some(o) = a.oversampling {
        index["oversampling"] = json!(o);
    }
    let mut graph = if a.graph_baseline {
        Some(GraphBaseline::new(&base, index_metric, &index)?)
    } else {
        None
    };

    let tmp = ScratchDir::new("bench")?;
    let dir = a.db.clone().unwrap_or_else(|| tmp.path().join("db"));
    let db = Database::open_with(
        &dir,
        DatabaseOptions::new().durability(Durability::Buffered),
    )?;
    let spec = CollectionSpec {
        index,
        ..CollectionSpec::new("bench", dim, metric)
    };
    db.create_collection(spec)?;
    let mut built = Spent::default();
    for (batch, start) in (0..base.rows).step_by(a.batch_size).enumerate() {
        let end = (start + a.batch_size).min(base.rows);
        let docs = (start..end)
            .map(|i| {
                let doc = Document::new(i.to_string(), base.row(i).to_vec());
                if a.metadata {
                    doc.with_metadata(chunk_metadata(i))
                } else {
                    doc
                }
            })
            .collect();
        let graph_first = batch % 2 == 0;
        if let Some(g) = graph.as_mut().filter(|_| graph_first) {
            g.insert(&base, start..end)?;
        }
        built.time(|| db.upsert("bench", docs))?;
        if let Some(g) = graph.as_mut().filter(|_| !graph_first) {
            g.insert(&base, start..end)?;
        }
    }
    let build_s = built.wall_s;
    let cpu_us = built.cpu_us_per(base.rows);
    let graph_timed = graph.as_ref().map(|g| g.timed);
    let graph_cpu_us = graph_timed.and_then(|t| t.cpu_us_per(base.rows));
    let graph_rate = match graph_timed {
        Some(timed) => {
            let rate = base.rows as f64 / timed.wall_s;
            let row = json!({
                "phase": "graph_build",
                "n": base.rows,
                "dim": dim,
                "threads": a.threads,
                "batch_size": a.batch_size,
                "vectors_per_s": rate,
                "cpu_s": timed.cpu_s,
                "cpu_us_per_vector": graph_cpu_us,
                "cores_busy": timed.cores_busy(),
            });
            out.either(&row, || {
                format!(
                    "graph alone: {} x {dim} = {rate:.0} vectors/s (no storage; built batch by \
                     batch in turn with the database)",
                    base.rows
                )
            })?;
            Some(rate)
        }
        None => None,
    };
    let started = Instant::now();
    db.flush()?;
    let persist_s = started.elapsed().as_secs_f64();
    let stats = db.index_stats("bench")?;
    // The graph alone searches only where it answers what the database answers: with int8 the
    // database rescores its candidates with the f32 vectors, which the graph alone does not.
    if stats.params.quantization != latentdb::index::Quantization::None {
        graph = None;
    }
    let quantization = stats.params.quantization.as_str();
    let oversampling = stats.params.oversampling;
    // What f32 vectors of the same points take, for comparison.
    let f32_bytes = 4 * base.rows * dim;
    let build = json!({
        "phase": "build",
        "n": base.rows,
        "dim": dim,
        "metric": metric.as_str(),
        "m": a.m,
        "ef_construction": a.ef_construction,
        "threads": a.threads,
        "build_s": build_s,
        "vectors_per_s": base.rows as f64 / build_s,
        "persist_s": persist_s,
        "quantization": quantization,
        "oversampling": oversampling,
        "quantized": stats.quantized,
        "vector_bytes": stats.vector_bytes,
        "f32_vector_bytes": f32_bytes,
        "index_bytes": stats.index_bytes,
        "payload_bytes": stats.payload_bytes,
        "rescore_file_bytes": stats.rescore_file_bytes,
        "metadata": a.metadata,
        "batch_size": a.batch_size,
        "graph_vectors_per_s": graph_rate,
        "vs_graph": graph_rate.map(|g| base.rows as f64 / build_s / g),
        "cpu_s": built.cpu_s,
        "cpu_us_per_vector": cpu_us,
        "cores_busy": built.cores_busy(),
        "graph_cpu_us_per_vector": graph_cpu_us,
        "cpu_vs_graph": graph_cpu_us.zip(cpu_us).map(|(g, d)| g / d),
        "peak_rss_bytes": peak_rss(),
        "rss_bytes": rss(),
    });
    out.either(&build, || {
        format!(
            "build: {} x {dim} ({}) in {build_s:.2}s = {:.0} vectors/s (storage included); persist {persist_s:.2}s; peak RSS {:.0} MiB; quantization {quantization} (oversampling {oversampling}): vectors {:.1} MiB in memory (f32: {:.1} MiB)",
            base.rows,
            metric,
            base.rows as f64 / build_s,
            peak_rss().unwrap_or(0) as f64 / 1048576.0,
            stats.vector_bytes as f64 / 1048576.0,
            f32_bytes as f64 / 1048576.0,
        )
    })?;

    // The requests are built before any timing (a caller holds its query already; copying
    // each query out of the matrix is not the database's work), and one untimed pass runs
    // first, so that the first measured ef does not pay for warming the caches (storage
    // pages that rescoring reads, the graph's pages, the allocator).
    let mut requests: Vec<SearchRequest> = (0..queries.rows)
        .map(|i| SearchRequest {
            k: a.k,
            with_text: false,
            with_metadata: false,
            ..SearchRequest::vector(queries.row(i).to_vec())
        })
        .collect();
    let set_ef = |requests: &mut [SearchRequest], ef: usize| {
        for r in requests {
            r.ef = Some(ef.max(a.k));
        }
    };
    if let Some(&ef) = a.ef.first() {
        set_ef(&mut requests, ef);
        for req in &requests {
            db.search("bench", req)?;
        }
    }
    // Per ef: the QPS of each pass, every latency, and the results of the last pass (the
    // search is deterministic, so every pass finds the same).
    // The graph alone's queries, each its own buffer as the database's requests are.
    let graph_queries: Vec<Vec<f32>> = match &graph {
        Some(_) => (0..queries.rows).map(|i| queries.row(i).to_vec()).collect(),
        None => Vec::new(),
    };
    if let (Some(g), Some(&ef)) = (&graph, a.ef.first()) {
        for q in &graph_queries {
            g.index.search(q, a.k, Some(ef.max(a.k)))?;
        }
    }
    #[derive(Clone, Default)]
    struct Timed {
        qps: Vec<f64>,
        lat: Vec<f64>,
        results: Vec<Vec<u32>>,
        graph_qps: Vec<f64>,
        graph_results: Vec<Vec<u32>>,
    }
    let mut timed = vec![Timed::default(); a.ef.len()];
    for pass in 0..a.passes {
        for (&ef, t) in a.ef.iter().zip(&mut timed) {
            set_ef(&mut requests, ef);
            // In turn, alternating which goes first, as for the build.
            let graph_first = pass % 2 == 1;
            if let Some(g) = graph.as_ref().filter(|_| graph_first) {
                time_graph(g, &graph_queries, a.k, ef, t)?;
            }
            t.results.clear();
            t.lat.reserve(requests.len());
            // The answers are kept as the database returns them and their ids parsed after
            // the timed loop (parsing the bench's row numbers back from document ids is the
            // bench's bookkeeping, not the database's work); freeing them is timed, as a
            // caller frees its results.
            let mut answers = Vec::with_capacity(requests.len());
            let total = Instant::now();
            for req in &requests {
                let started = Instant::now();
                let hits = db.search("bench", req)?;
                t.lat.push(started.elapsed().as_secs_f64());
                answers.push(hits);
            }
            let elapsed = finish_pass(total, answers, &mut t.results, |hits| {
                hits.iter()
                    .filter_map(|h| h.id.parse::<u32>().ok())
                    .collect()
            });
            t.qps.push(queries.rows as f64 / elapsed.as_secs_f64());
            if let Some(g) = graph.as_ref().filter(|_| !graph_first) {
                time_graph(g, &graph_queries, a.k, ef, t)?;
            }
        }
    }
    /// One timed pass of the graph alone over every query at `ef`.
    fn time_graph(
        g: &GraphBaseline,
        queries: &[Vec<f32>],
        k: usize,
        ef: usize,
        t: &mut Timed,
    ) -> anyhow::Result<()> {
        t.graph_results.clear();
        // As for the database (see `finish_pass`).
        let mut answers = Vec::with_capacity(queries.len());
        let total = Instant::now();
        for q in queries {
            answers.push(g.index.search(q, k, Some(ef.max(k)))?);
        }
        let elapsed = finish_pass(total, answers, &mut t.graph_results, |hits| {
            hits.iter().map(|h| h.id).collect()
        });
        t.graph_qps
            .push(queries.len() as f64 / elapsed.as_secs_f64());
        Ok(())
    }
    /// Ends a timed pass that began at `started`: lists each answer's ids into `results`
    /// untimed, then frees the answers timed; returns the pass's time.
    fn finish_pass<A>(
        started: Instant,
        answers: Vec<A>,
        results: &mut Vec<Vec<u32>>,
        ids: impl Fn(&A) -> Vec<u32>,
    ) -> std::time::Duration {
        let searching = started.elapsed();
        results.extend(answers.iter().map(ids));
        let freeing = Instant::now();
        drop(answers);
        searching + freeing.elapsed()
    }
    for (
        &ef,
        Timed {
            mut qps,
            mut lat,
            results,
            mut graph_qps,
            graph_results,
        },
    ) in a.ef.iter().zip(timed)
    {
        let ef = ef.max(a.k);
        lat.sort_by(f64::total_cmp);
        qps.sort_by(f64::total_cmp);
        graph_qps.sort_by(f64::total_cmp);
        let recall = bench::recall(&results, &truth, a.k);
        let qps = percentile(&qps, 0.5);
        let (p50, p99) = (percentile(&lat, 0.5) * 1e3, percentile(&lat, 0.99) * 1e3);
        let (graph_qps, graph_recall) = if graph.is_some() {
            let g = percentile(&graph_qps, 0.5);
            (Some(g), Some(bench::recall(&graph_results, &truth, a.k)))
        } else {
            (None, None)
        };
        let row = json!({
            "phase": "search",
            "ef": ef,
            "k": a.k,
            "quantization": quantization,
            "oversampling": oversampling,
            "recall": recall,
            "qps": qps,
            "passes": a.passes,
            "p50_ms": p50,
            "p99_ms": p99,
            "peak_rss_bytes": peak_rss(),
            "graph_qps": graph_qps,
            "graph_recall": graph_recall,
            "vs_graph_qps": graph_qps.map(|g| qps / g),
        });
        out.either(&row, || {
            let graph = match (graph_qps, graph_recall) {
                (Some(g), Some(r)) => {
                    format!("; graph alone: recall@{} {r:.4}  {g:>8.0} QPS", a.k)
                }
                _ => String::new(),
            };
            format!(
                "ef {ef:>5}: recall@{} {recall:.4}  {qps:>8.0} QPS (1 thread)  p50 {p50:.3} ms  p99 {p99:.3} ms{graph}",
                a.k
            )
        })?;
    }
    drop(db);
    Ok(ExitCode::SUCCESS)
}

pub fn gen_data(a: GenDataArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.n == 0 || a.dim == 0 || a.queries == 0 {
        bail!("--n, --dim and --queries must be positive");
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    // One draw, split: queries come from the same clusters as the base.
    let all = synth::power_law_clusters(a.n + a.queries, a.dim, a.clusters, a.alpha, a.seed);
    let (base, queries) = all.split_at(a.n * a.dim);
    let path = |name: &str| -> PathBuf { Path::new(&a.out).join(name) };
    npy::write_f32(&path("base.npy"), a.n, a.dim, base)?;
    npy::write_f32(&path("queries.npy"), a.queries, a.dim, queries)?;
    if let Some(k) = a.gt_k {
        let k = k.clamp(1, a.n);
        let gt = bench::ground_truth(metrics(a.metric).1, a.dim, base, queries, k);
        let flat: Vec<u32> = gt.into_iter().flatten().collect();
        npy::write_ids(&path("gt.npy"), a.queries, k, &flat)?;
    }
    out.either(
        &json!({"out": a.out, "n": a.n, "dim": a.dim, "queries": a.queries, "seed": a.seed}),
        || {
            format!(
                "wrote {} ({} x {}), queries {}",
                a.out.display(),
                a.n,
                a.dim,
                a.queries
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `latentdb bench open`: opens the database of `--data` (all its collections) and reports how
/// long that took, the memory it holds, and what each collection holds in memory.
pub fn open(a: BenchOpenArgs, global: &Global, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.k == 0 || a.ef == 0 {
        bail!("-k and --ef must be positive");
    }
    let queries = a.queries.as_deref().map(npy::read_f32).transpose()?;
    let rss_before = rss();
    let started = Instant::now();
    let db = open_database_with(global, DatabaseOptions::new())?;
    let open_s = started.elapsed().as_secs_f64();
    let rss_after = rss();
    let mut collections = Vec::new();
    for c in db.list_collections() {
        let stats = db.index_stats(&c.name)?;
        collections.push(json!({
            "name": c.name,
            "count": c.count,
            "dim": c.dimension,
            "loaded_from_dump": stats.loaded_from_dump,
            "replayed": stats.replayed,
            "rebuilt_on_open": stats.rebuilt_on_open,
            "quantized": stats.quantized,
            "vector_bytes": stats.vector_bytes,
            "index_bytes": stats.index_bytes,
            "payload_bytes": stats.payload_bytes,
        }));
    }
    let mut report = json!({
        "phase": "open",
        "open_s": open_s,
        "rss_before_bytes": rss_before,
        "rss_bytes": rss_after,
        "peak_rss_bytes": peak_rss(),
        "collections": collections,
    });
    if let (Some(q), Some(name)) = (&queries, &a.collection) {
        let started = Instant::now();
        let mut first = None;
        for i in 0..q.rows {
            let req = SearchRequest {
                k: a.k,
                ef: Some(a.ef.max(a.k)),
                with_text: false,
                with_metadata: false,
                ..SearchRequest::vector(q.row(i).to_vec())
            };
            db.search(name, &req)?;
            first.get_or_insert_with(|| started.elapsed().as_secs_f64());
        }
        let secs = started.elapsed().as_secs_f64();
        report["first_query_s"] = json!(first);
        report["cold_qps"] = json!(q.rows as f64 / secs);
        report["rss_after_queries_bytes"] = json!(rss());
    }
    out.either(&report, || {
        let mib = |b: Option<u64>| b.unwrap_or(0) as f64 / 1048576.0;
        let mut text = format!(
            "open: {open_s:.3}s; RSS {:.0} MiB (before open {:.0} MiB)",
            mib(rss_after),
            mib(rss_before)
        );
        for c in report["collections"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "\n  {}: {} documents, from dump {}, replayed {}; index {:.1} MiB (vectors {:.1} MiB), payload {:.1} MiB",
                c["name"].as_str().unwrap_or(""),
                c["count"],
                c["loaded_from_dump"],
                c["replayed"],
                c["index_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
                c["vector_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
                c["payload_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            ));
        }
        if let Some(qps) = report["cold_qps"].as_f64() {
            text.push_str(&format!(
                "\n  first query {:.1} ms; first pass {qps:.0} QPS",
                report["first_query_s"].as_f64().unwrap_or(0.0) * 1e3
            ));
        }
        text
    })?;
    Ok(ExitCode::SUCCESS)
}
