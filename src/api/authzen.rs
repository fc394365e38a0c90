//! OpenID AuthZEN Authorization API 1.0: the wire model, its mapping to a
//! [`DecisionRequest`], batches and searches. Transport-free (the HTTP binding is
//! in [`super::http`]); every decision is made by [`Engine::decide_with`].
//!
//! # Mapping
//!
//! - `action.name` → the Cedar action with that id among the schema's actions, in
//!   whatever namespace declares it (`read`, `tools/call`); an id declared in several
//!   namespaces must be written as a full uid (`Mcp::Action::"tools/call"`).
//! - `subject` and `resource` `type` + `id` → a Cedar entity. A qualified type
//!   (`Mcp::Tool`) is taken as it is; a bare one (`user`, `tool`, `record`) matches
//!   the schema's entity types by their last segment, case-insensitively, preferring
//!   the action's namespace. An ambiguous name is a bad request; an unknown one is a
//!   deny.
//! - A subject whose type is an `Application` type is the application principal
//!   (an application-only request); any other subject is the user principal.
//! - For actions of the MCP profile (the `Mcp` namespace), `context.agent` (or
//!   `context.application`), a string id or an `{type, id, properties}` object,
//!   names the application acting for the subject; it is taken out of the
//!   context. Other namespaces keep the context exactly as given.
//! - `properties` of the subject, resource and agent → attributes of those entities
//!   for this request only (entity data wins where it sets the same attribute);
//!   properties the schema does not declare for the type are left out.
//! - `action.properties` → `context.action` (a record), unless the context has one.
//! - `context` → the Cedar context (only what the schema declares for the action).
//! - MCP binding: a resource of type `Mcp::Tool`, `Mcp::Resource` or `Mcp::Prompt`
//!   with id `server/name` belongs to `Mcp::Server::"server"` (so a tool the entity
//!   data does not list is still covered by server-wide policies). The URI of an
//!   `Mcp::Resource` id (`server/uri`) is put in normal form as on every other
//!   interface ([`crate::uri`]); one without a normal form is a deny.
//! - A verified bearer token's identity wins over the body: its user (as the
//!   subject's type), application, groups, scopes and claims. A token that names
//!   no application leaves the one the body names.
//! - For actions of the MCP profile, a context attribute that only the service
//!   fills (`user`, `application` other than as the agent, `server`, `scopes`,
//!   `claims`, in any spelling that reads as one of them) is a bad request.
//!
//! # Explanations
//!
//! Responses carry only `decision` unless the request sets `"options": {"explain":
//! true}` (top level); then each decision has a `context` with the decision id, the
//! reason, the snapshot generation and each principal's evaluation with its
//! determining policies (`id`, `file`, `line`). A failed batch item always has
//! `context.error` (`status`, `message`).

use base64::Engine as _;
use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, Schema};
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::refusal::Refusal;
use crate::authz::names::{NameError, resolve_action, resolve_entity_type};
use crate::authz::{
    DecisionMeta, DecisionRequest, Engine, Interface, Outcome, RequestEntity, uid_json,
};
use crate::identity::Identity;
use crate::mcp::Kind;
use crate::policy::Snapshot;

/// A request (or a batch item) that cannot be read: an invalid request (HTTP 400).
fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::invalid(msg)
}

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

fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
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

/// Why an evaluation could not become a [`DecisionRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// The request is ambiguous or malformed: refused as an invalid request.
    Bad(Refusal),
    /// The request names what the policies do not know: a deny with this reason.
    Deny(String),
}

impl From<NameError> for MapError {
    fn from(e: NameError) -> Self {
        match e {
            NameError::Unknown { .. } => MapError::Deny(e.to_string()),
            NameError::Ambiguous { .. } | NameError::Invalid(_) => {
                MapError::Bad(bad(e.to_string()))
            }
        }
    }
}

fn is_application_type(ty: &EntityTypeName) -> bool {
    ty.basename().eq_ignore_ascii_case("application")
}

fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

/// The resource entity of an evaluation: an `Mcp::Resource` id (`server/uri`) with
/// its URI in normal form (none is a deny), any other id as given.
fn resource_uid(ty: &EntityTypeName, id: &str) -> Result<EntityUid, MapError> {
    if ty != Kind::Resource.type_name() {
        return Ok(uid(ty, id));
    }
    crate::uri::normal_resource_id(id)
        .map(|normal| uid(ty, &normal))
        .map_err(|e| {
            MapError::Deny(format!(
                "the resource `{}` is refused: {e}",
                crate::uri::Shown(id)
            ))
        })
}

/// The properties the schema declares for `uid`'s type (nulls left out too).
/// Cedar's schema gives no list of attributes, so each property is tried alone on
/// an otherwise empty entity: one that Cedar calls unexpected is undeclared. A
/// declared property of the wrong type is kept, so that the decision reports it.
pub fn declared_properties(
    schema: &Schema,
    uid: &EntityUid,
    props: &Map<String, Value>,
) -> Map<String, Value> {
    use cedar_policy::conformance_errors::EntitySchemaConformanceError as Conformance;
    use cedar_policy::entities_errors::EntitiesError;
    use cedar_policy::entities_json_errors::JsonDeserializationError;
    props
        .iter()
        .filter(|(_, v)| !v.is_null())
        .filter(|(k, v)| {
            let probe = json!({ "uid": uid_json(uid), "attrs": { k.as_str(): v }, "parents": [] });
            !matches!(
                Entity::from_json_value(probe, Some(schema)),
                Err(EntitiesError::Deserialization(
                    JsonDeserializationError::EntitySchemaConformance(
                        Conformance::UnexpectedEntityAttr(_)
                    )
                ))
            )
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An application named in the context, with its properties.
type Agent = (EntityUid, Map<String, Value>);

/// The application named by `context.agent` / `context.application`.
fn take_agent(
    schema: &Schema,
    context: &mut Map<String, Value>,
    namespace: &str,
) -> Result<Option<Agent>, MapError> {
    let mut found = None;
    for key in ["agent", "application"] {
        let Some(value) = context.remove(key) else {
            continue;
        };
        if found.is_some() || value.is_null() {
            continue;
        }
        let (type_name, id, props) = match value {
            Value::String(id) if !id.is_empty() => ("application".to_owned(), id, Map::new()),
            Value::Object(_) => {
                let e = parse_entity(Some(&value), &format!("context.{key}"), true)
                    .map_err(MapError::Bad)?;
                (e.type_name, e.id.unwrap_or_default(), e.properties)
            }
            _ => {
                return Err(MapError::Bad(bad(format!(
                    "`context.{key}` must be an application id or an object with `type` and `id`"
                ))));
            }
        };
        let ty = resolve_entity_type(schema, &type_name, Some(namespace))?;
        found = Some((uid(&ty, &id), props));
    }
    Ok(found)
}

/// The MCP server a resource belongs to: itself for a server; `server` of
/// `server/name` for a tool, resource or prompt of the `Mcp` model.
fn mcp_server_of(resource: &EntityUid) -> Option<EntityUid> {
    let ty = resource.type_name();
    if ty == Kind::Server.type_name() {
        return Some(resource.clone());
    }
    if [Kind::Tool, Kind::Resource, Kind::Prompt]
        .iter()
        .any(|k| k.type_name() == ty)
    {
        let id = resource.id().unescaped();
        return match id.split_once('/') {
            Some((server, name)) if !server.is_empty() && !name.is_empty() => {
                Some(Kind::Server.uid(server))
            }
            _ => None,
        };
    }
    None
}

/// Map an evaluation to a decision request on `snapshot`'s schema, with the
/// verified `identity` (if any) winning over the body's principals.
pub fn to_decision_request(
    snapshot: &Snapshot,
    eval: &Evaluation,
    identity: Option<&Identity>,
) -> Result<DecisionRequest, MapError> {
    let schema = &snapshot.schema;
    let action = resolve_action(schema, &eval.action.name)?;
    let namespace = action.type_name().namespace();
    let subject_ty = resolve_entity_type(schema, &eval.subject.type_name, Some(&namespace))?;
    let resource_ty = resolve_entity_type(schema, &eval.resource.type_name, Some(&namespace))?;
    let subject = uid(&subject_ty, eval.subject.id.as_deref().unwrap_or_default());
    let resource = resource_uid(
        &resource_ty,
        eval.resource.id.as_deref().unwrap_or_default(),
    )?;

    let mut request = DecisionRequest::new(action, resource.clone());
    let mut context = eval.context.clone();
    // The MCP binding names the acting application in `context.agent`; in other
    // namespaces the context is the caller's own, exactly as Cedar sees it.
    let agent = if crate::authz::mcp_profile(&request.action) {
        let agent = take_agent(schema, &mut context, &namespace)?;
        // Another spelling of `agent` (`Agent`, `AGENT`) may name the application to
        // whoever else reads the body: refused, never silently left out.
        if let Some(k) = context.keys().find(|k| crate::policy::reads_as(k, "agent")) {
            return Err(MapError::Bad(bad(format!(
                "`context.{k}` reads as `context.agent`: name the application once, as `agent`"
            ))));
        }
        agent
    } else {
        None
    };
    let subject_is_app = is_application_type(&subject_ty);
    if subject_is_app {
        if let Some((a, _)) = &agent
            && a != &subject
        {
            return Err(MapError::Bad(bad(
                "the subject is an application and `context.agent` names another one",
            )));
        }
        request.application = Some(subject.clone());
    } else {
        request.user = Some(subject.clone());
        request.application = agent.as_ref().map(|(a, _)| a.clone());
    }
    if !eval.action.properties.is_empty() && !context.contains_key("action") {
        context.insert(
            "action".into(),
            Value::Object(eval.action.properties.clone()),
        );
    }
    // What only the service fills (`user`, `server`, `scopes`, ...) never comes
    // from the body; the application is named by `context.agent` (taken out above).
    if let Some(reason) = crate::authz::service_filled_in(&request.action, &context) {
        return Err(MapError::Bad(bad(reason)));
    }
    request.context = context;
    request.server = mcp_server_of(&resource);

    if let Some(identity) = identity {
        apply_identity(
            schema,
            &namespace,
            &subject_ty,
            subject_is_app,
            identity,
            &mut request,
        )?;
    }

    let mut extra = vec![(resource, &eval.resource.properties)];
    extra.push((subject, &eval.subject.properties));
    if let Some((a, props)) = &agent {
        extra.push((a.clone(), props));
    }
    for (entity, props) in extra {
        let is_principal =
            request.user.as_ref() == Some(&entity) || request.application.as_ref() == Some(&entity);
        if props.is_empty() || (entity != request.resource && !is_principal) {
            continue;
        }
        let attrs = declared_properties(schema, &entity, props);
        if !attrs.is_empty() {
            request.entities.push(RequestEntity {
                uid: entity,
                parents: Vec::new(),
                attrs,
            });
        }
    }
    Ok(request)
}

/// Put a verified token's identity into `request`: its user (of the subject's type,
/// or the namespace's `User` type when the subject is an application), application,
/// groups, scopes and claims.
fn apply_identity(
    schema: &Schema,
    namespace: &str,
    subject_ty: &EntityTypeName,
    subject_is_app: bool,
    identity: &Identity,
    request: &mut DecisionRequest,
) -> Result<(), MapError> {
    let user_ty = if subject_is_app {
        resolve_entity_type(schema, "user", Some(namespace)).ok()
    } else {
        Some(subject_ty.clone())
    };
    request.user = match (&identity.user, &user_ty) {
        (Some(u), Some(ty)) => Some(uid(ty, u)),
        (Some(_), None) => {
            return Err(MapError::Deny(
                "the token names a user but the schema declares no user type".into(),
            ));
        }
        (None, _) => None,
    };
    // The token's application wins over the body's; a token without one leaves
    // the application the body names (never drops it).
    if let Some(a) = &identity.application {
        let ty = if subject_is_app {
            subject_ty.clone()
        } else {
            resolve_entity_type(schema, "application", Some(namespace))?
        };
        request.application = Some(uid(&ty, a));
    }
    if let Some(user) = &request.user
        && !identity.groups.is_empty()
        && let Ok(group_ty) = resolve_entity_type(schema, "group", Some(namespace))
    {
        request.entities.push(RequestEntity {
            uid: user.clone(),
            parents: identity.groups.iter().map(|g| uid(&group_ty, g)).collect(),
            attrs: Map::new(),
        });
    }
    request.token = identity.token_facts();
    Ok(())
}

/// Decide one evaluation: a bad request, or an outcome (a mapping failure that is
/// not the caller's fault is a recorded deny).
pub fn decide(
    engine: &Engine,
    snapshot: &Snapshot,
    eval: &Evaluation,
    identity: Option<&Identity>,
    meta: &DecisionMeta,
) -> Result<Outcome, Refusal> {
    match to_decision_request(snapshot, eval, identity) {
        Ok(request) => Ok(engine.decide(snapshot, Interface::Authzen, &request, meta)),
        Err(MapError::Deny(reason)) => {
            Ok(engine.reject(snapshot, Interface::Authzen, reason, meta))
        }
        Err(MapError::Bad(refusal)) => Err(refusal),
    }
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
            "evaluations": evaluations,
        }
    })
}

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
                other.chars().take(64).collect::<String>()
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
        let outcome = decide(engine, &snapshot, &eval, identity, meta)?;
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
                match parsed.and_then(|eval| decide(engine, &snapshot, &eval, identity, meta)) {
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

/// What a search looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// `/access/v1/search/subject`.
    Subject,
    /// `/access/v1/search/resource`.
    Resource,
    /// `/access/v1/search/action`.
    Action,
}

impl SearchKind {
    fn as_str(self) -> &'static str {
        match self {
            SearchKind::Subject => "subject",
            SearchKind::Resource => "resource",
            SearchKind::Action => "action",
        }
    }
}

/// Most results in one page (also the default page size).
pub const MAX_PAGE: usize = 1000;
/// Most candidates one search request decides: a page of a search whose
/// candidates are mostly denied ends early, with a `next_token` to go on from.
pub const MAX_SEARCH_DECISIONS: usize = 1000;

struct Page {
    offset: usize,
    limit: usize,
}

fn request_fingerprint(kind: SearchKind, body: &Map<String, Value>) -> String {
    let mut without_page = body.clone();
    without_page.remove("page");
    let text = format!("{}:{}", kind.as_str(), Value::Object(without_page));
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn page_of(kind: SearchKind, body: &Map<String, Value>) -> Result<Page, Refusal> {
    let page = match field(body, "page") {
        None => {
            return Ok(Page {
                offset: 0,
                limit: MAX_PAGE,
            });
        }
        Some(Value::Object(p)) => p,
        Some(_) => return Err(bad("`page` must be an object")),
    };
    let limit = match field(page, "limit") {
        None => None,
        // At most `limit` results, as the specification says: `0` gives none (and a
        // `next_token` when there is a result to come).
        Some(v) => match v.as_u64() {
            Some(n) => Some(usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE)),
            None => return Err(bad("`page.limit` must be a non-negative integer")),
        },
    };
    let token = match field(page, "token") {
        None => None,
        Some(Value::String(t)) if t.is_empty() => None,
        Some(Value::String(t)) => Some(t),
        Some(_) => return Err(bad("`page.token` must be a string")),
    };
    let Some(token) = token else {
        return Ok(Page {
            offset: 0,
            limit: limit.unwrap_or(MAX_PAGE),
        });
    };
    let invalid = || bad("`page.token` is not a token from a previous response to this request");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(invalid)?;
    let mut parts = text.split(':');
    let (Some("v1"), Some(offset), Some(token_limit), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid());
    };
    let offset: usize = offset.parse().map_err(|_| invalid())?;
    let token_limit: usize = token_limit.parse().map_err(|_| invalid())?;
    if hash != request_fingerprint(kind, body) {
        return Err(invalid());
    }
    if limit.is_some_and(|l| l != token_limit) {
        return Err(bad(
            "`page.limit` differs from the request that returned the token",
        ));
    }
    Ok(Page {
        offset,
        limit: token_limit.min(MAX_PAGE),
    })
}

fn next_token(kind: SearchKind, body: &Map<String, Value>, offset: usize, limit: usize) -> String {
    let text = format!("v1:{offset}:{limit}:{}", request_fingerprint(kind, body));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

/// A name in a search: ambiguous ones are the caller's to fix; unknown ones match nothing.
fn resolve<T>(r: Result<T, NameError>) -> Result<Option<T>, Refusal> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(NameError::Unknown { .. }) => Ok(None),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// Whether a fixed entity of a search is known: in the entity data, described by
/// the request's properties, or an MCP tool/resource/prompt of a known server.
fn known(snapshot: &Snapshot, uid: &EntityUid, props: &Map<String, Value>) -> bool {
    snapshot.entities.get(uid).is_some()
        || !props.is_empty()
        || mcp_server_of(uid).is_some_and(|s| &s != uid && snapshot.entities.get(&s).is_some())
}

/// The ids of the entities of type `ty` in the entity data, sorted.
fn ids_of_type(snapshot: &Snapshot, ty: &EntityTypeName) -> Vec<String> {
    let mut ids: Vec<String> = snapshot
        .entities
        .iter()
        .filter(|e| e.uid().type_name() == ty)
        .map(|e| e.uid().id().unescaped().to_owned())
        .collect();
    ids.sort();
    ids
}

fn empty_results() -> Value {
    json!({ "page": { "next_token": "", "count": 0 }, "results": [] })
}

/// Answer a search: the candidates the snapshot knows (entities of the searched
/// type from the entity data, or the actions the schema applies to the subject and
/// resource types), each evaluated with the decision core, in a stable order.
pub fn search(
    engine: &Engine,
    kind: SearchKind,
    body: &Map<String, Value>,
    identity: Option<&Identity>,
    meta: &DecisionMeta,
) -> Result<Value, Refusal> {
    let subject = parse_entity(body.get("subject"), "subject", kind != SearchKind::Subject)?;
    let resource = parse_entity(
        body.get("resource"),
        "resource",
        kind != SearchKind::Resource,
    )?;
    let action = match kind {
        SearchKind::Action => None,
        _ => Some(parse_action(body.get("action"), "action")?),
    };
    let context = parse_context(body, "context")?;
    let page = page_of(kind, body)?;
    let snapshot = engine.snapshot();
    let schema = &snapshot.schema;

    // Names: ambiguous ones are the caller's to fix; unknown ones match nothing.
    let action_uid = match &action {
        Some(a) => match resolve(resolve_action(schema, &a.name))? {
            Some(uid) => Some(uid),
            None => return Ok(empty_results()),
        },
        None => None,
    };
    let namespace = action_uid.as_ref().map(|a| a.type_name().namespace());
    let Some(subject_ty) = resolve(resolve_entity_type(
        schema,
        &subject.type_name,
        namespace.as_deref(),
    ))?
    else {
        return Ok(empty_results());
    };
    let namespace = namespace.unwrap_or_else(|| subject_ty.namespace());
    let Some(resource_ty) = resolve(resolve_entity_type(
        schema,
        &resource.type_name,
        Some(&namespace),
    ))?
    else {
        return Ok(empty_results());
    };
    // The fixed entities must be known (a verified token makes its user known).
    let fixed_known = |e: &EntityRef, ty: &EntityTypeName, token_user: bool| {
        token_user
            || known(
                &snapshot,
                &uid(ty, e.id.as_deref().unwrap_or_default()),
                &e.properties,
            )
    };
    let token_user = identity.is_some_and(|i| i.user.is_some() || i.application.is_some());
    let ok = match kind {
        SearchKind::Subject => fixed_known(&resource, &resource_ty, false),
        SearchKind::Resource => fixed_known(&subject, &subject_ty, token_user),
        SearchKind::Action => {
            fixed_known(&subject, &subject_ty, token_user)
                && fixed_known(&resource, &resource_ty, false)
        }
    };
    if !ok {
        return Ok(empty_results());
    }

    let candidates: Vec<String> = match kind {
        SearchKind::Subject => ids_of_type(&snapshot, &subject_ty),
        SearchKind::Resource => ids_of_type(&snapshot, &resource_ty),
        SearchKind::Action => {
            let mut actions: Vec<&EntityUid> = schema
                .actions_for_principal_and_resource(&subject_ty, &resource_ty)
                .collect();
            actions.sort_by_key(|a| a.to_string());
            actions
                .into_iter()
                .map(|a| {
                    // The bare id where it is unique, else the full uid.
                    let id = a.id().unescaped();
                    if schema
                        .actions()
                        .filter(|b| b.id().unescaped() == id)
                        .count()
                        == 1
                    {
                        id.to_owned()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        }
    };
    // In a subject search the token's user is not the subject searched for: only
    // its application, scopes and claims apply (see `subject_search_request`).
    let search_identity = if kind == SearchKind::Subject {
        None
    } else {
        identity
    };

    let mut results = Vec::new();
    let mut next = None;
    for (decided, (index, candidate)) in candidates.iter().enumerate().skip(page.offset).enumerate()
    {
        if decided == MAX_SEARCH_DECISIONS {
            next = Some(index);
            break;
        }
        let eval = Evaluation {
            subject: match kind {
                SearchKind::Subject => EntityRef {
                    id: Some(candidate.clone()),
                    ..subject.clone()
                },
                _ => subject.clone(),
            },
            action: match (&action, kind) {
                (_, SearchKind::Action) => ActionRef {
                    name: candidate.clone(),
                    properties: Map::new(),
                },
                (Some(a), _) => a.clone(),
                (None, _) => continue,
            },
            resource: match kind {
                SearchKind::Resource => EntityRef {
                    id: Some(candidate.clone()),
                    ..resource.clone()
                },
                _ => resource.clone(),
            },
            context: context.clone(),
        };
        let mapped =
            to_decision_request(&snapshot, &eval, search_identity).and_then(|mut request| {
                if kind == SearchKind::Subject
                    && let Some(i) = identity
                {
                    subject_search_request(schema, &namespace, i, &mut request)?;
                }
                Ok(request)
            });
        let allowed = match mapped {
            Ok(request) => {
                engine
                    .decide(&snapshot, Interface::Authzen, &request, meta)
                    .decision
                    .allow
            }
            Err(MapError::Deny(_)) => false,
            Err(MapError::Bad(refusal)) => return Err(refusal),
        };
        if !allowed {
            continue;
        }
        if results.len() == page.limit {
            // One more result exists: the next page starts with it.
            next = Some(index);
            break;
        }
        results.push(match kind {
            SearchKind::Action => json!({ "name": candidate }),
            SearchKind::Subject => json!({ "type": subject.type_name, "id": candidate }),
            SearchKind::Resource => json!({ "type": resource.type_name, "id": candidate }),
        });
    }
    let token = next.map_or_else(String::new, |offset| {
        next_token(kind, body, offset, page.limit)
    });
    Ok(json!({
        "page": { "next_token": token, "count": results.len() },
        "results": results,
    }))
}

/// A verified token in a subject search: the candidate stays the subject; the
/// token's application (unless the candidates are applications), scopes and claims
/// apply.
fn subject_search_request(
    schema: &Schema,
    namespace: &str,
    identity: &Identity,
    request: &mut DecisionRequest,
) -> Result<(), MapError> {
    if let Some(app) = &identity.application
        && request.user.is_some()
    {
        let ty = resolve_entity_type(schema, "application", Some(namespace))?;
        request.application = Some(uid(&ty, app));
    }
    request.token = identity.token_facts();
    Ok(())
}
