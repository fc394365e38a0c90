//! Strict validation scoped to the actions a policy can apply to.
//!
//! Cedar's validator typechecks every policy in every request environment of the
//! schema (principal type × action × resource type) and keeps those its scope
//! matches; for a scope `action in G` it also scans G's descendants per
//! environment. With imported tools (one action per tool) that is most of a
//! snapshot's build time: a policy naming one tool action is checked against all
//! of them, a policy scoped to `tools/call` costs the square of their number.
//!
//! This module validates a policy against a schema that holds only the actions its
//! result can depend on, and falls back to the whole schema whenever that is not
//! certain or the result is not clean:
//!
//! - the actions its scope matches (`action == A`: A; `action in [G, ...]`: each
//!   and its descendants; `action` alone: every action, so the whole schema);
//! - for an `action in` scope, one action per class of actions that no part of the
//!   policy can tell apart: the same principal types, resource types and declared
//!   type of each context attribute the policy reads (`context.a`, `context has a`).
//!   A policy whose conditions name the `action` variable, or use `context` other
//!   than through an attribute, is not reduced by class;
//! - every action its conditions name as a literal;
//! - the ancestors of all those (so `in` between actions is as in the whole schema);
//! - every entity and common type of the schema.
//!
//! In each environment of the whole schema that the policy's scope matches, the
//! typechecker sees the principal and resource types, the action (which the
//! conditions cannot read) and the context attributes the conditions read: the same
//! as in the environment of the action's class representative. So the policy is
//! well typed (and possible) in every environment exactly when it is in the
//! representatives' ones. A file whose scoped validation reports anything, error
//! or warning, is validated again on the whole schema and that result is kept, so
//! messages (and Cedar's suggestions) are the whole schema's.
//! `tests::scoped_validation_agrees_with_the_whole_schema` checks the rule against
//! Cedar's full validation.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Mutex;

use cedar_policy::{
    EntityId, EntityTypeName, EntityUid, Policy, PolicySet, Schema, SchemaFragment, ValidationMode,
    ValidationResult, Validator,
};
use serde_json::{Map, Value};

/// Most actions a reduced schema holds: beyond it the whole schema is used.
const MAX_REDUCED_ACTIONS: usize = 256;

/// Validates policy files on the whole schema or, where it gives the same result,
/// on schemas reduced to the actions each policy can apply to.
pub(super) struct ScopedValidator<'s> {
    full: Validator,
    /// The schema's JSON form (types resolved): namespaces with their entity types,
    /// actions and common types.
    json: &'s Map<String, Value>,
    /// Every action's ancestors (transitively).
    ancestors: HashMap<EntityUid, Vec<EntityUid>>,
    /// Every action's descendants (transitively).
    descendants: HashMap<EntityUid, Vec<EntityUid>>,
    /// What a policy can tell of each action: its principal and resource types, and
    /// each context attribute's declared type (serialized); `None` when the context
    /// type could not be read (such an action is never grouped).
    shapes: HashMap<EntityUid, Option<ActionShape>>,
    /// Reduced validators by their actions (`None`: the reduced schema failed to
    /// build, the whole one is used).
    reduced: Mutex<HashMap<BTreeSet<EntityUid>, Option<std::sync::Arc<Validator>>>>,
}

impl<'s> ScopedValidator<'s> {
    /// A validator for `schema`, whose JSON form (with resolved types) is `json`.
    pub(super) fn new(schema: &Schema, json: &'s Value) -> Self {
        let empty: &'static Map<String, Value> = {
            static EMPTY: std::sync::LazyLock<Map<String, Value>> =
                std::sync::LazyLock::new(Map::new);
            &EMPTY
        };
        let mut ancestors: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
        let mut descendants: HashMap<EntityUid, Vec<EntityUid>> = HashMap::new();
        if let Ok(entities) = schema.action_entities() {
            for action in schema.actions() {
                let up: Vec<EntityUid> = entities
                    .ancestors(action)
                    .map(|a| a.cloned().collect())
                    .unwrap_or_default();
                for a in &up {
                    descendants
                        .entry(a.clone())
                        .or_default()
                        .push(action.clone());
                }
                ancestors.insert(action.clone(), up);
            }
        }
        let mut validator = Self {
            full: Validator::new(schema.clone()),
            json: json.as_object().unwrap_or(empty),
            ancestors,
            descendants,
            shapes: HashMap::new(),
            reduced: Mutex::new(HashMap::new()),
        };
        let shapes = schema
            .actions()
            .map(|a| (a.clone(), validator.action_shape(a)))
            .collect();
        validator.shapes = shapes;
        validator
    }

    /// Validate the policies of one file (strict mode): `None` when they are clean
    /// (no error, no warning), else the whole schema's result.
    pub(super) fn validate(&self, file: &PolicySet) -> Option<ValidationResult> {
        if self.scoped_is_clean(file) {
            return None;
        }
        Some(self.full.validate(file, ValidationMode::Strict))
    }

    /// Whether every policy of `file` validates without error or warning on its
    /// reduced schema (false if any cannot be reduced and fails, or is a template).
    fn scoped_is_clean(&self, file: &PolicySet) -> bool {
        if file.templates().next().is_some() {
            return false;
        }
        let mut groups: HashMap<Option<BTreeSet<EntityUid>>, Vec<Policy>> = HashMap::new();
        for policy in file.policies() {
            groups
                .entry(self.actions_for(policy))
                .or_default()
                .push(policy.clone());
        }
        groups.into_iter().all(|(actions, policies)| {
            let Ok(set) = PolicySet::from_policies(policies) else {
                return false;
            };
            let result = match actions.and_then(|a| self.reduced_validator(a)) {
                Some(v) => v.validate(&set, ValidationMode::Strict),
                None => self.full.validate(&set, ValidationMode::Strict),
            };
            result.validation_passed() && result.validation_warnings().next().is_none()
        })
    }

    /// The validator of the schema reduced to `actions`.
    fn reduced_validator(&self, actions: BTreeSet<EntityUid>) -> Option<std::sync::Arc<Validator>> {
        let mut cache = self
            .reduced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(v) = cache.get(&actions) {
            return v.clone();
        }
        let built = self
            .reduced_schema(&actions)
            .map(|s| std::sync::Arc::new(Validator::new(s)));
        cache.insert(actions, built.clone());
        built
    }

    /// The schema with only `actions` (and every entity and common type).
    fn reduced_schema(&self, actions: &BTreeSet<EntityUid>) -> Option<Schema> {
        let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
        for uid in actions {
            wanted
                .entry(uid.type_name().namespace())
                .or_default()
                .push(uid.id().unescaped().to_owned());
        }
        let mut namespaces = Map::new();
        for (ns, body) in self.json {
            let body = body.as_object()?;
            let mut reduced: Map<String, Value> = body
                .iter()
                .filter(|(k, _)| *k != "actions")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let all = body.get("actions").and_then(Value::as_object);
            let kept: Map<String, Value> = wanted
                .get(ns)
                .into_iter()
                .flatten()
                .filter_map(|name| Some((name.clone(), all?.get(name)?.clone())))
                .collect();
            reduced.insert("actions".to_owned(), Value::Object(kept));
            namespaces.insert(ns.clone(), Value::Object(reduced));
        }
        let fragment = SchemaFragment::from_json_value(Value::Object(namespaces)).ok()?;
        Schema::from_schema_fragments([fragment]).ok()
    }

    /// The actions `policy`'s validation depends on, or `None` for the whole schema.
    fn actions_for(&self, policy: &Policy) -> Option<BTreeSet<EntityUid>> {
        let est = policy.to_json().ok()?;
        let mut reads = Reads::default();
        for condition in est.get("conditions").and_then(Value::as_array)? {
            reads.walk(condition.get("body")?);
        }
        let scope = est.get("action")?;
        let named: Vec<EntityUid> = match scope.get("op").and_then(Value::as_str)? {
            "==" => vec![entity_uid(scope.get("entity")?)?],
            "in" => match (scope.get("entity"), scope.get("entities")) {
                (Some(e), _) => vec![entity_uid(e)?],
                (None, Some(Value::Array(list))) => {
                    list.iter().map(entity_uid).collect::<Option<Vec<_>>>()?
                }
                _ => return None,
            },
            _ => return None,
        };
        let is_in = scope.get("op").and_then(Value::as_str) == Some("in");
        let mut matched: Vec<EntityUid> = Vec::new();
        for uid in &named {
            if !self.ancestors.contains_key(uid) {
                // Not an action of the schema: the whole schema reports it.
                return None;
            }
            matched.push(uid.clone());
            if is_in {
                matched.extend(self.descendants.get(uid).into_iter().flatten().cloned());
            }
        }
        let mut actions: BTreeSet<EntityUid> = if is_in && !reads.action && !reads.whole_context {
            // One action per class the policy cannot tell apart.
            let mut classes: HashMap<String, EntityUid> = HashMap::new();
            for uid in matched {
                let key = self.class_key(&uid, &reads.context)?;
                classes
                    .entry(key)
                    .and_modify(|kept| {
                        if uid < *kept {
                            *kept = uid.clone();
                        }
                    })
                    .or_insert(uid);
            }
            // The actions the scope names are in the schema whatever their class.
            classes.into_values().chain(named).collect()
        } else {
            matched.into_iter().collect()
        };
        for literal in reads.action_literals {
            if !self.ancestors.contains_key(&literal) {
                return None;
            }
            actions.insert(literal);
        }
        let with_ancestors: Vec<EntityUid> = actions
            .iter()
            .flat_map(|a| self.ancestors.get(a).into_iter().flatten().cloned())
            .collect();
        actions.extend(with_ancestors);
        (actions.len() <= MAX_REDUCED_ACTIONS).then_some(actions)
    }

    /// What of `action` a policy that reads the context attributes `read` can tell:
    /// its principal and resource types and the declared type of each attribute read.
    fn class_key(&self, action: &EntityUid, read: &BTreeSet<String>) -> Option<String> {
        let shape = self.shapes.get(action)?.as_ref()?;
        let mut key = shape.head.clone();
        for a in read {
            key.push('|');
            key.push_str(a);
            key.push('=');
            key.push_str(shape.attributes.get(a).map_or("absent", String::as_str));
        }
        Some(key)
    }

    /// [`ActionShape`] of `action`, read from the schema's JSON form.
    fn action_shape(&self, action: &EntityUid) -> Option<ActionShape> {
        let ns = action.type_name().namespace();
        let declared = self
            .json
            .get(&ns)?
            .get("actions")?
            .get(action.id().unescaped())?;
        let applies = declared.get("appliesTo");
        let list = |key: &str| {
            let mut v: Vec<String> = applies
                .and_then(|a| a.get(key))
                .and_then(Value::as_array)
                .map(|l| l.iter().map(Value::to_string).collect())
                .unwrap_or_default();
            v.sort();
            v.join(",")
        };
        let attributes = match applies.and_then(|a| a.get("context")) {
            None => Map::new(),
            Some(c) => self.record_attributes(&ns, c)?,
        };
        Some(ActionShape {
            head: format!(
                "{ns}|{}|{}|{}",
                applies.is_some(),
                list("principalTypes"),
                list("resourceTypes")
            ),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        })
    }

    /// The attributes of a context type: a record, or a common type naming one.
    fn record_attributes(&self, ns: &str, ty: &Value) -> Option<Map<String, Value>> {
        match ty.get("type").and_then(Value::as_str)? {
            "Record" => Some(
                ty.get("attributes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            ),
            "EntityOrCommon" | "CommonType" => {
                self.record_attributes(ns, self.common_type(ns, ty.get("name")?.as_str()?)?)
            }
            name => self.record_attributes(ns, self.common_type(ns, name)?),
        }
    }

    /// A common type by its name as written in namespace `ns`.
    fn common_type(&self, ns: &str, name: &str) -> Option<&Value> {
        let (in_ns, local) = match name.rsplit_once("::") {
            Some((n, l)) => (n.to_owned(), l),
            None => (ns.to_owned(), name),
        };
        self.json.get(&in_ns)?.get("commonTypes")?.get(local)
    }
}

/// What a policy can tell of an action (see [`ScopedValidator::class_key`]).
struct ActionShape {
    /// Namespace, whether it applies at all, principal types, resource types.
    head: String,
    /// Each context attribute's declared type, serialized.
    attributes: HashMap<String, String>,
}

/// What a policy's conditions read.
#[derive(Default)]
struct Reads {
    /// The `action` variable appears.
    action: bool,
    /// `context` is used other than through an attribute.
    whole_context: bool,
    /// The context attributes read (`context.a`, `context has a`).
    context: BTreeSet<String>,
    /// Action entity literals.
    action_literals: Vec<EntityUid>,
}

impl Reads {
    /// Walk a condition of a policy's JSON form.
    fn walk(&mut self, node: &Value) {
        match node {
            Value::Object(map) => {
                for op in [".", "has"] {
                    if let Some(Value::Object(access)) = map.get(op)
                        && access
                            .get("left")
                            .and_then(|l| l.get("Var"))
                            .and_then(Value::as_str)
                            == Some("context")
                    {
                        match access.get("attr").and_then(Value::as_str) {
                            Some(attr) => {
                                self.context.insert(attr.to_owned());
                            }
                            None => self.whole_context = true,
                        }
                        return;
                    }
                }
                match map.get("Var").and_then(Value::as_str) {
                    Some("action") => self.action = true,
                    Some("context") => self.whole_context = true,
                    _ => {}
                }
                if let Some(e) = map.get("__entity")
                    && let Some(uid) = entity_uid(e)
                    && uid.type_name().basename() == "Action"
                {
                    self.action_literals.push(uid);
                }
                for v in map.values() {
                    self.walk(v);
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.walk(v);
                }
            }
            _ => {}
        }
    }
}

/// An entity uid from its JSON form (`{"type": T, "id": I}`).
fn entity_uid(v: &Value) -> Option<EntityUid> {
    let v = v.get("__entity").unwrap_or(v);
    let ty = EntityTypeName::from_str(v.get("type")?.as_str()?).ok()?;
    Some(EntityUid::from_type_name_and_id(
        ty,
        EntityId::new(v.get("id")?.as_str()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::load::{load_schema, read_sources};

    /// The schemas of the reference directory (imported `docs` and `projects`) and
    /// of the typed fixture (`amount` a String of one tool, a Long of another).
    fn schemas() -> Vec<(String, Schema, Value)> {
        let typed = crate::policy::typed_policy_dir();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        [root, typed.path().to_path_buf()]
            .iter()
            .map(|dir| {
                let sources = read_sources(dir).expect("sources");
                let (schema, json) = load_schema(&sources, &mut Vec::new()).expect("schema");
                (dir.display().to_string(), schema, json)
            })
            .collect()
    }

    /// Policies from every combination of scopes and conditions that tell actions
    /// apart (or not): each validated alone, scoped and on the whole schema.
    #[test]
    fn scoped_validation_agrees_with_the_whole_schema() {
        let principals = [
            "principal",
            "principal is Mcp::User",
            "principal in Mcp::Group::\"employees\"",
        ];
        let actions = [
            "action",
            "action == Mcp::Action::\"tools/call\"",
            "action in Mcp::Action::\"tools/call\"",
            "action == Mcp::Action::\"tools/call/docs/search_documents\"",
            "action in [Mcp::Action::\"tools/call/docs/search_documents\", Mcp::Action::\"tools/call/payments/refund\"]",
            "action in [Mcp::Action::\"tools/call\", Mcp::Action::\"prompts/get\"]",
            "action in Mcp::Action::\"prompts/get\"",
            "action == Mcp::Action::\"resources/read\"",
            "action == Mcp::Action::\"tools/call/payments/refund\"",
        ];
        let resources = [
            "resource",
            "resource is Mcp::Tool",
            "resource in Mcp::Server::\"docs\"",
        ];
        let conditions = [
            "",
            "when { context.arguments has amount && context.arguments.amount > 5 }",
            "when { context.arguments has amount && context.arguments.amount like \"1*\" }",
            "when { context.arguments.amount > 5 }",
            "when { context has arguments && context.arguments has query }",
            "when { context.arguments.query == \"x\" }",
            "when { context.arguments has document_id && context.arguments.document_id like \"finance/*\" }",
            "when { context.arguments has nope }",
            "when { context has arguments && context.arguments has amount_cents && context.arguments.amount_cents > 1 }",
            "when { action == Mcp::Action::\"tools/call/payments/refund\" }",
            "when { action in Mcp::Action::\"tools/call\" }",
            "when { Mcp::Action::\"tools/call/docs/get_document\" == Mcp::Action::\"tools/call/docs/get_document\" }",
            "when { Mcp::Action::\"tools/call/nowhere\" == Mcp::Action::\"tools/call/nowhere\" }",
            "when { context == {} }",
            "when { context has user && context.user == principal }",
            "when { context has application && context.application in Mcp::Group::\"approved-apps\" }",
            "when { resource has destructive && resource.destructive }",
            "when { context.scopes.contains(\"x\") }",
            "when { context has scopes && context.scopes.contains(\"x\") }",
            "unless { context.arguments has audience && context.arguments.audience == \"internal\" }",
            "when { context.arguments has since && context.arguments.since > datetime(\"2026-01-01\") }",
            "when { context.arguments has since && context.arguments.since > 5 }",
            "when { principal has department && context has arguments }",
        ];
        let schemas = schemas();
        let mut checked = 0;
        let mut clean = 0;
        let mut reduced = 0;
        for (name, schema, json) in &schemas {
            let scoped = ScopedValidator::new(schema, json);
            let full = Validator::new(schema.clone());
            for effect in ["permit", "forbid"] {
                for p in principals {
                    for a in actions {
                        for r in resources {
                            for c in conditions {
                                let text = format!("{effect} ({p}, {a}, {r}) {c};");
                                let set = PolicySet::from_str(&text).expect("parses");
                                let whole = full.validate(&set, ValidationMode::Strict);
                                let whole_clean = whole.validation_passed()
                                    && whole.validation_warnings().next().is_none();
                                assert_eq!(
                                    scoped.scoped_is_clean(&set),
                                    whole_clean,
                                    "{name}: {text}\n{whole:?}"
                                );
                                let policy = set.policies().next().expect("one policy");
                                if scoped.actions_for(policy).is_some() {
                                    reduced += 1;
                                }
                                checked += 1;
                                clean += usize::from(whole_clean);
                            }
                        }
                    }
                }
            }
        }
        // The combinations exercise both outcomes and the reduction itself.
        assert!(
            clean > checked / 10 && clean < checked * 9 / 10,
            "{clean} of {checked}"
        );
        assert!(reduced > checked / 2, "{reduced} of {checked} reduced");
    }

    /// Every policy file of the directory named by `MCP_AUTHZ_SCOPED_DIR` (say the
    /// typed benchmark's, `TYPED_BENCH_DIR`), each policy alone and each file whole:
    /// scoped validation is clean exactly when the whole schema's is.
    #[test]
    #[ignore = "needs MCP_AUTHZ_SCOPED_DIR"]
    fn scoped_validation_agrees_on_a_directory() {
        let dir = std::env::var("MCP_AUTHZ_SCOPED_DIR").expect("MCP_AUTHZ_SCOPED_DIR");
        let sources = read_sources(std::path::Path::new(&dir)).expect("sources");
        let (schema, json) = load_schema(&sources, &mut Vec::new()).expect("schema");
        let scoped = ScopedValidator::new(&schema, &json);
        let full = Validator::new(schema.clone());
        let clean = |r: &ValidationResult| {
            r.validation_passed() && r.validation_warnings().next().is_none()
        };
        let mut policies = 0;
        for (rel, text) in &sources.policies {
            let file = PolicySet::from_str(text).expect("parses");
            assert_eq!(
                scoped.scoped_is_clean(&file),
                clean(&full.validate(&file, ValidationMode::Strict)),
                "{rel}"
            );
            for policy in file.policies() {
                let one = PolicySet::from_policies([policy.clone()]).expect("one");
                assert_eq!(
                    scoped.scoped_is_clean(&one),
                    clean(&full.validate(&one, ValidationMode::Strict)),
                    "{rel}: {policy}"
                );
                policies += 1;
            }
        }
        assert!(policies > 0);
    }

    /// A policy scoped to `tools/call` that reads no argument is checked against one
    /// tool action; one that reads `arguments` against one per argument type.
    #[test]
    fn classes_group_the_actions_a_policy_cannot_tell_apart() {
        let schemas = schemas();
        let (_, schema, json) = &schemas[1];
        let scoped = ScopedValidator::new(schema, json);
        let actions = |text: &str| {
            let set = PolicySet::from_str(text).expect("parses");
            let policy = set.policies().next().expect("a policy");
            scoped.actions_for(policy)
        };
        let members = |set: &BTreeSet<EntityUid>| {
            set.iter()
                .filter(|a| a.id().unescaped().starts_with("tools/call/"))
                .count()
        };
        // `tools/call` itself stands for every member: the policy cannot tell them apart.
        let plain = actions(
            "permit (principal, action in Mcp::Action::\"tools/call\", resource) when { context has user };",
        )
        .expect("reduced");
        assert!(plain.len() <= 2 && members(&plain) <= 1, "{plain:?}");
        let typed = actions(
            "permit (principal, action in Mcp::Action::\"tools/call\", resource) when { context.arguments has amount };",
        )
        .expect("reduced");
        assert!(members(&typed) > 1, "{typed:?}");
        // The action variable or the whole context: every member.
        let all = actions(
            "permit (principal, action in Mcp::Action::\"tools/call\", resource) when { context == {} };",
        )
        .expect("reduced");
        let count = schema
            .actions()
            .filter(|a| a.id().unescaped().starts_with("tools/call/"))
            .count();
        assert_eq!(members(&all), count);
        assert!(actions("permit (principal, action, resource);").is_none());
    }
}
