//! The `CheckRequest` as the gRPC mode reads it off the wire: only the fields the
//! adapter reads, each a span of the request's buffer.
//!
//! `envoy_types`' `CheckRequest` decodes every field Envoy sends into owned values:
//! the request's header map alone is a `HashMap<String, String>` filled through
//! SipHash, a string allocated per name and per value, for a map the adapter then
//! scans once. [`WireCheckRequest`] keeps the message's bytes as they arrived and,
//! read once, where each field the adapter reads lies in them (a [`Span`]); the
//! rest is skipped as an unknown field is.
//!
//! What a decode means is protobuf's, as prost decodes `envoy_types`' messages: a
//! scalar's last occurrence wins, a map's later entry for a key replaces an earlier
//! one (kept here as the list of entries it is on the wire; [`envoy_request`] reads
//! each map as the `HashMap` would hold it), a message field sent twice is merged,
//! a oneof's last member wins (merged into the one before when it is the same
//! member). Malformed protobuf is refused where prost refuses it: a key with field
//! number 0 or wire type 6 or 7, a truncated or over-long varint, a length past the
//! end, a field the adapter reads sent with another wire type, an unmatched group,
//! nesting past 100 levels; a message the adapter does not read into but prost
//! decodes (an address's `pipe`, a value's `struct_value`) is checked as well-formed.
//! Text the adapter reads must be UTF-8, as protobuf's `string` is ([`NotUtf8`]: the
//! request is refused with a 400, `super::refuse_unreadable`); fields it does not
//! read are not looked at. The test `the_wire_view_reads_what_envoy_types_decodes`
//! encodes `envoy_types` messages and compares what both readings give.

use std::borrow::Cow;

use prost::bytes::Bytes;

use super::{EnvoyRequest, HeaderSource, Headers, MCP_FILTER_NAMESPACE};
use crate::api::mcp_check::decision_meta;

/// Where a field's bytes lie in the message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// An Envoy `CheckRequest` as it arrived, and where the fields the adapter reads lie
/// in it.
#[derive(Debug, Clone, Default)]
pub struct WireCheckRequest {
    message: Bytes,
    attributes: Option<Attributes>,
}

/// `envoy.service.auth.v3.AttributeContext`.
#[derive(Debug, Clone, Default)]
struct Attributes {
    /// `source` (1): the downstream peer.
    source: Option<Peer>,
    /// `destination` (2): this workload.
    destination: Option<Peer>,
    /// `request.http` (4, then 2).
    http: Option<HttpRequest>,
    /// `context_extensions` (10, `map<string, string>`).
    context_extensions: Vec<StringEntry>,
    /// `metadata_context.filter_metadata` (11, then 1: `map<string, Struct>`).
    filter_metadata: Vec<StructEntry>,
}

/// `AttributeContext.Peer`.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// `address` (1): its `socket_address.address` when the oneof holds a socket.
    address: Option<AddressKind>,
    /// `principal` (4).
    principal: Span,
}

/// The member of `envoy.config.core.v3.Address`'s oneof (the last one on the wire).
#[derive(Debug, Clone, Copy)]
enum AddressKind {
    /// `socket_address` (1): its `address` (2).
    Socket(Span),
    /// `pipe` (2) or `envoy_internal_address` (3), not read.
    Other,
}

/// `AttributeContext.HttpRequest`.
#[derive(Debug, Clone, Default)]
struct HttpRequest {
    /// `method` (2).
    method: Span,
    /// `headers` (3, `map<string, string>`).
    headers: Vec<StringEntry>,
    /// `host` (5).
    host: Span,
    /// `body` (11).
    body: Span,
    /// `raw_body` (12).
    raw_body: Span,
    /// `header_map.headers` (13, then 1).
    header_map: Option<Vec<HeaderValue>>,
}

/// `envoy.config.core.v3.HeaderValue`.
#[derive(Debug, Clone, Copy, Default)]
struct HeaderValue {
    /// `key` (1).
    key: Span,
    /// `value` (2).
    value: Span,
    /// `raw_value` (3).
    raw_value: Span,
}

/// An entry of a `map<string, string>`.
#[derive(Debug, Clone, Copy, Default)]
struct StringEntry {
    key: Span,
    value: Span,
}

/// An entry of `map<string, google.protobuf.Struct>`: its `Struct`'s fields.
#[derive(Debug, Clone, Default)]
struct StructEntry {
    key: Span,
    fields: Vec<ValueEntry>,
}

/// An entry of `google.protobuf.Struct.fields` (`map<string, Value>`).
#[derive(Debug, Clone, Copy, Default)]
struct ValueEntry {
    key: Span,
    /// The `Value`'s `kind`: `None` when the entry has no value or the value no kind.
    value: Option<ValueKind>,
}

/// The member of `google.protobuf.Value`'s oneof (the last one on the wire).
#[derive(Debug, Clone, Copy)]
enum ValueKind {
    /// `string_value` (3).
    String(Span),
    /// Any other member (null, number, bool, struct, list), not read.
    Other,
}

/// Why a message is not a `CheckRequest`: malformed protobuf, or a field the adapter
/// reads sent with another wire type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CheckRequest is not protobuf: {0}")]
pub struct Malformed(&'static str);

/// A `string` field the adapter reads is not UTF-8 (protobuf's `string` must be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CheckRequest's `{0}` is not UTF-8")]
pub struct NotUtf8(pub &'static str);

/// How deep messages and groups may nest, as prost's decoding allows.
const NESTING: u32 = 100;

/// A field's value on the wire.
#[derive(Clone, Copy)]
enum Wire {
    Varint,
    Fixed64,
    Delimited(Span),
    Group,
    Fixed32,
}

/// The fields of one message, read in order.
struct Fields<'m> {
    message: &'m [u8],
    at: usize,
    end: usize,
    /// How many more levels may nest below this message.
    budget: u32,
}

impl<'m> Fields<'m> {
    fn of(message: &'m [u8], span: Span, budget: u32) -> Result<Self, Malformed> {
        let budget = budget.checked_sub(1).ok_or(Malformed("nested too deep"))?;
        Ok(Self {
            message,
            at: span.start as usize,
            end: span.end as usize,
            budget,
        })
    }

    /// The fields of a message that lies in `span`, one level below this one.
    fn nested(&self, span: Span) -> Result<Fields<'m>, Malformed> {
        Fields::of(self.message, span, self.budget)
    }

    fn byte(&mut self) -> Result<u8, Malformed> {
        if self.at >= self.end {
            return Err(Malformed("a varint runs past the end"));
        }
        let b = self
            .message
            .get(self.at)
            .copied()
            .ok_or(Malformed("a varint runs past the end"))?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            // The tenth byte holds bit 63 only.
            if i == 9 && b > 1 {
                return Err(Malformed("a varint is longer than 64 bits"));
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed("a varint is longer than 64 bits"))
    }

    fn skip(&mut self, n: usize) -> Result<Span, Malformed> {
        let start = self.at;
        if self.end - start < n {
            return Err(Malformed("a field runs past the end"));
        }
        self.at += n;
        Ok(span(start, self.at))
    }

    /// The next field: its number and wire type, the value read past (a group
    /// skipped whole); `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Wire)>, Malformed> {
        if self.at >= self.end {
            return Ok(None);
        }
        let (number, wire_type) = self.key()?;
        if wire_type == 4 {
            return Err(Malformed("a group ends that did not start"));
        }
        Ok(Some((number, self.value(number, wire_type)?)))
    }

    fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = u32::try_from(self.varint()?).map_err(|_| Malformed("a key is over 32 bits"))?;
        let number = key >> 3;
        if number == 0 {
            return Err(Malformed("a field numbered 0"));
        }
        Ok((number, (key & 7) as u8))
    }

    fn value(&mut self, number: u32, wire_type: u8) -> Result<Wire, Malformed> {
        match wire_type {
            0 => self.varint().map(|_| Wire::Varint),
            1 => self.skip(8).map(|_| Wire::Fixed64),
            2 => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| Malformed("a field runs past the end"))?;
                self.skip(len).map(Wire::Delimited)
            }
            3 => self.group(number).map(|()| Wire::Group),
            5 => self.skip(4).map(|_| Wire::Fixed32),
            _ => Err(Malformed("a field of an unknown wire type")),
        }
    }

    /// Skip a group (wire type 3) up to its end, which must carry its number.
    fn group(&mut self, number: u32) -> Result<(), Malformed> {
        let mut inner = Fields {
            message: self.message,
            at: self.at,
            end: self.end,
            budget: self
                .budget
                .checked_sub(1)
                .ok_or(Malformed("nested too deep"))?,
        };
        loop {
            if inner.at >= inner.end {
                return Err(Malformed("a group does not end"));
            }
            let (n, wire_type) = inner.key()?;
            if wire_type == 4 {
                if n != number {
                    return Err(Malformed("a group ends with another number"));
                }
                self.at = inner.at;
                return Ok(());
            }
            // Past the last level, a group may hold nothing but its end.
            if inner.budget == 0 {
                return Err(Malformed("nested too deep"));
            }
            inner.value(n, wire_type)?;
        }
    }

    /// Every field of a message not read into, checked as prost decodes it.
    fn check_all(mut self) -> Result<(), Malformed> {
        while self.next()?.is_some() {}
        Ok(())
    }
}

fn span(start: usize, end: usize) -> Span {
    // The message is under 4 GiB (checked when decoded), so both fit.
    Span {
        start: u32::try_from(start).unwrap_or(u32::MAX),
        end: u32::try_from(end).unwrap_or(u32::MAX),
    }
}

/// A length-delimited field's bytes; any other wire type for it is refused.
fn delimited(wire: Wire) -> Result<Span, Malformed> {
    match wire {
        Wire::Delimited(s) => Ok(s),
        _ => Err(Malformed(
            "a field the adapter reads has the wrong wire type",
        )),
    }
}

/// A scalar member of `Value`'s oneof (a varint, or a double's 64 bits): checked for
/// its wire type.
fn scalar(wire: Wire, varint: bool) -> Result<(), Malformed> {
    match (wire, varint) {
        (Wire::Varint, true) | (Wire::Fixed64, false) => Ok(()),
        _ => Err(Malformed(
            "a field the adapter reads has the wrong wire type",
        )),
    }
}

impl WireCheckRequest {
    /// Read `message`, a `CheckRequest`'s encoding.
    pub fn decode(message: Bytes) -> Result<Self, Malformed> {
        let len = u32::try_from(message.len()).map_err(|_| Malformed("over 4 GiB"))?;
        let mut attributes = None;
        let mut fields = Fields::of(&message, Span { start: 0, end: len }, NESTING + 1)?;
        while let Some((number, wire)) = fields.next()? {
            if number == 1 {
                let at = delimited(wire)?;
                merge_attributes(
                    attributes.get_or_insert_with(Attributes::default),
                    fields.nested(at)?,
                )?;
            }
        }
        Ok(Self {
            message,
            attributes,
        })
    }

    /// An `envoy_types` `CheckRequest` read as it arrives on the wire (its encoding
    /// decoded): for callers that hold one (tests, the fuzz targets).
    pub fn of(check: &envoy_types::ext_authz::v3::pb::CheckRequest) -> Self {
        use prost::Message as _;
        // What prost encoded is protobuf, and every field has its declared wire type.
        Self::decode(Bytes::from(check.encode_to_vec())).unwrap_or_default()
    }

    /// The message's bytes, as they arrived.
    pub fn message(&self) -> &Bytes {
        &self.message
    }

    fn bytes(&self, span: Span) -> &[u8] {
        self.message
            .get(span.start as usize..span.end as usize)
            .unwrap_or_default()
    }

    fn text(&self, span: Span, field: &'static str) -> Result<&str, NotUtf8> {
        std::str::from_utf8(self.bytes(span)).map_err(|_| NotUtf8(field))
    }

    /// `text`, `None` when empty (proto3's absent string).
    fn non_empty(&self, span: Span, field: &'static str) -> Result<Option<&str>, NotUtf8> {
        if span.is_empty() {
            return Ok(None);
        }
        self.text(span, field).map(Some)
    }
}

fn merge_attributes(a: &mut Attributes, mut fields: Fields<'_>) -> Result<(), Malformed> {
    while let Some((number, wire)) = fields.next()? {
        match number {
            1 | 2 => {
                let at = fields.nested(delimited(wire)?)?;
                let peer = if number == 1 {
                    &mut a.source
                } else {
                    &mut a.destination
                };
                merge_peer(peer.get_or_insert_with(Peer::default), at)?;
            }
            4 => {
                // `request`: its `http` (2) only.
                let mut request = fields.nested(delimited(wire)?)?;
                while let Some((number, wire)) = request.next()? {
                    if number == 2 {
                        let at = request.nested(delimited(wire)?)?;
                        merge_http(a.http.get_or_insert_with(HttpRequest::default), at)?;
                    }
                }
            }
            10 => {
                let at = fields.nested(delimited(wire)?)?;
                a.context_extensions.push(string_entry(at)?);
            }
            11 => {
                // `metadata_context`: its `filter_metadata` (1) only.
                let mut metadata = fields.nested(delimited(wire)?)?;
                while let Some((number, wire)) = metadata.next()? {
                    if number == 1 {
                        let at = metadata.nested(delimited(wire)?)?;
                        a.filter_metadata.push(struct_entry(at)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn merge_peer(peer: &mut Peer, mut fields: Fields<'_>) -> Result<(), Malformed> {
    while let Some((number, wire)) = fields.next()? {
        match number {
            1 => {
                let mut address = fields.nested(delimited(wire)?)?;
                while let Some((number, wire)) = address.next()? {
                    match number {
                        1 => {
                            // A socket after a socket is merged into it; after
                            // another member, it starts afresh.
                            let mut at = match peer.address {
                                Some(AddressKind::Socket(at)) => at,
                                _ => Span::default(),
                            };
                            let mut socket = address.nested(delimited(wire)?)?;
                            while let Some((number, wire)) = socket.next()? {
                                if number == 2 {
                                    at = delimited(wire)?;
                                }
                            }
                            peer.address = Some(AddressKind::Socket(at));
                        }
                        2 | 3 => {
                            address.nested(delimited(wire)?)?.check_all()?;
                            peer.address = Some(AddressKind::Other);
                        }
                        _ => {}
                    }
                }
            }
            4 => peer.principal = delimited(wire)?,
            _ => {}
        }
    }
    Ok(())
}

fn merge_http(http: &mut HttpRequest, mut fields: Fields<'_>) -> Result<(), Malformed> {
    while let Some((number, wire)) = fields.next()? {
        match number {
            2 => http.method = delimited(wire)?,
            3 => {
                let at = fields.nested(delimited(wire)?)?;
                http.headers.push(string_entry(at)?);
            }
            5 => http.host = delimited(wire)?,
            11 => http.body = delimited(wire)?,
            12 => http.raw_body = delimited(wire)?,
            13 => {
                let mut map = fields.nested(delimited(wire)?)?;
                let headers = http.header_map.get_or_insert_with(Vec::new);
                while let Some((number, wire)) = map.next()? {
                    if number == 1 {
                        let mut value = map.nested(delimited(wire)?)?;
                        let mut header = HeaderValue::default();
                        while let Some((number, wire)) = value.next()? {
                            match number {
                                1 => header.key = delimited(wire)?,
                                2 => header.value = delimited(wire)?,
                                3 => header.raw_value = delimited(wire)?,
                                _ => {}
                            }
                        }
                        headers.push(header);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn string_entry(mut fields: Fields<'_>) -> Result<StringEntry, Malformed> {
    let mut entry = StringEntry::default();
    while let Some((number, wire)) = fields.next()? {
        match number {
            1 => entry.key = delimited(wire)?,
            2 => entry.value = delimited(wire)?,
            _ => {}
        }
    }
    Ok(entry)
}

fn struct_entry(mut fields: Fields<'_>) -> Result<StructEntry, Malformed> {
    let mut entry = StructEntry::default();
    while let Some((number, wire)) = fields.next()? {
        match number {
            1 => entry.key = delimited(wire)?,
            2 => {
                // The entry's `Struct`, merged if sent twice: its `fields` (1).
                let mut value = fields.nested(delimited(wire)?)?;
                while let Some((number, wire)) = value.next()? {
                    if number == 1 {
                        let at = value.nested(delimited(wire)?)?;
                        entry.fields.push(value_entry(at)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(entry)
}

fn value_entry(mut fields: Fields<'_>) -> Result<ValueEntry, Malformed> {
    let mut entry = ValueEntry::default();
    while let Some((number, wire)) = fields.next()? {
        match number {
            1 => entry.key = delimited(wire)?,
            2 => {
                // The entry's `Value`, merged if sent twice: its `kind` oneof.
                let mut value = fields.nested(delimited(wire)?)?;
                while let Some((number, wire)) = value.next()? {
                    let kind = match number {
                        1 | 4 => scalar(wire, true).map(|()| ValueKind::Other)?,
                        2 => scalar(wire, false).map(|()| ValueKind::Other)?,
                        3 => ValueKind::String(delimited(wire)?),
                        5 | 6 => {
                            value.nested(delimited(wire)?)?.check_all()?;
                            ValueKind::Other
                        }
                        _ => continue,
                    };
                    entry.value = Some(kind);
                }
            }
            _ => {}
        }
    }
    Ok(entry)
}

/// The entries of a map as the decoded map holds them: a key's last entry only.
fn map_entries<'e, T>(
    message: &'e WireCheckRequest,
    entries: &'e [T],
    key: impl Fn(&T) -> Span + 'e,
) -> impl Iterator<Item = &'e T> + 'e {
    entries
        .iter()
        .enumerate()
        .filter(move |(i, e)| {
            let k = message.bytes(key(e));
            !entries
                .iter()
                .skip(i + 1)
                .any(|later| message.bytes(key(later)) == k)
        })
        .map(|(_, e)| e)
}

/// The value the map holds for `key`: its last entry's.
fn map_get<'e, T>(
    message: &WireCheckRequest,
    entries: &'e [T],
    key: &[u8],
    key_of: impl Fn(&T) -> Span,
) -> Option<&'e T> {
    entries
        .iter()
        .rev()
        .find(|e| message.bytes(key_of(e)) == key)
}

/// The request Envoy describes in a `CheckRequest`; `Err` if a text field it reads is
/// not UTF-8.
pub fn envoy_request(check: &WireCheckRequest) -> Result<EnvoyRequest<'_>, NotUtf8> {
    let attrs = check.attributes.as_ref();
    let http = attrs.and_then(|a| a.http.as_ref());
    let mut headers = Headers::with_capacity(http.map_or(0, |h| {
        h.headers.len() + h.header_map.as_ref().map_or(0, Vec::len)
    }));
    if let Some(h) = http {
        for entry in map_entries(check, &h.headers, |e| e.key) {
            let name = check.text(entry.key, "headers")?;
            let value = check.text(entry.value, "headers")?;
            headers.add(HeaderSource::Headers, name, Cow::Borrowed(value));
        }
    }
    for h in http
        .and_then(|h| h.header_map.as_ref())
        .into_iter()
        .flatten()
    {
        let key = check.text(h.key, "header_map")?;
        let value = check.text(h.value, "header_map")?;
        // Envoy fills `value` or `raw_value`; two different ones are two values.
        let raw =
            (!h.raw_value.is_empty()).then(|| String::from_utf8_lossy(check.bytes(h.raw_value)));
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
    let body: &[u8] = match http {
        Some(h) if !h.raw_body.is_empty() => check.bytes(h.raw_body),
        Some(h) => check.text(h.body, "body")?.as_bytes(),
        None => &[],
    };
    let source = attrs.and_then(|a| a.source.as_ref());
    let source_ip = match source.and_then(|s| s.address) {
        Some(AddressKind::Socket(at)) => Some(check.text(at, "source.address")?.to_owned()),
        _ => None,
    };
    let server =
        match attrs.and_then(|a| map_get(check, &a.context_extensions, b"mcp_server", |e| e.key)) {
            Some(entry) => check.non_empty(entry.value, "context_extensions")?,
            None => None,
        };
    let filter_method = attrs
        .and_then(|a| {
            map_get(
                check,
                &a.filter_metadata,
                MCP_FILTER_NAMESPACE.as_bytes(),
                |e| e.key,
            )
        })
        .and_then(|e| map_get(check, &e.fields, b"method", |f| f.key))
        .and_then(|f| match f.value {
            Some(ValueKind::String(method)) => Some(method),
            _ => None,
        });
    let meta = decision_meta(
        headers.get_lenient("traceparent"),
        headers.get_lenient("x-request-id"),
    );
    Ok(EnvoyRequest {
        meta,
        method: match http {
            Some(h) => check.text(h.method, "method")?,
            None => "",
        },
        headers,
        body,
        server,
        authority: match http {
            Some(h) => check.non_empty(h.host, "host")?,
            None => None,
        },
        destination_principal: match attrs.and_then(|a| a.destination.as_ref()) {
            Some(d) => check.non_empty(d.principal, "destination.principal")?,
            None => None,
        },
        spiffe_id: match source {
            Some(s) => check.non_empty(s.principal, "source.principal")?,
            None => None,
        },
        source_ip,
        mcp_filter_method: filter_method
            .map(|m| check.text(m, "metadata_context"))
            .transpose()?,
        // Envoy made the mTLS handshake: `source.principal` is proven when Envoy is
        // trusted (`admit_envoy_peer`), never asserted by the client.
        asserted_spiffe_id: None,
        // Nor is the destination: a header naming one is never read in this mode.
        asserted_destination_principal: None,
        caller: None,
    })
}
