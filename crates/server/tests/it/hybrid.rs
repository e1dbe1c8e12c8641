//! Lexical and hybrid search over gRPC: the search mode, fusion and BM25 fields, explain, the
//! collection's lexical settings, and old-style requests that set none of them.

use crate::common::TestServer;
use latentdb_server::ServerConfig;
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use prost_types::value::Kind;
use tonic::Code;
use tonic::transport::Channel;

/// Caller vectors (dimension 4) and texts: lexical search needs no embedder.
const DOCS: &[(&str, &str, [f32; 4])] = &[
    (
        "a",
        "the quick brown fox jumps over the fence",
        [1.0, 0.0, 0.0, 0.0],
    ),
    ("b", "lazy dogs sleep all day long", [0.0, 1.0, 0.0, 0.0]),
    ("c", "a fox and a dog", [0.0, 0.0, 1.0, 0.0]),
    ("d", "notes from a physics lecture", [0.9, 0.1, 0.0, 0.0]),
];

async fn setup() -> (TestServer, LatentDbClient<Channel>) {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    c.create_collection(pb::CreateCollectionRequest {
        name: "h".into(),
        dimension: 4,
        metric: pb::Metric::Cosine as i32,
        ..Default::default()
    })
    .await
    .expect("create");
    let mut documents: Vec<pb::Document> = DOCS
        .iter()
        .map(|(id, text, v)| pb::Document {
            id: (*id).into(),
            text: Some((*text).into()),
            metadata: None,
            vector: v.to_vec(),
        })
        .collect();
    // A document without text is never a lexical hit.
    documents.push(pb::Document {
        id: "e".into(),
        text: None,
        metadata: None,
        vector: vec![0.0, 0.0, 0.0, 1.0],
    });
    c.upsert(pb::UpsertRequest {
        collection: "h".into(),
        documents,
    })
    .await
    .expect("upsert");
    (server, c)
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> Code {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(s) => s.code(),
    }
}

fn ids(hits: &[pb::SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-4 * (1.0 + a.abs().max(b.abs()))
}

#[tokio::test]
async fn lexical_search_ranks_by_bm25_and_explains() {
    let (_server, mut c) = setup().await;
    let hits = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            text: Some("fox".into()),
            mode: pb::SearchMode::Lexical as i32,
            explain: true,
            ..Default::default()
        })
        .await
        .expect("lexical search")
        .into_inner()
        .hits;
    // Only the texts with "fox"; the shorter one first (BM25's length normalisation).
    assert_eq!(ids(&hits), ["c", "a"]);
    assert!(hits[0].score > hits[1].score && hits[1].score > 0.0);
    for (i, h) in hits.iter().enumerate() {
        let e = h.explain.as_ref().expect("explain asked for");
        assert_eq!(e.lexical_rank, Some(i as u32 + 1), "{h:?}");
        assert!(
            close(e.lexical_score.expect("lexical score"), h.score),
            "{h:?}"
        );
        assert_eq!(e.dense_rank, None, "{h:?}");
        assert_eq!(e.fused_score, None, "{h:?}");
    }
    // Hits carry text and metadata as for a dense search.
    assert_eq!(hits[0].text.as_deref(), Some("a fox and a dog"));

    // Without explain, no explanation; BM25 parameters change the scores, not the matches.
    let flat = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            text: Some("fox".into()),
            mode: pb::SearchMode::Lexical as i32,
            bm25_k1: Some(0.5),
            bm25_b: Some(0.0),
            ..Default::default()
        })
        .await
        .expect("lexical search with BM25 parameters")
        .into_inner()
        .hits;
    assert!(flat.iter().all(|h| h.explain.is_none()));
    let mut got = ids(&flat);
    got.sort_unstable();
    assert_eq!(got, ["a", "c"]);
    // b = 0: no length normalisation, both texts hold "fox" once: equal scores.
    assert!(close(flat[0].score, flat[1].score), "{flat:?}");
    // One parameter alone takes the collection's other one.
    let only_b = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            text: Some("fox".into()),
            mode: pb::SearchMode::Lexical as i32,
            bm25_b: Some(0.0),
            ..Default::default()
        })
        .await
        .expect("lexical search with b alone")
        .into_inner()
        .hits;
    assert_eq!(only_b.len(), 2);
    assert!(close(only_b[0].score, only_b[1].score), "{only_b:?}");
}

#[tokio::test]
async fn hybrid_search_fuses_caller_vector_and_text() {
    let (_server, mut c) = setup().await;
    // The dense leg from the vector (nearest: c), the lexical leg from the text (c first).
    let hits = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            vector: vec![0.0, 0.0, 1.0, 0.0],
            text: Some("fox".into()),
            k: 3,
            mode: pb::SearchMode::Hybrid as i32,
            fusion: pb::Fusion::Rrf as i32,
            rrf_k: Some(2.0),
            weights: vec![1.0, 1.0],
            depth: Some(10),
            explain: true,
            ..Default::default()
        })
        .await
        .expect("hybrid search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0].id, "c");
    let e = hits[0].explain.as_ref().expect("explain");
    assert_eq!(e.dense_rank, Some(1));
    assert!(close(e.dense_score.expect("dense score"), 1.0));
    assert_eq!(e.lexical_rank, Some(1));
    assert!(e.lexical_score.expect("lexical score") > 0.0);
    // RRF: 1/(2+1) from each leg.
    let fused = e.fused_score.expect("fused score");
    assert!(close(fused, 2.0 / 3.0), "{e:?}");
    assert!(close(hits[0].score, fused));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    // "a" matches the text only: it has a lexical rank and a fused score.
    let a = hits.iter().find(|h| h.id == "a").expect("a is a hit");
    let ea = a.explain.as_ref().expect("explain");
    assert_eq!(ea.lexical_rank, Some(2));
    assert!(ea.fused_score.is_some());

    // All weight on the lexical leg: the vector no longer matters.
    let lexical_only = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            vector: vec![0.0, 1.0, 0.0, 0.0],
            text: Some("fox".into()),
            k: 2,
            mode: pb::SearchMode::Hybrid as i32,
            // (Min-max would map the lexical leg's last hit to 0, a tie with the dense hits.)
            fusion: pb::Fusion::Rrf as i32,
            weights: vec![0.0, 1.0],
            ..Default::default()
        })
        .await
        .expect("hybrid search, lexical weight only")
        .into_inner()
        .hits;
    assert_eq!(ids(&lexical_only), ["c", "a"]);

    // A batch: each query its own mode.
    let out = c
        .search_batch(pb::SearchBatchRequest {
            collection: "h".into(),
            queries: vec![
                pb::SearchRequest {
                    vector: vec![1.0, 0.0, 0.0, 0.0],
                    k: 1,
                    ..Default::default()
                },
                pb::SearchRequest {
                    text: Some("lazy".into()),
                    k: 1,
                    mode: pb::SearchMode::Lexical as i32,
                    explain: true,
                    ..Default::default()
                },
            ],
        })
        .await
        .expect("search batch")
        .into_inner();
    assert_eq!(out.results[0].hits[0].id, "a");
    assert!(out.results[0].hits[0].explain.is_none());
    assert_eq!(out.results[1].hits[0].id, "b");
    assert_eq!(
        out.results[1].hits[0]
            .explain
            .as_ref()
            .and_then(|e| e.lexical_rank),
        Some(1)
    );
}

#[tokio::test]
async fn old_style_requests_still_search_by_vector() {
    let (_server, mut c) = setup().await;
    // What a client built before the hybrid fields sends: none of them set.
    let hits = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            vector: vec![1.0, 0.0, 0.0, 0.0],
            k: 2,
            ..Default::default()
        })
        .await
        .expect("dense search")
        .into_inner()
        .hits;
    assert_eq!(ids(&hits), ["a", "d"]);
    assert!(close(hits[0].score, 1.0));
    assert!(hits.iter().all(|h| h.explain.is_none()));
    // A dense search takes a vector or a text, not both.
    let both = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            vector: vec![1.0, 0.0, 0.0, 0.0],
            text: Some("fox".into()),
            mode: pb::SearchMode::Dense as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(code(both), Code::InvalidArgument);
}

#[tokio::test]
async fn bad_hybrid_fields_are_invalid_argument() {
    let (_server, mut c) = setup().await;
    let base = || pb::SearchRequest {
        collection: "h".into(),
        vector: vec![0.0, 0.0, 1.0, 0.0],
        text: Some("fox".into()),
        mode: pb::SearchMode::Hybrid as i32,
        ..Default::default()
    };
    let cases: Vec<(&str, pb::SearchRequest)> = vec![
        (
            "one weight",
            pb::SearchRequest {
                weights: vec![1.0],
                ..base()
            },
        ),
        (
            "three weights",
            pb::SearchRequest {
                weights: vec![1.0, 1.0, 1.0],
                ..base()
            },
        ),
        (
            "a NaN weight",
            pb::SearchRequest {
                weights: vec![f32::NAN, 1.0],
                ..base()
            },
        ),
        (
            "a negative weight",
            pb::SearchRequest {
                weights: vec![-1.0, 1.0],
                ..base()
            },
        ),
        (
            "both weights 0",
            pb::SearchRequest {
                weights: vec![0.0, 0.0],
                ..base()
            },
        ),
        (
            "a NaN rrf_k",
            pb::SearchRequest {
                rrf_k: Some(f32::NAN),
                ..base()
            },
        ),
        (
            "rrf_k 0",
            pb::SearchRequest {
                rrf_k: Some(0.0),
                ..base()
            },
        ),
        (
            "an infinite bm25_k1",
            pb::SearchRequest {
                bm25_k1: Some(f32::INFINITY),
                ..base()
            },
        ),
        (
            "bm25_b above 1",
            pb::SearchRequest {
                bm25_b: Some(1.5),
                ..base()
            },
        ),
        ("an unknown mode", pb::SearchRequest { mode: 99, ..base() }),
        (
            "an unknown fusion",
            pb::SearchRequest {
                fusion: 42,
                ..base()
            },
        ),
        (
            "depth 0",
            pb::SearchRequest {
                depth: Some(0),
                ..base()
            },
        ),
    ];
    for (what, req) in cases {
        let status = c.search(req.clone()).await.expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        // In a batch, the message names the query.
        let status = c
            .search_batch(pb::SearchBatchRequest {
                collection: "h".into(),
                queries: vec![base(), req],
            })
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let status = c
        .search(pb::SearchRequest {
            weights: vec![1.0],
            ..base()
        })
        .await
        .expect_err("one weight");
    assert!(status.message().contains("weights"), "{}", status.message());
    let status = c
        .search_batch(pb::SearchBatchRequest {
            collection: "h".into(),
            queries: vec![base(), pb::SearchRequest { mode: 7, ..base() }],
        })
        .await
        .expect_err("unknown mode");
    assert!(
        status.message().starts_with("query 1: "),
        "{}",
        status.message()
    );
    // A lexical search needs a text.
    let status = c
        .search(pb::SearchRequest {
            collection: "h".into(),
            vector: vec![1.0, 0.0, 0.0, 0.0],
            mode: pb::SearchMode::Lexical as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(code(status), Code::InvalidArgument);
}

fn object(v: serde_json::Value) -> prost_types::Struct {
    fn value(v: serde_json::Value) -> prost_types::Value {
        let kind = match v {
            serde_json::Value::Null => Kind::NullValue(0),
            serde_json::Value::Bool(b) => Kind::BoolValue(b),
            serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Kind::StringValue(s),
            serde_json::Value::Array(a) => Kind::ListValue(prost_types::ListValue {
                values: a.into_iter().map(value).collect(),
            }),
            serde_json::Value::Object(m) => Kind::StructValue(prost_types::Struct {
                fields: m.into_iter().map(|(k, v)| (k, value(v))).collect(),
            }),
        };
        prost_types::Value { kind: Some(kind) }
    }
    match value(v) {
        prost_types::Value {
            kind: Some(Kind::StructValue(s)),
        } => s,
        other => panic!("not an object: {other:?}"),
    }
}

fn field<'a>(s: &'a prost_types::Struct, path: &[&str]) -> Option<&'a Kind> {
    let (last, init) = path.split_last()?;
    let mut cur = s;
    for key in init {
        match cur.fields.get(*key)?.kind.as_ref()? {
            Kind::StructValue(inner) => cur = inner,
            _ => return None,
        }
    }
    cur.fields.get(*last)?.kind.as_ref()
}

#[tokio::test]
async fn collections_take_and_report_lexical_settings() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let create = |name: &str, lexical: Option<prost_types::Struct>| pb::CreateCollectionRequest {
        name: name.into(),
        dimension: 2,
        lexical,
        ..Default::default()
    };
    let info = c
        .create_collection(create(
            "stemmed",
            Some(object(
                serde_json::json!({"analyzer": {"stemmer": "english"}}),
            )),
        ))
        .await
        .expect("create with lexical settings")
        .into_inner();
    let lexical = info.lexical.as_ref().expect("lexical settings reported");
    assert_eq!(
        field(lexical, &["analyzer", "stemmer"]),
        Some(&Kind::StringValue("english".into()))
    );
    let got = c
        .get_collection(pb::GetCollectionRequest {
            name: "stemmed".into(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.lexical, info.lexical);

    // The settings apply: "jumping" finds "jumps" through the English stemmer.
    c.upsert(pb::UpsertRequest {
        collection: "stemmed".into(),
        documents: vec![pb::Document {
            id: "j".into(),
            text: Some("the cow jumps".into()),
            metadata: None,
            vector: vec![1.0, 0.0],
        }],
    })
    .await
    .expect("upsert");
    let hits = c
        .search(pb::SearchRequest {
            collection: "stemmed".into(),
            text: Some("jumping".into()),
            mode: pb::SearchMode::Lexical as i32,
            ..Default::default()
        })
        .await
        .expect("stemmed lexical search")
        .into_inner()
        .hits;
    assert_eq!(ids(&hits), ["j"]);

    // Unknown keys and bad values are refused, and nothing is created.
    for bad in [
        serde_json::json!({"bogus": 1}),
        serde_json::json!({"analyzer": {"stemmer": "klingon"}}),
        serde_json::json!({"bm25": {"k1": -1.0, "b": 0.5}}),
    ] {
        let r = c
            .create_collection(create("bad", Some(object(bad.clone()))))
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "{bad}");
    }
    let list = c
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.collections.len(), 1);

    // Without a lexical index, a lexical search is a failed precondition.
    c.create_collection(create(
        "dense-only",
        Some(object(serde_json::json!({"enabled": false}))),
    ))
    .await
    .expect("create without a lexical index");
    let r = c
        .search(pb::SearchRequest {
            collection: "dense-only".into(),
            text: Some("anything".into()),
            mode: pb::SearchMode::Lexical as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(code(r), Code::FailedPrecondition);
}
