//! Lexical and hybrid search through the facade: the BM25 index follows every write, is
//! persisted with the vector index and survives crashes, damage and settings changes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use latentdb::{
    CollectionSpec, Database, Document, ErrorKind, FusionMethod, LexicalSettings, Metric,
    SearchHit, SearchMode, SearchRequest,
};
use serde_json::json;

const DIM: usize = 8;

/// A small vocabulary: texts and queries are drawn from it, so that terms repeat.
const WORDS: [&str; 40] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "apple", "banana", "cherry", "date",
    "elder", "fig", "grape", "hazel", "iris", "jade", "kiwi", "lemon", "mango", "nutmeg",
];

/// A deterministic text for document `n`: 5 to 24 words.
fn text(n: u64) -> String {
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let len = 5 + (n % 20) as usize;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Skewed: low indexes are more frequent.
            let r = (x >> 33) % 1600;
            WORDS[((r as f64).sqrt() as usize).min(WORDS.len() - 1)]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn doc(n: u64) -> Document {
    Document::new(format!("d{n:05}"), crate::common::vector(n, DIM))
        .with_text(text(n))
        .with_metadata(json!({"n": n, "even": n.is_multiple_of(2)}))
}

fn queries() -> Vec<String> {
    (0..100u64)
        .map(|q| {
            let a = WORDS[(q * 7 % 40) as usize];
            let b = WORDS[(q * 13 % 40) as usize];
            if q % 3 == 0 {
                a.to_string()
            } else {
                format!("{a} {b}")
            }
        })
        .collect()
}

fn lexical(q: &str, k: usize) -> SearchRequest {
    SearchRequest {
        text: Some(q.into()),
        mode: Some(SearchMode::Lexical),
        k,
        with_text: false,
        with_metadata: false,
        ..SearchRequest::default()
    }
}

fn ids_scores(hits: &[SearchHit]) -> Vec<(String, f32)> {
    hits.iter().map(|h| (h.id.to_string(), h.score)).collect()
}

/// The top-10 lexical hits of the 100 queries.
fn top10(db: &Database, coll: &str) -> Vec<Vec<(String, f32)>> {
    queries()
        .iter()
        .map(|q| ids_scores(&db.search(coll, &lexical(q, 10)).unwrap()))
        .collect()
}

/// Same ids in the same order (ties aside) and scores within 1e-5 relative.
fn assert_same(a: &[Vec<(String, f32)>], b: &[Vec<(String, f32)>]) {
    assert_eq!(a.len(), b.len());
    for (qa, qb) in a.iter().zip(b) {
        assert_eq!(qa.len(), qb.len(), "{qa:?} vs {qb:?}");
        for ((ia, sa), (ib, sb)) in qa.iter().zip(qb) {
            assert!(
                (sa - sb).abs() <= 1e-5 * sa.abs().max(1.0),
                "{ia} {sa} vs {ib} {sb}"
            );
        }
        // Ties may order (and cut) differently only among equal scores: the hits scoring
        // above the last one must be the same documents.
        let above = |q: &[(String, f32)]| {
            let cut = q.last().map_or(f32::NEG_INFINITY, |x| x.1);
            let mut v: Vec<String> = q
                .iter()
                .filter(|x| x.1 > cut + 1e-5 * cut.abs().max(1.0))
                .map(|x| x.0.clone())
                .collect();
            v.sort();
            v
        };
        assert_eq!(above(qa), above(qb));
    }
}

/// The same documents in a fresh database: what a rebuild gives.
fn fresh_copy(db: &Database, coll: &str, dir: &Path) -> Database {
    let fresh = Database::open(dir).unwrap();
    fresh
        .create_collection(CollectionSpec::new(coll, DIM, Metric::Cosine))
        .unwrap();
    let mut after = None;
    loop {
        let page = db.scroll(coll, after.as_deref(), 500).unwrap();
        if page.records.is_empty() {
            break;
        }
        let docs: Vec<Document> = page
            .records
            .iter()
            .map(|r| {
                let mut d = Document::new(r.id.clone(), r.vector.clone())
                    .with_metadata(serde_json::Value::Object(r.metadata.clone()));
                if let Some(t) = &r.text {
                    d = d.with_text(t.clone());
                }
                d
            })
            .collect();
        fresh.upsert(coll, docs).unwrap();
        match page.next_cursor {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    fresh
}

#[test]
fn lexical_search_follows_every_write_with_exact_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path().join("a")).unwrap();
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    db.upsert("c", (0..600).map(doc).collect()).unwrap();
    // Visible as soon as the write returns.
    db.upsert(
        "c",
        vec![Document::new("new", crate::common::vector(9_999, DIM)).with_text("zeppelin")],
    )
    .unwrap();
    let hits = db.search("c", &lexical("Zeppelin", 5)).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "new");
    // Deletes (by id, by filter) and replaces (new text, and a text removed).
    let gone: Vec<String> = (0..600).step_by(10).map(|n| format!("d{n:05}")).collect();
    db.delete("c", &gone).unwrap();
    db.delete_by_filter("c", &json!({"n": {"$gte": 590}}))
        .unwrap();
    db.upsert(
        "c",
        vec![
            Document::new("d00001", crate::common::vector(1, DIM)).with_text("zeppelin zeppelin"),
            Document::new("d00003", crate::common::vector(3, DIM)),
        ],
    )
    .unwrap();
    let hits = db.search("c", &lexical("zeppelin", 5)).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["d00001", "new"]
    );
    let stats = db.lexical_stats("c").unwrap().unwrap();
    // 601 written, 60 deleted by id, 9 more by filter (590..600 minus 590 already gone),
    // d00003 kept without text.
    assert_eq!(stats.docs, 601 - 60 - 9 - 1);
    // Exactly what a fresh index of the same documents gives.
    let fresh = fresh_copy(&db, "c", &dir.path().join("b"));
    assert_same(&top10(&db, "c"), &top10(&fresh, "c"));
    assert_eq!(fresh.lexical_stats("c").unwrap().unwrap().docs, stats.docs);
}

#[test]
fn filters_apply_to_both_legs_and_explain_shows_the_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    db.upsert("c", (0..300).map(doc).collect()).unwrap();
    let q = crate::common::vector(42, DIM);
    for mode in SearchMode::ALL {
        let req = SearchRequest {
            vector: (mode != SearchMode::Lexical).then(|| q.clone()),
            // A dense search takes a vector or a text, not both.
            text: (mode != SearchMode::Dense).then(|| "mango nutmeg".into()),
            mode: Some(mode),
            filter: Some(json!({"even": true})),
            k: 20,
            explain: true,
            ..SearchRequest::default()
        };
        let hits = db.search("c", &req).unwrap();
        assert_eq!(hits.len(), 20, "{mode}");
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(h.metadata["even"], true, "{mode}: {h:?}");
            let e = h.explain.expect("explain");
            match mode {
                SearchMode::Dense => {
                    assert_eq!(e.dense_rank, Some(i + 1));
                    assert_eq!(e.dense_score, Some(h.score));
                    assert!(e.lexical_rank.is_none() && e.fused_score.is_none());
                }
                SearchMode::Lexical => {
                    assert_eq!(e.lexical_rank, Some(i + 1));
                    assert_eq!(e.lexical_score, Some(h.score));
                    assert!(e.dense_rank.is_none());
                }
                SearchMode::Hybrid => {
                    assert_eq!(e.fused_score, Some(h.score));
                    assert!(e.dense_rank.is_some() || e.lexical_rank.is_some());
                }
            }
        }
        if mode == SearchMode::Hybrid {
            // Min-max blended 50/50 by default: fused scores in [0, 1], best first.
            let settings = db.lexical_settings("c").unwrap();
            assert_eq!(settings.fusion.method, FusionMethod::MinMax);
            assert_eq!(settings.fusion.weights, [0.5, 0.5]);
            for h in &hits {
                assert!((0.0..=1.0 + 1e-6).contains(&h.score), "{h:?}");
            }
            let scores: Vec<f32> = hits.iter().map(|h| h.score).collect();
            let mut sorted = scores.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            assert_eq!(scores, sorted);
            // RRF on request, recomputed from the explained ranks.
            let rrf = SearchRequest {
                fusion: Some(FusionMethod::Rrf),
                rrf_k: Some(2.0),
                weights: Some([1.0, 0.5]),
                ..req.clone()
            };
            for h in &db.search("c", &rrf).unwrap() {
                let e = h.explain.unwrap();
                let part = |r: Option<usize>, w: f32| r.map_or(0.0, |r| w / (2.0 + r as f32));
                let want = part(e.dense_rank, 1.0) + part(e.lexical_rank, 0.5);
                assert!((want - h.score).abs() < 1e-6, "{h:?}");
            }
        }
    }
    // Without explain, no explain.
    let hits = db.search("c", &lexical("alpha", 3)).unwrap();
    assert!(hits.iter().all(|h| h.explain.is_none()));
}

#[test]
fn modes_resolve_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    db.upsert("c", (0..50).map(doc).collect()).unwrap();
    // A text query without a mode, in a collection without a model but with text: lexical.
    let hits = db.search("c", &SearchRequest::text("alpha")).unwrap();
    assert!(!hits.is_empty());
    let lex = db.search("c", &lexical("alpha", 10)).unwrap();
    assert_eq!(ids_scores(&hits), ids_scores(&lex));
    // A vector query without a mode: dense, as before.
    let v = crate::common::vector(7, DIM);
    let dense = db.search("c", &SearchRequest::vector(v.clone())).unwrap();
    assert_eq!(dense[0].id, "d00007");

    let bad = |req: SearchRequest, kind: ErrorKind, what: &str| {
        let e = db.search("c", &req).unwrap_err();
        assert_eq!(e.kind(), kind, "{what}: {e}");
    };
    bad(
        SearchRequest {
            mode: Some(SearchMode::Lexical),
            ..SearchRequest::vector(v.clone())
        },
        ErrorKind::InvalidArgument,
        "lexical without text",
    );
    bad(
        SearchRequest {
            mode: Some(SearchMode::Hybrid),
            ..SearchRequest::text("alpha")
        },
        ErrorKind::FailedPrecondition,
        "hybrid without a vector or a model",
    );
    bad(
        SearchRequest {
            mode: Some(SearchMode::Dense),
            ..SearchRequest::text("alpha")
        },
        ErrorKind::FailedPrecondition,
        "dense text query without a model",
    );
    for (weights, rrf_k, depth) in [
        (Some([0.0, 0.0]), None, None),
        (Some([f32::NAN, 1.0]), None, None),
        (None, Some(0.0), None),
        (None, Some(f32::INFINITY), None),
        (None, None, Some(0)),
        (None, None, Some(1_000_000)),
    ] {
        bad(
            SearchRequest {
                vector: Some(v.clone()),
                text: Some("alpha".into()),
                mode: Some(SearchMode::Hybrid),
                weights,
                rrf_k,
                depth,
                ..SearchRequest::default()
            },
            ErrorKind::InvalidArgument,
            "fusion parameters",
        );
    }
    bad(
        SearchRequest {
            bm25: Some(latentdb::Bm25Params { k1: -1.0, b: 0.75 }),
            ..lexical("alpha", 5)
        },
        ErrorKind::InvalidArgument,
        "bm25 parameters",
    );
    // Lexical settings: checked, stored, applied.
    for bad_settings in [
        json!({"analyzer": {"stemmer": "klingon"}}),
        json!({"unknown": 1}),
        json!({"depth": 0}),
        json!({"fusion": {"method": "rrf", "rrf_k": -2, "weights": [1, 1]}}),
    ] {
        let e = LexicalSettings::from_json(&bad_settings).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad_settings}");
        let e = db
            .create_collection(CollectionSpec {
                lexical: bad_settings.clone(),
                ..CollectionSpec::new("bad", DIM, Metric::Cosine)
            })
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad_settings}");
        assert!(db.collection_info("bad").is_err(), "nothing stored");
    }
    // Disabled: lexical searches fail with a precondition, dense ones work, nothing indexed.
    let mut off = db.lexical_settings("c").unwrap();
    off.enabled = false;
    db.set_lexical_settings("c", off).unwrap();
    assert!(db.lexical_stats("c").unwrap().is_none());
    bad(
        lexical("alpha", 5),
        ErrorKind::FailedPrecondition,
        "lexical disabled",
    );
    assert_eq!(
        db.search("c", &SearchRequest::vector(v.clone())).unwrap()[0].id,
        "d00007"
    );
    db.upsert("c", (50..60).map(doc).collect()).unwrap();
    // Enabled again without the (default) stemmer: rebuilt from the stored text, the later
    // writes included.
    let mut on = db.lexical_settings("c").unwrap();
    on.enabled = true;
    on.analyzer.stemmer = None;
    db.set_lexical_settings("c", on.clone()).unwrap();
    assert_eq!(db.lexical_stats("c").unwrap().unwrap().docs, 60);
    assert_eq!(db.lexical_settings("c").unwrap(), on);
    assert_eq!(
        LexicalSettings::from_json(&db.collection_info("c").unwrap().lexical).unwrap(),
        on
    );
}

/// The child: writes, dumps, writes more, and exits without closing the database (no dump
/// on close), so that the next open must replay the change log onto the dump.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn lexical_exit_child() {
    let Ok(dir) = std::env::var("LATENTDB_LEXICAL_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let db = Database::open(&dir).unwrap();
    db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
        .unwrap();
    db.upsert("c", (0..400).map(doc).collect()).unwrap();
    db.flush().unwrap(); // dumps both indexes at this sequence
    db.upsert("c", (400..450).map(doc).collect()).unwrap();
    let gone: Vec<String> = (0..100).map(|n| format!("d{n:05}")).collect();
    db.delete("c", &gone).unwrap();
    db.upsert(
        "c",
        vec![Document::new("d00200", crate::common::vector(200, DIM)).with_text("zeppelin")],
    )
    .unwrap();
    println!("@cid {}", db.collection_uid("c").unwrap());
    std::process::exit(0);
}

#[test]
fn the_lexical_dump_is_loaded_caught_up_and_rebuilt_when_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "hybrid::lexical_exit_child",
            "--ignored",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LATENTDB_LEXICAL_CHILD", dir.path())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cid: u64 = stdout
        .lines()
        .find_map(|l| l.split_once("@cid ").map(|(_, c)| c))
        .unwrap_or_else(|| panic!("child failed: {stdout}"))
        .trim()
        .parse()
        .unwrap();
    let db = Database::open(dir.path()).unwrap();
    let info = db.index_stats("c").unwrap();
    assert!(info.lexical_opened.loaded_from_dump, "{info:?}");
    assert!(info.lexical_opened.replayed > 0, "{info:?}");
    assert_eq!(info.lexical.as_ref().unwrap().docs, 350);
    let hits = db.search("c", &lexical("zeppelin", 3)).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id, "d00200");
    let replayed = top10(&db, "c");
    let fresh = fresh_copy(&db, "c", &dir.path().join("fresh"));
    assert_same(&replayed, &top10(&fresh, "c"));
    drop(fresh);
    db.flush().unwrap();
    drop(db);

    // Damage every file of the lexical dump in turn: the open rebuilds, never fails.
    let lex_dir = dir
        .path()
        .join(latentdb::INDEX_DIR)
        .join(cid.to_string())
        .join("lexical");
    let files: Vec<_> = std::fs::read_dir(&lex_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!files.is_empty(), "no lexical dump in {lex_dir:?}");
    for f in files {
        let original = std::fs::read(&f).unwrap();
        let mut damaged = original.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x5A;
        std::fs::write(&f, &damaged).unwrap();
        let db = Database::open(dir.path()).unwrap();
        let info = db.index_stats("c").unwrap();
        assert!(
            info.lexical_opened.rebuilt && !info.lexical_opened.loaded_from_dump,
            "{f:?}: {info:?}"
        );
        assert_same(&top10(&db, "c"), &replayed);
        drop(db); // persists a good dump again
        // Truncated to nothing: rebuilt too.
        std::fs::write(&f, b"").unwrap();
        let db = Database::open(dir.path()).unwrap();
        assert!(db.index_stats("c").unwrap().lexical_opened.rebuilt);
        assert_same(&top10(&db, "c"), &replayed);
        drop(db);
        let _ = original;
    }
}

/// The child: ingest batches of texts forever, printing `ack B` after batch B returns.
#[test]
#[ignore = "child process of another test; spawned with --ignored --exact"]
fn lexical_crash_child() {
    let Ok(dir) = std::env::var("LATENTDB_LEXICAL_CHILD") else {
        panic!("run only as a child process of another test");
    };
    let round: u64 = std::env::var("LATENTDB_LEXICAL_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let db = Database::open(&dir).unwrap();
    if db.collection_info("c").is_err() {
        db.create_collection(CollectionSpec::new("c", DIM, Metric::Cosine))
            .unwrap();
    }
    for batch in 0u64.. {
        let base = (round * 1_000 + batch) * 50;
        db.upsert("c", (base..base + 50).map(doc).collect())
            .unwrap();
        // Deletes and replaces too, so the change log holds every kind of change.
        if batch % 3 == 2 {
            let gone: Vec<String> = (base..base + 5).map(|n| format!("d{n:05}")).collect();
            db.delete("c", &gone).unwrap();
        }
        if batch % 20 == 19 {
            db.flush().unwrap(); // a dump now and then, so reopens replay after it
        }
        println!("@ack {batch}");
    }
}

#[test]
fn after_sigkill_during_ingest_lexical_results_equal_a_rebuilt_index() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..4u64 {
        let mut child = Command::new(&exe)
            .args([
                "hybrid::lexical_crash_child",
                "--ignored",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LATENTDB_LEXICAL_CHILD", dir.path())
            .env("LATENTDB_LEXICAL_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = 5 + round * 9;
        let mut acks = 0;
        while acks < kill_after {
            let line = lines.next().expect("child exited early").unwrap();
            if line.starts_with("@ack ") {
                acks += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let db = Database::open(dir.path()).unwrap();
        let stats = db.lexical_stats("c").unwrap().unwrap();
        assert_eq!(stats.docs as u64, db.count("c").unwrap(), "round {round}");
        let fresh = fresh_copy(&db, "c", &dir.path().join(format!("fresh{round}")));
        assert_same(&top10(&db, "c"), &top10(&fresh, "c"));
    }
}
