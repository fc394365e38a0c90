//! Bearer token (JWS compact serialisation) verification and the verified-token cache.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use moka::Expiry;
use moka::sync::Cache;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::TokenAudience;
use super::claims::{TokenIdentity, map_claims};
use super::config::asymmetric_algorithm;
use super::error::{AuthnError, TokenPart, shown};
use super::jwks::{IssuerKeys, KeyLookup, VerifyingKey};

/// A cache entry never lives longer than this, whatever the token's `exp`.
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A token split and decoded, not yet verified.
struct ParsedToken<'a> {
    alg: Algorithm,
    kid: Option<String>,
    claims: Map<String, Value>,
    /// `header.payload`, the signed bytes.
    signing_input: &'a str,
    signature: &'a str,
}

fn decode_part(part: &str, which: TokenPart) -> Result<Vec<u8>, AuthnError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthnError::BadEncoding { part: which })
}

fn json_object(bytes: &[u8], which: TokenPart) -> Result<Map<String, Value>, AuthnError> {
    // serde's message is never repeated: it can quote the token.
    serde_json::from_slice(bytes).map_err(|_| AuthnError::BadJson { part: which })
}

impl<'a> ParsedToken<'a> {
    /// Splits and decodes a compact JWS; checks the header's `alg`, `kid` and `crit`.
    fn parse(token: &'a str) -> Result<Self, AuthnError> {
        let segments = token.split('.').count();
        if segments != 3 {
            return Err(AuthnError::Malformed {
                detail: if segments == 5 {
                    "encrypted tokens (jwe) are not supported"
                } else {
                    "a jwt has three dot-separated segments"
                },
            });
        }
        let (signing_input, signature) = token.rsplit_once('.').ok_or(AuthnError::Malformed {
            detail: "a jwt has three dot-separated segments",
        })?;
        let (header_b64, payload_b64) =
            signing_input.split_once('.').ok_or(AuthnError::Malformed {
                detail: "a jwt has three dot-separated segments",
            })?;

        let header = json_object(
            &decode_part(header_b64, TokenPart::Header)?,
            TokenPart::Header,
        )?;
        let alg_name = match header.get("alg") {
            Some(Value::String(alg)) => alg.as_str(),
            _ => {
                return Err(AuthnError::Malformed {
                    detail: "the header has no `alg` string",
                });
            }
        };
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(AuthnError::Unsigned);
        }
        let alg =
            asymmetric_algorithm(alg_name).ok_or_else(|| AuthnError::DisallowedAlgorithm {
                alg: shown(alg_name),
            })?;
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => {
                return Err(AuthnError::Malformed {
                    detail: "the `kid` header is not a string",
                });
            }
        };
        if header.contains_key("crit") {
            return Err(AuthnError::UnsupportedCritical);
        }
        // The signature is decoded here only to tell bad encoding from a bad signature.
        decode_part(signature, TokenPart::Signature)?;
        let claims = json_object(
            &decode_part(payload_b64, TokenPart::Payload)?,
            TokenPart::Payload,
        )?;
        Ok(ParsedToken {
            alg,
            kid,
            claims,
            signing_input,
            signature,
        })
    }
}

/// A JSON NumericDate: an integer or a finite float, in seconds.
fn numeric_date(value: &Value) -> Option<i64> {
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
}

/// Checks `exp` (required) and `nbf` (when present) against `now` with `skew` seconds of
/// tolerance; returns `exp`.
fn check_times(claims: &Map<String, Value>, now: i64, skew: i64) -> Result<i64, AuthnError> {
    let exp = match claims.get("exp") {
        None | Some(Value::Null) => return Err(AuthnError::MissingExpiry),
        Some(v) => numeric_date(v).ok_or(AuthnError::InvalidClaim {
            claim: "exp".into(),
            expected: "a number",
        })?,
    };
    if now >= exp.saturating_add(skew) {
        return Err(AuthnError::Expired);
    }
    match claims.get("nbf") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let nbf = numeric_date(v).ok_or(AuthnError::InvalidClaim {
                claim: "nbf".into(),
                expected: "a number",
            })?;
            if now.saturating_add(skew) < nbf {
                return Err(AuthnError::NotYetValid);
            }
        }
    }
    Ok(exp)
}

/// Checks that `aud` (a string or an array of strings) holds one of `audiences` or
/// one of `resources` (the canonical URIs of the MCP servers that name the issuer
/// as an authorization server), and says what it holds: the per-server check
/// ([`TokenAudience`]) is made where the server is known.
fn check_audience(
    claims: &Map<String, Value>,
    audiences: &[String],
    resources: &[String],
    issuer: &str,
) -> Result<TokenAudience, AuthnError> {
    let invalid = || AuthnError::InvalidClaim {
        claim: "aud".into(),
        expected: "a string or an array of strings",
    };
    let values: Vec<String> = match claims.get("aud") {
        None | Some(Value::Null) => return Err(AuthnError::MissingAudience),
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(invalid()),
    };
    let issuer_audience = values.iter().any(|v| audiences.contains(v));
    if issuer_audience || values.iter().any(|v| resources.contains(v)) {
        Ok(TokenAudience {
            values,
            issuer_audience,
        })
    } else {
        Err(AuthnError::WrongAudience {
            issuer: shown(issuer),
        })
    }
}

/// A verified token remembered by the hash of its text.
struct CachedToken {
    issuer: usize,
    kid: Option<String>,
    fingerprint: [u8; 32],
    exp: i64,
    ttl: Duration,
    identity: Arc<TokenIdentity>,
}

struct UntilExpiry;

impl Expiry<[u8; 32], Arc<CachedToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Arc<CachedToken>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// Verifies bearer tokens against the configured issuers.
pub(crate) struct TokenVerifier {
    issuers: Vec<Arc<IssuerKeys>>,
    by_issuer: HashMap<String, usize>,
    clock_skew: i64,
    max_token_bytes: usize,
    cache: Option<Cache<[u8; 32], Arc<CachedToken>>>,
}

impl TokenVerifier {
    pub fn new(
        issuers: Vec<Arc<IssuerKeys>>,
        clock_skew: u64,
        max_token_bytes: usize,
        cache_size: u64,
    ) -> Self {
        let by_issuer = issuers
            .iter()
            .enumerate()
            .map(|(i, keys)| (keys.cfg.issuer.clone(), i))
            .collect();
        let cache = (cache_size > 0).then(|| {
            Cache::builder()
                .max_capacity(cache_size)
                .expire_after(UntilExpiry)
                .build()
        });
        TokenVerifier {
            issuers,
            by_issuer,
            clock_skew: i64::try_from(clock_skew).unwrap_or(i64::MAX),
            max_token_bytes,
            cache,
        }
    }

    pub fn issuers(&self) -> &[Arc<IssuerKeys>] {
        &self.issuers
    }

    /// Number of tokens in the verified-token cache (approximate).
    pub fn cached_tokens(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }

    /// Verifies a token and maps its claims; see the module docs of [`super`] for the rules.
    pub async fn verify(&self, token: &str) -> Result<Arc<TokenIdentity>, AuthnError> {
        self.verify_at(token, unix_now()).await
    }

    pub(crate) async fn verify_at(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Arc<TokenIdentity>, AuthnError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthnError::TokenTooLarge {
                len: token.len(),
                max: self.max_token_bytes,
            });
        }
        if token.is_empty() {
            return Err(AuthnError::Malformed {
                detail: "the token is empty",
            });
        }
        let cache_key: Option<[u8; 32]> = self.cache.as_ref().map(|_| Sha256::digest(token).into());
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key)
            && let Some(hit) = cache.get(key)
        {
            if self.still_valid(&hit, now) {
                return Ok(Arc::clone(&hit.identity));
            }
            cache.invalidate(key);
        }

        let parsed = ParsedToken::parse(token)?;
        let iss = match parsed.claims.get("iss") {
            None | Some(Value::Null) => return Err(AuthnError::MissingIssuer),
            Some(Value::String(iss)) => iss,
            Some(_) => {
                return Err(AuthnError::InvalidClaim {
                    claim: "iss".into(),
                    expected: "a string",
                });
            }
        };
        let index = *self
            .by_issuer
            .get(iss.as_str())
            .ok_or_else(|| AuthnError::WrongIssuer { issuer: shown(iss) })?;
        let issuer = self
            .issuers
            .get(index)
            .ok_or_else(|| AuthnError::WrongIssuer { issuer: shown(iss) })?;
        let cfg = &issuer.cfg;
        if !cfg.algorithms.contains(&parsed.alg) {
            return Err(AuthnError::DisallowedAlgorithm {
                alg: format!("{:?}", parsed.alg),
            });
        }

        let key = select_key(issuer, parsed.kid.as_deref(), parsed.alg).await?;
        let kid_shown = || parsed.kid.as_deref().map_or_else(|| "-".to_owned(), shown);
        match jsonwebtoken::crypto::verify(
            parsed.signature,
            parsed.signing_input.as_bytes(),
            &key.key,
            parsed.alg,
        ) {
            Ok(true) => {}
            Ok(false) => {
                return Err(AuthnError::BadSignature {
                    issuer: shown(&cfg.issuer),
                    kid: kid_shown(),
                });
            }
            Err(e) if matches!(e.kind(), ErrorKind::Base64(_)) => {
                return Err(AuthnError::BadEncoding {
                    part: TokenPart::Signature,
                });
            }
            Err(_) => {
                return Err(AuthnError::KeyUnusable {
                    issuer: shown(&cfg.issuer),
                    kid: kid_shown(),
                });
            }
        }

        let exp = check_times(&parsed.claims, now, self.clock_skew)?;
        let audience = check_audience(&parsed.claims, &cfg.audiences, &cfg.resources, &cfg.issuer)?;
        let mut identity = map_claims(cfg, &parsed.claims)?;
        identity.audience = audience;
        let identity = Arc::new(identity);

        if let (Some(cache), Some(cache_key)) = (&self.cache, cache_key) {
            let remaining = u64::try_from(exp.saturating_sub(now)).unwrap_or(0);
            if remaining > 0 {
                cache.insert(
                    cache_key,
                    Arc::new(CachedToken {
                        issuer: index,
                        kid: parsed.kid.clone(),
                        fingerprint: key.fingerprint,
                        exp,
                        ttl: Duration::from_secs(remaining).min(MAX_CACHE_TTL),
                        identity: Arc::clone(&identity),
                    }),
                );
            }
        }
        Ok(identity)
    }

    /// A cached verification holds while the token has not reached `exp` (no skew) and its
    /// key is still published by the issuer.
    fn still_valid(&self, hit: &CachedToken, now: i64) -> bool {
        now < hit.exp
            && self
                .issuers
                .get(hit.issuer)
                .is_some_and(|i| i.keys().contains(hit.kid.as_deref(), &hit.fingerprint))
    }
}

/// Finds the key for the token; on an unknown `kid` (or an issuer without keys) asks for a
/// rate-limited refresh and looks again once.
async fn select_key(
    issuer: &IssuerKeys,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Arc<VerifyingKey>, AuthnError> {
    let mut keys = issuer.keys();
    let mut found = keys.lookup(kid, alg);
    if matches!(found, KeyLookup::NotFound)
        && (kid.is_some() || keys.is_empty())
        && issuer.has_url()
    {
        issuer.refresh_for_unknown_kid().await;
        keys = issuer.keys();
        found = keys.lookup(kid, alg);
    }
    let name = || shown(&issuer.cfg.issuer);
    match found {
        KeyLookup::Found(key) => Ok(key),
        KeyLookup::WrongType => Err(AuthnError::KeyAlgorithmMismatch {
            issuer: name(),
            kid: kid.map_or_else(|| "-".to_owned(), shown),
            alg: format!("{alg:?}"),
        }),
        KeyLookup::NotFound if keys.is_empty() => {
            Err(AuthnError::JwksUnavailable { issuer: name() })
        }
        KeyLookup::NotFound => match kid {
            Some(kid) => Err(AuthnError::UnknownKid {
                issuer: name(),
                kid: shown(kid),
            }),
            None => Err(AuthnError::MissingKid { issuer: name() }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn times_honour_skew() {
        let now = 1_000_000;
        assert_eq!(
            check_times(&claims(json!({"exp": now + 1})), now, 0),
            Ok(now + 1)
        );
        assert_eq!(
            check_times(&claims(json!({"exp": now})), now, 0),
            Err(AuthnError::Expired)
        );
        assert!(check_times(&claims(json!({"exp": now - 29})), now, 30).is_ok());
        assert_eq!(
            check_times(&claims(json!({"exp": now - 30})), now, 30),
            Err(AuthnError::Expired)
        );
        assert!(check_times(&claims(json!({"exp": now + 60, "nbf": now + 30})), now, 30).is_ok());
        assert_eq!(
            check_times(&claims(json!({"exp": now + 60, "nbf": now + 31})), now, 30),
            Err(AuthnError::NotYetValid)
        );
        assert!(check_times(&claims(json!({"exp": (now + 5) as f64 + 0.5})), now, 0).is_ok());
        assert_eq!(
            check_times(&claims(json!({})), now, 0),
            Err(AuthnError::MissingExpiry)
        );
        assert!(matches!(
            check_times(&claims(json!({"exp": "tomorrow"})), now, 0),
            Err(AuthnError::InvalidClaim { .. })
        ));
        assert!(check_times(&claims(json!({"exp": u64::MAX})), now, i64::MAX).is_ok());
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        let auds = vec!["mcp".to_owned()];
        let none: Vec<String> = Vec::new();
        let check =
            |c: Value, auds: &[String], res: &[String]| check_audience(&claims(c), auds, res, "i");
        assert!(check(json!({"aud": "mcp"}), &auds, &none).is_ok());
        let got = check(json!({"aud": ["x", "mcp"]}), &auds, &none).expect("accepted");
        assert_eq!(got.values, vec!["x", "mcp"]);
        assert!(got.issuer_audience);
        // A server's resource is accepted too, and said not to be the issuer's audience.
        let res = vec!["https://docs.example/mcp".to_owned()];
        let got = check(json!({"aud": ["https://docs.example/mcp"]}), &none, &res).expect("ok");
        assert!(!got.issuer_audience);
        assert_eq!(
            check(json!({"aud": "https://docs.example/mcp/"}), &none, &res),
            Err(AuthnError::WrongAudience { issuer: "i".into() })
        );
        assert_eq!(
            check_audience(&claims(json!({"aud": ["x"]})), &auds, &none, "i"),
            Err(AuthnError::WrongAudience { issuer: "i".into() })
        );
        assert_eq!(
            check_audience(&claims(json!({})), &auds, &none, "i"),
            Err(AuthnError::MissingAudience)
        );
        assert!(matches!(
            check_audience(&claims(json!({"aud": 1})), &auds, &none, "i"),
            Err(AuthnError::InvalidClaim { .. })
        ));
    }

    mod cache {
        use super::super::*;
        use crate::identity::config::{IdentityConfig, IssuerConfig};
        use jsonwebtoken::{EncodingKey, Header, jwk::Jwk};
        use std::path::Path;

        fn fixture_key() -> EncodingKey {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/identity/ec1.pem");
            EncodingKey::from_ec_pem(&std::fs::read(path).unwrap()).unwrap()
        }

        fn verifier(dir: &Path) -> TokenVerifier {
            let mut jwk = serde_json::to_value(
                Jwk::from_encoding_key(&fixture_key(), Algorithm::ES256).unwrap(),
            )
            .unwrap();
            jwk["kid"] = "k".into();
            std::fs::write(
                dir.join("jwks.json"),
                serde_json::json!({"keys": [jwk]}).to_string(),
            )
            .unwrap();
            let mut issuer = IssuerConfig::new("https://idp.test", vec!["aud".into()]);
            issuer.algorithms = vec!["ES256".into()];
            issuer.jwks_file = Some("jwks.json".into());
            let mut config = IdentityConfig {
                issuers: vec![issuer],
                ..Default::default()
            };
            config.jwt.clock_skew_secs = 0;
            let valid = config.check(dir).unwrap();
            let keys = valid
                .issuers
                .into_iter()
                .map(|cfg| {
                    Arc::new(
                        IssuerKeys::new(cfg, reqwest::Client::new(), Duration::from_secs(10))
                            .unwrap(),
                    )
                })
                .collect();
            TokenVerifier::new(keys, 0, 16 * 1024, 100)
        }

        #[tokio::test]
        async fn a_cached_token_is_not_used_at_or_after_its_exp() {
            let dir = tempfile::tempdir().unwrap();
            let verifier = verifier(dir.path());
            let now = 1_900_000_000;
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("k".into());
            let claims = serde_json::json!({"iss": "https://idp.test", "aud": "aud", "exp": now + 60, "sub": "u"});
            let token = jsonwebtoken::encode(&header, &claims, &fixture_key()).unwrap();

            verifier.verify_at(&token, now).await.unwrap();
            assert_eq!(verifier.cached_tokens(), 1);
            verifier.verify_at(&token, now + 59).await.unwrap();
            assert_eq!(
                verifier.verify_at(&token, now + 60).await.unwrap_err(),
                AuthnError::Expired
            );
            assert_eq!(verifier.cached_tokens(), 0, "the stale entry was dropped");
        }
    }

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn parse_reports_each_problem() {
        let payload = b64(r#"{"iss":"x"}"#);
        let rs = b64(r#"{"alg":"RS256","kid":"k"}"#);
        let err = |t: &str| ParsedToken::parse(t).err().map(|e| e.reason_code());
        assert_eq!(err("a.b"), Some("token_malformed"));
        assert_eq!(err("a.b.c.d.e"), Some("token_malformed"));
        assert_eq!(
            err(&format!("{rs}.{payload}.sig*")),
            Some("token_bad_base64")
        );
        assert_eq!(
            err(&format!("{rs}.{payload}===.c2ln")),
            Some("token_bad_base64")
        );
        assert_eq!(
            err(&format!("{}.{payload}.c2ln", b64("[1]"))),
            Some("token_bad_json")
        );
        assert_eq!(
            err(&format!("{rs}.{}.c2ln", b64("{"))),
            Some("token_bad_json")
        );
        assert_eq!(
            err(&format!("{}.{payload}.", b64(r#"{"alg":"none"}"#))),
            Some("token_unsigned")
        );
        assert_eq!(
            err(&format!("{}.{payload}.", b64(r#"{"alg":"NoNe"}"#))),
            Some("token_unsigned")
        );
        assert_eq!(
            err(&format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256"}"#))),
            Some("token_disallowed_algorithm")
        );
        assert_eq!(
            err(&format!("{}.{payload}.c2ln", b64(r#"{"kid":"k"}"#))),
            Some("token_malformed")
        );
        assert_eq!(
            err(&format!(
                "{}.{payload}.c2ln",
                b64(r#"{"alg":"RS256","crit":["b64"],"b64":false}"#)
            )),
            Some("token_unsupported_crit")
        );
        assert!(ParsedToken::parse(&format!("{rs}.{payload}.c2ln")).is_ok());
    }
}
