//! The cluster's metadata in etcd: its key layout, and the records stored under it.
//!
//! | key | value | lifetime |
//! |---|---|---|
//! | `/latentdb/nodes/{node}` | [`NodeInfo`] | bound to the node's lease: gone when the node dies |
//! | `/latentdb/collections/{name}` | [`ClusterCollection`] (the shard map, with its epoch) | until the collection is dropped |
//! | `/latentdb/replicas/{name}/{shard}/{node}` | [`ReplicaStatus`] | bound to the node's lease |
//!
//! Every value is JSON. Changes to a collection's record are transactions on its modification
//! revision ([`crate::etcd::Etcd::update`]) that bump its `epoch`: two writers cannot both
//! succeed on the same version (fencing).

use serde::{Deserialize, Serialize};

use latentdb::CollectionSpec;

use crate::error::{Error, Result};
use crate::etcd::Etcd;

/// The root of every key the cluster writes.
pub const ROOT: &str = "/latentdb/";

/// The most shards a collection may have.
pub const MAX_SHARDS: u32 = 256;

/// The longest name of a cluster collection: the shards' local names add `.s{n}` to it and
/// must stay within a collection name's 128 characters.
pub const MAX_CLUSTER_NAME_LEN: usize = 120;

/// A data node, as it announces itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node's id (`--node-id`).
    pub node_id: String,
    /// Where it serves latentdb.v1 and the cluster's Node service (`host:port`).
    pub addr: String,
}

/// A sharded, replicated collection: its settings and its shard map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterCollection {
    /// The spec each shard's local collection is created with (no embedder: replicas never
    /// embed).
    pub spec: CollectionSpec,
    /// The model the router embeds texts with (`None`: a vectors-only collection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The cluster-wide id: names the collection's stream and subjects, so that a collection
    /// dropped and created again under the same name never reads the old one's log.
    pub uid: u64,
    /// Number of shards (fixed at creation).
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Bumped on every change of this record.
    pub epoch: u64,
    /// `assignment[s]`: the nodes holding shard `s`.
    pub assignment: Vec<Vec<String>>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// A replica's progress, as its node reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The last stream sequence applied.
    pub applied_seq: u64,
    /// True once the replica's local collection exists and its consumer runs: it may serve.
    pub ready: bool,
}

/// The key of node `node`.
pub fn node_key(node: &str) -> String {
    format!("{ROOT}nodes/{node}")
}

/// The key of collection `name`.
pub fn collection_key(name: &str) -> String {
    format!("{ROOT}collections/{name}")
}

/// The key of the status of `node`'s replica of shard `shard` of `name`.
pub fn replica_key(name: &str, shard: u32, node: &str) -> String {
    format!("{ROOT}replicas/{name}/{shard}/{node}")
}

/// The prefix of every replica status of `name`.
pub fn replicas_prefix(name: &str) -> String {
    format!("{ROOT}replicas/{name}/")
}

fn decode<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// JSON bytes of a metadata record.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // These records hold only strings, numbers and JSON values: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The live data nodes, by id.
pub async fn nodes(etcd: &Etcd) -> Result<Vec<NodeInfo>> {
    let kvs = etcd.get_prefix(&format!("{ROOT}nodes/")).await?;
    kvs.iter()
        .map(|kv| decode("node record", &kv.value))
        .collect()
}

/// Every collection, by name, with its record's modification revision.
pub async fn collections(etcd: &Etcd) -> Result<Vec<(ClusterCollection, i64)>> {
    let kvs = etcd.get_prefix(&format!("{ROOT}collections/")).await?;
    kvs.iter()
        .map(|kv| Ok((decode("collection record", &kv.value)?, kv.mod_revision)))
        .collect()
}

/// Collection `name`, with its record's modification revision.
pub async fn collection(etcd: &Etcd, name: &str) -> Result<Option<(ClusterCollection, i64)>> {
    match etcd.get(&collection_key(name)).await? {
        Some(kv) => Ok(Some((
            decode("collection record", &kv.value)?,
            kv.mod_revision,
        ))),
        None => Ok(None),
    }
}

/// The replica statuses of `name`: `(shard, node, status)`.
pub async fn replica_statuses(
    etcd: &Etcd,
    name: &str,
) -> Result<Vec<(u32, String, ReplicaStatus)>> {
    let prefix = replicas_prefix(name);
    let kvs = etcd.get_prefix(&prefix).await?;
    let mut out = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let key = String::from_utf8_lossy(&kv.key);
        let rest = key.strip_prefix(&prefix).unwrap_or_default();
        let Some((shard, node)) = rest.split_once('/') else {
            continue;
        };
        let Ok(shard) = shard.parse() else {
            continue;
        };
        out.push((
            shard,
            node.to_string(),
            decode("replica status", &kv.value)?,
        ));
    }
    Ok(out)
}

/// Which nodes hold each of `shards` shards with `replicas` replicas each, over `nodes`
/// (sorted ids): shard `s`'s replicas are the `replicas` nodes from position `s` on, round
/// the ring, so that replicas of a shard are on distinct nodes and shards spread evenly.
pub fn assign(nodes: &[String], shards: u32, replicas: u32) -> Result<Vec<Vec<String>>> {
    let n = nodes.len();
    if (replicas as usize) > n || replicas == 0 {
        return Err(Error::FailedPrecondition(format!(
            "{replicas} replicas per shard need as many live data nodes; the cluster has {n}"
        )));
    }
    Ok((0..shards as usize)
        .map(|s| {
            (0..replicas as usize)
                .map(|r| nodes[(s + r) % n].clone())
                .collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_of_a_shard_are_on_distinct_nodes() {
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let map = assign(&nodes, 4, 2).unwrap();
        assert_eq!(map.len(), 4);
        for replicas in &map {
            assert_eq!(replicas.len(), 2);
            assert_ne!(replicas[0], replicas[1]);
        }
        let per_node = |n: &str| map.iter().flatten().filter(|x| *x == n).count();
        assert_eq!(per_node("a") + per_node("b") + per_node("c"), 8);
        assert!(["a", "b", "c"].iter().all(|n| per_node(n) >= 2));
        assert!(assign(&nodes, 4, 4).is_err());
        assert!(assign(&nodes, 4, 0).is_err());
    }

    #[test]
    fn records_round_trip() {
        let c = ClusterCollection {
            spec: CollectionSpec::new("x", 3, latentdb::Metric::L2),
            model: Some("default".into()),
            uid: 7,
            shards: 2,
            replicas: 1,
            epoch: 1,
            assignment: vec![vec!["a".into()], vec!["b".into()]],
            created_ms: 5,
        };
        let back: ClusterCollection = decode("c", &encode(&c)).unwrap();
        assert_eq!(back, c);
        assert!(decode::<ClusterCollection>("c", b"{").is_err());
    }
}
