//! The router: latentdb.v1, served unchanged in front of a cluster.
//!
//! Writes are validated once, given ids once and embedded once here, then appended to the
//! write log as one atomic batch (one entry per shard touched); the call returns once the log
//! has stored the batch. Reads go to one serving replica per shard (rotating, with the other
//! replica tried when one fails or times out): Get to the ids' shards, Search and SearchBatch
//! to every shard with the per-shard top k merged by score, Count summed, Scroll merged by id.
//! Each read first waits until the replica has applied this router's last write to its shard
//! (read-your-writes through this router).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use latentdb::embed::{EmbedOptions, Embedder};
use latentdb::{CollectionSpec, Metric};
use latentdb_server::convert;
use latentdb_server::pb::{self, latent_db_client::LatentDbClient, latent_db_server::LatentDb};
use parking_lot::Mutex;
use serde_json::Value;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use crate::error::{Error, Result};
use crate::log::ShardLog;
use crate::metadata::{self, ClusterCollection, MAX_CLUSTER_NAME_LEN, MAX_SHARDS};
use crate::pb::cluster::WaitAppliedRequest;
use crate::shard::{shard_collection, shard_of};
use crate::view::View;

/// How long a read waits for a replica to apply this router's last write to its shard.
const WAIT_APPLIED_MS: u32 = 5_000;
/// How long one call to a data node may take before the other replica is tried.
const NODE_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest log entry the router writes (a shard's part of a batch is split above it;
/// NATS refuses messages over its max_payload, 1 MiB by default).
const MAX_ENTRY_BYTES: usize = 512 * 1024;
/// The most documents per Upsert (the server's default limit).
const MAX_BATCH_DOCS: usize = 10_000;
/// How long CreateCollection waits for every shard to have a serving replica.
const CREATE_WAIT: Duration = Duration::from_secs(20);

/// The router's service.
#[derive(Clone)]
pub struct RouterService {
    view: Arc<View>,
    log: Arc<dyn ShardLog>,
    embedder: Option<Arc<Embedder>>,
    model: Option<String>,
    /// Read-your-writes: the last sequence this router wrote to each `(collection uid,
    /// shard)`.
    tokens: Arc<Mutex<HashMap<(u64, u32), u64>>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Is this a failure of the replica (try another) rather than of the request?
fn replica_failed(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
            | Code::Aborted
    )
}

impl RouterService {
    /// A router over `view` (refreshed by its caller) and `log`; `embedder` (the `--model`)
    /// embeds texts for the collections created with that model.
    pub fn new(
        view: Arc<View>,
        log: Arc<dyn ShardLog>,
        embedder: Option<Arc<Embedder>>,
        model: Option<String>,
    ) -> RouterService {
        RouterService {
            view,
            log,
            embedder,
            model,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn collection(&self, name: &str) -> Result<ClusterCollection> {
        self.view
            .snapshot()
            .collections
            .get(name)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| Error::NotFound(format!("collection {name:?} not found")))
    }

    fn token(&self, c: &ClusterCollection, shard: u32) -> u64 {
        self.tokens
            .lock()
            .get(&(c.uid, shard))
            .copied()
            .unwrap_or(0)
    }

    /// Runs `call` on a serving replica of `shard` of `c` that has applied this router's last
    /// write to the shard; tries the next replica when one fails.
    async fn on_shard<T, F, Fut>(
        &self,
        c: &ClusterCollection,
        shard: u32,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn(LatentDbClient<Channel>, String) -> Fut,
        Fut: Future<Output = std::result::Result<Response<T>, Status>>,
    {
        let mut replicas = self.view.snapshot().serving(c, shard);
        if replicas.is_empty() {
            // The view may be behind (a node that just came back): read it again once.
            self.view.refresh().await?;
            replicas = self.view.snapshot().serving(c, shard);
        }
        if replicas.is_empty() {
            return Err(Error::Unavailable(format!(
                "no replica of shard {shard} of {:?} is serving",
                c.spec.name
            ))
            .into());
        }
        let n = replicas.len();
        replicas.rotate_left(self.view.next_turn() % n);
        let name = shard_collection(&c.spec.name, shard);
        let min_seq = self.token(c, shard);
        let mut last_err = None;
        for (node, addr) in replicas {
            if min_seq > 0 {
                let caught_up = match self.view.node_client(&addr) {
                    Ok(mut nc) => nc
                        .wait_applied(WaitAppliedRequest {
                            shard_collection: name.clone(),
                            seq: min_seq,
                            timeout_ms: WAIT_APPLIED_MS,
                        })
                        .await
                        .map(|r| r.into_inner().applied_seq >= min_seq),
                    Err(e) => Err(e.into()),
                };
                match caught_up {
                    Ok(true) => {}
                    Ok(false) => {
                        last_err = Some(Status::unavailable(format!(
                            "replica of shard {shard} on {node} is behind this router's last write"
                        )));
                        continue;
                    }
                    Err(s) => {
                        last_err = Some(s);
                        continue;
                    }
                }
            }
            let client = match self.view.client(&addr) {
                Ok(c) => c,
                Err(e) => return Err(e.into()),
            };
            match tokio::time::timeout(NODE_CALL_TIMEOUT, call(client, name.clone())).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner()),
                Ok(Err(s)) if replica_failed(&s) => {
                    tracing::warn!(%node, shard, status = %s, "replica failed: trying another");
                    last_err = Some(s);
                }
                Ok(Err(s)) => return Err(s),
                Err(_) => {
                    tracing::warn!(%node, shard, "replica timed out: trying another");
                    last_err = Some(Status::deadline_exceeded(format!("{node} timed out")));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| Status::unavailable("no replica answered")))
    }

    /// Embeds document texts with the router's model (the collection's).
    async fn embed(
        &self,
        c: &ClusterCollection,
        texts: Vec<String>,
        opts: EmbedOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let embedder = match (&c.model, &self.embedder) {
            (Some(_), Some(e)) => Arc::clone(e),
            (None, _) => {
                return Err(Error::FailedPrecondition(format!(
                    "collection {:?} has no model: give vectors",
                    c.spec.name
                )));
            }
            (Some(m), None) => {
                return Err(Error::FailedPrecondition(format!(
                    "collection {:?} embeds with {m:?}, and this router has no model: start it \
                     with --model {m}",
                    c.spec.name
                )));
            }
        };
        tokio::task::spawn_blocking(move || embedder.embed(&texts, &opts))
            .await
            .map_err(|e| Error::Internal(format!("embedding task: {e}")))?
            .map_err(|e| Error::Db(e.into()))
    }

    /// Validates `docs` (ids, vectors, metadata), gives ids to those without and embeds those
    /// with text and no vector: the documents as every replica will store them.
    async fn prepare_docs(
        &self,
        c: &ClusterCollection,
        docs: Vec<pb::Document>,
    ) -> Result<Vec<latentdb::Document>> {
        if docs.len() > MAX_BATCH_DOCS {
            return Err(Error::InvalidArgument(format!(
                "documents per call is {}, the limit is {MAX_BATCH_DOCS}",
                docs.len()
            )));
        }
        let mut out: Vec<latentdb::Document> = docs.into_iter().map(convert::document).collect();
        let mut seen = std::collections::HashSet::new();
        for d in &mut out {
            let id = d.id.get_or_insert_with(|| uuid::Uuid::now_v7().to_string());
            if id.len() > latentdb::MAX_ID_BYTES || id.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "document id of {} bytes: ids are 1 to {} bytes",
                    id.len(),
                    latentdb::MAX_ID_BYTES
                )));
            }
            if !seen.insert(id.clone()) {
                return Err(Error::InvalidArgument(format!(
                    "document id {id:?} is given twice"
                )));
            }
            if !matches!(d.metadata, Value::Object(_) | Value::Null) {
                return Err(Error::InvalidArgument(format!(
                    "document {id:?}: metadata must be an object"
                )));
            }
        }
        let to_embed: Vec<usize> = (0..out.len())
            .filter(|&i| out[i].vector.is_none() && out[i].text.is_some())
            .collect();
        if !to_embed.is_empty() {
            let texts = to_embed
                .iter()
                .map(|&i| out[i].text.clone().unwrap_or_default())
                .collect();
            let vectors = self.embed(c, texts, EmbedOptions::default()).await?;
            for (i, v) in to_embed.into_iter().zip(vectors) {
                out[i].vector = Some(v);
            }
        }
        for d in &out {
            let id = d.id.as_deref().unwrap_or_default();
            let Some(v) = &d.vector else {
                return Err(Error::InvalidArgument(format!(
                    "document {id:?} has no vector (and no text to embed)"
                )));
            };
            if v.len() != c.spec.dimension {
                return Err(Error::InvalidArgument(format!(
                    "document {id:?}: vector of dimension {}, the collection's is {}",
                    v.len(),
                    c.spec.dimension
                )));
            }
            if !v.iter().all(|x| x.is_finite()) {
                return Err(Error::InvalidArgument(format!(
                    "document {id:?}: a non-finite component"
                )));
            }
            if c.spec.metric == Metric::Cosine && v.iter().all(|x| *x == 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "document {id:?}: a zero vector has no cosine similarity"
                )));
            }
        }
        Ok(out)
    }

    /// Appends `entries` as one atomic batch and records the shards' new sequences.
    async fn append(&self, c: &ClusterCollection, entries: Vec<(u32, Vec<u8>)>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let shards: Vec<u32> = entries.iter().map(|(s, _)| *s).collect();
        let batch_id = uuid::Uuid::now_v7().simple().to_string();
        let seqs = self.log.append(c.uid, batch_id, entries).await?;
        let mut tokens = self.tokens.lock();
        for (shard, seq) in shards.into_iter().zip(seqs) {
            let t = tokens.entry((c.uid, shard)).or_insert(0);
            *t = (*t).max(seq);
        }
        Ok(())
    }

    async fn create(&self, req: pb::CreateCollectionRequest) -> Result<pb::CollectionInfo> {
        let shards = req.shards.max(1);
        let replicas = req.replicas.max(1);
        if shards > MAX_SHARDS {
            return Err(Error::InvalidArgument(format!(
                "at most {MAX_SHARDS} shards"
            )));
        }
        if req.name.chars().count() > MAX_CLUSTER_NAME_LEN || req.name.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "a cluster collection's name is 1-{MAX_CLUSTER_NAME_LEN} characters of [A-Za-z0-9_.-]"
            )));
        }
        let model = (!req.model.is_empty()).then(|| req.model.clone());
        let (mut spec, _) = convert::collection_spec(pb::CreateCollectionRequest {
            model: String::new(),
            ..req
        })
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        if let Some(m) = &model {
            let Some(embedder) = &self.embedder else {
                return Err(Error::FailedPrecondition(format!(
                    "this router has no model: start it with --model {m}"
                )));
            };
            if self.model.as_deref() != Some(m.as_str()) {
                return Err(Error::FailedPrecondition(format!(
                    "this router embeds with {:?}, not {m:?}",
                    self.model.as_deref().unwrap_or_default()
                )));
            }
            if spec.dimension == 0 {
                spec.dimension = embedder.dimension();
            } else if spec.dimension != embedder.dimension() {
                return Err(Error::InvalidArgument(format!(
                    "dimension {} differs from the model's {}",
                    spec.dimension,
                    embedder.dimension()
                )));
            }
        }
        // The local shards are checked by a scratch create: the same rules as a single node.
        check_spec(&spec)?;
        let etcd = self.view.etcd();
        let mut nodes: Vec<String> = metadata::nodes(etcd)
            .await?
            .into_iter()
            .map(|n| n.node_id)
            .collect();
        nodes.sort();
        let assignment = metadata::assign(&nodes, shards, replicas)?;
        let record = ClusterCollection {
            spec: spec.clone(),
            model,
            uid: uuid::Uuid::now_v7().as_u128() as u64 & (u64::MAX >> 1),
            shards,
            replicas,
            epoch: 1,
            assignment,
            created_ms: now_ms(),
        };
        // The log first: a collection record always has its stream.
        self.log.create(record.uid).await?;
        if !etcd
            .create(
                &metadata::collection_key(&spec.name),
                metadata::encode(&record),
                0,
            )
            .await?
        {
            let _ = self.log.remove(record.uid).await;
            return Err(Error::AlreadyExists(format!(
                "collection {:?} exists",
                spec.name
            )));
        }
        // Acknowledge once every shard can serve.
        let deadline = tokio::time::Instant::now() + CREATE_WAIT;
        loop {
            self.view.refresh().await?;
            let snap = self.view.snapshot();
            let ready = (0..shards).all(|s| !snap.serving(&record, s).is_empty());
            if ready {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "collection {:?} was created, but not every shard has a serving replica yet",
                    spec.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(self.info(&record, 0))
    }

    fn info(&self, c: &ClusterCollection, count: u64) -> pb::CollectionInfo {
        let mut info = convert::collection_info(latentdb::CollectionInfo {
            name: c.spec.name.clone(),
            count,
            dimension: c.spec.dimension,
            metric: c.spec.metric,
            created_ms: c.created_ms,
            format_version: 0,
            embedder: match &c.model {
                Some(m) => serde_json::json!({"model": m}),
                None => Value::Null,
            },
            index: c.spec.index.clone(),
            lexical: c.spec.lexical.clone(),
        });
        info.format_version = 0;
        info.shards = c.shards;
        info.replicas = c.replicas;
        info
    }

    async fn count_of(&self, c: &ClusterCollection) -> Result<u64, Status> {
        let counts = join_all((0..c.shards).map(|s| {
            self.on_shard(c, s, |mut client, name| async move {
                client.count(pb::CountRequest { collection: name }).await
            })
        }))
        .await;
        let mut total = 0;
        for r in counts {
            total += r?.count;
        }
        Ok(total)
    }

    /// The query as a shard runs it: texts embedded here, so that shards need no model.
    async fn shard_query(
        &self,
        c: &ClusterCollection,
        mut q: pb::SearchRequest,
    ) -> Result<pb::SearchRequest> {
        let mode = pb::SearchMode::try_from(q.mode).unwrap_or(pb::SearchMode::Unspecified);
        if matches!(mode, pb::SearchMode::Lexical | pb::SearchMode::Hybrid) {
            return Err(Error::FailedPrecondition(
                "lexical and hybrid search are not available through a cluster router yet (BM25 \
                 statistics are per shard): use a dense search"
                    .into(),
            ));
        }
        if let Some(text) = q.text.take() {
            if !q.vector.is_empty() {
                return Err(Error::InvalidArgument(
                    "a dense search takes a vector or a text, not both".into(),
                ));
            }
            let mut instruction = latentdb_server::instruction(q.task.take(), q.instruction.take())
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            // As a single node does: NV-Embed queries without one get the default instruction.
            if instruction.is_none()
                && self
                    .embedder
                    .as_ref()
                    .is_some_and(|e| e.identity().model_type == "nvembed")
            {
                instruction = Some(latentdb::embed::Instruction::parse(
                    latentdb::DEFAULT_QUERY_INSTRUCTION,
                ));
            }
            let opts = EmbedOptions {
                instruction,
                ..EmbedOptions::default()
            };
            q.vector = self
                .embed(c, vec![text], opts)
                .await?
                .pop()
                .unwrap_or_default();
        }
        q.mode = pb::SearchMode::Dense as i32;
        Ok(q)
    }

    async fn search_one(
        &self,
        c: &ClusterCollection,
        q: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, Status> {
        let k = if q.k == 0 { 10 } else { q.k as usize };
        let q = self.shard_query(c, q).await?;
        let parts = join_all((0..c.shards).map(|s| {
            let q = q.clone();
            self.on_shard(c, s, move |mut client, name| {
                let mut q = q.clone();
                q.collection = name;
                async move { client.search(q).await }
            })
        }))
        .await;
        let mut lists = Vec::with_capacity(parts.len());
        for p in parts {
            lists.push(p?.hits);
        }
        Ok(pb::SearchResponse {
            hits: crate::merge::top_k(lists, k),
        })
    }
}

/// The checks a single node makes of a collection spec, made once at the router.
fn check_spec(spec: &CollectionSpec) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("latentdb-router-check-{}", uuid::Uuid::now_v7()));
    let result = (|| {
        let db = latentdb::Database::open(&dir)?;
        db.create_collection(spec.clone()).map(|_| ())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result.map_err(Error::from)
}

/// Splits `docs` (of one shard) into log entries of at most [`MAX_ENTRY_BYTES`] (estimated).
fn upsert_entries(shard: u32, docs: Vec<latentdb::Document>, out: &mut Vec<(u32, Vec<u8>)>) {
    let mut part = Vec::new();
    let mut bytes = 0;
    for d in docs {
        let size = 32
            + d.id.as_ref().map_or(0, String::len)
            + d.text.as_ref().map_or(0, String::len)
            + d.vector.as_ref().map_or(0, |v| v.len() * 4)
            + if d.metadata.is_null() {
                0
            } else {
                d.metadata.to_string().len()
            };
        if !part.is_empty() && bytes + size > MAX_ENTRY_BYTES {
            out.push((shard, crate::op::encode_upsert(&std::mem::take(&mut part))));
            bytes = 0;
        }
        bytes += size;
        part.push(d);
    }
    if !part.is_empty() {
        out.push((shard, crate::op::encode_upsert(&part)));
    }
}

fn unsupported(what: &str) -> Status {
    Status::unimplemented(format!(
        "{what} is not available through a cluster router yet: call it on a single node"
    ))
}

type R<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl LatentDb for RouterService {
    async fn create_collection(
        &self,
        req: Request<pb::CreateCollectionRequest>,
    ) -> R<pb::CollectionInfo> {
        Ok(Response::new(self.create(req.into_inner()).await?))
    }

    async fn get_collection(
        &self,
        req: Request<pb::GetCollectionRequest>,
    ) -> R<pb::CollectionInfo> {
        let c = self.collection(&req.into_inner().name)?;
        let count = self.count_of(&c).await?;
        Ok(Response::new(self.info(&c, count)))
    }

    async fn list_collections(
        &self,
        _req: Request<pb::ListCollectionsRequest>,
    ) -> R<pb::ListCollectionsResponse> {
        let snap = self.view.snapshot();
        let mut all: Vec<&ClusterCollection> = snap.collections.values().map(|(c, _)| c).collect();
        all.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        let mut collections = Vec::with_capacity(all.len());
        for c in all {
            let count = self.count_of(c).await?;
            collections.push(self.info(c, count));
        }
        Ok(Response::new(pb::ListCollectionsResponse { collections }))
    }

    async fn delete_collection(
        &self,
        req: Request<pb::DeleteCollectionRequest>,
    ) -> R<pb::DeleteCollectionResponse> {
        let name = req.into_inner().name;
        let c = match metadata::collection(self.view.etcd(), &name).await? {
            Some((c, _)) => c,
            None => return Err(Error::NotFound(format!("collection {name:?} not found")).into()),
        };
        self.view
            .etcd()
            .delete(&metadata::collection_key(&name))
            .await?;
        self.log.remove(c.uid).await?;
        // The replicas' statuses (their nodes also delete them as they drop the replicas).
        self.view
            .etcd()
            .delete_prefix(&metadata::replicas_prefix(&name))
            .await?;
        self.view.refresh().await?;
        Ok(Response::new(pb::DeleteCollectionResponse {}))
    }

    async fn upsert(&self, req: Request<pb::UpsertRequest>) -> R<pb::UpsertResponse> {
        let req = req.into_inner();
        let c = self.collection(&req.collection)?;
        let docs = self.prepare_docs(&c, req.documents).await?;
        let ids: Vec<String> = docs
            .iter()
            .map(|d| d.id.clone().unwrap_or_default())
            .collect();
        let mut by_shard: Vec<Vec<latentdb::Document>> = vec![Vec::new(); c.shards as usize];
        for d in docs {
            let s = shard_of(d.id.as_deref().unwrap_or_default(), c.shards);
            by_shard[s as usize].push(d);
        }
        let mut entries = Vec::new();
        for (s, docs) in by_shard.into_iter().enumerate() {
            if !docs.is_empty() {
                upsert_entries(s as u32, docs, &mut entries);
            }
        }
        self.append(&c, entries).await?;
        Ok(Response::new(pb::UpsertResponse { ids }))
    }

    async fn upsert_stream(
        &self,
        _req: Request<tonic::Streaming<pb::UpsertRequest>>,
    ) -> R<pb::UpsertStreamResponse> {
        Err(unsupported("UpsertStream"))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> R<pb::GetResponse> {
        let req = req.into_inner();
        let c = self.collection(&req.collection)?;
        let mut by_shard: HashMap<u32, Vec<String>> = HashMap::new();
        for id in &req.ids {
            by_shard
                .entry(shard_of(id, c.shards))
                .or_default()
                .push(id.clone());
        }
        let with_vectors = req.with_vectors;
        let parts = join_all(by_shard.into_iter().map(|(s, ids)| {
            let c = &c;
            async move {
                self.on_shard(c, s, move |mut client, name| {
                    let ids = ids.clone();
                    async move {
                        client
                            .get(pb::GetRequest {
                                collection: name,
                                ids,
                                with_vectors,
                                require_all: false,
                            })
                            .await
                    }
                })
                .await
            }
        }))
        .await;
        let mut found: HashMap<String, pb::Record> = HashMap::new();
        for p in parts {
            for r in p?.records {
                found.insert(r.id.clone(), r);
            }
        }
        let mut records = Vec::new();
        let mut missing_ids = Vec::new();
        for id in req.ids {
            match found.get(&id) {
                Some(r) => records.push(r.clone()),
                None => missing_ids.push(id),
            }
        }
        if req.require_all && !missing_ids.is_empty() {
            let first: Vec<&str> = missing_ids.iter().take(10).map(String::as_str).collect();
            return Err(Status::not_found(format!(
                "{} ids not found: {}",
                missing_ids.len(),
                first.join(", ")
            )));
        }
        Ok(Response::new(pb::GetResponse {
            records,
            missing_ids,
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> R<pb::DeleteResponse> {
        let req = req.into_inner();
        let c = self.collection(&req.collection)?;
        if req.filter.is_some() || req.all_documents {
            return Err(unsupported("Delete by filter or all_documents"));
        }
        // Which ids exist (what the call reports), then the delete through the log.
        let existing = self
            .get(Request::new(pb::GetRequest {
                collection: req.collection.clone(),
                ids: req.ids.clone(),
                with_vectors: false,
                require_all: false,
            }))
            .await?
            .into_inner()
            .records;
        let mut by_shard: HashMap<u32, Vec<String>> = HashMap::new();
        for id in req.ids {
            by_shard
                .entry(shard_of(&id, c.shards))
                .or_default()
                .push(id);
        }
        let mut shards: Vec<u32> = by_shard.keys().copied().collect();
        shards.sort_unstable();
        let entries = shards
            .into_iter()
            .map(|s| (s, crate::op::encode_delete(&by_shard[&s])))
            .collect();
        self.append(&c, entries).await?;
        let deleted_ids: Vec<String> = existing.into_iter().map(|r| r.id).collect();
        Ok(Response::new(pb::DeleteResponse {
            deleted_count: deleted_ids.len() as u64,
            deleted_ids,
        }))
    }

    async fn count(&self, req: Request<pb::CountRequest>) -> R<pb::CountResponse> {
        let c = self.collection(&req.into_inner().collection)?;
        Ok(Response::new(pb::CountResponse {
            count: self.count_of(&c).await?,
        }))
    }

    async fn scroll(&self, req: Request<pb::ScrollRequest>) -> R<pb::ScrollResponse> {
        let req = req.into_inner();
        let c = self.collection(&req.collection)?;
        let limit = if req.limit == 0 { 100 } else { req.limit };
        let parts = join_all((0..c.shards).map(|s| {
            let (after, with_vectors) = (req.after.clone(), req.with_vectors);
            self.on_shard(&c, s, move |mut client, name| {
                let after = after.clone();
                async move {
                    client
                        .scroll(pb::ScrollRequest {
                            collection: name,
                            after,
                            limit,
                            with_vectors,
                        })
                        .await
                }
            })
        }))
        .await;
        let mut pages = Vec::with_capacity(parts.len());
        for p in parts {
            pages.push(p?);
        }
        let (records, next_cursor) = crate::merge::scroll(pages, limit as usize);
        Ok(Response::new(pb::ScrollResponse {
            records,
            next_cursor,
        }))
    }

    async fn search(&self, req: Request<pb::SearchRequest>) -> R<pb::SearchResponse> {
        let q = req.into_inner();
        let c = self.collection(&q.collection)?;
        Ok(Response::new(self.search_one(&c, q).await?))
    }

    async fn search_batch(
        &self,
        req: Request<pb::SearchBatchRequest>,
    ) -> R<pb::SearchBatchResponse> {
        let req = req.into_inner();
        let c = self.collection(&req.collection)?;
        let mut results = Vec::with_capacity(req.queries.len());
        for mut q in req.queries {
            q.collection = c.spec.name.clone();
            results.push(self.search_one(&c, q).await?);
        }
        Ok(Response::new(pb::SearchBatchResponse { results }))
    }

    async fn embed(&self, req: Request<pb::EmbedRequest>) -> R<pb::EmbedResponse> {
        let req = req.into_inner();
        let embedder = self.embedder.clone().ok_or_else(|| {
            Status::failed_precondition("this router has no model: start it with --model")
        })?;
        let instruction = latentdb_server::instruction(req.task, req.instruction)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let opts = EmbedOptions {
            instruction,
            ..EmbedOptions::default()
        };
        let texts = req.texts;
        let dimension = embedder.dimension() as u32;
        let vectors = tokio::task::spawn_blocking(move || embedder.embed(&texts, &opts))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Error::Db(e.into()).into_status())?;
        Ok(Response::new(pb::EmbedResponse {
            vectors: vectors
                .into_iter()
                .map(|values| pb::Vector { values })
                .collect(),
            dimension,
        }))
    }

    async fn flush(&self, _req: Request<pb::FlushRequest>) -> R<pb::FlushResponse> {
        // An acknowledged write is in the replicated log already; replicas flush each entry.
        Ok(Response::new(pb::FlushResponse {}))
    }

    async fn compact(&self, _req: Request<pb::CompactRequest>) -> R<pb::CompactResponse> {
        Err(unsupported("Compact"))
    }

    type CreateBackupStream =
        futures_util::stream::BoxStream<'static, std::result::Result<pb::BackupProgress, Status>>;

    async fn create_backup(
        &self,
        _req: Request<pb::CreateBackupRequest>,
    ) -> R<Self::CreateBackupStream> {
        Err(unsupported("CreateBackup"))
    }

    async fn list_backups(
        &self,
        _req: Request<pb::ListBackupsRequest>,
    ) -> R<pb::ListBackupsResponse> {
        Err(unsupported("ListBackups"))
    }
}
