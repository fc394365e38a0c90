//! MCP list methods (`tools/list`, `prompts/list`, `resources/list`,
//! `resources/templates/list`): what each lists, how an entry is used, and their
//! results read strictly and filtered. Pure functions, no I/O.
//!
//! An entry is shown unless using it would be denied: [`ListKind::use_call`] is
//! the call an entry is decided as (`tools/call` of the tool, with no arguments;
//! for a tool the schema declares, the arguments unknown: `authz::listed`).
//! [`read_list_result`] reads a list result (or a whole JSON-RPC response carrying
//! one) so that what comes back is exactly what was sent, less the hidden entries
//! ([`ListResult::filtered`]), or a refusal.

use serde_json::{Value, json};

use super::json::{JsonFault, fold, parse};
use super::jsonrpc::{MAX_DEPTH, McpCall, parse_body, request_message};
use crate::uri::Shown;

/// A list method: the array of its result, the key naming an entry, and the
/// method that uses an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListKind {
    /// The list method, e.g. `tools/list`.
    pub method: &'static str,
    /// The array of its result, e.g. `tools`.
    pub array: &'static str,
    /// The member naming an entry, e.g. `name` (`uri` for resources).
    pub key: &'static str,
    /// The method that uses an entry, e.g. `tools/call`.
    pub use_method: &'static str,
}

/// Every list method.
pub const LIST_KINDS: [ListKind; 4] = [
    ListKind {
        method: "tools/list",
        array: "tools",
        key: "name",
        use_method: "tools/call",
    },
    ListKind {
        method: "prompts/list",
        array: "prompts",
        key: "name",
        use_method: "prompts/get",
    },
    ListKind {
        method: "resources/list",
        array: "resources",
        key: "uri",
        use_method: "resources/read",
    },
    ListKind {
        method: "resources/templates/list",
        array: "resourceTemplates",
        key: "uriTemplate",
        use_method: "resources/read",
    },
];

impl ListKind {
    /// The list method `method`, if it is one.
    pub fn of(method: &str) -> Option<Self> {
        LIST_KINDS.into_iter().find(|k| k.method == method)
    }

    /// The list method `method`, or why it is not one (safe to show the caller).
    pub fn named(method: &str) -> Result<Self, String> {
        Self::of(method).ok_or_else(|| format!("`{}` is not a list method", Shown(method)))
    }

    /// The call that uses the entry `name` of this list, validated like any MCP
    /// message: `tools/call` of the tool, `resources/read` of the URI or URI
    /// template, ... with no arguments. `None` for an entry no request can use (a
    /// URI without a normal form, say): nobody may use it.
    pub fn use_call(self, name: &str) -> Option<McpCall> {
        use_call(self.use_method, name).ok()
    }
}

/// The call that uses a list entry, validated like any MCP message.
fn use_call(method: &str, name: &str) -> Result<McpCall, String> {
    if method == "resources/read" && name.contains(['{', '}']) {
        // A URI template of `resources/templates/list`: decided as the template.
        return McpCall::on_template(method, name).map_err(|e| e.to_string());
    }
    let body = request_message(method, name, None);
    let message = parse_body(body.to_string().as_bytes()).map_err(|e| e.to_string())?;
    // One message in, one call out.
    message
        .calls
        .into_iter()
        .next()
        .ok_or_else(|| "no message".to_owned())
}

/// A list result read by [`read_list_result`].
#[derive(Debug)]
pub struct ListResult {
    /// The JSON as sent.
    json: Value,
    /// Whether it is a whole JSON-RPC response (the list is in `result`).
    in_response: bool,
    /// The name of each entry, in order.
    names: Vec<String>,
}

impl ListResult {
    /// The name of each entry, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The JSON with the entries not `allowed` removed.
    pub fn filtered(mut self, kind: ListKind, allowed: &[bool]) -> Vec<u8> {
        let holder = if self.in_response {
            self.json.get_mut("result")
        } else {
            Some(&mut self.json)
        };
        if let Some(entries) = holder
            .and_then(|h| h.get_mut(kind.array))
            .and_then(Value::as_array_mut)
        {
            let mut index = 0;
            entries.retain(|_| {
                let keep = allowed.get(index).copied().unwrap_or(false);
                index += 1;
                keep
            });
        }
        serde_json::to_vec(&self.json).unwrap_or_default()
    }
}

/// The members of a JSON-RPC response carrying a list result.
const RESPONSE_MEMBERS: [&str; 3] = ["jsonrpc", "id", "result"];
/// Names a list result may not use for any member but its own array, in any
/// case: another list, or a piece of a JSON-RPC envelope.
const DECOY_MEMBERS: [&str; 8] = [
    "tools",
    "prompts",
    "resources",
    "resourceTemplates",
    "result",
    "error",
    "jsonrpc",
    "id",
];

/// Read a list result strictly: the `result` object of `kind`'s method, or a
/// whole JSON-RPC success response carrying it. Refused:
///
/// - what is not JSON the way the MCP paths read it (duplicate keys, keys of one
///   object that differ only in case, nesting deeper than 64 levels);
/// - a response that is not exactly `jsonrpc` `"2.0"`, an `id` (a string or an
///   integer) and a `result` object: an `error` response, `result` beside `error`,
///   a `tools` array beside `result`;
/// - a result with a member named like another list or a piece of the envelope
///   (`prompts` in a `tools/list` result, `result.result`, `Tools`), in any case,
///   so that no second list rides along unfiltered; a `nextCursor` that is not a
///   string, a `_meta` that is not an object (other members, such as `resultType`
///   or `cacheScope`, are kept as they are);
/// - a list that is not an array of objects each with a string name (`name`, or
///   `uri` / `uriTemplate` for resources and resource templates).
pub fn read_list_result(bytes: &[u8], kind: ListKind) -> Result<ListResult, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the list result is not UTF-8".to_owned())?;
    let json = parse(text, MAX_DEPTH).map_err(|fault| match fault {
        JsonFault::Syntax(m) => format!("the list result is not JSON: {m}"),
        JsonFault::TooDeep => format!(
            "the list result nests arrays and objects deeper than {} levels",
            MAX_DEPTH
        ),
        JsonFault::DuplicateKey(k) => {
            format!(
                "the list result has the key `{}` twice in one object",
                Shown(&k)
            )
        }
        JsonFault::CaseVariantKeys(a, b) => format!(
            "the list result has the keys `{}` and `{}`, which differ only in case",
            Shown(&a),
            Shown(&b)
        ),
    })?;
    let Value::Object(top) = &json else {
        return Err("the list result is not a JSON object".into());
    };
    let in_response = ["jsonrpc", "id", "result", "error"]
        .iter()
        .any(|k| top.keys().any(|key| fold(key) == *k));
    let result = if in_response {
        if top.contains_key("error") {
            return Err("the list response is an error: it has no list to filter".into());
        }
        if let Some(k) = top.keys().find(|k| !RESPONSE_MEMBERS.contains(&k.as_str())) {
            return Err(format!(
                "the list response has the unexpected member `{}`",
                Shown(k)
            ));
        }
        if top.get("jsonrpc") != Some(&json!("2.0")) {
            return Err("the list response's `jsonrpc` is not `\"2.0\"`".into());
        }
        match top.get("id") {
            Some(Value::String(_)) => {}
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => {}
            _ => return Err("the list response's `id` is not a string or an integer".into()),
        }
        match top.get("result") {
            Some(Value::Object(r)) => r,
            _ => return Err("the list response's `result` is not an object".into()),
        }
    } else {
        top
    };
    for (k, v) in result {
        if k == kind.array {
            continue;
        }
        if DECOY_MEMBERS.iter().any(|d| fold(d) == fold(k)) {
            return Err(format!(
                "the `{}` result has the member `{}` beside `{}`: a list result holds one list",
                kind.method,
                Shown(k),
                kind.array,
            ));
        }
        let fits = match k.as_str() {
            "nextCursor" => v.is_string(),
            "_meta" => v.is_object(),
            _ => true,
        };
        if !fits {
            return Err(format!(
                "the `{}` result's `{k}` is not a {}",
                kind.method,
                if k == "_meta" {
                    "JSON object"
                } else {
                    "string"
                }
            ));
        }
    }
    let entries = match result.get(kind.array) {
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            return Err(format!(
                "the list result's `{}` is not an array",
                kind.array
            ));
        }
        None => return Err(format!("the list result has no `{}` array", kind.array)),
    };
    let mut names = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(entry) = entry else {
            return Err(format!("entry {i} of `{}` is not an object", kind.array));
        };
        match entry.get(kind.key) {
            Some(Value::String(name)) => names.push(name.clone()),
            Some(_) => {
                return Err(format!(
                    "entry {i} of `{}`: `{}` is not a string",
                    kind.array, kind.key
                ));
            }
            None => {
                return Err(format!(
                    "entry {i} of `{}` has no `{}`",
                    kind.array, kind.key
                ));
            }
        }
    }
    Ok(ListResult {
        json,
        in_response,
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> ListKind {
        ListKind::of("tools/list").expect("a list method")
    }

    fn read(kind: ListKind, text: &str) -> Result<Vec<String>, String> {
        read_list_result(text.as_bytes(), kind).map(|r| r.names)
    }

    #[test]
    fn plain_results_and_responses_are_read() {
        let ok = r#"{"tools":[{"name":"a","description":"x"},{"name":"b"}],"nextCursor":"c","_meta":{"k":1},"resultType":"complete","cacheScope":"private"}"#;
        assert_eq!(read(tools(), ok), Ok(vec!["a".into(), "b".into()]));
        let response = format!(r#"{{"jsonrpc":"2.0","id":7,"result":{ok}}}"#);
        assert_eq!(read(tools(), &response), Ok(vec!["a".into(), "b".into()]));
        let response = format!(r#"{{"jsonrpc":"2.0","id":"x","result":{ok}}}"#);
        assert!(read(tools(), &response).is_ok());
        assert_eq!(read(tools(), r#"{"tools":[]}"#), Ok(vec![]));
    }

    #[test]
    fn ambiguous_shapes_are_refused() {
        let entry = r#"{"name":"delete_document"}"#;
        for (text, expected) in [
            // A decoy beside the real list, either way round.
            (
                format!(r#"{{"tools":[],"result":{{"tools":[{entry}]}}}}"#),
                "unexpected member `tools`",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"tools":[],"result":{{"tools":[{entry}]}}}}"#),
                "unexpected member `tools`",
            ),
            // Both a result and an error.
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{entry}]}},"error":{{"code":1}}}}"#
                ),
                "is an error",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#.into(),
                "is an error",
            ),
            // Nested result.result.
            (
                format!(
                    r#"{{"jsonrpc":"2.0","id":1,"result":{{"result":{{"tools":[{entry}]}}}}}}"#
                ),
                "the member `result` beside",
            ),
            (
                format!(r#"{{"result":{{"tools":[{entry}]}}}}"#),
                "`jsonrpc` is not",
            ),
            // Duplicate and case-variant keys.
            (format!(r#"{{"tools":[],"tools":[{entry}]}}"#), "twice"),
            (
                format!(r#"{{"tools":[],"Tools":[{entry}]}}"#),
                "differ only in case",
            ),
            (
                r#"{"tools":[{"name":"get_document","NAME":"delete_document"}]}"#.into(),
                "differ only in case",
            ),
            (
                r#"{"tools":[{"name":"get_document","name":"delete_document"}]}"#.into(),
                "twice",
            ),
            // Another list in this one.
            (
                format!(r#"{{"tools":[],"prompts":[{entry}]}}"#),
                "the member `prompts` beside",
            ),
            (
                format!(r#"{{"tools":[],"RESULT":{{"tools":[{entry}]}}}}"#),
                "unexpected member `tools`",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"Result":{{"tools":[{entry}]}}}}"#),
                "unexpected member `Result`",
            ),
            (
                r#"{"tools":[],"resourceTemplates":[{"uriTemplate":"x"}]}"#.into(),
                "the member `resourceTemplates` beside",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"error":{"code":1}}}"#.into(),
                "the member `error` beside",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"TOOLS":[{entry}]}}}}"#),
                "the member `TOOLS` beside",
            ),
            // Entries of the wrong kind, without a name, with a name that is not a string.
            (r#"{"tools":["delete_document"]}"#.into(), "not an object"),
            (r#"{"tools":[[{"name":"x"}]]}"#.into(), "not an object"),
            (r#"{"tools":[{"title":"x"}]}"#.into(), "has no `name`"),
            (r#"{"tools":[{"Name":"x"}]}"#.into(), "has no `name`"),
            (r#"{"tools":[{"name":5}]}"#.into(), "is not a string"),
            (r#"{"tools":[{"name":null}]}"#.into(), "is not a string"),
            (r#"{"tools":[{"name":["x"]}]}"#.into(), "is not a string"),
            // Not a list at all.
            (r#"{"tools":{"name":"x"}}"#.into(), "is not an array"),
            (r#"{"nextCursor":"x"}"#.into(), "has no `tools` array"),
            (r#"{"tools":[],"nextCursor":5}"#.into(), "is not a string"),
            (r#"[{"name":"x"}]"#.into(), "not a JSON object"),
            ("{not json".into(), "not JSON"),
            (
                format!(r#"{{"jsonrpc":"2.0","id":null,"result":{{"tools":[{entry}]}}}}"#),
                "`id`",
            ),
            (
                format!(r#"{{"jsonrpc":"2.0","id":1,"result":[{entry}]}}"#),
                "`result` is not an object",
            ),
        ] {
            let err = read(tools(), &text).expect_err(&text);
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert!(read_list_result(b"{\"tools\":[\xff]}", tools()).is_err());
    }

    #[test]
    fn every_list_kind_reads_its_own_array_and_key() {
        for (method, ok, decoy) in [
            (
                "prompts/list",
                r#"{"prompts":[{"name":"summarize"}]}"#,
                r#"{"prompts":[],"tools":[{"name":"x"}]}"#,
            ),
            (
                "resources/list",
                r#"{"resources":[{"uri":"docs://a","name":"A"}]}"#,
                r#"{"resources":[{"name":"docs://a"}]}"#,
            ),
            (
                "resources/templates/list",
                r#"{"resourceTemplates":[{"uriTemplate":"docs://{id}","name":"doc"}]}"#,
                r#"{"resourceTemplates":[{"uri":"docs://{id}"}]}"#,
            ),
        ] {
            let kind = ListKind::of(method).expect(method);
            assert_eq!(read(kind, ok).map(|n| n.len()), Ok(1), "{method}");
            assert!(read(kind, decoy).is_err(), "{method}: {decoy}");
        }
    }

    #[test]
    fn filtering_keeps_everything_but_the_hidden_entries() {
        let text = r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a","x":[1,{"y":null}]},{"name":"b"},{"name":"c"}],"nextCursor":"n"}}"#;
        let result = read_list_result(text.as_bytes(), tools()).expect("valid");
        let out = result.filtered(tools(), &[true, false, true]);
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(
            out,
            json!({"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"a","x":[1,{"y":null}]},{"name":"c"}],"nextCursor":"n"}})
        );
    }
}
