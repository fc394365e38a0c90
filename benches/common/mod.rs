//! What several benchmarks share: the repository root, the reference request
//! (`alice` through `corpassist` calling `docs/search_documents` with two arguments)
//! and copying a policy directory.

#![allow(dead_code, reason = "each benchmark uses its own part of this module")]

use std::path::Path;

use mcp_authz::authz::DecisionRequest;
use mcp_authz::mcp::{Kind, action};
use serde_json::json;

/// The repository's root (the reference policies are under `policies/`).
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Copy the directory `from` into the existing directory `to`, subdirectories and all.
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
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
