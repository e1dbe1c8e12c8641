//! `latentdb serve`: the gRPC server (see `proto/latentdb/v1/latentdb.proto`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use latentdb_server::{Limits, ServerConfig, TlsIdentity};

use crate::cli::Global;
use crate::output::Out;

/// The environment variable that can hold the API key.
const API_KEY_ENV: &str = "LATENTDB_API_KEY";

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// Require this API key (`authorization: Bearer KEY` or `x-api-key: KEY`) on every call
    /// but health. An empty key (or an empty LATENTDB_API_KEY) is an error, not "no auth".
    #[arg(long, env = API_KEY_ENV, hide_env_values = true)]
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
    /// Let clients name any model directory on this machine in CreateCollection (default:
    /// only `default` and relative paths under the models root, without `..`).
    #[arg(long)]
    pub allow_model_paths: bool,
    /// Seconds shutdown waits for calls in flight and open connections before closing them.
    #[arg(long, value_name = "SECS", default_value_t = latentdb_server::DEFAULT_DRAIN_TIMEOUT.as_secs_f64())]
    pub drain_timeout: f64,
    /// Serve Prometheus metrics on http://ADDR/metrics (none: no metrics endpoint; port 0
    /// picks a free port, printed at start).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Run as a data node of a cluster: hold the shard replicas the cluster assigns to this
    /// node and apply their write log (needs --node-id, --etcd and --nats). Clients talk to a
    /// router (`latentdb router`), not to data nodes.
    #[arg(long, requires_all = ["node_id", "etcd", "nats"])]
    pub cluster: bool,
    /// This node's id in the cluster (with --cluster).
    #[arg(long, value_name = "ID", requires = "cluster")]
    pub node_id: Option<String>,
    /// etcd endpoints, comma-separated (with --cluster), e.g. http://127.0.0.1:2379.
    #[arg(long, value_name = "URLS", requires = "cluster")]
    pub etcd: Option<String>,
    /// NATS urls, comma-separated (with --cluster), e.g. nats://127.0.0.1:4222.
    #[arg(long, value_name = "URLS", requires = "cluster")]
    pub nats: Option<String>,
    /// The address routers should use to reach this node (with --cluster; default: the bound
    /// address).
    #[arg(long, value_name = "HOST:PORT", requires = "cluster")]
    pub advertise: Option<String>,
}

/// The API key of `--api-key` (or LATENTDB_API_KEY): an empty one is an error, where it used
/// to turn authentication off without a word.
fn api_key(given: Option<String>) -> anyhow::Result<Option<String>> {
    match given {
        Some(k) if k.trim().is_empty() => bail!(
            "the API key (--api-key or {API_KEY_ENV}) is empty: give a non-empty key, or leave \
             both unset to serve without authentication"
        ),
        other => Ok(other),
    }
}

/// Runs the server until SIGINT or SIGTERM, then finishes the calls in flight, flushes and
/// exits 0.
pub fn serve(args: ServeArgs, global: &Global, out: &mut Out) -> anyhow::Result<ExitCode> {
    let api_key = api_key(args.api_key)?;
    if !(args.drain_timeout.is_finite() && (0.0..=86_400.0).contains(&args.drain_timeout)) {
        bail!("--drain-timeout must be between 0 and 86400 seconds");
    }
    let drain_timeout = Duration::from_secs_f64(args.drain_timeout);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::from_pem(
            std::fs::read(cert)
                .with_context(|| format!("cannot read TLS certificate {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("cannot read TLS key {}", key.display()))?,
        )),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    if args.metrics_addr.is_some() {
        // Before the open, so that what the open does (index dumps) is counted too.
        latentdb_server::install_metrics_recorder().context("cannot start metrics")?;
    }
    // Clients name models under the models root unless the operator allows any directory.
    let db = super::open_database_with(
        global,
        latentdb::DatabaseOptions::new().allow_model_paths(args.allow_model_paths),
    )?;
    let embedder = match &args.model {
        Some(spec) => Some(Arc::new(
            latentdb::embed::Embedder::load(&latentdb::embed::ModelSpec::parse(spec))
                .with_context(|| format!("cannot load model {spec}"))?,
        )),
        None => None,
    };
    let config = ServerConfig {
        addr: args.addr,
        api_key,
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
        allow_model_paths: args.allow_model_paths,
        drain_timeout,
        metrics_addr: args.metrics_addr,
        read_only: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if args.cluster {
        let (Some(node_id), Some(etcd), Some(nats)) = (args.node_id, args.etcd, args.nats) else {
            bail!("--cluster needs --node-id, --etcd and --nats");
        };
        let data_dir = global
            .data
            .clone()
            .context("--cluster needs --data (the node's database directory)")?;
        let node = latentdb_cluster::NodeConfig {
            node_id,
            etcd,
            nats,
            advertise: args.advertise,
            data_dir,
            server: config,
        };
        return runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(node.server.addr)
                .await
                .with_context(|| format!("cannot listen on {}", node.server.addr))?;
            let addr = listener.local_addr().context("listener address")?;
            out.either(
                &serde_json::json!({
                    "listening": addr.to_string(),
                    "node_id": node.node_id,
                    "cluster": true,
                }),
                || format!("latentdb data node {} serving on {addr}", node.node_id),
            )?;
            latentdb_cluster::run_node(
                Arc::new(db),
                node,
                listener,
                latentdb_server::shutdown_signal(),
            )
            .await
            .context("data node failed")?;
            Ok(ExitCode::SUCCESS)
        });
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        // Announce only a server whose key and certificate are checked.
        let server = latentdb_server::prepare(Arc::new(db), config.clone(), listener)
            .await
            .context("cannot start the server")?;
        let addr = server.local_addr();
        let metrics = server.metrics_addr();
        out.either(
            &serde_json::json!({
                "listening": addr.to_string(),
                "auth": config.api_key.is_some(),
                "tls": config.tls.is_some(),
                "metrics": metrics.map(|m| format!("http://{m}/metrics")),
            }),
            || {
                let tls = if config.tls.is_some() { " TLS" } else { "" };
                match metrics {
                    Some(m) => {
                        format!("latentdb serving{tls} on {addr} (metrics on http://{m}/metrics)")
                    }
                    None => format!("latentdb serving{tls} on {addr}"),
                }
            },
        )?;
        server
            .serve(latentdb_server::shutdown_signal())
            .await
            .context("server failed")
    })?;
    Ok(ExitCode::SUCCESS)
}
