//! The public [`Index`]: one HNSW graph per collection with tombstones, filters, exact search
//! and online rebuild.

use std::collections::{BinaryHeap, HashSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use crate::distance::{self, VectorDefect};
use crate::error::{Error, Result};
use crate::graph::{Cand, Graph};
use crate::metric::MetricExt;
use crate::params::IndexParams;
use crate::persist::DumpedVectors;
use latentdb_types::Metric;

/// One search result: a point id and its score (see [`MetricExt`] for the unit; a larger
/// score is always closer, and results come best first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The point id given at insert.
    pub id: u32,
    /// Cosine similarity, inner product, or negated Euclidean distance, depending on the
    /// metric: larger is closer.
    pub score: f32,
}

/// A batch of points linked into an index but hidden from searches until
/// [`Index::publish`] reveals it (see [`Index::stage_batch`]).
#[derive(Debug)]
#[must_use = "a staged batch stays hidden until it is published"]
pub struct StagedBatch {
    graph: Arc<Graph>,
    slots: Range<usize>,
}

impl StagedBatch {
    /// How many points the batch holds.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the batch holds no points.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Point counts of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Points in the graph, tombstoned ones included.
    pub total: usize,
    /// Points that searches can return.
    pub live: usize,
    /// Tombstoned points (deleted, not yet dropped by [`Index::rebuild`]).
    pub deleted: usize,
}

/// Below this fraction of live points matching a filter, [`Index::search_allowed`] searches
/// the matching points exactly instead of walking the graph: a graph walk under a selective
/// filter visits most of the graph anyway (the hnswlib and hnsw_rs behaviour) while the exact
/// scan costs one distance per matching point.
pub const EXACT_SEARCH_FRACTION: f64 = 0.1;

/// Largest vector dimension an index accepts.
pub const MAX_DIMENSION: usize = 65_536;

/// Below this many matching points the exact scan is always used (cheaper than any walk).
pub const EXACT_SEARCH_MIN: usize = 4096;

/// An HNSW vector index over `u32` point ids.
///
/// All methods take `&self` and the type is `Send + Sync`: searches run concurrently with
/// each other, with [`delete`](Index::delete), with inserts (a batch holds an exclusive lock
/// only while its vectors are appended), and with [`rebuild`](Index::rebuild), which builds a
/// new graph beside the old one and swaps it in. Inserts, rebuilds and persists are serialised
/// among themselves.
#[derive(Debug)]
pub struct Index {
    metric: Metric,
    dim: usize,
    params: IndexParams,
    graph: RwLock<Arc<Graph>>,
    writer: Mutex<()>,
    /// The vectors file of the last dump this index wrote or was loaded from, which the next
    /// [`persist`](Index::persist) into the same directory extends instead of rewriting.
    dumped: Mutex<Option<DumpedVectors>>,
}

impl Index {
    /// A new, empty index.
    pub fn new(metric: Metric, dim: usize, params: IndexParams) -> Result<Self> {
        if dim == 0 || dim > MAX_DIMENSION {
            return Err(Error::InvalidArgument(format!(
                "dimension must be in 1..={MAX_DIMENSION}, got {dim}"
            )));
        }
        params.validate_for(dim)?;
        Ok(Self::from_graph(Graph::new(metric, dim, params)?))
    }

    pub(crate) fn from_graph(graph: Graph) -> Self {
        Self {
            metric: graph.metric,
            dim: graph.dim,
            params: graph.params,
            graph: RwLock::new(Arc::new(graph)),
            writer: Mutex::new(()),
            dumped: Mutex::new(None),
        }
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The build and search parameters.
    pub fn params(&self) -> IndexParams {
        self.params
    }

    pub(crate) fn graph(&self) -> Arc<Graph> {
        self.graph.read().clone()
    }

    pub(crate) fn writer_lock(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.writer.lock()
    }

    /// The vectors file of the last dump (see [`DumpedVectors`]).
    pub(crate) fn dumped(&self) -> parking_lot::MutexGuard<'_, Option<DumpedVectors>> {
        self.dumped.lock()
    }

    /// Checks a vector and returns it prepared for the metric (normalised for cosine).
    fn prepare(&self, id: u32, v: &[f32], out: &mut Vec<f32>) -> Result<()> {
        if v.len() != self.dim {
            return Err(Error::DimensionMismatch {
                expected: self.dim,
                got: v.len(),
            });
        }
        // One pass for the norm, which both the checks and the normalisation use.
        let sq = distance::squared_norm(v);
        match distance::norm_defect(self.metric, sq) {
            Some(VectorDefect::NonFinite) => return Err(Error::NonFiniteVector { id }),
            Some(VectorDefect::Zero) => return Err(Error::ZeroVector { id }),
            Some(VectorDefect::Overflow) => return Err(Error::VectorOverflow { id }),
            None => {}
        }
        let start = out.len();
        out.extend_from_slice(v);
        if self.metric.normalizes() {
            // Not zero: `norm_defect` refuses a zero vector under a normalising metric.
            distance::scale_to_unit(&mut out[start..], sq);
        }
        Ok(())
    }

    fn prepare_query(&self, q: &[f32]) -> Result<Vec<f32>> {
        let mut v = Vec::with_capacity(self.dim);
        self.prepare(u32::MAX, q, &mut v)?;
        Ok(v)
    }

    /// Inserts one point. See [`insert_batch`](Index::insert_batch).
    pub fn insert(&self, id: u32, vector: &[f32]) -> Result<()> {
        self.insert_batch(&[(id, vector)])
    }

    /// Inserts a batch of points, linking them into the graph in parallel (rayon).
    ///
    /// The whole batch is validated first; on any error nothing is inserted. Errors (caller
    /// faults): wrong dimension, NaN/infinite values, a zero vector under cosine, a norm that
    /// overflows ([`Error::VectorOverflow`]), an id that is already present (live or deleted:
    /// ids are never reused) or repeated in the batch; [`Error::ResourceExhausted`] when the
    /// index cannot grow by the batch.
    pub fn insert_batch(&self, points: &[(u32, &[f32])]) -> Result<()> {
        self.add_batch(points, false).map(|_| ())
    }

    /// Like [`insert_batch`](Index::insert_batch), with the points hidden: linked into the
    /// graph (searches walk through them) but never returned, by any search or by
    /// [`contains`](Index::contains), until [`publish`](Index::publish) reveals them. A caller
    /// links a batch while it is being committed elsewhere, and publishes it once committed.
    ///
    /// Until then they count as tombstones in [`stats`](Index::stats), and deleting one has no
    /// effect (it is not live yet). A staged batch that is never published stays hidden; a
    /// [`rebuild`](Index::rebuild) drops it.
    pub fn stage_batch(&self, points: &[(u32, &[f32])]) -> Result<StagedBatch> {
        self.add_batch(points, true)
    }

    /// Reveals a staged batch to searches. Returns false, revealing nothing, when the graph
    /// was replaced since (a [`rebuild`](Index::rebuild) dropped the hidden points).
    pub fn publish(&self, staged: StagedBatch) -> bool {
        let graph = self.graph();
        if !Arc::ptr_eq(&graph, &staged.graph) {
            return false;
        }
        let nodes = graph.nodes.read();
        for slot in staged.slots.clone() {
            nodes.deleted[slot].store(false, Relaxed);
        }
        // After the flags: a search that still sees the count checks flags that are clear.
        graph.deleted_count.fetch_sub(staged.slots.len(), Relaxed);
        true
    }

    fn add_batch(&self, points: &[(u32, &[f32])], hidden: bool) -> Result<StagedBatch> {
        let _w = self.writer.lock();
        let graph = self.graph();
        let exhausted = || {
            Error::ResourceExhausted(format!(
                "cannot reserve memory for a batch of {} points",
                points.len()
            ))
        };
        let floats = points.len().checked_mul(self.dim).ok_or_else(exhausted)?;
        let mut flat = Vec::new();
        flat.try_reserve_exact(floats).map_err(|_| exhausted())?;
        let mut ids = Vec::new();
        ids.try_reserve_exact(points.len())
            .map_err(|_| exhausted())?;
        {
            let nodes = graph.nodes.read();
            let mut seen = HashSet::with_capacity(points.len());
            for &(id, v) in points {
                if nodes.slot_of.contains_key(&id) || !seen.insert(id) {
                    return Err(Error::DuplicateId(id));
                }
                self.prepare(id, v, &mut flat)?;
                ids.push(id);
            }
        }
        let slots = graph.add(&ids, &flat, hidden)?;
        Ok(StagedBatch { graph, slots })
    }

    /// Tombstones a point: no search returns it from now on. Returns false when the id is
    /// unknown or already deleted.
    pub fn delete(&self, id: u32) -> bool {
        // Hold the read side of the swap lock so a concurrent rebuild cannot lose the delete.
        let guard = self.graph.read();
        let nodes = guard.nodes.read();
        match nodes.slot_of.get(&id) {
            Some(&slot) if !nodes.deleted[slot as usize].swap(true, Relaxed) => {
                guard.deleted_count.fetch_add(1, Relaxed);
                true
            }
            _ => false,
        }
    }

    /// True when the id is in the index and not deleted.
    pub fn contains(&self, id: u32) -> bool {
        let graph = self.graph();
        let nodes = graph.nodes.read();
        nodes
            .slot_of
            .get(&id)
            .is_some_and(|&s| !nodes.is_deleted(s))
    }

    /// True when the id was ever inserted (live or tombstoned, until a rebuild drops it).
    pub fn knows(&self, id: u32) -> bool {
        self.graph().nodes.read().slot_of.contains_key(&id)
    }

    /// Point counts.
    pub fn stats(&self) -> IndexStats {
        let graph = self.graph();
        let total = graph.nodes.read().len();
        let deleted = graph.deleted_count.load(Relaxed).min(total);
        IndexStats {
            total,
            live: total - deleted,
            deleted,
        }
    }

    /// Bytes the index holds for its points' vectors: `4 * dim` per point for `f32` vectors;
    /// `dim + 4` per point (codes and a correction term) once [quantized](Index::quantized).
    /// Room reserved for growth is not counted.
    pub fn vector_bytes(&self) -> usize {
        let graph = self.graph();
        let nodes = graph.nodes.read();
        nodes.vectors.len() * size_of::<f32>()
            + nodes.codes.len()
            + nodes.corr.len() * size_of::<f32>()
    }

    /// Bytes of memory the index holds in all: vectors or codes, links, ids and bookkeeping,
    /// room reserved for growth included (an estimate from the arrays' capacities; the
    /// allocator's own overhead is not counted).
    pub fn memory_bytes(&self) -> usize {
        self.graph().nodes.read().heap_bytes()
    }

    /// Points that searches can return.
    pub fn len(&self) -> usize {
        self.stats().live
    }

    /// True when no live point is left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fraction of points that are tombstones (0 when empty): rebuild past a threshold.
    pub fn tombstone_ratio(&self) -> f64 {
        let s = self.stats();
        if s.total == 0 {
            0.0
        } else {
            s.deleted as f64 / s.total as f64
        }
    }

    fn check_k(k: usize) -> Result<()> {
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        Ok(())
    }

    fn hits(&self, graph: &Graph, cands: &[Cand]) -> Vec<Hit> {
        let nodes = graph.nodes.read();
        cands
            .iter()
            .map(|c| Hit {
                id: nodes.ids[c.slot as usize],
                score: self.metric.score(c.d),
            })
            .collect()
    }

    /// The `k` nearest live points to `query`, best first. `ef` (candidate list size) defaults
    /// to [`IndexParams::ef_search`] and is raised to `k` when smaller.
    pub fn search(&self, query: &[f32], k: usize, ef: Option<usize>) -> Result<Vec<Hit>> {
        self.search_inner(query, k, ef, None)
    }

    /// Like [`search`](Index::search), returning only points whose id passes `filter`. The
    /// filter is applied during the graph walk (rejected points are traversed, never
    /// returned), so `k` results come back whenever `k` live points match. For selective
    /// filters prefer [`search_allowed`](Index::search_allowed) or
    /// [`exact_search`](Index::exact_search).
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<Hit>> {
        self.search_inner(query, k, ef, Some(filter))
    }

    fn search_inner(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
    ) -> Result<Vec<Hit>> {
        Self::check_k(k)?;
        thread_local! {
            /// The prepared query of this thread's last search: a 384-d query is 1.5 KiB, past
            /// the allocator's per-thread cache, so a fresh buffer per query is a slow
            /// allocation on the hot path.
            static QUERY: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let search = |q: &mut Vec<f32>| -> Result<Vec<Hit>> {
            q.clear();
            self.prepare(u32::MAX, query, q)?;
            let graph = self.graph();
            // Sized by what the graph can return, not by the caller's k.
            let mut out = Vec::with_capacity(k.min(graph.nodes.read().len()));
            graph.search(q, k, ef.unwrap_or(self.params.ef_search), filter, &mut out);
            Ok(self.hits(&graph, &out))
        };
        // A filter that searches again on this thread finds the buffer taken, and gets its own.
        QUERY.with(|buf| match buf.try_borrow_mut() {
            Ok(mut q) => search(&mut q),
            Err(_) => search(&mut Vec::with_capacity(self.dim)),
        })
    }

    /// Searches among an explicit allow-list of ids (as a payload index yields them), picking
    /// the strategy like a query planner: an exact scan of the listed points when they are
    /// few (fewer than [`EXACT_SEARCH_MIN`] or [`EXACT_SEARCH_FRACTION`] of the live points),
    /// else the graph walk with membership in the list as the filter.
    pub fn search_allowed(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        allowed: &[u32],
    ) -> Result<Vec<Hit>> {
        if Self::prefers_exact(allowed.len(), self.len()) {
            return self.exact_search(query, k, allowed);
        }
        let mut sorted = allowed.to_vec();
        sorted.sort_unstable();
        self.search_filtered(query, k, ef, &|id| sorted.binary_search(&id).is_ok())
    }

    /// The planner rule of [`search_allowed`](Index::search_allowed): true when `matching`
    /// points out of `live` are better scanned exactly than searched through the graph.
    pub fn prefers_exact(matching: usize, live: usize) -> bool {
        matching < EXACT_SEARCH_MIN || (matching as f64) < EXACT_SEARCH_FRACTION * live as f64
    }

    /// Brute-force `k` nearest among the given ids (unknown and deleted ids are skipped,
    /// duplicates ignored). Exact, parallel for large sets.
    pub fn exact_search(&self, query: &[f32], k: usize, candidates: &[u32]) -> Result<Vec<Hit>> {
        Self::check_k(k)?;
        let q = self.prepare_query(query)?;
        let graph = self.graph();
        let nodes = graph.nodes.read();
        let mut qcodes = Vec::new();
        let qv = nodes.query_view(&q, &mut qcodes, self.metric);
        let score = |id: &u32| -> Option<Cand> {
            let slot = *nodes.slot_of.get(id)?;
            (!nodes.is_deleted(slot)).then(|| Cand {
                d: graph.dist(&nodes, qv, slot),
                slot,
            })
        };
        let mut unique = candidates.to_vec();
        unique.sort_unstable();
        unique.dedup();
        let candidates = &unique[..];
        let best = if candidates.len() > 16_384 {
            candidates
                .par_chunks(4096)
                .map(|chunk| top_k(chunk.iter().filter_map(score), k))
                .reduce(Vec::new, |mut a, b| {
                    a.extend(b);
                    top_k(a.into_iter(), k)
                })
        } else {
            top_k(candidates.iter().filter_map(score), k)
        };
        drop(nodes);
        Ok(self.hits(&graph, &best))
    }

    /// Brute-force `k` nearest among all live points passing `filter` (parallel).
    pub fn exact_search_filtered(
        &self,
        query: &[f32],
        k: usize,
        filter: &(dyn Fn(u32) -> bool + Sync),
    ) -> Result<Vec<Hit>> {
        Self::check_k(k)?;
        let q = self.prepare_query(query)?;
        let graph = self.graph();
        let nodes = graph.nodes.read();
        let mut qcodes = Vec::new();
        let qv = nodes.query_view(&q, &mut qcodes, self.metric);
        let n = nodes.len();
        let best = (0..n as u32)
            .into_par_iter()
            .with_min_len(4096)
            .fold(Vec::new, |mut acc: Vec<Cand>, slot| {
                if !nodes.is_deleted(slot) && filter(nodes.ids[slot as usize]) {
                    acc.push(Cand {
                        d: graph.dist(&nodes, qv, slot),
                        slot,
                    });
                    if acc.len() >= k.saturating_mul(4).saturating_add(64) {
                        acc = top_k(acc.into_iter(), k);
                    }
                }
                acc
            })
            .map(|acc| top_k(acc.into_iter(), k))
            .reduce(Vec::new, |mut a, b| {
                a.extend(b);
                top_k(a.into_iter(), k)
            });
        drop(nodes);
        Ok(self.hits(&graph, &best))
    }

    /// How many candidates a search for `k` results should ask the graph for: `k` for exact
    /// `f32` vectors, `k * oversampling` once the vectors are quantized (see
    /// [`rescore`](Index::rescore)).
    pub fn candidates_for(&self, k: usize) -> usize {
        if self.quantized() {
            k.saturating_mul(self.params.oversampling)
        } else {
            k
        }
    }

    /// True when the graph holds quantized codes instead of `f32` vectors, so that search
    /// scores are approximate and should be [rescored](Index::rescore). An index with
    /// [`Quantization::Int8`](crate::Quantization::Int8) keeps `f32` vectors until it has
    /// enough points to calibrate its codes.
    pub fn quantized(&self) -> bool {
        self.graph().nodes.read().quant.is_some()
    }

    /// Exact scores for the candidates of a quantized search: `fetch(id, buf)` appends the
    /// point's original vector to `buf` (as given at insert) and returns false when the point
    /// is gone (it is then dropped). Returns the best `k`, best first (ties by id).
    ///
    /// A fetched vector of the wrong dimension or with non-finite values is an
    /// [`Error::Internal`]: the caller's store and this index disagree.
    pub fn rescore<E: From<Error>>(
        &self,
        query: &[f32],
        hits: &[Hit],
        k: usize,
        mut fetch: impl FnMut(u32, &mut Vec<f32>) -> std::result::Result<bool, E>,
    ) -> std::result::Result<Vec<Hit>, E> {
        Self::check_k(k)?;
        let q = self.prepare_query(query)?;
        let mut buf = Vec::with_capacity(self.dim);
        let mut prepared = Vec::new();
        let mut scored = Vec::with_capacity(hits.len());
        for h in hits {
            buf.clear();
            if !fetch(h.id, &mut buf)? {
                continue;
            }
            if buf.len() != self.dim {
                return Err(Error::Internal(format!(
                    "the stored vector of point {} has dimension {}, the index {}",
                    h.id,
                    buf.len(),
                    self.dim
                ))
                .into());
            }
            // The fast path: one or two SIMD passes over the stored vector, no copy. Vectors
            // were checked on insert; whatever the fast path cannot score exactly (a norm
            // whose f32 square underflows or overflows) takes the checked path below.
            let fast = match self.metric {
                Metric::Cosine => {
                    let n2 = distance::dot(&buf, &buf);
                    (n2 > f32::MIN_POSITIVE * self.dim as f32)
                        .then(|| 1.0 - distance::dot(&q, &buf) / n2.sqrt())
                }
                _ => Some(self.metric.distance(&q, &buf)),
            };
            let d = match fast {
                Some(d) if d.is_finite() => d,
                _ => {
                    prepared.clear();
                    self.prepare(h.id, &buf, &mut prepared).map_err(|e| {
                        Error::Internal(format!(
                            "the stored vector of point {} cannot be rescored: {e}",
                            h.id
                        ))
                    })?;
                    self.metric.distance(&q, &prepared)
                }
            };
            scored.push((d, h.id));
        }
        scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scored.truncate(k);
        Ok(scored
            .into_iter()
            .map(|(d, id)| Hit {
                id,
                score: self.metric.score(d),
            })
            .collect())
    }

    /// The stored (prepared: normalised under cosine) vector of a point, live or deleted.
    /// Once the index is [quantized](Index::quantized), the vector its codes stand for
    /// (within half a code step of the prepared vector inside the calibrated range).
    pub fn vector(&self, id: u32) -> Option<Vec<f32>> {
        let graph = self.graph();
        let nodes = graph.nodes.read();
        nodes.slot_of.get(&id).map(|&s| {
            let mut v = Vec::with_capacity(self.dim);
            nodes.copy_vector(s, &mut v);
            v
        })
    }

    /// Builds a fresh graph from the live points and swaps it in: tombstones and their space
    /// are dropped. Searches and deletes keep running on the old graph during the build;
    /// inserts wait. Deletes made during the build are carried over at the swap. When the
    /// memory for the fresh graph cannot be reserved, the old graph stays (with a warning).
    pub fn rebuild(&self) {
        let _w = self.writer.lock();
        let old = self.graph();
        let (ids, flat, quant) = {
            let nodes = old.nodes.read();
            let mut ids = Vec::with_capacity(nodes.len());
            let mut flat = Vec::with_capacity(nodes.len() * self.dim);
            for slot in 0..nodes.len() as u32 {
                if !nodes.is_deleted(slot) {
                    ids.push(nodes.ids[slot as usize]);
                    nodes.copy_vector(slot, &mut flat);
                }
            }
            (ids, flat, nodes.quant)
        };
        let cap = self.params.initial_capacity.max(ids.len());
        // A quantized index keeps its calibration: decoded values re-encode to the same codes.
        let fresh = match Graph::with_capacity(self.metric, self.dim, self.params, cap, quant)
            .and_then(|g| g.add(&ids, &flat, false).map(|_| g))
        {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "index rebuild skipped; the old graph stays");
                return;
            }
        };
        let mut guard = self.graph.write();
        {
            // Carry over deletes that happened while building.
            let old_nodes = old.nodes.read();
            let new_nodes = fresh.nodes.read();
            let mut carried = 0;
            for (slot, &id) in new_nodes.ids.iter().enumerate() {
                let old_slot = old_nodes.slot_of[&id];
                if old_nodes.is_deleted(old_slot) {
                    new_nodes.deleted[slot].store(true, Relaxed);
                    carried += 1;
                }
            }
            fresh.deleted_count.store(carried, Relaxed);
        }
        *guard = Arc::new(fresh);
        tracing::debug!(live = ids.len(), "index rebuilt");
    }
}

/// The `k` smallest candidates, ascending.
fn top_k(iter: impl Iterator<Item = Cand>, k: usize) -> Vec<Cand> {
    let mut heap: BinaryHeap<Cand> = BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16));
    for c in iter {
        if heap.len() < k {
            heap.push(c);
        } else if heap.peek().is_some_and(|top| c < *top) {
            heap.pop();
            heap.push(c);
        }
    }
    heap.into_sorted_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use latentdb_types::ErrorKind;

    fn index(metric: Metric) -> Index {
        Index::new(metric, 3, IndexParams::default()).unwrap()
    }

    #[test]
    fn rejects_bad_input() {
        let idx = index(Metric::Cosine);
        assert!(matches!(
            idx.insert(1, &[1.0, 2.0]),
            Err(Error::DimensionMismatch { .. })
        ));
        assert!(matches!(
            idx.insert(1, &[f32::NAN, 0.0, 0.0]),
            Err(Error::NonFiniteVector { .. })
        ));
        assert!(matches!(
            idx.insert(1, &[0.0; 3]),
            Err(Error::ZeroVector { .. })
        ));
        idx.insert(1, &[1.0, 0.0, 0.0]).unwrap();
        assert!(matches!(
            idx.insert(1, &[1.0, 0.0, 0.0]),
            Err(Error::DuplicateId(1))
        ));
        let a = [1.0, 2.0, 3.0];
        assert!(matches!(
            idx.insert_batch(&[(5, &a), (5, &a)]),
            Err(Error::DuplicateId(5))
        ));
        assert!(!idx.knows(5), "a failed batch inserts nothing");
        assert!(matches!(
            idx.search(&a, 0, None),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Index::new(Metric::L2, 0, IndexParams::default()).is_err());
        let bad = IndexParams {
            m: 1,
            ..IndexParams::default()
        };
        assert!(Index::new(Metric::L2, 4, bad).is_err());
    }

    /// The prepared query lives in a per-thread buffer: a filter that searches the index
    /// again on the same thread gets a buffer of its own, and both searches answer as alone.
    #[test]
    fn a_filter_may_search_again_on_the_same_thread() {
        let idx = index(Metric::L2);
        let points: Vec<[f32; 3]> = (0..50).map(|i| [i as f32, 0.0, 1.0]).collect();
        let batch: Vec<(u32, &[f32])> = points
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u32, &p[..]))
            .collect();
        idx.insert_batch(&batch).unwrap();
        let nearest = |q: &[f32]| idx.search(q, 1, None).unwrap()[0].id;
        let inner = std::sync::atomic::AtomicUsize::new(0);
        let even = |id: u32| {
            inner.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(nearest(&[30.2, 0.0, 1.0]), 30);
            id.is_multiple_of(2)
        };
        let hits = idx
            .search_filtered(&[10.9, 0.0, 1.0], 3, None, &even)
            .unwrap();
        let ids: Vec<u32> = hits.iter().map(|h| h.id).collect();
        assert_eq!(ids, [10, 12, 8]);
        assert!(inner.into_inner() > 0);
        assert_eq!(nearest(&[7.1, 0.0, 1.0]), 7, "the buffer is free again");
    }

    #[test]
    fn huge_vectors_are_rejected_with_their_own_error_and_tiny_ones_work() {
        for metric in Metric::ALL {
            let idx = index(metric);
            idx.insert(1, &[1.0, 2.0, 3.0]).unwrap();
            for huge in [[1e20, 0.0, 0.0], [3e38, 3e38, 3e38], [1e19, 1e19, 1e19]] {
                let err = idx.insert(2, &huge).unwrap_err();
                assert!(
                    matches!(err, Error::VectorOverflow { id: 2 }),
                    "{metric}: {err}"
                );
                assert!(err.to_string().contains("overflows"), "{err}");
                let err = idx.search(&huge, 1, None).unwrap_err();
                assert!(
                    matches!(err, Error::VectorOverflow { .. }),
                    "{metric}: {err}"
                );
                assert!(err.to_string().contains("query"), "{err}");
            }
            // Tiny but non-zero is a direction (its f32 square underflows; f64 does not).
            idx.insert(3, &[1e-30, 0.0, 0.0]).unwrap();
            let hits = idx.search(&[1e-30, 0.0, 0.0], 2, None).unwrap();
            assert!(
                hits.iter().all(|h| h.score.is_finite()),
                "{metric}: {hits:?}"
            );
            if metric == Metric::Cosine {
                assert_eq!(hits[0].id, 3);
                assert!((hits[0].score - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn impossible_capacities_are_errors_not_aborts() {
        for cap in [1_000_000_000_000usize, 1 << 61, usize::MAX] {
            let params = IndexParams {
                initial_capacity: cap,
                ..IndexParams::default()
            };
            let err = Index::new(Metric::Cosine, 384, params).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument(_)), "{cap}: {err}");
            assert!(err.to_string().contains("initial_capacity"), "{err}");
        }
        // Past the parameter checks, the reservation itself is fallible.
        let params = IndexParams::default();
        for cap in [usize::MAX / 2, 1 << 31] {
            let err = Graph::with_capacity(Metric::L2, 65_536, params, cap, None).unwrap_err();
            assert!(matches!(err, Error::ResourceExhausted(_)), "{cap}: {err}");
            assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        }
    }

    #[test]
    fn any_k_is_answered_without_panicking() {
        let idx = index(Metric::Dot);
        for i in 0..50u32 {
            idx.insert(i, &[i as f32 + 1.0, 1.0, 0.0]).unwrap();
        }
        let q = [1.0, 0.0, 0.0];
        for k in [51, 1 << 40, usize::MAX] {
            assert_eq!(idx.search(&q, k, None).unwrap().len(), 50);
            assert_eq!(idx.search(&q, k, Some(usize::MAX)).unwrap().len(), 50);
            assert_eq!(idx.exact_search(&q, k, &[1, 2, 3]).unwrap().len(), 3);
            assert_eq!(
                idx.exact_search_filtered(&q, k, &|_| true).unwrap().len(),
                50
            );
        }
    }

    #[test]
    fn empty_index_searches_to_nothing() {
        let idx = index(Metric::L2);
        assert!(idx.search(&[0.0; 3], 5, None).unwrap().is_empty());
        assert!(idx.exact_search(&[0.0; 3], 5, &[1, 2]).unwrap().is_empty());
        assert_eq!(idx.tombstone_ratio(), 0.0);
    }

    #[test]
    fn small_exact_results_and_scores() {
        let idx = index(Metric::L2);
        for i in 0..10u32 {
            idx.insert(i, &[i as f32, 0.0, 0.0]).unwrap();
        }
        let hits = idx.search(&[2.2, 0.0, 0.0], 3, None).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![2, 3, 1]);
        assert!(
            (hits[0].score + 0.2).abs() < 1e-5,
            "l2 score is the negated distance"
        );
        assert!(idx.delete(2));
        assert!(!idx.delete(2));
        assert!(!idx.delete(99));
        let hits = idx.search(&[2.2, 0.0, 0.0], 3, None).unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![3, 1, 4]);
        let hits = idx
            .exact_search(&[2.2, 0.0, 0.0], 3, &[2, 7, 8, 8, 42])
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![7, 8]);
        let hits = idx
            .search_filtered(&[2.2, 0.0, 0.0], 2, None, &|id| id % 2 == 1)
            .unwrap();
        assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![3, 1]);
        assert_eq!(
            idx.stats(),
            IndexStats {
                total: 10,
                live: 9,
                deleted: 1
            }
        );
        idx.rebuild();
        assert_eq!(
            idx.stats(),
            IndexStats {
                total: 9,
                live: 9,
                deleted: 0
            }
        );
        assert!(!idx.knows(2));
        idx.insert(2, &[2.0, 0.0, 0.0]).unwrap();
        assert_eq!(idx.search(&[2.2, 0.0, 0.0], 1, None).unwrap()[0].id, 2);
    }

    #[test]
    fn dot_scores_can_be_negative() {
        let idx = index(Metric::Dot);
        idx.insert(1, &[1.0, 0.0, 0.0]).unwrap();
        idx.insert(2, &[-3.0, 0.0, 0.0]).unwrap();
        let hits = idx.search(&[-1.0, 0.0, 0.0], 2, None).unwrap();
        assert_eq!(hits[0], Hit { id: 2, score: 3.0 });
        assert_eq!(hits[1], Hit { id: 1, score: -1.0 });
    }

    #[test]
    fn index_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Index>();
    }

    #[test]
    fn staged_points_are_walked_but_returned_only_once_published() {
        let dim = 8;
        let idx = Index::new(Metric::L2, dim, IndexParams::default()).unwrap();
        let v = |i: u32| -> Vec<f32> {
            (0..dim as u64)
                .map(|j| (crate::synth::mix64(u64::from(i) * 64 + j) % 1000) as f32)
                .collect()
        };
        let first: Vec<Vec<f32>> = (0..200).map(v).collect();
        let refs: Vec<(u32, &[f32])> = first
            .iter()
            .enumerate()
            .map(|(i, x)| (i as u32, x.as_slice()))
            .collect();
        idx.insert_batch(&refs).unwrap();
        let second: Vec<Vec<f32>> = (200..400).map(v).collect();
        let refs: Vec<(u32, &[f32])> = second
            .iter()
            .enumerate()
            .map(|(i, x)| (200 + i as u32, x.as_slice()))
            .collect();
        let staged = idx.stage_batch(&refs).unwrap();
        assert_eq!(staged.len(), 200);
        let everything: Vec<u32> = (0..400).collect();
        for q in [3u32, 250, 399] {
            let hits = idx.search(&v(q), 50, Some(200)).unwrap();
            assert!(
                hits.iter().all(|h| h.id < 200),
                "a staged point was returned"
            );
            let exact = idx.exact_search(&v(q), 50, &everything).unwrap();
            assert!(exact.iter().all(|h| h.id < 200));
        }
        assert!(!idx.contains(250) && idx.knows(250));
        assert!(!idx.delete(250), "a staged point is not live");
        assert_eq!(idx.stats().live, 200);
        assert!(idx.publish(staged));
        assert_eq!(
            idx.stats(),
            IndexStats {
                total: 400,
                live: 400,
                deleted: 0
            }
        );
        assert!(idx.contains(250));
        let hits = idx.search(&v(250), 1, Some(64)).unwrap();
        assert_eq!(hits[0].id, 250);

        // A rebuild between staging and publishing drops the hidden points.
        let third = [v(400)];
        let staged = idx.stage_batch(&[(400, third[0].as_slice())]).unwrap();
        idx.rebuild();
        assert!(!idx.publish(staged));
        assert!(!idx.knows(400));
        assert_eq!(idx.stats().live, 400);
    }
}
