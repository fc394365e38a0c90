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

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tonic::Status;

use super::ext_authz::EnvoyAnswer;
use super::proto::v1::{DenyKind, JsonRpcError};
use super::services::REALM;
use crate::authz::{DecisionMeta, Engine, Interface, Outcome, Reason};
use crate::identity::{AuthnError, bearer_challenge};
use crate::mcp::jsonrpc::{
    FORBIDDEN_CODE, INTERNAL_ERROR, INVALID_REQUEST, McpError, UNAUTHENTICATED_CODE, error_response,
};
use crate::policy::Snapshot;

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
        }
    }

    /// Credentials that did not verify: `unauthenticated: <why>`, with the
    /// challenge of the error.
    pub fn unauthenticated(e: &AuthnError) -> Self {
        Self::new(
            RefusalKind::Unauthenticated {
                challenge: e.www_authenticate(REALM),
            },
            format!("unauthenticated: {e}"),
        )
    }

    /// No credentials at all: MCP's authorization tells the client how to get
    /// them (a bare `Bearer` challenge).
    pub fn no_credentials() -> Self {
        Self::new(
            RefusalKind::Unauthenticated {
                challenge: bearer_challenge(REALM),
            },
            "unauthenticated: a bearer token is required",
        )
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

    /// The `WWW-Authenticate` challenge, for an unauthenticated request.
    pub fn challenge(&self) -> Option<&str> {
        match &self.kind {
            RefusalKind::Unauthenticated { challenge } => Some(challenge),
            _ => None,
        }
    }

    /// The JSON-RPC error response answering the message `id` (`null` if none).
    pub fn jsonrpc_error(&self, id: Option<&Value>) -> Value {
        error_response(id, self.jsonrpc_code(), &self.message)
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
        let code = match r.kind {
            RefusalKind::Unauthenticated { .. } => tonic::Code::Unauthenticated,
            RefusalKind::Invalid { .. } | RefusalKind::TooLarge => tonic::Code::InvalidArgument,
            RefusalKind::Forbidden(_) => tonic::Code::PermissionDenied,
            RefusalKind::Unavailable => tonic::Code::Unavailable,
            RefusalKind::Internal => tonic::Code::Internal,
        };
        Status::new(code, r.message)
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
    /// The refusal as the gateway API answers it.
    pub fn gateway_deny(&self) -> GatewayDeny {
        let kind = match self.kind {
            RefusalKind::Unauthenticated { .. } => DenyKind::Unauthenticated,
            RefusalKind::Invalid { .. } | RefusalKind::TooLarge => DenyKind::InvalidRequest,
            RefusalKind::Forbidden(_) => DenyKind::Forbidden,
            RefusalKind::Unavailable | RefusalKind::Internal => DenyKind::Unspecified,
        };
        GatewayDeny {
            kind,
            error: JsonRpcError {
                code: self.jsonrpc_code(),
                message: self.message.clone(),
            },
            www_authenticate: self.challenge().unwrap_or_default().to_owned(),
        }
    }
}

// ---- Envoy ext_authz ----

impl Refusal {
    /// The answer to Envoy: the status, the challenge, and the JSON-RPC error
    /// answering the message `id`, for the deny `decision_id`.
    pub fn envoy_answer(&self, id: Option<&Value>, decision_id: String) -> EnvoyAnswer {
        EnvoyAnswer::Deny {
            decision_id,
            status: self.http_status().as_u16(),
            headers: self
                .challenge()
                .map(|c| ("www-authenticate", c.to_owned()))
                .into_iter()
                .collect(),
            body: self.jsonrpc_error(id).to_string(),
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
    use crate::authz::ReasonKind;

    fn every_kind() -> Vec<Refusal> {
        vec![
            Refusal::unauthenticated(&AuthnError::Malformed { detail: "bad" }),
            Refusal::no_credentials(),
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
            Refusal::no_credentials().to_string(),
            "unauthenticated: a bearer token is required"
        );
        assert_eq!(
            Refusal::unavailable().message(),
            "policies are not loaded yet"
        );
        let e = AuthnError::Malformed { detail: "bad" };
        assert_eq!(
            Refusal::unauthenticated(&e).message(),
            format!("unauthenticated: {e}")
        );
        assert_eq!(
            Refusal::unauthenticated(&e).challenge(),
            Some(e.www_authenticate(REALM).as_str())
        );
        assert_eq!(
            Refusal::no_credentials().challenge(),
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
        use tonic::Code::*;
        assert_eq!(
            codes.iter().map(|c| c.0).collect::<Vec<_>>(),
            [
                Unauthenticated,
                Unauthenticated,
                InvalidArgument,
                InvalidArgument,
                PermissionDenied,
                InvalidArgument,
                Unavailable,
                Internal
            ]
        );
        assert_eq!(codes[2].1, "`server` is empty");
        assert_eq!(codes[6].1, "policies are not loaded yet");
    }

    #[test]
    fn gateway_deny_of_each_kind() {
        let denies: Vec<(DenyKind, i64, bool)> = every_kind()
            .iter()
            .map(|r| {
                let d = r.gateway_deny();
                assert_eq!(d.error.message, r.message());
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
    }

    #[test]
    fn envoy_answer_of_each_kind() {
        let id = json!(7);
        for (refusal, status) in every_kind()
            .iter()
            .zip([401, 401, 400, 400, 403, 400, 503, 500])
        {
            let EnvoyAnswer::Deny {
                decision_id,
                status: got,
                headers,
                body,
            } = refusal.envoy_answer(Some(&id), "d1".into())
            else {
                panic!("a refusal is a deny");
            };
            assert_eq!((decision_id.as_str(), got), ("d1", status), "{refusal}");
            let body: Value = serde_json::from_str(&body).expect("JSON");
            assert_eq!(
                body,
                json!({ "jsonrpc": "2.0", "id": 7, "error": {
                    "code": refusal.jsonrpc_code(), "message": refusal.message() } })
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
        // No id: `null`; the members in the order every JSON-RPC error has had.
        let EnvoyAnswer::Deny { body, .. } = Refusal::invalid("x").envoy_answer(None, "d".into())
        else {
            panic!("a deny");
        };
        assert_eq!(
            body,
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"x"}}"#
        );
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
