//! The token exchange grant (RFC 8693).

use lanyard_connectors::oidc::ID_TOKEN_TYPE;
use serde_json::Value;

use crate::storage::Grant;

use crate::oidc::claims::identity_claims;
use crate::oidc::error::{ErrorCode, OAuthError};
use crate::oidc::issue::TokenResponse;
use crate::oidc::scopes::{connector_scopes, Scopes, OFFLINE_ACCESS, OPENID};
use crate::oidc::secrets::new_grant_id;
use crate::oidc::{ClientInfo, Provider};

impl Provider {
    /// RFC 8693 token exchange: a token from an upstream issuer (a CI system's ID token) for
    /// a lanyard token addressed to the requesting client. The named connector verifies the
    /// subject token; the client must be allowed that connector. Refusals write nothing.
    pub(super) async fn token_exchange(
        &self,
        client: &ClientInfo,
        subject_token: &str,
        subject_token_type: &str,
        connector_id: &str,
        requested: &'static str,
        mut scopes: Scopes,
    ) -> Result<TokenResponse, OAuthError> {
        let Some(verifier) = self
            .connector(connector_id)
            .await?
            .and_then(|c| c.token_identity)
        else {
            return Err(OAuthError::invalid_request(
                "connector_id names no connector that takes subject tokens",
            ));
        };
        if !client.allowed_connectors.is_empty()
            && !client.allowed_connectors.iter().any(|c| c == connector_id)
        {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use connector {connector_id}"),
            ));
        }
        scopes.require(OPENID);
        if scopes.contains(OFFLINE_ACCESS) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "token exchange issues no refresh token: exchange a fresh subject token instead",
            ));
        }
        self.check_scopes_for(client, &scopes)
            .await
            .map_err(|m| OAuthError::new(ErrorCode::InvalidScope, m))?;

        use lanyard_connectors::ConnectorError;
        let subject = verifier
            .token_identity(&connector_scopes(&scopes), subject_token_type, subject_token)
            .await
            .map_err(|err| {
                tracing::info!(client = %client.id, connector = %connector_id, error = %err, "token exchange refused");
                match err {
                    // RFC 8693 §2.2.2: an invalid or unacceptable subject token is
                    // invalid_request.
                    ConnectorError::InvalidToken(m) => OAuthError::invalid_request(format!(
                        "the subject token is not acceptable: {m}"
                    )),
                    ConnectorError::AccessDenied(m) | ConnectorError::SessionEnded(m) => {
                        OAuthError::invalid_request(format!("the subject may not sign in: {m}"))
                    }
                    ConnectorError::Unavailable(_) => OAuthError::new(
                        ErrorCode::TemporarilyUnavailable,
                        "the upstream identity provider is unavailable; try again shortly",
                    ),
                    _ => OAuthError::new(
                        ErrorCode::ServerError,
                        "the connector failed to check the subject token",
                    ),
                }
            })?;

        let now = self.now();
        // Nothing issued for the subject token outlives it.
        let lifetime = self
            .id_token_ttl_secs()
            .min(subject.expires_at.saturating_sub(now));
        if lifetime <= 0 {
            return Err(OAuthError::invalid_request(
                "the subject token is not acceptable: it has expired",
            ));
        }
        let grant = Grant {
            id: new_grant_id(),
            client_id: client.id.clone(),
            connector_id: connector_id.to_string(),
            claims: identity_claims(&subject.identity),
            scopes: scopes.into_vec(),
            nonce: None,
            auth_time: now,
            connector_data: None,
            created_at: now,
            revoked_at: None,
        };
        let (tokens, mut records) = self.new_tokens(&grant, now, false);
        records.access.expires_at = now + lifetime;
        // Recorded before anything is handed out, the ID token too: no token without its grant.
        self.storage.issue_grant(&grant, &records).await?;
        let (token, token_type) = if requested == ID_TOKEN_TYPE {
            let mut claims = self.id_token_claims(&grant, None, now, false);
            claims.insert("exp".into(), Value::from(now + lifetime));
            // RFC 8693 §2.2.1: N_A for a token that is not an OAuth access token.
            (self.sign(claims).await?, "N_A")
        } else {
            (tokens.access, "Bearer")
        };
        Ok(TokenResponse {
            access_token: token,
            token_type,
            expires_in: lifetime as u64,
            id_token: None,
            refresh_token: None,
            scope: grant.scopes.join(" "),
            issued_token_type: Some(requested),
        })
    }
}
