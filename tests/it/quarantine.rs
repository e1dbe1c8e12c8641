//! One collection's bad stored state never bricks the database: a collection that cannot be
//! opened is quarantined (every operation on it fails with `Error::Quarantined`, kind
//! FailedPrecondition; `drop_collection` works), and the others work as before. And a spec
//! whose index cannot be built is rejected before anything is stored.

use std::path::Path;

use latentdb::storage::{Storage, StorageOptions};
use latentdb::{CollectionSpec, Database, Document, Error, ErrorKind, Metric, SearchRequest};
use serde_json::{Value, json};

const DIM: usize = 8;

/// Stores a collection with a raw index spec straight through the storage engine, the way the
/// old facade did before it checked the spec (and the way an old database may hold it).
fn store_raw_spec(dir: &Path, name: &str, index: Value) {
    let storage = Storage::open(dir, StorageOptions::default()).unwrap();
    let mut spec = CollectionSpec::new(name, DIM, Metric::Cosine);
    spec.index = index;
    storage.create_collection(spec).unwrap();
}

fn fill_good(db: &Database) {
    db.create_collection(CollectionSpec::new("good", DIM, Metric::Cosine))
        .unwrap();
    let docs = (0..50).map(|n| crate::common::doc(n, DIM)).collect();
    db.upsert("good", docs).unwrap();
}

fn assert_quarantined<T: std::fmt::Debug>(r: latentdb::Result<T>, name: &str, what: &str) {
    match r {
        Err(e @ Error::Quarantined { .. }) => {
            assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{what}");
            let msg = e.to_string();
            assert!(msg.contains(name), "{what}: {msg}");
            assert!(msg.len() < 1_000, "{what}: unbounded message");
        }
        other => panic!("{what} on quarantined {name}: expected Quarantined, got {other:?}"),
    }
}

fn assert_good_works(db: &Database) {
    assert_eq!(db.count("good").unwrap(), 50);
    let hits = db
        .search(
            "good",
            &SearchRequest {
                k: 1,
                ..SearchRequest::vector(crate::common::vector(7, DIM))
            },
        )
        .unwrap();
    assert_eq!(hits[0].id, "doc-00000007");
}

#[test]
fn a_bad_stored_index_spec_quarantines_its_collection_not_the_database() {
    let dir = tempfile::tempdir().unwrap();
    fill_good(&Database::open(dir.path()).unwrap());
    // 2^61 points overflowed the capacity computation (a panic); 10^12 aborted the process on
    // allocation; a wrongly typed field was silently replaced by the defaults.
    store_raw_spec(dir.path(), "huge", json!({"initial_capacity": 1u64 << 61}));
    store_raw_spec(
        dir.path(),
        "big",
        json!({"initial_capacity": 1_000_000_000_000u64}),
    );
    store_raw_spec(dir.path(), "typo", json!({"m": "sixteen"}));

    let db = Database::open(dir.path()).expect("a bad collection must not brick the database");
    let quarantined = db.quarantined();
    let names: Vec<&str> = quarantined.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["big", "huge", "typo"], "{quarantined:?}");
    for (name, reason) in &quarantined {
        assert!(
            reason.contains("index setting"),
            "{name}: unclear reason {reason:?}"
        );
    }
    assert_good_works(&db);

    let name = "huge";
    let v = crate::common::vector(1, DIM);
    assert_quarantined(db.count(name), name, "count");
    assert_quarantined(db.get(name, &["x"]), name, "get");
    assert_quarantined(db.scroll(name, None, 10), name, "scroll");
    assert_quarantined(
        db.upsert(name, vec![Document::new("x", v.clone())]),
        name,
        "upsert",
    );
    assert_quarantined(db.delete(name, &["x"]), name, "delete");
    assert_quarantined(
        db.delete_by_filter(name, &json!({"n": 1})),
        name,
        "delete_by_filter",
    );
    assert_quarantined(
        db.search(name, &SearchRequest::vector(v.clone())),
        name,
        "search",
    );
    assert_quarantined(db.compact(name), name, "compact");
    assert_quarantined(db.index_stats(name), name, "index_stats");
    assert_quarantined(db.collection_info(name), name, "collection_info");
    // Creating over it is refused: the name is still taken until it is dropped.
    assert!(
        db.create_collection(CollectionSpec::new(name, DIM, Metric::Cosine))
            .is_err()
    );

    // Dropping it is the way out, and frees the name.
    db.drop_collection("huge").unwrap();
    assert!(db.quarantined().iter().all(|(n, _)| n != "huge"));
    db.create_collection(CollectionSpec::new("huge", DIM, Metric::Cosine))
        .unwrap();
    db.upsert("huge", vec![Document::new("x", v)]).unwrap();
    assert_eq!(db.count("huge").unwrap(), 1);
    drop(db);

    // Across a reopen: the dropped one is gone, the others are still quarantined.
    let db = Database::open(dir.path()).unwrap();
    let names: Vec<String> = db.quarantined().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["big", "typo"]);
    assert_eq!(db.count("huge").unwrap(), 1);
    assert_good_works(&db);
    db.drop_collection("big").unwrap();
    db.drop_collection("typo").unwrap();
    assert!(db.quarantined().is_empty());
}

#[test]
fn a_spec_whose_index_cannot_be_built_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for (what, dim, index) in [
        (
            "capacity overflow",
            DIM,
            json!({"initial_capacity": 1u64 << 61}),
        ),
        (
            "allocation abort",
            DIM,
            json!({"initial_capacity": 1_000_000_000_000u64}),
        ),
        // Within the capacity bound, but too many bytes at this dimension: only building
        // the index finds it.
        (
            "too many bytes",
            4096,
            json!({"initial_capacity": 1u64 << 26}),
        ),
        ("unknown key", DIM, json!({"ef_construct": 100})),
        ("wrong type", DIM, json!({"m": "sixteen"})),
        ("m out of range", DIM, json!({"m": 1000})),
    ] {
        let mut spec = CollectionSpec::new("c", dim, Metric::Cosine);
        spec.index = index;
        let err = db
            .create_collection(spec)
            .expect_err(&format!("{what} accepted"));
        assert!(err.is_caller_fault(), "{what}: {err}");
        assert!(
            db.list_collections().is_empty(),
            "{what}: the spec was stored although its index was rejected"
        );
    }
    drop(db);
    let db = Database::open(dir.path()).unwrap();
    assert!(db.list_collections().is_empty());
    assert!(db.quarantined().is_empty());
    fill_good(&db);
    assert_good_works(&db);
}
