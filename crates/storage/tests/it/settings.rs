//! Collection settings stored with the collection.

/// Lexical settings are stored with the collection, survive a reopen, and leave the other
/// settings alone; a spec written before the field existed reads as `null`.
#[test]
fn lexical_settings_are_durable_and_independent() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = latentdb_storage::Storage::open(dir.path(), Default::default()).unwrap();
        let mut spec = latentdb_storage::CollectionSpec::new("c", 2, latentdb_storage::Metric::L2);
        spec.index = serde_json::json!({"m": 8});
        let info = s.create_collection(spec).unwrap();
        assert!(info.lexical.is_null());
        let info = s
            .update_lexical_settings("c", serde_json::json!({"enabled": false}))
            .unwrap();
        assert_eq!(info.lexical["enabled"], false);
        assert_eq!(info.index["m"], 8);
        let err = s
            .update_lexical_settings("nope", serde_json::Value::Null)
            .unwrap_err();
        assert_eq!(err.kind(), latentdb_types::ErrorKind::NotFound);
    }
    let s = latentdb_storage::Storage::open(dir.path(), Default::default()).unwrap();
    let info = s.collection_info("c").unwrap();
    assert_eq!(info.lexical["enabled"], false);
    assert_eq!(info.index["m"], 8);
}
