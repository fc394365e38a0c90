//! The `CheckResponse` written straight from an [`EnvoyAnswer`].
//!
//! Building `envoy_types`' `CheckResponse` for each answer copied every header name
//! and value into an owned `String`, filled the metadata's `Struct` (a `HashMap`
//! hashed with SipHash) and joined the policies into one more string, only for
//! prost to walk it all again to encode it and then drop it. [`CheckAnswer`] is the
//! answer itself; the codec writes its encoding from the borrowed parts, each
//! nested message's length computed before it is written.
//!
//! What is written is what `envoy_types`' messages would carry (the test
//! `an_answer_is_written_as_envoy_types_encodes_it` decodes both and compares):
//!
//! | field | allow | deny |
//! |---|---|---|
//! | `status` (`google.rpc.Status`) | code `OK` | the refusal's code (`UNAUTHENTICATED`, `INVALID_ARGUMENT`, `PERMISSION_DENIED`, `UNAVAILABLE`, `INTERNAL`; never `OK`) |
//! | `ok_response` | `headers` (overwrite or add), `headers_to_remove` | — |
//! | `denied_response` | — | `status`, `headers` (`content-type`, the decision id, the answer's own; overwrite or add), `body` |
//! | `dynamic_metadata` | `decision_id`, `policies` (comma-joined), `mcp_method`, `mcp_server` (when known) | `decision_id` |

use prost::bytes::BufMut;

use super::{DECISION_ID_METADATA, EnvoyAnswer, METHOD_METADATA, SERVER_METADATA, deny_headers};

/// An answer to `Check`, encoded as a `CheckResponse` by the gRPC codec.
#[derive(Debug, Clone)]
pub struct CheckAnswer(pub EnvoyAnswer);

/// Protobuf's length-delimited wire type.
const LEN: u8 = 2;
/// Protobuf's varint wire type.
const VARINT: u8 = 0;

/// `envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD`.
const OVERWRITE_IF_EXISTS_OR_ADD: u64 = 2;

/// The `CheckResponse`'s status (`google.rpc.Code`): OK for an allow and only for an
/// allow (Envoy lets through whatever is answered OK); a deny's own code,
/// `PERMISSION_DENIED` if that were OK.
fn grpc_code(answer: &EnvoyAnswer) -> tonic::Code {
    match answer {
        EnvoyAnswer::Allow { .. } => tonic::Code::Ok,
        EnvoyAnswer::Deny {
            code: tonic::Code::Ok,
            ..
        } => tonic::Code::PermissionDenied,
        EnvoyAnswer::Deny { code, .. } => *code,
    }
}

fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 takes one.
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn put_varint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// A field's key; every field written here has a number under 16 (one byte).
fn put_key(buf: &mut impl BufMut, field: u8, wire_type: u8) {
    buf.put_u8((field << 3) | wire_type);
}

/// The length of a length-delimited field of `len` bytes, key included.
fn delimited_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_delimited_head(buf: &mut impl BufMut, field: u8, len: usize) {
    put_key(buf, field, LEN);
    put_varint(buf, len as u64);
}

/// A `string` field, written even when empty (a repeated element, a oneof member, a
/// map entry's key).
fn put_text(buf: &mut impl BufMut, field: u8, text: &str) {
    put_delimited_head(buf, field, text.len());
    buf.put_slice(text.as_bytes());
}

/// A singular `string` field: left out when empty, as proto3 leaves out a default.
fn text_len(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        delimited_len(text.len())
    }
}

fn put_singular_text(buf: &mut impl BufMut, field: u8, text: &str) {
    if !text.is_empty() {
        put_text(buf, field, text);
    }
}

/// A singular varint field: left out when zero.
fn number_len(v: u64) -> usize {
    if v == 0 { 0 } else { 1 + varint_len(v) }
}

fn put_number(buf: &mut impl BufMut, field: u8, v: u64) {
    if v != 0 {
        put_key(buf, field, VARINT);
        put_varint(buf, v);
    }
}

/// A text made of pieces with a separator between them (the policies, comma-joined),
/// written without joining them first.
#[derive(Clone, Copy)]
enum Text<'a> {
    One(&'a str),
    Joined(&'a [String], &'a str),
}

impl Text<'_> {
    fn len(self) -> usize {
        match self {
            Text::One(s) => s.len(),
            Text::Joined(pieces, sep) => {
                pieces.iter().map(String::len).sum::<usize>()
                    + sep.len() * pieces.len().saturating_sub(1)
            }
        }
    }

    fn put(self, buf: &mut impl BufMut) {
        match self {
            Text::One(s) => buf.put_slice(s.as_bytes()),
            Text::Joined(pieces, sep) => {
                for (i, p) in pieces.iter().enumerate() {
                    if i > 0 {
                        buf.put_slice(sep.as_bytes());
                    }
                    buf.put_slice(p.as_bytes());
                }
            }
        }
    }
}

/// `envoy.config.core.v3.HeaderValueOption` { header { key, value }, append_action }.
fn header_body_len(key: &str, value: &str) -> usize {
    delimited_len(text_len(key) + text_len(value)) + number_len(OVERWRITE_IF_EXISTS_OR_ADD)
}

fn put_header(buf: &mut impl BufMut, field: u8, key: &str, value: &str) {
    put_delimited_head(buf, field, header_body_len(key, value));
    put_delimited_head(buf, 1, text_len(key) + text_len(value));
    put_singular_text(buf, 1, key);
    put_singular_text(buf, 2, value);
    put_number(buf, 3, OVERWRITE_IF_EXISTS_OR_ADD);
}

/// A `google.protobuf.Struct` field entry { key, value: Value { string_value } }.
fn entry_body_len(key: &str, value: Text<'_>) -> usize {
    let value_body = delimited_len(value.len());
    delimited_len(key.len()) + delimited_len(value_body)
}

fn put_entry(buf: &mut impl BufMut, key: &str, value: Text<'_>) {
    // Struct.fields (1): a map entry message.
    put_delimited_head(buf, 1, entry_body_len(key, value));
    put_text(buf, 1, key);
    // The entry's value (2), a Value whose `string_value` (3) is always written: a
    // oneof member is present even when empty.
    put_delimited_head(buf, 2, delimited_len(value.len()));
    put_delimited_head(buf, 3, value.len());
    value.put(buf);
}

/// The metadata's entries of an answer.
fn metadata(answer: &EnvoyAnswer) -> [Option<(&str, Text<'_>)>; 4] {
    match answer {
        EnvoyAnswer::Allow {
            decision_id,
            policies,
            mcp_method,
            server,
            ..
        } => [
            Some((DECISION_ID_METADATA, Text::One(decision_id))),
            Some(("policies", Text::Joined(policies, ","))),
            mcp_method
                .as_deref()
                .map(|m| (METHOD_METADATA, Text::One(m))),
            server.as_deref().map(|s| (SERVER_METADATA, Text::One(s))),
        ],
        EnvoyAnswer::Deny { decision_id, .. } => [
            Some((DECISION_ID_METADATA, Text::One(decision_id))),
            None,
            None,
            None,
        ],
    }
}

impl CheckAnswer {
    fn http_body_len(&self) -> usize {
        match &self.0 {
            EnvoyAnswer::Allow {
                set_headers,
                remove_headers,
                ..
            } => {
                set_headers
                    .iter()
                    .map(|(k, v)| delimited_len(header_body_len(k, v)))
                    .sum::<usize>()
                    + remove_headers
                        .iter()
                        .map(|h| delimited_len(h.len()))
                        .sum::<usize>()
            }
            EnvoyAnswer::Deny {
                decision_id,
                status,
                headers,
                body,
                ..
            } => {
                delimited_len(number_len(u64::from(*status)))
                    + deny_headers(decision_id, headers)
                        .map(|(k, v)| delimited_len(header_body_len(k, v)))
                        .sum::<usize>()
                    + text_len(body)
            }
        }
    }

    fn metadata_len(&self) -> usize {
        metadata(&self.0)
            .into_iter()
            .flatten()
            .map(|(k, v)| delimited_len(entry_body_len(k, v)))
            .sum()
    }

    fn status_len(&self) -> usize {
        number_len(grpc_code(&self.0) as u64)
    }

    /// The length of the encoded `CheckResponse`.
    pub fn encoded_len(&self) -> usize {
        delimited_len(self.status_len())
            + delimited_len(self.http_body_len())
            + delimited_len(self.metadata_len())
    }

    /// Write the `CheckResponse`.
    pub fn encode(&self, buf: &mut impl BufMut) {
        // status (1): google.rpc.Status { code (1) }.
        put_delimited_head(buf, 1, self.status_len());
        put_number(buf, 1, grpc_code(&self.0) as u64);
        match &self.0 {
            EnvoyAnswer::Allow {
                set_headers,
                remove_headers,
                ..
            } => {
                // ok_response (3): OkHttpResponse { headers (2), headers_to_remove (5) }.
                put_delimited_head(buf, 3, self.http_body_len());
                for (k, v) in set_headers {
                    put_header(buf, 2, k, v);
                }
                for h in remove_headers {
                    put_text(buf, 5, h);
                }
            }
            EnvoyAnswer::Deny {
                decision_id,
                status,
                headers,
                body,
                ..
            } => {
                // denied_response (2): DeniedHttpResponse { status (1): HttpStatus
                // { code (1) }, headers (2), body (3) }.
                put_delimited_head(buf, 2, self.http_body_len());
                put_delimited_head(buf, 1, number_len(u64::from(*status)));
                put_number(buf, 1, u64::from(*status));
                for (k, v) in deny_headers(decision_id, headers) {
                    put_header(buf, 2, k, v);
                }
                put_singular_text(buf, 3, body);
            }
        }
        // dynamic_metadata (4): google.protobuf.Struct.
        put_delimited_head(buf, 4, self.metadata_len());
        for (k, v) in metadata(&self.0).into_iter().flatten() {
            put_entry(buf, k, v);
        }
    }

    /// The encoding, whole.
    pub fn encode_to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out
    }

    /// The answer as Envoy reads it: its encoding decoded as `envoy_types`'
    /// `CheckResponse` (for tests and tools that look at answers).
    pub fn to_response(
        &self,
    ) -> Result<envoy_types::ext_authz::v3::pb::CheckResponse, prost::DecodeError> {
        use prost::Message as _;
        envoy_types::ext_authz::v3::pb::CheckResponse::decode(self.encode_to_vec().as_slice())
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::ext_authz::v3::pb::{
        CheckResponse, DeniedHttpResponse, HeaderValueOption, HttpResponse, HttpStatus,
        OkHttpResponse,
    };
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
    use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
    use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
    use envoy_types::pb::google::rpc;
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    fn header(name: &str, value: &str) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(EnvoyHeader {
                key: name.to_owned(),
                value: value.to_owned(),
                ..EnvoyHeader::default()
            }),
            append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
            ..HeaderValueOption::default()
        }
    }

    fn string_value(s: String) -> PbValue {
        PbValue {
            kind: Some(Kind::StringValue(s)),
        }
    }

    /// The `CheckResponse` an answer stands for, built with `envoy_types`' messages
    /// (how answers were written before [`CheckAnswer`]).
    fn expected(answer: EnvoyAnswer) -> CheckResponse {
        // The status's code is `grpc_code`'s (its rule has its own test,
        // `only_an_allow_is_written_with_status_ok`); this is about the encoding.
        let code = super::grpc_code(&answer);
        match answer {
            EnvoyAnswer::Allow {
                decision_id,
                set_headers,
                remove_headers,
                policies,
                mcp_method,
                server,
            } => {
                let mut fields: std::collections::HashMap<String, PbValue> = [
                    (DECISION_ID_METADATA.to_owned(), string_value(decision_id)),
                    ("policies".to_owned(), string_value(policies.join(","))),
                ]
                .into_iter()
                .collect();
                for (key, value) in [(METHOD_METADATA, mcp_method), (SERVER_METADATA, server)] {
                    if let Some(v) = value {
                        fields.insert(key.to_owned(), string_value(v));
                    }
                }
                CheckResponse {
                    status: Some(rpc::Status {
                        code: tonic::Code::Ok as i32,
                        ..rpc::Status::default()
                    }),
                    dynamic_metadata: Some(Struct { fields }),
                    http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                        headers: set_headers.iter().map(|(k, v)| header(k, v)).collect(),
                        headers_to_remove: remove_headers.iter().map(|h| (*h).to_owned()).collect(),
                        ..OkHttpResponse::default()
                    })),
                }
            }
            EnvoyAnswer::Deny {
                decision_id,
                status,
                headers,
                body,
                ..
            } => {
                let mut hs = vec![
                    header("content-type", "application/json"),
                    header(super::super::DECISION_ID_HEADER, &decision_id),
                ];
                hs.extend(headers.iter().map(|(k, v)| header(k, v)));
                CheckResponse {
                    status: Some(rpc::Status {
                        code: code as i32,
                        ..rpc::Status::default()
                    }),
                    dynamic_metadata: Some(Struct {
                        fields: [("decision_id".to_owned(), string_value(decision_id))]
                            .into_iter()
                            .collect(),
                    }),
                    http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                        status: Some(HttpStatus {
                            code: i32::from(status),
                        }),
                        headers: hs,
                        body,
                    })),
                }
            }
        }
    }

    /// Header names as the adapter sets them (`'static`), the empty one among them.
    const NAMES: &[&str] = &[
        "x-mcp-authz-user",
        "x-mcp-authz-application",
        "www-authenticate",
        "",
        "x-a-name-long-enough-to-need-a-two-byte-length-when-it-is-combined-with-a-long-value",
    ];

    /// Texts: short, empty, non-ASCII, and long enough for two- and three-byte lengths.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => any::<String>(),
            1 => Just(String::new()),
            1 => "[a-zé\u{1F600}]{100,200}",
            1 => (0usize..20_000).prop_map(|n| "p".repeat(n)),
        ]
    }

    fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
        prop::collection::vec((prop::sample::select(NAMES), text()), 0..5)
    }

    fn answer() -> impl Strategy<Value = EnvoyAnswer> {
        let allow = (
            text(),
            headers(),
            prop::collection::vec(prop::sample::select(NAMES), 0..4),
            prop::collection::vec(text(), 0..4),
            prop::option::of(text()),
            prop::option::of(text()),
        )
            .prop_map(
                |(decision_id, set_headers, remove_headers, policies, mcp_method, server)| {
                    EnvoyAnswer::Allow {
                        decision_id,
                        set_headers,
                        remove_headers,
                        policies,
                        mcp_method,
                        server,
                    }
                },
            );
        let deny = (
            text(),
            prop::sample::select(vec![0u16, 200, 400, 401, 403, 404, 500, 65_535]),
            (0..=16i32).prop_map(tonic::Code::from),
            headers(),
            text(),
        )
            .prop_map(
                |(decision_id, status, code, headers, body)| EnvoyAnswer::Deny {
                    decision_id,
                    status,
                    code,
                    headers,
                    body,
                },
            );
        prop_oneof![allow, deny]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Decoded by `envoy_types`, the bytes written are the message the answer
        /// stands for, of the length prost computes for that message.
        #[test]
        fn an_answer_is_written_as_envoy_types_encodes_it(answer in answer()) {
            let written = CheckAnswer(answer.clone());
            let bytes = written.encode_to_vec();
            let want = expected(answer);
            prop_assert_eq!(bytes.len(), written.encoded_len());
            prop_assert_eq!(bytes.len(), want.encoded_len());
            prop_assert_eq!(CheckResponse::decode(bytes.as_slice()), Ok(want));
        }
    }

    #[test]
    fn only_an_allow_is_written_with_status_ok() {
        let allow = EnvoyAnswer::Allow {
            decision_id: "d".into(),
            set_headers: Vec::new(),
            remove_headers: Vec::new(),
            policies: Vec::new(),
            mcp_method: None,
            server: None,
        };
        let ok = CheckAnswer(allow).to_response().expect("decodes");
        assert_eq!(ok.status.map(|s| s.code), Some(0));
        assert!(matches!(
            ok.http_response,
            Some(HttpResponse::OkResponse(_))
        ));
        use tonic::Code::*;
        // The HTTP status, the deny's gRPC code, the code written.
        for (status, code, written) in [
            (401, Unauthenticated, Unauthenticated),
            (400, InvalidArgument, InvalidArgument),
            (403, PermissionDenied, PermissionDenied),
            (503, Unavailable, Unavailable),
            (500, Internal, Internal),
            // A `not_found` deny is answered with 200, still not OK to gRPC.
            (200, PermissionDenied, PermissionDenied),
            // A deny that says OK is still not let through.
            (403, Ok, PermissionDenied),
            (200, Ok, PermissionDenied),
        ] {
            let deny = EnvoyAnswer::Deny {
                decision_id: "d".into(),
                status,
                code,
                headers: Vec::new(),
                body: String::new(),
            };
            let response = CheckAnswer(deny).to_response().expect("decodes");
            assert_eq!(
                response.status.map(|s| s.code),
                Some(written as i32),
                "{status} {code:?}"
            );
            let Some(HttpResponse::DeniedResponse(denied)) = response.http_response else {
                panic!("{status}: not a denied response");
            };
            assert_eq!(denied.status.map(|s| s.code), Some(i32::from(status)));
        }
    }

    #[test]
    fn lengths_are_written_as_prost_writes_them() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            usize::MAX,
        ] {
            let (mut ours, mut prosts) = (Vec::new(), Vec::new());
            put_varint(&mut ours, v as u64);
            prost::encode_length_delimiter(v, &mut prosts).expect("room");
            assert_eq!(ours, prosts, "{v}");
            assert_eq!(varint_len(v as u64), prost::length_delimiter_len(v), "{v}");
        }
    }
}
