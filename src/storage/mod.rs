//! Storage: one trait, and one SQL implementation of it (`sql`) over a dialect per database
//! (`sqlite`, `postgres`).
//!
//! Every write that must be atomic (code redemption, key rotation) is a single transaction
//! whose outcome the database decides.

pub mod model;
pub mod postgres;
mod postgres_grants;
mod sql;
pub mod sqlite;
mod sqlite_writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::UnixTime;
pub use model::*;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached or timed out. Callers answer 503.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("cannot open storage: {0}")]
    Open(String),
}

pub type Result<T> = std::result::Result<T, StorageError>;

/// Where the data lives, resolved from the config's `storage:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSettings {
    /// `type: sqlite3`; the file and its parent directory are created when missing.
    Sqlite {
        file: PathBuf,
    },
    /// `type: memory`: SQLite in memory, gone when the process exits.
    Memory,
    Postgres(PostgresSettings),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostgresSettings {
    /// A full `postgres://` URL / DSN (`connectionString`); when set, the fields below
    /// override what it says only where they are set.
    pub url: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    /// disable | allow | prefer | require | verify-ca | verify-full
    pub ssl_mode: Option<String>,
    pub ssl_ca_file: Option<PathBuf>,
    pub max_open_conns: Option<u32>,
    pub conn_timeout: Option<Duration>,
    /// `connMaxLifetime`: a pooled connection older than this is closed instead of reused
    /// (for a server or proxy that drops long-lived sessions). Unset: sqlx's 30 minutes.
    pub conn_max_lifetime: Option<Duration>,
}

#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Which database this is ("sqlite" or "postgres"), for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Applies pending migrations. Idempotent.
    async fn migrate(&self) -> Result<()>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<()>;

    // Clients created through the admin API.
    async fn create_client(&self, client: &Client) -> Result<()>;
    async fn get_client(&self, id: &str) -> Result<Option<Client>>;
    async fn list_clients(&self) -> Result<Vec<Client>>;
    async fn update_client(&self, client: &Client) -> Result<()>;
    async fn delete_client(&self, id: &str) -> Result<bool>;

    // The password database. Emails are compared case-insensitively.
    async fn create_password(&self, password: &Password) -> Result<()>;
    async fn get_password(&self, email: &str) -> Result<Option<Password>>;
    async fn get_password_by_username(&self, username: &str) -> Result<Option<Password>>;
    async fn list_passwords(&self) -> Result<Vec<Password>>;
    /// Calls `each` with every stored password hash, one row at a time, so that reading them
    /// all takes memory for one row however many users there are.
    async fn each_password_hash(
        &self,
        each: &mut (dyn for<'h> FnMut(&'h str) + Send),
    ) -> Result<()>;
    async fn update_password(&self, password: &Password) -> Result<()>;
    async fn delete_password(&self, email: &str) -> Result<bool>;

    // Connectors kept in storage (Dex's API, `lanyard admin connectors`). Every change bumps
    // the connectors generation in the same transaction.
    /// `AlreadyExists` when the id is taken. The stored version is 1.
    async fn create_connector(&self, connector: &StoredConnector) -> Result<()>;
    async fn get_connector(&self, id: &str) -> Result<Option<StoredConnector>>;
    /// Ordered by id.
    async fn list_connectors(&self) -> Result<Vec<StoredConnector>>;
    /// Replaces type, name and sealed config and counts one version up; `NotFound` when there
    /// is no such connector. Returns the new version.
    async fn update_connector(&self, connector: &StoredConnector) -> Result<i64>;
    async fn delete_connector(&self, id: &str) -> Result<bool>;
    /// A number that changes whenever a stored connector is created, updated or deleted, so
    /// that a replica learns in one cheap read whether its opened connectors are current.
    async fn connectors_generation(&self) -> Result<i64>;

    // Password-guessing budgets shared between replicas.
    /// Reserves one password attempt against each of `keys` (digests of the account and the
    /// client address, never raw names) before the password is checked, at `now`: if any key
    /// is locked, `Locked` and nothing is counted; otherwise every key counts a failure,
    /// locking the ones that reach `policy.max_failures`. Each key's count is decided by the
    /// database in the statement that increments it (an upsert on the row lock), so
    /// concurrent attempts from any number of replicas get no more than the budget between
    /// them. `None`: this storage keeps no shared budget (SQLite, memory: one process), and
    /// the caller counts in its own memory without a round trip.
    async fn reserve_login_attempt(
        &self,
        _keys: &[String],
        _policy: &AttemptPolicy,
        _now: UnixTime,
    ) -> Result<Option<AttemptDecision>> {
        Ok(None)
    }
    /// Settles a reserved attempt whose password was right: forgets `forgive` (the account)
    /// and takes back the failure counted at `reserved_at` against each of `refund` (the
    /// address, which a success does not vouch for beyond itself), lifting a lockout that very
    /// attempt started. One statement.
    async fn settle_login_attempt(
        &self,
        _forgive: Option<&str>,
        _refund: &[String],
        _reserved_at: UnixTime,
    ) -> Result<()> {
        Ok(())
    }

    // Logins in progress.
    async fn create_auth_request(&self, request: &AuthRequest) -> Result<()>;
    /// Returns the request even when expired; callers check `expires_at`.
    async fn get_auth_request(&self, id: &str) -> Result<Option<AuthRequest>>;
    /// Attaches a login result, only if the request exists, is unexpired and has none yet.
    async fn complete_auth_request(
        &self,
        id: &str,
        login: &LoginResult,
        now: UnixTime,
    ) -> Result<bool>;
    /// Records that an unfinished, unexpired login went to an upstream; false when the login
    /// is gone, expired or already completed.
    async fn begin_upstream_login(
        &self,
        id: &str,
        upstream: &UpstreamLogin,
        now: UnixTime,
    ) -> Result<bool>;
    async fn delete_auth_request(&self, id: &str) -> Result<bool>;

    /// In one transaction: deletes the auth request and stores the code, so that one login
    /// yields at most one code. False (and nothing written) if the request is gone or expired.
    async fn exchange_auth_request_for_code(
        &self,
        auth_request_id: &str,
        code: &AuthCode,
        now: UnixTime,
    ) -> Result<bool>;
    async fn get_auth_code(&self, code_hash: &str) -> Result<Option<AuthCode>>;
    /// In one transaction: marks the code redeemed if it is unredeemed and unexpired, then
    /// stores its grant and `tokens`. A code redeemed before gets its grant revoked.
    async fn redeem_auth_code(
        &self,
        code_hash: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<Redemption>;

    // Grants and the tokens that belong to them.
    async fn get_grant(&self, id: &str) -> Result<Option<Grant>>;
    /// Sets `revoked_at` if unset. True if this call revoked it.
    async fn revoke_grant(&self, id: &str, now: UnixTime) -> Result<bool>;
    /// The token and its grant, only if the token is unexpired and the grant unrevoked.
    async fn get_access_token(
        &self,
        token_hash: &str,
        now: UnixTime,
    ) -> Result<Option<(AccessToken, Grant)>>;

    // Signing keys.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKey>>;
    /// False, and nothing written, when a key already succeeds `key.successor_of`.
    async fn insert_signing_key(&self, key: &SigningKey) -> Result<bool>;
    async fn delete_signing_key(&self, kid: &str) -> Result<bool>;

    /// In one transaction: stores a new grant with its tokens (client_credentials, token
    /// exchange: grants that no code or device request precedes).
    async fn issue_grant(&self, grant: &Grant, tokens: &IssuedTokens) -> Result<()>;
    /// Deletes one access token, and in the same transaction its grant if that is left
    /// without a token and not revoked. True if the token existed.
    async fn revoke_access_token(&self, token_hash: &str) -> Result<bool>;

    // Refresh tokens.
    /// The token and its grant whatever their state (revoked, rotated, expired), for
    /// introspection and revocation.
    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<(RefreshToken, Grant)>>;
    /// One use of a refresh token, decided in one transaction (row-locked on PostgreSQL,
    /// `BEGIN IMMEDIATE` on SQLite): see [`RefreshOutcome`] for what each case writes.
    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<RefreshOutcome>;

    // Device authorizations (RFC 8628).
    /// `AlreadyExists` when the user code is taken (the caller draws another).
    async fn create_device_request(&self, request: &DeviceRequest) -> Result<()>;
    async fn get_device_request(&self, user_code: &str) -> Result<Option<DeviceRequest>>;
    /// The request a device code belongs to, whatever its state.
    async fn find_device_request(&self, device_code_hash: &str) -> Result<Option<DeviceRequest>>;
    /// Approves (with the grant redemption will create) or denies (`None`) a pending,
    /// unexpired request. False, and nothing written, otherwise.
    async fn complete_device_request(
        &self,
        user_code: &str,
        grant: Option<&Grant>,
        now: UnixTime,
    ) -> Result<bool>;
    /// One poll by the device, decided in one transaction: records the poll time, enforces
    /// the interval, and on an approved request marks it redeemed and stores its grant and
    /// `tokens`. The poller cannot know the approved grant's id, so the `grant_id` of
    /// `tokens` is ignored: they are stored under the grant that `Issued` returns.
    async fn poll_device_request(
        &self,
        device_code_hash: &str,
        client_id: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<DevicePoll>;

    // Sign-in sessions.
    async fn create_session(&self, session: &Session) -> Result<()>;
    /// The session whatever its state; callers check `expires_at` and `revoked_at`.
    async fn get_session(&self, id_hash: &str) -> Result<Option<Session>>;
    async fn revoke_session(&self, id_hash: &str, now: UnixTime) -> Result<bool>;

    // Administration (`lanyard admin sessions`).
    /// Grants matching `filter`, oldest first.
    async fn list_grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>>;
    /// When a refresh token of the grant was last used (issued, for one never used); `None`
    /// when the grant has no refresh token (Dex's API lists refresh tokens per user).
    async fn refresh_last_used(&self, grant_id: &str) -> Result<Option<UnixTime>>;
    /// Sign-in sessions matching `filter` (its `client_id` is ignored: a browser session
    /// belongs to no client), oldest first.
    async fn list_sessions(&self, filter: &GrantFilter) -> Result<Vec<Session>>;
    /// Revokes every unrevoked grant (and so every token of it) and sign-in session matching
    /// `filter`. Each revocation is atomic on its own; a grant created while this runs is not
    /// covered, so offboarding disables the user upstream first.
    async fn revoke_access(&self, filter: &GrantFilter) -> Result<RevokedAccess> {
        let active = GrantFilter {
            active_only: true,
            ..filter.clone()
        };
        let mut revoked = RevokedAccess::default();
        for grant in self.list_grants(&active).await? {
            if self.revoke_grant(&grant.id, filter.now).await? {
                revoked.grants += 1;
            }
        }
        if filter.client_id.is_none() {
            for session in self.list_sessions(&active).await? {
                if self.revoke_session(&session.id_hash, filter.now).await? {
                    revoked.sessions += 1;
                }
            }
        }
        Ok(revoked)
    }

    /// Deletes, in batches of at most `cutoffs.batch` rows of each kind: expired auth
    /// requests, codes expired before `code_cutoff`, expired access tokens, refresh tokens
    /// past `expires_at`, idle past `refresh_idle_cutoff`, or rotated before
    /// `rotated_cutoff` (the family keeps its current token), grants revoked before `grant_cutoff` (with
    /// their tokens), client_credentials grants made before `client_grant_cutoff` whose
    /// token is gone, expired device requests, sessions expired or revoked before `now`, and
    /// shared password-attempt counters that have nothing left to remember.
    async fn sweep(&self, cutoffs: &SweepCutoffs) -> Result<Swept>;
}

pub type SharedStorage = Arc<dyn Storage>;

/// Opens (and creates, for SQLite) the configured database and applies migrations.
pub async fn open(settings: &StorageSettings) -> Result<SharedStorage> {
    let storage: SharedStorage = match settings {
        StorageSettings::Sqlite { file } => Arc::new(sqlite::SqliteStorage::open_file(file).await?),
        StorageSettings::Memory => Arc::new(sqlite::SqliteStorage::open_memory().await?),
        StorageSettings::Postgres(pg) => Arc::new(postgres::PostgresStorage::connect(pg).await?),
    };
    storage.migrate().await?;
    Ok(storage)
}
