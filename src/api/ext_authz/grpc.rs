//! The gRPC mode: `envoy.service.auth.v3.Authorization/Check`, a `CheckRequest` read
//! off the wire ([`super::wire`]) into an [`EnvoyRequest`] and the answer written as a
//! `CheckResponse`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::bytes::Buf as _;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::BoxFuture;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Status};
use tracing::Instrument;

use super::response::CheckAnswer;
use super::wire::{WireCheckRequest, envoy_request};
use super::{EnvoyAnswer, decide, refuse_unreadable};
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

impl ExtAuthzGrpc {
    /// Answer one `Check` (what [`AuthorizationService`] runs for each; callable
    /// without a socket).
    pub async fn check(
        &self,
        request: Request<WireCheckRequest>,
    ) -> Result<tonic::Response<CheckAnswer>, Status> {
        let services = self
            .ready
            .get()
            .ok_or_else(|| Status::from(Refusal::unavailable()))?;
        let mut envoy = match envoy_request(request.get_ref()) {
            Ok(envoy) => envoy,
            Err(e) => {
                let answer = refuse_unreadable(services, &e, Interface::ExtAuthzGrpc);
                return Ok(tonic::Response::new(CheckAnswer(answer)));
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
        Ok(tonic::Response::new(CheckAnswer(answer)))
    }
}

/// The gRPC service `envoy.service.auth.v3.Authorization`, its one method `Check`
/// decoded as [`WireCheckRequest`] (slices of the request's buffer) rather than
/// `envoy_types`' owned `CheckRequest`; the answer a [`CheckAnswer`].
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
    type Response = CheckAnswer;
    type Future = BoxFuture<tonic::Response<CheckAnswer>, Status>;

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

/// `Check`'s codec: the request decoded from one [`Bytes`](prost::bytes::Bytes)
/// holding the whole message, so that each text field is a slice of it; the answer
/// written as a `CheckResponse` straight from its parts ([`CheckAnswer`]).
#[derive(Debug, Clone, Copy)]
struct CheckCodec;

impl Codec for CheckCodec {
    type Encode = CheckAnswer;
    type Decode = WireCheckRequest;
    type Encoder = CheckCodec;
    type Decoder = CheckCodec;

    fn encoder(&mut self) -> Self::Encoder {
        CheckCodec
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

impl Encoder for CheckCodec {
    type Item = CheckAnswer;
    type Error = Status;

    fn encode(&mut self, item: CheckAnswer, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // The buffer grows as it is written: no length computed ahead of the write.
        item.encode(buf);
        Ok(())
    }
}
