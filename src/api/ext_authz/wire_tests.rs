//! The gRPC mode's reading of a `CheckRequest` off the wire ([`super::wire`]) gives
//! what `envoy_types`' decode of the same bytes holds: the same bytes are decoded
//! both ways, and every field the adapter reads compared. Two messages are often
//! sent one after the other in one buffer — protobuf's merge: map entries from
//! both (a key's later value wins), a oneof's later member, later scalars.

use std::borrow::Cow;

use envoy_types::ext_authz::v3::pb::{CheckRequest, HttpResponse};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, Metadata, Pipe, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
    HttpRequest, Peer, Request as AttrRequest,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use proptest::prelude::*;
use prost::Message as _;
use prost::bytes::Bytes;
use tonic::Request;

use super::wire::{self, NotUtf8, WireCheckRequest};
use super::*;

const CASES: u32 = 512;

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "authorization", "Authorization", "content-type", "mcp-method", "mcp-name",
            "x-request-id", "traceparent", "accept", PARTIAL_BODY_HEADER, ":authority", "host",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z-]{1,8}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["", "a", "false", "true", "Bearer x", "application/json"])
            .prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

fn peer() -> impl Strategy<Value = Option<Peer>> {
    let address = prop_oneof![
        Just(None),
        prop::sample::select(vec!["127.0.0.1", "::1", "", "10.0.0.7"]).prop_map(|a| Some(
            AddressKind::SocketAddress(SocketAddress {
                address: a.to_owned(),
                ..SocketAddress::default()
            })
        )),
        Just(Some(AddressKind::Pipe(Pipe {
            path: "/run/envoy.sock".into(),
            mode: 0,
        }))),
    ];
    let principal = prop::sample::select(vec!["", "spiffe://mesh/ns/a/sa/agent", "x"]);
    prop::option::of((address, principal)).prop_map(|p| {
        p.map(|(address, principal)| Peer {
            address: address.map(|a| Address { address: Some(a) }),
            principal: principal.to_owned(),
            ..Peer::default()
        })
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["tools/call", "initialize", ""])
            .prop_map(|s| Kind::StringValue(s.to_owned())),
        any::<f64>().prop_map(Kind::NumberValue),
        any::<bool>().prop_map(Kind::BoolValue),
        Just(Kind::NullValue(0)),
        Just(Kind::StructValue(Struct::default())),
    ]
    .prop_map(|kind| Value { kind: Some(kind) })
}

fn metadata() -> impl Strategy<Value = Option<Metadata>> {
    let fields = prop::collection::vec((prop::sample::select(vec!["method", "x"]), value()), 0..3);
    let namespaces = prop::collection::vec(
        (
            prop::sample::select(vec![MCP_FILTER_NAMESPACE, "envoy.other"]),
            fields,
        ),
        0..3,
    );
    prop::option::of(namespaces).prop_map(|ns| {
        ns.map(|ns| Metadata {
            filter_metadata: ns
                .into_iter()
                .map(|(n, fields)| {
                    let fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
                    (n.to_owned(), Struct { fields })
                })
                .collect(),
            ..Metadata::default()
        })
    })
}

fn http() -> impl Strategy<Value = HttpRequest> {
    (
        prop::sample::select(vec!["POST", "GET", "DELETE", "post", ""]),
        prop::collection::vec((header_name(), header_value()), 0..6),
        prop::option::of(prop::collection::vec(
            (header_name(), header_value(), header_value()),
            0..4,
        )),
        prop::sample::select(vec!["", "docs.example", "mcp.local:8080"]),
        ".{0,12}",
        prop::collection::vec(any::<u8>(), 0..8),
    )
        .prop_map(
            |(method, headers, header_map, host, body, raw_body)| HttpRequest {
                method: method.to_owned(),
                headers: headers.into_iter().collect(),
                header_map: header_map.map(|hs| HeaderMap {
                    headers: hs
                        .into_iter()
                        .map(|(key, value, raw)| HeaderValue {
                            key,
                            value,
                            raw_value: raw.into_bytes(),
                        })
                        .collect(),
                }),
                host: host.to_owned(),
                body,
                raw_body,
                ..HttpRequest::default()
            },
        )
}

/// A request of many headers (in `headers` and `header_map`), their names drawn from
/// a small set so that two such requests share many.
fn many_headers() -> impl Strategy<Value = CheckRequest> {
    let name = prop_oneof![
        header_name(),
        (0..60u8).prop_map(|i| format!("mcp-{i}")),
        (0..60u8).prop_map(|i| format!("X-Many-{i}")),
    ];
    (
        prop::collection::vec((name.clone(), header_value()), 20..90),
        prop::collection::vec((name, header_value()), 0..90),
    )
        .prop_map(|(headers, header_map)| CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        method: "POST".into(),
                        headers: headers.into_iter().collect(),
                        header_map: Some(HeaderMap {
                            headers: header_map
                                .into_iter()
                                .map(|(key, value)| HeaderValue {
                                    key,
                                    value,
                                    raw_value: Vec::new(),
                                })
                                .collect(),
                        }),
                        ..HttpRequest::default()
                    }),
                    ..AttrRequest::default()
                }),
                ..AttributeContext::default()
            }),
        })
}

fn check_request() -> impl Strategy<Value = CheckRequest> {
    let extensions = prop::collection::vec(
        (
            prop::sample::select(vec!["mcp_server", "other"]),
            prop::sample::select(vec!["docs", "crm", ""]),
        ),
        0..3,
    );
    (
        prop::option::of(http()),
        peer(),
        peer(),
        extensions,
        metadata(),
    )
        .prop_map(
            |(http, source, destination, extensions, metadata_context)| CheckRequest {
                attributes: Some(AttributeContext {
                    source,
                    destination,
                    request: http.map(|http| AttrRequest {
                        http: Some(http),
                        ..AttrRequest::default()
                    }),
                    context_extensions: extensions
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect(),
                    metadata_context,
                    ..AttributeContext::default()
                }),
            },
        )
}

/// What the adapter reads, taken from `envoy_types`' decoded message field by field.
fn expected_headers(check: &CheckRequest) -> Headers<'_> {
    let mut headers = Headers::new();
    let Some(http) = http_of(check) else {
        return headers;
    };
    for (k, v) in &http.headers {
        headers.add(HeaderSource::Headers, k, Cow::Borrowed(v));
    }
    for h in http.header_map.iter().flat_map(|m| &m.headers) {
        let raw = String::from_utf8_lossy(&h.raw_value);
        if h.raw_value.is_empty() {
            headers.add(HeaderSource::HeaderMap, &h.key, Cow::Borrowed(&h.value));
        } else if h.value.is_empty() || raw == h.value {
            headers.add(HeaderSource::HeaderMap, &h.key, raw);
        } else {
            headers.add(HeaderSource::HeaderMap, &h.key, Cow::Borrowed(&h.value));
            headers.add(HeaderSource::HeaderMap, &h.key, raw);
        }
    }
    headers
}

fn http_of(check: &CheckRequest) -> Option<&HttpRequest> {
    check.attributes.as_ref()?.request.as_ref()?.http.as_ref()
}

fn assert_reads_alike(decoded: &CheckRequest, read: &EnvoyRequest<'_>) {
    let attrs = decoded.attributes.as_ref();
    let http = http_of(decoded);
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    assert_eq!(read.method, http.map_or("", |h| h.method.as_str()));
    let body: &[u8] = match http {
        Some(h) if !h.raw_body.is_empty() => &h.raw_body,
        Some(h) => h.body.as_bytes(),
        None => &[],
    };
    assert_eq!(read.body, body);
    assert_eq!(
        read.authority.map(str::to_owned),
        http.and_then(|h| non_empty(&h.host))
    );
    assert_eq!(
        read.server.map(str::to_owned),
        attrs
            .and_then(|a| a.context_extensions.get("mcp_server"))
            .and_then(|s| non_empty(s))
    );
    let principal = |p: Option<&Peer>| p.and_then(|p| non_empty(&p.principal));
    assert_eq!(
        read.spiffe_id.map(str::to_owned),
        principal(attrs.and_then(|a| a.source.as_ref()))
    );
    assert_eq!(
        read.destination_principal.map(str::to_owned),
        principal(attrs.and_then(|a| a.destination.as_ref()))
    );
    assert_eq!(
        read.source_ip,
        attrs
            .and_then(|a| a.source.as_ref())
            .and_then(|s| s.address.as_ref())
            .and_then(|a| match &a.address {
                Some(AddressKind::SocketAddress(s)) => Some(s.address.clone()),
                _ => None,
            })
    );
    assert_eq!(
        read.mcp_filter_method.map(str::to_owned),
        attrs
            .and_then(|a| a.metadata_context.as_ref())
            .and_then(|m| m.filter_metadata.get(MCP_FILTER_NAMESPACE))
            .and_then(|s| s.fields.get("method"))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(m)) => Some(m.clone()),
                _ => None,
            })
    );
    // Headers: the same names, each read alike (one value, absent, or refused: which
    // refusal depends on the order the map is iterated in, random in `envoy_types`).
    let expected = expected_headers(decoded);
    let mut names: Vec<String> = expected.singles().map(|(k, _)| k.to_owned()).collect();
    names.extend(read.headers.singles().map(|(k, _)| k.to_owned()));
    for h in http.iter().flat_map(|h| h.headers.keys()).chain(
        http.iter()
            .flat_map(|h| h.header_map.iter().flat_map(|m| &m.headers))
            .map(|h| &h.key),
    ) {
        names.push(h.to_ascii_lowercase());
    }
    for name in &names {
        let (ours, theirs) = (read.headers.get(name), expected.get(name));
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{name}: {ours:?} / {theirs:?}"
        );
        if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
            assert_eq!(ours, theirs, "{name}");
        }
    }
    let mut ours: Vec<_> = read.headers.singles().collect();
    let mut theirs: Vec<_> = expected.singles().collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(ours, theirs);
    // Picking names first reads what picking them afterwards does.
    for prefix in ["mcp-", "x-", "a", ""] {
        let picked: Vec<_> = read
            .headers
            .singles_named(|k| k.starts_with(prefix))
            .collect();
        let filtered: Vec<_> = read
            .headers
            .singles()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        assert_eq!(picked, filtered, "{prefix}");
    }
    assert_eq!(read.headers.check().is_ok(), expected.check().is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn the_wire_view_reads_what_envoy_types_decodes(
        first in check_request(),
        second in prop::option::of(check_request()),
    ) {
        let mut bytes = first.encode_to_vec();
        if let Some(second) = &second {
            bytes.extend(second.encode_to_vec());
        }
        let decoded = CheckRequest::decode(bytes.as_slice()).expect("envoy_types decodes");
        let wire = WireCheckRequest::decode(Bytes::from(bytes)).expect("the wire view decodes");
        let read = wire::envoy_request(&wire).expect("UTF-8");
        assert_reads_alike(&decoded, &read);
    }

    /// Maps of many entries (past the count where the reader finds a key's last
    /// entry through a hash table), from two messages whose keys overlap.
    #[test]
    fn many_headers_are_read_as_envoy_types_decodes_them(
        first in many_headers(),
        second in many_headers(),
    ) {
        let mut bytes = first.encode_to_vec();
        bytes.extend(second.encode_to_vec());
        let decoded = CheckRequest::decode(bytes.as_slice()).expect("envoy_types decodes");
        let wire = WireCheckRequest::decode(Bytes::from(bytes)).expect("the wire view decodes");
        let read = wire::envoy_request(&wire).expect("UTF-8");
        assert_reads_alike(&decoded, &read);
    }

    #[test]
    fn any_bytes_decode_or_fail_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        reads_alike_or_refused(&bytes);
    }

    /// A request's encoding cut short, with a byte changed, or with a byte put in:
    /// read as `envoy_types` reads it, or refused where it is refused.
    #[test]
    fn a_mangled_request_is_read_as_envoy_types_reads_it(
        check in check_request(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        how in 0..3u8,
    ) {
        let mut bytes = check.encode_to_vec();
        if !bytes.is_empty() {
            let i = at.index(bytes.len());
            match how {
                0 => bytes.truncate(i),
                1 => bytes[i] = byte,
                _ => bytes.insert(i, byte),
            }
        }
        reads_alike_or_refused(&bytes);
    }
}

/// What the wire view reads of `bytes` is what `envoy_types` decodes; a message
/// `envoy_types` decodes is never refused (the wire view checks less of it: the
/// fields it skips are not looked into).
fn reads_alike_or_refused(bytes: &[u8]) {
    let decoded = CheckRequest::decode(bytes);
    let wire = WireCheckRequest::decode(Bytes::copy_from_slice(bytes));
    if let Ok(decoded) = &decoded {
        let Ok(wire) = &wire else {
            panic!("envoy_types decodes what the wire view refuses: {wire:?}");
        };
        let read = wire::envoy_request(wire).expect("envoy_types decoded the text as UTF-8");
        assert_reads_alike(decoded, &read);
    }
}

/// Four bytes that stand for text that is not UTF-8 in [`not_utf8`].
const NOT_TEXT: &str = "\u{1}\u{2}\u{3}\u{4}";

/// A `CheckRequest` (a POST) whose `http` is set by `set`, encoded, with every
/// [`NOT_TEXT`] in it replaced by four bytes that are not UTF-8 (the lengths stay).
fn not_utf8(set: impl FnOnce(&mut HttpRequest)) -> WireCheckRequest {
    let mut http = HttpRequest {
        method: "POST".into(),
        ..HttpRequest::default()
    };
    set(&mut http);
    let check = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(AttrRequest {
                http: Some(http),
                ..AttrRequest::default()
            }),
            ..AttributeContext::default()
        }),
    };
    let mut bytes = check.encode_to_vec();
    let marker = NOT_TEXT.as_bytes();
    let mut at = 0;
    while let Some(i) = bytes[at..].windows(marker.len()).position(|w| w == marker) {
        bytes[at + i..at + i + marker.len()].copy_from_slice(b"\xff\xfe\xff\xfe");
        at += i + marker.len();
    }
    assert!(at > 0, "the marker is in the message");
    WireCheckRequest::decode(Bytes::from(bytes)).expect("protobuf")
}

#[tokio::test]
async fn text_that_is_not_utf8_is_refused_not_read() {
    let cases = [
        (not_utf8(|h| h.method = NOT_TEXT.into()), "method"),
        (not_utf8(|h| h.host = NOT_TEXT.into()), "host"),
        (not_utf8(|h| h.body = NOT_TEXT.into()), "body"),
        (
            not_utf8(|h| {
                h.headers = [("authorization".to_owned(), NOT_TEXT.to_owned())].into();
            }),
            "headers",
        ),
        (
            not_utf8(|h| {
                h.headers = [(NOT_TEXT.to_owned(), "x".to_owned())].into();
            }),
            "headers",
        ),
        (
            not_utf8(|h| {
                h.header_map = Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: NOT_TEXT.into(),
                        ..HeaderValue::default()
                    }],
                });
            }),
            "header_map",
        ),
        (
            not_utf8(|h| {
                h.header_map = Some(HeaderMap {
                    headers: vec![HeaderValue {
                        key: "accept".into(),
                        value: NOT_TEXT.into(),
                        ..HeaderValue::default()
                    }],
                });
            }),
            "header_map",
        ),
    ];
    let service = ExtAuthzGrpc::new(crate::api::test_support::ready().await);
    for (check, field) in cases {
        assert_eq!(wire::envoy_request(&check).err(), Some(NotUtf8(field)));
        // `envoy_types` refuses the same bytes: a `string` must be UTF-8.
        assert!(CheckRequest::decode(check.message().as_ref()).is_err());
        // Refused in the answer (a gRPC error would pass where Envoy fails open), with
        // a decision id, as every refusal is recorded.
        let answer = service
            .check(Request::new(check))
            .await
            .expect("an answer, not an error")
            .into_inner()
            .to_response()
            .expect("an answer that decodes");
        assert_eq!(
            answer.status.map(|s| s.code),
            Some(tonic::Code::InvalidArgument as i32),
            "{field}"
        );
        let Some(HttpResponse::DeniedResponse(denied)) = answer.http_response else {
            panic!("{field}: not denied");
        };
        assert_eq!(denied.status.map(|s| s.code), Some(400), "{field}");
        assert!(
            denied
                .headers
                .iter()
                .filter_map(|h| h.header.as_ref())
                .any(|h| h.key == DECISION_ID_HEADER && !h.value.is_empty()),
            "{field}"
        );
        assert!(
            denied.body.contains("not UTF-8"),
            "{field}: {}",
            denied.body
        );
    }
    // A raw value is bytes: not UTF-8 is read as it always was (lossily), not refused.
    let raw = not_utf8(|h| {
        h.header_map = Some(HeaderMap {
            headers: vec![HeaderValue {
                key: "accept".into(),
                raw_value: NOT_TEXT.as_bytes().to_vec(),
                ..HeaderValue::default()
            }],
        });
    });
    let read = wire::envoy_request(&raw).expect("read");
    assert_eq!(
        read.headers.get("accept"),
        Ok(Some("\u{fffd}\u{fffd}\u{fffd}\u{fffd}"))
    );
}

/// The key of field 99 (unknown to both readings) with `wire_type`.
fn key99(wire_type: u8) -> Vec<u8> {
    let key = (99u32 << 3) | u32::from(wire_type);
    let mut out = Vec::new();
    prost::encode_length_delimiter(key as usize, &mut out).expect("room");
    out
}

#[test]
fn malformed_protobuf_is_refused_where_prost_refuses_it() {
    let cat = |parts: &[&[u8]]| parts.concat();
    let (start, end, varint, delimited) = (key99(3), key99(4), key99(0), key99(2));
    let groups = |n: usize, inside: &[u8]| {
        let mut out = start.repeat(n);
        out.extend_from_slice(inside);
        out.extend(end.repeat(n));
        out
    };
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("field 0", vec![0x00]),
        ("wire type 6", vec![0x0e]),
        ("wire type 7", vec![0x0f]),
        ("a varint cut short", cat(&[&varint, &[0x80]])),
        ("a ten-byte varint", cat(&[&varint, &[0xff; 9], &[0x01]])),
        (
            "a ten-byte varint over 64 bits",
            cat(&[&varint, &[0xff; 9], &[0x02]]),
        ),
        (
            "an eleven-byte varint",
            cat(&[&varint, &[0xff; 10], &[0x01]]),
        ),
        ("a length past the end", cat(&[&delimited, &[0x05, 1, 2]])),
        ("a length to the end", cat(&[&delimited, &[0x02, 1, 2]])),
        ("fixed64 cut short", cat(&[&key99(1), &[0; 7]])),
        ("fixed32", cat(&[&key99(5), &[0; 4]])),
        ("a group's end alone", end.clone()),
        ("a group", cat(&[&start, &end])),
        ("a group that does not end", start.clone()),
        (
            "a group ended by another number",
            cat(&[&start, &[0x94, 0x06]]),
        ),
        (
            "a key over 32 bits",
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
        ),
        ("attributes as a varint", vec![0x08, 0x01]),
        ("attributes as fixed32", vec![0x0d, 0, 0, 0, 0]),
        ("attributes holding field 0", vec![0x0a, 0x01, 0x00]),
        ("attributes longer than the message", vec![0x0a, 0x03, 0x08]),
    ];
    for n in [1, 50, 97, 98, 99, 100, 101, 150] {
        cases.push(("nested groups", groups(n, &[])));
        cases.push(("nested groups around a varint", groups(n, &[0x08, 0x01])));
    }
    for (what, bytes) in cases {
        let theirs = CheckRequest::decode(bytes.as_slice());
        let ours = WireCheckRequest::decode(Bytes::from(bytes.clone()));
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "{what} ({} bytes): {ours:?} / {theirs:?}",
            bytes.len()
        );
    }
}
