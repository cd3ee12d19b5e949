//! The JSON API calls of connectors that read a provider's own REST API with a bearer token
//! (Microsoft Graph, Google's Admin SDK), over one [`client`]: every refusal (401, 403, 429 with
//! `Retry-After`, 5xx, a timeout) becomes an error that says what happened without repeating
//! the token.

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::{error_chain, http_client, is_http_url, printable, read_root_ca};
use crate::{ConfigIssue, ConnectorError};

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for one connector of a provider's API.
pub(crate) fn client(
    root_cas: &[String],
    timeout: Duration,
) -> Result<reqwest::Client, ConnectorError> {
    http_client(root_cas, CONNECT_TIMEOUT, timeout)
}

/// The settings every connector of an OAuth app at a provider's API has, checked alike:
/// `clientID` and `clientSecret` (the app's, described by `app`) present, `redirectURI` and
/// the endpoint settings `urls` (key, value; empty means the provider's default) absolute
/// http(s) URLs, each `rootCAs` entry a readable certificate.
pub(crate) fn check_client_settings(
    app: &str,
    (client_id, client_secret): (&str, &str),
    redirect_uri: &str,
    urls: &[(&str, &str)],
    root_cas: &[String],
) -> Vec<ConfigIssue> {
    let mut out = Vec::new();
    for (key, value, what) in [
        ("clientID", client_id, "ID"),
        ("clientSecret", client_secret, "secret"),
    ] {
        if value.is_empty() {
            out.push(ConfigIssue::error(
                key,
                format!("missing required key `{key}` (the {app}'s client {what})"),
            ));
        }
    }
    if !redirect_uri.is_empty() && !is_http_url(redirect_uri) {
        out.push(ConfigIssue::error(
            "redirectURI",
            format!("`{redirect_uri}` is not an absolute http(s) URL; it should be the issuer's URL followed by /callback"),
        ));
    }
    for (key, value) in urls {
        if !value.is_empty() && !is_http_url(value) {
            out.push(ConfigIssue::error(
                *key,
                format!("`{value}` is not an http(s) URL"),
            ));
        }
    }
    for (i, ca) in root_cas.iter().enumerate() {
        if let Err(e) = read_root_ca(ca) {
            out.push(ConfigIssue::error(format!("rootCAs[{i}]"), e));
        }
    }
    out
}

/// Why an API call gave no answer. `api` names the provider's API ("Microsoft Graph").
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The token was refused: revoked, expired, or for another audience.
    #[error("{api} refused the access token on {endpoint} (401): {message}")]
    Unauthorized {
        api: &'static str,
        endpoint: String,
        message: String,
    },
    /// The token is fine but lacks a permission (or an administrator's consent).
    #[error("{api} denied {endpoint} (403): {message}")]
    Forbidden {
        api: &'static str,
        endpoint: String,
        message: String,
    },
    #[error("{api} is throttling requests to {endpoint} (429){}", retry_after.map(|s| format!("; retry after {s} seconds")).unwrap_or_default())]
    Throttled {
        api: &'static str,
        endpoint: String,
        retry_after: Option<u64>,
    },
    #[error("{api} answered {endpoint} with {status}: {message}")]
    Status {
        api: &'static str,
        endpoint: String,
        status: StatusCode,
        message: String,
    },
    #[error("{api} did not answer {endpoint} within {} seconds", timeout.as_secs())]
    Timeout {
        api: &'static str,
        endpoint: String,
        timeout: Duration,
    },
    #[error("cannot reach {api} for {endpoint}: {reason}")]
    Transport {
        api: &'static str,
        endpoint: String,
        reason: String,
    },
    #[error("unexpected answer from {api} on {endpoint}: {reason}")]
    Malformed {
        api: &'static str,
        endpoint: String,
        reason: String,
    },
}

impl ApiError {
    /// At login: a refused token or permission is the operator's to fix (app permissions,
    /// consent, the service account's delegation); everything else may pass with a retry.
    pub(crate) fn at_login(self) -> ConnectorError {
        match self {
            ApiError::Unauthorized { .. } | ApiError::Forbidden { .. } => {
                ConnectorError::Config(self.to_string())
            }
            other => ConnectorError::Unavailable(other.to_string()),
        }
    }
}

/// One API of one provider, as seen by a connector.
pub(crate) struct Api {
    pub name: &'static str,
    pub timeout: Duration,
}

impl Api {
    /// Sends `request` (already carrying its bearer token) and reads a JSON answer as `T`.
    /// `endpoint` names the call in errors (a path, never a URL with a token in it).
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.transport(endpoint, e))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let body = response.text().await.unwrap_or_default();
            return Err(self.refusal(endpoint, status, &headers, &body));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(endpoint, e))?;
        let mut de = serde_json::Deserializer::from_slice(&body);
        serde_path_to_error::deserialize(&mut de).map_err(|e| ApiError::Malformed {
            api: self.name,
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })
    }

    fn transport(&self, endpoint: &str, err: reqwest::Error) -> ApiError {
        if err.is_timeout() {
            ApiError::Timeout {
                api: self.name,
                endpoint: endpoint.to_string(),
                timeout: self.timeout,
            }
        } else {
            ApiError::Transport {
                api: self.name,
                endpoint: endpoint.to_string(),
                // reqwest's errors name the URL without its query; no token is in either.
                reason: error_chain(&err.without_url()),
            }
        }
    }

    fn refusal(
        &self,
        endpoint: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &str,
    ) -> ApiError {
        let endpoint = endpoint.to_string();
        let message = error_message(body);
        match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized {
                api: self.name,
                endpoint,
                message,
            },
            StatusCode::FORBIDDEN => ApiError::Forbidden {
                api: self.name,
                endpoint,
                message,
            },
            StatusCode::TOO_MANY_REQUESTS => ApiError::Throttled {
                api: self.name,
                endpoint,
                retry_after: headers
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok()),
            },
            status => ApiError::Status {
                api: self.name,
                endpoint,
                status,
                message,
            },
        }
    }
}

/// The message of an error body in the shape both Microsoft Graph and Google's APIs use
/// (`{"error": {"code": ..., "message": ...}}`), else a bounded, printable start of the body.
fn error_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let text = parsed
        .as_ref()
        .and_then(|v| v.get("error"))
        .map(|e| {
            let code = e
                .get("code")
                .map(|c| match c {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            let message = e.get("message").and_then(|m| m.as_str()).unwrap_or("");
            match (code.is_empty(), message.is_empty()) {
                (false, false) => format!("{code}: {message}"),
                (false, true) => code,
                _ => message.to_string(),
            }
        })
        .unwrap_or_else(|| body.to_string());
    printable(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_in_the_providers_shape_give_code_and_message() {
        assert_eq!(
            error_message(
                r#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges"}}"#
            ),
            "Authorization_RequestDenied: Insufficient privileges"
        );
        assert_eq!(
            error_message(r#"{"error":{"code":403,"message":"Not Authorized"}}"#),
            "403: Not Authorized"
        );
        assert_eq!(error_message("plain\u{7} text"), "plain text");
        assert_eq!(error_message(""), "(no message)");
        assert!(error_message(&"x".repeat(1000)).len() <= 200);
    }
}
