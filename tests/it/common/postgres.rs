//! A fresh PostgreSQL database per test.
//!
//! `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names a server and a
//! database to connect to for `CREATE DATABASE`; each test gets its own randomly named
//! database, dropped when the guard is dropped. When the server is unreachable the test is
//! skipped with a note, unless `CI` is set, in which case it fails.
#![allow(dead_code)]

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists until this guard is dropped.
pub struct TestDatabase {
    url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// The URL of the fresh database.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_string())
}

/// Creates a fresh database. `None` means "skip this test" (Postgres unreachable, CI unset).
pub async fn fresh_database() -> Option<TestDatabase> {
    let admin_url = admin_url();
    let connected =
        tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin_url)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return skip(&e.to_string()),
        Err(_) => return skip("connection timed out"),
    };
    let name = format!("lanyard_test_{:016x}", rand::random::<u64>());
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("create the test database");
    let _ = conn.close().await;
    let mut url = url::Url::parse(&admin_url).expect("DATABASE_URL is a postgres:// URL");
    url.set_path(&format!("/{name}"));
    Some(TestDatabase {
        url: url.to_string(),
        name,
        admin_url,
    })
}

fn skip(why: &str) -> Option<TestDatabase> {
    if std::env::var_os("CI").is_some() {
        panic!("PostgreSQL at DATABASE_URL is unreachable and CI is set: {why}");
    }
    eprintln!("skipping: PostgreSQL at DATABASE_URL is unreachable ({why})");
    None
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread with its
        // own runtime can. Best effort: a leftover database only costs disk.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(mut conn) = PgConnection::connect(&admin_url).await {
                    let _ = conn
                        .execute(
                            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
                        )
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}
