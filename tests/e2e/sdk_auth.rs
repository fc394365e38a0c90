//! Real MCP SDK clients through real Envoy (`examples/envoy/envoy-grpc.yaml`) in front of
//! the real Python MCP server, with mcp-authz deciding: the TypeScript SDK
//! (`tests/e2e/ts/client.mjs`, `@modelcontextprotocol/sdk` pinned in
//! `tests/e2e/ts/package-lock.json`, installed by `scripts/setup-node`) beside the Python
//! SDK of the other tests.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    AuthzPorts, CLIENT_TIMEOUT, ClientOptions, Envoy, McpServer, e2e_dir, envoy_example,
    envoy_vars, run_client, run_client_opts,
};
use crate::support::config;
use crate::support::inproc::Service;
use crate::support::process::{kill, unused_port};
use crate::support::reference_policies;
use crate::support::tokens::{AuthServer, REGISTERED_CLIENT_ID, TestKey};

/// `tests/e2e/ts`, checked to hold the installed SDK and a runnable `node`: otherwise the
/// test fails saying how to install them (never a skip, in CI or not).
fn ts_dir() -> PathBuf {
    let dir = e2e_dir().join("ts");
    let sdk = dir.join("node_modules/@modelcontextprotocol/sdk/package.json");
    let node = Command::new("node").arg("--version").output();
    let problem = match node {
        Err(e) => Some(format!("`node` does not run ({e})")),
        Ok(out) if !out.status.success() => Some("`node --version` failed".to_owned()),
        Ok(_) if !sdk.exists() => Some(format!("missing {}", sdk.display())),
        Ok(_) => None,
    };
    if let Some(problem) = problem {
        panic!(
            "the TypeScript MCP client needs Node.js 20+ and the SDK of tests/e2e/ts: {problem}.\n\
             Run `scripts/setup-node` (scripts/test runs it first)."
        );
    }
    dir
}

/// Options of [`run_ts_client`].
#[derive(Debug, Clone, Copy, Default)]
struct TsOptions {
    /// The SDK's OAuth client provider instead of a plain bearer header (`--oauth`).
    oauth: bool,
}

/// Run the TypeScript SDK client (`tests/e2e/ts/client.mjs`): one session at `url`, the
/// `steps` (as `mcp_client.py` takes them), the token in `MCP_CLIENT_TOKEN`. Returns its
/// JSON report with `exit_code` added.
fn run_ts_client(url: &str, token: Option<&str>, steps: Value, options: TsOptions) -> Value {
    let dir = ts_dir();
    let timeout = CLIENT_TIMEOUT;
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("client.mjs"))
        .arg(url)
        .arg("--steps")
        .arg(steps.to_string())
        .args(["--timeout", &timeout.as_secs().to_string()])
        .args(options.oauth.then_some("--oauth"))
        .current_dir(&dir)
        .env_remove("MCP_CLIENT_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("MCP_CLIENT_TOKEN", token);
    }
    let child = cmd.spawn().expect("start node client.mjs");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(timeout + Duration::from_secs(15)) {
        Ok(out) => out.expect("wait for client.mjs"),
        Err(_) => {
            kill(pid, "KILL", false);
            panic!("client.mjs did not finish within {timeout:?} + 15 s ({url})");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "client.mjs printed no JSON ({e}; exit {:?}):\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        )
    });
    json["exit_code"] = output.status.code().map_or(Value::Null, Value::from);
    json
}

/// The error of step `step` of a client report, which must have failed.
fn error_of(report: &Value, step: usize) -> &Value {
    assert_eq!(
        report["steps"][step]["ok"], false,
        "step {step} should fail: {report:#}"
    );
    &report["steps"][step]["error"]
}

/// The TypeScript SDK with a good token through Envoy: the tools the reference policies
/// allow are listed and called, a denied call is the SDK's `StreamableHTTPError` whose
/// 403 body carries the JSON-RPC error with the decision id in `data`, and the session's
/// GET stream and closing DELETE raise no error.
#[test]
fn the_typescript_sdk_lists_and_calls_through_envoy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(1, "ts");
    let file = config::write(
        dir.path(),
        &[
            &config::test_issuer(dir.path(), &key),
            "[decision_log]\nenabled = false\n",
        ],
    );
    let authz = Service::start(&reference_policies(), Some(&file));
    let docs = McpServer::start("docs");
    let envoy = Envoy::start(
        &envoy_example("envoy-grpc.yaml"),
        &envoy_vars(Some(AuthzPorts::from(&authz)), Some(&docs), None),
    );
    let erin = key.token(json!({ "sub": "erin", "azp": "corpassist", "groups": ["engineering"] }));
    let report = run_ts_client(
        &envoy.url("/docs/mcp"),
        Some(&erin),
        json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "read_resource", "uri": "docs://titan/q1-strategy"},
        ]),
        TsOptions::default(),
    );
    assert_eq!(
        report["initialize"]["ok"],
        true,
        "{report:#}\n{}",
        authz.log_text()
    );
    assert_eq!(report["initialize"]["server"], "docs", "{report:#}");
    assert_eq!(report["steps"][0]["ok"], true, "{report:#}");
    let tools = &report["steps"][0]["result"]["tools"];
    assert!(
        tools
            .as_array()
            .is_some_and(|t| t.contains(&json!("get_document"))),
        "{report:#}"
    );
    assert_eq!(report["steps"][1]["ok"], true, "{report:#}");
    assert!(
        report["steps"][1]["result"]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Project Titan Q1 strategy:"),
        "{report:#}"
    );
    let denied = error_of(&report, 2);
    assert_eq!(denied["type"], "StreamableHTTPError", "{report:#}");
    assert_eq!(denied["sdk_code"], 403, "{report:#}");
    assert_eq!(denied["http_status"], 403, "{report:#}");
    assert_eq!(denied["content_type"], "application/json", "{report:#}");
    assert_eq!(denied["code"], -32003, "{report:#}");
    let id = denied["data"]["decision_id"].as_str().unwrap_or_default();
    assert_eq!(id.len(), 36, "a decision id in `data`: {denied}");
    assert!(
        !docs
            .requests()
            .iter()
            .any(|r| r["name"] == "delete_document"),
        "a denied call reached the server"
    );
    assert_eq!(report["steps"][3]["ok"], true, "{report:#}");
    // The session's GET stream and DELETE, as the reference policies decide them
    // (`sessions-stream-and-end`): no error anywhere.
    assert_eq!(report["transport_errors"], json!([]), "{report:#}");
    assert_eq!(report["terminate"]["ok"], true, "{report:#}");
    let get = report["http"]
        .as_array()
        .and_then(|h| h.iter().find(|x| x["method"] == "GET"))
        .cloned();
    assert_eq!(
        get.map(|g| g["status"].clone()),
        Some(json!(200)),
        "{report:#}"
    );
    assert_eq!(report["terminate"]["http_status"], 200, "{report:#}");
}

/// The mesh of the OAuth tests: the test authorization server, mcp-authz trusting it with
/// `[servers.docs]` and `[servers.projects]` whose canonical URIs are the Envoy URLs the
/// clients use (`http://127.0.0.1:PORT/docs/mcp`: `http` on loopback), Envoy
/// (`envoy-grpc.yaml`, which routes the well-known path to mcp-authz) and both MCP servers.
struct OAuthMesh {
    auth: AuthServer,
    authz: Service,
    docs: McpServer,
    envoy: Envoy,
    _projects: McpServer,
    _dir: tempfile::TempDir,
}

impl OAuthMesh {
    fn start() -> OAuthMesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = AuthServer::start(vec![TestKey::rsa(1, "as")]);
        let port = unused_port();
        let servers = |id: &str, scopes: &str| {
            format!(
                "[servers.{id}]\nresource = \"http://127.0.0.1:{port}/{id}/mcp\"\nauthorization_servers = [\"{}\"]\nscopes_supported = {scopes}\n",
                auth.issuer()
            )
        };
        let file = config::write(
            dir.path(),
            &[
                &auth.issuer_config(dir.path()),
                "[decision_log]\nenabled = false\n",
                &servers("docs", r#"["docs.read", "docs.write"]"#),
                &servers("projects", r#"["projects.read"]"#),
            ],
        );
        let authz = Service::start(&reference_policies(), Some(&file));
        let docs = McpServer::start("docs");
        let projects = McpServer::start("projects");
        let mut vars = envoy_vars(Some(AuthzPorts::from(&authz)), Some(&docs), Some(&projects));
        vars.push(("LISTEN_PORT", port.to_string()));
        let envoy = Envoy::start(&envoy_example("envoy-grpc.yaml"), &vars);
        OAuthMesh {
            auth,
            authz,
            docs,
            envoy,
            _projects: projects,
            _dir: dir,
        }
    }

    /// The canonical URI of server `id`, which is also its URL through Envoy.
    fn resource(&self, id: &str) -> String {
        self.envoy.url(&format!("/{id}/mcp"))
    }
}

/// The authorization URLs the client's OAuth provider was sent to.
fn authorization_urls(report: &Value) -> Vec<Value> {
    report["oauth"]["authorization_urls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// What an SDK's discovery after the 401 must have done, whichever SDK: asked the
/// configured authorization server for its metadata and registered, then stopped at
/// one authorization URL there, for `resource` (its canonical URI), this client, PKCE
/// S256 and the scopes the metadata lists; nothing reached the MCP server. The URL's
/// parameters, for what one SDK is checked for beyond these.
fn stopped_at_authorization(mesh: &OAuthMesh, report: &Value, resource: &str) -> Value {
    let asked = mesh.auth.requests();
    assert!(
        asked.contains(&(
            "GET".into(),
            "/.well-known/oauth-authorization-server".into()
        )),
        "{asked:?}"
    );
    assert!(
        asked.contains(&("POST".into(), "/register".into())),
        "{asked:?}"
    );
    let urls = authorization_urls(report);
    assert_eq!(urls.len(), 1, "{report:#}");
    let url = &urls[0];
    assert_eq!(url["origin"], mesh.auth.issuer().as_str(), "{report:#}");
    assert_eq!(url["path"], "/authorize", "{report:#}");
    let params = url["params"].clone();
    assert_eq!(params["resource"], resource, "{report:#}");
    assert_eq!(params["client_id"], REGISTERED_CLIENT_ID, "{report:#}");
    assert_eq!(params["code_challenge_method"], "S256", "{report:#}");
    assert_eq!(params["scope"], "docs.read docs.write", "{report:#}");
    assert!(
        mesh.docs.requests().is_empty(),
        "{:?}",
        mesh.docs.requests()
    );
    params
}

/// The TypeScript SDK without a token, with an OAuth client provider: its own discovery
/// runs from the 401 (`resource_metadata`) through Envoy to the Protected Resource
/// Metadata, then the configured authorization server's metadata and dynamic
/// registration, and stops at the authorization URL, which names this server's canonical
/// URI as `resource` and asks for the scopes the metadata lists.
#[test]
fn the_typescript_sdk_discovers_the_authorization_server_from_the_401() {
    let mesh = OAuthMesh::start();
    let resource = mesh.resource("docs");
    let report = run_ts_client(&resource, None, json!([]), TsOptions { oauth: true });
    assert_eq!(report["exit_code"], 2, "{report:#}");
    assert_eq!(report["initialize"]["ok"], false, "{report:#}");
    assert_eq!(report["error"]["type"], "UnauthorizedError", "{report:#}");
    let http = report["http"].as_array().cloned().unwrap_or_default();
    let first = &http[0];
    assert_eq!(first["status"], 401, "{report:#}");
    let challenge = first["www_authenticate"].as_str().unwrap_or_default();
    let metadata_url = format!(
        "{}/.well-known/oauth-protected-resource/docs/mcp",
        mesh.envoy.url("")
    );
    assert!(
        challenge.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    // The Protected Resource Metadata, through Envoy, without a token.
    let prm = http
        .iter()
        .find(|x| x["url"] == metadata_url.as_str())
        .unwrap_or_else(|| panic!("no metadata request: {report:#}"));
    assert_eq!(prm["status"], 200, "{report:#}");
    assert_eq!(
        report["oauth"]["client_information"]["client_id"], REGISTERED_CLIENT_ID,
        "{report:#}"
    );
    let params = stopped_at_authorization(&mesh, &report, &resource);
    assert_eq!(params["response_type"], "code", "{report:#}");
}

/// The Python SDK (2.x) with its `OAuthClientProvider` and no token: the same discovery
/// from the 401, registration, and an authorization URL for this server's canonical URI
/// at the configured authorization server.
#[test]
fn the_python_sdk_discovers_the_authorization_server_from_the_401() {
    let mesh = OAuthMesh::start();
    let resource = mesh.resource("docs");
    let report = run_client_opts(
        &resource,
        None,
        json!([]),
        &ClientOptions {
            oauth: true,
            ..ClientOptions::default()
        },
    );
    assert_eq!(report["exit_code"], 2, "{report:#}");
    assert_eq!(report["initialize"]["ok"], false, "{report:#}");
    assert_eq!(report["error"]["type"], "StopAtAuthorization", "{report:#}");
    let metadata_url = format!(
        "{}/.well-known/oauth-protected-resource/docs/mcp",
        mesh.envoy.url("")
    );
    let http = report["http"].as_array().cloned().unwrap_or_default();
    assert_eq!(http[0]["status"], 401, "{report:#}");
    assert!(
        http.iter()
            .any(|x| x["url"] == metadata_url.as_str() && x["status"] == 200),
        "{report:#}"
    );
    stopped_at_authorization(&mesh, &report, &resource);
}

/// A token minted for another MCP server (its `aud` is that server's canonical URI) is
/// refused with `invalid_token` and the reason; the same token works at its own server.
#[test]
fn a_token_for_another_server_is_refused_and_works_at_its_own() {
    let mesh = OAuthMesh::start();
    let for_projects = mesh.auth.token(
        &mesh.resource("projects"),
        json!({"sub": "erin", "azp": "corpassist", "groups": ["engineering"]}),
    );
    let at_docs = run_ts_client(
        &mesh.resource("docs"),
        Some(&for_projects),
        json!([]),
        TsOptions::default(),
    );
    assert_eq!(at_docs["initialize"]["ok"], false, "{at_docs:#}");
    let error = &at_docs["initialize"]["error"];
    assert_eq!(error["http_status"], 401, "{at_docs:#}");
    let challenge = error["www_authenticate"].as_str().unwrap_or_default();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(&format!(
            "not for this MCP server (audience `{}` required)",
            mesh.resource("docs")
        )),
        "{challenge}"
    );
    assert!(mesh.docs.requests().is_empty());
    let at_projects = run_ts_client(
        &mesh.resource("projects"),
        Some(&for_projects),
        json!([{"op": "list_tools"}]),
        TsOptions::default(),
    );
    assert_eq!(
        at_projects["ok"],
        true,
        "{at_projects:#}\n{}",
        mesh.authz.log_text()
    );
}

/// Step-up: `ops-console-deletes-with-write-scope` (`@scopes("docs.write")`) would allow
/// dave's delete through the operations console with `docs.write`; with only `docs.read`
/// the call is a 403 `insufficient_scope` naming the scopes. The TypeScript SDK (1.32)
/// re-runs its authorization with that scope and stops at a new authorization URL asking
/// for it, and so does the Python SDK (2.x) with its OAuth provider; without one it
/// surfaces the deny's JSON-RPC error; with the scope, the call goes through.
#[test]
fn a_missing_scope_is_asked_for_and_both_sdks_step_up() {
    let mesh = OAuthMesh::start();
    let resource = mesh.resource("docs");
    let dave = |scope: &str| {
        mesh.auth.token(
            &resource,
            json!({"sub": "dave", "azp": "ops-console", "scope": scope}),
        )
    };
    let delete = json!([
        {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "hr/onboarding-guide"}},
    ]);
    let metadata_url = format!(
        "{}/.well-known/oauth-protected-resource/docs/mcp",
        mesh.envoy.url("")
    );
    let step_up = format!(
        "Bearer realm=\"mcp-authz\", error=\"insufficient_scope\", scope=\"docs.read docs.write\", resource_metadata=\"{metadata_url}\""
    );

    let ts = run_ts_client(
        &resource,
        Some(&dave("docs.read")),
        delete.clone(),
        TsOptions { oauth: true },
    );
    assert_eq!(
        ts["initialize"]["ok"],
        true,
        "{ts:#}\n{}",
        mesh.authz.log_text()
    );
    let error = error_of(&ts, 0);
    assert_eq!(error["type"], "UnauthorizedError", "{ts:#}");
    assert_eq!(error["http_status"], 403, "{ts:#}");
    assert_eq!(error["www_authenticate"], step_up.as_str(), "{ts:#}");
    let urls = authorization_urls(&ts);
    assert_eq!(urls.len(), 1, "{ts:#}");
    assert_eq!(urls[0]["origin"], mesh.auth.issuer().as_str(), "{ts:#}");
    assert_eq!(urls[0]["params"]["scope"], "docs.read docs.write", "{ts:#}");
    assert_eq!(urls[0]["params"]["resource"], resource.as_str(), "{ts:#}");

    let python = run_client(&resource, Some(&dave("docs.read")), delete.clone());
    assert_eq!(python["initialize"]["ok"], true, "{python:#}");
    let error = error_of(&python, 0);
    assert_eq!(error["http_status"], 403, "{python:#}");
    assert_eq!(error["code"], -32003, "{python:#}");
    assert_eq!(error["www_authenticate"], step_up.as_str(), "{python:#}");

    // The Python SDK with its OAuth provider steps up too.
    let python = run_client_opts(
        &resource,
        Some(&dave("docs.read")),
        delete.clone(),
        &ClientOptions {
            oauth: true,
            ..ClientOptions::default()
        },
    );
    // Its auth handler runs inside the transport: stopping there ends the session (the
    // script's top-level `error`), not only the step.
    assert_eq!(python["initialize"]["ok"], true, "{python:#}");
    let error = &python["error"];
    assert_eq!(error["type"], "StopAtAuthorization", "{python:#}");
    assert_eq!(error["http_status"], 403, "{python:#}");
    assert_eq!(error["www_authenticate"], step_up.as_str(), "{python:#}");
    let urls = authorization_urls(&python);
    assert_eq!(urls.len(), 1, "{python:#}");
    assert_eq!(urls[0]["origin"], mesh.auth.issuer().as_str(), "{python:#}");
    assert_eq!(
        urls[0]["params"]["scope"], "docs.read docs.write",
        "{python:#}"
    );
    assert_eq!(
        urls[0]["params"]["resource"],
        resource.as_str(),
        "{python:#}"
    );

    assert!(
        !mesh
            .docs
            .requests()
            .iter()
            .any(|r| r["name"] == "delete_document"),
        "a denied call reached the server"
    );
    let with_scope = run_ts_client(
        &resource,
        Some(&dave("docs.read docs.write")),
        delete,
        TsOptions::default(),
    );
    assert_eq!(with_scope["ok"], true, "{with_scope:#}");
    assert_eq!(
        with_scope["steps"][0]["result"]["is_error"], false,
        "{with_scope:#}"
    );
}
