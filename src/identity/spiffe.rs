//! Strict SPIFFE id parsing (`spiffe://<trust-domain>/<path>`) and the mapping from a
//! SPIFFE id to an application id.
//!
//! The rules follow the SPIFFE-ID specification, read strictly: the scheme is exactly
//! `spiffe`; the trust domain is lowercase `[a-z0-9._-]`, at most 255 bytes, with no
//! userinfo or port; the path is one or more `/`-separated segments, none empty, none `.`
//! or `..`, each of `[A-Za-z0-9._-]` only (so percent-encoding is refused rather than
//! decoded); no query, no fragment; at most 2048 bytes in all. A bare trust-domain id
//! (`spiffe://td`) names no workload and is refused here.

use std::fmt;

use serde::Deserialize;

/// The longest SPIFFE id accepted, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The longest trust domain accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// Why a string is not a valid workload SPIFFE id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("spiffe id is empty")]
    Empty,
    /// Longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("spiffe id is longer than 2048 bytes")]
    TooLong,
    /// Does not start with `spiffe://`.
    #[error("spiffe id must start with `spiffe://`")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("spiffe id has an empty trust domain")]
    EmptyTrustDomain,
    /// Longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("spiffe trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    /// Has uppercase letters.
    #[error("spiffe trust domain must be lowercase")]
    UppercaseTrustDomain,
    /// Has `user@`.
    #[error("spiffe id must not contain userinfo")]
    UserInfo,
    /// Has `:port`.
    #[error("spiffe id must not contain a port")]
    Port,
    /// Has a character outside `[a-z0-9._-]`.
    #[error("spiffe trust domain may contain only `a-z`, `0-9`, `.`, `-` and `_`")]
    BadTrustDomainChar,
    /// No path: a trust-domain id names no workload.
    #[error("spiffe id has no path")]
    MissingPath,
    /// `//` or a trailing `/`.
    #[error("spiffe id path has an empty segment")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("spiffe id path segments must not be `.` or `..`")]
    DotSegment,
    /// A character outside `[A-Za-z0-9._-]` (including `%`).
    #[error("spiffe id path may contain only `A-Z`, `a-z`, `0-9`, `.`, `-` and `_`")]
    BadPathChar,
    /// Has `?`.
    #[error("spiffe id must not contain a query")]
    Query,
    /// Has `#`.
    #[error("spiffe id must not contain a fragment")]
    Fragment,
}

/// A validated workload SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    /// Always starts with `/` and has at least one segment.
    path: String,
}

impl SpiffeId {
    /// Parses a workload SPIFFE id strictly (see the module docs).
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        if id.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if id.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        let rest = id
            .strip_prefix(SCHEME_PREFIX)
            .ok_or(SpiffeIdError::WrongScheme)?;
        // Query and fragment are named before any other problem they would cause.
        match rest.find(['?', '#']).and_then(|i| rest.as_bytes().get(i)) {
            Some(b'?') => return Err(SpiffeIdError::Query),
            Some(_) => return Err(SpiffeIdError::Fragment),
            None => {}
        }
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        if path.is_empty() {
            return Err(SpiffeIdError::MissingPath);
        }
        for segment in path.strip_prefix('/').unwrap_or(path).split('/') {
            validate_segment(segment)?;
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The trust domain, e.g. `corp.example`.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path with its leading `/`, e.g. `/ns/prod/sa/chatbot`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path segments, e.g. `["ns", "prod", "sa", "chatbot"]`.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.strip_prefix('/').unwrap_or(&self.path).split('/')
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.trust_domain, self.path)
    }
}

/// Checks a bare trust domain name (as in `spiffe.trust_domains`).
pub fn validate_trust_domain(trust_domain: &str) -> Result<(), SpiffeIdError> {
    if trust_domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if trust_domain.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong);
    }
    if trust_domain.contains('@') {
        return Err(SpiffeIdError::UserInfo);
    }
    if trust_domain.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    for b in trust_domain.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {}
            b'A'..=b'Z' => return Err(SpiffeIdError::UppercaseTrustDomain),
            _ => return Err(SpiffeIdError::BadTrustDomainChar),
        }
    }
    Ok(())
}

fn validate_segment(segment: &str) -> Result<(), SpiffeIdError> {
    if segment.is_empty() {
        return Err(SpiffeIdError::EmptySegment);
    }
    if segment == "." || segment == ".." {
        return Err(SpiffeIdError::DotSegment);
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(SpiffeIdError::BadPathChar);
    }
    Ok(())
}

/// How a SPIFFE id becomes an application id (`spiffe.application_id`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SpiffeApplicationId {
    /// `"k8s-sa"` (default): `<name>` for Kubernetes-style ids `spiffe://td/ns/<ns>/sa/<name>`,
    /// otherwise the whole path without its leading `/`. Note that service accounts of the
    /// same name in two namespaces then map to the same application.
    #[default]
    #[serde(rename = "k8s-sa")]
    K8sServiceAccount,
    /// `"k8s-ns-sa"`: `<ns>/<name>` for Kubernetes-style ids, otherwise the whole path without
    /// its leading `/`.
    #[serde(rename = "k8s-ns-sa")]
    K8sNamespaceServiceAccount,
    /// `"path"`: the whole path without its leading `/`, e.g. `ns/prod/sa/chatbot`.
    #[serde(rename = "path")]
    Path,
    /// `"spiffe-id"`: the full id, e.g. `spiffe://corp.example/ns/prod/sa/chatbot`.
    #[serde(rename = "spiffe-id")]
    FullId,
}

impl SpiffeApplicationId {
    /// The application id for `id` under this mapping.
    pub fn application_id(self, id: &SpiffeId) -> String {
        let k8s = || {
            let segments: Vec<&str> = id.segments().collect();
            match segments.as_slice() {
                ["ns", ns, "sa", name] => Some((*ns, *name)),
                _ => None,
            }
        };
        let whole_path = || id.path().strip_prefix('/').unwrap_or(id.path()).to_owned();
        match self {
            SpiffeApplicationId::K8sServiceAccount => k8s()
                .map(|(_, name)| name.to_owned())
                .unwrap_or_else(whole_path),
            SpiffeApplicationId::K8sNamespaceServiceAccount => k8s()
                .map(|(ns, name)| format!("{ns}/{name}"))
                .unwrap_or_else(whole_path),
            SpiffeApplicationId::Path => whole_path(),
            SpiffeApplicationId::FullId => id.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(id: &str) -> SpiffeIdError {
        match SpiffeId::parse(id) {
            Ok(parsed) => panic!("{id} parsed as {parsed}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://corp.example/ns/prod/sa/chat-bot_1.v2").unwrap();
        assert_eq!(id.trust_domain(), "corp.example");
        assert_eq!(id.path(), "/ns/prod/sa/chat-bot_1.v2");
        assert_eq!(
            id.to_string(),
            "spiffe://corp.example/ns/prod/sa/chat-bot_1.v2"
        );
        assert!(SpiffeId::parse("spiffe://a-b_c.0/X").is_ok());
    }

    #[test]
    fn rejects_each_problem_with_its_own_error() {
        use SpiffeIdError::*;
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("https://corp.example/app", WrongScheme),
            ("SPIFFE://corp.example/app", WrongScheme),
            ("spiffe:/corp.example/app", WrongScheme),
            ("spiffe:///app", EmptyTrustDomain),
            ("spiffe://Corp.example/app", UppercaseTrustDomain),
            ("spiffe://user@corp.example/app", UserInfo),
            ("spiffe://corp.example:8443/app", Port),
            ("spiffe://corp%2eexample/app", BadTrustDomainChar),
            ("spiffe://corp.example", MissingPath),
            ("spiffe://corp.example/", EmptySegment),
            ("spiffe://corp.example/a//b", EmptySegment),
            ("spiffe://corp.example/a/", EmptySegment),
            ("spiffe://corp.example/a/../b", DotSegment),
            ("spiffe://corp.example/./b", DotSegment),
            ("spiffe://corp.example/a/%2e%2e/b", BadPathChar),
            ("spiffe://corp.example/a%2Fb", BadPathChar),
            ("spiffe://corp.example/a b", BadPathChar),
            ("spiffe://corp.example/é", BadPathChar),
            ("spiffe://corp.example/a?b=c", Query),
            ("spiffe://corp.example/a#frag", Fragment),
            ("spiffe://corp.example#frag", Fragment),
        ];
        for (id, expected) in cases {
            assert_eq!(err(id), *expected, "{id}");
        }
        let long = format!("spiffe://corp.example/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        assert_eq!(err(&long), TooLong);
        let long_td = format!("spiffe://{}/a", "a".repeat(256));
        assert_eq!(err(&long_td), TrustDomainTooLong);
    }

    #[test]
    fn maps_application_ids() {
        let k8s = SpiffeId::parse("spiffe://corp.example/ns/prod/sa/corpassist").unwrap();
        let other = SpiffeId::parse("spiffe://corp.example/apps/corpassist").unwrap();
        use SpiffeApplicationId::*;
        assert_eq!(K8sServiceAccount.application_id(&k8s), "corpassist");
        assert_eq!(K8sServiceAccount.application_id(&other), "apps/corpassist");
        assert_eq!(
            K8sNamespaceServiceAccount.application_id(&k8s),
            "prod/corpassist"
        );
        assert_eq!(Path.application_id(&k8s), "ns/prod/sa/corpassist");
        assert_eq!(
            FullId.application_id(&other),
            "spiffe://corp.example/apps/corpassist"
        );
    }
}
