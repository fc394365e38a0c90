//! Compiles the gRPC API in `proto/` without a system `protoc`, and writes the file
//! descriptor sets that gRPC reflection serves: our API's, and Envoy's ext_authz
//! service's (from `proto/third_party`, descriptors only: the Envoy types come from the
//! `envoy-types` crate).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/mcp_authz/v1/authorizer.proto"];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("mcp_authz_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    let envoy = protox::Compiler::new(["proto/third_party"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(["envoy/service/auth/v3/external_auth.proto"])?
        .encode_file_descriptor_set();
    std::fs::write(out.join("envoy_ext_authz_descriptor.bin"), envoy)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
