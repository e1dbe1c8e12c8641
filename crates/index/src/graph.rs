//! The HNSW graph: flat `u32` neighbour arrays, per-node write locks, pooled visited sets.
//!
//! Layout: point `slot`s are dense `u32`s in insertion order. Vectors are one contiguous
//! `Vec<f32>`; layer-0 links are one flat `Vec<AtomicU32>` with a stride of `2M + 1`
//! (`[count, n0, n1, ...]`); the few nodes above layer 0 own a boxed slice of `M + 1`-strided
//! upper links. Readers load links with relaxed atomics and take no lock; writers (linking a
//! new node) hold that node's mutex and never two at once, so linking cannot deadlock. A
//! reader racing a writer may see a partly rewritten list, where every entry is still a valid
//! slot: that only changes which neighbours it visits, as in hnswlib.
//!
//! Growth appends a batch under the write side of `nodes` (a memcpy), then links the batch in
//! parallel under the read side, so searches run during the linking.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, TryReserveError};
use std::ops::Range;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};

use parking_lot::{Mutex, RwLock};
use rayon::prelude::*;

use crate::distance;
use crate::error::{Error, Result};
use crate::huge_pages;
use crate::metric::{self, MetricExt};
use crate::params::{IndexParams, Quantization};
use crate::pool::Pool;
use crate::prefetch::prefetch_ptr;
use crate::quant::{CALIBRATION_POINTS, Quantizer};
use crate::synth::mix64;
use crate::visited::Visited;
use latentdb_types::Metric;
use pulp::{Simd, WithSimd};

/// Highest layer a node may get (layers 0..=MAX_LEVEL).
pub(crate) const MAX_LEVEL: u8 = 15;

/// Most points one graph holds: slots are `u32`, and `u32::MAX` is never a slot.
pub(crate) const MAX_POINTS: usize = u32::MAX as usize;

/// A slot with its distance to the current query; ordered by distance, then slot.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Cand {
    pub(crate) d: f32,
    pub(crate) slot: u32,
}

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.d.total_cmp(&other.d).then(self.slot.cmp(&other.slot))
    }
}

/// Up to this dimension a node's whole vector is prefetched (a few lines); above it, only
/// its first line.
const PREFETCH_ALL_LINES_DIM: usize = 96;

/// The entry point of the graph: the node on the highest layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) slot: u32,
    pub(crate) level: u8,
}

/// How [`Nodes::with_capacity`] reserves the large arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pages {
    /// Advised onto huge pages before they are written: for arrays that grow with inserts.
    Huge,
    /// Plain pages: for arrays filled at once while a dump loads, where a page fault that
    /// waits for the kernel to assemble a huge page would slow the open (advised afterwards
    /// with [`Nodes::advise_huge_pages`] instead).
    Plain,
}

impl Pages {
    /// `v.try_reserve(additional)`, onto huge pages for [`Pages::Huge`].
    fn try_reserve<T>(self, v: &mut Vec<T>, additional: usize) -> Result<(), TryReserveError> {
        match self {
            Pages::Huge => huge_pages::try_reserve(v, additional),
            Pages::Plain => v.try_reserve(additional),
        }
    }
}

/// All per-node arrays. Grows only under the write lock of [`Graph::nodes`].
#[derive(Debug, Default)]
pub(crate) struct Nodes {
    pub(crate) dim: usize,
    pub(crate) m: usize,
    pub(crate) m0: usize,
    /// Prepared `f32` vectors, `dim` per point; empty once the points are quantized.
    pub(crate) vectors: Vec<f32>,
    /// With int8 quantization, once calibrated: `dim` codes per point (see `quant.rs`).
    pub(crate) codes: Vec<u8>,
    /// With int8 quantization, once calibrated: each point's correction term.
    pub(crate) corr: Vec<f32>,
    /// The calibrated range; `Some` exactly when the points are held as codes.
    pub(crate) quant: Option<Quantizer>,
    pub(crate) ids: Vec<u32>,
    pub(crate) levels: Vec<u8>,
    pub(crate) links0: Vec<AtomicU32>,
    /// The link arrays of the upper layers, node after node in slot order (layer 1 first),
    /// `level * (m + 1)` words per node: one array, not a box per node, so that a descent
    /// through the upper layers does not chase a pointer per step into allocations spread
    /// over the heap.
    pub(crate) upper: Vec<AtomicU32>,
    /// Where each node's upper links end in `upper` (they start where the previous node's
    /// end, or at 0).
    pub(crate) upper_end: Vec<usize>,
    pub(crate) locks: Vec<Mutex<()>>,
    pub(crate) deleted: Vec<AtomicBool>,
    /// True once a node's link lists are complete (its [`Graph::link`] returned): only such
    /// nodes serve as starting points while linking others.
    pub(crate) linked: Vec<AtomicBool>,
    pub(crate) slot_of: HashMap<u32, u32>,
}

impl Nodes {
    /// Bytes these arrays hold on the heap, capacity reserved for growth included (what the
    /// process pays for them): vectors or codes, ids, levels, links, locks, flags and the
    /// id map (modelled as a hashbrown table: one control byte and one `(u32, u32)` per
    /// bucket, buckets the next power of two above 8/7 of the capacity).
    pub(crate) fn heap_bytes(&self) -> usize {
        fn vec<T>(v: &Vec<T>) -> usize {
            v.capacity() * size_of::<T>()
        }
        let buckets = if self.slot_of.capacity() == 0 {
            0
        } else {
            (self.slot_of.capacity() * 8 / 7 + 1).next_power_of_two()
        };
        vec(&self.vectors)
            + vec(&self.codes)
            + vec(&self.corr)
            + vec(&self.ids)
            + vec(&self.levels)
            + vec(&self.links0)
            + vec(&self.upper)
            + vec(&self.upper_end)
            + vec(&self.locks)
            + vec(&self.deleted)
            + vec(&self.linked)
            + buckets * (1 + size_of::<(u32, u32)>())
    }

    /// Empty arrays with room for `cap` points (held as codes under `quant` when given),
    /// reserved fallibly: an impossible size is an [`Error::ResourceExhausted`], never an
    /// abort. `pages`: whether the large arrays are advised onto huge pages before they are
    /// written (see `huge_pages.rs`).
    pub(crate) fn with_capacity(
        dim: usize,
        params: &IndexParams,
        cap: usize,
        quant: Option<Quantizer>,
        pages: Pages,
    ) -> Result<Self> {
        let mut nodes = Self {
            dim,
            m: params.m,
            m0: params.m0(),
            quant,
            ..Self::default()
        };
        nodes.reserve(cap, pages)?;
        Ok(nodes)
    }

    /// Advises the vectors or codes and the layer-0 links onto huge pages once they are
    /// filled (after a load from a dump): the kernel collapses them in the background.
    pub(crate) fn advise_huge_pages(&self) {
        huge_pages::advise(&self.vectors);
        huge_pages::advise(&self.codes);
        huge_pages::advise(&self.links0);
    }

    /// Reserves room for `additional` more points in every array, fallibly, so that the
    /// pushes that follow do not allocate; the large arrays grow onto huge pages.
    pub(crate) fn try_reserve(&mut self, additional: usize) -> Result<()> {
        self.reserve(additional, Pages::Huge)
    }

    fn reserve(&mut self, additional: usize, pages: Pages) -> Result<()> {
        let fail = |what: &str| {
            Error::ResourceExhausted(format!(
                "cannot reserve memory for {additional} more index points ({what})"
            ))
        };
        let floats = additional
            .checked_mul(self.dim)
            .ok_or_else(|| fail("size overflows"))?;
        let links = additional
            .checked_mul(self.m0 + 1)
            .ok_or_else(|| fail("size overflows"))?;
        let total = self
            .len()
            .checked_add(additional)
            .ok_or_else(|| fail("size overflows"))?;
        if total > MAX_POINTS {
            return Err(fail(&format!("an index holds at most {MAX_POINTS} points")));
        }
        let e = |_| fail("out of memory");
        if self.quant.is_some() {
            pages.try_reserve(&mut self.codes, floats).map_err(e)?;
            self.corr.try_reserve(additional).map_err(e)?;
        } else {
            pages.try_reserve(&mut self.vectors, floats).map_err(e)?;
        }
        pages.try_reserve(&mut self.links0, links).map_err(e)?;
        self.ids.try_reserve(additional).map_err(e)?;
        self.levels.try_reserve(additional).map_err(e)?;
        self.upper_end.try_reserve(additional).map_err(e)?;
        self.locks.try_reserve(additional).map_err(e)?;
        self.deleted.try_reserve(additional).map_err(e)?;
        self.linked.try_reserve(additional).map_err(e)?;
        self.slot_of.try_reserve(additional).map_err(e)?;
        Ok(())
    }

    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// The `f32` vector of `slot`; only while the points are not quantized.
    #[inline]
    pub(crate) fn vector(&self, slot: u32) -> &[f32] {
        let start = slot as usize * self.dim;
        &self.vectors[start..start + self.dim]
    }

    /// The codes of `slot`; only once the points are quantized.
    #[inline]
    pub(crate) fn code(&self, slot: u32) -> &[u8] {
        let start = slot as usize * self.dim;
        &self.codes[start..start + self.dim]
    }

    /// `slot` as a query or a distance operand, in whichever form the points are held.
    #[inline]
    pub(crate) fn view(&self, slot: u32) -> View<'_> {
        match &self.quant {
            Some(quant) => View::Code {
                codes: self.code(slot),
                corr: self.corr[slot as usize],
                quant,
            },
            None => View::F32(self.vector(slot)),
        }
    }

    /// Starts loading the layer-0 neighbour list of `slot` (a hint: see [`crate::prefetch`]).
    #[inline(always)]
    fn prefetch_links(&self, slot: u32) {
        let start = slot as usize * (self.m0 + 1);
        if let Some(links) = self.links0.get(start..start + self.m0 + 1) {
            for line in links.chunks(16) {
                prefetch_ptr(line.as_ptr());
            }
        }
    }

    /// Starts loading `slot`'s vector (all of a short one, the first line of a long one) or
    /// codes (all of them).
    #[inline(always)]
    fn prefetch(&self, slot: u32) {
        let start = slot as usize * self.dim;
        if self.quant.is_some() {
            // Every line of the codes (6 for 384 dimensions): the first miss alone leaves the
            // others to stall the distance one after another.
            for line in self.codes[start..start + self.dim].chunks(64) {
                prefetch_ptr(line.as_ptr());
            }
        } else {
            // All lines of a short vector (50-d: four; A/B on 50k real 50-d vectors, one
            // thread: +23-45% QPS at ef 16-32), the first line of a long one (prefetching six
            // or all 24 lines of every fresh 384-d neighbour at once measured slower; the
            // layer walk asks for the rest of one vector while the distance before it runs:
            // `prefetch_rest`).
            if self.dim <= PREFETCH_ALL_LINES_DIM {
                for line in self.vectors[start..start + self.dim].chunks(16) {
                    prefetch_ptr(line.as_ptr());
                }
            } else {
                prefetch_ptr(self.vectors[start..].as_ptr());
            }
        }
    }

    /// Starts loading the lines of `slot`'s long `f32` vector after its first (which
    /// [`prefetch`](Nodes::prefetch) asked for), while the distance before it is computed.
    #[inline(always)]
    fn prefetch_rest(&self, slot: u32) {
        let start = slot as usize * self.dim;
        if let Some(v) = self.vectors.get(start..start + self.dim) {
            for line in v.chunks(16).skip(1) {
                prefetch_ptr(line.as_ptr());
            }
        }
    }

    /// Appends `slot`'s vector (decoded when quantized: within half a code step of the
    /// prepared vector inside the calibrated range) to `out`.
    pub(crate) fn copy_vector(&self, slot: u32, out: &mut Vec<f32>) {
        match &self.quant {
            Some(q) => q.decode(self.code(slot), out),
            None => out.extend_from_slice(self.vector(slot)),
        }
    }

    /// A prepared query as a distance operand: encoded into `buf` when the points are
    /// quantized.
    pub(crate) fn query_view<'a>(
        &'a self,
        q: &'a [f32],
        buf: &'a mut Vec<u8>,
        metric: Metric,
    ) -> View<'a> {
        match &self.quant {
            Some(quant) => {
                buf.clear();
                quant.encode(q, buf);
                View::Code {
                    codes: buf,
                    corr: quant.correction(metric, buf),
                    quant,
                }
            }
            None => View::F32(q),
        }
    }

    /// Switches the points to codes under `quant`: encodes every `f32` vector and frees them.
    pub(crate) fn quantize(&mut self, quant: Quantizer, metric: Metric) -> Result<()> {
        let n = self.len();
        let fail =
            || Error::ResourceExhausted(format!("cannot reserve memory to quantize {n} points"));
        let mut codes = huge_pages::with_capacity(self.vectors.len()).map_err(|_| fail())?;
        let mut corr = Vec::new();
        corr.try_reserve(n).map_err(|_| fail())?;
        for v in self.vectors.chunks_exact(self.dim.max(1)) {
            let start = codes.len();
            quant.encode(v, &mut codes);
            corr.push(quant.correction(metric, &codes[start..]));
        }
        self.codes = codes;
        self.corr = corr;
        self.vectors = Vec::new();
        self.quant = Some(quant);
        Ok(())
    }

    /// Copies the neighbours of `slot` on `layer` into `out`.
    ///
    /// Defensive, because a search must never panic: a layer above the node's level reads as
    /// no neighbours, and a target past the last slot is skipped (a loaded dump is checked
    /// for both, and linking never writes either; the check costs one compare per link).
    #[inline]
    pub(crate) fn neighbors(&self, slot: u32, layer: u8, out: &mut Vec<u32>) {
        out.clear();
        out.extend(self.neighbor_slots(slot, layer));
    }

    /// The neighbours of `slot` on `layer` as [`neighbors`](Nodes::neighbors) lists them, read
    /// straight from the link array (for a caller that filters them in its own loop).
    #[inline(always)]
    fn neighbor_slots(&self, slot: u32, layer: u8) -> impl Iterator<Item = u32> + '_ {
        let links = self.links(slot, layer).map_or(&[][..], |links| {
            let count = (links[0].load(Relaxed) as usize).min(links.len() - 1);
            &links[1..=count]
        });
        let n = self.ids.len();
        links
            .iter()
            .map(|a| a.load(Relaxed))
            .filter(move |&s| (s as usize) < n)
    }

    /// The link array (count first) of `slot` on `layer`, `None` when the node has no such
    /// layer.
    #[inline]
    fn links(&self, slot: u32, layer: u8) -> Option<&[AtomicU32]> {
        if layer == 0 {
            let stride = self.m0 + 1;
            let start = slot as usize * stride;
            self.links0.get(start..start + stride)
        } else {
            let stride = self.m + 1;
            let slot = slot as usize;
            let first = match slot {
                0 => 0,
                _ => *self.upper_end.get(slot - 1)?,
            };
            let start = first + (layer as usize - 1) * stride;
            let end = start + stride;
            if end > *self.upper_end.get(slot)? {
                return None;
            }
            self.upper.get(start..end)
        }
    }

    /// Overwrites the neighbours of `slot` on `layer` (caller holds the node's lock).
    pub(crate) fn set_neighbors(
        &self,
        slot: u32,
        layer: u8,
        list: impl ExactSizeIterator<Item = u32>,
    ) {
        let Some(links) = self.links(slot, layer) else {
            return;
        };
        let count = list.len().min(links.len() - 1);
        for (dst, v) in links[1..].iter().zip(list) {
            dst.store(v, Relaxed);
        }
        links[0].store(count as u32, Relaxed);
    }

    /// Appends one unlinked node (encoded when the points are quantized); a `hidden` one starts
    /// tombstoned (see [`Graph::add`]).
    pub(crate) fn push(
        &mut self,
        id: u32,
        vector: &[f32],
        level: u8,
        metric: Metric,
        hidden: bool,
    ) {
        let slot = self.ids.len() as u32;
        match &self.quant {
            Some(q) => {
                let start = self.codes.len();
                q.encode(vector, &mut self.codes);
                let c = q.correction(metric, &self.codes[start..]);
                self.corr.push(c);
            }
            None => self.vectors.extend_from_slice(vector),
        }
        self.ids.push(id);
        self.levels.push(level);
        self.links0.extend((0..=self.m0).map(|_| AtomicU32::new(0)));
        self.upper
            .extend((0..level as usize * (self.m + 1)).map(|_| AtomicU32::new(0)));
        self.upper_end.push(self.upper.len());
        self.locks.push(Mutex::new(()));
        self.deleted.push(AtomicBool::new(hidden));
        self.linked.push(AtomicBool::new(false));
        self.slot_of.insert(id, slot);
    }

    #[inline]
    pub(crate) fn is_linked(&self, slot: u32) -> bool {
        self.linked[slot as usize].load(Acquire)
    }

    #[inline]
    pub(crate) fn is_deleted(&self, slot: u32) -> bool {
        self.deleted[slot as usize].load(Relaxed)
    }
}

/// A point or a query as a distance operand: `f32` values, or codes with their correction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum View<'a> {
    /// Prepared `f32` values.
    F32(&'a [f32]),
    /// Codes under `quant`, with their correction term.
    Code {
        codes: &'a [u8],
        corr: f32,
        quant: &'a Quantizer,
    },
}

/// Loads the neighbours of `slot` on `layer` into `nbuf`, keeping those not visited yet (now
/// marked), and starts loading their vectors, then computes nothing: the loads overlap instead
/// of stalling one distance at a time. On layer 0 it also starts loading the neighbour list of
/// `next`, the best candidate left, which is most often the next one expanded.
#[inline(always)]
fn fresh_neighbors(
    nodes: &Nodes,
    visited: &mut Visited,
    slot: u32,
    layer: u8,
    next: Option<u32>,
    nbuf: &mut Vec<u32>,
) {
    // One pass over the link array: no copy of the whole list to filter afterwards (a
    // `retain` closure compiled to a call per neighbour, a quarter of a search's time on 50-d
    // vectors).
    nbuf.clear();
    for s in nodes.neighbor_slots(slot, layer) {
        if visited.insert(s as usize) {
            nodes.prefetch(s);
            nbuf.push(s);
        }
    }
    if layer == 0
        && let Some(next) = next
    {
        nodes.prefetch_links(next);
    }
}

/// The next node a filtered layer search expands: the better of the pool's best unexpanded
/// entry and the best node waiting in `waiting` (true in the pair when it is the latter).
#[inline(always)]
fn best_left(pool: &Pool, waiting: &BinaryHeap<Reverse<Cand>>) -> Option<(Cand, bool)> {
    match (pool.peek(), waiting.peek()) {
        (Some(p), Some(&Reverse(w))) if w.d < p.d => Some((w, true)),
        (Some(p), _) => Some((p, false)),
        (None, w) => w.map(|&Reverse(w)| (w, true)),
    }
}

/// One layer of a greedy descent (see [`Graph::descend`]): moves from `cur` to the closest
/// neighbour that `usable` accepts while one is closer; distances from `dist`.
#[inline(always)]
fn greedy(
    nodes: &Nodes,
    mut cur: Cand,
    layer: u8,
    nbuf: &mut Vec<u32>,
    dist: impl Fn(u32) -> f32,
    usable: impl Fn(u32) -> bool,
) -> Cand {
    loop {
        let mut changed = false;
        nodes.neighbors(cur.slot, layer, nbuf);
        if nodes.dim > PREFETCH_ALL_LINES_DIM {
            // Long vectors, rarely in cache on the upper layers: their first lines start
            // loading together instead of one miss per distance (100k x 384, graph
            // alone: +4-6% QPS at ef 16-32; on 50-d vectors it measured slower).
            for &n in nbuf.iter() {
                nodes.prefetch(n);
            }
        }
        for &n in nbuf.iter() {
            let d = dist(n);
            if d < cur.d && usable(n) {
                cur = Cand { d, slot: n };
                changed = true;
            }
        }
        if !changed {
            return cur;
        }
    }
}

/// [`Graph::descend`] on `f32` points, compiled for the SIMD [`distance::dispatch`] picks.
struct Descent<'a, F> {
    graph: &'a Graph,
    nodes: &'a Nodes,
    q: &'a [f32],
    cur: Cand,
    top: u8,
    stop: u8,
    nbuf: &'a mut Vec<u32>,
    usable: F,
}

impl<F: Fn(u32) -> bool> WithSimd for Descent<'_, F> {
    type Output = Cand;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Cand {
        let (metric, nodes, q) = (self.graph.metric, self.nodes, self.q);
        let dist = |n| metric::distance_in(metric, simd, q, nodes.vector(n));
        let mut cur = self.cur;
        for layer in (self.stop + 1..=self.top).rev() {
            cur = greedy(nodes, cur, layer, self.nbuf, dist, &self.usable);
        }
        cur
    }
}

/// [`Graph::walk_layer`] on `f32` points, compiled for the SIMD [`distance::dispatch`] picks.
struct LayerWalk<'a> {
    graph: &'a Graph,
    nodes: &'a Nodes,
    scratch: &'a mut Scratch,
    q: &'a [f32],
    start: Cand,
    ef: usize,
    layer: u8,
}

impl WithSimd for LayerWalk<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) {
        let (metric, nodes, q) = (self.graph.metric, self.nodes, self.q);
        let dist = |n| metric::distance_in(metric, simd, q, nodes.vector(n));
        let ahead = |_| {};
        (self.graph).walk_layer(
            nodes,
            self.scratch,
            self.start,
            self.ef,
            self.layer,
            dist,
            ahead,
        );
    }
}

/// Per-search scratch memory, pooled so that a query allocates nothing once warm.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    visited: Visited,
    /// A filtered layer search's candidates that may not be returned.
    candidates: BinaryHeap<Reverse<Cand>>,
    /// A layer search's results, with the candidates that may be returned.
    pool: Pool,
    nbuf: Vec<u32>,
    /// A layer walk's neighbours that enter the pool, one expansion's worth.
    batch: Vec<Cand>,
    sorted: Vec<Cand>,
    selected: Vec<Cand>,
    /// The pruned list while a full neighbour list is cut back to its maximum.
    kept: Vec<Cand>,
    /// A query's codes, when the points are quantized.
    qcodes: Vec<u8>,
}

impl Scratch {
    /// Marks `slot` visited; returns false when it already was.
    #[inline]
    fn visit(&mut self, slot: u32) -> bool {
        self.visited.insert(slot as usize)
    }
}

/// An HNSW graph over prepared vectors (see [`Metric`]).
#[derive(Debug)]
pub(crate) struct Graph {
    pub(crate) metric: Metric,
    pub(crate) dim: usize,
    pub(crate) params: IndexParams,
    pub(crate) nodes: RwLock<Nodes>,
    pub(crate) entry: RwLock<Option<Entry>>,
    pub(crate) deleted_count: AtomicUsize,
    /// Nodes appended and not yet linked (counted under the write lock of `nodes`, before
    /// they are pushed). A search that holds the read lock and finds none skips each node's
    /// `linked` flag: no node can be appended while it holds the lock. A batch whose linking
    /// panics is never subtracted, so searches keep checking.
    unlinked: AtomicUsize,
    pool: Mutex<Vec<Scratch>>,
}

impl Graph {
    /// An empty graph with room for `params.initial_capacity` points.
    pub(crate) fn new(metric: Metric, dim: usize, params: IndexParams) -> Result<Self> {
        Self::with_capacity(metric, dim, params, params.initial_capacity, None)
    }

    /// An empty graph with room for `cap` points, holding them as codes under `quant` when
    /// given (a rebuild keeps its index's calibration).
    pub(crate) fn with_capacity(
        metric: Metric,
        dim: usize,
        params: IndexParams,
        cap: usize,
        quant: Option<Quantizer>,
    ) -> Result<Self> {
        let nodes = Nodes::with_capacity(dim, &params, cap, quant, Pages::Huge)?;
        Ok(Self::from_parts(metric, dim, params, nodes, None, 0))
    }

    pub(crate) fn from_parts(
        metric: Metric,
        dim: usize,
        params: IndexParams,
        nodes: Nodes,
        entry: Option<Entry>,
        deleted_count: usize,
    ) -> Self {
        Self {
            metric,
            dim,
            params,
            nodes: RwLock::new(nodes),
            entry: RwLock::new(entry),
            deleted_count: AtomicUsize::new(deleted_count),
            unlinked: AtomicUsize::new(0),
            pool: Mutex::new(Vec::new()),
        }
    }

    /// The layer of a new node, from its id (same id, same level: rebuilds are reproducible).
    pub(crate) fn level_for(&self, id: u32) -> u8 {
        let h = mix64(self.params.seed ^ mix64(id as u64 + 1));
        let u = ((h >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml).floor() as u64).min(MAX_LEVEL as u64) as u8
    }

    /// The internal distance from `q` to point `slot` (on codes when the points are
    /// quantized: `q` is then a [`View::Code`] too).
    #[inline]
    pub(crate) fn dist(&self, nodes: &Nodes, q: View<'_>, slot: u32) -> f32 {
        match q {
            View::F32(a) => self.metric.distance(a, nodes.vector(slot)),
            View::Code { codes, corr, quant } => quant.distance(
                self.metric,
                codes,
                corr,
                nodes.code(slot),
                nodes.corr[slot as usize],
            ),
        }
    }

    fn take_scratch(&self) -> Scratch {
        self.pool.lock().pop().unwrap_or_default()
    }

    fn put_scratch(&self, s: Scratch) {
        let mut pool = self.pool.lock();
        if pool.len() < 64 {
            pool.push(s);
        }
    }

    /// Appends prepared vectors (`ids.len() * dim` floats, ids not yet present) and links them
    /// in parallel. Fails, adding nothing, when the arrays cannot grow by `ids.len()` points.
    ///
    /// `hidden` points start tombstoned: linked like any other (searches traverse them) but
    /// never returned until their flags are cleared ([`crate::Index::publish`]); they count
    /// in `deleted_count` meanwhile. Returns the points' slots.
    pub(crate) fn add(&self, ids: &[u32], flat: &[f32], hidden: bool) -> Result<Range<usize>> {
        if ids.is_empty() {
            let n = self.nodes.read().len();
            return Ok(n..n);
        }
        let start = {
            let mut nodes = self.nodes.write();
            let calibrate = self.params.quantization == Quantization::Int8
                && nodes.quant.is_none()
                && nodes.len() + ids.len() >= CALIBRATION_POINTS;
            if calibrate {
                // The range comes from every point so far and this batch (sampled in place);
                // the points so far are encoded now, the batch as it is appended.
                let quant = Quantizer::calibrate(&[&nodes.vectors, flat]);
                nodes.quantize(quant, self.metric)?;
            }
            nodes.try_reserve(ids.len())?;
            if hidden {
                // Counted before the points exist, so that no search takes the fast path that
                // skips the tombstone check while they do.
                self.deleted_count.fetch_add(ids.len(), Relaxed);
            }
            self.unlinked.fetch_add(ids.len(), Relaxed);
            let start = nodes.len();
            for (i, &id) in ids.iter().enumerate() {
                let level = self.level_for(id);
                nodes.push(
                    id,
                    &flat[i * self.dim..(i + 1) * self.dim],
                    level,
                    self.metric,
                    hidden,
                );
            }
            start
        };
        let nodes = self.nodes.read();
        let nodes: &Nodes = &nodes;
        let end = nodes.len();
        let mut first = start;
        {
            let mut entry = self.entry.write();
            if entry.is_none() {
                *entry = Some(Entry {
                    slot: start as u32,
                    level: nodes.levels[start],
                });
                nodes.linked[start].store(true, Release);
                first += 1;
            }
        }
        if end - first < 32 {
            let mut scratch = self.take_scratch();
            for slot in first..end {
                self.link(nodes, slot as u32, &mut scratch);
            }
            self.put_scratch(scratch);
        } else {
            (first..end)
                .into_par_iter()
                .for_each_init(Scratch::default, |scratch, slot| {
                    self.link(nodes, slot as u32, scratch)
                });
        }
        // Release: a search that reads the count down sees every link stored above.
        self.unlinked.fetch_sub(end - start, Release);
        Ok(start..end)
    }

    /// Greedy descent from `cur` through layers `top` down to `stop + 1` (none when `top <=
    /// stop`): on each, moves to the closest neighbour while one is closer, among the nodes
    /// `usable` accepts; returns the closest found on layer `stop + 1`. On short `f32`
    /// vectors (at most [`PREFETCH_ALL_LINES_DIM`] dimensions) the whole descent runs inside
    /// one SIMD dispatch, the distance kernel inlined ([`Descent`]): graph alone on 50k x 50,
    /// 3 alternating runs, build 1.5% faster and QPS +0-8% at ef 16 and 32. On 100k x 384 the
    /// same measured 6-7% slower (7 alternating runs), so long vectors keep a dispatched
    /// kernel per distance.
    #[allow(clippy::too_many_arguments)]
    fn descend(
        &self,
        nodes: &Nodes,
        q: View<'_>,
        cur: Cand,
        top: u8,
        stop: u8,
        nbuf: &mut Vec<u32>,
        usable: impl Fn(u32) -> bool,
    ) -> Cand {
        match q {
            View::F32(q) if nodes.dim <= PREFETCH_ALL_LINES_DIM => distance::dispatch(Descent {
                graph: self,
                nodes,
                q,
                cur,
                top,
                stop,
                nbuf,
                usable,
            }),
            View::F32(_) | View::Code { .. } => {
                let mut cur = cur;
                for layer in (stop + 1..=top).rev() {
                    cur = greedy(nodes, cur, layer, nbuf, |n| self.dist(nodes, q, n), &usable);
                }
                cur
            }
        }
    }

    /// Best-first search of one layer from `start`; leaves up to `ef` allowed nodes, best
    /// first, in `scratch.pool`. Disallowed nodes are traversed but never returned: they wait
    /// in `scratch.candidates`, a heap of their own, while the allowed ones share the sorted
    /// pool with the results (as in [`search_layer_all`](Graph::search_layer_all)); the next
    /// node expanded is the better of the two. This visits the nodes the two-heap
    /// formulation visits, in its order (ties of equal distance aside).
    #[allow(clippy::too_many_arguments)]
    fn search_layer<F: Fn(u32) -> bool>(
        &self,
        nodes: &Nodes,
        scratch: &mut Scratch,
        q: View<'_>,
        start: Cand,
        ef: usize,
        layer: u8,
        allowed: F,
    ) {
        scratch.visited.next(nodes.len());
        scratch.pool.reset(ef);
        scratch.candidates.clear();
        scratch.visit(start.slot);
        if allowed(start.slot) {
            scratch.pool.insert(start);
        } else {
            scratch.candidates.push(Reverse(start));
        }
        let mut nbuf = std::mem::take(&mut scratch.nbuf);
        while let Some((c, waiting)) = best_left(&scratch.pool, &scratch.candidates) {
            if waiting {
                // Past the worst result of a full pool: so is every node still waiting (one
                // better than an unexpanded pool entry never is).
                if !scratch.pool.admits(c.d) {
                    break;
                }
                scratch.candidates.pop();
            } else {
                scratch.pool.next();
            }
            let next = best_left(&scratch.pool, &scratch.candidates).map(|(n, _)| n.slot);
            fresh_neighbors(nodes, &mut scratch.visited, c.slot, layer, next, &mut nbuf);
            for &n in &nbuf {
                let d = self.dist(nodes, q, n);
                if scratch.pool.admits(d) {
                    let cand = Cand { d, slot: n };
                    if allowed(n) {
                        scratch.pool.insert(cand);
                    } else {
                        scratch.candidates.push(Reverse(cand));
                    }
                }
            }
        }
        scratch.nbuf = nbuf;
    }

    /// [`search_layer`](Graph::search_layer) when every node may be returned: the candidates
    /// and results share one sorted [`Pool`], which is left in `scratch.pool`. Visits the
    /// same nodes in the same order (ties of equal distance aside).
    ///
    /// On short `f32` vectors (at most [`PREFETCH_ALL_LINES_DIM`] dimensions) the whole walk
    /// runs inside one SIMD dispatch ([`distance::dispatch`]), with the distance kernel
    /// inlined into the loop: on 50-d vectors the two calls per distance (into the kernel,
    /// through the dispatch) cost as much as its arithmetic. Long vectors keep the dispatched
    /// kernel, whose arithmetic outweighs the calls: inlined, graph alone on 100k x 384
    /// searched 4% (ef 16) and 3-10% (ef 32) slower over 8 alternating runs, builds the same.
    fn search_layer_all(
        &self,
        nodes: &Nodes,
        scratch: &mut Scratch,
        q: View<'_>,
        start: Cand,
        ef: usize,
        layer: u8,
    ) {
        match q {
            View::F32(q) if nodes.dim <= PREFETCH_ALL_LINES_DIM => distance::dispatch(LayerWalk {
                graph: self,
                nodes,
                scratch,
                q,
                start,
                ef,
                layer,
            }),
            View::F32(_) => {
                let dist = |n| self.dist(nodes, q, n);
                let ahead = |n| nodes.prefetch_rest(n);
                self.walk_layer(nodes, scratch, start, ef, layer, dist, ahead)
            }
            View::Code { .. } => {
                let dist = |n| self.dist(nodes, q, n);
                self.walk_layer(nodes, scratch, start, ef, layer, dist, |_| {})
            }
        }
    }

    /// The loop of [`search_layer_all`](Graph::search_layer_all), distances from `dist`.
    ///
    /// `ahead(n)` runs before the distance to the neighbour preceding `n` in an expansion's
    /// list: a long vector's remaining lines start loading while that distance is computed
    /// (100k x 384, 5 alternating pairs: graph alone +2-5% QPS at ef 16 and 32).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn walk_layer(
        &self,
        nodes: &Nodes,
        scratch: &mut Scratch,
        start: Cand,
        ef: usize,
        layer: u8,
        dist: impl Fn(u32) -> f32,
        ahead: impl Fn(u32),
    ) {
        scratch.visited.next(nodes.len());
        scratch.pool.reset(ef);
        scratch.visit(start.slot);
        scratch.pool.insert(start);
        let mut nbuf = std::mem::take(&mut scratch.nbuf);
        let mut batch = std::mem::take(&mut scratch.batch);
        while let Some(c) = scratch.pool.next() {
            let next = scratch.pool.peek().map(|n| n.slot);
            fresh_neighbors(nodes, &mut scratch.visited, c.slot, layer, next, &mut nbuf);
            // The neighbours that enter, merged in at once (see `Pool::insert_batch`).
            let bound = scratch.pool.bound();
            batch.clear();
            for (i, &n) in nbuf.iter().enumerate() {
                if let Some(&next) = nbuf.get(i + 1) {
                    ahead(next);
                }
                let d = dist(n);
                if d < bound {
                    batch.push(Cand { d, slot: n });
                }
            }
            scratch.pool.insert_batch(&mut batch);
        }
        scratch.batch = batch;
        scratch.nbuf = nbuf;
    }

    /// hnswlib's neighbour-selection heuristic: keep a candidate only when it is closer to the
    /// base than to every neighbour kept so far. `sorted` is ascending by distance to the base.
    fn select(&self, nodes: &Nodes, sorted: &[Cand], m: usize, out: &mut Vec<Cand>) {
        out.clear();
        for &c in sorted {
            if out.len() >= m {
                break;
            }
            let vc = nodes.view(c.slot);
            if out.iter().all(|s| self.dist(nodes, vc, s.slot) >= c.d) {
                out.push(c);
            }
        }
    }

    /// Links one appended node into the graph.
    fn link(&self, nodes: &Nodes, q: u32, scratch: &mut Scratch) {
        let Some(ep) = *self.entry.read() else { return };
        let level = nodes.levels[q as usize];
        let vq = nodes.view(q);
        let mut nbuf = std::mem::take(&mut scratch.nbuf);
        let mut cur = Cand {
            d: self.dist(nodes, vq, ep.slot),
            slot: ep.slot,
        };
        // A node still being linked by another thread may have empty lists on the layers
        // below: starting a descent or a layer search there would strand `q` with one
        // neighbour. Only completely linked nodes serve as starting points.
        let linked = |s: u32| nodes.is_linked(s);
        cur = self.descend(nodes, vq, cur, ep.level, level, &mut nbuf, linked);
        scratch.nbuf = nbuf;
        let top = level.min(ep.level);
        for layer in (0..=top).rev() {
            self.search_layer_all(nodes, scratch, vq, cur, self.params.ef_construction, layer);
            let mut sorted = std::mem::take(&mut scratch.sorted);
            sorted.clear();
            sorted.extend(scratch.pool.sorted().filter(|c| c.slot != q));
            if let Some(best) = sorted.iter().find(|c| linked(c.slot)) {
                cur = *best;
            }
            let mut selected = std::mem::take(&mut scratch.selected);
            self.select(nodes, &sorted, self.params.m, &mut selected);
            let mmax = if layer == 0 { nodes.m0 } else { nodes.m };
            self.set_own(nodes, q, layer, mmax, &selected, scratch, &mut sorted);
            for s in &selected {
                self.connect(nodes, s.slot, q, s.d, layer, mmax, scratch, &mut sorted);
            }
            scratch.selected = selected;
            scratch.sorted = sorted;
        }
        nodes.linked[q as usize].store(true, Release);
        if level > ep.level {
            let mut entry = self.entry.write();
            if entry.is_none_or(|e| level > e.level) {
                *entry = Some(Entry { slot: q, level });
            }
        }
    }

    /// Writes the new node `q`'s own list on `layer`: the `selected` neighbours, merged with
    /// any links that other threads added to `q` meanwhile (they found it through a layer
    /// above), pruned with the heuristic to `mmax` when the union is larger. Overwriting
    /// would silently drop those reverse edges.
    #[allow(clippy::too_many_arguments)]
    fn set_own(
        &self,
        nodes: &Nodes,
        q: u32,
        layer: u8,
        mmax: usize,
        selected: &[Cand],
        scratch: &mut Scratch,
        buf: &mut Vec<Cand>,
    ) {
        let _g = nodes.locks[q as usize].lock();
        let mut nbuf = std::mem::take(&mut scratch.nbuf);
        nodes.neighbors(q, layer, &mut nbuf);
        nbuf.retain(|s| !selected.iter().any(|c| c.slot == *s));
        if nbuf.is_empty() {
            nodes.set_neighbors(q, layer, selected.iter().map(|c| c.slot));
        } else if selected.len() + nbuf.len() <= mmax {
            nbuf.splice(0..0, selected.iter().map(|c| c.slot));
            nodes.set_neighbors(q, layer, nbuf.iter().copied());
        } else {
            self.prune(
                nodes,
                q,
                layer,
                mmax,
                selected,
                &nbuf,
                buf,
                &mut scratch.kept,
            );
        }
        scratch.nbuf = nbuf;
    }

    /// Adds `q` to the neighbours of `n` on `layer`, pruning with the heuristic when full.
    #[allow(clippy::too_many_arguments)]
    fn connect(
        &self,
        nodes: &Nodes,
        n: u32,
        q: u32,
        d_nq: f32,
        layer: u8,
        mmax: usize,
        scratch: &mut Scratch,
        buf: &mut Vec<Cand>,
    ) {
        let _g = nodes.locks[n as usize].lock();
        let mut nbuf = std::mem::take(&mut scratch.nbuf);
        nodes.neighbors(n, layer, &mut nbuf);
        if nbuf.contains(&q) {
            scratch.nbuf = nbuf;
            return;
        }
        if nbuf.len() < mmax {
            nbuf.push(q);
            nodes.set_neighbors(n, layer, nbuf.iter().copied());
        } else {
            let new = [Cand { d: d_nq, slot: q }];
            self.prune(nodes, n, layer, mmax, &new, &nbuf, buf, &mut scratch.kept);
        }
        scratch.nbuf = nbuf;
    }

    /// Sets `n`'s list on `layer` to at most `mmax` of `known` (candidates with their
    /// distances to `n`) and `others` (slots whose distances are computed here), chosen with
    /// the heuristic. The caller holds `n`'s lock.
    #[allow(clippy::too_many_arguments)]
    fn prune(
        &self,
        nodes: &Nodes,
        n: u32,
        layer: u8,
        mmax: usize,
        known: &[Cand],
        others: &[u32],
        buf: &mut Vec<Cand>,
        kept: &mut Vec<Cand>,
    ) {
        let vn = nodes.view(n);
        buf.clear();
        buf.extend_from_slice(known);
        buf.extend(others.iter().map(|&s| Cand {
            d: self.dist(nodes, vn, s),
            slot: s,
        }));
        buf.sort_unstable();
        self.select(nodes, buf, mmax, kept);
        nodes.set_neighbors(n, layer, kept.iter().map(|c| c.slot));
    }

    /// k nearest allowed, non-deleted nodes to a prepared query: `(slot, distance)` ascending.
    pub(crate) fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&(dyn Fn(u32) -> bool + Sync)>,
        out: &mut Vec<Cand>,
    ) {
        out.clear();
        let Some(ep) = *self.entry.read() else { return };
        let nodes = self.nodes.read();
        let nodes: &Nodes = &nodes;
        if ep.slot as usize >= nodes.len() {
            return;
        }
        let mut scratch = self.take_scratch();
        let mut nbuf = std::mem::take(&mut scratch.nbuf);
        let mut qcodes = std::mem::take(&mut scratch.qcodes);
        let q = nodes.query_view(q, &mut qcodes, self.metric);
        let mut cur = Cand {
            d: self.dist(nodes, q, ep.slot),
            slot: ep.slot,
        };
        // As in `link`: never descend into a node whose lower lists are still being written,
        // a check that costs a cache miss per step, needed only while a batch is linked.
        let all_linked = self.unlinked.load(Acquire) == 0;
        cur = self.descend(nodes, q, cur, ep.level, 0, &mut nbuf, |s| {
            all_linked || nodes.is_linked(s)
        });
        scratch.nbuf = nbuf;
        let ef = ef.max(k);
        let has_deleted = self.deleted_count.load(Relaxed) > 0;
        match (filter, has_deleted) {
            (None, false) => self.search_layer_all(nodes, &mut scratch, q, cur, ef, 0),
            (None, true) => {
                self.search_layer(nodes, &mut scratch, q, cur, ef, 0, |s| !nodes.is_deleted(s))
            }
            (Some(f), _) => self.search_layer(nodes, &mut scratch, q, cur, ef, 0, |s| {
                !nodes.is_deleted(s) && f(nodes.ids[s as usize])
            }),
        }
        // Only the best `k` leave the pool, equal scores by slot: `out` (sized for `k` by the
        // caller) never grows.
        out.extend(scratch.pool.best(k));
        scratch.qcodes = qcodes;
        self.put_scratch(scratch);
    }
}
