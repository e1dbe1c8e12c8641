//! The process's tracing subscriber: log lines on stderr (`LATENTDB_LOG`), and, in a binary
//! built with the `otlp` feature, spans exported over OTLP/HTTP to `--otlp-endpoint`.

use anyhow::Context as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// What must be done before the process exits: flushing the spans not exported yet.
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// The filter of an environment variable, `default` when it is unset; an error naming the
/// variable when it does not parse.
fn env_filter(var: &str, default: &str) -> anyhow::Result<EnvFilter> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).with_context(|| format!("invalid {var}={v:?}"))
        }
        _ => Ok(EnvFilter::new(default)),
    }
}

impl Telemetry {
    /// Installs the global subscriber. With `otlp_endpoint`, spans chosen by `LATENTDB_TRACE`
    /// (an `EnvFilter`, default `latentdb=debug`: every latentdb span, from the `rpc` span
    /// of a gRPC call down to the facade's `write`, `search`, `embed`, `storage.*` and
    /// `index.*` spans) are exported too; that needs the `otlp` feature.
    pub fn init(otlp_endpoint: Option<&str>) -> anyhow::Result<Telemetry> {
        let logs = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(env_filter("LATENTDB_LOG", "warn")?);
        let registry = tracing_subscriber::registry().with(logs);
        let Some(endpoint) = otlp_endpoint else {
            registry.init();
            return Ok(Telemetry {
                #[cfg(feature = "otlp")]
                provider: None,
            });
        };
        #[cfg(feature = "otlp")]
        {
            let (tracer, provider) = otlp::tracer(endpoint)?;
            let spans = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(env_filter("LATENTDB_TRACE", "latentdb=debug")?);
            registry.with(spans).init();
            Ok(Telemetry {
                provider: Some(provider),
            })
        }
        #[cfg(not(feature = "otlp"))]
        {
            registry.init();
            anyhow::bail!(
                "--otlp-endpoint {endpoint}: this latentdb was built without OTLP export; \
                 build it with `cargo install --path crates/cli --features otlp`"
            )
        }
    }

    /// Exports the spans still buffered (waiting at most the exporter's timeout).
    pub fn shutdown(self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: exporting the last spans failed: {e}");
        }
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use anyhow::Context as _;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

    /// The traces URL of a collector: `/v1/traces` appended when `url` has no path.
    pub(super) fn traces_url(url: &str) -> anyhow::Result<String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .with_context(|| {
                format!("--otlp-endpoint {url:?}: expected an http:// or https:// URL")
            })?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() {
            anyhow::bail!("--otlp-endpoint {url:?}: no host");
        }
        if path.is_empty() || path == "/" {
            Ok(format!("{}/v1/traces", url.trim_end_matches('/')))
        } else {
            Ok(url.to_owned())
        }
    }

    /// A tracer whose spans a batch processor (its own thread) sends to `url`.
    pub(super) fn tracer(url: &str) -> anyhow::Result<(SdkTracer, SdkTracerProvider)> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(url)?)
            .build()
            .with_context(|| format!("OTLP exporter for {url}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name("latentdb").build())
            .build();
        Ok((provider.tracer("latentdb"), provider))
    }

    #[cfg(test)]
    mod tests {
        use super::traces_url;

        #[test]
        fn the_traces_path_is_added_to_a_bare_endpoint_only() {
            for (given, want) in [
                ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
                ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
                (
                    "https://otel.example:443",
                    "https://otel.example:443/v1/traces",
                ),
                ("http://c:4318/custom/traces", "http://c:4318/custom/traces"),
            ] {
                assert_eq!(traces_url(given).expect(given), want);
            }
            for bad in [
                "127.0.0.1:4318",
                "ftp://x",
                "http://",
                "http:///v1/traces",
                "",
            ] {
                assert!(traces_url(bad).is_err(), "{bad}");
            }
        }
    }
}
