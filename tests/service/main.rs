//! The integration tests of mcp-authz that need no Python: the service in-process (its
//! routers and adapters driven without a socket, and the whole service through the
//! composition root on ephemeral ports of 127.0.0.1), `mcp-authz serve` as a process
//! where the process is the subject (signals, exit codes, its log and log format,
//! descriptor limits), the CLI, identity, policies, the decision cache and the fuzz
//! targets' smoke run. One binary: linking is most of the time of the tests.
//!
//! Tests run on parallel threads of one process: a test that needs process-wide state (a
//! global tracing subscriber) runs alone in a child process (`support::run_alone`); none
//! sets environment variables or the working directory.

// `tests/support` is shared with the `e2e` binary; a plain `mod support;` here would look
// for `tests/service/support`.
#[path = "../support/mod.rs"]
mod support;

mod authzen_interop;
mod authzen_mcp;
mod cache;
mod cli_check;
mod cli_fmt;
mod cli_replay;
mod cli_schema;
mod cli_test;
mod cli_token;
mod cli_validate;
mod dry_run;
mod envoy_server_identity;
mod ext_proc;
mod forged_requests;
mod fuzz_smoke;
mod grpc_api;
mod http_observability;
mod http_serve;
mod http_tracing;
mod identity_jwks_refresh;
mod identity_jwt;
mod identity_logs;
mod identity_resolve;
mod index_differential;
mod input_edges;
mod malformed_input;
mod mcp_authorization;
mod otlp;
mod reload;
mod resource_uris;
mod serve;
mod shadow;
mod slow_clients;
mod tls;
mod typed_tools;
