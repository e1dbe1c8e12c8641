//! The command-line grammar. Flags, subcommands and JSON field names here are a contract.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// latentdb: an embedded vector database with a built-in text embedder.
#[derive(Debug, Parser)]
#[command(name = "latentdb", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after any subcommand.
#[derive(Debug, Args)]
pub struct Global {
    /// The database directory (created if missing).
    #[arg(long, global = true, env = "LATENTDB_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Print machine-readable output: one JSON object per line.
    #[arg(long, global = true)]
    pub json: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, inspect and drop collections.
    #[command(subcommand)]
    Collection(CollectionCommand),
    /// Insert or replace documents from a JSONL file (`-` reads stdin).
    Upsert(UpsertArgs),
    /// Print documents by id.
    Get(IdsArgs),
    /// Delete documents by id.
    Delete(IdsArgs),
    /// Print the number of documents in a collection.
    Count(NameArg),
    /// Page through a collection in id order.
    Scroll(ScrollArgs),
    /// Flush every buffered write to disk.
    Flush,
}

/// `latentdb collection ...`
#[derive(Debug, Subcommand)]
pub enum CollectionCommand {
    /// Create a collection.
    Create(CreateArgs),
    /// List collections.
    List,
    /// Show one collection.
    Info(NameArg),
    /// Drop a collection and all its documents.
    Drop(NameArg),
}

/// Arguments of `collection create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The collection name (1-128 characters of A-Z a-z 0-9 _ . -).
    pub name: String,
    /// The vector dimension.
    #[arg(long)]
    pub dim: usize,
    /// The similarity metric.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
}

/// A metric on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MetricArg {
    /// Cosine similarity.
    Cosine,
    /// Inner product.
    Dot,
    /// Euclidean distance.
    L2,
}

/// A single collection name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// The collection name.
    pub name: String,
}

/// Arguments of `upsert`.
#[derive(Debug, Args)]
pub struct UpsertArgs {
    /// The collection name.
    pub name: String,
    /// A JSONL file of `{"id", "text", "vector", "metadata"}` objects; `-` reads stdin.
    #[arg(long, value_name = "F.jsonl")]
    pub file: PathBuf,
    /// Documents per atomic batch.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// `sync` acknowledges each batch once on disk; `buffered` is faster for bulk loads and
    /// flushes once at the end.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    pub durability: DurabilityArg,
}

/// A durability mode on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DurabilityArg {
    /// Flush every batch before acknowledging it.
    Sync,
    /// Flush in the background and once at the end.
    Buffered,
}

/// A collection name and document ids.
#[derive(Debug, Args)]
pub struct IdsArgs {
    /// The collection name.
    pub name: String,
    /// Document ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
}

/// Arguments of `scroll`.
#[derive(Debug, Args)]
pub struct ScrollArgs {
    /// The collection name.
    pub name: String,
    /// Start after this document id (the `next_cursor` of the previous page).
    #[arg(long)]
    pub after: Option<String>,
    /// Documents per page.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Include vectors in the output.
    #[arg(long)]
    pub with_vectors: bool,
}
