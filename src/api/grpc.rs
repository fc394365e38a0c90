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
//! strictly ([`crate::mcp::lists`]): what comes back is exactly what was sent,
//! less the hidden entries, or a refusal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use prost::Message as _;
use serde_json::{Map, Value};
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
use crate::mcp::jsonrpc::{McpCall, McpHeaders, check_headers, parse_body, request_message};
use crate::mcp::lists::{ListKind, ListResult, read_list_result};
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
    serde_json::to_vec(&request_message(&m.method, &m.name, Some(arguments)))
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
    let kind = match ListKind::named(&request.method) {
        Ok(kind) => kind,
        Err(message) => return Ok(filter_refused(engine, meta, &Refusal::invalid(message))),
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
                    Ok(r) => (r.names().to_vec(), Some(r)),
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
        let calls = names.iter().map(|name| kind.use_call(name)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{ready, services, token, tools_call};
    use crate::mcp::jsonrpc::INVALID_REQUEST;

    fn check(token: &str, body: &str) -> CheckRequest {
        CheckRequest {
            identity: Some(pb::Identity {
                bearer_token: token.to_owned(),
                ..pb::Identity::default()
            }),
            server: "docs".into(),
            message: Some(check_request::Message::Jsonrpc(body.as_bytes().to_vec())),
            ..CheckRequest::default()
        }
    }

    async fn answer(api: &GatewayApi, request: CheckRequest) -> CheckResponse {
        api.check(Request::new(request))
            .await
            .expect("an answer")
            .into_inner()
    }

    #[tokio::test]
    async fn check_allows_denies_and_refuses_in_the_answer() {
        let api = GatewayApi::new(ready().await);
        let alice = token("alice", "corpassist");

        let allowed = answer(&api, check(&alice, &tools_call("get_document"))).await;
        assert!(allowed.allowed, "{allowed:?}");
        assert_eq!(
            (allowed.user.as_str(), allowed.application.as_str()),
            ("alice", "corpassist")
        );
        assert!(allowed.error.is_none());
        assert_eq!(allowed.deny_kind, DenyKind::Unspecified as i32);

        let denied = answer(&api, check(&alice, &tools_call("delete_document"))).await;
        assert!(!denied.allowed);
        assert_eq!(denied.deny_kind, DenyKind::Forbidden as i32);
        let error = denied.error.expect("a JSON-RPC error");
        assert_eq!(error.code, crate::mcp::jsonrpc::FORBIDDEN_CODE);
        assert_eq!(error.message, format!("forbidden: {}", denied.reason));

        let unauthenticated = answer(&api, check("not-a-token", &tools_call("get_document"))).await;
        assert_eq!(unauthenticated.deny_kind, DenyKind::Unauthenticated as i32);
        assert_eq!(unauthenticated.error.map(|e| e.code), Some(-32001));
        assert!(
            unauthenticated
                .www_authenticate
                .starts_with("Bearer realm=\"mcp-authz\"")
        );
        assert!(!unauthenticated.decision_id.is_empty(), "logged as a deny");

        let mut no_server = check(&alice, &tools_call("get_document"));
        no_server.server.clear();
        let invalid = answer(&api, no_server).await;
        assert_eq!(invalid.deny_kind, DenyKind::InvalidRequest as i32);
        assert_eq!(invalid.reason, "`server` is empty");
        assert_eq!(invalid.error.map(|e| e.code), Some(INVALID_REQUEST));

        let not_json = answer(&api, check(&alice, "{")).await;
        assert_eq!(not_json.deny_kind, DenyKind::InvalidRequest as i32);
        assert_eq!(not_json.error.map(|e| e.code), Some(-32700));
    }

    #[tokio::test]
    async fn whole_calls_are_refused_with_a_status() {
        let status = GatewayApi::new(Ready::new())
            .check(Request::new(CheckRequest::default()))
            .await
            .expect_err("not ready");
        assert_eq!(status.code(), tonic::Code::Unavailable);

        let mut services = services().await;
        services.grpc.max_batch_checks = 1;
        let api = GatewayApi::new(Ready::with(services));
        let alice = token("alice", "corpassist");
        let batch = BatchCheckRequest {
            checks: vec![check(&alice, &tools_call("get_document")); 2],
            ..BatchCheckRequest::default()
        };
        let status = api
            .batch_check(Request::new(batch))
            .await
            .expect_err("too large");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("`grpc.max_batch_checks`"),
            "{status:?}"
        );
        assert!(status.metadata().get(DECISION_ID_METADATA).is_some());

        let mut asserted = check("", &tools_call("get_document"));
        asserted.identity = Some(pb::Identity {
            verified: Some(pb::VerifiedIdentity {
                user: "alice".into(),
                ..pb::VerifiedIdentity::default()
            }),
            ..pb::Identity::default()
        });
        let status = api
            .check(Request::new(asserted))
            .await
            .expect_err("an untrusted assertion");
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert!(
            status
                .message()
                .starts_with("`identity.verified`: an identity asserted")
        );
        assert!(status.metadata().get(DECISION_ID_METADATA).is_some());
    }

    #[tokio::test]
    async fn filter_list_hides_what_would_be_denied() {
        let api = GatewayApi::new(ready().await);
        let request = FilterListRequest {
            identity: Some(pb::Identity {
                bearer_token: token("alice", "corpassist"),
                ..pb::Identity::default()
            }),
            server: "docs".into(),
            method: "tools/list".into(),
            list: Some(filter_list_request::List::Result(
                br#"{"tools":[{"name":"get_document"},{"name":"delete_document"}]}"#.to_vec(),
            )),
            ..FilterListRequest::default()
        };
        let r = api
            .filter_list(Request::new(request.clone()))
            .await
            .expect("an answer")
            .into_inner();
        assert_eq!(
            (r.allowed, r.denied),
            (
                vec!["get_document".to_owned()],
                vec!["delete_document".to_owned()]
            )
        );
        assert_eq!(r.result, br#"{"tools":[{"name":"get_document"}]}"#);

        let not_a_list = FilterListRequest {
            method: "tools/call".into(),
            ..request
        };
        let r = api
            .filter_list(Request::new(not_a_list))
            .await
            .expect("an answer")
            .into_inner();
        assert_eq!(r.deny_kind, DenyKind::InvalidRequest as i32);
        assert_eq!(
            r.error.map(|e| e.message),
            Some("`tools/call` is not a list method".to_owned())
        );
    }
}
