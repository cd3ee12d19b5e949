//! Cross-cutting layers: security headers, request ids, request logging and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::config::ClientRemoteIp;
use crate::metrics::Metrics;
use crate::oidc::error::StorageFault;

/// Headers every response gets; HTML pages must never be framed or sniffed.
#[derive(Clone)]
pub struct SecurityHeaders {
    pub extra: Arc<Vec<(HeaderName, HeaderValue)>>,
    /// `Strict-Transport-Security` when the issuer is https and `web.headers` sets none.
    pub hsts: Option<HeaderValue>,
}

/// A year, without `includeSubDomains`: lanyard cannot know what else runs on the domain.
pub const DEFAULT_HSTS: &str = "max-age=31536000";

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
    if let Some(hsts) = &config.hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    for (name, value) in config.extra.iter() {
        h.insert(name.clone(), value.clone());
    }
    response
}

/// Longest client-supplied `X-Request-Id` that is kept.
const MAX_REQUEST_ID: usize = 128;

/// Drops a client's `X-Request-Id` unless it is short and made of `[A-Za-z0-9._:-]`, so
/// that a new id is generated instead: the id is written into every log line of the
/// request, where spaces, quotes, braces or control characters could forge fields.
pub async fn safe_request_id(mut request: Request, next: Next) -> Response {
    let safe = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_REQUEST_ID
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
    };
    let headers = request.headers_mut();
    if !headers.get_all("x-request-id").iter().all(safe)
        || headers.get_all("x-request-id").iter().count() > 1
    {
        headers.remove("x-request-id");
    }
    next.run(request).await
}

/// Reads the whole request body within `web.requestBodyTimeout` before the handler runs:
/// a body trickling in is answered 408 and its connection closed, instead of holding a
/// connection and a task for as long as the client likes. Bodies are small (at most
/// [`super::MAX_BODY_BYTES`]), so buffering them costs nothing the handlers did not.
pub async fn read_body(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let (parts, body) = request.into_parts();
    let closing = |status: StatusCode, message: &'static str| {
        let mut r = (status, message).into_response();
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let read = Limited::new(body, super::MAX_BODY_BYTES).collect();
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return closing(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Ok(Err(_)) => return closing(StatusCode::BAD_REQUEST, "cannot read the request body"),
        Err(_) => {
            return closing(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
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
        if let Some(StorageFault(fault)) = response.extensions().get::<StorageFault>() {
            crate::metrics::count_storage_error();
            tracing::error!(error = %fault, "storage error");
        }
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

/// The header proxies name the client in when `web.clientRemoteIP.header` does not say.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address: the TCP peer, or what a trusted proxy says it forwarded for.
pub fn client_addr(remote: &ClientRemoteIp, peer: Option<IpAddr>, headers: &HeaderMap) -> String {
    let Some(peer) = peer else {
        return "unknown".to_string();
    };
    let trusted = |ip: &IpAddr| remote.trusted_proxies.iter().any(|c| c.contains(ip));
    if !trusted(&peer) {
        return peer.to_string();
    }
    let header = remote.header.clone().unwrap_or(X_FORWARDED_FOR);
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
