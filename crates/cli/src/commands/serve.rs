//! `latentdb serve`: the gRPC server (see `proto/latentdb/v1/latentdb.proto`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use latentdb_server::{Limits, ServerConfig, TlsIdentity};

use crate::output::Out;

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Require this API key (`authorization: Bearer KEY` or `x-api-key: KEY`) on every call
    /// but health.
    #[arg(long, env = "LATENTDB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// TLS certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "F", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); needs --tls-cert.
    #[arg(long, value_name = "F", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The embedder behind the Embed RPC: `default` or a model directory (none: Embed fails
    /// with FAILED_PRECONDITION). Collections with an embedder use their own model.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Largest request or response message, in bytes.
    #[arg(long, default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Most documents per upsert batch (and ids per get/delete, texts per embed call).
    #[arg(long, default_value_t = Limits::default().max_batch_docs)]
    pub max_batch_docs: usize,
    /// Largest k of a search.
    #[arg(long, default_value_t = Limits::default().max_k)]
    pub max_k: usize,
    /// Most queries per SearchBatch.
    #[arg(long, default_value_t = Limits::default().max_batch_queries)]
    pub max_batch_queries: usize,
    /// Longest query or embed text, in bytes.
    #[arg(long, default_value_t = Limits::default().max_text_bytes)]
    pub max_text_bytes: usize,
    /// Embedding calls (Embed, text search, text upserts) running at once.
    #[arg(long, default_value_t = Limits::default().embed_concurrency)]
    pub embed_concurrency: usize,
}

/// Runs the server until SIGINT or SIGTERM, then finishes the calls in flight, flushes and
/// exits 0.
pub fn serve(args: ServeArgs, data: Option<&Path>, out: &mut Out) -> anyhow::Result<ExitCode> {
    let dir = data.context("no database directory: pass --data DIR or set LATENTDB_DATA")?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::from_pem(
            std::fs::read(cert)
                .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("cannot read TLS key {}", key.display()))?,
        )),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let db =
        latentdb::Database::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let embedder = match &args.model {
        Some(spec) => Some(Arc::new(
            latentdb::embed::Embedder::load(&latentdb::embed::ModelSpec::parse(spec))
                .with_context(|| format!("cannot load model {spec}"))?,
        )),
        None => None,
    };
    let config = ServerConfig {
        addr: args.addr,
        api_key: args.api_key.filter(|k| !k.is_empty()),
        limits: Limits {
            max_message_bytes: args.max_message_bytes,
            max_batch_docs: args.max_batch_docs,
            max_k: args.max_k,
            max_batch_queries: args.max_batch_queries,
            max_text_bytes: args.max_text_bytes,
            embed_concurrency: args.embed_concurrency,
        },
        embedder,
        tls,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let addr = listener.local_addr().context("no local address")?;
        out.either(
            &serde_json::json!({
                "listening": addr.to_string(),
                "auth": config.api_key.is_some(),
                "tls": config.tls.is_some(),
            }),
            || {
                let tls = if config.tls.is_some() { " TLS" } else { "" };
                format!("latentdb serving{tls} on {addr}")
            },
        )?;
        latentdb_server::serve_with_listener(
            Arc::new(db),
            config,
            listener,
            latentdb_server::shutdown_signal(),
        )
        .await
        .context("server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
