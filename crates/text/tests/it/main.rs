//! Integration tests of latentdb-text: BM25 parity with a reference implementation on the
//! spamassassin-subjects dataset, persistence, and (ignored) retrieval quality.

mod common;
mod model;
mod parity;
mod persist;
mod quality;
