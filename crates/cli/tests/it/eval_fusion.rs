//! `eval --mode` (dense, lexical, hybrid, all) and `tune --fusion-only` on a tiny BEIR dataset
//! with the tiny NV-Embed fixture.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/nvembed-tiny"
);

fn run(data: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "{err}");
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// A tiny BEIR dataset where each query shares one rare word with its one relevant document.
fn beir(dir: &Path) {
    let topics = [
        "volcano",
        "saxophone",
        "glacier",
        "origami",
        "telescope",
        "marathon",
        "tortilla",
        "cathedral",
        "hedgehog",
        "submarine",
        "lighthouse",
        "avalanche",
    ];
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let mut corpus = String::new();
    let mut queries = String::new();
    let mut qrels = String::from("query-id\tcorpus-id\tscore\n");
    for (i, t) in topics.iter().enumerate() {
        corpus.push_str(&format!(
            "{{\"_id\":\"d{i}\",\"title\":\"\",\"text\":\"notes about the {t} and other things\"}}\n"
        ));
        queries.push_str(&format!(
            "{{\"_id\":\"q{i}\",\"text\":\"where is the {t}\"}}\n"
        ));
        qrels.push_str(&format!("q{i}\td{i}\t1\n"));
    }
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), &qrels).unwrap();
    std::fs::write(dir.join("qrels/train.tsv"), &qrels).unwrap();
}

#[test]
fn eval_modes_and_tune_fusion_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("db");
    let ds = dir.path().join("beir");
    beir(&ds);
    let ds = ds.to_str().unwrap();
    lines(&run(
        &d,
        &["collection", "create", "e", "--model", TINY, "--json"],
    ));

    let reports = lines(&run(
        &d,
        &[
            "eval", "e", "--beir", ds, "--mode", "all", "--exact", "--json",
        ],
    ));
    let modes: Vec<&str> = reports
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["dense", "lexical", "hybrid"]);
    // The corpus is loaded once, by the first run.
    assert_eq!(reports[0]["ingested"], 12);
    assert_eq!(reports[1]["ingested"], 0);
    for r in &reports {
        assert_eq!(r["queries"], 12, "{r}");
    }
    // Each query's rare word is in its document only: BM25 ranks it first.
    assert!(
        (f(&reports[1]["ndcg@10"]) - 1.0).abs() < 1e-9,
        "{}",
        reports[1]
    );

    // One mode, with fusion overrides; the text report names the mode.
    let o = run(
        &d,
        &[
            "eval",
            "e",
            "--beir",
            ds,
            "--mode",
            "hybrid",
            "--fusion",
            "rrf",
            "--weights",
            "0,1",
            "--rrf-k",
            "5",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("hybrid search"), "{text}");
    // All the weight on the lexical leg scores like the lexical leg.
    let r = lines(&run(
        &d,
        &[
            "eval",
            "e",
            "--beir",
            ds,
            "--mode",
            "hybrid",
            "--weights",
            "0,1",
            "--json",
        ],
    ));
    assert!((f(&r[0]["ndcg@10"]) - 1.0).abs() < 1e-9, "{}", r[0]);
    fails_with(
        &run(&d, &["eval", "e", "--beir", ds, "--weights", "1"]),
        "expected two numbers D,L",
    );

    // tune --fusion-only: no training, a grid search over the fusion parameters.
    let before = lines(&run(&d, &["collection", "info", "e", "--json"]));
    let fit = lines(&run(
        &d,
        &[
            "tune",
            "e",
            "--beir",
            ds,
            "--split",
            "train",
            "--fusion-only",
            "--fusion-depth",
            "10",
            "--dry-run",
            "--json",
        ],
    ));
    let fit = &fit[0];
    assert_eq!(fit["queries"], 12, "{fit}");
    assert_eq!(fit["depth"], 10, "{fit}");
    assert_eq!(fit["stored"], false, "{fit}");
    assert!(f(&fit["configurations"]) > 1.0, "{fit}");
    assert!((f(&fit["lexical"]["ndcg@10"]) - 1.0).abs() < 1e-9, "{fit}");
    assert!(
        f(&fit["best"]["metrics"]["ndcg@10"]) >= f(&fit["dense"]["ndcg@10"]),
        "{fit}"
    );
    // Nothing changed: the model and the lexical settings are as before.
    let after = lines(&run(&d, &["collection", "info", "e", "--json"]));
    assert_eq!(before[0]["embedder"], after[0]["embedder"]);
    assert_eq!(before[0]["lexical"], after[0]["lexical"]);
    // --fusion-only fits on a BEIR dataset and trains nothing.
    fails_with(
        &run(&d, &["tune", "e", "--self-supervised", "--fusion-only"]),
        "cannot be used with",
    );
    fails_with(
        &run(
            &d,
            &["tune", "e", "--beir", ds, "--fusion-only", "--lr", "0.1"],
        ),
        "cannot be used with",
    );
}
