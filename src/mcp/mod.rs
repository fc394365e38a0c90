//! The MCP side of the Cedar model: entity types of namespace `Mcp`, action names,
//! and which kind of entity each MCP method acts on. Pure functions, no I/O.

use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

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
    fn methods_map_to_targets() {
        assert_eq!(target_of("tools/call"), Target::Tool);
        assert_eq!(target_of("resources/unsubscribe"), Target::Resource);
        assert_eq!(target_of("prompts/get"), Target::Prompt);
        assert_eq!(target_of("tools/list"), Target::Server);
        assert_eq!(target_of("something/new"), Target::Server);
    }
}
