//! The change log: an upsert's inserts are one insert-run entry (format version 2), read
//! back as one change per sequence by `changes_since` and snapshots, and trimmed by key.

use latentdb_storage::{Change, Document, Storage, StorageOptions};

use crate::overlap::storage;

fn doc(id: &str) -> Document {
    Document::new(id, vec![1.0, 0.5])
}

fn ins(seq: u64, point: u32) -> Change {
    Change::Insert { seq, point }
}

fn rem(seq: u64, point: u32) -> Change {
    Change::Remove { seq, point }
}

#[test]
fn insert_runs_read_back_one_change_per_sequence_from_any_point() {
    let (dir, s) = storage();
    let ids = ["d0", "d1", "d2", "d3", "d4"];
    s.upsert("c", ids.iter().map(|i| doc(i)).collect(), None)
        .unwrap();
    // Two replaced, one new: the removes first, then the inserts at consecutive sequences.
    let out = s
        .upsert("c", vec![doc("d1"), doc("new"), doc("d3")], None)
        .unwrap();
    assert_eq!(out.seq, 10);
    assert_eq!(out.removed, [1, 3]);
    let second = [rem(6, 1), rem(7, 3), ins(8, 5), ins(9, 6), ins(10, 7)];
    let first: Vec<Change> = (0..5).map(|p| ins(u64::from(p) + 1, p)).collect();
    let all: Vec<Change> = first.iter().chain(&second).copied().collect();
    for after in 0..=10u64 {
        let (changes, complete) = s.changes_since("c", after).unwrap();
        assert!(complete, "after {after}");
        assert_eq!(changes, all[after as usize..], "after {after}");
    }

    // The log is trimmed by entry: an entry goes once its last change is covered.
    s.trim_changes("c", 5).unwrap();
    assert_eq!(s.changes_since("c", 5).unwrap(), (second.to_vec(), true));
    assert!(!s.changes_since("c", 4).unwrap().1, "trimmed past 5");
    // Trimmed into the run of 8..=10 (never done by the facade, which trims at batch
    // boundaries): the run stays whole, so 7 is still reached.
    s.trim_changes("c", 9).unwrap();
    assert_eq!(
        s.changes_since("c", 7).unwrap(),
        (second[2..].to_vec(), true)
    );
    assert_eq!(
        s.changes_since("c", 9).unwrap(),
        (second[4..].to_vec(), true)
    );
    assert!(
        !s.changes_since("c", 6).unwrap().1,
        "the removes at 6 and 7 are gone"
    );
    drop(s);

    // Durable as written; a delete after reopening logs one remove per point.
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert_eq!(
        s.changes_since("c", 7).unwrap(),
        (second[2..].to_vec(), true)
    );
    s.delete("c", &["d0", "new"], None).unwrap();
    let (changes, _) = s.changes_since("c", 9).unwrap();
    assert_eq!(changes, [ins(10, 7), rem(11, 0), rem(12, 6)]);
}

#[test]
fn snapshots_read_insert_runs_up_to_their_capture() {
    let (_dir, s) = storage();
    s.upsert("c", vec![doc("a"), doc("b"), doc("c")], None)
        .unwrap();
    let snap = s.snapshot(&["c".to_owned()]).unwrap();
    // A run written after the capture is not part of it.
    s.upsert("c", vec![doc("d"), doc("e")], None).unwrap();
    assert_eq!(
        snap.changes(0, 0).unwrap(),
        Some(vec![ins(1, 0), ins(2, 1), ins(3, 2)])
    );
    assert_eq!(
        snap.changes(0, 1).unwrap(),
        Some(vec![ins(2, 1), ins(3, 2)])
    );
    assert_eq!(snap.changes(0, 3).unwrap(), Some(Vec::new()));
}

/// A batch longer than `MAX_INSERT_RUN` is logged as several runs, read back whole.
#[test]
fn long_batches_split_into_runs() {
    let (_dir, s) = storage();
    let n = latentdb_storage::MAX_INSERT_RUN as usize + 3;
    let docs = (0..n).map(|i| doc(&format!("d{i}"))).collect();
    s.upsert("c", docs, None).unwrap();
    let (changes, complete) = s.changes_since("c", 0).unwrap();
    assert!(complete);
    let expect: Vec<Change> = (0..n as u32).map(|p| ins(u64::from(p) + 1, p)).collect();
    assert_eq!(changes, expect);
    let after = latentdb_storage::MAX_INSERT_RUN as u64 - 1;
    let (changes, _) = s.changes_since("c", after).unwrap();
    assert_eq!(changes, expect[after as usize..]);
}
