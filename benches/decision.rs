//! Criterion benchmarks of the decision path on the reference policies:
//! a decision (cache miss and cache hit) beside raw Cedar on the same request,
//! MCP body parsing, JWT verification (cold and cached), and Envoy's
//! `CheckRequest` (its bytes, as the gRPC mode reads them) → decision request mapping.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use cedar_policy::{Authorizer, Context, Request};
use criterion::{Criterion, criterion_group};
use envoy_types::ext_authz::v3::pb::CheckRequest;
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Request as EnvoyHttp,
};
use mcp_authz::api::ext_authz::{WireCheckRequest, envoy_request};
use mcp_authz::api::mcp_check::request_for;
use mcp_authz::authz::{
    CacheSettings, DecisionMeta, DecisionRequest, Engine, Interface, RequestEntity, Rules,
    TokenFacts, build_context, decide, decide_with_rules, tool_action,
};
use mcp_authz::identity::{Identity, IdentityConfig, IdentityInput, IssuerConfig, Resolver};
use mcp_authz::mcp::Kind;
use mcp_authz::mcp::jsonrpc::parse_body;
use mcp_authz::policy::{PolicyStore, Snapshot};
use prost::Message as _;
use serde_json::json;

#[path = "common/mod.rs"]
mod common;
use common::{request, root};

const BODY: &str = r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search_documents","arguments":{"query":"titan strategy","max_results":20}}}"#;

/// The request ext_authz makes for a verified token (the randomized load workload):
/// the user with the groups the token names added to those of the entity data, the
/// token's scopes, the caller's address in `context.request`.
fn token_groups_request() -> DecisionRequest {
    let mut r = request();
    let user = Kind::User.uid("alice");
    r.entities.push(RequestEntity {
        uid: user,
        parents: vec![
            Kind::Group.uid("engineering"),
            Kind::Group.uid("finance"),
            Kind::Group.uid("doc-admins"),
        ],
        attrs: serde_json::Map::new(),
    });
    r.token = Some(TokenFacts {
        scopes: vec!["mcp:tools".into()],
        claims: serde_json::Map::new(),
    });
    r.context
        .insert("request".into(), json!({ "source_ip": "10.1.2.3" }));
    r
}

/// [`token_groups_request`] with the token naming only a group the entity data
/// already gives the user, as the load benchmark's tokens do.
fn known_groups_request() -> DecisionRequest {
    let mut r = token_groups_request();
    if let Some(e) = r.entities.first_mut() {
        e.parents = vec![Kind::Group.uid("engineering")];
    }
    r
}

/// `request` with a fresh nonce in its arguments: never the same decision request
/// twice (a cache miss every time), as the randomized load workload sends.
fn with_nonce(r: &mut DecisionRequest, n: u64) {
    if let Some(args) = r
        .context
        .get_mut("arguments")
        .and_then(serde_json::Value::as_object_mut)
    {
        args.insert("query".into(), json!(format!("q{n:010}")));
    }
}

/// The decision paths the cache-miss benchmarks measure, run `n` times each without
/// criterion: for instruction counts under `valgrind --tool=callgrind`, which are
/// deterministic where times on a shared machine are not.
/// `DECISION_CALLGRIND=<case> DECISION_CALLGRIND_N=<n> target/release/deps/decision-*`.
fn callgrind(case: &str, n: u64) {
    let dir = root().join("policies");
    let snapshot = Snapshot::load(&dir, 1).expect("reference policies");
    let store = Arc::new(PolicyStore::open(&dir).expect("policies"));
    let engine = Engine::new(store).with_cache(&CacheSettings::default());
    let engine_snapshot = engine.snapshot();
    let mut allowed = 0u64;
    match case {
        "miss" => {
            let r = request();
            for _ in 0..n {
                allowed += u64::from(decide(&snapshot, black_box(&r)).allow);
            }
        }
        "token_groups" | "known_groups" => {
            let r = if case == "known_groups" {
                known_groups_request()
            } else {
                token_groups_request()
            };
            for _ in 0..n {
                allowed += u64::from(decide(&snapshot, black_box(&r)).allow);
            }
        }
        "token_groups_cached" | "authzen_cached" => {
            let mut r = if case == "authzen_cached" {
                request()
            } else {
                token_groups_request()
            };
            for i in 0..n {
                with_nonce(&mut r, i);
                allowed += u64::from(engine.evaluate(&engine_snapshot, black_box(&r)).allow);
            }
        }
        other => panic!("unknown case {other}"),
    }
    assert_eq!(allowed, n, "every decision allows");
}

fn decisions(c: &mut Criterion) {
    let dir = root().join("policies");
    let snapshot = Snapshot::load(&dir, 1).expect("reference policies");
    let req = request();
    assert!(decide(&snapshot, &req).allow);

    // Raw Cedar, the baseline: the same two evaluations (user, then application) with
    // the request, context and entities already built. A tool the schema declares is
    // evaluated with its tool action (`tools/call/docs/search_documents`), and so is
    // the baseline.
    let typed_action = match tool_action(&snapshot, &req, Rules::default()) {
        Ok(Some(t)) => t.action.clone(),
        _ => req.action.clone(),
    };
    let authorizer = Authorizer::new();
    let context = Context::from_json_value(
        json!({
            "arguments": { "query": "titan strategy", "max_results": 20 },
            "application": { "__entity": { "type": "Mcp::Application", "id": "corpassist" } },
            "user": { "__entity": { "type": "Mcp::User", "id": "alice" } },
            "server": { "__entity": { "type": "Mcp::Server", "id": "docs" } },
        }),
        Some((&snapshot.schema, &typed_action)),
    )
    .expect("context");
    let cedar_requests: Vec<Request> = [req.user.clone(), req.application.clone()]
        .into_iter()
        .flatten()
        .map(|p| {
            Request::new(
                p,
                typed_action.clone(),
                req.resource.clone(),
                context.clone(),
                Some(&snapshot.schema),
            )
            .expect("request")
        })
        .collect();
    c.bench_function("raw_cedar_is_authorized_x2", |b| {
        b.iter(|| {
            for r in &cedar_requests {
                black_box(authorizer.is_authorized(r, &snapshot.policies, &snapshot.entities));
            }
        })
    });
    c.bench_function("context_build", |b| {
        b.iter(|| black_box(build_context(&snapshot, black_box(&req))))
    });
    c.bench_function("decision_cache_miss", |b| {
        b.iter(|| black_box(decide(&snapshot, black_box(&req))))
    });

    let store = Arc::new(PolicyStore::open(&dir).expect("policies"));
    let engine = Engine::new(store).with_cache(&CacheSettings::default());
    engine.evaluate(&engine.snapshot(), &req);
    c.bench_function("decision_cache_hit", |b| {
        b.iter(|| black_box(engine.evaluate(&engine.snapshot(), black_box(&req))))
    });
    // What an interface's entry adds on a hit: an id, the timing and the metrics.
    let recorded = Engine::with_recorder(
        Arc::clone(engine.store()),
        Arc::new(mcp_authz::telemetry::Telemetry::default()),
    )
    .with_cache(&CacheSettings::default());
    let meta = DecisionMeta::default();
    c.bench_function("decision_cache_hit_recorded", |b| {
        b.iter(|| {
            let snapshot = recorded.snapshot();
            black_box(recorded.decide(&snapshot, Interface::Grpc, black_box(&req), &meta))
        })
    });

    // A cache miss with token groups: the request's user is merged with the token's
    // groups over the entity data (ext_authz and the gateway with a verified token).
    let groups = token_groups_request();
    assert!(decide(&snapshot, &groups).allow);
    c.bench_function("decision_cache_miss_token_groups", |b| {
        b.iter(|| black_box(decide(&snapshot, black_box(&groups))))
    });
    let known = known_groups_request();
    assert!(decide(&snapshot, &known).allow);
    c.bench_function("decision_cache_miss_known_groups", |b| {
        b.iter(|| black_box(decide(&snapshot, black_box(&known))))
    });
    // Through the engine and its cache, a fresh nonce every time (the randomized load
    // workloads): the miss plus the cache's lookup and insert. AuthZEN's request has no
    // per-request entity data; ext_authz's has the token's groups.
    let mut n = 0u64;
    let mut authzen = request();
    c.bench_function("decision_cache_miss_authzen_engine", |b| {
        b.iter(|| {
            n += 1;
            with_nonce(&mut authzen, n);
            black_box(engine.evaluate(&engine.snapshot(), black_box(&authzen)))
        })
    });
    let mut groups = token_groups_request();
    c.bench_function("decision_cache_miss_token_groups_engine", |b| {
        b.iter(|| {
            n += 1;
            with_nonce(&mut groups, n);
            black_box(engine.evaluate(&engine.snapshot(), black_box(&groups)))
        })
    });

    // A tool the entity data does not list (synthesized under its server). `docs` has
    // imported tools, so such a call is refused unless undeclared tools are allowed:
    // allowed here, it is evaluated with the untyped `tools/call`.
    let mut unknown = request();
    unknown.resource = Kind::Tool.uid("docs/not_in_the_entity_data");
    let undeclared = Rules {
        allow_undeclared_tools: true,
        ..Rules::default()
    };
    let d = decide_with_rules(&snapshot, &unknown, undeclared);
    assert!(d.allow && !d.evaluations.is_empty(), "{d:?}");
    c.bench_function("decision_cache_miss_synthesized_tool", |b| {
        b.iter(|| {
            black_box(decide_with_rules(
                &snapshot,
                black_box(&unknown),
                undeclared,
            ))
        })
    });
}

fn parsing(c: &mut Criterion) {
    assert!(parse_body(BODY.as_bytes()).is_ok());
    c.bench_function("mcp_parse_tools_call", |b| {
        b.iter(|| black_box(parse_body(black_box(BODY.as_bytes()))))
    });
}

fn envoy_check_request() -> CheckRequest {
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-session-id", "7d1f0b6a9c2e4f31a8b5c6d7e8f90123"),
        ("authorization", "Bearer eyJhbGciOiJFZERTQSJ9.e30.sig"),
        (":path", "/mcp"),
        (":method", "POST"),
        (":authority", "127.0.0.1:10000"),
    ];
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(EnvoyHttp {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/mcp".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    raw_body: BODY.as_bytes().to_vec(),
                    ..HttpRequest::default()
                }),
                ..EnvoyHttp::default()
            }),
            context_extensions: [("mcp_server".to_owned(), "docs".to_owned())]
                .into_iter()
                .collect(),
            ..AttributeContext::default()
        }),
    }
}

fn mapping(c: &mut Criterion) {
    // As the gRPC mode gets it: the message's bytes, read off the wire.
    let bytes = prost::bytes::Bytes::from(envoy_check_request().encode_to_vec());
    let identity = Identity {
        user: Some("alice".into()),
        application: Some("corpassist".into()),
        ..Identity::default()
    };
    let extra = serde_json::Map::new();
    c.bench_function("envoy_check_bytes_to_decision_request", |b| {
        b.iter(|| {
            let wire = WireCheckRequest::decode(black_box(bytes.clone())).expect("decodes");
            let r = envoy_request(&wire).expect("UTF-8");
            let message = parse_body(r.body).expect("body");
            let call = &message.calls[0];
            black_box(request_for(
                call,
                r.server.unwrap_or("docs"),
                &identity,
                &extra,
            ))
        })
    });
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let token = std::fs::read_to_string(root().join("examples/identity/erin.jwt")).expect("token");
    let token = token.trim();
    let resolver = |cache: u64| {
        let mut issuer = IssuerConfig::new("https://idp.corp.example", vec!["mcp-mesh".into()]);
        issuer.jwks_file = Some(root().join("examples/identity/jwks.json"));
        issuer.algorithms = vec!["EdDSA".into()];
        issuer.groups_claim = Some("groups".into());
        let mut config = IdentityConfig {
            issuers: vec![issuer],
            ..IdentityConfig::default()
        };
        config.jwt.token_cache_size = cache;
        rt.block_on(Resolver::new(&config, root()))
            .expect("resolver")
    };
    let input = || IdentityInput {
        bearer_token: Some(token),
        spiffe_id: None,
        trusted: None,
    };
    let cold = resolver(0);
    assert!(rt.block_on(cold.resolve(input())).is_ok());
    c.bench_function("jwt_verify_eddsa_cold", |b| {
        b.iter(|| black_box(rt.block_on(cold.resolve(input()))))
    });
    let cached = resolver(10_000);
    assert!(rt.block_on(cached.resolve(input())).is_ok());
    c.bench_function("jwt_verify_cached", |b| {
        b.iter(|| black_box(rt.block_on(cached.resolve(input()))))
    });
}

/// A `tools/list` response of 200 tools (the reference server's four, with their
/// schemas, repeated under other names): what ext_proc reads and rewrites per list.
fn list_response_200() -> Vec<u8> {
    let fixture = root().join("tests/fixtures/mcp/tools_list_result.json");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).expect("fixture")).expect("json");
    let tools = result["tools"].as_array().expect("tools").clone();
    let many: Vec<serde_json::Value> = (0..200)
        .map(|i| {
            let mut t = tools[i % tools.len()].clone();
            t["name"] = json!(format!("tool_{i:03}"));
            t
        })
        .collect();
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 3, "result": {"tools": many}}))
        .expect("json")
}

fn lists(c: &mut Criterion) {
    use mcp_authz::mcp::lists::{ListKind, read_list_result};
    use mcp_authz::mcp::sse::EventReader;
    let body = list_response_200();
    let kind = ListKind::of("tools/list").expect("list");
    let keep: Vec<bool> = (0..200).map(|i| i % 4 != 3).collect();
    c.bench_function("list_read_200_tools", |b| {
        b.iter(|| black_box(read_list_result(black_box(&body), kind).expect("a list")))
    });
    c.bench_function("list_read_and_filter_200_tools", |b| {
        b.iter(|| {
            let list = read_list_result(black_box(&body), kind).expect("a list");
            black_box(list.filtered(kind, &keep))
        })
    });
    let mut stream = b"event: message\ndata: ".to_vec();
    stream.extend_from_slice(&body);
    stream.extend_from_slice(b"\n\n");
    c.bench_function("sse_read_200_tools_in_16k_chunks", |b| {
        b.iter(|| {
            let mut reader = EventReader::new(1 << 24);
            let mut n = 0;
            for chunk in stream.chunks(16 * 1024) {
                n += reader.push(chunk).expect("within the limit").len();
            }
            black_box(n)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = decisions, parsing, mapping, jwt, lists
}
fn main() {
    if let Ok(case) = std::env::var("DECISION_CALLGRIND") {
        let n = std::env::var("DECISION_CALLGRIND_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        callgrind(&case, n);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
