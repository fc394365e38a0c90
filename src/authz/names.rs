//! Names as callers write them (an AuthZEN subject `type`, an action `name`) mapped
//! to the entity types and actions a snapshot's schema declares, in any namespace
//! or none: nothing here assumes the `Mcp` model.
//!
//! - An entity type written with `::` (`Mcp::Tool`) is taken as it is.
//! - A bare type (`user`, `tool`) is matched case-insensitively against the last
//!   segment of the schema's entity types. When several match, the ones in the
//!   preferred namespace (the action's) win; if that leaves more than one, the
//!   name is ambiguous and must be qualified.
//! - An action is named by its id (`tools/call`, `read`) and found among the
//!   schema's actions; an id declared in several namespaces must be qualified as a
//!   full uid (`Mcp::Action::"tools/call"`).

use std::str::FromStr;

use cedar_policy::{EntityTypeName, EntityUid, Schema};

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
    let matching: Vec<&EntityTypeName> = schema
        .entity_types()
        .filter(|t| t.basename().eq_ignore_ascii_case(name))
        .collect();
    let preferred: Vec<&EntityTypeName> = match namespace {
        Some(ns) => matching
            .iter()
            .copied()
            .filter(|t| t.namespace() == ns)
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

/// The action `name` refers to: a full uid, or an action id unique among the
/// schema's namespaces.
pub fn resolve_action(schema: &Schema, name: &str) -> Result<EntityUid, NameError> {
    if name.contains("::\"") {
        let uid = EntityUid::from_str(name).map_err(|_| NameError::Invalid(shown(name)))?;
        return if schema.actions().any(|a| a == &uid) {
            Ok(uid)
        } else {
            Err(NameError::Unknown {
                what: "action",
                name: shown(name),
            })
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
