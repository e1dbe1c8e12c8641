//! `latentdb search`, `compact`, `flush` and `bench ann` from the command line.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs the binary on `data` with `args`, feeding `stdin` when given.
pub(crate) fn run(data: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .arg("--data")
        .arg(data)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

/// The JSON objects of a successful run's stdout, one per line.
pub(crate) fn lines(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn search_prints_one_json_object_per_hit_best_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    lines(&run(
        d,
        &["collection", "create", "c", "--dim", "3", "--json"],
        None,
    ));
    let docs = r#"{"id":"a","text":"alpha","vector":[1,0,0],"metadata":{"lang":"en","n":1}}
{"id":"b","text":"beta","vector":[0.9,0.1,0],"metadata":{"lang":"fr","n":2}}
{"id":"c","vector":[0,1,0],"metadata":{"lang":"en","n":3}}
{"id":"d","text":"delta","vector":[0,0,1]}"#;
    lines(&run(
        d,
        &["upsert", "c", "--file", "-", "--json"],
        Some(docs),
    ));

    let hits = lines(&run(
        d,
        &["search", "c", "--vector", "[1,0,0]", "-k", "3", "--json"],
        None,
    ));
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["id"], "a");
    assert_eq!(hits[0]["text"], "alpha");
    assert_eq!(hits[0]["metadata"]["lang"], "en");
    assert!((hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(hits[1]["id"], "b");
    for h in &hits {
        let keys: Vec<&str> = h.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{h}");
        for k in ["id", "score", "metadata", "text"] {
            assert!(keys.contains(&k), "{h} lacks {k}");
        }
    }
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]));

    let hits = lines(&run(
        d,
        &[
            "search",
            "c",
            "--vector",
            "[1,0,0]",
            "--filter",
            r#"{"lang":"en"}"#,
            "--exact",
            "--json",
        ],
        None,
    ));
    let ids: Vec<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(hits[1]["text"], Value::Null);

    // errors: bad filter, wrong dimension, unknown collection: one line on stderr, exit 1
    for args in [
        &[
            "search",
            "c",
            "--vector",
            "[1,0,0]",
            "--filter",
            r#"{"n":{"$bogus":1}}"#,
        ][..],
        &["search", "c", "--vector", "[1,0]"][..],
        &["search", "nope", "--vector", "[1,0,0]"][..],
        &["search", "c", "--vector", "not json"][..],
    ] {
        let o = run(d, args, None);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error: "), "{err}");
    }

    lines(&run(d, &["delete", "c", "a", "--json"], None));
    let c = lines(&run(d, &["compact", "c", "--json"], None));
    assert_eq!(c[0]["after_total"], 3);
    assert_eq!(
        lines(&run(d, &["flush", "--json"], None))[0]["flushed"],
        true
    );
    let hits = lines(&run(
        d,
        &["search", "c", "--vector", "[1,0,0]", "-k", "1", "--json"],
        None,
    ));
    assert_eq!(hits[0]["id"], "b");
}

#[test]
fn bench_gen_data_then_ann_reports_build_and_each_ef() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    let data_s = data.to_str().unwrap();
    lines(&run(
        d,
        &[
            "bench",
            "gen-data",
            "--n",
            "2000",
            "--dim",
            "16",
            "--queries",
            "50",
            "--gt-k",
            "10",
            "--out",
            data_s,
            "--json",
        ],
        None,
    ));
    let base = data.join("base.npy");
    let queries = data.join("queries.npy");
    let gt = data.join("gt.npy");
    let ann_run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "ann",
            "--base",
            base.to_str().unwrap(),
            "--queries",
            queries.to_str().unwrap(),
            "--gt",
            gt.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        run(d, &args, None)
    };
    let ann = |extra: &[&str]| lines(&ann_run(extra));
    let rows = ann(&["--ef", "10,64"]);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["phase"], "build");
    assert_eq!(rows[0]["n"], 2000);
    assert!(rows[0]["vectors_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(rows[2]["ef"], 64);
    assert!(rows[2]["recall"].as_f64().unwrap() >= 0.95, "{}", rows[2]);
    assert!(rows[2]["qps"].as_f64().unwrap() > 0.0);
    assert!(rows[2]["p99_ms"].as_f64().unwrap() >= rows[2]["p50_ms"].as_f64().unwrap());
    assert!(rows[0]["vs_graph"].is_null(), "{}", rows[0]);
    assert!(rows[2]["graph_qps"].is_null(), "{}", rows[2]);
    assert_eq!(rows[2]["passes"], 1);

    // Several timed passes: still one row per ef, in --ef order.
    let passes = ann(&["--ef", "64,10", "--passes", "3"]);
    assert_eq!(passes.len(), 3);
    assert_eq!(
        (&passes[1]["ef"], &passes[2]["ef"]),
        (&64.into(), &10.into())
    );
    assert_eq!(passes[1]["passes"], 3);
    assert!(
        passes[1]["recall"].as_f64().unwrap() >= 0.95,
        "{}",
        passes[1]
    );
    assert!(passes[2]["qps"].as_f64().unwrap() > 0.0);
    let zero = ann_run(&["--passes", "0"]);
    let err = String::from_utf8_lossy(&zero.stderr);
    assert!(!zero.status.success() && err.contains("--passes"), "{err}");

    // With the graph alone first: its row, then the database's rate against it.
    let rows = ann(&["--ef", "64", "--batch-size", "500", "--graph-baseline"]);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["phase"], "graph_build");
    assert_eq!(
        (rows[0]["n"].as_u64(), rows[0]["batch_size"].as_u64()),
        (Some(2000), Some(500))
    );
    let graph = rows[0]["vectors_per_s"].as_f64().unwrap();
    let db = rows[1]["vectors_per_s"].as_f64().unwrap();
    assert_eq!(rows[1]["phase"], "build");
    assert_eq!(rows[1]["graph_vectors_per_s"].as_f64(), Some(graph));
    let vs = rows[1]["vs_graph"].as_f64().unwrap();
    assert!(
        graph > 0.0 && (vs - db / graph).abs() < 1e-9 * vs.max(1.0),
        "{}",
        rows[1]
    );
    // Both builds' CPU time per vector, and the graph's over the database's.
    let cpu = |row: &serde_json::Value, key: &str| row[key].as_f64();
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let (g, d) = (
            cpu(&rows[0], "cpu_us_per_vector").unwrap(),
            cpu(&rows[1], "cpu_us_per_vector").unwrap(),
        );
        assert!(g > 0.0 && d > 0.0, "{} {}", rows[0], rows[1]);
        assert_eq!(cpu(&rows[1], "graph_cpu_us_per_vector"), Some(g));
        let ratio = cpu(&rows[1], "cpu_vs_graph").unwrap();
        assert!((ratio - g / d).abs() < 1e-9 * ratio.max(1.0), "{}", rows[1]);
        for row in &rows[..2] {
            let (s, busy) = (cpu(row, "cpu_s").unwrap(), cpu(row, "cores_busy").unwrap());
            assert!(s > 0.0 && busy > 0.0, "{row}");
            assert!((s * 1e6 / 2000.0 - cpu(row, "cpu_us_per_vector").unwrap()).abs() < 1e-6);
        }
    }
    // ... and the graph alone answers the same queries: its recall and QPS beside the
    // database's (the same parameters and points: the same graph, so the same recall).
    let search = &rows[2];
    let (qps, gqps) = (
        search["qps"].as_f64().unwrap(),
        search["graph_qps"].as_f64().unwrap(),
    );
    assert!(gqps > 0.0, "{search}");
    let vs = search["vs_graph_qps"].as_f64().unwrap();
    assert!((vs - qps / gqps).abs() < 1e-9 * vs.max(1.0), "{search}");
    let (recall, grecall) = (
        search["recall"].as_f64().unwrap(),
        search["graph_recall"].as_f64().unwrap(),
    );
    assert!((recall - grecall).abs() <= 0.02, "{search}");
    assert!(grecall >= 0.95, "{search}");

    // With int8 the database rescores and the graph alone does not: no graph search figures.
    let rows = ann(&[
        "--ef",
        "64",
        "--batch-size",
        "500",
        "--graph-baseline",
        "--quantization",
        "int8",
    ]);
    assert_eq!(rows[2]["phase"], "search");
    assert!(rows[2]["graph_qps"].is_null(), "{}", rows[2]);
}
