//! PostgreSQL implementation of [`Storage`](super::Storage). (Being written.)
use super::*;
pub struct PostgresStorage;
impl PostgresStorage {
    pub async fn connect(_settings: &PostgresSettings) -> Result<Self> {
        Err(StorageError::Open("postgres storage not written yet".into()))
    }
}
