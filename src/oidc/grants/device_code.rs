//! The device code grant (RFC 8628 §3.4): a device polls until its user approves.

use crate::storage::{DevicePoll, Grant, UserClaims};

use crate::oidc::device::device_grant_id;
use crate::oidc::error::{ErrorCode, OAuthError};
use crate::oidc::issue::TokenResponse;
use crate::oidc::secrets::sha256_hex;
use crate::oidc::{ClientInfo, Provider};

impl Provider {
    pub(super) async fn redeem_device_code(
        &self,
        client: &ClientInfo,
        device_code: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let now = self.now();
        let hash = sha256_hex(device_code);
        // The grant's id is fixed by the device code (see `device_grant_id`), so the tokens
        // can be bound to it before the storage decides, in one transaction, whether this
        // poll redeems the approval.
        let request = self
            .storage
            .find_device_request(&hash)
            .await?
            .filter(|r| r.client_id == client.id)
            .ok_or_else(|| {
                OAuthError::invalid_grant("the device code is invalid or already used")
            })?;
        let shape = Grant {
            id: device_grant_id(&hash),
            client_id: client.id.clone(),
            connector_id: String::new(),
            claims: UserClaims::default(),
            scopes: request.scopes.clone(),
            nonce: None,
            auth_time: now,
            connector_data: None,
            created_at: now,
            revoked_at: None,
        };
        let refresh = self.wants_refresh(&shape, client).await?;
        let (tokens, records) = self.new_tokens(&shape, now, refresh);
        let err = |code, d: &str| OAuthError::new(code, d);
        match self
            .storage
            .poll_device_request(&hash, &client.id, &records, now)
            .await?
        {
            DevicePoll::Issued(grant) => self.respond(&grant, tokens, now, false).await,
            DevicePoll::Pending => Err(err(
                ErrorCode::AuthorizationPending,
                "the user has not finished signing in yet",
            )),
            DevicePoll::SlowDown => Err(err(
                ErrorCode::SlowDown,
                "polling too fast; wait longer between requests",
            )),
            DevicePoll::Expired => Err(err(ErrorCode::ExpiredToken, "the device code has expired")),
            DevicePoll::Denied => Err(err(ErrorCode::AccessDenied, "the user denied the request")),
            DevicePoll::AlreadyRedeemed | DevicePoll::NotFound => Err(OAuthError::invalid_grant(
                "the device code is invalid or already used",
            )),
        }
    }
}
