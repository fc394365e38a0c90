//! `Resolver::resolve`: SPIFFE ids, tokens, trusted identities and how they combine.

use mcp_authz::identity::{
    AuthnError, Identity, IdentityConfig, IdentityInput, IdentitySource, Resolver,
    SpiffeApplicationId, SpiffeConfig, SpiffeIdError, TrustedIdentity,
};
use serde_json::json;

use crate::support::tokens::*;

const GATEWAY: &str = "spiffe://corp.example/ns/mesh/sa/mcp-gateway";

async fn resolver_with(dir: &std::path::Path, key: &TestKey, spiffe: SpiffeConfig) -> Resolver {
    std::fs::write(dir.join("jwks.json"), jwks(&[key]).to_string()).unwrap();
    let mut issuer = issuer_config();
    issuer.jwks_file = Some("jwks.json".into());
    let config = IdentityConfig {
        issuers: vec![issuer],
        spiffe,
        ..Default::default()
    };
    Resolver::new(&config, dir).await.unwrap()
}

fn spiffe_config() -> SpiffeConfig {
    SpiffeConfig {
        trust_domains: vec!["corp.example".into(), "partner.example".into()],
        forwarders: vec![GATEWAY.into()],
        ..Default::default()
    }
}

async fn setup() -> (tempfile::TempDir, TestKey, Resolver) {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::rsa(1, "rsa-1");
    let resolver = resolver_with(dir.path(), &key, spiffe_config()).await;
    (dir, key, resolver)
}

async fn spiffe(resolver: &Resolver, id: &str) -> Result<Identity, AuthnError> {
    resolver
        .resolve(IdentityInput {
            spiffe_id: Some(id),
            ..Default::default()
        })
        .await
}

#[tokio::test]
async fn nothing_presented_gives_an_empty_identity() {
    let (_dir, _key, resolver) = setup().await;
    let id = resolver.resolve(IdentityInput::default()).await.unwrap();
    assert_eq!(id, Identity::default());
    assert!(id.is_anonymous());
}

#[tokio::test]
async fn spiffe_ids_map_to_applications() {
    let (_dir, _key, resolver) = setup().await;
    let id = spiffe(&resolver, "spiffe://corp.example/ns/prod/sa/corpassist")
        .await
        .unwrap();
    assert_eq!(id.application.as_deref(), Some("corpassist"));
    assert_eq!(id.user, None);
    assert_eq!(
        id.spiffe_id.as_deref(),
        Some("spiffe://corp.example/ns/prod/sa/corpassist")
    );

    let id = spiffe(&resolver, "spiffe://partner.example/billing/agent")
        .await
        .unwrap();
    assert_eq!(id.application.as_deref(), Some("billing/agent"));

    // A forwarder (the gateway) is authenticated but names no application.
    let id = spiffe(&resolver, GATEWAY).await.unwrap();
    assert_eq!(id.application, None);
    assert_eq!(id.spiffe_id.as_deref(), Some(GATEWAY));
}

#[tokio::test]
async fn spiffe_mapping_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let key = TestKey::rsa(1, "rsa-1");
    let cfg = SpiffeConfig {
        trust_domains: vec!["corp.example".into()],
        application_id: SpiffeApplicationId::FullId,
        ..Default::default()
    };
    let resolver = resolver_with(dir.path(), &key, cfg).await;
    let id = spiffe(&resolver, "spiffe://corp.example/ns/prod/sa/corpassist")
        .await
        .unwrap();
    assert_eq!(
        id.application.as_deref(),
        Some("spiffe://corp.example/ns/prod/sa/corpassist")
    );
}

#[tokio::test]
async fn bad_spiffe_ids_are_refused() {
    let (_dir, _key, resolver) = setup().await;
    let long = format!("spiffe://corp.example/{}", "a/".repeat(1100));
    let cases: Vec<(&str, String, Result<SpiffeIdError, &str>)> = vec![
        (
            "other trust domain",
            "spiffe://evil.example/ns/prod/sa/corpassist".into(),
            Err("evil.example"),
        ),
        (
            "bad scheme",
            "https://corp.example/ns/prod/sa/corpassist".into(),
            Ok(SpiffeIdError::WrongScheme),
        ),
        (
            "empty segment",
            "spiffe://corp.example/ns//sa/corpassist".into(),
            Ok(SpiffeIdError::EmptySegment),
        ),
        (
            "dot dot",
            "spiffe://corp.example/ns/prod/../sa/admin".into(),
            Ok(SpiffeIdError::DotSegment),
        ),
        (
            "percent-encoded dot dot",
            "spiffe://corp.example/ns/prod/%2e%2e/sa/admin".into(),
            Ok(SpiffeIdError::BadPathChar),
        ),
        (
            "percent-encoded slash",
            "spiffe://corp.example/ns/prod%2Fsa/admin".into(),
            Ok(SpiffeIdError::BadPathChar),
        ),
        (
            "percent-encoded trust domain",
            "spiffe://corp%2Eexample/ns/prod/sa/admin".into(),
            Ok(SpiffeIdError::BadTrustDomainChar),
        ),
        ("over-long", long, Ok(SpiffeIdError::TooLong)),
        (
            "port",
            "spiffe://corp.example:443/ns/prod/sa/corpassist".into(),
            Ok(SpiffeIdError::Port),
        ),
        (
            "userinfo",
            "spiffe://admin@corp.example/ns/prod/sa/x".into(),
            Ok(SpiffeIdError::UserInfo),
        ),
        (
            "query",
            "spiffe://corp.example/ns/prod/sa/corpassist?x=1".into(),
            Ok(SpiffeIdError::Query),
        ),
        (
            "fragment",
            "spiffe://corp.example/ns/prod/sa/corpassist#x".into(),
            Ok(SpiffeIdError::Fragment),
        ),
        (
            "uppercase trust domain",
            "spiffe://Corp.Example/ns/prod/sa/corpassist".into(),
            Ok(SpiffeIdError::UppercaseTrustDomain),
        ),
        (
            "no path",
            "spiffe://corp.example".into(),
            Ok(SpiffeIdError::MissingPath),
        ),
    ];
    for (name, id, expected) in cases {
        let err = spiffe(&resolver, &id).await.expect_err(name);
        match expected {
            Ok(parse_error) => {
                assert_eq!(err, AuthnError::InvalidSpiffeId(parse_error), "{name}");
                assert_eq!(err.reason_code(), "spiffe_invalid_id");
            }
            Err(td) => {
                assert_eq!(
                    err,
                    AuthnError::UntrustedTrustDomain {
                        trust_domain: td.into()
                    },
                    "{name}"
                );
                assert_eq!(err.reason_code(), "spiffe_untrusted_domain");
            }
        }
        assert!(!err.concerns_token());
        assert_eq!(err.www_authenticate("mcp"), "Bearer realm=\"mcp\"");
    }
}

#[tokio::test]
async fn token_and_spiffe_applications_must_agree() {
    let (_dir, key, resolver) = setup().await;
    let token = key.sign(&claims()); // azp = corpassist

    let id = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            spiffe_id: Some("spiffe://corp.example/ns/prod/sa/corpassist"),
            trusted: None,
        })
        .await
        .unwrap();
    assert_eq!(id.user.as_deref(), Some("alice"));
    assert_eq!(id.application.as_deref(), Some("corpassist"));

    let err = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            spiffe_id: Some("spiffe://corp.example/ns/prod/sa/hr-bot"),
            trusted: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthnError::ApplicationMismatch {
            first: IdentitySource::Token,
            first_id: "corpassist".into(),
            second: IdentitySource::Spiffe,
            second_id: "hr-bot".into(),
        }
    );
    assert_eq!(err.reason_code(), "application_mismatch");
    assert!(
        err.www_authenticate("mcp")
            .contains("error=\"invalid_token\"")
    );

    // Through the gateway (a forwarder) the token's application stands.
    let id = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            spiffe_id: Some(GATEWAY),
            trusted: None,
        })
        .await
        .unwrap();
    assert_eq!(id.application.as_deref(), Some("corpassist"));

    // A token without an application takes the SPIFFE one.
    let service = key.token(json!({"azp": null, "sub": null}));
    let id = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&service),
            spiffe_id: Some("spiffe://corp.example/ns/prod/sa/batch"),
            trusted: None,
        })
        .await
        .unwrap();
    assert_eq!((id.user, id.application.as_deref()), (None, Some("batch")));
}

#[tokio::test]
async fn an_invalid_token_is_never_ignored() {
    let (_dir, key, resolver) = setup().await;
    let expired = key.token(json!({"exp": now() - 3600}));
    let err = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&expired),
            spiffe_id: Some("spiffe://corp.example/ns/prod/sa/corpassist"),
            trusted: Some(TrustedIdentity {
                application: Some("corpassist".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(err, AuthnError::Expired);

    let err = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&key.sign(&claims())),
            spiffe_id: Some("spiffe://evil.example/ns/prod/sa/corpassist"),
            trusted: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.reason_code(), "spiffe_untrusted_domain");
}

#[tokio::test]
async fn groups_come_from_the_configured_claim() {
    let (_dir, key, resolver) = setup().await;
    let token = key.token(json!({"groups": ["engineering", "contractors"]}));
    let id = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(id.groups, vec!["engineering", "contractors"]);

    let token = key.token(json!({"groups": "finance project-ops"}));
    let id = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(id.groups, vec!["finance", "project-ops"]);

    // `roles` is not the configured claim.
    let token = key.token(json!({"roles": ["admin"]}));
    let id = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(id.groups.is_empty());
}

#[tokio::test]
async fn scopes_come_from_scope_and_scp() {
    let (_dir, key, resolver) = setup().await;
    let resolve = |claims: serde_json::Value| {
        let token = key.sign(&claims);
        let resolver = resolver.clone();
        async move {
            resolver
                .resolve(IdentityInput {
                    bearer_token: Some(&token),
                    ..Default::default()
                })
                .await
                .unwrap()
        }
    };
    let id = resolve(claims_with(json!({"scope": "docs:read  projects:read"}))).await;
    assert_eq!(id.scopes, vec!["docs:read", "projects:read"]);
    let id = resolve(claims_with(json!({"scp": ["docs:read", "docs:write"]}))).await;
    assert_eq!(id.scopes, vec!["docs:read", "docs:write"]);
    let id = resolve(claims_with(json!({"scp": "issues:write"}))).await;
    assert_eq!(id.scopes, vec!["issues:write"]);
    let id = resolve(claims_with(json!({"scope": "a b", "scp": ["b", "c"]}))).await;
    assert_eq!(id.scopes, vec!["a", "b", "c"]);
    let id = resolve(claims()).await;
    assert!(id.scopes.is_empty());

    let token = key.token(json!({"scp": 7}));
    let err = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AuthnError::InvalidClaim {
            claim: "scp".into(),
            expected: "an array of strings or a space-separated string"
        }
    );
}

#[tokio::test]
async fn trusted_identities_combine_with_tokens() {
    let (_dir, key, resolver) = setup().await;
    let trusted = |user: &str, app: &str, groups: &[&str]| TrustedIdentity {
        user: Some(user.into()),
        application: Some(app.into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };

    // Trusted alone.
    let id = resolver
        .resolve(IdentityInput {
            trusted: Some(trusted("bob", "corpassist", &["finance"])),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(id.user.as_deref(), Some("bob"));
    assert_eq!(id.application.as_deref(), Some("corpassist"));
    assert_eq!(id.groups, vec!["finance"]);
    assert_eq!(id.issuer, None);

    // Empty strings mean "not given".
    let id = resolver
        .resolve(IdentityInput {
            trusted: Some(trusted("", "", &[])),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(id.is_anonymous());

    // Consistent token and trusted identity: groups are united, scopes come from the token.
    let token = key.token(json!({"groups": ["engineering"], "scope": "docs:read"}));
    let id = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            trusted: Some(trusted(
                "alice",
                "corpassist",
                &["project-ops", "engineering"],
            )),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(id.groups, vec!["engineering", "project-ops"]);
    assert_eq!(id.scopes, vec!["docs:read"]);
    assert_eq!(id.issuer.as_deref(), Some(ISSUER));

    // Inconsistent ones fail.
    let err = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            trusted: Some(trusted("mallory", "corpassist", &[])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.reason_code(), "user_mismatch");
    assert_eq!(
        err.to_string(),
        "user `alice` from the token differs from `mallory` from the trusted caller"
    );
    let err = resolver
        .resolve(IdentityInput {
            bearer_token: Some(&token),
            trusted: Some(trusted("alice", "hr-bot", &[])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.reason_code(), "application_mismatch");

    // Trusted and SPIFFE must agree too; no token is involved then.
    let err = resolver
        .resolve(IdentityInput {
            spiffe_id: Some("spiffe://corp.example/ns/prod/sa/hr-bot"),
            trusted: Some(trusted("alice", "corpassist", &[])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.reason_code(), "application_mismatch");
    assert!(!err.concerns_token());
}
