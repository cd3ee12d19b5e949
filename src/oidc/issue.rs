//! Issuing tokens, shared by the grants and the browser flow: the random tokens and the
//! records that store their digests, ID token claims, signing, and reading back an ID token
//! lanyard signed.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::GrantType;
use crate::storage::{AccessToken, Grant, IssuedTokens, RefreshToken};

use super::claims::{audiences, user_claims};
use super::error::{ErrorCode, OAuthError};
use super::scopes::OFFLINE_ACCESS;
use super::secrets::{at_hash, new_grant_id, new_secret_token, secret_token_key};
use super::{ClientInfo, Provider};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
    /// RFC 8693: what `access_token` holds, in token exchange answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// Plaintext tokens for one response; only their digests are stored.
pub(crate) struct NewTokens {
    pub(crate) access: String,
    pub(crate) refresh: Option<String>,
}

impl Provider {
    /// The tokens one response hands out, and the records that store them.
    pub(crate) fn new_tokens(
        &self,
        grant: &Grant,
        now: i64,
        refresh: bool,
    ) -> (NewTokens, IssuedTokens) {
        let access = new_secret_token();
        let refresh_plain = refresh.then(new_secret_token);
        let records = IssuedTokens {
            access: AccessToken {
                token_hash: secret_token_key(&access),
                grant_id: grant.id.clone(),
                client_id: grant.client_id.clone(),
                created_at: now,
                expires_at: now + self.id_token_ttl_secs(),
                scopes: None,
            },
            refresh: refresh_plain.as_ref().map(|r| RefreshToken {
                token_hash: secret_token_key(r),
                grant_id: grant.id.clone(),
                client_id: grant.client_id.clone(),
                created_at: now,
                last_used_at: now,
                expires_at: self
                    .settings
                    .refresh
                    .absolute_lifetime
                    .map(|d| grant.created_at + d.as_secs() as i64),
                rotated_at: None,
                successor_hash: None,
            }),
        };
        (
            NewTokens {
                access,
                refresh: refresh_plain,
            },
            records,
        )
    }

    /// Whether a grant gets a refresh token: it asked for offline_access, and the client may
    /// use the refresh grant.
    /// A refresh token is issued for `offline_access` when the grant type is on and the
    /// login's connector can refresh: Dex issues none for connectors without refresh (SAML).
    pub(crate) async fn wants_refresh(
        &self,
        grant: &Grant,
        client: &ClientInfo,
    ) -> Result<bool, crate::storage::StorageError> {
        if !(grant.scopes.iter().any(|s| s == OFFLINE_ACCESS)
            && self.settings.grant_enabled(GrantType::RefreshToken)
            && client.allows_grant(GrantType::RefreshToken))
        {
            return Ok(false);
        }
        Ok(self
            .connector(&grant.connector_id)
            .await?
            .is_none_or(|c| c.refresh.is_some()))
    }

    pub(crate) async fn respond(
        &self,
        grant: &Grant,
        tokens: NewTokens,
        now: i64,
        nonce: bool,
    ) -> Result<TokenResponse, OAuthError> {
        let id_token = self
            .mint_id_token(grant, Some(&tokens.access), now, nonce)
            .await?;
        Ok(TokenResponse {
            access_token: tokens.access,
            token_type: "Bearer",
            expires_in: self.settings.id_token_ttl.as_secs(),
            id_token: Some(id_token),
            refresh_token: tokens.refresh,
            scope: grant.scopes.join(" "),
            issued_token_type: None,
        })
    }

    /// An ID token and refresh token for a signed-in browser's user, addressed to `client_id`:
    /// what kubectl's legacy oidc auth provider is configured with on the kubeconfig page.
    pub async fn issue_for_session(
        &self,
        session: &crate::storage::Session,
        client_id: &str,
    ) -> Result<(String, String), OAuthError> {
        let now = self.now();
        let grant = Grant {
            id: new_grant_id(),
            client_id: client_id.to_string(),
            connector_id: session.connector_id.clone(),
            claims: session.claims.clone(),
            scopes: ["openid", "email", "profile", "groups", "offline_access"]
                .map(str::to_string)
                .to_vec(),
            nonce: None,
            auth_time: session.auth_time,
            connector_data: session.connector_data.clone(),
            created_at: now,
            revoked_at: None,
        };
        let (tokens, records) = self.new_tokens(&grant, now, true);
        self.storage.issue_grant(&grant, &records).await?;
        let id_token = self
            .mint_id_token(&grant, Some(&tokens.access), now, false)
            .await?;
        let refresh = tokens
            .refresh
            .ok_or_else(|| OAuthError::new(ErrorCode::ServerError, "no refresh token"))?;
        Ok((id_token, refresh))
    }

    pub(crate) fn id_token_ttl_secs(&self) -> i64 {
        self.settings.id_token_ttl.as_secs() as i64
    }

    /// Signs an ID token for `grant`. The audience is the grant's client plus any peers it
    /// was granted (`audience:server:client_id:X`); `azp` is the client.
    pub async fn mint_id_token(
        &self,
        grant: &Grant,
        access_token: Option<&str>,
        now: i64,
        with_nonce: bool,
    ) -> Result<String, OAuthError> {
        let claims = self.id_token_claims(grant, access_token, now, with_nonce);
        self.sign(claims).await
    }

    pub(crate) fn id_token_claims(
        &self,
        grant: &Grant,
        access_token: Option<&str>,
        now: i64,
        with_nonce: bool,
    ) -> Map<String, Value> {
        let mut claims: Map<String, Value> = user_claims(grant);
        claims.insert(
            "iss".into(),
            Value::String(self.settings.issuer_str().to_string()),
        );
        let aud = audiences(grant);
        claims.insert(
            "aud".into(),
            if aud.len() == 1 {
                Value::String(aud[0].clone())
            } else {
                Value::Array(aud.into_iter().map(Value::String).collect())
            },
        );
        claims.insert("azp".into(), Value::String(grant.client_id.clone()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + self.id_token_ttl_secs()));
        claims.insert("auth_time".into(), Value::from(grant.auth_time));
        if with_nonce {
            if let Some(nonce) = &grant.nonce {
                claims.insert("nonce".into(), Value::String(nonce.clone()));
            }
        }
        if let Some(token) = access_token {
            claims.insert("at_hash".into(), Value::String(at_hash(token)));
        }
        claims
    }

    pub(crate) async fn sign(&self, claims: Map<String, Value>) -> Result<String, OAuthError> {
        self.keys.sign_async(claims).await.map_err(|err| {
            tracing::error!(error = %err, "signing an ID token failed");
            OAuthError::new(ErrorCode::ServerError, "could not sign the token")
        })
    }
}

impl Provider {
    /// The `sub` of an ID token we issued.
    pub(crate) fn id_token_hint_subject(&self, hint: &str) -> Option<String> {
        let claims = self.id_token_hint_claims(hint)?;
        claims.get("sub")?.as_str().map(str::to_string)
    }

    /// The claims of an unexpired ID token we issued: signature against our own published
    /// keys (the algorithm is the key's, never the header's), our issuer, not expired.
    pub(crate) fn id_token_hint_claims(
        &self,
        hint: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let claims = self.keys.verify(hint).ok()?;
        let ours = claims.get("iss")?.as_str()? == self.settings.issuer_str();
        let live = claims.get("exp")?.as_i64()? > self.now();
        (ours && live).then_some(claims)
    }
}
