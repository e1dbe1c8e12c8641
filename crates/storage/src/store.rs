//! [`Storage`]: the sled-backed engine that owns collections and documents.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, RwLock};

use crate::collection::{
    CollectionConfig, CollectionInfo, CollectionSpec, validate_dimension, validate_name,
};
use crate::document::Record;
use crate::error::{Error, Result};
use crate::key;
use crate::options::StorageOptions;
use crate::watermark::{self, DataLossReport, Mark, Watermark};

/// The storage format version this build writes. Version 2 added insert runs to the change
/// log (one entry for a batch's consecutive inserts); a version-1 database is read as it is
/// and marked version 2 on open (its entries are valid version-2 entries), so that an older
/// build refuses it from then on instead of misreading a run.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest storage format version this build reads.
pub const OLDEST_READABLE_FORMAT: u32 = 1;

/// Whether this build reads storage format version `v`.
pub(crate) fn readable_format(v: u32) -> bool {
    (OLDEST_READABLE_FORMAT..=FORMAT_VERSION).contains(&v)
}

/// The name of the lock file inside a database directory.
pub const LOCK_FILE: &str = "LOCK";

/// The name of sled's directory inside a database directory.
pub const SLED_DIR: &str = "sled";

/// How long [`Storage::open`] waits for a held `LOCK` before it reports [`Error::Locked`].
const LOCK_WAIT: Duration = Duration::from_millis(500);

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
pub(crate) struct Counters {
    pub next_point: u32,
    pub seq: u64,
    pub dropped: bool,
    /// The snapshots holding the collection: removed records are deferred while non-zero.
    pub holds: u32,
}

/// An open collection. One per collection for the life of the storage: settings change in
/// place (under the writer lock), so every writer shares one set of counters.
pub(crate) struct CollectionState {
    /// Stable identity (names the sled tree; never reused).
    pub cid: u64,
    /// The name.
    pub name: String,
    /// The vector dimension (immutable).
    pub dim: usize,
    /// The stored configuration; only the embedder and index settings ever change.
    pub config: RwLock<CollectionConfig>,
    pub tree: sled::Tree,
    /// Serialises writers; holds the counters.
    pub writer: Mutex<Counters>,
    pub count: AtomicU64,
    /// The last sequence applied (mirrors `Counters::seq` for readers).
    pub seq: AtomicU64,
    /// Set once the collection is dropped, before its tree goes: a read that raced the drop
    /// reports `CollectionNotFound` rather than sled's error for a dropped tree.
    pub dropped: AtomicBool,
}

type Collections = Arc<RwLock<HashMap<String, Arc<CollectionState>>>>;

/// The background flusher: raises the watermark to what sled made durable, and fsyncs it.
struct Flusher {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

/// The storage engine: one database directory, many collections.
///
/// Thread-safe; writers to one collection are serialised, readers never wait for them.
pub struct Storage {
    pub(crate) path: PathBuf,
    pub(crate) db: sled::Db,
    pub(crate) registry: sled::Tree,
    pub(crate) options: StorageOptions,
    pub(crate) collections: Collections,
    watermark: Arc<Mutex<Watermark>>,
    data_loss: Vec<DataLossReport>,
    flusher: Option<Flusher>,
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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
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

/// Flushes sled, then raises the watermark to the sequences sampled before the flush (so it
/// never claims a sequence the flush did not make durable).
fn flush_and_mark(db: &sled::Db, collections: &Collections, wm: &Mutex<Watermark>) -> Result<()> {
    let snapshot: Vec<(u64, String, u64)> = collections
        .read()
        .values()
        .map(|s| (s.cid, s.name.clone(), s.seq.load(Ordering::Acquire)))
        .collect();
    db.flush()?;
    wm.lock().advance(&snapshot);
    Ok(())
}

/// Fsyncs the watermark if it changed, without holding its lock during the fsync.
fn sync_watermark(wm: &Mutex<Watermark>) {
    let handle = wm.lock().take_unsynced();
    if let Some(f) = handle
        && let Err(e) = f.sync_data()
    {
        tracing::warn!(error = %e, "cannot fsync the watermark");
        wm.lock().mark_unsynced();
    }
}

fn spawn_flusher(
    path: &Path,
    db: sled::Db,
    collections: Collections,
    wm: Arc<Mutex<Watermark>>,
    every: Duration,
) -> Result<Flusher> {
    let (stop, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("latentdb-flush".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                if let Err(e) = flush_and_mark(&db, &collections, &wm) {
                    tracing::warn!(error = %e, "background flush failed");
                }
                sync_watermark(&wm);
            }
        })
        .map_err(io_err(path))?;
    Ok(Flusher { stop, handle })
}

impl Storage {
    /// Opens (creating if needed) the database directory `path`.
    ///
    /// Fails with [`Error::Locked`] when another process has it open, with
    /// [`Error::UnsupportedFormat`] when it was written by an incompatible version, and with
    /// [`Error::DataLoss`] when a collection holds fewer changes than were acknowledged to
    /// writers (the files were damaged), unless [`StorageOptions::accept_data_loss`] is set:
    /// then it opens with what is left and reports each loss in [`Storage::data_loss`].
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
        // A child process this process spawns shares its open files from the fork to the exec:
        // a `Storage` just dropped may stay locked that long. Wait that out (a bounded while)
        // before reporting another holder.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TryLockError::WouldBlock) => return Err(Error::Locked { path }),
                Err(TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
            }
        }
        let marks = watermark::read(&path);
        let db = open_sled(&path, &options)?;
        let format = match db.get(key::FORMAT_VERSION_KEY)? {
            Some(v) => Some(key::be_u32(&v)?),
            None => None,
        };
        if let Some(found) = format
            && !readable_format(found)
        {
            return Err(Error::UnsupportedFormat {
                found,
                supported: FORMAT_VERSION,
            });
        }
        let registry = db.open_tree(key::REGISTRY_TREE)?;
        let map = load_collections(&db, &registry)?;
        let data_loss = marks.map(|m| losses(&m, &map)).unwrap_or_default();
        if !data_loss.is_empty() {
            for l in &data_loss {
                tracing::error!(
                    collection = %crate::error::truncate_echo(&l.collection, 128),
                    expected = l.expected,
                    found = l.found,
                    "storage is behind the acknowledged writes of a collection"
                );
            }
            if !options.accept_data_loss {
                return Err(Error::from(&data_loss[0]));
            }
            let kept = watermark::keep_as_evidence(&path)?;
            tracing::warn!(
                evidence = %kept.display(),
                lost = data_loss.len(),
                "opening with data loss accepted; the old watermark is kept"
            );
        }
        drop_orphans(&db, &map)?;
        // A new database, or an older format this build upgrades by writing (see
        // `FORMAT_VERSION`).
        if format != Some(FORMAT_VERSION) {
            db.insert(key::FORMAT_VERSION_KEY, &FORMAT_VERSION.to_be_bytes())?;
        }
        db.flush()?;
        // What sled recovered is on disk: it is the new watermark.
        let marks: BTreeMap<u64, Mark> = map
            .values()
            .map(|s| {
                (
                    s.cid,
                    Mark {
                        name: s.name.clone(),
                        seq: s.seq.load(Ordering::Acquire),
                    },
                )
            })
            .collect();
        let watermark = Arc::new(Mutex::new(Watermark::create(&path, marks)));
        let collections: Collections = Arc::new(RwLock::new(map));
        let flusher = spawn_flusher(
            &path,
            db.clone(),
            collections.clone(),
            watermark.clone(),
            Duration::from_millis(options.flush_every_ms.max(1)),
        )?;
        let storage = Storage {
            path,
            db,
            registry,
            options,
            collections,
            watermark,
            data_loss,
            flusher: Some(flusher),
            _lock: lock,
        };
        // Deferred records left by a crash during a snapshot: nothing holds them now.
        storage.purge_all_deferred()?;
        Ok(storage)
    }

    /// The collections that opened behind the watermark of acknowledged writes (only ever
    /// non-empty when opened with [`StorageOptions::accept_data_loss`]).
    pub fn data_loss(&self) -> &[DataLossReport] {
        &self.data_loss
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the storage was opened with.
    pub fn options(&self) -> &StorageOptions {
        &self.options
    }

    pub(crate) fn state(&self, name: &str) -> Result<Arc<CollectionState>> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Runs the read `f` on a collection. A read that raced the collection's drop reports
    /// [`Error::CollectionNotFound`], whatever sled answered for the dropped tree.
    pub(crate) fn read<T>(
        &self,
        name: &str,
        f: impl FnOnce(&CollectionState) -> Result<T>,
    ) -> Result<T> {
        let state = self.state(name)?;
        let res = f(&state);
        if state.dropped.load(Ordering::SeqCst) {
            return Err(not_found(name));
        }
        res
    }

    fn info_of(state: &CollectionState) -> CollectionInfo {
        let c = state.config.read();
        CollectionInfo {
            name: c.spec.name.clone(),
            count: state.count.load(Ordering::Acquire),
            dimension: c.spec.dimension,
            metric: c.spec.metric,
            created_ms: c.created_ms,
            format_version: c.format_version,
            embedder: c.spec.embedder.clone(),
            index: c.spec.index.clone(),
            lexical: c.spec.lexical.clone(),
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
            .map_err(|e| Error::Internal(format!("collection config does not serialise: {e}")))?;
        let name = config.spec.name.clone();
        if self
            .registry
            .compare_and_swap(name.as_bytes(), None as Option<&[u8]>, Some(bytes))?
            .is_err()
        {
            return Err(Error::CollectionExists(name));
        }
        let state = open_state(&self.db, config)?;
        self.db.flush()?;
        self.watermark
            .lock()
            .advance(&[(state.cid, state.name.clone(), 0)]);
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
        Ok(self.state(name)?.config.read().clone())
    }

    /// Replaces the embedder and index settings of a collection (name, dimension and metric
    /// cannot change). Durable when it returns.
    ///
    /// The settings change in place under the collection's writer lock: writers before and
    /// after share one set of counters.
    pub fn update_collection_settings(
        &self,
        name: &str,
        embedder: serde_json::Value,
        index: serde_json::Value,
    ) -> Result<CollectionInfo> {
        self.update_config(name, |spec| {
            spec.embedder = embedder;
            spec.index = index;
        })
    }

    /// Changes a collection's spec in place with `change`, durably, under the collection's
    /// writer lock.
    fn update_config(
        &self,
        name: &str,
        change: impl FnOnce(&mut CollectionSpec),
    ) -> Result<CollectionInfo> {
        let state = self.state(name)?;
        let counters = state.writer.lock();
        if counters.dropped {
            return Err(not_found(name));
        }
        let mut config = state.config.read().clone();
        change(&mut config.spec);
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| Error::Internal(format!("collection config does not serialise: {e}")))?;
        self.registry.insert(name.as_bytes(), bytes)?;
        self.db.flush()?;
        *state.config.write() = config;
        drop(counters);
        Ok(Self::info_of(&state))
    }

    /// Replaces the lexical settings of a collection. Durable when it returns; changes in
    /// place under the collection's writer lock, like [`Storage::update_collection_settings`].
    pub fn update_lexical_settings(
        &self,
        name: &str,
        lexical: serde_json::Value,
    ) -> Result<CollectionInfo> {
        self.update_config(name, |spec| spec.lexical = lexical)
    }

    /// Drops a collection and all its documents, freeing their space. Durable when it returns.
    pub fn drop_collection(&self, name: &str) -> Result<()> {
        let mut map = self.collections.write();
        let state = map.get(name).cloned().ok_or_else(|| not_found(name))?;
        let mut counters = state.writer.lock();
        // Out of the watermark first (durably): a crash after the drop must not report it lost.
        self.watermark.lock().forget(state.cid)?;
        self.registry.remove(name.as_bytes())?;
        self.db.flush()?;
        counters.dropped = true;
        map.remove(name);
        drop(map);
        state.dropped.store(true, Ordering::SeqCst);
        self.db.drop_tree(key::collection_tree(state.cid))?;
        self.db.flush()?;
        Ok(())
    }

    /// Flushes every buffered write to disk, then raises the watermark to what the flush made
    /// durable (no fsync of the watermark here: see `docs/FORMAT.md`).
    pub fn flush(&self) -> Result<()> {
        flush_and_mark(&self.db, &self.collections, &self.watermark)
    }

    /// Bytes the database occupies on disk (sled's estimate).
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Some(f) = self.flusher.take() {
            drop(f.stop);
            let _ = f.handle.join();
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "flush on close failed");
        }
        sync_watermark(&self.watermark);
    }
}

/// The error for a collection that does not exist (or was dropped meanwhile).
pub(crate) fn not_found(name: &str) -> Error {
    Error::CollectionNotFound(crate::error::truncate_echo(
        name,
        crate::error::MAX_ECHO_CHARS,
    ))
}

/// Opens sled. We hold the directory's `LOCK`, so a conflict on sled's own file lock can only
/// come from a `Storage` of this process that was just dropped and whose sled threads are
/// still letting go of the file: wait for them (a bounded while) instead of failing.
fn open_sled(path: &Path, options: &StorageOptions) -> Result<sled::Db> {
    let config = sled::Config::new()
        .path(path.join(SLED_DIR))
        .cache_capacity(options.cache_capacity)
        .flush_every_ms(Some(options.flush_every_ms.max(1)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// Reads the registry and opens every collection's tree.
fn load_collections(
    db: &sled::Db,
    registry: &sled::Tree,
) -> Result<HashMap<String, Arc<CollectionState>>> {
    let mut map = HashMap::new();
    for item in registry.iter() {
        let (name, value) = item?;
        let config: CollectionConfig = serde_json::from_slice(&value).map_err(|e| {
            Error::Corrupt(format!(
                "collection config of {:?}: {e}",
                crate::error::truncate_echo(&String::from_utf8_lossy(&name), 128)
            ))
        })?;
        if !readable_format(config.format_version) {
            return Err(Error::UnsupportedFormat {
                found: config.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let state = open_state(db, config)?;
        map.insert(state.name.clone(), Arc::new(state));
    }
    Ok(map)
}

/// Drops the trees of collections no longer registered: a crash between unregistering a
/// collection and dropping its tree leaves an orphan.
fn drop_orphans(db: &sled::Db, map: &HashMap<String, Arc<CollectionState>>) -> Result<()> {
    let live: HashSet<u64> = map.values().map(|s| s.cid).collect();
    for name in db.tree_names() {
        if let Some(cid) = key::parse_collection_tree(&name)
            && !live.contains(&cid)
        {
            tracing::info!(
                cid,
                "dropping the data of a collection dropped before a crash"
            );
            db.drop_tree(&name)?;
        }
    }
    Ok(())
}

/// The collections behind the watermark `marks`, or missing from storage.
fn losses(
    marks: &BTreeMap<u64, Mark>,
    map: &HashMap<String, Arc<CollectionState>>,
) -> Vec<DataLossReport> {
    let by_cid: HashMap<u64, &CollectionState> = map.values().map(|s| (s.cid, &**s)).collect();
    let mut out = Vec::new();
    for (cid, mark) in marks {
        match by_cid.get(cid) {
            Some(s) => {
                let found = s.seq.load(Ordering::Acquire);
                if found < mark.seq {
                    out.push(DataLossReport {
                        collection: s.name.clone(),
                        expected: mark.seq,
                        found,
                    });
                }
            }
            None => out.push(DataLossReport {
                collection: mark.name.clone(),
                expected: mark.seq,
                found: 0,
            }),
        }
    }
    out
}

fn open_state(db: &sled::Db, config: CollectionConfig) -> Result<CollectionState> {
    let tree = db.open_tree(key::collection_tree(config.cid))?;
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
        cid: config.cid,
        name: config.spec.name.clone(),
        dim: config.spec.dimension,
        config: RwLock::new(config),
        tree,
        writer: Mutex::new(Counters {
            next_point,
            seq,
            dropped: false,
            holds: 0,
        }),
        count: AtomicU64::new(count),
        seq: AtomicU64::new(seq),
        dropped: AtomicBool::new(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Change;
    use crate::{CollectionSpec, Document, Metric};

    fn raw(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir.join(SLED_DIR)).open().unwrap()
    }

    fn version(db: &sled::Db) -> u32 {
        key::be_u32(&db.get(key::FORMAT_VERSION_KEY).unwrap().unwrap()).unwrap()
    }

    /// A version-1 database (one log entry per change, configurations saying 1) opens, reads
    /// as it did, and is marked version 2; a newer version is refused with nothing changed.
    #[test]
    fn version_1_is_read_and_upgraded_and_newer_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        s.create_collection(CollectionSpec::new("c", 2, Metric::L2))
            .unwrap();
        let docs = ["a", "b", "c"].map(|i| Document::new(i, vec![1.0, 0.0]));
        s.upsert("c", docs.to_vec(), None).unwrap();
        let cid = s.state("c").unwrap().cid;
        drop(s);
        {
            // Rewritten as version 1 wrote it.
            let db = raw(dir.path());
            assert_eq!(version(&db), FORMAT_VERSION);
            db.insert(key::FORMAT_VERSION_KEY, &1u32.to_be_bytes())
                .unwrap();
            let tree = db.open_tree(key::collection_tree(cid)).unwrap();
            assert_eq!(tree.scan_prefix([key::LOG_PREFIX]).count(), 1, "one run");
            tree.remove(key::log_key(3)).unwrap();
            for p in 0..3u32 {
                let seq = u64::from(p) + 1;
                let c = Change::Insert { seq, point: p };
                tree.insert(key::log_key(seq), &c.encode_value()).unwrap();
            }
            let registry = db.open_tree(key::REGISTRY_TREE).unwrap();
            let mut config: serde_json::Value =
                serde_json::from_slice(&registry.get("c").unwrap().unwrap()).unwrap();
            config["format_version"] = 1.into();
            registry
                .insert("c", serde_json::to_vec(&config).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let expect: Vec<Change> = (0..3u32)
            .map(|p| Change::Insert {
                seq: u64::from(p) + 1,
                point: p,
            })
            .collect();
        assert_eq!(s.changes_since("c", 0).unwrap(), (expect, true));
        assert_eq!(s.collection_info("c").unwrap().format_version, 1);
        // New writes go on as version 2 (an insert run).
        s.upsert("c", vec![Document::new("d", vec![0.0, 1.0])], None)
            .unwrap();
        drop(s);
        let db = raw(dir.path());
        assert_eq!(version(&db), 2, "upgraded on open");
        db.insert(key::FORMAT_VERSION_KEY, &3u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
        drop(db);
        let e = Storage::open(dir.path(), StorageOptions::default()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::UnsupportedFormat {
                    found: 3,
                    supported: 2
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("reads versions 1 to 2"), "{e}");
        assert_eq!(version(&raw(dir.path())), 3, "refused without a write");
    }
}
