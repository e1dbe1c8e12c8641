//! The SIMD distance kernels against the plain scalar loops.
#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use latentdb_index::{distance, synth::SplitMix64};

fn kernels(c: &mut Criterion) {
    let mut rng = SplitMix64::new(1);
    for dim in [64usize, 128, 384, 768, 1536] {
        let a: Vec<f32> = (0..dim).map(|_| rng.next_f32()).collect();
        let b: Vec<f32> = (0..dim).map(|_| rng.next_f32()).collect();
        let mut g = c.benchmark_group(format!("dot/{dim}"));
        g.bench_function(BenchmarkId::new("simd", dim), |bench| {
            bench.iter(|| distance::dot(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("scalar", dim), |bench| {
            bench.iter(|| distance::dot_scalar(black_box(&a), black_box(&b)))
        });
        g.finish();
        let mut g = c.benchmark_group(format!("l2/{dim}"));
        g.bench_function(BenchmarkId::new("simd", dim), |bench| {
            bench.iter(|| distance::l2_sq(black_box(&a), black_box(&b)))
        });
        g.bench_function(BenchmarkId::new("scalar", dim), |bench| {
            bench.iter(|| distance::l2_sq_scalar(black_box(&a), black_box(&b)))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_millis(800));
    targets = kernels
}
criterion_main!(benches);
