//! `latentdb bench ingest` with the real all-MiniLM-L6-v2 (fetched into the model cache if
//! absent, as `collection create --model default` does; a fetch failure fails the test).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn ensure_default_model() {
    use latentdb::embed::{ModelSpec, fetch_default, models_dir};
    if ModelSpec::Default.resolve().is_err() {
        fetch_default(&models_dir()).expect("fetching the default model");
    }
}

/// Runs the CLI with `tmp` as its temporary directory.
fn latentdb(tmp: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(args)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON object: {text}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON: {text:?}: {e}"))
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// `n` short paragraphs (each well under 256 tokens, so one chunk each), with ids and
/// metadata on every other line.
fn corpus(path: &Path, n: usize) {
    let topics = [
        "the harbour at dawn",
        "a recipe for sourdough bread",
        "the migration of arctic terns",
        "how a steam engine works",
        "the rules of chess openings",
        "glaciers retreating in the Alps",
    ];
    let mut s = String::new();
    for i in 0..n {
        let t = topics[i % topics.len()];
        let text = format!(
            "Paragraph {i} is about {t}. It has a few sentences so that the embedder has some \
             work to do, and it mentions the number {} to make every text distinct. The \
             closing sentence repeats the topic, {t}, once more.",
            i * 7 + 3
        );
        let line = if i % 2 == 0 {
            serde_json::json!({"id": format!("p{i}"), "text": text, "metadata": {"n": i}})
        } else {
            serde_json::json!({"text": text})
        };
        s.push_str(&line.to_string());
        s.push('\n');
        if i % 10 == 9 {
            s.push('\n'); // blank lines are skipped
        }
    }
    std::fs::write(path, s).unwrap();
}

fn check_times(r: &Value) {
    let wall = f(r, "seconds");
    assert!(wall > 0.0, "{r}");
    for stage in ["read", "embed", "write"] {
        let busy = f(r, &format!("{stage}_s"));
        assert!(busy > 0.0, "{stage}_s is not positive: {r}");
        assert!(busy <= wall + 0.05, "{stage}_s exceeds the wall time: {r}");
        let share = f(r, &format!("{stage}_share"));
        assert!((share - busy / wall).abs() < 1e-6, "{stage}_share: {r}");
    }
    assert!(
        f(r, "docs_per_s") > 0.0 && f(r, "chunks_per_s") > 0.0,
        "{r}"
    );
    assert!(
        (f(r, "docs_per_s") - f(r, "documents") / wall).abs() < 1e-6 * f(r, "docs_per_s"),
        "{r}"
    );
    assert!(f(r, "peak_rss_bytes") > 1e6, "{r}");
}

#[test]
fn bench_ingest_reports_counts_rates_and_stage_times() {
    ensure_default_model();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("corpus.jsonl");
    corpus(&input, 36);
    let input = input.to_str().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let r = json(&latentdb(
        &tmp,
        &[
            "--json",
            "bench",
            "ingest",
            "--input",
            input,
            "--model",
            "default",
            "--batch-size",
            "8",
            "--threads",
            "1",
        ],
    ));
    assert_eq!(r["documents"], 36, "{r}");
    assert_eq!(r["chunks"], 36, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["batch_size"], 8, "{r}");
    assert_eq!(r["threads"], 1, "{r}");
    assert_eq!(r["model"], "all-MiniLM-L6-v2", "{r}");
    check_times(&r);

    // Smaller chunks, the first 10 documents: the chunk count is what `ingest` writes with
    // the same options.
    let r = json(&latentdb(
        &tmp,
        &[
            "--json",
            "bench",
            "ingest",
            "--input",
            input,
            "--chunk-size",
            "16",
            "--chunk-overlap",
            "4",
            "--limit",
            "10",
        ],
    ));
    assert_eq!(r["documents"], 10, "{r}");
    assert_eq!(r["chunk_tokens"], 16, "{r}");
    check_times(&r);
    let data = dir.path().join("db");
    let data = data.to_str().unwrap();
    let first10: String = std::fs::read_to_string(input)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(10)
        .map(|l| format!("{l}\n"))
        .collect();
    let ten = dir.path().join("ten.jsonl");
    std::fs::write(&ten, first10).unwrap();
    json(&latentdb(
        &tmp,
        &[
            "--json",
            "--data",
            data,
            "collection",
            "create",
            "c",
            "--model",
            "default",
        ],
    ));
    let ingested = json(&latentdb(
        &tmp,
        &[
            "--json",
            "--data",
            data,
            "ingest",
            "c",
            ten.to_str().unwrap(),
            "--chunk-tokens",
            "16",
            "--chunk-overlap",
            "4",
        ],
    ));
    assert_eq!(ingested["documents"], 10, "{ingested}");
    let chunks = ingested["chunks"].as_u64().unwrap();
    assert!(
        chunks > 10,
        "16-token chunks split these paragraphs: {ingested}"
    );
    assert_eq!(r["chunks"], chunks, "{r} vs {ingested}");
    // `ingest --json` reports the stage times too.
    for stage in ["read_s", "embed_s", "write_s"] {
        assert!(f(&ingested, stage) > 0.0, "{ingested}");
    }

    // The text form is one line; a missing input is an error.
    let o = latentdb(&tmp, &["bench", "ingest", "--input", input, "--limit", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("ingested 3 documents, 3 chunks"), "{text}");
    let o = latentdb(
        &tmp,
        &["bench", "ingest", "--input", "/no/such/corpus.jsonl"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no such file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // The scratch databases are gone.
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert!(left.is_empty(), "left in the temporary directory: {left:?}");
}
