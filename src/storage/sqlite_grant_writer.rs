//! Group commit for new grants on SQLite.
//!
//! Every statement sqlx sends to SQLite crosses to the connection's own thread and back, and
//! under load those two thread wake-ups cost far more than the insert itself. New grants
//! (with their tokens) are therefore queued to one task that writes everything queued so far
//! in one transaction of three or four statements, each inserting all the batch's rows from
//! a JSON array. A caller hears back only after the commit, so a token is never handed out
//! for a grant that was not recorded.

use serde_json::{json, Value};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::sql::{self, ResultExt};
use super::{Grant, IssuedTokens, Result, StorageError};

/// The most grants one transaction writes; more wait for the next one.
const MAX_BATCH: usize = 256;

/// Inserts every row of a batch, each table's from a JSON array (`$3` may be empty).
macro_rules! insert_rows {
    () => {
        "INSERT INTO grants (id, client_id, connector_id, user_id, claims, scopes, nonce, \
         auth_time, connector_data, created_at, revoked_at) \
         SELECT value->>'id', value->>'client_id', value->>'connector_id', value->>'user_id', \
         value->>'claims', value->>'scopes', value->>'nonce', value->>'auth_time', \
         value->>'connector_data', value->>'created_at', value->>'revoked_at' \
         FROM json_each($1); \
         INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at) \
         SELECT value->>'token_hash', value->>'grant_id', value->>'client_id', \
         value->>'created_at', value->>'expires_at' FROM json_each($2); \
         INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, last_used_at, \
         expires_at, rotated_at, successor_hash) \
         SELECT value->>'token_hash', value->>'grant_id', value->>'client_id', \
         value->>'created_at', value->>'last_used_at', value->>'expires_at', \
         value->>'rotated_at', value->>'successor_hash' FROM json_each($3)"
    };
}

/// The whole batch as one transaction in one round trip to the connection's thread.
const WRITE_BATCH: &str = concat!("BEGIN IMMEDIATE; ", insert_rows!(), "; COMMIT");
/// One grant's rows and the commit of a transaction begun before (a code redemption's).
const INSERT_AND_COMMIT: &str = concat!(insert_rows!(), "; COMMIT");

/// The rows of one grant, ready to insert.
struct Rows {
    grant: Value,
    access: Value,
    refresh: Option<Value>,
}

impl Rows {
    fn new(grant: &Grant, tokens: &IssuedTokens) -> Result<Self> {
        let json = sql::GrantJson::new(grant)?;
        let access = &tokens.access;
        Ok(Self {
            grant: json!({
                "id": grant.id,
                "client_id": grant.client_id,
                "connector_id": grant.connector_id,
                "user_id": grant.claims.user_id,
                "claims": json.claims,
                "scopes": json.scopes,
                "nonce": grant.nonce,
                "auth_time": grant.auth_time,
                "connector_data": grant.connector_data,
                "created_at": grant.created_at,
                "revoked_at": grant.revoked_at,
            }),
            access: json!({
                "token_hash": access.token_hash,
                "grant_id": access.grant_id,
                "client_id": access.client_id,
                "created_at": access.created_at,
                "expires_at": access.expires_at,
            }),
            refresh: tokens.refresh.as_ref().map(|r| {
                json!({
                    "token_hash": r.token_hash,
                    "grant_id": r.grant_id,
                    "client_id": r.client_id,
                    "created_at": r.created_at,
                    "last_used_at": r.last_used_at,
                    "expires_at": r.expires_at,
                    "rotated_at": r.rotated_at,
                    "successor_hash": r.successor_hash,
                })
            }),
        })
    }
}

struct Pending {
    rows: Rows,
    written: oneshot::Sender<Result<()>>,
}

/// The queue in front of the writing task. The task ends when the queue is dropped.
pub(super) struct GrantWriter {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GrantWriter {
    /// `own`: options for a connection of the writer's own (a file database). Without it
    /// (an in-memory database, whose only connection is the pool's) each batch borrows one.
    pub(super) fn start(pool: SqlitePool, own: Option<SqliteConnectOptions>) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(Writer::new(pool, own), pending));
        Self { queue }
    }

    /// Records a grant and its tokens; returns once they are committed.
    pub(super) async fn issue(&self, grant: &Grant, tokens: &IssuedTokens) -> Result<()> {
        let (written, outcome) = oneshot::channel();
        let rows = Rows::new(grant, tokens)?;
        self.queue
            .send(Pending { rows, written })
            .map_err(|_| StorageError::Unavailable("the SQLite grant writer has stopped".into()))?;
        outcome.await.map_err(|_| {
            StorageError::Unavailable("the SQLite grant writer stopped before the commit".into())
        })?
    }
}

async fn write_batches(mut writer: Writer, mut pending: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = pending.recv().await {
        // Requests parsed in the same wake-up as this one are about to queue theirs: let
        // them, so that one commit covers them all.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let rows: Vec<&Rows> = batch.iter().map(|p| &p.rows).collect();
        match writer.write(&rows).await {
            Ok(()) => {
                for p in batch {
                    let _ = p.written.send(Ok(()));
                }
            }
            Err(err) if batch.len() == 1 => {
                if let Some(p) = batch.pop() {
                    let _ = p.written.send(Err(err));
                }
            }
            // One grant's failure (say, a constraint) must not fail the others: each is
            // written again on its own and gets its own answer.
            Err(_) => {
                for p in batch {
                    let outcome = writer.write(&[&p.rows]).await;
                    let _ = p.written.send(outcome);
                }
            }
        }
    }
}

/// Where batches are written. A connection of its own keeps its page cache: SQLite empties
/// a connection's cache whenever another connection has written since its last
/// transaction, and pool connections take turns.
struct Writer {
    pool: SqlitePool,
    own: Option<(SqliteConnectOptions, Option<SqliteConnection>)>,
}

impl Writer {
    fn new(pool: SqlitePool, own: Option<SqliteConnectOptions>) -> Self {
        Self {
            pool,
            own: own.map(|options| (options, None)),
        }
    }

    async fn write(&mut self, batch: &[&Rows]) -> Result<()> {
        match &mut self.own {
            None => {
                let mut conn = self.pool.acquire().await.or_storage("write connection")?;
                let (written, usable) = write(&mut conn, batch).await;
                if !usable {
                    drop(conn.detach());
                }
                written
            }
            Some((options, own)) => {
                let conn = match own {
                    Some(conn) => conn,
                    None => own.insert(
                        SqliteConnection::connect_with(options)
                            .await
                            .or_storage("write connection")?,
                    ),
                };
                let (written, usable) = write(conn, batch).await;
                if !usable {
                    // Dropping closes it; the next batch opens another.
                    *own = None;
                }
                written
            }
        }
    }
}

/// Writes one batch in one transaction; also says whether the connection may be used again
/// (it may not when a failed batch could not be rolled back).
async fn write(conn: &mut SqliteConnection, batch: &[&Rows]) -> (Result<()>, bool) {
    let written = execute(conn, WRITE_BATCH, batch).await;
    // Whichever statement failed, none of the batch may stay, and the connection must not
    // be used again inside a transaction: roll back, or give it up.
    let usable = written.is_ok() || sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok();
    (written, usable)
}

/// Inserts a grant and its tokens and commits the transaction the caller began on `conn`,
/// in one round trip. On an error the transaction is still open: the caller rolls it back.
pub(super) async fn insert_and_commit(
    conn: &mut SqliteConnection,
    grant: &Grant,
    tokens: &IssuedTokens,
) -> Result<()> {
    let rows = Rows::new(grant, tokens)?;
    execute(conn, INSERT_AND_COMMIT, &[&rows]).await
}

async fn execute(conn: &mut SqliteConnection, query: &'static str, batch: &[&Rows]) -> Result<()> {
    // A JSON array of the rows; `Value`'s Display cannot fail.
    let column = |rows: Vec<&Value>| {
        let items: Vec<String> = rows.iter().map(|r| r.to_string()).collect();
        format!("[{}]", items.join(","))
    };
    let grants = column(batch.iter().map(|r| &r.grant).collect());
    let access = column(batch.iter().map(|r| &r.access).collect());
    let refresh: Vec<&Value> = batch.iter().filter_map(|r| r.refresh.as_ref()).collect();
    sqlx::query(query)
        .bind(grants)
        .bind(access)
        .bind(column(refresh))
        .execute(&mut *conn)
        .await
        .map(drop)
        .or_storage("grant")
}
