//! The searches (`/access/v1/search/{subject,resource,action}`): the candidates the
//! snapshot knows, each decided by the core, in a stable order, a page at a time
//! (`page.token` names the request it continues). Without `arguments` in its
//! context, a search answers with the listing rule (what may be used at all).

use base64::Engine as _;
use cedar_policy::{EntityTypeName, EntityUid, Schema};
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::bad;
use super::map::{MapError, mcp_server_of, to_decision_request, uid};
use super::wire::{
    ActionRef, EntityRef, Evaluation, field, parse_action, parse_context, parse_entity,
};
use crate::api::refusal::Refusal;
use crate::authz::names::{NameError, resolve_action, resolve_entity_type};
use crate::authz::{DecisionMeta, DecisionRequest, Engine, Interface};
use crate::identity::Identity;
use crate::policy::Snapshot;

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

    // A search that gives no `arguments` asks what may be used at all, as a list
    // does: a declared tool or prompt is a result unless every use of it would be
    // denied (decided with the arguments unknown, see `Engine::listed`), and the
    // candidates are not recorded one by one. With `arguments`, each candidate is
    // decided, and recorded, as that use.
    let with_arguments = context.contains_key("arguments");
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
            // Which tools (prompts, ...) may be used at all: the listing rule.
            Ok(request) if !with_arguments => engine.listed(&snapshot, &request),
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
