//! `latentdb backup create | verify | restore | list`: online point-in-time backups to a
//! local directory or `s3://bucket/prefix` (credentials from the standard `AWS_*`
//! variables). Each prints its report as one JSON line on stdout; `create` reports its
//! progress on stderr.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use latentdb::backup::{BackupOptions, BackupProgress, BackupSummary, Backups};

use crate::cli::Global;
use crate::output::Out;

/// `latentdb backup ...`
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the database of --data (all collections, or --collections) to TARGET while
    /// it stays writable: the backup holds exactly the writes acknowledged before its
    /// capture. TARGET must not hold a backup already.
    Create(CreateArgs),
    /// Check every file of the backup at TARGET (sizes and checksums) without restoring it.
    Verify(TargetArg),
    /// Restore the backup at TARGET into --data, a new or empty directory. A damaged or
    /// incomplete backup is refused before anything is written.
    Restore(TargetArg),
    /// List the backups directly under ROOT (a directory or an S3 prefix) as a JSON array.
    List(RootArg),
}

/// Arguments of `backup create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A directory or s3://bucket/prefix.
    pub target: String,
    /// The collections to back up, comma-separated (default: all).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub collections: Vec<String>,
}

/// A backup location.
#[derive(Debug, Args)]
pub struct TargetArg {
    /// The backup: a directory or s3://bucket/prefix.
    pub target: String,
}

/// Where backups are.
#[derive(Debug, Args)]
pub struct RootArg {
    /// A directory or s3://bucket/prefix holding backups.
    pub root: String,
}

/// Runs a `backup` subcommand.
pub fn run(c: BackupCommand, global: &Global, out: &mut Out) -> anyhow::Result<ExitCode> {
    let report = match c {
        BackupCommand::Create(a) => {
            let db = super::open_database(global)?;
            let options = BackupOptions {
                collections: a.collections,
                max_part_size: None,
            };
            let mut progress = |p: &BackupProgress| {
                if p.collection.is_empty() {
                    eprintln!(
                        "backup: done, {}/{} records, {} bytes",
                        p.records, p.total, p.bytes
                    );
                } else {
                    eprintln!(
                        "backup: {}: {}/{} records, {} bytes",
                        p.collection, p.records, p.total, p.bytes
                    );
                }
            };
            let report = Backups::new(&db)
                .create(&a.target, &options, &mut progress)
                .with_context(|| format!("backup to {} failed", a.target))?;
            serde_json::to_value(report)?
        }
        BackupCommand::Verify(a) => {
            let report = latentdb::backup::verify(&a.target)
                .with_context(|| format!("backup {} does not verify", a.target))?;
            json!({"files": report.files, "chunks": report.chunks, "bytes": report.bytes})
        }
        BackupCommand::Restore(a) => {
            let data = global
                .data
                .as_deref()
                .context("no directory to restore into: pass --data DIR")?;
            let report = latentdb::backup::restore(&a.target, data)
                .with_context(|| format!("cannot restore {} into {}", a.target, data.display()))?;
            serde_json::to_value(report)?
        }
        BackupCommand::List(a) => {
            let list = latentdb::backup::list(&a.root)
                .with_context(|| format!("cannot list the backups under {}", a.root))?;
            Value::Array(list.iter().map(summary_json).collect())
        }
    };
    out.json(&report)?;
    Ok(ExitCode::SUCCESS)
}

/// One listed backup as JSON.
fn summary_json(s: &BackupSummary) -> Value {
    json!({
        "name": s.name,
        "url": s.url,
        "created_unix_ms": s.created_unix_ms,
        "total_bytes": s.total_bytes,
        "files": s.files,
        "meta": s.meta,
        "problem": s.problem,
    })
}
