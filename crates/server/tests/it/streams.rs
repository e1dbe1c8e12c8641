//! Upsert streams against drops and shutdown: a stream is bound to the collection it started
//! with, shutdown refuses new batches with the counts so far, and an idle stream cannot hold
//! shutdown forever.

use std::time::Duration;

use crate::common::{TestServer, vector};
use latentdb_server::ServerConfig;
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const DIM: usize = 4;

fn batch(collection: &str, prefix: &str, n: u64) -> pb::UpsertRequest {
    pb::UpsertRequest {
        collection: collection.into(),
        documents: (0..n)
            .map(|i| pb::Document {
                id: format!("{prefix}{i}"),
                vector: vector(i + 1, DIM),
                ..Default::default()
            })
            .collect(),
    }
}

async fn create(c: &mut LatentDbClient<Channel>, name: &str) {
    c.create_collection(pb::CreateCollectionRequest {
        name: name.into(),
        dimension: DIM as u32,
        ..Default::default()
    })
    .await
    .expect("create");
}

async fn count(c: &mut LatentDbClient<Channel>, name: &str) -> u64 {
    c.count(pb::CountRequest {
        collection: name.into(),
    })
    .await
    .expect("count")
    .into_inner()
    .count
}

/// Waits until `name` holds `n` documents (the stream's batch was written).
async fn wait_for_count(c: &mut LatentDbClient<Channel>, name: &str, n: u64) {
    for _ in 0..500 {
        if count(c, name).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name} never reached {n} documents");
}

#[tokio::test]
async fn a_stream_never_writes_into_a_recreated_collection() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    create(&mut c, "s").await;

    let (tx, rx) = mpsc::channel(4);
    let mut streamer = server.client().await;
    let call = tokio::spawn(async move { streamer.upsert_stream(ReceiverStream::new(rx)).await });
    tx.send(batch("s", "a", 5)).await.expect("send");
    wait_for_count(&mut c, "s", 5).await;

    // Another client drops and re-creates the name while the stream is open.
    c.delete_collection(pb::DeleteCollectionRequest { name: "s".into() })
        .await
        .expect("drop");
    create(&mut c, "s").await;

    tx.send(batch("", "b", 3)).await.expect("send");
    drop(tx);
    let status = call
        .await
        .expect("task")
        .expect_err("the stream's collection is gone");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().starts_with("batch 1: "),
        "{}",
        status.message()
    );
    assert_eq!(
        count(&mut c, "s").await,
        0,
        "the batch went into the new collection"
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_refuses_new_batches_with_the_counts_so_far() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    create(&mut c, "s").await;

    let (tx, rx) = mpsc::channel(4);
    let mut streamer = server.client().await;
    let call = tokio::spawn(async move { streamer.upsert_stream(ReceiverStream::new(rx)).await });
    tx.send(batch("s", "a", 5)).await.expect("send");
    wait_for_count(&mut c, "s", 5).await;

    // The client keeps its stream open and idle; shutdown must not wait for it forever.
    let (stopped, db, _dir) = tokio::time::timeout(Duration::from_secs(30), server.stop_keep_dir())
        .await
        .expect("shutdown waited for an idle stream");
    stopped.expect("clean stop");
    let status = call
        .await
        .expect("task")
        .expect_err("the stream was ended by shutdown");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("1 batches, 5 documents"),
        "{}",
        status.message()
    );
    assert_eq!(
        status
            .metadata()
            .get("latentdb-written")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_eq!(db.count("s").expect("count"), 5);
    drop(tx);
}

#[tokio::test]
async fn the_drain_timeout_bounds_shutdown() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

    let config = ServerConfig::default().drain_timeout(Duration::from_millis(300));
    let server = TestServer::start(config).await;
    // A reflection stream that the client keeps open and idle: graceful shutdown alone would
    // wait for it forever.
    let (tx, rx) = mpsc::channel(4);
    tx.send(ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    })
    .await
    .expect("send");
    let mut stream = ServerReflectionClient::new(server.channel().await)
        .server_reflection_info(ReceiverStream::new(rx))
        .await
        .expect("reflection")
        .into_inner();
    stream.message().await.expect("a response").expect("one");

    tokio::time::timeout(Duration::from_secs(30), server.stop())
        .await
        .expect("shutdown did not honour the drain timeout")
        .expect("clean stop");
    drop(tx);
}
