//! The gateway's gRPC API (`mcp_authz.v1.Authorizer`): an adapter from our
//! protobuf messages to decision requests and back.

use serde_json::{Map, Value, json};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::mcp_check::{
    CallOutcome, Credentials, FORBIDDEN_CODE, UNAUTHENTICATED_CODE, Verdict, check_calls,
    decision_meta, forbidden_message, request_for, resolve,
};
use super::pbjson::struct_to_json;
use super::proto::v1::{
    self as pb, BatchCheckRequest, BatchCheckResponse, CheckRequest, CheckResponse, DenyKind,
    FilterListRequest, FilterListResponse, JsonRpcError, Semantic, authorizer_server::Authorizer,
    check_request, filter_list_request,
};
use super::services::{REALM, Ready, Services, secret_matches};
use crate::authz::{Decision, DecisionMeta, Interface, Role};
use crate::identity::{AuthnError, TrustedIdentity, bearer_token_from_header};
use crate::mcp::jsonrpc::{McpCall, McpError, McpHeaders, check_headers, parse_body};

/// Metadata a trusted caller sends to have its verified identities honoured.
pub const CALLER_TOKEN_METADATA: &str = "x-mcp-authz-caller-token";

/// The `mcp_authz.v1.Authorizer` service.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    ready: Ready,
}

impl GatewayApi {
    /// The service, answering once `ready` is.
    pub fn new(ready: Ready) -> Self {
        Self { ready }
    }

    fn services(&self) -> Result<&Services, Status> {
        self.ready
            .get()
            .map(AsRef::as_ref)
            .ok_or_else(|| Status::unavailable("policies are not loaded yet"))
    }
}

/// Who the call's metadata says is calling.
struct Caller<'a> {
    trusted: bool,
    authorization: Option<&'a str>,
    meta: DecisionMeta,
}

fn caller<'a>(metadata: &'a MetadataMap, services: &Services) -> Caller<'a> {
    let trusted = match (
        &services.trusted_caller_token,
        metadata.get(CALLER_TOKEN_METADATA),
    ) {
        (Some(expected), Some(presented)) => {
            secret_matches(presented.as_bytes(), expected.expose().as_bytes())
        }
        _ => false,
    };
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    Caller {
        trusted,
        authorization: text("authorization"),
        meta: decision_meta(text("traceparent"), text("x-request-id")),
    }
}

#[tonic::async_trait]
impl Authorizer for GatewayApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let services = self.services()?;
        let caller = caller(request.metadata(), services);
        let span = request_span("mcp_authz.v1.Authorizer/Check", &caller.meta);
        let response = check(services, &caller, request.get_ref())
            .instrument(span.clone())
            .await;
        span.record("decision_id", response.decision_id.as_str());
        Ok(Response::new(response))
    }

    async fn batch_check(
        &self,
        request: Request<BatchCheckRequest>,
    ) -> Result<Response<BatchCheckResponse>, Status> {
        let services = self.services()?;
        let caller = caller(request.metadata(), services);
        let batch = request.get_ref();
        let semantic = Semantic::try_from(batch.semantic).unwrap_or(Semantic::ExecuteAll);
        let mut results = Vec::with_capacity(batch.checks.len());
        for c in &batch.checks {
            let result = check(services, &caller, c).await;
            let stop = match semantic {
                Semantic::ExecuteAll => false,
                Semantic::DenyOnFirstDeny => !result.allowed,
                Semantic::PermitOnFirstPermit => result.allowed,
            };
            results.push(result);
            if stop {
                break;
            }
        }
        Ok(Response::new(BatchCheckResponse { results }))
    }

    async fn filter_list(
        &self,
        request: Request<FilterListRequest>,
    ) -> Result<Response<FilterListResponse>, Status> {
        let services = self.services()?;
        let caller = caller(request.metadata(), services);
        Ok(Response::new(
            filter_list(services, &caller, request.get_ref()).await,
        ))
    }
}

/// The span of one gRPC call: the method, the caller's trace context; the decision
/// id is recorded when known. Never a token, never the request itself.
pub(crate) fn request_span(method: &'static str, meta: &DecisionMeta) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc.request",
        method,
        decision_id = tracing::field::Empty,
        request_id = meta.request_id.as_deref(),
        trace_id = tracing::field::Empty,
        parent_span_id = tracing::field::Empty,
    );
    if let Some(t) = &meta.trace {
        span.record("trace_id", t.trace_id());
        span.record("parent_span_id", t.parent_span_id());
    }
    span
}

/// Why a request was refused before any policy was asked.
enum Refusal {
    Unauthenticated(AuthnError),
    Untrusted,
    Invalid { code: i64, message: String },
}

impl Refusal {
    fn invalid(message: impl Into<String>) -> Self {
        Refusal::Invalid {
            code: -32600,
            message: message.into(),
        }
    }

    fn from_mcp(e: &McpError) -> Self {
        Refusal::Invalid {
            code: e.code(),
            message: e.to_string(),
        }
    }

    /// (kind, reason, JSON-RPC error, WWW-Authenticate)
    fn parts(&self) -> (DenyKind, String, JsonRpcError, String) {
        match self {
            Refusal::Unauthenticated(e) => (
                DenyKind::Unauthenticated,
                format!("unauthenticated: {e}"),
                JsonRpcError {
                    code: UNAUTHENTICATED_CODE,
                    message: format!("unauthenticated: {e}"),
                },
                e.www_authenticate(REALM),
            ),
            Refusal::Untrusted => {
                let reason =
                    "a verified identity is accepted only from a trusted caller".to_owned();
                (
                    DenyKind::Unauthenticated,
                    reason.clone(),
                    JsonRpcError {
                        code: UNAUTHENTICATED_CODE,
                        message: format!("unauthenticated: {reason}"),
                    },
                    crate::identity::bearer_challenge(REALM),
                )
            }
            Refusal::Invalid { code, message } => (
                DenyKind::InvalidRequest,
                message.clone(),
                JsonRpcError {
                    code: *code,
                    message: message.clone(),
                },
                String::new(),
            ),
        }
    }
}

fn refused(services: &Services, caller: &Caller<'_>, refusal: &Refusal) -> CheckResponse {
    let (kind, reason, error, www_authenticate) = refusal.parts();
    let outcome = services
        .engine
        .reject_for(Interface::Grpc, reason.clone(), &caller.meta);
    CheckResponse {
        allowed: false,
        decision_id: outcome.decision_id,
        policy_generation: outcome.decision.generation,
        reason,
        error: Some(error),
        deny_kind: kind as i32,
        www_authenticate,
        ..CheckResponse::default()
    }
}

/// The credentials of a request: the identity message, else the call's
/// `authorization` metadata.
fn credentials<'a>(
    identity: Option<&'a pb::Identity>,
    caller: &Caller<'a>,
) -> Result<Credentials<'a>, Refusal> {
    let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
    let mut creds = Credentials::default();
    if let Some(id) = identity {
        creds.bearer_token = non_empty(&id.bearer_token);
        creds.spiffe_id = non_empty(&id.spiffe_id);
        if let Some(v) = &id.verified
            && (!v.user.is_empty() || !v.application.is_empty() || !v.groups.is_empty())
        {
            if !caller.trusted {
                return Err(Refusal::Untrusted);
            }
            creds.verified = Some(TrustedIdentity {
                user: non_empty(&v.user).map(str::to_owned),
                application: non_empty(&v.application).map(str::to_owned),
                groups: v.groups.clone(),
            });
        }
    }
    if creds.bearer_token.is_none()
        && let Some(header) = caller.authorization
    {
        creds.bearer_token =
            Some(bearer_token_from_header(header).map_err(Refusal::Unauthenticated)?);
    }
    Ok(creds)
}

/// The MCP messages of a check request.
fn calls_of(request: &CheckRequest) -> Result<Vec<McpCall>, Refusal> {
    match &request.message {
        Some(check_request::Message::Jsonrpc(body)) => {
            let message = parse_body(body).map_err(|e| Refusal::from_mcp(&e))?;
            let headers = McpHeaders::from_pairs(
                request
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|e| Refusal::from_mcp(&e))?;
            check_headers(&message, &headers).map_err(|e| Refusal::from_mcp(&e))?;
            Ok(message.calls)
        }
        Some(check_request::Message::Mcp(m)) => {
            let body = message_from_fields(m)?;
            parse_body(&body)
                .map(|m| m.calls)
                .map_err(|e| Refusal::from_mcp(&e))
        }
        None => Err(Refusal::invalid(
            "the request has neither `mcp` nor `jsonrpc`",
        )),
    }
}

/// The JSON-RPC message equivalent to parsed fields, so that both forms go through
/// the same validation and mapping.
fn message_from_fields(m: &pb::McpRequest) -> Result<Vec<u8>, Refusal> {
    if m.method.is_empty() {
        return Err(Refusal::invalid("`mcp.method` is empty"));
    }
    let arguments = m.arguments.as_ref().map(struct_to_json).unwrap_or_default();
    let params = match crate::mcp::target_of(&m.method) {
        crate::mcp::Target::Tool | crate::mcp::Target::Prompt => {
            json!({ "name": m.name, "arguments": arguments })
        }
        crate::mcp::Target::Resource => json!({ "uri": m.name }),
        crate::mcp::Target::Server => json!({}),
    };
    serde_json::to_vec(&json!({ "jsonrpc": "2.0", "id": 0, "method": m.method, "params": params }))
        .map_err(|e| Refusal::invalid(format!("cannot encode the request: {e}")))
}

async fn check(services: &Services, caller: &Caller<'_>, request: &CheckRequest) -> CheckResponse {
    if request.server.is_empty() {
        return refused(services, caller, &Refusal::invalid("`server` is empty"));
    }
    let creds = match credentials(request.identity.as_ref(), caller) {
        Ok(c) => c,
        Err(r) => return refused(services, caller, &r),
    };
    let calls = match calls_of(request) {
        Ok(c) => c,
        Err(r) => return refused(services, caller, &r),
    };
    let extra = request
        .context
        .as_ref()
        .map(struct_to_json)
        .unwrap_or_default();
    let verdict = check_calls(
        services,
        Interface::Grpc,
        creds,
        &request.server,
        calls,
        &extra,
        &caller.meta,
    )
    .await;
    match verdict {
        Verdict::Unauthenticated(e) => refused(services, caller, &Refusal::Unauthenticated(e)),
        Verdict::Decided {
            ref identity,
            ref calls,
        } => {
            let allowed = verdict.allowed();
            let Some(deciding) = verdict.deciding() else {
                return refused(
                    services,
                    caller,
                    &Refusal::invalid("the request holds no message"),
                );
            };
            let decision = &deciding.outcome.decision;
            CheckResponse {
                allowed,
                decision_id: deciding.outcome.decision_id.clone(),
                reason: decision.reason.clone(),
                evaluations: evaluations(decision),
                error: (!allowed).then(|| JsonRpcError {
                    code: FORBIDDEN_CODE,
                    message: forbidden_message(&decision.reason),
                }),
                deny_kind: if allowed {
                    DenyKind::Unspecified
                } else {
                    DenyKind::Forbidden
                } as i32,
                www_authenticate: String::new(),
                policy_generation: decision.generation,
                calls: calls.iter().map(call_decision).collect(),
                user: identity.user.clone().unwrap_or_default(),
                application: identity.application.clone().unwrap_or_default(),
            }
        }
    }
}

fn evaluations(decision: &Decision) -> Vec<pb::Evaluation> {
    decision
        .evaluations
        .iter()
        .map(|e| pb::Evaluation {
            role: match e.role {
                Role::User => pb::Role::User,
                Role::Application => pb::Role::Application,
            } as i32,
            principal: e.principal.clone(),
            allowed: e.allow,
            policies: e.policies.clone(),
            errors: e.errors.clone(),
        })
        .collect()
}

fn call_decision(c: &CallOutcome) -> pb::CallDecision {
    pb::CallDecision {
        method: c.call.method.clone(),
        resource: c.request.resource.to_string(),
        allowed: c.outcome.decision.allow,
        reason: c.outcome.decision.reason.clone(),
        evaluations: evaluations(&c.outcome.decision),
    }
}

/// The kind of entry a list method returns, and the method that uses one.
fn list_kind(method: &str) -> Option<(&'static str, &'static str, &'static str)> {
    // (array in the result, key of an entry's name, method that uses the entry)
    match method {
        "tools/list" => Some(("tools", "name", "tools/call")),
        "prompts/list" => Some(("prompts", "name", "prompts/get")),
        "resources/list" => Some(("resources", "uri", "resources/read")),
        "resources/templates/list" => Some(("resourceTemplates", "uriTemplate", "resources/read")),
        _ => None,
    }
}

fn filter_refused(
    services: &Services,
    caller: &Caller<'_>,
    refusal: &Refusal,
) -> FilterListResponse {
    let (kind, reason, error, www_authenticate) = refusal.parts();
    let outcome = services
        .engine
        .reject_for(Interface::Grpc, reason, &caller.meta);
    FilterListResponse {
        decision_id: outcome.decision_id,
        policy_generation: outcome.decision.generation,
        error: Some(error),
        deny_kind: kind as i32,
        www_authenticate,
        ..FilterListResponse::default()
    }
}

async fn filter_list(
    services: &Services,
    caller: &Caller<'_>,
    request: &FilterListRequest,
) -> FilterListResponse {
    let generation = || services.engine.store().snapshot().generation;
    let Some((array, key, use_method)) = list_kind(&request.method) else {
        return filter_refused(
            services,
            caller,
            &Refusal::invalid(format!(
                "`{}` is not a list method",
                truncate(&request.method)
            )),
        );
    };
    if request.server.is_empty() {
        return filter_refused(services, caller, &Refusal::invalid("`server` is empty"));
    }
    let creds = match credentials(request.identity.as_ref(), caller) {
        Ok(c) => c,
        Err(r) => return filter_refused(services, caller, &r),
    };
    let identity = match resolve(&services.resolver, creds).await {
        Ok(i) => i,
        Err(e) => return filter_refused(services, caller, &Refusal::Unauthenticated(e)),
    };
    let extra = request
        .context
        .as_ref()
        .map(struct_to_json)
        .unwrap_or_default();
    let mut result_json = None;
    let names: Vec<String> = match &request.list {
        Some(filter_list_request::List::Names(n)) => n.names.clone(),
        Some(filter_list_request::List::Result(bytes)) => match list_entries(bytes, array, key) {
            Ok((json, names)) => {
                result_json = Some(json);
                names
            }
            Err(message) => return filter_refused(services, caller, &Refusal::invalid(message)),
        },
        None => {
            return filter_refused(
                services,
                caller,
                &Refusal::invalid("the request has neither `names` nor `result`"),
            );
        }
    };
    let mut response = FilterListResponse::default();
    let mut first_id = None;
    for name in &names {
        // Evaluated exactly as using the entry would be, with no arguments.
        let allowed = match use_call(use_method, name) {
            Some(call) => {
                let req = request_for(&call, &request.server, &identity, &extra);
                let outcome = services
                    .engine
                    .decide_with(Interface::Grpc, &req, &caller.meta);
                response.policy_generation = outcome.decision.generation;
                first_id.get_or_insert(outcome.decision_id);
                outcome.decision.allow
            }
            None => false,
        };
        if allowed {
            response.allowed.push(name.clone());
        } else {
            response.denied.push(name.clone());
        }
    }
    if let Some(mut json) = result_json {
        let denied: std::collections::HashSet<&str> =
            response.denied.iter().map(String::as_str).collect();
        if let Some(entries) = list_array_mut(&mut json, array) {
            entries.retain(|e| {
                e.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|n| !denied.contains(n))
            });
        }
        response.result = serde_json::to_vec(&json).unwrap_or_default();
    }
    response.decision_id = first_id.unwrap_or_else(crate::authz::new_decision_id);
    if response.policy_generation == 0 {
        response.policy_generation = generation();
    }
    response
}

/// The call that uses a list entry, validated like any MCP message.
fn use_call(method: &str, name: &str) -> Option<McpCall> {
    if method == "resources/read" && name.contains(['{', '}']) {
        // A URI template of `resources/templates/list`: decided as the template.
        return McpCall::on_template(method, name).ok();
    }
    let params = if method == "resources/read" {
        json!({ "uri": name })
    } else {
        json!({ "name": name })
    };
    let body = serde_json::to_vec(
        &json!({ "jsonrpc": "2.0", "id": 0, "method": method, "params": params }),
    )
    .ok()?;
    parse_body(&body).ok()?.calls.into_iter().next()
}

/// Parse a list result (the `result` object or a whole JSON-RPC response) and read
/// its entries' names; entries without a name are dropped later.
fn list_entries(bytes: &[u8], array: &str, key: &str) -> Result<(Value, Vec<String>), String> {
    let mut json: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("the list result is not JSON: {e}"))?;
    let Some(entries) = list_array_mut(&mut json, array) else {
        return Err(format!("the list result has no `{array}` array"));
    };
    let names = entries
        .iter()
        .filter_map(|e| e.get(key).and_then(Value::as_str).map(str::to_owned))
        .collect();
    Ok((json, names))
}

fn list_array_mut<'a>(json: &'a mut Value, array: &str) -> Option<&'a mut Vec<Value>> {
    let holder: &mut Map<String, Value> = json.as_object_mut()?;
    if holder.contains_key("result") && !holder.contains_key(array) {
        return holder.get_mut("result")?.get_mut(array)?.as_array_mut();
    }
    holder.get_mut(array)?.as_array_mut()
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
