//! `@scopes("docs.write")`: the token scopes a permit policy needs, for step-up.
//!
//! A `permit` policy may say which OAuth scopes it needs with the annotation
//! `@scopes("a b")` (space-separated scope tokens, RFC 6749 §3.3). The policy's
//! own condition usually checks them (`context.scopes.contains("docs.write")`);
//! the annotation tells the service which scopes to name when a request is denied
//! only for want of them: on a deny of a request with a token, the service decides
//! once more with the token's scopes and every annotated scope added; if that
//! allows, the 403 says `error="insufficient_scope"` with the token's scopes and
//! those of the annotated policies that allowed it (MCP 2025-11-25 step-up).
//!
//! Checked at load: on a `forbid` policy, empty, or not a list of scope tokens,
//! the annotation is an error.

use std::collections::BTreeSet;

use cedar_policy::{Effect, Policy, PolicyId, PolicySet};

use super::{PolicyOrigin, Problem};

/// The annotation naming the scopes a permit policy needs.
pub const SCOPES_ANNOTATION: &str = "scopes";

fn scope_token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// The scopes `policy` declares it needs, if it is annotated (and the annotation
/// is well formed).
fn scopes_of(policy: &Policy) -> Option<Vec<String>> {
    let value = policy.annotation(SCOPES_ANNOTATION)?;
    parse(value).ok()
}

/// The scopes of an annotation value, or why it is refused.
fn parse(value: &str) -> Result<Vec<String>, String> {
    if value.trim().is_empty() {
        return Err("`@scopes` names no scope".to_owned());
    }
    let scopes: Vec<String> = value.split(' ').map(str::to_owned).collect();
    if let Some(bad) = scopes.iter().find(|s| !scope_token_ok(s)) {
        return Err(format!(
            "`@scopes(\"{value}\")`: `{bad}` is not a scope (scopes are separated by one space; no quotes or backslashes)"
        ));
    }
    Ok(scopes)
}

/// The `@scopes` of a policy set, read once per snapshot (reading an annotation
/// runs Cedar's parser on its name): each declaring policy's scopes, and every
/// scope any of them declares.
#[derive(Debug, Default)]
pub struct PolicyScopes {
    by_policy: std::collections::HashMap<PolicyId, Vec<String>, foldhash::fast::RandomState>,
    all: Vec<String>,
}

impl PolicyScopes {
    /// The scopes the policies of `policies` declare (`@scopes`, well formed).
    pub fn of(policies: &PolicySet) -> Self {
        let by_policy: std::collections::HashMap<_, _, _> = policies
            .policies()
            .filter_map(|p| Some((p.id().clone(), scopes_of(p)?)))
            .collect();
        let all = by_policy
            .values()
            .flatten()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        Self { by_policy, all }
    }

    /// Whether no policy declares scopes.
    pub fn is_empty(&self) -> bool {
        self.by_policy.is_empty()
    }

    /// Whether policy `id` declares scopes.
    pub fn declares(&self, id: &PolicyId) -> bool {
        self.by_policy.contains_key(id)
    }

    /// The scopes policy `id` declares (none if it declares none).
    pub fn of_policy(&self, id: &PolicyId) -> &[String] {
        self.by_policy.get(id).map_or(&[], Vec::as_slice)
    }

    /// Every scope some policy declares (sorted, once each): what a step-up
    /// evaluation adds to a token's scopes.
    pub fn all(&self) -> &[String] {
        &self.all
    }

    /// The ids of the policies that declare scopes.
    #[cfg(test)]
    fn policies(&self) -> impl Iterator<Item = &PolicyId> {
        self.by_policy.keys()
    }
}

/// The problems of the `@scopes` annotations of `policies`.
pub(super) fn check(
    policies: &PolicySet,
    origins: &std::collections::HashMap<String, PolicyOrigin>,
    problems: &mut Vec<Problem>,
) {
    for p in policies.policies() {
        let Some(value) = p.annotation(SCOPES_ANNOTATION) else {
            continue;
        };
        let id = p.id().to_string();
        let why = if p.effect() == Effect::Forbid {
            Some(
                "`@scopes` is for permit policies: a forbid is never lifted by more scope"
                    .to_owned(),
            )
        } else {
            parse(value).err()
        };
        if let Some(why) = why {
            let origin = origins.get(&id);
            let mut problem = Problem::error(
                origin.map(|o| o.file.as_str()),
                format!("policy `{id}`: {why}"),
            );
            problem.line = origin.map(|o| o.line);
            problem.column = origin.map(|o| o.column);
            problem.policy_id = Some(id);
            problems.push(problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn annotations_are_parsed_and_checked() {
        assert_eq!(parse("docs.write"), Ok(vec!["docs.write".to_owned()]));
        assert_eq!(
            parse("docs.read docs.write"),
            Ok(vec!["docs.read".to_owned(), "docs.write".to_owned()])
        );
        for bad in ["", " ", "a  b", " a", "a\"b", "a\\b", "a\tb"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let set = PolicySet::from_str(
            r#"@scopes("docs.write") permit (principal, action, resource);
               @scopes("x docs.write") permit (principal, action, resource);
               permit (principal, action, resource);"#,
        )
        .unwrap();
        let scoped_set = PolicyScopes::of(&set);
        assert_eq!(scoped_set.all(), vec!["docs.write", "x"]);
        let mut scoped: Vec<String> = scoped_set.policies().map(ToString::to_string).collect();
        scoped.sort();
        assert_eq!(scoped, ["policy0", "policy1"]);
        let mut problems = Vec::new();
        check(&set, &Default::default(), &mut problems);
        assert!(problems.is_empty());
        let set = PolicySet::from_str(
            r#"@scopes("docs.write") forbid (principal, action, resource);
               @scopes("") permit (principal, action, resource);"#,
        )
        .unwrap();
        check(&set, &Default::default(), &mut problems);
        let messages: Vec<_> = problems.iter().map(|p| p.message.clone()).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(
            messages.iter().any(|m| m.contains("for permit policies")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("names no scope")),
            "{messages:?}"
        );
    }
}
