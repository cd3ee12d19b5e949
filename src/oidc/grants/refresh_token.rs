//! The refresh token grant: rotation, reuse within the interval, replay revoking the family,
//! and the connector re-checking who the user is.

use crate::storage::{Grant, RefreshOutcome, Rotation, UserClaims};

use crate::oidc::claims::identity_claims;
use crate::oidc::error::{ErrorCode, OAuthError};
use crate::oidc::issue::{NewTokens, TokenResponse};
use crate::oidc::scopes::{connector_scopes, has, Scopes};
use crate::oidc::secrets::{open_successor, seal_successor, secret_token_key};
use crate::oidc::{ClientInfo, Provider};

impl Provider {
    pub(super) async fn refresh(
        &self,
        client: &ClientInfo,
        token: &str,
        requested: Option<Scopes>,
    ) -> Result<TokenResponse, OAuthError> {
        let invalid =
            || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let now = self.now();
        let token_hash = secret_token_key(token);
        let (stored, grant) = self
            .storage
            .get_refresh_token(&token_hash)
            .await?
            .ok_or_else(invalid)?;
        if stored.client_id != client.id || grant.client_id != client.id {
            return Err(invalid());
        }
        if grant.revoked_at.is_some() {
            return Err(invalid());
        }
        // RFC 6749 §6: a refresh may ask for fewer scopes than were granted. The grant keeps
        // all of them, so a later refresh may ask for the original scopes again; the new
        // access token keeps the fewer, so /userinfo and introspection answer with them.
        let narrowed: Option<Vec<String>> = match requested {
            Some(requested) => {
                if requested.iter().any(|s| !has(&grant.scopes, s)) {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        "a refresh may not widen the granted scopes",
                    ));
                }
                Some(
                    grant
                        .scopes
                        .iter()
                        .filter(|g| requested.contains(g))
                        .cloned()
                        .collect(),
                )
            }
            None => None,
        }
        // The grant's own scopes need not be stored again.
        .filter(|scopes| *scopes != grant.scopes);

        // Ask the connector who the user is now: a deleted user or a changed password ends
        // the session; changed groups show in the new token.
        let (claims, connector_data) = self.refresh_identity(&grant).await?;

        let policy = &self.settings.refresh;
        let (new_access, mut records) = self.new_tokens(&grant, now, !policy.disable_rotation);
        records.access.scopes = narrowed;
        let successor = new_access.refresh.clone();
        let successor_record = records.refresh.take().map(|mut r| {
            // Successors belong to the same family and inherit its end.
            r.expires_at = stored.expires_at;
            r
        });
        let sealed = match &successor {
            Some(plain) => Some(seal_successor(token, plain).map_err(|e| {
                tracing::error!(error = %e, "sealing a refresh token failed");
                OAuthError::new(ErrorCode::ServerError, "could not issue a refresh token")
            })?),
            None => None,
        };
        let rotation = Rotation {
            old_hash: token_hash,
            successor: successor_record,
            successor_sealed: sealed,
            access: records.access,
            claims,
            connector_data,
            reuse_interval: policy.reuse_interval.as_secs() as i64,
            idle_cutoff: policy
                .valid_if_not_used_for
                .map(|d| now - d.as_secs() as i64),
        };
        let (grant, refresh) = match self.storage.rotate_refresh_token(&rotation, now).await? {
            RefreshOutcome::Rotated(grant) => {
                (grant, successor.unwrap_or_else(|| token.to_string()))
            }
            RefreshOutcome::Reused {
                grant,
                successor_sealed,
            } => {
                let refresh = open_successor(token, &successor_sealed).ok_or_else(|| {
                    tracing::error!("a sealed refresh successor did not open");
                    invalid()
                })?;
                (grant, refresh)
            }
            RefreshOutcome::Replayed { .. } => {
                tracing::warn!(client = %client.id, "a rotated refresh token was reused; its family is revoked");
                return Err(invalid());
            }
            RefreshOutcome::Expired | RefreshOutcome::Revoked | RefreshOutcome::NotFound => {
                return Err(invalid())
            }
        };
        self.respond(
            &rotation.access.grant_view(grant),
            NewTokens {
                access: new_access.access,
                refresh: Some(refresh),
            },
            now,
            false,
        )
        .await
    }

    /// The user's current claims from the grant's connector.
    async fn refresh_identity(
        &self,
        grant: &Grant,
    ) -> Result<(UserClaims, Option<String>), OAuthError> {
        let Some(connector) = self.connector(&grant.connector_id).await? else {
            // A connector removed from the config takes its users' sessions with
            // it, since nothing can vouch for them any more (putting it back revives them).
            tracing::info!(connector = %grant.connector_id, "refresh refused: the grant's connector is no longer configured");
            return Err(OAuthError::invalid_grant(
                "the sign-in method of this session is no longer configured",
            ));
        };
        let Some(refresher) = connector.refresh.clone() else {
            // A connector that cannot re-check its users keeps what it said at login.
            return Ok((grant.claims.clone(), grant.connector_data.clone()));
        };
        let identity = lanyard_connectors::Identity {
            user_id: grant.claims.user_id.clone(),
            username: grant.claims.username.clone(),
            preferred_username: grant.claims.preferred_username.clone(),
            email: grant.claims.email.clone(),
            email_verified: grant.claims.email_verified,
            groups: grant.claims.groups.clone(),
            connector_data: match &grant.connector_data {
                Some(stored) => Some(
                    self.keys
                        .open_connector_data(&grant.connector_id, stored)
                        .map_err(|err| {
                            tracing::error!(error = %err, "refresh refused: the grant's connector data does not open");
                            OAuthError::new(
                                ErrorCode::ServerError,
                                "the session's sign-in data cannot be read",
                            )
                        })?,
                ),
                None => None,
            },
        };
        match refresher
            .refresh(&connector_scopes(&grant.scopes), &identity)
            .await
        {
            Ok(fresh) => {
                // A connector that has nothing new to remember keeps what it had; either is
                // written sealed, which also seals data stored before encryption.
                let data = fresh
                    .connector_data
                    .as_ref()
                    .or(identity.connector_data.as_ref());
                let sealed = match data {
                    Some(data) => Some(
                        self.keys
                            .seal_connector_data(&grant.connector_id, data)
                            .map_err(|err| {
                                tracing::error!(error = %err, "sealing connector data failed");
                                OAuthError::new(
                                    ErrorCode::ServerError,
                                    "could not store the session's sign-in data",
                                )
                            })?,
                    ),
                    None => None,
                };
                Ok((identity_claims(&fresh), sealed))
            }
            Err(lanyard_connectors::ConnectorError::SessionEnded(reason)) => {
                tracing::info!(connector = %grant.connector_id, %reason, "upstream ended the session on refresh");
                self.storage.revoke_grant(&grant.id, self.now()).await?;
                Err(OAuthError::invalid_grant("the user's session has ended"))
            }
            Err(err) => {
                tracing::error!(connector = %grant.connector_id, error = %err, "connector refresh failed");
                Err(OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "the upstream identity provider is unavailable; try again shortly",
                ))
            }
        }
    }
}
