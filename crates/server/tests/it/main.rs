//! The crate's integration tests, in one binary (one link step instead of one per file).

mod backup;
mod common;
mod contract;
mod grpc;
mod hybrid;
mod metrics;
mod services;
mod streams;
mod tls;
