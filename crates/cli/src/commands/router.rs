//! `latentdb router`: a cluster router (see `crates/cluster`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::output::Out;

/// Arguments of `router`.
#[derive(Debug, Args)]
pub struct RouterArgs {
    /// etcd endpoints, comma-separated, e.g. http://127.0.0.1:2379.
    #[arg(long, value_name = "URLS")]
    pub etcd: String,
    /// NATS urls, comma-separated, e.g. nats://127.0.0.1:4222 (nats-server 2.12 or later,
    /// with JetStream).
    #[arg(long, value_name = "URLS")]
    pub nats: String,
    /// The address to serve latentdb.v1 on (port 0 picks a free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    /// The model that embeds texts (documents without vectors, text queries) for the
    /// collections created with it: `default` or a model directory. Data nodes need none.
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
}

/// Runs the router until SIGINT or SIGTERM.
pub fn run(args: RouterArgs, out: &mut Out) -> anyhow::Result<ExitCode> {
    let embedder = match &args.model {
        Some(spec) => Some((
            spec.clone(),
            Arc::new(
                latentdb::embed::Embedder::load(&latentdb::embed::ModelSpec::parse(spec))
                    .with_context(|| format!("cannot load model {spec}"))?,
            ),
        )),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let addr = listener.local_addr().context("listener address")?;
        out.either(
            &serde_json::json!({"listening": addr.to_string(), "router": true}),
            || format!("latentdb router serving on {addr}"),
        )?;
        latentdb_cluster::run_router(
            &args.etcd,
            &args.nats,
            embedder,
            listener,
            latentdb_server::shutdown_signal(),
        )
        .await
        .context("router failed")?;
        Ok(ExitCode::SUCCESS)
    })
}
