//! `lanyard admin`: clients, local passwords, connectors, users' sessions and signing keys in
//! the configured storage. Clients, passwords and connectors go through [`crate::manage`], as
//! Dex's gRPC API's do.
//!
//! Entries from the config (`staticClients`, `staticPasswords`) are read-only here: the config
//! file is their source of truth. Every change is one audit line (target `lanyard::audit`)
//! naming actor, action, object and time, never a secret.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lanyard_connectors::PasswordHasher;

mod connectors;
mod keys;
pub use connectors::ConnectorsCommand;
pub use keys::KeysCommand;

use crate::clock::{Clock, SystemClock, UnixTime};
use crate::config::Config;
use crate::manage::{
    Actor, ClientChanges, ClientView, Directory, ManageError, NewClient, NewPassword, Origin,
    PasswordChanges, PasswordInput, PasswordView,
};
use crate::oidc::secrets::random_token;
use crate::storage::{self, GrantFilter, SharedStorage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Manage(#[from] ManageError),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the password from stdin: {0}")]
    Stdin(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(String),
    #[error(transparent)]
    Keys(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Setup(#[from] crate::server::app::AppError),
}

pub type Result<T> = std::result::Result<T, AdminError>;

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[arg(long, short, global = true, env = "LANYARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Who is making the change, for the audit log. Default: $USER.
    #[arg(long, global = true)]
    pub actor: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// OAuth clients stored in the database (staticClients are listed, read-only).
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// The local password database (staticPasswords are listed, read-only).
    #[command(subcommand)]
    Passwords(PasswordsCommand),
    /// Connectors kept in storage, as Dex's gRPC API manages them (the config file's are
    /// listed, read-only).
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// Users' grants (their tokens) and sign-in sessions.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Signing keys: list them, rotate now (emergency), stop publishing a compromised one.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// One client per line: id, name, public|confidential, static|stored, redirect URIs.
    List,
    /// Creates a client. A confidential client's secret is printed once on stdout.
    Create(ClientFields),
    /// Changes the given fields; list options replace the whole list.
    Update {
        #[command(flatten)]
        fields: ClientFields,
        /// Draw a new secret (printed once on stdout); the old one stops working.
        #[arg(long)]
        rotate_secret: bool,
    },
    Delete {
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Args)]
pub struct ClientFields {
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// A public client (no secret; PKCE). Only on create.
    #[arg(long)]
    pub public: bool,
    #[arg(long = "grant-type")]
    pub grant_types: Vec<String>,
    #[arg(long = "trusted-peer")]
    pub trusted_peers: Vec<String>,
    #[arg(long = "post-logout-redirect-uri")]
    pub post_logout_redirect_uris: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum PasswordsCommand {
    /// One entry per line: email, username, user id, groups, static|stored.
    List,
    /// Creates an entry; the password is the first line of stdin.
    Create {
        #[arg(long)]
        email: String,
        /// Default: the email.
        #[arg(long)]
        username: Option<String>,
        /// Default: random.
        #[arg(long)]
        user_id: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Read the password from stdin (the default for create; accepted for symmetry).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Changes the given fields; `--group` replaces the groups.
    Update {
        #[arg(long)]
        email: String,
        #[arg(long)]
        username: Option<String>,
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Remove every group.
        #[arg(long, conflicts_with = "groups")]
        clear_groups: bool,
        /// Set a new password, read as the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    Delete {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Args)]
pub struct Selection {
    /// The user's email (any connector).
    #[arg(long)]
    pub user: Option<String>,
    /// Only grants of this client.
    #[arg(long)]
    pub client: Option<String>,
    /// Only this connector's users.
    #[arg(long)]
    pub connector: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Grants (one line each: grant, id, client, connector, user id, email, created, revoked)
    /// and sign-in sessions (`session`, connector, user id, email, created, expires, revoked).
    List {
        #[command(flatten)]
        selection: Selection,
        /// Include revoked grants and revoked or expired sessions.
        #[arg(long)]
        all: bool,
    },
    /// Revokes grants (every token of them) and, unless --client narrows it to one client,
    /// the user's sign-in sessions.
    Revoke {
        #[command(flatten)]
        selection: Selection,
        /// Offboarding: every grant and sign-in session of this email.
        #[arg(long, conflicts_with_all = ["user", "client"])]
        all_for_user: Option<String>,
    },
}

/// Runs one admin command against the config's storage; results go to `out`, a password
/// is read from `input`.
pub async fn run(
    config: &Config,
    args: &AdminArgs,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<()> {
    let storage = storage::open(&config.storage).await?;
    let admin = Admin {
        config,
        storage,
        actor: actor(args.actor.as_deref()),
        clock: SystemClock,
    };
    let text = match &args.command {
        AdminCommand::Clients(c) => admin.clients(c).await?,
        AdminCommand::Passwords(c) => admin.passwords(c, input).await?,
        AdminCommand::Connectors(c) => admin.connectors(c, input).await?,
        AdminCommand::Sessions(c) => admin.sessions(c).await?,
        AdminCommand::Keys(c) => admin.keys(c).await?,
    };
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| AdminError::Stdout(e.to_string()))
}

fn actor(given: Option<&str>) -> String {
    given
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

struct Admin<'a> {
    config: &'a Config,
    storage: SharedStorage,
    actor: String,
    clock: SystemClock,
}

impl Admin<'_> {
    fn actor(&self) -> Actor {
        Actor {
            name: self.actor.clone(),
            via: "admin",
        }
    }

    async fn clients(&self, command: &ClientsCommand) -> Result<String> {
        let hasher = PasswordHasher::new();
        let directory = self.directory(&hasher);
        let actor = self.actor();
        match command {
            ClientsCommand::List => Ok(directory
                .list_clients()
                .await?
                .iter()
                .map(client_line)
                .collect()),
            ClientsCommand::Create(fields) => {
                let created = directory
                    .create_client(
                        &actor,
                        NewClient {
                            id: Some(fields.id.clone()),
                            secret: None,
                            public: fields.public,
                            name: fields.name.clone(),
                            logo_url: None,
                            redirect_uris: fields.redirect_uris.clone(),
                            trusted_peers: fields.trusted_peers.clone(),
                            grant_types: fields.grant_types.clone(),
                            post_logout_redirect_uris: fields.post_logout_redirect_uris.clone(),
                        },
                    )
                    .await?;
                Ok(created.secret.map(|s| format!("{s}\n")).unwrap_or_default())
            }
            ClientsCommand::Update {
                fields,
                rotate_secret,
            } => {
                if fields.public {
                    if let Ok(c) = directory.get_client(&fields.id).await {
                        if c.origin == Origin::Stored && !c.public {
                            return Err(AdminError::Invalid(
                                "--public only applies on create; delete and re-create the client to change its type".into(),
                            ));
                        }
                    }
                }
                let secret = directory
                    .update_client(
                        &actor,
                        &fields.id,
                        ClientChanges {
                            name: fields.name.clone(),
                            logo_url: None,
                            redirect_uris: fields.redirect_uris.clone(),
                            trusted_peers: fields.trusted_peers.clone(),
                            grant_types: fields.grant_types.clone(),
                            post_logout_redirect_uris: fields.post_logout_redirect_uris.clone(),
                            rotate_secret: *rotate_secret,
                        },
                    )
                    .await?;
                Ok(secret.map(|s| format!("{s}\n")).unwrap_or_default())
            }
            ClientsCommand::Delete { id } => {
                directory.delete_client(&actor, id).await?;
                Ok(String::new())
            }
        }
    }

    fn directory<'h>(&'h self, hasher: &'h PasswordHasher) -> Directory<'h> {
        Directory {
            storage: &self.storage,
            config: self.config,
            clock: &self.clock,
            hasher,
        }
    }

    async fn passwords(
        &self,
        command: &PasswordsCommand,
        input: &mut dyn BufRead,
    ) -> Result<String> {
        let hasher = PasswordHasher::new();
        let directory = self.directory(&hasher);
        let actor = self.actor();
        match command {
            PasswordsCommand::List => Ok(directory
                .list_passwords()
                .await?
                .iter()
                .map(password_line)
                .collect()),
            PasswordsCommand::Create {
                email,
                username,
                user_id,
                groups,
                password_stdin: _,
            } => {
                // The cheap refusals come before the password is read.
                directory.ensure_creatable_password(email)?;
                let password = read_password(input)?;
                directory
                    .create_password(
                        &actor,
                        NewPassword {
                            email: email.clone(),
                            password: PasswordInput::Plain(password),
                            username: username.clone().unwrap_or_else(|| email.clone()),
                            user_id: user_id.clone().unwrap_or_else(|| random_token(16)),
                            groups: groups.clone(),
                        },
                    )
                    .await?;
                Ok(String::new())
            }
            PasswordsCommand::Update {
                email,
                username,
                groups,
                clear_groups,
                password_stdin,
            } => {
                let password = if *password_stdin {
                    Some(PasswordInput::Plain(read_password(input)?))
                } else {
                    None
                };
                let groups = if *clear_groups {
                    Some(Vec::new())
                } else if groups.is_empty() {
                    None
                } else {
                    Some(groups.clone())
                };
                directory
                    .update_password(
                        &actor,
                        email,
                        PasswordChanges {
                            username: username.clone(),
                            groups,
                            password,
                        },
                    )
                    .await?;
                Ok(String::new())
            }
            PasswordsCommand::Delete { email } => {
                directory.delete_password(&actor, email).await?;
                Ok(String::new())
            }
        }
    }

    async fn sessions(&self, command: &SessionsCommand) -> Result<String> {
        let now = self.clock.now();
        match command {
            SessionsCommand::List { selection, all } => {
                let filter = filter(selection, None, !*all, now);
                let mut out = String::new();
                for g in self.storage.list_grants(&filter).await? {
                    out.push_str(&format!(
                        "grant\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                        g.id,
                        g.client_id,
                        g.connector_id,
                        g.claims.user_id,
                        g.claims.email,
                        g.created_at,
                        g.revoked_at.map(|t| t.to_string()).unwrap_or("-".into()),
                    ));
                }
                // Sign-in sessions belong to no client.
                if selection.client.is_none() {
                    for s in self.storage.list_sessions(&filter).await? {
                        out.push_str(&format!(
                            "session\t{}\t{}\t{}\t{}\t{}\t{}\n",
                            s.connector_id,
                            s.claims.user_id,
                            s.claims.email,
                            s.created_at,
                            s.expires_at,
                            s.revoked_at.map(|t| t.to_string()).unwrap_or("-".into()),
                        ));
                    }
                }
                Ok(out)
            }
            SessionsCommand::Revoke {
                selection,
                all_for_user,
            } => {
                if selection.user.is_none() && selection.client.is_none() && all_for_user.is_none()
                {
                    return Err(AdminError::Invalid(
                        "say whose sessions to revoke: --user EMAIL, --client ID or --all-for-user EMAIL".into(),
                    ));
                }
                let filter = filter(selection, all_for_user.as_deref(), true, now);
                let revoked = self.storage.revoke_access(&filter).await?;
                let object = match (&filter.email, &filter.client_id) {
                    (Some(email), Some(client)) => format!("user:{email} client:{client}"),
                    (Some(email), None) => format!("user:{email}"),
                    (None, Some(client)) => format!("client:{client}"),
                    (None, None) => "all".to_string(),
                };
                let action = if all_for_user.is_some() {
                    "sessions.revoke_all_for_user"
                } else {
                    "sessions.revoke"
                };
                tracing::info!(
                    target: "lanyard::audit",
                    actor = %self.actor,
                    action,
                    object = %object,
                    time = now,
                    grants = revoked.grants,
                    sessions = revoked.sessions,
                    "admin change"
                );
                Ok(format!(
                    "revoked {} grants and {} sign-in sessions\n",
                    revoked.grants, revoked.sessions
                ))
            }
        }
    }
}

fn filter(
    selection: &Selection,
    email: Option<&str>,
    active_only: bool,
    now: UnixTime,
) -> GrantFilter {
    GrantFilter {
        connector_id: selection.connector.clone(),
        user_id: None,
        email: email.or(selection.user.as_deref()).map(str::to_string),
        client_id: selection.client.clone(),
        active_only,
        now,
    }
}

fn client_line(c: &ClientView) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\n",
        c.id,
        c.name,
        if c.public { "public" } else { "confidential" },
        c.origin.as_str(),
        c.redirect_uris.join(",")
    )
}

fn password_line(p: &PasswordView) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}\n",
        p.email,
        p.username,
        p.user_id,
        p.groups.join(","),
        p.origin.as_str()
    )
}

/// The first line of `input`, without its line ending.
fn read_password(input: &mut dyn BufRead) -> Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|e| AdminError::Stdin(e.to_string()))?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(AdminError::Stdin(
            "no password given (write it as one line on stdin)".into(),
        ));
    }
    Ok(password)
}
