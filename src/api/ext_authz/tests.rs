use axum::http::StatusCode;
use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::HeaderMap as EnvoyHeaderMap;
use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as AttrRequest,
};
use std::sync::Arc;

use tonic::Request;

use super::*;
use crate::api::services::Ready;

/// A `CheckRequest` with `headers` (the map) and `header_map` entries
/// (`(key, value, raw_value)`).
fn check(headers: &[(&str, &str)], header_map: &[(&str, &str, &str)]) -> CheckRequest {
    let http = HttpRequest {
        method: "POST".into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        header_map: (!header_map.is_empty()).then(|| EnvoyHeaderMap {
            headers: header_map
                .iter()
                .map(|(k, v, raw)| EnvoyHeader {
                    key: (*k).to_owned(),
                    value: (*v).to_owned(),
                    raw_value: raw.as_bytes().to_vec(),
                })
                .collect(),
        }),
        ..HttpRequest::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(http),
                ..AttrRequest::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// Whether the body of `c` counts as whole; `Err` if its headers are refused.
fn whole(c: &CheckRequest) -> Result<bool, HeaderError> {
    let wire = WireCheckRequest::of(c);
    let r = envoy_request(&wire).expect("UTF-8");
    Ok(r.headers.check()?.body_is_whole())
}

const MARKER: &str = PARTIAL_BODY_HEADER;

#[test]
fn only_one_false_marker_is_a_whole_body() {
    // Whole: no marker, or exactly `false` once (from either field, or the same in both).
    for c in [
        check(&[], &[]),
        check(&[(MARKER, "false")], &[]),
        check(&[], &[(MARKER, "false", "")]),
        check(&[], &[(MARKER, "", "false")]),
        check(&[], &[(MARKER, "false", "false")]),
        check(&[("X-Envoy-Auth-Partial-Body", "false")], &[]),
        check(&[(MARKER, "false")], &[(MARKER, "", "false")]),
    ] {
        assert_eq!(whole(&c), Ok(true), "{c:?}");
    }
    // Partial: any other single value.
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
        "0",
        "no",
        "false\t",
        "fals",
        "false;",
        "\u{0}false",
    ] {
        assert_eq!(
            whole(&check(&[(MARKER, v)], &[])),
            Ok(false),
            "headers `{v}`"
        );
        // An empty marker is a marker: partial.
        assert_eq!(
            whole(&check(&[], &[(MARKER, "", v)])),
            Ok(false),
            "raw `{v}`"
        );
        assert_eq!(
            whole(&check(&[], &[(MARKER, v, "")])),
            Ok(false),
            "value `{v}`"
        );
    }
    // Two markers: refused, whichever field holds which.
    let conflicting = Err(HeaderError::Conflicting(MARKER.into()));
    let repeated = Err(HeaderError::Repeated(MARKER.into()));
    for (c, expected) in [
        (
            check(&[(MARKER, "true")], &[(MARKER, "", "false")]),
            &conflicting,
        ),
        (
            check(&[(MARKER, "false")], &[(MARKER, "", "true")]),
            &conflicting,
        ),
        (
            check(&[(MARKER, "false")], &[(MARKER, "true", "")]),
            &conflicting,
        ),
        (
            check(&[], &[(MARKER, "", "false"), (MARKER, "", "true")]),
            &repeated,
        ),
        (
            check(&[], &[(MARKER, "", "true"), (MARKER, "", "false")]),
            &repeated,
        ),
        (
            check(&[], &[(MARKER, "", "false"), (MARKER, "", "false")]),
            &repeated,
        ),
        (check(&[], &[(MARKER, "false", "true")]), &repeated),
        (
            check(
                &[],
                &[
                    (MARKER, "", "false"),
                    ("X-ENVOY-AUTH-PARTIAL-BODY", "", "true"),
                ],
            ),
            &repeated,
        ),
        (
            check(
                &[(MARKER, "false"), ("X-Envoy-Auth-Partial-Body", "true")],
                &[],
            ),
            &repeated,
        ),
        (
            check(
                &[(MARKER, "false"), ("x-envoy-auth-partial-BODY", "false")],
                &[],
            ),
            &repeated,
        ),
    ] {
        assert_eq!(&whole(&c), expected, "{c:?}");
    }
}

#[test]
fn security_headers_are_read_once_or_refused() {
    for name in [
        "authorization",
        "content-type",
        "mcp-method",
        "mcp-name",
        "mcp-session-id",
        "mcp-protocol-version",
        "mcp-anything-new",
        "x-mcp-authz-server",
        "x-mcp-authz-user",
        "x-mcp-authz-application",
        "x-mcp-authz-decision-id",
        PARTIAL_BODY_HEADER,
    ] {
        assert!(is_security_header(name), "{name}");
        let upper = name.to_ascii_uppercase();
        let ok = |c: &CheckRequest| {
            envoy_request(&WireCheckRequest::of(c))
                .expect("UTF-8")
                .headers
                .check()
                .map(|checked| checked.get(name).map(str::to_owned))
        };
        let a = Ok(Some("a".to_owned()));
        assert_eq!(ok(&check(&[(name, "a")], &[])), a);
        assert_eq!(ok(&check(&[(&upper, "a")], &[])), a, "{upper}");
        assert_eq!(ok(&check(&[(name, "a")], &[(name, "", "a")])), a);
        let repeated = Err(HeaderError::Repeated(name.into()));
        assert_eq!(
            ok(&check(&[], &[(name, "", "a"), (name, "", "a")])),
            repeated
        );
        assert_eq!(
            ok(&check(&[], &[(name, "", "a"), (&upper, "", "b")])),
            repeated
        );
        assert_eq!(ok(&check(&[(name, "a"), (&upper, "a")], &[])), repeated);
        assert_eq!(
            ok(&check(&[(name, "a")], &[(&upper, "", "b")])),
            Err(HeaderError::Conflicting(name.into()))
        );
        // And read as refused, not as one of the values.
        let c = check(&[], &[(name, "", "a"), (name, "", "b")]);
        let c = WireCheckRequest::of(&c);
        let r = envoy_request(&c).expect("UTF-8");
        assert!(r.headers.get(name).is_err());
        assert!(r.headers.singles().all(|(k, _)| k != name));
        assert!(r.headers.singles_named(|k| k == name).next().is_none());
    }
    // Headers no decision depends on may repeat; repeated, they are not read.
    for name in ["accept", "traceparent", "x-request-id", "user-agent"] {
        assert!(!is_security_header(name));
        let c = check(&[], &[(name, "", "a"), (name, "", "b")]);
        let c = WireCheckRequest::of(&c);
        let r = envoy_request(&c).expect("UTF-8");
        let checked = r.headers.check().expect("not a security header");
        assert_eq!(checked.named(|k| k == name).next(), None);
        assert_eq!(r.headers.get_lenient(name), None);
    }
}

#[test]
fn refusals_name_the_header_safely() {
    let c = check(
        &[],
        &[("mcp-\u{1b}[31m`x", "", "a"), ("mcp-\u{1b}[31m`x", "", "b")],
    );
    let c = WireCheckRequest::of(&c);
    let r = envoy_request(&c).expect("UTF-8");
    let message = r
        .headers
        .check()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(
        message,
        "the header `mcp-\\u{1b}[31m\\u{60}x` is sent more than once"
    );
}

/// A `CheckRequest` for `method` with `headers` and `body`, on the default server.
fn envoy(method: &str, headers: &[(&str, &str)], body: &str) -> CheckRequest {
    let mut c = check(headers, &[]);
    if let Some(http) = c
        .attributes
        .as_mut()
        .and_then(|a| a.request.as_mut())
        .and_then(|r| r.http.as_mut())
    {
        http.method = method.into();
        http.body = body.into();
    }
    c
}

/// The decision id of a denied answer's `x-mcp-authz-decision-id`.
fn decision_id_of(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .find(|(k, _)| k == DECISION_ID_HEADER)
        .map(|(_, v)| v.clone())
        .expect("a decision id header")
}

/// The status, headers and body of the answer of `ExtAuthzGrpc::check`.
async fn grpc_answer(
    service: &ExtAuthzGrpc,
    request: CheckRequest,
) -> (i32, Option<i32>, Vec<(String, String)>, String) {
    let response = service
        .check(Request::new(WireCheckRequest::of(&request)))
        .await
        .expect("an answer")
        .into_inner()
        .to_response()
        .expect("an answer that decodes");
    let code = response.status.map_or(-1, |s| s.code);
    let (status, headers, body) = match response.http_response {
        Some(HttpResponse::OkResponse(ok)) => (None, ok.headers, String::new()),
        Some(HttpResponse::DeniedResponse(d)) => (d.status.map(|s| s.code), d.headers, d.body),
        _ => (None, Vec::new(), String::new()),
    };
    let headers = headers
        .into_iter()
        .filter_map(|h| h.header)
        .map(|h| (h.key, h.value))
        .collect();
    (code, status, headers, body)
}

#[tokio::test]
async fn grpc_mode_allows_denies_and_refuses() {
    use crate::api::test_support::{ready, token, tools_call};
    let service = ExtAuthzGrpc::new(ready().await);
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let auth = [("authorization", bearer.as_str())];

    let (code, status, headers, _) =
        grpc_answer(&service, envoy("POST", &auth, &tools_call("get_document"))).await;
    assert_eq!((code, status), (tonic::Code::Ok as i32, None));
    assert!(headers.contains(&(USER_HEADER.to_owned(), "alice".to_owned())));

    let (code, status, _, body) = grpc_answer(
        &service,
        envoy("POST", &auth, &tools_call("delete_document")),
    )
    .await;
    assert_eq!(
        (code, status),
        (tonic::Code::PermissionDenied as i32, Some(403))
    );
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (&body["id"], &body["error"]["code"]),
        (&json!(7), &json!(-32003))
    );

    let (code, status, headers, body) =
        grpc_answer(&service, envoy("POST", &[], &tools_call("get_document"))).await;
    assert_eq!(
        (code, status),
        (tonic::Code::Unauthenticated as i32, Some(401))
    );
    assert!(headers.contains(&(
        "www-authenticate".to_owned(),
        "Bearer realm=\"mcp-authz\"".to_owned()
    )));
    let id = decision_id_of(&headers);
    assert_eq!(
        body,
        format!(
            r#"{{"jsonrpc":"2.0","id":7,"error":{{"code":-32001,"message":"unauthenticated: a bearer token is required","data":{{"decision_id":"{id}"}}}}}}"#
        )
    );

    let (code, status, headers, body) = grpc_answer(&service, envoy("PUT", &auth, "")).await;
    assert_eq!(
        (code, status),
        (tonic::Code::InvalidArgument as i32, Some(400))
    );
    let id = decision_id_of(&headers);
    assert!(!id.is_empty());
    assert_eq!(
        body,
        format!(
            r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32600,"message":"HTTP method `PUT` is not used by MCP","data":{{"decision_id":"{id}"}}}}}}"#
        )
    );

    // GET: the server's stream, decided as `session/stream` on the server.
    let (_, status, _, _) = grpc_answer(&service, envoy("GET", &auth, "")).await;
    assert!(matches!(status, None | Some(403)), "decided, not refused");

    let status = ExtAuthzGrpc::new(Ready::new())
        .check(Request::new(WireCheckRequest::of(&envoy(
            "POST", &auth, "",
        ))))
        .await
        .expect_err("not ready");
    assert_eq!(status.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn http_mode_answers_with_the_same_refusals() {
    use crate::api::test_support::{ready, tools_call};
    use tower::ServiceExt as _;
    let post = |body: String| {
        axum::http::Request::builder()
            .method("POST")
            .uri("/ext_authz/mcp")
            .body(axum::body::Body::from(body))
            .expect("request")
    };
    let response = http_router(ready().await)
        .oneshot(post(tools_call("get_document")))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer realm=\"mcp-authz\"")
    );
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["error"]["code"], json!(-32001));

    let response = http_router(Ready::new())
        .oneshot(post(String::new()))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// Services deciding as [`crate::api::test_support::services`], with no default
/// server, `docs.*.svc.cluster.local` → `docs`, `tickets.example.com` → `tickets`
/// and the docs workload's SPIFFE ID → `docs`.
async fn mesh_services(default_server: Option<&str>) -> Services {
    mesh_services_on(default_server, crate::api::test_support::services().await)
}

/// `base` with the mesh tables of [`mesh_services`].
fn mesh_services_on(default_server: Option<&str>, base: Services) -> Services {
    use std::collections::BTreeMap;
    let t = |p: &[(&str, &str)]| {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>()
    };
    let map = crate::config::ServerMap::new(
        &t(&[
            ("docs.*.svc.cluster.local", "docs"),
            ("tickets.example.com", "tickets"),
        ]),
        &t(&[(DOCS_SPIFFE, "docs"), (TICKETS_SPIFFE, "tickets")]),
    )
    .expect("server map");
    Services {
        envoy_default_server: default_server.map(str::to_owned),
        envoy_servers: map,
        // The full reason: these tests read which refusal (which server) it was.
        deny_detail: crate::config::DenyDetail::Full,
        ..base
    }
}

const DOCS_SPIFFE: &str = "spiffe://corp.example/ns/docs/sa/docs-server";
const TICKETS_SPIFFE: &str = "spiffe://corp.example/ns/tickets/sa/tickets-server";

#[tokio::test]
async fn the_server_is_chosen_by_route_then_principal_then_authority_then_default() {
    let services = mesh_services(None).await;
    let choose = |route, principal, authority| {
        choose_server(&services, route, principal, authority).map(|(s, from)| (s.to_owned(), from))
    };
    let docs_host = Some("Docs.Prod.svc.cluster.local:8080");
    assert_eq!(
        choose(None, None, docs_host),
        Ok(("docs".into(), ServerSource::Authority))
    );
    assert_eq!(
        choose(None, Some(TICKETS_SPIFFE), docs_host),
        Ok(("tickets".into(), ServerSource::Principal))
    );
    assert_eq!(
        choose(Some("calendar"), Some(TICKETS_SPIFFE), docs_host),
        Ok(("calendar".into(), ServerSource::Route))
    );
    // An unknown principal does not stop the authority from naming the server.
    assert_eq!(
        choose(None, Some("spiffe://corp.example/ns/x/sa/y"), docs_host),
        Ok(("docs".into(), ServerSource::Authority))
    );
    assert_eq!(
        choose(None, None, Some("mail.example.com")),
        Err(Some("mail.example.com".into()))
    );
    assert_eq!(choose(None, None, None), Err(None));
    let services = mesh_services(Some("fallback")).await;
    assert_eq!(
        choose_server(&services, None, None, Some("mail.example.com")),
        Ok(("fallback", ServerSource::Default))
    );
    assert_eq!(
        choose_server(&services, None, None, Some("tickets.example.com")),
        Ok(("tickets", ServerSource::Authority))
    );
}

/// `envoy` for `method`, with `host` in `http.host`, `destination` as the
/// destination's principal and `route` as `context_extensions.mcp_server`.
fn mesh_check(
    headers: &[(&str, &str)],
    body: &str,
    host: &str,
    destination: Option<&str>,
    route: Option<&str>,
) -> CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::Peer;
    let mut c = envoy("POST", headers, body);
    if let Some(a) = c.attributes.as_mut() {
        if let Some(http) = a.request.as_mut().and_then(|r| r.http.as_mut()) {
            http.host = host.into();
        }
        a.destination = destination.map(|p| Peer {
            principal: p.into(),
            ..Peer::default()
        });
        if let Some(r) = route {
            a.context_extensions.insert("mcp_server".into(), r.into());
        }
    }
    c
}

#[tokio::test]
async fn grpc_mode_takes_the_server_from_the_mesh() {
    use crate::api::test_support::{token, tools_call};
    let ready = Ready::new();
    ready.set(mesh_services(None).await).await;
    let service = ExtAuthzGrpc::new(ready);
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let auth = [("authorization", bearer.as_str())];
    let get = tools_call("get_document");
    let answer = |host: &'static str, destination, route| {
        grpc_answer(&service, mesh_check(&auth, &get, host, destination, route))
    };
    // Allowed on `docs`, by the authority or the destination.
    let (code, ..) = answer("docs.prod.svc.cluster.local:80", None, None).await;
    assert_eq!(code, tonic::Code::Ok as i32);
    let (code, ..) = answer("10.0.0.7:8080", Some(DOCS_SPIFFE), None).await;
    assert_eq!(code, tonic::Code::Ok as i32);
    // The destination outranks the authority, the route outranks both: decided on
    // `tickets`, where alice may not call `get_document`.
    for (destination, route) in [
        (Some(TICKETS_SPIFFE), None),
        (Some(DOCS_SPIFFE), Some("tickets")),
    ] {
        let (code, status, _, body) =
            answer("docs.prod.svc.cluster.local", destination, route).await;
        assert_eq!(
            (code, status),
            (tonic::Code::PermissionDenied as i32, Some(403)),
            "{body}"
        );
        assert!(!body.contains("no MCP server"), "{body}");
    }
    // Unmapped, no default: a deny naming the authority, never the default by accident.
    let (code, status, _, body) = answer("mail.example.com:443", None, None).await;
    assert_eq!(
        (code, status),
        (tonic::Code::PermissionDenied as i32, Some(403))
    );
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["error"]["code"], json!(-32003));
    assert_eq!(
        body["error"]["message"],
        json!("forbidden: no MCP server for authority `mail.example.com:443`"),
        "{body}"
    );
    // The authority from the headers when Envoy leaves `http.host` empty.
    let mut headers = auth.to_vec();
    headers.push((":authority", "docs.staging.svc.cluster.local"));
    let (code, ..) = grpc_answer(&service, mesh_check(&headers, &get, "", None, None)).await;
    assert_eq!(code, tonic::Code::Ok as i32);
}

#[tokio::test]
async fn http_mode_takes_the_server_from_the_host() {
    use crate::api::test_support::{token, tools_call};
    let ready = Ready::new();
    ready.set(mesh_services(None).await).await;
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let post = |host: &str, server: Option<&str>| {
        let mut b = axum::http::Request::builder()
            .method("POST")
            .uri("/ext_authz/mcp")
            .header("host", host)
            .header("content-type", "application/json")
            .header("authorization", &bearer);
        if let Some(s) = server {
            b = b.header(SERVER_HEADER, s);
        }
        b.body(axum::body::Body::from(tools_call("get_document")))
            .expect("request")
    };
    let status = |host: &'static str, server: Option<&'static str>| {
        let router = http_router(ready.clone());
        let request = post(host, server);
        http_answer(router, request)
    };
    assert_eq!(
        status("DOCS.prod.svc.cluster.local", None).await.0,
        StatusCode::OK
    );
    let (code, body) = status("docs.prod.svc.cluster.local", Some("tickets")).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(!body.contains("no MCP server"), "{body}");
    let (code, body) = status("mail.example.com", None).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        body.contains("no MCP server for authority `mail.example.com`"),
        "{body}"
    );
}

/// A recorder keeping the decision log's `server_source` of every decision (and
/// refusal) it hears of.
#[derive(Debug, Default)]
struct SourcesHeard(std::sync::Mutex<Vec<Option<&'static str>>>);

impl crate::authz::Recorder for SourcesHeard {
    fn decided(&self, decided: crate::authz::Decided<'_>) {
        if let Ok(mut heard) = self.0.lock() {
            heard.push(decided.meta.server_source);
        }
    }

    fn cache_lookup(&self, _: bool) {}
}

impl SourcesHeard {
    fn take(&self) -> Vec<Option<&'static str>> {
        std::mem::take(&mut *self.0.lock().expect("lock"))
    }
}

/// Mesh services (see [`mesh_services`]) whose decisions are heard by the returned recorder.
async fn mesh_services_heard(default_server: Option<&str>) -> (Services, Arc<SourcesHeard>) {
    let heard = Arc::new(SourcesHeard::default());
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let store = Arc::new(crate::policy::PolicyStore::open(&policies).expect("reference policies"));
    let engine = crate::authz::Engine::with_recorder(store, heard.clone());
    let base = crate::api::test_support::services_with(engine, Arc::default()).await;
    (mesh_services_on(default_server, base), heard)
}

#[tokio::test]
async fn grpc_decisions_record_where_the_server_came_from() {
    use crate::api::test_support::{token, tools_call};
    let (services, heard) = mesh_services_heard(None).await;
    let service = ExtAuthzGrpc::new(Ready::with(services));
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let auth = [("authorization", bearer.as_str())];
    let get = tools_call("get_document");
    let docs_host = "docs.prod.svc.cluster.local";
    for (host, destination, route, source) in [
        (docs_host, None, None, "authority"),
        ("10.0.0.7:8080", Some(DOCS_SPIFFE), None, "principal"),
        (docs_host, Some(DOCS_SPIFFE), Some("tickets"), "route"),
    ] {
        grpc_answer(&service, mesh_check(&auth, &get, host, destination, route)).await;
        assert_eq!(heard.take(), [Some(source)], "{source}");
    }
    // A refusal after the server was chosen (no credentials) says where it came from too.
    grpc_answer(&service, mesh_check(&[], &get, docs_host, None, None)).await;
    assert_eq!(heard.take(), [Some("authority")]);
    // No server: refused before any was chosen.
    grpc_answer(
        &service,
        mesh_check(&auth, &get, "mail.example.com", None, None),
    )
    .await;
    assert_eq!(heard.take(), [None]);

    let (services, heard) = mesh_services_heard(Some("docs")).await;
    let service = ExtAuthzGrpc::new(Ready::with(services));
    let (code, ..) = grpc_answer(
        &service,
        mesh_check(&auth, &get, "mail.example.com", None, None),
    )
    .await;
    assert_eq!(code, tonic::Code::Ok as i32);
    assert_eq!(heard.take(), [Some("default")]);
}

#[tokio::test]
async fn http_decisions_record_where_the_server_came_from() {
    use crate::api::test_support::{token, tools_call};
    use tower::ServiceExt as _;
    let (services, heard) = mesh_services_heard(None).await;
    let ready = Ready::with(services);
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    for (server, source) in [(None, "authority"), (Some("tickets"), "route")] {
        let mut b = axum::http::Request::builder()
            .method("POST")
            .uri("/ext_authz/mcp")
            .header("host", "docs.prod.svc.cluster.local")
            .header("content-type", "application/json")
            .header("authorization", &bearer);
        if let Some(s) = server {
            b = b.header(SERVER_HEADER, s);
        }
        let request = b
            .body(axum::body::Body::from(tools_call("get_document")))
            .expect("request");
        http_router(ready.clone())
            .oneshot(request)
            .await
            .expect("infallible");
        assert_eq!(heard.take(), [Some(source)], "{source}");
    }
}

/// The HTTP mode's destination principal: a header Envoy adds, honoured with the
/// caller secret only, then mapped by `[envoy.principals]` like gRPC's
/// `attributes.destination.principal` (and outranking the `Host`).
#[tokio::test]
async fn http_mode_takes_the_destination_principal_from_the_trusted_caller_only() {
    use crate::api::mcp_check::CALLER_TOKEN_HEADER;
    use crate::api::test_support::{token, tools_call};
    let (services, heard) = mesh_services_heard(None).await;
    let ready = Ready::with(Services {
        trusted_caller_token: Some(crate::config::Secret::new("s3cret")),
        ..services
    });
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let ask = |host: &'static str, destination: &'static str, secret: Option<&'static str>| {
        let mut b = axum::http::Request::builder()
            .method("POST")
            .uri("/ext_authz/mcp")
            .header("host", host)
            .header("content-type", "application/json")
            .header("authorization", &bearer)
            .header(DESTINATION_PRINCIPAL_HEADER, destination);
        if let Some(s) = secret {
            b = b.header(CALLER_TOKEN_HEADER, s);
        }
        let request = b
            .body(axum::body::Body::from(tools_call("get_document")))
            .expect("request");
        let router = http_router(ready.clone());
        http_answer(router, request)
    };
    // An unmapped host: the destination names `docs`, where alice may read.
    let (status, body) = ask("10.0.0.7:8080", DOCS_SPIFFE, Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(heard.take(), [Some("principal")]);
    // It outranks the host: decided on `tickets`, where she may not.
    let (status, body) = ask(
        "docs.prod.svc.cluster.local",
        TICKETS_SPIFFE,
        Some("s3cret"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(!body.contains("no MCP server"), "{body}");
    assert_eq!(heard.take(), [Some("principal")]);
    // An empty header is no assertion: the host decides.
    let (status, body) = ask("docs.prod.svc.cluster.local", "", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(heard.take(), [Some("authority")]);
    // Without the secret, or with a wrong one: refused, whatever the host says.
    for secret in [None, Some("guess")] {
        let (status, body) = ask("docs.prod.svc.cluster.local", DOCS_SPIFFE, secret).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["error"]["code"], json!(-32003));
        assert!(
            body["error"]["message"].as_str().is_some_and(|m| m
                .contains("the destination principal in `x-mcp-authz-destination-principal`")
                && m.contains("trusted caller")),
            "{body}"
        );
        assert_eq!(heard.take(), [None], "refused before a server was chosen");
    }
}

/// In the gRPC mode the destination is Envoy's `attributes.destination.principal`
/// only: a request header naming one is never read.
#[tokio::test]
async fn grpc_mode_never_reads_a_destination_principal_header() {
    use crate::api::test_support::{token, tools_call};
    let (services, heard) = mesh_services_heard(None).await;
    let service = ExtAuthzGrpc::new(Ready::with(services));
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let headers = [
        ("authorization", bearer.as_str()),
        (DESTINATION_PRINCIPAL_HEADER, TICKETS_SPIFFE),
    ];
    let get = tools_call("get_document");
    let (code, ..) = grpc_answer(
        &service,
        mesh_check(&headers, &get, "docs.prod.svc.cluster.local", None, None),
    )
    .await;
    assert_eq!(
        code,
        tonic::Code::Ok as i32,
        "decided on `docs`, by the host"
    );
    assert_eq!(heard.take(), [Some("authority")]);
}

/// The status and body the HTTP mode's `router` answers `request` with.
async fn http_answer(
    router: axum::Router,
    request: axum::http::Request<axum::body::Body>,
) -> (axum::http::StatusCode, String) {
    use tower::ServiceExt as _;
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The services of [`crate::api::test_support::ready`] telling denied clients `detail`.
async fn ready_with(detail: crate::config::DenyDetail) -> Ready {
    Ready::with(Services {
        deny_detail: detail,
        ..crate::api::test_support::services().await
    })
}

/// The status, the decision id header and the JSON-RPC error of alice's denied
/// `tools/call` of `delete_document`, through the gRPC mode and the HTTP mode.
async fn denied_in_both_modes(ready: Ready) -> [(u16, String, Value); 2] {
    use crate::api::test_support::{token, tools_call};
    use tower::ServiceExt as _;
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let body = tools_call("delete_document");
    let (code, status, headers, grpc_body) = grpc_answer(
        &ExtAuthzGrpc::new(ready.clone()),
        envoy("POST", &[("authorization", bearer.as_str())], &body),
    )
    .await;
    assert_eq!(code, tonic::Code::PermissionDenied as i32, "a deny");
    let grpc_status = status.and_then(|s| u16::try_from(s).ok()).unwrap_or(0);
    let grpc = (
        grpc_status,
        decision_id_of(&headers),
        serde_json::from_str(&grpc_body).expect("JSON"),
    );
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/ext_authz/mcp")
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .expect("request");
    let response = http_router(ready)
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get(DECISION_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let http = (status, id, serde_json::from_slice(&bytes).expect("JSON"));
    [grpc, http]
}

#[tokio::test]
async fn a_denied_call_tells_the_client_what_deny_detail_allows_in_both_modes() {
    use crate::api::refusal::GENERIC_FORBIDDEN;
    use crate::config::DenyDetail;
    // The default: a generic 403, no policy id, no principal, the decision id in `data`.
    for (status, id, body) in denied_in_both_modes(ready_with(DenyDetail::default()).await).await {
        assert_eq!(status, 403);
        assert!(!id.is_empty());
        assert_eq!(
            body,
            json!({ "jsonrpc": "2.0", "id": 7, "error": {
                "code": -32003, "message": GENERIC_FORBIDDEN, "data": { "decision_id": id } } })
        );
    }
    // `full`: the reason, as before, with the decision id.
    let mut messages = Vec::new();
    for (status, id, body) in denied_in_both_modes(ready_with(DenyDetail::Full).await).await {
        assert_eq!(status, 403);
        assert_eq!(body["error"]["code"], json!(-32003));
        assert_eq!(body["error"]["data"], json!({ "decision_id": id }));
        let message = body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.starts_with("forbidden: ") && message != GENERIC_FORBIDDEN,
            "{message}"
        );
        messages.push(message);
    }
    assert_eq!(messages[0], messages[1], "one reason in both modes");
    // `not_found`: the answer of a server without the tool. Through the gRPC mode
    // with status 200, as an MCP server answers an unknown tool; the HTTP mode
    // cannot (200 is an allow there): 400, the status of invalid params.
    let [grpc, http] = denied_in_both_modes(ready_with(DenyDetail::NotFound).await).await;
    for ((status, id, body), expected) in [(grpc, 200), (http, 400)] {
        assert_eq!(status, expected);
        assert_eq!(
            body,
            json!({ "jsonrpc": "2.0", "id": 7, "error": {
                "code": -32602, "message": "Unknown tool: delete_document",
                "data": { "decision_id": id } } })
        );
    }
}

#[tokio::test]
async fn refusals_keep_their_message_and_carry_the_decision_id_at_every_level() {
    use crate::api::test_support::tools_call;
    use crate::config::DenyDetail;
    for detail in [DenyDetail::Generic, DenyDetail::Full, DenyDetail::NotFound] {
        let service = ExtAuthzGrpc::new(ready_with(detail).await);
        // No credentials: 401 with its own message.
        let (_, status, headers, body) =
            grpc_answer(&service, envoy("POST", &[], &tools_call("get_document"))).await;
        assert_eq!(status, Some(401));
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            body["error"],
            json!({ "code": -32001, "message": "unauthenticated: a bearer token is required",
                "data": { "decision_id": decision_id_of(&headers) } })
        );
        // Malformed: 400 with the reader's message.
        let (_, status, headers, body) = grpc_answer(&service, envoy("POST", &[], "{")).await;
        assert_eq!(status, Some(400));
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["error"]["code"], json!(-32700), "{body}");
        assert_eq!(
            body["error"]["data"],
            json!({ "decision_id": decision_id_of(&headers) })
        );
    }
}

#[tokio::test]
async fn a_denied_batch_is_never_answered_as_not_found() {
    use crate::api::refusal::GENERIC_FORBIDDEN;
    use crate::api::test_support::token;
    let service = ExtAuthzGrpc::new(ready_with(crate::config::DenyDetail::NotFound).await);
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "tools/call",
          "params": { "name": "delete_document", "arguments": { "document_id": "x" } } },
    ]);
    let (_, status, headers, body) = grpc_answer(
        &service,
        envoy(
            "POST",
            &[("authorization", bearer.as_str())],
            &batch.to_string(),
        ),
    )
    .await;
    assert_eq!(status, Some(403), "{body}");
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        body["error"],
        json!({ "code": -32003, "message": GENERIC_FORBIDDEN,
            "data": { "decision_id": decision_id_of(&headers) } })
    );
}

/// The dynamic metadata of the answer (the `envoy.filters.http.ext_authz` namespace).
async fn grpc_metadata(service: &ExtAuthzGrpc, request: CheckRequest) -> Map<String, Value> {
    let response = service
        .check(Request::new(WireCheckRequest::of(&request)))
        .await
        .expect("an answer")
        .into_inner()
        .to_response()
        .expect("an answer that decodes");
    response
        .dynamic_metadata
        .as_ref()
        .map(crate::api::pbjson::envoy_struct_to_json)
        .unwrap_or_default()
}

#[tokio::test]
async fn an_allow_tells_ext_proc_the_method_and_the_server() {
    use crate::api::test_support::{ready, token};
    let service = ExtAuthzGrpc::new(ready().await);
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let auth = [("authorization", bearer.as_str())];
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let m = grpc_metadata(&service, envoy("POST", &auth, list)).await;
    assert_eq!(m.get(METHOD_METADATA), Some(&json!("tools/list")), "{m:?}");
    assert_eq!(m.get(SERVER_METADATA), Some(&json!("docs")), "{m:?}");
    assert!(m.get(DECISION_ID_METADATA).is_some_and(|d| d != ""));
    // A batch names no one method; a deny no method at all.
    let batch = format!("[{list},{}]", list.replace("\"id\":1", "\"id\":2"));
    let m = grpc_metadata(&service, envoy("POST", &auth, &batch)).await;
    if m.contains_key(SERVER_METADATA) {
        assert_eq!(m.get(METHOD_METADATA), None, "{m:?}");
    }
    let delete = crate::api::test_support::tools_call("delete_document");
    let m = grpc_metadata(&service, envoy("POST", &auth, &delete)).await;
    assert_eq!(m.get(METHOD_METADATA), None, "{m:?}");
}

#[tokio::test]
async fn the_mcp_filters_method_must_be_the_bodys_one_message() {
    use crate::api::test_support::{ready, token};
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
    let service = ExtAuthzGrpc::new(ready().await);
    let bearer = format!("Bearer {}", token("alice", "corpassist"));
    let auth = [("authorization", bearer.as_str())];
    let with_filter_method = |body: &str, method: &str| {
        let mut c = envoy("POST", &auth, body);
        if let Some(a) = c.attributes.as_mut() {
            let fields = [(
                "method".to_owned(),
                PbValue {
                    kind: Some(Kind::StringValue(method.to_owned())),
                },
            )]
            .into_iter()
            .collect();
            a.metadata_context = Some(Metadata {
                filter_metadata: [(MCP_FILTER_NAMESPACE.to_owned(), Struct { fields })]
                    .into_iter()
                    .collect(),
                ..Metadata::default()
            });
        }
        c
    };
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let batch = format!("[{list}]");
    for (body, method, refused) in [
        (list, "tools/list", false),
        (list, "tools/call", true),
        (batch.as_str(), "tools/list", true),
        (batch.as_str(), "ping", true),
    ] {
        let (_, status, _, answer) = grpc_answer(&service, with_filter_method(body, method)).await;
        assert_eq!(status == Some(400), refused, "{body} / {method}: {answer}");
    }
}
