//! `mcp-authz check --token`: decisions on the reference policies with real signed tokens.

use serde_json::{Value, json};

use crate::support::process::{bin, run, text};
use crate::support::tokens::{self, TestKey, now};
use crate::support::{config, reference_policies, repo, with_reference_context};

struct Setup {
    dir: tempfile::TempDir,
    key: TestKey,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = TestKey::rsa(1, "k1");
    config::write(
        dir.path(),
        &[
            &format!("policies = \"{}\"\n", reference_policies().display()),
            &config::test_issuer(dir.path(), &key),
            "context_claims = [\"email\"]\n",
        ],
    );
    Setup { dir, key }
}

fn check(s: &Setup, token: &str, extra: &[&str]) -> (i32, String, String) {
    let out = run(bin()
        .args(["check", "--json", "--config"])
        .arg(s.dir.path().join("mcp-authz.toml"))
        .args(["--token", token])
        .args(with_reference_context(extra)));
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

fn decision(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

const GET_DOCUMENT: [&str; 4] = ["--action", "tools/call", "--resource", "docs/get_document"];

#[test]
fn groups_from_the_token_grant_what_the_policy_says() {
    let s = setup();
    // erin is not in the entity data: only the token's groups make her an employee.
    let without = s.key.token(json!({ "sub": "erin" }));
    let (code, out, _) = check(&s, &without, &GET_DOCUMENT);
    assert_eq!(
        (code, decision(&out)["decision"].clone()),
        (1, json!("deny"))
    );
    let with = s
        .key
        .token(json!({ "sub": "erin", "groups": ["engineering"] }));
    let (code, out, err) = check(&s, &with, &GET_DOCUMENT);
    assert_eq!(code, 0, "{out}{err}");
    let d = decision(&out);
    assert_eq!(d["user"], "Mcp::User::\"erin\"");
    assert_eq!(
        d["evaluations"][0]["policies"],
        json!(["employees-use-docs"])
    );
    // A group from the token that a forbid names applies as well.
    let contractor = s
        .key
        .token(json!({ "sub": "erin", "groups": ["contractors"] }));
    let (code, out, _) = check(
        &s,
        &contractor,
        &[
            &GET_DOCUMENT[..],
            &[
                "--context",
                r#"{"arguments": {"document_id": "finance/q1"}}"#,
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 1);
    assert_eq!(
        decision(&out)["evaluations"][0]["policies"],
        json!(["contractors-no-finance-documents"])
    );
}

#[test]
fn the_application_from_azp_is_the_one_evaluated() {
    let s = setup();
    let token = s.key.token(json!({ "sub": "alice", "azp": "summarizer" }));
    let (code, out, _) = check(&s, &token, &GET_DOCUMENT);
    assert_eq!(code, 1);
    let d = decision(&out);
    assert_eq!(d["application"], "Mcp::Application::\"summarizer\"");
    assert_eq!(
        d["evaluations"][1]["principal"],
        "Mcp::Application::\"summarizer\""
    );
    assert_eq!(d["evaluations"][1]["allow"], false);
    let token = s.key.token(json!({ "sub": "alice", "azp": "corpassist" }));
    let (code, _, _) = check(&s, &token, &GET_DOCUMENT);
    assert_eq!(code, 0);
    // `client_id` when there is no `azp`.
    let token = s
        .key
        .token(json!({ "sub": "alice", "azp": null, "client_id": "summarizer" }));
    let (_, out, _) = check(&s, &token, &GET_DOCUMENT);
    assert_eq!(
        decision(&out)["application"],
        "Mcp::Application::\"summarizer\""
    );
}

#[test]
fn a_refused_token_is_a_deny_with_its_reason_and_never_printed() {
    let s = setup();
    let other_issuer = tokens::claims_with(json!({ "iss": "https://evil.example" }));
    let header = |alg: &str, kid: &str| json!({ "alg": alg, "kid": kid, "typ": "JWT" });
    let cases = [
        (s.key.token(json!({ "exp": now() - 3600 })), "token_expired"),
        (
            s.key.token(json!({ "aud": "someone-else" })),
            "token_wrong_audience",
        ),
        (
            TestKey::rsa(2, "k1").sign(&tokens::claims()),
            "token_bad_signature",
        ),
        (s.key.sign(&other_issuer), "token_wrong_issuer"),
        (s.key.token(json!({ "exp": null })), "token_missing_exp"),
        (
            s.key
                .sign_with_header(&header("RS256", "k9"), &tokens::claims()),
            "token_unknown_kid",
        ),
        (
            format!(
                "{}.{}.",
                tokens::b64(header("none", "k1").to_string()),
                tokens::b64(tokens::claims().to_string())
            ),
            "token_unsigned",
        ),
        ("not-a-token-at-all".to_owned(), "token_malformed"),
    ];
    for (token, class) in cases {
        // `--json`: the decision object on stdout, with the token error's class.
        let (code, out, err) = check(&s, &token, &GET_DOCUMENT);
        assert_eq!(code, 1, "{class}: {err}");
        let d = decision(&out);
        assert_eq!(d["decision"], "deny", "{out}");
        assert_eq!(d["token_error"]["class"], class, "{out}");
        let reason = d["reason"].as_str().expect("reason");
        assert!(reason.starts_with("unauthenticated: "), "{reason}");
        assert_eq!(d["evaluations"], json!([]), "{out}");
        assert_eq!(d["action"], "Mcp::Action::\"tools/call\"", "{out}");
        assert!(err.contains(class), "{class}: {err}");
        // Text: the deny and its reason on stdout.
        let text_out = run(bin()
            .args(["check", "--config"])
            .arg(s.dir.path().join("mcp-authz.toml"))
            .args(["--token", &token])
            .args(GET_DOCUMENT));
        let (stdout, _) = text(&text_out);
        assert_eq!(text_out.status.code(), Some(1));
        assert!(stdout.starts_with("DENY: "), "{stdout}");
        assert!(stdout.contains(&format!("reason: {reason}")), "{stdout}");
        // The token is never printed.
        let signature = token.rsplit('.').next().expect("signature");
        for printed in [&out, &err, &stdout] {
            assert!(
                (signature.len() < 8 || !printed.contains(signature))
                    && !printed.contains(&token[..token.len().min(40)]),
                "token printed: {printed}"
            );
        }
    }
}

#[test]
fn flags_must_agree_with_the_token() {
    let s = setup();
    let token = s.key.sign(&tokens::claims());
    let (code, _, _) = check(
        &s,
        &token,
        &[
            &GET_DOCUMENT[..],
            &["--user", "alice", "--app", "corpassist"],
        ]
        .concat(),
    );
    assert_eq!(code, 0);
    let (code, _, err) = check(
        &s,
        &token,
        &[&GET_DOCUMENT[..], &["--user", "bob"]].concat(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("user_mismatch"), "{err}");
    let (code, _, err) = check(
        &s,
        &token,
        &[&GET_DOCUMENT[..], &["--app", "summarizer"]].concat(),
    );
    assert_eq!(code, 1);
    assert!(err.contains("application_mismatch"), "{err}");
}

#[test]
fn a_token_without_issuers_is_a_usage_error() {
    let out = run(bin()
        .args(["check", "--token", "a.b.c", "--policies"])
        .arg(reference_policies())
        .args(GET_DOCUMENT));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).1.contains("[[issuers]]"));
}

#[test]
fn the_readme_demo_tokens_work() {
    let root = repo();
    let config = root.join("examples/identity/mcp-authz.toml");
    for (user, expected) in [("erin", 0), ("frank", 1)] {
        let token = tokens::demo_token(user);
        let out = run(bin()
            .current_dir(&root)
            .arg("check")
            .arg("--config")
            .arg(&config)
            .args([
                "--token",
                &token,
                "--action",
                "tools/call",
                "--resource",
                "docs/get_document",
            ])
            .args([
                "--context",
                r#"{"arguments": {"document_id": "finance/budget-2026"}}"#,
            ]));
        assert_eq!(
            out.status.code(),
            Some(expected),
            "{user}: {:?}",
            text(&out)
        );
    }
}
