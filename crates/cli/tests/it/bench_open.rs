//! `latentdb bench ann --metadata --db DIR` keeps its database; `latentdb bench open` reopens
//! it from the index dump and reports what it holds in memory.

use serde_json::Value;

use crate::search::{lines, run};

/// Builds `n` x 16 vectors into a kept database (with ingest-like metadata or none) and
/// returns the build row and the open report.
fn build_and_open(d: &std::path::Path, name: &str, metadata: bool) -> (Value, Value) {
    let data = d.join(format!("{name}-npy"));
    lines(&run(
        d,
        &[
            "bench",
            "gen-data",
            "--n",
            "1500",
            "--dim",
            "16",
            "--queries",
            "20",
            "--out",
            data.to_str().unwrap(),
            "--json",
        ],
        None,
    ));
    let db = d.join(name);
    let (base, queries, db_arg) = (
        data.join("base.npy"),
        data.join("queries.npy"),
        db.to_str().unwrap().to_string(),
    );
    let mut args = vec![
        "bench",
        "ann",
        "--base",
        base.to_str().unwrap(),
        "--queries",
        queries.to_str().unwrap(),
        "--ef",
        "32",
        "--db",
        &db_arg,
        "--json",
    ];
    if metadata {
        args.push("--metadata");
    }
    let rows = lines(&run(d, &args, None));
    let open = lines(&run(
        &db,
        &[
            "bench",
            "open",
            "--queries",
            queries.to_str().unwrap(),
            "--collection",
            "bench",
            "--json",
        ],
        None,
    ));
    (rows[0].clone(), open[0].clone())
}

#[test]
fn bench_open_reports_the_kept_database_loaded_from_its_dump() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (bare_build, bare) = build_and_open(d, "bare", false);
    let (meta_build, meta) = build_and_open(d, "meta", true);
    assert_eq!(bare_build["metadata"], false, "{bare_build}");
    assert_eq!(meta_build["metadata"], true, "{meta_build}");

    for open in [&bare, &meta] {
        assert_eq!(open["phase"], "open", "{open}");
        assert!(open["open_s"].as_f64().unwrap() > 0.0, "{open}");
        assert!(open["rss_bytes"].as_u64().unwrap() > 0, "{open}");
        let c = &open["collections"][0];
        assert_eq!(c["name"], "bench");
        assert_eq!(c["count"], 1500);
        assert_eq!(c["loaded_from_dump"], true, "{open}");
        assert_eq!(c["rebuilt_on_open"], false, "{open}");
        // 1,500 f32 vectors of 16, and links and ids on top.
        assert_eq!(c["vector_bytes"], 1500 * 16 * 4);
        assert!(c["index_bytes"].as_u64().unwrap() > 1500 * 16 * 4, "{open}");
        assert!(open["cold_qps"].as_f64().unwrap() > 0.0, "{open}");
    }
    // The reopened payload index holds what the building process held.
    let (b, m) = (&bare["collections"][0], &meta["collections"][0]);
    assert_eq!(b["payload_bytes"], bare_build["payload_bytes"]);
    assert_eq!(m["payload_bytes"], meta_build["payload_bytes"]);
    // Eight metadata fields per document cost more than the ids alone, but stay bounded.
    let (pb, pm) = (
        b["payload_bytes"].as_u64().unwrap(),
        m["payload_bytes"].as_u64().unwrap(),
    );
    assert!(pb >= 1500 * 32, "{b}");
    assert!(pm > pb + 1500 * 100, "{m} vs {b}");
}

#[test]
fn bench_ann_refuses_a_non_empty_db_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("precious"), b"keep me").unwrap();
    let o = run(
        d,
        &[
            "bench",
            "ann",
            "--base",
            "x.npy",
            "--queries",
            "y.npy",
            "--db",
            d.to_str().unwrap(),
        ],
        None,
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("the directory is not empty"), "{err}");
    assert_eq!(std::fs::read(d.join("precious")).unwrap(), b"keep me");
}
