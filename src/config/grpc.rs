//! Dex's `grpc:` section: where Dex's gRPC API listens and how it is protected.
//!
//! The API manages clients, passwords and refresh tokens, so whoever reaches it administers
//! lanyard. Dex serves it to any address, with or without TLS; lanyard serves it beyond the
//! loopback interface only to clients holding a certificate signed by `tlsClientCA`, unless
//! `allowInsecureRemote` (lanyard's own key) says the network in front of it decides who connects.

use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::listen::{self, ListenAddr};
use super::raw::LenientBool;
use super::resolve::Ctx;
use super::web::parse_tls_version;
use super::TlsVersion;

/// Dex's feature flag for connector CRUD through the API (`DEX_API_CONNECTORS_CRUD`).
pub const CONNECTORS_CRUD_FLAG: &str = "DEX_API_CONNECTORS_CRUD";

/// The `grpc:` section; `addr` is `None` when the API is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcConfig {
    pub addr: Option<ListenAddr>,
    /// Certificate and key, both or neither.
    pub tls: Option<GrpcTls>,
    /// Serve gRPC server reflection (`grpc.reflection.v1` and `v1alpha`).
    pub reflection: bool,
    /// `DEX_API_CONNECTORS_CRUD` is true: Create/Update/Delete/ListConnectors work (Dex's
    /// flag, off by default; read from the environment at start, as Dex reads it).
    pub connectors_crud: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
    pub min_version: Option<TlsVersion>,
    pub max_version: Option<TlsVersion>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGrpc {
    #[serde(default, deserialize_with = "listen::optional")]
    addr: Option<ListenAddr>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    #[serde(rename = "tlsClientCA")]
    tls_client_ca: Option<String>,
    tls_min_version: Option<String>,
    tls_max_version: Option<String>,
    reflection: Option<LenientBool>,
    /// lanyard only: serve a non-loopback `addr` without requiring client certificates.
    allow_insecure_remote: Option<LenientBool>,
}

pub(super) fn resolve_grpc(
    value: Value,
    taken: &[Option<&ListenAddr>],
    ctx: &mut Ctx,
) -> GrpcConfig {
    let Some(raw) = ctx.de::<Option<RawGrpc>>(value, "grpc").flatten() else {
        return GrpcConfig::default();
    };
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let addr = match raw.addr {
        Some(a) if taken.contains(&Some(&a)) => {
            ctx.err(
                "grpc.addr",
                "must differ from the web and telemetry addresses",
            );
            None
        }
        a => a,
    };
    let cert = nonempty(raw.tls_cert).map(PathBuf::from);
    let key = nonempty(raw.tls_key).map(PathBuf::from);
    let client_ca = nonempty(raw.tls_client_ca).map(PathBuf::from);
    let min_version = parse_tls_version(raw.tls_min_version, "grpc.tlsMinVersion", ctx);
    let max_version = parse_tls_version(raw.tls_max_version, "grpc.tlsMaxVersion", ctx);
    if let (Some(min), Some(max)) = (min_version, max_version) {
        if min > max {
            ctx.err("grpc.tlsMinVersion", "must not be above grpc.tlsMaxVersion");
        }
    }
    let configured_without_addr = cert.is_some() || key.is_some() || client_ca.is_some();
    if addr.is_none() && configured_without_addr && !ctx.has_error_at("grpc.addr") {
        ctx.err(
            "grpc.addr",
            "required when grpc.tlsCert or grpc.tlsKey is set",
        );
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(GrpcTls {
            cert,
            key,
            client_ca,
            min_version,
            max_version,
        }),
        (None, None) => {
            if client_ca.is_some() {
                ctx.err(
                    "grpc.tlsClientCA",
                    "needs grpc.tlsCert and grpc.tlsKey: client certificates are checked over TLS",
                );
            }
            None
        }
        (Some(_), None) => {
            ctx.err("grpc.tlsKey", "required when grpc.tlsCert is set");
            None
        }
        (None, Some(_)) => {
            ctx.err("grpc.tlsCert", "required when grpc.tlsKey is set");
            None
        }
    };
    let authenticated = tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let mut connectors_crud = false;
    let allow_insecure_remote = raw.allow_insecure_remote.is_some_and(|b| b.0);
    if let Some(a) = &addr {
        if !authenticated && !a.is_loopback() && !allow_insecure_remote {
            ctx.err(
                "grpc.addr",
                format!(
                    "`{a}` is reachable beyond this machine, and without grpc.tlsClientCA anyone \
                     who reaches it can create clients and passwords: set grpc.tlsCert, \
                     grpc.tlsKey and grpc.tlsClientCA (mutual TLS), listen on a loopback \
                     address such as 127.0.0.1, or set grpc.allowInsecureRemote: true if a \
                     network policy decides who connects"
                ),
            );
        }
        if let Some(value) = (ctx.env)(CONNECTORS_CRUD_FLAG).filter(|v| !v.is_empty()) {
            match parse_go_bool(&value) {
                Some(on) => connectors_crud = on,
                None => ctx.err(
                    "grpc",
                    format!(
                        "{CONNECTORS_CRUD_FLAG}={value:?} is not a boolean (true, false, 1, 0, \
                         t, f); Dex would quietly read it as false"
                    ),
                ),
            }
        }
    } else if allow_insecure_remote || raw.reflection.is_some_and(|b| b.0) {
        ctx.err("grpc.addr", "required when the gRPC API is configured");
    }
    GrpcConfig {
        addr,
        tls,
        reflection: raw.reflection.is_some_and(|b| b.0),
        connectors_crud,
    }
}

/// Go's strconv.ParseBool, which Dex's feature flags use.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}
