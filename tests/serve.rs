//! `mcp-authz serve` as a process: startup, health, reload logging, signals.

mod common;

use std::time::Duration;

use common::{Server, bin, copy_of_reference, http_get, poll, reference_policies, run, text};

#[test]
fn invalid_policies_at_startup_fail_with_diagnostics() {
    let dir = copy_of_reference();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit(principal, action, resource) when { context.nope };\n",
    )
    .expect("write");
    let out = run(bin()
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--policies",
        ])
        .arg(dir.path()));
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--> bad.cedar:1:"), "{err}");
    assert!(!err.contains("listener=HTTP"), "{err}");
    // An empty directory never starts either.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = run(bin()
        .args(["serve", "--http-listen", "127.0.0.1:0", "--policies"])
        .arg(empty.path()));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serves_health_and_policy_status() {
    let server = Server::start(&["--admin-listen", "127.0.0.1:0"], &reference_policies());
    assert_eq!(http_get(&server.http, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(&server.http, "/readyz").map(|r| r.0), Some(200));
    // Without an admin token the policy status is on the admin listener only.
    assert_eq!(
        http_get(&server.http, "/v1/policies").map(|r| r.0),
        Some(404)
    );
    assert_eq!(http_get(&server.admin, "/healthz").map(|r| r.0), Some(200));
    let (status, body) = http_get(&server.admin, "/v1/policies").expect("status");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["generation"], 1);
    assert_eq!(json["policies"], 14);
    assert_eq!(json["in_sync"], true);
}

#[cfg(unix)]
#[test]
fn broken_change_is_logged_and_sighup_reloads_and_sigterm_stops() {
    let dir = copy_of_reference();
    let mut server = Server::start(&["--admin-listen", "127.0.0.1:0"], dir.path());
    std::fs::write(
        dir.path().join("broken.cedar"),
        "permit(principal, action, resource\n",
    )
    .expect("write");
    let line = poll(Duration::from_secs(5), || {
        server.find_log(|l| l.contains("policy reload rejected"))
    })
    .expect("no rejection logged");
    assert!(line.contains("broken.cedar:1:"), "{line}");
    assert!(
        server
            .find_log(|l| l.contains("still serving the last good policies"))
            .is_some()
    );
    let (_, body) = http_get(&server.admin, "/v1/policies").expect("status");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["in_sync"], false);
    assert_eq!(json["generation"], 1);
    assert_eq!(
        http_get(&server.http, "/readyz").map(|r| r.0),
        Some(200),
        "still ready on the last good policies"
    );

    std::fs::remove_file(dir.path().join("broken.cedar")).expect("rm");
    poll(Duration::from_secs(5), || {
        let (_, body) = http_get(&server.admin, "/v1/policies")?;
        body.contains("\"in_sync\":true").then_some(())
    })
    .expect("back in sync");

    server.signal("HUP");
    poll(Duration::from_secs(5), || {
        let (_, body) = http_get(&server.admin, "/v1/policies")?;
        body.contains("\"generation\":2").then_some(())
    })
    .expect("SIGHUP did not reload");
    assert!(server.find_log(|l| l.contains("SIGHUP")).is_some());

    server.signal("TERM");
    let status = poll(Duration::from_secs(10), || {
        server.child.try_wait().ok().flatten()
    })
    .expect("did not stop");
    assert!(status.success(), "{status:?}");
}

#[test]
fn json_logs_on_request() {
    let server = Server::start(&["--log-format", "json"], &reference_policies());
    let line = server
        .find_log(|l| l.contains("policies loaded"))
        .expect("log line");
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(json["policies"], 14);
}

/// Every documented variable reaches `serve` (the cache ones were once refused as
/// unknown, and `serve` exited 2).
#[test]
fn cache_settings_from_the_environment_reach_serve() {
    let policies = reference_policies();
    let gauge = "mcp_authz_decision_cache_entries";
    let metrics = |server: &Server| http_get(&server.http, "/metrics").expect("metrics").1;
    let on = Server::start_with_env(
        &[],
        &policies,
        &[
            ("MCP_AUTHZ_CACHE_MAX_ENTRIES", "10"),
            ("MCP_AUTHZ_CACHE_TTL_SECS", "5"),
        ],
    );
    assert!(metrics(&on).contains(gauge));
    let off = Server::start_with_env(&[], &policies, &[("MCP_AUTHZ_CACHE_ENABLED", "false")]);
    assert!(!metrics(&off).contains(gauge), "{}", metrics(&off));
    // A bad value is one line and exit 2, naming the variable.
    let out = run(bin()
        .args(["serve", "--policies"])
        .arg(&policies)
        .env("MCP_AUTHZ_CACHE_TTL_SECS", "soon"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("MCP_AUTHZ_CACHE_TTL_SECS"), "{stderr}");
}
