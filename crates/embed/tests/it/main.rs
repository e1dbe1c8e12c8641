//! The crate's integration tests, in one binary (one link step instead of one per file).

mod common;
mod errors;
mod fetch;
mod head;
mod minilm;
mod nvembed_tiny;
mod nvembed_v2_config;
mod tasks;
