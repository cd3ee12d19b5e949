//! The login step: the connector chooser, lanyard's password form (rate limited per account
//! and address), the redirect to an upstream, and what every successful login records.

use std::sync::Arc;

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_connectors::{ConnectorError, Identity, PasswordConnector};

use crate::storage::{AuthRequest, LoginResult, Session, UpstreamLogin};

use super::{
    is_internal_client, AuthorizeError, ConnectorChoices, ConnectorLogin, LoginForm, Outcome,
    PasswordOutcome, Step,
};
use crate::oidc::claims::identity_claims;
use crate::oidc::password::{PasswordCheck, PasswordCheckError};
use crate::oidc::scopes::connector_scopes;
use crate::oidc::secrets::{new_secret_token, random_token, secret_token_key, sha256_hex};
use crate::oidc::{ClientInfo, ConnectorEntry, ConnectorKind, Provider};

impl Provider {
    /// The connector chooser: the connectors the request's client may use, as `(id, name)`,
    /// and the ids of those among them that cannot serve now.
    pub async fn connector_choices(
        &self,
        req_id: &str,
        browser_cookie: Option<&str>,
    ) -> Result<ConnectorChoices, AuthorizeError> {
        let request = self.load_request(req_id, browser_cookie).await?;
        let client = self.request_client(&request).await?;
        let usable = self.connectors_for(&client).await?;
        Ok(ConnectorChoices {
            connectors: usable
                .iter()
                .map(|c| (c.id.clone(), c.name.clone()))
                .collect(),
            unavailable: usable
                .iter()
                .filter(|c| !c.health.is_up())
                .map(|c| c.id.clone())
                .collect(),
        })
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
                &request, &client, &connector, password,
            ))),
            ConnectorKind::Callback(upstream) => {
                if request.login.is_some() {
                    return Err(AuthorizeError::login_gone());
                }
                // The state names the login (so the callback can find it) and carries a
                // secret only this login's row knows the hash of.
                let secret = random_token(32);
                let state = format!("{}.{}", request.id, secret);
                let redirect = match upstream
                    .login_url(
                        &connector_scopes(&request.params.scopes),
                        &self.settings.endpoint("/callback"),
                        &state,
                    )
                    .await
                {
                    Ok(redirect) => {
                        connector.health.reached();
                        redirect
                    }
                    Err(err) => {
                        if let ConnectorError::Unavailable(reason) = &err {
                            connector.health.unreachable(reason.clone());
                        }
                        return Err(self.connector_failure(&connector.id, err));
                    }
                };
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
            ConnectorKind::TokenExchangeOnly => Err(AuthorizeError::page(
                StatusCode::NOT_FOUND,
                "Unknown connector",
                "This sign-in method does not exist or is not allowed for this application.",
            )),
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

        let scopes = connector_scopes(&request.params.scopes);
        let checked = self
            .check_password(
                &connector.id,
                password_connector,
                &scopes,
                username,
                password,
                client_addr,
            )
            .await;
        let identity = match checked {
            Ok(PasswordCheck::Accepted(identity)) => identity,
            Ok(PasswordCheck::Rejected) => {
                return Ok(PasswordOutcome::Rejected(Self::form_for(
                    &request,
                    &client,
                    &connector,
                    password_connector,
                )))
            }
            Ok(PasswordCheck::RateLimited(retry)) => {
                return Err(AuthorizeError::rate_limited(retry))
            }
            Err(PasswordCheckError::Connector(err)) => {
                return Err(self.connector_failure(&connector.id, err))
            }
            Err(PasswordCheckError::Storage(err)) => return Err(err.into()),
        };
        Ok(PasswordOutcome::Done(
            self.complete_login(request, &connector, identity).await?,
        ))
    }

    /// A connector failed: the cause goes to the log, the person gets a page that says what
    /// they can do (and, when the upstream refused them, why).
    pub(crate) fn connector_failure(
        &self,
        connector_id: &str,
        err: ConnectorError,
    ) -> AuthorizeError {
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

    /// A connector vouched for the user: record the login on its request, start a sign-in
    /// session, then ask for approval or finish.
    pub(crate) async fn complete_login(
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
        let cookie = new_secret_token();
        self.storage
            .create_session(&Session {
                id_hash: secret_token_key(&cookie),
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
}
