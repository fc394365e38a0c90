//! Hot reload: the policy store and its watcher in-process, on real directories.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mcp_authz::authz::{DecisionRequest, Engine};
use mcp_authz::mcp::{Kind, action, qualified_id};
use mcp_authz::policy::{PolicyStore, WatchOptions, spawn_watcher};
use serde_json::{Value, json};

use crate::support::inproc::{self, admin_of, get, state};
use crate::support::{
    Capture, SUMMARIZER_GRANT, copy_dir, copy_of_reference, poll, reference_arguments,
    reference_policies, replace_file, run_alone,
};

fn summarizer_gets_document() -> DecisionRequest {
    let mut r = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid(&qualified_id("docs", "get_document")),
    );
    r.user = Some(Kind::User.uid("bob"));
    r.application = Some(Kind::Application.uid("summarizer"));
    r.server = Some(Kind::Server.uid("docs"));
    r.context.insert(
        "arguments".into(),
        reference_arguments("docs/get_document").expect("a reference tool"),
    );
    r
}

/// The engine's decision of [`summarizer_gets_document`] on its current snapshot.
fn decided(engine: &mcp_authz::authz::Engine) -> std::sync::Arc<mcp_authz::authz::Decision> {
    engine.evaluate(&engine.snapshot(), &summarizer_gets_document())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn watch(dir: &Path, poll_interval: Duration) -> (tokio::runtime::Runtime, Engine) {
    let rt = runtime();
    let engine = inproc::engine(dir);
    let _guard = rt.enter();
    spawn_watcher(
        Arc::clone(engine.store()),
        WatchOptions {
            debounce: Duration::from_millis(100),
            poll_interval,
        },
    );
    (rt, engine)
}

#[test]
fn an_edit_flips_the_decision_within_two_seconds() {
    let dir = copy_of_reference();
    let (_rt, engine) = watch(dir.path(), Duration::ZERO);
    let before = decided(&engine);
    assert!(!before.allow);
    let path = dir.path().join("applications.cedar");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("{text}\n{SUMMARIZER_GRANT}")).expect("write");
    let after = poll(Duration::from_secs(2), || {
        let d = decided(&engine);
        d.allow.then_some(d)
    })
    .expect("the edit was not picked up within 2 s");
    assert_eq!(after.generation, before.generation + 1);
    assert!(
        after.evaluations[1]
            .policies
            .contains(&"summarizer-gets-documents".to_owned())
    );
    // And back.
    std::fs::write(&path, text).expect("write");
    poll(Duration::from_secs(2), || {
        (!decided(&engine).allow).then_some(())
    })
    .expect("the revert was not picked up within 2 s");
}

#[test]
fn a_broken_file_keeps_the_last_good_snapshot() {
    let dir = copy_of_reference();
    let (_rt, engine) = watch(dir.path(), Duration::ZERO);
    std::fs::write(dir.path().join("grant.cedar"), SUMMARIZER_GRANT).expect("write");
    poll(Duration::from_secs(2), || {
        decided(&engine).allow.then_some(())
    })
    .expect("grant picked up");
    let good = engine.store().snapshot().generation;
    // A broken edit: the grant loses its closing parenthesis.
    replace_file(
        &dir.path().join("grant.cedar"),
        &SUMMARIZER_GRANT.replace(");", ";"),
    );
    let status = poll(Duration::from_secs(2), || {
        let s = engine.store().status();
        (!s.in_sync).then_some(s)
    })
    .expect("the broken file was not noticed");
    assert!(
        status
            .last_errors
            .iter()
            .any(|e| e.starts_with("grant.cedar:2:")),
        "{:?}",
        status.last_errors
    );
    assert_eq!(status.failures, 1);
    // Still deciding on the last good snapshot.
    let d = decided(&engine);
    assert!(d.allow);
    assert_eq!(d.generation, good);
    // Fixing the file brings the store back in sync.
    replace_file(&dir.path().join("grant.cedar"), SUMMARIZER_GRANT);
    poll(Duration::from_secs(2), || {
        engine.store().status().in_sync.then_some(())
    })
    .expect("back in sync");
    assert!(decided(&engine).allow);
}

#[test]
fn decisions_in_flight_finish_on_their_snapshot() {
    let dir = copy_of_reference();
    let store = PolicyStore::open(dir.path()).expect("valid");
    let held = store.snapshot();
    std::fs::write(dir.path().join("grant.cedar"), SUMMARIZER_GRANT).expect("write");
    assert!(matches!(
        store.reload(false),
        mcp_authz::policy::ReloadOutcome::Reloaded { generation: 2, diff }
            if diff.added == ["summarizer-gets-documents"] && diff.removed.is_empty()
    ));
    assert!(!mcp_authz::authz::decide(&held, &summarizer_gets_document()).allow);
    assert!(mcp_authz::authz::decide(&store.snapshot(), &summarizer_gets_document()).allow);
    // Unchanged files make no new generation; a forced reload does.
    assert!(matches!(
        store.reload(false),
        mcp_authz::policy::ReloadOutcome::Unchanged
    ));
    assert!(matches!(
        store.reload(true),
        mcp_authz::policy::ReloadOutcome::Reloaded { generation: 3, diff } if diff.is_empty()
    ));
}

/// Lay out `dir` as Kubernetes mounts a ConfigMap: the files in a timestamped
/// directory, `..data` linking to it, and top-level links through `..data`.
#[cfg(unix)]
fn configmap(dir: &Path, version: &str, files: &Path) {
    use std::os::unix::fs::symlink;
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).expect("mkdir");
    copy_dir(files, &versioned);
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).expect("symlink");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for entry in std::fs::read_dir(&versioned).expect("read") {
        let name = entry.expect("entry").file_name();
        let link = dir.join(&name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(&name), &link).expect("symlink");
        }
    }
}

#[cfg(unix)]
#[test]
fn a_configmap_data_swap_is_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    configmap(dir.path(), "2026_11_25_10_00_00.1", &reference_policies());
    let (_rt, engine) = watch(dir.path(), Duration::ZERO);
    assert!(!decided(&engine).allow);
    // The next version of the ConfigMap carries the grant in applications.cedar.
    let next = copy_of_reference();
    let path = next.path().join("applications.cedar");
    let text = std::fs::read_to_string(&path).expect("read");
    std::fs::write(&path, format!("{text}\n{SUMMARIZER_GRANT}")).expect("write");
    configmap(dir.path(), "2026_11_25_10_05_00.2", next.path());
    std::fs::remove_dir_all(dir.path().join("..2026_11_25_10_00_00.1"))
        .expect("remove old version");
    let d = poll(Duration::from_secs(2), || {
        let d = decided(&engine);
        d.allow.then_some(d)
    })
    .expect("the ConfigMap swap was not picked up within 2 s");
    assert_eq!(d.generation, 2);
    // Hidden versioned directories are not read twice: the set has one more policy.
    assert_eq!(engine.store().snapshot().policy_count(), 19);
}

#[cfg(unix)]
#[test]
fn a_replaced_directory_is_watched_again() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().expect("tempdir");
    let v1 = root.path().join("v1");
    let v2 = root.path().join("v2");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::create_dir(&v2).expect("mkdir");
    copy_dir(&reference_policies(), &v1);
    copy_dir(&reference_policies(), &v2);
    std::fs::write(v2.join("grant.cedar"), SUMMARIZER_GRANT).expect("write");
    let link = root.path().join("policies");
    symlink(&v1, &link).expect("symlink");
    let (_rt, engine) = watch(&link, Duration::from_millis(300));
    assert!(!decided(&engine).allow);
    // Point the directory elsewhere: the old watch sees nothing of it.
    let tmp = root.path().join("policies.tmp");
    symlink(&v2, &tmp).expect("symlink");
    std::fs::rename(&tmp, &link).expect("swap");
    poll(Duration::from_secs(3), || {
        decided(&engine).allow.then_some(())
    })
    .expect("the replaced directory was not picked up");
    // The new directory is watched: an edit there is seen.
    std::fs::remove_file(v2.join("grant.cedar")).expect("rm");
    poll(Duration::from_secs(3), || {
        (!decided(&engine).allow).then_some(())
    })
    .expect("an edit in the new directory was not picked up");
}

/// The service's log, as JSON lines: the watcher logs from its own threads, so the
/// subscriber is the global one, and the test that reads it runs alone in its own
/// process (`support::run_alone`). Records are told apart by the policy directory.
fn logs() -> &'static Capture {
    static LOGS: OnceLock<Capture> = OnceLock::new();
    LOGS.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        capture
    })
}

/// The fields of the log records about `dir` whose message starts with `message`.
fn records(dir: &Path, message: &str) -> Vec<Value> {
    let dir = dir.display().to_string();
    logs()
        .lines()
        .into_iter()
        .map(|l| l["fields"].clone())
        .filter(|f| {
            f["dir"] == dir.as_str()
                && f["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

/// The record of the reload that swapped in `generation`, once there is one.
fn reload_record(dir: &Path, generation: u64) -> Value {
    poll(Duration::from_secs(3), || {
        records(dir, "policies reloaded")
            .into_iter()
            .find(|r| r["generation"] == generation)
    })
    .unwrap_or_else(|| panic!("no reload to generation {generation} was logged"))
}

/// The digest `/v1/policies` shows for policy `id`.
fn digest_of(policies: &Value, id: &str) -> Value {
    policies["policy_ids"]
        .as_array()
        .and_then(|ids| ids.iter().find(|p| p["id"] == id))
        .map(|p| p["digest"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn every_reload_logs_and_shows_what_changed() {
    if run_alone("reload::every_reload_logs_and_shows_what_changed") {
        return;
    }
    logs();
    let dir = copy_of_reference();
    let (rt, engine) = watch(dir.path(), Duration::ZERO);
    let admin = admin_of(state(engine.clone(), None));
    let policies = || rt.block_on(get(&admin, "/v1/policies", &[])).json();

    // At start: the count and the digest of what serves.
    let start = records(dir.path(), "policy set loaded");
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(
        (start[0]["generation"].clone(), start[0]["policies"].clone()),
        (json!(1), json!(18))
    );
    let p = policies();
    assert_eq!(p["last_reload"], Value::Null);
    assert_eq!(p["digest"]["content"], start[0]["content_digest"]);
    assert!(
        p["digest"]["schema"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert!(
        p["digest"]["entities"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let bounded = digest_of(&p, "corpassist-bounded-search");
    assert!(
        bounded.as_str().is_some_and(|d| d.starts_with("sha256:")),
        "{p}"
    );

    // Added.
    replace_file(&dir.path().join("grant.cedar"), SUMMARIZER_GRANT);
    let r = reload_record(dir.path(), 2);
    assert_eq!(r["message"], "policies reloaded");
    assert_eq!(r["previous_generation"], 1);
    assert_eq!(r["added"], r#"["summarizer-gets-documents"]"#);
    assert_eq!(
        (r["removed"].clone(), r["changed"].clone()),
        (json!("[]"), json!("[]"))
    );
    assert_eq!(
        [&r["added_count"], &r["removed_count"], &r["changed_count"]],
        [&json!(1), &json!(0), &json!(0)]
    );
    assert_eq!(
        (r["schema_changed"].clone(), r["entities_changed"].clone()),
        (json!(false), json!(false))
    );
    assert_eq!(r["policies"], 19);
    let p = policies();
    assert_eq!(p["generation"], 2);
    assert_eq!(p["digest"]["content"], r["content_digest"]);
    assert_ne!(r["content_digest"], r["previous_content_digest"]);
    let last = &p["last_reload"];
    assert_eq!(
        (
            last["from_generation"].clone(),
            last["to_generation"].clone()
        ),
        (json!(1), json!(2))
    );
    assert_eq!(last["added"], json!(["summarizer-gets-documents"]));
    assert_eq!(last["removed"], json!([]));
    assert_eq!(last["changed"], json!([]));
    assert!(last["at_unix"].as_u64().is_some_and(|t| t > 0));
    assert!(digest_of(&p, "summarizer-gets-documents").is_string());

    // Changed: a condition of one policy.
    let path = dir.path().join("applications.cedar");
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains("max_results > 50"));
    replace_file(&path, &text.replace("max_results > 50", "max_results > 20"));
    let r = reload_record(dir.path(), 3);
    assert_eq!(r["changed"], r#"["corpassist-bounded-search"]"#);
    assert_eq!(
        (r["added_count"].clone(), r["removed_count"].clone()),
        (json!(0), json!(0))
    );
    let p = policies();
    assert_eq!(
        p["last_reload"]["changed"],
        json!(["corpassist-bounded-search"])
    );
    assert_ne!(digest_of(&p, "corpassist-bounded-search"), bounded);

    // Removed.
    std::fs::remove_file(dir.path().join("grant.cedar")).expect("rm");
    let r = reload_record(dir.path(), 4);
    assert_eq!(r["removed"], r#"["summarizer-gets-documents"]"#);
    assert_eq!(r["policies"], 18);
    let p = policies();
    assert_eq!(
        p["last_reload"]["removed"],
        json!(["summarizer-gets-documents"])
    );
    assert_eq!(digest_of(&p, "summarizer-gets-documents"), Value::Null);
    let content = p["digest"]["content"].clone();

    // Changed files, unchanged content: a comment and blank lines.
    let text = std::fs::read_to_string(&path).expect("read");
    replace_file(
        &path,
        &format!("// reviewed\n\n{}\n\n", text.replace(";\n", ";\n\n")),
    );
    let r = reload_record(dir.path(), 5);
    assert_eq!(
        r["message"],
        "policies reloaded: no policy, schema or entity data changed"
    );
    assert_eq!(
        [&r["added_count"], &r["removed_count"], &r["changed_count"]],
        [&json!(0), &json!(0), &json!(0)]
    );
    assert_eq!(r["content_digest"], r["previous_content_digest"]);
    let p = policies();
    assert_eq!(p["digest"]["content"], content);
    assert_eq!(
        p["last_reload"],
        json!({
            "added": [], "removed": [], "changed": [], "schema_changed": false,
            "entities_changed": false, "from_generation": 4, "to_generation": 5,
            "at_unix": p["last_reload"]["at_unix"],
        })
    );
    // The same bytes again: no reload at all.
    let text = std::fs::read_to_string(&path).expect("read");
    replace_file(&path, &text);
    assert!(matches!(
        engine.store().reload(false),
        mcp_authz::policy::ReloadOutcome::Unchanged
    ));
    assert_eq!(engine.store().snapshot().generation, 5);

    // The schema, then the entity data.
    let schema = dir.path().join("mcp.cedarschema");
    let text = std::fs::read_to_string(&schema).expect("read");
    assert!(text.contains("department?: String,"));
    replace_file(
        &schema,
        &text.replace(
            "department?: String,",
            "department?: String,\n    title?: String,",
        ),
    );
    let r = reload_record(dir.path(), 6);
    assert_eq!(
        (r["schema_changed"].clone(), r["entities_changed"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(r["changed_count"], 0);
    let entities = dir.path().join("entities.json");
    let text = std::fs::read_to_string(&entities).expect("read");
    replace_file(
        &entities,
        &text.replacen(
            '[',
            r#"[ { "uid": { "type": "Mcp::User", "id": "zoe" }, "attrs": {}, "parents": [] },"#,
            1,
        ),
    );
    let r = reload_record(dir.path(), 7);
    assert_eq!(
        (r["schema_changed"].clone(), r["entities_changed"].clone()),
        (json!(false), json!(true))
    );
    let p = policies();
    assert_eq!(p["last_reload"]["entities_changed"], true);
    assert_eq!(p["last_reload"]["schema_changed"], false);

    // A broken change is no reload: the last diff stays.
    replace_file(
        &dir.path().join("broken.cedar"),
        "permit (principal, action, resource",
    );
    poll(Duration::from_secs(3), || {
        (!engine.store().status().in_sync).then_some(())
    })
    .expect("the broken file was not noticed");
    let p = policies();
    assert_eq!(p["last_reload"]["to_generation"], 7);
    assert_eq!(records(dir.path(), "policies reloaded").len(), 6);
}

/// A guardrail on a tool argument the schema does not declare: it can never apply.
const IMPOSSIBLE_FORBID: &str = "@id(\"refund-cap\")\nforbid (principal, action in Mcp::Action::\"tools/call\", resource)\nwhen { context has arguments && context.arguments has amount_cents && context.arguments.amount_cents > 100000 };\n";

/// A group the entity data does not define: a warning.
const UNDEFINED_GROUP: &str = "@id(\"engineering-reads-docs\")\npermit (principal in Mcp::Group::\"enginering\", action in Mcp::Action::\"resources/read\", resource in Mcp::Server::\"docs\");\n";

#[test]
fn a_reload_with_an_impossible_forbid_keeps_the_last_good_snapshot() {
    let dir = copy_of_reference();
    let store = PolicyStore::open(dir.path()).expect("valid");
    std::fs::write(dir.path().join("grant.cedar"), SUMMARIZER_GRANT).expect("write");
    assert!(matches!(
        store.reload(false),
        mcp_authz::policy::ReloadOutcome::Reloaded { generation: 2, .. }
    ));
    // The same file with a guardrail that guards nothing: refused, and why.
    std::fs::write(
        dir.path().join("grant.cedar"),
        format!("{SUMMARIZER_GRANT}\n{IMPOSSIBLE_FORBID}"),
    )
    .expect("write");
    let mcp_authz::policy::ReloadOutcome::Failed(problems) = store.reload(false) else {
        panic!("an impossible forbid was swapped in");
    };
    assert_eq!(problems.errors().count(), 1, "{problems}");
    let status = store.status();
    assert!(!status.in_sync);
    assert!(
        status
            .last_errors
            .iter()
            .any(|e| e.starts_with("grant.cedar:4:1: ")
                && e.contains("for policy `refund-cap`, policy is impossible")),
        "{:?}",
        status.last_errors
    );
    let snapshot = store.snapshot();
    assert_eq!(snapshot.generation, 2);
    assert!(snapshot.origins.contains_key("summarizer-gets-documents"));
    assert!(!snapshot.origins.contains_key("refund-cap"));
    assert!(mcp_authz::authz::decide(&snapshot, &summarizer_gets_document()).allow);
    // As a permit it is only a warning: swapped in.
    std::fs::write(
        dir.path().join("grant.cedar"),
        format!(
            "{SUMMARIZER_GRANT}\n{}",
            IMPOSSIBLE_FORBID.replace("forbid", "permit")
        ),
    )
    .expect("write");
    assert!(matches!(
        store.reload(false),
        mcp_authz::policy::ReloadOutcome::Reloaded { generation: 3, .. }
    ));
    let snapshot = store.snapshot();
    assert!(
        snapshot
            .warnings
            .one_line_each()
            .iter()
            .any(|w| w.contains("for policy `refund-cap`, policy is impossible")),
        "{:?}",
        snapshot.warnings
    );
    assert!(store.status().in_sync);
}

#[test]
fn with_deny_warnings_a_reload_with_a_warning_keeps_the_last_good_snapshot() {
    let dir = copy_of_reference();
    let deny = mcp_authz::policy::LoadOptions {
        deny_warnings: true,
    };
    let strict =
        PolicyStore::open_with(dir.path(), deny).expect("the reference set has no warning");
    let lenient = PolicyStore::open(dir.path()).expect("valid");
    std::fs::write(dir.path().join("extra.cedar"), UNDEFINED_GROUP).expect("write");
    // Without the option: a warning, and the policy serves.
    assert!(matches!(
        lenient.reload(false),
        mcp_authz::policy::ReloadOutcome::Reloaded { generation: 2, .. }
    ));
    assert!(
        lenient
            .snapshot()
            .warnings
            .one_line_each()
            .iter()
            .any(|w| w.starts_with("extra.cedar:2:")
                && w.contains(
                    "policy `engineering-reads-docs` names `Mcp::Group::\"enginering\"`"
                )),
        "{:?}",
        lenient.snapshot().warnings
    );
    // With it: refused, the last good snapshot serves.
    assert!(matches!(
        strict.reload(false),
        mcp_authz::policy::ReloadOutcome::Failed(_)
    ));
    let status = strict.status();
    assert!(!status.in_sync);
    assert!(
        status
            .last_errors
            .iter()
            .any(|e| e.contains("policy `engineering-reads-docs` names")),
        "{:?}",
        status.last_errors
    );
    assert_eq!(strict.snapshot().generation, 1);
    assert!(
        !strict
            .snapshot()
            .origins
            .contains_key("engineering-reads-docs")
    );
}

/// Startup applies the same rule: an impossible forbid, or a warning with
/// `validation.deny_warnings`, ends `serve` with the problems.
#[test]
fn startup_refuses_an_impossible_forbid_and_with_deny_warnings_a_warning() {
    let refused = |dir: &Path, env: &[(&str, &str)]| -> Vec<String> {
        let service = inproc::Launch::new(dir).envs(env).listening().start();
        match service.stop() {
            Err(mcp_authz::app::AppError::Policies(problems)) => {
                problems.errors().map(|p| p.message.clone()).collect()
            }
            other => panic!("expected the policy problems, got {other:?}"),
        }
    };
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("guard.cedar"), IMPOSSIBLE_FORBID).expect("write");
    let errors = refused(dir.path(), &[]);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("for policy `refund-cap`, policy is impossible")),
        "{errors:?}"
    );

    let dir = copy_of_reference();
    std::fs::write(dir.path().join("extra.cedar"), UNDEFINED_GROUP).expect("write");
    let errors = refused(
        dir.path(),
        &[("MCP_AUTHZ_VALIDATION_DENY_WARNINGS", "true")],
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`Mcp::Group::\"enginering\"`")),
        "{errors:?}"
    );
    // Without the setting the warning does not stop it.
    let service = inproc::Launch::new(dir.path()).start();
    assert!(service.stop().is_ok());
}
