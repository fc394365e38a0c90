//! The index's tricky cases, each checked two ways: the candidates are what
//! Cedar's scope semantics say, and the decision equals the unindexed one.

use std::path::Path;

use serde_json::Map;

use crate::authz::{DecisionRequest, RequestEntity, decide, decide_unindexed};
use crate::mcp::{Kind, action, qualified_id};
use crate::policy::Snapshot;

/// The reference policy directory plus `extra` as one more policy file.
fn reference_with(extra: &str) -> Snapshot {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().expect("tempdir");
    for sub in ["", "tools"] {
        let to = dir.path().join(sub);
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(reference.join(sub)).expect("reference policies") {
            let entry = entry.expect("entry");
            if entry.file_type().expect("type").is_file() {
                std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
            }
        }
    }
    std::fs::write(dir.path().join("extra.cedar"), extra).expect("write");
    Snapshot::load(dir.path(), 1).expect("policies load")
}

fn request(
    user: Option<&str>,
    app: Option<&str>,
    method: &str,
    resource: cedar_policy::EntityUid,
) -> DecisionRequest {
    let id = resource.id().unescaped().to_owned();
    let mut r = DecisionRequest::new(action(method), resource);
    r.user = user.map(|u| Kind::User.uid(u));
    r.application = app.map(|a| Kind::Application.uid(a));
    r.server = Some(Kind::Server.uid("docs"));
    if method == "tools/call"
        && let Some(arguments) = id
            .split_once('/')
            .and_then(|(server, t)| crate::policy::reference_arguments(server, t))
    {
        r.context.insert("arguments".into(), arguments);
    }
    r
}

fn tool(name: &str) -> cedar_policy::EntityUid {
    Kind::Tool.uid(&qualified_id("docs", name))
}

/// The candidate ids for `principal` (with the request's own entity data merged
/// the way `decide` merges it), sorted.
fn candidates(
    s: &Snapshot,
    principal: &cedar_policy::EntityUid,
    r: &DecisionRequest,
) -> Vec<String> {
    let entities = super::super::request_entities(s, r, super::Selection::Indexed)
        .expect("entities")
        .unwrap_or_else(|| s.entities.clone());
    let mut ids: Vec<String> = s
        .index
        .candidates(principal, &r.action, &r.resource, &entities)
        .into_iter()
        .map(ToString::to_string)
        .collect();
    ids.sort();
    ids
}

fn same_decision(s: &Snapshot, r: &DecisionRequest) {
    assert_eq!(decide(s, r), decide_unindexed(s, r), "{r:?}");
}

#[test]
fn principal_is_type_in_group_needs_both() {
    let s = reference_with(
        r#"
        @id("users-in-engineering")
        permit (principal is Mcp::User in Mcp::Group::"engineering", action in Mcp::Action::"tools/call", resource);
        @id("apps-in-approved")
        permit (principal is Mcp::Application in Mcp::Group::"approved-apps", action in Mcp::Action::"tools/call", resource);
        "#,
    );
    let r = request(
        Some("alice"),
        Some("ops-console"),
        "tools/call",
        tool("get_document"),
    );
    let alice = Kind::User.uid("alice");
    let ops = Kind::Application.uid("ops-console");
    let bob = Kind::User.uid("bob");
    assert!(candidates(&s, &alice, &r).contains(&"users-in-engineering".to_owned()));
    assert!(!candidates(&s, &alice, &r).contains(&"apps-in-approved".to_owned()));
    assert!(candidates(&s, &ops, &r).contains(&"apps-in-approved".to_owned()));
    assert!(!candidates(&s, &ops, &r).contains(&"users-in-engineering".to_owned()));
    // bob is in finance, not engineering.
    assert!(!candidates(&s, &bob, &r).contains(&"users-in-engineering".to_owned()));
    same_decision(&s, &r);
}

#[test]
fn resource_in_x_matches_x_itself_and_its_children_even_synthesized() {
    let s = reference_with(
        r#"
        @id("in-docs")
        forbid (principal, action, resource in Mcp::Server::"docs")
        when { context has request };
        @id("in-the-tool")
        forbid (principal, action in Mcp::Action::"tools/call", resource in Mcp::Tool::"docs/get_document")
        when { context has request };
        "#,
    );
    let alice = Kind::User.uid("alice");
    // The server itself: `resource in Mcp::Server::"docs"` holds for the server.
    let on_server = request(Some("alice"), None, "tools/list", Kind::Server.uid("docs"));
    assert!(candidates(&s, &alice, &on_server).contains(&"in-docs".to_owned()));
    assert!(!candidates(&s, &alice, &on_server).contains(&"in-the-tool".to_owned()));
    same_decision(&s, &on_server);
    // The tool itself: `resource in <the tool>` holds.
    let get = request(Some("alice"), None, "tools/call", tool("get_document"));
    let c = candidates(&s, &alice, &get);
    assert!(
        c.contains(&"in-docs".to_owned()) && c.contains(&"in-the-tool".to_owned()),
        "{c:?}"
    );
    same_decision(&s, &get);
    // A tool the entity data does not list is a child of its server for this request.
    let new_tool = request(Some("alice"), None, "tools/call", tool("brand_new"));
    let c = candidates(&s, &alice, &new_tool);
    assert!(
        c.contains(&"in-docs".to_owned()) && !c.contains(&"in-the-tool".to_owned()),
        "{c:?}"
    );
    same_decision(&s, &new_tool);
    // Without a server it has no parent.
    let mut orphan = new_tool.clone();
    orphan.server = None;
    assert!(!candidates(&s, &alice, &orphan).contains(&"in-docs".to_owned()));
    same_decision(&s, &orphan);
}

#[test]
fn in_an_entity_of_another_type_never_matches() {
    let s = reference_with(
        r#"
        @id("user-in-server")
        permit (principal in Mcp::Server::"docs", action, resource);
        @id("in-a-user")
        permit (principal in Mcp::User::"alice", action, resource);
        @id("prompt-tools")
        permit (principal, action, resource is Mcp::Prompt in Mcp::Server::"docs");
        "#,
    );
    let alice = Kind::User.uid("alice");
    let r = request(
        Some("alice"),
        Some("corpassist"),
        "tools/call",
        tool("get_document"),
    );
    let c = candidates(&s, &alice, &r);
    assert!(!c.contains(&"user-in-server".to_owned()), "{c:?}");
    // `alice in Mcp::User::"alice"` holds by equality.
    assert!(c.contains(&"in-a-user".to_owned()), "{c:?}");
    // A tool is no prompt, though it is in the server.
    assert!(!c.contains(&"prompt-tools".to_owned()), "{c:?}");
    same_decision(&s, &r);
}

#[test]
fn per_request_groups_count_for_this_request() {
    let s = reference_with("");
    // erin is not in the entity data; her token makes her an engineer.
    let erin = Kind::User.uid("erin");
    let mut r = request(
        Some("erin"),
        Some("corpassist"),
        "tools/call",
        tool("get_document"),
    );
    assert!(!candidates(&s, &erin, &r).contains(&"employees-use-docs".to_owned()));
    assert!(!decide(&s, &r).allow);
    same_decision(&s, &r);
    r.entities.push(RequestEntity {
        uid: erin.clone(),
        parents: vec![Kind::Group.uid("engineering")],
        attrs: Map::new(),
    });
    // engineering is in employees: the grant's group is an ancestor two levels up.
    assert!(candidates(&s, &erin, &r).contains(&"employees-use-docs".to_owned()));
    assert!(decide(&s, &r).allow);
    same_decision(&s, &r);
}

#[test]
fn action_groups_come_from_the_schema() {
    let s = reference_with("");
    let alice = Kind::User.uid("alice");
    let ping = request(
        Some("alice"),
        Some("corpassist"),
        "ping",
        Kind::Server.uid("docs"),
    );
    assert_eq!(candidates(&s, &alice, &ping), vec!["session-housekeeping"]);
    assert!(decide(&s, &ping).allow);
    same_decision(&s, &ping);
    // Not in the group: no grant.
    let level = request(
        Some("alice"),
        None,
        "logging/setLevel",
        Kind::Server.uid("docs"),
    );
    assert!(candidates(&s, &alice, &level).is_empty());
    same_decision(&s, &level);
}

#[test]
fn candidates_are_only_those_whose_scope_holds() {
    let s = reference_with("");
    let corpassist = Kind::Application.uid("corpassist");
    let r = request(
        Some("dave"),
        Some("corpassist"),
        "tools/call",
        tool("delete_document"),
    );
    assert_eq!(
        candidates(&s, &corpassist, &r),
        vec![
            "corpassist-look-up-projects",
            "corpassist-never-deletes",
            "corpassist-read-docs",
        ]
    );
    same_decision(&s, &r);
}

#[test]
fn runtime_errors_and_their_order_are_kept() {
    let s = reference_with(
        r#"
        @id("overflow-a")
        forbid (principal, action in Mcp::Action::"tools/call", resource in Mcp::Server::"docs")
        when { context has arguments && context.arguments has max_results && context.arguments.max_results * 4611686018427387904 > 1 };
        @id("overflow-b")
        permit (principal in Mcp::Group::"employees", action, resource == Mcp::Tool::"docs/search_documents")
        when { context has arguments && context.arguments has max_results && context.arguments.max_results + 9223372036854775807 > 1 };
        "#,
    );
    let mut r = request(
        Some("alice"),
        Some("corpassist"),
        "tools/call",
        tool("search_documents"),
    );
    r.context.insert(
        "arguments".into(),
        serde_json::json!({ "query": "titan", "max_results": 7 }),
    );
    let d = decide(&s, &r);
    assert!(!d.allow);
    assert_eq!(d.evaluations[0].errors.len(), 2, "{d:?}");
    same_decision(&s, &r);
}

#[test]
fn linked_templates_are_always_candidates() {
    let mut s = reference_with(
        r#"
        @id("user-tool")
        permit (principal == ?principal, action in Mcp::Action::"tools/call", resource == ?resource);
        "#,
    );
    let link = |s: &mut Snapshot, id: &str, user: &str, t: &str| {
        s.policies
            .link(
                cedar_policy::PolicyId::new("user-tool"),
                cedar_policy::PolicyId::new(id),
                [
                    (cedar_policy::SlotId::principal(), Kind::User.uid(user)),
                    (cedar_policy::SlotId::resource(), Kind::Tool.uid(t)),
                ]
                .into_iter()
                .collect(),
            )
            .expect("link");
    };
    link(&mut s, "carol-deletes", "carol", "docs/delete_document");
    link(&mut s, "bob-updates", "bob", "projects/update_issue");
    // The index was built before the links: it is not used until rebuilt.
    let r = request(Some("carol"), None, "tools/call", tool("delete_document"));
    same_decision(&s, &r);
    s.index = crate::policy::PolicyIndex::new(&s.policies);
    let carol = Kind::User.uid("carol");
    let c = candidates(&s, &carol, &r);
    assert!(
        c.contains(&"carol-deletes".to_owned()) && c.contains(&"bob-updates".to_owned()),
        "{c:?}"
    );
    same_decision(&s, &r);
    let mut update = request(
        Some("bob"),
        None,
        "tools/call",
        Kind::Tool.uid("projects/update_issue"),
    );
    update.server = Some(Kind::Server.uid("projects"));
    assert!(decide(&s, &update).allow);
    same_decision(&s, &update);
}

#[test]
fn a_large_mesh_evaluates_a_handful_of_policies() {
    let mut text = String::new();
    for t in 0..300 {
        for g in ["engineering", "finance", "contractors"] {
            text.push_str(&format!(
                "@id(\"t{t}-{g}\")\npermit (principal in Mcp::Group::\"{g}\", action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/tool{t}\");\n"
            ));
        }
    }
    let s = reference_with(&text);
    let alice = Kind::User.uid("alice");
    let r = request(
        Some("alice"),
        Some("corpassist"),
        "tools/call",
        tool("tool42"),
    );
    assert_eq!(
        candidates(&s, &alice, &r),
        vec![
            "employees-look-up-projects",
            "employees-use-docs",
            "t42-engineering"
        ]
    );
    same_decision(&s, &r);
}

#[test]
fn candidates_without_conditions_count_as_cedar_counts_them() {
    // Unconditional candidates are satisfied without Cedar; the conditional ones are
    // evaluated without their scope. Each mix decides as Cedar does unaided: a
    // satisfied forbid of either kind denies and alone is the reason, permits of
    // both kinds are reasons together, an erring condition denies.
    let s = reference_with(
        r#"
        @id("bob-never-gets-documents")
        forbid (principal == Mcp::User::"bob", action in Mcp::Action::"tools/call", resource == Mcp::Tool::"docs/get_document");
        @id("bob-may-call-with-a-user")
        permit (principal == Mcp::User::"bob", action in Mcp::Action::"tools/call", resource in Mcp::Server::"docs")
        when { context has user };
        @id("carol-not-for-herself")
        forbid (principal == Mcp::User::"carol", action in [Mcp::Action::"tools/call", Mcp::Action::"prompts/get"], resource in Mcp::Server::"docs")
        when { context has user && context.user == principal };
        @id("dave-gets-the-summary-twice")
        permit (principal == Mcp::User::"dave", action in Mcp::Action::"tools/call", resource == Mcp::Tool::"docs/summarize_document");
        @id("dave-in-engineering")
        permit (principal == Mcp::User::"dave", action in Mcp::Action::"tools/call", resource)
        when { principal has department && principal.department == "engineering" };
        @id("dave-overflows")
        permit (principal == Mcp::User::"dave", action in Mcp::Action::"tools/call", resource == Mcp::Tool::"docs/summarize_document")
        when { 9223372036854775807 + 1 > 0 };
        "#,
    );
    let decision = |user: &str, app: Option<&str>, name: &str| {
        let r = request(Some(user), app, "tools/call", tool(name));
        same_decision(&s, &r);
        decide(&s, &r)
    };
    let ids = |d: &crate::authz::Decision| -> Vec<String> {
        d.evaluations
            .first()
            .map(|e| e.policies.clone())
            .unwrap_or_default()
    };
    // A forbid without conditions beats the satisfied permits (with and without).
    let d = decision("bob", None, "get_document");
    assert!(!d.allow);
    assert_eq!(ids(&d), ["bob-never-gets-documents"]);
    // Without that forbid, the conditional permit and the reference grant allow together.
    let d = decision("bob", None, "search_documents");
    assert!(d.allow, "{d:?}");
    assert!(
        ids(&d).contains(&"bob-may-call-with-a-user".to_owned()),
        "{d:?}"
    );
    // A conditional forbid that holds is the reason alone.
    let d = decision("carol", Some("corpassist"), "search_documents");
    assert!(!d.allow);
    assert_eq!(ids(&d), ["carol-not-for-herself"]);
    // An erring permit denies, whatever else is satisfied, and its error is reported.
    let d = decision("dave", None, "summarize_document");
    assert!(!d.allow);
    assert!(
        d.evaluations
            .first()
            .is_some_and(|e| e.errors.iter().any(|e| e.contains("dave-overflows"))),
        "{d:?}"
    );
    // Where it does not apply, the unconditional and conditional permits are reasons together.
    let d = decision("dave", None, "get_document");
    assert!(d.allow, "{d:?}");
    let reasons = ids(&d);
    assert!(
        reasons.contains(&"dave-in-engineering".to_owned())
            && reasons.contains(&"employees-use-docs".to_owned()),
        "{reasons:?}"
    );
}
