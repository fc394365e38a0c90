//! Typed tools (issue 15) through `mcp-authz validate` and `check`: a policy
//! directory with schema fragments in `tools/` loads as one schema, a call of a
//! declared tool is decided with its tool action, and undeclared tools and
//! arguments are denied unless the configuration allows them.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::process::{bin, run, text};
use crate::support::{reference_policies, repo};

/// A copy of the reference policies with the hand-written fragments of
/// `tests/fixtures/typed/tools/` (servers `docs` and `payments`) and
/// `tests/fixtures/typed/typed.cedar`: `action ==` a method action that now has
/// members becomes `action in`, the tools the fragments define leave
/// `entities.json`, and the server `payments` joins it. The same directory as the
/// unit tests' `policy::tools::typed_policy_dir`.
fn typed_policies() -> tempfile::TempDir {
    let fixture = repo().join("tests/fixtures/typed");
    let dir = tempfile::tempdir().expect("tempdir");
    let tools = dir.path().join("tools");
    std::fs::create_dir(&tools).expect("tools");
    let mut defined = Vec::new();
    for entry in std::fs::read_dir(fixture.join("tools")).expect("fixture") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        if path.to_string_lossy().ends_with(".entities.json") {
            let json: Value = serde_json::from_str(&text).expect("entity data");
            defined.extend(
                json.as_array()
                    .expect("array")
                    .iter()
                    .map(|e| e["uid"].clone()),
            );
        }
        std::fs::write(tools.join(path.file_name().expect("name")), text).expect("write");
    }
    // The reference's imported servers the fixture does not replace.
    for entry in std::fs::read_dir(reference_policies().join("tools")).expect("tools") {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name").to_owned();
        if !tools.join(&name).exists() {
            std::fs::copy(&path, tools.join(name)).expect("copy");
        }
    }
    for entry in std::fs::read_dir(reference_policies()).expect("policies") {
        let path = entry.expect("entry").path();
        // The fixture's fragments stand in for the reference's imported `docs`.
        if path.is_dir() {
            continue;
        }
        let name = path.file_name().expect("name").to_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let text = if name == "entities.json" {
            let json: Value = serde_json::from_str(&text).expect("entity data");
            let mut kept: Vec<Value> = json
                .as_array()
                .expect("array")
                .iter()
                .filter(|e| !defined.contains(&e["uid"]))
                .cloned()
                .collect();
            kept.push(json!({
                "uid": { "type": "Mcp::Server", "id": "payments" },
                "attrs": { "environment": "production" },
                "parents": []
            }));
            serde_json::to_string_pretty(&kept).expect("json")
        } else {
            text.replace(
                "action == Mcp::Action::\"tools/call\"",
                "action in Mcp::Action::\"tools/call\"",
            )
            .replace(
                "action == Mcp::Action::\"prompts/get\"",
                "action in Mcp::Action::\"prompts/get\"",
            )
        };
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    std::fs::copy(fixture.join("typed.cedar"), dir.path().join("typed.cedar")).expect("copy");
    dir
}

/// `check --json` of a `tools/call` by bob through corpassist, with `env` set for
/// the child: its exit code and JSON.
fn check(dir: &Path, tool: &str, args: Option<Value>, env: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = bin();
    cmd.arg("check")
        .arg("--policies")
        .arg(dir)
        .args(["--action", "tools/call", "--resource", tool])
        .args(["--user", "bob", "--app", "corpassist", "--json"]);
    if let Some(args) = args {
        cmd.arg("--context")
            .arg(json!({ "arguments": args }).to_string());
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let (stdout, stderr) = text(&out);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn validate_accepts_fragments_and_names_a_broken_one() {
    let dir = typed_policies();
    let out = run(bin().arg("validate").arg(dir.path()));
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("ok: 22 policies"), "{stdout}");

    let fragment = dir.path().join("tools/payments.cedarschema");
    let broken = std::fs::read_to_string(&fragment)
        .expect("read")
        .replace("amount: Long,", "amount: Lon,");
    std::fs::write(&fragment, broken).expect("write");
    let out = run(bin().arg("validate").arg(dir.path()));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("tools/payments.cedarschema"),
        "the problem names the fragment: {stderr}"
    );
}

#[test]
fn a_declared_tool_is_decided_with_its_typed_arguments() {
    let dir = typed_policies();
    let (code, d) = check(
        dir.path(),
        "payments/refund",
        Some(json!({ "amount": 500 })),
        &[],
    );
    assert_eq!((code, d["decision"].as_str()), (0, Some("allow")), "{d}");
    let (code, d) = check(
        dir.path(),
        "payments/refund",
        Some(json!({ "amount": 250_000 })),
        &[],
    );
    assert_eq!(code, 1, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("large-refunds-need-review")),
        "{d}"
    );
    // The same argument name is a String of docs' search: a Long is refused there.
    let (code, d) = check(
        dir.path(),
        "docs/search_documents",
        Some(json!({ "query": "q", "amount": 12 })),
        &[],
    );
    assert_eq!(code, 1, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("`arguments.amount` should be a String")),
        "{d}"
    );
}

#[test]
fn undeclared_tools_and_arguments_are_denied_unless_configured() {
    let dir = typed_policies();
    let (code, d) = check(dir.path(), "docs/translate_document", None, &[]);
    assert_eq!(code, 1, "{d}");
    assert!(
        d["reason"].as_str().is_some_and(
            |r| r.contains("tool `translate_document` is not declared for server `docs`")
        ),
        "{d}"
    );
    let (code, d) = check(
        dir.path(),
        "docs/translate_document",
        None,
        &[("MCP_AUTHZ_DECISIONS_ALLOW_UNDECLARED_TOOLS", "true")],
    );
    assert_eq!(code, 0, "{d}");

    let args = json!({ "query": "q", "limit": 5 });
    let (code, d) = check(dir.path(), "docs/search_documents", Some(args.clone()), &[]);
    assert_eq!(code, 1, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r
                .contains("tool `docs/search_documents` does not declare the argument `limit`")),
        "{d}"
    );
    let (code, d) = check(
        dir.path(),
        "docs/search_documents",
        Some(args),
        &[("MCP_AUTHZ_DECISIONS_ALLOW_UNDECLARED_ARGUMENTS", "true")],
    );
    assert_eq!(code, 0, "{d}");
    let notes = d["notes"].as_array().cloned().unwrap_or_default();
    assert!(
        notes.iter().any(|n| n["kind"] == "undeclared_argument"
            && n["name"] == "limit"
            && n["message"]
                .as_str()
                .is_some_and(|m| m.contains("tools/call/docs/search_documents"))),
        "{d}"
    );

    // The reference's imported `projects` beside the fixture's servers: typed too.
    let (code, d) = check(
        dir.path(),
        "projects/find_project",
        Some(json!({ "name": "titan" })),
        &[],
    );
    assert_eq!(code, 0, "{d}");
    let (code, d) = check(dir.path(), "projects/find_project", None, &[]);
    assert_eq!(code, 1, "a required argument is missing: {d}");
}
