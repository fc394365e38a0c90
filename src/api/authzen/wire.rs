//! The AuthZEN wire model: requests read strictly (a null member is an absent
//! one; a member of the wrong shape is an invalid request), decision objects written.

use serde_json::{Map, Value, json};

use super::bad;
use crate::api::refusal::Refusal;
use crate::authz::Outcome;
use crate::policy::Snapshot;

/// A subject or resource as given.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRef {
    /// `type` as written.
    pub type_name: String,
    /// `id` (absent where a search ignores it).
    pub id: Option<String>,
    /// `properties`.
    pub properties: Map<String, Value>,
}

/// An action as given.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRef {
    /// `name`.
    pub name: String,
    /// `properties`.
    pub properties: Map<String, Value>,
}

/// One access evaluation request, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// The subject.
    pub subject: EntityRef,
    /// The action.
    pub action: ActionRef,
    /// The resource.
    pub resource: EntityRef,
    /// The context.
    pub context: Map<String, Value>,
}

pub(super) fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    // A null member is the same as an absent one.
    obj.get(key).filter(|v| !v.is_null())
}

/// A string member; `""` only where Cedar takes it (entity ids and action ids may
/// be empty, entity types may not).
fn string_field(
    obj: &Map<String, Value>,
    path: &str,
    key: &str,
    empty_ok: bool,
) -> Result<Option<String>, Refusal> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() && !empty_ok => {
            Err(bad(format!("`{path}.{key}` is empty")))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("`{path}.{key}` must be a string"))),
    }
}

fn properties(obj: &Map<String, Value>, path: &str) -> Result<Map<String, Value>, Refusal> {
    match field(obj, "properties") {
        None => Ok(Map::new()),
        Some(Value::Object(p)) => Ok(p.clone()),
        Some(_) => Err(bad(format!("`{path}.properties` must be an object"))),
    }
}

/// Read a subject or resource at `path`; `id_required` is false where a search
/// ignores the id.
pub fn parse_entity(
    value: Option<&Value>,
    path: &str,
    id_required: bool,
) -> Result<EntityRef, Refusal> {
    let obj = match value {
        None | Some(Value::Null) => return Err(bad(format!("`{path}` is missing"))),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad(format!("`{path}` must be an object"))),
    };
    let type_name = string_field(obj, path, "type", false)?
        .ok_or_else(|| bad(format!("`{path}.type` is missing")))?;
    let id = if id_required {
        Some(
            string_field(obj, path, "id", true)?
                .ok_or_else(|| bad(format!("`{path}.id` is missing")))?,
        )
    } else {
        None
    };
    Ok(EntityRef {
        type_name,
        id,
        properties: properties(obj, path)?,
    })
}

/// Read an action at `path`.
pub fn parse_action(value: Option<&Value>, path: &str) -> Result<ActionRef, Refusal> {
    let obj = match value {
        None | Some(Value::Null) => return Err(bad(format!("`{path}` is missing"))),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad(format!("`{path}` must be an object"))),
    };
    let name = string_field(obj, path, "name", true)?
        .ok_or_else(|| bad(format!("`{path}.name` is missing")))?;
    Ok(ActionRef {
        name,
        properties: properties(obj, path)?,
    })
}

/// Read `context` of `obj`.
pub fn parse_context(obj: &Map<String, Value>, path: &str) -> Result<Map<String, Value>, Refusal> {
    match field(obj, "context") {
        None => Ok(Map::new()),
        Some(Value::Object(c)) => Ok(c.clone()),
        Some(_) => Err(bad(format!("`{path}` must be an object"))),
    }
}

/// Read a whole access evaluation request.
pub fn parse_evaluation(body: &Map<String, Value>) -> Result<Evaluation, Refusal> {
    Ok(Evaluation {
        subject: parse_entity(body.get("subject"), "subject", true)?,
        action: parse_action(body.get("action"), "action")?,
        resource: parse_entity(body.get("resource"), "resource", true)?,
        context: parse_context(body, "context")?,
    })
}

/// Whether the request asks for explanations (`options.explain: true`).
pub fn explain_requested(body: &Map<String, Value>) -> bool {
    body.get("options")
        .and_then(|o| o.get("explain"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The AuthZEN decision object of an outcome: `{"decision": bool}`, with the
/// explanation in `context` when asked for.
pub fn decision_json(outcome: &Outcome, explain: bool, snapshot: &Snapshot) -> Value {
    if !explain {
        return json!({ "decision": outcome.decision.allow });
    }
    let d = &outcome.decision;
    let evaluations: Vec<Value> = d
        .evaluations
        .iter()
        .map(|e| {
            let policies: Vec<Value> = e.policies.iter().map(|p| snapshot.origin_json(p)).collect();
            json!({
                "role": e.role,
                "principal": e.principal,
                "decision": e.allow,
                "policies": policies,
                "errors": e.errors,
            })
        })
        .collect();
    json!({
        "decision": d.allow,
        "context": {
            "decision_id": outcome.decision_id,
            "reason": d.reason,
            "generation": d.generation,
            "policy_digest": &*d.policy_digest,
            "evaluations": evaluations,
        }
    })
}
