//! Collections and documents through the public API: lifecycle, replace, delete, scroll,
//! durability across reopen.

use latentdb::{CollectionSpec, Database, DatabaseOptions, Document, Durability, Metric};
use serde_json::json;

#[test]
fn collection_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let a = db
        .create_collection(CollectionSpec::new("alpha", 4, Metric::Cosine))
        .unwrap();
    assert_eq!(
        (a.count, a.dimension, a.metric, a.format_version),
        (0, 4, Metric::Cosine, 2)
    );
    assert!(a.created_ms > 1_600_000_000_000);
    db.create_collection(CollectionSpec::new("beta.v2", 3, Metric::L2))
        .unwrap();
    let names: Vec<_> = db.list_collections().into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["alpha", "beta.v2"]);

    db.upsert(
        "alpha",
        (0..100).map(|n| crate::common::doc(n, 4)).collect(),
    )
    .unwrap();
    assert_eq!(db.collection_info("alpha").unwrap().count, 100);
    db.drop_collection("alpha").unwrap();
    assert!(db.collection_info("alpha").is_err());
    // The name can be reused, and the new collection starts empty.
    db.create_collection(CollectionSpec::new("alpha", 2, Metric::Dot))
        .unwrap();
    assert_eq!(db.count("alpha").unwrap(), 0);
    assert!(db.get("alpha", &["doc-00000001"]).unwrap()[0].is_none());
    drop(db);

    let db = Database::open(dir.path()).unwrap();
    let info = db.collection_info("alpha").unwrap();
    assert_eq!(
        (info.dimension, info.metric, info.count),
        (2, Metric::Dot, 0)
    );
    assert_eq!(db.list_collections().len(), 2);
}

#[test]
fn dropping_a_collection_frees_its_space() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("big", 256, Metric::L2))
        .unwrap();
    for chunk in 0..10u64 {
        db.upsert(
            "big",
            (chunk * 1000..(chunk + 1) * 1000)
                .map(|n| crate::common::doc(n, 256))
                .collect(),
        )
        .unwrap();
    }
    let full = db.storage_size().unwrap();
    db.drop_collection("big").unwrap();
    db.create_collection(CollectionSpec::new("big", 256, Metric::L2))
        .unwrap();
    // Writing the same amount again reuses the freed space instead of doubling the file.
    for chunk in 0..10u64 {
        db.upsert(
            "big",
            (chunk * 1000..(chunk + 1) * 1000)
                .map(|n| crate::common::doc(n, 256))
                .collect(),
        )
        .unwrap();
    }
    let after = db.storage_size().unwrap();
    assert!(
        after < full * 17 / 10,
        "space not reclaimed: {full} bytes, then {after}"
    );
}

#[test]
fn replace_delete_get_and_scroll() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("c", 4, Metric::Cosine))
        .unwrap();
    let ids = db
        .upsert("c", (0..25).map(|n| crate::common::doc(n, 4)).collect())
        .unwrap()
        .ids;
    assert_eq!(ids.len(), 25);

    // Replace: same id, new content; count unchanged.
    db.upsert(
        "c",
        vec![
            Document::new("doc-00000003", vec![1.0, 0.0, 0.0, 0.0]).with_metadata(json!({"v": 2})),
        ],
    )
    .unwrap();
    assert_eq!(db.count("c").unwrap(), 25);
    let r = db.get("c", &["doc-00000003"]).unwrap().remove(0).unwrap();
    assert_eq!(r.metadata, *json!({"v": 2}).as_object().unwrap());
    assert_eq!(r.text, None);
    assert_eq!(r.vector, vec![1.0, 0.0, 0.0, 0.0]);

    // Generated ids are unique and time-ordered.
    let gen_ids = db
        .upsert(
            "c",
            vec![
                Document {
                    vector: Some(vec![0.5; 4]),
                    ..Default::default()
                };
                3
            ],
        )
        .unwrap()
        .ids;
    assert_eq!(gen_ids.len(), 3);
    assert!(gen_ids[0] < gen_ids[1] && gen_ids[1] < gen_ids[2]);
    assert_eq!(db.count("c").unwrap(), 28);

    // Delete: unknown ids are ignored, repeated ids counted once.
    let deleted = db
        .delete("c", &["doc-00000001", "doc-00000001", "nope", &gen_ids[0]])
        .unwrap();
    assert_eq!(deleted.len(), 2);
    assert_eq!(db.count("c").unwrap(), 26);
    assert!(db.get("c", &["doc-00000001"]).unwrap()[0].is_none());

    // Scroll visits every document once, in id order, across pages.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = db.scroll("c", cursor.as_deref(), 7).unwrap();
        assert!(page.records.len() <= 7);
        seen.extend(page.records.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 26);
}

#[test]
fn writes_survive_a_drop_without_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        db.create_collection(CollectionSpec::new("c", 16, Metric::L2))
            .unwrap();
        db.upsert("c", (0..500).map(|n| crate::common::doc(n, 16)).collect())
            .unwrap();
        db.delete("c", &["doc-00000007"]).unwrap();
        // Leak it: no destructor, no final flush. Only what was acknowledged counts.
        std::mem::forget(db);
    }
    // The leaked handle still holds the lock within this process; a real crash releases it.
    // Reopening through a child is what tests/crash.rs does; here we check the files alone by
    // copying the directory (the lock does not travel).
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let db = Database::open(copy.path()).unwrap();
    assert_eq!(db.count("c").unwrap(), 499);
    for n in 0..500 {
        let r = db.get("c", &[format!("doc-{n:08}")]).unwrap().remove(0);
        if n == 7 {
            assert!(r.is_none());
        } else {
            crate::common::assert_intact(&r.unwrap(), n, 16);
        }
    }
}

#[test]
fn buffered_durability_is_flushed_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(
        dir.path(),
        DatabaseOptions::new().durability(Durability::Buffered),
    )
    .unwrap();
    db.create_collection(CollectionSpec::new("c", 8, Metric::Dot))
        .unwrap();
    db.upsert("c", (0..100).map(|n| crate::common::doc(n, 8)).collect())
        .unwrap();
    db.flush().unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let db2 = Database::open(copy.path()).unwrap();
    assert_eq!(db2.count("c").unwrap(), 100);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A filter that matches every document never deletes them: it is an invalid argument, and
/// deleting everything takes `delete_all`.
#[test]
fn an_empty_delete_filter_is_refused_and_delete_all_is_explicit() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("c", 4, Metric::L2))
        .unwrap();
    db.upsert("c", (0..50).map(|n| crate::common::doc(n, 4)).collect())
        .unwrap();
    for filter in [
        json!({}),
        json!(null),
        json!({"$and": []}),
        json!({"$and": [{}]}),
    ] {
        let e = db.delete_by_filter("c", &filter).unwrap_err();
        assert_eq!(
            e.kind(),
            latentdb::ErrorKind::InvalidArgument,
            "{filter}: {e}"
        );
        // Either refused as matching everything, or (null, an empty `$and`) as malformed.
        assert!(
            e.to_string().contains("delete_all") || matches!(e, latentdb::Error::InvalidFilter(_)),
            "{filter}: {e}"
        );
        if filter == json!({}) {
            assert!(e.to_string().contains("delete_all"), "{e}");
        }
        assert_eq!(db.count("c").unwrap(), 50, "{filter} deleted documents");
    }
    // A real filter still deletes what it matches.
    assert_eq!(
        db.delete_by_filter("c", &json!({"even": true}))
            .unwrap()
            .len(),
        25
    );
    assert_eq!(db.delete_all("c").unwrap(), 25);
    assert_eq!(db.count("c").unwrap(), 0);
    assert!(
        db.search("c", &latentdb::SearchRequest::vector(vec![0.1; 4]))
            .unwrap()
            .is_empty()
    );
    assert_eq!(db.delete_all("c").unwrap(), 0);
    let e = db.delete_all("nope").unwrap_err();
    assert_eq!(e.kind(), latentdb::ErrorKind::NotFound);
    // The collection stays, and takes writes.
    db.upsert("c", vec![crate::common::doc(1, 4)]).unwrap();
    assert_eq!(db.count("c").unwrap(), 1);
}
