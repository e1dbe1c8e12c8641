//! Graph quality under heavy linking concurrency: a small batch linked by many threads at
//! once into an empty graph (the case of a first upsert, or of a compaction) must still find
//! every point by its own vector.

use latentdb_index::{Index, IndexParams, Metric, synth};

const N: usize = 2_000;
const DIM: usize = 16;

/// Fraction of points whose own vector finds them first, with the batch linked by `threads`.
fn self_found(threads: usize, seed: u64) -> f64 {
    let data = synth::clustered_vectors(N, DIM, N, 1.0, seed);
    let idx = Index::new(Metric::Cosine, DIM, IndexParams::default()).unwrap();
    let points: Vec<(u32, &[f32])> = data
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| idx.insert_batch(&points)).unwrap();
    let found = points
        .iter()
        .filter(|(id, v)| idx.search(v, 20, None).unwrap()[0].id == *id)
        .count();
    found as f64 / N as f64
}

#[test]
fn many_threads_linking_a_fresh_graph_keep_every_point_reachable() {
    for seed in 0..3 {
        let serial = self_found(1, seed);
        let parallel = self_found(16, seed);
        eprintln!("seed {seed}: found by own vector: serial {serial:.4}, 16 threads {parallel:.4}");
        assert!(serial >= 0.995, "serial build: {serial}");
        assert!(parallel >= 0.995, "16-thread build: {parallel}");
    }
}
