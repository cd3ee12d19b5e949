//! What the connectors that call an upstream over HTTPS share (`github`, `gitlab`, `oauth`,
//! `microsoft`, `google`, `oidc`): one way to build the HTTP client (rustls, the public roots
//! plus the `rootCAs` entries, timeouts, no redirects followed), one way to put an upstream's
//! text and an error's causes into a message, and the settings checks they have alike.
//!
//! - [`oauth_client`]: the OAuth 2.0 authorization-code flow, refresh, and bearer-authenticated
//!   JSON reads of the plain OAuth 2.0 connectors (`gitlab`, `oauth`).
//! - [`api`]: JSON calls to a provider's own REST API with a bearer token (Microsoft Graph,
//!   Google's Admin SDK).
//!
//! Errors name the upstream and the endpoint, never a token.

pub(crate) mod api;
pub(crate) mod oauth_client;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;

pub(crate) use api::{check_client_settings, Api, ApiError};
pub(crate) use oauth_client::{FetchError, OAuthUpstream, Tokens, UpstreamSettings};

use crate::ConnectorError;

/// Enough of an upstream's text to explain it, not enough to fill a page or a log line.
const MAX_UPSTREAM_TEXT: usize = 200;

/// A client for one connector: the public web roots (reqwest's built-in set) plus the
/// `rootCAs` entries (see [`read_root_ca`]).
pub(crate) fn http_client(
    root_cas: &[String],
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, ConnectorError> {
    let mut builder = reqwest::Client::builder()
        // A redirect would carry the code or the bearer token somewhere unexpected, or let a
        // token or key endpoint point lanyard anywhere.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout.min(timeout))
        .timeout(timeout)
        .user_agent(concat!("lanyard/", env!("CARGO_PKG_VERSION")));
    for (i, ca) in root_cas.iter().enumerate() {
        for cert in
            read_root_ca(ca).map_err(|e| ConnectorError::Config(format!("rootCAs[{i}]: {e}")))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| ConnectorError::Internal(format!("HTTP client: {}", error_chain(&e))))
}

/// A `rootCAs` entry as Dex reads it: a file, else base64 of PEM, else PEM itself.
pub(crate) fn read_root_ca(entry: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = match std::fs::read(entry) {
        Ok(bytes) => bytes,
        Err(_) => STANDARD
            .decode(entry.trim())
            .unwrap_or_else(|_| entry.as_bytes().to_vec()),
    };
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err("not a readable PEM file, base64 of PEM, or PEM certificate".to_string());
    }
    reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("not a valid PEM certificate: {e}"))
        .and_then(|certs| {
            if certs.is_empty() {
                Err("holds no certificate".to_string())
            } else {
                Ok(certs)
            }
        })
}

/// Whether `value` is an absolute http(s) URL with a host (a setting naming an endpoint).
pub(crate) fn is_http_url(value: &str) -> bool {
    url::Url::parse(value)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
}

/// An upstream's `text` stripped of control characters and cut to a bounded length.
fn bounded(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(MAX_UPSTREAM_TEXT)
        .collect()
}

/// An upstream's message, [`bounded`]; "(no message)" when nothing printable is left.
pub(crate) fn printable(text: &str) -> String {
    let clean = bounded(text);
    if clean.is_empty() {
        "(no message)".into()
    } else {
        clean
    }
}

/// `code: description`, each [`bounded`] (an OAuth 2.0 error and its description).
pub(crate) fn describe(code: &str, description: Option<&str>) -> String {
    match description.map(bounded).filter(|d| !d.is_empty()) {
        Some(d) => format!("{}: {d}", bounded(code)),
        None => bounded(code),
    }
}

/// An error and its causes on one line (a cause already in the text is not repeated).
pub(crate) fn error_chain(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// The callback URL must be the one the upstream was told (`redirectURI`).
pub(crate) fn check_callback(redirect_uri: &str, callback_url: &str) -> Result<(), ConnectorError> {
    if callback_url == redirect_uri {
        Ok(())
    } else {
        Err(ConnectorError::Config(format!(
            "the callback URL `{callback_url}` is not the connector's redirectURI `{redirect_uri}`"
        )))
    }
}

/// The authorization code in `upstream`'s redirect back (`query` without `?`), or why there is
/// none: the user declining, an `error` in `config_errors` (the operator's to fix), any other
/// `error`, or no code at all.
pub(crate) fn callback_code(
    upstream: &str,
    query: &str,
    config_errors: &[&str],
) -> Result<String, ConnectorError> {
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if let Some(error) = params.get("error") {
        let text = describe(error, params.get("error_description").map(String::as_str));
        return Err(if error == "access_denied" {
            ConnectorError::AccessDenied(format!(
                "{upstream} did not authorize the sign-in ({text})"
            ))
        } else if config_errors.contains(&error.as_str()) {
            ConnectorError::Config(format!("{upstream} refused the sign-in: {text}"))
        } else {
            ConnectorError::BadCallback(format!("{upstream} refused the sign-in: {text}"))
        });
    }
    params
        .get("code")
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or_else(|| {
            ConnectorError::BadCallback(format!(
                "{upstream} sent the browser back without an authorization code"
            ))
        })
}

/// A key set to something other than false, null or empty.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

/// Dex's `groups` filter: the user's groups that are in `allowed`, in the user's order.
pub(crate) fn filter_groups(groups: &[String], allowed: &[String]) -> Vec<String> {
    groups
        .iter()
        .filter(|g| allowed.contains(g))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_text_is_bounded_and_printable() {
        let long = "x".repeat(500);
        let text = describe("access_denied", Some(&format!("a\u{7}b{long}")));
        assert!(text.starts_with("access_denied: ab"));
        assert!(text.len() < 230, "{}", text.len());
        assert_eq!(printable("plain\u{7} text"), "plain text");
        assert_eq!(printable("\u{7}"), "(no message)");
    }

    #[test]
    fn callbacks_give_the_code_or_say_why_not() {
        assert_eq!(
            callback_code("GitLab", "code=abc&state=s", &[]).unwrap(),
            "abc"
        );
        assert!(matches!(
            callback_code("GitLab", "error=access_denied&error_description=no", &[]),
            Err(ConnectorError::AccessDenied(m)) if m == "GitLab did not authorize the sign-in (access_denied: no)"
        ));
        assert!(matches!(
            callback_code(
                "GitHub",
                "error=application_suspended",
                &["application_suspended"]
            ),
            Err(ConnectorError::Config(_))
        ));
        assert!(matches!(
            callback_code("GitHub", "error=application_suspended", &[]),
            Err(ConnectorError::BadCallback(_))
        ));
        assert!(matches!(
            callback_code("GitLab", "code=&state=s", &[]),
            Err(ConnectorError::BadCallback(m)) if m.contains("without an authorization code")
        ));
        assert!(check_callback("https://a/callback", "https://a/callback").is_ok());
        assert!(matches!(
            check_callback("https://a/callback", "https://b/callback"),
            Err(ConnectorError::Config(_))
        ));
    }

    #[test]
    fn the_groups_filter_keeps_the_users_order() {
        let groups = ["b".to_string(), "a".into(), "c".into()];
        assert_eq!(
            filter_groups(&groups, &["a".into(), "b".into()]),
            vec!["b", "a"]
        );
    }
}
