//! Generates Dex's gRPC API (proto/api.proto) for src/api: messages with prost, the service
//! with tonic (and a client over any HTTP/2 service), and the descriptor set that server reflection serves. protoc comes from the
//! protoc-bin-vendored crate, so the build needs no protoc on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build runs the protoc that PROTOC names.
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The client (without tonic's transport) serves the integration tests, which drive the API
    // of one process and sign in through another.
    tonic_prost_build::configure()
        .build_client(true)
        .build_transport(false)
        .file_descriptor_set_path(out.join("dex_api_descriptor.bin"))
        .compile_protos(&["proto/api.proto"], &["proto"])?;
    Ok(())
}
