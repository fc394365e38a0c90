//! Envoy ext_authz: Envoy asks before each request reaches an MCP server. One
//! mapping from the HTTP request Envoy describes to decisions, two wire formats:
//! `envoy.service.auth.v3.Authorization/Check` over gRPC, and the HTTP mode
//! (`http_service`), served under `/ext_authz` on the HTTP listener.
//!
//! - POST: the JSON-RPC body (a single message, or a 2025-03-26 batch that is
//!   allowed only if every message is). The body counts as whole only if Envoy's
//!   marker is exactly one `x-envoy-auth-partial-body: false`, or absent; any other
//!   value (`true`, `false,true`, ` false`, two markers) is a partial body and a deny:
//!   what was not seen is not allowed.
//!   The `mcp-method` / `mcp-name` headers and the method Envoy's MCP filter put in
//!   the metadata must agree with the body.
//! - Headers are read by one rule ([`Headers`]): each value is kept apart, never
//!   joined, and a header the decision or the MCP server depends on
//!   ([`is_security_header`]) that arrives more than once, or in both `headers` and
//!   `header_map` with different values, is a 400.
//! - GET (the server's SSE stream): the action `session/stream`; DELETE (the end of
//!   a session): `session/end` — both on the server.
//! - Any other HTTP method is a deny.
//!
//! The server is the route's `context_extensions.mcp_server` (gRPC), the
//! `x-mcp-authz-server` header (HTTP mode), else `[envoy] default_server`.
//! Allowed requests go on with `x-mcp-authz-decision-id`, `x-mcp-authz-user` and
//! `x-mcp-authz-application`; the same headers sent by a client are removed.
//! Denied ones get 403 with a JSON-RPC error carrying the request's id;
//! unauthenticated ones — no credentials at all, or a token that fails — 401 with
//! `WWW-Authenticate: Bearer ...` as the MCP authorization spec asks; malformed ones 400.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use serde_json::{Map, Value, json};
use tonic::{Request, Status};
use tracing::Instrument;

use super::mcp_check::{
    Asserted, CALLER_TOKEN_HEADER, CallerTrust, Credentials, Verdict, admit, check_calls,
    decision_meta,
};
use super::pbjson::envoy_struct_to_json;
use super::refusal::Refusal;
use super::services::{Ready, Services};
use crate::authz::{DecisionMeta, Interface, Reason, ReasonKind};
use crate::identity::bearer_token_from_header;
use crate::mcp::jsonrpc::{McpCall, McpHeaders, check_headers, parse_body};

/// Header carrying the decision id to the MCP server.
pub const DECISION_ID_HEADER: &str = "x-mcp-authz-decision-id";
/// Header carrying the verified user id to the MCP server.
pub const USER_HEADER: &str = "x-mcp-authz-user";
/// Header carrying the verified application id to the MCP server.
pub const APPLICATION_HEADER: &str = "x-mcp-authz-application";
/// Header naming the MCP server in the HTTP mode.
pub const SERVER_HEADER: &str = "x-mcp-authz-server";
/// The header Envoy adds when it forwards the request body for authorization:
/// `false` if it is whole, `true` if it was cut at `max_request_bytes`.
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";
/// Header of the HTTP mode carrying the mTLS peer's SPIFFE ID, as Envoy sets it
/// (`%DOWNSTREAM_PEER_URI_SAN%`); honoured only with the caller secret.
pub const SPIFFE_ID_HEADER: &str = "x-mcp-authz-spiffe-id";
/// Envoy's MCP filter's metadata namespace.
pub const MCP_FILTER_NAMESPACE: &str = "envoy.filters.http.mcp";
/// Action of `GET` (opening the server's SSE stream).
pub const STREAM_ACTION: &str = "session/stream";
/// Action of `DELETE` (ending a session).
pub const END_ACTION: &str = "session/end";

/// The HTTP request Envoy asks about, whatever the wire format.
#[derive(Debug, Default)]
pub struct EnvoyRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Headers, every value kept (see [`Headers`]).
    pub headers: Headers<'a>,
    /// The body as Envoy forwarded it.
    pub body: &'a [u8],
    /// The MCP server id from the route, if any.
    pub server: Option<&'a str>,
    /// The caller's SPIFFE ID (mTLS peer) as Envoy proved it, if any.
    pub spiffe_id: Option<&'a str>,
    /// A SPIFFE ID the request asserts (the HTTP mode's `x-mcp-authz-spiffe-id`).
    pub asserted_spiffe_id: Option<&'a str>,
    /// Whether the request comes from the trusted caller.
    pub caller: Option<CallerTrust>,
    /// The caller's address, if known.
    pub source_ip: Option<String>,
    /// The metadata of Envoy's MCP filter, if present.
    pub mcp_metadata: Option<Map<String, Value>>,
    /// Trace context and request id, for the decision log.
    pub meta: DecisionMeta,
}

/// Where a header value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderSource {
    /// `CheckRequest.attributes.request.http.headers` (Envoy joins a repeated
    /// header there into one value).
    Headers,
    /// `CheckRequest.attributes.request.http.header_map` (one entry per value, with
    /// `encode_raw_headers`).
    HeaderMap,
    /// The check request of the HTTP mode.
    Http,
}

/// Why the headers of a request were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A header that must be single arrived more than once.
    #[error("the header `{0}` is sent more than once")]
    Repeated(String),
    /// A header has different values in `headers` and `header_map`.
    #[error("the header `{0}` has different values in `headers` and `header_map`")]
    Conflicting(String),
}

/// Whether the decision, or the MCP server behind Envoy, acts on the header, so
/// that it must arrive at most once: `authorization`, `content-type`, Envoy's
/// partial-body marker, every `mcp-*` header (`mcp-method`, `mcp-name`,
/// `mcp-session-id`, `mcp-protocol-version`, ...) and every `x-mcp-authz-*`
/// header (the server of the HTTP mode, and the client copies of the headers an
/// allow replaces). `name` is in lower case.
pub fn is_security_header(name: &str) -> bool {
    matches!(name, "authorization" | "content-type" | PARTIAL_BODY_HEADER)
        || name.starts_with("mcp-")
        || name.starts_with("x-mcp-authz-")
}

/// The headers of the request Envoy describes: names in lower case, and every
/// value each one arrived with, with where it came from. Values are never joined:
/// `true` in `headers` and `false` in `header_map` stay two values, so that a
/// reader can tell one header from two. Every reading goes through
/// [`Headers::get`]: one value, or a refusal.
#[derive(Debug, Default, Clone)]
pub struct Headers<'a> {
    map: HashMap<Cow<'a, str>, Vec<(HeaderSource, Cow<'a, str>)>>,
}

impl<'a> Headers<'a> {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one value of `name` (any case).
    pub fn add(&mut self, source: HeaderSource, name: &'a str, value: Cow<'a, str>) {
        self.map
            .entry(lower_case(name))
            .or_default()
            .push((source, value));
    }

    /// The value of `name` (lower case): `None` if absent. More than one value
    /// from one source (a repeated header, or two names that differ only in case),
    /// or different values in `headers` and `header_map`, are refused; the same
    /// value in both is one header that Envoy described twice.
    pub fn get(&self, name: &str) -> Result<Option<&str>, HeaderError> {
        let Some(values) = self.map.get(name) else {
            return Ok(None);
        };
        let Some((_, first)) = values.first() else {
            return Ok(None);
        };
        for (i, (source, value)) in values.iter().enumerate().skip(1) {
            if values.iter().take(i).any(|(s, _)| s == source) {
                return Err(HeaderError::Repeated(shown(name)));
            }
            if value != first {
                return Err(HeaderError::Conflicting(shown(name)));
            }
        }
        Ok(Some(first.as_ref()))
    }

    /// The value of `name` if it arrived once; `None` if absent or repeated. Only
    /// for headers no decision depends on (trace context, request id).
    pub fn get_lenient(&self, name: &str) -> Option<&str> {
        self.get(name).ok().flatten()
    }

    /// Refuse the request if any security header ([`is_security_header`]) is not
    /// single, whether or not this adapter reads it: the MCP server behind Envoy
    /// may read the other copy.
    pub fn check(&self) -> Result<(), HeaderError> {
        let mut names: Vec<&str> = self
            .map
            .keys()
            .map(AsRef::as_ref)
            .filter(|n| is_security_header(n))
            .collect();
        // The same request is refused with the same message, whatever the hash order.
        names.sort_unstable();
        for name in names {
            self.get(name)?;
        }
        Ok(())
    }

    /// Whether Envoy saw the whole body: its marker is exactly one `false`, or there
    /// is none (Envoy adds one whenever it forwards a body). `true`, an empty value,
    /// ` false`, `FALSE`, `false,true` (Envoy's joining of two) are a partial body.
    pub fn body_is_whole(&self) -> Result<bool, HeaderError> {
        Ok(matches!(
            self.get(PARTIAL_BODY_HEADER)?,
            None | Some("false")
        ))
    }

    /// Every header name (lower case) with its value, for those that arrived once.
    pub fn singles(&self) -> impl Iterator<Item = (&str, &str)> {
        self.map
            .keys()
            .filter_map(|k| Some((k.as_ref(), self.get(k).ok().flatten()?)))
    }
}

/// A header name for a message: at most 64 characters, anything but visible ASCII escaped.
fn shown(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if i == 64 {
            out.push('…');
            break;
        }
        if c.is_ascii_graphic() && c != '`' {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

/// What to tell Envoy.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvoyAnswer {
    /// Let the request through.
    Allow {
        /// The decision id.
        decision_id: String,
        /// Headers to set on the upstream request.
        set_headers: Vec<(&'static str, String)>,
        /// Headers to remove from it (identity headers a client sent, with no verified value).
        remove_headers: Vec<&'static str>,
        /// The determining policies, for the access log.
        policies: Vec<String>,
    },
    /// Answer the client instead: built from a [`Refusal`] by
    /// [`Refusal::envoy_answer`].
    Deny {
        /// The decision id.
        decision_id: String,
        /// HTTP status: 400, 401 or 403.
        status: u16,
        /// Extra headers for the client (`WWW-Authenticate`).
        headers: Vec<(&'static str, String)>,
        /// A JSON-RPC error response.
        body: String,
    },
}

/// A request refused: why, the JSON-RPC id of the message the error answers, and
/// the id of the policy decision that denied it (none: refused before any policy
/// was asked, logged when answered).
#[derive(Debug)]
struct Refused {
    refusal: Refusal,
    id: Option<Value>,
    decision_id: Option<String>,
}

/// Refuse the message `id` (if known) before any policy was asked.
fn refuse(refusal: Refusal, id: Option<Value>) -> Box<Refused> {
    Box::new(Refused {
        refusal,
        id,
        decision_id: None,
    })
}

/// Decide on the request Envoy describes. Requests refused before any policy was
/// asked (malformed, unauthenticated) are counted and logged as denies too.
pub async fn decide(
    services: &Services,
    request: EnvoyRequest<'_>,
    interface: Interface,
) -> EnvoyAnswer {
    let meta = request.meta.clone();
    match decide_request(services, request, interface).await {
        Ok(answer) => answer,
        Err(refused) => {
            let Refused {
                refusal,
                id,
                decision_id,
            } = *refused;
            let decision_id = decision_id.unwrap_or_else(|| {
                refusal
                    .record(&services.engine, interface, &meta)
                    .decision_id
            });
            refusal.envoy_answer(id.as_ref(), decision_id)
        }
    }
}

async fn decide_request(
    services: &Services,
    request: EnvoyRequest<'_>,
    interface: Interface,
) -> Result<EnvoyAnswer, Box<Refused>> {
    // One rule for every header before anything reads one.
    if let Err(e) = request.headers.check() {
        return Err(refuse(Refusal::invalid(e.to_string()), None));
    }
    let Some(server) = request.server.or(services.envoy_default_server.as_deref()) else {
        return Err(refuse(
            Refusal::invalid("no MCP server is configured for this route"),
            None,
        ));
    };
    let calls = calls_of(&request)?;
    let request_id = calls.first().and_then(|c| c.id.clone());
    let authorization = match request.headers.get("authorization") {
        Ok(a) => a,
        Err(e) => return Err(refuse(Refusal::invalid(e.to_string()), request_id)),
    };
    let bearer = match authorization {
        Some(h) => match bearer_token_from_header(h) {
            Ok(t) => Some(t),
            Err(e) => return Err(refuse(Refusal::unauthenticated(&e), request_id)),
        },
        None => None,
    };
    let asserted = Asserted {
        spiffe_id: request.asserted_spiffe_id.filter(|s| !s.is_empty()),
        identity: None,
    };
    let credentials = match admit(asserted, request.caller.unwrap_or(CallerTrust::Untrusted)) {
        Ok(admitted) if request.spiffe_id.is_none_or(str::is_empty) => {
            Credentials::admitted(bearer, admitted)
        }
        Ok(_) => Credentials::proven(bearer, request.spiffe_id),
        Err(e) => {
            let reason = Reason::new(ReasonKind::Rejected, e.to_string());
            return Err(refuse(Refusal::forbidden(reason), request_id));
        }
    };
    // MCP's authorization: a request without credentials is told how to get them.
    if credentials.is_empty() {
        return Err(refuse(Refusal::no_credentials(), request_id));
    }
    let mut extra = Map::new();
    if let Some(ip) = &request.source_ip {
        extra.insert("request".into(), json!({ "source_ip": ip }));
    }
    let verdict = check_calls(
        services,
        interface,
        credentials,
        server,
        calls,
        &extra,
        &request.meta,
    )
    .await;
    let allowed = verdict.allowed();
    let identity = match &verdict {
        Verdict::Unauthenticated(e) => {
            return Err(refuse(Refusal::unauthenticated(e), request_id));
        }
        Verdict::Decided { identity, .. } => identity,
    };
    let Some(deciding) = verdict.deciding() else {
        return Err(refuse(
            Refusal::invalid("the request holds no message"),
            request_id,
        ));
    };
    let decision = &deciding.outcome.decision;
    let decision_id = deciding.outcome.decision_id.clone();
    if !allowed {
        return Err(Box::new(Refused {
            refusal: Refusal::forbidden(decision.reason.clone()),
            id: deciding.call.id.clone(),
            decision_id: Some(decision_id),
        }));
    }
    let mut set_headers = vec![(DECISION_ID_HEADER, decision_id.clone())];
    let mut remove_headers = Vec::new();
    for (name, value) in [
        (USER_HEADER, &identity.user),
        (APPLICATION_HEADER, &identity.application),
    ] {
        match value {
            Some(v) => set_headers.push((name, v.clone())),
            None => remove_headers.push(name),
        }
    }
    let mut policies: Vec<String> = decision
        .evaluations
        .iter()
        .flat_map(|e| e.policies.clone())
        .collect();
    policies.sort();
    policies.dedup();
    Ok(EnvoyAnswer::Allow {
        decision_id,
        set_headers,
        remove_headers,
        policies,
    })
}

/// The MCP messages of the request, or why it is refused.
fn calls_of(request: &EnvoyRequest<'_>) -> Result<Vec<McpCall>, Box<Refused>> {
    match request.method.to_ascii_uppercase().as_str() {
        "POST" => {}
        "GET" => return Ok(vec![McpCall::on_server(STREAM_ACTION)]),
        "DELETE" => return Ok(vec![McpCall::on_server(END_ACTION)]),
        other => {
            let other: String = other.chars().take(16).collect();
            return Err(refuse(
                Refusal::invalid(format!("HTTP method `{other}` is not used by MCP")),
                None,
            ));
        }
    }
    let whole = request
        .headers
        .body_is_whole()
        .map_err(|e| refuse(Refusal::invalid(e.to_string()), None))?;
    if !whole {
        return Err(refuse(
            Refusal::invalid("the request body is larger than what can be authorized"),
            None,
        ));
    }
    let message =
        parse_body(request.body).map_err(|e| refuse(Refusal::from(&e), e.id().cloned()))?;
    let id = message.single().and_then(|c| c.id.clone());
    let headers = McpHeaders::from_pairs(
        request
            .headers
            .singles()
            .filter(|(k, _)| k.starts_with("mcp-")),
    )
    .map_err(|e| refuse(Refusal::from(&e), id.clone()))?;
    check_headers(&message, &headers).map_err(|e| refuse(Refusal::from(&e), id.clone()))?;
    // Envoy's MCP filter read the same body: it must have seen the same method.
    if let Some(meta) = &request.mcp_metadata
        && let Some(seen) = meta.get("method").and_then(Value::as_str)
        && let Some(call) = message.single()
        && seen != call.method
    {
        return Err(refuse(
            Refusal::invalid("the MCP filter and the body disagree on the method"),
            id,
        ));
    }
    Ok(message.calls)
}

// ---- gRPC: envoy.service.auth.v3.Authorization ----

/// The `envoy.service.auth.v3.Authorization` service.
#[derive(Debug, Clone)]
pub struct ExtAuthzGrpc {
    ready: Ready,
}

impl ExtAuthzGrpc {
    /// The service, answering once `ready` is.
    pub fn new(ready: Ready) -> Self {
        Self { ready }
    }
}

/// The request Envoy describes in a `CheckRequest`.
pub fn envoy_request(check: &CheckRequest) -> EnvoyRequest<'_> {
    let attrs = check.attributes.as_ref();
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let mut headers = Headers::new();
    if let Some(h) = http {
        for (k, v) in &h.headers {
            headers.add(HeaderSource::Headers, k, Cow::Borrowed(v.as_str()));
        }
    }
    if let Some(map) = http.and_then(|h| h.header_map.as_ref()) {
        for h in &map.headers {
            // Envoy fills `value` or `raw_value`; two different ones are two values.
            let raw = (!h.raw_value.is_empty()).then(|| String::from_utf8_lossy(&h.raw_value));
            match raw {
                Some(raw) if h.value.is_empty() || raw == h.value.as_str() => {
                    headers.add(HeaderSource::HeaderMap, &h.key, raw);
                }
                Some(raw) => {
                    headers.add(HeaderSource::HeaderMap, &h.key, Cow::Borrowed(&h.value));
                    headers.add(HeaderSource::HeaderMap, &h.key, raw);
                }
                None => headers.add(HeaderSource::HeaderMap, &h.key, Cow::Borrowed(&h.value)),
            }
        }
    }
    let body: &[u8] = match http {
        Some(h) if !h.raw_body.is_empty() => &h.raw_body,
        Some(h) => h.body.as_bytes(),
        None => &[],
    };
    let source = attrs.and_then(|a| a.source.as_ref());
    let source_ip = source
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            Address::SocketAddress(s) => Some(s.address.clone()),
            _ => None,
        });
    let meta = decision_meta(
        headers.get_lenient("traceparent"),
        headers.get_lenient("x-request-id"),
    );
    EnvoyRequest {
        meta,
        method: http.map_or("", |h| h.method.as_str()),
        headers,
        body,
        server: attrs
            .and_then(|a| a.context_extensions.get("mcp_server"))
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
        spiffe_id: source
            .map(|s| s.principal.as_str())
            .filter(|s| !s.is_empty()),
        source_ip,
        mcp_metadata: attrs
            .and_then(|a| a.metadata_context.as_ref())
            .and_then(|m| m.filter_metadata.get(MCP_FILTER_NAMESPACE))
            .map(envoy_struct_to_json),
        // Envoy made the mTLS handshake: `source.principal` is proven, not asserted.
        asserted_spiffe_id: None,
        caller: None,
    }
}

/// `name` in lower case, copied only if it is not already.
fn lower_case(name: &str) -> Cow<'_, str> {
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

fn header(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.to_owned(),
            value: value.to_owned(),
            ..EnvoyHeader::default()
        }),
        append_action: action as i32,
        ..HeaderValueOption::default()
    }
}

fn string_value(s: String) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s)),
    }
}

/// The `CheckResponse` for an answer.
pub fn check_response(answer: EnvoyAnswer) -> CheckResponse {
    match answer {
        EnvoyAnswer::Allow {
            decision_id,
            set_headers,
            remove_headers,
            policies,
        } => {
            let metadata = Struct {
                fields: [
                    ("decision_id".to_owned(), string_value(decision_id)),
                    ("policies".to_owned(), string_value(policies.join(","))),
                ]
                .into_iter()
                .collect(),
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code: tonic::Code::Ok as i32,
                    ..rpc::Status::default()
                }),
                dynamic_metadata: Some(metadata),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: set_headers
                        .iter()
                        .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                        .collect(),
                    headers_to_remove: remove_headers.iter().map(|h| (*h).to_owned()).collect(),
                    ..OkHttpResponse::default()
                })),
            }
        }
        EnvoyAnswer::Deny {
            decision_id,
            status,
            headers,
            body,
            ..
        } => {
            let code = match status {
                401 => tonic::Code::Unauthenticated,
                400 => tonic::Code::InvalidArgument,
                _ => tonic::Code::PermissionDenied,
            };
            let mut hs = vec![
                header(
                    "content-type",
                    "application/json",
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
                header(
                    DECISION_ID_HEADER,
                    &decision_id,
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
            ];
            hs.extend(
                headers
                    .iter()
                    .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd)),
            );
            let metadata = Struct {
                fields: [("decision_id".to_owned(), string_value(decision_id))]
                    .into_iter()
                    .collect(),
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code: code as i32,
                    ..rpc::Status::default()
                }),
                dynamic_metadata: Some(metadata),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus {
                        code: i32::from(status),
                    }),
                    headers: hs,
                    body,
                })),
            }
        }
    }
}

#[tonic::async_trait]
impl Authorization for ExtAuthzGrpc {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, Status> {
        let services = self
            .ready
            .get()
            .ok_or_else(|| Status::from(Refusal::unavailable()))?;
        let envoy = envoy_request(request.get_ref());
        let span =
            super::grpc::request_span("envoy.service.auth.v3.Authorization/Check", &envoy.meta);
        let answer = decide(services, envoy, Interface::ExtAuthzGrpc)
            .instrument(span.clone())
            .await;
        let (EnvoyAnswer::Allow { decision_id, .. } | EnvoyAnswer::Deny { decision_id, .. }) =
            &answer;
        span.record("decision_id", decision_id.as_str());
        Ok(tonic::Response::new(check_response(answer)))
    }
}

// ---- HTTP mode ----

/// The routes of the HTTP mode: every method and path under `/ext_authz`, without the
/// request layer: the listener serves them through [`super::http::main_router`], which
/// puts them under it with the other routes.
pub fn http_router(ready: Ready) -> axum::Router {
    axum::Router::new()
        .route("/ext_authz", axum::routing::any(http_check))
        .route("/ext_authz/{*path}", axum::routing::any(http_check))
        .with_state(ready)
}

async fn http_check(
    State(ready): State<Ready>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(services) = ready.get() else {
        return Refusal::unavailable().into_response();
    };
    let mut map = Headers::new();
    for (k, v) in &headers {
        map.add(
            HeaderSource::Http,
            k.as_str(),
            String::from_utf8_lossy(v.as_bytes()),
        );
    }
    // A repeated header is refused by the header rule in `decide`; it is never
    // read here as one of its values.
    let server = map.get(SERVER_HEADER).ok().flatten().map(str::to_owned);
    let spiffe_id = map.get(SPIFFE_ID_HEADER).ok().flatten().map(str::to_owned);
    let meta = decision_meta(
        map.get_lenient("traceparent"),
        map.get_lenient("x-request-id"),
    );
    let request = EnvoyRequest {
        meta,
        method: method.as_str(),
        headers: map,
        body: &body,
        server: server.as_deref().filter(|s| !s.is_empty()),
        asserted_spiffe_id: spiffe_id.as_deref(),
        caller: Some(CallerTrust::of(
            services,
            headers.get(CALLER_TOKEN_HEADER).map(HeaderValue::as_bytes),
        )),
        ..EnvoyRequest::default()
    };
    let answer = decide(services, request, Interface::ExtAuthzHttp).await;
    let (EnvoyAnswer::Allow { decision_id, .. } | EnvoyAnswer::Deny { decision_id, .. }) = &answer;
    tracing::Span::current().record("decision_id", decision_id.as_str());
    http_response(answer)
}

fn http_response(answer: EnvoyAnswer) -> Response {
    let mut out = HeaderMap::new();
    let put = |out: &mut HeaderMap, k: &str, v: &str| {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            out.insert(k, v);
        }
    };
    match answer {
        EnvoyAnswer::Allow {
            decision_id,
            set_headers,
            ..
        } => {
            put(&mut out, DECISION_ID_HEADER, &decision_id);
            for (k, v) in &set_headers {
                put(&mut out, k, v);
            }
            // Headers with no verified value are sent empty so that Envoy overwrites
            // whatever a client put there.
            for name in [USER_HEADER, APPLICATION_HEADER] {
                if !out.contains_key(name) {
                    put(&mut out, name, "");
                }
            }
            (StatusCode::OK, out).into_response()
        }
        EnvoyAnswer::Deny {
            decision_id,
            status,
            headers,
            body,
            ..
        } => {
            put(&mut out, "content-type", "application/json");
            put(&mut out, DECISION_ID_HEADER, &decision_id);
            for (k, v) in &headers {
                put(&mut out, k, v);
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            (status, out, body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::HeaderMap as EnvoyHeaderMap;
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Request as AttrRequest,
    };

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
        let r = envoy_request(c);
        r.headers.check()?;
        r.headers.body_is_whole()
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
            let ok = |c: &CheckRequest| envoy_request(c).headers.check();
            assert_eq!(ok(&check(&[(name, "a")], &[])), Ok(()));
            assert_eq!(ok(&check(&[(&upper, "a")], &[])), Ok(()), "{upper}");
            assert_eq!(ok(&check(&[(name, "a")], &[(name, "", "a")])), Ok(()));
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
            let r = envoy_request(&c);
            assert!(r.headers.get(name).is_err());
            assert!(r.headers.singles().all(|(k, _)| k != name));
        }
        // Headers no decision depends on may repeat; repeated, they are not read.
        for name in ["accept", "traceparent", "x-request-id", "user-agent"] {
            assert!(!is_security_header(name));
            let c = check(&[], &[(name, "", "a"), (name, "", "b")]);
            let r = envoy_request(&c);
            assert_eq!(r.headers.check(), Ok(()));
            assert_eq!(r.headers.get_lenient(name), None);
        }
    }

    #[test]
    fn refusals_name_the_header_safely() {
        let c = check(
            &[],
            &[("mcp-\u{1b}[31m`x", "", "a"), ("mcp-\u{1b}[31m`x", "", "b")],
        );
        let r = envoy_request(&c);
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

    /// The status, headers and body of the answer of `ExtAuthzGrpc::check`.
    async fn grpc_answer(
        service: &ExtAuthzGrpc,
        request: CheckRequest,
    ) -> (i32, Option<i32>, Vec<(String, String)>, String) {
        let response = service
            .check(Request::new(request))
            .await
            .expect("an answer")
            .into_inner();
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
        assert_eq!(
            body,
            r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32001,"message":"unauthenticated: a bearer token is required"}}"#
        );

        let (code, status, headers, body) = grpc_answer(&service, envoy("PUT", &auth, "")).await;
        assert_eq!(
            (code, status),
            (tonic::Code::InvalidArgument as i32, Some(400))
        );
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == DECISION_ID_HEADER && !v.is_empty())
        );
        assert_eq!(
            body,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"HTTP method `PUT` is not used by MCP"}}"#
        );

        // GET: the server's stream, decided as `session/stream` on the server.
        let (_, status, _, _) = grpc_answer(&service, envoy("GET", &auth, "")).await;
        assert!(matches!(status, None | Some(403)), "decided, not refused");

        let status = ExtAuthzGrpc::new(Ready::new())
            .check(Request::new(envoy("POST", &auth, "")))
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
}
