//! The client credentials grant: a token for a confidential client itself, no user.

use crate::storage::{Grant, UserClaims};

use crate::oidc::claims::CLIENT_CONNECTOR;
use crate::oidc::error::{ErrorCode, OAuthError};
use crate::oidc::issue::TokenResponse;
use crate::oidc::scopes::{scope_supported, Scopes, OFFLINE_ACCESS};
use crate::oidc::secrets::new_grant_id;
use crate::oidc::{ClientInfo, Provider};

impl Provider {
    pub(super) async fn client_credentials(
        &self,
        client: &ClientInfo,
        scopes: Scopes,
    ) -> Result<TokenResponse, OAuthError> {
        if let Some(bad) = scopes
            .iter()
            .find(|s| *s == OFFLINE_ACCESS || !scope_supported(s))
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("scope {bad} is not available to client_credentials"),
            ));
        }
        let now = self.now();
        let grant = Grant {
            id: new_grant_id(),
            client_id: client.id.clone(),
            connector_id: CLIENT_CONNECTOR.to_string(),
            claims: UserClaims {
                user_id: client.id.clone(),
                username: client.display_name().to_string(),
                ..UserClaims::default()
            },
            scopes: scopes.into_vec(),
            nonce: None,
            auth_time: now,
            connector_data: None,
            created_at: now,
            revoked_at: None,
        };
        let (tokens, records) = self.new_tokens(&grant, now, false);
        self.storage.issue_grant(&grant, &records).await?;
        Ok(TokenResponse {
            access_token: tokens.access,
            token_type: "Bearer",
            expires_in: self.settings.id_token_ttl.as_secs(),
            id_token: None,
            refresh_token: None,
            scope: grant.scopes.join(" "),
            issued_token_type: None,
        })
    }
}
