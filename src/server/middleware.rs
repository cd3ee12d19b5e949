//! Cross-cutting layers: security headers, request ids, request logging and metrics.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::Metrics;

/// Headers every response gets; HTML pages must never be framed or sniffed.
#[derive(Clone)]
pub struct SecurityHeaders {
    pub extra: Arc<Vec<(HeaderName, HeaderValue)>>,
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' https: data:; \
frame-ancestors 'none'; base-uri 'none'";

pub async fn security_headers(
    State(config): State<SecurityHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A page that needs its own policy (the form_post page's script nonce) sets it; every
    // other response gets the strict default.
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    for (name, value) in config.extra.iter() {
        h.insert(name.clone(), value.clone());
    }
    response
}

/// Logs one line per request (method, matched route, status, latency, request id; never the
/// query string, which can carry state and codes) and counts it.
pub async fn observe(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Every line logged while serving this request carries its id.
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, route = %route);
    async move {
        let response = next.run(request).await;
        let status = response.status().as_u16();
        metrics.record_request(&route, &method, status, started.elapsed().as_secs_f64());
        tracing::info!(
            status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }
    .instrument(span)
    .await
}
