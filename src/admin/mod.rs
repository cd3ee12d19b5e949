//! `lanyard admin`: clients, local passwords, users' sessions and signing keys in the
//! configured storage.
//!
//! Entries from the config (`staticClients`, `staticPasswords`) are read-only here: the config
//! file is their source of truth. Every change is one audit line (target `lanyard::audit`)
//! naming actor, action, object and time, never a secret.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lanyard_connectors::PasswordHasher;

mod keys;
pub use keys::KeysCommand;

use crate::clock::{Clock, SystemClock, UnixTime};
use crate::config::{Config, GrantType};
use crate::oidc::grants;
use crate::oidc::secrets::{random_token, sha256_hex};
use crate::storage::{self, Client, GrantFilter, Password, SharedStorage, StorageError};

/// 256 random bits.
const SECRET_BYTES: usize = 32;

/// The shortest password a user may choose (NIST SP 800-63B §5.1.1.1).
const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("client {0:?} comes from staticClients in the config and is read-only here; edit the config file instead")]
    StaticClient(String),
    #[error("password entry {0:?} comes from staticPasswords in the config and is read-only here; edit the config file instead")]
    StaticPassword(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the password from stdin: {0}")]
    Stdin(String),
    #[error("cannot write to stdout: {0}")]
    Stdout(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
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
    fn audit(&self, action: &str, object: &str, time: UnixTime) {
        tracing::info!(
            target: "lanyard::audit",
            actor = %self.actor,
            action,
            object,
            time,
            "admin change"
        );
    }

    fn ensure_not_static_client(&self, id: &str) -> Result<()> {
        match self.config.static_client(id) {
            Some(_) => Err(AdminError::StaticClient(id.to_string())),
            None => Ok(()),
        }
    }

    fn ensure_not_static_password(&self, email: &str) -> Result<()> {
        if self
            .config
            .static_passwords
            .iter()
            .any(|p| p.email.eq_ignore_ascii_case(email))
        {
            return Err(AdminError::StaticPassword(email.to_string()));
        }
        Ok(())
    }

    async fn clients(&self, command: &ClientsCommand) -> Result<String> {
        match command {
            ClientsCommand::List => {
                let mut out = String::new();
                for c in &self.config.static_clients {
                    out.push_str(&client_line(
                        &c.id,
                        &c.name,
                        c.public,
                        "static",
                        &c.redirect_uris,
                    ));
                }
                for c in self.storage.list_clients().await? {
                    out.push_str(&client_line(
                        &c.id,
                        &c.name,
                        c.public,
                        "stored",
                        &c.redirect_uris,
                    ));
                }
                Ok(out)
            }
            ClientsCommand::Create(fields) => {
                self.ensure_not_static_client(&fields.id)?;
                validate_client_id(&fields.id)?;
                validate_grant_types(&fields.grant_types)?;
                validate_redirect_uris(&fields.id, fields)?;
                if fields.redirect_uris.is_empty()
                    && !fields.grant_types.is_empty()
                    && fields
                        .grant_types
                        .iter()
                        .any(|g| g == GrantType::AuthorizationCode.as_str())
                {
                    return Err(AdminError::Invalid(
                        "the authorization_code grant needs at least one --redirect-uri".into(),
                    ));
                }
                let now = self.clock.now();
                let secret = (!fields.public).then(|| random_token(SECRET_BYTES));
                let client = Client {
                    id: fields.id.clone(),
                    secret_sha256: secret.as_deref().map(sha256_hex),
                    redirect_uris: fields.redirect_uris.clone(),
                    trusted_peers: fields.trusted_peers.clone(),
                    public: fields.public,
                    name: fields.name.clone().unwrap_or_else(|| fields.id.clone()),
                    logo_url: None,
                    grant_types: fields.grant_types.clone(),
                    post_logout_redirect_uris: fields.post_logout_redirect_uris.clone(),
                    allowed_connectors: Vec::new(),
                    created_at: now,
                };
                self.storage.create_client(&client).await?;
                self.audit("client.create", &client.id, now);
                Ok(secret.map(|s| format!("{s}\n")).unwrap_or_default())
            }
            ClientsCommand::Update {
                fields,
                rotate_secret,
            } => {
                self.ensure_not_static_client(&fields.id)?;
                validate_grant_types(&fields.grant_types)?;
                validate_redirect_uris(&fields.id, fields)?;
                let mut client = self
                    .storage
                    .get_client(&fields.id)
                    .await?
                    .ok_or_else(|| AdminError::NotFound(format!("client {:?}", fields.id)))?;
                if fields.public && !client.public {
                    return Err(AdminError::Invalid(
                        "--public only applies on create; delete and re-create the client to change its type".into(),
                    ));
                }
                if let Some(name) = &fields.name {
                    client.name.clone_from(name);
                }
                replace_if_given(&mut client.redirect_uris, &fields.redirect_uris);
                replace_if_given(&mut client.grant_types, &fields.grant_types);
                replace_if_given(&mut client.trusted_peers, &fields.trusted_peers);
                replace_if_given(
                    &mut client.post_logout_redirect_uris,
                    &fields.post_logout_redirect_uris,
                );
                let secret = if *rotate_secret {
                    if client.public {
                        return Err(AdminError::Invalid(format!(
                            "client {:?} is public and has no secret to rotate",
                            client.id
                        )));
                    }
                    let secret = random_token(SECRET_BYTES);
                    client.secret_sha256 = Some(sha256_hex(&secret));
                    Some(secret)
                } else {
                    None
                };
                self.storage.update_client(&client).await?;
                let now = self.clock.now();
                self.audit("client.update", &client.id, now);
                if secret.is_some() {
                    self.audit("client.rotate_secret", &client.id, now);
                }
                Ok(secret.map(|s| format!("{s}\n")).unwrap_or_default())
            }
            ClientsCommand::Delete { id } => {
                self.ensure_not_static_client(id)?;
                if !self.storage.delete_client(id).await? {
                    return Err(AdminError::NotFound(format!("client {id:?}")));
                }
                self.audit("client.delete", id, self.clock.now());
                Ok(String::new())
            }
        }
    }

    async fn passwords(
        &self,
        command: &PasswordsCommand,
        input: &mut dyn BufRead,
    ) -> Result<String> {
        match command {
            PasswordsCommand::List => {
                let mut out = String::new();
                for p in &self.config.static_passwords {
                    out.push_str(&password_line(
                        &p.email,
                        &p.username,
                        &p.user_id,
                        &p.groups,
                        "static",
                    ));
                }
                for p in self.storage.list_passwords().await? {
                    out.push_str(&password_line(
                        &p.email,
                        &p.username,
                        &p.user_id,
                        &p.groups,
                        "stored",
                    ));
                }
                Ok(out)
            }
            PasswordsCommand::Create {
                email,
                username,
                user_id,
                groups,
                password_stdin: _,
            } => {
                self.ensure_not_static_password(email)?;
                validate_email(email)?;
                let hash = hash_password(&read_password(input)?).await?;
                let now = self.clock.now();
                let password = Password {
                    email: email.clone(),
                    hash,
                    username: username.clone().unwrap_or_else(|| email.clone()),
                    user_id: user_id.clone().unwrap_or_else(|| random_token(16)),
                    groups: groups.clone(),
                    created_at: now,
                    updated_at: now,
                };
                self.storage.create_password(&password).await?;
                self.audit("password.create", &password.email.to_lowercase(), now);
                Ok(String::new())
            }
            PasswordsCommand::Update {
                email,
                username,
                groups,
                clear_groups,
                password_stdin,
            } => {
                self.ensure_not_static_password(email)?;
                let mut password = self
                    .storage
                    .get_password(email)
                    .await?
                    .ok_or_else(|| AdminError::NotFound(format!("password entry {email:?}")))?;
                if let Some(username) = username {
                    password.username.clone_from(username);
                }
                if *clear_groups {
                    password.groups.clear();
                }
                replace_if_given(&mut password.groups, groups);
                if *password_stdin {
                    password.hash = hash_password(&read_password(input)?).await?;
                }
                let now = self.clock.now();
                password.updated_at = now;
                self.storage.update_password(&password).await?;
                self.audit("password.update", &password.email, now);
                if *password_stdin {
                    self.audit("password.set", &password.email, now);
                }
                Ok(String::new())
            }
            PasswordsCommand::Delete { email } => {
                self.ensure_not_static_password(email)?;
                if !self.storage.delete_password(email).await? {
                    return Err(AdminError::NotFound(format!("password entry {email:?}")));
                }
                self.audit("password.delete", &email.to_lowercase(), self.clock.now());
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

fn client_line(
    id: &str,
    name: &str,
    public: bool,
    origin: &str,
    redirect_uris: &[String],
) -> String {
    format!(
        "{id}\t{name}\t{}\t{origin}\t{}\n",
        if public { "public" } else { "confidential" },
        redirect_uris.join(",")
    )
}

fn password_line(
    email: &str,
    username: &str,
    user_id: &str,
    groups: &[String],
    origin: &str,
) -> String {
    format!(
        "{email}\t{username}\t{user_id}\t{}\t{origin}\n",
        groups.join(",")
    )
}

fn replace_if_given(field: &mut Vec<String>, given: &[String]) {
    if !given.is_empty() {
        *field = given.to_vec();
    }
}

fn validate_client_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(AdminError::Invalid(format!(
            "client id {id:?} must be non-empty and free of spaces and control characters"
        )));
    }
    Ok(())
}

fn validate_grant_types(grant_types: &[String]) -> Result<()> {
    match grant_types
        .iter()
        .find(|g| !GrantType::parse(g).is_some_and(grants::supported))
    {
        Some(g) => Err(AdminError::Invalid(format!(
            "unsupported grant type {g:?}; supported: {}",
            grants::SUPPORTED.map(GrantType::as_str).join(", ")
        ))),
        None => Ok(()),
    }
}

fn validate_redirect_uris(client: &str, fields: &ClientFields) -> Result<()> {
    for uri in fields
        .redirect_uris
        .iter()
        .chain(&fields.post_logout_redirect_uris)
    {
        crate::config::check_redirect_uri(uri)
            .map_err(|e| AdminError::Invalid(format!("client {client:?}: {e}")))?;
    }
    Ok(())
}

fn validate_email(email: &str) -> Result<()> {
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(AdminError::Invalid(format!(
            "{email:?} is not an email address"
        )));
    }
    Ok(())
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
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AdminError::Invalid(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters long (NIST SP 800-63B)"
        )));
    }
    Ok(password)
}

async fn hash_password(password: &str) -> Result<String> {
    PasswordHasher::new()
        .hash(password)
        .await
        .map_err(|e| AdminError::Hash(e.to_string()))
}
