//! The gateway's gRPC API (`proto/`): its messages as the gateway writes them, the
//! trusted caller's secret, clients.

use mcp_authz::api::proto::v1::{
    CheckRequest, Identity, McpRequest, VerifiedIdentity, authorizer_client::AuthorizerClient,
    check_request,
};
use prost_types::{Struct, Value as PbValue, value::Kind};
use serde_json::Value;
use tonic::transport::Channel;

use super::reference_arguments;

/// The trusted caller's secret of [`super::config::trusted_caller`].
pub const CALLER_SECRET: &str = "gateway-secret-for-tests-0123456789";

/// `message` as the trusted caller sends it (with [`CALLER_SECRET`]).
pub fn trusted<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert(
        "x-mcp-authz-caller-token",
        CALLER_SECRET.parse().expect("ascii"),
    );
    r
}

/// An identity that is a bearer token.
pub fn bearer(token: impl Into<String>) -> Identity {
    Identity {
        bearer_token: token.into(),
        ..Identity::default()
    }
}

/// An identity the gateway asserts it verified: `user` through `app`, no groups.
pub fn verified(user: &str, app: &str) -> Identity {
    Identity {
        verified: Some(VerifiedIdentity {
            user: user.into(),
            application: app.into(),
            groups: vec![],
        }),
        ..Identity::default()
    }
}

/// The SPIFFE ID of application `app` in trust domain `corp.example`.
pub fn spiffe(app: &str) -> Identity {
    Identity {
        spiffe_id: format!("spiffe://corp.example/ns/apps/sa/{app}"),
        ..Identity::default()
    }
}

/// A check of an MCP request the gateway parsed: `method` on `name` (a tool, prompt or
/// resource URI) of `server`. Without `arguments`, a call of a reference tool or
/// prompt carries the arguments it requires ([`reference_arguments`]).
pub fn parsed(
    identity: Identity,
    server: &str,
    method: &str,
    name: &str,
    arguments: Option<Struct>,
) -> CheckRequest {
    let arguments = arguments.or_else(|| {
        matches!(method, "tools/call" | "prompts/get")
            .then(|| reference_arguments(&format!("{server}/{name}")))
            .flatten()
            .map(|a| pb_struct(&a))
    });
    CheckRequest {
        identity: Some(identity),
        server: server.into(),
        message: Some(check_request::Message::Mcp(McpRequest {
            method: method.into(),
            name: name.into(),
            arguments,
        })),
        ..CheckRequest::default()
    }
}

/// A check of a raw JSON-RPC message (or batch) for `server`.
pub fn jsonrpc(identity: Identity, server: &str, body: impl Into<Vec<u8>>) -> CheckRequest {
    CheckRequest {
        identity: Some(identity),
        server: server.into(),
        message: Some(check_request::Message::Jsonrpc(body.into())),
        ..CheckRequest::default()
    }
}

/// A JSON value as a protobuf `Value`.
pub fn pb(v: &Value) -> PbValue {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(pb).collect(),
        }),
        Value::Object(_) => Kind::StructValue(pb_struct(v)),
    };
    PbValue { kind: Some(kind) }
}

/// A JSON object as a protobuf `Struct` (empty for another value).
pub fn pb_struct(v: &Value) -> Struct {
    Struct {
        fields: v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), pb(v)))
            .collect(),
    }
}

/// A channel to the gRPC listener at `addr` (`127.0.0.1:PORT`).
pub async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// A client of the gateway API at `addr`.
pub async fn client(addr: &str) -> AuthorizerClient<Channel> {
    AuthorizerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}
