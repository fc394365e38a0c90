//! What the adapters' unit tests share: services on the reference policies
//! (`policies/`), an issuer whose tokens they verify, and tokens of it. No socket.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

use super::services::{Ready, Services};
use crate::authz::Engine;
use crate::identity::{IdentityConfig, IssuerConfig, Resolver};
use crate::policy::PolicyStore;
use crate::telemetry::Telemetry;

const ISSUER: &str = "https://idp.unit.example";
const AUDIENCE: &str = "mcp-mesh";
const KID: &str = "ec1";

fn key() -> EncodingKey {
    let pem = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/identity/ec1.pem"),
    )
    .expect("test key");
    EncodingKey::from_ec_pem(&pem).expect("test key")
}

/// Services deciding on the reference policies, trusting the test issuer, with
/// `docs` as Envoy's default server; ready.
pub async fn ready() -> Ready {
    Ready::with(services().await)
}

/// The services of [`ready`].
pub async fn services() -> Services {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut jwk =
        serde_json::to_value(Jwk::from_encoding_key(&key(), Algorithm::ES256).expect("jwk"))
            .expect("jwk json");
    jwk["kid"] = KID.into();
    jwk["use"] = "sig".into();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, json!({ "keys": [jwk] }).to_string()).expect("jwks file");
    let mut issuer = IssuerConfig::new(ISSUER, vec![AUDIENCE.to_owned()]);
    issuer.jwks_file = Some(jwks_file);
    issuer.algorithms = vec!["ES256".into()];
    issuer.groups_claim = Some("groups".into());
    let config = IdentityConfig {
        issuers: vec![issuer],
        ..IdentityConfig::default()
    };
    let resolver = Resolver::new(&config, dir.path()).await.expect("resolver");
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let store = Arc::new(PolicyStore::open(&policies).expect("reference policies"));
    let telemetry = Arc::new(Telemetry::default());
    let engine = Engine::with_recorder(store, telemetry.clone());
    Services {
        envoy_default_server: Some("docs".into()),
        ..Services::new(engine, telemetry, resolver)
    }
}

/// A valid token of the test issuer for `user` through `application`.
pub fn token(user: &str, application: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let header = json!({ "alg": "ES256", "kid": KID, "typ": "JWT" }).to_string();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": user, "azp": application, "exp": exp,
    })
    .to_string();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature =
        jsonwebtoken::crypto::sign(input.as_bytes(), &key(), Algorithm::ES256).expect("signed");
    format!("{input}.{signature}")
}

/// A JSON-RPC `tools/call` of `tool`, with id 7.
pub fn tools_call(tool: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": { "name": tool, "arguments": {} } })
        .to_string()
}
