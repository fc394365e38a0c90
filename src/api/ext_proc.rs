//! Envoy external processing (`envoy.service.ext_proc.v3.ExternalProcessor/Process`):
//! MCP list responses filtered on their way back to the client, so that on the
//! sidecar path a client sees only the tools, prompts and resources it may use —
//! decided exactly as the gateway's `FilterList` decides ([`ListJob`]): the same
//! identity, the same server, the same rule.
//!
//! # The exchange, per HTTP request (one gRPC stream)
//!
//! 1. Request headers. The method of the request's MCP message is read from what
//!    ext_authz established: its dynamic metadata (`envoy.filters.http.ext_authz`:
//!    `mcp_method`, `mcp_server`, `decision_id`) when Envoy forwards it
//!    (`metadata_options.forwarding_namespaces`), else Envoy's MCP filter's
//!    metadata. A request that is not a list call is answered "continue" and costs
//!    nothing more. For a list call the caller is identified by the rules of
//!    ext_authz ([`identify`]) and the answer asks for the response
//!    (`mode_override`: response headers, response body streamed). Neither
//!    metadata present: a POST's body is asked for (`BUFFERED`) and read once.
//!    A resumed stream (`GET` with `Last-Event-ID`) may replay the response of a
//!    list call: its responses are filtered by the list each one holds.
//! 2. Response headers. A `200` list response in `application/json` is collected
//!    and rewritten whole at its end; in `text/event-stream` it is rewritten event by
//!    event as the bytes arrive ([`EventReader`]), holding only the event being
//!    read. `content-length` is removed (the body changes). Any other answer
//!    (an error status, `202`) passes as it is.
//! 3. Response body. Every message of the body that is a JSON-RPC success response
//!    is read strictly as the list's result and the entries the caller may not use
//!    are removed; requests and notifications of the server, and error responses,
//!    pass untouched.
//!
//! Fail closed: a list that cannot be read, a caller that cannot be identified, an
//! event or body over the limit, a compressed body — the list is replaced by a
//! JSON-RPC error answering the same id, logged as a deny. Never the unfiltered list.

use std::borrow::Cow;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Metadata;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::processing_mode::{
    BodySendMode, HeaderSendMode,
};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::ExternalProcessor;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyMutation, BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders,
    ProcessingRequest, ProcessingResponse, TrailersResponse, body_mutation, processing_request,
    processing_response,
};
use serde_json::{Map, Value};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use super::ext_authz::{
    DECISION_ID_METADATA, EXT_AUTHZ_NAMESPACE, EnvoyRequest, HeaderSource, Headers,
    MCP_FILTER_NAMESPACE, METHOD_METADATA, SERVER_METADATA, identify,
};
use super::list_filter::{ListInput, ListJob};
use super::mcp_check::{CallerTrust, decision_meta, off_workers};
use super::pbjson::envoy_struct_to_json;
use super::refusal::Refusal;
use super::services::{Ready, Services};
use crate::authz::{DecisionMeta, Interface};
use crate::identity::Identity;
use crate::mcp::jsonrpc::parse_body;
use crate::mcp::lists::{LIST_KINDS, ListKind, read_list_result};
use crate::mcp::sse::{Event, EventReader};

/// The longest list response body (JSON) or event (SSE) read: 16 MiB. A longer one
/// is refused (the list is replaced by an error), never passed unread.
pub const MAX_LIST_BYTES: usize = 16 << 20;

/// The `envoy.service.ext_proc.v3.ExternalProcessor` service.
#[derive(Debug, Clone)]
pub struct ExtProc {
    ready: Ready,
}

impl ExtProc {
    /// The service, answering once `ready` is.
    pub fn new(ready: Ready) -> Self {
        Self { ready }
    }
}

#[tonic::async_trait]
impl ExternalProcessor for ExtProc {
    type ProcessStream = ReceiverStream<Result<ProcessingResponse, Status>>;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let services = self
            .ready
            .get()
            .ok_or_else(|| Status::from(Refusal::unavailable()))?
            .clone();
        let caller = CallerTrust::of_grpc(&services, &request);
        let mut inbound = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut exchange = Exchange::new(services, caller);
            loop {
                let message = match inbound.message().await {
                    Ok(Some(m)) => m,
                    // Envoy ended the stream (or it broke): nothing to answer.
                    Ok(None) | Err(_) => break,
                };
                let answer = exchange.answer(message).await;
                if tx.send(answer).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What is left to do for the request of one stream.
enum Phase {
    /// Nothing: every further message passes untouched.
    Pass,
    /// Waiting for the request body to learn the method (no metadata said it).
    AwaitBody(Box<HttpHeaders>),
    /// A list call: its response is filtered.
    List(Box<ListCall>),
}

/// A list call whose response is being filtered.
struct ListCall {
    /// The list method; `None` on a resumed stream (`GET` with `Last-Event-ID`),
    /// which may replay the response of any list call: each response's own
    /// members say which list it holds.
    kind: Option<ListKind>,
    /// The server and who asks, or why they could not be told (the list is then
    /// refused).
    who: Result<(String, Identity), Refusal>,
    /// ext_authz's decision, if Envoy passed it on.
    authorized_by: Option<String>,
    meta: DecisionMeta,
    body: Body,
}

/// How the response body is read.
enum Body {
    /// Not known yet (before the response headers).
    Unknown,
    /// `application/json`: collected, rewritten at its end.
    Json(Vec<u8>),
    /// `text/event-stream`: rewritten event by event.
    Events(EventReader),
    /// Refused at the headers: the body is replaced by this JSON-RPC error once.
    Refused(Option<Vec<u8>>),
    /// Passes untouched (not a list result: an error status, `202`).
    Untouched,
}

/// One stream's state.
struct Exchange {
    services: Arc<Services>,
    caller: CallerTrust,
    phase: Phase,
}

impl Exchange {
    fn new(services: Arc<Services>, caller: CallerTrust) -> Self {
        Self {
            services,
            caller,
            phase: Phase::Pass,
        }
    }

    /// The answer to one message of Envoy.
    async fn answer(&mut self, message: ProcessingRequest) -> Result<ProcessingResponse, Status> {
        use processing_request::Request as In;
        use processing_response::Response as Out;
        let metadata = message.metadata_context.as_ref();
        let Some(part) = message.request else {
            return Err(Status::invalid_argument(
                "the processing request holds no request part",
            ));
        };
        Ok(match part {
            In::RequestHeaders(mut headers) => {
                // Envoy sends `request_attributes` beside the headers (older releases: in them).
                headers.attributes.extend(message.attributes);
                self.request_headers(headers, metadata).await
            }
            In::RequestBody(body) => {
                let mode = self.request_body(&body.body).await;
                respond(Out::RequestBody(BodyResponse::default()), mode)
            }
            In::ResponseHeaders(headers) => self.response_headers(&headers),
            In::ResponseBody(body) => {
                let mutation = self.response_body(&body.body, body.end_of_stream).await;
                respond(
                    Out::ResponseBody(BodyResponse {
                        response: mutation.map(|m| CommonResponse {
                            body_mutation: Some(BodyMutation { mutation: Some(m) }),
                            ..CommonResponse::default()
                        }),
                    }),
                    None,
                )
            }
            In::RequestTrailers(_) => {
                respond(Out::RequestTrailers(TrailersResponse::default()), None)
            }
            In::ResponseTrailers(_) => {
                respond(Out::ResponseTrailers(TrailersResponse::default()), None)
            }
        })
    }

    async fn request_headers(
        &mut self,
        headers: HttpHeaders,
        metadata: Option<&Metadata>,
    ) -> ProcessingResponse {
        use processing_response::Response as Out;
        let continue_ = Out::RequestHeaders(HeadersResponse::default());
        let authz = namespace(metadata, EXT_AUTHZ_NAMESPACE);
        let text = |m: &Option<Map<String, Value>>, key: &str| {
            m.as_ref()
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let method = text(&authz, METHOD_METADATA)
            .or_else(|| text(&namespace(metadata, MCP_FILTER_NAMESPACE), "method"));
        let server = text(&authz, SERVER_METADATA);
        let authorized_by = text(&authz, DECISION_ID_METADATA);
        let http_method = header_of(&headers, ":method").unwrap_or_default();
        // A resumed stream (`GET` with `Last-Event-ID`) may replay a list call's
        // response, whatever ext_authz saw (`session/stream`).
        if http_method == "GET" && header_of(&headers, "last-event-id").is_some() {
            let call = self
                .list_call(None, &headers, server.as_deref(), authorized_by)
                .await;
            self.phase = Phase::List(Box::new(call));
            return respond(continue_, Some(list_mode()));
        }
        match method {
            Some(method) => {
                let Some(kind) = ListKind::of(&method) else {
                    return respond(continue_, None);
                };
                let call = self
                    .list_call(Some(kind), &headers, server.as_deref(), authorized_by)
                    .await;
                self.phase = Phase::List(Box::new(call));
                respond(continue_, Some(list_mode()))
            }
            // Nothing said which method: only a POST carries a list call.
            None if http_method == "POST" => {
                self.phase = Phase::AwaitBody(Box::new(headers));
                let mut mode = list_mode();
                mode.request_body_mode = BodySendMode::Buffered as i32;
                respond(continue_, Some(mode))
            }
            None => respond(continue_, None),
        }
    }

    /// The list call of `kind` the request `headers` make: who asks, on which server.
    async fn list_call(
        &self,
        kind: Option<ListKind>,
        headers: &HttpHeaders,
        server: Option<&str>,
        authorized_by: Option<String>,
    ) -> ListCall {
        let request = envoy_request(headers, self.caller);
        let meta = request.meta.clone();
        let who = identify(&self.services, &request, server).await;
        ListCall {
            kind,
            who,
            authorized_by,
            meta,
            body: Body::Unknown,
        }
    }

    /// The request body, asked for when no metadata said the method: a list call's
    /// response is filtered, anything else passes from now on. A body that cannot be
    /// read, or a batch holding a list call, has every success response replaced by
    /// an error: what the MCP server reads in it cannot be known here.
    async fn request_body(&mut self, body: &[u8]) -> Option<ProcessingMode> {
        let Phase::AwaitBody(headers) = std::mem::replace(&mut self.phase, Phase::Pass) else {
            return None;
        };
        let (kind, refused) = match parse_body(body) {
            Ok(message) => match message.single() {
                Some(call) => match ListKind::of(&call.method) {
                    Some(kind) => (kind, None),
                    None => return None,
                },
                None => match message.calls.iter().find_map(|c| ListKind::of(&c.method)) {
                    Some(kind) => (
                        kind,
                        Some("a batch holding a list call: its lists cannot be filtered"),
                    ),
                    None => return None,
                },
            },
            Err(_) => (
                LIST_KINDS[0],
                Some("the request body cannot be read: its answer cannot be filtered"),
            ),
        };
        let mut call = self.list_call(Some(kind), &headers, None, None).await;
        if let Some(why) = refused {
            call.who = Err(Refusal::invalid(why));
        }
        self.phase = Phase::List(Box::new(call));
        None
    }

    fn response_headers(&mut self, headers: &HttpHeaders) -> ProcessingResponse {
        use processing_response::Response as Out;
        let continue_ = Out::ResponseHeaders(HeadersResponse::default());
        let Phase::List(call) = &mut self.phase else {
            // Not a list call (known only now, from the request body): no body.
            return respond(continue_, Some(pass_mode()));
        };
        if header_of(headers, ":status").as_deref() != Some("200") {
            call.body = Body::Untouched;
            return respond(continue_, Some(pass_mode()));
        }
        let content_type = header_of(headers, "content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let encoded = header_of(headers, "content-encoding")
            .is_some_and(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let media = content_type.split(';').next().unwrap_or_default().trim();
        call.body = if encoded {
            Body::Refused(None)
        } else if media == "application/json" {
            Body::Json(Vec::new())
        } else if media == "text/event-stream" {
            Body::Events(EventReader::new(MAX_LIST_BYTES))
        } else {
            Body::Refused(None)
        };
        if matches!(call.body, Body::Refused(_)) {
            let why = if encoded {
                "the list response is compressed: it cannot be filtered"
            } else {
                "the list response is neither JSON nor an event stream: it cannot be filtered"
            };
            let error = refused_message(&self.services, &call.meta, &Refusal::invalid(why), None);
            call.body = Body::Refused(Some(error));
        }
        let mut set_headers = Vec::new();
        if matches!(call.body, Body::Refused(_)) {
            // The error that replaces the body is JSON, whatever was announced.
            set_headers.push(header_value("content-type", "application/json"));
        }
        let response = HeadersResponse {
            response: Some(CommonResponse {
                header_mutation: Some(HeaderMutation {
                    set_headers,
                    remove_headers: vec![
                        "content-length".to_owned(),
                        "content-encoding".to_owned(),
                    ],
                }),
                ..CommonResponse::default()
            }),
        };
        respond(Out::ResponseHeaders(response), None)
    }

    /// The replacement of a chunk of the response body, if any.
    async fn response_body(&mut self, chunk: &[u8], end: bool) -> Option<body_mutation::Mutation> {
        use body_mutation::Mutation;
        let Phase::List(call) = &mut self.phase else {
            return None;
        };
        if matches!(call.body, Body::Unknown) {
            // A list response whose headers were not seen: never passed unread.
            let refusal = Refusal::internal("the list response came without its headers");
            let error = refused_message(&self.services, &call.meta, &refusal, None);
            call.body = Body::Refused(Some(error));
        }
        let out = match &mut call.body {
            Body::Untouched | Body::Unknown => return None,
            Body::Refused(_) => None,
            Body::Json(collected) if collected.len() + chunk.len() > MAX_LIST_BYTES => {
                let refusal = Refusal::too_large(format!(
                    "the list response is longer than {MAX_LIST_BYTES} bytes"
                ));
                let error = refused_message(&self.services, &call.meta, &refusal, None);
                call.body = Body::Refused(Some(error));
                None
            }
            Body::Json(collected) => {
                collected.extend_from_slice(chunk);
                if end {
                    let whole = std::mem::take(collected);
                    let filtered = filter_message(&self.services, call, &whole).await;
                    Some(filtered.unwrap_or(whole))
                } else {
                    None
                }
            }
            Body::Events(reader) => {
                let (mut events, refused) = match reader.push(chunk) {
                    Ok(events) => (events, None),
                    Err(e) => (Vec::new(), Some(Refusal::too_large(e.to_string()))),
                };
                if end {
                    // An event left open at the end is not an event: dropped.
                    events.extend(reader.finish().0);
                }
                let mut out = Vec::new();
                for event in events {
                    out.extend(filter_event(&self.services, call, event).await);
                }
                if let Some(refusal) = refused {
                    let error = refused_message(&self.services, &call.meta, &refusal, None);
                    out.extend(crate::mcp::sse::message_event(&error));
                    call.body = Body::Refused(None);
                }
                Some(out)
            }
        };
        // A refused body: dropped chunk by chunk, the error written once at its end.
        let out = match (&mut call.body, end) {
            (Body::Refused(error), true) => error.take(),
            _ => out,
        };
        Some(match out {
            Some(bytes) if !bytes.is_empty() => Mutation::Body(bytes),
            _ => Mutation::ClearBody(true),
        })
    }
}

/// A ProcessingResponse of `response`, with a mode override if any.
fn respond(
    response: processing_response::Response,
    mode: Option<ProcessingMode>,
) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(response),
        mode_override: mode,
        ..ProcessingResponse::default()
    }
}

/// The processing mode of a list call: its response headers, and its response body
/// streamed; nothing of the request beyond its headers.
fn list_mode() -> ProcessingMode {
    ProcessingMode {
        request_header_mode: HeaderSendMode::Send as i32,
        response_header_mode: HeaderSendMode::Send as i32,
        request_body_mode: BodySendMode::None as i32,
        response_body_mode: BodySendMode::Streamed as i32,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    }
}

/// The processing mode once a response needs nothing more.
fn pass_mode() -> ProcessingMode {
    ProcessingMode {
        response_body_mode: BodySendMode::None as i32,
        ..list_mode()
    }
}

/// The metadata of `namespace` in what Envoy forwarded, as JSON.
fn namespace(metadata: Option<&Metadata>, namespace: &str) -> Option<Map<String, Value>> {
    metadata
        .and_then(|m| m.filter_metadata.get(namespace))
        .map(envoy_struct_to_json)
}

/// The first value of header `name` (lowercase) in Envoy's header map.
fn header_of(headers: &HttpHeaders, name: &str) -> Option<String> {
    headers
        .headers
        .as_ref()?
        .headers
        .iter()
        .find(|h| h.key == name)
        .map(|h| value_of(h).into_owned())
}

fn value_of(h: &envoy_types::pb::envoy::config::core::v3::HeaderValue) -> Cow<'_, str> {
    if h.raw_value.is_empty() {
        Cow::Borrowed(h.value.as_str())
    } else {
        String::from_utf8_lossy(&h.raw_value)
    }
}

fn header_value(
    key: &str,
    value: &str,
) -> envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
    envoy_types::pb::envoy::config::core::v3::HeaderValueOption {
        header: Some(envoy_types::pb::envoy::config::core::v3::HeaderValue {
            key: key.to_owned(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The request the headers describe, read by ext_authz's rules (every value kept).
fn envoy_request(headers: &HttpHeaders, caller: CallerTrust) -> EnvoyRequest<'_> {
    let mut map = Headers::new();
    for h in headers.headers.iter().flat_map(|m| &m.headers) {
        map.add(HeaderSource::HeaderMap, &h.key, value_of(h));
    }
    let attribute = |name: &str| {
        // Keyed by the filter's name, whatever the configuration calls it.
        headers
            .attributes
            .values()
            .find_map(|s| s.fields.get(name))
            .and_then(|v| match &v.kind {
                Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => {
                    Some(s.as_str())
                }
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let meta = decision_meta(
        map.get_lenient("traceparent"),
        map.get_lenient("x-request-id"),
    );
    EnvoyRequest {
        meta,
        method: "",
        headers: map,
        destination_principal: attribute("destination.principal"),
        spiffe_id: attribute("source.principal"),
        caller: Some(caller),
        ..EnvoyRequest::default()
    }
}

/// One event of a list response: its data filtered if it is the list's result;
/// every other event byte for byte.
async fn filter_event(services: &Arc<Services>, call: &ListCall, event: Event) -> Vec<u8> {
    let Some(data) = event.data() else {
        return event.raw().to_vec();
    };
    match filter_message(services, call, &data).await {
        Some(replaced) => event.with_data(&replaced),
        None => event.raw().to_vec(),
    }
}

/// Whether a JSON-RPC message is (or may be) a success response, which is the
/// list's result: anything but a request, a notification or an error response.
fn is_result(message: &[u8]) -> bool {
    match serde_json::from_slice::<Value>(message) {
        Ok(Value::Object(m)) => {
            !(m.contains_key("method") || (m.contains_key("error") && !m.contains_key("result")))
        }
        // Not JSON, or a batch: read strictly as a list, and refused.
        _ => true,
    }
}

/// The `id` of a JSON-RPC message, if it can be read.
fn id_of(message: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(message)
        .ok()
        .and_then(|v| v.get("id").cloned())
}

/// The list a success response of a resumed stream carries, by its result's
/// members (in any case: the strict reading then refuses a case variant); `None`
/// for anything that holds no list.
fn resumed_kind(message: &[u8]) -> Option<ListKind> {
    let value = serde_json::from_slice::<Value>(message).ok()?;
    let result = value.get("result")?.as_object()?;
    LIST_KINDS
        .into_iter()
        .find(|k| result.keys().any(|key| key.eq_ignore_ascii_case(k.array)))
}

/// The list response `message` filtered, or the JSON-RPC error that replaces it;
/// `None` when it is not a list result (a request or notification of the server,
/// an error response, on a resumed stream a response holding no list): untouched.
/// A list result is read once (strictly); the other readings are for refusals.
async fn filter_message(
    services: &Arc<Services>,
    call: &ListCall,
    message: &[u8],
) -> Option<Vec<u8>> {
    let kind = match call.kind {
        Some(kind) => kind,
        None => resumed_kind(message)?,
    };
    let refuse = |refusal: &Refusal| {
        is_result(message)
            .then(|| refused_message(services, &call.meta, refusal, id_of(message).as_ref()))
    };
    let (server, identity) = match &call.who {
        Ok(who) => who.clone(),
        Err(refusal) => return refuse(refusal),
    };
    let result = match read_list_result(message, kind) {
        Ok(r) => r,
        Err(why) => return refuse(&Refusal::invalid(why)),
    };
    let max = services.grpc.max_list_entries;
    if result.names().len() > max {
        return refuse(&Refusal::too_large(format!(
            "the list holds {} entries; the limit is {max} (`grpc.max_list_entries`)",
            result.names().len()
        )));
    }
    let input = ListInput {
        kind,
        server,
        identity,
        extra: Map::new(),
        names: result.names().to_vec(),
        result: Some(result),
        authorized_by: call.authorized_by.clone(),
    };
    let meta = call.meta.clone();
    let owned = Arc::clone(services);
    let span = crate::api::grpc::request_span(
        "envoy.service.ext_proc.v3.ExternalProcessor/Process",
        &meta,
    );
    let filtered = off_workers(move || {
        let job = ListJob::new(&owned, &meta, Interface::ExtProc, input);
        let allowed = job.decide();
        job.finish(&allowed)
    })
    .instrument(span.clone())
    .await;
    match filtered {
        Some(f) => {
            span.record("decision_id", f.decision_id.as_str());
            Some(f.result)
        }
        None => refuse(&Refusal::internal("the list could not be decided")),
    }
}

/// The JSON-RPC error replacing a list that is refused, logged as a deny: its
/// decision id in `error.data`, like every error a client is told.
fn refused_message(
    services: &Services,
    meta: &DecisionMeta,
    refusal: &Refusal,
    id: Option<&Value>,
) -> Vec<u8> {
    let engine = &services.engine;
    let outcome = refusal.record(engine, &engine.snapshot(), Interface::ExtProc, meta);
    refusal
        .jsonrpc_error(id, services.deny_detail, &outcome.decision_id)
        .to_string()
        .into_bytes()
}
