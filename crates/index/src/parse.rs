//! Parsing a dump's data files and checking every structural invariant of the graph they
//! describe, so that a loaded index holds exactly what [`Graph`](crate::graph::Graph) assumes
//! of one it built itself:
//!
//! - the graph file is exactly as long as its header and levels say, with the magic, format
//!   version, point count and `m`/`m0` of the manifest;
//! - the vectors file holds `points * dim` finite floats; every vector's squared norm is at
//!   most [`MAX_SQUARED_NORM`], and under cosine it is unit length (within 1e-3); in a
//!   quantized dump it holds `points * dim` codes of at most 127, under a finite range
//!   `lo < hi`, and the index's settings ask for quantization;
//! - ids are unique (slot and id map one to one), levels are at most `MAX_LEVEL`;
//! - the tombstone bitmap sets no bit past the last point, and its count is the manifest's;
//! - every link list has at most `m0` (layer 0) or `m` (upper layers) entries, none of them
//!   repeated, none pointing at its own node, every target a point of the graph, and on layer
//!   L every target a node whose level is at least L;
//! - the entry point is absent exactly when the graph is empty; otherwise it is a point whose
//!   level is the entry's and the highest of all.
//!
//! Memory is reserved only after the file lengths are checked, and fallibly.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32};

use latentdb_types::Metric;
use latentdb_types::dump::{Reader, le_u32s};
use parking_lot::Mutex;

use crate::distance::{MAX_SQUARED_NORM, squared_norm};
use crate::error::{Error, Result};
use crate::graph::{Entry, MAX_LEVEL, Nodes, Pages};
use crate::params::Quantization;
use crate::persist::{MAGIC, Manifest, corrupt};
use crate::quant::{CODE_MAX, Quantizer};
use crate::visited::Visited;

/// The contents of a dump's vectors file, as read.
pub(crate) enum Vectors {
    /// An `f32` dump's floats, and the file's length in bytes (a length that is not a
    /// multiple of 4 leaves its last bytes out of `floats`).
    Floats { floats: Vec<f32>, bytes: usize },
    /// A quantized dump's codes, the file's bytes.
    Codes(Vec<u8>),
}

impl Vectors {
    fn bytes(&self) -> usize {
        match self {
            Vectors::Floats { bytes, .. } => *bytes,
            Vectors::Codes(codes) => codes.len(),
        }
    }
}

/// What a dump's data files hold, checked.
pub(crate) struct Loaded {
    pub(crate) nodes: Nodes,
    pub(crate) entry: Option<Entry>,
    pub(crate) deleted: usize,
}

/// Checks one link list (`[count, targets..]`, `stride` words) of `slot` on `layer`.
fn check_list(
    list: &[u32],
    slot: usize,
    layer: usize,
    levels: &[u8],
    seen: &mut Visited,
) -> Result<(), String> {
    let max = list.len() - 1;
    let count = list[0] as usize;
    if count > max {
        return Err(format!(
            "node {slot} has {count} links on layer {layer}, at most {max} allowed"
        ));
    }
    seen.next(0);
    for &t in &list[1..=count] {
        let t = t as usize;
        if t >= levels.len() {
            return Err(format!(
                "node {slot} links to {t} on layer {layer}, past the last point"
            ));
        }
        if t == slot {
            return Err(format!("node {slot} links to itself on layer {layer}"));
        }
        if (levels[t] as usize) < layer {
            return Err(format!(
                "node {slot} links on layer {layer} to node {t} of level {}",
                levels[t]
            ));
        }
        if !seen.insert(t) {
            return Err(format!("node {slot} links to {t} twice on layer {layer}"));
        }
    }
    Ok(())
}

/// Parses and checks the data files of a dump whose manifest `m` has been checked already
/// (format version, params, dimension and counts in range).
pub(crate) fn parse_dump(
    dir: &Path,
    m: &Manifest,
    graph: &[u8],
    vectors: Vectors,
) -> Result<Loaded> {
    let bad = |what: String| corrupt(dir, format!("graph file: {what}"));
    let bad_vec = |what: String| corrupt(dir, format!("vectors file: {what}"));
    let mut r = Reader::new(graph);
    if r.take(8) != Some(MAGIC) {
        return Err(bad("bad magic".into()));
    }
    let (Some(version), Some(n), Some(mm), Some(m0)) = (r.u32(), r.u32(), r.u32(), r.u32()) else {
        return Err(bad("truncated header".into()));
    };
    let n = n as usize;
    if version != m.format_version
        || n != m.points
        || mm as usize != m.params.m
        || m0 as usize != m.params.m0()
    {
        return Err(bad("header does not match the manifest".into()));
    }
    let (mm, m0) = (mm as usize, m0 as usize);
    let dim = m.dim;
    let quant = match m.quantizer {
        None => None,
        Some([lo, hi]) => {
            let q = Quantizer::from_range(lo, hi)
                .ok_or_else(|| corrupt(dir, "the quantizer range is not finite and ordered"))?;
            if m.params.quantization != Quantization::Int8 {
                return Err(corrupt(
                    dir,
                    "a quantized dump of an index without quantization",
                ));
            }
            Some(q)
        }
    };
    let width = if quant.is_some() { 1 } else { 4 };
    if Some(vectors.bytes()) != n.checked_mul(dim).and_then(|x| x.checked_mul(width)) {
        return Err(bad_vec("length does not match points * dim".into()));
    }
    // Every section is sliced (and so its length checked) before anything is allocated.
    let truncated = |what: &str| bad(format!("truncated {what}"));
    let ids = r.u32_bytes(n).ok_or_else(|| truncated("ids"))?;
    let levels = r.take(n).ok_or_else(|| truncated("levels"))?;
    if let Some(slot) = levels.iter().position(|&l| l > MAX_LEVEL) {
        return Err(bad(format!(
            "node {slot} has level {}, above {MAX_LEVEL}",
            levels[slot]
        )));
    }
    let bitmap = r
        .take(n.div_ceil(8))
        .ok_or_else(|| truncated("tombstones"))?;
    let links0 = n
        .checked_mul(m0 + 1)
        .and_then(|w| r.u32_bytes(w))
        .ok_or_else(|| truncated("layer-0 links"))?;
    let upper_words: usize = levels.iter().map(|&l| l as usize * (mm + 1)).sum();
    let upper = r
        .u32_bytes(upper_words)
        .ok_or_else(|| truncated("upper links"))?;
    if r.pos() != graph.len() {
        return Err(bad("trailing bytes".into()));
    }

    let mut nodes = Nodes::with_capacity(dim, &m.params, n, quant, Pages::Plain)?;
    // The file's contents become the index's arrays as they are (no copy); the arrays
    // reserved for them above were never written to.
    match (quant, vectors) {
        (Some(q), Vectors::Codes(codes)) => {
            if let Some(at) = codes.iter().position(|&c| c > CODE_MAX) {
                return Err(bad_vec(format!(
                    "code {} of vector {} is above {CODE_MAX}",
                    codes[at],
                    at / dim
                )));
            }
            nodes
                .corr
                .extend(codes.chunks_exact(dim).map(|c| q.correction(m.metric, c)));
            nodes.codes = codes;
        }
        (None, Vectors::Floats { floats, .. }) => nodes.vectors = floats,
        _ => {
            return Err(corrupt(
                dir,
                "the vectors file was read for another format version",
            ));
        }
    }
    for (slot, v) in nodes.vectors.chunks_exact(dim).enumerate() {
        if v.iter().any(|x| !x.is_finite()) {
            return Err(bad_vec(format!("vector {slot} holds a non-finite value")));
        }
        let sq = squared_norm(v);
        if sq > MAX_SQUARED_NORM {
            return Err(bad_vec(format!("vector {slot} has a norm that overflows")));
        }
        if m.metric == Metric::Cosine && (sq - 1.0).abs() > 1e-3 {
            return Err(bad_vec(format!(
                "vector {slot} is not unit length under the cosine metric"
            )));
        }
    }
    nodes.ids.extend(le_u32s(ids));
    for (slot, &id) in nodes.ids.iter().enumerate() {
        if nodes.slot_of.insert(id, slot as u32).is_some() {
            return Err(bad(format!("point id {id} appears twice")));
        }
    }
    nodes.levels.extend_from_slice(levels);

    if !n.is_multiple_of(8) && bitmap[n / 8] >> (n % 8) != 0 {
        return Err(bad("tombstone bit set past the last point".into()));
    }
    nodes
        .deleted
        .extend((0..n).map(|s| AtomicBool::new(bitmap[s / 8] & (1 << (s % 8)) != 0)));
    let deleted = bitmap.iter().map(|b| b.count_ones() as usize).sum();
    if deleted != m.deleted {
        return Err(bad(format!(
            "{deleted} tombstones, the manifest says {}",
            m.deleted
        )));
    }

    let mut seen = Visited::try_with_len(n).map_err(|_| {
        Error::ResourceExhausted(format!("cannot reserve memory to check {n} points"))
    })?;
    // Each list is decoded into one small buffer, checked, then appended (`links0` has room
    // for all of them: no copy of the whole layer is held).
    let mut list = Vec::with_capacity(m0.max(mm) + 1);
    for (slot, raw) in links0.chunks_exact((m0 + 1) * 4).enumerate() {
        list.clear();
        list.extend(le_u32s(raw));
        check_list(&list, slot, 0, levels, &mut seen).map_err(bad)?;
        nodes.links0.extend(list.iter().map(|&w| AtomicU32::new(w)));
    }
    let mut upper = le_u32s(upper);
    nodes
        .upper
        .try_reserve_exact(upper_words)
        .map_err(|_| Error::ResourceExhausted("cannot allocate the upper links".into()))?;
    for (slot, &level) in levels.iter().enumerate() {
        for layer in 1..=level as usize {
            list.clear();
            list.extend(upper.by_ref().take(mm + 1));
            check_list(&list, slot, layer, levels, &mut seen).map_err(bad)?;
            nodes.upper.extend(list.iter().map(|&w| AtomicU32::new(w)));
        }
        nodes.upper_end.push(nodes.upper.len());
    }

    let top = levels.iter().copied().max();
    let entry = match (&m.entry, top) {
        (None, None) => None,
        (Some(e), Some(top))
            if (e.slot as usize) < n && levels[e.slot as usize] == e.level && e.level == top =>
        {
            Some(Entry {
                slot: e.slot,
                level: e.level,
            })
        }
        _ => {
            return Err(corrupt(
                dir,
                "the entry point is missing, out of range, or not a node of the highest level",
            ));
        }
    };
    nodes.locks.extend((0..n).map(|_| Mutex::new(())));
    nodes.linked.extend((0..n).map(|_| AtomicBool::new(true)));
    nodes.advise_huge_pages();
    Ok(Loaded {
        nodes,
        entry,
        deleted,
    })
}
