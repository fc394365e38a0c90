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
use mcp_authz::api::http::{admin_router, main_router, router};
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
pub fn engine_with(dir: &Path, telemetry: &Arc<Telemetry>) -> Engine {
    Engine::with_recorder(store(dir), telemetry.clone())
}

/// A resolver that knows no issuer: every bearer token is refused.
pub fn no_issuers() -> Resolver {
    // Building it awaits nothing without issuers; a thread of its own keeps this
    // usable from async tests and plain ones alike.
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime")
                .block_on(Resolver::new(&Default::default(), Path::new(".")))
                .expect("a resolver without issuers")
        })
        .join()
        .expect("resolver thread")
    })
}

/// The services on `engine` (which records nothing) with `resolver` (none: no
/// issuer), default settings, no trusted caller, no default server for Envoy.
pub fn state(engine: Engine, resolver: Option<Resolver>) -> Services {
    Services::new(
        engine,
        Arc::new(Telemetry::default()),
        resolver.unwrap_or_else(no_issuers),
    )
}

/// The services on `dir`, deciding through an engine that records into
/// `telemetry` (read it back from `Services::telemetry`).
pub fn state_on(dir: &Path, telemetry: Telemetry, resolver: Option<Resolver>) -> Services {
    let telemetry = Arc::new(telemetry);
    Services::new(
        engine_with(dir, &telemetry),
        telemetry,
        resolver.unwrap_or_else(no_issuers),
    )
}

/// [`state`] with `resolver`, ready.
pub fn ready(engine: Engine, resolver: Resolver) -> Ready {
    Ready::with(state(engine, Some(resolver)))
}

/// Envoy's ext_authz gRPC service on `ready`, called without a socket.
pub fn ext_authz_grpc(ready: Ready) -> ExtAuthzGrpc {
    ExtAuthzGrpc::new(ready)
}

/// The routes of Envoy's HTTP ext_authz mode on `ready`.
pub fn ext_authz_http(ready: Ready) -> Router {
    http_router(ready)
}

/// The main router on `dir`.
pub fn app(dir: &Path) -> Router {
    app_of(state_on(dir, Telemetry::default(), None))
}

/// The main router of `state` (the admin endpoints too when it has an admin token).
pub fn app_of(state: Services) -> Router {
    let admin = state.admin_token.is_some();
    router(Ready::with(state), admin)
}

/// The admin router of `state`.
pub fn admin_of(state: Services) -> Router {
    admin_router(Ready::with(state))
}

/// The main listener's router as the service composes it (AuthZEN, the HTTP ext_authz
/// mode, health) on `state`.
pub fn main_of(state: Services) -> Router {
    let admin = state.admin_token.is_some();
    main_router(Ready::with(state), admin)
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

/// The whole service in-process, through the composition root, on ephemeral ports of
/// 127.0.0.1: the configuration as `serve` would read it from `env` (`MCP_AUTHZ_*`
/// settings, nothing from the process's environment) with `policies`.
pub fn config(policies: &Path, env: &[(&str, &str)]) -> mcp_authz::config::Config {
    let env = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let flags = mcp_authz::config::Overrides {
        policies: Some(policies.to_owned()),
        grpc_listen: Some("127.0.0.1:0".into()),
        http_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    mcp_authz::config::Config::load(None, &env, &flags).expect("config")
}

/// A service started with [`start`]: its addresses, and a way to stop it.
pub struct Running {
    pub grpc: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub admin: Option<std::net::SocketAddr>,
    pub ready: Ready,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), mcp_authz::app::AppError>>,
}

impl Running {
    /// Stop it gracefully and return how serving ended.
    pub async fn stop(mut self) -> Result<(), mcp_authz::app::AppError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.served).await.expect("the service task")
    }
}

/// Bind the service of `config` and serve it on the current runtime (not waiting for
/// the policies: [`Ready::wait`] does).
pub async fn start(config: mcp_authz::config::Config) -> Running {
    let bound = mcp_authz::app::App::bind(config).await.expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (grpc, http, admin, ready) = (
        bound.grpc_addr,
        bound.http_addr,
        bound.admin_addr,
        bound.ready(),
    );
    let served = tokio::spawn(bound.serve(async {
        let _ = stopped.await;
    }));
    Running {
        grpc,
        http,
        admin,
        ready,
        stop: Some(stop),
        served,
    }
}
