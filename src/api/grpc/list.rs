//! `FilterList`: each entry decided as using it would be, on one snapshot, off the
//! async workers, with one decision log record for the whole list.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value};
use tonic::Status;

use super::caller::{Caller, CredentialProblem, credentials};
use super::{refuse_call, untrusted};
use crate::api::mcp_check::{off_workers, request_for, resolve};
use crate::api::pbjson::struct_to_json;
use crate::api::proto::v1::{FilterListRequest, FilterListResponse, filter_list_request};
use crate::api::refusal::Refusal;
use crate::api::services::Services;
use crate::authz::{Decision, DecisionMeta, Engine, Interface, Reason, ReasonKind};
use crate::config::DenyDetail;
use crate::identity::Identity;
use crate::mcp::jsonrpc::McpCall;
use crate::mcp::lists::{ListKind, ListResult, read_list_result};
use crate::mcp::{Kind, action};
use crate::telemetry::{DecisionRecord, ListRecord, Telemetry};

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
    /// A dry run: every entry is shown, the hidden ones named in `would_deny`.
    dry_run: bool,
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
            dry_run: services.enforced(false),
        })
    }

    /// Whether entry `i` is shown: unless every use of it would be denied, its
    /// arguments unknown ([`Engine::listed`]).
    fn decide(&self, i: usize) -> bool {
        let Some(Some(call)) = self.calls.get(i) else {
            return false;
        };
        let request = request_for(call, &self.server, &self.identity, &self.extra);
        self.engine.listed(&self.snapshot, &request)
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
            } else if self.dry_run {
                response.allowed.push(name.clone());
                response.would_deny.push(name.clone());
            } else {
                response.denied.push(name.clone());
            }
        }
        response.dry_run = self.dry_run;
        let shown: Vec<bool> = allowed.iter().map(|a| *a || self.dry_run).collect();
        if let Some(result) = self.result {
            response.result = result.filtered(self.kind, &shown);
        }
        let entries = self.names.len();
        let shown = allowed.iter().filter(|a| **a).count();
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
            policy_digest: self.snapshot.digests.content.clone(),
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
                server_source: self.meta.server_source,
            },
            method: self.kind.method.to_owned(),
            entries,
            denied: response.denied.clone(),
        });
        response
    }
}
