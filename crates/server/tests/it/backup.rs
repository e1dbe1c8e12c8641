//! `CreateBackup` (a progress stream ending with the report) and `ListBackups`; the backup
//! restores (through the library) to the same documents.

use crate::common::{TestServer, vector};
use latentdb_server::ServerConfig;
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use tonic::Code;
use tonic::transport::Channel;

const DIM: usize = 4;

async fn fill(c: &mut LatentDbClient<Channel>, name: &str, n: u64) {
    c.create_collection(pb::CreateCollectionRequest {
        name: name.into(),
        dimension: DIM as u32,
        ..Default::default()
    })
    .await
    .expect("create");
    c.upsert(pb::UpsertRequest {
        collection: name.into(),
        documents: (0..n)
            .map(|i| pb::Document {
                id: format!("{name}{i}"),
                vector: vector(i + 1, DIM),
                text: Some(format!("text {i}")),
                ..Default::default()
            })
            .collect(),
    })
    .await
    .expect("upsert");
}

async fn backup(
    c: &mut LatentDbClient<Channel>,
    target: &str,
    collections: &[&str],
) -> Result<Vec<pb::BackupProgress>, tonic::Status> {
    let mut stream = c
        .create_backup(pb::CreateBackupRequest {
            target: target.into(),
            collections: collections.iter().map(|s| s.to_string()).collect(),
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await? {
        out.push(m);
    }
    Ok(out)
}

#[tokio::test]
async fn create_backup_streams_progress_and_lists_and_restores() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    fill(&mut c, "a", 7).await;
    fill(&mut c, "b", 2).await;
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("one");
    let target = target.to_str().unwrap();

    let messages = backup(&mut c, target, &[]).await.expect("backup");
    let (last, progress) = messages.split_last().expect("messages");
    assert!(last.done);
    assert!(progress.iter().all(|m| !m.done && m.report.is_none()));
    let names: Vec<&str> = progress.iter().map(|m| m.collection.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(progress.last().map(|m| m.records), Some(9));
    assert!(progress.iter().all(|m| m.total == 9));
    let report = last.report.as_ref().expect("report");
    let counts: Vec<(&str, u64)> = report
        .collections
        .iter()
        .map(|c| (c.name.as_str(), c.count))
        .collect();
    assert_eq!(counts, [("a", 7), ("b", 2)]);
    assert!(report.bytes > 0 && report.target.contains("one"));

    // The same target again: ALREADY_EXISTS, in the stream.
    let again = backup(&mut c, target, &[])
        .await
        .expect_err("second backup");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    // An unknown collection.
    let other = backups.path().join("two");
    let missing = backup(&mut c, other.to_str().unwrap(), &["nope"])
        .await
        .expect_err("unknown collection");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    // No target.
    let empty = backup(&mut c, "", &[]).await.expect_err("no target");
    assert_eq!(empty.code(), Code::InvalidArgument);

    let listed = c
        .list_backups(pb::ListBackupsRequest {
            root: backups.path().to_str().unwrap().into(),
        })
        .await
        .expect("list")
        .into_inner()
        .backups;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "one");
    assert!(listed[0].problem.is_empty());
    assert_eq!(listed[0].collections, report.collections);

    let restored = tempfile::tempdir().unwrap();
    let dest = restored.path().join("db");
    let r = latentdb::backup::restore(target, &dest).expect("restore");
    assert_eq!(r.collections.len(), 2);
    let db = latentdb::Database::open(&dest).expect("open restored");
    assert_eq!(db.count("a").unwrap(), server.db.count("a").unwrap());
    assert_eq!(db.count("b").unwrap(), 2);
    server.stop().await.expect("stop");
}

#[tokio::test]
async fn backups_need_the_api_key() {
    let server = TestServer::start(ServerConfig::default().api_key("k")).await;
    let mut c = server.client().await;
    let dir = tempfile::tempdir().unwrap();
    let err = backup(&mut c, dir.path().join("x").to_str().unwrap(), &[])
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .list_backups(pb::ListBackupsRequest {
            root: dir.path().to_str().unwrap().into(),
        })
        .await
        .expect_err("no key");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(!dir.path().join("x").exists());
    server.stop().await.expect("stop");
}
