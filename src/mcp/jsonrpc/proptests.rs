//! Property tests: the parser never panics, on any bytes or any JSON, and maps
//! well-formed calls faithfully. Case counts stay modest so `cargo test` stays fast.

use base64::Engine as _;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::mcp::json;

const CASES: u32 = 512;

/// Keys drawn from the members the mapping reads, their case variants, and
/// others, so that objects often have near-misses and case-variant keys.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "jsonrpc", "id", "method", "params", "result", "error", "name", "uri",
            "arguments", "ref", "type", "argument", "context", "_meta", "cursor",
        ])
        .prop_map(str::to_owned),
        1 => prop::sample::select(vec!["Name", "NAME", "Method", "argument\u{17f}", "ID", "Uri"])
            .prop_map(str::to_owned),
        2 => "[a-zA-Z_]{0,6}",
        1 => any::<String>(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            "2.0",
            "tools/call",
            "resources/read",
            "prompts/get",
            "completion/complete",
            "tools/list",
            "ref/prompt",
            "ref/resource",
            "jsonrpc/response",
            "",
        ])
        .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kvs| Value::Object(kvs.into_iter().collect())),
        ]
    })
}

/// Something shaped like a JSON-RPC message: an object of envelope members with
/// arbitrary values, `params` usually an object of param members.
fn message() -> impl Strategy<Value = Value> {
    let params = prop::collection::vec((key(), value()), 0..5)
        .prop_map(|kvs| Value::Object(kvs.into_iter().collect()));
    (
        prop::collection::vec((key(), value()), 0..4),
        prop::option::of(leaf()),
        prop::option::of(leaf()),
        prop::option::of(prop_oneof![params, value()]),
    )
        .prop_map(|(extra, method, id, params)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            m.insert("jsonrpc".into(), "2.0".into());
            if let Some(v) = method {
                m.insert("method".into(), v);
            }
            if let Some(v) = id {
                m.insert("id".into(), v);
            }
            if let Some(v) = params {
                m.insert("params".into(), v);
            }
            Value::Object(m)
        })
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn has_case_variant_keys(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(has_case_variant_keys),
        Value::Object(o) => {
            let mut seen = std::collections::HashSet::new();
            o.keys().any(|k| !seen.insert(json::fold(k).into_owned()))
                || o.values().any(has_case_variant_keys)
        }
        _ => false,
    }
}

/// What a successful parse promises, whatever the input.
fn invariants(msg: &McpMessage) {
    assert!(!msg.calls.is_empty());
    assert!(msg.calls.len() <= MAX_BATCH);
    assert_eq!(msg.single().is_some(), !msg.batch);
    for call in &msg.calls {
        assert!(!call.method.is_empty() && call.method.len() <= MAX_METHOD_BYTES);
        assert_eq!(
            call.kind == MessageKind::Response,
            call.method == RESPONSE_ACTION
        );
        if let Some(name) = call.subject.name() {
            assert!(!name.is_empty() && !name.chars().any(char::is_control));
            assert!(name.len() <= MAX_URI_BYTES);
        }
        match &call.subject {
            Subject::Tool(_) => assert_eq!(call.method, "tools/call"),
            Subject::Prompt(_) => {
                assert!(call.method == "prompts/get" || call.method == "completion/complete");
            }
            Subject::Resource(_) => {
                assert!(
                    call.method.starts_with("resources/") || call.method == "completion/complete"
                );
            }
            Subject::Server => assert!(!matches!(
                call.method.as_str(),
                "tools/call" | "prompts/get" | "completion/complete" | "resources/read"
            )),
        }
        if let Some(id) = &call.id {
            assert!(id.is_string() || id.is_i64() || id.is_u64());
        }
        match call.kind {
            MessageKind::Request => assert!(call.id.is_some()),
            MessageKind::Notification => assert!(call.id.is_none()),
            MessageKind::Response => {}
        }
        // The entities can always be built.
        let (resource, server) = call.resource("docs");
        assert_eq!(server.to_string(), r#"Mcp::Server::"docs""#);
        assert!(!resource.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        match parse_body(&body) {
            Ok(msg) => invariants(&msg),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!([PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS].contains(&e.code()));
            }
        }
    }

    #[test]
    fn arbitrary_json_never_panics_and_parses_like_serde_json(v in value()) {
        let text = v.to_string();
        let parsed = json::parse(&text, MAX_DEPTH);
        if depth(&v) > MAX_DEPTH {
            prop_assert_eq!(parsed, Err(json::JsonFault::TooDeep));
        } else if has_case_variant_keys(&v) {
            prop_assert!(matches!(parsed, Err(json::JsonFault::CaseVariantKeys(..))));
        } else {
            // serde_json's own reading (floats may differ from `v` in the last
            // digit: serde_json parses them fast, not round-trip exact).
            let reference: Value = serde_json::from_str(&text).unwrap_or_default();
            prop_assert_eq!(parsed, Ok(reference));
        }
        match parse_body(text.as_bytes()) {
            Ok(msg) => invariants(&msg),
            Err(e) => prop_assert!(e.to_string().len() < 1024),
        }
        let batch = Value::Array(vec![v]).to_string();
        if let Ok(msg) = parse_body(batch.as_bytes()) {
            invariants(&msg);
            prop_assert!(msg.batch);
        }
    }

    #[test]
    fn message_shaped_json_never_panics(m in message(), headers in prop::option::of(any::<String>())) {
        let text = m.to_string();
        if let Ok(msg) = parse_body(text.as_bytes()) {
            invariants(&msg);
            let h = McpHeaders { method: headers.as_deref(), name: headers.as_deref() };
            let _ = check_headers(&msg, &h);
            let call = &msg.calls[0];
            let own = McpHeaders {
                method: (call.kind != MessageKind::Response).then_some(call.method.as_str()),
                name: None,
            };
            if call.method.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                prop_assert_eq!(check_headers(&msg, &own), Ok(()));
            }
        }
    }

    #[test]
    fn mutated_messages_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    ) {
        let mut body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"id":"q1","n":[1,2,{"a":null}]}}}"#.to_vec();
        for (at, byte, op) in edits {
            let i = at.index(body.len() + 1);
            match op {
                0 => body.insert(i, byte),
                1 if i < body.len() => { body.remove(i); }
                _ if i < body.len() => body[i] = byte,
                _ => {}
            }
        }
        if let Ok(msg) = parse_body(&body) {
            invariants(&msg);
        }
    }

    #[test]
    fn well_formed_calls_map_faithfully(
        name in "[^\\p{Cc}]{1,40}",
        args in prop::collection::vec(("[a-z]{1,5}", leaf()), 0..5),
        id in prop_oneof![any::<i64>().prop_map(Value::from), "[ -~]{0,10}".prop_map(Value::from)],
        method in prop::sample::select(vec!["tools/call", "prompts/get"]),
    ) {
        let arguments: Map<String, Value> = args.into_iter().collect();
        let body = json!({
            "jsonrpc": "2.0", "id": id.clone(), "method": method,
            "params": {"name": name.clone(), "arguments": arguments.clone()},
        });
        let msg = parse_body(body.to_string().as_bytes());
        prop_assert!(msg.is_ok(), "{:?}", msg);
        let msg = msg.unwrap_or_else(|_| unreachable!());
        let call = &msg.calls[0];
        prop_assert_eq!(call.subject.name(), Some(name.as_str()));
        let expected: Value = serde_json::from_str(&Value::Object(arguments).to_string()).unwrap_or_default();
        prop_assert_eq!(&Value::Object(call.arguments.clone()), &expected);
        prop_assert_eq!(call.id.as_ref(), Some(&id));
        prop_assert_eq!(call.kind, MessageKind::Request);
        // A client's `Mcp-Name`, base64 or plain, agrees.
        let encoded = format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(&name));
        let h = McpHeaders { method: Some(method), name: Some(&encoded) };
        prop_assert_eq!(check_headers(&msg, &h), Ok(()));
        if name.bytes().all(|b| (b' '..=b'~').contains(&b)) && !name.starts_with("=?base64?") {
            let h = McpHeaders { method: Some(method), name: Some(&name) };
            prop_assert_eq!(check_headers(&msg, &h), Ok(()));
        }
        let qualified = call.resource("docs").0;
        prop_assert_eq!(qualified.id().unescaped(), format!("docs/{name}"));
    }
}
