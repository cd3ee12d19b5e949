//! The first step: a client's request at /auth, or a user code typed at /device, recorded as
//! a login in progress bound to this browser.

use axum::http::StatusCode;

use crate::storage::{AuthRequest, AuthRequestParams, DeviceRequest, DeviceStatus, LoginResult};

use super::{is_internal_client, AuthorizeError, Outcome, ResponseMode, Step};
use crate::oidc::claims::subject_of;
use crate::oidc::device::{device_form_csrf, normalize_user_code};
use crate::oidc::error::ErrorCode;
use crate::oidc::form::{optional, parse_unique_params};
use crate::oidc::pkce;
use crate::oidc::redirect::redirect_uri_allowed;
use crate::oidc::scopes::Scopes;
use crate::oidc::secrets::{constant_time_eq, new_auth_request_id, random_token, sha256_hex};
use crate::oidc::{ClientInfo, ConnectorEntry, Provider};

impl Provider {
    /// /auth: validates the request and records it. Until the client and redirect URI are
    /// known good, errors are pages; after, they go back to the client.
    /// `client_addr` is the address wrong device user codes count against (Dex's device
    /// callback redirect URI carries one in `state`).
    pub async fn start_authorization(
        &self,
        raw_query: &str,
        browser_cookie: Option<&str>,
        session_cookie: Option<&str>,
        client_addr: &str,
    ) -> Result<Outcome, AuthorizeError> {
        let bad = |m: String| AuthorizeError::page(StatusCode::BAD_REQUEST, "Bad request", m);
        let params = parse_unique_params(raw_query).map_err(bad)?;
        let get = |k: &str| optional(&params, k);

        let client_id =
            get("client_id").ok_or_else(|| bad("The request has no client_id.".into()))?;
        let client = self.clients.find(client_id).await?.ok_or_else(|| {
            bad("Unknown client: the client_id is not registered with lanyard.".into())
        })?;
        let redirect_uri =
            get("redirect_uri").ok_or_else(|| bad("The request has no redirect_uri.".into()))?;
        if is_device_callback(redirect_uri, &self.settings.base_path()) {
            if !self.device_callback_allowed(&client) {
                return Err(bad(
                    "The device callback is not registered for this client.".into(),
                ));
            }
            let user_code = get("state").unwrap_or("");
            let device = self
                .pending_device_request(user_code, Some(&client.id), client_addr)
                .await?
                .ok_or_else(unknown_user_code)?;
            return self
                .start_device_login(device, browser_cookie, session_cookie)
                .await;
        }
        if !redirect_uri_allowed(&client.redirect_uris, redirect_uri, client.public) {
            return Err(bad(
                "The redirect_uri is not registered for this client, so lanyard will not redirect to it."
                    .into(),
            ));
        }

        // From here on the redirect URI is trusted.
        let state = get("state");
        let requested_mode = get("response_mode").map(|m| ResponseMode::parse(m).ok_or(m));
        let mode = match requested_mode {
            Some(Ok(m)) => m,
            _ => ResponseMode::Query,
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
        // The code flow is the only one: config refuses the implicit and hybrid response
        // types (RFC 9700), so tokens never travel through the browser.
        match get("response_type") {
            Some(rt) if is_code(rt) => {}
            given => {
                return Err(fail(
                    if given.is_some() {
                        ErrorCode::UnsupportedResponseType
                    } else {
                        ErrorCode::InvalidRequest
                    },
                    "response_type must be code",
                ))
            }
        }

        let scopes = Scopes::parse(get("scope").unwrap_or(""));
        if let Err(msg) = self.check_scopes_for(&client, &scopes).await {
            return Err(fail(ErrorCode::InvalidScope, &msg));
        }

        let code_challenge = get("code_challenge");
        let method = get("code_challenge_method");
        if let Err(problem) = pkce::check_request(code_challenge, method, client.public) {
            return Err(fail(ErrorCode::InvalidRequest, problem));
        }

        let allowed = self.connectors_for(&client).await?;
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
                if subject_of(&s.claims.user_id, &s.connector_id) == *sub {
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
            id: new_auth_request_id(),
            client_id: client.id.clone(),
            params: AuthRequestParams {
                redirect_uri: redirect_uri.to_string(),
                response_type: "code".into(),
                response_mode: Some(
                    match mode {
                        ResponseMode::Query => "query",
                        ResponseMode::Fragment => "fragment",
                        ResponseMode::FormPost => "form_post",
                    }
                    .to_string(),
                ),
                scopes: scopes.into_vec(),
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
        allowed: &[ConnectorEntry],
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
}

impl Provider {
    /// The person submitted a user code at /device: start a login for the device's client.
    /// `csrf` is the form's token, bound to the browser cookie the /device page set.
    pub async fn submit_user_code(
        &self,
        input: &str,
        csrf: &str,
        client_addr: &str,
        browser_cookie: Option<&str>,
        session_cookie: Option<&str>,
    ) -> Result<Outcome, AuthorizeError> {
        let bound = browser_cookie.is_some_and(|c| constant_time_eq(csrf, &device_form_csrf(c)));
        if !bound {
            return Err(AuthorizeError::page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "The form's security token does not match. Reload the page and try again.",
            ));
        }
        let device = self
            .pending_device_request(input, None, client_addr)
            .await?
            .ok_or_else(unknown_user_code)?;
        self.start_device_login(device, browser_cookie, session_cookie)
            .await
    }

    /// The pending device request a typed user code names (of `client`, when given). Wrong
    /// codes count against the address (RFC 8628 §5.1); refused while the address is locked
    /// out.
    async fn pending_device_request(
        &self,
        input: &str,
        client: Option<&str>,
        client_addr: &str,
    ) -> Result<Option<DeviceRequest>, AuthorizeError> {
        let key = format!("device-addr:{client_addr}");
        let at = std::time::Instant::now();
        self.user_code_limiter
            .check(&[key.as_str()], at)
            .map_err(AuthorizeError::rate_limited)?;
        let now = self.now();
        let request = match normalize_user_code(input) {
            Some(code) => self.storage.get_device_request(&code).await?.filter(|r| {
                r.status == DeviceStatus::Pending
                    && r.expires_at > now
                    && client.is_none_or(|c| c == r.client_id)
            }),
            None => None,
        };
        if request.is_none() {
            self.user_code_limiter.record_failure(&[key.as_str()], at);
        }
        Ok(request)
    }

    /// Starts the browser login that approves a waiting device.
    async fn start_device_login(
        &self,
        device: DeviceRequest,
        browser_cookie: Option<&str>,
        session_cookie: Option<&str>,
    ) -> Result<Outcome, AuthorizeError> {
        let now = self.now();
        let client = self
            .clients
            .find(&device.client_id)
            .await?
            .ok_or_else(AuthorizeError::login_gone)?;
        let allowed = self.connectors_for(&client).await?;
        if allowed.is_empty() {
            return Err(AuthorizeError::login_gone());
        }
        let browser_cookie = self.browser_cookie_or_new(browser_cookie);
        // A signed-in browser skips the password; approving the device is always asked.
        let session = self
            .live_session(session_cookie)
            .await?
            .filter(|s| allowed.iter().any(|c| c.id == s.connector_id));
        let auth = AuthRequest {
            id: new_auth_request_id(),
            client_id: client.id.clone(),
            params: AuthRequestParams {
                redirect_uri: String::new(),
                response_type: "code".into(),
                scopes: device.scopes.clone(),
                device_user_code: Some(device.user_code.clone()),
                ..AuthRequestParams::default()
            },
            csrf_token: random_token(32),
            browser_binding: sha256_hex(&browser_cookie),
            login: session.map(|s| LoginResult {
                connector_id: s.connector_id,
                claims: s.claims,
                connector_data: s.connector_data,
                auth_time: s.auth_time,
            }),
            upstream: None,
            created_at: now,
            expires_at: now + self.settings.auth_request_ttl.as_secs() as i64,
        };
        self.storage.create_auth_request(&auth).await?;
        let next = if auth.login.is_some() {
            Step::Page(format!("/approval?req={}", auth.id))
        } else if allowed.len() == 1 && !self.settings.always_show_login_screen {
            Step::Page(format!("/auth/{}?req={}", allowed[0].id, auth.id))
        } else {
            Step::Page(format!("/login?req={}", auth.id))
        };
        Ok(Outcome {
            next,
            browser_cookie: Some(browser_cookie),
            session_cookie: None,
        })
    }
}

/// Dex's device flow sends the browser through /auth with this issuer-relative redirect URI
/// and the user code as `state`; Dex configs register it with or without the issuer's path.
const DEVICE_CALLBACK_PATH: &str = "/device/callback";

/// `/device/callback`, or the same under the issuer's path (`/dex/device/callback`).
fn is_device_callback(uri: &str, base_path: &str) -> bool {
    uri == DEVICE_CALLBACK_PATH
        || uri
            .strip_prefix(base_path)
            .is_some_and(|rest| !base_path.is_empty() && rest == DEVICE_CALLBACK_PATH)
}

/// `code`, the one response type, spaces around it allowed as in a space-separated list.
fn is_code(response_type: &str) -> bool {
    response_type
        .split(' ')
        .filter(|part| !part.is_empty())
        .eq(["code"])
}

fn unknown_user_code() -> AuthorizeError {
    AuthorizeError::page(
        StatusCode::BAD_REQUEST,
        "Unknown code",
        "That code is not valid or has expired. Check the code on your device and try again.",
    )
}

impl Provider {
    /// As in Dex: a client that registered the device callback (in either form), or a public
    /// client that registered no redirect URI at all.
    fn device_callback_allowed(&self, client: &ClientInfo) -> bool {
        let base = self.settings.base_path();
        client
            .redirect_uris
            .iter()
            .any(|r| is_device_callback(r, &base))
            || (client.public && client.redirect_uris.is_empty())
    }
}
