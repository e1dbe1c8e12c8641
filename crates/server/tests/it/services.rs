//! Authentication on and off, the health service, server reflection, and Embed with a model.

use crate::common::{TestServer, vector};
use latentdb_server::ServerConfig;
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const KEY: &str = "k3y-for-tests";

fn with(
    header: &'static str,
    value: &str,
    msg: pb::ListCollectionsRequest,
) -> tonic::Request<pb::ListCollectionsRequest> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert(header, MetadataValue::try_from(value).expect("ascii"));
    r
}

async fn health(ch: Channel, service: &str) -> Result<i32, tonic::Status> {
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

async fn reflect(
    ch: Channel,
    req: MessageRequest,
    key: Option<&str>,
) -> Result<MessageResponse, tonic::Status> {
    let mut request = tonic::Request::new(tokio_stream::iter(vec![ServerReflectionRequest {
        host: String::new(),
        message_request: Some(req),
    }]));
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {key}")).expect("ascii"),
        );
    }
    let mut stream = ServerReflectionClient::new(ch)
        .server_reflection_info(request)
        .await?
        .into_inner();
    let msg = stream
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("no response"))?;
    msg.message_response
        .ok_or_else(|| tonic::Status::unknown("empty response"))
}

#[tokio::test]
async fn auth_on_requires_the_key_except_for_health() {
    let server = TestServer::start(ServerConfig::default().api_key(KEY)).await;
    let ch = server.channel().await;
    let mut c = LatentDbClient::new(ch.clone());

    let none = c.list_collections(pb::ListCollectionsRequest {}).await;
    assert_eq!(none.expect_err("no key").code(), Code::Unauthenticated);
    let wrong = c
        .list_collections(with(
            "authorization",
            "Bearer nope",
            pb::ListCollectionsRequest {},
        ))
        .await;
    assert_eq!(wrong.expect_err("wrong key").code(), Code::Unauthenticated);
    let not_bearer = c
        .list_collections(with("authorization", KEY, pb::ListCollectionsRequest {}))
        .await;
    assert_eq!(
        not_bearer.expect_err("no scheme").code(),
        Code::Unauthenticated
    );
    c.list_collections(with(
        "authorization",
        &format!("Bearer {KEY}"),
        pb::ListCollectionsRequest {},
    ))
    .await
    .expect("bearer");
    c.list_collections(with("x-api-key", KEY, pb::ListCollectionsRequest {}))
        .await
        .expect("x-api-key");

    // An interceptor on the client adds the key to every call, streaming ones included.
    let key: MetadataValue<_> = format!("Bearer {KEY}").try_into().expect("ascii");
    let mut authed =
        LatentDbClient::with_interceptor(ch.clone(), move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", key.clone());
            Ok(r)
        });
    authed
        .create_collection(pb::CreateCollectionRequest {
            name: "a".into(),
            dimension: 4,
            ..Default::default()
        })
        .await
        .expect("create with key");
    let out = authed
        .upsert_stream(tokio_stream::iter(vec![pb::UpsertRequest {
            collection: "a".into(),
            documents: vec![pb::Document {
                id: "x".into(),
                vector: vector(1, 4),
                ..Default::default()
            }],
        }]))
        .await
        .expect("stream with key")
        .into_inner();
    assert_eq!(out.written, 1);
    let unauth_stream = c
        .upsert_stream(tokio_stream::iter(Vec::<pb::UpsertRequest>::new()))
        .await;
    assert_eq!(
        unauth_stream.expect_err("no key").code(),
        Code::Unauthenticated
    );

    // Health needs no key; reflection does.
    assert_eq!(
        health(ch.clone(), "").await.expect("health"),
        ServingStatus::Serving as i32
    );
    let r = reflect(
        ch.clone(),
        MessageRequest::ListServices(String::new()),
        None,
    )
    .await;
    assert_eq!(
        r.expect_err("reflection needs the key").code(),
        Code::Unauthenticated
    );
    reflect(ch, MessageRequest::ListServices(String::new()), Some(KEY))
        .await
        .expect("reflection with the key");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_empty_api_key_is_refused_at_startup() {
    // An empty key used to turn authentication off without a word.
    for key in ["", "   "] {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = std::sync::Arc::new(latentdb::Database::open(dir.path()).expect("open"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let r = latentdb_server::serve_with_listener(
            db,
            ServerConfig::default().api_key(key),
            listener,
            async {},
        )
        .await;
        assert!(
            matches!(r, Err(latentdb_server::ServeError::Config(_))),
            "{key:?}: {r:?}"
        );
    }
}

#[tokio::test]
async fn auth_off_lets_everything_through() {
    let server = TestServer::start(ServerConfig::default()).await;
    let mut c = server.client().await;
    c.list_collections(pb::ListCollectionsRequest {})
        .await
        .expect("no key needed");
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn health_reports_serving() {
    let server = TestServer::start(ServerConfig::default()).await;
    let ch = server.channel().await;
    assert_eq!(
        health(ch.clone(), "").await.expect("overall"),
        ServingStatus::Serving as i32
    );
    assert_eq!(
        health(ch.clone(), "latentdb.v1.LatentDb")
            .await
            .expect("service"),
        ServingStatus::Serving as i32
    );
    let unknown = health(ch, "no.such.Service").await;
    assert_eq!(unknown.expect_err("unknown service").code(), Code::NotFound);
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn reflection_lists_and_describes_the_service() {
    let server = TestServer::start(ServerConfig::default()).await;
    let ch = server.channel().await;
    let MessageResponse::ListServicesResponse(list) = reflect(
        ch.clone(),
        MessageRequest::ListServices(String::new()),
        None,
    )
    .await
    .expect("list services") else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"latentdb.v1.LatentDb"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    let MessageResponse::FileDescriptorResponse(files) = reflect(
        ch,
        MessageRequest::FileContainingSymbol("latentdb.v1.LatentDb".into()),
        None,
    )
    .await
    .expect("file containing symbol") else {
        panic!("unexpected reflection response");
    };
    let protos: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost::Message::decode(b.as_slice()).expect("descriptor"))
        .collect();
    let ours = protos
        .iter()
        .find(|f| f.package() == "latentdb.v1")
        .expect("latentdb.v1 file");
    let methods: Vec<_> = ours.service[0].method.iter().map(|m| m.name()).collect();
    for m in [
        "CreateCollection",
        "UpsertStream",
        "Search",
        "SearchBatch",
        "Embed",
        "Compact",
    ] {
        assert!(methods.contains(&m), "{m} missing from {methods:?}");
    }
    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn embed_and_text_search_with_the_tiny_model() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/nvembed-tiny");
    if !fixture.exists() {
        eprintln!("skipping: {} is missing", fixture.display());
        return;
    }
    let embedder =
        latentdb::embed::Embedder::from_dir(&fixture, &Default::default()).expect("tiny model");
    let dim = embedder.dimension();
    let server =
        // The test names the fixture model by its path: the operator's opt-in.
        TestServer::start(
            ServerConfig::default()
                .embedder(std::sync::Arc::new(embedder))
                .allow_model_paths(true),
        )
        .await;
    let mut c = server.client().await;

    let out = c
        .embed(pb::EmbedRequest {
            texts: vec!["rust".into(), "vector databases".into()],
            task: None,
            instruction: None,
        })
        .await
        .expect("embed")
        .into_inner();
    assert_eq!(out.dimension as usize, dim);
    assert_eq!(out.vectors.len(), 2);
    let norm: f32 = out.vectors[0]
        .values
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    let r = c
        .embed(pb::EmbedRequest {
            texts: vec!["x".into()],
            task: Some("t".into()),
            instruction: Some("i".into()),
        })
        .await;
    assert_eq!(r.expect_err("both").code(), Code::InvalidArgument);
    let r = c
        .embed(pb::EmbedRequest {
            texts: vec!["x".into()],
            task: Some("no-such-task".into()),
            instruction: None,
        })
        .await;
    assert_eq!(r.expect_err("unknown task").code(), Code::InvalidArgument);

    // A collection embedded by the model: text upserts and text queries.
    let info = c
        .create_collection(pb::CreateCollectionRequest {
            name: "texts".into(),
            model: fixture.to_string_lossy().into_owned(),
            ..Default::default()
        })
        .await
        .expect("create with a model")
        .into_inner();
    assert_eq!(info.dimension as usize, dim);
    assert!(info.embedder.is_some());
    let docs = [
        "the cat sat on the mat",
        "stock markets fell sharply",
        "a kitten naps",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| pb::Document {
        id: format!("t{i}"),
        text: Some((*t).into()),
        ..Default::default()
    })
    .collect();
    c.upsert(pb::UpsertRequest {
        collection: "texts".into(),
        documents: docs,
    })
    .await
    .expect("text upsert");
    let hits = c
        .search(pb::SearchRequest {
            collection: "texts".into(),
            text: Some("the cat sat on the mat".into()),
            k: 3,
            ..Default::default()
        })
        .await
        .expect("text search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 3);
    let hits = c
        .search(pb::SearchRequest {
            collection: "texts".into(),
            text: Some("cats".into()),
            k: 1,
            task: Some("no-such-task".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(
        hits.expect_err("unknown task").code(),
        Code::InvalidArgument
    );
    server.stop().await.expect("clean stop");
}
