//! mcp-authz: a Cedar policy decision service for the MCP mesh.

pub mod identity;
