//! `mcp-authz replay` on decision logs written by the service itself (in-process, its
//! decisions made over AuthZEN with verified tokens whose groups decide): the same
//! policies replay with no difference, a changed copy shows exactly the changed answers,
//! and what a log may also hold (junk lines, records without input, shadow records,
//! omitted or redacted arguments) is counted, not replayed or marked uncertain.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::inproc::Service;
use crate::support::process::{bin, run, text};
use crate::support::tokens::demo_token;
use crate::support::{config, copy_of_reference, http, reference_policies};

/// An AuthZEN evaluation of `tool` with `arguments`: as the holder of `token` when given
/// (erin: engineering, frank: contractors, both through corpassist), else as `user`
/// through `agent`. Returns the decision.
fn decide(
    service: &Service,
    token: Option<&str>,
    user: &str,
    agent: &str,
    tool: &str,
    arguments: Value,
) -> bool {
    let body = json!({
        "subject": { "type": "user", "id": user },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": tool },
        "context": { "agent": agent, "arguments": arguments },
    });
    let bearer = token.map(|t| format!("Bearer {}", demo_token(t)));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    let (status, _, reply) = http::request(
        &service.http,
        "POST",
        "/access/v1/evaluation",
        &headers,
        &body.to_string(),
    )
    .expect("AuthZEN answers");
    assert_eq!(status, 200, "{reply}");
    let reply: Value = serde_json::from_str(&reply).expect("JSON");
    reply["decision"].as_bool().expect("a decision")
}

/// The service on the reference policies with `decision_log` settings, logging to
/// `dir/decisions.jsonl`; `decisions` run against it; the log once it has stopped.
fn logged(dir: &Path, decision_log: &str, decisions: impl FnOnce(&Service)) -> String {
    let file = config::write(
        dir,
        &[
            &config::demo_issuer(),
            &format!("[decision_log]\nfile = \"decisions.jsonl\"\n{decision_log}"),
        ],
    );
    let service = Service::start(&reference_policies(), Some(&file));
    decisions(&service);
    service.stop().expect("stopped");
    std::fs::read_to_string(dir.join("decisions.jsonl")).expect("the decision log")
}

fn replay(log: &Path, policies: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = run(bin()
        .arg("replay")
        .arg("--log")
        .arg(log)
        .arg("--policies")
        .arg(policies)
        .args(extra));
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

const TITAN: &str = "titan/q1-strategy";

/// The reference policies with one forbid added (engineering may not get documents) and
/// one removed (corpassist may search in pages of any size).
fn candidate() -> tempfile::TempDir {
    let dir = copy_of_reference();
    let users = dir.path().join("users.cedar");
    let text = std::fs::read_to_string(&users).expect("read");
    std::fs::write(
        &users,
        format!(
            "{text}\n@id(\"engineering-no-get\")\nforbid (\n  principal in Mcp::Group::\"engineering\",\n  \
             action in Mcp::Action::\"tools/call\",\n  resource == Mcp::Tool::\"docs/get_document\"\n);\n"
        ),
    )
    .expect("write");
    let apps = dir.path().join("applications.cedar");
    let text = std::fs::read_to_string(&apps).expect("read");
    let bounded = "@id(\"corpassist-bounded-search\")\nforbid (\n  principal == Mcp::Application::\"corpassist\",\n  \
                   action == Mcp::Action::\"tools/call/docs/search_documents\",\n  resource\n)\nwhen\n\
                   { context.arguments has max_results && context.arguments.max_results > 50 };\n";
    assert!(text.contains(bounded), "{text}");
    std::fs::write(&apps, text.replace(bounded, "")).expect("write");
    dir
}

#[test]
fn the_service_log_replays_the_same_and_a_changed_set_shows_its_differences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = logged(dir.path(), "include_arguments = true\n", |s| {
        let doc = json!({ "document_id": TITAN });
        // erin's groups (engineering) and frank's (contractors) come from their tokens.
        assert!(decide(
            s,
            Some("erin"),
            "erin",
            "corpassist",
            "docs/get_document",
            doc.clone()
        ));
        assert!(!decide(
            s,
            Some("erin"),
            "erin",
            "corpassist",
            "docs/search_documents",
            json!({ "query": "titan", "max_results": 500 })
        ));
        assert!(!decide(
            s,
            Some("frank"),
            "frank",
            "corpassist",
            "docs/get_document",
            json!({ "document_id": "finance/budget-2026" })
        ));
        assert!(decide(
            s,
            None,
            "alice",
            "corpassist",
            "docs/get_document",
            doc.clone()
        ));
        assert!(!decide(
            s,
            None,
            "dave",
            "corpassist",
            "docs/delete_document",
            doc
        ));
    });
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(records.len(), 5, "{log}");
    // The token's groups are in the record's input, as per-request entity data.
    assert_eq!(
        records[0]["input"]["entities"][0],
        json!({"uid": "Mcp::User::\"erin\"", "parents": ["Mcp::Group::\"engineering\""], "attrs": {}}),
        "{log}"
    );
    assert!(
        records
            .iter()
            .all(|r| r["input"].get("arguments").is_none()),
        "{log}"
    );
    let file = dir.path().join("decisions.jsonl");

    // The same policies: no difference.
    let (code, stdout, stderr) = replay(&file, &reference_policies(), &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with(
            "replayed 5 of 5 live records: 5 same, 0 different (0 allow -> deny, 0 deny -> allow)\n\
             skipped: 0 without input, 0 other records, 0 malformed lines (of 5 lines)\n"
        ),
        "{stdout}"
    );
    let digest = records[0]["policy_digest"].as_str().expect("digest");
    assert!(
        stdout.contains(&format!(
            "policies: live {digest} (5); candidate {digest}\n"
        )),
        "{stdout}"
    );

    // A changed copy: exactly the changed answers, in log order.
    let changed = candidate();
    let (code, stdout, stderr) = replay(&file, changed.path(), &["--json"]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let rows: Vec<Value> = report["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| {
            json!([
                d["line"],
                d["user"],
                d["resource"],
                d["live"],
                d["candidate"],
                d["live_policies"],
                d["candidate_policies"],
                d["uncertain"]
            ])
        })
        .collect();
    assert_eq!(
        rows,
        [
            json!([1, "Mcp::User::\"erin\"", "Mcp::Tool::\"docs/get_document\"", "allow", "deny",
                   {"user": ["employees-use-docs"], "application": ["corpassist-read-docs"]},
                   {"user": ["engineering-no-get"], "application": ["corpassist-read-docs"]}, false]),
            json!([2, "Mcp::User::\"erin\"", "Mcp::Tool::\"docs/search_documents\"", "deny", "allow",
                   {"user": ["employees-use-docs"], "application": ["corpassist-bounded-search"]},
                   {"user": ["employees-use-docs"], "application": ["corpassist-read-docs"]}, false]),
            json!([4, "Mcp::User::\"alice\"", "Mcp::Tool::\"docs/get_document\"", "allow", "deny",
                   {"user": ["employees-use-docs"], "application": ["corpassist-read-docs"]},
                   {"user": ["engineering-no-get"], "application": ["corpassist-read-docs"]}, false]),
        ],
        "{stdout}"
    );
    let summary = &report["summary"];
    assert_eq!(
        [
            &summary["replayed"],
            &summary["same"],
            &summary["allow_to_deny"],
            &summary["deny_to_allow"],
            &summary["uncertain"]
        ],
        [&json!(5), &json!(2), &json!(2), &json!(1), &json!(0)],
        "{summary}"
    );
    assert_ne!(summary["candidate_policy_digest"], json!(digest));

    // The table, read from standard input.
    let mut child = bin()
        .args(["replay", "--log", "-", "--policies"])
        .arg(changed.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(log.as_bytes()).expect("write");
    }
    let out = child.wait_with_output().expect("replay");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("LINE  USER   APPLICATION  ACTION      RESOURCE"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("1     erin   corpassist   tools/call  docs/get_document")
            && lines[1].contains("allow -> deny")
            && lines[1].contains("  user: employees-use-docs; application: corpassist-read-docs  ")
            && lines[1].ends_with("  user: engineering-no-get; application: corpassist-read-docs"),
        "{stdout}"
    );
    assert!(lines[2].contains("deny -> allow"), "{stdout}");
    assert!(
        stdout.contains(
            "replayed 5 of 5 live records: 2 same, 3 different (2 allow -> deny, 1 deny -> allow)\n"
        ),
        "{stdout}"
    );
}

/// The lines of `log` (which must have `n`).
fn lines(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = log.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), n, "{log}");
    lines
}

#[test]
fn junk_records_without_input_shadow_records_and_missing_arguments_are_said() {
    let erin_and_frank = |s: &Service| {
        assert!(decide(
            s,
            Some("erin"),
            "erin",
            "corpassist",
            "docs/get_document",
            json!({ "document_id": TITAN })
        ));
        assert!(!decide(
            s,
            Some("frank"),
            "frank",
            "corpassist",
            "docs/get_document",
            json!({ "document_id": "finance/budget-2026" })
        ));
    };
    // Arguments not logged (the default), then logged with `document_id` redacted.
    let omitted_dir = tempfile::tempdir().expect("tempdir");
    let omitted = lines(&logged(omitted_dir.path(), "", erin_and_frank), 2);
    assert_eq!(
        serde_json::from_str::<Value>(&omitted[0]).expect("JSON")["input"]["arguments"],
        "omitted"
    );
    let redacted_dir = tempfile::tempdir().expect("tempdir");
    let redacted = lines(
        &logged(
            redacted_dir.path(),
            "include_arguments = true\nredact = [\"document_id\"]\n",
            erin_and_frank,
        ),
        2,
    );
    let mut without_input: Value = serde_json::from_str(&redacted[0]).expect("JSON");
    assert_eq!(without_input["input"]["arguments"], "redacted");
    without_input.as_object_mut().map(|o| o.remove("input"));
    let log = [
        omitted[0].clone(),
        omitted[1].clone(),
        "not json at all".to_owned(),
        json!({"record": "shadow", "decision": "deny", "live": "allow"}).to_string(),
        without_input.to_string(),
        redacted[0].clone(),
        redacted[1].clone(),
        String::new(),
        "{\"decision\": \"allow\", \"input\": ".to_owned(),
    ]
    .join("\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mixed.jsonl");
    std::fs::write(&file, &log).expect("write");

    // Erin's call without its required `document_id` is denied: a difference, uncertain;
    // frank's finance document redacted no longer matches `finance/*`: uncertain too.
    let (code, stdout, stderr) = replay(&file, &reference_policies(), &[]);
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("line 3 skipped: not JSON") && stderr.contains("line 9 skipped: not JSON"),
        "{stderr}"
    );
    assert!(
        stdout.contains("allow -> deny (uncertain: arguments omitted)")
            && stdout.contains("deny -> allow (uncertain: arguments redacted)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "replayed 4 of 5 live records: 2 same, 2 different (1 allow -> deny, 1 deny -> allow; \
             2 uncertain: the log lacked their arguments)\n\
             skipped: 1 without input, 1 other record, 2 malformed lines (of 9 lines)\n\
             arguments: replay lacked them for 2 records (omitted from the log) and had them \
             redacted for 2: those were decided without them\n"
        ),
        "{stdout}"
    );
    let (code, stdout, _) = replay(&file, &reference_policies(), &["--json", "--limit", "2"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["summary"]["replayed"], 2);
    assert_eq!(report["summary"]["uncertain"], 1);
    assert_eq!(report["differences"][0]["arguments"], "omitted");
}

#[test]
fn bad_input_is_exit_status_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing: PathBuf = dir.path().join("missing.jsonl");
    let (code, _, stderr) = replay(&missing, &reference_policies(), &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.starts_with("error: cannot open the log `"),
        "{stderr}"
    );
    let junk = dir.path().join("junk.jsonl");
    std::fs::write(&junk, "junk\n\n[1]\n").expect("write");
    let (code, _, stderr) = replay(&junk, &reference_policies(), &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("error: no decision record in `")
            && stderr.contains("(3 lines, 2 malformed)"),
        "{stderr}"
    );
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").expect("write");
    assert_eq!(replay(&empty, &reference_policies(), &[]).0, Some(2));
    // A policy directory that does not load.
    std::fs::write(&junk, "{\"decision\":\"allow\"}\n").expect("write");
    let broken = copy_of_reference();
    std::fs::write(
        broken.path().join("broken.cedar"),
        "permit(principal, action, resource\n",
    )
    .expect("write");
    let (code, _, stderr) = replay(&junk, broken.path(), &[]);
    assert_eq!(code, Some(2), "{stderr}");
    // Records without input only: nothing replayed, said, no difference.
    let (code, stdout, stderr) = replay(&junk, &reference_policies(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("nothing was replayed"), "{stderr}");
    assert!(
        stdout.starts_with("replayed 0 of 1 live records"),
        "{stdout}"
    );
    let help = run(bin().args(["replay", "--help"]));
    let (stdout, _) = text(&help);
    assert!(
        stdout.contains("Examples:") && stdout.contains("--log -"),
        "{stdout}"
    );
}

/// The `[decisions]` rules of `--config` apply: a user without an application, denied
/// by default, is allowed by the user's grant alone with `allow_user_only`.
#[test]
fn the_configured_rules_decide() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("decisions.jsonl");
    let record = json!({
        "decision": "deny",
        "input": {
            "user": "Mcp::User::\"alice\"",
            "action": "Mcp::Action::\"tools/call\"",
            "resource": "Mcp::Tool::\"docs/get_document\"",
            "server": "Mcp::Server::\"docs\"",
            "context": { "arguments": { "document_id": TITAN } },
        },
    });
    std::fs::write(&log, format!("{record}\n")).expect("write");
    let (code, stdout, stderr) = replay(&log, &reference_policies(), &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let file = config::write(dir.path(), &["[decisions]\nallow_user_only = true\n"]);
    let (code, stdout, stderr) = replay(
        &log,
        &reference_policies(),
        &["--config", file.to_str().expect("UTF-8 path"), "--json"],
    );
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(report["differences"][0]["candidate"], "allow", "{stdout}");
    assert_eq!(
        report["differences"][0]["candidate_policies"],
        json!({"user": ["employees-use-docs"]})
    );
}
