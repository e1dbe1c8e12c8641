//! [`Storage`]: the sled-backed engine that owns collections and documents.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::collection::{
    CollectionConfig, CollectionInfo, CollectionSpec, validate_dimension, validate_name,
};
use crate::document::{Document, Record, validate, validate_id};
use crate::error::{Error, Result};
use crate::key;
use crate::options::{Durability, StorageOptions};
use crate::record::{self, Change};

/// The storage format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// The name of the lock file inside a database directory.
pub const LOCK_FILE: &str = "LOCK";

/// The name of sled's directory inside a database directory.
pub const SLED_DIR: &str = "sled";

/// The largest page [`Storage::scroll`] returns.
pub const MAX_SCROLL_PAGE: usize = 10_000;

/// The outcome of a successful upsert.
#[derive(Debug, Clone, Default)]
pub struct UpsertOutcome {
    /// The ids written, in input order (generated ones included).
    pub ids: Vec<String>,
    /// The new points with their vectors, in input order (for the index).
    pub inserted: Vec<(u32, Vec<f32>)>,
    /// Points of replaced documents that no longer exist (for the index).
    pub removed: Vec<u32>,
    /// The change sequence after this write.
    pub seq: u64,
}

/// The outcome of a successful delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOutcome {
    /// The ids that existed and were deleted.
    pub deleted: Vec<String>,
    /// Their points (for the index).
    pub removed: Vec<u32>,
    /// The change sequence after this write.
    pub seq: u64,
}

/// One page of a scroll.
#[derive(Debug, Clone, Default)]
pub struct ScrollPage {
    /// Documents in id order.
    pub records: Vec<Record>,
    /// Pass this as `after` to get the next page; `None` at the end.
    pub next_cursor: Option<String>,
}

/// Per-collection write counters, guarded by the collection's writer lock.
#[derive(Debug)]
struct Counters {
    next_point: u32,
    seq: u64,
    dropped: bool,
}

/// An open collection.
struct CollectionState {
    config: CollectionConfig,
    tree: sled::Tree,
    writer: Mutex<Counters>,
    count: AtomicU64,
    seq: AtomicU64,
}

/// The storage engine: one database directory, many collections.
///
/// Thread-safe; writers to one collection are serialised, readers never wait for them.
pub struct Storage {
    path: PathBuf,
    db: sled::Db,
    registry: sled::Tree,
    options: StorageOptions,
    collections: RwLock<HashMap<String, Arc<CollectionState>>>,
    // Held for the life of the engine: the advisory lock that keeps other processes out.
    _lock: File,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Storage {
    /// Opens (creating if needed) the database directory `path`.
    ///
    /// Fails with [`Error::Locked`] when another process has it open, and with
    /// [`Error::UnsupportedFormat`] when it was written by an incompatible version.
    pub fn open(path: impl AsRef<Path>, options: StorageOptions) -> Result<Storage> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(io_err(&path))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { path }),
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let db = sled::Config::new()
            .path(path.join(SLED_DIR))
            .cache_capacity(options.cache_capacity)
            .flush_every_ms(Some(options.flush_every_ms.max(1)))
            .open()?;
        match db.get(key::FORMAT_VERSION_KEY)? {
            None => {
                db.insert(key::FORMAT_VERSION_KEY, &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let found = key::be_u32(&v)?;
                if found != FORMAT_VERSION {
                    return Err(Error::UnsupportedFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        let registry = db.open_tree(key::REGISTRY_TREE)?;
        let storage = Storage {
            path,
            db,
            registry,
            options,
            collections: RwLock::new(HashMap::new()),
            _lock: lock,
        };
        storage.load_collections()?;
        Ok(storage)
    }

    fn load_collections(&self) -> Result<()> {
        let mut map = HashMap::new();
        let mut live_cids = HashSet::new();
        for item in self.registry.iter() {
            let (name, value) = item?;
            let config: CollectionConfig = serde_json::from_slice(&value).map_err(|e| {
                Error::Corrupt(format!(
                    "collection config of {:?}: {e}",
                    String::from_utf8_lossy(&name)
                ))
            })?;
            if config.format_version != FORMAT_VERSION {
                return Err(Error::UnsupportedFormat {
                    found: config.format_version,
                    supported: FORMAT_VERSION,
                });
            }
            live_cids.insert(config.cid);
            let state = self.open_state(config)?;
            map.insert(state.config.spec.name.clone(), Arc::new(state));
        }
        // A crash between unregistering a collection and dropping its tree leaves an orphan.
        for name in self.db.tree_names() {
            if let Some(cid) = key::parse_collection_tree(&name)
                && !live_cids.contains(&cid)
            {
                tracing::info!(
                    cid,
                    "dropping the data of a collection dropped before a crash"
                );
                self.db.drop_tree(&name)?;
            }
        }
        *self.collections.write() = map;
        Ok(())
    }

    fn open_state(&self, config: CollectionConfig) -> Result<CollectionState> {
        let tree = self.db.open_tree(key::collection_tree(config.cid))?;
        let next_point = tree
            .get(key::META_NEXT_POINT)?
            .map(|v| key::be_u32(&v))
            .transpose()?
            .unwrap_or(0);
        let seq = tree
            .get(key::META_SEQ)?
            .map(|v| key::be_u64(&v))
            .transpose()?
            .unwrap_or(0);
        let count = tree
            .get(key::META_COUNT)?
            .map(|v| key::be_u64(&v))
            .transpose()?
            .unwrap_or(0);
        Ok(CollectionState {
            config,
            tree,
            writer: Mutex::new(Counters {
                next_point,
                seq,
                dropped: false,
            }),
            count: AtomicU64::new(count),
            seq: AtomicU64::new(seq),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the storage was opened with.
    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    fn state(&self, name: &str) -> Result<Arc<CollectionState>> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))
    }

    fn info_of(state: &CollectionState) -> CollectionInfo {
        let c = &state.config;
        CollectionInfo {
            name: c.spec.name.clone(),
            count: state.count.load(Ordering::Acquire),
            dimension: c.spec.dimension,
            metric: c.spec.metric,
            created_ms: c.created_ms,
            format_version: c.format_version,
            embedder: c.spec.embedder.clone(),
            index: c.spec.index.clone(),
        }
    }

    /// Creates a collection. Durable when it returns.
    pub fn create_collection(&self, spec: CollectionSpec) -> Result<CollectionInfo> {
        validate_name(&spec.name)?;
        validate_dimension(spec.dimension)?;
        let mut map = self.collections.write();
        if map.contains_key(&spec.name) {
            return Err(Error::CollectionExists(spec.name));
        }
        let config = CollectionConfig {
            cid: self.db.generate_id()?,
            spec,
            created_ms: now_ms(),
            format_version: FORMAT_VERSION,
        };
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::Corrupt(format!("collection config does not serialise: {e}")))?;
        let name = config.spec.name.clone();
        if self
            .registry
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(bytes))?
            .is_err()
        {
            return Err(Error::CollectionExists(name));
        }
        let state = self.open_state(config)?;
        self.db.flush()?;
        let info = Self::info_of(&state);
        map.insert(name, Arc::new(state));
        Ok(info)
    }

    /// All collections, sorted by name.
    pub fn list_collections(&self) -> Vec<CollectionInfo> {
        let mut out: Vec<_> = self
            .collections
            .read()
            .values()
            .map(|s| Self::info_of(s))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// One collection's information.
    pub fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        Ok(Self::info_of(&*self.state(name)?))
    }

    /// One collection's stored configuration.
    pub fn collection_config(&self, name: &str) -> Result<CollectionConfig> {
        Ok(self.state(name)?.config.clone())
    }

    /// Replaces the embedder and index settings of a collection (name, dimension and metric
    /// cannot change). Durable when it returns.
    pub fn update_collection_settings(
        &self,
        name: &str,
        embedder: serde_json::Value,
        index: serde_json::Value,
    ) -> Result<CollectionInfo> {
        let mut map = self.collections.write();
        let old = map
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))?;
        let mut config = old.config.clone();
        config.spec.embedder = embedder;
        config.spec.index = index;
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::Corrupt(format!("collection config does not serialise: {e}")))?;
        // Hold the writer lock so no write races the swap of the in-memory state.
        let counters = old.writer.lock();
        self.registry.insert(name.as_bytes(), bytes)?;
        self.db.flush()?;
        let state = CollectionState {
            config,
            tree: old.tree.clone(),
            writer: Mutex::new(Counters {
                next_point: counters.next_point,
                seq: counters.seq,
                dropped: false,
            }),
            count: AtomicU64::new(old.count.load(Ordering::Acquire)),
            seq: AtomicU64::new(old.seq.load(Ordering::Acquire)),
        };
        drop(counters);
        let info = Self::info_of(&state);
        map.insert(name.to_owned(), Arc::new(state));
        Ok(info)
    }

    /// Drops a collection and all its documents, freeing their space. Durable when it returns.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let mut map = self.collections.write();
        let state = map
            .get(name)
            .cloned()
            .ok_or_else(|| Error::CollectionNotFound(name.to_owned()))?;
        let mut counters = state.writer.lock();
        self.registry.remove(name.as_bytes())?;
        self.db.flush()?;
        counters.dropped = true;
        map.remove(name);
        drop(map);
        self.db.drop_tree(key::collection_tree(state.config.cid))?;
        self.db.flush()?;
        Ok(())
    }

    /// Inserts or replaces a batch of documents, atomically: either every document is stored or
    /// none is. With [`Durability::Sync`] the batch is on disk when this returns.
    pub fn upsert(
        &self,
        collection: &str,
        docs: Vec<Document>,
        durability: Option<Durability>,
    ) -> Result<UpsertOutcome> {
        let state = self.state(collection)?;
        let dim = state.config.spec.dimension;
        let mut seen = HashSet::with_capacity(docs.len());
        let mut encoded = Vec::with_capacity(docs.len());
        for doc in docs {
            let doc = validate(doc, dim, self.options.max_text_bytes)?;
            if !seen.insert(doc.id.clone()) {
                return Err(Error::DuplicateId { id: doc.id });
            }
            let bytes =
                record::encode_record(&doc.id, &doc.vector, doc.text.as_deref(), &doc.metadata)?;
            encoded.push((doc.id, doc.vector, bytes));
        }
        drop(seen);
        if encoded.is_empty() {
            return Ok(UpsertOutcome {
                seq: state.seq.load(Ordering::Acquire),
                ..Default::default()
            });
        }

        let mut counters = state.writer.lock();
        if counters.dropped {
            return Err(Error::CollectionNotFound(collection.to_owned()));
        }
        let mut batch = sled::Batch::default();
        let mut next_point = counters.next_point;
        let mut seq = counters.seq;
        let mut count = state.count.load(Ordering::Acquire);
        let mut out = UpsertOutcome {
            ids: Vec::with_capacity(encoded.len()),
            inserted: Vec::with_capacity(encoded.len()),
            removed: Vec::new(),
            seq: 0,
        };
        for (id, vector, bytes) in encoded {
            let id_key = key::id_key(&id);
            let point = next_point;
            next_point = next_point
                .checked_add(1)
                .ok_or_else(|| Error::IdSpaceExhausted(collection.to_owned()))?;
            match state.tree.get(&id_key)? {
                Some(old) => {
                    let old = key::be_u32(&old)?;
                    batch.remove(&key::point_key(old));
                    seq += 1;
                    let change = Change::Remove { seq, point: old };
                    batch.insert(&key::log_key(seq), &change.encode_value());
                    out.removed.push(old);
                }
                None => count += 1,
            }
            batch.insert(id_key, &point.to_be_bytes());
            batch.insert(&key::point_key(point), bytes);
            seq += 1;
            let change = Change::Insert { seq, point };
            batch.insert(&key::log_key(seq), &change.encode_value());
            out.ids.push(id);
            out.inserted.push((point, vector));
        }
        batch.insert(key::META_NEXT_POINT, &next_point.to_be_bytes());
        batch.insert(key::META_SEQ, &seq.to_be_bytes());
        batch.insert(key::META_COUNT, &count.to_be_bytes());
        state.tree.apply_batch(batch)?;
        counters.next_point = next_point;
        counters.seq = seq;
        state.count.store(count, Ordering::Release);
        state.seq.store(seq, Ordering::Release);
        drop(counters);
        out.seq = seq;
        self.sync(durability)?;
        Ok(out)
    }

    fn sync(&self, durability: Option<Durability>) -> Result<()> {
        if durability.unwrap_or(self.options.durability) == Durability::Sync {
            self.db.flush()?;
        }
        Ok(())
    }

    /// Deletes documents by id, atomically. Unknown ids are ignored (they are not in the
    /// outcome's `deleted`).
    pub fn delete(
        &self,
        collection: &str,
        ids: &[impl AsRef<str>],
        durability: Option<Durability>,
    ) -> Result<DeleteOutcome> {
        let state = self.state(collection)?;
        for id in ids {
            validate_id(id.as_ref())?;
        }
        let mut counters = state.writer.lock();
        if counters.dropped {
            return Err(Error::CollectionNotFound(collection.to_owned()));
        }
        let mut batch = sled::Batch::default();
        let mut seq = counters.seq;
        let mut count = state.count.load(Ordering::Acquire);
        let mut out = DeleteOutcome::default();
        let mut seen = HashSet::new();
        for id in ids {
            let id = id.as_ref();
            if !seen.insert(id) {
                continue;
            }
            let id_key = key::id_key(id);
            if let Some(old) = state.tree.get(&id_key)? {
                let old = key::be_u32(&old)?;
                batch.remove(id_key);
                batch.remove(&key::point_key(old));
                seq += 1;
                let change = Change::Remove { seq, point: old };
                batch.insert(&key::log_key(seq), &change.encode_value());
                count = count.saturating_sub(1);
                out.deleted.push(id.to_owned());
                out.removed.push(old);
            }
        }
        if out.deleted.is_empty() {
            out.seq = seq;
            return Ok(out);
        }
        batch.insert(key::META_SEQ, &seq.to_be_bytes());
        batch.insert(key::META_COUNT, &count.to_be_bytes());
        state.tree.apply_batch(batch)?;
        counters.seq = seq;
        state.count.store(count, Ordering::Release);
        state.seq.store(seq, Ordering::Release);
        drop(counters);
        out.seq = seq;
        self.sync(durability)?;
        Ok(out)
    }

    /// Fetches documents by id, in the order asked; `None` for ids that do not exist.
    pub fn get(&self, collection: &str, ids: &[impl AsRef<str>]) -> Result<Vec<Option<Record>>> {
        let state = self.state(collection)?;
        ids.iter()
            .map(|id| Self::get_one(&state, id.as_ref()))
            .collect()
    }

    fn get_one(state: &CollectionState, id: &str) -> Result<Option<Record>> {
        if validate_id(id).is_err() {
            return Ok(None);
        }
        let id_key = key::id_key(id);
        // A concurrent replace can remove the point between the two reads: re-read the id.
        for _ in 0..8 {
            let Some(point) = state.tree.get(&id_key)? else {
                return Ok(None);
            };
            let point = key::be_u32(&point)?;
            if let Some(bytes) = state.tree.get(key::point_key(point))? {
                return record::decode_record(&bytes).map(Some);
            }
        }
        Ok(None)
    }

    /// The point a document id currently maps to.
    pub fn point_of(&self, collection: &str, id: &str) -> Result<Option<u32>> {
        let state = self.state(collection)?;
        state
            .tree
            .get(key::id_key(id))?
            .map(|v| key::be_u32(&v))
            .transpose()
    }

    /// Fetches documents by point id (as the index returns them); `None` for points that no
    /// longer exist.
    pub fn get_points(&self, collection: &str, points: &[u32]) -> Result<Vec<Option<Record>>> {
        let state = self.state(collection)?;
        points
            .iter()
            .map(|p| {
                state
                    .tree
                    .get(key::point_key(*p))?
                    .map(|b| record::decode_record(&b))
                    .transpose()
            })
            .collect()
    }

    /// Appends the vector of `point` to `out`; false if the point does not exist.
    pub fn point_vector(&self, collection: &str, point: u32, out: &mut Vec<f32>) -> Result<bool> {
        let state = self.state(collection)?;
        match state.tree.get(key::point_key(point))? {
            Some(bytes) => {
                record::decode_record_vector(&bytes, out)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Calls `f` with every live point and its record, in point order (for index rebuilds and
    /// payload indexes).
    pub fn scan_points(
        &self,
        collection: &str,
        mut f: impl FnMut(u32, Record) -> Result<()>,
    ) -> Result<()> {
        let state = self.state(collection)?;
        for item in state.tree.scan_prefix([key::POINT_PREFIX]) {
            let (k, v) = item?;
            f(key::parse_point_key(&k)?, record::decode_record(&v)?)?;
        }
        Ok(())
    }

    /// The number of live documents.
    pub fn count(&self, collection: &str) -> Result<u64> {
        Ok(self.state(collection)?.count.load(Ordering::Acquire))
    }

    /// The sequence number of the last change written to the collection.
    pub fn last_seq(&self, collection: &str) -> Result<u64> {
        Ok(self.state(collection)?.seq.load(Ordering::Acquire))
    }

    /// The changes with sequence greater than `after`, oldest first, and whether the log still
    /// reaches back that far (false when it was trimmed past `after`).
    pub fn changes_since(&self, collection: &str, after: u64) -> Result<(Vec<Change>, bool)> {
        let state = self.state(collection)?;
        let complete = match state.tree.scan_prefix([key::LOG_PREFIX]).next() {
            Some(first) => key::parse_log_key(&first?.0)? <= after.saturating_add(1),
            // Empty log: complete only if nothing happened after `after`.
            None => state.seq.load(Ordering::Acquire) <= after,
        };
        let mut out = Vec::new();
        let start = key::log_key(after.saturating_add(1));
        let end = [key::LOG_PREFIX + 1];
        for item in state.tree.range(start.as_slice()..end.as_slice()) {
            let (k, v) = item?;
            out.push(Change::decode(key::parse_log_key(&k)?, &v)?);
        }
        Ok((out, complete))
    }

    /// Removes change-log entries up to and including `upto` (after the index persisted them).
    pub fn trim_changes(&self, collection: &str, upto: u64) -> Result<()> {
        let state = self.state(collection)?;
        let start = key::log_key(0);
        let end = key::log_key(upto.saturating_add(1));
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for item in state.tree.range(start.as_slice()..end.as_slice()) {
            batch.remove(item?.0);
            n += 1;
            if n.is_multiple_of(10_000) {
                state.tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        state.tree.apply_batch(batch)?;
        Ok(())
    }

    /// A page of documents in id order, starting after the id `after` (exclusive).
    pub fn scroll(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ScrollPage> {
        let state = self.state(collection)?;
        if limit == 0 || limit > MAX_SCROLL_PAGE {
            return Err(Error::InvalidArgument(format!(
                "page size must be between 1 and {MAX_SCROLL_PAGE}, got {limit}"
            )));
        }
        let start = match after {
            Some(a) => Bound::Excluded(key::id_key(a)),
            None => Bound::Included(vec![key::ID_PREFIX]),
        };
        let end = Bound::Excluded(vec![key::ID_PREFIX + 1]);
        let mut page = ScrollPage::default();
        let mut iter = state.tree.range::<Vec<u8>, _>((start, end));
        let mut last_id = None;
        for item in iter.by_ref() {
            let (k, v) = item?;
            let point = key::be_u32(&v)?;
            let id = key::parse_id_key(&k)?.to_owned();
            if let Some(bytes) = state.tree.get(key::point_key(point))? {
                page.records.push(record::decode_record(&bytes)?);
            } else if let Some(r) = Self::get_one(&state, &id)? {
                page.records.push(r);
            }
            last_id = Some(id);
            if page.records.len() == limit {
                break;
            }
        }
        if page.records.len() == limit && iter.next().is_some() {
            page.next_cursor = last_id;
        }
        Ok(page)
    }

    /// Flushes every buffered write to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Bytes the database occupies on disk (sled's estimate).
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}
