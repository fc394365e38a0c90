//! The MCP authorization edge through real Envoy (`examples/envoy/envoy-grpc.yaml`):
//! the Protected Resource Metadata (RFC 9728) is fetched through Envoy without a
//! token (the route disables ext_authz and keeps the Host), a request without a
//! token gets the 401 that points to it, and a GET of a server that offers no
//! stream is Envoy's own 405.

use serde_json::Value;

use crate::harness::{AuthzPorts, Envoy, McpServer, envoy_example, envoy_vars};
use crate::support::http;
use crate::support::inproc::Service;
use crate::support::tokens::{ISSUER, TestKey};
use crate::support::{config, reference_policies};

#[test]
fn the_metadata_is_fetched_through_envoy_without_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(1, "k1");
    let servers = format!(
        "[servers.docs]\nresource = \"https://docs.mcp.example.com/docs/mcp\"\nauthorization_servers = [\"{ISSUER}\"]\nscopes_supported = [\"docs.read\", \"docs.write\"]\n"
    );
    let file = config::write(
        dir.path(),
        &[&config::test_issuer(dir.path(), &key), &servers],
    );
    let authz = Service::start(&reference_policies(), Some(&file));
    let docs = McpServer::start("docs");
    let envoy = Envoy::start(
        &envoy_example("envoy-grpc.yaml"),
        &envoy_vars(Some(AuthzPorts::from(&authz)), Some(&docs), None),
    );
    let listen = envoy.url("").trim_start_matches("http://").to_owned();
    let host = [("Host", "docs.mcp.example.com")];

    // The document, without a token, through Envoy.
    let (code, headers, body) = http::request(
        &listen,
        "GET",
        "/.well-known/oauth-protected-resource/docs/mcp",
        &host,
        "",
    )
    .expect("an answer from Envoy");
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(doc["resource"], "https://docs.mcp.example.com/docs/mcp");
    assert_eq!(doc["authorization_servers"][0], ISSUER);
    assert_eq!(doc["bearer_methods_supported"][0], "header");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "cache-control" && v.contains("max-age")),
        "{headers:?}"
    );
    // Another path: mcp-authz's 404, not an authorization answer.
    let (code, _, _) = http::request(
        &listen,
        "GET",
        "/.well-known/oauth-protected-resource/nothing",
        &host,
        "",
    )
    .expect("an answer");
    assert_eq!(code, 404);

    // An MCP request without a token: 401 pointing to that document.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (code, headers, _) = http::request(
        &listen,
        "POST",
        "/docs/mcp",
        &[
            ("Host", "docs.mcp.example.com"),
            ("Content-Type", "application/json"),
            ("Accept", "application/json, text/event-stream"),
        ],
        init,
    )
    .expect("an answer");
    assert_eq!(code, 401);
    let challenge = headers
        .iter()
        .find(|(k, _)| k == "www-authenticate")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    assert_eq!(
        challenge,
        "Bearer realm=\"mcp-authz\", resource_metadata=\"https://docs.mcp.example.com/.well-known/oauth-protected-resource/docs/mcp\""
    );

    // A GET of a server without a stream: Envoy's 405, never asking mcp-authz.
    let (code, headers, _) = http::request(
        &listen,
        "GET",
        "/projects/mcp",
        &[("Accept", "text/event-stream")],
        "",
    )
    .expect("an answer");
    assert_eq!(code, 405, "{headers:?}");
}
