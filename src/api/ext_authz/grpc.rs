//! The gRPC mode: `envoy.service.auth.v3.Authorization/Check`, a `CheckRequest` read
//! off the wire ([`super::wire`]) into an [`EnvoyRequest`] and the answer written as a
//! `CheckResponse`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::ext_authz::v3::pb::{
    CheckResponse, DeniedHttpResponse, HeaderValueOption, HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use prost::Message as _;
use prost::bytes::Buf as _;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::codegen::BoxFuture;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Status};
use tonic_prost::ProstEncoder;
use tracing::Instrument;

use super::wire::{WireCheckRequest, envoy_request};
use super::{
    DECISION_ID_HEADER, DECISION_ID_METADATA, EnvoyAnswer, METHOD_METADATA, SERVER_METADATA,
    decide, refuse_unreadable,
};
use crate::api::mcp_check::CallerTrust;
use crate::api::refusal::Refusal;
use crate::api::services::Ready;
use crate::authz::Interface;

/// The `envoy.service.auth.v3.Authorization` service.
#[derive(Debug, Clone)]
pub struct ExtAuthzGrpc {
    ready: Ready,
}

impl ExtAuthzGrpc {
    /// The service, answering once `ready` is.
    pub fn new(ready: Ready) -> Self {
        Self { ready }
    }
}

fn header(name: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.to_owned(),
            value: value.to_owned(),
            ..EnvoyHeader::default()
        }),
        append_action: action as i32,
        ..HeaderValueOption::default()
    }
}

fn string_value(s: String) -> PbValue {
    PbValue {
        kind: Some(Kind::StringValue(s)),
    }
}

/// The `CheckResponse` for an answer.
pub fn check_response(answer: EnvoyAnswer) -> CheckResponse {
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
            let metadata = Struct { fields };
            CheckResponse {
                status: Some(rpc::Status {
                    code: tonic::Code::Ok as i32,
                    ..rpc::Status::default()
                }),
                dynamic_metadata: Some(metadata),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: set_headers
                        .iter()
                        .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd))
                        .collect(),
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
            let code = match status {
                401 => tonic::Code::Unauthenticated,
                400 => tonic::Code::InvalidArgument,
                _ => tonic::Code::PermissionDenied,
            };
            let mut hs = vec![
                header(
                    "content-type",
                    "application/json",
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
                header(
                    DECISION_ID_HEADER,
                    &decision_id,
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
            ];
            hs.extend(
                headers
                    .iter()
                    .map(|(k, v)| header(k, v, HeaderAppendAction::OverwriteIfExistsOrAdd)),
            );
            let metadata = Struct {
                fields: [("decision_id".to_owned(), string_value(decision_id))]
                    .into_iter()
                    .collect(),
            };
            CheckResponse {
                status: Some(rpc::Status {
                    code: code as i32,
                    ..rpc::Status::default()
                }),
                dynamic_metadata: Some(metadata),
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

impl ExtAuthzGrpc {
    /// Answer one `Check` (what [`AuthorizationService`] runs for each; callable
    /// without a socket).
    pub async fn check(
        &self,
        request: Request<WireCheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, Status> {
        let services = self
            .ready
            .get()
            .ok_or_else(|| Status::from(Refusal::unavailable()))?;
        let mut envoy = match envoy_request(request.get_ref()) {
            Ok(envoy) => envoy,
            Err(e) => {
                let answer = refuse_unreadable(services, &e, Interface::ExtAuthzGrpc);
                return Ok(tonic::Response::new(check_response(answer)));
            }
        };
        envoy.caller = Some(CallerTrust::of_grpc(services, &request));
        let span = crate::api::grpc::request_span(
            "envoy.service.auth.v3.Authorization/Check",
            &envoy.meta,
        );
        let answer = decide(services, envoy, Interface::ExtAuthzGrpc)
            .instrument(span.clone())
            .await;
        let (EnvoyAnswer::Allow { decision_id, .. } | EnvoyAnswer::Deny { decision_id, .. }) =
            &answer;
        span.record("decision_id", decision_id.as_str());
        Ok(tonic::Response::new(check_response(answer)))
    }
}

/// The gRPC service `envoy.service.auth.v3.Authorization`, its one method `Check`
/// decoded as [`WireCheckRequest`] (slices of the request's buffer) rather than
/// `envoy_types`' owned `CheckRequest`; the answer is `envoy_types`' `CheckResponse`.
#[derive(Debug, Clone)]
pub struct AuthorizationService {
    inner: Arc<ExtAuthzGrpc>,
}

impl AuthorizationService {
    /// The service, answering once `ready` is.
    pub fn new(ready: Ready) -> Self {
        Self {
            inner: Arc::new(ExtAuthzGrpc::new(ready)),
        }
    }
}

impl NamedService for AuthorizationService {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

/// `Check` as tonic's unary method.
struct CheckMethod(Arc<ExtAuthzGrpc>);

impl UnaryService<WireCheckRequest> for CheckMethod {
    type Response = CheckResponse;
    type Future = BoxFuture<tonic::Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<WireCheckRequest>) -> Self::Future {
        let inner = Arc::clone(&self.0);
        Box::pin(async move { inner.check(request).await })
    }
}

impl<B> tower::Service<http::Request<B>> for AuthorizationService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != "/envoy.service.auth.v3.Authorization/Check" {
            let method = request.uri().path().to_owned();
            return Box::pin(async move {
                Ok(Status::unimplemented(format!("no method {method}")).into_http())
            });
        }
        let method = CheckMethod(Arc::clone(&self.inner));
        Box::pin(async move { Ok(Grpc::new(CheckCodec).unary(method, request).await) })
    }
}

/// `Check`'s codec: prost's encoder for the `CheckResponse`; the request decoded from
/// one [`Bytes`](prost::bytes::Bytes) holding the whole message, so that each text
/// field is a slice of it.
#[derive(Debug, Clone, Copy)]
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckResponse;
    type Decode = WireCheckRequest;
    type Encoder = ProstEncoder<CheckResponse>;
    type Decoder = CheckCodec;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        CheckCodec
    }
}

impl Decoder for CheckCodec {
    type Item = WireCheckRequest;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<WireCheckRequest>, Status> {
        let message = buf.copy_to_bytes(buf.remaining());
        // A message that is not protobuf is an internal error, as tonic's prost codec
        // answers it.
        WireCheckRequest::decode(message)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}
