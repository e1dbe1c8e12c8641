//! The crate's integration tests, in one binary (one link step instead of one per file).

mod common;
mod concurrent_build;
mod dump_invariants;
mod filter_limits;
mod persist;
mod quantized;
mod recall;
mod search;
