//! `mcp_authz::fuzzing::ext_authz` under libFuzzer (see RELIABILITY.md).
//!
//! The input is an Envoy `CheckRequest` in protobuf encoding. Mutating those bytes
//! mostly breaks the framing, so two of three mutations decode the request, mutate
//! one field with libFuzzer's mutator (the JSON-RPC body, a header value or name,
//! the HTTP method, the peer's SPIFFE id, the route's `mcp_server`) and encode it
//! again; the third mutates the bytes as they are.
#![no_main]

use envoy_types::ext_authz::v3::pb::CheckRequest;
use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use prost::Message as _;

fuzz_target!(|data: &[u8]| mcp_authz::fuzzing::ext_authz(data));

/// Mutate `bytes` in place with libFuzzer's mutator, letting it grow.
fn mutate_bytes(bytes: &mut Vec<u8>) {
    let len = bytes.len();
    bytes.resize(len * 2 + 64, 0);
    let capacity = bytes.len();
    let new_len = fuzzer_mutate(bytes, len, capacity);
    bytes.truncate(new_len);
}

fn mutate_string(s: &mut String) {
    let mut bytes = std::mem::take(s).into_bytes();
    mutate_bytes(&mut bytes);
    *s = String::from_utf8_lossy(&bytes).into_owned();
}

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    if seed % 3 == 0 {
        return fuzzer_mutate(data, size, max_size);
    }
    let Ok(mut check) = CheckRequest::decode(&data[..size]) else {
        return fuzzer_mutate(data, size, max_size);
    };
    let attrs = check.attributes.get_or_insert_with(Default::default);
    let choice = (seed / 3) % 7;
    match choice {
        0..=2 => {
            let http = attrs
                .request
                .get_or_insert_with(Default::default)
                .http
                .get_or_insert_with(Default::default);
            match choice {
                0 => mutate_bytes(&mut http.raw_body),
                1 => {
                    let mut names: Vec<String> = http.headers.keys().cloned().collect();
                    names.sort();
                    if names.is_empty() || seed % 5 == 0 {
                        let mut name = String::from("x-");
                        mutate_string(&mut name);
                        http.headers.insert(name, String::new());
                    } else {
                        let name = &names[(seed as usize / 21) % names.len()];
                        if seed % 2 == 0 {
                            if let Some(value) = http.headers.get_mut(name) {
                                mutate_string(value);
                            }
                        } else if let Some(value) = http.headers.remove(name) {
                            let mut name = name.clone();
                            mutate_string(&mut name);
                            http.headers.insert(name, value);
                        }
                    }
                }
                _ => mutate_string(&mut http.method),
            }
        }
        3 => mutate_string(&mut attrs.source.get_or_insert_with(Default::default).principal),
        4 => mutate_string(
            attrs
                .context_extensions
                .entry("mcp_server".to_owned())
                .or_default(),
        ),
        _ => {
            // Mostly the body: it carries the most structure.
            let http = attrs
                .request
                .get_or_insert_with(Default::default)
                .http
                .get_or_insert_with(Default::default);
            mutate_bytes(&mut http.raw_body);
        }
    }
    let encoded = check.encode_to_vec();
    if encoded.len() > max_size {
        return fuzzer_mutate(data, size, max_size);
    }
    data[..encoded.len()].copy_from_slice(&encoded);
    encoded.len()
});
