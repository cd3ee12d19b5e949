//! Cross-cutting layers: security headers, request ids, request logging and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::config::ClientRemoteIp;
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

/// What [`observe`] needs: the counters, and which proxies may name the client.
#[derive(Clone)]
pub struct Observe {
    pub metrics: Arc<Metrics>,
    /// `web.clientRemoteIP`.
    pub remote_ip: Arc<ClientRemoteIp>,
}

/// The client's address as [`observe`] resolved it, for handlers that rate limit by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub String);

/// Logs one line per request (method, matched route, status, latency; never the query
/// string, which can carry state and codes) and counts it. Every line logged while serving
/// the request carries its request id and client address, which handlers also get as a
/// [`ClientAddr`] extension.
pub async fn observe(State(observe): State<Observe>, mut request: Request, next: Next) -> Response {
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
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = client_addr(&observe.remote_ip, peer, request.headers());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        client_addr = %client,
        method = %method,
        route = %route
    );
    request.extensions_mut().insert(ClientAddr(client));
    async move {
        let response = next.run(request).await;
        let status = response.status().as_u16();
        observe
            .metrics
            .record_request(&route, &method, status, started.elapsed().as_secs_f64());
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

/// The client's address: the TCP peer, or what a trusted proxy says it forwarded for.
pub fn client_addr(remote: &ClientRemoteIp, peer: Option<IpAddr>, headers: &HeaderMap) -> String {
    let Some(peer) = peer else {
        return "unknown".to_string();
    };
    let trusted = |ip: &IpAddr| remote.trusted_proxies.iter().any(|c| c.contains(ip));
    if !trusted(&peer) {
        return peer.to_string();
    }
    let header = remote.header.as_deref().unwrap_or("x-forwarded-for");
    // Walk the chain from the nearest hop; the first address no trusted proxy vouches for
    // is the client.
    let hops: Vec<IpAddr> = headers
        .get_all(header)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|h| h.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(hops.first())
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| peer.to_string())
}
