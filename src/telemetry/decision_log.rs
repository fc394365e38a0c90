//! The decision log: one JSON object per line for every decision made through
//! `Engine::decide_for`, written to stdout or a file by a thread of its own.
//!
//! A decision never waits for the log. Records go through a bounded queue; when
//! it is full (the writer is slow or blocked, say a pipe nobody reads) the record
//! is dropped and counted (`mcp_authz_decision_log_records_total{result="dropped"}`).
//! Serialization happens on the writer thread, straight from the record's fields.
//! Under traffic the writer polls the queue (a pause of 2 ms, 4 ms after an empty look, see
//! [`crate::authz::polling`]) rather than sleeping on it, so that queueing a record
//! never has to wake it, and it writes what queued up meanwhile in one `write`; once
//! the queue stayed empty through both pauses it blocks until the next record.
//! So the queue must hold what arrives during the longest pause (4 ms) and the
//! write after it: sized for 5 ms, the default 4,096 holds 800,000 records a second.
//!
//! A record:
//!
//! ```json
//! {"decision_id":"0199...","time":"2026-11-25T10:00:00.123456Z","interface":"authzen",
//!  "decision":"deny","reason":"denied: ...","generation":3,
//!  "policy_digest":"sha256:9f86d0...","server_source":"authority",
//!  "user":"Mcp::User::\"dave\"","application":"Mcp::Application::\"corpassist\"",
//!  "server":"Mcp::Server::\"docs\"","action":"Mcp::Action::\"tools/call\"",
//!  "resource":"Mcp::Tool::\"docs/delete_document\"",
//!  "evaluations":[{"role":"user","principal":"Mcp::User::\"dave\"","allow":true,
//!                  "policies":["employees-use-docs"],"errors":[]}, ...],
//!  "latency_us":41.2,"trace_id":"4bf9...","parent_span_id":"00f0...","request_id":"abc",
//!  "arguments":{"document_id":"x","token":"[REDACTED]"},
//!  "input":{"user":"Mcp::User::\"dave\"", ...,"context":{"arguments":{"document_id":"x","token":"[REDACTED]"}},
//!           "arguments":"redacted","token":{"scopes":["docs.read"],"claims":{}},
//!           "entities":[{"uid":"Mcp::User::\"dave\"","parents":["Mcp::Group::\"engineering\""],"attrs":{}}]}}
//! ```
//!
//! `user`, `application`, `server`, `action` and `resource` are Cedar uids (absent when
//! unknown); `evaluations` holds each principal's verdict, determining policy ids and
//! errors; `trace_id`/`parent_span_id` come from the caller's W3C `traceparent`,
//! `request_id` from its `X-Request-ID` (each absent when not sent). `arguments` (the
//! tool or prompt arguments, `context.arguments`) appear only with
//! `decision_log.include_arguments = true`, and every key that matches a
//! `decision_log.redact` pattern has its value replaced by `"[REDACTED]"` (see
//! [`Redactor`]: normalized names, substrings, any depth).
//!
//! `input` is the request in replayable form, as [`crate::authz::replayable`] writes it:
//! principals, action, resource and server, the request's own `context`, the verified
//! token's `scopes` and `claims`, and the per-request `entities` (a token's groups are
//! there). Its `context.arguments` are the logged ones (redacted as above); when the
//! request had arguments that are not logged, `input.arguments` is `"omitted"`, and when
//! a logged value was redacted it is `"redacted"`: `mcp-authz replay` decides such a
//! record on less than the live decision had, and says so. A record of a request the
//! interface refused before it became one has no `input`.
//!
//! A request that filters a list (gRPC `FilterList`) is one record, not one per
//! entry: the list method on the server (`action` `Mcp::Action::"tools/list"`,
//! `resource` the server), `decision` `deny` only when every entry was hidden, no
//! `evaluations`, and a `list` object ([`ListRecord`]):
//!
//! ```json
//! "list":{"method":"tools/list","entries":4,"allowed":3,"denied":1,"denied_names":["delete_document"]}
//! ```
//!
//! A shadow decision that differs from the live one (see `authz::Shadow`) is a
//! line of its own, marked `"record":"shadow"` (live decision records have no
//! `record` key), after the live decision's record and naming its id:
//!
//! ```json
//! {"record":"shadow","decision_id":"0199...","time":"...","set":"directory","interface":"authzen",
//!  "live":{"decision":"allow","reason":"allowed","policies":["employees-use-docs"],
//!          "generation":3,"digest":"sha256:9f86d0..."},
//!  "shadow":{"decision":"deny","reason":"denied: ...","policies":["no-contractors"],
//!            "generation":1,"digest":"sha256:4e07...","shadow_policies":[]},
//!  "difference":["no-contractors"],
//!  "user":"Mcp::User::\"dave\"","application":"...","server":"...","action":"...","resource":"..."}
//! ```
//!
//! `set` is `directory` (the shadow policy directory) or `annotations` (the live
//! set with its `@shadow` policies enforced: `shadow_policies` names those that
//! made the difference). `policies` are each side's determining policies (every
//! evaluation's), `difference` the policies that made the two differ.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use cedar_policy::EntityUid;
use serde_json::{Map, Value, json};

use super::log_file::LogFile;
use super::trace::TraceContext;
use crate::authz::polling::PollingReceiver;
use crate::authz::replayable::{ArgumentsForm, JsonWriter, Object, Parts, key, read_back};
use crate::authz::{Decision, DecisionRequest, Interface, RequestEntity, TokenFacts};

/// Where the decision log goes and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogConfig {
    /// Whether decisions are logged at all.
    pub enabled: bool,
    /// A file to append to; `None` is stdout.
    pub file: Option<PathBuf>,
    /// Records that may wait for the writer before new ones are dropped.
    pub queue_capacity: usize,
    /// Whether tool and prompt arguments are logged.
    pub include_arguments: bool,
    /// Patterns of argument keys whose values are replaced by `"[REDACTED]"`:
    /// a key matches when its normalized form contains a pattern's (see [`Redactor`]).
    pub redact: Vec<String>,
    /// A dry run (`decisions.dry_run`): every record says `"dry_run": true` (the
    /// caller was answered allow whatever `decision` says).
    pub dry_run: bool,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            file: None,
            queue_capacity: 4096,
            include_arguments: false,
            redact: default_redactions(),
            dry_run: false,
        }
    }
}

/// Redaction patterns unless configured otherwise: a key containing any of these
/// (normalized) is redacted, so `token` covers `access_token`, `X-Refresh-Token` and
/// `idToken`, and `auth` covers `Authorization` and `x_auth`.
pub fn default_redactions() -> Vec<String> {
    [
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "key",
        "credential",
        "auth",
        "cookie",
        "session",
        "signature",
        "private",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The form a key and a pattern are compared in: NFKC, Unicode case folding,
/// and only letters and digits (`-`, `_`, spaces and punctuation removed). So
/// `Api-Key`, `API_KEY`, `apiKey`, `ａｐｉ＿ｋｅｙ` and `api key` are all `apikey`,
/// and `paſſword` (long s) is `password`.
pub fn normalize_key(key: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    // Full case folding, as lower(upper(c)) gives it: `ſ` -> `s`, `ß` -> `ss`,
    // `ﬁ` -> `fi`, the Kelvin sign -> `k`, final sigma -> sigma.
    let folded: String = key
        .nfkc()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect();
    folded.nfkc().filter(|c| c.is_alphanumeric()).collect()
}

/// Replaces the values of sensitive keys: a key is sensitive when its
/// [normalized](normalize_key) form contains the normalized form of a pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    patterns: Vec<String>,
}

impl Redactor {
    /// A redactor for `patterns`; patterns with no letter or digit are ignored
    /// (configuration refuses them).
    pub fn new(patterns: &[String]) -> Self {
        let mut normalized: Vec<String> = patterns
            .iter()
            .map(|p| normalize_key(p))
            .filter(|p| !p.is_empty())
            .collect();
        normalized.sort();
        normalized.dedup();
        Self {
            patterns: normalized,
        }
    }

    /// Whether the value of `key` is redacted.
    pub fn matches(&self, key: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        let key = normalize_key(key);
        self.patterns.iter().any(|p| key.contains(p.as_str()))
    }

    /// `value` with the value of every sensitive key, at any depth (objects in
    /// arrays too), replaced by `"[REDACTED]"`.
    pub fn redact(&self, value: Value) -> Value {
        match value {
            Value::Object(obj) => Value::Object(
                obj.into_iter()
                    .map(|(k, v)| {
                        if self.matches(&k) {
                            (k, Value::String("[REDACTED]".into()))
                        } else {
                            (k, self.redact(v))
                        }
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.redact(v)).collect())
            }
            v => v,
        }
    }
}

/// Everything a record says about one decision. Built on the deciding thread,
/// serialized on the writer thread.
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    /// The decision id.
    pub decision_id: String,
    /// When the decision was made.
    pub time: SystemTime,
    /// The interface it came through.
    pub interface: Interface,
    /// What the record writes of its request: one value for every record of a cached
    /// decision made on one thread ([`DecisionLog::recorded`]).
    pub request: Arc<RecordedRequest>,
    /// The decision.
    pub decision: Arc<Decision>,
    /// Time spent deciding.
    pub latency: Duration,
    /// The caller's trace context.
    pub trace: Option<TraceContext>,
    /// The caller's request id.
    pub request_id: Option<String>,
    /// Where the interface took the MCP server from (Envoy ext_authz), if it chose.
    pub server_source: Option<&'static str>,
}

/// What a decision record writes of its request: the uids, the arguments when they
/// are logged, and what its replayable `input` needs beyond them. Absent fields are
/// not written; a request refused before it became one has none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedRequest {
    /// The user principal.
    pub user: Option<EntityUid>,
    /// The application principal.
    pub application: Option<EntityUid>,
    /// The MCP server.
    pub server: Option<EntityUid>,
    /// The action.
    pub action: Option<EntityUid>,
    /// The resource.
    pub resource: Option<EntityUid>,
    /// `context.arguments`, when arguments are logged (redacted when written).
    pub arguments: Option<Value>,
    /// The rest of the request, for the record's `input` (written when the record also
    /// has an action and a resource).
    pub input: Option<RecordInput>,
}

impl RecordedRequest {
    /// What a record of `request` writes of it, its arguments only when
    /// `include_arguments`.
    pub fn of(request: &DecisionRequest, include_arguments: bool) -> Self {
        Self {
            user: request.user.clone(),
            application: request.application.clone(),
            server: request.server.clone(),
            action: Some(request.action.clone()),
            resource: Some(request.resource.clone()),
            arguments: if include_arguments {
                request.context.get("arguments").cloned()
            } else {
                None
            },
            input: Some(RecordInput::of(request)),
        }
    }

    /// The parts of a record's `input`, its arguments as `logged` (redacted); none
    /// without the input, an action or a resource.
    fn input_parts<'a>(&'a self, logged: Option<&'a Value>) -> Option<Parts<'a>> {
        let (Some(input), Some(action), Some(resource)) =
            (&self.input, &self.action, &self.resource)
        else {
            return None;
        };
        let form = match (&self.arguments, logged) {
            (Some(original), Some(logged)) if original != logged => ArgumentsForm::Redacted,
            (None, _) if input.had_arguments => ArgumentsForm::Omitted,
            _ => ArgumentsForm::Complete,
        };
        Some(Parts {
            user: self.user.as_ref(),
            application: self.application.as_ref(),
            action,
            resource,
            server: self.server.as_ref(),
            context: &input.context,
            arguments: logged,
            form,
            token: input.token.as_ref(),
            entities: &input.entities,
        })
    }
}

/// What a record keeps of its request beyond [`RecordedRequest`]'s uids and arguments,
/// to write its replayable `input`: the request's context (without the arguments,
/// which the record keeps when they are logged), its token facts and its entities.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordInput {
    /// The request's own context, without `arguments`.
    pub context: Map<String, Value>,
    /// Whether the request had arguments.
    pub had_arguments: bool,
    /// The token facts.
    pub token: Option<TokenFacts>,
    /// The per-request entity data.
    pub entities: Vec<RequestEntity>,
}

impl RecordInput {
    /// What a record of `request` keeps of it.
    pub fn of(request: &DecisionRequest) -> Self {
        // The map less `arguments`, the rest in their order: each other entry copied
        // (a context has few), the arguments never (the record keeps them apart, and
        // a copy of the whole map then a removal copied them all to drop them).
        let mut context = Map::new();
        let mut had_arguments = false;
        for (key, value) in &request.context {
            if key == "arguments" {
                had_arguments = true;
            } else {
                context.insert(key.clone(), value.clone());
            }
        }
        Self {
            context,
            had_arguments,
            token: request.token.clone(),
            entities: request.entities.clone(),
        }
    }
}

impl DecisionRecord {
    /// Write this record, with its replayable `input` when its request has one (and an
    /// action and a resource), as one JSON object to `out`: the one layout of a record,
    /// written from its fields without building a JSON value.
    pub fn write(&self, redactor: &Redactor, out: &mut Vec<u8>) -> serde_json::Result<()> {
        self.write_whole(redactor, out, |_| Ok(())).map(drop)
    }

    /// [`DecisionRecord::write`] by the log's writer: the members its decision
    /// determines copied from `kept` when an earlier record of the same decision left
    /// them there, else written, and left there when another record may share them.
    fn write_sharing(
        &self,
        redactor: &Redactor,
        kept: &mut KeptMembers,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        // Only a record with its input: every record of one decision has it or none does
        // (the engine records every decision it makes with its request), and the kept
        // text is the one with it.
        if self.request.input.is_none() {
            return self.write(redactor, out);
        }
        // A decision only this record holds can be in no other record (the decision
        // cache holds those it shares).
        let shared = Arc::strong_count(&self.decision) > 1;
        if let Some(members) = kept.get(&self.decision) {
            let mut w = JsonWriter::new(out);
            let mut m = w.object();
            self.write_own_first(&mut m);
            m.members(&members.decided);
            self.write_own_then(&mut m)?;
            m.members(&members.input);
            m.end();
            return Ok(());
        }
        let marks = self.write_whole(redactor, out, |_| Ok(()))?;
        if shared {
            let text = |(start, end): (usize, usize)| out.get(start..end).unwrap_or_default();
            let members = Members {
                decided: text(marks.decided).into(),
                input: text(marks.input).into(),
            };
            kept.keep(&self.decision, members);
        }
        Ok(())
    }

    /// Write this record whole, then the members `more` writes; where the members its
    /// decision determines are in `out`.
    fn write_whole(
        &self,
        redactor: &Redactor,
        out: &mut Vec<u8>,
        more: impl FnOnce(&mut Object<'_, '_, '_>) -> serde_json::Result<()>,
    ) -> serde_json::Result<Marks> {
        let request = &*self.request;
        let logged = request
            .arguments
            .as_ref()
            .map(|a| redactor.redact(a.clone()));
        let input = request.input_parts(logged.as_ref());
        let mut w = JsonWriter::new(out);
        let mut m = w.object();
        self.write_own_first(&mut m);
        let decided_at = m.position();
        m.str(key!("decision"), self.decision.verdict());
        m.str(key!("reason"), self.decision.reason.as_str());
        m.key(key!("generation")).value(&self.decision.generation)?;
        m.str(key!("policy_digest"), &self.decision.policy_digest);
        for (key, uid) in [
            (key!("user"), &request.user),
            (key!("application"), &request.application),
            (key!("server"), &request.server),
            (key!("action"), &request.action),
            (key!("resource"), &request.resource),
        ] {
            if let Some(uid) = uid {
                m.key(key).uid(uid);
            }
        }
        m.key(key!("evaluations"))
            .value(&self.decision.evaluations)?;
        let decided = (decided_at, m.position());
        self.write_own_then(&mut m)?;
        let input_at = m.position();
        if let Some(args) = &logged {
            m.key(key!("arguments")).value(args)?;
        }
        if let Some(input) = &input {
            input.write(m.key(key!("input")))?;
        }
        let input = (input_at, m.position());
        more(&mut m)?;
        m.end();
        Ok(Marks { decided, input })
    }

    /// The first members of every record, its own: id, time, interface.
    fn write_own_first(&self, m: &mut Object<'_, '_, '_>) {
        m.str(key!("decision_id"), &self.decision_id);
        with_rfc3339(self.time, |time| m.str(key!("time"), time));
        m.str(key!("interface"), self.interface.as_str());
    }

    /// The members of every record, its own, between what its decision determines
    /// and its arguments and input: latency, trace, request id, the server's source.
    fn write_own_then(&self, m: &mut Object<'_, '_, '_>) -> serde_json::Result<()> {
        m.key(key!("latency_us")).value(&self.latency_us())?;
        if let Some(t) = &self.trace {
            m.str(key!("trace_id"), &t.trace_id());
            m.str(key!("parent_span_id"), &t.parent_span_id());
        }
        if let Some(id) = &self.request_id {
            m.str(key!("request_id"), id);
        }
        if let Some(source) = self.server_source {
            m.str(key!("server_source"), source);
        }
        Ok(())
    }

    /// `latency_us`: microseconds, three decimals.
    fn latency_us(&self) -> f64 {
        (self.latency.as_nanos() as f64 / 1000.0 * 1000.0).round() / 1000.0
    }

    /// The JSON object of this record, with `redactor` applied to the arguments: what
    /// [`DecisionRecord::write`] writes, read back.
    pub fn to_json(&self, redactor: &Redactor) -> Value {
        read_back(|text| self.write(redactor, text))
    }
}

/// Where, in a record's text, the members its decision determines are: `decision`
/// to `evaluations`, and `arguments` with `input` (start and end positions).
struct Marks {
    decided: (usize, usize),
    input: (usize, usize),
}

/// Values kept for the latest shared decisions, by decision, `N` at most (then it
/// starts over): what the log keeps per decision on the writer ([`KeptMembers`]) and
/// on each deciding thread ([`DecisionLog::recorded`]).
struct ByDecision<T, const N: usize> {
    /// Each decision held so that its address is not reused while it is kept.
    by_address: std::collections::HashMap<usize, (Arc<Decision>, T), foldhash::fast::RandomState>,
}

impl<T, const N: usize> Default for ByDecision<T, N> {
    fn default() -> Self {
        Self {
            by_address: std::collections::HashMap::default(),
        }
    }
}

impl<T, const N: usize> ByDecision<T, N> {
    /// The value kept for `decision`, if any.
    fn get(&self, decision: &Arc<Decision>) -> Option<&T> {
        self.by_address
            .get(&(Arc::as_ptr(decision) as usize))
            .filter(|(held, _)| Arc::ptr_eq(held, decision))
            .map(|(_, value)| value)
    }

    /// Keep `value` for `decision`.
    fn keep(&mut self, decision: &Arc<Decision>, value: T) {
        if self.by_address.len() >= N {
            self.by_address.clear();
        }
        self.by_address.insert(
            Arc::as_ptr(decision) as usize,
            (Arc::clone(decision), value),
        );
    }

    /// How many values are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_address.len()
    }
}

/// How many decisions' members the log's writer keeps; then it starts over.
const MEMBERS_KEPT: usize = 1024;

/// The members of one decision's records that the decision determines, as text.
struct Members {
    /// `decision` to `evaluations`: the verdict, reason, policies and the request's uids.
    decided: Box<[u8]>,
    /// `arguments` (as redacted) and `input`.
    input: Box<[u8]>,
}

/// The members of decision records that their decision determines, kept by the log's
/// writer for the next record of the same decision (a decision cache hit).
///
/// Every record of one shared [`Decision`] writes these members byte for byte alike:
/// the decision cache shares a decision only among requests of one key, and the key is
/// a digest of every field of the request these members write — the principals, the
/// action, resource and server, the context with its arguments in their order, the
/// token's scopes and claims, the entity data (`authz::cache`, whose test
/// `every_input_changes_the_key` holds it to that) — while the arguments' redaction
/// and whether they are logged are the writer's own, fixed for its life. A decision
/// made outside the cache is recorded once. The records' own members (id, time,
/// interface, latency, trace, request id, the server's source) are written each time.
type KeptMembers = ByDecision<Members, MEMBERS_KEPT>;

/// How many decisions' recorded requests a thread keeps; then it starts over.
const RECORDED_KEPT: usize = 256;

thread_local! {
    /// This thread's recorded requests of its latest cached decisions, each with whether
    /// it holds the arguments: what [`DecisionLog::recorded`] shares among the records
    /// of one decision.
    static RECORDED: std::cell::RefCell<ByDecision<(bool, Arc<RecordedRequest>), RECORDED_KEPT>> =
        std::cell::RefCell::default();
}

/// The one record of a request that filters a list: the common fields (the list
/// method on the server), and what was kept and hidden.
#[derive(Debug, Clone)]
pub struct ListRecord {
    /// The common fields.
    pub record: DecisionRecord,
    /// The list method, e.g. `tools/list`.
    pub method: String,
    /// How many entries the request held.
    pub entries: usize,
    /// The names (or URIs) of the hidden entries, in their order.
    pub denied: Vec<String>,
    /// The decision that let the list call through, when another interface made it
    /// (Envoy's ext_authz, for a list filtered by ext_proc).
    pub authorized_by: Option<String>,
}

impl ListRecord {
    /// Write this record as one JSON object to `out`: the decision record's members,
    /// then `list`.
    pub fn write(&self, redactor: &Redactor, out: &mut Vec<u8>) -> serde_json::Result<()> {
        self.record
            .write_whole(redactor, out, |m| {
                let mut list = m.key(key!("list")).object();
                list.str(key!("method"), &self.method);
                list.key(key!("entries")).value(&self.entries)?;
                list.key(key!("allowed"))
                    .value(&self.entries.saturating_sub(self.denied.len()))?;
                list.key(key!("denied")).value(&self.denied.len())?;
                list.key(key!("denied_names")).value(&self.denied)?;
                if let Some(id) = &self.authorized_by {
                    list.str(key!("authorized_by"), id);
                }
                list.end();
                Ok(())
            })
            .map(drop)
    }

    /// The JSON object of this record: what [`ListRecord::write`] writes, read back.
    pub fn to_json(&self, redactor: &Redactor) -> Value {
        read_back(|text| self.write(redactor, text))
    }
}

/// A shadow decision that differs from the live one: a line of its own.
#[derive(Debug, Clone)]
pub struct ShadowRecord {
    /// The live decision's id.
    pub decision_id: String,
    /// When the shadow decided.
    pub time: SystemTime,
    /// `directory` or `annotations`.
    pub set: &'static str,
    /// The interface the live request came through.
    pub interface: Interface,
    /// The user principal.
    pub user: Option<EntityUid>,
    /// The application principal.
    pub application: Option<EntityUid>,
    /// The MCP server.
    pub server: Option<EntityUid>,
    /// The action.
    pub action: EntityUid,
    /// The resource.
    pub resource: EntityUid,
    /// The live decision.
    pub live: Arc<Decision>,
    /// The shadow's decision.
    pub shadow: Decision,
    /// The policies that made the difference.
    pub difference: Vec<String>,
    /// Of those, the `@shadow` policies.
    pub shadow_policies: Vec<String>,
    /// The caller's trace context.
    pub trace: Option<TraceContext>,
    /// The caller's request id.
    pub request_id: Option<String>,
}

/// A side of a shadow record: its verdict, reason, determining policies and digest.
fn side_json(decision: &Decision) -> Map<String, Value> {
    let mut policies: Vec<&String> = decision
        .evaluations
        .iter()
        .flat_map(|e| &e.policies)
        .collect();
    policies.sort();
    policies.dedup();
    let mut m = Map::new();
    m.insert("decision".into(), json!(decision.verdict()));
    m.insert("reason".into(), json!(decision.reason));
    m.insert("policies".into(), json!(policies));
    m.insert("generation".into(), json!(decision.generation));
    m.insert("digest".into(), json!(&*decision.policy_digest));
    m
}

impl ShadowRecord {
    /// The JSON object of this record.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("record".into(), json!("shadow"));
        m.insert("decision_id".into(), json!(self.decision_id));
        m.insert("time".into(), json!(rfc3339(self.time)));
        m.insert("set".into(), json!(self.set));
        m.insert("interface".into(), json!(self.interface.as_str()));
        m.insert("live".into(), Value::Object(side_json(&self.live)));
        let mut shadow = side_json(&self.shadow);
        shadow.insert("shadow_policies".into(), json!(self.shadow_policies));
        m.insert("shadow".into(), Value::Object(shadow));
        m.insert("difference".into(), json!(self.difference));
        for (key, uid) in [
            ("user", self.user.as_ref()),
            ("application", self.application.as_ref()),
            ("server", self.server.as_ref()),
            ("action", Some(&self.action)),
            ("resource", Some(&self.resource)),
        ] {
            if let Some(uid) = uid {
                m.insert(key.into(), json!(uid.to_string()));
            }
        }
        if let Some(t) = &self.trace {
            m.insert("trace_id".into(), json!(t.trace_id()));
            m.insert("parent_span_id".into(), json!(t.parent_span_id()));
        }
        if let Some(id) = &self.request_id {
            m.insert("request_id".into(), json!(id));
        }
        Value::Object(m)
    }
}

/// What waits in the queue for the writer.
#[derive(Debug)]
enum Queued {
    Decision(DecisionRecord),
    List(Box<ListRecord>),
    Shadow(Box<ShadowRecord>),
}

impl Queued {
    /// Write the record as one JSON object to `out`, through the writer's `kept` members.
    fn write(
        &self,
        redactor: &Redactor,
        kept: &mut KeptMembers,
        out: &mut Vec<u8>,
    ) -> serde_json::Result<()> {
        match self {
            Queued::Decision(r) => r.write_sharing(redactor, kept, out),
            Queued::List(r) => r.write(redactor, out),
            Queued::Shadow(r) => serde_json::to_writer(out, &r.to_json()),
        }
    }
}

/// Counters of the decision log.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Records written.
    pub written: AtomicU64,
    /// Records dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Records lost to a write error.
    pub failed: AtomicU64,
}

/// The sending side of the decision log.
#[derive(Debug)]
pub struct DecisionLog {
    tx: ArcSwapOption<SyncSender<Queued>>,
    stats: Arc<LogStats>,
    include_arguments: bool,
    done: std::sync::Mutex<Option<Receiver<()>>>,
}

impl DecisionLog {
    /// Open the configured output and start the writer thread.
    pub fn open(config: &DecisionLogConfig) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match &config.file {
            Some(path) => Box::new(LogFile::open(path)?),
            None => Box::new(std::io::stdout()),
        };
        Self::with_writer(writer, config)
    }

    /// Start the writer thread on `writer` (tests pass their own).
    pub fn with_writer(
        writer: Box<dyn Write + Send>,
        config: &DecisionLogConfig,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity.max(1));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let stats = Arc::new(LogStats::default());
        let writer_stats = Arc::clone(&stats);
        let redactor = Redactor::new(&config.redact);
        let dry_run = config.dry_run;
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                write_loop(rx, writer, &writer_stats, &redactor, dry_run);
                let _ = done_tx.send(());
            })?;
        Ok(Self {
            tx: ArcSwapOption::from_pointee(tx),
            stats,
            include_arguments: config.include_arguments,
            done: std::sync::Mutex::new(Some(done_rx)),
        })
    }

    /// Queue a record; drop and count it when the queue is full. Never blocks.
    pub fn submit(&self, record: DecisionRecord) {
        self.queue(Queued::Decision(record));
    }

    /// What a record of `request`, decided `decision`, writes of it: built once per
    /// cached decision on each thread, then shared by that thread's later records of it
    /// (a decision cache hit then copies nothing of its request).
    ///
    /// Every request that shares one cached decision writes the same of itself (see
    /// [`KeptMembers`]: the cache key is a digest of every field written here), and
    /// whether the arguments are logged is this log's own. A decision no one else holds
    /// (not cached) is built for and not kept.
    pub fn recorded(
        &self,
        decision: &Arc<Decision>,
        request: &DecisionRequest,
    ) -> Arc<RecordedRequest> {
        let build = || Arc::new(RecordedRequest::of(request, self.include_arguments));
        if Arc::strong_count(decision) == 1 {
            return build();
        }
        RECORDED.with_borrow_mut(|recorded| {
            if let Some((include_arguments, request)) = recorded.get(decision)
                && *include_arguments == self.include_arguments
            {
                return Arc::clone(request);
            }
            let request = build();
            recorded.keep(decision, (self.include_arguments, Arc::clone(&request)));
            request
        })
    }

    /// Queue the one record of a list request, like [`DecisionLog::submit`].
    pub fn submit_list(&self, record: ListRecord) {
        self.queue(Queued::List(Box::new(record)));
    }

    /// Queue the record of a shadow disagreement, like [`DecisionLog::submit`].
    pub fn submit_shadow(&self, record: ShadowRecord) {
        self.queue(Queued::Shadow(Box::new(record)));
    }

    fn queue(&self, record: Queued) {
        let guard = self.tx.load();
        let Some(tx) = guard.as_ref() else {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> &LogStats {
        &self.stats
    }

    /// Stop accepting records and wait up to `timeout` for the queued ones to be
    /// written. Returns whether the writer finished in time (it may be blocked).
    pub fn close(&self, timeout: Duration) -> bool {
        self.tx.store(None);
        let done = self
            .done
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        match done {
            Some(rx) => rx.recv_timeout(timeout).is_ok(),
            None => true,
        }
    }
}

/// The writer's first pause on an empty queue.
const IDLE_MIN: Duration = Duration::from_millis(2);
/// Where its pauses stop doubling: with `IDLE_MIN` at 2 ms it pauses 2 ms, then 4 ms,
/// then blocks (the next pause would reach this). The queue must hold what arrives
/// during the 4 ms pause.
const IDLE_MAX: Duration = Duration::from_millis(5);

fn write_loop(
    rx: Receiver<Queued>,
    writer: Box<dyn Write + Send>,
    stats: &LogStats,
    redactor: &Redactor,
    dry_run: bool,
) {
    // Under traffic the writer polls the queue instead of blocking on it, so that a
    // decision never pays for waking it, and it writes what queued up meanwhile as
    // one block: records are serialized into the buffer, and the buffer goes out in
    // one write when the queue is empty (or the buffer full). Once idle it blocks.
    let mut rx = PollingReceiver::new(rx, IDLE_MIN, IDLE_MAX);
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    let mut line = Vec::with_capacity(1024);
    let mut kept = KeptMembers::default();
    while let Some(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(record) = next {
            line.clear();
            let written = record
                .write(redactor, &mut kept, &mut line)
                .map_err(std::io::Error::from)
                .and_then(|()| {
                    // A dry run: every decision record (an object) ends with `"dry_run":true`.
                    if dry_run && !matches!(record, Queued::Shadow(_)) && line.last() == Some(&b'}')
                    {
                        line.pop();
                        line.extend_from_slice(b",\"dry_run\":true}");
                    }
                    line.push(b'\n');
                    out.write_all(&line)
                });
            count(stats, written);
            next = rx.try_recv();
        }
        // The queue is empty: push what we have out.
        if let Err(e) = out.flush() {
            report_failure(stats, &e);
        }
    }
    let _ = out.flush();
}

fn count(stats: &LogStats, result: std::io::Result<()>) {
    match result {
        Ok(()) => {
            stats.written.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            report_failure(stats, &e);
        }
    }
}

fn report_failure(stats: &LogStats, e: &std::io::Error) {
    let failed = stats.failed.load(Ordering::Relaxed);
    // The first failure, then every thousandth: a broken output must not flood the log.
    if failed <= 1 || failed.is_multiple_of(1000) {
        tracing::error!(error = %e, failed, "cannot write the decision log");
    }
}

/// `time` as RFC 3339 in UTC with microseconds, e.g. `2026-11-25T10:00:00.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    with_rfc3339(time, str::to_owned)
}

/// `f` of [`rfc3339`]'s text of `time`, made on the stack (no allocation) for years
/// 0 to 9999.
fn with_rfc3339<R>(time: SystemTime, f: impl FnOnce(&str) -> R) -> R {
    let d = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let (hh, mm, ss, us) = (rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_micros());
    let year = match u64::try_from(y) {
        Ok(year) if year <= 9999 => year,
        _ => {
            return f(&format!(
                "{y:04}-{m:02}-{day:02}T{hh:02}:{mm:02}:{ss:02}.{us:06}Z"
            ));
        }
    };
    // Digits into a fixed pattern: one record each, so no formatting machinery.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (start, width, value) in [
        (0, 4, year),
        (5, 2, u64::from(m)),
        (8, 2, u64::from(day)),
        (11, 2, hh),
        (14, 2, mm),
        (17, 2, ss),
        (20, 6, u64::from(us)),
    ] {
        let mut value = value;
        for slot in text.iter_mut().skip(start).take(width).rev() {
            // `value % 10` is a digit: the cast cannot truncate.
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // Digits and the pattern's ASCII: always UTF-8.
    f(std::str::from_utf8(&text).unwrap_or_default())
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_record_writes_its_own_decisions_members_whether_kept_or_not() {
        use crate::authz::{Evaluation, Role};
        use std::str::FromStr;
        let request = DecisionRequest::new(
            EntityUid::from_str("Mcp::Action::\"tools/call\"").expect("uid"),
            EntityUid::from_str("Mcp::Tool::\"docs/get_document\"").expect("uid"),
        );
        let evaluation = |principal: &str, policy: &str| Evaluation {
            role: Role::User,
            principal: principal.to_owned(),
            allow: true,
            policies: vec![policy.to_owned()],
            errors: Vec::new(),
            action: None,
            step_up: crate::authz::StepUpHint::default(),
        };
        let template = record_of(&request, false);
        let with = |evaluations: Vec<Evaluation>| {
            let mut record = template.clone();
            record.decision = Arc::new(Decision {
                evaluations,
                ..(*template.decision).clone()
            });
            record
        };
        let a = with(vec![evaluation("Mcp::User::\"a\"", "p-a")]);
        let b = with(vec![
            evaluation("Mcp::User::\"b\"", "p-b"),
            evaluation("Mcp::Application::\"c\"", "p-\"quoted\""),
        ]);
        let mut shares_a = a.clone();
        shares_a.decision_id = "shares a's decision".into();
        let redactor = Redactor::new(&[]);
        // Written many times over, more shared decisions than the writer keeps among them
        // (each held elsewhere too, as the decision cache holds them).
        let mut others = Vec::new();
        for i in 0..(MEMBERS_KEPT + 5) {
            others.push(with(vec![evaluation(&format!("Mcp::User::\"u{i}\""), "p")]));
        }
        let held: Vec<Arc<Decision>> = others.iter().map(|r| Arc::clone(&r.decision)).collect();
        let mut kept = KeptMembers::default();
        for round in 0..3 {
            let records = [&a, &b, &shares_a, &a, &b]
                .into_iter()
                .chain(others.iter().skip(round * 300).take(MEMBERS_KEPT / 2));
            for record in records {
                let mut out = Vec::new();
                record
                    .write_sharing(&redactor, &mut kept, &mut out)
                    .expect("written");
                let written: Value = serde_json::from_slice(&out).expect("one JSON object");
                assert_eq!(
                    written["evaluations"],
                    serde_json::to_value(&record.decision.evaluations).expect("json"),
                );
                assert_eq!(written["decision_id"], json!(record.decision_id));
                assert!(kept.len() <= MEMBERS_KEPT);
            }
        }
        drop(held);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000Z"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123456Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
        let last = SystemTime::UNIX_EPOCH + Duration::from_micros(253_402_300_799_999_999);
        assert_eq!(rfc3339(last), "9999-12-31T23:59:59.999999Z");
        // Past year 9999 the year takes more digits.
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339(later), "10000-01-01T00:00:00.000000Z");
        // The digits written one by one agree with formatting, across the years.
        let mut micros: u64 = 1;
        while micros < 253_402_300_799_999_999 {
            let t = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            let d = Duration::from_micros(micros);
            let rem = d.as_secs() % 86_400;
            let (y, m, day) = civil_from_days(i64::try_from(d.as_secs() / 86_400).unwrap());
            let expected = format!(
                "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                d.subsec_micros()
            );
            assert_eq!(rfc3339(t), expected);
            micros = micros * 3 + 7_654_321;
        }
    }

    #[test]
    fn redaction_reaches_every_depth_and_ignores_case() {
        let v = json!({"Password": "p", "nested": {"token": "t", "keep": 1}, "list": [{"SECRET": "s"}]});
        let r = Redactor::new(&default_redactions()).redact(v);
        assert_eq!(
            r,
            json!({"Password": "[REDACTED]", "nested": {"token": "[REDACTED]", "keep": 1}, "list": [{"SECRET": "[REDACTED]"}]})
        );
    }

    #[test]
    fn keys_are_normalized_before_matching() {
        for (key, normal) in [
            ("Api-Key", "apikey"),
            ("API_KEY", "apikey"),
            ("apiKey", "apikey"),
            ("api key", "apikey"),
            (
                "\u{ff41}\u{ff50}\u{ff49}\u{ff3f}\u{ff4b}\u{ff45}\u{ff59}",
                "apikey",
            ),
            ("pa\u{17f}\u{17f}word", "password"),
            ("PASSWORT\u{df}", "passwortss"),
            ("\u{212a}ey", "key"),
            ("x.auth", "xauth"),
        ] {
            assert_eq!(normalize_key(key), normal, "{key}");
        }
    }

    #[test]
    fn patterns_match_normalized_substrings() {
        let redactor = Redactor::new(&default_redactions());
        for key in [
            "access_token",
            "refreshToken",
            "ID-TOKEN",
            "client_secret",
            "clientSecret",
            "Api-Key",
            "x-api-key",
            "X-Auth",
            "Authorization",
            "db_passwd",
            "user-password",
            "aws_credentials",
            "Set-Cookie",
            "session_id",
            "private_key",
            "to\u{212a}en",
            "pa\u{17f}\u{17f}word",
            "\u{ff34}\u{ff2f}\u{ff2b}\u{ff25}\u{ff2e}",
        ] {
            assert!(redactor.matches(key), "{key}");
        }
        for key in ["query", "document_id", "max_results", "project", "path"] {
            assert!(!redactor.matches(key), "{key}");
        }
        // Patterns are normalized too, and may be configured.
        let custom = Redactor::new(&["Social-Security".to_owned(), "--".to_owned()]);
        assert!(custom.matches("customer_social_security_number"));
        assert!(!custom.matches("access_token"));
        assert!(!Redactor::new(&[]).matches("token"));
    }

    #[test]
    fn every_depth_and_arrays_of_objects() {
        let redactor = Redactor::new(&default_redactions());
        let v = json!({
            "query": "titan",
            "headers": [{"name": "x", "X-Auth": "a"}, {"Cookie": "c"}],
            "deep": {"deeper": [[{"client_secret": "s", "keep": [1, {"accessToken": {"nested": 1}}]}]]},
            "config": {"Api-Key": {"value": "k"}},
        });
        let r = redactor.redact(v);
        assert_eq!(
            r,
            json!({
                "query": "titan",
                "headers": [{"name": "x", "X-Auth": "[REDACTED]"}, {"Cookie": "[REDACTED]"}],
                "deep": {"deeper": [[{"client_secret": "[REDACTED]", "keep": [1, {"accessToken": "[REDACTED]"}]}]]},
                "config": {"Api-Key": "[REDACTED]"},
            })
        );
        let text = r.to_string();
        for secret in ["\"a\"", "\"c\"", "\"s\"", "\"k\""] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    fn record_of(request: &DecisionRequest, include_arguments: bool) -> DecisionRecord {
        let decision = Decision {
            allow: true,
            reason: crate::authz::Reason::new(crate::authz::ReasonKind::Allowed, "allowed"),
            evaluations: Vec::new(),
            generation: 1,
            policy_digest: "sha256:x".into(),
        };
        DecisionRecord {
            decision_id: "d".into(),
            time: SystemTime::UNIX_EPOCH,
            interface: Interface::Authzen,
            request: Arc::new(RecordedRequest::of(request, include_arguments)),
            decision: Arc::new(decision),
            latency: Duration::ZERO,
            trace: None,
            request_id: None,
            server_source: None,
        }
    }

    /// `record` without its request's input.
    fn without_input(record: &DecisionRecord) -> DecisionRecord {
        let mut bare = record.clone();
        Arc::make_mut(&mut bare.request).input = None;
        bare
    }

    #[test]
    fn the_input_keeps_the_context_but_its_arguments_in_order() {
        use std::str::FromStr;
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let others = ["z", "request", "a", "m"];
        // The arguments first, between others, last, absent.
        for at in (0..=others.len()).map(Some).chain([None]) {
            let mut request = DecisionRequest::new(
                uid("Mcp::Action::\"tools/call\""),
                uid("Mcp::Tool::\"docs/get_document\""),
            );
            let mut order = others.to_vec();
            if let Some(at) = at {
                order.insert(at, "arguments");
            }
            for (i, key) in order.iter().enumerate() {
                request
                    .context
                    .insert((*key).into(), json!({ "n": i, "deep": [key] }));
            }
            let input = RecordInput::of(&request);
            assert_eq!(input.had_arguments, at.is_some(), "{order:?}");
            let kept: Vec<(&str, &Value)> =
                input.context.iter().map(|(k, v)| (k.as_str(), v)).collect();
            let want: Vec<(&str, &Value)> = request
                .context
                .iter()
                .filter(|(k, _)| *k != "arguments")
                .map(|(k, v)| (k.as_str(), v))
                .collect();
            assert_eq!(kept, want, "{order:?}");
        }
    }

    #[test]
    fn the_input_replays_the_request_and_says_what_the_log_lacks() {
        use crate::authz::replayable::{ArgumentsForm, from_json};
        use std::str::FromStr;
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let mut request = DecisionRequest::new(
            uid("Mcp::Action::\"tools/call\""),
            uid("Mcp::Tool::\"docs/get_document\""),
        );
        request.user = Some(uid("Mcp::User::\"erin\""));
        request.application = Some(uid("Mcp::Application::\"corpassist\""));
        request
            .context
            .insert("arguments".into(), json!({"document_id": "x"}));
        request
            .context
            .insert("request".into(), json!({"source_ip": "10.0.0.1"}));
        request.token = Some(TokenFacts {
            scopes: vec!["docs.read".into()],
            claims: Map::new(),
        });
        request.entities.push(RequestEntity {
            uid: uid("Mcp::User::\"erin\""),
            parents: vec![uid("Mcp::Group::\"contractors\"")],
            attrs: Map::new(),
        });
        let redactor = Redactor::new(&default_redactions());
        // Arguments logged: the input is the request.
        let record = record_of(&request, true);
        let json = record.to_json(&redactor);
        assert!(json["input"].get("arguments").is_none(), "{json}");
        let back = from_json(json["input"].clone()).expect("readable");
        assert_eq!(back.request, request);
        assert_eq!(back.arguments, ArgumentsForm::Complete);
        // Not logged: omitted, and said.
        let record = record_of(&request, false);
        let json = record.to_json(&redactor);
        assert_eq!(json["input"]["arguments"], "omitted", "{json}");
        assert_eq!(
            json["input"]["context"],
            json!({"request": {"source_ip": "10.0.0.1"}})
        );
        assert!(json.get("arguments").is_none());
        // Redacted: as logged, and said.
        request.context.insert(
            "arguments".into(),
            json!({"document_id": "x", "api_key": "k"}),
        );
        let record = record_of(&request, true);
        let json = record.to_json(&redactor);
        assert_eq!(json["input"]["arguments"], "redacted", "{json}");
        assert_eq!(
            json["input"]["context"]["arguments"],
            json!({"document_id": "x", "api_key": "[REDACTED]"})
        );
        assert!(!json.to_string().contains("\"k\""), "{json}");
        // The writer's bytes are that object.
        let mut bytes = Vec::new();
        record.write(&redactor, &mut bytes).expect("written");
        let written: Value = serde_json::from_slice(&bytes).expect("one JSON object");
        assert_eq!(written, json);
        // No arguments at all: nothing to say.
        request.context.remove("arguments");
        let record = record_of(&request, false);
        let json = record.to_json(&redactor);
        assert!(json["input"].get("arguments").is_none(), "{json}");
    }

    #[test]
    fn the_writer_writes_the_documented_object_byte_for_byte() {
        use std::str::FromStr;
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        // Ids that JSON escapes, and one an escaped uid text ends in.
        let user = r#"Mcp::User::"erin \"e\" \\ é""#;
        let group = "Mcp::Group::\"contractors\\n\"";
        let mut request = call_by(user);
        request.context.insert(
            "arguments".into(),
            json!({"document_id": "x \"quoted\" \u{e9}", "api_key": "k", "n": 1.5}),
        );
        request
            .context
            .insert("request".into(), json!({"source_ip": "10.0.0.1"}));
        request.token = Some(TokenFacts {
            scopes: vec!["docs.read".into(), "a \"b\"\t".into()],
            claims: Map::from_iter([("tenant".to_owned(), json!("acme\u{1}"))]),
        });
        for parents in [vec![uid(group)], Vec::new()] {
            request.entities = vec![RequestEntity {
                uid: uid(user),
                parents,
                attrs: Map::from_iter([("level".to_owned(), json!(3))]),
            }];
            let redactor = Redactor::new(&default_redactions());
            for include_arguments in [true, false] {
                let mut record = record_of(&request, include_arguments);
                let mut decision = (*record.decision).clone();
                decision.evaluations.push(crate::authz::Evaluation {
                    role: crate::authz::Role::User,
                    principal: user.into(),
                    allow: true,
                    policies: vec!["p1".into()],
                    errors: Vec::new(),
                    action: Some("Mcp::Action::\"tools/call/docs/get_document\"".into()),
                    step_up: crate::authz::StepUpHint::default(),
                });
                record.decision = Arc::new(decision);
                record.latency = Duration::from_nanos(41_234);
                record.time = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456);
                record.trace =
                    TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
                record.request_id = Some("req-1".into());
                record.server_source = Some("authority");
                let mut expected = json!({
                    "decision_id": "d",
                    "time": "2026-11-18T11:06:40.123456Z",
                    "interface": "authzen",
                    "decision": "allow",
                    "reason": "allowed",
                    "generation": 1,
                    "policy_digest": "sha256:x",
                    "user": user,
                    "application": "Mcp::Application::\"corpassist\"",
                    "server": "Mcp::Server::\"docs\"",
                    "action": "Mcp::Action::\"tools/call\"",
                    "resource": "Mcp::Tool::\"docs/get_document\"",
                    "evaluations": [{
                        "role": "user", "principal": user, "allow": true, "policies": ["p1"],
                        "errors": [], "action": "Mcp::Action::\"tools/call/docs/get_document\"",
                    }],
                    "latency_us": 41.234,
                    "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                    "parent_span_id": "00f067aa0ba902b7",
                    "request_id": "req-1",
                    "server_source": "authority",
                });
                if include_arguments {
                    expected["arguments"] = json!({"document_id": "x \"quoted\" \u{e9}", "api_key": "[REDACTED]", "n": 1.5});
                }
                let mut expected_input = json!({
                    "user": user,
                    "application": "Mcp::Application::\"corpassist\"",
                    "action": "Mcp::Action::\"tools/call\"",
                    "resource": "Mcp::Tool::\"docs/get_document\"",
                    "server": "Mcp::Server::\"docs\"",
                    "context": {"request": {"source_ip": "10.0.0.1"}},
                    "arguments": if include_arguments { "redacted" } else { "omitted" },
                    "token": {"scopes": ["docs.read", "a \"b\"\t"], "claims": {"tenant": "acme\u{1}"}},
                    "entities": [{
                        "uid": user,
                        "parents": request.entities[0].parents.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "attrs": {"level": 3},
                    }],
                });
                if include_arguments {
                    expected_input["context"]["arguments"] = expected["arguments"].clone();
                }
                for record in [record.clone(), without_input(&record)] {
                    let mut direct = Vec::new();
                    record.write(&redactor, &mut direct).expect("written");
                    let mut expected = expected.clone();
                    if record.request.input.is_some() {
                        expected["input"] = expected_input.clone();
                    }
                    assert_eq!(
                        String::from_utf8(direct).expect("utf-8"),
                        serde_json::to_string(&expected).expect("serialized"),
                    );
                    assert_eq!(record.to_json(&redactor), expected);
                }
            }
        }
        // Without action and resource: no input.
        let mut record = record_of(&request, true);
        Arc::make_mut(&mut record.request).action = None;
        let mut direct = Vec::new();
        record
            .write(&redactor_of_defaults(), &mut direct)
            .expect("written");
        let value: Value = serde_json::from_slice(&direct).expect("json");
        assert!(value.get("input").is_none());
        assert!(value.get("action").is_none());
        assert_eq!(value["resource"], "Mcp::Tool::\"docs/get_document\"");
    }

    #[test]
    fn records_of_one_shared_decision_write_what_each_would_alone() {
        use std::str::FromStr;
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let user = r#"Mcp::User::"erin \"e\"""#;
        let mut request = call_by(user);
        request
            .context
            .insert("request".into(), json!({"source_ip": "10.0.0.1"}));
        request.context.insert(
            "arguments".into(),
            json!({"document_id": "x \"q\"", "api_key": "k"}),
        );
        request.token = Some(TokenFacts {
            scopes: vec!["docs.read".into()],
            claims: Map::from_iter([("tenant".to_owned(), json!("acme"))]),
        });
        request.entities = vec![RequestEntity {
            uid: uid(user),
            parents: vec![uid("Mcp::Group::\"g\"")],
            attrs: Map::from_iter([("level".to_owned(), json!(3))]),
        }];
        let mut other = request.clone();
        other.user = Some(uid("Mcp::User::\"frank\""));
        other
            .context
            .insert("arguments".into(), json!({"document_id": "y"}));
        other.token = None;
        let redactor = redactor_of_defaults();
        let traces = [
            None,
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ];
        let interfaces = [Interface::Authzen, Interface::ExtAuthzGrpc, Interface::Grpc];
        for include_arguments in [true, false] {
            // Two decisions each shared (as the decision cache holds and shares them)
            // by records of one request each, interleaved, every record with its own id,
            // time, interface, latency, trace, request id and server source.
            let first = record_of(&request, include_arguments);
            let second = record_of(&other, include_arguments);
            let cache = [Arc::clone(&first.decision), Arc::clone(&second.decision)];
            let mut kept = KeptMembers::default();
            for i in 0..8_u32 {
                let of = if i % 2 == 0 { &first } else { &second };
                let mut record = of.clone();
                let n = u64::from(i);
                record.decision_id = format!("d{i}");
                record.time = SystemTime::UNIX_EPOCH
                    + Duration::from_micros(1_795_000_000_000_000 + n * 1_234_567);
                record.interface = interfaces[i as usize % interfaces.len()];
                record.latency = Duration::from_nanos(1_000 + n * 777);
                record.trace = traces[(i as usize / 2) % traces.len()];
                record.request_id = (i % 3 == 1).then(|| format!("req-{i}"));
                record.server_source = (i >= 4).then_some("authority");
                let mut alone = Vec::new();
                record.write(&redactor, &mut alone).expect("written");
                let mut sharing = Vec::new();
                record
                    .write_sharing(&redactor, &mut kept, &mut sharing)
                    .expect("written");
                assert_eq!(
                    String::from_utf8(sharing).expect("utf-8"),
                    String::from_utf8(alone).expect("utf-8"),
                    "record {i} (arguments logged: {include_arguments})"
                );
                assert!(kept.get(&record.decision).is_some(), "record {i}");
                // Without its input: written whole, never from what is kept.
                let bare = without_input(&record);
                let (mut alone, mut sharing) = (Vec::new(), Vec::new());
                bare.write(&redactor, &mut alone).expect("written");
                bare.write_sharing(&redactor, &mut kept, &mut sharing)
                    .expect("written");
                assert_eq!(sharing, alone, "record {i} without input");
            }
            assert_eq!(kept.len(), 2);
            // A decision no one else holds can be in no other record: not kept.
            let lone = record_of(&request, include_arguments);
            let mut out = Vec::new();
            lone.write_sharing(&redactor, &mut kept, &mut out)
                .expect("written");
            assert!(kept.get(&lone.decision).is_none());
            let mut alone = Vec::new();
            lone.write(&redactor, &mut alone).expect("written");
            assert_eq!(out, alone);
            drop(cache);
        }
    }

    #[test]
    fn a_thread_shares_one_recorded_request_among_the_records_of_a_cached_decision() {
        let log_of = |include_arguments: bool| {
            let config = DecisionLogConfig {
                include_arguments,
                ..DecisionLogConfig::default()
            };
            DecisionLog::with_writer(Box::new(std::io::sink()), &config).expect("log")
        };
        let (log, with_arguments) = (log_of(false), log_of(true));
        let requests: Vec<DecisionRequest> = (0..RECORDED_KEPT + 40)
            .map(|i| {
                let mut request = call_by(&format!("Mcp::User::\"u{i}\""));
                request
                    .context
                    .insert("arguments".into(), json!({ "document_id": i }));
                request
            })
            .collect();
        let decisions: Vec<Arc<Decision>> = requests
            .iter()
            .map(|r| record_of(r, false).decision)
            .collect();

        // A decision no one else holds is in no other record: built each time, not kept.
        let (a, b) = (
            log.recorded(&decisions[0], &requests[0]),
            log.recorded(&decisions[0], &requests[0]),
        );
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(*a, RecordedRequest::of(&requests[0], false));

        // Held by the cache too: each decision's own, shared by its later records, while
        // more decisions than a thread keeps come and go in between.
        let cache = decisions.clone();
        for round in 0..3 {
            for (i, (decision, request)) in decisions.iter().zip(&requests).enumerate() {
                for (log, include_arguments) in [(&log, false), (&with_arguments, true)] {
                    let first = log.recorded(decision, request);
                    assert_eq!(
                        *first,
                        RecordedRequest::of(request, include_arguments),
                        "round {round}, decision {i}"
                    );
                    assert_eq!(first.arguments.is_some(), include_arguments);
                    let again = log.recorded(decision, request);
                    assert!(Arc::ptr_eq(&first, &again), "round {round}, decision {i}");
                }
            }
            assert!(RECORDED.with_borrow(ByDecision::len) <= RECORDED_KEPT);
        }
        // Another thread builds its own, alike.
        std::thread::scope(|s| {
            s.spawn(|| {
                let there = log.recorded(&decisions[1], &requests[1]);
                assert_eq!(*there, RecordedRequest::of(&requests[1], false));
                assert_eq!(RECORDED.with_borrow(ByDecision::len), 1);
            });
        });
        drop(cache);
    }

    /// A `tools/call` of `docs/get_document` by `user` (a uid's text) through the
    /// application `corpassist`, on the server `docs`.
    fn call_by(user: &str) -> DecisionRequest {
        use std::str::FromStr;
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let mut request = DecisionRequest::new(
            uid("Mcp::Action::\"tools/call\""),
            uid("Mcp::Tool::\"docs/get_document\""),
        );
        request.user = Some(uid(user));
        request.application = Some(uid("Mcp::Application::\"corpassist\""));
        request.server = Some(uid("Mcp::Server::\"docs\""));
        request
    }

    fn redactor_of_defaults() -> Redactor {
        Redactor::new(&default_redactions())
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn numbered(id: String) -> DecisionRecord {
        use std::str::FromStr;
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let request = DecisionRequest::new(
            uid("Mcp::Action::\"tools/call\""),
            uid("Mcp::Tool::\"docs/get_document\""),
        );
        let mut record = record_of(&request, false);
        record.decision_id = id;
        record
    }

    #[test]
    fn a_burst_from_several_threads_is_written_whole_and_in_order() {
        const THREADS: usize = 4;
        const EACH: usize = 5_000;
        let out = Shared::default();
        let config = DecisionLogConfig {
            queue_capacity: THREADS * EACH,
            ..DecisionLogConfig::default()
        };
        let log = DecisionLog::with_writer(Box::new(out.clone()), &config).expect("log");
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let log = &log;
                scope.spawn(move || {
                    for i in 0..EACH {
                        // Pauses now and then: the writer polls, blocks, and is woken.
                        if i % 1_000 == 999 {
                            std::thread::sleep(Duration::from_millis(8));
                        }
                        log.submit(numbered(format!("{t}-{i}")));
                    }
                });
            }
        });
        assert!(log.close(Duration::from_secs(30)), "the writer finished");
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 0);
        assert_eq!(
            log.stats().written.load(Ordering::Relaxed),
            (THREADS * EACH) as u64
        );
        let text = String::from_utf8(out.0.lock().expect("buffer").clone()).expect("utf-8");
        let mut next = [0usize; THREADS];
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("one JSON object a line");
            let id = v["decision_id"].as_str().expect("an id");
            let (t, i) = id.split_once('-').expect("thread-index");
            let (t, i): (usize, usize) = (t.parse().expect("t"), i.parse().expect("i"));
            assert_eq!(next[t], i, "thread {t}'s records in order");
            next[t] += 1;
        }
        assert_eq!(next, [EACH; THREADS]);
    }

    /// A writer whose first write waits until released, saying when it started waiting.
    struct Gate {
        entered: Option<std::sync::mpsc::Sender<()>>,
        release: std::sync::mpsc::Receiver<()>,
        out: Shared,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(entered) = self.entered.take() {
                let _ = entered.send(());
                let _ = self.release.recv();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_writer_drops_and_counts_what_the_queue_cannot_hold() {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel();
        let out = Shared::default();
        let gate = Gate {
            entered: Some(entered_tx),
            release: release_rx,
            out: out.clone(),
        };
        let config = DecisionLogConfig {
            queue_capacity: 4,
            ..DecisionLogConfig::default()
        };
        let log = DecisionLog::with_writer(Box::new(gate), &config).expect("log");
        log.submit(numbered("first".into()));
        entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer writes the first record");
        // The writer is stuck in its write: four records fit, the rest are dropped at once.
        let started = std::time::Instant::now();
        for i in 0..10 {
            log.submit(numbered(format!("queued-{i}")));
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never blocks");
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 6);
        release.send(()).expect("writer waiting");
        assert!(log.close(Duration::from_secs(10)), "the writer finished");
        assert_eq!(log.stats().written.load(Ordering::Relaxed), 5);
        let text = String::from_utf8(out.0.lock().expect("buffer").clone()).expect("utf-8");
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("JSON");
                v["decision_id"].as_str().expect("id").to_owned()
            })
            .collect();
        assert_eq!(
            ids,
            ["first", "queued-0", "queued-1", "queued-2", "queued-3"]
        );
    }

    #[test]
    fn close_flushes_what_is_queued_and_later_records_are_dropped() {
        let out = Shared::default();
        let log = DecisionLog::with_writer(Box::new(out.clone()), &DecisionLogConfig::default())
            .expect("log");
        for i in 0..100 {
            log.submit(numbered(format!("r{i}")));
        }
        assert!(log.close(Duration::from_secs(10)));
        assert_eq!(log.stats().written.load(Ordering::Relaxed), 100);
        assert_eq!(
            String::from_utf8(out.0.lock().expect("buffer").clone())
                .expect("utf-8")
                .lines()
                .count(),
            100
        );
        log.submit(numbered("late".into()));
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 1);
    }
}
