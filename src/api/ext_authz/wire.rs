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
use std::collections::HashMap;

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

    fn len(self) -> u32 {
        self.end - self.start
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// A varint, a length or a fixed-width value runs past the end of its message.
    #[error("the CheckRequest is not protobuf: a field runs past the end")]
    CutShort,
    /// Messages and groups nested past the limit.
    #[error("the CheckRequest is not protobuf: nested too deep")]
    TooDeep,
    /// A field the adapter reads, with another wire type than its own.
    #[error("the CheckRequest is not protobuf: a field the adapter reads has the wrong wire type")]
    WrongType,
    /// A varint of more than 64 bits.
    #[error("the CheckRequest is not protobuf: a varint is longer than 64 bits")]
    LongVarint,
    /// A key of more than 32 bits.
    #[error("the CheckRequest is not protobuf: a key is over 32 bits")]
    LongKey,
    /// A field numbered 0.
    #[error("the CheckRequest is not protobuf: a field numbered 0")]
    FieldZero,
    /// Wire type 6 or 7.
    #[error("the CheckRequest is not protobuf: a field of an unknown wire type")]
    UnknownWireType,
    /// A group's end where no group started, or with another number than its start.
    #[error("the CheckRequest is not protobuf: a group ends that did not start")]
    StrayGroupEnd,
    /// A group with no end.
    #[error("the CheckRequest is not protobuf: a group does not end")]
    UnendedGroup,
    /// A message of 4 GiB or more.
    #[error("the CheckRequest is not protobuf: over 4 GiB")]
    TooLarge,
}

/// A `string` field the adapter reads is not UTF-8 (protobuf's `string` must be).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the CheckRequest's `{0}` is not UTF-8")]
pub struct NotUtf8(pub &'static str);

/// How deep messages and groups may nest, as prost's decoding allows.
const NESTING: u32 = 100;

/// Protobuf's wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const DELIMITED: u8 = 2;
const GROUP_START: u8 = 3;
const GROUP_END: u8 = 4;
const FIXED32: u8 = 5;

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
        Ok(Self {
            message,
            at: span.start as usize,
            end: span.end as usize,
            budget: budget.checked_sub(1).ok_or(Malformed::TooDeep)?,
        })
    }

    #[inline(always)]
    fn byte(&mut self) -> Result<u8, Malformed> {
        let b = self
            .message
            .get(self.at)
            .copied()
            .filter(|_| self.at < self.end)
            .ok_or(Malformed::CutShort)?;
        self.at += 1;
        Ok(b)
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, Malformed> {
        let b = self.byte()?;
        if b < 0x80 {
            return Ok(u64::from(b));
        }
        self.varint_rest(u64::from(b & 0x7f))
    }

    /// A varint's bytes after its first: at most ten in all, the tenth holding bit
    /// 63 only.
    fn varint_rest(&mut self, mut value: u64) -> Result<u64, Malformed> {
        for i in 1..10 {
            let b = self.byte()?;
            if i == 9 && b > 1 {
                return Err(Malformed::LongVarint);
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed::LongVarint)
    }

    /// The next field's number and wire type; `None` at the message's end. A key
    /// with field number 0 or wire type 6 or 7 is refused.
    #[inline(always)]
    fn key(&mut self) -> Result<Option<(u32, u8)>, Malformed> {
        if self.at >= self.end {
            return Ok(None);
        }
        let key = u32::try_from(self.varint()?).map_err(|_| Malformed::LongKey)?;
        let (number, wire_type) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return Err(Malformed::FieldZero);
        }
        if wire_type > FIXED32 {
            return Err(Malformed::UnknownWireType);
        }
        Ok(Some((number, wire_type)))
    }

    #[inline(always)]
    fn advance(&mut self, n: usize) -> Result<Span, Malformed> {
        let start = self.at;
        if self.end - start < n {
            return Err(Malformed::CutShort);
        }
        self.at += n;
        Ok(span(start, self.at))
    }

    /// A length-delimited field's bytes (its key read, with that wire type).
    #[inline(always)]
    fn span(&mut self) -> Result<Span, Malformed> {
        let len = usize::try_from(self.varint()?).map_err(|_| Malformed::CutShort)?;
        self.advance(len)
    }

    /// The fields of the message a length-delimited field holds, one level below.
    fn nested(&mut self) -> Result<Fields<'m>, Malformed> {
        let at = self.span()?;
        Fields::of(self.message, at, self.budget)
    }

    /// A field this reader does not read, `number` of `wire_type`: refused if it is
    /// one of `read` (the fields it reads, so sent with another wire type), else
    /// skipped as prost skips it.
    fn other(&mut self, number: u32, wire_type: u8, read: &[u32]) -> Result<(), Malformed> {
        if read.contains(&number) {
            return Err(Malformed::WrongType);
        }
        self.skip(number, wire_type)
    }

    fn skip(&mut self, number: u32, wire_type: u8) -> Result<(), Malformed> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.advance(8).map(drop),
            DELIMITED => self.span().map(drop),
            GROUP_START => self.group(number),
            FIXED32 => self.advance(4).map(drop),
            _ => Err(Malformed::StrayGroupEnd),
        }
    }

    /// Skip a group up to its end, which must carry its number.
    fn group(&mut self, number: u32) -> Result<(), Malformed> {
        let mut inner = Fields {
            message: self.message,
            at: self.at,
            end: self.end,
            budget: self.budget.checked_sub(1).ok_or(Malformed::TooDeep)?,
        };
        loop {
            let Some((n, wire_type)) = inner.key()? else {
                return Err(Malformed::UnendedGroup);
            };
            if wire_type == GROUP_END {
                if n != number {
                    return Err(Malformed::StrayGroupEnd);
                }
                self.at = inner.at;
                return Ok(());
            }
            // Past the last level, a group may hold nothing but its end.
            if inner.budget == 0 {
                return Err(Malformed::TooDeep);
            }
            inner.skip(n, wire_type)?;
        }
    }

    /// The length-delimited fields `numbers` of this message, each its last
    /// occurrence (`None` when absent); any other field skipped, these with another
    /// wire type refused.
    fn spans<const N: usize>(mut self, numbers: [u32; N]) -> Result<[Option<Span>; N], Malformed> {
        let mut found = [None; N];
        while let Some((number, wire_type)) = self.key()? {
            match found.get_mut(numbers.iter().position(|n| *n == number).unwrap_or(N)) {
                Some(slot) if wire_type == DELIMITED => *slot = Some(self.span()?),
                _ => self.other(number, wire_type, &numbers)?,
            }
        }
        Ok(found)
    }

    /// Each occurrence of the length-delimited field `number` of this message, its
    /// message read by `read`; any other field skipped, `number` with another wire
    /// type refused (a message of which the adapter reads one repeated or merged field).
    fn each(
        mut self,
        number: u32,
        mut read: impl FnMut(Fields<'m>) -> Result<(), Malformed>,
    ) -> Result<(), Malformed> {
        while let Some((n, wire_type)) = self.key()? {
            if n == number && wire_type == DELIMITED {
                read(self.nested()?)?;
            } else {
                self.other(n, wire_type, &[number])?;
            }
        }
        Ok(())
    }

    /// Every field of a message not read into, checked as prost decodes it.
    fn check_all(mut self) -> Result<(), Malformed> {
        while let Some((number, wire_type)) = self.key()? {
            self.skip(number, wire_type)?;
        }
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

impl WireCheckRequest {
    /// Read `message`, a `CheckRequest`'s encoding.
    pub fn decode(message: Bytes) -> Result<Self, Malformed> {
        let len = u32::try_from(message.len()).map_err(|_| Malformed::TooLarge)?;
        let mut attributes = None;
        let mut fields = Fields::of(&message, Span { start: 0, end: len }, NESTING + 1)?;
        while let Some((number, wire_type)) = fields.key()? {
            match (number, wire_type) {
                (1, DELIMITED) => merge_attributes(
                    attributes.get_or_insert_with(Attributes::default),
                    fields.nested()?,
                )?,
                _ => fields.other(number, wire_type, &[1])?,
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

    /// Whether two spans hold the same bytes (lengths compared first).
    fn same(&self, a: Span, b: Span) -> bool {
        a.len() == b.len() && self.bytes(a) == self.bytes(b)
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

fn merge_attributes(a: &mut Attributes, mut f: Fields<'_>) -> Result<(), Malformed> {
    while let Some((number, wire_type)) = f.key()? {
        match (number, wire_type) {
            (1, DELIMITED) => merge_peer(a.source.get_or_insert_with(Peer::default), f.nested()?)?,
            (2, DELIMITED) => {
                merge_peer(a.destination.get_or_insert_with(Peer::default), f.nested()?)?;
            }
            // `request`: its `http` (2) only.
            (4, DELIMITED) => f.nested()?.each(2, |http| {
                merge_http(a.http.get_or_insert_with(HttpRequest::default), http)
            })?,
            (10, DELIMITED) => a.context_extensions.push(string_entry(f.nested()?)?),
            // `metadata_context`: its `filter_metadata` (1) only.
            (11, DELIMITED) => f.nested()?.each(1, |entry| {
                a.filter_metadata.push(struct_entry(entry)?);
                Ok(())
            })?,
            _ => f.other(number, wire_type, &[1, 2, 4, 10, 11])?,
        }
    }
    Ok(())
}

fn merge_peer(peer: &mut Peer, mut f: Fields<'_>) -> Result<(), Malformed> {
    while let Some((number, wire_type)) = f.key()? {
        match (number, wire_type) {
            (1, DELIMITED) => {
                let mut address = f.nested()?;
                while let Some((number, wire_type)) = address.key()? {
                    match (number, wire_type) {
                        (1, DELIMITED) => {
                            // A socket after a socket is merged into it; after
                            // another member, it starts afresh.
                            let before = match peer.address {
                                Some(AddressKind::Socket(at)) => at,
                                _ => Span::default(),
                            };
                            let [at] = address.nested()?.spans([2])?;
                            peer.address = Some(AddressKind::Socket(at.unwrap_or(before)));
                        }
                        (2 | 3, DELIMITED) => {
                            address.nested()?.check_all()?;
                            peer.address = Some(AddressKind::Other);
                        }
                        _ => address.other(number, wire_type, &[1, 2, 3])?,
                    }
                }
            }
            (4, DELIMITED) => peer.principal = f.span()?,
            _ => f.other(number, wire_type, &[1, 4])?,
        }
    }
    Ok(())
}

fn merge_http(http: &mut HttpRequest, mut f: Fields<'_>) -> Result<(), Malformed> {
    while let Some((number, wire_type)) = f.key()? {
        match (number, wire_type) {
            (2, DELIMITED) => http.method = f.span()?,
            (3, DELIMITED) => http.headers.push(string_entry(f.nested()?)?),
            (5, DELIMITED) => http.host = f.span()?,
            (11, DELIMITED) => http.body = f.span()?,
            (12, DELIMITED) => http.raw_body = f.span()?,
            (13, DELIMITED) => {
                let headers = http.header_map.get_or_insert_with(Vec::new);
                f.nested()?.each(1, |h| {
                    headers.push(header_value(h)?);
                    Ok(())
                })?;
            }
            _ => f.other(number, wire_type, &[2, 3, 5, 11, 12, 13])?,
        }
    }
    Ok(())
}

fn header_value(f: Fields<'_>) -> Result<HeaderValue, Malformed> {
    let [key, value, raw_value] = f.spans([1, 2, 3])?;
    Ok(HeaderValue {
        key: key.unwrap_or_default(),
        value: value.unwrap_or_default(),
        raw_value: raw_value.unwrap_or_default(),
    })
}

fn string_entry(f: Fields<'_>) -> Result<StringEntry, Malformed> {
    let [key, value] = f.spans([1, 2])?;
    Ok(StringEntry {
        key: key.unwrap_or_default(),
        value: value.unwrap_or_default(),
    })
}

fn struct_entry(mut f: Fields<'_>) -> Result<StructEntry, Malformed> {
    let mut entry = StructEntry::default();
    while let Some((number, wire_type)) = f.key()? {
        match (number, wire_type) {
            (1, DELIMITED) => entry.key = f.span()?,
            // The entry's `Struct`, merged if sent twice: its `fields` (1).
            (2, DELIMITED) => f.nested()?.each(1, |field| {
                entry.fields.push(value_entry(field)?);
                Ok(())
            })?,
            _ => f.other(number, wire_type, &[1, 2])?,
        }
    }
    Ok(entry)
}

fn value_entry(mut f: Fields<'_>) -> Result<ValueEntry, Malformed> {
    let mut entry = ValueEntry::default();
    while let Some((number, wire_type)) = f.key()? {
        match (number, wire_type) {
            (1, DELIMITED) => entry.key = f.span()?,
            (2, DELIMITED) => {
                // The entry's `Value`, merged if sent twice: its `kind` oneof, whose
                // last member wins.
                let mut value = f.nested()?;
                while let Some((number, wire_type)) = value.key()? {
                    let kind = match (number, wire_type) {
                        (3, DELIMITED) => ValueKind::String(value.span()?),
                        (1 | 4, VARINT) | (2, FIXED64) => {
                            value.skip(number, wire_type)?;
                            ValueKind::Other
                        }
                        (5 | 6, DELIMITED) => {
                            value.nested()?.check_all()?;
                            ValueKind::Other
                        }
                        _ => {
                            value.other(number, wire_type, &[1, 2, 3, 4, 5, 6])?;
                            continue;
                        }
                    };
                    entry.value = Some(kind);
                }
            }
            _ => f.other(number, wire_type, &[1, 2])?,
        }
    }
    Ok(entry)
}

/// The entries of a map as the decoded map holds them: a key's last entry only,
/// found by comparing each entry with the later ones while they are few, through a
/// hash table of each key's last entry once they are many (linear time whatever the
/// count: a message of many small entries must not cost quadratic time).
fn map_entries<'e, T>(
    message: &'e WireCheckRequest,
    entries: &'e [T],
    key: impl Fn(&T) -> Span + 'e,
) -> impl Iterator<Item = &'e T> + 'e {
    // Each key's last entry, once there are many (`None`: compared pairwise).
    let last: Option<HashMap<&[u8], usize>> = (entries.len() > FEW_ENTRIES).then(|| {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| (message.bytes(key(e)), i))
            .collect()
    });
    entries
        .iter()
        .enumerate()
        .filter(move |(i, e)| {
            let k = key(e);
            match &last {
                Some(last) => last.get(message.bytes(k)) == Some(i),
                None => !entries
                    .iter()
                    .skip(i + 1)
                    .any(|later| message.same(key(later), k)),
            }
        })
        .map(|(_, e)| e)
}

/// How many entries of a map [`map_entries`] compares pairwise before it takes a hash table.
const FEW_ENTRIES: usize = 32;

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
