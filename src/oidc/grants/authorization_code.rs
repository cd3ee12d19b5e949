//! The authorization code grant: a code from /auth, checked against its redirect URI and
//! PKCE verifier, redeemed once.

use crate::storage::Redemption;

use crate::oidc::error::OAuthError;
use crate::oidc::issue::TokenResponse;
use crate::oidc::pkce;
use crate::oidc::secrets::secret_token_key;
use crate::oidc::{ClientInfo, Provider};

impl Provider {
    pub(super) async fn redeem_code(
        &self,
        client: &ClientInfo,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let code_hash = secret_token_key(code);
        let now = self.now();

        let invalid = || OAuthError::invalid_grant("the code is invalid, expired or already used");
        let stored = self
            .storage
            .get_auth_code(&code_hash)
            .await?
            .ok_or_else(invalid)?;
        if stored.redeemed_at.is_some() {
            // A second use: revoke what the first use issued (RFC 6749 §4.1.2).
            self.storage.revoke_grant(&stored.grant.id, now).await?;
            tracing::warn!(client = %client.id, "authorization code replayed; its grant is revoked");
            return Err(invalid());
        }
        // Checks that refuse the request write nothing.
        if stored.grant.client_id != client.id || stored.expires_at <= now {
            return Err(invalid());
        }
        if stored.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the one the code was issued for",
            ));
        }
        match (&stored.code_challenge, verifier) {
            (Some(challenge), Some(verifier)) => {
                if !pkce::is_valid_verifier(verifier) || !pkce::s256_matches(verifier, challenge) {
                    return Err(OAuthError::invalid_grant(
                        "code_verifier does not match the code_challenge",
                    ));
                }
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant("code_verifier is required"));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier given for a request that sent no code_challenge",
                ));
            }
            (None, None) if client.public => {
                return Err(OAuthError::invalid_grant("public clients must use PKCE"));
            }
            (None, None) => {}
        }

        let refresh = self.wants_refresh(&stored.grant, client).await?;
        let (tokens, records) = self.new_tokens(&stored.grant, now, refresh);
        let grant = match self
            .storage
            .redeem_auth_code(&code_hash, &records, now)
            .await?
        {
            Redemption::Issued(grant) => grant,
            Redemption::Replayed { .. } => {
                tracing::warn!(client = %client.id, "authorization code redeemed concurrently; its grant is revoked");
                return Err(invalid());
            }
            Redemption::Expired | Redemption::NotFound => return Err(invalid()),
        };
        self.respond(&grant, tokens, now, true).await
    }
}
