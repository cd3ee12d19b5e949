//! `telemetry:`: the listener for metrics and health endpoints.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::listen::{self, ListenAddr};
use super::raw::LenientBool;
use super::resolve::Ctx;
use super::web::WebConfig;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Where to serve /metrics and the health endpoints.
    pub http: Option<ListenAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTelemetry {
    #[serde(default, deserialize_with = "listen::optional")]
    pub http: Option<ListenAddr>,
    pub enable_profiling: Option<LenientBool>,
}

pub(super) fn resolve_telemetry(value: Value, web: &WebConfig, ctx: &mut Ctx) -> TelemetryConfig {
    let raw: RawTelemetry = ctx.de(value, "telemetry").unwrap_or_default();
    let mut telemetry = TelemetryConfig::default();
    match raw.http {
        Some(a) if Some(&a) == web.http.as_ref() || Some(&a) == web.https.as_ref() => ctx.err(
            "telemetry.http",
            "must differ from the web listen addresses",
        ),
        a => telemetry.http = a,
    }
    if raw.enable_profiling.is_some_and(|b| b.0) {
        ctx.warn(
            "telemetry.enableProfiling",
            "ignored: lanyard has no profiling endpoints",
        );
    }
    telemetry
}
