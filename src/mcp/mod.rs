//! The MCP side of the Cedar model: entity types of namespace `Mcp`, action names,
//! and which kind of entity each MCP method acts on. Pure functions, no I/O.
//!
//! [`jsonrpc`] maps MCP JSON-RPC bodies (and the 2026-07-28 `Mcp-Method` /
//! `Mcp-Name` headers) to the action, resource, arguments and id of each call.
//! [`lists`] knows the list methods: what each lists, the call that uses an
//! entry, and their results read strictly and filtered.
//! [`uri`] puts resource URIs in the one normal form every `Mcp::Resource` id
//! is made of, on every interface.

use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

pub mod import;
pub(crate) mod json;
pub mod jsonrpc;
pub mod lists;
pub mod sse;
pub use crate::uri;

/// The Cedar namespace of the MCP model.
pub const NAMESPACE: &str = "Mcp";

/// The entity types of the MCP model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `Mcp::User`: the end user.
    User,
    /// `Mcp::Group`: a group of users or applications.
    Group,
    /// `Mcp::Application`: the calling GenAI application or agent.
    Application,
    /// `Mcp::Server`: an MCP server of the mesh.
    Server,
    /// `Mcp::Tool`: a tool, id `<server>/<tool name>`.
    Tool,
    /// `Mcp::Resource`: a resource, id `<server>/<uri>`.
    Resource,
    /// `Mcp::Prompt`: a prompt, id `<server>/<prompt name>`.
    Prompt,
    /// `Mcp::Action`: an MCP method.
    Action,
}

static TYPE_NAMES: LazyLock<[EntityTypeName; 8]> = LazyLock::new(|| {
    [
        "User",
        "Group",
        "Application",
        "Server",
        "Tool",
        "Resource",
        "Prompt",
        "Action",
    ]
    .map(|t| {
        #[expect(clippy::expect_used, reason = "constant, valid type names")]
        EntityTypeName::from_str(&format!("{NAMESPACE}::{t}")).expect("valid type name")
    })
});

impl Kind {
    /// The Cedar entity type name, e.g. `Mcp::Tool`.
    pub fn type_name(self) -> &'static EntityTypeName {
        #[expect(
            clippy::indexing_slicing,
            reason = "one name per variant, in the order of declaration"
        )]
        &TYPE_NAMES[self as usize]
    }

    /// The entity `Mcp::<Kind>::"<id>"`.
    pub fn uid(self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.type_name().clone(), EntityId::new(id))
    }
}

/// The action of an MCP method: `Mcp::Action::"<method>"`.
pub fn action(method: &str) -> EntityUid {
    Kind::Action.uid(method)
}

/// What an MCP method acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The server as a whole (initialize, ping, the list methods, ...).
    Server,
    /// One tool (`tools/call`).
    Tool,
    /// One resource (`resources/read`, `resources/subscribe`, `resources/unsubscribe`).
    Resource,
    /// One prompt (`prompts/get`).
    Prompt,
}

impl Target {
    /// The entity kind of the target.
    pub fn kind(self) -> Kind {
        match self {
            Target::Server => Kind::Server,
            Target::Tool => Kind::Tool,
            Target::Resource => Kind::Resource,
            Target::Prompt => Kind::Prompt,
        }
    }
}

/// What the MCP method `method` acts on. Methods that name no tool, resource or
/// prompt act on the server.
pub fn target_of(method: &str) -> Target {
    match method {
        "tools/call" => Target::Tool,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Target::Resource,
        "prompts/get" => Target::Prompt,
        _ => Target::Server,
    }
}

/// The id of a tool, resource or prompt: qualified by its server, `<server>/<name>`.
pub fn qualified_id(server: &str, name: &str) -> String {
    format!("{server}/{name}")
}

/// The `Mcp::Resource` entity of the resource URI (or URI template) `uri` of
/// `server`, its URI in normal form: `Mcp::Resource::"<server>/<normal uri>"`.
/// A URI without a normal form is refused (see [`uri`]).
pub fn resource_uid(server: &str, uri: &str) -> Result<EntityUid, uri::UriError> {
    let id = uri::normal_resource_id(&qualified_id(server, uri))?;
    Ok(Kind::Resource.uid(&id))
}

/// The resource entity and its server for an MCP `method`, from how a person
/// names it: `server/name` for a tool, resource (`server/uri`) or prompt, the
/// server id for methods on a server, or a full Cedar uid. `server` qualifies a
/// bare name. A resource's URI is put in normal form, or refused ([`uri`]).
pub fn resource_for(
    method: &str,
    resource: &str,
    server: Option<&str>,
) -> Result<(EntityUid, Option<EntityUid>), String> {
    if resource.contains("::\"") {
        let mut uid = EntityUid::from_str(resource)
            .map_err(|e| format!("`{resource}` is not an entity uid: {e}"))?;
        if uid.type_name() == Kind::Resource.type_name() {
            let id = uri::normal_resource_id(uid.id().unescaped())
                .map_err(|e| format!("`{}` is refused: {e}", uri::Shown(resource)))?;
            uid = Kind::Resource.uid(&id);
        }
        let id = uid.id().unescaped().to_owned();
        let server = match server {
            Some(s) => Some(s.to_owned()),
            None if uid.type_name() == Kind::Server.type_name() => Some(id),
            None if [Kind::Tool, Kind::Resource, Kind::Prompt]
                .iter()
                .any(|k| k.type_name() == uid.type_name()) =>
            {
                id.split_once('/').map(|(s, _)| s.to_owned())
            }
            None => None,
        };
        return Ok((uid, server.map(|s| Kind::Server.uid(&s))));
    }
    let target = target_of(method);
    if target == Target::Server {
        if let Some(s) = server
            && s != resource
        {
            return Err(format!(
                "`{method}` acts on a server: `{resource}` and `--server {s}` disagree"
            ));
        }
        let uid = Kind::Server.uid(resource);
        return Ok((uid.clone(), Some(uid)));
    }
    let (server, name) = match server {
        Some(s) => (
            s,
            resource.strip_prefix(&format!("{s}/")).unwrap_or(resource),
        ),
        None => resource.split_once('/').ok_or_else(|| {
            format!("`{resource}` names no server: write `server/name`, or give the server")
        })?,
    };
    if server.is_empty() || name.is_empty() {
        return Err(format!("`{resource}` is not of the form `server/name`"));
    }
    let uid = if target == Target::Resource {
        resource_uid(server, name).map_err(|e| format!("`{}` is refused: {e}", uri::Shown(name)))?
    } else {
        target.kind().uid(&qualified_id(server, name))
    };
    Ok((uid, Some(Kind::Server.uid(server))))
}

/// A decision request for `action` (an MCP method, or a full Cedar action uid) on
/// `resource` as [`resource_for`] reads it: action, resource and server, no principal
/// or context yet. How `check` and the policy test suites name what they decide.
pub fn request_for(
    action: &str,
    resource: &str,
    server: Option<&str>,
) -> Result<crate::authz::DecisionRequest, String> {
    let (action, method) = if action.contains("::\"") {
        let uid = EntityUid::from_str(action)
            .map_err(|e| format!("`{action}` is not an action uid: {e}"))?;
        let method = uid.id().unescaped().to_owned();
        (uid, method)
    } else {
        (self::action(action), action.to_owned())
    };
    let (resource, server) = resource_for(&method, resource, server)?;
    let mut request = crate::authz::DecisionRequest::new(action, resource);
    request.server = server;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_namespaced_and_qualified() {
        assert_eq!(
            Kind::Tool.uid(&qualified_id("docs", "search")).to_string(),
            r#"Mcp::Tool::"docs/search""#
        );
        assert_eq!(
            action("tools/call").to_string(),
            r#"Mcp::Action::"tools/call""#
        );
    }

    #[test]
    fn resources_are_named_as_people_write_them() {
        let r = |m, res, s| {
            resource_for(m, res, s).map(|(u, s)| (u.to_string(), s.map(|s| s.to_string())))
        };
        let docs = Some(r#"Mcp::Server::"docs""#.to_owned());
        assert_eq!(
            r("tools/call", "docs/get_document", None),
            Ok((r#"Mcp::Tool::"docs/get_document""#.into(), docs.clone()))
        );
        assert_eq!(
            r("tools/call", "get_document", Some("docs")),
            Ok((r#"Mcp::Tool::"docs/get_document""#.into(), docs.clone()))
        );
        assert_eq!(
            r("resources/read", "docs/docs://titan/q1", None),
            Ok((
                r#"Mcp::Resource::"docs/docs://titan/q1""#.into(),
                docs.clone()
            ))
        );
        assert_eq!(
            r("resources/read", "docs://titan/q1", Some("docs")),
            Ok((
                r#"Mcp::Resource::"docs/docs://titan/q1""#.into(),
                docs.clone()
            ))
        );
        assert_eq!(
            r("tools/list", "docs", None),
            Ok((r#"Mcp::Server::"docs""#.into(), docs.clone()))
        );
        assert_eq!(
            r("prompts/get", r#"Mcp::Prompt::"docs/p""#, None),
            Ok((r#"Mcp::Prompt::"docs/p""#.into(), docs))
        );
        assert!(r("tools/call", "get_document", None).is_err());
        assert!(r("tools/call", "/x", None).is_err());
        assert!(r("tools/list", "docs", Some("projects")).is_err());
        assert!(r("tools/call", r#"Mcp::Tool::"unterminated"#, None).is_err());
    }

    #[test]
    fn resources_named_by_people_are_in_normal_form() {
        let budget = Ok(r#"Mcp::Resource::"docs/docs://finance/budget-2026""#.to_owned());
        let r = |m, res, s| resource_for(m, res, s).map(|(u, _)| u.to_string());
        for alias in [
            "docs/docs://finance/budget-2026",
            "docs/DOCS://finance/budget-2026",
            "docs/docs://finance/titan/../budget-2026",
            "docs/docs://finance/x/%2e%2e/budget-2026",
            r#"Mcp::Resource::"docs/DOCS://FINANCE/./budget-2026""#,
            r#"Mcp::Resource::"docs/docs://finance/%62udget-2026""#,
        ] {
            assert_eq!(r("resources/read", alias, None), budget, "{alias}");
            assert_eq!(r("resources/subscribe", alias, None), budget, "{alias}");
        }
        assert_eq!(
            r(
                "resources/read",
                "docs://finance/a/../budget-2026",
                Some("docs")
            ),
            budget
        );
        for refused in [
            "docs/docs://@finance/budget-2026",
            "docs/docs://finance:/budget-2026",
            r#"Mcp::Resource::"docs/docs://finance/budget-2026#x""#,
            "docs/ docs://finance/budget-2026",
        ] {
            let e = r("resources/read", refused, None).expect_err(refused);
            assert!(e.contains("is refused: "), "{e}");
        }
        assert_eq!(
            resource_uid("docs", "DOCS://finance/{id}").map(|u| u.to_string()),
            Ok(r#"Mcp::Resource::"docs/docs://finance/{id}""#.to_owned())
        );
        // Tools and prompts are names, not URIs: as written.
        assert_eq!(
            r("tools/call", "docs/GET_document", None),
            Ok(r#"Mcp::Tool::"docs/GET_document""#.to_owned())
        );
    }

    #[test]
    fn methods_map_to_targets() {
        assert_eq!(target_of("tools/call"), Target::Tool);
        assert_eq!(target_of("resources/unsubscribe"), Target::Resource);
        assert_eq!(target_of("prompts/get"), Target::Prompt);
        assert_eq!(target_of("tools/list"), Target::Server);
        assert_eq!(target_of("something/new"), Target::Server);
    }
}
