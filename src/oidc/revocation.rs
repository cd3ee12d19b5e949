//! Token revocation (RFC 7009) and introspection (RFC 7662).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::claims::{audiences, user_claims};
use super::client_auth::presented_client;
use super::error::OAuthError;
use super::form::required;
use super::secrets::secret_token_key;
use super::Provider;

impl Provider {
    /// POST /token/revoke. Unknown tokens, and tokens of other clients, get the same 200 as
    /// revoked ones (RFC 7009 §2.2); a storage failure is an error, never a 200.
    pub async fn revoke(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<(), OAuthError> {
        let client = self
            .authenticate_client(&presented_client(authorization, form)?)
            .await?;
        let token = required(form, "token")?;
        let hash = secret_token_key(token);
        let now = self.now();
        // Revoking a refresh token ends its family, and the access tokens of the family with it.
        if let Some((refresh, grant)) = self.storage.get_refresh_token(&hash).await? {
            if refresh.client_id == client.id && grant.client_id == client.id {
                self.storage.revoke_grant(&grant.id, now).await?;
                tracing::info!(client = %client.id, "refresh token family revoked");
            }
            return Ok(());
        }
        if let Some((access, _)) = self.storage.get_access_token(&hash, now).await? {
            if access.client_id == client.id {
                self.storage.revoke_access_token(&hash).await?;
                tracing::info!(client = %client.id, "access token revoked");
            }
        }
        Ok(())
    }

    /// POST /token/introspect: only authenticated (confidential) clients may ask, and a token
    /// is shown active only to the client it was issued to, a peer that client trusts, or a
    /// peer in its audience (`audience:server:client_id:`).
    pub async fn introspect(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<Map<String, Value>, OAuthError> {
        let presented = presented_client(authorization, form)?;
        if presented.secret.is_none() {
            return Err(OAuthError::invalid_client(
                "introspection requires client authentication",
            ));
        }
        let caller = self.authenticate_client(&presented).await?;
        let token = required(form, "token")?;
        let hash = secret_token_key(token);
        let now = self.now();
        let inactive = || {
            let mut m = Map::new();
            m.insert("active".into(), Value::Bool(false));
            m
        };

        let (grant, token_type, exp, iat) =
            if let Some((access, grant)) = self.storage.get_access_token(&hash, now).await? {
                (
                    access.grant_view(grant),
                    "access_token",
                    Some(access.expires_at),
                    access.created_at,
                )
            } else if let Some((refresh, grant)) = self.storage.get_refresh_token(&hash).await? {
                let idle_dead = self
                    .settings
                    .refresh
                    .valid_if_not_used_for
                    .is_some_and(|d| refresh.last_used_at + (d.as_secs() as i64) < now);
                let live = grant.revoked_at.is_none()
                    && refresh.rotated_at.is_none()
                    && refresh.expires_at.is_none_or(|e| e > now)
                    && !idle_dead;
                if !live {
                    return Ok(inactive());
                }
                (
                    grant,
                    "refresh_token",
                    refresh.expires_at,
                    refresh.created_at,
                )
            } else {
                return Ok(inactive());
            };

        // The token's client, a client it trusts, or a peer it was issued for may look.
        let owner_trusts_caller =
            if grant.client_id == caller.id || audiences(&grant).iter().any(|a| a == &caller.id) {
                true
            } else {
                match self.clients.find(&grant.client_id).await? {
                    Some(owner) => owner.trusted_peers.iter().any(|p| p == &caller.id),
                    None => false,
                }
            };
        if !owner_trusts_caller {
            return Ok(inactive());
        }
        let mut m = user_claims(&grant);
        m.insert("active".into(), Value::Bool(true));
        m.insert("client_id".into(), Value::String(grant.client_id.clone()));
        m.insert("scope".into(), Value::String(grant.scopes.join(" ")));
        m.insert("token_type".into(), Value::String(token_type.into()));
        m.insert(
            "iss".into(),
            Value::String(self.settings.issuer_str().into()),
        );
        m.insert(
            "aud".into(),
            Value::Array(audiences(&grant).into_iter().map(Value::String).collect()),
        );
        m.insert("iat".into(), Value::from(iat));
        if let Some(exp) = exp {
            m.insert("exp".into(), Value::from(exp));
        }
        if !grant.claims.username.is_empty() {
            m.insert(
                "username".into(),
                Value::String(grant.claims.username.clone()),
            );
        }
        Ok(m)
    }
}
