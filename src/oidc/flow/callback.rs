//! The callback step: the upstream sends the browser back to /callback.

use axum::http::StatusCode;
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
                &connector_scopes(&request.params.scopes),
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
        self.complete_login(request, &connector, identity).await
    }
}
