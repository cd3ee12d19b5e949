//! Connectors kept in storage: created, changed and deleted through Dex's gRPC API (with
//! `DEX_API_CONNECTORS_CRUD`) or `lanyard admin connectors`, with Dex v2.45.1's rules
//! (`server/api.go`, `storage/static.go`).
//!
//! A connector's `config` is resolved and opened exactly as an entry of the file's
//! `connectors` is before it is stored, so a config the server could not serve is refused
//! with the reason; it is stored sealed with the key-encryption key (it holds client secrets
//! and bind passwords). The file's connectors, and the password database's `local`, are
//! Dex's static connectors: listed, and read-only.

use crate::config::{resolve_stored_connector, ConnectorConfig};
use crate::keys::{open_connector_config, seal_connector_config};
use crate::storage::{StorageError, StoredConnector};

use super::{Actor, Directory, ManageError, Origin, Result};

/// Dex's id and name of the password database as a connector.
const LOCAL_CONNECTOR: (&str, &str) = ("local", "Email");

/// A connector as the tools show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorView {
    pub id: String,
    pub type_: String,
    pub name: String,
    /// The stored `config` JSON; empty for the file's connectors, whose settings (and
    /// secrets) live in the file.
    pub config: Vec<u8>,
    /// Dex's resource version (0 for the file's connectors).
    pub resource_version: i64,
    pub origin: Origin,
}

pub struct NewConnector {
    pub id: String,
    pub type_: String,
    pub name: String,
    /// The connector's settings as JSON, as Dex's API carries them.
    pub config: Vec<u8>,
}

/// Changes to a stored connector: `None` leaves a field as it is, as in Dex.
#[derive(Default)]
pub struct ConnectorChanges {
    pub type_: Option<String>,
    pub name: Option<String>,
    pub config: Option<Vec<u8>>,
}

/// Checks that a resolved connector opens as the server would open it, before it is stored.
pub trait ConnectorCheck: Sync {
    fn check(&self, connector: &ConnectorConfig) -> std::result::Result<(), String>;
}

/// Dex's text for a change to a static connector (`storage/static.go`).
fn read_only(verb: &str) -> ManageError {
    ManageError::StaticConnector(format!(
        "static connectors: read-only cannot {verb} connector"
    ))
}

impl Directory<'_> {
    /// The connectors of the config file, and `local` with `enablePasswordDB`: Dex's static
    /// connectors, as (id, type, name).
    fn static_connectors(&self) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = self
            .config
            .connectors
            .iter()
            .map(|c| (c.id.clone(), c.type_.as_str().to_string(), c.name.clone()))
            .collect();
        if self.config.enable_password_db && !out.iter().any(|c| c.0 == LOCAL_CONNECTOR.0) {
            out.push((
                LOCAL_CONNECTOR.0.to_string(),
                LOCAL_CONNECTOR.0.to_string(),
                LOCAL_CONNECTOR.1.to_string(),
            ));
        }
        out
    }

    fn is_static_connector(&self, id: &str) -> bool {
        self.static_connectors().iter().any(|c| c.0 == id)
    }

    /// Resolves the connector as the file's are, opens it as the server would, and seals its
    /// config for storage.
    fn checked_sealed_config(
        &self,
        kek: &[u8; 32],
        check: &dyn ConnectorCheck,
        id: &str,
        type_: &str,
        name: &str,
        config: &[u8],
    ) -> Result<String> {
        let json: serde_json::Value = serde_json::from_slice(config)
            .map_err(|_| ManageError::Invalid("invalid config supplied".into()))?;
        let invalid =
            |problems: String| ManageError::Invalid(format!("invalid config supplied: {problems}"));
        let (resolved, _warnings) =
            resolve_stored_connector(type_, id, name, &json, &self.config.issuer).map_err(
                |errors| {
                    invalid(
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                },
            )?;
        check.check(&resolved).map_err(invalid)?;
        seal_connector_config(kek, id, config)
            .map_err(|e| ManageError::Storage(StorageError::Corrupt(e.to_string())))
    }

    /// Stored connectors (those the file's do not shadow), then the file's, as Dex lists
    /// them. Stored configs are opened for the caller; one that no longer opens with the
    /// configured key is an error naming the connector.
    pub async fn list_connectors(&self, kek: &[u8; 32]) -> Result<Vec<ConnectorView>> {
        let statics = self.static_connectors();
        let mut out = Vec::new();
        for c in self.storage.list_connectors().await? {
            if statics.iter().any(|s| s.0 == c.id) {
                continue;
            }
            let config = open_connector_config(kek, &c.id, &c.sealed_config)
                .map_err(|e| ManageError::Storage(StorageError::Corrupt(e.to_string())))?;
            out.push(ConnectorView {
                id: c.id,
                type_: c.type_,
                name: c.name,
                config,
                resource_version: c.resource_version,
                origin: Origin::Stored,
            });
        }
        out.extend(statics.into_iter().map(|(id, type_, name)| ConnectorView {
            id,
            type_,
            name,
            config: Vec::new(),
            resource_version: 0,
            origin: Origin::Static,
        }));
        Ok(out)
    }

    pub async fn create_connector(
        &self,
        actor: &Actor,
        kek: &[u8; 32],
        check: &dyn ConnectorCheck,
        new: NewConnector,
    ) -> Result<()> {
        for (value, what) in [(&new.id, "id"), (&new.type_, "type"), (&new.name, "name")] {
            if value.is_empty() {
                return Err(ManageError::Invalid(format!("no {what} supplied")));
            }
        }
        if new.config.is_empty() {
            return Err(ManageError::Invalid("no config supplied".into()));
        }
        if self.is_static_connector(&new.id) {
            return Err(read_only("create"));
        }
        let sealed =
            self.checked_sealed_config(kek, check, &new.id, &new.type_, &new.name, &new.config)?;
        let now = self.clock.now();
        self.storage
            .create_connector(&StoredConnector {
                id: new.id.clone(),
                type_: new.type_.clone(),
                name: new.name.clone(),
                resource_version: 1,
                sealed_config: sealed,
                created_at: now,
                updated_at: now,
            })
            .await
            .map_err(ManageError::conflict_on(format!("connector {:?}", new.id)))?;
        self.audit(
            actor,
            "connector.create",
            &format!("connector:{} type:{}", new.id, new.type_),
            now,
        );
        Ok(())
    }

    /// Applies `changes` and counts the connector's version up. The result is checked as a
    /// new connector is: changing only the type checks the stored config against it.
    pub async fn update_connector(
        &self,
        actor: &Actor,
        kek: &[u8; 32],
        check: &dyn ConnectorCheck,
        id: &str,
        changes: ConnectorChanges,
    ) -> Result<i64> {
        if id.is_empty() {
            return Err(ManageError::Invalid("no id supplied".into()));
        }
        let changes = ConnectorChanges {
            type_: changes.type_.filter(|t| !t.is_empty()),
            name: changes.name.filter(|n| !n.is_empty()),
            config: changes.config.filter(|c| !c.is_empty()),
        };
        if changes.type_.is_none() && changes.name.is_none() && changes.config.is_none() {
            return Err(ManageError::Invalid("nothing to update".into()));
        }
        if let Some(config) = &changes.config {
            if serde_json::from_slice::<serde_json::Value>(config).is_err() {
                return Err(ManageError::Invalid("invalid config supplied".into()));
            }
        }
        if self.is_static_connector(id) {
            return Err(read_only("update"));
        }
        let Some(old) = self.storage.get_connector(id).await? else {
            return Err(ManageError::NotFound(format!("connector {id:?}")));
        };
        let type_ = changes.type_.unwrap_or(old.type_);
        let name = changes.name.unwrap_or(old.name);
        let config = match changes.config {
            Some(config) => config,
            None => open_connector_config(kek, id, &old.sealed_config)
                .map_err(|e| ManageError::Storage(StorageError::Corrupt(e.to_string())))?,
        };
        let sealed = self.checked_sealed_config(kek, check, id, &type_, &name, &config)?;
        let now = self.clock.now();
        let version = self
            .storage
            .update_connector(&StoredConnector {
                id: id.to_string(),
                type_: type_.clone(),
                name,
                resource_version: old.resource_version,
                sealed_config: sealed,
                created_at: old.created_at,
                updated_at: now,
            })
            .await
            .map_err(|e| match e {
                StorageError::NotFound(_) => ManageError::NotFound(format!("connector {id:?}")),
                other => ManageError::Storage(other),
            })?;
        self.audit(
            actor,
            "connector.update",
            &format!("connector:{id} type:{type_} version:{version}"),
            now,
        );
        Ok(version)
    }

    pub async fn delete_connector(&self, actor: &Actor, id: &str) -> Result<()> {
        if id.is_empty() {
            return Err(ManageError::Invalid("no id supplied".into()));
        }
        if self.is_static_connector(id) {
            return Err(read_only("delete"));
        }
        if !self.storage.delete_connector(id).await? {
            return Err(ManageError::NotFound(format!("connector {id:?}")));
        }
        self.audit(
            actor,
            "connector.delete",
            &format!("connector:{id}"),
            self.clock.now(),
        );
        Ok(())
    }
}
