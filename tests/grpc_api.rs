//! The gateway's gRPC API against `mcp-authz serve` on ephemeral ports, with a
//! real tonic client.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Server, reference_policies};
use mcp_authz::api::proto::v1::{
    self as pb, BatchCheckRequest, CheckRequest, CheckResponse, DenyKind, FilterListRequest,
    Identity, McpRequest, Semantic, VerifiedIdentity, authorizer_client::AuthorizerClient,
    check_request, filter_list_request,
};
use prost_types::{Struct, Value as PbValue, value::Kind};
use tonic::transport::Channel;

const CALLER_SECRET: &str = "gateway-secret-for-tests-0123456789";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn token(name: &str) -> String {
    std::fs::read_to_string(root().join("examples/identity").join(name))
        .expect("demo token")
        .trim()
        .to_owned()
}

/// A config with the demo issuer and a trusted caller secret.
fn config(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("caller.secret"), CALLER_SECRET).expect("write");
    let path = dir.join("mcp-authz.toml");
    std::fs::write(
        &path,
        format!(
            "[grpc]\ntrusted_caller_token_file = \"caller.secret\"\n\n[[issuers]]\nissuer = \"https://idp.corp.example\"\naudiences = [\"mcp-mesh\"]\njwks_file = \"{}\"\nalgorithms = [\"EdDSA\"]\ngroups_claim = \"groups\"\n",
            root().join("examples/identity/jwks.json").display()
        ),
    )
    .expect("write");
    path
}

struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path());
    let server = Server::start(
        &["--config", config.to_str().expect("utf-8")],
        &reference_policies(),
    );
    Setup { _dir: dir, server }
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

async fn client(addr: &str) -> AuthorizerClient<Channel> {
    AuthorizerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
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

fn verified(user: &str, app: &str) -> Identity {
    Identity {
        verified: Some(VerifiedIdentity {
            user: user.into(),
            application: app.into(),
            groups: vec![],
        }),
        ..Identity::default()
    }
}

fn parsed(
    identity: Identity,
    server: &str,
    method: &str,
    name: &str,
    arguments: Option<Struct>,
) -> CheckRequest {
    CheckRequest {
        identity: Some(identity),
        server: server.into(),
        message: Some(check_request::Message::Mcp(McpRequest {
            method: method.into(),
            name: name.into(),
            arguments,
        })),
        ..CheckRequest::default()
    }
}

fn trusted<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "x-mcp-authz-caller-token",
        CALLER_SECRET.parse().expect("ascii"),
    );
    r
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
        bearer_token: token("erin.jwt"),
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
        bearer_token: token("frank.jwt"),
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
    // A verified identity from an untrusted caller is refused.
    let r = check(
        &mut c,
        tonic::Request::new(parsed(
            verified("alice", "corpassist"),
            "docs",
            "tools/call",
            "get_document",
            None,
        )),
    )
    .await;
    assert!(!r.allowed);
    assert_eq!(r.deny_kind, DenyKind::Unauthenticated as i32);
    assert!(r.www_authenticate.starts_with("Bearer"), "{r:?}");
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
    assert!(!check(&mut c, req).await.allowed);
    // A bad token.
    let bad = Identity {
        bearer_token: format!("{}x", token("erin.jwt")),
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
        format!("Bearer {}", token("erin.jwt"))
            .parse()
            .expect("ascii"),
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
    let result =
        std::fs::read(root().join("tests/fixtures/mcp/tools_list_result.json")).expect("fixture");
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
    common::copy_dir(&reference_policies(), dir.path());
    let mut text = String::new();
    for i in 0..1500 {
        text.push_str(&format!(
            "@id(\"generated-{i}\")\npermit (principal in Mcp::Group::\"engineering\", action == Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/generated_{i}\") when {{ context has arguments && context.arguments has query && context.arguments.query like \"*{i}*\" }};\n"
        ));
    }
    std::fs::write(dir.path().join("generated.cedar"), text).expect("write");
    let server = Server::start_grpc_only(&[], dir.path());
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
}

/// A config with a trusted caller secret and the demo issuer, more `[grpc]`
/// settings, and more sections.
fn config_with(dir: &Path, grpc: &str, sections: &str) -> std::path::PathBuf {
    let path = config(dir);
    let text = std::fs::read_to_string(&path).expect("read");
    let text = text.replacen("[grpc]\n", &format!("[grpc]\n{grpc}"), 1);
    std::fs::write(&path, format!("{text}\n{sections}")).expect("write");
    path
}

fn start_with(grpc: &str, sections: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(dir.path(), grpc, sections);
    let server = Server::start(
        &["--config", config.to_str().expect("utf-8")],
        &reference_policies(),
    );
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
#[ignore = "a measurement: cargo test --test grpc_api measure_list_load -- --ignored --nocapture"]
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
        let (status, _) = tokio::task::spawn_blocking(move || common::http_get(&addr, "/healthz"))
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
