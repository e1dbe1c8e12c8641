//! Storage throughput: batch upsert (documents/s at dimension 384, batch 1,000) in both
//! durability modes, get-by-id latency, and what sled itself costs per document written
//! (`sled_apply_10000_docs`).
//!
//! `cargo bench --bench storage` (`cargo bench --bench storage -- sled_apply` for the last)

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use latentdb::storage::key;
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

/// What sled itself costs per document as latentdb's storage writes one (`docs/FORMAT.md`):
/// one `apply_batch` of 10,000 documents into a tree that grows batch by batch up to 50,000
/// documents (then is cleared, untimed), as `latentdb bench ann` loads the 50-d words, ids as
/// decimal strings (as `bench ann` gives them), with the id-map entry alone (`i` + id -> a
/// 4-byte point: the least any key per document costs), and with the record beside it (`p` +
/// point -> 215 bytes, a 50-d vector's record; 1,560 bytes, a 384-d one's). sled's log flusher
/// is off and its I/O threads' time is not counted: lower bounds of the CPU a load spends in
/// sled, beside the linking of the same documents (`bench ann`'s `cpu_us_per_vector`).
fn sled_apply(c: &mut Criterion) {
    const DOCS: u32 = 10_000;
    let mut group = c.benchmark_group("sled_apply_10000_docs");
    group.throughput(Throughput::Elements(u64::from(DOCS)));
    group.sample_size(10);
    for (label, record) in [
        ("id_map_only", None),
        ("id_map_and_record_215_bytes", Some(215)),
        ("id_map_and_record_1560_bytes", Some(1560)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        let tree = db.open_tree("c").unwrap();
        let mut next = 0u32;
        group.bench_function(label, |b| {
            b.iter_batched(
                || {
                    if next == 5 * DOCS {
                        tree.clear().unwrap();
                        next = 0;
                    }
                    let mut batch = sled::Batch::default();
                    for point in next..next + DOCS {
                        batch.insert(key::id_key(&point.to_string()), &point.to_be_bytes());
                        if let Some(len) = record {
                            batch.insert(&key::point_key(point), vec![point as u8; len]);
                        }
                    }
                    next += DOCS;
                    batch
                },
                |batch| tree.apply_batch(batch).unwrap(),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, upsert, get, sled_apply);
}
use group::benches;
criterion_main!(benches);
