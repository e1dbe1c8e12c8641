//! The crate's integration tests, in one binary (one link step instead of one per file).

mod collections;
mod common;
mod crash;
mod eval_minilm;
mod index_persistence;
mod ingest;
mod lock;
mod search;
mod tune;
mod validation;
