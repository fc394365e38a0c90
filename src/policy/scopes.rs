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

use cedar_policy::{Effect, Policy, PolicySet};

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

/// The scopes each policy declaring them needs, by policy id, in a map hashed with
/// a fast seeded hash.
pub type PolicyScopes =
    std::collections::HashMap<cedar_policy::PolicyId, Vec<String>, foldhash::fast::RandomState>;

/// The policies of `policies` that declare their scopes (`@scopes`, well formed),
/// with those scopes: read once per snapshot, since reading an annotation runs
/// Cedar's parser on its name.
pub fn scoped_policies(policies: &PolicySet) -> PolicyScopes {
    policies
        .policies()
        .filter_map(|p| Some((p.id().clone(), scopes_of(p)?)))
        .collect()
}

/// Every scope some policy of `scoped` declares (sorted, once each).
pub fn all_scopes(scoped: &PolicyScopes) -> Vec<String> {
    scoped
        .values()
        .flatten()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
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
        let scoped_set = scoped_policies(&set);
        assert_eq!(all_scopes(&scoped_set), vec!["docs.write", "x"]);
        let mut scoped: Vec<String> = scoped_set.keys().map(ToString::to_string).collect();
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
