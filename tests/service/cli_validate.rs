//! `mcp-authz validate` on the reference policies and on broken copies.

use crate::support::process::{bin, run, text};
use crate::support::{copy_of_reference, reference_policies};

fn validate(dir: &std::path::Path) -> (i32, String, String) {
    let out = run(bin().arg("validate").arg(dir));
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

fn edit(dir: &std::path::Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
}

#[test]
fn reference_policies_are_valid() {
    let (code, out, err) = validate(&reference_policies());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 18 policies in 3 files"), "{out}");
}

#[test]
fn default_directory_is_policies() {
    let out = run(bin()
        .arg("validate")
        .current_dir(env!("CARGO_MANIFEST_DIR")));
    assert!(out.status.success());
}

#[test]
fn syntax_error_names_file_and_line() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "users.cedar",
        "principal in Mcp::Group::\"employees\",",
        "principal in Mcp::Group::\"employees\"",
    );
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--> users.cedar:7:3"), "{err}");
    assert!(err.contains("unexpected token"), "{err}");
    // The offending source line is shown.
    assert!(err.contains("7 |   action in\n"), "{err}");
}

#[test]
fn type_error_against_the_schema_names_file_and_line() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "applications.cedar",
        "context.arguments.max_results > 50",
        "context.arguments.max_results like \"5*\"",
    );
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--> applications.cedar:32:"), "{err}");
    assert!(err.to_lowercase().contains("type"), "{err}");
}

#[test]
fn unknown_attribute_and_entity_type_are_errors() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "users.cedar",
        "resource.classification == \"finance\"",
        "resource.sensitivity == \"finance\"",
    );
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--> users.cedar:"), "{err}");
    assert!(err.contains("sensitivity"), "{err}");

    let dir = copy_of_reference();
    edit(
        dir.path(),
        "users.cedar",
        "Mcp::Group::\"contractors\"",
        "Mcp::Team::\"contractors\"",
    );
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("Mcp::Team"), "{err}");
}

#[test]
fn duplicate_id_names_both_places() {
    let dir = copy_of_reference();
    std::fs::write(
        dir.path().join("zz-extra.cedar"),
        "// a copy-paste accident\n@id(\"employees-use-docs\")\npermit (principal, action == Mcp::Action::\"ping\", resource);\n",
    )
    .expect("write");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("duplicate policy id `employees-use-docs`"),
        "{err}"
    );
    assert!(err.contains("--> zz-extra.cedar:2:1"), "{err}");
    assert!(err.contains("users.cedar:4:1"), "{err}");
}

#[test]
fn entity_data_violating_the_schema_names_file_and_line() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "entities.json",
        "\"attrs\": { \"department\": \"finance\" }",
        "\"attrs\": { \"department\": 7 }",
    );
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--> entities.json:12:41"), "{err}");
    assert!(err.contains("bob"), "{err}");
}

#[test]
fn entity_data_that_is_not_json_names_file_and_line() {
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("entities.json"), "[\n  { \"uid\": \n").expect("write");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--> entities.json:3:"), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn schema_that_does_not_parse() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "mcp.cedarschema",
        "entity Prompt in [Server];",
        "entity Prompt in [Server]",
    );
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("--> mcp.cedarschema:"), "{err}");
}

#[test]
fn empty_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("no `*.cedarschema` file"), "{err}");
    assert!(err.contains("no `*.cedar` policy files"), "{err}");
}

#[test]
fn missing_directory_is_an_error() {
    let (code, _, err) = validate(std::path::Path::new("/nonexistent/policies"));
    assert_eq!(code, 2);
    assert!(err.contains("cannot read policy directory"), "{err}");
}

#[test]
fn schema_without_policies_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        reference_policies().join("mcp.cedarschema"),
        dir.path().join("s.cedarschema"),
    )
    .expect("copy");
    std::fs::write(dir.path().join("empty.cedar"), "// nothing yet\n").expect("write");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("hold no policies"), "{err}");
}

#[test]
fn two_schemas_are_an_error() {
    let dir = copy_of_reference();
    std::fs::copy(
        dir.path().join("mcp.cedarschema"),
        dir.path().join("other.cedarschema"),
    )
    .expect("copy");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("more than one schema file"), "{err}");
}

#[test]
fn policies_in_subdirectories_get_path_ids_and_hidden_entries_are_skipped() {
    let dir = copy_of_reference();
    std::fs::create_dir(dir.path().join("teams")).expect("mkdir");
    std::fs::write(
        dir.path().join("teams/extra.cedar"),
        "permit (principal == Mcp::User::\"erin\", action == Mcp::Action::\"ping\", resource);\n",
    )
    .expect("write");
    std::fs::create_dir(dir.path().join(".git")).expect("mkdir");
    std::fs::write(dir.path().join(".git/broken.cedar"), "this is not cedar").expect("write");
    std::fs::write(dir.path().join(".#users.cedar"), "editor lock file").expect("write");
    let (code, out, err) = validate(dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: 19 policies in 4 files"), "{out}");
    let out = run(bin()
        .args([
            "check",
            "--action",
            "ping",
            "--resource",
            "docs",
            "--user",
            "erin",
            "--app",
            "corpassist",
            "--json",
            "--policies",
        ])
        .arg(dir.path()));
    let (o, _) = text(&out);
    assert!(o.contains("\"teams/extra.cedar:0\""), "{o}");
}

/// A guardrail on an argument the schema does not declare: `has` is always false.
const REFUND_CAP: &str = "\n// written for a payments server whose arguments are not declared yet\n@id(\"refund-cap\")\nforbid (principal, action in Mcp::Action::\"tools/call\", resource)\nwhen { context has arguments && context.arguments has amount_cents && context.arguments.amount_cents > 100000 };\n";

fn validate_with(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = bin();
    cmd.arg("validate").args(args).arg(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd);
    let (_, e) = text(&out);
    (out.status.code().unwrap_or(-1), e)
}

#[test]
fn an_impossible_forbid_is_an_error_named_by_its_id() {
    let dir = copy_of_reference();
    let path = dir.path().join("applications.cedar");
    let text = std::fs::read_to_string(&path).expect("read");
    let line = text.lines().count() + 3;
    std::fs::write(&path, format!("{text}{REFUND_CAP}")).expect("write");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: for policy `refund-cap`, policy is impossible"),
        "{err}"
    );
    assert!(
        err.contains(&format!("--> applications.cedar:{line}:1")),
        "{err}"
    );
    assert!(err.contains("guards nothing"), "{err}");
    assert!(!err.contains("`policy"), "Cedar's own ids leak: {err}");

    // The same condition on a permit only warns; without an `@id` it is named by
    // file and index.
    let permit = REFUND_CAP
        .replace("@id(\"refund-cap\")\n", "")
        .replace("forbid", "permit");
    std::fs::write(&path, format!("{text}{permit}")).expect("write");
    let (code, out, err) = validate(dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: 19 policies"), "{out}");
    assert!(
        err.contains("warning: for policy `applications.cedar:9`, policy is impossible"),
        "{err}"
    );
    assert!(
        err.contains(&format!("--> applications.cedar:{line}:1")),
        "{err}"
    );
}

#[test]
fn deny_warnings_makes_a_warning_fail_validation() {
    let dir = copy_of_reference();
    let path = dir.path().join("users.cedar");
    let text = std::fs::read_to_string(&path).expect("read");
    // A group the entity data does not define: a warning only.
    std::fs::write(
        &path,
        text.replacen(
            "principal in Mcp::Group::\"employees\",\n  action in Mcp::Action::\"tools/call\"",
            "principal in Mcp::Group::\"enginering\",\n  action in Mcp::Action::\"tools/call\"",
            1,
        ),
    )
    .expect("write");
    let (code, err) = validate_with(dir.path(), &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "warning: policy `employees-look-up-projects` names `Mcp::Group::\"enginering\"`, which the entity data does not define"
        ),
        "{err}"
    );
    assert!(err.contains("--> users.cedar:17:28"), "{err}");
    for (args, env) in [
        (&["--deny-warnings"][..], &[][..]),
        (
            &[][..],
            &[("MCP_AUTHZ_VALIDATION_DENY_WARNINGS", "true")][..],
        ),
    ] {
        let (code, err) = validate_with(dir.path(), args, env);
        assert_eq!(code, 2, "{args:?} {env:?}: {err}");
        assert!(
            err.contains("error: policy `employees-look-up-projects` names"),
            "{err}"
        );
        assert!(err.contains("(1 error)"), "{err}");
    }
    // The reference set has no warning at all.
    let (code, err) = validate_with(&reference_policies(), &["--deny-warnings"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn action_equals_an_action_with_members_says_to_use_in() {
    // A schema whose `tools/call` has a member action, as imported tools will.
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = std::fs::read_to_string(reference_policies().join("mcp.cedarschema"))
        .expect("schema")
        .replacen(
            "  action \"tools/call\"\n",
            "  action \"tools/call/payments/refund\" in [\"tools/call\"]\n    appliesTo { principal: [User, Application], resource: Tool, context: ToolCallContext };\n  action \"tools/call\"\n",
            1,
        );
    assert!(schema.contains("tools/call/payments/refund"));
    std::fs::write(dir.path().join("mcp.cedarschema"), schema).expect("write");
    std::fs::write(
        dir.path().join("p.cedar"),
        "@id(\"employees-call-tools\")\npermit (principal, action in Mcp::Action::\"tools/call\", resource);\n\n@id(\"no-refunds-for-bots\")\nforbid (principal is Mcp::Application, action == Mcp::Action::\"tools/call\", resource);\n",
    )
    .expect("write");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("error: policy `no-refunds-for-bots` tests `action == Mcp::Action::\"tools/call\"`, but `Mcp::Action::\"tools/call\"` has member actions"),
        "{err}"
    );
    assert!(err.contains("--> p.cedar:5:63"), "{err}");
    assert!(
        err.contains("help: write `action in Mcp::Action::\"tools/call\"`"),
        "{err}"
    );
    // Written with `in`, it validates; against the reference schema (no members) `==` does too.
    std::fs::write(
        dir.path().join("p.cedar"),
        "@id(\"no-refunds-for-bots\")\nforbid (principal is Mcp::Application, action in Mcp::Action::\"tools/call\", resource);\n",
    )
    .expect("write");
    let (code, _, err) = validate(dir.path());
    assert_eq!(code, 0, "{err}");
}

fn validate_json(dir: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = run(bin().arg("validate").arg("--json").args(args).arg(dir));
    let (o, e) = text(&out);
    let v: serde_json::Value =
        serde_json::from_str(o.trim()).unwrap_or_else(|e| panic!("{e}: {o}"));
    assert_eq!(o.trim().lines().count(), 1, "one object on one line: {o}");
    (out.status.code().unwrap_or(-1), v, e)
}

#[test]
fn json_of_a_clean_directory() {
    let (code, v, err) = validate_json(&reference_policies(), &[]);
    assert_eq!(code, 0, "{v}");
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        v,
        serde_json::json!({"ok": true, "policies": 18, "shadow_policies": [], "problems": []})
    );
}

/// `@shadow` policies are counted, and named: a line of the text, a field of the JSON.
#[test]
fn shadow_policies_are_named() {
    let dir = copy_of_reference();
    std::fs::write(
        dir.path().join("staged.cedar"),
        "@id(\"staged-no-delete\")\n@shadow\nforbid (principal, action in Mcp::Action::\"tools/call\", resource == Mcp::Tool::\"docs/delete_document\");\n",
    )
    .expect("write");
    let (code, out, err) = validate(dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 19 policies in 4 files"), "{out}");
    assert!(
        out.contains("shadow (evaluated, not enforced): `staged-no-delete`"),
        "{out}"
    );
    let (code, v, _) = validate_json(dir.path(), &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["policies"], 19);
    assert_eq!(
        v["shadow_policies"],
        serde_json::json!(["staged-no-delete"])
    );
}

#[test]
fn json_of_a_syntax_error() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "users.cedar",
        "principal in Mcp::Group::\"employees\",",
        "principal in Mcp::Group::\"employees\"",
    );
    let (code, v, _) = validate_json(dir.path(), &[]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["policies"], serde_json::Value::Null);
    let p = &v["problems"][0];
    assert_eq!(p["file"], "users.cedar", "{v}");
    assert_eq!(p["line"], 7, "{v}");
    assert_eq!(p["column"], 3, "{v}");
    assert_eq!(p["severity"], "error", "{v}");
    // The file does not parse: no policy of it is known.
    assert_eq!(p["policy_id"], serde_json::Value::Null, "{v}");
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("unexpected token")),
        "{v}"
    );
    for key in [
        "file",
        "line",
        "column",
        "policy_id",
        "severity",
        "message",
        "help",
    ] {
        assert!(p.get(key).is_some(), "no `{key}` in {p}");
    }
}

#[test]
fn json_of_a_type_error_names_the_policy() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "applications.cedar",
        "context.arguments.max_results > 50",
        "context.arguments.max_results like \"5*\"",
    );
    let (code, v, _) = validate_json(dir.path(), &[]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().expect("problems");
    assert!(!problems.is_empty());
    for p in problems {
        assert_eq!(p["file"], "applications.cedar", "{v}");
        assert_eq!(p["severity"], "error", "{v}");
        assert!(p["line"].is_u64(), "{v}");
        assert_eq!(p["policy_id"], "corpassist-bounded-search", "{v}");
    }
}

#[test]
fn json_of_a_warning_is_ok_and_deny_warnings_is_not() {
    let dir = copy_of_reference();
    edit(
        dir.path(),
        "users.cedar",
        "Mcp::Group::\"employees\"",
        "Mcp::Group::\"enginering\"",
    );
    let (code, v, _) = validate_json(dir.path(), &[]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["policies"], 18);
    let p = &v["problems"][0];
    assert_eq!(p["severity"], "warning", "{v}");
    assert_eq!(p["file"], "users.cedar", "{v}");
    assert!(p["line"].is_u64(), "{v}");
    assert_eq!(p["policy_id"], "employees-use-docs", "{v}");
    assert!(
        p["message"]
            .as_str()
            .is_some_and(|m| m.contains("enginering")),
        "{v}"
    );

    let (code, v, _) = validate_json(dir.path(), &["--deny-warnings"]);
    assert_eq!(code, 2, "{v}");
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["severity"], "error", "{v}");
}

#[test]
fn json_of_a_directory_problem_has_no_file() {
    let (code, v, _) = validate_json(std::path::Path::new("/nonexistent/policies"), &[]);
    assert_eq!(code, 2);
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"][0]["file"], serde_json::Value::Null, "{v}");
    assert_eq!(v["problems"][0]["line"], serde_json::Value::Null, "{v}");
}
