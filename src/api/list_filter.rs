//! One list filtered: each entry decided as using it would be ([`Engine::listed`]),
//! on one snapshot, with one decision log record for the whole list. The gateway's
//! `FilterList` and Envoy's ext_proc both filter through [`ListJob`], so a list is
//! shown the same whichever path it takes.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde_json::{Map, Value};

use super::mcp_check::request_for;
use super::services::Services;
use crate::authz::{Decision, DecisionMeta, Engine, Interface, Reason, ReasonKind};
use crate::identity::Identity;
use crate::mcp::jsonrpc::McpCall;
use crate::mcp::lists::{ListKind, ListResult};
use crate::mcp::{Kind, action};
use crate::policy::Snapshot;
use crate::telemetry::{DecisionRecord, ListRecord, Telemetry};

/// A list to decide: its entries read, one snapshot to decide them on.
pub struct ListJob<'e> {
    engine: &'e Engine,
    telemetry: &'e Telemetry,
    interface: Interface,
    meta: &'e DecisionMeta,
    kind: ListKind,
    server: String,
    identity: Identity,
    extra: Map<String, Value>,
    names: Vec<String>,
    calls: Vec<Option<McpCall>>,
    result: Option<ListResult>,
    snapshot: Arc<Snapshot>,
    started: Instant,
    /// A dry run: every entry is shown, the hidden ones named in `would_deny`.
    dry_run: bool,
    /// The decision that let the list call through, if another interface made it.
    authorized_by: Option<String>,
}

/// What to list, for whom.
pub struct ListInput {
    /// The list method.
    pub kind: ListKind,
    /// The MCP server listing.
    pub server: String,
    /// Who lists.
    pub identity: Identity,
    /// Extra context attributes of the caller.
    pub extra: Map<String, Value>,
    /// The names (or URIs) of the entries, in order.
    pub names: Vec<String>,
    /// The whole result they were read from, to rewrite, if any.
    pub result: Option<ListResult>,
    /// The decision that let the list call through, if another interface made it.
    pub authorized_by: Option<String>,
}

/// A list filtered.
#[derive(Debug, Default)]
pub struct Filtered {
    /// The id of the list's one decision log record.
    pub decision_id: String,
    /// The policy generation that decided.
    pub generation: u64,
    /// The entries shown, in order (in a dry run, every entry).
    pub allowed: Vec<String>,
    /// The entries hidden (none in a dry run).
    pub denied: Vec<String>,
    /// In a dry run, the entries the policies hide.
    pub would_deny: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The result with the hidden entries removed (empty without a result).
    pub result: Vec<u8>,
}

impl<'e> ListJob<'e> {
    /// The list of `input`, decided by `interface` on the current snapshot.
    pub fn new(
        services: &'e Services,
        meta: &'e DecisionMeta,
        interface: Interface,
        input: ListInput,
    ) -> Self {
        let started = Instant::now();
        // An entry that no request can use (a URI without a normal form, say) is
        // hidden: nobody may use it.
        let calls = input
            .names
            .iter()
            .map(|name| input.kind.use_call(name))
            .collect();
        Self {
            engine: &services.engine,
            telemetry: &services.telemetry,
            interface,
            meta,
            kind: input.kind,
            server: input.server,
            identity: input.identity,
            extra: input.extra,
            names: input.names,
            calls,
            result: input.result,
            snapshot: services.engine.snapshot(),
            started,
            dry_run: services.enforced(false),
            authorized_by: input.authorized_by,
        }
    }

    /// Whether each entry is shown: unless every use of it would be denied, its
    /// arguments unknown ([`Engine::listed`]).
    pub fn decide(&self) -> Vec<bool> {
        self.calls
            .iter()
            .map(|call| match call {
                Some(call) => {
                    let request = request_for(call, &self.server, &self.identity, &self.extra);
                    self.engine.listed(&self.snapshot, &request)
                }
                None => false,
            })
            .collect()
    }

    /// The list filtered by `allowed`, and its one decision log record.
    pub fn finish(self, allowed: &[bool]) -> Filtered {
        let mut out = Filtered {
            decision_id: crate::authz::new_decision_id(),
            generation: self.snapshot.generation,
            dry_run: self.dry_run,
            ..Filtered::default()
        };
        for (name, ok) in self.names.iter().zip(allowed) {
            if *ok {
                out.allowed.push(name.clone());
            } else if self.dry_run {
                out.allowed.push(name.clone());
                out.would_deny.push(name.clone());
            } else {
                out.denied.push(name.clone());
            }
        }
        let shown: Vec<bool> = allowed.iter().map(|a| *a || self.dry_run).collect();
        if let Some(result) = self.result {
            out.result = result.filtered(self.kind, &shown);
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
                decision_id: out.decision_id.clone(),
                time: SystemTime::now(),
                interface: self.interface,
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
            denied: if self.dry_run {
                out.would_deny.clone()
            } else {
                out.denied.clone()
            },
            authorized_by: self.authorized_by,
        });
        out
    }
}
