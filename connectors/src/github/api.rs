//! The few GitHub REST endpoints the connector reads, through octocrab, with one user's token.
//!
//! octocrab is used for its request plumbing (base URL, pagination links, error bodies that
//! keep their headers); the HTTP stack under it is lanyard's own so that `rootCA`, timeouts
//! and "never follow redirects" apply, and so that the token is only ever sent to the API host.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, ACCEPT, USER_AGENT};
use http::{StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use octocrab::service::middleware::auth_header::AuthHeaderLayer;
use octocrab::service::middleware::base_uri::BaseUriLayer;
use octocrab::service::middleware::extra_headers::ExtraHeadersLayer;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder, Page};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// GitHub answers at most 100 items per page.
const PER_PAGE: &str = "100";
/// 100 pages of 100: far beyond any real membership list, and a bound on a looping `Link`.
const MAX_PAGES: usize = 100;

#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    pub login: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Email {
    pub email: String,
    #[serde(default)]
    pub verified: bool,
    #[serde(default)]
    pub primary: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Team {
    pub name: String,
    pub slug: String,
    pub organization: OrgRef,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrgRef {
    pub login: String,
}

/// Why a GitHub API call did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("GitHub API rate limit exceeded on {endpoint}: {detail}")]
    RateLimited { endpoint: String, detail: String },
    /// The token was revoked, expired, or the user removed the app's authorization.
    #[error("GitHub rejected the access token on {endpoint} (401 Unauthorized): {message}")]
    Unauthorized { endpoint: String, message: String },
    #[error("GitHub answered {endpoint} with {status}: {message}")]
    Status {
        endpoint: String,
        status: StatusCode,
        message: String,
    },
    #[error("GitHub did not answer {endpoint} within {0} seconds", timeout.as_secs())]
    Timeout { endpoint: String, timeout: Duration },
    #[error("cannot reach GitHub for {endpoint}: {reason}")]
    Transport { endpoint: String, reason: String },
    #[error("unexpected answer from GitHub on {endpoint}: {reason}")]
    Malformed { endpoint: String, reason: String },
}

/// The shared HTTP client under every user's octocrab instance.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, OctoBody>;

pub fn http_client(tls: rustls::ClientConfig, connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        // The API base is https for github.com and hostName; only an explicitly configured
        // base URL (tests, a local GitHub-compatible server) may be plain http.
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(hyper_util::rt::TokioExecutor::new()).build(https)
}

/// One user's view of the GitHub API.
pub struct Api {
    crab: Octocrab,
    base: Uri,
    timeout: Duration,
}

impl Api {
    /// `base` is the API root (`https://api.github.com`, `https://HOST/api/v3`).
    pub fn new(
        http: &HttpClient,
        base: &Uri,
        token: &str,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError::Malformed {
                endpoint: "/login/oauth/access_token".into(),
                reason: "the access token is not a valid header value".into(),
            })?;
        auth.set_sensitive(true);
        let headers: Vec<(HeaderName, HeaderValue)> = vec![
            (USER_AGENT, HeaderValue::from_static("lanyard")),
            (
                ACCEPT,
                HeaderValue::from_static("application/vnd.github+json"),
            ),
        ];
        let crab = OctocrabBuilder::new_empty()
            .with_service(http.clone())
            .with_layer(&BaseUriLayer::new(base.clone()))
            .with_layer(&ExtraHeadersLayer::new(Arc::new(headers)))
            // Outermost: the token goes only to requests for the API host, never to a host a
            // pagination link might name.
            .with_layer(&AuthHeaderLayer::new(
                Some(auth),
                base.clone(),
                base.clone(),
            ))
            .with_auth(AuthState::None)
            .build()
            .map_err(|never| match never {})?;
        Ok(Self {
            crab,
            base: base.clone(),
            timeout,
        })
    }

    async fn timed<T>(
        &self,
        endpoint: &str,
        call: impl Future<Output = Result<T, octocrab::Error>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(|e| classify(endpoint, e)),
            Err(_) => Err(ApiError::Timeout {
                endpoint: endpoint.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    pub async fn user(&self) -> Result<User, ApiError> {
        self.timed("/user", self.crab.get("/user", None::<&()>))
            .await
    }

    pub async fn emails(&self) -> Result<Vec<Email>, ApiError> {
        self.all("/user/emails").await
    }

    pub async fn teams(&self) -> Result<Vec<Team>, ApiError> {
        self.all("/user/teams").await
    }

    /// The logins of the organizations the user belongs to (as far as the token may see).
    pub async fn orgs(&self) -> Result<Vec<String>, ApiError> {
        Ok(self
            .all::<OrgRef>("/user/orgs")
            .await?
            .into_iter()
            .map(|o| o.login)
            .collect())
    }

    /// Whether `login` is a member of `org`. Asked by the member about themselves, GitHub
    /// answers 204 for a member and 404 (or a 302 to the public list) otherwise; 404 is also
    /// the answer when the organization has not granted this OAuth app access.
    pub async fn is_member(&self, org: &str, login: &str) -> Result<bool, ApiError> {
        let endpoint = format!("/orgs/{}/members/{}", segment(org), segment(login));
        let status = self
            .timed(&endpoint, async {
                let response = self.crab._get(endpoint.as_str()).await?;
                match response.status() {
                    StatusCode::NO_CONTENT | StatusCode::NOT_FOUND | StatusCode::FOUND => {
                        Ok(response.status())
                    }
                    _ => octocrab::map_github_error(response)
                        .await
                        .map(|r| r.status()),
                }
            })
            .await?;
        match status {
            StatusCode::NO_CONTENT => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::FOUND => Ok(false),
            other => Err(ApiError::Status {
                endpoint,
                status: other,
                message: "expected 204 (member) or 404 (not a member)".into(),
            }),
        }
    }

    /// Every item of a list endpoint, following `Link: rel="next"` page by page.
    async fn all<T: DeserializeOwned>(&self, endpoint: &str) -> Result<Vec<T>, ApiError> {
        let mut page: Page<T> = self
            .timed(
                endpoint,
                self.crab.get(endpoint, Some(&[("per_page", PER_PAGE)])),
            )
            .await?;
        let mut items = page.take_items();
        let mut pages = 1;
        while let Some(next) = page.next.take() {
            if pages >= MAX_PAGES {
                return Err(ApiError::Malformed {
                    endpoint: endpoint.to_string(),
                    reason: format!("more than {MAX_PAGES} pages"),
                });
            }
            if next.scheme() != self.base.scheme() || next.authority() != self.base.authority() {
                return Err(ApiError::Malformed {
                    endpoint: endpoint.to_string(),
                    reason: format!("the next page link points away from the API host: {next}"),
                });
            }
            let Some(next_page) = self
                .timed(endpoint, self.crab.get_page::<T>(&Some(next)))
                .await?
            else {
                break;
            };
            page = next_page;
            items.extend(page.take_items());
            pages += 1;
        }
        Ok(items)
    }
}

/// A path segment, percent-encoded (organization and user logins are plain, but the config
/// is typed by people).
fn segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Turns an octocrab error into what the connector reports, reading GitHub's rate-limit
/// headers: `x-ratelimit-remaining: 0` with `x-ratelimit-reset` (primary limit) or
/// `retry-after` (secondary limit), on a 403 or 429.
fn classify(endpoint: &str, err: octocrab::Error) -> ApiError {
    let endpoint = endpoint.to_string();
    match err {
        octocrab::Error::GitHub { source, .. } => {
            let status = source.status_code;
            let header = |name: &str| {
                source
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .map(str::to_string)
            };
            let retry_after = header("retry-after");
            let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
            if matches!(
                status,
                StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
            ) && (exhausted || retry_after.is_some())
            {
                let mut detail = match header("x-ratelimit-limit") {
                    Some(limit) if exhausted => {
                        format!("all {limit} requests of the current window are used")
                    }
                    _ => format!("{} {}", status.as_u16(), source.message),
                };
                if let Some(reset) = source.rate_limit_reset_at() {
                    detail.push_str(&format!("; the limit resets at {reset}"));
                } else if let Some(reset) = header("x-ratelimit-reset") {
                    detail.push_str(&format!("; the limit resets at unix time {reset}"));
                }
                if let Some(seconds) = retry_after {
                    detail.push_str(&format!("; GitHub asks to retry after {seconds} seconds"));
                }
                return ApiError::RateLimited { endpoint, detail };
            }
            if status == StatusCode::UNAUTHORIZED {
                return ApiError::Unauthorized {
                    endpoint,
                    message: source.message,
                };
            }
            ApiError::Status {
                endpoint,
                status,
                message: source.message,
            }
        }
        octocrab::Error::Serde { source, .. } => ApiError::Malformed {
            endpoint,
            reason: source.to_string(),
        },
        octocrab::Error::Json { source, .. } => ApiError::Malformed {
            endpoint,
            reason: source.to_string(),
        },
        other => ApiError::Transport {
            endpoint,
            reason: crate::upstream::error_chain(&other),
        },
    }
}
