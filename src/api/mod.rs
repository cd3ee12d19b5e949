//! Dex's gRPC API (`api.Dex`, proto/api.proto), served with tonic.

pub mod proto;
