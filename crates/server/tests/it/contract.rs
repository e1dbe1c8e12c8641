//! The gRPC contract under hostile input: every bad input class gets its exact status code and
//! a bounded message, the server keeps serving, and the data is unchanged. Also the score
//! convention of each metric, the `k = 0` default, and malformed protobuf bytes.

use std::time::Duration;

use crate::common::{TestServer, vector};
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use latentdb_server::{MAX_STATUS_MESSAGE_BYTES, ServerConfig};
use prost_types::value::Kind;
use tonic::Code;
use tonic::transport::Channel;

const DIM: usize = 8;
const COLL: &str = "c";
const DOCS: u64 = 30;

fn number(n: f64) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn string(s: &str) -> prost_types::Value {
    prost_types::Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn object(fields: Vec<(&str, prost_types::Value)>) -> prost_types::Struct {
    prost_types::Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

fn doc(id: &str, seed: u64) -> pb::Document {
    pb::Document {
        id: id.into(),
        text: Some(format!("text of {id}")),
        metadata: Some(object(vec![("n", number(seed as f64))])),
        vector: vector(seed, DIM),
    }
}

/// A server with collection `c` holding [`DOCS`] documents.
async fn setup(config: ServerConfig) -> (TestServer, LatentDbClient<Channel>) {
    let server = TestServer::start(config).await;
    let mut c = server.client().await;
    seed(&mut c).await;
    (server, c)
}

/// Creates collection `c` with [`DOCS`] documents.
async fn seed(c: &mut LatentDbClient<Channel>) {
    c.create_collection(pb::CreateCollectionRequest {
        name: COLL.into(),
        dimension: DIM as u32,
        ..Default::default()
    })
    .await
    .expect("create");
    c.upsert(pb::UpsertRequest {
        collection: COLL.into(),
        documents: (0..DOCS).map(|i| doc(&format!("d{i}"), i)).collect(),
    })
    .await
    .expect("upsert");
}

async fn count(c: &mut LatentDbClient<Channel>, name: &str) -> u64 {
    c.count(pb::CountRequest {
        collection: name.into(),
    })
    .await
    .expect("count")
    .into_inner()
    .count
}

/// The call failed with `code` and a short message, the server still answers, and the
/// collection still holds every document.
async fn refused<T: std::fmt::Debug>(
    c: &mut LatentDbClient<Channel>,
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
) -> tonic::Status {
    let status = match r {
        Ok(v) => panic!("{what}: expected {code:?}, got {v:?}"),
        Err(s) => s,
    };
    assert_eq!(status.code(), code, "{what}: {}", status.message());
    assert!(
        status.message().len() <= MAX_STATUS_MESSAGE_BYTES,
        "{what}: a {}-byte message",
        status.message().len()
    );
    assert!(!status.message().is_empty(), "{what}: no message");
    let collections = c
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .unwrap_or_else(|e| panic!("{what}: the server stopped answering: {e}"))
        .into_inner()
        .collections;
    assert!(
        collections.iter().any(|i| i.name == COLL),
        "{what}: {collections:?}"
    );
    assert_eq!(count(c, COLL).await, DOCS, "{what}: the data changed");
    status
}

#[tokio::test]
async fn bad_collection_specs_are_refused_and_brick_nothing() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    let create = |name: &str, dimension: u32, index: Option<prost_types::Struct>| {
        pb::CreateCollectionRequest {
            name: name.into(),
            dimension,
            index,
            ..Default::default()
        }
    };
    let cases = [
        (
            "initial_capacity 1e12",
            create(
                "big",
                8,
                Some(object(vec![("initial_capacity", number(1e12))])),
            ),
        ),
        (
            "initial_capacity 2^61",
            create(
                "huge",
                8,
                Some(object(vec![("initial_capacity", number(2f64.powi(61)))])),
            ),
        ),
        (
            "an unknown index key",
            create(
                "typo",
                8,
                Some(object(vec![("ef_constrution", number(100.0))])),
            ),
        ),
        (
            "a wrongly typed index value",
            create("typed", 8, Some(object(vec![("m", string("sixteen"))]))),
        ),
        ("dimension 0", create("zero", 0, None)),
        ("dimension 2^31", create("wide", 1 << 31, None)),
        ("a 16 KiB name", create(&"n".repeat(16 * 1024), 8, None)),
        ("a name with a slash", create("a/b", 8, None)),
    ];
    for (what, req) in cases {
        let r = c.create_collection(req).await;
        refused(&mut c, what, r, Code::InvalidArgument).await;
    }
    // Nothing of them was stored: the list holds only `c`, and a reopen works.
    let names: Vec<String> = c
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .collections
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, [COLL]);
    let (stopped, db, dir) = server.stop_keep_dir().await;
    stopped.expect("clean stop");
    drop(db);
    let reopened = latentdb::Database::open(dir.path()).expect("the database still opens");
    assert_eq!(reopened.count(COLL).expect("count"), DOCS);
}

#[tokio::test]
async fn bad_names_and_ids_get_short_messages() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    let long = "x".repeat(16 * 1024);
    // A name that cannot exist does not exist.
    let r = c
        .get_collection(pb::GetCollectionRequest { name: long.clone() })
        .await;
    refused(&mut c, "GetCollection 16 KiB", r, Code::NotFound).await;
    let r = c
        .count(pb::CountRequest {
            collection: long.clone(),
        })
        .await;
    refused(&mut c, "Count 16 KiB", r, Code::NotFound).await;
    let r = c
        .delete_collection(pb::DeleteCollectionRequest { name: long.clone() })
        .await;
    refused(&mut c, "DeleteCollection 16 KiB", r, Code::NotFound).await;
    let r = c
        .upsert(pb::UpsertRequest {
            collection: COLL.into(),
            documents: vec![doc(&long, 1)],
        })
        .await;
    refused(&mut c, "a 16 KiB id", r, Code::InvalidArgument).await;
    // A stream naming another (16 KiB) collection in its second message.
    let r = c
        .upsert_stream(tokio_stream::iter(vec![
            pb::UpsertRequest {
                collection: COLL.into(),
                documents: vec![],
            },
            pb::UpsertRequest {
                collection: long.clone(),
                documents: vec![doc("never", 1)],
            },
        ]))
        .await;
    refused(
        &mut c,
        "a stream switching to a 16 KiB name",
        r,
        Code::InvalidArgument,
    )
    .await;
    // SearchBatch naming another (16 KiB) collection in a query.
    let r = c
        .search_batch(pb::SearchBatchRequest {
            collection: COLL.into(),
            queries: vec![pb::SearchRequest {
                collection: long.clone(),
                vector: vector(1, DIM),
                ..Default::default()
            }],
        })
        .await;
    refused(
        &mut c,
        "a query naming a 16 KiB collection",
        r,
        Code::InvalidArgument,
    )
    .await;

    // require_all with 5000 missing 200-byte ids: NOT_FOUND naming only the first few.
    let ids: Vec<String> = (0..5000).map(|i| format!("{i:0>200}")).collect();
    let r = c
        .get(pb::GetRequest {
            collection: COLL.into(),
            ids,
            require_all: true,
            ..Default::default()
        })
        .await;
    let s = refused(&mut c, "require_all", r, Code::NotFound).await;
    assert!(s.message().contains("5000"), "{}", s.message());
    assert!(s.message().contains("and 4990 more"), "{}", s.message());
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_vectors_are_refused() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    let with_vector = |v: Vec<f32>| pb::UpsertRequest {
        collection: COLL.into(),
        documents: vec![pb::Document {
            id: "bad".into(),
            vector: v,
            ..Default::default()
        }],
    };
    let mut nan = vector(1, DIM);
    nan[3] = f32::NAN;
    let mut inf = vector(1, DIM);
    inf[0] = f32::INFINITY;
    let cases = [
        ("a short vector", with_vector(vec![1.0; DIM - 1])),
        ("a NaN component", with_vector(nan.clone())),
        ("an infinite component", with_vector(inf)),
        ("components of 1e20", with_vector(vec![1e20; DIM])),
        ("components of 3e38", with_vector(vec![3e38; DIM])),
        ("a zero vector (cosine)", with_vector(vec![0.0; DIM])),
    ];
    for (what, req) in cases {
        let r = c.upsert(req).await;
        let s = refused(&mut c, what, r, Code::InvalidArgument).await;
        if what.starts_with("components of") {
            // Its own message, not a misleading "zero-length" one.
            assert!(!s.message().contains("zero"), "{what}: {}", s.message());
        }
    }
    for (what, v) in [("a NaN query", nan), ("a query of 3e38", vec![3e38; DIM])] {
        let r = c
            .search(pb::SearchRequest {
                collection: COLL.into(),
                vector: v,
                ..Default::default()
            })
            .await;
        refused(&mut c, what, r, Code::InvalidArgument).await;
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn deletes_never_empty_a_collection_by_accident() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    let filter = |json: &str| {
        Some(pb::Filter {
            kind: Some(pb::filter::Kind::Json(json.into())),
        })
    };
    // An empty filter (as JSON or as a Struct) used to delete every document.
    let r = c
        .delete(pb::DeleteRequest {
            collection: COLL.into(),
            filter: filter("{}"),
            ..Default::default()
        })
        .await;
    refused(&mut c, "an empty JSON filter", r, Code::InvalidArgument).await;
    let r = c
        .delete(pb::DeleteRequest {
            collection: COLL.into(),
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Structured(prost_types::Struct::default())),
            }),
            ..Default::default()
        })
        .await;
    refused(&mut c, "an empty Struct filter", r, Code::InvalidArgument).await;
    let r = c
        .delete(pb::DeleteRequest {
            collection: COLL.into(),
            filter: filter(r#"{"n": 1}"#),
            all_documents: true,
            ..Default::default()
        })
        .await;
    refused(
        &mut c,
        "a filter and all_documents",
        r,
        Code::InvalidArgument,
    )
    .await;
    let r = c
        .delete(pb::DeleteRequest {
            collection: COLL.into(),
            ids: vec!["d1".into()],
            all_documents: true,
            ..Default::default()
        })
        .await;
    refused(&mut c, "ids and all_documents", r, Code::InvalidArgument).await;
    // all_documents deletes everything, and says how many.
    let out = c
        .delete(pb::DeleteRequest {
            collection: COLL.into(),
            all_documents: true,
            ..Default::default()
        })
        .await
        .expect("delete all")
        .into_inner();
    assert_eq!(out.deleted_count, DOCS);
    assert_eq!(count(&mut c, COLL).await, 0);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn huge_in_lists_are_refused() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    let operands: Vec<String> = (0..200_000).map(|i| i.to_string()).collect();
    let filter = serde_json::json!({"n": {"$in": operands}}).to_string();
    let r = c
        .delete(pb::DeleteRequest {
            collection: COLL.into(),
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Json(filter.clone())),
            }),
            ..Default::default()
        })
        .await;
    refused(
        &mut c,
        "a 200 000-operand $in in Delete",
        r,
        Code::InvalidArgument,
    )
    .await;
    let r = c
        .search(pb::SearchRequest {
            collection: COLL.into(),
            vector: vector(1, DIM),
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Json(filter)),
            }),
            ..Default::default()
        })
        .await;
    refused(
        &mut c,
        "a 200 000-operand $in in Search",
        r,
        Code::InvalidArgument,
    )
    .await;
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn client_named_model_paths_are_refused_unless_allowed() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/nvembed-tiny")
        .canonicalize()
        .expect("fixture model");
    // A models root holding one model, `tiny`; the database resolves names under it.
    let models = tempfile::tempdir().expect("tempdir");
    let tiny = models.path().join("tiny");
    std::fs::create_dir(&tiny).expect("mkdir");
    for f in std::fs::read_dir(&fixture).expect("fixture") {
        let f = f.expect("entry").path();
        std::fs::copy(&f, tiny.join(f.file_name().expect("name"))).expect("copy");
    }
    let options = || {
        latentdb::DatabaseOptions::new()
            .allow_model_paths(false)
            .models_dir(models.path())
    };
    let server = TestServer::start_with(ServerConfig::default(), options()).await;
    let mut c = server.client().await;
    seed(&mut c).await;
    for model in [
        fixture.display().to_string(),
        "/".to_string(),
        "../../etc".to_string(),
        "tiny/../../..".to_string(),
    ] {
        let r = c
            .create_collection(pb::CreateCollectionRequest {
                name: "m".into(),
                model: model.clone(),
                ..Default::default()
            })
            .await;
        refused(&mut c, &model, r, Code::FailedPrecondition).await;
    }
    // A name under the models root that holds no model is the caller's mistake too.
    let r = c
        .create_collection(pb::CreateCollectionRequest {
            name: "m".into(),
            model: "absent".into(),
            ..Default::default()
        })
        .await;
    refused(&mut c, "a name with no model", r, Code::NotFound).await;
    // A model under the root loads.
    let info = c
        .create_collection(pb::CreateCollectionRequest {
            name: "m".into(),
            model: "tiny".into(),
            ..Default::default()
        })
        .await
        .expect("a model under the models root")
        .into_inner();
    assert!(info.dimension > 0);
    server.stop().await.expect("clean stop");

    // With --allow-model-paths, a directory that does not exist is the caller's mistake.
    let server = TestServer::start(ServerConfig::default().allow_model_paths(true)).await;
    let mut c = server.client().await;
    seed(&mut c).await;
    let r = c
        .create_collection(pb::CreateCollectionRequest {
            name: "m".into(),
            model: "/nonexistent/model/dir".into(),
            ..Default::default()
        })
        .await;
    refused(&mut c, "a missing model directory", r, Code::NotFound).await;
    server.stop().await.expect("clean stop");
}

/// A metadata Struct nested `depth` levels deep.
fn nested(depth: usize) -> prost_types::Struct {
    let mut s = object(vec![("leaf", number(1.0))]);
    for _ in 0..depth {
        s = prost_types::Struct {
            fields: [(
                "a".to_string(),
                prost_types::Value {
                    kind: Some(Kind::StructValue(s)),
                },
            )]
            .into_iter()
            .collect(),
        };
    }
    s
}

#[tokio::test]
async fn undecodable_requests_are_invalid_argument() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    // A Struct nested past the decoder's recursion limit.
    let r = c
        .upsert(pb::UpsertRequest {
            collection: COLL.into(),
            documents: vec![pb::Document {
                metadata: Some(nested(200)),
                ..doc("deep", 1)
            }],
        })
        .await;
    refused(&mut c, "a Struct nested 200 deep", r, Code::InvalidArgument).await;
    let r = c
        .search(pb::SearchRequest {
            collection: COLL.into(),
            vector: vector(1, DIM),
            filter: Some(pb::Filter {
                kind: Some(pb::filter::Kind::Structured(nested(200))),
            }),
            ..Default::default()
        })
        .await;
    refused(&mut c, "a filter nested 200 deep", r, Code::InvalidArgument).await;

    // Raw bytes that are not a CreateCollectionRequest: a string field holding invalid UTF-8,
    // a varint where a string belongs, a length running past the end.
    let raw = [
        // Field 1 (name), length 3, not UTF-8.
        vec![0x0a, 0x03, 0xff, 0xfe, 0xfd],
        prost::Message::encode_to_vec(&prost_types::Duration {
            seconds: 5,
            nanos: 0,
        }),
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    ];
    for bytes in raw {
        let r = send_raw(server.channel().await, "CreateCollection", bytes.clone()).await;
        let what = format!("raw bytes {bytes:02x?}");
        refused(&mut c, &what, r, Code::InvalidArgument).await;
    }
    server.stop().await.expect("clean stop");
}

/// Sends `bytes` as the request of `/latentdb.v1.LatentDb/{method}`.
async fn send_raw(
    channel: Channel,
    method: &str,
    bytes: Vec<u8>,
) -> Result<tonic::Response<pb::CollectionInfo>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(format!(
        "/latentdb.v1.LatentDb/{method}"
    ))
    .expect("path");
    grpc.unary(tonic::Request::new(Raw(bytes)), path, RawCodec)
        .await
}

/// Bytes sent as they are.
#[derive(Debug, Clone)]
struct Raw(Vec<u8>);

/// Encodes [`Raw`] as its bytes; decodes responses as `CollectionInfo`.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Raw;
    type Decode = pb::CollectionInfo;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<pb::CollectionInfo>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

#[derive(Debug, Clone)]
struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Raw;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Raw,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item.0);
        Ok(())
    }
}

#[tokio::test]
async fn k_zero_means_ten() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    let hits = c
        .search(pb::SearchRequest {
            collection: COLL.into(),
            vector: vector(3, DIM),
            k: 0,
            ..Default::default()
        })
        .await
        .expect("k = 0 is the default, 10")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 10);
    let r = c
        .search(pb::SearchRequest {
            collection: COLL.into(),
            vector: vector(3, DIM),
            k: 1_000_000,
            ..Default::default()
        })
        .await;
    refused(&mut c, "k over the limit", r, Code::ResourceExhausted).await;
    server.stop().await.expect("clean stop");
}

/// Creates a 2-d collection of `metric` holding `docs`, then searches `query` (graph and
/// exact) and returns the hits as (id, score), best first.
async fn scores(
    c: &mut LatentDbClient<Channel>,
    metric: pb::Metric,
    docs: &[(&str, [f32; 2])],
    query: [f32; 2],
) -> Vec<(String, f32)> {
    let name = format!("m{}", metric as i32);
    c.create_collection(pb::CreateCollectionRequest {
        name: name.clone(),
        dimension: 2,
        metric: metric as i32,
        ..Default::default()
    })
    .await
    .expect("create");
    c.upsert(pb::UpsertRequest {
        collection: name.clone(),
        documents: docs
            .iter()
            .map(|(id, v)| pb::Document {
                id: (*id).into(),
                vector: v.to_vec(),
                ..Default::default()
            })
            .collect(),
    })
    .await
    .expect("upsert");
    let mut out = Vec::new();
    for exact in [false, true] {
        let hits: Vec<(String, f32)> = c
            .search(pb::SearchRequest {
                collection: name.clone(),
                vector: query.to_vec(),
                k: 10,
                exact,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits
            .into_iter()
            .map(|h| (h.id, h.score))
            .collect();
        if exact {
            assert_eq!(
                hits.iter().map(|h| &h.0).collect::<Vec<_>>(),
                out.iter().map(|h: &(String, f32)| &h.0).collect::<Vec<_>>(),
                "{metric:?}: graph and exact search disagree"
            );
        } else {
            out = hits;
        }
    }
    assert!(
        out.windows(2).all(|w| w[0].1 >= w[1].1),
        "{metric:?}: not best first: {out:?}"
    );
    out
}

fn assert_scores(got: &[(String, f32)], want: &[(&str, f32)]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((id, score), (want_id, want_score)) in got.iter().zip(want) {
        assert_eq!(id, want_id, "{got:?}");
        assert!(
            (score - want_score).abs() < 1e-4,
            "{id}: score {score}, expected {want_score} ({got:?})"
        );
    }
}

#[tokio::test]
async fn l2_scores_are_negated_distances() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let docs = [
        ("near", [1.0, 1.0]),
        ("far", [4.0, 6.0]),
        ("same", [1.0, 2.0]),
    ];
    let got = scores(&mut c, pb::Metric::L2, &docs, [1.0, 2.0]).await;
    // Distances 0, 1 and 5: larger (less negative) is closer.
    assert_scores(&got, &[("same", 0.0), ("near", -1.0), ("far", -5.0)]);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn dot_scores_are_inner_products() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let docs = [
        ("small", [1.0, 0.0]),
        ("big", [3.0, 1.0]),
        ("against", [-2.0, 0.0]),
    ];
    let got = scores(&mut c, pb::Metric::Dot, &docs, [2.0, 0.0]).await;
    assert_scores(&got, &[("big", 6.0), ("small", 2.0), ("against", -4.0)]);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn cosine_scores_are_similarities() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    let docs = [
        ("same", [2.0, 0.0]),
        ("diag", [1.0, 1.0]),
        ("opposite", [-3.0, 0.0]),
    ];
    let got = scores(&mut c, pb::Metric::Cosine, &docs, [1.0, 0.0]).await;
    assert_scores(
        &got,
        &[
            ("same", 1.0),
            ("diag", std::f32::consts::FRAC_1_SQRT_2),
            ("opposite", -1.0),
        ],
    );
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_passed_deadline_starts_no_work() {
    let (server, mut c) = setup(ServerConfig::default()).await;
    let mut req = tonic::Request::new(pb::UpsertRequest {
        collection: COLL.into(),
        documents: vec![doc("late", 1)],
    });
    req.set_timeout(Duration::from_nanos(1));
    let r = c.upsert(req).await;
    let status = r.expect_err("the deadline passed before the write could start");
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // Give a write that was started anyway every chance to land before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.flush(pb::FlushRequest {}).await.expect("flush");
    let got = c
        .get(pb::GetRequest {
            collection: COLL.into(),
            ids: vec!["late".into()],
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.missing_ids, ["late"], "work ran after its deadline");
    server.stop().await.expect("clean stop");
}

/// A read-only server (a cluster data node) refuses every call that changes data with
/// FAILED_PRECONDITION and its reason, and still serves reads; nothing changes.
#[tokio::test]
async fn a_read_only_server_refuses_writes_and_serves_reads() {
    let reason = "node7 is a cluster data node: write through a router";
    let ro = TestServer::start(ServerConfig {
        read_only: Some(reason.into()),
        ..ServerConfig::default()
    })
    .await;
    // Seeded through the library: the server itself takes no writes.
    ro.db
        .create_collection(latentdb::CollectionSpec::new(
            COLL,
            DIM,
            latentdb::Metric::Cosine,
        ))
        .unwrap();
    let docs = (0..DOCS)
        .map(|i| latentdb::Document::new(format!("d{i}"), vector(i, DIM)))
        .collect();
    ro.db.upsert(COLL, docs).unwrap();
    let mut c = ro.client().await;
    let r = c
        .upsert(pb::UpsertRequest {
            collection: COLL.into(),
            documents: vec![doc("x", 99)],
        })
        .await;
    assert!(
        refused(&mut c, "upsert", r, Code::FailedPrecondition)
            .await
            .message()
            .contains(reason)
    );
    let r = c
        .delete(pb::DeleteRequest {
            collection: COLL.into(),
            ids: vec!["d1".into()],
            ..Default::default()
        })
        .await;
    refused(&mut c, "delete", r, Code::FailedPrecondition).await;
    let r = c
        .delete_collection(pb::DeleteCollectionRequest { name: COLL.into() })
        .await;
    refused(&mut c, "drop", r, Code::FailedPrecondition).await;
    let r = c
        .create_collection(pb::CreateCollectionRequest {
            name: "other".into(),
            dimension: 4,
            ..Default::default()
        })
        .await;
    refused(&mut c, "create", r, Code::FailedPrecondition).await;
    let r = c
        .upsert_stream(tokio_stream::iter(vec![pb::UpsertRequest {
            collection: COLL.into(),
            documents: vec![doc("y", 98)],
        }]))
        .await;
    refused(&mut c, "upsert stream", r, Code::FailedPrecondition).await;
    let hits = c
        .search(pb::SearchRequest {
            collection: COLL.into(),
            vector: vector(3, DIM),
            k: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert_eq!(hits[0].id, "d3");
}
