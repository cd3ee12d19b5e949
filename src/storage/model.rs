//! The records lanyard keeps. Times are Unix seconds from the injected clock.

use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;

/// An OAuth client created through the admin API. Clients from `staticClients` are never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    /// Hex SHA-256 of the secret; `None` for public clients.
    pub secret_sha256: Option<String>,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub public: bool,
    pub name: String,
    pub logo_url: Option<String>,
    pub grant_types: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allowed_connectors: Vec<String>,
    pub created_at: UnixTime,
}

/// A local user of the password database (`enablePasswordDB`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Password {
    /// Always stored lower-cased; lookups are case-insensitive.
    pub email: String,
    /// bcrypt or argon2id PHC string.
    pub hash: String,
    pub username: String,
    pub user_id: String,
    pub groups: Vec<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

/// Who a user is, as the connector that logged them in reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserClaims {
    pub user_id: String,
    pub username: String,
    pub preferred_username: String,
    pub email: String,
    pub email_verified: bool,
    pub groups: Vec<String>,
}

/// The parameters of an /auth request, kept as one JSON document so that later protocol
/// features add fields without a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRequestParams {
    pub redirect_uri: String,
    pub response_type: String,
    #[serde(default)]
    pub response_mode: Option<String>,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    #[serde(default)]
    pub code_challenge: Option<String>,
    #[serde(default)]
    pub code_challenge_method: Option<String>,
    #[serde(default)]
    pub connector_id: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub max_age: Option<i64>,
    #[serde(default)]
    pub login_hint: Option<String>,
    /// Set when this login approves a device (RFC 8628) instead of redirecting a browser.
    #[serde(default)]
    pub device_user_code: Option<String>,
}

/// The outcome of a successful upstream login, attached to its auth request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginResult {
    pub connector_id: String,
    pub claims: UserClaims,
    /// Opaque connector state (for refresh), as the connector serialised it.
    #[serde(default)]
    pub connector_data: Option<String>,
    pub auth_time: UnixTime,
}

/// A login in progress: created by /auth, completed by a connector, turned into a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub id: String,
    pub client_id: String,
    pub params: AuthRequestParams,
    /// The CSRF token every form of this login must post back.
    pub csrf_token: String,
    /// Hex SHA-256 of the cookie that ties this login to the browser that started it.
    pub browser_binding: String,
    pub login: Option<LoginResult>,
    /// Set while the browser is away at an upstream identity provider.
    pub upstream: Option<UpstreamLogin>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
}

/// A login handed to a callback connector, waiting for the browser to come back.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamLogin {
    pub connector_id: String,
    /// Hex SHA-256 of the random part of the `state` sent upstream.
    pub state_hash: String,
    /// What the connector asked to keep (nonce, PKCE verifier), standard base64.
    pub pending: String,
}

impl std::fmt::Debug for UpstreamLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamLogin")
            .field("connector_id", &self.connector_id)
            .finish_non_exhaustive()
    }
}

/// One authorisation of one client by one user: everything a code, refresh token or device
/// grant issues belongs to a grant, and revoking the grant revokes all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub connector_id: String,
    pub claims: UserClaims,
    pub scopes: Vec<String>,
    #[serde(default)]
    pub nonce: Option<String>,
    pub auth_time: UnixTime,
    #[serde(default)]
    pub connector_data: Option<String>,
    pub created_at: UnixTime,
    #[serde(default)]
    pub revoked_at: Option<UnixTime>,
}

/// An authorization code. Only its SHA-256 is stored. It carries the grant its redemption
/// creates, so that a replay knows which grant to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub code_hash: String,
    pub redirect_uri: String,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub grant: Grant,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub redeemed_at: Option<UnixTime>,
}

/// An opaque access token. Only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    /// What this token may read when it carries fewer scopes than its grant (a refresh that
    /// narrowed them, RFC 6749 §6); `None` is the grant's scopes.
    pub scopes: Option<Vec<String>>,
}

impl AccessToken {
    /// Its grant as this token may show it: with the token's own scopes, which decide the
    /// claims and audiences it answers with.
    pub fn grant_view(&self, mut grant: Grant) -> Grant {
        if let Some(scopes) = &self.scopes {
            grant.scopes.clone_from(scopes);
        }
        grant
    }
}

/// What redeeming a code did. Decided inside one transaction.
// Built once per token request and matched at once; boxing the grant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The code was unused and unexpired: it is now redeemed, and the grant and access token exist.
    Issued(Grant),
    /// The code had been redeemed before: its grant (and every token of it) is now revoked.
    Replayed {
        grant_id: String,
    },
    Expired,
    NotFound,
}

/// A signing key. The private half is AES-256-GCM ciphertext; only `keys` can open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// "RS256" or "ES256".
    pub alg: String,
    /// The public JWK as JSON.
    pub public_jwk: String,
    /// nonce || ciphertext of the PKCS#8 DER private key.
    pub private_key_enc: Vec<u8>,
    /// The kid this key takes over from; "" for the first key. Unique: of two processes that
    /// rotate at once, the database lets exactly one insert the successor.
    pub successor_of: String,
    pub created_at: UnixTime,
    /// From this time on the key signs; until then it is only published.
    pub sign_from: UnixTime,
}

/// How many password attempts a key gets and how long it is locked afterwards, in seconds
/// (the database's form of the server's rate-limit policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptPolicy {
    /// The attempt that reaches this count locks the key (at least 1).
    pub max_failures: i64,
    /// Failures are forgotten this long after the last one (or after the lockout ends).
    pub window: i64,
    /// The first lockout; each attempt after a lockout, before the window forgives it,
    /// doubles it up to `max_lockout`.
    pub base_lockout: i64,
    pub max_lockout: i64,
}

/// What [`Storage::reserve_login_attempt`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptDecision {
    /// Counted against every key; the password may be checked.
    Reserved,
    /// A key is locked until this time; nothing was counted.
    Locked { until: UnixTime },
}

/// Counts of what housekeeping removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub auth_requests: u64,
    pub auth_codes: u64,
    pub access_tokens: u64,
    pub refresh_tokens: u64,
    pub grants: u64,
    pub device_requests: u64,
    pub sessions: u64,
    /// Password-attempt counters a full window past their last failure or lockout.
    pub login_attempts: u64,
}

impl Swept {
    pub fn total(&self) -> u64 {
        self.auth_requests
            + self.auth_codes
            + self.access_tokens
            + self.refresh_tokens
            + self.grants
            + self.device_requests
            + self.sessions
            + self.login_attempts
    }
}

/// A refresh token. Only its SHA-256 is stored. Tokens of one grant form a family: each use
/// rotates to a successor, and presenting a rotated token outside the reuse interval revokes
/// the family (the grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub token_hash: String,
    pub grant_id: String,
    pub client_id: String,
    pub created_at: UnixTime,
    pub last_used_at: UnixTime,
    /// The family's absolute end (`expiry.refreshTokens.absoluteLifetime`), inherited by successors.
    pub expires_at: Option<UnixTime>,
    pub rotated_at: Option<UnixTime>,
    pub successor_hash: Option<String>,
}

/// What one token response stores, in the same transaction as the decision to issue it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedTokens {
    pub access: AccessToken,
    pub refresh: Option<RefreshToken>,
}

/// One use of a refresh token, decided in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub old_hash: String,
    /// The next token of the family; `None` when rotation is disabled (the old token stays
    /// valid and only its `last_used_at` moves).
    pub successor: Option<RefreshToken>,
    /// The successor's plaintext sealed under a key that only the old token's holder can
    /// derive: kept on the old row so that a retry inside the reuse interval gets the same one.
    pub successor_sealed: Option<Vec<u8>>,
    /// The access token this response carries (stored on `Rotated` and `Reused`).
    pub access: AccessToken,
    /// What the connector says about the user now; written to the grant on `Rotated`.
    pub claims: UserClaims,
    pub connector_data: Option<String>,
    /// Seconds after its rotation during which the old token still yields its successor.
    pub reuse_interval: i64,
    /// Tokens last used before this are dead (`validIfNotUsedFor`).
    pub idle_cutoff: Option<UnixTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum RefreshOutcome {
    /// The token was current: the successor (if any) and the access token are stored and
    /// the grant carries the new claims.
    Rotated(Grant),
    /// The token was rotated less than `reuse_interval` ago: here is the sealed successor it
    /// rotated to; the access token is stored.
    Reused {
        grant: Grant,
        successor_sealed: Vec<u8>,
    },
    /// The token was rotated longer ago: a stolen token is in play, so the whole family
    /// (the grant) is now revoked.
    Replayed {
        grant_id: String,
    },
    /// Past `expires_at` or idle past `idle_cutoff`. Nothing written.
    Expired,
    /// The grant was revoked. Nothing written.
    Revoked,
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    Pending,
    Approved,
    Denied,
    Redeemed,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Redeemed => "redeemed",
        }
    }
}

/// A device authorization (RFC 8628). The user code is short and typed by people; the device
/// code is long and only its SHA-256 is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Normalised: 8 upper-case letters, no dash.
    pub user_code: String,
    pub device_code_hash: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    /// Seconds the client must wait between polls; raised by 5 on each `slow_down`.
    pub poll_interval: i64,
    pub last_poll_at: Option<UnixTime>,
    pub status: DeviceStatus,
    /// Set on approval: the grant that redemption creates.
    pub grant: Option<Grant>,
}

/// What one poll of the token endpoint with a device code found. Decided in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum DevicePoll {
    NotFound,
    Expired,
    /// Polled sooner than `poll_interval` after the last poll: the interval is now 5 s longer.
    SlowDown,
    Pending,
    Denied,
    /// Approved: now redeemed, and the grant and tokens are stored.
    Issued(Grant),
    /// Redeemed by an earlier poll.
    AlreadyRedeemed,
}

/// A browser's sign-in session (the SSO cookie). Only the SHA-256 of the cookie is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id_hash: String,
    pub connector_id: String,
    pub claims: UserClaims,
    pub connector_data: Option<String>,
    pub auth_time: UnixTime,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub revoked_at: Option<UnixTime>,
}

/// What housekeeping may delete; every kind in batches of at most `batch` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepCutoffs {
    pub now: UnixTime,
    /// Codes that expired before this go (redeemed ones are kept until then to catch replays).
    pub code_cutoff: UnixTime,
    /// Revoked grants revoked before this go, with their tokens.
    pub grant_cutoff: UnixTime,
    /// Refresh tokens last used before this are dead (`validIfNotUsedFor`); `None`: no limit.
    pub refresh_idle_cutoff: Option<UnixTime>,
    /// Rotated refresh tokens rotated before this go; until then a replay of one still
    /// revokes its family.
    pub rotated_cutoff: UnixTime,
    /// Grants of `client_credentials` (which never have a refresh token) created before this
    /// go once their access tokens are gone; it lies past the longest access token's life, so
    /// a sweep does not read the grants of live tokens again and again.
    pub client_grant_cutoff: UnixTime,
    pub batch: u32,
}

/// Which grants or sign-in sessions an administrator asks about. Unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub connector_id: Option<String>,
    pub user_id: Option<String>,
    /// Compared case-insensitively with the email in the stored claims.
    pub email: Option<String>,
    pub client_id: Option<String>,
    /// Only unrevoked grants, and only unrevoked sessions unexpired at `now`.
    pub active_only: bool,
    pub now: UnixTime,
}

impl GrantFilter {
    /// The part of the filter that SQL does not decide: the email lives inside the claims JSON,
    /// whose operators differ between the two databases.
    pub fn matches_claims(&self, claims: &UserClaims) -> bool {
        self.email
            .as_deref()
            .is_none_or(|email| claims.email.eq_ignore_ascii_case(email))
    }
}

/// What revoking a user's access did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RevokedAccess {
    pub grants: u64,
    pub sessions: u64,
}

/// A connector kept in storage (Dex's `storage.Connector`): created through Dex's gRPC API or
/// `lanyard admin connectors`, served beside the config file's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConnector {
    pub id: String,
    /// The connector type as Dex names it (`ldap`, `oidc`, ...).
    pub type_: String,
    pub name: String,
    /// Dex's `ResourceVersion`: 1 when created, one more on every update (the storage counts).
    pub resource_version: i64,
    /// The `config` JSON sealed with the key-encryption key: storage never holds it in clear.
    pub sealed_config: String,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}
