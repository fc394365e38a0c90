//! Tokens: test keys (`tests/fixtures/identity`), token signing, JWKS documents, a tiny
//! JWKS HTTP server on 127.0.0.1, and the demo tokens of `examples/identity`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use mcp_authz::identity::{IdentityConfig, IssuerConfig, Resolver};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.corp.example";
pub const AUDIENCE: &str = "mcp-mesh";

pub fn fixture_dir() -> PathBuf {
    super::repo().join("tests/fixtures/identity")
}

/// A demo token of `examples/identity` (`"erin"`: engineering, `"frank"`: contractors;
/// issuer [`ISSUER`], audience [`AUDIENCE`], azp `corpassist`, valid until 2100), signed by
/// the key of `examples/identity/jwks.json` ([`super::config::demo_issuer`]).
pub fn demo_token(user: &str) -> String {
    let path = super::repo().join(format!("examples/identity/{user}.jwt"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// A test key pair loaded from `tests/fixtures/identity`.
pub struct TestKey {
    pub alg: Algorithm,
    pub kid: String,
    pub encoding: EncodingKey,
    /// The private key PEM text (to check it never shows up anywhere).
    pub pem: String,
}

impl TestKey {
    pub fn load(file: &str, alg: Algorithm, kid: &str) -> TestKey {
        let pem = std::fs::read_to_string(fixture_dir().join(file)).unwrap();
        let encoding = match alg {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem.as_bytes()),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .unwrap();
        TestKey {
            alg,
            kid: kid.to_owned(),
            encoding,
            pem,
        }
    }

    pub fn rsa(n: u8, kid: &str) -> TestKey {
        TestKey::load(&format!("rsa{n}.pem"), Algorithm::RS256, kid)
    }

    pub fn ec(n: u8, kid: &str) -> TestKey {
        TestKey::load(&format!("ec{n}.pem"), Algorithm::ES256, kid)
    }

    pub fn ed(n: u8, kid: &str) -> TestKey {
        TestKey::load(&format!("ed{n}.pem"), Algorithm::EdDSA, kid)
    }

    /// The public JWK, with `kid` and `use`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&self.encoding, self.alg).unwrap())
                .unwrap();
        jwk["kid"] = self.kid.clone().into();
        jwk["use"] = "sig".into();
        jwk
    }

    /// The public key components as they appear in the JWK (`n`, `x`, `y`).
    pub fn public_material(&self) -> Vec<String> {
        let jwk = self.public_jwk();
        ["n", "x", "y"]
            .iter()
            .filter_map(|k| jwk.get(*k).and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    /// The base64 lines of the private key PEM.
    pub fn private_material(&self) -> Vec<String> {
        self.pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
            .map(str::to_owned)
            .collect()
    }

    /// A token of [`claims`] with `changes` (see [`claims_with`]).
    pub fn token(&self, changes: Value) -> String {
        self.sign(&claims_with(changes))
    }

    /// A token with header `{"alg", "kid", "typ": "JWT"}`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": format!("{:?}", self.alg), "kid": self.kid, "typ": "JWT"});
        self.sign_with_header(&header, claims)
    }

    /// A token with the given header, signed with this key under `self.alg`.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        sign_raw(header, claims, &self.encoding, self.alg)
    }
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(claims).signature`, signed with `key` under `alg` whatever the header says.
pub fn sign_raw(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{signature}")
}

pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>() })
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Valid claims for [`ISSUER`] and [`AUDIENCE`], user `alice`, application `corpassist`.
pub fn claims() -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "azp": "corpassist",
        "iat": now,
        "exp": now + 600,
    })
}

/// `claims()` with some members replaced (a `null` value removes the member).
pub fn claims_with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

pub fn issuer_config() -> IssuerConfig {
    let mut issuer = IssuerConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    issuer.algorithms = vec!["RS256".into(), "ES256".into(), "EdDSA".into()];
    issuer.groups_claim = Some("groups".into());
    issuer.context_claims = vec!["email".into()];
    issuer
}

/// A resolver for one issuer whose keys are in a JWKS file written to `dir`.
pub async fn file_resolver(dir: &Path, keys: &[&TestKey]) -> Resolver {
    std::fs::write(dir.join("jwks.json"), jwks(keys).to_string()).unwrap();
    let mut issuer = issuer_config();
    issuer.jwks_file = Some("jwks.json".into());
    let config = IdentityConfig {
        issuers: vec![issuer],
        ..Default::default()
    };
    Resolver::new(&config, dir).await.unwrap()
}

/// A JWKS server on 127.0.0.1 whose document can be changed (`null`: answer 503), which
/// counts its requests, and which can be stopped.
pub struct JwksServer {
    pub addr: SocketAddr,
    doc: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl JwksServer {
    pub async fn start(doc: Value) -> JwksServer {
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = {
            let doc = Arc::clone(&doc);
            let hits = Arc::clone(&hits);
            axum::Router::new()
                .route(
                    "/moved",
                    axum::routing::get(|| async { axum::response::Redirect::temporary("/jwks") }),
                )
                .route(
                    "/downgrade",
                    axum::routing::get(|| async {
                        axum::response::Redirect::temporary("http://jwks.example.invalid/jwks")
                    }),
                )
                .route(
                    "/jwks",
                    axum::routing::get(move || {
                        let doc = Arc::clone(&doc);
                        let hits = Arc::clone(&hits);
                        async move {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let body = doc.lock().unwrap().clone();
                            if body.is_null() {
                                axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response()
                            } else {
                                axum::Json(body).into_response()
                            }
                        }
                    }),
                )
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        JwksServer {
            addr,
            doc,
            hits,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        self.url_for("/jwks")
    }

    /// `/moved` redirects to `/jwks`; `/downgrade` redirects to a plain-http remote host.
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set(&self, doc: Value) {
        *self.doc.lock().unwrap() = doc;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops accepting connections and waits until the server has shut down.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// The keys of the bad-token cases.
pub struct Keys {
    pub rsa: TestKey,
    pub ec: TestKey,
    pub ed: TestKey,
    /// A second published RSA key.
    pub rsa_b: TestKey,
    /// Not in the JWKS.
    pub rsa_other: TestKey,
}

pub fn keys() -> Keys {
    Keys {
        rsa: TestKey::rsa(1, "rsa-1"),
        ec: TestKey::ec(1, "ec-1"),
        ed: TestKey::ed(1, "ed-1"),
        rsa_b: TestKey::rsa(2, "rsa-2"),
        rsa_other: TestKey::rsa(3, "rsa-3"),
    }
}

/// Every bad token, with the reason it must be refused for.
pub fn bad_tokens(k: &Keys) -> Vec<(&'static str, String, &'static str)> {
    let now = now();
    // The attacker's HMAC secret: the issuer's public key (its modulus, as published).
    let rsa_public = k.rsa.public_jwk()["n"].as_str().unwrap().to_owned();
    let hs_header = json!({"alg": "HS256", "kid": k.rsa.kid, "typ": "JWT"});
    let hs256 = sign_raw(
        &hs_header,
        &claims(),
        &EncodingKey::from_secret(rsa_public.as_bytes()),
        Algorithm::HS256,
    );
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": k.rsa.kid}).to_string()),
        b64(claims().to_string())
    );
    let good = k.rsa.sign(&claims());
    let (good_header, rest) = good.split_once('.').unwrap();
    let (_, good_sig) = rest.split_once('.').unwrap();
    let bad_base64 = format!("{good_header}.*not*base64*.{good_sig}");
    let bad_json = format!("{good_header}.{}.{good_sig}", b64("{\"iss\": \"x\", "));
    let huge = format!("{good}{}", "A".repeat(1024 * 1024));
    // An EC token whose kid names the RSA key (both algorithms are allowed for the issuer).
    let wrong_key_type =
        k.ec.sign_with_header(&json!({"alg": "ES256", "kid": k.rsa.kid}), &claims());
    // Signed by a key that is not published, under the kid of one that is.
    let forged = k
        .rsa_other
        .sign_with_header(&json!({"alg": "RS256", "kid": k.rsa.kid}), &claims());
    let no_kid = k.rsa.sign_with_header(&json!({"alg": "RS256"}), &claims());
    let crit = k.rsa.sign_with_header(
        &json!({"alg": "RS256", "kid": k.rsa.kid, "crit": ["exp"]}),
        &claims(),
    );

    vec![
        (
            "expired",
            k.rsa.sign(&claims_with(json!({"exp": now - 3600}))),
            "token_expired",
        ),
        (
            "not yet valid",
            k.rsa.sign(&claims_with(json!({"nbf": now + 3600}))),
            "token_not_yet_valid",
        ),
        (
            "wrong issuer",
            k.rsa
                .sign(&claims_with(json!({"iss": "https://evil.example"}))),
            "token_wrong_issuer",
        ),
        (
            "missing issuer",
            k.rsa.sign(&claims_with(json!({"iss": null}))),
            "token_missing_iss",
        ),
        (
            "wrong audience",
            k.rsa.sign(&claims_with(json!({"aud": ["other-service"]}))),
            "token_wrong_audience",
        ),
        (
            "missing audience",
            k.rsa.sign(&claims_with(json!({"aud": null}))),
            "token_missing_aud",
        ),
        (
            "missing exp",
            k.rsa.sign(&claims_with(json!({"exp": null}))),
            "token_missing_exp",
        ),
        (
            "unknown kid",
            k.rsa
                .sign_with_header(&json!({"alg": "RS256", "kid": "no-such-key"}), &claims()),
            "token_unknown_kid",
        ),
        (
            "missing kid among several keys",
            no_kid,
            "token_missing_kid",
        ),
        (
            "signed by another key with a known kid",
            forged,
            "token_bad_signature",
        ),
        (
            "key of the wrong type for the alg",
            wrong_key_type,
            "token_key_algorithm_mismatch",
        ),
        ("alg none", none, "token_unsigned"),
        (
            "HS256 with the RSA public key as secret",
            hs256,
            "token_disallowed_algorithm",
        ),
        ("crit header", crit, "token_unsupported_crit"),
        ("malformed base64", bad_base64, "token_bad_base64"),
        ("malformed json", bad_json, "token_bad_json"),
        (
            "two segments",
            "eyJhbGciOiJSUzI1NiJ9.e30".to_owned(),
            "token_malformed",
        ),
        ("1 MB token", huge, "token_too_large"),
        (
            "claim of the wrong type",
            k.rsa.sign(&claims_with(json!({"sub": 12345}))),
            "token_invalid_claim",
        ),
    ]
}

/// A test OAuth authorization server on 127.0.0.1 (RFC 8414): its issuer is the URL it
/// runs on; it serves its metadata at `/.well-known/oauth-authorization-server` (an
/// `authorization_endpoint`, a `token_endpoint`, a `registration_endpoint`, S256 PKCE, and
/// the `jwks_uri` of its test keys), the JWKS at `/jwks`, and answers dynamic client
/// registration (RFC 7591, `POST /register`) with a client id. Nothing else: the clients of
/// the tests stop at the authorization URL, and the tests sign the tokens with its keys
/// ([`AuthServer::token`]). Every request is recorded ([`AuthServer::requests`]). It runs on
/// its own thread and runtime, so sync and async tests both use it; stopped on drop.
pub struct AuthServer {
    pub addr: SocketAddr,
    keys: Vec<TestKey>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The client id [`AuthServer`] registers every client under.
pub const REGISTERED_CLIENT_ID: &str = "e2e-registered-client";

impl AuthServer {
    pub fn start(keys: Vec<TestKey>) -> AuthServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = format!("http://{addr}");
        let metadata = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "registration_endpoint": format!("{issuer}/register"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["docs.read", "docs.write", "projects.read"],
        });
        let keyset = jwks(&keys.iter().collect::<Vec<_>>());
        let requests: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let router = {
            let requests = Arc::clone(&requests);
            axum::Router::new()
                .route(
                    "/.well-known/oauth-authorization-server",
                    axum::routing::get(move || async move { axum::Json(metadata) }),
                )
                .route(
                    "/jwks",
                    axum::routing::get(move || async move { axum::Json(keyset) }),
                )
                .route(
                    "/register",
                    axum::routing::post(|axum::Json(mut client): axum::Json<Value>| async move {
                        // RFC 7591 §3.2.1: the metadata as registered, with the client id.
                        client["client_id"] = json!(REGISTERED_CLIENT_ID);
                        client["client_id_issued_at"] = json!(now());
                        (axum::http::StatusCode::CREATED, axum::Json(client))
                    }),
                )
                .fallback(|| async { axum::http::StatusCode::NOT_FOUND })
                .layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        let requests = Arc::clone(&requests);
                        async move {
                            requests
                                .lock()
                                .unwrap()
                                .push((req.method().to_string(), req.uri().path().to_owned()));
                            next.run(req).await
                        }
                    },
                ))
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        AuthServer {
            addr,
            keys,
            requests,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The issuer: `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An `[[issuers]]` section trusting this server (RS256 keys written to `dir/as-jwks.json`,
    /// groups from `groups`), without `audiences`: the servers that name it give them.
    pub fn issuer_config(&self, dir: &Path) -> String {
        let keyset = jwks(&self.keys.iter().collect::<Vec<_>>());
        std::fs::write(dir.join("as-jwks.json"), keyset.to_string()).unwrap();
        format!(
            "[[issuers]]\nissuer = \"{}\"\njwks_file = \"as-jwks.json\"\nalgorithms = [\"RS256\"]\ngroups_claim = \"groups\"\n",
            self.issuer()
        )
    }

    /// A token of this issuer for `aud` with [`claims`] changed by `changes`, signed with
    /// its first key.
    pub fn token(&self, aud: &str, changes: Value) -> String {
        let mut claims = claims_with(changes);
        claims["iss"] = json!(self.issuer());
        claims["aud"] = json!(aud);
        self.keys[0].sign(&claims)
    }

    /// `(method, path)` of every request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
