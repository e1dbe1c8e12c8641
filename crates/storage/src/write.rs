//! Writes: upserts, deletes and model switches. Each batch is one atomic sled batch (a model
//! switch: one transaction with the registry) under the collection's writer lock, which hands
//! out point ids and change sequences.

use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering;

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use crate::applied;
use crate::document::{Document, validate, validate_id};
use crate::error::{Error, Result};
use crate::key;
use crate::options::{Durability, WriteOptions};
use crate::record::{self, Change, MAX_INSERT_RUN};
use crate::snapshot;
use crate::store::{CollectionState, Counters, DeleteOutcome, Storage, UpsertOutcome, not_found};

/// The fewest documents in a batch (new or replacing: each gets a new point) for which
/// [`Storage::upsert_overlapped`] commits on a thread of its own, beside the caller's work.
pub const OVERLAP_MIN_DOCS: usize = 256;

impl Storage {
    /// Inserts or replaces a batch of documents, atomically: either every document is stored or
    /// none is. With [`Durability::Sync`] the batch is on disk when this returns.
    pub fn upsert(
        &self,
        collection: &str,
        docs: Vec<Document>,
        durability: Option<Durability>,
    ) -> Result<UpsertOutcome> {
        self.upsert_inner(collection, docs, durability.into(), false, |_| ())
            .0
    }

    /// Like [`Storage::upsert`], calling `during` with the batch's new points and their
    /// vectors (in the order of `docs`, the outcome's `inserted`) while the batch is
    /// committed, so that the caller's work on them (linking the points into an index)
    /// overlaps the commit: for a batch of at least [`OVERLAP_MIN_DOCS`] documents, the id map
    /// is read (for the documents replaced), the batch built and applied on a scoped thread
    /// meanwhile; a smaller one is applied first, then `during` runs (a thread would cost
    /// more than it saves).
    ///
    /// `during` runs only for a batch that passed every check and got its point ids, with the
    /// collection's writer lock held; the batch may not be committed yet, and may still fail
    /// (an I/O error), in which case nothing of it is stored and its point ids are given again
    /// by the next write. Returns what `during` returned whenever it ran, beside
    /// the outcome or the error. A panic in `during` is resumed once the batch is settled
    /// (committed, with its counters, or failed).
    pub fn upsert_overlapped<R>(
        &self,
        collection: &str,
        docs: Vec<Document>,
        durability: Option<Durability>,
        during: impl FnOnce(&[(u32, Vec<f32>)]) -> R,
    ) -> (Result<UpsertOutcome>, Option<R>) {
        self.upsert_inner(collection, docs, durability.into(), true, during)
    }

    /// [`Storage::upsert_overlapped`] with the write's `options`: with
    /// [`WriteOptions::applied`], the applied sequence goes into the same atomic batch as the
    /// documents (an empty batch then writes it alone; a batch refused writes neither).
    pub fn upsert_overlapped_with<R>(
        &self,
        collection: &str,
        docs: Vec<Document>,
        options: WriteOptions,
        during: impl FnOnce(&[(u32, Vec<f32>)]) -> R,
    ) -> (Result<UpsertOutcome>, Option<R>) {
        self.upsert_inner(collection, docs, options, true, during)
    }

    fn upsert_inner<R>(
        &self,
        collection: &str,
        docs: Vec<Document>,
        options: WriteOptions,
        overlap: bool,
        during: impl FnOnce(&[(u32, Vec<f32>)]) -> R,
    ) -> (Result<UpsertOutcome>, Option<R>) {
        let state = match self.state(collection) {
            Ok(state) => state,
            Err(e) => return (Err(e), None),
        };
        let encoded = match encode_batch(docs, state.dim, self.options.max_text_bytes) {
            Ok(encoded) => encoded,
            Err(e) => return (Err(e), None),
        };
        if encoded.is_empty() && options.applied.is_none() {
            let out = UpsertOutcome {
                seq: state.seq.load(Ordering::Acquire),
                ..Default::default()
            };
            let r = during(&[]);
            return (Ok(out), Some(r));
        }

        let mut counters = state.writer.lock();
        if counters.dropped {
            return (Err(not_found(collection)), None);
        }
        let (inserted, records) = match assign_points(&state, &counters, encoded) {
            Ok(split) => split,
            Err(e) => return (Err(e), None),
        };
        let (built, r) = if overlap && inserted.len() >= OVERLAP_MIN_DOCS {
            // The caller's work needs the new points alone: it starts at once, while the id
            // map is read and the batch built and applied beside it.
            let c: &Counters = &counters;
            let commit = || build_and_apply(&state, c, records, options.applied);
            match beside(commit, || during(&inserted)) {
                Ok(pair) => pair,
                Err(e) => return (Err(e), None),
            }
        } else {
            match build_and_apply(&state, &counters, records, options.applied) {
                Ok(pending) => (
                    Ok(pending),
                    catch_unwind(AssertUnwindSafe(|| during(&inserted))),
                ),
                Err(e) => return (Err(e), None),
            }
        };
        // An applied batch's counters are published even when `during` panicked (the panic is
        // resumed after): the next write must not be given the same point ids.
        let out = built.map(|mut pending| {
            pending.out.inserted = inserted;
            pending.commit(&state, &mut counters)
        });
        drop(counters);
        let r = r.unwrap_or_else(|panic| resume_unwind(panic));
        let out = match out {
            Ok(out) => out,
            Err(e) => return (Err(e), Some(r)),
        };
        // The batch stands whether or not the flush succeeds (as for `upsert`).
        match self.sync(options.durability) {
            Ok(()) => (Ok(out), Some(r)),
            Err(e) => (Err(e), Some(r)),
        }
    }

    /// Switches a collection to another model in one atomic, durable step: inserts or
    /// replaces `docs` (as [`Storage::upsert`] does: new points, change-log entries for the
    /// index) and replaces the collection's embedder settings with `embedder` (the index
    /// settings are kept), all in one sled transaction over the collection's tree and the
    /// registry, under the collection's writer lock. Either every document and the new settings
    /// are stored, or nothing is (a crash in between cannot leave the new model's vectors under
    /// the old model's settings). With [`Durability::Sync`] both are on disk when this returns.
    pub fn replace_vectors_and_settings(
        &self,
        collection: &str,
        docs: Vec<Document>,
        embedder: serde_json::Value,
        durability: Option<Durability>,
    ) -> Result<UpsertOutcome> {
        let state = self.state(collection)?;
        let encoded = encode_batch(docs, state.dim, self.options.max_text_bytes)?;
        let mut counters = state.writer.lock();
        if counters.dropped {
            return Err(not_found(collection));
        }
        let mut config = state.config.read().clone();
        config.spec.embedder = embedder;
        let settings = serde_json::to_vec(&config)
            .map_err(|e| Error::Internal(format!("collection config does not serialise: {e}")))?;
        let pending = upsert_batch(&state, &counters, encoded, None)?;
        // The closure may run more than once (on a conflict): it only writes through the
        // transaction.
        (&self.registry, &state.tree).transaction(|(registry, tree)| {
            tree.apply_batch(&pending.batch)?;
            registry.insert(collection.as_bytes(), settings.as_slice())?;
            Ok::<(), ConflictableTransactionError<Error>>(())
        })?;
        let out = pending.commit(&state, &mut counters);
        *state.config.write() = config;
        drop(counters);
        self.sync(durability)?;
        Ok(out)
    }

    pub(crate) fn sync(&self, durability: Option<Durability>) -> Result<()> {
        if durability.unwrap_or(self.options.durability) == Durability::Sync {
            self.flush()?;
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
        self.delete_with(collection, ids, durability.into())
    }

    /// [`Storage::delete`] with the write's `options`: with [`WriteOptions::applied`], the
    /// applied sequence goes into the same atomic batch as the removals (when no id exists, it
    /// is written alone; a delete refused writes neither).
    pub fn delete_with(
        &self,
        collection: &str,
        ids: &[impl AsRef<str>],
        options: WriteOptions,
    ) -> Result<DeleteOutcome> {
        let state = self.state(collection)?;
        for id in ids {
            validate_id(id.as_ref())?;
        }
        let mut counters = state.writer.lock();
        if counters.dropped {
            return Err(not_found(collection));
        }
        let mut pending = delete_batch(&state, &counters, ids, options.applied)?;
        if pending.out.deleted.is_empty() && options.applied.is_none() {
            return Ok(pending.out);
        }
        state.tree.apply_batch(std::mem::take(&mut pending.batch))?;
        let out = pending.commit(&state, &mut counters);
        drop(counters);
        self.sync(options.durability)?;
        Ok(out)
    }
}

/// A document ready to write: its id, vector and encoded record.
type Encoded = (String, Vec<f32>, Vec<u8>);

/// A document's id and encoded record, once its point is given (see [`assign_points`]).
type Keyed = (String, Vec<u8>);

/// New points with their vectors, in the order of their documents.
type NewPoints = Vec<(u32, Vec<f32>)>;

/// Validates and encodes a batch (no two documents with one id).
pub(crate) fn encode_batch(
    docs: Vec<Document>,
    dim: usize,
    max_text_bytes: usize,
) -> Result<Vec<Encoded>> {
    let mut seen = HashSet::with_capacity(docs.len());
    let mut encoded = Vec::with_capacity(docs.len());
    for doc in docs {
        let doc = validate(doc, dim, max_text_bytes)?;
        if !seen.insert(doc.id.clone()) {
            return Err(Error::DuplicateId { id: doc.id });
        }
        let bytes =
            record::encode_record(&doc.id, &doc.vector, doc.text.as_deref(), &doc.metadata)?;
        encoded.push((doc.id, doc.vector, bytes));
    }
    Ok(encoded)
}

/// Runs `commit` on a scoped thread of its own while `during` runs on this one, and returns
/// both outcomes (a panic in `during` is caught and returned; one in `commit` is an internal
/// error). Fails, with neither run, when the thread cannot be started.
fn beside<T: Send, R>(
    commit: impl FnOnce() -> Result<T> + Send,
    during: impl FnOnce() -> R,
) -> Result<(Result<T>, std::thread::Result<R>)> {
    std::thread::scope(|s| {
        let committer = std::thread::Builder::new()
            .name("latentdb-commit".into())
            .spawn_scoped(s, commit)
            .map_err(|e| Error::Internal(format!("cannot start the commit thread: {e}")))?;
        let r = catch_unwind(AssertUnwindSafe(during));
        let committed = committer
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("the batch commit panicked".into())));
        Ok((committed, r))
    })
}

/// Builds the writes of an upsert of `records` (see [`upsert_records`]) and applies them.
fn build_and_apply(
    state: &CollectionState,
    counters: &Counters,
    records: Vec<Keyed>,
    applied: Option<u64>,
) -> Result<Pending<UpsertOutcome>> {
    let mut pending = upsert_records(state, counters, records, applied)?;
    state.tree.apply_batch(std::mem::take(&mut pending.batch))?;
    Ok(pending)
}

/// A write's batch, built under the writer lock and not yet applied, with the counters it
/// leaves and its outcome `O`.
pub(crate) struct Pending<O> {
    pub(crate) batch: sled::Batch,
    next_point: u32,
    seq: u64,
    count: u64,
    pub(crate) out: O,
}

/// Builds the writes of an upsert of `encoded` (see [`upsert_records`]), with the outcome's
/// new points and their vectors.
pub(crate) fn upsert_batch(
    state: &CollectionState,
    counters: &Counters,
    encoded: Vec<Encoded>,
    applied: Option<u64>,
) -> Result<Pending<UpsertOutcome>> {
    let (inserted, records) = assign_points(state, counters, encoded)?;
    let mut pending = upsert_records(state, counters, records, applied)?;
    pending.out.inserted = inserted;
    Ok(pending)
}

/// Gives the documents of `encoded` their points, consecutive from the counters' next one:
/// returns the new points with their vectors, and each document's id and record, both in the
/// order of `encoded`. Fails, with no point given, when the collection's point ids would run
/// out.
fn assign_points(
    state: &CollectionState,
    counters: &Counters,
    encoded: Vec<Encoded>,
) -> Result<(NewPoints, Vec<Keyed>)> {
    let first = counters.next_point;
    // The counter after the last point given must exist too (it is stored as the next one).
    u32::try_from(encoded.len())
        .ok()
        .and_then(|n| first.checked_add(n))
        .ok_or_else(|| Error::IdSpaceExhausted(state.name.clone()))?;
    let mut inserted = Vec::with_capacity(encoded.len());
    let mut records = Vec::with_capacity(encoded.len());
    for ((id, vector, bytes), point) in encoded.into_iter().zip(first..) {
        inserted.push((point, vector));
        records.push((id, bytes));
    }
    Ok((inserted, records))
}

/// Builds the writes of an upsert of `records` (ids and encoded records, in the order
/// [`assign_points`] gave their points: consecutive from the counters' next one), with the
/// counters' new values, the applied sequence `applied` when given, and the change log: one
/// entry per removed point, then the inserted points, whose ids and sequences are both
/// consecutive, as insert runs of up to [`MAX_INSERT_RUN`] points each, one entry per run
/// instead of one per point. The outcome's `inserted` is left empty, for the caller, which
/// holds the points. Reads the id map, so the collection's writer lock must be held from here
/// until the batch is applied.
fn upsert_records(
    state: &CollectionState,
    counters: &Counters,
    records: Vec<Keyed>,
    applied: Option<u64>,
) -> Result<Pending<UpsertOutcome>> {
    let mut batch = sled::Batch::default();
    applied::put(&state.tree, &mut batch, applied)?;
    let first = counters.next_point;
    let n = records.len();
    let next_point = u32::try_from(n)
        .ok()
        .and_then(|n| first.checked_add(n))
        .ok_or_else(|| Error::IdSpaceExhausted(state.name.clone()))?;
    let mut seq = counters.seq;
    let mut count = state.count.load(Ordering::Acquire);
    let mut out = UpsertOutcome {
        ids: Vec::with_capacity(n),
        inserted: Vec::new(),
        removed: Vec::new(),
        seq: 0,
    };
    for ((id, bytes), point) in records.into_iter().zip(first..) {
        let id_key = key::id_key(&id);
        match state.tree.get(&id_key)? {
            Some(old) => {
                let old = key::be_u32(&old)?;
                seq += 1;
                snapshot::remove_record(state, counters.holds, &mut batch, old, seq)?;
                let change = Change::Remove { seq, point: old };
                batch.insert(&key::log_key(seq), &change.encode_value());
                out.removed.push(old);
            }
            None => count += 1,
        }
        batch.insert(id_key, &point.to_be_bytes());
        batch.insert(&key::point_key(point), bytes);
        out.ids.push(id);
    }
    // The inserts follow the removes (an atomic batch: no reader sees the order), at
    // consecutive sequences, as their points are consecutive.
    for start in (0..n).step_by(MAX_INSERT_RUN as usize) {
        let run = (n - start).min(MAX_INSERT_RUN as usize) as u32;
        let first_point = first + start as u32;
        seq += u64::from(run);
        let value = match run {
            1 => Change::Insert {
                seq,
                point: first_point,
            }
            .encode_value()
            .to_vec(),
            _ => Change::encode_insert_run(first_point, run).to_vec(),
        };
        batch.insert(&key::log_key(seq), value);
    }
    if n > 0 {
        batch.insert(key::META_NEXT_POINT, &next_point.to_be_bytes());
        batch.insert(key::META_SEQ, &seq.to_be_bytes());
        batch.insert(key::META_COUNT, &count.to_be_bytes());
    }
    out.seq = seq;
    Ok(Pending {
        batch,
        next_point,
        seq,
        count,
        out,
    })
}

/// Builds the writes of a delete of `ids` (one change-log entry per removed point, the
/// counters' new values when a document was removed, and the applied sequence `applied` when
/// given). Reads the id map, so the collection's writer lock must be held from here until the
/// batch is applied.
pub(crate) fn delete_batch(
    state: &CollectionState,
    counters: &Counters,
    ids: &[impl AsRef<str>],
    applied: Option<u64>,
) -> Result<Pending<DeleteOutcome>> {
    let mut batch = sled::Batch::default();
    applied::put(&state.tree, &mut batch, applied)?;
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
            seq += 1;
            snapshot::remove_record(state, counters.holds, &mut batch, old, seq)?;
            let change = Change::Remove { seq, point: old };
            batch.insert(&key::log_key(seq), &change.encode_value());
            count = count.saturating_sub(1);
            out.deleted.push(id.to_owned());
            out.removed.push(old);
        }
    }
    if !out.deleted.is_empty() {
        batch.insert(key::META_SEQ, &seq.to_be_bytes());
        batch.insert(key::META_COUNT, &count.to_be_bytes());
    }
    out.seq = seq;
    Ok(Pending {
        batch,
        next_point: counters.next_point,
        seq,
        count,
        out,
    })
}

impl<O> Pending<O> {
    /// Publishes the counters of an applied batch; the writer lock is still held.
    fn commit(self, state: &CollectionState, counters: &mut Counters) -> O {
        counters.next_point = self.next_point;
        counters.seq = self.seq;
        state.count.store(self.count, Ordering::Release);
        state.seq.store(self.seq, Ordering::Release);
        self.out
    }
}
