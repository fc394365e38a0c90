//! Self-test of the end-to-end harness (`tests/e2e/harness.rs`): the real Envoy, the real
//! MCP servers and client, and the mcp-authz process helper work, before any ext_authz test
//! relies on them. Needs the venv of `scripts/setup-python` (`scripts/test` makes it).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{
    ClientOptions, Envoy, McpServer, Protocol, authz, demo_config, e2e_dir, envoy_example,
    envoy_vars, run_client, run_client_opts, run_client_with, step_text, substitute,
    validate_envoy_config, venv,
};
use crate::support::http::raw_post;
use crate::support::process::{listening_line, unused_port};
use crate::support::tokens::demo_token;
use crate::support::{reference_policies, repo};

fn sample_vars() -> Vec<(&'static str, String)> {
    vec![
        ("LISTEN_PORT", "10000".to_owned()),
        ("ADMIN_PORT", "9901".to_owned()),
        ("AUTHZ_GRPC_PORT", "9191".to_owned()),
        ("AUTHZ_HTTP_PORT", "8181".to_owned()),
        ("DOCS_PORT", "8001".to_owned()),
        ("PROJECTS_PORT", "8002".to_owned()),
    ]
}

fn passthrough() -> std::path::PathBuf {
    e2e_dir().join("envoy-passthrough.yaml")
}

#[test]
fn envoy_configs_pass_envoy_validate() {
    for template in [
        envoy_example("envoy-grpc.yaml"),
        envoy_example("envoy-http.yaml"),
        passthrough(),
    ] {
        match validate_envoy_config(&template, &sample_vars()) {
            Ok(out) => assert!(
                !out.contains("Deprecated field"),
                "{} uses a deprecated field:\n{out}",
                template.display()
            ),
            Err(out) => panic!("{} does not validate:\n{out}", template.display()),
        }
    }
    // Validation is not vacuous: a wrong field is refused.
    let broken = tempfile::NamedTempFile::new().expect("temp file");
    let text = std::fs::read_to_string(envoy_example("envoy-grpc.yaml"))
        .expect("read")
        .replace("failure_mode_allow: false", "failure_mode_allow: nope");
    std::fs::write(broken.path(), text).expect("write");
    assert!(validate_envoy_config(broken.path(), &sample_vars()).is_err());
    // A placeholder without a value is an error naming it, not a silent empty port.
    let err = substitute("port_value: ${DOCS_PORT}\n", &[]).expect_err("missing var");
    assert!(err.contains("DOCS_PORT"), "{err}");
    // Placeholders in comments stay as they are.
    assert_eq!(
        substitute("# uses ${X}\nport: ${X}\n", &[("X", "1".to_owned())]).as_deref(),
        Ok("# uses ${X}\nport: 1\n")
    );
}

#[test]
fn real_client_through_passthrough_envoy_reaches_both_real_servers() {
    let started = Instant::now();
    let docs = McpServer::start("docs");
    let projects = McpServer::start("projects");
    let envoy = Envoy::start(
        &passthrough(),
        &envoy_vars(None, Some(&docs), Some(&projects)),
    );

    let report = run_client(
        &envoy.url("/docs/mcp"),
        None,
        json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "read_resource", "uri": "docs://titan/q1-strategy"},
            {"op": "get_prompt", "name": "executive_summary", "arguments": {"audience": "the board"}},
        ]),
    );
    assert_eq!(report["ok"], true, "{report:#}\n{}", envoy.log());
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["initialize"]["server"], "docs");
    assert_eq!(
        report["steps"][0]["result"]["tools"],
        json!([
            "delete_document",
            "get_document",
            "search_documents",
            "summarize_document"
        ])
    );
    assert!(step_text(&report, 1).starts_with("Project Titan Q1 strategy:"));
    assert_eq!(step_text(&report, 2), step_text(&report, 1));
    assert_eq!(
        step_text(&report, 3),
        "Write an executive summary of the Project Titan Q1 strategy for the board."
    );

    let report = run_client(
        &envoy.url("/projects/mcp"),
        None,
        json!([{"op": "call_tool", "name": "get_project_lead", "arguments": {"project": "titan"}}]),
    );
    assert_eq!(
        step_text(&report, 0),
        "Project Titan is led by Dana Whitfield",
        "{report:#}"
    );
    assert_eq!(report["steps"][0]["http_status"], 200);

    // The request logs: the whole session reached each server, prefix rewritten to /mcp.
    let methods = docs.jsonrpc_methods();
    assert_eq!(
        methods,
        [
            "initialize",
            "notifications/initialized",
            "tools/list",
            "tools/call",
            "resources/read",
            "prompts/get"
        ],
        "{:#?}",
        docs.requests()
    );
    let requests = projects.requests();
    assert!(
        requests.iter().all(|r| r["path"] == "/mcp"),
        "{requests:#?}"
    );
    let call = requests
        .iter()
        .find(|r| r["jsonrpc_method"] == "tools/call")
        .expect("tools/call reached projects");
    assert_eq!(call["name"], "get_project_lead");
    assert_eq!(call["http_method"], "POST");
    assert!(call["headers"]["mcp-session-id"].is_string(), "{call:#}");
    // The SSE GET and the closing DELETE went through Envoy too.
    assert!(
        requests.iter().any(|r| r["http_method"] == "GET"),
        "{requests:#?}"
    );
    assert!(
        requests.iter().any(|r| r["http_method"] == "DELETE"),
        "{requests:#?}"
    );
    // The 2026-07-28 client (server/discover, stateless) through Envoy: the Mcp-Method and
    // Mcp-Name headers reach the server.
    let report = run_client_opts(
        &envoy.url("/projects/mcp"),
        None,
        json!([{"op": "call_tool", "name": "find_project", "arguments": {"name": "Project Titan"}}]),
        &ClientOptions {
            protocol: Protocol::Discover,
            ..ClientOptions::default()
        },
    );
    assert_eq!(
        report["initialize"]["protocol_version"], "2026-07-28",
        "{report:#}"
    );
    assert_eq!(step_text(&report, 0), "Found Project Titan (key titan)");
    let modern = projects
        .requests()
        .into_iter()
        .find(|r| r["name"] == "find_project")
        .expect("find_project reached projects");
    assert_eq!(modern["headers"]["mcp-method"], "tools/call", "{modern:#}");
    assert_eq!(modern["headers"]["mcp-name"], "find_project", "{modern:#}");

    // Nothing of the projects session went to docs, and the other way round.
    assert!(
        docs.requests()
            .iter()
            .all(|r| r["name"] != "get_project_lead")
    );
    assert!(
        !projects
            .jsonrpc_methods()
            .contains(&"resources/read".to_owned())
    );
    eprintln!("passthrough session test: {:?}", started.elapsed());
}

/// How the 2.x client reports what mcp-authz will answer (canned by Envoy here): a 403
/// with a JSON-RPC error body, and a 401 with `WWW-Authenticate`.
#[test]
fn real_client_reports_403_and_401_with_status_and_details() {
    let envoy = Envoy::start(&passthrough(), &envoy_vars(None, None, None));

    let denied = run_client(
        &envoy.url("/denied/mcp"),
        Some("a.b.c"),
        json!([{"op": "list_tools"}]),
    );
    assert_eq!(denied["exit_code"], 2, "{denied:#}");
    assert_eq!(denied["ok"], false);
    let err = &denied["initialize"]["error"];
    assert_eq!(err["type"], "MCPError", "{denied:#}");
    assert_eq!(err["http_status"], 403);
    assert_eq!(err["code"], -32001, "the body's JSON-RPC code is surfaced");
    assert_eq!(err["message"], "denied by policy (canned)");
    assert_eq!(err["content_type"], "application/json");
    assert_eq!(denied["error"], *err);
    assert!(denied["steps"].as_array().is_some_and(Vec::is_empty));

    let unauthenticated = run_client(&envoy.url("/unauthenticated/mcp"), None, json!([]));
    assert_eq!(unauthenticated["exit_code"], 2, "{unauthenticated:#}");
    let err = &unauthenticated["initialize"]["error"];
    assert_eq!(err["http_status"], 401, "{unauthenticated:#}");
    assert_eq!(
        err["code"], -32603,
        "a non-JSON-RPC body becomes INTERNAL_ERROR"
    );
    assert_eq!(
        err["www_authenticate"],
        "Bearer realm=\"mcp-mesh\", error=\"invalid_token\""
    );
    eprintln!("403 report: {denied}");
    eprintln!("401 report: {unauthenticated}");
}

/// A deny in the middle of a session (canned by an Envoy RBAC rule on the MCP filter's
/// metadata, answered as mcp-authz will: 403 and a JSON-RPC error): the step reports it,
/// the session goes on, and the request log proves the call never reached the server.
#[test]
fn mid_session_deny_is_a_step_error_and_never_reaches_the_server() {
    let docs = McpServer::start("docs");
    let envoy = Envoy::start(&passthrough(), &envoy_vars(None, Some(&docs), None));
    for protocol in [Protocol::Handshake, Protocol::Discover] {
        mid_session_deny(&envoy, &docs, protocol);
    }
}

fn mid_session_deny(envoy: &Envoy, docs: &McpServer, protocol: Protocol) {
    let report = run_client_opts(
        &envoy.url("/docs/mcp"),
        None,
        json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "call_tool", "name": "summarize_document", "arguments": {"document_id": "titan/q1-strategy"}},
        ]),
        &ClientOptions {
            protocol,
            ..ClientOptions::default()
        },
    );
    assert_eq!(report["exit_code"], 0, "{protocol:?}: {report:#}");
    assert_eq!(report["ok"], false, "one step failed");
    let denied = &report["steps"][1];
    assert_eq!(denied["ok"], false, "{report:#}");
    assert_eq!(denied["http_status"], 403);
    assert_eq!(denied["error"]["http_status"], 403);
    assert_eq!(denied["error"]["code"], -32001);
    assert_eq!(
        denied["error"]["message"],
        "delete_document denied (canned)"
    );
    assert_eq!(
        step_text(&report, 2),
        "Summary of Project Titan Q1 strategy: ship the MCP gateway to every business unit."
    );
    let requests = docs.requests();
    assert!(
        requests.iter().all(|r| r["name"] != "delete_document"),
        "the denied call reached the server: {requests:#?}"
    );
    assert!(requests.iter().any(|r| r["name"] == "summarize_document"));
}

#[test]
fn failures_end_fast_and_never_hang() {
    let mut docs = McpServer::start("docs");
    let envoy = Envoy::start(&passthrough(), &envoy_vars(None, Some(&docs), None));
    let ok = run_client(&envoy.url("/docs/mcp"), None, json!([{"op": "ping"}]));
    assert_eq!(ok["ok"], true, "{ok:#}");

    // The MCP server is gone: Envoy answers 503 and the client says so at once.
    docs.stop();
    let t = Instant::now();
    let gone = run_client(&envoy.url("/docs/mcp"), None, json!([{"op": "list_tools"}]));
    assert_eq!(gone["exit_code"], 2, "{gone:#}");
    assert_eq!(gone["initialize"]["error"]["http_status"], 503, "{gone:#}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // Back on the same port: Envoy reaches it again.
    docs.restart();
    let back = run_client(&envoy.url("/docs/mcp"), None, json!([{"op": "list_tools"}]));
    assert_eq!(back["ok"], true, "{back:#}\n{}", docs.log());

    // No Envoy at all: a connection error, exit 2, quickly.
    let t = Instant::now();
    let port = unused_port();
    let absent = run_client(
        &format!("http://127.0.0.1:{port}/docs/mcp"),
        None,
        json!([]),
    );
    assert_eq!(absent["exit_code"], 2, "{absent:#}");
    assert_eq!(
        absent["initialize"]["error"]["type"], "ConnectError",
        "{absent:#}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // A peer that accepts and never answers: the client's own timeout ends it.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = black_hole.local_addr().expect("addr");
    let t = Instant::now();
    let stuck = run_client_with(
        &format!("http://{addr}/mcp"),
        None,
        json!([]),
        Duration::from_secs(2),
    );
    assert_ne!(stuck["exit_code"], 0, "{stuck:#}");
    assert_eq!(stuck["ok"], false);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    drop(black_hole);
}

/// The real ext_authz configs, before mcp-authz serves ext_authz: with nothing at the
/// authorization service's port, Envoy fails closed (503) and nothing reaches the server.
#[test]
fn ext_authz_configs_fail_closed_without_the_authorization_service() {
    let docs = McpServer::start("docs");
    for template in ["envoy-grpc.yaml", "envoy-http.yaml"] {
        let envoy = Envoy::start(
            &envoy_example(template),
            &envoy_vars(None, Some(&docs), None),
        );
        // The MCP filter runs before ext_authz, and ext_authz before the router.
        let (_, dump) = envoy.admin_get("/config_dump?resource=static_listeners");
        let dump: Value = serde_json::from_str(&dump).expect("config_dump is JSON");
        assert_eq!(
            http_filter_names(&dump),
            [
                "envoy.filters.http.mcp",
                "envoy.filters.http.ext_authz",
                "envoy.filters.http.router"
            ],
            "{template}"
        );

        let report = run_client(
            &envoy.url("/docs/mcp"),
            Some(&demo_token("erin")),
            json!([{"op": "list_tools"}]),
        );
        assert_eq!(report["exit_code"], 2, "{template}: {report:#}");
        assert_eq!(
            report["initialize"]["error"]["http_status"],
            503,
            "{template}: {report:#}\n{}",
            envoy.log()
        );
        let (_, stats) = envoy.admin_get("/stats?filter=ext_authz");
        assert!(
            stats
                .lines()
                .any(|l| l.contains("ext_authz.error: ") && !l.ends_with(": 0")),
            "{template}: no ext_authz error counted:\n{stats}"
        );
    }
    assert!(
        docs.requests().is_empty(),
        "a request reached the server: {:#?}",
        docs.requests()
    );
}

/// The names of the first `http_filters` list found in an Envoy config dump.
fn http_filter_names(v: &Value) -> Vec<String> {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(filters)) = map.get("http_filters") {
                return filters
                    .iter()
                    .filter_map(|f| f["name"].as_str().map(str::to_owned))
                    .collect();
            }
            map.values()
                .map(http_filter_names)
                .find(|n| !n.is_empty())
                .unwrap_or_default()
        }
        Value::Array(items) => items
            .iter()
            .map(http_filter_names)
            .find(|n| !n.is_empty())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

#[test]
fn raw_post_sends_hand_made_requests() {
    let docs = McpServer::start("docs");
    let envoy = Envoy::start(&passthrough(), &envoy_vars(None, Some(&docs), None));
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let init = json!({"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let r = raw_post(
        &envoy.url("/docs/mcp"),
        &headers,
        init.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("mcp-session-id").is_some(), "{r:?}");
    let body: Value = r
        .json()
        .unwrap_or_else(|| panic!("no JSON in {:?}", r.text()));
    assert_eq!(body["id"], 7);
    assert_eq!(body["result"]["serverInfo"]["name"], "docs");

    // A body that is not JSON reaches the server as it is, and the log says so.
    let r = raw_post(
        &envoy.url("/docs/mcp"),
        &headers,
        b"{\"jsonrpc\": \"2.0\", \"id\"",
    );
    assert_eq!(r.status, 400, "{r:?}");
    let last = docs.requests().pop().expect("logged");
    assert!(last["body_error"].is_string(), "{last:#}");

    // A batch is logged element by element.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "delete_document", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    ]);
    let _ = raw_post(
        &envoy.url("/docs/mcp"),
        &headers,
        batch.to_string().as_bytes(),
    );
    let last = docs.requests().pop().expect("logged");
    assert_eq!(last["batch"][0]["name"], "delete_document", "{last:#}");
    assert_eq!(last["batch"][1]["jsonrpc_method"], "tools/list", "{last:#}");
}

#[test]
fn mcp_authz_listening_lines_are_parsed_in_every_log_format() {
    let addr = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
    assert_eq!(
        listening_line("2026-11-25T13:29:06.98Z  INFO listening listener=gRPC addr=127.0.0.1:9191"),
        Some(("gRPC".to_owned(), addr("127.0.0.1:9191")))
    );
    assert_eq!(
        listening_line(
            "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening \u{1b}[3mlistener\u{1b}[0m\u{1b}[2m=\u{1b}[0mHTTP \u{1b}[3maddr\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:8181"
        ),
        Some(("HTTP".to_owned(), addr("127.0.0.1:8181")))
    );
    assert_eq!(
        listening_line(
            r#"{"level":"INFO","fields":{"message":"listening","listener":"HTTP","addr":"127.0.0.1:1"}}"#
        ),
        Some(("HTTP".to_owned(), addr("127.0.0.1:1")))
    );
    assert_eq!(listening_line("INFO policies loaded dir=policies"), None);
}

#[test]
fn mcp_authz_helper_starts_stops_and_restarts_on_the_same_ports() {
    let mut authz = authz(&reference_policies(), Some(&demo_config())).start();
    let http = authz.http_addr();
    assert!(http.ip().is_loopback() && http.port() != 0);
    assert_eq!(
        authz.get("/readyz").map(|r| r.0),
        Some(200),
        "{}",
        authz.log_text()
    );
    assert_ne!(authz.grpc_port(), http.port());
    authz.stop();
    assert!(authz.get("/readyz").is_none(), "still answering after stop");
    authz.restart();
    assert_eq!(authz.http_addr(), http);
    assert_eq!(
        authz.get("/readyz").map(|r| r.0),
        Some(200),
        "{}",
        authz.log_text()
    );
    assert!(authz.log_text().contains("--- restart ---"));
}

/// Without the Python environment, the end-to-end tests end with one clear message that
/// says to run `scripts/test`: no panic, no message per test.
#[test]
fn a_missing_venv_is_one_clear_message() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "e2e_harness::envoy_configs_pass_envoy_validate",
            "e2e_harness::real_client_reports_403_and_401_with_status_and_details",
            "e2e_harness::failures_end_fast_and_never_hang",
        ])
        .env("MCP_AUTHZ_E2E_VENV", empty.path())
        .output()
        .expect("run the test binary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(stderr.matches("`scripts/test`").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&empty.path().join("bin/python").display().to_string()),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stdout.contains("panicked"),
        "{stdout}\n{stderr}"
    );
}

/// Run `examples/envoy/demo.sh` with the built binary, the test venv and free ports;
/// `env` is added to its environment (the developer's `MCP_AUTHZ_*` are not passed).
/// Its exit code, its output and how long it took.
fn run_demo(env: &[(&str, &str)]) -> (Option<i32>, String, Duration) {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(repo().join("examples/envoy/demo.sh"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MCP_AUTHZ_") || k.starts_with("DEMO_") {
            cmd.env_remove(k);
        }
    }
    for name in [
        "DEMO_ENVOY_PORT",
        "DEMO_ENVOY_ADMIN_PORT",
        "DEMO_AUTHZ_GRPC_PORT",
        "DEMO_AUTHZ_HTTP_PORT",
        "DEMO_DOCS_PORT",
        "DEMO_PROJECTS_PORT",
    ] {
        cmd.env(name, unused_port().to_string());
    }
    cmd.env("DEMO_VENV", venv())
        .env("DEMO_MCP_AUTHZ_BIN", env!("CARGO_BIN_EXE_mcp-authz"))
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let child = cmd.spawn().expect("run demo.sh");
    let out = child.wait_with_output().expect("demo output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text, started.elapsed())
}

/// The demo runs end to end on an existing virtualenv and a given binary, and a process
/// it started that exits makes it stop at once with that process's log.
#[test]
fn the_demo_runs_and_fails_fast() {
    let (code, out, _) = run_demo(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("ALLOW get_document"), "{out}");
    assert!(out.contains("DENY  delete_document: HTTP 403"), "{out}");
    assert!(
        out.contains("reached the docs server: ['get_document']"),
        "{out}"
    );
    // mcp-authz refuses a bad setting and exits 2: the demo says so at once, with its log
    // (it used to wait 30 s in silence).
    let (code, out, took) = run_demo(&[("MCP_AUTHZ_CACHE_TTL_SECS", "soon")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("mcp-authz exited (status 2)"), "{out}");
    assert!(out.contains("MCP_AUTHZ_CACHE_TTL_SECS"), "{out}");
    assert!(took < Duration::from_secs(20), "{took:?}: {out}");
    // The old name of the binary override is refused with its new name.
    let (code, out, _) = run_demo(&[("MCP_AUTHZ_BIN", "/nonexistent")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("DEMO_MCP_AUTHZ_BIN"), "{out}");
}
