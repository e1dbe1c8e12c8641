//! End to end with the real all-MiniLM-L6-v2 on `tests/fixtures/datasets/spamassassin-subjects`:
//! the ANN evaluation is within 0.01 nDCG@10 of exact search, and exact search within 0.005
//! of the sentence-transformers reference. Fetches the default model into the model cache if
//! it is absent (a fetch failure fails the test; it is never skipped silently).

use std::path::Path;

use latentdb::embed::{ModelSpec, fetch_default, models_dir};
use latentdb::eval::{BeirDataset, EvalOptions, Evaluator};
use latentdb::{CollectionSpec, Database, Metric};

#[test]
fn spamassassin_subjects_matches_the_reference() {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datasets/spamassassin-subjects");
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("reference-minilm-test.json")).unwrap())
            .unwrap();
    let reference = reference["ndcg@10"].as_f64().unwrap();
    if ModelSpec::Default.resolve().is_err() {
        fetch_default(&models_dir()).expect("fetching the default model");
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection_with_model(
        CollectionSpec::new("spam", 0, Metric::Cosine),
        &ModelSpec::Default,
    )
    .unwrap();
    let ds = BeirDataset::open(&root).unwrap();
    // Dense: the embedder against the reference (text queries default to hybrid).
    let dense = EvalOptions {
        mode: Some(latentdb::SearchMode::Dense),
        ..EvalOptions::default()
    };
    let ann = Evaluator::new(&db)
        .evaluate_beir("spam", &ds, &dense, &|_| {})
        .unwrap();
    assert_eq!(ann.ingested, 1903);
    let exact = Evaluator::new(&db)
        .evaluate_beir(
            "spam",
            &ds,
            &EvalOptions {
                exact: true,
                ..dense.clone()
            },
            &|_| {},
        )
        .unwrap();
    assert_eq!(exact.ingested, 0, "the second run reuses the collection");
    eprintln!(
        "ann {:?} qps {:.0}; exact {:?} qps {:.0}; ingest {:.1}s",
        ann.metrics, ann.qps, exact.metrics, exact.qps, ann.ingest_seconds
    );
    assert_eq!(ann.metrics.queries, 571);
    assert!(
        (ann.metrics.ndcg_at_10 - exact.metrics.ndcg_at_10).abs() <= 0.01,
        "ANN {} vs exact {}",
        ann.metrics.ndcg_at_10,
        exact.metrics.ndcg_at_10
    );
    assert!(
        (exact.metrics.ndcg_at_10 - reference).abs() <= 0.005,
        "exact {} vs reference {reference}",
        exact.metrics.ndcg_at_10
    );
}
