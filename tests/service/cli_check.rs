//! `mcp-authz check` on the reference policies: every policy of the set is
//! exercised by at least one case, allowing or denying.

use serde_json::Value;

use crate::support::process::{bin, run, text};
use crate::support::reference_policies;

struct Case {
    action: &'static str,
    resource: &'static str,
    user: Option<&'static str>,
    app: Option<&'static str>,
    context: Option<&'static str>,
    allow: bool,
    /// Policies expected among the determining policies of the evaluations.
    policies: &'static [&'static str],
}

const fn case(
    action: &'static str,
    resource: &'static str,
    user: Option<&'static str>,
    app: Option<&'static str>,
    allow: bool,
    policies: &'static [&'static str],
) -> Case {
    Case {
        action,
        resource,
        user,
        app,
        context: None,
        allow,
        policies,
    }
}

const fn with_context(c: Case, context: &'static str) -> Case {
    Case {
        context: Some(context),
        ..c
    }
}

fn cases() -> Vec<Case> {
    vec![
        // The CorpAssist request of the scenario: summarize the Titan strategy document...
        with_context(
            case(
                "tools/call",
                "docs/summarize_document",
                Some("alice"),
                Some("corpassist"),
                true,
                &["employees-use-docs", "corpassist-read-docs"],
            ),
            r#"{"arguments": {"document_id": "titan/q1-strategy"}}"#,
        ),
        // ...and tell who the project lead is.
        case(
            "tools/call",
            "projects/get_project_lead",
            Some("alice"),
            Some("corpassist"),
            true,
            &["employees-look-up-projects", "corpassist-look-up-projects"],
        ),
        // Protocol housekeeping works for anyone.
        case(
            "initialize",
            "docs",
            Some("carol"),
            Some("summarizer"),
            true,
            &["session-housekeeping"],
        ),
        case(
            "tools/list",
            "projects",
            Some("mallory"),
            Some("corpassist"),
            true,
            &["session-housekeeping"],
        ),
        // CorpAssist never deletes, even for a document administrator.
        case(
            "tools/call",
            "docs/delete_document",
            Some("dave"),
            Some("corpassist"),
            false,
            &["corpassist-never-deletes"],
        ),
        // Deleting is for document administrators only.
        case(
            "tools/call",
            "docs/delete_document",
            Some("dave"),
            None,
            true,
            &["employees-use-docs"],
        ),
        case(
            "tools/call",
            "docs/delete_document",
            Some("alice"),
            None,
            false,
            &["only-doc-admins-delete"],
        ),
        // Contractors may not read finance documents: a condition on a tool argument.
        with_context(
            case(
                "tools/call",
                "docs/get_document",
                Some("carol"),
                Some("corpassist"),
                false,
                &["contractors-no-finance-documents"],
            ),
            r#"{"arguments": {"document_id": "finance/budget-2026"}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "docs/get_document",
                Some("carol"),
                Some("corpassist"),
                true,
                &["employees-use-docs"],
            ),
            r#"{"arguments": {"document_id": "titan/q1-strategy"}}"#,
        ),
        // ...nor finance resources; finance people may.
        case(
            "resources/read",
            "docs/docs://finance/budget-2026",
            Some("carol"),
            Some("corpassist"),
            false,
            &["contractors-no-finance-resources"],
        ),
        case(
            "resources/read",
            "docs/docs://finance/budget-2026",
            Some("bob"),
            Some("corpassist"),
            true,
            &["employees-use-docs", "corpassist-read-docs"],
        ),
        // Only project-ops may update issues, and only through an approved application.
        case(
            "tools/call",
            "projects/update_issue",
            Some("alice"),
            Some("ops-console"),
            true,
            &["project-ops-update-issues", "approved-apps-update-issues"],
        ),
        case(
            "tools/call",
            "projects/update_issue",
            Some("alice"),
            Some("corpassist"),
            false,
            &[],
        ),
        case(
            "tools/call",
            "projects/update_issue",
            Some("bob"),
            Some("ops-console"),
            false,
            &[],
        ),
        // An approved application alone (no user) may not update issues.
        case(
            "tools/call",
            "projects/update_issue",
            None,
            Some("ops-console"),
            false,
            &[],
        ),
        // CorpAssist searches in bounded pages.
        with_context(
            case(
                "tools/call",
                "docs/search_documents",
                Some("alice"),
                Some("corpassist"),
                false,
                &["corpassist-bounded-search"],
            ),
            r#"{"arguments": {"query": "titan", "max_results": 500}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "docs/search_documents",
                Some("alice"),
                Some("corpassist"),
                true,
                &["corpassist-read-docs"],
            ),
            r#"{"arguments": {"query": "titan", "max_results": 20}}"#,
        ),
        // The summarizer has narrower rights than CorpAssist.
        case(
            "tools/call",
            "docs/summarize_document",
            Some("bob"),
            Some("summarizer"),
            true,
            &["summarizer-search-and-summarize"],
        ),
        case(
            "tools/call",
            "docs/get_document",
            Some("bob"),
            Some("summarizer"),
            false,
            &[],
        ),
        // The executive summary prompt, through CorpAssist, for internal audiences only.
        with_context(
            case(
                "prompts/get",
                "docs/executive_summary",
                Some("bob"),
                Some("corpassist"),
                true,
                &["corpassist-read-docs"],
            ),
            r#"{"arguments": {"audience": "internal"}}"#,
        ),
        with_context(
            case(
                "prompts/get",
                "docs/executive_summary",
                Some("bob"),
                Some("corpassist"),
                false,
                &["corpassist-internal-summaries"],
            ),
            r#"{"arguments": {"audience": "press"}}"#,
        ),
        // A user the entity data does not know is in no group.
        case(
            "tools/call",
            "docs/get_document",
            Some("mallory"),
            Some("corpassist"),
            false,
            &[],
        ),
        // A tool the entity data does not list is covered by server-wide grants.
        case(
            "tools/call",
            "docs/translate_document",
            Some("alice"),
            Some("corpassist"),
            true,
            &["employees-use-docs", "corpassist-read-docs"],
        ),
        // An action no schema declares is a deny.
        case(
            "sampling/createMessage",
            "docs",
            Some("alice"),
            Some("corpassist"),
            false,
            &[],
        ),
        // No principal at all is a deny.
        case("tools/call", "docs/get_document", None, None, false, &[]),
    ]
}

fn check(c: &Case) -> (i32, Value, String) {
    let mut cmd = bin();
    cmd.args([
        "check",
        "--json",
        "--action",
        c.action,
        "--resource",
        c.resource,
        "--policies",
    ])
    .arg(reference_policies());
    if let Some(u) = c.user {
        cmd.args(["--user", u]);
    }
    if let Some(a) = c.app {
        cmd.args(["--app", a]);
    }
    // The cases with a user alone exercise the users' policies: decided as a
    // deployment that allows user-only requests decides them (by default such a
    // request is denied before evaluation, see tests/service/forged_requests.rs).
    if c.user.is_some() && c.app.is_none() {
        cmd.env("MCP_AUTHZ_DECISIONS_ALLOW_USER_ONLY", "true");
    }
    if let Some(ctx) = c.context {
        cmd.args(["--context", ctx]);
    }
    let out = run(&mut cmd);
    let (stdout, stderr) = text(&out);
    let json: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn reference_cases() {
    let mut exercised = std::collections::BTreeSet::new();
    for c in cases() {
        let (code, json, stderr) = check(&c);
        let label = format!(
            "{} {} user={:?} app={:?} context={:?}",
            c.action, c.resource, c.user, c.app, c.context
        );
        let expected = if c.allow { "allow" } else { "deny" };
        assert_eq!(json["decision"], expected, "{label}: {json}\n{stderr}");
        assert_eq!(code, if c.allow { 0 } else { 1 }, "{label}");
        let determining: Vec<String> = json["evaluations"]
            .as_array()
            .expect("evaluations")
            .iter()
            .flat_map(|e| e["policies"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        for p in c.policies {
            assert!(
                determining.iter().any(|d| d == p),
                "{label}: `{p}` not among {determining:?}"
            );
        }
        exercised.extend(determining);
    }
    // Every policy of the reference set decided at least one case.
    let dir = reference_policies();
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "cedar") {
            let text = std::fs::read_to_string(&path).expect("read");
            for line in text.lines().filter(|l| l.starts_with("@id(\"")) {
                all.push(
                    line.trim_start_matches("@id(\"")
                        .trim_end_matches("\")")
                        .to_owned(),
                );
            }
        }
    }
    assert_eq!(all.len(), 14);
    let missing: Vec<_> = all.iter().filter(|p| !exercised.contains(*p)).collect();
    assert!(
        missing.is_empty(),
        "policies no case exercised: {missing:?}"
    );
}

#[test]
fn human_output_explains_each_principal() {
    let out = run(bin()
        .args([
            "check",
            "--action",
            "tools/call",
            "--resource",
            "docs/delete_document",
            "--user",
            "dave",
            "--app",
            "corpassist",
            "--policies",
        ])
        .arg(reference_policies()));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.starts_with(
            "DENY: Mcp::Action::\"tools/call\" on Mcp::Tool::\"docs/delete_document\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("user        Mcp::User::\"dave\": allow"),
        "{stdout}"
    );
    assert!(
        stdout.contains("permitted by employees-use-docs (users.cedar:5)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("forbidden by corpassist-never-deletes (applications.cedar:"),
        "{stdout}"
    );
}

/// `--json` names the file and line of each determining policy, as the text does.
#[test]
fn json_output_has_the_origin_of_each_determining_policy() {
    let out = run(bin()
        .args([
            "check",
            "--json",
            "--action",
            "tools/call",
            "--resource",
            "docs/delete_document",
            "--user",
            "dave",
            "--app",
            "corpassist",
            "--policies",
        ])
        .arg(reference_policies()));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let d: Value = serde_json::from_str(&stdout).expect("json");
    let evaluations = d["evaluations"].as_array().expect("evaluations");
    assert_eq!(evaluations.len(), 2, "{stdout}");
    let human = run(bin()
        .args([
            "check",
            "--action",
            "tools/call",
            "--resource",
            "docs/delete_document",
            "--user",
            "dave",
            "--app",
            "corpassist",
            "--policies",
        ])
        .arg(reference_policies()));
    let (human, _) = text(&human);
    for e in evaluations {
        let ids = e["policies"].as_array().expect("ids");
        let origins = e["origins"].as_array().expect("origins");
        assert!(!ids.is_empty(), "{e}");
        assert_eq!(ids.len(), origins.len(), "{e}");
        for (id, origin) in ids.iter().zip(origins) {
            assert_eq!(&origin["id"], id);
            let file = origin["file"].as_str().expect("file");
            let line = origin["line"].as_u64().expect("line");
            assert!(file.ends_with(".cedar") && line > 0, "{origin}");
            // The same place the text output names.
            let id = id.as_str().expect("id");
            assert!(human.contains(&format!("{id} ({file}:{line})")), "{human}");
        }
    }
}

#[test]
fn server_flag_qualifies_a_bare_name() {
    let out = run(bin()
        .args([
            "check",
            "--json",
            "--action",
            "tools/call",
            "--resource",
            "get_project_lead",
            "--server",
            "projects",
            "--user",
            "bob",
            "--app",
            "corpassist",
            "--policies",
        ])
        .arg(reference_policies()));
    let (stdout, _) = text(&out);
    assert!(stdout.contains("\"decision\":\"allow\""), "{stdout}");
    assert!(stdout.contains("projects/get_project_lead"), "{stdout}");
}

#[test]
fn bad_input_is_a_clear_error() {
    let bad: &[&[&str]] = &[
        &[
            "--action",
            "tools/call",
            "--resource",
            "no_server",
            "--user",
            "alice",
        ],
        &[
            "--action",
            "tools/call",
            "--resource",
            "docs/x",
            "--user",
            "alice",
            "--context",
            "{not json",
        ],
        &[
            "--action",
            "tools/call",
            "--resource",
            "docs/x",
            "--user",
            "alice",
            "--context",
            "[1, 2]",
        ],
        &[
            "--action",
            "Mcp::Action::\"broken",
            "--resource",
            "docs/x",
            "--user",
            "alice",
        ],
    ];
    for args in bad {
        let out = run(bin()
            .arg("check")
            .args(*args)
            .arg("--policies")
            .arg(reference_policies()));
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
}

#[test]
fn check_refuses_invalid_policies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(bin()
        .args([
            "check",
            "--action",
            "ping",
            "--resource",
            "docs",
            "--user",
            "a",
            "--policies",
        ])
        .arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_configuration_is_one_line_and_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "http_listen = \"not an address\"\n").expect("write");
    for cmd in ["check", "serve"] {
        let mut c = bin();
        c.arg(cmd).arg("--config").arg(&config);
        if cmd == "check" {
            c.args(["--action", "ping", "--resource", "docs", "--user", "a"]);
        }
        let out = run(&mut c);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains("`http_listen`"), "{stderr}");
    }
    let out = run(bin().args(["serve", "--http-listen", "nowhere"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(bin()
        .args(["serve"])
        .env("MCP_AUTHZ_HTTP_LISTN", "127.0.0.1:1"));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("MCP_AUTHZ_HTTP_LISTN"), "{stderr}");
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["validate", "--help"],
        &["check", "--help"],
    ] {
        let out = run(bin().args(args));
        let (stdout, _) = text(&out);
        assert!(out.status.success(), "{args:?}");
        assert!(stdout.contains("Usage: mcp-authz"), "{args:?}: {stdout}");
    }
}
