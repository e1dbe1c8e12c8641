//! `latentdb bench ann | gen-data`: the ANN benchmark through the same code path users take
//! (storage included), and seeded data for it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use latentdb::index::{bench, npy, synth};
use latentdb::{CollectionSpec, Database, DatabaseOptions, Document, Durability, SearchRequest};

use crate::cli::{MetricArg, QuantizationArg};
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

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("latentdb-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
    if a.k == 0 || a.ef.is_empty() || a.batch_size == 0 {
        bail!("-k, --ef and --batch-size must be positive");
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

    let tmp = TempDir::new()?;
    let db = Database::open_with(
        tmp.0.join("db"),
        DatabaseOptions::new().durability(Durability::Buffered),
    )?;
    let mut index = json!({
        "m": a.m,
        "ef_construction": a.ef_construction,
        "quantization": a.quantization.as_str(),
    });
    if let Some(o) = a.oversampling {
        index["oversampling"] = json!(o);
    }
    let spec = CollectionSpec {
        index,
        ..CollectionSpec::new("bench", dim, metric)
    };
    db.create_collection(spec)?;
    let started = Instant::now();
    for start in (0..base.rows).step_by(a.batch_size) {
        let end = (start + a.batch_size).min(base.rows);
        let docs = (start..end)
            .map(|i| Document::new(i.to_string(), base.row(i).to_vec()))
            .collect();
        db.upsert("bench", docs)?;
    }
    let build_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    db.flush()?;
    let persist_s = started.elapsed().as_secs_f64();
    let stats = db.index_stats("bench")?;
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
        "peak_rss_bytes": peak_rss(),
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

    // One untimed pass first, so that the first measured ef does not pay for warming the
    // caches (storage pages that rescoring reads, the graph's pages, the allocator).
    let request = |i: usize, ef: usize| SearchRequest {
        k: a.k,
        ef: Some(ef),
        with_text: false,
        with_metadata: false,
        ..SearchRequest::vector(queries.row(i).to_vec())
    };
    if let Some(&ef) = a.ef.first() {
        for i in 0..queries.rows {
            db.search("bench", &request(i, ef.max(a.k)))?;
        }
    }
    for &ef in &a.ef {
        let ef = ef.max(a.k);
        let mut results = Vec::with_capacity(queries.rows);
        let mut lat = Vec::with_capacity(queries.rows);
        let total = Instant::now();
        for i in 0..queries.rows {
            let req = request(i, ef);
            let t = Instant::now();
            let hits = db.search("bench", &req)?;
            lat.push(t.elapsed().as_secs_f64());
            let mut found = Vec::with_capacity(hits.len());
            found.extend(hits.iter().filter_map(|h| h.id.parse::<u32>().ok()));
            results.push(found);
        }
        let secs = total.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let recall = bench::recall(&results, &truth, a.k);
        let qps = queries.rows as f64 / secs;
        let (p50, p99) = (percentile(&lat, 0.5) * 1e3, percentile(&lat, 0.99) * 1e3);
        let row = json!({
            "phase": "search",
            "ef": ef,
            "k": a.k,
            "quantization": quantization,
            "oversampling": oversampling,
            "recall": recall,
            "qps": qps,
            "p50_ms": p50,
            "p99_ms": p99,
            "peak_rss_bytes": peak_rss(),
        });
        out.either(&row, || {
            format!(
                "ef {ef:>5}: recall@{} {recall:.4}  {qps:>8.0} QPS (1 thread)  p50 {p50:.3} ms  p99 {p99:.3} ms",
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
