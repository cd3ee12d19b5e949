//! `telemetry:`: the listener for metrics and health endpoints.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::raw::LenientBool;
use super::resolve::Ctx;
use super::web::{listen_addr, WebConfig};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `host:port` for /metrics and health endpoints.
    pub http: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTelemetry {
    pub http: Option<String>,
    pub enable_profiling: Option<LenientBool>,
}

pub(super) fn resolve_telemetry(value: Value, web: &WebConfig, ctx: &mut Ctx) -> TelemetryConfig {
    let raw: RawTelemetry = ctx.de(value, "telemetry").unwrap_or_default();
    let mut telemetry = TelemetryConfig::default();
    if let Some(addr) = raw.http.filter(|a| !a.is_empty()) {
        match listen_addr(&addr) {
            Ok(a) if Some(&a) == web.http.as_ref() || Some(&a) == web.https.as_ref() => ctx.err(
                "telemetry.http",
                "must differ from the web listen addresses",
            ),
            Ok(a) => telemetry.http = Some(a),
            Err(e) => ctx.err("telemetry.http", e),
        }
    }
    if raw.enable_profiling.is_some_and(|b| b.0) {
        ctx.warn(
            "telemetry.enableProfiling",
            "ignored: lanyard has no profiling endpoints",
        );
    }
    telemetry
}
