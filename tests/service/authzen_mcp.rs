//! The AuthZEN MCP binding profile on the reference policies (`policies/`): subject
//! `user`, action `tools/call`, resource `tool` with id `server/name`, the acting
//! application in `context.agent`; bearer tokens whose identity wins.

use std::path::Path;

use axum::http::StatusCode;
use mcp_authz::config::{Config, Overrides};
use mcp_authz::identity::Resolver;
use serde_json::{Value, json};

use crate::support::inproc::{self, app, app_of, decision, post, post_with, state_on};
use crate::support::tokens::{self, demo_token as token};
use crate::support::{reference_arguments, reference_policies, repo};

fn call(user: &str, agent: Option<&str>, tool: &str) -> Value {
    let mut body = json!({
        "subject": { "type": "user", "id": user },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": tool },
    });
    let mut context = serde_json::Map::new();
    if let Some(a) = agent {
        context.insert("agent".into(), json!(a));
    }
    if let Some(arguments) = reference_arguments(tool) {
        context.insert("arguments".into(), arguments);
    }
    if !context.is_empty() {
        body["context"] = Value::Object(context);
    }
    body
}

#[tokio::test]
async fn both_principals_decide() {
    let app = app(&reference_policies());
    assert!(
        decision(
            &app,
            &call("alice", Some("corpassist"), "docs/summarize_document")
        )
        .await
    );
    assert!(
        decision(
            &app,
            &call("alice", Some("corpassist"), "projects/get_project_lead")
        )
        .await
    );
    // dave may delete documents, CorpAssist never does.
    assert!(
        !decision(
            &app,
            &call("dave", Some("corpassist"), "docs/delete_document")
        )
        .await
    );
    // The summarizer only searches and summarizes.
    assert!(
        !decision(
            &app,
            &call("alice", Some("summarizer"), "docs/get_document")
        )
        .await
    );
    // `context.application` works as `context.agent`, and so does an entity object.
    let mut body = call("alice", None, "docs/get_document");
    body["context"]["application"] = json!("corpassist");
    assert!(decision(&app, &body).await);
    body["context"]["application"] = Value::Null;
    body["context"]["agent"] = json!({ "type": "application", "id": "summarizer" });
    assert!(!decision(&app, &body).await);
    // Qualified names work too.
    let body = json!({
        "subject": { "type": "Mcp::User", "id": "alice" },
        "action": { "name": "Mcp::Action::\"tools/call\"" },
        "resource": { "type": "Mcp::Tool", "id": "docs/get_document" },
        "context": { "agent": "corpassist", "arguments": reference_arguments("docs/get_document") }
    });
    assert!(decision(&app, &body).await);
}

#[tokio::test]
async fn explanation_shows_each_principal_and_the_forbidding_policies() {
    let app = app(&reference_policies());
    let mut body = call("dave", Some("corpassist"), "docs/delete_document");
    body["options"] = json!({ "explain": true });
    let r = post(&app, "/access/v1/evaluation", &body).await.json();
    assert_eq!(r["decision"], false);
    let evals = &r["context"]["evaluations"];
    assert_eq!(evals[0]["principal"], "Mcp::User::\"dave\"");
    assert_eq!(evals[0]["decision"], true);
    assert_eq!(evals[1]["principal"], "Mcp::Application::\"corpassist\"");
    assert_eq!(evals[1]["decision"], false);
    let ids: Vec<&str> = evals[1]["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["corpassist-never-deletes"]);
    assert_eq!(evals[1]["policies"][0]["file"], "applications.cedar");
    assert_eq!(evals[1]["policies"][0]["line"], 15);
}

/// Both reference servers have imported tools: a tool neither declares is denied
/// with a reason that names it, whatever the server-wide policies say (the relaxed
/// setting, `decisions.allow_undeclared_tools`, is in `typed_tools`).
#[tokio::test]
async fn undeclared_tools_of_an_imported_server_are_denied_with_a_reason() {
    let app = app(&reference_policies());
    for tool in ["docs/brand_new_tool", "projects/brand_new_tool"] {
        let mut body = call("alice", Some("corpassist"), tool);
        body["options"] = json!({ "explain": true });
        let r = post(&app, "/access/v1/evaluation", &body).await.json();
        assert_eq!(r["decision"], false, "{tool}: {r}");
        let reason = r["context"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("brand_new_tool") && reason.contains("not declared"),
            "{tool}: {r}"
        );
    }
}

#[tokio::test]
async fn application_only_requests() {
    let app = app(&reference_policies());
    let body = |app_id: &str, tool: &str| {
        json!({
            "subject": { "type": "application", "id": app_id },
            "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": tool },
            "context": { "arguments": reference_arguments(tool) },
        })
    };
    assert!(decision(&app, &body("corpassist", "docs/get_document")).await);
    assert!(!decision(&app, &body("summarizer", "docs/get_document")).await);
    // Approved applications update issues only on behalf of a user.
    assert!(!decision(&app, &body("ops-console", "projects/update_issue")).await);
    assert!(
        decision(
            &app,
            &call("alice", Some("ops-console"), "projects/update_issue")
        )
        .await
    );
}

#[tokio::test]
async fn tool_arguments_are_typed_by_the_schema() {
    let app = app(&reference_policies());
    let with_args = |args: Value| {
        let mut b = call("alice", Some("corpassist"), "docs/search_documents");
        b["context"]["arguments"] = args;
        b
    };
    assert!(
        decision(
            &app,
            &with_args(json!({ "query": "titan", "max_results": 10 }))
        )
        .await
    );
    assert!(
        !decision(
            &app,
            &with_args(json!({ "query": "titan", "max_results": 500 }))
        )
        .await
    );
    // The wrong type is a deny, never coerced; so is a missing required argument,
    // and an argument the tool does not declare.
    assert!(
        !decision(
            &app,
            &with_args(json!({ "query": "x", "max_results": "10" }))
        )
        .await
    );
    assert!(!decision(&app, &with_args(json!({ "max_results": 10 }))).await);
    assert!(!decision(&app, &with_args(json!({ "query": "x", "unknown": [1, 2] }))).await);
    assert!(!decision(&app, &with_args(json!({ "query": "x", "limit": 5 }))).await);
}

#[tokio::test]
async fn searches_on_the_mcp_model() {
    let app = app(&reference_policies());
    let r = post(
        &app,
        "/access/v1/search/resource",
        &json!({
            "subject": { "type": "user", "id": "alice" },
            "action": { "name": "tools/call" },
            "resource": { "type": "tool" },
            "context": { "agent": "summarizer" }
        }),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let json = r.json();
    let ids: Vec<&str> = json["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["docs/search_documents", "docs/summarize_document"]);
    let r = post(
        &app,
        "/access/v1/search/subject",
        &json!({
            "subject": { "type": "user" },
            "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": "projects/update_issue" },
            "context": { "agent": "ops-console" }
        }),
    )
    .await
    .json();
    assert_eq!(r["results"], json!([{ "type": "user", "id": "alice" }]));
    let r = post(
        &app,
        "/access/v1/search/action",
        &json!({
            "subject": { "type": "user", "id": "alice" },
            "resource": { "type": "tool", "id": "docs/get_document" },
            "context": { "agent": "corpassist" }
        }),
    )
    .await
    .json();
    assert_eq!(r["results"], json!([{ "name": "tools/call" }]));
}

#[tokio::test]
async fn ambiguous_names_are_bad_requests_and_unknown_types_deny() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("s.cedarschema"), r#"
        namespace A { entity User; entity Doc; action "read" appliesTo { principal: User, resource: Doc }; action "only_a" appliesTo { principal: User, resource: Doc }; }
        namespace B { entity User; entity Doc; action "read" appliesTo { principal: User, resource: Doc }; }
    "#).expect("write");
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"
        permit (principal == A::User::"u", action == A::Action::"read", resource);
        permit (principal == B::User::"u", action == B::Action::"read", resource);
        permit (principal, action == A::Action::"only_a", resource);
    "#,
    )
    .expect("write");
    let app = app(dir.path());
    let body = |action: &str, subject_type: &str| {
        json!({
            "subject": { "type": subject_type, "id": "u" },
            "action": { "name": action },
            "resource": { "type": "doc", "id": "d" },
        })
    };
    // `read` is declared in both namespaces: it must be qualified.
    let r = post(&app, "/access/v1/evaluation", &body("read", "user")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("ambiguous"), "{}", r.text);
    // Qualified, the action's namespace picks `B::User` and `B::Doc`.
    assert!(decision(&app, &body("B::Action::\"read\"", "user")).await);
    assert!(decision(&app, &body("only_a", "user")).await);
    // An unknown type is a deny.
    assert!(!decision(&app, &body("only_a", "spaceship")).await);
}

async fn with_tokens() -> axum::Router {
    let path = repo().join("examples/identity/mcp-authz.toml");
    let config =
        Config::load(Some(&path), &Default::default(), &Overrides::default()).expect("config");
    let resolver = Resolver::new(&config.identity, &config.base_dir)
        .await
        .expect("resolver");
    app_of(state_on(
        &config.policies,
        Default::default(),
        Some(resolver),
    ))
}

#[tokio::test]
async fn a_verified_token_wins_over_the_body() {
    let app = with_tokens().await;
    let bearer = format!("Bearer {}", token("erin"));
    // erin (engineering, via corpassist) is not in the entity data: her token's groups count.
    let body = call("mallory", Some("summarizer"), "docs/get_document");
    let r = post_with(
        &app,
        "/access/v1/evaluation",
        &body,
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({ "decision": true }))
    );
    let mut explained = body.clone();
    explained["options"] = json!({ "explain": true });
    let r = post_with(
        &app,
        "/access/v1/evaluation",
        &explained,
        &[("authorization", &bearer)],
    )
    .await
    .json();
    assert_eq!(
        r["context"]["evaluations"][0]["principal"],
        "Mcp::User::\"erin\""
    );
    assert_eq!(
        r["context"]["evaluations"][1]["principal"],
        "Mcp::Application::\"corpassist\""
    );
    // frank is a contractor: no finance documents.
    let mut finance = call("frank", None, "docs/get_document");
    finance["context"] = json!({ "arguments": { "document_id": "finance/budget" } });
    let r = post_with(
        &app,
        "/access/v1/evaluation",
        &finance,
        &[("authorization", &format!("Bearer {}", token("frank")))],
    )
    .await;
    assert_eq!(r.json(), json!({ "decision": false }));
}

#[tokio::test]
async fn an_invalid_token_is_a_401_with_a_challenge() {
    let app = with_tokens().await;
    let body = call("alice", Some("corpassist"), "docs/get_document");
    let mut tampered = token("erin");
    tampered.pop();
    tampered.push('A');
    for value in [
        format!("Bearer {tampered}"),
        "Bearer not-a-jwt".to_owned(),
        "Basic dXNlcjpwdw==".to_owned(),
    ] {
        let r = post_with(
            &app,
            "/access/v1/evaluation",
            &body,
            &[("authorization", &value)],
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{value}");
        let challenge = r.header("www-authenticate").expect("challenge");
        assert!(
            challenge.starts_with("Bearer realm=\"mcp-authz\""),
            "{challenge}"
        );
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(!r.text.contains(&tampered));
    }
    // Batches and searches too.
    let r = post_with(
        &app,
        "/access/v1/evaluations",
        &json!({ "evaluations": [body.clone()] }),
        &[("authorization", "Bearer x.y.z")],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Without issuers a token is refused as well.
    let plain = inproc::app(&reference_policies());
    let r = post_with(
        &plain,
        "/access/v1/evaluation",
        &body,
        &[("authorization", &format!("Bearer {}", token("erin")))],
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").is_some());
}

/// The router on the reference policies with the test issuer's keys in a JWKS
/// file (tokens signed here, with or without `azp`).
async fn with_test_issuer(dir: &Path) -> (axum::Router, tokens::TestKey) {
    let key = tokens::TestKey::rsa(1, "authzen");
    let resolver = tokens::file_resolver(dir, &[&key]).await;
    (
        app_of(state_on(
            &reference_policies(),
            Default::default(),
            Some(resolver),
        )),
        key,
    )
}

#[tokio::test]
async fn the_body_never_sets_what_the_service_fills() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, key) = with_test_issuer(dir.path()).await;
    let service_token = key.token(json!({ "sub": null, "azp": "ops-console" }));
    let mallory = json!({ "type": "Mcp::User", "id": "mallory" });
    let forged = [
        ("user", mallory.clone()),
        ("user", json!({ "__entity": mallory.clone() })),
        ("user", json!("mallory")),
        ("User", mallory.clone()),
        ("USER", mallory.clone()),
        ("\u{ff55}ser", mallory.clone()),
        ("server", json!("projects")),
        ("Server", json!({ "type": "Mcp::Server", "id": "projects" })),
        ("scopes", json!(["projects.admin"])),
        ("Scopes", json!(["projects.admin"])),
        ("claims", json!({ "groups": ["project-ops"] })),
        ("cl-aims", json!({})),
    ];
    for (key, value) in forged {
        // The application-only request that `approved-apps-update-issues` allows
        // only with a user.
        let body = json!({
            "subject": { "type": "application", "id": "ops-console" },
            "action": { "name": "tools/call" },
            "resource": { "type": "tool", "id": "projects/update_issue" },
            "context": { key: value.clone() }
        });
        let plain = post(&app, "/access/v1/evaluation", &body).await;
        assert_eq!(
            plain.status,
            StatusCode::BAD_REQUEST,
            "{key}: {}",
            plain.text
        );
        assert!(
            plain.text.contains("only the service fills"),
            "{}",
            plain.text
        );
        // A verified service token does not make it acceptable either.
        let with_token = post_with(
            &app,
            "/access/v1/evaluation",
            &body,
            &[("authorization", &format!("Bearer {service_token}"))],
        )
        .await;
        assert_eq!(
            with_token.status,
            StatusCode::BAD_REQUEST,
            "{key}: {}",
            with_token.text
        );
        // In a batch only that item fails, with a deny.
        let batch = json!({ "evaluations": [body, call("alice", Some("corpassist"), "docs/get_document")] });
        let r = post(&app, "/access/v1/evaluations", &batch).await.json();
        assert_eq!(r["evaluations"][0]["decision"], false, "{key}: {r}");
        assert_eq!(r["evaluations"][1]["decision"], true, "{key}: {r}");
    }
    // Without the forged user the application alone is denied: the policy needs a user.
    let body = json!({
        "subject": { "type": "application", "id": "ops-console" },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": "projects/update_issue" },
    });
    assert!(!decision(&app, &body).await);
}

#[tokio::test]
async fn a_user_needs_an_application_and_a_named_one_is_never_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, key) = with_test_issuer(dir.path()).await;
    // dave may delete documents; no application says who acts for him.
    let lone = call("dave", None, "docs/delete_document");
    let r = post(
        &app,
        "/access/v1/evaluation",
        &json!({ "subject": lone["subject"], "action": lone["action"], "resource": lone["resource"],
                 "options": { "explain": true } }),
    )
    .await
    .json();
    assert_eq!(r["decision"], false, "{r}");
    assert!(
        r["context"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("names no application"),
        "{r}"
    );
    // A token without `azp` (or with the client in an unconfigured claim) for dave.
    for claims in [
        json!({ "sub": "dave", "azp": null }),
        json!({ "sub": "dave", "azp": null, "cid": "corpassist" }),
    ] {
        let token = key.token(claims.clone());
        let auth = format!("Bearer {token}");
        let r = post_with(
            &app,
            "/access/v1/evaluation",
            &lone,
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(r.json(), json!({ "decision": false }), "{claims}");
        // The application the body names is kept: CorpAssist never deletes...
        let named = call("dave", Some("corpassist"), "docs/delete_document");
        let r = post_with(
            &app,
            "/access/v1/evaluation",
            &named,
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(r.json(), json!({ "decision": false }), "{claims}");
        // ...but reads, for an employee.
        let read = call("dave", Some("corpassist"), "docs/get_document");
        let r = post_with(
            &app,
            "/access/v1/evaluation",
            &read,
            &[("authorization", &auth)],
        )
        .await;
        assert_eq!(r.json(), json!({ "decision": true }), "{claims}");
    }
}

#[tokio::test]
async fn argument_names_that_read_as_declared_ones_are_denied() {
    let app = app(&reference_policies());
    let mut body = call("alice", Some("corpassist"), "docs/search_documents");
    body["context"]["arguments"] = json!({ "query": "titan", "max_results": 10 });
    assert!(decision(&app, &body).await);
    for alias in [
        "MAX_RESULTS",
        "Max_Results",
        "max_re\u{17f}ults",
        "maxResults",
        "max-results",
        "\u{ff2d}ax_results",
    ] {
        body["context"]["arguments"] = json!({ "query": "titan", alias: 500 });
        let mut explained = body.clone();
        explained["options"] = json!({ "explain": true });
        let r = post(&app, "/access/v1/evaluation", &explained).await.json();
        assert_eq!(r["decision"], false, "{alias}: {r}");
        let reason = r["context"]["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("reads as the declared `arguments.max_results`"),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn another_spelling_of_the_agent_is_a_bad_request() {
    let app = app(&reference_policies());
    for context in [
        json!({ "agent": "corpassist", "Agent": "summarizer" }),
        json!({ "AGENT": "summarizer" }),
        json!({ "agent": "corpassist", "a-gent": "summarizer" }),
        json!({ "Application": "summarizer" }),
    ] {
        let mut body = call("alice", None, "docs/get_document");
        body["context"] = context.clone();
        let r = post(&app, "/access/v1/evaluation", &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{context}: {}", r.text);
    }
}
