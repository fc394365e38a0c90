use std::path::Path;

use serde_json::json;

use super::*;
use crate::mcp::{Kind, action, qualified_id};

fn reference() -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    Snapshot::load(&dir, 7).expect("reference policies load")
}

fn snapshot_from(files: &[(&str, &str)]) -> Snapshot {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    Snapshot::load(dir.path(), 1).expect("policies load")
}

/// A call of `server/tool`, with its required arguments when it is a reference tool.
fn tool_call(user: Option<&str>, app: Option<&str>, server: &str, tool: &str) -> DecisionRequest {
    let mut r = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid(&qualified_id(server, tool)),
    );
    r.user = user.map(|u| Kind::User.uid(u));
    r.application = app.map(|a| Kind::Application.uid(a));
    r.server = Some(Kind::Server.uid(server));
    if let Some(arguments) = crate::policy::reference_arguments(server, tool) {
        r.context.insert("arguments".into(), arguments);
    }
    r
}

fn with_args(mut r: DecisionRequest, args: Value) -> DecisionRequest {
    r.context.insert("arguments".into(), args);
    r
}

#[test]
fn both_principals_allow() {
    let s = reference();
    let d = decide(
        &s,
        &tool_call(Some("alice"), Some("corpassist"), "docs", "get_document"),
    );
    assert!(d.allow, "{d:?}");
    assert_eq!(d.generation, 7);
    assert_eq!(d.evaluations.len(), 2);
    assert_eq!(d.evaluations[0].role, Role::User);
    assert_eq!(d.evaluations[0].policies, vec!["employees-use-docs"]);
    assert_eq!(d.evaluations[1].role, Role::Application);
    assert_eq!(d.evaluations[1].policies, vec!["corpassist-read-docs"]);
}

#[test]
fn user_allows_but_application_denies() {
    let s = reference();
    // dave is a document administrator; CorpAssist never deletes.
    let d = decide(
        &s,
        &tool_call(Some("dave"), Some("corpassist"), "docs", "delete_document"),
    );
    assert!(!d.allow);
    assert!(d.evaluations[0].allow, "{d:?}");
    assert!(!d.evaluations[1].allow);
    assert_eq!(d.evaluations[1].policies, vec!["corpassist-never-deletes"]);
    assert!(
        d.reason.contains("corpassist-never-deletes"),
        "{}",
        d.reason
    );
}

#[test]
fn application_allows_but_user_denies() {
    let s = reference();
    // alice is no document administrator; the summarizer would not delete anyway,
    // so use a tool the application may use and the user may not.
    let d = decide(
        &s,
        &tool_call(
            Some("mallory"),
            Some("summarizer"),
            "docs",
            "search_documents",
        ),
    );
    assert!(!d.allow);
    assert!(!d.evaluations[0].allow);
    assert!(d.evaluations[0].policies.is_empty());
    assert!(d.evaluations[1].allow, "{d:?}");
    assert!(
        d.reason.contains("no policy permits the user"),
        "{}",
        d.reason
    );
}

#[test]
fn both_deny() {
    let s = reference();
    let d = decide(
        &s,
        &tool_call(
            Some("alice"),
            Some("corpassist"),
            "projects",
            "update_issue",
        ),
    );
    assert!(!d.allow);
    assert!(d.evaluations.iter().all(|e| !e.allow), "{d:?}");
}

#[test]
fn user_alone_decides_alone() {
    let s = reference();
    let d = decide(
        &s,
        &tool_call(Some("dave"), None, "docs", "delete_document"),
    );
    assert!(d.allow, "{d:?}");
    assert_eq!(d.evaluations.len(), 1);
    let d = decide(
        &s,
        &tool_call(Some("alice"), None, "docs", "delete_document"),
    );
    assert!(!d.allow);
    assert_eq!(d.evaluations[0].policies, vec!["only-doc-admins-delete"]);
}

#[test]
fn application_alone_decides_alone() {
    let s = reference();
    let d = decide(
        &s,
        &tool_call(None, Some("corpassist"), "projects", "find_project"),
    );
    assert!(d.allow, "{d:?}");
    assert_eq!(d.evaluations.len(), 1);
    assert_eq!(d.evaluations[0].role, Role::Application);
    // Approved applications update issues only for a user.
    let d = decide(
        &s,
        &tool_call(None, Some("ops-console"), "projects", "update_issue"),
    );
    assert!(!d.allow);
}

#[test]
fn neither_principal_is_a_deny() {
    let s = reference();
    let d = decide(&s, &tool_call(None, None, "docs", "get_document"));
    assert!(!d.allow);
    assert!(d.evaluations.is_empty());
    assert!(d.reason.contains("no user or application"));
}

#[test]
fn delegation_needs_an_approved_application() {
    let s = reference();
    assert!(
        decide(
            &s,
            &tool_call(
                Some("alice"),
                Some("ops-console"),
                "projects",
                "update_issue"
            )
        )
        .allow
    );
    assert!(
        !decide(
            &s,
            &tool_call(Some("bob"), Some("ops-console"), "projects", "update_issue")
        )
        .allow
    );
}

#[test]
fn declared_arguments_are_typed_and_evaluated() {
    let s = reference();
    let base = || {
        tool_call(
            Some("alice"),
            Some("corpassist"),
            "docs",
            "search_documents",
        )
    };
    assert!(
        decide(
            &s,
            &with_args(base(), json!({ "query": "titan", "max_results": 10 }))
        )
        .allow
    );
    let d = decide(
        &s,
        &with_args(base(), json!({ "query": "titan", "max_results": 500 })),
    );
    assert!(!d.allow);
    assert_eq!(d.evaluations[1].policies, vec!["corpassist-bounded-search"]);
}

#[test]
fn undeclared_arguments_and_context_are_dropped() {
    let s = reference();
    let mut r = with_args(
        tool_call(
            Some("alice"),
            Some("corpassist"),
            "docs",
            "search_documents",
        ),
        json!({ "query": "titan" }),
    );
    r.context.insert("something_else".into(), json!(42));
    let d = decide(&s, &r);
    assert!(d.allow, "{d:?}");
    // An argument `docs/search_documents` does not declare (policies/tools/docs.cedarschema):
    // dropped only when the rules say so, denied by default.
    r.context.insert(
        "arguments".into(),
        json!({ "query": "titan", "not_declared": { "deep": [1, 2] } }),
    );
    let relaxed = Rules {
        allow_undeclared_arguments: true,
        ..Rules::default()
    };
    assert!(decide_with_rules(&s, &r, relaxed).allow);
    let d = decide(&s, &r);
    assert!(!d.allow);
    assert!(d.reason.to_string().contains("`not_declared`"), "{d:?}");
}

#[test]
fn declared_argument_of_the_wrong_type_is_a_deny_with_a_reason() {
    let s = reference();
    let r = with_args(
        tool_call(
            Some("alice"),
            Some("corpassist"),
            "docs",
            "search_documents",
        ),
        json!({ "query": 42 }),
    );
    let d = decide(&s, &r);
    assert!(!d.allow);
    assert!(d.evaluations.is_empty());
    assert!(
        d.reason.contains("context does not fit the schema"),
        "{}",
        d.reason
    );
    assert!(
        d.reason
            .contains("`arguments.query` should be a String, not an integer"),
        "{}",
        d.reason
    );
    // A string where a Long is declared is not coerced either.
    let r = with_args(
        tool_call(
            Some("alice"),
            Some("corpassist"),
            "docs",
            "search_documents",
        ),
        json!({ "max_results": "10" }),
    );
    assert!(!decide(&s, &r).allow);
}

#[test]
fn extension_types_are_read_from_strings() {
    let s = reference();
    let mut r = tool_call(Some("alice"), Some("corpassist"), "docs", "get_document");
    r.context
        .insert("request".into(), json!({ "source_ip": "10.1.2.3" }));
    assert!(decide(&s, &r).allow);
    r.context
        .insert("request".into(), json!({ "source_ip": "not an address" }));
    let d = decide(&s, &r);
    assert!(!d.allow);
}

#[test]
fn unknown_tool_is_synthesized_under_its_server() {
    let s = reference();
    // Not in the entity data, but the server-wide grant and the application's covers it
    // (once undeclared tools of the imported `docs` server are allowed at all).
    let relaxed = Rules {
        allow_undeclared_tools: true,
        ..Rules::default()
    };
    let d = decide_with_rules(
        &s,
        &tool_call(Some("alice"), Some("corpassist"), "docs", "brand_new_tool"),
        relaxed,
    );
    assert!(d.allow, "{d:?}");
    // By default: denied, the server's tools being imported.
    let d = decide(
        &s,
        &tool_call(Some("alice"), Some("corpassist"), "docs", "brand_new_tool"),
    );
    assert!(!d.allow, "{d:?}");
    // Without a server there is no parent, and no grant.
    let mut r = tool_call(Some("alice"), Some("corpassist"), "docs", "brand_new_tool");
    r.server = None;
    assert!(!decide(&s, &r).allow);
}

#[test]
fn unknown_resource_and_prompt_are_synthesized_too() {
    let s = reference();
    let mut r = DecisionRequest::new(
        action("resources/read"),
        Kind::Resource.uid("docs/docs://new/thing"),
    );
    r.user = Some(Kind::User.uid("bob"));
    r.application = Some(Kind::Application.uid("corpassist"));
    r.server = Some(Kind::Server.uid("docs"));
    assert!(decide(&s, &r).allow);
    // `docs` has imported prompts: one it does not declare is synthesized only where
    // undeclared prompts are allowed, and denied by default.
    let mut r = DecisionRequest::new(action("prompts/get"), Kind::Prompt.uid("docs/new_prompt"));
    r.user = Some(Kind::User.uid("bob"));
    r.server = Some(Kind::Server.uid("docs"));
    let relaxed = Rules {
        allow_user_only: true,
        allow_undeclared_tools: true,
        ..Rules::default()
    };
    assert!(decide_with_rules(&s, &r, relaxed).allow);
    let denied = decide(&s, &r);
    assert!(!denied.allow);
    assert!(
        denied
            .reason
            .contains("prompt `new_prompt` is not declared for server `docs`"),
        "{}",
        denied.reason.as_str()
    );
}

#[test]
fn unknown_action_is_a_deny() {
    let s = reference();
    let mut r = tool_call(Some("alice"), Some("corpassist"), "docs", "get_document");
    r.action = action("tools/frobnicate");
    let d = decide(&s, &r);
    assert!(!d.allow);
    assert!(d.reason.contains("unknown action"), "{}", d.reason);
}

#[test]
fn resource_of_the_wrong_type_is_a_deny() {
    let s = reference();
    let mut r = tool_call(Some("alice"), Some("corpassist"), "docs", "get_document");
    r.resource = Kind::Server.uid("docs");
    let d = decide(&s, &r);
    assert!(!d.allow);
    assert!(d.evaluations.iter().all(|e| !e.errors.is_empty()), "{d:?}");
}

#[test]
fn token_groups_become_parents_for_this_request_only() {
    let s = reference();
    let mut r = tool_call(Some("erin"), Some("corpassist"), "docs", "get_document");
    assert!(!decide(&s, &r).allow);
    r.entities.push(RequestEntity {
        uid: Kind::User.uid("erin"),
        parents: vec![Kind::Group.uid("engineering")],
        attrs: Map::new(),
    });
    assert!(decide(&s, &r).allow);
    // A known user keeps the groups of the entity data and gains the token's.
    let mut r = tool_call(Some("bob"), Some("ops-console"), "projects", "update_issue");
    assert!(!decide(&s, &r).allow);
    r.entities.push(RequestEntity {
        uid: Kind::User.uid("bob"),
        parents: vec![Kind::Group.uid("project-ops")],
        attrs: Map::new(),
    });
    assert!(decide(&s, &r).allow);
    // The snapshot itself is unchanged.
    assert!(
        !decide(
            &s,
            &tool_call(Some("bob"), Some("ops-console"), "projects", "update_issue")
        )
        .allow
    );
}

#[test]
fn request_entity_data_that_violates_the_schema_is_a_deny() {
    let s = reference();
    let mut r = tool_call(Some("erin"), Some("corpassist"), "docs", "get_document");
    r.entities.push(RequestEntity {
        uid: Kind::User.uid("erin"),
        parents: vec![Kind::Group.uid("engineering")],
        attrs: [("department".to_owned(), json!(17))].into_iter().collect(),
    });
    let d = decide(&s, &r);
    assert!(!d.allow);
    assert!(d.reason.contains("does not fit the schema"), "{}", d.reason);
}

/// The slice (indexed) and the whole entity data (unindexed, an upsert as Cedar is
/// given it) check request entity data against the schema alike, and of several
/// entries for one entity the last counts.
#[test]
fn request_entity_data_is_checked_and_replaced_alike_on_the_slice_and_the_whole_data() {
    let s = reference();
    let erin = |parents: Vec<EntityUid>| RequestEntity {
        uid: Kind::User.uid("erin"),
        parents,
        attrs: Map::new(),
    };
    let base = tool_call(Some("erin"), Some("corpassist"), "docs", "get_document");
    let both = |r: &DecisionRequest| {
        let (indexed, whole) = (decide(&s, r), decide_unindexed(&s, r));
        assert_eq!(indexed, whole, "{r:?}");
        indexed
    };
    // A user may only be in groups: a server as a parent does not fit the schema,
    // on the fast path of a merge (no attributes) too.
    let mut r = base.clone();
    r.entities.push(erin(vec![Kind::Server.uid("docs")]));
    let d = both(&r);
    assert!(!d.allow);
    assert!(d.reason.contains("does not fit the schema"), "{}", d.reason);
    // Every entry is checked, even one a later entry replaces.
    let mut r = base.clone();
    r.entities.push(erin(vec![Kind::Server.uid("docs")]));
    r.entities.push(erin(vec![Kind::Group.uid("engineering")]));
    let d = both(&r);
    assert!(
        !d.allow && d.reason.contains("does not fit the schema"),
        "{d:?}"
    );
    // The last entry counts: erin is an engineer only when the last entry says so.
    let mut r = base.clone();
    r.entities.push(erin(vec![Kind::Group.uid("engineering")]));
    assert!(both(&r).allow);
    r.entities.push(erin(Vec::new()));
    assert!(!both(&r).allow);
    let mut r = base;
    r.entities.push(erin(Vec::new()));
    r.entities.push(erin(vec![Kind::Group.uid("engineering")]));
    assert!(both(&r).allow);

    // Entries that change nothing (groups the entity data already gives, attributes
    // it already sets) decide as no entry, unless another entry for the entity
    // comes first.
    let alice = |parents: &[&str], attrs: Value| RequestEntity {
        uid: Kind::User.uid("alice"),
        parents: parents.iter().map(|g| Kind::Group.uid(g)).collect(),
        attrs: attrs.as_object().cloned().unwrap_or_default(),
    };
    let base = tool_call(
        Some("alice"),
        Some("ops-console"),
        "projects",
        "update_issue",
    );
    let plain = both(&base);
    for entry in [
        alice(&["project-ops"], json!({})),
        alice(&["engineering", "employees"], json!({ "department": 17 })),
        alice(&[], json!({})),
    ] {
        let mut r = base.clone();
        r.entities.push(entry);
        assert_eq!(both(&r), plain);
    }
    let mut r = base.clone();
    r.entities.push(alice(&["finance"], json!({})));
    r.entities.push(alice(&["project-ops"], json!({})));
    assert_eq!(both(&r), plain);
    let bob = |group: &str| RequestEntity {
        uid: Kind::User.uid("bob"),
        parents: vec![Kind::Group.uid(group)],
        attrs: Map::new(),
    };
    let mut r = tool_call(Some("bob"), Some("ops-console"), "projects", "update_issue");
    r.entities.push(bob("project-ops"));
    assert!(both(&r).allow);
    r.entities.push(bob("finance"));
    assert!(!both(&r).allow);
    // Not a change of nothing: a new attribute, a new group, a group of the wrong type.
    for entry in [
        alice(&[], json!({ "undeclared": 1 })),
        alice(&["doc-admins"], json!({})),
    ] {
        let mut r = base.clone();
        r.entities.push(entry);
        both(&r);
    }
    let mut r = base;
    r.entities.push(RequestEntity {
        uid: Kind::User.uid("alice"),
        parents: vec![Kind::Server.uid("projects")],
        attrs: Map::new(),
    });
    assert!(!both(&r).allow);
}

const TINY_SCHEMA: &str = r#"namespace Mcp {
    entity User { level?: Long };
    entity Application;
    entity Server;
    entity Tool in [Server];
    action "tools/call" appliesTo { principal: [User, Application], resource: Tool, context: { n?: Long } };
}"#;

#[test]
fn an_evaluation_error_is_a_deny_even_when_a_permit_matches() {
    // The forbid fails at run time (overflow); the permit alone would allow.
    let s = snapshot_from(&[
        ("s.cedarschema", TINY_SCHEMA),
        (
            "p.cedar",
            r#"@id("all") permit(principal, action, resource);
               @id("overflow") forbid(principal, action, resource) when { context has n && context.n * 9223372036854775807 > 0 };"#,
        ),
    ]);
    let mut r = DecisionRequest::new(action("tools/call"), Kind::Tool.uid("s/t"));
    r.user = Some(Kind::User.uid("u"));
    assert!(decide(&s, &r).allow);
    r.context.insert("n".into(), json!(5));
    let d = decide(&s, &r);
    assert!(!d.allow, "{d:?}");
    assert!(d.evaluations[0].errors[0].contains("overflow"), "{d:?}");
}

#[test]
fn policy_ids_are_stable() {
    let s = snapshot_from(&[
        ("s.cedarschema", TINY_SCHEMA),
        (
            "p.cedar",
            r#"permit(principal, action, resource) when { context has n && context.n == 1 };
               @id("named") permit(principal, action, resource) when { context has n && context.n == 2 };
               permit(principal, action, resource) when { context has n && context.n == 3 };"#,
        ),
    ]);
    let mut r = DecisionRequest::new(action("tools/call"), Kind::Tool.uid("s/t"));
    r.application = Some(Kind::Application.uid("a"));
    let ids = |n: i64, r: &mut DecisionRequest| {
        r.context.insert("n".into(), json!(n));
        decide(&s, r).evaluations[0].policies.clone()
    };
    assert_eq!(ids(1, &mut r), vec!["p.cedar:0"]);
    assert_eq!(ids(2, &mut r), vec!["named"]);
    assert_eq!(ids(3, &mut r), vec!["p.cedar:2"]);
}

fn engine(rules: Rules) -> Engine {
    Engine::new(Arc::new(crate::policy::PolicyStore::from_snapshot(
        reference(),
    )))
    .with_rules(rules)
}

/// A decision of `engine` on its current snapshot, unrecorded.
fn evaluated(engine: &Engine, request: &DecisionRequest) -> Arc<Decision> {
    engine.evaluate(&engine.snapshot(), request)
}

/// A recorder that keeps what it is told.
#[derive(Debug, Default)]
struct Kept {
    decided: std::sync::Mutex<Vec<(Interface, bool, String, bool)>>,
    lookups: std::sync::Mutex<Vec<bool>>,
}

impl Recorder for Kept {
    fn decided(&self, d: Decided<'_>) {
        self.decided.lock().unwrap().push((
            d.interface,
            d.request.is_some(),
            d.outcome.decision_id.clone(),
            d.outcome.decision.allow,
        ));
    }

    fn cache_lookup(&self, hit: bool) {
        self.lookups.lock().unwrap().push(hit);
    }
}

#[test]
fn every_entry_reports_to_the_recorder_what_it_decided() {
    let kept = Arc::new(Kept::default());
    let engine = Engine::with_recorder(
        Arc::new(crate::policy::PolicyStore::from_snapshot(reference())),
        kept.clone(),
    )
    .with_cache(&CacheSettings::default());
    let snapshot = engine.snapshot();
    let meta = DecisionMeta::default();
    let allowed = tool_call(Some("alice"), Some("corpassist"), "docs", "get_document");
    let a = engine.decide(&snapshot, Interface::Cli, &allowed, &meta);
    let b = engine.decide(&snapshot, Interface::Authzen, &allowed, &meta);
    assert!(a.decision.allow && b.decision.allow);
    assert_ne!(a.decision_id, b.decision_id);
    let r = engine.reject(&snapshot, Interface::Grpc, "unreadable", &meta);
    assert!(!r.decision.allow);
    assert_eq!(r.decision.reason.kind(), ReasonKind::Rejected);
    assert_eq!(r.decision.reason, "unreadable");
    // A list's decisions are evaluated, never recorded one by one.
    let _ = engine.evaluate(&snapshot, &allowed);
    let decided = kept.decided.lock().unwrap().clone();
    assert_eq!(
        decided,
        vec![
            (Interface::Cli, true, a.decision_id, true),
            (Interface::Authzen, true, b.decision_id, true),
            (Interface::Grpc, false, r.decision_id, false),
        ]
    );
    // A miss, then hits (the cache serves the second decision and the evaluation).
    assert_eq!(*kept.lookups.lock().unwrap(), vec![false, true, true]);
}

#[test]
fn the_reason_says_what_kind_of_answer_a_decision_is() {
    let engine = engine(Rules::default());
    let kind = |request: &DecisionRequest| evaluated(&engine, request).reason.kind();
    assert_eq!(
        kind(&tool_call(
            Some("alice"),
            Some("corpassist"),
            "docs",
            "get_document"
        )),
        ReasonKind::Allowed
    );
    assert_eq!(
        kind(&tool_call(
            Some("alice"),
            Some("corpassist"),
            "docs",
            "delete_document"
        )),
        ReasonKind::Denied
    );
    assert_eq!(
        kind(&tool_call(None, None, "docs", "get_document")),
        ReasonKind::Invalid
    );
    assert_eq!(
        kind(&tool_call(Some("dave"), None, "docs", "delete_document")),
        ReasonKind::Rule
    );
}

#[test]
fn a_user_without_an_application_is_denied_unless_allowed() {
    // dave, a document administrator, may delete on his own; no application says
    // who acts for him.
    for (user, tool) in [
        ("dave", "delete_document"),
        ("alice", "get_document"),
        ("carol", "search_documents"),
    ] {
        let request = tool_call(Some(user), None, "docs", tool);
        let d = evaluated(&engine(Rules::default()), &request);
        assert!(!d.allow, "{user} {tool}: {d:?}");
        assert!(d.evaluations.is_empty(), "denied before evaluation: {d:?}");
        assert!(d.reason.contains("names no application"), "{}", d.reason);
        // The same request through the cache-less free function is the user's alone.
        let opened = evaluated(
            &engine(Rules {
                allow_user_only: true,
                ..Rules::default()
            }),
            &request,
        );
        assert_eq!(*opened, decide(&reference(), &request), "{user} {tool}");
    }
    let dave = evaluated(
        &engine(Rules {
            allow_user_only: true,
            ..Rules::default()
        }),
        &tool_call(Some("dave"), None, "docs", "delete_document"),
    );
    assert!(dave.allow, "{dave:?}");
    // An application alone, and a user with an application, are unaffected.
    for request in [
        tool_call(None, Some("corpassist"), "docs", "get_document"),
        tool_call(Some("alice"), Some("corpassist"), "docs", "get_document"),
    ] {
        assert_eq!(
            *evaluated(&engine(Rules::default()), &request),
            decide(&reference(), &request)
        );
    }
}

#[test]
fn service_filled_context_from_a_request_is_a_deny() {
    let s = reference();
    let mallory = json!({ "__entity": { "type": "Mcp::User", "id": "mallory" } });
    // The application-only request the approved-apps policy would allow if the
    // context could name a user.
    for (key, value) in [
        ("user", mallory.clone()),
        ("User", mallory.clone()),
        ("user", json!({ "type": "Mcp::User", "id": "mallory" })),
        ("scopes", json!(["projects.admin"])),
        ("claims", json!({ "groups": ["project-ops"] })),
        (
            "server",
            json!({ "__entity": { "type": "Mcp::Server", "id": "docs" } }),
        ),
        (
            "application",
            json!({ "__entity": { "type": "Mcp::Application", "id": "corpassist" } }),
        ),
    ] {
        let mut r = tool_call(None, Some("ops-console"), "projects", "update_issue");
        r.context.insert(key.into(), value);
        let d = decide(&s, &r);
        assert!(!d.allow, "{key}: {d:?}");
        assert!(d.reason.contains("only the service fills"), "{}", d.reason);
    }
}

#[cfg(test)]
mod typed;

#[test]
fn a_step_up_decides_again_only_where_a_scoped_policy_was_a_candidate() {
    let kept = Arc::new(Kept::default());
    let store = Arc::new(crate::policy::PolicyStore::from_snapshot(reference()));
    let engine = Engine::with_recorder(store, kept.clone()).with_cache(&CacheSettings::default());
    let snapshot = engine.snapshot();
    let read_only = TokenFacts {
        scopes: vec!["docs.read".into()],
        claims: Map::new(),
    };
    let lookups = || kept.lookups.lock().unwrap().len();
    // The ops console deletes for dave only with `docs.write`: its `@scopes` policy is
    // a candidate of the application's evaluation, and more scope lifts the deny.
    let mut scoped = tool_call(Some("dave"), Some("ops-console"), "docs", "delete_document");
    scoped.token = Some(read_only.clone());
    let denied = engine.evaluate(&snapshot, &scoped);
    assert!(!denied.allow, "{denied:?}");
    assert!(denied.evaluations.iter().any(|e| e.step_up.0));
    let before = lookups();
    assert_eq!(
        engine.step_up_scope(&snapshot, &scoped, &denied).as_deref(),
        Some("docs.read docs.write")
    );
    assert_eq!(lookups(), before + 1, "decided again with more scope");
    // Other denies with a token, where no `@scopes` policy can apply (another
    // application, another tool, another user): no second decision, no challenge.
    let mut denies = 0;
    for (user, app, tool) in [
        ("dave", "corpassist", "delete_document"),
        ("alice", "ops-console", "update_document"),
        ("mallory", "corpassist", "get_document"),
    ] {
        let mut plain = tool_call(Some(user), Some(app), "docs", tool);
        plain.token = Some(read_only.clone());
        let denied = engine.evaluate(&snapshot, &plain);
        if denied.allow {
            continue;
        }
        assert!(denied.evaluations.iter().all(|e| !e.step_up.0), "{plain:?}");
        let before = lookups();
        assert_eq!(engine.step_up_scope(&snapshot, &plain, &denied), None);
        assert_eq!(lookups(), before, "decided again: {plain:?}");
        denies += 1;
    }
    assert!(denies >= 2, "{denies} of the requests were denied");
    // A decision of another generation says nothing of this snapshot's candidates:
    // decided again.
    let mut stale = (*denied).clone();
    stale.generation += 1;
    stale
        .evaluations
        .iter_mut()
        .for_each(|e| e.step_up = StepUpHint(false));
    let before = lookups();
    assert_eq!(
        engine.step_up_scope(&snapshot, &scoped, &stale).as_deref(),
        Some("docs.read docs.write")
    );
    assert_eq!(lookups(), before + 1);
    // The hint is no part of the decision: the unindexed decision (every policy a
    // candidate) compares equal to the indexed one.
    assert_eq!(
        decide_unindexed(&snapshot, &scoped),
        decide(&snapshot, &scoped)
    );
}

#[test]
fn policy_ids_are_written_as_cedar_writes_them() {
    for raw in [
        "policy0",
        "docs: search, max 50",
        "a b~!",
        "",
        "a\"b",
        "it's",
        "back\\slash",
        "tab\there",
        "line\nbreak",
        "\u{7f}",
        "é",
        "x\u{301}",
        "\u{301}x",
        "日本",
        "nul\0",
    ] {
        let id = cedar_policy::PolicyId::new(raw);
        assert_eq!(super::policy_id_text(&id), id.to_string(), "{raw:?}");
    }
}
