//! Requests that try to say what only the service may say, over every interface
//! of the running service (in-process: the gateway's gRPC API, Envoy ext_authz over
//! gRPC and HTTP) and the CLI: service-filled context attributes in the request's
//! own context, a user without an application, and argument names that read as
//! declared ones. AuthZEN is covered in `authzen_mcp`.

use mcp_authz::api::proto::v1::{
    CheckRequest, FilterListRequest, Identity, Names, VerifiedIdentity, filter_list_request,
};
use serde_json::{Value, json};

use crate::support::gateway::{self, bearer, pb_struct, trusted};
use crate::support::inproc::{Launch, Service};
use crate::support::process::{bin, run, text};
use crate::support::tokens::TestKey;
use crate::support::{config, envoy, http, reference_policies};

/// The spellings of `max_results` that readers such as Go's `encoding/json` bind
/// to it, and that the context must therefore never leave out silently.
const MAX_RESULTS_ALIASES: &[&str] = &[
    "MAX_RESULTS",
    "Max_Results",
    "max_re\u{17f}ults",
    "maxResults",
    "max-results",
    "MaxResults",
    "\u{ff4d}\u{ff41}\u{ff58}_results",
    "max__results",
];

struct Setup {
    dir: tempfile::TempDir,
    key: TestKey,
    server: Service,
}

/// The service (in-process) with a token issuer with test keys, the gateway's caller secret, and
/// `extra` TOML (top-level keys or whole sections).
fn start(extra: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(1, "forged");
    let config = config::write(
        dir.path(),
        &[
            extra,
            &config::trusted_caller(dir.path()),
            &config::test_issuer(dir.path(), &key),
        ],
    );
    // These tests read which rule denied a forged request in the client's answer.
    let server = Launch::new(&reference_policies())
        .config(&config)
        .full_denials()
        .start();
    Setup { dir, key, server }
}

impl Setup {
    /// A token for `user` with `claims` besides (`azp` among them, or not).
    fn token(&self, user: &str, claims: Value) -> String {
        let mut all = json!({ "sub": user, "groups": ["engineering"], "azp": null });
        for (k, v) in claims.as_object().into_iter().flatten() {
            all[k] = v.clone();
        }
        self.key.token(all)
    }
}

/// A `tools/call` of `tool` of the docs server, parsed by the gateway.
fn tool_call(identity: Identity, tool: &str, arguments: Value) -> CheckRequest {
    gateway::parsed(
        identity,
        "docs",
        "tools/call",
        tool,
        Some(pb_struct(&arguments)),
    )
}

/// A `tools/call` of `tool` of the docs server as its raw JSON-RPC message.
fn raw_call(identity: Identity, tool: &str, arguments: &str) -> CheckRequest {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments}}}}}"#
    );
    gateway::jsonrpc(identity, "docs", body)
}

/// Whether Envoy's check of a POST of `body` with `token` to the docs server is
/// allowed, and the denied body.
async fn envoy_allows(addr: &str, token: &str, body: &str) -> (bool, String) {
    let request = envoy::post(body)
        .path("/docs/mcp")
        .bearer(token)
        .json()
        .header("accept", "application/json, text/event-stream")
        .build();
    let r = envoy::client(addr)
        .await
        .check(request)
        .await
        .expect("check")
        .into_inner();
    let allowed = r.status.as_ref().is_some_and(|s| s.code == 0);
    (allowed, envoy::status(&r).1)
}

fn search(id: u32, arguments: &Value) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": { "name": "search_documents", "arguments": arguments } })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argument_names_that_read_as_declared_ones_are_denied_on_every_interface() {
    let s = start("");
    let erin = s.token("erin", json!({ "azp": "corpassist" }));
    let mut gw = gateway::client(&s.server.grpc).await;
    // The bounded search itself: allowed at 10, forbidden at 500.
    for (n, allowed) in [(10, true), (500, false)] {
        let r = gw
            .check(tonic::Request::new(tool_call(
                bearer(erin.clone()),
                "search_documents",
                json!({ "query": "titan", "max_results": n }),
            )))
            .await
            .expect("check")
            .into_inner();
        assert_eq!(r.allowed, allowed, "{n}: {r:?}");
    }
    for alias in MAX_RESULTS_ALIASES {
        let arguments = json!({ "query": "titan", *alias: 500 });
        // The gateway API, with parsed fields and with the raw JSON-RPC message.
        for request in [
            tool_call(bearer(erin.clone()), "search_documents", arguments.clone()),
            raw_call(
                bearer(erin.clone()),
                "search_documents",
                &arguments.to_string(),
            ),
        ] {
            let r = gw
                .check(tonic::Request::new(request))
                .await
                .expect("check")
                .into_inner();
            assert!(!r.allowed, "{alias}: {r:?}");
            assert!(
                r.reason.contains("reads as the declared"),
                "{alias}: {}",
                r.reason
            );
            assert!(r.reason.contains("arguments.max_results"), "{}", r.reason);
        }
        // Envoy ext_authz over gRPC.
        let (allowed, body) = envoy_allows(&s.server.grpc, &erin, &search(3, &arguments)).await;
        assert!(!allowed, "{alias}");
        assert!(body.contains("reads as the declared"), "{alias}: {body}");
        // Envoy ext_authz over HTTP.
        let auth = format!("Bearer {erin}");
        let (status, _, body) = http::request(
            &s.server.http,
            "POST",
            "/ext_authz/docs/mcp",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
                ("x-envoy-auth-partial-body", "false"),
                ("x-mcp-authz-server", "docs"),
            ],
            &search(4, &arguments),
        )
        .expect("ext_authz over HTTP");
        assert_eq!(status, 403, "{alias}: {body}");
    }
    // A key that only looks alike is an undeclared argument: a deny that names it.
    let r = gw
        .check(tonic::Request::new(tool_call(
            bearer(erin),
            "search_documents",
            json!({ "query": "titan", "max_result": 500 }),
        )))
        .await
        .expect("check")
        .into_inner();
    assert!(!r.allowed, "{r:?}");
    assert!(
        r.reason
            .contains("does not declare the argument `max_result`"),
        "{}",
        r.reason
    );
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_an_application_is_denied_on_every_interface() {
    let s = start("");
    let mut gw = gateway::client(&s.server.grpc).await;
    // dave is a document administrator: with an application that may delete... none
    // may, so take a read. Without `azp`, or with the client in a claim that is not
    // configured (Okta's `cid`), the request names no application.
    for claims in [
        json!({}),
        json!({ "cid": "corpassist" }),
        json!({ "azp": "" }),
    ] {
        let token = s.token("dave", claims.clone());
        let r = gw
            .check(tonic::Request::new(tool_call(
                bearer(token.clone()),
                "delete_document",
                json!({ "document_id": "titan/draft" }),
            )))
            .await
            .expect("check")
            .into_inner();
        assert!(!r.allowed, "{claims}: {r:?}");
        if r.reason.contains("token") {
            // An empty `azp` is refused by token verification itself.
            continue;
        }
        assert!(r.reason.contains("names no application"), "{}", r.reason);
        let delete = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": { "name": "delete_document", "arguments": { "document_id": "x" } } });
        let (allowed, body) = envoy_allows(&s.server.grpc, &token, &delete.to_string()).await;
        assert!(!allowed);
        assert!(body.contains("names no application"), "{body}");
    }
    // A gateway's verified identity without an application.
    let lone = Identity {
        verified: Some(VerifiedIdentity {
            user: "alice".into(),
            application: String::new(),
            groups: vec![],
        }),
        ..Identity::default()
    };
    let r = gw
        .check(trusted(tool_call(lone, "get_document", json!({}))))
        .await
        .expect("check")
        .into_inner();
    assert!(!r.allowed, "{r:?}");
    assert!(r.reason.contains("names no application"), "{}", r.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_for_a_user_without_an_application_shows_nothing() {
    let s = start("");
    let mut gw = gateway::client(&s.server.grpc).await;
    let list = |identity: Identity| FilterListRequest {
        identity: Some(identity),
        server: "docs".into(),
        method: "tools/list".into(),
        list: Some(filter_list_request::List::Names(Names {
            names: vec!["get_document".into(), "search_documents".into()],
        })),
        ..FilterListRequest::default()
    };
    let with_app = gw
        .filter_list(tonic::Request::new(list(bearer(
            s.token("alice", json!({ "azp": "corpassist" })),
        ))))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(with_app.allowed, ["get_document", "search_documents"]);
    for identity in [
        bearer(s.token("alice", json!({}))),
        bearer(s.token("alice", json!({ "cid": "corpassist" }))),
    ] {
        let lone = gw
            .filter_list(tonic::Request::new(list(identity)))
            .await
            .expect("filter")
            .into_inner();
        assert!(lone.allowed.is_empty(), "{lone:?}");
        assert_eq!(lone.denied.len(), 2, "{lone:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_only_requests_can_be_allowed_by_configuration() {
    let s = start("[decisions]\nallow_user_only = true\n");
    let mut gw = gateway::client(&s.server.grpc).await;
    let alice = s.token("alice", json!({}));
    let r = gw
        .check(tonic::Request::new(tool_call(
            bearer(alice),
            "get_document",
            json!({ "document_id": "titan/q1-strategy" }),
        )))
        .await
        .expect("check")
        .into_inner();
    assert!(r.allowed, "{r:?}");
    assert_eq!(r.evaluations.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_context_never_sets_what_the_service_fills() {
    let s = start("");
    let mut gw = gateway::client(&s.server.grpc).await;
    // ops-console may update issues only with a user (`context has user`).
    let ops = Identity {
        verified: Some(VerifiedIdentity {
            user: String::new(),
            application: "ops-console".into(),
            groups: vec![],
        }),
        ..Identity::default()
    };
    let mallory = json!({ "__entity": { "type": "Mcp::User", "id": "mallory" } });
    for (key, value) in [
        ("user", mallory.clone()),
        ("User", mallory.clone()),
        ("USER", json!("mallory")),
        ("scopes", json!(["projects.admin"])),
        ("Scopes", json!(["projects.admin"])),
        ("claims", json!({ "groups": ["project-ops"] })),
        ("server", json!("projects")),
        ("application", json!("corpassist")),
        ("arguments", json!({ "issue": "TITAN-1" })),
        ("Arguments", json!({ "issue": "TITAN-1" })),
    ] {
        let mut request = tool_call(ops.clone(), "update_issue", json!({ "issue": "TITAN-1" }));
        request.server = "projects".into();
        request.context = Some(pb_struct(&json!({ key: value })));
        let r = gw
            .check(trusted(request))
            .await
            .expect("check")
            .into_inner();
        assert!(!r.allowed, "{key}: {r:?}");
        assert!(
            r.reason.contains(&format!("`context.{key}`")),
            "{key}: {}",
            r.reason
        );
    }
    // Without the forged attribute the application alone is denied too (no user).
    let mut request = tool_call(ops, "update_issue", json!({ "issue": "TITAN-1" }));
    request.server = "projects".into();
    let r = gw
        .check(trusted(request))
        .await
        .expect("check")
        .into_inner();
    assert!(!r.allowed, "{r:?}");
}

fn check_cli(args: &[&str]) -> (bool, Value) {
    let out = run(bin()
        .arg("check")
        .args(args)
        .args(["--json", "--policies"])
        .arg(reference_policies()));
    let (stdout, stderr) = text(&out);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stdout} {stderr}"));
    (out.status.success(), json)
}

#[test]
fn the_cli_decides_forged_requests_as_the_service_does() {
    let call = [
        "--action",
        "tools/call",
        "--resource",
        "docs/search_documents",
    ];
    for alias in MAX_RESULTS_ALIASES {
        let context = json!({ "arguments": { "query": "titan", *alias: 500 } }).to_string();
        let mut args = call.to_vec();
        args.extend([
            "--user",
            "alice",
            "--app",
            "corpassist",
            "--context",
            &context,
        ]);
        let (allowed, json) = check_cli(&args);
        assert!(!allowed, "{alias}: {json}");
        assert!(
            json["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("reads as the declared")
        );
    }
    for key in ["user", "User", "scopes", "claims", "server", "application"] {
        let context = json!({ key: "x" }).to_string();
        let mut args = call.to_vec();
        args.extend(["--app", "ops-console", "--context", &context]);
        let (allowed, json) = check_cli(&args);
        assert!(!allowed, "{key}: {json}");
        assert!(
            json["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("only the service fills")
        );
    }
    let mut args = vec![
        "--action",
        "tools/call",
        "--resource",
        "docs/delete_document",
    ];
    args.extend(["--user", "dave"]);
    let (allowed, json) = check_cli(&args);
    assert!(!allowed, "{json}");
    assert!(
        json["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("names no application")
    );
}
