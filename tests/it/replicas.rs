//! Replicas on one PostgreSQL database: each sweeps expired rows on its own timer, and the
//! sweeps must neither queue on each other's row locks nor delete a row twice.

use crate::common;

use std::time::Duration;

use lanyard::storage::{
    self, PostgresSettings, SharedStorage, StorageSettings, SweepCutoffs, Swept,
};
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

/// The auth requests and grants `replicas` deleted, each sweeping in batches of 100 from the
/// same moment until a pass finds nothing: a replica that skipped rows another holds comes
/// back for any the other did not delete. Every pass must succeed.
async fn sweep_at_once(replicas: Vec<SharedStorage>) -> Swept {
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(replicas.len()));
    let sweepers: Vec<_> = replicas
        .into_iter()
        .map(|storage| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                let mut deleted = Vec::new();
                loop {
                    let swept = storage.sweep(&cutoffs(100)).await?;
                    if swept.total() == 0 {
                        return Ok::<_, storage::StorageError>(deleted);
                    }
                    deleted.push(swept);
                }
            })
        })
        .collect();
    let mut total = Swept::default();
    for sweeper in sweepers {
        for swept in sweeper.await.unwrap().expect("a concurrent sweep failed") {
            total.auth_requests += swept.auth_requests;
            total.grants += swept.grants;
        }
    }
    total
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

    let swept = sweep_at_once(replicas).await;
    let deleted = swept.auth_requests;
    assert_eq!(deleted, ROWS as u64, "each row is deleted and counted once");
    assert_eq!(remaining(&pool).await, 0);
}

/// `rows` unrevoked grants `g-1` ... `g-<rows>`, each with an expired access token and an
/// expired refresh token: each is dead once both tokens are swept.
async fn grants_with_expired_tokens(pool: &PgPool, rows: i64) {
    sqlx::query(
        "INSERT INTO grants (id, client_id, connector_id, user_id, claims, scopes, auth_time, \
         created_at) SELECT 'g-' || i, 'c', 'github', 'u', '{}', '[]', 0, 0 \
         FROM generate_series(1, $1) AS i",
    )
    .bind(rows)
    .execute(pool)
    .await
    .unwrap();
    for statement in [
        "INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at) \
         SELECT 'at-' || i, 'g-' || i, 'c', 0, $1 FROM generate_series(1, $2) AS i",
        "INSERT INTO refresh_tokens (token_hash, grant_id, client_id, created_at, \
         last_used_at, expires_at) \
         SELECT 'rt-' || i, 'g-' || i, 'c', 0, 0, $1 FROM generate_series(1, $2) AS i",
    ] {
        sqlx::query(statement)
            .bind(NOW - 10)
            .bind(rows)
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Replicas sweeping dead grants' tokens at once: one replica may delete a grant's access
/// token while another deletes its refresh token. Every grant still goes (and is counted)
/// exactly once, and no pass fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_sweeping_at_once_delete_each_dead_grant_once() {
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    const GRANTS: i64 = 3000;
    let mut replicas = vec![replica(db.url()).await];
    let pool = PgPool::connect(db.url()).await.unwrap();
    grants_with_expired_tokens(&pool, GRANTS).await;
    for _ in 1..3 {
        replicas.push(replica(db.url()).await);
    }
    let grants = sweep_at_once(replicas).await.grants;
    assert_eq!(count(&pool, "grants").await, 0, "a dead grant was left");
    assert_eq!(
        grants, GRANTS as u64,
        "each grant is deleted and counted once"
    );
}

/// A refresh rotation holds its token and grant (`FOR UPDATE OF r, g`) while it gives the grant
/// new tokens, and a sweep deletes the grant's expired access token meanwhile: the sweep does
/// not wait for the rotation (the grant has a live refresh token, so it is not locked to be
/// freed) and leaves the grant, which keeps the tokens the rotation gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sweep_does_not_wait_for_a_rotation_of_a_grant_it_takes_a_token_of() {
    let Some(db) = common::postgres::fresh_database().await else {
        return;
    };
    let storage = replica(db.url()).await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    grants_with_expired_tokens(&pool, 5).await;
    sqlx::query("UPDATE refresh_tokens SET expires_at = $1 WHERE token_hash = 'rt-3'")
        .bind(NOW + 600)
        .execute(&pool)
        .await
        .unwrap();

    let mut rotation = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT g.id FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id \
         WHERE r.token_hash = 'rt-3' FOR UPDATE OF r, g",
    )
    .fetch_one(&mut *rotation)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO access_tokens (token_hash, grant_id, client_id, created_at, expires_at) \
         VALUES ('new', 'g-3', 'c', 0, $1)",
    )
    .bind(NOW + 600)
    .execute(&mut *rotation)
    .await
    .unwrap();
    // Not a speed limit: had the sweep waited for `rotation`, it would wait forever.
    let swept = tokio::time::timeout(Duration::from_secs(30), storage.sweep(&cutoffs(1000)))
        .await
        .expect("the sweep waited on a grant a rotation holds")
        .unwrap();
    assert_eq!(
        (swept.access_tokens, swept.refresh_tokens, swept.grants),
        (5, 4, 4)
    );
    rotation.commit().await.unwrap();
    let kept: Vec<String> = sqlx::query_scalar("SELECT id FROM grants")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kept, ["g-3"]);
}
