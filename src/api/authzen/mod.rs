//! OpenID AuthZEN Authorization API 1.0: the wire model, its mapping to a
//! [`DecisionRequest`](crate::authz::DecisionRequest), batches and searches.
//! Transport-free (the HTTP binding is in [`super::http`]); every decision is made by
//! [`Engine::decide`] (a mapping that ends in a deny by [`Engine::reject`]).
//!
//! # Mapping
//!
//! - `action.name` → the Cedar action with that id among the schema's actions, in
//!   whatever namespace declares it (`read`, `tools/call`); an id declared in several
//!   namespaces must be written as a full uid (`Mcp::Action::"tools/call"`).
//! - `subject` and `resource` `type` + `id` → a Cedar entity. A qualified type
//!   (`Mcp::Tool`) is taken as it is; a bare one (`user`, `tool`, `record`) matches
//!   the schema's entity types by their last segment, case-insensitively, preferring
//!   the action's namespace. An ambiguous name is a bad request; an unknown one is a
//!   deny.
//! - A subject whose type is an `Application` type is the application principal
//!   (an application-only request); any other subject is the user principal.
//! - For actions of the MCP profile (the `Mcp` namespace), `context.agent` (or
//!   `context.application`), a string id or an `{type, id, properties}` object,
//!   names the application acting for the subject; it is taken out of the
//!   context. Other namespaces keep the context exactly as given.
//! - `properties` of the subject, resource and agent → attributes of those entities
//!   for this request only (entity data wins where it sets the same attribute);
//!   properties the schema does not declare for the type are left out.
//! - `action.properties` → `context.action` (a record), unless the context has one.
//! - `context` → the Cedar context (only what the schema declares for the action).
//! - MCP binding: a resource of type `Mcp::Tool`, `Mcp::Resource` or `Mcp::Prompt`
//!   with id `server/name` belongs to `Mcp::Server::"server"` (so a tool the entity
//!   data does not list is still covered by server-wide policies). The URI of an
//!   `Mcp::Resource` id (`server/uri`) is put in normal form as on every other
//!   interface ([`crate::uri`]); one without a normal form is a deny.
//! - A verified bearer token's identity wins over the body: its user (as the
//!   subject's type), application, groups, scopes and claims. A token that names
//!   no application leaves the one the body names.
//! - For actions of the MCP profile, a context attribute that only the service
//!   fills (`user`, `application` other than as the agent, `server`, `scopes`,
//!   `claims`, in any spelling that reads as one of them) is a bad request.
//!
//! # Explanations
//!
//! Responses carry only `decision` unless the request sets `"options": {"explain":
//! true}` (top level); then each decision has a `context` with the decision id, the
//! reason, the snapshot generation and content digest (`policy_digest`) and each
//! principal's evaluation with its determining policies (`id`, `file`, `line`). A failed batch item always has
//! `context.error` (`status`, `message`).
//!
//! # Layout
//!
//! `wire` reads requests and writes decision objects, `map` turns an evaluation into
//! a decision request, `batch` answers
//! `/access/v1/evaluations` and `search` the three searches; [`decide`] is the one
//! decision of an evaluation they share.

mod batch;
mod map;
mod search;
#[cfg(test)]
mod tests;
mod wire;

pub use batch::{BatchResult, Semantic, evaluate_batch, semantic};
pub use map::{MapError, declared_properties, to_decision_request};
pub use search::{MAX_PAGE, MAX_SEARCH_DECISIONS, SearchKind, search};
pub use wire::{
    ActionRef, EntityRef, Evaluation, decision_json, explain_requested, parse_action,
    parse_context, parse_entity, parse_evaluation,
};

use super::mcp_check::server_audience;
use super::refusal::Refusal;
use crate::authz::{DecisionMeta, Engine, Interface, Outcome};
use crate::config::ResourceServers;
use crate::identity::Identity;
use crate::policy::Snapshot;

/// A request (or a batch item) that cannot be read: an invalid request (HTTP 400).
fn bad(msg: impl Into<String>) -> Refusal {
    Refusal::invalid(msg)
}

/// Decide one evaluation: a bad request, or an outcome (a mapping failure that is
/// not the caller's fault is a recorded deny).
pub fn decide(
    engine: &Engine,
    servers: &ResourceServers,
    snapshot: &Snapshot,
    eval: &Evaluation,
    identity: Option<&Identity>,
    meta: &DecisionMeta,
) -> Result<Outcome, Refusal> {
    match to_decision_request(snapshot, eval, identity) {
        Ok(request) => {
            // A token asked about one MCP server must be for it (RFC 8707), as on
            // every interface that knows the server.
            if let (Some(identity), Some(server)) = (identity, &request.server)
                && server.type_name().to_string() == "Mcp::Server"
            {
                let id = server.id().unescaped();
                if let Err(e) = server_audience(servers, identity, id) {
                    return Err(Refusal::unauthenticated(
                        &e,
                        servers.get(id).map(AsRef::as_ref),
                    ));
                }
            }
            Ok(engine.decide(snapshot, Interface::Authzen, &request, meta))
        }
        Err(MapError::Deny(reason)) => {
            Ok(engine.reject(snapshot, Interface::Authzen, reason, meta))
        }
        Err(MapError::Bad(refusal)) => Err(refusal),
    }
}
