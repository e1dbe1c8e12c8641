//! The router's view of the cluster: live nodes, collections with their shard maps, and each
//! replica's progress, read from etcd every [`REFRESH_EVERY`], plus gRPC clients per node.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use latentdb_server::pb::latent_db_client::LatentDbClient;
use parking_lot::{Mutex, RwLock};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::etcd::Etcd;
use crate::metadata::{self, ClusterCollection, ReplicaStatus};
use crate::pb::cluster::node_client::NodeClient;

/// How often the view is read again from etcd.
pub const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// A snapshot of the cluster's metadata.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Live nodes: id → address.
    pub nodes: HashMap<String, String>,
    /// Collections by name, with their record's modification revision.
    pub collections: HashMap<String, (ClusterCollection, i64)>,
    /// collection → shard → node → status (looked up by `&str` on every read: no key is
    /// built per call).
    pub replicas: HashMap<String, HashMap<u32, HashMap<String, ReplicaStatus>>>,
}

impl Snapshot {
    /// The replicas of `shard` of `c` that may serve now (live node, ready), as
    /// `(node, address)`.
    pub fn serving(&self, c: &ClusterCollection, shard: u32) -> Vec<(String, String)> {
        let Some(nodes) = c.assignment.get(shard as usize) else {
            return Vec::new();
        };
        let statuses = self
            .replicas
            .get(&c.spec.name)
            .and_then(|shards| shards.get(&shard));
        nodes
            .iter()
            .filter(|n| {
                statuses
                    .and_then(|st| st.get(n.as_str()))
                    .is_some_and(|s| s.ready)
            })
            .filter_map(|n| self.nodes.get(n).map(|a| (n.clone(), a.clone())))
            .collect()
    }
}

/// The view, its refresher's etcd connection and the node clients.
pub struct View {
    etcd: Etcd,
    snapshot: RwLock<Arc<Snapshot>>,
    channels: Mutex<HashMap<String, Channel>>,
    turn: AtomicUsize,
    /// One refresh at a time, so that an older read never replaces a newer one.
    refreshing: tokio::sync::Mutex<()>,
}

impl View {
    /// A view that reads etcd through `etcd`; empty until [`View::refresh`].
    pub fn new(etcd: Etcd) -> View {
        View {
            etcd,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            channels: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    /// The etcd connection.
    pub fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read())
    }

    /// Reads the metadata again.
    pub async fn refresh(&self) -> Result<()> {
        let _one = self.refreshing.lock().await;
        let nodes = metadata::nodes(&self.etcd).await?;
        let collections = metadata::collections(&self.etcd).await?;
        let statuses = self
            .etcd
            .get_prefix(&format!("{}replicas/", metadata::ROOT))
            .await?;
        let mut snap = Snapshot {
            nodes: nodes.into_iter().map(|n| (n.node_id, n.addr)).collect(),
            collections: collections
                .into_iter()
                .map(|(c, rev)| (c.spec.name.clone(), (c, rev)))
                .collect(),
            replicas: HashMap::new(),
        };
        let prefix = format!("{}replicas/", metadata::ROOT);
        for kv in statuses {
            let key = String::from_utf8_lossy(&kv.key);
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            // {collection}/{shard}/{node}; collection names hold no '/'.
            let mut parts = rest.splitn(3, '/');
            let (Some(c), Some(s), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(shard), Ok(status)) = (
                s.parse::<u32>(),
                serde_json::from_slice::<ReplicaStatus>(&kv.value),
            ) else {
                continue;
            };
            snap.replicas
                .entry(c.to_string())
                .or_default()
                .entry(shard)
                .or_default()
                .insert(n.to_string(), status);
        }
        *self.snapshot.write() = Arc::new(snap);
        Ok(())
    }

    /// Refreshes the view every [`REFRESH_EVERY`], forever.
    pub async fn refresh_forever(self: Arc<Self>) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot read the cluster's metadata");
            }
            tokio::time::sleep(REFRESH_EVERY).await;
        }
    }

    /// A number that rotates which replica serves a read first.
    pub fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }

    fn channel(&self, addr: &str) -> Result<Channel> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Error::Internal(format!("node address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let c = ep.connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// A latentdb.v1 client for the node at `addr`.
    pub fn client(&self, addr: &str) -> Result<LatentDbClient<Channel>> {
        Ok(LatentDbClient::new(self.channel(addr)?)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20))
    }

    /// A Node-service client for the node at `addr`.
    pub fn node_client(&self, addr: &str) -> Result<NodeClient<Channel>> {
        Ok(NodeClient::new(self.channel(addr)?))
    }
}
