//! Inputs that mean two things at once: Envoy's partial-body marker and the other
//! security headers sent twice (gRPC `headers` / `header_map`, case variants, the
//! HTTP mode's repeated headers), and JSON bodies with duplicate or case-variant
//! keys on every AuthZEN endpoint and on the HTTP ext_authz body path. Each case
//! has a baseline that is decided, so the refusal is the rule's doing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use envoy_types::ext_authz::v3::pb::{CheckRequest, CheckResponse, HttpResponse};
use mcp_authz::api::ext_authz::WireCheckRequest;
use mcp_authz::api::services::Ready;
use serde_json::{Value, json};

use crate::support::inproc::{self, Reply, app, post_raw, send};
use crate::support::tokens::{TestKey, file_resolver};
use crate::support::{envoy, reference_policies};

const GET_DOCUMENT: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1-strategy"}}}"#;
const MARKER: &str = "x-envoy-auth-partial-body";

/// Header pairs.
type Pairs<'a> = Vec<(&'a str, &'a str)>;

/// Services on the reference policies, and bearer tokens for alice and dave
/// (both through CorpAssist).
struct Mesh {
    ready: Ready,
    alice: String,
    dave: String,
    _keys: tempfile::TempDir,
}

async fn mesh() -> Mesh {
    let keys = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(1, "k1");
    let resolver = file_resolver(keys.path(), &[&key]).await;
    Mesh {
        ready: inproc::ready(inproc::engine(&reference_policies()), resolver),
        alice: format!("Bearer {}", key.token(json!({ "sub": "alice" }))),
        dave: format!("Bearer {}", key.token(json!({ "sub": "dave" }))),
        _keys: keys,
    }
}

// ---- gRPC ----

/// A `CheckRequest` for a POST to the docs server with `body`, the `headers` map and
/// `header_map` entries (raw values, as Envoy sends them with `encode_raw_headers`).
fn check_request(
    headers: &[(&str, &str)],
    header_map: &[(&str, &str)],
    body: &str,
) -> CheckRequest {
    envoy::post(body)
        .headers(headers)
        .header_map(header_map)
        .build()
}

/// The HTTP status Envoy would answer with (200 for an allow), and the response.
async fn grpc_check(mesh: &Mesh, request: CheckRequest) -> (u16, CheckResponse) {
    let service = inproc::ext_authz_grpc(mesh.ready.clone());
    let response = service
        .check(tonic::Request::new(WireCheckRequest::of(&request)))
        .await
        .expect("an answer")
        .into_inner()
        .to_response()
        .expect("an answer that decodes");
    (envoy::status(&response).0, response)
}

fn denied_body(response: &CheckResponse) -> Value {
    match &response.http_response {
        Some(HttpResponse::DeniedResponse(d)) => serde_json::from_str(&d.body).expect("JSON"),
        other => panic!("not denied: {other:?}"),
    }
}

#[tokio::test]
async fn grpc_partial_body_marker_must_be_exactly_one_false() {
    let mesh = mesh().await;
    let auth = mesh.alice.as_str();
    // Whole bodies: no marker, or `false` once, in either field or the same in both.
    for (headers, header_map) in [
        (vec![("authorization", auth)], vec![]),
        (vec![("authorization", auth), (MARKER, "false")], vec![]),
        (vec![], vec![("authorization", auth), (MARKER, "false")]),
        (
            vec![("authorization", auth), (MARKER, "false")],
            vec![(MARKER, "false")],
        ),
        (
            vec![
                ("authorization", auth),
                ("X-Envoy-Auth-Partial-Body", "false"),
            ],
            vec![],
        ),
    ] {
        let (status, _) =
            grpc_check(&mesh, check_request(&headers, &header_map, GET_DOCUMENT)).await;
        assert_eq!(status, 200, "{headers:?} {header_map:?}");
    }
    // Anything else is a partial body, or two markers: a 400, never an allow.
    let mut cases: Vec<(Pairs, Pairs)> = Vec::new();
    for v in [
        "true",
        " true",
        "false,true",
        "true,false",
        "false,false",
        " false",
        "false ",
        "FALSE",
        "False",
        "",
        "1",
    ] {
        cases.push((vec![("authorization", auth), (MARKER, v)], vec![]));
        cases.push((vec![("authorization", auth)], vec![(MARKER, v)]));
    }
    cases.extend([
        // The issue's case: `true` in `headers`, `false` in `header_map`.
        (
            vec![("authorization", auth), (MARKER, "true")],
            vec![(MARKER, "false")],
        ),
        (
            vec![("authorization", auth), (MARKER, "false")],
            vec![(MARKER, "true")],
        ),
        (
            vec![("authorization", auth)],
            vec![(MARKER, "false"), (MARKER, "true")],
        ),
        (
            vec![("authorization", auth)],
            vec![(MARKER, "true"), (MARKER, "false")],
        ),
        (
            vec![("authorization", auth)],
            vec![(MARKER, "false"), (MARKER, "false")],
        ),
        (
            vec![("authorization", auth)],
            vec![(MARKER, "false"), ("X-ENVOY-AUTH-PARTIAL-BODY", "true")],
        ),
        (
            vec![
                ("authorization", auth),
                (MARKER, "false"),
                ("X-Envoy-Auth-Partial-Body", "true"),
            ],
            vec![],
        ),
    ]);
    for (headers, header_map) in &cases {
        let (status, response) =
            grpc_check(&mesh, check_request(headers, header_map, GET_DOCUMENT)).await;
        assert_eq!(status, 400, "{headers:?} {header_map:?}");
        let code = response.status.as_ref().map(|s| s.code);
        assert_eq!(code, Some(tonic::Code::InvalidArgument as i32));
        let message = denied_body(&response)["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message == "the request body is larger than what can be authorized"
                || message.starts_with(&format!("the header `{MARKER}`")),
            "{message}"
        );
    }
}

#[tokio::test]
async fn grpc_security_headers_sent_twice_are_refused() {
    let mesh = mesh().await;
    let (alice, dave) = (mesh.alice.as_str(), mesh.dave.as_str());
    // Baselines: each token alone is decided (allowed).
    for token in [alice, dave] {
        let (status, response) = grpc_check(
            &mesh,
            check_request(&[("authorization", token)], &[], GET_DOCUMENT),
        )
        .await;
        assert_eq!(status, 200, "{response:?}");
    }
    let (status, response) = grpc_check(
        &mesh,
        check_request(
            &[],
            &[
                ("authorization", alice),
                ("mcp-method", "tools/call"),
                ("mcp-name", "get_document"),
                ("mcp-session-id", "s1"),
                ("mcp-protocol-version", "2025-11-25"),
                ("content-type", "application/json"),
                ("x-mcp-authz-user", "mallory"),
                ("accept", "application/json"),
                ("accept", "text/event-stream"),
            ],
            GET_DOCUMENT,
        ),
    )
    .await;
    assert_eq!(
        status, 200,
        "every header once, `accept` twice: {response:?}"
    );
    // The client's copy of the user header is replaced with the verified user.
    let Some(HttpResponse::OkResponse(ok)) = &response.http_response else {
        panic!("allowed");
    };
    assert!(ok.headers.iter().any(|h| {
        h.header
            .as_ref()
            .is_some_and(|h| h.key == "x-mcp-authz-user" && h.value == "alice")
    }));

    // Envoy's `headers` map joins a repeated header with commas: joined, neither
    // copy is read as the credential or as the body's method.
    let joined = format!("{alice},{dave}");
    let (status, _) = grpc_check(
        &mesh,
        check_request(&[("authorization", &joined)], &[], GET_DOCUMENT),
    )
    .await;
    assert_eq!(status, 401);
    for (name, value) in [
        ("mcp-method", "tools/call,tools/call"),
        ("mcp-name", "get_document,get_document"),
    ] {
        let (status, _) = grpc_check(
            &mesh,
            check_request(
                &[("authorization", alice), (name, value)],
                &[],
                GET_DOCUMENT,
            ),
        )
        .await;
        assert_eq!(status, 400, "{name}: {value}");
    }

    let twice: &[(&str, &str, &str)] = &[
        ("authorization", alice, dave),
        ("authorization", dave, alice),
        ("authorization", alice, alice),
        ("mcp-method", "tools/call", "tools/list"),
        ("mcp-method", "tools/call", "tools/call"),
        ("mcp-name", "get_document", "delete_document"),
        ("mcp-session-id", "s1", "s2"),
        ("mcp-protocol-version", "2025-11-25", "2025-03-26"),
        ("content-type", "application/json", "text/plain"),
        ("x-mcp-authz-user", "alice", "dave"),
        ("x-mcp-authz-application", "corpassist", "ops-console"),
        ("x-mcp-authz-decision-id", "a", "b"),
        (MARKER, "false", "true"),
    ];
    for (name, first, second) in twice {
        let upper = name.to_ascii_uppercase();
        // Twice in `header_map`; in `headers` under two spellings; in both with
        // different values (with equal values, both fields describe one header).
        let mut variants: Vec<(Pairs, Pairs)> = vec![
            (vec![], vec![(name, first), (name, second)]),
            (vec![], vec![(name, first), (&upper, second)]),
            (vec![(name, first), (&upper, second)], vec![]),
        ];
        if first != second {
            variants.push((vec![(name, first)], vec![(name, second)]));
            variants.push((vec![(&upper, second)], vec![(name, first)]));
        }
        for (mut headers, header_map) in variants {
            // Credentials for the cases that do not repeat them.
            if *name != "authorization" {
                headers.push(("authorization", alice));
            }
            let (status, response) =
                grpc_check(&mesh, check_request(&headers, &header_map, GET_DOCUMENT)).await;
            assert_eq!(status, 400, "{headers:?} {header_map:?}");
            let message = denied_body(&response)["error"]["message"].clone();
            assert!(
                message
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("the header `{name}` "))),
                "{headers:?} {header_map:?}: {message}"
            );
        }
    }
}

// ---- HTTP mode ----

async fn http_check(mesh: &Mesh, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut b = Request::post("/ext_authz/mcp");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let router = inproc::ext_authz_http(mesh.ready.clone());
    send(
        &router,
        b.body(Body::from(body.to_owned())).expect("request"),
    )
    .await
}

#[tokio::test]
async fn http_mode_repeated_headers_are_refused() {
    let mesh = mesh().await;
    let alice = mesh.alice.as_str();
    let base = [
        ("authorization", alice),
        ("x-mcp-authz-server", "docs"),
        ("content-type", "application/json"),
    ];
    for extra in [
        vec![],
        vec![(MARKER, "false")],
        vec![
            ("accept", "application/json"),
            ("accept", "text/event-stream"),
        ],
        vec![("mcp-method", "tools/call"), ("mcp-name", "get_document")],
    ] {
        let headers: Vec<_> = base.iter().copied().chain(extra.clone()).collect();
        let r = http_check(&mesh, &headers, GET_DOCUMENT).await;
        assert_eq!(r.status, StatusCode::OK, "{extra:?}: {}", r.text);
        assert_eq!(r.header("x-mcp-authz-user"), Some("alice"));
    }
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![(MARKER, "true")],
        vec![(MARKER, " false")],
        vec![(MARKER, "FALSE")],
        vec![(MARKER, "false,true")],
        vec![(MARKER, "")],
        vec![(MARKER, "false"), (MARKER, "true")],
        vec![(MARKER, "true"), (MARKER, "false")],
        vec![(MARKER, "false"), (MARKER, "false")],
        vec![("authorization", alice)],
        vec![("authorization", mesh.dave.as_str())],
        vec![("x-mcp-authz-server", "docs")],
        vec![("x-mcp-authz-server", "projects")],
        vec![("content-type", "text/plain")],
        vec![("mcp-method", "tools/call"), ("mcp-method", "tools/call")],
        vec![
            ("mcp-name", "get_document"),
            ("mcp-name", "delete_document"),
        ],
        vec![("mcp-session-id", "s1"), ("mcp-session-id", "s2")],
        vec![("mcp-protocol-version", "a"), ("mcp-protocol-version", "b")],
        vec![("x-mcp-authz-user", "a"), ("x-mcp-authz-user", "b")],
        vec![
            ("x-mcp-authz-application", "a"),
            ("x-mcp-authz-application", "a"),
        ],
    ];
    for extra in cases {
        let headers: Vec<_> = base.iter().copied().chain(extra.clone()).collect();
        let r = http_check(&mesh, &headers, GET_DOCUMENT).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{extra:?}: {}", r.text);
        assert!(r.header("x-mcp-authz-user").is_none());
    }
}

#[tokio::test]
async fn http_mode_bodies_with_duplicate_keys_are_refused() {
    let mesh = mesh().await;
    let headers = [
        ("authorization", mesh.alice.as_str()),
        ("x-mcp-authz-server", "docs"),
    ];
    assert_eq!(
        http_check(&mesh, &headers, GET_DOCUMENT).await.status,
        StatusCode::OK
    );
    for body in [
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_document","name":"delete_document","arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","method":"tools/list","params":{"name":"get_document"}}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_document","Name":"delete_document"}}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_document","arguments":{"document_id":"titan/q1","document_id":"finance/budget"}}}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"get_document","n\u0061me":"delete_document"}}"#,
    ] {
        let r = http_check(&mesh, &headers, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
    }
}

// ---- AuthZEN ----

fn user(id: &str) -> String {
    format!(r#"{{"type":"user","id":"{id}"}}"#)
}

#[tokio::test]
async fn authzen_duplicate_keys_are_refused_on_every_endpoint() {
    let app = app(&reference_policies());
    let json_ok = |r: &Reply| {
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    };
    // The issue's case: the last `subject` used to win.
    let update = r#""action":{"name":"tools/call"},"resource":{"type":"tool","id":"projects/update_issue"},"context":{"agent":"ops-console","arguments":{"issue_id":"TITAN-1","status":"done"}}"#;
    let decide = |subjects: &[String]| {
        let s: Vec<String> = subjects
            .iter()
            .map(|u| format!(r#""subject":{u}"#))
            .collect();
        format!("{{{},{update}}}", s.join(","))
    };
    for (who, allowed) in [("alice", true), ("dave", false)] {
        let r = post_raw(
            &app,
            "/access/v1/evaluation",
            Some("application/json"),
            &decide(&[user(who)]),
        )
        .await;
        json_ok(&r);
        assert_eq!(r.json()["decision"], allowed, "{who}");
    }
    for body in [
        decide(&[user("dave"), user("alice")]),
        decide(&[user("alice"), user("dave")]),
    ] {
        let r = post_raw(
            &app,
            "/access/v1/evaluation",
            Some("application/json"),
            &body,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            r.json()["error"]["message"],
            "an object of the request body has the key `subject` twice"
        );
    }

    // Every endpoint: a valid body, then the same body with a key twice at the top,
    // twice deeper down, and in another case.
    let tool = r#"{"type":"tool","id":"docs/get_document"}"#;
    let action = r#"{"name":"tools/call"}"#;
    let alice = user("alice");
    let endpoints = [
        (
            "/access/v1/evaluation",
            format!(
                r#"{{"subject":{alice},"action":{action},"resource":{tool},"context":{{"agent":"corpassist"}}}}"#
            ),
        ),
        (
            "/access/v1/evaluations",
            format!(
                r#"{{"subject":{alice},"context":{{"agent":"corpassist"}},"evaluations":[{{"action":{action},"resource":{tool}}}]}}"#
            ),
        ),
        (
            "/access/v1/search/subject",
            format!(
                r#"{{"subject":{{"type":"user"}},"action":{action},"resource":{tool},"context":{{"agent":"corpassist"}}}}"#
            ),
        ),
        (
            "/access/v1/search/resource",
            format!(
                r#"{{"subject":{alice},"action":{action},"resource":{{"type":"tool"}},"context":{{"agent":"corpassist"}}}}"#
            ),
        ),
        (
            "/access/v1/search/action",
            format!(
                r#"{{"subject":{alice},"resource":{tool},"context":{{"agent":"corpassist"}}}}"#
            ),
        ),
    ];
    for (path, body) in &endpoints {
        let r = post_raw(&app, path, Some("application/json"), body).await;
        json_ok(&r);
        let broken = [
            (
                body.replacen('{', r#"{"subject":{"type":"user","id":"dave"},"#, 1),
                "an object of the request body has the key `subject` twice",
            ),
            (
                body.replacen(r#""type":"#, r#""type":"application","type":"#, 1),
                "an object of the request body has the key `type` twice",
            ),
            (
                body.replacen(
                    r#""agent":"corpassist""#,
                    r#""agent":"corpassist","\u0061gent":"ops-console""#,
                    1,
                ),
                "an object of the request body has the key `agent` twice",
            ),
            (
                body.replacen('{', r#"{"Subject":{"type":"user","id":"dave"},"#, 1),
                "an object of the request body has the keys `Subject` and `subject`, which differ only in case",
            ),
            (
                body.replacen(
                    r#""context":{"agent":"corpassist""#,
                    r#""context":{"agent":"corpassist","AGENT":"ops-console""#,
                    1,
                ),
                // Context attributes are Cedar's (case counts); for the MCP profile,
                // another spelling of `agent` is refused by the mapping.
                "`context.AGENT` reads as `context.agent`: name the application once, as `agent`",
            ),
        ];
        for (text, message) in broken {
            assert_ne!(&text, body, "the case changes the body");
            let r = post_raw(&app, path, Some("application/json"), &text).await;
            // The body is read; the mapping refuses the item: a batch answers it
            // as a failed item, a deny, the other endpoints as a bad request.
            if message.starts_with("`context.AGENT`") && r.status == StatusCode::OK {
                let items = r.json()["evaluations"].clone();
                assert_eq!(items[0]["decision"], false, "{path} {text}");
                assert_eq!(items[0]["context"]["error"]["message"], message, "{path}");
                continue;
            }
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{path} {text}: {}",
                r.text
            );
            assert_eq!(r.json()["error"]["message"], message, "{path} {text}");
        }
    }
}

#[tokio::test]
async fn authzen_repeated_authorization_and_content_type_are_refused() {
    let app = app(&reference_policies());
    let body = format!(
        r#"{{"subject":{},"action":{{"name":"tools/call"}},"resource":{{"type":"tool","id":"docs/get_document"}},"context":{{"agent":"corpassist"}}}}"#,
        user("alice")
    );
    let send_with = |headers: Vec<(&'static str, &'static str)>| {
        let mut b = Request::post("/access/v1/evaluation");
        for (k, v) in headers {
            b = b.header(k, v);
        }
        b.body(Body::from(body.clone())).expect("request")
    };
    let r = send(&app, send_with(vec![("content-type", "application/json")])).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    for headers in [
        vec![
            ("content-type", "application/json"),
            ("content-type", "application/json"),
        ],
        vec![
            ("content-type", "application/json"),
            ("content-type", "text/plain"),
        ],
        vec![
            ("content-type", "application/json"),
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b"),
        ],
    ] {
        let r = send(&app, send_with(headers.clone())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{headers:?}: {}", r.text);
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("is sent more than once")),
            "{}",
            r.text
        );
    }
}
