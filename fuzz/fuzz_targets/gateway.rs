//! `mcp_authz::fuzzing::gateway` under libFuzzer (see RELIABILITY.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_authz::fuzzing::gateway(data));
