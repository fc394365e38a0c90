//! The transport floors (`load floor`): tonic servers that do nothing but answer, loaded
//! as mcp-authz is, so that a run's throughput can be read as a share of what the
//! transport alone allows on the same machine in the same minutes.
//!
//! - `health`: gRPC health `Check` (always `SERVING`). Its request is empty: the floor
//!   of a gRPC call.
//! - `ext-authz`: `envoy.service.auth.v3.Authorization/Check` that reads nothing of the
//!   `CheckRequest` (its bytes are skipped, not decoded) and answers one allow encoded
//!   once: the floor of carrying the same `CheckRequest` and answer as ext_authz does,
//!   which any ext_authz server pays before it reads a field.
//!
//! Both run on a runtime laid out as mcp-authz's (multi-threaded, one worker per core)
//! with `TCP_NODELAY`, as mcp-authz sets it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::{Buf as _, BufMut as _, Bytes};
use envoy_types::ext_authz::v3::CheckResponseExt as _;
use envoy_types::ext_authz::v3::pb::{CheckResponse, OkHttpResponse};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{BoxFuture, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

/// Which floor `load floor` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorService {
    /// gRPC health `Check`: load with `run --target health`.
    Health,
    /// ext_authz `Check` that reads nothing and allows: load with `run --target
    /// ext-authz --no-probe` (its allow is the repeated request's expected answer).
    ExtAuthz,
}

/// Serve `service` on `addr` until stopped (Ctrl-C, or the process killed).
pub fn serve(addr: SocketAddr, service: FloorService) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
        let stopped = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let served = match service {
            FloorService::Health => {
                let (reporter, health) = tonic_health::server::health_reporter();
                reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
                eprintln!("floor: gRPC health on {addr}");
                builder
                    .add_service(health)
                    .serve_with_shutdown(addr, stopped)
                    .await
            }
            FloorService::ExtAuthz => {
                eprintln!("floor: ext_authz Check (reads nothing, allows) on {addr}");
                builder
                    .add_service(ExtAuthzFloor::new())
                    .serve_with_shutdown(addr, stopped)
                    .await
            }
        };
        served.map_err(|e| format!("{addr}: {e}"))
    })
}

/// `envoy.service.auth.v3.Authorization` whose `Check` skips the request's bytes and
/// answers `answer`, an allow encoded once.
#[derive(Debug, Clone)]
struct ExtAuthzFloor {
    answer: Bytes,
}

impl ExtAuthzFloor {
    fn new() -> Self {
        let mut allow = CheckResponse::with_status(Status::ok(""));
        allow.set_http_response(OkHttpResponse::default());
        Self {
            answer: Bytes::from(allow.encode_to_vec()),
        }
    }
}

impl NamedService for ExtAuthzFloor {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

impl<B> tower::Service<http::Request<B>> for ExtAuthzFloor
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
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
        let codec = Fixed(self.answer.clone());
        Box::pin(async move { Ok(Grpc::new(codec).unary(Answer, request).await) })
    }
}

/// The unary call: nothing in, nothing to decide.
struct Answer;

impl UnaryService<()> for Answer {
    type Response = ();
    type Future = std::future::Ready<Result<Response<()>, Status>>;

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

/// The codec: a request's bytes skipped, the answer written as the bytes it holds.
#[derive(Debug, Clone)]
struct Fixed(Bytes);

impl Codec for Fixed {
    type Encode = ();
    type Decode = ();
    type Encoder = Fixed;
    type Decoder = Fixed;

    fn encoder(&mut self) -> Fixed {
        self.clone()
    }

    fn decoder(&mut self) -> Fixed {
        self.clone()
    }
}

impl Decoder for Fixed {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        buf.advance(buf.remaining());
        Ok(Some(()))
    }
}

impl Encoder for Fixed {
    type Item = ();
    type Error = Status;

    fn encode(&mut self, (): (), buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&self.0);
        Ok(())
    }
}
