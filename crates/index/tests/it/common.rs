//! Shared helpers of the integration tests.
#![allow(dead_code)]

use latentdb_index::{Hit, Index, IndexParams, Metric, synth};

/// Seeded embedding-like clustered vectors (`synth::embedding_like`).
pub fn data(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    synth::embedding_like(n, dim, seed)
}

/// An index over `flat` with ids 0..n.
pub fn build(metric: Metric, dim: usize, flat: &[f32]) -> Index {
    let idx = Index::new(metric, dim, IndexParams::default()).unwrap();
    let pts: Vec<(u32, &[f32])> = flat
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .collect();
    idx.insert_batch(&pts).unwrap();
    idx
}

/// Mean recall of `got` against `truth` (both lists of ids per query).
pub fn recall(got: &[Vec<Hit>], truth: &[Vec<Hit>]) -> f64 {
    let mut hit = 0usize;
    let mut total = 0usize;
    for (g, t) in got.iter().zip(truth) {
        total += t.len();
        hit += g.iter().filter(|h| t.iter().any(|x| x.id == h.id)).count();
    }
    hit as f64 / total.max(1) as f64
}
