//! Subcommand implementations.

pub mod backup;
pub mod bench_ann;
pub mod bench_hybrid;
pub mod bench_ingest;
mod collection;
mod documents;
mod embed;
pub mod eval;
pub mod ingest;
pub mod router;
mod scratch;
pub mod search;
pub mod serve;
pub mod tune;

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{BenchCommand, Cli, Command, Global};
use crate::output::Out;

/// Opens the database of `--data` with the global options, and reports on stderr any
/// acknowledged writes found lost (opened with `--accept-data-loss`).
pub fn open_database(global: &Global) -> anyhow::Result<latentdb::Database> {
    open_database_with(global, latentdb::DatabaseOptions::new())
}

/// [`open_database`] with more options.
pub fn open_database_with(
    global: &Global,
    options: latentdb::DatabaseOptions,
) -> anyhow::Result<latentdb::Database> {
    let dir = global
        .data
        .as_deref()
        .context("no database directory: pass --data DIR or set LATENTDB_DATA")?;
    let options = options.accept_data_loss(global.accept_data_loss);
    let db = latentdb::Database::open_with(dir, options)
        .with_context(|| format!("cannot open {}", dir.display()))?;
    report_data_loss(&db, global.json);
    Ok(db)
}

/// Prints what was lost (one line per collection, on stderr: stdout stays the command's).
fn report_data_loss(db: &latentdb::Database, json: bool) {
    for loss in db.data_loss() {
        if json {
            eprintln!(
                "{}",
                serde_json::json!({"data_loss": {
                    "collection": loss.collection,
                    "acknowledged_sequence": loss.expected,
                    "found_sequence": loss.found,
                }})
            );
        } else {
            eprintln!(
                "warning: data loss accepted in collection {:?}: writes were acknowledged up to \
                 change {}, storage holds changes up to {}; the missing writes are lost",
                loss.collection, loss.expected, loss.found
            );
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut out = Out::new(cli.global.json);
    let global = &cli.global;
    let open = || open_database(global);
    match cli.command {
        Command::Collection(crate::cli::CollectionCommand::Create(a)) if a.router.is_some() => {
            collection::create_on_router(a, &mut out)
        }
        Command::Collection(c) => collection::run(c, &open()?, &mut out),
        Command::Upsert(a) => documents::upsert(a, &open()?, &mut out),
        Command::Get(a) => documents::get(a, &open()?, &mut out),
        Command::Delete(a) => documents::delete(a, &open()?, &mut out),
        Command::Count(a) => documents::count(a, &open()?, &mut out),
        Command::Scroll(a) => documents::scroll(a, &open()?, &mut out),
        Command::Search(a) => search::search(a, &open()?, &mut out),
        Command::Compact(a) => search::compact(a, &open()?, &mut out),
        Command::Flush => {
            open()?.flush()?;
            out.either(&serde_json::json!({"flushed": true}), || "flushed".into())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed(a) => embed::embed(a, &mut out),
        Command::Model(crate::cli::ModelCommand::Rollback(a)) => {
            tune::rollback(a, &open()?, &mut out)
        }
        Command::Model(c) => embed::model(c, &mut out),
        Command::Bench(BenchCommand::Embed(a)) => embed::bench(a, &mut out),
        Command::Bench(BenchCommand::Ann(a)) => bench_ann::ann(a, &mut out),
        Command::Bench(BenchCommand::GenData(a)) => bench_ann::gen_data(a, &mut out),
        Command::Bench(BenchCommand::Open(a)) => bench_ann::open(a, global, &mut out),
        Command::Bench(BenchCommand::Hybrid(a)) => bench_hybrid::hybrid(a, &mut out),
        Command::Bench(BenchCommand::Ingest(a)) => bench_ingest::ingest(a, &mut out),
        Command::Ingest(a) => ingest::run(a, &open()?, &mut out),
        Command::Eval(a) => eval::run(a, &open()?, &mut out),
        Command::Serve(a) => serve::serve(a, global, &mut out),
        Command::Router(a) => router::run(a, &mut out),
        Command::Tune(a) => tune::run(a, &open()?, &mut out),
        Command::Backup(c) => backup::run(c, global, &mut out),
    }
}
