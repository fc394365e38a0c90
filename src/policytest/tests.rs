use super::*;

const SUITE: &str = r#"
name: docs
fixtures:
  principals:
    contractor:
      user: carol
      groups: [contractors]
      application: corpassist
cases:
  - name: reads
    user: alice
    application: corpassist
    server: docs
    tool: get_document
    arguments: { document_id: titan/q1-strategy }
    expect: allow
  - name: "contractor"
    user: contractor
    scopes: [docs.read]
    tool: docs/get_document
    expect: deny
"#;

#[test]
fn a_suite_reads_into_requests() {
    let suite = parse("a.test.yaml", SUITE).unwrap();
    assert_eq!(suite.name, "docs");
    assert_eq!(suite.cases.len(), 2);
    let first = &suite.cases[0];
    assert_eq!(first.line, Some(10));
    assert_eq!(first.expect, Expect::Allow);
    assert_eq!(
        first.request.resource.to_string(),
        r#"Mcp::Tool::"docs/get_document""#
    );
    assert_eq!(
        first.request.action.to_string(),
        r#"Mcp::Action::"tools/call""#
    );
    assert!(first.request.token.is_none());
    assert_eq!(
        first.request.context["arguments"]["document_id"],
        "titan/q1-strategy"
    );
    let second = &suite.cases[1];
    assert_eq!(second.line, Some(17));
    assert_eq!(
        second.request.user.as_ref().unwrap().to_string(),
        r#"Mcp::User::"carol""#
    );
    assert_eq!(
        second.request.application.as_ref().unwrap().to_string(),
        r#"Mcp::Application::"corpassist""#
    );
    assert_eq!(second.request.token.as_ref().unwrap().scopes, ["docs.read"]);
    assert_eq!(second.request.entities.len(), 1);
    assert_eq!(
        second.request.entities[0].parents[0].to_string(),
        r#"Mcp::Group::"contractors""#
    );
}

#[test]
fn unknown_keys_name_their_line() {
    let text =
        "name: x\ncases:\n  - name: a\n    user: alice\n    tool: docs/x\n    expcet: allow\n";
    let e = parse("bad.test.yaml", text).unwrap_err();
    assert_eq!(e.line, Some(6), "{e}");
    assert!(e.message.contains("expcet"), "{e}");
    assert!(e.to_string().starts_with("bad.test.yaml:6: "), "{e}");
}

#[test]
fn a_suite_must_test_something() {
    let e = parse("e.test.yaml", "name: x\ncases: []\n").unwrap_err();
    assert!(e.message.contains("no cases"), "{e}");
    let e = parse(
        "e.test.yaml",
        "name: x\ncases:\n  - name: a\n    user: u\n    tool: d/t\n",
    )
    .unwrap_err();
    assert!(e.message.contains("expect"), "{e}");
}

#[test]
fn cases_name_a_fitting_target() {
    let case = |body: &str| {
        parse(
            "c.test.yaml",
            &format!("name: x\ncases:\n  - name: a\n    user: u\n    expect: deny\n{body}"),
        )
    };
    assert!(case("    method: tools/list\n    server: docs\n").is_ok());
    let e = case("    server: docs\n").unwrap_err();
    assert!(e.message.contains("`tools/call` needs `tool`"), "{e}");
    let e = case("    method: tools/list\n    tool: docs/x\n").unwrap_err();
    assert!(e.message.contains("acts on a server"), "{e}");
    let e = case("    tool: docs/x\n    prompt: docs/y\n").unwrap_err();
    assert!(e.message.contains("one of"), "{e}");
    let e = case("    tool: docs/x\n    groups: [g]\n    user: null\n").unwrap_err();
    assert!(
        e.message.contains("duplicate") || e.message.contains("user"),
        "{e}"
    );
    let r = case("    resource: docs://titan/q1-strategy\n    server: docs\n").unwrap();
    assert_eq!(
        r.cases[0].request.action.to_string(),
        r#"Mcp::Action::"resources/read""#
    );
}

#[test]
fn duplicate_keys_are_refused() {
    let text = "name: x\ncases:\n  - name: a\n    user: alice\n    tool: docs/x\n    expect: allow\n    expect: deny\n";
    let e = parse("dup.test.yaml", text).unwrap_err();
    assert!(e.message.contains("duplicate"), "{e}");
    // The mapping that holds the key twice.
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn fixture_entities_are_cedar_json_entities() {
    let suite = |entities: &str| {
        parse(
            "f.test.yaml",
            &format!(
                "name: x\nfixtures:\n  entities:\n{entities}\ncases:\n  - name: a\n    user: frank\n    application: corpassist\n    tool: docs/x\n    expect: deny\n"
            ),
        )
    };
    let s = suite("    - uid: { type: Mcp::User, id: frank }\n      parents: [{ type: Mcp::Group, id: finance }]\n      attrs: { department: finance }").unwrap();
    let e = &s.cases[0].request.entities;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].uid.to_string(), r#"Mcp::User::"frank""#);
    assert_eq!(e[0].parents[0].to_string(), r#"Mcp::Group::"finance""#);
    assert_eq!(e[0].attrs["department"], "finance");
    let err = suite("    - uid: frank").unwrap_err();
    assert!(err.message.starts_with("fixture entity 1: "), "{err}");
    assert_eq!(err.line, Some(3), "{err}");
    let err = suite("    - uid: { type: Mcp::User, id: frank }\n      parent: []").unwrap_err();
    assert!(err.message.contains("unknown key `parent`"), "{err}");
}
