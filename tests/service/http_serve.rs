//! The service over real sockets (in-process, `support::inproc::Service`): AuthZEN, a
//! live reload seen over HTTP, the admin listener, metrics and the decision log file;
//! and `mcp-authz serve` refusing an unusable setting before it binds.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::inproc::{Launch, Service};
use crate::support::process;
use crate::support::{SUMMARIZER_GRANT, copy_of_reference, http, poll, reference_policies};

fn summarizer_gets_document() -> Value {
    json!({
        "subject": { "type": "user", "id": "bob" },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": "docs/get_document" },
        "context": { "agent": "summarizer", "arguments": { "document_id": "q1", "password": "hunter2" } }
    })
}

fn decide(server: &Service) -> Option<bool> {
    let (status, body) = http::post_json(
        &server.http,
        "/access/v1/evaluation",
        &summarizer_gets_document(),
    )?;
    assert_eq!(status, 200, "{body}");
    body["decision"].as_bool()
}

fn policies(server: &Service) -> Value {
    let (status, body) = http::get(&server.admin, "/v1/policies").expect("policies");
    assert_eq!(status, 200);
    serde_json::from_str(&body).expect("json")
}

fn metric(server: &Service, line_start: &str) -> Option<String> {
    let (_, text) = http::get(&server.http, "/metrics")?;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
}

#[test]
fn a_live_reload_changes_the_answers_and_a_broken_edit_keeps_them() {
    let dir = copy_of_reference();
    let conf = tempfile::tempdir().expect("tempdir");
    let config = conf.path().join("mcp-authz.toml");
    std::fs::write(
        &config,
        // `password` is no argument of get_document: left out of the decision
        // (and still logged, redacted) under `allow_undeclared_arguments`.
        "[decision_log]\nfile = \"decisions.jsonl\"\ninclude_arguments = true\n\n\
         [decisions]\nallow_undeclared_arguments = true\n",
    )
    .expect("write");
    let server = Launch::new(dir.path()).admin().config(&config).start();
    assert_eq!(decide(&server), Some(false));
    assert_eq!(
        metric(&server, "mcp_authz_policy_generation "),
        Some("1".into())
    );

    // An edit: the next evaluations change.
    let path = dir.path().join("applications.cedar");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("{text}\n{SUMMARIZER_GRANT}")).expect("write");
    poll(Duration::from_secs(5), || {
        decide(&server).filter(|d| *d).map(|_| ())
    })
    .expect("the edit was not picked up");
    assert_eq!(policies(&server)["generation"], 2);

    // A broken edit: the old answers stay; the status and the gauge show it.
    std::fs::write(
        dir.path().join("broken.cedar"),
        "permit(principal, action, resource\n",
    )
    .expect("write");
    let status = poll(Duration::from_secs(5), || {
        let p = policies(&server);
        (p["in_sync"] == false).then_some(p)
    })
    .expect("the broken edit was not noticed");
    assert!(
        status["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("broken.cedar:1:")),
        "{status}"
    );
    assert_eq!(status["generation"], 2);
    assert_eq!(decide(&server), Some(true));
    assert_eq!(
        metric(&server, "mcp_authz_policies_in_sync "),
        Some("0".into())
    );
    assert_eq!(http::get(&server.http, "/readyz").map(|r| r.0), Some(200));

    // Fixed: back in sync; an explicit reload over the admin listener works too.
    std::fs::remove_file(dir.path().join("broken.cedar")).expect("rm");
    poll(Duration::from_secs(5), || {
        (metric(&server, "mcp_authz_policies_in_sync ")? == "1").then_some(())
    })
    .expect("back in sync");
    let (status, _, body) =
        http::request(&server.admin, "POST", "/v1/reload", &[], "").expect("reload");
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["outcome"], "reloaded");
    assert_eq!(body["generation"], 3);

    // Every decision went to the decision log file, arguments redacted.
    let log = conf.path().join("decisions.jsonl");
    let records = poll(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record"))
            .collect();
        let decisions = metric(
            &server,
            "mcp_authz_decisions_total{interface=\"authzen\",decision=\"allow\"}",
        )?
        .parse::<usize>()
        .ok()?
            + metric(
                &server,
                "mcp_authz_decisions_total{interface=\"authzen\",decision=\"deny\"}",
            )?
            .parse::<usize>()
            .ok()?;
        (records.len() == decisions).then_some(records)
    })
    .expect("decision log records");
    let first = &records[0];
    assert_eq!(
        (first["decision"].clone(), first["generation"].clone()),
        (json!("deny"), json!(1))
    );
    assert_eq!(
        first["arguments"],
        json!({ "document_id": "q1", "password": "[REDACTED]" })
    );
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "allow" && r["generation"] == 2)
    );
    assert!(records.iter().all(|r| r["interface"] == "authzen"));
}

#[test]
fn authzen_endpoints_on_the_socket() {
    let server = Service::start(&reference_policies(), None);
    let (status, headers, body) = http::request(
        &server.http,
        "GET",
        "/.well-known/authzen-configuration",
        &[],
        "",
    )
    .expect("metadata");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json"))
    );
    let m: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        m["policy_decision_point"],
        format!("http://{}", server.http)
    );
    let (status, headers, body) = http::request(
        &server.http,
        "POST",
        "/access/v1/evaluations",
        &[
            ("Content-Type", "application/json"),
            ("X-Request-ID", "abc-123"),
        ],
        &json!({
            "subject": { "type": "user", "id": "alice" },
            "action": { "name": "tools/call" },
            "context": { "agent": "corpassist", "arguments": { "document_id": "titan/q1-strategy" } },
            "evaluations": [
                { "resource": { "type": "tool", "id": "docs/get_document" } },
                { "resource": { "type": "tool", "id": "docs/delete_document" } }
            ]
        })
        .to_string(),
    )
    .expect("evaluations");
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-request-id" && v == "abc-123")
    );
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v,
        json!({ "evaluations": [{ "decision": true }, { "decision": false }] })
    );
    let (status, _, _) = http::request(
        &server.http,
        "POST",
        "/access/v1/evaluation",
        &[("Content-Type", "text/plain")],
        "{}",
    )
    .expect("bad request");
    assert_eq!(status, 400);
}

#[test]
fn unusable_admin_token_or_decision_log_fail_before_binding() {
    for (name, value) in [
        ("MCP_AUTHZ_ADMIN_TOKEN_FILE", "/nonexistent/admin.token"),
        (
            "MCP_AUTHZ_DECISION_LOG_FILE",
            "/nonexistent/dir/decisions.jsonl",
        ),
    ] {
        let out = process::run(
            process::bin()
                .args([
                    "serve",
                    "--http-listen",
                    "127.0.0.1:0",
                    "--grpc-listen",
                    "127.0.0.1:0",
                    "--policies",
                ])
                .arg(reference_policies())
                .env(name, value),
        );
        let (_, err) = process::text(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("/nonexistent/"), "{err}");
        assert!(!err.contains("listening"), "{err}");
    }
}
