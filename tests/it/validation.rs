//! Every validation error is typed, and a rejected batch leaves the collection exactly as it was.

use latentdb::storage::Error as StorageError;
use latentdb::{CollectionSpec, Database, DatabaseOptions, Document, Error, Metric, Record};
use serde_json::json;

const DIM: usize = 8;

fn open() -> (tempfile::TempDir, Database) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), DatabaseOptions::new().max_text_bytes(100)).unwrap();
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    (dir, db)
}

fn snapshot(db: &Database) -> Vec<Record> {
    db.scroll("c", None, 10_000).unwrap().records
}

fn storage_err(e: Error) -> StorageError {
    match e {
        Error::Storage(s) => s,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

#[test]
fn each_bad_document_is_a_typed_error_and_nothing_is_stored() {
    let (_dir, db) = open();
    db.upsert("c", (0..10).map(|n| crate::common::doc(n, DIM)).collect())
        .unwrap();
    let before = snapshot(&db);
    assert_eq!(before.len(), 10);

    let good = |n| crate::common::doc(n, DIM);
    type Check = fn(&StorageError) -> bool;
    let cases: Vec<(&str, Document, Check)> = vec![
        (
            "wrong dimension",
            Document::new("x", vec![0.0; DIM + 1]),
            |e| {
                matches!(
                    e,
                    StorageError::DimensionMismatch {
                        expected: 8,
                        got: 9,
                        ..
                    }
                )
            },
        ),
        (
            "nan",
            Document::new("x", {
                let mut v = vec![0.5; DIM];
                v[3] = f32::NAN;
                v
            }),
            |e| matches!(e, StorageError::NonFiniteVector { index: 3, .. }),
        ),
        (
            "infinity",
            Document::new("x", {
                let mut v = vec![0.5; DIM];
                v[0] = f32::INFINITY;
                v
            }),
            |e| matches!(e, StorageError::NonFiniteVector { index: 0, .. }),
        ),
        ("empty id", Document::new("", vec![0.0; DIM]), |e| {
            matches!(e, StorageError::InvalidId { .. })
        }),
        (
            "long id",
            Document::new("x".repeat(513), vec![0.0; DIM]),
            |e| matches!(e, StorageError::InvalidId { .. }),
        ),
        (
            "metadata array",
            good(100).with_metadata(json!([1, 2])),
            |e| matches!(e, StorageError::InvalidMetadata { .. }),
        ),
        (
            "metadata string",
            good(100).with_metadata(json!("s")),
            |e| matches!(e, StorageError::InvalidMetadata { .. }),
        ),
        ("text too long", good(100).with_text("y".repeat(101)), |e| {
            matches!(
                e,
                StorageError::TextTooLong {
                    len: 101,
                    limit: 100,
                    ..
                }
            )
        }),
        (
            "no vector",
            Document {
                id: Some("x".into()),
                ..Default::default()
            },
            |e| matches!(e, StorageError::MissingVector { .. }),
        ),
    ];
    for (what, bad, check) in cases {
        // The bad document sits in the middle of a batch that also replaces existing documents
        // and adds new ones: none of it may land.
        let mut batch: Vec<Document> = (5..8).map(|n| good(n).with_text("changed")).collect();
        batch.push(good(50));
        batch.push(bad);
        batch.push(good(51));
        let err = db.upsert("c", batch).expect_err(what);
        assert!(err.is_caller_fault(), "{what}: {err}");
        let err = storage_err(err);
        assert!(check(&err), "{what}: unexpected error {err:?}");
        assert_eq!(snapshot(&db), before, "{what}: the collection changed");
        assert_eq!(db.count("c").unwrap(), 10, "{what}");
    }

    // Duplicate ids inside one batch.
    let err = db
        .upsert("c", vec![good(1), good(60), good(1)])
        .unwrap_err();
    assert!(
        matches!(storage_err(err), StorageError::DuplicateId { ref id } if id == "doc-00000001")
    );
    assert_eq!(snapshot(&db), before);

    // Unknown collection.
    let err = db.upsert("nope", vec![good(1)]).unwrap_err();
    assert!(matches!(
        storage_err(err),
        StorageError::CollectionNotFound(_)
    ));
    for e in [
        db.get("nope", &["a"]).unwrap_err(),
        db.delete("nope", &["a"]).unwrap_err(),
        db.count("nope").unwrap_err(),
        db.collection_info("nope").unwrap_err(),
        db.drop_collection("nope").unwrap_err(),
        db.scroll("nope", None, 1).unwrap_err(),
    ] {
        assert!(matches!(
            storage_err(e),
            StorageError::CollectionNotFound(_)
        ));
    }
    assert_eq!(snapshot(&db), before);
}

#[test]
fn collection_arguments_are_validated() {
    let (_dir, db) = open();
    for name in ["", "has space", "slash/", "ünïcode", &"n".repeat(129)] {
        let err = db
            .create_collection(CollectionSpec::new(name, 4, Metric::L2))
            .unwrap_err();
        assert!(
            matches!(storage_err(err), StorageError::InvalidCollectionName { .. }),
            "{name:?}"
        );
    }
    for dim in [0, 65_537] {
        let err = db
            .create_collection(CollectionSpec::new("d", dim, Metric::L2))
            .unwrap_err();
        assert!(matches!(
            storage_err(err),
            StorageError::InvalidDimension { .. }
        ));
    }
    let err = db
        .create_collection(CollectionSpec::new("c", 4, Metric::Dot))
        .unwrap_err();
    assert!(matches!(
        storage_err(err),
        StorageError::CollectionExists(_)
    ));
    let err = db.scroll("c", None, 0).unwrap_err();
    assert!(matches!(storage_err(err), StorageError::InvalidArgument(_)));
    assert_eq!(db.list_collections().len(), 1);
}

/// Error messages that quote caller input quote at most a bounded part of it: a 16 KiB
/// collection name, id, filter field or task name never comes back whole (a gRPC client
/// refuses metadata that large).
#[test]
fn error_messages_echo_a_bounded_part_of_the_input() {
    let (_dir, db) = open();
    let huge = "n".repeat(16 * 1024);
    let v = vec![0.5; DIM];
    let check = |what: &str, r: latentdb::Result<()>| {
        let e = r.expect_err(what);
        let shown = e.to_string();
        assert!(
            shown.len() < 1024,
            "{what}: a {}-byte message: {}…",
            shown.len(),
            &shown[..200]
        );
        assert!(e.is_caller_fault(), "{what}: {e}");
    };
    let name = huge.as_str();
    check(
        "upsert",
        db.upsert(name, vec![Document::new("a", v.clone())])
            .map(drop),
    );
    check(
        "upsert_bound",
        db.upsert_bound(name, 1, vec![], None).map(drop),
    );
    check("collection_uid", db.collection_uid(name).map(drop));
    check(
        "search",
        db.search(name, &latentdb::SearchRequest::vector(v.clone()))
            .map(drop),
    );
    check("get", db.get(name, &["a"]).map(drop));
    check("delete", db.delete(name, &["a"]).map(drop));
    check("delete_all", db.delete_all(name).map(drop));
    check(
        "delete_by_filter",
        db.delete_by_filter(name, &json!({"a": 1})).map(drop),
    );
    check("count", db.count(name).map(drop));
    check("scroll", db.scroll(name, None, 10).map(drop));
    check("info", db.collection_info(name).map(drop));
    check("index_stats", db.index_stats(name).map(drop));
    check("compact", db.compact(name).map(drop));
    check("drop", db.drop_collection(name));
    check("set_task", db.set_task(name, "t", "x"));
    check(
        "create",
        db.create_collection(CollectionSpec::new(name, DIM, Metric::L2))
            .map(drop),
    );
    // Inputs inside a request to an existing collection.
    let mut zero = Document::new("z".repeat(200), vec![0.0; DIM]);
    zero.metadata = json!({});
    check("zero vector", db.upsert("c", vec![zero]).map(drop));
    let mut field = serde_json::Map::new();
    field.insert(huge.clone(), json!({"$bogus": 1}));
    check(
        "filter field",
        db.search(
            "c",
            &latentdb::SearchRequest {
                filter: Some(serde_json::Value::Object(field.clone())),
                ..latentdb::SearchRequest::vector(v.clone())
            },
        )
        .map(drop),
    );
    check(
        "delete filter field",
        db.delete_by_filter("c", &serde_json::Value::Object(field))
            .map(drop),
    );
}
