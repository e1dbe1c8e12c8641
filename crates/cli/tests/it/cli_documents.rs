//! The CLI contract of the storage commands: flags, `--json` output, exit codes, errors on
//! stderr.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn latentdb(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(args)
        .env("LATENTDB_DATA", data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn succeeds(out: &Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one error line expected: {err}"
    );
    assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
}

#[test]
fn collection_and_document_commands() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.to_str().unwrap();

    // --data accepted before and after the subcommand (and from LATENTDB_DATA).
    let created = json_lines(&latentdb(
        Path::new("/nonexistent-unused"),
        &[
            "--data",
            data,
            "collection",
            "create",
            "docs",
            "--dim",
            "3",
            "--metric",
            "dot",
            "--json",
        ],
        None,
    ));
    assert_eq!(created[0]["name"], "docs");
    assert_eq!(created[0]["dimension"], 3);
    assert_eq!(created[0]["metric"], "dot");
    assert_eq!(created[0]["format_version"], 2);
    succeeds(&latentdb(
        Path::new("/nonexistent-unused"),
        &[
            "collection",
            "create",
            "other",
            "--dim",
            "2",
            "--metric",
            "l2",
            "--data",
            data,
        ],
        None,
    ));

    let list = json_lines(&latentdb(d, &["collection", "list", "--json"], None));
    let names: Vec<_> = list.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["docs", "other"]);

    let jsonl = concat!(
        r#"{"id": "a", "text": "alpha", "vector": [1, 0, 0], "metadata": {"k": 1}}"#,
        "\n",
        "\n",
        r#"{"id": "b", "vector": [0, 1, 0]}"#,
        "\n",
    );
    let up = json_lines(&latentdb(
        d,
        &["upsert", "docs", "--file", "-", "--json"],
        Some(jsonl),
    ));
    assert_eq!(up, [json!({"upserted": 2})]);
    let file = d.join("more.jsonl");
    std::fs::write(&file, r#"{"id": "c", "vector": [0, 0, 1]}"#).unwrap();
    let up = json_lines(&latentdb(
        d,
        &[
            "upsert",
            "docs",
            "--file",
            file.to_str().unwrap(),
            "--json",
            "--durability",
            "buffered",
        ],
        None,
    ));
    assert_eq!(up, [json!({"upserted": 1})]);

    assert_eq!(
        json_lines(&latentdb(d, &["count", "docs", "--json"], None)),
        [json!({"count": 3})]
    );
    let got = json_lines(&latentdb(d, &["get", "docs", "a", "b", "--json"], None));
    assert_eq!(got[0]["id"], "a");
    assert_eq!(got[0]["text"], "alpha");
    assert_eq!(got[0]["metadata"], json!({"k": 1}));
    assert_eq!(got[0]["vector"], json!([1.0, 0.0, 0.0]));
    assert_eq!(got[1]["id"], "b");

    let info = json_lines(&latentdb(
        d,
        &["collection", "info", "docs", "--json"],
        None,
    ));
    assert_eq!(info[0]["count"], 3);

    let del = json_lines(&latentdb(
        d,
        &["delete", "docs", "a", "zzz", "--json"],
        None,
    ));
    assert_eq!(del, [json!({"deleted": 1})]);

    // A missing id: the found ones are printed, the missing one is an error.
    let out = latentdb(d, &["get", "docs", "a", "b", "--json"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found: a"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);

    let dropped = json_lines(&latentdb(
        d,
        &["collection", "drop", "other", "--json"],
        None,
    ));
    assert_eq!(dropped, [json!({"dropped": "other"})]);
    assert_eq!(
        json_lines(&latentdb(d, &["collection", "list", "--json"], None)).len(),
        1
    );
}

#[test]
fn errors_are_one_line_on_stderr_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    succeeds(&latentdb(
        d,
        &["collection", "create", "c", "--dim", "2"],
        None,
    ));

    fails_with(
        &latentdb(d, &["count", "nope"], None),
        "collection \"nope\" does not exist",
    );
    fails_with(
        &latentdb(
            d,
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--tls-cert",
                "/nonexistent/cert.pem",
                "--tls-key",
                "/nonexistent/key.pem",
            ],
            None,
        ),
        "cannot read TLS certificate /nonexistent/cert.pem",
    );
    fails_with(
        &latentdb(d, &["collection", "create", "c", "--dim", "2"], None),
        "already exists",
    );
    fails_with(
        &latentdb(d, &["collection", "create", "bad/name", "--dim", "2"], None),
        "invalid collection name",
    );
    fails_with(
        &latentdb(d, &["collection", "create", "z", "--dim", "0"], None),
        "invalid dimension",
    );
    fails_with(
        &latentdb(
            d,
            &["upsert", "c", "--file", "-"],
            Some("{\"id\": \"x\", \"vector\": [1, 2, 3]}\n"),
        ),
        "vector has 3 components",
    );
    fails_with(
        &latentdb(
            d,
            &["upsert", "c", "--file", "-"],
            Some("{\"id\": \"x\", \"vector\": [1, 2]}\nnot json\n"),
        ),
        "line 2",
    );
    // The bad second line rejected nothing stored before it in the same batch... and nothing
    // at all, since the batch never reached storage.
    assert_eq!(
        json_lines(&latentdb(d, &["count", "c", "--json"], None)),
        [json!({"count": 0})]
    );
    fails_with(
        &latentdb(
            d,
            &["upsert", "c", "--file", "-"],
            Some("{\"id\": \"x\", \"vector\": [1, 2], \"metadata\": [1]}\n"),
        ),
        "metadata must be a JSON object",
    );
    fails_with(
        &latentdb(d, &["upsert", "c", "--file", "/no/such/file"], None),
        "cannot open",
    );
    // No database directory at all.
    let out = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(["count", "c"])
        .env_remove("LATENTDB_DATA")
        .output()
        .unwrap();
    fails_with(&out, "--data");
}
