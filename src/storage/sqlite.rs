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
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::sql::{self, ResultExt};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// One writer at a time anyway; a few connections let reads proceed alongside it.
const FILE_POOL_SIZE: u32 = 4;

pub struct SqliteStorage {
    pool: SqlitePool,
}

impl SqliteStorage {
    /// Opens (creating it and its parent directory when missing) a database file.
    pub async fn open_file(file: &Path) -> Result<Self> {
        if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StorageError::Open(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(file)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(FILE_POOL_SIZE)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                StorageError::Open(format!(
                    "cannot open SQLite database {}: {e}",
                    file.display()
                ))
            })?;
        Ok(Self { pool })
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
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StorageError::Open(format!("cannot open in-memory SQLite: {e}")))?;
        Ok(Self { pool })
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
        access_token: &AccessToken,
        now: UnixTime,
    ) -> Result<Redemption> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query_as::<_, sql::AuthCodeRow>(sql::CLAIM_AUTH_CODE)
            .bind(code_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .or_storage("authorization code")?;

        let Some(claimed) = claimed else {
            let state = sqlx::query_as::<_, sql::AuthCodeState>(sql::SELECT_AUTH_CODE_STATE)
                .bind(code_hash)
                .fetch_optional(&mut *tx)
                .await
                .or_storage("authorization code")?;
            let outcome = match state.map(|s| s.failure(now)) {
                None | Some(sql::FailedClaim::NotFound) => Redemption::NotFound,
                Some(sql::FailedClaim::Expired) => Redemption::Expired,
                Some(sql::FailedClaim::Replayed(grant_id)) => {
                    sqlx::query(sql::REVOKE_GRANT)
                        .bind(&grant_id)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .or_storage("grant")?;
                    tx.commit().await.or_storage("grant")?;
                    Redemption::Replayed { grant_id }
                }
            };
            return Ok(outcome);
        };

        let mut grant = claimed.into_model()?.grant;
        grant.revoked_at = None;
        let json = sql::GrantJson::new(&grant)?;
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
            .execute(&mut *tx)
            .await
            .or_storage("grant")?;
        sqlx::query(sql::INSERT_ACCESS_TOKEN)
            .bind(&access_token.token_hash)
            .bind(&access_token.grant_id)
            .bind(&access_token.client_id)
            .bind(access_token.created_at)
            .bind(access_token.expires_at)
            .execute(&mut *tx)
            .await
            .or_storage("access token")?;
        tx.commit().await.or_storage("authorization code")?;
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

    async fn sweep(
        &self,
        now: UnixTime,
        code_cutoff: UnixTime,
        grant_cutoff: UnixTime,
        batch: u32,
    ) -> Result<Swept> {
        let limit = sql::batch_limit(batch);
        let mut swept = Swept::default();
        // Tokens go before grants, so that a grant whose last token expires is swept in the
        // same call.
        for (statement, cutoff, subject, count) in [
            (
                sql::SWEEP_AUTH_REQUESTS,
                now,
                "expired auth requests",
                &mut swept.auth_requests,
            ),
            (
                sql::SWEEP_AUTH_CODES,
                code_cutoff,
                "expired authorization codes",
                &mut swept.auth_codes,
            ),
            (
                sql::SWEEP_ACCESS_TOKENS,
                now,
                "expired access tokens",
                &mut swept.access_tokens,
            ),
            (
                sql::SWEEP_GRANTS,
                grant_cutoff,
                "revoked grants",
                &mut swept.grants,
            ),
        ] {
            *count = sqlx::query(statement)
                .bind(cutoff)
                .bind(limit)
                .execute(&self.pool)
                .await
                .or_storage(subject)?
                .rows_affected();
        }
        Ok(swept)
    }
}
