//! Connectors kept in storage (created through Dex's gRPC API or `lanyard admin connectors`),
//! opened by each replica and served beside the config file's without a restart.
//!
//! Before it serves a connector lookup, a replica reads the storage's connectors generation
//! (one small row): while it stands still, the connectors opened at that generation serve;
//! when it moved, the stored connectors are read again and only those whose resource version
//! changed are reopened, as Dex's server reopens a connector whose `ResourceVersion` changed.

use tokio::sync::Mutex;

use super::ConnectorEntry;
use crate::storage::{SharedStorage, StorageError, StoredConnector};

/// Opens a stored connector the way the server opens the config file's: one that cannot be
/// opened (a config its type refuses, a key that cannot decrypt it) comes back as an entry
/// that fails every use, so it shows as unavailable instead of hiding the others.
pub trait ConnectorOpener: Send + Sync + 'static {
    fn open(&self, stored: &StoredConnector) -> ConnectorEntry;
}

struct Opened {
    resource_version: i64,
    entry: ConnectorEntry,
}

#[derive(Default)]
struct Snapshot {
    /// The storage generation `opened` reflects; `None` before the first read.
    generation: Option<i64>,
    opened: Vec<Opened>,
}

/// The stored connectors of one server generation, opened as storage changes.
pub struct StoredConnectors {
    opener: Box<dyn ConnectorOpener>,
    snapshot: Mutex<Snapshot>,
}

impl StoredConnectors {
    pub fn new(opener: Box<dyn ConnectorOpener>) -> Self {
        Self {
            opener,
            snapshot: Mutex::new(Snapshot::default()),
        }
    }

    /// The stored connectors as storage has them now, ordered by id.
    pub async fn current(
        &self,
        storage: &SharedStorage,
    ) -> Result<Vec<ConnectorEntry>, StorageError> {
        let generation = storage.connectors_generation().await?;
        let mut snapshot = self.snapshot.lock().await;
        if snapshot.generation != Some(generation) {
            // Read after the generation: a change that lands in between is read now and
            // read again at the next lookup, never missed.
            let stored = storage.list_connectors().await?;
            let mut previous = std::mem::take(&mut snapshot.opened);
            let opened = stored
                .iter()
                .map(|s| {
                    let kept = previous
                        .iter()
                        .position(|o| {
                            o.entry.id == s.id && o.resource_version == s.resource_version
                        })
                        .map(|i| previous.swap_remove(i));
                    kept.unwrap_or_else(|| {
                        tracing::info!(connector = %s.id, resource_version = s.resource_version, "opening stored connector");
                        Opened {
                            resource_version: s.resource_version,
                            entry: self.opener.open(s),
                        }
                    })
                })
                .collect();
            *snapshot = Snapshot {
                generation: Some(generation),
                opened,
            };
        }
        Ok(snapshot.opened.iter().map(|o| o.entry.clone()).collect())
    }
}
