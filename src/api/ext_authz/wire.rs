//! The `CheckRequest` as the gRPC mode reads it off the wire: only the fields the
//! adapter reads, each a slice of the request's buffer.
//!
//! `envoy_types`' `CheckRequest` decodes every field Envoy sends into owned values:
//! the request's header map alone is a `HashMap<String, String>` filled through
//! SipHash, a string allocated per name and per value, for a map the adapter then
//! scans once. These messages declare the same field numbers for the fields read
//! (the rest is skipped as an unknown field is), with text kept as [`Bytes`] — a
//! slice of the buffer the message arrived in, no copy — and every map as the list
//! of entries it is on the wire.
//!
//! What a decode means is unchanged: a map's later entry for a key replaces an
//! earlier one, a oneof's last member wins, a message sent twice is merged — prost
//! does this here as it does for `envoy_types`' messages, and [`envoy_request`]
//! reads each map as the `HashMap` would hold it. Text the adapter reads must be
//! UTF-8, as protobuf's `string` is ([`NotUtf8`]: the request is refused with a 400,
//! `super::refuse_unreadable`); fields it does not read are not looked at. The test
//! `the_wire_view_reads_what_envoy_types_decodes` encodes `envoy_types` messages and
//! compares what both readings give.

use std::borrow::Cow;

use prost::Message as _;
use prost::bytes::Bytes;

use super::{EnvoyRequest, HeaderSource, Headers, MCP_FILTER_NAMESPACE};
use crate::api::mcp_check::decision_meta;

/// `envoy.service.auth.v3.CheckRequest`, the fields the adapter reads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireCheckRequest {
    /// `attributes`.
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<Attributes>,
}

/// `envoy.service.auth.v3.AttributeContext`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Attributes {
    /// `source`: the downstream peer.
    #[prost(message, optional, tag = "1")]
    pub source: Option<Peer>,
    /// `destination`: this workload.
    #[prost(message, optional, tag = "2")]
    pub destination: Option<Peer>,
    /// `request`.
    #[prost(message, optional, tag = "4")]
    pub request: Option<RequestAttributes>,
    /// `context_extensions` (`map<string, string>`).
    #[prost(message, repeated, tag = "10")]
    pub context_extensions: Vec<StringEntry>,
    /// `metadata_context`.
    #[prost(message, optional, tag = "11")]
    pub metadata_context: Option<Metadata>,
}

/// `AttributeContext.Peer`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    /// `address`.
    #[prost(message, optional, tag = "1")]
    pub address: Option<Address>,
    /// `principal` (`string`).
    #[prost(bytes = "bytes", tag = "4")]
    pub principal: Bytes,
}

/// `envoy.config.core.v3.Address`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Address {
    /// The `address` oneof.
    #[prost(oneof = "AddressKind", tags = "1, 2, 3")]
    pub kind: Option<AddressKind>,
}

/// The members of `Address`'s oneof (the last one on the wire wins).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum AddressKind {
    /// `socket_address`.
    #[prost(message, tag = "1")]
    Socket(SocketAddress),
    /// `pipe` (not read).
    #[prost(message, tag = "2")]
    Pipe(Skipped),
    /// `envoy_internal_address` (not read).
    #[prost(message, tag = "3")]
    Internal(Skipped),
}

/// `envoy.config.core.v3.SocketAddress`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SocketAddress {
    /// `address` (`string`).
    #[prost(bytes = "bytes", tag = "2")]
    pub address: Bytes,
}

/// A message none of whose fields is read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Skipped {}

/// `AttributeContext.Request`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestAttributes {
    /// `http`.
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

/// `AttributeContext.HttpRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    /// `method` (`string`).
    #[prost(bytes = "bytes", tag = "2")]
    pub method: Bytes,
    /// `headers` (`map<string, string>`).
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<StringEntry>,
    /// `host` (`string`).
    #[prost(bytes = "bytes", tag = "5")]
    pub host: Bytes,
    /// `body` (`string`).
    #[prost(bytes = "bytes", tag = "11")]
    pub body: Bytes,
    /// `raw_body` (`bytes`).
    #[prost(bytes = "bytes", tag = "12")]
    pub raw_body: Bytes,
    /// `header_map`.
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

/// `envoy.config.core.v3.HeaderMap`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    /// `headers`.
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    /// `key` (`string`).
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// `value` (`string`).
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    /// `raw_value` (`bytes`).
    #[prost(bytes = "bytes", tag = "3")]
    pub raw_value: Bytes,
}

/// An entry of a `map<string, string>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StringEntry {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// The value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// `envoy.config.core.v3.Metadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// `filter_metadata` (`map<string, google.protobuf.Struct>`).
    #[prost(message, repeated, tag = "1")]
    pub filter_metadata: Vec<StructEntry>,
}

/// An entry of a `map<string, google.protobuf.Struct>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StructEntry {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Struct>,
}

/// `google.protobuf.Struct`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Struct {
    /// `fields` (`map<string, google.protobuf.Value>`).
    #[prost(message, repeated, tag = "1")]
    pub fields: Vec<ValueEntry>,
}

/// An entry of a `map<string, google.protobuf.Value>`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueEntry {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<Value>,
}

/// `google.protobuf.Value`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// The `kind` oneof.
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<Kind>,
}

/// The members of `Value`'s oneof (the last one on the wire wins).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    /// `null_value` (an enum: a varint).
    #[prost(int32, tag = "1")]
    Null(i32),
    /// `number_value`.
    #[prost(double, tag = "2")]
    Number(f64),
    /// `string_value` (`string`).
    #[prost(bytes = "bytes", tag = "3")]
    String(Bytes),
    /// `bool_value`.
    #[prost(bool, tag = "4")]
    Bool(bool),
    /// `struct_value` (not read).
    #[prost(message, tag = "5")]
    Struct(Skipped),
    /// `list_value` (not read).
    #[prost(message, tag = "6")]
    List(Skipped),
}

/// A `string` field the adapter reads is not UTF-8 (protobuf's `string` must be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CheckRequest's `{0}` is not UTF-8")]
pub struct NotUtf8(pub &'static str);

impl WireCheckRequest {
    /// An `envoy_types` `CheckRequest` read as it arrives on the wire (its encoding
    /// decoded): for callers that hold one (tests, the fuzz targets).
    pub fn of(check: &envoy_types::ext_authz::v3::pb::CheckRequest) -> Self {
        // What prost encoded, prost decodes: a `String` is UTF-8 and every field
        // number is the one these messages declare.
        Self::decode(Bytes::from(check.encode_to_vec())).unwrap_or_default()
    }
}

fn text<'a>(bytes: &'a Bytes, field: &'static str) -> Result<&'a str, NotUtf8> {
    std::str::from_utf8(bytes).map_err(|_| NotUtf8(field))
}

/// `text`, `None` when empty (proto3's absent string).
fn non_empty<'a>(bytes: &'a Bytes, field: &'static str) -> Result<Option<&'a str>, NotUtf8> {
    Ok(Some(text(bytes, field)?).filter(|s| !s.is_empty()))
}

/// The entries of a map as the decoded map holds them: a key's last entry only.
fn map_entries<T>(entries: &[T], key: impl Fn(&T) -> &[u8]) -> impl Iterator<Item = &T> {
    entries
        .iter()
        .enumerate()
        .filter(move |(i, e)| !entries.iter().skip(i + 1).any(|later| key(later) == key(e)))
        .map(|(_, e)| e)
}

/// The value the map holds for `key`: its last entry's.
fn map_get<'e, T>(entries: &'e [T], key: &[u8], key_of: impl Fn(&T) -> &[u8]) -> Option<&'e T> {
    entries.iter().rev().find(|e| key_of(e) == key)
}

/// The request Envoy describes in a `CheckRequest`; `Err` if a text field it reads is
/// not UTF-8.
pub fn envoy_request(check: &WireCheckRequest) -> Result<EnvoyRequest<'_>, NotUtf8> {
    let attrs = check.attributes.as_ref();
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let mut headers = Headers::with_capacity(http.map_or(0, |h| {
        h.headers.len() + h.header_map.as_ref().map_or(0, |m| m.headers.len())
    }));
    if let Some(h) = http {
        for entry in map_entries(&h.headers, |e| &e.key) {
            let name = text(&entry.key, "headers")?;
            let value = text(&entry.value, "headers")?;
            headers.add(HeaderSource::Headers, name, Cow::Borrowed(value));
        }
    }
    if let Some(map) = http.and_then(|h| h.header_map.as_ref()) {
        for h in &map.headers {
            let key = text(&h.key, "header_map")?;
            let value = text(&h.value, "header_map")?;
            // Envoy fills `value` or `raw_value`; two different ones are two values.
            let raw = (!h.raw_value.is_empty()).then(|| String::from_utf8_lossy(&h.raw_value));
            match raw {
                Some(raw) if value.is_empty() || raw == value => {
                    headers.add(HeaderSource::HeaderMap, key, raw);
                }
                Some(raw) => {
                    headers.add(HeaderSource::HeaderMap, key, Cow::Borrowed(value));
                    headers.add(HeaderSource::HeaderMap, key, raw);
                }
                None => headers.add(HeaderSource::HeaderMap, key, Cow::Borrowed(value)),
            }
        }
    }
    let body: &[u8] = match http {
        Some(h) if !h.raw_body.is_empty() => &h.raw_body,
        Some(h) => text(&h.body, "body")?.as_bytes(),
        None => &[],
    };
    let source = attrs.and_then(|a| a.source.as_ref());
    let source_ip = match source
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.kind.as_ref())
    {
        Some(AddressKind::Socket(s)) => Some(text(&s.address, "source.address")?.to_owned()),
        _ => None,
    };
    let server = match attrs.and_then(|a| map_get(&a.context_extensions, b"mcp_server", |e| &e.key))
    {
        Some(entry) => non_empty(&entry.value, "context_extensions")?,
        None => None,
    };
    let filter_method = attrs
        .and_then(|a| a.metadata_context.as_ref())
        .and_then(|m| {
            map_get(&m.filter_metadata, MCP_FILTER_NAMESPACE.as_bytes(), |e| {
                &e.key
            })
        })
        .and_then(|e| e.value.as_ref())
        .and_then(|s| map_get(&s.fields, b"method", |e| &e.key))
        .and_then(|e| e.value.as_ref())
        .and_then(|v| match &v.kind {
            Some(Kind::String(method)) => Some(method),
            _ => None,
        });
    let meta = decision_meta(
        headers.get_lenient("traceparent"),
        headers.get_lenient("x-request-id"),
    );
    Ok(EnvoyRequest {
        meta,
        method: match http {
            Some(h) => text(&h.method, "method")?,
            None => "",
        },
        headers,
        body,
        server,
        authority: match http {
            Some(h) => non_empty(&h.host, "host")?,
            None => None,
        },
        destination_principal: match attrs.and_then(|a| a.destination.as_ref()) {
            Some(d) => non_empty(&d.principal, "destination.principal")?,
            None => None,
        },
        spiffe_id: match source {
            Some(s) => non_empty(&s.principal, "source.principal")?,
            None => None,
        },
        source_ip,
        mcp_filter_method: filter_method
            .map(|m| text(m, "metadata_context"))
            .transpose()?,
        // Envoy made the mTLS handshake: `source.principal` is proven when Envoy is
        // trusted (`admit_envoy_peer`), never asserted by the client.
        asserted_spiffe_id: None,
        // Nor is the destination: a header naming one is never read in this mode.
        asserted_destination_principal: None,
        caller: None,
    })
}
