//! MCP JSON-RPC bodies mapped to what a decision needs. Pure functions, no I/O.
//!
//! [`parse_body`] reads the body of an MCP POST (one JSON-RPC message, or a
//! 2025-03-26 batch array) into an [`McpMessage`]: one [`McpCall`] per message,
//! each with its MCP method (the Cedar action `Mcp::Action::"<method>"`), what it
//! acts on ([`Subject`]), its arguments and its JSON-RPC `id`. [`check_headers`]
//! checks the 2026-07-28 `Mcp-Method` / `Mcp-Name` headers against the body.
//! [`McpCall::decision_request`] makes the [`DecisionRequest`] for a call on a server.
//!
//! A batch is allowed only if every call in it is allowed: the caller decides
//! each call and denies the whole body if any call is denied.
//!
//! # Mapping
//!
//! | message | action | subject | arguments |
//! |---|---|---|---|
//! | `tools/call` | `tools/call` | [`Subject::Tool`] `params.name` | `params.arguments` |
//! | `prompts/get` | `prompts/get` | [`Subject::Prompt`] `params.name` | `params.arguments` |
//! | `resources/read`, `resources/subscribe`, `resources/unsubscribe` | the method | [`Subject::Resource`] `params.uri`, in normal form | none |
//! | `completion/complete` | `completion/complete` | the prompt `params.ref.name` (`ref/prompt`) or the resource `params.ref.uri` (`ref/resource`, a URI template, in normal form) | `{"argument": params.argument}`, plus `"context": params.context` when given |
//! | any other request or notification (`tools/list`, `initialize`, `ping`, `tasks/get`, `server/discover`, `subscriptions/listen`, `notifications/initialized`, unknown methods, ...) | the method | [`Subject::Server`] | none |
//! | a response (`result` or `error`, no `method`: the client's answer to `sampling/createMessage`, `elicitation/create`, `roots/list`) | [`RESPONSE_ACTION`] `jsonrpc/response` | [`Subject::Server`] | none |
//!
//! A message without `id` is a notification; it maps like a request of the same
//! method (a `tools/call` sent as a notification still names its tool). Unknown
//! methods are not refused here: they map to an action of their own name, which
//! the decision core denies unless a policy allows it. Methods that carry an
//! argument as a name are case-sensitive and compared exactly.
//!
//! A resource URI (or URI template) is decided as the resource the server will
//! serve: it is put in the normal form of [`super::uri`] (`DOCS://finance/x/../b`
//! is `docs://finance/b`), and a URI without one (user information, a fragment,
//! an encoded `/` in the path, ...) is refused with [`Problem::Uri`].
//!
//! # Strictness
//!
//! Every refusal is an [`McpError`] (a deny) with a JSON-RPC error code and a
//! lowercase reason safe to show the client (user input truncated to
//! [`SHOWN_CHARS`] characters, control characters escaped). The limits are the
//! `MAX_*` constants below. Besides malformed JSON-RPC, the reader refuses what
//! would let the authorizer and the MCP server read one body two ways: duplicate
//! keys, keys of one object that differ only in case (Go's `encoding/json` matches
//! keys case-insensitively), and a near-miss of a member the mapping reads
//! (`"Name"` or `"argumentſ"` instead of `"name"` / `"arguments"`, which such a
//! server would take for the real one).
//!
//! # Not covered
//!
//! - Which request a response answers: the mapper is stateless, so every response
//!   is the one action [`RESPONSE_ACTION`]. Likewise `tasks/*` act on the server,
//!   not on the tool whose task they concern.
//! - `Mcp-Param-*` headers (`x-mcp-header` in a tool's `inputSchema`): checking
//!   them needs the tool definitions; the MCP server must check them.
//! - `MCP-Protocol-Version`, and whether the headers are present at all.
//! - `_meta`, `params.task`, `inputResponses`: not part of the mapping.
//! - Numbers are read as serde_json reads them: a float may differ in its last
//!   digit from another parser's reading (integers are exact).

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use cedar_policy::EntityUid;
use serde_json::{Map, Value};

use super::json::{self, JsonFault};
use super::uri::{self, Shown, UriError};
use super::{Kind, Target, action, qualified_id, target_of};
use crate::authz::DecisionRequest;

/// The largest body read, in bytes (4 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The deepest nesting of arrays and objects, counting the message itself (and a
/// batch array), e.g. `{"params":{"arguments":{}}}` has three levels.
pub const MAX_DEPTH: usize = 64;
/// The most messages in a batch.
pub const MAX_BATCH: usize = 100;
/// The longest method name, in bytes.
pub const MAX_METHOD_BYTES: usize = 256;
/// The longest tool or prompt name, in bytes (1 KiB; MCP suggests at most 128 characters).
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest resource URI or URI template, in bytes (8 KiB), as given and in normal form.
pub const MAX_URI_BYTES: usize = uri::MAX_URI_BYTES;
pub use crate::uri::SHOWN_CHARS;

/// The action of a JSON-RPC response sent by the client (to `sampling/createMessage`,
/// `elicitation/create`, `roots/list`, ...): `Mcp::Action::"jsonrpc/response"`, on the
/// server. A stateless authorizer cannot know which request a response answers. A
/// request or notification may not use this name as its method.
pub const RESPONSE_ACTION: &str = "jsonrpc/response";

/// JSON-RPC error code: the body is not JSON (or not UTF-8).
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error code: the body is JSON but not a valid JSON-RPC message, or exceeds a limit.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC error code: `params` is malformed.
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC error code: the service failed (never a policy decision).
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2026-07-28 `HeaderMismatch`: `Mcp-Method` / `Mcp-Name` disagree with the body or are malformed.
pub const HEADER_MISMATCH: i64 = -32020;
/// This service's JSON-RPC error code: who asks could not be proven (HTTP 401).
pub const UNAUTHENTICATED_CODE: i64 = -32001;
/// This service's JSON-RPC error code: a policy (or the rule for asserted
/// identities) denies the request (HTTP 403).
pub const FORBIDDEN_CODE: i64 = -32003;
/// MCP's JSON-RPC error code of a `resources/read` of a resource the server does
/// not have (`Resource not found`, with `data.uri`).
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// The one JSON-RPC error response of the service, for every refusal on every
/// interface: `{"jsonrpc":"2.0","id":<id or null>,"error":{"code":..,"message":..}}`.
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    serde_json::to_value(ErrorResponse::new(id, code, message, None)).unwrap_or(Value::Null)
}

/// [`error_response`] with `error.data` (after `message`).
pub fn error_response_with_data(
    id: Option<&Value>,
    code: i64,
    message: &str,
    data: Map<String, Value>,
) -> Value {
    serde_json::to_value(ErrorResponse::new(id, code, message, Some(&data))).unwrap_or(Value::Null)
}

/// [`error_response_with_data`]'s JSON text, written without building the value (a
/// denied Envoy request's body).
pub fn error_response_text(
    id: Option<&Value>,
    code: i64,
    message: &str,
    data: &Map<String, Value>,
) -> String {
    // A borrowed record of strings, numbers and JSON values always serializes.
    serde_json::to_string(&ErrorResponse::new(id, code, message, Some(data))).unwrap_or_default()
}

/// A JSON-RPC error response, borrowed: the one layout of [`error_response`],
/// [`error_response_with_data`] and [`error_response_text`].
#[derive(serde::Serialize)]
struct ErrorResponse<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: ErrorObject<'a>,
}

#[derive(serde::Serialize)]
struct ErrorObject<'a> {
    code: i64,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a Map<String, Value>>,
}

impl<'a> ErrorResponse<'a> {
    fn new(
        id: Option<&'a Value>,
        code: i64,
        message: &'a str,
        data: Option<&'a Map<String, Value>>,
    ) -> Self {
        static NULL: Value = Value::Null;
        Self {
            jsonrpc: "2.0",
            id: id.unwrap_or(&NULL),
            error: ErrorObject {
                code,
                message,
                data,
            },
        }
    }
}

/// What a call acts on. Names are as the message gives them, resource URIs in the
/// normal form of [`super::uri`]; neither is qualified by a server yet
/// ([`McpCall::resource`] does that).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The server as a whole.
    Server,
    /// A tool, by name.
    Tool(String),
    /// A resource, by URI (or URI template, for `completion/complete`), in normal form.
    Resource(String),
    /// A prompt, by name.
    Prompt(String),
}

impl Subject {
    /// The kind of entity the subject is.
    pub fn target(&self) -> Target {
        match self {
            Subject::Server => Target::Server,
            Subject::Tool(_) => Target::Tool,
            Subject::Resource(_) => Target::Resource,
            Subject::Prompt(_) => Target::Prompt,
        }
    }

    /// The tool or prompt name or the resource URI; `None` for the server.
    pub fn name(&self) -> Option<&str> {
        match self {
            Subject::Server => None,
            Subject::Tool(n) | Subject::Resource(n) | Subject::Prompt(n) => Some(n),
        }
    }
}

/// Which kind of JSON-RPC message a call came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A request: `method` and `id`.
    Request,
    /// A notification: `method`, no `id`.
    Notification,
    /// A response: `result` or `error`, no `method`.
    Response,
}

/// One JSON-RPC message, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCall {
    /// The MCP method, the name of the Cedar action; [`RESPONSE_ACTION`] for a response.
    pub method: String,
    /// What the call acts on.
    pub subject: Subject,
    /// The arguments (see the module documentation); empty for most methods.
    pub arguments: Map<String, Value>,
    /// The JSON-RPC `id` (a string or an integer); `None` for a notification and
    /// for an error response without one.
    pub id: Option<Value>,
    /// Request, notification or response.
    pub kind: MessageKind,
}

/// A body, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct McpMessage {
    /// One call per message, in body order; never empty.
    pub calls: Vec<McpCall>,
    /// Whether the body was a batch array (even of one message).
    pub batch: bool,
}

impl McpMessage {
    /// The call of a body that is not a batch.
    pub fn single(&self) -> Option<&McpCall> {
        match self.calls.as_slice() {
            [call] if !self.batch => Some(call),
            _ => None,
        }
    }
}

impl McpCall {
    /// The Cedar action, `Mcp::Action::"<method>"`.
    pub fn action(&self) -> EntityUid {
        action(&self.method)
    }

    /// The Cedar resource of the call on `server`, and the server entity:
    /// `Mcp::Tool::"<server>/<name>"` (likewise for resources and prompts) or the
    /// server itself.
    pub fn resource(&self, server: &str) -> (EntityUid, EntityUid) {
        let server_uid = Kind::Server.uid(server);
        let resource = match self.subject.name() {
            None => server_uid.clone(),
            Some(name) => self
                .subject
                .target()
                .kind()
                .uid(&qualified_id(server, name)),
        };
        (resource, server_uid)
    }

    /// A decision request for the call on `server`: action, resource, server, and
    /// `context.arguments`. The caller adds the user, application and the rest of
    /// the context.
    pub fn decision_request(&self, server: &str) -> DecisionRequest {
        let (resource, server) = self.resource(server);
        let mut request = DecisionRequest::new(self.action(), resource);
        request.server = Some(server);
        request
            .context
            .insert("arguments".into(), Value::Object(self.arguments.clone()));
        request
    }

    /// A request of `method` on the server as a whole, with no arguments and no
    /// JSON-RPC message behind it: how an HTTP request that carries no MCP message
    /// is decided (Envoy's `GET`, the server's SSE stream, is `session/stream`).
    pub fn on_server(method: &str) -> McpCall {
        McpCall {
            method: method.to_owned(),
            subject: Subject::Server,
            arguments: Map::new(),
            id: None,
            kind: MessageKind::Request,
        }
    }

    /// A call of `method` on a resource URI template, as the entries of
    /// `resources/templates/list` name them: the template in normal form, or why
    /// it has none.
    pub fn on_template(method: &str, template: &str) -> Result<McpCall, UriError> {
        Ok(McpCall {
            method: method.to_owned(),
            subject: Subject::Resource(uri::normalize_template(template)?),
            arguments: Map::new(),
            id: None,
            kind: MessageKind::Request,
        })
    }

    /// The value the `Mcp-Name` header mirrors for this call: `params.name` of
    /// `tools/call` and `prompts/get`, `params.uri` of `resources/read`,
    /// `resources/subscribe` and `resources/unsubscribe` (in normal form).
    pub fn header_name(&self) -> Option<&str> {
        match (self.method.as_str(), &self.subject) {
            ("tools/call", Subject::Tool(n))
            | ("prompts/get", Subject::Prompt(n))
            | (
                "resources/read" | "resources/subscribe" | "resources/unsubscribe",
                Subject::Resource(n),
            ) => Some(n),
            _ => None,
        }
    }
}

/// The JSON-RPC request (id 0) of `method` on the tool, prompt or resource
/// `name`, as an interface that names them by fields (the gateway API's
/// `McpRequest`, a list entry) would send it: `params.name` (and
/// `params.arguments`, when given) for a tool or prompt, `params.uri` for a
/// resource, no params for a method on the server. Read with [`parse_body`], it is
/// validated and mapped as any message is.
pub fn request_message(method: &str, name: &str, arguments: Option<Map<String, Value>>) -> Value {
    let params = match target_of(method) {
        Target::Tool | Target::Prompt => {
            let mut params = Map::new();
            params.insert("name".into(), Value::String(name.to_owned()));
            if let Some(arguments) = arguments {
                params.insert("arguments".into(), Value::Object(arguments));
            }
            Value::Object(params)
        }
        Target::Resource => serde_json::json!({ "uri": name }),
        Target::Server => serde_json::json!({}),
    };
    serde_json::json!({ "jsonrpc": "2.0", "id": 0, "method": method, "params": params })
}

/// Why a body or its headers were refused: a deny, answered with a JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub struct McpError(Box<Refusal>);

#[derive(Debug, Clone, PartialEq)]
struct Refusal {
    reason: Reason,
    id: Option<Value>,
    index: Option<usize>,
}

impl fmt::Display for McpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.0.index {
            write!(f, "message {} of the batch: ", i + 1)?;
        }
        self.0.reason.fmt(f)
    }
}

// The reason is in the message, so it is not also a source.
impl std::error::Error for McpError {}

impl McpError {
    fn new(reason: Reason) -> Self {
        Self(Box::new(Refusal {
            reason,
            id: None,
            index: None,
        }))
    }

    /// The reason, for matching on.
    pub fn reason(&self) -> &Reason {
        &self.0.reason
    }

    /// The JSON-RPC error code: [`PARSE_ERROR`], [`INVALID_REQUEST`],
    /// [`INVALID_PARAMS`] or [`HEADER_MISMATCH`].
    pub fn code(&self) -> i64 {
        self.0.reason.code()
    }

    /// The `id` of the refused message when it could be read, for the error
    /// response. Always `None` for a batch, which is answered as a whole (`id: null`).
    pub fn id(&self) -> Option<&Value> {
        if self.0.index.is_some() {
            return None;
        }
        self.0.id.as_ref()
    }

    /// Which message of a batch was refused (from 0).
    pub fn batch_index(&self) -> Option<usize> {
        self.0.index
    }

    /// The JSON-RPC error response for the refusal:
    /// `{"jsonrpc":"2.0","id":<id or null>,"error":{"code":..,"message":..}}`.
    pub fn to_response(&self) -> Value {
        error_response(self.id(), self.code(), &self.to_string())
    }

    fn with_id(mut self, id: Option<Value>) -> Self {
        self.0.id = id;
        self
    }

    fn in_batch(mut self, index: usize) -> Self {
        self.0.index = Some(index);
        self
    }
}

impl From<Reason> for McpError {
    fn from(reason: Reason) -> Self {
        Self::new(reason)
    }
}

/// Why a body or its headers were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reason {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body is not UTF-8.
    #[error("the body is not UTF-8")]
    NotUtf8,
    /// The body is not JSON.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("the body nests arrays and objects deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// An object has the same key twice.
    #[error("an object has the key `{}` twice", Shown(.0))]
    DuplicateKey(String),
    /// An object has two keys that differ only in case.
    #[error("an object has the keys `{}` and `{}`, which differ only in case", Shown(.0), Shown(.1))]
    CaseVariantKeys(String, String),
    /// A key that differs only in case from a member the mapping reads.
    #[error("`{}` is not `{}`: member names are case-sensitive", Shown(.0), .1)]
    NearMissKey(String, &'static str),
    /// The body, or a message of a batch, is not a JSON object.
    #[error("a message is not a JSON object")]
    NotAnObject,
    /// A batch array is empty.
    #[error("the batch is empty")]
    EmptyBatch,
    /// A batch has more than [`MAX_BATCH`] messages.
    #[error("the batch has more than {MAX_BATCH} messages")]
    BatchTooLarge,
    /// A batch array inside a batch array.
    #[error("a batch inside a batch")]
    NestedBatch,
    /// A message with neither `method` nor `result` / `error`.
    #[error("the message has no `method`")]
    NoMethod,
    /// A message with both `method` and `result` or `error`, or both `result` and `error`.
    #[error("the message has both `{0}` and `{1}`")]
    Ambiguous(&'static str, &'static str),
    /// A member of the message (`jsonrpc`, `method`, `id`, `params`, `params.name`, ...) is malformed.
    #[error("`{field}` {problem}")]
    Field {
        /// The member, as a path from the message: `method`, `params.name`, ...
        field: &'static str,
        /// What is wrong with it.
        problem: Problem,
    },
    /// `Mcp-Method` or `Mcp-Name` came with a batch body.
    #[error("`{0}` comes with a batch body")]
    HeaderWithBatch(&'static str),
    /// A header value that is not a valid header value, or bad base64.
    #[error("`{0}` is malformed: {1}")]
    HeaderMalformed(&'static str, &'static str),
    /// A header names what the body does not.
    #[error("`{header}` is `{}` but the body has {}", Shown(.header_value), BodyValue(.body_value))]
    HeaderMismatch {
        /// `Mcp-Method` or `Mcp-Name`.
        header: &'static str,
        /// The header value (decoded).
        header_value: String,
        /// The body's value, if it has one.
        body_value: Option<String>,
    },
    /// The same header twice.
    #[error("`{0}` is given more than once")]
    RepeatedHeader(&'static str),
}

impl Reason {
    /// The JSON-RPC error code of this reason.
    pub fn code(&self) -> i64 {
        match self {
            Reason::NotUtf8 | Reason::NotJson(_) => PARSE_ERROR,
            Reason::Field { field, .. } if field.starts_with("params") => INVALID_PARAMS,
            Reason::NearMissKey(_, field) if field.starts_with("params") => INVALID_PARAMS,
            Reason::HeaderWithBatch(_)
            | Reason::HeaderMalformed(..)
            | Reason::HeaderMismatch { .. }
            | Reason::RepeatedHeader(_) => HEADER_MISMATCH,
            _ => INVALID_REQUEST,
        }
    }
}

/// What is wrong with a member of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// It is missing.
    Missing,
    /// It is not a string.
    NotString,
    /// It is not an object.
    NotObject,
    /// It is the empty string.
    Empty,
    /// It is longer than this many bytes.
    TooLong(usize),
    /// It contains a control character.
    ControlCharacter,
    /// `jsonrpc` is not `"2.0"`.
    NotVersion2,
    /// `id` is not a string or an integer.
    NotId,
    /// `error` is not an object with an integer `code` and a string `message`.
    NotError,
    /// `method` is [`RESPONSE_ACTION`].
    Reserved,
    /// `params.ref.type` is neither `ref/prompt` nor `ref/resource`.
    UnknownRefType(String),
    /// A resource URI or URI template without a normal form.
    Uri(UriError),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("is missing"),
            Problem::NotString => f.write_str("is not a string"),
            Problem::NotObject => f.write_str("is not an object"),
            Problem::Empty => f.write_str("is empty"),
            Problem::TooLong(n) => write!(f, "is longer than {n} bytes"),
            Problem::ControlCharacter => f.write_str("contains a control character"),
            Problem::NotVersion2 => f.write_str("is not `2.0`"),
            Problem::NotId => f.write_str("is not a string or an integer"),
            Problem::NotError => {
                f.write_str("is not an object with an integer `code` and a string `message`")
            }
            Problem::Reserved => write!(f, "`{RESPONSE_ACTION}` is reserved for responses"),
            Problem::UnknownRefType(t) => {
                write!(f, "is `{}`, not `ref/prompt` or `ref/resource`", Shown(t))
            }
            Problem::Uri(e) => write!(f, "is refused: {e}"),
        }
    }
}

struct BodyValue<'a>(&'a Option<String>);

impl fmt::Display for BodyValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "`{}`", Shown(v)),
            None => f.write_str("none"),
        }
    }
}

/// Map an MCP POST body to its calls. See the module documentation.
pub fn parse_body(body: &[u8]) -> Result<McpMessage, McpError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Reason::TooLarge.into());
    }
    let text = std::str::from_utf8(body).map_err(|_| Reason::NotUtf8)?;
    let value = json::parse(text, MAX_DEPTH).map_err(|fault| match fault {
        JsonFault::Syntax(m) => Reason::NotJson(m),
        JsonFault::TooDeep => Reason::TooDeep,
        JsonFault::DuplicateKey(k) => Reason::DuplicateKey(k),
        JsonFault::CaseVariantKeys(a, b) => Reason::CaseVariantKeys(a, b),
    })?;
    match value {
        Value::Object(message) => Ok(McpMessage {
            calls: vec![map_message(message)?],
            batch: false,
        }),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(Reason::EmptyBatch.into());
            }
            if items.len() > MAX_BATCH {
                return Err(Reason::BatchTooLarge.into());
            }
            let calls = items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    match item {
                        Value::Object(message) => map_message(message),
                        Value::Array(_) => Err(Reason::NestedBatch.into()),
                        _ => Err(Reason::NotAnObject.into()),
                    }
                    .map_err(|e| e.in_batch(i))
                })
                .collect::<Result<_, _>>()?;
            Ok(McpMessage { calls, batch: true })
        }
        _ => Err(Reason::NotAnObject.into()),
    }
}

/// The members of a message the mapping reads, with their paths.
const ENVELOPE: &[(&str, &str); 6] = &[
    ("jsonrpc", "jsonrpc"),
    ("id", "id"),
    ("method", "method"),
    ("params", "params"),
    ("result", "result"),
    ("error", "error"),
];
/// The members of `params` the mapping reads, with their paths.
const PARAMS: &[(&str, &str); 6] = &[
    ("name", "params.name"),
    ("uri", "params.uri"),
    ("arguments", "params.arguments"),
    ("ref", "params.ref"),
    ("argument", "params.argument"),
    ("context", "params.context"),
];
/// The members of `params.ref` the mapping reads, with their paths.
const REF: &[(&str, &str); 3] = &[
    ("type", "params.ref.type"),
    ("name", "params.ref.name"),
    ("uri", "params.ref.uri"),
];

fn map_message(message: Map<String, Value>) -> Result<McpCall, McpError> {
    let [jsonrpc, id, method, params, result, error] = members(message, ENVELOPE)?;
    let id = match id {
        None => None,
        Some(id @ Value::String(_)) => Some(id),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        // JSON-RPC: an error response whose request id could not be read has `id: null`.
        Some(Value::Null) if error.is_some() && method.is_none() => None,
        Some(_) => return Err(field("id", Problem::NotId).into()),
    };
    let envelope = Envelope {
        jsonrpc,
        method,
        params,
        result,
        error,
    };
    match map_with_id(envelope, id.is_some()) {
        Ok((method, subject, arguments, kind)) => Ok(McpCall {
            method,
            subject,
            arguments,
            id,
            kind,
        }),
        Err(reason) => Err(McpError::from(reason).with_id(id)),
    }
}

type Mapped = (String, Subject, Map<String, Value>, MessageKind);

/// The members of `params` the mapping reads: [`PARAMS`], by name.
struct Params {
    name: Option<Value>,
    uri: Option<Value>,
    arguments: Option<Value>,
    reference: Option<Value>,
    argument: Option<Value>,
    context: Option<Value>,
}

impl Params {
    /// The members of `params`, in one pass over it (see [`members`]).
    fn of(params: Map<String, Value>) -> Result<Self, Reason> {
        let [name, uri, arguments, reference, argument, context] = members(params, PARAMS)?;
        Ok(Self {
            name,
            uri,
            arguments,
            reference,
            argument,
            context,
        })
    }
}

/// The members of a message the mapping reads besides its id.
struct Envelope {
    jsonrpc: Option<Value>,
    method: Option<Value>,
    params: Option<Value>,
    result: Option<Value>,
    error: Option<Value>,
}

fn map_with_id(message: Envelope, has_id: bool) -> Result<Mapped, Reason> {
    match &message.jsonrpc {
        Some(Value::String(v)) if v == "2.0" => {}
        None => return Err(field("jsonrpc", Problem::Missing)),
        Some(_) => return Err(field("jsonrpc", Problem::NotVersion2)),
    }
    if message.method.is_some() {
        for (other, value) in [("result", &message.result), ("error", &message.error)] {
            if value.is_some() {
                return Err(Reason::Ambiguous("method", other));
            }
        }
        let (method, subject, arguments) = map_request(message.method, message.params)?;
        let kind = if has_id {
            MessageKind::Request
        } else {
            MessageKind::Notification
        };
        return Ok((method, subject, arguments, kind));
    }
    match (&message.result, &message.error) {
        (Some(_), Some(_)) => return Err(Reason::Ambiguous("result", "error")),
        (None, None) => return Err(Reason::NoMethod),
        (Some(result), None) => {
            if !result.is_object() {
                return Err(field("result", Problem::NotObject));
            }
            if !has_id {
                return Err(field("id", Problem::Missing));
            }
        }
        (None, Some(error)) => {
            let valid = error.as_object().is_some_and(|e| {
                e.get("code").is_some_and(|c| c.is_i64() || c.is_u64())
                    && e.get("message").is_some_and(Value::is_string)
            });
            if !valid {
                return Err(field("error", Problem::NotError));
            }
        }
    }
    Ok((
        RESPONSE_ACTION.to_owned(),
        Subject::Server,
        Map::new(),
        MessageKind::Response,
    ))
}

fn map_request(
    method: Option<Value>,
    params: Option<Value>,
) -> Result<(String, Subject, Map<String, Value>), Reason> {
    let method = text(method, "method", MAX_METHOD_BYTES)?;
    if method == RESPONSE_ACTION {
        return Err(field("method", Problem::Reserved));
    }
    let params = match params {
        None => None,
        Some(Value::Object(p)) => Some(Params::of(p)?),
        Some(_) => return Err(field("params", Problem::NotObject)),
    };
    let need_params = || params.ok_or_else(|| field("params", Problem::Missing));
    let (subject, arguments) = if method == "completion/complete" {
        completion(need_params()?)?
    } else {
        match target_of(&method) {
            Target::Server => (Subject::Server, Map::new()),
            Target::Tool => {
                let p = need_params()?;
                let name = text(p.name, "params.name", MAX_NAME_BYTES)?;
                (Subject::Tool(name), arguments(p.arguments)?)
            }
            Target::Prompt => {
                let p = need_params()?;
                let name = text(p.name, "params.name", MAX_NAME_BYTES)?;
                (Subject::Prompt(name), arguments(p.arguments)?)
            }
            Target::Resource => {
                let uri = text(need_params()?.uri, "params.uri", MAX_URI_BYTES)?;
                let uri = uri::normalize(&uri).map_err(|e| field("params.uri", Problem::Uri(e)))?;
                (Subject::Resource(uri), Map::new())
            }
        }
    };
    Ok((method, subject, arguments))
}

/// `completion/complete`: the prompt or resource template of `params.ref`, and
/// the argument being completed as `{"argument": {...}}` (plus `"context"`).
fn completion(params: Params) -> Result<(Subject, Map<String, Value>), Reason> {
    let [kind, name, uri] = match params.reference {
        Some(Value::Object(r)) => members(r, REF)?,
        Some(_) => return Err(field("params.ref", Problem::NotObject)),
        None => return Err(field("params.ref", Problem::Missing)),
    };
    let kind = text(kind, "params.ref.type", MAX_METHOD_BYTES)?;
    let subject = match kind.as_str() {
        "ref/prompt" => Subject::Prompt(text(name, "params.ref.name", MAX_NAME_BYTES)?),
        "ref/resource" => {
            let template = text(uri, "params.ref.uri", MAX_URI_BYTES)?;
            Subject::Resource(
                uri::normalize_template(&template)
                    .map_err(|e| field("params.ref.uri", Problem::Uri(e)))?,
            )
        }
        _ => return Err(field("params.ref.type", Problem::UnknownRefType(kind))),
    };
    let mut arguments = Map::new();
    match params.argument {
        Some(a @ Value::Object(_)) => arguments.insert("argument".into(), a),
        Some(_) => return Err(field("params.argument", Problem::NotObject)),
        None => return Err(field("params.argument", Problem::Missing)),
    };
    match params.context {
        None | Some(Value::Null) => {}
        Some(c @ Value::Object(_)) => {
            arguments.insert("context".into(), c);
        }
        Some(_) => return Err(field("params.context", Problem::NotObject)),
    }
    Ok((subject, arguments))
}

/// `params.arguments`: an object; absent or `null` is no arguments.
fn arguments(value: Option<Value>) -> Result<Map<String, Value>, Reason> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(a)) => Ok(a),
        Some(_) => Err(field("params.arguments", Problem::NotObject)),
    }
}

/// A required, non-empty string of at most `max` bytes without control characters.
fn text(value: Option<Value>, name: &'static str, max: usize) -> Result<String, Reason> {
    let s = match value {
        Some(Value::String(s)) => s,
        Some(_) => return Err(field(name, Problem::NotString)),
        None => return Err(field(name, Problem::Missing)),
    };
    if s.is_empty() {
        return Err(field(name, Problem::Empty));
    }
    if s.len() > max {
        return Err(field(name, Problem::TooLong(max)));
    }
    if s.chars().any(char::is_control) {
        return Err(field(name, Problem::ControlCharacter));
    }
    Ok(s)
}

/// The values of `object`'s `members`, in their order (`None` for an absent one), in
/// one pass over it: its keys are distinct (the parser refuses a repeated key), and
/// any other key is left unread, unless it folds to a member's name without being it
/// (a server matching keys case-insensitively would read it as that member): refused.
fn members<const N: usize>(
    object: Map<String, Value>,
    members: &[(&str, &'static str); N],
) -> Result<[Option<Value>; N], Reason> {
    let mut values = [const { None }; N];
    for (key, value) in object {
        let slot = members
            .iter()
            .zip(values.iter_mut())
            .find_map(|((m, _), slot)| (*m == key).then_some(slot));
        if let Some(slot) = slot {
            *slot = Some(value);
            continue;
        }
        let folded = json::fold(&key);
        if let Some((_, path)) = members.iter().find(|(m, _)| *m == folded) {
            return Err(Reason::NearMissKey(key, path));
        }
    }
    Ok(values)
}

fn field(field: &'static str, problem: Problem) -> Reason {
    Reason::Field { field, problem }
}

/// The 2026-07-28 (SEP-2243) request headers that mirror the body. Header names
/// are case-insensitive; values are as received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McpHeaders<'a> {
    /// `Mcp-Method`: the body's `method`.
    pub method: Option<&'a str>,
    /// `Mcp-Name`: the body's `params.name` (`tools/call`, `prompts/get`) or
    /// `params.uri` (`resources/read`, `resources/subscribe`, `resources/unsubscribe`),
    /// as is or as `=?base64?<standard base64 of the UTF-8>?=`.
    pub name: Option<&'a str>,
}

/// Header name of the method header.
pub const MCP_METHOD_HEADER: &str = "Mcp-Method";
/// Header name of the name header.
pub const MCP_NAME_HEADER: &str = "Mcp-Name";

impl<'a> McpHeaders<'a> {
    /// Pick `Mcp-Method` and `Mcp-Name` out of `(name, value)` pairs, names
    /// compared case-insensitively. The same header twice is an error.
    pub fn from_pairs<I>(pairs: I) -> Result<Self, McpError>
    where
        I: IntoIterator<Item = (&'a str, &'a str)>,
    {
        let mut headers = Self::default();
        for (name, value) in pairs {
            let (slot, header) = if name.eq_ignore_ascii_case(MCP_METHOD_HEADER) {
                (&mut headers.method, MCP_METHOD_HEADER)
            } else if name.eq_ignore_ascii_case(MCP_NAME_HEADER) {
                (&mut headers.name, MCP_NAME_HEADER)
            } else {
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(Reason::RepeatedHeader(header).into());
            }
        }
        Ok(headers)
    }
}

/// Check the `Mcp-Method` / `Mcp-Name` headers against the body: each one given
/// must equal the body's value (`Mcp-Name` after base64 decoding). Headers are not
/// required (earlier revisions have none, and the decision is made on the body);
/// whoever needs them present checks that. Refused:
///
/// - either header with a batch body (batches are 2025-03-26 only, the headers
///   2026-07-28 only, so no client sends both);
/// - `Mcp-Method` with a response (which has no method), or different from `method`;
/// - `Mcp-Name` with a call that mirrors no name ([`McpCall::header_name`]), or
///   different from it (for a resource: naming another resource, that is with
///   another normal form, or with none);
/// - a value with characters outside visible ASCII, space and tab, or bad base64.
///
/// The error carries the message's `id`.
pub fn check_headers(msg: &McpMessage, headers: &McpHeaders<'_>) -> Result<(), McpError> {
    if headers.method.is_none() && headers.name.is_none() {
        return Ok(());
    }
    let Some(call) = msg.single() else {
        let header = if headers.method.is_some() {
            MCP_METHOD_HEADER
        } else {
            MCP_NAME_HEADER
        };
        return Err(Reason::HeaderWithBatch(header).into());
    };
    check_call_headers(call, headers).map_err(|e| McpError::from(e).with_id(call.id.clone()))
}

fn check_call_headers(call: &McpCall, headers: &McpHeaders<'_>) -> Result<(), Reason> {
    if let Some(value) = headers.method {
        header_value(MCP_METHOD_HEADER, value)?;
        let body = (call.kind != MessageKind::Response).then_some(call.method.as_str());
        if body != Some(value) {
            return Err(Reason::HeaderMismatch {
                header: MCP_METHOD_HEADER,
                header_value: value.to_owned(),
                body_value: body.map(str::to_owned),
            });
        }
    }
    if let Some(value) = headers.name {
        header_value(MCP_NAME_HEADER, value)?;
        let decoded = decode_name(value)?;
        let body = call.header_name();
        let same = match (&call.subject, body) {
            // The body's URI is in normal form: the header must name the same resource.
            (Subject::Resource(_), Some(body)) => {
                uri::normalize(&decoded).is_ok_and(|header| header == body)
            }
            (_, body) => body == Some(decoded.as_ref()),
        };
        if !same {
            return Err(Reason::HeaderMismatch {
                header: MCP_NAME_HEADER,
                header_value: decoded.into_owned(),
                body_value: body.map(str::to_owned),
            });
        }
    }
    Ok(())
}

/// A header value: visible ASCII, space and horizontal tab only (RFC 9110).
fn header_value(header: &'static str, value: &str) -> Result<(), Reason> {
    if value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        Ok(())
    } else {
        Err(Reason::HeaderMalformed(
            header,
            "only visible ASCII, space and tab are allowed",
        ))
    }
}

/// Decode the `=?base64?...?=` sentinel form of `Mcp-Name` (markers
/// case-sensitive, standard alphabet, padded, canonical); other values are literal.
fn decode_name(value: &str) -> Result<Cow<'_, str>, Reason> {
    const PREFIX: &str = "=?base64?";
    const SUFFIX: &str = "?=";
    let Some(payload) = value
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
    else {
        return Ok(Cow::Borrowed(value));
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|_| Reason::HeaderMalformed(MCP_NAME_HEADER, "bad base64"))?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| Reason::HeaderMalformed(MCP_NAME_HEADER, "base64 of text that is not UTF-8"))
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
