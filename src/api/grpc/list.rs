//! `FilterList`: each entry decided as using it would be ([`ListJob`]), on one
//! snapshot, off the async workers, with one decision log record for the whole list.

use std::sync::Arc;

use tonic::Status;

use super::caller::{Caller, CredentialProblem, credentials};
use super::{refuse_call, untrusted};
use crate::api::list_filter::{ListInput, ListJob};
use crate::api::mcp_check::{off_workers, resolve_for};
use crate::api::pbjson::struct_to_json;
use crate::api::proto::v1::{FilterListRequest, FilterListResponse, filter_list_request};
use crate::api::refusal::Refusal;
use crate::api::services::Services;
use crate::authz::{DecisionMeta, Engine, Interface};
use crate::config::DenyDetail;
use crate::identity::Identity;
use crate::mcp::lists::{ListKind, read_list_result};

/// A list refused before any policy was asked: logged as a deny, answered with
/// the refusal's kind, JSON-RPC error and challenge.
fn filter_refused(engine: &Engine, meta: &DecisionMeta, refusal: &Refusal) -> FilterListResponse {
    let outcome = refusal.record(engine, &engine.snapshot(), Interface::Grpc, meta);
    // A list is refused only before any policy is asked, never `Forbidden`:
    // `decisions.deny_detail` does not change what it says.
    let deny = refusal.gateway_deny(DenyDetail::default(), &outcome.decision_id);
    FilterListResponse {
        decision_id: outcome.decision_id,
        policy_generation: outcome.decision.generation,
        error: Some(deny.error),
        deny_kind: deny.kind as i32,
        www_authenticate: deny.www_authenticate,
        ..FilterListResponse::default()
    }
}

pub(super) async fn filter_list(
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
    let resource = services.resource_server(&request.server);
    let creds = match credentials(request.identity.as_ref(), &caller, resource) {
        Ok(c) => c,
        Err(CredentialProblem::Untrusted(e)) => return Err(untrusted(engine, meta, &e)),
        Err(CredentialProblem::Refused(r)) => return Ok(filter_refused(engine, meta, &r)),
    };
    let identity = match resolve_for(&services, creds, &request.server).await {
        Ok(i) => i,
        Err(e) => {
            return Ok(filter_refused(
                engine,
                meta,
                &Refusal::unauthenticated(&e, resource),
            ));
        }
    };
    let meta = caller.meta.clone();
    off_workers(move || {
        let engine = &services.engine;
        let input = match list_input(kind, request, identity, max) {
            Ok(input) => input,
            Err(ListRefusal::Invalid(message)) => {
                return Ok(filter_refused(engine, &meta, &Refusal::invalid(message)));
            }
            Err(ListRefusal::TooMany(entries)) => {
                return Err(too_many_entries(engine, &meta, entries, max));
            }
        };
        let job = ListJob::new(&services, &meta, Interface::Grpc, input);
        let allowed = job.decide();
        let filtered = job.finish(&allowed);
        Ok(FilterListResponse {
            allowed: filtered.allowed,
            denied: filtered.denied,
            result: filtered.result,
            decision_id: filtered.decision_id,
            policy_generation: filtered.generation,
            dry_run: filtered.dry_run,
            would_deny: filtered.would_deny,
            ..FilterListResponse::default()
        })
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

/// The list of a `FilterList` request, read.
fn list_input(
    kind: ListKind,
    request: FilterListRequest,
    identity: Identity,
    max: usize,
) -> Result<ListInput, ListRefusal> {
    let refuse = |message: String| Err(ListRefusal::Invalid(message));
    let (names, result) = match request.list {
        Some(filter_list_request::List::Names(n)) => (n.names, None),
        Some(filter_list_request::List::Result(bytes)) => match read_list_result(&bytes, kind) {
            Ok(r) => (r.names().to_vec(), Some(r)),
            Err(message) => return refuse(message),
        },
        None => return refuse("the request has neither `names` nor `result`".into()),
    };
    if names.len() > max {
        return Err(ListRefusal::TooMany(names.len()));
    }
    Ok(ListInput {
        kind,
        server: request.server,
        identity,
        extra: request
            .context
            .as_ref()
            .map(struct_to_json)
            .unwrap_or_default(),
        names,
        result,
        authorized_by: None,
    })
}
