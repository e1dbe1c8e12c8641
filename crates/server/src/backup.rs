//! The backup calls: `CreateBackup` (a server stream of progress, ending with the report) and
//! `ListBackups`, over [`latentdb::backup`].
//!
//! The backup itself is synchronous: it runs on the blocking pool and sends its progress
//! through a channel that the response stream reads. The channel is unbounded (one message
//! per collection and one at the end), so that a slow reader never keeps the backup, and the
//! storage snapshot it holds, waiting.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use latentdb::Database;
use latentdb::backup::{BackupOptions, BackupReport, Backups, CollectionBackup};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use tracing::Instrument;

use crate::call::Call;
use crate::error::ServiceError;
use crate::pb;
use crate::service::{blocking, finished, rpc_span};

/// The response stream of `CreateBackup`.
pub(crate) type ProgressStream =
    Pin<Box<dyn Stream<Item = Result<pb::BackupProgress, Status>> + Send + 'static>>;

/// Starts the backup of `req` and returns its progress stream. Fails before streaming when
/// the target is empty or the call's deadline has passed or its client has gone.
pub(crate) fn create(
    db: &Arc<Database>,
    call: Call,
    req: pb::CreateBackupRequest,
) -> Result<ProgressStream, Status> {
    if req.target.is_empty() {
        return Err(
            ServiceError::InvalidArgument("CreateBackup needs a target".into()).into_status(),
        );
    }
    call.token().check().map_err(ServiceError::into_status)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let db = Arc::clone(db);
    let span = rpc_span("CreateBackup", "");
    let start = Instant::now();
    tokio::spawn(
        async move {
            let token = call.token();
            let progress_tx = tx.clone();
            let options = BackupOptions {
                collections: req.collections,
                max_part_size: None,
            };
            let target = req.target;
            let out = call
                .within(blocking(&token, &db, move |db| {
                    let mut progress = |p: &latentdb::backup::BackupProgress| {
                        // The library's own last report (no collection) is the done message.
                        if p.collection.is_empty() {
                            return;
                        }
                        // A client that went away no longer reads: the backup still completes.
                        let _ = progress_tx.send(Ok(pb::BackupProgress {
                            collection: p.collection.clone(),
                            records: p.records,
                            total: p.total,
                            bytes: p.bytes,
                            done: false,
                            report: None,
                        }));
                    };
                    Ok(Backups::new(db).create(&target, &options, &mut progress)?)
                }))
                .await;
            match out {
                Ok(report) => {
                    finished("CreateBackup", start, Ok(()));
                    tracing::info!(
                        target = %report.target,
                        bytes = report.bytes,
                        capture_ms = report.capture_ms,
                        "backup created"
                    );
                    let _ = tx.send(Ok(final_message(report)));
                }
                Err(e) => {
                    let status = e.into_status();
                    finished("CreateBackup", start, Err(&status));
                    let _ = tx.send(Err(status));
                }
            }
        }
        .instrument(span),
    );
    Ok(Box::pin(UnboundedReceiverStream::new(rx)))
}

/// The last message of the stream: `done`, with the report.
fn final_message(report: BackupReport) -> pb::BackupProgress {
    let records = report.collections.iter().map(|c| c.count).sum();
    pb::BackupProgress {
        collection: String::new(),
        records,
        total: records,
        bytes: report.bytes,
        done: true,
        report: Some(pb::BackupReport {
            target: report.target,
            collections: report.collections.into_iter().map(collection).collect(),
            bytes: report.bytes,
            capture_ms: report.capture_ms,
            elapsed_ms: report.elapsed_ms,
        }),
    }
}

fn collection(c: CollectionBackup) -> pb::CollectionBackup {
    pb::CollectionBackup {
        name: c.name,
        seq: c.seq,
        count: c.count,
        digest: c.digest,
        index_included: c.index_included,
    }
}

/// The backups under `req.root`.
pub(crate) async fn list(
    call: &Call,
    db: &Arc<Database>,
    req: pb::ListBackupsRequest,
) -> Result<pb::ListBackupsResponse, ServiceError> {
    if req.root.is_empty() {
        return Err(ServiceError::InvalidArgument(
            "ListBackups needs a root".into(),
        ));
    }
    let root = req.root;
    let summaries = blocking(&call.token(), db, move |_| {
        Ok(latentdb::backup::list(&root)?)
    })
    .await?;
    Ok(pb::ListBackupsResponse {
        backups: summaries.into_iter().map(info).collect(),
    })
}

fn info(s: latentdb::backup::BackupSummary) -> pb::BackupInfo {
    // The collections as the backup's meta records them (none when it cannot be read).
    let collections: Vec<CollectionBackup> = s
        .meta
        .get("collections")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    pb::BackupInfo {
        name: s.name,
        url: s.url,
        created_unix_ms: s.created_unix_ms,
        total_bytes: s.total_bytes,
        files: s.files as u64,
        collections: collections.into_iter().map(collection).collect(),
        problem: s.problem.unwrap_or_default(),
    }
}
