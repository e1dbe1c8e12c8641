//! [`serve`]: the tonic server with health, reflection, auth and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use latentdb::Database;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::ApiKeyAuth;
use crate::config::ServerConfig;
use crate::error::ServeError;
use crate::pb::latent_db_server::LatentDbServer;
use crate::service::LatentDbService;

/// Binds `config.addr` and serves until `shutdown` completes (see [`serve_with_listener`]).
pub async fn serve(
    db: Arc<Database>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(config.addr)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.addr,
            source,
        })?;
    serve_with_listener(db, config, listener, shutdown).await
}

/// Serves `latentdb.v1.LatentDb`, `grpc.health.v1.Health` and server reflection (v1 and
/// v1alpha) on `listener` (its address wins over `config.addr`) until `shutdown` completes.
///
/// Then it stops accepting connections, lets the calls in flight finish, and flushes the
/// database. With `config.api_key`, every service but health needs the key. With
/// `config.tls`, every connection is TLS (HTTP/2 negotiated by ALPN); a bad certificate or
/// key fails here, before anything is served ([`ServeError::Tls`]).
pub async fn serve_with_listener(
    db: Arc<Database>,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let addr = listener.local_addr().unwrap_or(config.addr);
    let limits = config.limits.clone();
    let auth = ApiKeyAuth::new(config.api_key.as_deref());

    let service = LatentDbService::new(Arc::clone(&db), limits.clone(), config.embedder.clone());
    let latentdb = LatentDbServer::new(service)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes);

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<LatentDbServer<LatentDbService>>()
        .await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Setup(e.to_string()))?;

    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServeError::Tls(error_chain(&e)))?;
    }

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(
        %addr,
        auth = config.api_key.is_some(),
        tls = config.tls.is_some(),
        "latentdb gRPC server listening"
    );

    let reporter = health_reporter.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing calls in flight");
        reporter
            .set_not_serving::<LatentDbServer<LatentDbService>>()
            .await;
    };
    builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health)
        .add_service(InterceptedService::new(latentdb, auth.clone()))
        .add_service(InterceptedService::new(reflection, auth.clone()))
        .add_service(InterceptedService::new(reflection_alpha, auth))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;

    let flushed = tokio::task::spawn_blocking(move || db.flush()).await;
    match flushed {
        Ok(r) => r.map_err(ServeError::Flush)?,
        Err(e) => return Err(ServeError::Setup(format!("flush task failed: {e}"))),
    }
    tracing::info!("flushed; server stopped");
    Ok(())
}

/// An error and its sources, joined with `: ` (tonic's transport errors say little alone).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
