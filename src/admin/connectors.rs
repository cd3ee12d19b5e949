//! `lanyard admin connectors`: the connectors kept in storage, as Dex's gRPC API manages them
//! (through [`crate::manage`]); the config file's are listed, read-only.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Subcommand;
use lanyard_connectors::PasswordHasher;

use crate::clock::SystemClock;
use crate::manage::{ConnectorChanges, ConnectorView, NewConnector};
use crate::server::app::{encryption_key, MissingKek, DEFAULT_DATA_DIR};
use crate::server::stored_connector::ConnectorOpening;

use super::{Admin, AdminError, Result};

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// One connector per line: id, type, name, static|stored, version (never its config).
    List,
    /// Creates a connector; its config is checked and opened as the config file's are.
    Create {
        #[arg(long)]
        id: String,
        #[arg(long = "type")]
        type_: String,
        #[arg(long)]
        name: String,
        /// A file holding the connector's config as JSON (`-`: stdin), so that its secrets
        /// stay off the command line.
        #[arg(long)]
        config_file: PathBuf,
    },
    /// Changes the given fields; the result is checked as a new connector is.
    Update {
        #[arg(long)]
        id: String,
        #[arg(long = "type")]
        type_: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        config_file: Option<PathBuf>,
    },
    Delete {
        #[arg(long)]
        id: String,
    },
}

fn read_config(path: &Path, input: &mut dyn BufRead) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        input
            .read_to_end(&mut bytes)
            .map_err(|e| AdminError::Stdin(e.to_string()))?;
        return Ok(bytes);
    }
    std::fs::read(path)
        .map_err(|e| AdminError::Invalid(format!("cannot read {}: {e}", path.display())))
}

fn connector_line(c: &ConnectorView) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\n",
        c.id,
        c.type_,
        c.name,
        c.origin.as_str(),
        c.resource_version
    )
}

impl Admin<'_> {
    pub(super) async fn connectors(
        &self,
        command: &ConnectorsCommand,
        input: &mut dyn BufRead,
    ) -> Result<String> {
        let hasher = Arc::new(PasswordHasher::new());
        let directory = self.directory(&hasher);
        let actor = self.actor();
        // The servers' key: a connector sealed under another could not be opened by them.
        let kek = encryption_key(self.config, Path::new(DEFAULT_DATA_DIR), MissingKek::Refuse)?;
        let opening = ConnectorOpening {
            config: self.config.clone(),
            storage: self.storage.clone(),
            hasher: hasher.clone(),
            clock: Arc::new(SystemClock),
        };
        match command {
            ConnectorsCommand::List => Ok(directory
                .list_connectors(&kek)
                .await?
                .iter()
                .map(connector_line)
                .collect()),
            ConnectorsCommand::Create {
                id,
                type_,
                name,
                config_file,
            } => {
                let new = NewConnector {
                    id: id.clone(),
                    type_: type_.clone(),
                    name: name.clone(),
                    config: read_config(config_file, input)?,
                };
                directory
                    .create_connector(&actor, &kek, &opening, new)
                    .await?;
                Ok(String::new())
            }
            ConnectorsCommand::Update {
                id,
                type_,
                name,
                config_file,
            } => {
                let config = match config_file {
                    Some(path) => Some(read_config(path, input)?),
                    None => None,
                };
                let changes = ConnectorChanges {
                    type_: type_.clone(),
                    name: name.clone(),
                    config,
                };
                let version = directory
                    .update_connector(&actor, &kek, &opening, id, changes)
                    .await?;
                Ok(format!("{id}\tversion {version}\n"))
            }
            ConnectorsCommand::Delete { id } => {
                directory.delete_connector(&actor, id).await?;
                Ok(String::new())
            }
        }
    }
}
