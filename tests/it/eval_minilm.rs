//! End to end with the real all-MiniLM-L6-v2 on `tests/fixtures/datasets/spamassassin-subjects`:
//! the ANN evaluation is within 0.01 nDCG@10 of exact search, and exact search within 0.005
//! of the sentence-transformers reference. The corpus is embedded once per test process and
//! shared by copy ([`crate::common::spam_database`]); that `evaluate_beir` loads the corpus into
//! an empty collection itself is checked by `ingest::` and the CLI's `eval_fusion` tests.

use latentdb::eval::{BeirDataset, EvalOptions, Evaluator};

#[test]
fn spamassassin_subjects_matches_the_reference() {
    let root = crate::common::spam_dataset_dir();
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("reference-minilm-test.json")).unwrap())
            .unwrap();
    let reference = reference["ndcg@10"].as_f64().unwrap();
    // Collection `spam` on the default model, the 1,903 documents loaded.
    let (_dir, db) = crate::common::spam_database();
    let ds = BeirDataset::open(&root).unwrap();
    // Dense: the embedder against the reference (text queries default to hybrid).
    let dense = EvalOptions {
        mode: Some(latentdb::SearchMode::Dense),
        ..EvalOptions::default()
    };
    let ann = Evaluator::new(&db)
        .evaluate_beir("spam", &ds, &dense, &|_| {})
        .unwrap();
    assert_eq!(ann.ingested, 0, "the corpus was loaded already");
    assert_eq!(db.count("spam").unwrap(), 1903);
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
        "ann {:?} qps {:.0}; exact {:?} qps {:.0}",
        ann.metrics, ann.qps, exact.metrics, exact.qps
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
