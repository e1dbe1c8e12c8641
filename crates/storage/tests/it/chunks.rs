//! `Storage::chunk_ids`: the chunks of a parent document, found by a key-only prefix scan.

use latentdb_storage::{CollectionSpec, Document, Metric, Storage, StorageOptions};
use serde_json::json;

#[test]
fn chunks_of_a_parent_are_found_and_deleted_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::open(dir.path(), StorageOptions::default()).unwrap();
    s.create_collection(CollectionSpec::new("c", 1, Metric::L2))
        .unwrap();
    let doc = |id: &str, meta| Document::new(id, vec![1.0]).with_metadata(meta);
    s.upsert(
        "c",
        vec![
            doc("a", json!({})),
            doc("a#0", json!({"parent": "a"})),
            doc("a#1", json!({"parent": "a"})),
            doc("a#10", json!({"parent": "a"})),
            // Look-alikes that are not chunks of "a".
            doc("a#", json!({"parent": "a"})),
            doc("a#2", json!({"parent": "b"})),
            doc("a#3", json!({})),
            doc("ab#0", json!({"parent": "ab"})),
            doc("a0", json!({"parent": "a"})),
            // Chunks of a parent whose id has a '#' of its own.
            doc("a#1#0", json!({"parent": "a#1"})),
        ],
        None,
    )
    .unwrap();
    assert_eq!(s.chunk_ids("c", "a").unwrap(), ["a#0", "a#1", "a#10"]);
    assert_eq!(s.chunk_ids("c", "a#1").unwrap(), ["a#1#0"]);
    assert!(s.chunk_ids("c", "zzz").unwrap().is_empty());
    assert!(s.chunk_ids("c", "").unwrap().is_empty());

    let mut ids = vec!["a".to_owned()];
    ids.extend(s.chunk_ids("c", "a").unwrap());
    let out = s.delete("c", &ids, None).unwrap();
    assert_eq!(out.deleted, ["a", "a#0", "a#1", "a#10"]);
    let left: Vec<String> = s
        .scroll("c", None, 100)
        .unwrap()
        .records
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, ["a#", "a#1#0", "a#2", "a#3", "a0", "ab#0"]);
    assert!(s.chunk_ids("c", "a").unwrap().is_empty());
}
