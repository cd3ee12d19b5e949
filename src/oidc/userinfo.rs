//! /userinfo: the claims of the grant an opaque access token belongs to, as far as the
//! token's own scopes reach.

use serde_json::{Map, Value};

use super::claims::user_claims;
use super::error::OAuthError;
use super::secrets::secret_token_key;
use super::Provider;

/// The token from `Authorization: Bearer <token>` (RFC 6750 §2.1).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, OAuthError> {
    let header = authorization.ok_or_else(|| OAuthError {
        // RFC 6750 §3.1: no credentials at all gets a challenge without an error code.
        description: "a Bearer access token is required".into(),
        ..OAuthError::invalid_token("")
    })?;
    let (scheme, token) = header
        .split_once(' ')
        .ok_or_else(|| OAuthError::invalid_token("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(OAuthError::invalid_token(
            "the Authorization scheme must be Bearer",
        ));
    }
    Ok(token.trim())
}

impl Provider {
    pub async fn userinfo(
        &self,
        authorization: Option<&str>,
    ) -> Result<Map<String, Value>, OAuthError> {
        let token = bearer_token(authorization)?;
        let (access, grant) = self
            .storage
            .get_access_token(&secret_token_key(token), self.now())
            .await?
            .ok_or_else(|| {
                OAuthError::invalid_token("the access token is invalid, expired or revoked")
            })?;
        Ok(user_claims(&access.grant_view(grant)))
    }
}
