//! Traces over OTLP (`[otlp]`): `mcp-authz serve` as a process exporting to a real
//! OTLP receiver started here — the collector's gRPC trace service
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`), and OTLP/HTTP
//! (`POST /v1/traces`, protobuf). A request with a `traceparent` yields a span in
//! the caller's trace, child of the caller's span, carrying the decision id. A
//! receiver that never answers slows or fails no decision. Bad settings are
//! configuration errors (exit 2).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

use crate::support::gateway::{client, parsed, trusted, verified};
use crate::support::process::{Serve, Server, bin, run, text};
use crate::support::{config, http, poll, reference_policies};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A span as received, with its resource's `service.name`.
#[derive(Debug, Clone)]
struct Received {
    service_name: Option<String>,
    span: Span,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<String> {
        string_of(
            self.span
                .attributes
                .iter()
                .find(|kv| kv.key == key)?
                .value
                .as_ref(),
        )
    }
}

fn string_of(v: Option<&AnyValue>) -> Option<String> {
    match v?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a receiver got, shared with its server.
#[derive(Debug, Clone, Default)]
struct Spans(Arc<Mutex<Vec<Received>>>);

impl Spans {
    fn add(&self, request: ExportTraceServiceRequest) {
        let mut all = self.0.lock().expect("lock");
        for rs in request.resource_spans {
            let service_name = rs.resource.as_ref().and_then(|r| {
                string_of(
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")?
                        .value
                        .as_ref(),
                )
            });
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push(Received {
                        service_name: service_name.clone(),
                        span,
                    });
                }
            }
        }
    }

    /// The first span received that satisfies `f`, waiting up to 10 s.
    fn wait_for(&self, f: impl Fn(&Received) -> bool) -> Option<Received> {
        poll(Duration::from_secs(10), || {
            self.0.lock().expect("lock").iter().find(|s| f(s)).cloned()
        })
    }
}

#[tonic::async_trait]
impl TraceService for Spans {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on an ephemeral port of 127.0.0.1: its address and spans.
fn grpc_receiver(rt: &tokio::runtime::Runtime) -> (String, Spans) {
    let spans = Spans::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(spans.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    rt.spawn(server);
    (addr, spans)
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, `application/x-protobuf`) on an
/// ephemeral port of 127.0.0.1: its address and spans.
fn http_receiver(rt: &tokio::runtime::Runtime) -> (String, Spans) {
    use axum::http::{HeaderMap, StatusCode, header};
    let spans = Spans::default();
    let state = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let spans = state.clone();
            async move {
                let protobuf = headers
                    .get(header::CONTENT_TYPE)
                    .is_some_and(|v| v == "application/x-protobuf");
                if !protobuf {
                    return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
                }
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        spans.add(request);
                        (
                            StatusCode::OK,
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                    Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                }
            }
        }),
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    rt.spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `serve` with the reference policies, a trusted caller and `otlp` (an `[otlp]` section).
fn serve(dir: &std::path::Path, otlp: &str) -> Server {
    let file = config::write(dir, &[&config::trusted_caller(dir), otlp]);
    Serve::new(&reference_policies()).config(&file).start()
}

/// A gateway `Check` of alice's `docs/get_document` through CorpAssist, sent with
/// `traceparent` when given: whether it was allowed, and its decision id.
fn check(rt: &tokio::runtime::Runtime, grpc: &str, traceparent: Option<&str>) -> (bool, String) {
    rt.block_on(async {
        let mut c = client(grpc).await;
        let mut request = trusted(parsed(
            verified("alice", "corpassist"),
            "docs",
            "tools/call",
            "get_document",
            None,
        ));
        if let Some(t) = traceparent {
            request
                .metadata_mut()
                .insert("traceparent", t.parse().expect("ascii"));
        }
        let r = c.check(request).await.expect("check").into_inner();
        (r.allowed, r.decision_id)
    })
}

fn traceparent(flags: &str) -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN}-{flags}")
}

#[test]
fn grpc_export_puts_the_check_span_in_the_callers_trace() {
    let rt = runtime();
    let (receiver, spans) = grpc_receiver(&rt);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(
        dir.path(),
        &format!("[otlp]\nendpoint = \"http://{receiver}\"\nexport_interval_ms = 50\n"),
    );
    let (allowed, decision_id) = check(&rt, &server.grpc, Some(&traceparent("01")));
    assert!(allowed);
    assert!(!decision_id.is_empty());
    let span = spans
        .wait_for(|s| s.attribute("decision_id").as_deref() == Some(decision_id.as_str()))
        .unwrap_or_else(|| panic!("no span with the decision id:\n{}", server.log_text()));
    assert_eq!(span.span.name, "grpc.request");
    assert_eq!(hex(&span.span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.span.parent_span_id), CALLER_SPAN);
    assert_ne!(hex(&span.span.span_id), CALLER_SPAN);
    assert_eq!(span.service_name.as_deref(), Some("mcp-authz"));
    assert_eq!(
        span.attribute("method").as_deref(),
        Some("mcp_authz.v1.Authorizer/Check")
    );

    // A caller that did not sample its trace: the span is not exported.
    let (_, unsampled) = check(&rt, &server.grpc, Some(&traceparent("00")));
    // Without a `traceparent`: a trace of its own (sampled at the default ratio 1).
    let (_, own) = check(&rt, &server.grpc, None);
    let root = spans
        .wait_for(|s| s.attribute("decision_id").as_deref() == Some(own.as_str()))
        .expect("the span of a request without traceparent");
    assert_ne!(hex(&root.span.trace_id), TRACE_ID);
    assert!(root.span.parent_span_id.is_empty());
    let all = spans.0.lock().expect("lock").clone();
    assert!(
        all.iter()
            .all(|s| s.attribute("decision_id").as_deref() != Some(unsampled.as_str())),
        "an unsampled caller's span was exported"
    );
    let metrics = server.get("/metrics").expect("metrics").1;
    assert!(
        metrics.contains("mcp_authz_otlp_spans_total{result=\"exported\"}"),
        "{metrics}"
    );
}

#[cfg(unix)]
#[test]
fn a_graceful_stop_exports_the_queued_spans() {
    let rt = runtime();
    let (receiver, spans) = grpc_receiver(&rt);
    let dir = tempfile::tempdir().expect("tempdir");
    // No periodic export within the test: only the shutdown sends the span.
    let mut server = serve(
        dir.path(),
        &format!("[otlp]\nendpoint = \"http://{receiver}\"\nexport_interval_ms = 600000\n"),
    );
    let (_, decision_id) = check(&rt, &server.grpc, Some(&traceparent("01")));
    assert!(
        spans.0.lock().expect("lock").is_empty(),
        "exported before the stop"
    );
    server.stop();
    let exported = spans.0.lock().expect("lock").clone();
    assert!(
        exported
            .iter()
            .any(|s| s.attribute("decision_id").as_deref() == Some(decision_id.as_str())),
        "the queued span was not exported on SIGTERM:\n{}",
        server.log_text()
    );
}

#[test]
fn http_export_carries_the_authzen_decision_and_service_name() {
    let rt = runtime();
    let (receiver, spans) = http_receiver(&rt);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = serve(
        dir.path(),
        &format!(
            "[otlp]\nendpoint = \"http://{receiver}/v1/traces\"\nprotocol = \"http\"\nservice_name = \"pdp-test\"\nexport_interval_ms = 50\n[otlp.headers]\n\"x-api-key\" = \"k-123\"\n"
        ),
    );
    let body = json!({
        "subject": { "type": "user", "id": "alice" },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": "docs/get_document" },
        "context": { "agent": "corpassist" }
    });
    let tp = traceparent("01");
    let (status, headers, text) = http::request(
        &server.http,
        "POST",
        "/access/v1/evaluation",
        &[("Content-Type", "application/json"), ("traceparent", &tp)],
        &body.to_string(),
    )
    .expect("answer");
    assert_eq!(status, 200, "{text}");
    let decision_id = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-decision-id"))
        .map(|(_, v)| v.clone())
        .expect("x-decision-id");
    let span = spans
        .wait_for(|s| s.attribute("decision_id").as_deref() == Some(decision_id.as_str()))
        .unwrap_or_else(|| panic!("no span with the decision id:\n{}", server.log_text()));
    assert_eq!(span.span.name, "http.request");
    assert_eq!(hex(&span.span.trace_id), TRACE_ID);
    assert_eq!(hex(&span.span.parent_span_id), CALLER_SPAN);
    assert_eq!(span.service_name.as_deref(), Some("pdp-test"));
    assert_eq!(
        span.attribute("route").as_deref(),
        Some("/access/v1/evaluation")
    );
}

#[test]
fn a_receiver_that_never_answers_blocks_no_decision() {
    let rt = runtime();
    // Accepts connections and never answers: every export hangs until its time limit.
    let silent = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    rt.spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = serve(
        dir.path(),
        &format!(
            "[otlp]\nendpoint = \"http://{addr}\"\nqueue_size = 2\nbatch_size = 1\nexport_interval_ms = 50\nexport_timeout_ms = 60000\n"
        ),
    );
    let tp = traceparent("01");
    for _ in 0..20 {
        let (allowed, id) = check(&rt, &server.grpc, Some(&tp));
        assert!(allowed);
        assert!(!id.is_empty());
    }
    // The queue holds 2 spans and one export hangs: the rest were dropped and counted.
    let dropped = poll(Duration::from_secs(10), || {
        let metrics = server.get("/metrics")?.1;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("mcp_authz_otlp_spans_total{result=\"dropped\"}"))?
            .to_owned();
        let n: u64 = line.rsplit(' ').next()?.parse().ok()?;
        (n > 0).then_some(n)
    });
    assert!(dropped.is_some(), "no dropped span counted");
    assert!(
        server
            .find_log(|l| l.contains("OTLP export queue full"))
            .is_some(),
        "{}",
        server.log_text()
    );
    // A graceful stop still ends (the stuck export is abandoned at its time limit or the stop).
    server.stop();
}

#[test]
fn bad_otlp_settings_are_configuration_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (section, key) in [
        ("[otlp]\nendpoint = \"127.0.0.1:4317\"\n", "otlp.endpoint"),
        (
            "[otlp]\nendpoint = \"ftp://collector:4317\"\n",
            "otlp.endpoint",
        ),
        (
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 1.5\n",
            "otlp.sample_ratio",
        ),
        (
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\nqueue_size = 0\n",
            "otlp.queue_size",
        ),
        (
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\nqueue_size = 10\nbatch_size = 20\n",
            "otlp.batch_size",
        ),
        (
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\nexport_timeout_ms = 0\n",
            "otlp.export_timeout_ms",
        ),
        (
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\nservice_name = \" \"\n",
            "otlp.service_name",
        ),
        (
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\n[otlp.headers]\n\"X Key\" = \"v\"\n",
            "otlp.headers",
        ),
        (
            "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"udp\"\n",
            "protocol",
        ),
    ] {
        let file = config::write(dir.path(), &[section]);
        let out = run(bin()
            .args([
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .arg("--config")
            .arg(&file)
            .arg("--policies")
            .arg(reference_policies()));
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{section}: {err}");
        assert!(err.contains(key), "{section}: {err}");
    }
    // The environment too.
    let out = run(bin()
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .arg("--policies")
        .arg(reference_policies())
        .env("MCP_AUTHZ_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("MCP_AUTHZ_OTLP_SAMPLE_RATIO", "2"));
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("otlp.sample_ratio"), "{err}");
}
