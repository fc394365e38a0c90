//! The gateway's gRPC API (`mcp_authz.v1.Authorizer`): an adapter from our
//! protobuf messages to decision requests and back.
//!
//! # Refusals
//!
//! A decision the gateway can forward is an answer, never a gRPC error: a deny, a
//! malformed message (`DENY_KIND_INVALID_REQUEST`) and credentials that do not
//! verify (`DENY_KIND_UNAUTHENTICATED`) all come back as a response with a
//! JSON-RPC error. A call the gateway itself got wrong is a gRPC error instead,
//! before any decision, logged as one deny, with the decision id in the
//! `x-mcp-authz-decision-id` trailing metadata:
//!
//! - `PERMISSION_DENIED`: an identity or SPIFFE ID asserted (`identity.verified`,
//!   `identity.spiffe_id`) by a caller that did not present the caller secret
//!   (see [`super::mcp_check::admit`]), in any check of the call;
//! - `INVALID_ARGUMENT`: more checks (or MCP messages in all of them) than
//!   `grpc.max_batch_checks` in a `BatchCheck`, more entries than
//!   `grpc.max_list_entries` in a `FilterList`.
//!
//! # Lists
//!
//! `FilterList` decides each entry as using it would be decided (`tools/call`
//! with no arguments, ...), all on one policy snapshot, off the async workers,
//! and writes one decision log record for the whole list. A raw result is read
//! strictly (see `read_list_result`): what comes back is exactly what was sent,
//! less the hidden entries, or a refusal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use prost::Message as _;
use serde_json::{Map, Value, json};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::mcp_check::{
    Asserted, Assertion, CALLER_TOKEN_HEADER, CallOutcome, CallerTrust, Credentials,
    UntrustedAssertion, Verdict, admit, decide_calls, decision_meta, off_workers, request_for,
    resolve,
};
use super::pbjson::struct_to_json;
use super::proto::v1::{
    self as pb, BatchCheckRequest, BatchCheckResponse, CheckRequest, CheckResponse, DenyKind,
    FilterListRequest, FilterListResponse, Semantic, authorizer_server::Authorizer, check_request,
    filter_list_request,
};
use super::refusal::{Refusal, RefusalKind};
use super::services::{Ready, Services};
use crate::authz::{Decision, DecisionMeta, Engine, Interface, Reason, ReasonKind, Role};
use crate::identity::{AuthnError, Identity, TrustedIdentity, bearer_token_from_header};
use crate::mcp::jsonrpc::{McpCall, McpHeaders, check_headers, parse_body};
use crate::mcp::{Kind, action};
use crate::telemetry::{DecisionRecord, ListRecord, Telemetry};

/// Metadata a trusted caller sends to have its asserted identities honoured.
pub const CALLER_TOKEN_METADATA: &str = CALLER_TOKEN_HEADER;

/// Metadata of a refused call: the id of the deny it was logged as.
pub const DECISION_ID_METADATA: &str = "x-mcp-authz-decision-id";

/// The `mcp_authz.v1.Authorizer` service.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    ready: Ready,
}

impl GatewayApi {
    /// The service, answering once `ready` is, with the limits of its services.
    pub fn new(ready: Ready) -> Self {
        Self { ready }
    }

    fn services(&self) -> Result<&Arc<Services>, Status> {
        self.ready
            .get()
            .ok_or_else(|| Refusal::unavailable().into())
    }
}

/// Who the call's metadata says is calling.
struct Caller {
    trust: CallerTrust,
    authorization: Option<String>,
    meta: DecisionMeta,
}

fn caller(metadata: &MetadataMap, services: &Services) -> Caller {
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    Caller {
        trust: CallerTrust::of(
            services,
            metadata.get(CALLER_TOKEN_METADATA).map(|v| v.as_bytes()),
        ),
        authorization: text("authorization").map(str::to_owned),
        meta: decision_meta(text("traceparent"), text("x-request-id")),
    }
}

#[tonic::async_trait]
impl Authorizer for GatewayApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let services = Arc::clone(self.services()?);
        let caller = caller(request.metadata(), &services);
        let span = request_span("mcp_authz.v1.Authorizer/Check", &caller.meta);
        let request = request.into_inner();
        let response = async {
            let who = prove(&services, &caller, &request, None).await?;
            let ready = match parse_check(request, who) {
                Ok(ready) => ready,
                Err(refusal) => return Ok(refused(&services.engine, &caller.meta, &refusal)),
            };
            if ready.calls.len() <= 1 {
                return Ok(decide_ready(&services.engine, &caller.meta, ready));
            }
            // A JSON-RPC batch: many decisions, off the async workers.
            let engine = services.engine.clone();
            let meta = caller.meta.clone();
            off_workers(move || decide_ready(&engine, &meta, ready))
                .await
                .ok_or_else(|| Status::from(Refusal::internal("the request could not be decided")))
        }
        .instrument(span.clone())
        .await?;
        span.record("decision_id", response.decision_id.as_str());
        Ok(Response::new(response))
    }

    async fn batch_check(
        &self,
        request: Request<BatchCheckRequest>,
    ) -> Result<Response<BatchCheckResponse>, Status> {
        let services = Arc::clone(self.services()?);
        let caller = caller(request.metadata(), &services);
        let span = request_span("mcp_authz.v1.Authorizer/BatchCheck", &caller.meta);
        let max = services.grpc.max_batch_checks;
        let batch = request.into_inner();
        async move {
            if batch.checks.len() > max {
                return Err(refuse_call(
                    &services.engine,
                    &caller.meta,
                    Refusal::too_large(format!(
                        "the batch holds {} checks; the limit is {max} (`grpc.max_batch_checks`)",
                        batch.checks.len()
                    )),
                ));
            }
            let semantic = Semantic::try_from(batch.semantic).unwrap_or(Semantic::ExecuteAll);
            // Who asks, for every check, before any decision: an untrusted
            // assertion anywhere refuses the whole call.
            let mut resolved = Resolved::default();
            let mut pending = Vec::with_capacity(batch.checks.len());
            for check in batch.checks {
                let known = resolved.0.len();
                let who = prove(&services, &caller, &check, Some(&mut resolved)).await?;
                pending.push((check, who));
                if resolved.0.len() > known {
                    // Verifying many different tokens is work too: let others run between.
                    tokio::task::yield_now().await;
                }
            }
            let engine = services.engine.clone();
            let meta = caller.meta.clone();
            let results = off_workers(move || decide_batch(&engine, &meta, pending, semantic, max))
                .await
                .ok_or_else(|| {
                    Status::from(Refusal::internal("the batch could not be decided"))
                })??;
            Ok(Response::new(BatchCheckResponse { results }))
        }
        .instrument(span)
        .await
    }

    async fn filter_list(
        &self,
        request: Request<FilterListRequest>,
    ) -> Result<Response<FilterListResponse>, Status> {
        let services = Arc::clone(self.services()?);
        let caller = caller(request.metadata(), &services);
        let span = request_span("mcp_authz.v1.Authorizer/FilterList", &caller.meta);
        let max = services.grpc.max_list_entries;
        let request = request.into_inner();
        let response = filter_list(services, caller, request, max)
            .instrument(span.clone())
            .await?;
        span.record("decision_id", response.decision_id.as_str());
        Ok(Response::new(response))
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

/// Refuse the whole call: logged and counted as one deny, whose id is in the
/// status's `x-mcp-authz-decision-id` metadata.
fn refuse_call(engine: &Engine, meta: &DecisionMeta, refusal: Refusal) -> Status {
    let outcome = refusal.record(engine, Interface::Grpc, meta);
    let mut status = Status::from(refusal);
    if let Ok(id) = MetadataValue::try_from(outcome.decision_id.as_str()) {
        status.metadata_mut().insert(DECISION_ID_METADATA, id);
    }
    status
}

/// The status refusing an assertion from an untrusted caller.
fn untrusted(engine: &Engine, meta: &DecisionMeta, e: &UntrustedAssertion) -> Status {
    let field = match e.0 {
        Assertion::SpiffeId => "identity.spiffe_id",
        Assertion::Identity => "identity.verified",
    };
    let reason = Reason::new(ReasonKind::Rejected, e.to_string());
    refuse_call(
        engine,
        meta,
        Refusal::new(RefusalKind::Forbidden(reason), format!("`{field}`: {e}")),
    )
}

/// A check refused before any policy was asked: logged as a deny, answered with
/// the refusal's kind, JSON-RPC error and challenge.
fn refused(engine: &Engine, meta: &DecisionMeta, refusal: &Refusal) -> CheckResponse {
    let outcome = refusal.record(engine, Interface::Grpc, meta);
    let deny = refusal.gateway_deny();
    CheckResponse {
        allowed: false,
        decision_id: outcome.decision_id,
        policy_generation: outcome.decision.generation,
        reason: refusal.message().to_owned(),
        error: Some(deny.error),
        deny_kind: deny.kind as i32,
        www_authenticate: deny.www_authenticate,
        ..CheckResponse::default()
    }
}

/// Why the credentials of a request cannot be used.
enum CredentialProblem {
    /// An assertion from an untrusted caller: the whole call is refused.
    Untrusted(UntrustedAssertion),
    /// A malformed `authorization` metadata: this request is refused.
    Refused(Refusal),
}

/// The credentials of a request: the identity message (its assertions admitted by
/// the one rule), else the call's `authorization` metadata for the token.
fn credentials<'a>(
    identity: Option<&'a pb::Identity>,
    caller: &'a Caller,
) -> Result<Credentials<'a>, CredentialProblem> {
    let non_empty = |s: &'a str| (!s.is_empty()).then_some(s);
    let mut bearer_token = None;
    let mut asserted = Asserted::default();
    if let Some(id) = identity {
        bearer_token = non_empty(&id.bearer_token);
        asserted.spiffe_id = non_empty(&id.spiffe_id);
        if let Some(v) = &id.verified
            && (!v.user.is_empty() || !v.application.is_empty() || !v.groups.is_empty())
        {
            asserted.identity = Some(TrustedIdentity {
                user: non_empty(&v.user).map(str::to_owned),
                application: non_empty(&v.application).map(str::to_owned),
                groups: v.groups.clone(),
            });
        }
    }
    let admitted = admit(asserted, caller.trust).map_err(CredentialProblem::Untrusted)?;
    if bearer_token.is_none()
        && let Some(header) = &caller.authorization
    {
        bearer_token = Some(
            bearer_token_from_header(header)
                .map_err(|e| CredentialProblem::Refused(Refusal::unauthenticated(&e)))?,
        );
    }
    Ok(Credentials::admitted(bearer_token, admitted))
}

/// Identities already resolved in this call, by their `Identity` message: a batch
/// usually names one identity for all its checks.
#[derive(Default)]
struct Resolved(HashMap<Vec<u8>, Result<Identity, AuthnError>>);

/// Who asks, for one check.
#[derive(Debug)]
enum Who {
    /// Proven.
    Known(Identity),
    /// The check is refused before its message is read (no server, a malformed
    /// `authorization`).
    Refused(Refusal),
    /// The credentials did not verify: reported after a malformed message.
    Failed(AuthnError),
}

/// Prove who asks, for one check (`Err` refuses the whole call).
async fn prove(
    services: &Services,
    caller: &Caller,
    request: &CheckRequest,
    resolved: Option<&mut Resolved>,
) -> Result<Who, Status> {
    if request.server.is_empty() {
        return Ok(Who::Refused(Refusal::invalid("`server` is empty")));
    }
    let creds = match credentials(request.identity.as_ref(), caller) {
        Ok(c) => c,
        Err(CredentialProblem::Untrusted(e)) => {
            return Err(untrusted(&services.engine, &caller.meta, &e));
        }
        Err(CredentialProblem::Refused(r)) => return Ok(Who::Refused(r)),
    };
    let identity = match resolved {
        None => resolve(&services.resolver, creds).await,
        Some(resolved) => {
            let key = request
                .identity
                .as_ref()
                .map(|i| i.encode_to_vec())
                .unwrap_or_default();
            match resolved.0.get(&key) {
                Some(known) => known.clone(),
                None => {
                    let fresh = resolve(&services.resolver, creds).await;
                    resolved.0.insert(key, fresh.clone());
                    fresh
                }
            }
        }
    };
    Ok(match identity {
        Ok(i) => Who::Known(i),
        Err(e) => Who::Failed(e),
    })
}

/// A check whose identity is proven and whose messages are parsed.
struct ReadyCheck {
    identity: Identity,
    server: String,
    calls: Vec<McpCall>,
    extra: Map<String, Value>,
}

/// Parse the messages of a check. A malformed message is reported before
/// credentials that did not verify.
fn parse_check(request: CheckRequest, who: Who) -> Result<ReadyCheck, Refusal> {
    if let Who::Refused(r) = who {
        return Err(r);
    }
    let calls = calls_of(&request)?;
    let identity = match who {
        Who::Known(i) => i,
        Who::Failed(e) => return Err(Refusal::unauthenticated(&e)),
        Who::Refused(r) => return Err(r),
    };
    let extra = request
        .context
        .as_ref()
        .map(struct_to_json)
        .unwrap_or_default();
    Ok(ReadyCheck {
        identity,
        server: request.server,
        calls,
        extra,
    })
}

/// The MCP messages of a check request.
fn calls_of(request: &CheckRequest) -> Result<Vec<McpCall>, Refusal> {
    match &request.message {
        Some(check_request::Message::Jsonrpc(body)) => {
            let message = parse_body(body).map_err(|e| Refusal::from(&e))?;
            let headers = McpHeaders::from_pairs(
                request
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|e| Refusal::from(&e))?;
            check_headers(&message, &headers).map_err(|e| Refusal::from(&e))?;
            Ok(message.calls)
        }
        Some(check_request::Message::Mcp(m)) => {
            let body = message_from_fields(m)?;
            parse_body(&body)
                .map(|m| m.calls)
                .map_err(|e| Refusal::from(&e))
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

/// Decide every message of a ready check.
fn decide_ready(engine: &Engine, meta: &DecisionMeta, ready: ReadyCheck) -> CheckResponse {
    let calls = decide_calls(
        engine,
        Interface::Grpc,
        &ready.identity,
        &ready.server,
        ready.calls,
        &ready.extra,
        meta,
    );
    let verdict = Verdict::Decided {
        identity: Box::new(ready.identity),
        calls,
    };
    let allowed = verdict.allowed();
    let (Some(deciding), Verdict::Decided { identity, calls }) = (verdict.deciding(), &verdict)
    else {
        return refused(
            engine,
            meta,
            &Refusal::invalid("the request holds no message"),
        );
    };
    let decision = &deciding.outcome.decision;
    let deny = (!allowed).then(|| Refusal::forbidden(decision.reason.clone()).gateway_deny());
    CheckResponse {
        allowed,
        decision_id: deciding.outcome.decision_id.clone(),
        reason: decision.reason.to_string(),
        evaluations: evaluations(decision),
        deny_kind: deny.as_ref().map_or(DenyKind::Unspecified, |d| d.kind) as i32,
        error: deny.map(|d| d.error),
        www_authenticate: String::new(),
        policy_generation: decision.generation,
        calls: calls.iter().map(call_decision).collect(),
        user: identity.user.clone().unwrap_or_default(),
        application: identity.application.clone().unwrap_or_default(),
    }
}

/// Decide the checks of a batch, in order, up to where `semantic` stops. Every
/// message is parsed first: more than `max` messages in all refuses the call.
fn decide_batch(
    engine: &Engine,
    meta: &DecisionMeta,
    pending: Vec<(CheckRequest, Who)>,
    semantic: Semantic,
    max: usize,
) -> Result<Vec<CheckResponse>, Status> {
    let parsed: Vec<Result<ReadyCheck, Refusal>> = pending
        .into_iter()
        .map(|(check, who)| parse_check(check, who))
        .collect();
    let messages: usize = parsed
        .iter()
        .map(|p| p.as_ref().map_or(0, |r| r.calls.len()))
        .sum();
    if messages > max {
        return Err(refuse_call(
            engine,
            meta,
            Refusal::too_large(format!(
                "the batch holds {messages} MCP messages; the limit is {max} (`grpc.max_batch_checks`)"
            )),
        ));
    }
    let mut results = Vec::with_capacity(parsed.len());
    for check in parsed {
        let result = match check {
            Ok(ready) => decide_ready(engine, meta, ready),
            Err(refusal) => refused(engine, meta, &refusal),
        };
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
    Ok(results)
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
        reason: c.outcome.decision.reason.to_string(),
        evaluations: evaluations(&c.outcome.decision),
    }
}

/// A list method: the array of its result, the key naming an entry, and the
/// method that uses an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ListKind {
    method: &'static str,
    array: &'static str,
    key: &'static str,
    use_method: &'static str,
}

const LIST_KINDS: [ListKind; 4] = [
    ListKind {
        method: "tools/list",
        array: "tools",
        key: "name",
        use_method: "tools/call",
    },
    ListKind {
        method: "prompts/list",
        array: "prompts",
        key: "name",
        use_method: "prompts/get",
    },
    ListKind {
        method: "resources/list",
        array: "resources",
        key: "uri",
        use_method: "resources/read",
    },
    ListKind {
        method: "resources/templates/list",
        array: "resourceTemplates",
        key: "uriTemplate",
        use_method: "resources/read",
    },
];

impl ListKind {
    fn of(method: &str) -> Option<Self> {
        LIST_KINDS.into_iter().find(|k| k.method == method)
    }
}

/// A list refused before any policy was asked: logged as a deny, answered with
/// the refusal's kind, JSON-RPC error and challenge.
fn filter_refused(engine: &Engine, meta: &DecisionMeta, refusal: &Refusal) -> FilterListResponse {
    let outcome = refusal.record(engine, Interface::Grpc, meta);
    let deny = refusal.gateway_deny();
    FilterListResponse {
        decision_id: outcome.decision_id,
        policy_generation: outcome.decision.generation,
        error: Some(deny.error),
        deny_kind: deny.kind as i32,
        www_authenticate: deny.www_authenticate,
        ..FilterListResponse::default()
    }
}

async fn filter_list(
    services: Arc<Services>,
    caller: Caller,
    request: FilterListRequest,
    max: usize,
) -> Result<FilterListResponse, Status> {
    let engine = &services.engine;
    let meta = &caller.meta;
    let Some(kind) = ListKind::of(&request.method) else {
        return Ok(filter_refused(
            engine,
            meta,
            &Refusal::invalid(format!("`{}` is not a list method", shown(&request.method))),
        ));
    };
    if request.server.is_empty() {
        return Ok(filter_refused(
            engine,
            meta,
            &Refusal::invalid("`server` is empty"),
        ));
    }
    if let Some(filter_list_request::List::Names(n)) = &request.list
        && n.names.len() > max
    {
        return Err(too_many_entries(engine, meta, n.names.len(), max));
    }
    let creds = match credentials(request.identity.as_ref(), &caller) {
        Ok(c) => c,
        Err(CredentialProblem::Untrusted(e)) => return Err(untrusted(engine, meta, &e)),
        Err(CredentialProblem::Refused(r)) => return Ok(filter_refused(engine, meta, &r)),
    };
    let identity = match resolve(&services.resolver, creds).await {
        Ok(i) => i,
        Err(e) => {
            return Ok(filter_refused(engine, meta, &Refusal::unauthenticated(&e)));
        }
    };
    let meta = caller.meta.clone();
    off_workers(move || {
        let engine = &services.engine;
        let job = match ListJob::new(&services, &meta, kind, request, identity, max) {
            Ok(job) => job,
            Err(ListRefusal::Invalid(message)) => {
                return Ok(filter_refused(engine, &meta, &Refusal::invalid(message)));
            }
            Err(ListRefusal::TooMany(entries)) => {
                return Err(too_many_entries(engine, &meta, entries, max));
            }
        };
        let allowed: Vec<bool> = (0..job.calls.len()).map(|i| job.decide(i)).collect();
        Ok(job.finish(allowed))
    })
    .await
    .ok_or_else(|| Status::from(Refusal::internal("the list could not be decided")))?
}

fn too_many_entries(engine: &Engine, meta: &DecisionMeta, entries: usize, max: usize) -> Status {
    refuse_call(
        engine,
        meta,
        Refusal::too_large(format!(
            "the list holds {entries} entries; the limit is {max} (`grpc.max_list_entries`)"
        )),
    )
}

/// Why a list is refused once read.
enum ListRefusal {
    /// Malformed: answered with `DENY_KIND_INVALID_REQUEST`.
    Invalid(String),
    /// More entries than the cap: `INVALID_ARGUMENT`.
    TooMany(usize),
}

/// A list to decide: its entries read and validated, one snapshot to decide them on.
struct ListJob<'e> {
    engine: &'e Engine,
    telemetry: &'e Telemetry,
    meta: &'e DecisionMeta,
    kind: ListKind,
    server: String,
    identity: Identity,
    extra: Map<String, Value>,
    names: Vec<String>,
    calls: Vec<Option<McpCall>>,
    result: Option<ListResult>,
    snapshot: Arc<crate::policy::Snapshot>,
    started: Instant,
}

impl<'e> ListJob<'e> {
    /// Read the list.
    fn new(
        services: &'e Services,
        meta: &'e DecisionMeta,
        kind: ListKind,
        request: FilterListRequest,
        identity: Identity,
        max: usize,
    ) -> Result<Self, ListRefusal> {
        let started = Instant::now();
        let refuse = |message: String| Err(ListRefusal::Invalid(message));
        let (names, result) = match request.list {
            Some(filter_list_request::List::Names(n)) => (n.names, None),
            Some(filter_list_request::List::Result(bytes)) => {
                match read_list_result(&bytes, kind) {
                    Ok(r) => (r.names.clone(), Some(r)),
                    Err(message) => return refuse(message),
                }
            }
            None => return refuse("the request has neither `names` nor `result`".into()),
        };
        if names.len() > max {
            return Err(ListRefusal::TooMany(names.len()));
        }
        // An entry that no request can use (a URI without a normal form, say) is
        // hidden: nobody may use it.
        let calls = names
            .iter()
            .map(|name| use_call(kind.use_method, name).ok())
            .collect();
        Ok(Self {
            engine: &services.engine,
            telemetry: &services.telemetry,
            meta,
            kind,
            server: request.server,
            identity,
            extra: request
                .context
                .as_ref()
                .map(struct_to_json)
                .unwrap_or_default(),
            names,
            calls,
            result,
            snapshot: services.engine.snapshot(),
            started,
        })
    }

    /// Whether entry `i` is shown: decided exactly as using it would be, with no
    /// arguments.
    fn decide(&self, i: usize) -> bool {
        let Some(Some(call)) = self.calls.get(i) else {
            return false;
        };
        let request = request_for(call, &self.server, &self.identity, &self.extra);
        self.engine.evaluate(&self.snapshot, &request).allow
    }

    /// The answer, and the one decision log record of the list.
    fn finish(self, allowed: Vec<bool>) -> FilterListResponse {
        let mut response = FilterListResponse {
            decision_id: crate::authz::new_decision_id(),
            policy_generation: self.snapshot.generation,
            ..FilterListResponse::default()
        };
        for (name, ok) in self.names.iter().zip(&allowed) {
            if *ok {
                response.allowed.push(name.clone());
            } else {
                response.denied.push(name.clone());
            }
        }
        if let Some(result) = self.result {
            response.result = result.filtered(self.kind, &allowed);
        }
        let entries = self.names.len();
        let shown = response.allowed.len();
        let server = Kind::Server.uid(&self.server);
        let allow = entries == 0 || shown > 0;
        let decision = Decision {
            allow,
            reason: Reason::new(
                if allow {
                    ReasonKind::Allowed
                } else {
                    ReasonKind::Denied
                },
                format!("{shown} of {entries} entries allowed"),
            ),
            evaluations: Vec::new(),
            generation: self.snapshot.generation,
        };
        self.telemetry.record_list(ListRecord {
            record: DecisionRecord {
                decision_id: response.decision_id.clone(),
                time: SystemTime::now(),
                interface: Interface::Grpc,
                user: self.identity.user.as_deref().map(|u| Kind::User.uid(u)),
                application: self
                    .identity
                    .application
                    .as_deref()
                    .map(|a| Kind::Application.uid(a)),
                server: Some(server.clone()),
                action: Some(action(self.kind.method)),
                resource: Some(server),
                decision: Arc::new(decision),
                latency: self.started.elapsed(),
                arguments: None,
                trace: self.meta.trace,
                request_id: self.meta.request_id.clone(),
            },
            method: self.kind.method.to_owned(),
            entries,
            denied: response.denied.clone(),
        });
        response
    }
}

/// The call that uses a list entry, validated like any MCP message.
fn use_call(method: &str, name: &str) -> Result<McpCall, String> {
    if method == "resources/read" && name.contains(['{', '}']) {
        // A URI template of `resources/templates/list`: decided as the template.
        return McpCall::on_template(method, name).map_err(|e| e.to_string());
    }
    let params = if method == "resources/read" {
        json!({ "uri": name })
    } else {
        json!({ "name": name })
    };
    let body = json!({ "jsonrpc": "2.0", "id": 0, "method": method, "params": params });
    let message = parse_body(body.to_string().as_bytes()).map_err(|e| e.to_string())?;
    // One message in, one call out.
    message
        .calls
        .into_iter()
        .next()
        .ok_or_else(|| "no message".to_owned())
}

/// A list result read by [`read_list_result`].
#[derive(Debug)]
struct ListResult {
    /// The JSON as sent.
    json: Value,
    /// Whether it is a whole JSON-RPC response (the list is in `result`).
    in_response: bool,
    /// The name of each entry, in order.
    names: Vec<String>,
}

impl ListResult {
    /// The JSON with the entries not `allowed` removed.
    fn filtered(mut self, kind: ListKind, allowed: &[bool]) -> Vec<u8> {
        let holder = if self.in_response {
            self.json.get_mut("result")
        } else {
            Some(&mut self.json)
        };
        if let Some(entries) = holder
            .and_then(|h| h.get_mut(kind.array))
            .and_then(Value::as_array_mut)
        {
            let mut index = 0;
            entries.retain(|_| {
                let keep = allowed.get(index).copied().unwrap_or(false);
                index += 1;
                keep
            });
        }
        serde_json::to_vec(&self.json).unwrap_or_default()
    }
}

/// The members of a JSON-RPC response carrying a list result.
const RESPONSE_MEMBERS: [&str; 3] = ["jsonrpc", "id", "result"];
/// Names a list result may not use for any member but its own array, in any
/// case: another list, or a piece of a JSON-RPC envelope.
const DECOY_MEMBERS: [&str; 8] = [
    "tools",
    "prompts",
    "resources",
    "resourceTemplates",
    "result",
    "error",
    "jsonrpc",
    "id",
];

/// Read a list result strictly: the `result` object of `kind`'s method, or a
/// whole JSON-RPC success response carrying it. Refused:
///
/// - what is not JSON the way the MCP paths read it (duplicate keys, keys of one
///   object that differ only in case, nesting deeper than 64 levels);
/// - a response that is not exactly `jsonrpc` `"2.0"`, an `id` (a string or an
///   integer) and a `result` object: an `error` response, `result` beside `error`,
///   a `tools` array beside `result`;
/// - a result with a member named like another list or a piece of the envelope
///   (`prompts` in a `tools/list` result, `result.result`, `Tools`), in any case,
///   so that no second list rides along unfiltered; a `nextCursor` that is not a
///   string, a `_meta` that is not an object (other members, such as `resultType`
///   or `cacheScope`, are kept as they are);
/// - a list that is not an array of objects each with a string name (`name`, or
///   `uri` / `uriTemplate` for resources and resource templates).
fn read_list_result(bytes: &[u8], kind: ListKind) -> Result<ListResult, String> {
    use crate::mcp::json::{JsonFault, fold, parse};
    let text = std::str::from_utf8(bytes).map_err(|_| "the list result is not UTF-8".to_owned())?;
    let json = parse(text, crate::mcp::jsonrpc::MAX_DEPTH).map_err(|fault| match fault {
        JsonFault::Syntax(m) => format!("the list result is not JSON: {m}"),
        JsonFault::TooDeep => format!(
            "the list result nests arrays and objects deeper than {} levels",
            crate::mcp::jsonrpc::MAX_DEPTH
        ),
        JsonFault::DuplicateKey(k) => {
            format!(
                "the list result has the key `{}` twice in one object",
                shown(&k)
            )
        }
        JsonFault::CaseVariantKeys(a, b) => format!(
            "the list result has the keys `{}` and `{}`, which differ only in case",
            shown(&a),
            shown(&b)
        ),
    })?;
    let Value::Object(top) = &json else {
        return Err("the list result is not a JSON object".into());
    };
    let in_response = ["jsonrpc", "id", "result", "error"]
        .iter()
        .any(|k| top.keys().any(|key| fold(key) == *k));
    let result = if in_response {
        if top.contains_key("error") {
            return Err("the list response is an error: it has no list to filter".into());
        }
        if let Some(k) = top.keys().find(|k| !RESPONSE_MEMBERS.contains(&k.as_str())) {
            return Err(format!(
                "the list response has the unexpected member `{}`",
                shown(k)
            ));
        }
        if top.get("jsonrpc") != Some(&json!("2.0")) {
            return Err("the list response's `jsonrpc` is not `\"2.0\"`".into());
        }
        match top.get("id") {
            Some(Value::String(_)) => {}
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
            _ => return Err("the list response's `id` is not a string or an integer".into()),
        }
        match top.get("result") {
            Some(Value::Object(r)) => r,
            _ => return Err("the list response's `result` is not an object".into()),
        }
    } else {
        top
    };
    for (k, v) in result {
        if k == kind.array {
            continue;
        }
        if DECOY_MEMBERS.iter().any(|d| fold(d) == fold(k)) {
            return Err(format!(
                "the `{}` result has the member `{}` beside `{}`: a list result holds one list",
                kind.method,
                shown(k),
                kind.array,
            ));
        }
        let fits = match k.as_str() {
            "nextCursor" => v.is_string(),
            "_meta" => v.is_object(),
            _ => true,
        };
        if !fits {
            return Err(format!(
                "the `{}` result's `{k}` is not a {}",
                kind.method,
                if k == "_meta" {
                    "JSON object"
                } else {
                    "string"
                }
            ));
        }
    }
    let entries = match result.get(kind.array) {
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(format!(
                "the list result's `{}` is not an array",
                kind.array
            ));
        }
        None => return Err(format!("the list result has no `{}` array", kind.array)),
    };
    let mut names = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(format!("entry {i} of `{}` is not an object", kind.array));
        };
        match entry.get(kind.key) {
            Some(Value::String(name)) => names.push(name.clone()),
            Some(_) => {
                return Err(format!(
                    "entry {i} of `{}`: `{}` is not a string",
                    kind.array, kind.key
                ));
            }
            None => {
                return Err(format!(
                    "entry {i} of `{}` has no `{}`",
                    kind.array, kind.key
                ));
            }
        }
    }
    Ok(ListResult {
        json,
        in_response,
        names,
    })
}

/// A caller's text in a message: at most 64 characters, control characters escaped.
fn shown(s: &str) -> String {
    s.chars()
        .take(64)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> ListKind {
        ListKind::of("tools/list").expect("a list method")
    }

    fn read(kind: ListKind, text: &str) -> Result<Vec<String>, String> {
        read_list_result(text.as_bytes(), kind).map(|r| r.names)
    }

    #[test]
    fn plain_results_and_responses_are_read() {
        let ok = r#"{"tools":[{"name":"a","description":"x"},{"name":"b"}],"nextCursor":"c","_meta":{"k":1},"resultType":"complete","cacheScope":"private"}"#;
        assert_eq!(read(tools(), ok), Ok(vec!["a".into(), "b".into()]));
        let response = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{ok}}}"#);
        assert_eq!(read(tools(), &response), Ok(vec!["a".into(), "b".into()]));
        let response = format!(r#"{{"jsonrpc":"2.0","id":"x","result":{ok}}}"#);
        assert!(read(tools(), &response).is_ok());
        assert_eq!(read(tools(), r#"{"tools":[]}"#), Ok(vec![]));
    }

    #[test]
    fn ambiguous_shapes_are_refused() {
        let entry = r#"{"name":"delete_document"}"#;
        for (text, expected) in [
            // A decoy beside the real list, either way round.
            (
                format!(r#"{{"tools":[],"result":{{"tools":[{entry}]}}}}"#),
                "unexpected member `tools`",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"tools":[],"result":{{"tools":[{entry}]}}}}"#),
                "unexpected member `tools`",
            ),
            // Both a result and an error.
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{entry}]}},"error":{{"code":1}}}}"#
                ),
                "is an error",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#.into(),
                "is an error",
            ),
            // Nested result.result.
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"result":{{"tools":[{entry}]}}}}}}"#
                ),
                "the member `result` beside",
            ),
            (
                format!(r#"{{"result":{{"tools":[{entry}]}}}}"#),
                "`jsonrpc` is not",
            ),
            // Duplicate and case-variant keys.
            (format!(r#"{{"tools":[],"tools":[{entry}]}}"#), "twice"),
            (
                format!(r#"{{"tools":[],"Tools":[{entry}]}}"#),
                "differ only in case",
            ),
            (
                r#"{"tools":[{"name":"get_document","NAME":"delete_document"}]}"#.into(),
                "differ only in case",
            ),
            (
                r#"{"tools":[{"name":"get_document","name":"delete_document"}]}"#.into(),
                "twice",
            ),
            // Another list in this one.
            (
                format!(r#"{{"tools":[],"prompts":[{entry}]}}"#),
                "the member `prompts` beside",
            ),
            (
                format!(r#"{{"tools":[],"RESULT":{{"tools":[{entry}]}}}}"#),
                "unexpected member `tools`",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"Result":{{"tools":[{entry}]}}}}"#),
                "unexpected member `Result`",
            ),
            (
                r#"{"tools":[],"resourceTemplates":[{"uriTemplate":"x"}]}"#.into(),
                "the member `resourceTemplates` beside",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"error":{"code":1}}}"#.into(),
                "the member `error` beside",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"TOOLS":[{entry}]}}}}"#),
                "the member `TOOLS` beside",
            ),
            // Entries of the wrong kind, without a name, with a name that is not a string.
            (r#"{"tools":["delete_document"]}"#.into(), "not an object"),
            (r#"{"tools":[[{"name":"x"}]]}"#.into(), "not an object"),
            (r#"{"tools":[{"title":"x"}]}"#.into(), "has no `name`"),
            (r#"{"tools":[{"Name":"x"}]}"#.into(), "has no `name`"),
            (r#"{"tools":[{"name":5}]}"#.into(), "is not a string"),
            (r#"{"tools":[{"name":null}]}"#.into(), "is not a string"),
            (r#"{"tools":[{"name":["x"]}]}"#.into(), "is not a string"),
            // Not a list at all.
            (r#"{"tools":{"name":"x"}}"#.into(), "is not an array"),
            (r#"{"nextCursor":"x"}"#.into(), "has no `tools` array"),
            (r#"{"tools":[],"nextCursor":5}"#.into(), "is not a string"),
            (r#"[{"name":"x"}]"#.into(), "not a JSON object"),
            ("{not json".into(), "not JSON"),
            (
                format!(r#"{{"jsonrpc":"2.0","id":null,"result":{{"tools":[{entry}]}}}}"#),
                "`id`",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":[{entry}]}}"#),
                "`result` is not an object",
            ),
        ] {
            let err = read(tools(), &text).expect_err(&text);
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert!(read_list_result(b"{\"tools\":[\xff]}", tools()).is_err());
    }

    #[test]
    fn every_list_kind_reads_its_own_array_and_key() {
        for (method, ok, decoy) in [
            (
                "prompts/list",
                r#"{"prompts":[{"name":"summarize"}]}"#,
                r#"{"prompts":[],"tools":[{"name":"x"}]}"#,
            ),
            (
                "resources/list",
                r#"{"resources":[{"uri":"docs://a","name":"A"}]}"#,
                r#"{"resources":[{"name":"docs://a"}]}"#,
            ),
            (
                "resources/templates/list",
                r#"{"resourceTemplates":[{"uriTemplate":"docs://{id}","name":"doc"}]}"#,
                r#"{"resourceTemplates":[{"uri":"docs://{id}"}]}"#,
            ),
        ] {
            let kind = ListKind::of(method).expect(method);
            assert_eq!(read(kind, ok).map(|n| n.len()), Ok(1), "{method}");
            assert!(read(kind, decoy).is_err(), "{method}: {decoy}");
        }
    }

    #[test]
    fn filtering_keeps_everything_but_the_hidden_entries() {
        let text = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a","x":[1,{"y":null}]},{"name":"b"},{"name":"c"}],"nextCursor":"n"}}"#;
        let result = read_list_result(text.as_bytes(), tools()).expect("valid");
        let out = result.filtered(tools(), &[true, false, true]);
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            out,
            json!({"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a","x":[1,{"y":null}]},{"name":"c"}],"nextCursor":"n"}})
        );
    }
}
