//! The HTTP listener: health, readiness and policy status.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::authz::Engine;

/// Shared state of the HTTP handlers.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The decision engine (and through it, the policy store).
    pub engine: Engine,
}

/// The HTTP routes.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/policies", get(policies))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when a snapshot is loaded: the store never exists without one, and a
/// failed reload keeps serving the last good snapshot, so this stays ready.
async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let snapshot = state.engine.store().snapshot();
    if snapshot.policy_count() > 0 {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no policies loaded\n").into_response()
    }
}

async fn policies(State(state): State<Arc<HttpState>>) -> Json<serde_json::Value> {
    let store = state.engine.store();
    let snapshot = store.snapshot();
    let status = store.status();
    let loaded_at = snapshot
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    Json(json!({
        "directory": snapshot.dir.display().to_string(),
        "generation": snapshot.generation,
        "policies": snapshot.policy_count(),
        "policy_files": snapshot.policy_files,
        "loaded_at_unix": loaded_at,
        "in_sync": status.in_sync,
        "reload_successes": status.successes,
        "reload_failures": status.failures,
        "last_errors": status.last_errors,
        "warnings": snapshot.warnings.one_line_each(),
    }))
}
