//! JSON Web Key Sets: parsing, the per-issuer key store, fetching and refreshing.
//!
//! Only asymmetric signature keys are kept: RSA (2048 to 4096 bits; RS*/PS*), EC P-256
//! (ES256), EC P-384 (ES384) and OKP Ed25519 (EdDSA). A key with `use` other than `sig`,
//! `key_ops` without `verify`, an `alg` that does not fit its type, a symmetric (`oct`) key
//! or a malformed key is skipped with a warning naming only its position and `kid`.
//!
//! A fetched set that yields no usable key counts as a failed refresh: the last good set
//! stays in force.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::config::{ValidIssuer, loggable_url};
use super::error::shown;

/// The largest JWKS document accepted, in bytes.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The most keys kept from one JWKS document.
const MAX_KEYS: usize = 256;

const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The kind of a public key, without its material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa { bits: usize },
    P256,
    P384,
    Ed25519,
}

/// One verification key. Its `Debug` shows the `kid`, kind and algorithms, never the key.
pub(crate) struct VerifyingKey {
    pub kid: Option<String>,
    pub kind: KeyKind,
    /// The algorithms this key may verify (narrowed by the JWK's `alg` when present).
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    /// SHA-256 over the key type and public components: identifies the key material, so a
    /// cached verification can check that its key is still published.
    pub fingerprint: [u8; 32],
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// The keys of one issuer, indexed by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    by_kid: HashMap<String, Vec<Arc<VerifyingKey>>>,
}

/// The outcome of looking a key up for a token.
#[derive(Debug)]
pub(crate) enum KeyLookup {
    Found(Arc<VerifyingKey>),
    /// No key has this `kid` (or the token has none and no single key fits).
    NotFound,
    /// Keys with this `kid` exist but none can verify the token's algorithm.
    WrongType,
}

impl KeySet {
    fn from_keys(keys: Vec<Arc<VerifyingKey>>) -> Self {
        let mut by_kid: HashMap<String, Vec<Arc<VerifyingKey>>> = HashMap::new();
        for key in &keys {
            if let Some(kid) = &key.kid {
                by_kid.entry(kid.clone()).or_default().push(Arc::clone(key));
            }
        }
        KeySet { keys, by_kid }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token with this `kid` and header algorithm. Without a `kid`, the one key
    /// of the set that can verify `alg`, if there is exactly one.
    pub fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> KeyLookup {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => KeyLookup::NotFound,
                Some(keys) => match keys.iter().find(|k| k.algorithms.contains(&alg)) {
                    Some(key) => KeyLookup::Found(Arc::clone(key)),
                    None => KeyLookup::WrongType,
                },
            },
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => KeyLookup::Found(Arc::clone(key)),
                    _ => KeyLookup::NotFound,
                }
            }
        }
    }

    /// Whether the key with this `kid` and fingerprint is still in the set.
    pub fn contains(&self, kid: Option<&str>, fingerprint: &[u8; 32]) -> bool {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .is_some_and(|keys| keys.iter().any(|k| &k.fingerprint == fingerprint)),
            None => self.keys.iter().any(|k| &k.fingerprint == fingerprint),
        }
    }

    /// `self` followed by the keys of `other` whose `kid` `self` does not already have.
    fn merged_with(&self, other: &KeySet) -> KeySet {
        let mut keys = self.keys.clone();
        for key in &other.keys {
            let clash = key
                .kid
                .as_ref()
                .is_some_and(|kid| self.by_kid.contains_key(kid));
            if !clash {
                keys.push(Arc::clone(key));
            }
        }
        KeySet::from_keys(keys)
    }
}

/// Why a JWKS document could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum JwksError {
    #[error("cannot read `{path}`: {reason}")]
    Read { path: String, reason: String },
    #[error("request timed out")]
    Timeout,
    #[error("cannot connect")]
    Connect,
    #[error("request failed")]
    Request,
    #[error("server answered with status {0}")]
    Status(u16),
    #[error("document is larger than 1 MiB")]
    TooLarge,
    #[error("document is not a json web key set")]
    NotJwks,
    #[error("document has no usable signature key")]
    NoUsableKey,
}

/// A JWK as far as this service reads it; unknown members are ignored.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    kid: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS document, keeping the usable keys. `source` names the issuer in warnings.
pub(crate) fn parse_jwks(bytes: &[u8], source: &str) -> Result<KeySet, JwksError> {
    // Never repeat serde's message: it can quote parts of the document.
    let raw: RawJwks = serde_json::from_slice(bytes).map_err(|_| JwksError::NotJwks)?;
    let mut keys = Vec::new();
    for (index, value) in raw.keys.into_iter().enumerate() {
        if keys.len() == MAX_KEYS {
            tracing::warn!(issuer = %source, "jwks has more than {MAX_KEYS} keys; the rest are ignored");
            break;
        }
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            tracing::warn!(issuer = %source, index, "jwks key skipped: not a valid jwk");
            continue;
        };
        let kid = jwk
            .kid
            .as_deref()
            .map(shown)
            .unwrap_or_else(|| "-".to_owned());
        if jwk.d.is_some() {
            tracing::warn!(issuer = %source, index, kid = %kid, "jwks key contains private key material; only its public part is used");
        }
        match parse_key(jwk) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(problem) => {
                tracing::warn!(issuer = %source, index, kid = %kid, problem, "jwks key skipped")
            }
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey);
    }
    Ok(KeySet::from_keys(keys))
}

fn b64(value: Option<&String>, what: &'static str) -> Result<Vec<u8>, &'static str> {
    let value = value.ok_or(what)?;
    URL_SAFE_NO_PAD.decode(value).map_err(|_| what)
}

fn parse_key(jwk: RawJwk) -> Result<VerifyingKey, &'static str> {
    if let Some(use_) = &jwk.use_
        && use_ != "sig"
    {
        return Err("`use` is not `sig`");
    }
    if let Some(ops) = &jwk.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Err("`key_ops` does not include `verify`");
    }
    let kty = jwk.kty.as_deref().ok_or("no `kty`")?;
    let mut hasher = Sha256::new();
    let (kind, mut algorithms, key) = match kty {
        "RSA" => {
            let n = b64(jwk.n.as_ref(), "`n` missing or not base64url")?;
            let e = b64(jwk.e.as_ref(), "`e` missing or not base64url")?;
            let n_trimmed = trim_leading_zeros(&n);
            let e_trimmed = trim_leading_zeros(&e);
            let bits = bit_length(n_trimmed);
            if !(2048..=4096).contains(&bits) {
                return Err("rsa modulus must be 2048 to 4096 bits");
            }
            if e_trimmed.is_empty()
                || e_trimmed.len() > 4
                || e_trimmed.last().is_some_and(|b| b % 2 == 0)
            {
                return Err("rsa exponent is not usable");
            }
            hasher.update(b"RSA\0");
            hasher.update(n_trimmed);
            hasher.update(b"\0");
            hasher.update(e_trimmed);
            let key = DecodingKey::from_rsa_raw_components(n_trimmed, e_trimmed);
            (KeyKind::Rsa { bits }, RSA_ALGORITHMS.to_vec(), key)
        }
        "EC" => {
            let (kind, alg, len) = match jwk.crv.as_deref() {
                Some("P-256") => (KeyKind::P256, Algorithm::ES256, 32),
                Some("P-384") => (KeyKind::P384, Algorithm::ES384, 48),
                _ => return Err("unsupported or missing ec curve"),
            };
            let x = b64(jwk.x.as_ref(), "`x` missing or not base64url")?;
            let y = b64(jwk.y.as_ref(), "`y` missing or not base64url")?;
            if x.len() != len || y.len() != len {
                return Err("ec coordinates have the wrong length");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            hasher.update(b"EC\0");
            hasher.update(&point);
            (kind, vec![alg], DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err("unsupported or missing okp curve");
            }
            let x = b64(jwk.x.as_ref(), "`x` missing or not base64url")?;
            if x.len() != 32 {
                return Err("ed25519 key has the wrong length");
            }
            hasher.update(b"OKP\0");
            hasher.update(&x);
            (
                KeyKind::Ed25519,
                vec![Algorithm::EdDSA],
                DecodingKey::from_ed_der(&x),
            )
        }
        "oct" => return Err("symmetric keys are never used"),
        _ => return Err("unsupported `kty`"),
    };
    if let Some(alg) = &jwk.alg {
        match super::config::asymmetric_algorithm(alg) {
            Some(alg) if algorithms.contains(&alg) => algorithms = vec![alg],
            _ => return Err("`alg` does not fit the key type"),
        }
    }
    // EC and Ed keys are decoded when a verifier is built: a point off the curve fails here.
    if matches!(kind, KeyKind::P256 | KeyKind::P384 | KeyKind::Ed25519)
        && algorithms
            .first()
            .is_none_or(|alg| jsonwebtoken::crypto::verify("", b"", &key, *alg).is_err())
    {
        return Err("public key is not valid");
    }
    Ok(VerifyingKey {
        kid: jwk.kid,
        kind,
        algorithms,
        key,
        fingerprint: hasher.finalize().into(),
    })
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

fn bit_length(trimmed: &[u8]) -> usize {
    match trimmed.first() {
        Some(first) => trimmed.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

/// Loads a JWKS file; any problem is an error (startup fails).
pub(crate) fn load_jwks_file(path: &Path, issuer: &str) -> Result<KeySet, JwksError> {
    let bytes = std::fs::read(path).map_err(|e| JwksError::Read {
        path: path.display().to_string(),
        reason: e.kind().to_string(),
    })?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge);
    }
    parse_jwks(&bytes, issuer)
}

/// Fetches and parses a JWKS document.
async fn fetch_jwks(
    client: &reqwest::Client,
    url: &Url,
    issuer: &str,
) -> Result<KeySet, JwksError> {
    let classify = |e: reqwest::Error| {
        if e.is_timeout() {
            JwksError::Timeout
        } else if e.is_connect() {
            JwksError::Connect
        } else {
            JwksError::Request
        }
    };
    let mut response = client
        .get(url.clone())
        .header(
            reqwest::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .send()
        .await
        .map_err(classify)?;
    if !response.status().is_success() {
        return Err(JwksError::Status(response.status().as_u16()));
    }
    if response
        .content_length()
        .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
    {
        return Err(JwksError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    parse_jwks(&body, issuer)
}

/// Refresh counters of one issuer, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksStats {
    /// The issuer.
    pub issuer: String,
    /// Whether the issuer has a `jwks_url` (only then are there refreshes).
    pub has_url: bool,
    /// Number of keys in force.
    pub keys: usize,
    /// Successful fetches (including the one at start).
    pub refresh_successes: u64,
    /// Failed fetches (including the one at start).
    pub refresh_failures: u64,
    /// When the last successful fetch completed.
    pub last_success: Option<SystemTime>,
    /// Why the last fetch failed, if it did (cleared by a success); never holds secrets.
    pub last_error: Option<String>,
}

/// What triggered a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshCause {
    Startup,
    Periodic,
    UnknownKid,
    Forced,
}

impl RefreshCause {
    fn as_str(self) -> &'static str {
        match self {
            RefreshCause::Startup => "startup",
            RefreshCause::Periodic => "periodic",
            RefreshCause::UnknownKid => "unknown_kid",
            RefreshCause::Forced => "forced",
        }
    }
}

/// The keys of one issuer and how to refresh them.
pub(crate) struct IssuerKeys {
    pub cfg: ValidIssuer,
    file_keys: KeySet,
    keys: ArcSwap<KeySet>,
    client: reqwest::Client,
    /// Serialises fetches; holds the time of the last fetch caused by an unknown `kid`.
    on_demand: Mutex<Option<Instant>>,
    fetch_lock: Mutex<()>,
    min_refresh_interval: Duration,
    successes: AtomicU64,
    failures: AtomicU64,
    /// Seconds since the epoch of the last successful fetch; 0 when none.
    last_success: AtomicU64,
    last_error: std::sync::Mutex<Option<JwksError>>,
}

impl fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("issuer", &self.cfg.issuer)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

impl IssuerKeys {
    /// Loads the issuer's file keys (an error fails startup). URL keys come later, from
    /// [`refresh`](Self::refresh).
    pub fn new(
        cfg: ValidIssuer,
        client: reqwest::Client,
        min_refresh_interval: Duration,
    ) -> Result<Self, JwksError> {
        let file_keys = match &cfg.jwks_file {
            Some(path) => load_jwks_file(path, &cfg.issuer)?,
            None => KeySet::default(),
        };
        let keys = ArcSwap::from_pointee(KeySet::from_keys(file_keys.keys.clone()));
        Ok(IssuerKeys {
            cfg,
            file_keys,
            keys,
            client,
            on_demand: Mutex::new(None),
            fetch_lock: Mutex::new(()),
            min_refresh_interval,
            successes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        })
    }

    /// The keys in force.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Whether the issuer has a URL to refresh from.
    pub fn has_url(&self) -> bool {
        self.cfg.jwks_url.is_some()
    }

    /// Fetches the URL keys now. On success the key set becomes the file keys plus the
    /// fetched keys (a file key wins a `kid` clash); on failure the last good set stays.
    /// Returns whether the fetch succeeded (`false` too when there is no URL).
    pub async fn refresh(&self, cause: RefreshCause) -> bool {
        let Some(url) = &self.cfg.jwks_url else {
            return false;
        };
        let _fetching = self.fetch_lock.lock().await;
        let issuer = shown(&self.cfg.issuer);
        match fetch_jwks(&self.client, url, &issuer).await {
            Ok(fetched) => {
                let merged = self.file_keys.merged_with(&fetched);
                let count = merged.len();
                self.keys.store(Arc::new(merged));
                self.successes.fetch_add(1, Ordering::Relaxed);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                self.last_success.store(now, Ordering::Relaxed);
                self.set_last_error(None);
                if cause == RefreshCause::Startup {
                    tracing::info!(issuer = %issuer, keys = count, "jwks loaded");
                } else {
                    tracing::debug!(issuer = %issuer, cause = cause.as_str(), keys = count, "jwks refreshed");
                }
                true
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.set_last_error(Some(error.clone()));
                tracing::warn!(
                    issuer = %issuer,
                    url = %loggable_url(url),
                    cause = cause.as_str(),
                    %error,
                    keys_kept = self.keys.load().len(),
                    "jwks refresh failed; keeping the last good keys"
                );
                false
            }
        }
    }

    /// A refresh because a token named a key the issuer does not have (or the issuer has
    /// none): at most one per `jwks_min_refresh_secs`. Callers arriving while one is under
    /// way wait for it instead of starting another. Returns whether a fetch was made.
    pub async fn refresh_for_unknown_kid(&self) -> bool {
        if !self.has_url() {
            return false;
        }
        let mut last = self.on_demand.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh_interval) {
            return false;
        }
        *last = Some(Instant::now());
        self.refresh(RefreshCause::UnknownKid).await;
        true
    }

    fn set_last_error(&self, error: Option<JwksError>) {
        // A poisoned lock only means another thread panicked mid-store; the value is still usable.
        let mut slot = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        *slot = error;
    }

    /// The counters for metrics.
    pub fn stats(&self) -> JwksStats {
        let last = self.last_success.load(Ordering::Relaxed);
        JwksStats {
            issuer: self.cfg.issuer.clone(),
            has_url: self.has_url(),
            keys: self.keys.load().len(),
            refresh_successes: self.successes.load(Ordering::Relaxed),
            refresh_failures: self.failures.load(Ordering::Relaxed),
            last_success: (last > 0).then(|| UNIX_EPOCH + Duration::from_secs(last)),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(ToString::to_string),
        }
    }
}

/// Refreshes the issuer's keys every `interval`, or every `retry` while it has no keys at
/// all. Runs until aborted.
pub(crate) async fn refresh_loop(issuer: Arc<IssuerKeys>, interval: Duration, retry: Duration) {
    loop {
        let wait = if issuer.keys().is_empty() {
            retry
        } else {
            interval
        };
        tokio::time::sleep(wait).await;
        issuer.refresh(RefreshCause::Periodic).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use jsonwebtoken::jwk::Jwk;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/identity")
            .join(name);
        std::fs::read(path).unwrap()
    }

    fn public_jwk(name: &str, alg: Algorithm, kid: &str) -> serde_json::Value {
        let pem = fixture(name);
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        }
        .unwrap();
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        jwk["kid"] = kid.into();
        jwk.as_object_mut().unwrap().remove("alg");
        jwk
    }

    fn set(keys: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn keeps_supported_keys_and_their_algorithms() {
        let doc = set(vec![
            public_jwk("rsa1.pem", Algorithm::RS256, "r1"),
            public_jwk("ec1.pem", Algorithm::ES256, "e1"),
            public_jwk("ed1.pem", Algorithm::EdDSA, "d1"),
        ]);
        let keys = parse_jwks(&doc, "test").unwrap();
        assert_eq!(keys.len(), 3);
        assert!(matches!(
            keys.lookup(Some("r1"), Algorithm::PS256),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            keys.lookup(Some("r1"), Algorithm::ES256),
            KeyLookup::WrongType
        ));
        assert!(matches!(
            keys.lookup(Some("e1"), Algorithm::ES256),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            keys.lookup(Some("d1"), Algorithm::EdDSA),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            keys.lookup(Some("zz"), Algorithm::EdDSA),
            KeyLookup::NotFound
        ));
        // Without a kid: exactly one key fits EdDSA, none fits ES384.
        assert!(matches!(
            keys.lookup(None, Algorithm::EdDSA),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            keys.lookup(None, Algorithm::ES384),
            KeyLookup::NotFound
        ));
    }

    #[test]
    fn kid_less_lookup_refuses_ambiguity() {
        let doc = set(vec![
            public_jwk("rsa1.pem", Algorithm::RS256, "r1"),
            public_jwk("rsa2.pem", Algorithm::RS256, "r2"),
        ]);
        let keys = parse_jwks(&doc, "test").unwrap();
        assert!(matches!(
            keys.lookup(None, Algorithm::RS256),
            KeyLookup::NotFound
        ));
    }

    #[test]
    fn skips_unusable_keys() {
        let mut enc = public_jwk("rsa1.pem", Algorithm::RS256, "enc");
        enc["use"] = "enc".into();
        let mut wrong_alg = public_jwk("rsa2.pem", Algorithm::RS256, "wrong-alg");
        wrong_alg["alg"] = "ES256".into();
        let mut narrowed = public_jwk("rsa3.pem", Algorithm::RS256, "narrowed");
        narrowed["alg"] = "RS256".into();
        let small = public_jwk("rsa1024.pem", Algorithm::RS256, "small");
        let oct = serde_json::json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"});
        let mut off_curve = public_jwk("ec1.pem", Algorithm::ES256, "off-curve");
        off_curve["y"] = URL_SAFE_NO_PAD.encode([7u8; 32]).into();
        let junk = serde_json::json!({"kty": 5});
        let doc = set(vec![enc, wrong_alg, narrowed, small, oct, off_curve, junk]);
        let keys = parse_jwks(&doc, "test").unwrap();
        assert_eq!(keys.len(), 1);
        assert!(matches!(
            keys.lookup(Some("narrowed"), Algorithm::RS256),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            keys.lookup(Some("narrowed"), Algorithm::PS256),
            KeyLookup::WrongType
        ));
    }

    #[test]
    fn a_set_without_usable_keys_is_an_error() {
        assert_eq!(
            parse_jwks(b"{\"keys\": []}", "t").unwrap_err(),
            JwksError::NoUsableKey
        );
        assert_eq!(parse_jwks(b"[]", "t").unwrap_err(), JwksError::NotJwks);
        assert_eq!(
            parse_jwks(b"not json", "t").unwrap_err(),
            JwksError::NotJwks
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let jwk = public_jwk("rsa1.pem", Algorithm::RS256, "r1");
        let n = jwk["n"].as_str().unwrap().to_owned();
        let keys = parse_jwks(&set(vec![jwk]), "test").unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("r1"));
        assert!(!debug.contains(&n[..40]), "{debug}");
    }

    #[test]
    fn merge_keeps_file_keys_on_kid_clash() {
        let file = parse_jwks(
            &set(vec![public_jwk("rsa1.pem", Algorithm::RS256, "k")]),
            "t",
        )
        .unwrap();
        let fetched = parse_jwks(
            &set(vec![
                public_jwk("rsa2.pem", Algorithm::RS256, "k"),
                public_jwk("ec1.pem", Algorithm::ES256, "e"),
            ]),
            "t",
        )
        .unwrap();
        let merged = file.merged_with(&fetched);
        assert_eq!(merged.len(), 2);
        let KeyLookup::Found(k) = merged.lookup(Some("k"), Algorithm::RS256) else {
            panic!()
        };
        assert_eq!(k.fingerprint, file.keys[0].fingerprint);
    }
}
