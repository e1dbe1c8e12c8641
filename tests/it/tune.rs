//! Tuning a collection's embedder with the real all-MiniLM-L6-v2 on
//! `tests/fixtures/datasets/spamassassin-subjects`: the end-to-end run (train on `qrels/train.tsv`,
//! evaluate on `qrels/test.tsv`, before/after printed), and the version life cycle (switch,
//! reopen, rollback) on a small slice. Fetches the default model if it is absent.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use latentdb::embed::{ModelSpec, fetch_default, models_dir};
use latentdb::eval::BeirDataset;
use latentdb::eval::metrics::ndcg_at;
use latentdb::tune::{
    PairSource, TrainPair, TrainTarget, TuneOptions, TuneProgress, TuneReport, Tuner, beir_pairs,
};
use latentdb::{CollectionSpec, Database, Document, ErrorKind, Metric, SearchMode, SearchRequest};

fn dataset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/datasets/spamassassin-subjects")
}

fn ensure_model() {
    if ModelSpec::Default.resolve().is_err() {
        fetch_default(&models_dir()).expect("fetching the default model");
    }
}

fn print_report(label: &str, r: &TuneReport, wall: f64) {
    eprintln!(
        "[{label}] train pairs {} held-out {} | nDCG@10 {:.4} -> {:.4} | recall@10 {:.4} -> {:.4} \
         | stage1 {} steps {:.1}s {:.1} pairs/s loss {:.3}->{:.3} | stage2 {} steps {:.1}s \
         {:.1} pairs/s loss {:.3}->{:.3} | encode {:.1}s | tune {:.1}s (wall {:.1}s) | \
         hard negs/pair {:.2}, dropped false negatives {} | {}",
        r.train_pairs,
        r.eval_pairs,
        r.before.ndcg_at_10,
        r.after.ndcg_at_10,
        r.before.recall_at_10,
        r.after.recall_at_10,
        r.stage1.steps,
        r.stage1.seconds,
        r.stage1.pairs_per_second,
        r.stage1.first_loss,
        r.stage1.last_loss,
        r.stage2.steps,
        r.stage2.seconds,
        r.stage2.pairs_per_second,
        r.stage2.first_loss,
        r.stage2.last_loss,
        r.encode_seconds,
        r.seconds,
        wall,
        r.hard_negatives_per_pair,
        r.dropped_false_negatives,
        r.decision,
    );
}

/// Tunes a collection of the whole corpus on `qrels/train.tsv`, evaluates on `qrels/test.tsv`
/// and prints the report.
fn tune_full_corpus(label: &str, opts: TuneOptions) -> TuneReport {
    ensure_model();
    let root = dataset_dir();
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("reference-minilm-test.json")).unwrap())
            .unwrap();
    let reference = reference["ndcg@10"].as_f64().unwrap();
    // Collection `spam` on the default model with the 1,903 documents loaded (embedded once
    // per test process, copied for each test).
    let (_dir, db) = crate::common::spam_database();
    assert_eq!(db.count("spam").unwrap(), 1903);
    let ds = BeirDataset::open(&root).unwrap();
    let train = beir_pairs(&ds, "train").unwrap();
    let test = beir_pairs(&ds, "test").unwrap();
    let opts = TuneOptions {
        eval_pairs: Some(test),
        ..opts
    };
    let t = Instant::now();
    let progress = |p: TuneProgress| match p {
        TuneProgress::Phase(s) => eprintln!("{:7.1}s {s}", t.elapsed().as_secs_f64()),
        TuneProgress::Step {
            stage,
            step,
            of,
            loss,
            pairs_per_second,
        } if step % 10 == 0 || step == of => eprintln!(
            "{:7.1}s stage {stage} step {step}/{of} loss {loss:.4} {pairs_per_second:.1} pairs/s",
            t.elapsed().as_secs_f64()
        ),
        TuneProgress::Step { .. } => {}
    };
    let report = Tuner::new(&db)
        .tune("spam", PairSource::Pairs(train), &opts, &progress)
        .unwrap();
    print_report(label, &report, t.elapsed().as_secs_f64());
    assert_eq!(report.before.queries, 571);
    assert_eq!(report.after.queries, 571);
    assert!(
        (report.before.ndcg_at_10 - reference).abs() <= 0.01,
        "before {} vs reference {reference}",
        report.before.ndcg_at_10
    );
    assert!(report.after.ndcg_at_10.is_finite() && report.after.ndcg_at_10 > 0.0);
    assert!(report.stage1.pairs_per_second > 0.0 && report.stage2.pairs_per_second > 0.0);
    assert!(report.hard_negatives_per_pair > 0.0);
    // The tuned version goes live exactly when it is better on the held-out queries.
    assert_eq!(
        report.switched,
        report.after.ndcg_at_10 > report.before.ndcg_at_10,
        "{}",
        report.decision
    );
    assert_eq!(report.version, 1);
    assert!(report.path.join("head.json").is_file());
    assert_eq!(
        report.path.join("lora.safetensors").is_file(),
        report.train == TrainTarget::HeadLora
    );
    // The live model is whichever won; text search works on it either way.
    let settings = db.embedder_settings("spam").unwrap().unwrap();
    assert!(settings.identity.head_sha256.is_some());
    let hits = db
        .search("spam", &SearchRequest::text("cheap mortgage rates"))
        .unwrap();
    assert_eq!(hits.len(), 10);
    report
}

/// Runs in CI: one backbone pass over the 1,903 e-mails (the token-state cache; the ingest's
/// is shared with the other tests of the process) and 60 head steps.
#[test]
fn tune_head_on_spamassassin_subjects() {
    tune_full_corpus(
        "head",
        TuneOptions {
            stage1_steps: 40,
            stage2_steps: 20,
            batch_size: 8,
            train_tokens: 16,
            lr: 5e-4,
            ..TuneOptions::default()
        },
    );
}

#[test]
#[ignore = "full corpus, three backbone passes over 1,903 e-mails and the backbone's forward and \
            backward in every step: about 11 min on 2 idle cores in release (much longer on \
            busy ones); run with --ignored"]
fn tune_head_lora_on_spamassassin_subjects() {
    let report = tune_full_corpus("head+lora", TuneOptions::head_lora());
    assert_eq!(report.train, TrainTarget::HeadLora);
}

/// A slice of the corpus: the positives of the first `n_train` training pairs (by query id)
/// and of every test pair, loaded into a new collection `slice` on the default model. Returns
/// the slice's training and test pairs.
fn slice_collection(db: &Database, n_train: usize) -> (Vec<TrainPair>, Vec<TrainPair>) {
    let ds = BeirDataset::open(dataset_dir()).unwrap();
    let train: Vec<TrainPair> = beir_pairs(&ds, "train")
        .unwrap()
        .into_iter()
        .take(n_train)
        .collect();
    let test = beir_pairs(&ds, "test").unwrap();
    let keep: HashSet<&str> = train
        .iter()
        .chain(&test)
        .map(|p| p.positive.as_str())
        .collect();
    let docs: Vec<Document> = ds
        .corpus()
        .unwrap()
        .map(Result::unwrap)
        .filter(|d| keep.contains(d.id.as_str()))
        .map(|d| Document {
            id: Some(d.id),
            text: Some(d.text),
            ..Document::default()
        })
        .collect();
    db.create_collection_with_model(
        CollectionSpec::new("slice", 0, Metric::Cosine),
        &ModelSpec::Default,
    )
    .unwrap();
    db.upsert("slice", docs).unwrap();
    (train, test)
}

/// nDCG@10 of each of `pairs`' queries (one relevant document each) by exact dense search of
/// the collection's live model.
fn per_query_ndcg(db: &Database, collection: &str, pairs: &[TrainPair]) -> Vec<f64> {
    pairs
        .iter()
        .map(|p| {
            let hits = db
                .search(
                    collection,
                    &SearchRequest {
                        exact: true,
                        mode: Some(SearchMode::Dense),
                        ..SearchRequest::text(p.query.clone())
                    },
                )
                .unwrap();
            let ranked: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            let judged = HashMap::from([(p.positive.clone(), 1)]);
            ndcg_at(&judged, &ranked, 10)
        })
        .collect()
}

/// The default tuning (`TuneOptions::head_lora()`, what `latentdb tune` runs) end to end on a
/// slice (971 e-mails: 400 training pairs, the 571 test queries held out) must gain, and the
/// tuner's held-out figures must be what exact dense search of the switched collection gives.
///
/// Measured on 2026-12-06 with training documents cut to 256 tokens, the default (release and
/// debug builds agree to 4 digits): seed 0 gains +2.26 nDCG@10 points (0.5984 -> 0.6210)
/// with a paired standard error of 0.73 points over the 571 queries, so the gain is 3.1
/// standard errors, and the test asserts at least 2 (and a floor of +1.0). Cut to 128 tokens
/// (the default before), seed 0 gained +1.46 (2.5 standard errors; seeds 1 and 2 +1.13 and
/// +1.11); cut to 64, +0.90 (1.4 standard errors). The seed spreads are in the README.
#[test]
fn default_tuning_gains_on_a_slice_of_spamassassin_subjects() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let (train, test) = slice_collection(&db, 400);
    assert_eq!(db.count("slice").unwrap(), 971);
    let before = per_query_ndcg(&db, "slice", &test);
    let opts = TuneOptions {
        eval_pairs: Some(test.clone()),
        ..TuneOptions::head_lora()
    };
    let t = Instant::now();
    let progress = |p: TuneProgress| {
        if let TuneProgress::Phase(s) = p {
            eprintln!("{:7.1}s {s}", t.elapsed().as_secs_f64());
        }
    };
    let report = Tuner::new(&db)
        .tune("slice", PairSource::Pairs(train), &opts, &progress)
        .unwrap();
    print_report(
        "default tuning, 971-doc slice",
        &report,
        t.elapsed().as_secs_f64(),
    );
    assert!(report.switched, "{}", report.decision);
    let after = per_query_ndcg(&db, "slice", &test);
    // The tuner's own held-out figures are the same measurement.
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!((mean(&before) - report.before.ndcg_at_10).abs() < 1e-3);
    assert!((mean(&after) - report.after.ndcg_at_10).abs() < 1e-3);
    let diffs: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let gain = mean(&diffs);
    let var = diffs.iter().map(|d| (d - gain).powi(2)).sum::<f64>() / (diffs.len() - 1) as f64;
    let stderr = (var / diffs.len() as f64).sqrt();
    eprintln!(
        "gain {:+.4} nDCG@10, paired standard error {stderr:.4} over {} queries",
        gain,
        diffs.len()
    );
    // Beyond noise: the gain must clear twice its paired standard error over the held-out
    // queries (a one-sided test at about 2%), as well as a floor.
    assert!(
        gain >= MIN_SLICE_GAIN && gain >= 2.0 * stderr,
        "gain {gain:.4} (paired standard error {stderr:.4}) is below {MIN_SLICE_GAIN} or two \
         standard errors"
    );
}

/// The smallest gain the slice test accepts (see its doc).
const MIN_SLICE_GAIN: f64 = 0.01;

/// A small slice of the corpus with its training pairs.
fn small_collection(db: &Database, name: &str, n_docs: usize) -> Vec<latentdb::tune::TrainPair> {
    let ds = BeirDataset::open(dataset_dir()).unwrap();
    let pairs = beir_pairs(&ds, "train").unwrap();
    let wanted: HashSet<String> = pairs
        .iter()
        .take(n_docs)
        .map(|p| p.positive.clone())
        .collect();
    let docs: Vec<Document> = ds
        .corpus()
        .unwrap()
        .map(Result::unwrap)
        .filter(|d| wanted.contains(&d.id))
        .map(|d| Document {
            id: Some(d.id),
            text: Some(d.text.chars().take(300).collect()),
            metadata: serde_json::json!({"k": 1}),
            vector: None,
        })
        .collect();
    db.create_collection_with_model(
        CollectionSpec::new(name, 0, Metric::Cosine),
        &ModelSpec::Default,
    )
    .unwrap();
    db.upsert(name, docs).unwrap();
    pairs
        .into_iter()
        .filter(|p| wanted.contains(&p.positive))
        .collect()
}

/// The largest componentwise difference of two vectors.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dimensions differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Vectors computed twice by the same model agree to this (batching changes the float
/// summation order, nothing else).
const SAME_MODEL: f32 = 1e-4;

/// Every stored document, in id order.
fn all_records(db: &Database, name: &str) -> Vec<latentdb::Record> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.scroll(name, after.as_deref(), 256).unwrap();
        out.extend(page.records);
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

/// Every stored vector is the live model's embedding of its document's text.
fn assert_vectors_are_the_live_models(db: &Database, name: &str) {
    let embedder = db.embedder(name).unwrap().unwrap();
    let records = all_records(db, name);
    let texts: Vec<String> = records.iter().map(|r| r.text.clone().unwrap()).collect();
    let fresh = embedder
        .embed(&texts, &latentdb::embed::EmbedOptions::default())
        .unwrap();
    for (r, v) in records.iter().zip(&fresh) {
        let d = max_diff(&r.vector, v);
        assert!(
            d < SAME_MODEL,
            "document {:?}: stored vector is not the live model's ({d})",
            r.id
        );
    }
}

/// Small, fast, forced tuning options.
fn small_opts() -> TuneOptions {
    TuneOptions {
        holdout: 0.3,
        stage1_steps: 4,
        stage2_steps: 2,
        batch_size: 4,
        hard_negatives: 3,
        lr: 1e-3,
        force: true,
        ..TuneOptions::default()
    }
}

#[test]
fn a_forced_version_goes_live_survives_reopen_and_rolls_back() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let (original, probe, vector_before) = {
        let db = Database::open(dir.path()).unwrap();
        let pairs = small_collection(&db, "small", 40);
        let original = db.embedder_settings("small").unwrap().unwrap();
        let probe = pairs[0].positive.clone();
        let vector_before = db.get("small", &[probe.as_str()]).unwrap()[0]
            .clone()
            .unwrap()
            .vector;
        let report = Tuner::new(&db)
            .tune(
                "small",
                PairSource::Pairs(pairs.clone()),
                &small_opts(),
                &|_| {},
            )
            .unwrap();
        print_report("small", &report, report.seconds);
        assert!(report.switched);
        let now = db.embedder_settings("small").unwrap().unwrap();
        assert_ne!(now.identity.head_sha256, original.identity.head_sha256);
        let h = Tuner::new(&db).history("small").unwrap();
        assert_eq!(h.live, vec![0, 1]);
        // The version directory was published whole: no temporary left beside it.
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("tune/small"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["history.json", "v1"]);
        // Stored vectors are the new model's: a document's own text finds it first.
        let doc = db.get("small", &[probe.as_str()]).unwrap()[0]
            .clone()
            .unwrap();
        assert!(max_diff(&doc.vector, &vector_before) > 10.0 * SAME_MODEL);
        assert_vectors_are_the_live_models(&db, "small");
        assert_eq!(doc.metadata["k"], 1, "metadata is kept");
        let hits = db
            .search("small", &SearchRequest::text(doc.text.clone().unwrap()))
            .unwrap();
        assert_eq!(hits[0].id, doc.id);
        (original, probe, vector_before)
    };
    // Reopen: the collection loads its tuned model from the database directory.
    let db = Database::open(dir.path()).unwrap();
    let embedder = db.embedder("small").unwrap().unwrap();
    assert!(embedder.head().is_some_and(|h| !h.is_identity()));
    let back = Tuner::new(&db).rollback("small", &|_| {}).unwrap();
    assert_eq!(back, 0);
    let now = db.embedder_settings("small").unwrap().unwrap();
    assert_eq!(now.identity, original.identity);
    let h = Tuner::new(&db).history("small").unwrap();
    assert_eq!(h.live, vec![0]);
    // Back on the original model, the original vectors come back.
    let restored = db.get("small", &[probe.as_str()]).unwrap()[0]
        .clone()
        .unwrap();
    let d = max_diff(&restored.vector, &vector_before);
    assert!(d < SAME_MODEL, "restored vector differs by {d}");
    assert_vectors_are_the_live_models(&db, "small");
    let e = Tuner::new(&db).rollback("small", &|_| {}).unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::FailedPrecondition,
        "nothing older: {e}"
    );
}

#[test]
fn bad_requests_are_refused() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let pairs = small_collection(&db, "small", 10);
    let lora = TuneOptions {
        lora_dropout: 1.0,
        ..TuneOptions::head_lora()
    };
    let e = Tuner::new(&db)
        .tune("small", PairSource::Pairs(pairs.clone()), &lora, &|_| {})
        .unwrap_err();
    assert!(e.is_caller_fault() && e.to_string().contains("LoRA"), "{e}");
    let none = Tuner::new(&db)
        .tune(
            "small",
            PairSource::Pairs(Vec::new()),
            &TuneOptions::default(),
            &|_| {},
        )
        .unwrap_err();
    assert!(none.is_caller_fault(), "{none}");
    let bad_margin = TuneOptions {
        margin: -0.5,
        ..TuneOptions::default()
    };
    let e = Tuner::new(&db)
        .tune("small", PairSource::Pairs(pairs), &bad_margin, &|_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("margin"), "{e}");
    db.create_collection(CollectionSpec::new("vectors", 3, Metric::Cosine))
        .unwrap();
    let e = Tuner::new(&db)
        .tune(
            "vectors",
            PairSource::SelfSupervised,
            &TuneOptions::default(),
            &|_| {},
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("no model"), "{e}");
    let e = Tuner::new(&db).rollback("small", &|_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    // Nothing was switched or recorded by the refused runs.
    assert_eq!(Tuner::new(&db).history("small").unwrap().live, vec![0]);
}

#[test]
fn self_supervised_pairs_train_on_the_collection_text() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    small_collection(&db, "small", 16);
    let opts = TuneOptions {
        holdout: 0.25,
        stage1_steps: 2,
        stage2_steps: 1,
        batch_size: 4,
        hard_negatives: 2,
        ..TuneOptions::default()
    };
    let report = Tuner::new(&db)
        .tune("small", PairSource::SelfSupervised, &opts, &|_| {})
        .unwrap();
    print_report("self-supervised", &report, report.seconds);
    assert!(report.train_pairs > 0 && report.eval_pairs > 0);
    assert_eq!(report.stage1.steps + report.stage2.steps, 3);
    assert!(report.stage1.first_loss.is_finite());
}

#[test]
fn a_head_lora_version_embeds_with_its_adapters_after_reopen_and_rolls_back() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let (original, probe, version_dir) = {
        let db = Database::open(dir.path()).unwrap();
        let pairs = small_collection(&db, "small", 24);
        let original = db.embedder_settings("small").unwrap().unwrap();
        let opts = TuneOptions {
            holdout: 0.3,
            stage1_steps: 3,
            stage2_steps: 2,
            batch_size: 4,
            hard_negatives: 2,
            train_tokens: 32,
            lr: 1e-3,
            force: true,
            // Adapters on the top two layers only: the four below run once per text (the
            // frozen-state cache), and the saved version carries the top layers' tensors.
            lora_layers: 2,
            mine_depth: 12,
            ..TuneOptions::head_lora()
        };
        let report = Tuner::new(&db)
            .tune("small", PairSource::Pairs(pairs.clone()), &opts, &|_| {})
            .unwrap();
        print_report("head+lora, small", &report, report.seconds);
        assert!(report.switched);
        let lora: serde_json::Value =
            serde_json::from_slice(&std::fs::read(report.path.join("lora.json")).unwrap()).unwrap();
        assert_eq!(lora["first_layer"], 4, "{lora}");
        assert_eq!(lora["num_layers"], 6, "{lora}");
        assert!(report.stage1.first_loss.is_finite() && report.stage2.last_loss.is_finite());
        let now = db.embedder_settings("small").unwrap().unwrap();
        assert!(now.identity.lora_sha256.is_some());
        assert_eq!(original.identity.lora_sha256, None);
        let probe = db.get("small", &[pairs[0].positive.as_str()]).unwrap()[0]
            .clone()
            .unwrap();
        (original, probe, report.path)
    };
    // Reopen: the live version is loaded with its adapters merged, and embeds the stored text
    // exactly as the tuning run's own reload of the saved version did.
    let db = Database::open(dir.path()).unwrap();
    let embedder = db.embedder("small").unwrap().unwrap();
    assert!(embedder.lora().is_some());
    let again = embedder
        .embed(
            &[probe.text.clone().unwrap()],
            &latentdb::embed::EmbedOptions::default(),
        )
        .unwrap();
    let diff = again[0]
        .iter()
        .zip(&probe.vector)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-5, "reloaded version embeds differently: {diff}");
    // The adapters matter: the tuned head on the plain backbone embeds it differently.
    let head = latentdb::embed::LatentHead::load(&version_dir).unwrap();
    let head_only = latentdb::embed::Embedder::load(&ModelSpec::Default)
        .unwrap()
        .with_head(head)
        .unwrap()
        .embed(
            &[probe.text.clone().unwrap()],
            &latentdb::embed::EmbedOptions::default(),
        )
        .unwrap();
    let moved = head_only[0]
        .iter()
        .zip(&probe.vector)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(moved > 1e-5, "the adapters changed nothing");
    let back = Tuner::new(&db).rollback("small", &|_| {}).unwrap();
    assert_eq!(back, 0);
    let now = db.embedder_settings("small").unwrap().unwrap();
    assert_eq!(now.identity, original.identity);
    let restored = db.get("small", &[probe.id.as_str()]).unwrap()[0]
        .clone()
        .unwrap();
    assert!(max_diff(&restored.vector, &probe.vector) > 10.0 * SAME_MODEL);
    assert_vectors_are_the_live_models(&db, "small");
}

/// Text documents written by the concurrent writers of the tests below.
fn text_doc(id: &str, text: &str) -> Document {
    Document {
        id: Some(id.into()),
        text: Some(text.into()),
        metadata: serde_json::json!({"k": 2}),
        vector: None,
    }
}

#[test]
fn writes_made_while_tuning_are_reconciled_before_the_switch() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let pairs = small_collection(&db, "small", 40);
    let ids: Vec<String> = all_records(&db, "small")
        .into_iter()
        .map(|r| r.id)
        .collect();
    let (deleted, replaced) = (ids[0].clone(), ids[1].clone());
    let added_text = "Cheap mortgage rates, refinance today with no closing costs";
    let old_model = db.embedder("small").unwrap().unwrap();
    // While the run trains (after it read every document), a writer deletes one document,
    // replaces another's text and adds a third.
    let written = std::sync::atomic::AtomicBool::new(false);
    let progress = |p: TuneProgress| {
        if matches!(
            p,
            TuneProgress::Step {
                stage: 1,
                step: 1,
                ..
            }
        ) && !written.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            std::thread::scope(|s| {
                s.spawn(|| {
                    db.delete("small", &[deleted.as_str()]).unwrap();
                    db.upsert(
                        "small",
                        vec![
                            text_doc(&replaced, "Replaced while tuning: a new text"),
                            text_doc("added", added_text),
                        ],
                    )
                    .unwrap();
                });
            });
        }
    };
    let report = Tuner::new(&db)
        .tune("small", PairSource::Pairs(pairs), &small_opts(), &progress)
        .unwrap();
    assert!(written.load(std::sync::atomic::Ordering::SeqCst));
    assert!(report.switched);
    // The deleted document stays deleted; the others hold what the writer wrote.
    assert!(db.get("small", &[deleted.as_str()]).unwrap()[0].is_none());
    let got = db.get("small", &[replaced.as_str(), "added"]).unwrap();
    let replaced_doc = got[0].clone().unwrap();
    let added = got[1].clone().unwrap();
    assert_eq!(
        replaced_doc.text.as_deref(),
        Some("Replaced while tuning: a new text")
    );
    assert_eq!(replaced_doc.metadata["k"], 2);
    assert_eq!(db.count("small").unwrap(), ids.len() as u64);
    // Every vector, those written meanwhile included, is the new model's, not the old one's.
    let old = old_model
        .embed(&[added_text], &latentdb::embed::EmbedOptions::default())
        .unwrap();
    assert!(max_diff(&added.vector, &old[0]) > 10.0 * SAME_MODEL);
    assert_vectors_are_the_live_models(&db, "small");
    // The index agrees with storage: the deleted document is not found, the added one is.
    let hits = db
        .search("small", &SearchRequest::text(added_text))
        .unwrap();
    assert_eq!(hits[0].id, "added");
    assert!(hits.iter().all(|h| h.id != deleted));
}

#[test]
fn a_document_without_text_written_while_tuning_is_refused_before_anything_switches() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let pairs = small_collection(&db, "small", 24);
    let original = db.embedder_settings("small").unwrap().unwrap();
    let dim = original.identity.dimension;
    let progress = |p: TuneProgress| {
        if matches!(
            p,
            TuneProgress::Step {
                stage: 1,
                step: 1,
                ..
            }
        ) {
            let v: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.1).sin()).collect();
            db.upsert("small", vec![Document::new("bare", v)]).unwrap();
        }
    };
    let e = Tuner::new(&db)
        .tune("small", PairSource::Pairs(pairs), &small_opts(), &progress)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("bare"), "{e}");
    let now = db.embedder_settings("small").unwrap().unwrap();
    assert_eq!(now.identity, original.identity, "nothing switched");
    assert_eq!(Tuner::new(&db).history("small").unwrap().live, vec![0]);
    assert!(db.get("small", &["bare"]).unwrap()[0].is_some());
}

#[test]
fn writes_made_during_a_rollback_are_reconciled_before_the_switch() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let pairs = small_collection(&db, "small", 40);
    Tuner::new(&db)
        .tune("small", PairSource::Pairs(pairs), &small_opts(), &|_| {})
        .unwrap();
    let originals: Vec<String> = all_records(&db, "small")
        .into_iter()
        .map(|r| r.id)
        .collect();
    // A writer deletes original documents and adds new ones, one by one, for as long as the
    // rollback runs (it re-embeds every document meanwhile).
    let done = std::sync::atomic::AtomicBool::new(false);
    let (deleted, added) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let (mut deleted, mut added) = (Vec::new(), Vec::new());
            for (i, id) in originals.iter().enumerate() {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let new_id = format!("new{i}");
                // Refused only in the instant the model switches (embedded with the old one).
                if db
                    .upsert("small", vec![text_doc(&new_id, &format!("Fresh text {i}"))])
                    .is_ok()
                {
                    added.push(new_id);
                }
                db.delete("small", &[id.as_str()]).unwrap();
                deleted.push(id.clone());
            }
            (deleted, added)
        });
        let back = Tuner::new(&db).rollback("small", &|_| {}).unwrap();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(back, 0);
        writer.join().unwrap()
    });
    assert!(!deleted.is_empty() && !added.is_empty());
    let got = db.get("small", &deleted).unwrap();
    assert!(
        got.iter().all(Option::is_none),
        "a document deleted during the rollback came back"
    );
    assert!(db.get("small", &added).unwrap().iter().all(Option::is_some));
    assert_vectors_are_the_live_models(&db, "small");
}

/// An unreadable history is an error, not a fresh start that would lose the versions it
/// records (the old code started afresh and switched anyway). That the history is saved
/// before the switch is checked in `src/tune/tuner.rs` with a failing save.
#[test]
fn an_unreadable_history_is_refused_and_nothing_switches() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let pairs = small_collection(&db, "small", 24);
    let original = db.embedder_settings("small").unwrap().unwrap();
    // The history cannot be read or written: its path is a non-empty directory.
    let blocked = dir.path().join("tune/small/history.json");
    std::fs::create_dir_all(blocked.join("x")).unwrap();
    let e = Tuner::new(&db)
        .tune("small", PairSource::Pairs(pairs), &small_opts(), &|_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
    // The collection did not switch to a version its history does not record.
    let now = db.embedder_settings("small").unwrap().unwrap();
    assert_eq!(now.identity, original.identity);
    assert_vectors_are_the_live_models(&db, "small");
}

#[test]
fn an_ingest_racing_a_model_switch_never_stores_the_old_models_vectors() {
    ensure_model();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("db")).unwrap();
    let pairs = small_collection(&db, "small", 24);
    Tuner::new(&db)
        .tune("small", PairSource::Pairs(pairs), &small_opts(), &|_| {})
        .unwrap();
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus).unwrap();
    for i in 0..6 {
        std::fs::write(
            corpus.join(format!("f{i}.txt")),
            format!("File number {i} is about mortgages, refinancing and closing costs."),
        )
        .unwrap();
    }
    // The ingester embeds with the tuned model; after its first batch is written, the
    // collection rolls back to the original model. Later batches must not be stored.
    let switched = std::sync::atomic::AtomicBool::new(false);
    let on_event = |e: latentdb::ingest::IngestEvent<'_>| {
        if let latentdb::ingest::IngestEvent::Progress(stats) = e
            && stats.chunks > 0
            && !switched.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            assert_eq!(Tuner::new(&db).rollback("small", &|_| {}).unwrap(), 0);
        }
    };
    let opts = latentdb::ingest::IngestOptions {
        batch_size: 1,
        ..latentdb::ingest::IngestOptions::default()
    };
    let e = latentdb::ingest::Ingester::new(&db)
        .run_with("small", std::slice::from_ref(&corpus), &opts, &on_event)
        .unwrap_err();
    assert!(switched.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert_vectors_are_the_live_models(&db, "small");
    // Run again on the model now live: everything is ingested.
    let stats = latentdb::ingest::Ingester::new(&db)
        .run("small", std::slice::from_ref(&corpus), &opts)
        .unwrap();
    assert_eq!(stats.documents + stats.skipped, 6);
    assert_vectors_are_the_live_models(&db, "small");
}
