//! Generates Dex's gRPC API (proto/api.proto) for src/api: messages with prost, the service
//! with tonic, and the descriptor set that server reflection serves. protoc comes from the
//! protoc-bin-vendored crate, so the build needs no protoc on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/api.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build runs the protoc that PROTOC names.
    std::env::set_var("PROTOC", protoc);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .file_descriptor_set_path(out.join("dex_api_descriptor.bin"))
        .compile_protos(&["proto/api.proto"], &["proto"])?;
    Ok(())
}
