//! `@shadow` policies: evaluated, not enforced.
//!
//! A policy annotated `@shadow` (with any value, or none) is loaded, validated and
//! digested like every other, but the snapshot that decides ([`Snapshot::policies`]
//! and its index) leaves it out. The snapshot keeps a second view of the same
//! files, [`Snapshot::all_enforced`], whose policy set holds every policy: the
//! service decides sampled requests on it too, off the request's path, and reports
//! where the two differ (a shadow `forbid` that would have denied, a shadow
//! `permit` that would have allowed).
//!
//! The two views share nothing mutable and differ only in their policy set and
//! its index, so a decision on the enforced view is exactly the decision the
//! directory would give without its `@shadow` policies, and one on the
//! all-enforced view exactly the decision it would give with the annotation
//! removed.

use cedar_policy::{Policy, PolicySet};

/// The annotation that makes a policy evaluated but not enforced.
pub const SHADOW_ANNOTATION: &str = "shadow";

/// Whether `policy` is annotated `@shadow`.
pub fn is_shadow(policy: &Policy) -> bool {
    policy.annotation(SHADOW_ANNOTATION).is_some()
}

/// `all` without its `@shadow` policies, and their ids (sorted); `None` when it
/// has none (the set is enforced as it is). Templates are kept: they are never
/// evaluated themselves, and a link of one is dropped with the template's
/// annotation.
pub(super) fn split(all: &PolicySet) -> Result<Option<(PolicySet, Vec<String>)>, String> {
    let mut shadow: Vec<String> = all
        .policies()
        .filter(|p| is_shadow(p))
        .map(|p| p.id().to_string())
        .collect();
    if shadow.is_empty() {
        return Ok(None);
    }
    shadow.sort();
    let mut enforced = PolicySet::new();
    for t in all.templates() {
        enforced
            .add_template(t.clone())
            .map_err(|e| format!("cannot copy template `{}`: {e}", t.id()))?;
    }
    for p in all.policies().filter(|p| !is_shadow(p)) {
        match p.template_id() {
            None => enforced
                .add(p.clone())
                .map_err(|e| format!("cannot copy policy `{}`: {e}", p.id()))?,
            Some(template) => {
                let values = p.template_links().unwrap_or_default().into_iter().collect();
                enforced
                    .link(template.clone(), p.id().clone(), values)
                    .map_err(|e| format!("cannot link policy `{}`: {e}", p.id()))?;
            }
        }
    }
    Ok(Some((enforced, shadow)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn set(text: &str) -> PolicySet {
        PolicySet::from_str(text).expect("valid policies")
    }

    #[test]
    fn a_set_without_shadow_policies_is_enforced_as_it_is() {
        let all = set("permit (principal, action, resource);");
        assert!(split(&all).expect("split").is_none());
    }

    #[test]
    fn shadow_policies_with_or_without_a_value_are_left_out() {
        let all = set(r#"
            permit (principal, action, resource);
            @shadow
            forbid (principal, action, resource);
            @shadow("landing on 2026-12-01")
            permit (principal, action, resource) when { false };
            @reason("not a shadow")
            forbid (principal, action, resource) when { false };
        "#);
        let (enforced, shadow) = split(&all).expect("split").expect("some shadow");
        assert_eq!(shadow, vec!["policy1", "policy2"]);
        let kept: Vec<String> = enforced.policies().map(|p| p.id().to_string()).collect();
        assert_eq!(kept, vec!["policy0", "policy3"]);
        assert_eq!(all.policies().count(), 4, "the full set is untouched");
    }
}
