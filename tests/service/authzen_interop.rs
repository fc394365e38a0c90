//! The OpenID AuthZEN Authorization API 1.0 certification scenario (openid/authzen,
//! `certification/authorization-api-1_0-scenario.md`) as tests, on its fixture in
//! `tests/fixtures/authzen/` (no namespace: users alice and bob, records record-1
//! and record-2, actions read, write, delete). Section numbers are the scenario's.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::support::inproc::{self, app, decision, fixture, get, post, post_raw, post_with};

fn user(id: &str) -> Value {
    json!({ "type": "user", "id": id })
}

fn record(id: &str) -> Value {
    json!({ "type": "record", "id": id })
}

fn action(name: &str) -> Value {
    json!({ "name": name })
}

fn eval(subject: Value, act: Value, resource: Value) -> Value {
    json!({ "subject": subject, "action": act, "resource": resource })
}

// C.2.2: request acceptance and the fixture decisions.

#[tokio::test]
async fn core_fixture_decisions() {
    let app = app(&fixture());
    // Rules 1-4.
    assert!(
        decision(
            &app,
            &eval(user("alice"), action("read"), record("record-1"))
        )
        .await
    );
    assert!(
        decision(
            &app,
            &eval(user("alice"), action("write"), record("record-1"))
        )
        .await
    );
    assert!(decision(&app, &eval(user("bob"), action("read"), record("record-1"))).await);
    assert!(
        !decision(
            &app,
            &eval(user("bob"), action("write"), record("record-1"))
        )
        .await
    );
    // C.2.2.1 / C.2.2.2: exactly `{"decision": ...}` (no context unless asked for).
    let r = post(
        &app,
        "/access/v1/evaluation",
        &eval(user("alice"), action("read"), record("record-1")),
    )
    .await;
    assert_eq!(r.json(), json!({ "decision": true }));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let r = post(
        &app,
        "/access/v1/evaluation",
        &eval(user("bob"), action("write"), record("record-1")),
    )
    .await;
    assert_eq!(r.json(), json!({ "decision": false }));
}

#[tokio::test]
async fn context_additional_properties_and_unknown_fields_are_accepted() {
    let app = app(&fixture());
    // C.2.2.3
    let mut body = eval(user("alice"), action("read"), record("record-1"));
    body["context"] = json!({ "time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1" });
    assert!(decision(&app, &body).await);
    // C.2.2.8: properties the schema does not declare are left out.
    let body = json!({
        "subject": { "type": "user", "id": "alice", "properties": { "department": "Sales", "role": "manager" } },
        "action": { "name": "read", "properties": { "method": "GET" } },
        "resource": { "type": "record", "id": "record-1", "properties": { "status": "active", "owner": "bob" } }
    });
    assert!(decision(&app, &body).await);
    // C.2.2.9
    let mut body = eval(user("alice"), action("read"), record("record-1"));
    body["foo"] = json!("bar");
    body["futureField"] = json!({ "nested": true });
    assert!(decision(&app, &body).await);
}

#[tokio::test]
async fn properties_fixture_decisions() {
    let app = app(&fixture());
    // C.2.2.4, rule 5
    let archived =
        json!({ "type": "record", "id": "record-2", "properties": { "status": "archived" } });
    assert!(
        !decision(
            &app,
            &eval(user("alice"), action("write"), archived.clone())
        )
        .await
    );
    // C.2.2.5, rule 6
    let admin = json!({ "type": "user", "id": "bob", "properties": { "role": "admin" } });
    assert!(decision(&app, &eval(admin, action("write"), archived.clone())).await);
    // A new record described only by its properties.
    let new_archived =
        json!({ "type": "record", "id": "record-9", "properties": { "status": "archived" } });
    assert!(
        !decision(
            &app,
            &eval(user("alice"), action("write"), new_archived.clone())
        )
        .await
    );
    let carol_admin = json!({ "type": "user", "id": "carol", "properties": { "role": "admin" } });
    assert!(decision(&app, &eval(carol_admin, action("write"), new_archived)).await);
    // C.2.2.6 / C.2.2.7, rules 7 and 8
    let soft = json!({ "name": "delete", "properties": { "soft": true } });
    let hard = json!({ "name": "delete", "properties": { "soft": false } });
    assert!(decision(&app, &eval(user("alice"), soft, record("record-1"))).await);
    assert!(!decision(&app, &eval(user("alice"), hard, record("record-1"))).await);
    // A declared property of the wrong type is a deny, never coerced.
    let wrong = json!({ "name": "delete", "properties": { "soft": "yes" } });
    assert!(!decision(&app, &eval(user("alice"), wrong, record("record-1"))).await);
}

// C.2.4: error handling.

#[tokio::test]
async fn missing_fields_and_sub_fields_are_bad_requests() {
    let app = app(&fixture());
    let cases = [
        json!({ "action": action("read"), "resource": record("record-1") }),
        json!({ "subject": user("alice"), "resource": record("record-1") }),
        json!({ "subject": user("alice"), "action": action("read") }),
        json!({ "subject": { "id": "alice" }, "action": action("read"), "resource": record("record-1") }),
        json!({ "subject": { "type": "user" }, "action": action("read"), "resource": record("record-1") }),
        json!({ "subject": user("alice"), "action": {}, "resource": record("record-1") }),
        json!({ "subject": user("alice"), "action": action("read"), "resource": { "id": "record-1" } }),
        json!({ "subject": user("alice"), "action": action("read"), "resource": { "type": "record" } }),
        // C.2.4.6: invalid field types.
        json!({ "subject": "alice", "action": action("read"), "resource": record("record-1") }),
        json!({ "subject": user("alice"), "action": { "name": 123 }, "resource": record("record-1") }),
        json!({ "subject": user("alice"), "action": action("read"), "resource": record("record-1"), "context": [1] }),
        json!({ "subject": { "type": "user", "id": "alice", "properties": 5 }, "action": action("read"), "resource": record("record-1") }),
    ];
    for body in cases {
        let r = post(&app, "/access/v1/evaluation", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        let err = r.json();
        assert_eq!(err["error"]["status"], 400, "{err}");
        assert!(err["error"]["message"].is_string(), "{err}");
    }
}

#[tokio::test]
async fn content_type_malformed_and_empty_bodies_are_bad_requests() {
    let app = app(&fixture());
    let valid = eval(user("alice"), action("read"), record("record-1")).to_string();
    for path in [
        "/access/v1/evaluation",
        "/access/v1/evaluations",
        "/access/v1/search/action",
    ] {
        // C.2.4.3
        for ct in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
        ] {
            let r = post_raw(&app, path, ct, &valid).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path} {ct:?}");
        }
        // C.2.4.4 / C.2.4.5
        for body in ["{not json", "", "   ", "[1, 2]", "\"a string\"", "null"] {
            let r = post_raw(&app, path, Some("application/json"), body).await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{path} {body:?}: {}",
                r.text
            );
        }
    }
    // A charset parameter is fine.
    let r = post_raw(
        &app,
        "/access/v1/evaluation",
        Some("application/json; charset=utf-8"),
        &valid,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
}

// C.2.5 and C.2.6

#[tokio::test]
async fn request_ids_are_echoed_and_decisions_are_idempotent() {
    let app = app(&fixture());
    let body = eval(user("alice"), action("read"), record("record-1"));
    let r = post_with(
        &app,
        "/access/v1/evaluation",
        &body,
        &[("x-request-id", "bfe9eb29-ab87-4ca3-be83-a1d5d8305716")],
    )
    .await;
    assert_eq!(
        r.header("x-request-id"),
        Some("bfe9eb29-ab87-4ca3-be83-a1d5d8305716")
    );
    assert!(r.header("x-decision-id").is_some_and(|id| id.len() == 36));
    // Errors echo it too.
    let r = post_with(
        &app,
        "/access/v1/evaluation",
        &json!({}),
        &[("x-request-id", "r-2")],
    )
    .await;
    assert_eq!(
        (r.status, r.header("x-request-id")),
        (StatusCode::BAD_REQUEST, Some("r-2"))
    );
    let r = post(&app, "/access/v1/evaluation", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-request-id").is_none());
    for _ in 0..5 {
        assert!(decision(&app, &body).await);
    }
}

// C.3: batches.

async fn batch(app: &axum::Router, body: &Value) -> Vec<Value> {
    let r = post(app, "/access/v1/evaluations", body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let json = r.json();
    assert!(json.get("decision").is_none(), "{json}");
    json["evaluations"].as_array().expect("evaluations").clone()
}

fn decisions(items: &[Value]) -> Vec<bool> {
    items
        .iter()
        .map(|i| i["decision"].as_bool().expect("boolean"))
        .collect()
}

#[tokio::test]
async fn batches_with_defaults_overrides_and_merging() {
    let app = app(&fixture());
    // C.3.2.1
    let items = batch(
        &app,
        &json!({
            "subject": user("alice"), "action": action("read"),
            "evaluations": [{ "resource": record("record-1") }, { "resource": record("record-2") }]
        }),
    )
    .await;
    assert_eq!(decisions(&items), [true, true]);
    // C.3.2.2: order is kept.
    let items = batch(
        &app,
        &json!({
            "subject": user("bob"), "resource": record("record-1"),
            "evaluations": [{ "action": action("read") }, { "action": action("write") }]
        }),
    )
    .await;
    assert_eq!(
        items,
        [json!({ "decision": true }), json!({ "decision": false })]
    );
    // C.3.2.3
    let items = batch(&app, &json!({
        "subject": user("alice"), "action": action("write"),
        "evaluations": [
            { "resource": { "type": "record", "id": "record-1", "properties": { "status": "active" } } },
            { "resource": { "type": "record", "id": "record-2", "properties": { "status": "archived" } } }
        ]
    })).await;
    assert_eq!(decisions(&items), [true, false]);
    // C.3.2.4
    let items = batch(&app, &json!({
        "action": action("write"),
        "resource": { "type": "record", "id": "record-2", "properties": { "status": "archived" } },
        "evaluations": [
            { "subject": user("alice") },
            { "subject": { "type": "user", "id": "bob", "properties": { "role": "admin" } } }
        ]
    })).await;
    assert_eq!(decisions(&items), [false, true]);
    // C.3.2.5
    let items = batch(
        &app,
        &json!({ "evaluations": [
            eval(user("alice"), action("read"), record("record-1")),
            eval(user("bob"), action("write"), record("record-1")),
        ]}),
    )
    .await;
    assert_eq!(decisions(&items), [true, false]);
    // C.3.2.6
    let items = batch(&app, &json!({
        "subject": user("alice"), "action": action("read"),
        "context": { "time": "2025-06-27T18:03-07:00" },
        "evaluations": [
            { "resource": record("record-1") },
            { "resource": record("record-2"), "context": { "time": "2025-06-27T19:00-07:00", "source": "batch-override" } }
        ]
    })).await;
    assert_eq!(items.len(), 2);
    // C.3.2.7: an item's entity replaces the default, whose `type`/`id` fill in what it lacks.
    let items = batch(&app, &json!({
        "subject": user("alice"), "action": action("write"), "resource": { "type": "record" },
        "evaluations": [
            { "resource": { "id": "record-1", "properties": { "status": "active" } } },
            { "resource": { "type": "record", "id": "record-2", "properties": { "status": "archived" } } }
        ]
    })).await;
    assert_eq!(decisions(&items), [true, false]);
}

#[tokio::test]
async fn batch_errors_and_backwards_compatibility() {
    let app = app(&fixture());
    // C.3.4.1: a bad item is a deny with its error; the others are decided.
    let items = batch(&app, &json!({
        "subject": user("alice"), "action": action("read"),
        "evaluations": [{ "resource": record("record-1") }, {}, 7, { "resource": { "type": "record" } }]
    })).await;
    assert_eq!(decisions(&items), [true, false, false, false]);
    assert_eq!(items[0], json!({ "decision": true }));
    assert_eq!(items[1]["context"]["error"]["status"], 400);
    assert!(
        items[1]["context"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("resource"))
    );
    // C.3.4.2 / C.3.4.3: without items it is a single evaluation.
    let single = eval(user("alice"), action("read"), record("record-1"));
    let r = post(&app, "/access/v1/evaluations", &single).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({ "decision": true }))
    );
    let mut empty = single.clone();
    empty["evaluations"] = json!([]);
    let r = post(&app, "/access/v1/evaluations", &empty).await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({ "decision": true }))
    );
    // ...and then its fields are required.
    let r = post(
        &app,
        "/access/v1/evaluations",
        &json!({ "evaluations": [] }),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Whole-payload problems are HTTP errors.
    for body in [
        json!({ "evaluations": {} }),
        json!({ "subject": "alice", "evaluations": [{}] }),
        json!({ "options": { "evaluations_semantic": "sometimes" }, "evaluations": [single.clone()] }),
        json!({ "options": 3, "evaluations": [single.clone()] }),
    ] {
        let r = post(&app, "/access/v1/evaluations", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
}

#[tokio::test]
async fn evaluation_semantics_short_circuit() {
    let app = app(&fixture());
    let body = |semantic: &str| {
        json!({
            "subject": user("bob"), "resource": record("record-1"),
            "options": { "evaluations_semantic": semantic },
            "evaluations": [
                { "action": action("read") },
                { "action": action("write") },
                { "action": action("read") }
            ]
        })
    };
    assert_eq!(
        decisions(&batch(&app, &body("execute_all")).await),
        [true, false, true]
    );
    assert_eq!(
        decisions(&batch(&app, &body("deny_on_first_deny")).await),
        [true, false]
    );
    assert_eq!(
        decisions(&batch(&app, &body("permit_on_first_permit")).await),
        [true]
    );
    // The default is execute_all.
    let mut default = body("execute_all");
    default.as_object_mut().expect("object").remove("options");
    assert_eq!(decisions(&batch(&app, &default).await), [true, false, true]);
}

// C.4: searches.

async fn search(app: &axum::Router, what: &str, body: &Value) -> Value {
    let r = post(app, &format!("/access/v1/search/{what}"), body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

fn ids(result: &Value, key: &str) -> Vec<String> {
    result["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r[key].as_str().expect("string").to_owned())
        .collect()
}

#[tokio::test]
async fn subject_resource_and_action_searches() {
    let app = app(&fixture());
    // C.4.2.1: every result has the requested type.
    let r = search(
        &app,
        "subject",
        &json!({
            "subject": { "type": "user" }, "action": action("read"), "resource": record("record-1")
        }),
    )
    .await;
    assert_eq!(ids(&r, "id"), ["alice", "bob"]);
    assert!(
        r["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|e| e["type"] == "user")
    );
    // C.4.2.2: with context; C.4.2.3: a subject id is ignored.
    let r = search(&app, "subject", &json!({
        "subject": { "type": "user", "id": "zed" }, "action": action("read"), "resource": record("record-1"),
        "context": { "time": "2025-06-27T18:03-07:00" }
    })).await;
    assert_eq!(ids(&r, "id"), ["alice", "bob"]);
    // C.4.2.4
    let r = search(&app, "subject", &json!({
        "subject": { "type": "user" }, "action": action("write"),
        "resource": { "type": "record", "id": "record-2", "properties": { "status": "archived" } }
    })).await;
    assert_eq!(ids(&r, "id"), ["bob"]);
    // C.4.3.1 / C.4.3.3
    let r = search(
        &app,
        "resource",
        &json!({
            "subject": user("alice"), "action": action("read"), "resource": { "type": "record" }
        }),
    )
    .await;
    assert_eq!(ids(&r, "id"), ["record-1", "record-2"]);
    assert!(
        r["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|e| e["type"] == "record")
    );
    let r = search(
        &app,
        "resource",
        &json!({
            "subject": { "type": "user", "id": "bob", "properties": { "role": "admin" } },
            "action": action("write"), "resource": { "type": "record" }
        }),
    )
    .await;
    assert_eq!(ids(&r, "id"), ["record-2"]);
    // C.4.4.1 / C.4.4.2 / C.4.4.3
    let r = search(
        &app,
        "action",
        &json!({ "subject": user("alice"), "resource": record("record-1") }),
    )
    .await;
    assert_eq!(ids(&r, "name"), ["read", "write"]);
    let r = search(&app, "action", &json!({
        "subject": user("alice"), "resource": record("record-1"), "context": { "ip": "10.0.0.1" }
    })).await;
    assert_eq!(ids(&r, "name"), ["read", "write"]);
    let r = search(&app, "action", &json!({
        "subject": { "type": "user", "id": "bob", "properties": { "role": "admin" } },
        "resource": { "type": "record", "id": "record-2", "properties": { "status": "archived" } }
    })).await;
    assert_eq!(ids(&r, "name"), ["read", "write"]);
}

#[tokio::test]
async fn search_pagination() {
    let app = app(&fixture());
    let first = json!({
        "subject": { "type": "user" }, "action": action("read"), "resource": record("record-1"),
        "page": { "limit": 1 }
    });
    // C.4.5.1
    let r = search(&app, "subject", &first).await;
    assert_eq!(ids(&r, "id"), ["alice"]);
    assert_eq!(r["page"]["count"], 1);
    let token = r["page"]["next_token"]
        .as_str()
        .expect("a string")
        .to_owned();
    assert!(!token.is_empty());
    // C.4.5.2: the follow-up may leave out the limit.
    let mut second = first.clone();
    second["page"] = json!({ "token": token });
    let r = search(&app, "subject", &second).await;
    assert_eq!(ids(&r, "id"), ["bob"]);
    assert_eq!(r["page"]["next_token"], "");
    // A token used with another request, or a forged one, is refused.
    let mut other = second.clone();
    other["action"] = action("write");
    assert_eq!(
        post(&app, "/access/v1/search/subject", &other).await.status,
        StatusCode::BAD_REQUEST
    );
    let mut forged = second.clone();
    forged["page"]["token"] = json!("bm9wZQ");
    assert_eq!(
        post(&app, "/access/v1/search/subject", &forged)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let mut changed = second.clone();
    changed["page"]["limit"] = json!(5);
    assert_eq!(
        post(&app, "/access/v1/search/subject", &changed)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // At most `limit` results: `0` gives none, and a token when there are more.
    let mut none = first.clone();
    none["page"] = json!({ "limit": 0 });
    let r = search(&app, "subject", &none).await;
    assert_eq!(ids(&r, "id"), Vec::<String>::new());
    assert_eq!(r["page"]["count"], 0);
    assert_ne!(r["page"]["next_token"], "");
    // Without a page everything comes at once, with an empty next_token.
    let mut all = first.clone();
    all.as_object_mut().expect("object").remove("page");
    let r = search(&app, "subject", &all).await;
    assert_eq!(
        (ids(&r, "id").len(), r["page"]["next_token"].clone()),
        (2, json!(""))
    );
    for bad in [
        json!({ "limit": -1 }),
        json!({ "limit": "2" }),
        json!({ "token": 5 }),
        json!(3),
    ] {
        let mut b = first.clone();
        b["page"] = bad;
        assert_eq!(
            post(&app, "/access/v1/search/subject", &b).await.status,
            StatusCode::BAD_REQUEST
        );
    }
}

#[tokio::test]
async fn searches_with_unknown_ids_or_types_are_empty_and_errors_are_bad_requests() {
    let app = app(&fixture());
    // C.4.6.1 / C.4.6.2
    let r = search(
        &app,
        "action",
        &json!({ "subject": user("nonexistent-user"), "resource": record("record-1") }),
    )
    .await;
    assert_eq!(r["results"], json!([]));
    let r = search(&app, "subject", &json!({
        "subject": { "type": "spaceship" }, "action": action("read"), "resource": record("record-1")
    })).await;
    assert_eq!(r["results"], json!([]));
    let r = search(
        &app,
        "resource",
        &json!({
            "subject": user("alice"), "action": action("fly"), "resource": { "type": "record" }
        }),
    )
    .await;
    assert_eq!(r["results"], json!([]));
    // C.4.7.1 / C.4.7.2
    for (what, body) in [
        (
            "subject",
            json!({ "subject": { "type": "user" }, "resource": record("record-1") }),
        ),
        (
            "resource",
            json!({ "action": action("read"), "resource": { "type": "record" } }),
        ),
        ("action", json!({ "subject": user("alice") })),
        (
            "subject",
            json!({ "subject": { "type": "user" }, "action": action("read"), "resource": { "type": "record" } }),
        ),
        (
            "resource",
            json!({ "subject": { "type": "user" }, "action": action("read"), "resource": { "type": "record" } }),
        ),
        (
            "subject",
            json!({ "subject": {}, "action": action("read"), "resource": record("record-1") }),
        ),
    ] {
        let r = post(&app, &format!("/access/v1/search/{what}"), &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what} {body}");
    }
}

// C.6: discovery.

#[tokio::test]
async fn pdp_metadata() {
    let app = app(&fixture());
    let r = get(&app, "/.well-known/authzen-configuration", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );
    let m = r.json();
    assert_eq!(m["policy_decision_point"], "http://pdp.test:8181");
    assert_eq!(
        m["access_evaluation_endpoint"],
        "http://pdp.test:8181/access/v1/evaluation"
    );
    for key in [
        "access_evaluations_endpoint",
        "search_subject_endpoint",
        "search_resource_endpoint",
        "search_action_endpoint",
    ] {
        assert!(
            m[key]
                .as_str()
                .is_some_and(|u| u.starts_with("http://pdp.test:8181/access/v1/")),
            "{key}"
        );
    }
    // A configured base URL wins over the Host header.
    let mut state = inproc::state_on(&fixture(), Default::default(), None);
    state.authzen.base_url = Some("https://pdp.example.com".into());
    let app = inproc::app_of(state);
    let m = get(&app, "/.well-known/authzen-configuration", &[])
        .await
        .json();
    assert_eq!(m["policy_decision_point"], "https://pdp.example.com");
    assert_eq!(
        m["search_action_endpoint"],
        "https://pdp.example.com/access/v1/search/action"
    );
}

// Explanations on request only.

#[tokio::test]
async fn explanations_name_policies_with_their_files() {
    let app = app(&fixture());
    let mut body = eval(user("alice"), action("read"), record("record-1"));
    body["options"] = json!({ "explain": true });
    let r = post(&app, "/access/v1/evaluation", &body).await.json();
    assert_eq!(r["decision"], true);
    let ctx = &r["context"];
    assert_eq!(ctx["reason"], "allowed");
    assert_eq!(ctx["generation"], 1);
    assert!(
        ctx["policy_digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{ctx}"
    );
    assert!(ctx["decision_id"].is_string());
    assert_eq!(ctx["evaluations"][0]["role"], "user");
    assert_eq!(ctx["evaluations"][0]["principal"], "User::\"alice\"");
    assert_eq!(
        ctx["evaluations"][0]["policies"],
        json!([{ "id": "staff-read", "file": "records.cedar", "line": 2 }])
    );
    // An unknown action is a deny with its reason (not a bad request).
    let mut body = eval(user("alice"), action("fly"), record("record-1"));
    body["options"] = json!({ "explain": true });
    let r = post(&app, "/access/v1/evaluation", &body).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = r.json();
    assert_eq!(r["decision"], false);
    assert!(
        r["context"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("no action `fly`")),
        "{r}"
    );
    // In a batch, per item.
    let items = batch(
        &app,
        &json!({
            "subject": user("bob"), "resource": record("record-1"), "options": { "explain": true },
            "evaluations": [{ "action": action("write") }]
        }),
    )
    .await;
    assert!(
        items[0]["context"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("no policy permits")),
        "{items:?}"
    );
}

/// A schema of another namespace than the MCP one: names, ids and the context are
/// read exactly as Cedar reads them (built-in type names under `__cedar::`, empty
/// ids, non-ASCII action ids in either spelling, context attributes named like
/// the MCP profile's).
#[tokio::test]
async fn other_schemas_are_read_exactly_as_cedar_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("s.cedarschema"),
        r#"type Flags = { flag: __cedar::Bool, n?: __cedar::Long, ip?: __cedar::ipaddr, tags?: Set<__cedar::String> };
entity Person;
entity Doc;
action "", "caf\u{e9}", "read" appliesTo {
  principal: Person, resource: Doc,
  context: { flags?: Flags, user?: String, agent?: String, application?: String, server?: __cedar::Long }
};
"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"@id("flagged") permit (principal, action == Action::"read", resource) when { context has flags && context.flags.flag };
@id("empty-ids") permit (principal == Person::"", action == Action::"", resource == Doc::"");
@id("agent-bot") permit (principal, action == Action::"caf\u{e9}", resource) when { context has agent && context.agent == "bot" };
@id("owner") permit (principal, action == Action::"read", resource) when { context has user && context.user == "owner" && context has server && context.server == 2 };
"#,
    )
    .expect("write");
    let app = app(dir.path());
    let req = |subject: &str, action_name: &str, resource: &str, context: Value| {
        json!({
            "subject": { "type": "Person", "id": subject },
            "action": { "name": action_name },
            "resource": { "type": "doc", "id": resource },
            "context": context,
        })
    };
    let cases = [
        (
            req("p", "read", "d", json!({ "flags": { "flag": true } })),
            true,
        ),
        (
            req(
                "p",
                "read",
                "d",
                json!({ "flags": { "flag": true, "n": 3, "ip": "10.0.0.1", "tags": ["a"] } }),
            ),
            true,
        ),
        (
            req("p", "read", "d", json!({ "flags": { "flag": false } })),
            false,
        ),
        (req("", "", "", json!({})), true),
        (req("", "Action::\"\"", "", json!({})), true),
        (req("x", "", "", json!({})), false),
        (req("p", "caf\u{e9}", "d", json!({ "agent": "bot" })), true),
        (
            req("p", "Action::\"caf\u{e9}\"", "d", json!({ "agent": "bot" })),
            true,
        ),
        (
            req(
                "p",
                "Action::\"caf\\u{e9}\"",
                "d",
                json!({ "agent": "bot" }),
            ),
            true,
        ),
        (
            req("p", "caf\u{e9}", "d", json!({ "agent": "someone" })),
            false,
        ),
        (
            req(
                "p",
                "read",
                "d",
                json!({ "user": "owner", "server": 2, "application": "x" }),
            ),
            true,
        ),
        (
            req("p", "read", "d", json!({ "user": "owner", "server": 3 })),
            false,
        ),
    ];
    for (body, expected) in cases {
        let r = post(&app, "/access/v1/evaluation", &body).await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.text);
        assert_eq!(r.json()["decision"], expected, "{body}");
    }
    // A value of another type than declared is a deny, never coerced.
    let r = post(
        &app,
        "/access/v1/evaluation",
        &req("p", "read", "d", json!({ "flags": { "flag": "true" } })),
    )
    .await;
    assert_eq!(r.json()["decision"], false);
}
