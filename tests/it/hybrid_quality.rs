//! Hybrid retrieval quality with the real all-MiniLM-L6-v2 on
//! `tests/fixtures/datasets/spamassassin-subjects`: on the test split the lexical leg reaches
//! its BM25 level and hybrid search with the default settings beats both legs; a fusion fitted
//! on the train split beats both legs there and is what hybrid search then runs. The corpus is
//! embedded once per test process and shared by copy ([`crate::common::spam_database`]).

use latentdb::eval::{BeirDataset, EvalOptions, EvalReport, Evaluator};
use latentdb::tune::{FusionFitOptions, Tuner};
use latentdb::{DEFAULT_FUSION, Database, SearchMode};

/// A database with collection `spam` on the default model and a lexical index, corpus loaded
/// (1,903 documents, checked by `spam_database`).
fn loaded() -> (tempfile::TempDir, Database, BeirDataset) {
    let (dir, db) = crate::common::spam_database();
    let ds = BeirDataset::open(crate::common::spam_dataset_dir()).unwrap();
    (dir, db, ds)
}

fn eval(db: &Database, ds: &BeirDataset, split: &str, mode: Option<SearchMode>) -> EvalReport {
    let opts = EvalOptions {
        split: split.into(),
        mode,
        ..EvalOptions::default()
    };
    Evaluator::new(db)
        .evaluate_beir("spam", ds, &opts, &|_| {})
        .unwrap()
}

/// One test, so that the corpus is embedded once: the test split with the library defaults
/// first, then a fusion fitted on train (which changes the collection's default).
#[test]
fn hybrid_beats_both_legs_and_a_fusion_fitted_on_train_beats_them_there() {
    let (_dir, db, ds) = loaded();

    // The test split with the default settings.
    assert_eq!(db.lexical_settings("spam").unwrap().fusion, DEFAULT_FUSION);
    let dense = eval(&db, &ds, "test", Some(SearchMode::Dense));
    let lexical = eval(&db, &ds, "test", Some(SearchMode::Lexical));
    let hybrid = eval(&db, &ds, "test", None);
    eprintln!(
        "test nDCG@10: dense {:.4} lexical {:.4} hybrid {:.4}",
        dense.metrics.ndcg_at_10, lexical.metrics.ndcg_at_10, hybrid.metrics.ndcg_at_10
    );
    assert_eq!(
        (
            dense.mode.as_str(),
            lexical.mode.as_str(),
            hybrid.mode.as_str()
        ),
        ("dense", "lexical", "hybrid"),
        "no mode asked: the default resolves to hybrid"
    );
    assert_eq!(hybrid.metrics.queries, 571);
    assert_eq!(hybrid.ingested, 0);
    assert!(
        lexical.metrics.ndcg_at_10 >= 0.576,
        "lexical {}",
        lexical.metrics.ndcg_at_10
    );
    let h = hybrid.metrics.ndcg_at_10;
    assert!(h >= 0.60, "hybrid {h}");
    assert!(
        h > dense.metrics.ndcg_at_10 && h > lexical.metrics.ndcg_at_10,
        "hybrid {h} vs dense {} and lexical {}",
        dense.metrics.ndcg_at_10,
        lexical.metrics.ndcg_at_10
    );

    // A fusion fitted on train beats both legs there and becomes the default.
    let report = Tuner::new(&db)
        .fit_fusion("spam", &ds, "train", &FusionFitOptions::default())
        .unwrap();
    eprintln!(
        "train nDCG@10: dense {:.4} lexical {:.4} fitted {:.4} {:?} (default {:.4}); {}",
        report.dense.ndcg_at_10,
        report.lexical.ndcg_at_10,
        report.best.metrics.ndcg_at_10,
        report.best.params,
        report.previous.metrics.ndcg_at_10,
        report.decision
    );
    assert_eq!(report.split, "train");
    assert_eq!(report.queries, 1332);
    assert_eq!(report.ingested, 0);
    let best = report.best.metrics.ndcg_at_10;
    assert!(report.beats_both_legs && report.stored, "{report:?}");
    assert!(best > report.dense.ndcg_at_10 && best > report.lexical.ndcg_at_10);
    assert!(best >= report.previous.metrics.ndcg_at_10);
    for alt in &report.alternatives {
        assert!(alt.metrics.ndcg_at_10 <= best);
    }
    assert_eq!(
        db.lexical_settings("spam").unwrap().fusion,
        report.best.params
    );

    // The legs the fit scored offline are the ones the searches run: evaluating on train
    // reproduces the fit's figures, the fitted default's included.
    let hybrid = eval(&db, &ds, "train", None);
    let dense = eval(&db, &ds, "train", Some(SearchMode::Dense));
    let lexical = eval(&db, &ds, "train", Some(SearchMode::Lexical));
    for (online, offline, what) in [
        (hybrid.metrics, report.best.metrics, "hybrid"),
        (dense.metrics, report.dense, "dense"),
        (lexical.metrics, report.lexical, "lexical"),
    ] {
        assert!(
            (online.ndcg_at_10 - offline.ndcg_at_10).abs() < 1e-6
                && (online.recall_at_100 - offline.recall_at_100).abs() < 1e-6,
            "{what}: searched {online:?}, fitted {offline:?}"
        );
    }
}
