//! The lexical index of latentdb: a text [`Analyzer`] (Unicode word segmentation,
//! lower-casing, English stopwords, optional Snowball stemming) and a BM25 inverted index,
//! [`LexicalIndex`], with exact statistics under inserts, replaces and removes and a
//! checksummed on-disk format.
//!
//! ```
//! use latentdb_text::{AnalyzerConfig, Bm25Params, LexicalIndex};
//!
//! let mut index = LexicalIndex::new(AnalyzerConfig::default())?;
//! index.insert(0, "The cat sat on the mat");
//! index.insert(1, "A dog chased the cat, the cat ran");
//! index.insert(2, "Dogs and cats");
//! let hits = index.search("cat", 10, Bm25Params::default(), None);
//! // The default analyzer stems English: "cats" is the term "cat" too.
//! assert_eq!(hits.len(), 3);
//! assert_eq!(hits[0].point, 1); // twice in a short text
//! index.remove(1);
//! assert_eq!(index.search("cat", 10, Bm25Params::default(), None).len(), 2);
//! # Ok::<(), latentdb_text::Error>(())
//! ```

mod analyzer;
mod error;
mod index;
mod params;
mod parse;
mod persist;
mod search;
pub mod stopwords;
pub mod synth;
mod term_key;

pub use analyzer::{Analyzer, AnalyzerConfig, MAX_TOKEN_BYTES, STEMMER_LANGUAGES, Stopwords};
pub use error::{Error, Result};
pub use index::{COMPACT_MIN_SLOTS, LexicalIndex, LexicalStats};
pub use params::{Bm25Params, MAX_K1};
pub use persist::FORMAT_VERSION;
pub use search::LexicalHit;
