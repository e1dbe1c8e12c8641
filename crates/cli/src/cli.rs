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
    /// Open the database even if acknowledged writes are missing from its storage (a damaged
    /// or truncated file): without it such an open is refused and nothing is changed. What
    /// was lost is printed on stderr.
    #[arg(long, global = true)]
    pub accept_data_loss: bool,
    /// Export tracing spans over OTLP/HTTP (protobuf) to a collector at URL, e.g.
    /// `http://127.0.0.1:4318` (`/v1/traces` is appended to a URL without a path). Which spans:
    /// `LATENTDB_TRACE` (default `latentdb=debug`). Needs a binary built with
    /// `--features otlp`.
    #[arg(
        long,
        global = true,
        env = "LATENTDB_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub otlp_endpoint: Option<String>,
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
    /// Delete documents by id, by metadata filter, or all of them (--all).
    Delete(DeleteArgs),
    /// Print the number of documents in a collection.
    Count(NameArg),
    /// Page through a collection in id order.
    Scroll(ScrollArgs),
    /// Flush every buffered write to disk and persist the indexes.
    Flush,
    /// Search by vector similarity (dense), BM25 over the stored texts (lexical) or both
    /// fused (hybrid), with an optional metadata filter.
    Search(crate::commands::search::SearchArgs),
    /// Rebuild a collection's index without its deleted points.
    Compact(NameArg),
    /// Embed texts (one JSON string per line on stdin) and print one JSON array per line.
    Embed(EmbedArgs),
    /// Install and inspect embedding models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure performance.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Ingest files and directories (.txt, .md, .html, .jsonl) as chunks into a collection
    /// with a model.
    Ingest(crate::commands::ingest::IngestArgs),
    /// Evaluate retrieval on a BEIR-format dataset: nDCG@10, MRR@10, recall@10/100, QPS.
    Eval(crate::commands::eval::EvalArgs),
    /// Serve the database over gRPC (latentdb.v1, with health and reflection) until
    /// SIGINT or SIGTERM.
    Serve(crate::commands::serve::ServeArgs),
    /// Run a cluster router: latentdb.v1 in front of data nodes (`serve --cluster`), with
    /// etcd for metadata and NATS JetStream as the write log, until SIGINT or SIGTERM.
    Router(crate::commands::router::RouterArgs),
    /// Tune the collection's embedder on its own corpus (two-stage contrastive tuning with
    /// hard negatives mined from its index); the new version goes live only if better.
    Tune(crate::commands::tune::TuneArgs),
    /// Online point-in-time backups: create, verify, restore and list (a directory or
    /// s3://bucket/prefix).
    #[command(subcommand)]
    Backup(crate::commands::backup::BackupCommand),
}

/// `latentdb model ...`
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Install the default model (all-MiniLM-L6-v2) into the model cache.
    Fetch,
    /// Show a model's identity: name, type, weights hash, pooling, dimension.
    Info(ModelArg),
    /// Return a collection to its previous model version (re-embeds its documents).
    Rollback(crate::commands::tune::RollbackArgs),
}

/// A model: `default` or a model directory.
#[derive(Debug, Args)]
pub struct ModelArg {
    /// `default` (all-MiniLM-L6-v2 from the model cache) or a model directory.
    #[arg(long, default_value = "default")]
    pub model: String,
}

/// Arguments of `embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// An instruction for every line: a task name (NQ, MSMARCO, ...) or a sentence.
    #[arg(long)]
    pub instruction: Option<String>,
    /// Token limit per text (default: the model's).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

/// `latentdb bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput: texts/s, tokens/s and peak memory.
    Embed(BenchEmbedArgs),
    /// ANN index build rate, recall@k, QPS and latency per ef, through the database.
    Ann(crate::commands::bench_ann::BenchAnnArgs),
    /// Open the database of `--data`: open time, resident memory, and what each collection
    /// holds in memory (index, vectors, payload).
    Open(crate::commands::bench_ann::BenchOpenArgs),
    /// Write seeded clustered base/query vectors (and ground truth) as .npy files.
    GenData(crate::commands::bench_ann::GenDataArgs),
    /// What the lexical index costs: ingest rate with and without it, and dense, lexical and
    /// hybrid query latency, on seeded synthetic chunks (no model needed).
    Hybrid(crate::commands::bench_hybrid::BenchHybridArgs),
    /// End-to-end ingest of a JSONL corpus into a scratch database with the model: docs/s,
    /// chunks/s, each stage's busy time (read and chunk, embed, write) and peak memory.
    Ingest(crate::commands::bench_ingest::BenchIngestArgs),
}

/// Arguments of `bench embed`.
#[derive(Debug, Args)]
pub struct BenchEmbedArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Texts, one per line (a JSON string, a JSON object with "text", or plain text).
    #[arg(long)]
    pub input: PathBuf,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Embed at most this many texts.
    #[arg(long)]
    pub limit: Option<usize>,
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
    /// The vector dimension (taken from the model with `--model`).
    #[arg(long, required_unless_present = "model")]
    pub dim: Option<usize>,
    /// Embed documents and queries with this model: `default` (all-MiniLM-L6-v2, fetched
    /// if absent) or a model directory. Its identity is stored with the collection.
    #[arg(long)]
    pub model: Option<String>,
    /// The similarity metric.
    #[arg(long, value_enum, default_value_t = MetricArg::Cosine)]
    pub metric: MetricArg,
    /// Stem the lexical index's terms with this Snowball stemmer (english, french, german,
    /// ...), or `none` for no stemming [default: english].
    #[arg(long, value_name = "LANG")]
    pub stemmer: Option<String>,
    /// The lexical index's stopword list [default: english].
    #[arg(long, value_parser = ["english", "none"])]
    pub stopwords: Option<String>,
    /// No lexical (BM25) index: lexical and hybrid search are then unavailable.
    #[arg(long, conflicts_with_all = ["stemmer", "stopwords"])]
    pub no_lexical: bool,
    /// How the index keeps vectors in memory: `int8` codes (a quarter of the memory; searches
    /// rescore their candidates with the stored vectors) or `none` (f32) [default: none].
    #[arg(long, value_enum)]
    pub quantization: Option<QuantizationArg>,
    /// With `--quantization int8`: candidates per result rescored with the stored vectors
    /// (1-100) [default: 3].
    #[arg(long)]
    pub oversampling: Option<usize>,
    /// HNSW M: neighbours per node (2-128) [default: 16].
    #[arg(long)]
    pub m: Option<usize>,
    /// HNSW ef_construction: the candidate list while building [default: 200].
    #[arg(long)]
    pub ef_construction: Option<usize>,
    /// The default search candidate list `ef` [default: 128].
    #[arg(long)]
    pub ef_search: Option<usize>,
    /// Create the collection in a cluster, through the router at ADDR (`host:port`, as given
    /// to `latentdb router --addr`), instead of in the --data directory.
    #[arg(long, value_name = "ADDR")]
    pub router: Option<String>,
    /// With --router: the number of shards, fixed at creation [default: 1].
    #[arg(long, requires = "router")]
    pub shards: Option<u32>,
    /// With --router: the replicas of each shard (at most the live data nodes) [default: 1].
    #[arg(long, requires = "router")]
    pub replicas: Option<u32>,
}

/// An index quantization on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantizationArg {
    /// f32 vectors.
    None,
    /// 7-bit scalar codes, one byte per dimension.
    Int8,
}

impl QuantizationArg {
    /// The index setting's name.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantizationArg::None => "none",
            QuantizationArg::Int8 => "int8",
        }
    }
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

/// Arguments of `delete`: exactly one of ids, `--filter` and `--all`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The collection name.
    pub name: String,
    /// Document ids.
    #[arg(required_unless_present_any = ["filter", "all"], conflicts_with_all = ["filter", "all"])]
    pub ids: Vec<String>,
    /// Delete the documents whose metadata matches this filter, e.g. '{"year": {"$lt": 2000}}'
    /// (an empty filter is refused: use --all).
    #[arg(long, value_name = "JSON", conflicts_with = "all")]
    pub filter: Option<String>,
    /// Delete every document of the collection (the collection stays).
    #[arg(long)]
    pub all: bool,
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
