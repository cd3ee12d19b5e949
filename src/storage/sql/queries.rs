//! The SQL text, written once: both SQLite (3.35+, for RETURNING) and PostgreSQL accept `$N`
//! placeholders and every statement here, except the `lock_*` ones (`FOR UPDATE`), which only
//! PostgreSQL needs and accepts, and the batched reads that only SQLite's writer sends.

use crate::clock::UnixTime;
use crate::storage::model::{SweepCutoffs, Swept};

pub(in crate::storage) const PING: &str = "SELECT 1";

pub(in crate::storage) const INSERT_CLIENT: &str =
    "INSERT INTO clients (id, secret_sha256, redirect_uris, \
     trusted_peers, is_public, name, logo_url, grant_types, post_logout_redirect_uris, \
     allowed_connectors, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
/// `created_at` is when the client was created; an update leaves it alone.
pub(in crate::storage) const UPDATE_CLIENT: &str =
    "UPDATE clients SET secret_sha256 = $2, redirect_uris = $3, \
     trusted_peers = $4, is_public = $5, name = $6, logo_url = $7, grant_types = $8, \
     post_logout_redirect_uris = $9, allowed_connectors = $10 WHERE id = $1";
const CLIENT_COLUMNS_SELECT: &str = "SELECT id, secret_sha256, redirect_uris, trusted_peers, \
     is_public, name, logo_url, grant_types, post_logout_redirect_uris, allowed_connectors, \
     created_at FROM clients";
pub(in crate::storage) fn select_client() -> String {
    format!("{CLIENT_COLUMNS_SELECT} WHERE id = $1")
}
pub(in crate::storage) fn list_clients() -> String {
    format!("{CLIENT_COLUMNS_SELECT} ORDER BY id")
}
pub(in crate::storage) const DELETE_CLIENT: &str = "DELETE FROM clients WHERE id = $1";

pub(in crate::storage) const INSERT_PASSWORD: &str =
    "INSERT INTO passwords (email, hash, username, user_id, \
     user_groups, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
/// `created_at` is when the user was created; an update leaves it alone.
pub(in crate::storage) const UPDATE_PASSWORD: &str =
    "UPDATE passwords SET hash = $2, username = $3, \
     user_id = $4, user_groups = $5, updated_at = $6 WHERE email = $1";
const PASSWORD_SELECT: &str = "SELECT email, hash, username, user_id, user_groups, created_at, \
     updated_at FROM passwords";
pub(in crate::storage) fn select_password_by_email() -> String {
    format!("{PASSWORD_SELECT} WHERE email = $1")
}
pub(in crate::storage) fn select_password_by_username() -> String {
    format!("{PASSWORD_SELECT} WHERE username = $1")
}
pub(in crate::storage) fn list_passwords() -> String {
    format!("{PASSWORD_SELECT} ORDER BY email")
}
pub(in crate::storage) const SELECT_PASSWORD_HASHES: &str = "SELECT hash FROM passwords";
pub(in crate::storage) const DELETE_PASSWORD: &str = "DELETE FROM passwords WHERE email = $1";

pub(in crate::storage) const INSERT_AUTH_REQUEST: &str =
    "INSERT INTO auth_requests (id, client_id, params, \
     csrf_token, browser_binding, login, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(in crate::storage) const SELECT_AUTH_REQUEST: &str =
    "SELECT id, client_id, params, csrf_token, \
     browser_binding, login, upstream, created_at, expires_at FROM auth_requests WHERE id = $1";
/// Only a login that nobody has completed yet may be sent upstream (again: a user may go back
/// and pick another connector, which replaces the earlier attempt).
pub(in crate::storage) const BEGIN_UPSTREAM_LOGIN: &str = "UPDATE auth_requests SET upstream = $2 \
     WHERE id = $1 AND expires_at > $3 AND login IS NULL";
pub(in crate::storage) const COMPLETE_AUTH_REQUEST: &str = "UPDATE auth_requests SET login = $2 \
     WHERE id = $1 AND expires_at > $3 AND login IS NULL";
pub(in crate::storage) const DELETE_AUTH_REQUEST: &str = "DELETE FROM auth_requests WHERE id = $1";
/// The first half of exchanging a login for a code: only one exchange can delete the row.
pub(in crate::storage) const CONSUME_AUTH_REQUEST: &str =
    "DELETE FROM auth_requests WHERE id = $1 AND expires_at > $2";

pub(in crate::storage) const INSERT_AUTH_CODE: &str =
    "INSERT INTO auth_codes (code_hash, grant_id, \
     redirect_uri, code_challenge, code_challenge_method, grant_json, created_at, expires_at, \
     redeemed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(in crate::storage) const SELECT_AUTH_CODE: &str =
    "SELECT code_hash, redirect_uri, code_challenge, \
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
pub(in crate::storage) const CLAIM_AUTH_CODE: &str = claim_auth_code!();
/// SQLite: the write lock is taken in the same round trip as the claim (see `HandTx`).
pub(in crate::storage) const BEGIN_AND_CLAIM_AUTH_CODE: &str =
    concat!("BEGIN IMMEDIATE; ", claim_auth_code!());
/// Why a claim failed: redeemed before, expired, or absent.
pub(in crate::storage) const SELECT_AUTH_CODE_STATE: &str =
    "SELECT grant_id, expires_at, redeemed_at FROM auth_codes WHERE code_hash = $1";

pub(in crate::storage) const INSERT_GRANT: &str =
    "INSERT INTO grants (id, client_id, connector_id, user_id, \
     claims, scopes, nonce, auth_time, connector_data, created_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
pub(in crate::storage) const SELECT_GRANT: &str =
    "SELECT id, client_id, connector_id, claims, scopes, nonce, \
     auth_time, connector_data, created_at, revoked_at FROM grants WHERE id = $1";
pub(in crate::storage) const REVOKE_GRANT: &str =
    "UPDATE grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

pub(in crate::storage) const INSERT_ACCESS_TOKEN: &str =
    "INSERT INTO access_tokens (token_hash, grant_id, \
     client_id, created_at, expires_at, scopes) VALUES ($1, $2, $3, $4, $5, $6)";
pub(in crate::storage) const SELECT_LIVE_ACCESS_TOKEN: &str = "SELECT t.token_hash AS token_hash, \
     t.grant_id AS token_grant_id, t.client_id AS token_client_id, \
     t.created_at AS token_created_at, t.expires_at AS token_expires_at, \
     t.scopes AS token_scopes, g.id AS id, g.client_id AS client_id, g.connector_id AS connector_id, \
     g.claims AS claims, g.scopes AS scopes, g.nonce AS nonce, g.auth_time AS auth_time, \
     g.connector_data AS connector_data, g.created_at AS created_at, \
     g.revoked_at AS revoked_at \
     FROM access_tokens t JOIN grants g ON g.id = t.grant_id \
     WHERE t.token_hash = $1 AND t.expires_at > $2 AND g.revoked_at IS NULL";

pub(in crate::storage) const LIST_SIGNING_KEYS: &str =
    "SELECT kid, alg, public_jwk, private_key_enc, \
     successor_of, created_at, sign_from FROM signing_keys ORDER BY created_at, kid";
/// The unique `successor_of` decides between concurrent rotations; the loser inserts nothing.
pub(in crate::storage) const INSERT_SIGNING_KEY: &str =
    "INSERT INTO signing_keys (kid, alg, public_jwk, \
     private_key_enc, successor_of, created_at, sign_from) VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (successor_of) DO NOTHING";
pub(in crate::storage) const DELETE_SIGNING_KEY: &str = "DELETE FROM signing_keys WHERE kid = $1";

/// A token issued with a new grant. `successor_sealed` is only ever written by a rotation.
pub(in crate::storage) const INSERT_REFRESH_TOKEN: &str =
    "INSERT INTO refresh_tokens (token_hash, grant_id, \
     client_id, created_at, last_used_at, expires_at, rotated_at, successor_hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
/// Returns the token's grant, which may have no token left (see `revoke_access_token`).
pub(in crate::storage) const DELETE_ACCESS_TOKEN: &str =
    "DELETE FROM access_tokens WHERE token_hash = $1 RETURNING grant_id";
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
pub(in crate::storage) use refresh_token_with_grant;
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
pub(in crate::storage) const BEGIN_AND_READ_REFRESH_TOKENS: &str =
    concat!("BEGIN IMMEDIATE; ", batch_refresh_tokens!());
/// SQLite: the same for a batch that only reads.
pub(in crate::storage) const READ_REFRESH_TOKENS: &str = batch_refresh_tokens!();
/// PostgreSQL: concurrent uses of one token queue on its row, and each sees what the previous
/// one committed.
pub(in crate::storage) const LOCK_ROTATION_STATE: &str = concat!(
    refresh_token_with_grant!(),
    " WHERE r.token_hash = $1 FOR UPDATE OF r"
);

pub(in crate::storage) const SELECT_REFRESH_TOKEN_WITH_GRANT: &str =
    concat!(refresh_token_with_grant!(), " WHERE r.token_hash = $1");

pub(in crate::storage) const INSERT_DEVICE_REQUEST: &str =
    "INSERT INTO device_requests (user_code, \
     device_code_hash, client_id, scopes, created_at, expires_at, poll_interval, last_poll_at, \
     status, grant_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const DEVICE_REQUEST_SELECT: &str = "SELECT user_code, device_code_hash, client_id, scopes, \
     created_at, expires_at, poll_interval, last_poll_at, status, grant_json \
     FROM device_requests";
pub(in crate::storage) fn select_device_request() -> String {
    format!("{DEVICE_REQUEST_SELECT} WHERE user_code = $1")
}
pub(in crate::storage) fn select_device_request_by_device_code() -> String {
    format!("{DEVICE_REQUEST_SELECT} WHERE device_code_hash = $1")
}
/// PostgreSQL only: concurrent polls of one device code queue here.
pub(in crate::storage) fn lock_device_request_by_device_code() -> String {
    format!("{DEVICE_REQUEST_SELECT} WHERE device_code_hash = $1 FOR UPDATE")
}
pub(in crate::storage) const COMPLETE_DEVICE_REQUEST: &str =
    "UPDATE device_requests SET status = $2, \
     grant_json = $3 WHERE user_code = $1 AND status = 'pending' AND expires_at > $4";
pub(in crate::storage) const RECORD_DEVICE_POLL: &str =
    "UPDATE device_requests SET last_poll_at = $2 WHERE device_code_hash = $1";
pub(in crate::storage) const SLOW_DEVICE_DOWN: &str = "UPDATE device_requests \
     SET last_poll_at = $2, poll_interval = poll_interval + $3 WHERE device_code_hash = $1";
pub(in crate::storage) const REDEEM_DEVICE_REQUEST: &str = "UPDATE device_requests \
     SET last_poll_at = $2, status = 'redeemed' \
     WHERE device_code_hash = $1 AND status = 'approved'";

pub(in crate::storage) const INSERT_SESSION: &str =
    "INSERT INTO sessions (id, user_id, connector_id, claims, \
     connector_data, auth_time, created_at, expires_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(in crate::storage) const SELECT_SESSION: &str =
    "SELECT id, connector_id, claims, connector_data, \
     auth_time, created_at, expires_at, revoked_at FROM sessions WHERE id = $1";
pub(in crate::storage) const REVOKE_SESSION: &str =
    "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

// Admin listings. Unset filters are NULL parameters; the email filter runs on the decoded
// claims (`GrantFilter::matches_claims`).
pub(in crate::storage) const LIST_GRANTS: &str =
    "SELECT id, client_id, connector_id, claims, scopes, nonce, \
     auth_time, connector_data, created_at, revoked_at FROM grants \
     WHERE ($1 IS NULL OR connector_id = $1) AND ($2 IS NULL OR user_id = $2) \
     AND ($3 IS NULL OR client_id = $3) AND ($4 = 0 OR revoked_at IS NULL) \
     ORDER BY created_at, id";
pub(in crate::storage) const REFRESH_LAST_USED: &str =
    "SELECT MAX(last_used_at) AS last_used FROM refresh_tokens WHERE grant_id = $1";
pub(in crate::storage) const LIST_SESSIONS: &str =
    "SELECT id, connector_id, claims, connector_data, \
     auth_time, created_at, expires_at, revoked_at FROM sessions \
     WHERE ($1 IS NULL OR connector_id = $1) AND ($2 IS NULL OR user_id = $2) \
     AND ($3 = 0 OR (revoked_at IS NULL AND expires_at > $4)) \
     ORDER BY created_at, id";

// Sweeps delete through a bounded sub-select so that one call holds locks for a short time.
// Every statement takes the cutoff as $1 and the row limit as $2, and each reason for
// deleting a kind is its own statement so that each can use its index.

/// One statement of a sweep: `DELETE FROM table WHERE key IN (select LIMIT $2)`, where the
/// dialect may lock the selected rows of `alias` (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so
/// that replicas sweeping at once take different rows instead of queueing on the same ones).
pub(in crate::storage) struct SweepStep {
    table: &'static str,
    key: &'static str,
    alias: &'static str,
    select: &'static str,
    pub cutoff: UnixTime,
    /// The statement deletes tokens of grants that may not be revoked, and returns their
    /// grant ids: the grants it took the last token of go with it ([`delete_freed_grants`]).
    pub frees_grants: bool,
}

/// The row lock of a sweep's sub-select; see [`SweepStep`].
fn sweep_lock(alias: &str, skip_locked: bool) -> String {
    if skip_locked {
        format!(" FOR UPDATE OF {alias} SKIP LOCKED")
    } else {
        String::new()
    }
}

impl SweepStep {
    pub(in crate::storage) fn sql(&self, skip_locked: bool) -> String {
        let lock = sweep_lock(self.alias, skip_locked);
        let returning = if self.frees_grants {
            " RETURNING grant_id"
        } else {
            ""
        };
        format!(
            "DELETE FROM {} WHERE {} IN ({} LIMIT $2{lock}){returning}",
            self.table, self.key, self.select
        )
    }
}

const fn step(
    table: &'static str,
    key: &'static str,
    select: &'static str,
    cutoff: UnixTime,
) -> SweepStep {
    SweepStep {
        table,
        key,
        alias: table,
        select,
        cutoff,
        frees_grants: false,
    }
}

/// A step that deletes the tokens of any grant, revoked or not: a grant whose last token it
/// deletes is dead, and only here is it found without reading every live grant.
const fn tokens_step(table: &'static str, select: &'static str, cutoff: UnixTime) -> SweepStep {
    SweepStep {
        frees_grants: true,
        ..step(table, "token_hash", select, cutoff)
    }
}

/// The condition that grant `g` has no token left.
macro_rules! without_tokens {
    () => {
        "NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = g.id) \
         AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.id)"
    };
}

/// PostgreSQL: locks, in the order of their ids (so that two sweeps cannot deadlock), the
/// unrevoked grants among `ids` (as in [`delete_freed_grants`]) that have no token a sweep at
/// `$2` (now), `$3` (idle cutoff, or NULL) and `$4` (rotated cutoff) would keep. Another
/// replica may be deleting their last tokens at once, and a statement's snapshot still shows
/// a token another transaction is deleting: without the lock each would see the other's token
/// and keep the grant. With it, the second waits for the first to commit, and its
/// [`delete_freed_grants`] (a new statement, so a new snapshot) sees both deletions. A grant
/// with a live token is not locked: it stays anyway, and most grants the sweep meets are such.
pub(in crate::storage) fn lock_dying_grants(ids: &str) -> String {
    format!(
        "SELECT g.id FROM grants g WHERE g.id IN (SELECT value FROM {ids}) \
         AND g.revoked_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM access_tokens t \
         WHERE t.grant_id = g.id AND t.expires_at >= $2) \
         AND NOT EXISTS (SELECT 1 FROM refresh_tokens r WHERE r.grant_id = g.id \
         AND (r.expires_at IS NULL OR r.expires_at >= $2) \
         AND ($3::BIGINT IS NULL OR r.last_used_at >= $3) \
         AND (r.rotated_at IS NULL OR r.rotated_at >= $4)) \
         ORDER BY g.id FOR UPDATE OF g"
    )
}

/// Deletes the unrevoked grants among those whose ids are the texts of `ids` (the dialect's
/// table of the JSON array $1) that have no token left: run after a [`SweepStep`] that
/// `frees_grants`, in its transaction, with the grant ids it returned. A revoked grant keeps
/// its own cutoff (`grant_cutoff`). Every path that gives a token to an existing grant
/// (refresh rotation) holds a live refresh token of it, so a grant without tokens gets none.
pub(in crate::storage) fn delete_freed_grants(ids: &str, skip_locked: bool) -> String {
    let lock = sweep_lock("g", skip_locked);
    format!(
        "DELETE FROM grants WHERE id IN (SELECT g.id FROM grants g \
         WHERE g.id IN (SELECT value FROM {ids}) AND g.revoked_at IS NULL AND {}{lock})",
        without_tokens!()
    )
}

/// The tokens of grants revoked before $1, found from the grants' side (in the order of
/// their revocation): the grants these free are the first `SWEEP_GRANTS` finds, where a
/// search from the tokens' side would leave them anywhere and make that sweep read past
/// every revoked grant that still has tokens, in every batch.
const fn tokens_of_revoked_grants(
    table: &'static str,
    select: &'static str,
    cutoff: UnixTime,
) -> SweepStep {
    SweepStep {
        table,
        key: "token_hash",
        alias: "t",
        select,
        cutoff,
        // Their grants are revoked, and go at `grant_cutoff`.
        frees_grants: false,
    }
}

macro_rules! tokens_of_revoked_grants {
    ($table:literal) => {
        concat!(
            "SELECT t.token_hash FROM grants g JOIN ",
            $table,
            " t ON t.grant_id = g.id WHERE g.revoked_at IS NOT NULL AND g.revoked_at < $1"
        )
    };
}

/// One kind of row housekeeping deletes: the statements (with their cutoffs) that share the
/// kind's batch, in order.
pub(in crate::storage) struct SweepKind {
    pub subject: &'static str,
    pub steps: Vec<SweepStep>,
}

/// What `sweep` runs, in order. Tokens go before grants, so that a revoked grant whose
/// tokens fit in this batch is deleted in the same call; an unrevoked grant goes in the
/// statement that deletes its last token (`frees_grants`).
pub(in crate::storage) fn sweep_plan(c: &SweepCutoffs) -> [SweepKind; 7] {
    let mut refresh = vec![tokens_step(
        "refresh_tokens",
        "SELECT token_hash FROM refresh_tokens WHERE expires_at IS NOT NULL AND expires_at < $1",
        c.now,
    )];
    if let Some(idle) = c.refresh_idle_cutoff {
        refresh.push(tokens_step(
            "refresh_tokens",
            "SELECT token_hash FROM refresh_tokens WHERE last_used_at < $1",
            idle,
        ));
    }
    // Only rotated tokens: the family's current token stays until it expires or idles.
    refresh.push(tokens_step(
        "refresh_tokens",
        "SELECT token_hash FROM refresh_tokens WHERE rotated_at IS NOT NULL AND rotated_at < $1",
        c.rotated_cutoff,
    ));
    refresh.push(tokens_of_revoked_grants(
        "refresh_tokens",
        tokens_of_revoked_grants!("refresh_tokens"),
        c.grant_cutoff,
    ));
    [
        SweepKind {
            subject: "expired auth requests",
            steps: vec![step(
                "auth_requests",
                "id",
                "SELECT id FROM auth_requests WHERE expires_at < $1",
                c.now,
            )],
        },
        SweepKind {
            subject: "expired authorization codes",
            steps: vec![step(
                "auth_codes",
                "code_hash",
                "SELECT code_hash FROM auth_codes WHERE expires_at < $1",
                c.code_cutoff,
            )],
        },
        SweepKind {
            subject: "expired access tokens",
            steps: vec![
                tokens_step(
                    "access_tokens",
                    "SELECT token_hash FROM access_tokens WHERE expires_at < $1",
                    c.now,
                ),
                tokens_of_revoked_grants(
                    "access_tokens",
                    tokens_of_revoked_grants!("access_tokens"),
                    c.grant_cutoff,
                ),
            ],
        },
        SweepKind {
            subject: "dead refresh tokens",
            steps: refresh,
        },
        SweepKind {
            subject: "dead grants",
            // Revoked grants whose tokens the statements above have all deleted; the rest go
            // in a later sweep. (Unrevoked grants go with their last token, in the statement
            // that deletes it.)
            steps: vec![
                SweepStep {
                    table: "grants",
                    key: "id",
                    alias: "g",
                    select: concat!(
                        "SELECT g.id FROM grants g \
                         WHERE g.revoked_at IS NOT NULL AND g.revoked_at < $1 AND ",
                        without_tokens!()
                    ),
                    cutoff: c.grant_cutoff,
                    frees_grants: false,
                },
                // One grant per client_credentials request, dead when its access token is
                // (it never has a refresh token): found oldest first through the partial
                // index `grants_of_clients_created_at`. Those whose token a sweep deleted are
                // gone with it; this finds the rest (token revoked by the client, or deleted
                // by a version before that).
                SweepStep {
                    table: "grants",
                    key: "id",
                    alias: "g",
                    select: concat!(
                        "SELECT g.id FROM grants g \
                         WHERE g.connector_id = '' AND g.created_at < $1 AND ",
                        without_tokens!()
                    ),
                    cutoff: c.client_grant_cutoff,
                    frees_grants: false,
                },
            ],
        },
        SweepKind {
            subject: "expired device requests",
            steps: vec![step(
                "device_requests",
                "user_code",
                "SELECT user_code FROM device_requests WHERE expires_at < $1",
                c.now,
            )],
        },
        SweepKind {
            subject: "expired or revoked sessions",
            steps: vec![
                step(
                    "sessions",
                    "id",
                    "SELECT id FROM sessions WHERE expires_at < $1",
                    c.now,
                ),
                step(
                    "sessions",
                    "id",
                    "SELECT id FROM sessions WHERE revoked_at IS NOT NULL AND revoked_at < $1",
                    c.now,
                ),
            ],
        },
    ]
}

/// Where each kind's count goes, in `sweep_plan`'s order.
pub(in crate::storage) fn sweep_counts(swept: &mut Swept) -> [&mut u64; 7] {
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

pub(in crate::storage) const INSERT_CONNECTOR: &str =
    "INSERT INTO connectors (id, connector_type, name, resource_version, config, created_at, \
     updated_at) VALUES ($1, $2, $3, 1, $4, $5, $5)";
/// The storage counts versions, so two concurrent updates get two.
pub(in crate::storage) const UPDATE_CONNECTOR: &str =
    "UPDATE connectors SET connector_type = $2, name = $3, config = $4, updated_at = $5, \
     resource_version = resource_version + 1 WHERE id = $1";
const CONNECTOR_SELECT: &str = "SELECT id, connector_type, name, resource_version, config, \
     created_at, updated_at FROM connectors";
pub(in crate::storage) fn select_connector() -> String {
    format!("{CONNECTOR_SELECT} WHERE id = $1")
}
pub(in crate::storage) fn list_connectors() -> String {
    format!("{CONNECTOR_SELECT} ORDER BY id")
}
pub(in crate::storage) const DELETE_CONNECTOR: &str = "DELETE FROM connectors WHERE id = $1";
pub(in crate::storage) const BUMP_CONNECTORS_GENERATION: &str =
    "UPDATE connectors_generation SET generation = generation + 1 WHERE id = 1";
pub(in crate::storage) const SELECT_CONNECTORS_GENERATION: &str =
    "SELECT generation FROM connectors_generation WHERE id = 1";
