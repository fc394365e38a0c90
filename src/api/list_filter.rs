//! One list filtered: each entry decided as using it would be ([`Engine::listed`]),
//! on one snapshot, with one decision log record for the whole list. The gateway's
//! `FilterList` and Envoy's ext_proc both filter through [`ListJob`], so a list is
//! shown the same whichever path it takes.
//!
//! A client lists the same tools again and again (the MCP SDKs list before calls),
//! so the answer for a whole list is kept ([`ListCache`]): keyed by everything its
//! decisions read — the snapshot generation, the method, the server, the whole
//! identity, the caller's extra context and every entry name — and bounded and
//! timed like the decision cache (`cache.*`). A hit decides a 200-entry list in one
//! lookup instead of 200 requests built and decided.

use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use siphasher::sip128::{Hasher128, SipHasher13};

use serde_json::{Map, Value};

use super::mcp_check::request_for;
use super::services::Services;
use crate::authz::{CacheSettings, Decision, DecisionMeta, Engine, Interface, Reason, ReasonKind};
use crate::identity::Identity;
use crate::mcp::lists::{ListKind, ListResult};
use crate::mcp::{Kind, action};
use crate::policy::Snapshot;
use crate::telemetry::{DecisionRecord, ListRecord, RecordedRequest, Telemetry};

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
    result: Option<ListResult>,
    snapshot: Arc<Snapshot>,
    started: Instant,
    /// A dry run: every entry is shown, the hidden ones named in `would_deny`.
    dry_run: bool,
    /// The decision that let the list call through, if another interface made it.
    authorized_by: Option<String>,
    /// Where whole answers are kept.
    cache: &'e ListCache,
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
            result: input.result,
            snapshot: services.engine.snapshot(),
            started,
            dry_run: services.enforced(false),
            authorized_by: input.authorized_by,
            cache: &services.lists,
        }
    }

    /// Whether each entry is shown: unless every use of it would be denied, its
    /// arguments unknown ([`Engine::listed`]); the whole answer from the cache when
    /// the same list was decided for the same caller on this snapshot.
    pub fn decide(&self) -> Vec<bool> {
        let key = self.cache.key(self);
        if let Some(known) = key.and_then(|k| self.cache.get(k)) {
            return known.to_vec();
        }
        let allowed = self.decide_each();
        if let Some(k) = key {
            self.cache.insert(k, &allowed);
        }
        allowed
    }

    /// [`ListJob::decide`] entry by entry (the calls are built only here: a cached
    /// answer needs none). An entry that no request can use (a URI without a normal
    /// form, say) is hidden: nobody may use it.
    fn decide_each(&self) -> Vec<bool> {
        self.names
            .iter()
            .map(|name| match self.kind.use_call(name) {
                Some(call) => {
                    let request = request_for(&call, &self.server, &self.identity, &self.extra);
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
                request: Arc::new(RecordedRequest {
                    user: self.identity.user.as_deref().map(|u| Kind::User.uid(u)),
                    application: self
                        .identity
                        .application
                        .as_deref()
                        .map(|a| Kind::Application.uid(a)),
                    server: Some(server.clone()),
                    action: Some(action(self.kind.method)),
                    resource: Some(server),
                    arguments: None,
                    input: None,
                }),
                decision: Arc::new(decision),
                latency: self.started.elapsed(),
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

/// Whole lists' answers, by everything their decisions read.
#[derive(Clone)]
pub struct ListCache {
    entries: Option<moka::sync::Cache<u128, Arc<[bool]>>>,
    keys: (u64, u64),
}

impl std::fmt::Debug for ListCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListCache")
            .field("enabled", &self.entries.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for ListCache {
    fn default() -> Self {
        Self::new(&CacheSettings::default())
    }
}

impl ListCache {
    /// A cache bounded and timed like the decision cache: at most
    /// `cache.max_entries` entry answers in all (a list weighs its length), none
    /// when the decision cache is off.
    pub fn new(settings: &CacheSettings) -> Self {
        let random = std::collections::hash_map::RandomState::new();
        let entries = settings.enabled.then(|| {
            moka::sync::Cache::builder()
                .max_capacity(settings.max_entries)
                .weigher(|_: &u128, v: &Arc<[bool]>| {
                    u32::try_from(v.len()).unwrap_or(u32::MAX).max(1)
                })
                .time_to_live(settings.ttl)
                .build()
        });
        Self {
            entries,
            keys: (random.hash_one(1u8), random.hash_one(2u8)),
        }
    }

    /// The key of `job`'s answer: every input of its decisions (none without a cache).
    fn key(&self, job: &ListJob<'_>) -> Option<u128> {
        self.entries.as_ref()?;
        let mut h = SipHasher13::new_with_keys(self.keys.0, self.keys.1);
        job.snapshot.generation.hash(&mut h);
        job.kind.method.hash(&mut h);
        job.server.hash(&mut h);
        let i = &job.identity;
        (&i.user, &i.application, &i.groups, &i.scopes).hash(&mut h);
        (&i.issuer, &i.spiffe_id).hash(&mut h);
        // JSON text: claims and context hash by their content (`Value` is not `Hash`).
        serde_json::to_string(&i.claims)
            .unwrap_or_default()
            .hash(&mut h);
        serde_json::to_string(&job.extra)
            .unwrap_or_default()
            .hash(&mut h);
        job.names.hash(&mut h);
        Some(h.finish128().as_u128())
    }

    fn get(&self, key: u128) -> Option<Arc<[bool]>> {
        self.entries.as_ref()?.get(&key)
    }

    fn insert(&self, key: u128, allowed: &[bool]) {
        if let Some(entries) = &self.entries {
            entries.insert(key, allowed.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::services;
    use crate::mcp::lists::ListKind;

    fn identity(user: &str, groups: &[&str], scopes: &[&str]) -> Identity {
        Identity {
            user: Some(user.to_owned()),
            application: Some("corpassist".to_owned()),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            issuer: Some("https://idp.example".to_owned()),
            ..Identity::default()
        }
    }

    fn input(identity: Identity) -> ListInput {
        ListInput {
            kind: ListKind::of("tools/list").expect("a list method"),
            server: "docs".to_owned(),
            identity,
            extra: Map::new(),
            names: [
                "search_documents",
                "get_document",
                "delete_document",
                "refund",
            ]
            .map(str::to_owned)
            .to_vec(),
            result: None,
            authorized_by: None,
        }
    }

    /// Decide `second` after `first` was decided (and cached): its answer must be
    /// its own, as deciding entry by entry gives it.
    fn decided_after(
        services: &Services,
        first: ListInput,
        second: ListInput,
    ) -> (Vec<bool>, Vec<bool>) {
        let meta = DecisionMeta::default();
        let a = ListJob::new(services, &meta, Interface::Grpc, first).decide();
        let job = ListJob::new(services, &meta, Interface::Grpc, second);
        let b = job.decide();
        assert_eq!(b, job.decide_each(), "the second list got another's answer");
        (a, b)
    }

    /// Every input of a list's decisions is in its cache key: for each input, two
    /// lists that differ only there and are shown differently never share an answer.
    #[tokio::test]
    async fn a_cached_answer_is_only_ever_the_same_lists_answer() {
        let services = services().await;
        let with_app = |app: &str, i: Identity| Identity {
            application: Some(app.to_owned()),
            ..i
        };
        let pairs = [
            (
                "user",
                input(identity("alice", &[], &[])),
                input(identity("mallory", &[], &[])),
            ),
            (
                "groups",
                input(identity("zed", &["engineering"], &[])),
                input(identity("zed", &[], &[])),
            ),
            (
                "application",
                input(with_app("summarizer", identity("alice", &[], &[]))),
                input(identity("alice", &[], &[])),
            ),
            (
                "server",
                input(identity("alice", &[], &[])),
                ListInput {
                    server: "projects".to_owned(),
                    ..input(identity("alice", &[], &[]))
                },
            ),
            (
                "names",
                input(identity("alice", &[], &[])),
                ListInput {
                    names: vec!["delete_document".to_owned(), "search_documents".to_owned()],
                    ..input(identity("alice", &[], &[]))
                },
            ),
        ];
        for (what, first, second) in pairs {
            let (a, b) = decided_after(&services, first, second);
            assert_ne!(
                a, b,
                "{what}: the two lists must be shown differently to test the key"
            );
        }
    }

    #[tokio::test]
    async fn no_cache_when_the_decision_cache_is_off() {
        let off = ListCache::new(&CacheSettings {
            enabled: false,
            ..CacheSettings::default()
        });
        let services = Services {
            lists: off,
            ..services().await
        };
        let meta = DecisionMeta::default();
        let job = ListJob::new(
            &services,
            &meta,
            Interface::Grpc,
            input(identity("alice", &[], &[])),
        );
        assert!(services.lists.key(&job).is_none());
        assert_eq!(job.decide(), job.decide_each());
    }
}
