//! Replay: decide the requests of a decision log again, on another policy set, and
//! report where the answers differ (`mcp-authz replay`).
//!
//! Every line of the log is one of:
//! - a **live decision** with its `input` (see [`crate::authz::replayable`]): replayed,
//!   and compared with its `decision` (what was decided, also under dry-run, where the
//!   caller was answered allow whatever `decision` says);
//! - a live decision **without input** (a list request, a request the interface refused
//!   before it became one, a log written before records carried their input): skipped
//!   and counted;
//! - an **other record**: any object with a top-level `"record"` key (e.g. a shadow
//!   disagreement), not a live decision: skipped and counted;
//! - **malformed**: not a JSON object, not UTF-8, a `decision` other than `allow` or
//!   `deny`, or an `input` that cannot be read back: counted and reported with its line
//!   number, and skipped. Blank lines are ignored.
//!
//! A record whose arguments were left out of the log (`input.arguments = "omitted"`)
//! or redacted (`"redacted"`) is replayed on what the log has; a difference on it is
//! *uncertain*: the candidate may have decided otherwise on the real arguments.
//!
//! Records are decided in batches, in parallel on every core (contiguous chunks, one
//! thread each, as `mcp-authz test` does), through the engine's entry point (its rules
//! and its decision cache: a log repeats many requests), and reported in log order.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::EntityUid;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::authz::replayable::{self, ArgumentsForm};
use crate::authz::{CacheSettings, Decision, DecisionRequest, Engine, Rules};
use crate::policy::{PolicyStore, Snapshot};

/// The engine a replay decides with: the service's entry point under `rules`, with a
/// decision cache (exact: keyed by every input of a decision), since a log repeats many
/// requests.
pub fn engine(store: Arc<PolicyStore>, rules: Rules) -> Engine {
    Engine::new(store)
        .with_rules(rules)
        .with_cache(&CacheSettings {
            enabled: true,
            max_entries: 100_000,
            ttl: std::time::Duration::from_secs(3600),
        })
}

/// How a replay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Stop after this many live records have been replayed.
    pub limit: Option<u64>,
    /// Threads deciding a batch (1: the calling thread alone).
    pub threads: usize,
    /// Lines read before they are decided together.
    pub batch: usize,
    /// Malformed lines whose reason is kept (all are counted).
    pub malformed_kept: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limit: None,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            batch: 32 * 1024,
            malformed_kept: 20,
        }
    }
}

/// The counts of a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines read (blank ones included).
    pub lines: u64,
    /// Live decision records (with or without input).
    pub live: u64,
    /// Live records replayed (they had an input).
    pub replayed: u64,
    /// Replayed with the same decision.
    pub same: u64,
    /// Allowed live, denied by the candidate.
    pub allow_to_deny: u64,
    /// Denied live, allowed by the candidate.
    pub deny_to_allow: u64,
    /// Differences on records whose arguments were omitted or redacted.
    pub uncertain: u64,
    /// Live records without input: not replayed.
    pub without_input: u64,
    /// Records with a top-level `record` key (not live decisions): not replayed.
    pub other_records: u64,
    /// Malformed lines: not replayed.
    pub malformed: u64,
    /// Replayed records whose arguments were left out of the log.
    pub arguments_omitted: u64,
    /// Replayed records whose logged arguments were redacted.
    pub arguments_redacted: u64,
    /// Live records by the `policy_digest` that decided them.
    pub live_digests: BTreeMap<String, u64>,
}

impl Summary {
    /// Records replayed with another decision.
    pub fn different(&self) -> u64 {
        self.allow_to_deny + self.deny_to_allow
    }
}

/// One replayed record the candidate decided otherwise.
#[derive(Debug, Clone)]
pub struct Difference {
    /// Its line in the log (1-based).
    pub line: u64,
    /// Its `decision_id`, if it has one.
    pub decision_id: Option<String>,
    /// The request, read back from the record.
    pub request: DecisionRequest,
    /// Whether the live decision allowed.
    pub live_allow: bool,
    /// The live decision's reason.
    pub live_reason: Option<String>,
    /// The live decision's determining policies per principal (`user`, `application`).
    pub live_policies: PoliciesByRole,
    /// The candidate's decision.
    pub candidate: Arc<Decision>,
    /// Whether the record held the arguments as they were.
    pub arguments: ArgumentsForm,
}

impl Difference {
    /// Whether the record lacked (some of) its arguments: the difference is uncertain.
    pub fn uncertain(&self) -> bool {
        self.arguments != ArgumentsForm::Complete
    }
}

/// What a replay found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The counts.
    pub summary: Summary,
    /// Every difference, in log order.
    pub differences: Vec<Difference>,
    /// The first malformed lines: line number and why.
    pub malformed: Vec<(u64, String)>,
    /// The candidate set's content digest.
    pub candidate_digest: Arc<str>,
}

/// What one line is.
enum Outcome {
    Blank,
    Malformed(String),
    Other,
    WithoutInput(Option<String>),
    Replayed {
        digest: Option<String>,
        live_allow: bool,
        arguments: ArgumentsForm,
        candidate: Arc<Decision>,
        /// Kept only when the answers differ.
        request: Option<Box<DecisionRequest>>,
    },
}

/// The members of a record replay reads; the rest is skipped unread.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    record: Option<IgnoredAny>,
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    policy_digest: Option<String>,
    #[serde(default)]
    input: Option<Value>,
}

/// Parsed uids by their text: a log names the same principals, actions and tools
/// again and again, and Cedar's parser is the costly part of reading a record.
#[derive(Debug, Default)]
struct UidCache {
    uids: HashMap<String, EntityUid>,
}

impl UidCache {
    /// Most uids kept (then the cache starts over).
    const MAX: usize = 100_000;

    fn get(&mut self, text: &str) -> Option<EntityUid> {
        if let Some(uid) = self.uids.get(text) {
            return Some(uid.clone());
        }
        let uid = EntityUid::from_str(text).ok()?;
        if self.uids.len() >= Self::MAX {
            self.uids.clear();
        }
        self.uids.insert(text.to_owned(), uid.clone());
        Some(uid)
    }
}

fn decide_line(engine: &Engine, snapshot: &Snapshot, uids: &mut UidCache, text: &str) -> Outcome {
    if text.trim().is_empty() {
        return Outcome::Blank;
    }
    // A record is an object (serde would read a struct from an array too).
    if !text.trim_start().starts_with('{') {
        return Outcome::Malformed(match serde_json::from_str::<IgnoredAny>(text) {
            Ok(_) => "not a decision record: not a JSON object".to_owned(),
            Err(e) => format!("not JSON: {e}"),
        });
    }
    let line: Line = match serde_json::from_str(text) {
        Ok(l) => l,
        Err(e) => {
            let what = if serde_json::from_str::<IgnoredAny>(text).is_ok() {
                "not a decision record"
            } else {
                "not JSON"
            };
            return Outcome::Malformed(format!("{what}: {e}"));
        }
    };
    if line.record.is_some() {
        return Outcome::Other;
    }
    let live_allow = match line.decision.as_deref() {
        Some("allow") => true,
        Some("deny") => false,
        Some(other) => {
            return Outcome::Malformed(format!(
                "`decision` must be `allow` or `deny`, not `{other}`"
            ));
        }
        None => return Outcome::Malformed("no `decision`".into()),
    };
    let Some(input) = line.input else {
        return Outcome::WithoutInput(line.policy_digest);
    };
    let replayable = match replayable::from_json_with(input, &mut |s| uids.get(s)) {
        Ok(r) => r,
        Err(e) => return Outcome::Malformed(format!("`input`: {e}")),
    };
    let candidate = engine.evaluate(snapshot, &replayable.request);
    let request = (candidate.allow != live_allow).then(|| Box::new(replayable.request));
    Outcome::Replayed {
        digest: line.policy_digest,
        live_allow,
        arguments: replayable.arguments,
        candidate,
        request,
    }
}

/// Determining policy ids per principal role (`user`, `application`).
pub type PoliciesByRole = Vec<(String, Vec<String>)>;

/// The live side of a difference, read again from its line (differences are few):
/// its decision id, reason and determining policies.
fn live_side(text: &str) -> (Option<String>, Option<String>, PoliciesByRole) {
    let Ok(Value::Object(v)) = serde_json::from_str::<Value>(text) else {
        return (None, None, Vec::new());
    };
    let id = v
        .get("decision_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let reason = v.get("reason").and_then(Value::as_str).map(str::to_owned);
    let policies = v
        .get("evaluations")
        .and_then(Value::as_array)
        .map(|evals| {
            evals
                .iter()
                .filter_map(|e| {
                    let role = e.get("role")?.as_str()?.to_owned();
                    let ids = e
                        .get("policies")?
                        .as_array()?
                        .iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect();
                    Some((role, ids))
                })
                .collect()
        })
        .unwrap_or_default();
    (id, reason, policies)
}

/// Decide the lines of `batch` (numbered from `first`) on `threads` threads, each with
/// its uid cache; the outcomes in line order.
fn decide_batch(
    engine: &Engine,
    snapshot: &Snapshot,
    caches: &mut [UidCache],
    batch: &[Result<String, String>],
) -> Vec<Outcome> {
    let decide = |uids: &mut UidCache, line: &Result<String, String>| match line {
        Ok(text) => decide_line(engine, snapshot, uids, text),
        Err(reason) => Outcome::Malformed(reason.clone()),
    };
    /// Fewer lines than this are decided on the calling thread.
    const PARALLEL_FROM: usize = 256;
    crate::parallel::map_in_order(batch, caches, PARALLEL_FROM, decide)
}

/// Read the next line of `input` (without its end of line): `None` at the end, the
/// text, or why it is not text.
fn next_line(
    input: &mut dyn BufRead,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Result<String, String>>> {
    buf.clear();
    if input.read_until(b'\n', buf)? == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    }
    Ok(Some(
        String::from_utf8(std::mem::take(buf)).map_err(|e| format!("not UTF-8: {e}")),
    ))
}

/// Replay the decision log `input` on the engine's snapshot (its rules and cache).
/// Fails only when `input` cannot be read.
pub fn replay(
    engine: &Engine,
    input: &mut dyn BufRead,
    options: &Options,
) -> std::io::Result<Report> {
    let snapshot = engine.snapshot();
    let mut caches: Vec<UidCache> = (0..options.threads.max(1))
        .map(|_| UidCache::default())
        .collect();
    let mut summary = Summary::default();
    let mut differences = Vec::new();
    let mut malformed = Vec::new();
    let mut buf = Vec::new();
    let mut batch = Vec::with_capacity(options.batch.max(1));
    let mut done = false;
    while !done && options.limit.is_none_or(|l| summary.replayed < l) {
        batch.clear();
        while batch.len() < options.batch.max(1) {
            match next_line(input, &mut buf)? {
                Some(line) => batch.push(line),
                None => {
                    done = true;
                    break;
                }
            }
        }
        let outcomes = decide_batch(engine, &snapshot, &mut caches, &batch);
        for (line, outcome) in batch.iter().zip(outcomes) {
            if options.limit.is_some_and(|l| summary.replayed >= l) {
                done = true;
                break;
            }
            summary.lines += 1;
            let number = summary.lines;
            match outcome {
                Outcome::Blank => {}
                Outcome::Malformed(reason) => {
                    summary.malformed += 1;
                    if malformed.len() < options.malformed_kept {
                        malformed.push((number, reason));
                    }
                }
                Outcome::Other => summary.other_records += 1,
                Outcome::WithoutInput(digest) => {
                    summary.live += 1;
                    summary.without_input += 1;
                    if let Some(d) = digest {
                        *summary.live_digests.entry(d).or_default() += 1;
                    }
                }
                Outcome::Replayed {
                    digest,
                    live_allow,
                    arguments,
                    candidate,
                    request,
                } => {
                    summary.live += 1;
                    summary.replayed += 1;
                    if let Some(d) = digest {
                        *summary.live_digests.entry(d).or_default() += 1;
                    }
                    match arguments {
                        ArgumentsForm::Complete => {}
                        ArgumentsForm::Omitted => summary.arguments_omitted += 1,
                        ArgumentsForm::Redacted => summary.arguments_redacted += 1,
                    }
                    let Some(request) = request else {
                        summary.same += 1;
                        continue;
                    };
                    if live_allow {
                        summary.allow_to_deny += 1;
                    } else {
                        summary.deny_to_allow += 1;
                    }
                    if arguments != ArgumentsForm::Complete {
                        summary.uncertain += 1;
                    }
                    let (decision_id, live_reason, live_policies) = match line {
                        Ok(text) => live_side(text),
                        Err(_) => (None, None, Vec::new()),
                    };
                    differences.push(Difference {
                        line: number,
                        decision_id,
                        request: *request,
                        live_allow,
                        live_reason,
                        live_policies,
                        candidate,
                        arguments,
                    });
                }
            }
        }
    }
    Ok(Report {
        summary,
        differences,
        malformed,
        candidate_digest: snapshot.digests.content.clone(),
    })
}

#[cfg(test)]
mod tests;
