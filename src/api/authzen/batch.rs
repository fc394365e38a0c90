//! `/access/v1/evaluations`: many evaluations in one request, each item's members
//! defaulting to the top-level ones, all decided on one snapshot, stopped early as
//! `options.evaluations_semantic` says.

use serde_json::{Map, Value, json};

use super::wire::{
    Evaluation, decision_json, explain_requested, field, parse_action, parse_context, parse_entity,
    parse_evaluation,
};
use super::{bad, decide};
use crate::api::refusal::Refusal;
use crate::authz::{DecisionMeta, Engine, Interface};
use crate::config::ResourceServers;
use crate::identity::Identity;
use crate::uri::Shown;

/// A failed batch item: a deny, with the refusal's HTTP status and message.
fn item_error(refusal: &Refusal) -> Value {
    let status = refusal.http_status().as_u16();
    json!({ "decision": false, "context": { "error": { "status": status, "message": refusal.message() } } })
}

/// How a batch is executed (`options.evaluations_semantic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantic {
    /// Every item (the default).
    ExecuteAll,
    /// Stop after the first deny (or failed item).
    DenyOnFirstDeny,
    /// Stop after the first permit.
    PermitOnFirstPermit,
}

/// Read `options.evaluations_semantic`.
pub fn semantic(body: &Map<String, Value>) -> Result<Semantic, Refusal> {
    let options = match field(body, "options") {
        None => return Ok(Semantic::ExecuteAll),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad("`options` must be an object")),
    };
    match field(options, "evaluations_semantic") {
        None => Ok(Semantic::ExecuteAll),
        Some(Value::String(s)) => match s.as_str() {
            "execute_all" => Ok(Semantic::ExecuteAll),
            "deny_on_first_deny" => Ok(Semantic::DenyOnFirstDeny),
            "permit_on_first_permit" => Ok(Semantic::PermitOnFirstPermit),
            other => Err(bad(format!(
                "`options.evaluations_semantic` `{}` is not `execute_all`, `deny_on_first_deny` or `permit_on_first_permit`",
                Shown(other)
            ))),
        },
        Some(_) => Err(bad("`options.evaluations_semantic` must be a string")),
    }
}

/// An item's member, falling back to the top-level default; for an entity, the
/// required members (`type`, `id`, `name`) the item leaves out come from the default.
fn merged(
    item: &Map<String, Value>,
    defaults: &Map<String, Value>,
    key: &str,
    required: &[&str],
) -> Option<Value> {
    match (field(item, key), field(defaults, key)) {
        (Some(Value::Object(own)), Some(Value::Object(default))) => {
            let mut own = own.clone();
            for k in required {
                if field(&own, k).is_none()
                    && let Some(v) = field(default, k)
                {
                    own.insert((*k).to_owned(), v.clone());
                }
            }
            Some(Value::Object(own))
        }
        (Some(own), _) => Some(own.clone()),
        (None, default) => default.cloned(),
    }
}

/// The result of `/access/v1/evaluations`.
#[derive(Debug)]
pub enum BatchResult {
    /// No `evaluations` (or an empty array): a single evaluation's response.
    Single(Value, Option<String>),
    /// One decision object per item (fewer when a semantic stopped early), and the
    /// decision ids made.
    Batch(Value, Vec<String>),
}

/// Evaluate an `/access/v1/evaluations` body.
pub fn evaluate_batch(
    engine: &Engine,
    servers: &ResourceServers,
    body: &Map<String, Value>,
    identity: Option<&Identity>,
    meta: &DecisionMeta,
    max_batch: usize,
) -> Result<BatchResult, Refusal> {
    let explain = explain_requested(body);
    let semantic = semantic(body)?;
    let items = match field(body, "evaluations") {
        None => &Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad("`evaluations` must be an array")),
    };
    // Defaults must be well-formed where given, even if every item overrides them.
    for (key, what) in [
        ("subject", "an object"),
        ("action", "an object"),
        ("resource", "an object"),
        ("context", "an object"),
    ] {
        if let Some(v) = field(body, key)
            && !v.is_object()
        {
            return Err(bad(format!("`{key}` must be {what}")));
        }
    }
    // Every evaluation of the request is decided on one snapshot.
    let snapshot = engine.snapshot();
    if items.is_empty() {
        let eval = parse_evaluation(body)?;
        let outcome = decide(engine, servers, &snapshot, &eval, identity, meta)?;
        return Ok(BatchResult::Single(
            decision_json(&outcome, explain, &snapshot),
            Some(outcome.decision_id),
        ));
    }
    if items.len() > max_batch {
        return Err(Refusal::too_large(format!(
            "{} evaluations in one request; the limit is {max_batch}",
            items.len()
        )));
    }
    let mut results = Vec::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let (result, allow) = match item {
            Value::Object(item) => {
                let parsed = (|| {
                    Ok::<_, Refusal>(Evaluation {
                        subject: parse_entity(
                            merged(item, body, "subject", &["type", "id"]).as_ref(),
                            "subject",
                            true,
                        )?,
                        action: parse_action(
                            merged(item, body, "action", &["name"]).as_ref(),
                            "action",
                        )?,
                        resource: parse_entity(
                            merged(item, body, "resource", &["type", "id"]).as_ref(),
                            "resource",
                            true,
                        )?,
                        context: match field(item, "context") {
                            Some(_) => parse_context(item, "context")?,
                            None => parse_context(body, "context")?,
                        },
                    })
                })();
                match parsed
                    .and_then(|eval| decide(engine, servers, &snapshot, &eval, identity, meta))
                {
                    Ok(outcome) => {
                        let allow = outcome.decision.allow;
                        let json = decision_json(&outcome, explain, &snapshot);
                        ids.push(outcome.decision_id);
                        (json, allow)
                    }
                    Err(e) => {
                        let reason = format!("evaluation {i}: {e}");
                        let outcome = engine.reject(&snapshot, Interface::Authzen, reason, meta);
                        ids.push(outcome.decision_id);
                        (item_error(&e), false)
                    }
                }
            }
            _ => {
                let outcome = engine.reject(
                    &snapshot,
                    Interface::Authzen,
                    format!("evaluation {i} is not an object"),
                    meta,
                );
                ids.push(outcome.decision_id);
                (
                    item_error(&bad(format!("evaluation {i} must be an object"))),
                    false,
                )
            }
        };
        results.push(result);
        let stop = match semantic {
            Semantic::ExecuteAll => false,
            Semantic::DenyOnFirstDeny => !allow,
            Semantic::PermitOnFirstPermit => allow,
        };
        if stop {
            break;
        }
    }
    Ok(BatchResult::Batch(json!({ "evaluations": results }), ids))
}
