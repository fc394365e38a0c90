//! Safe policy rollout end to end, with real traffic: real Envoy (ext_authz over gRPC) in
//! front of the real MCP servers, the real MCP client as erin. The live policies are a
//! symlink `current` to a release directory (`releases/v1`); the candidate `releases/v2`
//! is staged as the shadow set, and one new rule of v1 is a `@shadow` policy. The test
//! watches the disagreements (`/metrics`, the decision log's shadow records), replays the
//! decision log against the candidate (`mcp-authz replay`), promotes it by swapping the
//! symlink, and sees the live answers change.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Envoy, McpServer, envoy_example, envoy_vars, run_client};
use crate::support::inproc::Service;
use crate::support::process::{WorkDir, bin, run, text};
use crate::support::tokens::demo_token;
use crate::support::{config, http, poll, reference_policies};

/// v1 adds a rule to watch before it bites: a `@shadow` forbid of `search_documents`.
const WATCH_SEARCH: &str = "@id(\"watch-search\")\n@shadow\nforbid (principal, action == Mcp::Action::\"tools/call/docs/search_documents\", resource);\n";
/// v2, the candidate: no more `get_document` for anyone.
const NO_GET: &str = "@id(\"v2-no-get-document\")\nforbid (principal, action == Mcp::Action::\"tools/call/docs/get_document\", resource);\n";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else if !entry.file_name().to_string_lossy().ends_with(".test.yaml") {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// Point `link` at `target` atomically (a new link renamed over the old one), as a
/// blue/green promotion does.
fn swap_symlink(link: &Path, target: &Path) {
    let next = link.with_extension("next");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(target, &next).expect("symlink");
    std::fs::rename(&next, link).expect("rename over the link");
}

fn steps() -> Value {
    json!([
        {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
        {"op": "call_tool", "name": "search_documents", "arguments": {"query": "titan", "max_results": 20}},
        {"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}},
    ])
}

fn metric(http_addr: &str, line_start: &str) -> f64 {
    let (_, text) = http::get(http_addr, "/metrics").expect("metrics");
    text.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn stage_watch_replay_and_promote_a_policy_change_with_real_traffic() {
    let root = WorkDir::new("e2e-rollout-");
    let v1 = root.path().join("releases/v1");
    let v2 = root.path().join("releases/v2");
    copy_dir(&reference_policies(), &v1);
    std::fs::write(v1.join("watch.cedar"), WATCH_SEARCH).expect("write");
    copy_dir(&v1, &v2);
    std::fs::remove_file(v2.join("watch.cedar")).expect("rm");
    std::fs::write(v2.join("v2.cedar"), NO_GET).expect("write");
    let current = root.path().join("current");
    std::os::unix::fs::symlink(&v1, &current).expect("symlink");
    let log = root.path().join("decisions.jsonl");
    let file = config::write(
        root.path(),
        &[
            &config::demo_issuer(),
            &format!(
                "[decision_log]\nfile = {:?}\ninclude_arguments = true\n[shadow]\npolicies = {:?}\n",
                log.display().to_string(),
                v2.display().to_string()
            ),
        ],
    );
    let authz = Service::start(&current, Some(&file));
    let docs = McpServer::start("docs");
    let projects = McpServer::start("projects");
    let envoy = Envoy::start(
        &envoy_example("envoy-grpc.yaml"),
        &envoy_vars(Some((&authz).into()), Some(&docs), Some(&projects)),
    );
    let url = envoy.url("/docs/mcp");
    let erin = demo_token("erin");

    // Live answers are v1's: get and search allowed, delete denied.
    let report = run_client(&url, Some(&erin), steps());
    assert_eq!(report["steps"][0]["ok"], true, "{report:#}");
    assert_eq!(report["steps"][1]["ok"], true, "{report:#}");
    assert_eq!(report["steps"][2]["ok"], false, "{report:#}");

    // The disagreements are counted and logged, off the request path.
    let watched = poll(Duration::from_secs(10), || {
        (metric(
            &authz.http,
            "mcp_authz_shadow_decisions_total{live=\"allow\",shadow=\"deny\"}",
        ) >= 2.0)
            .then_some(())
    });
    assert!(
        watched.is_some(),
        "{}",
        http::get(&authz.http, "/metrics").expect("metrics").1
    );
    let records = poll(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&log).ok()?;
        let shadow: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["record"] == "shadow")
            .collect();
        (shadow.len() >= 2).then_some(shadow)
    })
    .expect("shadow records");
    let shadow = serde_json::to_string(&records).expect("json");
    assert!(shadow.contains("v2-no-get-document"), "{shadow}");
    assert!(shadow.contains("watch-search"), "{shadow}");

    // Replay the day's log: against v2 the get_document calls change; against v1 nothing.
    let out = run(bin()
        .args(["replay", "--json", "--log"])
        .arg(&log)
        .arg("--policies")
        .arg(&v2));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("v2-no-get-document"), "{stdout}");
    let out = run(bin()
        .args(["replay", "--log"])
        .arg(&log)
        .arg("--policies")
        .arg(&v1));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));

    // Promote: the link now names v2; the watcher follows it, and the live answers change.
    swap_symlink(&current, &v2);
    let promoted = poll(Duration::from_secs(20), || {
        let report = run_client(&url, Some(&erin), steps());
        (report["steps"][0]["ok"] == false).then_some(report)
    })
    .expect("the promoted policies decide");
    assert_eq!(
        promoted["steps"][0]["error"]["http_status"], 403,
        "{promoted:#}"
    );
    assert_eq!(promoted["steps"][1]["ok"], true, "{promoted:#}");
}

#[test]
fn a_dry_run_lets_real_traffic_through_and_says_what_would_have_been_denied() {
    let dir = WorkDir::new("e2e-dry-run-");
    let log = dir.path().join("decisions.jsonl");
    let file = config::write(
        dir.path(),
        &[
            &config::demo_issuer(),
            &format!(
                "[decision_log]\nfile = {:?}\n[decisions]\ndry_run = true\n",
                log.display().to_string()
            ),
        ],
    );
    let authz = Service::start(&reference_policies(), Some(&file));
    let docs = McpServer::start("docs");
    let envoy = Envoy::start(
        &envoy_example("envoy-grpc.yaml"),
        &envoy_vars(Some((&authz).into()), Some(&docs), None),
    );
    let report = run_client(
        &envoy.url("/docs/mcp"),
        Some(&demo_token("erin")),
        json!([{"op": "call_tool", "name": "delete_document", "arguments": {"document_id": "titan/q1-strategy"}}]),
    );
    // Denied by `corpassist-never-deletes`, and let through: the server ran the tool.
    assert_eq!(report["steps"][0]["ok"], true, "{report:#}");
    let reached: Vec<Value> = docs
        .requests()
        .into_iter()
        .filter(|r| r["jsonrpc_method"] == "tools/call")
        .collect();
    assert_eq!(reached.len(), 1, "{reached:#?}");
    assert_eq!(
        reached[0]["headers"]["x-mcp-authz-would-be"], "deny",
        "{reached:#?}"
    );
    let record = poll(Duration::from_secs(10), || {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["resource"] == "Mcp::Tool::\"docs/delete_document\"")
    })
    .expect("the decision record");
    assert_eq!(record["decision"], "deny", "{record}");
    assert_eq!(record["dry_run"], true, "{record}");
}
