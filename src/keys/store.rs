//! The three storage operations keys need, so that keys can run against anything that keeps
//! signing keys (every [`Storage`], or [`MemoryKeyStore`] in tests).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::storage::{self, SigningKey, Storage, StorageError};

#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn list_signing_keys(&self) -> storage::Result<Vec<SigningKey>>;
    /// False, and nothing written, when a key already succeeds `key.successor_of`.
    async fn insert_signing_key(&self, key: &SigningKey) -> storage::Result<bool>;
    async fn delete_signing_key(&self, kid: &str) -> storage::Result<bool>;
}

#[async_trait]
impl<S: Storage + ?Sized> KeyStore for S {
    async fn list_signing_keys(&self) -> storage::Result<Vec<SigningKey>> {
        Storage::list_signing_keys(self).await
    }
    async fn insert_signing_key(&self, key: &SigningKey) -> storage::Result<bool> {
        Storage::insert_signing_key(self, key).await
    }
    async fn delete_signing_key(&self, kid: &str) -> storage::Result<bool> {
        Storage::delete_signing_key(self, kid).await
    }
}

/// Lets a `SharedStorage` (`Arc<dyn Storage>`) be passed where an `Arc<dyn KeyStore>` is
/// wanted: `Arc::new(storage.clone()) as Arc<dyn KeyStore>`.
#[async_trait]
impl<S: KeyStore + ?Sized> KeyStore for Arc<S> {
    async fn list_signing_keys(&self) -> storage::Result<Vec<SigningKey>> {
        (**self).list_signing_keys().await
    }
    async fn insert_signing_key(&self, key: &SigningKey) -> storage::Result<bool> {
        (**self).insert_signing_key(key).await
    }
    async fn delete_signing_key(&self, kid: &str) -> storage::Result<bool> {
        (**self).delete_signing_key(kid).await
    }
}

/// Signing keys kept in process memory, with the same rules as the databases (unique kid,
/// unique `successor_of`). For tests and single-process tools; nothing survives a restart.
#[derive(Debug, Default)]
pub struct MemoryKeyStore {
    keys: Mutex<Vec<SigningKey>>,
}

impl MemoryKeyStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<SigningKey>> {
        // A panic while holding this lock cannot leave the Vec half-updated: every change is
        // a single push or retain.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl KeyStore for MemoryKeyStore {
    async fn list_signing_keys(&self) -> storage::Result<Vec<SigningKey>> {
        Ok(self.lock().clone())
    }

    async fn insert_signing_key(&self, key: &SigningKey) -> storage::Result<bool> {
        let mut keys = self.lock();
        if keys.iter().any(|k| k.kid == key.kid) {
            return Err(StorageError::AlreadyExists(format!(
                "signing key {}",
                key.kid
            )));
        }
        if keys.iter().any(|k| k.successor_of == key.successor_of) {
            return Ok(false);
        }
        keys.push(key.clone());
        Ok(true)
    }

    async fn delete_signing_key(&self, kid: &str) -> storage::Result<bool> {
        let mut keys = self.lock();
        let before = keys.len();
        keys.retain(|k| k.kid != kid);
        Ok(keys.len() != before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, successor_of: &str) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            alg: "ES256".into(),
            public_jwk: "{}".into(),
            private_key_enc: vec![1, 2, 3],
            successor_of: successor_of.into(),
            created_at: 0,
            sign_from: 0,
        }
    }

    // Compiles only if the server's `SharedStorage` can be handed to `KeyManager::start`.
    #[allow(dead_code)]
    fn shared_storage_converts_to_a_key_store(
        s: crate::storage::SharedStorage,
    ) -> Arc<dyn KeyStore> {
        Arc::new(s)
    }

    #[tokio::test]
    async fn memory_store_allows_one_successor_per_key_and_unique_kids() {
        let store = MemoryKeyStore::new();
        assert!(store.insert_signing_key(&key("a", "")).await.unwrap());
        assert!(!store.insert_signing_key(&key("a2", "")).await.unwrap());
        assert!(store.insert_signing_key(&key("b", "a")).await.unwrap());
        assert!(!store.insert_signing_key(&key("b2", "a")).await.unwrap());
        assert!(matches!(
            store.insert_signing_key(&key("b", "x")).await,
            Err(StorageError::AlreadyExists(_))
        ));
        let kids: Vec<_> = store
            .list_signing_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| k.kid)
            .collect();
        assert_eq!(kids, ["a", "b"]);
        assert!(store.delete_signing_key("a").await.unwrap());
        assert!(!store.delete_signing_key("a").await.unwrap());
    }
}
