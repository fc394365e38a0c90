//! Authentication failures ([`AuthnError`]) and their HTTP shape.
//!
//! Messages never contain a token, a key or a secret: they may name a claim, a `kid`, an
//! issuer, an algorithm or an application/user id, always shortened and stripped of
//! control characters by [`shown`].

use std::fmt;

use super::spiffe::SpiffeIdError;

/// The longest piece of caller-supplied text an error message repeats.
const SHOWN_MAX_CHARS: usize = 64;

/// Makes a caller-supplied value safe to repeat in a message or a log line: at most
/// 64 characters, printable ASCII only (anything else becomes `?`), and an ellipsis when cut.
pub(crate) fn shown(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(SHOWN_MAX_CHARS + 3));
    for (i, c) in value.chars().enumerate() {
        if i == SHOWN_MAX_CHARS {
            out.push_str("...");
            break;
        }
        out.push(if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            '?'
        });
    }
    out
}

/// Which part of a compact JWT a decoding problem is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPart {
    /// The JOSE header (first segment).
    Header,
    /// The claims (second segment).
    Payload,
    /// The signature (third segment).
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPart::Header => "header",
            TokenPart::Payload => "payload",
            TokenPart::Signature => "signature",
        })
    }
}

/// Where a user or application id came from, for mismatch errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    /// The verified bearer token.
    Token,
    /// The mTLS peer SPIFFE id.
    Spiffe,
    /// The identity a trusted caller (the gateway) asserted.
    Trusted,
}

impl fmt::Display for IdentitySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentitySource::Token => "token",
            IdentitySource::Spiffe => "spiffe id",
            IdentitySource::Trusted => "trusted caller",
        })
    }
}

/// Why a caller could not be authenticated. Each variant has its own
/// [`reason_code`](AuthnError::reason_code).
///
/// Any of these is a failure of the whole resolution: a presented credential that does not
/// verify is never ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthnError {
    /// The token is longer than `max_token_bytes`; it was not parsed.
    #[error("token is too large: {len} bytes, the limit is {max}")]
    TokenTooLarge {
        /// Length of the presented token in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The token is not three dot-separated segments, or is otherwise unusable as a JWS.
    #[error("token is malformed: {detail}")]
    Malformed {
        /// What is wrong, in a few words.
        detail: &'static str,
    },
    /// A segment is not unpadded base64url.
    #[error("token {part} is not valid base64url")]
    BadEncoding {
        /// The segment.
        part: TokenPart,
    },
    /// The header or payload is not a JSON object.
    #[error("token {part} is not a json object")]
    BadJson {
        /// The segment.
        part: TokenPart,
    },
    /// The header says `"alg": "none"`.
    #[error("token is unsigned (`alg` is `none`)")]
    Unsigned,
    /// The header algorithm is symmetric, unknown, or not configured for the issuer.
    #[error("token algorithm `{alg}` is not allowed")]
    DisallowedAlgorithm {
        /// The algorithm named by the token header.
        alg: String,
    },
    /// The token has `crit` header parameters, none of which are supported.
    #[error("token has critical header parameters, which are not supported")]
    UnsupportedCritical,
    /// The token has no `iss` claim.
    #[error("token has no `iss` claim")]
    MissingIssuer,
    /// The token's `iss` is none of the configured issuers.
    #[error("token issuer `{issuer}` is not trusted")]
    WrongIssuer {
        /// The (unverified) issuer named by the token.
        issuer: String,
    },
    /// The token has no `kid` header and the issuer has no single key it could mean.
    #[error("token has no `kid` header and issuer `{issuer}` has no single key for it")]
    MissingKid {
        /// The issuer.
        issuer: String,
    },
    /// No key of the issuer has the token's `kid` (after a refresh when one was allowed).
    #[error("issuer `{issuer}` has no key `{kid}`")]
    UnknownKid {
        /// The issuer.
        issuer: String,
        /// The key id named by the token.
        kid: String,
    },
    /// The key named by `kid` cannot verify the token's algorithm (e.g. an RSA key for `ES256`).
    #[error("key `{kid}` of issuer `{issuer}` cannot verify algorithm `{alg}`")]
    KeyAlgorithmMismatch {
        /// The issuer.
        issuer: String,
        /// The key id (`-` when the token named none).
        kid: String,
        /// The algorithm named by the token header.
        alg: String,
    },
    /// The issuer has no keys at all (its JWKS could not be loaded yet).
    #[error("no keys are available for issuer `{issuer}`")]
    JwksUnavailable {
        /// The issuer.
        issuer: String,
    },
    /// The key exists but the cryptography library refused it.
    #[error("key `{kid}` of issuer `{issuer}` is unusable")]
    KeyUnusable {
        /// The issuer.
        issuer: String,
        /// The key id (`-` when the token named none).
        kid: String,
    },
    /// The signature does not verify with the selected key.
    #[error("token signature does not verify with key `{kid}` of issuer `{issuer}`")]
    BadSignature {
        /// The issuer.
        issuer: String,
        /// The key id (`-` when the token named none).
        kid: String,
    },
    /// The token has no `exp` claim.
    #[error("token has no `exp` claim")]
    MissingExpiry,
    /// `exp` is in the past (beyond the allowed clock skew).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the allowed clock skew).
    #[error("token is not valid yet")]
    NotYetValid,
    /// The token has no `aud` claim.
    #[error("token has no `aud` claim")]
    MissingAudience,
    /// No `aud` value is one of the issuer's configured audiences.
    #[error("token audience is not accepted for issuer `{issuer}`")]
    WrongAudience {
        /// The issuer.
        issuer: String,
    },
    /// The token is valid but not for the MCP server it is presented to: its `aud`
    /// lacks the server's canonical URI (RFC 8707), or, on a server without one, all
    /// its audiences are other servers' URIs.
    #[error(
        "the token is not for this MCP server ({})",
        match .resource {
            Some(r) => format!("audience `{r}` required"),
            None => "its audience is another MCP server's".to_owned(),
        }
    )]
    NotForServer {
        /// The server's canonical URI `aud` must hold; `None` for a server without
        /// one (then `aud` must hold one of the issuer's `audiences`).
        resource: Option<String>,
    },
    /// The token's issuer is not one of the `authorization_servers` of the MCP
    /// server it is presented to.
    #[error(
        "the token is not for this MCP server (issuer `{issuer}` is not one of its authorization servers)"
    )]
    IssuerNotForServer {
        /// The issuer.
        issuer: String,
    },
    /// A claim has the wrong JSON type (or is an empty string where an id is expected).
    #[error("token claim `{claim}` must be {expected}")]
    InvalidClaim {
        /// The claim name.
        claim: String,
        /// What it must be, e.g. `a non-empty string`.
        expected: &'static str,
    },
    /// The SPIFFE id does not parse.
    #[error("invalid spiffe id: {0}")]
    InvalidSpiffeId(SpiffeIdError),
    /// The SPIFFE id's trust domain is not in `spiffe.trust_domains`.
    #[error("spiffe trust domain `{trust_domain}` is not trusted")]
    UntrustedTrustDomain {
        /// The trust domain.
        trust_domain: String,
    },
    /// Two sources name different applications.
    #[error(
        "application `{first_id}` from the {first} differs from `{second_id}` from the {second}"
    )]
    ApplicationMismatch {
        /// Source of the first id.
        first: IdentitySource,
        /// The first id.
        first_id: String,
        /// Source of the second id.
        second: IdentitySource,
        /// The second id.
        second_id: String,
    },
    /// The token's user and the trusted caller's user differ.
    #[error("user `{first_id}` from the {first} differs from `{second_id}` from the {second}")]
    UserMismatch {
        /// Source of the first id.
        first: IdentitySource,
        /// The first id.
        first_id: String,
        /// Source of the second id.
        second: IdentitySource,
        /// The second id.
        second_id: String,
    },
}

impl AuthnError {
    /// A stable snake_case code for logs and metrics labels, e.g. `token_expired`.
    pub fn reason_code(&self) -> &'static str {
        match self {
            AuthnError::TokenTooLarge { .. } => "token_too_large",
            AuthnError::Malformed { .. } => "token_malformed",
            AuthnError::BadEncoding { .. } => "token_bad_base64",
            AuthnError::BadJson { .. } => "token_bad_json",
            AuthnError::Unsigned => "token_unsigned",
            AuthnError::DisallowedAlgorithm { .. } => "token_disallowed_algorithm",
            AuthnError::UnsupportedCritical => "token_unsupported_crit",
            AuthnError::MissingIssuer => "token_missing_iss",
            AuthnError::WrongIssuer { .. } => "token_wrong_issuer",
            AuthnError::MissingKid { .. } => "token_missing_kid",
            AuthnError::UnknownKid { .. } => "token_unknown_kid",
            AuthnError::KeyAlgorithmMismatch { .. } => "token_key_algorithm_mismatch",
            AuthnError::JwksUnavailable { .. } => "jwks_unavailable",
            AuthnError::KeyUnusable { .. } => "jwks_key_unusable",
            AuthnError::BadSignature { .. } => "token_bad_signature",
            AuthnError::MissingExpiry => "token_missing_exp",
            AuthnError::Expired => "token_expired",
            AuthnError::NotYetValid => "token_not_yet_valid",
            AuthnError::MissingAudience => "token_missing_aud",
            AuthnError::WrongAudience { .. } => "token_wrong_audience",
            AuthnError::NotForServer { .. } => "token_wrong_resource",
            AuthnError::IssuerNotForServer { .. } => "token_wrong_authorization_server",
            AuthnError::InvalidClaim { .. } => "token_invalid_claim",
            AuthnError::InvalidSpiffeId(_) => "spiffe_invalid_id",
            AuthnError::UntrustedTrustDomain { .. } => "spiffe_untrusted_domain",
            AuthnError::ApplicationMismatch { .. } => "application_mismatch",
            AuthnError::UserMismatch { .. } => "user_mismatch",
        }
    }

    /// Whether this failure is about a presented bearer token (so that a `WWW-Authenticate`
    /// reply carries `error="invalid_token"`).
    pub fn concerns_token(&self) -> bool {
        match self {
            AuthnError::InvalidSpiffeId(_) | AuthnError::UntrustedTrustDomain { .. } => false,
            AuthnError::ApplicationMismatch { first, second, .. }
            | AuthnError::UserMismatch { first, second, .. } => {
                *first == IdentitySource::Token || *second == IdentitySource::Token
            }
            _ => true,
        }
    }

    /// The HTTP status for this failure: always 401 (the caller is not authenticated).
    pub fn http_status(&self) -> u16 {
        401
    }

    /// A `WWW-Authenticate` value per RFC 6750: `Bearer realm="..", error="invalid_token",
    /// error_description=".."` when a token was involved, else just `Bearer realm=".."`.
    pub fn www_authenticate(&self, realm: &str) -> String {
        Challenge::new(realm).unauthenticated(Some(self))
    }
}

/// The `WWW-Authenticate: Bearer` challenge of a request, built in one place: the
/// realm, and for a request on an MCP server with protected-resource settings the
/// URL of its metadata (RFC 9728 §5.1 `resource_metadata`) and the scopes a client
/// should ask for (RFC 6750 §3 `scope`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Challenge<'a> {
    /// `realm`.
    pub realm: &'a str,
    /// `resource_metadata`: the URL of the server's Protected Resource Metadata.
    pub resource_metadata: Option<&'a str>,
    /// `scope` of a 401: the scopes the server's tokens usually need.
    pub scope: Option<&'a str>,
}

impl<'a> Challenge<'a> {
    /// A challenge saying only `realm`.
    pub fn new(realm: &'a str) -> Self {
        Self {
            realm,
            resource_metadata: None,
            scope: None,
        }
    }

    /// The challenge of a 401: `Bearer realm=".."`, then `error="invalid_token",
    /// error_description=".."` when a presented token failed (RFC 6750 §3.1: no
    /// `error` when no credentials were presented), then `resource_metadata` and
    /// `scope` when set.
    pub fn unauthenticated(&self, error: Option<&AuthnError>) -> String {
        let mut out = format!("Bearer realm=\"{}\"", quoted_string_safe(self.realm));
        if let Some(e) = error.filter(|e| e.concerns_token()) {
            out.push_str(&format!(
                ", error=\"invalid_token\", error_description=\"{}\"",
                quoted_string_safe(&e.to_string())
            ));
        }
        self.push_tail(&mut out, self.scope);
        out
    }

    /// The challenge of a 403 that more scope would turn into an allow (RFC 6750
    /// §3.1 `insufficient_scope`; MCP 2025-11-25 step-up): `scope` is every scope
    /// the client should ask for (the token's and the missing ones).
    pub fn insufficient_scope(&self, scope: &str) -> String {
        let mut out = format!(
            "Bearer realm=\"{}\", error=\"insufficient_scope\"",
            quoted_string_safe(self.realm)
        );
        self.push_tail(&mut out, Some(scope));
        out
    }

    fn push_tail(&self, out: &mut String, scope: Option<&str>) {
        if let Some(scope) = scope {
            out.push_str(&format!(", scope=\"{}\"", quoted_string_safe(scope)));
        }
        if let Some(url) = self.resource_metadata {
            out.push_str(&format!(
                ", resource_metadata=\"{}\"",
                quoted_string_safe(url)
            ));
        }
    }
}

/// The `WWW-Authenticate` challenge for a request that presented no credentials at all
/// (RFC 6750 §3.1: no `error` parameter).
pub fn bearer_challenge(realm: &str) -> String {
    Challenge::new(realm).unauthenticated(None)
}

/// Keeps only the characters RFC 6750 allows inside `error_description` and `realm`
/// (`%x20-21 / %x23-5B / %x5D-7E`): `"` becomes `'`, anything else outside becomes `?`.
fn quoted_string_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\\' => '/',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_truncates_and_strips_control_characters() {
        assert_eq!(shown("kid-1"), "kid-1");
        assert_eq!(shown("a\nb\u{7}c"), "a?b?c");
        assert_eq!(shown("é"), "?");
        let long = "x".repeat(100);
        assert_eq!(shown(&long), format!("{}...", "x".repeat(64)));
    }

    #[test]
    fn www_authenticate_has_error_only_for_token_failures() {
        let expired = AuthnError::Expired;
        assert_eq!(
            expired.www_authenticate("mcp"),
            "Bearer realm=\"mcp\", error=\"invalid_token\", error_description=\"token has expired\""
        );
        let spiffe = AuthnError::UntrustedTrustDomain {
            trust_domain: "evil.example".into(),
        };
        assert_eq!(spiffe.www_authenticate("mcp"), "Bearer realm=\"mcp\"");
        assert_eq!(bearer_challenge("a\"b"), "Bearer realm=\"a'b\"");
        assert_eq!(expired.http_status(), 401);
    }

    #[test]
    fn challenges_point_to_the_metadata_and_ask_for_scope() {
        let docs = Challenge {
            realm: "mcp-authz",
            resource_metadata: Some(
                "https://docs.example/.well-known/oauth-protected-resource/mcp",
            ),
            scope: Some("docs.read"),
        };
        assert_eq!(
            docs.unauthenticated(None),
            "Bearer realm=\"mcp-authz\", scope=\"docs.read\", resource_metadata=\"https://docs.example/.well-known/oauth-protected-resource/mcp\""
        );
        assert_eq!(
            docs.unauthenticated(Some(&AuthnError::Expired)),
            "Bearer realm=\"mcp-authz\", error=\"invalid_token\", error_description=\"token has expired\", scope=\"docs.read\", resource_metadata=\"https://docs.example/.well-known/oauth-protected-resource/mcp\""
        );
        assert_eq!(
            docs.insufficient_scope("docs.read docs.write"),
            "Bearer realm=\"mcp-authz\", error=\"insufficient_scope\", scope=\"docs.read docs.write\", resource_metadata=\"https://docs.example/.well-known/oauth-protected-resource/mcp\""
        );
        let no_scope = Challenge {
            scope: None,
            ..docs
        };
        assert_eq!(
            no_scope.unauthenticated(None),
            "Bearer realm=\"mcp-authz\", resource_metadata=\"https://docs.example/.well-known/oauth-protected-resource/mcp\""
        );
        let wrong = AuthnError::NotForServer {
            resource: Some("https://docs.example/mcp".into()),
        };
        assert!(
            no_scope.unauthenticated(Some(&wrong)).contains(
                "error_description=\"the token is not for this MCP server (audience `https://docs.example/mcp` required)\""
            ),
            "{}",
            no_scope.unauthenticated(Some(&wrong))
        );
    }

    #[test]
    fn error_description_is_a_valid_quoted_string() {
        let err = AuthnError::UnknownKid {
            issuer: "https://idp".into(),
            kid: "k\"1\\".into(),
        };
        let header = err.www_authenticate("r");
        assert!(header.contains("error_description=\"issuer `https://idp` has no key `k'1/`\""));
    }

    #[test]
    fn mismatch_concerns_token_only_when_a_token_is_involved() {
        let err = AuthnError::ApplicationMismatch {
            first: IdentitySource::Trusted,
            first_id: "a".into(),
            second: IdentitySource::Spiffe,
            second_id: "b".into(),
        };
        assert!(!err.concerns_token());
        assert_eq!(
            err.to_string(),
            "application `a` from the trusted caller differs from `b` from the spiffe id"
        );
    }
}
