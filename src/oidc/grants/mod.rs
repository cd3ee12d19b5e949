//! The token endpoint: which grant a request is, whether the client may use it, and one file
//! per grant.

mod authorization_code;
mod client_credentials;
mod device_code;
mod refresh_token;
mod token_exchange;

use std::collections::HashMap;

use super::client_auth::presented_client;
use super::error::{ErrorCode, OAuthError};
use super::issue::TokenResponse;
use super::Provider;

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";

pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";

pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";

pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// The grants this build implements.
pub const SUPPORTED_GRANTS: &[&str] = &[
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_DEVICE_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
];

impl Provider {
    /// POST /token with a form body already checked for duplicates; counted by grant and
    /// client, or by error code.
    pub async fn token(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
        let result = self.token_response(authorization, form).await;
        match &result {
            Ok(issued) => self.metrics.record_token(issued.grant, &issued.client),
            Err(err) => self.metrics.record_token_error(err.code.as_str()),
        }
        result.map(|issued| issued.response)
    }

    async fn token_response(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<Issued, OAuthError> {
        let grant_type = form
            .get("grant_type")
            .filter(|g| !g.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
        if !SUPPORTED_GRANTS.contains(&grant_type.as_str())
            || !self.settings.grant_types.iter().any(|g| g == grant_type)
        {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type {grant_type} is not supported"),
            ));
        }
        let client = self
            .authenticate_client(&presented_client(authorization, form)?)
            .await?;
        let listed = client.grant_types.iter().any(|g| g == grant_type);
        // client_credentials hands out tokens without a user: only for clients that ask for
        // it by name, and only with a secret.
        let allowed = if grant_type == GRANT_CLIENT_CREDENTIALS {
            listed && !client.public
        } else {
            client.grant_types.is_empty() || listed
        };
        if !allowed {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use grant_type {grant_type}"),
            ));
        }
        let response = match grant_type.as_str() {
            GRANT_AUTHORIZATION_CODE => self.redeem_code(&client, form).await,
            GRANT_REFRESH_TOKEN => self.refresh(&client, form).await,
            GRANT_DEVICE_CODE => self.redeem_device_code(&client, form).await,
            GRANT_TOKEN_EXCHANGE => self.token_exchange(&client, form).await,
            _ => self.client_credentials(&client, form).await,
        }?;
        Ok(Issued {
            response,
            // One of SUPPORTED_GRANTS: a bounded label.
            grant: match grant_type.as_str() {
                GRANT_TOKEN_EXCHANGE => "token_exchange",
                g => SUPPORTED_GRANTS
                    .iter()
                    .find(|s| **s == g)
                    .copied()
                    .unwrap_or("unknown"),
            },
            client: client.id,
        })
    }
}

/// A token response with what the metrics count it by.
struct Issued {
    response: TokenResponse,
    grant: &'static str,
    client: String,
}
