//! The kubeconfig page: a signed-in user's commands and downloads for each cluster, and
//! tokens for the legacy `oidc` auth provider.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::pages::authorize_error;
use super::{browser_form, page, see_other, AppState, PageError, SESSION_COOKIE};
use crate::oidc::OAuthError;
use crate::storage::Session;
use crate::web::kubeconfig::{cluster_views, KUBECONFIG_CLIENT};

/// `/` leads to the kubeconfig page when clusters are configured.
pub(crate) async fn home(State(state): State<AppState>) -> Response {
    if state.kube.kubernetes.clusters.is_empty() {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    }
    see_other(&format!("{}/kubeconfig", state.base()))
}

/// The signed-in user behind the page, or where to send the browser to sign in.
async fn page_user(state: &AppState, headers: &HeaderMap) -> Result<Session, PageError> {
    if state.kube.kubernetes.clusters.is_empty() {
        return Err(PageError::page(
            state,
            StatusCode::NOT_FOUND,
            "No clusters",
            "This lanyard has no Kubernetes clusters configured.",
        ));
    }
    if state.provider.settings.session_lifetime.is_zero() {
        return Err(PageError::page(
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
            Err(PageError::from(see_other(&url)))
        }
        Err(err) => Err(authorize_error(state, err.into())),
    }
}

pub(super) async fn kubeconfig_page(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let session = page_user(&state, &headers).await?;
    Ok(render_kubeconfig(&state, &headers, &session, None))
}

/// The token form's CSRF value: bound to the session cookie, which other sites cannot read.
fn kubeconfig_csrf(state: &AppState, headers: &HeaderMap) -> String {
    crate::oidc::secrets::sha256_hex(&format!(
        "kubeconfig-tokens:{}",
        state.cookie(headers, SESSION_COOKIE).unwrap_or("")
    ))
}

/// "Create tokens" for the legacy oidc auth provider: real tokens for one cluster's client.
/// Issuing fails as the protocol layer does, with its JSON error.
pub(super) async fn kubeconfig_tokens(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = browser_form(&state, &headers, &body)?;
    let session = page_user(&state, &headers).await?;
    let csrf = form.get("csrf").map(String::as_str).unwrap_or("");
    if !crate::oidc::secrets::constant_time_eq(csrf, &kubeconfig_csrf(&state, &headers)) {
        return Err(PageError::page(
            &state,
            StatusCode::FORBIDDEN,
            "Form expired",
            "Reload the page and try again.",
        ));
    }
    let name = form.get("cluster").map(String::as_str).unwrap_or("");
    let Some(cluster) = state
        .kube
        .kubernetes
        .clusters
        .iter()
        .find(|c| c.name == name)
    else {
        return Err(PageError::page(
            &state,
            StatusCode::NOT_FOUND,
            "Unknown cluster",
            "No such cluster.",
        ));
    };
    let tokens = state
        .provider
        .issue_for_session(&session, &cluster.client_id)
        .await
        .map_err(|err: OAuthError| PageError::from(err.into_response()))?;
    Ok(render_kubeconfig(
        &state,
        &headers,
        &session,
        Some((name, tokens)),
    ))
}

fn render_kubeconfig(
    state: &AppState,
    headers: &HeaderMap,
    session: &Session,
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
pub(super) struct DownloadQuery {
    cluster: Option<String>,
}

pub(super) async fn kubeconfig_download(
    State(state): State<AppState>,
    Query(q): Query<DownloadQuery>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    page_user(&state, &headers).await?;
    let kube = &state.kube.kubernetes;
    let clusters = crate::kube::select_clusters(kube, q.cluster.as_deref()).map_err(|e| {
        PageError::page(
            &state,
            StatusCode::NOT_FOUND,
            "Unknown cluster",
            &e.to_string(),
        )
    })?;
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
    Ok(r)
}
