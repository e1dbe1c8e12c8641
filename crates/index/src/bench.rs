//! Helpers for ANN benchmarks (used by `latentdb bench ann`): exact ground truth and recall.

use rayon::prelude::*;

use crate::distance;
use crate::graph::Cand;
use crate::metric::MetricExt;
use latentdb_types::Metric;

/// Exact `k` nearest base rows (ids = row numbers) for every query, best first, computed in
/// parallel by brute force. `base` and `queries` are row-major with `dim` columns; cosine
/// normalises both sides.
pub fn ground_truth(
    metric: Metric,
    dim: usize,
    base: &[f32],
    queries: &[f32],
    k: usize,
) -> Vec<Vec<u32>> {
    if dim == 0 {
        return Vec::new();
    }
    let prep = |v: &[f32]| {
        let mut v = v.to_vec();
        if metric.normalizes() {
            distance::normalize(&mut v);
        }
        v
    };
    let base: Vec<f32> = if metric.normalizes() {
        base.par_chunks_exact(dim).flat_map_iter(prep).collect()
    } else {
        base.to_vec()
    };
    queries
        .par_chunks_exact(dim)
        .map(|q| {
            let q = prep(q);
            let mut heap =
                std::collections::BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16));
            for (i, v) in base.chunks_exact(dim).enumerate() {
                let c = Cand {
                    d: metric.distance(&q, v),
                    slot: i as u32,
                };
                if heap.len() < k {
                    heap.push(c);
                } else if heap.peek().is_some_and(|t| c < *t) {
                    heap.pop();
                    heap.push(c);
                }
            }
            heap.into_sorted_vec().into_iter().map(|c| c.slot).collect()
        })
        .collect()
}

/// Mean recall@k: the fraction of each truth row's first `k` ids found in the result row's
/// first `k` ids.
pub fn recall(results: &[Vec<u32>], truth: &[Vec<u32>], k: usize) -> f64 {
    let mut found = 0usize;
    let mut total = 0usize;
    for (r, t) in results.iter().zip(truth) {
        let t = &t[..t.len().min(k)];
        total += t.len();
        found += r.iter().take(k).filter(|id| t.contains(id)).count();
    }
    if total == 0 {
        1.0
    } else {
        found as f64 / total as f64
    }
}
