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
//!
//! The service and the refusals every method shares are here; who calls (metadata,
//! credentials, identities) in `caller`, `Check` and `BatchCheck` in `check`,
//! `FilterList` in `list`.

mod caller;
mod check;
mod list;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use self::caller::{Resolved, caller, prove};
use self::check::{decide_batch, decide_ready, parse_check};
use self::list::filter_list;
use super::mcp_check::{Assertion, CALLER_TOKEN_HEADER, UntrustedAssertion, off_workers};
use super::proto::v1::{
    BatchCheckRequest, BatchCheckResponse, CheckRequest, CheckResponse, DenyKind,
    FilterListRequest, FilterListResponse, Semantic, authorizer_server::Authorizer,
};
use super::refusal::{Refusal, RefusalKind};
use super::services::{Ready, Services};
use crate::authz::{DecisionMeta, Engine, Interface, Reason, ReasonKind};
use crate::config::DenyDetail;
use crate::policy::Snapshot;

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

#[tonic::async_trait]
impl Authorizer for GatewayApi {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<Response<CheckResponse>, Status> {
        let services = Arc::clone(self.services()?);
        let caller = caller(&request, &services);
        let span = request_span("mcp_authz.v1.Authorizer/Check", &caller.meta);
        let request = request.into_inner();
        let response = async {
            let who = prove(&services, &caller, &request, None).await?;
            let ready = match parse_check(request, who, &services.resource_servers) {
                Ok(ready) => ready,
                Err(refusal) => {
                    let snapshot = services.engine.snapshot();
                    return Ok(refused(
                        &services.engine,
                        &snapshot,
                        &caller.meta,
                        &refusal,
                        services.deny_detail,
                    ));
                }
            };
            let snapshot = services.engine.snapshot();
            if ready.calls.len() <= 1 {
                return Ok(decide_ready(
                    &services.engine,
                    &snapshot,
                    &caller.meta,
                    ready,
                    services.deny_detail,
                ));
            }
            // A JSON-RPC batch: many decisions, off the async workers.
            let engine = services.engine.clone();
            let meta = caller.meta.clone();
            let detail = services.deny_detail;
            off_workers(move || decide_ready(&engine, &snapshot, &meta, ready, detail))
                .await
                .ok_or_else(|| Status::from(Refusal::internal("the request could not be decided")))
        }
        .instrument(span.clone())
        .await?;
        span.record("decision_id", response.decision_id.as_str());
        Ok(Response::new(dry_run(&services, response)))
    }

    async fn batch_check(
        &self,
        request: Request<BatchCheckRequest>,
    ) -> Result<Response<BatchCheckResponse>, Status> {
        let services = Arc::clone(self.services()?);
        let caller = caller(&request, &services);
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
            let dry = services.enforced(false);
            let detail = services.deny_detail;
            let servers = services.resource_servers.clone();
            let results = off_workers(move || {
                decide_batch(
                    &engine, &servers, &meta, pending, semantic, max, dry, detail,
                )
            })
            .await
            .ok_or_else(|| Status::from(Refusal::internal("the batch could not be decided")))??;
            let results = results.into_iter().map(|r| dry_run(&services, r)).collect();
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
        let caller = caller(&request, &services);
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
/// id is recorded when known. Never a token, never the request itself. Exported
/// over OTLP (when on) as a child of the caller's span.
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
    crate::telemetry::otlp::set_caller_parent(&span, meta.trace.as_ref());
    span
}

/// The answer a dry run gives for `response` (decided and logged as it says): allowed,
/// with what was decided in `decided_allowed`; outside a dry run, `response` as it is.
fn dry_run(services: &Services, mut response: CheckResponse) -> CheckResponse {
    response.decided_allowed = response.allowed;
    if services.enforced(false) {
        response.dry_run = true;
        response.allowed = true;
        response.error = None;
        response.deny_kind = DenyKind::Unspecified as i32;
        response.www_authenticate.clear();
    }
    response
}

/// Refuse the whole call: logged and counted as one deny, whose id is in the
/// status's `x-mcp-authz-decision-id` metadata.
fn refuse_call(engine: &Engine, meta: &DecisionMeta, refusal: Refusal) -> Status {
    let outcome = refusal.record(engine, &engine.snapshot(), Interface::Grpc, meta);
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
fn refused(
    engine: &Engine,
    snapshot: &Snapshot,
    meta: &DecisionMeta,
    refusal: &Refusal,
    detail: DenyDetail,
) -> CheckResponse {
    let outcome = refusal.record(engine, snapshot, Interface::Grpc, meta);
    let deny = refusal.gateway_deny(detail, &outcome.decision_id);
    CheckResponse {
        allowed: false,
        decision_id: outcome.decision_id,
        policy_generation: outcome.decision.generation,
        reason: deny.error.message.clone(),
        error: Some(deny.error),
        deny_kind: deny.kind as i32,
        www_authenticate: deny.www_authenticate,
        ..CheckResponse::default()
    }
}
