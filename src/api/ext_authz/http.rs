//! The HTTP mode (Envoy's `http_service`): the check request Envoy sends under
//! `/ext_authz`, answered with a status, headers and, for a deny, a body.

use axum::body::Bytes;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{
    APPLICATION_HEADER, DECISION_ID_HEADER, DESTINATION_PRINCIPAL_HEADER, EnvoyAnswer,
    EnvoyRequest, HeaderSource, Headers, SERVER_HEADER, SPIFFE_ID_HEADER, USER_HEADER, decide,
    deny_headers,
};
use crate::api::mcp_check::{CALLER_TOKEN_HEADER, CallerTrust, decision_meta};
use crate::api::refusal::Refusal;
use crate::api::services::Ready;
use crate::api::tls::PeerIdentity;
use crate::authz::Interface;

/// The routes of the HTTP mode: every method and path under `/ext_authz`, without the
/// request layer: the listener serves them through [`crate::api::http::main_router`], which
/// puts them under it with the other routes.
pub fn http_router(ready: Ready) -> axum::Router {
    axum::Router::new()
        .route("/ext_authz", axum::routing::any(http_check))
        .route("/ext_authz/{*path}", axum::routing::any(http_check))
        .with_state(ready)
}

async fn http_check(
    State(ready): State<Ready>,
    method: Method,
    headers: HeaderMap,
    peer: Option<Extension<Arc<PeerIdentity>>>,
    body: Bytes,
) -> Response {
    let Some(services) = ready.get() else {
        return Refusal::unavailable().into_response();
    };
    let mut map = Headers::new();
    for (k, v) in &headers {
        map.add(
            HeaderSource::Http,
            k.as_str(),
            String::from_utf8_lossy(v.as_bytes()),
        );
    }
    // A repeated header is refused by the header rule in `decide`; it is never
    // read here as one of its values.
    let server = map.get(SERVER_HEADER).ok().flatten().map(str::to_owned);
    let spiffe_id = map.get(SPIFFE_ID_HEADER).ok().flatten().map(str::to_owned);
    let destination = map
        .get(DESTINATION_PRINCIPAL_HEADER)
        .ok()
        .flatten()
        .map(str::to_owned);
    let meta = decision_meta(
        map.get_lenient("traceparent"),
        map.get_lenient("x-request-id"),
    );
    let request = EnvoyRequest {
        meta,
        method: method.as_str(),
        headers: map,
        body: &body,
        server: server.as_deref().filter(|s| !s.is_empty()),
        asserted_spiffe_id: spiffe_id.as_deref(),
        asserted_destination_principal: destination.as_deref(),
        caller: Some(CallerTrust::of(
            services,
            headers.get(CALLER_TOKEN_HEADER).map(HeaderValue::as_bytes),
            peer.as_ref().map(|Extension(p)| p.as_ref()),
        )),
        ..EnvoyRequest::default()
    };
    let answer = decide(services, request, Interface::ExtAuthzHttp).await;
    let (EnvoyAnswer::Allow { decision_id, .. } | EnvoyAnswer::Deny { decision_id, .. }) = &answer;
    tracing::Span::current().record("decision_id", decision_id.as_str());
    http_response(answer)
}

fn http_response(answer: EnvoyAnswer) -> Response {
    let mut out = HeaderMap::new();
    let put = |out: &mut HeaderMap, k: &str, v: &str| {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            out.insert(k, v);
        }
    };
    match answer {
        EnvoyAnswer::Allow {
            decision_id,
            set_headers,
            ..
        } => {
            put(&mut out, DECISION_ID_HEADER, &decision_id);
            for (k, v) in &set_headers {
                put(&mut out, k, v);
            }
            // Headers with no verified value are sent empty so that Envoy overwrites
            // whatever a client put there.
            for name in [USER_HEADER, APPLICATION_HEADER] {
                if !out.contains_key(name) {
                    put(&mut out, name, "");
                }
            }
            (StatusCode::OK, out).into_response()
        }
        EnvoyAnswer::Deny {
            decision_id,
            status,
            headers,
            body,
            ..
        } => {
            for (k, v) in deny_headers(&decision_id, &headers) {
                put(&mut out, k, v);
            }
            // A 2xx is an allow in this mode: a deny answered as if the tool did
            // not exist (200 through the gRPC mode, as an MCP server answers) is
            // sent as 400, the status of JSON-RPC invalid params.
            let status = match StatusCode::from_u16(status) {
                Ok(s) if s.is_success() => StatusCode::BAD_REQUEST,
                Ok(s) => s,
                Err(_) => StatusCode::FORBIDDEN,
            };
            (status, out, body).into_response()
        }
    }
}
