//! Building the Cedar context of a request by the context contract (DESIGN.md):
//! only what the schema declares for the action, read as the declared types.

use cedar_policy::{Context, EntityUid};
use serde_json::{Map, Value};

use super::{DecisionRequest, uid_json};
use crate::policy::{Snapshot, error_chain};

/// The context for `request`: `application`, `user` and `server` where known,
/// plus the request's other attributes, less whatever the schema does not declare
/// for the action. A declared attribute of the wrong type is an error (a deny).
pub fn build_context(snapshot: &Snapshot, request: &DecisionRequest) -> Result<Context, String> {
    let Some(shape) = snapshot.context_shapes.get(&request.action) else {
        return Err(format!("unknown action {}", request.action));
    };
    let mut attrs = request.context.clone();
    let mut put = |key: &str, uid: &Option<EntityUid>| {
        if let Some(uid) = uid {
            attrs.insert(key.to_owned(), entity_ref(uid));
        }
    };
    put("application", &request.application);
    put("user", &request.user);
    put("server", &request.server);
    let pruned = shape.prune(Value::Object(attrs));
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

fn entity_ref(uid: &EntityUid) -> Value {
    let mut m = Map::new();
    m.insert("__entity".into(), uid_json(uid));
    Value::Object(m)
}
