//! HTTP handlers: each translates a request into one call on the protocol layer and its
//! answer into a response. Nothing here decides protocol questions.
//!
//! [`machine`] holds the JSON endpoints programs call, [`pages`] the browser's sign-in
//! pages, [`kubeconfig`] the page that hands out kubeconfigs.

mod kubeconfig;
pub(super) mod machine;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::extract::form_fields;
use super::Live;
use crate::oidc::Provider;
use crate::web::Templates;

pub(crate) use kubeconfig::home;

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
        .route("/auth", get(pages::authorize))
        .route("/login", get(pages::choose_connector))
        .route(
            "/auth/{connector}",
            get(pages::login_page).post(pages::login_submit),
        )
        .route(
            "/callback",
            get(pages::upstream_callback).post(pages::saml_acs),
        )
        .route("/callback/{connector}", get(pages::proxied_callback))
        .route("/saml/{connector}/metadata", get(pages::saml_metadata))
        .route(
            "/approval",
            get(pages::approval_page).post(pages::approval_submit),
        )
        .route(
            "/device",
            get(pages::device_page).post(pages::device_submit),
        )
        .route("/logout", get(pages::logout).post(pages::logout_confirm))
        .route("/", get(kubeconfig::home))
        .route(
            "/kubeconfig",
            get(kubeconfig::kubeconfig_page).post(kubeconfig::kubeconfig_tokens),
        )
        .route("/kubeconfig/download", get(kubeconfig::kubeconfig_download))
        .route("/static/copy.js", get(pages::copy_js))
        .route("/healthz", get(|| async { "ok" }))
        .route("/static/style.css", get(pages::stylesheet))
        // A Dex `web/` directory's files, where Dex serves them (lanyard's own two above win).
        .route("/static/{*path}", get(pages::dex_static_file))
        .route("/theme/{*path}", get(pages::dex_theme_file))
}

/// The discovery document's route under the issuer's path.
pub const DISCOVERY_ROUTE: &str = "/.well-known/openid-configuration";
/// The JWKS route under the issuer's path.
pub const JWKS_ROUTE: &str = "/keys";

/// Endpoints that programs call, and that `web.allowedOrigins` may open to browsers (CORS).
pub fn machine_routes() -> Router<Live> {
    Router::new()
        .route(DISCOVERY_ROUTE, get(machine::discovery))
        .route(JWKS_ROUTE, get(machine::jwks))
        .route("/token", post(machine::token))
        .route("/token/revoke", post(machine::revoke))
        .route("/token/introspect", post(machine::introspect))
        .route("/device/code", post(machine::device_code))
        .route("/userinfo", get(machine::userinfo).post(machine::userinfo))
}

/// A browser request that ends early: an error page, or a redirect (to sign in, or to the
/// client with its error). Rendered where it arises, with the templates of the request's
/// generation; boxed because a response is large and this is the rare path.
pub struct PageError(Box<Response>);

impl PageError {
    fn page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Self {
        Self::from(error_page(state, status, title, message))
    }
}

impl From<Response> for PageError {
    fn from(response: Response) -> Self {
        PageError(Box::new(response))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        *self.0
    }
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

/// A form posted by a browser: refused when it comes from another site or cannot be read.
fn browser_form(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<HashMap<String, String>, PageError> {
    refuse_cross_site(state, headers)?;
    form_fields(headers, body).map_err(|_| {
        PageError::page(
            state,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The form could not be read.",
        )
    })
}

/// Refuses a form post that a browser reports as coming from another site.
fn refuse_cross_site(state: &AppState, headers: &HeaderMap) -> Result<(), PageError> {
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
        return Err(PageError::page(
            state,
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was submitted from another site.",
        ));
    }
    Ok(())
}
