//! [`ServerConfig`] and [`Limits`]: what `latentdb serve` is configured with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use latentdb::embed::Embedder;

/// Server limits. Requests beyond them fail with `RESOURCE_EXHAUSTED` (messages larger than
/// [`Limits::max_message_bytes`] fail in the transport with `OUT_OF_RANGE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request or response message, in bytes (default 64 MiB).
    pub max_message_bytes: usize,
    /// Most documents per upsert batch, ids per get/delete, texts per embed call
    /// (default 10 000).
    pub max_batch_docs: usize,
    /// Largest `k` of a search (default 1000).
    pub max_k: usize,
    /// Most queries per `SearchBatch` (default 1024).
    pub max_batch_queries: usize,
    /// Longest query or embed text, in bytes (default 64 KiB).
    pub max_text_bytes: usize,
    /// Embedding calls running at once; more wait their turn (default 2).
    pub embed_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            max_batch_docs: 10_000,
            max_k: 1000,
            max_batch_queries: 1024,
            max_text_bytes: 64 * 1024,
            embed_concurrency: 2,
        }
    }
}

/// How [`crate::serve`] runs: address, API key, limits, the embedder for `Embed`.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen (default `127.0.0.1:50051`; loopback unless asked otherwise).
    pub addr: SocketAddr,
    /// When set, every call but health needs `authorization: Bearer KEY` or `x-api-key: KEY`.
    pub api_key: Option<String>,
    /// The limits.
    pub limits: Limits,
    /// The embedder behind the `Embed` RPC (none: `Embed` fails with `FAILED_PRECONDITION`).
    pub embedder: Option<Arc<Embedder>>,
    /// Serve over TLS with this identity (none: plaintext HTTP/2).
    pub tls: Option<TlsIdentity>,
    /// Let clients name any model directory on the server in `CreateCollection` (default
    /// false: only `default` and relative paths without `..`). Open the database with the
    /// same `DatabaseOptions::allow_model_paths` so that it resolves those relative names
    /// under its models root (as `latentdb serve` does).
    pub allow_model_paths: bool,
    /// How long shutdown waits for calls in flight and open connections before it closes
    /// them (default 10 s).
    pub drain_timeout: Duration,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (none: no metrics endpoint). Starting
    /// the server installs latentdb's `metrics` recorder for the whole process
    /// ([`crate::install_metrics_recorder`]).
    pub metrics_addr: Option<SocketAddr>,
    /// Refuse every call that changes data (CreateCollection, DeleteCollection, Upsert,
    /// UpsertStream, Delete) with `FAILED_PRECONDITION` and this reason (none: writable). A
    /// cluster data node serves this way: its collections change only through the write log.
    pub read_only: Option<String>,
}

/// The default [`ServerConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A server's TLS identity: its certificate chain and private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first (PEM).
    pub cert_pem: Vec<u8>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Vec<u8>,
}

impl TlsIdentity {
    /// An identity from PEM bytes (checked when the server starts).
    pub fn from_pem(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        TlsIdentity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
        }
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .field("embedder", &self.embedder.as_ref().map(|e| e.dimension()))
            .field("tls", &self.tls.is_some())
            .field("allow_model_paths", &self.allow_model_paths)
            .field("drain_timeout", &self.drain_timeout)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            api_key: None,
            limits: Limits::default(),
            embedder: None,
            tls: None,
            allow_model_paths: false,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            metrics_addr: None,
            read_only: None,
        }
    }
}

impl ServerConfig {
    /// Sets the listen address.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Requires this API key on every call but health. An empty key is refused when the
    /// server starts ([`crate::ServeError::Config`]): it would not turn authentication off.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Serves over TLS with this identity.
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Lets clients name any model directory on the server (see
    /// [`ServerConfig::allow_model_paths`]).
    pub fn allow_model_paths(mut self, allow: bool) -> Self {
        self.allow_model_paths = allow;
        self
    }

    /// Sets how long shutdown waits for calls in flight and open connections.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Serves Prometheus metrics on `http://addr/metrics` (see
    /// [`ServerConfig::metrics_addr`]).
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Sets the embedder behind the `Embed` RPC.
    pub fn embedder(mut self, embedder: Arc<Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }
}
