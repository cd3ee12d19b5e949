//! The upstream's discovery document and signing keys, read over HTTP.

use josekit::jwk::Jwk;
use serde::Deserialize;
use serde_json::Value;

use super::id_token::parse_jwks;

/// The parts of the discovery document the connector uses.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    #[serde(default)]
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// Checked where used (access-token exchange), so that an odd one does not stop logins.
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    pub jwks_uri: String,
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// Why the discovery document or the keys could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("request failed")]
    Request(#[from] reqwest::Error),
    #[error("{url} answered HTTP {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url} answered with content type `{content_type}`, not JSON")]
    NotJson { url: String, content_type: String },
    #[error("{url} answered unreadable JSON")]
    Parse {
        url: String,
        #[source]
        source: serde_path_to_error::Error<serde_json::Error>,
    },
    #[error("the discovery document names the issuer `{found}`, not `{expected}`")]
    IssuerMismatch { expected: String, found: String },
    #[error("`{field}` in the discovery document is not an http(s) URL")]
    BadEndpoint { field: &'static str },
    #[error("{url} is not a JWKS document (no `keys` list)")]
    NotJwks { url: String },
}

/// GETs `url` and reads its JSON body as `T`. A reply without a content type is read too (as
/// the OpenID discovery libraries do); one with another content type than `accepted` is not.
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    accepted: &[&str],
) -> Result<T, FetchError> {
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::Status {
            url: url.to_string(),
            status,
        });
    }
    if let Some(content_type) = response.headers().get(reqwest::header::CONTENT_TYPE) {
        let text = content_type.to_str().unwrap_or_default();
        let essence = text
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !accepted.contains(&essence.as_str()) {
            return Err(FetchError::NotJson {
                url: url.to_string(),
                content_type: text.chars().take(100).collect(),
            });
        }
    }
    let body = response.bytes().await?;
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&body)).map_err(
        |source| FetchError::Parse {
            url: url.to_string(),
            source,
        },
    )
}

pub(crate) fn is_http_url(value: &str) -> bool {
    url::Url::parse(value).is_ok_and(|u| matches!(u.scheme(), "https" | "http"))
}

/// Reads `issuer`'s discovery document (which must name `issuer` exactly).
pub(crate) async fn discover(http: &reqwest::Client, issuer: &str) -> Result<Metadata, FetchError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.strip_suffix('/').unwrap_or(issuer)
    );
    let metadata: Metadata = get_json(http, &url, &["application/json"]).await?;
    if metadata.issuer != issuer {
        return Err(FetchError::IssuerMismatch {
            expected: issuer.to_string(),
            found: metadata.issuer.chars().take(200).collect(),
        });
    }
    let endpoints = [
        (
            "authorization_endpoint",
            Some(&metadata.authorization_endpoint),
        ),
        ("token_endpoint", metadata.token_endpoint.as_ref()),
        ("userinfo_endpoint", metadata.userinfo_endpoint.as_ref()),
        ("jwks_uri", Some(&metadata.jwks_uri)),
    ];
    for (field, value) in endpoints {
        if value.is_some_and(|v| !is_http_url(v)) {
            return Err(FetchError::BadEndpoint { field });
        }
    }
    Ok(metadata)
}

/// Reads the upstream's signing keys from `jwks_uri`.
pub(crate) async fn fetch_keys(
    http: &reqwest::Client,
    jwks_uri: &str,
) -> Result<Vec<Jwk>, FetchError> {
    let document: Value = get_json(
        http,
        jwks_uri,
        &["application/json", "application/jwk-set+json"],
    )
    .await?;
    parse_jwks(&document).ok_or_else(|| FetchError::NotJwks {
        url: jwks_uri.to_string(),
    })
}
