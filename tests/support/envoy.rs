//! Envoy ext_authz: a `CheckRequest` as Envoy sends it for an HTTP request to an MCP
//! server, and what its answer means.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, attribute_context,
    authorization_client::AuthorizationClient,
};
use tonic::transport::Channel;

/// A `CheckRequest` under construction: by default a `POST /mcp` with no headers, on a
/// route whose `context_extensions` name the `docs` server.
#[derive(Debug, Clone)]
pub struct Check {
    http: attribute_context::HttpRequest,
    principal: Option<String>,
    destination: Option<String>,
    extensions: HashMap<String, String>,
}

/// Envoy's `CheckRequest` for a `POST /mcp` of `body` to the `docs` server.
pub fn post(body: impl Into<Vec<u8>>) -> Check {
    Check {
        http: attribute_context::HttpRequest {
            method: "POST".into(),
            path: "/mcp".into(),
            raw_body: body.into(),
            ..attribute_context::HttpRequest::default()
        },
        principal: None,
        destination: None,
        extensions: [("mcp_server".to_owned(), "docs".to_owned())].into(),
    }
}

impl Check {
    /// Another path.
    pub fn path(mut self, path: &str) -> Check {
        self.http.path = path.into();
        self
    }

    /// A header of the `headers` map (a name given twice keeps the last value).
    pub fn header(mut self, name: &str, value: &str) -> Check {
        self.http.headers.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Headers of the `headers` map.
    pub fn headers(self, headers: &[(&str, &str)]) -> Check {
        headers.iter().fold(self, |c, (k, v)| c.header(k, v))
    }

    /// `authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Check {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// `content-type: application/json`.
    pub fn json(self) -> Check {
        self.header("content-type", "application/json")
    }

    /// `header_map` entries (raw values, as Envoy sends them with `encode_raw_headers`);
    /// none: no `header_map`.
    pub fn header_map(mut self, entries: &[(&str, &str)]) -> Check {
        self.http.header_map = (!entries.is_empty()).then(|| HeaderMap {
            headers: entries
                .iter()
                .map(|(k, v)| HeaderValue {
                    key: (*k).to_owned(),
                    raw_value: v.as_bytes().to_vec(),
                    ..HeaderValue::default()
                })
                .collect(),
        });
        self
    }

    /// The mTLS peer (`source.principal`), a SPIFFE ID Envoy proved.
    pub fn principal(mut self, principal: &str) -> Check {
        self.principal = Some(principal.to_owned());
        self
    }

    /// No `context_extensions`, as Istio's CUSTOM provider and Envoy Gateway send it.
    pub fn no_route_server(mut self) -> Check {
        self.extensions.clear();
        self
    }

    /// The request's `:authority` (`http.host`).
    pub fn host(mut self, host: &str) -> Check {
        self.http.host = host.into();
        self
    }

    /// The destination workload's SPIFFE ID (`destination.principal`).
    pub fn destination(mut self, principal: &str) -> Check {
        self.destination = Some(principal.to_owned());
        self
    }

    pub fn build(self) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: self.principal.map(|principal| attribute_context::Peer {
                    principal,
                    ..attribute_context::Peer::default()
                }),
                destination: self.destination.map(|principal| attribute_context::Peer {
                    principal,
                    ..attribute_context::Peer::default()
                }),
                request: Some(attribute_context::Request {
                    http: Some(self.http),
                    ..attribute_context::Request::default()
                }),
                context_extensions: self.extensions,
                ..AttributeContext::default()
            }),
        }
    }
}

/// The HTTP status Envoy answers with (200 for an allow; 0 when the answer says none) and
/// the denied body.
pub fn status(r: &CheckResponse) -> (u16, String) {
    match &r.http_response {
        Some(HttpResponse::OkResponse(_)) => (200, String::new()),
        Some(HttpResponse::DeniedResponse(d)) => (
            d.status
                .as_ref()
                .map_or(0, |s| u16::try_from(s.code).unwrap_or(0)),
            d.body.clone(),
        ),
        _ => (0, String::new()),
    }
}

/// A client of Envoy's `Authorization` service (what Envoy is to mcp-authz).
pub type Client = AuthorizationClient<Channel>;

/// A client of Envoy's `Authorization` service at `addr` (`127.0.0.1:PORT`).
pub async fn client(addr: &str) -> Client {
    AuthorizationClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}
