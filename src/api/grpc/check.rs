//! `Check` and `BatchCheck`: a check's MCP messages read (a JSON-RPC body, or the
//! parsed fields turned into the same message), decided, and answered.

use serde_json::{Map, Value};
use tonic::Status;

use super::caller::Who;
use super::{refuse_call, refused};
use std::sync::Arc;

use crate::api::mcp_check::{CallOutcome, Deciding, Verdict, decide_calls};
use crate::api::pbjson::struct_to_json;
use crate::api::proto::v1::{
    self as pb, CheckRequest, CheckResponse, DenyKind, Semantic, check_request,
};
use crate::api::refusal::{Refusal, challenge_for};
use crate::authz::{Decision, DecisionMeta, Engine, Interface, Role};
use crate::config::{DenyDetail, ResourceServer, ResourceServers};
use crate::identity::Identity;
use crate::mcp::jsonrpc::{McpCall, McpHeaders, check_headers, parse_body, request_message};
use crate::policy::Snapshot;

/// A check whose identity is proven and whose messages are parsed.
pub(super) struct ReadyCheck {
    identity: Identity,
    /// The server's protected-resource settings, for the step-up challenge.
    resource: Option<Arc<ResourceServer>>,
    server: String,
    pub(super) calls: Vec<McpCall>,
    /// Whether the messages came as a JSON-RPC batch (an array).
    batch: bool,
    extra: Map<String, Value>,
}

/// Parse the messages of a check. A malformed message is reported before
/// credentials that did not verify.
pub(super) fn parse_check(
    request: CheckRequest,
    who: Who,
    servers: &ResourceServers,
) -> Result<ReadyCheck, Refusal> {
    if let Who::Refused(r) = who {
        return Err(r);
    }
    let (calls, batch) = calls_of(&request)?;
    let identity = match who {
        Who::Known(i) => i,
        Who::Failed(r) | Who::Refused(r) => return Err(r),
    };
    let extra = request
        .context
        .as_ref()
        .map(struct_to_json)
        .unwrap_or_default();
    Ok(ReadyCheck {
        identity,
        resource: servers.get(&request.server).cloned(),
        server: request.server,
        calls,
        batch,
        extra,
    })
}

/// The MCP messages of a check request, and whether they came as a batch.
fn calls_of(request: &CheckRequest) -> Result<(Vec<McpCall>, bool), Refusal> {
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
            Ok((message.calls, message.batch))
        }
        Some(check_request::Message::Mcp(m)) => {
            let body = message_from_fields(m)?;
            parse_body(&body)
                .map(|m| (m.calls, m.batch))
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

/// Decide every message of a ready check on `snapshot` (a batch's checks share one).
pub(super) fn decide_ready(
    engine: &Engine,
    snapshot: &Snapshot,
    meta: &DecisionMeta,
    ready: ReadyCheck,
    detail: DenyDetail,
) -> CheckResponse {
    let batch = ready.batch;
    let on = Deciding {
        engine,
        snapshot,
        interface: Interface::Grpc,
        meta,
    };
    let calls = decide_calls(
        on,
        &ready.identity,
        &ready.server,
        ready.calls,
        &ready.extra,
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
            snapshot,
            meta,
            &Refusal::invalid("the request holds no message"),
            detail,
        );
    };
    let decision = &deciding.outcome.decision;
    let decision_id = &deciding.outcome.decision_id;
    let deny = (!allowed).then(|| {
        let refusal = Refusal::forbidden(decision.reason.clone());
        // A batch gets one error, not the array a server answers a batch with:
        // never answered as if a tool did not exist.
        let refusal = if !batch {
            refusal.of_call(&deciding.call)
        } else {
            refusal
        };
        let refusal = match engine.step_up_scope(snapshot, &deciding.request, decision) {
            Some(scope) => refusal
                .with_step_up(challenge_for(ready.resource.as_deref()).insufficient_scope(&scope)),
            None => refusal,
        };
        refusal.gateway_deny(detail, decision_id)
    });
    // What a client may be shown: a deny says what its error says, unless the
    // setting shows the full reason.
    let reason = match &deny {
        Some(d) if detail != DenyDetail::Full => d.error.message.clone(),
        _ => decision.reason.to_string(),
    };
    CheckResponse {
        allowed,
        decision_id: decision_id.clone(),
        reason,
        evaluations: evaluations(decision),
        deny_kind: deny.as_ref().map_or(DenyKind::Unspecified, |d| d.kind) as i32,
        www_authenticate: deny
            .as_ref()
            .map(|d| d.www_authenticate.clone())
            .unwrap_or_default(),
        error: deny.map(|d| d.error),
        policy_generation: decision.generation,
        calls: calls.iter().map(call_decision).collect(),
        user: identity.user.clone().unwrap_or_default(),
        application: identity.application.clone().unwrap_or_default(),
        dry_run: false,
        decided_allowed: allowed,
    }
}

/// Decide the checks of a batch, in order, up to where `semantic` stops. Every
/// message is parsed first: more than `max` messages in all refuses the call.
#[expect(
    clippy::too_many_arguments,
    reason = "the batch's settings, each taken from the services before leaving the async workers"
)]
pub(super) fn decide_batch(
    engine: &Engine,
    servers: &ResourceServers,
    meta: &DecisionMeta,
    pending: Vec<(CheckRequest, Who)>,
    semantic: Semantic,
    max: usize,
    dry_run: bool,
    detail: DenyDetail,
) -> Result<Vec<CheckResponse>, Status> {
    let parsed: Vec<Result<ReadyCheck, Refusal>> = pending
        .into_iter()
        .map(|(check, who)| parse_check(check, who, servers))
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
    // Every check of the batch is decided on one snapshot.
    let snapshot = engine.snapshot();
    let mut results = Vec::with_capacity(parsed.len());
    for check in parsed {
        let result = match check {
            Ok(ready) => decide_ready(engine, &snapshot, meta, ready, detail),
            Err(refusal) => refused(engine, &snapshot, meta, &refusal, detail),
        };
        // The batch stops where the answers say, and a dry run answers allow.
        let answered = result.allowed || dry_run;
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !answered,
            Semantic::PermitOnFirstPermit => answered,
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
