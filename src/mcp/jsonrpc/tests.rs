use serde_json::json;

use super::*;

fn ok(body: &str) -> McpMessage {
    match parse_body(body.as_bytes()) {
        Ok(m) => m,
        Err(e) => panic!("{body}: {e}"),
    }
}

fn single(body: &str) -> McpCall {
    let msg = ok(body);
    assert!(!msg.batch, "{body}");
    assert_eq!(msg.calls.len(), 1, "{body}");
    msg.single().cloned().unwrap_or_else(|| panic!("{body}"))
}

fn err(body: &[u8]) -> McpError {
    match parse_body(body) {
        Ok(m) => panic!("{}: accepted as {m:?}", String::from_utf8_lossy(body)),
        Err(e) => e,
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn tool(n: &str) -> Subject {
    Subject::Tool(n.into())
}
fn prompt(n: &str) -> Subject {
    Subject::Prompt(n.into())
}
fn resource(n: &str) -> Subject {
    Subject::Resource(n.into())
}

/// The `_meta` a 2026-07-28 client puts in every request.
const META_2026: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientInfo":{"name":"ExampleClient","version":"1.0.0"},"io.modelcontextprotocol/clientCapabilities":{}}"#;

#[test]
fn requests_of_every_revision_map_to_method_subject_and_arguments() {
    let meta = META_2026;
    // (revision, body, method, subject, arguments)
    let cases: Vec<(&str, String, &str, Subject, Value)> = vec![
        // tools/call
        ("2025-03-26", r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"id":"titan-q1"}}}"#.into(),
            "tools/call", tool("get_document"), json!({"id":"titan-q1"})),
        ("2025-06-18", r#"{"jsonrpc":"2.0","id":"a-1","method":"tools/call","params":{"name":"search_documents","arguments":{"query":"titan","limit":5,"filters":{"tags":["q1"]}},"_meta":{"progressToken":"p1"}}}"#.into(),
            "tools/call", tool("search_documents"), json!({"query":"titan","limit":5,"filters":{"tags":["q1"]}})),
        ("2025-11-25 task-augmented", r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"summarize_document","arguments":{"id":"titan-q1"},"task":{"ttl":60000}}}"#.into(),
            "tools/call", tool("summarize_document"), json!({"id":"titan-q1"})),
        ("2026-07-28", format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"delete_document","arguments":{{"id":"x"}},{meta}}}}}"#),
            "tools/call", tool("delete_document"), json!({"id":"x"})),
        ("2026-07-28 MRTR retry", format!(r#"{{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{{"name":"get_document","arguments":{{"id":"x"}},"inputResponses":{{"e1":{{"action":"accept","content":{{"ok":true}}}}}},"requestState":"opaque",{meta}}}}}"#),
            "tools/call", tool("get_document"), json!({"id":"x"})),
        ("no arguments", r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"ping_tool"}}"#.into(),
            "tools/call", tool("ping_tool"), json!({})),
        ("null arguments", r#"{"jsonrpc":"2.0","id":6,"method":"tools/call","params":{"name":"ping_tool","arguments":null}}"#.into(),
            "tools/call", tool("ping_tool"), json!({})),
        ("non-ASCII name", r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t\u00f6\u00f6l","arguments":{}}}"#.into(),
            "tools/call", tool("tööl"), json!({})),
        // resources
        ("2025-03-26", r#"{"jsonrpc":"2.0","id":8,"method":"resources/read","params":{"uri":"docs://titan/q1-strategy"}}"#.into(),
            "resources/read", resource("docs://titan/q1-strategy"), json!({})),
        ("2026-07-28", format!(r#"{{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{{"uri":"file:///projects/myapp/config.json",{meta}}}}}"#),
            "resources/read", resource("file:///projects/myapp/config.json"), json!({})),
        ("2025-06-18", r#"{"jsonrpc":"2.0","id":10,"method":"resources/subscribe","params":{"uri":"docs://titan/q1-strategy"}}"#.into(),
            "resources/subscribe", resource("docs://titan/q1-strategy"), json!({})),
        ("2025-11-25", r#"{"jsonrpc":"2.0","id":11,"method":"resources/unsubscribe","params":{"uri":"docs://titan/q1-strategy"}}"#.into(),
            "resources/unsubscribe", resource("docs://titan/q1-strategy"), json!({})),
        // prompts
        ("2025-03-26", r#"{"jsonrpc":"2.0","id":12,"method":"prompts/get","params":{"name":"code_review","arguments":{"code":"def hello(): pass"}}}"#.into(),
            "prompts/get", prompt("code_review"), json!({"code":"def hello(): pass"})),
        ("2026-07-28", format!(r#"{{"jsonrpc":"2.0","id":13,"method":"prompts/get","params":{{"name":"summarize",{meta}}}}}"#),
            "prompts/get", prompt("summarize"), json!({})),
        // completion
        ("2025-03-26 prompt", r#"{"jsonrpc":"2.0","id":14,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"code_review"},"argument":{"name":"language","value":"py"}}}"#.into(),
            "completion/complete", prompt("code_review"), json!({"argument":{"name":"language","value":"py"}})),
        ("2025-06-18 resource with context", r#"{"jsonrpc":"2.0","id":15,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///{path}"},"argument":{"name":"path","value":"src/"},"context":{"arguments":{"repo":"titan"}}}}"#.into(),
            "completion/complete", resource("file:///{path}"), json!({"argument":{"name":"path","value":"src/"},"context":{"arguments":{"repo":"titan"}}})),
        ("2026-07-28", format!(r#"{{"jsonrpc":"2.0","id":16,"method":"completion/complete","params":{{"ref":{{"type":"ref/prompt","name":"code_review"}},"argument":{{"name":"language","value":"r"}},{meta}}}}}"#),
            "completion/complete", prompt("code_review"), json!({"argument":{"name":"language","value":"r"}})),
        // the server itself
        ("2025-03-26", r#"{"jsonrpc":"2.0","id":17,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{"roots":{"listChanged":true},"sampling":{}},"clientInfo":{"name":"CorpAssist","version":"1.0"}}}"#.into(),
            "initialize", Subject::Server, json!({})),
        ("any", r#"{"jsonrpc":"2.0","id":18,"method":"ping"}"#.into(), "ping", Subject::Server, json!({})),
        ("any", r#"{"jsonrpc":"2.0","id":19,"method":"tools/list"}"#.into(), "tools/list", Subject::Server, json!({})),
        ("any", r#"{"jsonrpc":"2.0","id":20,"method":"tools/list","params":{"cursor":"abc"}}"#.into(), "tools/list", Subject::Server, json!({})),
        ("any", r#"{"jsonrpc":"2.0","id":21,"method":"resources/list","params":{}}"#.into(), "resources/list", Subject::Server, json!({})),
        ("any", r#"{"jsonrpc":"2.0","id":22,"method":"resources/templates/list"}"#.into(), "resources/templates/list", Subject::Server, json!({})),
        ("any", r#"{"jsonrpc":"2.0","id":23,"method":"prompts/list"}"#.into(), "prompts/list", Subject::Server, json!({})),
        ("2025-03-26", r#"{"jsonrpc":"2.0","id":24,"method":"logging/setLevel","params":{"level":"info"}}"#.into(), "logging/setLevel", Subject::Server, json!({})),
        ("2025-11-25", r#"{"jsonrpc":"2.0","id":25,"method":"tasks/get","params":{"taskId":"t-1"}}"#.into(), "tasks/get", Subject::Server, json!({})),
        ("2025-11-25", r#"{"jsonrpc":"2.0","id":26,"method":"tasks/list","params":{"cursor":"c"}}"#.into(), "tasks/list", Subject::Server, json!({})),
        ("2025-11-25", r#"{"jsonrpc":"2.0","id":27,"method":"tasks/cancel","params":{"taskId":"t-1"}}"#.into(), "tasks/cancel", Subject::Server, json!({})),
        ("2025-11-25", r#"{"jsonrpc":"2.0","id":28,"method":"tasks/result","params":{"taskId":"t-1"}}"#.into(), "tasks/result", Subject::Server, json!({})),
        ("2026-07-28 tasks extension", r#"{"jsonrpc":"2.0","id":29,"method":"tasks/update","params":{"taskId":"t-1","inputResponses":{}}}"#.into(), "tasks/update", Subject::Server, json!({})),
        ("2026-07-28", format!(r#"{{"jsonrpc":"2.0","id":30,"method":"server/discover","params":{{{meta}}}}}"#), "server/discover", Subject::Server, json!({})),
        ("2026-07-28", format!(r#"{{"jsonrpc":"2.0","id":31,"method":"subscriptions/listen","params":{{"notifications":{{"toolsListChanged":true,"resourceSubscriptions":["docs://titan/q1-strategy"]}},{meta}}}}}"#),
            "subscriptions/listen", Subject::Server, json!({})),
        ("unknown method", r#"{"jsonrpc":"2.0","id":32,"method":"tools/frobnicate","params":{"name":"x"}}"#.into(), "tools/frobnicate", Subject::Server, json!({})),
    ];
    for (revision, body, method, subject, arguments) in cases {
        let call = single(&body);
        let what = format!("{revision} {method}");
        assert_eq!(call.method, method, "{what}");
        assert_eq!(call.subject, subject, "{what}");
        assert_eq!(Value::Object(call.arguments.clone()), arguments, "{what}");
        assert_eq!(call.kind, MessageKind::Request, "{what}");
        let id: Value = obj(serde_json::from_str(&body).unwrap_or_default())["id"].clone();
        assert_eq!(call.id, Some(id), "{what}");
    }
}

#[test]
fn notifications_have_no_id_and_act_on_the_server() {
    for method in [
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
        "notifications/elicitation/complete",
        "notifications/something_new",
    ] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","method":"{method}","params":{{"requestId":1,"progressToken":"p","progress":1}}}}"#
        );
        let call = single(&body);
        assert_eq!(call.method, method);
        assert_eq!(call.kind, MessageKind::Notification);
        assert_eq!(call.subject, Subject::Server);
        assert_eq!(call.id, None);
    }
    let call = single(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(call.kind, MessageKind::Notification);
    // A tools/call without id still names its tool.
    let call = single(
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_document","arguments":{"id":"x"}}}"#,
    );
    assert_eq!(call.kind, MessageKind::Notification);
    assert_eq!(call.subject, tool("delete_document"));
}

#[test]
fn responses_map_to_the_response_action_on_the_server() {
    let cases = [
        // sampling/createMessage
        (
            r#"{"jsonrpc":"2.0","id":1,"result":{"role":"assistant","content":{"type":"text","text":"hi"},"model":"m","stopReason":"endTurn"}}"#,
            Some(json!(1)),
        ),
        // elicitation/create
        (
            r#"{"jsonrpc":"2.0","id":"e-7","result":{"action":"accept","content":{"name":"x"}}}"#,
            Some(json!("e-7")),
        ),
        // roots/list
        (
            r#"{"jsonrpc":"2.0","id":3,"result":{"roots":[{"uri":"file:///home/u/p","name":"p"}]}}"#,
            Some(json!(3)),
        ),
        (
            r#"{"jsonrpc":"2.0","id":4,"error":{"code":-1,"message":"user rejected sampling request"}}"#,
            Some(json!(4)),
        ),
        (
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error","data":{}}}"#,
            None,
        ),
        (
            r#"{"jsonrpc":"2.0","error":{"code":-32600,"message":"invalid"}}"#,
            None,
        ),
    ];
    for (body, id) in cases {
        let call = single(body);
        assert_eq!(call.method, RESPONSE_ACTION, "{body}");
        assert_eq!(call.kind, MessageKind::Response, "{body}");
        assert_eq!(call.subject, Subject::Server, "{body}");
        assert!(call.arguments.is_empty(), "{body}");
        assert_eq!(call.id, id, "{body}");
        assert_eq!(
            call.action().to_string(),
            r#"Mcp::Action::"jsonrpc/response""#
        );
    }
}

#[test]
fn batches_map_every_message() {
    let msg = ok(r#"[
        {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"id":"a"}}},
        {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":2}},
        {"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"docs://a"}},
        {"jsonrpc":"2.0","id":9,"result":{"roots":[]}}
    ]"#);
    assert!(msg.batch);
    assert_eq!(msg.single(), None);
    let got: Vec<_> = msg
        .calls
        .iter()
        .map(|c| (c.method.as_str(), c.subject.clone(), c.kind))
        .collect();
    assert_eq!(
        got,
        vec![
            ("tools/call", tool("get_document"), MessageKind::Request),
            (
                "notifications/progress",
                Subject::Server,
                MessageKind::Notification
            ),
            ("resources/read", resource("docs://a"), MessageKind::Request),
            (RESPONSE_ACTION, Subject::Server, MessageKind::Response),
        ]
    );
    let one = ok(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
    assert!(one.batch);
    assert_eq!(one.calls.len(), 1);
    assert_eq!(one.single(), None, "a batch of one is still a batch");

    let full = format!(
        "[{}]",
        vec![r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#; MAX_BATCH].join(",")
    );
    assert_eq!(ok(&full).calls.len(), MAX_BATCH);
}

#[test]
fn bad_batches_are_refused_with_the_failing_message() {
    let e = err(b"[]");
    assert_eq!(e.reason(), &Reason::EmptyBatch);
    assert_eq!(e.code(), INVALID_REQUEST);

    let e = err(
        br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},[{"jsonrpc":"2.0","id":2,"method":"ping"}]]"#,
    );
    assert_eq!(e.reason(), &Reason::NestedBatch);
    assert_eq!(e.batch_index(), Some(1));
    assert_eq!(
        e.to_string(),
        "message 2 of the batch: a batch inside a batch"
    );

    let e = err(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 5]"#);
    assert_eq!(e.reason(), &Reason::NotAnObject);

    let e = err(
        br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{}}]"#,
    );
    assert_eq!(
        e.to_string(),
        "message 2 of the batch: `params.name` is missing"
    );
    assert_eq!(e.code(), INVALID_PARAMS);
    assert_eq!(e.id(), None, "a batch is answered with id null");
    assert_eq!(e.to_response()["id"], Value::Null);

    let over = format!(
        "[{}]",
        vec![r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#; MAX_BATCH + 1].join(",")
    );
    assert_eq!(err(over.as_bytes()).reason(), &Reason::BatchTooLarge);
}

#[test]
fn malformed_bodies_are_refused_with_a_reason() {
    let long_name = "n".repeat(64 * 1024);
    let long_uri = format!("docs://{}", "u".repeat(MAX_URI_BYTES));
    let deep_args = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"a":{}1{}}}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    // (body, code, message)
    let cases: Vec<(Vec<u8>, i64, String)> = vec![
        (b"".to_vec(), PARSE_ERROR, "the body is not JSON: EOF while parsing a value at line 1 column 0".into()),
        (b"<html>".to_vec(), PARSE_ERROR, "the body is not JSON: expected value at line 1 column 1".into()),
        (b"not json".to_vec(), PARSE_ERROR, "the body is not JSON: expected ident at line 1 column 2".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping""#.to_vec(), PARSE_ERROR, "the body is not JSON: EOF while parsing an object at line 1 column 39".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping"} {}"#.to_vec(), PARSE_ERROR, "the body is not JSON: trailing characters at line 1 column 42".into()),
        (b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffing\"}".to_vec(), PARSE_ERROR, "the body is not UTF-8".into()),
        (b"\xef\xbb\xbf{}".to_vec(), PARSE_ERROR, "the body is not JSON: expected value at line 1 column 1".into()),
        (b"5".to_vec(), INVALID_REQUEST, "a message is not a JSON object".into()),
        (b"\"tools/call\"".to_vec(), INVALID_REQUEST, "a message is not a JSON object".into()),
        (b"null".to_vec(), INVALID_REQUEST, "a message is not a JSON object".into()),
        (br#"{"id":1,"method":"ping"}"#.to_vec(), INVALID_REQUEST, "`jsonrpc` is missing".into()),
        (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#.to_vec(), INVALID_REQUEST, "`jsonrpc` is not `2.0`".into()),
        (br#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#.to_vec(), INVALID_REQUEST, "`jsonrpc` is not `2.0`".into()),
        (br#"{"jsonrpc":"2.0","id":1}"#.to_vec(), INVALID_REQUEST, "the message has no `method`".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":7}"#.to_vec(), INVALID_REQUEST, "`method` is not a string".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":null}"#.to_vec(), INVALID_REQUEST, "`method` is not a string".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":""}"#.to_vec(), INVALID_REQUEST, "`method` is empty".into()),
        (format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{}"}}"#, "m".repeat(MAX_METHOD_BYTES + 1)).into_bytes(), INVALID_REQUEST, format!("`method` is longer than {MAX_METHOD_BYTES} bytes")),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call\n"}"#.to_vec(), INVALID_REQUEST, "`method` contains a control character".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"jsonrpc/response"}"#.to_vec(), INVALID_REQUEST, "`method` `jsonrpc/response` is reserved for responses".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#.to_vec(), INVALID_REQUEST, "the message has both `method` and `result`".into()),
        (br#"{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}"#.to_vec(), INVALID_REQUEST, "the message has both `result` and `error`".into()),
        (br#"{"jsonrpc":"2.0","result":{}}"#.to_vec(), INVALID_REQUEST, "`id` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"result":[]}"#.to_vec(), INVALID_REQUEST, "`result` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"error":"boom"}"#.to_vec(), INVALID_REQUEST, "`error` is not an object with an integer `code` and a string `message`".into()),
        (br#"{"jsonrpc":"2.0","id":1,"error":{"code":"x","message":"m"}}"#.to_vec(), INVALID_REQUEST, "`error` is not an object with an integer `code` and a string `message`".into()),
        (br#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#.to_vec(), INVALID_REQUEST, "`id` is not a string or an integer".into()),
        (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#.to_vec(), INVALID_REQUEST, "`id` is not a string or an integer".into()),
        (br#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#.to_vec(), INVALID_REQUEST, "`id` is not a string or an integer".into()),
        (br#"{"jsonrpc":"2.0","id":null,"result":{}}"#.to_vec(), INVALID_REQUEST, "`id` is not a string or an integer".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":[1,2]}"#.to_vec(), INVALID_PARAMS, "`params` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":null}"#.to_vec(), INVALID_PARAMS, "`params` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#.to_vec(), INVALID_PARAMS, "`params` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"get_document"}"#.to_vec(), INVALID_PARAMS, "`params` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#.to_vec(), INVALID_PARAMS, "`params.name` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["a"]}}"#.to_vec(), INVALID_PARAMS, "`params.name` is not a string".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":""}}"#.to_vec(), INVALID_PARAMS, "`params.name` is empty".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_document\u0000"}}"#.to_vec(), INVALID_PARAMS, "`params.name` contains a control character".into()),
        (format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{long_name}"}}}}"#).into_bytes(), INVALID_PARAMS, format!("`params.name` is longer than {MAX_NAME_BYTES} bytes")),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":[1]}}"#.to_vec(), INVALID_PARAMS, "`params.arguments` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":"{}"}}"#.to_vec(), INVALID_PARAMS, "`params.arguments` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":7}}"#.to_vec(), INVALID_PARAMS, "`params.name` is not a string".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p","arguments":5}}"#.to_vec(), INVALID_PARAMS, "`params.arguments` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"docs://a"}}"#.to_vec(), INVALID_PARAMS, "`params.uri` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":""}}"#.to_vec(), INVALID_PARAMS, "`params.uri` is empty".into()),
        (format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{long_uri}"}}}}"#).into_bytes(), INVALID_PARAMS, format!("`params.uri` is longer than {MAX_URI_BYTES} bytes")),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"argument":{"name":"a","value":"b"}}}"#.to_vec(), INVALID_PARAMS, "`params.ref` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/tool","name":"t"},"argument":{}}}"#.to_vec(), INVALID_PARAMS, "`params.ref.type` is `ref/tool`, not `ref/prompt` or `ref/resource`".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","uri":"x"},"argument":{}}}"#.to_vec(), INVALID_PARAMS, "`params.ref.name` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","name":"x"},"argument":{}}}"#.to_vec(), INVALID_PARAMS, "`params.ref.uri` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"}}}"#.to_vec(), INVALID_PARAMS, "`params.argument` is missing".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":"x"}}"#.to_vec(), INVALID_PARAMS, "`params.argument` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{},"context":[]}}"#.to_vec(), INVALID_PARAMS, "`params.context` is not an object".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":"ref/prompt","argument":{}}}"#.to_vec(), INVALID_PARAMS, "`params.ref` is not an object".into()),
        (deep_args.into_bytes(), INVALID_REQUEST, format!("the body nests arrays and objects deeper than {MAX_DEPTH} levels")),
        (format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(), INVALID_REQUEST, format!("the body nests arrays and objects deeper than {MAX_DEPTH} levels")),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_documents","name":"delete_document"}}"#.to_vec(), INVALID_REQUEST, "an object has the key `name` twice".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call","params":{"name":"delete_document"}}"#.to_vec(), INVALID_REQUEST, "an object has the key `method` twice".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"path":"/public","path":"/secret"}}}"#.to_vec(), INVALID_REQUEST, "an object has the key `path` twice".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_documents","NAME":"delete_document"}}"#.to_vec(), INVALID_REQUEST, "an object has the keys `name` and `NAME`, which differ only in case".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"path":"/public","Path":"/secret"}}}"#.to_vec(), INVALID_REQUEST, "an object has the keys `path` and `Path`, which differ only in case".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","Arguments":{"path":"/secret"}}}"#.to_vec(), INVALID_PARAMS, "`Arguments` is not `params.arguments`: member names are case-sensitive".into()),
        ("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"t\",\"argument\u{17f}\":{}}}".as_bytes().to_vec(), INVALID_PARAMS, "`argument\u{17f}` is not `params.arguments`: member names are case-sensitive".into()),
        (br#"{"jsonrpc":"2.0","id":1,"Method":"tools/call","params":{"name":"t"}}"#.to_vec(), INVALID_REQUEST, "`Method` is not `method`: member names are case-sensitive".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p","Name":"q"},"argument":{}}}"#.to_vec(), INVALID_REQUEST, "an object has the keys `name` and `Name`, which differ only in case".into()),
        (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"Type":"ref/prompt","name":"p"},"argument":{}}}"#.to_vec(), INVALID_PARAMS, "`Type` is not `params.ref.type`: member names are case-sensitive".into()),
    ];
    for (body, code, message) in cases {
        let e = err(&body);
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        assert_eq!(e.to_string(), message, "{shown}");
        assert_eq!(e.code(), code, "{shown}");
    }
}

#[test]
fn errors_carry_the_id_but_never_the_whole_input() {
    let e = err(br#"{"jsonrpc":"2.0","id":"req-9","method":"tools/call","params":{"name":""}}"#);
    assert_eq!(e.id(), Some(&json!("req-9")));
    assert_eq!(
        e.to_response(),
        json!({"jsonrpc":"2.0","id":"req-9","error":{"code":-32602,"message":"`params.name` is empty"}})
    );
    // No id could be read.
    assert_eq!(err(b"{").id(), None);
    assert_eq!(err(b"{").to_response()["id"], Value::Null);

    // A long unknown ref type, a huge duplicate key: shown truncated.
    let long = "x".repeat(MAX_METHOD_BYTES);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{{"ref":{{"type":"{long}"}},"argument":{{}}}}}}"#
    );
    let message = err(body.as_bytes()).to_string();
    assert!(message.len() < 200, "{message}");
    assert!(message.contains(&format!("`{}…`", "x".repeat(SHOWN_CHARS))));
    let huge = "x".repeat(100_000);
    let body = format!(r#"{{"{huge}":1,"{huge}":2}}"#);
    assert!(err(body.as_bytes()).to_string().len() < 200);
    // Control characters and backticks are escaped.
    let body = r#"{"a":1,"A\n`":2,"a\n`":3}"#;
    let e = err(body.as_bytes());
    assert_eq!(
        e.to_string(),
        "an object has the keys `A\\u{a}\\u{60}` and `a\\u{a}\\u{60}`, which differ only in case"
    );
}

#[test]
fn a_body_over_the_limit_is_refused_before_parsing() {
    let mut body =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"x":""#
            .to_vec();
    body.resize(MAX_BODY_BYTES, b'a');
    body.extend_from_slice(br#""}}}"#);
    let e = err(&body);
    assert_eq!(e.reason(), &Reason::TooLarge);
    assert_eq!(e.code(), INVALID_REQUEST);
    assert_eq!(e.to_string(), "the body is larger than 4194304 bytes");
}

#[test]
fn calls_name_qualified_cedar_entities() {
    let call = single(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","arguments":{"id":"q1"}}}"#,
    );
    let (res, server) = call.resource("docs");
    assert_eq!(res.to_string(), r#"Mcp::Tool::"docs/get_document""#);
    assert_eq!(server.to_string(), r#"Mcp::Server::"docs""#);
    assert_eq!(call.action().to_string(), r#"Mcp::Action::"tools/call""#);

    let req = call.decision_request("docs");
    assert_eq!(req.action, call.action());
    assert_eq!(req.resource, res);
    assert_eq!(req.server, Some(server.clone()));
    assert_eq!(req.context.get("arguments"), Some(&json!({"id":"q1"})));
    assert_eq!(req.user, None);

    let read = single(
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"docs://titan/q1"}}"#,
    );
    assert_eq!(
        read.resource("docs").0.to_string(),
        r#"Mcp::Resource::"docs/docs://titan/q1""#
    );
    let get = single(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#);
    assert_eq!(
        get.resource("docs").0.to_string(),
        r#"Mcp::Prompt::"docs/p""#
    );
    let list = single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(list.resource("docs"), (server.clone(), server.clone()));
    // A name with quotes and backslashes is still one entity id.
    let odd =
        single(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\"b\\c"}}"#);
    assert_eq!(odd.resource("docs").0.id().unescaped(), "docs/a\"b\\c");
}

fn headers<'a>(method: Option<&'a str>, name: Option<&'a str>) -> McpHeaders<'a> {
    McpHeaders { method, name }
}

#[test]
fn headers_must_agree_with_the_body() {
    let call_tool = ok(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_weather","arguments":{}}}"#,
    );
    let read = ok(
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///projects/myapp/config.json"}}"#,
    );
    let get = ok(r#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"tööl"}}"#);
    let list = ok(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#);
    let note = ok(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let complete = ok(
        r#"{"jsonrpc":"2.0","id":5,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"a","value":"b"}}}"#,
    );
    let answer = ok(r#"{"jsonrpc":"2.0","id":6,"result":{}}"#);
    let batch = ok(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#);

    let agree = [
        (&call_tool, headers(None, None)),
        (&call_tool, headers(Some("tools/call"), None)),
        (&call_tool, headers(Some("tools/call"), Some("get_weather"))),
        (&call_tool, headers(None, Some("get_weather"))),
        (
            &call_tool,
            headers(Some("tools/call"), Some("=?base64?Z2V0X3dlYXRoZXI=?=")),
        ),
        (
            &read,
            headers(
                Some("resources/read"),
                Some("file:///projects/myapp/config.json"),
            ),
        ),
        (
            &get,
            headers(Some("prompts/get"), Some("=?base64?dMO2w7Zs?=")),
        ),
        (&list, headers(Some("tools/list"), None)),
        (&note, headers(Some("notifications/initialized"), None)),
        (&complete, headers(Some("completion/complete"), None)),
        (&answer, headers(None, None)),
        (&batch, headers(None, None)),
    ];
    for (msg, h) in agree {
        assert_eq!(check_headers(msg, &h), Ok(()), "{h:?}");
    }

    let disagree = [
        (
            &call_tool,
            headers(Some("tools/list"), None),
            "`Mcp-Method` is `tools/list` but the body has `tools/call`",
        ),
        (
            &call_tool,
            headers(Some("Tools/Call"), None),
            "`Mcp-Method` is `Tools/Call` but the body has `tools/call`",
        ),
        (
            &call_tool,
            headers(Some("tools/call"), Some("search_documents")),
            "`Mcp-Name` is `search_documents` but the body has `get_weather`",
        ),
        (
            &call_tool,
            headers(Some("tools/call"), Some("=?base64?c2VhcmNo?=")),
            "`Mcp-Name` is `search` but the body has `get_weather`",
        ),
        (
            &call_tool,
            headers(Some("tools/call"), Some("=?BASE64?Z2V0X3dlYXRoZXI=?=")),
            "`Mcp-Name` is `=?BASE64?Z2V0X3dlYXRoZXI=?=` but the body has `get_weather`",
        ),
        (
            &call_tool,
            headers(None, Some("=?base64?Z2V0X3dlYXRoZXI?=")),
            "`Mcp-Name` is malformed: bad base64",
        ),
        (
            &call_tool,
            headers(None, Some("=?base64?/w==?=")),
            "`Mcp-Name` is malformed: base64 of text that is not UTF-8",
        ),
        (
            &get,
            headers(None, Some("tööl")),
            "`Mcp-Name` is malformed: only visible ASCII, space and tab are allowed",
        ),
        (
            &call_tool,
            headers(Some("tools/call\r\n"), None),
            "`Mcp-Method` is malformed: only visible ASCII, space and tab are allowed",
        ),
        (
            &list,
            headers(Some("tools/list"), Some("get_weather")),
            "`Mcp-Name` is `get_weather` but the body has none",
        ),
        (
            &complete,
            headers(None, Some("p")),
            "`Mcp-Name` is `p` but the body has none",
        ),
        (
            &answer,
            headers(Some("sampling/createMessage"), None),
            "`Mcp-Method` is `sampling/createMessage` but the body has none",
        ),
        (
            &batch,
            headers(Some("tools/list"), None),
            "`Mcp-Method` comes with a batch body",
        ),
        (
            &batch,
            headers(None, Some("x")),
            "`Mcp-Name` comes with a batch body",
        ),
    ];
    for (msg, h, message) in disagree {
        let e = match check_headers(msg, &h) {
            Ok(()) => panic!("{h:?} accepted"),
            Err(e) => e,
        };
        assert_eq!(e.to_string(), message, "{h:?}");
        assert_eq!(e.code(), HEADER_MISMATCH, "{h:?}");
    }
    let e = check_headers(&call_tool, &headers(Some("tools/list"), None));
    assert_eq!(e.map_err(|e| e.id().cloned()), Err(Some(json!(1))));
}

#[test]
fn headers_are_picked_case_insensitively_and_once() {
    let h = McpHeaders::from_pairs([
        ("content-type", "application/json"),
        ("mcp-method", "tools/call"),
        ("MCP-NAME", "get_weather"),
        ("mcp-protocol-version", "2026-07-28"),
    ]);
    assert_eq!(h, Ok(headers(Some("tools/call"), Some("get_weather"))));
    assert_eq!(McpHeaders::from_pairs([]), Ok(McpHeaders::default()));
    let twice = McpHeaders::from_pairs([("Mcp-Method", "tools/call"), ("mcp-method", "ping")]);
    assert_eq!(
        twice.map_err(|e| e.to_string()),
        Err("`Mcp-Method` is given more than once".into())
    );
}

/// Requests the real Python SDK client (`mcp` 2.3.0) sent to a real `MCPServer`,
/// in 2026-07-28 and in legacy (2025-11-25) mode; see `tests/fixtures/mcp/capture.py`.
#[test]
fn real_client_requests_map_and_agree_with_their_headers() {
    let captured: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/mcp/client_requests.json"
    ))
    .unwrap_or_default();
    let captured = captured.as_array().cloned().unwrap_or_default();
    assert!(captured.len() >= 20);
    let mut named = 0;
    for exchange in &captured {
        let body = exchange["body"].as_str().unwrap_or_default();
        let sent: Value = serde_json::from_str(body).unwrap_or_default();
        let pairs: Vec<(&str, &str)> = exchange["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        let headers = McpHeaders::from_pairs(pairs).unwrap_or_else(|e| panic!("{body}: {e}"));
        let call = single(body);
        assert_eq!(check_headers(&ok(body), &headers), Ok(()), "{body}");
        assert_eq!(Some(call.method.as_str()), sent["method"].as_str());
        assert_eq!(call.id.as_ref(), sent.get("id"));
        if let Some(name) = headers.name {
            named += 1;
            assert_eq!(call.header_name(), Some(name));
        }
        let expected = match call.method.as_str() {
            "tools/call" => tool(sent["params"]["name"].as_str().unwrap_or_default()),
            "prompts/get" => prompt(sent["params"]["name"].as_str().unwrap_or_default()),
            "resources/read" => resource(sent["params"]["uri"].as_str().unwrap_or_default()),
            "completion/complete" => match sent["params"]["ref"]["type"].as_str() {
                Some("ref/prompt") => {
                    prompt(sent["params"]["ref"]["name"].as_str().unwrap_or_default())
                }
                _ => resource(sent["params"]["ref"]["uri"].as_str().unwrap_or_default()),
            },
            _ => Subject::Server,
        };
        assert_eq!(call.subject, expected, "{body}");
        if matches!(call.method.as_str(), "tools/call" | "prompts/get") {
            assert_eq!(
                Some(&Value::Object(call.arguments.clone())),
                sent["params"].get("arguments")
            );
        }
    }
    assert!(named >= 4, "the 2026-07-28 requests carry `Mcp-Name`");
}

/// The `tools/list` result of the reference scenario's document server, as the
/// real Python SDK server sends it: every tool gets its own qualified entity.
#[test]
fn every_tool_of_a_real_tools_list_is_a_qualified_entity() {
    let result: Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/mcp/tools_list_result.json"
    ))
    .unwrap_or_default();
    let tools = result["tools"].as_array().cloned().unwrap_or_default();
    let mut names = Vec::new();
    for t in &tools {
        let name = t["name"].as_str().unwrap_or_default();
        let arguments: Map<String, Value> = t["inputSchema"]["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|p| (p.to_owned(), json!("titan-q1-strategy")))
            .collect();
        let body = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
            "params":{"name":name,"arguments":arguments}});
        let call = single(&body.to_string());
        assert_eq!(
            call.resource("docs").0.to_string(),
            format!(r#"Mcp::Tool::"docs/{name}""#)
        );
        assert_eq!(call.arguments, arguments);
        names.push(name.to_owned());
    }
    assert_eq!(
        names,
        [
            "search_documents",
            "get_document",
            "summarize_document",
            "delete_document"
        ]
    );
}

#[test]
fn nesting_up_to_the_limit_is_fine() {
    // The message, `params` and `arguments` are three levels.
    let body = |levels: usize| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"a":{}0{}}}}}}}"#,
            "[".repeat(levels),
            "]".repeat(levels)
        )
    };
    let call = single(&body(MAX_DEPTH - 3));
    assert_eq!(call.subject, tool("t"));
    assert_eq!(
        err(body(MAX_DEPTH - 2).as_bytes()).reason(),
        &Reason::TooDeep
    );
    // In a batch, the batch array is one more.
    let batch = format!("[{}]", body(MAX_DEPTH - 4));
    assert_eq!(ok(&batch).calls.len(), 1);
    let batch = format!("[{}]", body(MAX_DEPTH - 3));
    assert_eq!(err(batch.as_bytes()).reason(), &Reason::TooDeep);
}

/// Every method naming a resource URI decides the resource in its normal form, and
/// refuses a URI without one; `completion/complete` does the same for templates.
#[test]
fn resource_uris_are_decided_in_normal_form() {
    let budget = r#"Mcp::Resource::"docs/docs://finance/budget-2026""#;
    let aliases = [
        "docs://finance/budget-2026",
        "docs://finance/titan/../budget-2026",
        "DOCS://finance/budget-2026",
        "docs://FINANCE/budget-2026",
        "docs://finance/x/%2e%2e/budget-2026",
        "docs://finance/x/%2E%2e/budget-2026",
        "docs://finance/./budget-2026",
        "docs://%66inance/%62udget-2026",
        "Docs://Finance/a/b/../../budget-2026",
    ];
    for method in [
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        for alias in aliases {
            let body =
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {"uri": alias}});
            let call = single(&body.to_string());
            assert_eq!(call.resource("docs").0.to_string(), budget, "{body}");
            // A notification names its resource the same way.
            let note = json!({"jsonrpc": "2.0", "method": method, "params": {"uri": alias}});
            assert_eq!(
                single(&note.to_string()).resource("docs").0.to_string(),
                budget
            );
            // The `Mcp-Name` header names the resource as the body does, in any spelling.
            let msg = ok(&body.to_string());
            for header in [
                alias,
                "docs://finance/budget-2026",
                "docs://finance/x/../budget-2026",
            ] {
                assert_eq!(
                    check_headers(&msg, &headers(Some(method), Some(header))),
                    Ok(()),
                    "{alias} / {header}"
                );
            }
            for other in [
                "docs://finance/budget-2027",
                "docs://@finance/budget-2026",
                "docs://finance/x",
            ] {
                let e = check_headers(&msg, &headers(Some(method), Some(other)));
                assert!(
                    matches!(
                        e.as_ref().map_err(McpError::reason),
                        Err(Reason::HeaderMismatch { .. })
                    ),
                    "{alias} / {other}: {e:?}"
                );
            }
        }
        // In a batch too.
        let batch = json!([
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"uri": "docs://titan/q1-strategy"}},
            {"jsonrpc": "2.0", "id": 2, "method": method, "params": {"uri": "docs://finance/q1/../budget-2026"}},
        ]);
        let msg = ok(&batch.to_string());
        assert_eq!(msg.calls[1].resource("docs").0.to_string(), budget);
    }

    // Refused: a deny (invalid params) naming the member and the reason.
    for (uri, reason) in [
        ("docs://@finance/budget-2026", "user information"),
        ("docs://x@finance/budget-2026", "user information"),
        ("docs://finance:/budget-2026", "the port is empty"),
        ("docs://finance/x%2F..%2Fbudget-2026", "percent-encodes `/`"),
        (" docs://finance/budget-2026", "whitespace"),
        ("docs://finance/budget-2026 ", "whitespace"),
        ("docs://finance/budget-2026#x", "fragment"),
        ("docs://finance//budget-2026", "empty segment"),
        ("docs://finance/%C0%AE%C0%AE/budget-2026", "not UTF-8"),
        ("docs://finance/x/%252e%252e/budget-2026", "double encoding"),
        ("budget-2026", "no scheme"),
        ("docs://finance./budget-2026", "empty label"),
        ("docs:\\\\finance\\budget-2026", "backslash"),
    ] {
        for method in [
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
        ] {
            let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": {"uri": uri}});
            let e = err(body.to_string().as_bytes());
            assert_eq!(e.code(), INVALID_PARAMS, "{uri}: {e}");
            assert_eq!(e.id(), Some(&json!(7)), "{uri}");
            let message = e.to_string();
            assert!(
                message.starts_with("`params.uri` is refused: "),
                "{message}"
            );
            assert!(message.contains(reason), "{uri}: {message}");
        }
    }

    // completion/complete names a URI template: normalized outside its expressions.
    let complete = |uri: &str| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "completion/complete",
               "params": {"ref": {"type": "ref/resource", "uri": uri}, "argument": {"name": "id", "value": "b"}}})
        .to_string()
    };
    for alias in [
        "docs://finance/{id}",
        "DOCS://Finance/{id}",
        "docs://%66inance/{id}",
    ] {
        assert_eq!(
            single(&complete(alias)).resource("docs").0.to_string(),
            r#"Mcp::Resource::"docs/docs://finance/{id}""#,
            "{alias}"
        );
    }
    for bad in [
        "docs://finance/../{id}",
        "docs://@finance/{id}",
        "docs://finance/{id",
    ] {
        let e = err(complete(bad).as_bytes());
        assert!(
            e.to_string().starts_with("`params.ref.uri` is refused: "),
            "{e}"
        );
    }
    // A list entry that is a template.
    let call = McpCall::on_template("resources/read", "DOCS://finance/{year}/budget")
        .map_err(|e| e.to_string());
    assert_eq!(
        call.map(|c| c.resource("docs").0.to_string()),
        Ok(r#"Mcp::Resource::"docs/docs://finance/{year}/budget""#.to_owned())
    );
}

#[test]
fn an_error_response_with_data_is_one_layout_as_value_and_as_text() {
    let ids = [
        None,
        Some(json!(7)),
        Some(json!("a \"quoted\" id\n")),
        Some(Value::Null),
        Some(json!({"odd": [1, 2]})),
    ];
    let data = [
        Map::new(),
        json!({"decision_id": "d1", "uri": "file:///x\u{1}"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    ];
    for id in &ids {
        for message in ["forbidden: no policy permits it", "tab\tand \\ \u{e9}"] {
            for data in &data {
                let value = error_response_with_data(id.as_ref(), -32003, message, data.clone());
                let text = error_response_text(id.as_ref(), -32003, message, data);
                // The documented members, in the documented order.
                let expected = format!(
                    r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":-32003,"message":{},"data":{}}}}}"#,
                    serde_json::to_string(id.as_ref().unwrap_or(&Value::Null)).expect("json"),
                    serde_json::to_string(message).expect("json"),
                    serde_json::to_string(data).expect("json"),
                );
                assert_eq!(text, expected);
                assert_eq!(serde_json::to_string(&value).expect("json"), expected);
            }
        }
    }
}

/// Every permutation of `members` (with one member no mapping reads among them) as the
/// text of one JSON object.
fn orders(members: &[(&str, Value)]) -> Vec<String> {
    let mut all: Vec<(&str, Value)> = members.to_vec();
    all.push(("x-unread", json!({ "name": "ignored", "arguments": 1 })));
    let mut out = Vec::new();
    let mut indices: Vec<usize> = (0..all.len()).collect();
    permute(&mut indices, 0, &mut |order| {
        let text: Vec<String> = order
            .iter()
            .map(|&i| format!("{}:{}", json!(all[i].0), all[i].1))
            .collect();
        out.push(format!("{{{}}}", text.join(",")));
    });
    out
}

fn permute(items: &mut Vec<usize>, at: usize, each: &mut dyn FnMut(&[usize])) {
    if at == items.len() {
        each(items);
        return;
    }
    for i in at..items.len() {
        items.swap(at, i);
        permute(items, at + 1, each);
        items.swap(at, i);
    }
}

#[test]
fn members_are_read_whatever_their_order_and_others_left_unread() {
    let params = |members: &[(&str, Value)]| -> Vec<Value> {
        orders(members)
            .iter()
            .map(|text| serde_json::from_str(text).expect("json"))
            .collect()
    };
    type Members<'a> = Vec<(&'a str, Value)>;
    let messages: Vec<(Members, Vec<Value>)> = vec![
        (
            vec![
                ("jsonrpc", json!("2.0")),
                ("id", json!(7)),
                ("method", json!("tools/call")),
            ],
            params(&[
                ("name", json!("get_document")),
                ("arguments", json!({"document_id": "x"})),
            ]),
        ),
        (
            vec![("jsonrpc", json!("2.0")), ("method", json!("prompts/get"))],
            params(&[("name", json!("summary")), ("arguments", json!({"n": 1}))]),
        ),
        (
            vec![
                ("jsonrpc", json!("2.0")),
                ("id", json!("a")),
                ("method", json!("resources/read")),
            ],
            params(&[("uri", json!("docs://a/b"))]),
        ),
        (
            vec![
                ("jsonrpc", json!("2.0")),
                ("id", json!(1)),
                ("method", json!("completion/complete")),
            ],
            params(&[
                ("ref", json!({"uri": "docs://{id}", "type": "ref/resource"})),
                ("argument", json!({"name": "id", "value": "a"})),
                ("context", json!({"arguments": {}})),
            ]),
        ),
    ];
    for (envelope, params) in messages {
        let mut expected = None;
        for params in params {
            let mut members = envelope.clone();
            members.push(("params", params));
            for text in orders(&members) {
                let call = single(&text);
                match &expected {
                    None => expected = Some(call),
                    Some(first) => assert_eq!(&call, first, "{text}"),
                }
            }
        }
    }
    // Responses: the result or the error, with the id anywhere.
    for envelope in [
        vec![
            ("jsonrpc", json!("2.0")),
            ("id", json!(3)),
            ("result", json!({"tools": []})),
        ],
        vec![
            ("jsonrpc", json!("2.0")),
            ("id", json!(null)),
            ("error", json!({"code": -32600, "message": "m"})),
        ],
    ] {
        let texts = orders(&envelope);
        let first = single(&texts[0]);
        assert_eq!(first.kind, MessageKind::Response);
        for text in &texts {
            assert_eq!(single(text), first, "{text}");
        }
    }
}
