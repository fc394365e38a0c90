//! Serving: `mcp-authz serve` as a process where the process is the subject (startup
//! failures and exit codes, reload logging, signals, log formats, the environment), and
//! the service in-process through the composition root for what only its listeners show
//! (health, policy status, settings, reflection).

use std::time::Duration;

use crate::support::inproc::{Launch, Service};
use crate::support::process::{Serve, Server, bin, run, serve_command, text};
use crate::support::{copy_of_reference, gateway, http, poll, reference_policies, replace_file};

#[test]
fn invalid_policies_at_startup_fail_with_diagnostics() {
    let dir = copy_of_reference();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit(principal, action, resource) when { context.nope };\n",
    )
    .expect("write");
    let out = run(serve_command().arg("--policies").arg(dir.path()));
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--> bad.cedar:1:"), "{err}");
    // The listeners bind first (answering "not ready"); nothing is ever served.
    assert!(!err.contains("policies loaded"), "{err}");
    // An empty directory never starts either.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = run(bin()
        .args(["serve", "--http-listen", "127.0.0.1:0", "--policies"])
        .arg(empty.path()));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn serves_health_and_policy_status() {
    let server = Launch::new(&reference_policies()).admin().start();
    assert_eq!(http::get(&server.http, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http::get(&server.http, "/readyz").map(|r| r.0), Some(200));
    // Without an admin token the policy status is on the admin listener only.
    assert_eq!(
        http::get(&server.http, "/v1/policies").map(|r| r.0),
        Some(404)
    );
    assert_eq!(http::get(&server.admin, "/healthz").map(|r| r.0), Some(200));
    let (status, body) = http::get(&server.admin, "/v1/policies").expect("status");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["generation"], 1);
    assert_eq!(json["policies"], 18);
    assert_eq!(json["in_sync"], true);
}

#[cfg(unix)]
#[test]
fn broken_change_is_logged_and_sighup_reloads_and_sigterm_stops() {
    let dir = copy_of_reference();
    let mut server = Server::start(&["--admin-listen", "127.0.0.1:0"], dir.path());
    replace_file(
        &dir.path().join("broken.cedar"),
        "permit(principal, action, resource\n",
    );
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
    let (_, body) = http::get(&server.admin, "/v1/policies").expect("status");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["in_sync"], false);
    assert_eq!(json["generation"], 1);
    assert_eq!(
        http::get(&server.http, "/readyz").map(|r| r.0),
        Some(200),
        "still ready on the last good policies"
    );

    std::fs::remove_file(dir.path().join("broken.cedar")).expect("rm");
    poll(Duration::from_secs(5), || {
        let (_, body) = http::get(&server.admin, "/v1/policies")?;
        body.contains("\"in_sync\":true").then_some(())
    })
    .expect("back in sync");

    server.signal("HUP");
    poll(Duration::from_secs(5), || {
        let (_, body) = http::get(&server.admin, "/v1/policies")?;
        body.contains("\"generation\":2").then_some(())
    })
    .expect("SIGHUP did not reload");
    assert!(server.find_log(|l| l.contains("SIGHUP")).is_some());

    server.signal("TERM");
    let status = poll(Duration::from_secs(10), || server.try_wait()).expect("did not stop");
    assert!(status.success(), "{status:?}");
}

#[test]
fn json_logs_on_request() {
    let server = Server::start(&["--log-format", "json"], &reference_policies());
    let line = server
        .find_log(|l| l.contains("policies loaded"))
        .expect("log line");
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    assert_eq!(json["policies"], 18);
}

/// Every documented variable reaches `serve` (the cache ones were once refused as
/// unknown, and `serve` exited 2): read as the environment is (in-process), and a bad
/// value in the environment of the process.
#[test]
fn cache_settings_from_the_environment_reach_serve() {
    let policies = reference_policies();
    let gauge = "mcp_authz_decision_cache_entries";
    let metrics = |server: &Service| http::get(&server.http, "/metrics").expect("metrics").1;
    let on = Launch::new(&policies)
        .envs(&[
            ("MCP_AUTHZ_CACHE_MAX_ENTRIES", "10"),
            ("MCP_AUTHZ_CACHE_TTL_SECS", "5"),
        ])
        .start();
    assert!(metrics(&on).contains(gauge));
    let off = Launch::new(&policies)
        .envs(&[("MCP_AUTHZ_CACHE_ENABLED", "false")])
        .start();
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

/// What a reflection client learns: the listed services, and the files that the
/// service `symbol` is in.
struct Reflected {
    services: Vec<String>,
    files: Vec<prost_types::FileDescriptorProto>,
}

/// Ask the reflection service at `addr` (version `v1` or `v1alpha`, same messages in
/// another package) for its services and for the file of `symbol`.
macro_rules! reflect {
    ($version:ident, $addr:expr, $symbol:expr) => {{
        use prost::Message;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", $addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let mut client = ServerReflectionClient::new(channel);
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol($symbol.to_owned()),
        ]
        .map(|r| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r),
        });
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection answers")
            .into_inner();
        let mut reflected = Reflected {
            services: Vec::new(),
            files: Vec::new(),
        };
        while let Some(answer) = answers.message().await.expect("answer") {
            match answer.message_response.expect("a response") {
                MessageResponse::ListServicesResponse(list) => {
                    reflected.services = list.service.into_iter().map(|s| s.name).collect();
                }
                MessageResponse::FileDescriptorResponse(files) => {
                    reflected.files = files
                        .file_descriptor_proto
                        .iter()
                        .map(|b| {
                            prost_types::FileDescriptorProto::decode(b.as_slice()).expect("a file")
                        })
                        .collect();
                }
                other => panic!("{other:?}"),
            }
        }
        reflected
    }};
}

/// Reflection answers in both versions (grpcurl 1.8 speaks only v1alpha), listing and
/// describing our API, health and reflection (Envoy's ext_authz is served, not reflected).
#[test]
fn grpc_reflection_answers_v1_and_v1alpha_for_every_service() {
    let server = Service::start(&reference_policies(), None);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let expected = [
        "mcp_authz.v1.Authorizer",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    runtime.block_on(async {
        for symbol in ["mcp_authz.v1.Authorizer", "grpc.health.v1.Health"] {
            let (package, service) = symbol.rsplit_once('.').expect("qualified");
            for (version, reflected) in [
                ("v1", reflect!(v1, server.grpc, symbol)),
                ("v1alpha", reflect!(v1alpha, server.grpc, symbol)),
            ] {
                let mut services = reflected.services.clone();
                services.sort();
                let mut want = expected.map(str::to_owned).to_vec();
                want.sort();
                assert_eq!(services, want, "{version}");
                let file = reflected
                    .files
                    .iter()
                    .find(|f| f.package() == package)
                    .unwrap_or_else(|| panic!("{version}: no file of `{symbol}`"));
                let methods: Vec<&str> = file
                    .service
                    .iter()
                    .filter(|s| s.name() == service)
                    .flat_map(|s| s.method.iter().map(|m| m.name()))
                    .collect();
                assert!(methods.contains(&"Check"), "{version}: {methods:?}");
            }
        }
    });
}

/// The service in-process through the composition root (`App::bind`, `Bound::serve`):
/// the addresses are known before anything is served, every interface answers from the
/// one state once ready, and stopping flushes the decision log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_composition_root_binds_serves_and_stops_in_process() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let dir = copy_of_reference();
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("decisions.jsonl");
    let service = Launch::new(dir.path())
        .envs(&[("MCP_AUTHZ_DECISION_LOG_FILE", log.to_str().expect("utf-8"))])
        .listening()
        .start();
    assert_ne!(service.grpc_port(), 0);
    assert_ne!(service.http_port(), 0);
    assert!(service.admin.is_empty());
    let services = service.ready().wait().await;
    assert!(services.engine.snapshot().policy_count() > 0);
    // Its own log, as `serve` writes it.
    assert!(
        service
            .find_log(|l| l.contains("policies loaded"))
            .is_some(),
        "{}",
        service.log_text()
    );

    let (grpc, http) = (service.grpc.clone(), service.http.clone());
    let mut health = HealthClient::new(gateway::channel(&grpc).await);
    for name in [
        "",
        "mcp_authz.v1.Authorizer",
        "envoy.service.auth.v3.Authorization",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(status, 1, "{name:?} is SERVING");
    }
    drop(health);
    let (ready, allow, deny) = tokio::task::spawn_blocking(move || {
        let evaluation = |user: &str, tool: &str| {
            crate::support::http::post_json(
                &http,
                "/access/v1/evaluation",
                &serde_json::json!({
                    "subject": { "type": "user", "id": user },
                    "action": { "name": "tools/call" },
                    "resource": { "type": "tool", "id": format!("docs/{tool}") },
                    "context": {
                        "agent": "corpassist",
                        "arguments": { "document_id": "titan/q1-strategy" },
                    },
                }),
            )
            .expect("answer")
        };
        (
            http::get(&http, "/readyz").expect("readyz"),
            evaluation("alice", "get_document"),
            evaluation("dave", "delete_document"),
        )
    })
    .await
    .expect("client");
    assert_eq!(ready, (200, "ready\n".to_owned()));
    assert_eq!(allow.0, 200);
    assert_eq!(allow.1["decision"], true);
    assert_eq!(deny.1["decision"], false);

    tokio::task::spawn_blocking(move || service.stop())
        .await
        .expect("stop")
        .expect("a graceful stop");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("decision log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect();
    let verdicts: Vec<&str> = records
        .iter()
        .filter_map(|r| r["decision"].as_str())
        .collect();
    assert_eq!(verdicts, ["allow", "deny"], "{records:?}");
    assert!(records.iter().all(|r| r["interface"] == "authzen"));
}

/// In-process too: an invalid policy directory ends `serve` with the problems, after
/// the listeners were bound (they never served a decision).
#[test]
fn the_composition_root_refuses_an_invalid_policy_directory() {
    let dir = copy_of_reference();
    std::fs::write(
        dir.path().join("bad.cedar"),
        "permit(principal, action, resource) when { context.nope };\n",
    )
    .expect("write");
    let service = Launch::new(dir.path()).listening().start();
    match service.stop() {
        Err(mcp_authz::app::AppError::Policies(problems)) => {
            assert!(problems.errors().count() >= 1);
        }
        other => panic!("expected the policy problems, got {other:?}"),
    }
}

#[test]
fn worker_threads_sets_the_threads_that_serve_requests() {
    // The file's setting, over `TOKIO_WORKER_THREADS`; the environment's over the file's;
    // neither: `TOKIO_WORKER_THREADS`, the runtime's own default.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mcp-authz.toml");
    std::fs::write(&file, "worker_threads = 3\n").expect("write");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").expect("write");
    for (config, env, want) in [
        (&file, vec![("TOKIO_WORKER_THREADS", "5")], 3),
        // The setting wins: the runtime's variable is not read, whatever it holds.
        (&file, vec![("TOKIO_WORKER_THREADS", "many")], 3),
        (&file, vec![("MCP_AUTHZ_WORKER_THREADS", "1")], 1),
        (&empty, vec![("TOKIO_WORKER_THREADS", "2")], 2),
    ] {
        let server = Serve::new(&reference_policies())
            .config(config)
            .envs(&env)
            .start();
        let line = server
            .find_log(|l| l.contains("runtime started"))
            .expect("the runtime's start is logged");
        assert!(line.contains(&format!("workers={want}")), "{env:?}: {line}");
        assert_eq!(server.get("/readyz").map(|r| r.0), Some(200));
    }
    // Refused before anything starts, with the setting named.
    for bad in ["0", "two", "5000"] {
        // The runtime's own variable too: an error, not the runtime's panic.
        let out = run(serve_command().env("TOKIO_WORKER_THREADS", bad));
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("TOKIO_WORKER_THREADS") && !err.contains("panicked"),
            "{err}"
        );
    }
    let out = run(serve_command().env("MCP_AUTHZ_WORKER_THREADS", "0"));
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("MCP_AUTHZ_WORKER_THREADS") && err.contains("at least 1"),
        "{err}"
    );
}
