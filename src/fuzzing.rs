//! Fuzzing entry points: one function per kind of untrusted input, each taking
//! arbitrary bytes through the code the service runs on them, and panicking when
//! an invariant breaks. The coverage-guided targets under `fuzz/` are thin
//! wrappers around [`TARGETS`]; `tests/fuzz_smoke.rs` feeds the same functions
//! their seed corpus (`fuzz/corpus/<name>/`) and mutated inputs on every
//! `cargo test`. `RELIABILITY.md` says how to run them and what they found.
//!
//! Not part of the service's interface: hidden from the documentation, changed
//! whenever a target needs it.
//!
//! Every target checks that nothing panics and, besides, what must hold for any
//! input:
//!
//! - every decision made is the decision of unindexed Cedar
//!   ([`authz::decide_unindexed`]), and an allow has one allowing evaluation per
//!   principal, without errors ([`check_decision`]);
//! - [`jsonrpc`]: a body the strict MCP reader accepts is read the same way by a
//!   plain JSON reader (method, tool and prompt name), within the limits; a refused
//!   one gets a JSON-RPC error response with the refusal's code;
//! - [`ext_authz`]: a `CheckRequest` is answered with 200 (allow) or 400/401/403
//!   and a JSON-RPC error body; an allow needs credentials, an MCP HTTP method and,
//!   for a POST, a body the MCP reader accepts;
//! - [`authzen`]: no request to the AuthZEN routes is a server error; decisions are
//!   booleans;
//! - [`jwt`]: a token is accepted only if an independent check of the rules (a
//!   configured key verifies the signature for an allowed algorithm, `iss`, `aud`,
//!   `exp`, `nbf`, no `crit`) accepts it too, and a key set that lacks a key never
//!   verifies a token signed by it;
//! - [`gateway`]: the gateway's gRPC API answers a `Check`, `BatchCheck` or
//!   `FilterList` or refuses it with a status; an allow has a decision id and
//!   allowing evaluations; a listed name is never both allowed and denied;
//! - [`policy_dir`]: a directory is loaded or refused with problems that render;
//!   a loaded snapshot decides every request its schema allows like unindexed
//!   Cedar, on a thread with the stack of a service worker.
//!
//! Input formats (kept textual where possible, so that seeds can be read and
//! written by hand):
//!
//! | target | input |
//! |---|---|
//! | `jsonrpc` | `[header lines NUL] body`: `Name: value` lines for `Mcp-Method` / `Mcp-Name`, then the JSON-RPC body |
//! | `ext_authz` | an Envoy `envoy.service.auth.v3.CheckRequest` in protobuf encoding |
//! | `authzen` | `PATH\n` then `Name: value` header lines, an empty line, and the body (an HTTP request without the method: always `POST`) |
//! | `jwt` | first byte: `T` the rest is a token (and an `Authorization` value); `S` then a key byte, then `header JSON NUL claims JSON`, signed with that key; `K` the rest is a JWKS document |
//! | `policy_dir` | `schema NUL entities NUL policy file NUL policy file ...` (empty entities: no `entities.json`) |
//! | `gateway` | first byte: `C` a `mcp_authz.v1.CheckRequest`, `B` a `BatchCheckRequest`, `F` a `FilterListRequest`; the rest its protobuf encoding |

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a fuzzing harness: a failed setup or a broken invariant is a finding, reported by panicking"
)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cedar_policy::{EntityId, EntityUid};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Map, Value, json};

use crate::api::ext_authz::{self, EnvoyAnswer};
use crate::api::http;
use crate::api::mcp_check::request_for;
use crate::api::services::Services;
use crate::authz::{self, Decision, DecisionRequest, Engine, Interface, Role};
use crate::identity::{
    Identity, IdentityConfig, IdentityInput, IssuerConfig, Resolver, bearer_token_from_header,
};
use crate::mcp::jsonrpc::{self, McpHeaders, MessageKind};
use crate::policy::{PolicyStore, Snapshot};
use crate::telemetry::Telemetry;

/// A fuzz target: the name of its `fuzz/` binary and corpus directory, and its function.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Name of the target (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`).
    pub name: &'static str,
    /// Runs one input; panics when an invariant breaks.
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "jsonrpc",
        run: jsonrpc,
    },
    Target {
        name: "ext_authz",
        run: ext_authz,
    },
    Target {
        name: "authzen",
        run: authzen,
    },
    Target {
        name: "jwt",
        run: jwt,
    },
    Target {
        name: "policy_dir",
        run: policy_dir,
    },
    Target {
        name: "gateway",
        run: gateway,
    },
];

/// The issuer of the test tokens.
pub const ISSUER: &str = "https://idp.fuzz.example";
/// The audience of the test tokens.
pub const AUDIENCE: &str = "mcp-mesh";
/// The SPIFFE trust domain the targets trust.
pub const TRUST_DOMAIN: &str = "corp.example";
/// Clock skew allowed by the test issuer (the default).
const CLOCK_SKEW: i64 = 30;

/// Stack of the thread each input runs on: a tokio worker's (2 MiB) where the code
/// is optimized as the service is; unoptimized test builds use several times more
/// stack per call, so they get more.
const STACK: usize = if cfg!(any(fuzzing, not(debug_assertions))) {
    2 * 1024 * 1024
} else {
    16 * 1024 * 1024
};

/// Run `f` on a thread with the stack of a service worker; a panic there is a
/// panic here.
fn on_worker_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("fuzz-input".into())
            .stack_size(STACK)
            .spawn_scoped(s, f);
        match handle.expect("spawn the input thread").join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A signing key of the test issuer (the test key pairs of `tests/fixtures/identity`).
pub struct TestKey {
    /// Its `kid`.
    pub kid: &'static str,
    /// Algorithms it signs with (the first is its JWK's).
    pub algorithms: &'static [Algorithm],
    /// Whether the issuer's key set publishes it.
    pub published: bool,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: Value,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    fn load(
        file: &str,
        kid: &'static str,
        algorithms: &'static [Algorithm],
        published: bool,
    ) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/identity")
            .join(file);
        let pem = std::fs::read(&path).expect("test key");
        let alg = algorithms[0];
        let encoding = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .expect("test key");
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).expect("jwk"))
            .expect("jwk json");
        jwk["kid"] = kid.into();
        jwk["use"] = "sig".into();
        let decoding = DecodingKey::from_jwk(&serde_json::from_value(jwk.clone()).expect("jwk"))
            .expect("decoding key");
        TestKey {
            kid,
            algorithms,
            published,
            encoding,
            decoding,
            jwk,
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The signature of `message` with `alg`, base64url.
    pub fn sign(&self, message: &[u8], alg: Algorithm) -> Option<String> {
        jsonwebtoken::crypto::sign(message, &self.encoding, alg).ok()
    }

    /// A token with these header and claims (JSON texts), signed with `alg`.
    pub fn token(&self, header: &[u8], claims: &[u8], alg: Algorithm) -> Option<String> {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature = self.sign(input.as_bytes(), alg)?;
        Some(format!("{input}.{signature}"))
    }
}

/// What every target shares: built once per process.
pub struct Fixture {
    runtime: tokio::runtime::Runtime,
    store: Arc<PolicyStore>,
    services: Services,
    router: axum::Router,
    gateway: crate::api::grpc::GatewayApi,
    keys: Vec<TestKey>,
    /// A valid token signed by each key (signed once: RSA signing is slow when fuzzing).
    key_tokens: Vec<String>,
    scratch: PathBuf,
}

impl std::fmt::Debug for Fixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixture")
            .field("scratch", &self.scratch)
            .finish_non_exhaustive()
    }
}

/// The JWKS document publishing the keys whose `published` is set.
fn published_jwks(keys: &[TestKey]) -> Value {
    json!({ "keys": keys.iter().filter(|k| k.published).map(|k| k.jwk.clone()).collect::<Vec<_>>() })
}

/// The identity configuration of the targets: the test issuer with its key set in
/// `jwks_file`, and the trust domain [`TRUST_DOMAIN`].
fn identity_config(jwks_file: &Path) -> IdentityConfig {
    let mut issuer = IssuerConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    issuer.jwks_file = Some(jwks_file.to_path_buf());
    issuer.algorithms = ["RS256", "PS256", "ES256", "EdDSA"]
        .map(str::to_owned)
        .to_vec();
    issuer.groups_claim = Some("groups".into());
    issuer.context_claims = vec!["email".into()];
    let mut config = IdentityConfig {
        issuers: vec![issuer],
        ..IdentityConfig::default()
    };
    config.spiffe.trust_domains = vec![TRUST_DOMAIN.to_owned()];
    // A small cache, so that inputs also exercise its hits and evictions.
    config.jwt.token_cache_size = 64;
    config
}

/// The shared fixture: the reference policies, an engine without cache, a resolver
/// trusting the test issuer and [`TRUST_DOMAIN`], the AuthZEN router.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let keys = vec![
            TestKey::load("ec1.pem", "ec1", &[Algorithm::ES256], true),
            TestKey::load("ed1.pem", "ed1", &[Algorithm::EdDSA], true),
            TestKey::load(
                "rsa1.pem",
                "rsa1",
                &[Algorithm::RS256, Algorithm::PS256, Algorithm::RS384],
                true,
            ),
            TestKey::load("ec2.pem", "ec2", &[Algorithm::ES256], false),
            TestKey::load("rsa3.pem", "rsa3", &[Algorithm::RS256], false),
        ];
        let scratch = std::env::temp_dir().join(format!("mcp-authz-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("scratch directory");
        let jwks_file = scratch.join("jwks.json");
        std::fs::write(&jwks_file, published_jwks(&keys).to_string()).expect("jwks file");
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let store = Arc::new(PolicyStore::open(&policies).expect("reference policies"));
        let telemetry = Arc::new(Telemetry::default());
        let engine = Engine::with_recorder(Arc::clone(&store), telemetry.clone());
        let resolver = runtime
            .block_on(Resolver::new(&identity_config(&jwks_file), &scratch))
            .expect("resolver");
        // The key set is read once, at start: leave nothing behind in the temporary directory.
        let _ = std::fs::remove_file(&jwks_file);
        let _ = std::fs::remove_dir(&scratch);
        let services = Services {
            envoy_default_server: Some("docs".into()),
            ..Services::new(engine, telemetry, resolver)
        };
        let ready = crate::api::services::Ready::with(services.clone());
        let gateway = crate::api::grpc::GatewayApi::new(ready.clone());
        let router = http::router(ready, false);
        Fixture {
            runtime,
            store,
            services,
            router,
            gateway,
            key_tokens: keys.iter().map(signed_for_jwks).collect(),
            keys,
            scratch,
        }
    })
}

impl Fixture {
    /// The test issuer's keys (published and not).
    pub fn keys(&self) -> &[TestKey] {
        &self.keys
    }

    /// Resolve a bearer token with the targets' resolver.
    pub fn verify(&self, token: &str) -> Result<Identity, crate::identity::AuthnError> {
        self.runtime
            .block_on(self.services.resolver.resolve(IdentityInput {
                bearer_token: Some(token),
                ..IdentityInput::default()
            }))
    }

    /// Remove a directory of [`Fixture::scratch_dir`], and the scratch directory once empty.
    fn remove_scratch_dir(&self, dir: &Path) {
        let _ = std::fs::remove_dir_all(dir);
        let _ = std::fs::remove_dir(&self.scratch);
    }

    /// A fresh, empty directory under the process's scratch directory.
    fn scratch_dir(&self) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = self
            .scratch
            .join(format!("d{}", NEXT.fetch_add(1, Ordering::Relaxed)));
        // Another thread may remove the (then empty) scratch directory between the
        // creation of the parent and of the child: try again.
        let mut result = std::fs::create_dir_all(&dir);
        for _ in 0..8 {
            if result.is_ok() {
                break;
            }
            result = std::fs::create_dir_all(&dir);
        }
        result.expect("scratch directory");
        dir
    }
}

/// The invariants of every decision: it is the decision of unindexed Cedar on the
/// same snapshot; each principal of the request was evaluated, and only they; an
/// allow is an allow of every evaluation, none with errors.
pub fn check_decision(snapshot: &Snapshot, request: &DecisionRequest, decision: &Decision) {
    let unindexed = authz::decide_unindexed(snapshot, request);
    assert_eq!(
        decision, &unindexed,
        "the indexed decision differs from unindexed Cedar for {request:?}"
    );
    if decision.allow {
        let mut expected = Vec::new();
        if let Some(u) = &request.user {
            expected.push((Role::User, u.to_string()));
        }
        if let Some(a) = &request.application {
            expected.push((Role::Application, a.to_string()));
        }
        let evaluated: Vec<(Role, String)> = decision
            .evaluations
            .iter()
            .map(|e| (e.role, e.principal.clone()))
            .collect();
        assert_eq!(
            evaluated, expected,
            "an allow must evaluate every principal"
        );
        assert!(
            decision
                .evaluations
                .iter()
                .all(|e| e.allow && e.errors.is_empty()),
            "an allow with a denying or failing evaluation: {decision:?}"
        );
    }
}

fn split_at_nul(data: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(i) => (Some(&data[..i]), &data[i + 1..]),
        None => (None, data),
    }
}

/// `Name: value` lines.
fn header_lines(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim_start()))
        .collect()
}

// ---- JSON-RPC ----

/// The MCP JSON-RPC reader and mapping (`src/mcp/`): `[Mcp-* header lines NUL] body`.
pub fn jsonrpc(data: &[u8]) {
    on_worker_stack(|| jsonrpc_input(data));
}

fn jsonrpc_input(data: &[u8]) {
    // Built before anything else, as in every target: libFuzzer's first (empty)
    // input then pays for it, and coverage counts only what inputs reach.
    let fixture = fixture();
    let (head, body) = split_at_nul(data);
    let head = head.map(String::from_utf8_lossy).unwrap_or_default();
    let message = match jsonrpc::parse_body(body) {
        Ok(m) => m,
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty(), "a refusal without a reason");
            let response = e.to_response();
            assert_eq!(
                response["error"]["code"].as_i64(),
                Some(e.code()),
                "the error response carries the refusal's code"
            );
            assert!(
                [
                    jsonrpc::PARSE_ERROR,
                    jsonrpc::INVALID_REQUEST,
                    jsonrpc::INVALID_PARAMS
                ]
                .contains(&e.code()),
                "unexpected error code {} for a body",
                e.code()
            );
            return;
        }
    };
    assert!(!message.calls.is_empty(), "an accepted body without a call");
    assert!(message.calls.len() <= jsonrpc::MAX_BATCH);
    assert!(message.batch || message.calls.len() == 1);
    assert!(body.len() <= jsonrpc::MAX_BODY_BYTES);

    // Whatever the strict reader accepts, any JSON reader reads the same way.
    let plain: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => panic!("the MCP reader accepted a body serde_json refuses: {e}"),
    };
    let messages: Vec<&Value> = match &plain {
        Value::Array(items) if message.batch => items.iter().collect(),
        v if !message.batch => vec![v],
        v => panic!("the MCP reader read a batch where serde_json reads {v}"),
    };
    assert_eq!(messages.len(), message.calls.len(), "one call per message");
    for (call, plain) in message.calls.iter().zip(&messages) {
        assert!(call.method.len() <= jsonrpc::MAX_METHOD_BYTES);
        if call.kind == MessageKind::Response {
            assert_eq!(call.method, jsonrpc::RESPONSE_ACTION);
            assert!(plain.get("method").is_none());
            continue;
        }
        assert_eq!(
            plain.get("method").and_then(Value::as_str),
            Some(call.method.as_str()),
            "the method read two ways"
        );
        if matches!(call.method.as_str(), "tools/call" | "prompts/get") {
            assert_eq!(
                plain["params"]["name"].as_str(),
                call.subject.name(),
                "the tool or prompt name read two ways"
            );
            assert!(
                call.subject
                    .name()
                    .is_some_and(|n| n.len() <= jsonrpc::MAX_NAME_BYTES)
            );
        }
        assert_eq!(
            call.id.is_some(),
            plain.get("id").is_some_and(|v| !v.is_null()),
            "the id read two ways"
        );
    }

    if let Ok(headers) = McpHeaders::from_pairs(header_lines(&head)) {
        let _ = jsonrpc::check_headers(&message, &headers);
    }

    let snapshot = fixture.store.snapshot();
    let identity = Identity {
        user: Some("alice".into()),
        application: Some("corpassist".into()),
        ..Identity::default()
    };
    for call in &message.calls {
        for server in ["docs", "projects"] {
            let request = request_for(call, server, &identity, &Map::new());
            let decision = authz::decide(&snapshot, &request);
            check_decision(&snapshot, &request, &decision);
        }
    }
}

// ---- Envoy ext_authz ----

/// Envoy's `CheckRequest` (`src/api/ext_authz.rs`): protobuf bytes, decoded, mapped
/// and decided on the reference policies, then answered.
pub fn ext_authz(data: &[u8]) {
    let _ = ext_authz_answer(data);
}

/// [`ext_authz`], returning the answer (`None`: the bytes are not a `CheckRequest`).
pub fn ext_authz_answer(data: &[u8]) -> Option<EnvoyAnswer> {
    on_worker_stack(|| {
        ext_authz::WireCheckRequest::decode(prost::bytes::Bytes::copy_from_slice(data))
            .ok()
            .and_then(|check| ext_authz_request(&check))
    })
}

fn ext_authz_request(check: &ext_authz::WireCheckRequest) -> Option<EnvoyAnswer> {
    let fixture = fixture();
    let request = match ext_authz::envoy_request(check) {
        Ok(request) => request,
        Err(e) => {
            // A text field that is not UTF-8: refused in the answer, before any decision.
            let answer =
                ext_authz::refuse_unreadable(&fixture.services, &e, Interface::ExtAuthzGrpc);
            assert!(
                matches!(answer, EnvoyAnswer::Deny { status: 400, .. }),
                "unreadable text must be a 400 deny: {answer:?}"
            );
            return Some(answer);
        }
    };
    let method = request.method.to_ascii_uppercase();
    let has_credentials = request.headers.get_lenient("authorization").is_some()
        || request.spiffe_id.is_some_and(|s| !s.is_empty());
    // Envoy's partial-body marker: absent, or exactly one `false`.
    let body_whole = request
        .headers
        .check()
        .is_ok_and(|checked| checked.body_is_whole());
    let post_body_ok = jsonrpc::parse_body(request.body).is_ok();
    let answer = fixture.runtime.block_on(ext_authz::decide(
        &fixture.services,
        request,
        Interface::ExtAuthzGrpc,
    ));
    match &answer {
        EnvoyAnswer::Allow {
            decision_id,
            set_headers,
            ..
        } => {
            assert!(!decision_id.is_empty(), "an allow without a decision id");
            assert!(
                set_headers
                    .iter()
                    .any(|(k, v)| *k == ext_authz::DECISION_ID_HEADER && v == decision_id),
                "an allow must name its decision upstream"
            );
            assert!(has_credentials, "an allow without credentials");
            assert!(
                method != "POST" || body_whole,
                "an allow of a body Envoy did not mark whole"
            );
            assert!(
                ["POST", "GET", "DELETE"].contains(&method.as_str()),
                "an allow of HTTP method `{method}`"
            );
            if method == "POST" {
                assert!(post_body_ok, "an allow of a body the MCP reader refuses");
            }
        }
        EnvoyAnswer::Deny {
            decision_id,
            status,
            body,
            ..
        } => {
            assert!(!decision_id.is_empty(), "a deny without a decision id");
            assert!([400, 401, 403].contains(status), "deny status {status}");
            let body: Value = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(e) => panic!("the deny body is not JSON: {e}"),
            };
            assert_eq!(body["jsonrpc"], "2.0");
            assert!(
                body["error"]["code"].is_i64(),
                "a deny body without an error code"
            );
        }
    }
    // What Envoy reads: the answer's encoding decodes, and only an allow says OK.
    let response = match ext_authz::CheckAnswer(answer.clone()).to_response() {
        Ok(response) => response,
        Err(e) => panic!("the CheckResponse written does not decode: {e}"),
    };
    let ok = response.status.as_ref().is_some_and(|s| s.code == 0);
    assert_eq!(
        ok,
        matches!(answer, EnvoyAnswer::Allow { .. }),
        "the CheckResponse's status disagrees with the answer"
    );
    Some(answer)
}

// ---- AuthZEN ----

/// The AuthZEN routes (`src/api/http.rs`, `src/api/authzen.rs`): an HTTP POST
/// through the router; an evaluation body is also mapped directly onto the
/// reference snapshot and its decision checked.
pub fn authzen(data: &[u8]) {
    let _ = authzen_response(data);
}

/// [`authzen`], returning the HTTP status and body (`None`: not an HTTP request).
pub fn authzen_response(data: &[u8]) -> Option<(u16, Value)> {
    on_worker_stack(|| authzen_input(data))
}

fn authzen_input(data: &[u8]) -> Option<(u16, Value)> {
    use tower::ServiceExt as _;
    let fixture = fixture();
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let path = lines.next().unwrap_or_default().trim();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/access/v1/{path}")
    };
    let mut builder = axum::http::Request::builder()
        .method("POST")
        .uri(path.as_str());
    let headers = lines.collect::<Vec<_>>().join("\n");
    for (name, value) in header_lines(&headers) {
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(axum::body::Body::from(body.to_vec())) else {
        return None; // not an HTTP request (a bad path or header): hyper refuses it before us
    };
    let (status, response) = fixture.runtime.block_on(async {
        let response = fixture
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .expect("response body");
        (status, bytes)
    });
    assert!(
        !status.is_server_error(),
        "AuthZEN answered {status} to {path}: {}",
        String::from_utf8_lossy(&response)
    );
    let json: Value = serde_json::from_slice(&response).unwrap_or(Value::Null);
    if status.is_success() && path.starts_with("/access/v1/") {
        assert!(json.is_object(), "a 200 answer that is not a JSON object");
        if let Some(d) = json.get("decision") {
            assert!(d.is_boolean(), "a decision that is not a boolean: {d}");
        }
        if let Some(items) = json.get("evaluations").and_then(Value::as_array) {
            assert!(items.iter().all(|i| i["decision"].is_boolean()));
        }
    }

    // The mapping alone, on the reference snapshot, for an evaluation body.
    if path == "/access/v1/evaluation"
        && let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(body)
        && let Ok(eval) = crate::api::authzen::parse_evaluation(&body)
    {
        let snapshot = fixture.store.snapshot();
        if let Ok(request) = crate::api::authzen::to_decision_request(&snapshot, &eval, None) {
            let decision = authz::decide(&snapshot, &request);
            check_decision(&snapshot, &request, &decision);
        }
    }
    Some((status.as_u16(), json))
}

// ---- JWT ----

/// Seconds since the Unix epoch.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Bearer tokens and key sets (`src/identity/`): a token given as is, a token with
/// the input's header and claims signed by a test key (published or not), or a
/// JWKS document the issuer would publish.
pub fn jwt(data: &[u8]) {
    on_worker_stack(|| jwt_input(data));
}

fn jwt_input(data: &[u8]) {
    let fixture = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        b'S' => {
            let Some((&key, rest)) = rest.split_first() else {
                return;
            };
            // RSA signing is slow under coverage instrumentation (hundreds of
            // milliseconds): the RSA keys sign only for key bytes from 0xf0, the
            // elliptic-curve keys for the rest.
            let (fast, slow): (Vec<&TestKey>, Vec<&TestKey>) = fixture.keys.iter().partition(|k| {
                matches!(
                    k.algorithms[0],
                    Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA
                )
            });
            let key = if key >= 0xf0 && !slow.is_empty() {
                slow[usize::from(key) % slow.len()]
            } else {
                fast[usize::from(key) % fast.len()]
            };
            let alg = key.algorithms[usize::from(rest.len() as u8) % key.algorithms.len()];
            let (header, claims) = split_at_nul(rest);
            let Some(token) = key.token(header.unwrap_or(b"{}"), claims, alg) else {
                return;
            };
            verify_token(fixture, &token);
        }
        b'K' => jwks_document(fixture, rest),
        _ => {
            let text = String::from_utf8_lossy(rest);
            verify_token(fixture, &text);
            if let Ok(token) = bearer_token_from_header(&text) {
                verify_token(fixture, token);
            }
        }
    }
}

/// Resolve `token` with the fixture's resolver; an accepted token must pass
/// [`independent_check`].
fn verify_token(fixture: &Fixture, token: &str) {
    let before = now();
    let result = fixture.verify(token);
    let after = now();
    match result {
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
            assert!(
                token.len() < 16 || !shown.contains(token),
                "an error message repeats the token"
            );
            let _ = e.www_authenticate("fuzz");
        }
        Ok(identity) => {
            if let Err(why) = independent_check(fixture, token, before, after) {
                panic!("a token was accepted that the rules refuse: {why}");
            }
            assert_eq!(identity.issuer.as_deref(), Some(ISSUER));
        }
    }
}

/// The token rules, checked without the service's code: a compact JWS whose header
/// names an allowed asymmetric algorithm and no `crit`, signed by a published key
/// (the one its `kid` names, or the only one for that algorithm), with `iss`,
/// `aud`, `exp` and `nbf` as configured. `before` and `after` bound the time the
/// service checked it at.
fn independent_check(
    fixture: &Fixture,
    token: &str,
    before: i64,
    after: i64,
) -> Result<(), String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts.as_slice() else {
        return Err("not three segments".into());
    };
    let json = |part: &str| -> Result<Map<String, Value>, String> {
        let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let header = json(header)?;
    let claims = json(claims)?;
    if header.contains_key("crit") {
        return Err("a crit header".into());
    }
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Algorithm::RS256,
        Some("PS256") => Algorithm::PS256,
        Some("ES256") => Algorithm::ES256,
        Some("EdDSA") => Algorithm::EdDSA,
        other => return Err(format!("algorithm {other:?} is not allowed")),
    };
    let kid = header.get("kid").and_then(Value::as_str);
    let message = token
        .rsplit_once('.')
        .map(|(m, _)| m)
        .unwrap_or_default()
        .as_bytes();
    let verifies = |k: &TestKey| {
        jsonwebtoken::crypto::verify(signature, message, &k.decoding, alg).unwrap_or(false)
    };
    let candidates: Vec<&TestKey> = fixture
        .keys
        .iter()
        .filter(|k| k.published && k.algorithms.contains(&alg))
        .filter(|k| kid.is_none_or(|kid| kid == k.kid))
        .collect();
    if kid.is_none() && candidates.len() != 1 {
        return Err("no kid and not exactly one key for the algorithm".into());
    }
    if !candidates.iter().any(|k| verifies(k)) {
        return Err("no published key verifies the signature".into());
    }
    if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
        return Err("wrong or missing iss".into());
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(items)) => {
            items.iter().all(Value::is_string) && items.iter().any(|a| a == AUDIENCE)
        }
        _ => false,
    };
    if !audience_ok {
        return Err("wrong or missing aud".into());
    }
    let exp = claims.get("exp").and_then(Value::as_f64);
    if !exp.is_some_and(|exp| (before as f64) < exp + CLOCK_SKEW as f64) {
        return Err(format!("expired or missing exp: {:?}", claims.get("exp")));
    }
    match claims.get("nbf") {
        None | Some(Value::Null) => {}
        Some(nbf) => match nbf.as_f64() {
            Some(nbf) if (after + CLOCK_SKEW) as f64 >= nbf.floor() => {}
            _ => return Err(format!("not yet valid: {nbf}")),
        },
    }
    Ok(())
}

/// A token of the test issuer for alice through CorpAssist, valid for a day, signed by `key`.
fn signed_for_jwks(key: &TestKey) -> String {
    let alg = key.algorithms[0];
    let header = json!({ "alg": alg, "kid": key.kid, "typ": "JWT" }).to_string();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "azp": "corpassist",
        "exp": now() + 86_400,
    })
    .to_string();
    key.token(header.as_bytes(), claims.as_bytes(), alg)
        .expect("a test key signs")
}

/// A JWKS document: either refused at start, or a key set that verifies a token
/// signed by a test key only if it publishes that key.
fn jwks_document(fixture: &Fixture, document: &[u8]) {
    let dir = fixture.scratch_dir();
    let file = dir.join("jwks.json");
    std::fs::write(&file, document).expect("write jwks");
    let resolver = fixture
        .runtime
        .block_on(Resolver::new(&identity_config(&file), &dir));
    if let Ok(resolver) = resolver {
        for (key, token) in fixture.keys.iter().zip(&fixture.key_tokens) {
            let accepted = fixture
                .runtime
                .block_on(resolver.resolve(IdentityInput {
                    bearer_token: Some(token),
                    ..IdentityInput::default()
                }))
                .is_ok();
            // The public key's distinguishing part (`n` for RSA, `x` for EC and OKP)
            // must be in the document for a signature by it to verify.
            let material = key.jwk["n"]
                .as_str()
                .or_else(|| key.jwk["x"].as_str())
                .unwrap_or_default();
            if accepted {
                assert!(
                    !material.is_empty() && String::from_utf8_lossy(document).contains(material),
                    "a key set without key `{}` verified its token",
                    key.kid
                );
            }
        }
    }
    fixture.remove_scratch_dir(&dir);
}

// ---- the gateway's gRPC API ----

/// The gateway's gRPC API (`src/api/grpc.rs`): a `Check`, `BatchCheck` or
/// `FilterList` request in protobuf encoding, through the service's handlers.
pub fn gateway(data: &[u8]) {
    on_worker_stack(|| gateway_input(data));
}

fn gateway_input(data: &[u8]) {
    use crate::api::proto::v1::{self as gw, authorizer_server::Authorizer as _};
    use prost::Message as _;
    let fixture = fixture();
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let api = &fixture.gateway;
    let check_answer = |r: &gw::CheckResponse| {
        if r.allowed {
            assert!(!r.decision_id.is_empty(), "an allow without a decision id");
            assert!(
                !r.evaluations.is_empty() && r.evaluations.iter().all(|e| e.allowed),
                "an allow without allowing evaluations: {r:?}"
            );
            assert!(r.error.is_none(), "an allow with an error");
        } else {
            assert!(r.error.is_some(), "a deny without a JSON-RPC error");
        }
    };
    match kind {
        b'C' => {
            let Ok(request) = gw::CheckRequest::decode(bytes) else {
                return;
            };
            if let Ok(r) = fixture
                .runtime
                .block_on(api.check(tonic::Request::new(request)))
            {
                check_answer(r.get_ref());
            }
        }
        b'B' => {
            let Ok(request) = gw::BatchCheckRequest::decode(bytes) else {
                return;
            };
            if let Ok(r) = fixture
                .runtime
                .block_on(api.batch_check(tonic::Request::new(request)))
            {
                r.get_ref().results.iter().for_each(check_answer);
            }
        }
        _ => {
            let Ok(request) = gw::FilterListRequest::decode(bytes) else {
                return;
            };
            if let Ok(r) = fixture
                .runtime
                .block_on(api.filter_list(tonic::Request::new(request)))
            {
                let r = r.get_ref();
                let allowed: HashSet<&String> = r.allowed.iter().collect();
                assert!(
                    r.denied.iter().all(|d| !allowed.contains(d)),
                    "a name both allowed and denied: {r:?}"
                );
                if !r.result.is_empty() {
                    assert!(
                        serde_json::from_slice::<Value>(&r.result).is_ok(),
                        "a filtered result that is not JSON"
                    );
                }
            }
        }
    }
}

// ---- the policy directory ----

/// The policy directory loader (`src/policy/load.rs`): `schema NUL entities NUL
/// policy NUL policy ...` written as files of a fresh directory, loaded, and a
/// loaded snapshot asked every request its schema allows (up to a bound). A part
/// that starts with a line `//@tools/NAME` (NAME of ASCII letters, digits, `_`,
/// `-`, `.`) is written as the imported file `tools/NAME` instead (a schema
/// fragment `S.cedarschema` or entity data `S.entities.json`), without that line.
pub fn policy_dir(data: &[u8]) {
    let _ = policy_dir_loads(data);
}

/// A part of [`policy_dir`]'s input that is an imported file: its name and text.
fn imported_file(part: &[u8]) -> Option<(&str, &[u8])> {
    let rest = part.strip_prefix(b"//@tools/")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let (name, text) = (rest.get(..end)?, rest.get(end + 1..)?);
    let name = std::str::from_utf8(name).ok()?;
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    plain.then_some((name, text))
}

/// [`policy_dir`], returning whether the directory loaded.
pub fn policy_dir_loads(data: &[u8]) -> bool {
    let fixture = fixture();
    let dir = fixture.scratch_dir();
    let mut parts = data.split(|&b| b == 0);
    let schema = parts.next().unwrap_or_default();
    let entities = parts.next().unwrap_or_default();
    {
        std::fs::write(dir.join("mcp.cedarschema"), schema).expect("write schema");
        if !entities.is_empty() {
            std::fs::write(dir.join(crate::policy::ENTITIES_FILE), entities)
                .expect("write entities");
        }
        for (i, part) in parts.enumerate().take(8) {
            match imported_file(part) {
                Some((name, text)) => {
                    let tools = dir.join(crate::policy::TOOLS_DIR);
                    std::fs::create_dir_all(&tools).expect("mkdir tools");
                    std::fs::write(tools.join(name), text).expect("write tools file");
                }
                None => {
                    std::fs::write(dir.join(format!("p{i}.cedar")), part).expect("write policy")
                }
            }
        }
    }
    let result = crate::policy::read_sources(&dir).and_then(|sources| {
        // As the service builds it: on a thread with a large stack (but a panic
        // here is reported, where the service turns it into an error).
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .stack_size(256 * 1024 * 1024)
                .spawn_scoped(s, || crate::policy::build(&sources, 1))
                .expect("spawn the loader");
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    });
    fixture.remove_scratch_dir(&dir);
    match result {
        Err(problems) => {
            assert!(problems.has_errors(), "refused without an error");
            let _ = problems.to_string();
            let _ = problems.one_line_each();
            false
        }
        Ok(snapshot) => {
            assert!(snapshot.index_is_current());
            let _ = snapshot.warnings.to_string();
            on_worker_stack(|| decide_every_kind(&snapshot));
            true
        }
    }
}

/// Decide, on `snapshot`, a request for each (principal type, action, resource
/// type) its schema allows (the first 32 in a fixed order), with entities of the
/// entity data where there are some, and check each decision.
fn decide_every_kind(snapshot: &Snapshot) {
    let mut envs: Vec<_> = snapshot.request_envs.iter().collect();
    envs.sort_by_cached_key(|(p, a, r)| format!("{p} {a} {r}"));
    let mut known: Vec<EntityUid> = snapshot.entities.iter().map(|e| e.uid()).collect();
    known.sort_by_cached_key(ToString::to_string);
    let pick = |ty: &cedar_policy::EntityTypeName, skip: usize| -> EntityUid {
        known
            .iter()
            .filter(|u| u.type_name() == ty)
            .nth(skip)
            .cloned()
            .unwrap_or_else(|| EntityUid::from_type_name_and_id(ty.clone(), EntityId::new("")))
    };
    let mut seen = HashSet::new();
    for (principal_ty, action, resource_ty) in envs.into_iter().take(32) {
        for skip in 0..2 {
            let principal = pick(principal_ty, skip);
            let resource = pick(resource_ty, skip);
            if !seen.insert((principal.clone(), action.clone(), resource.clone())) {
                continue;
            }
            let mut request = DecisionRequest::new(action.clone(), resource);
            request.user = Some(principal.clone());
            let decision = authz::decide(snapshot, &request);
            check_decision(snapshot, &request, &decision);
            // The same principal as the application of a request for another one.
            request.application = Some(principal);
            request.user = Some(pick(principal_ty, skip + 1));
            if request.user != request.application {
                let decision = authz::decide(snapshot, &request);
                check_decision(snapshot, &request, &decision);
            }
        }
    }
}

/// Check the invariants on one Envoy request described by its parts, for tests:
/// encodes a `CheckRequest` and runs [`ext_authz`] on it.
pub fn ext_authz_parts(
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    principal: Option<&str>,
    server: Option<&str>,
) {
    use prost::Message as _;
    let check = check_request(method, headers, body, principal, server);
    ext_authz(&check.encode_to_vec());
}

/// A `CheckRequest` as Envoy sends one for an MCP request (`with_request_body`,
/// `pack_as_bytes`): the HTTP method, headers, raw body, the mTLS peer's SPIFFE id
/// and the route's `mcp_server`.
pub fn check_request(
    method: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    principal: Option<&str>,
    server: Option<&str>,
) -> envoy_types::ext_authz::v3::pb::CheckRequest {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request,
    };
    envoy_types::ext_authz::v3::pb::CheckRequest {
        attributes: Some(AttributeContext {
            source: principal.map(|p| Peer {
                principal: p.to_owned(),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: "/mcp".into(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    raw_body: body.to_vec(),
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            context_extensions: server
                .map(|s| {
                    [("mcp_server".to_owned(), s.to_owned())]
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            ..AttributeContext::default()
        }),
    }
}
