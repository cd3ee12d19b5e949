//! A stand-in for a self-managed GitLab, which is also a plain OAuth 2.0 provider with a
//! userinfo endpoint, over HTTPS with its own CA (tests/it/common/https_fake.rs).
//!
//! What it answers follows public documentation:
//! - OAuth 2.0 authorization-code and refresh grants, GitLab's shapes
//!   (https://docs.gitlab.com/api/oauth2/): `GET /oauth/authorize` redirects back with `code`
//!   and `state` (or `error=access_denied`); `POST /oauth/token` answers
//!   `{access_token, token_type: "Bearer", expires_in, refresh_token, scope, created_at}`,
//!   rotates the refresh token on every refresh, and refuses a bad code or refresh token with
//!   400 `{"error": "invalid_grant", "error_description": ...}` (RFC 6749 section 5.2).
//! - `GET /api/v4/user` (https://docs.gitlab.com/api/users/#get-the-current-user):
//!   `{id, username, name, state, email, ...}`, 401 `{"message": "401 Unauthorized"}` for a bad
//!   token.
//! - `GET /oauth/userinfo` (https://docs.gitlab.com/integration/openid_connect_provider/):
//!   `sub`, `name`, `nickname`, `preferred_username`, `email`, `email_verified`, `groups`
//!   (full paths), and the `https://gitlab.org/claims/groups/{owner,maintainer,developer}`
//!   lists.
//! - `GET /userinfo`: the generic provider's userinfo in the keys Dex's `oauth` connector
//!   reads by default (`id`, `user_name`, `preferred_username`, `email`, `email_verified`,
//!   `groups`).
//!
//! Errors can be injected on the API endpoints: a status (401, 403, 5xx), 429 with
//! `Retry-After` (https://docs.gitlab.com/security/rate_limits/), or a hang.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub const CLIENT_ID: &str = "fake-oauth-client";
pub const CLIENT_SECRET: &str = "fake-oauth-secret";

#[derive(Debug, Clone, Default)]
pub struct FakeAccount {
    pub id: u64,
    pub username: String,
    pub name: String,
    pub email: String,
    /// Full paths, as GitLab lists them.
    pub groups: Vec<String>,
    pub owner_of: Vec<String>,
    pub maintainer_of: Vec<String>,
    pub developer_of: Vec<String>,
}

impl FakeAccount {
    pub fn new(id: u64, username: &str, name: &str) -> Self {
        Self {
            id,
            username: username.into(),
            name: name.into(),
            email: format!("{username}@example.com"),
            ..Default::default()
        }
    }

    pub fn in_groups(mut self, groups: &[&str]) -> Self {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }
}

/// An error the API endpoints answer instead of the data.
#[derive(Debug, Clone)]
pub enum Failure {
    Status(u16),
    /// 429 with this `Retry-After`.
    RateLimited(&'static str),
    /// No answer for this long.
    Hang(Duration),
}

#[derive(Default)]
pub struct FakeState {
    accounts: HashMap<String, FakeAccount>,
    /// Who is signed in at the provider when the browser arrives.
    pub signed_in: Option<String>,
    /// The person clicks "Deny" on the authorize page.
    pub deny: bool,
    pub api_failure: Option<Failure>,
    codes: HashMap<String, String>,
    access_tokens: HashMap<String, String>,
    refresh_tokens: HashMap<String, String>,
    /// The query of the last authorize request.
    pub last_authorize: HashMap<String, String>,
    /// Every API request's path.
    pub api_log: Vec<String>,
    counter: u64,
}

pub struct FakeOAuth {
    /// `https://127.0.0.1:port`
    pub base: String,
    pub ca_file: PathBuf,
    pub ca_pem: String,
    state: Arc<Mutex<FakeState>>,
    /// Serves until the fake is dropped.
    https: HttpsHost,
}

impl FakeOAuth {
    pub async fn start() -> FakeOAuth {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let https = HttpsHost::start("Fake GitLab CA", |_| router(state.clone()));
        FakeOAuth {
            base: https.base.clone(),
            ca_file: https.ca_file.clone(),
            ca_pem: https.ca_pem.clone(),
            state,
            https,
        }
    }

    pub fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().expect("fake state")
    }

    /// Adds `account` and signs the browser in as it.
    pub fn sign_in(&self, account: FakeAccount) {
        let mut state = self.state();
        state.signed_in = Some(account.username.clone());
        state.accounts.insert(account.username.clone(), account);
    }

    pub fn set_groups(&self, username: &str, groups: &[&str]) {
        let mut state = self.state();
        let account = state.accounts.get_mut(username).expect("known account");
        account.groups = groups.iter().map(|g| g.to_string()).collect();
    }

    pub fn fail_api(&self, failure: Option<Failure>) {
        self.state().api_failure = failure;
    }

    /// Every access and refresh token handed out and still valid.
    pub fn live_tokens(&self) -> Vec<String> {
        let state = self.state();
        state
            .access_tokens
            .keys()
            .chain(state.refresh_tokens.keys())
            .cloned()
            .collect()
    }

    pub fn revoke_all_tokens(&self) {
        let mut state = self.state();
        state.access_tokens.clear();
        state.refresh_tokens.clear();
    }

    /// The base64 of the CA's PEM, as `rootCAData` (Dex's `[]byte`) takes it.
    pub fn ca_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(&self.ca_pem)
    }

    /// A browser that trusts the fake's CA, keeps cookies and follows no redirect itself.
    pub fn browser(&self) -> reqwest::Client {
        self.https.browser()
    }
}

type Shared = Arc<Mutex<FakeState>>;

fn router(state: Shared) -> Router {
    Router::new()
        .route("/oauth/authorize", get(authorize))
        .route("/oauth/token", post(token))
        .route("/api/v4/user", get(api_user))
        .route("/oauth/userinfo", get(gitlab_userinfo))
        .route("/userinfo", get(generic_userinfo))
        .with_state(state)
}

async fn authorize(
    State(state): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut s = state.lock().expect("state");
    s.last_authorize = q.clone();
    let (Some(redirect), Some(st)) = (q.get("redirect_uri"), q.get("state")) else {
        return (StatusCode::BAD_REQUEST, "redirect_uri and state required").into_response();
    };
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return (StatusCode::BAD_REQUEST, "unknown client").into_response();
    }
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let encode = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    if s.deny {
        return Redirect::to(&format!(
            "{redirect}{sep}error=access_denied&error_description={}&state={}",
            encode("The resource owner or authorization server denied the request."),
            encode(st)
        ))
        .into_response();
    }
    let user = s.signed_in.clone().expect("someone signed in");
    s.counter += 1;
    let code = format!("code-{}", s.counter);
    s.codes.insert(code.clone(), user);
    Redirect::to(&format!(
        "{redirect}{sep}code={}&state={}",
        encode(&code),
        encode(st)
    ))
    .into_response()
}

async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !client_authenticated(&headers, &form, CLIENT_ID, CLIENT_SECRET) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_description": "Client authentication failed."})),
        )
            .into_response();
    }
    let mut s = state.lock().expect("state");
    let user = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            match form.get("code").and_then(|c| s.codes.remove(c)) {
                Some(user) => user,
                None => return oauth_error("invalid_grant", "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."),
            }
        }
        Some("refresh_token") => {
            match form.get("refresh_token").and_then(|t| s.refresh_tokens.remove(t)) {
                Some(user) => user,
                None => return oauth_error("invalid_grant", "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client."),
            }
        }
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "unsupported_grant_type"})),
            )
                .into_response()
        }
    };
    s.counter += 1;
    let access = format!("gl-access-{}-{user}", s.counter);
    let refresh = format!("gl-refresh-{}-{user}", s.counter);
    s.access_tokens.insert(access.clone(), user.clone());
    s.refresh_tokens.insert(refresh.clone(), user);
    Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": 7200,
        "refresh_token": refresh,
        "scope": "read_user openid",
        "created_at": 1_700_000_000,
    }))
    .into_response()
}

/// The account the bearer token belongs to, or the error the endpoint answers.
async fn bearer(state: &Shared, headers: &HeaderMap, path: &str) -> Result<FakeAccount, Response> {
    let failure = {
        let mut s = state.lock().expect("state");
        s.api_log.push(path.to_string());
        s.api_failure.clone()
    };
    match failure {
        Some(Failure::Hang(d)) => tokio::time::sleep(d).await,
        Some(Failure::RateLimited(after)) => {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", after)],
                "Retry later",
            )
                .into_response())
        }
        Some(Failure::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("status");
            return Err((
                status,
                Json(json!({"message": format!("{code} {}", status.canonical_reason().unwrap_or(""))})),
            )
                .into_response());
        }
        None => {}
    }
    let s = state.lock().expect("state");
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| s.access_tokens.get(t))
        .and_then(|user| s.accounts.get(user))
        .cloned()
        .ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"message": "401 Unauthorized"})),
            )
                .into_response()
        })
}

async fn api_user(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match bearer(&state, &headers, "/api/v4/user").await {
        Ok(a) => Json(json!({
            "id": a.id,
            "username": a.username,
            "name": a.name,
            "state": "active",
            "email": a.email,
            "is_admin": false,
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn gitlab_userinfo(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match bearer(&state, &headers, "/oauth/userinfo").await {
        Ok(a) => Json(json!({
            "sub": a.id.to_string(),
            "name": a.name,
            "nickname": a.username,
            "preferred_username": a.username,
            "email": a.email,
            "email_verified": true,
            "groups": a.groups,
            "https://gitlab.org/claims/groups/owner": a.owner_of,
            "https://gitlab.org/claims/groups/maintainer": a.maintainer_of,
            "https://gitlab.org/claims/groups/developer": a.developer_of,
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn generic_userinfo(State(state): State<Shared>, headers: HeaderMap) -> Response {
    match bearer(&state, &headers, "/userinfo").await {
        Ok(a) => Json(json!({
            "id": a.id,
            "user_name": a.name,
            "preferred_username": a.username,
            "email": a.email,
            "email_verified": true,
            "groups": a.groups.iter().map(|g| json!({"name": g})).collect::<Vec<Value>>(),
        }))
        .into_response(),
        Err(r) => r,
    }
}

use super::https_fake::{client_authenticated, oauth_error, HttpsHost};
use super::server::{AuthRequest, Backend, TestServer};
use super::upstream_login;

impl FakeOAuth {
    /// A fake where `account` is signed in, and a lanyard server (SQLite) whose `connectors:`
    /// are what `connectors` writes for the fake.
    pub async fn with_lanyard(
        account: FakeAccount,
        connectors: impl FnOnce(&FakeOAuth) -> String,
    ) -> (FakeOAuth, TestServer) {
        let fake = FakeOAuth::start().await;
        fake.sign_in(account);
        let s = TestServer::start(
            Backend::Sqlite,
            &format!("connectors:\n{}", connectors(&fake)),
        )
        .await
        .expect("SQLite server");
        (fake, s)
    }

    /// lanyard's /auth naming `connector` → the provider's authorize page → back to lanyard's
    /// /callback; returns that callback URL (with code and state).
    pub async fn to_provider(
        &self,
        s: &TestServer,
        browser: &reqwest::Client,
        req: &AuthRequest,
        connector: &str,
    ) -> String {
        upstream_login::to_upstream(s, browser, req, connector, &self.base)
            .await
            .0
    }

    /// The whole login through the provider, then the code redeemed: the token response.
    pub async fn login(&self, s: &TestServer, req: &AuthRequest, connector: &str) -> Value {
        upstream_login::login(s, &self.browser(), req, connector, &self.base).await
    }

    /// The login up to lanyard's answer to the callback: (status, page).
    pub async fn callback_page(&self, s: &TestServer, connector: &str) -> (u16, String) {
        upstream_login::callback_page(s, &self.browser(), connector, &self.base).await
    }
}

/// The claims of a token response's ID token.
pub fn id_claims(tokens: &Value) -> Value {
    super::server::claims_of(tokens["id_token"].as_str().expect("id_token"))
}
