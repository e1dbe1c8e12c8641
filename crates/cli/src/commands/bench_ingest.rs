//! `latentdb bench ingest`: end-to-end ingest throughput of a JSONL corpus. Creates a fresh
//! scratch database (removed at the end) with one collection on the model, as
//! `collection create --model` does, ingests the corpus through the same pipeline as
//! `latentdb ingest` (read and chunk, embed, write), and prints documents/s, chunks/s, how
//! long each stage worked and its share of the wall time, and the peak resident memory.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use latentdb::embed::{ModelSpec, bench::peak_rss_bytes, fetch_default, models_dir};
use latentdb::ingest::Ingester;
use latentdb::{CollectionSpec, Database, Metric};

use crate::cli::ModelArg;
use crate::commands::ingest::ChunkingArgs;
use crate::commands::scratch::ScratchDir;
use crate::output::Out;

/// Arguments of `bench ingest`.
#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// The corpus: a JSONL file, one `{"text", "id", "metadata"}` object per line ("id" and
    /// "metadata" optional), as `latentdb ingest` reads it.
    #[arg(long, value_name = "F.jsonl")]
    pub input: PathBuf,
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub chunking: ChunkingArgs,
    /// Threads of the compute pool (default: all cores). The matrix kernels split their work
    /// by `RAYON_NUM_THREADS` (else the physical cores): set it too for an exact count.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Ingest only the first N documents (non-blank lines).
    #[arg(long)]
    pub limit: Option<usize>,
}

/// The collection ingested into.
const COLLECTION: &str = "bench";

/// Copies the first `limit` non-blank lines of `input` to `to` (a `.jsonl` name, so that the
/// ingester reads it as JSONL whatever the input is called); the lines copied.
fn copy_lines(input: &Path, to: &Path, limit: Option<usize>) -> anyhow::Result<usize> {
    let f = File::open(input).with_context(|| format!("cannot open {}", input.display()))?;
    let mut w = BufWriter::new(
        File::create(to).with_context(|| format!("cannot create {}", to.display()))?,
    );
    let mut n = 0;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        if limit.is_some_and(|l| n >= l) {
            break;
        }
        let line =
            line.with_context(|| format!("{}: cannot read line {}", input.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        writeln!(w, "{line}")?;
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

fn is_jsonl(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl") || e.eq_ignore_ascii_case("ndjson"))
}

pub fn ingest(a: BenchIngestArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    if a.threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    if !a.input.is_file() {
        bail!("--input {}: no such file", a.input.display());
    }
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("cannot size the thread pool")?;
    }
    let opts = a.chunking.options();
    let tmp = ScratchDir::new("bench-ingest")?;
    // The corpus as the ingester sees it: the input itself, or a `.jsonl` copy of its first
    // `--limit` lines (made before the clock starts).
    let corpus = if a.limit.is_some() || !is_jsonl(&a.input) {
        let copy = tmp.path().join("corpus.jsonl");
        copy_lines(&a.input, &copy, a.limit)?;
        copy
    } else {
        a.input.clone()
    };

    let setup = Instant::now();
    let spec_model = ModelSpec::parse(&a.model.model);
    if spec_model == ModelSpec::Default && spec_model.resolve().is_err() {
        fetch_default(&models_dir()).context("cannot fetch the default model")?;
    }
    let db = Database::open(tmp.path().join("db"))
        .with_context(|| format!("cannot open a database in {}", tmp.path().display()))?;
    db.create_collection_with_model(
        CollectionSpec::new(COLLECTION, 0, Metric::Cosine),
        &spec_model,
    )
    .with_context(|| format!("cannot create a collection with model {:?}", a.model.model))?;
    let model = db
        .embedder(COLLECTION)?
        .map(|e| e.identity().name.clone())
        .unwrap_or_default();
    let setup_s = setup.elapsed().as_secs_f64();

    let stats = Ingester::new(&db).run(COLLECTION, &[corpus], &opts)?;
    let seconds = stats.seconds.max(1e-9);
    let share = |s: f64| s / seconds;
    let report = json!({
        "documents": stats.documents,
        "chunks": stats.chunks,
        "errors": stats.errors,
        "bytes": stats.bytes,
        "seconds": stats.seconds,
        "docs_per_s": stats.documents as f64 / seconds,
        "chunks_per_s": stats.chunks as f64 / seconds,
        "read_s": stats.read_s,
        "embed_s": stats.embed_s,
        "write_s": stats.write_s,
        "read_share": share(stats.read_s),
        "embed_share": share(stats.embed_s),
        "write_share": share(stats.write_s),
        "setup_s": setup_s,
        "threads": rayon::current_num_threads(),
        "batch_size": opts.batch_size,
        "chunk_tokens": opts.chunk.max_tokens,
        "chunk_overlap": opts.chunk.overlap,
        "model": model,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    drop(db);
    out.either(&report, || {
        format!(
            "ingested {} documents, {} chunks in {:.2}s: {:.1} docs/s, {:.1} chunks/s; stages \
             busy: read {:.2}s ({:.0}%), embed {:.2}s ({:.0}%), write {:.2}s ({:.0}%); {} \
             errors; {} threads, batch {}, model {}, peak RSS {:.0} MiB (setup {:.2}s)",
            stats.documents,
            stats.chunks,
            stats.seconds,
            stats.documents as f64 / seconds,
            stats.chunks as f64 / seconds,
            stats.read_s,
            100.0 * share(stats.read_s),
            stats.embed_s,
            100.0 * share(stats.embed_s),
            stats.write_s,
            100.0 * share(stats.write_s),
            stats.errors,
            rayon::current_num_threads(),
            opts.batch_size,
            model,
            peak_rss_bytes().unwrap_or(0) as f64 / 1048576.0,
            setup_s,
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
