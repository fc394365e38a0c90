//! Contexts Cedar's validation already accepted, by what that validation reads.
//!
//! `Context::validate` checks a context against an action's declared context type:
//! the attributes present and the type of each value (which record attributes, the
//! entity type of an entity reference, the extension of an extension value, the
//! element types of a set), and the ids of entity references whose type is an
//! enumerated entity type or an action type (they must be declared). It reads no
//! string, number or boolean, and no other entity id. A context built by the direct
//! path (`authz::context`) comes with a *signature* that writes down exactly those
//! facts; two contexts with the same signature for the same action are accepted or
//! refused alike. [`ContextFits`] keeps the signatures Cedar accepted, so that a
//! context like one already validated is not validated again: validation was a
//! tenth of a request's instructions on a cache miss.
//!
//! The set belongs to one snapshot (one schema), holds only acceptances, and stops
//! growing at [`MAX_FITS`] signatures (further contexts are validated each time);
//! a signature longer than [`MAX_SIGNATURE`] bytes (a long set of enumerated ids,
//! say) is never kept, so the set holds at most 16 MiB whatever callers send.

use std::collections::HashSet;
use std::sync::RwLock;

use cedar_policy::EntityTypeName;
use serde_json::Value;

/// How many signatures a snapshot keeps.
const MAX_FITS: usize = 4096;
/// The longest signature kept, in bytes (a context of the MCP profile writes a few
/// hundred).
const MAX_SIGNATURE: usize = 4096;

type FastSet<T> = HashSet<T, foldhash::fast::RandomState>;

/// The signatures of contexts Cedar's validation accepted for a schema, and which
/// of its entity types have ids the validation reads.
#[derive(Debug, Default)]
pub struct ContextFits {
    /// Entity types declared without `enum`: their ids are not read.
    plain_types: FastSet<EntityTypeName>,
    accepted: RwLock<FastSet<Box<[u8]>>>,
}

impl ContextFits {
    /// For the schema `schema_json` (Cedar's JSON schema form with resolved types).
    pub fn new(schema_json: &Value) -> Self {
        Self {
            plain_types: plain_entity_types(schema_json),
            accepted: RwLock::default(),
        }
    }

    /// Whether validation reads the id of an entity of type `ty`: an action type
    /// (`Action`, `N::Action`), an enumerated type, or one this schema does not
    /// declare (so that nothing is assumed of it).
    pub fn reads_id(&self, ty: &EntityTypeName) -> bool {
        ty.basename() == "Action" || !self.plain_types.contains(ty)
    }

    /// Whether a context with `signature` fits: known if one with the same signature
    /// was accepted, otherwise `validate` decides (and an acceptance is kept).
    pub fn fits(&self, signature: &[u8], validate: impl FnOnce() -> bool) -> bool {
        if self
            .accepted
            .read()
            .is_ok_and(|accepted| accepted.contains(signature))
        {
            return true;
        }
        let fits = validate();
        if fits
            && signature.len() <= MAX_SIGNATURE
            && let Ok(mut accepted) = self.accepted.write()
            && accepted.len() < MAX_FITS
        {
            accepted.insert(signature.into());
        }
        fits
    }

    /// How many signatures are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.accepted.read().map_or(0, |a| a.len())
    }
}

/// The entity types of `schema_json` declared without `enum`.
fn plain_entity_types(schema_json: &Value) -> FastSet<EntityTypeName> {
    let mut out = FastSet::default();
    let Some(namespaces) = schema_json.as_object() else {
        return out;
    };
    for (ns, body) in namespaces {
        let Some(types) = body.get("entityTypes").and_then(Value::as_object) else {
            continue;
        };
        for (name, declared) in types {
            if declared.get("enum").is_some() {
                continue;
            }
            if let Ok(ty) = super::shape::qualified(ns, name).parse() {
                out.insert(ty);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn enumerated_undeclared_and_action_types_have_their_ids_read() {
        let fits = ContextFits::new(&json!({
            "": { "entityTypes": { "Z": {}, "Color": { "enum": ["red"] } }, "actions": {} },
            "N": { "entityTypes": { "E": { "memberOfTypes": [] }, "Action": {} }, "actions": {} },
        }));
        let ty = |s: &str| -> EntityTypeName { s.parse().unwrap() };
        assert!(!fits.reads_id(&ty("Z")));
        assert!(!fits.reads_id(&ty("N::E")));
        assert!(fits.reads_id(&ty("Color")));
        assert!(fits.reads_id(&ty("N::F")));
        assert!(fits.reads_id(&ty("E")));
        assert!(fits.reads_id(&ty("Action")));
        assert!(fits.reads_id(&ty("N::Action")));
    }

    #[test]
    fn only_acceptances_are_kept() {
        let fits = ContextFits::default();
        assert!(!fits.fits(b"a", || false));
        assert_eq!(fits.len(), 0);
        assert!(fits.fits(b"a", || true));
        assert_eq!(fits.len(), 1);
        // Known now: not validated again.
        assert!(fits.fits(b"a", || panic!("validated twice")));
        assert!(!fits.fits(b"b", || false));
        assert_eq!(fits.len(), 1);
        // Too long to keep: accepted, validated each time.
        let long = vec![b's'; MAX_SIGNATURE + 1];
        assert!(fits.fits(&long, || true));
        assert_eq!(fits.len(), 1);
        assert!(!fits.fits(&long, || false));
    }
}
