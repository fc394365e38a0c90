//! The one refusal of the adapters: why an interface answers "no" without (or
//! besides) a policy decision to forward, and how each wire format says it.
//!
//! A [`Refusal`] is a [`RefusalKind`] and a message safe to show the caller (the
//! same sentence the decision log records when the refusal is logged as a deny,
//! [`Refusal::record`]). Every adapter builds refusals the same way and turns them
//! into its wire format in one place, here:
//!
//! | kind | HTTP (Envoy, AuthZEN, admin) | gRPC status | gateway `DenyKind` | JSON-RPC code |
//! |---|---|---|---|---|
//! | [`Unauthenticated`](RefusalKind::Unauthenticated) | 401 + `WWW-Authenticate` | `UNAUTHENTICATED` | `UNAUTHENTICATED` | [`UNAUTHENTICATED_CODE`] |
//! | [`Invalid`](RefusalKind::Invalid) | 400 | `INVALID_ARGUMENT` | `INVALID_REQUEST` | its own (`-32600`, `-32700`, ...) |
//! | [`Forbidden`](RefusalKind::Forbidden) | 403 | `PERMISSION_DENIED` | `FORBIDDEN` | [`FORBIDDEN_CODE`] |
//! | [`TooLarge`](RefusalKind::TooLarge) | 400 | `INVALID_ARGUMENT` | `INVALID_REQUEST` | [`INVALID_REQUEST`] |
//! | [`Unavailable`](RefusalKind::Unavailable) | 503 (plain text) | `UNAVAILABLE` | — | [`INTERNAL_ERROR`] |
//! | [`Internal`](RefusalKind::Internal) | 500 | `INTERNAL` | — | [`INTERNAL_ERROR`] |
//!
//! The wire forms:
//!
//! - gRPC: a refusal of a whole call is a [`Status`] (`From<Refusal>`); a refusal
//!   of one check of the gateway API is an answer, with [`Refusal::gateway_deny`]'s
//!   kind, JSON-RPC error and challenge ([`super::grpc`]).
//! - Envoy ext_authz (both modes): [`Refusal::envoy_answer`], the status, the
//!   challenge and the JSON-RPC error body ([`super::ext_authz`]).
//! - HTTP (AuthZEN, admin): `IntoResponse`, `{"error": {"status": N, "message":
//!   ...}}` ([`super::http`]); "not ready" is a plain-text 503, as probes read it.
//!
//! What a client is told ([`Refusal::client_error`], the one place that builds the
//! JSON-RPC error of the gateway API and of Envoy): every error carries the
//! decision id in `error.data.decision_id`. A [`Forbidden`](RefusalKind::Forbidden)
//! refusal's message follows `decisions.deny_detail` ([`DenyDetail`]): `generic`
//! ([`GENERIC_FORBIDDEN`], no policy ids, principals or reason), `full` (the
//! message, `forbidden: <reason>`), or `not_found` (the answer of an MCP server
//! that does not have the tool, prompt or resource the [`DeniedCall`] names;
//! `generic` for any other call). Every other kind says its own message, which
//! names no policy. The message of the refusal itself, which the decision log
//! records, is never changed.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tonic::Status;

use super::ext_authz::EnvoyAnswer;
use super::pbjson::json_to_struct;
use super::proto::v1::{DenyKind, JsonRpcError};
use super::services::REALM;
use crate::authz::{DecisionMeta, Engine, Interface, Outcome, Reason};
use crate::config::DenyDetail;
use crate::config::ResourceServer;
use crate::identity::{AuthnError, Challenge};
use crate::mcp::jsonrpc::{
    FORBIDDEN_CODE, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, McpCall, McpError,
    RESOURCE_NOT_FOUND, Subject, UNAUTHENTICATED_CODE, error_response_text,
    error_response_with_data,
};
use crate::policy::Snapshot;

/// What a denied client is told with `decisions.deny_detail = "generic"` (the
/// default), and for calls `not_found` has no answer for.
pub const GENERIC_FORBIDDEN: &str = "forbidden: this request is not allowed";

/// The MCP call a deny answers: its method and what it names, for the
/// `not_found` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedCall {
    method: String,
    subject: Subject,
}

impl DeniedCall {
    /// The call `call` is.
    pub fn of(call: &McpCall) -> Self {
        Self {
            method: call.method.clone(),
            subject: call.subject.clone(),
        }
    }

    /// The answer of an MCP server that does not have what the call names: the
    /// code, the message and the resource URI for `data.uri` (MCP's own: `-32602`
    /// for an unknown tool or prompt, `-32002` with `data.uri` for an unknown
    /// resource); `None` for any other call.
    fn not_found(&self) -> Option<(i64, String, Option<String>)> {
        match (self.method.as_str(), &self.subject) {
            ("tools/call", Subject::Tool(name)) => {
                Some((INVALID_PARAMS, format!("Unknown tool: {name}"), None))
            }
            ("prompts/get", Subject::Prompt(name)) => {
                Some((INVALID_PARAMS, format!("Unknown prompt: {name}"), None))
            }
            ("resources/read", Subject::Resource(uri)) => Some((
                RESOURCE_NOT_FOUND,
                "Resource not found".to_owned(),
                Some(uri.clone()),
            )),
            _ => None,
        }
    }
}

/// The JSON-RPC error a client is sent for a refusal ([`Refusal::client_error`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientError {
    /// `error.code`.
    pub code: i64,
    /// `error.message`.
    pub message: String,
    /// `error.data`: `decision_id`, and `uri` for `Resource not found`.
    pub data: Map<String, Value>,
    /// Whether it answers as if the target did not exist (`not_found`): then the
    /// HTTP answer is the one of a server's JSON-RPC error, 200.
    pub not_found: bool,
}

/// What kind of "no" a refusal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusalKind {
    /// Who asks is not proven: no credentials, or credentials that do not verify.
    Unauthenticated {
        /// The `WWW-Authenticate` challenge telling the client how to authenticate.
        challenge: String,
    },
    /// The request cannot be read (malformed, ambiguous, not MCP).
    Invalid {
        /// The JSON-RPC error code (a malformed MCP message keeps the reader's own).
        code: i64,
    },
    /// Denied: by a policy, or by the rule for asserted identities.
    Forbidden(Reason),
    /// Over a limit (a batch, a list, a body).
    TooLarge,
    /// The policies are not loaded yet.
    Unavailable,
    /// The service failed; nothing about the request is implied.
    Internal,
}

/// Why an interface refuses a request: its kind and one sentence safe to show
/// the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    kind: RefusalKind,
    message: String,
    /// The call a deny answers, if known (for `not_found`).
    call: Option<Box<DeniedCall>>,
    /// The `insufficient_scope` challenge of a deny that more scope would allow.
    step_up: Option<String>,
}

/// The challenge of a request on `server` (its metadata URL and 401 scope when it
/// has protected-resource settings).
pub fn challenge_for(server: Option<&ResourceServer>) -> Challenge<'_> {
    Challenge {
        realm: REALM,
        resource_metadata: server.map(|s| s.metadata_url.as_str()),
        scope: server.and_then(|s| s.scope.as_deref()),
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// A refusal of `kind` saying `message`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            call: None,
            step_up: None,
        }
    }

    /// The same refusal, answering `call` (what `not_found` names).
    pub fn of_call(mut self, call: &McpCall) -> Self {
        self.call = Some(Box::new(DeniedCall::of(call)));
        self
    }

    /// Credentials that did not verify: `unauthenticated: <why>`, with the
    /// challenge of the error on `server` (its metadata URL when it has settings).
    pub fn unauthenticated(e: &AuthnError, server: Option<&ResourceServer>) -> Self {
        Self::new(
            RefusalKind::Unauthenticated {
                challenge: challenge_for(server).unauthenticated(Some(e)),
            },
            format!("unauthenticated: {e}"),
        )
    }

    /// No credentials at all: MCP's authorization tells the client how to get
    /// them (a `Bearer` challenge without error, pointing to the metadata of
    /// `server` when it has settings).
    pub fn no_credentials(server: Option<&ResourceServer>) -> Self {
        Self::new(
            RefusalKind::Unauthenticated {
                challenge: challenge_for(server).unauthenticated(None),
            },
            "unauthenticated: a bearer token is required",
        )
    }

    /// The same deny, answered with the step-up challenge `challenge`
    /// (`error="insufficient_scope"`): the client may ask for more scope.
    pub fn with_step_up(mut self, challenge: String) -> Self {
        self.step_up = Some(challenge);
        self
    }

    /// A request that cannot be read (JSON-RPC `-32600`, invalid request).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            RefusalKind::Invalid {
                code: INVALID_REQUEST,
            },
            message,
        )
    }

    /// A denied request: `forbidden: <reason>`.
    pub fn forbidden(reason: Reason) -> Self {
        let message = format!("forbidden: {reason}");
        Self::new(RefusalKind::Forbidden(reason), message)
    }

    /// A request over a limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::TooLarge, message)
    }

    /// The policies are not loaded yet.
    pub fn unavailable() -> Self {
        Self::new(RefusalKind::Unavailable, "policies are not loaded yet")
    }

    /// The service failed to do `what` (`the request could not be decided`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(RefusalKind::Internal, message)
    }

    /// The same refusal saying `message` instead.
    pub fn saying(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Its kind.
    pub fn kind(&self) -> &RefusalKind {
        &self.kind
    }

    /// The sentence shown to the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Record the refusal as a deny before evaluation (decision log, metrics),
    /// saying its message.
    pub fn record(
        &self,
        engine: &Engine,
        snapshot: &Snapshot,
        interface: Interface,
        meta: &DecisionMeta,
    ) -> Outcome {
        engine.reject(snapshot, interface, self.message.clone(), meta)
    }

    /// The HTTP status of every HTTP answer of the refusal.
    pub fn http_status(&self) -> StatusCode {
        match self.kind {
            RefusalKind::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            RefusalKind::Invalid { .. } | RefusalKind::TooLarge => StatusCode::BAD_REQUEST,
            RefusalKind::Forbidden(_) => StatusCode::FORBIDDEN,
            RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON-RPC error code of the refusal.
    pub fn jsonrpc_code(&self) -> i64 {
        match self.kind {
            RefusalKind::Unauthenticated { .. } => UNAUTHENTICATED_CODE,
            RefusalKind::Invalid { code } => code,
            RefusalKind::Forbidden(_) => FORBIDDEN_CODE,
            RefusalKind::TooLarge => INVALID_REQUEST,
            RefusalKind::Unavailable | RefusalKind::Internal => INTERNAL_ERROR,
        }
    }

    /// The `WWW-Authenticate` challenge: of an unauthenticated request, or of a
    /// deny that more scope would allow.
    pub fn challenge(&self) -> Option<&str> {
        match &self.kind {
            RefusalKind::Unauthenticated { challenge } => Some(challenge),
            RefusalKind::Forbidden(_) => self.step_up.as_deref(),
            _ => None,
        }
    }

    /// What the client is told for the refusal logged as `decision_id`, with
    /// `detail` for a deny (see the module documentation).
    pub fn client_error(&self, detail: DenyDetail, decision_id: &str) -> ClientError {
        let mut data = Map::new();
        let (code, message, not_found) = match (&self.kind, detail) {
            (RefusalKind::Forbidden(_), DenyDetail::Full) => {
                (FORBIDDEN_CODE, self.message.clone(), false)
            }
            (RefusalKind::Forbidden(_), DenyDetail::NotFound) => {
                match self.call.as_deref().and_then(DeniedCall::not_found) {
                    Some((code, message, uri)) => {
                        if let Some(uri) = uri {
                            data.insert("uri".into(), Value::String(uri));
                        }
                        (code, message, true)
                    }
                    None => (FORBIDDEN_CODE, GENERIC_FORBIDDEN.to_owned(), false),
                }
            }
            (RefusalKind::Forbidden(_), DenyDetail::Generic) => {
                (FORBIDDEN_CODE, GENERIC_FORBIDDEN.to_owned(), false)
            }
            _ => (self.jsonrpc_code(), self.message.clone(), false),
        };
        data.insert("decision_id".into(), Value::String(decision_id.to_owned()));
        ClientError {
            code,
            message,
            data,
            not_found,
        }
    }

    /// The JSON-RPC error response answering the message `id` (`null` if none),
    /// for the refusal logged as `decision_id`.
    pub fn jsonrpc_error(
        &self,
        id: Option<&Value>,
        detail: DenyDetail,
        decision_id: &str,
    ) -> Value {
        let e = self.client_error(detail, decision_id);
        error_response_with_data(id, e.code, &e.message, e.data)
    }
}

/// A malformed MCP message or header: invalid, with the reader's code and reason.
impl From<&McpError> for Refusal {
    fn from(e: &McpError) -> Self {
        Self::new(RefusalKind::Invalid { code: e.code() }, e.to_string())
    }
}

// ---- gRPC: a refused call, and a refused check of the gateway API ----

/// A refusal of a whole gRPC call.
impl From<Refusal> for Status {
    fn from(r: Refusal) -> Self {
        Status::new(r.grpc_code(), r.message)
    }
}

impl Refusal {
    /// The gRPC status code of this refusal: of a refused call, and of the
    /// `CheckResponse` that answers Envoy with it.
    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind {
            RefusalKind::Unauthenticated { .. } => tonic::Code::Unauthenticated,
            RefusalKind::Invalid { .. } | RefusalKind::TooLarge => tonic::Code::InvalidArgument,
            RefusalKind::Forbidden(_) => tonic::Code::PermissionDenied,
            RefusalKind::Unavailable => tonic::Code::Unavailable,
            RefusalKind::Internal => tonic::Code::Internal,
        }
    }
}

/// How the gateway API's answers (`CheckResponse`, `FilterListResponse`) carry a refusal.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayDeny {
    /// `deny_kind`.
    pub kind: DenyKind,
    /// `error`: the JSON-RPC error the gateway can send to the MCP client as is.
    pub error: JsonRpcError,
    /// `www_authenticate`: the challenge, or empty.
    pub www_authenticate: String,
}

impl Refusal {
    /// The refusal logged as `decision_id` as the gateway API answers it, with
    /// `detail` for a deny.
    pub fn gateway_deny(&self, detail: DenyDetail, decision_id: &str) -> GatewayDeny {
        let kind = match self.kind {
            RefusalKind::Unauthenticated { .. } => DenyKind::Unauthenticated,
            RefusalKind::Invalid { .. } | RefusalKind::TooLarge => DenyKind::InvalidRequest,
            RefusalKind::Forbidden(_) => DenyKind::Forbidden,
            RefusalKind::Unavailable | RefusalKind::Internal => DenyKind::Unspecified,
        };
        let e = self.client_error(detail, decision_id);
        GatewayDeny {
            kind,
            error: JsonRpcError {
                code: e.code,
                message: e.message,
                data: Some(json_to_struct(&e.data)),
            },
            www_authenticate: self.challenge().unwrap_or_default().to_owned(),
        }
    }
}

// ---- Envoy ext_authz ----

impl Refusal {
    /// The answer to Envoy: the status, the challenge, and the JSON-RPC error
    /// answering the message `id`, for the deny `decision_id`, with `detail` for
    /// a deny. A `not_found` answer has status 200, as an MCP server sends its
    /// JSON-RPC error for an unknown tool (a 404 would mean "session not found" to
    /// a streamable HTTP client).
    pub fn envoy_answer(
        &self,
        id: Option<&Value>,
        decision_id: String,
        detail: DenyDetail,
    ) -> EnvoyAnswer {
        let e = self.client_error(detail, &decision_id);
        let status = if e.not_found {
            StatusCode::OK
        } else {
            self.http_status()
        };
        EnvoyAnswer::Deny {
            status: status.as_u16(),
            code: self.grpc_code(),
            headers: self
                .challenge()
                .map(|c| ("www-authenticate", c.to_owned()))
                .into_iter()
                .collect(),
            body: error_response_text(id, e.code, &e.message, &e.data),
            decision_id,
        }
    }
}

// ---- HTTP: AuthZEN and admin ----

/// `{"error": {"status": N, "message": ...}}` with the status, and
/// `WWW-Authenticate` when unauthenticated; "not ready" is a plain-text 503.
impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = self.http_status();
        if self.kind == RefusalKind::Unavailable {
            return (status, format!("{}\n", self.message)).into_response();
        }
        let body = json!({ "error": { "status": status.as_u16(), "message": self.message } });
        let mut response = (status, Json(body)).into_response();
        if let Some(c) = self.challenge().and_then(|c| HeaderValue::from_str(c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::pbjson::struct_to_json;
    use crate::authz::ReasonKind;

    /// The gRPC code of each of [`every_kind`]'s refusals.
    const EVERY_KIND_CODE: [tonic::Code; 8] = {
        use tonic::Code::*;
        [
            Unauthenticated,
            Unauthenticated,
            InvalidArgument,
            InvalidArgument,
            PermissionDenied,
            InvalidArgument,
            Unavailable,
            Internal,
        ]
    };

    fn every_kind() -> Vec<Refusal> {
        vec![
            Refusal::unauthenticated(&AuthnError::Malformed { detail: "bad" }, None),
            Refusal::no_credentials(None),
            Refusal::invalid("`server` is empty"),
            Refusal::new(
                RefusalKind::Invalid { code: -32700 },
                "the body is not JSON",
            ),
            Refusal::forbidden(Reason::new(ReasonKind::Denied, "no policy permits it")),
            Refusal::too_large("the batch holds 3 checks; the limit is 2"),
            Refusal::unavailable(),
            Refusal::internal("the request could not be decided"),
        ]
    }

    #[test]
    fn messages_say_what_the_caller_reads() {
        assert_eq!(
            Refusal::forbidden(Reason::new(ReasonKind::Denied, "no policy permits it")).message(),
            "forbidden: no policy permits it"
        );
        assert_eq!(
            Refusal::no_credentials(None).to_string(),
            "unauthenticated: a bearer token is required"
        );
        assert_eq!(
            Refusal::unavailable().message(),
            "policies are not loaded yet"
        );
        let e = AuthnError::Malformed { detail: "bad" };
        assert_eq!(
            Refusal::unauthenticated(&e, None).message(),
            format!("unauthenticated: {e}")
        );
        assert_eq!(
            Refusal::unauthenticated(&e, None).challenge(),
            Some(e.www_authenticate(REALM).as_str())
        );
        assert_eq!(
            Refusal::no_credentials(None).challenge(),
            Some("Bearer realm=\"mcp-authz\"")
        );
    }

    #[test]
    fn grpc_status_of_each_kind() {
        let codes: Vec<(tonic::Code, String)> = every_kind()
            .into_iter()
            .map(|r| {
                let s = Status::from(r);
                (s.code(), s.message().to_owned())
            })
            .collect();
        assert_eq!(
            codes.iter().map(|c| c.0).collect::<Vec<_>>(),
            EVERY_KIND_CODE
        );
        assert_eq!(codes[2].1, "`server` is empty");
        assert_eq!(codes[6].1, "policies are not loaded yet");
    }

    #[test]
    fn gateway_deny_of_each_kind() {
        let denies: Vec<(DenyKind, i64, bool)> = every_kind()
            .iter()
            .map(|r| {
                let d = r.gateway_deny(DenyDetail::Full, "d1");
                assert_eq!(d.error.message, r.message());
                assert_eq!(
                    d.error.data.as_ref().map(struct_to_json),
                    Some(data("d1")),
                    "{r}"
                );
                (d.kind, d.error.code, !d.www_authenticate.is_empty())
            })
            .collect();
        assert_eq!(
            denies,
            [
                (DenyKind::Unauthenticated, -32001, true),
                (DenyKind::Unauthenticated, -32001, true),
                (DenyKind::InvalidRequest, -32600, false),
                (DenyKind::InvalidRequest, -32700, false),
                (DenyKind::Forbidden, -32003, false),
                (DenyKind::InvalidRequest, -32600, false),
                (DenyKind::Unspecified, -32603, false),
                (DenyKind::Unspecified, -32603, false),
            ]
        );
        // The generic default hides the reason of a deny, and only of a deny.
        for r in every_kind() {
            let d = r.gateway_deny(DenyDetail::Generic, "d2");
            let expected = match r.kind() {
                RefusalKind::Forbidden(_) => GENERIC_FORBIDDEN,
                _ => r.message(),
            };
            assert_eq!(d.error.message, expected);
            assert_eq!(d.error.data.as_ref().map(struct_to_json), Some(data("d2")));
        }
    }

    fn data(decision_id: &str) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("decision_id".into(), json!(decision_id));
        m
    }

    fn policy_deny() -> Refusal {
        Refusal::forbidden(Reason::new(
            ReasonKind::Denied,
            "denied by policy `contractors-no-finance` for `Mcp::User::\"erin\"`",
        ))
    }

    fn call(method: &str, subject: Subject) -> McpCall {
        McpCall {
            method: method.to_owned(),
            subject,
            arguments: Map::new(),
            id: Some(json!(7)),
            kind: crate::mcp::jsonrpc::MessageKind::Request,
        }
    }

    #[test]
    fn each_level_of_detail_for_a_policy_deny() {
        let deny = policy_deny().of_call(&call("tools/call", Subject::Tool("refund".into())));
        let generic = deny.client_error(DenyDetail::Generic, "d1");
        assert_eq!(
            generic,
            ClientError {
                code: FORBIDDEN_CODE,
                message: "forbidden: this request is not allowed".into(),
                data: data("d1"),
                not_found: false,
            }
        );
        // Nothing of the reason: no policy id, no principal.
        assert!(!generic.message.contains("contractors") && !generic.message.contains("erin"));
        let full = deny.client_error(DenyDetail::Full, "d1");
        assert_eq!(full.code, FORBIDDEN_CODE);
        assert_eq!(full.message, deny.message());
        assert!(
            full.message
                .starts_with("forbidden: denied by policy `contractors-no-finance`")
        );
        assert_eq!(full.data, data("d1"));
        let not_found = deny.client_error(DenyDetail::NotFound, "d1");
        assert_eq!(
            not_found,
            ClientError {
                code: INVALID_PARAMS,
                message: "Unknown tool: refund".into(),
                data: data("d1"),
                not_found: true,
            }
        );
        // The refusal itself (what the decision log records) keeps the reason.
        assert!(deny.message().contains("contractors-no-finance"));
        // A rule's rejection is a deny like a policy's.
        let rule = Refusal::forbidden(Reason::new(ReasonKind::Rule, "a user needs an application"));
        assert_eq!(
            rule.client_error(DenyDetail::Generic, "d").message,
            GENERIC_FORBIDDEN
        );
    }

    #[test]
    fn not_found_answers_as_an_mcp_server_without_the_target() {
        let cases = [
            (
                call("prompts/get", Subject::Prompt("triage".into())),
                (INVALID_PARAMS, "Unknown prompt: triage", None),
            ),
            (
                call(
                    "resources/read",
                    Subject::Resource("docs://finance/q1".into()),
                ),
                (
                    RESOURCE_NOT_FOUND,
                    "Resource not found",
                    Some("docs://finance/q1"),
                ),
            ),
            // Methods with no "unknown" answer of their own: generic.
            (
                call("tools/list", Subject::Server),
                (FORBIDDEN_CODE, GENERIC_FORBIDDEN, None),
            ),
            (
                call("completion/complete", Subject::Prompt("triage".into())),
                (FORBIDDEN_CODE, GENERIC_FORBIDDEN, None),
            ),
        ];
        for (call, (code, message, uri)) in cases {
            let e = policy_deny()
                .of_call(&call)
                .client_error(DenyDetail::NotFound, "d9");
            assert_eq!((e.code, e.message.as_str()), (code, message), "{call:?}");
            assert_eq!(e.not_found, code != FORBIDDEN_CODE);
            let mut expected = Map::new();
            if let Some(uri) = uri {
                expected.insert("uri".into(), json!(uri));
            }
            expected.insert("decision_id".into(), json!("d9"));
            assert_eq!(e.data, expected);
        }
        // A deny with no call known (refused before any message was decided): generic.
        assert_eq!(
            policy_deny()
                .client_error(DenyDetail::NotFound, "d")
                .message,
            GENERIC_FORBIDDEN
        );
        // Every other kind says its own message at every level, and has the id too.
        for level in [DenyDetail::Generic, DenyDetail::Full, DenyDetail::NotFound] {
            for r in every_kind()
                .into_iter()
                .filter(|r| !matches!(r.kind(), RefusalKind::Forbidden(_)))
            {
                let r = r.of_call(&call("tools/call", Subject::Tool("refund".into())));
                let e = r.client_error(level, "d");
                assert_eq!(
                    (e.code, e.message.as_str()),
                    (r.jsonrpc_code(), r.message())
                );
                assert_eq!(e.data, data("d"));
            }
        }
    }

    #[test]
    fn envoy_answer_of_each_kind() {
        let id = json!(7);
        for ((refusal, status), code) in every_kind()
            .iter()
            .zip([401, 401, 400, 400, 403, 400, 503, 500])
            .zip(EVERY_KIND_CODE)
        {
            let EnvoyAnswer::Deny {
                decision_id,
                status: got,
                code: got_code,
                headers,
                body,
            } = refusal.envoy_answer(Some(&id), "d1".into(), DenyDetail::Full)
            else {
                panic!("a refusal is a deny");
            };
            assert_eq!(
                (decision_id.as_str(), got, got_code),
                ("d1", status, code),
                "{refusal}"
            );
            let body: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(
                body,
                json!({ "jsonrpc": "2.0", "id": 7, "error": {
                    "code": refusal.jsonrpc_code(), "message": refusal.message(),
                    "data": { "decision_id": "d1" } } })
            );
            assert_eq!(
                headers,
                refusal
                    .challenge()
                    .map(|c| ("www-authenticate", c.to_owned()))
                    .into_iter()
                    .collect::<Vec<_>>()
            );
        }
        // No id: `null`; the members in the order every JSON-RPC error has had,
        // `data` last.
        let EnvoyAnswer::Deny { body, .. } =
            Refusal::invalid("x").envoy_answer(None, "d".into(), DenyDetail::Generic)
        else {
            panic!("a deny");
        };
        assert_eq!(
            body,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x","data":{"decision_id":"d"}}}"#
        );
        // The generic deny: 403; the not-found one: 200, as a server answers it.
        let deny = policy_deny().of_call(&call("tools/call", Subject::Tool("refund".into())));
        for (level, status, body) in [
            (
                DenyDetail::Generic,
                403,
                json!({ "code": -32003, "message": GENERIC_FORBIDDEN, "data": { "decision_id": "d" } }),
            ),
            (
                DenyDetail::NotFound,
                200,
                json!({ "code": -32602, "message": "Unknown tool: refund", "data": { "decision_id": "d" } }),
            ),
        ] {
            let EnvoyAnswer::Deny {
                status: got,
                body: text,
                ..
            } = deny.envoy_answer(Some(&id), "d".into(), level)
            else {
                panic!("a deny");
            };
            assert_eq!(got, status, "{level:?}");
            let text: Value = serde_json::from_str(&text).expect("JSON");
            assert_eq!(text, json!({ "jsonrpc": "2.0", "id": 7, "error": body }));
        }
    }

    #[tokio::test]
    async fn http_response_of_each_kind() {
        for (refusal, status) in every_kind()
            .into_iter()
            .zip([401, 401, 400, 400, 403, 400, 503, 500])
        {
            let message = refusal.message().to_owned();
            let challenge = refusal.challenge().map(str::to_owned);
            let kind = refusal.kind().clone();
            let response = refusal.into_response();
            assert_eq!(response.status().as_u16(), status, "{message}");
            assert_eq!(
                response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                challenge
            );
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            if kind == RefusalKind::Unavailable {
                assert_eq!(bytes, "policies are not loaded yet\n");
            } else {
                let body: Value = serde_json::from_slice(&bytes).expect("JSON");
                assert_eq!(
                    body,
                    json!({ "error": { "status": status, "message": message } })
                );
            }
        }
    }
}
