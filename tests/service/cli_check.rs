//! `mcp-authz check` on the reference policies: every policy of the set is
//! exercised by at least one case, allowing or denying.

use serde_json::Value;

use crate::support::process::{bin, run, text};
use crate::support::{reference_context, reference_policies, with_reference_context};

struct Case {
    action: &'static str,
    resource: &'static str,
    user: Option<&'static str>,
    app: Option<&'static str>,
    context: Option<&'static str>,
    /// Token scopes (`--scope`).
    scopes: &'static [&'static str],
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
        scopes: &[],
        allow,
        policies,
    }
}

const fn with_scopes(c: Case, scopes: &'static [&'static str]) -> Case {
    Case { scopes, ..c }
}

const fn with_context(c: Case, context: &'static str) -> Case {
    Case {
        context: Some(context),
        ..c
    }
}

fn cases() -> Vec<Case> {
    vec![
        // The ops console deletes for a document administrator only with `docs.write`.
        with_scopes(
            case(
                "tools/call",
                "docs/delete_document",
                Some("dave"),
                Some("ops-console"),
                true,
                &["ops-console-deletes-with-write-scope"],
            ),
            &["docs.read", "docs.write"],
        ),
        with_scopes(
            case(
                "tools/call",
                "docs/delete_document",
                Some("dave"),
                Some("ops-console"),
                false,
                &[],
            ),
            &["docs.read"],
        ),
        // The session itself: opening the stream, ending it.
        case(
            "session/stream",
            "docs",
            Some("alice"),
            Some("corpassist"),
            true,
            &["sessions-stream-and-end"],
        ),
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
        // `since`, one argument name of two tools with two types: a datetime of
        // docs' search_documents (RFC 3339 offsets read as Cedar's)...
        with_context(
            case(
                "tools/call",
                "docs/search_documents",
                Some("carol"),
                Some("corpassist"),
                false,
                &["contractors-no-document-archive"],
            ),
            r#"{"arguments": {"query": "budget", "since": "2025-06-01T00:00:00Z"}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "docs/search_documents",
                Some("carol"),
                Some("corpassist"),
                false,
                &["contractors-no-document-archive"],
            ),
            r#"{"arguments": {"query": "budget", "since": "2026-01-01T00:30:00+05:30"}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "docs/search_documents",
                Some("carol"),
                Some("corpassist"),
                true,
                &[],
            ),
            r#"{"arguments": {"query": "budget", "since": "2026-01-01T00:00:00Z"}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "docs/search_documents",
                Some("alice"),
                Some("corpassist"),
                true,
                &[],
            ),
            r#"{"arguments": {"query": "budget", "since": "2025-06-01T00:00:00Z"}}"#,
        ),
        // ...and a number of days (a Long) of projects' list_issues: each typed for
        // its own tool, so the other type is a deny on either.
        with_context(
            case(
                "tools/call",
                "projects/list_issues",
                Some("alice"),
                Some("corpassist"),
                false,
                &["corpassist-recent-issues"],
            ),
            r#"{"arguments": {"project": "titan", "since": 365}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "projects/list_issues",
                Some("alice"),
                Some("corpassist"),
                true,
                &["corpassist-look-up-projects"],
            ),
            r#"{"arguments": {"project": "titan", "since": 90}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "projects/list_issues",
                Some("alice"),
                Some("corpassist"),
                false,
                &[],
            ),
            r#"{"arguments": {"project": "titan", "since": "2026-01-01T00:00:00Z"}}"#,
        ),
        with_context(
            case(
                "tools/call",
                "docs/search_documents",
                Some("carol"),
                Some("corpassist"),
                false,
                &[],
            ),
            r#"{"arguments": {"query": "budget", "since": 30}}"#,
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
        // A tool the server does not declare (`docs` has imported tools) is a deny,
        // whatever the server-wide grants say.
        case(
            "tools/call",
            "docs/translate_document",
            Some("alice"),
            Some("corpassist"),
            false,
            &[],
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
    for scope in c.scopes {
        cmd.args(["--scope", scope]);
    }
    // The cases with a user alone exercise the users' policies: decided as a
    // deployment that allows user-only requests decides them (by default such a
    // request is denied before evaluation, see tests/service/forged_requests.rs).
    if c.user.is_some() && c.app.is_none() {
        cmd.env("MCP_AUTHZ_DECISIONS_ALLOW_USER_ONLY", "true");
    }
    if let Some(ctx) = c
        .context
        .map(str::to_owned)
        .or_else(|| reference_context(c.action, c.resource))
    {
        cmd.args(["--context", &ctx]);
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
    assert_eq!(all.len(), 18);
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
            "--context",
            r#"{"arguments": {"document_id": "titan/old-draft"}}"#,
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
        stdout.contains("permitted by employees-use-docs (users.cedar:4)"),
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
            "--context",
            r#"{"arguments": {"document_id": "titan/old-draft"}}"#,
            "--policies",
        ])
        .arg(reference_policies()));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let d: Value = serde_json::from_str(&stdout).expect("json");
    let evaluations = d["evaluations"].as_array().expect("evaluations");
    assert_eq!(evaluations.len(), 2, "{stdout}");
    // The content digest a serving replica of the same files reports.
    let snapshot = mcp_authz::policy::Snapshot::load(&reference_policies(), 1).expect("policies");
    assert_eq!(d["policy_digest"], &*snapshot.digests.content, "{stdout}");
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
            "--context",
            r#"{"arguments": {"document_id": "titan/old-draft"}}"#,
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
            "--context",
            r#"{"arguments": {"project": "titan"}}"#,
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

/// `check --json` with `args` on the reference policies (user-only requests decided
/// as a deployment that allows them): exit status, the JSON object, stderr.
fn check_json(args: &[&str]) -> (i32, Value, String) {
    check_in(&reference_policies(), &[&["--json"][..], args].concat())
}

fn check_in(policies: &std::path::Path, args: &[&str]) -> (i32, Value, String) {
    let out = run(bin()
        .arg("check")
        .args(with_reference_context(args))
        .arg("--policies")
        .arg(policies)
        .env("MCP_AUTHZ_DECISIONS_ALLOW_USER_ONLY", "true"));
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn note_pairs(d: &Value) -> Vec<(String, String)> {
    d["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes: {d}"))
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap_or_default().to_owned(),
                n["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

const SEARCH: [&str; 8] = [
    "--action",
    "tools/call",
    "--resource",
    "docs/search_documents",
    "--user",
    "alice",
    "--app",
    "corpassist",
];

/// Each kind of note, in `--json` and in the text, with the decision and its exit
/// status unchanged; `--strict` makes it an error (exit 2) after printing the decision.
#[test]
fn notes_say_what_was_dropped_or_not_known() {
    fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        [&SEARCH[..], extra].concat()
    }
    let cases: Vec<(Vec<&str>, &str, &str, bool)> = vec![
        // The mistyped key of issue 15: dropped, and the forbid it meant to test never ran.
        (
            with(&[
                "--context",
                r#"{"argument": {"max_results": 500}, "arguments": {"query": "titan"}}"#,
            ]),
            "undeclared_context",
            "argument",
            true,
        ),
        (
            // The server's tool does not declare it: a deny by default.
            with(&[
                "--context",
                r#"{"arguments": {"query": "titan", "limit": 500}}"#,
            ]),
            "undeclared_argument",
            "limit",
            false,
        ),
        (
            with(&["--claim", r#"team="search""#]),
            "undeclared_claim",
            "team",
            true,
        ),
        (
            vec![
                "--action",
                "tools/call",
                "--resource",
                "docs/search_documents",
                "--user",
                "mallory",
                "--app",
                "corpassist",
            ],
            "unknown_user",
            "mallory",
            false,
        ),
        (
            vec![
                "--action",
                "tools/call",
                "--resource",
                "docs/search_documents",
                "--user",
                "alice",
                "--app",
                "corpasist",
            ],
            "unknown_application",
            "corpasist",
            false,
        ),
        (
            vec![
                "--action",
                "tools/call",
                "--resource",
                "docs/search_documents",
                "--user",
                "alice",
                "--group",
                "emplyees",
                "--app",
                "corpassist",
            ],
            "unknown_group",
            "emplyees",
            true,
        ),
        (
            vec![
                "--action",
                "tools/call",
                "--resource",
                "docs/translate_document",
                "--user",
                "alice",
                "--app",
                "corpassist",
            ],
            // `docs` has imported tools: a tool it does not declare is a deny.
            "unknown_tool",
            "docs/translate_document",
            false,
        ),
        (
            vec![
                "--action",
                "resources/read",
                "--resource",
                "docs/docs://titan/q2-strategy",
                "--user",
                "alice",
                "--app",
                "corpassist",
            ],
            "unknown_resource",
            "docs/docs://titan/q2-strategy",
            true,
        ),
        (
            vec![
                "--action",
                "prompts/get",
                "--resource",
                "docs/weekly_digest",
                "--user",
                "alice",
                "--app",
                "corpassist",
            ],
            // `docs` has imported prompts: one it does not declare is a deny.
            "unknown_prompt",
            "docs/weekly_digest",
            false,
        ),
        (
            vec![
                "--action",
                "tools/list",
                "--resource",
                "billing",
                "--user",
                "alice",
                "--app",
                "corpassist",
            ],
            "unknown_server",
            "billing",
            true,
        ),
    ];
    for (args, kind, name, allow) in cases {
        let label = format!("{kind} {args:?}");
        let (code, d, stderr) = check_json(&args);
        assert_eq!(code, if allow { 0 } else { 1 }, "{label}: {d}\n{stderr}");
        assert_eq!(
            d["decision"],
            if allow { "allow" } else { "deny" },
            "{label}"
        );
        assert_eq!(
            note_pairs(&d),
            [(kind.to_owned(), name.to_owned())],
            "{label}: {d}"
        );
        let message = d["notes"][0]["message"].as_str().expect("message");
        assert!(message.contains(&format!("`{name}`")), "{label}: {message}");
        // The text says the same, after the decision.
        let out = run(bin()
            .arg("check")
            .args(with_reference_context(&args))
            .arg("--policies")
            .arg(reference_policies()));
        let (stdout, _) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{label}: {stdout}");
        assert!(
            stdout.contains(&format!("\n  note: {message}\n")),
            "{label}: {stdout}"
        );
        // `--strict`: the decision is printed, then one error line naming the note; exit 2.
        let (strict, d, stderr) = check_json(&[&args[..], &["--strict"]].concat());
        assert_eq!(strict, 2, "{label}: {stderr}");
        assert_eq!(
            d["decision"],
            if allow { "allow" } else { "deny" },
            "{label}"
        );
        assert_eq!(stderr.lines().count(), 1, "{label}: {stderr}");
        assert!(
            stderr.starts_with("error: `--strict`: 1 note: ")
                && stderr.contains(&format!("{kind} `{name}`")),
            "{label}: {stderr}"
        );
    }
}

/// The forbid that the mistyped key failed to exercise does fire when the key is
/// right, and a request with nothing to note passes `--strict` with its own exit status.
#[test]
fn strict_passes_a_request_with_nothing_to_note() {
    for (context, code, decision) in [
        (
            r#"{"arguments": {"query": "titan", "max_results": 500}}"#,
            1,
            "deny",
        ),
        (
            r#"{"arguments": {"query": "titan", "max_results": 5}}"#,
            0,
            "allow",
        ),
    ] {
        let (c, d, stderr) =
            check_json(&[&SEARCH[..], &["--context", context, "--strict"]].concat());
        assert_eq!(
            (c, d["decision"].as_str()),
            (code, Some(decision)),
            "{stderr}"
        );
        assert_eq!(d["notes"], serde_json::json!([]), "{d}");
        assert!(stderr.is_empty(), "{stderr}");
    }
    // A user with groups given for the request (as a token's user) is not a note.
    let (c, d, _) = check_json(&[
        "--action",
        "tools/call",
        "--resource",
        "docs/get_document",
        "--user",
        "erin",
        "--group",
        "engineering",
        "--app",
        "corpassist",
        "--strict",
    ]);
    assert_eq!((c, d["notes"].clone()), (0, serde_json::json!([])), "{d}");
}

/// `--group` makes the user a member for this request, as a token's groups do: a user
/// the entity data does not know becomes an employee, a contractor meets the forbid
/// on finance documents, and a document administrator may delete.
#[test]
fn groups_change_decisions_as_a_tokens_groups_do() {
    let get = |user: &str, groups: &[&str], context: Option<&str>| {
        let mut args = vec![
            "--action",
            "tools/call",
            "--resource",
            "docs/get_document",
            "--user",
            user,
            "--app",
            "corpassist",
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        if let Some(c) = context {
            args.extend(["--context", c]);
        }
        let (code, d, stderr) = check_json(&args);
        let determining: Vec<Value> = d["evaluations"]
            .as_array()
            .unwrap_or_else(|| panic!("{d}\n{stderr}"))
            .iter()
            .flat_map(|e| e["policies"].as_array().cloned().unwrap_or_default())
            .collect();
        (code, d, determining)
    };
    let (code, d, _) = get("erin", &[], None);
    assert_eq!(code, 1, "{d}");
    let (code, d, determining) = get("erin", &["engineering"], None);
    assert_eq!(code, 0, "{d}");
    assert_eq!(
        d["groups"],
        serde_json::json!(["Mcp::Group::\"engineering\""])
    );
    assert!(determining.contains(&"employees-use-docs".into()), "{d}");
    let finance = Some(r#"{"arguments": {"document_id": "finance/budget-2026"}}"#);
    let (code, _, _) = get("erin", &["engineering"], finance);
    assert_eq!(code, 0);
    let (code, d, determining) = get("erin", &["contractors"], finance);
    assert_eq!(code, 1, "{d}");
    assert!(
        determining.contains(&"contractors-no-finance-documents".into()),
        "{d}"
    );
    // Groups add to those of the entity data: alice becomes a document administrator.
    let delete = |groups: &[&str]| {
        let mut args = vec![
            "--action",
            "tools/call",
            "--resource",
            "docs/delete_document",
            "--user",
            "alice",
        ];
        for g in groups {
            args.extend(["--group", g]);
        }
        check_json(&args).0
    };
    assert_eq!(delete(&[]), 1);
    assert_eq!(delete(&["doc-admins"]), 0);
}

/// Policies that read `context.scopes` and `context.claims` (the reference set has
/// none), with the reference policies.
const TOKEN_FACT_POLICIES: &str = r#"
@id("deletes-need-the-delete-scope")
forbid (principal, action in Mcp::Action::"tools/call", resource == Mcp::Tool::"docs/delete_document")
unless { context has scopes && context.scopes.contains("docs.delete") };

@id("finance-documents-for-finance")
forbid (principal, action in Mcp::Action::"tools/call", resource == Mcp::Tool::"docs/get_document")
when { context has arguments && context.arguments has document_id && context.arguments.document_id like "finance/*" }
unless { context has claims && context.claims has department && context.claims.department == "finance" };
"#;

#[test]
fn scopes_and_claims_change_decisions() {
    let dir = crate::support::copy_of_reference();
    std::fs::write(dir.path().join("token_facts.cedar"), TOKEN_FACT_POLICIES).expect("write");
    let delete = |extra: &[&str]| {
        let args = [
            &[
                "--json",
                "--action",
                "tools/call",
                "--resource",
                "docs/delete_document",
                "--user",
                "dave",
            ][..],
            extra,
        ]
        .concat();
        check_in(dir.path(), &args)
    };
    let (code, d, _) = delete(&[]);
    assert_eq!(code, 1, "{d}");
    assert_eq!(d["scopes"], Value::Null, "no token facts: {d}");
    let (code, d, _) = delete(&["--scope", "docs.read"]);
    assert_eq!(code, 1, "{d}");
    assert_eq!(
        d["evaluations"][0]["policies"],
        serde_json::json!(["deletes-need-the-delete-scope"])
    );
    let (code, d, _) = delete(&["--scope", "docs.read", "--scope", "docs.delete"]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["scopes"], serde_json::json!(["docs.read", "docs.delete"]));

    let budget = |extra: &[&str]| {
        let args = [
            &[
                "--json",
                "--action",
                "tools/call",
                "--resource",
                "docs/get_document",
                "--user",
                "bob",
                "--app",
                "corpassist",
                "--context",
                r#"{"arguments": {"document_id": "finance/budget-2026"}}"#,
            ][..],
            extra,
        ]
        .concat();
        check_in(dir.path(), &args)
    };
    let (code, d, _) = budget(&[]);
    assert_eq!(code, 1, "{d}");
    let (code, d, _) = budget(&["--claim", r#"department="engineering""#]);
    assert_eq!(code, 1, "{d}");
    let (code, d, _) = budget(&["--claim", r#"department="finance""#]);
    assert_eq!(code, 0, "{d}");
    assert_eq!(d["claims"], serde_json::json!({ "department": "finance" }));
    assert_eq!(d["notes"], serde_json::json!([]), "{d}");
    // A claim of another type than the schema declares is a deny, as from a token.
    let (code, d, _) = budget(&["--claim", "department=7"]);
    assert_eq!(code, 1, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("claims.department")),
        "{d}"
    );
}

/// The flags give the request exactly what a verified token with the same facts gives.
#[test]
fn flags_decide_as_a_token_with_the_same_facts() {
    use crate::support::config;
    use crate::support::tokens::TestKey;
    let dir = crate::support::copy_of_reference();
    std::fs::write(dir.path().join("token_facts.cedar"), TOKEN_FACT_POLICIES).expect("write");
    let conf = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(1, "k1");
    let config = config::write(
        conf.path(),
        &[
            &format!("policies = \"{}\"\n", dir.path().display()),
            &config::test_issuer(conf.path(), &key),
            "context_claims = [\"department\", \"team\"]\n",
        ],
    );
    let facts = serde_json::json!({
        "sub": "erin",
        "azp": "corpassist",
        "groups": ["contractors"],
        "scope": "docs.read docs.delete",
        "department": "finance",
        "team": "search",
    });
    let flags = [
        "--user",
        "erin",
        "--app",
        "corpassist",
        "--group",
        "contractors",
        "--scope",
        "docs.read",
        "--scope",
        "docs.delete",
        "--claim",
        r#"department="finance""#,
        "--claim",
        r#"team="search""#,
    ];
    for (resource, context) in [
        (
            "docs/get_document",
            r#"{"arguments": {"document_id": "finance/budget-2026"}}"#,
        ),
        (
            "docs/get_document",
            r#"{"arguments": {"document_id": "titan/q1"}}"#,
        ),
        ("docs/delete_document", "{}"),
    ] {
        let base = [
            "check",
            "--json",
            "--action",
            "tools/call",
            "--resource",
            resource,
            "--context",
            context,
            "--config",
        ];
        let by_token = run(bin()
            .args(base)
            .arg(&config)
            .args(["--token", &key.token(facts.clone())]));
        let by_flags = run(bin().args(base).arg(&config).args(flags));
        let (t, te) = text(&by_token);
        let (f, fe) = text(&by_flags);
        let t: Value = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}{te}"));
        let f: Value = serde_json::from_str(&f).unwrap_or_else(|e| panic!("{e}: {f}{fe}"));
        for key in [
            "decision",
            "reason",
            "user",
            "application",
            "groups",
            "scopes",
            "claims",
            "notes",
            "evaluations",
        ] {
            assert_eq!(t[key], f[key], "{resource} {context} `{key}`:\n{t}\n{f}");
        }
        assert_eq!(by_token.status.code(), by_flags.status.code());
    }
}

#[test]
fn bad_token_fact_flags_are_a_clear_error() {
    let user: &[&str] = &[
        "--action",
        "tools/call",
        "--resource",
        "docs/get_document",
        "--user",
        "alice",
        "--app",
        "corpassist",
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--claim", "department"], "is not NAME=JSON"),
        (&["--claim", "=\"x\""], "is not NAME=JSON"),
        (&["--claim", "department=finance"], "the value is not JSON"),
        (&["--claim", "department="], "the value is not JSON"),
        (
            &["--claim", "team=1", "--claim", "team=2"],
            "`--claim team=...` is given twice",
        ),
        (
            &["--scope", "docs.read docs.write"],
            "`--scope` must be one scope",
        ),
        (&["--scope", ""], "`--scope` must be one scope"),
        (&["--group", ""], "`--group` must name a group"),
        (&["--token", "a.b.c", "--scope", "docs.read"], "not both"),
        (&["--token", "a.b.c", "--group", "employees"], "not both"),
    ];
    for (extra, expected) in cases {
        let (code, d, stderr) = check_json(&[user, extra].concat());
        assert_eq!(code, 2, "{extra:?}: {stderr}");
        assert_eq!(d, Value::Null, "{extra:?}: no decision is printed");
        assert_eq!(stderr.lines().count(), 1, "{extra:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{extra:?}: {stderr}"
        );
    }
    // Groups are the user's.
    let (code, _, stderr) = check_json(&[
        "--action",
        "tools/call",
        "--resource",
        "docs/get_document",
        "--app",
        "corpassist",
        "--group",
        "employees",
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        stderr.trim(),
        "error: `--group` needs `--user`: groups are the user's"
    );
}

/// The core gives `scopes` and `claims` to actions of the `Mcp` namespace only: for
/// another action, even one that declares `claims`, they are a note.
#[test]
fn token_facts_outside_the_mcp_namespace_are_a_note() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        "namespace Mcp { entity User; entity Group; entity Server; }\n\
         namespace Other { entity Doc; action \"read\" appliesTo { principal: Mcp::User, \
         resource: Doc, context: { claims?: { a?: String } } }; }\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("p.cedar"),
        "permit (principal, action, resource) when { context has claims };\n",
    )
    .expect("write");
    let (code, d, stderr) = check_in(
        dir.path(),
        &[
            "--json",
            "--action",
            r#"Other::Action::"read""#,
            "--resource",
            r#"Other::Doc::"d""#,
            "--user",
            "u",
            "--claim",
            r#"a="x""#,
        ],
    );
    assert_eq!(code, 1, "{d}\n{stderr}");
    assert_eq!(
        note_pairs(&d),
        [
            ("undeclared_context".to_owned(), "claims".to_owned()),
            ("unknown_user".to_owned(), "u".to_owned()),
            ("unknown_entity".to_owned(), r#"Other::Doc::"d""#.to_owned()),
        ],
        "{d}"
    );
}

/// A `@shadow` policy does not change `check`'s answer; `--json` says what it would
/// have decided (`shadow`), and the text says it in a line.
#[test]
fn a_shadow_policy_is_shown_not_enforced() {
    let dir = crate::support::copy_of_reference();
    std::fs::write(
        dir.path().join("staged.cedar"),
        "@id(\"staged-no-get-document\")\n@shadow\nforbid (principal, action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/get_document\");\n",
    )
    .expect("write");
    let args = [
        "--json",
        "--action",
        "tools/call",
        "--resource",
        "docs/get_document",
        "--user",
        "alice",
        "--app",
        "corpassist",
    ];
    let (code, d, err) = check_in(dir.path(), &args);
    assert_eq!(code, 0, "{d}{err}");
    assert_eq!(d["decision"], "allow", "{d}");
    assert_eq!(
        d["shadow_policies"],
        serde_json::json!(["staged-no-get-document"])
    );
    assert_eq!(d["shadow"]["decision"], "deny", "{d}");
    assert_eq!(
        d["shadow"]["shadow_policies"],
        serde_json::json!(["staged-no-get-document"])
    );
    let out = run(bin()
        .arg("check")
        .args(with_reference_context(&args[1..]))
        .arg("--policies")
        .arg(dir.path()));
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("ALLOW"), "{stdout}");
    assert!(
        stdout.contains(
            "shadow      `staged-no-get-document` evaluated, not enforced: with them deny"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("decided by staged-no-get-document"),
        "{stdout}"
    );
}
