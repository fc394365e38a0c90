//! Dry run (`decisions.dry_run`, `serve --dry-run`): every request is decided and
//! logged as usual and answered allow on every interface, with the would-be decision
//! beside the answer; reported in `/readyz`, `/metrics` and every decision record.

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use mcp_authz::api::proto::v1::{self as pb, FilterListRequest, filter_list_request};
use serde_json::{Value, json};

use crate::support::gateway::{bearer, channel, client, parsed};
use crate::support::inproc::{Launch, Service};
use crate::support::tokens::demo_token;
use crate::support::{config, envoy, http, poll, reference_policies};

const DELETE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_document","arguments":{"document_id":"titan/q1-strategy"}}}"#;
const GET: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}}"#;

struct Setup {
    dir: tempfile::TempDir,
    service: Service,
}

fn start(dry_run: bool) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("decisions.jsonl");
    let file = config::write(
        dir.path(),
        &[
            &config::demo_issuer(),
            &format!("[decision_log]\nfile = {:?}\n", log.display().to_string()),
        ],
    );
    let launch = Launch::new(&reference_policies()).config(&file).admin();
    let service = if dry_run {
        launch.envs(&[("MCP_AUTHZ_DECISIONS_DRY_RUN", "true")])
    } else {
        launch
    }
    .start();
    Setup { dir, service }
}

impl Setup {
    /// The decision log's records, once `n` are written.
    fn records(&self, n: usize) -> Vec<Value> {
        let path = self.dir.path().join("decisions.jsonl");
        poll(std::time::Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&path).ok()?;
            let records: Vec<Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            (records.len() >= n).then_some(records)
        })
        .unwrap_or_else(|| panic!("fewer than {n} decision records"))
    }
}

/// The gateway API's answer to erin's `delete_document` (denied by the policies).
async fn erin_deletes(
    gateway: &mut mcp_authz::api::proto::v1::authorizer_client::AuthorizerClient<
        tonic::transport::Channel,
    >,
) -> pb::CheckResponse {
    gateway
        .check(parsed(
            bearer(demo_token("erin")),
            "docs",
            "tools/call",
            "delete_document",
            None,
        ))
        .await
        .expect("check")
        .into_inner()
}

/// The headers an allow of Envoy's gRPC mode sets upstream.
fn upstream_headers(r: &envoy_types::ext_authz::v3::pb::CheckResponse) -> Vec<(String, String)> {
    match &r.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok
            .headers
            .iter()
            .filter_map(|h| h.header.as_ref())
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interface_answers_allow_and_says_what_was_decided() {
    let s = start(true);
    let erin = demo_token("erin");

    // Envoy, gRPC mode: the denied call goes through, marked; the allowed one as usual.
    let mut envoy = AuthorizationClient::new(channel(&s.service.grpc).await);
    let denied = envoy
        .check(envoy::post(DELETE).bearer(&erin).json().build())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(envoy::status(&denied).0, 200, "{denied:?}");
    let headers = upstream_headers(&denied);
    assert!(
        headers.contains(&("x-mcp-authz-would-be".into(), "deny".into())),
        "{headers:?}"
    );
    assert!(
        !headers.iter().any(|(k, _)| k == "x-mcp-authz-user"),
        "no identity is forwarded for a denied request: {headers:?}"
    );
    let allowed = envoy
        .check(envoy::post(GET).bearer(&erin).json().build())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(envoy::status(&allowed).0, 200);
    assert!(
        !upstream_headers(&allowed)
            .iter()
            .any(|(k, _)| k == "x-mcp-authz-would-be")
    );
    // A refusal (no credentials) is let through too.
    let anonymous = envoy
        .check(envoy::post(GET).json().build())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(envoy::status(&anonymous).0, 200, "{anonymous:?}");

    // Envoy, HTTP mode.
    let bearer_header = format!("Bearer {erin}");
    let (status, headers, body) = http::request(
        &s.service.http,
        "POST",
        "/ext_authz/mcp",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer_header),
            ("x-mcp-authz-server", "docs"),
        ],
        DELETE,
    )
    .expect("answer");
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-mcp-authz-would-be" && v == "deny"),
        "{headers:?}"
    );

    // The gateway API: allowed, and what was decided.
    let mut gateway = client(&s.service.grpc).await;
    let check = erin_deletes(&mut gateway).await;
    assert!(
        check.allowed && check.dry_run && !check.decided_allowed,
        "{check:?}"
    );
    assert!(check.error.is_none(), "{check:?}");
    let list = gateway
        .filter_list(FilterListRequest {
            identity: Some(bearer(erin.clone())),
            server: "docs".into(),
            method: "tools/list".into(),
            list: Some(filter_list_request::List::Names(pb::Names {
                names: vec!["get_document".into(), "delete_document".into()],
            })),
            ..FilterListRequest::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        list.allowed,
        vec!["get_document", "delete_document"],
        "{list:?}"
    );
    assert!(list.denied.is_empty() && list.dry_run, "{list:?}");
    assert_eq!(list.would_deny, vec!["delete_document"]);

    // AuthZEN.
    let (status, answer) = http::post_json(
        &s.service.http,
        "/access/v1/evaluation",
        &json!({
            "subject": {"type": "user", "id": "alice"},
            "action": {"name": "tools/call"},
            "resource": {"type": "tool", "id": "docs/delete_document"},
            "context": {"agent": "corpassist"}
        }),
    )
    .expect("answer");
    assert_eq!(status, 200);
    assert_eq!(answer["decision"], true, "{answer}");
    assert_eq!(answer["context"]["dry_run"]["decision"], false, "{answer}");

    // Reported: readiness, metrics, and every record with the real decision.
    let (status, body) = http::get(&s.service.admin, "/readyz").expect("readyz");
    assert_eq!(status, 200);
    assert!(body.contains("DRY RUN"), "{body}");
    let (_, metrics) = http::get(&s.service.http, "/metrics").expect("metrics");
    assert!(
        metrics.lines().any(|l| l == "mcp_authz_dry_run 1"),
        "{metrics}"
    );
    let records = s.records(7);
    assert!(records.iter().all(|r| r["dry_run"] == true), "{records:#?}");
    let deletes = records
        .iter()
        .filter(|r| r["resource"] == "Mcp::Tool::\"docs/delete_document\"")
        .count();
    assert!(deletes >= 3, "{records:#?}");
    assert!(
        records
            .iter()
            .filter(|r| r["resource"] == "Mcp::Tool::\"docs/delete_document\"")
            .all(|r| r["decision"] == "deny"),
        "{records:#?}"
    );
    assert!(s.service.find_log(|l| l.contains("DRY RUN")).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dry_run_nothing_changes() {
    let s = start(false);
    let mut gateway = client(&s.service.grpc).await;
    let check = erin_deletes(&mut gateway).await;
    assert!(
        !check.allowed && !check.dry_run && !check.decided_allowed,
        "{check:?}"
    );
    assert!(check.error.is_some());
    let (_, body) = http::get(&s.service.admin, "/readyz").expect("readyz");
    assert_eq!(body, "ready\n");
    let (_, metrics) = http::get(&s.service.http, "/metrics").expect("metrics");
    assert!(
        metrics.lines().any(|l| l == "mcp_authz_dry_run 0"),
        "{metrics}"
    );
    let records = s.records(1);
    assert!(
        records.iter().all(|r| r.get("dry_run").is_none()),
        "{records:#?}"
    );
}

#[test]
fn serve_help_names_the_dry_run_flag_and_its_variable() {
    let out =
        crate::support::process::run(crate::support::process::bin().args(["serve", "--help"]));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--dry-run"), "{help}");
    assert!(help.contains("MCP_AUTHZ_DECISIONS_DRY_RUN"), "{help}");
    // The flag is a flag of the configuration: it turns the dry run (and its mark in
    // the decision log) on.
    let flags = mcp_authz::config::Overrides {
        dry_run: true,
        ..Default::default()
    };
    let config =
        mcp_authz::config::Config::load(None, &Default::default(), &flags).expect("config");
    assert!(config.dry_run && config.decision_log.dry_run);
    let config = mcp_authz::config::Config::load(None, &Default::default(), &Default::default())
        .expect("config");
    assert!(!config.dry_run && !config.decision_log.dry_run);
}
