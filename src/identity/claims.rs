//! From verified token claims to ids: user, application, groups, scopes and copied claims.

use serde_json::{Map, Value};

use super::config::ValidIssuer;
use super::error::{AuthnError, shown};

/// What a verified token says about its bearer.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TokenIdentity {
    pub issuer: String,
    pub user: Option<String>,
    pub application: Option<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
    pub claims: Map<String, Value>,
    /// The token's `aud`, as checked by the verifier (filled there).
    pub audience: super::TokenAudience,
}

const ID_EXPECTED: &str = "a non-empty string";
const LIST_EXPECTED: &str = "an array of strings or a space-separated string";

/// Maps verified claims to a [`TokenIdentity`] under the issuer's configuration.
///
/// - user: `user_claim`; absent (or `null`) gives no user (a service token);
/// - application: the first of `application_claims` that is present;
/// - groups: `groups_claim` when configured, an array of strings or a space-separated string;
/// - scopes: `scope` and `scp`, each an array of strings or a space-separated string;
/// - claims: each of `context_claims` that is present, as its JSON value.
///
/// A present claim of the wrong type (or an empty id) is an error, never silently dropped.
pub(crate) fn map_claims(
    cfg: &ValidIssuer,
    claims: &Map<String, Value>,
) -> Result<TokenIdentity, AuthnError> {
    let user = id_claim(claims, &cfg.user_claim)?;
    let mut application = None;
    for name in &cfg.application_claims {
        if let Some(id) = id_claim(claims, name)? {
            application = Some(id);
            break;
        }
    }
    let mut groups = Vec::new();
    if let Some(name) = &cfg.groups_claim {
        list_claim(claims, name, &mut groups)?;
    }
    let mut scopes = Vec::new();
    list_claim(claims, "scope", &mut scopes)?;
    list_claim(claims, "scp", &mut scopes)?;
    let mut copied = Map::new();
    for name in &cfg.context_claims {
        if let Some(value) = claims.get(name).filter(|v| !v.is_null()) {
            copied.insert(name.clone(), value.clone());
        }
    }
    Ok(TokenIdentity {
        issuer: cfg.issuer.clone(),
        user,
        application,
        groups,
        scopes,
        claims: copied,
        audience: super::TokenAudience::default(),
    })
}

fn invalid(name: &str, expected: &'static str) -> AuthnError {
    AuthnError::InvalidClaim {
        claim: shown(name),
        expected,
    }
}

fn id_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, AuthnError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(invalid(name, ID_EXPECTED)),
    }
}

/// Appends the claim's values to `out`, skipping duplicates.
fn list_claim(
    claims: &Map<String, Value>,
    name: &str,
    out: &mut Vec<String>,
) -> Result<(), AuthnError> {
    let mut push = |item: &str| {
        if !out.iter().any(|existing| existing == item) {
            out.push(item.to_owned());
        }
    };
    match claims.get(name) {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => s.split_ascii_whitespace().for_each(&mut push),
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) if !s.is_empty() => push(s),
                    _ => return Err(invalid(name, LIST_EXPECTED)),
                }
            }
        }
        Some(_) => return Err(invalid(name, LIST_EXPECTED)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ValidIssuer {
        ValidIssuer {
            issuer: "https://idp".into(),
            audiences: vec!["a".into()],
            resources: Vec::new(),
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            jwks_file: None,
            jwks_url: None,
            user_claim: "sub".into(),
            application_claims: vec!["azp".into(), "client_id".into()],
            groups_claim: Some("groups".into()),
            context_claims: vec!["email".into(), "department".into()],
        }
    }

    fn map(value: Value) -> Result<TokenIdentity, AuthnError> {
        map_claims(&cfg(), value.as_object().unwrap())
    }

    #[test]
    fn maps_the_configured_claims() {
        let id = map(json!({
            "sub": "alice", "client_id": "corpassist", "groups": ["eng", "eng", "ops"],
            "scope": "docs:read docs:write", "scp": ["docs:read", "projects:read"],
            "email": "alice@corp.example", "department": {"name": "r&d"}, "other": 1
        }))
        .unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert_eq!(id.application.as_deref(), Some("corpassist"));
        assert_eq!(id.groups, vec!["eng", "ops"]);
        assert_eq!(id.scopes, vec!["docs:read", "docs:write", "projects:read"]);
        assert_eq!(id.claims.len(), 2);
        assert_eq!(id.claims["department"], json!({"name": "r&d"}));
    }

    #[test]
    fn first_present_application_claim_wins() {
        let id = map(json!({"azp": "a1", "client_id": "a2"})).unwrap();
        assert_eq!(id.application.as_deref(), Some("a1"));
        let id = map(json!({"azp": null, "client_id": "a2"})).unwrap();
        assert_eq!(id.application.as_deref(), Some("a2"));
    }

    #[test]
    fn no_user_claim_is_a_service_token() {
        let id = map(json!({"azp": "batch-job"})).unwrap();
        assert_eq!(id.user, None);
        assert!(id.groups.is_empty() && id.scopes.is_empty());
    }

    #[test]
    fn groups_may_be_a_space_separated_string() {
        let id = map(json!({"sub": "bob", "groups": " eng  finance "})).unwrap();
        assert_eq!(id.groups, vec!["eng", "finance"]);
    }

    #[test]
    fn groups_come_only_from_a_configured_claim() {
        let mut c = cfg();
        c.groups_claim = None;
        let id = map_claims(&c, json!({"groups": ["admins"]}).as_object().unwrap()).unwrap();
        assert!(id.groups.is_empty());
    }

    #[test]
    fn wrong_types_are_errors() {
        let cases = [
            (json!({"sub": 42}), "sub"),
            (json!({"sub": ""}), "sub"),
            (json!({"azp": ["x"]}), "azp"),
            (json!({"groups": [1]}), "groups"),
            (json!({"groups": {"a": 1}}), "groups"),
            (json!({"scope": 3}), "scope"),
            (json!({"scp": [""]}), "scp"),
        ];
        for (claims, name) in cases {
            match map(claims) {
                Err(AuthnError::InvalidClaim { claim, .. }) => assert_eq!(claim, name),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
