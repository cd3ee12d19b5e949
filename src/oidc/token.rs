//! The token endpoint: client authentication and the grants.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::storage::{AccessToken, Grant, IssuedTokens, Redemption};

use super::claims::user_claims;
use super::error::{ErrorCode, OAuthError};
use super::secrets::{
    at_hash, is_valid_pkce_verifier, pkce_s256_matches, random_token, sha256_hex,
};
use super::{ClientInfo, Provider};

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";

/// The grants this build implements.
pub const SUPPORTED_GRANTS: &[&str] = &[GRANT_AUTHORIZATION_CODE];

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
}

/// How the client presented itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedClient {
    pub id: String,
    pub secret: Option<String>,
}

/// Reads client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: both parts
/// form-urlencoded) or from the body. Using both at once is refused.
pub fn presented_client(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<PresentedClient, OAuthError> {
    let body_id = form.get("client_id").filter(|s| !s.is_empty());
    let body_secret = form.get("client_secret").filter(|s| !s.is_empty());
    if let Some(header) = authorization {
        let Some(encoded) = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
        else {
            return Err(OAuthError::invalid_client(
                "unsupported Authorization scheme; use Basic",
            ));
        };
        let decoded = STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| OAuthError::invalid_client("malformed Basic credentials"))?;
        let id = form_decode(id);
        if body_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "client credentials given both in the Authorization header and in the body",
            ));
        }
        if body_id.is_some_and(|b| *b != id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the Authorization header",
            ));
        }
        return Ok(PresentedClient {
            id,
            secret: Some(form_decode(secret)),
        });
    }
    let id =
        body_id.ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
    Ok(PresentedClient {
        id: id.clone(),
        secret: body_secret.cloned(),
    })
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl Provider {
    /// Authenticates the client: confidential clients by secret, public clients by id alone
    /// (they prove possession with PKCE instead).
    pub async fn authenticate_client(
        &self,
        presented: &PresentedClient,
    ) -> Result<ClientInfo, OAuthError> {
        let client = self.clients.find(&presented.id).await?;
        // Unknown client and wrong secret give the same answer.
        let denied = || OAuthError::invalid_client("client authentication failed");
        let Some(client) = client else {
            return Err(denied());
        };
        match (&presented.secret, client.public) {
            (Some(secret), _) if client.secret_sha256.is_some() => {
                if client.secret_matches(secret) {
                    Ok(client)
                } else {
                    Err(denied())
                }
            }
            (None, true) => Ok(client),
            _ => Err(denied()),
        }
    }

    /// POST /token with a form body already checked for duplicates.
    pub async fn token(
        &self,
        authorization: Option<&str>,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
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
        if !client.grant_types.is_empty() && !client.grant_types.iter().any(|g| g == grant_type) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!("this client may not use grant_type {grant_type}"),
            ));
        }
        self.redeem_code(&client, form).await
    }

    async fn redeem_code(
        &self,
        client: &ClientInfo,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
        let code = form
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        let redirect_uri = form.get("redirect_uri").map(String::as_str).unwrap_or("");
        let verifier = form.get("code_verifier").filter(|v| !v.is_empty());
        let code_hash = sha256_hex(code);
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
        if stored.grant.client_id != client.id {
            return Err(invalid());
        }
        if stored.expires_at <= now {
            return Err(invalid());
        }
        if stored.redirect_uri != redirect_uri {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the one the code was issued for",
            ));
        }
        match (&stored.code_challenge, verifier) {
            (Some(challenge), Some(verifier)) => {
                if !is_valid_pkce_verifier(verifier) || !pkce_s256_matches(verifier, challenge) {
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

        let access_token = random_token(32);
        let record = AccessToken {
            token_hash: sha256_hex(&access_token),
            grant_id: stored.grant.id.clone(),
            client_id: client.id.clone(),
            created_at: now,
            expires_at: now + self.id_token_ttl_secs(),
        };
        let grant = match self
            .storage
            .redeem_auth_code(
                &code_hash,
                &IssuedTokens {
                    access: record,
                    refresh: None,
                },
                now,
            )
            .await?
        {
            Redemption::Issued(grant) => grant,
            other => {
                tracing::warn!(client = %client.id, outcome = ?outcome_name(&other), "authorization code redemption lost");
                return Err(invalid());
            }
        };
        let id_token = self.mint_id_token(&grant, &client.id, Some(&access_token), now)?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: self.settings.id_token_ttl.as_secs(),
            id_token: Some(id_token),
            refresh_token: None,
            scope: grant.scopes.join(" "),
        })
    }

    fn id_token_ttl_secs(&self) -> i64 {
        self.settings.id_token_ttl.as_secs() as i64
    }

    /// Signs an ID token for `grant`, addressed to `client_id`.
    pub fn mint_id_token(
        &self,
        grant: &Grant,
        client_id: &str,
        access_token: Option<&str>,
        now: i64,
    ) -> Result<String, OAuthError> {
        let mut claims: Map<String, Value> = user_claims(grant);
        claims.insert(
            "iss".into(),
            Value::String(self.settings.issuer_str().to_string()),
        );
        claims.insert("aud".into(), Value::String(client_id.to_string()));
        claims.insert("azp".into(), Value::String(client_id.to_string()));
        claims.insert("iat".into(), Value::from(now));
        claims.insert("exp".into(), Value::from(now + self.id_token_ttl_secs()));
        claims.insert("auth_time".into(), Value::from(grant.auth_time));
        if let Some(nonce) = &grant.nonce {
            claims.insert("nonce".into(), Value::String(nonce.clone()));
        }
        if let Some(token) = access_token {
            claims.insert("at_hash".into(), Value::String(at_hash(token)));
        }
        self.keys.sign(&claims).map_err(|err| {
            tracing::error!(error = %err, "signing an ID token failed");
            OAuthError::new(ErrorCode::ServerError, "could not sign the token")
        })
    }
}

fn outcome_name(r: &Redemption) -> &'static str {
    match r {
        Redemption::Issued(_) => "issued",
        Redemption::Replayed { .. } => "replayed",
        Redemption::Expired => "expired",
        Redemption::NotFound => "not_found",
    }
}
