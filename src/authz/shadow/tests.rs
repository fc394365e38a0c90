use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;

use super::*;
use crate::authz::{Engine, Evaluation, Reason, ReasonKind, Role, decide};
use crate::mcp::{Kind, action, qualified_id};

/// A copy of the reference policy directory with `extra` files added.
fn reference_with(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&src, dir.path());
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn get_document(user: &str, app: &str) -> DecisionRequest {
    let mut r = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid(&qualified_id("docs", "get_document")),
    );
    r.user = Some(Kind::User.uid(user));
    r.application = Some(Kind::Application.uid(app));
    r.server = Some(Kind::Server.uid("docs"));
    if let Some(arguments) = crate::policy::reference_arguments("docs", "get_document") {
        r.context.insert("arguments".into(), arguments);
    }
    r
}

const SHADOW_FORBID: &str = r#"
@id("staged-no-get-document")
@shadow
forbid (
  principal,
  action in Mcp::Action::"tools/call",
  resource == Mcp::Tool::"docs/get_document"
);
"#;

fn evaluation(role: Role, allow: bool, policies: &[&str], errors: &[&str]) -> Evaluation {
    Evaluation {
        role,
        principal: "p".into(),
        allow,
        policies: policies.iter().map(|p| (*p).to_owned()).collect(),
        errors: errors.iter().map(|e| (*e).to_owned()).collect(),
        action: None,
        step_up: crate::authz::StepUpHint::default(),
    }
}

fn decision(evaluations: Vec<Evaluation>) -> Decision {
    let allow = evaluations.iter().all(|e| e.allow);
    Decision {
        allow,
        reason: Reason::new(ReasonKind::Allowed, "test"),
        evaluations,
        generation: 1,
        policy_digest: Arc::from("sha256:test"),
    }
}

#[test]
fn agreeing_decisions_have_no_difference() {
    let a = decision(vec![evaluation(Role::User, true, &["p1"], &[])]);
    let b = decision(vec![evaluation(Role::User, true, &["p2"], &[])]);
    assert!(difference(&a, &b).is_empty());
}

#[test]
fn a_forbid_that_denies_makes_the_difference() {
    let live = decision(vec![
        evaluation(Role::User, true, &["users"], &[]),
        evaluation(Role::Application, true, &["apps"], &[]),
    ]);
    let shadow = decision(vec![
        evaluation(Role::User, true, &["users"], &[]),
        evaluation(Role::Application, false, &["new-forbid"], &[]),
    ]);
    assert_eq!(difference(&live, &shadow), ["new-forbid"]);
    // Whichever side denies.
    assert_eq!(difference(&shadow, &live), ["new-forbid"]);
}

#[test]
fn a_missing_permit_is_named_by_the_side_that_has_it() {
    let live = decision(vec![
        evaluation(Role::User, true, &["users"], &[]),
        evaluation(Role::Application, true, &["apps"], &[]),
    ]);
    // The shadow dropped the application's permit: no forbid, no permit.
    let shadow = decision(vec![
        evaluation(Role::User, true, &["users"], &[]),
        evaluation(Role::Application, false, &[], &[]),
    ]);
    assert_eq!(difference(&live, &shadow), ["apps"]);
}

#[test]
fn a_failing_policy_is_named_from_its_error() {
    let live = decision(vec![evaluation(Role::User, true, &["users"], &[])]);
    let shadow = decision(vec![evaluation(
        Role::User,
        false,
        &["users"],
        &["error while evaluating policy `broken`: `x` does not have the attribute `y`"],
    )]);
    assert_eq!(difference(&live, &shadow), ["broken"]);
}

#[test]
fn a_decision_without_evaluations_is_explained_by_the_other_side() {
    let live = decision(vec![evaluation(Role::User, true, &["users"], &[])]);
    let shadow = decision(Vec::new());
    let shadow = Decision {
        allow: false,
        ..shadow
    };
    assert_eq!(difference(&live, &shadow), ["users"]);
}

#[test]
fn sampling_thresholds() {
    assert_eq!(threshold(0.0), 0);
    assert_eq!(threshold(-1.0), 0);
    assert_eq!(threshold(f64::NAN), 0);
    assert_eq!(threshold(1.0), u64::MAX);
    let half = threshold(0.5);
    let taken = (0..10_000u64).filter(|n| splitmix64(*n) < half).count();
    assert!((4_500..5_500).contains(&taken), "{taken} of 10000 at 0.5");
    let tenth = threshold(0.1);
    let taken = (0..10_000u64).filter(|n| splitmix64(*n) < tenth).count();
    assert!((800..1_200).contains(&taken), "{taken} of 10000 at 0.1");
}

#[test]
fn the_enforced_view_leaves_shadow_policies_out() {
    let dir = reference_with(&[("staged.cedar", SHADOW_FORBID)]);
    let s = Snapshot::load(dir.path(), 1).expect("loads");
    assert_eq!(s.shadow_policies, ["staged-no-get-document"]);
    let view = s.all_enforced.as_ref().expect("an all-enforced view");
    assert_eq!(view.shadow_policies, s.shadow_policies);
    assert!(view.all_enforced.is_none());
    // The same files: the same digests and origins, one more policy enforced.
    assert_eq!(view.digests, s.digests);
    assert!(s.digests.policies.contains_key("staged-no-get-document"));
    assert!(s.origins.contains_key("staged-no-get-document"));
    assert_eq!(
        view.policies.num_of_policies(),
        s.policies.num_of_policies() + 1
    );
    assert_eq!(s.policy_count(), view.policy_count());
    assert!(s.index_is_current() && view.index_is_current());

    let request = get_document("alice", "corpassist");
    let live = decide(&s, &request);
    assert!(live.allow, "{live:?}");
    let shadow = decide(view, &request);
    assert!(!shadow.allow, "{shadow:?}");
    assert_eq!(difference(&live, &shadow), ["staged-no-get-document"]);

    // The enforced view decides as the directory without the file does.
    let without = Snapshot::load(reference_with(&[]).path(), 1).expect("loads");
    assert_eq!(decide(&without, &request).allow, live.allow);
    assert!(without.all_enforced.is_none() && without.shadow_policies.is_empty());
}

#[test]
fn a_set_of_shadow_policies_only_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    std::fs::copy(
        src.join("mcp.cedarschema"),
        dir.path().join("mcp.cedarschema"),
    )
    .expect("copy");
    std::fs::write(
        dir.path().join("only.cedar"),
        "@shadow\npermit (principal, action, resource);",
    )
    .expect("write");
    let problems = Snapshot::load(dir.path(), 1).expect_err("refused");
    assert!(
        problems
            .to_string()
            .contains("every policy is annotated `@shadow`"),
        "{problems}"
    );
}

/// What a test sees of one comparison: set, live and shadow verdicts, difference,
/// shadow policies.
type Seen = (ShadowSet, bool, bool, Vec<String>, Vec<String>);

/// Sends every shadow comparison (verdicts and difference) to a channel;
/// `shadow_compared` waits for `gate` when it has one.
#[derive(Debug)]
struct Comparisons {
    tx: Mutex<Sender<Seen>>,
    gate: Option<Mutex<Receiver<()>>>,
    dropped: AtomicU64,
}

impl Recorder for Comparisons {
    fn decided(&self, _: crate::authz::Decided<'_>) {}

    fn cache_lookup(&self, _: bool) {}

    fn shadow_compared(&self, c: ShadowCompared<'_>) {
        if let Some(gate) = &self.gate {
            let _ = gate.lock().expect("gate").recv();
        }
        let _ = self.tx.lock().expect("tx").send((
            c.set,
            c.live.allow,
            c.shadow.allow,
            c.difference.to_vec(),
            c.shadow_policies.to_vec(),
        ));
    }

    fn shadow_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn the_engine_shadows_decisions_off_the_path_and_never_changes_them() {
    let live_dir = reference_with(&[("staged.cedar", SHADOW_FORBID)]);
    let shadow_dir = reference_with(&[(
        "candidate.cedar",
        r#"@id("candidate-no-contractors")
forbid (principal in Mcp::Group::"contractors", action, resource);"#,
    )]);
    let live = Arc::new(PolicyStore::open(live_dir.path()).expect("live"));
    let shadow = Arc::new(PolicyStore::open(shadow_dir.path()).expect("shadow"));
    let (tx, rx) = std::sync::mpsc::channel();
    let recorder = Arc::new(Comparisons {
        tx: Mutex::new(tx),
        gate: None,
        dropped: AtomicU64::new(0),
    });
    let engine = Engine::with_recorder(Arc::clone(&live), recorder)
        .with_cache(&crate::authz::CacheSettings::default())
        .with_shadow(Some(shadow), ShadowSettings::default())
        .expect("shadow starts");
    let request = get_document("alice", "corpassist");
    let snapshot = engine.snapshot();
    let outcome = engine.decide(
        &snapshot,
        Interface::Cli,
        &request,
        &DecisionMeta::default(),
    );
    assert!(outcome.decision.allow, "the @shadow forbid is not enforced");
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(rx.recv_timeout(Duration::from_secs(10)).expect("compared"));
    }
    got.sort_by_key(|g| g.0.as_str());
    let (set, live_allow, shadow_allow, diff, shadow_ids) = &got[0];
    assert_eq!(*set, ShadowSet::Annotations);
    assert!(*live_allow && !*shadow_allow);
    assert_eq!(diff, &["staged-no-get-document"]);
    assert_eq!(shadow_ids, &["staged-no-get-document"]);
    // alice is no contractor: the shadow directory agrees.
    let (set, live_allow, shadow_allow, diff, shadow_ids) = &got[1];
    assert_eq!(*set, ShadowSet::Directory);
    assert!(*live_allow && *shadow_allow);
    assert!(diff.is_empty() && shadow_ids.is_empty());
}

#[test]
fn a_full_queue_drops_instead_of_waiting() {
    let live_dir = reference_with(&[("staged.cedar", SHADOW_FORBID)]);
    let live = Arc::new(PolicyStore::open(live_dir.path()).expect("live"));
    let (tx, _rx) = std::sync::mpsc::channel();
    let (open_tx, open_rx) = std::sync::mpsc::channel();
    let recorder = Arc::new(Comparisons {
        tx: Mutex::new(tx),
        gate: Some(Mutex::new(open_rx)),
        dropped: AtomicU64::new(0),
    });
    let engine = Engine::with_recorder(live, recorder.clone())
        .with_shadow(
            None,
            ShadowSettings {
                sample: 1.0,
                queue_capacity: 1,
                ..ShadowSettings::default()
            },
        )
        .expect("shadow starts");
    let request = get_document("alice", "corpassist");
    let snapshot = engine.snapshot();
    // The worker holds at most one, the queue one more: of three, one is dropped.
    for _ in 0..3 {
        engine.decide(
            &snapshot,
            Interface::Cli,
            &request,
            &DecisionMeta::default(),
        );
    }
    assert!(recorder.dropped.load(Ordering::Relaxed) >= 1);
    for _ in 0..3 {
        let _ = open_tx.send(());
    }
}

#[test]
fn nothing_is_queued_without_a_shadow_or_a_sample() {
    let live = Arc::new(
        PolicyStore::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).expect("live"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let recorder = Arc::new(Comparisons {
        tx: Mutex::new(tx),
        gate: None,
        dropped: AtomicU64::new(0),
    });
    let snapshot = live.snapshot();
    let request = get_document("alice", "corpassist");
    // No shadow directory and no `@shadow` policy.
    {
        let engine = Engine::with_recorder(Arc::clone(&live), recorder.clone())
            .with_shadow(None, ShadowSettings::default())
            .expect("shadow starts");
        engine.decide(
            &snapshot,
            Interface::Cli,
            &request,
            &DecisionMeta::default(),
        );
    }
    // A sample of 0 with a shadow directory.
    let engine = Engine::with_recorder(Arc::clone(&live), recorder)
        .with_shadow(
            Some(Arc::clone(&live)),
            ShadowSettings {
                sample: 0.0,
                queue_capacity: 8,
                ..ShadowSettings::default()
            },
        )
        .expect("shadow starts");
    engine.decide(
        &snapshot,
        Interface::Cli,
        &request,
        &DecisionMeta::default(),
    );
    drop(engine);
    // Every sender is gone once the workers end: nothing was compared.
    assert!(rx.recv_timeout(Duration::from_secs(10)).is_err());
}

/// `@shadow` policies (forbids and a permit, scoped and not) never change an
/// enforced answer: on every reference
/// user, application and tool, the live set with them decides exactly as the set
/// without them, and the all-enforced view as the set with them unannotated.
#[test]
fn shadow_policies_never_change_an_enforced_answer() {
    const STAGED: &str = r#"
@id("staged-forbid-all-calls") @shadow
forbid (principal, action in Mcp::Action::"tools/call", resource);
@id("staged-permit-summarizer") @shadow("x")
permit (principal == Mcp::Application::"summarizer", action in Mcp::Action::"tools/call", resource in Mcp::Server::"projects");
@id("staged-forbid-carol") @shadow
forbid (principal == Mcp::User::"carol", action, resource);
"#;
    let unannotated = STAGED
        .replace(" @shadow(\"x\")", "")
        .replace(" @shadow", "");
    let with = Snapshot::load(reference_with(&[("staged.cedar", STAGED)]).path(), 1).expect("with");
    let without = Snapshot::load(reference_with(&[]).path(), 1).expect("without");
    let enforced = Snapshot::load(
        reference_with(&[("staged.cedar", unannotated.as_str())]).path(),
        1,
    )
    .expect("enforced");
    assert_eq!(with.shadow_policies.len(), 3);
    let view = with.all_enforced.as_ref().expect("view");
    let tools = [
        ("docs", "search_documents"),
        ("docs", "get_document"),
        ("docs", "summarize_document"),
        ("docs", "delete_document"),
        ("docs", "executive_summary"),
        ("projects", "find_project"),
        ("projects", "get_project_lead"),
        ("projects", "list_issues"),
        ("projects", "update_issue"),
    ];
    let mut differ = 0;
    for user in [
        None,
        Some("alice"),
        Some("bob"),
        Some("carol"),
        Some("dave"),
    ] {
        for app in ["corpassist", "summarizer", "ops-console"] {
            for (server, tool) in tools {
                let mut r = DecisionRequest::new(
                    action("tools/call"),
                    Kind::Tool.uid(&qualified_id(server, tool)),
                );
                r.user = user.map(|u| Kind::User.uid(u));
                r.application = Some(Kind::Application.uid(app));
                r.server = Some(Kind::Server.uid(server));
                if let Some(a) = crate::policy::reference_arguments(server, tool) {
                    r.context.insert("arguments".into(), a);
                }
                let live = decide(&with, &r);
                let plain = decide(&without, &r);
                assert_eq!(live.allow, plain.allow, "{r:?}");
                assert_eq!(live.evaluations, plain.evaluations, "{r:?}");
                let shadow = decide(view, &r);
                let full = decide(&enforced, &r);
                assert_eq!(shadow.allow, full.allow, "{r:?}");
                assert_eq!(shadow.evaluations, full.evaluations, "{r:?}");
                if live.allow != shadow.allow {
                    differ += 1;
                    let d = difference(&live, &shadow);
                    assert!(
                        d.iter().all(|id| with.shadow_policies.contains(id)),
                        "{d:?} for {r:?}"
                    );
                }
            }
        }
    }
    assert!(
        differ > 0,
        "the staged policies make a difference somewhere"
    );
}
