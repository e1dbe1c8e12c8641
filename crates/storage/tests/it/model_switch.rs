//! `Storage::replace_vectors_and_settings`: a model switch writes every document's new vector
//! and the collection's new embedder settings as one atomic, durable step.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latentdb_storage::{
    Change, CollectionSpec, Document, Durability, Error, Metric, Storage, StorageOptions, key,
};
use serde_json::{Value, json};

const DIM: usize = 8;

fn doc(n: usize, x: f32) -> Document {
    Document::new(format!("d{n:04}"), vec![x; DIM]).with_text(format!("text {n}"))
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i:04}")).collect()
}

/// A collection "c" of `n` documents with vectors of 1.0, embedder `{"model": "old"}` and
/// index settings `{"m": 8}`.
fn collection(s: &Storage, n: usize) {
    let mut spec = CollectionSpec::new("c", DIM, Metric::Cosine);
    spec.embedder = json!({"model": "old"});
    spec.index = json!({"m": 8});
    s.create_collection(spec).unwrap();
    s.upsert("c", (0..n).map(|i| doc(i, 1.0)).collect(), None)
        .unwrap();
}

/// Everything a model switch may change: the settings, every vector, the count and sequence.
fn state(s: &Storage, n: usize) -> (Value, Value, Vec<Option<Vec<f32>>>, u64, u64) {
    let info = s.collection_info("c").unwrap();
    let vectors = s
        .get("c", &ids(n))
        .unwrap()
        .into_iter()
        .map(|r| r.map(|r| r.vector))
        .collect();
    (
        info.embedder,
        info.index,
        vectors,
        info.count,
        s.last_seq("c").unwrap(),
    )
}

#[test]
fn a_switch_stores_the_vectors_and_the_settings_and_logs_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    collection(&s, 5);
    let before = s.last_seq("c").unwrap();
    let out = s
        .replace_vectors_and_settings(
            "c",
            (0..5).map(|i| doc(i, 2.0)).collect(),
            json!({"model": "new"}),
            None,
        )
        .unwrap();
    assert_eq!(out.ids, ids(5));
    assert_eq!(out.removed.len(), 5);
    assert_eq!(out.inserted.len(), 5);
    assert_eq!(out.seq, before + 10);
    let (embedder, index, vectors, count, seq) = state(&s, 5);
    assert_eq!(embedder, json!({"model": "new"}));
    assert_eq!(index, json!({"m": 8}), "the index settings are kept");
    assert!(
        vectors
            .iter()
            .all(|v| v.as_deref() == Some(&[2.0; DIM][..]))
    );
    assert_eq!((count, seq), (5, before + 10));
    // The index follows through the change log: each old point removed, each new one inserted.
    let (changes, complete) = s.changes_since("c", before).unwrap();
    assert!(complete);
    let removed: Vec<u32> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Remove { point, .. } => Some(*point),
            _ => None,
        })
        .collect();
    let inserted: Vec<u32> = changes
        .iter()
        .filter_map(|c| match c {
            Change::Insert { point, .. } => Some(*point),
            _ => None,
        })
        .collect();
    assert_eq!(removed, out.removed);
    assert_eq!(
        inserted,
        out.inserted.iter().map(|(p, _)| *p).collect::<Vec<_>>()
    );
    // A later write takes the next point and sequence (one set of counters).
    let later = s.upsert("c", vec![doc(9, 3.0)], None).unwrap();
    assert_eq!(later.seq, before + 11);
    assert!(later.inserted[0].0 > *inserted.iter().max().unwrap());
    drop(s);

    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let (embedder, _, vectors, count, seq) = state(&s, 5);
    assert_eq!(embedder, json!({"model": "new"}));
    assert!(
        vectors
            .iter()
            .all(|v| v.as_deref() == Some(&[2.0; DIM][..]))
    );
    assert_eq!((count, seq), (6, before + 11));
}

#[test]
fn a_switch_without_documents_changes_only_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    collection(&s, 2);
    let (_, index, vectors, count, seq) = state(&s, 2);
    let out = s
        .replace_vectors_and_settings("c", Vec::new(), json!({"model": "new"}), None)
        .unwrap();
    assert_eq!(out.seq, seq);
    assert_eq!(
        state(&s, 2),
        (json!({"model": "new"}), index, vectors, count, seq)
    );
}

#[test]
fn an_invalid_document_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    collection(&s, 5);
    let before = state(&s, 5);
    let mut bad = doc(3, 2.0);
    bad.vector = Some(vec![f32::NAN; DIM]);
    let docs = vec![doc(0, 2.0), doc(1, 2.0), doc(2, 2.0), bad, doc(4, 2.0)];
    let err = s
        .replace_vectors_and_settings("c", docs, json!({"model": "new"}), None)
        .unwrap_err();
    assert!(matches!(err, Error::NonFiniteVector { .. }), "{err}");
    assert!(err.is_caller_fault());
    assert_eq!(state(&s, 5), before);
    let err = s
        .replace_vectors_and_settings("x", vec![doc(0, 2.0)], json!({"model": "new"}), None)
        .unwrap_err();
    assert!(matches!(err, Error::CollectionNotFound(_)), "{err}");
}

/// Opens sled directly (the storage's sled threads may still be letting go of the file).
fn raw_sled(dir: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(dir.join(latentdb_storage::SLED_DIR)) {
            Ok(db) => return db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_failure_midway_through_the_documents_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    collection(&s, 5);
    let cid = s.collection_config("c").unwrap().cid;
    drop(s);
    // Two point ids left: the third document of the switch runs out of them.
    {
        let db = raw_sled(dir.path());
        let tree = db.open_tree(key::collection_tree(cid)).unwrap();
        tree.insert(key::META_NEXT_POINT, &(u32::MAX - 2).to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    let before = state(&s, 5);
    let err = s
        .replace_vectors_and_settings(
            "c",
            (0..5).map(|i| doc(i, 2.0)).collect(),
            json!({"model": "new"}),
            None,
        )
        .unwrap_err();
    assert!(matches!(err, Error::IdSpaceExhausted(_)), "{err}");
    assert_eq!(state(&s, 5), before);
    drop(s);
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    assert_eq!(state(&s, 5), before);
}

const CHILD_DOCS: usize = 300;

/// The child: switches "c" over and over, switch `i` giving every document vectors of
/// `i + 1` and the settings `{"switch": i}`; prints `@ack i` after switch `i` returns.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn switch_child() {
    let Ok(dir) = std::env::var("LATENTDB_SWITCH_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let s = Storage::open(&dir, StorageOptions::default()).unwrap();
    if s.collection_info("c").is_err() {
        let mut spec = CollectionSpec::new("c", DIM, Metric::Cosine);
        spec.embedder = json!({"switch": 0});
        s.create_collection(spec).unwrap();
        s.upsert("c", (0..CHILD_DOCS).map(|i| doc(i, 1.0)).collect(), None)
            .unwrap();
        println!("@ack 0");
    }
    let mut i = s.collection_info("c").unwrap().embedder["switch"]
        .as_u64()
        .unwrap();
    loop {
        i += 1;
        s.replace_vectors_and_settings(
            "c",
            (0..CHILD_DOCS).map(|n| doc(n, (i + 1) as f32)).collect(),
            json!({"switch": i}),
            Some(Durability::Sync),
        )
        .unwrap();
        println!("@ack {i}");
    }
}

#[test]
fn a_switch_killed_at_any_point_leaves_vectors_and_settings_of_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut last_ack = 0u64;
    for round in 0..8u64 {
        let mut child = Command::new(&exe)
            .args([
                "model_switch::switch_child",
                "--ignored",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LATENTDB_SWITCH_CHILD", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a varying number of switches, so the kill lands at different points.
        let kill_after = 1 + round % 3;
        let mut acks = 0;
        let started = Instant::now();
        while acks < kill_after {
            let line = lines.next().expect("child exited early").unwrap();
            if let Some(i) = line.strip_prefix("@ack ") {
                last_ack = i.trim().parse().unwrap();
                acks += 1;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "child too slow"
            );
        }
        child.kill().unwrap(); // SIGKILL: no drop, no flush
        for line in lines.map_while(Result::ok) {
            if let Some(i) = line.strip_prefix("@ack ") {
                last_ack = i.trim().parse().unwrap();
            }
        }
        child.wait().unwrap();

        let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let info = s.collection_info("c").unwrap();
        let switch = info.embedder["switch"].as_u64().unwrap();
        assert!(
            switch == last_ack || switch == last_ack + 1,
            "round {round}: settings of switch {switch}, last acknowledged {last_ack}"
        );
        assert_eq!(info.count, CHILD_DOCS as u64);
        for (n, r) in s
            .get("c", &ids(CHILD_DOCS))
            .unwrap()
            .into_iter()
            .enumerate()
        {
            let v = r
                .unwrap_or_else(|| panic!("round {round}: document {n} lost"))
                .vector;
            assert_eq!(
                v,
                vec![(switch + 1) as f32; DIM],
                "round {round}: document {n} has another switch's vector than the settings \
                 (switch {switch})"
            );
        }
        last_ack = switch;
    }
}
