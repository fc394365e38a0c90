//! Real Envoy (ext_authz over gRPC and over HTTP) in front of real MCP servers,
//! driven by the real MCP client and by raw HTTP, with mcp-authz deciding on the
//! reference policies: in-process (`support::inproc::Service`), and as a process where
//! it is stopped and restarted on the same ports.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    AuthzPorts, Envoy, McpServer, authz, envoy_example, envoy_vars, run_client, step_text,
};
use crate::support::http::raw_post;
use crate::support::inproc::Service;
use crate::support::process::Server;
use crate::support::tokens::{AUDIENCE, ISSUER, TestKey, now};
use crate::support::{config, inproc, poll, reference_policies};

struct Issuer {
    key: TestKey,
    dir: tempfile::TempDir,
}

impl Issuer {
    /// A token issuer (test keys) and an mcp-authz configuration trusting it, telling
    /// denied clients the full reason (`deny_detail = "full"`): these tests read which
    /// policy or rule denied a call in what the client receives.
    fn new() -> Issuer {
        Issuer::telling("full")
    }

    /// [`Issuer::new`] with `decisions.deny_detail = detail`.
    fn telling(detail: &str) -> Issuer {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = TestKey::rsa(1, "e2e");
        config::write(
            dir.path(),
            &[
                &config::test_issuer(dir.path(), &key),
                "[decision_log]\nenabled = false\n",
                &format!("[decisions]\ndeny_detail = \"{detail}\"\n"),
            ],
        );
        Issuer { key, dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("mcp-authz.toml")
    }

    /// A token for `user` (with `groups`) through CorpAssist.
    fn token(&self, user: &str, groups: &[&str]) -> String {
        self.key
            .token(json!({ "sub": user, "azp": "corpassist", "groups": groups }))
    }
}

/// mcp-authz of a [`Mesh`].
enum Authz {
    InProcess(Service),
    /// A process, for a test that stops and restarts it.
    Process(Server),
}

impl Authz {
    fn ports(&self) -> AuthzPorts {
        match self {
            Authz::InProcess(s) => s.into(),
            Authz::Process(s) => s.into(),
        }
    }

    fn log_text(&self) -> String {
        match self {
            Authz::InProcess(s) => s.log_text(),
            Authz::Process(s) => s.log_text(),
        }
    }

    fn process(&mut self) -> &mut Server {
        match self {
            Authz::Process(s) => s,
            Authz::InProcess(_) => panic!("mcp-authz runs in-process here"),
        }
    }
}

struct Mesh {
    issuer: Issuer,
    authz: Authz,
    docs: McpServer,
    projects: McpServer,
    envoy: Envoy,
}

/// Envoy configured by `template`, the MCP servers, mcp-authz in-process.
fn mesh(template: &str) -> Mesh {
    mesh_with(template, |config| {
        Authz::InProcess(Service::start(&reference_policies(), Some(config)))
    })
}

/// [`mesh`] with mcp-authz as a process.
fn mesh_with_process(template: &str) -> Mesh {
    mesh_with(template, |config| {
        Authz::Process(authz(&reference_policies(), Some(config)).start())
    })
}

fn mesh_with(template: &str, start: impl FnOnce(&std::path::Path) -> Authz) -> Mesh {
    mesh_of(Issuer::new(), template, start)
}

/// [`mesh`] whose mcp-authz tells denied clients `detail` (`decisions.deny_detail`).
fn mesh_telling(template: &str, detail: &str) -> Mesh {
    mesh_of(Issuer::telling(detail), template, |config| {
        Authz::InProcess(Service::start(&reference_policies(), Some(config)))
    })
}

fn mesh_of(issuer: Issuer, template: &str, start: impl FnOnce(&std::path::Path) -> Authz) -> Mesh {
    let authz = start(&issuer.config());
    let docs = McpServer::start("docs");
    let projects = McpServer::start("projects");
    let envoy = Envoy::start(
        &envoy_example(template),
        &envoy_vars(Some(authz.ports()), Some(&docs), Some(&projects)),
    );
    Mesh {
        issuer,
        authz,
        docs,
        projects,
        envoy,
    }
}

fn tool_calls(server: &McpServer, name: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r["jsonrpc_method"] == "tools/call" && r.to_string().contains(name))
        .count()
}

fn error_of(report: &Value, step: usize) -> &Value {
    assert_eq!(
        report["steps"][step]["ok"], false,
        "step {step} should fail: {report:#}"
    );
    &report["steps"][step]["error"]
}

/// The allow/deny checks of a session through Envoy at `url`.
fn session_checks(mesh: &Mesh, url: &str) {
    let erin = mesh.issuer.token("erin", &["engineering"]);
    let report = run_client(
        url,
        Some(&erin),
        json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "max_results": 20}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "max_results": 500}},
        ]),
    );
    // initialize, notifications/initialized and tools/list pass.
    assert_eq!(
        report["initialize"]["ok"],
        true,
        "{report:#}\n{}",
        mesh.authz.log_text()
    );
    assert_eq!(report["steps"][0]["ok"], true, "{report:#}");
    // An allowed tools/call returns the tool's result.
    assert!(
        step_text(&report, 1).starts_with("Project Titan Q1 strategy:"),
        "{report:#}"
    );
    // A denied one is a 403 with a JSON-RPC error, and never reaches the server.
    let denied = error_of(&report, 2);
    assert_eq!(denied["http_status"], 403, "{report:#}");
    assert_eq!(denied["code"], -32003);
    assert!(
        denied["message"]
            .as_str()
            .unwrap_or_default()
            .contains("corpassist-never-deletes"),
        "{denied}"
    );
    assert_eq!(denied["content_type"], "application/json");
    assert_eq!(tool_calls(&mesh.docs, "delete_document"), 0);
    // A condition on a tool argument allows one value and denies another.
    assert_eq!(report["steps"][3]["ok"], true, "{report:#}");
    assert_eq!(error_of(&report, 4)["http_status"], 403);
    assert!(
        mesh.docs
            .jsonrpc_methods()
            .contains(&"initialize".to_owned())
    );
    assert!(
        mesh.docs
            .jsonrpc_methods()
            .contains(&"notifications/initialized".to_owned())
    );
}

/// Typed tool arguments through Envoy: `since` is a datetime of `search_documents`
/// (an RFC 3339 offset read as Cedar's), a condition on it denies a contractor the
/// archive, the wrong type and an argument the tool does not declare are denied, and
/// none of the denied calls reaches the server.
fn typed_checks(mesh: &Mesh, url: &str) {
    let carol = mesh.issuer.token("carol", &["contractors"]);
    let before = tool_calls(&mesh.docs, "search_documents");
    let report = run_client(
        url,
        Some(&carol),
        json!([
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "since": "2025-06-01T00:00:00Z"}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "since": "2026-01-01T04:00:00+02:00"}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "since": 30}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "limit": 5}},
        ]),
    );
    let archive = error_of(&report, 0);
    assert_eq!(archive["http_status"], 403, "{report:#}");
    assert!(
        archive["message"]
            .as_str()
            .unwrap_or_default()
            .contains("contractors-no-document-archive"),
        "{archive}"
    );
    assert!(
        step_text(&report, 1).starts_with("1 result(s) for 'titan'"),
        "{report:#}"
    );
    assert_eq!(error_of(&report, 2)["http_status"], 403, "{report:#}");
    let undeclared = error_of(&report, 3);
    assert_eq!(undeclared["http_status"], 403, "{report:#}");
    assert!(
        undeclared["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not declare the argument `limit`"),
        "{undeclared}"
    );
    assert_eq!(tool_calls(&mesh.docs, "search_documents"), before + 1);
}

/// No token, an expired one, one for another audience: 401 with `WWW-Authenticate`.
fn token_checks(mesh: &Mesh, url: &str) {
    let expired = mesh
        .issuer
        .key
        .token(json!({ "sub": "erin", "groups": ["engineering"], "exp": now() - 3600 }));
    let wrong_audience = mesh
        .issuer
        .key
        .token(json!({ "sub": "erin", "aud": "someone-else" }));
    for (label, token) in [
        ("none", None),
        ("expired", Some(expired)),
        ("audience", Some(wrong_audience)),
    ] {
        let before = mesh.docs.requests().len();
        let report = run_client(url, token.as_deref(), json!([]));
        let error = &report["initialize"]["error"];
        assert_eq!(error["http_status"], 401, "{label}: {report:#}");
        let challenge = error["www_authenticate"].as_str().unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm="),
            "{label}: {challenge}"
        );
        if token.is_some() {
            assert!(
                challenge.contains("error=\"invalid_token\""),
                "{label}: {challenge}"
            );
        }
        assert_eq!(
            mesh.docs.requests().len(),
            before,
            "{label}: a request reached the server"
        );
    }
}

/// Malformed, oversized and batched bodies by raw HTTP.
fn raw_checks(mesh: &Mesh, url: &str) {
    let erin = format!("Bearer {}", mesh.issuer.token("erin", &["engineering"]));
    let headers = [
        ("authorization", erin.as_str()),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let before = mesh.docs.requests().len();
    let malformed = raw_post(
        url,
        &headers,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"#,
    );
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    assert_eq!(
        malformed.json().expect("JSON-RPC error")["error"]["code"],
        -32700
    );
    // Larger than what Envoy forwards for authorization: the body seen is partial.
    let mut big = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"search_documents","arguments":{"query":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 1_200_000));
    big.extend(br#""}}}"#);
    // Envoy may answer before the client has sent the whole body and close the
    // connection; the client's unsent bytes then reset it, and the answer can be
    // lost on the way (status 0). Either way the request is refused: nothing
    // reaches the server (checked below).
    let refused = |status: u16| status == 400 || status == 413 || status == 0;
    let truncated = raw_post(url, &headers, &big);
    assert!(
        refused(truncated.status),
        "{} {}",
        truncated.status,
        truncated.text()
    );
    // A client's own partial-body marker never makes a cut body whole, whether
    // Envoy joins it with its own or sends both.
    for forged in [&["false"][..], &["false", "false"], &[" false"]] {
        let mut h = headers.to_vec();
        h.extend(forged.iter().map(|v| ("x-envoy-auth-partial-body", *v)));
        let r = raw_post(url, &h, &big);
        assert!(refused(r.status), "{forged:?}: {} {}", r.status, r.text());
    }
    // A 2025-03-26 batch with one forbidden call.
    let batch = br#"[{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}},{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"delete_document","arguments":{"document_id":"x"}}}]"#;
    let batched = raw_post(url, &headers, batch);
    assert_eq!(batched.status, 403, "{}", batched.text());
    assert_eq!(
        mesh.docs.requests().len(),
        before,
        "a refused request reached the server"
    );
}

/// What a client may not say through Envoy: argument names that read as declared
/// ones, and a token that names no application.
fn forged_checks(mesh: &Mesh, url: &str) {
    let erin = mesh.issuer.token("erin", &["engineering"]);
    let before = tool_calls(&mesh.docs, "search_documents");
    let report = run_client(
        url,
        Some(&erin),
        json!([
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "max_results": 5}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "MAX_RESULTS": 500}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "maxResults": 500}},
            {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "max_re\u{17f}ults": 500}},
        ]),
    );
    assert_eq!(report["steps"][0]["ok"], true, "{report:#}");
    for step in 1..=3 {
        assert_eq!(error_of(&report, step)["http_status"], 403, "{report:#}");
    }
    assert_eq!(tool_calls(&mesh.docs, "search_documents"), before + 1);
    // A token without `azp`: the request names no application.
    let lone = mesh
        .issuer
        .key
        .token(json!({ "sub": "dave", "azp": null, "groups": ["doc-admins", "engineering"] }));
    let report = run_client(url, Some(&lone), json!([]));
    assert_eq!(
        report["initialize"]["error"]["http_status"], 403,
        "{report:#}"
    );
}

/// Resource URI aliases: through Envoy, from the real MCP
/// client, every spelling of the finance budget meets the contractors' forbid,
/// and a URI without a normal form is refused. None reaches the server.
fn resource_alias_checks(mesh: &Mesh, url: &str) {
    let carol = mesh.issuer.token("carol", &["contractors"]);
    let aliases = [
        "docs://finance/budget-2026",
        "docs://finance/titan/../budget-2026",
        "DOCS://finance/budget-2026",
        "docs://finance/x/%2e%2e/budget-2026",
        "docs://FINANCE/./%62udget-2026",
    ];
    let refused = [
        "docs://@finance/budget-2026",
        "docs://finance:/budget-2026",
        "docs://finance/x%2F..%2Fbudget-2026",
    ];
    let mut steps = vec![json!({"op": "read_resource", "uri": "docs://titan/q1-strategy"})];
    steps.extend(
        aliases
            .iter()
            .chain(&refused)
            .map(|uri| json!({"op": "read_resource", "uri": uri})),
    );
    let reads_before = mesh
        .docs
        .requests()
        .iter()
        .filter(|r| r["jsonrpc_method"] == "resources/read")
        .count();
    let report = run_client(url, Some(&carol), Value::Array(steps));
    assert_eq!(report["initialize"]["ok"], true, "{report:#}");
    // Another document is read.
    assert!(
        step_text(&report, 0).contains("Titan"),
        "{report:#}\n{}",
        mesh.authz.log_text()
    );
    for (i, alias) in aliases.iter().enumerate() {
        let denied = error_of(&report, i + 1);
        assert_eq!(denied["http_status"], 403, "{alias}: {report:#}");
        assert!(
            denied["message"]
                .as_str()
                .unwrap_or_default()
                .contains("contractors-no-finance-resources"),
            "{alias}: {denied}"
        );
    }
    for (i, uri) in refused.iter().enumerate() {
        let error = error_of(&report, aliases.len() + i + 1);
        assert_eq!(error["http_status"], 400, "{uri}: {report:#}");
        assert!(
            error["message"]
                .as_str()
                .unwrap_or_default()
                .contains("`params.uri` is refused"),
            "{uri}: {error}"
        );
    }
    // Only the titan read reached the server.
    let reads: Vec<Value> = mesh
        .docs
        .requests()
        .into_iter()
        .filter(|r| r["jsonrpc_method"] == "resources/read")
        .collect();
    assert_eq!(reads.len(), reads_before + 1, "{reads:#?}");
    assert!(
        !reads.iter().any(|r| r.to_string().contains("budget")),
        "{reads:#?}"
    );
}

#[test]
fn grpc_ext_authz_in_front_of_real_mcp_servers() {
    let mesh = mesh("envoy-grpc.yaml");
    let url = mesh.envoy.url("/docs/mcp");
    session_checks(&mesh, &url);
    typed_checks(&mesh, &url);
    token_checks(&mesh, &url);
    raw_checks(&mesh, &url);
    forged_checks(&mesh, &url);
    resource_alias_checks(&mesh, &url);
    // The scenario's second server, through the same Envoy: the route names it.
    let report = run_client(
        &mesh.envoy.url("/projects/mcp"),
        Some(&mesh.issuer.token("erin", &["engineering"])),
        json!([
            {"op": "call_tool", "name": "get_project_lead", "arguments": {"project": "titan"}},
            {"op": "call_tool", "name": "update_issue", "arguments": {"issue_id": "T-1", "status": "done"}},
        ]),
    );
    assert_eq!(
        step_text(&report, 0),
        "Project Titan is led by Dana Whitfield"
    );
    assert_eq!(error_of(&report, 1)["http_status"], 403);
    assert_eq!(tool_calls(&mesh.projects, "update_issue"), 0);
    // The upstream sees the decision id and the verified identity, and a client
    // cannot inject them.
    let erin = format!("Bearer {}", mesh.issuer.token("erin", &["engineering"]));
    let reply = raw_post(
        &mesh.envoy.url("/docs/mcp"),
        &[
            ("authorization", erin.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("x-mcp-authz-user", "mallory"),
            ("x-mcp-authz-decision-id", "forged"),
        ],
        br#"{"jsonrpc":"2.0","id":9,"method":"ping"}"#,
    );
    // Allowed: it reaches the server (which may refuse a ping outside a session).
    assert!(
        ![401, 403, 503].contains(&reply.status),
        "{} {}",
        reply.status,
        reply.text()
    );
    let seen = mesh.docs.requests();
    let last = seen
        .iter()
        .rev()
        .find(|r| r["jsonrpc_method"] == "ping")
        .expect("the ping reached the server");
    let headers = &last["headers"];
    assert_eq!(headers["x-mcp-authz-user"], "erin", "{last}");
    assert_eq!(headers["x-mcp-authz-application"], "corpassist", "{last}");
    let id = headers["x-mcp-authz-decision-id"]
        .as_str()
        .expect("a decision id");
    assert_ne!(id, "forged");
    assert_eq!(id.len(), 36, "{id}");
}

#[test]
fn authz_down_is_a_503_and_traffic_resumes_after_restart() {
    let mut mesh = mesh_with_process("envoy-grpc.yaml");
    let url = mesh.envoy.url("/docs/mcp");
    let erin = mesh.issuer.token("erin", &["engineering"]);
    let ok = run_client(&url, Some(&erin), json!([{"op": "list_tools"}]));
    assert_eq!(ok["ok"], true, "{ok:#}");
    mesh.authz.process().stop();
    let before = mesh.docs.requests().len();
    let down = run_client(&url, Some(&erin), json!([{"op": "list_tools"}]));
    assert_eq!(down["initialize"]["error"]["http_status"], 503, "{down:#}");
    assert_eq!(
        mesh.docs.requests().len(),
        before,
        "a request reached the server while mcp-authz was down"
    );
    mesh.authz.process().restart();
    let back = poll(Duration::from_secs(20), || {
        let r = run_client(&url, Some(&erin), json!([{"op": "list_tools"}]));
        (r["ok"] == true).then_some(r)
    });
    assert!(
        back.is_some(),
        "traffic did not resume after mcp-authz restarted"
    );
}

#[test]
fn http_ext_authz_mode_makes_the_same_decisions() {
    let mesh = mesh("envoy-http.yaml");
    let url = mesh.envoy.url("/docs/mcp");
    session_checks(&mesh, &url);
    typed_checks(&mesh, &url);
    token_checks(&mesh, &url);
    raw_checks(&mesh, &url);
    resource_alias_checks(&mesh, &url);
}

/// The HTTP status of the session's exchange for `method` (the last one).
fn exchange_status(report: &Value, method: &str) -> Option<u64> {
    report["http"]
        .as_array()?
        .iter()
        .rev()
        .find(|x| x["jsonrpc_method"] == method)
        .and_then(|x| x["status"].as_u64())
}

/// erin's denied `delete_document` and carol's denied read of the finance budget,
/// through Envoy at `url`, as the real MCP client reports them.
fn denied_calls(mesh: &Mesh, url: &str) -> (Value, Value) {
    let erin = run_client(
        url,
        Some(&mesh.issuer.token("erin", &["engineering"])),
        json!([
            {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
        ]),
    );
    let carol = run_client(
        url,
        Some(&mesh.issuer.token("carol", &["contractors"])),
        json!([{"op": "read_resource", "uri": "docs://finance/budget-2026"}]),
    );
    assert_eq!(tool_calls(&mesh.docs, "delete_document"), 0);
    assert!(
        !mesh
            .docs
            .requests()
            .iter()
            .any(|r| r.to_string().contains("budget-2026")),
        "a denied read reached the server"
    );
    (erin, carol)
}

/// The decision id of an error the client reports: `data.decision_id`, a UUID.
fn decision_id(error: &Value) -> String {
    let id = error["data"]["decision_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(id.len(), 36, "a decision id in `data`: {error}");
    id
}

/// What the real MCP client is told of a denied call by default: a JSON-RPC error
/// (HTTP 403, `application/json`) with a generic message, no policy id, no
/// principal, and the decision id in `data` for the person to quote.
#[test]
fn a_denied_call_tells_the_client_only_the_decision_id_by_default() {
    let mesh = mesh_telling("envoy-grpc.yaml", "generic");
    let url = mesh.envoy.url("/docs/mcp");
    let (erin, carol) = denied_calls(&mesh, &url);
    for (report, method) in [(&erin, "tools/call"), (&carol, "resources/read")] {
        let error = error_of(report, 0);
        assert_eq!(error["type"], "MCPError", "{report:#}");
        assert_eq!(error["code"], -32003, "{report:#}");
        assert_eq!(
            error["message"], "forbidden: this request is not allowed",
            "{report:#}"
        );
        assert_eq!(error["http_status"], 403, "{report:#}");
        assert_eq!(error["content_type"], "application/json");
        decision_id(error);
        assert_eq!(error["data"].as_object().map(|d| d.len()), Some(1));
        let body = error["body"].as_str().unwrap_or_default();
        for secret in ["corpassist", "erin", "carol", "contractors", "policy"] {
            assert!(!body.contains(secret), "{method}: {body}");
        }
    }
}

/// `deny_detail = "not_found"`: the real MCP client is told what a server without
/// the tool or resource says. Through Envoy's gRPC ext_authz the answer has status
/// 200 (Envoy sends the denied response's status as is), like a server's own
/// JSON-RPC error; through the HTTP mode 400 (a 2xx is an allow there). Either way
/// the SDK raises the JSON-RPC error of the call, with the decision id in `data`.
#[test]
fn not_found_denials_read_as_unknown_tools_and_resources() {
    for (template, status) in [("envoy-grpc.yaml", 200), ("envoy-http.yaml", 400)] {
        let mesh = mesh_telling(template, "not_found");
        let url = mesh.envoy.url("/docs/mcp");
        let (erin, carol) = denied_calls(&mesh, &url);
        let error = error_of(&erin, 0);
        assert_eq!(error["type"], "MCPError", "{template}: {erin:#}");
        assert_eq!(error["code"], -32602, "{template}: {erin:#}");
        assert_eq!(error["message"], "Unknown tool: delete_document");
        decision_id(error);
        assert_eq!(
            exchange_status(&erin, "tools/call"),
            Some(status),
            "{erin:#}"
        );
        let error = error_of(&carol, 0);
        assert_eq!(error["code"], -32002, "{template}: {carol:#}");
        assert_eq!(error["message"], "Resource not found");
        assert_eq!(error["data"]["uri"], "docs://finance/budget-2026");
        decision_id(error);
        assert_eq!(
            exchange_status(&carol, "resources/read"),
            Some(status),
            "{carol:#}"
        );
        // The session goes on: a 200 is no "session not found".
        let after = run_client(
            &url,
            Some(&mesh.issuer.token("erin", &["engineering"])),
            json!([
                {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "x"}},
                {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
            ]),
        );
        assert!(
            step_text(&after, 1).starts_with("Project Titan Q1 strategy:"),
            "{template}: {after:#}"
        );
    }
}

// ---- Requests captured from the real Envoy, mapped by the adapter ----

mod capture {
    use std::sync::{Arc, Mutex};

    use envoy_types::ext_authz::v3::pb::{
        Authorization, CheckRequest, CheckResponse, OkHttpResponse,
    };
    use envoy_types::ext_authz::v3::{CheckResponseExt, pb::HttpResponse};

    /// An ext_authz server that records every `CheckRequest` and allows it.
    #[derive(Clone, Default)]
    pub struct Recorder(pub Arc<Mutex<Vec<CheckRequest>>>);

    #[tonic::async_trait]
    impl Authorization for Recorder {
        async fn check(
            &self,
            request: tonic::Request<CheckRequest>,
        ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
            self.0.lock().expect("lock").push(request.into_inner());
            let mut response = CheckResponse::with_status(tonic::Status::ok(""));
            response.http_response = Some(HttpResponse::OkResponse(OkHttpResponse::default()));
            Ok(tonic::Response::new(response))
        }
    }
}

#[test]
fn check_requests_captured_from_envoy_map_to_the_right_decisions() {
    use envoy_types::ext_authz::v3::pb::AuthorizationServer;
    use mcp_authz::api::ext_authz::{EnvoyAnswer, WireCheckRequest, decide, envoy_request};
    use mcp_authz::authz::Interface;
    use mcp_authz::identity::{IdentityConfig, IssuerConfig, Resolver};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // Capture: the recorder stands where mcp-authz would.
    let recorder = capture::Recorder::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server =
        tonic::transport::Server::builder().add_service(AuthorizationServer::new(recorder.clone()));
    rt.spawn(server.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    let issuer = Issuer::new();
    let docs = McpServer::start("docs");
    let mut vars = envoy_vars(None, Some(&docs), None);
    vars.retain(|(k, _)| *k != "AUTHZ_GRPC_PORT");
    vars.push(("AUTHZ_GRPC_PORT", port.to_string()));
    let envoy = Envoy::start(&envoy_example("envoy-grpc.yaml"), &vars);
    let erin = issuer.token("erin", &["engineering"]);
    let report = run_client(
        &envoy.url("/docs/mcp"),
        Some(&erin),
        json!([
            {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
        ]),
    );
    assert_eq!(report["ok"], true, "{report:#}");
    drop(envoy);
    let captured: Vec<_> = recorder.0.lock().expect("lock").clone();
    assert!(captured.len() >= 5, "{} requests captured", captured.len());

    // What the adapter reads from them, read off the wire as the gRPC mode reads them.
    let captured: Vec<WireCheckRequest> = captured.iter().map(WireCheckRequest::of).collect();
    let mapped: Vec<_> = captured
        .iter()
        .map(|c| envoy_request(c).expect("Envoy's text is UTF-8"))
        .collect();
    for m in &mapped {
        assert_eq!(
            m.server,
            Some("docs"),
            "the route's context_extensions name the server"
        );
        assert!(
            m.headers
                .get("authorization")
                .ok()
                .flatten()
                .is_some_and(|a| a.starts_with("Bearer "))
        );
        assert!(m.source_ip.is_some());
    }
    let methods: Vec<&str> = mapped.iter().map(|m| m.method).collect();
    assert!(
        methods.contains(&"POST") && methods.contains(&"GET") && methods.contains(&"DELETE"),
        "{methods:?}"
    );
    let posts: Vec<_> = mapped.iter().filter(|m| m.method == "POST").collect();
    // Envoy packed the bodies as bytes, and its MCP filter saw the same methods.
    for p in &posts {
        let body: Value = serde_json::from_slice(p.body).expect("a JSON-RPC body");
        let seen = p.mcp_filter_method.expect("the MCP filter's method");
        assert_eq!(Some(seen), body["method"].as_str());
        assert_eq!(
            p.headers.get("x-envoy-auth-partial-body"),
            Ok(Some("false"))
        );
    }

    // And the decisions mcp-authz makes on them.
    let answers: Vec<(String, EnvoyAnswer)> = rt.block_on(async {
        let mut config_issuer = IssuerConfig::new(ISSUER, vec![AUDIENCE.into()]);
        config_issuer.jwks_file = Some(issuer.dir.path().join("jwks.json"));
        config_issuer.algorithms = vec!["RS256".into()];
        config_issuer.groups_claim = Some("groups".into());
        let identity = IdentityConfig {
            issuers: vec![config_issuer],
            ..IdentityConfig::default()
        };
        let services = inproc::state(
            inproc::engine(&reference_policies()),
            Some(
                Resolver::new(&identity, issuer.dir.path())
                    .await
                    .expect("resolver"),
            ),
        );
        let mut out = Vec::new();
        for c in &captured {
            let r = envoy_request(c).expect("Envoy's text is UTF-8");
            let label = match serde_json::from_slice::<Value>(r.body) {
                Ok(b) => format!(
                    "{} {}",
                    b["method"].as_str().unwrap_or("-"),
                    b["params"]["name"].as_str().unwrap_or("")
                ),
                Err(_) => r.method.to_owned(),
            };
            out.push((
                label.trim().to_owned(),
                decide(&services, r, Interface::ExtAuthzGrpc).await,
            ));
        }
        out
    });
    let verdict = |label: &str| {
        answers
            .iter()
            .find(|(l, _)| l == label)
            .map(|(_, a)| matches!(a, EnvoyAnswer::Allow { .. }))
            .unwrap_or_else(|| {
                panic!(
                    "no captured `{label}`: {:?}",
                    answers.iter().map(|a| &a.0).collect::<Vec<_>>()
                )
            })
    };
    assert!(verdict("initialize"));
    assert!(verdict("notifications/initialized"));
    assert!(verdict("GET"));
    assert!(verdict("DELETE"));
    assert!(verdict("tools/call get_document"));
    assert!(!verdict("tools/call delete_document"));
}
