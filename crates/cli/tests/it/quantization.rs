//! Int8 quantization from the command line: `collection create --quantization int8` and the
//! other index flags, `collection info` showing them, `bench ann --quantization int8`.

use std::process::Output;

use serde_json::Value;

use crate::search::{lines, run};

fn fails_with(o: &Output, needle: &str) {
    assert!(
        !o.status.success(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

#[test]
fn collection_create_takes_index_settings_and_info_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let created = lines(&run(
        d,
        &[
            "collection",
            "create",
            "q",
            "--dim",
            "16",
            "--quantization",
            "int8",
            "--oversampling",
            "4",
            "--m",
            "8",
            "--ef-construction",
            "100",
            "--ef-search",
            "50",
            "--json",
        ],
        None,
    ));
    assert_eq!(
        created[0]["index"]["quantization"], "int8",
        "{}",
        created[0]
    );
    let info = lines(&run(d, &["collection", "info", "q", "--json"], None));
    let index = &info[0]["index"];
    assert_eq!(index["quantization"], "int8", "{}", info[0]);
    assert_eq!(index["oversampling"], 4);
    assert_eq!(index["m"], 8);
    assert_eq!(index["ef_construction"], 100);
    assert_eq!(index["ef_search"], 50);
    assert_eq!(info[0]["quantized"], false, "no codes before 1,024 points");

    // Past 1,024 points the index holds codes: a quarter of the f32 bytes and a little more.
    let docs: String = (0..1_100)
        .map(|i| {
            let v: Vec<f32> = (0..16)
                .map(|j| (((i * 31 + j * 7) % 97) as f32 / 97.0) - 0.5)
                .collect();
            format!("{{\"id\":\"d{i}\",\"vector\":{v:?}}}\n")
        })
        .collect();
    lines(&run(
        d,
        &["upsert", "q", "--file", "-", "--json"],
        Some(&docs),
    ));
    let info = lines(&run(d, &["collection", "info", "q", "--json"], None));
    assert_eq!(info[0]["quantized"], true, "{}", info[0]);
    let bytes = info[0]["vector_bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes * 3 < 4 * 1_100 * 16, "{}", info[0]);
    // All the index holds (codes, links, ids) and the payload index (ids at least).
    let index_bytes = info[0]["index_bytes"].as_u64().unwrap();
    assert!(index_bytes > bytes + 1_100 * 4, "{}", info[0]);
    assert!(
        info[0]["payload_bytes"].as_u64().unwrap() >= 1_100 * 32,
        "{}",
        info[0]
    );
    // The rescoring file: a 64-byte header and a slot of 8 + 4 * 16 bytes per point.
    assert!(
        info[0]["rescore_file_bytes"].as_u64().unwrap() >= 64 + 1_100 * 72,
        "{}",
        info[0]
    );
    // Searches answer with exact scores: a stored vector finds itself at similarity 1.
    let q = format!(
        "{:?}",
        (0..16)
            .map(|j| ((j * 7 % 97) as f32 / 97.0) - 0.5)
            .collect::<Vec<f32>>()
    );
    let hits = lines(&run(
        d,
        &["search", "q", "--vector", &q, "-k", "3", "--json"],
        None,
    ));
    assert_eq!(hits[0]["id"], "d0");
    assert!(
        (hits[0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5,
        "{}",
        hits[0]
    );

    // Text output names the quantization.
    let text = run(d, &["collection", "info", "q"], None);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains("quantization=int8") && text.contains("quantized=true"),
        "{text}"
    );
    let plain = lines(&run(
        d,
        &["collection", "create", "p", "--dim", "4", "--json"],
        None,
    ));
    assert_eq!(plain[0]["index"]["quantization"], "none");

    // Bad settings: refused, nothing created.
    fails_with(
        &run(
            d,
            &[
                "collection",
                "create",
                "bad",
                "--dim",
                "4",
                "--quantization",
                "int8",
                "--oversampling",
                "0",
            ],
            None,
        ),
        "oversampling",
    );
    fails_with(
        &run(
            d,
            &[
                "collection",
                "create",
                "bad",
                "--dim",
                "4",
                "--quantization",
                "int4",
            ],
            None,
        ),
        "int4",
    );
    fails_with(
        &run(
            d,
            &["collection", "create", "bad", "--dim", "4", "--m", "1"],
            None,
        ),
        "m must be",
    );
    let list = lines(&run(d, &["collection", "list", "--json"], None));
    let names: Vec<&str> = list.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["p", "q"]);
}

#[test]
fn bench_ann_with_int8_reports_quantization_and_vector_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    lines(&run(
        d,
        &[
            "bench",
            "gen-data",
            "--n",
            "2000",
            "--dim",
            "32",
            "--queries",
            "50",
            "--gt-k",
            "10",
            "--out",
            data.to_str().unwrap(),
            "--json",
        ],
        None,
    ));
    let (base, queries, gt) = (
        data.join("base.npy"),
        data.join("queries.npy"),
        data.join("gt.npy"),
    );
    let bench = |extra: &[&str]| -> Vec<Value> {
        let mut args = vec![
            "bench",
            "ann",
            "--base",
            base.to_str().unwrap(),
            "--queries",
            queries.to_str().unwrap(),
            "--gt",
            gt.to_str().unwrap(),
            "--ef",
            "64",
            "--json",
        ];
        args.extend_from_slice(extra);
        lines(&run(d, &args, None))
    };
    let f32_rows = bench(&[]);
    let q_rows = bench(&["--quantization", "int8", "--oversampling", "5"]);
    assert_eq!(q_rows.len(), 2);
    let (fb, qb) = (&f32_rows[0], &q_rows[0]);
    assert_eq!(fb["quantization"], "none", "{fb}");
    assert_eq!(qb["phase"], "build");
    assert_eq!(qb["quantization"], "int8", "{qb}");
    assert_eq!(qb["oversampling"], 5);
    assert_eq!(qb["quantized"], true);
    assert_eq!(qb["f32_vector_bytes"], 4 * 2000 * 32);
    assert_eq!(fb["vector_bytes"], fb["f32_vector_bytes"], "{fb}");
    let qbytes = qb["vector_bytes"].as_u64().unwrap();
    assert!(qbytes > 0 && qbytes * 3 < 4 * 2000 * 32, "{qb}");
    let (fs, qs) = (&f32_rows[1], &q_rows[1]);
    assert_eq!(qs["phase"], "search");
    assert_eq!(qs["quantization"], "int8");
    assert_eq!(qs["oversampling"], 5);
    let (rf, rq) = (
        fs["recall"].as_f64().unwrap(),
        qs["recall"].as_f64().unwrap(),
    );
    assert!(rq >= rf - 0.02 && rq >= 0.9, "int8 {qs} vs f32 {fs}");
    assert!(qs["qps"].as_f64().unwrap() > 0.0);
}
