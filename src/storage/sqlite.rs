//! SQLite implementation of [`Storage`](super::Storage). (Being written.)
use super::*;
pub struct SqliteStorage;
impl SqliteStorage {
    pub async fn open_file(_file: &std::path::Path) -> Result<Self> {
        Err(StorageError::Open("sqlite storage not written yet".into()))
    }
    pub async fn open_memory() -> Result<Self> {
        Err(StorageError::Open("sqlite storage not written yet".into()))
    }
}
