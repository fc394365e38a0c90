//! Building the Cedar context of a request by the context contract (DESIGN.md):
//! only what the schema declares for the action, read as the declared types.
//!
//! The context is built straight from the request's JSON values, guided by the
//! action's [`Shape`], into Cedar values (no JSON round trip through Cedar's
//! schema-driven parser, which costs several times the evaluation itself), and then
//! validated against the schema by Cedar. Anything the direct path does not
//! understand, and every failure, goes through Cedar's JSON parser instead: that
//! is the reference, and it gives the precise error.

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde_json::{Map, Value};

use super::{DecisionRequest, SERVICE_FILLED, uid_json};
use crate::policy::{
    ContextFits, Extension, Leaf, Shape, Snapshot, alias_in, error_chain, reads_as,
};

/// The context for `request`: `application`, `user` and `server` where known,
/// `scopes` and `claims` from a verified token, plus the request's own attributes,
/// less whatever the schema does not declare for the action. A declared attribute
/// of the wrong type, an undeclared one that reads as a declared one
/// ([`Shape::alias`]), or — for actions of the MCP profile — a request attribute
/// that only the service fills ([`SERVICE_FILLED`]) is an error (a deny).
pub fn build_context(snapshot: &Snapshot, request: &DecisionRequest) -> Result<Context, String> {
    let Some(shape) = snapshot.context_shapes.get(&request.action) else {
        return Err(format!("unknown action {}", request.action));
    };
    if let Some(reason) = service_filled_in(&request.action, &request.context) {
        return Err(reason);
    }
    let fits = &snapshot.context_fits;
    let mut signature = Signature::new(fits);
    if let Some(context) = direct(shape, request, &mut signature)
        && fits.fits(&signature.bytes, || {
            context.validate(&snapshot.schema, &request.action).is_ok()
        })
    {
        return Ok(context);
    }
    through_json(snapshot, shape, request)
}

/// Whether `action` belongs to the MCP profile (the `Mcp` namespace), where the
/// context attributes of [`SERVICE_FILLED`] are the service's alone.
pub fn mcp_profile(action: &EntityUid) -> bool {
    super::names::in_namespace(action.type_name(), "Mcp")
}

/// The reason a request's own context may not be used for `action`: for an action
/// of the MCP profile, an attribute that only the service fills (`user`,
/// `application`, `server`, `scopes`, `claims`), under any spelling that reads as
/// one of them (`User`, `SCOPES`, `ſcopes`; see [`crate::policy::name_key`]). Every interface
/// asks this (an adapter may refuse the request outright); the core denies such
/// a request in any case.
pub fn service_filled_in(action: &EntityUid, context: &Map<String, Value>) -> Option<String> {
    if mcp_profile(action) {
        service_filled_attribute(context)
    } else {
        None
    }
}

/// [`service_filled_in`] for a context known to go with actions of the MCP profile.
pub fn service_filled_attribute(context: &Map<String, Value>) -> Option<String> {
    context.keys().find_map(|given| {
        SERVICE_FILLED.iter().find(|f| reads_as(given, f)).map(|filled| {
            format!(
                "the request sets `context.{given}`, which only the service fills (`{filled}` comes \
                 from verified identity and the request's own fields)"
            )
        })
    })
}

/// What Cedar's validation reads of a context (see [`ContextFits`]), written while
/// the direct path builds it: the action, then each attribute's name and the type
/// of its value — `s`tring, `l`ong, `b`ool, e`x`tension (which), `e`ntity (its type,
/// and its id where validation reads it), `[`set`]` (the types of its elements, a
/// run of equal ones once), `{`record`}` (names and types, in the order built).
/// Texts are written with their length, so that no two contexts that validation
/// could tell apart have the same signature.
struct Signature<'a> {
    fits: &'a ContextFits,
    bytes: Vec<u8>,
}

impl<'a> Signature<'a> {
    fn new(fits: &'a ContextFits) -> Self {
        Self {
            fits,
            bytes: Vec::with_capacity(256),
        }
    }

    fn tag(&mut self, tag: u8) {
        self.bytes.push(tag);
    }

    fn text(&mut self, text: &str) {
        self.bytes
            .extend_from_slice(&(text.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(text.as_bytes());
    }

    fn key(&mut self, key: &str) {
        self.tag(b'k');
        self.text(key);
    }

    /// An entity reference: its type; its id only where validation reads it.
    fn entity(&mut self, uid: &EntityUid, with_id: bool) {
        let ty = uid.type_name();
        self.tag(b'e');
        for part in ty.namespace_components() {
            self.tag(b'n');
            self.text(part);
        }
        self.tag(b't');
        self.text(ty.basename());
        if with_id || self.fits.reads_id(ty) {
            self.tag(b'i');
            self.text(uid.id().unescaped());
        } else {
            self.tag(b'-');
        }
    }
}

/// The context built from `request` by `shape`, or `None` if some value is not
/// of the kind the shape declares or is written in a form left to Cedar's parser;
/// `signature` gets what validation reads of it.
fn direct(shape: &Shape, request: &DecisionRequest, signature: &mut Signature) -> Option<Context> {
    let attrs = shape.attributes()?;
    // A context written as an entity reference or extension value is Cedar's to refuse.
    if request.context.contains_key("__entity") || request.context.contains_key("__extn") {
        return None;
    }
    signature.entity(&request.action, true);
    signature.tag(b'{');
    let mut pairs = Vec::with_capacity(request.context.len() + 5);
    for (key, value) in &request.context {
        match attrs.get(key) {
            Some(s) => {
                signature.key(key);
                pairs.push((key.clone(), value_of(s, value, signature)?));
            }
            // Left to the reference path, which names the alias.
            None if alias_in(attrs, key).is_some() => return None,
            None => {}
        }
    }
    if !mcp_profile(&request.action) {
        signature.tag(b'}');
        return Context::from_pairs(pairs).ok();
    }
    if let Some(token) = &request.token {
        if let Some(s) = attrs.get("scopes") {
            signature.key("scopes");
            pairs.push(("scopes".to_owned(), scopes_of(s, &token.scopes, signature)?));
        }
        if let Some(Shape::Record(fields)) = attrs.get("claims") {
            signature.key("claims");
            pairs.push((
                "claims".to_owned(),
                record_of(fields, &token.claims, signature)?,
            ));
        }
    }
    let principals = [
        ("application", request.application.as_ref()),
        ("user", request.user.as_ref()),
        ("server", request.server.as_ref()),
    ];
    for (key, uid) in principals {
        if let Some(uid) = uid
            && attrs.contains_key(key)
        {
            signature.key(key);
            signature.entity(uid, false);
            pairs.push((
                key.to_owned(),
                RestrictedExpression::new_entity_uid(uid.clone()),
            ));
        }
    }
    signature.tag(b'}');
    Context::from_pairs(pairs).ok()
}

fn value_of(
    shape: &Shape,
    value: &Value,
    signature: &mut Signature,
) -> Option<RestrictedExpression> {
    let (tag, expression) = match (shape, value) {
        (Shape::Record(attrs), Value::Object(obj)) => return record_of(attrs, obj, signature),
        (Shape::Set(inner), Value::Array(items)) => {
            signature.tag(b'[');
            let mut elements = Vec::with_capacity(items.len());
            // Where the last element's type written is: a run of equal ones is kept once.
            let mut last = None;
            for v in items {
                let start = signature.bytes.len();
                elements.push(value_of(inner, v, signature)?);
                match last {
                    Some((from, to))
                        if signature.bytes.get(from..to) == signature.bytes.get(start..) =>
                    {
                        signature.bytes.truncate(start);
                    }
                    _ => last = Some((start, signature.bytes.len())),
                }
            }
            signature.tag(b']');
            return Some(RestrictedExpression::new_set(elements));
        }
        (Shape::Leaf(Leaf::String), Value::String(s)) => {
            (b's', RestrictedExpression::new_string(s.clone()))
        }
        (Shape::Leaf(Leaf::Long), Value::Number(n)) => {
            (b'l', n.as_i64().map(RestrictedExpression::new_long)?)
        }
        (Shape::Leaf(Leaf::Bool), Value::Bool(b)) => (b'b', RestrictedExpression::new_bool(*b)),
        (Shape::Leaf(Leaf::Entity), Value::Object(obj)) => {
            let escaped = match obj.get("__entity") {
                Some(Value::Object(inner)) if obj.len() == 1 => inner,
                Some(_) => return None,
                None => obj,
            };
            let uid = entity_uid(escaped)?;
            signature.entity(&uid, false);
            return Some(RestrictedExpression::new_entity_uid(uid));
        }
        (Shape::Leaf(Leaf::Extension(Some(Extension::Decimal))), Value::Number(n)) => (
            extension_tag(Extension::Decimal),
            convert::decimal_text(n).map(RestrictedExpression::new_decimal)?,
        ),
        (Shape::Leaf(Leaf::Extension(Some(Extension::Datetime))), Value::String(arg)) => (
            extension_tag(Extension::Datetime),
            convert::datetime_text(arg)
                .ok()
                .map(|t| RestrictedExpression::new_datetime(&t))?,
        ),
        (Shape::Leaf(Leaf::Extension(Some(ext))), Value::String(arg)) => {
            (extension_tag(*ext), extension(*ext, arg))
        }
        (Shape::Leaf(Leaf::Extension(Some(ext))), Value::Object(obj)) => {
            let Some(Value::Object(call)) = obj.get("__extn") else {
                return None;
            };
            let (Some(Value::String(name)), Some(Value::String(arg))) =
                (call.get("fn"), call.get("arg"))
            else {
                return None;
            };
            if !(obj.len() == 1
                && call.len() == 2
                && Extension::from_constructor(name) == Some(*ext))
            {
                return None;
            }
            (extension_tag(*ext), extension(*ext, arg))
        }
        _ => return None,
    };
    signature.tag(tag);
    Some(expression)
}

/// The signature's tag of a value of extension type `ext`.
fn extension_tag(ext: Extension) -> u8 {
    match ext {
        Extension::Ipaddr => b'4',
        Extension::Decimal => b'5',
        Extension::Datetime => b'6',
        Extension::Duration => b'7',
    }
}

fn record_of(
    attrs: &std::collections::HashMap<String, Shape>,
    obj: &Map<String, Value>,
    signature: &mut Signature,
) -> Option<RestrictedExpression> {
    if obj.contains_key("__entity") || obj.contains_key("__extn") {
        return None;
    }
    signature.tag(b'{');
    let mut fields = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        match attrs.get(k) {
            Some(s) => {
                signature.key(k);
                fields.push((k.clone(), value_of(s, v, signature)?));
            }
            None if alias_in(attrs, k).is_some() => return None,
            None => {}
        }
    }
    signature.tag(b'}');
    RestrictedExpression::new_record(fields).ok()
}

fn scopes_of(
    shape: &Shape,
    scopes: &[String],
    signature: &mut Signature,
) -> Option<RestrictedExpression> {
    match shape {
        Shape::Set(inner) if **inner == Shape::Leaf(Leaf::String) => {
            signature.tag(b'[');
            if !scopes.is_empty() {
                signature.tag(b's');
            }
            signature.tag(b']');
            Some(RestrictedExpression::new_set(
                scopes.iter().cloned().map(RestrictedExpression::new_string),
            ))
        }
        _ => None,
    }
}

fn entity_uid(obj: &Map<String, Value>) -> Option<EntityUid> {
    let (Some(Value::String(ty)), Some(Value::String(id))) = (obj.get("type"), obj.get("id"))
    else {
        return None;
    };
    if obj.len() != 2 {
        return None;
    }
    let ty: EntityTypeName = ty.parse().ok()?;
    Some(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
}

fn extension(ext: Extension, arg: &str) -> RestrictedExpression {
    match ext {
        Extension::Ipaddr => ip(arg),
        Extension::Decimal => RestrictedExpression::new_decimal(arg),
        Extension::Datetime => RestrictedExpression::new_datetime(arg),
        Extension::Duration => RestrictedExpression::new_duration(arg),
    }
}

/// How many `ip(...)` expressions a thread keeps ([`ip`]).
const IP_MEMO: usize = 256;

thread_local! {
    static IPS: std::cell::RefCell<std::collections::HashMap<String, RestrictedExpression>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// `ip(arg)`, as [`RestrictedExpression::new_ip`] builds it. That constructor parses
/// the function's name on every call (a tenth of a context with a source address),
/// so each thread keeps the expressions of the last few hundred addresses it saw
/// (a request's address is usually one of a few: Envoy's, or its callers'). The
/// expression is only the call: the address is still checked when the context is
/// built, each time.
fn ip(arg: &str) -> RestrictedExpression {
    IPS.with_borrow_mut(|memo| {
        if let Some(e) = memo.get(arg) {
            return e.clone();
        }
        let e = RestrictedExpression::new_ip(arg);
        if memo.len() >= IP_MEMO {
            memo.clear();
        }
        memo.insert(arg.to_owned(), e.clone());
        e
    })
}

/// The context through Cedar's schema-driven JSON parser: the reference path, and
/// the one that names what is wrong.
fn through_json(
    snapshot: &Snapshot,
    shape: &Shape,
    request: &DecisionRequest,
) -> Result<Context, String> {
    let given = Value::Object(request.context.clone());
    if let Some((path, declared)) = shape.alias(&given) {
        return Err(format!(
            "context does not fit the schema of {}: `{path}` is not declared but reads as the \
             declared `{declared}` (names are compared without case, `_` or `-`)",
            request.action
        ));
    }
    let Value::Object(mut attrs) = given else {
        return Err("context is not a record".into());
    };
    if mcp_profile(&request.action) {
        service_context(request, &mut attrs);
    }
    let converted = convert::convert(shape, Value::Object(attrs)).map_err(|why| {
        format!(
            "context does not fit the schema of {}: {why}",
            request.action
        )
    })?;
    let pruned = shape.prune(converted);
    if let Some((path, expected, found)) = shape.mismatch(&pruned) {
        return Err(format!(
            "context does not fit the schema of {}: `{path}` should be {expected}, not {found}",
            request.action
        ));
    }
    let context = Context::from_json_value(pruned, Some((&snapshot.schema, &request.action)))
        .map_err(|e| {
            format!(
                "context does not fit the schema of {}: {}",
                request.action,
                error_chain(&e)
            )
        })?;
    // Values are not repeated in the reason: they may be sensitive.
    context
        .validate(&snapshot.schema, &request.action)
        .map_err(|_| format!("context does not fit the schema of {}", request.action))?;
    Ok(context)
}

/// What the service fills, as JSON: the principals and the server as entity
/// references, the token's scopes and claims.
fn service_context(request: &DecisionRequest, attrs: &mut Map<String, Value>) {
    if let Some(token) = &request.token {
        attrs.insert(
            "scopes".into(),
            Value::Array(token.scopes.iter().cloned().map(Value::String).collect()),
        );
        attrs.insert("claims".into(), Value::Object(token.claims.clone()));
    }
    for (key, uid) in [
        ("application", &request.application),
        ("user", &request.user),
        ("server", &request.server),
    ] {
        if let Some(uid) = uid {
            attrs.insert(key.to_owned(), entity_ref(uid));
        }
    }
}

fn entity_ref(uid: &EntityUid) -> Value {
    let mut m = Map::new();
    m.insert("__entity".into(), uid_json(uid));
    Value::Object(m)
}

mod convert;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod differential;
