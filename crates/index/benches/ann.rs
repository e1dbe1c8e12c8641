//! ANN benchmark on seeded clustered vectors: build rate, then recall@10 / QPS / latency per
//! ef with one query thread, for this crate's graph and (with `HNSW_RS=1`) for hnsw_rs on the
//! same data.
//!
//! `cargo bench -p latentdb-index --bench ann` — environment: `N` (20000), `DIM` (384),
//! `NQ` (1000), `BATCH` (all: points per insert call), `METRIC` (cosine), `DATA` (emb: `synth::power_law_clusters` with
//! `ALPHA` (0.5); iso: isotropic clusters), `EFS` (16,32,64,128,256), `HNSW_RS` (0).
//! `DELETE=d` tombstones every d-th point before the searches.
//! `NPY=DIR` reads `DIR/base.npy`, `DIR/queries.npy` and `DIR/gt.npy` instead (the files of
//! `latentdb bench gen-data`, which `scripts/ann_hnswlib.py` also reads).

use std::time::Instant;

use latentdb_index::{Index, IndexParams, Metric, bench, npy, synth};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = env("N", 20_000);
    let dim: usize = env("DIM", 384);
    let nq: usize = env("NQ", 1000);
    let metric: Metric = env("METRIC", Metric::Cosine);
    let efs: String = env("EFS", "16,32,64,128,256".to_string());
    let efs: Vec<usize> = efs
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let kind: String = env("DATA", "emb".to_string());
    let alpha: f32 = env("ALPHA", 0.5);
    let make = |n, seed| match kind.as_str() {
        "iso" => synth::clustered_vectors(n, dim, 100, 0.35, seed),
        _ => synth::power_law_clusters(n, dim, 100, alpha, seed),
    };
    let (n, dim, nq, base, queries, truth) = match std::env::var("NPY") {
        Ok(dir) => {
            let dir = std::path::Path::new(&dir);
            let base = npy::read_f32(&dir.join("base.npy")).unwrap();
            let queries = npy::read_f32(&dir.join("queries.npy")).unwrap();
            let gt = npy::read_ids(&dir.join("gt.npy")).unwrap();
            let truth = (0..gt.rows).map(|i| gt.row(i)[..10].to_vec()).collect();
            (
                base.rows,
                base.cols,
                queries.rows,
                base.data,
                queries.data,
                truth,
            )
        }
        Err(_) => {
            let base = make(n, 42);
            let queries = make(nq, 4242);
            let t = Instant::now();
            let truth = bench::ground_truth(metric, dim, &base, &queries, 10);
            eprintln!("ground truth: {:.2}s", t.elapsed().as_secs_f64());
            (n, dim, nq, base, queries, truth)
        }
    };

    let idx = Index::new(metric, dim, IndexParams::default()).unwrap();
    let pts: Vec<(u32, &[f32])> = base
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (i as u32, v))
        .collect();
    let t = Instant::now();
    for batch in pts.chunks(env("BATCH", pts.len()).max(1)) {
        idx.insert_batch(batch).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "latentdb n={n} dim={dim} metric={metric} threads={} build {secs:.2}s = {:.0} vectors/s",
        rayon::current_num_threads(),
        n as f64 / secs
    );
    // DELETE=d: tombstone every d-th point before searching (searches then skip tombstones;
    // recall is against the full ground truth, so it drops by about 1/d).
    let delete: usize = env("DELETE", 0);
    if delete > 0 {
        let gone = (0..n as u32)
            .step_by(delete)
            .filter(|&id| idx.delete(id))
            .count();
        println!("latentdb deleted {gone} points (every {delete}th)");
    }
    for &ef in &efs {
        let mut lat = Vec::with_capacity(nq);
        let mut got = Vec::with_capacity(nq);
        let t = Instant::now();
        for q in queries.chunks_exact(dim) {
            let t1 = Instant::now();
            let hits = idx.search(q, 10, Some(ef)).unwrap();
            lat.push(t1.elapsed().as_secs_f64());
            got.push(hits.iter().map(|h| h.id).collect::<Vec<_>>());
        }
        let secs = t.elapsed().as_secs_f64();
        let r = bench::recall(&got, &truth, 10);
        lat.sort_by(f64::total_cmp);
        println!(
            "latentdb ef={ef:4} recall@10={r:.4} qps={:.0} p50={:.3}ms p99={:.3}ms",
            nq as f64 / secs,
            lat[nq / 2] * 1e3,
            lat[nq * 99 / 100] * 1e3
        );
    }
    if env("HNSW_RS", 0) == 1 {
        hnsw_rs_bench(metric, dim, &base, &queries, &truth, &efs);
    }
}

fn hnsw_rs_bench(
    metric: Metric,
    dim: usize,
    base: &[f32],
    queries: &[f32],
    truth: &[Vec<u32>],
    efs: &[usize],
) {
    use hnsw_rs::prelude::*;
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    let prep = |v: &[f32]| -> Vec<f32> {
        let mut v = v.to_vec();
        if metric == Metric::Cosine {
            latentdb_index::distance::normalize(&mut v);
        }
        v
    };
    let data: Vec<Vec<f32>> = base.chunks_exact(dim).map(prep).collect();
    let refs: Vec<(&Vec<f32>, usize)> = data.iter().enumerate().map(|(i, v)| (v, i)).collect();
    let hnsw = Hnsw::<f32, DistL2>::new(16, n, 16, 200, DistL2 {});
    let t = Instant::now();
    hnsw.parallel_insert(&refs);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "hnsw_rs (DistL2 on prepared vectors) build {secs:.2}s = {:.0} vectors/s",
        n as f64 / secs
    );
    for &ef in efs {
        let t = Instant::now();
        let mut got = Vec::with_capacity(nq);
        for q in queries.chunks_exact(dim) {
            let q = prep(q);
            got.push(
                hnsw.search(&q, 10, ef)
                    .iter()
                    .map(|n| n.d_id as u32)
                    .collect::<Vec<_>>(),
            );
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "hnsw_rs  ef={ef:4} recall@10={:.4} qps={:.0}",
            bench::recall(&got, truth, 10),
            nq as f64 / secs
        );
    }
}
