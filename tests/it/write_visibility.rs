//! What searches see of a write in flight: its points are linked into the index while storage
//! commits them (`Storage::upsert_overlapped`), hidden until the commit succeeded. A search
//! racing large writes must never meet a point of an uncommitted batch: such a point has no
//! payload entry yet, so it would take a result's place and then be dropped (fewer than `k`
//! hits), or be returned before `get` can read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use latentdb::{CollectionSpec, Database, Document, Metric, SearchRequest};

use crate::common::vector;

const DIM: usize = 8;
const BATCH: u64 = 400; // above OVERLAP_MIN_DOCS: committed on a thread beside the linking
const BATCHES: u64 = 10;

fn docs(range: std::ops::Range<u64>) -> Vec<Document> {
    range
        .map(|n| Document::new(format!("d{n}"), vector(n, DIM)))
        .collect()
}

#[test]
fn searches_racing_large_writes_return_only_committed_points() {
    assert!(BATCH as usize >= latentdb_storage::OVERLAP_MIN_DOCS);
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path()).unwrap());
    db.create_collection(CollectionSpec::new("c", DIM, Metric::L2))
        .unwrap();
    db.upsert("c", docs(0..BATCH)).unwrap();
    // Documents below this number are acknowledged.
    let acked = Arc::new(AtomicU64::new(BATCH));
    let done = Arc::new(AtomicBool::new(false));
    let searcher = {
        let (db, acked, done) = (db.clone(), acked.clone(), done.clone());
        std::thread::spawn(move || {
            let mut searches = 0u64;
            let mut n = 0u64;
            while !done.load(Ordering::Acquire) {
                // Mostly the vectors of the batch being written (the likeliest to leak).
                let base = acked.load(Ordering::Acquire);
                n = (n + 7919) % (2 * BATCH);
                let target = base.saturating_sub(BATCH) + n;
                let req = SearchRequest {
                    k: 10,
                    ..SearchRequest::vector(vector(target, DIM))
                };
                let hits = db.search("c", &req).unwrap();
                assert_eq!(hits.len(), 10, "search {searches}: {hits:?}");
                let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
                let records = db.get("c", &ids).unwrap();
                assert!(
                    records.iter().all(Option::is_some),
                    "search {searches} returned a document that get cannot read: {ids:?}"
                );
                searches += 1;
            }
            searches
        })
    };
    for b in 1..=BATCHES {
        db.upsert("c", docs(b * BATCH..(b + 1) * BATCH)).unwrap();
        acked.store((b + 1) * BATCH, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let searches = searcher.join().unwrap();
    assert!(searches > 0);
    // And once written, every batch is found.
    for n in [0, BATCH, BATCHES * BATCH + BATCH - 1] {
        let hits = db
            .search("c", &SearchRequest::vector(vector(n, DIM)))
            .unwrap();
        assert_eq!(hits[0].id, format!("d{n}"));
    }
}
