//! mcp-authz: a Cedar policy decision service for the MCP mesh.
//!
//! Security teams write Cedar policies in files ([`policy`]); every interface
//! translates its wire format into a [`authz::DecisionRequest`] and asks the one
//! decision core ([`authz`]) for a [`authz::Decision`]. Who asks is proven by
//! [`identity`]: verified tokens and SPIFFE IDs.

// What the service's own code may not do (the decision core and every adapter
// run on requests from anyone): panic on an `unwrap`, an `expect`, a `panic!` or
// an index out of bounds. Tests may.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod api;
pub mod app;
pub mod authz;
pub mod cli;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod mcp;
pub mod parallel;
pub mod policy;
pub mod policytest;
pub mod replay;
pub mod telemetry;
pub mod trace;
pub mod uri;
