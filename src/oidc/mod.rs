//! The OpenID Connect protocol: what each endpoint decides, independent of HTTP.
//!
//! Handlers in `server` translate requests into calls on [`Provider`]; every function here
//! takes its time from the injected clock and its state from storage.

pub mod claims;
pub mod client_auth;
pub mod clients;
pub mod device;
pub mod discovery;
pub mod error;
pub mod flow;
pub mod form;
pub mod grants;
pub mod issue;
pub mod logout;
pub mod password;
pub mod pkce;
pub mod ratelimit;
pub mod redirect;
pub mod revocation;
pub mod scopes;
pub mod secrets;
pub mod stored_connectors;
pub mod subject;
pub mod userinfo;

use std::sync::Arc;
use std::time::Duration;

use lanyard_connectors::{
    CallbackConnector, PasswordConnector, RefreshConnector, TokenIdentityConnector,
};
use url::Url;

use crate::clock::{SharedClock, UnixTime};
use crate::config::GrantType;
use crate::keys::KeyManager;
use crate::storage::SharedStorage;

pub use clients::{ClientInfo, ClientRegistry};
pub use error::{ErrorCode, OAuthError};

/// An authorization code is good for this long (and only once).
pub const AUTH_CODE_TTL_SECS: i64 = 600;

/// `expiry.refreshTokens`.
#[derive(Debug, Clone, Default)]
pub struct RefreshPolicy {
    pub valid_if_not_used_for: Option<Duration>,
    pub absolute_lifetime: Option<Duration>,
    pub reuse_interval: Duration,
    pub disable_rotation: bool,
}

/// The protocol settings resolved from the config.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The issuer URL exactly as it appears in `iss`; endpoints live under its path.
    pub issuer: Url,
    pub id_token_ttl: Duration,
    pub auth_request_ttl: Duration,
    pub skip_approval_screen: bool,
    /// Show the connector chooser even when only one connector applies (Dex's setting).
    pub always_show_login_screen: bool,
    /// The grants the token endpoint accepts (`oauth2.grantTypes`, or every supported one).
    pub grant_types: Vec<GrantType>,
    /// `oauth2.passwordConnector`: the connector the password grant logs people in through.
    pub password_connector: Option<String>,
    /// Browser cookies get `Secure` when the issuer is https.
    pub secure_cookies: bool,
    pub refresh: RefreshPolicy,
    /// `expiry.deviceRequests`.
    pub device_request_ttl: Duration,
    /// How long a browser stays signed in (the SSO cookie); zero turns sessions off.
    pub session_lifetime: Duration,
}

impl ProviderSettings {
    /// The issuer without a trailing slash, as it appears in `iss`.
    pub fn issuer_str(&self) -> &str {
        self.issuer.as_str().trim_end_matches('/')
    }

    /// Whether the token endpoint accepts `grant`.
    pub fn grant_enabled(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// An absolute URL of an endpoint under the issuer, e.g. `endpoint("/token")`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{}", self.issuer_str(), path)
    }

    /// The issuer's path ("" for a root issuer), the prefix of every route.
    pub fn base_path(&self) -> String {
        self.issuer.path().trim_end_matches('/').to_string()
    }
}

/// How a connector logs people in.
#[derive(Clone)]
pub enum ConnectorKind {
    /// lanyard shows a username/password form and the connector checks it.
    Password(Arc<dyn PasswordConnector>),
    /// The browser goes to the upstream and comes back to `/callback`.
    Callback(Arc<dyn CallbackConnector>),
    /// Nobody logs in through it: it only verifies subject tokens for token exchange (an
    /// `oidc` connector without `clientID`), so it has no login button.
    TokenExchangeOnly,
}

#[derive(Clone)]
pub struct ConnectorEntry {
    pub id: String,
    pub name: String,
    pub kind: ConnectorKind,
    pub refresh: Option<Arc<dyn RefreshConnector>>,
    /// Verifies upstream tokens presented to a token exchange (RFC 8693).
    pub token_identity: Option<Arc<dyn TokenIdentityConnector>>,
    /// Whether it can serve (it may have failed to open, or its upstream be unreachable).
    pub health: Arc<crate::metrics::ConnectorHealth>,
}

impl ConnectorEntry {
    /// A connector that checks passwords itself and refreshes its own sessions, up.
    pub fn password<C: PasswordConnector + RefreshConnector + 'static>(
        id: &str,
        name: &str,
        connector: C,
    ) -> Self {
        let connector = Arc::new(connector);
        Self::up(
            id,
            name,
            ConnectorKind::Password(connector.clone()),
            connector,
        )
    }

    /// A connector that signs people in upstream and refreshes its own sessions, up.
    pub fn callback<C: CallbackConnector + RefreshConnector + 'static>(
        id: &str,
        name: &str,
        connector: C,
    ) -> Self {
        let connector = Arc::new(connector);
        Self::up(
            id,
            name,
            ConnectorKind::Callback(connector.clone()),
            connector,
        )
    }

    fn up(id: &str, name: &str, kind: ConnectorKind, refresh: Arc<dyn RefreshConnector>) -> Self {
        Self {
            id: id.to_string(),
            name: name.to_string(),
            kind,
            refresh: Some(refresh),
            token_identity: None,
            health: crate::metrics::ConnectorHealth::up(),
        }
    }
}

impl ConnectorEntry {
    /// A connector that signs people in upstream but cannot re-check them later (SAML): as
    /// in Dex, its logins get no refresh token.
    pub fn callback_without_refresh<C: CallbackConnector + 'static>(
        id: &str,
        name: &str,
        connector: C,
    ) -> Self {
        Self {
            id: id.to_string(),
            name: name.to_string(),
            kind: ConnectorKind::Callback(Arc::new(connector)),
            refresh: None,
            token_identity: None,
            health: crate::metrics::ConnectorHealth::up(),
        }
    }
}

/// The identity provider: settings, storage, keys, clients and connectors.
pub struct Provider {
    pub settings: ProviderSettings,
    pub storage: SharedStorage,
    pub keys: Arc<KeyManager>,
    pub clock: SharedClock,
    pub clients: ClientRegistry,
    /// The config file's connectors (and the password database's), in config order.
    pub connectors: Vec<ConnectorEntry>,
    /// Connectors kept in storage, served after the config file's; `None` until the server
    /// says how to open them.
    stored_connectors: Option<stored_connectors::StoredConnectors>,
    /// Counters the telemetry port serves.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// Failed password logins, per account and per client address, when storage does not
    /// share them between replicas (SQLite, memory; see `ratelimit::PasswordAttempt`).
    /// Shared by every generation: a config reload must not forgive anyone's failed attempts.
    pub login_limiter: Arc<ratelimit::RateLimiter>,
    /// Wrong device user codes, per client address.
    pub user_code_limiter: Arc<ratelimit::RateLimiter>,
    discovery: discovery::DiscoveryDocument,
}

impl Provider {
    pub fn new(
        settings: ProviderSettings,
        storage: SharedStorage,
        keys: Arc<KeyManager>,
        clock: SharedClock,
        clients: ClientRegistry,
        connectors: Vec<ConnectorEntry>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        let mut settings = settings;
        // Token exchange needs a connector that can vouch for a subject token.
        if !connectors.iter().any(|c| c.token_identity.is_some()) {
            settings
                .grant_types
                .retain(|g| *g != GrantType::TokenExchange);
        }
        // The password grant needs its connector, and one that checks passwords.
        let password_connector = settings
            .password_connector
            .as_deref()
            .and_then(|id| connectors.iter().find(|c| c.id == id));
        if !matches!(
            password_connector.map(|c| &c.kind),
            Some(ConnectorKind::Password(_))
        ) {
            settings.grant_types.retain(|g| *g != GrantType::Password);
        }
        let discovery = discovery::DiscoveryDocument::build(&settings, keys.algorithm().as_str());
        Self {
            settings,
            storage,
            keys,
            clock,
            clients,
            connectors,
            stored_connectors: None,
            metrics,
            login_limiter: Arc::new(ratelimit::RateLimiter::new(
                ratelimit::RateLimitPolicy::login(),
                100_000,
            )),
            user_code_limiter: Arc::new(ratelimit::RateLimiter::new(
                ratelimit::RateLimitPolicy::user_code(),
                100_000,
            )),
            discovery,
        }
    }

    /// The provider after a config reload: new settings, clients and connectors over the same
    /// storage, keys, clock, metrics and rate limiters.
    pub fn reconfigured(
        &self,
        settings: ProviderSettings,
        clients: ClientRegistry,
        connectors: Vec<ConnectorEntry>,
    ) -> Self {
        let mut next = Provider::new(
            settings,
            self.storage.clone(),
            self.keys.clone(),
            self.clock.clone(),
            clients,
            connectors,
            self.metrics.clone(),
        );
        next.login_limiter = self.login_limiter.clone();
        next.user_code_limiter = self.user_code_limiter.clone();
        next
    }

    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    pub fn discovery(&self) -> &discovery::DiscoveryDocument {
        &self.discovery
    }

    /// Serves the connectors kept in storage too, opened with `opener`.
    pub fn serve_stored_connectors(&mut self, opener: Box<dyn stored_connectors::ConnectorOpener>) {
        self.stored_connectors = Some(stored_connectors::StoredConnectors::new(opener));
    }

    /// Every connector: the config file's, in config order, then the stored ones by id. A
    /// stored connector with the id of a config file's one is not served (the file's wins,
    /// as Dex's static connectors do).
    pub async fn all_connectors(
        &self,
    ) -> Result<Vec<ConnectorEntry>, crate::storage::StorageError> {
        let mut all = self.connectors.clone();
        if let Some(stored) = &self.stored_connectors {
            for entry in stored.current(&self.storage).await? {
                if !all.iter().any(|c| c.id == entry.id) {
                    all.push(entry);
                }
            }
        }
        Ok(all)
    }

    /// The connector with this id: the config file's, or a stored one as storage has it now.
    pub async fn connector(
        &self,
        id: &str,
    ) -> Result<Option<ConnectorEntry>, crate::storage::StorageError> {
        if let Some(c) = self.connectors.iter().find(|c| c.id == id) {
            return Ok(Some(c.clone()));
        }
        let Some(stored) = &self.stored_connectors else {
            return Ok(None);
        };
        Ok(stored
            .current(&self.storage)
            .await?
            .into_iter()
            .find(|c| c.id == id))
    }
}
