//! Building a running lanyard from a validated config: storage, keys, connectors, clients,
//! and the background tasks (key rotation, housekeeping).

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_connectors::authproxy::{AuthProxyConfig, AuthProxyConnector};
use lanyard_connectors::github::{GithubConfig, GithubConnector};
use lanyard_connectors::gitlab::GitlabConnector;
use lanyard_connectors::google::{GoogleConfig, GoogleConnector};
use lanyard_connectors::microsoft::{MicrosoftConfig, MicrosoftConnector};
use lanyard_connectors::mock::{MockCallbackConnector, MockPasswordConnector};
use lanyard_connectors::oauth::OAuthConnector;
use lanyard_connectors::password_hash::inspect as inspect_hash;
use lanyard_connectors::saml::{SamlConfig, SamlConnector};
use lanyard_connectors::{
    ConnectorError, HashKind, LdapConfig, LdapConnector, LocalConnector, LocalProfile, LocalUser,
    LocalUserDirectory, OidcConfig, OidcConnector, PasswordHasher,
};
use rand::RngCore;
use tokio::sync::watch;

use crate::clock::{SharedClock, SystemClock};
use crate::config::{
    Config, ConnectorConfig, ConnectorSettings, ConnectorType, GrantType, ListenAddr, LogFormat,
};
use crate::keys::{self, KeyManager, KeySettings, KeyStore};
use crate::oidc::secrets::{random_token, sha256_hex};
use crate::oidc::{
    grants, ClientInfo, ClientRegistry, ConnectorEntry, ConnectorKind, Provider, ProviderSettings,
    RefreshPolicy,
};
use crate::storage::{
    self, Password, SharedStorage, StorageError, StorageSettings, SweepCutoffs, Swept,
};
use crate::web::{Branding, Templates, WebError};

use super::failed_connector::{ConnectorFailures, FailedConnector, CONTINUE_ENV};
use super::reload::{watch_config, ConfigSource, Reloader};
use super::routes::AppState;
use super::stored_connector::{ConnectorOpening, StoredConnectorOpener};
use super::{
    bind, router, serve_http, serve_https, telemetry_router, KubePage, ListenSettings, Live,
    ServeError,
};
use crate::metrics::{ConnectorHealth, Metrics};
use crate::web::kubeconfig::KUBECONFIG_CLIENT;

/// The user the embedded default creates on first start.
pub const DEV_ADMIN_EMAIL: &str = "admin@example.com";

/// Where data lives when the config says nothing (the embedded default's SQLite, a generated
/// key-encryption key), relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "lanyard-data";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error(transparent)]
    Web(#[from] WebError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("connector {id}: {reason}")]
    Connector { id: String, reason: String },
    #[error("every connector failed to open ({failed}/{total}): {reasons}")]
    AllConnectorsFailed {
        failed: usize,
        total: usize,
        reasons: String,
    },
    #[error("key-encryption key: {0}")]
    EncryptionKey(String),
}

pub struct BuildOptions {
    /// Running the embedded default: create the development admin user on first start.
    pub embedded_default: bool,
    pub clock: SharedClock,
    /// Where a generated key-encryption key is kept when the config names none.
    pub data_dir: PathBuf,
    /// What a connector that fails to open does to the start and to reloads.
    pub connector_failures: ConnectorFailures,
}

impl BuildOptions {
    pub fn new(embedded_default: bool) -> Self {
        Self {
            embedded_default,
            clock: Arc::new(SystemClock),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            connector_failures: ConnectorFailures::Continue,
        }
    }

    /// [`BuildOptions::new`] with Dex's `DEX_CONTINUE_ON_CONNECTOR_FAILURE` read from the
    /// environment.
    pub fn from_env(embedded_default: bool) -> Self {
        let value = std::env::var(CONTINUE_ENV).ok();
        let (connector_failures, warning) = ConnectorFailures::from_env_value(value.as_deref());
        if let Some(warning) = warning {
            tracing::warn!("{warning}");
        }
        Self {
            connector_failures,
            ..Self::new(embedded_default)
        }
    }
}

/// Everything a server needs, built and checked, not yet listening.
pub struct App {
    /// The first generation's provider. Storage, keys, clock and metrics are the same in
    /// every generation; clients, connectors and settings are what a reload replaces.
    pub provider: Arc<Provider>,
    pub metrics: Arc<Metrics>,
    pub listen: ListenSettings,
    /// How often the signing keys are re-read from storage (`keys.pollInterval`).
    pub key_poll_interval: Duration,
    /// How often expired rows are swept (`housekeeping.interval`).
    pub housekeeping_every: Duration,
    live: Live,
    reloader: Reloader,
    config_source: Option<ConfigSource>,
    hasher: Arc<PasswordHasher>,
    /// Dex's `grpc:` section, and its listener once [`App::run`] bound it.
    grpc: crate::config::GrpcConfig,
    grpc_listener: Option<tokio::net::TcpListener>,
}

/// Installs the tracing subscriber for every command: `logger.level`, `logger.format` (text or
/// json), and `RUST_LOG` when set. `lanyard admin`'s audit lines pass whatever the level.
pub fn init_logging(config: &Config) -> LogFlush {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{},lanyard::audit=info,sqlx=warn,hyper=warn,tower_http=warn",
            config.logger.level.as_str()
        ))
    });
    // One line per request, written out by a thread of its own in gathered bursts, so the
    // request path makes no system call for it (see `log_writer`). Never lossy.
    let (writer, flush) = match super::log_writer::start(std::io::stderr()) {
        Ok(started) => started,
        Err(e) => {
            eprintln!("cannot start the log writer thread: {e}");
            std::process::exit(1);
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let _ = if config.logger.format == LogFormat::Json {
        // `span` carries the request's id and client address; the list of every enclosing
        // span would repeat it on each line.
        builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(super::json_log::JsonLines::default())
            .try_init()
    } else {
        builder.try_init()
    };
    flush
}

pub use super::log_writer::LogFlush;

pub async fn build(config: &Config, options: BuildOptions) -> Result<App, AppError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let storage = storage::open(&config.storage).await?;
    if let StorageSettings::Sqlite { file } = &config.storage {
        tracing::info!(file = %file.display(), "storing data in SQLite");
    }

    let keys = KeyManager::start(
        Arc::new(storage.clone()) as Arc<dyn KeyStore>,
        options.clock.clone(),
        key_settings(config, &options.data_dir, MissingKek::Generate)?,
    )
    .await?;

    let hasher = Arc::new(PasswordHasher::new());
    if options.embedded_default {
        ensure_dev_admin(&storage, &hasher, options.clock.now()).await?;
    }
    learn_hash_kinds(&hasher, config, &storage).await?;
    let metrics = Arc::new(Metrics::default());
    let state = generation(
        config,
        &storage,
        &hasher,
        &options.clock,
        options.connector_failures,
        |settings, clients, connectors| {
            Provider::new(
                settings,
                storage.clone(),
                keys,
                options.clock.clone(),
                clients,
                connectors,
                metrics.clone(),
            )
        },
    )?;
    let listen = ListenSettings {
        http: config.web.http.clone(),
        https: config.web.https.clone(),
        tls_cert: config.web.tls_cert.clone(),
        tls_key: config.web.tls_key.clone(),
        telemetry: config.telemetry.http.clone(),
        headers: config.web.headers.pairs(),
        allowed_origins: config.web.allowed_origins.clone(),
        allowed_headers: config.web.allowed_headers.clone(),
        remote_ip: config.web.client_remote_ip.clone(),
        tls_min_version: config.web.tls_min_version,
        tls_max_version: config.web.tls_max_version,
        limits: config.web.limits,
    };
    let provider = state.provider.clone();
    let live = Live::new(state);
    Ok(App {
        provider,
        metrics: metrics.clone(),
        listen,
        key_poll_interval: config.keys.poll_interval,
        housekeeping_every: config.housekeeping.interval,
        reloader: Reloader::new(
            config.clone(),
            live.clone(),
            storage,
            hasher.clone(),
            metrics,
            options.connector_failures,
        ),
        live,
        config_source: None,
        hasher,
        grpc: config.grpc.clone(),
        grpc_listener: None,
    })
}

/// A refused login must take as long whatever kind of hash the user has, or whether the
/// user exists: the hasher learns every kind in `staticPasswords` and in the password
/// database, and holds refusals to the costliest (kinds first stored later are learned at
/// their first verification).
pub(super) async fn learn_hash_kinds(
    hasher: &PasswordHasher,
    config: &Config,
    storage: &SharedStorage,
) -> Result<(), AppError> {
    // One hash of each kind: the password database may hold many users, and holding all
    // their rows at once would make resident memory grow with it.
    let mut kinds: HashMap<HashKind, String> = HashMap::new();
    let mut keep = |hash: &str| {
        if let Ok(kind) = inspect_hash(hash) {
            kinds.entry(kind).or_insert_with(|| hash.to_string());
        }
    };
    config.static_passwords.iter().for_each(|p| keep(&p.hash));
    storage.each_password_hash(&mut keep).await?;
    let learned = match hasher.learn_kinds(kinds.values().map(String::as_str)).await {
        Ok(()) => hasher.warm_up().await,
        Err(e) => Err(e),
    };
    learned.map_err(|e| AppError::Connector {
        id: "local".into(),
        reason: e.to_string(),
    })
}

/// One generation of what a config reload can change: connectors, clients (static and the
/// kubeconfig page's own), protocol settings, pages and the `kubernetes` section. `provider`
/// puts the settings, clients and connectors together with the parts every generation shares.
pub(super) fn generation(
    config: &Config,
    storage: &SharedStorage,
    hasher: &Arc<PasswordHasher>,
    clock: &SharedClock,
    on_failure: ConnectorFailures,
    provider: impl FnOnce(ProviderSettings, ClientRegistry, Vec<ConnectorEntry>) -> Provider,
) -> Result<AppState, AppError> {
    let connectors = build_connectors(config, storage, hasher, clock, on_failure)?;

    let mut static_clients: Vec<ClientInfo> = config
        .static_clients
        .iter()
        .map(|c| ClientInfo {
            id: c.id.clone(),
            secret_sha256: c.secret.as_deref().map(sha256_hex),
            redirect_uris: c.redirect_uris.clone(),
            public: c.public,
            name: c.name.clone(),
            logo_url: c.logo_url.clone(),
            trusted_peers: c.trusted_peers.clone(),
            grant_types: c
                .grant_types
                .iter()
                .map(|g| g.as_str().to_string())
                .collect(),
            post_logout_redirect_uris: c.post_logout_redirect_uris.clone(),
            allowed_connectors: c.allowed_connectors.clone(),
        })
        .collect();
    if !config.kubernetes.clusters.is_empty() {
        // The kubeconfig page signs people in through lanyard itself, as this public client.
        static_clients.push(ClientInfo {
            id: KUBECONFIG_CLIENT.to_string(),
            secret_sha256: None,
            redirect_uris: vec![format!(
                "{}/kubeconfig",
                config.issuer.as_str().trim_end_matches('/')
            )],
            public: true,
            name: "Kubernetes access".to_string(),
            logo_url: None,
            trusted_peers: Vec::new(),
            grant_types: vec![GrantType::AuthorizationCode.as_str().to_string()],
            post_logout_redirect_uris: Vec::new(),
            allowed_connectors: Vec::new(),
        });
    }
    let grant_types = if config.oauth2.grant_types.is_empty() {
        grants::SUPPORTED.to_vec()
    } else {
        config
            .oauth2
            .grant_types
            .iter()
            .copied()
            .filter(|g| grants::supported(*g))
            .collect()
    };
    let password_connector = config.oauth2.password_connector.clone();
    let settings = ProviderSettings {
        issuer: config.issuer.clone(),
        id_token_ttl: config.expiry.id_tokens,
        auth_request_ttl: config.expiry.auth_requests,
        skip_approval_screen: config.oauth2.skip_approval_screen,
        always_show_login_screen: config.oauth2.always_show_login_screen,
        grant_types,
        password_connector,
        secure_cookies: config.issuer.scheme() == "https",
        refresh: RefreshPolicy {
            valid_if_not_used_for: config.expiry.refresh_tokens.valid_if_not_used_for,
            absolute_lifetime: config.expiry.refresh_tokens.absolute_lifetime,
            reuse_interval: config.expiry.refresh_tokens.reuse_interval,
            disable_rotation: config.expiry.refresh_tokens.disable_rotation,
        },
        device_request_ttl: config.expiry.device_requests,
        session_lifetime: config.sessions.lifetime,
    };
    let mut provider = provider(
        settings,
        ClientRegistry::new(static_clients, storage.clone()),
        connectors,
    );
    let keys = provider.keys.clone();
    provider.serve_stored_connectors(Box::new(StoredConnectorOpener {
        opening: ConnectorOpening {
            config: config.clone(),
            storage: storage.clone(),
            hasher: hasher.clone(),
            clock: clock.clone(),
        },
        keys,
    }));
    let provider = Arc::new(provider);
    let templates = Templates::new(
        config.frontend.dir.as_deref(),
        Branding {
            name: config.frontend.issuer.clone().unwrap_or_default(),
            logo_url: config.frontend.logo_url.clone(),
            theme: config.frontend.theme.clone().unwrap_or_default(),
            extra: config.frontend.extra.clone(),
        },
    )?;
    let kube = KubePage {
        kubernetes: config.kubernetes.clone(),
        user_secrets: config
            .kubernetes
            .clusters
            .iter()
            .filter(|c| c.client_secret_for_users)
            .filter_map(|c| {
                let secret = config.static_client(&c.client_id)?.secret.clone()?;
                Some((c.client_id.clone(), secret))
            })
            .collect(),
    };
    provider.metrics.track_connectors(
        provider
            .connectors
            .iter()
            .map(|c| (c.id.clone(), c.health.clone()))
            .collect(),
    );
    Ok(AppState {
        provider,
        templates,
        kube: Arc::new(kube),
    })
}

/// What to do when the config names no key-encryption key and no generated one exists yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingKek {
    /// Generate one (the server's first start).
    Generate,
    /// Fail: a tool must not invent a key the servers do not have.
    Refuse,
}

/// The signing key settings of `config`, with its key-encryption key resolved: the server
/// and `lanyard admin keys` both come through here, so they seal and open keys alike.
pub fn key_settings(
    config: &Config,
    data_dir: &Path,
    missing: MissingKek,
) -> Result<KeySettings, AppError> {
    Ok(KeySettings {
        algorithm: config.keys.algorithm,
        rotation_period: config.keys.rotation_period,
        publish_ahead: config.keys.publish_ahead,
        token_lifetime: config.expiry.id_tokens,
        encryption_key: encryption_key(config, data_dir, missing)?,
    })
}

/// `keys.encryptionKey` (or its file or variable) when the config has one; otherwise the
/// generated one kept beside the data.
pub fn encryption_key(
    config: &Config,
    data_dir: &Path,
    missing: MissingKek,
) -> Result<[u8; 32], AppError> {
    match config.keys.encryption_key {
        Some(k) => Ok(k),
        None => generated_encryption_key(&config.storage, data_dir, missing),
    }
}

/// A stable key-encryption key for configs that name none (Dex configs have no such setting):
/// kept in a file beside the data, created on first start. Fine for one instance; replicas
/// sharing PostgreSQL must share `keys.encryptionKey` instead.
fn generated_encryption_key(
    storage: &StorageSettings,
    data_dir: &Path,
    missing: MissingKek,
) -> Result<[u8; 32], AppError> {
    if *storage == StorageSettings::Memory {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        return Ok(key);
    }
    let dir = match storage {
        StorageSettings::Sqlite { file } => file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.to_path_buf()),
        _ => data_dir.to_path_buf(),
    };
    let path = dir.join("encryption-key");
    let fail = |what: &str, e: std::io::Error| {
        AppError::EncryptionKey(format!("{what} {}: {e}", path.display()))
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = STANDARD.decode(text.trim()).map_err(|_| {
                AppError::EncryptionKey(format!("{} is not base64", path.display()))
            })?;
            let key: [u8; 32] = bytes.try_into().map_err(|_| {
                AppError::EncryptionKey(format!("{} does not hold 32 bytes", path.display()))
            })?;
            tracing::warn!(file = %path.display(), "using the generated key-encryption key: for development or a single instance only; set keys.encryptionKey in production");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing == MissingKek::Refuse => {
            Err(AppError::EncryptionKey(format!(
                "the config sets no keys.encryptionKey and {} does not exist; use the config \
                 and working directory the server runs with",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::storage::sqlite::create_private_dir(&dir)
                .map_err(|e| fail("cannot create the directory of", e))?;
            let mut key = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut key);
            write_private_file(&path, STANDARD.encode(key).as_bytes())
                .map_err(|e| fail("cannot write", e))?;
            tracing::warn!(file = %path.display(), "generated a key-encryption key for development only; set keys.encryptionKey in production");
            Ok(key)
        }
        Err(e) => Err(fail("cannot read", e)),
    }
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)
}

/// The embedded default's first start: a local admin with a random password, printed once.
async fn ensure_dev_admin(
    storage: &SharedStorage,
    hasher: &PasswordHasher,
    now: i64,
) -> Result<(), AppError> {
    if storage.get_password(DEV_ADMIN_EMAIL).await?.is_some() {
        return Ok(());
    }
    let password = random_token(12);
    let hash = hasher
        .hash(&password)
        .await
        .map_err(|e| AppError::Connector {
            id: "local".into(),
            reason: e.to_string(),
        })?;
    let record = Password {
        email: DEV_ADMIN_EMAIL.to_string(),
        hash,
        username: "admin".to_string(),
        user_id: random_token(16),
        groups: vec!["admins".to_string()],
        created_at: now,
        updated_at: now,
    };
    match storage.create_password(&record).await {
        // Another process created it first; its password was printed there.
        Ok(()) | Err(StorageError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    // Shown to the person who started lanyard, once; it is not a log line.
    println!(
        "\nlanyard: created the development user {DEV_ADMIN_EMAIL} with password {password}\n\
         lanyard: it is stored hashed and will not be shown again.\n"
    );
    Ok(())
}

/// Users of the local connector: `staticPasswords` first, then the password database.
struct PasswordDirectory {
    static_users: Vec<LocalUser>,
    storage: Option<SharedStorage>,
}

fn local_user(p: Password) -> LocalUser {
    LocalUser {
        email: p.email,
        username: p.username,
        user_id: p.user_id,
        hash: p.hash,
        groups: p.groups,
        profile: LocalProfile::default(),
    }
}

#[async_trait]
impl LocalUserDirectory for PasswordDirectory {
    async fn find(&self, login: &str) -> Result<Option<LocalUser>, ConnectorError> {
        if let Some(u) = self
            .static_users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(login) || u.username == login)
        {
            return Ok(Some(u.clone()));
        }
        let Some(storage) = &self.storage else {
            return Ok(None);
        };
        let unavailable = |e: StorageError| ConnectorError::Unavailable(e.to_string());
        if let Some(p) = storage.get_password(login).await.map_err(unavailable)? {
            return Ok(Some(local_user(p)));
        }
        Ok(storage
            .get_password_by_username(login)
            .await
            .map_err(unavailable)?
            .map(local_user))
    }
}

fn build_connectors(
    config: &Config,
    storage: &SharedStorage,
    hasher: &Arc<PasswordHasher>,
    clock: &SharedClock,
    on_failure: ConnectorFailures,
) -> Result<Vec<ConnectorEntry>, AppError> {
    let mut entries = open_connectors(
        config,
        &config.connectors,
        storage,
        hasher,
        clock,
        on_failure,
    )?;
    // Dex adds the password database as connector "local" when enablePasswordDB is set.
    if config.enable_password_db && !entries.iter().any(|e| e.id == "local") {
        entries.push(local_connector(config, storage, hasher, "local", "Email"));
    }
    let failed = entries.iter().filter(|e| e.health.failed_at_open()).count();
    if failed > 0 && failed == entries.len() {
        return Err(AppError::AllConnectorsFailed {
            failed,
            total: entries.len(),
            reasons: entries
                .iter()
                .filter_map(|e| e.health.failure())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    Ok(entries)
}

/// The password database as a connector: `staticPasswords` first, then stored passwords.
fn local_connector(
    config: &Config,
    storage: &SharedStorage,
    hasher: &Arc<PasswordHasher>,
    id: &str,
    name: &str,
) -> ConnectorEntry {
    let static_users: Vec<LocalUser> = config
        .static_passwords
        .iter()
        .map(|p| LocalUser {
            email: p.email.clone(),
            username: p.username.clone(),
            user_id: p.user_id.clone(),
            hash: p.hash.clone(),
            groups: p.groups.clone(),
            profile: LocalProfile {
                name: p.name.clone(),
                preferred_username: p.preferred_username.clone(),
                email_verified: p.email_verified,
            },
        })
        .collect();
    let directory = Arc::new(PasswordDirectory {
        static_users,
        storage: Some(storage.clone()),
    });
    ConnectorEntry::password(id, name, LocalConnector::new(directory, hasher.clone()))
}

/// Opens `connectors` (the config file's, or one stored connector resolved the same way),
/// each as its type says; one that fails serves as failed ([`failed_entry`]) or, with
/// [`ConnectorFailures::Stop`], fails the whole.
pub(super) fn open_connectors(
    config: &Config,
    connectors: &[ConnectorConfig],
    storage: &SharedStorage,
    hasher: &Arc<PasswordHasher>,
    clock: &SharedClock,
    on_failure: ConnectorFailures,
) -> Result<Vec<ConnectorEntry>, AppError> {
    let local = |id: &str, name: &str| local_connector(config, storage, hasher, id, name);
    let mut entries = Vec::new();
    for c in connectors {
        let opened = match &c.settings {
            ConnectorSettings::Local => Ok(local(&c.id, &c.name)),
            ConnectorSettings::Ldap(settings) => ldap_connector(config, c, settings)
                .map(|connector| ConnectorEntry::password(&c.id, &c.name, connector)),
            ConnectorSettings::Github(settings) => github_connector(config, c, settings)
                .map(|connector| ConnectorEntry::callback(&c.id, &c.name, connector)),
            ConnectorSettings::Oidc(settings) => oidc_connector(config, c, settings, clock),
            ConnectorSettings::Gitlab(settings) => {
                GitlabConnector::new(settings, &callback_url(config))
                    .map_err(|e| connector_failed(c)(e.to_string()))
                    .map(|connector| ConnectorEntry::callback(&c.id, &c.name, connector))
            }
            ConnectorSettings::OAuth(settings) => {
                OAuthConnector::new(settings, &callback_url(config))
                    .map_err(|e| connector_failed(c)(e.to_string()))
                    .map(|connector| ConnectorEntry::callback(&c.id, &c.name, connector))
            }
            ConnectorSettings::AuthProxy(settings) => authproxy_connector(c, settings),
            ConnectorSettings::Google(settings) => google_connector(config, c, settings, clock),
            ConnectorSettings::Microsoft(settings) => {
                microsoft_connector(config, c, settings, clock)
                    .map(|connector| ConnectorEntry::callback(&c.id, &c.name, connector))
            }
            ConnectorSettings::Saml(settings) => {
                saml_connector(config, c, settings, clock).map(|connector| {
                    ConnectorEntry::callback_without_refresh(&c.id, &c.name, connector)
                })
            }
            ConnectorSettings::Invalid(errors) => Err(connector_failed(c)(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
            ConnectorSettings::MockCallback(_) => Ok(ConnectorEntry::callback(
                &c.id,
                &c.name,
                MockCallbackConnector,
            )),
            ConnectorSettings::MockPassword(settings) => MockPasswordConnector::new(settings)
                .map_err(|e| connector_failed(c)(e.to_string()))
                .map(|connector| ConnectorEntry::password(&c.id, &c.name, connector)),
        };
        if matches!(
            c.settings,
            ConnectorSettings::MockCallback(_) | ConnectorSettings::MockPassword(_)
        ) {
            tracing::warn!(connector = %c.id, "DEVELOPMENT CONNECTOR {}: it signs in a fixed user (Kilgore Trout); never run it where others can reach lanyard", c.type_.as_str());
        }
        match opened {
            Ok(entry) => entries.push(entry),
            Err(err) if on_failure == ConnectorFailures::Continue => {
                tracing::error!(connector = %c.id, error = %err, "failed to open connector; serving without it ({CONTINUE_ENV}=false makes this stop the start)");
                entries.push(failed_entry(c, err.to_string()));
            }
            Err(err) => return Err(err),
        }
    }
    Ok(entries)
}

/// What serves in place of a connector that failed to open: its button says it is
/// unavailable, choosing it answers 503, and refreshing or exchanging through it fails.
pub(super) fn failed_entry(c: &ConnectorConfig, reason: String) -> ConnectorEntry {
    let failed = Arc::new(FailedConnector {
        reason: reason.clone(),
    });
    let kind = if c.type_.checks_passwords() {
        ConnectorKind::Password(failed.clone())
    } else {
        ConnectorKind::Callback(failed.clone())
    };
    ConnectorEntry {
        id: c.id.clone(),
        name: c.name.clone(),
        kind,
        refresh: Some(failed.clone()),
        token_identity: (c.type_ == ConnectorType::Oidc).then_some(failed as _),
        health: ConnectorHealth::failed_to_open(reason),
    }
}

fn connector_failed(c: &ConnectorConfig) -> impl Fn(String) -> AppError + '_ {
    |reason| AppError::Connector {
        id: c.id.clone(),
        reason,
    }
}

/// An LDAP connector; what fails only now (reading `rootCA`, `clientCert`, ...) names the key
/// path, e.g. `connectors[1].config.rootCA: cannot read ...`.
fn ldap_connector(
    config: &Config,
    c: &ConnectorConfig,
    settings: &LdapConfig,
) -> Result<LdapConnector, AppError> {
    // A stored connector (Dex's API) is not in the file: its settings are its `config`.
    let path = match config.connectors.iter().position(|other| other.id == c.id) {
        Some(index) => format!("connectors[{index}].config"),
        None => "config".to_string(),
    };
    let fail = connector_failed(c);
    LdapConnector::new(settings.clone()).map_err(|e| match e {
        // These start with the key at fault (rootCA, clientCert, ...).
        ConnectorError::Config(key_and_problem) => fail(format!("{path}.{key_and_problem}")),
        other => fail(format!("{path}: {other}")),
    })
}

/// The issuer's `/callback`, where upstreams send the browser back.
fn callback_url(config: &Config) -> String {
    format!("{}/callback", config.issuer.as_str().trim_end_matches('/'))
}

/// A `type: authproxy` connector: the login goes to `/callback/<id>` behind the proxy, which
/// has nothing to re-check at refresh (as in Dex, a refresh keeps what the login said).
fn authproxy_connector(
    c: &ConnectorConfig,
    settings: &AuthProxyConfig,
) -> Result<ConnectorEntry, AppError> {
    let connector =
        AuthProxyConnector::new(&c.id, settings).map_err(|e| connector_failed(c)(e.to_string()))?;
    Ok(ConnectorEntry {
        id: c.id.clone(),
        name: c.name.clone(),
        kind: ConnectorKind::Callback(Arc::new(connector)),
        refresh: None,
        token_identity: None,
        health: ConnectorHealth::up(),
    })
}

/// A `type: github` connector; GitHub sends the browser back to the issuer's `/callback`.
fn github_connector(
    config: &Config,
    c: &ConnectorConfig,
    settings: &GithubConfig,
) -> Result<GithubConnector, AppError> {
    let callback = format!("{}/callback", config.issuer.as_str().trim_end_matches('/'));
    GithubConnector::new(settings, &callback).map_err(|e| connector_failed(c)(e.to_string()))
}

/// A `type: microsoft` connector; Microsoft sends the browser back to the issuer's `/callback`.
fn microsoft_connector(
    config: &Config,
    c: &ConnectorConfig,
    settings: &MicrosoftConfig,
    clock: &SharedClock,
) -> Result<MicrosoftConnector, AppError> {
    let callback = format!("{}/callback", config.issuer.as_str().trim_end_matches('/'));
    let clock = clock.clone();
    MicrosoftConnector::new(settings, &callback, Arc::new(move || clock.now()))
        .map_err(|e| connector_failed(c)(e.to_string()))
}

/// A connector's `redirectURI`, when given, must be lanyard's callback URL.
fn check_redirect_uri(
    config: &Config,
    c: &ConnectorConfig,
    redirect_uri: &str,
) -> Result<(), AppError> {
    let callback = format!("{}/callback", config.issuer.as_str().trim_end_matches('/'));
    if !redirect_uri.is_empty() && redirect_uri != callback {
        return Err(connector_failed(c)(format!(
            "redirectURI {redirect_uri} must be lanyard's callback URL {callback}"
        )));
    }
    Ok(())
}

/// Runs `discover` (an upstream's discovery) in the background without waiting for it; the
/// health it returns says "unreachable" if it fails. Logins retry discovery themselves.
fn probe_upstream(
    connector_id: &str,
    discover: impl std::future::Future<Output = Result<(), ConnectorError>> + Send + 'static,
) -> Arc<ConnectorHealth> {
    let health = ConnectorHealth::up();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let id = connector_id.to_string();
        let health = health.clone();
        runtime.spawn(async move {
            if let Err(err) = discover.await {
                tracing::warn!(connector = %id, error = %err, "upstream identity provider unreachable at start; each login retries");
                health.unreachable(err.to_string());
            }
        });
    }
    health
}

/// A `type: google` connector. As with `oidc`, Google's discovery is only probed at start: an
/// unreachable Google fails its own logins with an error page.
fn google_connector(
    config: &Config,
    c: &ConnectorConfig,
    settings: &GoogleConfig,
    clock: &SharedClock,
) -> Result<ConnectorEntry, AppError> {
    let fail = connector_failed(c);
    check_redirect_uri(config, c, &settings.redirect_uri)?;
    let clock = clock.clone();
    let connector = Arc::new(
        GoogleConnector::new(&c.id, settings, Arc::new(move || clock.now()))
            .map_err(|e| fail(e.to_string()))?,
    );
    let probe = connector.clone();
    let health = probe_upstream(&c.id, async move { probe.discover().await });
    Ok(ConnectorEntry {
        id: c.id.clone(),
        name: c.name.clone(),
        kind: ConnectorKind::Callback(connector.clone()),
        refresh: Some(connector),
        token_identity: None,
        health,
    })
}

/// A `type: saml` connector. The IdP posts its response to `redirectURI`, which must be
/// lanyard's `/callback` (the ACS URL); `ca` is read now.
fn saml_connector(
    config: &Config,
    c: &ConnectorConfig,
    settings: &SamlConfig,
    clock: &SharedClock,
) -> Result<SamlConnector, AppError> {
    let fail = connector_failed(c);
    let callback = format!("{}/callback", config.issuer.as_str().trim_end_matches('/'));
    if settings.redirect_uri() != Some(callback.as_str()) {
        return Err(fail(format!(
            "redirectURI {} must be lanyard's callback URL {callback}, where the IdP posts its response",
            settings.redirect_uri().unwrap_or_default()
        )));
    }
    let clock = clock.clone();
    SamlConnector::new(settings, Arc::new(move || clock.now())).map_err(|e| fail(e.to_string()))
}

/// A `type: oidc` connector. A bad `redirectURI` stops the start with its id; the upstream is
/// only probed: logins retry discovery, so an upstream that is down fails its own logins with
/// an error page instead of keeping the server from starting.
fn oidc_connector(
    config: &Config,
    c: &ConnectorConfig,
    settings: &OidcConfig,
    clock: &SharedClock,
) -> Result<ConnectorEntry, AppError> {
    let fail = connector_failed(c);
    check_redirect_uri(config, c, &settings.redirect_uri)?;
    let clock = clock.clone();
    let connector = Arc::new(
        OidcConnector::new(&c.id, settings.clone(), Arc::new(move || clock.now()))
            .map_err(|e| fail(e.to_string()))?
            .for_token_exchange_only(&config.issuer_string()),
    );
    let probe = connector.clone();
    let health = probe_upstream(&c.id, async move { probe.discover().await });
    if !connector.signs_in() {
        // Without clientID (as Dex allows) it only verifies token-exchange subject tokens.
        return Ok(ConnectorEntry {
            id: c.id.clone(),
            name: c.name.clone(),
            kind: ConnectorKind::TokenExchangeOnly,
            refresh: None,
            token_identity: Some(connector),
            health,
        });
    }
    Ok(ConnectorEntry {
        id: c.id.clone(),
        name: c.name.clone(),
        kind: ConnectorKind::Callback(connector.clone()),
        refresh: Some(connector.clone()),
        token_identity: Some(connector),
        health,
    })
}

impl App {
    /// Reload the config from `source` on SIGHUP (and, if it asks, when the file changes)
    /// while running.
    pub fn reload_config_from(mut self, source: ConfigSource) -> Self {
        self.config_source = Some(source);
        self
    }

    /// Applies new configs to this server while it runs (what SIGHUP does).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Binds every configured listener, starts the background tasks, and serves until
    /// `shutdown` resolves; then stops accepting and lets in-flight requests finish.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        if let Some(addr) = &self.grpc.addr {
            self.grpc_listener = Some(bind(addr).await?);
        }
        let mut listeners = Vec::new();
        if let Some(addr) = &self.listen.http {
            listeners.push(Listener::Http(bind(addr).await?));
        }
        let telemetry = match &self.listen.telemetry {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        self.run_on(listeners, telemetry, shutdown).await
    }

    /// Like [`run`](Self::run) with listeners the caller bound (tests bind port 0 first).
    pub async fn run_on(
        mut self,
        mut listeners: Vec<Listener>,
        telemetry: Option<tokio::net::TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = router(self.live.clone(), self.metrics.clone(), &self.listen)?;
        if let (Some(addr), Some(cert), Some(key)) = (
            &self.listen.https,
            &self.listen.tls_cert,
            &self.listen.tls_key,
        ) {
            listeners.push(Listener::Https {
                addr: addr.clone(),
                cert: cert.clone(),
                key: key.clone(),
            });
        }

        let mut tasks = tokio::task::JoinSet::new();
        for listener in listeners {
            let app = app.clone();
            let rx = stop_rx.clone();
            match listener {
                Listener::Http(l) => {
                    tracing::info!(addr = %display_addr(&l), issuer = %self.provider.settings.issuer_str(), "serving HTTP");
                    tasks.spawn(serve_http(l, app, self.listen.limits, rx));
                }
                Listener::Https { addr, cert, key } => {
                    tracing::info!(addr = %addr, "serving HTTPS");
                    let settings = self.listen.clone();
                    tasks.spawn(
                        async move { serve_https(addr, &settings, cert, key, app, rx).await },
                    );
                }
            }
        }
        if let Some(l) = telemetry {
            tracing::info!(addr = %display_addr(&l), "serving telemetry (/healthz, /healthz/live, /healthz/ready, /metrics)");
            tasks.spawn(serve_http(
                l,
                telemetry_router(self.provider.clone(), self.metrics.clone()).into(),
                self.listen.limits,
                stop_rx.clone(),
            ));
        }
        if let Some(l) = self.grpc_listener.take() {
            self.log_grpc(&l);
            tasks.spawn(crate::api::serve(
                l,
                self.grpc.clone(),
                Arc::new(RunningServer {
                    live: self.live.clone(),
                    reloader: self.reloader.clone(),
                }),
                self.hasher.clone(),
                stop_rx.clone(),
            ));
        }
        let rotation = tokio::spawn(keys::run_rotation(
            self.provider.keys.clone(),
            self.key_poll_interval,
            stop_rx.clone(),
        ));
        let sweeper = tokio::spawn(housekeeping(
            self.live.clone(),
            self.housekeeping_every,
            stop_rx.clone(),
        ));
        let watcher = self.config_source.take().map(|source| {
            tokio::spawn(watch_config(self.reloader.clone(), source, stop_rx.clone()))
        });

        let mut result = Ok(());
        tokio::select! {
            _ = shutdown => tracing::info!("shutting down: finishing in-flight requests"),
            Some(done) = tasks.join_next() => {
                // A listener stopped on its own: that is an error worth exiting for.
                if let Ok(Err(e)) = done {
                    result = Err(AppError::Serve(e));
                }
            }
        }
        let _ = stop_tx.send(true);
        let drain = async {
            while let Some(done) = tasks.join_next().await {
                if let Ok(Err(e)) = done {
                    tracing::error!(error = %e, "listener failed while shutting down");
                }
            }
        };
        if tokio::time::timeout(super::SHUTDOWN_GRACE, drain)
            .await
            .is_err()
        {
            tracing::warn!("grace period over; closing the remaining connections");
        }
        let _ = rotation.await;
        let _ = sweeper.await;
        if let Some(watcher) = watcher {
            let _ = watcher.await;
        }
        result
    }
}

impl App {
    /// Says at start how the API is protected, so that an open one is never a surprise.
    fn log_grpc(&self, l: &tokio::net::TcpListener) {
        let addr = display_addr(l);
        match &self.grpc.tls {
            Some(tls) if tls.client_ca.is_some() => tracing::info!(
                %addr,
                reflection = self.grpc.reflection,
                "serving Dex's gRPC API over mutual TLS (clients need a certificate from grpc.tlsClientCA)"
            ),
            Some(_) => tracing::warn!(
                %addr,
                reflection = self.grpc.reflection,
                "serving Dex's gRPC API over TLS without client certificates: whoever reaches this address can manage clients and passwords"
            ),
            None => tracing::warn!(
                %addr,
                reflection = self.grpc.reflection,
                "serving Dex's gRPC API in plaintext without authentication: whoever reaches this address can manage clients and passwords"
            ),
        }
    }
}

/// What the gRPC API reads of this server.
struct RunningServer {
    live: Live,
    reloader: Reloader,
}

#[async_trait]
impl crate::api::Running for RunningServer {
    fn provider(&self) -> Arc<Provider> {
        self.live.current().provider
    }

    async fn config(&self) -> Config {
        self.reloader.running_config().await
    }
}

pub enum Listener {
    Http(tokio::net::TcpListener),
    Https {
        addr: ListenAddr,
        cert: PathBuf,
        key: PathBuf,
    },
}

fn display_addr(l: &tokio::net::TcpListener) -> String {
    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
}

/// Deletes expired logins, codes, tokens, device requests and sessions every `every`
/// (`housekeeping.interval`).
async fn housekeeping(live: Live, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match sweep_once(&live.current().provider, 1000).await {
            Ok(swept) if swept.total() > 0 => tracing::debug!(?swept, "housekeeping"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; will retry"),
        }
    }
}

/// One housekeeping pass: sweeps in batches of `batch` rows per kind (so no statement holds
/// the database for long), and repeats while a batch came back full, so a backlog of
/// abandoned logins is cleared in one pass without unbounded statements.
pub async fn sweep_once(provider: &Provider, batch: u32) -> Result<Swept, StorageError> {
    const DAY: i64 = 24 * 3600;
    let mut total = Swept::default();
    loop {
        let now = provider.now();
        let cutoffs = SweepCutoffs {
            now,
            // Redeemed codes are kept a day past expiry so that a late replay still revokes.
            code_cutoff: now - DAY,
            grant_cutoff: now - DAY,
            refresh_idle_cutoff: provider
                .settings
                .refresh
                .valid_if_not_used_for
                .map(|d| now - d.as_secs() as i64),
            rotated_cutoff: now - 7 * DAY,
            client_grant_cutoff: now - provider.settings.id_token_ttl.as_secs() as i64 - DAY,
            batch,
        };
        let swept = provider.storage.sweep(&cutoffs).await?;
        let counts = [
            swept.auth_requests,
            swept.auth_codes,
            swept.access_tokens,
            swept.refresh_tokens,
            swept.grants,
            swept.device_requests,
            swept.sessions,
            swept.login_attempts,
        ];
        total.auth_requests += swept.auth_requests;
        total.auth_codes += swept.auth_codes;
        total.access_tokens += swept.access_tokens;
        total.refresh_tokens += swept.refresh_tokens;
        total.grants += swept.grants;
        total.device_requests += swept.device_requests;
        total.sessions += swept.sessions;
        total.login_attempts += swept.login_attempts;
        // A count past the batch: grants that went with their tokens, which are not part
        // of one kind's batch, on top of a full batch of grants.
        if counts.iter().all(|&count| count < u64::from(batch)) {
            return Ok(total);
        }
    }
}
