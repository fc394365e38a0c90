//! What each PDP is asked, on the wire, and how its answer is read.
//!
//! Every request is encoded once per workload case, with the nonce placeholder in
//! it ([`crate::workload::NONCE_MARK`]); the driver copies the bytes and writes the
//! nonce in. Answers are read into allow / deny; anything else is an error.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{CheckRequest as EnvoyCheck, CheckResponse as EnvoyAnswer};
use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{Metadata, SocketAddress};
use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::google::protobuf as envoy_pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mcp_authz::api::proto::v1 as gw;
use prost::Message;
use serde_json::{Value, json};

use crate::cerbos::CerbosCodec;
use crate::workload::{Case, NONCE_MARK};

/// The PDP interfaces the benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// mcp-authz: Envoy ext_authz `Check` over gRPC, with a bearer token.
    ExtAuthz,
    /// mcp-authz: the gateway API `mcp_authz.v1.Authorizer/Check` over gRPC, with the
    /// gateway's verified identity (trusted caller).
    Gateway,
    /// mcp-authz: AuthZEN `POST /access/v1/evaluation` over HTTP/1.1.
    Authzen,
    /// Cerbos `CerbosService/CheckResources` over gRPC.
    CerbosGrpc,
    /// Cerbos `POST /api/check/resources` over HTTP/1.1.
    CerbosHttp,
    /// cedar-agent `POST /v1/is_authorized` over HTTP/1.1.
    CedarAgent,
    /// The transport floor: gRPC health `Check` on a tonic server that has no other
    /// handler (`load floor`), loaded as ext_authz is. Every answer is `SERVING`.
    Health,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::ExtAuthz => "mcp-authz ext_authz gRPC",
            Target::Gateway => "mcp-authz gateway gRPC",
            Target::Authzen => "mcp-authz AuthZEN HTTP",
            Target::CerbosGrpc => "Cerbos CheckResources gRPC",
            Target::CerbosHttp => "Cerbos CheckResources HTTP",
            Target::CedarAgent => "cedar-agent is_authorized HTTP",
            Target::Health => "transport floor: gRPC health Check",
        })
    }
}

impl Target {
    /// Whether it speaks gRPC (else HTTP/1.1 JSON).
    pub fn is_grpc(self) -> bool {
        matches!(
            self,
            Target::ExtAuthz | Target::Gateway | Target::CerbosGrpc | Target::Health
        )
    }

    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Target::ExtAuthz => "/envoy.service.auth.v3.Authorization/Check",
            Target::Gateway => "/mcp_authz.v1.Authorizer/Check",
            Target::CerbosGrpc => "/cerbos.svc.v1.CerbosService/CheckResources",
            Target::Authzen => "/access/v1/evaluation",
            Target::CerbosHttp => "/api/check/resources",
            Target::CedarAgent => "/v1/is_authorized",
            Target::Health => "/grpc.health.v1.Health/Check",
        }
    }
}

/// The issuer of the bench tokens.
pub const ISSUER: &str = "https://idp.bench.example";
/// Their audience.
pub const AUDIENCE: &str = "mcp-mesh";
/// Key id of the bench signing key.
pub const KID: &str = "bench-ed1";
/// The test-only signing key (also used by the identity tests).
pub fn signing_key_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/identity/ed1.pem")
}

/// Signs bench tokens: one per user, the user's group in `groups`, the user's
/// application in `azp`; valid for a day.
pub struct TokenSigner {
    key: EncodingKey,
    iat: u64,
}

impl TokenSigner {
    /// Load the test key.
    pub fn new() -> Result<Self, String> {
        let path = signing_key_path();
        let pem = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = EncodingKey::from_ed_pem(&pem).map_err(|e| e.to_string())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        // Issued at the start of the hour: runs within the same hour send the same
        // tokens, so a server's token cache primed by one run serves the next
        // (`bench/instructions.sh` primes, then counts).
        let iat = now - now % 3600;
        Ok(Self { key, iat })
    }

    /// The token of user `user`.
    pub fn token(&self, user: u32) -> Result<String, String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(KID.into());
        let claims = json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": format!("user-{user}"),
            "azp": crate::workload::app_of(user),
            "groups": [crate::workload::group_of(user)],
            "scope": "mcp:tools",
            "iat": self.iat,
            "exp": self.iat + 86_400,
        });
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| e.to_string())
    }
}

/// Turns cases into request bodies for one target, and answers into decisions.
pub struct Codec {
    target: Target,
    /// Bearer token of each user (ext_authz).
    tokens: HashMap<u32, String>,
    signer: Option<TokenSigner>,
    cerbos: Option<CerbosCodec>,
}

/// A gRPC message with its 5-byte frame header.
pub fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 5);
    out.push(0);
    let len = u32::try_from(message.len()).expect("message under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Bytes::from(out)
}

/// The JSON-RPC body of a `tools/call` of `case` (with `nonce`, or the placeholder).
pub fn jsonrpc_body(case: &Case, nonce: Option<&str>) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": { "name": case.tool_name(), "arguments": case.arguments(nonce) },
    })
    .to_string()
}

impl Codec {
    /// A codec for `target`; Cerbos gRPC needs the descriptors from the server.
    pub fn new(target: Target, cerbos: Option<CerbosCodec>) -> Result<Self, String> {
        let signer = match target {
            Target::ExtAuthz => Some(TokenSigner::new()?),
            _ => None,
        };
        if target == Target::CerbosGrpc && cerbos.is_none() {
            return Err("Cerbos gRPC needs its descriptors".into());
        }
        Ok(Self {
            target,
            tokens: HashMap::new(),
            signer,
            cerbos,
        })
    }

    fn token(&mut self, user: u32) -> Result<String, String> {
        if let Some(t) = self.tokens.get(&user) {
            return Ok(t.clone());
        }
        let signer = self.signer.as_ref().ok_or("no token signer")?;
        let t = signer.token(user)?;
        self.tokens.insert(user, t.clone());
        Ok(t)
    }

    /// The request body for `case`: a framed gRPC message or a JSON document.
    pub fn encode(&mut self, case: &Case, nonce: Option<&str>) -> Result<Bytes, String> {
        Ok(match self.target {
            Target::ExtAuthz => {
                let token = self.token(case.user)?;
                grpc_frame(&envoy_check(case, &token, nonce).encode_to_vec())
            }
            Target::Gateway => grpc_frame(&gateway_check(case, nonce).encode_to_vec()),
            Target::CerbosGrpc => {
                let body = cerbos_json(case, nonce);
                let cerbos = self.cerbos.as_ref().ok_or("no Cerbos descriptors")?;
                grpc_frame(&cerbos.encode_request(&body)?)
            }
            Target::Authzen => Bytes::from(authzen_json(case, nonce).to_string()),
            Target::CerbosHttp => Bytes::from(cerbos_json(case, nonce).to_string()),
            Target::CedarAgent => Bytes::from(cedar_agent_json(case, nonce).to_string()),
            // The server as a whole (`service: ""`): an empty message.
            Target::Health => grpc_frame(
                &tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                }
                .encode_to_vec(),
            ),
        })
    }

    /// The decision in a response body (gRPC: the message without its frame).
    pub fn decision(&self, body: &[u8]) -> Result<bool, String> {
        match self.target {
            Target::ExtAuthz => {
                let answer = EnvoyAnswer::decode(body).map_err(|e| e.to_string())?;
                match answer.status.map(|s| s.code) {
                    Some(0) => Ok(true),
                    Some(7) => Ok(false),
                    other => Err(format!("ext_authz status {other:?}")),
                }
            }
            Target::Gateway => {
                let answer = gw::CheckResponse::decode(body).map_err(|e| e.to_string())?;
                if answer.allowed {
                    Ok(true)
                } else if answer.deny_kind == gw::DenyKind::Forbidden as i32 {
                    Ok(false)
                } else {
                    Err(format!("not a policy decision: {}", answer.reason))
                }
            }
            Target::CerbosGrpc => {
                let cerbos = self.cerbos.as_ref().ok_or("no Cerbos descriptors")?;
                effect(&cerbos.decode_response(body)?)
            }
            Target::Authzen => match body {
                b"{\"decision\":true}" => Ok(true),
                b"{\"decision\":false}" => Ok(false),
                other => Err(format!(
                    "unexpected AuthZEN answer {}",
                    String::from_utf8_lossy(other)
                )),
            },
            Target::CerbosHttp => effect(&String::from_utf8_lossy(body)),
            Target::Health => {
                let answer = tonic_health::pb::HealthCheckResponse::decode(body)
                    .map_err(|e| e.to_string())?;
                if answer.status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
                {
                    Ok(true)
                } else {
                    Err(format!("health status {}", answer.status))
                }
            }
            Target::CedarAgent => {
                let text = String::from_utf8_lossy(body);
                if text.contains("\"decision\":\"Allow\"") {
                    Ok(true)
                } else if text.contains("\"decision\":\"Deny\"") {
                    Ok(false)
                } else {
                    Err(format!("unexpected cedar-agent answer {text}"))
                }
            }
        }
    }
}

fn effect(text: &str) -> Result<bool, String> {
    if text.contains("EFFECT_ALLOW") {
        Ok(true)
    } else if text.contains("EFFECT_DENY") {
        Ok(false)
    } else {
        Err(format!("unexpected Cerbos answer {text}"))
    }
}

fn envoy_struct(v: &Value) -> envoy_pb::Struct {
    let Value::Object(m) = v else {
        return envoy_pb::Struct::default();
    };
    envoy_pb::Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), envoy_value(v))).collect(),
    }
}

fn envoy_value(v: &Value) -> envoy_pb::Value {
    use envoy_pb::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(envoy_pb::ListValue {
            values: a.iter().map(envoy_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(envoy_struct(v)),
    };
    envoy_pb::Value { kind: Some(kind) }
}

fn prost_struct(v: &Value) -> prost_types::Struct {
    let Value::Object(m) = v else {
        return prost_types::Struct::default();
    };
    prost_types::Struct {
        fields: m.iter().map(|(k, v)| (k.clone(), prost_value(v))).collect(),
    }
}

fn prost_value(v: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(prost_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(prost_struct(v)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn socket(address: &str, port: u32) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(Address::SocketAddress(SocketAddress {
            address: address.into(),
            port_specifier: Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    port,
                ),
            ),
            ..SocketAddress::default()
        })),
    }
}

/// The `CheckRequest` Envoy 1.40 sends for a `tools/call` POST with the MCP filter
/// and `with_request_body { pack_as_bytes: true }` (see examples/envoy).
pub fn envoy_check(case: &Case, token: &str, nonce: Option<&str>) -> EnvoyCheck {
    let body = jsonrpc_body(case, nonce);
    let path = format!("/{}/mcp", case.server());
    let length = body.len().to_string();
    let bearer = format!("Bearer {token}");
    let headers: HashMap<String, String> = [
        (":authority", "127.0.0.1:10000"),
        (":path", path.as_str()),
        (":method", "POST"),
        (":scheme", "http"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2025-11-25"),
        ("mcp-session-id", "5f0c3a1e9b7d4c2a8e6f1b3d5a7c9e0f"),
        ("authorization", bearer.as_str()),
        ("content-length", length.as_str()),
        ("user-agent", "python-httpx/0.28.1"),
        ("x-forwarded-proto", "http"),
        ("x-request-id", "0d5f1c9e-7a3b-4e8d-9c2f-6b1a4e7d3c5f"),
        ("x-envoy-auth-partial-body", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mcp_metadata = json!({
        "method": "tools/call",
        "id": 7,
        "jsonrpc": "2.0",
        "is_mcp_request": true,
        "status": "mcp_ok",
        "params": { "name": case.tool_name() },
    });
    EnvoyCheck {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(socket("127.0.0.1", 53_214)),
                ..Peer::default()
            }),
            destination: Some(Peer {
                address: Some(socket("127.0.0.1", 10_000)),
                ..Peer::default()
            }),
            request: Some(Request {
                time: Some(envoy_pb::Timestamp {
                    seconds: 1_780_000_000,
                    nanos: 0,
                }),
                http: Some(HttpRequest {
                    id: "1469785263812743211".into(),
                    method: "POST".into(),
                    headers,
                    path,
                    host: "127.0.0.1:10000".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    size: i64::try_from(body.len()).unwrap_or_default(),
                    raw_body: body.into_bytes(),
                    ..HttpRequest::default()
                }),
            }),
            context_extensions: [("mcp_server".to_owned(), case.server().to_owned())]
                .into_iter()
                .collect(),
            metadata_context: Some(Metadata {
                filter_metadata: [(
                    "envoy.filters.http.mcp".to_owned(),
                    envoy_struct(&mcp_metadata),
                )]
                .into_iter()
                .collect(),
                ..Metadata::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// The gateway's `Check`: an MCP request it has parsed, for an identity it has
/// verified (sent with the trusted caller secret).
pub fn gateway_check(case: &Case, nonce: Option<&str>) -> gw::CheckRequest {
    gw::CheckRequest {
        identity: Some(gw::Identity {
            verified: Some(gw::VerifiedIdentity {
                user: case.user_id(),
                application: case.app().into(),
                groups: vec![case.group().into()],
            }),
            ..gw::Identity::default()
        }),
        server: case.server().into(),
        message: Some(gw::check_request::Message::Mcp(gw::McpRequest {
            method: "tools/call".into(),
            name: case.tool_name().into(),
            arguments: Some(prost_struct(&case.arguments(nonce))),
        })),
        ..gw::CheckRequest::default()
    }
}

/// AuthZEN: the user as subject, the application as `context.agent` (the MCP
/// binding), the tool as resource; groups come from the entity data.
pub fn authzen_json(case: &Case, nonce: Option<&str>) -> Value {
    json!({
        "subject": { "type": "user", "id": case.user_id() },
        "action": { "name": "tools/call" },
        "resource": { "type": "tool", "id": case.tool_id() },
        "context": { "agent": case.app(), "arguments": case.arguments(nonce) },
    })
}

/// Cerbos: the user as principal with the group as role and the application as an
/// attribute; the tool as a `mcp_tool` resource with its server, name and arguments.
pub fn cerbos_json(case: &Case, nonce: Option<&str>) -> Value {
    json!({
        "requestId": "bench",
        "principal": {
            "id": case.user_id(),
            "roles": [case.group()],
            "attr": { "app": case.app() },
        },
        "resources": [{
            "actions": ["tools/call"],
            "resource": {
                "kind": "mcp_tool",
                "id": case.tool_id(),
                "attr": {
                    "server": case.server(),
                    "tool": case.tool_name(),
                    "args": case.arguments(nonce),
                },
            },
        }],
    })
}

/// cedar-agent: the user as principal, the application in the context (its policies
/// fold the application's grant into conditions: one evaluation per decision).
pub fn cedar_agent_json(case: &Case, nonce: Option<&str>) -> Value {
    json!({
        "principal": format!("Mcp::User::\"{}\"", case.user_id()),
        "action": "Mcp::Action::\"tools/call\"",
        "resource": format!("Mcp::Tool::\"{}\"", case.tool_id()),
        "context": {
            "application": { "__entity": { "type": "Mcp::Application", "id": case.app() } },
            "arguments": case.arguments(nonce),
        },
    })
}

/// Where the nonce placeholder sits in `bytes`: exactly once, or an error.
pub fn nonce_offset(bytes: &[u8]) -> Result<usize, String> {
    let mark = NONCE_MARK.as_bytes();
    let mut found = bytes
        .windows(mark.len())
        .enumerate()
        .filter(|(_, w)| *w == mark)
        .map(|(i, _)| i);
    match (found.next(), found.next()) {
        (Some(i), None) => Ok(i),
        (None, _) => Err("the nonce placeholder is missing".into()),
        (Some(_), Some(_)) => Err("the nonce placeholder appears twice".into()),
    }
}
