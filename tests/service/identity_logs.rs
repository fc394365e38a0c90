//! No token, key or secret ever appears in a log line or an error message.
//!
//! One test only: it installs a process-wide tracing subscriber (at TRACE, for every crate)
//! that writes into a buffer, drives every failure path (bad tokens, SPIFFE errors, JWKS
//! documents with private or symmetric keys, a JWKS URL with a secret query, refresh failures)
//! and then searches the buffer for the secrets. The subscriber is process-wide, so the
//! test runs alone in its own process (`support::run_alone`).

use mcp_authz::identity::{IdentityConfig, IdentityInput, JwtSettings, Resolver, TrustedIdentity};
use serde_json::json;

use crate::support::tokens::*;
use crate::support::{Capture, eventually, run_alone};

const HMAC_SECRET: &str = "c3VwZXItc2VjcmV0LWhtYWMta2V5LWRvLW5vdC1sb2c";
const PRIVATE_D: &str = "cHJpdmF0ZS1leHBvbmVudC1tdXN0LW5ldmVyLWJlLWxvZ2dlZA";
const URL_SECRET: &str = "url-query-secret-0123456789";

#[tokio::test]
async fn no_secret_reaches_a_log_line_or_an_error() {
    if run_alone("identity_logs::no_secret_reaches_a_log_line_or_an_error") {
        return;
    }
    let buffer = Capture::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .init();

    let k = keys();
    // The served set: the RSA and EC keys, a JWK carrying a private exponent, a symmetric key.
    let mut with_private = k.ed.public_jwk();
    with_private["d"] = PRIVATE_D.into();
    let mut doc = jwks(&[&k.rsa, &k.rsa_b, &k.ec]);
    doc["keys"].as_array_mut().unwrap().push(with_private);
    doc["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "hmac", "k": HMAC_SECRET}));
    let mut server = JwksServer::start(doc).await;

    let mut issuer = issuer_config();
    issuer.jwks_url = Some(format!("{}?access_token={URL_SECRET}", server.url()));
    let config = IdentityConfig {
        issuers: vec![issuer],
        spiffe: mcp_authz::identity::SpiffeConfig {
            trust_domains: vec!["corp.example".into()],
            ..Default::default()
        },
        jwt: JwtSettings {
            jwks_refresh_secs: 1,
            jwks_min_refresh_secs: 1,
            ..Default::default()
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let resolver = Resolver::new(&config, dir.path()).await.unwrap();

    let mut presented: Vec<String> = Vec::new();
    let mut shown: Vec<String> = vec![format!("{resolver:?}")];

    // Valid tokens, for contrast (and a valid one with a mismatching SPIFFE id).
    for key in [&k.rsa, &k.ec, &k.ed] {
        let token = key.sign(&claims());
        resolver
            .resolve(IdentityInput {
                bearer_token: Some(&token),
                ..Default::default()
            })
            .await
            .unwrap();
        let err = resolver
            .resolve(IdentityInput {
                bearer_token: Some(&token),
                spiffe_id: Some("spiffe://corp.example/ns/x/sa/other-app"),
                trusted: Some(TrustedIdentity::default()),
            })
            .await
            .unwrap_err();
        shown.push(err.to_string());
        presented.push(token);
    }

    // Every bad token (the unknown kid one also triggers an on-demand refresh).
    for (name, token, expected) in bad_tokens(&k) {
        let input = IdentityInput {
            bearer_token: Some(&token),
            ..Default::default()
        };
        shown.push(format!("{input:?}"));
        let err = resolver.resolve(input).await.expect_err(name);
        assert_eq!(err.reason_code(), expected, "{name}");
        shown.extend([
            err.to_string(),
            format!("{err:?}"),
            err.www_authenticate("mcp"),
        ]);
        presented.push(token);
    }

    for id in [
        "spiffe://evil.example/a",
        "spiffe://corp.example/%2e%2e",
        "spiffe://Corp/a",
    ] {
        let err = resolver
            .resolve(IdentityInput {
                spiffe_id: Some(id),
                ..Default::default()
            })
            .await
            .unwrap_err();
        shown.push(err.to_string());
    }

    // The identity provider fails: a forced refresh and the periodic task log failures.
    server.stop().await;
    assert!(!resolver.refresh_jwks().await);
    let failures_logged = eventually(std::time::Duration::from_secs(20), || {
        let resolver = resolver.clone();
        async move { resolver.jwks_stats()[0].refresh_failures >= 2 }
    })
    .await;
    assert!(failures_logged);
    shown.push(format!("{:?}", resolver.jwks_stats()));

    let logs = buffer.text();
    assert!(
        logs.contains("credentials refused"),
        "rejections are logged"
    );
    assert!(
        logs.contains("jwks refresh failed"),
        "refresh failures are logged"
    );
    assert!(
        logs.contains("private key material"),
        "a jwks with `d` is flagged"
    );
    assert!(logs.contains("symmetric keys are never used"));
    assert!(logs.contains("token_unknown_kid"));

    let mut secrets: Vec<String> = vec![HMAC_SECRET.into(), PRIVATE_D.into(), URL_SECRET.into()];
    for key in [&k.rsa, &k.rsa_b, &k.ec, &k.ed, &k.rsa_other] {
        secrets.extend(key.public_material());
        secrets.extend(key.private_material());
    }
    for token in &presented {
        secrets.push(token.clone());
        // Any long piece of a token (its payload and signature, or a whole junk token).
        secrets.extend(
            token
                .split('.')
                .filter(|p| p.len() > 24)
                .map(|p| p[..24].to_owned()),
        );
    }
    shown.push(logs);
    for text in &shown {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "secret `{}...` found in:\n{text}",
                &secret[..12.min(secret.len())]
            );
        }
    }
}
