//! Router tests without a socket: the HTTP routes driven with `tower::ServiceExt::oneshot`.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use mcp_authz::api::http::{HttpState, admin_router, router};
use mcp_authz::authz::Engine;
use mcp_authz::policy::PolicyStore;
use mcp_authz::telemetry::Telemetry;
use serde_json::Value;
use tower::ServiceExt;

/// The AuthZEN certification fixture.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/authzen")
}

/// The reference policies.
pub fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// An engine on `dir`, recording into `telemetry`.
pub fn engine_with(dir: &Path, telemetry: Telemetry) -> Engine {
    let store = Arc::new(PolicyStore::open(dir).expect("valid policies"));
    Engine::with_telemetry(store, Arc::new(telemetry))
}

/// The main router on `dir`.
pub fn app(dir: &Path) -> Router {
    router(Arc::new(HttpState::new(engine_with(
        dir,
        Telemetry::default(),
    ))))
}

/// The main router of `state`.
pub fn app_of(state: HttpState) -> Router {
    router(Arc::new(state))
}

/// The admin router of `state`.
pub fn admin_of(state: HttpState) -> Router {
    admin_router(Arc::new(state))
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

/// A writer that keeps what it is given.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("capture").clone()).expect("utf-8")
    }

    /// Everything written so far, one JSON value per line.
    pub fn lines(&self) -> Vec<Value> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
            .collect()
    }
}
