//! gRPC server reflection, in both versions of the protocol: `grpc.reflection.v1` and
//! the older `grpc.reflection.v1alpha` that grpcurl 1.8 and many other tools still speak
//! (without it they report "server does not support the reflection API").
//!
//! Both list and describe our API (`mcp_authz.v1.Authorizer`), health
//! (`grpc.health.v1.Health`) and reflection itself. Envoy's
//! `envoy.service.auth.v3.Authorization` is served but not reflected: the
//! `envoy-types` crate ships no descriptor set, and Envoy's `.proto` files are not
//! copied into this repository (Envoy, the only caller of that service, needs no
//! reflection).

use tonic_reflection::server::{Builder, Error, v1, v1alpha};

use super::proto;

/// The descriptor sets of every service of the gRPC listener.
fn builder() -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
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
