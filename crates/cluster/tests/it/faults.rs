//! Failures under load (issue 14's tests 4, 6, 7 and 8): a router, a data node and the NATS
//! server leading the stream are SIGKILLed while writes and queries run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use latentdb_cluster::ShardLog;
use latentdb_cluster::shard::{shard_collection, shard_of};
use latentdb_server::pb::{self, latent_db_client::LatentDbClient};
use parking_lot::Mutex;

use crate::harness::{Cluster, RecordBits, all_records, create, free_port};
use crate::sharded::{DIM, Rng, pb_doc};

/// Waits until, for every shard, every replica reports the shard's last log sequence applied.
async fn wait_caught_up(cluster: &Cluster, name: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let c = cluster.record(name).await;
    let log = latentdb_cluster::JetStreamLog::connect(&cluster.nats_urls, None)
        .await
        .unwrap();
    let etcd = latentdb_cluster::etcd::Etcd::connect(&cluster.etcd_url).unwrap();
    loop {
        let statuses = latentdb_cluster::metadata::replica_statuses(&etcd, name)
            .await
            .unwrap();
        let mut all = true;
        for shard in 0..c.shards {
            let last = log.last_seq(c.uid, shard).await.unwrap();
            for node in &c.assignment[shard as usize] {
                let applied = statuses
                    .iter()
                    .find(|(s, n, _)| *s == shard && n == node)
                    .map_or(0, |(_, _, st)| st.applied_seq);
                all &= applied >= last;
            }
        }
        if all {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "replicas of {name} did not catch up within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every replica's records of `name`, read from the nodes' databases once they are stopped:
/// `shard -> [(node, records)]`.
type Copies = HashMap<u32, Vec<(String, Vec<RecordBits>)>>;

fn replica_copies(cluster: &Cluster, c: &latentdb_cluster::metadata::ClusterCollection) -> Copies {
    let mut out: Copies = HashMap::new();
    for (shard, nodes) in c.assignment.iter().enumerate() {
        for node in nodes {
            let db = latentdb::Database::open(cluster.node_dir(node)).unwrap();
            let name = shard_collection(&c.spec.name, shard as u32);
            let records = all_records(&db, &name);
            out.entry(shard as u32)
                .or_default()
                .push((node.clone(), records));
        }
    }
    out
}

/// Tests 6 and 7: a data node SIGKILLed under a writer and a query loop: no acknowledged
/// document lost, no query failed (each retried on the other replica), the node out of
/// serving within 3 s; restarted, it catches up within 10 s and both replicas of each shard
/// end identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_loses_nothing_and_catches_up() {
    let Some(mut cluster) = Cluster::servers_only().await else {
        return;
    };
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    for (i, port) in ports.iter().enumerate() {
        cluster.spawn_node(&format!("node{i}"), *port).await;
    }
    cluster.start_router(None).await;
    let mut router = cluster.router().await;
    create(&mut router, "ha", DIM, 4, 2).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let (queries, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let writer = {
        let (mut router, stop, acked) = (router.clone(), Arc::clone(&stop), Arc::clone(&acked));
        tokio::spawn(async move {
            let mut rng = Rng(3);
            let mut b = 0;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..10).map(|j| format!("h{b}-{j}")).collect();
                let docs = ids
                    .iter()
                    .map(|id| pb_doc(id, &rng.vector(DIM), 0))
                    .collect();
                if router
                    .upsert(pb::UpsertRequest {
                        collection: "ha".into(),
                        documents: docs,
                    })
                    .await
                    .is_ok()
                {
                    acked.lock().extend(ids);
                }
                b += 1;
            }
        })
    };
    let reader = {
        let (mut router, stop) = (router.clone(), Arc::clone(&stop));
        let (queries, failed) = (Arc::clone(&queries), Arc::clone(&failed));
        tokio::spawn(async move {
            let mut rng = Rng(5);
            while !stop.load(Ordering::Relaxed) {
                let r = router
                    .search(pb::SearchRequest {
                        collection: "ha".into(),
                        vector: rng.vector(DIM),
                        k: 5,
                        ..Default::default()
                    })
                    .await;
                queries.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = r {
                    eprintln!("query failed: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let etcd = latentdb_cluster::etcd::Etcd::connect(&cluster.etcd_url).unwrap();
    cluster.kill_child("node1");
    let killed = Instant::now();
    while etcd
        .get(&latentdb_cluster::metadata::node_key("node1"))
        .await
        .unwrap()
        .is_some()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dropped = killed.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    reader.await.unwrap();
    let (queries, failed) = (
        queries.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let acked: Vec<String> = acked.lock().clone();
    eprintln!(
        "node1 out of serving {dropped:?} after its SIGKILL; {} documents acknowledged, {queries} \
         queries, {failed} failed",
        acked.len()
    );
    assert!(
        dropped <= Duration::from_secs(3),
        "dropped after {dropped:?}"
    );
    assert_eq!(failed, 0);
    assert!(queries > 0 && acked.len() > 100);

    // Test 7: the node restarts on its data and catches up.
    cluster.spawn_node("node1", ports[1]).await;
    let caught_up = wait_caught_up(&cluster, "ha", Duration::from_secs(10)).await;
    eprintln!("node1 caught up {caught_up:?} after its restart");

    let got = router
        .get(pb::GetRequest {
            collection: "ha".into(),
            ids: acked.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.missing_ids.len(), 0, "acknowledged documents missing");
    let count = router
        .count(pb::CountRequest {
            collection: "ha".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .count;
    assert_eq!(count as usize, acked.len());

    // Both replicas of every shard identical (no entry applied twice or skipped).
    let c = cluster.record("ha").await;
    for i in 0..3 {
        cluster.kill_child(&format!("node{i}"));
    }
    let copies = replica_copies(&cluster, &c);
    cluster.shutdown().await;
    let mut total = 0;
    for (shard, replicas) in copies {
        assert_eq!(replicas.len(), 2);
        assert!(
            replicas[0].1 == replicas[1].1,
            "replicas of shard {shard} differ"
        );
        total += replicas[0].1.len();
    }
    assert_eq!(total, acked.len());
}

/// Test 8: the NATS server leading the collection's stream is SIGKILLed during 3,000
/// acknowledged writes: none lost, none stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_stream_leader_loses_and_duplicates_nothing() {
    let Some(mut cluster) = Cluster::servers_only().await else {
        return;
    };
    for i in 0..3 {
        cluster.start_node(&format!("node{i}")).await;
    }
    cluster.start_router(None).await;
    let mut router = cluster.router().await;
    create(&mut router, "nl", DIM, 2, 2).await;
    let c = cluster.record("nl").await;
    let info = cluster.stream_info(c.uid).await;
    let leader = info["cluster"]["leader"].as_str().unwrap().to_string();

    let mut rng = Rng(17);
    let mut retried = 0;
    let started = Instant::now();
    for i in 0..3000 {
        if i == 1000 {
            eprintln!("killing the stream's leader {leader}");
            cluster.nats.retain(|(name, _)| *name != leader);
        }
        let doc = pb_doc(&format!("x{i}"), &rng.vector(DIM), 0);
        // A write is acknowledged when the router says so; a client retries one that failed.
        loop {
            match router
                .upsert(pb::UpsertRequest {
                    collection: "nl".into(),
                    documents: vec![doc.clone()],
                })
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    retried += 1;
                    eprintln!("write {i} failed, retrying: {e}");
                    assert!(retried < 50, "too many failed writes");
                }
            }
        }
    }
    eprintln!(
        "3,000 acknowledged writes in {:?}, {retried} retried by the client",
        started.elapsed()
    );
    let ids: Vec<String> = (0..3000).map(|i| format!("x{i}")).collect();
    // The read waits for a replica of every shard to reach the router's last write. The
    // replicas' log consumers may still be recovering from the leader's death (an ordered
    // consumer notices a dead server by missed heartbeats, then is made again), longer than
    // the router's 5 s wait: the router then answers UNAVAILABLE, and a client retries, as
    // this one does, for up to a minute.
    let read_started = Instant::now();
    let got = loop {
        match router
            .get(pb::GetRequest {
                collection: "nl".into(),
                ids: ids.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(e)
                if e.code() == tonic::Code::Unavailable
                    && read_started.elapsed() < Duration::from_secs(60) =>
            {
                eprintln!("read after the writes: {e}; retrying");
            }
            Err(e) => panic!("read after the writes: {e}"),
        }
    };
    eprintln!(
        "every shard readable at the last write {:?} after it",
        read_started.elapsed()
    );
    assert_eq!(got.missing_ids.len(), 0, "acknowledged writes lost");
    // One log entry per write: nothing stored twice (a client retry of a write that had
    // committed would add one; the router's own retries never do).
    let info = cluster.stream_info(c.uid).await;
    let messages = info["state"]["messages"].as_u64().unwrap();
    assert_eq!(retried, 0, "every write was acknowledged at its first call");
    assert_eq!(messages, 3000, "entries in the log");
    cluster.shutdown().await;
}

/// Test 4: the router is SIGKILLed at random moments during 200 batches that each span every
/// shard; after it restarts, no batch is partially present.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_router_leaves_no_partial_batch() {
    let Some(mut cluster) = Cluster::servers_only().await else {
        return;
    };
    for i in 0..3 {
        cluster.start_node(&format!("node{i}")).await;
    }
    let port = free_port();
    cluster.spawn_router("router", port);
    let mut router = cluster.router().await;
    create(&mut router, "atom", DIM, 4, 2).await;

    // Batch b: 8 documents, 2 on each of the 4 shards.
    let batches: Vec<Vec<String>> = (0..200)
        .map(|b| {
            let mut per = [0; 4];
            let mut ids = Vec::new();
            let mut j = 0;
            while ids.len() < 8 {
                let id = format!("b{b}-{j}");
                let s = shard_of(&id, 4) as usize;
                if per[s] < 2 {
                    per[s] += 1;
                    ids.push(id);
                }
                j += 1;
            }
            ids
        })
        .collect();
    let done = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (batches, done) = (batches.clone(), Arc::clone(&done));
        let url = format!("http://127.0.0.1:{port}");
        tokio::spawn(async move {
            let mut rng = Rng(23);
            let mut acked = 0;
            for ids in batches {
                let docs: Vec<pb::Document> = ids
                    .iter()
                    .map(|id| pb_doc(id, &rng.vector(DIM), 0))
                    .collect();
                // Connect (the router may be down: wait for it), then send the batch once:
                // a call cut by a kill leaves the batch's fate unknown.
                let mut client = loop {
                    match LatentDbClient::connect(url.clone()).await {
                        Ok(c) => break c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                if client
                    .upsert(pb::UpsertRequest {
                        collection: "atom".into(),
                        documents: docs,
                    })
                    .await
                    .is_ok()
                {
                    acked += 1;
                }
                done.fetch_add(1, Ordering::Relaxed);
                // Paced, so that the batches span several kills on a fast machine too.
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            acked
        })
    };
    let mut rng = Rng(29);
    let mut kills = 0;
    while done.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(100 + rng.next() % 400)).await;
        cluster.kill_child("router");
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.next() % 200)).await;
        cluster.spawn_router("router", port);
    }
    let acked = writer.await.unwrap();
    eprintln!("{kills} router kills; {acked} of 200 batches acknowledged");
    assert!(kills >= 3, "the writer outran the kills");

    wait_caught_up(&cluster, "atom", Duration::from_secs(30)).await;
    let mut router = cluster.router().await;
    let (mut whole, mut absent) = (0, 0);
    for (b, ids) in batches.iter().enumerate() {
        let got = loop {
            match router
                .get(pb::GetRequest {
                    collection: "atom".into(),
                    ids: ids.clone(),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => break r.into_inner(),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    router = cluster.router().await;
                }
            }
        };
        match got.records.len() {
            8 => whole += 1,
            0 => absent += 1,
            n => panic!("batch {b} is partially present: {n} of 8"),
        }
    }
    eprintln!("{whole} batches whole, {absent} absent, none partial");
    assert!(whole >= acked, "an acknowledged batch is missing");
    cluster.shutdown().await;
}
