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
//! The server, by one rule ([`server_of`]) in both modes: the route's
//! `context_extensions.mcp_server` (gRPC) or `x-mcp-authz-server` header (HTTP
//! mode); else the destination workload's SPIFFE ID (`attributes.destination.principal`,
//! gRPC; in the HTTP mode the `x-mcp-authz-destination-principal` header, honoured
//! only with the caller secret) in `[envoy.principals]`; else the `:authority` (Host)
//! in `[envoy.servers]`;
//! else `[envoy] default_server` if it is set. Nothing else: a deny naming the authority.
//! Allowed requests go on with `x-mcp-authz-decision-id`, `x-mcp-authz-user` and
//! `x-mcp-authz-application`; the same headers sent by a client are removed.
//! Denied ones get 403 with a JSON-RPC error carrying the request's id;
//! unauthenticated ones — no credentials at all, or a token that fails — 401 with
//! `WWW-Authenticate: Bearer ...` as the MCP authorization spec asks; malformed ones 400.
//! Every error carries the decision id in `error.data.decision_id`; what a deny says
//! follows `decisions.deny_detail` ([`Refusal::client_error`]), and a `not_found`
//! deny is answered with status 200 (the gRPC mode; 400 in the HTTP mode, where a
//! 200 is an allow), as a server answers a call of a tool it does not have.
//!
//! The request/answer model and the decision are here; the header rule in
//! `headers`, the two wire formats in `grpc` (its `CheckRequest` read off the wire
//! by `wire`, its `CheckResponse` written by `response`) and `http`.

mod grpc;
mod headers;
mod http;
mod response;
#[cfg(test)]
mod tests;
mod wire;
#[cfg(test)]
mod wire_tests;

pub use grpc::{AuthorizationService, ExtAuthzGrpc};
pub use headers::{Checked, HeaderError, HeaderSource, Headers, is_security_header};
pub use http::http_router;
pub use response::CheckAnswer;
pub use wire::{Malformed, NotUtf8, WireCheckRequest, envoy_request};

use serde_json::{Map, Value, json};

use super::mcp_check::{
    Asserted, CallerTrust, Credentials, Verdict, admit, admit_envoy_peer, check_calls,
    decision_meta, resolve_for,
};
use super::refusal::{Refusal, challenge_for};
use super::services::Services;
use crate::authz::{DecisionMeta, Interface, Reason, ReasonKind};
use crate::identity::Identity;
use crate::identity::bearer_token_from_header;
use crate::mcp::jsonrpc::{McpCall, McpHeaders, check_headers, parse_body};
use crate::uri::Shown;

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
/// Header of the HTTP mode carrying the destination workload's SPIFFE ID (what
/// `attributes.destination.principal` is in the gRPC mode), as Envoy sets it on an
/// inbound listener (`%DOWNSTREAM_LOCAL_URI_SAN%`); honoured only with the caller
/// secret, and then mapped by `[envoy.principals]`.
pub const DESTINATION_PRINCIPAL_HEADER: &str = "x-mcp-authz-destination-principal";
/// Set on the upstream request of a request that a dry run let through although it
/// was denied (`decisions.dry_run`): `deny` (the decision log has the reason).
pub const WOULD_BE_HEADER: &str = "x-mcp-authz-would-be";
/// Envoy's MCP filter's metadata namespace.
pub const MCP_FILTER_NAMESPACE: &str = "envoy.filters.http.mcp";
/// The dynamic metadata namespace of Envoy's ext_authz filter, where an allow's
/// metadata lands (and what ext_proc is given when Envoy forwards it).
pub const EXT_AUTHZ_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// Dynamic metadata of an allow: the decision id.
pub const DECISION_ID_METADATA: &str = "decision_id";
/// Dynamic metadata of an allow: the method of its one MCP message.
pub const METHOD_METADATA: &str = "mcp_method";
/// Dynamic metadata of an allow: the MCP server it was decided on.
pub const SERVER_METADATA: &str = "mcp_server";
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
    /// The `:authority` Envoy reports outside the headers (gRPC `http.host`), if any;
    /// else the `:authority` or `host` header is read.
    pub authority: Option<&'a str>,
    /// The destination workload's SPIFFE ID (`attributes.destination.principal`), if any.
    pub destination_principal: Option<&'a str>,
    /// A destination SPIFFE ID the request asserts (the HTTP mode's
    /// `x-mcp-authz-destination-principal`): honoured only from the trusted caller.
    pub asserted_destination_principal: Option<&'a str>,
    /// The caller's SPIFFE ID (mTLS peer) as Envoy proved it, if any.
    pub spiffe_id: Option<&'a str>,
    /// A SPIFFE ID the request asserts (the HTTP mode's `x-mcp-authz-spiffe-id`).
    pub asserted_spiffe_id: Option<&'a str>,
    /// Whether the request comes from the trusted caller.
    pub caller: Option<CallerTrust>,
    /// The caller's address, if known.
    pub source_ip: Option<String>,
    /// The method Envoy's MCP filter read from the body (its metadata's `method`),
    /// if it says one.
    pub mcp_filter_method: Option<&'a str>,
    /// Trace context and request id, for the decision log.
    pub meta: DecisionMeta,
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
        /// The method of the request's one MCP message (none for a batch), for
        /// ext_proc ([`METHOD_METADATA`]).
        mcp_method: Option<String>,
        /// The MCP server it was decided on ([`SERVER_METADATA`]).
        server: Option<String>,
    },
    /// Answer the client instead: built from a [`Refusal`] by
    /// [`Refusal::envoy_answer`].
    Deny {
        /// The decision id.
        decision_id: String,
        /// HTTP status: 400, 401 or 403 (200 for a `not_found` answer).
        status: u16,
        /// The gRPC status of the `CheckResponse`: the refusal's
        /// ([`Refusal::grpc_code`]). Never OK to Envoy: a deny carrying `Ok` is
        /// written as `PERMISSION_DENIED`, since Envoy lets through any `Check`
        /// answered OK whatever else the answer says.
        code: tonic::Code,
        /// Extra headers for the client (`WWW-Authenticate`).
        headers: Vec<(&'static str, String)>,
        /// A JSON-RPC error response.
        body: String,
    },
}

/// The headers a deny answers the client with, in both modes: the content type, the
/// decision id, then the answer's own (`WWW-Authenticate`).
pub fn deny_headers<'a>(
    decision_id: &'a str,
    headers: &'a [(&'static str, String)],
) -> impl Iterator<Item = (&'a str, &'a str)> {
    [
        ("content-type", "application/json"),
        (DECISION_ID_HEADER, decision_id),
    ]
    .into_iter()
    .chain(headers.iter().map(|(k, v)| (*k, v.as_str())))
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

impl Refused {
    /// The answer to this refusal, logged (when no decision logged it already) as
    /// every refusal is, on the current snapshot with `meta`.
    fn answer(self, services: &Services, interface: Interface, meta: &DecisionMeta) -> EnvoyAnswer {
        let decision_id = self.decision_id.unwrap_or_else(|| {
            self.refusal
                .record(
                    &services.engine,
                    &services.engine.snapshot(),
                    interface,
                    meta,
                )
                .decision_id
        });
        self.refusal
            .envoy_answer(self.id.as_ref(), decision_id, services.deny_detail)
    }
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
    let mut meta = request.meta.clone();
    let answer = match decide_request(services, request, interface, &mut meta).await {
        Ok(answer) => answer,
        Err(refused) => refused.answer(services, interface, &meta),
    };
    dry_run(services, answer)
}

/// The answer to a request whose description cannot be read (a text field of a gRPC
/// `CheckRequest` that is not UTF-8, [`NotUtf8`]): a refusal, recorded as every
/// refusal is, and answered in the `CheckResponse` as a 400 — not as a gRPC error,
/// which Envoy would let through where `failure_mode_allow` is set.
pub fn refuse_unreadable(services: &Services, why: &NotUtf8, interface: Interface) -> EnvoyAnswer {
    let refused = refuse(Refusal::invalid(why.to_string()), None);
    dry_run(
        services,
        refused.answer(services, interface, &decision_meta(None, None)),
    )
}

/// The answer a dry run gives for `answer`: a deny (a refusal too) lets the request
/// through, saying what it would have been in [`WOULD_BE_HEADER`]; the identity
/// headers are removed, as for any request with no verified identity to forward.
fn dry_run(services: &Services, answer: EnvoyAnswer) -> EnvoyAnswer {
    match answer {
        EnvoyAnswer::Deny { decision_id, .. } if services.enforced(false) => EnvoyAnswer::Allow {
            set_headers: vec![
                (DECISION_ID_HEADER, decision_id.clone()),
                (WOULD_BE_HEADER, "deny".to_owned()),
            ],
            decision_id,
            remove_headers: vec![USER_HEADER, APPLICATION_HEADER],
            policies: Vec::new(),
            mcp_method: None,
            server: None,
        },
        answer => answer,
    }
}

/// Decide on `request`; `meta` (the request's, for the decision log) learns where
/// the server came from as soon as it is chosen, so that refusals after that say it too.
async fn decide_request(
    services: &Services,
    request: EnvoyRequest<'_>,
    interface: Interface,
    meta: &mut DecisionMeta,
) -> Result<EnvoyAnswer, Box<Refused>> {
    // One rule for every header before anything reads one; the security headers
    // are read from what it passed.
    let checked = request
        .headers
        .check()
        .map_err(|e| refuse(Refusal::invalid(e.to_string()), None))?;
    let (server, source) = server_of(services, &request, &checked)?;
    meta.server_source = Some(source.as_str());
    let calls = calls_of(&request, &checked)?;
    // A JSON-RPC batch (the body parsed: an array) is answered with one error, never
    // the array a server answers a batch with: never as if a tool did not exist.
    let batch = request.body.trim_ascii_start().first() == Some(&b'[');
    let request_id = calls.first().and_then(|c| c.id.clone());
    let credentials = match credentials_of(services, &request, &checked, server) {
        Ok(credentials) => credentials,
        Err(refusal) => return Err(refuse(refusal, request_id)),
    };
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
        meta,
    )
    .await;
    let allowed = verdict.allowed();
    let identity = match &verdict {
        Verdict::Unauthenticated(e) => {
            return Err(refuse(
                Refusal::unauthenticated(e, services.resource_server(server)),
                request_id,
            ));
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
        let mut refusal = Refusal::forbidden(decision.reason.clone());
        if !batch {
            refusal = refusal.of_call(&deciding.call);
        }
        let snapshot = services.engine.snapshot();
        if let Some(scope) = services
            .engine
            .step_up_scope(&snapshot, &deciding.request, decision)
        {
            refusal = refusal.with_step_up(
                challenge_for(services.resource_server(server)).insufficient_scope(&scope),
            );
        }
        return Err(Box::new(Refused {
            refusal,
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
    // What ext_proc reads back from the dynamic metadata: one message's method.
    let method = match &verdict {
        Verdict::Decided { calls, .. } if calls.len() == 1 => Some(deciding.call.method.clone()),
        _ => None,
    };
    Ok(EnvoyAnswer::Allow {
        decision_id,
        set_headers,
        remove_headers,
        policies,
        mcp_method: method,
        server: Some(server.to_owned()),
    })
}

/// The credentials `request` presents, by the one rule of both modes: the bearer
/// token of `Authorization`; the mTLS peer Envoy proved, honoured as
/// [`admit_envoy_peer`] says; identities asserted in headers only from the trusted
/// caller ([`admit`]). No credentials at all is a 401 that tells the client how to
/// get them, as MCP's authorization asks.
fn credentials_of<'r>(
    services: &Services,
    request: &'r EnvoyRequest<'_>,
    checked: &Checked<'r>,
    server: &str,
) -> Result<Credentials<'r>, Refusal> {
    let resource = services.resource_server(server);
    let authorization = checked.get("authorization");
    let bearer = match authorization {
        Some(h) => {
            Some(bearer_token_from_header(h).map_err(|e| Refusal::unauthenticated(&e, resource))?)
        }
        None => None,
    };
    let asserted = Asserted {
        spiffe_id: request.asserted_spiffe_id.filter(|s| !s.is_empty()),
        identity: None,
    };
    let trust = request.caller.unwrap_or(CallerTrust::Untrusted);
    let peer = request.spiffe_id.filter(|s| !s.is_empty());
    let credentials = admit(asserted, trust)
        .and_then(|admitted| match peer {
            None => Ok(Credentials::admitted(bearer, admitted)),
            Some(peer) => {
                admit_envoy_peer(services, trust).map(|()| Credentials::proven(bearer, Some(peer)))
            }
        })
        .map_err(|e| Refusal::forbidden(Reason::new(ReasonKind::Rejected, e.to_string())))?;
    if credentials.is_empty() {
        return Err(Refusal::no_credentials(resource));
    }
    Ok(credentials)
}

/// Who sends `request` and to which MCP server, by the same rules as a decision
/// ([`choose_server`], [`credentials_of`]), for a request ext_authz already let
/// through: `server` is the one ext_authz chose, when Envoy passed it on (it also
/// knows the route's `context_extensions`, which nothing else sees).
pub async fn identify(
    services: &Services,
    request: &EnvoyRequest<'_>,
    server: Option<&str>,
) -> Result<(String, Identity), Refusal> {
    let checked = request
        .headers
        .check()
        .map_err(|e| Refusal::invalid(e.to_string()))?;
    let server = match server.filter(|s| !s.is_empty()) {
        Some(s) => s.to_owned(),
        None => server_of(services, request, &checked)
            .map_err(|refused| refused.refusal)?
            .0
            .to_owned(),
    };
    let credentials = credentials_of(services, request, &checked, &server)?;
    let identity = resolve_for(services, credentials, &server)
        .await
        .map_err(|e| Refusal::unauthenticated(&e, services.resource_server(&server)))?;
    Ok((server, identity))
}

/// Where the server of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerSource {
    /// The route: `context_extensions.mcp_server` or `x-mcp-authz-server`.
    Route,
    /// `[envoy.principals]`, by the destination's SPIFFE ID.
    Principal,
    /// `[envoy.servers]`, by the `:authority`.
    Authority,
    /// `[envoy] default_server`.
    Default,
}

impl ServerSource {
    /// Its name in the decision log (`server_source`): `route`, `principal`,
    /// `authority` or `default`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerSource::Route => "route",
            ServerSource::Principal => "principal",
            ServerSource::Authority => "authority",
            ServerSource::Default => "default",
        }
    }
}

/// The server of the request and where it came from, by the one order of
/// precedence: route, destination principal, `:authority`, `default_server`; `Err`
/// with the `:authority` (if any) when none names one.
pub fn choose_server<'s>(
    services: &'s Services,
    route: Option<&'s str>,
    principal: Option<&str>,
    authority: Option<&str>,
) -> Result<(&'s str, ServerSource), Option<String>> {
    let map = &services.envoy_servers;
    if let Some(s) = route.filter(|s| !s.is_empty()) {
        return Ok((s, ServerSource::Route));
    }
    if let Some(s) = principal.and_then(|p| map.by_principal(p)) {
        return Ok((s, ServerSource::Principal));
    }
    if let Some(s) = authority.and_then(|a| map.by_authority(a)) {
        return Ok((s, ServerSource::Authority));
    }
    match services.envoy_default_server.as_deref() {
        Some(s) => Ok((s, ServerSource::Default)),
        None => Err(authority.map(str::to_owned)),
    }
}

/// The server the request targets and where it came from ([`choose_server`]), or a deny.
fn server_of<'s>(
    services: &'s Services,
    request: &'s EnvoyRequest<'_>,
    checked: &Checked<'s>,
) -> Result<(&'s str, ServerSource), Box<Refused>> {
    let header = |name| checked.get(name);
    let authority = request
        .authority
        .filter(|a| !a.is_empty())
        .or_else(|| header(":authority"))
        .or_else(|| header("host"))
        .filter(|a| !a.is_empty());
    let principal = destination_of(request)?;
    choose_server(services, request.server, principal, authority).map_err(|authority| {
        let text = match authority {
            Some(a) => format!("no MCP server for authority `{}`", Shown(&a)),
            None => "no MCP server for this request: it names no authority".to_owned(),
        };
        refuse(
            Refusal::forbidden(Reason::new(ReasonKind::Rejected, text)),
            None,
        )
    })
}

/// The destination workload's SPIFFE ID: as Envoy proved it (gRPC
/// `attributes.destination.principal`), else as the HTTP mode's
/// `x-mcp-authz-destination-principal` asserts it — by the one rule for assertions
/// ([`admit`]): honoured from the trusted caller, refused (403) from anyone else.
fn destination_of<'r>(request: &'r EnvoyRequest<'_>) -> Result<Option<&'r str>, Box<Refused>> {
    if let Some(proven) = request.destination_principal.filter(|p| !p.is_empty()) {
        return Ok(Some(proven));
    }
    let Some(asserted) = request
        .asserted_destination_principal
        .filter(|p| !p.is_empty())
    else {
        return Ok(None);
    };
    let assertion = Asserted {
        spiffe_id: Some(asserted),
        identity: None,
    };
    match admit(assertion, request.caller.unwrap_or(CallerTrust::Untrusted)) {
        Ok(_) => Ok(Some(asserted)),
        Err(e) => {
            let text =
                format!("the destination principal in `{DESTINATION_PRINCIPAL_HEADER}`: {e}");
            Err(refuse(
                Refusal::forbidden(Reason::new(ReasonKind::Rejected, text)),
                None,
            ))
        }
    }
}

/// The MCP messages of the request, or why it is refused.
fn calls_of(
    request: &EnvoyRequest<'_>,
    checked: &Checked<'_>,
) -> Result<Vec<McpCall>, Box<Refused>> {
    let method = request.method;
    if method.eq_ignore_ascii_case("GET") {
        return Ok(vec![McpCall::on_server(STREAM_ACTION)]);
    }
    if method.eq_ignore_ascii_case("DELETE") {
        return Ok(vec![McpCall::on_server(END_ACTION)]);
    }
    match method {
        m if m.eq_ignore_ascii_case("POST") => {}
        other => {
            // A method is a short token: 16 characters say which one it was.
            let other: String = other.to_ascii_uppercase().chars().take(16).collect();
            return Err(refuse(
                Refusal::invalid(format!(
                    "HTTP method `{}` is not used by MCP",
                    Shown(&other)
                )),
                None,
            ));
        }
    }
    if !checked.body_is_whole() {
        return Err(refuse(
            Refusal::invalid("the request body is larger than what can be authorized"),
            None,
        ));
    }
    let message =
        parse_body(request.body).map_err(|e| refuse(Refusal::from(&e), e.id().cloned()))?;
    let id = message.single().and_then(|c| c.id.clone());
    let headers = McpHeaders::from_pairs(checked.named(|k| k.starts_with("mcp-")))
        .map_err(|e| refuse(Refusal::from(&e), id.clone()))?;
    check_headers(&message, &headers).map_err(|e| refuse(Refusal::from(&e), id.clone()))?;
    // Envoy's MCP filter read the same body: it must have seen the same method (the
    // routes that skip ext_proc are chosen by it), and a batch has no one method.
    if let Some(seen) = request.mcp_filter_method
        && message.single().is_none_or(|call| seen != call.method)
    {
        return Err(refuse(
            Refusal::invalid("the MCP filter and the body disagree on the method"),
            id,
        ));
    }
    Ok(message.calls)
}
