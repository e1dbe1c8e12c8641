//! `latentdb embed` and `latentdb model info` on the tiny NV-Embed fixture.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

const TINY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/nvembed-tiny"
);

fn embed(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .arg("embed")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may fail (and close its stdin) before reading everything.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn vectors(out: &std::process::Output) -> Vec<Vec<f64>> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn embeds_each_line_in_order_with_unit_norm() {
    let input = "\"first text\"\n\"second, longer text with more words\"\n\"first text\"\n";
    let v = vectors(&embed(&["--model", TINY, "--batch-size", "2"], input));
    assert_eq!(v.len(), 3);
    for x in &v {
        let norm: f64 = x.iter().map(|a| a * a).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
    // Same text, same vector, wherever it sits in the batches.
    let diff: f64 = v[0]
        .iter()
        .zip(&v[2])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff < 1e-5);
    // An instruction changes the vector (NV-Embed uses it).
    let w = vectors(&embed(
        &["--model", TINY, "--instruction", "NQ"],
        "\"first text\"\n",
    ));
    let diff: f64 = v[0]
        .iter()
        .zip(&w[0])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff > 1e-3, "the instruction had no effect");
}

#[test]
fn bad_input_is_a_clear_error() {
    let out = embed(&["--model", TINY], "\"ok\"\nnot a json string\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2 is not a JSON string"), "{err}");
    let out = embed(&["--model", "/no/such/model"], "\"x\"\n");
    assert!(!out.status.success());
}

#[test]
fn model_info_reports_the_identity() {
    let out = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(["model", "info", "--model", TINY, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["model_type"], "nvembed");
    assert_eq!(v["weights_sha256"].as_str().unwrap().len(), 64);
    assert!(v["dimension"].as_u64().unwrap() > 0);
}
