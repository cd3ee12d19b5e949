//! Replicas on one PostgreSQL database: each sweeps expired rows on its own timer, and the
//! sweeps must neither queue on each other's row locks nor delete a row twice.

use crate::common;

use std::time::Duration;

use lanyard::storage::{self, PostgresSettings, SharedStorage, StorageSettings, SweepCutoffs};
use sqlx::PgPool;

const NOW: i64 = 1_700_000_000;

async fn replica(url: &str) -> SharedStorage {
    storage::open(&StorageSettings::Postgres(PostgresSettings {
        url: Some(url.to_string()),
        ..Default::default()
    }))
    .await
    .expect("open the shared database")
}

fn cutoffs(batch: u32) -> SweepCutoffs {
    SweepCutoffs {
        now: NOW,
        code_cutoff: NOW,
        grant_cutoff: NOW,
        refresh_idle_cutoff: None,
        rotated_cutoff: NOW,
        client_grant_cutoff: NOW,
        batch,
    }
}

/// `rows` auth requests that expired before `NOW`, named `r-1` ... `r-<rows>`.
async fn expired_auth_requests(pool: &PgPool, rows: i64) {
    sqlx::query(
        "INSERT INTO auth_requests (id, client_id, params, csrf_token, browser_binding, \
         created_at, expires_at) SELECT 'r-' || i, 'c', '{}', '', '', 0, $1 \
         FROM generate_series(1, $2) AS i",
    )
    .bind(NOW - 10)
    .bind(rows)
    .execute(pool)
    .await
    .unwrap();
}

async fn remaining(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM auth_requests")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A sweep skips the rows another transaction holds (another replica's sweep, mid-delete)
/// instead of waiting for it to end, and deletes them in a later pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sweep_skips_rows_another_replica_holds() {
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    let storage = replica(db.url()).await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    expired_auth_requests(&pool, 50).await;

    let mut other = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM auth_requests WHERE id = 'r-7' FOR UPDATE")
        .fetch_one(&mut *other)
        .await
        .unwrap();
    // Not a speed limit: without the skip, the sweep waits until `other` ends, which is never.
    let swept = tokio::time::timeout(Duration::from_secs(30), storage.sweep(&cutoffs(1000)))
        .await
        .expect("the sweep waited on a row another transaction holds")
        .unwrap();
    assert_eq!(swept.auth_requests, 49);
    other.rollback().await.unwrap();

    assert_eq!(
        storage.sweep(&cutoffs(1000)).await.unwrap().auth_requests,
        1
    );
    assert_eq!(remaining(&pool).await, 0);
}

/// Three replicas sweeping one backlog at once in small batches, as their timers overlap:
/// every pass succeeds, and each row is deleted (and counted) exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_sweeping_at_once_delete_each_row_once() {
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    const ROWS: i64 = 6000;
    let first = replica(db.url()).await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    expired_auth_requests(&pool, ROWS).await;
    let mut replicas = vec![first];
    for _ in 1..3 {
        replicas.push(replica(db.url()).await);
    }

    let start = std::sync::Arc::new(tokio::sync::Barrier::new(replicas.len()));
    let sweepers: Vec<_> = replicas
        .into_iter()
        .map(|storage| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let mut deleted = 0;
                // Until a pass finds nothing: a replica that skipped rows another holds
                // comes back for any the other did not delete.
                loop {
                    let swept = storage.sweep(&cutoffs(100)).await?;
                    if swept.total() == 0 {
                        return Ok::<u64, storage::StorageError>(deleted);
                    }
                    deleted += swept.auth_requests;
                }
            })
        })
        .collect();
    let mut deleted = 0;
    for sweeper in sweepers {
        deleted += sweeper.await.unwrap().expect("a concurrent sweep failed");
    }
    assert_eq!(deleted, ROWS as u64, "each row is deleted and counted once");
    assert_eq!(remaining(&pool).await, 0);
}
