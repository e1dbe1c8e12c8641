//! The crate's integration tests, in one binary (one link step instead of one per file).

mod backup;
mod bench_ingest;
mod bench_open;
mod cli_documents;
mod cli_embed;
mod eval_fusion;
mod hybrid;
mod otlp;
mod quantization;
mod safety;
mod search;
mod serve_crash;
