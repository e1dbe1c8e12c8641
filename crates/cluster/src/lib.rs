//! latentdb as a cluster: collections split into shards, each shard replicated on data nodes,
//! behind a router that serves the public latentdb.v1 API unchanged.
//!
//! The cluster stands on existing engines, not on a protocol of its own:
//! - **etcd** holds membership (node records bound to leases), each collection's settings and
//!   shard map (updated by transactions on its revision), and each replica's progress
//!   ([`metadata`]);
//! - **NATS JetStream** is the write log ([`log`]): one replicated stream per collection, one
//!   subject per shard; a write through the router is one atomic batch across the shards it
//!   touches.
//!
//! The [`router`] validates a write once, gives ids once, embeds texts once, and appends it;
//! the data [`node`]s apply their shards' entries in order, exactly once
//! ([`latentdb::Database::apply_replicated`]), and serve reads. Embedded users are unaffected:
//! the `latentdb` library does not depend on this crate.
//!
//! ```
//! use latentdb_cluster::shard::{shard_collection, shard_of};
//! // A document's chunks live on their parent's shard.
//! assert_eq!(shard_of("report-7#3", 4), shard_of("report-7", 4));
//! assert_eq!(shard_collection("docs", 2), "docs.s2");
//! ```

mod error;
pub mod etcd;
pub mod log;
mod merge;
pub mod metadata;
pub mod node;
mod op;
pub mod router;
pub mod shard;
pub mod view;

pub use error::{Error, Result};
pub use log::{JetStreamLog, ShardLog};
pub use node::{NodeConfig, run_node};
pub use router::RouterService;

/// Code generated from the cluster's proto and from the subset of etcd's API it calls.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    /// `latentdb.cluster.v1`: log entries and the Node service.
    pub mod cluster {
        tonic::include_proto!("latentdb.cluster.v1");
    }
    /// `etcdserverpb`: etcd's KV and Lease services.
    pub mod etcd {
        tonic::include_proto!("etcdserverpb");
    }
}

/// Runs a router on `listener` until `shutdown` completes: connects to etcd and NATS, keeps
/// its view of the cluster fresh, and serves latentdb.v1 (with health) in front of it.
pub async fn run_router(
    etcd: &str,
    nats: &str,
    embedder: Option<(String, std::sync::Arc<latentdb::embed::Embedder>)>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<()> {
    let etcd = etcd::Etcd::connect(etcd)?;
    let log: std::sync::Arc<dyn ShardLog> =
        std::sync::Arc::new(JetStreamLog::connect(nats, None).await?);
    let view = std::sync::Arc::new(view::View::new(etcd));
    view.refresh().await?;
    let refresher = tokio::spawn(std::sync::Arc::clone(&view).refresh_forever());
    let (model, embedder) = match embedder {
        Some((m, e)) => (Some(m), Some(e)),
        None => (None, None),
    };
    let service = RouterService::new(view, log, embedder, model);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(
            latentdb_server::pb::latent_db_server::LatentDbServer::new(service)
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    refresher.abort();
    served.map_err(|e| Error::Internal(format!("router server: {e}")))
}
