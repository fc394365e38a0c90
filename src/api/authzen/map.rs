//! An evaluation mapped to a [`DecisionRequest`] on one snapshot's schema (see
//! "Mapping" in the [module docs](super)).

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, Schema};
use serde_json::{Map, Value, json};

use super::bad;
use super::wire::{Evaluation, parse_entity};
use crate::api::refusal::Refusal;
use crate::authz::names::{NameError, resolve_action, resolve_snapshot_type};
use crate::authz::{DecisionRequest, RequestEntity, uid_json};
use crate::identity::Identity;
use crate::mcp::Kind;
use crate::policy::Snapshot;

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

pub(super) fn uid(ty: &EntityTypeName, id: &str) -> EntityUid {
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
    snapshot: &Snapshot,
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
        let ty = resolve_snapshot_type(snapshot, &type_name, Some(namespace))?;
        found = Some((uid(&ty, &id), props));
    }
    Ok(found)
}

/// The MCP server a resource belongs to: itself for a server; `server` of
/// `server/name` for a tool, resource or prompt of the `Mcp` model.
pub(super) fn mcp_server_of(resource: &EntityUid) -> Option<EntityUid> {
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
    let subject_ty = resolve_snapshot_type(snapshot, &eval.subject.type_name, Some(&namespace))?;
    let resource_ty = resolve_snapshot_type(snapshot, &eval.resource.type_name, Some(&namespace))?;
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
        let agent = take_agent(snapshot, &mut context, &namespace)?;
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
            snapshot,
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
    snapshot: &Snapshot,
    namespace: &str,
    subject_ty: &EntityTypeName,
    subject_is_app: bool,
    identity: &Identity,
    request: &mut DecisionRequest,
) -> Result<(), MapError> {
    let user_ty = if subject_is_app {
        resolve_snapshot_type(snapshot, "user", Some(namespace)).ok()
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
            resolve_snapshot_type(snapshot, "application", Some(namespace))?
        };
        request.application = Some(uid(&ty, a));
    }
    if let Some(user) = &request.user
        && !identity.groups.is_empty()
        && let Ok(group_ty) = resolve_snapshot_type(snapshot, "group", Some(namespace))
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
