//! Aliases of a resource URI are decided as the resource itself, on every
//! interface, against the service in-process (and the CLI) with the reference policies:
//! frank and carol are contractors, and `contractors-no-finance-resources` forbids
//! them `docs://finance/budget-2026` by its `classification` attribute. Every
//! spelling of that URI must meet the forbid (issue 12, item 2); a URI without a
//! normal form is refused, never decided as some other entity.

use mcp_authz::api::proto::v1::{
    self as pb, CheckRequest, CheckResponse, DenyKind, FilterListRequest, Identity,
    VerifiedIdentity, authorizer_client::AuthorizerClient, filter_list_request,
};
use serde_json::{Value, json};
use std::path::Path;

use crate::support::gateway::{self, bearer, trusted};
use crate::support::inproc::{Launch, Service};
use crate::support::process::{bin, run, text};
use crate::support::tokens::demo_token;
use crate::support::{config, copy_of_reference, envoy, http, reference_policies};

const BUDGET: &str = r#"Mcp::Resource::"docs/docs://finance/budget-2026""#;
const FORBID: &str = "contractors-no-finance-resources";
const READ_METHODS: [&str; 3] = [
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// Spellings of `docs://finance/budget-2026`: the issue's examples and more
/// (other dot segments, encodings, case mixes).
const ALIASES: &[&str] = &[
    "docs://finance/budget-2026",
    "docs://finance/titan/../budget-2026",
    "DOCS://finance/budget-2026",
    "docs://finance/x/%2e%2e/budget-2026",
    "docs://finance/x/%2E%2e/budget-2026",
    "docs://finance/x/.%2E/budget-2026",
    "docs://finance/./budget-2026",
    "docs://finance/%2e/budget-2026",
    "docs://finance/a/b/../../budget-2026",
    "docs://finance/../budget-2026",
    "docs://FINANCE/budget-2026",
    "Docs://Finance/budget-2026",
    "docs://%66inance/budget-2026",
    "docs://finance/%62udget%2D2026",
    "docs://finance/%62%75%64%67%65%74-2026",
];

/// Spellings a WHATWG parser (the TypeScript SDK's `new URL`) also takes for the
/// budget, but that have no single reading: refused.
const REFUSED: &[&str] = &[
    "docs://@finance/budget-2026",
    "docs://x@finance/budget-2026",
    "docs://finance:/budget-2026",
    " docs://finance/budget-2026",
    "docs://finance/budget-2026 ",
    "docs://finance/x%2F..%2Fbudget-2026",
    "docs://finance/x\\..\\budget-2026",
    "docs://finance//budget-2026",
    "docs://finance/budget-2026#top",
    "docs://finance/budget-2026?",
    "docs://finance./budget-2026",
    "docs://finance/%252e%252e/budget-2026",
    "docs://finance/%C0%AE%C0%AE/budget-2026",
    "docs://finance/budget\u{200b}-2026",
];

/// frank: a contractor (by the token's `groups`), through CorpAssist.
fn frank() -> String {
    demo_token("frank")
}

/// erin: an engineer, through CorpAssist.
fn erin() -> String {
    demo_token("erin")
}

struct Setup {
    _dir: tempfile::TempDir,
    server: Service,
}

/// The service (in-process) with the reference policies, the demo issuer and a trusted caller secret.
fn start() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config::write(
        dir.path(),
        &[&config::trusted_caller(dir.path()), &config::demo_issuer()],
    );
    // These tests read which forbid denied a read in the client's error.
    let server = Launch::new(&reference_policies())
        .config(&config)
        .full_denials()
        .start();
    Setup { _dir: dir, server }
}

/// `method` on the resource `uri` of the docs server, parsed by the gateway.
fn parsed(identity: Identity, method: &str, uri: &str) -> CheckRequest {
    gateway::parsed(identity, "docs", method, uri, None)
}

/// A raw JSON-RPC message (or batch) for the docs server.
fn raw(identity: Identity, body: &Value) -> CheckRequest {
    gateway::jsonrpc(identity, "docs", body.to_string())
}

fn read_body(method: &str, uri: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"uri": uri}})
}

async fn check(
    c: &mut AuthorizerClient<tonic::transport::Channel>,
    r: CheckRequest,
) -> CheckResponse {
    c.check(trusted(r)).await.expect("check").into_inner()
}

/// A deny decided on the budget's own entity: by the forbid for `resources/read`
/// (the reference policies permit no subscriptions at all).
fn assert_forbidden(r: &CheckResponse, label: &str) {
    assert!(!r.allowed, "{label}: {r:?}");
    assert_eq!(r.deny_kind, DenyKind::Forbidden as i32, "{label}: {r:?}");
    if label.contains("resources/read") {
        assert!(r.reason.contains(FORBID), "{label}: {}", r.reason);
    }
    assert_eq!(
        r.calls.first().map(|c| c.resource.as_str()),
        Some(BUDGET),
        "{label}"
    );
}

/// A refusal: invalid params, no policy asked.
fn assert_refused(r: &CheckResponse, label: &str) {
    assert!(!r.allowed, "{label}: {r:?}");
    assert_eq!(
        r.deny_kind,
        DenyKind::InvalidRequest as i32,
        "{label}: {r:?}"
    );
    assert!(r.reason.contains("is refused: "), "{label}: {}", r.reason);
    assert_eq!(r.error.as_ref().map(|e| e.code), Some(-32602), "{label}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_check_decides_every_alias_as_the_resource() {
    let s = start();
    let mut c = gateway::client(&s.server.grpc).await;
    // The resource itself: denied for a contractor, allowed for an engineer;
    // another document stays allowed for the contractor.
    let r = check(&mut c, parsed(bearer(erin()), "resources/read", ALIASES[0])).await;
    assert!(r.allowed, "{r:?}");
    let r = check(
        &mut c,
        parsed(
            bearer(frank()),
            "resources/read",
            "docs://titan/q1-strategy",
        ),
    )
    .await;
    assert!(r.allowed, "{r:?}");

    for method in READ_METHODS {
        for alias in ALIASES {
            let label = format!("{method} {alias}");
            // Parsed fields and the raw JSON-RPC body, with a token...
            let r = check(&mut c, parsed(bearer(frank()), method, alias)).await;
            assert_forbidden(&r, &format!("parsed {label}"));
            let r = check(&mut c, raw(bearer(frank()), &read_body(method, alias))).await;
            assert_forbidden(&r, &format!("jsonrpc {label}"));
            // ...and with an identity the gateway verified (carol, a contractor by
            // the entity data).
            let verified = Identity {
                verified: Some(VerifiedIdentity {
                    user: "carol".into(),
                    application: "corpassist".into(),
                    groups: vec![],
                }),
                ..Identity::default()
            };
            let r = check(&mut c, parsed(verified, method, alias)).await;
            assert_forbidden(&r, &format!("carol {label}"));
            // The engineer's allow is decided on the same entity.
            let r = check(&mut c, parsed(bearer(erin()), method, alias)).await;
            assert_eq!(r.allowed, method == "resources/read", "erin {label}: {r:?}");
            assert_eq!(r.calls[0].resource, BUDGET, "erin {label}");
        }
        for uri in REFUSED {
            let label = format!("{method} {uri:?}");
            let r = check(&mut c, parsed(bearer(erin()), method, uri)).await;
            assert_refused(&r, &format!("parsed {label}"));
            let r = check(&mut c, raw(bearer(erin()), &read_body(method, uri))).await;
            assert_refused(&r, &format!("jsonrpc {label}"));
        }
    }
    // In a batch, an alias denies the whole body.
    let batch = json!([
        read_body("resources/read", "docs://titan/q1-strategy"),
        {"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "docs://finance/q1/../budget-2026"}},
    ]);
    let r = check(&mut c, raw(bearer(frank()), &batch)).await;
    assert!(!r.allowed && r.reason.contains(FORBID), "{r:?}");
    // `Mcp-Name` may spell the body's resource another way, never name another one.
    let mut with_header = raw(
        bearer(frank()),
        &read_body("resources/read", "docs://finance/titan/../budget-2026"),
    );
    with_header
        .headers
        .insert("mcp-name".into(), "DOCS://finance/budget-2026".into());
    assert_forbidden(&check(&mut c, with_header.clone()).await, "header alias");
    with_header
        .headers
        .insert("mcp-name".into(), "docs://titan/q1-strategy".into());
    let r = check(&mut c, with_header).await;
    assert!(
        !r.allowed && r.error.as_ref().map(|e| e.code) == Some(-32020),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_list_hides_every_alias() {
    let s = start();
    let mut c = gateway::client(&s.server.grpc).await;
    let titan = "docs://titan/q1-strategy";
    let mut names = vec![titan.to_owned()];
    names.extend(ALIASES.iter().map(|a| (*a).to_owned()));
    names.extend(REFUSED.iter().map(|a| (*a).to_owned()));
    let request = |list| FilterListRequest {
        identity: Some(bearer(frank())),
        server: "docs".into(),
        method: "resources/list".into(),
        list: Some(list),
        ..FilterListRequest::default()
    };
    let r = c
        .filter_list(trusted(request(filter_list_request::List::Names(
            pb::Names {
                names: names.clone(),
            },
        ))))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(r.allowed, vec![titan.to_owned()]);
    assert_eq!(r.denied, names[1..].to_vec());
    // A `resources/list` result: only what the contractor may read comes back.
    let result = json!({"resources": names.iter().map(|n| json!({"uri": n, "name": "doc"})).collect::<Vec<_>>()});
    let r = c
        .filter_list(trusted(request(filter_list_request::List::Result(
            result.to_string().into_bytes(),
        ))))
        .await
        .expect("filter")
        .into_inner();
    let kept: Value = serde_json::from_slice(&r.result).expect("json");
    assert_eq!(kept["resources"], json!([{"uri": titan, "name": "doc"}]));
    // Templates are decided as templates (in normal form), not refused as URIs.
    let templates = FilterListRequest {
        identity: Some(bearer(frank())),
        server: "docs".into(),
        method: "resources/templates/list".into(),
        list: Some(filter_list_request::List::Names(pb::Names {
            names: vec![
                "docs://titan/{name}".into(),
                "DOCS://titan/{name}".into(),
                "docs://titan/{name".into(),
                "docs://@titan/{name}".into(),
            ],
        })),
        ..FilterListRequest::default()
    };
    let r = c
        .filter_list(trusted(templates))
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(
        r.allowed,
        vec!["docs://titan/{name}", "DOCS://titan/{name}"]
    );
    assert_eq!(r.denied, vec!["docs://titan/{name", "docs://@titan/{name}"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_authz_grpc_and_http_decide_every_alias_as_the_resource() {
    let s = start();
    let mut client = envoy::client(&s.server.grpc).await;
    let http = s.server.http.clone();
    let post = move |token: String, body: Value| {
        let http = http.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let auth = format!("Bearer {token}");
                let (status, _, text) = http::request(
                    &http,
                    "POST",
                    "/ext_authz/mcp",
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", "application/json"),
                        ("x-mcp-authz-server", "docs"),
                    ],
                    &body.to_string(),
                )
                .expect("ext_authz HTTP");
                (status, text)
            })
            .await
            .expect("join")
        }
    };
    // Envoy's `CheckRequest` for a POST of `body` with `token`, on the route of the
    // `docs` server.
    let grpc = |client: &mut envoy::Client, token: String, body: Value| {
        let mut client = client.clone();
        async move {
            let request = envoy::post(body.to_string())
                .bearer(&token)
                .json()
                .header("x-envoy-auth-partial-body", "false")
                .build();
            let r = client
                .check(request)
                .await
                .expect("ext_authz gRPC")
                .into_inner();
            envoy::status(&r)
        }
    };

    let titan = read_body("resources/read", "docs://titan/q1-strategy");
    assert_eq!(grpc(&mut client, frank(), titan.clone()).await.0, 200);
    assert_eq!(post(frank(), titan).await.0, 200);
    for method in READ_METHODS {
        // (No policy permits subscriptions: only reads tell the forbid apart.)
        let aliases = if method == "resources/read" {
            ALIASES
        } else {
            &[]
        };
        for alias in aliases {
            let body = read_body(method, alias);
            for (mode, (status, text)) in [
                ("grpc", grpc(&mut client, frank(), body.clone()).await),
                ("http", post(frank(), body.clone()).await),
            ] {
                assert_eq!(status, 403, "{mode} {method} {alias}: {text}");
                assert!(text.contains(FORBID), "{mode} {method} {alias}: {text}");
            }
            for (mode, (status, text)) in [
                ("grpc", grpc(&mut client, erin(), body.clone()).await),
                ("http", post(erin(), body.clone()).await),
            ] {
                assert_eq!(status, 200, "{mode} erin {method} {alias}: {text}");
            }
        }
        for uri in REFUSED {
            let body = read_body(method, uri);
            for (mode, (status, text)) in [
                ("grpc", grpc(&mut client, erin(), body.clone()).await),
                ("http", post(erin(), body.clone()).await),
            ] {
                assert_eq!(status, 400, "{mode} {method} {uri:?}: {text}");
                let error: Value = serde_json::from_str(&text).expect("a JSON-RPC error");
                assert_eq!(error["error"]["code"], -32602, "{text}");
                assert!(
                    error["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("`params.uri` is refused: ")),
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn authzen_decides_every_alias_as_the_resource() {
    let s = start();
    // An evaluation with a verified token (the token's user and application win).
    let evaluate = |token: &str, user: &str, resource_type: &str, id: &str| {
        let body = json!({
            "subject": {"type": "user", "id": user},
            "action": {"name": "resources/read"},
            "resource": {"type": resource_type, "id": id},
            "context": {"agent": "corpassist"},
            "options": {"explain": true},
        });
        let auth = format!("Bearer {token}");
        let (status, _, text) = http::request(
            &s.server.http,
            "POST",
            "/access/v1/evaluation",
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            &body.to_string(),
        )
        .expect("AuthZEN");
        assert_eq!(status, 200, "{id}: {text}");
        serde_json::from_str::<Value>(&text).expect("JSON")
    };
    for ty in ["resource", "Mcp::Resource"] {
        let titan = evaluate(&frank(), "frank", ty, "docs/docs://titan/q1-strategy");
        assert_eq!(titan["decision"], true, "{titan}");
        for alias in ALIASES {
            let id = format!("docs/{alias}");
            let d = evaluate(&frank(), "frank", ty, &id);
            assert_eq!(d["decision"], false, "{ty} {alias}: {d}");
            assert!(d.to_string().contains(FORBID), "{ty} {alias}: {d}");
            let d = evaluate(&erin(), "erin", ty, &id);
            assert_eq!(d["decision"], true, "erin {ty} {alias}: {d}");
        }
        // Refused URIs are a deny with the reason, even for the engineer.
        for uri in REFUSED {
            let d = evaluate(&erin(), "erin", ty, &format!("docs/{uri}"));
            assert_eq!(d["decision"], false, "{ty} {uri:?}: {d}");
            assert!(d.to_string().contains("is refused: "), "{ty} {uri:?}: {d}");
        }
    }
}

#[test]
fn cli_check_decides_every_alias_as_the_resource() {
    let check = |user: &str, resource: &str| {
        let out = run(bin()
            .args([
                "check",
                "--action",
                "resources/read",
                "--resource",
                resource,
                "--user",
                user,
                "--app",
                "corpassist",
                "--json",
                "--policies",
            ])
            .arg(reference_policies()));
        let (stdout, stderr) = text(&out);
        (out.status.code(), stdout, stderr)
    };
    for alias in ALIASES {
        for resource in [
            format!("docs/{alias}"),
            format!("Mcp::Resource::\"docs/{alias}\""),
        ] {
            let (code, stdout, stderr) = check("carol", &resource);
            assert_eq!(code, Some(1), "{resource}: {stdout}{stderr}");
            let json: Value = serde_json::from_str(&stdout).expect("JSON");
            assert_eq!(json["decision"], "deny", "{resource}");
            assert_eq!(json["resource"], BUDGET, "{resource}");
            assert!(
                json["reason"].as_str().is_some_and(|r| r.contains(FORBID)),
                "{json}"
            );
            let (code, stdout, _) = check("alice", &resource);
            assert_eq!(code, Some(0), "alice {resource}: {stdout}");
        }
    }
    for uri in REFUSED {
        let (code, stdout, stderr) = check("alice", &format!("docs/{uri}"));
        assert_eq!(code, Some(2), "{uri:?}: {stdout}{stderr}");
        assert!(stderr.contains("is refused: "), "{uri:?}: {stderr}");
    }
}

#[test]
fn validate_refuses_resources_not_in_normal_form() {
    let validate = |dir: &Path| {
        let out = run(bin().arg("validate").arg(dir));
        let (stdout, stderr) = text(&out);
        (out.status.code(), format!("{stdout}{stderr}"))
    };
    let (code, output) = validate(&reference_policies());
    assert_eq!(code, Some(0), "{output}");
    let budget = "docs/docs://finance/budget-2026";
    for (file, alias, expected) in [
        (
            "entities.json",
            "docs/DOCS://finance/budget-2026",
            "is not in normal form",
        ),
        (
            "entities.json",
            "docs/docs://finance/x/%2e%2e/budget-2026",
            "is not in normal form",
        ),
        (
            "entities.json",
            "docs/docs://@finance/budget-2026",
            "requests may not use",
        ),
        (
            "users.cedar",
            "docs/docs://FINANCE/budget-2026",
            "is not in normal form",
        ),
    ] {
        let dir = copy_of_reference();
        let path = dir.path().join(file);
        let original = std::fs::read_to_string(&path).expect("read");
        let changed = if file == "entities.json" {
            original.replace(budget, alias)
        } else {
            format!(
                "{original}\n@id(\"alias\")\nforbid (principal, action, resource == Mcp::Resource::\"{alias}\");\n"
            )
        };
        assert_ne!(changed, original);
        std::fs::write(&path, changed).expect("write");
        let (code, output) = validate(dir.path());
        assert_eq!(code, Some(2), "{file} {alias}: {output}");
        assert!(output.contains(expected), "{file} {alias}: {output}");
        assert!(output.contains(file), "{file} {alias}: {output}");
    }
}
