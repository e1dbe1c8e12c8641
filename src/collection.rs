//! The runtime state of one open collection: its vector index, payload index and write lock,
//! and how the index is opened (loaded from its dump, then caught up from the change log, or
//! rebuilt from storage), kept in step with writes, compacted and persisted.
//!
//! Storage is the source of truth; the index is derived state. Every write takes the
//! collection's write mutex, writes storage, then applies the same change to the payload and
//! the index. Searches never take that mutex.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use latentdb_index::{Index, IndexParams, IndexStats, Quantization};
use latentdb_storage::{Change, CollectionConfig, DataLossReport, Metric, Storage};
use latentdb_types::ErrorKind;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result, bounded};
use crate::lexical::{Lexical, LexicalSettings};
use crate::payload::Payload;
use crate::recovery;
use crate::rescore_file::RescoreFile;

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
    /// Rebuilds from storage since open after an index update failed (the writes stood).
    pub recoveries: u64,
    /// The storage sequence of the last dump written or loaded (0: none).
    pub persisted_seq: u64,
    /// The index parameters.
    pub params: IndexParams,
    /// True once an int8 index holds codes instead of `f32` vectors (it calibrates them at
    /// 1,024 points); searches then rescore their candidates with the stored vectors.
    pub quantized: bool,
    /// Bytes of memory the index holds for its points' vectors or codes (see
    /// [`Index::vector_bytes`](latentdb_index::Index::vector_bytes)).
    pub vector_bytes: usize,
    /// Bytes of memory the index holds in all: vectors or codes, links and bookkeeping (see
    /// [`Index::memory_bytes`](latentdb_index::Index::memory_bytes)).
    pub index_bytes: usize,
    /// Bytes of memory the payload index holds: ids, metadata and postings (an estimate).
    pub payload_bytes: usize,
    /// Length of the rescoring file of an int8 collection (the original vectors, read through
    /// a memory map when searches rescore; page cache, not the index's memory); 0 without one.
    pub rescore_file_bytes: u64,
    /// The lexical index's statistics (`None`: the collection keeps none).
    pub lexical: Option<latentdb_text::LexicalStats>,
    /// How the lexical index was obtained at open.
    pub lexical_opened: crate::lexical::LexicalOpen,
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
    /// The storage's id of the collection: its stable identity (never reused).
    pub cid: u64,
    pub metric: Metric,
    pub dim: usize,
    /// The vector index. Swapped whole when it is rebuilt from storage after a failure.
    index: RwLock<Arc<Index>>,
    /// Why the index is unusable (an update failed or panicked and the rebuild from storage
    /// did not succeed yet): searches fail with [`Error::Internal`] until a rebuild succeeds.
    broken: RwLock<Option<String>>,
    pub payload: RwLock<Payload>,
    /// The BM25 index over the stored text, and the lexical settings.
    pub lexical: Lexical,
    /// The original vectors for rescoring, when the index quantizes (`None` otherwise, or
    /// when the file cannot be opened: searches then read storage).
    pub rescore: Option<RescoreFile>,
    pub writer: Mutex<WriterState>,
    dir: PathBuf,
    opened: OpenReport,
    compactions: AtomicU64,
    recoveries: AtomicU64,
    /// Test hook: the next this many index updates (or rebuild batches) panic.
    #[cfg(test)]
    inject_panics: std::sync::atomic::AtomicU32,
}

/// Index parameters from a collection's `spec.index` JSON (`null`: the defaults): unknown
/// keys, wrong types and values out of bounds are errors (the index crate's checks).
pub(crate) fn params_of(spec_index: &Value) -> Result<IndexParams> {
    Ok(IndexParams::from_json(spec_index)?)
}

/// A new, empty index for a collection, built and checked before anything is stored: an
/// allocation the parameters make impossible is an error (from the index), a panic is caught
/// and reported as [`Error::Internal`], never an abort of the caller.
pub(crate) fn new_index(metric: Metric, dim: usize, params: IndexParams) -> Result<Index> {
    match catch_unwind(|| Index::new(metric, dim, params)) {
        Ok(index) => Ok(index?),
        Err(panic) => Err(Error::Internal(format!(
            "building the index panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// The message of a caught panic, bounded.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.as_str()
    } else {
        "a panic without a message"
    };
    bounded(msg)
}

/// The dump directory of collection `cid`.
pub(crate) fn dump_dir(root: &Path, cid: u64) -> PathBuf {
    root.join(INDEX_DIR).join(cid.to_string())
}

/// The rescoring file of a collection whose index quantizes (see [`RescoreFile`]); `None`
/// for `f32` indexes, and when the file cannot be opened (logged: searches read storage).
fn open_rescore(dir: &Path, config: &CollectionConfig, params: IndexParams) -> Option<RescoreFile> {
    if params.quantization == Quantization::None {
        return None;
    }
    RescoreFile::open(dir, config.cid, config.spec.dimension)
        .inspect_err(|e| {
            tracing::warn!(collection = %config.spec.name, error = %e, "cannot open the rescoring file; searches read the vectors from storage");
        })
        .ok()
}

/// Inserts points, falling back to one at a time so that one vector the index rejects cannot
/// lose the rest: a point the index refuses as invalid (it would refuse it on every rebuild
/// too) is skipped with a warning. Any other failure (out of memory, a broken invariant) is
/// returned: the index no longer holds what storage holds.
///
/// With `rescore`, the points' slots in the rescoring file are written first, before any
/// search can reach the points (pass `None` where searches may already read those slots).
fn insert_points(
    index: &Index,
    rescore: Option<&RescoreFile>,
    name: &str,
    points: &[(u32, &[f32])],
) -> Result<(), String> {
    write_slots(rescore, name, points);
    let Err(e) = index.insert_batch(points) else {
        return Ok(());
    };
    if !skippable(&e) {
        return Err(e.to_string());
    }
    for &(p, v) in points {
        match index.insert(p, v) {
            Ok(()) => {}
            Err(latentdb_index::Error::DuplicateId(_)) => {}
            Err(e) if skippable(&e) => {
                tracing::warn!(collection = name, point = p, error = %e, "point not indexed");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// Writes committed points' slots in the rescoring file, if any, before searches can return
/// the points. Best effort: a failure is logged (and disables the file until the next dump);
/// reads of these points fall back to storage.
fn write_slots(rescore: Option<&RescoreFile>, name: &str, points: &[(u32, &[f32])]) {
    if let Some(f) = rescore
        && let Err(e) = f.write_new(points)
    {
        tracing::warn!(collection = name, error = %e, "cannot write the rescoring file");
    }
}

/// What [`Collection::stage`] did with a write's new points while storage committed them.
#[derive(Debug)]
pub enum Staged {
    /// Linked into the index, hidden until [`Collection::apply`] publishes them.
    Linked(latentdb_index::StagedBatch),
    /// Not linked (nothing to link, an unusable index, or points the index refuses): `apply`
    /// inserts them as usual.
    Deferred,
    /// Linking failed or panicked: the index no longer matches storage.
    Failed(String),
}

/// An insert failure that concerns the points themselves (an invalid vector, a point already
/// indexed), not the index.
fn skippable(e: &latentdb_index::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::InvalidArgument | ErrorKind::AlreadyExists
    )
}

impl Collection {
    /// A new, empty collection runtime around `index` (from [`new_index`]) and the lexical
    /// runtime (from [`Lexical::create`]).
    pub fn create(root: &Path, config: &CollectionConfig, index: Index, lexical: Lexical) -> Self {
        let dir = dump_dir(root, config.cid);
        // A leftover from an earlier collection with this id cannot exist (ids are not
        // reused), but never load a stale dump into a fresh collection.
        let _ = std::fs::remove_dir_all(&dir);
        let rescore = open_rescore(&dir, config, index.params());
        Self::assemble(
            config,
            index,
            Payload::default(),
            lexical,
            rescore,
            dir,
            OpenReport::default(),
            0,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: &CollectionConfig,
        index: Index,
        payload: Payload,
        lexical: Lexical,
        rescore: Option<RescoreFile>,
        dir: PathBuf,
        opened: OpenReport,
        persisted_seq: u64,
    ) -> Self {
        Collection {
            name: config.spec.name.clone(),
            cid: config.cid,
            metric: config.spec.metric,
            dim: config.spec.dimension,
            index: RwLock::new(Arc::new(index)),
            broken: RwLock::new(None),
            payload: RwLock::new(payload),
            lexical,
            rescore,
            writer: Mutex::new(WriterState {
                dropped: false,
                persisted_seq,
                changes: 0,
                dirty: !opened.loaded_from_dump,
            }),
            dir,
            opened,
            compactions: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            #[cfg(test)]
            inject_panics: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The index for a search: [`Error::Internal`] while it is unusable (an update failed
    /// and the rebuild from storage has not succeeded yet).
    pub fn index(&self) -> Result<Arc<Index>> {
        if let Some(why) = &*self.broken.read() {
            return Err(Error::Internal(format!(
                "the index of collection {:?} is unusable ({why}); it is rebuilt from storage \
                 on the next write, compaction or open",
                bounded(&self.name)
            )));
        }
        Ok(self.current())
    }

    /// The index as it is, usable or not (for counters and maintenance).
    fn current(&self) -> Arc<Index> {
        self.index.read().clone()
    }

    /// Opens an existing collection: loads its index dump and replays the change log after
    /// it, or rebuilds the index from storage when the dump is missing, damaged, stale or
    /// disagrees with storage.
    ///
    /// A dump whose sequence is ahead of storage means storage lost acknowledged writes:
    /// [`Error::DataLoss`], unless `accept_data_loss`, in which case the dump is moved aside as
    /// evidence, the loss is added to `lost`, and the index is rebuilt from what storage holds.
    /// Any other error (bad stored index settings, unreadable records) is the caller's to
    /// quarantine the collection with.
    pub fn open(
        storage: &Storage,
        root: &Path,
        config: &CollectionConfig,
        accept_data_loss: bool,
        lost: &mut Vec<DataLossReport>,
    ) -> Result<Self> {
        let spec = &config.spec;
        let name = spec.name.as_str();
        let dir = dump_dir(root, config.cid);
        let last = storage.last_seq(name)?;
        // With a dump to load, the load and the scan of storage for the payload (which needs
        // no vectors then) are independent until the replay: they run side by side. The scan's
        // outcome is looked at only where it always was, after the dump's checks, so the same
        // error wins as before. Without a dump the one scan below also collects the vectors.
        let (load, scanned) = if dir.join("manifest.json").is_file() {
            let span = tracing::Span::current();
            std::thread::scope(|s| {
                let loader = s.spawn(|| span.in_scope(|| Index::load(&dir)));
                let scanned = scan_payload(storage, name);
                let load = loader
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (load, Some(scanned))
            })
        } else {
            (Index::load(&dir), None)
        };
        let loaded = match load {
            Ok(Some((_, seq))) if seq > last => {
                // Checked before anything else (even the settings): nothing is changed on
                // disk unless the loss is accepted.
                lost.push(recovery::dump_ahead(
                    &dir,
                    name,
                    seq,
                    last,
                    accept_data_loss,
                )?);
                None
            }
            Ok(Some((index, seq))) => {
                if index.metric() != spec.metric || index.dim() != spec.dimension {
                    tracing::warn!(
                        collection = name,
                        "index dump has another metric or dimension; rebuilding"
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
        let params = params_of(&spec.index)?;
        let lexical_settings = LexicalSettings::from_json(&spec.lexical)?;
        let rescore = open_rescore(&dir, config, params);

        let mut rebuild_points: Vec<(u32, Vec<f32>)> = Vec::new();
        let (payload, mut text_points) = match scanned {
            Some(scanned) => {
                let scanned = scanned?;
                if loaded.is_none() {
                    // The dump was unusable after all: a second scan, for the vectors.
                    rebuild_points = scan_vectors(storage, name)?;
                }
                scanned
            }
            None => {
                // One scan of storage: the payload, the points with text and, when there is
                // no dump to load (so none loaded), the vectors for the rebuild.
                let mut payload = Payload::default();
                let mut text_points: Vec<u32> = Vec::new();
                let want_vectors = loaded.is_none();
                storage.scan_points(name, |point, record| {
                    if record.text.is_some() {
                        text_points.push(point);
                    }
                    payload.insert(point, &record.id, record.metadata);
                    if want_vectors {
                        rebuild_points.push((point, record.vector));
                    }
                    Ok(())
                })?;
                (payload, text_points)
            }
        };
        text_points.sort_unstable();
        let lexical = Lexical::open(storage, name, &dir, lexical_settings, &text_points)?;

        if let Some((index, seq, changes)) = loaded {
            let replayed = changes.len();
            // A dump that passed the load checks but breaks the graph code must not take the
            // collection down: a panic while replaying means rebuild, like any bad dump.
            let caught_up = catch_unwind(AssertUnwindSafe(|| {
                replay(storage, &index, rescore.as_ref(), name, &changes)?;
                Ok::<bool, Error>(
                    index.len() == payload.len()
                        && payload.all_points().iter().all(|&p| index.contains(p)),
                )
            }));
            match caught_up {
                Ok(Ok(true)) => {
                    let opened = OpenReport {
                        loaded_from_dump: true,
                        replayed,
                        rebuilt: false,
                    };
                    tracing::debug!(collection = name, seq, replayed, "index loaded from dump");
                    return Ok(Self::assemble(
                        config, index, payload, lexical, rescore, dir, opened, seq,
                    ));
                }
                Ok(Ok(false)) => tracing::warn!(
                    collection = name,
                    index_live = index.len(),
                    stored = payload.len(),
                    "index dump disagrees with storage after replay; rebuilding"
                ),
                Ok(Err(e)) => tracing::warn!(
                    collection = name,
                    error = %e,
                    "replaying the change log onto the index dump failed; rebuilding"
                ),
                Err(panic) => tracing::warn!(
                    collection = name,
                    panic = panic_message(panic.as_ref()),
                    "replaying the change log onto the index dump panicked; rebuilding"
                ),
            }
            rebuild_points = scan_vectors(storage, name)?;
        }

        let started = Instant::now();
        let index = build_index(
            spec.metric,
            spec.dimension,
            params,
            name,
            &rebuild_points,
            rescore.as_ref(),
        )?;
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
        Ok(Self::assemble(
            config, index, payload, lexical, rescore, dir, opened, 0,
        ))
    }

    /// Links a write's new points into the index, hidden, while storage commits them (called
    /// by [`Storage::upsert_overlapped`] with the writer held); [`Collection::apply`] reveals
    /// them once the commit succeeded. Never fails: a failure is returned as
    /// [`Staged::Failed`] and handled by `apply` like a failed insert (the index is rebuilt from
    /// storage); when the commit fails instead, the caller calls [`Collection::abandon`].
    pub fn stage(&self, inserted: &[(u32, Vec<f32>)]) -> Staged {
        if inserted.is_empty() || self.broken.read().is_some() {
            return Staged::Deferred;
        }
        let index = self.current();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            self.injected_panic();
            let refs: Vec<(u32, &[f32])> =
                inserted.iter().map(|(p, v)| (*p, v.as_slice())).collect();
            index.stage_batch(&refs)
        }));
        match outcome {
            Ok(Ok(batch)) => Staged::Linked(batch),
            // Nothing was added: `apply` inserts the points one by one, skipping those the
            // index refuses.
            Ok(Err(e)) if skippable(&e) => Staged::Deferred,
            Ok(Err(e)) => Staged::Failed(format!("an index update failed: {e}")),
            Err(panic) => Staged::Failed(format!(
                "an index update panicked: {}",
                panic_message(panic.as_ref())
            )),
        }
    }

    /// After a commit that failed once [`Collection::stage`] had run: the index may hold
    /// hidden points that storage does not, under point ids the next write gives again, so it
    /// is rebuilt from storage (which holds nothing of the failed batch).
    pub fn abandon(&self, staged: Staged, storage: &Storage, w: &mut WriterState) {
        if matches!(staged, Staged::Deferred) {
            return;
        }
        tracing::error!(collection = %self.name, "a write failed after its points were linked; rebuilding the index from storage");
        *self.broken.write() = Some("a write failed after its points were linked".to_string());
        self.maintain(storage, w, 0);
    }

    /// Applies a storage write to the payload, the lexical index and the vector index (the
    /// caller holds the writer). `texts` are the inserted documents' texts, in `inserted`'s
    /// order (empty for a delete).
    ///
    /// Never fails: the write is committed in storage, so it stands. When an index cannot
    /// take it (an error other than an invalid point, or a panic while linking) the index is
    /// marked unusable and [`Collection::maintain`], which every writer calls next under the
    /// same lock, rebuilds it from storage before the write is acknowledged.
    ///
    /// `staged`: what [`Collection::stage`] did with `inserted` while storage committed them
    /// (`None`: nothing, they are inserted here).
    pub fn apply(
        &self,
        removed: &[u32],
        inserted: &[(u32, Vec<f32>)],
        docs: Vec<(String, Map<String, Value>)>,
        texts: &[Option<String>],
        staged: Option<Staged>,
    ) {
        let _span = tracing::debug_span!(
            "index.update",
            removed = removed.len(),
            inserted = inserted.len()
        )
        .entered();
        {
            let mut payload = self.payload.write();
            for &p in removed {
                payload.remove(p);
            }
            for ((p, _), (id, meta)) in inserted.iter().zip(docs) {
                payload.insert(*p, &id, meta);
            }
        }
        let lexical: Vec<(u32, Option<&str>)> = inserted
            .iter()
            .zip(
                texts
                    .iter()
                    .map(Option::as_deref)
                    .chain(std::iter::repeat(None)),
            )
            .map(|((p, _), t)| (*p, t))
            .collect();
        self.lexical.apply(removed, &lexical);
        if self.broken.read().is_some() {
            return; // rebuilt from storage (which has this write) in `maintain`
        }
        let index = self.current();
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            for &p in removed {
                index.delete(p);
            }
            if inserted.is_empty() {
                return Ok(());
            }
            let refs: Vec<(u32, &[f32])> =
                inserted.iter().map(|(p, v)| (*p, v.as_slice())).collect();
            match staged {
                Some(Staged::Linked(batch)) => {
                    // Committed now: their slots, then the points themselves, become
                    // readable (no search returned them while hidden).
                    write_slots(self.rescore.as_ref(), &self.name, &refs);
                    if index.publish(batch) {
                        Ok(())
                    } else {
                        Err("the index was replaced while the batch was linked".to_string())
                    }
                }
                Some(Staged::Failed(why)) => Err(why),
                Some(Staged::Deferred) | None => {
                    self.injected_panic();
                    // Committed vectors, of points no search reaches before the index has
                    // them.
                    insert_points(&index, self.rescore.as_ref(), &self.name, &refs)
                }
            }
        }));
        let why = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("an index update failed: {e}"),
            Err(panic) => format!(
                "an index update panicked: {}",
                panic_message(panic.as_ref())
            ),
        };
        tracing::error!(collection = %self.name, reason = why, "the write is stored; rebuilding the index from storage");
        *self.broken.write() = Some(why);
    }

    /// After a write: rebuilds the index from storage if the write could not update it,
    /// compacts past the tombstone threshold and persists after enough changes. Failures are
    /// logged, never returned: the write itself succeeded.
    pub fn maintain(&self, storage: &Storage, w: &mut WriterState, changes: u64) {
        w.changes += changes;
        metrics::gauge!("latentdb_collection_changelog_length", "collection" => self.name.clone())
            .set(w.changes as f64);
        if self.lexical.repair(storage, &self.name) {
            w.dirty = true;
        }
        if self.broken.read().is_some() {
            // Logged inside; searches keep failing until a later rebuild succeeds.
            let _ = self.rebuild_from_storage(storage, w);
            return;
        }
        let index = self.current();
        let stats = index.stats();
        if stats.total >= COMPACT_MIN_POINTS && index.tombstone_ratio() > COMPACT_TOMBSTONE_RATIO {
            tracing::info!(collection = %self.name, deleted = stats.deleted, total = stats.total, "compacting index");
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| index.rebuild())) {
                let why = format!("compaction panicked: {}", panic_message(panic.as_ref()));
                *self.broken.write() = Some(why);
                let _ = self.rebuild_from_storage(storage, w);
                return;
            }
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

    /// Replaces the index with one built from every point in storage (the caller holds the
    /// writer, so storage does not change meanwhile). On success the index is usable again
    /// and is persisted with the next flush; on failure it stays unusable, with the reason.
    fn rebuild_from_storage(&self, storage: &Storage, w: &mut WriterState) -> Result<()> {
        let started = Instant::now();
        let old = self.current();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut points: Vec<(u32, Vec<f32>)> = Vec::new();
            storage.scan_points(&self.name, |point, record| {
                points.push((point, record.vector));
                Ok(())
            })?;
            self.injected_panic();
            // No slots written: searches on the old index may be reading them (they are
            // repaired as read).
            let index = build_index(
                self.metric,
                self.dim,
                old.params(),
                &self.name,
                &points,
                None,
            )?;
            Ok::<_, Error>((index, points.len()))
        }))
        .unwrap_or_else(|panic| {
            Err(Error::Internal(format!(
                "building the index from storage panicked: {}",
                panic_message(panic.as_ref())
            )))
        });
        match result {
            Ok((index, points)) => {
                *self.index.write() = Arc::new(index);
                *self.broken.write() = None;
                self.recoveries.fetch_add(1, Ordering::Relaxed);
                w.dirty = true;
                tracing::warn!(
                    collection = %self.name,
                    points,
                    seconds = started.elapsed().as_secs_f64(),
                    "index rebuilt from storage after a failed update"
                );
                Ok(())
            }
            Err(e) => {
                tracing::error!(collection = %self.name, error = %e, "rebuilding the index from storage failed; searches fail until a rebuild succeeds");
                *self.broken.write() = Some(format!("rebuilding it from storage failed: {e}"));
                Err(e)
            }
        }
    }

    /// Rebuilds the index without its tombstones and persists it (the caller holds the
    /// writer). An unusable index is rebuilt from storage instead.
    pub fn compact(&self, storage: &Storage, w: &mut WriterState) -> Result<CompactReport> {
        let started = Instant::now();
        let before = self.current().stats();
        if self.broken.read().is_some() {
            self.rebuild_from_storage(storage, w)?;
        } else {
            let index = self.current();
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| index.rebuild())) {
                *self.broken.write() = Some(format!(
                    "compaction panicked: {}",
                    panic_message(panic.as_ref())
                ));
                self.rebuild_from_storage(storage, w)?;
            }
        }
        self.compactions.fetch_add(1, Ordering::Relaxed);
        w.dirty = true;
        self.persist(storage, w)?;
        let after = self.current().stats();
        Ok(CompactReport {
            before_total: before.total,
            dropped: before.total.saturating_sub(after.total),
            after_total: after.total,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// True when the dump is behind the index (never for an unusable index: its dump would
    /// be wrong).
    pub fn needs_persist(&self, storage: &Storage, w: &WriterState) -> bool {
        if self.broken.read().is_some() || self.lexical.is_broken() {
            return false;
        }
        let current = storage.last_seq(&self.name).ok();
        w.dirty || current != Some(w.persisted_seq)
    }

    /// Writes the index dump with the storage sequence it reflects, then trims the change log
    /// up to it (the caller holds the writer, so index and sequence agree). Storage is flushed
    /// first: a dump must never be ahead of what storage has on disk.
    pub fn persist(&self, storage: &Storage, w: &mut WriterState) -> Result<()> {
        let index = self.index()?;
        storage.flush()?;
        let seq = storage.last_seq(&self.name)?;
        let start = std::time::Instant::now();
        if let Some(f) = &self.rescore {
            // Before the dump: the points it holds are not replayed at the next open.
            f.sync().map_err(|e| {
                Error::Internal(format!(
                    "syncing the rescoring file of {:?}: {e}",
                    bounded(&self.name)
                ))
            })?;
        }
        index.persist(&self.dir, seq)?;
        // The change log is trimmed only once both dumps reflect `seq`.
        self.lexical.persist(seq)?;
        metrics::histogram!("latentdb_index_dump_duration_seconds", "collection" => self.name.clone())
            .record(start.elapsed().as_secs_f64());
        storage.trim_changes(&self.name, seq)?;
        w.persisted_seq = seq;
        w.changes = 0;
        w.dirty = false;
        metrics::gauge!("latentdb_collection_changelog_length", "collection" => self.name.clone())
            .set(0.0);
        Ok(())
    }

    /// Hard-links the files of the dump into `into` (same relative paths) and returns the
    /// storage sequence it reflects with their relative paths (`None` when there is no usable
    /// dump at or below storage sequence `seq`, or a file cannot be linked). The caller holds
    /// the writer (`w`), so no persist replaces the dump meanwhile; the links keep the files
    /// after a later persist.
    pub fn link_dump(&self, w: &WriterState, seq: u64, into: &Path) -> Option<(u64, Vec<String>)> {
        if w.dirty || w.persisted_seq > seq || self.broken.read().is_some() {
            return None;
        }
        if !self.dir.join("manifest.json").is_file() {
            return None;
        }
        let files = match crate::backup::list_files(&self.dir) {
            Ok(files) if !files.is_empty() => files,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(collection = %self.name, error = %e, "index dump not listed for a backup");
                return None;
            }
        };
        for rel in &files {
            let dest = into.join(rel);
            let linked = dest
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::hard_link(self.dir.join(rel), &dest));
            if let Err(e) = linked {
                tracing::warn!(collection = %self.name, error = %e, "index dump not linked for a backup");
                return None;
            }
        }
        Some((w.persisted_seq, files))
    }

    /// Removes the dump directory (after the collection was dropped).
    pub fn remove_dump(&self) {
        recovery::remove_dump_dir(&self.dir);
    }

    /// The index's counters and open history.
    pub fn info(&self, persisted_seq: u64) -> IndexInfo {
        let index = self.current();
        let IndexStats {
            total,
            live,
            deleted,
        } = index.stats();
        IndexInfo {
            live,
            total,
            deleted,
            loaded_from_dump: self.opened.loaded_from_dump,
            replayed: self.opened.replayed,
            rebuilt_on_open: self.opened.rebuilt,
            compactions: self.compactions.load(Ordering::Relaxed),
            recoveries: self.recoveries.load(Ordering::Relaxed),
            persisted_seq,
            params: index.params(),
            quantized: index.quantized(),
            vector_bytes: index.vector_bytes(),
            index_bytes: index.memory_bytes(),
            payload_bytes: self.payload.read().heap_bytes(),
            rescore_file_bytes: self.rescore.as_ref().map_or(0, RescoreFile::len_bytes),
            lexical: self.lexical.stats(),
            lexical_opened: self.lexical.opened(),
        }
    }

    /// Test hook: panics when a panic was injected (the index update or rebuild "fails").
    fn injected_panic(&self) {
        #[cfg(test)]
        if self
            .inject_panics
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("injected index failure");
        }
    }
}

/// The payload index of a collection and its points with text (in point order), from one
/// scan of storage that neither converts nor copies vectors and texts.
fn scan_payload(storage: &Storage, name: &str) -> Result<(Payload, Vec<u32>)> {
    let mut payload = Payload::default();
    let mut text_points: Vec<u32> = Vec::new();
    storage.scan_point_meta(name, |point, record| {
        if record.has_text {
            text_points.push(point);
        }
        payload.insert(point, record.id, record.metadata);
        Ok(())
    })?;
    Ok((payload, text_points))
}

/// Every stored point with its vector, for a rebuild.
fn scan_vectors(storage: &Storage, name: &str) -> Result<Vec<(u32, Vec<f32>)>> {
    let mut points = Vec::new();
    storage.scan_points(name, |point, record| {
        points.push((point, record.vector));
        Ok(())
    })?;
    Ok(points)
}

/// A new index holding `points`, built with panics caught: [`Error::Internal`] when the
/// index cannot hold what storage holds. `rescore`: see [`insert_points`].
fn build_index(
    metric: Metric,
    dim: usize,
    params: IndexParams,
    name: &str,
    points: &[(u32, Vec<f32>)],
    rescore: Option<&RescoreFile>,
) -> Result<Index> {
    let index = new_index(metric, dim, params)?;
    let built = catch_unwind(AssertUnwindSafe(|| {
        for chunk in points.chunks(BATCH) {
            let refs: Vec<(u32, &[f32])> = chunk.iter().map(|(p, v)| (*p, v.as_slice())).collect();
            insert_points(&index, rescore, name, &refs)?;
        }
        Ok::<(), String>(())
    }));
    match built {
        Ok(Ok(())) => Ok(index),
        Ok(Err(e)) => Err(Error::Internal(format!(
            "building the index from storage failed: {e}"
        ))),
        Err(panic) => Err(Error::Internal(format!(
            "building the index from storage panicked: {}",
            panic_message(panic.as_ref())
        ))),
    }
}

/// Replays change-log entries onto a loaded index: inserts it does not know yet (their
/// vectors read from storage; points gone since are skipped), then removes (idempotent).
fn replay(
    storage: &Storage,
    index: &Index,
    rescore: Option<&RescoreFile>,
    name: &str,
    changes: &[Change],
) -> Result<()> {
    let mut pending: Vec<(u32, Vec<f32>)> = Vec::new();
    let flush = |pending: &mut Vec<(u32, Vec<f32>)>| {
        let refs: Vec<(u32, &[f32])> = pending.iter().map(|(p, v)| (*p, v.as_slice())).collect();
        let res = insert_points(index, rescore, name, &refs);
        pending.clear();
        res.map_err(|e| Error::Internal(format!("replaying the change log: {e}")))
    };
    for c in changes {
        if let Change::Insert { point, .. } = *c
            && !index.knows(point)
        {
            let mut v = Vec::new();
            if storage.point_vector(name, point, &mut v)? {
                pending.push((point, v));
                if pending.len() >= BATCH {
                    flush(&mut pending)?;
                }
            }
        }
    }
    flush(&mut pending)?;
    for c in changes {
        if let Change::Remove { point, .. } = *c {
            index.delete(point);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_storage::{CollectionSpec, Document, Durability, StorageOptions};

    const DIM: usize = 4;

    fn vector(n: u32) -> Vec<f32> {
        vec![1.0, n as f32, (n % 7) as f32, -(n as f32) / 3.0]
    }

    /// Writes documents `ids` the way the facade does: storage, then `apply` and `maintain`
    /// under the writer lock.
    fn write(storage: &Storage, coll: &Collection, ids: std::ops::Range<u32>) {
        let docs = ids
            .map(|n| Document::new(format!("d{n}"), vector(n)))
            .collect();
        // As the database writes: linked while committed, revealed once committed.
        let mut w = coll.writer.lock();
        let (out, staged) =
            storage.upsert_overlapped("c", docs, Some(Durability::Buffered), |inserted| {
                coll.stage(inserted)
            });
        let out = out.unwrap();
        let metas = out.ids.iter().map(|id| (id.clone(), Map::new())).collect();
        coll.apply(&out.removed, &out.inserted, metas, &[], staged);
        coll.maintain(storage, &mut w, out.inserted.len() as u64);
    }

    fn nearest(coll: &Collection, n: u32) -> Result<u32> {
        Ok(coll.index()?.search(&vector(n), 1, None)?[0].id)
    }

    fn setup(dir: &Path) -> (Storage, Collection) {
        let storage = Storage::open(dir, StorageOptions::default()).unwrap();
        storage
            .create_collection(CollectionSpec::new("c", DIM, Metric::L2))
            .unwrap();
        let config = storage.collection_config("c").unwrap();
        let params = IndexParams::default();
        let index = new_index(Metric::L2, DIM, params).unwrap();
        let lexical =
            Lexical::create(&dump_dir(dir, config.cid), LexicalSettings::default()).unwrap();
        let coll = Collection::create(dir, &config, index, lexical);
        (storage, coll)
    }

    /// Reopening with a dump loads it while storage is scanned for the payload; a damaged
    /// dump is rebuilt from a second scan, for the vectors.
    #[test]
    fn reopen_loads_the_dump_or_rebuilds_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, coll) = setup(dir.path());
        write(&storage, &coll, 0..300);
        coll.persist(&storage, &mut coll.writer.lock()).unwrap();
        let config = storage.collection_config("c").unwrap();
        let open = || {
            let mut lost = Vec::new();
            let c = Collection::open(&storage, dir.path(), &config, false, &mut lost).unwrap();
            assert!(lost.is_empty());
            c
        };
        let check = |c: &Collection| {
            assert_eq!(c.payload.read().len(), 300);
            for n in [0, 150, 299] {
                let point = storage.point_of("c", &format!("d{n}")).unwrap().unwrap();
                assert_eq!(nearest(c, n).unwrap(), point);
                assert!(c.payload.read().get(point).is_some());
            }
        };
        let reopened = open();
        let info = reopened.info(0);
        assert!(info.loaded_from_dump && !info.rebuilt_on_open, "{info:?}");
        assert_eq!(info.live, 300);
        check(&reopened);
        drop(reopened);
        // A vectors file one byte too long (its manifest still says the old length) is what an
        // append whose manifest was never committed leaves: the dump loads, the tail ignored.
        let dump = dump_dir(dir.path(), config.cid);
        let vectors = std::fs::read_dir(&dump)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("vectors-"))
            .unwrap();
        let mut bytes = std::fs::read(&vectors).unwrap();
        bytes.push(0);
        std::fs::write(&vectors, &bytes).unwrap();
        let longer = open();
        let info = longer.info(0);
        assert!(info.loaded_from_dump && !info.rebuilt_on_open, "{info:?}");
        check(&longer);
        drop(longer);
        // One byte too short is damage: rebuilt from storage.
        bytes.truncate(bytes.len() - 2);
        std::fs::write(&vectors, bytes).unwrap();
        let rebuilt = open();
        let info = rebuilt.info(0);
        assert!(!info.loaded_from_dump && info.rebuilt_on_open, "{info:?}");
        assert_eq!(info.live, 300);
        check(&rebuilt);
    }

    #[test]
    fn an_index_panic_after_the_storage_commit_neither_fails_the_write_nor_loses_it() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, coll) = setup(dir.path());
        write(&storage, &coll, 0..20);
        coll.inject_panics.store(1, Ordering::Relaxed);
        // The linking of this batch panics: the write stands (it is in storage) and the index
        // is rebuilt from storage before the writer returns.
        write(&storage, &coll, 20..40);
        assert_eq!(storage.count("c").unwrap(), 40);
        let info = coll.info(0);
        assert_eq!((info.live, info.recoveries), (40, 1), "{info:?}");
        for n in [3, 25, 39] {
            let point = storage.point_of("c", &format!("d{n}")).unwrap().unwrap();
            assert_eq!(nearest(&coll, n).unwrap(), point);
        }
        // The rebuilt index is persisted like any other.
        assert!(coll.needs_persist(&storage, &coll.writer.lock()));

        // The same with a batch large enough to be linked beside its commit (on another
        // thread): the commit stands, the hidden points are dropped with the rebuild.
        let big = latentdb_storage::OVERLAP_MIN_DOCS as u32;
        coll.inject_panics.store(1, Ordering::Relaxed);
        write(&storage, &coll, 40..40 + big);
        assert_eq!(storage.count("c").unwrap(), 40 + u64::from(big));
        let info = coll.info(0);
        assert_eq!(
            (info.live, info.total, info.recoveries),
            (40 + big as usize, 40 + big as usize, 2),
            "{info:?}"
        );
        for n in [3, 41, 39 + big] {
            let point = storage.point_of("c", &format!("d{n}")).unwrap().unwrap();
            assert_eq!(nearest(&coll, n).unwrap(), point);
        }
    }

    #[test]
    fn an_index_that_cannot_be_rebuilt_fails_searches_until_a_rebuild_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, coll) = setup(dir.path());
        write(&storage, &coll, 0..10);
        // The update and the rebuild right after it both panic.
        coll.inject_panics.store(2, Ordering::Relaxed);
        write(&storage, &coll, 10..20);
        let err = nearest(&coll, 15).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
        assert!(err.to_string().contains("unusable"), "{err}");
        // Never persisted while unusable: the dump would be wrong.
        assert!(!coll.needs_persist(&storage, &coll.writer.lock()));
        // The next write rebuilds it, with everything storage holds.
        write(&storage, &coll, 20..21);
        assert_eq!(coll.info(0).live, 21);
        let point = storage.point_of("c", "d15").unwrap().unwrap();
        assert_eq!(nearest(&coll, 15).unwrap(), point);
    }
}
