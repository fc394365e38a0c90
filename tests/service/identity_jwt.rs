//! Real signed tokens against a file-based JWKS: valid ones accepted, every kind of bad one
//! refused with its own reason.

use std::collections::HashSet;

use jsonwebtoken::Algorithm;
use mcp_authz::identity::{
    AuthnError, IdentityConfig, IdentityInput, Resolver, TokenPart, bearer_challenge,
};
use serde_json::json;

use crate::support::tokens::*;

fn token_input(token: &str) -> IdentityInput<'_> {
    IdentityInput {
        bearer_token: Some(token),
        ..Default::default()
    }
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let resolver = file_resolver(dir.path(), &[&k.rsa, &k.ec, &k.ed]).await;
    for key in [&k.rsa, &k.ec, &k.ed] {
        let mut c = claims();
        c["groups"] = json!(["engineering", "project-ops"]);
        c["email"] = json!("alice@corp.example");
        c["scope"] = json!("docs:read projects:read");
        let token = key.sign(&c);
        let id = resolver
            .resolve(token_input(&token))
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", key.alg));
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert_eq!(id.application.as_deref(), Some("corpassist"));
        assert_eq!(id.groups, vec!["engineering", "project-ops"]);
        assert_eq!(id.scopes, vec!["docs:read", "projects:read"]);
        assert_eq!(id.claims.get("email"), Some(&json!("alice@corp.example")));
        assert_eq!(id.issuer.as_deref(), Some(ISSUER));
    }
    let stats = resolver.jwks_stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].keys, 3);
    assert!(!stats[0].has_url);
    assert!(resolver.jwks_ready());
}

#[tokio::test]
async fn ps256_is_accepted_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut key = TestKey::rsa(1, "rsa-1");
    key.alg = Algorithm::PS256;
    std::fs::write(dir.path().join("jwks.json"), jwks(&[&key]).to_string()).unwrap();
    let mut issuer = issuer_config();
    issuer.jwks_file = Some("jwks.json".into());
    issuer.algorithms = vec!["PS256".into()];
    let config = IdentityConfig {
        issuers: vec![issuer],
        ..Default::default()
    };
    let resolver = Resolver::new(&config, dir.path()).await.unwrap();
    let token = key.sign(&claims());
    resolver.resolve(token_input(&token)).await.unwrap();
}

#[tokio::test]
async fn every_bad_token_is_refused_with_a_distinct_reason() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let resolver = file_resolver(dir.path(), &[&k.rsa, &k.rsa_b, &k.ec, &k.ed]).await;
    let cases = bad_tokens(&k);
    let mut reasons = HashSet::new();
    for (name, token, expected) in &cases {
        let err = match resolver.resolve(token_input(token)).await {
            Ok(id) => panic!("{name}: accepted as {id:?}"),
            Err(e) => e,
        };
        assert_eq!(err.reason_code(), *expected, "{name}: {err}");
        assert!(
            reasons.insert(err.reason_code()),
            "{name}: reason {expected} used twice"
        );

        // Nothing secret in what a caller or a log would see.
        let shown = [
            err.to_string(),
            format!("{err:?}"),
            err.www_authenticate("mcp"),
        ];
        for text in &shown {
            assert!(!text.contains(token.as_str()), "{name}: token in {text}");
            for part in token.split('.').filter(|p| p.len() > 16) {
                assert!(!text.contains(part), "{name}: token part in {text}");
            }
            for key in [&k.rsa, &k.rsa_b, &k.ec, &k.ed, &k.rsa_other] {
                for m in key
                    .public_material()
                    .iter()
                    .chain(key.private_material().iter())
                {
                    assert!(!text.contains(m.as_str()), "{name}: key material in {text}");
                }
            }
        }
        assert_eq!(err.http_status(), 401);
        assert!(
            err.www_authenticate("mcp")
                .starts_with("Bearer realm=\"mcp\", error=\"invalid_token\"")
        );
    }
    assert_eq!(reasons.len(), cases.len());
}

#[tokio::test]
async fn specific_errors_carry_the_right_details() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let resolver = file_resolver(dir.path(), &[&k.rsa, &k.ec, &k.ed]).await;
    let resolve = |t: String| {
        let resolver = resolver.clone();
        async move {
            resolver
                .resolve(IdentityInput {
                    bearer_token: Some(&t),
                    ..Default::default()
                })
                .await
        }
    };

    let err = resolve(
        k.rsa
            .sign_with_header(&json!({"alg": "RS256", "kid": "no-such-key"}), &claims()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        AuthnError::UnknownKid {
            issuer: ISSUER.into(),
            kid: "no-such-key".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "issuer `https://idp.corp.example` has no key `no-such-key`"
    );

    let mut good = k.rsa.sign(&claims());
    good.truncate(good.len() - 4);
    good.push_str("AAAA");
    let err = resolve(good).await.unwrap_err();
    assert_eq!(
        err,
        AuthnError::BadSignature {
            issuer: ISSUER.into(),
            kid: "rsa-1".into()
        }
    );

    // PS256 is valid RSA but not configured for this issuer.
    let mut ps = TestKey::rsa(1, "rsa-1");
    ps.alg = Algorithm::PS256;
    let err = resolve(ps.sign(&claims())).await.unwrap_err();
    assert_eq!(
        err,
        AuthnError::DisallowedAlgorithm {
            alg: "PS256".into()
        }
    );

    let err = resolve(k.rsa.token(json!({"iss": "https://evil.example"})))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "token issuer `https://evil.example` is not trusted"
    );

    let good = k.rsa.sign(&claims());
    let (h, rest) = good.split_once('.').unwrap();
    let (p, _) = rest.split_once('.').unwrap();
    let err = resolve(format!("{h}.{p}.!!")).await.unwrap_err();
    assert_eq!(
        err,
        AuthnError::BadEncoding {
            part: TokenPart::Signature
        }
    );

    let err = resolve(String::new()).await.unwrap_err();
    assert_eq!(err.reason_code(), "token_malformed");

    assert_eq!(bearer_challenge("mcp"), "Bearer realm=\"mcp\"");
}

#[tokio::test]
async fn clock_skew_is_applied() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let resolver = file_resolver(dir.path(), &[&k.rsa]).await;
    let now = now();
    // Default skew is 30 s.
    let just_expired = k.rsa.token(json!({"exp": now - 5}));
    resolver.resolve(token_input(&just_expired)).await.unwrap();
    let almost_valid = k.rsa.token(json!({"nbf": now + 5}));
    resolver.resolve(token_input(&almost_valid)).await.unwrap();
    let long_expired = k.rsa.token(json!({"exp": now - 120}));
    assert_eq!(
        resolver
            .resolve(token_input(&long_expired))
            .await
            .unwrap_err(),
        AuthnError::Expired
    );
}

#[tokio::test]
async fn a_token_without_kid_is_accepted_only_from_a_single_key_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let resolver = file_resolver(dir.path(), &[&k.rsa]).await;
    let token = k.rsa.sign_with_header(&json!({"alg": "RS256"}), &claims());
    resolver.resolve(token_input(&token)).await.unwrap();

    let dir2 = tempfile::tempdir().unwrap();
    let k2 = TestKey::rsa(2, "rsa-2");
    let resolver = file_resolver(dir2.path(), &[&k.rsa, &k2]).await;
    let err = resolver.resolve(token_input(&token)).await.unwrap_err();
    assert_eq!(
        err,
        AuthnError::MissingKid {
            issuer: ISSUER.into()
        }
    );
}

#[tokio::test]
async fn a_repeated_token_is_served_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys();
    let resolver = file_resolver(dir.path(), &[&k.ec]).await;
    let token = k.ec.sign(&claims());
    let first = resolver.resolve(token_input(&token)).await.unwrap();
    assert_eq!(resolver.cached_tokens(), 1);
    let second = resolver.resolve(token_input(&token)).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(resolver.cached_tokens(), 1);

    // A token already past `exp` (accepted within the skew) is not cached.
    let skewed = k.ec.token(json!({"exp": now() - 5}));
    resolver.resolve(token_input(&skewed)).await.unwrap();
    assert_eq!(resolver.cached_tokens(), 1);
}

#[tokio::test]
async fn a_missing_or_bad_jwks_file_fails_startup() {
    let dir = tempfile::tempdir().unwrap();
    let mut issuer = issuer_config();
    issuer.jwks_file = Some("absent.json".into());
    let config = IdentityConfig {
        issuers: vec![issuer.clone()],
        ..Default::default()
    };
    let err = Resolver::new(&config, dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("issuer `https://idp.corp.example`: cannot use `jwks_file`: cannot read"),
        "{err}"
    );
    assert!(!err.contains('\n'));

    std::fs::write(
        dir.path().join("absent.json"),
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    )
    .unwrap();
    let err = Resolver::new(&config, dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "issuer `https://idp.corp.example`: cannot use `jwks_file`: document has no usable signature key"
    );
    assert!(!err.contains("c2VjcmV0"));
}
