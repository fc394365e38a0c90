//! The record shape of each action's context, read from the schema, so that the
//! decision core can leave out what the schema does not declare (DESIGN: context
//! contract). Types themselves are checked by Cedar's schema-based JSON parsing;
//! this only knows which attributes exist, and where records and sets nest.

use std::collections::HashMap;
use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

use serde_json::{Map, Value};

/// Which attributes a context value may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A record: only these attributes are kept.
    Record(HashMap<String, Shape>),
    /// A set of values of the inner shape.
    Set(Box<Shape>),
    /// Anything else: kept as given.
    Leaf(Leaf),
}

/// The declared type of a leaf, as far as a JSON value can be checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    /// `String`.
    String,
    /// `Long`.
    Long,
    /// `Bool`.
    Bool,
    /// An entity type.
    Entity,
    /// An extension type (`ipaddr`, `decimal`, `datetime`, `duration`); `None` when
    /// the schema's type could not be resolved to one of them.
    Extension(Option<Extension>),
}

/// Cedar's extension types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// `ipaddr`, written `ip("...")`.
    Ipaddr,
    /// `decimal`.
    Decimal,
    /// `datetime`.
    Datetime,
    /// `duration`.
    Duration,
}

impl Extension {
    fn from_schema_name(name: &str) -> Option<Self> {
        match name {
            "ipaddr" => Some(Self::Ipaddr),
            "decimal" => Some(Self::Decimal),
            "datetime" => Some(Self::Datetime),
            "duration" => Some(Self::Duration),
            _ => None,
        }
    }

    /// The extension for a constructor function name as written in JSON (`__extn.fn`).
    pub fn from_constructor(name: &str) -> Option<Self> {
        match name {
            "ip" => Some(Self::Ipaddr),
            "decimal" => Some(Self::Decimal),
            "datetime" => Some(Self::Datetime),
            "duration" => Some(Self::Duration),
            _ => None,
        }
    }
}

impl Leaf {
    fn describe(self) -> &'static str {
        match self {
            Leaf::String => "a String",
            Leaf::Long => "a Long",
            Leaf::Bool => "a Bool",
            Leaf::Entity => "an entity",
            Leaf::Extension(Some(Extension::Ipaddr)) => "an ipaddr (a string such as \"10.0.0.1\")",
            Leaf::Extension(Some(Extension::Decimal)) => {
                "a decimal (a number or a string such as \"12.50\")"
            }
            Leaf::Extension(Some(Extension::Datetime)) => {
                "a datetime (a string such as \"2026-01-01T00:00:00Z\")"
            }
            Leaf::Extension(Some(Extension::Duration)) => "a duration (a string such as \"1h30m\")",
            Leaf::Extension(None) => "an extension value",
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `path.key`, or `key` at the top.
fn attribute_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Entity references and extension values written with `__entity`/`__extn` are
/// leaves: the walks over a record's attributes stop there.
fn is_escaped_leaf(obj: &Map<String, Value>) -> bool {
    obj.contains_key("__entity") || obj.contains_key("__extn")
}

impl Shape {
    /// Keep only the attributes this shape declares (recursively); values of another
    /// JSON kind are kept as they are so that Cedar reports the type mismatch.
    pub fn prune(&self, value: Value) -> Value {
        match (self, value) {
            (Shape::Record(attrs), Value::Object(obj)) => {
                Value::Object(self.prune_object(attrs, obj))
            }
            (Shape::Set(inner), Value::Array(items)) => {
                Value::Array(items.into_iter().map(|v| inner.prune(v)).collect())
            }
            (_, v) => v,
        }
    }

    fn prune_object(
        &self,
        attrs: &HashMap<String, Shape>,
        obj: Map<String, Value>,
    ) -> Map<String, Value> {
        if is_escaped_leaf(&obj) {
            return obj;
        }
        obj.into_iter()
            .filter_map(|(k, v)| attrs.get(&k).map(|s| (k, s.prune(v))))
            .collect()
    }

    /// The first place where `value` is of another kind than declared, as
    /// `(path, expected, found)`; `None` if the kinds fit as far as JSON tells.
    pub fn mismatch(&self, value: &Value) -> Option<(String, &'static str, &'static str)> {
        self.mismatch_at(value, String::new())
    }

    fn mismatch_at(
        &self,
        value: &Value,
        path: String,
    ) -> Option<(String, &'static str, &'static str)> {
        let join = |k: &str| attribute_path(&path, k);
        match (self, value) {
            (Shape::Record(attrs), Value::Object(obj)) => obj
                .iter()
                .find_map(|(k, v)| attrs.get(k).and_then(|s| s.mismatch_at(v, join(k)))),
            (Shape::Record(_), v) => Some((path, "a record", json_kind(v))),
            (Shape::Set(inner), Value::Array(items)) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| inner.mismatch_at(v, format!("{path}[{i}]"))),
            (Shape::Set(_), v) => Some((path, "a Set", json_kind(v))),
            (Shape::Leaf(leaf), v) => {
                let fits = match leaf {
                    Leaf::String => v.is_string(),
                    Leaf::Long => v.is_i64(),
                    Leaf::Bool => v.is_boolean(),
                    Leaf::Entity => v.is_object(),
                    Leaf::Extension(_) => v.is_string() || v.is_object(),
                };
                (!fits).then(|| (path, leaf.describe(), json_kind(v)))
            }
        }
    }

    /// The first attribute of `value` that the shape does not declare but that
    /// reads as one it declares (see [`name_key`]), as `(path, declared path)`:
    /// `arguments.MAX_RESULTS` beside a declared `arguments.max_results`. Other
    /// readers bind such names to the declared attribute (Go's `encoding/json`
    /// matches keys case-insensitively with Unicode folding), while the context
    /// leaves them out: a condition on the declared attribute would be skipped.
    pub fn alias(&self, value: &Value) -> Option<(String, String)> {
        self.alias_at(value, "")
    }

    fn alias_at(&self, value: &Value, path: &str) -> Option<(String, String)> {
        let join = |k: &str| attribute_path(path, k);
        match (self, value) {
            (Shape::Record(attrs), Value::Object(obj)) => {
                if is_escaped_leaf(obj) {
                    return None;
                }
                obj.iter().find_map(|(k, v)| match attrs.get(k) {
                    Some(s) => s.alias_at(v, &join(k)),
                    None => alias_in(attrs, k).map(|d| (join(k), join(d))),
                })
            }
            (Shape::Set(inner), Value::Array(items)) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| inner.alias_at(v, &format!("{path}[{i}]"))),
            _ => None,
        }
    }

    /// The paths of `value`'s attributes that the shape does not declare, at any
    /// depth, sorted within each record, exactly where [`Shape::prune`] leaves them
    /// out: in records (not in entity references or extension values written with
    /// `__entity`/`__extn`) and in the records inside sets. A value of another kind
    /// than declared is not pruned (Cedar refuses it), so nothing under it is listed.
    pub fn undeclared_paths(&self, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.undeclared_at(value, "", &mut out);
        out
    }

    fn undeclared_at(&self, value: &Value, path: &str, out: &mut Vec<String>) {
        let join = |k: &str| attribute_path(path, k);
        match (self, value) {
            (Shape::Record(attrs), Value::Object(obj)) => {
                if is_escaped_leaf(obj) {
                    return;
                }
                let mut entries: Vec<(&String, &Value)> = obj.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                for (k, v) in entries {
                    match attrs.get(k.as_str()) {
                        Some(s) => s.undeclared_at(v, &join(k), out),
                        None => out.push(join(k)),
                    }
                }
            }
            (Shape::Set(inner), Value::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    inner.undeclared_at(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }

    /// The attributes of a record shape.
    pub fn attributes(&self) -> Option<&HashMap<String, Shape>> {
        match self {
            Shape::Record(a) => Some(a),
            _ => None,
        }
    }
}

/// The declared attribute of `attrs` that the undeclared name `given` reads as,
/// if any (see [`name_key`]).
pub fn alias_in<'a>(attrs: &'a HashMap<String, Shape>, given: &str) -> Option<&'a str> {
    let key = name_key(given);
    attrs
        .keys()
        .find(|d| d.as_str() != given && name_key(d) == key)
        .map(String::as_str)
}

/// The form in which two attribute names count as the same name: Unicode
/// compatibility normalization (NFKC), full case folding, NFKC again, and no `_`
/// or `-`. So `MAX_RESULTS`, `Max-Results`, `maxResults`, `max_reſults` (U+017F,
/// which folds to `s`) and the full-width `ｍａｘ＿ｒｅｓｕｌｔｓ` all read as
/// `maxresults`.
pub fn name_key(name: &str) -> String {
    if name.is_ascii() {
        return name
            .bytes()
            .filter(|b| !matches!(b, b'_' | b'-'))
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect();
    }
    use unicode_normalization::UnicodeNormalization;
    let folded = caseless::default_case_fold_str(&name.nfkc().collect::<String>());
    folded.nfkc().filter(|c| !matches!(c, '_' | '-')).collect()
}

/// Whether `given` reads as `key`, a name already in the form of [`name_key`]
/// (without allocating for ASCII names, the usual case).
pub fn reads_as(given: &str, key: &str) -> bool {
    if !given.is_ascii() {
        return name_key(given) == key;
    }
    let mut folded = given
        .bytes()
        .filter(|b| !matches!(b, b'_' | b'-'))
        .map(|b| b.to_ascii_lowercase());
    let mut expected = key.bytes();
    loop {
        match (folded.next(), expected.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// `name` declared in namespace `ns` of a JSON schema, as a full name (`ns::name`,
/// or `name` in the empty namespace).
pub(super) fn qualified(ns: &str, name: &str) -> String {
    if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}::{name}")
    }
}

/// Context shapes of every action of a schema, keyed by the action's uid.
pub fn context_shapes(schema_json: &Value) -> HashMap<EntityUid, Shape> {
    let mut out = HashMap::new();
    let Some(namespaces) = schema_json.as_object() else {
        return out;
    };
    let resolver = Resolver { schema: namespaces };
    for (ns, body) in namespaces {
        let Some(actions) = body.get("actions").and_then(Value::as_object) else {
            continue;
        };
        for (name, action) in actions {
            let shape = action
                .get("appliesTo")
                .and_then(|a| a.get("context"))
                .map_or_else(
                    || Shape::Record(HashMap::new()),
                    |t| resolver.shape(ns, t, 0),
                );
            let Ok(type_name) = EntityTypeName::from_str(&qualified(ns, "Action")) else {
                continue;
            };
            out.insert(
                EntityUid::from_type_name_and_id(type_name, EntityId::new(name)),
                shape,
            );
        }
    }
    out
}

/// The namespace of Cedar's built-in types (`__cedar::Long`, `__cedar::ipaddr`).
const BUILTIN_NAMESPACE: &str = "__cedar";

/// The shape of a built-in type by its name in `__cedar`.
fn builtin(name: &str) -> Option<Shape> {
    match name {
        "String" => Some(Shape::Leaf(Leaf::String)),
        "Long" => Some(Shape::Leaf(Leaf::Long)),
        "Bool" | "Boolean" => Some(Shape::Leaf(Leaf::Bool)),
        other => Extension::from_schema_name(other).map(|e| Shape::Leaf(Leaf::Extension(Some(e)))),
    }
}

struct Resolver<'a> {
    schema: &'a Map<String, Value>,
}

impl Resolver<'_> {
    fn shape(&self, ns: &str, ty: &Value, depth: usize) -> Shape {
        // Cedar rejects cyclic common types; the bound only guards against surprises.
        if depth > 64 {
            return Shape::Leaf(Leaf::Extension(None));
        }
        let Some(kind) = ty.get("type").and_then(Value::as_str) else {
            return Shape::Leaf(Leaf::Extension(None));
        };
        match kind {
            "Record" => {
                let attrs = ty
                    .get("attributes")
                    .and_then(Value::as_object)
                    .map(|attrs| {
                        attrs
                            .iter()
                            .map(|(k, v)| (k.clone(), self.shape(ns, v, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default();
                Shape::Record(attrs)
            }
            "Set" => Shape::Set(Box::new(
                ty.get("element")
                    .map_or(Shape::Leaf(Leaf::Extension(None)), |e| {
                        self.shape(ns, e, depth + 1)
                    }),
            )),
            "String" => Shape::Leaf(Leaf::String),
            "Long" => Shape::Leaf(Leaf::Long),
            "Boolean" | "Bool" => Shape::Leaf(Leaf::Bool),
            "Entity" => Shape::Leaf(Leaf::Entity),
            "Extension" => Shape::Leaf(Leaf::Extension(
                ty.get("name")
                    .and_then(Value::as_str)
                    .and_then(Extension::from_schema_name),
            )),
            "EntityOrCommon" => match ty.get("name").and_then(Value::as_str) {
                Some(name) => self.common(ns, name, depth),
                None => Shape::Leaf(Leaf::Entity),
            },
            other => self.common(ns, other, depth),
        }
    }

    fn common(&self, ns: &str, name: &str, depth: usize) -> Shape {
        let (target_ns, local) = match name.rsplit_once("::") {
            Some((n, l)) => (n, l),
            None => (ns, name),
        };
        // `__cedar::` names Cedar's built-in types; no schema can declare anything there.
        if target_ns == BUILTIN_NAMESPACE {
            return builtin(local).unwrap_or(Shape::Leaf(Leaf::Extension(None)));
        }
        let lookup = |n: &str| {
            self.schema
                .get(n)
                .and_then(|b| b.get("commonTypes"))
                .and_then(|c| c.get(local))
        };
        // Cedar's resolved schema qualifies every common type but those of the empty
        // namespace: an unqualified name is one of those (else, defensively, the
        // enclosing namespace's).
        let found = if name.contains("::") {
            lookup(target_ns).map(|t| (target_ns, t))
        } else {
            lookup("")
                .map(|t| ("", t))
                .or_else(|| lookup(ns).map(|t| (ns, t)))
        };
        match found {
            Some((found_ns, t)) => self.shape(found_ns, t, depth + 1),
            // Not a common type: an extension type such as `ipaddr`, or an entity type.
            None if Extension::from_schema_name(local).is_some() => {
                Shape::Leaf(Leaf::Extension(Extension::from_schema_name(local)))
            }
            None => Shape::Leaf(Leaf::Entity),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shapes(src: &str) -> HashMap<String, Shape> {
        let (json, _) = cedar_policy::schema_str_to_json_with_resolved_types(src).expect("schema");
        context_shapes(&json)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    #[test]
    fn resolves_common_types_and_prunes_undeclared_attributes() {
        let s = shapes(
            r#"namespace Mcp {
                entity User; entity Tool;
                type Args = { path?: String, tags?: Set<{ name: String }> };
                action "tools/call" appliesTo { principal: User, resource: Tool, context: { arguments?: Args, user?: User } };
            }"#,
        );
        let shape = &s[r#"Mcp::Action::"tools/call""#];
        let pruned = shape.prune(json!({
            "arguments": { "path": "/a", "extra": 1, "tags": [{ "name": "x", "junk": true }] },
            "user": { "__entity": { "type": "Mcp::User", "id": "u" } },
            "undeclared": "dropped"
        }));
        assert_eq!(
            pruned,
            json!({
                "arguments": { "path": "/a", "tags": [{ "name": "x" }] },
                "user": { "__entity": { "type": "Mcp::User", "id": "u" } }
            })
        );
    }

    #[test]
    fn names_read_alike_after_folding_and_without_separators() {
        for alike in [
            "max_results",
            "MAX_RESULTS",
            "Max_Results",
            "max-results",
            "maxResults",
            "MaxResults",
            "max_re\u{17f}ults",
            "\u{ff4d}\u{ff41}\u{ff58}\u{ff3f}\u{ff52}\u{ff45}\u{ff53}\u{ff55}\u{ff4c}\u{ff54}\u{ff53}",
            "max__results",
            "_max_results_",
        ] {
            assert_eq!(name_key(alike), "maxresults", "{alike}");
        }
        assert_eq!(name_key("stra\u{df}e"), name_key("STRASSE"));
        assert_eq!(name_key("\u{212a}ey"), name_key("key"));
        assert_ne!(name_key("max_result"), name_key("max_results"));
        assert_ne!(name_key("max.results"), name_key("max_results"));
        for (given, key, same) in [
            ("User", "user", true),
            ("_u-s_e-r_", "user", true),
            ("users", "user", false),
            ("use", "user", false),
            ("\u{ff35}ser", "user", true),
            ("\u{17f}copes", "scopes", true),
            ("", "user", false),
        ] {
            assert_eq!(reads_as(given, key), same, "{given}");
            assert_eq!(reads_as(given, key), name_key(given) == key, "{given}");
        }
    }

    #[test]
    fn aliases_of_declared_attributes_are_found_at_any_depth() {
        let s = shapes(
            r#"entity U; action "a" appliesTo { principal: U, resource: U,
                context: { arguments?: { max_results?: Long, filter?: { owner_id?: String }, items?: Set<{ doc_id: String }> } } };"#,
        );
        let shape = &s[r#"Action::"a""#];
        assert_eq!(
            shape.alias(&json!({ "arguments": { "max_results": 3, "query": "x" } })),
            None
        );
        assert_eq!(
            shape.alias(&json!({ "arguments": { "MAX_RESULTS": 500 } })),
            Some((
                "arguments.MAX_RESULTS".into(),
                "arguments.max_results".into()
            ))
        );
        assert_eq!(
            shape.alias(&json!({ "arguments": { "max_results": 3, "maxResults": 500 } })),
            Some((
                "arguments.maxResults".into(),
                "arguments.max_results".into()
            ))
        );
        assert_eq!(
            shape.alias(&json!({ "arguments": { "filter": { "Owner-Id": "x" } } })),
            Some((
                "arguments.filter.Owner-Id".into(),
                "arguments.filter.owner_id".into()
            ))
        );
        assert_eq!(
            shape
                .alias(&json!({ "arguments": { "items": [{ "doc_id": "a" }, { "docId": "b" }] } })),
            Some((
                "arguments.items[1].docId".into(),
                "arguments.items[1].doc_id".into()
            ))
        );
        assert_eq!(
            shape.alias(&json!({ "Arguments": { "max_results": 1 } })),
            Some(("Arguments".into(), "arguments".into()))
        );
    }

    #[test]
    fn action_without_context_has_an_empty_record() {
        let s = shapes(r#"entity U; action "a" appliesTo { principal: U, resource: U };"#);
        assert_eq!(s[r#"Action::"a""#].prune(json!({ "x": 1 })), json!({}));
    }

    #[test]
    fn mismatches_are_named_by_path() {
        let s = shapes(
            r#"entity U; action "a" appliesTo { principal: U, resource: U,
                context: { args?: { path?: String, n?: Long, tags?: Set<String> }, ip?: ipaddr, who?: U } };"#,
        );
        let shape = &s[r#"Action::"a""#];
        assert_eq!(
            shape.mismatch(
                &json!({ "args": { "path": "/x", "n": 3, "tags": ["a"] }, "ip": "10.0.0.1" })
            ),
            None
        );
        assert_eq!(
            shape.mismatch(&json!({ "args": { "path": 42 } })),
            Some(("args.path".into(), "a String", "an integer"))
        );
        assert_eq!(
            shape.mismatch(&json!({ "args": { "n": "3" } })),
            Some(("args.n".into(), "a Long", "a string"))
        );
        assert_eq!(
            shape.mismatch(&json!({ "args": { "tags": ["a", 1] } })),
            Some(("args.tags[1]".into(), "a String", "an integer"))
        );
        assert_eq!(
            shape.mismatch(&json!({ "ip": true })),
            Some((
                "ip".into(),
                "an ipaddr (a string such as \"10.0.0.1\")",
                "a boolean"
            ))
        );
    }

    #[test]
    fn wrong_kinds_are_kept_for_cedar_to_reject() {
        let s = shapes(
            r#"entity U; action "a" appliesTo { principal: U, resource: U, context: { r?: { x?: Long } } };"#,
        );
        assert_eq!(
            s[r#"Action::"a""#].prune(json!({ "r": 42 })),
            json!({ "r": 42 })
        );
    }
}
