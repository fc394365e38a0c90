//! Adapters: each translates its wire format into a decision request and the
//! decision back. None of them evaluates policy itself.

pub mod authzen;
pub mod http;
