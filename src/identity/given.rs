//! Token facts given by hand rather than by a verified token: `check --group/--scope/--claim`
//! and the cases of a policy test suite. One rule for both, so that a test decides what
//! `check` decides for the same facts.

use serde_json::{Map, Value};

use super::Identity;

/// A user, an application and what a verified token would say about them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GivenFacts {
    /// The `Mcp::User` id, if there is a user.
    pub user: Option<String>,
    /// The `Mcp::Application` id, if there is one.
    pub application: Option<String>,
    /// Groups of the user, as a token's `groups` claim gives them.
    pub groups: Vec<String>,
    /// Token scopes (`context.scopes`).
    pub scopes: Vec<String>,
    /// Token claims (`context.claims`).
    pub claims: Map<String, Value>,
}

/// Why given facts cannot stand for a verified token. The caller names its own
/// flags or keys in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GivenError {
    /// Groups without a user: groups are the user's.
    GroupsWithoutUser,
    /// An empty group name.
    EmptyGroup,
    /// A scope that is empty or has white space (the scope).
    BadScope(String),
}

impl GivenFacts {
    /// Whether any token fact (group, scope, claim) is given.
    pub fn has_token_facts(&self) -> bool {
        !(self.groups.is_empty() && self.scopes.is_empty() && self.claims.is_empty())
    }

    /// The identity these facts make: any token fact stands for a verified token, so
    /// the token facts are set (scopes possibly empty) as a token's would be; none of
    /// them, no token facts. Put into a request with [`Identity::apply_to`], the rule
    /// every interface applies to a verified token.
    pub fn identity(&self) -> Result<Identity, GivenError> {
        if !self.groups.is_empty() && self.user.is_none() {
            return Err(GivenError::GroupsWithoutUser);
        }
        if self.groups.iter().any(String::is_empty) {
            return Err(GivenError::EmptyGroup);
        }
        if let Some(s) = self
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.chars().any(char::is_whitespace))
        {
            return Err(GivenError::BadScope(s.clone()));
        }
        Ok(Identity {
            user: self.user.clone(),
            application: self.application.clone(),
            groups: self.groups.clone(),
            scopes: self.scopes.clone(),
            claims: self.claims.clone(),
            // Not a verified issuer: what makes `Identity::token_facts` give the facts.
            issuer: self
                .has_token_facts()
                .then(|| "given token facts".to_owned()),
            spiffe_id: None,
            audience: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_stand_for_a_token_only_when_given() {
        let none = GivenFacts {
            user: Some("alice".into()),
            ..GivenFacts::default()
        };
        assert!(none.identity().unwrap().token_facts().is_none());
        let scoped = GivenFacts {
            scopes: vec!["docs.read".into()],
            ..none.clone()
        };
        let facts = scoped.identity().unwrap().token_facts().unwrap();
        assert_eq!(facts.scopes, ["docs.read"]);
        let groups = GivenFacts {
            user: None,
            groups: vec!["x".into()],
            ..GivenFacts::default()
        };
        assert_eq!(groups.identity(), Err(GivenError::GroupsWithoutUser));
        let bad = GivenFacts {
            scopes: vec!["a b".into()],
            ..none
        };
        assert_eq!(bad.identity(), Err(GivenError::BadScope("a b".into())));
    }
}
