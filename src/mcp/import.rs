//! Import: an MCP server's `tools/list` (and `prompts/list`) result as a Cedar schema
//! fragment with one action per tool and prompt, and the server's tool and prompt
//! entities. Pure: text in, text out, no I/O (the CLI, `mcp-authz schema`, reads and
//! writes the files).
//!
//! For a tool `T` of server `S` the fragment declares
//! `action "tools/call/S/T" in ["tools/call"]`, applying to the principals and resources
//! the base schema gives `tools/call`, with the base `tools/call` context whose
//! `arguments` is typed by the tool's `inputSchema` (and is required: the record of a
//! call without arguments is empty). Prompts likewise, `prompts/get/S/P`, with every
//! declared argument a `String`.
//!
//! The JSON Schema → Cedar mapping ([`map_tool`]): `required` properties are required,
//! the others optional; `object` with `properties` is a record; `array` with one `items`
//! schema is a set; `integer` is `Long`, `number` is `decimal`, `boolean` is `Bool`,
//! `string` is `String`, except `format: date-time` and `date` (`datetime`) and `ipv4` /
//! `ipv6` (`ipaddr`); `enum` and `const` take the type of their values; local `$ref`
//! (`#/$defs/..`) and a one-element `allOf` are followed. A nullable type (`[T, "null"]`,
//! `anyOf: [T, {"type": "null"}]`) is typed as `T` and made optional (a `null` value does
//! not match). What Cedar cannot type — a union of several types, `oneOf`, a tuple, a
//! map (`additionalProperties` without `properties`), `null`, an untyped value, a
//! recursive `$ref` — is left out of the record and reported as an [`Untypable`], named by
//! tool and JSON pointer into its `inputSchema` (below a `$ref`, into the reference's
//! target): the call's value for it is then an undeclared argument.
//!
//! [`read_fragment`] reads a generated fragment back and [`drift`] compares two imports,
//! for `mcp-authz schema check`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use cedar_policy::SchemaFragment;
use serde_json::{Map, Value};

use super::NAMESPACE;
use super::json::{JsonFault, parse_with};

/// Deepest JSON nesting read from a `tools/list` or `prompts/list` file.
const MAX_JSON_DEPTH: usize = 128;
/// Deepest JSON Schema nesting (records, sets, `$ref`s) typed.
const MAX_TYPE_DEPTH: usize = 32;
/// The MCP tool annotations copied to a tool entity when the base schema declares them.
pub const TOOL_HINTS: [&str; 4] = [
    "readOnlyHint",
    "destructiveHint",
    "idempotentHint",
    "openWorldHint",
];

/// Why an import or a check cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    /// The input is not JSON.
    #[error("not JSON: {0}")]
    Json(String),
    /// The input is JSON but not a list result.
    #[error("not a `{method}` result: {reason}")]
    NotAList {
        /// `tools/list` or `prompts/list`.
        method: &'static str,
        /// What is missing or wrong.
        reason: String,
    },
    /// A tool or prompt is listed twice.
    #[error("{kind} `{name}` is listed twice")]
    Duplicate {
        /// `tool` or `prompt`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The server name cannot name a server.
    #[error(
        "server name `{0}` is not 1 to 128 letters, digits, `_`, `-` or `.` (not starting with `.`)"
    )]
    ServerName(String),
    /// The base schema cannot be read or lacks what the import needs.
    #[error("base schema: {0}")]
    Base(String),
    /// A generated fragment cannot be read back.
    #[error("imported schema: {0}")]
    Fragment(String),
}

impl From<JsonFault> for ImportError {
    fn from(f: JsonFault) -> Self {
        ImportError::Json(match f {
            JsonFault::Syntax(m) => m,
            JsonFault::TooDeep => format!("nested deeper than {MAX_JSON_DEPTH}"),
            JsonFault::DuplicateKey(k) => format!("key `{k}` twice in one object"),
            JsonFault::CaseVariantKeys(a, b) => {
                format!("keys `{a}` and `{b}` differ only in case")
            }
        })
    }
}

/// A Cedar type, as the import writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    /// `Bool`.
    Bool,
    /// `Long`.
    Long,
    /// `String`.
    String,
    /// An extension type: `decimal`, `datetime`, `ipaddr`, `duration`.
    Ext(&'static str),
    /// `Set<T>`.
    Set(Box<Ty>),
    /// A record.
    Record(Record),
    /// A type of the base schema, by its qualified name (`Mcp::User`).
    Named(String),
}

/// A record type: attributes by name, each required or optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record(pub BTreeMap<String, Attr>);

/// One attribute of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    /// Its type.
    pub ty: Ty,
    /// Whether it must be present.
    pub required: bool,
}

/// One tool of a `tools/list` result.
#[derive(Debug, Clone)]
pub struct ToolDef {
    /// `name`.
    pub name: String,
    /// `description`, if any.
    pub description: Option<String>,
    /// `inputSchema` (an empty object when absent).
    pub input_schema: Value,
    /// `annotations` (empty when absent).
    pub annotations: Map<String, Value>,
}

/// One prompt of a `prompts/list` result.
#[derive(Debug, Clone)]
pub struct PromptDef {
    /// `name`.
    pub name: String,
    /// `description`, if any.
    pub description: Option<String>,
    /// Its arguments: name and whether required.
    pub arguments: Vec<(String, bool)>,
}

/// Something of a tool's `inputSchema` that Cedar cannot type, and what was done instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untypable {
    /// The tool's name.
    pub tool: String,
    /// JSON pointer into the tool's `inputSchema` (`/properties/filter/anyOf`).
    pub pointer: String,
    /// What it is.
    pub what: String,
    /// What the import did instead.
    pub fallback: Fallback,
}

/// What the import did with something it cannot type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Left out of the arguments record: a call's value for it is an undeclared argument.
    LeftOut,
    /// Typed without its `null` alternative, and optional: a `null` value does not match.
    NullDropped,
    /// The declared properties are typed, the other keys (`additionalProperties`) are not.
    ExtraKeysUntyped,
}

impl fmt::Display for Untypable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        let fallback = match self.fallback {
            Fallback::LeftOut => {
                "left out of the typed arguments (a call that carries it has an undeclared argument)"
            }
            Fallback::NullDropped => {
                "typed without `null`, optional (a `null` value does not match)"
            }
            Fallback::ExtraKeysUntyped => {
                "only the declared properties are typed (other keys are undeclared arguments)"
            }
        };
        write!(
            f,
            "tool `{}` at `{pointer}`: {} cannot be typed in Cedar: {fallback}",
            self.tool, self.what
        )
    }
}

/// The typed arguments of a server's tools and prompts: what an import declares and
/// what a check compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    /// Tools by name.
    pub tools: BTreeMap<String, Record>,
    /// Prompts by name.
    pub prompts: BTreeMap<String, Record>,
}

/// Check a server name for use in action and entity ids and in a file name.
pub fn check_server_name(server: &str) -> Result<(), ImportError> {
    let ok = !server.is_empty()
        && server.len() <= 128
        && !server.starts_with('.')
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ImportError::ServerName(server.to_owned()))
    }
}

/// The list of a `*/list` result, or of a whole JSON-RPC response carrying one.
fn list_of<'a>(
    doc: &'a Value,
    method: &'static str,
    key: &str,
) -> Result<&'a [Value], ImportError> {
    let not_a_list = |reason: String| ImportError::NotAList { method, reason };
    let obj = doc
        .as_object()
        .ok_or_else(|| not_a_list("not a JSON object".into()))?;
    let result = match obj.get("result") {
        Some(r) if !obj.contains_key(key) => r
            .as_object()
            .ok_or_else(|| not_a_list("`result` is not an object".into()))?,
        _ => obj,
    };
    if obj.contains_key("error") && !result.contains_key(key) {
        return Err(not_a_list("the response is a JSON-RPC error".into()));
    }
    if result.get("nextCursor").is_some_and(|c| !c.is_null()) {
        return Err(not_a_list(
            "it has a `nextCursor`: save every page's entries in one list".into(),
        ));
    }
    match result.get(key) {
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(not_a_list(format!("`{key}` is not an array"))),
        None => Err(not_a_list(format!("no `{key}` array"))),
    }
}

fn name_of(entry: &Value, method: &'static str, index: usize) -> Result<String, ImportError> {
    match entry.get("name") {
        Some(Value::String(n)) if !n.is_empty() => Ok(n.clone()),
        _ => Err(ImportError::NotAList {
            method,
            reason: format!("entry {index} has no `name`"),
        }),
    }
}

fn description_of(entry: &Value) -> Option<String> {
    entry
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Read a saved `tools/list` result (`{"tools": [...]}`, or a JSON-RPC response with it
/// in `result`).
pub fn read_tools(text: &str) -> Result<Vec<ToolDef>, ImportError> {
    const METHOD: &str = "tools/list";
    let doc = parse_with(
        text,
        MAX_JSON_DEPTH,
        &["properties", "$defs", "definitions", "_meta"],
    )?;
    let mut names = BTreeSet::new();
    let mut tools = Vec::new();
    for (i, entry) in list_of(&doc, METHOD, "tools")?.iter().enumerate() {
        let name = name_of(entry, METHOD, i)?;
        if !names.insert(name.clone()) {
            return Err(ImportError::Duplicate { kind: "tool", name });
        }
        let input_schema = match entry.get("inputSchema") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(s @ Value::Object(_)) => s.clone(),
            Some(_) => {
                return Err(ImportError::NotAList {
                    method: METHOD,
                    reason: format!("the `inputSchema` of tool `{name}` is not an object"),
                });
            }
        };
        let annotations = entry
            .get("annotations")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        tools.push(ToolDef {
            name,
            description: description_of(entry),
            input_schema,
            annotations,
        });
    }
    Ok(tools)
}

/// Read a saved `prompts/list` result.
pub fn read_prompts(text: &str) -> Result<Vec<PromptDef>, ImportError> {
    const METHOD: &str = "prompts/list";
    let doc = parse_with(text, MAX_JSON_DEPTH, &["_meta"])?;
    let mut names = BTreeSet::new();
    let mut prompts = Vec::new();
    for (i, entry) in list_of(&doc, METHOD, "prompts")?.iter().enumerate() {
        let name = name_of(entry, METHOD, i)?;
        if !names.insert(name.clone()) {
            return Err(ImportError::Duplicate {
                kind: "prompt",
                name,
            });
        }
        let mut arguments = Vec::new();
        let mut arg_names = BTreeSet::new();
        for (j, arg) in entry
            .get("arguments")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let arg_name = name_of(arg, METHOD, j).map_err(|_| ImportError::NotAList {
                method: METHOD,
                reason: format!("argument {j} of prompt `{name}` has no `name`"),
            })?;
            if !arg_names.insert(arg_name.clone()) {
                return Err(ImportError::Duplicate {
                    kind: "prompt argument",
                    name: format!("{name}.{arg_name}"),
                });
            }
            let required = arg.get("required").and_then(Value::as_bool) == Some(true);
            arguments.push((arg_name, required));
        }
        prompts.push(PromptDef {
            name,
            description: description_of(entry),
            arguments,
        });
    }
    Ok(prompts)
}

/// Type one tool's `inputSchema` as a record; what cannot be typed is appended to `notes`.
pub fn map_tool(tool: &ToolDef, notes: &mut Vec<Untypable>) -> Record {
    let mut mapper = Mapper {
        tool: &tool.name,
        root: &tool.input_schema,
        refs: Vec::new(),
        notes,
    };
    let schema = &tool.input_schema;
    let indirect = ["$ref", "allOf", "anyOf", "oneOf"]
        .iter()
        .any(|k| schema.get(k).is_some());
    if !indirect {
        return mapper.object(schema, "", 0, true);
    }
    // The arguments behind a reference or a combination: they must be one object.
    match mapper.value(schema, "", 0) {
        Some((Ty::Record(record), _)) => record,
        Some((other, _)) => {
            mapper.left_out("", format!("arguments of type `{}`", other.inline()));
            Record::default()
        }
        None => Record::default(),
    }
}

/// The typed arguments of a prompt: every declared argument a `String`.
pub fn map_prompt(prompt: &PromptDef) -> Record {
    Record(
        prompt
            .arguments
            .iter()
            .map(|(name, required)| {
                (
                    name.clone(),
                    Attr {
                        ty: Ty::String,
                        required: *required,
                    },
                )
            })
            .collect(),
    )
}

/// Type every tool and prompt of a server.
pub fn declare(tools: &[ToolDef], prompts: &[PromptDef]) -> (Declared, Vec<Untypable>) {
    let mut notes = Vec::new();
    let declared = Declared {
        tools: tools
            .iter()
            .map(|t| (t.name.clone(), map_tool(t, &mut notes)))
            .collect(),
        prompts: prompts
            .iter()
            .map(|p| (p.name.clone(), map_prompt(p)))
            .collect(),
    };
    notes.sort_by(|a, b| (&a.tool, &a.pointer).cmp(&(&b.tool, &b.pointer)));
    // A definition used twice is reported once.
    notes.dedup();
    (declared, notes)
}

struct Mapper<'a> {
    tool: &'a str,
    root: &'a Value,
    refs: Vec<String>,
    notes: &'a mut Vec<Untypable>,
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Mapper<'_> {
    fn note(&mut self, pointer: &str, what: impl Into<String>, fallback: Fallback) {
        self.notes.push(Untypable {
            tool: self.tool.to_owned(),
            pointer: pointer.to_owned(),
            what: what.into(),
            fallback,
        });
    }

    fn left_out(&mut self, pointer: &str, what: impl Into<String>) -> Option<(Ty, bool)> {
        self.note(pointer, what, Fallback::LeftOut);
        None
    }

    /// The record of an object schema's `properties` (the top level: an object even
    /// without `properties`).
    fn object(&mut self, schema: &Value, pointer: &str, depth: usize, top: bool) -> Record {
        let required: BTreeSet<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut record = Record::default();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                let at = format!("{pointer}/properties/{}", pointer_escape(name));
                if let Some((ty, nullable)) = self.value(prop, &at, depth + 1) {
                    record.0.insert(
                        name.clone(),
                        Attr {
                            ty,
                            required: required.contains(name.as_str()) && !nullable,
                        },
                    );
                }
            }
        }
        let extra = schema.get("additionalProperties");
        let typed_extra = matches!(extra, Some(Value::Object(_)) | Some(Value::Bool(true)));
        if typed_extra && (top || schema.get("properties").is_some()) {
            self.note(
                &format!("{pointer}/additionalProperties"),
                "`additionalProperties`",
                Fallback::ExtraKeysUntyped,
            );
        }
        record
    }

    /// The type of one value schema, and whether it admits `null`; `None` (noted) when
    /// Cedar cannot type it.
    fn value(&mut self, schema: &Value, pointer: &str, depth: usize) -> Option<(Ty, bool)> {
        if depth > MAX_TYPE_DEPTH {
            return self.left_out(pointer, format!("nesting deeper than {MAX_TYPE_DEPTH}"));
        }
        let Some(obj) = schema.as_object() else {
            return self.left_out(pointer, "a schema that is not an object (any value)");
        };
        if let Some(reference) = obj.get("$ref") {
            return self.reference(reference, pointer, depth);
        }
        if let Some(all) = obj.get("allOf") {
            return match all.as_array().map(Vec::as_slice) {
                Some([only]) => self.value(only, &format!("{pointer}/allOf/0"), depth + 1),
                _ => self.left_out(&format!("{pointer}/allOf"), "an intersection (`allOf`)"),
            };
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(alternatives) = obj.get(keyword) {
                return self.union(keyword, alternatives, pointer, depth);
            }
        }
        match obj.get("type") {
            Some(Value::String(t)) => self.typed(t, obj, pointer, depth),
            Some(Value::Array(types)) => {
                let names: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
                let non_null: Vec<&str> = names.iter().copied().filter(|t| *t != "null").collect();
                match non_null.as_slice() {
                    [one] => {
                        let nullable = names.len() > 1;
                        let (ty, _) = self.typed(one, obj, pointer, depth)?;
                        if nullable {
                            self.note(&format!("{pointer}/type"), "`null`", Fallback::NullDropped);
                        }
                        Some((ty, nullable))
                    }
                    [] => self.left_out(&format!("{pointer}/type"), "`null`"),
                    _ => self.left_out(
                        &format!("{pointer}/type"),
                        format!("a union of {} types", non_null.len()),
                    ),
                }
            }
            Some(_) => self.left_out(&format!("{pointer}/type"), "a `type` that is not a name"),
            None => {
                if obj.contains_key("properties") {
                    self.typed("object", obj, pointer, depth)
                } else if let Some(values) = obj.get("enum").and_then(Value::as_array) {
                    self.of_values(values, &format!("{pointer}/enum"))
                } else if let Some(value) = obj.get("const") {
                    self.of_values(std::slice::from_ref(value), &format!("{pointer}/const"))
                } else {
                    self.left_out(pointer, "a value without a `type`")
                }
            }
        }
    }

    fn reference(&mut self, reference: &Value, pointer: &str, depth: usize) -> Option<(Ty, bool)> {
        let at = format!("{pointer}/$ref");
        let Some(target) = reference.as_str() else {
            return self.left_out(&at, "a `$ref` that is not a string");
        };
        let resolved = target
            .strip_prefix('#')
            .and_then(|p| self.root.pointer(p).cloned());
        let Some(resolved) = resolved else {
            return self.left_out(&at, format!("`$ref` `{target}` (not in this schema)"));
        };
        if self.refs.iter().any(|r| r == target) {
            return self.left_out(&at, format!("a recursive `$ref` `{target}`"));
        }
        self.refs.push(target.to_owned());
        // Below the reference, pointers point into its target (`/$defs/Node/...`).
        let target_pointer = target.strip_prefix('#').unwrap_or_default();
        let typed = self.value(&resolved, target_pointer, depth + 1);
        self.refs.pop();
        typed
    }

    fn union(
        &mut self,
        keyword: &str,
        alternatives: &Value,
        pointer: &str,
        depth: usize,
    ) -> Option<(Ty, bool)> {
        let at = format!("{pointer}/{keyword}");
        let Some(alternatives) = alternatives.as_array() else {
            return self.left_out(&at, format!("a `{keyword}` that is not an array"));
        };
        let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
        let non_null: Vec<(usize, &Value)> = alternatives
            .iter()
            .enumerate()
            .filter(|(_, s)| !is_null(s))
            .collect();
        let nullable = non_null.len() < alternatives.len();
        match non_null.as_slice() {
            [(i, only)] => {
                let (ty, _) = self.value(only, &format!("{at}/{i}"), depth + 1)?;
                if nullable {
                    self.note(&at, "`null`", Fallback::NullDropped);
                }
                Some((ty, nullable))
            }
            [] => self.left_out(&at, "`null`"),
            _ => self.left_out(
                &at,
                format!("a union (`{keyword}`) of {} types", non_null.len()),
            ),
        }
    }

    fn typed(
        &mut self,
        t: &str,
        obj: &Map<String, Value>,
        pointer: &str,
        depth: usize,
    ) -> Option<(Ty, bool)> {
        let ty = match t {
            "string" => match obj.get("format").and_then(Value::as_str) {
                Some("date-time" | "date") => Ty::Ext("datetime"),
                Some("ipv4" | "ipv6") => Ty::Ext("ipaddr"),
                _ => Ty::String,
            },
            "integer" => Ty::Long,
            "number" => Ty::Ext("decimal"),
            "boolean" => Ty::Bool,
            "null" => return self.left_out(&format!("{pointer}/type"), "`null`"),
            "array" => {
                if obj.contains_key("prefixItems") {
                    return self.left_out(&format!("{pointer}/prefixItems"), "a tuple");
                }
                match obj.get("items") {
                    Some(items @ Value::Object(_)) => {
                        let (element, _) =
                            self.value(items, &format!("{pointer}/items"), depth + 1)?;
                        Ty::Set(Box::new(element))
                    }
                    Some(Value::Array(_)) => {
                        return self.left_out(&format!("{pointer}/items"), "a tuple");
                    }
                    _ => return self.left_out(pointer, "an array without one `items` schema"),
                }
            }
            "object" => {
                if !obj.contains_key("properties") {
                    return self.left_out(pointer, "an object without `properties` (a map)");
                }
                Ty::Record(self.object(&Value::Object(obj.clone()), pointer, depth, false))
            }
            other => return self.left_out(&format!("{pointer}/type"), format!("type `{other}`")),
        };
        Some((ty, false))
    }

    fn of_values(&mut self, values: &[Value], pointer: &str) -> Option<(Ty, bool)> {
        let ty = |v: &Value| match v {
            Value::String(_) => Some(Ty::String),
            Value::Bool(_) => Some(Ty::Bool),
            Value::Number(n) if n.is_i64() => Some(Ty::Long),
            _ => None,
        };
        let mut types = values.iter().map(ty);
        match types.next() {
            Some(Some(first)) if types.all(|t| t.as_ref() == Some(&first)) => Some((first, false)),
            _ => self.left_out(pointer, "values of no one Cedar type"),
        }
    }
}

// ---------------------------------------------------------------------------
// The base schema: what the fragment copies from it.

/// What an import reads from the base schema of a policy directory.
#[derive(Debug, Clone)]
pub struct Base {
    tools_call: Option<ActionShape>,
    prompts_get: Option<ActionShape>,
    /// The `Mcp::Tool` attributes declared `Bool` among [`TOOL_HINTS`].
    tool_hints: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct ActionShape {
    principals: Vec<String>,
    resources: Vec<String>,
    context: Record,
}

impl Base {
    /// Read the base schema (Cedar's human syntax).
    pub fn from_cedarschema(text: &str) -> Result<Base, ImportError> {
        let (fragment, _warnings) = SchemaFragment::from_cedarschema_str(text)
            .map_err(|e| ImportError::Base(e.to_string()))?;
        let json = fragment
            .to_json_value()
            .map_err(|e| ImportError::Base(e.to_string()))?;
        let ns = json
            .get(NAMESPACE)
            .ok_or_else(|| ImportError::Base(format!("no namespace `{NAMESPACE}`")))?;
        let common = ns.get("commonTypes").and_then(Value::as_object);
        let action = |name: &str| -> Result<Option<ActionShape>, ImportError> {
            let Some(applies) = ns
                .get("actions")
                .and_then(|a| a.get(name))
                .and_then(|a| a.get("appliesTo"))
            else {
                return Ok(None);
            };
            let names = |key: &str| -> Vec<String> {
                applies
                    .get(key)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let context = match applies.get("context") {
                None => Record::default(),
                Some(c) => {
                    let reference = c.get("name").and_then(Value::as_str).or_else(|| {
                        c.get("type").and_then(Value::as_str).filter(|t| {
                            *t != "Record" && common.is_some_and(|m| m.contains_key(*t))
                        })
                    });
                    let c = match reference {
                        Some(n) => common.and_then(|t| t.get(n)).ok_or_else(|| {
                            ImportError::Base(format!(
                                "the context of `{name}` names no type: `{n}`"
                            ))
                        })?,
                        None => c,
                    };
                    match from_json_type(c) {
                        Some(Ty::Record(r)) => r,
                        _ => {
                            return Err(ImportError::Base(format!(
                                "the context of `{name}` is not a record"
                            )));
                        }
                    }
                }
            };
            Ok(Some(ActionShape {
                principals: names("principalTypes"),
                resources: names("resourceTypes"),
                context,
            }))
        };
        let tools_call = action("tools/call")?;
        let prompts_get = action("prompts/get")?;
        let tool_hints = ns
            .get("entityTypes")
            .and_then(|e| e.get("Tool"))
            .and_then(|t| t.get("shape"))
            .and_then(from_json_type)
            .map(|t| match t {
                Ty::Record(r) => {
                    r.0.into_iter()
                        .filter(|(k, a)| TOOL_HINTS.contains(&k.as_str()) && a.ty == Ty::Bool)
                        .map(|(k, _)| k)
                        .collect()
                }
                _ => BTreeSet::new(),
            })
            .unwrap_or_default();
        Ok(Base {
            tools_call,
            prompts_get,
            tool_hints,
        })
    }
}

/// A Cedar JSON-schema type as a [`Ty`]; a named type (an entity or common type) keeps
/// its name, qualified by the namespace.
fn from_json_type(t: &Value) -> Option<Ty> {
    let kind = t.get("type").and_then(Value::as_str)?;
    let named = |name: &str| -> Ty {
        let bare = name.strip_prefix("__cedar::").unwrap_or(name);
        match bare {
            "String" => Ty::String,
            "Long" => Ty::Long,
            "Bool" | "Boolean" => Ty::Bool,
            "decimal" => Ty::Ext("decimal"),
            "datetime" => Ty::Ext("datetime"),
            "ipaddr" => Ty::Ext("ipaddr"),
            "duration" => Ty::Ext("duration"),
            _ if name.contains("::") => Ty::Named(name.to_owned()),
            _ => Ty::Named(format!("{NAMESPACE}::{name}")),
        }
    };
    Some(match kind {
        "String" => Ty::String,
        "Long" => Ty::Long,
        "Boolean" | "Bool" => Ty::Bool,
        "Set" => Ty::Set(Box::new(from_json_type(t.get("element")?)?)),
        "Record" => {
            let mut record = Record::default();
            for (name, attr) in t.get("attributes")?.as_object()? {
                record.0.insert(
                    name.clone(),
                    Attr {
                        ty: from_json_type(attr)?,
                        required: attr.get("required").and_then(Value::as_bool) != Some(false),
                    },
                );
            }
            Ty::Record(record)
        }
        "Extension" | "Entity" | "EntityOrCommon" => named(t.get("name")?.as_str()?),
        other => named(other),
    })
}

// ---------------------------------------------------------------------------
// Writing: the fragment and the entities.

/// Cedar's string literal for `s` (quoted, escaped).
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One line of free text for a comment: control characters become spaces, at most
/// `max` characters.
fn comment_text(s: &str, max: usize) -> String {
    let line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max).collect();
        format!("{}…", cut.trim_end())
    } else {
        line.to_owned()
    }
}

impl Ty {
    /// Cedar's human syntax for this type; records span lines indented by `indent`.
    pub fn render(&self, indent: usize) -> String {
        match self {
            Ty::Bool => "Bool".into(),
            Ty::Long => "Long".into(),
            Ty::String => "String".into(),
            Ty::Ext(name) => (*name).into(),
            Ty::Set(element) => format!("Set<{}>", element.render(indent)),
            Ty::Named(name) => name.clone(),
            Ty::Record(record) => record.render(indent),
        }
    }

    /// The type on one line, for messages.
    pub fn inline(&self) -> String {
        match self {
            Ty::Set(element) => format!("Set<{}>", element.inline()),
            Ty::Record(record) => {
                let attrs: Vec<String> = record
                    .0
                    .iter()
                    .map(|(k, a)| {
                        format!(
                            "{}{}: {}",
                            quoted(k),
                            if a.required { "" } else { "?" },
                            a.ty.inline()
                        )
                    })
                    .collect();
                format!("{{{}}}", attrs.join(", "))
            }
            other => other.render(0),
        }
    }
}

impl Record {
    /// Cedar's human syntax, one attribute a line, sorted by name.
    pub fn render(&self, indent: usize) -> String {
        if self.0.is_empty() {
            return "{}".into();
        }
        let pad = " ".repeat(indent + 2);
        let mut out = String::from("{\n");
        for (name, attr) in &self.0 {
            let _ = writeln!(
                out,
                "{pad}{}{}: {},",
                quoted(name),
                if attr.required { "" } else { "?" },
                attr.ty.render(indent + 2)
            );
        }
        out.push_str(&" ".repeat(indent));
        out.push('}');
        out
    }
}

/// How a generated fragment says where it came from.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The server name.
    pub server: String,
    /// The `tools/list` file, as named on the command line.
    pub tools_file: String,
    /// The `prompts/list` file, if any.
    pub prompts_file: Option<String>,
    /// Listed live: `tools_file` (and `prompts_file`) is the server's URL, and the
    /// command to re-run is `--url URL`.
    pub live: bool,
}

/// The action id of a tool (`tools/call/S/T`) or prompt (`prompts/get/S/P`).
pub fn action_id(method: &str, server: &str, name: &str) -> String {
    format!("{method}/{server}/{name}")
}

/// The schema fragment of a server: a header comment, then one action per tool and
/// prompt, sorted by name.
pub fn render_fragment(
    from: &Provenance,
    tools: &[ToolDef],
    prompts: &[PromptDef],
    declared: &Declared,
    notes: &[Untypable],
    base: &Base,
) -> Result<String, ImportError> {
    let server = &from.server;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "// Generated by `mcp-authz schema import`: do not edit, re-run it."
    );
    let _ = writeln!(
        out,
        "// Server `{}`: {} tools from `{}`{}.",
        comment_text(server, 128),
        declared.tools.len(),
        comment_text(&from.tools_file, 200),
        match &from.prompts_file {
            Some(p) => format!(
                ", {} prompts from `{}`",
                declared.prompts.len(),
                comment_text(p, 200)
            ),
            None => String::new(),
        }
    );
    let mut rerun = format!(
        "//   mcp-authz schema import --server {} {}{}",
        comment_text(server, 128),
        if from.live { "--url " } else { "" },
        comment_text(&from.tools_file, 200)
    );
    match &from.prompts_file {
        Some(p) if !from.live => {
            let _ = write!(rerun, " --prompts {}", comment_text(p, 200));
        }
        _ => {}
    }
    let _ = writeln!(out, "// To update it:\n{rerun} --policies DIR");
    let _ = writeln!(
        out,
        "// Each action's context is the base schema's context of `tools/call` (`prompts/get`)\n\
         // with `arguments` typed by the tool's `inputSchema` (the prompt's arguments)."
    );
    if !notes.is_empty() {
        let _ = writeln!(out, "// Not typed:");
        for note in notes {
            let _ = writeln!(out, "//   {}", comment_text(&note.to_string(), 400));
        }
    }
    let _ = writeln!(out, "namespace {NAMESPACE} {{");
    let descriptions: BTreeMap<&str, Option<&str>> = tools
        .iter()
        .map(|t| (t.name.as_str(), t.description.as_deref()))
        .chain(
            prompts
                .iter()
                .map(|p| (p.name.as_str(), p.description.as_deref())),
        )
        .collect();
    let sections = [
        ("tools/call", &base.tools_call, &declared.tools, "tool"),
        (
            "prompts/get",
            &base.prompts_get,
            &declared.prompts,
            "prompt",
        ),
    ];
    let mut first = true;
    for (method, shape, items, kind) in sections {
        if items.is_empty() {
            continue;
        }
        let shape = shape.as_ref().ok_or_else(|| {
            ImportError::Base(format!(
                "no action `{method}` with `appliesTo` for the {kind}s"
            ))
        })?;
        for (name, arguments) in items {
            if !first {
                out.push('\n');
            }
            first = false;
            let description = descriptions.get(name.as_str()).copied().flatten();
            match description.map(|d| comment_text(d, 160)) {
                Some(d) if !d.is_empty() => {
                    let _ = writeln!(out, "  // {}: {d}", comment_text(name, 128));
                }
                _ => {}
            }
            let mut context = shape.context.clone();
            context.0.insert(
                "arguments".into(),
                Attr {
                    ty: Ty::Record(arguments.clone()),
                    required: true,
                },
            );
            let _ = writeln!(
                out,
                "  action {} in [{}]\n    appliesTo {{\n      principal: [{}],\n      resource: [{}],\n      context: {},\n    }};",
                quoted(&action_id(method, server, name)),
                quoted(method),
                shape.principals.join(", "),
                shape.resources.join(", "),
                context.render(6)
            );
        }
    }
    out.push_str("}\n");
    Ok(out)
}

/// The tool and prompt entities of a server, as Cedar's entity JSON: one entity a line,
/// sorted by id; tool annotations the base schema declares as `Bool` attributes.
pub fn render_entities(
    server: &str,
    tools: &[ToolDef],
    prompts: &[PromptDef],
    base: &Base,
) -> String {
    render_entities_except(server, tools, prompts, base, &BTreeSet::new())
}

/// [`render_entities`] without the entities of `defined` (`(type, id)`, as
/// `("Mcp::Tool", "docs/search")`): those the policy directory's own `entities.json`
/// defines, which stay there (one entity, one file).
pub fn render_entities_except(
    server: &str,
    tools: &[ToolDef],
    prompts: &[PromptDef],
    base: &Base,
    defined: &BTreeSet<(String, String)>,
) -> String {
    let is_defined = |ty: &str, id: &str| defined.contains(&(ty.to_owned(), id.to_owned()));
    let parent = serde_json::json!([{ "type": format!("{NAMESPACE}::Server"), "id": server }]);
    let mut lines = BTreeMap::new();
    for tool in tools {
        let attrs: Map<String, Value> = tool
            .annotations
            .iter()
            .filter(|(k, v)| base.tool_hints.contains(k.as_str()) && v.is_boolean())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let id = format!("{server}/{}", tool.name);
        if is_defined(&format!("{NAMESPACE}::Tool"), &id) {
            continue;
        }
        let entity = serde_json::json!({
            "uid": { "type": format!("{NAMESPACE}::Tool"), "id": id },
            "attrs": attrs,
            "parents": parent,
        });
        lines.insert(("Tool", tool.name.clone()), entity.to_string());
    }
    for prompt in prompts {
        let id = format!("{server}/{}", prompt.name);
        if is_defined(&format!("{NAMESPACE}::Prompt"), &id) {
            continue;
        }
        let entity = serde_json::json!({
            "uid": { "type": format!("{NAMESPACE}::Prompt"), "id": id },
            "attrs": {},
            "parents": parent,
        });
        lines.insert(("Prompt", prompt.name.clone()), entity.to_string());
    }
    let body: Vec<String> = lines.into_values().map(|l| format!("  {l}")).collect();
    if body.is_empty() {
        "[]\n".into()
    } else {
        format!("[\n{}\n]\n", body.join(",\n"))
    }
}

// ---------------------------------------------------------------------------
// Reading a fragment back, and drift.

/// The tool and prompt actions of `server` in a generated fragment: kind, name, action id
/// and the action's JSON (Cedar's JSON schema format).
fn fragment_actions(
    server: &str,
    text: &str,
) -> Result<Vec<(&'static str, String, String, Value)>, ImportError> {
    let (fragment, _warnings) = SchemaFragment::from_cedarschema_str(text)
        .map_err(|e| ImportError::Fragment(e.to_string()))?;
    let json = fragment
        .to_json_value()
        .map_err(|e| ImportError::Fragment(e.to_string()))?;
    let Some(actions) = json
        .get(NAMESPACE)
        .and_then(|n| n.get("actions"))
        .and_then(Value::as_object)
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (id, action) in actions {
        let (kind, name) = if let Some(n) = id.strip_prefix(&format!("tools/call/{server}/")) {
            ("tool", n)
        } else if let Some(n) = id.strip_prefix(&format!("prompts/get/{server}/")) {
            ("prompt", n)
        } else {
            continue;
        };
        out.push((kind, name.to_owned(), id.clone(), action.clone()));
    }
    Ok(out)
}

/// The context record of an action of a fragment.
fn context_of(id: &str, action: &Value) -> Result<Record, ImportError> {
    match action
        .get("appliesTo")
        .and_then(|a| a.get("context"))
        .and_then(from_json_type)
    {
        Some(Ty::Record(r)) => Ok(r),
        _ => Err(ImportError::Fragment(format!(
            "action `{id}` has no context record"
        ))),
    }
}

/// The tools and prompts a generated fragment of `server` declares, with their arguments.
pub fn read_fragment(server: &str, text: &str) -> Result<Declared, ImportError> {
    let mut declared = Declared::default();
    for (kind, name, id, action) in fragment_actions(server, text)? {
        let map = if kind == "tool" {
            &mut declared.tools
        } else {
            &mut declared.prompts
        };
        match context_of(&id, &action)?.0.remove("arguments") {
            Some(Attr {
                ty: Ty::Record(r), ..
            }) => {
                map.insert(name, r);
            }
            _ => {
                return Err(ImportError::Fragment(format!(
                    "action `{id}` has no `arguments` record"
                )));
            }
        }
    }
    Ok(declared)
}

/// The tool and prompt actions of a generated fragment whose principals, resources or
/// context (`arguments` aside) are no longer what the base schema gives `tools/call`
/// (`prompts/get`): the base schema changed since the import.
pub fn stale_actions(server: &str, text: &str, base: &Base) -> Result<Vec<Change>, ImportError> {
    let mut out = Vec::new();
    for (kind, name, id, action) in fragment_actions(server, text)? {
        let shape = if kind == "tool" {
            &base.tools_call
        } else {
            &base.prompts_get
        };
        let mut context = context_of(&id, &action)?;
        context.0.remove("arguments");
        let names = |key: &str| -> Vec<String> {
            action
                .get("appliesTo")
                .and_then(|a| a.get(key))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut base_context = shape.as_ref().map(|s| s.context.clone());
        if let Some(c) = base_context.as_mut() {
            c.0.remove("arguments");
        }
        let same = shape.as_ref().is_some_and(|s| {
            s.principals == names("principalTypes") && s.resources == names("resourceTypes")
        }) && base_context.as_ref() == Some(&context);
        if !same {
            out.push(Change::Stale { kind, name });
        }
    }
    Ok(out)
}

/// One difference between what was imported and what the server lists now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A tool or prompt the server lists that was not imported.
    Added {
        /// `tool` or `prompt`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An imported tool or prompt the server no longer lists.
    Removed {
        /// `tool` or `prompt`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An argument of a tool or prompt changed (added, removed, or typed differently).
    Argument {
        /// `tool` or `prompt`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The argument's path (`filter.since`).
        path: String,
        /// How it was imported, if it was (`Long`, `Long?` when optional).
        was: Option<String>,
        /// What the server declares now, if anything.
        now: Option<String>,
    },
    /// The action's principals, resources or context (`arguments` aside) are not the base
    /// schema's any more.
    Stale {
        /// `tool` or `prompt`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// An attribute of a tool or prompt entity (a tool annotation) changed.
    Attribute {
        /// `tool` or `prompt`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The attribute.
        attribute: String,
        /// Its imported value (JSON), if any.
        was: Option<String>,
        /// Its value now (JSON), if any.
        now: Option<String>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { kind, name } => write!(f, "{kind} `{name}` added"),
            Change::Removed { kind, name } => write!(f, "{kind} `{name}` removed"),
            Change::Argument {
                kind,
                name,
                path,
                was,
                now,
            } => match (was, now) {
                (None, Some(now)) => {
                    write!(f, "{kind} `{name}`: argument `{path}` added: `{now}`")
                }
                (Some(was), None) => {
                    write!(
                        f,
                        "{kind} `{name}`: argument `{path}` removed (was `{was}`)"
                    )
                }
                (Some(was), Some(now)) => {
                    write!(
                        f,
                        "{kind} `{name}`: argument `{path}` changed from `{was}` to `{now}`"
                    )
                }
                (None, None) => write!(f, "{kind} `{name}`: argument `{path}` changed"),
            },
            Change::Stale { kind, name } => write!(
                f,
                "{kind} `{name}`: its principals, resources or context are not the base schema's any more"
            ),
            Change::Attribute {
                kind,
                name,
                attribute,
                was,
                now,
            } => {
                let shown = |v: &Option<String>| v.clone().unwrap_or_else(|| "absent".into());
                write!(
                    f,
                    "{kind} `{name}`: attribute `{attribute}` changed from `{}` to `{}`",
                    shown(was),
                    shown(now)
                )
            }
        }
    }
}

fn attr_text(a: &Attr) -> String {
    format!(
        "{}{}",
        a.ty.inline(),
        if a.required { "" } else { " (optional)" }
    )
}

fn diff_records(
    kind: &'static str,
    name: &str,
    prefix: &str,
    was: &Record,
    now: &Record,
    out: &mut Vec<Change>,
) {
    let keys: BTreeSet<&String> = was.0.keys().chain(now.0.keys()).collect();
    for key in keys {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let change = |was: Option<&Attr>, now: Option<&Attr>| Change::Argument {
            kind,
            name: name.to_owned(),
            path: path.clone(),
            was: was.map(attr_text),
            now: now.map(attr_text),
        };
        match (was.0.get(key), now.0.get(key)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => match (&a.ty, &b.ty) {
                (Ty::Record(ra), Ty::Record(rb)) if a.required == b.required => {
                    diff_records(kind, name, &path, ra, rb, out);
                }
                _ => out.push(change(Some(a), Some(b))),
            },
            (a, b) => out.push(change(a, b)),
        }
    }
}

/// The differences from `imported` to `current`, tools first, then prompts, by name.
/// Prompts are compared only when `compare_prompts`.
pub fn drift(imported: &Declared, current: &Declared, compare_prompts: bool) -> Vec<Change> {
    let mut out = Vec::new();
    let mut sections = vec![("tool", &imported.tools, &current.tools)];
    if compare_prompts {
        sections.push(("prompt", &imported.prompts, &current.prompts));
    }
    for (kind, was, now) in sections {
        let names: BTreeSet<&String> = was.keys().chain(now.keys()).collect();
        for name in names {
            match (was.get(name), now.get(name)) {
                (Some(a), Some(b)) => diff_records(kind, name, "", a, b, &mut out),
                (None, Some(_)) => out.push(Change::Added {
                    kind,
                    name: name.clone(),
                }),
                (Some(_), None) => out.push(Change::Removed {
                    kind,
                    name: name.clone(),
                }),
                (None, None) => {}
            }
        }
    }
    out
}

/// Entity attributes by kind (`tool`, `prompt`) and name.
type AttrsByEntity = BTreeMap<(&'static str, String), Map<String, Value>>;

/// The attributes of the tool and prompt entities of `server` in an entities file written
/// by [`render_entities`].
fn entity_attrs(server: &str, text: &str) -> Result<AttrsByEntity, ImportError> {
    let bad = |why: &str| ImportError::Fragment(format!("entities: {why}"));
    let doc: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let mut out = BTreeMap::new();
    for entity in doc.as_array().ok_or_else(|| bad("not an array"))? {
        let kind = match entity.pointer("/uid/type").and_then(Value::as_str) {
            Some(t) if t == format!("{NAMESPACE}::Tool") => "tool",
            Some(t) if t == format!("{NAMESPACE}::Prompt") => "prompt",
            _ => continue,
        };
        let Some(name) = entity
            .pointer("/uid/id")
            .and_then(Value::as_str)
            .and_then(|id| id.strip_prefix(server))
            .and_then(|id| id.strip_prefix('/'))
        else {
            continue;
        };
        let attrs = entity
            .get("attrs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        out.insert((kind, name.to_owned()), attrs);
    }
    Ok(out)
}

/// The attribute changes (tool annotations) of the entities both files define, from the
/// imported entities file to the one an import would write now.
pub fn entity_drift(
    server: &str,
    imported: &str,
    current: &str,
) -> Result<Vec<Change>, ImportError> {
    let was = entity_attrs(server, imported)?;
    let now = entity_attrs(server, current)?;
    let mut out = Vec::new();
    for ((kind, name), old) in &was {
        let Some(new) = now.get(&(*kind, name.clone())) else {
            continue;
        };
        let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        for key in keys {
            let (a, b) = (old.get(key), new.get(key));
            if a != b {
                out.push(Change::Attribute {
                    kind,
                    name: name.clone(),
                    attribute: key.clone(),
                    was: a.map(Value::to_string),
                    now: b.map(Value::to_string),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
