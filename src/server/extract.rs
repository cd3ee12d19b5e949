//! Extractors that turn an HTTP request into what the protocol layer takes, refusing with
//! the protocol's own error so a handler only ever sees a readable request.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

use crate::oidc::form::parse_unique_params;
use crate::oidc::OAuthError;

/// A form-encoded body with each field at most once (RFC 6749 §3.2), for the JSON endpoints.
/// Refused with `invalid_request` when it is not a form, not UTF-8, or repeats a field.
pub struct OAuthForm(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = OAuthError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_form(request.headers()) {
            return Err(not_a_form());
        }
        // The body was read whole (and its size checked) by the read_body middleware, so
        // this only fails on a body that could not be read at all.
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|_| OAuthError::invalid_request("cannot read the request body"))?;
        parse_form(&body).map(OAuthForm)
    }
}

/// The request's `Authorization` header, which the protocol layer reads as client
/// authentication (Basic, with the form's `client_id`/`client_secret` as the alternative)
/// or as a bearer token. Absent or not text, it is `None`, and the protocol layer decides
/// whether that is allowed.
pub struct ClientAuth(pub Option<String>);

impl ClientAuth {
    pub fn header(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAuth {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAuth(
            parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ))
    }
}

/// The fields of a form-encoded body; browser forms read it too, answering with a page.
pub fn form_fields(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<HashMap<String, String>, OAuthError> {
    if !is_form(headers) {
        return Err(not_a_form());
    }
    parse_form(body)
}

fn not_a_form() -> OAuthError {
    OAuthError::invalid_request("the body must be application/x-www-form-urlencoded")
}

fn parse_form(body: &Bytes) -> Result<HashMap<String, String>, OAuthError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::invalid_request("the body is not valid UTF-8"))?;
    parse_unique_params(text).map_err(OAuthError::invalid_request)
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}
