//! `latentdb ingest NAME PATH...`: files and directories into a collection with a model.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use latentdb::Database;
use latentdb::ingest::{ChunkOptions, IngestEvent, IngestOptions, Ingester};

use crate::output::Out;

/// Arguments of `ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The collection (created with `collection create NAME --model ...`).
    pub name: String,
    /// Files and directories: .txt, .md, .html/.htm and .jsonl (`{"id","text","metadata"}`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub chunking: ChunkingArgs,
    /// Only files under the directories that match this pattern (`*.md`, `docs/**/*.html`).
    #[arg(long, value_name = "PATTERN")]
    pub glob: Option<String>,
}

/// How `ingest` and `bench ingest` chunk and batch.
#[derive(Debug, Args)]
pub struct ChunkingArgs {
    /// The most tokens per chunk (capped at the model's limit).
    #[arg(long, visible_alias = "chunk-size", default_value_t = 256)]
    pub chunk_tokens: usize,
    /// Tokens repeated from one chunk at the start of the next.
    #[arg(long, default_value_t = 32)]
    pub chunk_overlap: usize,
    /// Chunks per embedding and write batch.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
}

impl ChunkingArgs {
    /// The ingest options these flags ask for (no glob).
    pub fn options(&self) -> IngestOptions {
        IngestOptions {
            chunk: ChunkOptions {
                max_tokens: self.chunk_tokens,
                overlap: self.chunk_overlap,
            },
            batch_size: self.batch_size,
            ..IngestOptions::default()
        }
    }
}

pub fn run(a: IngestArgs, db: &Database, out: &mut Out) -> anyhow::Result<ExitCode> {
    let opts = IngestOptions {
        glob: a.glob,
        ..a.chunking.options()
    };
    let show = !out.is_json() && std::io::stderr().is_terminal();
    let bar = Mutex::new(None::<ProgressBar>);
    let json = out.is_json();
    let on_event = |e: IngestEvent<'_>| match e {
        IngestEvent::Started { bytes, .. } if show => {
            let pb = ProgressBar::new(bytes);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            pb.enable_steady_tick(Duration::from_millis(200));
            if let Ok(mut b) = bar.lock() {
                *b = Some(pb);
            }
        }
        IngestEvent::Started { .. } => {}
        IngestEvent::Progress(s) => {
            if let Ok(b) = bar.lock()
                && let Some(pb) = b.as_ref()
            {
                pb.set_position(s.file_bytes);
                pb.set_message(format!(
                    "{} files, {} chunks, {:.0} chunks/s, {} skipped, {} errors",
                    s.files,
                    s.chunks,
                    s.chunks as f64 / s.seconds.max(1e-3),
                    s.skipped,
                    s.errors
                ));
            }
        }
        IngestEvent::Problem(p) => {
            let line = if json {
                json!({"problem": p}).to_string()
            } else {
                format!("warning: {p}")
            };
            match bar.lock().ok().as_ref().and_then(|b| b.as_ref()) {
                Some(pb) => pb.suspend(|| eprintln!("{line}")),
                None => eprintln!("{line}"),
            }
        }
    };
    let stats = Ingester::new(db).run_with(&a.name, &a.paths, &opts, &on_event);
    if let Ok(mut b) = bar.lock()
        && let Some(pb) = b.take()
    {
        pb.finish_and_clear();
    }
    let stats = stats?;
    let summary = json!({
        "files": stats.files,
        "documents": stats.documents,
        "chunks": stats.chunks,
        "skipped": stats.skipped,
        "errors": stats.errors,
        "bytes": stats.bytes,
        "seconds": stats.seconds,
        "read_s": stats.read_s,
        "embed_s": stats.embed_s,
        "write_s": stats.write_s,
    });
    out.either(&summary, || {
        format!(
            "ingested {} files: {} documents, {} chunks ({:.0} chunks/s, {:.2} MB/s), {} unchanged \
             skipped, {} errors, {:.1}s",
            stats.files,
            stats.documents,
            stats.chunks,
            stats.chunks as f64 / stats.seconds.max(1e-9),
            stats.bytes as f64 / 1e6 / stats.seconds.max(1e-9),
            stats.skipped,
            stats.errors,
            stats.seconds
        )
    })?;
    Ok(ExitCode::SUCCESS)
}
