//! Reading OAuth parameters from a query string or form body. An empty value counts as
//! absent (RFC 6749 §3.1).

use std::collections::HashMap;

use super::error::OAuthError;

/// Parses a query string or form body. A parameter given twice is refused (RFC 6749 §3.1).
pub fn parse_unique_params(raw: &str) -> Result<HashMap<String, String>, String> {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if params.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter `{k}` is given more than once"));
        }
    }
    Ok(params)
}

/// A parameter's value, `None` when absent or empty.
pub fn optional<'a>(params: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    params
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A parameter the request cannot do without: `invalid_request` naming it when absent.
pub fn required<'a>(params: &'a HashMap<String, String>, key: &str) -> Result<&'a str, OAuthError> {
    optional(params, key).ok_or_else(|| OAuthError::invalid_request(format!("{key} is required")))
}
