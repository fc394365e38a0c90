//! Metrics, the decision log, tracing and the admin endpoints, through the routers.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use mcp_authz::api::services::AdminToken;
use mcp_authz::authz::{DecisionRequest, Interface};
use mcp_authz::mcp::{Kind, action, qualified_id};
use mcp_authz::telemetry::{DecisionLog, DecisionLogConfig, Telemetry};
use serde_json::{Value, json};

use crate::support::inproc::{
    self, admin_of, app, app_of, engine_with, get, post, post_with, state, state_on,
};
use crate::support::{Capture, copy_of_reference, reference_arguments, reference_policies};

fn call(user: &str, agent: &str, tool: &str) -> Value {
    json!({
        "subject": { "type": "user", "id": user },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": tool },
        "context": { "agent": agent, "arguments": reference_arguments(tool) }
    })
}

/// The samples of a Prometheus text exposition, checked line by line: every
/// sample belongs to a family announced by `# HELP` and `# TYPE`.
fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().expect("name");
            let kind = parts.next().expect("kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "unexpected line {line:?}"
        );
        let name = line.split(['{', ' ']).next().expect("name");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample without a TYPE line: {line}");
        let value = line.rsplit(' ').next().expect("value");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text")
}

fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref b) => b.last().map_or(0.0, |b| b.count),
            _ => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_parse_and_move_with_decisions() {
    let app = app(&reference_policies());
    let r = get(&app, "/metrics", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = parse_metrics(&r.text);
    for name in [
        "mcp_authz_decisions_total",
        "mcp_authz_decision_cache_hits_total",
        "mcp_authz_decision_cache_misses_total",
        "mcp_authz_policy_generation",
        "mcp_authz_policy_reloads_total",
        "mcp_authz_policies_in_sync",
        "mcp_authz_decision_log_records_total",
        "mcp_authz_build_info",
    ] {
        assert!(
            before.samples.iter().any(|s| s.metric == name),
            "missing {name}:\n{}",
            r.text
        );
    }
    assert!(
        r.text
            .contains("# TYPE mcp_authz_decision_duration_seconds histogram")
    );
    assert!(
        r.text
            .contains("# TYPE mcp_authz_jwks_refreshes_total counter")
    );
    let allow = [("interface", "authzen"), ("decision", "allow")];
    let deny = [("interface", "authzen"), ("decision", "deny")];
    assert_eq!(
        value(&before, "mcp_authz_decisions_total", &allow),
        Some(0.0)
    );
    assert_eq!(
        value(&before, "mcp_authz_policy_generation", &[]),
        Some(1.0)
    );
    assert_eq!(value(&before, "mcp_authz_policies_in_sync", &[]), Some(1.0));

    for (user, tool, allowed) in [
        ("alice", "docs/get_document", true),
        ("dave", "docs/delete_document", false),
        ("dave", "docs/delete_document", false),
    ] {
        let answer = post(
            &app,
            "/access/v1/evaluation",
            &call(user, "corpassist", tool),
        )
        .await;
        assert!(answer.json()["decision"] == allowed, "{user} {tool}");
    }
    let after = parse_metrics(&get(&app, "/metrics", &[]).await.text);
    assert_eq!(
        value(&after, "mcp_authz_decisions_total", &allow),
        Some(1.0)
    );
    assert_eq!(value(&after, "mcp_authz_decisions_total", &deny), Some(2.0));
    assert_eq!(
        value(
            &after,
            "mcp_authz_decisions_total",
            &[("interface", "grpc"), ("decision", "allow")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &after,
            "mcp_authz_decision_duration_seconds",
            &[("interface", "authzen")]
        ),
        Some(3.0)
    );
}

#[tokio::test]
async fn decision_log_records_for_an_allow_and_a_deny() {
    let capture = Capture::default();
    let config = DecisionLogConfig {
        include_arguments: true,
        ..DecisionLogConfig::default()
    };
    let log = DecisionLog::with_writer(Box::new(capture.clone()), &config).expect("log");
    let state = state_on(&reference_policies(), Telemetry::new(Some(log)), None);
    let app = app_of(state.clone());
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let allow = post_with(
        &app,
        "/access/v1/evaluation",
        &call("alice", "corpassist", "docs/get_document"),
        &[("traceparent", traceparent), ("x-request-id", "req-1")],
    )
    .await;
    let deny = post(
        &app,
        "/access/v1/evaluation",
        &call("dave", "corpassist", "docs/delete_document"),
    )
    .await;
    let log = state.telemetry.decision_log.as_ref().expect("log");
    assert!(log.close(Duration::from_secs(5)), "the writer finishes");
    let records = capture.lines();
    assert_eq!(records.len(), 2, "{records:?}");
    let a = &records[0];
    assert_eq!(a["decision_id"], allow.header("x-decision-id").expect("id"));
    assert_eq!(a["decision"], "allow");
    assert_eq!(a["interface"], "authzen");
    assert_eq!(a["generation"], 1);
    let digest = state.engine.store().snapshot().digests.content.clone();
    assert_eq!(a["policy_digest"], &*digest);
    assert!(a.get("server_source").is_none(), "AuthZEN names its server");
    assert_eq!(a["user"], "Mcp::User::\"alice\"");
    assert_eq!(a["application"], "Mcp::Application::\"corpassist\"");
    assert_eq!(a["server"], "Mcp::Server::\"docs\"");
    assert_eq!(a["action"], "Mcp::Action::\"tools/call\"");
    assert_eq!(a["resource"], "Mcp::Tool::\"docs/get_document\"");
    assert_eq!(
        a["evaluations"][0]["policies"],
        json!(["employees-use-docs"])
    );
    assert_eq!(
        a["evaluations"][1]["policies"],
        json!(["corpassist-read-docs"])
    );
    assert_eq!(a["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(a["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(a["request_id"], "req-1");
    assert!(a["latency_us"].as_f64().is_some_and(|l| l > 0.0));
    assert!(
        a["time"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
        "{a}"
    );
    // Arguments are logged when configured (with secrets redacted: see
    // grpc_api::secrets_in_arguments_are_redacted_on_every_interface).
    assert_eq!(
        a["arguments"],
        json!({ "document_id": "titan/q1-strategy" })
    );
    let d = &records[1];
    assert_eq!(d["decision_id"], deny.header("x-decision-id").expect("id"));
    assert_eq!(d["decision"], "deny");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("corpassist-never-deletes"))
    );
    assert_eq!(d["evaluations"][1]["allow"], false);
    assert_eq!(
        d["evaluations"][1]["policies"],
        json!(["corpassist-never-deletes"])
    );
    assert!(d.get("trace_id").is_none() && d.get("request_id").is_none());
    assert_eq!(d["policy_digest"], &*digest);
}

/// The content digest of the policies a replica serves, as its `/v1/policies`,
/// `/metrics` and decision log tell it.
async fn digests_of_replica(admin: &axum::Router) -> (String, String) {
    let policies = get(admin, "/v1/policies", &[]).await.json();
    let shown = policies["digest"]["content"]
        .as_str()
        .expect("digest.content")
        .to_owned();
    let metrics = parse_metrics(&get(admin, "/metrics", &[]).await.text);
    let infos: Vec<_> = metrics
        .samples
        .iter()
        .filter(|s| s.metric == "mcp_authz_policy_info")
        .collect();
    assert_eq!(infos.len(), 1, "one policy_info sample");
    assert_eq!(value(&metrics, "mcp_authz_policy_info", &[]), Some(1.0));
    let metric = infos[0]
        .labels
        .get("content_digest")
        .expect("content_digest")
        .to_owned();
    (shown, metric)
}

/// Two replicas loaded from two copies of the same files (written in other orders,
/// at other times) report one content digest, in `/v1/policies`, `/metrics` and every
/// decision record; a change of a schema fragment on one of them shows as skew.
#[tokio::test]
async fn replicas_of_the_same_files_report_one_content_digest() {
    let one = copy_of_reference();
    let two = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<_> = walk(&reference_policies());
    files.reverse();
    for rel in &files {
        let to = two.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(reference_policies().join(rel), &to).expect("copy");
    }
    let capture = Capture::default();
    let log = DecisionLog::with_writer(Box::new(capture.clone()), &DecisionLogConfig::default())
        .expect("log");
    let first = state_on(one.path(), Telemetry::new(Some(log)), None);
    let second = state(inproc::engine(two.path()), None);
    let (a_shown, a_metric) = digests_of_replica(&admin_of(first.clone())).await;
    let (b_shown, b_metric) = digests_of_replica(&admin_of(second.clone())).await;
    assert!(a_shown.starts_with("sha256:"), "{a_shown}");
    assert_eq!(a_metric, a_shown);
    assert_eq!(
        (b_shown.as_str(), b_metric.as_str()),
        (a_shown.as_str(), a_shown.as_str())
    );

    // Every decision names the digest of the snapshot that made it.
    let app = app_of(first.clone());
    post(
        &app,
        "/access/v1/evaluation",
        &call("alice", "corpassist", "docs/get_document"),
    )
    .await;

    // A changed fragment on the second replica: its digest moves, the first's does not.
    let fragment = two.path().join("tools/docs.cedarschema");
    let text = std::fs::read_to_string(&fragment).expect("read");
    std::fs::write(
        &fragment,
        text.replacen(
            "\"document_id\": String,",
            "\"document_id\": String, \"why\"?: String,",
            1,
        ),
    )
    .expect("write");
    assert!(matches!(
        second.engine.store().reload(true),
        mcp_authz::policy::ReloadOutcome::Reloaded { .. }
    ));
    let (b_shown, b_metric) = digests_of_replica(&admin_of(second.clone())).await;
    assert_ne!(b_shown, a_shown);
    assert_eq!(b_metric, b_shown);
    let (a_again, _) = digests_of_replica(&admin_of(first.clone())).await;
    assert_eq!(a_again, a_shown);

    let log = first.telemetry.decision_log.as_ref().expect("log");
    assert!(log.close(Duration::from_secs(5)), "the writer finishes");
    let records = capture.lines();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["policy_digest"], a_shown.as_str());
}

/// The relative paths of the files under `dir`.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().expect("type").is_dir() {
            out.extend(
                walk(&entry.path())
                    .into_iter()
                    .map(|r| format!("{name}/{r}")),
            );
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn arguments_stay_out_of_the_log_by_default() {
    let capture = Capture::default();
    let log = DecisionLog::with_writer(Box::new(capture.clone()), &DecisionLogConfig::default())
        .expect("log");
    let state = state_on(&reference_policies(), Telemetry::new(Some(log)), None);
    let app = app_of(state.clone());
    post(
        &app,
        "/access/v1/evaluation",
        &call("alice", "corpassist", "docs/get_document"),
    )
    .await;
    // Requests the adapter could not map are logged too.
    post(&app, "/access/v1/evaluation", &json!({
        "subject": { "type": "spaceship", "id": "x" }, "action": { "name": "tools/call" }, "resource": { "type": "tool", "id": "docs/a" }
    })).await;
    assert!(
        state
            .telemetry
            .decision_log
            .as_ref()
            .expect("log")
            .close(Duration::from_secs(5))
    );
    let records = capture.lines();
    assert_eq!(records.len(), 2);
    assert!(records[0].get("arguments").is_none());
    assert_eq!(records[1]["decision"], "deny");
    assert!(
        records[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("spaceship"))
    );
}

/// A writer that blocks until released (dropping the sender releases it for good).
struct Blocked(std::sync::mpsc::Receiver<()>);

impl Write for Blocked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.recv();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.recv();
        Ok(())
    }
}

#[test]
fn a_blocked_decision_log_never_holds_decisions_up() {
    let (release, gate) = std::sync::mpsc::channel();
    let config = DecisionLogConfig {
        queue_capacity: 4,
        ..DecisionLogConfig::default()
    };
    let log = DecisionLog::with_writer(Box::new(Blocked(gate)), &config).expect("log");
    let telemetry = Arc::new(Telemetry::new(Some(log)));
    let engine = engine_with(&reference_policies(), &telemetry);
    let mut request = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid(&qualified_id("docs", "get_document")),
    );
    request.user = Some(Kind::User.uid("alice"));
    request.application = Some(Kind::Application.uid("corpassist"));
    request.server = Some(Kind::Server.uid("docs"));
    request.context.insert(
        "arguments".into(),
        reference_arguments("docs/get_document").expect("a reference tool"),
    );
    let started = std::time::Instant::now();
    for _ in 0..200 {
        let snapshot = engine.snapshot();
        let meta = Default::default();
        let outcome = engine.decide(&snapshot, Interface::Grpc, &request, &meta);
        assert!(outcome.decision.allow);
    }
    // Generous: 200 decisions take milliseconds; a blocked log would hang forever.
    assert!(started.elapsed() < Duration::from_secs(20));
    let log = telemetry.decision_log.as_ref().expect("log");
    let dropped = log
        .stats()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(dropped >= 190, "dropped {dropped}");
    let text = telemetry.render_prometheus(engine.store(), None, engine.cache().map(AsRef::as_ref));
    assert!(
        text.contains(&format!(
            "mcp_authz_decision_log_records_total{{result=\"dropped\"}} {dropped}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("mcp_authz_decisions_total{interface=\"grpc\",decision=\"allow\"} 200\n")
    );
    // Closing does not hang on a blocked writer either.
    assert!(!log.close(Duration::from_millis(200)));
    drop(release);
}

#[tokio::test]
async fn health_and_readiness() {
    let app = app(&reference_policies());
    assert_eq!(get(&app, "/healthz", &[]).await.status, StatusCode::OK);
    let r = get(&app, "/readyz", &[]).await;
    assert_eq!((r.status, r.text.as_str()), (StatusCode::OK, "ready\n"));
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_listener_or_the_token() {
    let dir = copy_of_reference();
    let engine = inproc::engine(dir.path());
    // The main listener without a token has no admin endpoints.
    let main = app_of(state(engine.clone(), None));
    assert_eq!(
        get(&main, "/v1/policies", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // With a token: 401 without it or with a wrong one, 200 with it.
    let mut with_token = state(engine.clone(), None);
    with_token.admin_token = AdminToken::new("letmein\n");
    let main = app_of(with_token.clone());
    for headers in [
        vec![],
        vec![("authorization", "Bearer nope")],
        vec![("authorization", "letmein")],
    ] {
        let r = get(&main, "/v1/policies", &headers).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"mcp-authz-admin\"")
        );
    }
    let r = get(
        &main,
        "/v1/policies",
        &[("authorization", "Bearer letmein")],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    // The admin listener: open when no token is configured.
    let admin = admin_of(state(engine.clone(), None));
    let p = get(&admin, "/v1/policies", &[]).await.json();
    assert_eq!(p["generation"], 1);
    assert_eq!(p["in_sync"], true);
    assert_eq!(
        p["files"],
        json!(["applications.cedar", "housekeeping.cedar", "users.cedar"])
    );
    let never_deletes = p["policy_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .find(|p| p["id"] == "corpassist-never-deletes")
        .cloned()
        .unwrap_or_default();
    let digest = never_deletes["digest"].clone();
    assert!(digest.as_str().is_some_and(|d| d.starts_with("sha256:")));
    assert_eq!(
        never_deletes,
        json!({
            "id": "corpassist-never-deletes", "file": "applications.cedar", "line": 15, "column": 1,
            "digest": digest,
        })
    );
    assert_eq!(p["last_reload_error"], Value::Null);
    assert_eq!(
        get(&admin, "/access/v1/evaluation", &[]).await.status,
        StatusCode::NOT_FOUND
    );
    // POST /v1/reload swaps in a new snapshot (and says that nothing changed)...
    let r = post(&admin, "/v1/reload", &json!({})).await;
    assert_eq!(
        (r.status, r.json()),
        (
            StatusCode::OK,
            json!({ "outcome": "reloaded", "generation": 2, "changes": {
                "added": [], "removed": [], "changed": [],
                "schema_changed": false, "entities_changed": false,
            } })
        )
    );
    // ...or reports a broken directory and keeps the last good one.
    std::fs::write(
        dir.path().join("broken.cedar"),
        "permit(principal, action, resource\n",
    )
    .expect("write");
    let r = post(&admin, "/v1/reload", &json!({})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = r.json();
    assert_eq!(
        (body["outcome"].clone(), body["generation"].clone()),
        (json!("failed"), json!(2))
    );
    assert!(
        body["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("broken.cedar:")),
        "{body}"
    );
    let p = get(&admin, "/v1/policies", &[]).await.json();
    assert_eq!(p["in_sync"], false);
    assert!(
        p["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("broken.cedar:")),
        "{p}"
    );
    let m = get(&admin, "/metrics", &[]).await.text;
    assert!(m.contains("mcp_authz_policies_in_sync 0\n"), "{m}");
    assert!(
        m.contains("mcp_authz_policy_reloads_total{result=\"failure\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("mcp_authz_policy_reloads_total{result=\"success\"} 1\n"),
        "{m}"
    );
    // The admin listener takes the token too when one is configured.
    let admin = admin_of(with_token);
    assert_eq!(
        post(&admin, "/v1/reload", &json!({})).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Calls of what an imported server does not declare are counted per server and
/// kind; other denials are not.
#[tokio::test]
async fn undeclared_tools_prompts_and_arguments_are_counted_per_server() {
    let app = app_of(state_on(&reference_policies(), Telemetry::default(), None));
    let evaluate = |action: &str, ty: &str, id: &str, arguments: Value| {
        json!({
            "subject": { "type": "user", "id": "alice" },
            "action": { "name": action },
            "resource": { "type": ty, "id": id },
            "context": { "agent": "corpassist", "arguments": arguments },
        })
    };
    let calls = [
        evaluate("tools/call", "tool", "docs/brand_new_tool", json!({})),
        evaluate("tools/call", "tool", "projects/brand_new_tool", json!({})),
        evaluate("tools/call", "tool", "projects/archive", json!({})),
        evaluate("prompts/get", "prompt", "docs/weekly_digest", json!({})),
        evaluate(
            "tools/call",
            "tool",
            "docs/search_documents",
            json!({ "query": "titan", "limit": 5 }),
        ),
        // Denied by a policy: not counted.
        evaluate(
            "tools/call",
            "tool",
            "docs/delete_document",
            json!({ "document_id": "titan/q1-strategy" }),
        ),
    ];
    for body in &calls {
        let r = post(&app, "/access/v1/evaluation", body).await;
        assert_eq!(r.json()["decision"], false, "{body}");
    }
    let scrape = parse_metrics(&get(&app, "/metrics", &[]).await.text);
    let count = |server: &str, kind: &str| {
        value(
            &scrape,
            "mcp_authz_undeclared_denials_total",
            &[("server", server), ("kind", kind)],
        )
    };
    assert_eq!(count("docs", "tool"), Some(1.0));
    assert_eq!(count("projects", "tool"), Some(2.0));
    assert_eq!(count("docs", "prompt"), Some(1.0));
    assert_eq!(count("docs", "argument"), Some(1.0));
    assert_eq!(count("projects", "argument"), None);
    let total: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "mcp_authz_undeclared_denials_total")
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(total, 5.0);
}
