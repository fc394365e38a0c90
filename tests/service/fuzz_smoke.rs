//! A short smoke run of every fuzz target (`src/fuzzing.rs`, `fuzz/`) on stable Rust,
//! without cargo-fuzz: each target function gets its committed seed corpus
//! (`fuzz/corpus/<target>/`) and then a fixed number of inputs made by mutating the
//! seeds (bit flips, inserted tokens, deletions, splices), from a fixed RNG seed so
//! that every run is the same. A panic in a target (a crash, or a broken invariant)
//! fails the test; proptest then shrinks the input.
//!
//! Crashers found by the fuzzer are kept as regression tests at the end of this file.
//!
//! `cargo test --test service fuzz_smoke::write_seed_corpus -- --ignored` writes the seed
//! corpus again (the files are named by the SHA-256 of their content; ECDSA
//! signatures are randomized, so seeds holding tokens come out new each time).

use std::path::PathBuf;

use jsonwebtoken::Algorithm;
use mcp_authz::fuzzing::{self, AUDIENCE, ISSUER, TARGETS, TRUST_DOMAIN};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{gateway, repo};

fn corpus_dir(target: &str) -> PathBuf {
    repo().join("fuzz/corpus").join(target)
}

/// The seed corpus of a target (its `seed-*` files: not what a local fuzzer run
/// added beside them), in file name order.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("no seed corpus for `{target}`: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seed-"))
        })
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

fn target(name: &str) -> fn(&[u8]) {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target `{name}`"))
        .run
}

/// Tokens worth inserting: JSON syntax, the names the mappings read, and the
/// characters that make readers disagree.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "-0",
    "1e999",
    "18446744073709551616",
    "\"method\"",
    "\"params\"",
    "\"name\"",
    "\"Name\"",
    "\"arguments\"",
    "\"argumentſ\"",
    "\"uri\"",
    "\"id\"",
    "\"tools/call\"",
    "\"resources/read\"",
    "\"prompts/get\"",
    "\"subject\"",
    "\"resource\"",
    "\"action\"",
    "\"context\"",
    "\"type\"",
    "\"__entity\"",
    "\"user\"",
    "\"agent\"",
    "\"application\"",
    "\"evaluations\"",
    "\"options\"",
    "Mcp::",
    "::\"",
    "permit",
    "forbid",
    "when",
    "unless",
    "principal",
    "resource",
    "action",
    "context",
    " in ",
    " has ",
    " like ",
    "entity ",
    "namespace ",
    "appliesTo",
    "\"alg\"",
    "\"kid\"",
    "\"crit\"",
    "\"none\"",
    "\"exp\"",
    "\"nbf\"",
    "\"aud\"",
    "\"iss\"",
    "\"keys\"",
    "\"kty\"",
    "\"RSA\"",
    "\"EC\"",
    "\"OKP\"",
    "x-envoy-auth-partial-body",
    "authorization",
    "Bearer ",
    "mcp-method",
    "mcp-name",
    "\n",
    "\0",
    "\r\n",
    "\u{feff}",
    "\u{17f}",
    "%2e",
    "../",
    "\u{0}",
    "\u{ffff}",
];

/// One change to an input.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, usize),
    Byte(usize, u8),
    Delete(usize, usize),
    Splice(usize, usize, usize, usize),
    Duplicate(usize, usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<usize>();
    prop_oneof![
        2 => (at, 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        3 => (at, 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        1 => (at, any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        2 => (at, 1usize..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<usize>(), at, 1usize..64, at).prop_map(|(s, f, n, i)| Mutation::Splice(s, f, n, i)),
        1 => (at, 1usize..32, at).prop_map(|(f, n, i)| Mutation::Duplicate(f, n, i)),
    ]
}

fn apply(seeds: &[Vec<u8>], base: usize, mutations: &[Mutation]) -> Vec<u8> {
    let mut data = seeds[base % seeds.len()].clone();
    for m in mutations {
        let pos = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match *m {
            Mutation::Flip(i, bit) if !data.is_empty() => {
                let i = i % data.len();
                data[i] ^= 1 << bit;
            }
            Mutation::Flip(..) => {}
            Mutation::Insert(i, t) => {
                let i = pos(i, data.len());
                data.splice(i..i, TOKENS[t].bytes());
            }
            Mutation::Byte(i, b) => {
                let i = pos(i, data.len());
                data.insert(i, b);
            }
            Mutation::Delete(i, n) => {
                let i = pos(i, data.len());
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
            Mutation::Splice(s, from, n, i) => {
                let other = &seeds[s % seeds.len()];
                let from = pos(from, other.len()).min(other.len());
                let end = (from + n).min(other.len());
                let chunk = other[from..end].to_vec();
                let i = pos(i, data.len());
                data.splice(i..i, chunk);
            }
            Mutation::Duplicate(from, n, i) => {
                let from = pos(from, data.len()).min(data.len());
                let end = (from + n).min(data.len());
                let chunk = data[from..end].to_vec();
                let i = pos(i, data.len());
                data.splice(i..i, chunk);
            }
        }
    }
    data
}

/// Every seed, then `cases` mutated seeds.
fn smoke(name: &str, cases: u32) {
    let run = target(name);
    let seeds = seeds(name);
    assert!(!seeds.is_empty(), "empty seed corpus for `{name}`");
    for seed in &seeds {
        run(seed);
    }
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x6d63_702d_6175_7468),
        ..Config::default()
    });
    let strategy = (any::<usize>(), prop::collection::vec(mutation(), 1..6));
    runner
        .run(&strategy, |(base, mutations)| {
            run(&apply(&seeds, base, &mutations));
            Ok(())
        })
        .unwrap();
}

#[test]
fn jsonrpc_smoke() {
    smoke("jsonrpc", 400);
}

#[test]
fn ext_authz_smoke() {
    smoke("ext_authz", 200);
}

#[test]
fn authzen_smoke() {
    smoke("authzen", 200);
}

#[test]
fn jwt_smoke() {
    smoke("jwt", 150);
}

#[test]
fn policy_dir_smoke() {
    smoke("policy_dir", 60);
}

#[test]
fn gateway_smoke() {
    smoke("gateway", 200);
}

/// Random protobuf bytes rarely decode as a `CheckRequest`: this one builds the
/// request from parts (methods, headers, credentials, servers, and the JSON-RPC
/// seeds mutated) and encodes it, so that the mapping behind the decoding is reached.
#[test]
fn ext_authz_structured_smoke() {
    let bodies = seeds("jsonrpc");
    let token = valid_token(0);
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(0x0065_6e76_6f79),
        ..Config::default()
    });
    let header = prop_oneof![
        Just(("authorization".to_owned(), format!("Bearer {token}"))),
        Just(("Authorization".to_owned(), "Bearer x.y.z".to_owned())),
        Just(("x-envoy-auth-partial-body".to_owned(), "false".to_owned())),
        Just(("x-envoy-auth-partial-body".to_owned(), "true".to_owned())),
        Just(("mcp-method".to_owned(), "tools/call".to_owned())),
        Just(("mcp-name".to_owned(), "get_document".to_owned())),
        ("[a-zA-Z-]{1,12}", ".{0,12}"),
    ];
    let strategy = (
        prop::sample::select(vec!["POST", "GET", "DELETE", "post", "PUT", ""]),
        prop::collection::vec(header, 0..4),
        (any::<usize>(), prop::collection::vec(mutation(), 0..3)),
        prop::sample::select(vec![
            None,
            Some("spiffe://corp.example/ns/apps/sa/corpassist"),
            Some("spiffe://corp.example/ns/apps/sa/summarizer"),
            Some("spiffe://evil.example/ns/apps/sa/corpassist"),
            Some("not a spiffe id"),
            Some(""),
        ]),
        prop::sample::select(vec![None, Some("docs"), Some("projects"), Some("")]),
    );
    runner
        .run(
            &strategy,
            |(method, headers, (base, mutations), principal, server)| {
                let body = apply(&bodies, base, &mutations);
                let body = match body.iter().position(|&b| b == 0) {
                    Some(i) => body[i + 1..].to_vec(),
                    None => body,
                };
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                fuzzing::ext_authz_parts(method, &headers, &body, principal, server);
                Ok(())
            },
        )
        .unwrap();
}

// ---- the seed corpus ----

/// Far in the future (2100-01-01): committed tokens stay valid.
const FAR_EXP: i64 = 4_102_444_800;

/// A token of the test issuer for alice through corpassist, signed with test key `key`.
fn valid_token(key: usize) -> String {
    let fixture = fuzzing::fixture();
    let key = &fixture.keys()[key];
    let alg = key.algorithms[0];
    let header = json!({ "alg": alg, "kid": key.kid, "typ": "JWT" }).to_string();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "azp": "corpassist",
        "exp": FAR_EXP, "groups": ["engineering"], "scope": "docs.read",
    })
    .to_string();
    key.token(header.as_bytes(), claims.as_bytes(), alg)
        .unwrap()
}

fn jsonrpc_seeds() -> Vec<Vec<u8>> {
    let captured: Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/fixtures/mcp/client_requests.json")).unwrap(),
    )
    .unwrap();
    let mut out = Vec::new();
    for c in captured.as_array().unwrap() {
        let mut head = String::new();
        for (k, v) in c["headers"].as_object().unwrap() {
            if k.starts_with("mcp-") && k != "mcp-protocol-version" {
                head.push_str(&format!("{k}: {}\n", v.as_str().unwrap()));
            }
        }
        let body = c["body"].as_str().unwrap();
        let mut input = Vec::new();
        if !head.is_empty() {
            input.extend_from_slice(head.as_bytes());
            input.push(0);
        }
        input.extend_from_slice(body.as_bytes());
        out.push(input);
    }
    let bodies = [
        json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_documents","arguments":{"query":"titan","max_results":500}}}),
        json!({"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"delete_document","arguments":{"id":"q1"}}}),
        json!({"jsonrpc":"2.0","id":8,"method":"resources/read","params":{"uri":"docs://finance/budget-2026"}}),
        json!({"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"docs://finance/titan/../budget-2026"}}),
        json!({"jsonrpc":"2.0","id":10,"method":"prompts/get","params":{"name":"summarize","arguments":{"doc":"x"}}}),
        json!({"jsonrpc":"2.0","id":11,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"summarize"},"argument":{"name":"doc","value":"q"}}}),
        json!({"jsonrpc":"2.0","id":12,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"docs://{id}"},"argument":{"name":"id","value":"t"},"context":{"arguments":{}}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":13,"result":{"roots":[]}}),
        json!({"jsonrpc":"2.0","id":14,"error":{"code":-1,"message":"no"}}),
        json!([{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_document","arguments":{}}}]),
        json!({"jsonrpc":"2.0","id":15,"method":"tools/call","params":{"name":"update_issue","arguments":{"nested":{"a":[1,2,{"b":null}]}}}}),
    ];
    for b in bodies {
        out.push(b.to_string().into_bytes());
    }
    // Near misses and duplicates the strict reader refuses.
    out.push(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get_document","Name":"delete_document"}}"#.to_vec());
    out.push(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping","params":{"name":"x"}}"#
            .to_vec(),
    );
    out.push(b"mcp-method: tools/call\nmcp-name: =?base64?ZGVsZXRlX2RvY3VtZW50?=\n\0{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"delete_document\"}}".to_vec());
    out
}

fn ext_authz_seeds() -> Vec<Vec<u8>> {
    use prost::Message as _;
    let token = valid_token(0);
    let bearer = format!("Bearer {token}");
    let app = "spiffe://corp.example/ns/apps/sa/corpassist";
    let tool = |name: &str| {
        json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":name,"arguments":{"document_id":"titan/q1-strategy"}}})
            .to_string()
    };
    let mut out = Vec::new();
    let mut add = |method: &str, headers: &[(&str, &str)], body: &str, principal, server| {
        out.push(
            fuzzing::check_request(method, headers, body.as_bytes(), principal, server)
                .encode_to_vec(),
        );
    };
    let ct = ("content-type", "application/json");
    add(
        "POST",
        &[ct],
        &tool("get_document"),
        Some(app),
        Some("docs"),
    );
    add(
        "POST",
        &[ct],
        &tool("delete_document"),
        Some(app),
        Some("docs"),
    );
    add(
        "POST",
        &[ct, ("authorization", &bearer)],
        &tool("get_document"),
        None,
        None,
    );
    add(
        "POST",
        &[
            ct,
            ("authorization", &bearer),
            ("mcp-method", "tools/call"),
            ("mcp-name", "get_document"),
        ],
        &tool("get_document"),
        Some(app),
        Some("docs"),
    );
    add(
        "POST",
        &[ct, ("x-envoy-auth-partial-body", "true")],
        &tool("get_document"),
        Some(app),
        Some("docs"),
    );
    add(
        "POST",
        &[ct],
        &json!({"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"docs://finance/budget-2026"}}).to_string(),
        Some(app),
        Some("docs"),
    );
    add("GET", &[("authorization", &bearer)], "", None, Some("docs"));
    add("DELETE", &[], "", Some(app), Some("projects"));
    add("POST", &[ct], &tool("get_document"), None, Some("docs"));
    add(
        "POST",
        &[ct, ("authorization", "Bearer e30.e30.e30")],
        &tool("x"),
        None,
        None,
    );
    // With the MCP filter's metadata and a header map, as Envoy 1.40 sends them.
    let mut check = fuzzing::check_request(
        "POST",
        &[],
        tool("find_project").as_bytes(),
        Some(app),
        Some("projects"),
    );
    {
        use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, Metadata};
        use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
        let attrs = check.attributes.as_mut().unwrap();
        let http = attrs.request.as_mut().unwrap().http.as_mut().unwrap();
        http.header_map = Some(HeaderMap {
            headers: vec![
                HeaderValue {
                    key: "content-type".into(),
                    value: "application/json".into(),
                    ..HeaderValue::default()
                },
                HeaderValue {
                    key: "x-envoy-auth-partial-body".into(),
                    raw_value: b"false".to_vec(),
                    ..HeaderValue::default()
                },
            ],
        });
        let s = |v: &str| PbValue {
            kind: Some(Kind::StringValue(v.into())),
        };
        attrs.metadata_context = Some(Metadata {
            filter_metadata: [(
                "envoy.filters.http.mcp".to_owned(),
                Struct {
                    fields: [
                        ("method".to_owned(), s("tools/call")),
                        ("jsonrpc".to_owned(), s("2.0")),
                        (
                            "params".to_owned(),
                            PbValue {
                                kind: Some(Kind::StructValue(Struct {
                                    fields: [("name".to_owned(), s("find_project"))]
                                        .into_iter()
                                        .collect(),
                                })),
                            },
                        ),
                    ]
                    .into_iter()
                    .collect(),
                },
            )]
            .into_iter()
            .collect(),
            ..Metadata::default()
        });
    }
    out.push(check.encode_to_vec());
    out
}

fn authzen_seeds() -> Vec<Vec<u8>> {
    let token = valid_token(1);
    let ct = "content-type: application/json";
    let req = |path: &str, headers: &[&str], body: Value| {
        let mut s = format!("{path}\n");
        for h in headers {
            s.push_str(h);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&body.to_string());
        s.into_bytes()
    };
    let eval = |subject: Value, name: &str, resource: Value, context: Value| json!({ "subject": subject, "action": {"name": name}, "resource": resource, "context": context });
    let alice = json!({"type": "user", "id": "alice"});
    let carol = json!({"type": "user", "id": "carol"});
    let tool = |id: &str| json!({"type": "tool", "id": id});
    let mut out = vec![
        req(
            "evaluation",
            &[ct],
            eval(
                alice.clone(),
                "tools/call",
                tool("docs/summarize_document"),
                json!({"agent": "corpassist"}),
            ),
        ),
        req(
            "evaluation",
            &[ct],
            eval(
                json!({"type": "application", "id": "ops-console"}),
                "tools/call",
                tool("projects/update_issue"),
                json!({}),
            ),
        ),
        req(
            "evaluation",
            &[ct],
            eval(
                carol.clone(),
                "resources/read",
                json!({"type": "Mcp::Resource", "id": "docs/docs://finance/budget-2026"}),
                json!({"agent": {"type": "application", "id": "corpassist", "properties": {"x": 1}}}),
            ),
        ),
        req(
            "evaluation",
            &[ct],
            eval(
                alice.clone(),
                "tools/call",
                tool("docs/search_documents"),
                json!({"agent": "corpassist", "arguments": {"query": "titan", "max_results": 500}}),
            ),
        ),
        req(
            "evaluation",
            &[ct, &format!("authorization: Bearer {token}")],
            eval(
                alice.clone(),
                "tools/call",
                tool("docs/get_document"),
                json!({"arguments": {"document_id": "titan/q1-strategy"}}),
            ),
        ),
        req(
            "evaluation",
            &[ct, "authorization: Bearer a.b.c"],
            eval(
                alice.clone(),
                "tools/call",
                tool("docs/get_document"),
                json!({}),
            ),
        ),
        req(
            "evaluation",
            &[ct],
            json!({"subject": alice, "action": {"name": "Mcp::Action::\"tools/call\"", "properties": {"k": "v"}}, "resource": {"type": "Mcp::Tool", "id": "docs/get_document", "properties": {"owner": "x"}}, "options": {"explain": true}}),
        ),
        req(
            "evaluations",
            &[ct],
            json!({"subject": alice, "context": {"agent": "corpassist"}, "evaluations": [
            {"action": {"name": "tools/call"}, "resource": tool("docs/get_document")},
            {"action": {"name": "tools/call"}, "resource": tool("docs/delete_document")},
            {"action": {"name": "nope"}, "resource": tool("docs/x")},
        ], "options": {"evaluations_semantic": "deny_on_first_deny", "explain": true}}),
        ),
        req(
            "search/resource",
            &[ct],
            json!({"subject": alice, "action": {"name": "tools/call"}, "resource": {"type": "tool"}, "context": {"agent": "corpassist"}, "page": {"limit": 2}}),
        ),
        req(
            "search/subject",
            &[ct],
            json!({"subject": {"type": "user"}, "action": {"name": "tools/call"}, "resource": tool("docs/get_document"), "context": {"agent": "corpassist"}}),
        ),
        req(
            "search/action",
            &[ct],
            json!({"subject": alice, "resource": tool("docs/get_document"), "context": {"agent": "corpassist"}}),
        ),
        req("evaluation", &["content-type: text/plain"], json!({})),
    ];
    out.push(
        format!("evaluation\n{ct}\n\n{{\"subject\":{{\"type\":\"user\",\"id\":\"alice\"}},\"subject\":{{\"type\":\"user\",\"id\":\"dave\"}},\"action\":{{\"name\":\"tools/call\"}},\"resource\":{{\"type\":\"tool\",\"id\":\"docs/delete_document\"}},\"context\":{{\"agent\":\"corpassist\"}}}}")
            .into_bytes(),
    );
    out
}

fn jwt_seeds() -> Vec<Vec<u8>> {
    let fixture = fuzzing::fixture();
    let mut out = Vec::new();
    for (i, _) in fixture.keys().iter().enumerate() {
        let mut t = b"T".to_vec();
        t.extend_from_slice(valid_token(i).as_bytes());
        out.push(t);
    }
    let mut t = b"TBearer ".to_vec();
    t.extend_from_slice(valid_token(1).as_bytes());
    out.push(t);
    let signed = |key: u8, header: Value, claims: Value| {
        let mut s = vec![b'S', key];
        s.extend_from_slice(header.to_string().as_bytes());
        s.push(0);
        s.extend_from_slice(claims.to_string().as_bytes());
        s
    };
    let claims = json!({"iss": ISSUER, "aud": [AUDIENCE, "other"], "sub": "bob", "client_id": "summarizer",
        "exp": FAR_EXP, "nbf": 1_000_000_000, "groups": "finance engineering", "scp": ["a", "b"], "email": "b@x"});
    out.push(signed(
        0,
        json!({"alg": "ES256", "kid": "ec1"}),
        claims.clone(),
    ));
    out.push(signed(1, json!({"alg": "EdDSA"}), claims.clone()));
    out.push(signed(
        2,
        json!({"alg": "RS256", "kid": "rsa1", "crit": ["exp"]}),
        claims.clone(),
    ));
    out.push(signed(
        2,
        json!({"alg": "PS256", "kid": "rsa1"}),
        claims.clone(),
    ));
    out.push(signed(
        3,
        json!({"alg": "ES256", "kid": "ec1"}),
        claims.clone(),
    ));
    out.push(signed(
        4,
        json!({"alg": "RS256", "kid": "rsa1"}),
        claims.clone(),
    ));
    out.push(signed(
        0,
        json!({"alg": "none", "kid": "ec1"}),
        claims.clone(),
    ));
    out.push(signed(
        0,
        json!({"alg": "HS256", "kid": "ec1"}),
        claims.clone(),
    ));
    out.push(signed(
        0,
        json!({"alg": "ES256", "kid": "ec1"}),
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": 1.5e9}),
    ));
    out.push(signed(
        0,
        json!({"alg": "ES256", "kid": "ec1"}),
        json!({"iss": ISSUER, "aud": AUDIENCE, "sub": 42, "exp": FAR_EXP}),
    ));
    out.push(signed(
        0,
        json!({"alg": "ES256", "kid": 7}),
        json!({"iss": ISSUER, "aud": AUDIENCE, "exp": "soon"}),
    ));
    out.push(b"Te30.e30.".to_vec());
    out.push(b"Ta.b.c.d.e".to_vec());
    let mut k = b"K".to_vec();
    k.extend_from_slice(
        json!({"keys": fixture.keys().iter().take(2).map(|k| k.jwk().clone()).collect::<Vec<_>>()})
            .to_string()
            .as_bytes(),
    );
    out.push(k);
    let mut k = b"K".to_vec();
    let mut rsa = fixture.keys()[2].jwk().clone();
    rsa["alg"] = "RS512".into();
    k.extend_from_slice(
        json!({"keys": [rsa, {"kty": "oct", "k": "c2VjcmV0"}]})
            .to_string()
            .as_bytes(),
    );
    out.push(k);
    out
}

fn policy_dir_seeds() -> Vec<Vec<u8>> {
    let root = repo();
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();
    // An imported file of the reference set, as the target writes it to `tools/`.
    let tools = |name: &str| {
        [
            format!("//@tools/{name}\n").into_bytes(),
            read(&format!("policies/tools/{name}")),
        ]
        .concat()
    };
    let join = |parts: Vec<Vec<u8>>| parts.join(&0u8);
    vec![
        join(vec![
            read("policies/mcp.cedarschema"),
            read("policies/entities.json"),
            read("policies/users.cedar"),
            read("policies/applications.cedar"),
            read("policies/housekeeping.cedar"),
            tools("docs.cedarschema"),
            tools("projects.cedarschema"),
        ]),
        join(vec![
            read("tests/fixtures/authzen/records.cedarschema"),
            read("tests/fixtures/authzen/entities.json"),
            read("tests/fixtures/authzen/records.cedar"),
        ]),
        join(vec![
            b"entity User in [Group]; entity Group; entity Doc { owner: User, level: Long };\naction read appliesTo { principal: User, resource: Doc, context: { n?: Long } };".to_vec(),
            br#"[{"uid":{"type":"User","id":"a"},"attrs":{},"parents":[{"type":"Group","id":"g"}]},{"uid":{"type":"Doc","id":"d"},"attrs":{"owner":{"__entity":{"type":"User","id":"a"}},"level":3},"parents":[]}]"#.to_vec(),
            b"permit (principal in Group::\"g\", action, resource) when { resource.owner == principal && resource.level < 5 };\nforbid (principal, action == Action::\"read\", resource) when { context has n && context.n > 9 };".to_vec(),
            b"@id(\"t\")\npermit (principal == ?principal, action, resource in ?resource);".to_vec(),
        ]),
        join(vec![b"entity A;".to_vec(), Vec::new(), b"permit (principal, action, resource".to_vec()]),
    ]
}

fn gateway_seeds() -> Vec<Vec<u8>> {
    use gateway::{jsonrpc, parsed, spiffe};
    use mcp_authz::api::proto::v1::{
        self as gw, BatchCheckRequest, FilterListRequest, Identity, Names, VerifiedIdentity,
        filter_list_request::List,
    };
    use prost::Message as _;
    let bearer = gateway::bearer(valid_token(0));
    let checks = vec![
        parsed(
            spiffe("corpassist"),
            "docs",
            "tools/call",
            "get_document",
            None,
        ),
        parsed(bearer.clone(), "docs", "tools/call", "delete_document", None),
        jsonrpc(
            bearer.clone(),
            "docs",
            json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_documents","arguments":{"query":"q","max_results":500}}}).to_string(),
        ),
        parsed(
            Identity {
                verified: Some(VerifiedIdentity {
                    user: "mallory".into(),
                    application: "ops-console".into(),
                    groups: vec!["project-ops".into()],
                }),
                ..Identity::default()
            },
            "projects",
            "tools/call",
            "update_issue",
            None,
        ),
        jsonrpc(
            spiffe("summarizer"),
            "docs",
            json!([{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"docs://finance/budget-2026"}}]).to_string(),
        ),
    ];
    let mut out: Vec<Vec<u8>> = checks
        .iter()
        .map(|c| [b"C".to_vec(), c.encode_to_vec()].concat())
        .collect();
    out.push(
        [
            b"B".to_vec(),
            BatchCheckRequest {
                checks: checks.clone(),
                semantic: gw::Semantic::DenyOnFirstDeny as i32,
            }
            .encode_to_vec(),
        ]
        .concat(),
    );
    let list = |method: &str, list: List| FilterListRequest {
        identity: Some(spiffe("corpassist")),
        server: "docs".into(),
        method: method.into(),
        list: Some(list),
        ..FilterListRequest::default()
    };
    let tools_result =
        std::fs::read(repo().join("tests/fixtures/mcp/tools_list_result.json")).unwrap();
    for request in [
        list(
            "tools/list",
            List::Names(Names {
                names: vec!["get_document".into(), "delete_document".into(), "x".into()],
            }),
        ),
        list("tools/list", List::Result(tools_result)),
        list(
            "resources/list",
            List::Result(
                json!({"resources":[{"uri":"docs://finance/budget-2026","name":"b"},{"uri":"docs://titan/q1","name":"q"}]})
                    .to_string()
                    .into_bytes(),
            ),
        ),
        list(
            "tools/list",
            List::Result(
                json!({"tools":[{"name":"get_document"}],"result":{"tools":[{"name":"delete_document"}]}})
                    .to_string()
                    .into_bytes(),
            ),
        ),
    ] {
        out.push([b"F".to_vec(), request.encode_to_vec()].concat());
    }
    out
}

/// Writes `fuzz/corpus/<target>/` again from the seeds above.
#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    let corpora: [(&str, Vec<Vec<u8>>); 6] = [
        ("gateway", gateway_seeds()),
        ("jsonrpc", jsonrpc_seeds()),
        ("ext_authz", ext_authz_seeds()),
        ("authzen", authzen_seeds()),
        ("jwt", jwt_seeds()),
        ("policy_dir", policy_dir_seeds()),
    ];
    for (name, inputs) in corpora {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for input in inputs {
            let hash = Sha256::digest(&input);
            let file: String = hash.iter().take(10).map(|b| format!("{b:02x}")).collect();
            std::fs::write(dir.join(format!("seed-{file}")), input).unwrap();
        }
    }
}

/// The seed tokens are signed by the test keys the targets configure.
#[test]
fn seed_tokens_verify() {
    let fixture = fuzzing::fixture();
    assert_eq!(fixture.keys()[0].algorithms[0], Algorithm::ES256);
    assert_eq!(TRUST_DOMAIN, "corp.example");
    for (i, key) in fixture.keys().iter().enumerate() {
        let verified = fixture.verify(&valid_token(i));
        if key.published {
            let identity = verified.unwrap();
            assert_eq!(identity.user.as_deref(), Some("alice"));
            assert_eq!(identity.application.as_deref(), Some("corpassist"));
        } else {
            assert!(
                verified.is_err(),
                "a key the issuer does not publish verified a token"
            );
        }
    }
}

/// The seeds reach what they are for: allows and each kind of deny, decisions both
/// ways, loaded policy directories. (If a change made every seed a refusal, the
/// fuzzers would stop at the front door.)
#[test]
fn seeds_reach_the_decisions() {
    use mcp_authz::api::ext_authz::EnvoyAnswer;
    let mut statuses = std::collections::BTreeSet::new();
    for seed in seeds("ext_authz") {
        match fuzzing::ext_authz_answer(&seed).expect("a seed decodes") {
            EnvoyAnswer::Allow { .. } => statuses.insert(200),
            EnvoyAnswer::Deny { status, .. } => statuses.insert(status),
        };
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [200, 400, 401, 403]
    );

    let mut seen = std::collections::BTreeSet::new();
    for seed in seeds("authzen") {
        let (status, json) = fuzzing::authzen_response(&seed).expect("a seed is an HTTP request");
        seen.insert((status, json.get("decision").and_then(Value::as_bool)));
    }
    for expected in [
        (200, Some(true)),
        (200, Some(false)),
        (400, None),
        (401, None),
    ] {
        assert!(
            seen.contains(&expected),
            "no seed answered {expected:?}: {seen:?}"
        );
    }

    let loaded = seeds("policy_dir")
        .iter()
        .filter(|s| fuzzing::policy_dir_loads(s))
        .count();
    assert!(loaded >= 3, "only {loaded} seed policy directories load");
}

/// The smoke harness fails on a target that panics (it is not a test that cannot fail).
#[test]
fn a_panicking_target_fails_the_smoke() {
    fn picky(data: &[u8]) {
        assert!(!data.contains(&b'}'), "a closing brace");
    }
    let seeds = vec![b"{".to_vec()];
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(1),
        ..Config::default()
    });
    let result = runner.run(
        &(any::<usize>(), prop::collection::vec(mutation(), 1..6)),
        |(base, mutations)| {
            picky(&apply(&seeds, base, &mutations));
            Ok(())
        },
    );
    assert!(
        result.is_err(),
        "the mutations never produced a closing brace"
    );
}
