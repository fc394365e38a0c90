//! Adapters: each translates its wire format into a decision request and the
//! decision back. None of them evaluates policy itself.

pub mod authzen;
pub mod ext_authz;
pub mod ext_proc;
pub mod grpc;
pub mod http;
pub mod list_filter;
pub mod listener;
pub mod mcp_check;
pub mod pbjson;
pub mod proto;
pub mod reflection;
pub mod refusal;
pub mod services;
#[cfg(test)]
mod test_support;
pub mod tls;
