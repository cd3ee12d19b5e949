//! Key rotation through real databases: replicas that rotate at the same moment end with
//! exactly one new key, and every replica publishes it before anyone signs with it.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use lanyard::clock::ManualClock;
use lanyard::keys::{KeyManager, KeySettings, KeyStore, SigningAlg};
use lanyard::storage::{self, PostgresSettings, SharedStorage, StorageSettings};

const HOUR: i64 = 3600;

fn settings() -> KeySettings {
    KeySettings {
        algorithm: SigningAlg::RS256,
        rotation_period: Duration::from_secs(6 * HOUR as u64),
        publish_ahead: Duration::from_secs(15 * 60),
        token_lifetime: Duration::from_secs(24 * HOUR as u64),
        encryption_key: [7u8; 32],
    }
}

/// Two storages on one database, as two processes would have.
async fn two_replicas(
    backend: &str,
) -> Option<(
    SharedStorage,
    SharedStorage,
    Option<common::postgres::TestDatabase>,
    tempfile::TempDir,
)> {
    let dir = tempfile::tempdir().unwrap();
    match backend {
        "sqlite" => {
            let s = StorageSettings::Sqlite {
                file: dir.path().join("k.db"),
            };
            Some((
                storage::open(&s).await.unwrap(),
                storage::open(&s).await.unwrap(),
                None,
                dir,
            ))
        }
        _ => {
            let db = common::postgres::fresh_database().await?;
            let s = StorageSettings::Postgres(PostgresSettings {
                url: Some(db.url().to_string()),
                ..Default::default()
            });
            Some((
                storage::open(&s).await.unwrap(),
                storage::open(&s).await.unwrap(),
                Some(db),
                dir,
            ))
        }
    }
}

async fn concurrent_rotation_creates_exactly_one_key(backend: &str) {
    let Some((a, b, _db, _dir)) = two_replicas(backend).await else {
        return;
    };
    let clock = ManualClock::new(1_800_000_000);
    let (ka, kb) = tokio::join!(
        KeyManager::start(
            Arc::new(a.clone()) as Arc<dyn KeyStore>,
            Arc::new(clock.clone()),
            settings()
        ),
        KeyManager::start(
            Arc::new(b.clone()) as Arc<dyn KeyStore>,
            Arc::new(clock.clone()),
            settings()
        ),
    );
    let (ka, kb) = (ka.unwrap(), kb.unwrap());
    assert_eq!(
        a.list_signing_keys().await.unwrap().len(),
        1,
        "two first starts make one key"
    );
    kb.reload().await.unwrap();
    assert_eq!(ka.signing_kid(), kb.signing_kid());

    for round in 1..=5 {
        clock.advance(6 * HOUR);
        let (ra, rb) = tokio::join!(ka.rotate_if_due(), kb.rotate_if_due());
        let created = [ra.unwrap().created, rb.unwrap().created];
        assert_eq!(
            created.iter().flatten().count(),
            1,
            "round {round}: exactly one replica created a key"
        );
        ka.reload().await.unwrap();
        kb.reload().await.unwrap();
        assert_eq!(
            ka.jwks().body,
            kb.jwks().body,
            "both replicas publish the same keys"
        );
    }
    assert_eq!(
        ka.rotations() + kb.rotations(),
        5,
        "the metric counts each rotation once"
    );
    // A token signed by either replica verifies on the other.
    clock.advance(HOUR);
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), "x".into());
    let token = ka.sign(&claims).unwrap();
    assert!(kb.verify(&token).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_rotation_creates_exactly_one_key() {
    concurrent_rotation_creates_exactly_one_key("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_rotation_creates_exactly_one_key() {
    concurrent_rotation_creates_exactly_one_key("postgres").await;
}
