//! HTTP handlers: each translates a request into one call on the protocol layer and its
//! answer into a response. Nothing here decides protocol questions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;

use super::middleware::ClientAddr;
use super::Live;
use crate::oidc::device::device_form_csrf;
use crate::oidc::flow::{
    AuthorizeError, ClientResponse, ConnectorLogin, Outcome, PasswordOutcome, ResponseMode, Step,
};
use crate::oidc::form::parse_unique_params;
use crate::oidc::logout::Logout;
use crate::oidc::{OAuthError, Provider};
use crate::web::kubeconfig::{cluster_views, KUBECONFIG_CLIENT};
use crate::web::{Templates, COPY_JS, STYLE_CSS};

/// The cookie that ties a login in progress to the browser that started it.
pub const LOGIN_COOKIE: &str = "lanyard_login";
/// The sign-in session cookie (SSO across clients).
pub const SESSION_COOKIE: &str = "lanyard_session";

/// One generation of the server's configurable state. Handlers read it once per request
/// (through [`Live`]), so a request sees one config from start to end even while a reload
/// swaps in the next.
#[derive(Clone)]
pub struct AppState {
    pub provider: Arc<Provider>,
    pub templates: Templates,
    pub kube: Arc<super::KubePage>,
}

impl AppState {
    fn base(&self) -> String {
        self.provider.settings.base_path()
    }

    /// A cookie's name in the browser. Over https it carries the prefix that makes browsers
    /// refuse it from anywhere but a secure response of this host (`__Host-`, which needs
    /// path `/`) or at least a secure origin (`__Secure-`), so a sibling domain or a plain
    /// http page cannot plant it.
    pub fn cookie_name(&self, name: &str) -> String {
        match (
            self.provider.settings.secure_cookies,
            self.base().is_empty(),
        ) {
            (false, _) => name.to_string(),
            (true, true) => format!("__Host-{name}"),
            (true, false) => format!("__Secure-{name}"),
        }
    }

    fn cookie<'a>(&self, headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
        cookie_value(headers, &self.cookie_name(name))
    }
}

/// The routes under the issuer's path: the browser pages plus [`machine_routes`].
pub fn issuer_routes() -> Router<Live> {
    Router::new()
        .route("/auth", get(authorize))
        .route("/login", get(choose_connector))
        .route("/auth/{connector}", get(login_page).post(login_submit))
        .route("/callback", get(upstream_callback))
        .route("/approval", get(approval_page).post(approval_submit))
        .route("/device", get(device_page).post(device_submit))
        .route("/logout", get(logout).post(logout_confirm))
        .route("/", get(home))
        .route("/kubeconfig", get(kubeconfig_page).post(kubeconfig_tokens))
        .route("/kubeconfig/download", get(kubeconfig_download))
        .route("/static/copy.js", get(copy_js))
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/style.css", get(stylesheet))
}

/// Endpoints that programs call, and that `web.allowedOrigins` may open to browsers (CORS).
pub fn machine_routes() -> Router<Live> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/keys", get(jwks))
        .route("/token", post(token))
        .route("/token/revoke", post(revoke))
        .route("/token/introspect", post(introspect))
        .route("/device/code", post(device_code))
        .route("/userinfo", get(userinfo).post(userinfo))
}

async fn discovery(State(state): State<AppState>) -> Response {
    json_bytes(
        state.provider.discovery().body.clone(),
        "public, max-age=3600",
    )
}

async fn jwks(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let keys = &state.provider.keys;
    let jwks = keys.jwks();
    let cache = format!("public, max-age={}", keys.jwks_max_age().as_secs());
    let etag_matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == jwks.etag));
    let mut response = if etag_matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        json_bytes(jwks.body.to_vec(), &cache)
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&jwks.etag) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    response
}

fn json_bytes(body: Vec<u8>, cache_control: &str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

/// Renders an HTML page; a template failure becomes a plain 500 without details.
fn page(state: &AppState, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match state.templates.render(name, &state.base(), ctx) {
        Ok(html) => {
            let mut response = (status, html).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "rendering a page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn error_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    page(
        state,
        status,
        "error.html",
        minijinja::context! { title => title, message => message },
    )
}

fn authorize_error(state: &AppState, err: AuthorizeError) -> Response {
    match err {
        AuthorizeError::Page {
            status,
            title,
            message,
        } => error_page(state, status, title, &message),
        AuthorizeError::Client(answer) => to_client(state, &answer),
        AuthorizeError::RateLimited { retry_after_secs } => {
            let mut r = error_page(
                state,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many attempts",
                &format!("Too many failed attempts. Try again in {retry_after_secs} seconds."),
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            r
        }
    }
}

/// The answer for the client: a redirect, or for `form_post` a page that posts it.
fn to_client(state: &AppState, answer: &ClientResponse) -> Response {
    if answer.mode != ResponseMode::FormPost {
        return see_other(&answer.url());
    }
    // The only script lanyard ever serves: it submits the form, allowed by a per-response nonce.
    let nonce = crate::oidc::secrets::random_token(16);
    let mut r = page(
        state,
        StatusCode::OK,
        "form_post.html",
        minijinja::context! {
            action => answer.redirect_uri,
            fields => answer.params,
            nonce => nonce,
        },
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    r
}

/// Sends the browser on, setting the cookies the step produced.
fn proceed(state: &AppState, outcome: Outcome) -> Response {
    let mut response = match &outcome.next {
        Step::Page(path) => see_other(&format!("{}{}", state.base(), path)),
        Step::Client(answer) => to_client(state, answer),
        Step::DeviceDone { approved } => page(
            state,
            StatusCode::OK,
            "device_done.html",
            minijinja::context! { approved => approved },
        ),
    };
    let settings = &state.provider.settings;
    if let Some(value) = &outcome.browser_cookie {
        set_cookie(
            state,
            &mut response,
            LOGIN_COOKIE,
            value,
            settings.auth_request_ttl.as_secs(),
        );
    }
    if let Some(value) = &outcome.session_cookie {
        set_cookie(
            state,
            &mut response,
            SESSION_COOKIE,
            value,
            settings.session_lifetime.as_secs(),
        );
    }
    response
}

fn set_cookie(state: &AppState, response: &mut Response, name: &str, value: &str, max_age: u64) {
    let cookie = format!(
        "{}={value}; Path={}/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        state.cookie_name(name),
        state.base(),
        if state.provider.settings.secure_cookies {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// 303 to an absolute URL or an issuer-relative path.
fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Refuses a form post that a browser reports as coming from another site.
fn cross_site_post(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        // Pages are served with `Referrer-Policy: no-referrer`, under which browsers send
        // `Origin: null` even for same-origin posts: that says nothing, and the CSRF token
        // and Sec-Fetch-Site still decide.
        None | Some("null") => true,
        Some(origin) => {
            origin
                == state
                    .provider
                    .settings
                    .issuer
                    .origin()
                    .ascii_serialization()
        }
    };
    if matches!(site, Some("cross-site" | "same-site")) || !origin_ok {
        return Some(error_page(
            state,
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was submitted from another site.",
        ));
    }
    None
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

async fn authorize(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match state
        .provider
        .start_authorization(
            query.as_deref().unwrap_or(""),
            state.cookie(&headers, LOGIN_COOKIE),
            state.cookie(&headers, SESSION_COOKIE),
        )
        .await
    {
        Ok(outcome) => proceed(&state, outcome),
        Err(err) => authorize_error(&state, err),
    }
}

#[derive(Deserialize)]
struct ReqQuery {
    req: String,
}

async fn choose_connector(
    State(state): State<AppState>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
) -> Response {
    match state
        .provider
        .connector_choices(&q.req, state.cookie(&headers, LOGIN_COOKIE))
        .await
    {
        Ok(connectors) => page(
            &state,
            StatusCode::OK,
            "choose.html",
            minijinja::context! { connectors => connectors, req => q.req },
        ),
        Err(err) => authorize_error(&state, err),
    }
}

async fn login_page(
    State(state): State<AppState>,
    Path(connector): Path<String>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
) -> Response {
    match state
        .provider
        .connector_login(&q.req, &connector, state.cookie(&headers, LOGIN_COOKIE))
        .await
    {
        Ok(ConnectorLogin::Form(form)) => {
            let hint = form.login_hint.clone();
            render_login(&state, StatusCode::OK, &form, &hint, false)
        }
        Ok(ConnectorLogin::Upstream(url)) => see_other(&url),
        Err(err) => authorize_error(&state, err),
    }
}

/// Where GitHub and OIDC providers send the browser back after a login.
async fn upstream_callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    match state
        .provider
        .upstream_callback(
            query.as_deref().unwrap_or(""),
            state.cookie(&headers, LOGIN_COOKIE),
        )
        .await
    {
        Ok(outcome) => proceed(&state, outcome),
        Err(err) => authorize_error(&state, err),
    }
}

fn render_login(
    state: &AppState,
    status: StatusCode,
    form: &crate::oidc::flow::LoginForm,
    login: &str,
    invalid: bool,
) -> Response {
    page(
        state,
        status,
        "login.html",
        minijinja::context! {
            req => form.auth_request_id,
            connector_id => form.connector_id,
            connector_name => form.connector_name,
            prompt => form.prompt,
            csrf => form.csrf_token,
            client_name => form.client_name,
            login => login,
            invalid => invalid,
        },
    )
}

async fn login_submit(
    State(state): State<AppState>,
    Path(connector): Path<String>,
    Query(q): Query<ReqQuery>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match browser_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let outcome = state
        .provider
        .submit_password(
            &q.req,
            &connector,
            state.cookie(&headers, LOGIN_COOKIE),
            field("csrf"),
            field("login"),
            field("password"),
            &addr,
        )
        .await;
    match outcome {
        Ok(PasswordOutcome::Done(outcome)) => proceed(&state, outcome),
        Ok(PasswordOutcome::Rejected(form)) => render_login(
            &state,
            StatusCode::UNAUTHORIZED,
            &form,
            field("login"),
            true,
        ),
        Err(err) => authorize_error(&state, err),
    }
}

/// A form posted by a browser: refused when it comes from another site or cannot be read.
// The error is the response the handler returns at once; boxing it would only add a hop.
#[allow(clippy::result_large_err)]
fn browser_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<HashMap<String, String>, Response> {
    if let Some(refused) = cross_site_post(state, headers) {
        return Err(refused);
    }
    form_fields(headers, body).ok_or_else(|| {
        error_page(
            state,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form could not be read.",
        )
    })
}

fn form_fields(headers: &HeaderMap, body: &Bytes) -> Option<HashMap<String, String>> {
    if !is_form(headers) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    parse_unique_params(text).ok()
}

async fn approval_page(
    State(state): State<AppState>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
) -> Response {
    match state
        .provider
        .approval(&q.req, state.cookie(&headers, LOGIN_COOKIE))
        .await
    {
        Ok(view) => page(
            &state,
            StatusCode::OK,
            "approval.html",
            minijinja::context! {
                req => view.auth_request_id,
                csrf => view.csrf_token,
                client_name => view.client_name,
                username => view.username,
                scopes => view.scopes,
            },
        ),
        Err(err) => authorize_error(&state, err),
    }
}

async fn approval_submit(
    State(state): State<AppState>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match browser_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let approved = form.get("approval").map(String::as_str) == Some("approve");
    match state
        .provider
        .decide(
            &q.req,
            state.cookie(&headers, LOGIN_COOKIE),
            form.get("csrf").map(String::as_str).unwrap_or(""),
            approved,
        )
        .await
    {
        Ok(next) => proceed(
            &state,
            Outcome {
                next,
                browser_cookie: None,
                session_cookie: None,
            },
        ),
        Err(err) => authorize_error(&state, err),
    }
}

#[derive(Deserialize)]
struct DeviceQuery {
    user_code: Option<String>,
}

async fn device_page(
    State(state): State<AppState>,
    Query(q): Query<DeviceQuery>,
    headers: HeaderMap,
) -> Response {
    let cookie = state
        .provider
        .browser_cookie_or_new(state.cookie(&headers, LOGIN_COOKIE));
    let mut response = page(
        &state,
        StatusCode::OK,
        "device.html",
        minijinja::context! {
            user_code => q.user_code.unwrap_or_default(),
            csrf => device_form_csrf(&cookie),
        },
    );
    let ttl = state.provider.settings.auth_request_ttl.as_secs();
    set_cookie(&state, &mut response, LOGIN_COOKIE, &cookie, ttl);
    response
}

async fn device_submit(
    State(state): State<AppState>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match browser_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    match state
        .provider
        .submit_user_code(
            form.get("user_code").map(String::as_str).unwrap_or(""),
            form.get("csrf").map(String::as_str).unwrap_or(""),
            &addr,
            state.cookie(&headers, LOGIN_COOKIE),
            state.cookie(&headers, SESSION_COOKIE),
        )
        .await
    {
        Ok(outcome) => proceed(&state, outcome),
        Err(err) => authorize_error(&state, err),
    }
}

async fn logout(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = match parse_unique_params(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return error_page(&state, StatusCode::BAD_REQUEST, "Cannot sign out", &e),
    };
    end_session(&state, &params, &headers, None).await
}

async fn logout_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match browser_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    // Without a csrf field this is a logout request sent by POST (which the spec allows),
    // decided like a GET; with one, it is the confirmation form.
    let csrf = form.get("csrf").cloned();
    end_session(&state, &form, &headers, csrf.as_deref()).await
}

async fn end_session(
    state: &AppState,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Response {
    match state
        .provider
        .end_session(params, state.cookie(headers, SESSION_COOKIE), csrf)
        .await
    {
        Ok(Logout::Confirm { csrf, params }) => page(
            state,
            StatusCode::OK,
            "logout.html",
            minijinja::context! { csrf => csrf, fields => params },
        ),
        Ok(Logout::Done { redirect }) => {
            let mut response = match redirect {
                Some(url) => see_other(&url),
                None => page(
                    state,
                    StatusCode::OK,
                    "signed_out.html",
                    minijinja::context! {},
                ),
            };
            // Expire the session cookie in the browser too.
            set_cookie(state, &mut response, SESSION_COOKIE, "", 0);
            response
        }
        Err(err) => authorize_error(state, err),
    }
}

/// Reads a form-encoded body for the JSON endpoints, as an OAuth error when it cannot.
fn oauth_form(headers: &HeaderMap, body: &Bytes) -> Result<HashMap<String, String>, OAuthError> {
    if !is_form(headers) {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::invalid_request("the body is not valid UTF-8"))?;
    parse_unique_params(text).map_err(OAuthError::invalid_request)
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

async fn device_code(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match oauth_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state
        .provider
        .device_authorization(authorization, &form)
        .await
    {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(err) => err.into_response(),
    }
}

async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match oauth_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.provider.revoke(authorization, &form).await {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(err) => err.into_response(),
    }
}

async fn introspect(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match oauth_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.provider.introspect(authorization, &form).await {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(err) => err.into_response(),
    }
}

async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_form(&headers) {
        return OAuthError::invalid_request("the body must be application/x-www-form-urlencoded")
            .into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return OAuthError::invalid_request("the body is not valid UTF-8").into_response();
    };
    let form = match parse_unique_params(text) {
        Ok(f) => f,
        Err(e) => return OAuthError::invalid_request(e).into_response(),
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.provider.token(authorization, &form).await {
        Ok(response) => {
            let mut r = Json(response).into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            r
        }
        Err(err) => err.into_response(),
    }
}

async fn userinfo(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.provider.userinfo(authorization).await {
        Ok(claims) => {
            let mut r = Json(claims).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(err) => err.into_response(),
    }
}

async fn copy_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        COPY_JS,
    )
        .into_response()
}

/// `/` leads to the kubeconfig page when clusters are configured.
pub(crate) async fn home(State(state): State<AppState>) -> Response {
    if state.kube.kubernetes.clusters.is_empty() {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    see_other(&format!("{}/kubeconfig", state.base()))
}

/// The signed-in user behind the page, or where to send the browser to sign in.
async fn page_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<crate::storage::Session, Response> {
    if state.kube.kubernetes.clusters.is_empty() {
        return Err(error_page(
            state,
            StatusCode::NOT_FOUND,
            "No clusters",
            "This lanyard has no Kubernetes clusters configured.",
        ));
    }
    if state.provider.settings.session_lifetime.is_zero() {
        return Err(error_page(
            state,
            StatusCode::NOT_FOUND,
            "Sessions are off",
            "The kubeconfig page needs sign-in sessions (sessions.lifetime).",
        ));
    }
    match state
        .provider
        .live_session(state.cookie(headers, SESSION_COOKIE))
        .await
    {
        Ok(Some(session)) => Ok(session),
        Ok(None) => {
            // Sign in through lanyard itself; the code that comes back is not needed: the
            // login leaves a session cookie, which is what this page reads.
            let verifier = crate::oidc::secrets::random_token(32);
            let challenge = crate::oidc::pkce::s256_challenge(&verifier);
            let settings = &state.provider.settings;
            let url = crate::oidc::redirect::append_query(
                &settings.endpoint("/auth"),
                &[
                    ("client_id", KUBECONFIG_CLIENT),
                    ("redirect_uri", &settings.endpoint("/kubeconfig")),
                    ("response_type", "code"),
                    ("scope", "openid email profile groups"),
                    ("state", &crate::oidc::secrets::random_token(16)),
                    ("code_challenge", &challenge),
                    ("code_challenge_method", crate::oidc::pkce::S256),
                ],
            );
            Err(see_other(&url))
        }
        Err(err) => Err(authorize_error(&state.clone(), err.into())),
    }
}

async fn kubeconfig_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let session = match page_user(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    render_kubeconfig(&state, &headers, &session, None)
}

/// The token form's CSRF value: bound to the session cookie, which other sites cannot read.
fn kubeconfig_csrf(state: &AppState, headers: &HeaderMap) -> String {
    crate::oidc::secrets::sha256_hex(&format!(
        "kubeconfig-tokens:{}",
        state.cookie(headers, SESSION_COOKIE).unwrap_or("")
    ))
}

/// "Create tokens" for the legacy oidc auth provider: real tokens for one cluster's client.
async fn kubeconfig_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match browser_form(&state, &headers, &body) {
        Ok(f) => f,
        Err(refused) => return refused,
    };
    let session = match page_user(&state, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
    if !crate::oidc::secrets::constant_time_eq(csrf, &kubeconfig_csrf(&state, &headers)) {
        return error_page(
            &state,
            StatusCode::FORBIDDEN,
            "Form expired",
            "Reload the page and try again.",
        );
    }
    let name = form.get("cluster").map(String::as_str).unwrap_or("");
    let Some(cluster) = state
        .kube
        .kubernetes
        .clusters
        .iter()
        .find(|c| c.name == name)
    else {
        return error_page(
            &state,
            StatusCode::NOT_FOUND,
            "Unknown cluster",
            "No such cluster.",
        );
    };
    match state
        .provider
        .issue_for_session(&session, &cluster.client_id)
        .await
    {
        Ok(tokens) => render_kubeconfig(&state, &headers, &session, Some((name, tokens))),
        Err(err) => err.into_response(),
    }
}

fn render_kubeconfig(
    state: &AppState,
    headers: &HeaderMap,
    session: &crate::storage::Session,
    legacy_tokens: Option<(&str, (String, String))>,
) -> Response {
    let secrets = &state.kube.user_secrets;
    let mut clusters = cluster_views(
        state.provider.settings.issuer_str(),
        &state.kube.kubernetes,
        &session.claims,
        &session.connector_id,
        &|id| secrets.get(id).cloned(),
    );
    if let Some((name, (id_token, refresh_token))) = &legacy_tokens {
        if let Some(view) = clusters.iter_mut().find(|c| c.name == *name) {
            // Tokens are base64url and dots: no quoting needed in either shell.
            for text in [
                &mut view.commands.oidc_auth_provider.posix,
                &mut view.commands.oidc_auth_provider.powershell,
            ] {
                *text = text
                    .replace("<ID_TOKEN>", id_token)
                    .replace("<REFRESH_TOKEN>", refresh_token);
            }
            view.has_legacy_tokens = true;
        }
    }
    let who = if session.claims.email.is_empty() {
        session.claims.username.clone()
    } else {
        session.claims.email.clone()
    };
    let mut r = page(
        state,
        StatusCode::OK,
        "kubeconfig.html",
        minijinja::context! { who => who, clusters => clusters, csrf => kubeconfig_csrf(state, headers) },
    );
    // This page alone runs a script: the copy buttons, served from lanyard itself.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    r
}

#[derive(Deserialize)]
struct DownloadQuery {
    cluster: Option<String>,
}

async fn kubeconfig_download(
    State(state): State<AppState>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = page_user(&state, &headers).await {
        return r;
    }
    let kube = &state.kube.kubernetes;
    let clusters = match crate::kube::select_clusters(kube, q.cluster.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            return error_page(
                &state,
                StatusCode::NOT_FOUND,
                "Unknown cluster",
                &e.to_string(),
            )
        }
    };
    let secrets = &state.kube.user_secrets;
    let issuer_ca = kube.issuer_ca.as_ref().map(|ca| ca.pem.as_str());
    let body = crate::kube::kubeconfig(
        state.provider.settings.issuer_str(),
        issuer_ca,
        &clusters,
        &|id| secrets.get(id).cloned(),
    );
    let filename = match &q.cluster {
        Some(name) => format!("kubeconfig-{name}"),
        None => "kubeconfig".to_string(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/yaml"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
