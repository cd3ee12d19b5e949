//! What the SQLite and PostgreSQL implementations share: the SQL text (both accept `$N`
//! placeholders and the same dialect for every statement here), the row shapes, the
//! conversions between rows and models, and the mapping of database errors.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::error::ErrorKind;

use super::model::*;
use super::{Result, StorageError};
use crate::clock::UnixTime;

/// Serialises a list or struct for a JSON text column.
pub(super) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StorageError::Corrupt(format!("cannot serialise {what}: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StorageError::Corrupt(format!("{what} is not valid JSON: {e}")))
}

/// Emails are stored lower-cased so that the primary key compares them case-insensitively.
pub(super) fn normalize_email(email: &str) -> String {
    email.to_lowercase()
}

/// Maps a database error. `subject` names the record for the messages
/// ("client \"x\"", "authorization code"); it never contains a secret.
pub(super) fn storage_error(error: sqlx::Error, subject: &str) -> StorageError {
    match error {
        sqlx::Error::Database(db) => match db.kind() {
            ErrorKind::UniqueViolation => StorageError::AlreadyExists(subject.to_string()),
            ErrorKind::ForeignKeyViolation => {
                StorageError::NotFound(format!("the record {subject} refers to"))
            }
            ErrorKind::NotNullViolation | ErrorKind::CheckViolation => {
                StorageError::Corrupt(format!("{subject} violates a constraint: {db}"))
            }
            // Busy/locked SQLite files, dropped connections, serialization failures,
            // shutting-down servers: all transient from the caller's point of view.
            _ => StorageError::Unavailable(format!("database error on {subject}: {db}")),
        },
        sqlx::Error::RowNotFound => StorageError::NotFound(subject.to_string()),
        e @ (sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }) => {
            StorageError::Corrupt(format!("cannot read {subject}: {e}"))
        }
        e @ sqlx::Error::Configuration(_) => StorageError::Open(e.to_string()),
        sqlx::Error::Migrate(e) => StorageError::Migration(e.to_string()),
        e => StorageError::Unavailable(format!("{subject}: {e}")),
    }
}

/// Shorthand for `.map_err(|e| storage_error(e, subject))`.
pub(super) trait ResultExt<T> {
    fn or_storage(self, subject: &str) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn or_storage(self, subject: &str) -> Result<T> {
        self.map_err(|e| storage_error(e, subject))
    }
}

// ---------------------------------------------------------------------------------------
// SQL. Every statement is valid in both SQLite (3.35+, for RETURNING) and PostgreSQL, except
// the `lock_*` ones (`FOR UPDATE`), which only PostgreSQL needs and accepts.

pub(super) const PING: &str = "SELECT 1";

pub(super) const INSERT_CLIENT: &str = "INSERT INTO clients (id, secret_sha256, redirect_uris, \
     trusted_peers, is_public, name, logo_url, grant_types, post_logout_redirect_uris, \
     allowed_connectors, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
/// `created_at` is when the client was created; an update leaves it alone.
pub(super) const UPDATE_CLIENT: &str =
    "UPDATE clients SET secret_sha256 = $2, redirect_uris = $3, \
     trusted_peers = $4, is_public = $5, name = $6, logo_url = $7, grant_types = $8, \
     post_logout_redirect_uris = $9, allowed_connectors = $10 WHERE id = $1";
const CLIENT_COLUMNS_SELECT: &str = "SELECT id, secret_sha256, redirect_uris, trusted_peers, \
     is_public, name, logo_url, grant_types, post_logout_redirect_uris, allowed_connectors, \
     created_at FROM clients";
pub(super) fn select_client() -> String {
    format!("{CLIENT_COLUMNS_SELECT} WHERE id = $1")
}
pub(super) fn list_clients() -> String {
    format!("{CLIENT_COLUMNS_SELECT} ORDER BY id")
}
pub(super) const DELETE_CLIENT: &str = "DELETE FROM clients WHERE id = $1";

pub(super) const INSERT_PASSWORD: &str = "INSERT INTO passwords (email, hash, username, user_id, \
     user_groups, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// `created_at` is when the user was created; an update leaves it alone.
pub(super) const UPDATE_PASSWORD: &str = "UPDATE passwords SET hash = $2, username = $3, \
     user_id = $4, user_groups = $5, updated_at = $6 WHERE email = $1";
const PASSWORD_SELECT: &str = "SELECT email, hash, username, user_id, user_groups, created_at, \
     updated_at FROM passwords";
pub(super) fn select_password_by_email() -> String {
    format!("{PASSWORD_SELECT} WHERE email = $1")
}
pub(super) fn select_password_by_username() -> String {
    format!("{PASSWORD_SELECT} WHERE username = $1")
}
pub(super) fn list_passwords() -> String {
    format!("{PASSWORD_SELECT} ORDER BY email")
}
pub(super) const DELETE_PASSWORD: &str = "DELETE FROM passwords WHERE email = $1";

pub(super) const INSERT_AUTH_REQUEST: &str = "INSERT INTO auth_requests (id, client_id, params, \
     csrf_token, browser_binding, login, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) const SELECT_AUTH_REQUEST: &str = "SELECT id, client_id, params, csrf_token, \
     browser_binding, login, upstream, created_at, expires_at FROM auth_requests WHERE id = $1";
/// Only a login that nobody has completed yet may be sent upstream (again: a user may go back
/// and pick another connector, which replaces the earlier attempt).
pub(super) const BEGIN_UPSTREAM_LOGIN: &str = "UPDATE auth_requests SET upstream = $2 \
     WHERE id = $1 AND expires_at > $3 AND login IS NULL";
pub(super) const COMPLETE_AUTH_REQUEST: &str = "UPDATE auth_requests SET login = $2 \
     WHERE id = $1 AND expires_at > $3 AND login IS NULL";
pub(super) const DELETE_AUTH_REQUEST: &str = "DELETE FROM auth_requests WHERE id = $1";
/// The first half of exchanging a login for a code: only one exchange can delete the row.
pub(super) const CONSUME_AUTH_REQUEST: &str =
    "DELETE FROM auth_requests WHERE id = $1 AND expires_at > $2";

pub(super) const INSERT_AUTH_CODE: &str = "INSERT INTO auth_codes (code_hash, grant_id, \
     redirect_uri, code_challenge, code_challenge_method, grant_json, created_at, expires_at, \
     redeemed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(super) const SELECT_AUTH_CODE: &str = "SELECT code_hash, redirect_uri, code_challenge, \
     code_challenge_method, grant_json, created_at, expires_at, redeemed_at \
     FROM auth_codes WHERE code_hash = $1";
/// Claims the code: the row lock (PostgreSQL) or the write lock (SQLite) lets exactly one
/// concurrent redemption see `redeemed_at IS NULL`.
macro_rules! claim_auth_code {
    () => {
        "UPDATE auth_codes SET redeemed_at = $2 \
         WHERE code_hash = $1 AND redeemed_at IS NULL AND expires_at > $2 \
         RETURNING code_hash, redirect_uri, code_challenge, code_challenge_method, grant_json, \
         created_at, expires_at, redeemed_at"
    };
}
pub(super) const CLAIM_AUTH_CODE: &str = claim_auth_code!();
/// SQLite: the write lock is taken in the same round trip as the claim (see `HandTx`).
pub(super) const BEGIN_AND_CLAIM_AUTH_CODE: &str = concat!("BEGIN IMMEDIATE; ", claim_auth_code!());
/// Why a claim failed: redeemed before, expired, or absent.
pub(super) const SELECT_AUTH_CODE_STATE: &str =
    "SELECT grant_id, expires_at, redeemed_at FROM auth_codes WHERE code_hash = $1";

pub(super) const INSERT_GRANT: &str = "INSERT INTO grants (id, client_id, connector_id, user_id, \
     claims, scopes, nonce, auth_time, connector_data, created_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub(super) const SELECT_GRANT: &str = "SELECT id, client_id, connector_id, claims, scopes, nonce, \
     auth_time, connector_data, created_at, revoked_at FROM grants WHERE id = $1";
pub(super) const REVOKE_GRANT: &str =
    "UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

pub(super) const INSERT_ACCESS_TOKEN: &str = "INSERT INTO access_tokens (token_hash, grant_id, \
     client_id, created_at, expires_at, scopes) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_LIVE_ACCESS_TOKEN: &str = "SELECT t.token_hash AS token_hash, \
     t.grant_id AS token_grant_id, t.client_id AS token_client_id, \
     t.created_at AS token_created_at, t.expires_at AS token_expires_at, \
     t.scopes AS token_scopes, g.id AS id, g.client_id AS client_id, g.connector_id AS connector_id, \
     g.claims AS claims, g.scopes AS scopes, g.nonce AS nonce, g.auth_time AS auth_time, \
     g.connector_data AS connector_data, g.created_at AS created_at, \
     g.revoked_at AS revoked_at \
     FROM access_tokens t JOIN grants g ON g.id = t.grant_id \
     WHERE t.token_hash = $1 AND t.expires_at > $2 AND g.revoked_at IS NULL";

pub(super) const LIST_SIGNING_KEYS: &str = "SELECT kid, alg, public_jwk, private_key_enc, \
     successor_of, created_at, sign_from FROM signing_keys ORDER BY created_at, kid";
/// The unique `successor_of` decides between concurrent rotations; the loser inserts nothing.
pub(super) const INSERT_SIGNING_KEY: &str = "INSERT INTO signing_keys (kid, alg, public_jwk, \
     private_key_enc, successor_of, created_at, sign_from) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (successor_of) DO NOTHING";
pub(super) const DELETE_SIGNING_KEY: &str = "DELETE FROM signing_keys WHERE kid = $1";

/// A token issued with a new grant. `successor_sealed` is only ever written by a rotation.
pub(super) const INSERT_REFRESH_TOKEN: &str = "INSERT INTO refresh_tokens (token_hash, grant_id, \
     client_id, created_at, last_used_at, expires_at, rotated_at, successor_hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) const DELETE_ACCESS_TOKEN: &str = "DELETE FROM access_tokens WHERE token_hash = $1";
/// A refresh token and its grant, with the columns of both [`RefreshTokenWithGrantRow`] (to
/// answer a read) and [`RefreshTokenStateWithGrant`] (to decide a rotation; SQLite's batches
/// read once for both, see `sqlite_writer`).
macro_rules! refresh_token_with_grant {
    () => {
        "SELECT r.token_hash AS token_hash, \
         r.grant_id AS token_grant_id, r.client_id AS token_client_id, \
         r.created_at AS token_created_at, r.last_used_at AS last_used_at, \
         r.expires_at AS token_expires_at, r.expires_at AS expires_at, \
         r.rotated_at AS rotated_at, r.successor_hash AS successor_hash, \
         r.successor_sealed AS successor_sealed, \
         g.id AS id, g.client_id AS client_id, g.connector_id AS connector_id, \
         g.claims AS claims, g.scopes AS scopes, g.nonce AS nonce, g.auth_time AS auth_time, \
         g.connector_data AS connector_data, g.created_at AS created_at, \
         g.revoked_at AS revoked_at \
         FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id"
    };
}
pub(super) use refresh_token_with_grant;
/// SQLite: every refresh token a batch uses ($1, a JSON array of hashes).
macro_rules! batch_refresh_tokens {
    () => {
        concat!(
            refresh_token_with_grant!(),
            " WHERE r.token_hash IN (SELECT value FROM json_each($1))"
        )
    };
}
/// SQLite: a batch's refresh tokens read with the write lock taken in the same round trip.
pub(super) const BEGIN_AND_READ_REFRESH_TOKENS: &str =
    concat!("BEGIN IMMEDIATE; ", batch_refresh_tokens!());
/// SQLite: the same for a batch that only reads.
pub(super) const READ_REFRESH_TOKENS: &str = batch_refresh_tokens!();
/// PostgreSQL: concurrent uses of one token queue on its row, and each sees what the previous
/// one committed.
pub(super) const LOCK_ROTATION_STATE: &str = concat!(
    refresh_token_with_grant!(),
    " WHERE r.token_hash = $1 FOR UPDATE OF r"
);

pub(super) const SELECT_REFRESH_TOKEN_WITH_GRANT: &str =
    concat!(refresh_token_with_grant!(), " WHERE r.token_hash = $1");

pub(super) const INSERT_DEVICE_REQUEST: &str = "INSERT INTO device_requests (user_code, \
     device_code_hash, client_id, scopes, created_at, expires_at, poll_interval, last_poll_at, \
     status, grant_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const DEVICE_REQUEST_SELECT: &str = "SELECT user_code, device_code_hash, client_id, scopes, \
     created_at, expires_at, poll_interval, last_poll_at, status, grant_json \
     FROM device_requests";
pub(super) fn select_device_request() -> String {
    format!("{DEVICE_REQUEST_SELECT} WHERE user_code = $1")
}
pub(super) fn select_device_request_by_device_code() -> String {
    format!("{DEVICE_REQUEST_SELECT} WHERE device_code_hash = $1")
}
/// PostgreSQL only: concurrent polls of one device code queue here.
pub(super) fn lock_device_request_by_device_code() -> String {
    format!("{DEVICE_REQUEST_SELECT} WHERE device_code_hash = $1 FOR UPDATE")
}
pub(super) const COMPLETE_DEVICE_REQUEST: &str = "UPDATE device_requests SET status = $2, \
     grant_json = $3 WHERE user_code = $1 AND status = 'pending' AND expires_at > $4";
pub(super) const RECORD_DEVICE_POLL: &str =
    "UPDATE device_requests SET last_poll_at = $2 WHERE device_code_hash = $1";
pub(super) const SLOW_DEVICE_DOWN: &str = "UPDATE device_requests \
     SET last_poll_at = $2, poll_interval = poll_interval + $3 WHERE device_code_hash = $1";
pub(super) const REDEEM_DEVICE_REQUEST: &str = "UPDATE device_requests \
     SET last_poll_at = $2, status = 'redeemed' \
     WHERE device_code_hash = $1 AND status = 'approved'";

pub(super) const INSERT_SESSION: &str = "INSERT INTO sessions (id, user_id, connector_id, claims, \
     connector_data, auth_time, created_at, expires_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(super) const SELECT_SESSION: &str = "SELECT id, connector_id, claims, connector_data, \
     auth_time, created_at, expires_at, revoked_at FROM sessions WHERE id = $1";
pub(super) const REVOKE_SESSION: &str =
    "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

// Admin listings. Unset filters are NULL parameters; the email filter runs on the decoded
// claims (`GrantFilter::matches_claims`).
pub(super) const LIST_GRANTS: &str = "SELECT id, client_id, connector_id, claims, scopes, nonce, \
     auth_time, connector_data, created_at, revoked_at FROM grants \
     WHERE ($1 IS NULL OR connector_id = $1) AND ($2 IS NULL OR user_id = $2) \
     AND ($3 IS NULL OR client_id = $3) AND ($4 = 0 OR revoked_at IS NULL) \
     ORDER BY created_at, id";
pub(super) const LIST_SESSIONS: &str = "SELECT id, connector_id, claims, connector_data, \
     auth_time, created_at, expires_at, revoked_at FROM sessions \
     WHERE ($1 IS NULL OR connector_id = $1) AND ($2 IS NULL OR user_id = $2) \
     AND ($3 = 0 OR (revoked_at IS NULL AND expires_at > $4)) \
     ORDER BY created_at, id";

// Sweeps delete through a bounded sub-select so that one call holds locks for a short time.
// Every statement takes the cutoff as $1 and the row limit as $2, and each reason for
// deleting a kind is its own statement so that each can use its index.
pub(super) const SWEEP_AUTH_REQUESTS: &str = "DELETE FROM auth_requests WHERE id IN \
     (SELECT id FROM auth_requests WHERE expires_at < $1 LIMIT $2)";
pub(super) const SWEEP_AUTH_CODES: &str = "DELETE FROM auth_codes WHERE code_hash IN \
     (SELECT code_hash FROM auth_codes WHERE expires_at < $1 LIMIT $2)";
pub(super) const SWEEP_ACCESS_TOKENS: &str = "DELETE FROM access_tokens WHERE token_hash IN \
     (SELECT token_hash FROM access_tokens WHERE expires_at < $1 LIMIT $2)";
pub(super) const SWEEP_ACCESS_TOKENS_OF_REVOKED_GRANTS: &str = "DELETE FROM access_tokens \
     WHERE token_hash IN (SELECT token_hash FROM access_tokens WHERE grant_id IN \
     (SELECT id FROM grants WHERE revoked_at IS NOT NULL AND revoked_at < $1) LIMIT $2)";
pub(super) const SWEEP_EXPIRED_REFRESH_TOKENS: &str = "DELETE FROM refresh_tokens \
     WHERE token_hash IN (SELECT token_hash FROM refresh_tokens \
     WHERE expires_at IS NOT NULL AND expires_at < $1 LIMIT $2)";
pub(super) const SWEEP_IDLE_REFRESH_TOKENS: &str = "DELETE FROM refresh_tokens \
     WHERE token_hash IN (SELECT token_hash FROM refresh_tokens WHERE last_used_at < $1 LIMIT $2)";
/// Only rotated tokens: the family's current token stays until it expires or idles.
pub(super) const SWEEP_ROTATED_REFRESH_TOKENS: &str = "DELETE FROM refresh_tokens \
     WHERE token_hash IN (SELECT token_hash FROM refresh_tokens \
     WHERE rotated_at IS NOT NULL AND rotated_at < $1 LIMIT $2)";
pub(super) const SWEEP_REFRESH_TOKENS_OF_REVOKED_GRANTS: &str = "DELETE FROM refresh_tokens \
     WHERE token_hash IN (SELECT token_hash FROM refresh_tokens WHERE grant_id IN \
     (SELECT id FROM grants WHERE revoked_at IS NOT NULL AND revoked_at < $1) LIMIT $2)";
/// Grants whose tokens the statements above have all deleted; the rest go in a later sweep.
pub(super) const SWEEP_GRANTS: &str = "DELETE FROM grants WHERE id IN \
     (SELECT g.id FROM grants g WHERE g.revoked_at IS NOT NULL AND g.revoked_at < $1 \
      AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = g.id) \
      AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.id) \
      LIMIT $2)";
pub(super) const SWEEP_DEVICE_REQUESTS: &str = "DELETE FROM device_requests WHERE user_code IN \
     (SELECT user_code FROM device_requests WHERE expires_at < $1 LIMIT $2)";
pub(super) const SWEEP_EXPIRED_SESSIONS: &str = "DELETE FROM sessions WHERE id IN \
     (SELECT id FROM sessions WHERE expires_at < $1 LIMIT $2)";
pub(super) const SWEEP_REVOKED_SESSIONS: &str = "DELETE FROM sessions WHERE id IN \
     (SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at < $1 LIMIT $2)";

/// One kind of row housekeeping deletes: the statements (with their cutoffs) that share the
/// kind's batch, in order.
pub(super) struct SweepKind {
    pub subject: &'static str,
    pub steps: Vec<(&'static str, UnixTime)>,
}

/// What `sweep` runs, in order. Tokens go before grants, so that a revoked grant whose
/// tokens fit in this batch is deleted in the same call.
pub(super) fn sweep_plan(c: &SweepCutoffs) -> [SweepKind; 7] {
    let mut refresh = vec![(SWEEP_EXPIRED_REFRESH_TOKENS, c.now)];
    if let Some(idle) = c.refresh_idle_cutoff {
        refresh.push((SWEEP_IDLE_REFRESH_TOKENS, idle));
    }
    refresh.push((SWEEP_ROTATED_REFRESH_TOKENS, c.rotated_cutoff));
    refresh.push((SWEEP_REFRESH_TOKENS_OF_REVOKED_GRANTS, c.grant_cutoff));
    [
        SweepKind {
            subject: "expired auth requests",
            steps: vec![(SWEEP_AUTH_REQUESTS, c.now)],
        },
        SweepKind {
            subject: "expired authorization codes",
            steps: vec![(SWEEP_AUTH_CODES, c.code_cutoff)],
        },
        SweepKind {
            subject: "expired access tokens",
            steps: vec![
                (SWEEP_ACCESS_TOKENS, c.now),
                (SWEEP_ACCESS_TOKENS_OF_REVOKED_GRANTS, c.grant_cutoff),
            ],
        },
        SweepKind {
            subject: "dead refresh tokens",
            steps: refresh,
        },
        SweepKind {
            subject: "revoked grants",
            steps: vec![(SWEEP_GRANTS, c.grant_cutoff)],
        },
        SweepKind {
            subject: "expired device requests",
            steps: vec![(SWEEP_DEVICE_REQUESTS, c.now)],
        },
        SweepKind {
            subject: "expired or revoked sessions",
            steps: vec![
                (SWEEP_EXPIRED_SESSIONS, c.now),
                (SWEEP_REVOKED_SESSIONS, c.now),
            ],
        },
    ]
}

/// Where each kind's count goes, in `sweep_plan`'s order.
pub(super) fn sweep_counts(swept: &mut Swept) -> [&mut u64; 7] {
    [
        &mut swept.auth_requests,
        &mut swept.auth_codes,
        &mut swept.access_tokens,
        &mut swept.refresh_tokens,
        &mut swept.grants,
        &mut swept.device_requests,
        &mut swept.sessions,
    ]
}

// ---------------------------------------------------------------------------------------
// Rows. `FromRow` derives a row-type-generic impl, so both databases decode the same structs.

#[derive(sqlx::FromRow)]
pub(super) struct ClientRow {
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

impl ClientRow {
    pub(super) fn into_model(self) -> Result<Client> {
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
pub(super) struct ClientJson {
    pub redirect_uris: String,
    pub trusted_peers: String,
    pub grant_types: String,
    pub post_logout_redirect_uris: String,
    pub allowed_connectors: String,
}

impl ClientJson {
    pub(super) fn new(client: &Client) -> Result<Self> {
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

#[derive(sqlx::FromRow)]
pub(super) struct PasswordRow {
    email: String,
    hash: String,
    username: String,
    user_id: String,
    user_groups: String,
    created_at: i64,
    updated_at: i64,
}

impl PasswordRow {
    pub(super) fn into_model(self) -> Result<Password> {
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
pub(super) struct AuthRequestRow {
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

impl AuthRequestRow {
    pub(super) fn into_model(self) -> Result<AuthRequest> {
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
pub(super) struct AuthCodeRow {
    code_hash: String,
    redirect_uri: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    grant_json: String,
    created_at: i64,
    expires_at: i64,
    redeemed_at: Option<i64>,
}

impl AuthCodeRow {
    pub(super) fn into_model(self) -> Result<AuthCode> {
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
pub(super) struct AuthCodeState {
    pub grant_id: String,
    pub expires_at: i64,
    pub redeemed_at: Option<i64>,
}

impl AuthCodeState {
    /// Why a claim of this code at `now` failed.
    pub(super) fn failure(self, now: UnixTime) -> FailedClaim {
        match self.redeemed_at {
            Some(_) => FailedClaim::Replayed(self.grant_id),
            None if self.expires_at <= now => FailedClaim::Expired,
            // Unredeemed and unexpired, yet the claim missed it: it was inserted after the
            // claim ran, so for this call it did not exist.
            None => FailedClaim::NotFound,
        }
    }
}

pub(super) enum FailedClaim {
    Replayed(String),
    Expired,
    NotFound,
}

#[derive(sqlx::FromRow)]
pub(super) struct GrantRow {
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

impl GrantRow {
    pub(super) fn into_model(self) -> Result<Grant> {
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
pub(super) struct GrantJson {
    pub claims: String,
    pub scopes: String,
}

impl GrantJson {
    pub(super) fn new(grant: &Grant) -> Result<Self> {
        Ok(Self {
            claims: to_json(&grant.claims, "grant claims")?,
            scopes: to_json(&grant.scopes, "grant scopes")?,
        })
    }
}

/// An access token's own scopes as stored: NULL when it carries its grant's.
pub(super) fn access_token_scopes(token: &AccessToken) -> Result<Option<String>> {
    token
        .scopes
        .as_ref()
        .map(|s| to_json(s, "access token scopes"))
        .transpose()
}

#[derive(sqlx::FromRow)]
pub(super) struct AccessTokenWithGrantRow {
    token_hash: String,
    token_grant_id: String,
    token_client_id: String,
    token_created_at: i64,
    token_expires_at: i64,
    token_scopes: Option<String>,
    #[sqlx(flatten)]
    grant: GrantRow,
}

impl AccessTokenWithGrantRow {
    pub(super) fn into_model(self) -> Result<(AccessToken, Grant)> {
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
pub(super) struct SigningKeyRow {
    kid: String,
    alg: String,
    public_jwk: String,
    private_key_enc: Vec<u8>,
    successor_of: String,
    created_at: i64,
    sign_from: i64,
}

impl SigningKeyRow {
    pub(super) fn into_model(self) -> SigningKey {
        SigningKey {
            kid: self.kid,
            alg: self.alg,
            public_jwk: self.public_jwk,
            private_key_enc: self.private_key_enc,
            successor_of: self.successor_of,
            created_at: self.created_at,
            sign_from: self.sign_from,
        }
    }
}

/// A refresh token's rotation state.
#[derive(sqlx::FromRow)]
pub(super) struct RefreshTokenState {
    last_used_at: i64,
    expires_at: Option<i64>,
    rotated_at: Option<i64>,
    successor_sealed: Option<Vec<u8>>,
}

/// A token's rotation state and its grant, read together.
#[derive(sqlx::FromRow)]
pub(super) struct RefreshTokenStateWithGrant {
    #[sqlx(flatten)]
    pub state: RefreshTokenState,
    #[sqlx(flatten)]
    pub grant: GrantRow,
}

#[derive(sqlx::FromRow)]
pub(super) struct RefreshTokenWithGrantRow {
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

impl RefreshTokenWithGrantRow {
    pub(super) fn into_model(self) -> Result<(RefreshToken, Grant)> {
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
pub(super) enum RefreshDecision {
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

pub(super) fn decide_refresh(
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
pub(super) struct DeviceRequestRow {
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

impl DeviceRequestRow {
    pub(super) fn into_model(self) -> Result<DeviceRequest> {
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
pub(super) const SLOW_DOWN_STEP: i64 = 5;

/// What one poll of a device code does, decided from the locked request row.
#[derive(Debug)]
pub(super) enum PollDecision {
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

pub(super) fn decide_poll(
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
pub(super) fn tokens_for_grant(tokens: &IssuedTokens, grant: &Grant) -> IssuedTokens {
    let mut tokens = tokens.clone();
    tokens.access.grant_id.clone_from(&grant.id);
    if let Some(refresh) = tokens.refresh.as_mut() {
        refresh.grant_id.clone_from(&grant.id);
    }
    tokens
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    id: String,
    connector_id: String,
    claims: String,
    connector_data: Option<String>,
    auth_time: i64,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

impl SessionRow {
    pub(super) fn into_model(self) -> Result<Session> {
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
pub(super) fn batch_limit(rows: u64) -> i64 {
    i64::try_from(rows).unwrap_or(i64::MAX)
}
