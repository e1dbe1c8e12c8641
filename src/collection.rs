//! The runtime state of one open collection: its vector index, payload index and write lock,
//! and how the index is opened (loaded from its dump, then caught up from the change log, or
//! rebuilt from storage), kept in step with writes, compacted and persisted.
//!
//! Storage is the source of truth; the index is derived state. Every write takes the
//! collection's write mutex, writes storage, then applies the same change to the payload and
//! the index. Searches never take that mutex.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use latentdb_index::{Index, IndexParams, IndexStats};
use latentdb_storage::{Change, CollectionConfig, Metric, Storage};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::payload::Payload;

/// The directory, inside a database directory, that holds index dumps (one subdirectory per
/// collection, named by the collection's internal id).
pub const INDEX_DIR: &str = "index";

/// Persist a collection's index after this many changes since the last persist.
pub const PERSIST_EVERY_CHANGES: u64 = 50_000;

/// Compact (rebuild) an index when more than this fraction of its points are tombstones.
pub const COMPACT_TOMBSTONE_RATIO: f64 = 0.2;

/// ... and it holds at least this many points (small indexes are cheap to search anyway).
pub const COMPACT_MIN_POINTS: usize = 1_000;

/// Points inserted into the index per batch while rebuilding or replaying.
const BATCH: usize = 8_192;

/// What happened to a collection's index, for [`crate::Database::index_stats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexInfo {
    /// Points searches can return.
    pub live: usize,
    /// Points in the graph, tombstones included.
    pub total: usize,
    /// Tombstoned points awaiting compaction.
    pub deleted: usize,
    /// True when this open loaded the index from its dump (no rebuild).
    pub loaded_from_dump: bool,
    /// Change-log entries replayed on top of the dump at open.
    pub replayed: usize,
    /// True when this open rebuilt the index from storage (no dump, or an unusable one).
    pub rebuilt_on_open: bool,
    /// Compactions since open.
    pub compactions: u64,
    /// The storage sequence of the last dump written or loaded (0: none).
    pub persisted_seq: u64,
    /// The index parameters.
    pub params: IndexParams,
}

/// The outcome of [`crate::Database::compact`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompactReport {
    /// Points in the graph before (tombstones included).
    pub before_total: usize,
    /// Tombstones dropped.
    pub dropped: usize,
    /// Points in the graph after.
    pub after_total: usize,
    /// Wall-clock seconds of the rebuild and persist.
    pub seconds: f64,
}

/// State guarded by the collection's write mutex.
#[derive(Debug)]
pub(crate) struct WriterState {
    /// The collection was dropped: writes holding an old handle must fail.
    pub dropped: bool,
    /// Storage sequence of the last dump written or loaded.
    pub persisted_seq: u64,
    /// Changes applied since the last persist.
    pub changes: u64,
    /// The graph changed without a sequence change (a compaction, a rebuild at open).
    pub dirty: bool,
}

/// How the index was obtained at open.
#[derive(Debug, Clone, Copy, Default)]
struct OpenReport {
    loaded_from_dump: bool,
    replayed: usize,
    rebuilt: bool,
}

/// One open collection.
#[derive(Debug)]
pub(crate) struct Collection {
    pub name: String,
    pub metric: Metric,
    pub dim: usize,
    pub index: Index,
    pub payload: RwLock<Payload>,
    pub writer: Mutex<WriterState>,
    dir: PathBuf,
    opened: OpenReport,
    compactions: AtomicU64,
}

fn index_metric(m: Metric) -> latentdb_index::Metric {
    match m {
        Metric::Cosine => latentdb_index::Metric::Cosine,
        Metric::Dot => latentdb_index::Metric::Dot,
        Metric::L2 => latentdb_index::Metric::L2,
    }
}

/// Index parameters from a collection's `spec.index` JSON (`null`: the defaults).
pub(crate) fn params_of(spec_index: &Value) -> Result<IndexParams> {
    let params: IndexParams = match spec_index {
        Value::Null => IndexParams::default(),
        v => serde_json::from_value(v.clone())
            .map_err(|e| Error::InvalidArgument(format!("index settings: {e}")))?,
    };
    params
        .validate()
        .map_err(|e| Error::InvalidArgument(format!("index settings: {e}")))?;
    Ok(params)
}

/// The dump directory of collection `cid`.
pub(crate) fn dump_dir(root: &Path, cid: u64) -> PathBuf {
    root.join(INDEX_DIR).join(cid.to_string())
}

/// Inserts points, falling back to one at a time (skipping, with a warning, any the index
/// rejects) so that one bad stored vector cannot lose the rest.
fn insert_points(index: &Index, name: &str, points: &[(u32, &[f32])]) {
    if index.insert_batch(points).is_ok() {
        return;
    }
    for &(p, v) in points {
        if let Err(e) = index.insert(p, v)
            && !matches!(e, latentdb_index::Error::DuplicateId(_))
        {
            tracing::warn!(collection = name, point = p, error = %e, "point not indexed");
        }
    }
}

impl Collection {
    /// A new, empty collection runtime.
    pub fn create(root: &Path, config: &CollectionConfig, params: IndexParams) -> Result<Self> {
        let spec = &config.spec;
        let index = Index::new(index_metric(spec.metric), spec.dimension, params)?;
        let dir = dump_dir(root, config.cid);
        // A leftover from an earlier collection with this id cannot exist (ids are not
        // reused), but never load a stale dump into a fresh collection.
        let _ = std::fs::remove_dir_all(&dir);
        Ok(Self::assemble(
            config,
            index,
            Payload::default(),
            dir,
            OpenReport::default(),
            0,
        ))
    }

    fn assemble(
        config: &CollectionConfig,
        index: Index,
        payload: Payload,
        dir: PathBuf,
        opened: OpenReport,
        persisted_seq: u64,
    ) -> Self {
        Collection {
            name: config.spec.name.clone(),
            metric: config.spec.metric,
            dim: config.spec.dimension,
            index,
            payload: RwLock::new(payload),
            writer: Mutex::new(WriterState {
                dropped: false,
                persisted_seq,
                changes: 0,
                dirty: !opened.loaded_from_dump,
            }),
            dir,
            opened,
            compactions: AtomicU64::new(0),
        }
    }

    /// Opens an existing collection: loads its index dump and replays the change log after
    /// it, or rebuilds the index from storage when the dump is missing, damaged, stale or
    /// disagrees with storage. Never fails because of the dump.
    pub fn open(storage: &Storage, root: &Path, config: &CollectionConfig) -> Result<Self> {
        let spec = &config.spec;
        let name = spec.name.as_str();
        let params = params_of(&spec.index).unwrap_or_else(|e| {
            tracing::warn!(collection = name, error = %e, "bad index settings, using defaults");
            IndexParams::default()
        });
        let dir = dump_dir(root, config.cid);
        let last = storage.last_seq(name)?;
        let metric = index_metric(spec.metric);
        let loaded = match Index::load(&dir) {
            Ok(Some((index, seq))) => {
                if index.metric() != metric || index.dim() != spec.dimension {
                    tracing::warn!(
                        collection = name,
                        "index dump has another metric or dimension; rebuilding"
                    );
                    None
                } else if seq > last {
                    tracing::warn!(
                        collection = name,
                        dump_seq = seq,
                        storage_seq = last,
                        "index dump is ahead of storage; rebuilding"
                    );
                    None
                } else {
                    match storage.changes_since(name, seq)? {
                        (changes, true) => Some((index, seq, changes)),
                        (_, false) => {
                            tracing::warn!(
                                collection = name,
                                dump_seq = seq,
                                "change log no longer reaches the index dump; rebuilding"
                            );
                            None
                        }
                    }
                }
            }
            Ok(None) => {
                if last > 0 {
                    tracing::warn!(collection = name, "no index dump; rebuilding from storage");
                }
                None
            }
            Err(e) => {
                tracing::warn!(collection = name, error = %e, "unusable index dump; rebuilding from storage");
                None
            }
        };

        // One scan of storage: the payload always, the vectors only for a rebuild.
        let mut payload = Payload::default();
        let mut rebuild_points: Vec<(u32, Vec<f32>)> = Vec::new();
        let want_vectors = loaded.is_none();
        storage.scan_points(name, |point, record| {
            payload.insert(point, &record.id, record.metadata);
            if want_vectors {
                rebuild_points.push((point, record.vector));
            }
            Ok(())
        })?;

        if let Some((index, seq, changes)) = loaded {
            let replayed = changes.len();
            replay(storage, &index, name, &changes)?;
            let agrees = index.len() == payload.len()
                && payload.all_points().iter().all(|&p| index.contains(p));
            if agrees {
                let opened = OpenReport {
                    loaded_from_dump: true,
                    replayed,
                    rebuilt: false,
                };
                tracing::debug!(collection = name, seq, replayed, "index loaded from dump");
                return Ok(Self::assemble(config, index, payload, dir, opened, seq));
            }
            tracing::warn!(
                collection = name,
                index_live = index.len(),
                stored = payload.len(),
                "index dump disagrees with storage after replay; rebuilding"
            );
            storage.scan_points(name, |point, record| {
                rebuild_points.push((point, record.vector));
                Ok(())
            })?;
        }

        let started = Instant::now();
        let index = Index::new(metric, spec.dimension, params)?;
        for chunk in rebuild_points.chunks(BATCH) {
            let refs: Vec<(u32, &[f32])> = chunk.iter().map(|(p, v)| (*p, v.as_slice())).collect();
            insert_points(&index, name, &refs);
        }
        if !rebuild_points.is_empty() {
            tracing::warn!(
                collection = name,
                points = rebuild_points.len(),
                seconds = started.elapsed().as_secs_f64(),
                "index rebuilt from storage"
            );
        }
        let opened = OpenReport {
            loaded_from_dump: false,
            replayed: 0,
            rebuilt: true,
        };
        Ok(Self::assemble(config, index, payload, dir, opened, 0))
    }

    /// Applies a storage write to the payload and the index (the caller holds the writer).
    pub fn apply(
        &self,
        removed: &[u32],
        inserted: &[(u32, Vec<f32>)],
        docs: Vec<(String, Map<String, Value>)>,
    ) {
        {
            let mut payload = self.payload.write();
            for &p in removed {
                payload.remove(p);
            }
            for ((p, _), (id, meta)) in inserted.iter().zip(docs) {
                payload.insert(*p, &id, meta);
            }
        }
        for &p in removed {
            self.index.delete(p);
        }
        if !inserted.is_empty() {
            let refs: Vec<(u32, &[f32])> =
                inserted.iter().map(|(p, v)| (*p, v.as_slice())).collect();
            insert_points(&self.index, &self.name, &refs);
        }
    }

    /// After a write: compacts past the tombstone threshold and persists after enough changes.
    /// Failures are logged, never returned: the write itself succeeded.
    pub fn maintain(&self, storage: &Storage, w: &mut WriterState, changes: u64) {
        w.changes += changes;
        let stats = self.index.stats();
        if stats.total >= COMPACT_MIN_POINTS
            && self.index.tombstone_ratio() > COMPACT_TOMBSTONE_RATIO
        {
            tracing::info!(collection = %self.name, deleted = stats.deleted, total = stats.total, "compacting index");
            self.index.rebuild();
            self.compactions.fetch_add(1, Ordering::Relaxed);
            w.dirty = true;
            w.changes = w.changes.max(PERSIST_EVERY_CHANGES);
        }
        if w.changes >= PERSIST_EVERY_CHANGES
            && let Err(e) = self.persist(storage, w)
        {
            tracing::warn!(collection = %self.name, error = %e, "index persist failed");
        }
    }

    /// Rebuilds the index without its tombstones and persists it (the caller holds the writer).
    pub fn compact(&self, storage: &Storage, w: &mut WriterState) -> Result<CompactReport> {
        let started = Instant::now();
        let before = self.index.stats();
        self.index.rebuild();
        self.compactions.fetch_add(1, Ordering::Relaxed);
        w.dirty = true;
        self.persist(storage, w)?;
        let after = self.index.stats();
        Ok(CompactReport {
            before_total: before.total,
            dropped: before.total.saturating_sub(after.total),
            after_total: after.total,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// True when the dump is behind the index.
    pub fn needs_persist(&self, storage: &Storage, w: &WriterState) -> bool {
        let current = storage.last_seq(&self.name).ok();
        w.dirty || current != Some(w.persisted_seq)
    }

    /// Writes the index dump with the storage sequence it reflects, then trims the change log
    /// up to it (the caller holds the writer, so index and sequence agree). Storage is flushed
    /// first: a dump must never be ahead of what storage has on disk.
    pub fn persist(&self, storage: &Storage, w: &mut WriterState) -> Result<()> {
        storage.flush()?;
        let seq = storage.last_seq(&self.name)?;
        self.index.persist(&self.dir, seq)?;
        storage.trim_changes(&self.name, seq)?;
        w.persisted_seq = seq;
        w.changes = 0;
        w.dirty = false;
        Ok(())
    }

    /// Removes the dump directory (after the collection was dropped).
    pub fn remove_dump(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot remove index dump");
        }
    }

    /// The index's counters and open history.
    pub fn info(&self, persisted_seq: u64) -> IndexInfo {
        let IndexStats {
            total,
            live,
            deleted,
        } = self.index.stats();
        IndexInfo {
            live,
            total,
            deleted,
            loaded_from_dump: self.opened.loaded_from_dump,
            replayed: self.opened.replayed,
            rebuilt_on_open: self.opened.rebuilt,
            compactions: self.compactions.load(Ordering::Relaxed),
            persisted_seq,
            params: self.index.params(),
        }
    }
}

/// Replays change-log entries onto a loaded index: inserts it does not know yet (their
/// vectors read from storage; points gone since are skipped), then removes (idempotent).
fn replay(storage: &Storage, index: &Index, name: &str, changes: &[Change]) -> Result<()> {
    let mut pending: Vec<(u32, Vec<f32>)> = Vec::new();
    let flush = |pending: &mut Vec<(u32, Vec<f32>)>| {
        let refs: Vec<(u32, &[f32])> = pending.iter().map(|(p, v)| (*p, v.as_slice())).collect();
        insert_points(index, name, &refs);
        pending.clear();
    };
    for c in changes {
        if let Change::Insert { point, .. } = *c
            && !index.knows(point)
        {
            let mut v = Vec::new();
            if storage.point_vector(name, point, &mut v)? {
                pending.push((point, v));
                if pending.len() >= BATCH {
                    flush(&mut pending);
                }
            }
        }
    }
    flush(&mut pending);
    for c in changes {
        if let Change::Remove { point, .. } = *c {
            index.delete(point);
        }
    }
    Ok(())
}
