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

    /// Like [`Storage::upsert`], calling `during` with the batch's outcome (ids, new points with
    /// their vectors, removed points) while the batch is committed, so that the caller's work
    /// on it (linking the points into an index) overlaps the commit: a batch of at least
    /// [`OVERLAP_MIN_DOCS`] documents is applied on a scoped thread meanwhile; a smaller one is
    /// applied first, then `during` runs (a thread would cost more than it saves).
    ///
    /// `during` runs only for a batch that passed every check and got its point ids, with the
    /// collection's writer lock held; the batch may not be committed yet, and may still fail
    /// to apply (an I/O error), in which case nothing of it is stored and its point ids are
    /// given again by the next write. Returns what `during` returned whenever it ran, beside
    /// the outcome or the error. A panic in `during` is resumed once the batch is settled
    /// (committed, with its counters, or failed).
    pub fn upsert_overlapped<R>(
        &self,
        collection: &str,
        docs: Vec<Document>,
        durability: Option<Durability>,
        during: impl FnOnce(&UpsertOutcome) -> R,
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
        during: impl FnOnce(&UpsertOutcome) -> R,
    ) -> (Result<UpsertOutcome>, Option<R>) {
        self.upsert_inner(collection, docs, options, true, during)
    }

    fn upsert_inner<R>(
        &self,
        collection: &str,
        docs: Vec<Document>,
        options: WriteOptions,
        overlap: bool,
        during: impl FnOnce(&UpsertOutcome) -> R,
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
            let r = during(&out);
            return (Ok(out), Some(r));
        }

        let mut counters = state.writer.lock();
        if counters.dropped {
            return (Err(not_found(collection)), None);
        }
        let mut pending = match upsert_batch(&state, &counters, encoded, options.applied) {
            Ok(pending) => pending,
            Err(e) => return (Err(e), None),
        };
        let batch = std::mem::take(&mut pending.batch);
        let (applied, r) = if overlap && pending.out.inserted.len() >= OVERLAP_MIN_DOCS {
            match apply_beside(&state.tree, batch, || during(&pending.out)) {
                Ok(pair) => pair,
                Err(e) => return (Err(e), None),
            }
        } else {
            if let Err(e) = state.tree.apply_batch(batch) {
                return (Err(e.into()), None);
            }
            (
                Ok(()),
                catch_unwind(AssertUnwindSafe(|| during(&pending.out))),
            )
        };
        // An applied batch's counters are published even when `during` panicked (the panic is
        // resumed after): the next write must not be given the same point ids.
        let out = applied.map(|()| pending.commit(&state, &mut counters));
        drop(counters);
        let r = r.unwrap_or_else(|panic| resume_unwind(panic));
        let out = match out {
            Ok(out) => out,
            Err(e) => return (Err(e.into()), Some(r)),
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

/// Applies `batch` to `tree` on a scoped thread of its own while `during` runs on this one, and
/// returns both outcomes (a panic in either is caught). Fails, with nothing applied and
/// `during` not run, when the thread cannot be started.
fn apply_beside<R>(
    tree: &sled::Tree,
    batch: sled::Batch,
    during: impl FnOnce() -> R,
) -> Result<(sled::Result<()>, std::thread::Result<R>)> {
    std::thread::scope(|s| {
        let committer = std::thread::Builder::new()
            .name("latentdb-commit".into())
            .spawn_scoped(s, move || tree.apply_batch(batch))
            .map_err(|e| Error::Internal(format!("cannot start the commit thread: {e}")))?;
        let r = catch_unwind(AssertUnwindSafe(during));
        let applied = committer.join().unwrap_or_else(|_| {
            Err(sled::Error::ReportableBug(
                "the batch commit panicked".into(),
            ))
        });
        Ok((applied, r))
    })
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

/// Builds the writes of an upsert of `encoded` (points from the counters, the counters' new
/// values, the applied sequence `applied` when given, and the change log: one entry per
/// removed point, then the inserted points, whose ids and sequences are both consecutive, as
/// insert runs of up to [`MAX_INSERT_RUN`] points each, one entry per run instead of one per
/// point). Reads the id map, so the collection's writer lock must be held from here until the
/// batch is applied.
pub(crate) fn upsert_batch(
    state: &CollectionState,
    counters: &Counters,
    encoded: Vec<Encoded>,
    applied: Option<u64>,
) -> Result<Pending<UpsertOutcome>> {
    let mut batch = sled::Batch::default();
    applied::put(&state.tree, &mut batch, applied)?;
    let mut next_point = counters.next_point;
    let mut seq = counters.seq;
    let mut count = state.count.load(Ordering::Acquire);
    let mut out = UpsertOutcome {
        ids: Vec::with_capacity(encoded.len()),
        inserted: Vec::with_capacity(encoded.len()),
        removed: Vec::new(),
        seq: 0,
    };
    let any = !encoded.is_empty();
    for (id, vector, bytes) in encoded {
        let id_key = key::id_key(&id);
        let point = next_point;
        next_point = next_point
            .checked_add(1)
            .ok_or_else(|| Error::IdSpaceExhausted(state.name.clone()))?;
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
        out.inserted.push((point, vector));
    }
    // The inserts follow the removes (an atomic batch: no reader sees the order), at
    // consecutive sequences, as their points are consecutive.
    for run in out.inserted.chunks(MAX_INSERT_RUN as usize) {
        let first_point = run[0].0;
        let n = run.len() as u32;
        seq += u64::from(n);
        let value = match n {
            1 => Change::Insert {
                seq,
                point: first_point,
            }
            .encode_value()
            .to_vec(),
            _ => Change::encode_insert_run(first_point, n).to_vec(),
        };
        batch.insert(&key::log_key(seq), value);
    }
    if any {
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
