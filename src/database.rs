//! [`Database`]: the in-process API that ties storage, index and embedder together.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use latentdb_storage::{
    CollectionInfo, CollectionSpec, DeleteOutcome, Document, Durability, Metric, Record,
    ScrollPage, Storage, StorageOptions,
};
use parking_lot::RwLock;
use serde_json::{Map, Value};

use crate::collection::{self, Collection, CompactReport, INDEX_DIR, IndexInfo};
use crate::error::{Error, Result};
use crate::search::{self, SearchHit, SearchRequest};

/// Options for [`Database::open_with`], built with chained setters.
///
/// ```
/// use latentdb::{DatabaseOptions, Durability};
/// let opts = DatabaseOptions::new().durability(Durability::Buffered).max_text_bytes(4096);
/// ```
#[derive(Debug, Clone, Default)]
pub struct DatabaseOptions {
    storage: StorageOptions,
    models_dir: Option<PathBuf>,
}

impl DatabaseOptions {
    /// The defaults: synchronous durability, 256 MiB page cache, 1 MiB text limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets when writes are acknowledged. [`Durability::Sync`] (the default) never acknowledges
    /// a write that a crash can lose; [`Durability::Buffered`] is for bulk loads.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.storage.durability = durability;
        self
    }

    /// Sets the page cache size in bytes.
    pub fn cache_capacity(mut self, bytes: u64) -> Self {
        self.storage.cache_capacity = bytes;
        self
    }

    /// Sets the background flush interval used by [`Durability::Buffered`].
    pub fn flush_every_ms(mut self, ms: u64) -> Self {
        self.storage.flush_every_ms = ms;
        self
    }

    /// Sets the longest document text accepted, in bytes.
    pub fn max_text_bytes(mut self, bytes: usize) -> Self {
        self.storage.max_text_bytes = bytes;
        self
    }

    /// Sets the model cache where `default` is found (default: [`crate::embed::models_dir`]).
    pub fn models_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.models_dir = Some(dir.into());
        self
    }
}

/// The result of an upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertResult {
    /// The ids written, in input order (generated ones included).
    pub ids: Vec<String>,
}

/// An open latentdb database: a directory holding collections of documents.
///
/// Synchronous and thread-safe: share it with `Arc<Database>`. Only one process may open a
/// directory at a time. Each collection has an HNSW vector index kept in memory, in step with
/// storage, and dumped under `DIR/index/` on [`flush`](Database::flush), on drop, and after
/// enough changes; on open it is loaded and caught up, or rebuilt from storage.
pub struct Database {
    path: PathBuf,
    storage: Storage,
    collections: RwLock<HashMap<String, Arc<Collection>>>,
    embedders: crate::embedding::Embedders,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens (creating if needed) the database directory at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Self::open_with(path, DatabaseOptions::default())
    }

    /// Opens the database directory at `path` with `options`, loading (or rebuilding) the
    /// index of every collection.
    pub fn open_with(path: impl AsRef<Path>, options: DatabaseOptions) -> Result<Database> {
        let path = path.as_ref().to_path_buf();
        let storage = Storage::open(&path, options.storage)?;
        let mut map = HashMap::new();
        let mut live_dirs = HashSet::new();
        for info in storage.list_collections() {
            let config = storage.collection_config(&info.name)?;
            live_dirs.insert(config.cid.to_string());
            let coll = Collection::open(&storage, &path, &config)?;
            map.insert(info.name, Arc::new(coll));
        }
        remove_orphan_dumps(&path, &live_dirs);
        Ok(Database {
            path,
            storage,
            collections: RwLock::new(map),
            embedders: crate::embedding::Embedders::new(options.models_dir.clone()),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn coll(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| latentdb_storage::Error::CollectionNotFound(name.to_owned()).into())
    }

    /// Creates a collection. `spec.index` holds its index parameters as JSON (an
    /// [`IndexParams`](crate::IndexParams) object, missing fields taking their defaults;
    /// `null` for all defaults); the complete parameters are stored with the collection.
    pub fn create_collection(&self, mut spec: CollectionSpec) -> Result<CollectionInfo> {
        let params = collection::params_of(&spec.index)?;
        spec.index = serde_json::to_value(params)
            .map_err(|e| Error::InvalidArgument(format!("index settings: {e}")))?;
        let mut map = self.collections.write();
        let info = self.storage.create_collection(spec)?;
        let config = self.storage.collection_config(&info.name)?;
        let coll = Collection::create(&self.path, &config, params)?;
        map.insert(info.name.clone(), Arc::new(coll));
        Ok(info)
    }

    /// All collections, sorted by name.
    pub fn list_collections(&self) -> Vec<CollectionInfo> {
        self.storage.list_collections()
    }

    /// One collection's information.
    pub fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        Ok(self.storage.collection_info(name)?)
    }

    /// Drops a collection, everything in it and its index dump.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let coll = self.coll(name)?;
        let mut w = coll.writer.lock();
        self.storage.drop_collection(name)?;
        w.dropped = true;
        drop(w);
        self.collections.write().remove(name);
        coll.remove_dump();
        Ok(())
    }

    /// Inserts or replaces documents, atomically; durable on return unless the database was
    /// opened with [`Durability::Buffered`]. The documents are searchable when it returns.
    ///
    /// Concurrent upserts share their disk flushes (group commit): each batch is applied under
    /// the collection's writer lock, then flushed outside it, so a search may see a batch a
    /// few milliseconds before its writer is acknowledged; no acknowledged batch is lost.
    ///
    /// In a collection with an embedder, a document with text and no vector is embedded (all
    /// such documents of the call in batches, before any lock is taken).
    pub fn upsert(&self, collection: &str, mut docs: Vec<Document>) -> Result<UpsertResult> {
        self.embed_documents(collection, &mut docs)?;
        self.write_docs(collection, docs, None)
    }

    /// Like [`Database::upsert`] with an explicit durability for this batch.
    pub fn upsert_with(
        &self,
        collection: &str,
        mut docs: Vec<Document>,
        durability: Durability,
    ) -> Result<UpsertResult> {
        self.embed_documents(collection, &mut docs)?;
        self.write_docs(collection, docs, Some(durability))
    }

    fn write_docs(
        &self,
        name: &str,
        docs: Vec<Document>,
        durability: Option<Durability>,
    ) -> Result<UpsertResult> {
        let coll = self.coll(name)?;
        // What the index would reject must be rejected before storage accepts it.
        if coll.metric == Metric::Cosine {
            for d in &docs {
                // Only when storage would accept the document otherwise, so that its own
                // (earlier) checks keep reporting first.
                if let Some(v) = &d.vector
                    && d.id
                        .as_deref()
                        .is_none_or(|id| latentdb_storage::validate_id(id).is_ok())
                    && matches!(d.metadata, Value::Null | Value::Object(_))
                    && v.len() == coll.dim
                    && v.iter().all(|x| x.is_finite())
                    && !latentdb_index::distance::has_direction(v)
                {
                    return Err(Error::InvalidArgument(format!(
                        "document {:?}: a zero-length vector has no cosine similarity",
                        d.id.as_deref().unwrap_or("<generated>")
                    )));
                }
            }
        }
        let metas: Vec<Map<String, Value>> = docs
            .iter()
            .map(|d| match &d.metadata {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            })
            .collect();
        let sync = durability.unwrap_or(self.storage.options().durability) == Durability::Sync;
        let out = {
            let mut w = coll.writer.lock();
            if w.dropped {
                return Err(latentdb_storage::Error::CollectionNotFound(name.to_owned()).into());
            }
            // Written without the flush: it comes below, once the writer lock is released.
            let out = self
                .storage
                .upsert(name, docs, Some(Durability::Buffered))?;
            let changes = (out.inserted.len() + out.removed.len()) as u64;
            let docs = out.ids.iter().cloned().zip(metas).collect();
            coll.apply(&out.removed, &out.inserted, docs);
            coll.maintain(&self.storage, &mut w, changes);
            out
        };
        // Group commit: writers that queued behind this one flush concurrently, and one sled
        // flush makes all their batches durable. The batch is acknowledged only after it.
        if sync {
            self.storage.flush()?;
        }
        Ok(UpsertResult { ids: out.ids })
    }

    /// Fetches documents by id, in the order asked; `None` where an id does not exist.
    pub fn get(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<Option<Record>>> {
        Ok(self.storage.get(collection, ids)?)
    }

    /// Deletes documents by id; returns the ids that existed. Deleted documents are never
    /// returned by a search that starts after this returns. Deleting a parent document (one
    /// that was ingested in chunks) deletes its chunks `{id}#{n}` too.
    pub fn delete(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<String>> {
        let coll = self.coll(collection)?;
        let parents: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let mut ids: Vec<String> = parents.iter().map(|s| s.to_string()).collect();
        ids.extend(self.chunk_ids_of(collection, &parents)?);
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(latentdb_storage::Error::CollectionNotFound(collection.to_owned()).into());
        }
        let DeleteOutcome {
            deleted, removed, ..
        } = self.storage.delete(collection, &ids, None)?;
        coll.apply(&removed, &[], Vec::new());
        coll.maintain(&self.storage, &mut w, removed.len() as u64);
        Ok(deleted)
    }

    /// Deletes every document whose metadata matches `filter`; returns their ids.
    pub fn delete_by_filter(&self, collection: &str, filter: &Value) -> Result<Vec<String>> {
        let coll = self.coll(collection)?;
        let filter = latentdb_index::Filter::parse(filter)
            .map_err(|e| Error::InvalidFilter(e.to_string()))?;
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(latentdb_storage::Error::CollectionNotFound(collection.to_owned()).into());
        }
        let ids: Vec<String> = {
            let payload = coll.payload.read();
            let universe = payload.candidates(&filter);
            payload
                .matching(&filter, universe.as_deref())
                .into_iter()
                .filter_map(|p| payload.get(p).map(|e| e.id.to_string()))
                .collect()
        };
        let mut deleted = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(10_000) {
            let out = self.storage.delete(collection, chunk, None)?;
            coll.apply(&out.removed, &[], Vec::new());
            coll.maintain(&self.storage, &mut w, out.removed.len() as u64);
            deleted.extend(out.deleted);
        }
        Ok(deleted)
    }

    /// The `k` nearest documents to `req.vector`, best first, among those matching
    /// `req.filter`. Never blocks on writers; never returns a deleted or replaced version.
    ///
    /// In a collection with an embedder, `req.text` is embedded with the collection's query
    /// template (and `req.task` or `req.instruction`) instead of giving `req.vector`.
    pub fn search(&self, collection: &str, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let coll = self.coll(collection)?;
        let req = self.embed_queries(collection, std::slice::from_ref(req))?;
        self.search_in(&coll, &req[0])
    }

    fn search_in(&self, coll: &Collection, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let (q, filter) = search::validate(coll, req)?;
        let with_records = req.with_text || req.with_vectors;
        let mut points = Vec::new();
        let mut out = {
            let payload = coll.payload.read();
            let hits = search::run(coll, &payload, q, req, filter.as_ref())?;
            // Resolve ids and metadata from memory; a point removed meanwhile is skipped.
            let mut out = Vec::with_capacity(hits.len());
            if with_records {
                points.reserve_exact(hits.len());
            }
            for h in hits {
                let Some(e) = payload.get(h.id) else { continue };
                let metadata = match (&e.metadata, req.with_metadata) {
                    (Value::Object(m), true) => m.clone(),
                    _ => Map::new(),
                };
                out.push(SearchHit {
                    id: String::from(&*e.id),
                    score: h.score,
                    text: None,
                    metadata,
                    vector: None,
                });
                if with_records {
                    points.push(h.id);
                }
            }
            out
        };
        if with_records {
            // Text and vectors from storage; a record removed meanwhile drops its hit.
            let mut records = self.storage.get_points(&coll.name, &points)?.into_iter();
            out.retain_mut(|hit| match records.next().flatten() {
                Some(r) => {
                    if req.with_text {
                        hit.text = r.text;
                    }
                    if req.with_vectors {
                        hit.vector = Some(r.vector);
                    }
                    true
                }
                None => false,
            });
        }
        Ok(out)
    }

    /// Runs several searches on one collection, in parallel; results in request order. Fails
    /// as a whole if any request is invalid.
    pub fn search_batch(
        &self,
        collection: &str,
        reqs: &[SearchRequest],
    ) -> Result<Vec<Vec<SearchHit>>> {
        let coll = self.coll(collection)?;
        let reqs: Vec<SearchRequest> = self
            .embed_queries(collection, reqs)?
            .into_iter()
            .map(std::borrow::Cow::into_owned)
            .collect();
        let reqs = reqs.as_slice();
        for r in reqs {
            search::validate(&coll, r)?;
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(reqs.len().max(1));
        if threads <= 1 {
            return reqs.iter().map(|r| self.search_in(&coll, r)).collect();
        }
        let chunk = reqs.len().div_ceil(threads);
        let parts: Vec<Result<Vec<Vec<SearchHit>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = reqs
                .chunks(chunk)
                .map(|part| {
                    let coll = &coll;
                    s.spawn(move || part.iter().map(|r| self.search_in(coll, r)).collect())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::InvalidArgument("a search thread panicked".into()))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(reqs.len());
        for p in parts {
            out.extend(p?);
        }
        Ok(out)
    }

    /// Rebuilds a collection's index without its tombstones (searches continue meanwhile)
    /// and persists it.
    pub fn compact(&self, collection: &str) -> Result<CompactReport> {
        let coll = self.coll(collection)?;
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(latentdb_storage::Error::CollectionNotFound(collection.to_owned()).into());
        }
        coll.compact(&self.storage, &mut w)
    }

    /// A collection's index counters and how it was opened.
    pub fn index_stats(&self, collection: &str) -> Result<IndexInfo> {
        let coll = self.coll(collection)?;
        let persisted = coll.writer.lock().persisted_seq;
        Ok(coll.info(persisted))
    }

    /// The number of documents in a collection.
    pub fn count(&self, collection: &str) -> Result<u64> {
        Ok(self.storage.count(collection)?)
    }

    /// A page of documents in id order after the cursor `after` (exclusive).
    pub fn scroll(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrollPage> {
        Ok(self.storage.scroll(collection, after, limit)?)
    }

    /// Flushes every buffered write to disk and persists every index that changed.
    pub fn flush(&self) -> Result<()> {
        self.storage.flush()?;
        let colls: Vec<Arc<Collection>> = self.collections.read().values().cloned().collect();
        for coll in colls {
            let mut w = coll.writer.lock();
            if !w.dropped && coll.needs_persist(&self.storage, &w) {
                coll.persist(&self.storage, &mut w)?;
            }
        }
        Ok(())
    }

    pub(crate) fn embedders(&self) -> &crate::embedding::Embedders {
        &self.embedders
    }

    pub(crate) fn update_embedder_settings(&self, collection: &str, embedder: Value) -> Result<()> {
        let info = self.storage.collection_info(collection)?;
        self.storage
            .update_collection_settings(collection, embedder, info.index)?;
        Ok(())
    }

    /// Bytes the storage engine occupies on disk.
    pub fn storage_size(&self) -> Result<u64> {
        Ok(self.storage.size_on_disk()?)
    }
}

impl Drop for Database {
    /// Persists changed indexes (best effort: a failure is logged, and the next open catches
    /// up from the change log or rebuilds).
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "persisting indexes on close failed");
        }
    }
}

/// Removes dump directories of collections that no longer exist (dropped before a crash).
fn remove_orphan_dumps(root: &Path, live: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(root.join(INDEX_DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !live.contains(&name) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
