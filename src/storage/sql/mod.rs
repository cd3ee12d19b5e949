//! The one SQL implementation of [`Storage`], for SQLite and PostgreSQL alike.
//!
//! Both databases run the same statements (`queries`), decode the same rows (`rows`) and
//! share every operation below. What truly differs is a [`Dialect`]: how a write transaction
//! begins, the migrations, and the operations each database makes atomic its own way, which
//! are also the hot paths (code redemption, issuing a grant, reading and rotating a refresh
//! token, reserving a login attempt). PostgreSQL's are in `postgres.rs` (new grants
//! inserted in batches by `postgres_grants.rs`); SQLite's, most of them settled by the batch
//! writer in `sqlite_writer.rs`, in `sqlite.rs`.

mod json_rows;
mod queries;
mod rows;

use std::time::Instant;

pub(in crate::storage) use json_rows::*;
pub(in crate::storage) use queries::*;
pub(in crate::storage) use rows::*;

/// Binds a grant's columns in `INSERT_GRANT`'s order: id, client, connector, user, claims,
/// scopes, nonce, auth_time, connector_data, created_at, revoked_at.
macro_rules! bind_grant {
    ($query:expr, $grant:expr, $json:expr) => {
        $query
            .bind(&$grant.id)
            .bind(&$grant.client_id)
            .bind(&$grant.connector_id)
            .bind(&$grant.claims.user_id)
            .bind(&$json.claims)
            .bind(&$json.scopes)
            .bind(&$grant.nonce)
            .bind($grant.auth_time)
            .bind(&$grant.connector_data)
            .bind($grant.created_at)
            .bind($grant.revoked_at)
    };
}

/// Binds a refresh token's columns after its hash, in `INSERT_REFRESH_TOKEN`'s order.
macro_rules! bind_refresh_after_hash {
    ($query:expr, $token:expr) => {
        $query
            .bind(&$token.grant_id)
            .bind(&$token.client_id)
            .bind($token.created_at)
            .bind($token.last_used_at)
            .bind($token.expires_at)
            .bind($token.rotated_at)
            .bind(&$token.successor_hash)
    };
}
pub(in crate::storage) use bind_refresh_after_hash;

use std::collections::BTreeSet;

use async_trait::async_trait;
use sqlx::error::ErrorKind;
use sqlx::query::{Query, QueryAs};
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Row,
    Transaction, Type,
};

use super::*;

/// Maps a database error. `subject` names the record for the messages
/// ("client \"x\"", "authorization code"); it never contains a secret.
pub(in crate::storage) fn storage_error(error: sqlx::Error, subject: &str) -> StorageError {
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
pub(in crate::storage) trait ResultExt<T> {
    fn or_storage(self, subject: &str) -> Result<T>;
}

impl<T> ResultExt<T> for std::result::Result<T, sqlx::Error> {
    fn or_storage(self, subject: &str) -> Result<T> {
        self.map_err(|e| storage_error(e, subject))
    }
}

/// How many rows a statement changed; sqlx has it on each database's result, not on a trait.
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

/// A connection of the dialect's database.
pub type Connection<D> = <<D as Dialect>::Db as Database>::Connection;

/// After a sweep statement, everything else gets this many times as long as the statement
/// took before the next one runs, so that housekeeping a backlog takes at most a third of the
/// database's time: SQLite's writer settles batches meanwhile, and on PostgreSQL the sweep
/// waits. Without the turn, a sweep kept up under steady load (where some request is always
/// about to queue) took half of SQLite's writer, and refreshes ran at a third of their quiet
/// rate.
pub(in crate::storage) const SWEEP_GAP: u32 = 2;

/// What differs between the databases. Each operation here is one whose atomicity (or whose
/// round trips) the database decides its own way; everything else is [`SqlStorage`]'s.
#[async_trait]
pub trait Dialect: Sized + Send + Sync + 'static {
    type Db: Database<QueryResult: RowsAffected>;

    /// The database's name, for logs and metrics ([`Storage::kind`]).
    const KIND: &'static str;
    /// Deletes shared password-attempt counters past `forget_at` ($1), at most $2 of them;
    /// `None` where no counters are shared.
    const SWEEP_LOGIN_ATTEMPTS: Option<&'static str> = None;
    /// Whether a sweep skips rows another transaction has locked (another replica's sweep)
    /// instead of waiting for them.
    const SWEEP_SKIP_LOCKED: bool = false;
    /// The most rows one sweep statement deletes (a batch may take several).
    const SWEEP_STATEMENT_ROWS: u32 = u32::MAX;
    /// A table whose column `value` holds the texts of the JSON array bound to $1.
    const JSON_TEXTS: &'static str;
    /// Locks the grant whose id is $1 until the transaction ends; `None` where
    /// [`begin_write`](Self::begin_write) already keeps every other writer out.
    const LOCK_GRANT: Option<&'static str> = None;

    /// Runs one sweep statement (`$1` the cutoff, `$2` the row limit) that deletes `subject`
    /// the dialect's own way and says what it deleted; `None`: it runs on the pool. With
    /// `frees`, the statement returns the grant ids of the tokens it deleted, and `frees`
    /// (their JSON array as `$1`) deletes the grants left without a token, in the same
    /// transaction.
    async fn sweep_statement(
        &self,
        _subject: &'static str,
        _sql: &str,
        _cutoff: UnixTime,
        _rows: i64,
        _frees: Option<&str>,
    ) -> Option<Result<SweepDone>> {
        None
    }

    /// Applies this database's migrations.
    async fn migrate(pool: &Pool<Self::Db>) -> Result<()>;

    /// Begins a transaction that writes, in which what it reads cannot change before it
    /// commits (SQLite's `BEGIN IMMEDIATE`; PostgreSQL's row locks are in the statements).
    async fn begin_write(pool: &Pool<Self::Db>) -> Result<Transaction<'static, Self::Db>>;

    /// The device request a poll decides on, by device code hash ($1), read inside
    /// [`begin_write`](Self::begin_write)'s transaction so that concurrent polls queue.
    fn device_request_for_poll() -> String;

    /// See [`Storage::redeem_auth_code`].
    async fn redeem_auth_code(
        &self,
        pool: &Pool<Self::Db>,
        code_hash: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<Redemption>;

    /// See [`Storage::issue_grant`].
    async fn issue_grant(
        &self,
        pool: &Pool<Self::Db>,
        grant: &Grant,
        tokens: &IssuedTokens,
    ) -> Result<()>;

    /// See [`Storage::get_refresh_token`].
    async fn get_refresh_token(
        &self,
        pool: &Pool<Self::Db>,
        token_hash: &str,
    ) -> Result<Option<(RefreshToken, Grant)>>;

    /// See [`Storage::rotate_refresh_token`].
    async fn rotate_refresh_token(
        &self,
        pool: &Pool<Self::Db>,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<RefreshOutcome>;

    /// See [`Storage::reserve_login_attempt`]: by default no shared budget.
    async fn reserve_login_attempt(
        &self,
        _pool: &Pool<Self::Db>,
        _keys: &[String],
        _policy: &AttemptPolicy,
        _now: UnixTime,
    ) -> Result<Option<AttemptDecision>> {
        Ok(None)
    }

    /// See [`Storage::settle_login_attempt`].
    async fn settle_login_attempt(
        &self,
        _pool: &Pool<Self::Db>,
        _forgive: Option<&str>,
        _refund: &[String],
        _reserved_at: UnixTime,
    ) -> Result<()> {
        Ok(())
    }
}

/// [`Storage`] on a SQL database: a pool, and what the database does its own way.
pub struct SqlStorage<D: Dialect> {
    pool: Pool<D::Db>,
    dialect: D,
}

impl<D: Dialect> SqlStorage<D> {
    pub(in crate::storage) fn new(pool: Pool<D::Db>, dialect: D) -> Self {
        Self { pool, dialect }
    }

    /// The connection pool, for features that keep their own tables.
    pub fn pool(&self) -> &Pool<D::Db> {
        &self.pool
    }
}

/// The writes several operations share, each inside a transaction its caller holds.
///
/// The bounds (here and on the [`Storage`] impl below) say that the database takes every
/// type these statements bind and decode; both SQLite and PostgreSQL do.
impl<D: Dialect> SqlStorage<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'r> &'r str: ColumnIndex<<D::Db as Database>::Row>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> String: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<String>: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<i64>: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> bool: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Vec<u8>: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
{
    /// Reads at most one row and decodes it; `subject` names the record in errors.
    async fn fetch_model<'q, R>(
        &self,
        query: QueryAs<'q, D::Db, R, <D::Db as Database>::Arguments<'q>>,
        subject: &str,
    ) -> Result<Option<R::Model>>
    where
        R: IntoModel + for<'r> FromRow<'r, <D::Db as Database>::Row> + Send + Unpin,
    {
        query
            .fetch_optional(&self.pool)
            .await
            .or_storage(subject)?
            .map(R::into_model)
            .transpose()
    }

    /// Reads every row and decodes them.
    async fn fetch_models<'q, R>(
        &self,
        query: QueryAs<'q, D::Db, R, <D::Db as Database>::Arguments<'q>>,
        subject: &str,
    ) -> Result<Vec<R::Model>>
    where
        R: IntoModel + for<'r> FromRow<'r, <D::Db as Database>::Row> + Send + Unpin,
    {
        query
            .fetch_all(&self.pool)
            .await
            .or_storage(subject)?
            .into_iter()
            .map(R::into_model)
            .collect()
    }

    /// Runs one statement on its own; whether it changed its row. Each statement run this way
    /// names one row by its primary key, so it changes one or none.
    async fn change<'q>(
        &self,
        query: Query<'q, D::Db, <D::Db as Database>::Arguments<'q>>,
        subject: &str,
    ) -> Result<bool> {
        Ok(query
            .execute(&self.pool)
            .await
            .or_storage(subject)?
            .rows_affected()
            > 0)
    }

    /// Counts one change to the stored connectors in the change's transaction, and commits
    /// both: readers see the change and the new generation together.
    async fn commit_connectors_change(
        mut tx: Transaction<'static, D::Db>,
        subject: &str,
    ) -> Result<()> {
        sqlx::query(BUMP_CONNECTORS_GENERATION)
            .execute(&mut *tx)
            .await
            .or_storage(subject)?;
        tx.commit().await.or_storage(subject)
    }

    pub(in crate::storage) async fn insert_grant(
        conn: &mut Connection<D>,
        grant: &Grant,
    ) -> Result<()> {
        let json = GrantJson::new(grant)?;
        bind_grant!(sqlx::query(INSERT_GRANT), grant, json)
            .execute(&mut *conn)
            .await
            .map_err(|e| storage_error(e, &format!("grant {:?}", grant.id)))?;
        Ok(())
    }

    pub(in crate::storage) async fn insert_access_token(
        conn: &mut Connection<D>,
        token: &AccessToken,
    ) -> Result<()> {
        sqlx::query(INSERT_ACCESS_TOKEN)
            .bind(&token.token_hash)
            .bind(&token.grant_id)
            .bind(&token.client_id)
            .bind(token.created_at)
            .bind(token.expires_at)
            .bind(access_token_scopes(token)?)
            .execute(&mut *conn)
            .await
            .or_storage("access token")?;
        Ok(())
    }

    async fn insert_refresh_token(conn: &mut Connection<D>, token: &RefreshToken) -> Result<()> {
        bind_refresh_after_hash!(
            sqlx::query(INSERT_REFRESH_TOKEN).bind(&token.token_hash),
            token
        )
        .execute(&mut *conn)
        .await
        .or_storage("refresh token")?;
        Ok(())
    }

    pub(in crate::storage) async fn insert_tokens(
        conn: &mut Connection<D>,
        tokens: &IssuedTokens,
    ) -> Result<()> {
        Self::insert_access_token(conn, &tokens.access).await?;
        if let Some(refresh) = &tokens.refresh {
            Self::insert_refresh_token(conn, refresh).await?;
        }
        Ok(())
    }

    /// Why claiming a code failed, in the redemption's transaction: a replayed code has its
    /// grant revoked here, and is the one outcome whose transaction must commit.
    pub(in crate::storage) async fn unclaimed_code(
        conn: &mut Connection<D>,
        code_hash: &str,
        now: UnixTime,
    ) -> Result<Redemption> {
        let state = sqlx::query_as::<_, AuthCodeState>(SELECT_AUTH_CODE_STATE)
            .bind(code_hash)
            .fetch_optional(&mut *conn)
            .await
            .or_storage("authorization code")?;
        Ok(match state.map(|s| s.failure(now)) {
            None | Some(FailedClaim::NotFound) => Redemption::NotFound,
            Some(FailedClaim::Expired) => Redemption::Expired,
            Some(FailedClaim::Replayed(grant_id)) => {
                sqlx::query(REVOKE_GRANT)
                    .bind(&grant_id)
                    .bind(now)
                    .execute(&mut *conn)
                    .await
                    .or_storage("grant")?;
                Redemption::Replayed { grant_id }
            }
        })
    }

    /// Runs `sql`, one of `sweep`'s statements, with its cutoff and at most `rows` rows.
    /// With `free`, the statement returns the grant ids of the tokens it deleted, and the
    /// grants it left without a token are deleted in the same transaction: a crash cannot
    /// keep a grant whose tokens are gone, which no later sweep would find without reading
    /// every live grant.
    async fn sweep_statement(
        &self,
        sql: &str,
        cutoff: UnixTime,
        rows: u64,
        free: Option<&GrantFreeing<'_>>,
        subject: &'static str,
    ) -> Result<SweepDone> {
        if let Some(done) = self
            .dialect
            .sweep_statement(
                subject,
                sql,
                cutoff,
                batch_limit(rows),
                free.map(|f| f.delete.as_str()),
            )
            .await
        {
            return done;
        }
        // On the pool, the sweep itself gives everything else its turn between statements.
        let started = Instant::now();
        let done = async {
            let statement = sqlx::query(sql).bind(cutoff).bind(batch_limit(rows));
            let Some(free) = free else {
                let rows = statement
                    .execute(&self.pool)
                    .await
                    .or_storage(subject)?
                    .rows_affected();
                return Ok(SweepDone { rows, grants: 0 });
            };
            let mut tx = D::begin_write(&self.pool).await?;
            let deleted = statement.fetch_all(&mut *tx).await.or_storage(subject)?;
            let mut grant_ids = swept_grant_ids(&deleted, subject)?;
            if let Some(lock) = free.lock.as_deref().filter(|_| !grant_ids.is_empty()) {
                let c = free.cutoffs;
                grant_ids = sqlx::query(lock)
                    .bind(to_json(&grant_ids, "swept grant ids")?)
                    .bind(c.now)
                    .bind(c.refresh_idle_cutoff)
                    .bind(c.rotated_cutoff)
                    .fetch_all(&mut *tx)
                    .await
                    .or_storage("grants without live tokens")?
                    .iter()
                    .map(|row| row.try_get::<String, _>("id"))
                    .collect::<std::result::Result<_, _>>()
                    .or_storage("grants without live tokens")?;
            }
            let mut grants = 0;
            if !grant_ids.is_empty() {
                grants = sqlx::query(&free.delete)
                    .bind(to_json(&grant_ids, "swept grant ids")?)
                    .execute(&mut *tx)
                    .await
                    .or_storage("grants without tokens")?
                    .rows_affected();
            }
            tx.commit().await.or_storage(subject)?;
            Ok::<_, StorageError>(SweepDone {
                rows: deleted.len() as u64,
                grants,
            })
        }
        .await?;
        tokio::time::sleep(started.elapsed() * SWEEP_GAP).await;
        Ok(done)
    }
}

#[async_trait]
impl<D: Dialect> Storage for SqlStorage<D>
where
    for<'c> &'c mut Connection<D>: Executor<'c, Database = D::Db>,
    for<'q> <D::Db as Database>::Arguments<'q>: IntoArguments<'q, D::Db>,
    for<'r> &'r str: ColumnIndex<<D::Db as Database>::Row>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<&'q str>: Encode<'q, D::Db> + Type<D::Db>,
    for<'q> String: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<String>: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> i64: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Option<i64>: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> bool: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
    for<'q> Vec<u8>: Encode<'q, D::Db> + Decode<'q, D::Db> + Type<D::Db>,
{
    fn kind(&self) -> &'static str {
        D::KIND
    }

    async fn migrate(&self) -> Result<()> {
        D::migrate(&self.pool).await
    }

    async fn ping(&self) -> Result<()> {
        self.change(sqlx::query(PING), "ping").await?;
        Ok(())
    }

    async fn create_client(&self, client: &Client) -> Result<()> {
        let json = ClientJson::new(client)?;
        self.change(
            sqlx::query(INSERT_CLIENT)
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
                .bind(client.created_at),
            &format!("client {:?}", client.id),
        )
        .await?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>> {
        self.fetch_model(
            sqlx::query_as::<_, ClientRow>(&select_client()).bind(id),
            &format!("client {id:?}"),
        )
        .await
    }

    async fn list_clients(&self) -> Result<Vec<Client>> {
        self.fetch_models(sqlx::query_as::<_, ClientRow>(&list_clients()), "clients")
            .await
    }

    async fn update_client(&self, client: &Client) -> Result<()> {
        let json = ClientJson::new(client)?;
        let subject = format!("client {:?}", client.id);
        let found = self
            .change(
                sqlx::query(UPDATE_CLIENT)
                    .bind(&client.id)
                    .bind(&client.secret_sha256)
                    .bind(&json.redirect_uris)
                    .bind(&json.trusted_peers)
                    .bind(client.public)
                    .bind(&client.name)
                    .bind(&client.logo_url)
                    .bind(&json.grant_types)
                    .bind(&json.post_logout_redirect_uris)
                    .bind(&json.allowed_connectors),
                &subject,
            )
            .await?;
        if !found {
            return Err(StorageError::NotFound(subject));
        }
        Ok(())
    }

    async fn delete_client(&self, id: &str) -> Result<bool> {
        self.change(
            sqlx::query(DELETE_CLIENT).bind(id),
            &format!("client {id:?}"),
        )
        .await
    }

    async fn create_password(&self, password: &Password) -> Result<()> {
        let email = normalize_email(&password.email);
        self.change(
            sqlx::query(INSERT_PASSWORD)
                .bind(&email)
                .bind(&password.hash)
                .bind(&password.username)
                .bind(&password.user_id)
                .bind(to_json(&password.groups, "password groups")?)
                .bind(password.created_at)
                .bind(password.updated_at),
            &format!(
                "user with email {email:?} or username {:?}",
                password.username
            ),
        )
        .await?;
        Ok(())
    }

    async fn get_password(&self, email: &str) -> Result<Option<Password>> {
        self.fetch_model(
            sqlx::query_as::<_, PasswordRow>(&select_password_by_email())
                .bind(normalize_email(email)),
            "password",
        )
        .await
    }

    async fn get_password_by_username(&self, username: &str) -> Result<Option<Password>> {
        self.fetch_model(
            sqlx::query_as::<_, PasswordRow>(&select_password_by_username()).bind(username),
            "password",
        )
        .await
    }

    async fn each_password_hash(
        &self,
        each: &mut (dyn for<'h> FnMut(&'h str) + Send),
    ) -> Result<()> {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query_as::<_, HashRow>(SELECT_PASSWORD_HASHES).fetch(&self.pool);
        while let Some(row) = rows.try_next().await.or_storage("password hashes")? {
            each(&row.hash);
        }
        Ok(())
    }

    async fn list_passwords(&self) -> Result<Vec<Password>> {
        self.fetch_models(
            sqlx::query_as::<_, PasswordRow>(&list_passwords()),
            "passwords",
        )
        .await
    }

    async fn update_password(&self, password: &Password) -> Result<()> {
        let email = normalize_email(&password.email);
        let found = self
            .change(
                sqlx::query(UPDATE_PASSWORD)
                    .bind(&email)
                    .bind(&password.hash)
                    .bind(&password.username)
                    .bind(&password.user_id)
                    .bind(to_json(&password.groups, "password groups")?)
                    .bind(password.updated_at),
                &format!("username {:?}", password.username),
            )
            .await?;
        if !found {
            return Err(StorageError::NotFound(format!("user with email {email:?}")));
        }
        Ok(())
    }

    async fn delete_password(&self, email: &str) -> Result<bool> {
        self.change(
            sqlx::query(DELETE_PASSWORD).bind(normalize_email(email)),
            "password",
        )
        .await
    }

    async fn create_connector(&self, connector: &StoredConnector) -> Result<()> {
        let subject = format!("connector {:?}", connector.id);
        let mut tx = D::begin_write(&self.pool).await?;
        sqlx::query(INSERT_CONNECTOR)
            .bind(&connector.id)
            .bind(&connector.type_)
            .bind(&connector.name)
            .bind(&connector.sealed_config)
            .bind(connector.created_at)
            .execute(&mut *tx)
            .await
            .or_storage(&subject)?;
        Self::commit_connectors_change(tx, &subject).await
    }

    async fn get_connector(&self, id: &str) -> Result<Option<StoredConnector>> {
        self.fetch_model(
            sqlx::query_as::<_, ConnectorRow>(&select_connector()).bind(id),
            &format!("connector {id:?}"),
        )
        .await
    }

    async fn list_connectors(&self) -> Result<Vec<StoredConnector>> {
        self.fetch_models(
            sqlx::query_as::<_, ConnectorRow>(&list_connectors()),
            "connectors",
        )
        .await
    }

    async fn update_connector(&self, connector: &StoredConnector) -> Result<i64> {
        let subject = format!("connector {:?}", connector.id);
        let mut tx = D::begin_write(&self.pool).await?;
        let done = sqlx::query(UPDATE_CONNECTOR)
            .bind(&connector.id)
            .bind(&connector.type_)
            .bind(&connector.name)
            .bind(&connector.sealed_config)
            .bind(connector.updated_at)
            .execute(&mut *tx)
            .await
            .or_storage(&subject)?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound(subject));
        }
        let version = sqlx::query_as::<_, ConnectorRow>(&select_connector())
            .bind(&connector.id)
            .fetch_one(&mut *tx)
            .await
            .or_storage(&subject)?
            .into_model()?
            .resource_version;
        Self::commit_connectors_change(tx, &subject).await?;
        Ok(version)
    }

    async fn delete_connector(&self, id: &str) -> Result<bool> {
        let subject = format!("connector {id:?}");
        let mut tx = D::begin_write(&self.pool).await?;
        let done = sqlx::query(DELETE_CONNECTOR)
            .bind(id)
            .execute(&mut *tx)
            .await
            .or_storage(&subject)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        Self::commit_connectors_change(tx, &subject).await?;
        Ok(true)
    }

    async fn connectors_generation(&self) -> Result<i64> {
        Ok(self
            .fetch_model(
                sqlx::query_as::<_, GenerationRow>(SELECT_CONNECTORS_GENERATION),
                "connectors generation",
            )
            .await?
            .unwrap_or_default())
    }

    async fn reserve_login_attempt(
        &self,
        keys: &[String],
        policy: &AttemptPolicy,
        now: UnixTime,
    ) -> Result<Option<AttemptDecision>> {
        self.dialect
            .reserve_login_attempt(&self.pool, keys, policy, now)
            .await
    }

    async fn settle_login_attempt(
        &self,
        forgive: Option<&str>,
        refund: &[String],
        reserved_at: UnixTime,
    ) -> Result<()> {
        self.dialect
            .settle_login_attempt(&self.pool, forgive, refund, reserved_at)
            .await
    }

    async fn create_auth_request(&self, request: &AuthRequest) -> Result<()> {
        let login = request
            .login
            .as_ref()
            .map(|l| to_json(l, "auth request login"))
            .transpose()?;
        self.change(
            sqlx::query(INSERT_AUTH_REQUEST)
                .bind(&request.id)
                .bind(&request.client_id)
                .bind(to_json(&request.params, "auth request params")?)
                .bind(&request.csrf_token)
                .bind(&request.browser_binding)
                .bind(login)
                .bind(request.created_at)
                .bind(request.expires_at),
            "auth request",
        )
        .await?;
        Ok(())
    }

    async fn get_auth_request(&self, id: &str) -> Result<Option<AuthRequest>> {
        self.fetch_model(
            sqlx::query_as::<_, AuthRequestRow>(SELECT_AUTH_REQUEST).bind(id),
            "auth request",
        )
        .await
    }

    async fn complete_auth_request(
        &self,
        id: &str,
        login: &LoginResult,
        now: UnixTime,
    ) -> Result<bool> {
        self.change(
            sqlx::query(COMPLETE_AUTH_REQUEST)
                .bind(id)
                .bind(to_json(login, "auth request login")?)
                .bind(now),
            "auth request",
        )
        .await
    }

    async fn begin_upstream_login(
        &self,
        id: &str,
        upstream: &UpstreamLogin,
        now: UnixTime,
    ) -> Result<bool> {
        self.change(
            sqlx::query(BEGIN_UPSTREAM_LOGIN)
                .bind(id)
                .bind(to_json(upstream, "auth request upstream")?)
                .bind(now),
            "auth request",
        )
        .await
    }

    async fn delete_auth_request(&self, id: &str) -> Result<bool> {
        self.change(sqlx::query(DELETE_AUTH_REQUEST).bind(id), "auth request")
            .await
    }

    async fn exchange_auth_request_for_code(
        &self,
        auth_request_id: &str,
        code: &AuthCode,
        now: UnixTime,
    ) -> Result<bool> {
        let grant_json = to_json(&code.grant, "authorization code grant")?;
        let mut tx = D::begin_write(&self.pool).await?;
        let consumed = sqlx::query(CONSUME_AUTH_REQUEST)
            .bind(auth_request_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .or_storage("auth request")?;
        if consumed.rows_affected() != 1 {
            // Dropping the transaction rolls it back; it changed nothing anyway.
            return Ok(false);
        }
        sqlx::query(INSERT_AUTH_CODE)
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
        self.fetch_model(
            sqlx::query_as::<_, AuthCodeRow>(SELECT_AUTH_CODE).bind(code_hash),
            "authorization code",
        )
        .await
    }

    async fn redeem_auth_code(
        &self,
        code_hash: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<Redemption> {
        self.dialect
            .redeem_auth_code(&self.pool, code_hash, tokens, now)
            .await
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>> {
        self.fetch_model(
            sqlx::query_as::<_, GrantRow>(SELECT_GRANT).bind(id),
            "grant",
        )
        .await
    }

    async fn revoke_grant(&self, id: &str, now: UnixTime) -> Result<bool> {
        self.change(sqlx::query(REVOKE_GRANT).bind(id).bind(now), "grant")
            .await
    }

    async fn get_access_token(
        &self,
        token_hash: &str,
        now: UnixTime,
    ) -> Result<Option<(AccessToken, Grant)>> {
        self.fetch_model(
            sqlx::query_as::<_, AccessTokenWithGrantRow>(SELECT_LIVE_ACCESS_TOKEN)
                .bind(token_hash)
                .bind(now),
            "access token",
        )
        .await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKey>> {
        self.fetch_models(
            sqlx::query_as::<_, SigningKeyRow>(LIST_SIGNING_KEYS),
            "signing keys",
        )
        .await
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> Result<bool> {
        self.change(
            sqlx::query(INSERT_SIGNING_KEY)
                .bind(&key.kid)
                .bind(&key.alg)
                .bind(&key.public_jwk)
                .bind(&key.private_key_enc)
                .bind(&key.successor_of)
                .bind(key.created_at)
                .bind(key.sign_from),
            &format!("signing key {:?}", key.kid),
        )
        .await
    }

    async fn delete_signing_key(&self, kid: &str) -> Result<bool> {
        self.change(
            sqlx::query(DELETE_SIGNING_KEY).bind(kid),
            &format!("signing key {kid:?}"),
        )
        .await
    }

    async fn issue_grant(&self, grant: &Grant, tokens: &IssuedTokens) -> Result<()> {
        self.dialect.issue_grant(&self.pool, grant, tokens).await
    }

    /// A grant without a refresh token (a login without `offline_access`) has nothing left
    /// once its access token is revoked, and no sweep would meet it again: it goes with the
    /// token. A grant another token keeps, or a revoked one (which keeps its own cutoff),
    /// stays.
    async fn revoke_access_token(&self, token_hash: &str) -> Result<bool> {
        let mut tx = D::begin_write(&self.pool).await?;
        let deleted = sqlx::query(DELETE_ACCESS_TOKEN)
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await
            .or_storage("access token")?;
        // Nothing deleted: dropping `tx` rolls back.
        let Some(deleted) = deleted else {
            return Ok(false);
        };
        let grant_id: String = deleted.try_get("grant_id").or_storage("access token")?;
        // Two revocations of the last two tokens of one grant at once: each statement's
        // snapshot would still show the other's token, and both would keep the grant. Queued
        // on the grant's lock, the second's next statement sees both deletions.
        if let Some(lock) = D::LOCK_GRANT {
            sqlx::query(lock)
                .bind(&grant_id)
                .execute(&mut *tx)
                .await
                .or_storage("grant")?;
        }
        sqlx::query(&delete_freed_grants(D::JSON_TEXTS, false))
            .bind(to_json(&[&grant_id], "revoked token's grant")?)
            .execute(&mut *tx)
            .await
            .or_storage("grant without tokens")?;
        tx.commit().await.or_storage("access token")?;
        Ok(true)
    }

    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<(RefreshToken, Grant)>> {
        self.dialect.get_refresh_token(&self.pool, token_hash).await
    }

    async fn rotate_refresh_token(
        &self,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<RefreshOutcome> {
        self.dialect
            .rotate_refresh_token(&self.pool, rotation, now)
            .await
    }

    async fn create_device_request(&self, request: &DeviceRequest) -> Result<()> {
        let grant = request
            .grant
            .as_ref()
            .map(|g| to_json(g, "device request grant"))
            .transpose()?;
        self.change(
            sqlx::query(INSERT_DEVICE_REQUEST)
                .bind(&request.user_code)
                .bind(&request.device_code_hash)
                .bind(&request.client_id)
                .bind(to_json(&request.scopes, "device request scopes")?)
                .bind(request.created_at)
                .bind(request.expires_at)
                .bind(request.poll_interval)
                .bind(request.last_poll_at)
                .bind(request.status.as_str())
                .bind(grant),
            "device request with this user code",
        )
        .await?;
        Ok(())
    }

    async fn get_device_request(&self, user_code: &str) -> Result<Option<DeviceRequest>> {
        self.fetch_model(
            sqlx::query_as::<_, DeviceRequestRow>(&select_device_request()).bind(user_code),
            "device request",
        )
        .await
    }

    async fn find_device_request(&self, device_code_hash: &str) -> Result<Option<DeviceRequest>> {
        self.fetch_model(
            sqlx::query_as::<_, DeviceRequestRow>(&select_device_request_by_device_code())
                .bind(device_code_hash),
            "device request",
        )
        .await
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
                Some(to_json(g, "device request grant")?),
            ),
            None => (DeviceStatus::Denied, None),
        };
        self.change(
            sqlx::query(COMPLETE_DEVICE_REQUEST)
                .bind(user_code)
                .bind(status.as_str())
                .bind(grant)
                .bind(now),
            "device request",
        )
        .await
    }

    async fn poll_device_request(
        &self,
        device_code_hash: &str,
        client_id: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<DevicePoll> {
        let mut tx = D::begin_write(&self.pool).await?;
        let row = sqlx::query_as::<_, DeviceRequestRow>(&D::device_request_for_poll())
            .bind(device_code_hash)
            .fetch_optional(&mut *tx)
            .await
            .or_storage("device request")?;
        // Every early return drops `tx`, which rolls back: those outcomes write nothing.
        let outcome = match decide_poll(row, client_id, now)? {
            PollDecision::NotFound => return Ok(DevicePoll::NotFound),
            PollDecision::Expired => return Ok(DevicePoll::Expired),
            PollDecision::SlowDown => {
                sqlx::query(SLOW_DEVICE_DOWN)
                    .bind(device_code_hash)
                    .bind(now)
                    .bind(SLOW_DOWN_STEP)
                    .execute(&mut *tx)
                    .await
                    .or_storage("device request")?;
                DevicePoll::SlowDown
            }
            PollDecision::Answer(poll) => {
                sqlx::query(RECORD_DEVICE_POLL)
                    .bind(device_code_hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .or_storage("device request")?;
                poll
            }
            PollDecision::Redeem(grant) => {
                let redeemed = sqlx::query(REDEEM_DEVICE_REQUEST)
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
                Self::insert_grant(&mut tx, &grant).await?;
                Self::insert_tokens(&mut tx, &tokens_for_grant(tokens, &grant)).await?;
                DevicePoll::Issued(grant)
            }
        };
        tx.commit().await.or_storage("device request")?;
        Ok(outcome)
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        self.change(
            sqlx::query(INSERT_SESSION)
                .bind(&session.id_hash)
                .bind(&session.claims.user_id)
                .bind(&session.connector_id)
                .bind(to_json(&session.claims, "session claims")?)
                .bind(&session.connector_data)
                .bind(session.auth_time)
                .bind(session.created_at)
                .bind(session.expires_at)
                .bind(session.revoked_at),
            "session",
        )
        .await?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<Session>> {
        self.fetch_model(
            sqlx::query_as::<_, SessionRow>(SELECT_SESSION).bind(id_hash),
            "session",
        )
        .await
    }

    async fn revoke_session(&self, id_hash: &str, now: UnixTime) -> Result<bool> {
        self.change(
            sqlx::query(REVOKE_SESSION).bind(id_hash).bind(now),
            "session",
        )
        .await
    }

    async fn list_grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>> {
        let mut grants = self
            .fetch_models(
                sqlx::query_as::<_, GrantRow>(LIST_GRANTS)
                    .bind(filter.connector_id.as_deref())
                    .bind(filter.user_id.as_deref())
                    .bind(filter.client_id.as_deref())
                    .bind(i64::from(filter.active_only)),
                "grants",
            )
            .await?;
        grants.retain(|grant| filter.matches_claims(&grant.claims));
        Ok(grants)
    }

    async fn refresh_last_used(&self, grant_id: &str) -> Result<Option<UnixTime>> {
        let last = self
            .fetch_model(
                sqlx::query_as::<_, LastUsedRow>(REFRESH_LAST_USED).bind(grant_id),
                "refresh tokens",
            )
            .await?;
        Ok(last.flatten())
    }

    async fn list_sessions(&self, filter: &GrantFilter) -> Result<Vec<Session>> {
        let mut sessions = self
            .fetch_models(
                sqlx::query_as::<_, SessionRow>(LIST_SESSIONS)
                    .bind(filter.connector_id.as_deref())
                    .bind(filter.user_id.as_deref())
                    .bind(i64::from(filter.active_only))
                    .bind(filter.now),
                "sessions",
            )
            .await?;
        sessions.retain(|session| filter.matches_claims(&session.claims));
        Ok(sessions)
    }

    async fn sweep(&self, cutoffs: &SweepCutoffs) -> Result<Swept> {
        // Each replica sweeps on its own timer. Without a row lock in the sub-select, two
        // sweeps pick the same oldest rows: the second waits on the first's row locks until it
        // commits, then finds them gone, deletes fewer than its batch and ends its pass early;
        // and as each DELETE locks its rows in its own plan's order, two can deadlock.
        let mut swept = Swept::default();
        if let Some(statement) = D::SWEEP_LOGIN_ATTEMPTS {
            swept.login_attempts = sqlx::query(statement)
                .bind(cutoffs.now)
                .bind(batch_limit(u64::from(cutoffs.batch)))
                .execute(&self.pool)
                .await
                .or_storage("login attempts")?
                .rows_affected();
        }
        let free = GrantFreeing {
            delete: delete_freed_grants(D::JSON_TEXTS, D::SWEEP_SKIP_LOCKED),
            // Only where others sweep at once (see `lock_dying_grants`).
            lock: D::SWEEP_SKIP_LOCKED.then(|| lock_dying_grants(D::JSON_TEXTS)),
            cutoffs,
        };
        // Grants that went with their last token: not part of any kind's batch, as each
        // statement's tokens bound them.
        let mut freed = 0;
        for (kind, count) in sweep_plan(cutoffs)
            .into_iter()
            .zip(sweep_counts(&mut swept))
        {
            // The reasons to delete one kind share its batch, which the dialect may split
            // into shorter statements.
            for step in kind.steps {
                let sql = step.sql(D::SWEEP_SKIP_LOCKED);
                let free = step.frees_grants.then_some(&free);
                loop {
                    let budget = u64::from(cutoffs.batch).saturating_sub(*count);
                    if budget == 0 {
                        break;
                    }
                    let rows = budget.min(u64::from(D::SWEEP_STATEMENT_ROWS));
                    let done = self
                        .sweep_statement(&sql, step.cutoff, rows, free, kind.subject)
                        .await?;
                    let deleted = done.rows;
                    *count += deleted;
                    freed += done.grants;
                    if deleted < rows {
                        break;
                    }
                }
            }
        }
        swept.grants += freed;
        Ok(swept)
    }
}

/// The grant ids a sweep statement that `frees_grants` returned, once each.
pub(in crate::storage) fn swept_grant_ids<R: Row>(
    deleted: &[R],
    subject: &str,
) -> Result<BTreeSet<String>>
where
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> &'r str: ColumnIndex<R>,
{
    deleted
        .iter()
        .map(|row| row.try_get::<String, _>("grant_id"))
        .collect::<std::result::Result<BTreeSet<_>, _>>()
        .or_storage(subject)
}

/// How a sweep statement that `frees_grants` deletes the grants it left without a token.
struct GrantFreeing<'a> {
    /// [`delete_freed_grants`].
    delete: String,
    /// [`lock_dying_grants`], where other sweeps may run at once.
    lock: Option<String>,
    cutoffs: &'a SweepCutoffs,
}

/// What one of `sweep`'s statements deleted.
pub struct SweepDone {
    pub rows: u64,
    /// Grants that went with their last token.
    pub grants: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::postgres::PostgresDialect;
    use crate::storage::sqlite::SqliteDialect;

    fn every_sweep_step() -> Vec<SweepStep> {
        let cutoffs = SweepCutoffs {
            now: 0,
            code_cutoff: 0,
            grant_cutoff: 0,
            refresh_idle_cutoff: Some(0),
            rotated_cutoff: 0,
            client_grant_cutoff: 0,
            batch: 1,
        };
        sweep_plan(&cutoffs)
            .into_iter()
            .flat_map(|kind| kind.steps)
            .collect()
    }

    // Replicas sweep at once on PostgreSQL: a sweep statement without the lock would queue
    // on another replica's rows.
    #[test]
    fn every_postgres_sweep_skips_rows_another_sweep_holds() {
        for step in every_sweep_step() {
            let locked = step.sql(PostgresDialect::SWEEP_SKIP_LOCKED);
            assert_eq!(locked.matches("SKIP LOCKED)").count(), 1, "{locked}");
            let plain = step.sql(SqliteDialect::SWEEP_SKIP_LOCKED);
            assert!(!plain.contains("FOR UPDATE"), "{plain}");
        }
        let freed = delete_freed_grants(PostgresDialect::JSON_TEXTS, true);
        assert_eq!(freed.matches("SKIP LOCKED)").count(), 1, "{freed}");
        let plain = delete_freed_grants(SqliteDialect::JSON_TEXTS, false);
        assert!(!plain.contains("FOR UPDATE"), "{plain}");
        let logins = PostgresDialect::SWEEP_LOGIN_ATTEMPTS.unwrap_or_default();
        assert!(logins.contains("FOR UPDATE SKIP LOCKED"), "{logins}");
    }
}
