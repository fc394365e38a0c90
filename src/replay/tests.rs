use std::path::Path;

use serde_json::json;

use super::*;
use crate::authz::replayable::{Parts, to_json};
use crate::mcp::{Kind, action, qualified_id};
use crate::policy::PolicyStore;

fn engine() -> Engine {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let snapshot = Snapshot::load(&dir, 1).expect("reference policies load");
    Engine::new(Arc::new(PolicyStore::from_snapshot(snapshot)))
}

fn call(user: &str, app: &str, server: &str, tool: &str) -> DecisionRequest {
    let mut r = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid(&qualified_id(server, tool)),
    );
    r.user = Some(Kind::User.uid(user));
    r.application = Some(Kind::Application.uid(app));
    r.server = Some(Kind::Server.uid(server));
    if let Some(arguments) = crate::policy::reference_arguments(server, tool) {
        r.context.insert("arguments".into(), arguments);
    }
    r
}

/// A record of `request` deciding `decision`, as the service writes it.
fn record(request: &DecisionRequest, decision: &str) -> String {
    json!({
        "decision_id": "d",
        "decision": decision,
        "policy_digest": "sha256:live",
        "evaluations": [{"role": "user", "policies": ["p1"]}, {"role": "application", "policies": []}],
        "input": to_json(request),
    })
    .to_string()
}

fn run(engine: &Engine, log: &str, options: &Options) -> Report {
    replay(engine, &mut log.as_bytes(), options).expect("read")
}

#[test]
fn the_live_answers_replay_the_same_and_changed_ones_differ() {
    let engine = engine();
    let snapshot = engine.snapshot();
    let requests = [
        call("alice", "corpassist", "docs", "get_document"),
        call("dave", "corpassist", "docs", "delete_document"),
        call("alice", "ops-console", "projects", "update_issue"),
        call("carol", "summarizer", "docs", "search_documents"),
    ];
    let mut log = String::new();
    let mut flipped = Vec::new();
    for i in 0..1000 {
        let r = &requests[i % requests.len()];
        let allow = engine.evaluate(&snapshot, r).allow;
        // Every 97th record says the opposite of what the policies decide.
        let flip = i % 97 == 5;
        if flip {
            flipped.push((i + 1) as u64);
        }
        let said = if allow != flip { "allow" } else { "deny" };
        log.push_str(&record(r, said));
        log.push('\n');
    }
    for threads in [1, 2, 3] {
        let options = Options {
            threads,
            batch: 300,
            ..Options::default()
        };
        let report = run(&engine, &log, &options);
        let s = &report.summary;
        assert_eq!((s.lines, s.live, s.replayed), (1000, 1000, 1000));
        assert_eq!(s.different(), flipped.len() as u64);
        assert_eq!(s.same, 1000 - flipped.len() as u64);
        let lines: Vec<u64> = report.differences.iter().map(|d| d.line).collect();
        assert_eq!(lines, flipped, "threads {threads}");
        assert_eq!(s.live_digests.get("sha256:live"), Some(&1000));
        let d = &report.differences[0];
        assert_eq!(
            d.live_policies[0],
            ("user".to_owned(), vec!["p1".to_owned()])
        );
        assert_eq!(d.decision_id.as_deref(), Some("d"));
        assert!(!d.uncertain());
    }
    // A limit stops after that many replayed records.
    let limited = run(
        &engine,
        &log,
        &Options {
            limit: Some(10),
            ..Options::default()
        },
    );
    assert_eq!(limited.summary.replayed, 10);
    assert_eq!(limited.summary.lines, 10);
    assert_eq!(limited.summary.different(), 1);
}

#[test]
fn other_records_records_without_input_and_malformed_lines_are_counted() {
    let engine = engine();
    let alice = call("alice", "corpassist", "docs", "get_document");
    let mut omitted = to_json(&call("dave", "corpassist", "docs", "get_document"));
    omitted["arguments"] = json!("omitted");
    omitted["context"] = json!({});
    let log = [
        record(&alice, "allow"),
        String::new(),
        r#"{"record":"shadow","decision":"deny"}"#.to_owned(),
        r#"{"decision":"allow","policy_digest":"sha256:old"}"#.to_owned(),
        "not json".to_owned(),
        "[1,2]".to_owned(),
        r#"{"decision":"maybe","input":{}}"#.to_owned(),
        r#"{"decision":"allow","input":{"action":"nope"}}"#.to_owned(),
        // Dry-run: compared with `decision`.
        json!({"decision": "deny", "dry_run": true, "input": to_json(&alice)}).to_string(),
        json!({"decision": "allow", "input": omitted}).to_string(),
        format!("{}\r", record(&alice, "allow")),
    ]
    .join("\n");
    let mut bytes = log.into_bytes();
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    let report = replay(&engine, &mut bytes.as_slice(), &Options::default()).expect("read");
    let s = &report.summary;
    assert_eq!(s.lines, 12);
    assert_eq!(s.other_records, 1);
    assert_eq!(s.without_input, 1);
    assert_eq!(s.malformed, 5, "{:?}", report.malformed);
    assert_eq!(s.live, 5);
    assert_eq!(s.replayed, 4);
    // Without its required argument the call is denied: a difference, uncertain.
    assert_eq!((s.same, s.deny_to_allow, s.allow_to_deny), (2, 1, 1));
    assert_eq!(s.arguments_omitted, 1);
    assert_eq!(s.uncertain, 1);
    let lines: Vec<u64> = report.malformed.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [5, 6, 7, 8, 12]);
    let reasons: Vec<&str> = report.malformed.iter().map(|(_, r)| r.as_str()).collect();
    assert!(reasons[0].starts_with("not JSON"), "{reasons:?}");
    assert!(
        reasons[1].starts_with("not a decision record"),
        "{reasons:?}"
    );
    assert_eq!(
        reasons[2],
        "`decision` must be `allow` or `deny`, not `maybe`"
    );
    assert!(
        reasons[3].starts_with("`input`: `action` is not a Cedar uid"),
        "{reasons:?}"
    );
    assert!(reasons[4].starts_with("not UTF-8"), "{reasons:?}");
    let uncertain: Vec<bool> = report
        .differences
        .iter()
        .map(Difference::uncertain)
        .collect();
    assert_eq!(uncertain, [false, true]);
    assert_eq!(report.differences[1].arguments, ArgumentsForm::Omitted);
    // The redacted form is counted too.
    let redacted_args = json!({"document_id": "[REDACTED]"});
    let redacted = Parts {
        arguments: Some(&redacted_args),
        form: ArgumentsForm::Redacted,
        ..Parts::of(&alice)
    }
    .to_json();
    let line = json!({"decision": "allow", "input": redacted}).to_string();
    let report = run(&engine, &line, &Options::default());
    assert_eq!(report.summary.arguments_redacted, 1);
    assert_eq!(report.summary.same, 1);
}
