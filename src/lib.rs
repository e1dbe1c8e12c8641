//! latentdb: an embedded vector database with a built-in text embedder.
//!
//! [`Database`] is the in-process API: open a directory, create collections, upsert documents
//! (an id, optional text, JSON metadata and a vector), get, delete, count and scroll them.
//! Everything is synchronous and thread-safe; writes are atomic per batch and durable when they
//! return. See `docs/ARCHITECTURE.md` for how the crates fit together.
//!
//! ```
//! use latentdb::{CollectionSpec, Database, Document, Metric};
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir()?;
//! let db = Database::open(dir.path())?;
//! db.create_collection(CollectionSpec::new("articles", 3, Metric::Cosine))?;
//! db.upsert("articles", vec![
//!     Document::new("a1", vec![0.1, 0.2, 0.3]).with_text("first").with_metadata(json!({"year": 2024})),
//!     Document::new("a2", vec![0.3, 0.2, 0.1]),
//! ])?;
//! assert_eq!(db.count("articles")?, 2);
//! let docs = db.get("articles", &["a1"])?;
//! assert_eq!(docs[0].as_ref().unwrap().metadata["year"], 2024);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backup;
mod collection;
mod database;
mod embedding;
mod error;
pub mod eval;
pub mod fusion;
pub mod ingest;
mod lexical;
mod options;
mod payload;
mod recovery;
mod replication;
mod rescore_file;
mod search;
pub mod tune;
mod value_pool;

pub use collection::{CompactReport, INDEX_DIR, IndexInfo};
/// The string type of a search hit's document id ([`SearchHit::id`]): ids up to 24 bytes are
/// held inline, so a search lists them without allocating.
pub use compact_str::CompactString;
pub use database::{Database, UpsertResult};
pub use embedding::{DEFAULT_QUERY_INSTRUCTION, EmbedderSettings};
pub use error::{Error, Result};
pub use fusion::{FusionMethod, FusionParams};
pub use latentdb_index::IndexParams;
pub use latentdb_storage::{
    CollectionInfo, CollectionSpec, DataLossReport, Document, Durability, MAX_ID_BYTES, Metric,
    Record, ScrollPage,
};
pub use latentdb_text::{AnalyzerConfig, Bm25Params, LexicalStats, Stopwords};
/// The class of an error ([`Error::kind`]), shared by every latentdb crate.
pub use latentdb_types::ErrorKind;
pub use lexical::{DEFAULT_DEPTH, DEFAULT_FUSION, LexicalOpen, LexicalSettings};
pub use options::{DEFAULT_MAX_LOADED_MODELS, DatabaseOptions};
pub use replication::{ReplicatedOp, ReplicatedOutcome};
pub use search::{HitExplain, MAX_EF, MAX_K, SearchHit, SearchMode, SearchRequest};

/// The built-in embedder, for callers that need its lower-level API.
pub use latentdb_embed as embed;
/// The vector index, for callers that need its lower-level API.
pub use latentdb_index as index;
/// The storage engine, for callers that need its lower-level API.
pub use latentdb_storage as storage;
/// The lexical (BM25) index, for callers that need its lower-level API.
pub use latentdb_text as text;
