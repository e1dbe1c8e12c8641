//! latentdb's gRPC service: the whole [`latentdb::Database`] API over tonic.
//!
//! The contract is `proto/latentdb/v1/latentdb.proto` (package `latentdb.v1`); [`pb`] holds the
//! code generated from it (server and client). [`serve`] runs the service with the standard
//! health service and server reflection until a shutdown future completes, then finishes the
//! calls in flight and flushes the database.
//!
//! ```no_run
//! use std::sync::Arc;
//! use latentdb_server::{ServerConfig, serve};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let db = Arc::new(latentdb::Database::open("data")?);
//! let config = ServerConfig::default().api_key("secret");
//! serve(db, config, async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(())
//! # }
//! ```

mod auth;
mod backup;
mod bind;
mod call;
mod codec;
mod config;
pub mod convert;
mod error;
pub mod metrics;
mod search;
mod server;
mod service;

pub use auth::ApiKeyAuth;
pub use config::{DEFAULT_DRAIN_TIMEOUT, Limits, ServerConfig, TlsIdentity};
pub use error::{MAX_STATUS_MESSAGE_BYTES, ServeError, ServiceError, code};
pub use metrics::{install_metrics_recorder, resident_memory_bytes};
pub use server::{
    PreparedServer, install_crypto_provider, prepare, serve, serve_with_listener, shutdown_signal,
};
pub use service::{LatentDbService, instruction};

/// Code generated from `proto/latentdb/v1/latentdb.proto`: messages, the server trait and
/// the client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("latentdb.v1");
    include!(concat!(env!("OUT_DIR"), "/codec_sides.rs"));

    /// The encoded `FileDescriptorSet` of the proto (with its imports), as served by
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/latentdb_descriptor.bin"));
}
