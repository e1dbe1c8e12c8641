//! A data node: the replicas of the shards assigned to it, kept in step with the write log.
//!
//! The node serves latentdb.v1 over its local database (the router reads shards through it)
//! and the cluster's Node service beside it, announces itself in etcd under a lease (gone
//! within about 2 s of its death), and runs a reconciler that follows the shard map: for each
//! shard replica assigned to it, a local collection `{collection}.s{shard}` and a consumer
//! that applies the shard's log entries in order, exactly once
//! ([`latentdb::Database::apply_replicated`]). It reports each replica's applied sequence in
//! etcd for the router.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use latentdb::{Database, ReplicatedOp};
use latentdb_server::ServerConfig;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::etcd::Etcd;
use crate::log::{JetStreamLog, ShardLog};
use crate::metadata::{self, ClusterCollection, NodeInfo, ReplicaStatus};
use crate::pb::cluster::node_server::{Node as NodeRpc, NodeServer};
use crate::pb::cluster::{WaitAppliedRequest, WaitAppliedResponse};
use crate::shard::shard_collection;

/// The lease TTL a node asks for, in seconds (etcd grants at least 2 s).
const LEASE_TTL_S: i64 = 1;
/// How often the lease is refreshed.
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(300);
/// How often the shard map is read and replica statuses are written.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);
/// How long a failed consumer waits before reading the log again.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// The file (in the data directory) that records which cluster collection (by uid) each
/// local shard collection belongs to.
const REPLICAS_FILE: &str = "cluster-replicas.json";

/// How a data node is started (`latentdb serve --cluster`).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's id, unique in the cluster.
    pub node_id: String,
    /// etcd endpoints, comma-separated.
    pub etcd: String,
    /// NATS urls, comma-separated.
    pub nats: String,
    /// The address announced to routers (default: the bound address).
    pub advertise: Option<String>,
    /// The data directory (for the replicas file).
    pub data_dir: PathBuf,
    /// The gRPC server's settings.
    pub server: ServerConfig,
}

/// One replica the node runs.
struct Replica {
    uid: u64,
    applied: watch::Sender<u64>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

/// What the node's tasks share.
struct Shared {
    db: Arc<Database>,
    replicas: Mutex<HashMap<String, Replica>>,
}

/// The Node service (WaitApplied).
#[derive(Clone)]
struct NodeService {
    shared: Arc<Shared>,
}

#[tonic::async_trait]
impl NodeRpc for NodeService {
    async fn wait_applied(
        &self,
        request: tonic::Request<WaitAppliedRequest>,
    ) -> std::result::Result<tonic::Response<WaitAppliedResponse>, tonic::Status> {
        let req = request.into_inner();
        let mut rx = {
            let replicas = self.shared.replicas.lock();
            match replicas.get(&req.shard_collection) {
                Some(r) => r.applied.subscribe(),
                None => {
                    return Err(tonic::Status::not_found(format!(
                        "this node holds no replica {:?}",
                        req.shard_collection
                    )));
                }
            }
        };
        let timeout = Duration::from_millis(u64::from(req.timeout_ms.min(30_000)));
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| *v >= req.seq)).await;
        let applied_seq = *rx.borrow();
        Ok(tonic::Response::new(WaitAppliedResponse { applied_seq }))
    }
}

/// Runs a data node on `listener` until `shutdown` completes: serves, registers, follows the
/// shard map and applies the log. On shutdown it revokes its lease (routers stop sending it
/// reads at once), stops its consumers and finishes as `latentdb serve` does.
pub async fn run_node(
    db: Arc<Database>,
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let etcd = Etcd::connect(&config.etcd)?;
    let log: Arc<dyn ShardLog> = Arc::new(JetStreamLog::connect(&config.nats, None).await?);
    let shared = Arc::new(Shared {
        db: Arc::clone(&db),
        replicas: Mutex::new(HashMap::new()),
    });
    // Replicas change only through the log: a client writing to a node directly would make
    // its copy differ from the others.
    let mut server_config = config.server.clone();
    server_config.read_only = Some(format!(
        "{} is a cluster data node: its collections change only through the write log; \
         write through a router (latentdb router)",
        config.node_id
    ));
    let server = latentdb_server::prepare(Arc::clone(&db), server_config, listener)
        .await
        .map_err(|e| Error::Internal(format!("cannot start the server: {e}")))?
        .with_service(NodeServer::new(NodeService {
            shared: Arc::clone(&shared),
        }));

    let info = NodeInfo {
        node_id: config.node_id.clone(),
        addr: config.advertise.clone().unwrap_or_else(|| addr.to_string()),
    };
    // etcd started together with the node may not answer yet: retry for a while.
    let deadline = tokio::time::Instant::now() + crate::log::CONNECT_PATIENCE;
    let first = loop {
        match register(&etcd, &info).await {
            Ok(lease) => break lease,
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(RETRY_AFTER).await,
        }
    };
    let lease = Arc::new(AtomicI64::new(first));
    tracing::info!(node = %info.node_id, addr = %info.addr, "data node registered");

    let keeper = tokio::spawn(keep_registered(
        etcd.clone(),
        info.clone(),
        Arc::clone(&lease),
    ));
    let reconciler = tokio::spawn(reconcile_forever(
        etcd.clone(),
        Arc::clone(&log),
        Arc::clone(&shared),
        config.clone(),
        Arc::clone(&lease),
    ));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let etcd_for_stop = etcd.clone();
    let lease_for_stop = Arc::clone(&lease);
    let shared_for_stop = Arc::clone(&shared);
    let signal = async move {
        shutdown.await;
        keeper.abort();
        reconciler.abort();
        for (_, r) in shared_for_stop.replicas.lock().drain() {
            r.task.abort();
        }
        let _ = etcd_for_stop
            .revoke(lease_for_stop.load(Ordering::Acquire))
            .await;
        let _ = stop_tx.send(());
    };
    let served = server
        .serve(async move {
            signal.await;
        })
        .await;
    drop(stop_rx);
    served.map_err(|e| Error::Internal(format!("server: {e}")))
}

/// Grants a lease and writes the node's record under it; returns the lease.
async fn register(etcd: &Etcd, info: &NodeInfo) -> Result<i64> {
    let lease = etcd.grant(LEASE_TTL_S).await?;
    etcd.put(
        &metadata::node_key(&info.node_id),
        metadata::encode(info),
        lease,
    )
    .await?;
    Ok(lease)
}

/// Keeps the node's lease alive; when it is lost (etcd unreachable for longer than the TTL),
/// registers again under a new lease (the replica statuses follow at the next reconcile).
async fn keep_registered(etcd: Etcd, info: NodeInfo, lease: Arc<AtomicI64>) {
    loop {
        let why = etcd
            .keep_alive(lease.load(Ordering::Acquire), KEEP_ALIVE_EVERY)
            .await;
        tracing::warn!(error = %why, "lost the node's etcd lease: registering again");
        loop {
            match register(&etcd, &info).await {
                Ok(new) => {
                    lease.store(new, Ordering::Release);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot register in etcd");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        }
    }
}

/// The uid each local shard collection belongs to (the replicas file).
fn read_replicas_file(dir: &std::path::Path) -> HashMap<String, u64> {
    std::fs::read(dir.join(REPLICAS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_replicas_file(dir: &std::path::Path, map: &HashMap<String, u64>) -> Result<()> {
    let tmp = dir.join(format!("{REPLICAS_FILE}.tmp"));
    let bytes = serde_json::to_vec(map).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, dir.join(REPLICAS_FILE)))
        .map_err(|e| Error::Internal(format!("cannot write {REPLICAS_FILE}: {e}")))
}

/// The collection and shard of a local shard collection name (`{collection}.s{shard}`).
fn split_shard_name(name: &str) -> Option<(String, u32)> {
    let (coll, shard) = name.rsplit_once(".s")?;
    Some((coll.to_string(), shard.parse().ok()?))
}

/// Is `name` a local shard collection name (`….s{digits}`)?
fn is_shard_name(name: &str) -> bool {
    name.rsplit_once(".s").is_some_and(|(base, n)| {
        !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

async fn reconcile_forever(
    etcd: Etcd,
    log: Arc<dyn ShardLog>,
    shared: Arc<Shared>,
    config: NodeConfig,
    lease: Arc<AtomicI64>,
) {
    let mut reported: HashMap<String, ReplicaStatus> = HashMap::new();
    let mut reported_lease = 0;
    loop {
        if let Err(e) = reconcile(&etcd, &log, &shared, &config).await {
            tracing::warn!(error = %e, "reconcile failed");
        }
        // Replica statuses, under the current lease; all again after a new registration.
        let lease_now = lease.load(Ordering::Acquire);
        if lease_now != reported_lease {
            reported.clear();
            reported_lease = lease_now;
        }
        let statuses: Vec<(String, ReplicaStatus)> = shared
            .replicas
            .lock()
            .iter()
            .map(|(name, r)| {
                (
                    name.clone(),
                    ReplicaStatus {
                        applied_seq: *r.applied.borrow(),
                        ready: r.ready.load(Ordering::Acquire),
                    },
                )
            })
            .collect();
        // Replicas stopped since (a dropped collection): their statuses go too, so that a
        // collection created again under the name never looks served before it is.
        let gone: Vec<String> = reported
            .keys()
            .filter(|name| !statuses.iter().any(|(n, _)| n == *name))
            .cloned()
            .collect();
        for name in gone {
            if let Some((coll, shard)) = split_shard_name(&name)
                && etcd
                    .delete(&metadata::replica_key(&coll, shard, &config.node_id))
                    .await
                    .is_err()
            {
                continue;
            }
            reported.remove(&name);
        }
        for (name, status) in statuses {
            if reported.get(&name) == Some(&status) {
                continue;
            }
            let Some((coll, shard)) = split_shard_name(&name) else {
                continue;
            };
            let key = metadata::replica_key(&coll, shard, &config.node_id);
            if etcd
                .put(&key, metadata::encode(&status), lease_now)
                .await
                .is_ok()
            {
                reported.insert(name, status);
            }
        }
        tokio::time::sleep(RECONCILE_EVERY).await;
    }
}

/// One pass: start the replicas the shard map assigns to this node, stop (and drop) the
/// ones it no longer does.
async fn reconcile(
    etcd: &Etcd,
    log: &Arc<dyn ShardLog>,
    shared: &Arc<Shared>,
    config: &NodeConfig,
) -> Result<()> {
    let collections = metadata::collections(etcd).await?;
    let mut wanted: HashMap<String, (ClusterCollection, u32)> = HashMap::new();
    for (c, _) in collections {
        for (shard, nodes) in c.assignment.iter().enumerate() {
            if nodes.contains(&config.node_id) {
                wanted.insert(
                    shard_collection(&c.spec.name, shard as u32),
                    (c.clone(), shard as u32),
                );
            }
        }
    }
    let db = Arc::clone(&shared.db);
    let dir = config.data_dir.clone();
    // Stop the replicas no longer wanted (or of a collection created again since).
    let stale: Vec<String> = shared
        .replicas
        .lock()
        .iter()
        .filter(|(name, r)| wanted.get(*name).is_none_or(|(c, _)| c.uid != r.uid))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &stale {
        if let Some(r) = shared.replicas.lock().remove(name) {
            r.task.abort();
        }
    }
    // Local shard collections that no wanted replica (of the same uid) owns: dropped.
    let wanted_uids: HashMap<String, u64> = wanted
        .iter()
        .map(|(n, (c, _))| (n.clone(), c.uid))
        .collect();
    let to_create: Vec<(String, ClusterCollection, u32)> = wanted
        .iter()
        .filter(|(name, _)| !shared.replicas.lock().contains_key(*name))
        .map(|(name, (c, s))| (name.clone(), c.clone(), *s))
        .collect();
    let created =
        tokio::task::spawn_blocking(move || -> Result<Vec<(String, ClusterCollection, u32)>> {
            let mut owners = read_replicas_file(&dir);
            let mut changed = false;
            for info in db.list_collections() {
                if !is_shard_name(&info.name) {
                    continue;
                }
                let owned = owners.get(&info.name).copied();
                if owned.is_none() || owned != wanted_uids.get(&info.name).copied() {
                    db.drop_collection(&info.name)?;
                    owners.remove(&info.name);
                    changed = true;
                }
            }
            let mut ready = Vec::new();
            for (name, c, shard) in to_create {
                if db.collection_info(&name).is_err() {
                    let mut spec = c.spec.clone();
                    spec.name = name.clone();
                    db.create_collection(spec)?;
                    owners.insert(name.clone(), c.uid);
                    changed = true;
                }
                ready.push((name, c, shard));
            }
            if changed {
                write_replicas_file(&dir, &owners)?;
            }
            Ok(ready)
        })
        .await
        .map_err(|e| Error::Internal(format!("reconcile task: {e}")))??;

    for (name, c, shard) in created {
        let applied = shared.db.applied_seq(&name)?;
        let (tx, _) = watch::channel(applied);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(consume(
            Arc::clone(&shared.db),
            Arc::clone(log),
            name.clone(),
            c.uid,
            shard,
            tx.clone(),
            Arc::clone(&ready),
        ));
        shared.replicas.lock().insert(
            name,
            Replica {
                uid: c.uid,
                applied: tx,
                ready,
                task,
            },
        );
    }
    Ok(())
}

/// Applies shard `shard`'s log to the local collection `name`, in order, exactly once, for
/// as long as the task runs: after a failure it reads the log again from what is applied.
async fn consume(
    db: Arc<Database>,
    log: Arc<dyn ShardLog>,
    name: String,
    uid: u64,
    shard: u32,
    applied: watch::Sender<u64>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let db2 = Arc::clone(&db);
        let name2 = name.clone();
        let after = match tokio::task::spawn_blocking(move || db2.applied_seq(&name2)).await {
            Ok(Ok(seq)) => seq,
            other => {
                tracing::warn!(replica = %name, ?other, "cannot read the applied sequence");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        applied.send_replace(after);
        let mut entries = match log.read(uid, shard, after).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(replica = %name, error = %e, "cannot read the log yet");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        ready.store(true, Ordering::Release);
        let mut last = after;
        while let Some(entry) = entries.next().await {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(replica = %name, error = %e, "reading the log failed");
                    break;
                }
            };
            if entry.seq <= last {
                continue;
            }
            let op = crate::op::decode(&entry.payload).unwrap_or_else(|e| {
                // Every replica sees the same bytes: each skips the entry the same way.
                tracing::error!(replica = %name, seq = entry.seq, error = %e, "skipping a log entry that does not decode");
                ReplicatedOp::Upsert(Vec::new())
            });
            let db2 = Arc::clone(&db);
            let name2 = name.clone();
            let seq = entry.seq;
            match tokio::task::spawn_blocking(move || db2.apply_replicated(&name2, seq, op)).await {
                Ok(Ok(outcome)) => {
                    if let latentdb::ReplicatedOutcome::Rejected(why) = outcome {
                        tracing::warn!(replica = %name, seq, %why, "log entry rejected");
                    }
                    last = seq;
                    applied.send_replace(seq);
                }
                other => {
                    tracing::warn!(replica = %name, seq, ?other, "applying a log entry failed");
                    break;
                }
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::is_shard_name;

    #[test]
    fn shard_names() {
        assert!(is_shard_name("docs.s0"));
        assert!(is_shard_name("a.b.s12"));
        assert!(!is_shard_name("docs"));
        assert!(!is_shard_name(".s1"));
        assert!(!is_shard_name("docs.s"));
        assert!(!is_shard_name("docs.sx"));
    }
}
