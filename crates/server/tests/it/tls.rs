//! TLS: with a certificate and key, the server speaks only TLS; a client trusting the
//! certificate works end to end (auth included), a plaintext client is refused, and a bad
//! key stops the server before it serves.

use crate::common::TestServer;
use latentdb_server::pb;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use latentdb_server::{ServeError, ServerConfig, TlsIdentity};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// A self-signed certificate for `localhost` and its key, PEM.
fn self_signed() -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("generate a certificate");
    (cert.cert.pem(), cert.key_pair.serialize_pem())
}

async fn tls_channel(
    server: &TestServer,
    ca_pem: &str,
) -> Result<Channel, tonic::transport::Error> {
    Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca_pem))
                .domain_name("localhost"),
        )?
        .connect()
        .await
}

#[tokio::test]
async fn tls_serves_trusting_clients_and_refuses_plaintext() {
    let (cert, key) = self_signed();
    let server = TestServer::start(
        ServerConfig::default()
            .api_key("tls-key")
            .tls(TlsIdentity::from_pem(cert.clone(), key)),
    )
    .await;

    let mut client = LatentDbClient::new(tls_channel(&server, &cert).await.expect("TLS connect"));
    let mut req = tonic::Request::new(pb::CreateCollectionRequest {
        name: "secure".into(),
        dimension: 3,
        metric: pb::Metric::Cosine as i32,
        ..Default::default()
    });
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::from_static("Bearer tls-key"),
    );
    let info = client
        .create_collection(req)
        .await
        .expect("create over TLS");
    assert_eq!(info.into_inner().name, "secure");
    // Auth still applies over TLS.
    let err = client
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .expect_err("no key");
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    // A plaintext HTTP/2 client gets no answer from a TLS server.
    let plain = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await;
    if let Ok(ch) = plain {
        let r = LatentDbClient::new(ch)
            .list_collections(pb::ListCollectionsRequest {})
            .await;
        assert!(
            r.is_err(),
            "a plaintext call succeeded against a TLS server"
        );
    }

    // A client that does not trust this certificate cannot connect.
    let (other_cert, _) = self_signed();
    let untrusted = match tls_channel(&server, &other_cert).await {
        Ok(ch) => LatentDbClient::new(ch)
            .list_collections(pb::ListCollectionsRequest {})
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(untrusted, "an untrusted certificate was accepted");

    server.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_bad_key_fails_before_serving() {
    let (cert, _) = self_signed();
    let server =
        TestServer::start(ServerConfig::default().tls(TlsIdentity::from_pem(cert, "not a key")))
            .await;
    match server.stop().await {
        Err(ServeError::Tls(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a TLS error, got {other:?}"),
    }
}
