//! The MCP authorization spec at the edge (issue 21): Protected Resource Metadata on
//! the HTTP listener, `resource_metadata` in every 401, per-server token audiences
//! (RFC 8707) and the `insufficient_scope` step-up — through the whole service
//! (composition root, ephemeral ports), on Envoy ext_authz gRPC, its HTTP mode and
//! the gateway API.

use envoy_types::pb::envoy::service::auth::v3::CheckResponse;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use serde_json::{Value, json};

use crate::support::config;
use crate::support::envoy::{self, post, status};
use crate::support::gateway;
use crate::support::http;
use crate::support::inproc::{Launch, Service};
use crate::support::tokens::{ISSUER, TestKey};

const DOCS: &str = "https://docs.mcp.example.com/mcp";
const PROJECTS: &str = "https://projects.mcp.example.com/mcp";
const DOCS_METADATA: &str = "https://docs.mcp.example.com/.well-known/oauth-protected-resource/mcp";

struct Setup {
    service: Service,
    key: TestKey,
    _dir: tempfile::TempDir,
}

fn start() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(1, "k1");
    let servers = format!(
        "[servers.docs]\nresource = \"{DOCS}\"\nauthorization_servers = [\"{ISSUER}\"]\nscopes_supported = [\"docs.read\", \"docs.write\"]\nresource_name = \"Document repository\"\nscope = \"docs.read\"\n\n[servers.projects]\nresource = \"{PROJECTS}\"\nauthorization_servers = [\"{ISSUER}\"]\n\n[envoy.servers]\n\"projects.mcp.example.com\" = \"projects\"\n"
    );
    let file = config::write(
        dir.path(),
        &[&config::test_issuer(dir.path(), &key), &servers],
    );
    let service = Launch::new(&crate::support::reference_policies())
        .config(&file)
        .start();
    Setup {
        service,
        key,
        _dir: dir,
    }
}

fn token(key: &TestKey, changes: Value) -> String {
    key.token(changes)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const DELETE: &str = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"delete_document","arguments":{"document_id":"titan/old-draft"}}}"#;

/// The `www-authenticate` header of Envoy's denied answer.
fn challenge(r: &CheckResponse) -> Option<String> {
    match &r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .find(|h| h.key.eq_ignore_ascii_case("www-authenticate"))
            .map(|h| h.value.clone()),
        _ => None,
    }
}

/// Ask Envoy's gRPC ext_authz about `body` on `server` (route `context_extensions`)
/// with `bearer`: the status and the challenge.
async fn grpc_ask(
    s: &Service,
    server: &str,
    body: &str,
    bearer: Option<&str>,
) -> (u16, Option<String>) {
    let mut client = envoy::client(&s.grpc).await;
    let mut check = post(body)
        .json()
        .header("accept", "application/json, text/event-stream");
    if server != "docs" {
        check = check.no_route_server().host(match server {
            "projects" => "projects.mcp.example.com",
            other => other,
        });
    }
    if let Some(t) = bearer {
        check = check.bearer(t);
    }
    let r = client
        .check(check.build())
        .await
        .expect("check")
        .into_inner();
    (status(&r).0, challenge(&r))
}

/// The same through the HTTP ext_authz mode (`x-mcp-authz-server`).
fn http_ask(s: &Service, server: &str, body: &str, bearer: Option<&str>) -> (u16, Option<String>) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("x-mcp-authz-server", server),
    ];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let (code, h, _) =
        http::request(&s.http, "POST", "/ext_authz/mcp", &headers, body).expect("ext_authz");
    let challenge = h
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.clone());
    (code, challenge)
}

/// The same through the gateway API's `Check`: allowed, and `www_authenticate`.
async fn gateway_ask(s: &Service, server: &str, body: &str, bearer: &str) -> (bool, String) {
    let mut client = gateway::client(&s.grpc).await;
    let r = client
        .check(gateway::jsonrpc(gateway::bearer(bearer), server, body))
        .await
        .expect("check")
        .into_inner();
    (r.allowed, r.www_authenticate)
}

#[test]
fn the_metadata_is_served_without_a_token_by_host_and_path() {
    let s = start();
    let get = |host: &str, path: &str| {
        http::request(&s.service.http, "GET", path, &[("Host", host)], "").expect("answer")
    };
    let (code, headers, body) = get(
        "docs.mcp.example.com",
        "/.well-known/oauth-protected-resource/mcp",
    );
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        doc,
        json!({
            "resource": DOCS,
            "authorization_servers": [ISSUER],
            "scopes_supported": ["docs.read", "docs.write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Document repository",
        })
    );
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "cache-control" && v.contains("max-age")),
        "{headers:?}"
    );
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"))
    );
    let (code, _, body) = get(
        "projects.mcp.example.com:443",
        "/.well-known/oauth-protected-resource/mcp",
    );
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["resource"], PROJECTS);
    assert!(doc.get("scopes_supported").is_none() && doc.get("resource_name").is_none());
    for (host, path) in [
        (
            "mail.example.com",
            "/.well-known/oauth-protected-resource/mcp",
        ),
        (
            "docs.mcp.example.com",
            "/.well-known/oauth-protected-resource",
        ),
        (
            "docs.mcp.example.com",
            "/.well-known/oauth-protected-resource/other",
        ),
    ] {
        let (code, _, body) = get(host, path);
        assert_eq!(code, 404, "{host}{path}: {body}");
        let e: Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(e["error"]["status"], 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_points_to_the_metadata_on_every_interface() {
    let s = start();
    let svc = &s.service;
    let bare = format!(
        "Bearer realm=\"mcp-authz\", scope=\"docs.read\", resource_metadata=\"{DOCS_METADATA}\""
    );
    assert_eq!(
        grpc_ask(svc, "docs", INITIALIZE, None).await,
        (401, Some(bare.clone()))
    );
    assert_eq!(http_ask(svc, "docs", INITIALIZE, None), (401, Some(bare)));
    // A server without `scope`: no scope asked for; by Host (no route server).
    let (code, c) = grpc_ask(svc, "projects", INITIALIZE, None).await;
    assert_eq!(code, 401);
    assert_eq!(
        c.as_deref(),
        Some(
            "Bearer realm=\"mcp-authz\", resource_metadata=\"https://projects.mcp.example.com/.well-known/oauth-protected-resource/mcp\""
        )
    );
    // An expired token: invalid_token, still pointing to the metadata.
    let expired = token(&s.key, json!({"aud": DOCS, "exp": 1_000_000}));
    for (code, c) in [
        grpc_ask(svc, "docs", INITIALIZE, Some(&expired)).await,
        http_ask(svc, "docs", INITIALIZE, Some(&expired)),
    ] {
        assert_eq!(code, 401);
        let c = c.expect("a challenge");
        assert!(c.starts_with("Bearer realm=\"mcp-authz\", error=\"invalid_token\", error_description=\"token has expired\""), "{c}");
        assert!(
            c.ends_with(&format!("resource_metadata=\"{DOCS_METADATA}\"")),
            "{c}"
        );
    }
    let (allowed, c) = gateway_ask(svc, "docs", INITIALIZE, &expired).await;
    assert!(!allowed);
    assert!(
        c.contains("error=\"invalid_token\"") && c.contains(DOCS_METADATA),
        "{c}"
    );
    // A server without settings keeps the bare challenge.
    let (allowed, c) = gateway_ask(svc, "tickets", INITIALIZE, &expired).await;
    assert!(!allowed);
    assert!(!c.contains("resource_metadata"), "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_accepted_only_by_the_server_they_are_for() {
    let s = start();
    let svc = &s.service;
    let for_docs = token(&s.key, json!({"aud": DOCS}));
    assert_eq!(
        grpc_ask(svc, "docs", INITIALIZE, Some(&for_docs)).await.0,
        200
    );
    assert_eq!(http_ask(svc, "docs", INITIALIZE, Some(&for_docs)).0, 200);
    assert!(gateway_ask(svc, "docs", INITIALIZE, &for_docs).await.0);
    let several = token(
        &s.key,
        json!({"aud": ["https://other.example", PROJECTS, DOCS]}),
    );
    assert_eq!(
        grpc_ask(svc, "docs", INITIALIZE, Some(&several)).await.0,
        200
    );
    assert_eq!(
        grpc_ask(svc, "projects", INITIALIZE, Some(&several))
            .await
            .0,
        200
    );

    let wrong = |c: Option<String>, want: &str| {
        let c = c.expect("a challenge");
        assert!(
            c.contains("error=\"invalid_token\"")
                && c.contains(&format!(
                    "error_description=\"the token is not for this MCP server (audience `{want}` required)\""
                ))
                && c.contains("resource_metadata=\""),
            "{c}"
        );
    };
    // Minted for the projects server, presented at docs (same issuer): refused.
    let for_projects = token(&s.key, json!({"aud": PROJECTS}));
    let (code, c) = grpc_ask(svc, "docs", INITIALIZE, Some(&for_projects)).await;
    assert_eq!(code, 401);
    wrong(c, DOCS);
    let (code, c) = http_ask(svc, "docs", INITIALIZE, Some(&for_projects));
    assert_eq!(code, 401);
    wrong(c, DOCS);
    let (allowed, c) = gateway_ask(svc, "docs", INITIALIZE, &for_projects).await;
    assert!(!allowed);
    wrong(Some(c), DOCS);
    // Exact comparison: a trailing slash or another case is another URI.
    for aud in [
        "https://docs.mcp.example.com/mcp/",
        "https://DOCS.mcp.example.com/mcp",
        "https://docs.mcp.example.com/MCP",
    ] {
        let t = token(&s.key, json!({"aud": [aud, PROJECTS]}));
        let (code, c) = grpc_ask(svc, "docs", INITIALIZE, Some(&t)).await;
        assert_eq!(code, 401, "{aud}");
        wrong(c, DOCS);
    }
    // The issuer's own audience is not a server's: refused at a server with a resource.
    let mesh = token(&s.key, json!({})); // aud: mcp-mesh
    let (code, c) = grpc_ask(svc, "docs", INITIALIZE, Some(&mesh)).await;
    assert_eq!(code, 401);
    wrong(c, DOCS);
    // ...and accepted at a server without one; a server's URI is not accepted there.
    assert!(gateway_ask(svc, "tickets", INITIALIZE, &mesh).await.0);
    let (allowed, c) = gateway_ask(svc, "tickets", INITIALIZE, &for_docs).await;
    assert!(!allowed);
    assert!(c.contains("its audience is another MCP server"), "{c}");
    // No `aud` at all.
    let none = token(&s.key, json!({"aud": null}));
    let (code, c) = grpc_ask(svc, "docs", INITIALIZE, Some(&none)).await;
    assert_eq!(code, 401);
    let c = c.expect("a challenge");
    assert!(
        c.contains("token has no `aud` claim") && c.contains(DOCS_METADATA),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_more_scope_would_lift_asks_for_it() {
    let s = start();
    let svc = &s.service;
    let dave = |scope: &str, azp: &str| {
        token(
            &s.key,
            json!({"aud": DOCS, "sub": "dave", "azp": azp, "scope": scope}),
        )
    };
    let step_up = format!(
        "Bearer realm=\"mcp-authz\", error=\"insufficient_scope\", scope=\"docs.read docs.write\", resource_metadata=\"{DOCS_METADATA}\""
    );
    let read_only = dave("docs.read", "ops-console");
    assert_eq!(
        grpc_ask(svc, "docs", DELETE, Some(&read_only)).await,
        (403, Some(step_up.clone()))
    );
    assert_eq!(
        http_ask(svc, "docs", DELETE, Some(&read_only)),
        (403, Some(step_up.clone()))
    );
    assert_eq!(
        gateway_ask(svc, "docs", DELETE, &read_only).await,
        (false, step_up)
    );
    // With the scope: allowed.
    let write = dave("docs.read docs.write", "ops-console");
    assert_eq!(grpc_ask(svc, "docs", DELETE, Some(&write)).await.0, 200);
    assert!(gateway_ask(svc, "docs", DELETE, &write).await.0);
    // CorpAssist never deletes, and alice is no document administrator: more
    // scope would not help, a plain 403.
    let corpassist = dave("docs.read", "corpassist");
    assert_eq!(
        grpc_ask(svc, "docs", DELETE, Some(&corpassist)).await,
        (403, None)
    );
    assert_eq!(
        http_ask(svc, "docs", DELETE, Some(&corpassist)),
        (403, None)
    );
    assert_eq!(
        gateway_ask(svc, "docs", DELETE, &corpassist).await,
        (false, String::new())
    );
    let alice = token(
        &s.key,
        json!({"aud": DOCS, "sub": "alice", "azp": "ops-console", "scope": "docs.read"}),
    );
    assert_eq!(
        grpc_ask(svc, "docs", DELETE, Some(&alice)).await,
        (403, None)
    );
}

#[test]
fn authzen_checks_the_audience_when_the_resource_names_a_server() {
    let s = start();
    let ask = |token: &str| {
        let body = json!({
            "subject": { "type": "user", "id": "alice" },
            "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": "docs/get_document" },
            "context": {
                "agent": "corpassist",
                "arguments": crate::support::reference_arguments("docs/get_document"),
            },
        });
        let bearer = format!("Bearer {token}");
        http::request(
            &s.service.http,
            "POST",
            "/access/v1/evaluation",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", bearer.as_str()),
            ],
            &body.to_string(),
        )
        .expect("an answer")
    };
    let (code, _, body) = ask(&token(&s.key, json!({"aud": DOCS})));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["decision"],
        true
    );
    let (code, headers, body) = ask(&token(&s.key, json!({"aud": PROJECTS})));
    assert_eq!(code, 401, "{body}");
    let challenge = headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        challenge.contains("the token is not for this MCP server")
            && challenge.contains(DOCS_METADATA),
        "{challenge}"
    );
}
