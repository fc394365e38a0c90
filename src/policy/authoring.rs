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
        p.policy_id = Some(id.to_owned());
    }
    problems
}

/// Name the policy of each problem located in a policy file that parsed: the last
/// policy of the file that starts on or before the problem's line.
pub(super) fn attach_policy_ids(written: &[Written<'_>], problems: &mut [Problem]) {
    // Per file, each policy's first line and id, in file order; lines counted once.
    let mut starts: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
    let mut counted: HashMap<&str, (usize, usize)> = HashMap::new(); // file -> (offset, line)
    for w in written {
        let (offset, line) = counted.entry(w.rel).or_insert((0, 1));
        let to = w.located.offset.max(*offset);
        *line += w
            .text
            .get(*offset..to)
            .unwrap_or_default()
            .matches('\n')
            .count();
        *offset = to;
        starts
            .entry(w.rel)
            .or_default()
            .push((*line, w.located.id.as_str()));
    }
    for p in problems.iter_mut().filter(|p| p.policy_id.is_none()) {
        let (Some(file), Some(line)) = (p.file.as_deref(), p.line) else {
            continue;
        };
        let Some(policies) = starts.get(file) else {
            continue;
        };
        let after = policies.partition_point(|(start, _)| *start <= line);
        p.policy_id = after
            .checked_sub(1)
            .and_then(|i| policies.get(i))
            .map(|(_, id)| (*id).to_owned());
    }
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
                "its scope and conditions match no request the schema allows (a condition on an \
                 attribute the schema does not declare, such as an undeclared tool argument, is \
                 always false; so is a scope naming an action or type that does not apply)"
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
            let at = equality_at(text, l.offset, &needle).unwrap_or(l.offset);
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

/// Where `needle` (an action's quoted id) is written next to `==` in the text from
/// `from` on, else where it is first written; `None` if it is not.
fn equality_at(text: &str, from: usize, needle: &str) -> Option<usize> {
    let rest = text.get(from..)?;
    let mut first = None;
    for (o, _) in rest.match_indices(needle) {
        first.get_or_insert(o);
        let before = rest
            .get(..o)
            .unwrap_or_default()
            .trim_end_matches(|c: char| {
                c.is_alphanumeric() || c == '_' || c == ':' || c.is_whitespace()
            });
        let after = rest
            .get(o + needle.len()..)
            .unwrap_or_default()
            .trim_start();
        if before.ends_with("==") || after.starts_with("==") {
            return Some(from + o);
        }
    }
    first.map(|o| from + o)
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
    for p in problems
        .iter_mut()
        .filter(|p| p.severity == Severity::Warning)
    {
        p.severity = Severity::Error;
        let note = "warnings are errors here (`--deny-warnings`, `validation.deny_warnings`)";
        p.help = Some(match p.help.take() {
            Some(h) => format!("{h}; {note}"),
            None => note.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::load::{Sources, build_with};
    use super::super::{Problems, Snapshot};
    use super::*;

    /// `tools/call` with one member action, as a schema with imported tools declares it.
    const SCHEMA: &str = r#"namespace Mcp {
  entity Group;
  entity User in [Group];
  entity Tool;
  type Args = { limit?: Long };
  action "tools/call" appliesTo { principal: User, resource: Tool, context: { arguments: Args } };
  action "tools/call/pay/refund" in ["tools/call"]
    appliesTo { principal: User, resource: Tool, context: { arguments: Args } };
  action "ping" appliesTo { principal: User, resource: Tool };
}
"#;
    const ENTITIES: &str = r#"[
  { "uid": { "type": "Mcp::Group", "id": "engineering" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Mcp::Tool", "id": "pay/refund" }, "attrs": {}, "parents": [] }
]"#;

    fn load(
        policies: &str,
        entities: Option<&str>,
        options: LoadOptions,
    ) -> Result<Snapshot, Problems> {
        let sources = Sources {
            dir: PathBuf::from("mem"),
            policies: vec![("p.cedar".into(), policies.into())],
            schema: ("s.cedarschema".into(), SCHEMA.into()),
            fragments: Vec::new(),
            entities: entities.map(|e| ("entities.json".into(), e.into())),
            entity_fragments: Vec::new(),
            fingerprint: 0,
        };
        build_with(&sources, 1, options)
    }

    fn errors(policies: &str) -> Vec<Problem> {
        match load(policies, Some(ENTITIES), LoadOptions::default()) {
            Ok(_) => panic!("accepted:\n{policies}"),
            Err(p) => p.errors().cloned().collect(),
        }
    }

    fn warnings(policies: &str) -> Vec<Problem> {
        match load(policies, Some(ENTITIES), LoadOptions::default()) {
            Ok(s) => s.warnings.warnings().cloned().collect(),
            Err(p) => panic!("refused:\n{policies}\n{p}"),
        }
    }

    const OK: &str = "@id(\"ok\")\npermit (principal in Mcp::Group::\"engineering\", action in Mcp::Action::\"tools/call\", resource);\n";

    #[test]
    fn an_impossible_forbid_is_an_error_and_an_impossible_permit_a_warning() {
        // An undeclared argument: `has` is always false.
        let when = "when { context.arguments has amount_cents && context.arguments.amount_cents > 100000 }";
        let unless = "unless { !(context.arguments has amount_cents) }";
        for condition in [when, unless] {
            for (annotation, name) in [("@id(\"refund-cap\")\n", "refund-cap"), ("", "p.cedar:1")] {
                let text = format!(
                    "{OK}{annotation}forbid (principal, action == Mcp::Action::\"tools/call/pay/refund\", resource)\n{condition};\n"
                );
                let errors = errors(&text);
                assert_eq!(errors.len(), 1, "{errors:?}");
                let e = &errors[0];
                assert!(e.message.contains("policy is impossible"), "{e}");
                assert!(e.message.contains(&format!("`{name}`")), "{e}");
                assert!(!e.message.contains("`policy1`"), "{e}");
                assert_eq!(e.location().as_deref(), Some("p.cedar:3:1"), "{e}");
                assert!(
                    e.help
                        .as_deref()
                        .is_some_and(|h| h.contains("guards nothing")),
                    "{e}"
                );

                let permit = text.replace(
                    "forbid (principal, action ==",
                    "permit (principal, action ==",
                );
                let warnings = warnings(&permit);
                assert_eq!(warnings.len(), 1, "{warnings:?}");
                assert!(
                    warnings[0].message.contains("policy is impossible"),
                    "{}",
                    warnings[0]
                );
                assert!(
                    warnings[0].message.contains(&format!("`{name}`")),
                    "{}",
                    warnings[0]
                );
            }
        }
        // A forbid whose scope no action applies to (`ping` takes no context
        // arguments, but its principal is a user, not a group).
        let errors = errors(&format!(
            "{OK}@id(\"no-such-request\")\nforbid (principal in Mcp::Group::\"engineering\", action == Mcp::Action::\"ping\", resource is Mcp::User);\n"
        ));
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("`no-such-request`")
                    && e.help
                        .as_deref()
                        .is_some_and(|h| h.contains("no action of its scope"))),
            "{errors:?}"
        );
        // A possible forbid on a declared argument is fine.
        assert!(warnings(&format!(
            "{OK}@id(\"cap\")\nforbid (principal, action == Mcp::Action::\"tools/call/pay/refund\", resource)\nwhen {{ context.arguments has limit && context.arguments.limit > 5 }};\n"
        ))
        .is_empty());
    }

    #[test]
    fn validation_errors_name_the_policy_by_its_stable_id() {
        let bad = "forbid (principal, action in Mcp::Action::\"tools/call\", resource) when { principal.nope };\n";
        for (annotation, name) in [("@id(\"typo\")\n", "typo"), ("", "p.cedar:1")] {
            let errors = errors(&format!("{OK}{annotation}{bad}"));
            assert!(!errors.is_empty());
            for e in &errors {
                assert!(e.message.contains(&format!("for policy `{name}`")), "{e}");
                assert!(
                    e.location().is_some_and(|l| l.starts_with("p.cedar:")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn action_equals_an_action_with_members_is_an_error() {
        let scoped =
            "@id(\"eq\")\npermit (principal, action == Mcp::Action::\"tools/call\", resource);\n";
        let in_condition = "@id(\"eq\")\nforbid (principal, action, resource) when { Mcp::Action::\"tools/call\" == action && context has arguments };\n";
        let unless = "@id(\"eq\")\npermit (principal, action in Mcp::Action::\"tools/call\", resource) unless { action == Mcp::Action::\"tools/call\" };\n";
        let template = "@id(\"eq\")\nforbid (principal == ?principal, action == Mcp::Action::\"tools/call\", resource);\n";
        for text in [scoped, in_condition, unless, template] {
            let errors = errors(&format!("{OK}{text}"));
            let e = errors
                .iter()
                .find(|e| e.message.contains("has member actions"))
                .unwrap_or_else(|| panic!("{text}: {errors:?}"));
            assert!(e.message.contains("policy `eq`"), "{e}");
            assert!(
                e.help
                    .as_deref()
                    .is_some_and(|h| h.contains("action in Mcp::Action::\"tools/call\"")),
                "{e}"
            );
            assert_eq!(e.line, Some(4), "{e}");
            assert_eq!(
                e.source_line
                    .as_deref()
                    .map(|l| &l[e.column.unwrap_or(1) - 1..][..12]),
                Some("\"tools/call\""),
                "{e}"
            );
        }
        // `in`, and `==` an action without members, are fine.
        assert!(warnings(&format!(
            "{OK}@id(\"refund\")\npermit (principal, action == Mcp::Action::\"tools/call/pay/refund\", resource);\n@id(\"ping\")\npermit (principal, action == Mcp::Action::\"ping\", resource);\n"
        ))
        .is_empty());
    }

    #[test]
    fn entity_literals_the_entity_data_does_not_define_are_warnings() {
        let typo = "@id(\"eng\")\npermit (principal in Mcp::Group::\"enginering\", action in Mcp::Action::\"tools/call\", resource);\n";
        let in_condition = "forbid (principal, action in Mcp::Action::\"tools/call\", resource) unless { principal in Mcp::Group::\"enginering\" };\n";
        for (text, name, line) in [(typo, "eng", 4), (in_condition, "p.cedar:1", 3)] {
            let warnings = warnings(&format!("{OK}{text}"));
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            let w = &warnings[0];
            assert!(
                w.message.contains(&format!("policy `{name}`"))
                    && w.message.contains("`Mcp::Group::\"enginering\"`")
                    && w.message.contains("entity data does not define"),
                "{w}"
            );
            assert_eq!(w.line, Some(line), "{w}");
            // Without entity data there is nothing to compare with.
            let s = load(&format!("{OK}{text}"), None, LoadOptions::default()).expect("loads");
            assert!(s.warnings.0.is_empty(), "{:?}", s.warnings);
        }
        // Defined ones, and actions, are not.
        assert!(warnings(&format!(
            "{OK}permit (principal, action == Mcp::Action::\"tools/call/pay/refund\", resource == Mcp::Tool::\"pay/refund\");\n"
        ))
        .is_empty());
    }

    #[test]
    fn deny_warnings_makes_every_warning_an_error() {
        let text = format!(
            "{OK}@id(\"eng\")\npermit (principal in Mcp::Group::\"enginering\", action in Mcp::Action::\"tools/call\", resource);\n"
        );
        let deny = LoadOptions {
            deny_warnings: true,
        };
        assert!(load(&text, Some(ENTITIES), LoadOptions::default()).is_ok());
        let Err(problems) = load(&text, Some(ENTITIES), deny) else {
            panic!("accepted with deny_warnings");
        };
        let errors: Vec<_> = problems.errors().collect();
        assert_eq!(errors.len(), 1, "{problems}");
        assert!(errors[0].message.contains("`eng`"), "{problems}");
        assert!(
            errors[0]
                .help
                .as_deref()
                .is_some_and(|h| h.contains("--deny-warnings")),
            "{problems}"
        );
        assert_eq!(problems.warnings().count(), 0);
        // Nothing to deny: loads.
        assert!(load(OK, Some(ENTITIES), deny).is_ok());
    }
}
