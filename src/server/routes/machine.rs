//! Endpoints that programs call: discovery, keys, token, userinfo, revocation,
//! introspection and device authorization. They answer JSON, errors as RFC 6749 §5.2.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;

use super::AppState;
use crate::oidc::{OAuthError, Provider};
use crate::server::extract::{ClientAuth, OAuthForm};
use crate::server::middleware::ClientAddr;

/// Served from memory: the body is shared, the headers are static.
pub(super) async fn discovery(State(state): State<AppState>) -> Response {
    discovery_response(&state.provider)
}

/// Served from memory: the body and its ETag are made once per key-set change.
pub(super) async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    jwks_response(&state.provider, headers.get(header::IF_NONE_MATCH))
}

/// The discovery document's response; also what `server::polled` answers with.
pub(crate) fn discovery_response(provider: &Provider) -> Response {
    json_bytes(
        provider.discovery().body.clone(),
        HeaderValue::from_static("public, max-age=3600"),
    )
}

/// The JWKS response, 304 when `If-None-Match` names its ETag; also what
/// `server::polled` answers with.
pub(crate) fn jwks_response(provider: &Provider, if_none_match: Option<&HeaderValue>) -> Response {
    let keys = &provider.keys;
    let jwks = keys.jwks();
    let cache = keys.jwks_cache_control().clone();
    let etag_matches = if_none_match
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == jwks.etag));
    let mut response = if etag_matches {
        let mut r = polled(axum::body::Body::empty(), cache);
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        json_bytes(jwks.body.clone(), cache)
    };
    response
        .headers_mut()
        .insert(header::ETAG, jwks.etag_header.clone());
    response
}

/// Room for the headers a polled response ends with: its own three (type, cache control,
/// ETag), the security headers and request id `Front::finish` adds, and a few of
/// `web.headers`. A map made empty grows twice on the way, and each growth moves every header
/// it holds.
const POLLED_RESPONSE_HEADERS: usize = 12;

fn json_bytes(body: Bytes, cache_control: HeaderValue) -> Response {
    let mut response = polled(axum::body::Body::from(body), cache_control);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A polled response with its header map made at its final size.
fn polled(body: axum::body::Body, cache_control: HeaderValue) -> Response {
    let mut response = Response::new(body);
    let mut headers = HeaderMap::with_capacity(POLLED_RESPONSE_HEADERS);
    headers.insert(header::CACHE_CONTROL, cache_control);
    *response.headers_mut() = headers;
    response
}

/// Token responses carry credentials: no cache may keep them (RFC 6749 §5.1).
fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub(super) async fn token(
    State(state): State<AppState>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    auth: ClientAuth,
    OAuthForm(form): OAuthForm,
) -> Result<Response, OAuthError> {
    let response = state.provider.token(auth.header(), &form, &addr).await?;
    Ok(no_store(Json(response).into_response()))
}

pub(super) async fn device_code(
    State(state): State<AppState>,
    auth: ClientAuth,
    OAuthForm(form): OAuthForm,
) -> Result<Response, OAuthError> {
    let answer = state
        .provider
        .device_authorization(auth.header(), &form)
        .await?;
    Ok(no_store(Json(answer).into_response()))
}

pub(super) async fn revoke(
    State(state): State<AppState>,
    auth: ClientAuth,
    OAuthForm(form): OAuthForm,
) -> Result<Response, OAuthError> {
    state.provider.revoke(auth.header(), &form).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

pub(super) async fn introspect(
    State(state): State<AppState>,
    auth: ClientAuth,
    OAuthForm(form): OAuthForm,
) -> Result<Response, OAuthError> {
    let answer = state.provider.introspect(auth.header(), &form).await?;
    Ok(no_store(Json(answer).into_response()))
}

/// The bearer token arrives in the same header that carries client authentication.
pub(super) async fn userinfo(
    State(state): State<AppState>,
    auth: ClientAuth,
) -> Result<Response, OAuthError> {
    let claims = state.provider.userinfo(auth.header()).await?;
    let mut r = Json(claims).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
