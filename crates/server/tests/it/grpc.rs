//! Every RPC of `latentdb.v1.LatentDb` over a loopback port, with each status code.

use crate::common::{TestServer, vector};
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use latentdb_server::{Limits, ServerConfig};
use prost_types::value::Kind;
use tonic::Code;
use tonic::transport::Channel;

const DIM: usize = 8;

fn doc(id: &str, seed: u64, year: i64, genre: &str) -> pb::Document {
    let metadata = serde_json::json!({"year": year, "genre": genre});
    let serde_json::Value::Object(m) = metadata else {
        unreachable!()
    };
    pb::Document {
        id: id.into(),
        text: Some(format!("text of {id}")),
        metadata: Some(struct_of(m)),
        vector: vector(seed, DIM),
    }
}

fn struct_of(m: serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .into_iter()
            .map(|(k, v)| {
                let kind = match v {
                    serde_json::Value::String(s) => Kind::StringValue(s),
                    serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
                    serde_json::Value::Bool(b) => Kind::BoolValue(b),
                    other => Kind::StringValue(other.to_string()),
                };
                (k, prost_types::Value { kind: Some(kind) })
            })
            .collect(),
    }
}

async fn create(c: &mut LatentDbClient<Channel>, name: &str) -> pb::CollectionInfo {
    c.create_collection(pb::CreateCollectionRequest {
        name: name.into(),
        dimension: DIM as u32,
        metric: pb::Metric::Cosine as i32,
        ..Default::default()
    })
    .await
    .expect("create")
    .into_inner()
}

/// 40 documents: year 2000 + i % 10, genre jazz for even i, rock for odd.
async fn fill(c: &mut LatentDbClient<Channel>, name: &str) {
    let docs = (0..40)
        .map(|i| {
            let genre = if i % 2 == 0 { "jazz" } else { "rock" };
            doc(&format!("d{i:02}"), i, 2000 + (i as i64 % 10), genre)
        })
        .collect();
    let ids = c
        .upsert(pb::UpsertRequest {
            collection: name.into(),
            documents: docs,
        })
        .await
        .expect("upsert")
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 40);
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn collections_create_get_list_delete() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let info = create(&mut c, "books").await;
    assert_eq!(info.name, "books");
    assert_eq!(info.dimension, DIM as u32);
    assert_eq!(info.metric, pb::Metric::Cosine as i32);
    assert_eq!(info.count, 0);
    c.create_collection(pb::CreateCollectionRequest {
        name: "films".into(),
        dimension: 3,
        metric: pb::Metric::L2 as i32,
        index: Some(struct_of(
            serde_json::json!({"m": 8})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        )),
        ..Default::default()
    })
    .await
    .expect("create with index settings");

    let got = c
        .get_collection(pb::GetCollectionRequest {
            name: "films".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.metric, pb::Metric::L2 as i32);
    assert!(got.index.is_some());

    let list = c
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner();
    let names: Vec<_> = list.collections.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["books", "films"]);

    // ALREADY_EXISTS, INVALID_ARGUMENT, NOT_FOUND.
    let again = c
        .create_collection(pb::CreateCollectionRequest {
            name: "books".into(),
            dimension: 4,
            ..Default::default()
        })
        .await;
    assert_eq!(code(again), Code::AlreadyExists);
    let bad_name = c
        .create_collection(pb::CreateCollectionRequest {
            name: "no spaces".into(),
            dimension: 4,
            ..Default::default()
        })
        .await;
    assert_eq!(code(bad_name), Code::InvalidArgument);
    let bad_dim = c
        .create_collection(pb::CreateCollectionRequest {
            name: "zero".into(),
            dimension: 0,
            ..Default::default()
        })
        .await;
    assert_eq!(code(bad_dim), Code::InvalidArgument);
    let bad_metric = c
        .create_collection(pb::CreateCollectionRequest {
            name: "m".into(),
            dimension: 4,
            metric: 42,
            ..Default::default()
        })
        .await;
    assert_eq!(code(bad_metric), Code::InvalidArgument);

    c.delete_collection(pb::DeleteCollectionRequest {
        name: "films".into(),
    })
    .await
    .expect("delete");
    let gone = c
        .get_collection(pb::GetCollectionRequest {
            name: "films".into(),
        })
        .await;
    assert_eq!(code(gone), Code::NotFound);
    let gone = c
        .delete_collection(pb::DeleteCollectionRequest {
            name: "films".into(),
        })
        .await;
    assert_eq!(code(gone), Code::NotFound);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn documents_upsert_get_count_scroll_delete() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    create(&mut c, "docs").await;
    fill(&mut c, "docs").await;

    // A generated id.
    let mut anon = doc("", 99, 1999, "pop");
    anon.text = None;
    let ids = c
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            documents: vec![anon],
        })
        .await
        .expect("upsert")
        .into_inner()
        .ids;
    assert_eq!(ids.len(), 1);
    assert!(!ids[0].is_empty());

    let count = c
        .count(pb::CountRequest {
            collection: "docs".into(),
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(count, 41);

    // Get: order kept, missing ids listed, vectors on request, metadata round-trips.
    let got = c
        .get(pb::GetRequest {
            collection: "docs".into(),
            ids: vec!["d03".into(), "nope".into(), "d01".into()],
            with_vectors: true,
            require_all: false,
        })
        .await
        .expect("get")
        .into_inner();
    let ids: Vec<_> = got.records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["d03", "d01"]);
    assert_eq!(got.missing_ids, ["nope"]);
    assert_eq!(got.records[0].vector, vector(3, DIM));
    assert_eq!(got.records[0].text.as_deref(), Some("text of d03"));
    let md = got.records[0].metadata.as_ref().expect("metadata");
    assert_eq!(md.fields["year"].kind, Some(Kind::NumberValue(2003.0)));
    assert_eq!(
        md.fields["genre"].kind,
        Some(Kind::StringValue("rock".into()))
    );
    let no_vec = c
        .get(pb::GetRequest {
            collection: "docs".into(),
            ids: vec!["d03".into()],
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert!(no_vec.records[0].vector.is_empty());
    // A missing document is NOT_FOUND with require_all.
    let missing = c
        .get(pb::GetRequest {
            collection: "docs".into(),
            ids: vec!["d03".into(), "nope".into()],
            with_vectors: false,
            require_all: true,
        })
        .await;
    assert_eq!(code(missing), Code::NotFound);

    // Scroll: pages of 15 in id order with a cursor.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c
            .scroll(pb::ScrollRequest {
                collection: "docs".into(),
                after: after.clone(),
                limit: 15,
                with_vectors: false,
            })
            .await
            .expect("scroll")
            .into_inner();
        seen.extend(page.records.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 41);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    // Delete by ids.
    let deleted = c
        .delete(pb::DeleteRequest {
            collection: "docs".into(),
            all_documents: false,
            ids: vec!["d00".into(), "d01".into(), "nope".into()],
            filter: None,
        })
        .await
        .expect("delete")
        .into_inner()
        .deleted_ids;
    assert_eq!(deleted, ["d00", "d01"]);
    // Delete by a JSON filter and by a structured one.
    let deleted = c
        .delete(pb::DeleteRequest {
            collection: "docs".into(),
            all_documents: false,
            ids: vec![],
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Json(
                    r#"{"year": {"$gte": 2008}, "genre": "jazz"}"#.into(),
                )),
            }),
        })
        .await
        .expect("delete by filter")
        .into_inner()
        .deleted_ids;
    let mut deleted = deleted;
    deleted.sort();
    assert_eq!(deleted, ["d08", "d18", "d28", "d38"]);
    let structured = struct_of(
        serde_json::json!({"genre": "pop"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let deleted = c
        .delete(pb::DeleteRequest {
            collection: "docs".into(),
            all_documents: false,
            ids: vec![],
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Structured(structured)),
            }),
        })
        .await
        .expect("delete by structured filter")
        .into_inner()
        .deleted_ids;
    assert_eq!(deleted.len(), 1);
    let count = c
        .count(pb::CountRequest {
            collection: "docs".into(),
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(count, 41 - 2 - 4 - 1);

    // INVALID_ARGUMENT: ids and filter, neither, a bad filter, a bad vector, duplicate ids.
    let both = c
        .delete(pb::DeleteRequest {
            collection: "docs".into(),
            all_documents: false,
            ids: vec!["d02".into()],
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Json("{}".into())),
            }),
        })
        .await;
    assert_eq!(code(both), Code::InvalidArgument);
    let neither = c
        .delete(pb::DeleteRequest {
            collection: "docs".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(neither), Code::InvalidArgument);
    for bad in [r#"{"year": {"$bogus": 1}}"#, "not json"] {
        let r = c
            .delete(pb::DeleteRequest {
                collection: "docs".into(),
                all_documents: false,
                ids: vec![],
                filter: Some(pb::Filter {
                    kind: Some(pb::filter::Kind::Json(bad.into())),
                }),
            })
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "{bad}");
    }
    let mut short = doc("short", 1, 2000, "x");
    short.vector.pop();
    let r = c
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            documents: vec![short],
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let mut nan = doc("nan", 1, 2000, "x");
    nan.vector[0] = f32::NAN;
    let r = c
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            documents: vec![nan],
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    let r = c
        .upsert(pb::UpsertRequest {
            collection: "docs".into(),
            documents: vec![doc("same", 1, 1, "x"), doc("same", 2, 1, "x")],
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    // NOT_FOUND for every call on a missing collection.
    let r = c
        .count(pb::CountRequest {
            collection: "ghost".into(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = c
        .upsert(pb::UpsertRequest {
            collection: "ghost".into(),
            documents: vec![doc("a", 1, 1, "x")],
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = c
        .get(pb::GetRequest {
            collection: "ghost".into(),
            ids: vec!["a".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = c
        .scroll(pb::ScrollRequest {
            collection: "ghost".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::NotFound);

    c.flush(pb::FlushRequest {}).await.expect("flush");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn upsert_stream_counts_and_reports_the_failed_batch() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    create(&mut c, "s").await;

    let batches: Vec<pb::UpsertRequest> = (0..5u64)
        .map(|b| pb::UpsertRequest {
            collection: if b == 0 { "s".into() } else { String::new() },
            documents: (0..20)
                .map(|i| doc(&format!("b{b}-{i}"), b * 100 + i, 2000, "x"))
                .collect(),
        })
        .collect();
    let out = c
        .upsert_stream(tokio_stream::iter(batches))
        .await
        .expect("stream")
        .into_inner();
    assert_eq!(out.written, 100);
    assert_eq!(out.batches, 5);

    // Batch 2 has a vector of the wrong length: batches 0 and 1 stay, 2 and 3 do not.
    let mut batches: Vec<pb::UpsertRequest> = (0..4u64)
        .map(|b| pb::UpsertRequest {
            collection: "s".into(),
            documents: (0..10)
                .map(|i| doc(&format!("f{b}-{i}"), b * 100 + i, 2000, "x"))
                .collect(),
        })
        .collect();
    batches[2].documents[5].vector.push(1.0);
    let err = c
        .upsert_stream(tokio_stream::iter(batches))
        .await
        .expect_err("batch 2 fails");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("batch 2: "), "{}", err.message());
    let md = err.metadata();
    assert_eq!(
        md.get("latentdb-failed-batch").map(|v| v.to_str().ok()),
        Some(Some("2"))
    );
    assert_eq!(
        md.get("latentdb-batches-acknowledged")
            .map(|v| v.to_str().ok()),
        Some(Some("2"))
    );
    assert_eq!(
        md.get("latentdb-written").map(|v| v.to_str().ok()),
        Some(Some("20"))
    );
    let count = c
        .count(pb::CountRequest {
            collection: "s".into(),
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(count, 120);

    // A stream whose first message names no collection, or that switches collections.
    let r = c
        .upsert_stream(tokio_stream::iter(vec![pb::UpsertRequest {
            collection: String::new(),
            documents: vec![doc("z", 1, 1, "x")],
        }]))
        .await;
    assert_eq!(code(r), Code::InvalidArgument);
    create(&mut c, "other").await;
    let r = c
        .upsert_stream(tokio_stream::iter(vec![
            pb::UpsertRequest {
                collection: "s".into(),
                documents: vec![doc("z1", 1, 1, "x")],
            },
            pb::UpsertRequest {
                collection: "other".into(),
                documents: vec![doc("z2", 1, 1, "x")],
            },
        ]))
        .await
        .expect_err("switching collections");
    assert_eq!(r.code(), Code::InvalidArgument);
    assert!(r.message().starts_with("batch 1: "));
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn search_search_batch_and_compact() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    create(&mut c, "s").await;
    fill(&mut c, "s").await;

    // The nearest neighbour of a stored vector is itself.
    let hits = c
        .search(pb::SearchRequest {
            collection: "s".into(),
            vector: vector(7, DIM),
            k: 5,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0].id, "d07");
    assert!((hits[0].score - 1.0).abs() < 1e-4);
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    // Defaults: text and metadata, no vector.
    assert_eq!(hits[0].text.as_deref(), Some("text of d07"));
    assert!(
        hits[0]
            .metadata
            .as_ref()
            .is_some_and(|m| !m.fields.is_empty())
    );
    assert!(hits[0].vector.is_empty());

    // Filtered, exact, with chosen fields.
    let hits = c
        .search(pb::SearchRequest {
            collection: "s".into(),
            vector: vector(7, DIM),
            k: 50,
            ef: Some(64),
            exact: true,
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Json(r#"{"genre": "jazz"}"#.into())),
            }),
            with_text: Some(false),
            with_metadata: Some(true),
            with_vectors: Some(true),
            ..Default::default()
        })
        .await
        .expect("filtered search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 20);
    for h in &hits {
        let n: u32 = h.id[1..].parse().expect("id");
        assert_eq!(n % 2, 0, "{} is not jazz", h.id);
        assert!(h.text.is_none());
        assert_eq!(h.vector.len(), DIM);
    }

    // Search batch: results in query order.
    let out = c
        .search_batch(pb::SearchBatchRequest {
            collection: "s".into(),
            queries: (0..4)
                .map(|i| pb::SearchRequest {
                    vector: vector(i, DIM),
                    k: 1,
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect("search batch")
        .into_inner();
    let tops: Vec<_> = out.results.iter().map(|r| r.hits[0].id.as_str()).collect();
    assert_eq!(tops, ["d00", "d01", "d02", "d03"]);

    // Errors: both (in a dense search) or neither of text and vector, a wrong dimension, a
    // dense text query without an embedder, a bad filter, k over the limit, a missing
    // collection, a batch mixing collections. (With the mode unset, a text query on this
    // collection is lexical or hybrid: see the hybrid tests.)
    let cases = [
        (
            pb::SearchRequest {
                vector: vector(1, DIM),
                text: Some("x".into()),
                mode: pb::SearchMode::Dense as i32,
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (pb::SearchRequest::default(), Code::InvalidArgument),
        (
            pb::SearchRequest {
                vector: vector(1, DIM + 1),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            // A collection without a model cannot embed the query: the request is fine, the
            // collection is not set up for it.
            pb::SearchRequest {
                text: Some("a text query".into()),
                mode: pb::SearchMode::Dense as i32,
                ..Default::default()
            },
            Code::FailedPrecondition,
        ),
        (
            pb::SearchRequest {
                vector: vector(1, DIM),
                filter: Some(pb::Filter {
                    kind: Some(pb::filter::Kind::Json(r#"{"$or": 3}"#.into())),
                }),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
        (
            pb::SearchRequest {
                vector: vector(1, DIM),
                k: 1_000_000,
                ..Default::default()
            },
            Code::ResourceExhausted,
        ),
    ];
    for (i, (mut req, want)) in cases.into_iter().enumerate() {
        req.collection = "s".into();
        assert_eq!(code(c.search(req).await), want, "case {i}");
    }
    let r = c
        .search(pb::SearchRequest {
            collection: "ghost".into(),
            vector: vector(1, DIM),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    let r = c
        .search_batch(pb::SearchBatchRequest {
            collection: "s".into(),
            queries: vec![pb::SearchRequest {
                collection: "ghost".into(),
                vector: vector(1, DIM),
                ..Default::default()
            }],
        })
        .await;
    assert_eq!(code(r), Code::InvalidArgument);

    // Compact after deletes drops the tombstones; search still works.
    c.delete(pb::DeleteRequest {
        collection: "s".into(),
        all_documents: false,
        ids: (0..10).map(|i| format!("d{i:02}")).collect(),
        filter: None,
    })
    .await
    .expect("delete");
    let report = c
        .compact(pb::CompactRequest {
            collection: "s".into(),
        })
        .await
        .expect("compact")
        .into_inner();
    assert_eq!(report.points, 30);
    let hits = c
        .search(pb::SearchRequest {
            collection: "s".into(),
            vector: vector(12, DIM),
            k: 1,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(hits[0].id, "d12");
    let r = c
        .compact(pb::CompactRequest {
            collection: "ghost".into(),
        })
        .await;
    assert_eq!(code(r), Code::NotFound);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn limits_are_resource_exhausted() {
    let limits = Limits {
        max_batch_docs: 5,
        max_k: 3,
        max_batch_queries: 2,
        max_text_bytes: 16,
        max_message_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start(ServerConfig::default().limits(limits)).await;
    let mut c = server.client().await;
    create(&mut c, "l").await;
    let docs = |n: u64| -> Vec<pb::Document> {
        (0..n)
            .map(|i| doc(&format!("x{i}"), i, 2000, "x"))
            .collect()
    };
    let r = c
        .upsert(pb::UpsertRequest {
            collection: "l".into(),
            documents: docs(6),
        })
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    c.upsert(pb::UpsertRequest {
        collection: "l".into(),
        documents: docs(5),
    })
    .await
    .expect("at the limit");
    let r = c
        .get(pb::GetRequest {
            collection: "l".into(),
            ids: (0..6).map(|i| format!("x{i}")).collect(),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    let r = c
        .search(pb::SearchRequest {
            collection: "l".into(),
            vector: vector(1, DIM),
            k: 4,
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    let r = c
        .search(pb::SearchRequest {
            collection: "l".into(),
            text: Some("a query text longer than sixteen bytes".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    let q = pb::SearchRequest {
        vector: vector(1, DIM),
        k: 1,
        ..Default::default()
    };
    let r = c
        .search_batch(pb::SearchBatchRequest {
            collection: "l".into(),
            queries: vec![q.clone(), q.clone(), q],
        })
        .await;
    assert_eq!(code(r), Code::ResourceExhausted);
    // A stream batch over the limit fails that batch.
    let r = c
        .upsert_stream(tokio_stream::iter(vec![
            pb::UpsertRequest {
                collection: "l".into(),
                documents: docs(2),
            },
            pb::UpsertRequest {
                collection: "l".into(),
                documents: docs(6),
            },
        ]))
        .await
        .expect_err("over the limit");
    assert_eq!(r.code(), Code::ResourceExhausted);
    assert!(r.message().starts_with("batch 1: "));
    // A message over the size limit fails in the transport.
    let mut big = doc("big", 1, 1, "x");
    big.text = Some("y".repeat(100 * 1024));
    let r = c
        .upsert(pb::UpsertRequest {
            collection: "l".into(),
            documents: vec![big],
        })
        .await;
    assert_eq!(code(r), Code::OutOfRange);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn embed_needs_an_embedder() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let r = c
        .embed(pb::EmbedRequest {
            texts: vec!["hello".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn graceful_stop_flushes_and_keeps_writes() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    create(&mut c, "g").await;
    fill(&mut c, "g").await;
    let (result, db, dir) =
        tokio::time::timeout(std::time::Duration::from_secs(20), server.stop_keep_dir())
            .await
            .expect("stops in time");
    result.expect("clean stop");
    // New calls are refused once stopped.
    assert!(
        c.count(pb::CountRequest {
            collection: "g".into()
        })
        .await
        .is_err()
    );
    assert_eq!(db.count("g").expect("count"), 40);
    drop(db);
    let reopened = latentdb::Database::open(dir.path()).expect("reopen");
    assert_eq!(reopened.count("g").expect("count"), 40);
}
