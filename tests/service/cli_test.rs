//! `mcp-authz test`: the reference suite passes, a failing case is reported with both
//! principals' determining policies, a malformed suite is bad input naming its line,
//! and test files are never policy inputs.

use std::fs;

use serde_json::Value;

use crate::support::copy_of_reference;
use crate::support::process::{bin, run, text};
use crate::support::reference_policies;

#[test]
fn the_reference_suite_passes_and_covers_every_policy() {
    let out = run(bin().arg("test").arg(reference_policies()).args([
        "--coverage",
        "--min-coverage",
        "100",
    ]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(" passed, 0 failed\n"), "{stdout}");
    assert!(
        stdout.contains("coverage: 18 of 18 policies (100.0%)"),
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn json_reports_every_case_and_a_summary() {
    let out = run(bin().arg("test").arg(reference_policies()).arg("--json"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 30, "{v}");
    assert_eq!(v["summary"]["failed"], 0);
    assert_eq!(v["summary"]["passed"].as_u64(), Some(cases.len() as u64));
    let invalid = cases
        .iter()
        .find(|c| c["case"] == "an undeclared argument is refused")
        .expect("case");
    assert_eq!(invalid["expected"], "invalid");
    assert_eq!(invalid["got"], "invalid");
    assert_eq!(invalid["passed"], true);
    assert_eq!(invalid["reason_kind"], "undeclared_argument");
    assert_eq!(invalid["file"], "reference.test.yaml");
}

const FAILING: &str = r#"name: wrong expectations
cases:
  - name: dave deletes through corpassist
    user: dave
    application: corpassist
    tool: docs/delete_document
    arguments: { document_id: titan/q1-strategy }
    expect: allow
  - name: alice reads
    user: alice
    application: corpassist
    tool: docs/get_document
    arguments: { document_id: titan/q1-strategy }
    expect: allow
    policies:
      user: [employees-use-docs]
      application: [corpassist-never-deletes]
"#;

#[test]
fn a_failing_case_names_both_principals_policies() {
    let dir = copy_of_reference();
    fs::write(dir.path().join("wrong.test.yaml"), FAILING).expect("write");
    let report = dir.path().join("junit.xml");
    let out = run(bin()
        .arg("test")
        .arg(dir.path())
        .arg("--junit")
        .arg(&report));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "FAIL wrong expectations / dave deletes through corpassist (wrong.test.yaml:3)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("expected allow, got deny"), "{stdout}");
    // The user's permit and the application's forbids, with where they are written.
    assert!(
        stdout
            .contains(r#"user        Mcp::User::"dave": allow: employees-use-docs (users.cedar:"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("corpassist-never-deletes (applications.cedar:"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "expected the application's determining policies [corpassist-never-deletes], \
             got [corpassist-read-docs]"
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with(" passed, 2 failed\n"), "{stdout}");

    // The same, for CI: one testsuite per file, the failure's text as printed.
    let xml = fs::read_to_string(&report).expect("junit report");
    assert!(
        xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites "),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<testsuite name="wrong expectations" file="wrong.test.yaml" tests="2" failures="2">"#
        ),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="dave deletes through corpassist" classname="wrong expectations" file="wrong.test.yaml" line="3">"#),
        "{xml}"
    );
    assert!(
        xml.contains(
            r#"<failure message="expected allow, got deny" type="deny">FAIL wrong expectations"#
        ),
        "{xml}"
    );
    assert!(xml.contains("Mcp::User::&quot;dave&quot;: allow"), "{xml}");
    assert!(
        xml.contains(r#"<testsuite name="reference" file="reference.test.yaml" tests=""#),
        "{xml}"
    );
}

#[test]
fn a_malformed_suite_is_bad_input_naming_its_line() {
    let dir = copy_of_reference();
    fs::write(
        dir.path().join("typo.test.yaml"),
        "name: typo\ncases:\n  - name: a\n    user: alice\n    tool: docs/get_document\n    expcet: deny\n",
    )
    .expect("write");
    let out = run(bin().arg("test").arg(dir.path()));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("error: typo.test.yaml:6: "), "{stderr}");
    assert!(stderr.contains("`expcet`"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    // A case the test cannot build: named with its line.
    fs::write(
        dir.path().join("typo.test.yaml"),
        "name: typo\ncases:\n  - name: a\n    groups: [g]\n    application: corpassist\n    tool: docs/x\n    expect: deny\n",
    )
    .expect("write");
    let out = run(bin().arg("test").arg(dir.path()));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("typo.test.yaml:3: case `a`: `groups` needs a `user`"),
        "{stderr}"
    );
}

#[test]
fn a_directory_without_suites_is_bad_input() {
    let dir = copy_of_reference();
    fs::remove_file(dir.path().join("reference.test.yaml")).expect("remove");
    let out = run(bin().arg("test").arg(dir.path()));
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no test suites (`*.test.yaml`)"),
        "{stderr}"
    );
}

#[test]
fn coverage_below_the_minimum_fails() {
    let dir = copy_of_reference();
    fs::write(
        dir.path().join("reference.test.yaml"),
        "name: one\ncases:\n  - name: ping\n    application: corpassist\n    method: ping\n    server: docs\n    expect: allow\n",
    )
    .expect("write");
    let out = run(bin()
        .arg("test")
        .arg(dir.path())
        .args(["--min-coverage", "50"]));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("coverage 5.6") && stdout.contains("% is below the minimum of 50%"),
        "{stdout}"
    );
}

#[test]
fn test_files_are_not_policy_inputs() {
    let dir = copy_of_reference();
    let store = mcp_authz::policy::PolicyStore::open(dir.path()).expect("open");
    let before = store.snapshot();
    fs::write(
        dir.path().join("reference.test.yaml"),
        "name: changed\ncases: []\n",
    )
    .expect("write");
    fs::create_dir_all(dir.path().join("suites")).expect("mkdir");
    fs::write(dir.path().join("suites/more.test.yaml"), "not: [yaml").expect("write");
    assert!(matches!(
        store.reload(false),
        mcp_authz::policy::ReloadOutcome::Unchanged
    ));
    assert_eq!(store.snapshot().generation, before.generation);
    assert_eq!(store.snapshot().policy_count(), before.policy_count());
}

/// A suite large enough to be decided on several threads: every case is reported,
/// in the order written, and the wrong expectations are found wherever they are.
#[test]
fn a_large_suite_is_reported_in_order() {
    let dir = copy_of_reference();
    let mut suite = String::from("name: many\ncases:\n");
    let wrong = [7, 600, 1999];
    for i in 0..2000 {
        let (user, expect) = if i % 2 == 0 {
            ("alice", "allow")
        } else {
            ("summarizer-only", "deny")
        };
        let expect = if wrong.contains(&i) {
            if expect == "allow" { "deny" } else { "allow" }
        } else {
            expect
        };
        let who = if user == "alice" {
            "    user: alice\n    application: corpassist\n".to_owned()
        } else {
            "    application: summarizer\n".to_owned()
        };
        suite.push_str(&format!(
            "  - name: case {i}\n{who}    tool: docs/get_document\n    arguments: {{ document_id: titan/q1-strategy }}\n    expect: {expect}\n"
        ));
    }
    fs::write(dir.path().join("many.test.yaml"), suite).expect("write");
    let out = run(bin().arg("test").arg(dir.path()).arg("--json"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("one JSON object");
    let names: Vec<&str> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["suite"] == "many")
        .filter_map(|c| c["case"].as_str())
        .collect();
    let expected: Vec<String> = (0..2000).map(|i| format!("case {i}")).collect();
    assert_eq!(names, expected);
    let failed: Vec<&str> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .filter(|c| c["passed"] == false)
        .filter_map(|c| c["case"].as_str())
        .collect();
    assert_eq!(failed, ["case 7", "case 600", "case 1999"]);
}
