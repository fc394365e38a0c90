//! The service in-process: every construction of an engine, a state or a router of the
//! tests is here (one place per kind), and the HTTP routes driven without a socket with
//! `tower::ServiceExt::oneshot`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use mcp_authz::api::ext_authz::{ExtAuthzGrpc, http_router};
use mcp_authz::api::http::{HttpState, admin_router, main_router, router};
use mcp_authz::api::services::{Ready, Services};
use mcp_authz::authz::Engine;
use mcp_authz::identity::Resolver;
use mcp_authz::policy::PolicyStore;
use mcp_authz::telemetry::Telemetry;
use serde_json::Value;
use tower::ServiceExt;

/// The AuthZEN certification fixture.
pub fn fixture() -> PathBuf {
    super::repo().join("tests/fixtures/authzen")
}

/// The policy store of `dir`, which must be valid.
fn store(dir: &Path) -> Arc<PolicyStore> {
    Arc::new(PolicyStore::open(dir).expect("valid policies"))
}

/// An engine on `dir`.
pub fn engine(dir: &Path) -> Engine {
    Engine::new(store(dir))
}

/// An engine on `dir`, recording into `telemetry`.
pub fn engine_with(dir: &Path, telemetry: Telemetry) -> Engine {
    Engine::with_telemetry(store(dir), Arc::new(telemetry))
}

/// The services of the gRPC and ext_authz adapters: `engine` and `resolver`, no trusted
/// caller, no default server for Envoy.
pub fn services(engine: Engine, resolver: Resolver) -> Services {
    Services {
        engine,
        resolver,
        trusted_caller_token: None,
        envoy_default_server: None,
    }
}

/// [`services`], ready.
pub fn ready(engine: Engine, resolver: Resolver) -> Ready {
    Ready::with(services(engine, resolver))
}

/// Envoy's ext_authz gRPC service on `ready`, called without a socket.
pub fn ext_authz_grpc(ready: Ready) -> ExtAuthzGrpc {
    ExtAuthzGrpc::new(ready)
}

/// The routes of Envoy's HTTP ext_authz mode on `ready`.
pub fn ext_authz_http(ready: Ready) -> Router {
    http_router(ready)
}

/// The state of the HTTP routes on `engine`, with `resolver` for bearer tokens if any.
pub fn state(engine: Engine, resolver: Option<Resolver>) -> HttpState {
    HttpState {
        resolver,
        ..HttpState::new(engine)
    }
}

/// The main router on `dir`.
pub fn app(dir: &Path) -> Router {
    app_of(HttpState::new(engine_with(dir, Telemetry::default())))
}

/// The main router of `state`.
pub fn app_of(state: HttpState) -> Router {
    router(Arc::new(state))
}

/// The admin router of `state`.
pub fn admin_of(state: HttpState) -> Router {
    admin_router(Arc::new(state))
}

/// The main listener's router as `serve` composes it (AuthZEN, the HTTP ext_authz mode,
/// health) on `state` and `ready`.
pub fn main_of(state: HttpState, ready: Ready) -> Router {
    main_router(Arc::new(state), ready)
}

/// A response: status, headers and body text.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Send a request.
pub async fn send(router: &Router, request: Request<Body>) -> Reply {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// POST a JSON value.
pub async fn post(router: &Router, path: &str, body: &Value) -> Reply {
    post_with(router, path, body, &[]).await
}

/// POST a JSON value with extra headers.
pub async fn post_with(
    router: &Router,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut b = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(
        router,
        b.body(Body::from(body.to_string())).expect("request"),
    )
    .await
}

/// POST raw bytes with an optional content type.
pub async fn post_raw(
    router: &Router,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> Reply {
    let mut b = Request::post(path);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    send(
        router,
        b.body(Body::from(body.to_owned())).expect("request"),
    )
    .await
}

/// GET with extra headers.
pub async fn get(router: &Router, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut b = Request::get(path).header("host", "pdp.test:8181");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    send(router, b.body(Body::empty()).expect("request")).await
}

/// The decision of a single evaluation.
pub async fn decision(router: &Router, body: &Value) -> bool {
    let r = post(router, "/access/v1/evaluation", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()["decision"]
        .as_bool()
        .expect("decision is a boolean")
}
