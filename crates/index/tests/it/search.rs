//! Filtered search, deletes, rebuild and concurrency on seeded clustered data.

use std::sync::OnceLock;

use crate::common::{build, data, recall};
use latentdb_index::{Hit, Index, IndexParams, Metric, synth::mix64};

const N: usize = 20_000;
const DIM: usize = 64;

/// One shared 20k cosine index (building it is the slow part of the suite).
fn shared() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| build(Metric::Cosine, DIM, &data(N, DIM, 42)))
}

fn queries(n: usize) -> Vec<f32> {
    data(n, DIM, 777)
}

/// Seeded metadata stand-in: a bucket in 0..100 per point.
fn bucket(id: u32) -> u64 {
    mix64(id as u64 ^ 0xabcdef) % 100
}

#[test]
fn recall_cosine_at_default_ef() {
    let idx = shared();
    let qs = queries(200);
    let got: Vec<_> = qs
        .chunks_exact(DIM)
        .map(|q| idx.search(q, 10, None).unwrap())
        .collect();
    let truth: Vec<_> = qs
        .chunks_exact(DIM)
        .map(|q| idx.exact_search_filtered(q, 10, &|_| true).unwrap())
        .collect();
    let r = recall(&got, &truth);
    eprintln!("cosine: recall@10 at the default ef = {r:.4}");
    assert!(r >= 0.95, "cosine recall {r}");
    for hits in &got {
        assert_eq!(hits.len(), 10);
        assert!(
            hits.windows(2).all(|w| w[0].score >= w[1].score),
            "best first"
        );
    }
}

#[test]
fn filtered_search_keeps_recall_at_every_selectivity() {
    let idx = shared();
    let qs = queries(100);
    for pct in [1u64, 10, 50] {
        let pass = |id: u32| bucket(id) < pct;
        let allowed: Vec<u32> = (0..N as u32).filter(|&id| pass(id)).collect();
        let (mut planned, mut walked, mut truth) = (Vec::new(), Vec::new(), Vec::new());
        for q in qs.chunks_exact(DIM) {
            let t = idx.exact_search_filtered(q, 10, &pass).unwrap();
            assert_eq!(t.len(), 10);
            truth.push(t);
            let p = idx.search_allowed(q, 10, None, &allowed).unwrap();
            assert_eq!(p.len(), 10, "{pct}%: k results");
            assert!(p.iter().all(|h| pass(h.id)), "{pct}%: only matching ids");
            planned.push(p);
            if pct >= 10 {
                let w = idx.search_filtered(q, 10, None, &pass).unwrap();
                assert_eq!(w.len(), 10);
                assert!(w.iter().all(|h| pass(h.id)));
                walked.push(w);
            }
        }
        let r = recall(&planned, &truth);
        eprintln!("{pct}% selectivity: planned recall@10 = {r:.4}");
        assert!(r >= 0.95, "{pct}%: planned recall {r}");
        if pct >= 10 {
            let r = recall(&walked, &truth);
            eprintln!("{pct}% selectivity: graph-walk recall@10 = {r:.4}");
            assert!(r >= 0.95, "{pct}%: walk recall {r}");
        }
    }
    assert!(Index::prefers_exact(N / 100, N));
    assert!(!Index::prefers_exact(N / 2, N));
}

#[test]
fn exact_search_over_a_candidate_set_is_exact() {
    let idx = shared();
    let candidates: Vec<u32> = (0..N as u32).step_by(7).collect();
    for q in queries(5).chunks_exact(DIM) {
        let got = idx.exact_search(q, 10, &candidates).unwrap();
        let want = idx.exact_search_filtered(q, 10, &|id| id % 7 == 0).unwrap();
        assert_eq!(got, want);
    }
}

fn small_index(metric: Metric, n: usize) -> (Index, Vec<f32>) {
    let flat = data(n, DIM, 9);
    (build(metric, DIM, &flat), flat)
}

#[test]
fn deleted_points_are_never_returned_and_rebuild_drops_them() {
    let n = 5_000;
    let (idx, flat) = small_index(Metric::L2, n);
    // Delete 30% of the points, including the exact nearest neighbours of the queries.
    let qs = queries(50);
    let mut deleted = std::collections::HashSet::new();
    for q in qs.chunks_exact(DIM) {
        for h in idx.search(q, 3, None).unwrap() {
            if idx.delete(h.id) {
                deleted.insert(h.id);
            }
        }
    }
    for id in (0..n as u32).filter(|id| mix64(*id as u64) % 10 < 3) {
        if idx.delete(id) {
            deleted.insert(id);
        }
    }
    let stats = idx.stats();
    assert_eq!(stats.deleted, deleted.len());
    assert_eq!(stats.live, n - deleted.len());
    assert!((idx.tombstone_ratio() - deleted.len() as f64 / n as f64).abs() < 1e-12);
    let check = |idx: &Index| {
        let (mut got, mut truth) = (Vec::new(), Vec::new());
        for q in qs.chunks_exact(DIM) {
            let hits = idx.search(q, 10, None).unwrap();
            assert_eq!(hits.len(), 10, "k live results despite tombstones");
            assert!(
                hits.iter().all(|h| !deleted.contains(&h.id)),
                "deleted id returned"
            );
            got.push(hits);
            truth.push(idx.exact_search_filtered(q, 10, &|_| true).unwrap());
        }
        let r = recall(&got, &truth);
        assert!(r >= 0.95, "recall with tombstones {r}");
        for h in idx
            .exact_search(&qs[..DIM], 10, &(0..n as u32).collect::<Vec<_>>())
            .unwrap()
        {
            assert!(!deleted.contains(&h.id));
        }
    };
    check(&idx);
    idx.rebuild();
    let stats = idx.stats();
    assert_eq!((stats.total, stats.deleted), (n - deleted.len(), 0));
    check(&idx);
    // Replace = delete old id + insert new id with the same vector.
    let replaced_old = (0..n as u32).find(|id| !deleted.contains(id)).unwrap();
    let v = flat[replaced_old as usize * DIM..][..DIM].to_vec();
    assert!(idx.delete(replaced_old));
    idx.insert(n as u32 + 1, &v).unwrap();
    let hits = idx.search(&v, 5, None).unwrap();
    assert_eq!(hits[0].id, n as u32 + 1);
    assert!(hits.iter().all(|h| h.id != replaced_old));
}

#[test]
fn searches_run_while_batches_insert() {
    let flat = data(6_000, DIM, 5);
    let idx = Index::new(Metric::Cosine, DIM, IndexParams::default()).unwrap();
    let first: Vec<(u32, &[f32])> = flat
        .chunks_exact(DIM)
        .take(1000)
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .collect();
    idx.insert_batch(&first).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for (b, chunk) in flat.chunks_exact(DIM * 1000).enumerate().skip(1) {
                let pts: Vec<(u32, &[f32])> = chunk
                    .chunks_exact(DIM)
                    .enumerate()
                    .map(|(i, v)| ((b * 1000 + i) as u32, v))
                    .collect();
                idx.insert_batch(&pts).unwrap();
            }
        });
        for _ in 0..2 {
            s.spawn(|| {
                for q in queries(200).chunks_exact(DIM) {
                    let hits: Vec<Hit> = idx.search(q, 10, None).unwrap();
                    assert_eq!(hits.len(), 10);
                }
            });
        }
        s.spawn(|| {
            for id in (0..1000u32).step_by(10) {
                idx.delete(id);
            }
        });
    });
    assert_eq!(idx.stats().total, 6_000);
    assert_eq!(idx.stats().deleted, 100);
    let qs = queries(50);
    let got: Vec<_> = qs
        .chunks_exact(DIM)
        .map(|q| idx.search(q, 10, None).unwrap())
        .collect();
    let truth: Vec<_> = qs
        .chunks_exact(DIM)
        .map(|q| idx.exact_search_filtered(q, 10, &|_| true).unwrap())
        .collect();
    assert!(recall(&got, &truth) >= 0.95);
}

#[test]
fn rebuild_runs_beside_searches_and_deletes() {
    let (idx, _) = small_index(Metric::Dot, 3_000);
    for id in 0..300 {
        idx.delete(id);
    }
    std::thread::scope(|s| {
        s.spawn(|| idx.rebuild());
        s.spawn(|| {
            for q in queries(100).chunks_exact(DIM) {
                assert!(idx.search(q, 10, None).unwrap().iter().all(|h| h.id >= 300));
            }
            for id in 300..400 {
                idx.delete(id);
            }
        });
    });
    // Deletes made during the rebuild survive the swap.
    for q in queries(50).chunks_exact(DIM) {
        assert!(idx.search(q, 10, None).unwrap().iter().all(|h| h.id >= 400));
    }
    assert_eq!(idx.len(), 2_600);
}

/// Equal scores come in insertion order, whatever order the walk met them in: the graph's
/// answer is the exact one, ties included, when the whole graph is visited (64 points, ef
/// 100), unfiltered, filtered and over tombstones.
#[test]
fn equal_scores_come_in_insertion_order() {
    let dim = 4;
    let n = 64u32;
    // Point i lies on axis (i * 7) % 4: a query on an axis scores 1 against a quarter of
    // the points and exactly 0 against the rest.
    let flat: Vec<f32> = (0..n as usize)
        .flat_map(|i| (0..dim).map(move |a| if a == (i * 7) % dim { 1.0 } else { 0.0 }))
        .collect();
    let axis_query = |axis: usize| -> Vec<f32> {
        (0..dim)
            .map(|a| if a == axis { 1.0 } else { 0.0 })
            .collect()
    };
    let ids = |hits: Vec<Hit>| hits.into_iter().map(|h| h.id).collect::<Vec<_>>();
    // The graph's answer and the exact one, for `k` and an id filter.
    let both = |idx: &Index, q: &[f32], k: usize, pass: &(dyn Fn(u32) -> bool + Sync)| {
        let got = ids(idx.search_filtered(q, k, Some(100), pass).unwrap());
        (got, ids(idx.exact_search_filtered(q, k, pass).unwrap()))
    };
    for metric in [Metric::Cosine, Metric::L2] {
        let idx = build(metric, dim, &flat);
        for axis in 0..dim {
            let q = axis_query(axis);
            let got = ids(idx.search(&q, 24, Some(100)).unwrap());
            let (_, want) = both(&idx, &q, 24, &|_| true);
            assert_eq!(got, want, "{metric:?}, axis {axis}");
            let mut top: Vec<u32> = (0..n).filter(|i| (*i as usize * 7) % dim == axis).collect();
            let rest: Vec<u32> = (0..n)
                .filter(|i| !top.contains(i))
                .take(24 - top.len())
                .collect();
            top.extend(rest);
            assert_eq!(
                got, top,
                "{metric:?}, axis {axis}: ascending ids within a score"
            );
            let (got, want) = both(&idx, &q, 12, &|id| id % 2 == 1);
            assert_eq!(got, want, "{metric:?}, axis {axis}, filtered");
        }
        for id in (0..n).step_by(5) {
            assert!(idx.delete(id));
        }
        for axis in 0..dim {
            let (got, want) = both(&idx, &axis_query(axis), 24, &|_| true);
            assert_eq!(got, want, "{metric:?}, axis {axis}, with tombstones");
        }
    }
}
