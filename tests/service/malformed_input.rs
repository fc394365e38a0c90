//! Malformed policy directories are clear errors, never a panic or a crash.

use crate::support::copy_of_reference;
use crate::support::process::{bin, run, text};

/// Validate `dir`; it must fail cleanly (exit 2, not a panic's 101 or an abort)
/// and name `file` in its message.
fn rejected(dir: &std::path::Path, file: &str) -> String {
    let out = run(bin().arg("validate").arg(dir));
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(file), "{file} not named: {err}");
    err
}

#[test]
fn empty_policy_file() {
    let dir = copy_of_reference();
    // An empty policy file among others is fine; only empty files is an error.
    std::fs::write(dir.path().join("empty.cedar"), "").expect("write");
    assert!(run(bin().arg("validate").arg(dir.path())).status.success());
    for f in ["users.cedar", "applications.cedar", "housekeeping.cedar"] {
        std::fs::write(dir.path().join(f), "").expect("write");
    }
    let out = run(bin().arg("validate").arg(dir.path()));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn empty_schema_and_entity_files() {
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("entities.json"), "").expect("write");
    rejected(dir.path(), "entities.json");
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("mcp.cedarschema"), "").expect("write");
    // An empty schema declares nothing: the imported fragments name types it does
    // not declare, and without them every policy fails validation.
    let err = rejected(dir.path(), "tools/docs.cedarschema");
    assert!(err.contains("Mcp::Application"), "{err}");
    std::fs::remove_dir_all(dir.path().join("tools")).expect("rm tools");
    let err = rejected(dir.path(), "users.cedar");
    assert!(err.contains("error"), "{err}");
}

#[test]
fn non_utf8_files() {
    let dir = copy_of_reference();
    std::fs::write(
        dir.path().join("bad.cedar"),
        b"permit(principal, action, resource)\n\xff\xfe;",
    )
    .expect("write");
    let err = rejected(dir.path(), "bad.cedar");
    assert!(err.contains("not valid UTF-8"), "{err}");
    assert!(err.contains("bad.cedar:2:1"), "{err}");
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("entities.json"), b"[\xc3\x28]").expect("write");
    rejected(dir.path(), "entities.json");
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("mcp.cedarschema"), b"\x80namespace Mcp {}").expect("write");
    rejected(dir.path(), "mcp.cedarschema");
}

#[test]
fn ten_megabyte_policy_files() {
    let ten_mb = 10 * 1024 * 1024;
    // Junk.
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("big.cedar"), "x".repeat(ten_mb)).expect("write");
    rejected(dir.path(), "big.cedar");
    // Deeply nested brackets.
    let dir = copy_of_reference();
    let nested = format!(
        "permit(principal, action, resource) when {{ {}true{} }};",
        "(".repeat(ten_mb / 2),
        ")".repeat(ten_mb / 2)
    );
    std::fs::write(dir.path().join("big.cedar"), nested).expect("write");
    let err = rejected(dir.path(), "big.cedar");
    assert!(err.contains("nested more than"), "{err}");
    // A chain of operators as long as the file.
    let dir = copy_of_reference();
    let chain = format!(
        "permit(principal, action, resource) when {{ {} }};",
        vec!["1 < 2"; ten_mb / 9].join(" && ")
    );
    std::fs::write(dir.path().join("big.cedar"), chain).expect("write");
    let err = rejected(dir.path(), "big.cedar");
    assert!(err.contains("operators"), "{err}");
    // One huge string literal: valid Cedar, and valid against the schema.
    let dir = copy_of_reference();
    let literal = format!(
        "@id(\"huge\")\npermit(principal, action in Mcp::Action::\"tools/call\", resource) when {{ context has arguments && context.arguments has query && context.arguments.query == \"{}\" }};",
        "a".repeat(ten_mb)
    );
    std::fs::write(dir.path().join("big.cedar"), literal).expect("write");
    let out = run(bin().arg("validate").arg(dir.path()));
    assert!(out.status.success(), "{}", text(&out).1);
}

#[test]
fn files_over_the_size_limit_are_refused_unread() {
    let dir = copy_of_reference();
    let f = std::fs::File::create(dir.path().join("huge.cedar")).expect("create");
    f.set_len(mcp_authz::policy::MAX_FILE_BYTES + 1)
        .expect("set_len");
    let err = rejected(dir.path(), "huge.cedar");
    assert!(err.contains("more than the limit"), "{err}");
}

#[test]
fn schema_that_does_not_parse() {
    for junk in [
        "namespace {",
        "entity User in [",
        "type = ;",
        "\u{0}\u{1}\u{2}",
        "}}}}",
    ] {
        let dir = copy_of_reference();
        std::fs::write(dir.path().join("mcp.cedarschema"), junk).expect("write");
        rejected(dir.path(), "mcp.cedarschema");
    }
}

#[test]
fn entity_data_that_is_not_json_or_not_entities() {
    for junk in [
        "not json",
        "{\"a\": 1}",
        "[1, 2, 3]",
        "[{\"uid\": 5}]",
        "[{\"uid\": {\"type\": \"Mcp::Nope\", \"id\": \"x\"}, \"attrs\": {}, \"parents\": []}]",
        "{{{{{{{{",
    ] {
        let dir = copy_of_reference();
        std::fs::write(dir.path().join("entities.json"), junk).expect("write");
        rejected(dir.path(), "entities.json");
    }
    // Deep nesting in JSON is refused by the JSON parser, not by a crash.
    let dir = copy_of_reference();
    std::fs::write(dir.path().join("entities.json"), "[".repeat(100_000)).expect("write");
    rejected(dir.path(), "entities.json");
}

#[test]
fn templates_and_odd_but_valid_files_do_not_crash() {
    let dir = copy_of_reference();
    std::fs::write(
        dir.path().join("template.cedar"),
        "@id(\"tmpl\")\npermit(principal == ?principal, action == Mcp::Action::\"ping\", resource);\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("comments.cedar"),
        "// only a comment\n/* not cedar comment syntax */\n",
    )
    .expect("write");
    let out = run(bin().arg("validate").arg(dir.path()));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out).1);
    std::fs::remove_file(dir.path().join("comments.cedar")).expect("rm");
    let out = run(bin().arg("validate").arg(dir.path()));
    assert!(out.status.success(), "{}", text(&out).1);
}
