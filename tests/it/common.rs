//! Helpers shared by the integration tests.
#![allow(dead_code)]

use latentdb::Document;
use serde_json::json;

/// A deterministic vector for `(seed, dim)`.
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A document whose whole content is a function of its id number, so that a reader can check
/// it is intact.
pub fn doc(n: u64, dim: usize) -> Document {
    Document::new(format!("doc-{n:08}"), vector(n, dim))
        .with_text(format!("text of document {n}"))
        .with_metadata(json!({"n": n, "even": n.is_multiple_of(2), "tag": format!("t{}", n % 7)}))
}

/// Checks that a stored record is exactly what [`doc`] wrote.
pub fn assert_intact(r: &latentdb::Record, n: u64, dim: usize) {
    assert_eq!(r.id, format!("doc-{n:08}"));
    assert_eq!(
        r.text.as_deref(),
        Some(format!("text of document {n}").as_str())
    );
    assert_eq!(r.metadata["n"], json!(n));
    assert_eq!(r.metadata["tag"], json!(format!("t{}", n % 7)));
    let want = vector(n, dim);
    assert_eq!(r.vector.len(), dim);
    for (a, b) in r.vector.iter().zip(&want) {
        assert!(
            (a - b).abs() <= 1e-6 * b.abs().max(1.0),
            "vector of {} differs",
            r.id
        );
    }
}

/// The `spamassassin-subjects` BEIR dataset checked into the repository.
pub fn spam_dataset_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/datasets/spamassassin-subjects")
}

/// Fetches the default model (all-MiniLM-L6-v2) into the model cache if it is absent; a fetch
/// failure fails the test, it is never skipped silently.
pub fn ensure_default_model() {
    use latentdb::embed::{ModelSpec, fetch_default, models_dir};
    if ModelSpec::Default.resolve().is_err() {
        fetch_default(&models_dir()).expect("fetching the default model");
    }
}

/// The files of a closed database directory: (path relative to it, contents).
type DirImage = Vec<(std::path::PathBuf, Vec<u8>)>;

/// Reads every file under `dir` (recursively) into memory.
fn read_tree(dir: &std::path::Path) -> DirImage {
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(rel);
            } else {
                assert!(kind.is_file(), "{rel:?} is neither a file nor a directory");
                out.push((rel.clone(), std::fs::read(dir.join(&rel)).unwrap()));
            }
        }
    }
    out
}

/// Writes `image` under `dir` (which exists).
fn write_tree(dir: &std::path::Path, image: &DirImage) {
    for (rel, bytes) in image {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}

/// A fresh database holding collection `spam` on the default model (with its lexical index)
/// and the 1,903 documents of `spamassassin-subjects` loaded with
/// [`latentdb::eval::Evaluator::load_beir_corpus`], in its own temporary directory.
///
/// Embedding the corpus is most of the cost of the tests that use it, so it is done once per
/// test process: the first caller loads it into a database, closes it and keeps its files in
/// memory; every caller gets its own copy of those files, opened afresh (nothing a test does
/// reaches another's copy). The load is checked here: 1,903 documents loaded and counted.
pub fn spam_database() -> (tempfile::TempDir, latentdb::Database) {
    use latentdb::embed::ModelSpec;
    use latentdb::eval::{BeirDataset, Evaluator};
    use latentdb::{CollectionSpec, Database, Metric};
    static IMAGE: std::sync::OnceLock<DirImage> = std::sync::OnceLock::new();
    let image = IMAGE.get_or_init(|| {
        ensure_default_model();
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path()).unwrap();
            db.create_collection_with_model(
                CollectionSpec::new("spam", 0, Metric::Cosine),
                &ModelSpec::Default,
            )
            .unwrap();
            let ds = BeirDataset::open(spam_dataset_dir()).unwrap();
            let t = std::time::Instant::now();
            let n = Evaluator::new(&db)
                .load_beir_corpus("spam", &ds, &|_| {})
                .unwrap();
            assert_eq!(n, 1903);
            assert_eq!(db.count("spam").unwrap(), 1903);
            eprintln!(
                "spamassassin-subjects loaded (shared by this process's tests) in {:.1}s",
                t.elapsed().as_secs_f64()
            );
        }
        // Closed: its files are the whole database.
        read_tree(dir.path())
    });
    let dir = tempfile::tempdir().unwrap();
    write_tree(dir.path(), image);
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.count("spam").unwrap(), 1903);
    (dir, db)
}
