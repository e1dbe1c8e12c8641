//! Which models a database loads, and how many: the model path policy
//! (`DatabaseOptions::allow_model_paths`) and the bounded model cache
//! (`DatabaseOptions::max_loaded_models`), with copies of the tiny random-weight checkpoint in
//! `tests/fixtures/nvembed-tiny`.

use std::path::{Path, PathBuf};

use latentdb::embed::ModelSpec;
use latentdb::{CollectionSpec, Database, DatabaseOptions, ErrorKind, Metric, SearchRequest};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nvembed-tiny")
}

/// Copies the tiny model into `root/name`.
fn install(root: &Path, name: &str) -> PathBuf {
    let to = root.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(tiny()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec::new(name, 0, Metric::Cosine)
}

/// With model paths not allowed (the server's default), a caller may name only models under
/// the models directory, by a relative path without `..`; the refusal is a caller fault with
/// a bounded message, and nothing is created.
#[test]
fn without_model_paths_only_models_under_the_root_load() {
    let dir = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    install(models.path(), "tiny");
    let elsewhere = install(outside.path(), "tiny");
    let db = Database::open_with(
        dir.path().join("db"),
        DatabaseOptions::new()
            .models_dir(models.path())
            .allow_model_paths(false),
    )
    .unwrap();

    db.create_collection_with_model(spec("ok"), &ModelSpec::Dir("tiny".into()))
        .unwrap();
    assert!(db.embedder("ok").unwrap().is_some());

    let long = "d".repeat(10_000);
    for bad in [
        elsewhere.clone(),
        models.path().join("tiny"),
        PathBuf::from("../tiny"),
        PathBuf::from("tiny/../tiny"),
        PathBuf::from(&long),
    ] {
        let e = db
            .create_collection_with_model(spec("bad"), &ModelSpec::Dir(bad.clone()))
            .unwrap_err();
        if bad.to_string_lossy() == long {
            // A plain relative name: allowed, but no such model can exist.
            assert!(
                matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidArgument),
                "{e}"
            );
        } else {
            assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{bad:?}: {e}");
        }
        assert!(e.is_caller_fault());
        assert!(
            e.to_string().len() < 600,
            "unbounded message: {} bytes",
            e.to_string().len()
        );
        assert!(db.collection_info("bad").is_err());
    }
    // Offering a model for a collection follows the same policy.
    let e = db
        .check_model("ok", &ModelSpec::Dir(elsewhere))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    db.check_model("ok", &ModelSpec::Dir("tiny".into()))
        .unwrap();

    // The library's default allows any directory.
    let db2 = Database::open(dir.path().join("db2")).unwrap();
    db2.create_collection_with_model(spec("any"), &ModelSpec::Dir(tiny()))
        .unwrap();
}

/// A model directory the caller names that does not exist is their mistake (not found), not
/// an internal error.
#[test]
fn a_missing_model_directory_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let e = db
        .create_collection_with_model(spec("m"), &ModelSpec::Dir(dir.path().join("nope")))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// At most `max_loaded_models` models stay loaded: loading another evicts the least recently
/// used idle one (its collection loads it again on its next use), and when every loaded
/// model is held by a caller, the load is refused as resource exhausted.
#[test]
fn the_model_cache_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let db = Database::open_with(
        dir.path().join("db"),
        DatabaseOptions::new().max_loaded_models(2),
    )
    .unwrap();
    for name in ["a", "b", "c"] {
        let path = install(models.path(), name);
        db.create_collection_with_model(spec(name), &ModelSpec::Dir(path))
            .unwrap();
    }
    // Three models through a cache of two: each use after an eviction loads again.
    for _ in 0..2 {
        for name in ["a", "b", "c"] {
            let hits = db.search(name, &SearchRequest::text("hello")).unwrap();
            assert!(hits.is_empty());
        }
    }
    // Two models held (in use), a third cannot be loaded.
    let held_a = db.embedder("a").unwrap().unwrap();
    let held_b = db.embedder("b").unwrap().unwrap();
    let e = db.search("c", &SearchRequest::text("hello")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}");
    // Held models stay usable; once one is released, the third loads.
    db.search("a", &SearchRequest::text("hello")).unwrap();
    drop(held_b);
    db.search("c", &SearchRequest::text("hello")).unwrap();
    drop(held_a);
}

/// Task names come from the caller: an unknown one is quoted bounded, and a collection stores
/// only bounded task names and instructions.
#[test]
fn task_names_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection_with_model(spec("t"), &ModelSpec::Dir(tiny()))
        .unwrap();
    let huge = "t".repeat(16 * 1024);
    let e = db
        .search(
            "t",
            &SearchRequest {
                task: Some(huge.clone()),
                ..SearchRequest::text("q")
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().len() < 2048, "{} bytes", e.to_string().len());
    let e = db.set_task("t", &huge, "x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().len() < 1024, "{} bytes", e.to_string().len());
    let e = db.set_task("t", "long", &huge).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    db.set_task("t", "short", "Given a query, find the answer")
        .unwrap();
    db.search(
        "t",
        &SearchRequest {
            task: Some("short".into()),
            ..SearchRequest::text("q")
        },
    )
    .unwrap();
}
