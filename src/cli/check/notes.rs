//! What `check` dropped or did not know: the notes printed beside a decision.
//!
//! The core leaves out every context attribute the schema does not declare for the
//! action (`authz::build_context`, by the action's [`Shape`]), and decides for a user,
//! application, tool, resource or prompt the entity data does not list (in no group,
//! with no attributes, a child of its server). Both are right for the service, and
//! both make a mistyped `check` answer a question nobody asked: `{"argument": ...}`
//! is dropped and the answer is allow. The notes say so. They are computed here from
//! the same [`Shape`] the core prunes by, walked the way [`Shape::prune`] walks it.

use cedar_policy::{EntityTypeName, EntityUid};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::authz::{DecisionRequest, Rules, mcp_profile, tool_action};
use crate::mcp::Kind;
use crate::policy::Snapshot;

/// One thing `check` dropped or did not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    /// What kind of note: `undeclared_context`, `undeclared_argument`,
    /// `undeclared_claim`, `unknown_user`, `unknown_application`, `unknown_group`,
    /// `unknown_server`, `unknown_tool`, `unknown_resource`, `unknown_prompt`,
    /// `unknown_entity`.
    pub kind: &'static str,
    /// What it is about: the attribute's path (`arguments.limit`, `argument`), the
    /// claim's name, or the entity's id.
    pub name: String,
    /// One sentence for a person.
    pub message: String,
}

/// The notes of `request` as the core will decide it on `snapshot`: undeclared
/// context attributes, arguments and claims (dropped), then entities the entity
/// data does not define.
pub fn notes(snapshot: &Snapshot, request: &DecisionRequest) -> Vec<Note> {
    let mut out = Vec::new();
    // A declared tool's call is decided with its tool action: its shape says what is dropped.
    let action = match tool_action(snapshot, request, Rules::default()) {
        Ok(Some(typed)) => &typed.action,
        _ => &request.action,
    };
    if let Some(shape) = snapshot.context_shapes.get(action) {
        let mut dropped = shape.undeclared_paths(&Value::Object(request.context.clone()));
        if let Some(token) = &request.token {
            // What a verified token brings, as the core puts it into the context.
            let mut facts = Map::new();
            facts.insert(
                "scopes".into(),
                Value::Array(token.scopes.iter().cloned().map(Value::String).collect()),
            );
            facts.insert("claims".into(), Value::Object(token.claims.clone()));
            if token.scopes.is_empty() {
                facts.remove("scopes");
            }
            if token.claims.is_empty() {
                facts.remove("claims");
            }
            if mcp_profile(&request.action) {
                dropped.extend(shape.undeclared_paths(&Value::Object(facts)));
            } else {
                // The core gives token facts to actions of the MCP profile only.
                out.extend(facts.keys().map(|key| Note {
                    kind: "undeclared_context",
                    name: key.clone(),
                    message: format!(
                        "`{key}` is given only to actions of the `Mcp` namespace, not to {action}: \
                         dropped before evaluation"
                    ),
                }));
            }
        }
        for path in dropped {
            out.push(dropped_note(action, path));
        }
    }
    out.extend(unknown_entities(snapshot, request));
    out
}

fn dropped_note(action: &EntityUid, path: String) -> Note {
    if let Some(name) = path.strip_prefix("arguments.") {
        Note {
            kind: "undeclared_argument",
            message: format!(
                "argument `{name}` is not declared for {action}: dropped before evaluation"
            ),
            name: name.to_owned(),
        }
    } else if let Some(name) = path.strip_prefix("claims.") {
        Note {
            kind: "undeclared_claim",
            message: format!(
                "claim `{name}` is not declared in `context.claims` of {action}: dropped before \
                 evaluation"
            ),
            name: name.to_owned(),
        }
    } else {
        Note {
            kind: "undeclared_context",
            message: format!(
                "context attribute `{path}` is not declared for {action}: dropped before evaluation"
            ),
            name: path,
        }
    }
}

/// The request's principals, groups, resource and server that the entity data
/// does not define. A user given groups (by `--group` or a token) is expected to
/// be missing from the entity data, as a token's user usually is: not a note.
fn unknown_entities(snapshot: &Snapshot, request: &DecisionRequest) -> Vec<Note> {
    let known = |uid: &EntityUid| snapshot.entities.get(uid).is_some();
    let mut out = Vec::new();
    let with_groups = |uid: &EntityUid| {
        request
            .entities
            .iter()
            .any(|e| &e.uid == uid && !e.parents.is_empty())
    };
    if let Some(user) = &request.user
        && !known(user)
        && !with_groups(user)
    {
        out.push(unknown(user, "in no group, with no attributes"));
    }
    if let Some(app) = &request.application
        && !known(app)
    {
        out.push(unknown(app, "in no group, with no attributes"));
    }
    let mut groups: Vec<&EntityUid> = request
        .entities
        .iter()
        .flat_map(|e| e.parents.iter())
        .collect();
    groups.sort_by_key(|g| g.to_string());
    groups.dedup();
    for group in groups.into_iter().filter(|g| !known(g)) {
        out.push(unknown(
            group,
            "in no other group; only policies that name it match",
        ));
    }
    if !known(&request.resource) {
        let how = if request.server.is_some() && request.server.as_ref() != Some(&request.resource)
        {
            "decided as a child of its server, with no attributes"
        } else {
            "with no attributes"
        };
        out.push(unknown(&request.resource, how));
    }
    if let Some(server) = &request.server
        && server != &request.resource
        && !known(server)
    {
        out.push(unknown(server, "with no attributes"));
    }
    out
}

fn unknown(uid: &EntityUid, consequence: &str) -> Note {
    let kind = kind_of(uid.type_name());
    let id = uid.id().unescaped().to_owned();
    let what = match kind {
        "unknown_entity" => uid.to_string(),
        _ => format!("{} `{id}`", kind.trim_start_matches("unknown_")),
    };
    Note {
        kind,
        message: format!("{what} is not in the entity data: {consequence}"),
        name: match kind {
            "unknown_entity" => uid.to_string(),
            _ => id,
        },
    }
}

fn kind_of(ty: &EntityTypeName) -> &'static str {
    [
        (Kind::User, "unknown_user"),
        (Kind::Application, "unknown_application"),
        (Kind::Group, "unknown_group"),
        (Kind::Server, "unknown_server"),
        (Kind::Tool, "unknown_tool"),
        (Kind::Resource, "unknown_resource"),
        (Kind::Prompt, "unknown_prompt"),
    ]
    .into_iter()
    .find(|(k, _)| k.type_name() == ty)
    .map_or("unknown_entity", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Shape;
    use serde_json::json;

    fn record(attrs: &[(&str, Shape)]) -> Shape {
        Shape::Record(
            attrs
                .iter()
                .map(|(k, s)| ((*k).to_owned(), s.clone()))
                .collect(),
        )
    }

    /// `{ arguments?: { max_results?: Long, tags?: Set<{ name: String }> }, who?: U,
    /// claims?: { email?: String } }`
    fn shape() -> Shape {
        use crate::policy::Leaf;
        let tag = record(&[("name", Shape::Leaf(Leaf::String))]);
        record(&[
            (
                "arguments",
                record(&[
                    ("max_results", Shape::Leaf(Leaf::Long)),
                    ("tags", Shape::Set(Box::new(tag))),
                ]),
            ),
            ("who", Shape::Leaf(Leaf::Entity)),
            ("claims", record(&[("email", Shape::Leaf(Leaf::String))])),
        ])
    }

    #[test]
    fn undeclared_paths_are_those_prune_leaves_out() {
        let s = shape();
        let given = json!({
            "argument": { "max_results": 1 },
            "arguments": { "max_results": 500, "limit": 3, "tags": [{ "name": "x", "junk": 1 }] },
            "who": { "__entity": { "type": "U", "id": "u" } },
            "claims": { "email": "e", "dept": "d" },
        });
        let out = s.undeclared_paths(&given);
        assert_eq!(
            out,
            [
                "argument",
                "arguments.limit",
                "arguments.tags[0].junk",
                "claims.dept"
            ]
        );
        // What is listed is exactly what pruning removes.
        let pruned = s.undeclared_paths(&s.prune(given));
        assert!(pruned.is_empty(), "{pruned:?}");
    }

    #[test]
    fn a_value_of_another_kind_is_not_listed() {
        let out = shape().undeclared_paths(&json!({ "arguments": 42 }));
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn kinds_by_path() {
        let action = crate::mcp::action("tools/call");
        let kinds: Vec<_> = ["arguments.limit", "claims.dept", "argument", "request.x"]
            .into_iter()
            .map(|p| {
                let n = dropped_note(&action, p.to_owned());
                (n.kind, n.name)
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("undeclared_argument", "limit".to_owned()),
                ("undeclared_claim", "dept".to_owned()),
                ("undeclared_context", "argument".to_owned()),
                ("undeclared_context", "request.x".to_owned()),
            ]
        );
    }
}
