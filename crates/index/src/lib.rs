//! The vector index of latentdb: an HNSW graph with metadata filters, tombstone deletes,
//! online rebuild and a checksummed on-disk format.
//!
//! ```
//! use latentdb_index::{Index, IndexParams, Metric};
//!
//! let index = Index::new(Metric::Cosine, 3, IndexParams::default())?;
//! index.insert_batch(&[(1, &[1.0, 0.0, 0.0][..]), (2, &[0.0, 1.0, 0.0][..]), (3, &[1.0, 1.0, 0.0][..])])?;
//! index.delete(3);
//! let hits = index.search(&[0.9, 0.1, 0.0], 2, None)?;
//! assert_eq!(hits[0].id, 1); // cosine similarity, best first
//! assert!(hits.iter().all(|h| h.id != 3)); // tombstones are never returned
//! # Ok::<(), latentdb_index::Error>(())
//! ```

pub mod bench;
pub mod distance;
mod echo;
mod error;
pub mod filter;
mod graph;
mod huge_pages;
mod index;
mod metric;
pub mod npy;
mod params;
mod parse;
mod persist;
mod pool;
mod prefetch;
mod quant;
pub mod synth;
mod value_set;
mod visited;

pub use error::{Error, Result};
pub use filter::{Condition, Filter, ValueSet};
pub use index::{
    EXACT_SEARCH_FRACTION, EXACT_SEARCH_MIN, Hit, Index, IndexStats, MAX_DIMENSION, StagedBatch,
};
pub use latentdb_types::Metric;
pub use metric::MetricExt;
pub use params::{
    IndexParams, MAX_EF_CONSTRUCTION, MAX_EF_SEARCH, MAX_INITIAL_BYTES, MAX_INITIAL_CAPACITY,
    MAX_M, MAX_OVERSAMPLING, MIN_M, Quantization,
};
pub use persist::{FORMAT_VERSION, QUANTIZED_FORMAT_VERSION};
pub use prefetch::{prefetch, prefetch_ptr};
