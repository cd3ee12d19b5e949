//! The browser side of the flows, one file per step: the request at /auth (or a device's user
//! code), the login at a connector, the upstream's callback, the approval, and the finish
//! that answers the client (query, fragment or form post) or a waiting device. What every
//! step shares lives here.

mod approval;
mod callback;
mod finish;
mod login;
mod request;

use axum::http::StatusCode;

use crate::storage::{AuthRequest, Session};

use super::error::{ErrorCode, StorageFault};
use super::ratelimit::Retry;
use super::redirect::append_query;
use super::secrets::{constant_time_eq, hmac_sha256, random_token, secret_token_key, sha256_hex};
use super::{ClientInfo, ConnectorEntry, Provider};

/// How the answer travels back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Query,
    Fragment,
    /// An auto-submitting HTML form (OAuth 2.0 Form Post Response Mode).
    FormPost,
}

impl ResponseMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "query" => Some(Self::Query),
            "fragment" => Some(Self::Fragment),
            "form_post" => Some(Self::FormPost),
            _ => None,
        }
    }
}

/// An answer for the client at its (validated) redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    pub redirect_uri: String,
    pub mode: ResponseMode,
    pub params: Vec<(String, String)>,
}

impl ClientResponse {
    /// The redirect URL for query and fragment modes.
    pub fn url(&self) -> String {
        let pairs: Vec<(&str, &str)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match self.mode {
            ResponseMode::Fragment => {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                for (k, v) in &pairs {
                    query.append_pair(k, v);
                }
                format!("{}#{}", self.redirect_uri, query.finish())
            }
            _ => append_query(&self.redirect_uri, &pairs),
        }
    }
}

/// Where the browser goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An issuer-relative page of lanyard's.
    Page(String),
    /// Back to the client.
    Client(ClientResponse),
    /// A device login finished: tell the person to go back to their device.
    DeviceDone { approved: bool },
}

/// A failure at some step of the browser flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Shown as an HTML page: the client or its redirect URI cannot be trusted with a redirect,
    /// or the login itself is gone.
    Page {
        status: StatusCode,
        title: &'static str,
        message: String,
    },
    /// Sent back to the client's (validated) redirect URI as `error=...`.
    Client(ClientResponse),
    /// Too many failed attempts: 429 with Retry-After.
    RateLimited { retry_after_secs: u64 },
    /// Storage failed: a 503 page, which carries the fault for the middleware to log.
    Storage(StorageFault),
}

impl AuthorizeError {
    pub(crate) fn page(
        status: StatusCode,
        title: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self::Page {
            status,
            title,
            message: message.into(),
        }
    }

    pub(crate) fn login_gone() -> Self {
        Self::page(
            StatusCode::BAD_REQUEST,
            "Login expired",
            "This login is unknown or has expired. Go back to the application and sign in again.",
        )
    }

    pub(crate) fn rate_limited(retry: Retry) -> Self {
        Self::RateLimited {
            retry_after_secs: retry.retry_after_secs(),
        }
    }
}

impl From<crate::storage::StorageError> for AuthorizeError {
    fn from(err: crate::storage::StorageError) -> Self {
        Self::Storage(StorageFault::from(&err))
    }
}

/// What a step decided, plus the cookies the browser must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub next: Step,
    /// The browser-binding cookie value (reused when the browser sent one).
    pub browser_cookie: Option<String>,
    /// A new sign-in session cookie value.
    pub session_cookie: Option<String>,
}

/// What the password form needs to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginForm {
    pub auth_request_id: String,
    pub connector_id: String,
    pub connector_name: String,
    pub prompt: String,
    pub csrf_token: String,
    pub client_name: String,
    pub login_hint: String,
}

/// What the connector chooser shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorChoices {
    /// `(id, name)` of each connector the client may use, in config order.
    pub connectors: Vec<(String, String)>,
    /// The ids among them that cannot serve now (failed to open, upstream unreachable).
    pub unavailable: Vec<String>,
}

/// What `/auth/{connector}` leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorLogin {
    /// lanyard's own username/password form.
    Form(LoginForm),
    /// The upstream's login page (an absolute URL).
    Upstream(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOutcome {
    Done(Outcome),
    /// Wrong username or password: show the form again.
    Rejected(LoginForm),
}

/// What the approval page shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalView {
    pub auth_request_id: String,
    pub csrf_token: String,
    pub client_name: String,
    pub username: String,
    pub scopes: Vec<String>,
}

impl Provider {
    /// An error for the client at a validated redirect URI, carrying `state` and `iss`.
    pub(crate) fn client_error(
        &self,
        redirect_uri: &str,
        mode: ResponseMode,
        state: Option<&str>,
        code: ErrorCode,
        description: &str,
    ) -> ClientResponse {
        let mut params = vec![
            ("error".to_string(), code.as_str().to_string()),
            ("error_description".to_string(), description.to_string()),
        ];
        if let Some(state) = state {
            params.push(("state".into(), state.to_string()));
        }
        params.push(("iss".into(), self.settings.issuer_str().to_string()));
        ClientResponse {
            redirect_uri: redirect_uri.to_string(),
            mode,
            params,
        }
    }

    /// The connectors this client may sign people in with (those that only verify
    /// token-exchange subject tokens sign nobody in).
    pub(crate) async fn connectors_for(
        &self,
        client: &ClientInfo,
    ) -> Result<Vec<ConnectorEntry>, crate::storage::StorageError> {
        Ok(self
            .all_connectors()
            .await?
            .into_iter()
            .filter(|c| !matches!(c.kind, super::ConnectorKind::TokenExchangeOnly))
            .filter(|c| {
                client.allowed_connectors.is_empty() || client.allowed_connectors.contains(&c.id)
            })
            .collect())
    }

    /// A live sign-in session from its cookie.
    pub(crate) async fn live_session(
        &self,
        cookie: Option<&str>,
    ) -> Result<Option<Session>, crate::storage::StorageError> {
        let Some(cookie) = cookie.filter(|c| !c.is_empty() && c.len() <= 128) else {
            return Ok(None);
        };
        let now = self.now();
        Ok(self
            .storage
            .get_session(&secret_token_key(cookie))
            .await?
            .filter(|s| s.revoked_at.is_none() && s.expires_at > now))
    }

    /// Loads an auth request for the browser that started it.
    pub(crate) async fn load_request(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<AuthRequest, AuthorizeError> {
        let request = self
            .storage
            .get_auth_request(req_id)
            .await?
            .filter(|r| r.expires_at > self.now())
            .ok_or_else(AuthorizeError::login_gone)?;
        let bound = browser_cookie
            .map(|c| constant_time_eq(&sha256_hex(c), &request.browser_binding))
            .unwrap_or(false);
        if !bound {
            return Err(AuthorizeError::page(
                StatusCode::FORBIDDEN,
                "Login started elsewhere",
                "This login was started in another browser or its cookie is missing. Go back to the application and sign in again.",
            ));
        }
        Ok(request)
    }

    pub(crate) fn check_csrf(request: &AuthRequest, csrf: &str) -> Result<(), AuthorizeError> {
        if constant_time_eq(csrf, &request.csrf_token) {
            Ok(())
        } else {
            Err(AuthorizeError::page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form's security token does not match. Reload the page and try again.",
            ))
        }
    }

    pub(crate) async fn request_client(
        &self,
        request: &AuthRequest,
    ) -> Result<ClientInfo, AuthorizeError> {
        self.clients
            .find(&request.client_id)
            .await?
            .ok_or_else(AuthorizeError::login_gone)
    }

    /// A connector the request's client may use and the request did not rule out.
    pub(crate) async fn usable_connector(
        &self,
        request: &AuthRequest,
        connector_id: &str,
    ) -> Result<(ClientInfo, ConnectorEntry), AuthorizeError> {
        let client = self.request_client(request).await?;
        let usable = self
            .connectors_for(&client)
            .await?
            .into_iter()
            .find(|c| c.id == connector_id)
            .filter(|_| {
                request
                    .params
                    .connector_id
                    .as_deref()
                    .is_none_or(|id| id == connector_id)
            });
        match usable {
            Some(c) if c.health.failed_at_open() => {
                // Why it failed is in the log; the page need not show file paths or settings.
                tracing::warn!(connector = %c.id, "login refused: the connector failed to open");
                Err(AuthorizeError::page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in method unavailable",
                    format!(
                        "{} is unavailable: it could not be started. Choose another sign-in method or contact your administrator.",
                        c.name
                    ),
                ))
            }
            Some(c) => Ok((client, c)),
            None => Err(AuthorizeError::page(
                StatusCode::NOT_FOUND,
                "Unknown connector",
                "This sign-in method does not exist or is not allowed for this application.",
            )),
        }
    }
}

fn request_mode(request: &AuthRequest) -> ResponseMode {
    request
        .params
        .response_mode
        .as_deref()
        .and_then(ResponseMode::parse)
        .unwrap_or(ResponseMode::Query)
}

/// lanyard's own pages sign people in as a client of lanyard; they do not ask the user to
/// approve themselves.
fn is_internal_client(client_id: &str) -> bool {
    client_id == super::clients::KUBECONFIG_CLIENT
}

impl Provider {
    /// A browser-binding cookie value: the browser's own when lanyard issued it, else a new
    /// one. A value lanyard did not issue (planted by a sibling site or a script) is never
    /// adopted, so whoever planted it cannot know the binding of the logins this browser
    /// starts.
    pub fn browser_cookie_or_new(&self, existing: Option<&str>) -> String {
        let key = self.keys.derived_key(BROWSER_COOKIE_KEY);
        match existing {
            Some(value) if issued_browser_cookie(&key, value) => value.to_string(),
            _ => {
                let random = random_token(32);
                let mac = browser_cookie_mac(&key, &random);
                format!("{random}.{mac}")
            }
        }
    }
}

/// What the browser cookie's MAC key is derived for.
const BROWSER_COOKIE_KEY: &str = "lanyard browser-binding cookie";

fn browser_cookie_mac(key: &[u8; 32], random: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac_sha256(key, random.as_bytes()))
}

/// `random.mac` with the MAC lanyard computes for `random`.
fn issued_browser_cookie(key: &[u8; 32], value: &str) -> bool {
    value.split_once('.').is_some_and(|(random, mac)| {
        random.len() == 43 && constant_time_eq(mac, &browser_cookie_mac(key, random))
    })
}
