//! Authoring checks: mistakes Cedar accepts but that would make a policy silently
//! stop guarding what it was written for. One set of rules, applied by [`super::build`]
//! wherever a policy directory is loaded (`validate`, startup, reload):
//!
//! - every validator message names the policy by its stable id (`@id("...")`, else
//!   `<file>:<index>`), not by Cedar's per-file `policyN`;
//! - a `forbid` that Cedar's validator finds impossible (its condition is false for
//!   every valid request, or no action of its scope applies to its principal and
//!   resource) guards nothing: an error; an impossible `permit` stays a warning;
//! - `action == A` (in the scope or a condition) where the schema gives `A` member
//!   actions would stop matching those members: an error that says to use `action in`;
//! - an entity literal the entity data does not define: a warning (tokens and
//!   requests may legitimately supply it, as token groups do);
//! - with [`LoadOptions::deny_warnings`], every warning is an error.

use std::collections::{HashMap, HashSet};

use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityUid, PolicyId, PolicySet, ValidationResult,
    ValidationWarning,
};
use serde_json::Value;

use super::diagnostics::{Problem, Severity};

/// How strictly a policy directory is checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Every warning is an error: the directory is refused if it has any.
    pub deny_warnings: bool,
}

/// One policy (or template) of a file: Cedar's per-file id, its stable id, and
/// where its text starts in the file.
#[derive(Debug, Clone)]
pub(super) struct Located {
    /// Cedar's id in the file's own set (`policy0`, `policy1`, ...).
    pub cedar: PolicyId,
    /// The stable id: `@id("...")`, else `<file>:<index>`.
    pub id: String,
    /// Byte offset of its first character in the file.
    pub offset: usize,
    /// Whether it is a template.
    pub template: bool,
}

/// The stable ids of one file's policies, by Cedar's id.
pub(super) fn ids_by_cedar_id(located: &[Located]) -> HashMap<&PolicyId, &str> {
    located.iter().map(|l| (&l.cedar, l.id.as_str())).collect()
}

/// Cedar's validator names a policy by its per-file id (`for policy `policy3`, ...`):
/// name it by its stable id instead.
fn rename(mut problems: Vec<Problem>, cedar: &PolicyId, id: Option<&str>) -> Vec<Problem> {
    let Some(id) = id else { return problems };
    let from = format!("`{cedar}`");
    let to = format!("`{id}`");
    for p in &mut problems {
        p.message = p.message.replacen(&from, &to, 1);
    }
    problems
}

/// The problems of Cedar's validation of one file (`parsed`), each naming its
/// policy by stable id; an impossible `forbid` is an error.
pub(super) fn validation_problems(
    rel: &str,
    text: &str,
    parsed: &PolicySet,
    result: &ValidationResult,
    ids: &HashMap<&PolicyId, &str>,
) -> Vec<Problem> {
    let mut out = Vec::new();
    for err in result.validation_errors() {
        let problems = Problem::from_diagnostic(err, Some(rel), Some(text), Severity::Error);
        let cedar = err.policy_id();
        out.extend(rename(problems, cedar, ids.get(cedar).copied()));
    }
    for w in result.validation_warnings() {
        let cedar = w.policy_id();
        let no_action = matches!(w, ValidationWarning::InvalidActionApplication(_));
        let impossible = no_action || matches!(w, ValidationWarning::ImpossiblePolicy(_));
        let forbid = effect_of(parsed, cedar) == Some(Effect::Forbid);
        let severity = if impossible && forbid {
            Severity::Error
        } else {
            Severity::Warning
        };
        let mut problems = Problem::from_diagnostic(w, Some(rel), Some(text), severity);
        if impossible && let Some(first) = problems.first_mut() {
            let why = if no_action {
                "no action of its scope applies to the principal and resource types of its scope"
            } else {
                "a condition on an attribute the schema does not declare (such as an undeclared \
                 tool argument) is always false"
            };
            first.help = Some(if forbid {
                format!(
                    "a `forbid` that can never apply guards nothing: {why}; fix the policy or \
                     declare what it tests in the schema"
                )
            } else {
                format!("this `permit` never grants anything: {why}")
            });
        }
        out.extend(rename(problems, cedar, ids.get(cedar).copied()));
    }
    out
}

fn effect_of(parsed: &PolicySet, id: &PolicyId) -> Option<Effect> {
    parsed
        .policy(id)
        .map(cedar_policy::Policy::effect)
        .or_else(|| parsed.template(id).map(cedar_policy::Template::effect))
}

/// `action == A` where `A` has member actions in the schema: an error per policy.
pub(super) fn action_group_equality(
    rel: &str,
    text: &str,
    parsed: &PolicySet,
    located: &[Located],
    groups: &HashSet<EntityUid>,
    problems: &mut Vec<Problem>,
) {
    if groups.is_empty() {
        return;
    }
    for l in located {
        let (constraint, literals, json) = if l.template {
            let Some(t) = parsed.template(&l.cedar) else {
                continue;
            };
            (t.action_constraint(), None, t.to_json().ok())
        } else {
            let Some(p) = parsed.policy(&l.cedar) else {
                continue;
            };
            (p.action_constraint(), Some(p.entity_literals()), None)
        };
        let mut found: Vec<EntityUid> = Vec::new();
        if let ActionConstraint::Eq(a) = &constraint
            && groups.contains(a)
        {
            found.push(a.clone());
        }
        // A condition `action == A`: only policies that name a group at all are
        // written out as JSON to look for one.
        let names_a_group = literals
            .as_ref()
            .is_none_or(|lits| lits.iter().any(|u| groups.contains(u)));
        if names_a_group {
            let json = json.or_else(|| parsed.policy(&l.cedar).and_then(|p| p.to_json().ok()));
            if let Some(conditions) = json.as_ref().and_then(|j| j.get("conditions")) {
                action_equalities(conditions, groups, &mut found);
            }
        }
        found.sort_by_cached_key(ToString::to_string);
        found.dedup();
        for a in found {
            let needle = format!("\"{}\"", a.id().unescaped());
            let at = text
                .get(l.offset..)
                .and_then(|rest| rest.find(&needle))
                .map_or(l.offset, |o| l.offset + o);
            problems.push(
                Problem::error(
                    Some(rel),
                    format!(
                        "policy `{}` tests `action == {a}`, but `{a}` has member actions: the \
                         policy would not match them",
                        l.id
                    ),
                )
                .at_offset(text, at, needle.chars().count())
                .with_help(Some(format!(
                    "write `action in {a}`: it matches `{a}` and every action that is a member of it"
                ))),
            );
        }
    }
}

/// Every `action == A` (either way round) in a policy's JSON conditions where `A`
/// is one of `groups`.
fn action_equalities(value: &Value, groups: &HashSet<EntityUid>, out: &mut Vec<EntityUid>) {
    match value {
        Value::Object(obj) => {
            if let Some(Value::Object(eq)) = obj.get("==")
                && let (Some(left), Some(right)) = (eq.get("left"), eq.get("right"))
            {
                for (var, lit) in [(left, right), (right, left)] {
                    if var.get("Var").and_then(Value::as_str) == Some("action")
                        && let Some(uid) = entity_literal(lit)
                        && groups.contains(&uid)
                    {
                        out.push(uid);
                    }
                }
            }
            for v in obj.values() {
                action_equalities(v, groups, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                action_equalities(v, groups, out);
            }
        }
        _ => {}
    }
}

/// The entity of a JSON expression `{"Value": {"__entity": {"type", "id"}}}`.
fn entity_literal(expr: &Value) -> Option<EntityUid> {
    let e = expr.get("Value")?.get("__entity")?;
    let ty = e.get("type")?.as_str()?.parse().ok()?;
    let id = e.get("id")?.as_str()?;
    Some(EntityUid::from_type_name_and_id(
        ty,
        cedar_policy::EntityId::new(id),
    ))
}

/// A policy of the combined set with the file it was written in.
pub(super) struct Written<'a> {
    /// File path relative to the policy directory.
    pub rel: &'a str,
    /// The file's text.
    pub text: &'a str,
    /// The policy.
    pub located: Located,
}

/// An entity literal (other than an action) that the entity data does not define:
/// a warning naming the policy and the literal. Tokens and requests may supply the
/// entity (token groups, the request's tool), so it is not an error; but a typo
/// (`Mcp::Group::"enginering"`) would silently never match.
pub(super) fn undefined_literals(
    written: &[Written<'_>],
    policies: &PolicySet,
    entities: &Entities,
    problems: &mut Vec<Problem>,
) {
    for w in written {
        let id = PolicyId::new(w.located.id.clone());
        let mut literals = if w.located.template {
            let mut refs = Vec::new();
            if let Some(json) = policies.template(&id).and_then(|t| t.to_json().ok()) {
                super::entity_refs_in(&json, &mut refs);
            }
            refs
        } else {
            match policies.policy(&id) {
                Some(p) => p.entity_literals(),
                None => continue,
            }
        };
        literals.retain(|u| !is_action(u) && entities.get(u).is_none());
        literals.sort_by_cached_key(ToString::to_string);
        literals.dedup();
        for uid in literals {
            let needle = serde_json::to_string(uid.id().unescaped()).unwrap_or_default();
            let at = w
                .text
                .get(w.located.offset..)
                .and_then(|rest| rest.find(&needle))
                .map_or(w.located.offset, |o| w.located.offset + o);
            let mut p = Problem::error(
                Some(w.rel),
                format!(
                    "policy `{}` names `{uid}`, which the entity data does not define",
                    w.located.id
                ),
            )
            .at_offset(w.text, at, needle.chars().count())
            .with_help(Some(
                "check the spelling; if tokens or requests supply this entity (token groups, \
                 for instance), add it to the entity data to silence this warning"
                    .to_owned(),
            ));
            p.severity = Severity::Warning;
            problems.push(p);
        }
    }
}

/// Whether `uid` is an action (`Action::"..."`, in any namespace).
fn is_action(uid: &EntityUid) -> bool {
    uid.type_name().basename() == "Action"
}

/// With `deny_warnings`, every warning becomes an error that says why.
pub(super) fn apply_options(problems: &mut [Problem], options: LoadOptions) {
    if !options.deny_warnings {
        return;
    }
    for p in problems.iter_mut().filter(|p| p.severity == Severity::Warning) {
        p.severity = Severity::Error;
        let note = "warnings are errors here (`--deny-warnings`, `validation.deny_warnings`)";
        p.help = Some(match p.help.take() {
            Some(h) => format!("{h}; {note}"),
            None => note.to_owned(),
        });
    }
}
