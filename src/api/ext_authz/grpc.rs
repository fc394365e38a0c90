//! The gRPC mode: `envoy.service.auth.v3.Authorization/Check`, a `CheckRequest` read
//! into an [`EnvoyRequest`] and the answer written as a `CheckResponse`.

use std::borrow::Cow;

use envoy_types::ext_authz::v3::pb::{
    Authorization, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValueOption,
    HttpResponse, HttpStatus, OkHttpResponse,
};
use envoy_types::pb::envoy::config::core::v3::HeaderValue as EnvoyHeader;
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::google::protobuf::{Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc;
use tonic::{Request, Status};
use tracing::Instrument;

use super::{
    DECISION_ID_HEADER, DECISION_ID_METADATA, EnvoyAnswer, EnvoyRequest, HeaderSource, Headers,
    MCP_FILTER_NAMESPACE, METHOD_METADATA, SERVER_METADATA, decide,
};
use crate::api::mcp_check::{CallerTrust, decision_meta};
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

/// The request Envoy describes in a `CheckRequest`.
pub fn envoy_request(check: &CheckRequest) -> EnvoyRequest<'_> {
    let attrs = check.attributes.as_ref();
    let http = attrs
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref());
    let mut headers = Headers::with_capacity(http.map_or(0, |h| {
        h.headers.len() + h.header_map.as_ref().map_or(0, |m| m.headers.len())
    }));
    if let Some(h) = http {
        for (k, v) in &h.headers {
            headers.add(HeaderSource::Headers, k, Cow::Borrowed(v.as_str()));
        }
    }
    if let Some(map) = http.and_then(|h| h.header_map.as_ref()) {
        for h in &map.headers {
            // Envoy fills `value` or `raw_value`; two different ones are two values.
            let raw = (!h.raw_value.is_empty()).then(|| String::from_utf8_lossy(&h.raw_value));
            match raw {
                Some(raw) if h.value.is_empty() || raw == h.value.as_str() => {
                    headers.add(HeaderSource::HeaderMap, &h.key, raw);
                }
                Some(raw) => {
                    headers.add(HeaderSource::HeaderMap, &h.key, Cow::Borrowed(&h.value));
                    headers.add(HeaderSource::HeaderMap, &h.key, raw);
                }
                None => headers.add(HeaderSource::HeaderMap, &h.key, Cow::Borrowed(&h.value)),
            }
        }
    }
    let body: &[u8] = match http {
        Some(h) if !h.raw_body.is_empty() => &h.raw_body,
        Some(h) => h.body.as_bytes(),
        None => &[],
    };
    let source = attrs.and_then(|a| a.source.as_ref());
    let source_ip = source
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref())
        .and_then(|a| match a {
            Address::SocketAddress(s) => Some(s.address.clone()),
            _ => None,
        });
    let meta = decision_meta(
        headers.get_lenient("traceparent"),
        headers.get_lenient("x-request-id"),
    );
    EnvoyRequest {
        meta,
        method: http.map_or("", |h| h.method.as_str()),
        headers,
        body,
        server: attrs
            .and_then(|a| a.context_extensions.get("mcp_server"))
            .map(String::as_str)
            .filter(|s| !s.is_empty()),
        authority: http.map(|h| h.host.as_str()).filter(|s| !s.is_empty()),
        destination_principal: attrs
            .and_then(|a| a.destination.as_ref())
            .map(|d| d.principal.as_str())
            .filter(|s| !s.is_empty()),
        spiffe_id: source
            .map(|s| s.principal.as_str())
            .filter(|s| !s.is_empty()),
        source_ip,
        mcp_filter_method: attrs
            .and_then(|a| a.metadata_context.as_ref())
            .and_then(|m| m.filter_metadata.get(MCP_FILTER_NAMESPACE))
            .and_then(|m| m.fields.get("method"))
            .and_then(|v| match &v.kind {
                Some(Kind::StringValue(method)) => Some(method.as_str()),
                _ => None,
            }),
        // Envoy made the mTLS handshake: `source.principal` is proven when Envoy is
        // trusted (`admit_envoy_peer`), never asserted by the client.
        asserted_spiffe_id: None,
        // Nor is the destination: a header naming one is never read in this mode.
        asserted_destination_principal: None,
        caller: None,
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

#[tonic::async_trait]
impl Authorization for ExtAuthzGrpc {
    async fn check(
        &self,
        request: Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, Status> {
        let services = self
            .ready
            .get()
            .ok_or_else(|| Status::from(Refusal::unavailable()))?;
        let mut envoy = envoy_request(request.get_ref());
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
