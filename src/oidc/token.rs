//! The token endpoint: client authentication and the grants.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::storage::{
    AccessToken, DevicePoll, Grant, IssuedTokens, Redemption, RefreshOutcome, RefreshToken,
    Rotation, UserClaims,
};

use super::authorize::{identity_claims, scopes_of};
use super::claims::{audiences, user_claims, CLIENT_CONNECTOR};
use super::error::{ErrorCode, OAuthError};
use super::secrets::{
    at_hash, is_valid_pkce_verifier, open_successor, pkce_s256_matches, random_token,
    seal_successor, sha256_hex,
};
use super::{ClientInfo, Provider};

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// RFC 8693 token types lanyard takes as subject tokens and issues.
pub use lanyard_connectors::oidc::{ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE};

/// The grants this build implements.
pub const SUPPORTED_GRANTS: &[&str] = &[
    GRANT_AUTHORIZATION_CODE,
    GRANT_REFRESH_TOKEN,
    GRANT_DEVICE_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
];

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
    /// (they prove possession with PKCE or a device code instead).
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

    /// The tokens one response hands out, and the records that store them.
    fn new_tokens(&self, grant: &Grant, now: i64, refresh: bool) -> (NewTokens, IssuedTokens) {
        let access = random_token(32);
        let refresh_plain = refresh.then(|| random_token(32));
        let records = IssuedTokens {
            access: AccessToken {
                token_hash: sha256_hex(&access),
                grant_id: grant.id.clone(),
                client_id: grant.client_id.clone(),
                created_at: now,
                expires_at: now + self.id_token_ttl_secs(),
                scopes: None,
            },
            refresh: refresh_plain.as_ref().map(|r| RefreshToken {
                token_hash: sha256_hex(r),
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
    fn wants_refresh(&self, grant: &Grant, client: &ClientInfo) -> bool {
        grant.scopes.iter().any(|s| s == "offline_access")
            && self
                .settings
                .grant_types
                .iter()
                .any(|g| g == GRANT_REFRESH_TOKEN)
            && (client.grant_types.is_empty()
                || client.grant_types.iter().any(|g| g == GRANT_REFRESH_TOKEN))
    }

    async fn respond(
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

        let (tokens, records) = self.new_tokens(
            &stored.grant,
            now,
            self.wants_refresh(&stored.grant, client),
        );
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

    async fn refresh(
        &self,
        client: &ClientInfo,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
        let token = form
            .get("refresh_token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let invalid =
            || OAuthError::invalid_grant("the refresh token is invalid, expired or revoked");
        let now = self.now();
        let token_hash = sha256_hex(token);
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
        let narrowed: Option<Vec<String>> = match form.get("scope").filter(|s| !s.is_empty()) {
            Some(requested) => {
                let requested: Vec<&str> = requested.split(' ').filter(|s| !s.is_empty()).collect();
                if requested
                    .iter()
                    .any(|s| !grant.scopes.iter().any(|g| g == s))
                {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        "a refresh may not widen the granted scopes",
                    ));
                }
                Some(
                    grant
                        .scopes
                        .iter()
                        .filter(|g| requested.contains(&g.as_str()))
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
        match self.storage.rotate_refresh_token(&rotation, now).await? {
            RefreshOutcome::Rotated(grant) => {
                let refresh = successor.unwrap_or_else(|| token.clone());
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
            RefreshOutcome::Reused {
                grant,
                successor_sealed,
            } => {
                let refresh = open_successor(token, &successor_sealed).ok_or_else(|| {
                    tracing::error!("a sealed refresh successor did not open");
                    invalid()
                })?;
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
            RefreshOutcome::Replayed { .. } => {
                tracing::warn!(client = %client.id, "a rotated refresh token was reused; its family is revoked");
                Err(invalid())
            }
            RefreshOutcome::Expired | RefreshOutcome::Revoked | RefreshOutcome::NotFound => {
                Err(invalid())
            }
        }
    }

    /// The user's current claims from the grant's connector.
    async fn refresh_identity(
        &self,
        grant: &Grant,
    ) -> Result<(UserClaims, Option<String>), OAuthError> {
        let Some(connector) = self.connector(&grant.connector_id) else {
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
            .refresh(&scopes_of(&grant.scopes), &identity)
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

    async fn redeem_device_code(
        &self,
        client: &ClientInfo,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
        let device_code = form
            .get("device_code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("device_code is required"))?;
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
        let (tokens, records) = self.new_tokens(&shape, now, self.wants_refresh(&shape, client));
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

    async fn client_credentials(
        &self,
        client: &ClientInfo,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
        let scopes: Vec<String> = form
            .get("scope")
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = scopes
            .iter()
            .find(|s| matches!(s.as_str(), "offline_access") || !super::scope_supported(s))
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("scope {bad} is not available to client_credentials"),
            ));
        }
        let now = self.now();
        let grant = Grant {
            id: random_token(16),
            client_id: client.id.clone(),
            connector_id: CLIENT_CONNECTOR.to_string(),
            claims: UserClaims {
                user_id: client.id.clone(),
                username: client.display_name().to_string(),
                ..UserClaims::default()
            },
            scopes,
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

    /// RFC 8693 token exchange: a token from an upstream issuer (a CI system's ID token) for
    /// a lanyard token addressed to the requesting client. The named connector verifies the
    /// subject token; the client must be allowed that connector. Refusals write nothing.
    async fn token_exchange(
        &self,
        client: &ClientInfo,
        form: &HashMap<String, String>,
    ) -> Result<TokenResponse, OAuthError> {
        let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let required =
            |k: &str| get(k).ok_or_else(|| OAuthError::invalid_request(format!("{k} is required")));
        let subject_token = required("subject_token")?;
        let subject_token_type = required("subject_token_type")?;
        let connector_id = required("connector_id")?;
        if ![ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE].contains(&subject_token_type) {
            return Err(OAuthError::invalid_request(format!(
                "subject_token_type must be {ID_TOKEN_TYPE} or {ACCESS_TOKEN_TYPE}"
            )));
        }
        let requested = get("requested_token_type").unwrap_or(ACCESS_TOKEN_TYPE);
        if ![ID_TOKEN_TYPE, ACCESS_TOKEN_TYPE].contains(&requested) {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type must be {ACCESS_TOKEN_TYPE} or {ID_TOKEN_TYPE}"
            )));
        }
        if get("actor_token").is_some() || get("actor_token_type").is_some() {
            return Err(OAuthError::invalid_request(
                "delegation (actor_token) is not supported",
            ));
        }
        if get("resource").is_some() || get("audience").is_some() {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "tokens are issued for the requesting client only; use the scope audience:server:client_id:X for a trusting peer",
            ));
        }
        let Some(verifier) = self
            .connector(connector_id)
            .and_then(|c| c.token_identity.clone())
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
        let mut scopes: Vec<String> = get("scope")
            .unwrap_or("openid")
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !scopes.iter().any(|s| s == "openid") {
            scopes.insert(0, "openid".to_string());
        }
        if scopes.iter().any(|s| s == "offline_access") {
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
            .token_identity(&scopes_of(&scopes), subject_token_type, subject_token)
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
            id: random_token(16),
            client_id: client.id.clone(),
            connector_id: connector_id.to_string(),
            claims: identity_claims(&subject.identity),
            scopes,
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
            issued_token_type: Some(if requested == ID_TOKEN_TYPE {
                ID_TOKEN_TYPE
            } else {
                ACCESS_TOKEN_TYPE
            }),
        })
    }

    /// An ID token returned from /auth (implicit or hybrid): `nonce` always, `at_hash` and
    /// `c_hash` for what travels beside it.
    pub async fn mint_front_channel_id_token(
        &self,
        grant: &Grant,
        access_token: Option<&str>,
        code: Option<&str>,
        now: i64,
    ) -> Result<String, OAuthError> {
        let mut claims = self.id_token_claims(grant, access_token, now, true);
        if let Some(code) = code {
            claims.insert("c_hash".into(), Value::String(at_hash(code)));
        }
        self.sign(claims).await
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
            id: random_token(16),
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

    fn id_token_ttl_secs(&self) -> i64 {
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

    fn id_token_claims(
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

    async fn sign(&self, claims: Map<String, Value>) -> Result<String, OAuthError> {
        self.keys.sign_async(claims).await.map_err(|err| {
            tracing::error!(error = %err, "signing an ID token failed");
            OAuthError::new(ErrorCode::ServerError, "could not sign the token")
        })
    }
}

/// A token response with what the metrics count it by.
struct Issued {
    response: TokenResponse,
    grant: &'static str,
    client: String,
}

/// Plaintext tokens for one response; only their digests are stored.
struct NewTokens {
    access: String,
    refresh: Option<String>,
}

/// The id of the grant a device authorization creates, derived from its device code so that
/// tokens can be bound to it before approval is known.
pub fn device_grant_id(device_code_hash: &str) -> String {
    sha256_hex(&format!("device-grant:{device_code_hash}"))[..32].to_string()
}
