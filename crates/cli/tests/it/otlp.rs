//! OTLP span export (the `otlp` feature): `latentdb serve --otlp-endpoint` sends its spans to
//! a collector, here a minimal OTLP/HTTP receiver on loopback that decodes what it gets with the
//! OpenTelemetry proto messages. A gRPC call's `rpc` span must arrive with the facade's spans
//! as its descendants, in one trace.

use std::process::Command;

/// Runs `latentdb collection list --otlp-endpoint ENDPOINT`, which must fail before opening
/// anything; returns its stderr.
fn refused(endpoint: &str) -> String {
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_latentdb"))
        .args(["collection", "list", "--otlp-endpoint", endpoint])
        .env("LATENTDB_DATA", data.path().join("db"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(!data.path().join("db").exists(), "nothing is opened");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[cfg(not(feature = "otlp"))]
#[test]
fn without_the_otlp_feature_the_endpoint_is_refused_clearly() {
    let err = refused("http://127.0.0.1:4318");
    assert!(err.contains("built without OTLP export"), "{err}");
}

#[cfg(feature = "otlp")]
mod export {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use latentdb_server::pb;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
    use prost::Message;

    use super::refused;
    use crate::serve_crash::connect;

    /// The request paths and bodies a collector received.
    type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

    /// Serves OTLP/HTTP on a free loopback port: every request's path and body is kept and
    /// answered `200` with an empty protobuf response.
    fn collector() -> (String, Received) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let received: Received = Arc::default();
        let keep = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let keep = Arc::clone(&keep);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream);
                    // Requests on a kept-alive connection, one after another.
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = request_line
                            .split(' ')
                            .nth(1)
                            .unwrap_or_default()
                            .to_owned();
                        let mut length = 0usize;
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            let header = header.trim_end();
                            if header.is_empty() {
                                break;
                            }
                            if let Some((name, value)) = header.split_once(':')
                                && name.eq_ignore_ascii_case("content-length")
                            {
                                length = value.trim().parse().expect("content-length");
                            }
                        }
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        keep.lock().expect("lock").push((path, body));
                        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                                     content-length: 0\r\n\r\n";
                        if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, received)
    }

    /// One exported span: what the assertions look at.
    #[derive(Debug, Clone)]
    struct Span {
        name: String,
        trace: Vec<u8>,
        id: Vec<u8>,
        parent: Vec<u8>,
        attributes: HashMap<String, String>,
        service: String,
    }

    fn decode(received: &Received) -> Vec<Span> {
        let mut spans = Vec::new();
        for (path, body) in received.lock().expect("lock").iter() {
            assert_eq!(path, "/v1/traces");
            let request =
                ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
            for resource in request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                for scope in resource.scope_spans {
                    for span in scope.spans {
                        let attributes = span
                            .attributes
                            .iter()
                            .map(|kv| {
                                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(AnyValue::StringValue(s)) => s.clone(),
                                    Some(AnyValue::IntValue(i)) => i.to_string(),
                                    other => format!("{other:?}"),
                                };
                                (kv.key.clone(), value)
                            })
                            .collect();
                        spans.push(Span {
                            name: span.name,
                            trace: span.trace_id,
                            id: span.span_id,
                            parent: span.parent_span_id,
                            attributes,
                            service: service.clone(),
                        });
                    }
                }
            }
        }
        spans
    }

    /// The `rpc` span of the call `rpc`, and the names of its descendants (in its trace).
    fn call_tree(spans: &[Span], rpc: &str) -> (Span, Vec<(String, String)>) {
        let root = spans
            .iter()
            .find(|s| s.name == "rpc" && s.attributes.get("rpc").map(String::as_str) == Some(rpc))
            .unwrap_or_else(|| panic!("no rpc span for {rpc} in {spans:#?}"))
            .clone();
        let by_id: HashMap<&[u8], &Span> = spans.iter().map(|s| (s.id.as_slice(), s)).collect();
        let mut edges = Vec::new();
        for s in spans
            .iter()
            .filter(|s| s.trace == root.trace && s.id != root.id)
        {
            let parent = by_id
                .get(s.parent.as_slice())
                .unwrap_or_else(|| panic!("span {s:?} has a parent that was not exported"));
            edges.push((parent.name.clone(), s.name.clone()));
        }
        (root, edges)
    }

    #[test]
    fn serve_exports_rpc_spans_with_the_facade_spans_inside() {
        let (url, received) = collector();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_latentdb"))
            .args(["serve", "--data"])
            .arg(dir.path().join("db"))
            .args(["--addr", "127.0.0.1:0", "--otlp-endpoint", &url])
            .env_remove("LATENTDB_API_KEY")
            .env_remove("LATENTDB_TRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn latentdb serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the listening line");
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .expect("an address")
            .to_owned();

        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async {
            let mut c = connect(&addr).await;
            c.create_collection(pb::CreateCollectionRequest {
                name: "traced".into(),
                dimension: 4,
                ..Default::default()
            })
            .await
            .expect("create");
            let documents = (0..3)
                .map(|i| pb::Document {
                    id: format!("d{i}"),
                    vector: vec![1.0, i as f32, 0.5, -1.0],
                    ..Default::default()
                })
                .collect();
            c.upsert(pb::UpsertRequest {
                collection: "traced".into(),
                documents,
            })
            .await
            .expect("upsert");
            let hits = c
                .search(pb::SearchRequest {
                    collection: "traced".into(),
                    vector: vec![1.0, 0.0, 0.5, -1.0],
                    k: 2,
                    ..Default::default()
                })
                .await
                .expect("search")
                .into_inner();
            assert_eq!(hits.hits.len(), 2);
        });

        // A graceful stop flushes the spans still batched; SIGTERM is what `serve` handles.
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "serve exited with {status}");
                break;
            }
            assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }

        let spans = decode(&received);
        assert!(
            spans.iter().all(|s| s.service.contains("latentdb")),
            "{spans:#?}"
        );
        let (upsert, edges) = call_tree(&spans, "Upsert");
        assert_eq!(
            upsert.attributes.get("collection").map(String::as_str),
            Some("traced")
        );
        for (parent, child) in [
            ("rpc", "write"),
            ("write", "storage.write"),
            ("write", "index.update"),
            ("write", "storage.flush"),
        ] {
            assert!(
                edges.iter().any(|(p, c)| p == parent && c == child),
                "Upsert: no {child} under {parent} in {edges:?}"
            );
        }
        let (_, edges) = call_tree(&spans, "Search");
        assert!(
            edges.iter().any(|(p, c)| p == "rpc" && c == "search"),
            "Search: {edges:?}"
        );
    }

    #[test]
    fn a_bad_endpoint_is_refused_with_one_clear_line() {
        let err = refused("127.0.0.1:4318");
        assert!(err.contains("expected an http:// or https:// URL"), "{err}");
    }
}
