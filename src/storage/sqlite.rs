//! SQLite implementation of [`Storage`](super::Storage).
//!
//! Files run in WAL mode, so readers never wait for the writer. Every transaction that writes
//! starts with `BEGIN IMMEDIATE`: it takes the database's write lock up front, so concurrent
//! writers queue on `busy_timeout` instead of failing to upgrade a read snapshot, and whatever
//! a transaction reads cannot change before it commits.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::sql::{self, ResultExt};
use super::sqlite_writer::{insert_and_commit, BatchWriter};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// One writer at a time anyway; a few connections let reads proceed alongside it.
const FILE_POOL_SIZE: u32 = 4;
/// Bytes per page of a new database file.
const SQLITE_PAGE_SIZE: u32 = 1024;
/// Page cache per connection: negative means KiB (SQLite's `cache_size` convention).
const SQLITE_CACHE_KIB: &str = "-256";

pub struct SqliteStorage {
    pool: SqlitePool,
    /// New grants, refresh rotations and refresh-token reads, settled in batches.
    writer: BatchWriter,
}

impl SqliteStorage {
    /// Opens (creating it and its parent directory when missing) a database file.
    pub async fn open_file(file: &Path) -> Result<Self> {
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(|e| {
                StorageError::Open(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        create_private_file_or_check(file)?;
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            // A new database's pages are 1 KiB, not 4: tokens are keyed by random hashes, so
            // each new token dirties index pages of its own, and every dirty page is written
            // whole to the WAL and again to the file. A database made before keeps its size.
            .page_size(SQLITE_PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            // The kernel's page cache holds the file already; SQLite's own (2 MiB per
            // connection by default) would keep a second copy for each connection.
            .pragma("cache_size", SQLITE_CACHE_KIB);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            // sqlx pings a pooled connection before handing it out, a hand-off to the
            // connection's thread and back; a connection inside this process cannot have
            // died in between.
            .test_before_acquire(false)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                StorageError::Open(format!(
                    "cannot open SQLite database {}: {e}",
                    file.display()
                ))
            })?;
        // The writer checkpoints after answering, not in its commits (see `sqlite_writer`).
        Ok(Self::new(
            pool,
            Some(options.pragma("wal_autocheckpoint", "0")),
        ))
    }

    /// An in-memory database for `type: memory`. The pool holds exactly one connection and
    /// never retires it, because the database lives only as long as a connection to it.
    pub async fn open_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StorageError::Open(format!("invalid in-memory SQLite options: {e}")))?
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .min_connections(1)
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StorageError::Open(format!("cannot open in-memory SQLite: {e}")))?;
        Ok(Self::new(pool, None))
    }

    fn new(pool: SqlitePool, writer: Option<SqliteConnectOptions>) -> Self {
        Self {
            writer: BatchWriter::start(pool.clone(), writer),
            pool,
        }
    }

    /// The connection pool, for features that keep their own tables.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .or_storage("write transaction")
    }
}

/// Creates `dir` and its missing parents readable by the owner only: they hold the database
/// and the generated key-encryption key. Directories that exist keep their mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates a missing database file 0600 before SQLite opens it, since SQLite creates files
/// 0644 and gives the `-wal` and `-shm` files the mode of the database file. An existing file
/// keeps its mode, with a warning when others may read it.
fn create_private_file_or_check(file: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(file) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            warn_if_readable_by_others(file);
            Ok(())
        }
        Err(e) => Err(StorageError::Open(format!(
            "cannot create SQLite database {}: {e}",
            file.display()
        ))),
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut wal = file.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = file.as_os_str().to_owned();
    shm.push("-shm");
    for path in [file.to_path_buf(), wal.into(), shm.into()] {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = %format!("{mode:o}"),
                "the SQLite database file is readable by group or others; it holds sessions, \
                 client and password data: chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_file: &Path) {}

/// A write transaction begun and ended by hand, so that `BEGIN IMMEDIATE` travels with the
/// first statement and `COMMIT` with the last: sqlx's `Transaction` sends each on its own,
/// and every statement is a hand-off to the connection's thread and back while the database's
/// write lock is held, which is what limits writes per second.
///
/// Whoever begins it with the first statement ends it with [`commit`](Self::commit),
/// [`rollback`](Self::rollback) or [`committed`](Self::committed). Dropped otherwise (an error,
/// a cancelled request), it rolls back before its connection goes back to the pool, and closes
/// the connection when even that fails: a connection inside a transaction must never be reused.
struct HandTx {
    conn: Option<PoolConnection<Sqlite>>,
}

impl HandTx {
    async fn start(pool: &SqlitePool) -> Result<Self> {
        let conn = pool.acquire().await.or_storage("write connection")?;
        Ok(Self { conn: Some(conn) })
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        // Only `Drop` and the methods that consume `self` take the connection out.
        self.conn
            .as_deref_mut()
            .expect("HandTx used after it ended")
    }

    /// The last statement sent was a `COMMIT`, and it succeeded.
    fn committed(mut self) {
        self.conn.take();
    }

    async fn commit(self) -> Result<()> {
        self.end("COMMIT").await
    }

    async fn rollback(self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    async fn end(mut self, statement: &'static str) -> Result<()> {
        sqlx::query(statement)
            .execute(self.conn())
            .await
            .or_storage("end of write transaction")?;
        self.conn.take();
        Ok(())
    }
}

impl Drop for HandTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Closing a connection rolls back its transaction.
            drop(conn.detach());
            return;
        };
        runtime.spawn(async move {
            // Fails harmlessly when no transaction was begun (say, BEGIN itself failed).
            let rolled_back = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            if let Err(e) = rolled_back {
                if !e.to_string().contains("no transaction is active") {
                    drop(conn.detach());
                }
            }
        });
    }
}

#[async_trait]
impl Storage for SqliteStorage {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StorageError::Migration(format!("sqlite: {e}")))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query(sql::PING)
            .execute(&self.pool)
            .await
            .or_storage("ping")?;
        Ok(())
    }

    async fn create_client(&self, client: &Client) -> Result<()> {
        let json = sql::ClientJson::new(client)?;
        sqlx::query(sql::INSERT_CLIENT)
            .bind(&client.id)
            .bind(&client.secret_sha256)
            .bind(&json.redirect_uris)
            .bind(&json.trusted_peers)
            .bind(client.public)
            .bind(&client.name)
            .bind(&client.logo_url)
            .bind(&json.grant_types)
            .bind(&json.post_logout_redirect_uris)
            .bind(&json.allowed_connectors)
            .bind(client.created_at)
            .execute(&self.pool)
            .await
            .or_storage(&format!("client {:?}", client.id))?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>> {
        sqlx::query_as::<_, sql::ClientRow>(&sql::select_client())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .or_storage(&format!("client {id:?}"))?
            .map(sql::ClientRow::into_model)
            .transpose()
    }

    async fn list_clients(&self) -> Result<Vec<Client>> {
        sqlx::query_as::<_, sql::ClientRow>(&sql::list_clients())
            .fetch_all(&self.pool)
            .await
            .or_storage("clients")?
            .into_iter()
            .map(sql::ClientRow::into_model)
            .collect()
    }

    async fn update_client(&self, client: &Client) -> Result<()> {
        let json = sql::ClientJson::new(client)?;
        let subject = format!("client {:?}", client.id);
        let done = sqlx::query(sql::UPDATE_CLIENT)
            .bind(&client.id)
            .bind(&client.secret_sha256)
            .bind(&json.redirect_uris)
            .bind(&json.trusted_peers)
            .bind(client.public)
            .bind(&client.name)
            .bind(&client.logo_url)
            .bind(&json.grant_types)
            .bind(&json.post_logout_redirect_uris)
            .bind(&json.allowed_connectors)
            .execute(&self.pool)
            .await
            .or_storage(&subject)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(subject));
        }
        Ok(())
    }

    async fn delete_client(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(sql::DELETE_CLIENT)
            .bind(id)
            .execute(&self.pool)
            .await
            .or_storage(&format!("client {id:?}"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_password(&self, password: &Password) -> Result<()> {
        let email = sql::normalize_email(&password.email);
        sqlx::query(sql::INSERT_PASSWORD)
            .bind(&email)
            .bind(&password.hash)
            .bind(&password.username)
            .bind(&password.user_id)
            .bind(sql::to_json(&password.groups, "password groups")?)
            .bind(password.created_at)
            .bind(password.updated_at)
            .execute(&self.pool)
            .await
            .or_storage(&format!(
                "user with email {email:?} or username {:?}",
                password.username
            ))?;
        Ok(())
    }

    async fn get_password(&self, email: &str) -> Result<Option<Password>> {
        sqlx::query_as::<_, sql::PasswordRow>(&sql::select_password_by_email())
            .bind(sql::normalize_email(email))
            .fetch_optional(&self.pool)
            .await
            .or_storage("password")?
            .map(sql::PasswordRow::into_model)
            .transpose()
    }

    async fn get_password_by_username(&self, username: &str) -> Result<Option<Password>> {
        sqlx::query_as::<_, sql::PasswordRow>(&sql::select_password_by_username())
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .or_storage("password")?
            .map(sql::PasswordRow::into_model)
            .transpose()
    }

    async fn list_passwords(&self) -> Result<Vec<Password>> {
        sqlx::query_as::<_, sql::PasswordRow>(&sql::list_passwords())
            .fetch_all(&self.pool)
            .await
            .or_storage("passwords")?
            .into_iter()
            .map(sql::PasswordRow::into_model)
            .collect()
    }

    async fn update_password(&self, password: &Password) -> Result<()> {
        let email = sql::normalize_email(&password.email);
        let done = sqlx::query(sql::UPDATE_PASSWORD)
            .bind(&email)
            .bind(&password.hash)
            .bind(&password.username)
            .bind(&password.user_id)
            .bind(sql::to_json(&password.groups, "password groups")?)
            .bind(password.updated_at)
            .execute(&self.pool)
            .await
            .or_storage(&format!("username {:?}", password.username))?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(format!("user with email {email:?}")));
        }
        Ok(())
    }

    async fn delete_password(&self, email: &str) -> Result<bool> {
        let done = sqlx::query(sql::DELETE_PASSWORD)
            .bind(sql::normalize_email(email))
            .execute(&self.pool)
            .await
            .or_storage("password")?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_auth_request(&self, request: &AuthRequest) -> Result<()> {
        let login = request
            .login
            .as_ref()
            .map(|l| sql::to_json(l, "auth request login"))
            .transpose()?;
        sqlx::query(sql::INSERT_AUTH_REQUEST)
            .bind(&request.id)
            .bind(&request.client_id)
            .bind(sql::to_json(&request.params, "auth request params")?)
            .bind(&request.csrf_token)
            .bind(&request.browser_binding)
            .bind(login)
            .bind(request.created_at)
            .bind(request.expires_at)
            .execute(&self.pool)
            .await
            .or_storage("auth request")?;
        Ok(())
    }

    async fn get_auth_request(&self, id: &str) -> Result<Option<AuthRequest>> {
        sqlx::query_as::<_, sql::AuthRequestRow>(sql::SELECT_AUTH_REQUEST)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .or_storage("auth request")?
            .map(sql::AuthRequestRow::into_model)
            .transpose()
    }

    async fn complete_auth_request(
        &self,
        id: &str,
        login: &LoginResult,
        now: UnixTime,
    ) -> Result<bool> {
        let done = sqlx::query(sql::COMPLETE_AUTH_REQUEST)
            .bind(id)
            .bind(sql::to_json(login, "auth request login")?)
            .bind(now)
            .execute(&self.pool)
            .await
            .or_storage("auth request")?;
        Ok(done.rows_affected() == 1)
    }

    async fn begin_upstream_login(
        &self,
        id: &str,
        upstream: &UpstreamLogin,
        now: UnixTime,
    ) -> Result<bool> {
        let done = sqlx::query(sql::BEGIN_UPSTREAM_LOGIN)
            .bind(id)
            .bind(sql::to_json(upstream, "auth request upstream")?)
            .bind(now)
            .execute(&self.pool)
            .await
            .or_storage("auth request")?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_auth_request(&self, id: &str) -> Result<bool> {
        let done = sqlx::query(sql::DELETE_AUTH_REQUEST)
            .bind(id)
            .execute(&self.pool)
            .await
            .or_storage("auth request")?;
        Ok(done.rows_affected() > 0)
    }

    async fn exchange_auth_request_for_code(
        &self,
        auth_request_id: &str,
        code: &AuthCode,
        now: UnixTime,
    ) -> Result<bool> {
        let grant_json = sql::to_json(&code.grant, "authorization code grant")?;
        let mut tx = self.begin_write().await?;
        let consumed = sqlx::query(sql::CONSUME_AUTH_REQUEST)
            .bind(auth_request_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .or_storage("auth request")?;
        if consumed.rows_affected() != 1 {
            // Dropping the transaction rolls it back; it changed nothing anyway.
            return Ok(false);
        }
        sqlx::query(sql::INSERT_AUTH_CODE)
            .bind(&code.code_hash)
            .bind(&code.grant.id)
            .bind(&code.redirect_uri)
            .bind(&code.code_challenge)
            .bind(&code.code_challenge_method)
            .bind(grant_json)
            .bind(code.created_at)
            .bind(code.expires_at)
            .bind(code.redeemed_at)
            .execute(&mut *tx)
            .await
            .or_storage("authorization code")?;
        tx.commit().await.or_storage("authorization code")?;
        Ok(true)
    }

    async fn get_auth_code(&self, code_hash: &str) -> Result<Option<AuthCode>> {
        sqlx::query_as::<_, sql::AuthCodeRow>(sql::SELECT_AUTH_CODE)
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await
            .or_storage("authorization code")?
            .map(sql::AuthCodeRow::into_model)
            .transpose()
    }

    async fn redeem_auth_code(
        &self,
        code_hash: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<Redemption> {
        let mut tx = HandTx::start(&self.pool).await?;
        let claimed = sqlx::query_as::<_, sql::AuthCodeRow>(sql::BEGIN_AND_CLAIM_AUTH_CODE)
            .bind(code_hash)
            .bind(now)
            .fetch_optional(tx.conn())
            .await
            .or_storage("authorization code")?;

        let Some(claimed) = claimed else {
            let state = sqlx::query_as::<_, sql::AuthCodeState>(sql::SELECT_AUTH_CODE_STATE)
                .bind(code_hash)
                .fetch_optional(tx.conn())
                .await
                .or_storage("authorization code")?;
            let outcome = match state.map(|s| s.failure(now)) {
                None | Some(sql::FailedClaim::NotFound) => Redemption::NotFound,
                Some(sql::FailedClaim::Expired) => Redemption::Expired,
                Some(sql::FailedClaim::Replayed(grant_id)) => {
                    sqlx::query(sql::REVOKE_GRANT)
                        .bind(&grant_id)
                        .bind(now)
                        .execute(tx.conn())
                        .await
                        .or_storage("grant")?;
                    tx.commit().await?;
                    return Ok(Redemption::Replayed { grant_id });
                }
            };
            tx.rollback().await?;
            return Ok(outcome);
        };

        let mut grant = claimed.into_model()?.grant;
        grant.revoked_at = None;
        insert_and_commit(tx.conn(), &grant, tokens).await?;
        tx.committed();
        Ok(Redemption::Issued(grant))
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>> {
        sqlx::query_as::<_, sql::GrantRow>(sql::SELECT_GRANT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .or_storage("grant")?
            .map(sql::GrantRow::into_model)
            .transpose()
    }

    async fn revoke_grant(&self, id: &str, now: UnixTime) -> Result<bool> {
        let done = sqlx::query(sql::REVOKE_GRANT)
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .or_storage("grant")?;
        Ok(done.rows_affected() == 1)
    }

    async fn get_access_token(
        &self,
        token_hash: &str,
        now: UnixTime,
    ) -> Result<Option<(AccessToken, Grant)>> {
        sqlx::query_as::<_, sql::AccessTokenWithGrantRow>(sql::SELECT_LIVE_ACCESS_TOKEN)
            .bind(token_hash)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .or_storage("access token")?
            .map(sql::AccessTokenWithGrantRow::into_model)
            .transpose()
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKey>> {
        Ok(
            sqlx::query_as::<_, sql::SigningKeyRow>(sql::LIST_SIGNING_KEYS)
                .fetch_all(&self.pool)
                .await
                .or_storage("signing keys")?
                .into_iter()
                .map(sql::SigningKeyRow::into_model)
                .collect(),
        )
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> Result<bool> {
        let done = sqlx::query(sql::INSERT_SIGNING_KEY)
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.public_jwk)
            .bind(&key.private_key_enc)
            .bind(&key.successor_of)
            .bind(key.created_at)
            .bind(key.sign_from)
            .execute(&self.pool)
            .await
            .or_storage(&format!("signing key {:?}", key.kid))?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<bool> {
        let done = sqlx::query(sql::DELETE_SIGNING_KEY)
            .bind(kid)
            .execute(&self.pool)
            .await
            .or_storage(&format!("signing key {kid:?}"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn issue_grant(&self, grant: &Grant, tokens: &IssuedTokens) -> Result<()> {
        self.writer.issue(grant, tokens).await
    }

    async fn revoke_access_token(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query(sql::DELETE_ACCESS_TOKEN)
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .or_storage("access token")?;
        Ok(done.rows_affected() > 0)
    }

    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<(RefreshToken, Grant)>> {
        self.writer.read_refresh_token(token_hash).await
    }

    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<RefreshOutcome> {
        self.writer.rotate(rotation, now).await
    }

    async fn create_device_request(&self, request: &DeviceRequest) -> Result<()> {
        let grant = request
            .grant
            .as_ref()
            .map(|g| sql::to_json(g, "device request grant"))
            .transpose()?;
        sqlx::query(sql::INSERT_DEVICE_REQUEST)
            .bind(&request.user_code)
            .bind(&request.device_code_hash)
            .bind(&request.client_id)
            .bind(sql::to_json(&request.scopes, "device request scopes")?)
            .bind(request.created_at)
            .bind(request.expires_at)
            .bind(request.poll_interval)
            .bind(request.last_poll_at)
            .bind(request.status.as_str())
            .bind(grant)
            .execute(&self.pool)
            .await
            .or_storage("device request with this user code")?;
        Ok(())
    }

    async fn get_device_request(&self, user_code: &str) -> Result<Option<DeviceRequest>> {
        sqlx::query_as::<_, sql::DeviceRequestRow>(&sql::select_device_request())
            .bind(user_code)
            .fetch_optional(&self.pool)
            .await
            .or_storage("device request")?
            .map(sql::DeviceRequestRow::into_model)
            .transpose()
    }

    async fn find_device_request(&self, device_code_hash: &str) -> Result<Option<DeviceRequest>> {
        sqlx::query_as::<_, sql::DeviceRequestRow>(&sql::select_device_request_by_device_code())
            .bind(device_code_hash)
            .fetch_optional(&self.pool)
            .await
            .or_storage("device request")?
            .map(sql::DeviceRequestRow::into_model)
            .transpose()
    }

    async fn complete_device_request(
        &self,
        user_code: &str,
        grant: Option<&Grant>,
        now: UnixTime,
    ) -> Result<bool> {
        let (status, grant) = match grant {
            Some(g) => (
                DeviceStatus::Approved,
                Some(sql::to_json(g, "device request grant")?),
            ),
            None => (DeviceStatus::Denied, None),
        };
        let done = sqlx::query(sql::COMPLETE_DEVICE_REQUEST)
            .bind(user_code)
            .bind(status.as_str())
            .bind(grant)
            .bind(now)
            .execute(&self.pool)
            .await
            .or_storage("device request")?;
        Ok(done.rows_affected() == 1)
    }

    async fn poll_device_request(
        &self,
        device_code_hash: &str,
        client_id: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<DevicePoll> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query_as::<_, sql::DeviceRequestRow>(
            &sql::select_device_request_by_device_code(),
        )
        .bind(device_code_hash)
        .fetch_optional(&mut *tx)
        .await
        .or_storage("device request")?;
        // Every early return drops `tx`, which rolls back: those outcomes write nothing.
        let outcome = match sql::decide_poll(row, client_id, now)? {
            sql::PollDecision::NotFound => return Ok(DevicePoll::NotFound),
            sql::PollDecision::Expired => return Ok(DevicePoll::Expired),
            sql::PollDecision::SlowDown => {
                sqlx::query(sql::SLOW_DEVICE_DOWN)
                    .bind(device_code_hash)
                    .bind(now)
                    .bind(sql::SLOW_DOWN_STEP)
                    .execute(&mut *tx)
                    .await
                    .or_storage("device request")?;
                DevicePoll::SlowDown
            }
            sql::PollDecision::Answer(poll) => {
                sqlx::query(sql::RECORD_DEVICE_POLL)
                    .bind(device_code_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .or_storage("device request")?;
                poll
            }
            sql::PollDecision::Redeem(grant) => {
                let redeemed = sqlx::query(sql::REDEEM_DEVICE_REQUEST)
                    .bind(device_code_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .or_storage("device request")?;
                if redeemed.rows_affected() != 1 {
                    return Err(StorageError::Unavailable(
                        "the device request changed during its redemption".into(),
                    ));
                }
                insert_grant(&mut tx, &grant).await?;
                insert_tokens(&mut tx, &sql::tokens_for_grant(tokens, &grant)).await?;
                DevicePoll::Issued(grant)
            }
        };
        tx.commit().await.or_storage("device request")?;
        Ok(outcome)
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        sqlx::query(sql::INSERT_SESSION)
            .bind(&session.id_hash)
            .bind(&session.claims.user_id)
            .bind(&session.connector_id)
            .bind(sql::to_json(&session.claims, "session claims")?)
            .bind(&session.connector_data)
            .bind(session.auth_time)
            .bind(session.created_at)
            .bind(session.expires_at)
            .bind(session.revoked_at)
            .execute(&self.pool)
            .await
            .or_storage("session")?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<Session>> {
        sqlx::query_as::<_, sql::SessionRow>(sql::SELECT_SESSION)
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await
            .or_storage("session")?
            .map(sql::SessionRow::into_model)
            .transpose()
    }

    async fn revoke_session(&self, id_hash: &str, now: UnixTime) -> Result<bool> {
        let done = sqlx::query(sql::REVOKE_SESSION)
            .bind(id_hash)
            .bind(now)
            .execute(&self.pool)
            .await
            .or_storage("session")?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>> {
        let rows = sqlx::query_as::<_, sql::GrantRow>(sql::LIST_GRANTS)
            .bind(filter.connector_id.as_deref())
            .bind(filter.user_id.as_deref())
            .bind(filter.client_id.as_deref())
            .bind(i64::from(filter.active_only))
            .fetch_all(&self.pool)
            .await
            .or_storage("grants")?;
        let mut grants = Vec::with_capacity(rows.len());
        for row in rows {
            let grant = row.into_model()?;
            if filter.matches_claims(&grant.claims) {
                grants.push(grant);
            }
        }
        Ok(grants)
    }

    async fn list_sessions(&self, filter: &GrantFilter) -> Result<Vec<Session>> {
        let rows = sqlx::query_as::<_, sql::SessionRow>(sql::LIST_SESSIONS)
            .bind(filter.connector_id.as_deref())
            .bind(filter.user_id.as_deref())
            .bind(i64::from(filter.active_only))
            .bind(filter.now)
            .fetch_all(&self.pool)
            .await
            .or_storage("sessions")?;
        let mut sessions = Vec::with_capacity(rows.len());
        for row in rows {
            let session = row.into_model()?;
            if filter.matches_claims(&session.claims) {
                sessions.push(session);
            }
        }
        Ok(sessions)
    }

    async fn sweep(&self, cutoffs: &SweepCutoffs) -> Result<Swept> {
        let mut swept = Swept::default();
        for (kind, count) in sql::sweep_plan(cutoffs)
            .into_iter()
            .zip(sql::sweep_counts(&mut swept))
        {
            // The reasons to delete one kind share its batch.
            for (statement, cutoff) in kind.steps {
                let budget = u64::from(cutoffs.batch).saturating_sub(*count);
                if budget == 0 {
                    break;
                }
                *count += sqlx::query(statement)
                    .bind(cutoff)
                    .bind(sql::batch_limit(budget))
                    .execute(&self.pool)
                    .await
                    .or_storage(kind.subject)?
                    .rows_affected();
            }
        }
        Ok(swept)
    }
}

async fn insert_grant(conn: &mut SqliteConnection, grant: &Grant) -> Result<()> {
    let json = sql::GrantJson::new(grant)?;
    sqlx::query(sql::INSERT_GRANT)
        .bind(&grant.id)
        .bind(&grant.client_id)
        .bind(&grant.connector_id)
        .bind(&grant.claims.user_id)
        .bind(&json.claims)
        .bind(&json.scopes)
        .bind(&grant.nonce)
        .bind(grant.auth_time)
        .bind(&grant.connector_data)
        .bind(grant.created_at)
        .bind(grant.revoked_at)
        .execute(&mut *conn)
        .await
        .or_storage(&format!("grant {:?}", grant.id))?;
    Ok(())
}

async fn insert_access_token(conn: &mut SqliteConnection, token: &AccessToken) -> Result<()> {
    sqlx::query(sql::INSERT_ACCESS_TOKEN)
        .bind(&token.token_hash)
        .bind(&token.grant_id)
        .bind(&token.client_id)
        .bind(token.created_at)
        .bind(token.expires_at)
        .bind(sql::access_token_scopes(token)?)
        .execute(&mut *conn)
        .await
        .or_storage("access token")?;
    Ok(())
}

async fn insert_refresh_token(conn: &mut SqliteConnection, token: &RefreshToken) -> Result<()> {
    sqlx::query(sql::INSERT_REFRESH_TOKEN)
        .bind(&token.token_hash)
        .bind(&token.grant_id)
        .bind(&token.client_id)
        .bind(token.created_at)
        .bind(token.last_used_at)
        .bind(token.expires_at)
        .bind(token.rotated_at)
        .bind(&token.successor_hash)
        .execute(&mut *conn)
        .await
        .or_storage("refresh token")?;
    Ok(())
}

async fn insert_tokens(conn: &mut SqliteConnection, tokens: &IssuedTokens) -> Result<()> {
    insert_access_token(conn, &tokens.access).await?;
    if let Some(refresh) = &tokens.refresh {
        insert_refresh_token(conn, refresh).await?;
    }
    Ok(())
}
