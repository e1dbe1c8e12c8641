//! [`LatentDbService`]: the `latentdb.v1.LatentDb` handlers.
//!
//! Every handler validates what it can against the [`Limits`], then runs the database call on
//! the blocking pool (`spawn_blocking`): storage, index and embedder work never runs on the
//! async threads. Each call runs inside a `rpc` tracing span (the RPC's name and its
//! collection), which the blocking work enters too, logs one line at debug with its outcome
//! and duration, and is counted in the Prometheus metrics ([`crate::metrics`]).
//!
//! Every call runs within its deadline (`grpc-timeout`), and its blocking work is not started
//! once the deadline has passed or the client has gone ([`Call`]). After shutdown begins, new
//! batches on open upsert streams are refused with `UNAVAILABLE`.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use latentdb::Database;
use latentdb::embed::{EmbedOptions, Embedder, Instruction, ModelSpec};
use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::call::{Call, CallToken};
use crate::config::Limits;
use crate::convert;
use crate::error::{ServiceError, echo, limit};
use crate::pb;
use crate::pb::latent_db_server::LatentDb;

/// The service: a shared [`Database`], the limits, and the optional embedder.
#[derive(Clone)]
pub struct LatentDbService {
    pub(crate) db: Arc<Database>,
    pub(crate) limits: Limits,
    pub(crate) embedder: Option<Arc<Embedder>>,
    pub(crate) embed_permits: Arc<Semaphore>,
    /// Whether clients may name model directories anywhere (else only under the models
    /// root).
    pub(crate) allow_model_paths: bool,
    /// Why calls that change data are refused, when they are (a cluster data node).
    read_only: Option<String>,
    /// True once shutdown has begun.
    shutting_down: watch::Receiver<bool>,
    shutdown_tx: Arc<watch::Sender<bool>>,
}

impl std::fmt::Debug for LatentDbService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatentDbService")
            .field("db", &self.db.path())
            .field("limits", &self.limits)
            .field("embedder", &self.embedder.is_some())
            .field("allow_model_paths", &self.allow_model_paths)
            .field("shutting_down", &*self.shutting_down.borrow())
            .finish()
    }
}

impl LatentDbService {
    /// A service over `db` with `limits` and, for `Embed`, an embedder.
    pub fn new(db: Arc<Database>, limits: Limits, embedder: Option<Arc<Embedder>>) -> Self {
        let permits = limits.embed_concurrency.max(1);
        let (shutdown_tx, shutting_down) = watch::channel(false);
        LatentDbService {
            db,
            limits,
            embedder,
            embed_permits: Arc::new(Semaphore::new(permits)),
            allow_model_paths: false,
            read_only: None,
            shutting_down,
            shutdown_tx: Arc::new(shutdown_tx),
        }
    }

    /// Lets clients name any model directory on the server in `CreateCollection` (default:
    /// only `default` and names of models under the models root).
    pub fn allow_model_paths(mut self, allow: bool) -> Self {
        self.allow_model_paths = allow;
        self
    }

    /// Refuses every call that changes data with `FAILED_PRECONDITION` and `reason` (none:
    /// writable).
    pub fn read_only(mut self, reason: Option<String>) -> Self {
        self.read_only = reason;
        self
    }

    /// `FAILED_PRECONDITION` when this service takes no writes.
    fn check_writable(&self) -> Result<(), Status> {
        match &self.read_only {
            Some(why) => Err(Status::failed_precondition(why.clone())),
            None => Ok(()),
        }
    }

    /// Starts shutdown: open upsert streams take no new batches (`UNAVAILABLE`, with the
    /// counts written so far) and end.
    pub fn begin_shutdown(&self) {
        self.shutdown_tx.send_replace(true);
    }

    /// True once [`begin_shutdown`](Self::begin_shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutting_down.borrow()
    }
}

/// Runs `f(db)` on the blocking pool, unless the call's deadline has passed or its client has
/// gone by the time it would start. A panic in `f` is `INTERNAL`.
pub(crate) async fn blocking<T, F>(
    call: &CallToken,
    db: &Arc<Database>,
    f: F,
) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce(&Database) -> Result<T, ServiceError> + Send + 'static,
{
    call.check()?;
    let db = Arc::clone(db);
    let token = call.clone();
    // The blocking pool does not inherit the request's span: enter it there.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        // It may have waited in the pool's queue.
        token.check()?;
        f(&db)
    })
    .await
    .map_err(|e| {
        if e.is_panic() {
            ServiceError::Worker("a worker task panicked".into())
        } else {
            ServiceError::Unavailable("the server is shutting down".into())
        }
    })?
}

/// The span of one call: its RPC and, when it names one, its collection.
pub(crate) fn rpc_span(rpc: &'static str, collection: &str) -> tracing::Span {
    let span = tracing::info_span!("rpc", rpc, collection = tracing::field::Empty);
    if !collection.is_empty() {
        span.record("collection", collection);
    }
    span
}

/// Awaits a handler body within the call's deadline inside the call's span ([`rpc_span`]),
/// logs one line, records its metrics, and turns its error into a status.
pub(crate) async fn observe<T>(
    rpc: &'static str,
    collection: &str,
    call: &Call,
    body: impl Future<Output = Result<T, ServiceError>>,
) -> Result<Response<T>, Status> {
    let span = rpc_span(rpc, collection);
    let start = Instant::now();
    let out = call.within(body).instrument(span.clone()).await;
    let _span = span.enter();
    match out {
        Ok(v) => {
            finished(rpc, start, Ok(()));
            Ok(Response::new(v))
        }
        Err(e) => {
            let status = e.into_status();
            finished(rpc, start, Err(&status));
            Err(status)
        }
    }
}

/// Logs one finished call at debug and records its metrics: the one place both happen.
pub(crate) fn finished(rpc: &'static str, start: Instant, out: Result<(), &Status>) {
    let elapsed = start.elapsed();
    let micros = elapsed.as_micros() as u64;
    let code = match out {
        Ok(()) => {
            tracing::debug!(rpc, code = "OK", micros, "request");
            tonic::Code::Ok
        }
        Err(status) => {
            tracing::debug!(rpc, code = ?status.code(), micros, message = status.message(), "request");
            status.code()
        }
    };
    crate::metrics::record_call(rpc, code, elapsed);
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
/// The instruction a text query asks for: a built-in task name or an instruction sentence
/// (not both).
pub fn instruction(
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
            .map_err(|_| ServiceError::Unavailable("the server is shutting down".into()))
    }

    /// The model a `CreateCollection` names: `default`, or (unless the operator allowed
    /// model paths) a relative path of plain names, which the database resolves under its
    /// models root when it was opened with `DatabaseOptions::allow_model_paths(false)` (as
    /// `latentdb serve` opens it). A client cannot name an absolute path or climb out with
    /// `..`.
    fn model_spec(&self, model: &str) -> Result<ModelSpec, ServiceError> {
        let spec = ModelSpec::parse(model);
        if self.allow_model_paths || spec == ModelSpec::Default {
            return Ok(spec);
        }
        let path = std::path::Path::new(model);
        let plain = path.components().next().is_some()
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !plain || model.contains('\\') {
            return Err(ServiceError::FailedPrecondition(format!(
                "model {}: this server loads only `default` and models named by a relative path \
                 under its models root (its operator can allow any directory with \
                 --allow-model-paths)",
                echo(model)
            )));
        }
        Ok(spec)
    }

    async fn upsert_batch(
        &self,
        call: &CallToken,
        collection: Target,
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
        blocking(call, &self.db, move |db| {
            let ids = match collection {
                Target::Name(name) => db.upsert(&name, docs)?.ids,
                Target::Bound(name, uid) => crate::bind::upsert(db, &name, uid, docs)?,
            };
            Ok(ids)
        })
        .await
    }

    async fn stream_upsert(
        &self,
        call: &Call,
        mut stream: Streaming<pb::UpsertRequest>,
    ) -> Result<pb::UpsertStreamResponse, Status> {
        let token = call.token();
        // The collection's name and identity, bound at the first message: a collection
        // dropped and re-created under the same name during the stream is another one.
        let mut bound: Option<(String, u64)> = None;
        let (mut written, mut batches) = (0u64, 0u64);
        let mut shutdown = self.shutting_down.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => None,
                m = stream.message() => Some(m),
            };
            let msg = match next {
                None => return Err(failed_batch(shutting_down(), batches, written)),
                Some(Err(status)) => return Err(failed_batch(status, batches, written)),
                Some(Ok(None)) => break,
                Some(Ok(Some(msg))) => msg,
            };
            if self.is_shutting_down() {
                return Err(failed_batch(shutting_down(), batches, written));
            }
            let result = async {
                let target = match (&bound, msg.collection) {
                    (None, name) if name.is_empty() => {
                        return Err(ServiceError::InvalidArgument(
                            "the first message of UpsertStream must name the collection".into(),
                        ));
                    }
                    (None, name) => {
                        tracing::Span::current().record("collection", name.as_str());
                        let n = name.clone();
                        let uid =
                            blocking(&token, &self.db, move |db| crate::bind::uid(db, &n)).await?;
                        bound = Some((name.clone(), uid));
                        Target::Bound(name, uid)
                    }
                    (Some((first, uid)), name) if name.is_empty() || &name == first => {
                        Target::Bound(first.clone(), *uid)
                    }
                    (Some((first, _)), name) => {
                        return Err(ServiceError::InvalidArgument(format!(
                            "message names collection {}, the stream writes to {}",
                            echo(&name),
                            echo(first)
                        )));
                    }
                };
                self.upsert_batch(&token, target, msg.documents).await
            }
            .await;
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

/// Where an upsert goes: a collection by name, or a collection bound by identity (streams).
enum Target {
    Name(String),
    Bound(String, u64),
}

/// The status of a batch refused because the server is shutting down.
fn shutting_down() -> Status {
    Status::unavailable("the server is shutting down and takes no new batches")
}

/// The status of a failed stream batch: "batch N: ..." with the counts written before it, in
/// the message and in metadata.
fn failed_batch(status: Status, batch: u64, written: u64) -> Status {
    // The counts at the end must survive the message cap: the cause gives way.
    let cause =
        crate::error::truncate(status.message(), crate::error::MAX_STATUS_MESSAGE_BYTES / 2);
    let mut out = Status::new(
        status.code(),
        format!("batch {batch}: {cause} ({batch} batches, {written} documents written before it)"),
    );
    let md = out.metadata_mut();
    md.insert("latentdb-failed-batch", MetadataValue::from(batch));
    md.insert("latentdb-batches-acknowledged", MetadataValue::from(batch));
    md.insert("latentdb-written", MetadataValue::from(written));
    out
}

/// The most missing ids a `require_all` error names.
const MAX_MISSING_NAMED: usize = 10;

/// "documents not found (N): "a", "b", ... and M more".
fn missing_message(missing: &[String]) -> String {
    let named: Vec<String> = missing
        .iter()
        .take(MAX_MISSING_NAMED)
        .map(|id| format!("{:?}", crate::error::truncate(id, 32)))
        .collect();
    let mut msg = format!(
        "documents not found ({}): {}",
        missing.len(),
        named.join(", ")
    );
    if missing.len() > MAX_MISSING_NAMED {
        msg.push_str(&format!(" and {} more", missing.len() - MAX_MISSING_NAMED));
    }
    msg
}

/// True for a filter that matches every document (`{}`).
fn matches_everything(filter: &Value) -> bool {
    filter.as_object().is_some_and(|m| m.is_empty())
}

#[tonic::async_trait]
impl LatentDb for LatentDbService {
    type CreateBackupStream = crate::backup::ProgressStream;

    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        self.check_writable()?;
        let call = Call::of(&req);
        let collection = req.get_ref().name.clone();
        observe("CreateCollection", &collection, &call, async {
            let token = call.token();
            let req = req.into_inner();
            if req.shards > 1 || req.replicas > 1 {
                return Err(ServiceError::FailedPrecondition(
                    "this server is a single node: create sharded or replicated collections \
                     through a cluster router (`latentdb router`)"
                        .into(),
                ));
            }
            let (spec, model) = convert::collection_spec(req)?;
            let info = match model {
                None => {
                    blocking(&token, &self.db, move |db| Ok(db.create_collection(spec)?)).await?
                }
                Some(model) => {
                    let model = self.model_spec(&model)?;
                    // Loading a model is embedding work.
                    let _permit = self.embed_permit().await?;
                    blocking(&token, &self.db, move |db| {
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
        let call = Call::of(&req);
        let collection = req.get_ref().name.clone();
        observe("GetCollection", &collection, &call, async {
            let name = req.into_inner().name;
            let info = blocking(&call.token(), &self.db, move |db| {
                Ok(db.collection_info(&name)?)
            })
            .await?;
            Ok(convert::collection_info(info))
        })
        .await
    }

    async fn list_collections(
        &self,
        req: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        let call = Call::of(&req);
        observe("ListCollections", "", &call, async {
            let list = blocking(&call.token(), &self.db, |db| Ok(db.list_collections())).await?;
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
        self.check_writable()?;
        let call = Call::of(&req);
        let collection = req.get_ref().name.clone();
        observe("DeleteCollection", &collection, &call, async {
            let name = req.into_inner().name;
            blocking(&call.token(), &self.db, move |db| {
                Ok(db.drop_collection(&name)?)
            })
            .await?;
            Ok(pb::DeleteCollectionResponse {})
        })
        .await
    }

    async fn upsert(
        &self,
        req: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        self.check_writable()?;
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe("Upsert", &collection, &call, async {
            let req = req.into_inner();
            let ids = self
                .upsert_batch(&call.token(), Target::Name(req.collection), req.documents)
                .await?;
            Ok(pb::UpsertResponse { ids })
        })
        .await
    }

    async fn upsert_stream(
        &self,
        req: Request<Streaming<pb::UpsertRequest>>,
    ) -> Result<Response<pb::UpsertStreamResponse>, Status> {
        self.check_writable()?;
        let call = Call::of(&req);
        // The collection is known at the first message: the stream's span records it then.
        let span = rpc_span("UpsertStream", "");
        let start = Instant::now();
        let out = self
            .stream_upsert(&call, req.into_inner())
            .instrument(span.clone())
            .await;
        let _span = span.enter();
        if let Ok(r) = &out {
            tracing::debug!(written = r.written, batches = r.batches, "upsert stream");
        }
        finished("UpsertStream", start, out.as_ref().map(|_| ()));
        out.map(Response::new)
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe("Get", &collection, &call, async {
            let req = req.into_inner();
            check_batch("ids per call", req.ids.len(), &self.limits)?;
            let (collection, ids) = (req.collection, req.ids);
            let (found, ids) = blocking(&call.token(), &self.db, move |db| {
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
                return Err(ServiceError::NotFound(missing_message(&out.missing_ids)));
            }
            Ok(out)
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.check_writable()?;
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe("Delete", &collection, &call, async {
            let token = call.token();
            let req = req.into_inner();
            let filter = convert::filter(req.filter)?;
            let collection = req.collection;
            let deleted_ids = match (req.ids.is_empty(), filter, req.all_documents) {
                (false, None, false) => {
                    check_batch("ids per call", req.ids.len(), &self.limits)?;
                    let ids = req.ids;
                    blocking(
                        &token,
                        &self.db,
                        move |db| Ok(db.delete(&collection, &ids)?),
                    )
                    .await?
                }
                (true, Some(filter), false) => {
                    if matches_everything(&filter) {
                        return Err(ServiceError::InvalidArgument(
                            "an empty filter matches every document: to delete them all, set \
                             all_documents (with no ids and no filter)"
                                .into(),
                        ));
                    }
                    crate::search::delete_by_filter(&token, &self.db, collection, filter).await?
                }
                (true, None, true) => {
                    // Listing every id of the collection would make an unbounded response:
                    // the count only.
                    let deleted_count = blocking(&token, &self.db, move |db| {
                        crate::bind::delete_all(db, &collection)
                    })
                    .await?;
                    return Ok(pb::DeleteResponse {
                        deleted_ids: Vec::new(),
                        deleted_count,
                    });
                }
                (true, None, false) => {
                    return Err(ServiceError::InvalidArgument(
                        "give the ids to delete, a filter, or all_documents".into(),
                    ));
                }
                _ => {
                    return Err(ServiceError::InvalidArgument(
                        "give exactly one of ids, a filter, or all_documents".into(),
                    ));
                }
            };
            Ok(pb::DeleteResponse {
                deleted_count: deleted_ids.len() as u64,
                deleted_ids,
            })
        })
        .await
    }

    async fn count(
        &self,
        req: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe("Count", &collection, &call, async {
            let name = req.into_inner().collection;
            let count = blocking(&call.token(), &self.db, move |db| Ok(db.count(&name)?)).await?;
            Ok(pb::CountResponse { count })
        })
        .await
    }

    async fn scroll(
        &self,
        req: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe("Scroll", &collection, &call, async {
            let req = req.into_inner();
            let limit = if req.limit == 0 {
                100
            } else {
                req.limit as usize
            };
            let (collection, after, with_vectors) = (req.collection, req.after, req.with_vectors);
            let page = blocking(&call.token(), &self.db, move |db| {
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
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe(
            "Search",
            &collection,
            &call,
            crate::search::search(self, call.token(), req.into_inner()),
        )
        .await
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe(
            "SearchBatch",
            &collection,
            &call,
            crate::search::search_batch(self, call.token(), req.into_inner()),
        )
        .await
    }

    async fn embed(
        &self,
        req: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let call = Call::of(&req);
        observe("Embed", "", &call, async {
            let token = call.token();
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
            let vectors = blocking(&token, &self.db, move |_| {
                let start = Instant::now();
                let vectors = embedder.embed(&texts, &opts)?;
                crate::metrics::record_embed(
                    &embedder.identity().name,
                    texts.len(),
                    start.elapsed(),
                );
                Ok(vectors)
            })
            .await?;
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
        req: Request<pb::FlushRequest>,
    ) -> Result<Response<pb::FlushResponse>, Status> {
        let call = Call::of(&req);
        observe("Flush", "", &call, async {
            blocking(&call.token(), &self.db, |db| {
                Ok(crate::metrics::timed_flush(db)?)
            })
            .await?;
            Ok(pb::FlushResponse {})
        })
        .await
    }

    async fn compact(
        &self,
        req: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let call = Call::of(&req);
        let collection = req.get_ref().collection.clone();
        observe(
            "Compact",
            &collection,
            &call,
            crate::search::compact(call.token(), &self.db, req.into_inner().collection),
        )
        .await
    }

    async fn create_backup(
        &self,
        req: Request<pb::CreateBackupRequest>,
    ) -> Result<Response<Self::CreateBackupStream>, Status> {
        let call = Call::of(&req);
        crate::backup::create(&self.db, call, req.into_inner()).map(Response::new)
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let call = Call::of(&req);
        observe("ListBackups", "", &call, async {
            crate::backup::list(&call, &self.db, req.into_inner()).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ids_are_capped() {
        let ids: Vec<String> = (0..100_000).map(|i| format!("{i:0>200}")).collect();
        let msg = missing_message(&ids);
        // Short enough that the status message cap never cuts off the count at its end.
        assert!(
            msg.len() <= crate::error::MAX_STATUS_MESSAGE_BYTES,
            "{}",
            msg.len()
        );
        assert!(msg.starts_with("documents not found (100000): "));
        assert!(msg.ends_with("and 99990 more"));
        assert_eq!(
            missing_message(&["a".into()]),
            "documents not found (1): \"a\""
        );
    }

    #[test]
    fn failed_batch_messages_keep_their_counts() {
        let long = Status::invalid_argument("é".repeat(10_000));
        let s = failed_batch(long, 7, 700);
        assert!(s.message().len() <= crate::error::MAX_STATUS_MESSAGE_BYTES);
        assert!(s.message().starts_with("batch 7: "));
        assert!(
            s.message()
                .ends_with("(7 batches, 700 documents written before it)")
        );
    }

    /// A global subscriber that keeps, for each event, its message and the fields of the span
    /// its thread was in.
    #[derive(Default)]
    struct SpanRecorder {
        next: std::sync::atomic::AtomicU64,
        spans: std::sync::Mutex<
            std::collections::HashMap<u64, (String, &'static tracing::Metadata<'static>)>,
        >,
        events: std::sync::Mutex<Vec<(String, Option<String>)>>,
    }

    thread_local! {
        static ENTERED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    struct Fields<'a>(&'a mut String);

    impl tracing::field::Visit for Fields<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }

    impl tracing::Subscriber for SpanRecorder {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let mut fields = format!("{} ", attrs.metadata().name());
            attrs.record(&mut Fields(&mut fields));
            self.spans
                .lock()
                .expect("lock")
                .insert(id, (fields, attrs.metadata()));
            tracing::span::Id::from_u64(id)
        }
        fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
            if let Some((fields, _)) = self.spans.lock().expect("lock").get_mut(&span.into_u64()) {
                values.record(&mut Fields(fields));
            }
        }
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut message = String::new();
            event.record(&mut Fields(&mut message));
            let current = ENTERED.with(|e| e.borrow().last().copied());
            let span = current.and_then(|id| {
                let spans = self.spans.lock().expect("lock");
                spans.get(&id).map(|(fields, _)| fields.clone())
            });
            self.events.lock().expect("lock").push((message, span));
        }
        fn enter(&self, span: &tracing::span::Id) {
            ENTERED.with(|e| e.borrow_mut().push(span.into_u64()));
        }
        fn exit(&self, _: &tracing::span::Id) {
            ENTERED.with(|e| e.borrow_mut().pop());
        }
        fn current_span(&self) -> tracing_core::span::Current {
            match ENTERED.with(|e| e.borrow().last().copied()) {
                None => tracing_core::span::Current::none(),
                Some(id) => match self.spans.lock().expect("lock").get(&id) {
                    Some((_, meta)) => {
                        tracing_core::span::Current::new(tracing::span::Id::from_u64(id), meta)
                    }
                    None => tracing_core::span::Current::none(),
                },
            }
        }
    }

    #[tokio::test]
    async fn blocking_work_runs_in_the_calls_span() {
        // The blocking pool's threads see only the global subscriber (the only test of this
        // binary that installs one).
        let recorder = Arc::new(SpanRecorder::default());
        tracing::subscriber::set_global_default(SharedRecorder(Arc::clone(&recorder)))
            .expect("the only global subscriber");

        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Database::open(dir.path()).expect("open"));
        let call = Call::with_timeout(None);
        let thread = observe("Count", "span_test_collection", &call, async {
            blocking(&call.token(), &db, |_| {
                tracing::info!("work on the blocking pool");
                Ok(std::thread::current().id())
            })
            .await
        })
        .await
        .expect("runs")
        .into_inner();
        assert_ne!(thread, std::thread::current().id(), "ran on another thread");

        let events = recorder.events.lock().expect("lock").clone();
        let (_, span) = events
            .iter()
            .find(|(m, _)| m.contains("work on the blocking pool"))
            .unwrap_or_else(|| panic!("no event captured: {events:?}"));
        let span = span.as_deref().unwrap_or("");
        assert!(
            span.starts_with("rpc ")
                && span.contains("rpc=\"Count\"")
                && span.contains("collection=\"span_test_collection\""),
            "the event lacks its call's span: {span:?}"
        );
        // The call's own log line is in the span too.
        assert!(
            events.iter().any(|(m, s)| m.contains("code=\"OK\"")
                && s.as_deref().is_some_and(|s| s.starts_with("rpc "))),
            "{events:?}"
        );
    }

    /// The recorder behind an `Arc`, so that the test keeps a handle to it.
    struct SharedRecorder(Arc<SpanRecorder>);

    impl tracing::Subscriber for SharedRecorder {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            self.0.enabled(m)
        }
        fn new_span(&self, a: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            self.0.new_span(a)
        }
        fn record(&self, s: &tracing::span::Id, v: &tracing::span::Record<'_>) {
            self.0.record(s, v)
        }
        fn record_follows_from(&self, a: &tracing::span::Id, b: &tracing::span::Id) {
            self.0.record_follows_from(a, b)
        }
        fn event(&self, e: &tracing::Event<'_>) {
            self.0.event(e)
        }
        fn enter(&self, s: &tracing::span::Id) {
            self.0.enter(s)
        }
        fn exit(&self, s: &tracing::span::Id) {
            self.0.exit(s)
        }
        fn current_span(&self) -> tracing_core::span::Current {
            self.0.current_span()
        }
    }

    #[test]
    fn only_empty_objects_match_everything() {
        assert!(matches_everything(&serde_json::json!({})));
        assert!(!matches_everything(&serde_json::json!({"a": 1})));
    }
}
