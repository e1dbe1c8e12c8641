//! Unsafe defaults are gone from the CLI: an empty API key is refused, a public address
//! without TLS and a key is warned about, a TLS banner is printed only for a usable
//! certificate, `delete --filter '{}'` deletes nothing (`--all` does), `collection list`
//! works beside a quarantined collection, and a database with lost writes opens only with
//! `--accept-data-loss`, which says what was lost.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn latentdb(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(args)
        .env("LATENTDB_DATA", data)
        .env_remove("LATENTDB_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn latentdb");
    let mut pipe = child.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).expect("write stdin");
    }
    drop(pipe);
    child.wait_with_output().expect("wait")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", stderr(out));
    stdout(out)
}

/// Runs `serve` with `args` (and `env`), expecting it to exit by itself; kills it after 20 s.
fn serve_exits(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latentdb"));
    cmd.arg("serve")
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("LATENTDB_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > Duration::from_secs(20) {
            kill(&mut child);
            let out = child.wait_with_output().expect("output");
            panic!(
                "serve {args:?} kept running (stdout {:?}, stderr {:?})",
                stdout(&out),
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
}

#[test]
fn serve_refuses_an_empty_api_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("db");
    for (args, env) in [
        (vec!["--addr", "127.0.0.1:0", "--api-key", ""], vec![]),
        (vec!["--addr", "127.0.0.1:0", "--api-key", "  "], vec![]),
        (
            vec!["--addr", "127.0.0.1:0"],
            vec![("LATENTDB_API_KEY", "")],
        ),
    ] {
        let out = serve_exits(&data, &args, &env);
        assert!(!out.status.success(), "{args:?} {env:?} served");
        assert!(
            stderr(&out).contains("API key") && stderr(&out).contains("empty"),
            "{}",
            stderr(&out)
        );
        assert!(!stdout(&out).contains("serving"), "{}", stdout(&out));
    }
}

#[test]
fn the_tls_banner_needs_a_usable_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("bad.pem");
    std::fs::write(&pem, "not a certificate").expect("write");
    let pem = pem.to_str().expect("utf-8");
    let out = serve_exits(
        &dir.path().join("db"),
        &["--addr", "127.0.0.1:0", "--tls-cert", pem, "--tls-key", pem],
        &[],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("serving"),
        "announced a TLS server it could not start: {}",
        stdout(&out)
    );
}

#[test]
fn a_public_address_without_tls_and_key_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(["serve", "--addr", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("db"))
        .env_remove("LATENTDB_API_KEY")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the banner");
    assert!(line.contains("serving on 0.0.0.0:"), "{line:?}");
    kill(&mut child);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let _ = child.wait();
    assert!(
        err.contains("WARN") && err.contains("without TLS and without an API key"),
        "no warning: {err}"
    );
}

#[test]
fn delete_with_an_empty_filter_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(&latentdb(
        d,
        &["collection", "create", "docs", "--dim", "2"],
        None,
    ));
    let docs = concat!(
        r#"{"id": "a", "vector": [1, 0], "metadata": {"g": "x"}}"#,
        "\n",
        r#"{"id": "b", "vector": [0, 1], "metadata": {"g": "y"}}"#,
        "\n",
        r#"{"id": "c", "vector": [1, 1], "metadata": {"g": "y"}}"#,
        "\n"
    );
    ok(&latentdb(d, &["upsert", "docs", "--file", "-"], Some(docs)));
    let count = |d: &Path| {
        ok(&latentdb(d, &["count", "docs"], None))
            .trim()
            .to_string()
    };

    let out = latentdb(d, &["delete", "docs", "--filter", "{}"], None);
    assert!(!out.status.success(), "an empty filter was accepted");
    assert!(stderr(&out).contains("--all"), "{}", stderr(&out));
    assert_eq!(count(d), "3");
    // Ids with --all or --filter, and nothing at all, are usage errors.
    for args in [
        vec!["delete", "docs"],
        vec!["delete", "docs", "a", "--all"],
        vec!["delete", "docs", "a", "--filter", r#"{"g": "x"}"#],
        vec!["delete", "docs", "--all", "--filter", r#"{"g": "x"}"#],
    ] {
        assert!(!latentdb(d, &args, None).status.success(), "{args:?}");
    }
    assert_eq!(count(d), "3");

    let out = ok(&latentdb(
        d,
        &["delete", "docs", "--filter", r#"{"g": "x"}"#, "--json"],
        None,
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!({"deleted": 1})
    );
    let out = ok(&latentdb(d, &["delete", "docs", "b", "--json"], None));
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!({"deleted": 1})
    );
    let out = ok(&latentdb(d, &["delete", "docs", "--all", "--json"], None));
    assert_eq!(
        serde_json::from_str::<Value>(&out).expect("json"),
        json!({"deleted": 1})
    );
    assert_eq!(count(d), "0");
}

#[test]
fn collection_list_shows_a_quarantined_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    ok(&latentdb(
        d,
        &["collection", "create", "good", "--dim", "2"],
        None,
    ));
    {
        // A spec stored straight through storage, as an old database may hold it: its index
        // cannot be built (2^61 points overflowed the capacity computation).
        let storage = latentdb::storage::Storage::open(d, Default::default()).expect("storage");
        let mut spec = latentdb::CollectionSpec::new("huge", 2, latentdb::Metric::Cosine);
        spec.index = json!({"initial_capacity": 1u64 << 61});
        storage.create_collection(spec).expect("store the spec");
    }
    let text = ok(&latentdb(d, &["collection", "list"], None));
    assert!(text.lines().any(|l| l.starts_with("good\t")), "{text}");
    let huge = text
        .lines()
        .find(|l| l.starts_with("huge"))
        .unwrap_or_else(|| panic!("huge not listed: {text}"));
    assert!(huge.contains("quarantined"), "{huge}");

    let lines: Vec<Value> = ok(&latentdb(d, &["collection", "list", "--json"], None))
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let by_name = |n: &str| lines.iter().find(|v| v["name"] == n).cloned();
    assert!(by_name("good").expect("good")["quarantined"].is_null());
    let huge = by_name("huge").expect("huge listed");
    assert!(
        huge["quarantined"].as_str().is_some_and(|r| !r.is_empty()),
        "{huge}"
    );
    // The good one still works.
    ok(&latentdb(d, &["count", "good"], None));
}

/// Copies every file under `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

#[test]
fn lost_writes_need_accept_data_loss_which_reports_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let snapshot = tempfile::tempdir().expect("tempdir");
    let line = |i: u32| format!("{{\"id\": \"d{i}\", \"vector\": [{i}, 1]}}\n");
    ok(&latentdb(
        d,
        &["collection", "create", "c", "--dim", "2"],
        None,
    ));
    let first: String = (1..=10).map(line).collect();
    ok(&latentdb(
        d,
        &["upsert", "c", "--file", "-", "--batch-size", "5"],
        Some(&first),
    ));
    let sled = d.join(latentdb::storage::SLED_DIR);
    copy_dir(&sled, snapshot.path());
    let more: String = (11..=30).map(line).collect();
    ok(&latentdb(
        d,
        &["upsert", "c", "--file", "-", "--batch-size", "5"],
        Some(&more),
    ));
    // Storage comes back behind what was acknowledged (as after a damaged log).
    std::fs::remove_dir_all(&sled).expect("rm");
    copy_dir(snapshot.path(), &sled);

    let copy = tempfile::tempdir().expect("tempdir");
    copy_dir(d, copy.path());

    for _ in 0..2 {
        let out = latentdb(d, &["count", "c"], None);
        assert!(
            !out.status.success(),
            "opened with acknowledged writes lost"
        );
        assert!(
            stderr(&out).contains("--accept-data-loss"),
            "{}",
            stderr(&out)
        );
    }
    let out = latentdb(d, &["--accept-data-loss", "count", "c"], None);
    assert_eq!(ok(&out).trim(), "10");
    let err = stderr(&out);
    assert!(err.contains("data loss") && err.contains("\"c\""), "{err}");
    let out = latentdb(
        copy.path(),
        &["count", "c", "--json", "--accept-data-loss"],
        None,
    );
    assert_eq!(ok(&out).trim(), r#"{"count":10}"#);
    // Among any log lines, one JSON line reports the loss.
    let report: Value = stderr(&out)
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report: {}", stderr(&out)));
    assert_eq!(report["data_loss"]["collection"], "c", "{report}");
    assert_eq!(
        report["data_loss"]["found_sequence"].as_u64().map(|_| ()),
        Some(())
    );
}
