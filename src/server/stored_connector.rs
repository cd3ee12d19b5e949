//! Opening connectors kept in storage the way the config file's are opened: what every
//! replica serves ([`StoredConnectorOpener`]) and what the API and `lanyard admin` check
//! before they store one ([`ConnectorOpening`]).

use std::sync::Arc;

use lanyard_connectors::PasswordHasher;

use crate::clock::SharedClock;
use crate::config::{resolve_stored_connector, Config, ConnectorConfig, ConnectorType};
use crate::keys::KeyManager;
use crate::manage::ConnectorCheck;
use crate::oidc::stored_connectors::ConnectorOpener;
use crate::oidc::{ConnectorEntry, ConnectorKind};
use crate::storage::{SharedStorage, StoredConnector};

use super::app::{failed_entry, open_connectors};
use super::failed_connector::{ConnectorFailures, FailedConnector};
use crate::metrics::ConnectorHealth;

/// What opening a connector needs besides its settings: the config in effect (issuer,
/// `staticPasswords` for a `local` one), storage, the password hasher and the clock.
#[derive(Clone)]
pub struct ConnectorOpening {
    pub config: Config,
    pub storage: SharedStorage,
    pub hasher: Arc<PasswordHasher>,
    pub clock: SharedClock,
}

impl ConnectorOpening {
    fn open(&self, connector: &ConnectorConfig) -> Result<ConnectorEntry, String> {
        let opened = open_connectors(
            &self.config,
            std::slice::from_ref(connector),
            &self.storage,
            &self.hasher,
            &self.clock,
            ConnectorFailures::Stop,
        )
        .map_err(|e| match e {
            // The id is the caller's own; the reason is what they need.
            super::app::AppError::Connector { reason, .. } => reason,
            other => other.to_string(),
        })?;
        opened
            .into_iter()
            .next()
            .ok_or_else(|| "the connector did not open".to_string())
    }
}

impl ConnectorCheck for ConnectorOpening {
    fn check(&self, connector: &ConnectorConfig) -> Result<(), String> {
        self.open(connector).map(|_| ())
    }
}

/// Opens stored connectors for one server generation.
pub struct StoredConnectorOpener {
    pub opening: ConnectorOpening,
    pub keys: Arc<KeyManager>,
}

impl StoredConnectorOpener {
    fn resolve(&self, stored: &StoredConnector) -> Result<ConnectorConfig, String> {
        let config = self
            .keys
            .open_connector_config(&stored.id, &stored.sealed_config)
            .map_err(|e| e.to_string())?;
        let json: serde_json::Value =
            serde_json::from_slice(&config).map_err(|e| format!("config is not JSON: {e}"))?;
        resolve_stored_connector(
            &stored.type_,
            &stored.id,
            &stored.name,
            &json,
            &self.opening.config.issuer,
        )
        .map(|(resolved, _warnings)| resolved)
        .map_err(|errors| {
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

impl ConnectorOpener for StoredConnectorOpener {
    fn open(&self, stored: &StoredConnector) -> ConnectorEntry {
        let resolved = self.resolve(stored);
        let opened = resolved
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|c| self.opening.open(c));
        match (opened, resolved) {
            (Ok(entry), _) => entry,
            (Err(reason), resolved) => {
                // Stored before a change of key, issuer or lanyard version made it unusable:
                // it shows as unavailable, and the reason is here, not on the login page.
                tracing::error!(connector = %stored.id, error = %reason, "failed to open stored connector; it is shown as unavailable");
                match resolved {
                    Ok(c) => failed_entry(&c, reason),
                    Err(_) => unresolved_entry(stored, reason),
                }
            }
        }
    }
}

/// A failed entry for a stored connector whose settings do not even resolve.
fn unresolved_entry(stored: &StoredConnector, reason: String) -> ConnectorEntry {
    let failed = Arc::new(FailedConnector {
        reason: reason.clone(),
    });
    let checks_passwords =
        ConnectorType::parse(&stored.type_).is_some_and(|t| t.checks_passwords());
    ConnectorEntry {
        id: stored.id.clone(),
        name: stored.name.clone(),
        kind: if checks_passwords {
            ConnectorKind::Password(failed.clone())
        } else {
            ConnectorKind::Callback(failed.clone())
        },
        refresh: Some(failed),
        token_identity: None,
        health: ConnectorHealth::failed_to_open(reason),
    }
}
