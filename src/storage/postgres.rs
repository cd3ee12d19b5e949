//! PostgreSQL's [`Dialect`]: connecting, migrations, and the operations it makes atomic (and
//! fast) its own way; everything else is the shared [`SqlStorage`].
//!
//! Transactions run at READ COMMITTED. The atomic operations still have one winner because
//! each starts by locking the contested row: with a conditional UPDATE/DELETE/INSERT, or with
//! `SELECT ... FOR UPDATE` where the outcome depends on more than one condition (refresh
//! rotation, device polls). A concurrent transaction blocks on the row lock and then reads
//! the committed row, so it sees the winner's outcome instead of the state both started from.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{Postgres, Transaction};

use super::postgres_grants::GrantQueue;
use super::sql::{self, Dialect, IntoModel, ResultExt, SqlStorage};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// One password attempt against every key in $1 (sorted, distinct) at $2, as one statement,
/// under [`AttemptPolicy`] $3 (max failures), $4 (window), $5 (base lockout), $6 (max lockout).
/// `blocked` reads whether a key is locked; if none is, each key is upserted: a new key counts
/// one failure, an existing one counts another unless it is locked by then (the upsert's
/// WHERE is checked against the row's newest version under its lock, so concurrent attempts
/// queue on the row and the ones after a lockout count nothing). A row past `forget_at` starts
/// over. Returns the longest lockout found and the keys counted.
static RESERVE_LOGIN_ATTEMPT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let failures = "(CASE WHEN a.forget_at <= $2 THEN 0 ELSE a.failures END)";
    let level = "(CASE WHEN a.forget_at <= $2 THEN 0 ELSE a.level END)";
    let next_level = format!(
        "(CASE WHEN {level} > 0 THEN {level} + 1 WHEN {failures} + 1 >= $3 THEN 1 ELSE 0 END)"
    );
    let lock_end = |level: &str| {
        format!(
            "(CASE WHEN {level} > 0 THEN $2 + LEAST($5 << LEAST({level} - 1, 32), $6) ELSE 0 END)"
        )
    };
    let first_level = "(CASE WHEN 1 >= $3 THEN 1 ELSE 0 END)";
    let first_end = lock_end(first_level);
    let next_end = lock_end(&next_level);
    format!(
        "WITH blocked AS (SELECT max(locked_until) AS until FROM login_attempts \
         WHERE key_hash = ANY($1) AND locked_until > $2), \
         counted AS (INSERT INTO login_attempts AS a \
         (key_hash, failures, level, last_attempt, locked_until, forget_at) \
         SELECT k, 1, {first_level}, $2, {first_end}, GREATEST({first_end}, $2) + $4 \
         FROM unnest($1::TEXT[]) AS k \
         WHERE NOT EXISTS (SELECT 1 FROM blocked WHERE until IS NOT NULL) ORDER BY k \
         ON CONFLICT (key_hash) DO UPDATE SET failures = {failures} + 1, level = {next_level}, \
         last_attempt = $2, locked_until = {next_end}, forget_at = GREATEST({next_end}, $2) + $4 \
         WHERE a.locked_until <= $2 RETURNING a.key_hash) \
         SELECT (SELECT until FROM blocked), \
         COALESCE((SELECT array_agg(key_hash) FROM counted), ARRAY[]::TEXT[])"
    )
});

/// Forgets key $1 (or none: NULL) and takes back one failure from each key in $2 counted at
/// $3, lifting a lockout that attempt started (see `RateLimiter::refund`).
const SETTLE_LOGIN_ATTEMPT: &str = "WITH forgiven AS (DELETE FROM login_attempts \
     WHERE key_hash = $1 RETURNING 1) \
     UPDATE login_attempts SET failures = GREATEST(failures - 1, 0), \
     level = CASE WHEN level > 0 AND last_attempt = $3 THEN level - 1 ELSE level END, \
     locked_until = CASE WHEN level > 0 AND last_attempt = $3 THEN 0 ELSE locked_until END \
     WHERE key_hash = ANY($2)";

/// The longest lockout among keys $1 at $2 (for an attempt that lost a race to a lockout).
const LOGIN_LOCKED_UNTIL: &str =
    "SELECT max(locked_until) FROM login_attempts WHERE key_hash = ANY($1) AND locked_until > $2";

/// Counters past `forget_at` ($1), at most $2 of them; rows another replica's sweep (or a
/// login attempt) holds are skipped, not waited for (see [`Dialect::SWEEP_SKIP_LOCKED`]).
const SWEEP_LOGIN_ATTEMPTS: &str = "DELETE FROM login_attempts WHERE key_hash IN \
     (SELECT key_hash FROM login_attempts WHERE forget_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)";

const DEFAULT_CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// sqlx's own default, kept when `connMaxLifetime` is not set.
const DEFAULT_CONN_MAX_LIFETIME: Option<Duration> = Some(Duration::from_secs(30 * 60));
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// A rotation's writes as one statement: mark the old token rotated ($1-$4), insert its
/// successor ($3, $5-$11), write what the connector said about the user to the grant
/// ($12-$15) and insert the new access token ($16-$21). Returns the token rows written and
/// the grant rows updated.
const ROTATE_AND_ISSUE: &str = "WITH marked AS (UPDATE refresh_tokens SET rotated_at = $2, \
     last_used_at = $2, successor_hash = $3, successor_sealed = $4 \
     WHERE token_hash = $1 AND rotated_at IS NULL RETURNING 1), \
     successor AS (INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, \
     last_used_at, expires_at, rotated_at, successor_hash) \
     VALUES ($3, $5, $6, $7, $8, $9, $10, $11) RETURNING 1), \
     updated AS (UPDATE grants SET user_id = $13, claims = $14, connector_data = $15 \
     WHERE id = $12 AND revoked_at IS NULL RETURNING 1), \
     access AS (INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, \
     expires_at, scopes) VALUES ($16, $17, $18, $19, $20, $21) RETURNING 1) \
     SELECT (SELECT count(*) FROM marked) + (SELECT count(*) FROM successor) \
     + (SELECT count(*) FROM access), (SELECT count(*) FROM updated)";
/// [`ROTATE_AND_ISSUE`] for a token that is current, as one statement: it locks the token
/// ($1) and its grant only if the token is not rotated, not past its end ($2) or idle
/// cutoff ($22, or NULL), and the grant is not revoked, and every write hangs off that lock
/// (and off the grant being $12, the one the rotation was decided for).
/// A concurrent rotation or revocation that commits first makes the lock find nothing
/// (READ COMMITTED re-checks a locked row's conditions against its newest version), so
/// nothing is written. Returns the grant as it was and the rows written; no row when the
/// token was not current.
///
/// The token is found by its key alone: with `g.id = $12` beside the join, the planner
/// derives `r.grant_id = $12` and, with the statistics of a large table (about one token per
/// grant), may find the token through `refresh_tokens_grant_id` instead, reading every token
/// of the family, which keeps the rotated ones for a week: on the benchmark's filled database,
/// 500 index entries per refresh and 1.7 times PostgreSQL's CPU per refresh.
const ROTATE_IF_CURRENT: &str = concat!(
    "WITH current AS (",
    sql::refresh_token_with_grant!(),
    " WHERE r.token_hash = $1 AND r.rotated_at IS NULL \
     AND g.revoked_at IS NULL AND (r.expires_at IS NULL OR r.expires_at > $2) \
     AND ($22::BIGINT IS NULL OR r.last_used_at >= $22) \
     FOR UPDATE OF r, g), \
     marked AS (UPDATE refresh_tokens SET rotated_at = $2, last_used_at = $2, \
     successor_hash = $3, successor_sealed = $4 \
     WHERE token_hash = (SELECT token_hash FROM current WHERE id = $12) RETURNING 1), \
     successor AS (INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, \
     last_used_at, expires_at, rotated_at, successor_hash) \
     SELECT $3, $5, $6, $7, $8, $9, $10, $11 FROM marked RETURNING 1), \
     updated AS (UPDATE grants SET user_id = $13, claims = $14, connector_data = $15 \
     WHERE id = (SELECT id FROM current WHERE id = $12) RETURNING 1), \
     access AS (INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, \
     expires_at, scopes) SELECT $16, $17, $18, $19, $20, $21 FROM marked RETURNING 1) \
     SELECT current.*, (SELECT count(*) FROM marked) + (SELECT count(*) FROM successor) \
     + (SELECT count(*) FROM access) AS tokens, (SELECT count(*) FROM updated) AS grants \
     FROM current"
);
/// The same without rotation (`disableRotation`): the token is only touched ($1-$2); the grant
/// is $3-$6 and the access token $7-$12.
const TOUCH_AND_ISSUE: &str = "WITH touched AS (UPDATE refresh_tokens SET last_used_at = $2 \
     WHERE token_hash = $1 AND rotated_at IS NULL RETURNING 1), \
     updated AS (UPDATE grants SET user_id = $4, claims = $5, connector_data = $6 \
     WHERE id = $3 AND revoked_at IS NULL RETURNING 1), \
     access AS (INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, \
     expires_at, scopes) VALUES ($7, $8, $9, $10, $11, $12) RETURNING 1) \
     SELECT (SELECT count(*) FROM touched) + (SELECT count(*) FROM access), \
     (SELECT count(*) FROM updated)";

/// PostgreSQL: what it does its own way (see the module's comment).
pub struct PostgresDialect {
    grants: GrantQueue,
}

/// [`Storage`] on PostgreSQL.
pub type PostgresStorage = SqlStorage<PostgresDialect>;

impl PostgresStorage {
    /// Connects (one connection, to fail early when the server is unreachable) and builds the
    /// pool. An unreachable server is [`StorageError::Unavailable`] after `conn_timeout`.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self> {
        let options = connect_options(settings)?;
        let pool = PgPoolOptions::new()
            .max_connections(
                settings
                    .max_open_conns
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                    .max(1),
            )
            .acquire_timeout(settings.conn_timeout.unwrap_or(DEFAULT_CONN_TIMEOUT))
            .max_lifetime(settings.conn_max_lifetime.or(DEFAULT_CONN_MAX_LIFETIME))
            // No check before each use: the one way sqlx leaves a pooled connection inside a
            // transaction is closed in `begin_write`, and a check is a round trip per request.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| match e {
                sqlx::Error::Configuration(_) => {
                    StorageError::Open(format!("invalid PostgreSQL settings: {e}"))
                }
                e => StorageError::Unavailable(format!("cannot connect to PostgreSQL: {e}")),
            })?;
        let grants = GrantQueue::start(pool.clone());
        Ok(Self::new(pool, PostgresDialect { grants }))
    }
}

impl PostgresDialect {
    /// The usual rotation, of a current token, as one statement in a transaction of its own
    /// ([`ROTATE_IF_CURRENT`]): one round trip where the full transaction takes four. `None`
    /// when the token was not current (or not found): it wrote nothing, and the full
    /// transaction decides what the token is.
    async fn rotate_if_current(
        pool: &PgPool,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<Option<RefreshOutcome>> {
        let query = sqlx::query_as::<_, RotatedIfCurrent>(ROTATE_IF_CURRENT);
        let Some(row) = bind_rotation(query, rotation, now, &rotation.access.grant_id)?
            .bind(rotation.idle_cutoff)
            .fetch_optional(pool)
            .await
            .or_storage("refresh token")?
        else {
            return Ok(None);
        };
        // Every write hangs off the locked token and grant, so all or none happened; a
        // mismatch here would be a fault in the statement, and is not answered with tokens.
        if (row.tokens, row.grants) != (3, 1) {
            tracing::error!(
                tokens = row.tokens,
                grants = row.grants,
                "a refresh rotation wrote an unexpected number of rows"
            );
            return Err(StorageError::Unavailable(
                "the refresh rotation did not write what it should have".into(),
            ));
        }
        Ok(Some(RefreshOutcome::Rotated(rotated_grant(
            row.grant.into_model()?,
            rotation,
        ))))
    }
}

/// What [`ROTATE_IF_CURRENT`] returns: the grant as it was, and the rows written.
#[derive(sqlx::FromRow)]
struct RotatedIfCurrent {
    #[sqlx(flatten)]
    grant: sql::GrantRow,
    tokens: i64,
    grants: i64,
}

/// The grant as a rotation leaves it: what the connector said about the user now.
fn rotated_grant(grant: Grant, rotation: &Rotation) -> Grant {
    Grant {
        claims: rotation.claims.clone(),
        connector_data: rotation.connector_data.clone(),
        ..grant
    }
}

type PgQueryAs<'q, O> = sqlx::query::QueryAs<'q, Postgres, O, sqlx::postgres::PgArguments>;

/// Binds a rotation's writes as [`ROTATE_AND_ISSUE`] and [`ROTATE_IF_CURRENT`] number them
/// ($1-$21), or [`TOUCH_AND_ISSUE`] when there is no successor: the old token and the time,
/// the successor, then the grant's new identity and the access token.
fn bind_rotation<'q, O>(
    query: PgQueryAs<'q, O>,
    rotation: &'q Rotation,
    now: UnixTime,
    grant_id: &'q str,
) -> Result<PgQueryAs<'q, O>> {
    let claims = sql::to_json(&rotation.claims, "grant claims")?;
    let mut query = query.bind(&rotation.old_hash).bind(now);
    if let Some(successor) = &rotation.successor {
        query = sql::bind_refresh_after_hash!(
            query
                .bind(&successor.token_hash)
                .bind(&rotation.successor_sealed),
            successor
        );
    }
    let access = &rotation.access;
    Ok(query
        .bind(grant_id)
        .bind(&rotation.claims.user_id)
        .bind(claims)
        .bind(&rotation.connector_data)
        .bind(&access.token_hash)
        .bind(&access.grant_id)
        .bind(&access.client_id)
        .bind(access.created_at)
        .bind(access.expires_at)
        .bind(sql::access_token_scopes(access)?))
}

/// Builds the connection options: the URL or key/value DSN first, then every field that is
/// set overrides it.
pub fn connect_options(settings: &PostgresSettings) -> Result<PgConnectOptions> {
    let mut options = match settings.url.as_deref().map(str::trim) {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            // The URL may hold a password, so the error does not repeat it.
            PgConnectOptions::from_str(url).map_err(|e| {
                StorageError::Open(format!("invalid PostgreSQL connection URL: {}", redact(e)))
            })?
        }
        Some(dsn) if !dsn.is_empty() => options_from_dsn(dsn)?,
        _ => PgConnectOptions::new(),
    };
    if let Some(host) = settings.host.as_deref().filter(|h| !h.is_empty()) {
        options = apply_host(options, host)?;
    }
    if let Some(port) = settings.port {
        options = options.port(port);
    }
    if let Some(database) = settings.database.as_deref() {
        options = options.database(database);
    }
    if let Some(user) = settings.user.as_deref() {
        options = options.username(user);
    }
    if let Some(password) = settings.password.as_deref() {
        options = options.password(password);
    }
    if let Some(mode) = settings.ssl_mode.as_deref() {
        options = options.ssl_mode(ssl_mode(mode)?);
    }
    if let Some(ca) = settings.ssl_ca_file.as_deref() {
        options = options.ssl_root_cert(ca);
    }
    Ok(options.application_name("lanyard"))
}

fn ssl_mode(mode: &str) -> Result<PgSslMode> {
    PgSslMode::from_str(mode).map_err(|_| {
        StorageError::Open(format!(
            "unknown PostgreSQL ssl mode {mode:?}; expected disable, allow, prefer, require, \
             verify-ca or verify-full"
        ))
    })
}

/// `host` may be a Unix socket directory, or (as Dex accepts) `host:port`.
fn apply_host(options: PgConnectOptions, host: &str) -> Result<PgConnectOptions> {
    if host.starts_with('/') {
        return Ok(options.socket(Path::new(host)));
    }
    // A bare IPv6 address has several colons and no port; "[::1]:5432" has brackets.
    if let Some((name, port)) = host.rsplit_once(':') {
        let bracketed = name.starts_with('[') && name.ends_with(']');
        if bracketed || !name.contains(':') {
            let port = port.parse::<u16>().map_err(|_| {
                StorageError::Open(format!("invalid port in PostgreSQL host {host:?}"))
            })?;
            let name = name.trim_start_matches('[').trim_end_matches(']');
            return Ok(options.host(name).port(port));
        }
    }
    Ok(options.host(host))
}

/// Parses a libpq key/value connection string (`host=db port=5432 dbname=dex sslmode=require`),
/// the form Dex users often put in `connectionString`. Values may be single-quoted, with `\'`
/// and `\\` escapes.
fn options_from_dsn(dsn: &str) -> Result<PgConnectOptions> {
    let mut options = PgConnectOptions::new();
    for (key, value) in parse_dsn(dsn)? {
        options = match key.as_str() {
            "host" | "hostaddr" => apply_host(options, &value)?,
            "port" => options.port(value.parse().map_err(|_| {
                StorageError::Open(format!("invalid port {value:?} in PostgreSQL DSN"))
            })?),
            "dbname" => options.database(&value),
            "user" => options.username(&value),
            "password" => options.password(&value),
            "sslmode" => options.ssl_mode(ssl_mode(&value)?),
            "sslrootcert" => options.ssl_root_cert(&value),
            "sslcert" => options.ssl_client_cert(&value),
            "sslkey" => options.ssl_client_key(&value),
            "application_name" => options.application_name(&value),
            // Timeouts come from `connTimeout`; an unknown key is better an error than ignored.
            "connect_timeout" => options,
            other => {
                return Err(StorageError::Open(format!(
                    "unsupported key {other:?} in PostgreSQL connection string"
                )))
            }
        };
    }
    Ok(options)
}

fn parse_dsn(dsn: &str) -> Result<Vec<(String, String)>> {
    let invalid = |why: &str| StorageError::Open(format!("invalid PostgreSQL DSN: {why}"));
    let mut pairs = Vec::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(&format!("expected \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(invalid("unterminated quoted value")),
                    },
                    Some(c) => value.push(c),
                    None => return Err(invalid("unterminated quoted value")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// sqlx's URL errors can quote the URL; keep only the kind of problem.
fn redact(error: sqlx::Error) -> String {
    match error {
        sqlx::Error::Configuration(e) => {
            let text = e.to_string();
            if text.contains("://") {
                "the URL cannot be parsed".to_string()
            } else {
                text
            }
        }
        other => other.to_string(),
    }
}

type Sql = SqlStorage<PostgresDialect>;

#[async_trait]
impl Dialect for PostgresDialect {
    type Db = Postgres;

    const KIND: &'static str = "postgres";
    const SWEEP_LOGIN_ATTEMPTS: Option<&'static str> = Some(SWEEP_LOGIN_ATTEMPTS);
    /// Replicas sweep at once: each takes rows no other sweep holds, instead of waiting for
    /// another's batch to commit and then finding its rows gone.
    const SWEEP_SKIP_LOCKED: bool = true;
    const JSON_TEXTS: &'static str = "json_array_elements_text($1::JSON)";
    const LOCK_GRANT: Option<&'static str> = Some("SELECT 1 FROM grants WHERE id = $1 FOR UPDATE");

    async fn migrate(pool: &PgPool) -> Result<()> {
        MIGRATOR
            .run(pool)
            .await
            .map_err(|e| StorageError::Migration(format!("postgres: {e}")))
    }

    /// sqlx 0.8's `Pool::begin` is not cancel-safe on PostgreSQL (its issue 4393): a request
    /// dropped (a client hanging up) while its BEGIN is on the wire returns the connection to
    /// the pool inside a transaction that nothing will end, and the next borrower's
    /// single-statement writes would join it, be reported done, and be lost when the
    /// connection closes. Begun on a task of its own, BEGIN always runs to its answer: when the
    /// caller has gone, the finished `Transaction` is dropped there, which rolls it back
    /// before the connection goes back to the pool.
    async fn begin_write(pool: &PgPool) -> Result<Transaction<'static, Postgres>> {
        let pool = pool.clone();
        tokio::spawn(async move { pool.begin().await })
            .await
            .map_err(|e| StorageError::Unavailable(format!("write transaction: {e}")))?
            .or_storage("write transaction")
    }

    /// Concurrent polls of one device code queue on its row lock.
    fn device_request_for_poll() -> String {
        sql::lock_device_request_by_device_code()
    }

    async fn redeem_auth_code(
        &self,
        pool: &PgPool,
        code_hash: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<Redemption> {
        let mut tx = Self::begin_write(pool).await?;
        let claimed = sqlx::query_as::<_, sql::AuthCodeRow>(sql::CLAIM_AUTH_CODE)
            .bind(code_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .or_storage("authorization code")?;

        let Some(claimed) = claimed else {
            // Only a replay wrote something (its grant's revocation); otherwise dropping
            // `tx` rolls back.
            let outcome = Sql::unclaimed_code(&mut tx, code_hash, now).await?;
            if matches!(outcome, Redemption::Replayed { .. }) {
                tx.commit().await.or_storage("grant")?;
            }
            return Ok(outcome);
        };

        let mut grant = claimed.into_model()?.grant;
        grant.revoked_at = None;
        Sql::insert_grant(&mut tx, &grant).await?;
        Sql::insert_tokens(&mut tx, tokens).await?;
        tx.commit().await.or_storage("authorization code")?;
        Ok(Redemption::Issued(grant))
    }

    /// Queued, so that grants issued together share one statement (see
    /// [`super::postgres_grants`]).
    async fn issue_grant(&self, _: &PgPool, grant: &Grant, tokens: &IssuedTokens) -> Result<()> {
        self.grants.issue(grant, tokens).await
    }

    async fn get_refresh_token(
        &self,
        pool: &PgPool,
        token_hash: &str,
    ) -> Result<Option<(RefreshToken, Grant)>> {
        sqlx::query_as::<_, sql::RefreshTokenWithGrantRow>(sql::SELECT_REFRESH_TOKEN_WITH_GRANT)
            .bind(token_hash)
            .fetch_optional(pool)
            .await
            .or_storage("refresh token")?
            .map(sql::RefreshTokenWithGrantRow::into_model)
            .transpose()
    }

    async fn rotate_refresh_token(
        &self,
        pool: &PgPool,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<RefreshOutcome> {
        if rotation.successor.is_some() {
            if let Some(rotated) = Self::rotate_if_current(pool, rotation, now).await? {
                return Ok(rotated);
            }
        }
        let mut tx = Self::begin_write(pool).await?;
        // Concurrent uses of one token queue on its row lock, and each sees what the previous
        // one committed.
        let row = sqlx::query_as::<_, sql::RefreshTokenStateWithGrant>(sql::LOCK_ROTATION_STATE)
            .bind(&rotation.old_hash)
            .fetch_optional(&mut *tx)
            .await
            .or_storage("refresh token")?;
        // The grant is a foreign key of the token: no grant, no token.
        let Some(sql::RefreshTokenStateWithGrant {
            state: token,
            grant,
            ..
        }) = row
        else {
            return Ok(RefreshOutcome::NotFound);
        };
        let grant = grant.into_model()?;
        // Every early return drops `tx`, which rolls back: those outcomes write nothing.
        let outcome = match sql::decide_refresh(token, &grant, rotation, now) {
            sql::RefreshDecision::Revoked => return Ok(RefreshOutcome::Revoked),
            sql::RefreshDecision::Expired => return Ok(RefreshOutcome::Expired),
            sql::RefreshDecision::Current => {
                // All of the rotation's writes in one statement: one round trip.
                let (sql_text, tokens_written) = match &rotation.successor {
                    Some(_) => (ROTATE_AND_ISSUE, 3),
                    None => (TOUCH_AND_ISSUE, 2),
                };
                let (tokens, grants) = bind_rotation(
                    sqlx::query_as::<_, (i64, i64)>(sql_text),
                    rotation,
                    now,
                    &grant.id,
                )?
                .fetch_one(&mut *tx)
                .await
                .or_storage("refresh token")?;
                // The grant's `revoked_at` is checked against the committed row: a revocation
                // that committed first wins, and the rollback undoes the other writes.
                if grants != 1 {
                    return Ok(RefreshOutcome::Revoked);
                }
                // The token's row is locked, so it cannot have moved on.
                if tokens != tokens_written {
                    return Err(StorageError::Unavailable(
                        "the refresh token changed during its rotation".into(),
                    ));
                }
                RefreshOutcome::Rotated(rotated_grant(grant, rotation))
            }
            sql::RefreshDecision::Reuse(successor_sealed) => {
                Sql::insert_access_token(&mut tx, &rotation.access).await?;
                RefreshOutcome::Reused {
                    grant,
                    successor_sealed,
                }
            }
            sql::RefreshDecision::Replay => {
                sqlx::query(sql::REVOKE_GRANT)
                    .bind(&grant.id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .or_storage("grant")?;
                RefreshOutcome::Replayed { grant_id: grant.id }
            }
        };
        tx.commit().await.or_storage("refresh token")?;
        Ok(outcome)
    }

    async fn reserve_login_attempt(
        &self,
        pool: &PgPool,
        keys: &[String],
        policy: &AttemptPolicy,
        now: UnixTime,
    ) -> Result<Option<AttemptDecision>> {
        // Sorted and distinct: one upsert may touch a row once, and concurrent attempts lock
        // their rows in the same order, so they cannot deadlock.
        let mut keys = keys.to_vec();
        keys.sort();
        keys.dedup();
        let (locked_until, counted): (Option<i64>, Vec<String>) =
            sqlx::query_as(RESERVE_LOGIN_ATTEMPT.as_str())
                .bind(&keys)
                .bind(now)
                .bind(policy.max_failures.max(1))
                .bind(policy.window)
                .bind(policy.base_lockout)
                .bind(policy.max_lockout)
                .fetch_one(pool)
                .await
                .or_storage("login attempt")?;
        if let Some(until) = locked_until {
            return Ok(Some(AttemptDecision::Locked { until }));
        }
        if counted.len() == keys.len() {
            return Ok(Some(AttemptDecision::Reserved));
        }
        // A concurrent attempt locked a key between this statement's read and its upsert:
        // the attempt is refused, so the keys it did count get their failure back.
        self.settle_login_attempt(pool, None, &counted, now).await?;
        let until: Option<i64> = sqlx::query_scalar(LOGIN_LOCKED_UNTIL)
            .bind(&keys)
            .bind(now)
            .fetch_one(pool)
            .await
            .or_storage("login attempt")?;
        Ok(Some(AttemptDecision::Locked {
            until: until.unwrap_or(now + 1),
        }))
    }

    async fn settle_login_attempt(
        &self,
        pool: &PgPool,
        forgive: Option<&str>,
        refund: &[String],
        reserved_at: UnixTime,
    ) -> Result<()> {
        sqlx::query(SETTLE_LOGIN_ATTEMPT)
            .bind(forgive)
            .bind(refund)
            .bind(reserved_at)
            .execute(pool)
            .await
            .or_storage("login attempt")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> PostgresSettings {
        PostgresSettings {
            url: Some(url.to_string()),
            ..Default::default()
        }
    }

    #[test]
    fn url_is_the_base_and_fields_override_it() {
        let mut s = settings("postgres://alice:pw@db.internal:6543/dex?sslmode=require");
        s.database = Some("lanyard".into());
        s.user = Some("bob".into());
        let options = connect_options(&s).unwrap();
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 6543);
        assert_eq!(options.get_database(), Some("lanyard"));
        assert_eq!(options.get_username(), "bob");
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));

        s.host = Some("other:7000".into());
        s.ssl_mode = Some("verify-full".into());
        let options = connect_options(&s).unwrap();
        assert_eq!(options.get_host(), "other");
        assert_eq!(options.get_port(), 7000);
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));

        s.port = Some(7001);
        assert_eq!(connect_options(&s).unwrap().get_port(), 7001);
    }

    #[test]
    fn fields_alone_are_enough() {
        let s = PostgresSettings {
            host: Some("127.0.0.1".into()),
            port: Some(5433),
            database: Some("dex".into()),
            user: Some("postgres".into()),
            ssl_mode: Some("disable".into()),
            ..Default::default()
        };
        let options = connect_options(&s).unwrap();
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), 5433);
        assert_eq!(options.get_database(), Some("dex"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Disable));
    }

    #[test]
    fn key_value_dsn_is_understood() {
        let options = connect_options(&settings(
            "host=db.example port=5444 dbname=dex user='d e x' password='it\\'s' sslmode=verify-ca",
        ))
        .unwrap();
        assert_eq!(options.get_host(), "db.example");
        assert_eq!(options.get_port(), 5444);
        assert_eq!(options.get_database(), Some("dex"));
        assert_eq!(options.get_username(), "d e x");
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyCa));
        assert_eq!(
            parse_dsn("password='it\\'s'").unwrap(),
            vec![("password".to_string(), "it's".to_string())]
        );
    }

    #[test]
    fn bad_settings_are_open_errors_that_name_the_problem() {
        let mut s = settings("postgres://db/dex");
        s.ssl_mode = Some("sometimes".into());
        let err = connect_options(&s).unwrap_err();
        assert!(
            matches!(&err, StorageError::Open(m) if m.contains("sometimes")),
            "{err}"
        );
        let err = connect_options(&settings("host=db bogus=1")).unwrap_err();
        assert!(
            matches!(&err, StorageError::Open(m) if m.contains("bogus")),
            "{err}"
        );
        let err = connect_options(&settings("host=db password='open")).unwrap_err();
        assert!(
            matches!(&err, StorageError::Open(m) if m.contains("unterminated")),
            "{err}"
        );
    }

    #[test]
    fn unix_socket_and_ipv6_hosts() {
        let mut s = PostgresSettings {
            host: Some("/var/run/postgresql".into()),
            ..Default::default()
        };
        let options = connect_options(&s).unwrap();
        assert_eq!(
            options.get_socket().map(|p| p.to_str()),
            Some(Some("/var/run/postgresql"))
        );
        s.host = Some("[::1]:5999".into());
        let options = connect_options(&s).unwrap();
        assert_eq!(options.get_host(), "::1");
        assert_eq!(options.get_port(), 5999);
        s.host = Some("::1".into());
        assert_eq!(connect_options(&s).unwrap().get_host(), "::1");
    }
}
