//! `latentdb backup create | verify | restore | list`: the CLI contract (JSON on stdout,
//! one error line and a non-zero exit on failure) over a local directory target.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn latentdb(data: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latentdb"));
    cmd.args(args).env_remove("LATENTDB_DATA");
    if let Some(d) = data {
        cmd.arg("--data").arg(d);
    }
    cmd.output().unwrap()
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON: {stdout:?}: {e}"))
}

fn fails_with(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error: ") && err.contains(needle), "{err}");
}

/// A database with two collections: `a` (5 documents) and `b` (3).
fn source(dir: &Path) {
    for (name, n) in [("a", 5), ("b", 3)] {
        ok_json(&latentdb(
            Some(dir),
            &["collection", "create", name, "--dim", "3", "--json"],
        ));
        let jsonl = dir.with_extension(format!("{name}.jsonl"));
        let lines: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    r#"{{"id":"{name}{i}","text":"text {i}","vector":[{i},1,0],"metadata":{{"i":{i}}}}}"#
                )
            })
            .collect();
        std::fs::write(&jsonl, lines.join("\n")).unwrap();
        ok_json(&latentdb(
            Some(dir),
            &["upsert", name, "--file", jsonl.to_str().unwrap(), "--json"],
        ));
    }
}

#[test]
fn create_verify_restore_list() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source(&src);
    let root = tmp.path().join("backups");
    let target = root.join("b1");
    let target = target.to_str().unwrap();

    let created = latentdb(Some(&src), &["backup", "create", target]);
    let report = ok_json(&created);
    assert!(
        String::from_utf8_lossy(&created.stderr).contains("backup: "),
        "progress on stderr"
    );
    let colls = report["collections"].as_array().unwrap();
    let counts: Vec<(&str, u64)> = colls
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("a", 5), ("b", 3)]);
    assert!(report["bytes"].as_u64().unwrap() > 0);

    // A second backup into the same target is refused.
    fails_with(
        &latentdb(Some(&src), &["backup", "create", target]),
        "backup to",
    );

    let verified = ok_json(&latentdb(None, &["backup", "verify", target]));
    assert!(verified["files"].as_u64().unwrap() >= 2);

    let listed = ok_json(&latentdb(None, &["backup", "list", root.to_str().unwrap()]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "b1");

    // Restore, then the CLI reads the same documents back.
    let restored_dir = tmp.path().join("restored");
    let restored = ok_json(&latentdb(
        Some(&restored_dir),
        &["backup", "restore", target],
    ));
    assert_eq!(restored["collections"].as_array().unwrap().len(), 2);
    for (name, n) in [("a", 5), ("b", 3)] {
        for dir in [&src, &restored_dir] {
            let count = ok_json(&latentdb(Some(dir), &["count", name, "--json"]));
            assert_eq!(count["count"], n, "{name} in {}", dir.display());
        }
        let id = format!("{name}1");
        let get = |dir: &Path| ok_json(&latentdb(Some(dir), &["get", name, &id, "--json"]));
        assert_eq!(get(&src), get(&restored_dir));
    }

    // Restoring into a directory that is not empty is refused, and leaves it alone.
    fails_with(
        &latentdb(Some(&restored_dir), &["backup", "restore", target]),
        "not empty",
    );
    let count = ok_json(&latentdb(Some(&restored_dir), &["count", "a", "--json"]));
    assert_eq!(count["count"], 5);

    // Restore without --data says what is missing.
    fails_with(&latentdb(None, &["backup", "restore", target]), "--data");
}

#[test]
fn a_damaged_backup_fails_verify_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source(&src);
    let target = tmp.path().join("b");
    let t = target.to_str().unwrap();
    ok_json(&latentdb(
        Some(&src),
        &["backup", "create", t, "--collections", "a,b"],
    ));
    ok_json(&latentdb(None, &["backup", "verify", t]));

    // Flip one byte of a records chunk.
    let chunk = target.join("collections/0/records.00000");
    let mut bytes = std::fs::read(&chunk).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&chunk, bytes).unwrap();

    fails_with(&latentdb(None, &["backup", "verify", t]), "does not verify");
    let dest = tmp.path().join("dest");
    fails_with(
        &latentdb(Some(&dest), &["backup", "restore", t]),
        "cannot restore",
    );
    assert!(
        !dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(),
        "nothing left behind"
    );

    // A location without a backup is not one.
    fails_with(
        &latentdb(
            None,
            &[
                "backup",
                "verify",
                tmp.path().join("none").to_str().unwrap(),
            ],
        ),
        "does not verify",
    );
}

#[test]
fn create_backs_up_only_the_named_collections() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    source(&src);
    let target = tmp.path().join("only-b");
    let report = ok_json(&latentdb(
        Some(&src),
        &[
            "backup",
            "create",
            target.to_str().unwrap(),
            "--collections",
            "b",
        ],
    ));
    let names: Vec<&str> = report["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"]);
    fails_with(
        &latentdb(
            Some(&src),
            &[
                "backup",
                "create",
                tmp.path().join("x").to_str().unwrap(),
                "--collections",
                "nope",
            ],
        ),
        "nope",
    );
}
