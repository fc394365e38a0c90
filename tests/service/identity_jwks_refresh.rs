//! JWKS served over HTTP by a real server on 127.0.0.1: key rotation, refresh on unknown
//! `kid` (rate-limited), periodic refresh, and keeping the last good keys through outages.

use std::time::Duration;

use mcp_authz::identity::{AuthnError, IdentityConfig, IdentityInput, JwtSettings, Resolver};
use serde_json::{Value, json};

use crate::support::eventually;
use crate::support::tokens::*;

async fn url_resolver(server: &JwksServer, refresh_secs: u64, min_refresh_secs: u64) -> Resolver {
    resolver_for(server.url(), refresh_secs, min_refresh_secs).await
}

async fn resolver_for(url: String, refresh_secs: u64, min_refresh_secs: u64) -> Resolver {
    let mut issuer = issuer_config();
    issuer.jwks_url = Some(url);
    let config = IdentityConfig {
        issuers: vec![issuer],
        jwt: JwtSettings {
            jwks_refresh_secs: refresh_secs,
            jwks_min_refresh_secs: min_refresh_secs,
            ..Default::default()
        },
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    Resolver::new(&config, dir.path()).await.unwrap()
}

async fn resolve(resolver: &Resolver, token: &str) -> Result<(), AuthnError> {
    resolver
        .resolve(IdentityInput {
            bearer_token: Some(token),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn rotation_is_followed_and_the_last_good_keys_survive_an_outage() {
    let k1 = TestKey::rsa(1, "k1");
    let k2 = TestKey::ec(1, "k2");
    let mut server = JwksServer::start(jwks(&[&k1])).await;
    let resolver = url_resolver(&server, 3600, 3600).await;
    assert_eq!(server.hits(), 1, "fetched once at start");
    assert!(resolver.jwks_ready());

    let t1 = k1.sign(&claims());
    resolve(&resolver, &t1).await.unwrap();
    resolve(&resolver, &t1).await.unwrap(); // cached
    assert_eq!(server.hits(), 1);

    // The identity provider rotates: k1 out, k2 in.
    server.set(jwks(&[&k2]));
    let t2 = k2.sign(&claims());
    resolve(&resolver, &t2)
        .await
        .expect("new kid accepted after an on-demand refresh");
    assert_eq!(server.hits(), 2);

    // k1 was removed: its token is refused, even though it had been cached.
    assert_eq!(
        resolve(&resolver, &t1).await.unwrap_err(),
        AuthnError::UnknownKid {
            issuer: ISSUER.into(),
            kid: "k1".into()
        }
    );
    assert_eq!(
        server.hits(),
        2,
        "second unknown-kid refresh is rate-limited"
    );

    let stats = &resolver.jwks_stats()[0];
    assert_eq!(
        (stats.refresh_successes, stats.refresh_failures, stats.keys),
        (2, 0, 1)
    );
    assert!(stats.last_success.is_some());

    // The identity provider goes away: refreshes fail, the last good keys stay.
    server.stop().await;
    assert!(!resolver.refresh_jwks().await);
    let stats = &resolver.jwks_stats()[0];
    assert_eq!(
        (stats.refresh_successes, stats.refresh_failures, stats.keys),
        (2, 1, 1)
    );
    resolve(&resolver, &t2).await.unwrap();
    let fresh = k2.token(json!({"jti": "not-cached"}));
    resolve(&resolver, &fresh)
        .await
        .expect("last good keys still verify");
    assert!(resolver.jwks_ready());
}

#[tokio::test]
async fn unknown_kid_refreshes_are_rate_limited() {
    let k1 = TestKey::rsa(1, "k1");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let resolver = url_resolver(&server, 3600, 3600).await;
    assert_eq!(server.hits(), 1);

    // 20 concurrent requests with unknown kids, then 20 more one after the other.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let resolver = resolver.clone();
        let token = k1.sign_with_header(
            &json!({"alg": "RS256", "kid": format!("guess-{i}")}),
            &claims(),
        );
        tasks.spawn(async move { resolve(&resolver, &token).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(
            result.unwrap().unwrap_err().reason_code(),
            "token_unknown_kid"
        );
    }
    for i in 20..40 {
        let token = k1.sign_with_header(
            &json!({"alg": "RS256", "kid": format!("guess-{i}")}),
            &claims(),
        );
        assert_eq!(
            resolve(&resolver, &token).await.unwrap_err().reason_code(),
            "token_unknown_kid"
        );
    }
    assert_eq!(
        server.hits(),
        2,
        "one refresh at start, one for all the unknown kids"
    );
    resolve(&resolver, &k1.sign(&claims())).await.unwrap();
}

#[tokio::test]
async fn keys_are_refreshed_periodically() {
    let k1 = TestKey::rsa(1, "k1");
    let k2 = TestKey::ed(1, "k2");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let resolver = url_resolver(&server, 1, 1).await;
    server.set(jwks(&[&k1, &k2]));
    // No token is presented meanwhile: only the background task can fetch.
    let refreshed = eventually(Duration::from_secs(20), || {
        let resolver = resolver.clone();
        async move { resolver.jwks_stats()[0].keys == 2 }
    })
    .await;
    assert!(refreshed, "periodic refresh picked up the new key");
    assert!(server.hits() >= 2);
    let hits = server.hits();
    resolve(&resolver, &k2.sign(&claims())).await.unwrap();
    assert!(server.hits() <= hits + 1);
}

#[tokio::test]
async fn an_issuer_unreachable_at_start_recovers() {
    let k1 = TestKey::ec(2, "k1");
    // Null makes the test server answer 503.
    let server = JwksServer::start(Value::Null).await;
    let resolver = url_resolver(&server, 2, 1).await;
    assert!(!resolver.jwks_ready());
    assert_eq!(resolver.jwks_stats()[0].refresh_failures, 1);
    let token = k1.sign(&claims());
    assert_eq!(
        resolve(&resolver, &token).await.unwrap_err(),
        AuthnError::JwksUnavailable {
            issuer: ISSUER.into()
        }
    );

    server.set(jwks(&[&k1]));
    let recovered = eventually(Duration::from_secs(20), || {
        let resolver = resolver.clone();
        let token = token.clone();
        async move { resolve(&resolver, &token).await.is_ok() }
    })
    .await;
    assert!(recovered, "keys fetched once the server answers");
    assert!(resolver.jwks_ready());
}

#[tokio::test]
async fn a_bad_document_keeps_the_last_good_keys() {
    let k1 = TestKey::rsa(1, "k1");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let resolver = url_resolver(&server, 3600, 3600).await;
    let token = k1.sign(&claims());

    for bad in [
        json!({"keys": []}),
        json!("not a jwks"),
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
    ] {
        server.set(bad);
        assert!(!resolver.refresh_jwks().await);
        let fresh = k1.token(json!({"jti": format!("{}", server.hits())}));
        resolve(&resolver, &fresh).await.unwrap();
    }
    resolve(&resolver, &token).await.unwrap();
    let stats = &resolver.jwks_stats()[0];
    assert_eq!(
        (stats.refresh_successes, stats.refresh_failures, stats.keys),
        (1, 3, 1)
    );
}

#[tokio::test]
async fn redirects_are_followed_but_never_down_to_plain_http() {
    let k1 = TestKey::rsa(1, "k1");
    let server = JwksServer::start(jwks(&[&k1])).await;
    let resolver = resolver_for(server.url_for("/moved"), 3600, 3600).await;
    assert!(resolver.jwks_ready());
    resolve(&resolver, &k1.sign(&claims())).await.unwrap();

    let resolver = resolver_for(server.url_for("/downgrade"), 3600, 3600).await;
    assert!(!resolver.jwks_ready());
    let stats = &resolver.jwks_stats()[0];
    assert_eq!(stats.refresh_failures, 1);
    assert_eq!(
        stats.last_error.as_deref(),
        Some("server answered with status 307")
    );
}
