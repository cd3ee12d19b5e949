//! The changes an administrator makes to clients, local passwords, connectors and users' refresh tokens,
//! shared by `lanyard admin` and Dex's gRPC API so that both validate, hash and audit alike.
//!
//! Entries from the config (`staticClients`, `staticPasswords`) are read-only: the config file
//! is their source of truth. Every change is one audit line (target `lanyard::audit`) naming
//! who, through what, the action, the object and the time, never a secret.

mod connectors;

pub use connectors::{ConnectorChanges, ConnectorCheck, ConnectorView, NewConnector};

use lanyard_connectors::{password_hash, HashKind, PasswordHasher};

use crate::clock::{Clock, UnixTime};
use crate::config::{Config, GrantType, StaticClient, StaticPassword};
use crate::oidc::grants;
use crate::oidc::secrets::{random_token, sha256_hex};
use crate::storage::{Client, GrantFilter, Password, SharedStorage, StorageError};

/// 256 random bits.
const SECRET_BYTES: usize = 32;

/// The shortest password a user may choose (NIST SP 800-63B §5.1.1.1).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The bcrypt costs Dex's API accepts for a given hash: its default cost up to a bound that
/// keeps a login from costing the server seconds.
const API_BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 10..=16;

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error(transparent)]
    Storage(StorageError),
    #[error("client {0:?} comes from staticClients in the config and is read-only here; edit the config file instead")]
    StaticClient(String),
    #[error("password entry {0:?} comes from staticPasswords in the config and is read-only here; edit the config file instead")]
    StaticPassword(String),
    /// A connector from the config file (Dex's static connectors), in Dex's words.
    #[error("{0}")]
    StaticConnector(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

impl From<StorageError> for ManageError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::AlreadyExists(what) => ManageError::AlreadyExists(what),
            other => ManageError::Storage(other),
        }
    }
}

impl ManageError {
    /// For a create: a conflict is about `subject` as the caller names it, whichever unique
    /// column the database found taken.
    fn conflict_on(subject: String) -> impl FnOnce(StorageError) -> ManageError {
        move |e| match e {
            StorageError::AlreadyExists(_) => ManageError::AlreadyExists(subject),
            other => other.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, ManageError>;

/// Who makes a change, for the audit log.
#[derive(Debug, Clone)]
pub struct Actor {
    /// `lanyard admin`'s `--actor` or $USER; the API's client certificate subject, or
    /// `insecure` when the connection carries none.
    pub name: String,
    /// `admin` or `grpc`.
    pub via: &'static str,
}

/// Where a client or password entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Static,
    Stored,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Static => "static",
            Origin::Stored => "stored",
        }
    }
}

/// A client as the tools show it: never its secret (only a hash of it is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    pub id: String,
    pub name: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub logo_url: Option<String>,
    pub origin: Origin,
}

/// A client to create. `None` id or secret: drawn at random.
#[derive(Debug, Clone, Default)]
pub struct NewClient {
    pub id: Option<String>,
    pub secret: Option<String>,
    pub public: bool,
    pub name: Option<String>,
    pub logo_url: Option<String>,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub grant_types: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

/// A created client and its secret, shown this once.
#[derive(Debug, Clone)]
pub struct CreatedClient {
    pub view: ClientView,
    pub secret: Option<String>,
}

/// Changes to a stored client: `None` and empty lists leave a field as it is, as in Dex.
#[derive(Debug, Clone, Default)]
pub struct ClientChanges {
    pub name: Option<String>,
    pub logo_url: Option<String>,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub grant_types: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Draw a new secret; the old one stops working.
    pub rotate_secret: bool,
}

/// How a password is given: in clear (`lanyard admin`, hashed here) or already hashed with
/// bcrypt (Dex's API, whose cost Dex bounds).
pub enum PasswordInput {
    Plain(String),
    Bcrypt(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordView {
    pub email: String,
    pub username: String,
    pub user_id: String,
    pub groups: Vec<String>,
    pub origin: Origin,
}

pub struct NewPassword {
    pub email: String,
    pub password: PasswordInput,
    pub username: String,
    pub user_id: String,
    pub groups: Vec<String>,
}

/// Changes to a stored password entry; `None` leaves a field as it is.
#[derive(Default)]
pub struct PasswordChanges {
    pub username: Option<String>,
    pub groups: Option<Vec<String>>,
    pub password: Option<PasswordInput>,
}

/// A password entry to check a password against.
pub struct PasswordEntry {
    pub user_id: String,
    hash: String,
}

/// One refresh token of a user (one sign-in's grant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRef {
    /// The grant the token belongs to (it stays the same as the token rotates).
    pub id: String,
    pub client_id: String,
    pub created_at: UnixTime,
    pub last_used: UnixTime,
}

/// The operations, over one storage and the config in effect.
pub struct Directory<'a> {
    pub storage: &'a SharedStorage,
    pub config: &'a Config,
    pub clock: &'a dyn Clock,
    pub hasher: &'a PasswordHasher,
}

impl Directory<'_> {
    fn audit(&self, actor: &Actor, action: &str, object: &str, time: UnixTime) {
        tracing::info!(
            target: "lanyard::audit",
            actor = %actor.name,
            via = actor.via,
            action,
            object,
            time,
            "admin change"
        );
    }

    fn static_client(&self, id: &str) -> Option<&StaticClient> {
        self.config.static_client(id)
    }

    fn static_password(&self, email: &str) -> Option<&StaticPassword> {
        self.config
            .static_passwords
            .iter()
            .find(|p| p.email.eq_ignore_ascii_case(email))
    }

    fn ensure_not_static_client(&self, id: &str) -> Result<()> {
        match self.static_client(id) {
            Some(_) => Err(ManageError::StaticClient(id.to_string())),
            None => Ok(()),
        }
    }

    fn ensure_not_static_password(&self, email: &str) -> Result<()> {
        match self.static_password(email) {
            Some(_) => Err(ManageError::StaticPassword(email.to_string())),
            None => Ok(()),
        }
    }

    // --- clients ---------------------------------------------------------------------------

    /// Static clients first, then stored ones.
    pub async fn list_clients(&self) -> Result<Vec<ClientView>> {
        let mut out: Vec<ClientView> = self
            .config
            .static_clients
            .iter()
            .map(static_client_view)
            .collect();
        for c in self.storage.list_clients().await? {
            if self.static_client(&c.id).is_none() {
                out.push(stored_client_view(c));
            }
        }
        Ok(out)
    }

    pub async fn get_client(&self, id: &str) -> Result<ClientView> {
        if let Some(c) = self.static_client(id) {
            return Ok(static_client_view(c));
        }
        self.storage
            .get_client(id)
            .await?
            .map(stored_client_view)
            .ok_or_else(|| ManageError::NotFound(format!("client {id:?}")))
    }

    pub async fn create_client(&self, actor: &Actor, new: NewClient) -> Result<CreatedClient> {
        let id = new
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| random_token(16));
        self.ensure_not_static_client(&id)?;
        validate_client_id(&id)?;
        validate_grant_types(&new.grant_types)?;
        validate_redirect_uris(&id, &new.redirect_uris, &new.post_logout_redirect_uris)?;
        if new.redirect_uris.is_empty()
            && new
                .grant_types
                .iter()
                .any(|g| g == GrantType::AuthorizationCode.as_str())
        {
            return Err(ManageError::Invalid(
                "the authorization_code grant needs at least one redirect URI".into(),
            ));
        }
        let secret = match (new.public, new.secret.filter(|s| !s.is_empty())) {
            (true, Some(_)) => {
                return Err(ManageError::Invalid(format!(
                    "client {id:?} is public and takes no secret"
                )))
            }
            (true, None) => None,
            (false, given) => Some(given.unwrap_or_else(|| random_token(SECRET_BYTES))),
        };
        let now = self.clock.now();
        let client = Client {
            id: id.clone(),
            secret_sha256: secret.as_deref().map(sha256_hex),
            redirect_uris: new.redirect_uris,
            trusted_peers: new.trusted_peers,
            public: new.public,
            name: new.name.filter(|n| !n.is_empty()).unwrap_or(id),
            logo_url: new.logo_url.filter(|l| !l.is_empty()),
            grant_types: new.grant_types,
            post_logout_redirect_uris: new.post_logout_redirect_uris,
            allowed_connectors: Vec::new(),
            created_at: now,
        };
        self.storage
            .create_client(&client)
            .await
            .map_err(ManageError::conflict_on(format!("client {:?}", client.id)))?;
        self.audit(actor, "client.create", &client.id, now);
        Ok(CreatedClient {
            view: stored_client_view(client),
            secret,
        })
    }

    /// Applies `changes`; returns the new secret when one was drawn.
    pub async fn update_client(
        &self,
        actor: &Actor,
        id: &str,
        changes: ClientChanges,
    ) -> Result<Option<String>> {
        self.ensure_not_static_client(id)?;
        validate_grant_types(&changes.grant_types)?;
        validate_redirect_uris(
            id,
            &changes.redirect_uris,
            &changes.post_logout_redirect_uris,
        )?;
        let mut client = self
            .storage
            .get_client(id)
            .await?
            .ok_or_else(|| ManageError::NotFound(format!("client {id:?}")))?;
        if let Some(name) = changes.name.filter(|n| !n.is_empty()) {
            client.name = name;
        }
        if let Some(logo) = changes.logo_url.filter(|l| !l.is_empty()) {
            client.logo_url = Some(logo);
        }
        replace_if_given(&mut client.redirect_uris, changes.redirect_uris);
        replace_if_given(&mut client.grant_types, changes.grant_types);
        replace_if_given(&mut client.trusted_peers, changes.trusted_peers);
        replace_if_given(
            &mut client.post_logout_redirect_uris,
            changes.post_logout_redirect_uris,
        );
        let secret = if changes.rotate_secret {
            if client.public {
                return Err(ManageError::Invalid(format!(
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
        self.audit(actor, "client.update", &client.id, now);
        if secret.is_some() {
            self.audit(actor, "client.rotate_secret", &client.id, now);
        }
        Ok(secret)
    }

    pub async fn delete_client(&self, actor: &Actor, id: &str) -> Result<()> {
        self.ensure_not_static_client(id)?;
        if !self.storage.delete_client(id).await? {
            return Err(ManageError::NotFound(format!("client {id:?}")));
        }
        self.audit(actor, "client.delete", id, self.clock.now());
        Ok(())
    }

    // --- passwords -------------------------------------------------------------------------

    /// Static entries first, then stored ones.
    pub async fn list_passwords(&self) -> Result<Vec<PasswordView>> {
        let mut out: Vec<PasswordView> = self
            .config
            .static_passwords
            .iter()
            .map(|p| PasswordView {
                email: p.email.clone(),
                username: p.username.clone(),
                user_id: p.user_id.clone(),
                groups: p.groups.clone(),
                origin: Origin::Static,
            })
            .collect();
        for p in self.storage.list_passwords().await? {
            if self.static_password(&p.email).is_none() {
                out.push(PasswordView {
                    email: p.email,
                    username: p.username,
                    user_id: p.user_id,
                    groups: p.groups,
                    origin: Origin::Stored,
                });
            }
        }
        Ok(out)
    }

    /// The checks of [`Self::create_password`] that need no password: a tool runs them before
    /// it asks for one.
    pub fn ensure_creatable_password(&self, email: &str) -> Result<()> {
        self.ensure_not_static_password(email)?;
        validate_email(email)
    }

    pub async fn create_password(&self, actor: &Actor, new: NewPassword) -> Result<()> {
        self.ensure_creatable_password(&new.email)?;
        if new.user_id.is_empty() {
            return Err(ManageError::Invalid("no user ID supplied".into()));
        }
        let hash = self.hash(new.password).await?;
        let now = self.clock.now();
        let password = Password {
            email: new.email.to_lowercase(),
            hash,
            username: if new.username.is_empty() {
                new.email.clone()
            } else {
                new.username
            },
            user_id: new.user_id,
            groups: new.groups,
            created_at: now,
            updated_at: now,
        };
        self.storage
            .create_password(&password)
            .await
            .map_err(ManageError::conflict_on(format!(
                "password entry {:?}",
                password.email
            )))?;
        self.audit(actor, "password.create", &password.email, now);
        Ok(())
    }

    pub async fn update_password(
        &self,
        actor: &Actor,
        email: &str,
        changes: PasswordChanges,
    ) -> Result<()> {
        self.ensure_not_static_password(email)?;
        let mut password = self
            .storage
            .get_password(email)
            .await?
            .ok_or_else(|| ManageError::NotFound(format!("password entry {email:?}")))?;
        if let Some(username) = changes.username.filter(|u| !u.is_empty()) {
            password.username = username;
        }
        if let Some(groups) = changes.groups {
            password.groups = groups;
        }
        let set_password = changes.password.is_some();
        if let Some(input) = changes.password {
            password.hash = self.hash(input).await?;
        }
        let now = self.clock.now();
        password.updated_at = now;
        self.storage.update_password(&password).await?;
        self.audit(actor, "password.update", &password.email, now);
        if set_password {
            self.audit(actor, "password.set", &password.email, now);
        }
        Ok(())
    }

    pub async fn delete_password(&self, actor: &Actor, email: &str) -> Result<()> {
        self.ensure_not_static_password(email)?;
        if !self.storage.delete_password(email).await? {
            return Err(ManageError::NotFound(format!("password entry {email:?}")));
        }
        self.audit(
            actor,
            "password.delete",
            &email.to_lowercase(),
            self.clock.now(),
        );
        Ok(())
    }

    /// The entry for `email`, static or stored, whose password [`Self::check_password`]
    /// checks. The caller limits the rate of attempts.
    pub async fn password_entry(&self, email: &str) -> Result<Option<PasswordEntry>> {
        if let Some(p) = self.static_password(email) {
            return Ok(Some(PasswordEntry {
                user_id: p.user_id.clone(),
                hash: p.hash.clone(),
            }));
        }
        Ok(self
            .storage
            .get_password(email)
            .await?
            .map(|p| PasswordEntry {
                user_id: p.user_id,
                hash: p.hash,
            }))
    }

    pub async fn check_password(&self, entry: &PasswordEntry, password: &str) -> Result<bool> {
        match self.hasher.verify(&entry.hash, password).await {
            Ok(ok) => Ok(ok),
            Err(e) if e.is_bad_hash() => Ok(false),
            Err(e) => Err(ManageError::Hash(e.to_string())),
        }
    }

    async fn hash(&self, input: PasswordInput) -> Result<String> {
        match input {
            PasswordInput::Plain(password) => {
                if password.chars().count() < MIN_PASSWORD_CHARS {
                    return Err(ManageError::Invalid(format!(
                        "the password must be at least {MIN_PASSWORD_CHARS} characters long (NIST SP 800-63B)"
                    )));
                }
                self.hasher
                    .hash(&password)
                    .await
                    .map_err(|e| ManageError::Hash(e.to_string()))
            }
            PasswordInput::Bcrypt(hash) => match password_hash::inspect(&hash) {
                Ok(HashKind::Bcrypt { cost }) if API_BCRYPT_COSTS.contains(&cost) => Ok(hash),
                Ok(HashKind::Bcrypt { cost }) => Err(ManageError::Invalid(format!(
                    "given hash cost = {cost} is outside the accepted range {}..={}",
                    API_BCRYPT_COSTS.start(),
                    API_BCRYPT_COSTS.end()
                ))),
                Ok(_) => Err(ManageError::Invalid(
                    "parsing bcrypt hash: not a bcrypt hash".into(),
                )),
                Err(e) => Err(ManageError::Invalid(format!("parsing bcrypt hash: {e}"))),
            },
        }
    }

    // --- refresh tokens --------------------------------------------------------------------

    /// Every active grant of the user that has a refresh token, oldest first: one per
    /// sign-in, so a user signed in to one client from two machines has two. (Dex keeps one
    /// refresh token per user and client, and lists every one it keeps.)
    pub async fn list_refresh(&self, user_id: &str, connector_id: &str) -> Result<Vec<RefreshRef>> {
        let filter = GrantFilter {
            connector_id: Some(connector_id.to_string()),
            user_id: Some(user_id.to_string()),
            email: None,
            client_id: None,
            active_only: true,
            now: self.clock.now(),
        };
        let mut refs: Vec<RefreshRef> = Vec::new();
        for g in self.storage.list_grants(&filter).await? {
            let Some(last_used) = self.storage.refresh_last_used(&g.id).await? else {
                continue;
            };
            refs.push(RefreshRef {
                id: g.id,
                client_id: g.client_id,
                created_at: g.created_at,
                last_used,
            });
        }
        Ok(refs)
    }

    /// Revokes every grant (and so every token) of the user for `client_id`. `false` when
    /// there was none with a refresh token.
    pub async fn revoke_refresh(
        &self,
        actor: &Actor,
        user_id: &str,
        connector_id: &str,
        client_id: &str,
    ) -> Result<bool> {
        let now = self.clock.now();
        let filter = GrantFilter {
            connector_id: Some(connector_id.to_string()),
            user_id: Some(user_id.to_string()),
            email: None,
            client_id: Some(client_id.to_string()),
            active_only: true,
            now,
        };
        let mut revoked = 0u32;
        for g in self.storage.list_grants(&filter).await? {
            if self.storage.refresh_last_used(&g.id).await?.is_some()
                && self.storage.revoke_grant(&g.id, now).await?
            {
                revoked += 1;
            }
        }
        if revoked > 0 {
            let object = format!("user:{user_id} connector:{connector_id} client:{client_id}");
            self.audit(actor, "refresh.revoke", &object, now);
        }
        Ok(revoked > 0)
    }
}

fn static_client_view(c: &StaticClient) -> ClientView {
    ClientView {
        id: c.id.clone(),
        name: c.name.clone(),
        public: c.public,
        redirect_uris: c.redirect_uris.clone(),
        trusted_peers: c.trusted_peers.clone(),
        logo_url: c.logo_url.clone(),
        origin: Origin::Static,
    }
}

fn stored_client_view(c: Client) -> ClientView {
    ClientView {
        id: c.id,
        name: c.name,
        public: c.public,
        redirect_uris: c.redirect_uris,
        trusted_peers: c.trusted_peers,
        logo_url: c.logo_url,
        origin: Origin::Stored,
    }
}

fn replace_if_given(field: &mut Vec<String>, given: Vec<String>) {
    if !given.is_empty() {
        *field = given;
    }
}

fn validate_client_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(ManageError::Invalid(format!(
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
        Some(g) => Err(ManageError::Invalid(format!(
            "unsupported grant type {g:?}; supported: {}",
            grants::SUPPORTED.map(GrantType::as_str).join(", ")
        ))),
        None => Ok(()),
    }
}

fn validate_redirect_uris(client: &str, redirect: &[String], logout: &[String]) -> Result<()> {
    for uri in redirect.iter().chain(logout) {
        crate::config::check_redirect_uri(uri)
            .map_err(|e| ManageError::Invalid(format!("client {client:?}: {e}")))?;
    }
    Ok(())
}

fn validate_email(email: &str) -> Result<()> {
    let valid = email
        .split_once('@')
        .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(ManageError::Invalid(format!(
            "{email:?} is not an email address"
        )));
    }
    Ok(())
}
