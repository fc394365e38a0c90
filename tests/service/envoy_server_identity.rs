//! The MCP server of an Envoy request from the mesh, as Istio's CUSTOM provider and
//! Envoy Gateway send it (no `context_extensions`): the whole service from a config
//! file, asked over gRPC (`Authorization/Check`) and the HTTP mode (`/ext_authz`).

use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

use crate::support::gateway::channel;
use crate::support::inproc::{Launch, Service};
use crate::support::process::{bin, run, text};
use crate::support::{config, envoy, http, reference_policies};

const CORPASSIST: &str = "spiffe://corp.example/ns/apps/sa/corpassist";
const DOCS_WORKLOAD: &str = "spiffe://corp.example/ns/docs/sa/docs-server";
const GET: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}}"#;
const MESH: &str = "[spiffe]\ntrust_domains = [\"corp.example\"]\n\
[envoy.servers]\n\"docs.*.svc.cluster.local\" = \"docs\"\n\"tickets.example.com\" = \"tickets\"\n\
[envoy.principals]\n\"spiffe://corp.example/ns/docs/sa/docs-server\" = \"docs\"\n";

fn start(dir: &tempfile::TempDir) -> Service {
    let file = config::write(
        dir.path(),
        &[
            &config::trusted_caller(dir.path()),
            &config::demo_issuer(),
            MESH,
        ],
    );
    // These tests read which server (or none) a refusal names in the client's error.
    Launch::new(&reference_policies())
        .config(&file)
        .full_denials()
        .start()
}

/// corpassist's `get_document`, with no route server.
fn mesh_get() -> envoy::Check {
    envoy::post(GET)
        .no_route_server()
        .principal(CORPASSIST)
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_takes_the_server_from_the_authority_or_the_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let mut envoy = AuthorizationClient::new(channel(&s.grpc).await);
    let mut ask =
        async |c: CheckRequest| envoy::status(&envoy.check(c).await.expect("check").into_inner());
    let cases: [(&str, envoy::Check, u16, &str); 4] = [
        (
            "authority",
            mesh_get().host("docs.prod.svc.cluster.local:8080"),
            200,
            "",
        ),
        (
            "destination",
            mesh_get().host("10.1.2.3:8080").destination(DOCS_WORKLOAD),
            200,
            "",
        ),
        // The destination outranks the authority: `tickets` by the host, `docs` by the workload.
        (
            "destination first",
            mesh_get()
                .host("tickets.example.com")
                .destination(DOCS_WORKLOAD),
            200,
            "",
        ),
        (
            "unmapped",
            mesh_get().host("mail.example.com"),
            403,
            "no MCP server for authority `mail.example.com`",
        ),
    ];
    for (name, check, status, reason) in cases {
        let (got, body) = ask(check.build()).await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(body.contains(reason), "{name}: {body}");
    }
    // The route's server outranks both: `tickets`, where the call is denied by policy.
    let mut routed = mesh_get()
        .host("docs.prod.svc.cluster.local")
        .destination(DOCS_WORKLOAD)
        .build();
    if let Some(a) = routed.attributes.as_mut() {
        a.context_extensions
            .insert("mcp_server".into(), "tickets".into());
    }
    let (got, body) = ask(routed).await;
    assert_eq!(got, 403, "{body}");
    assert!(!body.contains("no MCP server"), "{body}");
}

#[test]
fn http_mode_takes_the_server_from_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(&dir);
    let ask = |host: &str| {
        http::request(
            &s.http,
            "POST",
            "/ext_authz/mcp",
            &[
                ("Host", host),
                ("Content-Type", "application/json"),
                ("x-mcp-authz-spiffe-id", CORPASSIST),
                (
                    "x-mcp-authz-caller-token",
                    crate::support::gateway::CALLER_SECRET,
                ),
            ],
            GET,
        )
        .expect("ext_authz")
    };
    let (status, _, body) = ask("DOCS.staging.svc.cluster.local");
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = ask("mail.example.com:8443");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("no MCP server for authority `mail.example.com:8443`"),
        "{body}"
    );
}

#[test]
fn a_malformed_pattern_stops_the_service_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config::write(
        dir.path(),
        &["[envoy.servers]\n\"docs-*.example.com\" = \"docs\"\n"],
    );
    let out = run(bin()
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&file)
        .arg("--policies")
        .arg(reference_policies()));
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("envoy.servers") && err.contains("`*` inside a label"),
        "{err}"
    );
}

/// The HTTP mode has no `attributes.destination.principal`: Envoy adds the
/// destination workload's SPIFFE ID as `x-mcp-authz-destination-principal`, honoured
/// with the caller secret only and mapped by `[envoy.principals]`. Each decision
/// record says where its server came from.
#[test]
fn http_mode_takes_the_destination_principal_with_the_caller_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config::write(
        dir.path(),
        &[
            &config::trusted_caller(dir.path()),
            &config::demo_issuer(),
            MESH,
            "[decision_log]\nfile = \"decisions.jsonl\"\n",
        ],
    );
    let s = Launch::new(&reference_policies())
        .config(&file)
        .full_denials()
        .start();
    let ask = |headers: &[(&str, &str)]| {
        let mut all = vec![
            ("Host", "10.1.2.3:8080"),
            ("Content-Type", "application/json"),
        ];
        all.extend_from_slice(headers);
        http::request(&s.http, "POST", "/ext_authz/mcp", &all, GET).expect("ext_authz")
    };
    let secret = (
        "x-mcp-authz-caller-token",
        crate::support::gateway::CALLER_SECRET,
    );
    let caller = ("x-mcp-authz-spiffe-id", CORPASSIST);
    let destination = ("x-mcp-authz-destination-principal", DOCS_WORKLOAD);
    // From the trusted caller: the unmapped host does not matter, the workload names `docs`.
    let (status, _, body) = ask(&[caller, secret, destination]);
    assert_eq!(status, 200, "{body}");
    // Without the destination: the host names no server.
    let (status, _, body) = ask(&[caller, secret]);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("no MCP server for authority `10.1.2.3:8080`"),
        "{body}"
    );
    // From anyone else: refused.
    let bearer = format!("Bearer {}", crate::support::tokens::demo_token("erin"));
    let (status, _, body) = ask(&[("Authorization", &bearer), destination]);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("x-mcp-authz-destination-principal") && body.contains("trusted caller"),
        "{body}"
    );
    s.stop().expect("stopped");
    let log = std::fs::read_to_string(dir.path().join("decisions.jsonl")).expect("decision log");
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    let sources: Vec<_> = records.iter().map(|r| r["server_source"].clone()).collect();
    assert_eq!(
        sources,
        [
            serde_json::json!("principal"),
            serde_json::Value::Null,
            serde_json::Value::Null
        ],
        "{log}"
    );
    assert_eq!(records[0]["server"], "Mcp::Server::\"docs\"");
    assert!(
        records.iter().all(|r| r["policy_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))),
        "{log}"
    );
}
