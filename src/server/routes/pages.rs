//! The browser's pages: authorization, connector choice and login, the upstream callback,
//! approval, device verification and logout, plus their static assets.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use super::{
    browser_form, error_page, page, see_other, set_cookie, AppState, PageError, LOGIN_COOKIE,
    SESSION_COOKIE,
};
use crate::oidc::device::device_form_csrf;
use crate::oidc::flow::{
    AuthorizeError, ClientResponse, ConnectorLogin, LoginForm, Outcome, PasswordOutcome,
    ResponseMode, Step,
};
use crate::oidc::form::parse_unique_params;
use crate::oidc::logout::Logout;
use crate::oidc::redirect::OOB_REDIRECT_URI;
use crate::server::middleware::ClientAddr;
use crate::web::{COPY_JS, STYLE_CSS};

/// The page (or client redirect) for an authorization step that failed.
pub(super) fn authorize_error(state: &AppState, err: AuthorizeError) -> PageError {
    let response = match err {
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
        AuthorizeError::Storage(fault) => {
            let mut r = error_page(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Temporarily unavailable",
                "lanyard cannot reach its storage right now. Try again in a moment.",
            );
            r.extensions_mut().insert(fault);
            r
        }
    };
    PageError::from(response)
}

/// `?` for the protocol layer's browser-flow results: the error becomes its page.
trait OrPage<T> {
    fn or_page(self, state: &AppState) -> Result<T, PageError>;
}

impl<T> OrPage<T> for Result<T, AuthorizeError> {
    fn or_page(self, state: &AppState) -> Result<T, PageError> {
        self.map_err(|err| authorize_error(state, err))
    }
}

/// The answer for the client: a redirect, or for `form_post` a page that posts it.
fn to_client(state: &AppState, answer: &ClientResponse) -> Response {
    if answer.redirect_uri == OOB_REDIRECT_URI {
        return out_of_band(state, answer);
    }
    if answer.mode != ResponseMode::FormPost {
        return see_other(&answer.url());
    }
    auto_post(state, &answer.redirect_uri, &answer.params)
}

/// A page that posts `fields` to `action` at once.
fn auto_post(state: &AppState, action: &str, fields: &[(String, String)]) -> Response {
    // The only script lanyard ever serves: it submits the form, allowed by a per-response nonce.
    let nonce = crate::oidc::secrets::random_token(16);
    let mut r = page(
        state,
        StatusCode::OK,
        "form_post.html",
        minijinja::context! {
            action => action,
            fields => fields,
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

/// The out-of-band redirect URI goes nowhere: the person is shown the code to copy into the
/// application, or what went wrong.
fn out_of_band(state: &AppState, answer: &ClientResponse) -> Response {
    let param = |name: &str| {
        answer
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match param("code") {
        Some(code) => page(
            state,
            StatusCode::OK,
            "oob.html",
            minijinja::context! { code => code },
        ),
        None => error_page(
            state,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            param("error_description")
                .or(param("error"))
                .unwrap_or("The sign-in did not complete."),
        ),
    }
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

pub(super) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

/// `/static/{path}` from a Dex `web/` directory given as `frontend.dir`.
pub(super) async fn dex_static_file(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Response {
    web_asset(state.templates.static_file(&path))
}

/// `/theme/{path}` from the chosen theme of a Dex `web/` directory.
pub(super) async fn dex_theme_file(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Response {
    web_asset(state.templates.theme_file(&path))
}

fn web_asset(asset: Option<crate::web::assets::Asset>) -> Response {
    match asset {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            asset.bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(super) async fn copy_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        COPY_JS,
    )
        .into_response()
}

pub(super) async fn authorize(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let outcome = state
        .provider
        .start_authorization(
            query.as_deref().unwrap_or(""),
            state.cookie(&headers, LOGIN_COOKIE),
            state.cookie(&headers, SESSION_COOKIE),
            &addr,
        )
        .await
        .or_page(&state)?;
    Ok(proceed(&state, outcome))
}

#[derive(Deserialize)]
pub(super) struct ReqQuery {
    req: String,
}

pub(super) async fn choose_connector(
    State(state): State<AppState>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let choices = state
        .provider
        .connector_choices(&q.req, state.cookie(&headers, LOGIN_COOKIE))
        .await
        .or_page(&state)?;
    Ok(page(
        &state,
        StatusCode::OK,
        "choose.html",
        minijinja::context! {
            connectors => choices.connectors,
            unavailable => choices.unavailable,
            req => q.req,
        },
    ))
}

pub(super) async fn login_page(
    State(state): State<AppState>,
    Path(connector): Path<String>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let login = state
        .provider
        .connector_login(&q.req, &connector, state.cookie(&headers, LOGIN_COOKIE))
        .await
        .or_page(&state)?;
    Ok(match login {
        ConnectorLogin::Form(form) => {
            let hint = form.login_hint.clone();
            render_login(&state, StatusCode::OK, &form, &hint, false)
        }
        ConnectorLogin::Upstream(url) => see_other(&url),
    })
}

/// Where GitHub and OIDC providers send the browser back after a login.
pub(super) async fn upstream_callback(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let outcome = state
        .provider
        .upstream_callback(
            query.as_deref().unwrap_or(""),
            state.cookie(&headers, LOGIN_COOKIE),
        )
        .await
        .or_page(&state)?;
    Ok(proceed(&state, outcome))
}

/// Where an `authproxy` login arrives, through the authenticating proxy: the identity is in
/// the request's headers, believed only from the proxy's address (the connection's peer, not
/// a forwarded-for header, which anyone can write).
pub(super) async fn proxied_callback(
    State(state): State<AppState>,
    Path(connector): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let outcome = state
        .provider
        .proxied_callback(
            &connector,
            query.as_deref().unwrap_or(""),
            state.cookie(&headers, LOGIN_COOKIE),
            peer.ip(),
            &headers,
        )
        .await
        .or_page(&state)?;
    Ok(proceed(&state, outcome))
}

/// The field a re-posted SAML response carries, so that it is re-posted once at most.
const SAML_REPOSTED: &str = "lanyard_reposted";

/// The SAML assertion consumer service: the IdP's page posts `SAMLResponse` and `RelayState`
/// (lanyard's login state) here (HTTP-POST binding). It goes through the same callback step
/// as an OAuth redirect back, with `RelayState` as the `state`.
///
/// The post comes from the IdP's site, so the browser leaves out lanyard's `SameSite=Lax`
/// login cookie; lanyard then answers with a page that posts the same fields again from its
/// own origin, which carries the cookie.
pub(super) async fn saml_acs(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let (Some(relay_state), Some(saml_response)) = (field("RelayState"), field("SAMLResponse"))
    else {
        tracing::warn!("POST to /callback without SAMLResponse and RelayState");
        return Err(PageError::from(error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "The identity provider sent the browser back without a SAML response for this login. Go back to the application and sign in again.",
        )));
    };
    let cookie = state.cookie(&headers, LOGIN_COOKIE);
    if cookie.is_none() && field(SAML_REPOSTED).is_none() {
        let again = vec![
            ("SAMLResponse".to_string(), saml_response.to_string()),
            ("RelayState".to_string(), relay_state.to_string()),
            (SAML_REPOSTED.to_string(), "1".to_string()),
        ];
        return Ok(auto_post(
            &state,
            &state.provider.settings.endpoint("/callback"),
            &again,
        ));
    }
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("state", relay_state)
        .append_pair(lanyard_connectors::saml::SAML_RESPONSE_PARAM, saml_response)
        .finish();
    let outcome = state
        .provider
        .upstream_callback(&query, cookie)
        .await
        .or_page(&state)?;
    Ok(proceed(&state, outcome))
}

/// A SAML connector's service provider metadata, for the IdP administrator to import.
pub(super) async fn saml_metadata(
    State(state): State<AppState>,
    Path(connector): Path<String>,
) -> Response {
    let entry = match state.provider.connector(&connector).await {
        Ok(entry) => entry,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the stored connectors");
            return error_page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                "lanyard cannot read its connectors right now. Try again shortly.",
            );
        }
    };
    let metadata = entry.and_then(|c| match &c.kind {
        crate::oidc::ConnectorKind::Callback(callback) => callback.service_provider_metadata(),
        _ => None,
    });
    match metadata {
        Some(xml) => (
            [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
            xml,
        )
            .into_response(),
        None => error_page(
            &state,
            StatusCode::NOT_FOUND,
            "Not found",
            "No SAML connector has this id.",
        ),
    }
}

fn render_login(
    state: &AppState,
    status: StatusCode,
    form: &LoginForm,
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

pub(super) async fn login_submit(
    State(state): State<AppState>,
    Path(connector): Path<String>,
    Query(q): Query<ReqQuery>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = browser_form(&state, &headers, &body)?;
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
        .await
        .or_page(&state)?;
    Ok(match outcome {
        PasswordOutcome::Done(outcome) => proceed(&state, outcome),
        PasswordOutcome::Rejected(form) => render_login(
            &state,
            StatusCode::UNAUTHORIZED,
            &form,
            field("login"),
            true,
        ),
    })
}

pub(super) async fn approval_page(
    State(state): State<AppState>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let view = state
        .provider
        .approval(&q.req, state.cookie(&headers, LOGIN_COOKIE))
        .await
        .or_page(&state)?;
    Ok(page(
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
    ))
}

pub(super) async fn approval_submit(
    State(state): State<AppState>,
    Query(q): Query<ReqQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = browser_form(&state, &headers, &body)?;
    let approved = form.get("approval").map(String::as_str) == Some("approve");
    let next = state
        .provider
        .decide(
            &q.req,
            state.cookie(&headers, LOGIN_COOKIE),
            form.get("csrf").map(String::as_str).unwrap_or(""),
            approved,
        )
        .await
        .or_page(&state)?;
    Ok(proceed(
        &state,
        Outcome {
            next,
            browser_cookie: None,
            session_cookie: None,
        },
    ))
}

#[derive(Deserialize)]
pub(super) struct DeviceQuery {
    user_code: Option<String>,
}

pub(super) async fn device_page(
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

pub(super) async fn device_submit(
    State(state): State<AppState>,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = browser_form(&state, &headers, &body)?;
    let outcome = state
        .provider
        .submit_user_code(
            form.get("user_code").map(String::as_str).unwrap_or(""),
            form.get("csrf").map(String::as_str).unwrap_or(""),
            &addr,
            state.cookie(&headers, LOGIN_COOKIE),
            state.cookie(&headers, SESSION_COOKIE),
        )
        .await
        .or_page(&state)?;
    Ok(proceed(&state, outcome))
}

pub(super) async fn logout(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = parse_unique_params(query.as_deref().unwrap_or(""))
        .map_err(|e| PageError::page(&state, StatusCode::BAD_REQUEST, "Cannot sign out", &e))?;
    end_session(&state, &params, &headers, None).await
}

pub(super) async fn logout_confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = browser_form(&state, &headers, &body)?;
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
) -> Result<Response, PageError> {
    let logout = state
        .provider
        .end_session(params, state.cookie(headers, SESSION_COOKIE), csrf)
        .await
        .or_page(state)?;
    Ok(match logout {
        Logout::Confirm { csrf, params } => page(
            state,
            StatusCode::OK,
            "logout.html",
            minijinja::context! { csrf => csrf, fields => params },
        ),
        Logout::Done { redirect } => {
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
    })
}
