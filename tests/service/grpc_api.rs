//! The gateway's gRPC API against the service started in-process on ephemeral
//! ports (`support::inproc::Service`), with a real tonic client.

use std::path::Path;
use std::time::Duration;

use mcp_authz::api::proto::v1::{
    self as pb, BatchCheckRequest, CheckRequest, CheckResponse, DenyKind, FilterListRequest,
    Identity, Semantic, VerifiedIdentity, authorizer_client::AuthorizerClient, check_request,
    filter_list_request,
};
use prost_types::{Struct, Value as PbValue, value::Kind};
use tonic::transport::Channel;

use crate::support::gateway::{CALLER_SECRET, channel, client, parsed, spiffe, trusted, verified};
use crate::support::inproc::{Launch, Service};
use crate::support::tokens::demo_token as token;
use crate::support::{self, config, envoy, http, reference_policies};

struct Setup {
    _dir: tempfile::TempDir,
    server: Service,
}

/// The service with a config with the demo issuer and a trusted caller secret.
fn start() -> Setup {
    start_with("", "")
}

fn number(n: f64) -> PbValue {
    PbValue {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn string(s: &str) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn args(pairs: &[(&str, PbValue)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

async fn check(
    c: &mut AuthorizerClient<Channel>,
    r: tonic::Request<CheckRequest>,
) -> CheckResponse {
    c.check(r).await.expect("check").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpassist_requests_of_the_scenario() {
    let s = start();
    let mut c = client(&s.server.grpc).await;
    // "Summarize the Q1 strategy document for Project Titan": erin (engineering, from her
    // token) through CorpAssist (the token's azp).
    let erin = Identity {
        bearer_token: token("erin"),
        ..Identity::default()
    };
    let summary = parsed(
        erin.clone(),
        "docs",
        "tools/call",
        "summarize_document",
        Some(args(&[("document_id", string("titan/q1-strategy"))])),
    );
    let r = check(&mut c, tonic::Request::new(summary.clone())).await;
    assert!(r.allowed, "{r:?}");
    assert_eq!(
        (r.user.as_str(), r.application.as_str()),
        ("erin", "corpassist")
    );
    assert_eq!(r.evaluations.len(), 2);
    assert_eq!(r.evaluations[0].policies, vec!["employees-use-docs"]);
    assert_eq!(r.evaluations[1].policies, vec!["corpassist-read-docs"]);
    assert!(!r.decision_id.is_empty());
    assert!(r.error.is_none());
    // "...and tell me who the project lead is."
    let lead = parsed(
        erin,
        "projects",
        "tools/call",
        "get_project_lead",
        Some(args(&[("project", string("titan"))])),
    );
    let r = check(&mut c, tonic::Request::new(lead)).await;
    assert!(r.allowed, "{r:?}");

    // The wrong user: frank is a contractor, and the document is a finance one.
    let frank = Identity {
        bearer_token: token("frank"),
        ..Identity::default()
    };
    let finance = parsed(
        frank,
        "docs",
        "tools/call",
        "summarize_document",
        Some(args(&[("document_id", string("finance/budget-2026"))])),
    );
    let r = check(&mut c, tonic::Request::new(finance)).await;
    assert!(!r.allowed);
    assert_eq!(r.deny_kind, DenyKind::Forbidden as i32);
    assert_eq!(
        r.evaluations[0].policies,
        vec!["contractors-no-finance-documents"]
    );
    let error = r.error.expect("a JSON-RPC error");
    assert_eq!(error.code, -32003);
    assert!(
        error.message.contains("contractors-no-finance-documents"),
        "{}",
        error.message
    );

    // The wrong application: the summarizer may not look projects up (a verified
    // identity from the trusted gateway).
    let r = check(
        &mut c,
        trusted(parsed(
            verified("alice", "summarizer"),
            "projects",
            "tools/call",
            "get_project_lead",
            None,
        )),
    )
    .await;
    assert!(!r.allowed);
    assert!(
        r.evaluations[0].allowed && !r.evaluations[1].allowed,
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_are_proven() {
    let s = start();
    let mut c = client(&s.server.grpc).await;
    // A verified identity from an untrusted caller is refused, before any decision.
    let err = c
        .check(tonic::Request::new(parsed(
            verified("alice", "corpassist"),
            "docs",
            "tools/call",
            "get_document",
            None,
        )))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("`identity.verified`"), "{err:?}");
    assert!(err.metadata().get("x-mcp-authz-decision-id").is_some());
    // A wrong caller secret too.
    let mut req = tonic::Request::new(parsed(
        verified("alice", "corpassist"),
        "docs",
        "tools/call",
        "get_document",
        None,
    ));
    req.metadata_mut().insert(
        "x-mcp-authz-caller-token",
        "not-the-secret".parse().expect("ascii"),
    );
    assert_eq!(
        c.check(req).await.expect_err("refused").code(),
        tonic::Code::PermissionDenied
    );
    // A bad token.
    let bad = Identity {
        bearer_token: format!("{}x", token("erin")),
        ..Identity::default()
    };
    let r = check(
        &mut c,
        tonic::Request::new(parsed(bad, "docs", "tools/call", "get_document", None)),
    )
    .await;
    assert_eq!(r.deny_kind, DenyKind::Unauthenticated as i32);
    assert_eq!(r.error.expect("error").code, -32001);
    assert!(
        r.www_authenticate.contains("invalid_token"),
        "{}",
        r.www_authenticate
    );
    // The token in the call's `authorization` metadata works as well.
    let mut req = tonic::Request::new(parsed(
        Identity::default(),
        "docs",
        "tools/call",
        "get_document",
        None,
    ));
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token("erin")).parse().expect("ascii"),
    );
    assert!(check(&mut c, req).await.allowed);
    // No identity at all: a deny.
    let r = check(
        &mut c,
        tonic::Request::new(parsed(
            Identity::default(),
            "docs",
            "tools/call",
            "get_document",
            None,
        )),
    )
    .await;
    assert!(!r.allowed);
    assert!(r.reason.contains("no user or application"), "{}", r.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_jsonrpc_and_arguments() {
    let s = start();
    let mut c = client(&s.server.grpc).await;
    let raw = |body: &str| CheckRequest {
        identity: Some(verified("alice", "corpassist")),
        server: "docs".into(),
        message: Some(check_request::Message::Jsonrpc(body.as_bytes().to_vec())),
        ..CheckRequest::default()
    };
    let ok = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_documents","arguments":{"query":"titan","max_results":20}}}"#;
    let r = check(&mut c, trusted(raw(ok))).await;
    assert!(r.allowed, "{r:?}");
    assert_eq!(r.calls.len(), 1);
    assert_eq!(r.calls[0].resource, "Mcp::Tool::\"docs/search_documents\"");
    // A condition on a tool argument.
    let big = ok.replace("\"max_results\":20", "\"max_results\":500");
    let r = check(&mut c, trusted(raw(&big))).await;
    assert!(!r.allowed);
    assert_eq!(r.evaluations[1].policies, vec!["corpassist-bounded-search"]);
    // The same through parsed fields: protobuf numbers arrive as doubles.
    let parsed_big = parsed(
        verified("alice", "corpassist"),
        "docs",
        "tools/call",
        "search_documents",
        Some(args(&[
            ("query", string("titan")),
            ("max_results", number(500.0)),
        ])),
    );
    assert!(!check(&mut c, trusted(parsed_big)).await.allowed);
    // A batch is allowed only if every message is.
    let batch = format!("[{ok},{big}]");
    let r = check(&mut c, trusted(raw(&batch))).await;
    assert!(!r.allowed);
    assert_eq!(r.calls.len(), 2);
    assert!(r.calls[0].allowed && !r.calls[1].allowed);
    // Malformed messages are denied with the JSON-RPC error code.
    for (body, code) in [
        ("{not json", -32700),
        (r#"{"jsonrpc":"2.0","id":1}"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            -32602,
        ),
    ] {
        let r = check(&mut c, trusted(raw(body))).await;
        assert!(!r.allowed);
        assert_eq!(r.deny_kind, DenyKind::InvalidRequest as i32, "{body}");
        assert_eq!(r.error.expect("error").code, code, "{body}");
    }
    // Headers must agree with the body.
    let mut mismatch = raw(ok);
    mismatch
        .headers
        .insert("mcp-name".into(), "delete_document".into());
    assert!(!check(&mut c, trusted(mismatch)).await.allowed);
    // No server: invalid.
    let mut no_server = raw(ok);
    no_server.server.clear();
    assert_eq!(
        check(&mut c, trusted(no_server)).await.deny_kind,
        DenyKind::InvalidRequest as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_check_semantics() {
    let s = start();
    let mut c = client(&s.server.grpc).await;
    let allow = parsed(
        verified("alice", "corpassist"),
        "docs",
        "tools/call",
        "get_document",
        None,
    );
    let deny = parsed(
        verified("alice", "corpassist"),
        "docs",
        "tools/call",
        "delete_document",
        None,
    );
    let checks = vec![allow.clone(), deny.clone(), allow.clone(), deny.clone()];
    let run = |semantic: Semantic| {
        let mut r = tonic::Request::new(BatchCheckRequest {
            checks: checks.clone(),
            semantic: semantic as i32,
        });
        r.metadata_mut().insert(
            "x-mcp-authz-caller-token",
            CALLER_SECRET.parse().expect("ascii"),
        );
        r
    };
    let decisions =
        |r: pb::BatchCheckResponse| r.results.iter().map(|x| x.allowed).collect::<Vec<_>>();
    let all = c
        .batch_check(run(Semantic::ExecuteAll))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(decisions(all), vec![true, false, true, false]);
    let first_deny = c
        .batch_check(run(Semantic::DenyOnFirstDeny))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(decisions(first_deny), vec![true, false]);
    let first_permit = c
        .batch_check(run(Semantic::PermitOnFirstPermit))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(decisions(first_permit), vec![true]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_list_removes_exactly_the_forbidden_tools() {
    let s = start();
    let mut c = client(&s.server.grpc).await;
    // A tools/list result captured from the Python MCP SDK's server.
    let result = std::fs::read(support::repo().join("tests/fixtures/mcp/tools_list_result.json"))
        .expect("fixture");
    let request = |identity: Identity| FilterListRequest {
        identity: Some(identity),
        server: "docs".into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Result(result.clone())),
        ..FilterListRequest::default()
    };
    let r = c
        .filter_list(trusted(request(verified("alice", "corpassist"))))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(
        r.allowed,
        vec!["search_documents", "get_document", "summarize_document"]
    );
    assert_eq!(r.denied, vec!["delete_document"]);
    let filtered: serde_json::Value = serde_json::from_slice(&r.result).expect("json");
    let names: Vec<&str> = filtered["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec!["search_documents", "get_document", "summarize_document"]
    );
    // Every other member of each remaining tool is kept as it was.
    let original: serde_json::Value = serde_json::from_slice(&result).expect("json");
    assert_eq!(filtered["tools"][0], original["tools"][0]);
    // The summarizer sees only what it may call.
    let r = c
        .filter_list(trusted(request(verified("alice", "summarizer"))))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(r.allowed, vec!["search_documents", "summarize_document"]);
    // Names work too, and one policy governs listing and calling.
    let names = FilterListRequest {
        identity: Some(verified("dave", "corpassist")),
        server: "projects".into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Names(pb::Names {
            names: vec![
                "find_project".into(),
                "update_issue".into(),
                "brand_new".into(),
            ],
        })),
        ..FilterListRequest::default()
    };
    let r = c
        .filter_list(trusted(names))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(r.allowed, vec!["find_project"]);
    assert_eq!(r.denied, vec!["update_issue", "brand_new"]);
    // A malformed result is refused, not passed through.
    let mut bad = request(verified("alice", "corpassist"));
    bad.list = Some(filter_list_request::List::Result(
        b"{\"tools\": 5}".to_vec(),
    ));
    let r = c
        .filter_list(trusted(bad))
        .await
        .expect("filter")
        .into_inner();
    assert!(r.error.is_some() && r.result.is_empty() && r.allowed.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let s = start();
    let mut c = ServerReflectionClient::new(channel(&s.server.grpc).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("message")
        .expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"mcp_authz.v1.Authorizer".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_serving_until_the_policies_are_loaded() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    // Enough policies that loading them takes a moment.
    let dir = tempfile::tempdir().expect("tempdir");
    support::copy_dir(&reference_policies(), dir.path());
    let mut text = String::new();
    for i in 0..1500 {
        text.push_str(&format!(
            "@id(\"generated-{i}\")\npermit (principal in Mcp::Group::\"engineering\", action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/generated_{i}\") when {{ context has arguments && context.arguments has query && context.arguments.query like \"*{i}*\" }};\n"
        ));
    }
    std::fs::write(dir.path().join("generated.cedar"), text).expect("write");
    let server = Launch::new(dir.path()).listening().start();
    let mut health = HealthClient::new(channel(&server.grpc).await);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    let first = health
        .check(status("mcp_authz.v1.Authorizer"))
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        first.status,
        ServingStatus::NotServing as i32,
        "the policies were loaded too fast to see"
    );
    // Decisions are unavailable meanwhile, never guessed.
    let mut c = client(&server.grpc).await;
    let err = c
        .check(parsed(
            verified("alice", "corpassist"),
            "docs",
            "tools/call",
            "get_document",
            None,
        ))
        .await
        .expect_err("unavailable");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    // One readiness: the HTTP listener answers too, not ready.
    let ready = support::http::get(&server.http, "/readyz").expect("readyz");
    assert_eq!(ready.0, 503, "{ready:?}");
    let evaluation = support::http::post_json(
        &server.http,
        "/access/v1/evaluation",
        &serde_json::json!({
            "subject": { "type": "user", "id": "alice" }, "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": "docs/get_document" },
            "context": { "agent": "corpassist" },
        }),
    );
    assert_eq!(evaluation.map(|r| r.0), Some(503));
    // Then serving.
    let mut serving = None;
    for _ in 0..600 {
        let s = health.check(status("")).await.expect("health").into_inner();
        if s.status == ServingStatus::Serving as i32 {
            serving = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(serving.is_some(), "never became SERVING");
    let ext = health
        .check(status("envoy.service.auth.v3.Authorization"))
        .await
        .expect("health")
        .into_inner();
    assert_eq!(ext.status, ServingStatus::Serving as i32);
    let ready = support::http::get(&server.http, "/readyz").expect("readyz");
    assert_eq!(ready, (200, "ready\n".to_owned()));
}

/// The service with a config with a trusted caller secret and the demo issuer, more
/// `[grpc]` settings, and more sections.
fn start_with(grpc: &str, sections: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config::write(
        dir.path(),
        &[
            &format!("{}{grpc}", config::trusted_caller(dir.path())),
            &config::demo_issuer(),
            sections,
        ],
    );
    // These tests read which policy or refusal denied a request in the client's error.
    let server = Launch::new(&reference_policies())
        .config(&config)
        .full_denials()
        .start();
    Setup { _dir: dir, server }
}

fn names_request(identity: Identity, server: &str, names: Vec<String>) -> FilterListRequest {
    FilterListRequest {
        identity: Some(identity),
        server: server.into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Names(pb::Names { names })),
        ..FilterListRequest::default()
    }
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    if v.is_empty() {
        return "no samples".into();
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} p50={:?} p90={:?} p99={:?} max={:?}",
        v.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        v[v.len() - 1]
    )
}

/// How `/healthz` and a gRPC `Check` answer while large lists are decided: a
/// measurement for README.md ("Batches and lists"), not a test. `LISTS` lists of
/// `LIST_ENTRIES` entries (distinct names, so cache misses) are decided over and
/// over for `SECS` seconds while both are probed every 20 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement: cargo test --test service grpc_api::measure_list_load -- --ignored --nocapture"]
async fn measure_list_load() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (entries, lists, secs) = (
        env("LIST_ENTRIES", 20_000),
        env("LISTS", 3),
        env("SECS", 10),
    );
    let s = start_with(&format!("max_list_entries = {entries}\n"), "");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs as u64);
    let mut tasks = Vec::new();
    for l in 0..lists {
        let addr = s.server.grpc.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&addr).await;
            let (mut done, mut took) = (0usize, Vec::new());
            let mut round = 0;
            while std::time::Instant::now() < deadline {
                round += 1;
                let names = (0..entries).map(|i| format!("t{l}_{round}_{i}")).collect();
                let started = std::time::Instant::now();
                c.filter_list(trusted(names_request(
                    verified("alice", "corpassist"),
                    "docs",
                    names,
                )))
                .await
                .expect("filter");
                took.push(started.elapsed());
                done += 1;
            }
            (done, took)
        }));
    }
    let http = s.server.http.clone();
    let mut c = client(&s.server.grpc).await;
    let (mut health, mut checks) = (Vec::new(), Vec::new());
    while std::time::Instant::now() < deadline {
        let started = std::time::Instant::now();
        let addr = http.clone();
        let (status, _) = tokio::task::spawn_blocking(move || http::get(&addr, "/healthz"))
            .await
            .expect("join")
            .expect("healthz");
        assert_eq!(status, 200);
        health.push(started.elapsed());
        let started = std::time::Instant::now();
        let r = check(
            &mut c,
            trusted(parsed(
                verified("alice", "corpassist"),
                "docs",
                "tools/call",
                "get_document",
                None,
            )),
        )
        .await;
        assert!(r.allowed);
        checks.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut lists_done, mut list_times) = (0, Vec::new());
    for t in tasks {
        let (done, took) = t.await.expect("list task");
        lists_done += done;
        list_times.extend(took);
    }
    println!("lists={lists} entries={entries} secs={secs}");
    println!("  healthz: {}", percentiles(health));
    println!("  Check:   {}", percentiles(checks));
    println!(
        "  lists:   {lists_done} done, {:.0} entries/s, each {}",
        (lists_done * entries) as f64 / secs as f64,
        percentiles(list_times)
    );
}

// ---- caps, lists off the async workers, the list decision log record ----

/// A sample of `/metrics` (0 when absent).
fn metric(http: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    try_metric(http, name, labels).expect("/metrics answered within 5 s")
}

/// A sample of `/metrics` (0 when absent); `None` if `/metrics` did not answer
/// within 5 s.
fn try_metric(http: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let (status, text) = http::get(http, "/metrics")?;
    assert_eq!(status, 200);
    let value = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let hit = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            if hit { value.parse().ok() } else { None }
        })
        .unwrap_or(0.0);
    Some(value)
}

fn misses(http: &str) -> f64 {
    metric(http, "mcp_authz_decision_cache_misses_total", &[])
}

fn grpc_denies(http: &str) -> f64 {
    metric(
        http,
        "mcp_authz_decisions_total",
        &[("interface", "grpc"), ("decision", "deny")],
    )
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn raw_result(identity: Identity, method: &str, result: &serde_json::Value) -> FilterListRequest {
    FilterListRequest {
        identity: Some(identity),
        server: "docs".into(),
        method: method.into(),
        list: Some(filter_list_request::List::Result(
            serde_json::to_vec(result).expect("json"),
        )),
        ..FilterListRequest::default()
    }
}

/// A JSON-RPC batch of `n` `tools/call get_document` messages, as a raw check.
fn jsonrpc_batch(n: usize) -> CheckRequest {
    let messages: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"get_document","arguments":{{"document_id":"titan/q1-strategy"}}}}}}"#
            )
        })
        .collect();
    CheckRequest {
        identity: Some(verified("alice", "corpassist")),
        server: "docs".into(),
        message: Some(check_request::Message::Jsonrpc(
            format!("[{}]", messages.join(",")).into_bytes(),
        )),
        ..CheckRequest::default()
    }
}

/// A refusal of the whole call with `code`: its message, after checking that the
/// deny it was logged as is named.
fn call_refused<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: tonic::Code,
) -> String {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.metadata().get("x-mcp-authz-decision-id").is_some(),
        "{e:?}"
    );
    e.message().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batches_and_lists_are_refused_before_any_decision() {
    let s = start();
    let http = s.server.http.clone();
    let mut c = client(&s.server.grpc).await;
    let alice = || verified("alice", "corpassist");
    let (misses_before, denies_before) = (misses(&http), grpc_denies(&http));

    // Names over the default cap of 1000, and far over it.
    for n in [1001, 100_000] {
        let m = call_refused(
            c.filter_list(trusted(names_request(alice(), "docs", names("tool_", n))))
                .await,
            tonic::Code::InvalidArgument,
        );
        assert!(
            m.contains(&format!("{n} entries")) && m.contains("`grpc.max_list_entries`"),
            "{m}"
        );
    }
    // A raw result over the cap, as a result and as a whole response.
    let tools: Vec<serde_json::Value> = (0..1001)
        .map(|i| serde_json::json!({ "name": format!("tool_{i}") }))
        .collect();
    for result in [
        serde_json::json!({ "tools": tools }),
        serde_json::json!({ "jsonrpc": "2.0", "id": 1, "result": { "tools": tools } }),
    ] {
        let m = call_refused(
            c.filter_list(trusted(raw_result(alice(), "tools/list", &result)))
                .await,
            tonic::Code::InvalidArgument,
        );
        assert!(m.contains("1001 entries"), "{m}");
    }
    // Checks over the cap.
    let one = parsed(alice(), "docs", "tools/call", "get_document", None);
    let m = call_refused(
        c.batch_check(trusted(BatchCheckRequest {
            checks: vec![one.clone(); 1001],
            semantic: Semantic::ExecuteAll as i32,
        }))
        .await,
        tonic::Code::InvalidArgument,
    );
    assert!(
        m.contains("1001 checks") && m.contains("`grpc.max_batch_checks`"),
        "{m}"
    );
    // Fewer checks, but more MCP messages in them than the cap: 11 batches of 100.
    let m = call_refused(
        c.batch_check(trusted(BatchCheckRequest {
            checks: vec![jsonrpc_batch(100); 11],
            semantic: Semantic::ExecuteAll as i32,
        }))
        .await,
        tonic::Code::InvalidArgument,
    );
    assert!(m.contains("1100 MCP messages"), "{m}");
    // Not one decision was made for them; each refusal is one logged deny.
    assert_eq!(misses(&http), misses_before);
    assert_eq!(grpc_denies(&http), denies_before + 6.0);

    // At the caps, everything is decided.
    let r = c
        .filter_list(trusted(names_request(
            alice(),
            "docs",
            names("tool_", 1000),
        )))
        .await
        .expect("at the cap")
        .into_inner();
    assert_eq!(r.allowed.len() + r.denied.len(), 1000);
    let r = c
        .batch_check(trusted(BatchCheckRequest {
            checks: vec![jsonrpc_batch(100); 10],
            semantic: Semantic::ExecuteAll as i32,
        }))
        .await
        .expect("at the cap")
        .into_inner();
    assert_eq!(r.results.len(), 10);
    assert!(r.results.iter().all(|r| r.allowed && r.calls.len() == 100));
    let r = c
        .batch_check(trusted(BatchCheckRequest {
            checks: vec![one.clone(); 1000],
            semantic: Semantic::ExecuteAll as i32,
        }))
        .await
        .expect("at the cap")
        .into_inner();
    assert_eq!(r.results.len(), 1000);

    // The caps are settings.
    let small = start_with("max_batch_checks = 3\nmax_list_entries = 2\n", "");
    let mut c = client(&small.server.grpc).await;
    let list = |n| trusted(names_request(alice(), "docs", names("tool_", n)));
    call_refused(c.filter_list(list(3)).await, tonic::Code::InvalidArgument);
    assert!(c.filter_list(list(2)).await.is_ok());
    let batch = |checks: Vec<CheckRequest>| {
        trusted(BatchCheckRequest {
            checks,
            semantic: Semantic::ExecuteAll as i32,
        })
    };
    call_refused(
        c.batch_check(batch(vec![one.clone(); 4])).await,
        tonic::Code::InvalidArgument,
    );
    call_refused(
        c.batch_check(batch(vec![jsonrpc_batch(4)])).await,
        tonic::Code::InvalidArgument,
    );
    assert_eq!(
        c.batch_check(batch(vec![one; 3]))
            .await
            .expect("at the cap")
            .into_inner()
            .results
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_and_decisions_answer_while_large_lists_are_decided() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let s = start_with("", "[decisions]\nallow_undeclared_tools = true\n");
    let (grpc, http) = (s.server.grpc.clone(), s.server.http.clone());
    let blocking_misses = |http: String| async move {
        tokio::task::spawn_blocking(move || {
            try_metric(&http, "mcp_authz_decision_cache_misses_total", &[])
        })
        .await
        .expect("join")
        .expect("/metrics did not answer within 5 s while lists were decided: lists hold the async workers")
    };
    let misses_before = blocking_misses(http.clone()).await;
    // Four lists and a batch at the caps (distinct names of tools `docs` does not
    // declare, decided by the server-wide policies under `allow_undeclared_tools`:
    // every entry a cache miss), more of them than there are CPUs.
    let finished = Arc::new(AtomicUsize::new(0));
    let mut work = Vec::new();
    for l in 0..4 {
        let (grpc, finished) = (grpc.clone(), Arc::clone(&finished));
        work.push(tokio::spawn(async move {
            let mut c = client(&grpc).await;
            let r = c
                .filter_list(trusted(names_request(
                    verified("alice", "corpassist"),
                    "docs",
                    names(&format!("list{l}_tool_"), 1000),
                )))
                .await
                .expect("a list at the cap")
                .into_inner();
            assert_eq!(r.allowed.len() + r.denied.len(), 1000);
            finished.fetch_add(1, Ordering::SeqCst);
        }));
    }
    {
        let (grpc, finished) = (grpc.clone(), Arc::clone(&finished));
        work.push(tokio::spawn(async move {
            let mut c = client(&grpc).await;
            let checks = (0..1000)
                .map(|i| {
                    parsed(
                        verified("alice", "corpassist"),
                        "docs",
                        "tools/call",
                        &format!("batch_tool_{i}"),
                        None,
                    )
                })
                .collect();
            let r = c
                .batch_check(trusted(BatchCheckRequest {
                    checks,
                    semantic: Semantic::ExecuteAll as i32,
                }))
                .await
                .expect("a batch at the cap")
                .into_inner();
            assert_eq!(r.results.len(), 1000);
            finished.fetch_add(1, Ordering::SeqCst);
        }));
    }
    // Wait until they are being decided.
    let mut deciding = false;
    for _ in 0..3000 {
        if blocking_misses(http.clone()).await > misses_before {
            deciding = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(deciding, "the lists were never decided");

    // Meanwhile the async workers answer: health over HTTP and gRPC, a decision,
    // and the refusal of a list far over the cap.
    let addr = http.clone();
    let (status, body) = tokio::task::spawn_blocking(move || http::get(&addr, "/healthz"))
        .await
        .expect("join")
        .expect("healthz");
    assert_eq!(status, 200, "{body}");
    let mut health = HealthClient::new(channel(&grpc).await);
    let serving = health
        .check(HealthCheckRequest {
            service: "mcp_authz.v1.Authorizer".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);
    let mut c = client(&grpc).await;
    let r = check(
        &mut c,
        trusted(parsed(
            verified("alice", "corpassist"),
            "docs",
            "tools/call",
            "get_document",
            None,
        )),
    )
    .await;
    assert!(r.allowed, "{r:?}");
    call_refused(
        c.filter_list(trusted(names_request(
            verified("alice", "corpassist"),
            "docs",
            names("huge_", 100_000),
        )))
        .await,
        tonic::Code::InvalidArgument,
    );
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "a list was done before health, a decision and a refusal were answered: lists hold the async workers"
    );
    for w in work {
        w.await.expect("list task");
    }
    assert_eq!(finished.load(Ordering::SeqCst), 5);
}

/// Decision log records, once the one with `request_id` `marker` is written.
async fn records_until(path: &Path, marker: &str) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let records: Vec<serde_json::Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
            .collect();
        if records.iter().any(|r| r["request_id"] == marker) {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no record with request id `{marker}` in {}", path.display());
}

fn with_request_id<T>(mut r: tonic::Request<T>, id: &str) -> tonic::Request<T> {
    r.metadata_mut()
        .insert("x-request-id", id.parse().expect("ascii"));
    r
}

const LOGGED: &str = "[decision_log]\nfile = \"decisions.jsonl\"\ninclude_arguments = true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_one_decision_log_record() {
    let s = start_with("", LOGGED);
    let log = s._dir.path().join("decisions.jsonl");
    let mut c = client(&s.server.grpc).await;
    let result = std::fs::read(support::repo().join("tests/fixtures/mcp/tools_list_result.json"))
        .expect("fixture");
    let request = FilterListRequest {
        identity: Some(verified("alice", "corpassist")),
        server: "docs".into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Result(result)),
        ..FilterListRequest::default()
    };
    let shown = c
        .filter_list(with_request_id(trusted(request), "list-1"))
        .await
        .expect("filter")
        .into_inner();
    let hidden = c
        .filter_list(with_request_id(
            trusted(names_request(
                verified("alice", "corpassist"),
                "docs",
                vec!["delete_document".into()],
            )),
            "list-2",
        ))
        .await
        .expect("filter")
        .into_inner();
    check(
        &mut c,
        with_request_id(
            trusted(parsed(
                verified("alice", "corpassist"),
                "docs",
                "tools/call",
                "get_document",
                None,
            )),
            "marker",
        ),
    )
    .await;
    let records = records_until(&log, "marker").await;
    assert_eq!(records.len(), 3, "{records:#?}");
    let of = |id: &str| {
        let found: Vec<&serde_json::Value> =
            records.iter().filter(|r| r["request_id"] == id).collect();
        assert_eq!(found.len(), 1, "{id}: {records:#?}");
        found[0].clone()
    };
    let r = of("list-1");
    assert_eq!(r["decision_id"], shown.decision_id.as_str());
    assert_eq!(r["decision"], "allow");
    assert_eq!(r["interface"], "grpc");
    assert_eq!(r["action"], "Mcp::Action::\"tools/list\"");
    assert_eq!(r["resource"], "Mcp::Server::\"docs\"");
    assert_eq!(r["server"], "Mcp::Server::\"docs\"");
    assert_eq!(r["user"], "Mcp::User::\"alice\"");
    assert_eq!(r["application"], "Mcp::Application::\"corpassist\"");
    assert_eq!(r["generation"], shown.policy_generation);
    assert_eq!(r["reason"], "3 of 4 entries allowed");
    assert_eq!(
        r["list"],
        serde_json::json!({
            "method": "tools/list", "entries": 4, "allowed": 3, "denied": 1,
            "denied_names": ["delete_document"],
        })
    );
    let r = of("list-2");
    assert_eq!(r["decision_id"], hidden.decision_id.as_str());
    assert_eq!(r["decision"], "deny");
    assert_eq!(
        r["list"]["denied_names"],
        serde_json::json!(["delete_document"])
    );
    assert_eq!(of("marker")["decision"], "allow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_arguments_are_redacted_on_every_interface() {
    let s = start_with("", LOGGED);
    let log = s._dir.path().join("decisions.jsonl");
    let arguments = serde_json::json!({
        "query": "visible-query",
        "access_token": "secret-1",
        "client_secret": "secret-2",
        "options": { "Api-Key": "secret-3", "nested": [{ "X-Auth": "secret-4" }] },
        "headers": [{ "Cookie": "secret-5" }, { "name": "visible-name", "PASSWORD": "secret-6" }],
        "sessionId": "secret-7",
        "refreshToken": { "value": "secret-8" },
    });
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": "search_documents", "arguments": arguments },
    });
    // The gateway API.
    let mut c = client(&s.server.grpc).await;
    check(
        &mut c,
        with_request_id(
            trusted(CheckRequest {
                identity: Some(verified("alice", "corpassist")),
                server: "docs".into(),
                message: Some(check_request::Message::Jsonrpc(
                    body.to_string().into_bytes(),
                )),
                ..CheckRequest::default()
            }),
            "via-grpc",
        ),
    )
    .await;
    // AuthZEN.
    let authzen = serde_json::json!({
        "subject": { "type": "user", "id": "alice" }, "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": "docs/search_documents" },
        "context": { "agent": "corpassist", "arguments": arguments },
    });
    let (status, _, text) = http::request(
        &s.server.http,
        "POST",
        "/access/v1/evaluation",
        &[
            ("Content-Type", "application/json"),
            ("X-Request-ID", "via-authzen"),
        ],
        &authzen.to_string(),
    )
    .expect("authzen");
    assert_eq!(status, 200, "{text}");
    // Envoy's HTTP ext_authz mode.
    let bearer = format!("Bearer {}", token("erin"));
    let (status, _, text) = http::request(
        &s.server.http,
        "POST",
        "/ext_authz/mcp",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
            ("x-mcp-authz-server", "docs"),
            ("X-Request-ID", "via-ext-authz"),
        ],
        &body.to_string(),
    )
    .expect("ext_authz");
    // Denied (search_documents declares none of the secret-bearing arguments), and
    // recorded with the secrets redacted all the same.
    assert_eq!(status, 403, "{text}");
    check(
        &mut c,
        with_request_id(
            trusted(parsed(
                verified("alice", "corpassist"),
                "docs",
                "tools/call",
                "get_document",
                None,
            )),
            "marker",
        ),
    )
    .await;
    let records = records_until(&log, "marker").await;
    let text = std::fs::read_to_string(&log).expect("log");
    for n in 1..=8 {
        assert!(
            !text.contains(&format!("secret-{n}")),
            "secret-{n} in {text}"
        );
    }
    for id in ["via-grpc", "via-authzen", "via-ext-authz"] {
        let r = records
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("no record {id}: {records:#?}"));
        let a = &r["arguments"];
        assert_eq!(a["query"], "visible-query", "{id}");
        assert_eq!(a["access_token"], "[REDACTED]", "{id}");
        assert_eq!(a["client_secret"], "[REDACTED]", "{id}");
        assert_eq!(a["options"]["Api-Key"], "[REDACTED]", "{id}");
        assert_eq!(a["options"]["nested"][0]["X-Auth"], "[REDACTED]", "{id}");
        assert_eq!(a["headers"][0]["Cookie"], "[REDACTED]", "{id}");
        assert_eq!(a["headers"][1]["name"], "visible-name", "{id}");
        assert_eq!(a["headers"][1]["PASSWORD"], "[REDACTED]", "{id}");
        assert_eq!(a["sessionId"], "[REDACTED]", "{id}");
        assert_eq!(a["refreshToken"], "[REDACTED]", "{id}");
    }
}

// ---- asserted identities ----

const SPIFFE: &str = "[spiffe]\ntrust_domains = [\"corp.example\"]\n";

/// The same message from callers that are not trusted: no secret, a wrong one,
/// an empty one.
fn untrusted_callers<T: Clone>(message: &T) -> Vec<tonic::Request<T>> {
    let mut out = vec![tonic::Request::new(message.clone())];
    for secret in ["not-the-secret", ""] {
        let mut r = tonic::Request::new(message.clone());
        r.metadata_mut()
            .insert("x-mcp-authz-caller-token", secret.parse().expect("ascii"));
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asserted_identities_are_honoured_only_from_the_trusted_caller() {
    let s = start_with("", SPIFFE);
    let http = s.server.http.clone();
    let mut c = client(&s.server.grpc).await;
    let misses_before = misses(&http);
    let erin = Identity {
        bearer_token: token("erin"),
        ..Identity::default()
    };
    let groups_only = Identity {
        verified: Some(VerifiedIdentity {
            groups: vec!["doc-admins".into()],
            ..VerifiedIdentity::default()
        }),
        ..Identity::default()
    };
    let token_and_spiffe = Identity {
        spiffe_id: spiffe("corpassist").spiffe_id,
        ..erin.clone()
    };
    let asserted = [
        (spiffe("corpassist"), "`identity.spiffe_id`"),
        (spiffe("ops-console"), "`identity.spiffe_id`"),
        (verified("alice", "corpassist"), "`identity.verified`"),
        (verified("", "ops-console"), "`identity.verified`"),
        (groups_only, "`identity.verified`"),
        (token_and_spiffe, "`identity.spiffe_id`"),
    ];
    let fixture = std::fs::read(support::repo().join("tests/fixtures/mcp/tools_list_result.json"))
        .expect("fixture");
    let list = |identity: Identity| FilterListRequest {
        identity: Some(identity),
        server: "docs".into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Result(fixture.clone())),
        ..FilterListRequest::default()
    };
    let denies_before = grpc_denies(&http);
    let mut refusals = 0.0;
    for (identity, field) in &asserted {
        let one = parsed(identity.clone(), "docs", "tools/call", "get_document", None);
        for r in untrusted_callers(&one) {
            let m = call_refused(c.check(r).await, tonic::Code::PermissionDenied);
            assert!(m.contains(field) && m.contains("trusted caller"), "{m}");
            refusals += 1.0;
        }
        for r in untrusted_callers(&list(identity.clone())) {
            let m = call_refused(c.filter_list(r).await, tonic::Code::PermissionDenied);
            assert!(m.contains(field), "{m}");
            refusals += 1.0;
        }
        // One asserting check among good ones refuses the whole batch.
        let good = parsed(erin.clone(), "docs", "tools/call", "get_document", None);
        let batch = BatchCheckRequest {
            checks: vec![good.clone(), one, good],
            semantic: Semantic::ExecuteAll as i32,
        };
        for r in untrusted_callers(&batch) {
            call_refused(c.batch_check(r).await, tonic::Code::PermissionDenied);
            refusals += 1.0;
        }
    }
    // Nothing was decided for them, each is one logged deny.
    assert_eq!(misses(&http), misses_before);
    assert_eq!(grpc_denies(&http), denies_before + refusals);

    // A bearer token proves itself: no trust needed.
    let r = check(
        &mut c,
        tonic::Request::new(parsed(erin, "docs", "tools/call", "get_document", None)),
    )
    .await;
    assert!(r.allowed && r.application == "corpassist", "{r:?}");

    // From the trusted caller, a SPIFFE ID is the application's, on every method.
    let r = check(
        &mut c,
        trusted(parsed(
            spiffe("corpassist"),
            "docs",
            "tools/call",
            "get_document",
            None,
        )),
    )
    .await;
    assert!(r.allowed && r.application == "corpassist", "{r:?}");
    let r = c
        .filter_list(trusted(list(spiffe("corpassist"))))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(r.denied, vec!["delete_document"]);
    let r = c
        .filter_list(trusted(list(spiffe("summarizer"))))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(r.allowed, vec!["search_documents", "summarize_document"]);
    let r = c
        .batch_check(trusted(BatchCheckRequest {
            checks: vec![
                parsed(
                    spiffe("summarizer"),
                    "docs",
                    "tools/call",
                    "summarize_document",
                    None,
                ),
                parsed(
                    spiffe("summarizer"),
                    "docs",
                    "tools/call",
                    "get_document",
                    None,
                ),
            ],
            semantic: Semantic::ExecuteAll as i32,
        }))
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(
        r.results.iter().map(|r| r.allowed).collect::<Vec<_>>(),
        vec![true, false]
    );
    // A trusted caller's SPIFFE ID is still checked: another trust domain is refused.
    let r = check(
        &mut c,
        trusted(parsed(
            Identity {
                spiffe_id: "spiffe://evil.example/ns/apps/sa/corpassist".into(),
                ..Identity::default()
            },
            "docs",
            "tools/call",
            "get_document",
            None,
        )),
    )
    .await;
    assert_eq!(r.deny_kind, DenyKind::Unauthenticated as i32, "{r:?}");
}

fn envoy_check(
    principal: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> envoy_types::pb::envoy::service::auth::v3::CheckRequest {
    envoy::post(body)
        .principal(principal)
        .headers(headers)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_takes_a_spiffe_id_only_where_it_is_proven() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    let s = start_with("", SPIFFE);
    let get = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}}"#;
    let delete = get.replace("get_document", "delete_document");
    let corpassist = "spiffe://corp.example/ns/apps/sa/corpassist";
    // The HTTP mode: an `x-mcp-authz-spiffe-id` header only with the caller secret.
    let http = |body: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("x-mcp-authz-server", "docs"),
        ];
        headers.extend_from_slice(extra);
        http::request(&s.server.http, "POST", "/ext_authz/mcp", &headers, body).expect("ext_authz")
    };
    for extra in [
        vec![("x-mcp-authz-spiffe-id", corpassist)],
        vec![
            ("x-mcp-authz-spiffe-id", corpassist),
            ("x-mcp-authz-caller-token", "not-the-secret"),
        ],
        vec![
            ("x-mcp-authz-spiffe-id", corpassist),
            ("x-mcp-authz-caller-token", ""),
        ],
        vec![
            ("x-mcp-authz-spiffe-id", corpassist),
            ("Authorization", &*format!("Bearer {}", token("erin"))),
        ],
    ] {
        let (status, _, body) = http(get, &extra);
        assert_eq!(status, 403, "{extra:?}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("JSON-RPC");
        assert_eq!(error["error"]["code"], -32003);
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("a SPIFFE ID asserted") && m.contains("trusted caller")),
            "{body}"
        );
    }
    let trusted_headers = [
        ("x-mcp-authz-spiffe-id", corpassist),
        ("x-mcp-authz-caller-token", CALLER_SECRET),
    ];
    let (status, headers, body) = http(get, &trusted_headers);
    assert_eq!(status, 200, "{body}");
    assert!(
        headers.contains(&("x-mcp-authz-application".into(), "corpassist".into())),
        "{headers:?}"
    );
    let (status, _, body) = http(&delete, &trusted_headers);
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = http(
        get,
        &[
            (
                "x-mcp-authz-spiffe-id",
                "spiffe://evil.example/ns/apps/sa/corpassist",
            ),
            ("x-mcp-authz-caller-token", CALLER_SECRET),
        ],
    );
    assert_eq!(status, 401, "{body}");
    // The secret alone asserts nothing: no credentials.
    let (status, _, body) = http(get, &[("x-mcp-authz-caller-token", CALLER_SECRET)]);
    assert_eq!(status, 401, "{body}");

    // The gRPC mode: Envoy's `source.principal` is proven by its mTLS handshake.
    let mut envoy = AuthorizationClient::new(channel(&s.server.grpc).await);
    let mut ask = async |principal: &str, headers: &[(&str, &str)], body: &str| {
        envoy
            .check(envoy_check(principal, headers, body))
            .await
            .expect("check")
            .into_inner()
    };
    let allowed_app =
        |r: &envoy_types::pb::envoy::service::auth::v3::CheckResponse| match &r.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .find(|h| h.key == "x-mcp-authz-application")
                .map(|h| h.value.clone()),
            _ => None,
        };
    let r = ask(corpassist, &[], get).await;
    assert_eq!(allowed_app(&r).as_deref(), Some("corpassist"), "{r:?}");
    let r = ask(corpassist, &[], &delete).await;
    assert!(allowed_app(&r).is_none(), "{r:?}");
    // A client's `x-mcp-authz-spiffe-id` (and secret) in the request Envoy describes is not an identity.
    let r = ask(
        "",
        &[
            ("x-mcp-authz-spiffe-id", corpassist),
            ("x-mcp-authz-caller-token", CALLER_SECRET),
        ],
        get,
    )
    .await;
    assert!(allowed_app(&r).is_none(), "{r:?}");
    assert_eq!(
        r.status.map(|s| s.code),
        Some(tonic::Code::Unauthenticated as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authzen_takes_no_spiffe_id_from_a_header_or_a_body() {
    let s = start_with("", SPIFFE);
    let decide = |body: &serde_json::Value, headers: &[(&str, &str)]| {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        let (status, _, text) = http::request(
            &s.server.http,
            "POST",
            "/access/v1/evaluation",
            &all,
            &body.to_string(),
        )
        .expect("authzen");
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).expect("json")["decision"]
            .as_bool()
            .expect("a decision")
    };
    let corpassist = "spiffe://corp.example/ns/apps/sa/corpassist";
    let app = |id: &str, tool: &str| {
        serde_json::json!({
            "subject": { "type": "application", "id": id }, "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": tool },
            "context": { "arguments": support::reference_arguments(tool) },
        })
    };
    // The application by its id; a SPIFFE ID as the id is an unknown application.
    assert!(decide(&app("corpassist", "docs/get_document"), &[]));
    assert!(!decide(&app(corpassist, "docs/get_document"), &[]));
    // The HTTP mode's SPIFFE header is no AuthZEN input, not even with the secret.
    let asserted = [
        ("x-mcp-authz-spiffe-id", corpassist),
        ("x-mcp-authz-caller-token", CALLER_SECRET),
    ];
    for body in [
        app(corpassist, "docs/get_document"),
        serde_json::json!({
            "subject": { "type": "user", "id": "alice" }, "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": "docs/delete_document" },
        }),
    ] {
        assert_eq!(decide(&body, &asserted), decide(&body, &[]), "{body}");
    }
}

// ---- other batch-shaped inputs ----

#[test]
fn a_search_page_decides_at_most_a_thousand_candidates() {
    use mcp_authz::api::authzen::{MAX_SEARCH_DECISIONS, SearchKind, search};
    use mcp_authz::authz::{DecisionMeta, Interface};
    // 2,500 users no policy permits, sorted after the reference users.
    let dir = support::copy_of_reference();
    let path = dir.path().join("entities.json");
    let mut entities: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("entities")).expect("json");
    for i in 0..2500 {
        entities.push(serde_json::json!({
            "uid": { "type": "Mcp::User", "id": format!("zz{i:04}") }, "attrs": {}, "parents": []
        }));
    }
    std::fs::write(&path, serde_json::to_string(&entities).expect("json")).expect("write");
    let telemetry = std::sync::Arc::new(mcp_authz::telemetry::Telemetry::default());
    let engine = support::inproc::engine_with(dir.path(), &telemetry);
    let decided = || {
        telemetry.metrics.decisions(Interface::Authzen, true)
            + telemetry.metrics.decisions(Interface::Authzen, false)
    };
    let mut body = serde_json::json!({
        "subject": { "type": "user" }, "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": "docs/get_document" },
        "context": { "agent": "corpassist" },
    });
    let (mut pages, mut found) = (0, Vec::new());
    loop {
        let before = decided();
        let page = search(
            &engine,
            SearchKind::Subject,
            body.as_object().expect("object"),
            None,
            &DecisionMeta::default(),
        )
        .expect("a page");
        let made = decided() - before;
        assert!(
            made as usize <= MAX_SEARCH_DECISIONS,
            "{made} decisions for one page"
        );
        pages += 1;
        found.extend(page["results"].as_array().expect("results").iter().cloned());
        let token = page["page"]["next_token"]
            .as_str()
            .expect("token")
            .to_owned();
        if token.is_empty() {
            break;
        }
        body["page"] = serde_json::json!({ "token": token });
        assert!(pages < 10, "the pages never end");
    }
    // Every candidate was decided once, over several pages; the allowed ones were all found.
    assert!(pages >= 3, "{pages} pages");
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|r| !r["id"].as_str().expect("id").starts_with("zz")),
        "{found:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_kind_is_filtered_and_read_strictly() {
    use serde_json::json;
    let s = start();
    let mut c = client(&s.server.grpc).await;
    let ask = async |c: &mut AuthorizerClient<Channel>,
                     who: Identity,
                     method: &str,
                     result: &serde_json::Value| {
        c.filter_list(trusted(raw_result(who, method, result)))
            .await
            .expect("an answer")
            .into_inner()
    };
    let titan = json!({ "uri": "docs://titan/q1-strategy", "name": "Q1 strategy" });
    let budget = json!({ "uri": "docs://finance/budget-2026", "name": "Budget" });
    // A contractor sees the Titan document but not the finance one; the response
    // comes back whole, less the hidden entry.
    let r = ask(
        &mut c,
        verified("carol", "corpassist"),
        "resources/list",
        &json!({ "jsonrpc": "2.0", "id": "r1", "result": { "resources": [titan, budget], "nextCursor": "2" } }),
    )
    .await;
    assert_eq!(r.allowed, vec!["docs://titan/q1-strategy"], "{r:?}");
    assert_eq!(r.denied, vec!["docs://finance/budget-2026"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.result).expect("json"),
        json!({ "jsonrpc": "2.0", "id": "r1", "result": { "resources": [titan], "nextCursor": "2" } })
    );
    let prompts = json!({ "prompts": [{ "name": "executive_summary", "arguments": [{ "name": "audience" }] }] });
    let r = ask(
        &mut c,
        verified("alice", "corpassist"),
        "prompts/list",
        &prompts,
    )
    .await;
    assert_eq!(r.allowed, vec!["executive_summary"], "{r:?}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&r.result).expect("json"),
        prompts
    );
    let templates = json!({ "resourceTemplates": [{ "uriTemplate": "docs://titan/latest", "name": "latest" }] });
    let r = ask(
        &mut c,
        verified("alice", "corpassist"),
        "resources/templates/list",
        &templates,
    )
    .await;
    assert_eq!(r.allowed, vec!["docs://titan/latest"], "{r:?}");

    // Decoys and shapes that could be read two ways, for each kind of list.
    let fixture: serde_json::Value = serde_json::from_slice(
        &std::fs::read(support::repo().join("tests/fixtures/mcp/tools_list_result.json"))
            .expect("fixture"),
    )
    .expect("json");
    let delete = json!({ "name": "delete_document" });
    let refused: Vec<(&str, String)> = vec![
        // The issue's example: a top-level list beside `result.tools`.
        ("tools/list", json!({ "tools": fixture["tools"], "result": { "tools": [delete] } }).to_string()),
        ("tools/list", json!({ "result": fixture, "tools": [] }).to_string()),
        ("tools/list", json!({ "jsonrpc": "2.0", "id": 1, "result": fixture, "error": { "code": -1, "message": "x" } }).to_string()),
        ("tools/list", json!({ "jsonrpc": "2.0", "id": 1, "result": { "result": { "tools": [delete] } } }).to_string()),
        ("tools/list", json!({ "jsonrpc": "2.0", "id": 1, "result": { "tools": [], "Tools": [delete] } }).to_string()),
        ("tools/list", r#"{"tools":[{"name":"get_document"}],"tools":[{"name":"delete_document"}]}"#.into()),
        ("tools/list", r#"{"tools":[{"name":"get_document","nam\u0065":"delete_document"}]}"#.into()),
        ("tools/list", r#"{"tools":[{"name":"get_document","NAME":"delete_document"}]}"#.into()),
        ("tools/list", json!({ "tools": [{ "name": ["delete_document"] }] }).to_string()),
        ("tools/list", json!({ "tools": [{ "description": "no name" }] }).to_string()),
        ("tools/list", json!({ "tools": ["delete_document"] }).to_string()),
        ("tools/list", json!({ "tools": [delete], "prompts": [{ "name": "executive_summary" }] }).to_string()),
        ("prompts/list", json!({ "prompts": [], "Prompts": [{ "name": "executive_summary" }] }).to_string()),
        ("prompts/list", json!({ "prompts": [{ "name": 7 }] }).to_string()),
        ("prompts/list", json!({ "prompts": [{ "name": "executive_summary" }], "tools": [delete] }).to_string()),
        ("resources/list", json!({ "resources": [titan], "result": { "resources": [budget] } }).to_string()),
        ("resources/list", json!({ "resources": [{ "name": "docs://finance/budget-2026" }] }).to_string()),
        ("resources/list", json!({ "resources": [{ "uri": null }] }).to_string()),
        ("resources/list", r#"{"resources":[{"uri":"docs://titan/q1-strategy","uri":"docs://finance/budget-2026"}]}"#.into()),
        ("resources/list", json!({ "resources": [titan], "resourceTemplates": [{ "uriTemplate": "docs://finance/{id}" }] }).to_string()),
        ("resources/templates/list", json!({ "resourceTemplates": ["docs://titan/latest"] }).to_string()),
        ("resources/templates/list", json!({ "resourceTemplates": [{ "uri": "docs://titan/latest" }] }).to_string()),
        ("resources/templates/list", json!({ "resourceTemplates": [], "resources": [budget] }).to_string()),
    ];
    for (method, text) in refused {
        let request = FilterListRequest {
            identity: Some(verified("carol", "corpassist")),
            server: "docs".into(),
            method: method.into(),
            list: Some(filter_list_request::List::Result(text.clone().into_bytes())),
            ..FilterListRequest::default()
        };
        let r = c
            .filter_list(trusted(request))
            .await
            .expect("an answer")
            .into_inner();
        assert_eq!(
            r.deny_kind,
            DenyKind::InvalidRequest as i32,
            "{method} {text}: {r:?}"
        );
        assert!(
            r.result.is_empty() && r.allowed.is_empty() && r.denied.is_empty(),
            "{method} {text}: {r:?}"
        );
        assert!(r.error.is_some_and(|e| e.code == -32600), "{method} {text}");
    }
}
