//! [`Database`]: the in-process API that ties storage, index and embedder together.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use latentdb_storage::{
    CollectionInfo, CollectionSpec, DataLossReport, DeleteOutcome, Document, Durability, Record,
    ScrollPage, Storage, WriteOptions,
};
use parking_lot::RwLock;
use serde_json::{Map, Value};

use latentdb_embed::{Embedder, ModelIdentity, ModelSpec};

use crate::collection::{self, Collection, CompactReport, IndexInfo};
use crate::embedding::{EmbedderSettings, identity_difference};
use crate::error::{Error, Result, bounded};
use crate::lexical::{Lexical, LexicalSettings};
use crate::options::DatabaseOptions;
use crate::recovery::{self, Quarantine};
use crate::search::{self, SearchHit, SearchRequest};

/// The result of an upsert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertResult {
    /// The ids written, in input order (generated ones included).
    pub ids: Vec<String>,
    /// The collection's change sequence after this write (every later backup captured at or
    /// past it holds the write).
    pub seq: u64,
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
    /// Collections that could not be opened, with the reason (see [`Database::quarantined`]).
    quarantine: Quarantine,
    /// Lost acknowledged writes found (and accepted) at open.
    lost: Vec<DataLossReport>,
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
    ///
    /// One collection's bad state never fails the open: a collection that cannot be opened
    /// is quarantined (see [`Database::quarantined`]). The open fails with a data-loss error
    /// (kind [`DataLoss`](crate::ErrorKind::DataLoss)), changing nothing on disk, when storage
    /// holds fewer changes of a collection than were acknowledged (its watermark, or its index
    /// dump, is ahead), unless [`DatabaseOptions::accept_data_loss`] is set.
    pub fn open_with(path: impl AsRef<Path>, options: DatabaseOptions) -> Result<Database> {
        let path = path.as_ref().to_path_buf();
        let accept_data_loss = options.storage.accept_data_loss;
        let storage = Storage::open(&path, options.storage)?;
        let opened = recovery::open_collections(&storage, &path, accept_data_loss)?;
        Ok(Database {
            path,
            storage,
            collections: RwLock::new(opened.collections),
            quarantine: opened.quarantine,
            lost: opened.lost,
            embedders: crate::embedding::Embedders::new(
                options.models_dir.clone(),
                options.allow_model_paths,
                options.max_loaded_models,
            ),
        })
    }

    /// The collections that could not be opened, with the reason, sorted by name. Every
    /// operation on one fails with [`Error::Quarantined`] (kind FailedPrecondition) except
    /// [`Database::drop_collection`], which removes it and frees its name. They are listed by
    /// [`Database::list_collections`] (their stored settings are readable).
    pub fn quarantined(&self) -> Vec<(String, String)> {
        self.quarantine.list()
    }

    /// The acknowledged writes found lost when this database was opened with
    /// [`DatabaseOptions::accept_data_loss`]: per collection, the last change sequence
    /// acknowledged and the one storage holds. Empty when nothing was lost.
    pub fn data_loss(&self) -> Vec<DataLossReport> {
        self.lost.clone()
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn coll(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections.read().get(name).cloned().ok_or_else(|| {
            self.quarantine
                .error(name)
                .unwrap_or_else(|| Error::collection_not_found(name))
        })
    }

    /// The open collections named (all open ones when `names` is empty), in cid order.
    pub(crate) fn runtimes(&self, names: &[String]) -> Result<Vec<Arc<Collection>>> {
        let mut out: Vec<Arc<Collection>> = if names.is_empty() {
            self.collections.read().values().cloned().collect()
        } else {
            let mut seen = std::collections::HashSet::new();
            names
                .iter()
                .filter(|n| seen.insert(n.as_str()))
                .map(|n| self.coll(n))
                .collect::<Result<_>>()?
        };
        out.sort_by_key(|c| c.cid);
        Ok(out)
    }

    /// Takes an online point-in-time backup of the collections in `options` (all when empty)
    /// to `target` (a local path or `s3://bucket/prefix`): see [`crate::backup`].
    pub fn backup(
        &self,
        target: &str,
        options: &crate::backup::BackupOptions,
    ) -> Result<crate::backup::BackupReport> {
        crate::backup::Backups::new(self).create(target, options, &mut |_| {})
    }

    /// The stable identity of a collection: its storage id, never reused by a later collection
    /// of the same name. Bind long-lived writers (a client stream) to it with
    /// [`Database::upsert_bound`], so that they never write into a collection re-created under
    /// the same name after a drop.
    pub fn collection_uid(&self, name: &str) -> Result<u64> {
        Ok(self.coll(name)?.cid)
    }

    /// Creates a collection. `spec.index` holds its index parameters as JSON (an
    /// [`IndexParams`](crate::IndexParams) object, missing fields taking their defaults;
    /// `null` for all defaults); the complete parameters are stored with the collection.
    /// `spec.lexical` likewise holds its [`LexicalSettings`] (the BM25 index over the
    /// documents' text, on by default, and the hybrid search defaults).
    ///
    /// Nothing is stored unless the collection works: the name, dimension and index
    /// parameters are checked and the index is built first (a parameter out of range or an
    /// allocation it makes impossible is an error, never an abort).
    pub fn create_collection(&self, mut spec: CollectionSpec) -> Result<CollectionInfo> {
        latentdb_storage::validate_name(&spec.name)?;
        latentdb_storage::validate_dimension(spec.dimension)?;
        let params = collection::params_of(&spec.index)?;
        spec.index = serde_json::to_value(params)
            .map_err(|e| Error::Internal(format!("index settings do not serialise: {e}")))?;
        let index = collection::new_index(spec.metric, spec.dimension, params)?;
        let lexical = LexicalSettings::from_json(&spec.lexical)?;
        spec.lexical = lexical.to_json();
        let mut map = self.collections.write();
        let info = self.storage.create_collection(spec)?;
        let config = self.storage.collection_config(&info.name)?;
        let lexical = Lexical::create(&collection::dump_dir(&self.path, config.cid), lexical)?;
        let coll = Collection::create(&self.path, &config, index, lexical);
        map.insert(info.name.clone(), Arc::new(coll));
        Ok(info)
    }

    /// All collections, sorted by name.
    pub fn list_collections(&self) -> Vec<CollectionInfo> {
        self.storage.list_collections()
    }

    /// One collection's information.
    pub fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        self.quarantine.check(name)?;
        Ok(self.storage.collection_info(name)?)
    }

    /// Drops a collection, everything in it and its index dump.
    ///
    /// A create of the same name may run concurrently: once storage has freed the name, the
    /// map entry is removed only while it is still this collection's, never a newer one's.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        if self
            .quarantine
            .drop_collection(&self.storage, &self.path, name)?
        {
            return Ok(());
        }
        let coll = self.coll(name)?;
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(Error::collection_not_found(name));
        }
        // The dump goes first: a dump whose collection storage no longer has is then always
        // the trace of a lost collection, never of a drop interrupted by a crash (see
        // `recovery`). A crash in between leaves a collection without a dump: rebuilt on open.
        coll.remove_dump();
        self.storage.drop_collection(name)?;
        w.dropped = true;
        drop(w);
        {
            let mut map = self.collections.write();
            if map.get(name).is_some_and(|c| Arc::ptr_eq(c, &coll)) {
                map.remove(name);
            }
        }
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
        let model = self.embed_documents(collection, &mut docs)?;
        self.write_docs(collection, docs, None, model.as_ref(), None)
    }

    /// Like [`Database::upsert`] with an explicit durability for this batch.
    pub fn upsert_with(
        &self,
        collection: &str,
        mut docs: Vec<Document>,
        durability: Durability,
    ) -> Result<UpsertResult> {
        let model = self.embed_documents(collection, &mut docs)?;
        self.write_docs(collection, docs, Some(durability), model.as_ref(), None)
    }

    /// Like [`Database::upsert`] (with `durability`, or the database's), for a writer bound to
    /// the collection whose [`collection_uid`](Database::collection_uid) was `uid`: fails with
    /// a not-found error, writing nothing, when that collection was dropped meanwhile, even if
    /// another of the same name exists now. The check is made under the collection's writer
    /// lock, so it cannot race a drop.
    pub fn upsert_bound(
        &self,
        collection: &str,
        uid: u64,
        mut docs: Vec<Document>,
        durability: Option<Durability>,
    ) -> Result<UpsertResult> {
        // Early, so that nothing is embedded for a collection that is gone.
        if self.coll(collection)?.cid != uid {
            return Err(dropped_since_bound(collection, uid));
        }
        let model = self.embed_documents(collection, &mut docs)?;
        self.write_docs(collection, docs, durability, model.as_ref(), Some(uid))
    }

    /// [`Database::upsert_with`] for documents whose vectors the caller embedded with the
    /// collection's model `model` (ingestion): refused, with nothing written, when the
    /// collection switched to another model meanwhile (a tuning run or a model rollback).
    pub(crate) fn upsert_embedded(
        &self,
        collection: &str,
        docs: Vec<Document>,
        durability: Durability,
        model: &latentdb_embed::ModelIdentity,
    ) -> Result<UpsertResult> {
        self.write_docs(collection, docs, Some(durability), Some(model), None)
    }

    /// `model`: the model that embedded some of `docs`, checked under the writer lock so that
    /// vectors of a model the collection switched away from meanwhile are never stored under
    /// the new model's identity. `uid`: the identity the writer is bound to, checked under the
    /// writer lock.
    fn write_docs(
        &self,
        name: &str,
        docs: Vec<Document>,
        durability: Option<Durability>,
        model: Option<&latentdb_embed::ModelIdentity>,
        uid: Option<u64>,
    ) -> Result<UpsertResult> {
        let _span = tracing::debug_span!("write", collection = name, docs = docs.len()).entered();
        let coll = self.coll(name)?;
        check_indexable(&coll, &docs)?;
        let sync = durability.unwrap_or(self.storage.options().durability) == Durability::Sync;
        let out = {
            let mut w = coll.writer.lock();
            if let Some(uid) = uid
                && (w.dropped || coll.cid != uid)
            {
                return Err(dropped_since_bound(name, uid));
            }
            if w.dropped {
                return Err(Error::collection_not_found(name));
            }
            if let Some(model) = model {
                self.check_model_unchanged(name, model)?;
            }
            // Written without the flush: it comes below, once the writer lock is released.
            self.write_locked(&coll, &mut w, name, docs, Alongside::Nothing)?
        };
        // Group commit: writers that queued behind this one flush concurrently, and one sled
        // flush makes all their batches durable. The batch is acknowledged only after it.
        if sync {
            let _span = tracing::debug_span!("storage.flush").entered();
            self.storage.flush()?;
        }
        Ok(UpsertResult {
            ids: out.ids,
            seq: out.seq,
        })
    }

    /// Writes `docs` to storage (buffered: the flush is the caller's) and to the index, with
    /// the collection's writer lock `w` held, and `alongside` in the same atomic storage write.
    pub(crate) fn write_locked(
        &self,
        coll: &Collection,
        w: &mut crate::collection::WriterState,
        name: &str,
        docs: Vec<Document>,
        alongside: Alongside,
    ) -> Result<latentdb_storage::UpsertOutcome> {
        let metas: Vec<Map<String, Value>> = docs
            .iter()
            .map(|d| match &d.metadata {
                Value::Object(m) => m.clone(),
                _ => Map::new(),
            })
            .collect();
        let texts: Vec<Option<String>> = if coll.lexical.enabled() {
            docs.iter().map(|d| d.text.clone()).collect()
        } else {
            Vec::new()
        };
        let (out, staged) = {
            let _span = tracing::debug_span!("storage.write").entered();
            match alongside {
                Alongside::Embedder(embedder) => {
                    let out = self.storage.replace_vectors_and_settings(
                        name,
                        docs,
                        embedder,
                        Some(Durability::Buffered),
                    )?;
                    (out, None)
                }
                // The new points are linked into the index, hidden, while storage commits
                // them, and revealed by `apply` once committed.
                other => {
                    let options = WriteOptions {
                        durability: Some(Durability::Buffered),
                        applied: other.applied(),
                    };
                    match self
                        .storage
                        .upsert_overlapped_with(name, docs, options, |inserted| {
                            coll.stage(inserted)
                        }) {
                        (Ok(out), staged) => (out, staged),
                        (Err(e), staged) => {
                            if let Some(staged) = staged {
                                coll.abandon(staged, &self.storage, w);
                            }
                            return Err(e.into());
                        }
                    }
                }
            }
        };
        let changes = (out.inserted.len() + out.removed.len()) as u64;
        let docs = out.ids.iter().cloned().zip(metas).collect();
        coll.apply(&out.removed, &out.inserted, docs, &texts, staged);
        coll.maintain(&self.storage, w, changes);
        Ok(out)
    }

    /// Fails (nothing written) when the collection's stored model is no longer `model`.
    fn check_model_unchanged(
        &self,
        name: &str,
        model: &latentdb_embed::ModelIdentity,
    ) -> Result<()> {
        let info = self.storage.collection_info(name)?;
        let now = crate::embedding::EmbedderSettings::of(name, &info.embedder)?;
        if now.is_some_and(|s| crate::embedding::identity_difference(&s.identity, model).is_none())
        {
            return Ok(());
        }
        Err(Error::FailedPrecondition(format!(
            "collection {:?} switched to another model while this batch was being embedded (a \
             tuning run or a model rollback); nothing was written: send the batch again",
            crate::error::bounded(name)
        )))
    }

    /// Switches `collection` to another model with its writer lock held throughout, so that no
    /// write interleaves: `prepare` runs under the lock (given the storage engine, to read what
    /// changed) and returns every document with its new vector and the new embedder settings;
    /// the documents and the settings are written in one storage transaction, then flushed.
    /// A batch embedded with the old model that reaches the lock afterwards is refused.
    pub(crate) fn switch_model_locked(
        &self,
        collection: &str,
        prepare: impl FnOnce(&Storage) -> Result<(Vec<Document>, Value)>,
    ) -> Result<()> {
        let coll = self.coll(collection)?;
        {
            let mut w = coll.writer.lock();
            if w.dropped {
                return Err(Error::collection_not_found(collection));
            }
            let (docs, embedder) = prepare(&self.storage)?;
            // One storage transaction: a crash never leaves the new vectors under the old
            // settings (or the reverse).
            self.write_locked(
                &coll,
                &mut w,
                collection,
                docs,
                Alongside::Embedder(embedder),
            )?;
        }
        self.flush()
    }

    /// The storage engine, for the services (tuning) that read the change log.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Fetches documents by id, in the order asked; `None` where an id does not exist.
    pub fn get(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<Option<Record>>> {
        self.quarantine.check(collection)?;
        Ok(self.storage.get(collection, ids)?)
    }

    /// Deletes documents by id; returns the ids that existed. Deleted documents are never
    /// returned by a search that starts after this returns. Deleting a parent document (one
    /// that was ingested in chunks) deletes its chunks `{id}#{n}` too.
    pub fn delete(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<String>> {
        let _span = tracing::debug_span!("delete", collection, ids = ids.len()).entered();
        let coll = self.coll(collection)?;
        let parents: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let mut ids: Vec<String> = parents.iter().map(|s| s.to_string()).collect();
        ids.extend(self.chunk_ids_of(collection, &parents)?);
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(Error::collection_not_found(collection));
        }
        self.delete_locked(&coll, &mut w, &ids, WriteOptions::default())
    }

    /// Deletes `ids` (no chunk expansion) from storage, with `options`, and from the index,
    /// with the collection's writer lock `w` held; returns the ids that existed.
    pub(crate) fn delete_locked(
        &self,
        coll: &Collection,
        w: &mut crate::collection::WriterState,
        ids: &[impl AsRef<str>],
        options: WriteOptions,
    ) -> Result<Vec<String>> {
        let DeleteOutcome {
            deleted, removed, ..
        } = {
            let _span = tracing::debug_span!("storage.write").entered();
            self.storage.delete_with(&coll.name, ids, options)?
        };
        coll.apply(&removed, &[], Vec::new(), &[], None);
        coll.maintain(&self.storage, w, removed.len() as u64);
        Ok(deleted)
    }

    /// Deletes every document whose metadata matches `filter`; returns their ids.
    ///
    /// A filter that matches every document (`{}`, `null`, `{"$and": []}`) is refused as an
    /// invalid argument: deleting everything takes [`Database::delete_all`], so that a missing
    /// filter can never empty a collection.
    pub fn delete_by_filter(&self, collection: &str, filter: &Value) -> Result<Vec<String>> {
        let coll = self.coll(collection)?;
        let filter = latentdb_index::Filter::parse(filter)
            .map_err(|e| Error::InvalidFilter(e.to_string()))?;
        if filter.is_all() {
            return Err(Error::InvalidArgument(
                "an empty filter matches every document; use delete_all".into(),
            ));
        }
        self.delete_matching(&coll, Some(&filter))
    }

    /// Deletes every document of a collection (the collection itself stays); returns how many
    /// there were.
    pub fn delete_all(&self, collection: &str) -> Result<u64> {
        let coll = self.coll(collection)?;
        Ok(self.delete_matching(&coll, None)?.len() as u64)
    }

    /// Deletes the documents matching `filter` (`None`: all), under the writer lock.
    fn delete_matching(
        &self,
        coll: &Collection,
        filter: Option<&latentdb_index::Filter>,
    ) -> Result<Vec<String>> {
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(Error::collection_not_found(&coll.name));
        }
        let ids: Vec<String> = {
            let payload = coll.payload.read();
            let points = match filter {
                Some(f) => payload.matching(f, payload.candidates(f).as_deref()),
                None => payload.all_points(),
            };
            points
                .into_iter()
                .filter_map(|p| payload.get(p).map(|e| e.id.to_string()))
                .collect()
        };
        let mut deleted = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(10_000) {
            deleted.extend(self.delete_locked(coll, &mut w, chunk, WriteOptions::default())?);
        }
        Ok(deleted)
    }

    /// The `k` nearest documents to `req.vector`, best first, among those matching
    /// `req.filter`. Never blocks on writers; never returns a deleted or replaced version.
    ///
    /// In a collection with an embedder, `req.text` is embedded with the collection's query
    /// template (and `req.task` or `req.instruction`) instead of giving `req.vector`.
    pub fn search(&self, collection: &str, req: &SearchRequest) -> Result<Vec<SearchHit>> {
        let _span = tracing::debug_span!("search", collection, queries = 1, k = req.k).entered();
        let coll = self.coll(collection)?;
        if req.text.is_none() {
            // Nothing to embed: the request as it is (no per-query copy or list).
            return search::search_one(&self.storage, &coll, req);
        }
        let req = self.embed_queries(collection, std::slice::from_ref(req))?;
        search::search_one(&self.storage, &coll, &req[0])
    }

    /// Runs several searches on one collection, in parallel; results in request order. Fails
    /// as a whole if any request is invalid.
    pub fn search_batch(
        &self,
        collection: &str,
        reqs: &[SearchRequest],
    ) -> Result<Vec<Vec<SearchHit>>> {
        let _span = tracing::debug_span!("search", collection, queries = reqs.len()).entered();
        let coll = self.coll(collection)?;
        let reqs = self.embed_queries(collection, reqs)?;
        search::search_many(&self.storage, &coll, &reqs)
    }

    /// Rebuilds a collection's index without its tombstones (searches continue meanwhile)
    /// and persists it.
    pub fn compact(&self, collection: &str) -> Result<CompactReport> {
        let coll = self.coll(collection)?;
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(Error::collection_not_found(collection));
        }
        coll.compact(&self.storage, &mut w)
    }

    /// A collection's index counters and how it was opened.
    pub fn index_stats(&self, collection: &str) -> Result<IndexInfo> {
        let coll = self.coll(collection)?;
        let w = coll.writer.lock();
        if w.dropped {
            return Err(Error::collection_not_found(collection));
        }
        Ok(coll.info(w.persisted_seq))
    }

    /// A collection's lexical settings: whether it keeps a BM25 index, its analyzer, and the
    /// defaults of lexical and hybrid searches.
    pub fn lexical_settings(&self, collection: &str) -> Result<LexicalSettings> {
        Ok(self.coll(collection)?.lexical.settings())
    }

    /// Replaces a collection's lexical settings, durably. A new analyzer, or enabling the
    /// index, rebuilds the lexical index from the stored text (under the collection's writer
    /// lock: writes wait, searches continue on the old index until the new one is in place);
    /// disabling drops it; new BM25, fusion or depth defaults apply to the next search.
    pub fn set_lexical_settings(&self, collection: &str, settings: LexicalSettings) -> Result<()> {
        settings.validate()?;
        let coll = self.coll(collection)?;
        let mut w = coll.writer.lock();
        if w.dropped {
            return Err(Error::collection_not_found(collection));
        }
        // Checked before anything is stored: the analyzer must build.
        if settings.enabled {
            latentdb_text::Analyzer::new(&settings.analyzer)
                .map_err(|e| Error::InvalidArgument(format!("lexical settings: {e}")))?;
        }
        self.storage
            .update_lexical_settings(collection, settings.to_json())?;
        coll.lexical
            .set_settings(&self.storage, collection, settings)?;
        w.dirty = true;
        Ok(())
    }

    /// The statistics of a collection's lexical index (`None`: it keeps none).
    pub fn lexical_stats(&self, collection: &str) -> Result<Option<latentdb_text::LexicalStats>> {
        Ok(self.coll(collection)?.lexical.stats())
    }

    /// The number of documents in a collection.
    pub fn count(&self, collection: &str) -> Result<u64> {
        self.quarantine.check(collection)?;
        Ok(self.storage.count(collection)?)
    }

    /// A page of documents in id order after the cursor `after` (exclusive).
    pub fn scroll(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrollPage> {
        self.quarantine.check(collection)?;
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

    // ---- collections with an embedder (see `crate::embedding`) ------------------------------

    /// Creates a collection whose documents and queries are embedded by `model` (`default` or
    /// a model directory, under the database's model path policy: see
    /// [`DatabaseOptions::allow_model_paths`]). The dimension comes from the model
    /// (`spec.dimension` must be 0 or equal to it); the model's identity is stored with the
    /// collection.
    pub fn create_collection_with_model(
        &self,
        mut spec: CollectionSpec,
        model: &ModelSpec,
    ) -> Result<CollectionInfo> {
        let model = self.embedders.caller_spec(model)?;
        let embedder = self.embedders.load(&model)?;
        let dim = embedder.dimension();
        if spec.dimension != 0 && spec.dimension != dim {
            return Err(Error::InvalidArgument(format!(
                "dimension {} differs from the model's {dim}",
                spec.dimension
            )));
        }
        spec.dimension = dim;
        let settings = EmbedderSettings::new(&model, &embedder)?;
        spec.embedder = serde_json::to_value(&settings)
            .map_err(|e| Error::Internal(format!("embedder settings do not serialise: {e}")))?;
        self.create_collection(spec)
    }

    /// The embedder settings of a collection, `None` for a vectors-only collection.
    pub fn embedder_settings(&self, collection: &str) -> Result<Option<EmbedderSettings>> {
        let info = self.collection_info(collection)?;
        EmbedderSettings::of(collection, &info.embedder)
    }

    /// The collection's model, loaded on first use and checked against the stored identity;
    /// `None` for a vectors-only collection.
    pub fn embedder(&self, collection: &str) -> Result<Option<Arc<Embedder>>> {
        let Some(settings) = self.embedder_settings(collection)? else {
            return Ok(None);
        };
        self.embedder_of(collection, &settings).map(Some)
    }

    /// The model of `settings`, loaded and checked against their identity.
    fn embedder_of(&self, collection: &str, settings: &EmbedderSettings) -> Result<Arc<Embedder>> {
        let embedder = self.embedders.load(&settings.spec())?;
        match identity_difference(&settings.identity, embedder.identity()) {
            None => Ok(embedder),
            Some(reason) => Err(Error::ModelMismatch {
                collection: collection.to_string(),
                reason,
            }),
        }
    }

    /// Checks that `model` (under the model path policy) is the collection's model: an error
    /// naming both models when it is not (or when the collection has no embedder).
    pub fn check_model(&self, collection: &str, model: &ModelSpec) -> Result<Arc<Embedder>> {
        let Some(mut settings) = self.embedder_settings(collection)? else {
            return Err(Error::ModelMismatch {
                collection: collection.to_string(),
                reason: "it stores vectors only and has no model".into(),
            });
        };
        settings.model = match self.embedders.caller_spec(model)? {
            ModelSpec::Default => "default".into(),
            ModelSpec::Dir(d) => d.to_string_lossy().into_owned(),
        };
        self.embedder_of(collection, &settings)
    }

    /// Adds or replaces a named query instruction of a collection with an embedder.
    ///
    /// The settings are read and written back under the collection's writer lock, so that a
    /// concurrent model switch (tuning, rollback) is never undone by a stale copy.
    pub fn set_task(&self, collection: &str, name: &str, instruction: &str) -> Result<()> {
        let coll = self.coll(collection)?;
        let w = coll.writer.lock();
        if w.dropped {
            return Err(Error::collection_not_found(collection));
        }
        let Some(mut settings) = self.embedder_settings(collection)? else {
            return Err(Error::FailedPrecondition(format!(
                "collection {:?} has no embedder",
                bounded(collection)
            )));
        };
        crate::embedding::check_task(&settings, name, instruction)?;
        settings
            .tasks
            .insert(name.to_string(), instruction.to_string());
        let value = serde_json::to_value(&settings)
            .map_err(|e| Error::Internal(format!("embedder settings do not serialise: {e}")))?;
        self.update_embedder_settings(collection, value)
    }

    /// Fills in the vector of each document that has text and no vector, with the
    /// collection's model, batched across the documents (before any lock is taken).
    /// Documents with a vector are left as they are; a vectors-only collection is left to
    /// storage validation. Returns the model that embedded them (`None` when none was).
    pub(crate) fn embed_documents(
        &self,
        collection: &str,
        docs: &mut [Document],
    ) -> Result<Option<ModelIdentity>> {
        if crate::embedding::needs_embedding(docs).is_empty() {
            return Ok(None);
        }
        let Some(embedder) = self.embedder(collection)? else {
            return Ok(None);
        };
        Ok(crate::embedding::embed_passages(&embedder, docs)?.then(|| embedder.identity().clone()))
    }

    /// Requests with their text queries embedded (those with a vector are kept as they are).
    pub(crate) fn embed_queries<'r>(
        &self,
        collection: &str,
        reqs: &'r [SearchRequest],
    ) -> Result<Vec<Cow<'r, SearchRequest>>> {
        let mut out: Vec<Cow<'r, SearchRequest>> = reqs.iter().map(Cow::Borrowed).collect();
        let mut todo = crate::embedding::text_queries(reqs)?;
        if todo.is_empty() {
            return Ok(out);
        }
        let Some(settings) = self.embedder_settings(collection)? else {
            // Without a model, a text query without a mode is a lexical search when the
            // collection has text to search.
            let coll = self.coll(collection)?;
            if coll.lexical.enabled() && coll.lexical.has_documents() {
                todo.retain(|&i| reqs[i].mode.is_some());
            }
            if todo.is_empty() {
                return Ok(out);
            }
            return Err(Error::FailedPrecondition(format!(
                "collection {:?} stores vectors only (no embedding model): text queries need a \
                 collection created with a model, or a lexical search (mode lexical) over stored \
                 text",
                bounded(collection)
            )));
        };
        let embedder = self.embedder_of(collection, &settings)?;
        crate::embedding::embed_query_texts(&settings, &embedder, reqs, &todo, &mut out)?;
        Ok(out)
    }

    /// The ids of the chunks of parent documents `ids` (`{id}#{n}` with metadata `parent` =
    /// `id`), found by a key-only prefix scan per parent (`Storage::chunk_ids`).
    pub(crate) fn chunk_ids_of(&self, collection: &str, ids: &[&str]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.storage.chunk_ids(collection, id)?);
        }
        Ok(out)
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

/// What a locked write ([`Database::write_locked`]) stores beside the documents, in the same
/// atomic storage write.
pub(crate) enum Alongside {
    /// Nothing.
    Nothing,
    /// The collection's new embedder settings (a model switch).
    Embedder(Value),
    /// The sequence of the replicated log entry the write applies (see `crate::replication`).
    Applied(u64),
}

impl Alongside {
    /// The applied sequence to store, if any.
    fn applied(&self) -> Option<u64> {
        match self {
            Alongside::Applied(seq) => Some(*seq),
            Alongside::Nothing | Alongside::Embedder(_) => None,
        }
    }
}

/// Fails when the collection's index would refuse a vector of `docs` (a zero vector under the
/// cosine metric, ...): such a batch must be refused before storage accepts it. A document
/// storage would refuse anyway is left to storage, whose checks report first.
pub(crate) fn check_indexable(coll: &Collection, docs: &[Document]) -> Result<()> {
    for d in docs {
        if let Some(v) = &d.vector
            && d.id
                .as_deref()
                .is_none_or(|id| latentdb_storage::validate_id(id).is_ok())
            && matches!(d.metadata, Value::Null | Value::Object(_))
            && v.len() == coll.dim
            && v.iter().all(|x| x.is_finite())
            && let Some(defect) = latentdb_index::distance::vector_defect(coll.metric, v)
        {
            return Err(Error::InvalidArgument(format!(
                "document {:?}: {defect}",
                bounded(d.id.as_deref().unwrap_or("<generated>"))
            )));
        }
    }
    Ok(())
}

/// The error for a writer bound to collection `uid` that was dropped.
fn dropped_since_bound(name: &str, uid: u64) -> Error {
    Error::NotFound(format!(
        "collection {:?} was dropped since this writer bound to it (uid {uid})",
        bounded(name)
    ))
}
