//! Rows as both databases return them (`FromRow` derives a row-type-generic impl, so both
//! decode the same structs), their conversions to and from models, and the decisions taken
//! on a locked row.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clock::UnixTime;
use crate::storage::model::*;
use crate::storage::{Result, StorageError};

/// Serialises a list or struct for a JSON text column.
pub(in crate::storage) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StorageError::Corrupt(format!("cannot serialise {what}: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StorageError::Corrupt(format!("{what} is not valid JSON: {e}")))
}

/// A row as the database returns it, decoded into the model the storage trait speaks.
pub(in crate::storage) trait IntoModel {
    type Model;

    fn into_model(self) -> Result<Self::Model>;
}

/// Emails are stored lower-cased so that the primary key compares them case-insensitively.
pub(in crate::storage) fn normalize_email(email: &str) -> String {
    email.to_lowercase()
}

/// The latest use of a grant's refresh tokens (`MAX`, so NULL without one).
#[derive(sqlx::FromRow)]
pub(in crate::storage) struct LastUsedRow {
    last_used: Option<i64>,
}

impl IntoModel for LastUsedRow {
    type Model = Option<UnixTime>;

    fn into_model(self) -> Result<Option<UnixTime>> {
        Ok(self.last_used)
    }
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct ClientRow {
    id: String,
    secret_sha256: Option<String>,
    redirect_uris: String,
    trusted_peers: String,
    is_public: bool,
    name: String,
    logo_url: Option<String>,
    grant_types: String,
    post_logout_redirect_uris: String,
    allowed_connectors: String,
    created_at: i64,
}

impl IntoModel for ClientRow {
    type Model = Client;

    fn into_model(self) -> Result<Client> {
        let what = |field: &str| format!("client {:?} {field}", self.id);
        Ok(Client {
            redirect_uris: from_json(&self.redirect_uris, &what("redirect_uris"))?,
            trusted_peers: from_json(&self.trusted_peers, &what("trusted_peers"))?,
            grant_types: from_json(&self.grant_types, &what("grant_types"))?,
            post_logout_redirect_uris: from_json(
                &self.post_logout_redirect_uris,
                &what("post_logout_redirect_uris"),
            )?,
            allowed_connectors: from_json(&self.allowed_connectors, &what("allowed_connectors"))?,
            id: self.id,
            secret_sha256: self.secret_sha256,
            public: self.is_public,
            name: self.name,
            logo_url: self.logo_url,
            created_at: self.created_at,
        })
    }
}

/// The JSON columns of a client, encoded once for binding.
pub(in crate::storage) struct ClientJson {
    pub redirect_uris: String,
    pub trusted_peers: String,
    pub grant_types: String,
    pub post_logout_redirect_uris: String,
    pub allowed_connectors: String,
}

impl ClientJson {
    pub(in crate::storage) fn new(client: &Client) -> Result<Self> {
        Ok(Self {
            redirect_uris: to_json(&client.redirect_uris, "client redirect_uris")?,
            trusted_peers: to_json(&client.trusted_peers, "client trusted_peers")?,
            grant_types: to_json(&client.grant_types, "client grant_types")?,
            post_logout_redirect_uris: to_json(
                &client.post_logout_redirect_uris,
                "client post_logout_redirect_uris",
            )?,
            allowed_connectors: to_json(&client.allowed_connectors, "client allowed_connectors")?,
        })
    }
}

/// A stored password hash alone.
#[derive(sqlx::FromRow)]
pub(in crate::storage) struct HashRow {
    pub hash: String,
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct PasswordRow {
    email: String,
    hash: String,
    username: String,
    user_id: String,
    user_groups: String,
    created_at: i64,
    updated_at: i64,
}

impl IntoModel for PasswordRow {
    type Model = Password;

    fn into_model(self) -> Result<Password> {
        Ok(Password {
            groups: from_json(&self.user_groups, "password groups")?,
            email: self.email,
            hash: self.hash,
            username: self.username,
            user_id: self.user_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct AuthRequestRow {
    id: String,
    client_id: String,
    params: String,
    csrf_token: String,
    browser_binding: String,
    login: Option<String>,
    upstream: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl IntoModel for AuthRequestRow {
    type Model = AuthRequest;

    fn into_model(self) -> Result<AuthRequest> {
        Ok(AuthRequest {
            params: from_json(&self.params, "auth request params")?,
            login: self
                .login
                .as_deref()
                .map(|l| from_json(l, "auth request login"))
                .transpose()?,
            upstream: self
                .upstream
                .as_deref()
                .map(|u| from_json(u, "auth request upstream"))
                .transpose()?,
            id: self.id,
            client_id: self.client_id,
            csrf_token: self.csrf_token,
            browser_binding: self.browser_binding,
            created_at: self.created_at,
            expires_at: self.expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct AuthCodeRow {
    code_hash: String,
    redirect_uri: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    grant_json: String,
    created_at: i64,
    expires_at: i64,
    redeemed_at: Option<i64>,
}

impl IntoModel for AuthCodeRow {
    type Model = AuthCode;

    fn into_model(self) -> Result<AuthCode> {
        Ok(AuthCode {
            grant: from_json(&self.grant_json, "authorization code grant")?,
            code_hash: self.code_hash,
            redirect_uri: self.redirect_uri,
            code_challenge: self.code_challenge,
            code_challenge_method: self.code_challenge_method,
            created_at: self.created_at,
            expires_at: self.expires_at,
            redeemed_at: self.redeemed_at,
        })
    }
}

/// What `SELECT_AUTH_CODE_STATE` returns.
#[derive(sqlx::FromRow)]
pub(in crate::storage) struct AuthCodeState {
    pub grant_id: String,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
}

impl AuthCodeState {
    /// Why a claim of this code at `now` failed.
    pub(in crate::storage) fn failure(self, now: UnixTime) -> FailedClaim {
        match self.redeemed_at {
            Some(_) => FailedClaim::Replayed(self.grant_id),
            None if self.expires_at <= now => FailedClaim::Expired,
            // Unredeemed and unexpired, yet the claim missed it: it was inserted after the
            // claim ran, so for this call it did not exist.
            None => FailedClaim::NotFound,
        }
    }
}

pub(in crate::storage) enum FailedClaim {
    Replayed(String),
    Expired,
    NotFound,
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct GrantRow {
    id: String,
    client_id: String,
    connector_id: String,
    claims: String,
    scopes: String,
    nonce: Option<String>,
    auth_time: i64,
    connector_data: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl IntoModel for GrantRow {
    type Model = Grant;

    fn into_model(self) -> Result<Grant> {
        Ok(Grant {
            claims: from_json(&self.claims, "grant claims")?,
            scopes: from_json(&self.scopes, "grant scopes")?,
            id: self.id,
            client_id: self.client_id,
            connector_id: self.connector_id,
            nonce: self.nonce,
            auth_time: self.auth_time,
            connector_data: self.connector_data,
            created_at: self.created_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// The JSON columns of a grant, encoded once for binding.
pub(in crate::storage) struct GrantJson {
    pub claims: String,
    pub scopes: String,
}

impl GrantJson {
    pub(in crate::storage) fn new(grant: &Grant) -> Result<Self> {
        Ok(Self {
            claims: to_json(&grant.claims, "grant claims")?,
            scopes: to_json(&grant.scopes, "grant scopes")?,
        })
    }
}

/// An access token's own scopes as stored: NULL when it carries its grant's.
pub(in crate::storage) fn access_token_scopes(token: &AccessToken) -> Result<Option<String>> {
    token
        .scopes
        .as_ref()
        .map(|s| to_json(s, "access token scopes"))
        .transpose()
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct AccessTokenWithGrantRow {
    token_hash: String,
    token_grant_id: String,
    token_client_id: String,
    token_created_at: i64,
    token_expires_at: i64,
    token_scopes: Option<String>,
    #[sqlx(flatten)]
    grant: GrantRow,
}

impl IntoModel for AccessTokenWithGrantRow {
    type Model = (AccessToken, Grant);

    fn into_model(self) -> Result<(AccessToken, Grant)> {
        let token = AccessToken {
            token_hash: self.token_hash,
            grant_id: self.token_grant_id,
            client_id: self.token_client_id,
            created_at: self.token_created_at,
            expires_at: self.token_expires_at,
            scopes: self
                .token_scopes
                .map(|s| from_json(&s, "access token scopes"))
                .transpose()?,
        };
        Ok((token, self.grant.into_model()?))
    }
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct SigningKeyRow {
    kid: String,
    alg: String,
    public_jwk: String,
    private_key_enc: Vec<u8>,
    successor_of: String,
    created_at: i64,
    sign_from: i64,
}

impl IntoModel for SigningKeyRow {
    type Model = SigningKey;

    fn into_model(self) -> Result<SigningKey> {
        Ok(SigningKey {
            kid: self.kid,
            alg: self.alg,
            public_jwk: self.public_jwk,
            private_key_enc: self.private_key_enc,
            successor_of: self.successor_of,
            created_at: self.created_at,
            sign_from: self.sign_from,
        })
    }
}

/// A refresh token's rotation state.
#[derive(sqlx::FromRow)]
pub(in crate::storage) struct RefreshTokenState {
    last_used_at: i64,
    expires_at: Option<i64>,
    rotated_at: Option<i64>,
    successor_sealed: Option<Vec<u8>>,
}

/// A token's rotation state and its grant, read together.
#[derive(sqlx::FromRow)]
pub(in crate::storage) struct RefreshTokenStateWithGrant {
    #[sqlx(flatten)]
    pub state: RefreshTokenState,
    #[sqlx(flatten)]
    pub grant: GrantRow,
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct RefreshTokenWithGrantRow {
    token_hash: String,
    token_grant_id: String,
    token_client_id: String,
    token_created_at: i64,
    last_used_at: i64,
    token_expires_at: Option<i64>,
    rotated_at: Option<i64>,
    successor_hash: Option<String>,
    #[sqlx(flatten)]
    grant: GrantRow,
}

impl IntoModel for RefreshTokenWithGrantRow {
    type Model = (RefreshToken, Grant);

    fn into_model(self) -> Result<(RefreshToken, Grant)> {
        let token = RefreshToken {
            token_hash: self.token_hash,
            grant_id: self.token_grant_id,
            client_id: self.token_client_id,
            created_at: self.token_created_at,
            last_used_at: self.last_used_at,
            expires_at: self.token_expires_at,
            rotated_at: self.rotated_at,
            successor_hash: self.successor_hash,
        };
        Ok((token, self.grant.into_model()?))
    }
}

/// What one use of a refresh token does, decided from the locked token row and its grant.
#[derive(Debug)]
pub(in crate::storage) enum RefreshDecision {
    Revoked,
    Expired,
    /// The family's current token: rotate it to the successor, or (rotation disabled) only
    /// move its `last_used_at`.
    Current,
    /// Rotated within the reuse interval: hand out the same successor again.
    Reuse(Vec<u8>),
    /// Rotated longer ago (or with nothing to hand out again): revoke the family.
    Replay,
}

pub(in crate::storage) fn decide_refresh(
    token: RefreshTokenState,
    grant: &Grant,
    rotation: &Rotation,
    now: UnixTime,
) -> RefreshDecision {
    if grant.revoked_at.is_some() {
        return RefreshDecision::Revoked;
    }
    let past_end = token.expires_at.is_some_and(|end| end <= now);
    let idle = rotation
        .idle_cutoff
        .is_some_and(|cutoff| token.last_used_at < cutoff);
    if past_end || idle {
        return RefreshDecision::Expired;
    }
    match (token.rotated_at, token.successor_sealed) {
        (None, _) => RefreshDecision::Current,
        (Some(rotated_at), Some(sealed))
            if now.saturating_sub(rotated_at) <= rotation.reuse_interval =>
        {
            RefreshDecision::Reuse(sealed)
        }
        (Some(_), _) => RefreshDecision::Replay,
    }
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct DeviceRequestRow {
    user_code: String,
    device_code_hash: String,
    client_id: String,
    scopes: String,
    created_at: i64,
    expires_at: i64,
    poll_interval: i64,
    last_poll_at: Option<i64>,
    status: String,
    grant_json: Option<String>,
}

impl IntoModel for DeviceRequestRow {
    type Model = DeviceRequest;

    fn into_model(self) -> Result<DeviceRequest> {
        Ok(DeviceRequest {
            scopes: from_json(&self.scopes, "device request scopes")?,
            status: parse_device_status(&self.status)?,
            grant: self
                .grant_json
                .as_deref()
                .map(|g| from_json(g, "device request grant"))
                .transpose()?,
            user_code: self.user_code,
            device_code_hash: self.device_code_hash,
            client_id: self.client_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
            poll_interval: self.poll_interval,
            last_poll_at: self.last_poll_at,
        })
    }
}

fn parse_device_status(text: &str) -> Result<DeviceStatus> {
    [
        DeviceStatus::Pending,
        DeviceStatus::Approved,
        DeviceStatus::Denied,
        DeviceStatus::Redeemed,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .ok_or_else(|| StorageError::Corrupt(format!("unknown device request status {text:?}")))
}

/// How much longer a device must wait after polling too fast (RFC 8628 section 3.5).
pub(in crate::storage) const SLOW_DOWN_STEP: i64 = 5;

/// What one poll of a device code does, decided from the locked request row.
#[derive(Debug)]
pub(in crate::storage) enum PollDecision {
    /// Absent, or another client's: nothing written.
    NotFound,
    /// Nothing written.
    Expired,
    SlowDown,
    /// The poll is recorded and this is the answer.
    Answer(DevicePoll),
    /// Approved: mark it redeemed and store this grant with the tokens.
    Redeem(Grant),
}

pub(in crate::storage) fn decide_poll(
    row: Option<DeviceRequestRow>,
    client_id: &str,
    now: UnixTime,
) -> Result<PollDecision> {
    let Some(row) = row else {
        return Ok(PollDecision::NotFound);
    };
    if row.client_id != client_id {
        return Ok(PollDecision::NotFound);
    }
    if row.expires_at <= now {
        return Ok(PollDecision::Expired);
    }
    if row
        .last_poll_at
        .is_some_and(|last| now.saturating_sub(last) < row.poll_interval)
    {
        return Ok(PollDecision::SlowDown);
    }
    let request = row.into_model()?;
    Ok(match request.status {
        DeviceStatus::Pending => PollDecision::Answer(DevicePoll::Pending),
        DeviceStatus::Denied => PollDecision::Answer(DevicePoll::Denied),
        DeviceStatus::Redeemed => PollDecision::Answer(DevicePoll::AlreadyRedeemed),
        DeviceStatus::Approved => {
            let mut grant = request.grant.ok_or_else(|| {
                StorageError::Corrupt("approved device request has no grant".into())
            })?;
            grant.revoked_at = None;
            PollDecision::Redeem(grant)
        }
    })
}

/// The tokens of a device grant belong to the grant that approval stored; the poller cannot
/// know its id, so the stored one wins over whatever `tokens` say.
pub(in crate::storage) fn tokens_for_grant(tokens: &IssuedTokens, grant: &Grant) -> IssuedTokens {
    let mut tokens = tokens.clone();
    tokens.access.grant_id.clone_from(&grant.id);
    if let Some(refresh) = tokens.refresh.as_mut() {
        refresh.grant_id.clone_from(&grant.id);
    }
    tokens
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct SessionRow {
    id: String,
    connector_id: String,
    claims: String,
    connector_data: Option<String>,
    auth_time: i64,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl IntoModel for SessionRow {
    type Model = Session;

    fn into_model(self) -> Result<Session> {
        Ok(Session {
            claims: from_json(&self.claims, "session claims")?,
            id_hash: self.id,
            connector_id: self.connector_id,
            connector_data: self.connector_data,
            auth_time: self.auth_time,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        })
    }
}

/// `LIMIT` wants a signed integer in both databases.
pub(in crate::storage) fn batch_limit(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct ConnectorRow {
    id: String,
    connector_type: String,
    name: String,
    resource_version: i64,
    config: String,
    created_at: i64,
    updated_at: i64,
}

impl IntoModel for ConnectorRow {
    type Model = StoredConnector;

    fn into_model(self) -> Result<StoredConnector> {
        Ok(StoredConnector {
            id: self.id,
            type_: self.connector_type,
            name: self.name,
            resource_version: self.resource_version,
            sealed_config: self.config,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(in crate::storage) struct GenerationRow {
    generation: i64,
}

impl IntoModel for GenerationRow {
    type Model = i64;

    fn into_model(self) -> Result<i64> {
        Ok(self.generation)
    }
}
