//! latentdb's storage engine: collections and documents on [sled].
//!
//! A database directory holds a lock file, one sled database and a watermark of acknowledged
//! writes that detects storage damaged behind them (see [`Error::DataLoss`]). Each collection is a sled tree
//! that maps document ids to dense `u32` point ids, point ids to document records, and keeps a
//! change log that the index replays after a restart. Writes to one collection are serialised
//! and atomic; with the default [`Durability::Sync`] they are on disk when they return.
//! The on-disk layout is described in `docs/FORMAT.md`.
//!
//! ```
//! use latentdb_storage::{CollectionSpec, Document, Metric, Storage, StorageOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let storage = Storage::open(dir.path(), StorageOptions::default())?;
//! storage.create_collection(CollectionSpec::new("notes", 2, Metric::Cosine))?;
//! storage.upsert("notes", vec![Document::new("a", vec![0.5, 0.5]).with_text("hello")], None)?;
//! let got = storage.get("notes", &["a", "missing"])?;
//! assert_eq!(got[0].as_ref().map(|r| r.text.as_deref()), Some(Some("hello")));
//! assert!(got[1].is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [sled]: https://docs.rs/sled/0.34

mod applied;
mod collection;
mod document;
mod error;
mod import;
pub mod key;
mod options;
mod read;
pub mod record;
mod snapshot;
mod store;
mod watermark;
mod write;

pub use collection::{
    CollectionConfig, CollectionInfo, CollectionSpec, MAX_DIMENSION, MAX_NAME_LEN, Metric,
    validate_dimension, validate_name,
};
pub use document::{Document, MAX_ID_BYTES, Record, json_kind, validate_id};
pub use error::{Error, MAX_ECHO_CHARS, Result, truncate_echo};
pub use import::ImportSpec;
pub use options::{Durability, StorageOptions, WriteOptions};
pub use record::{Change, MAX_INSERT_RUN, RecordMeta};
pub use snapshot::{Snapshot, SnapshotCollection};
pub use store::{
    DeleteOutcome, FORMAT_VERSION, LOCK_FILE, MAX_SCROLL_PAGE, OLDEST_READABLE_FORMAT, SLED_DIR,
    ScrollPage, Storage, UpsertOutcome,
};
pub use watermark::{DataLossReport, WATERMARK_FILE, WATERMARK_VERSION};
pub use write::OVERLAP_MIN_DOCS;
