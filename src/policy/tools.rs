//! The tool and prompt actions a schema declares (DESIGN: typed tools): for a tool
//! `T` of server `S`, `Mcp::Action::"tools/call/S/T"`, a member of
//! `Mcp::Action::"tools/call"`, whose context types the tool's arguments; for a
//! prompt `P`, `Mcp::Action::"prompts/get/S/P"` in `Mcp::Action::"prompts/get"`.
//!
//! A call of a declared tool is evaluated with its tool action. [`ToolActions`]
//! says which action that is for a request's action and resource, and which servers
//! have imported tools at all (a call of a tool such a server does not declare is
//! refused by default).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entities, EntityId, EntityTypeName, EntityUid};

use super::Shape;

/// The namespace of the MCP profile.
const NAMESPACE: &str = "Mcp";

/// A method whose calls may be typed per target: the method's action, and the entity
/// type of its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypedMethod {
    /// `tools/call` on an `Mcp::Tool`.
    ToolsCall,
    /// `prompts/get` on an `Mcp::Prompt`.
    PromptsGet,
}

impl TypedMethod {
    const ALL: [TypedMethod; 2] = [TypedMethod::ToolsCall, TypedMethod::PromptsGet];

    /// The method's name, the id of its action (`tools/call`).
    pub fn method(self) -> &'static str {
        match self {
            TypedMethod::ToolsCall => "tools/call",
            TypedMethod::PromptsGet => "prompts/get",
        }
    }

    /// The entity type of its targets, without the namespace (`Tool`).
    pub fn target_type(self) -> &'static str {
        match self {
            TypedMethod::ToolsCall => "Tool",
            TypedMethod::PromptsGet => "Prompt",
        }
    }

    /// What its targets are called in a sentence (`tool`).
    pub fn noun(self) -> &'static str {
        match self {
            TypedMethod::ToolsCall => "tool",
            TypedMethod::PromptsGet => "prompt",
        }
    }
}

/// One declared tool (or prompt) action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAction {
    /// Which method it types.
    pub method: TypedMethod,
    /// The action, `Mcp::Action::"tools/call/S/T"`.
    pub action: EntityUid,
}

/// The tool and prompt actions of a snapshot's schema, by the target they type.
#[derive(Debug, Clone, Default)]
pub struct ToolActions {
    /// The method actions (`Mcp::Action::"tools/call"`, ...).
    methods: Vec<(TypedMethod, EntityUid)>,
    /// By target (`Mcp::Tool::"S/T"`): its action.
    by_target: HashMap<EntityUid, ToolAction>,
    /// Servers with at least one declared tool action.
    tool_servers: HashSet<String>,
    /// Servers with at least one declared prompt action.
    prompt_servers: HashSet<String>,
}

impl ToolActions {
    /// The tool and prompt actions among the actions of `shapes` (a schema's
    /// actions): those named `<method>/<server>/<name>` in the `Mcp` namespace that
    /// are members of the method's action in `entities` (which hold the schema's
    /// action entities).
    pub fn new(shapes: &HashMap<EntityUid, Shape>, entities: &Entities) -> Self {
        let mut out = ToolActions::default();
        let Ok(action_type) = EntityTypeName::from_str(&format!("{NAMESPACE}::Action")) else {
            return out;
        };
        for method in TypedMethod::ALL {
            out.methods.push((
                method,
                EntityUid::from_type_name_and_id(
                    action_type.clone(),
                    EntityId::new(method.method()),
                ),
            ));
        }
        let methods = out.methods.clone();
        for action in shapes.keys() {
            if action.type_name() != &action_type {
                continue;
            }
            let id = action.id().unescaped();
            for (method, method_uid) in &methods {
                let Some(target) = id
                    .strip_prefix(method.method())
                    .and_then(|rest| rest.strip_prefix('/'))
                else {
                    continue;
                };
                let Some((server, name)) = target.split_once('/') else {
                    continue;
                };
                if server.is_empty() || name.is_empty() {
                    continue;
                }
                let member = entities
                    .ancestors(action)
                    .is_some_and(|mut a| a.any(|p| p == method_uid));
                let Ok(target_type) =
                    EntityTypeName::from_str(&format!("{NAMESPACE}::{}", method.target_type()))
                else {
                    continue;
                };
                if !member {
                    continue;
                }
                out.servers_mut(*method).insert(server.to_owned());
                out.by_target.insert(
                    EntityUid::from_type_name_and_id(target_type, EntityId::new(target)),
                    ToolAction {
                        method: *method,
                        action: action.clone(),
                    },
                );
            }
        }
        out
    }

    /// Whether the schema declares no tool or prompt action.
    pub fn is_empty(&self) -> bool {
        self.by_target.is_empty()
    }

    /// How many tool and prompt actions the schema declares.
    pub fn len(&self) -> usize {
        self.by_target.len()
    }

    /// The method `action` is, when it is one whose calls may be typed.
    pub fn method_of(&self, action: &EntityUid) -> Option<TypedMethod> {
        self.methods
            .iter()
            .find(|(_, uid)| uid == action)
            .map(|(m, _)| *m)
    }

    /// The tool or prompt action to evaluate a request for `action` on `resource`
    /// with: `Mcp::Action::"tools/call/S/T"` for `tools/call` on
    /// `Mcp::Tool::"S/T"` when the schema declares it, likewise for `prompts/get`.
    pub fn action_for(&self, action: &EntityUid, resource: &EntityUid) -> Option<&ToolAction> {
        if self.by_target.is_empty() {
            return None;
        }
        let method = self.method_of(action)?;
        self.by_target
            .get(resource)
            .filter(|typed| typed.method == method)
    }

    /// Whether the schema declares any target of `method` on `server`.
    pub fn server_has(&self, method: TypedMethod, server: &str) -> bool {
        match method {
            TypedMethod::ToolsCall => self.tool_servers.contains(server),
            TypedMethod::PromptsGet => self.prompt_servers.contains(server),
        }
    }

    fn servers_mut(&mut self, method: TypedMethod) -> &mut HashSet<String> {
        match method {
            TypedMethod::ToolsCall => &mut self.tool_servers,
            TypedMethod::PromptsGet => &mut self.prompt_servers,
        }
    }
}

/// The required arguments of a reference tool or prompt (policies/tools/), so a call
/// of it fits its action; none for any other. One table for the unit and the
/// integration tests: `tests/fixtures/mcp/reference_arguments.json`.
#[cfg(test)]
pub(crate) fn reference_arguments(server: &str, tool: &str) -> Option<serde_json::Value> {
    let table: serde_json::Value = serde_json::from_str(include_str!(
        "../../tests/fixtures/mcp/reference_arguments.json"
    ))
    .expect("the reference arguments table is JSON");
    table.get(format!("{server}/{tool}")).cloned()
}

/// A temporary copy of the reference `policies/` with the hand-written fragments of
/// `tests/fixtures/typed/tools/` (servers `docs` and `payments`) instead of its
/// imported ones and the policies of
/// `tests/fixtures/typed/typed.cedar`: `action ==` the method actions that now have
/// members becomes `action in`, and the tools the fragments' entity data defines
/// leave `entities.json`.
#[cfg(test)]
pub(crate) fn typed_policy_dir() -> tempfile::TempDir {
    use serde_json::Value;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures/typed");
    let dir = tempfile::tempdir().expect("temp dir");
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).expect("tools dir");
    let mut defined = HashSet::new();
    for entry in std::fs::read_dir(fixture.join("tools")).expect("fixture") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("fragment");
        if path.to_string_lossy().ends_with(".entities.json") {
            let json: Value = serde_json::from_str(&text).expect("entity data");
            for e in json.as_array().expect("array") {
                defined.insert(e["uid"].clone());
            }
        }
        std::fs::write(tools.join(path.file_name().expect("name")), text).expect("write");
    }
    // The reference directory's imported servers the fixture does not replace.
    for entry in std::fs::read_dir(root.join("policies/tools")).expect("reference tools") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        if !tools.join(&name).exists() {
            std::fs::copy(&path, tools.join(name)).expect("copy");
        }
    }
    // The reference directory's own files; its imported `docs` gives way to the
    // fixture's fragment.
    for entry in std::fs::read_dir(root.join("policies")).expect("policies") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            continue;
        }
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).expect("policy file");
        let text = if name == super::ENTITIES_FILE {
            let json: Value = serde_json::from_str(&text).expect("entity data");
            let mut kept: Vec<Value> = json
                .as_array()
                .expect("array")
                .iter()
                .filter(|e| !defined.contains(&e["uid"]))
                .cloned()
                .collect();
            kept.push(serde_json::json!({
                "uid": { "type": "Mcp::Server", "id": "payments" },
                "attrs": { "environment": "production" },
                "parents": []
            }));
            serde_json::to_string_pretty(&kept).expect("json")
        } else {
            text.replace(
                "action == Mcp::Action::\"tools/call\"",
                "action in Mcp::Action::\"tools/call\"",
            )
            .replace(
                "action == Mcp::Action::\"prompts/get\"",
                "action in Mcp::Action::\"prompts/get\"",
            )
        };
        std::fs::write(dir.path().join(&name), text).expect("write");
    }
    std::fs::copy(fixture.join("typed.cedar"), dir.path().join("typed.cedar")).expect("copy");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Snapshot, read_sources};

    fn uid(s: &str) -> EntityUid {
        s.parse().expect("uid")
    }

    #[test]
    fn fragments_and_their_entities_load_as_one_schema_and_entity_set() {
        let dir = typed_policy_dir();
        let sources = read_sources(dir.path()).expect("sources");
        assert_eq!(sources.schema.0, "mcp.cedarschema");
        let fragments: Vec<&str> = sources.fragments.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            fragments,
            [
                "tools/docs.cedarschema",
                "tools/payments.cedarschema",
                "tools/projects.cedarschema"
            ]
        );
        let entity_files: Vec<&str> = sources
            .entity_fragments
            .iter()
            .map(|(r, _)| r.as_str())
            .collect();
        assert_eq!(
            entity_files,
            [
                "tools/docs.entities.json",
                "tools/payments.entities.json",
                "tools/projects.entities.json"
            ]
        );
        let snapshot = Snapshot::load(dir.path(), 1).unwrap_or_else(|p| panic!("{p}"));
        let t = &snapshot.tool_actions;
        // The fixture's docs and payments (5 actions), the reference's projects (4).
        assert_eq!(t.len(), 9);
        let call = uid(r#"Mcp::Action::"tools/call""#);
        let refund = t
            .action_for(&call, &uid(r#"Mcp::Tool::"payments/refund""#))
            .expect("refund is declared");
        assert_eq!(
            refund.action,
            uid(r#"Mcp::Action::"tools/call/payments/refund""#)
        );
        assert!(
            t.action_for(&call, &uid(r#"Mcp::Tool::"docs/delete_document""#))
                .is_none()
        );
        let prompt = uid(r#"Mcp::Prompt::"docs/executive_summary""#);
        assert!(t.action_for(&call, &prompt).is_none(), "not a tool");
        assert!(
            t.action_for(&uid(r#"Mcp::Action::"prompts/get""#), &prompt)
                .is_some()
        );
        assert!(t.server_has(TypedMethod::ToolsCall, "payments"));
        assert!(t.server_has(TypedMethod::ToolsCall, "projects"));
        assert!(!t.server_has(TypedMethod::ToolsCall, "wiki"));
        // The fragments' entities are there, children of their servers.
        let refund_tool = uid(r#"Mcp::Tool::"payments/refund""#);
        assert!(snapshot.entities.get(&refund_tool).is_some());
        assert!(
            snapshot
                .entities
                .is_ancestor_of(&uid(r#"Mcp::Server::"payments""#), &refund_tool)
        );
        // One argument name, two types: each typed by its own tool's action.
        let shape = |a: &str| {
            snapshot.context_shapes[&uid(a)]
                .attributes()
                .expect("record")["arguments"]
                .attributes()
                .expect("arguments")["amount"]
                .clone()
        };
        assert_eq!(
            shape(r#"Mcp::Action::"tools/call/payments/refund""#),
            Shape::Leaf(crate::policy::Leaf::Long)
        );
        assert_eq!(
            shape(r#"Mcp::Action::"tools/call/docs/search_documents""#),
            Shape::Leaf(crate::policy::Leaf::String)
        );
        // Common types of the base schema resolve inside a fragment.
        let claims = &snapshot.context_shapes[&uid(r#"Mcp::Action::"tools/call/payments/refund""#)]
            .attributes()
            .expect("record")["claims"];
        assert!(claims.attributes().is_some_and(|a| a.contains_key("email")));
    }

    #[test]
    fn action_equality_with_a_method_that_has_tool_actions_is_refused() {
        // A policy written before the tools were imported (`action ==
        // Mcp::Action::"tools/call"`) would stop matching the declared tools' calls.
        let dir = typed_policy_dir();
        std::fs::write(
            dir.path().join("legacy.cedar"),
            "@id(\"contractors-no-finance-documents\")\nforbid (\n  principal in Mcp::Group::\"contractors\",\n  action == Mcp::Action::\"tools/call\",\n  resource\n);\n",
        )
        .expect("write");
        let Err(problems) = Snapshot::load(dir.path(), 1) else {
            panic!("accepted");
        };
        let errors: Vec<_> = problems.errors().collect();
        assert!(
            errors
                .iter()
                .any(|p| p.file.as_deref() == Some("legacy.cedar")
                    && p.message.contains("contractors-no-finance-documents")),
            "{problems}"
        );
    }

    #[test]
    fn an_entity_defined_in_two_files_is_refused_naming_both() {
        let dir = typed_policy_dir();
        let path = dir.path().join("tools/docs.entities.json");
        let text = std::fs::read_to_string(&path).expect("read");
        let items: Vec<serde_json::Value> = serde_json::from_str(&text).expect("json");
        // The same tool as `entities.json` defines it, and with other data: both refused.
        let reference: Vec<serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("entities.json")).expect("read"),
        )
        .expect("json");
        let server = reference
            .iter()
            .find(|e| e["uid"]["type"] == "Mcp::Server")
            .expect("a server")
            .clone();
        for same in [true, false] {
            let mut copy = items.clone();
            let mut dup = server.clone();
            if !same {
                dup["attrs"] = serde_json::json!({ "environment": "staging" });
            }
            copy.push(dup);
            std::fs::write(&path, serde_json::to_string(&copy).expect("json")).expect("write");
            let Err(problems) = Snapshot::load(dir.path(), 1) else {
                panic!("accepted (same data: {same})");
            };
            let id = server["uid"]["id"].as_str().expect("id");
            assert!(
                problems
                    .errors()
                    .any(|p| p.file.as_deref() == Some("tools/docs.entities.json")
                        && p.message
                            == format!(
                                "entity `Mcp::Server::\"{id}\"` is also defined in `entities.json`"
                            )
                        && p.line.is_some()),
                "{problems}"
            );
        }
        std::fs::write(&path, "[]").expect("write");
        assert!(Snapshot::load(dir.path(), 1).is_ok());
    }

    #[test]
    fn the_reference_schema_declares_the_imported_reference_servers() {
        let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let snapshot = Snapshot::load(&reference, 1).expect("reference policies");
        let t = &snapshot.tool_actions;
        // docs: 4 tools and a prompt; projects: 4 tools (policies/tools/).
        assert_eq!(t.len(), 9);
        let call = uid(r#"Mcp::Action::"tools/call""#);
        let get = uid(r#"Mcp::Action::"prompts/get""#);
        for (action, resource) in [
            (&call, r#"Mcp::Tool::"docs/get_document""#),
            (&call, r#"Mcp::Tool::"projects/update_issue""#),
            (&get, r#"Mcp::Prompt::"docs/executive_summary""#),
        ] {
            assert!(t.action_for(action, &uid(resource)).is_some(), "{resource}");
        }
        assert!(t.server_has(TypedMethod::ToolsCall, "projects"));
        assert!(!t.server_has(TypedMethod::PromptsGet, "projects"));
    }

    #[test]
    fn problems_of_fragments_name_their_file() {
        let broken = |file: &str, edit: &dyn Fn(&str) -> String| {
            let dir = typed_policy_dir();
            let path = dir.path().join(file);
            let text = std::fs::read_to_string(&path).expect("read");
            std::fs::write(&path, edit(&text)).expect("write");
            match Snapshot::load(dir.path(), 1) {
                Ok(_) => panic!("{file}: accepted"),
                Err(p) => p.errors().cloned().collect::<Vec<_>>(),
            }
        };
        // A syntax error, located.
        let errors = broken("tools/payments.cedarschema", &|t| {
            t.replace("amount: Long,", "amount: Long,,")
        });
        assert_eq!(
            errors[0].file.as_deref(),
            Some("tools/payments.cedarschema")
        );
        assert!(errors[0].line.is_some(), "{errors:?}");
        // A type declared nowhere.
        let errors = broken("tools/payments.cedarschema", &|t| {
            t.replace("reason?: String", "reason?: Mcp::Reason")
        });
        assert_eq!(
            errors[0].file.as_deref(),
            Some("tools/payments.cedarschema"),
            "{errors:?}"
        );
        // An action declared twice: by the base schema and a fragment.
        let errors = broken("tools/payments.cedarschema", &|t| {
            t.replace("\"tools/call/payments/refund\"", "\"resources/read\"")
        });
        assert_eq!(
            errors[0].file.as_deref(),
            Some("tools/payments.cedarschema"),
            "{errors:?}"
        );
        // Entity data: an attribute the schema does not declare, in a fragment's file.
        let errors = broken("tools/payments.entities.json", &|t| {
            t.replace("\"destructive\": true", "\"destructive\": 3")
        });
        assert_eq!(
            errors[0].file.as_deref(),
            Some("tools/payments.entities.json"),
            "{errors:?}"
        );
        let errors = broken("tools/docs.entities.json", &|t| t.replace("[", "{"));
        assert_eq!(
            errors[0].file.as_deref(),
            Some("tools/docs.entities.json"),
            "{errors:?}"
        );
    }
}
