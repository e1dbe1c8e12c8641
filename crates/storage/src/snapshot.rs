//! [`Snapshot`]: a point-in-time view of some collections that writers keep going around.
//!
//! Records are never modified in place and point ids are never reused, so the documents of a
//! collection at sequence `S` are exactly the records whose point is below the `next_point` of
//! `S` and that were not removed at or before `S`. A snapshot captures `S` (and the counters
//! and configuration) of every chosen collection at one instant, holding all their writer locks
//! together for the few microseconds that takes, and *holds* them: while a collection is held,
//! a writer that removes a record (a delete, or the old version of a replaced document) moves
//! it from its `p` key to a deferred key `d` + point → removal sequence (u64 BE) + record, in
//! the same atomic batch, instead of deleting it. Every read but the snapshot's ignores `d`.
//! When the last hold on a collection ends, its deferred records are purged (in batches, under
//! the writer lock, stopping if a new hold begins); a crash leaves them behind, and open
//! purges them. See `docs/FORMAT.md`, "Deferred records".

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::collection::CollectionConfig;
use crate::error::{Error, Result};
use crate::key;
use crate::record::Change;
use crate::store::{CollectionState, Storage, not_found};

/// The most deferred records purged in one atomic batch.
const PURGE_BATCH: usize = 10_000;

/// One collection as a [`Snapshot`] captured it.
#[derive(Debug, Clone)]
pub struct SnapshotCollection {
    /// The collection's name.
    pub name: String,
    /// Its stable identity.
    pub cid: u64,
    /// Its configuration at the capture.
    pub config: CollectionConfig,
    /// The sequence of its last change at the capture.
    pub seq: u64,
    /// The next point id at the capture: every point of the snapshot is below it.
    pub next_point: u32,
    /// The number of live documents at the capture.
    pub count: u64,
}

/// A point-in-time view of some collections (see the module documentation). Writers are not
/// blocked while it lives; dropping it ends its holds.
pub struct Snapshot {
    storage_states: Vec<Arc<CollectionState>>,
    collections: Vec<SnapshotCollection>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("collections", &self.collections)
            .finish()
    }
}

impl Storage {
    /// Captures the collections `names` (all of them when empty) at one instant and holds them
    /// until the snapshot is dropped. Writers wait only for the capture itself.
    pub fn snapshot(&self, names: &[String]) -> Result<Snapshot> {
        let mut states: Vec<Arc<CollectionState>> = if names.is_empty() {
            self.collections.read().values().cloned().collect()
        } else {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                if seen.insert(n.as_str()) {
                    out.push(self.state(n)?);
                }
            }
            out
        };
        // A fixed lock order (by cid) so that two captures cannot deadlock.
        states.sort_by_key(|s| s.cid);
        let mut guards = Vec::with_capacity(states.len());
        for s in &states {
            let g = s.writer.lock();
            if g.dropped {
                return Err(not_found(&s.name));
            }
            guards.push(g);
        }
        let mut collections = Vec::with_capacity(states.len());
        for (s, g) in states.iter().zip(guards.iter_mut()) {
            g.holds += 1;
            collections.push(SnapshotCollection {
                name: s.name.clone(),
                cid: s.cid,
                config: s.config.read().clone(),
                seq: g.seq,
                next_point: g.next_point,
                count: s.count.load(Ordering::Acquire),
            });
        }
        drop(guards);
        Ok(Snapshot {
            storage_states: states,
            collections,
        })
    }

    /// The number of records a collection keeps deferred for the snapshots holding it (0 when
    /// none does, once the purge after the last hold has run).
    pub fn deferred_records(&self, collection: &str) -> Result<u64> {
        self.read(collection, |state| {
            let mut n = 0u64;
            for item in state.tree.scan_prefix([key::DEFERRED_PREFIX]).keys() {
                item?;
                n += 1;
            }
            Ok(n)
        })
    }

    /// Removes the deferred records of every collection that no snapshot holds (run on open;
    /// a crash during a backup leaves them behind).
    pub(crate) fn purge_all_deferred(&self) -> Result<()> {
        let states: Vec<Arc<CollectionState>> = self.collections.read().values().cloned().collect();
        for s in states {
            purge_deferred(&s)?;
        }
        Ok(())
    }
}

impl Snapshot {
    /// The captured collections, in capture (cid) order.
    pub fn collections(&self) -> &[SnapshotCollection] {
        &self.collections
    }

    /// Calls `f` with every document of collection `i` (an index into
    /// [`Snapshot::collections`]) as it was at the capture: its point id and its encoded
    /// record (see `docs/FORMAT.md`), each exactly once, in no particular order. Returns the
    /// number of records visited.
    pub fn for_each_record(
        &self,
        i: usize,
        mut f: impl FnMut(u32, &[u8]) -> Result<()>,
    ) -> Result<u64> {
        let (Some(state), Some(c)) = (self.storage_states.get(i), self.collections.get(i)) else {
            return Err(Error::InvalidArgument(format!(
                "snapshot has no collection number {i}"
            )));
        };
        let mut n = 0u64;
        // Live records below the captured next point. A record removed while this scan runs
        // moves to `d` atomically: seen here before the move, or in the `d` scan after it.
        let mut seen: HashSet<u32> = HashSet::new();
        let start = key::point_key(0);
        let end = key::point_key(c.next_point);
        for item in state.tree.range(start.as_slice()..end.as_slice()) {
            let (k, v) = item?;
            let point = key::parse_point_key(&k)?;
            seen.insert(point);
            f(point, &v)?;
            n += 1;
        }
        // Records removed after the capture: deferred with a removal sequence above it.
        for item in state.tree.scan_prefix([key::DEFERRED_PREFIX]) {
            let (k, v) = item?;
            let point = key::parse_deferred_key(&k)?;
            let (seq, record) = key::split_deferred_value(&v)?;
            if seq > c.seq && point < c.next_point && !seen.contains(&point) {
                f(point, record)?;
                n += 1;
            }
        }
        if state.dropped.load(Ordering::SeqCst) {
            return Err(not_found(&c.name));
        }
        Ok(n)
    }
}

impl Snapshot {
    /// The change-log entries of collection `i` with sequences in `(after, captured]`, oldest
    /// first, or `None` when the log no longer reaches back to `after + 1` (it is not trimmed
    /// while the snapshot holds the collection, so what it had at the capture stays).
    pub fn changes(&self, i: usize, after: u64) -> Result<Option<Vec<Change>>> {
        let (Some(state), Some(c)) = (self.storage_states.get(i), self.collections.get(i)) else {
            return Err(Error::InvalidArgument(format!(
                "snapshot has no collection number {i}"
            )));
        };
        if after >= c.seq {
            return Ok(Some(Vec::new()));
        }
        let out = crate::read::read_log(&state.tree, after, c.seq)?;
        let complete =
            out.len() as u64 == c.seq - after && out.first().map(Change::seq) == Some(after + 1);
        Ok(complete.then_some(out))
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        for s in &self.storage_states {
            let last = {
                let mut g = s.writer.lock();
                g.holds = g.holds.saturating_sub(1);
                g.holds == 0 && !g.dropped
            };
            if last && let Err(e) = purge_deferred(s) {
                tracing::warn!(collection = %s.name, error = %e, "cannot purge deferred records");
            }
        }
    }
}

/// Deletes a collection's deferred records, a batch at a time under its writer lock, while no
/// snapshot holds it.
fn purge_deferred(state: &CollectionState) -> Result<()> {
    loop {
        let g = state.writer.lock();
        if g.holds > 0 || g.dropped {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut n = 0usize;
        for item in state.tree.scan_prefix([key::DEFERRED_PREFIX]).keys() {
            batch.remove(item?);
            n += 1;
            if n == PURGE_BATCH {
                break;
            }
        }
        if n == 0 {
            return Ok(());
        }
        state.tree.apply_batch(batch)?;
        drop(g);
        if n < PURGE_BATCH {
            return Ok(());
        }
    }
}

/// What a writer does with the record of a removed point `old` (at removal sequence `seq`):
/// deletes it, or defers it while a snapshot holds the collection.
pub(crate) fn remove_record(
    state: &CollectionState,
    holds: u32,
    batch: &mut sled::Batch,
    old: u32,
    seq: u64,
) -> Result<()> {
    let pk = key::point_key(old);
    if holds > 0
        && let Some(record) = state.tree.get(pk)?
    {
        batch.insert(
            &key::deferred_key(old),
            key::deferred_value(seq, &record).as_slice(),
        );
    }
    batch.remove(&pk);
    Ok(())
}
