//! `Storage::upsert_overlapped`: the caller's work runs beside the commit, only for a batch
//! that was accepted, with the point ids the commit stores.

use latentdb_storage::{
    CollectionSpec, Document, Error, Metric, OVERLAP_MIN_DOCS, Storage, StorageOptions,
};

fn docs(range: std::ops::Range<usize>) -> Vec<Document> {
    range
        .map(|i| Document::new(format!("d{i}"), vec![i as f32, 1.0]))
        .collect()
}

/// A fresh storage with one 2-dimensional collection "c".
pub(crate) fn storage() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    s.create_collection(CollectionSpec::new("c", 2, Metric::L2))
        .unwrap();
    (dir, s)
}

#[test]
fn during_sees_the_points_that_are_committed_on_both_paths() {
    let (_dir, s) = storage();
    // A small batch (committed, then `during`) and a large one (committed on a thread of its
    // own while `during` runs), then a replacement of part of both.
    let mut next = 0;
    for (n, replace) in [
        (3, false),
        (OVERLAP_MIN_DOCS + 10, false),
        (OVERLAP_MIN_DOCS, true),
    ] {
        let range = if replace { 0..n } else { next..next + n };
        let (out, seen) =
            s.upsert_overlapped("c", docs(range.clone()), None, |inserted| inserted.to_vec());
        let out = out.unwrap();
        let inserted = seen.expect("`during` runs for an accepted batch");
        assert_eq!(inserted, out.inserted);
        assert_eq!(out.ids.len(), n);
        assert_eq!(out.removed.len(), if replace { n } else { 0 });
        for (id, (point, vector)) in out.ids.iter().zip(&out.inserted) {
            assert_eq!(s.point_of("c", id).unwrap(), Some(*point));
            let rec = s.get("c", &[id]).unwrap().pop().flatten().unwrap();
            assert_eq!(&rec.vector, vector);
        }
        if !replace {
            next += n;
        }
    }
    assert_eq!(s.count("c").unwrap(), next as u64);
}

#[test]
fn a_rejected_batch_runs_nothing_and_stores_nothing() {
    let (_dir, s) = storage();
    let mut bad = docs(0..OVERLAP_MIN_DOCS + 1);
    bad.push(Document::new("short", vec![1.0]));
    let (out, ran) = s.upsert_overlapped("c", bad, None, |_| ());
    assert!(
        matches!(out, Err(Error::DimensionMismatch { .. })),
        "{out:?}"
    );
    assert!(ran.is_none());
    let (out, ran) = s.upsert_overlapped("missing", docs(0..1), None, |_| ());
    assert!(matches!(out, Err(Error::CollectionNotFound(_))), "{out:?}");
    assert!(ran.is_none());
    assert_eq!(s.count("c").unwrap(), 0);
    // The point ids the rejected batch would have taken are given to the next one.
    let (out, _) = s.upsert_overlapped("c", docs(0..1), None, |_| ());
    assert_eq!(out.unwrap().inserted[0].0, 0);
}

#[test]
fn a_panic_in_during_leaves_the_committed_batch_and_its_counters() {
    let (_dir, s) = storage();
    // On both paths: beside the commit thread, and after an inline commit.
    let mut next = 0;
    for n in [OVERLAP_MIN_DOCS, 2] {
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            s.upsert_overlapped("c", docs(next..next + n), None, |_| {
                panic!("linking failed")
            })
        }));
        assert!(panicked.is_err());
        next += n;
        assert_eq!(s.count("c").unwrap(), next as u64);
        // The next write gets new point ids: nothing stored is overwritten.
        let (out, _) = s.upsert_overlapped("c", docs(next..next + 1), None, |_| ());
        assert_eq!(out.unwrap().inserted[0].0, next as u32);
        next += 1;
        let first = s.get("c", &["d0"]).unwrap().pop().flatten().unwrap();
        assert_eq!(first.vector, vec![0.0, 1.0]);
    }
}
