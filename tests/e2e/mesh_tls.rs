//! The mesh path without a cluster: the Envoy configuration Istio's sidecar gets from
//! `deploy/istio/` (examples/mesh/istio-sidecar.yaml), run with real Envoy in front of
//! a real MCP server and driven by the real MCP client, asks mcp-authz over mTLS (a
//! client certificate whose URI SAN is the sidecar's SPIFFE ID, mcp-authz's verified
//! against the mesh CA and its SPIFFE ID), and mcp-authz — configured by
//! examples/mesh/mcp-authz.toml — takes the MCP server from the request's
//! `:authority`: no `context_extensions`.

use serde_json::json;

use crate::harness::{ClientOptions, Envoy, McpServer, run_client_opts, step_text};
use crate::support::inproc::{Launch, Service};
use crate::support::pki::Ca;
use crate::support::process::WorkDir;
use crate::support::tokens::demo_token;
use crate::support::{config, repo};

const SIDECAR: &str = "spiffe://cluster.local/ns/mcp-servers/sa/docs";
const MCP_AUTHZ: &str = "spiffe://cluster.local/ns/mcp-authz/sa/mcp-authz";
/// The Service name Envoy Gateway's proxies verify mcp-authz's certificate by.
const MCP_AUTHZ_SERVICE: &str = "mcp-authz.mcp-authz.svc.cluster.local";
/// An Envoy Gateway proxy: no trusted caller (it sends no `source.principal`).
const GATEWAY_PROXY: &str = "spiffe://cluster.local/ns/envoy-gateway-system/sa/envoy-default";

/// examples/mesh/mcp-authz.toml with its PEM files beside it (`tls/`), the reference
/// policies, and the demo token issuer added.
fn example_config(dir: &WorkDir, ca: &Ca) -> std::path::PathBuf {
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).expect("mkdir tls");
    let server = ca.workload("mcp-authz", MCP_AUTHZ, &[MCP_AUTHZ_SERVICE]);
    std::fs::copy(&server.cert, tls.join("tls.crt")).expect("copy");
    std::fs::copy(&server.key, tls.join("tls.key")).expect("copy");
    std::fs::copy(&ca.cert, tls.join("ca.crt")).expect("copy");
    let text = std::fs::read_to_string(repo().join("examples/mesh/mcp-authz.toml"))
        .expect("read the example")
        .replace(
            "policies = \"../../policies\"",
            &format!(
                "policies = {:?}",
                repo().join("policies").display().to_string()
            ),
        )
        // Tests run at once: ephemeral ports (the gRPC and HTTP ones are set by the launch).
        .replace(
            "admin_listen = \"127.0.0.1:9901\"",
            "admin_listen = \"127.0.0.1:0\"",
        );
    std::fs::write(dir.path().join("example.toml"), text).expect("write");
    config::write(
        dir.path(),
        &[
            &std::fs::read_to_string(dir.path().join("example.toml")).expect("read"),
            &config::demo_issuer(),
            "[decision_log]\nenabled = false\n",
        ],
    )
}

#[test]
fn the_istio_sidecar_config_asks_over_mtls_with_the_server_from_the_authority() {
    through_real_envoy("istio-sidecar.yaml", SIDECAR, "docs.mcp.svc.cluster.local");
}

#[test]
fn the_envoy_gateway_config_asks_over_mtls_with_the_server_from_the_authority() {
    through_real_envoy("envoy-gateway.yaml", GATEWAY_PROXY, "docs.mcp.example.com");
}

/// The MCP client through Envoy configured by `examples/mesh/{template}` (a proxy whose
/// certificate names `proxy`), with `host` as the docs server's name.
fn through_real_envoy(template: &str, proxy: &str, host: &str) {
    let dir = WorkDir::new("e2e-mesh-tls-");
    let ca = Ca::new(dir.path(), "mesh");
    // The full reason to the client: the test reads which refusal (no server) it was.
    let authz = Launch::new(&repo().join("policies"))
        .config(&example_config(&dir, &ca))
        .full_denials()
        .start();
    let sidecar = ca.workload("proxy", proxy, &[]);
    let docs = McpServer::start("docs");
    let envoy = Envoy::start(
        &repo().join("examples/mesh").join(template),
        &[
            ("AUTHZ_GRPC_PORT", authz.grpc_port().to_string()),
            ("DOCS_PORT", docs.port().to_string()),
            ("AUTHZ_CA", ca.cert.display().to_string()),
            ("CLIENT_CERT", sidecar.cert.display().to_string()),
            ("CLIENT_KEY", sidecar.key.display().to_string()),
        ],
    );
    let through = |host: &str, user: &str, steps: serde_json::Value| {
        run_client_opts(
            &envoy.url("/mcp"),
            Some(&demo_token(user)),
            steps,
            &ClientOptions {
                host: Some(host.to_owned()),
                ..ClientOptions::default()
            },
        )
    };
    // The docs server's name, mapped to `docs` by `[envoy.servers]`.
    let report = through(
        host,
        "erin",
        json!([
            {"op": "list_tools"},
            {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
            {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
        ]),
    );
    assert_eq!(
        report["initialize"]["ok"],
        true,
        "{report:#}\n{}\n{}",
        authz.log_text(),
        envoy.log()
    );
    assert!(
        step_text(&report, 1).starts_with("Project Titan Q1 strategy:"),
        "{report:#}"
    );
    let denied = &report["steps"][2]["error"];
    assert_eq!(denied["http_status"], 403, "{report:#}");
    assert_eq!(denied["code"], -32003, "{report:#}");
    // Envoy's check came over TLS from the sidecar's certificate.
    let (_, stats) = envoy.admin_get("/stats?filter=ssl.handshake");
    assert!(
        stats
            .lines()
            .any(|l| l.contains("mcp-authz") && !l.ends_with(": 0")),
        "{stats}"
    );

    // A host the mesh table does not map is denied, never sent to a default server
    // (Envoy Gateway's route has no such host at all: its own 404).
    if template != "istio-sidecar.yaml" {
        return;
    }
    let report = through(
        "mail.mcp.svc.cluster.local",
        "erin",
        json!([{"op": "list_tools"}]),
    );
    assert_eq!(report["initialize"]["ok"], false, "{report:#}");
    let text = report.to_string();
    assert!(text.contains("403"), "{report:#}");
    assert!(
        authz
            .find_log(|l| l.contains("no MCP server for authority"))
            .is_some()
            || text.contains("no MCP server for authority"),
        "{report:#}\n{}",
        authz.log_text()
    );
}

#[test]
fn an_envoy_without_a_client_certificate_of_the_mesh_fails_closed() {
    let dir = WorkDir::new("e2e-mesh-tls-");
    let ca = Ca::new(dir.path(), "mesh");
    let authz = Service::start(&repo().join("policies"), Some(&example_config(&dir, &ca)));
    // A certificate of another CA: mcp-authz refuses the handshake, Envoy answers 503.
    let other = Ca::new(dir.path(), "other");
    let stranger = other.workload("sidecar", SIDECAR, &[]);
    let docs = McpServer::start("docs");
    let envoy = Envoy::start(
        &repo().join("examples/mesh/istio-sidecar.yaml"),
        &[
            ("AUTHZ_GRPC_PORT", authz.grpc_port().to_string()),
            ("DOCS_PORT", docs.port().to_string()),
            ("AUTHZ_CA", ca.cert.display().to_string()),
            ("CLIENT_CERT", stranger.cert.display().to_string()),
            ("CLIENT_KEY", stranger.key.display().to_string()),
        ],
    );
    let report = run_client_opts(
        &envoy.url("/mcp"),
        Some(&demo_token("erin")),
        json!([{"op": "list_tools"}]),
        &ClientOptions {
            host: Some("docs.mcp.svc.cluster.local".to_owned()),
            ..ClientOptions::default()
        },
    );
    assert_eq!(report["initialize"]["ok"], false, "{report:#}");
    assert!(report.to_string().contains("503"), "{report:#}");
    assert!(
        docs.jsonrpc_methods().is_empty(),
        "nothing reached the MCP server"
    );
}
