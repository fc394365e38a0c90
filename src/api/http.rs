//! The HTTP listeners: AuthZEN, health, readiness, metrics and admin.
//!
//! Main listener ([`router`]):
//!
//! | route | what |
//! |---|---|
//! | `POST /access/v1/evaluation` | AuthZEN access evaluation |
//! | `POST /access/v1/evaluations` | AuthZEN batch (`options.evaluations_semantic`) |
//! | `POST /access/v1/search/{subject,resource,action}` | AuthZEN searches |
//! | `GET /.well-known/authzen-configuration` | AuthZEN PDP metadata |
//! | `GET /healthz`, `/readyz` | alive; a policy snapshot is loaded |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /v1/policies`, `POST /v1/reload` | admin, only with `[admin] token_file` (bearer) |
//!
//! Admin listener (`--admin-listen`, [`admin_router`]): health, readiness, metrics
//! and the admin endpoints (bearer token required when one is configured).
//!
//! AuthZEN error rules: a body that is not `application/json`, empty, malformed,
//! with a key twice or two keys that differ only in case in one object (at any
//! depth, [`read_json_object`]), not an object, or missing `subject`/`action`/`resource` (or their
//! `type`/`id`/`name`) is a 400 with `{"error": {"status": 400, "message": ...}}`; in
//! a batch, a bad item is `{"decision": false}` with `context.error` and the others
//! are decided. Unknown fields are ignored. `X-Request-ID` is echoed; a
//! single evaluation's decision id is in the `X-Decision-ID` header. A bearer token
//! in `Authorization`, when present, is verified and its identity wins over the
//! body; an invalid one is a 401 with `WWW-Authenticate`.
//!
//! Each request runs in a `http.request` span with the method, route, status,
//! decision id(s), request id and the W3C `traceparent`'s trace id and parent span
//! id; headers and tokens are never recorded.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::authzen::{self, BatchResult, SearchKind};
use super::mcp_check::{CALLER_TOKEN_HEADER, CallerTrust};
use super::refusal::{Refusal, RefusalKind};
use super::services::{Ready, Services};
use super::tls::PeerIdentity;
use crate::authz::DecisionMeta;
use crate::config::METADATA_PREFIX;
use crate::identity::{
    AuthnError, Identity, IdentityInput, bearer_challenge, bearer_token_from_header,
};
use crate::mcp::json::JsonFault;
use crate::policy::ReloadOutcome;
use crate::telemetry::TraceContext;
use crate::telemetry::metrics::CONTENT_TYPE as METRICS_CONTENT_TYPE;
use crate::uri::Shown;

const ADMIN_REALM: &str = "mcp-authz-admin";

/// The services of a request, once the policies are loaded: every handler that
/// needs them takes this; before that the request is answered 503.
struct Serving(Arc<Services>);

impl axum::extract::FromRequestParts<Ready> for Serving {
    type Rejection = Response;

    async fn from_request_parts(
        _: &mut axum::http::request::Parts,
        ready: &Ready,
    ) -> Result<Self, Response> {
        match ready.get() {
            Some(services) => Ok(Serving(Arc::clone(services))),
            None => Err(not_ready()),
        }
    }
}

fn not_ready() -> Response {
    Refusal::unavailable().into_response()
}

/// The routes of the main HTTP listener without the HTTP ext_authz mode (which needs
/// the services of the decision interfaces): AuthZEN, health, metrics, admin with a
/// token. Every route runs under the request layer ([`observed`]).
pub fn router(ready: Ready, admin_routes: bool) -> Router {
    observed(routes(ready.clone(), admin_routes))
}

/// The main HTTP listener as `serve` runs it: [`router`]'s routes and the HTTP
/// ext_authz mode under `/ext_authz`, merged first and then put under the one request
/// layer, so that every route gets the span and the `X-Request-ID` echo.
pub fn main_router(ready: Ready, admin_routes: bool) -> Router {
    observed(routes(ready.clone(), admin_routes).merge(super::ext_authz::http_router(ready)))
}

/// The main listener's routes; the admin endpoints too when `admin_routes` (an
/// admin token is configured: they are served here only behind it).
fn routes(ready: Ready, admin_routes: bool) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/access/v1/evaluation", post(evaluation))
        .route("/access/v1/evaluations", post(evaluations))
        .route(
            "/access/v1/search/subject",
            search_route(SearchKind::Subject),
        )
        .route(
            "/access/v1/search/resource",
            search_route(SearchKind::Resource),
        )
        .route("/access/v1/search/action", search_route(SearchKind::Action))
        .route(
            "/.well-known/authzen-configuration",
            get(authzen_configuration),
        )
        .route(METADATA_PREFIX, get(protected_resource_metadata))
        .route(
            &format!("{METADATA_PREFIX}/{{*resource_path}}"),
            get(protected_resource_metadata),
        );
    // Admin endpoints share the main listener only behind a token.
    if admin_routes {
        r = r
            .route("/v1/policies", get(policies))
            .route("/v1/reload", post(reload));
    }
    r.with_state(ready)
}

/// The routes of the admin listener.
pub fn admin_router(ready: Ready) -> Router {
    observed(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/v1/policies", get(policies))
            .route("/v1/reload", post(reload))
            .with_state(ready),
    )
}

/// The request layer of every HTTP route: its span, the `X-Request-ID` echo and the
/// trace context ([`observe`]). A route layer applies to the routes present when it is
/// added: every router of a listener is merged before, never after.
fn observed(routes: Router) -> Router {
    routes.route_layer(axum::middleware::from_fn(observe))
}

/// What the middleware learned about a request, for the handlers.
#[derive(Debug, Clone, Default)]
struct RequestMeta {
    decision: DecisionMeta,
}

/// A request id safe to log: at most 128 printable ASCII characters.
fn loggable_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

/// The span of a request, the `X-Request-ID` echo and the trace context.
async fn observe(mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let request_id = req.headers().get("x-request-id").cloned();
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "-".to_owned(), |p| p.as_str().to_owned());
    let meta = DecisionMeta {
        trace,
        request_id: request_id.as_ref().and_then(loggable_request_id),
        ..DecisionMeta::default()
    };
    let span = tracing::info_span!(
        "http.request",
        method = %req.method(),
        route = %route,
        status = tracing::field::Empty,
        decision_id = tracing::field::Empty,
        request_id = meta.request_id.as_deref(),
        trace_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    if let Some(t) = &trace {
        span.record("trace_id", t.trace_id());
        span.record("parent_span_id", t.parent_span_id());
    }
    crate::telemetry::otlp::set_caller_parent(&span, trace.as_ref());
    req.extensions_mut().insert(RequestMeta { decision: meta });
    let mut response = next.run(req).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    span.in_scope(|| {
        tracing::debug!(
            latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request handled"
        );
    });
    if let Some(id) = request_id {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

/// Deepest nesting of arrays and objects read in an AuthZEN body.
pub const MAX_JSON_DEPTH: usize = 64;

/// Why an AuthZEN request body was refused: a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The content type is not `application/json`.
    #[error("the request content type must be `application/json`")]
    ContentType,
    /// Nothing but whitespace.
    #[error("the request body is empty")]
    Empty,
    /// Not UTF-8.
    #[error("the request body is not UTF-8")]
    NotUtf8,
    /// Not JSON; the parser's message (a position, never the input).
    #[error("the request body is not valid JSON: {0}")]
    Syntax(String),
    /// Arrays and objects nested deeper than [`MAX_JSON_DEPTH`].
    #[error("the request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// An object has the same key twice.
    #[error("an object of the request body has the key `{0}` twice")]
    DuplicateKey(String),
    /// An object has two keys that differ only in case.
    #[error(
        "an object of the request body has the keys `{0}` and `{1}`, which differ only in case"
    )]
    CaseVariantKeys(String, String),
    /// Valid JSON, but not an object.
    #[error("the request body must be a JSON object")]
    NotAnObject,
}

/// Read the JSON object of an AuthZEN request, strictly, as the MCP paths read
/// theirs: two equal keys in one object (`{"subject":...,"subject":...}`, at any
/// depth, escapes compared unescaped) and two keys of the request's own structure
/// that differ only in case (`subject` and `Subject`, folded as Go's
/// `encoding/json` folds them) are refused, because whoever else reads the body —
/// the enforcement point that sent it, a proxy, an audit log — may take the other
/// one. Inside `context` and `properties`, Cedar attributes, case counts: `R` and
/// `r` are two attributes (for the MCP profile an undeclared one that reads as a
/// declared one is a deny, see `crate::authz::build_context`).
pub fn read_json_object(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, BodyError> {
    let media = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" {
        return Err(BodyError::ContentType);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let text = std::str::from_utf8(body).map_err(|_| BodyError::NotUtf8)?;
    // A caller's own `context` and `properties` are Cedar attributes, whose names
    // are case-sensitive: `R` and `r` are two attributes there.
    match crate::mcp::json::parse_with(text, MAX_JSON_DEPTH, &["context", "properties"]) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BodyError::NotAnObject),
        Err(JsonFault::Syntax(m)) => Err(BodyError::Syntax(m)),
        Err(JsonFault::TooDeep) => Err(BodyError::TooDeep),
        Err(JsonFault::DuplicateKey(k)) => Err(BodyError::DuplicateKey(Shown(&k).to_string())),
        Err(JsonFault::CaseVariantKeys(a, b)) => Err(BodyError::CaseVariantKeys(
            Shown(&a).to_string(),
            Shown(&b).to_string(),
        )),
    }
}

/// The one value of a header the request is decided on: a repeated one is refused
/// (two parties could each read a different copy), as on the Envoy paths.
fn single_header<'h>(
    headers: &'h HeaderMap,
    name: &header::HeaderName,
) -> Result<Option<&'h HeaderValue>, Refusal> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Refusal::invalid(format!(
            "the header `{}` is sent more than once",
            name.as_str()
        )));
    }
    Ok(first)
}

/// The JSON object body of an AuthZEN request ([`read_json_object`]).
fn json_object(headers: &HeaderMap, body: &Bytes) -> Result<Map<String, Value>, Refusal> {
    let content_type = single_header(headers, &header::CONTENT_TYPE)?.and_then(|v| v.to_str().ok());
    read_json_object(content_type, body).map_err(|e| Refusal::invalid(e.to_string()))
}

/// The identity of a bearer token in `Authorization`, if one is presented.
///
/// The subject of an AuthZEN request is the caller's assertion. While callers are
/// authenticated by certificate ([`Services::authenticates_callers`]), only a
/// trusted caller (its client certificate, or the caller secret) may make it without
/// a token; anyone else must present a bearer token, whose identity wins over the body.
async fn bearer_identity(
    state: &Services,
    headers: &HeaderMap,
    peer: Option<&Extension<Arc<PeerIdentity>>>,
) -> Result<Option<Identity>, Refusal> {
    let Some(value) = single_header(headers, &header::AUTHORIZATION)? else {
        let trust = CallerTrust::of(
            state,
            single_header(headers, &HeaderName::from_static(CALLER_TOKEN_HEADER))?
                .map(HeaderValue::as_bytes),
            peer.map(|Extension(p)| p.as_ref()),
        );
        if !trust.vouches(state) {
            return Err(Refusal::no_credentials(None).saying(
                "unauthenticated: a subject without a bearer token is accepted only from a trusted caller (a client certificate of `tls.trusted_callers`, or the caller secret)",
            ));
        }
        return Ok(None);
    };
    let refuse = |e: AuthnError| {
        Refusal::unauthenticated(&e, None).saying(format!("invalid credentials: {e}"))
    };
    let text = value.to_str().map_err(|_| {
        refuse(AuthnError::Malformed {
            detail: "the authorization header is not visible ascii",
        })
    })?;
    let token = bearer_token_from_header(text).map_err(refuse)?;
    let identity = state
        .resolver
        .resolve(IdentityInput {
            bearer_token: Some(token),
            ..IdentityInput::default()
        })
        .await
        .map_err(refuse)?;
    Ok(Some(identity))
}

/// The decision object a dry run answers for `decision` (an AuthZEN decision as
/// decided and logged): `"decision": true`, with what was decided in
/// `context.dry_run.decision`; outside a dry run, `decision` as it is.
fn dry_run_decision(state: &Services, mut decision: Value) -> Value {
    if !state.enforced(false) {
        return decision;
    }
    if let Some(object) = decision.as_object_mut()
        && let Some(decided) = object.get("decision").and_then(Value::as_bool)
    {
        object.insert("decision".into(), Value::Bool(true));
        let context = object
            .entry("context")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(context) = context.as_object_mut() {
            context.insert("dry_run".into(), json!({ "decision": decided }));
        }
    }
    decision
}

fn json_response(body: Value) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

fn record_decision_ids(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    // A batch may make many decisions; the span keeps the first 32.
    let shown: Vec<&str> = ids.iter().take(32).map(String::as_str).collect();
    tracing::Span::current().record("decision_id", shown.join(","));
}

/// The answer to one evaluation: its JSON, and its decision id (if it got one) in
/// the `x-decision-id` header and the request's span.
fn decided(json: Value, decision_id: Option<&str>) -> Response {
    let mut response = json_response(json);
    if let Some(id) = decision_id {
        record_decision_ids(&[id.to_owned()]);
        if let Ok(v) = HeaderValue::from_str(id) {
            response.headers_mut().insert("x-decision-id", v);
        }
    }
    response
}

async fn evaluation(
    Serving(state): Serving,
    Extension(meta): Extension<RequestMeta>,
    headers: HeaderMap,
    peer: Option<Extension<Arc<PeerIdentity>>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let body = json_object(&headers, &body)?;
    let identity = bearer_identity(&state, &headers, peer.as_ref()).await?;
    let eval = authzen::parse_evaluation(&body)?;
    let snapshot = state.engine.snapshot();
    let outcome = authzen::decide(
        &state.engine,
        &state.resource_servers,
        &snapshot,
        &eval,
        identity.as_ref(),
        &meta.decision,
    )?;
    let json = authzen::decision_json(&outcome, authzen::explain_requested(&body), &snapshot);
    Ok(decided(
        dry_run_decision(&state, json),
        Some(&outcome.decision_id),
    ))
}

async fn evaluations(
    Serving(state): Serving,
    Extension(meta): Extension<RequestMeta>,
    headers: HeaderMap,
    peer: Option<Extension<Arc<PeerIdentity>>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let body = json_object(&headers, &body)?;
    let identity = bearer_identity(&state, &headers, peer.as_ref()).await?;
    let engine = state.engine.clone();
    let servers = state.resource_servers.clone();
    let max_batch = state.authzen.max_batch;
    // A batch may be long: decide it off the async workers.
    let result = super::mcp_check::off_workers(move || {
        authzen::evaluate_batch(
            &engine,
            &servers,
            &body,
            identity.as_ref(),
            &meta.decision,
            max_batch,
        )
    })
    .await
    .ok_or_else(|| Refusal::internal("the evaluation failed"))??;
    Ok(match result {
        BatchResult::Single(json, id) => decided(dry_run_decision(&state, json), id.as_deref()),
        BatchResult::Batch(mut json, ids) => {
            record_decision_ids(&ids);
            if let Some(items) = json.get_mut("evaluations").and_then(Value::as_array_mut) {
                for item in items.iter_mut() {
                    *item = dry_run_decision(&state, std::mem::take(item));
                }
            }
            json_response(json)
        }
    })
}

async fn search(
    kind: SearchKind,
    state: Arc<Services>,
    meta: RequestMeta,
    headers: HeaderMap,
    peer: Option<Extension<Arc<PeerIdentity>>>,
    body: Bytes,
) -> Result<Response, Refusal> {
    let body = json_object(&headers, &body)?;
    let identity = bearer_identity(&state, &headers, peer.as_ref()).await?;
    let engine = state.engine.clone();
    let json = super::mcp_check::off_workers(move || {
        authzen::search(&engine, kind, &body, identity.as_ref(), &meta.decision)
    })
    .await
    .ok_or_else(|| Refusal::internal("the search failed"))??;
    Ok(json_response(json))
}

/// The route of one kind of search.
fn search_route(kind: SearchKind) -> axum::routing::MethodRouter<Ready> {
    post(
        move |Serving(state): Serving,
              Extension(meta): Extension<RequestMeta>,
              headers: HeaderMap,
              peer: Option<Extension<Arc<PeerIdentity>>>,
              body: Bytes| search(kind, state, meta, headers, peer, body),
    )
}

/// A `Host` header usable in a URL: `host` or `host:port`, nothing else.
fn plain_host(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| host.to_owned())
}

async fn authzen_configuration(
    Serving(state): Serving,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let base = match &state.authzen.base_url {
        Some(b) => b.clone(),
        None => format!(
            "http://{}",
            plain_host(&headers).ok_or_else(|| Refusal::invalid(
                "no usable `Host` header: configure `authzen.base_url`"
            ))?
        ),
    };
    Ok(json_response(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
        "access_evaluations_endpoint": format!("{base}/access/v1/evaluations"),
        "search_subject_endpoint": format!("{base}/access/v1/search/subject"),
        "search_resource_endpoint": format!("{base}/access/v1/search/resource"),
        "search_action_endpoint": format!("{base}/access/v1/search/action"),
    })))
}

/// The Protected Resource Metadata (RFC 9728) of the MCP server whose `resource`
/// is at this path-suffixed well-known URI (RFC 9728 §3.1), chosen by the request's
/// Host when several servers share the path. Served without authentication: a client
/// reads it after a 401 to find the authorization server. 404 when no server matches.
async fn protected_resource_metadata(
    Serving(state): Serving,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(axum::http::uri::Authority::as_str));
    match state.resource_servers.by_metadata_path(host, uri.path()) {
        Some(server) => (
            [(header::CACHE_CONTROL, "public, max-age=300")],
            Json(server.metadata()),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            Json(json!({"error": {
                "status": 404,
                "message": "no MCP server has its protected resource metadata here",
            }})),
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the policies are loaded (the same readiness as gRPC health): a
/// failed reload keeps serving the last good snapshot, so this stays ready.
async fn readyz(State(ready): State<Ready>) -> Response {
    match ready.get() {
        Some(services) if services.enforced(false) => (
            StatusCode::OK,
            "ready (DRY RUN: every request is answered allow; `decisions.dry_run`)\n",
        )
            .into_response(),
        Some(_) => (StatusCode::OK, "ready\n").into_response(),
        None => not_ready(),
    }
}

async fn metrics(Serving(state): Serving) -> Response {
    let text = state.telemetry.render_prometheus(
        state.engine.store(),
        Some(&state.resolver),
        state.engine.cache().map(AsRef::as_ref),
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// Check the admin bearer token, when one is configured.
fn admin_allowed(state: &Services, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(expected) = &state.admin_token else {
        return Ok(());
    };
    // A repeated header is no token.
    let presented = single_header(headers, &header::AUTHORIZATION)
        .ok()
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| bearer_token_from_header(v).ok());
    match presented {
        Some(t) if expected.verify(t) => Ok(()),
        _ => {
            let challenge = bearer_challenge(ADMIN_REALM);
            let refusal = Refusal::new(
                RefusalKind::Unauthenticated { challenge },
                "admin token required",
            );
            Err(Box::new(refusal.into_response()))
        }
    }
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

async fn policies(Serving(state): Serving, headers: HeaderMap) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return *r;
    }
    let store = state.engine.store();
    let snapshot = store.snapshot();
    let status = store.status();
    let mut ids: Vec<(&String, &crate::policy::PolicyOrigin)> = snapshot.origins.iter().collect();
    ids.sort_by(|a, b| (&a.1.file, a.1.line, a.0).cmp(&(&b.1.file, b.1.line, b.0)));
    let mut files: Vec<&str> = ids.iter().map(|(_, o)| o.file.as_str()).collect();
    files.dedup();
    let digests = &snapshot.digests;
    let ids: Vec<Value> = ids
        .iter()
        .map(|(id, o)| {
            json!({
                "id": id, "file": o.file, "line": o.line, "column": o.column,
                "digest": digests.policies.get(id.as_str()),
            })
        })
        .collect();
    let last_reload = status.last_reload.as_ref().map(|r| {
        let mut v = diff_json(&r.diff);
        if let Value::Object(m) = &mut v {
            m.insert("from_generation".into(), json!(r.from_generation));
            m.insert("to_generation".into(), json!(r.to_generation));
            m.insert("at_unix".into(), json!(unix_secs(r.at)));
        }
        v
    });
    json_response(json!({
        "directory": snapshot.dir.display().to_string(),
        "generation": snapshot.generation,
        "policies": snapshot.policy_count(),
        "policy_files": snapshot.policy_files,
        "files": files,
        "policy_ids": ids,
        "digest": {
            "content": &*digests.content,
            "policies": digests.policy_set,
            "schema": digests.schema,
            "entities": digests.entities,
        },
        "last_reload": last_reload,
        "loaded_at_unix": unix_secs(snapshot.loaded_at),
        "in_sync": status.in_sync,
        "reload_successes": status.successes,
        "reload_failures": status.failures,
        "last_reload_attempt_unix": status.last_attempt.map(unix_secs),
        "last_reload_error": status.last_errors.first(),
        "last_errors": status.last_errors,
        "warnings": snapshot.warnings.one_line_each(),
        "shadow_policies": snapshot.shadow_policies,
        "shadow": state.engine.shadow().and_then(|s| s.store()).map(|s| shadow_json(s)),
    }))
}

/// The shadow policy directory's state in `/v1/policies`: its snapshot, digests
/// and reload status.
fn shadow_json(store: &crate::policy::PolicyStore) -> Value {
    let snapshot = store.snapshot();
    let status = store.status();
    let digests = &snapshot.digests;
    json!({
        "directory": snapshot.dir.display().to_string(),
        "generation": snapshot.generation,
        "policies": snapshot.policy_count(),
        "policy_files": snapshot.policy_files,
        "policy_ids": digests.policies.keys().collect::<Vec<_>>(),
        "digest": {
            "content": &*digests.content,
            "policies": digests.policy_set,
            "schema": digests.schema,
            "entities": digests.entities,
        },
        "loaded_at_unix": unix_secs(snapshot.loaded_at),
        "in_sync": status.in_sync,
        "reload_successes": status.successes,
        "reload_failures": status.failures,
        "last_errors": status.last_errors,
    })
}

/// What a reload changed, as `/v1/policies` and `/v1/reload` show it.
fn diff_json(diff: &crate::policy::PolicyDiff) -> Value {
    json!({
        "added": diff.added,
        "removed": diff.removed,
        "changed": diff.changed,
        "schema_changed": diff.schema_changed,
        "entities_changed": diff.entities_changed,
    })
}

async fn reload(Serving(state): Serving, headers: HeaderMap) -> Response {
    if let Err(r) = admin_allowed(&state, &headers) {
        return *r;
    }
    let store = Arc::clone(state.engine.store());
    let outcome = match tokio::task::spawn_blocking(move || store.reload(true)).await {
        Ok(o) => o,
        Err(_) => {
            return Refusal::internal("the reload failed").into_response();
        }
    };
    let generation = state.engine.store().snapshot().generation;
    match outcome {
        ReloadOutcome::Reloaded { generation, diff } => json_response(json!({
            "outcome": "reloaded",
            "generation": generation,
            "changes": diff_json(&diff),
        })),
        ReloadOutcome::Unchanged => {
            json_response(json!({ "outcome": "unchanged", "generation": generation }))
        }
        ReloadOutcome::Failed(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "outcome": "failed",
                "generation": generation,
                "errors": problems.one_line_each(),
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Map<String, Value>, BodyError> {
        read_json_object(Some("application/json"), text.as_bytes())
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let alice = r#"{"type":"user","id":"alice"}"#;
        let dave = r#"{"type":"user","id":"dave"}"#;
        let action = r#"{"name":"tools/call"}"#;
        let tool = r#"{"type":"tool","id":"docs/get_document"}"#;
        let dup = |k: &str| Err(BodyError::DuplicateKey(k.into()));
        for (text, expected) in [
            (
                format!(
                    r#"{{"subject":{alice},"subject":{dave},"action":{action},"resource":{tool}}}"#
                ),
                dup("subject"),
            ),
            (
                format!(
                    r#"{{"subject":{alice},"action":{action},"resource":{tool},"action":{{"name":"x"}}}}"#
                ),
                dup("action"),
            ),
            (
                format!(
                    r#"{{"subject":{alice},"action":{action},"resource":{tool},"resource":{tool}}}"#
                ),
                dup("resource"),
            ),
            (
                format!(
                    r#"{{"subject":{{"type":"user","id":"alice","id":"dave"}},"action":{action},"resource":{tool}}}"#
                ),
                dup("id"),
            ),
            (
                format!(
                    r#"{{"subject":{alice},"action":{action},"resource":{tool},"context":{{"agent":"a","agent":"b"}}}}"#
                ),
                dup("agent"),
            ),
            (
                format!(
                    r#"{{"subject":{alice},"action":{action},"resource":{{"type":"tool","id":"t","properties":{{"p":{{"q":1,"q":2}}}}}}}}"#
                ),
                dup("q"),
            ),
            (
                format!(
                    r#"{{"evaluations":[{{"subject":{alice}}},{{"subject":{alice},"subject":{dave}}}]}}"#
                ),
                dup("subject"),
            ),
            (
                format!(r#"{{"subject":{alice},"subj\u0065ct":{dave}}}"#),
                dup("subject"),
            ),
            (
                r#"{"options":{"explain":true,"explain":false}}"#.to_owned(),
                dup("explain"),
            ),
            (
                r#"{"page":{"token":"a","token":"b"}}"#.to_owned(),
                dup("token"),
            ),
        ] {
            assert_eq!(read(&text), expected, "{text}");
        }
    }

    #[test]
    fn case_variant_keys_are_refused() {
        let variant = |a: &str, b: &str| Err(BodyError::CaseVariantKeys(a.into(), b.into()));
        for (text, expected) in [
            (
                r#"{"subject":{},"Subject":{}}"#,
                variant("subject", "Subject"),
            ),
            (
                r#"{"SUBJECT":{},"subject":{}}"#,
                variant("SUBJECT", "subject"),
            ),
            (r#"{"resource":{"id":"a","ID":"b"}}"#, variant("id", "ID")),
            (
                "{\"subject\":{},\"\u{17f}ubject\":{}}",
                variant("subject", "\u{17f}ubject"),
            ),
            (
                r#"{"options":{"Explain":true,"explain":false}}"#,
                variant("Explain", "explain"),
            ),
        ] {
            assert_eq!(read(text), expected, "{text}");
        }
        // Attributes of a caller's own context and properties are Cedar's: case counts.
        assert!(read(r#"{"context":{"Agent":"x","agent":"y","n":{"R":1,"r":2}}}"#).is_ok());
        assert!(read(r#"{"subject":{"properties":{"X":1,"x":2}}}"#).is_ok());
        // Different keys are fine, and so is one key in another case.
        assert!(read(r#"{"subject":{},"subjects":{}}"#).is_ok());
        assert!(read(r#"{"Subject":{}}"#).is_ok());
        assert!(read(r#"{"a":{"id":1},"b":{"id":1}}"#).is_ok());
    }

    #[test]
    fn other_refusals_keep_their_messages() {
        let ok = read(r#"{"subject":{"type":"user","id":"alice"}}"#);
        assert!(ok.is_ok_and(|m| m.contains_key("subject")));
        assert_eq!(
            read_json_object(Some("text/plain"), b"{}"),
            Err(BodyError::ContentType)
        );
        assert_eq!(read_json_object(None, b"{}"), Err(BodyError::ContentType));
        assert!(read_json_object(Some("Application/JSON; charset=utf-8"), b"{}").is_ok());
        assert_eq!(read(" \n"), Err(BodyError::Empty));
        assert_eq!(read("[1]"), Err(BodyError::NotAnObject));
        assert_eq!(
            read_json_object(Some("application/json"), b"{\"a\":\"\xff\"}"),
            Err(BodyError::NotUtf8)
        );
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_JSON_DEPTH + 1),
            "]".repeat(MAX_JSON_DEPTH + 1)
        );
        assert_eq!(read(&format!(r#"{{"a":{deep}}}"#)), Err(BodyError::TooDeep));
        assert!(
            matches!(read(r#"{"secret-value": }"#), Err(BodyError::Syntax(m)) if !m.contains("secret"))
        );
        // Keys in messages: cut, control characters escaped.
        let long = "k".repeat(100);
        let Err(e) = read(&format!(r#"{{"{long}\u001b":1,"{long}\u001b":2}}"#)) else {
            panic!("a duplicate key");
        };
        assert_eq!(
            e.to_string(),
            format!(
                "an object of the request body has the key `{}…` twice",
                "k".repeat(64)
            )
        );
        let Err(e) = read(r#"{"a\u001b`":1,"a\u001b`":2}"#) else {
            panic!("a duplicate key");
        };
        assert_eq!(
            e.to_string(),
            "an object of the request body has the key `a\\u{1b}\\u{60}` twice"
        );
    }
}

#[cfg(test)]
mod router_tests {
    use tower::ServiceExt as _;

    use super::*;
    use crate::api::test_support::{ready, token};

    const EVALUATION: &str = r#"{"subject":{"type":"user","id":"alice"},"action":{"name":"tools/call"},"resource":{"type":"tool","id":"docs/get_document"},"context":{"agent":"corpassist","arguments":{"document_id":"titan/q1-strategy"}}}"#;

    async fn post(
        router: Router,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = axum::http::Request::builder().method("POST").uri(path);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(axum::body::Body::from(body.to_owned()))
            .expect("request");
        let response = router.oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (parts.status, parts.headers, json)
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[tokio::test]
    async fn evaluations_are_answered_and_refusals_are_json_errors() {
        let router = router(ready().await, false);
        let (status, headers, body) =
            post(router.clone(), "/access/v1/evaluation", &[JSON], EVALUATION).await;
        assert_eq!(
            (status, &body),
            (StatusCode::OK, &json!({ "decision": true }))
        );
        assert!(headers.contains_key("x-decision-id"));

        let denied = EVALUATION.replace("get_document", "delete_document");
        let (status, _, body) =
            post(router.clone(), "/access/v1/evaluation", &[JSON], &denied).await;
        assert_eq!(
            (status, &body),
            (StatusCode::OK, &json!({ "decision": false }))
        );

        let (status, _, body) = post(router.clone(), "/access/v1/evaluation", &[JSON], "{").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["status"], json!(400));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the request body is not valid JSON"))
        );

        let (status, headers, body) = post(
            router.clone(),
            "/access/v1/evaluation",
            &[JSON, ("authorization", "Bearer not-a-token")],
            EVALUATION,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["status"], json!(401));
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("invalid credentials: "))
        );
        assert!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("Bearer realm=\"mcp-authz\""))
        );

        // A verified token's identity wins over the body.
        let bearer = format!("Bearer {}", token("alice", "corpassist"));
        let (status, _, body) = post(
            router.clone(),
            "/access/v1/evaluation",
            &[JSON, ("authorization", &bearer)],
            EVALUATION,
        )
        .await;
        assert_eq!(
            (status, &body),
            (StatusCode::OK, &json!({ "decision": true }))
        );
    }

    #[tokio::test]
    async fn too_large_batches_and_bad_items() {
        let mut services = crate::api::test_support::services().await;
        services.authzen.max_batch = 1;
        let router = router(Ready::with(services), false);
        let batch = format!(r#"{{"evaluations":[{EVALUATION},{EVALUATION}]}}"#);
        let (status, _, body) =
            post(router.clone(), "/access/v1/evaluations", &[JSON], &batch).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({ "error": { "status": 400, "message": "2 evaluations in one request; the limit is 1" } })
        );
        let (status, _, body) = post(
            router,
            "/access/v1/evaluations",
            &[JSON],
            r#"{"evaluations":[5]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({ "evaluations": [{ "decision": false, "context": { "error": { "status": 400, "message": "evaluation 0 must be an object" } } }] })
        );
    }

    #[tokio::test]
    async fn not_ready_and_admin_refusals() {
        let (status, _, _) = post(
            router(Ready::new(), false),
            "/access/v1/evaluation",
            &[JSON],
            EVALUATION,
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        let mut services = crate::api::test_support::services().await;
        services.admin_token = crate::api::services::AdminToken::new("s3cret");
        let (status, headers, body) =
            post(admin_router(Ready::with(services)), "/v1/reload", &[], "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            json!({ "error": { "status": 401, "message": "admin token required" } })
        );
        assert_eq!(
            headers
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"mcp-authz-admin\"")
        );
    }
}
