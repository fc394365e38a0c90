//! Cerbos' gRPC messages without copying its protos: the descriptors come from the
//! running Cerbos server's gRPC reflection, and requests are encoded from the same
//! JSON its HTTP API takes (protobuf's JSON mapping).

use std::collections::HashSet;

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The Cerbos service whose descriptors are fetched.
pub const SERVICE: &str = "cerbos.svc.v1.CerbosService";

/// Encodes `CheckResourcesRequest`s and decodes `CheckResourcesResponse`s.
#[derive(Debug, Clone)]
pub struct CerbosCodec {
    request: MessageDescriptor,
    response: MessageDescriptor,
}

impl CerbosCodec {
    /// Ask the Cerbos server at `addr` (host:port of its gRPC listener) for the
    /// descriptors of its service.
    pub async fn fetch(addr: &str) -> Result<Self, String> {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("invalid Cerbos address {addr}: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot reach Cerbos gRPC at {addr}: {e}"))?;
        let mut client = ServerReflectionClient::new(channel);
        let mut files: Vec<prost_types::FileDescriptorProto> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut wanted = vec![MessageRequest::FileContainingSymbol(SERVICE.into())];
        // Each answer holds a file and (some of) its dependencies; ask for what is missing.
        while let Some(request) = wanted.pop() {
            let outbound = tokio_stream::iter(vec![ServerReflectionRequest {
                host: String::new(),
                message_request: Some(request),
            }]);
            let mut inbound = client
                .server_reflection_info(outbound)
                .await
                .map_err(|e| format!("Cerbos reflection: {e}"))?
                .into_inner();
            while let Some(answer) = inbound
                .message()
                .await
                .map_err(|e| format!("Cerbos reflection: {e}"))?
            {
                match answer.message_response {
                    Some(MessageResponse::FileDescriptorResponse(r)) => {
                        for bytes in r.file_descriptor_proto {
                            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice())
                                .map_err(|e| format!("Cerbos reflection: {e}"))?;
                            if seen.insert(file.name().to_owned()) {
                                files.push(file);
                            }
                        }
                    }
                    Some(MessageResponse::ErrorResponse(e)) => {
                        return Err(format!("Cerbos reflection: {}", e.error_message));
                    }
                    _ => {}
                }
            }
            for f in &files {
                for dep in &f.dependency {
                    let asked = wanted
                        .iter()
                        .any(|w| matches!(w, MessageRequest::FileByFilename(n) if n == dep));
                    if !seen.contains(dep) && !asked {
                        wanted.push(MessageRequest::FileByFilename(dep.clone()));
                    }
                }
            }
        }
        let mut pool = DescriptorPool::new();
        pool.add_file_descriptor_protos(files)
            .map_err(|e| format!("Cerbos descriptors: {e}"))?;
        let service = pool
            .get_service_by_name(SERVICE)
            .ok_or_else(|| format!("Cerbos serves no `{SERVICE}`"))?;
        let method = service
            .methods()
            .find(|m| m.name() == "CheckResources")
            .ok_or("Cerbos has no `CheckResources`")?;
        Ok(Self {
            request: method.input(),
            response: method.output(),
        })
    }

    /// The protobuf encoding of a `CheckResourcesRequest` given as JSON.
    pub fn encode_request(&self, json: &serde_json::Value) -> Result<Vec<u8>, String> {
        let text = json.to_string();
        let mut de = serde_json::Deserializer::from_str(&text);
        let message = DynamicMessage::deserialize(self.request.clone(), &mut de)
            .map_err(|e| format!("cannot encode the Cerbos request: {e}"))?;
        Ok(message.encode_to_vec())
    }

    /// A `CheckResourcesResponse` as JSON text.
    pub fn decode_response(&self, bytes: &[u8]) -> Result<String, String> {
        let message = DynamicMessage::decode(self.response.clone(), bytes)
            .map_err(|e| format!("cannot decode the Cerbos response: {e}"))?;
        serde_json::to_string(&message).map_err(|e| e.to_string())
    }
}
