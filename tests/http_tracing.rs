//! The `http.request` span: decision id, trace context and request id; never a
//! header or a token. Alone in its test binary: a scoped subscriber only sees
//! callsites that no other test thread registered first.

mod http_support;

use axum::http::StatusCode;
use http_support::{Capture, app, post_with, reference};
use serde_json::{Value, json};

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
    let app = app(&reference());
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
}
