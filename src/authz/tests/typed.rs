//! Typed tools: a call of a declared tool is evaluated with its own action.

use serde_json::json;

use super::{tool_call, with_args};
use crate::authz::*;
use crate::mcp::{Kind, action, qualified_id};
use crate::policy::typed_policy_dir;

fn typed() -> Snapshot {
    let dir = typed_policy_dir();
    Snapshot::load(dir.path(), 3).unwrap_or_else(|p| panic!("{p}"))
}

fn call(user: &str, tool: &str, args: serde_json::Value) -> DecisionRequest {
    let (server, tool) = tool.split_once('/').expect("server/tool");
    with_args(
        tool_call(Some(user), Some("corpassist"), server, tool),
        args,
    )
}

fn relaxed(tools: bool, arguments: bool) -> Rules {
    Rules {
        allow_undeclared_tools: tools,
        allow_undeclared_arguments: arguments,
        ..Rules::default()
    }
}

#[test]
fn a_declared_tool_is_evaluated_with_its_action() {
    let s = typed();
    let d = decide(
        &s,
        &call("bob", "payments/refund", json!({ "amount": 500 })),
    );
    assert!(d.allow, "{d:?}");
    for e in &d.evaluations {
        assert_eq!(
            e.action.as_deref(),
            Some(r#"Mcp::Action::"tools/call/payments/refund""#)
        );
    }
    assert_eq!(d.evaluations[0].policies, ["finance-uses-payments"]);
    // The decision log writes the evaluations: the action used is there.
    let logged = serde_json::to_value(&d.evaluations[0]).expect("json");
    assert_eq!(
        logged["action"],
        json!(r#"Mcp::Action::"tools/call/payments/refund""#)
    );

    let d = decide(
        &s,
        &call("bob", "payments/refund", json!({ "amount": 200_000 })),
    );
    assert!(!d.allow);
    assert_eq!(d.evaluations[0].policies, ["large-refunds-need-review"]);
    assert!(d.reason.to_string().contains("large-refunds-need-review"));

    // Method-level policies (`action in Mcp::Action::"tools/call"`) keep matching.
    let d = decide(
        &s,
        &call(
            "alice",
            "docs/search_documents",
            json!({ "query": "q", "max_results": 51 }),
        ),
    );
    assert!(!d.allow);
    assert_eq!(d.evaluations[1].policies, ["corpassist-bounded-search"]);
    let d = decide(
        &s,
        &call(
            "alice",
            "docs/search_documents",
            json!({ "query": "q", "max_results": 5 }),
        ),
    );
    assert!(d.allow, "{d:?}");
    assert_eq!(d.evaluations[0].policies, ["employees-use-docs"]);
}

#[test]
fn one_argument_name_has_a_type_per_tool() {
    let s = typed();
    // `amount` of docs' search is a String...
    let d = decide(
        &s,
        &call(
            "alice",
            "docs/search_documents",
            json!({ "query": "q", "amount": "12.50" }),
        ),
    );
    assert!(!d.allow);
    assert_eq!(d.evaluations[0].policies, ["no-amount-searches"]);
    let d = decide(
        &s,
        &call(
            "alice",
            "docs/search_documents",
            json!({ "query": "q", "amount": "12" }),
        ),
    );
    assert!(d.allow, "{d:?}");
    let d = decide(
        &s,
        &call(
            "alice",
            "docs/search_documents",
            json!({ "query": "q", "amount": 12 }),
        ),
    );
    assert_eq!(d.reason.kind(), ReasonKind::Invalid, "{d:?}");
    assert!(
        d.reason
            .to_string()
            .contains("`arguments.amount` should be a String")
    );
    // ...and a Long of payments' refund.
    let d = decide(
        &s,
        &call("bob", "payments/refund", json!({ "amount": "12.50" })),
    );
    assert_eq!(d.reason.kind(), ReasonKind::Invalid, "{d:?}");
    assert!(
        d.reason
            .to_string()
            .contains("`arguments.amount` should be a Long")
    );
}

#[test]
fn required_arguments_stay_required() {
    let s = typed();
    for args in [json!({ "max_results": 3 }), json!({})] {
        let d = decide(&s, &call("alice", "docs/search_documents", args.clone()));
        assert!(!d.allow, "{args}");
        assert_eq!(d.reason.kind(), ReasonKind::Invalid, "{d:?}");
    }
    // No arguments at all: the tool's action requires the record.
    let mut r = tool_call(
        Some("alice"),
        Some("corpassist"),
        "docs",
        "search_documents",
    );
    r.context.remove("arguments");
    let d = decide(&s, &r);
    assert!(!d.allow);
    assert_eq!(d.reason.kind(), ReasonKind::Invalid, "{d:?}");
}

#[test]
fn undeclared_tools_of_an_imported_server_are_denied_unless_allowed() {
    let s = typed();
    let request = tool_call(
        Some("alice"),
        Some("corpassist"),
        "docs",
        "translate_document",
    );
    let d = decide(&s, &request);
    assert!(!d.allow);
    assert_eq!(d.reason.kind(), ReasonKind::UndeclaredTool);
    let reason = d.reason.to_string();
    assert!(
        reason.contains("tool `translate_document` is not declared for server `docs`")
            && reason.contains("decisions.allow_undeclared_tools"),
        "{reason}"
    );
    assert!(d.evaluations.is_empty());
    // Allowed: evaluated with the untyped action, as without fragments.
    let d = decide_with_rules(&s, &request, relaxed(true, false));
    assert!(d.allow, "{d:?}");
    assert!(d.evaluations.iter().all(|e| e.action.is_none()));
    // A server without imported tools is not concerned.
    let d = decide(
        &s,
        &tool_call(
            Some("alice"),
            Some("corpassist"),
            "projects",
            "find_project",
        ),
    );
    assert!(d.allow, "{d:?}");
    // Nor is a tool of an unknown server.
    let d = decide(
        &s,
        &tool_call(Some("alice"), Some("corpassist"), "weather", "forecast"),
    );
    assert_eq!(d.reason.kind(), ReasonKind::Denied, "{d:?}");
}

#[test]
fn undeclared_arguments_are_denied_unless_allowed() {
    let s = typed();
    let request = call(
        "alice",
        "docs/search_documents",
        json!({ "query": "q", "limit": 5, "filter": { "owner": "x" } }),
    );
    let d = decide(&s, &request);
    assert!(!d.allow);
    assert_eq!(d.reason.kind(), ReasonKind::UndeclaredArgument);
    let reason = d.reason.to_string();
    assert!(
        reason.contains(
            "tool `docs/search_documents` does not declare the arguments `filter`, `limit`"
        ) && reason.contains("decisions.allow_undeclared_arguments"),
        "{reason}"
    );
    let d = decide_with_rules(&s, &request, relaxed(false, true));
    assert!(d.allow, "{d:?}");
    // An argument that reads as a declared one keeps its own, more precise reason.
    let d = decide(
        &s,
        &call(
            "alice",
            "docs/search_documents",
            json!({ "query": "q", "MAX_RESULTS": 500 }),
        ),
    );
    assert!(
        d.reason
            .to_string()
            .contains("reads as the declared `arguments.max_results`"),
        "{d:?}"
    );
    // Prompts likewise.
    let mut prompt = DecisionRequest::new(
        action("prompts/get"),
        Kind::Prompt.uid(&qualified_id("docs", "executive_summary")),
    );
    prompt.user = Some(Kind::User.uid("alice"));
    prompt.application = Some(Kind::Application.uid("corpassist"));
    prompt.server = Some(Kind::Server.uid("docs"));
    let with = |args| with_args(prompt.clone(), args);
    let d = decide(&s, &with(json!({ "audience": "internal" })));
    assert!(d.allow, "{d:?}");
    assert_eq!(
        d.evaluations[0].action.as_deref(),
        Some(r#"Mcp::Action::"prompts/get/docs/executive_summary""#)
    );
    let d = decide(&s, &with(json!({ "audience": "board" })));
    assert_eq!(d.evaluations[1].policies, ["corpassist-internal-summaries"]);
    let d = decide(&s, &with(json!({ "audience": "internal", "tone": "dry" })));
    assert!(
        d.reason
            .to_string()
            .contains("prompt `docs/executive_summary` does not declare the argument `tone`"),
        "{d:?}"
    );
}

#[test]
fn the_engine_follows_its_rules_for_typed_tools() {
    let dir = typed_policy_dir();
    let store = std::sync::Arc::new(
        crate::policy::PolicyStore::open(dir.path()).unwrap_or_else(|p| panic!("{p}")),
    );
    let request = tool_call(
        Some("alice"),
        Some("corpassist"),
        "docs",
        "translate_document",
    );
    let strict = Engine::new(store.clone());
    assert!(!strict.evaluate(&strict.snapshot(), &request).allow);
    let relaxed = Engine::new(store).with_rules(relaxed(true, false));
    assert!(relaxed.evaluate(&relaxed.snapshot(), &request).allow);
}

#[test]
fn without_tool_actions_nothing_changes() {
    // A schema that declares none (the reference base schema without its imported
    // `tools/`): the undeclared-tool and -argument rules have nothing to apply to.
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let base = |name: &str| std::fs::read_to_string(reference.join(name)).expect("reference file");
    let s = super::snapshot_from(&[
        ("mcp.cedarschema", &base("mcp.cedarschema")),
        ("entities.json", &base("entities.json")),
        (
            "grants.cedar",
            "permit (principal in Mcp::Group::\"employees\", action in Mcp::Action::\"tools/call\", resource in Mcp::Server::\"docs\");\n\
             permit (principal == Mcp::Application::\"corpassist\", action in Mcp::Action::\"tools/call\", resource in Mcp::Server::\"docs\");\n",
        ),
    ]);
    let d = decide(
        &s,
        &with_args(
            tool_call(
                Some("alice"),
                Some("corpassist"),
                "docs",
                "search_documents",
            ),
            json!({ "query": "q", "undeclared": 1 }),
        ),
    );
    assert!(d.allow, "{d:?}");
    assert!(d.evaluations.iter().all(|e| e.action.is_none()));
    let logged = serde_json::to_value(&d.evaluations[0]).expect("json");
    assert!(logged.get("action").is_none());
}

/// The typed directory with a server `shop` whose tool `order` takes a `decimal`
/// price and a `datetime`, all optional.
fn shop() -> Snapshot {
    let dir = typed_policy_dir();
    let tools = dir.path().join("tools");
    std::fs::write(
        tools.join("shop.cedarschema"),
        r#"namespace Mcp {
  action "tools/call/shop/order" in ["tools/call"]
    appliesTo {
      principal: [Mcp::User, Mcp::Application],
      resource: [Mcp::Tool],
      context: {
        application?: Mcp::Application,
        user?: Mcp::User,
        server?: Mcp::Server,
        arguments: { price?: decimal, at?: datetime },
      }
    };
  action "tools/call/shop/cancel" in ["tools/call"]
    appliesTo {
      principal: [Mcp::User, Mcp::Application],
      resource: [Mcp::Tool],
      context: { user?: Mcp::User, arguments: { order_id: String } }
    };
}
"#,
    )
    .expect("write");
    std::fs::write(
        tools.join("shop.entities.json"),
        r#"[
  {"uid":{"type":"Mcp::Server","id":"shop"},"attrs":{},"parents":[]},
  {"uid":{"type":"Mcp::Tool","id":"shop/order"},"attrs":{},"parents":[{"type":"Mcp::Server","id":"shop"}]},
  {"uid":{"type":"Mcp::Tool","id":"shop/cancel"},"attrs":{},"parents":[{"type":"Mcp::Server","id":"shop"}]}
]"#,
    )
    .expect("write");
    std::fs::write(
        dir.path().join("shop.cedar"),
        r#"@id("anyone-orders")
permit (principal, action in Mcp::Action::"tools/call", resource in Mcp::Server::"shop");

@id("no-expensive-orders")
forbid (principal, action == Mcp::Action::"tools/call/shop/order", resource)
when { context.arguments has price && context.arguments.price.greaterThan(decimal("100.0")) };

@id("no-orders-from-2027")
forbid (principal, action == Mcp::Action::"tools/call/shop/order", resource)
when { context.arguments has at && context.arguments.at >= datetime("2027-01-01T00:00:00Z") };

@id("corpassist-never-cancels")
forbid (principal == Mcp::Application::"corpassist", action == Mcp::Action::"tools/call/shop/cancel", resource);

@id("cancel-only-own-orders")
forbid (principal, action == Mcp::Action::"tools/call/shop/cancel", resource)
unless { context has user && context.arguments.order_id like "*-mine" };
"#,
    )
    .expect("write");
    Snapshot::load(dir.path(), 3).unwrap_or_else(|p| panic!("{p}"))
}

#[test]
fn a_declared_tool_called_without_arguments_has_empty_arguments() {
    let s = shop();
    let d = decide(
        &s,
        &tool_call(Some("bob"), Some("corpassist"), "shop", "order"),
    );
    assert!(d.allow, "{d:?}");
    // Required arguments stay required: a call without them is denied, with a reason.
    let d = decide(
        &s,
        &tool_call(Some("bob"), Some("corpassist"), "payments", "refund"),
    );
    assert!(!d.allow);
    assert!(
        d.reason
            .to_string()
            .contains("context does not fit the schema"),
        "{d:?}"
    );
}

#[test]
fn json_numbers_are_decimals_and_rfc_3339_offsets_datetimes() {
    let s = shop();
    let order = |args| decide(&s, &call("bob", "shop/order", args));
    // A JSON number for a decimal, compared as a decimal.
    assert!(order(json!({ "price": 99.5 })).allow);
    let d = order(json!({ "price": 100.5 }));
    assert!(!d.allow);
    assert_eq!(d.evaluations[0].policies, ["no-expensive-orders"]);
    assert!(order(json!({ "price": "12.25" })).allow);
    // What a decimal cannot hold: denied, with the argument named.
    for price in [json!(0.00001), json!(1e20)] {
        let d = order(json!({ "price": price }));
        assert!(!d.allow, "{price}");
        let reason = d.reason.to_string();
        assert!(
            reason.contains("`arguments.price` is a number that a Cedar decimal cannot hold"),
            "{reason}"
        );
    }
    // RFC 3339 offsets with a colon, lower-case `t`/`z`, short fractions.
    assert!(order(json!({ "at": "2026-12-31T23:59:59+05:30" })).allow);
    let d = order(json!({ "at": "2027-01-01t05:30:00.5+05:30" }));
    assert!(!d.allow);
    assert_eq!(d.evaluations[0].policies, ["no-orders-from-2027"]);
    assert!(order(json!({ "at": "2026-06-01t00:00:00z" })).allow);
    let d = order(json!({ "at": "2026-06-01T00:00:00.000001Z" }));
    assert!(!d.allow);
    assert!(
        d.reason.to_string().contains("finer than a millisecond"),
        "{d:?}"
    );
    // Not a date-time at all: denied.
    assert!(!order(json!({ "at": "tomorrow" })).allow);
}

#[test]
fn listing_decides_with_the_arguments_unknown() {
    let s = shop();
    let rules = Rules::default();
    let use_of = |user: &str, app: &str, tool: &str| {
        let (server, tool) = tool.split_once('/').expect("server/tool");
        tool_call(Some(user), Some(app), server, tool)
    };
    // Guarded only by a condition on a required argument: a call without arguments
    // is denied, the tool is listed.
    let refund = use_of("bob", "corpassist", "payments/refund");
    assert!(!decide(&s, &refund).allow);
    assert!(listed(&s, &refund, rules));
    // A forbid on an argument that may or may not hold: listed.
    assert!(listed(
        &s,
        &use_of("bob", "summarizer", "shop/cancel"),
        rules
    ));
    // Forbidden outright (the application), whatever the arguments: hidden.
    assert!(!listed(
        &s,
        &use_of("bob", "corpassist", "shop/cancel"),
        rules
    ));
    // No permit can hold: hidden (the summarizer has no grant on payments).
    assert!(!listed(
        &s,
        &use_of("bob", "summarizer", "payments/refund"),
        rules
    ));
    // Optional arguments only: as the call without arguments.
    assert!(listed(
        &s,
        &use_of("bob", "corpassist", "shop/order"),
        rules
    ));
    // An undeclared tool of an imported server: hidden, unless allowed.
    let undeclared = use_of("bob", "corpassist", "shop/unknown");
    assert!(!listed(&s, &undeclared, rules));
    assert!(listed(&s, &undeclared, relaxed(true, false)));
    // A tool of a server without tool actions: decided as its use.
    let untyped = use_of("alice", "corpassist", "projects/find_project");
    assert_eq!(listed(&s, &untyped, rules), decide(&s, &untyped).allow);
    assert!(listed(&s, &untyped, rules));
}

/// Listing with the policy index and the entity slice answers what listing with
/// every policy and the whole entity data answers: every user (also one known only
/// from a token's groups) and application, every declared tool and prompt, and a
/// tool the entity data does not list.
#[test]
fn indexed_listing_agrees_with_cedar_unaided() {
    let s = shop();
    let users = ["alice", "bob", "carol", "dave", "token-user"];
    let apps = ["corpassist", "summarizer", "ops-console"];
    let targets = [
        ("tools/call", "payments/refund"),
        ("tools/call", "shop/order"),
        ("tools/call", "shop/cancel"),
        ("tools/call", "shop/unknown"),
        ("tools/call", "docs/search_documents"),
        ("tools/call", "docs/get_document"),
        ("tools/call", "docs/summarize_document"),
        ("tools/call", "projects/find_project"),
        ("prompts/get", "docs/executive_summary"),
    ];
    let mut shown = 0;
    for user in users {
        for app in apps {
            for (method, target) in targets {
                let (server, _) = target.split_once('/').expect("server/name");
                let kind = if method == "tools/call" {
                    Kind::Tool
                } else {
                    Kind::Prompt
                };
                let mut r = DecisionRequest::new(action(method), kind.uid(target));
                r.user = Some(Kind::User.uid(user));
                r.application = Some(Kind::Application.uid(app));
                r.server = Some(Kind::Server.uid(server));
                if user == "token-user" {
                    r.entities.push(RequestEntity {
                        uid: Kind::User.uid(user),
                        parents: vec![Kind::Group.uid("employees"), Kind::Group.uid("finance")],
                        attrs: serde_json::Map::new(),
                    });
                }
                for rules in [Rules::default(), relaxed(true, true)] {
                    let indexed = listed(&s, &r, rules);
                    assert_eq!(
                        indexed,
                        listed_unindexed(&s, &r, rules),
                        "{user} {app} {method} {target} {rules:?}"
                    );
                    shown += usize::from(indexed);
                }
            }
        }
    }
    // Both answers occur.
    assert!(shown > 0 && shown < users.len() * apps.len() * targets.len() * 2);
}
