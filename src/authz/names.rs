//! Names as callers write them (an AuthZEN subject `type`, an action `name`) mapped
//! to the entity types and actions a snapshot's schema declares, in any namespace
//! or none: nothing here assumes the `Mcp` model.
//!
//! - An entity type written with `::` (`Mcp::Tool`) is taken as it is.
//! - A bare type that is exactly the name of a type of the empty namespace is that
//!   type (its full name). Otherwise a bare type (`user`, `tool`) is matched
//!   case-insensitively against the last segment of the schema's entity types. When several match, the ones in the
//!   preferred namespace (the action's) win; if that leaves more than one, the
//!   name is ambiguous and must be qualified.
//! - An action is named by its id (`tools/call`, `read`) and found among the
//!   schema's actions; an id declared in several namespaces must be qualified as a
//!   full uid (`Mcp::Action::"tools/call"`).

use std::str::FromStr;

use cedar_policy::{EntityTypeName, EntityUid, Schema};

use crate::policy::Snapshot;

/// Why a name does not map to the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The schema declares nothing by that name.
    #[error("the schema declares no {what} `{name}`")]
    Unknown {
        /// `entity type` or `action`.
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// Several declarations match; the caller must qualify the name.
    #[error("{what} `{name}` is ambiguous: write one of {}", candidates.join(", "))]
    Ambiguous {
        /// `entity type` or `action`.
        what: &'static str,
        /// The name as given.
        name: String,
        /// The qualified names that match, in backticks.
        candidates: Vec<String>,
    },
    /// Not a valid Cedar name.
    #[error("`{0}` is not a valid Cedar name")]
    Invalid(String),
}

fn shown(name: &str) -> String {
    let mut s: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if name.chars().count() > 64 {
        s.push_str("...");
    }
    s
}

/// The entity type `name` refers to (see the module docs); `namespace` is the
/// preferred namespace (`""` for none).
pub fn resolve_entity_type(
    schema: &Schema,
    name: &str,
    namespace: Option<&str>,
) -> Result<EntityTypeName, NameError> {
    if name.contains("::") {
        // A schema type written as the schema writes it, compared piece by piece:
        // Cedar's parser (below) is for the other spellings it accepts.
        if let Some(ty) = schema.entity_types().find(|t| written_as(t, name)) {
            return Ok(ty.clone());
        }
        let ty = EntityTypeName::from_str(name).map_err(|_| NameError::Invalid(shown(name)))?;
        return if schema.entity_types().any(|t| t == &ty) {
            Ok(ty)
        } else {
            Err(NameError::Unknown {
                what: "entity type",
                name: shown(name),
            })
        };
    }
    let all: Vec<&EntityTypeName> = schema.entity_types().collect();
    resolve_bare(all.iter().copied(), name, namespace)
}

/// [`resolve_entity_type`] on `snapshot`'s schema, a bare name looked up in the
/// snapshot's table of types by basename rather than by a scan of the schema.
pub fn resolve_snapshot_type(
    snapshot: &Snapshot,
    name: &str,
    namespace: Option<&str>,
) -> Result<EntityTypeName, NameError> {
    if name.contains("::") {
        return resolve_entity_type(&snapshot.schema, name, namespace);
    }
    resolve_bare(
        snapshot.types_by_basename.matching(name).iter(),
        name,
        namespace,
    )
}

/// The entity type the bare `name` (no `::`) refers to among `types`: every type
/// of the schema, or at least each whose basename matches `name` ignoring ASCII case.
fn resolve_bare<'t>(
    types: impl Iterator<Item = &'t EntityTypeName> + Clone,
    name: &str,
    namespace: Option<&str>,
) -> Result<EntityTypeName, NameError> {
    // A type of the empty namespace is named exactly by its bare name: that is its
    // full name, and there is no other way to write it.
    if let Some(exact) = types
        .clone()
        .find(|t| t.namespace_components().next().is_none() && t.basename() == name)
    {
        return Ok(exact.clone());
    }
    let matching: Vec<&EntityTypeName> = types
        .filter(|t| t.basename().eq_ignore_ascii_case(name))
        .collect();
    let preferred: Vec<&EntityTypeName> = match namespace {
        Some(ns) => matching
            .iter()
            .copied()
            .filter(|t| in_namespace(t, ns))
            .collect(),
        None => Vec::new(),
    };
    let chosen = if preferred.is_empty() {
        matching
    } else {
        preferred
    };
    match chosen.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(NameError::Unknown {
            what: "entity type",
            name: shown(name),
        }),
        many => {
            // An exact spelling wins over other case variants.
            let exact: Vec<_> = many.iter().filter(|t| t.basename() == name).collect();
            if let [one] = exact.as_slice() {
                return Ok((**one).clone());
            }
            let mut candidates: Vec<String> = many.iter().map(|t| format!("`{t}`")).collect();
            candidates.sort();
            Err(NameError::Ambiguous {
                what: "entity type",
                name: shown(name),
                candidates,
            })
        }
    }
}

/// Whether `name` is `ty` as Cedar writes it (`A::B::Type`), compared piece by piece.
fn written_as(ty: &EntityTypeName, name: &str) -> bool {
    let mut pieces = name.split("::");
    ty.namespace_components()
        .chain(std::iter::once(ty.basename()))
        .all(|have| pieces.next() == Some(have))
        && pieces.next().is_none()
}

/// Whether `ty`'s namespace is `ns` (`A::B`), compared piece by piece: a type's
/// namespace as a string is formatted afresh on every call.
pub(crate) fn in_namespace(ty: &EntityTypeName, ns: &str) -> bool {
    // What of `ns` is left to match (`None`: all of it), part by part; without
    // splitting `ns` (a substring search per call, several calls a request).
    let mut rest = (!ns.is_empty()).then_some(ns);
    for part in ty.namespace_components() {
        let Some(after) = rest.and_then(|r| r.strip_prefix(part)) else {
            return false;
        };
        rest = match after.strip_prefix("::") {
            Some(more) => Some(more),
            None if after.is_empty() => None,
            None => return false,
        };
    }
    rest.is_none()
}

/// The action `name` refers to: a full uid, or an action id unique among the
/// schema's namespaces.
pub fn resolve_action(schema: &Schema, name: &str) -> Result<EntityUid, NameError> {
    if let Some((ty, quoted)) = name.split_once("::\"") {
        // A full uid: `Type::"id"` with the id as Cedar prints it (escapes such as
        // `\u{e9}` or `\"`) or as it is (`é`, a lone `"`): both name the same action.
        let id = quoted
            .strip_suffix('"')
            .ok_or_else(|| NameError::Invalid(shown(name)))?;
        // The usual spelling first, without Cedar's parser: the type as the schema
        // writes it and an id with nothing to unescape, which is then the uid's id.
        if !id.contains(['\\', '"'])
            && let Some(a) = schema
                .actions()
                .find(|a| a.id().unescaped() == id && written_as(a.type_name(), ty))
        {
            return Ok(a.clone());
        }
        let parsed = EntityUid::from_str(name).ok();
        let unescaped = unescape(id);
        let found = schema.actions().find(|a| {
            parsed.as_ref() == Some(*a)
                || (a.type_name().to_string() == ty
                    && (a.id().unescaped() == id
                        || unescaped.as_deref() == Some(a.id().unescaped())))
        });
        return match found {
            Some(a) => Ok(a.clone()),
            None if EntityTypeName::from_str(ty).is_err() => Err(NameError::Invalid(shown(name))),
            None => Err(NameError::Unknown {
                what: "action",
                name: shown(name),
            }),
        };
    }
    let matching: Vec<&EntityUid> = schema
        .actions()
        .filter(|a| a.id().unescaped() == name)
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(NameError::Unknown {
            what: "action",
            name: shown(name),
        }),
        many => {
            let mut candidates: Vec<String> = many.iter().map(|a| format!("`{a}`")).collect();
            candidates.sort();
            Err(NameError::Ambiguous {
                what: "action",
                name: shown(name),
                candidates,
            })
        }
    }
}

/// A Cedar string literal's content with its escapes (`\\`, `\"`, `\'`, `\n`, `\r`,
/// `\t`, `\0`, `\u{...}`) resolved; `None` if an escape is malformed.
fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '\\' => out.push('\\'),
            '"' => out.push('"'),
            '\'' => out.push('\''),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            '0' => out.push('\0'),
            'u' => {
                if chars.next()? != '{' {
                    return None;
                }
                let hex: String = chars.by_ref().take_while(|c| *c != '}').collect();
                if hex.is_empty() || hex.len() > 6 {
                    return None;
                }
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The namespace of an entity type or action type (`""` for none).
pub fn namespace_of(ty: &EntityTypeName) -> String {
    ty.namespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(src: &str) -> Schema {
        Schema::from_str(src).expect("schema")
    }

    #[test]
    fn a_namespace_is_compared_part_by_part() {
        let types = [
            "User",
            "Mcp::User",
            "Mcp::Sub::User",
            "Sub::Mcp::User",
            "McpX::User",
            "A::B::C::User",
            "M::User",
        ];
        let namespaces = [
            "",
            "Mcp",
            "Mcp::Sub",
            "Sub",
            "Mcp::",
            "::Mcp",
            "Mc",
            "McpX",
            "A::B::C",
            "A::B",
            "B::C",
            "A::B::C::D",
            "M",
            "Mcp::Sub::",
            "Mcp:Sub",
        ];
        for ty in types {
            let parsed: EntityTypeName = ty.parse().expect(ty);
            // The namespace as text: everything before the last `::`.
            let namespace = ty.rsplit_once("::").map_or("", |(ns, _)| ns);
            for ns in namespaces {
                assert_eq!(in_namespace(&parsed, ns), namespace == ns, "{ty} in {ns:?}");
            }
        }
    }

    #[test]
    fn bare_types_match_the_last_segment_case_insensitively() {
        let s = schema(
            r#"namespace Mcp { entity User; entity Tool; action "tools/call" appliesTo { principal: User, resource: Tool }; }
               namespace Acme { entity User; entity Record; action "read" appliesTo { principal: User, resource: Record }; }
               entity Thing;"#,
        );
        assert_eq!(
            resolve_entity_type(&s, "tool", None).map(|t| t.to_string()),
            Ok("Mcp::Tool".into())
        );
        assert_eq!(
            resolve_entity_type(&s, "thing", None).map(|t| t.to_string()),
            Ok("Thing".into())
        );
        assert_eq!(
            resolve_entity_type(&s, "Mcp::Tool", None).map(|t| t.to_string()),
            Ok("Mcp::Tool".into())
        );
        // Two `User`s: the action's namespace decides, else it is ambiguous.
        assert_eq!(
            resolve_entity_type(&s, "user", Some("Acme")).map(|t| t.to_string()),
            Ok("Acme::User".into())
        );
        let err = resolve_entity_type(&s, "user", None).expect_err("ambiguous");
        assert_eq!(
            err.to_string(),
            "entity type `user` is ambiguous: write one of `Acme::User`, `Mcp::User`"
        );
        assert!(matches!(
            resolve_entity_type(&s, "spaceship", None),
            Err(NameError::Unknown { .. })
        ));
        assert!(matches!(
            resolve_entity_type(&s, "Mcp::Nope", None),
            Err(NameError::Unknown { .. })
        ));
        assert!(matches!(
            resolve_entity_type(&s, "Mcp::", None),
            Err(NameError::Invalid(_))
        ));
    }

    #[test]
    fn the_table_of_types_by_basename_resolves_as_a_scan_of_the_schema() {
        let s = schema(
            r#"namespace Mcp { entity User; entity Tool; entity USER; action "tools/call" appliesTo { principal: User, resource: Tool }; }
               namespace Acme { entity User; entity Record; entity tool; action "read" appliesTo { principal: User, resource: Record }; }
               namespace A::B { entity Widget; }
               entity Thing; entity thing; entity WIDGET; entity Kelvin;"#,
        );
        let table = crate::policy::TypesByBasename::new(&s);
        let shown = |r: Result<EntityTypeName, NameError>| r.map(|t| t.to_string());
        let names = [
            "user",
            "User",
            "USER",
            "uSeR",
            "tool",
            "Tool",
            "TOOL",
            "thing",
            "Thing",
            "THING",
            "record",
            "Record",
            "kelvin",
            "\u{212a}elvin",
            "caf\u{e9}",
            "spaceship",
            "",
            "Users",
            "user ",
            " user",
            "us\u{0}er",
            "\u{17f}",
            "K",
            "widget",
            "Widget",
            "WIDGET",
        ];
        for name in names {
            for namespace in [
                None,
                Some(""),
                Some("Mcp"),
                Some("Acme"),
                Some("A::B"),
                Some("Nope"),
            ] {
                assert_eq!(
                    shown(resolve_bare(table.matching(name).iter(), name, namespace)),
                    shown(resolve_entity_type(&s, name, namespace)),
                    "{name:?} in {namespace:?}"
                );
            }
        }
        // Every type is found under its basename in any ASCII case.
        for ty in s.entity_types() {
            let upper = ty.basename().to_ascii_uppercase();
            assert!(table.matching(&upper).contains(ty), "{ty}");
            assert!(table.matching(ty.basename()).contains(ty), "{ty}");
        }
    }

    #[test]
    fn qualified_types_resolve_as_cedar_reads_them() {
        let s = schema(
            r#"namespace A::B { entity User; } namespace Mcp { entity Tool; } entity Thing;"#,
        );
        for given in [
            "A::B::User",
            "Mcp::Tool",
            "A :: B :: User",
            "Mcp:: Tool",
            "A::User",
            "B::User",
            "A::B::User::X",
            "A::B::user",
            "Mcp::",
            "::Tool",
            "Mcp::::Tool",
            "Mcp::Tool ",
            "Mcp::Tool\u{0}",
        ] {
            // What Cedar's parser reads, looked up in the schema.
            let expected = match EntityTypeName::from_str(given) {
                Err(_) => Err("invalid"),
                Ok(t) if s.entity_types().any(|have| have == &t) => Ok(t.to_string()),
                Ok(_) => Err("unknown"),
            };
            let got = match resolve_entity_type(&s, given, None) {
                Ok(t) => Ok(t.to_string()),
                Err(NameError::Invalid(_)) => Err("invalid"),
                Err(NameError::Unknown { .. }) => Err("unknown"),
                Err(e) => panic!("{given}: {e}"),
            };
            assert_eq!(got, expected, "{given:?}");
        }
    }

    #[test]
    fn full_action_uids_in_any_spelling_cedar_reads() {
        let s = schema(
            r#"entity U; action "caf\u{e9}", "a\"b", "", "line\nbreak", "back\\slash" appliesTo { principal: U, resource: U };
               namespace N { entity V; action "\u{1f600}" appliesTo { principal: V, resource: V }; }"#,
        );
        for (given, id) in [
            ("Action::\"caf\u{e9}\"", "caf\u{e9}"),
            ("Action::\"caf\\u{e9}\"", "caf\u{e9}"),
            ("Action::\"a\"b\"", "a\"b"),
            ("Action::\"a\\\"b\"", "a\"b"),
            ("Action::\"\"", ""),
            ("Action::\"line\\nbreak\"", "line\nbreak"),
            ("Action::\"line\nbreak\"", "line\nbreak"),
            ("Action::\"back\\\\slash\"", "back\\slash"),
            ("N::Action::\"\u{1f600}\"", "\u{1f600}"),
            ("N::Action::\"\\u{1f600}\"", "\u{1f600}"),
            ("caf\u{e9}", "caf\u{e9}"),
            ("", ""),
        ] {
            let uid = resolve_action(&s, given).unwrap_or_else(|e| panic!("{given}: {e}"));
            assert_eq!(uid.id().unescaped(), id, "{given}");
        }
        for unknown in [
            "Action::\"cafe\"",
            "N::Action::\"caf\u{e9}\"",
            "Action::\"\\u{zz}\"",
        ] {
            assert!(
                matches!(resolve_action(&s, unknown), Err(NameError::Unknown { .. })),
                "{unknown}"
            );
        }
        assert!(matches!(
            resolve_action(&s, "Bad Type::\"x\""),
            Err(NameError::Invalid(_))
        ));
        assert!(matches!(
            resolve_action(&s, "Action::\"unterminated"),
            Err(NameError::Invalid(_))
        ));
    }

    #[test]
    fn a_type_of_the_empty_namespace_is_named_by_its_exact_name() {
        let s = schema(
            r#"entity Doc; entity user;
               namespace N { entity User; action "nread" appliesTo { principal: [user, User], resource: [Doc] }; }"#,
        );
        let of = |name: &str| resolve_entity_type(&s, name, Some("N")).map(|t| t.to_string());
        assert_eq!(of("user"), Ok("user".into()));
        assert_eq!(of("User"), Ok("N::User".into()));
        assert_eq!(of("USER"), Ok("N::User".into()));
        assert_eq!(of("N::User"), Ok("N::User".into()));
        assert_eq!(of("doc"), Ok("Doc".into()));
    }

    #[test]
    fn actions_are_found_by_id_and_qualified_when_ambiguous() {
        let s = schema(
            r#"namespace A { entity U; action "read" appliesTo { principal: U, resource: U }; action "only_a" appliesTo { principal: U, resource: U }; }
               namespace B { entity U; action "read" appliesTo { principal: U, resource: U }; }"#,
        );
        assert_eq!(
            resolve_action(&s, "only_a").map(|a| a.to_string()),
            Ok(r#"A::Action::"only_a""#.into())
        );
        assert!(matches!(
            resolve_action(&s, "read"),
            Err(NameError::Ambiguous { .. })
        ));
        assert_eq!(
            resolve_action(&s, r#"B::Action::"read""#).map(|a| a.to_string()),
            Ok(r#"B::Action::"read""#.into())
        );
        assert!(matches!(
            resolve_action(&s, "write"),
            Err(NameError::Unknown { .. })
        ));
    }
}
