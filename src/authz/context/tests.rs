//! The direct path must build exactly the context Cedar's JSON parser builds, and
//! must never accept what Cedar's parser and validation reject.

use serde_json::{Value, json};

use super::*;

const SCHEMA: &str = r#"
namespace Mcp {
  entity Group;
  entity User in [Group];
  entity Application;
  entity Server;
  entity Tool in [Server];
  type Args = {
    query?: String,
    n?: Long,
    flag?: Bool,
    tags?: Set<String>,
    nested?: { depth?: Long, items?: Set<{ name: String, weight?: decimal }> },
    owner?: User,
  };
  type Facts = { source_ip?: ipaddr, at?: datetime, within?: duration };
  action "tools/call" appliesTo {
    principal: [User, Application],
    resource: Tool,
    context: {
      application?: Application,
      user?: User,
      server?: Server,
      arguments?: Args,
      request?: Facts,
      scopes?: Set<String>,
      claims?: { tenant?: String, level?: Long },
      required_flag: Bool,
    },
  };
  action "plain" appliesTo { principal: User, resource: Server };
}
namespace Other {
  entity Person;
  entity Doc;
  action "read" appliesTo { principal: Person, resource: Doc, context: { user?: String, scopes?: Set<String> } };
}
"#;

const POLICY: &str = r#"permit(principal, action == Mcp::Action::"tools/call", resource) when { context.required_flag };"#;

fn snapshot() -> Snapshot {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).expect("schema");
    std::fs::write(dir.path().join("p.cedar"), POLICY).expect("policy");
    Snapshot::load(dir.path(), 1).expect("snapshot")
}

fn request(context: Value) -> DecisionRequest {
    let uid = |s: &str| s.parse::<EntityUid>().expect("uid");
    let mut r = DecisionRequest::new(
        uid(r#"Mcp::Action::"tools/call""#),
        uid(r#"Mcp::Tool::"s/t""#),
    );
    r.user = Some(uid(r#"Mcp::User::"alice""#));
    r.application = Some(uid(r#"Mcp::Application::"app""#));
    r.server = Some(uid(r#"Mcp::Server::"s""#));
    let Value::Object(map) = context else {
        panic!("context must be an object")
    };
    r.context = map;
    r
}

/// Both paths, for one request: the direct one (if it builds a context that
/// validates) and Cedar's JSON parser.
fn both(s: &Snapshot, r: &DecisionRequest) -> (Option<Context>, Result<Context, String>) {
    let shape = &s.context_shapes[&r.action];
    let direct = direct(shape, r, &mut Signature::new(&s.context_fits))
        .filter(|c| c.validate(&s.schema, &r.action).is_ok());
    (direct, through_json(s, shape, r))
}

#[test]
fn direct_path_builds_what_cedar_parses() {
    let s = snapshot();
    let accepted = [
        json!({ "required_flag": true }),
        json!({ "required_flag": false, "undeclared": { "anything": [1, 2] } }),
        json!({
            "required_flag": true,
            "arguments": {
                "query": "titan", "n": -3, "flag": false, "tags": ["a", "b", "a"],
                "nested": { "depth": 2, "items": [{ "name": "x", "weight": "1.5", "junk": 0 }] },
                "owner": { "__entity": { "type": "Mcp::User", "id": "bob" } },
                "extra": "dropped"
            },
            "request": { "source_ip": "10.1.2.3", "at": "2026-11-25", "within": "1h30m" }
        }),
        json!({ "required_flag": true, "arguments": { "owner": { "type": "Mcp::User", "id": "\"quoted\" \\ id" } } }),
        json!({ "required_flag": true, "request": { "source_ip": { "__extn": { "fn": "ip", "arg": "::1" } } } }),
    ];
    let tokens = [
        None,
        Some(super::super::TokenFacts::default()),
        Some(super::super::TokenFacts {
            scopes: vec!["docs.read".into(), "docs.write".into()],
            claims: json!({ "tenant": "t1", "level": 3, "undeclared": true })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }),
    ];
    for context in accepted {
        for token in &tokens {
            let mut r = request(context.clone());
            r.token = token.clone();
            let (direct, parsed) = both(&s, &r);
            let parsed = parsed.unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(direct.as_ref(), Some(&parsed), "{context} {token:?}");
            assert_eq!(build_context(&s, &r), Ok(parsed), "{context}");
        }
    }
}

#[test]
fn what_only_the_service_fills_is_refused_in_any_spelling() {
    let s = snapshot();
    let mallory = json!({ "__entity": { "type": "Mcp::User", "id": "mallory" } });
    for key in [
        "user",
        "User",
        "USER",
        "application",
        "Application",
        "server",
        "scopes",
        "Scopes",
        "SCOPES",
        "claims",
        "Claims",
        "\u{17f}copes",
        "\u{ff55}\u{ff53}\u{ff45}\u{ff52}",
        "_user",
        "us-er",
    ] {
        for value in [
            mallory.clone(),
            json!("mallory"),
            json!(["admin"]),
            json!({ "tenant": "t" }),
        ] {
            let mut context = json!({ "required_flag": true });
            context[key] = value.clone();
            let mut r = request(context.clone());
            // With and without the principals the attribute would stand for.
            for lone in [false, true] {
                if lone {
                    r.user = None;
                    r.server = None;
                }
                let err = build_context(&s, &r).expect_err(&context.to_string());
                assert!(err.contains("only the service fills"), "{key}: {err}");
                assert!(err.contains(&format!("`context.{key}`")), "{key}: {err}");
            }
        }
    }
}

#[test]
fn other_namespaces_keep_their_own_context_names() {
    let s = snapshot();
    let uid = |t: &str| t.parse::<EntityUid>().expect("uid");
    let mut r = DecisionRequest::new(uid(r#"Other::Action::"read""#), uid(r#"Other::Doc::"d""#));
    r.user = Some(uid(r#"Other::Person::"p""#));
    r.context = json!({ "user": "someone", "scopes": ["a"] })
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(build_context(&s, &r).is_ok());
}

#[test]
fn undeclared_names_that_read_as_declared_ones_are_refused() {
    let s = snapshot();
    let aliases = [
        json!({ "arguments": { "QUERY": "x" } }),
        json!({ "arguments": { "query": "x", "Query": "y" } }),
        json!({ "arguments": { "nested": { "Depth": 900 } } }),
        json!({ "arguments": { "nested": { "items": [{ "name": "a", "Weight": "1.0" }] } } }),
        json!({ "arguments": { "n": 1, "N": 500 } }),
        json!({ "arguments": { "fl-ag": true } }),
        json!({ "arguments": { "t_a_g_s": ["a"] } }),
        json!({ "arguments": { "qu\u{ff45}ry": "x" } }),
        json!({ "Arguments": { "query": "x" } }),
        json!({ "request": { "SourceIp": "10.0.0.1" } }),
        json!({ "required-flag": false }),
    ];
    for extra in aliases {
        let mut context = json!({ "required_flag": true });
        for (k, v) in extra.as_object().into_iter().flatten() {
            context[k] = v.clone();
        }
        let r = request(context.clone());
        let shape = &s.context_shapes[&r.action];
        assert!(
            direct(shape, &r, &mut Signature::new(&s.context_fits)).is_none(),
            "{context}"
        );
        let err = build_context(&s, &r).expect_err(&context.to_string());
        assert!(err.contains("reads as the declared"), "{context}: {err}");
    }
    // Names that only look alike stay undeclared and are left out.
    let r = request(
        json!({ "required_flag": true, "arguments": { "querys": "x", "n.1": 2, "deep": { "Depth": 1 } } }),
    );
    assert!(build_context(&s, &r).is_ok());
}

#[test]
fn what_cedar_rejects_the_direct_path_rejects() {
    let s = snapshot();
    let rejected = [
        json!({}),
        json!({ "required_flag": "yes" }),
        json!({ "required_flag": true, "arguments": { "n": 1.5 } }),
        json!({ "required_flag": true, "arguments": { "n": 18446744073709551615u64 } }),
        json!({ "required_flag": true, "arguments": { "query": 42 } }),
        json!({ "required_flag": true, "arguments": { "tags": ["a", 1] } }),
        json!({ "required_flag": true, "arguments": { "nested": { "items": [{ "weight": "1.5" }] } } }),
        json!({ "required_flag": true, "arguments": { "nested": { "items": [{ "name": "x", "weight": "a lot" }] } } }),
        json!({ "required_flag": true, "arguments": { "owner": { "__entity": { "type": "Mcp::Application", "id": "app" } } } }),
        json!({ "required_flag": true, "arguments": { "owner": "bob" } }),
        json!({ "required_flag": true, "arguments": "not a record" }),
        json!({ "required_flag": true, "arguments": { "__entity": { "type": "Mcp::User", "id": "bob" } } }),
        json!({ "required_flag": true, "request": { "source_ip": "not an address" } }),
        json!({ "required_flag": true, "request": { "source_ip": { "__extn": { "fn": "decimal", "arg": "1.0" } } } }),
        json!({ "required_flag": true, "request": { "within": "forever" } }),
    ];
    for context in rejected {
        let r = request(context.clone());
        let (direct, parsed) = both(&s, &r);
        assert!(parsed.is_err(), "Cedar accepted {context}");
        assert_eq!(direct, None, "{context}");
        assert!(build_context(&s, &r).is_err(), "{context}");
    }
}

#[test]
fn unusual_forms_are_left_to_cedars_parser() {
    let s = snapshot();
    // Cedar reads an entity escape with extra keys; the direct path does not try.
    let context = json!({ "required_flag": true, "arguments": { "owner": { "__entity": { "type": "Mcp::User", "id": "bob" }, "x": 1 } } });
    let r = request(context);
    let (direct, parsed) = both(&s, &r);
    assert_eq!(direct, None);
    assert_eq!(build_context(&s, &r), Ok(parsed.expect("Cedar reads it")));
}

#[test]
fn principals_of_the_wrong_type_are_rejected() {
    let s = snapshot();
    let mut r = request(json!({ "required_flag": true }));
    r.user = Some(r#"Mcp::Application::"app""#.parse().expect("uid"));
    assert_eq!(both(&s, &r).0, None);
    assert!(build_context(&s, &r).is_err());
}

#[test]
fn an_action_without_context_gets_an_empty_one() {
    let s = snapshot();
    let mut r = request(json!({ "anything": 1 }));
    r.action = r#"Mcp::Action::"plain""#.parse().expect("uid");
    r.application = None;
    let (direct, parsed) = both(&s, &r);
    assert_eq!(direct, Some(parsed.expect("parsed")));
}

/// `ip(...)` expressions are kept per address ([`ip`]): each address still gets its
/// own value, the same one Cedar's parser gives, whatever the memo holds (more
/// addresses than it keeps, one seen before, a bad one after good ones).
#[test]
fn remembered_addresses_keep_their_own_values() {
    let s = snapshot();
    let at = |ip: &str| request(json!({ "required_flag": true, "request": { "source_ip": ip } }));
    let addresses: Vec<String> = (0..(IP_MEMO + 50))
        .map(|i| format!("10.{}.{}.1", i / 200, i % 200))
        .chain([
            "::1".to_owned(),
            "10.0.0.1".to_owned(),
            "10.0.1.1".to_owned(),
        ])
        .collect();
    for ip in &addresses {
        let r = at(ip);
        let (direct, parsed) = both(&s, &r);
        let parsed = parsed.unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert_eq!(direct.as_ref(), Some(&parsed), "{ip}");
        assert_eq!(build_context(&s, &r), Ok(parsed), "{ip}");
    }
    assert!(build_context(&s, &at("10.0.0.1")).is_ok());
    assert!(build_context(&s, &at("10.0.0.1/33")).is_err());
    assert!(build_context(&s, &at("not an address")).is_err());
    // Decisions tell addresses apart.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).expect("schema");
    std::fs::write(
        dir.path().join("p.cedar"),
        r#"permit(principal, action, resource) when {
            context has request && context.request has source_ip
            && context.request.source_ip.isInRange(ip("10.0.0.0/8"))
        };"#,
    )
    .expect("policy");
    let s = Snapshot::load(dir.path(), 1).expect("snapshot");
    let decide = |ip: &str| crate::authz::decide(&s, &at(ip)).allow;
    assert!(decide("10.1.2.3"));
    assert!(!decide("192.168.1.1"));
    assert!(decide("10.1.2.3"));
    assert!(!decide("192.168.1.1"));
    assert!(!decide("not an address"));
}

#[test]
fn the_mcp_profile_is_the_mcp_namespace_exactly() {
    for (uid, mcp) in [
        (r#"Mcp::Action::"tools/call""#, true),
        (r#"Mcp::Action::"x""#, true),
        (r#"Action::"tools/call""#, false),
        (r#"Mcp::Sub::Action::"tools/call""#, false),
        (r#"Sub::Mcp::Action::"tools/call""#, false),
        (r#"McpX::Action::"tools/call""#, false),
        (r#"mcp::Action::"tools/call""#, false),
    ] {
        let uid: EntityUid = uid.parse().expect(uid);
        assert_eq!(mcp_profile(&uid), mcp, "{uid}");
    }
}

#[test]
fn a_context_like_one_accepted_is_not_validated_again_and_others_still_are() {
    let s = snapshot();
    let uid = |t: &str| t.parse::<EntityUid>().expect("uid");
    let build = |r: &DecisionRequest| build_context(&s, r);
    // Other users, servers, strings and numbers: the same signature.
    let mut first =
        request(json!({ "required_flag": true, "arguments": { "query": "a", "n": 1 } }));
    assert!(build(&first).is_ok());
    assert_eq!(s.context_fits.len(), 1);
    // A request's signature is short enough to be kept.
    let mut signature = Signature::new(&s.context_fits);
    assert!(direct(&s.context_shapes[&first.action], &first, &mut signature).is_some());
    assert!(signature.bytes.len() < 512, "{}", signature.bytes.len());
    first.user = Some(uid(r#"Mcp::User::"bob""#));
    first.server = Some(uid(r#"Mcp::Server::"other""#));
    first.context = json!({ "required_flag": false, "arguments": { "query": "zz", "n": -7 } })
        .as_object()
        .cloned()
        .expect("object");
    assert_eq!(build(&first), both(&s, &first).1);
    assert_eq!(s.context_fits.len(), 1);
    // Another entity type where a `User` is declared: validated, refused, not kept.
    let wrong = request(
        json!({ "required_flag": true, "arguments": { "owner": { "type": "Mcp::Group", "id": "g" } } }),
    );
    assert!(build(&wrong).is_err());
    assert_eq!(s.context_fits.len(), 1);
    let owner = request(
        json!({ "required_flag": true, "arguments": { "owner": { "type": "Mcp::User", "id": "g" } } }),
    );
    assert!(build(&owner).is_ok());
    assert_eq!(s.context_fits.len(), 2);
    // A required attribute missing, or an attribute more: another signature, validated.
    assert!(build(&request(json!({ "arguments": { "query": "a", "n": 1 } }))).is_err());
    assert!(
        build(&request(
            json!({ "required_flag": true, "arguments": { "query": "a" } })
        ))
        .is_ok()
    );
    assert_eq!(s.context_fits.len(), 3);
}
