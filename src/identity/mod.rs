//! Who is calling: bearer tokens (JWT, keys from JWKS), SPIFFE ids and identities asserted by
//! a trusted caller, resolved into the ids of Cedar entities.
//!
//! Every interface (gRPC, Envoy ext_authz, AuthZEN HTTP, the CLI) calls one function,
//! [`Resolver::resolve`]. The ids it returns are plain strings; the caller wraps them as
//! `Mcp::User::"<user>"`, `Mcp::Application::"<application>"` and `Mcp::Group::"<group>"`.
//!
//! # Tokens
//!
//! A token is verified as follows, and each failure has its own [`AuthnError`] variant and
//! [`reason_code`](AuthnError::reason_code):
//!
//! 1. Longer than `jwt.max_token_bytes` (default 16 KiB): refused before any parsing.
//! 2. It must be a compact JWS: three base64url segments (no padding), a JSON-object header
//!    and payload. JWE (five segments) is refused.
//! 3. The header `alg` is only a claim to check, never a choice: `none` (any case) is refused
//!    as unsigned; symmetric (`HS*`) and unknown algorithms are refused; the algorithm must be
//!    in the issuer's `algorithms`. A `crit` header is refused. `jku`, `x5u`, `jwk` and `x5c`
//!    headers are ignored: keys only ever come from configuration.
//! 4. The issuer is picked by the (still unverified) `iss` claim, compared exactly with the
//!    configured `issuer` strings; an unknown issuer is refused.
//! 5. The key is picked by the header `kid` among that issuer's keys. The key must be able to
//!    verify the header algorithm: its type decides (`RSA`: RS256/384/512 and PS256/384/512;
//!    `EC` P-256: ES256; `EC` P-384: ES384; `OKP` Ed25519: EdDSA), narrowed to the JWK's own
//!    `alg` when it has one. An RSA key is thus never used as an HMAC secret, and an RSA key
//!    named for an `ES256` token is a `token_key_algorithm_mismatch`.
//!    - unknown `kid`: the issuer's JWKS URL (if any) is fetched again, at most once per
//!      `jwt.jwks_min_refresh_secs` per issuer, and the lookup is retried once;
//!    - no `kid`: accepted only when exactly one of the issuer's keys can verify the
//!      header algorithm (a single-key issuer), otherwise `token_missing_kid`.
//! 6. The signature is verified (jsonwebtoken, RustCrypto).
//! 7. Claims: `exp` is required, `nbf` honoured, both with `jwt.clock_skew_secs` (default
//!    30 s) of tolerance; `aud` (a string or an array) must contain one of the issuer's
//!    `audiences`.
//!
//! # Claims → ids
//!
//! - user: the issuer's `user_claim` (default `sub`), a string. A token without it has no
//!   user: it is a service token, and only the application's policies apply.
//! - application: the first present of `application_claims` (default `azp`, `client_id`).
//! - groups: only when `groups_claim` is configured: an array of strings or a
//!   space-separated string.
//! - scopes: `scope` and `scp`, each a space-separated string or an array of strings.
//! - claims: the claims listed in `context_claims`, copied as JSON values into
//!   [`Identity::claims`] (Cedar `context.claims`).
//!
//! A claim of the wrong type is an error (`token_invalid_claim`), never silently dropped.
//!
//! # JWKS
//!
//! `jwks_file` is loaded at start (an unreadable or key-less file fails startup).
//! `jwks_url` is fetched at start, then every `jwt.jwks_refresh_secs` (default 300 s) by a
//! background task, and on unknown `kid`s as above. A failed fetch, or a document without a
//! usable key, keeps the last good keys and is logged (issuer, URL without query or
//! credentials, reason; never key material). An issuer whose URL could not be fetched at
//! start has no keys: its tokens fail with `jwks_unavailable` and the fetch is retried every
//! `jwt.jwks_min_refresh_secs` until it succeeds; startup does not fail, so that SPIFFE and
//! gateway-asserted identities keep working while an identity provider is down. When both a
//! file and a URL are given, the keys are merged and a file key wins a `kid` clash.
//! [`Resolver::jwks_stats`] gives per-issuer success and failure counters.
//!
//! # Verified-token cache
//!
//! A token that verified is remembered (bounded `jwt.token_cache_size`, default 10 000; 0
//! disables it) under the SHA-256 of its text, so a repeated token skips parsing and
//! signature verification. An entry is used only while the token's `exp` has not been reached
//! (without skew) and while the key that verified it is still published by its issuer; it is
//! evicted at `exp` (and at most after an hour). Failures are not cached.
//!
//! # SPIFFE ids
//!
//! See [`spiffe`]: a strict parser; the trust domain must be in `spiffe.trust_domains`; the
//! application id follows `spiffe.application_id` (default: `<name>` of
//! `spiffe://td/ns/<ns>/sa/<name>`, else the whole path). A peer listed in
//! `spiffe.forwarders` (e.g. the gateway) is validated but names no application.
//!
//! # Resolution rules
//!
//! - A presented credential that fails is a failure of the whole resolution: an invalid token
//!   is never ignored, even if a SPIFFE id or a trusted identity would do.
//! - Nothing presented: an empty [`Identity`] (the decision core denies).
//! - Every source that names an application (token, trusted caller, SPIFFE id) must name the
//!   same one, else `application_mismatch`. The token and the trusted caller must name the
//!   same user, else `user_mismatch`. Where only one source names it, that one is used.
//! - Groups are the union of the token's groups and the trusted caller's groups.
//! - Scopes, claims and issuer come from the token only.
//! - Empty strings in a [`TrustedIdentity`] mean "not given" (as proto3 defaults do).
//!
//! Nothing here logs or returns a token, a key or a secret: errors and log lines name at most
//! a claim, a `kid`, an issuer, an algorithm or an id, shortened to 64 printable characters.

mod claims;
mod config;
mod error;
mod given;
mod jwks;
mod jwt;
pub mod spiffe;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

pub use config::{
    IdentityConfig, IdentityConfigError, IssuerConfig, JwtSettings, SUPPORTED_ALGORITHMS,
    SpiffeConfig,
};
pub use error::{AuthnError, Challenge, IdentitySource, TokenPart, bearer_challenge};
pub use given::{GivenError, GivenFacts};
pub use jwks::JwksStats;
pub use spiffe::{SpiffeApplicationId, SpiffeId, SpiffeIdError};

use config::ValidSpiffe;
use error::shown;
use jwks::{IssuerKeys, RefreshCause};
use jwt::TokenVerifier;

/// What a request presents about its caller.
#[derive(Clone, Default)]
pub struct IdentityInput<'a> {
    /// The bearer token, without the `Bearer ` prefix (see [`bearer_token_from_header`]).
    pub bearer_token: Option<&'a str>,
    /// The mTLS peer's SPIFFE id (e.g. Envoy's `attributes.source.principal`).
    pub spiffe_id: Option<&'a str>,
    /// An identity asserted by a trusted, already authenticated caller (the gateway).
    pub trusted: Option<TrustedIdentity>,
}

impl fmt::Debug for IdentityInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityInput")
            .field("bearer_token", &self.bearer_token.map(|_| "<redacted>"))
            .field("spiffe_id", &self.spiffe_id)
            .field("trusted", &self.trusted)
            .finish()
    }
}

/// An identity asserted by a trusted caller (the MCP gateway), which already verified it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedIdentity {
    /// The user id; `None` or empty when there is none.
    pub user: Option<String>,
    /// The application id; `None` or empty when there is none.
    pub application: Option<String>,
    /// Groups of the user.
    pub groups: Vec<String>,
}

/// Who the caller is, as Cedar entity ids and context values.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Identity {
    /// The `Mcp::User` id, if there is a user.
    pub user: Option<String>,
    /// The `Mcp::Application` id, if known.
    pub application: Option<String>,
    /// `Mcp::Group` ids the user belongs to (from the token and/or the trusted caller).
    pub groups: Vec<String>,
    /// Token scopes (Cedar `context.scopes`).
    pub scopes: Vec<String>,
    /// Selected token claims (Cedar `context.claims`).
    pub claims: Map<String, Value>,
    /// The issuer of the verified token, if there was one.
    pub issuer: Option<String>,
    /// The validated SPIFFE id of the peer, if one was given.
    pub spiffe_id: Option<String>,
    /// The verified token's audience, if there was a token: what the per-server
    /// check (RFC 8707, made where the MCP server is known) reads.
    #[serde(skip)]
    pub audience: Option<TokenAudience>,
}

/// The `aud` of a verified token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenAudience {
    /// Every `aud` value, as the token has it.
    pub values: Vec<String>,
    /// Whether one of them is one of its issuer's `audiences` (rather than only the
    /// canonical URI of an MCP server that names the issuer).
    pub issuer_audience: bool,
}

impl TokenAudience {
    /// Whether the token names `resource` as an audience: compared exactly, as RFC
    /// 8707 resource indicators are (no case folding, a trailing `/` matters).
    pub fn names(&self, resource: &str) -> bool {
        self.values.iter().any(|v| v == resource)
    }
}

/// What an MCP server with a canonical URI accepts of a token (RFC 8707).
#[derive(Debug, Clone, Copy)]
pub struct ServerAudience<'a> {
    /// The server's canonical URI: the token's `aud` must hold it, exactly.
    pub resource: &'a str,
    /// The issuers that may mint its tokens.
    pub authorization_servers: &'a [String],
}

impl Identity {
    /// Whether the verified token (if any) is for the MCP server it is presented to
    /// (`server`: its canonical URI, `None` when it has none): the one per-server
    /// audience check of every interface. With a canonical URI, `aud` must hold it
    /// exactly (no case folding, no trailing-`/` tolerance: RFC 8707 compares
    /// identifiers) and the issuer must be one of its authorization servers; without
    /// one, `aud` must hold one of the issuer's own `audiences`, so that a token
    /// minted only for another server is refused here too. No token: nothing to check.
    pub fn check_server_audience(
        &self,
        server: Option<ServerAudience<'_>>,
    ) -> Result<(), AuthnError> {
        let Some(audience) = &self.audience else {
            return Ok(());
        };
        match server {
            Some(s) => {
                if let Some(issuer) = &self.issuer
                    && !s.authorization_servers.iter().any(|a| a == issuer)
                {
                    return Err(AuthnError::IssuerNotForServer {
                        issuer: shown(issuer),
                    });
                }
                if audience.names(s.resource) {
                    Ok(())
                } else {
                    Err(AuthnError::NotForServer {
                        resource: Some(s.resource.to_owned()),
                    })
                }
            }
            None if audience.issuer_audience => Ok(()),
            None => Err(AuthnError::NotForServer { resource: None }),
        }
    }

    /// Whether neither a user nor an application is known.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_none() && self.application.is_none()
    }
}

/// The bytes of RFC 6750's `b64token` before its trailing `=`s: letters, digits and
/// `-._~+/`, marked in a table indexed by the byte.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut b: u8 = 0;
    loop {
        #[expect(clippy::indexing_slicing, reason = "a u8 indexes a 256-entry table")]
        {
            table[b as usize] =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        }
        if b == u8::MAX {
            break table;
        }
        b += 1;
    }
};

/// Whether `b` may be in a bearer token (before its trailing `=`s).
fn is_token68(b: u8) -> bool {
    #[expect(clippy::indexing_slicing, reason = "a u8 indexes a 256-entry table")]
    TOKEN68[usize::from(b)]
}

/// Extracts the token from an `Authorization` header value (`Bearer <token>`, scheme
/// case-insensitive). The token must be RFC 6750 `b64token` characters.
pub fn bearer_token_from_header(value: &str) -> Result<&str, AuthnError> {
    let not_bearer = AuthnError::Malformed {
        detail: "the authorization header is not a bearer credential",
    };
    let (scheme, rest) = value.split_once(' ').ok_or(not_bearer.clone())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(not_bearer);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(AuthnError::Malformed {
            detail: "the bearer token is empty",
        });
    }
    let body = token.trim_end_matches('=');
    // Every byte looked up, none skipped: a token is hundreds of bytes, and a branch
    // per byte cost more than the lookups.
    if body.is_empty() || body.bytes().fold(false, |bad, b| bad | !is_token68(b)) {
        return Err(AuthnError::Malformed {
            detail: "the bearer token has invalid characters",
        });
    }
    Ok(token)
}

/// Resolves request credentials into an [`Identity`]. Built once from configuration; cheap
/// to clone and share. Dropping the last clone stops its background JWKS refresh tasks.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: TokenVerifier,
    spiffe: ValidSpiffe,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("issuers", &self.inner.verifier.issuers())
            .field("trust_domains", &self.inner.spiffe.trust_domains)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Checks the configuration, loads JWKS files, fetches JWKS URLs once and starts the
    /// background refresh tasks (so it must run inside a tokio runtime). Relative
    /// `jwks_file` paths are resolved against `base_dir` (the config file's directory).
    ///
    /// Fails on invalid configuration or an unusable `jwks_file`; a JWKS URL that cannot be
    /// fetched is logged and retried instead (see the module docs).
    pub async fn new(
        config: &IdentityConfig,
        base_dir: &Path,
    ) -> Result<Self, IdentityConfigError> {
        let valid = config.check(base_dir)?;
        let client = reqwest::Client::builder()
            .timeout(valid.fetch_timeout)
            .connect_timeout(valid.fetch_timeout)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // At most 3 redirects, and never from https down to plain http (except loopback).
                let allowed =
                    attempt.url().scheme() == "https" || config::is_loopback(attempt.url());
                if attempt.previous().len() > 3 || !allowed {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .user_agent(concat!("mcp-authz/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| IdentityConfigError::Jwt("cannot build the http client".to_owned()))?;

        let mut issuers = Vec::with_capacity(valid.issuers.len());
        for cfg in valid.issuers {
            let name = shown(&cfg.issuer);
            let keys =
                IssuerKeys::new(cfg, client.clone(), valid.min_refresh_interval).map_err(|e| {
                    IdentityConfigError::Issuer {
                        issuer: name,
                        problem: format!("cannot use `jwks_file`: {e}"),
                    }
                })?;
            issuers.push(Arc::new(keys));
        }

        let mut startup = tokio::task::JoinSet::new();
        for issuer in issuers.iter().filter(|i| i.has_url()) {
            let issuer = Arc::clone(issuer);
            startup.spawn(async move { issuer.refresh(RefreshCause::Startup).await });
        }
        while startup.join_next().await.is_some() {}
        for issuer in &issuers {
            if issuer.keys().is_empty() {
                tracing::error!(
                    issuer = %shown(&issuer.cfg.issuer),
                    "issuer has no keys yet; its tokens are refused until a jwks refresh succeeds"
                );
            }
        }

        let tasks = issuers
            .iter()
            .filter(|i| i.has_url())
            .map(|issuer| {
                tokio::spawn(jwks::refresh_loop(
                    Arc::clone(issuer),
                    valid.refresh_interval,
                    valid.min_refresh_interval,
                ))
                .abort_handle()
            })
            .collect();

        let verifier = TokenVerifier::new(
            issuers,
            valid.clock_skew,
            valid.max_token_bytes,
            valid.token_cache_size,
        );
        Ok(Resolver {
            inner: Arc::new(Inner {
                verifier,
                spiffe: valid.spiffe,
                tasks,
            }),
        })
    }

    /// Resolves the credentials of one request (see the module docs for the rules).
    #[tracing::instrument(
        name = "identity.resolve",
        skip_all,
        fields(
            has_token = input.bearer_token.is_some(),
            has_spiffe_id = input.spiffe_id.is_some(),
            has_trusted = input.trusted.is_some(),
        )
    )]
    pub async fn resolve(&self, input: IdentityInput<'_>) -> Result<Identity, AuthnError> {
        let result = self.resolve_inner(input).await;
        if let Err(error) = &result {
            tracing::debug!(reason = error.reason_code(), %error, "credentials refused");
        }
        result
    }

    async fn resolve_inner(&self, input: IdentityInput<'_>) -> Result<Identity, AuthnError> {
        let spiffe = input
            .spiffe_id
            .map(|id| self.spiffe_identity(id))
            .transpose()?;
        let token = match input.bearer_token {
            Some(token) => Some(self.inner.verifier.verify(token).await?),
            None => None,
        };
        let trusted = input.trusted.unwrap_or_default();
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let trusted_user = non_empty(trusted.user);
        let trusted_app = non_empty(trusted.application);

        let mut applications: Vec<(IdentitySource, String)> = Vec::new();
        if let Some(app) = token.as_ref().and_then(|t| t.application.clone()) {
            applications.push((IdentitySource::Token, app));
        }
        if let Some(app) = trusted_app {
            applications.push((IdentitySource::Trusted, app));
        }
        if let Some(app) = spiffe.as_ref().and_then(|(_, app)| app.clone()) {
            applications.push((IdentitySource::Spiffe, app));
        }
        let application = agree(applications, |first, first_id, second, second_id| {
            AuthnError::ApplicationMismatch {
                first,
                first_id,
                second,
                second_id,
            }
        })?;

        let mut users: Vec<(IdentitySource, String)> = Vec::new();
        if let Some(user) = token.as_ref().and_then(|t| t.user.clone()) {
            users.push((IdentitySource::Token, user));
        }
        if let Some(user) = trusted_user {
            users.push((IdentitySource::Trusted, user));
        }
        let user = agree(users, |first, first_id, second, second_id| {
            AuthnError::UserMismatch {
                first,
                first_id,
                second,
                second_id,
            }
        })?;

        let mut groups = token.as_ref().map(|t| t.groups.clone()).unwrap_or_default();
        for group in trusted.groups.into_iter().filter(|g| !g.is_empty()) {
            if !groups.contains(&group) {
                groups.push(group);
            }
        }

        Ok(Identity {
            user,
            application,
            groups,
            scopes: token.as_ref().map(|t| t.scopes.clone()).unwrap_or_default(),
            claims: token.as_ref().map(|t| t.claims.clone()).unwrap_or_default(),
            issuer: token.as_ref().map(|t| t.issuer.clone()),
            spiffe_id: spiffe.map(|(id, _)| id),
            audience: token.as_ref().map(|t| t.audience.clone()),
        })
    }

    /// Validates a SPIFFE id and maps it to an application id (`None` for a forwarder).
    fn spiffe_identity(&self, raw: &str) -> Result<(String, Option<String>), AuthnError> {
        let id = SpiffeId::parse(raw).map_err(AuthnError::InvalidSpiffeId)?;
        let cfg = &self.inner.spiffe;
        if !cfg.trust_domains.contains(id.trust_domain()) {
            return Err(AuthnError::UntrustedTrustDomain {
                trust_domain: shown(id.trust_domain()),
            });
        }
        let application =
            (!cfg.forwarders.contains(&id)).then(|| cfg.application_id.application_id(&id));
        Ok((id.to_string(), application))
    }

    /// Fetches every issuer's JWKS URL now, ignoring the unknown-`kid` rate limit (for an
    /// admin endpoint or a signal). Returns whether every fetch succeeded.
    pub async fn refresh_jwks(&self) -> bool {
        let mut ok = true;
        for issuer in self.inner.verifier.issuers().iter().filter(|i| i.has_url()) {
            ok &= issuer.refresh(RefreshCause::Forced).await;
        }
        ok
    }

    /// Per-issuer key counts and refresh counters, for metrics.
    pub fn jwks_stats(&self) -> Vec<JwksStats> {
        self.inner
            .verifier
            .issuers()
            .iter()
            .map(|i| i.stats())
            .collect()
    }

    /// Whether every configured issuer has at least one key (for readiness).
    pub fn jwks_ready(&self) -> bool {
        self.inner
            .verifier
            .issuers()
            .iter()
            .all(|i| !i.keys().is_empty())
    }

    /// Number of tokens in the verified-token cache (approximate, for metrics).
    pub fn cached_tokens(&self) -> u64 {
        self.inner.verifier.cached_tokens()
    }
}

/// The one id all sources agree on, or a mismatch error naming the first disagreeing pair.
fn agree(
    ids: Vec<(IdentitySource, String)>,
    mismatch: impl Fn(IdentitySource, String, IdentitySource, String) -> AuthnError,
) -> Result<Option<String>, AuthnError> {
    let mut ids = ids.into_iter();
    let Some((first_source, first)) = ids.next() else {
        return Ok(None);
    };
    for (source, id) in ids {
        if id != first {
            return Err(mismatch(first_source, shown(&first), source, shown(&id)));
        }
    }
    Ok(Some(first))
}

impl Identity {
    /// Put this identity into a decision request: the user and application as
    /// principals, the token's groups as extra parents of the user for this
    /// request only, its `scopes` and `claims` as the request's token facts.
    pub fn apply_to(&self, request: &mut crate::authz::DecisionRequest) {
        use crate::mcp::Kind;
        request.user = self.user.as_deref().map(|u| Kind::User.uid(u));
        request.application = self
            .application
            .as_deref()
            .map(|a| Kind::Application.uid(a));
        if let Some(user) = &request.user
            && !self.groups.is_empty()
        {
            request.entities.push(crate::authz::RequestEntity {
                uid: user.clone(),
                parents: self.groups.iter().map(|g| Kind::Group.uid(g)).collect(),
                attrs: Map::new(),
            });
        }
        request.token = self.token_facts();
    }

    /// What the verified token brings into the context (`scopes`, `claims`); `None`
    /// when no token was verified.
    pub fn token_facts(&self) -> Option<crate::authz::TokenFacts> {
        self.issuer.is_some().then(|| crate::authz::TokenFacts {
            scopes: self.scopes.clone(),
            claims: self.claims.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(
            bearer_token_from_header("Bearer abc.def.ghi"),
            Ok("abc.def.ghi")
        );
        assert_eq!(
            bearer_token_from_header("bearer  a-b_c~+/=="),
            Ok("a-b_c~+/==")
        );
        let code = |v: &str| bearer_token_from_header(v).unwrap_err().reason_code();
        assert_eq!(code("Basic dXNlcjpwdw=="), "token_malformed");
        assert_eq!(code("Bearer"), "token_malformed");
        assert_eq!(code("Bearer "), "token_malformed");
        assert_eq!(code("Bearer a\"b"), "token_malformed");
    }

    #[test]
    fn input_debug_redacts_the_token() {
        let input = IdentityInput {
            bearer_token: Some("secret.token.value"),
            ..Default::default()
        };
        let debug = format!("{input:?}");
        assert!(!debug.contains("secret.token.value"));
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn agree_reports_the_first_disagreement() {
        let ids = vec![
            (IdentitySource::Token, "a".to_owned()),
            (IdentitySource::Trusted, "a".to_owned()),
            (IdentitySource::Spiffe, "b".to_owned()),
        ];
        let err = agree(ids, |first, first_id, second, second_id| {
            AuthnError::ApplicationMismatch {
                first,
                first_id,
                second,
                second_id,
            }
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "application `a` from the token differs from `b` from the spiffe id"
        );
    }
}

#[cfg(test)]
mod server_audience {
    use super::*;

    fn token(aud: &[&str], issuer_audience: bool) -> Identity {
        Identity {
            issuer: Some("https://idp.example".into()),
            audience: Some(TokenAudience {
                values: aud.iter().map(|s| (*s).to_owned()).collect(),
                issuer_audience,
            }),
            ..Identity::default()
        }
    }

    const DOCS: &str = "https://docs.example/mcp";
    const PROJECTS: &str = "https://projects.example/mcp";

    fn docs(issuers: &[String]) -> Option<ServerAudience<'_>> {
        Some(ServerAudience {
            resource: DOCS,
            authorization_servers: issuers,
        })
    }

    #[test]
    fn a_server_with_a_resource_wants_exactly_its_uri() {
        let idp = vec!["https://idp.example".to_owned()];
        assert_eq!(
            token(&[DOCS], false).check_server_audience(docs(&idp)),
            Ok(())
        );
        assert_eq!(
            token(&["x", PROJECTS, DOCS], false).check_server_audience(docs(&idp)),
            Ok(())
        );
        let wrong = Err(AuthnError::NotForServer {
            resource: Some(DOCS.into()),
        });
        for aud in [
            PROJECTS,
            "https://docs.example/mcp/",
            "https://DOCS.example/mcp",
            "https://docs.example/MCP",
            "mcp-mesh",
        ] {
            assert_eq!(
                token(&[aud], true).check_server_audience(docs(&idp)),
                wrong,
                "{aud}"
            );
        }
        assert_eq!(token(&[], false).check_server_audience(docs(&idp)), wrong);
        let other = vec!["https://other-idp.example".to_owned()];
        assert_eq!(
            token(&[DOCS], false).check_server_audience(docs(&other)),
            Err(AuthnError::IssuerNotForServer {
                issuer: "https://idp.example".into()
            })
        );
    }

    #[test]
    fn a_server_without_one_wants_an_issuer_audience() {
        assert_eq!(
            token(&["mcp-mesh"], true).check_server_audience(None),
            Ok(())
        );
        assert_eq!(
            token(&[PROJECTS], false).check_server_audience(None),
            Err(AuthnError::NotForServer { resource: None })
        );
        // No token: nothing to check.
        assert_eq!(Identity::default().check_server_audience(None), Ok(()));
        let idp = vec!["https://idp.example".to_owned()];
        assert_eq!(
            Identity::default().check_server_audience(docs(&idp)),
            Ok(())
        );
    }
}
