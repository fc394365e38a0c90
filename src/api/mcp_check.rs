//! What the gateway API and Envoy ext_authz share: prove who asks, turn each MCP
//! message into a decision request, ask the core, and combine the answers (a
//! batch is allowed only if every message in it is).

use serde_json::{Map, Value};

use super::services::Services;
use crate::authz::{DecisionMeta, DecisionRequest, Interface, Outcome};
use crate::identity::{AuthnError, Identity, IdentityInput, Resolver, TrustedIdentity};
use crate::mcp::jsonrpc::McpCall;
use crate::policy::reads_as;
use crate::telemetry::TraceContext;

/// JSON-RPC error code of an authentication failure.
pub const UNAUTHENTICATED_CODE: i64 = -32001;
/// JSON-RPC error code of a policy deny.
pub const FORBIDDEN_CODE: i64 = -32003;

/// The context attribute an MCP message itself fills: a caller's extra context
/// never carries it (what the service fills besides, `user`, `scopes` and the
/// like, the core refuses: [`crate::authz::service_filled_in`]).
const MESSAGE_FILLED: &str = "arguments";

/// What a caller presented to prove who it is.
#[derive(Debug, Default)]
pub struct Credentials<'a> {
    /// A bearer token to verify.
    pub bearer_token: Option<&'a str>,
    /// The caller's SPIFFE ID.
    pub spiffe_id: Option<&'a str>,
    /// An identity a trusted caller has verified.
    pub verified: Option<TrustedIdentity>,
}

/// One MCP message and the decision on it.
#[derive(Debug)]
pub struct CallOutcome {
    /// The message.
    pub call: McpCall,
    /// The request the core decided.
    pub request: DecisionRequest,
    /// The decision.
    pub outcome: Outcome,
}

/// The answer to an MCP request.
#[derive(Debug)]
pub enum Verdict {
    /// Who asks could not be proven: a deny, answered as HTTP 401.
    Unauthenticated(AuthnError),
    /// Every message decided.
    Decided {
        /// Who asked.
        identity: Box<Identity>,
        /// One outcome per message, in order.
        calls: Vec<CallOutcome>,
    },
}

impl Verdict {
    /// Allowed only if every message is (and there is at least one).
    pub fn allowed(&self) -> bool {
        match self {
            Verdict::Unauthenticated(_) => false,
            Verdict::Decided { calls, .. } => {
                !calls.is_empty() && calls.iter().all(|c| c.outcome.decision.allow)
            }
        }
    }

    /// The message that decided: the first denied one, else the first.
    pub fn deciding(&self) -> Option<&CallOutcome> {
        match self {
            Verdict::Unauthenticated(_) => None,
            Verdict::Decided { calls, .. } => calls
                .iter()
                .find(|c| !c.outcome.decision.allow)
                .or_else(|| calls.first()),
        }
    }
}

/// Prove the identity, then decide every message.
pub async fn check_calls(
    services: &Services,
    interface: Interface,
    credentials: Credentials<'_>,
    server: &str,
    calls: Vec<McpCall>,
    extra_context: &Map<String, Value>,
    meta: &DecisionMeta,
) -> Verdict {
    let identity = match resolve(&services.resolver, credentials).await {
        Ok(i) => i,
        Err(e) => return Verdict::Unauthenticated(e),
    };
    let refusal = caller_context_refusal(extra_context);
    let calls = calls
        .into_iter()
        .map(|call| {
            let request = request_for(&call, server, &identity, extra_context);
            let outcome = match &refusal {
                Some(reason) => services.engine.reject_for(interface, reason.clone(), meta),
                None => services.engine.decide_with(interface, &request, meta),
            };
            CallOutcome {
                call,
                request,
                outcome,
            }
        })
        .collect();
    Verdict::Decided {
        identity: Box::new(identity),
        calls,
    }
}

/// Prove who asks.
pub async fn resolve(
    resolver: &Resolver,
    credentials: Credentials<'_>,
) -> Result<Identity, AuthnError> {
    resolver
        .resolve(IdentityInput {
            bearer_token: credentials.bearer_token,
            spiffe_id: credentials.spiffe_id,
            trusted: credentials.verified,
        })
        .await
}

/// The decision request for one MCP message on `server`, asked by `identity`.
pub fn request_for(
    call: &McpCall,
    server: &str,
    identity: &Identity,
    extra_context: &Map<String, Value>,
) -> DecisionRequest {
    let mut request = call.decision_request(server);
    identity.apply_to(&mut request);
    add_context(&mut request, extra_context);
    request
}

/// Merge a caller's extra context attributes. The message's own `arguments` are
/// kept (a caller's `arguments`, in any spelling, are left out: see
/// [`caller_context_refusal`]); what only the service fills is passed on for the
/// core to refuse.
pub fn add_context(request: &mut DecisionRequest, extra: &Map<String, Value>) {
    for (k, v) in extra {
        if !reads_as(k, MESSAGE_FILLED) {
            request
                .context
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
    }
}

/// Why a caller's extra context may not go with MCP messages, if it may not: it
/// names what only the service fills (`user`, `scopes`, ...) or the message's own
/// `arguments`, in any spelling that reads as one of them.
pub fn caller_context_refusal(extra: &Map<String, Value>) -> Option<String> {
    if let Some(given) = extra.keys().find(|k| reads_as(k, MESSAGE_FILLED)) {
        return Some(format!(
            "the request sets `context.{given}`: the arguments come from the MCP message only"
        ));
    }
    crate::authz::service_filled_attribute(extra)
}

/// The JSON-RPC error for a deny, and its message (safe to show a client).
pub fn forbidden_message(reason: &str) -> String {
    format!("forbidden: {reason}")
}

/// What the decision log keeps of a call: its W3C trace context and request id
/// (at most 128 printable ASCII characters), from headers or gRPC metadata.
pub fn decision_meta(traceparent: Option<&str>, request_id: Option<&str>) -> DecisionMeta {
    DecisionMeta {
        trace: traceparent.and_then(TraceContext::parse),
        request_id: request_id
            .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned),
    }
}
