use std::path::Path;
use std::str::FromStr;

use serde_json::json;

use super::*;
use crate::authz::{Rules, decide_with_rules};
use crate::mcp::{Kind, action, qualified_id};
use crate::policy::Snapshot;

fn reference() -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    Snapshot::load(&dir, 1).expect("reference policies load")
}

fn uid(s: &str) -> EntityUid {
    EntityUid::from_str(s).expect("uid")
}

/// Many requests: the reference suite's cases (tokens, groups, entities, arguments) and
/// a cross product of principals, targets, tokens, entity data and odd ids.
fn requests() -> Vec<DecisionRequest> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let suite = crate::policytest::read("reference.test.yaml", &dir.join("reference.test.yaml"))
        .expect("the reference suite");
    let mut out: Vec<DecisionRequest> = suite.cases.iter().map(|c| c.request.clone()).collect();
    let users = [
        None,
        Some("alice"),
        Some("carol"),
        Some("erin"),
        Some("o'neil \"q\" \\ \u{e9}\u{301} \u{1f600}\n\t"),
    ];
    let apps = [
        None,
        Some("corpassist"),
        Some("summarizer"),
        Some("ops-console"),
    ];
    let targets = [
        ("tools/call", "docs", "get_document"),
        ("tools/call", "docs", "delete_document"),
        ("tools/call", "docs", "search_documents"),
        ("tools/call", "projects", "update_issue"),
        ("tools/call", "projects", "list_issues"),
        ("tools/call", "docs", "not/declared"),
    ];
    let tokens = [
        None,
        Some(TokenFacts::default()),
        Some(TokenFacts {
            scopes: vec!["docs.read".into(), "projects.write".into()],
            claims: json!({"department": "finance", "level": 3, "tags": ["a", "b"]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }),
    ];
    let arguments = [
        None,
        Some(json!({})),
        Some(json!({"document_id": "titan/q1-strategy"})),
        Some(json!({"query": "titan", "max_results": 500})),
        Some(json!({"since": 120, "nested": {"deep": [1, {"x": null}]}})),
    ];
    let mut n = 0usize;
    for user in users {
        for app in apps {
            for (method, server, tool) in targets {
                n += 1;
                let mut r = DecisionRequest::new(
                    action(method),
                    Kind::Tool.uid(&qualified_id(server, tool)),
                );
                r.user = user.map(|u| Kind::User.uid(u));
                r.application = app.map(|a| Kind::Application.uid(a));
                r.server = (!n.is_multiple_of(5)).then(|| Kind::Server.uid(server));
                if let Some(a) = &arguments[n % arguments.len()] {
                    r.context.insert("arguments".into(), a.clone());
                }
                if n.is_multiple_of(3) {
                    r.context
                        .insert("request".into(), json!({"source_ip": "10.0.0.7"}));
                }
                r.token = tokens[n % tokens.len()].clone();
                if let Some(u) = &r.user
                    && n.is_multiple_of(2)
                {
                    r.entities.push(RequestEntity {
                        uid: u.clone(),
                        parents: vec![Kind::Group.uid("contractors"), Kind::Group.uid("finance")],
                        attrs: json!({"department": "finance"})
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                    });
                }
                out.push(r);
            }
        }
    }
    out
}

#[test]
fn every_request_round_trips() {
    let requests = requests();
    assert!(requests.len() > 150, "{}", requests.len());
    for r in &requests {
        let json = to_json(r);
        // Through text, as the decision log writes it and replay reads it.
        let text = json.to_string();
        let back = from_json(serde_json::from_str(&text).expect("JSON")).expect("readable");
        assert_eq!(back.request, *r, "{text}");
        assert_eq!(back.arguments, ArgumentsForm::Complete);
    }
}

#[test]
fn a_round_tripped_request_is_decided_the_same() {
    let snapshot = reference();
    let mut allowed = 0;
    let requests = requests();
    for rules in [
        Rules::default(),
        Rules {
            allow_user_only: true,
            allow_undeclared_tools: true,
            allow_undeclared_arguments: true,
        },
    ] {
        for r in &requests {
            let back = from_json(to_json(r)).expect("readable").request;
            let (a, b) = (
                decide_with_rules(&snapshot, r, rules),
                decide_with_rules(&snapshot, &back, rules),
            );
            assert_eq!(a, b, "{}", to_json(r));
            allowed += usize::from(a.allow);
        }
    }
    // Both answers are exercised.
    assert!(allowed > 10 && allowed < requests.len(), "{allowed}");
}

#[test]
fn the_form_is_the_documented_one() {
    let mut r = DecisionRequest::new(action("tools/call"), Kind::Tool.uid("docs/get_document"));
    r.user = Some(Kind::User.uid("alice"));
    r.application = Some(Kind::Application.uid("corpassist"));
    r.server = Some(Kind::Server.uid("docs"));
    r.context.insert(
        "arguments".into(),
        json!({"document_id": "titan/q1-strategy"}),
    );
    r.token = Some(TokenFacts {
        scopes: vec!["docs.read".into()],
        claims: json!({"department": "engineering"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    });
    r.entities.push(RequestEntity {
        uid: Kind::User.uid("alice"),
        parents: vec![Kind::Group.uid("engineering")],
        attrs: Map::new(),
    });
    assert_eq!(
        to_json(&r),
        json!({
            "user": "Mcp::User::\"alice\"",
            "application": "Mcp::Application::\"corpassist\"",
            "action": "Mcp::Action::\"tools/call\"",
            "resource": "Mcp::Tool::\"docs/get_document\"",
            "server": "Mcp::Server::\"docs\"",
            "context": {"arguments": {"document_id": "titan/q1-strategy"}},
            "token": {"scopes": ["docs.read"], "claims": {"department": "engineering"}},
            "entities": [{"uid": "Mcp::User::\"alice\"", "parents": ["Mcp::Group::\"engineering\""], "attrs": {}}],
        })
    );
    // Nothing but the action and the resource: no optional key.
    let bare = DecisionRequest::new(action("ping"), Kind::Server.uid("docs"));
    assert_eq!(
        to_json(&bare),
        json!({"action": "Mcp::Action::\"ping\"", "resource": "Mcp::Server::\"docs\"", "context": {}})
    );
}

#[test]
fn omitted_and_redacted_arguments_are_said() {
    let mut r = DecisionRequest::new(action("tools/call"), Kind::Tool.uid("docs/get_document"));
    r.context.insert(
        "arguments".into(),
        json!({"document_id": "x", "token": "t"}),
    );
    r.context
        .insert("request".into(), json!({"source_ip": "10.0.0.1"}));
    let omitted = Parts {
        form: ArgumentsForm::Omitted,
        ..Parts::of(&r)
    }
    .to_json();
    assert_eq!(omitted["arguments"], "omitted");
    assert_eq!(
        omitted["context"],
        json!({"request": {"source_ip": "10.0.0.1"}})
    );
    let back = from_json(omitted).expect("readable");
    assert_eq!(back.arguments, ArgumentsForm::Omitted);
    assert!(!back.request.context.contains_key("arguments"));

    let redacted_args = json!({"document_id": "x", "token": "[REDACTED]"});
    let redacted = Parts {
        arguments: Some(&redacted_args),
        form: ArgumentsForm::Redacted,
        ..Parts::of(&r)
    }
    .to_json();
    assert_eq!(redacted["arguments"], "redacted");
    assert_eq!(redacted["context"]["arguments"], redacted_args);
    let back = from_json(redacted).expect("readable");
    assert_eq!(back.arguments, ArgumentsForm::Redacted);
    assert_eq!(back.request.context["arguments"], redacted_args);
}

#[test]
fn malformed_forms_are_refused_with_a_reason() {
    let ok = json!({"action": "Mcp::Action::\"ping\"", "resource": "Mcp::Server::\"docs\"", "context": {}});
    assert!(from_json(ok.clone()).is_ok());
    let with = |key: &str, v: Value| {
        let mut o = ok.clone();
        o[key] = v;
        from_json(o).expect_err("refused").to_string()
    };
    assert_eq!(
        with("user", json!("alice")),
        "`user` is not a Cedar uid: `alice`"
    );
    assert_eq!(with("user", json!(3)), "`user` is not a Cedar uid: `3`");
    assert_eq!(
        with("context", json!([])),
        "`context` must be a JSON object"
    );
    assert_eq!(with("surprise", json!(1)), "unknown member `surprise`");
    assert_eq!(
        with("arguments", json!("lost")),
        "`arguments` must be `\"omitted\"` or `\"redacted\"`"
    );
    assert_eq!(
        with("token", json!({"scopes": [1]})),
        "`token.scopes` must be an array of strings"
    );
    assert_eq!(
        with(
            "entities",
            json!([{"uid": "Mcp::User::\"a\"", "parents": ["nope"]}])
        ),
        "`entities[].parents` is not a Cedar uid: `nope`"
    );
    assert_eq!(
        with("entities", json!([{"parents": []}])),
        "`entities[].uid` is missing"
    );
    let mut no_action = ok.clone();
    no_action.as_object_mut().map(|o| o.remove("action"));
    assert_eq!(
        from_json(no_action).expect_err("refused").to_string(),
        "`action` is missing"
    );
    assert_eq!(
        from_json(json!([])).expect_err("refused").to_string(),
        "`input` must be a JSON object"
    );
    // A uid cache is asked for every uid.
    let mut asked = Vec::new();
    let r = from_json_with(ok, &mut |s: &str| {
        asked.push(s.to_owned());
        EntityUid::from_str(s).ok()
    })
    .expect("readable");
    assert_eq!(r.request.resource, uid("Mcp::Server::\"docs\""));
    assert_eq!(asked.len(), 2);
}
