//! Group commit for SQLite's busiest writes: new grants and refresh-token rotations, and the
//! read of a refresh token that comes before its rotation.
//!
//! Every statement sqlx sends to SQLite crosses to the connection's own thread and back, and
//! under load those two thread wake-ups cost far more than the writes themselves, while the
//! database's one write lock is held across them. Grants (with their tokens) and rotations
//! are therefore queued to one task that settles everything queued so far in one transaction
//! of two round trips: `BEGIN IMMEDIATE` with one read of every rotating token's state, then
//! every write of the batch (each table's rows from a JSON array) with `COMMIT`. A caller
//! hears back only after the commit, so a token is never handed out for a write that was not
//! recorded.
//!
//! A refresh token's first read (before the connector is asked about the user) joins the
//! next batch too: on the writer's connection it finds the pages the batches keep in its
//! cache, where a pool connection, whose cache every commit of the writer's empties, reads
//! them from the file again, and many reads share one round trip.
//!
//! Rotations are decided in the transaction, from what it read with the write lock held. Two
//! uses of one token, or of one grant, in the same batch would each be decided without the
//! other's writes, so the later one waits for the next batch.
//!
//! Housekeeping's deletions queue here too, one bounded statement per job, each in a
//! transaction of its own between batches: a sweep of a large backlog then holds up a rotation
//! or a grant for at most one statement instead of making it poll the lock against the sweep.
//! Batches come first: a sweep statement waits until the writer has had twice its time for
//! them.
//!
//! Copying the WAL into the database file (a checkpoint) is kept out of the writer's commits,
//! where SQLite would do it once the WAL passes 1,000 pages, holding up every caller of the
//! batch. A task beside the writer copies the bulk on a pool connection after commits; the
//! writer, after answering a batch and at most every [`CHECKPOINT_PAUSE`], copies what is
//! left, so that its next write can start the WAL over from the beginning (a WAL that is
//! still being copied from keeps growing).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteRow};
use sqlx::{Connection, Executor, FromRow, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::sql::{
    self, access_json, refresh_json, IntoModel, JsonArray, ResultExt, Rows, SweepDone,
};
use super::sqlite::poll_lock_promptly;
use super::{
    Grant, IssuedTokens, RefreshOutcome, RefreshToken, Result, Rotation, StorageError, UnixTime,
};

/// The most requests one transaction settles; more wait for the next one.
const MAX_BATCH: usize = 256;
/// The least time between two checkpoints; the WAL grows by what is committed meanwhile.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(50);

/// Inserts every row of a batch, each table's from a JSON array (any may be empty). Each row
/// is read once from `json_each` in a subquery that `OFFSET 0` keeps SQLite from flattening
/// into the `SELECT`: flattened, every `v->>` below would have `json_each` turn the row back
/// into text again (eleven times per grant), which cost more than the inserts.
macro_rules! insert_rows {
    () => {
        "INSERT INTO grants (id, client_id, connector_id, user_id, claims, scopes, nonce, \
         auth_time, connector_data, created_at, revoked_at) \
         SELECT v->>'id', v->>'client_id', v->>'connector_id', v->>'user_id', \
         v->>'claims', v->>'scopes', v->>'nonce', v->>'auth_time', \
         v->>'connector_data', v->>'created_at', v->>'revoked_at' \
         FROM (SELECT value AS v FROM json_each($1) LIMIT -1 OFFSET 0); \
         INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at, \
         scopes) \
         SELECT v->>'token_hash', v->>'grant_id', v->>'client_id', \
         v->>'created_at', v->>'expires_at', v->>'scopes' \
         FROM (SELECT value AS v FROM json_each($2) LIMIT -1 OFFSET 0); \
         INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, last_used_at, \
         expires_at, rotated_at, successor_hash) \
         SELECT v->>'token_hash', v->>'grant_id', v->>'client_id', \
         v->>'created_at', v->>'last_used_at', v->>'expires_at', \
         v->>'rotated_at', v->>'successor_hash' \
         FROM (SELECT value AS v FROM json_each($3) LIMIT -1 OFFSET 0)"
    };
}

/// What rotations change besides inserting rows: old tokens marked rotated ($4) or, with
/// rotation disabled, only touched ($5); grants given the connector's current identity ($6);
/// families revoked after a replay ($7). Each `UPDATE` names the rows it changed, one per
/// array element when all went as decided.
macro_rules! update_rows {
    () => {
        "UPDATE refresh_tokens SET rotated_at = j.value->>'now', last_used_at = j.value->>'now', \
         successor_hash = j.value->>'successor_hash', \
         successor_sealed = unhex(j.value->>'successor_sealed') \
         FROM json_each($4) AS j \
         WHERE refresh_tokens.token_hash = j.value->>'old_hash' \
         AND refresh_tokens.rotated_at IS NULL RETURNING 'rotated'; \
         UPDATE refresh_tokens SET last_used_at = j.value->>'now' FROM json_each($5) AS j \
         WHERE refresh_tokens.token_hash = j.value->>'old_hash' \
         AND refresh_tokens.rotated_at IS NULL RETURNING 'touched'; \
         UPDATE grants SET user_id = j.value->>'user_id', claims = j.value->>'claims', \
         connector_data = j.value->>'connector_data' FROM json_each($6) AS j \
         WHERE grants.id = j.value->>'id' AND grants.revoked_at IS NULL RETURNING 'identity'; \
         UPDATE grants SET revoked_at = j.value->>'now' FROM json_each($7) AS j \
         WHERE grants.id = j.value->>'id' AND grants.revoked_at IS NULL RETURNING 'revoked'"
    };
}

/// A batch without rotations: nothing to read first, so one round trip in all.
const BEGIN_WRITE_AND_COMMIT: &str = concat!(
    "BEGIN IMMEDIATE; ",
    update_rows!(),
    "; ",
    insert_rows!(),
    "; COMMIT"
);
/// A batch's writes after `sql::BEGIN_AND_READ_REFRESH_TOKENS` began its transaction.
const WRITE_AND_COMMIT: &str = concat!(update_rows!(), "; ", insert_rows!(), "; COMMIT");
/// One grant's rows and the commit of a transaction begun before (a code redemption's).
const INSERT_AND_COMMIT: &str = concat!(insert_rows!(), "; COMMIT");

/// Everything a batch writes, as the JSON arrays its statements read.
#[derive(Default)]
struct Writes {
    grants: JsonArray,
    access: JsonArray,
    refresh: JsonArray,
    rotated: JsonArray,
    touched: JsonArray,
    identities: JsonArray,
    revoked: JsonArray,
}

impl Writes {
    fn grant(&mut self, rows: &Rows) {
        self.grants.push_text(&rows.grant);
        self.access.push_text(&rows.access);
        if let Some(refresh) = &rows.refresh {
            self.refresh.push_text(refresh);
        }
    }

    /// The family's current token moves on (or, rotation disabled, is only touched), the
    /// grant takes the connector's current identity, and the access token is stored.
    fn rotate(&mut self, rotation: &Rotation, grant_id: &str, now: UnixTime) -> Result<()> {
        let claims = sql::to_json(&rotation.claims, "grant claims")?;
        let access = access_json(&rotation.access)?;
        match &rotation.successor {
            Some(successor) => {
                self.rotated.push(&json!({
                    "old_hash": rotation.old_hash,
                    "now": now,
                    "successor_hash": successor.token_hash,
                    "successor_sealed": rotation.successor_sealed.as_ref().map(hex::encode),
                }));
                self.refresh.push_text(&refresh_json(successor)?);
            }
            None => self
                .touched
                .push(&json!({"old_hash": rotation.old_hash, "now": now})),
        }
        self.identities.push(&json!({
            "id": grant_id,
            "user_id": rotation.claims.user_id,
            "claims": claims,
            "connector_data": rotation.connector_data,
        }));
        self.access.push_text(&access);
        Ok(())
    }

    async fn commit(&self, conn: &mut SqliteConnection, query: &'static str) -> Result<()> {
        let changed: Vec<String> = sqlx::query_scalar(query)
            .bind(self.grants.text())
            .bind(self.access.text())
            .bind(self.refresh.text())
            .bind(self.rotated.text())
            .bind(self.touched.text())
            .bind(self.identities.text())
            .bind(self.revoked.text())
            .fetch_all(&mut *conn)
            .await
            .or_storage("batched write")?;
        // Each update changes exactly one row per element of its array: the write lock is
        // held from the read on, so nothing can have moved in between. (The inserts insert
        // every row or fail.)
        for (what, rows) in [
            ("rotated", &self.rotated),
            ("touched", &self.touched),
            ("identity", &self.identities),
            ("revoked", &self.revoked),
        ] {
            let count = changed.iter().filter(|c| *c == what).count();
            if count != rows.len() {
                // Committed, but not as decided: hand out nothing.
                return Err(StorageError::Unavailable(format!(
                    "a batched write changed {count} rows of {what} instead of {}",
                    rows.len()
                )));
            }
        }
        Ok(())
    }
}

enum Request {
    Grant(Rows),
    Rotate(Box<Rotation>, UnixTime),
    /// A refresh token's hash.
    Read(String),
    /// One housekeeping statement, always settled alone.
    Sweep(SweepStatement),
}

/// A `DELETE` that takes the cutoff as `$1` and the most rows it deletes as `$2`.
struct SweepStatement {
    subject: &'static str,
    /// `BEGIN IMMEDIATE; <the delete>; COMMIT`, one round trip.
    transaction: String,
    /// The delete alone, where it returns the grant ids of the tokens it deleted.
    delete: String,
    /// Deletes the grants among the JSON array of ids `$1` that have no token left.
    frees: Option<String>,
    cutoff: UnixTime,
    rows: i64,
}

/// What a committed batch did for one request.
// One per request, matched at once; boxing the outcome would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Settled {
    Granted,
    Rotated(RefreshOutcome),
    Read(Option<(RefreshToken, Grant)>),
    Swept(SweepDone),
    /// This request alone could not be written (its stored grant did not parse).
    Failed(StorageError),
    /// Another request of the batch uses the same token or grant: next batch.
    Deferred,
}

#[allow(clippy::large_enum_variant)]
enum Done {
    Granted,
    Rotated(RefreshOutcome),
    Read(Option<(RefreshToken, Grant)>),
    Swept(SweepDone),
}

struct Job {
    request: Request,
    reply: oneshot::Sender<Result<Done>>,
}

impl Job {
    /// Answers the caller, or hands the job back when it waits for the next batch.
    fn settle(self, settled: Settled) -> Option<Job> {
        let answer = match settled {
            Settled::Deferred => return Some(self),
            Settled::Granted => Ok(Done::Granted),
            Settled::Rotated(outcome) => Ok(Done::Rotated(outcome)),
            Settled::Read(found) => Ok(Done::Read(found)),
            Settled::Swept(done) => Ok(Done::Swept(done)),
            Settled::Failed(err) => Err(err),
        };
        // A caller that gave up (a client hanging up) no longer listens.
        let _ = self.reply.send(answer);
        None
    }

    fn fail(self, err: StorageError) {
        let _ = self.reply.send(Err(err));
    }
}

/// The queue in front of the writing task. The task ends when the queue is dropped.
pub(super) struct BatchWriter {
    queue: mpsc::UnboundedSender<Job>,
}

impl BatchWriter {
    /// `own`: options for a connection of the writer's own (a file database). Without it
    /// (an in-memory database, whose only connection is the pool's) each batch borrows one.
    /// The writer's own connection should be opened with `wal_autocheckpoint=0`.
    pub(super) fn start(pool: SqlitePool, own: Option<SqliteConnectOptions>) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(Writer::new(pool, own), jobs));
        Self { queue }
    }

    /// Records a grant and its tokens; returns once they are committed.
    pub(super) async fn issue(&self, grant: &Grant, tokens: &IssuedTokens) -> Result<()> {
        let rows = Rows::new(grant, tokens)?;
        match self.submit(Request::Grant(rows)).await? {
            Done::Granted => Ok(()),
            Done::Rotated(_) | Done::Read(_) | Done::Swept(_) => Err(mixed_up()),
        }
    }

    /// Uses a refresh token; returns once what the use decided is committed.
    pub(super) async fn rotate(
        &self,
        rotation: &Rotation,
        now: UnixTime,
    ) -> Result<RefreshOutcome> {
        match self
            .submit(Request::Rotate(Box::new(rotation.clone()), now))
            .await?
        {
            Done::Rotated(outcome) => Ok(outcome),
            Done::Granted | Done::Read(_) | Done::Swept(_) => Err(mixed_up()),
        }
    }

    /// Reads a refresh token and its grant, as of the last batch committed.
    pub(super) async fn read_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<(RefreshToken, Grant)>> {
        match self.submit(Request::Read(token_hash.to_string())).await? {
            Done::Read(found) => Ok(found),
            Done::Granted | Done::Rotated(_) | Done::Swept(_) => Err(mixed_up()),
        }
    }

    /// Runs one housekeeping `DELETE` (`$1` the cutoff, `$2` the row limit) in a transaction
    /// of its own between two batches; returns the rows it deleted, once committed.
    pub(super) async fn sweep(
        &self,
        subject: &'static str,
        statement: &str,
        cutoff: UnixTime,
        rows: i64,
        frees: Option<&str>,
    ) -> Result<SweepDone> {
        let sweep = SweepStatement {
            subject,
            transaction: format!("BEGIN IMMEDIATE; {statement}; COMMIT"),
            delete: statement.to_string(),
            frees: frees.map(str::to_string),
            cutoff,
            rows,
        };
        match self.submit(Request::Sweep(sweep)).await? {
            Done::Swept(done) => Ok(done),
            Done::Granted | Done::Rotated(_) | Done::Read(_) => Err(mixed_up()),
        }
    }

    async fn submit(&self, request: Request) -> Result<Done> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send(Job { request, reply })
            .map_err(|_| StorageError::Unavailable("the SQLite writer has stopped".into()))?;
        done.await.map_err(|_| {
            StorageError::Unavailable("the SQLite writer stopped before answering".into())
        })?
    }
}

fn mixed_up() -> StorageError {
    StorageError::Unavailable("the SQLite writer answered another kind of request".into())
}

async fn write_batches(mut writer: Writer, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut deferred: Vec<Job> = Vec::new();
    let mut sweeps: VecDeque<Job> = VecDeque::new();
    // The earliest start of the next sweep statement (see [`sql::SWEEP_GAP`]).
    let mut sweep_turn = Instant::now();
    loop {
        // Deferred jobs go first, so each batch settles at least its first job.
        let mut batch = std::mem::take(&mut deferred);
        if batch.is_empty() {
            let next = if sweeps.is_empty() {
                jobs.recv().await.map_or(Next::Closed, Next::Job)
            } else if Instant::now() >= sweep_turn {
                Next::Sweep
            } else {
                tokio::select! {
                    job = jobs.recv() => job.map_or(Next::Sweep, Next::Job),
                    () = tokio::time::sleep_until(sweep_turn.into()) => Next::Sweep,
                }
            };
            match next {
                Next::Closed => return,
                Next::Sweep => {
                    if let Some(job) = sweeps.pop_front() {
                        let started = Instant::now();
                        deferred = writer.settle(vec![job]).await;
                        sweep_turn = Instant::now() + started.elapsed() * sql::SWEEP_GAP;
                        writer.checkpoint_if_due().await;
                    }
                    continue;
                }
                Next::Job(job) if matches!(job.request, Request::Sweep(_)) => {
                    sweeps.push_back(job);
                    continue;
                }
                Next::Job(job) => {
                    // Requests parsed in the same wake-up as this one are about to queue
                    // theirs: let them, so that one commit covers them all.
                    tokio::task::yield_now().await;
                    batch.push(job);
                }
            }
        }
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(next) if matches!(next.request, Request::Sweep(_)) => sweeps.push_back(next),
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        deferred = writer.settle(batch).await;
        writer.checkpoint_if_due().await;
    }
}

/// What the writer does next when it has no deferred jobs.
enum Next {
    Job(Job),
    /// A sweep statement's turn has come.
    Sweep,
    /// The queue was dropped.
    Closed,
}

/// Where batches are written. A connection of its own keeps its page cache: SQLite empties
/// a connection's cache whenever another connection has written since its last
/// transaction, and pool connections take turns.
struct Writer {
    pool: SqlitePool,
    own: Option<OwnConnection>,
}

struct OwnConnection {
    options: SqliteConnectOptions,
    conn: Option<SqliteConnection>,
    /// Asks the task beside the writer to copy; a request already waiting covers this one.
    copy_behind: mpsc::Sender<()>,
    /// Something was committed since the last checkpoint.
    dirty: bool,
    last_checkpoint: Instant,
}

impl Writer {
    fn new(pool: SqlitePool, own: Option<SqliteConnectOptions>) -> Self {
        let own = own.map(|options| {
            let (copy_behind, requests) = mpsc::channel(1);
            tokio::spawn(checkpoint_when_asked(pool.clone(), requests));
            OwnConnection {
                options,
                conn: None,
                copy_behind,
                dirty: false,
                last_checkpoint: Instant::now(),
            }
        });
        Self { pool, own }
    }

    /// Copies the WAL into the database file when the last copy is [`CHECKPOINT_PAUSE`] old.
    /// The next write then starts the WAL over from its beginning, so the WAL stays about as
    /// large as what is committed in that time.
    async fn checkpoint_if_due(&mut self) {
        let Some(own) = &mut self.own else {
            return;
        };
        let Some(conn) = own.conn.as_mut() else {
            return;
        };
        if !own.dirty || own.last_checkpoint.elapsed() < CHECKPOINT_PAUSE {
            return;
        }
        checkpoint(&mut *conn).await;
        own.dirty = false;
        own.last_checkpoint = Instant::now();
    }

    /// Settles a batch; returns the jobs deferred to the next one.
    async fn settle(&mut self, batch: Vec<Job>) -> Vec<Job> {
        let requests: Vec<&Request> = batch.iter().map(|j| &j.request).collect();
        match self.write(&requests).await {
            Ok(settled) => batch
                .into_iter()
                .zip(settled)
                .filter_map(|(job, settled)| job.settle(settled))
                .collect(),
            // Nobody's write can go through now; each caller hears why.
            Err(StorageError::Unavailable(why)) if batch.len() > 1 => {
                for job in batch {
                    job.fail(StorageError::Unavailable(why.clone()));
                }
                Vec::new()
            }
            Err(err) if batch.len() == 1 => {
                if let Some(job) = batch.into_iter().next() {
                    job.fail(err);
                }
                Vec::new()
            }
            // One request's failure (say, a constraint) must not fail the others: each is
            // written again on its own and gets its own answer.
            Err(_) => {
                let mut deferred = Vec::new();
                for job in batch {
                    match self.write(&[&job.request]).await {
                        Ok(mut settled) => match settled.pop() {
                            Some(settled) => deferred.extend(job.settle(settled)),
                            None => job.fail(mixed_up()),
                        },
                        Err(err) => job.fail(err),
                    }
                }
                deferred
            }
        }
    }

    async fn write(&mut self, requests: &[&Request]) -> Result<Vec<Settled>> {
        match &mut self.own {
            None => {
                let mut conn = self.pool.acquire().await.or_storage("write connection")?;
                let (written, usable) = write(&mut conn, requests).await;
                if !usable {
                    drop(conn.detach());
                }
                written
            }
            Some(own) => {
                let conn = match &mut own.conn {
                    Some(conn) => conn,
                    None => {
                        let mut conn = SqliteConnection::connect_with(&own.options)
                            .await
                            .or_storage("write connection")?;
                        poll_lock_promptly(&mut conn)
                            .await
                            .or_storage("write connection")?;
                        own.conn.insert(conn)
                    }
                };
                let (written, usable) = write(conn, requests).await;
                if !usable {
                    // Dropping closes it; the next batch opens another.
                    own.conn = None;
                }
                // A batch of reads alone committed nothing: nothing to copy.
                let wrote = requests.iter().any(|r| !matches!(r, Request::Read(_)));
                if wrote && written.is_ok() {
                    own.dirty = true;
                    let _ = own.copy_behind.try_send(());
                }
                written
            }
        }
    }
}

/// Checkpoints after the writer's commits, on a pool connection, until the writer is gone.
async fn checkpoint_when_asked(pool: SqlitePool, mut requests: mpsc::Receiver<()>) {
    while requests.recv().await.is_some() {
        match pool.acquire().await {
            Ok(mut conn) => checkpoint(&mut conn).await,
            Err(e) => tracing::warn!(error = %e, "no connection for a SQLite WAL checkpoint"),
        }
        tokio::time::sleep(CHECKPOINT_PAUSE / 2).await;
    }
}

/// PASSIVE: copies what no reader still needs, and waits for nobody.
async fn checkpoint(conn: &mut SqliteConnection) {
    let copied = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(conn)
        .await;
    match copied {
        // Another connection is copying already (SQLITE_BUSY): nothing to do.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("5") => {}
        Err(e) => tracing::warn!(error = %e, "SQLite WAL checkpoint failed"),
        Ok(_) => {}
    }
}

/// Writes one batch in one transaction; also says whether the connection may be used again
/// (it may not when a failed batch could not be rolled back).
async fn write(conn: &mut SqliteConnection, requests: &[&Request]) -> (Result<Vec<Settled>>, bool) {
    let written = decide_and_write(conn, requests).await;
    // Whichever statement failed, none of the batch may stay, and the connection must not
    // be used again inside a transaction: roll back, or give it up.
    let usable = written.is_ok() || sqlx::query("ROLLBACK").execute(&mut *conn).await.is_ok();
    (written, usable)
}

async fn decide_and_write(
    conn: &mut SqliteConnection,
    requests: &[&Request],
) -> Result<Vec<Settled>> {
    if let [Request::Sweep(sweep)] = requests {
        return Ok(vec![Settled::Swept(delete(conn, sweep).await?)]);
    }
    let mut reading: Vec<&str> = Vec::new();
    let mut writing = false;
    for request in requests {
        match request {
            Request::Rotate(rotation, _) => {
                reading.push(&rotation.old_hash);
                writing = true;
            }
            Request::Read(token_hash) => reading.push(token_hash),
            Request::Grant(_) => writing = true,
            Request::Sweep(_) => {}
        }
    }
    let began = writing && !reading.is_empty();
    let mut rows: HashMap<String, SqliteRow> = HashMap::new();
    if !reading.is_empty() {
        // A JSON array of strings; serialising `&str`s cannot fail.
        let hashes = Value::from(reading).to_string();
        let query = if began {
            sql::BEGIN_AND_READ_REFRESH_TOKENS
        } else {
            sql::READ_REFRESH_TOKENS
        };
        for row in sqlx::query(query)
            .bind(hashes)
            .fetch_all(&mut *conn)
            .await
            .or_storage("refresh token")?
        {
            let token_hash: String = row.try_get("token_hash").or_storage("refresh token")?;
            rows.insert(token_hash, row);
        }
    }
    let mut writes = Writes::default();
    let mut tokens = HashSet::new();
    let mut grants = HashSet::new();
    let settled = requests
        .iter()
        .map(|request| match request {
            Request::Grant(rows) => {
                writes.grant(rows);
                Settled::Granted
            }
            Request::Rotate(rotation, now) => decide(
                rotation,
                *now,
                &rows,
                (&mut tokens, &mut grants),
                &mut writes,
            ),
            Request::Read(token_hash) => match rows.get(token_hash).map(read) {
                None => Settled::Read(None),
                Some(Ok(found)) => Settled::Read(Some(found)),
                Some(Err(err)) => Settled::Failed(err),
            },
            // `write_batches` settles each sweep statement alone.
            Request::Sweep(sweep) => Settled::Failed(StorageError::Unavailable(format!(
                "a sweep of {} was batched with other writes",
                sweep.subject
            ))),
        })
        .collect();
    if writing {
        let query = if began {
            WRITE_AND_COMMIT
        } else {
            BEGIN_WRITE_AND_COMMIT
        };
        writes.commit(conn, query).await?;
    }
    Ok(settled)
}

/// Runs a sweep statement in its own transaction; returns what it deleted.
async fn delete(conn: &mut SqliteConnection, sweep: &SweepStatement) -> Result<SweepDone> {
    let Some(frees) = &sweep.frees else {
        return Ok(SweepDone {
            rows: delete_alone(conn, sweep).await?,
            grants: 0,
        });
    };
    conn.execute("BEGIN IMMEDIATE")
        .await
        .or_storage(sweep.subject)?;
    // On an error `write` rolls the transaction back.
    let done = delete_and_free(conn, sweep, frees).await?;
    conn.execute("COMMIT").await.or_storage(sweep.subject)?;
    Ok(done)
}

/// The tokens, then the grants they left without a token, inside the caller's transaction.
async fn delete_and_free(
    conn: &mut SqliteConnection,
    sweep: &SweepStatement,
    frees: &str,
) -> Result<SweepDone> {
    let deleted = sqlx::query(&sweep.delete)
        .bind(sweep.cutoff)
        .bind(sweep.rows)
        .fetch_all(&mut *conn)
        .await
        .or_storage(sweep.subject)?;
    let grant_ids = sql::swept_grant_ids(&deleted, sweep.subject)?;
    let mut grants = 0;
    if !grant_ids.is_empty() {
        grants = sqlx::query(frees)
            .bind(sql::to_json(&grant_ids, "swept grant ids")?)
            .execute(&mut *conn)
            .await
            .or_storage("grants without tokens")?
            .rows_affected();
    }
    Ok(SweepDone {
        rows: deleted.len() as u64,
        grants,
    })
}

/// Runs a sweep statement that frees no grants as one round trip; returns the rows it deleted.
async fn delete_alone(conn: &mut SqliteConnection, sweep: &SweepStatement) -> Result<u64> {
    let query = sqlx::query(&sweep.transaction)
        .bind(sweep.cutoff)
        .bind(sweep.rows);
    // SQLite reports the last `DELETE`'s count again for `BEGIN` and `COMMIT`: only the
    // second statement's result is the sweep's.
    let results: Vec<u64> = conn
        .fetch_many(query)
        .try_filter_map(|step| async move { Ok(step.left().map(|done| done.rows_affected())) })
        .try_collect()
        .await
        .or_storage(sweep.subject)?;
    match results[..] {
        [_, deleted, _] => Ok(deleted),
        _ => Err(StorageError::Unavailable(format!(
            "a sweep of {} ran {} statements instead of 3",
            sweep.subject,
            results.len()
        ))),
    }
}

/// A refresh token and its grant, from a row of `sql::READ_REFRESH_TOKENS`.
fn read(row: &SqliteRow) -> Result<(RefreshToken, Grant)> {
    sql::RefreshTokenWithGrantRow::from_row(row)
        .or_storage("refresh token")?
        .into_model()
}

/// Decides one use of a refresh token from the state read for the batch, adding its writes.
fn decide(
    rotation: &Rotation,
    now: UnixTime,
    rows: &HashMap<String, SqliteRow>,
    (tokens, grants): (&mut HashSet<String>, &mut HashSet<String>),
    writes: &mut Writes,
) -> Settled {
    if !tokens.insert(rotation.old_hash.clone()) {
        return Settled::Deferred;
    }
    // The grant is a foreign key of the token: no grant, no token.
    let Some(row) = rows.get(&rotation.old_hash) else {
        return Settled::Rotated(RefreshOutcome::NotFound);
    };
    let state = match sql::RefreshTokenStateWithGrant::from_row(row).or_storage("refresh token") {
        Ok(state) => state,
        Err(err) => return Settled::Failed(err),
    };
    let grant = match state.grant.into_model() {
        Ok(grant) => grant,
        Err(err) => return Settled::Failed(err),
    };
    if !grants.insert(grant.id.clone()) {
        return Settled::Deferred;
    }
    let outcome = match sql::decide_refresh(state.state, &grant, rotation, now) {
        sql::RefreshDecision::Revoked => RefreshOutcome::Revoked,
        sql::RefreshDecision::Expired => RefreshOutcome::Expired,
        sql::RefreshDecision::Current => {
            if let Err(err) = writes.rotate(rotation, &grant.id, now) {
                return Settled::Failed(err);
            }
            RefreshOutcome::Rotated(Grant {
                claims: rotation.claims.clone(),
                connector_data: rotation.connector_data.clone(),
                ..grant
            })
        }
        sql::RefreshDecision::Reuse(successor_sealed) => {
            match access_json(&rotation.access) {
                Ok(access) => writes.access.push_text(&access),
                Err(err) => return Settled::Failed(err),
            }
            RefreshOutcome::Reused {
                grant,
                successor_sealed,
            }
        }
        sql::RefreshDecision::Replay => {
            writes.revoked.push(&json!({"id": grant.id, "now": now}));
            RefreshOutcome::Replayed { grant_id: grant.id }
        }
    };
    Settled::Rotated(outcome)
}

/// Inserts a grant and its tokens and commits the transaction the caller began on `conn`,
/// in one round trip. On an error the transaction is still open: the caller rolls it back.
pub(super) async fn insert_and_commit(
    conn: &mut SqliteConnection,
    grant: &Grant,
    tokens: &IssuedTokens,
) -> Result<()> {
    let rows = Rows::new(grant, tokens)?;
    sqlx::query(INSERT_AND_COMMIT)
        .bind(JsonArray::of(Some(&rows.grant)).text())
        .bind(JsonArray::of(Some(&rows.access)).text())
        .bind(JsonArray::of(rows.refresh.as_ref()).text())
        .execute(&mut *conn)
        .await
        .map(drop)
        .or_storage("grant")
}
