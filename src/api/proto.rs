//! The generated types of our gRPC API (`proto/mcp_authz/v1`).

#![allow(missing_docs, reason = "generated code; documented in the .proto file")]
#![expect(clippy::all, reason = "generated code")]

/// `mcp_authz.v1`.
pub mod v1 {
    tonic::include_proto!("mcp_authz.v1");
}

/// The file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mcp_authz_descriptor");
