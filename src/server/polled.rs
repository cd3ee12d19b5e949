//! Discovery and JWKS answered before the router. kube-apiserver and every relying party poll
//! them; they answer from memory and their request line is at `debug`, so at `info` all the
//! router and its layers would add is work per request (routing, two boxed middleware
//! futures, the request's extensions, a clone of its headers). Answered here, a response is
//! the same one the router gives: the same function makes it ([`routes::machine`]) and the
//! same [`Front::finish`] counts it and adds the security headers and the request id. A
//! request these do not cover exactly goes to the router: another method (HEAD included), a
//! body, debug logging on, or CORS configured (whose layer sits on the router's routes).

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, Method, Request};
use axum::response::Response;

use super::middleware::{request_id, Front};
use super::routes::{machine, DISCOVERY_ROUTE, JWKS_ROUTE};
use super::Live;

pub(crate) struct PolledRoutes {
    live: Live,
    front: Arc<Front>,
    /// The routes' full paths (under the issuer's path), as the router's `MatchedPath`
    /// names them in the metrics.
    keys: String,
    discovery: String,
}

impl PolledRoutes {
    pub(super) fn new(live: Live, front: Arc<Front>, base: &str) -> Self {
        Self {
            live,
            front,
            keys: format!("{base}{JWKS_ROUTE}"),
            discovery: format!("{base}{DISCOVERY_ROUTE}"),
        }
    }

    /// The response, or `None` when the router must answer.
    pub(crate) fn answer<B: hyper::body::Body>(&self, request: &Request<B>) -> Option<Response> {
        if request.method() != Method::GET || !request.body().is_end_stream() {
            return None;
        }
        let path = request.uri().path();
        let keys = path == self.keys;
        if !keys && path != self.discovery {
            return None;
        }
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            return None;
        }
        let started = Instant::now();
        let request_id = request_id(request.headers());
        let provider = &self.live.current().provider;
        let (route, response) = if keys {
            let if_none_match = request.headers().get(header::IF_NONE_MATCH);
            (&self.keys, machine::jwks_response(provider, if_none_match))
        } else {
            (&self.discovery, machine::discovery_response(provider))
        };
        Some(
            self.front
                .finish(route, &Method::GET, started, request_id, response),
        )
    }
}
