//! Configuration of the identity layer: `[[issuers]]`, `[spiffe]` and `[jwt]`.
//!
//! ```toml
//! [[issuers]]
//! issuer = "https://idp.example.com"          # required; compared exactly with the token's `iss`
//! audiences = ["mcp-mesh"]                    # required, non-empty; `aud` must contain one
//! jwks_file = "keys/jwks.json"                # relative to the config file's directory
//! jwks_url = "https://idp.example.com/jwks"   # https (http only for loopback hosts)
//! algorithms = ["RS256", "ES256"]             # default ["RS256"]
//! user_claim = "sub"                          # default "sub"
//! application_claims = ["azp", "client_id"]   # default ["azp", "client_id"]; first present wins
//! groups_claim = "groups"                     # default: none (groups never come from tokens)
//! context_claims = ["email", "department"]    # default []: claims copied to `claims`
//!
//! [spiffe]
//! trust_domains = ["corp.example"]            # default []: every SPIFFE id is refused
//! application_id = "k8s-sa"                   # "k8s-sa" (default) | "k8s-ns-sa" | "path" | "spiffe-id"
//! forwarders = ["spiffe://corp.example/ns/mesh/sa/gateway"]  # default []
//!
//! [jwt]
//! clock_skew_secs = 30
//! jwks_refresh_secs = 300
//! jwks_min_refresh_secs = 10
//! jwks_fetch_timeout_secs = 5
//! token_cache_size = 10000                    # 0 disables the verified-token cache
//! max_token_bytes = 16384
//! ```

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use reqwest::Url;
use serde::Deserialize;

use super::error::shown;
use super::spiffe::{SpiffeApplicationId, SpiffeId, validate_trust_domain};

/// The algorithms an issuer may be configured with (all asymmetric).
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Maps a JOSE algorithm name to one this service verifies; symmetric (`HS*`), `none` and
/// unknown names give `None`.
pub(crate) fn asymmetric_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// One trusted token issuer (`[[issuers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer URL, compared exactly (no normalisation) with the token's `iss`.
    pub issuer: String,
    /// Accepted audiences: the token's `aud` must contain at least one of them, or
    /// the canonical URI (`resource`) of an MCP server that names the issuer in its
    /// `authorization_servers`. May be left out when every server that trusts the
    /// issuer has a `resource`.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The `resource` of every `[servers.<id>]` that names this issuer in its
    /// `authorization_servers`: filled by the configuration, never written.
    #[serde(skip)]
    pub resources: Vec<String>,
    /// A JWKS file, loaded once at start; relative paths are resolved against the
    /// configuration file's directory.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start and refreshed periodically and on unknown `kid`s.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Allowed signature algorithms (default `["RS256"]`).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// The claim naming the user (default `sub`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Claims naming the application, first present wins (default `["azp", "client_id"]`).
    #[serde(default = "default_application_claims")]
    pub application_claims: Vec<String>,
    /// The claim holding the user's groups (an array of strings or a space-separated
    /// string); without it groups never come from tokens.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Claims copied, as JSON values, into [`Identity::claims`](super::Identity::claims)
    /// (which becomes Cedar `context.claims`).
    #[serde(default)]
    pub context_claims: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}

fn default_user_claim() -> String {
    "sub".to_owned()
}

fn default_application_claims() -> Vec<String> {
    vec!["azp".to_owned(), "client_id".to_owned()]
}

impl IssuerConfig {
    /// An issuer with the given URL and audiences and every other field at its default.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audiences,
            resources: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            algorithms: default_algorithms(),
            user_claim: default_user_claim(),
            application_claims: default_application_claims(),
            groups_claim: None,
            context_claims: Vec::new(),
        }
    }
}

/// SPIFFE settings (`[spiffe]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpiffeConfig {
    /// Trusted trust domains (bare names such as `corp.example`); ids from any other
    /// trust domain are refused. Empty (the default): every SPIFFE id is refused.
    pub trust_domains: Vec<String>,
    /// How a SPIFFE id maps to an application id (default `k8s-sa`).
    pub application_id: SpiffeApplicationId,
    /// Full SPIFFE ids of intermediaries (e.g. the MCP gateway) that forward requests on
    /// behalf of applications: such a peer's id is validated and reported but names no
    /// application, so it never conflicts with the application in the token.
    pub forwarders: Vec<String>,
}

/// Token verification and JWKS refresh settings (`[jwt]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// Allowed clock difference when checking `exp` and `nbf`, in seconds (default 30).
    pub clock_skew_secs: u64,
    /// Interval between periodic JWKS refreshes, in seconds (default 300).
    pub jwks_refresh_secs: u64,
    /// Minimum interval between two refreshes caused by unknown `kid`s, per issuer, in
    /// seconds (default 10). Also the retry interval while an issuer has no keys at all.
    pub jwks_min_refresh_secs: u64,
    /// Timeout of one JWKS request, in seconds (default 5).
    pub jwks_fetch_timeout_secs: u64,
    /// Capacity of the verified-token cache, in tokens (default 10000; 0 disables it).
    pub token_cache_size: u64,
    /// Tokens longer than this many bytes are refused unparsed (default 16384).
    pub max_token_bytes: usize,
}

impl Default for JwtSettings {
    fn default() -> Self {
        JwtSettings {
            clock_skew_secs: 30,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            jwks_fetch_timeout_secs: 5,
            token_cache_size: 10_000,
            max_token_bytes: 16 * 1024,
        }
    }
}

/// Everything the identity layer needs. The top-level configuration embeds the three
/// parts as `issuers`, `spiffe` and `jwt`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Trusted token issuers.
    pub issuers: Vec<IssuerConfig>,
    /// SPIFFE settings.
    pub spiffe: SpiffeConfig,
    /// Token verification and JWKS refresh settings.
    pub jwt: JwtSettings,
}

/// A configuration problem, as a one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityConfigError {
    /// Something is wrong with one `[[issuers]]` entry.
    #[error("issuer `{issuer}`: {problem}")]
    Issuer {
        /// The `issuer` value (or `#<index>` when it is empty).
        issuer: String,
        /// What is wrong.
        problem: String,
    },
    /// Something is wrong in `[spiffe]`.
    #[error("spiffe: {0}")]
    Spiffe(String),
    /// Something is wrong in `[jwt]`.
    #[error("jwt: {0}")]
    Jwt(String),
}

/// A checked issuer, ready to use.
#[derive(Debug, Clone)]
pub(crate) struct ValidIssuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    pub resources: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<Url>,
    pub user_claim: String,
    pub application_claims: Vec<String>,
    pub groups_claim: Option<String>,
    pub context_claims: Vec<String>,
}

/// A checked SPIFFE configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct ValidSpiffe {
    pub trust_domains: HashSet<String>,
    pub application_id: SpiffeApplicationId,
    pub forwarders: HashSet<SpiffeId>,
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub(crate) struct ValidConfig {
    pub issuers: Vec<ValidIssuer>,
    pub spiffe: ValidSpiffe,
    pub clock_skew: u64,
    pub refresh_interval: Duration,
    pub min_refresh_interval: Duration,
    pub fetch_timeout: Duration,
    pub token_cache_size: u64,
    pub max_token_bytes: usize,
}

impl IdentityConfig {
    /// Checks the configuration without touching the network or the file system.
    pub fn validate(&self) -> Result<(), IdentityConfigError> {
        self.check(Path::new(".")).map(|_| ())
    }

    /// Checks the configuration and resolves relative `jwks_file` paths against `base_dir`.
    pub(crate) fn check(&self, base_dir: &Path) -> Result<ValidConfig, IdentityConfigError> {
        let jwt = &self.jwt;
        let jwt_err = |m: &str| Err(IdentityConfigError::Jwt(m.to_owned()));
        if jwt.jwks_refresh_secs == 0 {
            return jwt_err("`jwks_refresh_secs` must be at least 1");
        }
        if jwt.jwks_min_refresh_secs == 0 {
            return jwt_err("`jwks_min_refresh_secs` must be at least 1");
        }
        if jwt.jwks_min_refresh_secs > jwt.jwks_refresh_secs {
            return jwt_err("`jwks_min_refresh_secs` must not exceed `jwks_refresh_secs`");
        }
        if jwt.jwks_fetch_timeout_secs == 0 {
            return jwt_err("`jwks_fetch_timeout_secs` must be at least 1");
        }
        if jwt.clock_skew_secs > 600 {
            return jwt_err("`clock_skew_secs` must be at most 600");
        }
        if !(512..=1024 * 1024).contains(&jwt.max_token_bytes) {
            return jwt_err("`max_token_bytes` must be between 512 and 1048576");
        }

        let mut seen = HashSet::new();
        let mut issuers = Vec::with_capacity(self.issuers.len());
        for (index, issuer) in self.issuers.iter().enumerate() {
            let valid = check_issuer(index, issuer, base_dir)?;
            if !seen.insert(valid.issuer.clone()) {
                return Err(IdentityConfigError::Issuer {
                    issuer: shown(&valid.issuer),
                    problem: "is configured more than once".to_owned(),
                });
            }
            issuers.push(valid);
        }

        Ok(ValidConfig {
            issuers,
            spiffe: check_spiffe(&self.spiffe)?,
            clock_skew: jwt.clock_skew_secs,
            refresh_interval: Duration::from_secs(jwt.jwks_refresh_secs),
            min_refresh_interval: Duration::from_secs(jwt.jwks_min_refresh_secs),
            fetch_timeout: Duration::from_secs(jwt.jwks_fetch_timeout_secs),
            token_cache_size: jwt.token_cache_size,
            max_token_bytes: jwt.max_token_bytes,
        })
    }
}

fn check_issuer(
    index: usize,
    cfg: &IssuerConfig,
    base_dir: &Path,
) -> Result<ValidIssuer, IdentityConfigError> {
    let name = if cfg.issuer.is_empty() {
        format!("#{}", index + 1)
    } else {
        shown(&cfg.issuer)
    };
    let fail = |problem: String| IdentityConfigError::Issuer {
        issuer: name.clone(),
        problem,
    };

    if cfg.issuer.is_empty() {
        return Err(fail("`issuer` must not be empty".to_owned()));
    }
    let url = Url::parse(&cfg.issuer)
        .map_err(|_| fail("`issuer` must be an http or https url".to_owned()))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(fail("`issuer` must be an http or https url".to_owned()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(fail(
            "`issuer` must not have a query or fragment".to_owned(),
        ));
    }

    if cfg.audiences.is_empty() && cfg.resources.is_empty() {
        return Err(fail(
            "`audiences` must name at least one audience (it may be left out when the issuer is in the `authorization_servers` of a `[servers.<id>]`)".to_owned(),
        ));
    }
    if cfg.audiences.iter().any(String::is_empty) {
        return Err(fail(
            "`audiences` must not contain an empty string".to_owned(),
        ));
    }

    if cfg.algorithms.is_empty() {
        return Err(fail(
            "`algorithms` must name at least one algorithm".to_owned(),
        ));
    }
    let mut algorithms = Vec::new();
    for name in &cfg.algorithms {
        let alg = asymmetric_algorithm(name).ok_or_else(|| {
            fail(format!(
                "unsupported algorithm `{}` (supported: {})",
                shown(name),
                SUPPORTED_ALGORITHMS.join(", ")
            ))
        })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }

    if cfg.jwks_file.is_none() && cfg.jwks_url.is_none() {
        return Err(fail("set `jwks_file` or `jwks_url` (or both)".to_owned()));
    }
    let jwks_file = match &cfg.jwks_file {
        Some(path) if path.as_os_str().is_empty() => {
            return Err(fail("`jwks_file` must not be empty".to_owned()));
        }
        Some(path) if path.is_relative() => Some(base_dir.join(path)),
        Some(path) => Some(path.clone()),
        None => None,
    };
    let jwks_url = match &cfg.jwks_url {
        Some(raw) => Some(check_jwks_url(raw).map_err(|p| fail(p.to_owned()))?),
        None => None,
    };

    if cfg.user_claim.is_empty() {
        return Err(fail("`user_claim` must not be empty".to_owned()));
    }
    if cfg.application_claims.iter().any(String::is_empty) {
        return Err(fail(
            "`application_claims` must not contain an empty name".to_owned(),
        ));
    }
    if cfg.groups_claim.as_deref() == Some("") {
        return Err(fail("`groups_claim` must not be empty".to_owned()));
    }
    if cfg.context_claims.iter().any(String::is_empty) {
        return Err(fail(
            "`context_claims` must not contain an empty name".to_owned(),
        ));
    }

    Ok(ValidIssuer {
        issuer: cfg.issuer.clone(),
        audiences: cfg.audiences.clone(),
        resources: cfg.resources.clone(),
        algorithms,
        jwks_file,
        jwks_url,
        user_claim: cfg.user_claim.clone(),
        application_claims: cfg.application_claims.clone(),
        groups_claim: cfg.groups_claim.clone(),
        context_claims: cfg.context_claims.clone(),
    })
}

/// A JWKS URL must be https, or http to a loopback host; it must not carry credentials.
fn check_jwks_url(raw: &str) -> Result<Url, &'static str> {
    let url = Url::parse(raw).map_err(|_| "`jwks_url` is not a valid url")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`jwks_url` must not contain credentials");
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => return Err("`jwks_url` must use https (http is allowed for loopback only)"),
        _ => return Err("`jwks_url` must be an https url"),
    }
    if url.host_str().is_none() {
        return Err("`jwks_url` has no host");
    }
    Ok(url)
}

/// Whether the URL's host is `localhost` or a loopback address.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// The URL without userinfo, query or fragment: safe to log.
pub(crate) fn loggable_url(url: &Url) -> String {
    let mut out = format!("{}://", url.scheme());
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    out
}

fn check_spiffe(cfg: &SpiffeConfig) -> Result<ValidSpiffe, IdentityConfigError> {
    let mut trust_domains = HashSet::new();
    for td in &cfg.trust_domains {
        validate_trust_domain(td).map_err(|e| {
            IdentityConfigError::Spiffe(format!("bad trust domain `{}`: {e}", shown(td)))
        })?;
        trust_domains.insert(td.clone());
    }
    let mut forwarders = HashSet::new();
    for f in &cfg.forwarders {
        let id = SpiffeId::parse(f).map_err(|e| {
            IdentityConfigError::Spiffe(format!("bad forwarder `{}`: {e}", shown(f)))
        })?;
        if !trust_domains.contains(id.trust_domain()) {
            return Err(IdentityConfigError::Spiffe(format!(
                "forwarder `{}` is not in a trusted trust domain",
                shown(f)
            )));
        }
        forwarders.insert(id);
    }
    Ok(ValidSpiffe {
        trust_domains,
        application_id: cfg.application_id,
        forwarders,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> IssuerConfig {
        let mut i = IssuerConfig::new("https://idp.example.com", vec!["mcp-mesh".into()]);
        i.jwks_file = Some("keys/jwks.json".into());
        i
    }

    fn check_one(i: IssuerConfig) -> Result<ValidConfig, IdentityConfigError> {
        IdentityConfig {
            issuers: vec![i],
            ..Default::default()
        }
        .check(Path::new("/etc/mcp"))
    }

    fn problem(i: IssuerConfig) -> String {
        match check_one(i) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_the_documented_toml() {
        let text = r#"
            [[issuers]]
            issuer = "https://idp.example.com"
            audiences = ["mcp-mesh"]
            jwks_file = "keys/jwks.json"
            algorithms = ["RS256", "ES256"]
            user_claim = "sub"
            application_claims = ["azp", "client_id"]
            groups_claim = "groups"
            context_claims = ["email"]

            [[issuers]]
            issuer = "https://other.example.com/realms/x"
            audiences = ["a", "b"]
            jwks_url = "https://other.example.com/realms/x/certs"

            [spiffe]
            trust_domains = ["corp.example"]
            application_id = "k8s-ns-sa"

            [jwt]
            clock_skew_secs = 10
        "#;
        let cfg: IdentityConfig = toml::from_str(text).unwrap();
        assert_eq!(cfg.issuers.len(), 2);
        assert_eq!(cfg.issuers[1].algorithms, vec!["RS256"]);
        assert_eq!(cfg.issuers[1].user_claim, "sub");
        assert_eq!(cfg.issuers[1].application_claims, vec!["azp", "client_id"]);
        assert_eq!(cfg.issuers[1].groups_claim, None);
        assert_eq!(
            cfg.spiffe.application_id,
            SpiffeApplicationId::K8sNamespaceServiceAccount
        );
        assert_eq!(cfg.jwt.clock_skew_secs, 10);
        assert_eq!(cfg.jwt.jwks_refresh_secs, 300);
        let valid = cfg.check(Path::new("/etc/mcp")).unwrap();
        assert_eq!(
            valid.issuers[0].jwks_file.as_deref(),
            Some(Path::new("/etc/mcp/keys/jwks.json"))
        );
        assert_eq!(
            valid.issuers[0].algorithms,
            vec![Algorithm::RS256, Algorithm::ES256]
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "[[issuers]]\nissuer = \"https://a\"\naudiences = [\"x\"]\njwks_uri = \"https://a/k\"\n";
        let err = toml::from_str::<IdentityConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `jwks_uri`"), "{err}");
    }

    #[test]
    fn issuer_problems_are_one_line_messages() {
        let mut i = issuer();
        i.algorithms = vec!["HS256".into()];
        assert_eq!(
            problem(i),
            "issuer `https://idp.example.com`: unsupported algorithm `HS256` (supported: RS256, \
             RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
        );

        let mut i = issuer();
        i.algorithms = vec!["none".into()];
        assert!(problem(i).contains("unsupported algorithm `none`"));

        let mut i = issuer();
        i.jwks_file = None;
        assert_eq!(
            problem(i),
            "issuer `https://idp.example.com`: set `jwks_file` or `jwks_url` (or both)"
        );

        let mut i = issuer();
        i.audiences = vec![];
        assert_eq!(
            problem(i),
            "issuer `https://idp.example.com`: `audiences` must name at least one audience (it may be left out when the issuer is in the `authorization_servers` of a `[servers.<id>]`)"
        );
        // An issuer that only MCP servers with a `resource` trust needs no audience.
        let mut i = issuer();
        i.audiences = vec![];
        i.resources = vec!["https://docs.example/mcp".into()];
        assert!(
            IdentityConfig {
                issuers: vec![i],
                ..IdentityConfig::default()
            }
            .validate()
            .is_ok()
        );

        let mut i = issuer();
        i.issuer = String::new();
        assert_eq!(problem(i), "issuer `#1`: `issuer` must not be empty");

        let mut i = issuer();
        i.issuer = "idp.example.com".into();
        assert_eq!(
            problem(i),
            "issuer `idp.example.com`: `issuer` must be an http or https url"
        );

        let mut i = issuer();
        i.jwks_url = Some("http://idp.example.com/jwks".into());
        assert!(problem(i).contains("must use https"));

        let mut i = issuer();
        i.jwks_url = Some("https://user:pw@idp.example.com/jwks".into());
        let p = problem(i);
        assert!(
            p.contains("must not contain credentials") && !p.contains("pw"),
            "{p}"
        );

        let mut i = issuer();
        i.jwks_url = Some("http://127.0.0.1:8080/jwks".into());
        assert!(check_one(i).is_ok());

        let mut i = issuer();
        i.jwks_url = Some("http://[::1]:8080/jwks".into());
        assert!(check_one(i).is_ok());
    }

    #[test]
    fn duplicate_issuers_are_refused() {
        let cfg = IdentityConfig {
            issuers: vec![issuer(), issuer()],
            ..Default::default()
        };
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "issuer `https://idp.example.com`: is configured more than once"
        );
    }

    #[test]
    fn spiffe_problems_are_one_line_messages() {
        let cfg = IdentityConfig {
            spiffe: SpiffeConfig {
                trust_domains: vec!["Corp.Example".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "spiffe: bad trust domain `Corp.Example`: spiffe trust domain must be lowercase"
        );
        let cfg = IdentityConfig {
            spiffe: SpiffeConfig {
                trust_domains: vec!["spiffe://corp.example".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .starts_with("spiffe: bad trust domain")
        );
    }

    #[test]
    fn jwt_settings_are_checked() {
        let mut cfg = IdentityConfig::default();
        cfg.jwt.jwks_min_refresh_secs = 600;
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "jwt: `jwks_min_refresh_secs` must not exceed `jwks_refresh_secs`"
        );
    }

    #[test]
    fn loggable_url_drops_query_and_credentials() {
        let url = Url::parse("https://idp.example.com:8443/certs?token=abc#x").unwrap();
        assert_eq!(loggable_url(&url), "https://idp.example.com:8443/certs");
    }
}
