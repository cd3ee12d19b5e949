//! HTTP handlers: each translates a request into one call on the protocol layer and its
//! answer into a response. Nothing here decides protocol questions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::oidc::authorize::{parse_unique_params, AuthorizeError, PasswordOutcome};
use crate::oidc::{OAuthError, Provider};
use crate::web::{Templates, STYLE_CSS};

/// The cookie that ties a login in progress to the browser that started it.
pub const LOGIN_COOKIE: &str = "lanyard_login";

#[derive(Clone)]
pub struct AppState {
    pub provider: Arc<Provider>,
    pub templates: Templates,
}

impl AppState {
    fn base(&self) -> String {
        self.provider.settings.base_path()
    }
}

/// The routes under the issuer's path: the browser pages plus [`machine_routes`].
pub fn issuer_routes() -> Router<AppState> {
    Router::new()
        .route("/auth", get(authorize))
        .route("/login", get(choose_connector))
        .route("/auth/{connector}", get(login_page).post(login_submit))
        .route("/approval", get(approval_page).post(approval_submit))
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/style.css", get(stylesheet))
}

/// Endpoints that programs call, and that `web.allowedOrigins` may open to browsers (CORS).
pub fn machine_routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/keys", get(jwks))
        .route("/token", post(token))
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
        AuthorizeError::Redirect { url } => see_other(&url),
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
        None => true,
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
    let cookie = cookie_value(&headers, LOGIN_COOKIE);
    match state
        .provider
        .start_authorization(query.as_deref().unwrap_or(""), cookie)
        .await
    {
        Ok(started) => {
            let settings = &state.provider.settings;
            let mut response = see_other(&format!("{}{}", state.base(), started.next));
            let cookie = format!(
                "{LOGIN_COOKIE}={}; Path={}/; Max-Age={}; HttpOnly; SameSite=Lax{}",
                started.browser_cookie,
                state.base(),
                settings.auth_request_ttl.as_secs(),
                if settings.secure_cookies {
                    "; Secure"
                } else {
                    ""
                }
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
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
        .connector_choices(&q.req, cookie_value(&headers, LOGIN_COOKIE))
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
        .login_form(&q.req, &connector, cookie_value(&headers, LOGIN_COOKIE))
        .await
    {
        Ok(form) => render_login(&state, StatusCode::OK, &form, "", false),
        Err(err) => authorize_error(&state, err),
    }
}

fn render_login(
    state: &AppState,
    status: StatusCode,
    form: &crate::oidc::authorize::LoginForm,
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
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = cross_site_post(&state, &headers) {
        return refused;
    }
    let Some(form) = form_fields(&state, &headers, &body) else {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form could not be read.",
        );
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let outcome = state
        .provider
        .submit_password(
            &q.req,
            &connector,
            cookie_value(&headers, LOGIN_COOKIE),
            field("csrf"),
            field("login"),
            field("password"),
        )
        .await;
    match outcome {
        Ok(PasswordOutcome::Redirect(to)) => see_other(&absolute_or_base(&state, &to)),
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

/// Protocol paths are issuer-relative ("/approval?...") while client redirects are absolute.
fn absolute_or_base(state: &AppState, to: &str) -> String {
    if to.starts_with('/') {
        format!("{}{}", state.base(), to)
    } else {
        to.to_string()
    }
}

fn form_fields(
    _state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<HashMap<String, String>> {
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
        .approval(&q.req, cookie_value(&headers, LOGIN_COOKIE))
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
    if let Some(refused) = cross_site_post(&state, &headers) {
        return refused;
    }
    let Some(form) = form_fields(&state, &headers, &body) else {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form could not be read.",
        );
    };
    let approved = form.get("approval").map(String::as_str) == Some("approve");
    match state
        .provider
        .decide(
            &q.req,
            cookie_value(&headers, LOGIN_COOKIE),
            form.get("csrf").map(String::as_str).unwrap_or(""),
            approved,
        )
        .await
    {
        Ok(url) => see_other(&url),
        Err(err) => authorize_error(&state, err),
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
