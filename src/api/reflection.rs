//! gRPC server reflection, in both versions of the protocol: `grpc.reflection.v1` and
//! the older `grpc.reflection.v1alpha` that grpcurl 1.8 and many other tools still speak
//! (without it they report "server does not support the reflection API").
//!
//! Both list and describe every service of the gRPC listener: our API
//! (`mcp_authz.v1.Authorizer`), Envoy's `envoy.service.auth.v3.Authorization`, health
//! (`grpc.health.v1.Health`) and reflection itself. Envoy's descriptors are compiled by
//! `build.rs` from `proto/third_party` (the files `envoy-types` ships; the crate itself
//! ships no descriptor set).

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

use super::proto;

/// Envoy's ext_authz service and its imports, as a file descriptor set.
pub const ENVOY_FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("envoy_ext_authz_descriptor");

/// The descriptor sets of every service of the gRPC listener.
fn builder() -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(ENVOY_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// The reflection services, `v1` and `v1alpha`, answering alike.
pub fn services() -> Result<
    (
        v1::ServerReflectionServer<impl v1::ServerReflection>,
        v1alpha::ServerReflectionServer<impl v1alpha::ServerReflection>,
    ),
    Error,
> {
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::{
        Address, HeaderMap, HeaderValue, HeaderValueOption, Metadata, SocketAddress,
        address::Address as AddressKind, socket_address::PortSpecifier,
    };
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request, TlsSession,
    };
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::{
        AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
    };
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::google::protobuf::{Struct, Timestamp, Value, value::Kind};
    use envoy_types::pb::google::rpc::Status;
    use prost::Message;
    use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value as Dyn};

    use super::ENVOY_FILE_DESCRIPTOR_SET;

    /// The unknown fields of `m` and of every message in it, by path.
    fn unknown_fields(m: &DynamicMessage, path: &str, out: &mut Vec<String>) {
        for f in m.unknown_fields() {
            out.push(format!("{path}.#{}", f.number()));
        }
        for (field, value) in m.fields() {
            let path = format!("{path}.{}", field.name());
            let mut visit = |v: &Dyn| {
                if let Dyn::Message(inner) = v {
                    unknown_fields(inner, &path, out);
                }
            };
            match value {
                Dyn::List(items) => items.iter().for_each(&mut visit),
                Dyn::Map(map) => map.values().for_each(&mut visit),
                v => visit(v),
            }
        }
    }

    fn peer(principal: &str) -> Peer {
        Peer {
            address: Some(Address {
                address: Some(AddressKind::SocketAddress(SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(PortSpecifier::PortValue(8443)),
                    ..SocketAddress::default()
                })),
            }),
            service: "svc".into(),
            labels: HashMap::from([("app".into(), "docs".into())]),
            principal: principal.into(),
            certificate: "cert".into(),
        }
    }

    fn metadata() -> Metadata {
        let value = Value {
            kind: Some(Kind::StringValue("tools/call".into())),
        };
        Metadata {
            filter_metadata: HashMap::from([(
                "envoy.filters.http.mcp".into(),
                Struct {
                    fields: [("method".to_owned(), value)].into(),
                },
            )]),
            ..Metadata::default()
        }
    }

    /// The descriptors served for Envoy's service are those of the types `envoy-types`
    /// sends and receives: a request and a response with every field this service
    /// reads or writes decode with them without an unknown field.
    #[test]
    fn envoy_descriptors_match_the_envoy_types() {
        let pool = DescriptorPool::decode(ENVOY_FILE_DESCRIPTOR_SET).expect("descriptor set");
        let service = pool
            .get_service_by_name("envoy.service.auth.v3.Authorization")
            .expect("the Authorization service");
        let check = service
            .methods()
            .find(|m| m.name() == "Check")
            .expect("Check");
        assert_eq!(
            check.input().full_name(),
            "envoy.service.auth.v3.CheckRequest"
        );

        let header = |k: &str, v: &str| HeaderValue {
            key: k.into(),
            value: v.into(),
            raw_value: v.as_bytes().to_vec(),
        };
        let request = CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(peer("spiffe://corp.example/ns/a/sa/corpassist")),
                destination: Some(peer("spiffe://corp.example/ns/a/sa/docs")),
                request: Some(Request {
                    time: Some(Timestamp {
                        seconds: 1,
                        nanos: 2,
                    }),
                    http: Some(HttpRequest {
                        id: "1".into(),
                        method: "POST".into(),
                        headers: HashMap::from([("x-request-id".into(), "r".into())]),
                        header_map: Some(HeaderMap {
                            headers: vec![header("mcp-method", "tools/call")],
                        }),
                        path: "/mcp".into(),
                        host: "docs".into(),
                        scheme: "https".into(),
                        query: "q".into(),
                        fragment: "f".into(),
                        size: 10,
                        protocol: "HTTP/1.1".into(),
                        body: "{}".into(),
                        raw_body: b"{}".to_vec(),
                    }),
                }),
                context_extensions: HashMap::from([("mcp_server".into(), "docs".into())]),
                metadata_context: Some(metadata()),
                route_metadata_context: Some(metadata()),
                tls_session: Some(TlsSession { sni: "docs".into() }),
            }),
        };
        let response = CheckResponse {
            status: Some(Status {
                code: 7,
                message: "denied".into(),
                details: Vec::new(),
            }),
            dynamic_metadata: Some(Struct {
                fields: [(
                    "decision_id".to_owned(),
                    Value {
                        kind: Some(Kind::StringValue("d".into())),
                    },
                )]
                .into(),
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 403 }),
                headers: vec![HeaderValueOption {
                    header: Some(header("content-type", "application/json")),
                    ..HeaderValueOption::default()
                }],
                body: "{}".into(),
            })),
        };
        let ok = CheckResponse {
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![HeaderValueOption {
                    header: Some(header("x-mcp-authz-user", "alice")),
                    ..HeaderValueOption::default()
                }],
                headers_to_remove: vec!["x-drop".into()],
                ..OkHttpResponse::default()
            })),
            ..CheckResponse::default()
        };
        let messages: [(&str, Vec<u8>); 3] = [
            (
                "envoy.service.auth.v3.CheckRequest",
                request.encode_to_vec(),
            ),
            (
                "envoy.service.auth.v3.CheckResponse",
                response.encode_to_vec(),
            ),
            ("envoy.service.auth.v3.CheckResponse", ok.encode_to_vec()),
        ];
        for (name, bytes) in messages {
            let desc = pool.get_message_by_name(name).expect(name);
            let decoded = DynamicMessage::decode(desc, bytes.as_slice()).expect("decodes");
            let mut unknown = Vec::new();
            unknown_fields(&decoded, name, &mut unknown);
            assert!(unknown.is_empty(), "not in the descriptors: {unknown:?}");
            assert_eq!(decoded.descriptor().full_name(), name);
            // Every field that was set is there, under the same number.
            assert_eq!(decoded.encode_to_vec().len(), bytes.len(), "{name}");
        }
    }
}
