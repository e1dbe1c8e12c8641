//! [`serve`]: the tonic server with health, reflection, auth and graceful shutdown (with a
//! drain deadline).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use latentdb::Database;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::ApiKeyAuth;
use crate::config::ServerConfig;
use crate::error::ServeError;
use crate::metrics::MetricsEndpoint;
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
/// v1alpha) on `listener` (its address wins over `config.addr`) until `shutdown` completes:
/// [`prepare`] then [`PreparedServer::serve`].
///
/// Then it stops accepting connections, lets the calls in flight finish (at most
/// `config.drain_timeout`), and flushes the database. With `config.api_key`, every service
/// but health needs the key. With `config.tls`, every connection is TLS (HTTP/2 negotiated by
/// ALPN); a bad certificate or key fails before anything is served ([`ServeError::Tls`]).
pub async fn serve_with_listener(
    db: Arc<Database>,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    prepare(db, config, listener).await?.serve(shutdown).await
}

/// A server whose configuration, TLS identity and services are checked and built, ready to
/// [`serve`](PreparedServer::serve): announce it only once you hold one.
pub struct PreparedServer {
    addr: SocketAddr,
    db: Arc<Database>,
    service: LatentDbService,
    health: tonic_health::server::HealthReporter,
    router: Router,
    incoming: TcpIncoming,
    drain_timeout: Duration,
    auth_layer: ApiKeyAuth,
    auth: bool,
    tls: bool,
    metrics: Option<MetricsEndpoint>,
}

impl std::fmt::Debug for PreparedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedServer")
            .field("addr", &self.addr)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("drain_timeout", &self.drain_timeout)
            .field("metrics_addr", &self.metrics_addr())
            .finish_non_exhaustive()
    }
}

/// Checks `config` and builds the server on `listener`, serving nothing yet.
///
/// Fails with [`ServeError::Config`] for an empty API key (it would silently turn
/// authentication off) or a metrics endpoint when another `metrics` recorder is installed,
/// [`ServeError::Bind`] when the metrics address cannot be bound, and [`ServeError::Tls`]
/// for an unusable certificate or key. Logs a
/// warning when the address is not loopback and the server has no TLS or no API key.
pub async fn prepare(
    db: Arc<Database>,
    config: ServerConfig,
    listener: TcpListener,
) -> Result<PreparedServer, ServeError> {
    install_crypto_provider();
    let addr = listener.local_addr().unwrap_or(config.addr);
    if config
        .api_key
        .as_deref()
        .is_some_and(|k| k.trim().is_empty())
    {
        return Err(ServeError::Config(
            "the API key is empty: give a non-empty key, or none to serve without \
             authentication"
                .into(),
        ));
    }
    if let Some(warning) = exposure_warning(addr, config.tls.is_some(), config.api_key.is_some()) {
        tracing::warn!(%addr, "{warning}");
    }
    let metrics = match config.metrics_addr {
        Some(addr) => Some(MetricsEndpoint::bind(addr, Arc::clone(&db)).await?),
        None => None,
    };
    let limits = config.limits.clone();
    let auth = ApiKeyAuth::new(config.api_key.as_deref());

    let service = LatentDbService::new(Arc::clone(&db), limits.clone(), config.embedder.clone())
        .allow_model_paths(config.allow_model_paths)
        .read_only(config.read_only.clone());
    let latentdb = LatentDbServer::new(service.clone())
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
    let router = builder
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health)
        .add_service(InterceptedService::new(latentdb, auth.clone()))
        .add_service(InterceptedService::new(reflection, auth.clone()))
        .add_service(InterceptedService::new(reflection_alpha, auth.clone()));
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(PreparedServer {
        addr,
        db,
        service,
        health: health_reporter,
        router,
        incoming,
        drain_timeout: config.drain_timeout,
        auth_layer: auth,
        auth: config.api_key.is_some(),
        tls: config.tls.is_some(),
        metrics,
    })
}

/// The warning for a server reachable beyond this machine without TLS or an API key.
fn exposure_warning(addr: SocketAddr, tls: bool, auth: bool) -> Option<String> {
    if addr.ip().is_loopback() || (tls && auth) {
        return None;
    }
    let missing = match (tls, auth) {
        (false, false) => {
            "without TLS and without an API key: anyone who can reach it can read \
                           and change every collection, in clear text"
        }
        (false, true) => "without TLS: the API key and all data cross the network in clear text",
        _ => "without an API key: anyone who can reach it can read and change every collection",
    };
    Some(format!(
        "serving on the non-loopback address {addr} {missing} (use --tls-cert/--tls-key and \
         --api-key, or bind 127.0.0.1)"
    ))
}

impl PreparedServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address its Prometheus endpoint (`/metrics`) listens on, when it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(MetricsEndpoint::local_addr)
    }

    /// Adds another gRPC service on the same address, behind the same API key (the cluster's
    /// data nodes serve their Node service beside latentdb.v1 this way).
    pub fn with_service<S>(mut self, service: S) -> Self
    where
        S: tower_service::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.router = self
            .router
            .add_service(InterceptedService::new(service, self.auth_layer.clone()));
        self
    }

    /// Serves until `shutdown` completes. Then it stops accepting connections, refuses new
    /// upsert-stream batches (`UNAVAILABLE`), waits for the calls in flight (at most the drain
    /// timeout, then closes what is still open), and flushes the database.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServeError> {
        let PreparedServer {
            addr,
            db,
            service,
            health,
            router,
            incoming,
            drain_timeout,
            auth,
            tls,
            metrics,
            ..
        } = self;
        tracing::info!(%addr, auth, tls, "latentdb gRPC server listening");
        // The metrics endpoint answers until the database is flushed, drain included.
        let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
        if let Some(endpoint) = metrics {
            if let Some(maddr) = endpoint.local_addr() {
                tracing::info!(addr = %maddr, "Prometheus metrics on http://{maddr}/metrics");
            }
            tokio::spawn(endpoint.run(metrics_stopped));
        }
        let _stop_metrics = StopOnDrop(stop_metrics);

        let (began, began_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!(
                drain_timeout_ms = drain_timeout.as_millis() as u64,
                "shutting down: no new connections, finishing calls in flight"
            );
            service.begin_shutdown();
            health
                .set_not_serving::<LatentDbServer<LatentDbService>>()
                .await;
            let _ = began.send(());
        };
        let serving = router.serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(serving);
        let drained = async move {
            if began_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain_timeout).await;
        };
        tokio::select! {
            r = &mut serving => r?,
            () = drained => {
                tracing::warn!(
                    drain_timeout_ms = drain_timeout.as_millis() as u64,
                    "the drain timeout passed with calls or connections still open: closing them"
                );
            }
        }

        let flushed = tokio::task::spawn_blocking(move || crate::metrics::timed_flush(&db)).await;
        match flushed {
            Ok(r) => r.map_err(ServeError::Flush)?,
            Err(e) => return Err(ServeError::Setup(format!("flush task failed: {e}"))),
        }
        tracing::info!("flushed; server stopped");
        Ok(())
    }
}

/// Stops the metrics endpoint when dropped (whichever way `serve` returns).
struct StopOnDrop(tokio::sync::watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
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

/// Makes rustls's `ring` provider the process default, once (later calls do nothing). TLS in
/// this process (the server, and tonic clients) then never depends on which other crypto
/// providers the dependency graph enables: with two enabled (object_store's S3 client brings
/// aws-lc-rs), rustls cannot pick one by itself and panics. [`prepare`] calls it; call it
/// before building a TLS client without a server.
pub fn install_crypto_provider() {
    // An error only says a default is installed already (this one or the caller's own).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_addresses_warn() {
        let public: SocketAddr = "0.0.0.0:1".parse().expect("addr");
        let local: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        assert!(exposure_warning(local, false, false).is_none());
        assert!(exposure_warning(public, true, true).is_none());
        for (tls, auth) in [(false, false), (true, false), (false, true)] {
            let w = exposure_warning(public, tls, auth).expect("a warning");
            assert!(w.contains("0.0.0.0:1"), "{w}");
        }
    }
}
