//! SQLite's [`Dialect`]: opening files and memory, migrations, and the operations it makes
//! atomic (and fast) its own way, most of them through the batch writer (`sqlite_writer`);
//! everything else is the shared [`SqlStorage`].
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

use super::sql::{self, Dialect, IntoModel, ResultExt, SqlStorage};
use super::sqlite_writer::{insert_and_commit, BatchWriter};
use super::*;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection sleeps between two tries for a write lock another connection holds.
const BUSY_POLL: Duration = Duration::from_micros(500);
/// One writer at a time anyway; a few connections let reads proceed alongside it.
const FILE_POOL_SIZE: u32 = 4;
/// Rows per sweep statement: grants and rotations queue behind each one on the writer. With
/// 200, refreshes' p99 while a backlog was swept was four times the quiet figure (with 50,
/// a third more; the backlog takes a third longer to clear). See docs/performance.md.
const SWEEP_STATEMENT_ROWS: u32 = 50;
/// Bytes per page of a new database file.
const SQLITE_PAGE_SIZE: u32 = 1024;
/// Page cache per connection: negative means KiB (SQLite's `cache_size` convention).
const SQLITE_CACHE_KIB: &str = "-256";
/// The batch writer's connection's page cache (see `open`).
const WRITER_CACHE_KIB: &str = "-2048";

/// SQLite: what it does its own way (see the module's comment).
pub struct SqliteDialect {
    /// New grants, refresh rotations and refresh-token reads, settled in batches.
    writer: BatchWriter,
}

/// [`Storage`] on SQLite.
pub type SqliteStorage = SqlStorage<SqliteDialect>;

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
            .after_connect(|conn, _| Box::pin(poll_lock_promptly(conn)))
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
        // Its cache is larger: every grant and rotation inserts into indexes keyed by random
        // hashes, and with a million tokens such an index is five levels of 1 KiB pages, of
        // which 256 KiB held not even the upper three, so each insert read them from the
        // kernel again. The cache fills only as far as pages are read, and stops at this
        // (8 MiB cut no more CPU than 2 and added 11 MiB to the peak).
        Ok(Self::with_writer(
            pool,
            Some(
                options
                    .pragma("wal_autocheckpoint", "0")
                    .pragma("cache_size", WRITER_CACHE_KIB),
            ),
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
            .after_connect(|conn, _| Box::pin(poll_lock_promptly(conn)))
            .max_connections(1)
            .test_before_acquire(false)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(BUSY_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| StorageError::Open(format!("cannot open in-memory SQLite: {e}")))?;
        Ok(Self::with_writer(pool, None))
    }

    fn with_writer(pool: SqlitePool, writer: Option<SqliteConnectOptions>) -> Self {
        let writer = BatchWriter::start(pool.clone(), writer);
        Self::new(pool, SqliteDialect { writer })
    }
}

std::thread_local! {
    /// When this connection's thread (sqlx runs each SQLite connection on a thread of its
    /// own) began waiting for the write lock it is waiting for.
    static BUSY_SINCE: std::cell::Cell<Option<std::time::Instant>> = const {
        std::cell::Cell::new(None)
    };
}

/// SQLite's own busy handler sleeps 1, 2, 5, 10 and then up to 100 ms between tries, so a
/// writer that found the lock taken misses every short gap between another connection's
/// transactions (the batch writer's come one after another under load) and waits for a long
/// one. This one tries every [`BUSY_POLL`], for at most [`BUSY_TIMEOUT`] in all.
pub(super) async fn poll_lock_promptly(conn: &mut SqliteConnection) -> sqlx::Result<()> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is locked, so no statement runs on the connection meanwhile, and the
    // callback keeps no pointer (its state is its thread's).
    let rc = unsafe {
        libsqlite3_sys::sqlite3_busy_handler(
            handle.as_raw_handle().as_ptr(),
            Some(retry_soon),
            std::ptr::null_mut(),
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("cannot set the SQLite busy handler (error {rc})").into(),
        ))
    }
}

/// Called by SQLite on the connection's thread with the number of tries so far; nonzero
/// means try again.
extern "C" fn retry_soon(_: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    let now = std::time::Instant::now();
    let since = BUSY_SINCE.with(|since| {
        if tries == 0 {
            since.set(Some(now));
        }
        since.get().unwrap_or(now)
    });
    if now.duration_since(since) >= BUSY_TIMEOUT {
        return 0;
    }
    std::thread::sleep(BUSY_POLL);
    1
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

type Sql = SqlStorage<SqliteDialect>;

#[async_trait]
impl Dialect for SqliteDialect {
    type Db = Sqlite;

    const KIND: &'static str = "sqlite";
    /// About a millisecond of the write lock per statement, even on a large table.
    const SWEEP_STATEMENT_ROWS: u32 = SWEEP_STATEMENT_ROWS;
    const JSON_TEXTS: &'static str = "json_each($1)";

    /// Through the batch writer: grants and rotations then wait for one statement in a queue
    /// instead of polling SQLite's busy handler against a sweep that takes the lock again as
    /// soon as it let it go.
    async fn sweep_statement(
        &self,
        subject: &'static str,
        statement: &str,
        cutoff: UnixTime,
        rows: i64,
        frees: Option<&str>,
    ) -> Option<Result<sql::SweepDone>> {
        Some(
            self.writer
                .sweep(subject, statement, cutoff, rows, frees)
                .await,
        )
    }

    async fn migrate(pool: &SqlitePool) -> Result<()> {
        MIGRATOR
            .run(pool)
            .await
            .map_err(|e| StorageError::Migration(format!("sqlite: {e}")))
    }

    async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>> {
        pool.begin_with("BEGIN IMMEDIATE")
            .await
            .or_storage("write transaction")
    }

    /// `BEGIN IMMEDIATE` holds the write lock already: nothing to lock.
    fn device_request_for_poll() -> String {
        sql::select_device_request_by_device_code()
    }

    async fn redeem_auth_code(
        &self,
        pool: &SqlitePool,
        code_hash: &str,
        tokens: &IssuedTokens,
        now: UnixTime,
    ) -> Result<Redemption> {
        let mut tx = HandTx::start(pool).await?;
        let claimed = sqlx::query_as::<_, sql::AuthCodeRow>(sql::BEGIN_AND_CLAIM_AUTH_CODE)
            .bind(code_hash)
            .bind(now)
            .fetch_optional(tx.conn())
            .await
            .or_storage("authorization code")?;

        let Some(claimed) = claimed else {
            // Only a replay wrote something (its grant's revocation).
            let outcome = Sql::unclaimed_code(tx.conn(), code_hash, now).await?;
            if matches!(outcome, Redemption::Replayed { .. }) {
                tx.commit().await?;
            } else {
                tx.rollback().await?;
            }
            return Ok(outcome);
        };

        let mut grant = claimed.into_model()?.grant;
        grant.revoked_at = None;
        insert_and_commit(tx.conn(), &grant, tokens).await?;
        tx.committed();
        Ok(Redemption::Issued(grant))
    }

    async fn issue_grant(
        &self,
        _pool: &SqlitePool,
        grant: &Grant,
        tokens: &IssuedTokens,
    ) -> Result<()> {
        self.writer.issue(grant, tokens).await
    }

    async fn get_refresh_token(
        &self,
        _pool: &SqlitePool,
        token_hash: &str,
    ) -> Result<Option<(RefreshToken, Grant)>> {
        self.writer.read_refresh_token(token_hash).await
    }

    async fn rotate_refresh_token(
        &self,
        _pool: &SqlitePool,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<RefreshOutcome> {
        self.writer.rotate(rotation, now).await
    }
}
