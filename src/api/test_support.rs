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
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let store = Arc::new(PolicyStore::open(&policies).expect("reference policies"));
    let telemetry = Arc::new(Telemetry::default());
    services_with(Engine::with_recorder(store, telemetry.clone()), telemetry).await
}

/// The services of [`ready`] deciding with `engine` (which records into `telemetry`).
pub async fn services_with(engine: Engine, telemetry: Arc<Telemetry>) -> Services {
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

/// A JSON-RPC `tools/call` of the `docs` tool `tool` (with its required arguments), with id 7.
pub fn tools_call(tool: &str) -> String {
    let arguments = crate::policy::reference_arguments("docs", tool).unwrap_or_else(|| json!({}));
    json!({ "jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": { "name": tool, "arguments": arguments } })
        .to_string()
}

/// A recorder that, at the first decision it hears of, makes the policy directory
/// forbid everything and reloads it: what a reload in the middle of a batch does.
#[derive(Debug)]
struct ReloadOnFirstDecision {
    store: std::sync::OnceLock<Arc<PolicyStore>>,
    dir: std::path::PathBuf,
    done: std::sync::atomic::AtomicBool,
}

impl crate::authz::Recorder for ReloadOnFirstDecision {
    fn decided(&self, _: crate::authz::Decided<'_>) {
        if self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        std::fs::write(
            self.dir.join("zz-forbid-all.cedar"),
            "@id(\"forbid-all\")\nforbid (principal, action, resource);\n",
        )
        .expect("write");
        let store = self.store.get().expect("store");
        assert!(matches!(
            store.reload(false),
            crate::policy::ReloadOutcome::Reloaded { .. }
        ));
    }

    fn cache_lookup(&self, _: bool) {}
}

/// Services on a copy of the reference policies whose engine, at its first
/// decision, makes the copy forbid everything and reloads it (generation 1 -> 2):
/// the temporary directory, the store and the services.
pub async fn reloading_after_first_decision() -> (tempfile::TempDir, Arc<PolicyStore>, Services) {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for sub in ["", "tools"] {
        let to = dir.path().join(sub);
        std::fs::create_dir_all(&to).expect("mkdir");
        for entry in std::fs::read_dir(reference.join(sub)).expect("policies") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
            }
        }
    }
    let store = Arc::new(PolicyStore::open(dir.path()).expect("policies"));
    let recorder = Arc::new(ReloadOnFirstDecision {
        store: std::sync::OnceLock::new(),
        dir: dir.path().to_owned(),
        done: false.into(),
    });
    let _ = recorder.store.set(Arc::clone(&store));
    let engine = Engine::with_recorder(Arc::clone(&store), recorder);
    let services = services_with(engine, Arc::new(Telemetry::default())).await;
    (dir, store, services)
}
