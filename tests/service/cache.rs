//! The decision cache never changes a decision.

use std::sync::Arc;

use mcp_authz::authz::{CacheSettings, Decision, DecisionRequest, Engine, RequestEntity};
use mcp_authz::mcp::{Kind, action, qualified_id};
use mcp_authz::policy::ReloadOutcome;
use mcp_authz::telemetry::Telemetry;
use serde_json::{Map, json};

use crate::support::inproc;
use crate::support::{copy_of_reference, reference_arguments, reference_policies};

fn engine(dir: &std::path::Path, cached: bool) -> Engine {
    recording(dir, cached).0
}

/// An engine on `dir` (with or without a cache) and the telemetry it records into.
fn recording(dir: &std::path::Path, cached: bool) -> (Engine, Arc<Telemetry>) {
    let telemetry = Arc::new(Telemetry::default());
    let engine = inproc::engine_with(dir, &telemetry).with_cache(&CacheSettings {
        enabled: cached,
        ..CacheSettings::default()
    });
    (engine, telemetry)
}

/// A decision of `engine` on its current snapshot, as a list's entries are decided.
fn decided(engine: &Engine, request: &DecisionRequest) -> Arc<Decision> {
    engine.evaluate(&engine.snapshot(), request)
}

fn call(user: Option<&str>, app: Option<&str>, server: &str, tool: &str) -> DecisionRequest {
    let mut r = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid(&qualified_id(server, tool)),
    );
    r.user = user.map(|u| Kind::User.uid(u));
    r.application = app.map(|a| Kind::Application.uid(a));
    r.server = Some(Kind::Server.uid(server));
    if let Some(arguments) = reference_arguments(&qualified_id(server, tool)) {
        r.context.insert("arguments".into(), arguments);
    }
    r
}

#[test]
fn a_reload_flips_a_cached_decision_at_once() {
    let dir = copy_of_reference();
    let e = engine(dir.path(), true);
    let r = call(Some("bob"), Some("summarizer"), "docs", "get_document");
    assert!(!decided(&e, &r).allow);
    assert!(!decided(&e, &r).allow);
    let cache = e.cache().expect("cache");
    assert_eq!(cache.stats().hits, 1);
    std::fs::write(
        dir.path().join("grant.cedar"),
        "permit (principal == Mcp::Application::\"summarizer\", action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/get_document\");",
    )
    .expect("write");
    assert!(matches!(
        e.store().reload(false),
        ReloadOutcome::Reloaded { .. }
    ));
    let d = decided(&e, &r);
    assert!(d.allow, "a decision of the earlier snapshot was served");
    assert_eq!(d.generation, 2);
}

#[test]
fn different_groups_never_share_an_entry() {
    let e = engine(&reference_policies(), true);
    let with_groups = |groups: &[&str]| {
        let mut r = call(Some("erin"), Some("corpassist"), "docs", "get_document");
        r.entities.push(RequestEntity {
            uid: Kind::User.uid("erin"),
            parents: groups.iter().map(|g| Kind::Group.uid(g)).collect(),
            attrs: Map::new(),
        });
        r
    };
    assert!(decided(&e, &with_groups(&["engineering"])).allow);
    assert!(!decided(&e, &with_groups(&[])).allow);
    assert!(!decided(&e, &with_groups(&["approved-apps"])).allow);
    assert!(decided(&e, &with_groups(&["engineering"])).allow);
}

#[test]
fn a_different_argument_never_hits_another_entry() {
    let e = engine(&reference_policies(), true);
    let search = |n: i64| {
        let mut r = call(
            Some("alice"),
            Some("corpassist"),
            "docs",
            "search_documents",
        );
        r.context.insert(
            "arguments".into(),
            json!({ "query": "titan", "max_results": n }),
        );
        r
    };
    for _ in 0..3 {
        assert!(decided(&e, &search(10)).allow);
        assert!(!decided(&e, &search(500)).allow);
        assert!(decided(&e, &search(50)).allow);
        assert!(!decided(&e, &search(51)).allow);
    }
    let stats = e.cache().expect("cache").stats();
    assert_eq!((stats.misses, stats.hits), (4, 8));
}

#[test]
fn the_cache_off_gives_identical_decisions() {
    let cached = engine(&reference_policies(), true);
    let plain = engine(&reference_policies(), false);
    assert!(plain.cache().is_none());
    let users = [
        Some("alice"),
        Some("bob"),
        Some("carol"),
        Some("dave"),
        Some("mallory"),
        None,
    ];
    let apps = [
        Some("corpassist"),
        Some("summarizer"),
        Some("ops-console"),
        None,
    ];
    let tools = [
        ("docs", "search_documents"),
        ("docs", "get_document"),
        ("docs", "delete_document"),
        ("docs", "unknown_tool"),
        ("projects", "update_issue"),
        ("projects", "get_project_lead"),
    ];
    let args = [
        json!({}),
        json!({ "document_id": "finance/x" }),
        json!({ "max_results": 500 }),
        json!({ "max_results": "x" }),
    ];
    let mut compared = 0;
    for _round in 0..2 {
        for u in users {
            for a in apps {
                for (s, t) in tools {
                    for arg in &args {
                        let mut r = call(u, a, s, t);
                        r.context.insert("arguments".into(), arg.clone());
                        assert_eq!(*decided(&cached, &r), *decided(&plain, &r), "{r:?}");
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 2 * 6 * 4 * 6 * 4);
    // Second round: every request a hit, but those for a user without an
    // application (5 users × 6 tools × 4 arguments), denied before the cache.
    assert!(cached.cache().expect("cache").stats().hits >= 576 - 120);
}

#[test]
fn hits_misses_and_entries_are_in_the_metrics() {
    let (e, telemetry) = recording(&reference_policies(), true);
    let a = call(Some("alice"), Some("corpassist"), "docs", "get_document");
    let b = call(Some("bob"), Some("corpassist"), "docs", "get_document");
    for r in [&a, &a, &a, &b] {
        decided(&e, r);
    }
    let cache = e.cache().expect("cache");
    cache.sync();
    let text = telemetry.render_prometheus(e.store(), None, Some(cache.as_ref()));
    assert!(
        text.contains("mcp_authz_decision_cache_hits_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("mcp_authz_decision_cache_misses_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("mcp_authz_decision_cache_entries 2\n"),
        "{text}"
    );

    let (off, telemetry) = recording(&reference_policies(), false);
    decided(&off, &a);
    let text = telemetry.render_prometheus(off.store(), None, None);
    assert!(
        text.contains("mcp_authz_decision_cache_misses_total 0\n"),
        "{text}"
    );
    assert!(!text.contains("mcp_authz_decision_cache_entries"), "{text}");
}

/// The decision log writes of a cache hit's request exactly what it writes of the same
/// request decided without a cache: the uids, the (redacted) arguments and the input,
/// whichever thread decides it, among other requests' records.
#[test]
fn the_log_writes_each_hits_own_request() {
    use mcp_authz::authz::{DecisionMeta, Interface, TokenFacts};
    use mcp_authz::telemetry::{DecisionLog, DecisionLogConfig};

    let logged = |cached: bool| {
        let capture = crate::support::Capture::default();
        let config = DecisionLogConfig {
            include_arguments: true,
            ..DecisionLogConfig::default()
        };
        let log = DecisionLog::with_writer(Box::new(capture.clone()), &config).expect("log");
        let telemetry = Arc::new(Telemetry::new(Some(log)));
        let engine =
            inproc::engine_with(&reference_policies(), &telemetry).with_cache(&CacheSettings {
                enabled: cached,
                ..CacheSettings::default()
            });
        (engine, telemetry, capture)
    };
    let mut requests = Vec::new();
    for user in ["alice", "bob", "erin"] {
        for (server, tool) in [("docs", "get_document"), ("docs", "search_documents")] {
            let plain = call(Some(user), Some("corpassist"), server, tool);
            let mut secret = plain.clone();
            secret.context.insert(
                "arguments".into(),
                json!({ "document_id": "titan/q1-strategy", "api_key": user }),
            );
            let mut with_token = plain.clone();
            with_token.token = Some(TokenFacts {
                scopes: vec![format!("{server}.read")],
                claims: Map::from_iter([("tenant".to_owned(), json!(user))]),
            });
            requests.extend([plain, secret, with_token]);
        }
    }
    // Each request several times, interleaved, on two threads in turn.
    let order: Vec<&DecisionRequest> = (0..4)
        .flat_map(|round| requests.iter().skip(round % 3))
        .collect();
    let mut written = Vec::new();
    for cached in [true, false] {
        let (engine, telemetry, capture) = logged(cached);
        let snapshot = engine.snapshot();
        for (i, part) in order.chunks(order.len() / 3).enumerate() {
            let decide = || {
                for r in part {
                    engine.decide(&snapshot, Interface::Grpc, r, &DecisionMeta::default());
                }
            };
            if i % 2 == 0 {
                decide();
            } else {
                std::thread::scope(|s| {
                    s.spawn(decide);
                });
            }
        }
        if cached {
            let hits = engine.cache().expect("cache").stats().hits;
            assert!(hits as usize >= order.len() - requests.len(), "{hits} hits");
        }
        let log = telemetry.decision_log.as_ref().expect("log");
        assert!(log.close(std::time::Duration::from_secs(10)));
        let mut records = capture.lines();
        for record in &mut records {
            let object = record.as_object_mut().expect("object");
            for own in ["decision_id", "time", "latency_us"] {
                assert!(object.remove(own).is_some(), "{own}");
            }
        }
        assert_eq!(records.len(), order.len());
        written.push(records);
    }
    assert_eq!(written[0], written[1]);
    // The secrets are redacted, the tokens' facts in the input.
    let text = serde_json::to_string(&written[0]).expect("json");
    assert!(!text.contains("\"api_key\":\"alice\""), "{text}");
    assert!(text.contains("\"tenant\":\"erin\""), "{text}");
}
