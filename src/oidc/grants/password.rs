//! The resource owner password credentials grant (RFC 6749 §4.3), as Dex offers it: only with
//! `oauth2.passwordConnector`, through that connector's password check, the same check (and
//! the same guessing budget) as lanyard's login form.

use lanyard_connectors::ConnectorError;

use crate::storage::Grant;

use crate::oidc::claims::identity_claims;
use crate::oidc::error::{Challenge, ErrorCode, OAuthError};
use crate::oidc::issue::TokenResponse;
use crate::oidc::password::{PasswordCheck, PasswordCheckError};
use crate::oidc::scopes::{connector_scopes, Scopes};
use crate::oidc::secrets::new_grant_id;
use crate::oidc::{ClientInfo, ConnectorKind, Provider};

impl Provider {
    /// `client_addr` is the address the per-address guessing budget counts against.
    pub(super) async fn password_grant(
        &self,
        client: &ClientInfo,
        username: &str,
        password: &str,
        scopes: Scopes,
        nonce: Option<&str>,
        client_addr: &str,
    ) -> Result<TokenResponse, OAuthError> {
        // Dex answers scope problems of this grant with invalid_request.
        self.check_scopes_for(client, &scopes)
            .await
            .map_err(OAuthError::invalid_request)?;
        let connector = match self.settings.password_connector.as_deref() {
            Some(id) => self.connector(id).await?,
            None => None,
        };
        let connector = connector.ok_or_else(|| {
            OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "the password grant has no connector",
            )
        })?;
        let ConnectorKind::Password(checker) = &connector.kind else {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "the password grant's connector does not check passwords",
            ));
        };
        // A client limited to some connectors does not get around that through this grant.
        if !client.allowed_connectors.is_empty()
            && !client.allowed_connectors.contains(&connector.id)
        {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use connector {}", connector.id),
            ));
        }

        let checked = self
            .check_password(
                &connector.id,
                checker,
                &connector_scopes(&scopes),
                username,
                password,
                client_addr,
            )
            .await;
        let identity = match checked {
            Ok(PasswordCheck::Accepted(identity)) => identity,
            Ok(PasswordCheck::Rejected) => {
                return Err(OAuthError {
                    challenge: Some(Challenge::Basic),
                    ..OAuthError::new(ErrorCode::AccessDenied, "Invalid username or password")
                })
            }
            Ok(PasswordCheck::RateLimited(retry)) => {
                return Err(OAuthError::rate_limited(retry.retry_after_secs()))
            }
            Err(PasswordCheckError::Storage(err)) => return Err(err.into()),
            Err(PasswordCheckError::Connector(err)) => {
                return Err(self.password_grant_failure(&connector.id, err))
            }
        };

        let now = self.now();
        let connector_data = match &identity.connector_data {
            Some(data) => Some(
                self.keys
                    .seal_connector_data(&connector.id, data)
                    .map_err(|err| {
                        tracing::error!(connector = %connector.id, error = %err, "sealing connector data failed");
                        OAuthError::new(ErrorCode::ServerError, "could not store the sign-in")
                    })?,
            ),
            None => None,
        };
        let grant = Grant {
            id: new_grant_id(),
            client_id: client.id.clone(),
            connector_id: connector.id.clone(),
            claims: identity_claims(&identity),
            scopes: scopes.into_vec(),
            nonce: nonce.map(str::to_string),
            auth_time: now,
            connector_data,
            created_at: now,
            revoked_at: None,
        };
        // As in Dex: a refresh token only when the connector can re-check the user later.
        let refresh = self.wants_refresh(&grant, client).await? && connector.refresh.is_some();
        let (tokens, records) = self.new_tokens(&grant, now, refresh);
        self.storage.issue_grant(&grant, &records).await?;
        self.respond(&grant, tokens, now, true).await
    }

    /// A connector that could not decide: counted and logged like a failure at the login
    /// form; the caller learns as much as the person at the form would.
    fn password_grant_failure(&self, connector_id: &str, err: ConnectorError) -> OAuthError {
        match err {
            ConnectorError::AccessDenied(reason) => {
                self.metrics.record_login(connector_id, "denied");
                tracing::info!(connector = %connector_id, %reason, "password grant refused by the connector");
                OAuthError {
                    challenge: Some(Challenge::Basic),
                    ..OAuthError::new(
                        ErrorCode::AccessDenied,
                        format!("the user may not use this service: {reason}"),
                    )
                }
            }
            ConnectorError::Unavailable(reason) => {
                self.metrics.record_login(connector_id, "error");
                tracing::error!(connector = %connector_id, %reason, "password grant: connector unavailable");
                OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the identity provider is unavailable; try again shortly",
                )
            }
            err => {
                self.metrics.record_login(connector_id, "error");
                tracing::error!(connector = %connector_id, error = %err, "password grant: connector login failed");
                OAuthError::invalid_request("Could not login user")
            }
        }
    }
}
