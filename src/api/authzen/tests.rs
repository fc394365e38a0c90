//! The AuthZEN adapter without a socket: requests read, mapped to the MCP model,
//! batches and search pages, on the reference policies.

use serde_json::{Map, Value, json};

use super::*;
use crate::api::refusal::RefusalKind;
use crate::api::test_support::services;

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// Alice, through CorpAssist, calling the tool `docs/<tool>`.
/// Alice's call of the reference `docs` server's `tool` through `corpassist`, with the
/// arguments the tool requires.
fn alice_calls(tool: &str) -> Value {
    json!({
        "subject": { "type": "user", "id": "alice" },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": format!("docs/{tool}") },
        "context": corpassist_calls("docs", tool),
    })
}

/// The context of a call of `server/tool` through `corpassist`: the arguments the
/// reference tool requires.
fn corpassist_calls(server: &str, tool: &str) -> Value {
    match crate::policy::reference_arguments(server, tool) {
        Some(arguments) => json!({ "agent": "corpassist", "arguments": arguments }),
        None => json!({ "agent": "corpassist" }),
    }
}

fn message(r: Result<impl std::fmt::Debug, Refusal>) -> String {
    match r {
        Ok(v) => panic!("read: {v:?}"),
        Err(refusal) => refusal.message().to_owned(),
    }
}

#[test]
fn requests_are_read_strictly() {
    // A null member is an absent one.
    let mut body = alice_calls("get_document");
    body["subject"]["properties"] = Value::Null;
    body["context"] = Value::Null;
    let eval = parse_evaluation(&object(body)).expect("read");
    assert!(eval.subject.properties.is_empty());
    assert!(eval.context.is_empty());

    for (path, value, expected) in [
        ("/subject", Value::Null, "`subject` is missing"),
        ("/subject", json!("alice"), "`subject` must be an object"),
        ("/subject/type", Value::Null, "`subject.type` is missing"),
        ("/subject/type", json!(""), "`subject.type` is empty"),
        ("/resource/id", json!(7), "`resource.id` must be a string"),
        ("/action/name", Value::Null, "`action.name` is missing"),
        (
            "/action/properties",
            json!([]),
            "`action.properties` must be an object",
        ),
        ("/context", json!([]), "`context` must be an object"),
    ] {
        let mut body = alice_calls("get_document");
        let mut at = &mut body;
        for key in path.split('/').skip(1) {
            at = &mut at[key];
        }
        *at = value;
        assert_eq!(message(parse_evaluation(&object(body))), expected, "{path}");
    }
    // An empty entity id is Cedar's to take.
    let mut body = alice_calls("get_document");
    body["subject"]["id"] = json!("");
    assert!(parse_evaluation(&object(body)).is_ok());
}

#[tokio::test]
async fn an_evaluation_maps_to_the_mcp_model() {
    let services = services().await;
    let snapshot = services.engine.snapshot();
    let eval = parse_evaluation(&object(alice_calls("get_document"))).expect("read");
    let request = to_decision_request(&snapshot, &eval, None).expect("mapped");
    let uid = |u: &Option<cedar_policy::EntityUid>| u.as_ref().map(ToString::to_string);
    assert_eq!(uid(&request.user).as_deref(), Some(r#"Mcp::User::"alice""#));
    assert_eq!(
        uid(&request.application).as_deref(),
        Some(r#"Mcp::Application::"corpassist""#)
    );
    assert_eq!(
        uid(&request.server).as_deref(),
        Some(r#"Mcp::Server::"docs""#)
    );
    assert_eq!(
        request.resource.to_string(),
        r#"Mcp::Tool::"docs/get_document""#
    );
    assert!(
        !request.context.contains_key("agent"),
        "the agent is taken out"
    );

    // What only the service fills is a bad request; what the policies do not know a deny.
    let mut body = alice_calls("get_document");
    body["context"]["scopes"] = json!(["docs:admin"]);
    let eval = parse_evaluation(&object(body)).expect("read");
    assert!(matches!(
        to_decision_request(&snapshot, &eval, None),
        Err(MapError::Bad(_))
    ));
    let mut body = alice_calls("get_document");
    body["resource"]["type"] = json!("widget");
    let eval = parse_evaluation(&object(body)).expect("read");
    assert!(matches!(
        to_decision_request(&snapshot, &eval, None),
        Err(MapError::Deny(_))
    ));
}

#[tokio::test]
async fn a_batch_stops_where_its_semantic_says() {
    let services = services().await;
    let meta = DecisionMeta::default();
    let mut body = alice_calls("get_document");
    body["resource"] = Value::Null;
    body["options"] = json!({ "evaluations_semantic": "deny_on_first_deny" });
    body["evaluations"] = json!([
        { "resource": { "type": "tool", "id": "docs/get_document" } },
        { "resource": { "type": "tool", "id": "docs/delete_document" },
          "context": corpassist_calls("docs", "delete_document") },
        { "resource": { "type": "tool", "id": "docs/search_documents" },
          "context": corpassist_calls("docs", "search_documents") },
    ]);
    let body = object(body);
    match evaluate_batch(
        &services.engine,
        &services.resource_servers,
        &body,
        None,
        &meta,
        3,
    ) {
        Ok(BatchResult::Batch(json, ids)) => {
            assert_eq!(
                json,
                json!({ "evaluations": [{ "decision": true }, { "decision": false }] })
            );
            assert_eq!(ids.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    match evaluate_batch(
        &services.engine,
        &services.resource_servers,
        &body,
        None,
        &meta,
        2,
    ) {
        Err(refusal) => assert_eq!(refusal.kind(), &RefusalKind::TooLarge),
        other => panic!("{other:?}"),
    }
    let mut bad = body.clone();
    bad.insert("options".into(), json!({ "evaluations_semantic": "all" }));
    assert!(
        message(evaluate_batch(
            &services.engine,
            &services.resource_servers,
            &bad,
            None,
            &meta,
            3
        ))
        .starts_with("`options.evaluations_semantic` `all` is not")
    );
}

#[tokio::test]
async fn search_pages_go_on_from_their_token() {
    let services = services().await;
    let meta = DecisionMeta::default();
    let mut body = alice_calls("");
    body["resource"] = json!({ "type": "tool" });
    body["page"] = json!({ "limit": 1 });
    let first = search(
        &services.engine,
        SearchKind::Resource,
        &object(body.clone()),
        None,
        &meta,
    )
    .expect("a page");
    assert_eq!(first["page"]["count"], json!(1));
    let token = first["page"]["next_token"].clone();
    assert_ne!(token, json!(""), "{first}");

    body["page"] = json!({ "token": token });
    let second = search(
        &services.engine,
        SearchKind::Resource,
        &object(body.clone()),
        None,
        &meta,
    )
    .expect("the next page");
    assert_eq!(second["page"]["count"], json!(1));
    assert_ne!(second["results"], first["results"]);

    // A token goes on only from the request it came from, with its limit.
    let mut other = body.clone();
    other["subject"]["id"] = json!("bob");
    assert_eq!(
        message(search(
            &services.engine,
            SearchKind::Resource,
            &object(other),
            None,
            &meta
        )),
        "`page.token` is not a token from a previous response to this request"
    );
    body["page"]["limit"] = json!(2);
    assert_eq!(
        message(search(
            &services.engine,
            SearchKind::Resource,
            &object(body),
            None,
            &meta
        )),
        "`page.limit` differs from the request that returned the token"
    );
}

#[tokio::test]
async fn a_batch_is_decided_on_one_snapshot_even_across_a_reload() {
    let (_dir, store, services) = crate::api::test_support::reloading_after_first_decision().await;
    let meta = DecisionMeta::default();
    let mut body = alice_calls("get_document");
    body["evaluations"] = json!([{}, {}, { "resource": { "type": "tool", "id": "docs/search_documents" },
                          "context": corpassist_calls("docs", "search_documents") }]);
    let body = object(body);
    match evaluate_batch(
        &services.engine,
        &services.resource_servers,
        &body,
        None,
        &meta,
        3,
    ) {
        Ok(BatchResult::Batch(json, ids)) => {
            assert_eq!(
                json,
                json!({ "evaluations": [{ "decision": true }, { "decision": true }, { "decision": true }] }),
                "decided on the snapshot the batch started with"
            );
            assert_eq!(ids.len(), 3);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.snapshot().generation, 2, "the reload happened");
    let next = decide(
        &services.engine,
        &services.resource_servers,
        &store.snapshot(),
        &parse_evaluation(&object(alice_calls("get_document"))).expect("evaluation"),
        None,
        &meta,
    )
    .expect("an outcome");
    assert!(!next.decision.allow);
}
