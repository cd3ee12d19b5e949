//! Group insert for PostgreSQL's busiest write: a new grant with its tokens
//! (client_credentials, the token exchange, a password grant, the kubeconfig page's tokens).
//!
//! One grant alone is one statement, but a statement on a pooled connection is two round trips
//! (sqlx pings the connection when it goes back to the pool), and each is a wake-up of the
//! request's task and of the server's backend. Grants are therefore queued to one task that
//! inserts everything queued so far in one statement, each table's rows from a JSON array:
//! under load many grants share the two round trips; alone, a grant costs what it did.
//!
//! New grants never conflict with each other or with other replicas' (their ids and token
//! hashes are random), so a batch is all or nothing only as a guard: when it fails, each of
//! its grants is tried again alone, so that a fault fails only its own request. A caller is
//! answered only after the statement committed, so a token is never handed out for a grant
//! that was not recorded.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::sql::{self, JsonArray, Rows};
use super::{Grant, IssuedTokens, Result, StorageError};

/// The most grants one statement inserts; more wait for the next one.
const MAX_BATCH: usize = 64;

/// Inserts every row of a batch ($1 grants, $2 access tokens, $3 refresh tokens, each a JSON
/// array, which may be empty), in one statement: all rows or none. Returns how many rows of
/// each table it wrote.
const INSERT_ROWS: &str = "WITH g AS (INSERT INTO grants (id, client_id, connector_id, \
     user_id, claims, scopes, nonce, auth_time, connector_data, created_at, revoked_at) \
     SELECT id, client_id, connector_id, user_id, claims, scopes, nonce, auth_time, \
     connector_data, created_at, revoked_at FROM json_to_recordset($1::JSON) AS r(id TEXT, \
     client_id TEXT, connector_id TEXT, user_id TEXT, claims TEXT, scopes TEXT, nonce TEXT, \
     auth_time BIGINT, connector_data TEXT, created_at BIGINT, revoked_at BIGINT) \
     RETURNING 1), \
     a AS (INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at, \
     scopes) SELECT token_hash, grant_id, client_id, created_at, expires_at, scopes \
     FROM json_to_recordset($2::JSON) AS r(token_hash TEXT, grant_id TEXT, client_id TEXT, \
     created_at BIGINT, expires_at BIGINT, scopes TEXT) RETURNING 1), \
     f AS (INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, \
     last_used_at, expires_at, rotated_at, successor_hash) SELECT token_hash, grant_id, \
     client_id, created_at, last_used_at, expires_at, rotated_at, successor_hash \
     FROM json_to_recordset($3::JSON) AS r(token_hash TEXT, grant_id TEXT, client_id TEXT, \
     created_at BIGINT, last_used_at BIGINT, expires_at BIGINT, rotated_at BIGINT, \
     successor_hash TEXT) RETURNING 1) \
     SELECT (SELECT count(*) FROM g), (SELECT count(*) FROM a), (SELECT count(*) FROM f)";

struct Job {
    grant_id: String,
    rows: Rows,
    reply: oneshot::Sender<Result<()>>,
}

/// The queue of grants to insert; the task that inserts them stops when it is dropped.
pub(super) struct GrantQueue {
    queue: mpsc::UnboundedSender<Job>,
}

impl GrantQueue {
    /// Starts the inserting task (on the current Tokio runtime).
    pub(super) fn start(pool: PgPool) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(insert_batches(pool, jobs));
        Self { queue }
    }

    /// Inserts `grant` and `tokens`; returns once they are committed.
    pub(super) async fn issue(&self, grant: &Grant, tokens: &IssuedTokens) -> Result<()> {
        let (reply, done) = oneshot::channel();
        let job = Job {
            grant_id: grant.id.clone(),
            rows: Rows::new(grant, tokens)?,
            reply,
        };
        self.queue
            .send(job)
            .map_err(|_| StorageError::Unavailable("the grant queue has stopped".into()))?;
        done.await.map_err(|_| {
            StorageError::Unavailable("the grant queue stopped before answering".into())
        })?
    }
}

async fn insert_batches(pool: PgPool, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        // Requests parsed in the same wake-up as this one are about to queue theirs: let
        // them, so that one statement covers them all.
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match insert(&pool, &batch).await {
            Ok(()) => {
                for job in batch {
                    let _ = job.reply.send(Ok(()));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(job) = batch.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
            // Nothing of the batch was written: each grant is tried again alone, beside the
            // next batches, so that whatever failed fails only its own request.
            Err(_) => {
                for job in batch {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let done = insert(&pool, std::slice::from_ref(&job)).await;
                        let _ = job.reply.send(done);
                    });
                }
            }
        }
    }
}

/// Inserts the rows of `jobs` in one statement.
async fn insert(pool: &PgPool, jobs: &[Job]) -> Result<()> {
    let mut grants = JsonArray::default();
    let mut access = JsonArray::default();
    let mut refresh = JsonArray::default();
    for job in jobs {
        grants.push_text(&job.rows.grant);
        access.push_text(&job.rows.access);
        if let Some(row) = &job.rows.refresh {
            refresh.push_text(row);
        }
    }
    let (granted, accessed, refreshed): (i64, i64, i64) = sqlx::query_as(INSERT_ROWS)
        .bind(grants.text())
        .bind(access.text())
        .bind(refresh.text())
        .fetch_one(pool)
        .await
        .map_err(|e| {
            let subject = match jobs {
                [job] => format!("grant {:?} or its tokens", job.grant_id),
                _ => format!("{} grants or their tokens", jobs.len()),
            };
            sql::storage_error(e, &subject)
        })?;
    let expected = (
        jobs.len(),
        jobs.len(),
        jobs.iter().filter(|j| j.rows.refresh.is_some()).count(),
    );
    let written = (
        usize::try_from(granted).unwrap_or(0),
        usize::try_from(accessed).unwrap_or(0),
        usize::try_from(refreshed).unwrap_or(0),
    );
    if written != expected {
        // One statement writes all its rows or fails; a mismatch would be a fault in it.
        tracing::error!(
            ?written,
            ?expected,
            "a grant batch wrote an unexpected number of rows"
        );
        return Err(StorageError::Unavailable(
            "the grant batch did not write what it should have".into(),
        ));
    }
    Ok(())
}
