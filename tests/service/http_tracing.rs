//! The `http.request` span: decision id, trace context and request id; never a
//! header or a token. Alone in its own process (`support::run_alone`): a scoped
//! subscriber only sees callsites that no other test thread registered first.

use axum::http::StatusCode;
use mcp_authz::api::ext_authz::DECISION_ID_HEADER;
use mcp_authz::identity::{IdentityConfig, Resolver};
use serde_json::{Value, json};

use crate::support::inproc::{self, app, post_with};
use crate::support::{Capture, reference_policies, run_alone};

fn call(user: &str, agent: &str, tool: &str) -> Value {
    json!({
        "subject": { "type": "user", "id": user },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": tool },
        "context": { "agent": agent }
    })
}

#[tokio::test]
async fn spans_carry_decision_and_trace_ids_but_no_secrets() {
    if run_alone("http_tracing::spans_carry_decision_and_trace_ids_but_no_secrets") {
        return;
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = app(&reference_policies());
    let r = post_with(
        &app,
        "/access/v1/evaluation",
        &call("alice", "corpassist", "docs/get_document"),
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("authorization", "Bearer this.is-not.valid"),
            ("x-request-id", "req-9"),
        ],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = post_with(
        &app,
        "/access/v1/evaluation",
        &call("alice", "corpassist", "docs/get_document"),
        &[
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("x-request-id", "req-10"),
        ],
    )
    .await;
    let decision_id = r.header("x-decision-id").expect("id").to_owned();
    let text = capture.text();
    let handled: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "request handled")
        .collect();
    assert_eq!(handled.len(), 2, "{text}");
    let span = &handled[1]["span"];
    assert_eq!(span["name"], "http.request");
    assert_eq!(span["route"], "/access/v1/evaluation");
    assert_eq!(span["decision_id"], decision_id.as_str());
    assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(span["request_id"], "req-10");
    assert_eq!(span["status"], 200);
    assert_eq!(handled[0]["span"]["status"], 401);
    assert!(!text.contains("this.is-not.valid"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("authorization"),
        "{text}"
    );

    // The main listener as `serve` composes it: the HTTP ext_authz mode gets the same
    // span and `X-Request-ID` echo as every other route.
    let engine = inproc::engine(&reference_policies());
    let resolver = Resolver::new(&IdentityConfig::default(), std::path::Path::new("."))
        .await
        .expect("resolver");
    let main = inproc::main_of(inproc::state(engine, Some(resolver)));
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_document"}});
    for (path, request_id) in [("/ext_authz/mcp", "req-11"), ("/ext_authz", "req-12")] {
        let r = post_with(
            &main,
            path,
            &ping,
            &[
                ("x-mcp-authz-server", "docs"),
                ("x-request-id", request_id),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ],
        )
        .await;
        assert_eq!(r.header("x-request-id"), Some(request_id), "{}", r.text);
        let decision_id = r.header(DECISION_ID_HEADER).expect("decision id");
        let text = capture.text();
        let span = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["fields"]["message"] == "request handled")
            .map(|l| l["span"].clone())
            .find(|s| s["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no span for {path}: {text}"));
        assert_eq!(span["name"], "http.request");
        assert!(
            span["route"]
                .as_str()
                .is_some_and(|r| r.starts_with("/ext_authz")),
            "{span}"
        );
        assert_eq!(span["decision_id"], decision_id);
        assert_eq!(span["status"], r.status.as_u16());
        assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    }
    // The AuthZEN routes keep theirs in the composed router too.
    let r = post_with(
        &main,
        "/access/v1/evaluation",
        &call("alice", "corpassist", "docs/get_document"),
        &[("x-request-id", "req-13")],
    )
    .await;
    assert_eq!(r.header("x-request-id"), Some("req-13"));
}
