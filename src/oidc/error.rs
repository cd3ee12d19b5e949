//! Protocol errors, each knowing its HTTP response: RFC 6749 §5.2 JSON for the token endpoint,
//! RFC 6750 for bearer-protected endpoints.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::storage::StorageError;

/// An RFC 6749 error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    UnsupportedResponseType,
    ServerError,
    TemporarilyUnavailable,
    InvalidToken,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
    /// RFC 8693: no token for the target named by `resource` or `audience`.
    InvalidTarget,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidToken => "invalid_token",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::InvalidTarget => "invalid_target",
        }
    }
}

/// An error from the token, userinfo or other JSON endpoints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {description}", code.as_str())]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// How to answer a 401: client authentication (Basic) or a bearer token (Bearer).
    pub challenge: Option<Challenge>,
    /// The storage failure behind a 5xx, for the middleware to log and count.
    pub fault: Option<StorageFault>,
    /// Too many failed attempts: answered 429 with this `Retry-After` (seconds).
    pub retry_after_secs: Option<u64>,
}

/// A storage failure behind an error response. Errors only carry it: the response holds it
/// as an extension, and the middleware that observes every request logs it (with the
/// request's id) and counts it, once, wherever in the protocol it arose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFault(pub String);

impl From<&StorageError> for StorageFault {
    fn from(err: &StorageError) -> Self {
        Self(err.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
            challenge: None,
            fault: None,
            retry_after_secs: None,
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self {
            challenge: Some(Challenge::Basic),
            ..Self::new(ErrorCode::InvalidClient, d)
        }
    }
    pub fn invalid_token(d: impl Into<String>) -> Self {
        Self {
            challenge: Some(Challenge::Bearer),
            ..Self::new(ErrorCode::InvalidToken, d)
        }
    }
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "storage is unavailable; try again shortly",
        )
    }

    /// Too many failed password attempts (the password grant): 429 with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                ErrorCode::AccessDenied,
                format!("too many failed attempts; retry after {retry_after_secs} s"),
            )
        }
    }

    pub fn status(&self) -> StatusCode {
        if self.retry_after_secs.is_some() {
            return StatusCode::TOO_MANY_REQUESTS;
        }
        match self.code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::AccessDenied | ErrorCode::UnauthorizedClient => {
                if self.challenge.is_some() {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::BAD_REQUEST
                }
            }
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Storage failures never turn into a success or a half-written state: the caller answers 503.
impl From<StorageError> for OAuthError {
    fn from(err: StorageError) -> Self {
        let fault = Some(StorageFault::from(&err));
        let error = match err {
            StorageError::Unavailable(_) => Self::unavailable(),
            _ => Self::new(ErrorCode::ServerError, "internal storage error"),
        };
        Self { fault, ..error }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    error_description: &'a str,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&ErrorBody {
            error: self.code.as_str(),
            error_description: &self.description,
        })
        .unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if status == StatusCode::UNAUTHORIZED {
            let challenge = match self.challenge {
                Some(Challenge::Bearer) => {
                    // RFC 6750 §3: the error code goes into the challenge; the description is
                    // ours and safe, but keep quotes out of the header regardless.
                    format!(
                        "Bearer realm=\"lanyard\", error=\"{}\", error_description=\"{}\"",
                        self.code.as_str(),
                        self.description.replace(['"', '\\'], "'")
                    )
                }
                _ => "Basic realm=\"lanyard\"".to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(fault) = self.fault {
            response.extensions_mut().insert(fault);
        }
        response
    }
}
