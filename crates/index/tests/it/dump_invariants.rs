//! Dumps whose checksums are valid but whose graph breaks a structural invariant are
//! [`Error::CorruptDump`]s (the caller rebuilds from storage), and no bytes at all make `load`
//! panic or give an index whose searches panic.
//!
//! The dump is decoded and re-encoded here from the format documented in `persist.rs`, with
//! the checksums and lengths in the manifest recomputed, so that every mutation reaches the
//! structural checks instead of stopping at the CRC.

use std::path::Path;
use std::sync::OnceLock;

use latentdb_index::{Error, Index, IndexParams, Metric};
use proptest::prelude::*;
use serde_json::Value;

const MAGIC: &[u8; 8] = b"LDBGRAPH";

/// A decoded dump: the manifest as JSON and every field of the data files.
#[derive(Debug, Clone)]
struct Dump {
    manifest: Value,
    header: [u32; 4],
    ids: Vec<u32>,
    levels: Vec<u8>,
    bitmap: Vec<u8>,
    links0: Vec<u32>,
    /// Per node: `level * (m + 1)` words.
    upper: Vec<Vec<u32>>,
    vectors: Vec<f32>,
}

fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

impl Dump {
    fn read(dir: &Path) -> Dump {
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let file =
            |k: &str| std::fs::read(dir.join(manifest[k]["name"].as_str().unwrap())).unwrap();
        let g = file("graph");
        assert_eq!(&g[..8], MAGIC);
        let h = u32s(&g[8..24]);
        let (n, m, m0) = (h[1] as usize, h[2] as usize, h[3] as usize);
        let mut at = 24;
        let mut take = |len: usize| {
            let s = &g[at..at + len];
            at += len;
            s.to_vec()
        };
        let ids = u32s(&take(n * 4));
        let levels = take(n);
        let bitmap = take(n.div_ceil(8));
        let links0 = u32s(&take(n * (m0 + 1) * 4));
        let upper = levels
            .iter()
            .map(|&l| u32s(&take(l as usize * (m + 1) * 4)))
            .collect();
        let vectors = file("vectors")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Dump {
            manifest,
            header: [h[0], h[1], h[2], h[3]],
            ids,
            levels,
            bitmap,
            links0,
            upper,
            vectors,
        }
    }

    fn graph_bytes(&self) -> Vec<u8> {
        let mut g = MAGIC.to_vec();
        for w in self.header {
            g.extend(w.to_le_bytes());
        }
        g.extend(self.ids.iter().flat_map(|x| x.to_le_bytes()));
        g.extend(&self.levels);
        g.extend(&self.bitmap);
        g.extend(self.links0.iter().flat_map(|x| x.to_le_bytes()));
        for u in &self.upper {
            g.extend(u.iter().flat_map(|x| x.to_le_bytes()));
        }
        g
    }

    fn vector_bytes(&self) -> Vec<u8> {
        self.vectors.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Writes the dump to `dir` with valid checksums and lengths.
    fn write(&self, dir: &Path) {
        write_raw(
            dir,
            self.manifest.clone(),
            &self.graph_bytes(),
            &self.vector_bytes(),
        );
    }

    fn m(&self) -> usize {
        self.header[2] as usize
    }

    fn m0(&self) -> usize {
        self.header[3] as usize
    }

    fn n(&self) -> usize {
        self.ids.len()
    }

    /// Layer-0 list of `slot` (count first).
    fn list0(&mut self, slot: usize) -> &mut [u32] {
        let s = self.m0() + 1;
        &mut self.links0[slot * s..(slot + 1) * s]
    }

    /// List of `slot` on upper `layer` (count first).
    fn list(&mut self, slot: usize, layer: usize) -> &mut [u32] {
        let s = self.m() + 1;
        &mut self.upper[slot][(layer - 1) * s..layer * s]
    }

    /// A node whose level is at least `level`, with a non-empty list on that layer.
    fn node_at(&self, level: u8) -> usize {
        (0..self.n())
            .find(|&s| self.levels[s] >= level)
            .expect("a node at that level")
    }
}

/// Writes a manifest and data files, setting the manifest's file names, lengths and CRCs.
fn write_raw(dir: &Path, mut manifest: Value, graph: &[u8], vectors: &[u8]) {
    for (key, bytes) in [("graph", graph), ("vectors", vectors)] {
        let name = format!("{key}-1.bin");
        std::fs::write(dir.join(&name), bytes).unwrap();
        manifest[key] = serde_json::json!({
            "name": name,
            "bytes": bytes.len(),
            "crc32": crc32fast::hash(bytes),
        });
    }
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

/// A small L2 dump with several levels (m = 4) and some tombstones: 300 points of dim 4.
fn base() -> &'static Dump {
    static BASE: OnceLock<Dump> = OnceLock::new();
    BASE.get_or_init(|| base_for(Metric::L2))
}

fn base_for(metric: Metric) -> Dump {
    let params = IndexParams {
        m: 4,
        ef_construction: 32,
        ..IndexParams::default()
    };
    let idx = Index::new(metric, 4, params).unwrap();
    let flat = latentdb_index::synth::embedding_like(300, 4, 7);
    let pts: Vec<(u32, &[f32])> = flat
        .chunks_exact(4)
        .enumerate()
        .map(|(i, v)| (i as u32 * 3 + 1, v))
        .collect();
    idx.insert_batch(&pts).unwrap();
    for id in [1, 31, 301] {
        assert!(idx.delete(id));
    }
    let dir = tempfile::tempdir().unwrap();
    idx.persist(dir.path(), 9).unwrap();
    let d = Dump::read(dir.path());
    assert!(
        d.levels.iter().any(|&l| l >= 2),
        "the fixture needs level-2 nodes"
    );
    d
}

/// A way to break a dump.
type Breaker = Box<dyn Fn(&mut Dump)>;

/// Loads `d` and expects a corrupt-dump error whose reason contains `reason`.
fn expect_corrupt(d: &Dump, reason: &str) {
    let dir = tempfile::tempdir().unwrap();
    d.write(dir.path());
    match Index::load(dir.path()) {
        Err(e @ Error::CorruptDump { .. }) => {
            assert!(!e.is_caller_fault());
            let msg = e.to_string();
            assert!(msg.contains(reason), "expected {reason:?} in {msg:?}");
        }
        Err(e) => panic!("{reason}: unexpected error {e}"),
        Ok(Some(_)) => panic!("{reason}: a broken dump loaded"),
        Ok(None) => panic!("{reason}: no dump"),
    }
}

/// Searches a loaded index every way there is; nothing may panic.
fn exercise(idx: &Index, seed: u64) {
    let dim = idx.dim();
    let queries = latentdb_index::synth::embedding_like(24, dim, seed);
    for q in queries.chunks_exact(dim) {
        for k in [1, 10] {
            let _ = idx.search(q, k, Some(16));
            let _ = idx.search_filtered(q, k, None, &|id| id % 2 == 0);
            let _ = idx.exact_search(q, k, &[1, 4, 7, 1000]);
            let _ = idx.exact_search_filtered(q, k, &|_| true);
            let _ = idx.search_allowed(q, k, None, &[4, 7, 10]);
        }
    }
    let _ = idx.stats();
    let _ = idx.delete(4);
}

#[test]
fn the_reencoded_fixture_loads_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    base().write(dir.path());
    let (idx, seq) = Index::load(dir.path()).unwrap().unwrap();
    assert_eq!(seq, 9);
    assert_eq!(idx.len(), 297);
    let hits = idx.search(&base().vectors[4..8], 1, None).unwrap();
    assert_eq!(hits[0].id, 4, "point 4 (slot 1) is its own nearest");
}

/// The defect of the issue: an upper-layer link to a node of a lower level loaded, then every
/// search that walked that layer panicked.
#[test]
fn an_upper_link_to_a_lower_level_node_is_rejected() {
    let mut d = base().clone();
    let s = d.node_at(2);
    let low = (0..d.n()).find(|&t| d.levels[t] < 2 && t != s).unwrap() as u32;
    let list = d.list(s, 2);
    list[0] = list[0].max(1);
    list[1] = low;
    // No repeat of `low` elsewhere in the list, so that only the level check can fire.
    let count = list[0] as usize;
    for i in 2..=count {
        if list[i] == low {
            list[i] = list[1];
        }
    }
    expect_corrupt(&d, "of level");
}

#[test]
fn every_broken_link_invariant_is_rejected() {
    let n = base().n() as u32;
    let mut cases: Vec<(&str, Breaker)> = vec![
        ("past the last point", Box::new(move |d| d.list0(5)[1] = n)),
        (
            "past the last point",
            Box::new(|d| d.list0(5)[1] = u32::MAX),
        ),
        ("links to itself", Box::new(|d| d.list0(5)[1] = 5)),
        (
            "twice",
            Box::new(|d| {
                let l = d.list0(5);
                l[0] = l[0].max(2);
                l[2] = l[1];
            }),
        ),
        ("at most", Box::new(|d| d.list0(5)[0] = 9)),
        ("at most", Box::new(|d| d.list0(5)[0] = u32::MAX)),
        (
            "at most",
            Box::new(|d| {
                let s = d.node_at(1);
                d.list(s, 1)[0] = 5;
            }),
        ),
        (
            "links to itself",
            Box::new(|d| {
                let s = d.node_at(1);
                let l = d.list(s, 1);
                l[0] = l[0].max(1);
                l[1] = s as u32;
            }),
        ),
        (
            "past the last point",
            Box::new(move |d| {
                let s = d.node_at(1);
                let l = d.list(s, 1);
                l[0] = l[0].max(1);
                l[1] = n + 7;
            }),
        ),
    ];
    // A node's level cannot exceed the maximum, even with the links a level needs.
    cases.push((
        "above",
        Box::new(|d| {
            let m = d.m();
            d.levels[3] = 16;
            d.upper[3] = vec![0; 16 * (m + 1)];
        }),
    ));
    for (reason, break_it) in cases {
        let mut d = base().clone();
        break_it(&mut d);
        expect_corrupt(&d, reason);
    }
}

#[test]
fn every_broken_node_invariant_is_rejected() {
    let cases: Vec<(&str, Breaker)> = vec![
        ("appears twice", Box::new(|d| d.ids[7] = d.ids[8])),
        (
            "tombstones",
            Box::new(|d| d.bitmap[10] ^= 0x01), // one more or one fewer than the manifest
        ),
        (
            "past the last point",
            Box::new(|d| {
                // 300 points: the last byte holds 4; set bit 6 and count it in the manifest.
                *d.bitmap.last_mut().unwrap() |= 1 << 6;
                let del = d.manifest["deleted"].as_u64().unwrap();
                d.manifest["deleted"] = (del + 1).into();
            }),
        ),
        ("non-finite", Box::new(|d| d.vectors[9] = f32::NAN)),
        ("overflows", Box::new(|d| d.vectors[9] = 3e38)),
        ("header", Box::new(|d| d.header[1] -= 1)),
        ("header", Box::new(|d| d.header[2] = 5)),
        ("trailing", Box::new(|d| d.upper[0].push(0))),
        ("length", Box::new(|d| d.vectors.extend([0.0; 4]))),
        ("truncated", Box::new(|d| d.links0.truncate(100))),
        (
            "count out of range",
            Box::new(|d| d.manifest["deleted"] = 100_000.into()),
        ),
    ];
    for (reason, break_it) in cases {
        let mut d = base().clone();
        break_it(&mut d);
        expect_corrupt(&d, reason);
    }
}

#[test]
fn the_entry_point_must_be_a_node_of_the_highest_level() {
    let top = *base().levels.iter().max().unwrap();
    let low = base().levels.iter().position(|&l| l < top).unwrap();
    let mut cases: Vec<Value> = vec![
        // A real node with its real level, but not the highest.
        serde_json::json!({ "slot": low, "level": base().levels[low] }),
        // Out of range, or a level the node does not have.
        serde_json::json!({ "slot": 300, "level": top }),
        serde_json::json!({ "slot": 4_000_000_000u32, "level": 0 }),
        Value::Null,
    ];
    let at_top = base().levels.iter().position(|&l| l == top).unwrap();
    if top > 0 {
        cases.push(serde_json::json!({ "slot": at_top, "level": top - 1 }));
    }
    for entry in cases {
        let mut d = base().clone();
        d.manifest["entry"] = entry.clone();
        expect_corrupt(&d, "entry point");
    }
}

#[test]
fn a_cosine_dump_holds_unit_vectors() {
    let mut d = base_for(Metric::Cosine);
    for x in &mut d.vectors[8..12] {
        *x *= 3.0;
    }
    expect_corrupt(&d, "unit length");
}

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One change to the graph file: `(region, offset, value)`. Region 0 sets 4 bytes at any
/// offset past the magic; region 1 a whole word (a count or a target) of the layer-0 lists,
/// region 2 one of the upper-layer lists. Values are mostly plausible slots, so that many
/// mutants load and get searched.
fn mutation() -> impl Strategy<Value = (u8, usize, u32)> {
    (
        prop_oneof![1 => Just(0u8), 2 => Just(1u8), 3 => Just(2u8)],
        any::<usize>(),
        prop_oneof![
            4 => 0u32..310,
            1 => 0u32..20,
            1 => any::<u32>(),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    /// Any mutation of a valid dump, with valid checksums: `Ok` or `Err`, never a panic; and a
    /// dump that loads never panics a search, an insert, a rebuild or a persist.
    #[test]
    fn mutated_dumps_load_or_fail_and_never_panic(
        muts in prop::collection::vec(mutation(), 1..6),
        entry in prop::option::of((0u32..310, 0u8..20)),
        touch_entry in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let d = base();
        let mut graph = d.graph_bytes();
        let n = d.n();
        let links0 = 24 + n * 5 + n.div_ceil(8);
        let upper = links0 + d.links0.len() * 4;
        for (region, at, v) in muts {
            let at = match region {
                0 => 8 + at % (graph.len() - 8 - 3),
                1 => links0 + (at % d.links0.len()) * 4,
                _ => upper + (at % ((graph.len() - upper) / 4)) * 4,
            };
            graph[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        let mut manifest = d.manifest.clone();
        if touch_entry {
            manifest["entry"] = match entry {
                Some((slot, level)) => serde_json::json!({ "slot": slot, "level": level }),
                None => Value::Null,
            };
        }
        let dir = tempfile::tempdir().unwrap();
        write_raw(dir.path(), manifest, &graph, &d.vector_bytes());
        if let Ok(Some((idx, _))) = Index::load(dir.path()) {
            exercise(&idx, seed);
            let _ = idx.insert(5_000, &[0.5, 0.25, 0.0, 1.0]);
            exercise(&idx, seed ^ 1);
            idx.rebuild();
            exercise(&idx, seed ^ 2);
            let again = tempfile::tempdir().unwrap();
            idx.persist(again.path(), 1).unwrap();
            prop_assert!(Index::load(again.path()).unwrap().is_some());
        }
    }

    /// Arbitrary bytes as the data files or the manifest: `Ok` or `Err`, never a panic.
    #[test]
    fn arbitrary_files_never_panic(
        graph in prop::collection::vec(any::<u8>(), 0..512),
        vectors in prop::collection::vec(any::<u8>(), 0..64),
        keep_header in any::<bool>(),
        manifest_text in ".{0,200}",
        seed in any::<u64>(),
    ) {
        let d = base();
        let mut g = graph;
        if keep_header {
            // A valid header makes the parser go further into the arbitrary rest.
            let mut head = d.graph_bytes()[..24].to_vec();
            head.extend(g);
            g = head;
        }
        let dir = tempfile::tempdir().unwrap();
        write_raw(dir.path(), d.manifest.clone(), &g, &vectors);
        if let Ok(Some((idx, _))) = Index::load(dir.path()) {
            exercise(&idx, seed);
        }
        std::fs::write(dir.path().join("manifest.json"), manifest_text).unwrap();
        if let Ok(Some((idx, _))) = Index::load(dir.path()) {
            exercise(&idx, seed);
        }
    }
}
