//! The callback step: the upstream sends the browser back to /callback.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{AuthorizeError, Outcome};
use crate::oidc::scopes::connector_scopes;
use crate::oidc::secrets::{constant_time_eq, sha256_hex};
use crate::oidc::{ConnectorKind, Provider};

impl Provider {
    /// The upstream sent the browser back to `/callback` with `query`.
    pub async fn upstream_callback(
        &self,
        query: &str,
        browser_cookie: Option<&str>,
    ) -> Result<Outcome, AuthorizeError> {
        self.callback(query, browser_cookie, None).await
    }

    /// The browser came back to `/callback/<connector_id>` through an authenticating proxy
    /// (`authproxy`): the identity is in `headers`, believed only as the connector allows for
    /// a connection from `peer`.
    pub async fn proxied_callback(
        &self,
        connector_id: &str,
        query: &str,
        browser_cookie: Option<&str>,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Outcome, AuthorizeError> {
        self.callback(
            query,
            browser_cookie,
            Some(ProxiedRequest {
                connector_id,
                peer,
                headers,
            }),
        )
        .await
    }

    async fn callback(
        &self,
        query: &str,
        browser_cookie: Option<&str>,
        proxied: Option<ProxiedRequest<'_>>,
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
            request.login.is_none()
                && constant_time_eq(&sha256_hex(secret), &u.state_hash)
                && proxied
                    .as_ref()
                    .is_none_or(|p| p.connector_id == u.connector_id)
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
        let scopes = connector_scopes(&request.params.scopes);
        let answer = match proxied {
            Some(p) => {
                callback
                    .handle_proxied_callback(&scopes, p.peer, p.headers)
                    .await
            }
            None => {
                callback
                    .handle_callback(
                        &scopes,
                        &self.settings.endpoint("/callback"),
                        &pending,
                        query,
                    )
                    .await
            }
        };
        let identity = match answer {
            Ok(identity) => identity,
            Err(err) => return Err(self.connector_failure(&connector.id, err)),
        };
        self.metrics.record_login(&connector.id, "success");
        self.complete_login(request, &connector, identity).await
    }
}

/// A callback to `/callback/<connector id>`: which connector it names, and the request's
/// headers and peer address.
struct ProxiedRequest<'a> {
    connector_id: &'a str,
    peer: IpAddr,
    headers: &'a HeaderMap,
}
