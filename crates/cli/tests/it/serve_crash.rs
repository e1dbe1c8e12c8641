//! Crash safety over the wire: stream batches to a real `latentdb serve`, record every
//! acknowledged batch, SIGKILL the server mid-stream, restart it, and find every acknowledged
//! document (and each batch in flight either whole or absent).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const DIM: usize = 16;
const BATCH: usize = 50;

/// Starts `latentdb serve` on a free loopback port; returns the child and its address.
fn start(data: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(["serve", "--data"])
        .arg(data)
        .args(["--addr", "127.0.0.1:0"])
        .env_remove("LATENTDB_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn latentdb serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("an address")
        .to_string();
    assert!(
        addr.starts_with("127.0.0.1:"),
        "unexpected first line {line:?}"
    );
    (child, addr)
}

pub(crate) async fn connect(addr: &str) -> LatentDbClient<Channel> {
    for _ in 0..100 {
        if let Ok(ch) = Channel::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
        {
            return LatentDbClient::new(ch);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to {addr}");
}

fn batch(stream: usize, b: usize) -> pb::UpsertRequest {
    pb::UpsertRequest {
        collection: "crash".into(),
        documents: (0..BATCH)
            .map(|i| {
                let seed = (stream * 1000 + b * BATCH + i) as f32;
                pb::Document {
                    id: format!("s{stream}-b{b}-{i}"),
                    text: Some(format!("stream {stream} batch {b} doc {i}")),
                    metadata: None,
                    vector: (0..DIM).map(|d| (seed + d as f32).sin()).collect(),
                }
            })
            .collect(),
    }
}

fn ids(req: &pb::UpsertRequest) -> Vec<String> {
    req.documents.iter().map(|d| d.id.clone()).collect()
}

#[test]
fn acknowledged_stream_batches_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("db");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (mut child, addr) = start(&data);

    let (acknowledged, in_flight) = rt.block_on(async {
        let mut c = connect(&addr).await;
        c.create_collection(pb::CreateCollectionRequest {
            name: "crash".into(),
            dimension: DIM as u32,
            ..Default::default()
        })
        .await
        .expect("create");

        // Streams of 4 batches that complete: every batch in them is acknowledged.
        let mut acknowledged: Vec<Vec<String>> = Vec::new();
        for s in 0..6 {
            let batches: Vec<_> = (0..4).map(|b| batch(s, b)).collect();
            let all: Vec<Vec<String>> = batches.iter().map(ids).collect();
            let out = c
                .upsert_stream(tokio_stream::iter(batches))
                .await
                .expect("stream")
                .into_inner();
            assert_eq!(out.batches, 4);
            acknowledged.extend(all);
        }

        // A stream left open: batches go out, the server is killed before the client ends it.
        let (tx, rx) = mpsc::channel(4);
        let mut c2 = c.clone();
        let call = tokio::spawn(async move { c2.upsert_stream(ReceiverStream::new(rx)).await });
        let mut in_flight = Vec::new();
        for b in 0..8 {
            let req = batch(99, b);
            in_flight.push(ids(&req));
            if tx.send(req).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // SIGKILL mid-stream (std's Child::kill sends SIGKILL on Unix).
        child.kill().expect("kill");
        child.wait().expect("reap");
        drop(tx);
        let r = call.await.expect("join");
        assert!(r.is_err(), "the open stream cannot have succeeded");
        (acknowledged, in_flight)
    });

    // Restart on the same directory and look for everything.
    let (mut child, addr) = start(&data);
    rt.block_on(async {
        let mut c = connect(&addr).await;
        let mut expected = 0u64;
        for batch_ids in &acknowledged {
            let got = c
                .get(pb::GetRequest {
                    collection: "crash".into(),
                    ids: batch_ids.clone(),
                    ..Default::default()
                })
                .await
                .expect("get")
                .into_inner();
            assert!(
                got.missing_ids.is_empty(),
                "acknowledged documents lost: {:?}",
                got.missing_ids
            );
            expected += batch_ids.len() as u64;
        }
        // Batches of the killed stream: each is whole or absent, and only a prefix is there.
        let mut present_prefix = true;
        for (b, batch_ids) in in_flight.iter().enumerate() {
            let got = c
                .get(pb::GetRequest {
                    collection: "crash".into(),
                    ids: batch_ids.clone(),
                    ..Default::default()
                })
                .await
                .expect("get")
                .into_inner();
            let found = got.records.len();
            assert!(
                found == 0 || found == batch_ids.len(),
                "in-flight batch {b} is partly written ({found} of {})",
                batch_ids.len()
            );
            if found > 0 {
                assert!(present_prefix, "batch {b} written after a missing one");
                expected += found as u64;
            } else {
                present_prefix = false;
            }
        }
        let count = c
            .count(pb::CountRequest {
                collection: "crash".into(),
            })
            .await
            .expect("count")
            .into_inner()
            .count;
        assert_eq!(count, expected);
        // The index came back too: a stored vector finds itself.
        let probe = batch(0, 0).documents.swap_remove(0);
        let hits = c
            .search(pb::SearchRequest {
                collection: "crash".into(),
                vector: probe.vector,
                k: 1,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits;
        assert_eq!(hits[0].id, probe.id);
    });

    // SIGTERM: graceful stop, exit 0.
    #[cfg(unix)]
    {
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = child.wait().expect("wait");
        assert!(exit.success(), "server exited with {exit:?} after SIGTERM");
    }
    #[cfg(not(unix))]
    {
        child.kill().ok();
        child.wait().ok();
    }
}
