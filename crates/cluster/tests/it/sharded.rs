//! A sharded, replicated collection behind the router against a single-process database fed
//! the same operations (issue 14's tests 1, 2 and 5).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use latentdb_server::pb;
use serde_json::json;

use crate::harness::{Cluster, all_records, create};

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.unit()).collect()
    }
}

pub const DIM: usize = 16;

pub fn pb_doc(id: &str, v: &[f32], g: u64) -> pb::Document {
    let serde_json::Value::Object(m) = json!({"g": g}) else {
        unreachable!()
    };
    pb::Document {
        id: id.to_string(),
        text: Some(format!("text of {id}")),
        metadata: Some(latentdb_server::convert::json_to_struct(m)),
        vector: v.to_vec(),
    }
}

fn lib_doc(id: &str, v: &[f32], g: u64) -> latentdb::Document {
    latentdb::Document::new(id, v.to_vec())
        .with_text(format!("text of {id}"))
        .with_metadata(json!({"g": g}))
}

fn filter(g: u64) -> pb::Filter {
    pb::Filter {
        kind: Some(pb::filter::Kind::Json(json!({"g": g}).to_string())),
    }
}

/// Sharded = single node: exact top-10 (and filtered) equal, HNSW recall within 0.005, for
/// a cosine and an L2 collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sharded_search_equals_a_single_node() {
    let Some(cluster) = Cluster::start(3, None).await else {
        return;
    };
    let mut router = cluster.router().await;
    let ref_dir = tempfile::tempdir().unwrap();
    let reference = latentdb::Database::open(ref_dir.path()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = 3000;
    for (name, metric, lib_metric) in [
        ("cos", pb::Metric::Cosine, latentdb::Metric::Cosine),
        ("l2", pb::Metric::L2, latentdb::Metric::L2),
    ] {
        router
            .create_collection(pb::CreateCollectionRequest {
                name: name.into(),
                dimension: DIM as u32,
                metric: metric as i32,
                shards: 4,
                replicas: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        reference
            .create_collection(latentdb::CollectionSpec::new(name, DIM, lib_metric))
            .unwrap();
        let vectors: Vec<Vec<f32>> = (0..n).map(|_| rng.vector(DIM)).collect();
        for start in (0..n).step_by(250) {
            let ids: Vec<String> = (start..start + 250)
                .map(|i| {
                    if i % 7 == 0 {
                        format!("p{}#{}", i / 7, i % 3)
                    } else {
                        format!("d{i}")
                    }
                })
                .collect();
            router
                .upsert(pb::UpsertRequest {
                    collection: name.into(),
                    documents: ids
                        .iter()
                        .enumerate()
                        .map(|(j, id)| pb_doc(id, &vectors[start + j], ((start + j) % 5) as u64))
                        .collect(),
                })
                .await
                .unwrap();
            reference
                .upsert(
                    name,
                    ids.iter()
                        .enumerate()
                        .map(|(j, id)| lib_doc(id, &vectors[start + j], ((start + j) % 5) as u64))
                        .collect(),
                )
                .unwrap();
        }
        assert_eq!(
            router
                .count(pb::CountRequest {
                    collection: name.into()
                })
                .await
                .unwrap()
                .into_inner()
                .count,
            reference.count(name).unwrap()
        );

        let (mut recall_router, mut recall_single) = (0usize, 0usize);
        for q in 0..200 {
            let query = rng.vector(DIM);
            let g = (q % 5) as u64;
            for filtered in [false, true] {
                let mut req = pb::SearchRequest {
                    collection: name.into(),
                    vector: query.clone(),
                    k: 10,
                    exact: true,
                    ..Default::default()
                };
                let mut lib_req = latentdb::SearchRequest::vector(query.clone());
                lib_req.k = 10;
                lib_req.exact = true;
                if filtered {
                    req.filter = Some(filter(g));
                    lib_req.filter = Some(json!({"g": g}));
                }
                let got = router.search(req).await.unwrap().into_inner().hits;
                let want = reference.search(name, &lib_req).unwrap();
                assert_eq!(
                    got.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
                    want.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
                    "{name} query {q} filtered {filtered}"
                );
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (a.score - b.score).abs() <= 1e-6,
                        "{} vs {}",
                        a.score,
                        b.score
                    );
                }
                if filtered {
                    continue;
                }
                // HNSW through the router against HNSW on the single node, both against
                // the exact top 10, at the smallest search breadth (ef = k) so that recall
                // is below 1 and the comparison means something.
                let truth: HashSet<String> = want.iter().map(|h| h.id.to_string()).collect();
                let approx = router
                    .search(pb::SearchRequest {
                        collection: name.into(),
                        vector: query.clone(),
                        k: 10,
                        ef: Some(10),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .hits;
                recall_router += approx.iter().filter(|h| truth.contains(&h.id)).count();
                let mut lib_approx = latentdb::SearchRequest::vector(query.clone());
                lib_approx.k = 10;
                lib_approx.ef = Some(10);
                recall_single += reference
                    .search(name, &lib_approx)
                    .unwrap()
                    .iter()
                    .filter(|h| truth.contains(h.id.as_str()))
                    .count();
            }
        }
        let (r, s) = (recall_router as f64 / 2000.0, recall_single as f64 / 2000.0);
        eprintln!("{name}: HNSW recall@10 through the router {r:.4}, single node {s:.4}");
        assert!(
            r >= s - 0.005,
            "{name}: recall {r} below the single node's {s}"
        );
    }
    cluster.shutdown().await;
}

/// Read-your-writes: each document upserted through the router is found by the next search
/// through the same router.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_search_after_a_write_sees_it() {
    let Some(cluster) = Cluster::start(3, None).await else {
        return;
    };
    let mut router = cluster.router().await;
    create(&mut router, "ryw", DIM, 4, 2).await;
    let mut rng = Rng(7);
    let mut found = 0;
    for i in 0..500 {
        let v = rng.vector(DIM);
        let id = format!("w{i}");
        router
            .upsert(pb::UpsertRequest {
                collection: "ryw".into(),
                documents: vec![pb_doc(&id, &v, 0)],
            })
            .await
            .unwrap();
        let hits = router
            .search(pb::SearchRequest {
                collection: "ryw".into(),
                vector: v,
                k: 3,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .hits;
        found += usize::from(hits.iter().any(|h| h.id == id));
    }
    assert_eq!(found, 500);
    cluster.shutdown().await;
}

/// Both replicas of every shard converge to identical records after upserts, replaces and
/// deletes, and Count is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_converge() {
    let Some(cluster) = Cluster::start(3, None).await else {
        return;
    };
    let mut router = cluster.router().await;
    create(&mut router, "conv", DIM, 4, 2).await;
    let mut rng = Rng(11);
    let started = Instant::now();
    for start in (0..20_000).step_by(500) {
        let docs = (start..start + 500)
            .map(|i| pb_doc(&format!("c{i}"), &rng.vector(DIM), i as u64 % 5))
            .collect();
        router
            .upsert(pb::UpsertRequest {
                collection: "conv".into(),
                documents: docs,
            })
            .await
            .unwrap();
    }
    // 2,000 replaces (new vectors and metadata), then 1,000 deletes, in mixed batches.
    for start in (0..2_000).step_by(200) {
        let docs = (start..start + 200)
            .map(|i| pb_doc(&format!("c{}", i * 7), &rng.vector(DIM), 9))
            .collect();
        router
            .upsert(pb::UpsertRequest {
                collection: "conv".into(),
                documents: docs,
            })
            .await
            .unwrap();
    }
    for start in (0..1_000).step_by(100) {
        let ids = (start..start + 100)
            .map(|i| format!("c{}", i * 13 + 1))
            .collect();
        router
            .delete(pb::DeleteRequest {
                collection: "conv".into(),
                ids,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    eprintln!(
        "23,000 writes through the router in {:?}",
        started.elapsed()
    );
    let count = router
        .count(pb::CountRequest {
            collection: "conv".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count, 19_000);

    // Every replica applies up to its shard's last entry; then both copies are identical.
    let log = latentdb_cluster::JetStreamLog::connect(&cluster.nats_urls, None)
        .await
        .unwrap();
    let c = cluster.record("conv").await;
    for shard in 0..4u32 {
        let last = latentdb_cluster::ShardLog::last_seq(&log, c.uid, shard)
            .await
            .unwrap();
        let name = latentdb_cluster::shard::shard_collection("conv", shard);
        let mut copies = Vec::new();
        for node in &cluster.nodes {
            if !c.assignment[shard as usize].contains(&node.id) {
                continue;
            }
            node.wait_applied(&name, last, Duration::from_secs(30))
                .await;
            let records = all_records(&node.db, &name);
            copies.push(records);
        }
        assert_eq!(copies.len(), 2, "shard {shard} has two replicas");
        assert!(!copies[0].is_empty());
        assert!(
            copies[0] == copies[1],
            "the replicas of shard {shard} differ"
        );
    }
    cluster.shutdown().await;
}

/// A collection dropped and created again under its name through the router starts empty,
/// on its own log, and serves at once (no replica of the old one is taken for the new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_collection_comes_back_empty() {
    let Some(cluster) = Cluster::start(3, None).await else {
        return;
    };
    let mut router = cluster.router().await;
    let mut rng = Rng(31);
    create(&mut router, "again", DIM, 4, 2).await;
    let docs = (0..100)
        .map(|i| pb_doc(&format!("old{i}"), &rng.vector(DIM), 0))
        .collect();
    router
        .upsert(pb::UpsertRequest {
            collection: "again".into(),
            documents: docs,
        })
        .await
        .unwrap();
    let first = cluster.record("again").await.uid;
    router
        .delete_collection(pb::DeleteCollectionRequest {
            name: "again".into(),
        })
        .await
        .unwrap();
    let gone = router
        .count(pb::CountRequest {
            collection: "again".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    create(&mut router, "again", DIM, 4, 2).await;
    assert_ne!(cluster.record("again").await.uid, first);
    let count = |mut r: latentdb_server::pb::latent_db_client::LatentDbClient<_>| async move {
        r.count(pb::CountRequest {
            collection: "again".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .count
    };
    assert_eq!(count(router.clone()).await, 0);
    let v = rng.vector(DIM);
    router
        .upsert(pb::UpsertRequest {
            collection: "again".into(),
            documents: vec![pb_doc("new", &v, 0)],
        })
        .await
        .unwrap();
    assert_eq!(count(router.clone()).await, 1);
    let hits = router
        .search(pb::SearchRequest {
            collection: "again".into(),
            vector: v,
            k: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "new");

    // A data node takes no writes from clients: its copy would differ from the others.
    let mut node = latentdb_server::pb::latent_db_client::LatentDbClient::connect(format!(
        "http://{}",
        cluster.nodes[0].addr
    ))
    .await
    .unwrap();
    let c = cluster.record("again").await;
    let shard = c
        .assignment
        .iter()
        .position(|nodes| nodes.contains(&cluster.nodes[0].id))
        .unwrap() as u32;
    let refused = node
        .upsert(pb::UpsertRequest {
            collection: latentdb_cluster::shard::shard_collection("again", shard),
            documents: vec![pb_doc("direct", &rng.vector(DIM), 0)],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("write through a router"));
    assert_eq!(count(router.clone()).await, 1);
    cluster.shutdown().await;
}
