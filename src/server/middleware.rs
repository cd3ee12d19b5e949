//! Cross-cutting layers: security headers, request ids, request logging and metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
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

impl SecurityHeaders {
    fn apply(&self, h: &mut HeaderMap) {
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
        if let Some(hsts) = &self.hsts {
            h.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        for (name, value) in self.extra.iter() {
            h.insert(name.clone(), value.clone());
        }
    }
}

/// Longest client-supplied `X-Request-Id` that is kept.
const MAX_REQUEST_ID: usize = 128;

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: the client's `X-Request-Id` when it sent exactly one that is short and
/// made of `[A-Za-z0-9._:-]`, else a new random UUID, which replaces whatever it sent. The id
/// is written into every log line of the request, where spaces, quotes, braces or control
/// characters could forge fields.
pub(super) fn request_id(headers: &HeaderMap) -> RequestId {
    let safe = |v: &HeaderValue| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_REQUEST_ID
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(c))
    };
    let mut sent = headers.get_all(&X_REQUEST_ID).iter();
    if let (Some(id), None) = (sent.next(), sent.next()) {
        if safe(id) {
            return RequestId {
                value: id.clone(),
                new: false,
            };
        }
    }
    RequestId {
        value: new_request_id(),
        new: true,
    }
}

/// A request's id, and whether lanyard made it (so it replaces what the client sent).
pub(super) struct RequestId {
    value: HeaderValue,
    new: bool,
}

/// A random (version 4) UUID, hyphenated as tower-http's `MakeRequestUuid` writes it, from
/// the thread's generator: asking the kernel for every request's id costs a system call.
fn new_request_id() -> HeaderValue {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Where each byte's two digits go in the 8-4-4-4-12 layout.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    let mut text = [0u8; 36];
    for h in [8, 13, 18, 23] {
        text[h] = b'-';
    }
    for (b, at) in bytes.iter().zip(AT) {
        text[at] = HEX[usize::from(b >> 4)];
        text[at + 1] = HEX[usize::from(b & 0x0f)];
    }
    // Hex digits and hyphens are always a valid header value.
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Reads the whole request body within `web.requestBodyTimeout` before the handler runs:
/// a body trickling in is answered 408 and its connection closed, instead of holding a
/// connection and a task for as long as the client likes. Bodies are small (at most
/// [`super::MAX_BODY_BYTES`]), so buffering them costs nothing the handlers did not.
pub async fn read_body(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    // A request without a body (most GETs) has nothing to wait for.
    if hyper::body::Body::is_end_stream(request.body()) {
        return next.run(request).await;
    }
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

/// What [`front`] needs: the response headers, the counters, which proxies may name the
/// client, and which routes are logged at debug only.
#[derive(Clone)]
pub struct Front {
    pub headers: SecurityHeaders,
    pub metrics: Arc<Metrics>,
    /// `web.clientRemoteIP`.
    pub remote_ip: Arc<ClientRemoteIp>,
    /// Matched routes whose request line is logged at debug instead of info: discovery and
    /// JWKS, which kube-apiserver and every relying party poll and which answer from memory
    /// (Dex does not log them at all). They are counted in the metrics like every route.
    pub quiet: Arc<[String]>,
}

/// The client's address as [`front`] resolved it, for handlers that rate limit by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub String);

/// The outermost layer, one for what every request gets, since each layer costs a boxed
/// future and a clone of its state per request: the request id (kept from the client when
/// safe, else new, and returned in the response), the security headers, and one log line per
/// request (method, matched route, status, latency; never the query string, which can carry
/// state and codes), which it counts. Every line logged while serving the request carries its
/// request id and client address, which handlers also get as a [`ClientAddr`] extension.
pub async fn front(State(front): State<Arc<Front>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    if request_id.new {
        request
            .headers_mut()
            .insert(X_REQUEST_ID, request_id.value.clone());
    }
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let quiet = front.quiet.iter().any(|q| q == route);
    let response = if quiet && !tracing::level_enabled!(tracing::Level::DEBUG) {
        // Nothing of this request is logged: no span, and no client address to resolve
        // (the quiet routes do not read it).
        next.run(request).await
    } else {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let client = client_addr(&front.remote_ip, peer, request.headers());
        let id = request_id.value.to_str().unwrap_or("");
        // The span's level is its callsite's, so each level has its own macro call.
        let span = if quiet {
            tracing::debug_span!("request", request_id = %id, client_addr = %client, method = %method, route = %route)
        } else {
            tracing::info_span!("request", request_id = %id, client_addr = %client, method = %method, route = %route)
        };
        request.extensions_mut().insert(ClientAddr(client));
        async {
            let response = next.run(request).await;
            if let Some(StorageFault(fault)) = response.extensions().get::<StorageFault>() {
                crate::metrics::count_storage_error();
                tracing::error!(error = %fault, "storage error");
            }
            let status = response.status().as_u16();
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            if quiet {
                tracing::debug!(status, latency_ms, "request");
            } else {
                tracing::info!(status, latency_ms, "request");
            }
            response
        }
        .instrument(span)
        .await
    };
    front.finish(route, &method, started, request_id, response)
}

impl Front {
    /// What every response gets on its way out, whichever way it was answered: counted in
    /// the metrics, the security headers, and the request id.
    pub(super) fn finish(
        &self,
        route: &str,
        method: &Method,
        started: Instant,
        request_id: RequestId,
        mut response: Response,
    ) -> Response {
        self.metrics.record_request(
            route,
            method.as_str(),
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        let h = response.headers_mut();
        self.headers.apply(h);
        if !h.contains_key(&X_REQUEST_ID) {
            h.insert(X_REQUEST_ID, request_id.value);
        }
        response
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_request_ids_are_version_4_uuids_in_their_usual_layout() {
        let ids: Vec<String> = (0..64)
            .map(|_| new_request_id().to_str().unwrap_or_default().to_string())
            .collect();
        for id in &ids {
            let groups: Vec<&str> = id.split('-').collect();
            let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
            assert_eq!(lengths, [8, 4, 4, 4, 12], "{id}");
            assert!(
                groups
                    .iter()
                    .all(|g| g.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8'..=b'b'),
                "variant: {id}"
            );
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
