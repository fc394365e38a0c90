//! Shadow policies with the whole service in-process (`support::inproc::Service`): a
//! shadow policy directory (`shadow.policies`) and `@shadow` policies in the live set
//! are decided beside the live set, never change a live answer on any interface,
//! and their disagreements reach `/metrics`, the decision log and `/v1/policies`.

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use serde_json::{Value, json};

use crate::support::gateway::{channel, client, parsed};
use crate::support::inproc::{Launch, Service};
use crate::support::tokens::demo_token as token;
use crate::support::{config, copy_of_reference, envoy, http, poll, replace_file};

/// A forbid of `docs/get_document` for everyone, as a candidate would add it.
const CANDIDATE_FORBID: &str = r#"@id("candidate-no-get-document")
forbid (
  principal,
  action in Mcp::Action::"tools/call",
  resource == Mcp::Tool::"docs/get_document"
);
"#;

/// The same forbid, landed in the live set under `@shadow`.
const SHADOW_FORBID: &str = r#"@id("staged-no-get-document")
@shadow("watch for a week")
forbid (
  principal,
  action in Mcp::Action::"tools/call",
  resource == Mcp::Tool::"docs/get_document"
);
"#;

const GET: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}}"#;

/// alice through CorpAssist gets a document: allowed by the reference policies.
fn alice_gets_document() -> Value {
    json!({
        "subject": { "type": "user", "id": "alice" },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": "docs/get_document" },
        "context": { "agent": "corpassist", "arguments": { "document_id": "titan/q1-strategy" } }
    })
}

struct Setup {
    dir: tempfile::TempDir,
    server: Service,
}

impl Setup {
    fn decisions_file(&self) -> std::path::PathBuf {
        self.dir.path().join("decisions.jsonl")
    }

    /// The decision log's records so far.
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.decisions_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// The service on `live` with the demo issuer, a trusted caller, a decision log
/// file and `shadow` (a `[shadow]` section body).
fn start(live: &Path, shadow: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = config::write(
        dir.path(),
        &[
            "[decision_log]\nfile = \"decisions.jsonl\"\n",
            &config::trusted_caller(dir.path()),
            &config::demo_issuer(),
            &format!("[shadow]\n{shadow}"),
        ],
    );
    let server = Launch::new(live).admin().config(&file).start();
    Setup { dir, server }
}

fn authzen(s: &Service) -> bool {
    let (status, body) = http::post_json(&s.http, "/access/v1/evaluation", &alice_gets_document())
        .expect("evaluation");
    assert_eq!(status, 200, "{body}");
    body["decision"].as_bool().expect("decision")
}

/// The value of the series whose line starts with `start` (labels included).
fn metric(s: &Service, start: &str) -> Option<u64> {
    let (_, text) = http::get(&s.http, "/metrics")?;
    text.lines()
        .find(|l| l.starts_with(start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn policies(s: &Service) -> Value {
    let (status, body) = http::get(&s.admin, "/v1/policies").expect("policies");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("json")
}

const LONG: Duration = Duration::from_secs(20);

#[test]
fn a_shadow_directory_with_an_added_forbid_never_changes_the_live_answer() {
    let live = copy_of_reference();
    let candidate = copy_of_reference();
    std::fs::write(candidate.path().join("candidate.cedar"), CANDIDATE_FORBID).expect("write");
    let s = start(
        live.path(),
        &format!("policies = \"{}\"\n", candidate.path().display()),
    );
    assert!(authzen(&s.server), "the live set allows");

    let disagreements =
        "mcp_authz_shadow_disagreements_total{policy=\"candidate-no-get-document\"}";
    assert_eq!(
        poll(LONG, || metric(&s.server, disagreements)
            .filter(|n| *n >= 1)),
        Some(1)
    );
    assert_eq!(
        metric(
            &s.server,
            "mcp_authz_shadow_decisions_total{live=\"allow\",shadow=\"deny\"}"
        ),
        Some(1)
    );
    assert_eq!(metric(&s.server, "mcp_authz_shadow_dropped_total"), Some(0));

    // The decision log: the live record, then the shadow record naming it.
    let shadow = poll(LONG, || {
        s.records().into_iter().find(|r| r["record"] == "shadow")
    })
    .expect("a shadow record");
    let records = s.records();
    let live_record = records
        .iter()
        .find(|r| r.get("record").is_none() && r["decision_id"] == shadow["decision_id"])
        .expect("the live record of the shadowed decision");
    assert_eq!(live_record["decision"], "allow");
    assert_eq!(shadow["set"], "directory");
    assert_eq!(shadow["live"]["decision"], "allow");
    assert_eq!(shadow["shadow"]["decision"], "deny");
    assert_eq!(shadow["live"]["digest"], live_record["policy_digest"]);
    assert_ne!(shadow["shadow"]["digest"], shadow["live"]["digest"]);
    assert_eq!(
        shadow["shadow"]["policies"],
        json!(["candidate-no-get-document"])
    );
    assert_eq!(
        shadow["live"]["policies"],
        json!(["corpassist-read-docs", "employees-use-docs"])
    );
    assert_eq!(shadow["difference"], json!(["candidate-no-get-document"]));
    assert_eq!(shadow["user"], "Mcp::User::\"alice\"");
    assert_eq!(shadow["application"], "Mcp::Application::\"corpassist\"");
    assert_eq!(shadow["resource"], "Mcp::Tool::\"docs/get_document\"");

    // `/v1/policies` shows both sets and their digests.
    let p = policies(&s.server);
    assert_eq!(
        p["shadow"]["directory"],
        json!(candidate.path().display().to_string())
    );
    assert_eq!(p["shadow"]["digest"]["content"], shadow["shadow"]["digest"]);
    assert_eq!(p["digest"]["content"], shadow["live"]["digest"]);
    assert_eq!(p["shadow"]["in_sync"], true);
    assert!(
        p["shadow"]["policy_ids"]
            .as_array()
            .expect("ids")
            .contains(&json!("candidate-no-get-document"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_forbid_is_counted_and_logged_and_never_enforced_on_any_interface() {
    let live = copy_of_reference();
    std::fs::write(live.path().join("staged.cedar"), SHADOW_FORBID).expect("write");
    let s = start(live.path(), "");
    let server = &s.server;

    // AuthZEN, one and a batch of two.
    let http_addr = server.http.clone();
    let (one, batch) = tokio::task::spawn_blocking(move || {
        let (_, one) = http::post_json(&http_addr, "/access/v1/evaluation", &alice_gets_document())
            .expect("evaluation");
        let (_, batch) = http::post_json(
            &http_addr,
            "/access/v1/evaluations",
            &json!({ "evaluations": [alice_gets_document(), alice_gets_document()] }),
        )
        .expect("evaluations");
        (one, batch)
    })
    .await
    .expect("join");
    assert_eq!(one["decision"], true, "{one}");
    for e in batch["evaluations"].as_array().expect("evaluations") {
        assert_eq!(e["decision"], true, "{batch}");
    }
    // The gateway's gRPC API, with erin's token (CorpAssist).
    let mut gateway = client(&server.grpc).await;
    let r = gateway
        .check(tonic::Request::new(parsed(
            crate::support::gateway::bearer(token("erin")),
            "docs",
            "tools/call",
            "get_document",
            None,
        )))
        .await
        .expect("check")
        .into_inner();
    assert!(r.allowed, "{r:?}");
    // Envoy ext_authz over gRPC and over HTTP.
    let mut envoy_client = AuthorizationClient::new(channel(&server.grpc).await);
    let answer = envoy_client
        .check(envoy::post(GET).bearer(&token("erin")).json().build())
        .await
        .expect("ext_authz")
        .into_inner();
    assert_eq!(envoy::status(&answer).0, 200, "{answer:?}");
    let http_addr = server.http.clone();
    let (status, _, body) = tokio::task::spawn_blocking(move || {
        http::request(
            &http_addr,
            "POST",
            "/ext_authz/mcp",
            &[
                ("Content-Type", "application/json"),
                ("x-mcp-authz-server", "docs"),
                ("Authorization", &format!("Bearer {}", token("erin"))),
            ],
            GET,
        )
        .expect("ext_authz http")
    })
    .await
    .expect("join");
    assert_eq!(status, 200, "{body}");

    // Every one of those decisions was shadowed, and each disagreed.
    let disagreements = "mcp_authz_shadow_disagreements_total{policy=\"staged-no-get-document\"}";
    let addr = server.http.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let metric_at = |start: &str| {
            let (_, text) = http::get(&addr, "/metrics")?;
            text.lines()
                .find(|l| l.starts_with(start))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        let n = poll(LONG, || metric_at(disagreements).filter(|n| *n >= 6));
        let both = metric_at("mcp_authz_shadow_decisions_total{live=\"allow\",shadow=\"deny\"}");
        (n, both)
    })
    .await
    .expect("join");
    assert_eq!(counted.0, Some(6), "six decisions, six disagreements");
    assert_eq!(counted.1, Some(6));

    let records = poll(LONG, || {
        let r: Vec<Value> = s
            .records()
            .into_iter()
            .filter(|r| r["record"] == "shadow")
            .collect();
        (r.len() >= 6).then_some(r)
    })
    .expect("six shadow records");
    for r in &records {
        assert_eq!(r["set"], "annotations", "{r}");
        assert_eq!(r["live"]["decision"], "allow", "{r}");
        assert_eq!(r["shadow"]["decision"], "deny", "{r}");
        assert_eq!(
            r["shadow"]["shadow_policies"],
            json!(["staged-no-get-document"])
        );
        // The same files: one digest.
        assert_eq!(r["live"]["digest"], r["shadow"]["digest"]);
    }
    // Every live record is an allow.
    let live_records: Vec<Value> = s
        .records()
        .into_iter()
        .filter(|r| r.get("record").is_none())
        .collect();
    assert!(live_records.len() >= 6);
    assert!(live_records.iter().all(|r| r["decision"] == "allow"));
    let p = policies(server);
    assert_eq!(p["shadow_policies"], json!(["staged-no-get-document"]));
    assert_eq!(p["shadow"], Value::Null);
}

#[test]
fn a_shadow_directory_is_reloaded_and_a_broken_change_keeps_the_last_good_one() {
    let live = copy_of_reference();
    let candidate = copy_of_reference();
    let s = start(
        live.path(),
        &format!("policies = \"{}\"\n", candidate.path().display()),
    );
    assert!(authzen(&s.server));
    let agreed = "mcp_authz_shadow_decisions_total{live=\"allow\",shadow=\"allow\"}";
    assert_eq!(
        poll(LONG, || metric(&s.server, agreed).filter(|n| *n >= 1)),
        Some(1)
    );
    let first = policies(&s.server)["shadow"]["digest"]["content"].clone();

    replace_file(&candidate.path().join("candidate.cedar"), CANDIDATE_FORBID);
    let reloaded = poll(LONG, || {
        let p = policies(&s.server);
        (p["shadow"]["generation"] == 2).then_some(p)
    })
    .expect("the shadow set reloads");
    assert_ne!(reloaded["shadow"]["digest"]["content"], first);
    assert_eq!(reloaded["generation"], 1, "the live set is untouched");
    assert!(authzen(&s.server), "still allowed live");
    let denied = "mcp_authz_shadow_decisions_total{live=\"allow\",shadow=\"deny\"}";
    assert_eq!(
        poll(LONG, || metric(&s.server, denied).filter(|n| *n >= 1)),
        Some(1)
    );

    // A broken change: the last good shadow set still decides.
    replace_file(&candidate.path().join("broken.cedar"), "permit (principal,");
    let broken = poll(LONG, || {
        let p = policies(&s.server);
        (p["shadow"]["in_sync"] == false).then_some(p)
    })
    .expect("the broken change is seen");
    assert_eq!(broken["shadow"]["generation"], 2);
    assert_eq!(broken["in_sync"], true, "the live set is in sync");
    assert_eq!(
        metric(&s.server, "mcp_authz_shadow_policies_in_sync"),
        Some(0)
    );
    assert!(authzen(&s.server));
    assert_eq!(
        poll(LONG, || metric(&s.server, denied).filter(|n| *n >= 2)),
        Some(2)
    );
}

#[test]
fn an_invalid_shadow_directory_at_start_is_refused() {
    let live = copy_of_reference();
    let candidate = copy_of_reference();
    replace_file(&candidate.path().join("broken.cedar"), "permit (principal,");
    let service = Launch::new(live.path())
        .envs(&[(
            "MCP_AUTHZ_SHADOW_POLICIES",
            &candidate.path().display().to_string(),
        )])
        .listening()
        .start();
    match service.stop() {
        Err(mcp_authz::app::AppError::ShadowPolicies { dir, problems }) => {
            assert_eq!(dir, candidate.path());
            assert!(problems.errors().count() >= 1);
        }
        other => panic!("expected the shadow policy problems, got {other:?}"),
    }

    // `serve --shadow-policies` exits 2 with the problems, like an invalid live set.
    let out = crate::support::process::run(
        crate::support::process::bin()
            .args([
                "serve",
                "--http-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                "--policies",
            ])
            .arg(live.path())
            .arg("--shadow-policies")
            .arg(candidate.path()),
    );
    let (_, err) = crate::support::process::text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("broken.cedar"), "{err}");
    assert!(err.contains("is not a valid policy directory"), "{err}");
}
