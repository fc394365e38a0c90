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
      required_flag: Bool,
    },
  };
  action "plain" appliesTo { principal: User, resource: Server };
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
    let direct = direct(shape, r).filter(|c| c.validate(&s.schema, &r.action).is_ok());
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
        // A caller's own `user` is replaced by the request's user.
        json!({ "required_flag": true, "user": { "__entity": { "type": "Mcp::User", "id": "mallory" } } }),
    ];
    for context in accepted {
        let r = request(context.clone());
        let (direct, parsed) = both(&s, &r);
        let parsed = parsed.unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(direct.as_ref(), Some(&parsed), "{context}");
        assert_eq!(build_context(&s, &r), Ok(parsed), "{context}");
    }
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
