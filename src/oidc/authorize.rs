//! The browser side of the code flow: /auth, the connector login, approval, and the redirect
//! back to the client with a code.

use std::collections::HashMap;

use axum::http::StatusCode;
use lanyard_connectors::{Identity, Scopes};

use crate::storage::{AuthCode, AuthRequest, AuthRequestParams, Grant, LoginResult, UserClaims};

use super::error::ErrorCode;
use super::redirect::redirect_uri_allowed;
use super::secrets::{constant_time_eq, is_valid_s256_challenge, random_token, sha256_hex};
use super::{
    ClientInfo, ConnectorEntry, ConnectorKind, Provider, AUTH_CODE_TTL_SECS, SUPPORTED_SCOPES,
};

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
    Redirect { url: String },
}

impl AuthorizeError {
    fn page(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self::Page {
            status,
            title,
            message: message.into(),
        }
    }

    fn unavailable() -> Self {
        Self::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "lanyard cannot reach its storage right now. Try again in a moment.",
        )
    }

    fn login_gone() -> Self {
        Self::page(
            StatusCode::BAD_REQUEST,
            "Login expired",
            "This login is unknown or has expired. Go back to the application and sign in again.",
        )
    }
}

impl From<crate::storage::StorageError> for AuthorizeError {
    fn from(err: crate::storage::StorageError) -> Self {
        tracing::error!(error = %err, "storage error during login");
        Self::unavailable()
    }
}

/// What /auth decided: the login exists, and the browser goes on to `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedLogin {
    pub auth_request_id: String,
    /// Issuer-relative path of the next page.
    pub next: String,
    /// The value of the browser-binding cookie (reused when the browser sent one).
    pub browser_cookie: String,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordOutcome {
    /// Issuer-relative path or absolute client URL to send the browser to.
    Redirect(String),
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

/// Builds `base?k=v&...` (or `&` when `base` has a query), preserving `base` byte for byte.
pub fn append_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", query.finish())
}

pub fn identity_claims(identity: &Identity) -> UserClaims {
    UserClaims {
        user_id: identity.user_id.clone(),
        username: identity.username.clone(),
        preferred_username: identity.preferred_username.clone(),
        email: identity.email.clone(),
        email_verified: identity.email_verified,
        groups: identity.groups.clone(),
    }
}

pub fn scopes_of(scopes: &[String]) -> Scopes {
    Scopes {
        offline_access: scopes.iter().any(|s| s == "offline_access"),
        groups: scopes.iter().any(|s| s == "groups"),
    }
}

impl Provider {
    /// An error redirect to a validated redirect URI, carrying `state` and `iss` (RFC 9207).
    fn error_redirect(
        &self,
        redirect_uri: &str,
        state: Option<&str>,
        code: ErrorCode,
        description: &str,
    ) -> AuthorizeError {
        let mut pairs = vec![("error", code.as_str()), ("error_description", description)];
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", self.settings.issuer_str()));
        AuthorizeError::Redirect {
            url: append_query(redirect_uri, &pairs),
        }
    }

    /// The connectors this client may use.
    fn connectors_for(&self, client: &ClientInfo) -> Vec<&ConnectorEntry> {
        self.connectors
            .iter()
            .filter(|c| {
                client.allowed_connectors.is_empty() || client.allowed_connectors.contains(&c.id)
            })
            .collect()
    }

    /// /auth: validates the request and records it. Until the client and redirect URI are
    /// known good, errors are pages; after, they go back to the client.
    pub async fn start_authorization(
        &self,
        raw_query: &str,
        browser_cookie: Option<&str>,
    ) -> Result<StartedLogin, AuthorizeError> {
        let bad = |m: String| AuthorizeError::page(StatusCode::BAD_REQUEST, "Bad request", m);
        let params = parse_unique_params(raw_query).map_err(bad)?;
        let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());

        let client_id =
            get("client_id").ok_or_else(|| bad("The request has no client_id.".into()))?;
        let client = self.clients.find(client_id).await?.ok_or_else(|| {
            bad("Unknown client: the client_id is not registered with lanyard.".into())
        })?;
        let redirect_uri =
            get("redirect_uri").ok_or_else(|| bad("The request has no redirect_uri.".into()))?;
        if !redirect_uri_allowed(&client.redirect_uris, redirect_uri, client.public) {
            return Err(bad(
                "The redirect_uri is not registered for this client, so lanyard will not redirect to it."
                    .into(),
            ));
        }

        // From here on the redirect URI is trusted.
        let state = get("state");
        let fail = |code, d: &str| self.error_redirect(redirect_uri, state, code, d);

        if get("request").is_some() || get("request_uri").is_some() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "request objects are not supported",
            ));
        }
        let response_type = get("response_type")
            .ok_or_else(|| fail(ErrorCode::InvalidRequest, "response_type is required"))?;
        if response_type != "code" || !self.settings.response_types.iter().any(|t| t == "code") {
            return Err(fail(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is enabled",
            ));
        }
        if let Some(mode) = get("response_mode") {
            if mode != "query" {
                return Err(fail(ErrorCode::InvalidRequest, "unsupported response_mode"));
            }
        }

        let scopes: Vec<String> = get("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            return Err(fail(
                ErrorCode::InvalidScope,
                "the openid scope is required",
            ));
        }
        let unknown: Vec<&str> = scopes
            .iter()
            .map(String::as_str)
            .filter(|s| !SUPPORTED_SCOPES.contains(s))
            .collect();
        if !unknown.is_empty() {
            return Err(fail(
                ErrorCode::InvalidScope,
                &format!("unrecognized scope(s): {}", unknown.join(" ")),
            ));
        }

        let code_challenge = get("code_challenge");
        let method = get("code_challenge_method");
        match (code_challenge, method) {
            (None, None) if client.public => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "public clients must use PKCE (code_challenge with code_challenge_method=S256)",
                ))
            }
            (None, None) => {}
            (None, Some(_)) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge_method given without code_challenge",
                ))
            }
            (Some(_), m) if m != Some("S256") => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "only code_challenge_method=S256 is supported",
                ))
            }
            (Some(c), _) if !is_valid_s256_challenge(c) => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "code_challenge must be 43 base64url characters",
                ))
            }
            _ => {}
        }

        let allowed = self.connectors_for(&client);
        let connector_id = get("connector_id");
        if let Some(id) = connector_id {
            if !allowed.iter().any(|c| c.id == id) {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    "connector_id names no connector this client may use",
                ));
            }
        }
        if allowed.is_empty() {
            return Err(fail(
                ErrorCode::ServerError,
                "no connector is configured for this client",
            ));
        }

        let prompt = get("prompt");
        if prompt.is_some_and(|p| p.split(' ').any(|v| v == "none")) {
            // Without a sign-in session the user can only be known by showing a page.
            return Err(fail(ErrorCode::LoginRequired, "the user is not signed in"));
        }
        let max_age = match get("max_age") {
            Some(v) => Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                fail(
                    ErrorCode::InvalidRequest,
                    "max_age must be a non-negative integer",
                )
            })?),
            None => None,
        };

        let now = self.now();
        let browser_cookie = match browser_cookie {
            Some(c) if c.len() >= 32 && c.len() <= 64 => c.to_string(),
            _ => random_token(32),
        };
        let request = AuthRequest {
            id: random_token(16),
            client_id: client.id.clone(),
            params: AuthRequestParams {
                redirect_uri: redirect_uri.to_string(),
                response_type: response_type.to_string(),
                response_mode: get("response_mode").map(str::to_string),
                scopes,
                state: state.map(str::to_string),
                nonce: get("nonce").map(str::to_string),
                code_challenge: code_challenge.map(str::to_string),
                code_challenge_method: method.map(str::to_string),
                connector_id: connector_id.map(str::to_string),
                prompt: prompt.map(str::to_string),
                max_age,
                login_hint: get("login_hint").map(str::to_string),
            },
            csrf_token: random_token(32),
            browser_binding: sha256_hex(&browser_cookie),
            login: None,
            created_at: now,
            expires_at: now + self.settings.auth_request_ttl.as_secs() as i64,
        };
        self.storage.create_auth_request(&request).await?;

        let chosen = connector_id.or(
            if allowed.len() == 1 && !self.settings.always_show_login_screen {
                Some(allowed[0].id.as_str())
            } else {
                None
            },
        );
        let next = match chosen {
            Some(id) => format!("/auth/{}?req={}", id, request.id),
            None => format!("/login?req={}", request.id),
        };
        Ok(StartedLogin {
            auth_request_id: request.id,
            next,
            browser_cookie,
        })
    }

    /// Loads an auth request for the browser that started it.
    async fn load_request(
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

    fn check_csrf(request: &AuthRequest, csrf: &str) -> Result<(), AuthorizeError> {
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

    /// The connector chooser: the connectors the request's client may use.
    pub async fn connector_choices(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<Vec<(String, String)>, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        let client = self.request_client(&request).await?;
        Ok(self
            .connectors_for(&client)
            .into_iter()
            .map(|c| (c.id.clone(), c.name.clone()))
            .collect())
    }

    async fn request_client(&self, request: &AuthRequest) -> Result<ClientInfo, AuthorizeError> {
        self.clients
            .find(&request.client_id)
            .await?
            .ok_or_else(AuthorizeError::login_gone)
    }

    async fn password_connector(
        &self,
        request: &AuthRequest,
        connector_id: &str,
    ) -> Result<(ClientInfo, &ConnectorEntry), AuthorizeError> {
        let client = self.request_client(request).await?;
        let usable = self
            .connectors_for(&client)
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
            Some(c) => Ok((client, c)),
            None => Err(AuthorizeError::page(
                StatusCode::NOT_FOUND,
                "Unknown connector",
                "This sign-in method does not exist or is not allowed for this application.",
            )),
        }
    }

    /// The password form of a connector.
    pub async fn login_form(
        &self,
        req_id: &str,
        connector_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<LoginForm, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        let (client, connector) = self.password_connector(&request, connector_id).await?;
        let ConnectorKind::Password(password) = &connector.kind;
        Ok(LoginForm {
            auth_request_id: request.id.clone(),
            connector_id: connector.id.clone(),
            connector_name: connector.name.clone(),
            prompt: password.prompt().to_string(),
            csrf_token: request.csrf_token.clone(),
            client_name: client.display_name().to_string(),
        })
    }

    /// The password form was posted.
    pub async fn submit_password(
        &self,
        req_id: &str,
        connector_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        username: &str,
        password: &str,
    ) -> Result<PasswordOutcome, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        Self::check_csrf(&request, csrf)?;
        let (client, connector) = self.password_connector(&request, connector_id).await?;
        let ConnectorKind::Password(password_connector) = &connector.kind;
        let scopes = scopes_of(&request.params.scopes);
        let identity = password_connector
            .login(&scopes, username, password)
            .await
            .map_err(|err| {
                tracing::error!(connector = %connector.id, error = %err, "connector login failed");
                AuthorizeError::page(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in unavailable",
                    "The sign-in method failed. Try again later or contact your administrator.",
                )
            })?;
        let Some(identity) = identity else {
            return Ok(PasswordOutcome::Rejected(LoginForm {
                auth_request_id: request.id.clone(),
                connector_id: connector.id.clone(),
                connector_name: connector.name.clone(),
                prompt: password_connector.prompt().to_string(),
                csrf_token: request.csrf_token.clone(),
                client_name: client.display_name().to_string(),
            }));
        };
        let now = self.now();
        let login = LoginResult {
            connector_id: connector.id.clone(),
            claims: identity_claims(&identity),
            connector_data: identity
                .connector_data
                .as_ref()
                .map(|d| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d)),
            auth_time: now,
        };
        if !self
            .storage
            .complete_auth_request(&request.id, &login, now)
            .await?
        {
            return Err(AuthorizeError::login_gone());
        }
        if self.settings.skip_approval_screen {
            let mut request = request;
            request.login = Some(login);
            return self
                .issue_code(&request)
                .await
                .map(PasswordOutcome::Redirect);
        }
        Ok(PasswordOutcome::Redirect(format!(
            "/approval?req={}",
            request.id
        )))
    }

    /// The approval page for a logged-in request.
    pub async fn approval(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<ApprovalView, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        let Some(login) = &request.login else {
            return Err(AuthorizeError::login_gone());
        };
        let client = self.request_client(&request).await?;
        Ok(ApprovalView {
            auth_request_id: request.id.clone(),
            csrf_token: request.csrf_token.clone(),
            client_name: client.display_name().to_string(),
            username: if login.claims.email.is_empty() {
                login.claims.username.clone()
            } else {
                login.claims.email.clone()
            },
            scopes: request.params.scopes.clone(),
        })
    }

    /// The user approved or denied; returns the client URL to redirect to.
    pub async fn decide(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        approved: bool,
    ) -> Result<String, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        Self::check_csrf(&request, csrf)?;
        if request.login.is_none() {
            return Err(AuthorizeError::login_gone());
        }
        if !approved {
            self.storage.delete_auth_request(&request.id).await?;
            let AuthorizeError::Redirect { url } = self.error_redirect(
                &request.params.redirect_uri,
                request.params.state.as_deref(),
                ErrorCode::AccessDenied,
                "the user denied the request",
            ) else {
                return Err(AuthorizeError::login_gone());
            };
            return Ok(url);
        }
        self.issue_code(&request).await
    }

    /// Turns a logged-in request into a code (one transaction) and builds the client redirect.
    async fn issue_code(&self, request: &AuthRequest) -> Result<String, AuthorizeError> {
        let Some(login) = &request.login else {
            return Err(AuthorizeError::login_gone());
        };
        let now = self.now();
        let code = random_token(32);
        let auth_code = AuthCode {
            code_hash: sha256_hex(&code),
            redirect_uri: request.params.redirect_uri.clone(),
            code_challenge: request.params.code_challenge.clone(),
            code_challenge_method: request.params.code_challenge_method.clone(),
            grant: Grant {
                id: random_token(16),
                client_id: request.client_id.clone(),
                connector_id: login.connector_id.clone(),
                claims: login.claims.clone(),
                scopes: request.params.scopes.clone(),
                nonce: request.params.nonce.clone(),
                auth_time: login.auth_time,
                connector_data: login.connector_data.clone(),
                created_at: now,
                revoked_at: None,
            },
            created_at: now,
            expires_at: now + AUTH_CODE_TTL_SECS,
            redeemed_at: None,
        };
        if !self
            .storage
            .exchange_auth_request_for_code(&request.id, &auth_code, now)
            .await?
        {
            return Err(AuthorizeError::login_gone());
        }
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = request.params.state.as_deref() {
            pairs.push(("state", state));
        }
        pairs.push(("iss", self.settings.issuer_str()));
        Ok(append_query(&request.params.redirect_uri, &pairs))
    }
}
