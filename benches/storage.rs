//! Storage throughput: batch upsert (documents/s at dimension 384, batch 1,000) in both
//! durability modes, and get-by-id latency.
//!
//! `cargo bench --bench storage`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use latentdb::{CollectionSpec, Database, DatabaseOptions, Document, Durability, Metric};
use serde_json::json;

const DIM: usize = 384;
const BATCH: usize = 1_000;

fn batch(start: usize) -> Vec<Document> {
    (start..start + BATCH)
        .map(|n| {
            let v: Vec<f32> = (0..DIM)
                .map(|i| ((n * 31 + i * 7) % 97) as f32 / 97.0)
                .collect();
            Document::new(format!("doc-{n:09}"), v)
                .with_text(format!("document number {n} with a short text"))
                .with_metadata(json!({"n": n, "tag": n % 10}))
        })
        .collect()
}

fn upsert(c: &mut Criterion) {
    let mut group = c.benchmark_group("upsert_batch_1000_dim_384");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(10);
    for (label, durability) in [
        ("sync", Durability::Sync),
        ("buffered", Durability::Buffered),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db =
            Database::open_with(dir.path(), DatabaseOptions::new().durability(durability)).unwrap();
        db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
            .unwrap();
        let mut next = 0;
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    next += BATCH;
                    batch(next)
                },
                |docs| db.upsert("c", docs).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    for start in (0..100_000).step_by(BATCH) {
        db.upsert_with("c", batch(start), Durability::Buffered)
            .unwrap();
    }
    db.flush().unwrap();
    let mut n = 0usize;
    c.bench_function("get_by_id_dim_384_of_100k", |b| {
        b.iter(|| {
            n = (n + 7919) % 100_000;
            let id = format!("doc-{n:09}");
            db.get("c", &[id]).unwrap()
        })
    });
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, upsert, get);
}
use group::benches;
criterion_main!(benches);
