//! What several benchmarks share: the repository root and the reference request
//! (`alice` through `corpassist` calling `docs/search_documents` with two arguments).

#![allow(dead_code, reason = "each benchmark uses its own part of this module")]

use std::path::Path;

use mcp_authz::authz::DecisionRequest;
use mcp_authz::mcp::{Kind, action};
use serde_json::json;

/// The repository's root (the reference policies are under `policies/`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The reference request: `alice` through `corpassist` calls
/// `docs/search_documents` with a query and a result count.
pub fn request() -> DecisionRequest {
    let mut r = DecisionRequest::new(
        action("tools/call"),
        Kind::Tool.uid("docs/search_documents"),
    );
    r.user = Some(Kind::User.uid("alice"));
    r.application = Some(Kind::Application.uid("corpassist"));
    r.server = Some(Kind::Server.uid("docs"));
    r.context.insert(
        "arguments".into(),
        json!({ "query": "titan strategy", "max_results": 20 }),
    );
    r
}
