//! The crate's integration tests, in one binary (one link step instead of one per file).

mod backup;
mod collections;
mod common;
mod corruption;
mod crash;
mod eval_minilm;
mod hybrid;
mod hybrid_quality;
mod index_persistence;
mod ingest;
mod lock;
mod models;
mod quantization;
mod quarantine;
mod races;
mod replicated;
mod search;
mod tune;
mod validation;
mod write_visibility;
