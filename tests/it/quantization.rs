//! Int8-quantized collections through the facade: searches walk the graph on codes and
//! rescore `k * oversampling` candidates with their original vectors (from the rescoring file,
//! storage where the file cannot vouch for a slot, even when damaged), so recall matches
//! an f32 collection and scores are exact; `exact` requests stay exact; filters, deletes and
//! replaces; the quantized dump across a clean close and the change log across a crash; bad
//! settings refused before anything is stored.
//!
//! The crash child is this same test binary, re-executed with `LATENTDB_QUANT_CHILD` set.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use latentdb::index::{bench, synth};
use latentdb::{
    CollectionSpec, Database, DatabaseOptions, Document, Durability, ErrorKind, Metric,
    SearchRequest,
};
use serde_json::{Value, json};

const N: usize = 5_000;
const DIM: usize = 64;
const Q: usize = 100;
const K: usize = 10;

fn open_buffered(dir: &Path) -> Database {
    Database::open_with(dir, DatabaseOptions::new().durability(Durability::Buffered)).unwrap()
}

fn row(data: &[f32], i: usize) -> &[f32] {
    &data[i * DIM..(i + 1) * DIM]
}

/// Base rows and query rows, drawn from the same clusters: isotropic noise of the centres'
/// scale, so that a graph walk at a small `ef` misses some true neighbours and the recall
/// comparison between f32 and int8 means something.
fn data(seed: u64) -> (Vec<f32>, Vec<f32>) {
    let all = synth::clustered_vectors(N + Q, DIM, 10, 1.0, seed);
    let (base, queries) = all.split_at(N * DIM);
    (base.to_vec(), queries.to_vec())
}

/// Creates `name` with `index` settings and writes the rows of `base` (id = row number,
/// metadata `g` = row % 10).
fn fill(db: &Database, name: &str, metric: Metric, index: Value, base: &[f32]) {
    db.create_collection(CollectionSpec {
        index,
        ..CollectionSpec::new(name, DIM, metric)
    })
    .unwrap();
    let n = base.len() / DIM;
    for start in (0..n).step_by(1_000) {
        let docs = (start..(start + 1_000).min(n))
            .map(|i| {
                let mut d = Document::new(i.to_string(), row(base, i).to_vec());
                d.metadata = json!({"g": i % 10});
                d
            })
            .collect();
        db.upsert(name, docs).unwrap();
    }
}

/// The exact score of `v` for `q` under `metric`, in f64 (larger is better).
fn exact_score(metric: Metric, q: &[f32], v: &[f32]) -> f32 {
    let dot: f64 = q.iter().zip(v).map(|(a, b)| *a as f64 * *b as f64).sum();
    match metric {
        Metric::Cosine => {
            let nq: f64 = q.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            let nv: f64 = v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
            (dot / (nq * nv)) as f32
        }
        Metric::Dot => dot as f32,
        Metric::L2 => {
            -(q.iter()
                .zip(v)
                .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
                .sum::<f64>()
                .sqrt() as f32)
        }
    }
}

fn index_metric(m: Metric) -> latentdb::index::Metric {
    match m {
        Metric::Cosine => latentdb::index::Metric::Cosine,
        Metric::Dot => latentdb::index::Metric::Dot,
        Metric::L2 => latentdb::index::Metric::L2,
    }
}

/// The exact `K` nearest among `allowed` rows of `base` (row numbers), best first.
fn truth(metric: Metric, base: &[f32], allowed: &[usize], q: &[f32]) -> Vec<u32> {
    let sub: Vec<f32> = allowed
        .iter()
        .flat_map(|&i| row(base, i).iter().copied())
        .collect();
    bench::ground_truth(index_metric(metric), DIM, &sub, q, K)
        .pop()
        .unwrap()
        .into_iter()
        .map(|j| allowed[j as usize] as u32)
        .collect()
}

/// Runs one search; checks the hits come best first, each with the exact score of its
/// current vector (`current`: id -> vector) and no deleted id; returns the ids.
fn search_checked(
    db: &Database,
    name: &str,
    metric: Metric,
    req: &SearchRequest,
    current: &dyn Fn(&str) -> Option<Vec<f32>>,
) -> Vec<String> {
    let q = req.vector.as_deref().unwrap();
    let hits = db.search(name, req).unwrap();
    assert!(hits.len() <= req.k);
    for w in hits.windows(2) {
        assert!(w[0].score >= w[1].score, "best first: {hits:?}");
    }
    for h in &hits {
        let v = current(&h.id).unwrap_or_else(|| panic!("{name}: deleted {} returned", h.id));
        let want = exact_score(metric, q, &v);
        assert!(
            (h.score - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{name}: hit {} scored {} but its exact score is {want}",
            h.id,
            h.score
        );
    }
    hits.into_iter().map(|h| h.id.into_string()).collect()
}

fn recall(found: &[Vec<String>], truth: &[Vec<u32>]) -> f64 {
    let mut hit = 0usize;
    for (f, t) in found.iter().zip(truth) {
        let t: HashSet<String> = t.iter().map(|x| x.to_string()).collect();
        hit += f.iter().filter(|id| t.contains(*id)).count();
    }
    hit as f64 / (truth.len() * K) as f64
}

fn request(q: &[f32], ef: Option<usize>, filter: Option<Value>, exact: bool) -> SearchRequest {
    SearchRequest {
        k: K,
        ef,
        filter,
        exact,
        with_text: false,
        ..SearchRequest::vector(q.to_vec())
    }
}

#[test]
fn int8_search_rescored_from_storage_matches_f32_recall_with_exact_scores() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_buffered(dir.path());
    let metric = Metric::Cosine;
    let (base, queries) = data(7);
    fill(&db, "f", metric, Value::Null, &base);
    fill(&db, "q", metric, json!({"quantization": "int8"}), &base);

    let fs = db.index_stats("f").unwrap();
    let qs = db.index_stats("q").unwrap();
    assert!(!fs.quantized && qs.quantized, "{fs:?} {qs:?}");
    assert_eq!(qs.params.oversampling, 3);
    assert_eq!(fs.vector_bytes, 4 * N * DIM);
    assert!(
        qs.vector_bytes * 3 < fs.vector_bytes,
        "int8 holds {} bytes, f32 {}",
        qs.vector_bytes,
        fs.vector_bytes
    );

    let current = |id: &str| -> Option<Vec<f32>> {
        let i: usize = id.parse().ok()?;
        Some(row(&base, i).to_vec())
    };
    let all: Vec<usize> = (0..N).collect();
    let truths: Vec<Vec<u32>> = queries
        .chunks_exact(DIM)
        .map(|q| truth(metric, &base, &all, q))
        .collect();
    for ef in [32, 64] {
        let mut got = HashMap::new();
        for name in ["f", "q"] {
            let found: Vec<Vec<String>> = queries
                .chunks_exact(DIM)
                .map(|q| {
                    search_checked(
                        &db,
                        name,
                        metric,
                        &request(q, Some(ef), None, false),
                        &current,
                    )
                })
                .collect();
            got.insert(name, recall(&found, &truths));
        }
        let (rf, rq) = (got["f"], got["q"]);
        eprintln!("ef {ef}: recall@10 f32 {rf:.4}, int8 rescored {rq:.4}");
        assert!(
            rq >= rf - 0.01,
            "ef {ef}: int8 recall {rq} < f32 recall {rf} - 0.01"
        );
        assert!(rq > 0.8, "ef {ef}: int8 recall {rq}");
    }

    // exact = true: brute force over the stored f32 vectors, identical to the truth.
    for q in queries.chunks_exact(DIM).take(20) {
        let ids = search_checked(&db, "q", metric, &request(q, None, None, true), &current);
        let want: Vec<String> = truth(metric, &base, &all, q)
            .iter()
            .map(|x| x.to_string())
            .collect();
        assert_eq!(ids, want);
    }

    // Filters: 500 matching points (the planner scans them: codes, then rescoring) and 4,500
    // (a graph walk with the allow-list), approximate and exact.
    let filters = [
        (
            json!({"g": 3}),
            (0..N).filter(|i| i % 10 == 3).collect::<Vec<_>>(),
        ),
        (
            json!({"g": {"$in": [1, 2, 3, 4, 5, 6, 7, 8, 9]}}),
            (0..N).filter(|i| i % 10 != 0).collect(),
        ),
    ];
    for (filter, allowed) in &filters {
        let truths: Vec<Vec<u32>> = queries
            .chunks_exact(DIM)
            .map(|q| truth(metric, &base, allowed, q))
            .collect();
        let mut got = HashMap::new();
        for name in ["f", "q"] {
            let found: Vec<Vec<String>> = queries
                .chunks_exact(DIM)
                .map(|q| {
                    let req = request(q, Some(32), Some(filter.clone()), false);
                    let ids = search_checked(&db, name, metric, &req, &current);
                    assert_eq!(ids.len(), K);
                    for id in &ids {
                        let i: usize = id.parse().unwrap();
                        assert!(allowed.binary_search(&i).is_ok(), "{id} fails {filter}");
                    }
                    ids
                })
                .collect();
            got.insert(name, recall(&found, &truths));
        }
        let (rf, rq) = (got["f"], got["q"]);
        eprintln!("filter {filter}: recall@10 f32 {rf:.4}, int8 rescored {rq:.4}");
        assert!(
            rq >= rf - 0.01,
            "{filter}: int8 recall {rq} < f32 recall {rf} - 0.01"
        );
        for (q, t) in queries.chunks_exact(DIM).zip(&truths).take(10) {
            let req = request(q, None, Some(filter.clone()), true);
            let ids = search_checked(&db, "q", metric, &req, &current);
            let want: Vec<String> = t.iter().map(|x| x.to_string()).collect();
            assert_eq!(ids, want, "exact search with {filter}");
        }
    }

    // A wider k: k = 50 asks the graph for 150 candidates, still exact scores.
    let wide = SearchRequest {
        k: 50,
        with_text: false,
        ..SearchRequest::vector(row(&queries, 0).to_vec())
    };
    assert_eq!(search_checked(&db, "q", metric, &wide, &current).len(), 50);

    // The dense leg of a hybrid search is rescored too (these documents have no text, so the
    // fused list is the dense one): its dense scores are exact and its ranking the truth's.
    for (q, t) in queries.chunks_exact(DIM).zip(&truths).take(10) {
        let req = SearchRequest {
            mode: Some(latentdb::SearchMode::Hybrid),
            text: Some("anything".into()),
            explain: true,
            ..request(q, None, None, false)
        };
        let hits = db.search("q", &req).unwrap();
        assert_eq!(hits.len(), K);
        let mut found = 0;
        for h in &hits {
            let e = h.explain.unwrap();
            let want = exact_score(metric, q, &current(&h.id).unwrap());
            let got = e.dense_score.unwrap();
            assert!(
                (got - want).abs() <= 1e-5,
                "hybrid dense score {got}, exact {want}"
            );
            found += usize::from(t.iter().any(|x| x.to_string() == h.id));
        }
        assert!(found >= 8, "hybrid found {found} of the true 10");
    }

    // Deletes and replaces: a deleted document never comes back, a replaced one only with
    // its new vector (its score is checked against the current vector).
    let deleted: Vec<String> = (0..N).step_by(7).map(|i| i.to_string()).collect();
    db.delete("q", &deleted).unwrap();
    let replaced: Vec<usize> = (3..N).step_by(11).filter(|i| i % 7 != 0).collect();
    let fresh = synth::embedding_like(replaced.len(), DIM, 99);
    let docs = replaced
        .iter()
        .enumerate()
        .map(|(j, &i)| Document::new(i.to_string(), row(&fresh, j).to_vec()))
        .collect();
    db.upsert("q", docs).unwrap();
    let dead: HashSet<String> = deleted.iter().cloned().collect();
    let new_of: HashMap<String, Vec<f32>> = replaced
        .iter()
        .enumerate()
        .map(|(j, &i)| (i.to_string(), row(&fresh, j).to_vec()))
        .collect();
    let current = |id: &str| -> Option<Vec<f32>> {
        if dead.contains(id) {
            return None;
        }
        if let Some(v) = new_of.get(id) {
            return Some(v.clone());
        }
        let i: usize = id.parse().ok()?;
        Some(row(&base, i).to_vec())
    };
    // Query with the old vectors of deleted and replaced documents, plan and exact.
    for i in (0..N)
        .step_by(7)
        .take(30)
        .chain(replaced.iter().copied().take(30))
    {
        let q = row(&base, i);
        for exact in [false, true] {
            let ids = search_checked(&db, "q", metric, &request(q, None, None, exact), &current);
            assert_eq!(ids.len(), K);
        }
        let f = json!({"g": i % 10});
        search_checked(
            &db,
            "q",
            metric,
            &request(q, None, Some(f), false),
            &current,
        );
    }
}

#[test]
fn bad_quantization_settings_are_invalid_arguments_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_buffered(dir.path());
    for index in [
        json!({"quantization": "int4"}),
        json!({"quantization": 8}),
        json!({"quantization": "int8", "oversampling": 0}),
        json!({"quantization": "int8", "oversampling": 101}),
    ] {
        let err = db
            .create_collection(CollectionSpec {
                index: index.clone(),
                ..CollectionSpec::new("bad", 8, Metric::Cosine)
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{index}: {err}");
        assert!(
            db.list_collections().is_empty(),
            "{index} stored a collection"
        );
        assert!(db.collection_info("bad").is_err());
    }
    // The settings are stored complete.
    let info = db
        .create_collection(CollectionSpec {
            index: json!({"quantization": "int8", "oversampling": 5}),
            ..CollectionSpec::new("good", 8, Metric::Cosine)
        })
        .unwrap();
    assert_eq!(info.index["quantization"], "int8");
    assert_eq!(info.index["oversampling"], 5);
    let stats = db.index_stats("good").unwrap();
    assert!(!stats.quantized, "no codes before 1,024 points");
}

/// Searches as (id, score) lists, approximate and exact, for queries `qs`.
fn results(db: &Database, name: &str, queries: &[f32]) -> Vec<Vec<(String, f32)>> {
    let mut out = Vec::new();
    for exact in [false, true] {
        for q in queries.chunks_exact(DIM) {
            let hits = db.search(name, &request(q, Some(40), None, exact)).unwrap();
            out.push(
                hits.into_iter()
                    .map(|h| (h.id.into_string(), h.score))
                    .collect(),
            );
        }
    }
    out
}

/// Writes `n` L2 rows with deletes and replaces into collection `c` of a database at `dir`.
fn write_l2(db: &Database, base: &[f32]) {
    db.create_collection(CollectionSpec {
        index: json!({"quantization": "int8", "oversampling": 4}),
        ..CollectionSpec::new("c", DIM, Metric::L2)
    })
    .unwrap();
    let n = 2_000;
    for start in (0..n).step_by(500) {
        let docs = (start..start + 500)
            .map(|i| Document::new(i.to_string(), row(base, i).to_vec()))
            .collect();
        db.upsert("c", docs).unwrap();
    }
    let gone: Vec<String> = (0..n).step_by(5).map(|i| i.to_string()).collect();
    db.delete("c", &gone).unwrap();
    // Replace rows 1, 6, 11, ... with rows from beyond n.
    let docs = (1..n)
        .step_by(5)
        .map(|i| Document::new(i.to_string(), row(base, n + i).to_vec()))
        .collect();
    db.upsert("c", docs).unwrap();
}

#[test]
fn quantized_dump_reloads_after_close_with_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let (base, queries) = data(11);
    let queries = &queries[..20 * DIM];
    let before = {
        let db = open_buffered(dir.path());
        write_l2(&db, &base);
        assert!(db.index_stats("c").unwrap().quantized);
        results(&db, "c", queries)
    };
    let db = open_buffered(dir.path());
    let stats = db.index_stats("c").unwrap();
    assert!(
        stats.loaded_from_dump && !stats.rebuilt_on_open,
        "{stats:?}"
    );
    assert_eq!(stats.replayed, 0, "{stats:?}");
    assert!(stats.quantized, "the dump kept the codes: {stats:?}");
    assert_eq!(results(&db, "c", queries), before);
    check_l2_state(&db, &base, queries);
}

/// The state `write_l2` left, checked through searches: deleted rows never come back, replaced
/// rows score with their new vectors, exact search is brute force over the live vectors.
fn check_l2_state(db: &Database, base: &[f32], queries: &[f32]) {
    let n = 2_000;
    let current = |id: &str| -> Option<Vec<f32>> {
        let i: usize = id.parse().ok()?;
        match i % 5 {
            _ if i >= n => None,
            0 => None,
            1 => Some(row(base, n + i).to_vec()),
            _ => Some(row(base, i).to_vec()),
        }
    };
    let live: Vec<usize> = (0..n).filter(|i| i % 5 != 0).collect();
    let live_base: Vec<f32> = (0..n)
        .flat_map(|i| match i % 5 {
            1 => row(base, n + i).to_vec(),
            _ => row(base, i).to_vec(),
        })
        .collect();
    assert_eq!(db.count("c").unwrap(), live.len() as u64);
    for q in queries.chunks_exact(DIM) {
        search_checked(
            db,
            "c",
            Metric::L2,
            &request(q, None, None, false),
            &current,
        );
        let ids = search_checked(db, "c", Metric::L2, &request(q, None, None, true), &current);
        let want: Vec<String> = truth(Metric::L2, &live_base, &live, q)
            .iter()
            .map(|x| x.to_string())
            .collect();
        assert_eq!(ids, want);
    }
}

#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn quant_crash_child() {
    let Ok(dir) = std::env::var("LATENTDB_QUANT_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let (base, queries) = data(13);
    // Default durability: every acknowledged write is on disk.
    let db = Database::open(&dir).unwrap();
    write_l2(&db, &base);
    // The dump reflects everything so far; the writes after it live only in the change log.
    db.flush().unwrap();
    let tail = (4_000..4_100)
        .map(|i| Document::new(format!("t{i}"), row(&base, i).to_vec()))
        .collect();
    db.upsert("c", tail).unwrap();
    let out = results(&db, "c", &queries[..10 * DIM]);
    println!("RESULTS {}", serde_json::to_string(&out).unwrap());
    // No drop, no close: the process ends with its index unpersisted (exit runs no
    // destructors).
    std::process::exit(3);
}

#[test]
fn quantized_collection_recovers_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([
            "quantization::quant_crash_child",
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LATENTDB_QUANT_CHILD", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before: Option<Vec<Vec<(String, f32)>>> = None;
    for line in lines.map_while(Result::ok) {
        // libtest may print the test's name on the same line first.
        if let Some(at) = line.find("RESULTS ") {
            before = Some(serde_json::from_str(&line[at + "RESULTS ".len()..]).unwrap());
        }
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "the child exits without closing");
    let before = before.expect("the child printed its results");

    let (base, queries) = data(13);
    let db = Database::open(dir.path()).unwrap();
    let stats = db.index_stats("c").unwrap();
    assert!(stats.quantized, "{stats:?}");
    assert!(stats.loaded_from_dump, "{stats:?}");
    assert!(
        stats.replayed > 0,
        "the tail from the change log: {stats:?}"
    );
    let after = results(&db, "c", &queries[..10 * DIM]);
    // Exact results are identical; approximate ones too, scores exact, unless the replayed
    // tail linked differently (then every hit still carries its exact score, checked below).
    let half = after.len() / 2;
    assert_eq!(
        after[half..],
        before[half..],
        "exact results after the crash"
    );
    let same = after[..half]
        .iter()
        .zip(&before[..half])
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        same * 10 >= half * 9,
        "{same} of {half} approximate results identical"
    );
    // The tail written after the last dump was replayed: each finds itself first.
    for i in (4_000..4_100).step_by(9) {
        let hits = db
            .search("c", &request(row(&base, i), None, None, false))
            .unwrap();
        assert_eq!(hits[0].id, format!("t{i}"));
        assert_eq!(hits[0].score, 0.0);
    }
}

/// The rescoring file (the original vectors of an int8 collection, read through a map) is a
/// cache: whatever happens to it between two opens (bits flipped, cut mid-slot, replaced by
/// garbage, removed), searches give the same hits with exact scores, reading storage for what
/// the file cannot vouch for and repairing it as they go.
#[test]
fn a_damaged_or_missing_rescoring_file_changes_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let (base, queries) = data(17);
    let queries = &queries[..20 * DIM];
    let before = {
        let db = open_buffered(dir.path());
        write_l2(&db, &base);
        let stats = db.index_stats("c").unwrap();
        assert!(stats.quantized, "{stats:?}");
        // 4,000 point ids were given (2,000 rows, then 400 replaced): a slot each, 8 + 4 * DIM
        // bytes, after a 64-byte header.
        assert!(
            stats.rescore_file_bytes >= 64 + 2_400 * (8 + 4 * DIM as u64),
            "{stats:?}"
        );
        results(&db, "c", queries)
    };
    let index_dir = dir.path().join(latentdb::INDEX_DIR);
    let cid_dir = std::fs::read_dir(&index_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    let file = cid_dir.join("rescore-vectors.bin");
    let pristine = std::fs::read(&file).unwrap();
    let slot = 8 + 4 * DIM;
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "a bit flipped in every tenth slot",
            Box::new(move |b: &mut Vec<u8>| {
                let mut at = 64 + 8 + 3;
                while at < b.len() {
                    b[at] ^= 0x04;
                    at += 10 * slot;
                }
            }),
        ),
        (
            "cut in the middle of a slot",
            Box::new(move |b: &mut Vec<u8>| b.truncate(64 + 700 * slot + slot / 2)),
        ),
        (
            "garbage after the header",
            Box::new(|b: &mut Vec<u8>| {
                for (i, x) in b.iter_mut().enumerate().skip(64) {
                    *x = (i * 131 % 251) as u8;
                }
            }),
        ),
        ("a wrong header", Box::new(|b: &mut Vec<u8>| b[12] ^= 1)),
    ];
    // Slots whose bytes are the pristine file's.
    let intact = |bytes: &[u8]| {
        (0..(pristine.len() - 64) / slot)
            .filter(|i| {
                let r = 64 + i * slot..64 + (i + 1) * slot;
                bytes.get(r.clone()) == Some(&pristine[r])
            })
            .count()
    };
    for (what, damage) in &damages {
        let mut bytes = pristine.clone();
        damage(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let db = open_buffered(dir.path());
        assert_eq!(results(&db, "c", queries), before, "{what}");
        check_l2_state(&db, &base, queries);
        drop(db);
        if bytes[..64] == pristine[..64] {
            let (was, now) = (intact(&bytes), intact(&std::fs::read(&file).unwrap()));
            assert!(
                now > was,
                "{what}: {was} intact slots before the searches, {now} after"
            );
        }
        // The searches repaired the slots they needed: a second open reads them back.
        let db = open_buffered(dir.path());
        assert_eq!(results(&db, "c", queries), before, "{what}, repaired");
    }
    std::fs::remove_file(&file).unwrap();
    let db = open_buffered(dir.path());
    assert_eq!(results(&db, "c", queries), before, "removed");
    assert!(db.index_stats("c").unwrap().rescore_file_bytes > 64);
}
