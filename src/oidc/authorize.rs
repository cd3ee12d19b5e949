//! The browser side of the flows: /auth, sessions and prompts, the connector login, approval,
//! and the response to the client (query, fragment or form post) or to a waiting device.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_connectors::{ConnectorError, Identity, PasswordConnector, Scopes};

use crate::storage::{
    AuthCode, AuthRequest, AuthRequestParams, Grant, IssuedTokens, LoginResult, Session,
    UpstreamLogin, UserClaims,
};

use super::claims::{subject, AUDIENCE_SCOPE_PREFIX};
use super::error::ErrorCode;
use super::ratelimit::{PasswordAttempt, Retry};
use super::redirect::redirect_uri_allowed;
use super::secrets::{constant_time_eq, is_valid_s256_challenge, random_token, sha256_hex};
use super::{
    scope_supported, ClientInfo, ConnectorEntry, ConnectorKind, Provider, AUTH_CODE_TTL_SECS,
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

    fn unavailable() -> Self {
        Self::page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Temporarily unavailable",
            "lanyard cannot reach its storage right now. Try again in a moment.",
        )
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
        crate::metrics::count_storage_error();
        tracing::error!(error = %err, "storage error during login");
        Self::unavailable()
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

/// The parsed `response_type`: which artefacts go back through the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ResponseType {
    code: bool,
    id_token: bool,
    token: bool,
}

impl ResponseType {
    fn parse(s: &str) -> Option<Self> {
        let mut rt = Self {
            code: false,
            id_token: false,
            token: false,
        };
        for part in s.split(' ').filter(|p| !p.is_empty()) {
            let slot = match part {
                "code" => &mut rt.code,
                "id_token" => &mut rt.id_token,
                "token" => &mut rt.token,
                _ => return None,
            };
            if *slot {
                return None;
            }
            *slot = true;
        }
        (rt.code || rt.id_token || rt.token).then_some(rt)
    }

    /// Tokens in the front channel: implicit or hybrid.
    fn front_channel(self) -> bool {
        self.id_token || self.token
    }
}

impl Provider {
    /// An error for the client at a validated redirect URI, carrying `state` and `iss`.
    fn client_error(
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

    /// The connectors this client may use.
    pub(crate) fn connectors_for(&self, client: &ClientInfo) -> Vec<&ConnectorEntry> {
        self.connectors
            .iter()
            .filter(|c| {
                client.allowed_connectors.is_empty() || client.allowed_connectors.contains(&c.id)
            })
            .collect()
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
            .get_session(&sha256_hex(cookie))
            .await?
            .filter(|s| s.revoked_at.is_none() && s.expires_at > now))
    }

    /// Checks scopes: `openid` required, each one known, peers trusting the client.
    pub(crate) async fn check_scopes_for(
        &self,
        client: &ClientInfo,
        scopes: &[String],
    ) -> Result<(), String> {
        if !scopes.iter().any(|s| s == "openid") {
            return Err("the openid scope is required".into());
        }
        let unknown: Vec<&str> = scopes
            .iter()
            .map(String::as_str)
            .filter(|s| !scope_supported(s))
            .collect();
        if !unknown.is_empty() {
            return Err(format!("unrecognized scope(s): {}", unknown.join(" ")));
        }
        for peer in scopes
            .iter()
            .filter_map(|s| s.strip_prefix(AUDIENCE_SCOPE_PREFIX))
        {
            if peer == client.id {
                continue;
            }
            let trusted = match self.clients.find(peer).await {
                Ok(Some(p)) => p.trusted_peers.iter().any(|t| t == &client.id),
                _ => false,
            };
            if !trusted {
                return Err(format!(
                    "client {peer} does not list this client in its trustedPeers"
                ));
            }
        }
        Ok(())
    }

    /// /auth: validates the request and records it. Until the client and redirect URI are
    /// known good, errors are pages; after, they go back to the client.
    pub async fn start_authorization(
        &self,
        raw_query: &str,
        browser_cookie: Option<&str>,
        session_cookie: Option<&str>,
    ) -> Result<Outcome, AuthorizeError> {
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
        let response_type = get("response_type").and_then(ResponseType::parse);
        let default_mode = match response_type {
            Some(rt) if rt.front_channel() => ResponseMode::Fragment,
            _ => ResponseMode::Query,
        };
        let requested_mode = get("response_mode").map(|m| ResponseMode::parse(m).ok_or(m));
        let mode = match requested_mode {
            Some(Ok(m)) => m,
            _ => default_mode,
        };
        let fail = |code, d: &str| {
            AuthorizeError::Client(self.client_error(redirect_uri, mode, state, code, d))
        };
        if let Some(Err(_)) = requested_mode {
            return Err(fail(ErrorCode::InvalidRequest, "unsupported response_mode"));
        }
        if get("request").is_some() || get("request_uri").is_some() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "request objects are not supported",
            ));
        }
        let Some(rt) = response_type else {
            return Err(fail(
                if get("response_type").is_some() {
                    ErrorCode::UnsupportedResponseType
                } else {
                    ErrorCode::InvalidRequest
                },
                "response_type must be code (or an enabled implicit or hybrid type)",
            ));
        };
        let enabled = |t: &str| self.settings.response_types.iter().any(|e| e == t);
        if (rt.code && !enabled("code"))
            || (rt.id_token && !enabled("id_token"))
            || (rt.token && !enabled("token"))
        {
            return Err(fail(
                ErrorCode::UnsupportedResponseType,
                "this response_type is not enabled in oauth2.responseTypes",
            ));
        }
        if rt.front_channel() && mode == ResponseMode::Query {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "tokens are never sent in the query: use fragment or form_post",
            ));
        }
        if rt.id_token && get("nonce").is_none() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "nonce is required when an ID token is returned from /auth",
            ));
        }

        let scopes: Vec<String> = get("scope")
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if let Err(msg) = self.check_scopes_for(&client, &scopes).await {
            return Err(fail(ErrorCode::InvalidScope, &msg));
        }

        let code_challenge = get("code_challenge");
        let method = get("code_challenge_method");
        match (code_challenge, method) {
            (None, None) if client.public && rt.code => {
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

        let prompts: Vec<&str> = get("prompt")
            .map(|p| p.split(' ').collect())
            .unwrap_or_default();
        if prompts.contains(&"none") && prompts.len() > 1 {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "prompt=none cannot be combined",
            ));
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
        let hint_subject = match get("id_token_hint") {
            Some(hint) => Some(self.id_token_hint_subject(hint).ok_or_else(|| {
                fail(
                    ErrorCode::InvalidRequest,
                    "id_token_hint is not an ID token lanyard issued",
                )
            })?),
            None => None,
        };

        // A sign-in session spares the password, unless the client asks for a fresh login,
        // the login is older than max_age, or it is someone else's.
        let now = self.now();
        let session = if prompts.contains(&"login") {
            None
        } else {
            self.live_session(session_cookie).await?.filter(|s| {
                allowed.iter().any(|c| c.id == s.connector_id)
                    && connector_id.is_none_or(|id| id == s.connector_id)
                    && max_age.is_none_or(|m| now - s.auth_time <= m)
            })
        };
        let session = match (&session, &hint_subject) {
            (Some(s), Some(sub)) => {
                let grant_like = Grant {
                    id: String::new(),
                    client_id: client.id.clone(),
                    connector_id: s.connector_id.clone(),
                    claims: s.claims.clone(),
                    scopes: Vec::new(),
                    nonce: None,
                    auth_time: s.auth_time,
                    connector_data: None,
                    created_at: now,
                    revoked_at: None,
                };
                if subject(&grant_like) == *sub {
                    session
                } else {
                    None
                }
            }
            _ => session,
        };
        let needs_consent = (!self.settings.skip_approval_screen || prompts.contains(&"consent"))
            && !is_internal_client(&client.id);
        if prompts.contains(&"none") {
            if session.is_none() {
                return Err(fail(ErrorCode::LoginRequired, "the user is not signed in"));
            }
            if needs_consent {
                return Err(fail(
                    ErrorCode::ConsentRequired,
                    "the user must approve this client",
                ));
            }
        }

        let browser_cookie = self.browser_cookie_or_new(browser_cookie);
        let request = AuthRequest {
            id: random_token(16),
            client_id: client.id.clone(),
            params: AuthRequestParams {
                redirect_uri: redirect_uri.to_string(),
                response_type: get("response_type").unwrap_or("code").to_string(),
                response_mode: Some(
                    match mode {
                        ResponseMode::Query => "query",
                        ResponseMode::Fragment => "fragment",
                        ResponseMode::FormPost => "form_post",
                    }
                    .to_string(),
                ),
                scopes,
                state: state.map(str::to_string),
                nonce: get("nonce").map(str::to_string),
                code_challenge: code_challenge.map(str::to_string),
                code_challenge_method: method.map(str::to_string),
                connector_id: connector_id.map(str::to_string),
                prompt: get("prompt").map(str::to_string),
                max_age,
                login_hint: get("login_hint").map(str::to_string),
                device_user_code: None,
            },
            csrf_token: random_token(32),
            browser_binding: sha256_hex(&browser_cookie),
            login: session.as_ref().map(|s| LoginResult {
                connector_id: s.connector_id.clone(),
                claims: s.claims.clone(),
                connector_data: s.connector_data.clone(),
                auth_time: s.auth_time,
            }),
            upstream: None,
            created_at: now,
            expires_at: now + self.settings.auth_request_ttl.as_secs() as i64,
        };
        self.storage.create_auth_request(&request).await?;
        let next = self.after_create(&request, &allowed, needs_consent).await?;
        Ok(Outcome {
            next,
            browser_cookie: Some(browser_cookie),
            session_cookie: None,
        })
    }

    /// Where a freshly recorded request goes: straight on when a session already signed the
    /// user in, else to the login form or the connector chooser.
    async fn after_create(
        &self,
        request: &AuthRequest,
        allowed: &[&ConnectorEntry],
        needs_consent: bool,
    ) -> Result<Step, AuthorizeError> {
        if request.login.is_some() {
            if needs_consent {
                return Ok(Step::Page(format!("/approval?req={}", request.id)));
            }
            return self.finish(request).await;
        }
        let chosen = request.params.connector_id.as_deref().or(
            if allowed.len() == 1 && !self.settings.always_show_login_screen {
                Some(allowed[0].id.as_str())
            } else {
                None
            },
        );
        Ok(Step::Page(match chosen {
            Some(id) => format!("/auth/{}?req={}", id, request.id),
            None => format!("/login?req={}", request.id),
        }))
    }

    /// The `sub` of an ID token we issued.
    pub(crate) fn id_token_hint_subject(&self, hint: &str) -> Option<String> {
        let claims = self.id_token_hint_claims(hint)?;
        claims.get("sub")?.as_str().map(str::to_string)
    }

    /// The claims of an unexpired ID token we issued: signature against our own published
    /// keys (the algorithm is the key's, never the header's), our issuer, not expired.
    pub(crate) fn id_token_hint_claims(
        &self,
        hint: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let claims = self.keys.verify(hint).ok()?;
        let ours = claims.get("iss")?.as_str()? == self.settings.issuer_str();
        let live = claims.get("exp")?.as_i64()? > self.now();
        (ours && live).then_some(claims)
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

    /// A connector the request's client may use and the request did not rule out.
    async fn usable_connector(
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

    fn form_for(
        request: &AuthRequest,
        client: &ClientInfo,
        connector: &ConnectorEntry,
        password: &Arc<dyn PasswordConnector>,
    ) -> LoginForm {
        LoginForm {
            auth_request_id: request.id.clone(),
            connector_id: connector.id.clone(),
            connector_name: connector.name.clone(),
            prompt: password.prompt().to_string(),
            csrf_token: request.csrf_token.clone(),
            client_name: client.display_name().to_string(),
            login_hint: request.params.login_hint.clone().unwrap_or_default(),
        }
    }

    /// `/auth/{connector}`: the password form, or off to the upstream for a callback connector.
    pub async fn connector_login(
        &self,
        req_id: &str,
        connector_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<ConnectorLogin, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        let (client, connector) = self.usable_connector(&request, connector_id).await?;
        match &connector.kind {
            ConnectorKind::Password(password) => Ok(ConnectorLogin::Form(Self::form_for(
                &request, &client, connector, password,
            ))),
            ConnectorKind::Callback(upstream) => {
                if request.login.is_some() {
                    return Err(AuthorizeError::login_gone());
                }
                // The state names the login (so the callback can find it) and carries a
                // secret only this login's row knows the hash of.
                let secret = random_token(32);
                let state = format!("{}.{}", request.id, secret);
                let redirect = upstream
                    .login_url(
                        &scopes_of(&request.params.scopes),
                        &self.settings.endpoint("/callback"),
                        &state,
                    )
                    .await
                    .map_err(|err| self.connector_failure(&connector.id, err))?;
                let pending = UpstreamLogin {
                    connector_id: connector.id.clone(),
                    state_hash: sha256_hex(&secret),
                    pending: STANDARD.encode(&redirect.pending),
                };
                if !self
                    .storage
                    .begin_upstream_login(&request.id, &pending, self.now())
                    .await?
                {
                    return Err(AuthorizeError::login_gone());
                }
                Ok(ConnectorLogin::Upstream(redirect.url))
            }
        }
    }

    /// The upstream sent the browser back to `/callback` with `query`.
    pub async fn upstream_callback(
        &self,
        query: &str,
        browser_cookie: Option<&str>,
    ) -> Result<Outcome, AuthorizeError> {
        let state = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let Some((req_id, secret)) = state.split_once('.') else {
            return Err(AuthorizeError::page(
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The identity provider sent the browser back without this login's state. Go back to the application and sign in again.",
            ));
        };
        let request = self.load_request(req_id, browser_cookie).await?;
        let Some(upstream) = request.upstream.clone().filter(|u| {
            request.login.is_none() && constant_time_eq(&sha256_hex(secret), &u.state_hash)
        }) else {
            return Err(AuthorizeError::login_gone());
        };
        let (_, connector) = self
            .usable_connector(&request, &upstream.connector_id)
            .await?;
        let ConnectorKind::Callback(callback) = &connector.kind else {
            return Err(AuthorizeError::login_gone());
        };
        let pending = STANDARD.decode(&upstream.pending).unwrap_or_default();
        let identity = match callback
            .handle_callback(
                &scopes_of(&request.params.scopes),
                &self.settings.endpoint("/callback"),
                &pending,
                query,
            )
            .await
        {
            Ok(identity) => identity,
            Err(err) => return Err(self.connector_failure(&connector.id, err)),
        };
        self.metrics.record_login(&connector.id, "success");
        self.complete_login(request, connector, identity).await
    }

    /// A connector failed: the cause goes to the log, the person gets a page that says what
    /// they can do (and, when the upstream refused them, why).
    fn connector_failure(&self, connector_id: &str, err: ConnectorError) -> AuthorizeError {
        match err {
            ConnectorError::AccessDenied(reason) => {
                self.metrics.record_login(connector_id, "denied");
                tracing::info!(connector = %connector_id, %reason, "upstream login refused");
                AuthorizeError::page(
                    StatusCode::FORBIDDEN,
                    "Access denied",
                    format!("You signed in, but may not use this service: {reason}"),
                )
            }
            ConnectorError::BadCallback(reason) => {
                self.metrics.record_login(connector_id, "failure");
                tracing::warn!(connector = %connector_id, %reason, "bad callback from upstream");
                AuthorizeError::page(
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "The identity provider did not complete the sign-in. Go back to the application and try again.",
                )
            }
            err => {
                self.metrics.record_login(connector_id, "error");
                tracing::error!(connector = %connector_id, error = %err, "connector login failed");
                AuthorizeError::page(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in unavailable",
                    "The sign-in method failed. Try again later or contact your administrator.",
                )
            }
        }
    }

    /// The password form was posted. `client_addr` is the address the limits count against.
    #[allow(clippy::too_many_arguments)]
    pub async fn submit_password(
        &self,
        req_id: &str,
        connector_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        username: &str,
        password: &str,
        client_addr: &str,
    ) -> Result<PasswordOutcome, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        Self::check_csrf(&request, csrf)?;
        let (client, connector) = self.usable_connector(&request, connector_id).await?;
        let ConnectorKind::Password(password_connector) = &connector.kind else {
            return Err(AuthorizeError::page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Not a password sign-in",
                "This sign-in method does not take a password here.",
            ));
        };

        // The connector resolves the name first (no password checked), so that the budget is
        // per account however it was named; then the attempt counts, per account and per
        // address, before any hashing is spent.
        let pending = match password_connector.begin_login(username).await {
            Ok(pending) => pending,
            Err(err) => return Err(self.connector_failure(&connector.id, err)),
        };
        let account_key = format!("acct:{}:{}", connector.id, pending.account_key());
        let attempt = match PasswordAttempt::reserve(
            &self.login_limiter,
            &self.storage,
            account_key,
            format!("addr:{client_addr}"),
            self.now(),
        )
        .await?
        {
            Ok(attempt) => attempt,
            Err(retry) => {
                pending.abandon().await;
                self.metrics.record_login(&connector.id, "rate_limited");
                return Err(AuthorizeError::rate_limited(retry));
            }
        };

        let scopes = scopes_of(&request.params.scopes);
        let identity = match pending.check(&scopes, password).await {
            Ok(identity) => identity,
            Err(err) => {
                attempt
                    .not_checked(&self.login_limiter, &self.storage)
                    .await;
                return Err(self.connector_failure(&connector.id, err));
            }
        };
        let Some(identity) = identity else {
            self.metrics.record_login(&connector.id, "failure");
            return Ok(PasswordOutcome::Rejected(Self::form_for(
                &request,
                &client,
                connector,
                password_connector,
            )));
        };
        attempt.succeeded(&self.login_limiter, &self.storage);
        self.metrics.record_login(&connector.id, "success");
        Ok(PasswordOutcome::Done(
            self.complete_login(request, connector, identity).await?,
        ))
    }

    /// A connector vouched for the user: record the login on its request, start a sign-in
    /// session, then ask for approval or finish.
    async fn complete_login(
        &self,
        request: AuthRequest,
        connector: &ConnectorEntry,
        identity: Identity,
    ) -> Result<Outcome, AuthorizeError> {
        let now = self.now();
        // Connector data holds upstream tokens: it is sealed here, once, before anything
        // stores it (the auth request, the session, then grants copy it as it is).
        let connector_data = match &identity.connector_data {
            Some(data) => Some(
                self.keys
                    .seal_connector_data(&connector.id, data)
                    .map_err(|err| {
                        tracing::error!(connector = %connector.id, error = %err, "sealing connector data failed");
                        AuthorizeError::page(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "Sign-in failed",
                            "lanyard could not store this sign-in. Try again in a moment.",
                        )
                    })?,
            ),
            None => None,
        };
        let login = LoginResult {
            connector_id: connector.id.clone(),
            claims: identity_claims(&identity),
            connector_data,
            auth_time: now,
        };
        if !self
            .storage
            .complete_auth_request(&request.id, &login, now)
            .await?
        {
            return Err(AuthorizeError::login_gone());
        }
        let session_cookie = self.start_session(&login, now).await?;
        let needs_consent = (!self.settings.skip_approval_screen
            || request
                .params
                .prompt
                .as_deref()
                .is_some_and(|p| p.split(' ').any(|v| v == "consent")))
            && !is_internal_client(&request.client_id);
        let next = if needs_consent {
            Step::Page(format!("/approval?req={}", request.id))
        } else {
            let mut request = request;
            request.login = Some(login);
            self.finish(&request).await?
        };
        Ok(Outcome {
            next,
            browser_cookie: None,
            session_cookie,
        })
    }

    /// Records a sign-in session for the browser; `None` when sessions are off.
    async fn start_session(
        &self,
        login: &LoginResult,
        now: i64,
    ) -> Result<Option<String>, AuthorizeError> {
        let lifetime = self.settings.session_lifetime.as_secs() as i64;
        if lifetime == 0 {
            return Ok(None);
        }
        let cookie = random_token(32);
        self.storage
            .create_session(&Session {
                id_hash: sha256_hex(&cookie),
                connector_id: login.connector_id.clone(),
                claims: login.claims.clone(),
                connector_data: login.connector_data.clone(),
                auth_time: login.auth_time,
                created_at: now,
                expires_at: now + lifetime,
                revoked_at: None,
            })
            .await?;
        Ok(Some(cookie))
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

    /// The user approved or denied.
    pub async fn decide(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
        csrf: &str,
        approved: bool,
    ) -> Result<Step, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        Self::check_csrf(&request, csrf)?;
        if request.login.is_none() {
            return Err(AuthorizeError::login_gone());
        }
        if approved {
            return self.finish(&request).await;
        }
        self.storage.delete_auth_request(&request.id).await?;
        if let Some(user_code) = &request.params.device_user_code {
            self.storage
                .complete_device_request(user_code, None, self.now())
                .await?;
            return Ok(Step::DeviceDone { approved: false });
        }
        Ok(Step::Client(self.client_error(
            &request.params.redirect_uri,
            request_mode(&request),
            request.params.state.as_deref(),
            ErrorCode::AccessDenied,
            "the user denied the request",
        )))
    }

    /// The grant a finished login creates.
    fn grant_for(&self, request: &AuthRequest, login: &LoginResult, id: String, now: i64) -> Grant {
        Grant {
            id,
            client_id: request.client_id.clone(),
            connector_id: login.connector_id.clone(),
            claims: login.claims.clone(),
            scopes: request.params.scopes.clone(),
            nonce: request.params.nonce.clone(),
            auth_time: login.auth_time,
            connector_data: login.connector_data.clone(),
            created_at: now,
            revoked_at: None,
        }
    }

    /// A logged-in, approved request: a code (one transaction), front-channel tokens when
    /// the response type asks for them, or the approval of a waiting device.
    async fn finish(&self, request: &AuthRequest) -> Result<Step, AuthorizeError> {
        let Some(login) = &request.login else {
            return Err(AuthorizeError::login_gone());
        };
        let now = self.now();
        if let Some(user_code) = &request.params.device_user_code {
            return self.approve_device(request, login, user_code, now).await;
        }
        let rt = ResponseType::parse(&request.params.response_type).unwrap_or(ResponseType {
            code: true,
            id_token: false,
            token: false,
        });
        let mut params: Vec<(String, String)> = Vec::new();
        let mut code_plain = None;
        if rt.code {
            let code = random_token(32);
            let auth_code = AuthCode {
                code_hash: sha256_hex(&code),
                redirect_uri: request.params.redirect_uri.clone(),
                code_challenge: request.params.code_challenge.clone(),
                code_challenge_method: request.params.code_challenge_method.clone(),
                grant: self.grant_for(request, login, random_token(16), now),
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
            params.push(("code".into(), code.clone()));
            code_plain = Some(code);
        } else if !self.storage.delete_auth_request(&request.id).await? {
            return Err(AuthorizeError::login_gone());
        }
        if rt.front_channel() {
            // Front-channel tokens get a grant of their own, so that the code's grant
            // (created at redemption) stays separate.
            let grant = self.grant_for(request, login, random_token(16), now);
            let access = if rt.token {
                let token = random_token(32);
                let tokens = IssuedTokens {
                    access: crate::storage::AccessToken {
                        token_hash: sha256_hex(&token),
                        grant_id: grant.id.clone(),
                        client_id: grant.client_id.clone(),
                        created_at: now,
                        expires_at: now + self.settings.id_token_ttl.as_secs() as i64,
                        scopes: None,
                    },
                    refresh: None,
                };
                self.storage.issue_grant(&grant, &tokens).await?;
                params.push(("access_token".into(), token.clone()));
                params.push(("token_type".into(), "Bearer".into()));
                params.push((
                    "expires_in".into(),
                    self.settings.id_token_ttl.as_secs().to_string(),
                ));
                Some(token)
            } else {
                None
            };
            if rt.id_token {
                let id_token = self
                    .mint_front_channel_id_token(
                        &grant,
                        access.as_deref(),
                        code_plain.as_deref(),
                        now,
                    )
                    .await
                    .map_err(|_| {
                        AuthorizeError::page(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "Signing failed",
                            "lanyard could not sign the token. Try again.",
                        )
                    })?;
                params.push(("id_token".into(), id_token));
            }
        }
        if let Some(state) = &request.params.state {
            params.push(("state".into(), state.clone()));
        }
        params.push(("iss".into(), self.settings.issuer_str().to_string()));
        Ok(Step::Client(ClientResponse {
            redirect_uri: request.params.redirect_uri.clone(),
            mode: request_mode(request),
            params,
        }))
    }

    async fn approve_device(
        &self,
        request: &AuthRequest,
        login: &LoginResult,
        user_code: &str,
        now: i64,
    ) -> Result<Step, AuthorizeError> {
        let device = self
            .storage
            .get_device_request(user_code)
            .await?
            .ok_or_else(AuthorizeError::login_gone)?;
        let grant = self.grant_for(
            request,
            login,
            super::token::device_grant_id(&device.device_code_hash),
            now,
        );
        let approved = self
            .storage
            .complete_device_request(user_code, Some(&grant), now)
            .await?;
        self.storage.delete_auth_request(&request.id).await?;
        if !approved {
            return Err(AuthorizeError::page(
                StatusCode::BAD_REQUEST,
                "Code expired",
                "This device code has expired or was already used. Start again on your device.",
            ));
        }
        Ok(Step::DeviceDone { approved: true })
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
