//! Vector search through the facade: recall against brute force, filtered recall at several
//! selectivities, deletes and replaces, request validation.

use std::collections::HashSet;

use latentdb::index::{bench, synth};
use latentdb::{
    CollectionSpec, Database, DatabaseOptions, Document, Durability, Error, Metric, SearchRequest,
};
use serde_json::{Value, json};

const N: usize = 20_000;
const DIM: usize = 64;
const Q: usize = 200;

fn open_buffered(dir: &std::path::Path) -> Database {
    Database::open_with(dir, DatabaseOptions::new().durability(Durability::Buffered)).unwrap()
}

/// Recall@10 of the facade's search against brute force over the rows `allowed` of `base`.
fn recall_for(
    db: &Database,
    base: &[f32],
    queries: &[f32],
    allowed: &[usize],
    filter: Option<Value>,
) -> f64 {
    let sub: Vec<f32> = allowed
        .iter()
        .flat_map(|&i| base[i * DIM..(i + 1) * DIM].iter().copied())
        .collect();
    let truth: Vec<Vec<u32>> =
        bench::ground_truth(latentdb::index::Metric::Cosine, DIM, &sub, queries, 10)
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|j| allowed[j as usize] as u32)
                    .collect()
            })
            .collect();
    let allowed_set: HashSet<usize> = allowed.iter().copied().collect();
    let results: Vec<Vec<u32>> = queries
        .chunks_exact(DIM)
        .map(|q| {
            let req = SearchRequest {
                filter: filter.clone(),
                with_text: false,
                ..SearchRequest::vector(q.to_vec())
            };
            let hits = db.search("v", &req).unwrap();
            hits.windows(2)
                .for_each(|w| assert!(w[0].score >= w[1].score, "best first"));
            hits.iter()
                .map(|h| {
                    let row: usize = h.id.parse().unwrap();
                    assert!(
                        allowed_set.contains(&row),
                        "hit {row} does not match {filter:?}"
                    );
                    row as u32
                })
                .collect()
        })
        .collect();
    let r = bench::recall(&results, &truth, 10);
    eprintln!(
        "recall@10 {r:.4} over {} allowed, filter {filter:?}",
        allowed.len()
    );
    r
}

#[test]
fn recall_unfiltered_and_filtered_at_1_10_50_percent() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_buffered(dir.path());
    db.create_collection(CollectionSpec::new("v", DIM, Metric::Cosine))
        .unwrap();
    let all = synth::embedding_like(N + Q, DIM, 42);
    let (base, queries) = all.split_at(N * DIM);
    for start in (0..N).step_by(5_000) {
        let docs = (start..(start + 5_000).min(N))
            .map(|i| {
                Document::new(i.to_string(), base[i * DIM..(i + 1) * DIM].to_vec()).with_metadata(
                    json!({"g": i % 100, "even": i % 2 == 0, "tag": format!("t{}", i % 10)}),
                )
            })
            .collect();
        db.upsert("v", docs).unwrap();
    }
    let every: Vec<usize> = (0..N).collect();
    let r = recall_for(&db, base, queries, &every, None);
    assert!(r >= 0.95, "unfiltered recall@10 {r}");

    type Case = (Value, Box<dyn Fn(usize) -> bool>);
    let cases: Vec<Case> = vec![
        // 1%: equality (postings, exact search over the matches)
        (json!({"g": 7}), Box::new(|i| i % 100 == 7)),
        // 1%: a range (no postings: sampled estimate, then exact)
        (
            json!({"g": {"$gte": 50, "$lt": 51}}),
            Box::new(|i| i % 100 == 50),
        ),
        // 10%: $in and a range
        (json!({"tag": {"$in": ["t3"]}}), Box::new(|i| i % 10 == 3)),
        (json!({"g": {"$lt": 10}}), Box::new(|i| i % 100 < 10)),
        // 50%: equality and a negation (graph walk with the filter)
        (json!({"even": true}), Box::new(|i| i % 2 == 0)),
        (json!({"$not": {"even": true}}), Box::new(|i| i % 2 == 1)),
        (
            json!({"$or": [{"g": {"$lt": 25}}, {"g": {"$gte": 75}}]}),
            Box::new(|i| !(25..75).contains(&(i % 100))),
        ),
    ];
    for (filter, pred) in cases {
        let allowed: Vec<usize> = (0..N).filter(|&i| pred(i)).collect();
        let r = recall_for(&db, base, queries, &allowed, Some(filter.clone()));
        assert!(r >= 0.95, "filtered recall@10 {r} for {filter}");
    }

    // exact search agrees with brute force exactly
    let req = SearchRequest {
        exact: true,
        ..SearchRequest::vector(queries[..DIM].to_vec())
    };
    let exact: Vec<String> = db
        .search("v", &req)
        .unwrap()
        .into_iter()
        .map(|h| h.id.into_string())
        .collect();
    let truth = bench::ground_truth(
        latentdb::index::Metric::Cosine,
        DIM,
        base,
        &queries[..DIM],
        10,
    );
    assert_eq!(
        exact,
        truth[0].iter().map(|i| i.to_string()).collect::<Vec<_>>()
    );

    // search_batch returns the same as one by one
    let reqs: Vec<SearchRequest> = queries
        .chunks_exact(DIM)
        .take(20)
        .map(|q| SearchRequest::vector(q.to_vec()))
        .collect();
    let batch = db.search_batch("v", &reqs).unwrap();
    for (req, got) in reqs.iter().zip(batch) {
        assert_eq!(db.search("v", req).unwrap(), got);
    }
}

fn vec_of(seed: u64) -> Vec<f32> {
    synth::clustered_vectors(1, 16, 1, 1.0, seed)
}

/// Hits carry their document ids exactly, whether held inline (up to 24 bytes) or on the
/// heap, multi-byte UTF-8 included, and keep them after the documents are replaced, deleted
/// or the database reopened.
#[test]
fn ids_of_every_length_come_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Byte lengths 2, 23, 24, 25, 64 and 300 ending in a two-byte character, 24 and 26 bytes
    // of them, and one byte.
    let ids: Vec<String> = [2usize, 23, 24, 25, 64, 300]
        .iter()
        .map(|&n| "x".repeat(n - 2) + "é")
        .chain(["π".repeat(12), "π".repeat(13), "a".into()])
        .collect();
    assert!(ids.iter().any(|id| id.len() == 24) && ids.iter().any(|id| id.len() == 25));
    let by_seed = |i: usize| vec_of(7_000 + i as u64);
    {
        let db = Database::open(dir.path()).unwrap();
        db.create_collection(CollectionSpec::new("v", 16, Metric::Cosine))
            .unwrap();
        let docs = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Document::new(id.clone(), by_seed(i)));
        db.upsert("v", docs.collect()).unwrap();
        // Replaced with the same vectors: new point ids, the same document ids.
        let again = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Document::new(id.clone(), by_seed(i)));
        db.upsert("v", again.collect()).unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let req = SearchRequest {
            k: ids.len(),
            ..SearchRequest::vector(by_seed(i))
        };
        let hits = db.search("v", &req).unwrap();
        assert_eq!(hits.len(), ids.len());
        assert_eq!(hits[0].id, id.as_str(), "nearest to its own vector");
        let mut got: Vec<String> = hits.into_iter().map(|h| h.id.into_string()).collect();
        got.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(got, want);
    }
    db.delete("v", &ids[..3]).unwrap();
    let hits = db.search("v", &SearchRequest::vector(by_seed(5))).unwrap();
    assert!(
        hits.iter()
            .all(|h| !ids[..3].iter().any(|d| h.id == d.as_str()))
    );
    assert_eq!(hits.len(), ids.len() - 3);
}

#[test]
fn deleted_and_replaced_documents_never_appear() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("v", 16, Metric::Cosine))
        .unwrap();
    let docs: Vec<Document> = (0..2_000u64)
        .map(|i| {
            Document::new(format!("d{i}"), vec_of(i))
                .with_text(format!("t{i}"))
                .with_metadata(json!({"i": i, "old": true}))
        })
        .collect();
    db.upsert("v", docs).unwrap();
    let deleted: Vec<String> = (0..2_000).step_by(7).map(|i| format!("d{i}")).collect();
    assert_eq!(db.delete("v", &deleted).unwrap().len(), deleted.len());
    // replace every 5th with a new vector and metadata
    let replaced: Vec<u64> = (1..2_000).step_by(5).filter(|i| i % 7 != 0).collect();
    db.upsert(
        "v",
        replaced
            .iter()
            .map(|&i| {
                Document::new(format!("d{i}"), vec_of(100_000 + i))
                    .with_metadata(json!({"i": i, "old": false}))
            })
            .collect(),
    )
    .unwrap();
    let by_filter = db
        .delete_by_filter("v", &json!({"i": {"$gte": 1990}}))
        .unwrap();
    assert_eq!(by_filter.len(), (1990..2000).filter(|i| i % 7 != 0).count());
    let gone: HashSet<String> = deleted.iter().cloned().chain(by_filter).collect();
    let replaced_set: HashSet<String> = replaced.iter().map(|i| format!("d{i}")).collect();
    let (mut kept, mut graph_found) = (0usize, 0usize);
    for i in 0..2_000u64 {
        // search by the original vector
        let hits = db
            .search(
                "v",
                &SearchRequest {
                    k: 20,
                    ..SearchRequest::vector(vec_of(i))
                },
            )
            .unwrap();
        for h in &hits {
            assert!(!gone.contains(h.id.as_str()), "deleted {} returned", h.id);
            if replaced_set.contains(h.id.as_str()) {
                assert_eq!(
                    h.metadata["old"],
                    json!(false),
                    "old version of {} returned",
                    h.id
                );
                assert!(h.text.is_none(), "old text of {} returned", h.id);
            }
        }
        let id = format!("d{i}");
        if !gone.contains(&id) && !replaced_set.contains(&id) {
            // HNSW may leave a rare node unreachable: exact search must find every one, the
            // graph nearly every one.
            kept += 1;
            graph_found += usize::from(hits[0].id == id);
            let exact = SearchRequest {
                exact: true,
                k: 1,
                ..SearchRequest::vector(vec_of(i))
            };
            let top = db.search("v", &exact).unwrap().remove(0);
            assert_eq!(top.id, id);
            assert_eq!(top.text.as_deref(), Some(format!("t{i}").as_str()));
        }
        // and filtered: only the new versions of replaced documents match old=false
        if i % 50 == 0 {
            let req = SearchRequest {
                filter: Some(json!({"old": false})),
                ..SearchRequest::vector(vec_of(i))
            };
            for h in db.search("v", &req).unwrap() {
                assert!(replaced_set.contains(h.id.as_str()) && !gone.contains(h.id.as_str()));
            }
        }
    }
    assert!(
        graph_found as f64 >= 0.99 * kept as f64,
        "{graph_found} of {kept} found through the graph"
    );
    let stats = db.index_stats("v").unwrap();
    assert_eq!(stats.live as u64, db.count("v").unwrap());
    let report = db.compact("v").unwrap();
    assert_eq!(report.after_total as u64, db.count("v").unwrap());
    assert_eq!(db.index_stats("v").unwrap().deleted, 0);
    let exact = SearchRequest {
        exact: true,
        ..SearchRequest::vector(vec_of(3))
    };
    assert_eq!(db.search("v", &exact).unwrap()[0].id, "d3");
}

#[test]
fn bad_requests_are_caller_faults() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.create_collection(CollectionSpec::new("v", 3, Metric::Cosine))
        .unwrap();
    db.upsert("v", vec![Document::new("a", vec![1.0, 0.0, 0.0])])
        .unwrap();
    let bad = [
        SearchRequest::default(),
        SearchRequest::vector(vec![1.0, 0.0]),
        SearchRequest::vector(vec![f32::NAN, 0.0, 0.0]),
        SearchRequest::vector(vec![0.0, 0.0, 0.0]),
        SearchRequest {
            k: 0,
            ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
        },
        SearchRequest {
            k: 10_001,
            ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
        },
        SearchRequest {
            ef: Some(5),
            ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
        },
        SearchRequest {
            filter: Some(json!({"a": {"$regex": "x"}})),
            ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
        },
        SearchRequest {
            filter: Some(json!({"a": {"$gt": "x"}})),
            ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
        },
        SearchRequest {
            filter: Some(json!([1])),
            ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
        },
    ];
    for req in bad {
        let e = db.search("v", &req).unwrap_err();
        assert!(e.is_caller_fault(), "{e}");
    }
    let e = db
        .search("nope", &SearchRequest::vector(vec![1.0, 0.0, 0.0]))
        .unwrap_err();
    assert!(e.is_caller_fault());
    let e = db
        .upsert("v", vec![Document::new("z", vec![0.0, 0.0, 0.0])])
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)));
    assert!(
        db.get("v", &["z"]).unwrap()[0].is_none(),
        "rejected before storage"
    );
    let e = db
        .create_collection(CollectionSpec {
            index: json!({"m": 1}),
            ..CollectionSpec::new("w", 3, Metric::L2)
        })
        .unwrap_err();
    assert!(e.is_caller_fault());
    let info = db
        .create_collection(CollectionSpec {
            index: json!({"m": 8}),
            ..CollectionSpec::new("w", 3, Metric::L2)
        })
        .unwrap();
    assert_eq!(info.index["m"], 8);
    assert_eq!(info.index["ef_construction"], 200);
    assert_eq!(db.index_stats("w").unwrap().params.m, 8);
    // empty filter = no filter; empty collection searches to nothing
    let req = SearchRequest {
        filter: Some(json!({})),
        ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
    };
    assert_eq!(db.search("v", &req).unwrap().len(), 1);
    assert!(
        db.search("w", &SearchRequest::vector(vec![1.0, 0.0, 0.0]))
            .unwrap()
            .is_empty()
    );
}

/// `k = 0` is an invalid argument with its own message, never a default; finite but huge
/// query vectors (whose scores would be inf or NaN) are refused with the index's overflow
/// error under every metric, as are such documents, before anything is stored.
#[test]
fn k_zero_and_overflowing_vectors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        let name = metric.to_string();
        db.create_collection(CollectionSpec::new(&name, 3, metric))
            .unwrap();
        db.upsert(&name, vec![Document::new("a", vec![1.0, 0.5, 0.0])])
            .unwrap();
        let e = db
            .search(
                &name,
                &SearchRequest {
                    k: 0,
                    ..SearchRequest::vector(vec![1.0, 0.0, 0.0])
                },
            )
            .unwrap_err();
        assert_eq!(e.kind(), latentdb::ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("k must be at least 1"), "{e}");
        for huge in [
            vec![1e20, 0.0, 0.0],
            vec![3e38, 3e38, 0.0],
            vec![-2e19, 1.0, 1.0],
        ] {
            let e = db
                .search(&name, &SearchRequest::vector(huge.clone()))
                .unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Index(latentdb::index::Error::VectorOverflow { .. })
                ),
                "{metric}: {huge:?}: {e}"
            );
            assert_eq!(e.kind(), latentdb::ErrorKind::InvalidArgument);
            let e = db
                .upsert(&name, vec![Document::new("huge", huge)])
                .unwrap_err();
            assert!(e.is_caller_fault(), "{e}");
            assert!(db.get(&name, &["huge"]).unwrap()[0].is_none());
        }
        // Large but representable vectors score finitely.
        let hits = db
            .search(&name, &SearchRequest::vector(vec![1e15, 1e15, 0.0]))
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert!(hits[0].score.is_finite(), "{metric}: {}", hits[0].score);
    }
}
