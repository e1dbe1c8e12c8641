//! [`LatentDbService`]: the `latentdb.v1.LatentDb` handlers.
//!
//! Every handler validates what it can against the [`Limits`], then runs the database call on
//! the blocking pool (`spawn_blocking`): storage, index and embedder work never runs on the
//! async threads. Each call logs one line at debug with its outcome and duration.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use latentdb::Database;
use latentdb::embed::{EmbedOptions, Embedder, Instruction};
use tokio::sync::Semaphore;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::config::Limits;
use crate::convert;
use crate::error::{ServiceError, limit};
use crate::pb;
use crate::pb::latent_db_server::LatentDb;

/// The service: a shared [`Database`], the limits, and the optional embedder.
#[derive(Clone)]
pub struct LatentDbService {
    pub(crate) db: Arc<Database>,
    pub(crate) limits: Limits,
    pub(crate) embedder: Option<Arc<Embedder>>,
    pub(crate) embed_permits: Arc<Semaphore>,
}

impl std::fmt::Debug for LatentDbService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatentDbService")
            .field("db", &self.db.path())
            .field("limits", &self.limits)
            .field("embedder", &self.embedder.is_some())
            .finish()
    }
}

impl LatentDbService {
    /// A service over `db` with `limits` and, for `Embed`, an embedder.
    pub fn new(db: Arc<Database>, limits: Limits, embedder: Option<Arc<Embedder>>) -> Self {
        let permits = limits.embed_concurrency.max(1);
        LatentDbService {
            db,
            limits,
            embedder,
            embed_permits: Arc::new(Semaphore::new(permits)),
        }
    }
}

/// Runs `f(db)` on the blocking pool.
pub(crate) async fn blocking<T, F>(db: &Arc<Database>, f: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> Result<T, ServiceError> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || f(&db))
        .await
        .map_err(|e| ServiceError::Worker(e.to_string()))?
}

/// Awaits a handler body, logs one line, and turns its error into a status.
pub(crate) async fn observe<T>(
    rpc: &'static str,
    body: impl Future<Output = Result<T, ServiceError>>,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let out = body.await;
    let micros = start.elapsed().as_micros() as u64;
    match out {
        Ok(v) => {
            tracing::debug!(rpc, code = "OK", micros, "request");
            Ok(Response::new(v))
        }
        Err(e) => {
            let status = e.into_status();
            tracing::debug!(rpc, code = ?status.code(), micros, message = status.message(), "request");
            Err(status)
        }
    }
}

/// Rejects a batch larger than the limit.
pub(crate) fn check_batch(what: &str, n: usize, limits: &Limits) -> Result<(), ServiceError> {
    if n > limits.max_batch_docs {
        return Err(limit(what, n, limits.max_batch_docs));
    }
    Ok(())
}

/// Rejects a text longer than the limit.
pub(crate) fn check_text(what: &str, text: &str, limits: &Limits) -> Result<(), ServiceError> {
    if text.len() > limits.max_text_bytes {
        return Err(limit(
            &format!("{what} length in bytes"),
            text.len(),
            limits.max_text_bytes,
        ));
    }
    Ok(())
}

/// The embedder instruction of a task name or an instruction sentence (not both).
pub(crate) fn instruction(
    task: Option<String>,
    instruction: Option<String>,
) -> Result<Option<Instruction>, ServiceError> {
    match (task, instruction) {
        (Some(_), Some(_)) => Err(ServiceError::InvalidArgument(
            "give task or instruction, not both".into(),
        )),
        (Some(task), None) => {
            latentdb::embed::tasks::task(&task)?;
            Ok(Some(Instruction::Task(task)))
        }
        (None, Some(text)) => Ok(Some(Instruction::parse(&text))),
        (None, None) => Ok(None),
    }
}

impl LatentDbService {
    /// Waits for a turn to run the embedder (at most `limits.embed_concurrency` at once).
    pub(crate) async fn embed_permit(
        &self,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, ServiceError> {
        self.embed_permits
            .acquire()
            .await
            .map_err(|e| ServiceError::Worker(e.to_string()))
    }

    async fn upsert_batch(
        &self,
        collection: String,
        docs: Vec<pb::Document>,
    ) -> Result<Vec<String>, ServiceError> {
        check_batch("documents per batch", docs.len(), &self.limits)?;
        // Documents without a vector are embedded from their text: that takes a permit.
        let _permit = if docs.iter().any(|d| d.vector.is_empty()) {
            Some(self.embed_permit().await?)
        } else {
            None
        };
        let docs: Vec<latentdb::Document> = docs.into_iter().map(convert::document).collect();
        blocking(&self.db, move |db| Ok(db.upsert(&collection, docs)?.ids)).await
    }

    async fn stream_upsert(
        &self,
        mut stream: Streaming<pb::UpsertRequest>,
    ) -> Result<pb::UpsertStreamResponse, Status> {
        let mut collection: Option<String> = None;
        let (mut written, mut batches) = (0u64, 0u64);
        while let Some(msg) = stream.message().await? {
            let name = match (&collection, msg.collection) {
                (None, name) if name.is_empty() => Err(ServiceError::InvalidArgument(
                    "the first message of UpsertStream must name the collection".into(),
                )),
                (None, name) => Ok(name),
                (Some(first), name) if name.is_empty() || &name == first => Ok(first.clone()),
                (Some(first), name) => Err(ServiceError::InvalidArgument(format!(
                    "message names collection {name:?}, the stream writes to {first:?}"
                ))),
            };
            let result = match name {
                Ok(name) => {
                    collection = Some(name.clone());
                    self.upsert_batch(name, msg.documents).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(ids) => {
                    written += ids.len() as u64;
                    batches += 1;
                }
                Err(e) => return Err(failed_batch(e.into_status(), batches, written)),
            }
        }
        Ok(pb::UpsertStreamResponse { written, batches })
    }
}

/// The status of a failed stream batch: "batch N: ..." and the counts in metadata.
fn failed_batch(status: Status, batch: u64, written: u64) -> Status {
    let mut out = Status::new(
        status.code(),
        format!("batch {batch}: {}", status.message()),
    );
    let md = out.metadata_mut();
    md.insert("latentdb-failed-batch", MetadataValue::from(batch));
    md.insert("latentdb-batches-acknowledged", MetadataValue::from(batch));
    md.insert("latentdb-written", MetadataValue::from(written));
    out
}

#[tonic::async_trait]
impl LatentDb for LatentDbService {
    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        observe("CreateCollection", async {
            let (spec, model) = convert::collection_spec(req.into_inner())?;
            let info = match model {
                None => blocking(&self.db, move |db| Ok(db.create_collection(spec)?)).await?,
                Some(model) => {
                    // Loading a model is embedding work.
                    let _permit = self.embed_permit().await?;
                    let model = latentdb::embed::ModelSpec::parse(&model);
                    blocking(&self.db, move |db| {
                        Ok(db.create_collection_with_model(spec, &model)?)
                    })
                    .await?
                }
            };
            Ok(convert::collection_info(info))
        })
        .await
    }

    async fn get_collection(
        &self,
        req: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        observe("GetCollection", async {
            let name = req.into_inner().name;
            let info = blocking(&self.db, move |db| Ok(db.collection_info(&name)?)).await?;
            Ok(convert::collection_info(info))
        })
        .await
    }

    async fn list_collections(
        &self,
        _req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        observe("ListCollections", async {
            let list = blocking(&self.db, |db| Ok(db.list_collections())).await?;
            Ok(pb::ListCollectionsResponse {
                collections: list.into_iter().map(convert::collection_info).collect(),
            })
        })
        .await
    }

    async fn delete_collection(
        &self,
        req: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        observe("DeleteCollection", async {
            let name = req.into_inner().name;
            blocking(&self.db, move |db| Ok(db.drop_collection(&name)?)).await?;
            Ok(pb::DeleteCollectionResponse {})
        })
        .await
    }

    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        observe("Upsert", async {
            let req = req.into_inner();
            let ids = self.upsert_batch(req.collection, req.documents).await?;
            Ok(pb::UpsertResponse { ids })
        })
        .await
    }

    async fn upsert_stream(
        &self,
        req: Request<Streaming<pb::UpsertRequest>>,
    ) -> Result<Response<pb::UpsertStreamResponse>, Status> {
        let start = Instant::now();
        let out = self.stream_upsert(req.into_inner()).await;
        let micros = start.elapsed().as_micros() as u64;
        match &out {
            Ok(r) => tracing::debug!(
                rpc = "UpsertStream",
                code = "OK",
                micros,
                written = r.written,
                batches = r.batches,
                "request"
            ),
            Err(s) => {
                tracing::debug!(rpc = "UpsertStream", code = ?s.code(), micros, message = s.message(), "request")
            }
        }
        out.map(Response::new)
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        observe("Get", async {
            let req = req.into_inner();
            check_batch("ids per call", req.ids.len(), &self.limits)?;
            let (collection, ids) = (req.collection, req.ids);
            let (found, ids) = blocking(&self.db, move |db| {
                let found = db.get(&collection, &ids)?;
                Ok((found, ids))
            })
            .await?;
            let mut out = pb::GetResponse::default();
            for (id, rec) in ids.into_iter().zip(found) {
                match rec {
                    Some(r) => out.records.push(convert::record(r, req.with_vectors)),
                    None => out.missing_ids.push(id),
                }
            }
            if req.require_all && !out.missing_ids.is_empty() {
                return Err(ServiceError::NotFound(format!(
                    "documents not found: {:?}",
                    out.missing_ids
                )));
            }
            Ok(out)
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        observe("Delete", async {
            let req = req.into_inner();
            let filter = convert::filter(req.filter)?;
            let collection = req.collection;
            let deleted_ids = match (req.ids.is_empty(), filter) {
                (false, Some(_)) => {
                    return Err(ServiceError::InvalidArgument(
                        "give ids or a filter, not both".into(),
                    ));
                }
                (true, None) => {
                    return Err(ServiceError::InvalidArgument(
                        "give the ids to delete or a filter".into(),
                    ));
                }
                (false, None) => {
                    check_batch("ids per call", req.ids.len(), &self.limits)?;
                    let ids = req.ids;
                    blocking(&self.db, move |db| Ok(db.delete(&collection, &ids)?)).await?
                }
                (true, Some(filter)) => {
                    crate::search::delete_by_filter(&self.db, collection, filter).await?
                }
            };
            Ok(pb::DeleteResponse { deleted_ids })
        })
        .await
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        observe("Count", async {
            let name = req.into_inner().collection;
            let count = blocking(&self.db, move |db| Ok(db.count(&name)?)).await?;
            Ok(pb::CountResponse { count })
        })
        .await
    }

    async fn scroll(
        &self,
        req: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        observe("Scroll", async {
            let req = req.into_inner();
            let limit = if req.limit == 0 {
                100
            } else {
                req.limit as usize
            };
            let (collection, after, with_vectors) = (req.collection, req.after, req.with_vectors);
            let page = blocking(&self.db, move |db| {
                Ok(db.scroll(&collection, after.as_deref(), limit)?)
            })
            .await?;
            Ok(pb::ScrollResponse {
                records: page
                    .records
                    .into_iter()
                    .map(|r| convert::record(r, with_vectors))
                    .collect(),
                next_cursor: page.next_cursor,
            })
        })
        .await
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        observe("Search", crate::search::search(self, req.into_inner())).await
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        observe(
            "SearchBatch",
            crate::search::search_batch(self, req.into_inner()),
        )
        .await
    }

    async fn embed(
        &self,
        req: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        observe("Embed", async {
            let req = req.into_inner();
            let embedder = self.embedder.clone().ok_or_else(|| {
                ServiceError::FailedPrecondition(
                    "this server has no embedder: start it with --model".into(),
                )
            })?;
            check_batch("texts per call", req.texts.len(), &self.limits)?;
            for t in &req.texts {
                check_text("text", t, &self.limits)?;
            }
            let opts = EmbedOptions {
                instruction: instruction(req.task, req.instruction)?,
                ..EmbedOptions::default()
            };
            let _permit = self.embed_permit().await?;
            let texts = req.texts;
            let dimension = u32::try_from(embedder.dimension()).unwrap_or(u32::MAX);
            let vectors = tokio::task::spawn_blocking(move || embedder.embed(&texts, &opts))
                .await
                .map_err(|e| ServiceError::Worker(e.to_string()))??;
            Ok(pb::EmbedResponse {
                vectors: vectors
                    .into_iter()
                    .map(|values| pb::Vector { values })
                    .collect(),
                dimension,
            })
        })
        .await
    }

    async fn flush(
        &self,
        _req: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        observe("Flush", async {
            blocking(&self.db, |db| Ok(db.flush()?)).await?;
            Ok(pb::FlushResponse {})
        })
        .await
    }

    async fn compact(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        observe(
            "Compact",
            crate::search::compact(&self.db, req.into_inner().collection),
        )
        .await
    }
}
