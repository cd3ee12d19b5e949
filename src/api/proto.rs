//! The types and service trait generated from proto/api.proto (Dex's `api` package) at build
//! time.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("api");

/// The descriptor set of proto/api.proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dex_api_descriptor");
