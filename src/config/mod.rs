//! The YAML model: Dex v2.x's `config.yaml` schema plus lanyard's own top-level sections (`keys:`,
//! `sessions:`, `kubernetes:`).
//!
//! Loading goes: YAML → tree → `$VAR` expansion on string scalars (see [`env`]) →
//! section-by-section deserialisation into raw structs that deny unknown keys → semantic
//! validation. Every problem found is reported, each with its YAML path, so that one run of
//! `lanyard check-config` shows everything that needs fixing.

mod connectors;
mod de;
pub mod duration;
pub mod env;
mod frontend;
mod grpc;
mod housekeeping;
mod issuer;
mod logger;
mod path;
mod raw;
mod resolve;
mod sessions;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::storage::StorageSettings;

pub use connectors::{ConnectorConfig, ConnectorSettings, ConnectorType};
pub use duration::{format_duration, parse_go_duration, DurationError};
pub use frontend::FrontendConfig;
pub use grpc::{is_loopback, GrpcConfig, GrpcTls, CONNECTORS_CRUD_FLAG};
pub use housekeeping::HousekeepingConfig;
pub use logger::{LogFormat, LogLevel, LoggerConfig};
pub use resolve::{check_redirect_uri, normalize_pem_certificates};
pub use sessions::SessionsConfig;

/// The config `lanyard serve` runs with when no `--config` is given.
pub const DEV_CONFIG: &str = include_str!("../../config/dev.yaml");

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", display_error(.path, .message))]
pub struct ConfigError {
    /// Where it is, e.g. `staticClients[0].redirectURIs[1]`; empty for the file as a whole.
    pub path: String,
    pub message: String,
}

fn display_error(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    /// True if some error is at `path` and its message contains `needle`.
    pub fn has(&self, path: &str, needle: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.path == path && e.message.contains(needle))
    }
}

/// A fully validated and resolved config.
#[derive(Clone)]
pub struct Config {
    /// Trailing slashes are trimmed from the path. Use [`Config::issuer_string`] for the
    /// `iss` claim: `Url` always renders a root path as `/`, which kube-apiserver would not
    /// match against `--oidc-issuer-url=https://login.example.com`.
    pub issuer: Url,
    pub storage: StorageSettings,
    pub web: WebConfig,
    pub telemetry: TelemetryConfig,
    pub logger: LoggerConfig,
    pub expiry: ExpiryConfig,
    pub oauth2: OAuth2Config,
    pub static_clients: Vec<StaticClient>,
    pub enable_password_db: bool,
    pub static_passwords: Vec<StaticPassword>,
    pub connectors: Vec<ConnectorConfig>,
    pub frontend: FrontendConfig,
    pub keys: KeysConfig,
    /// lanyard's `sessions:` section.
    pub sessions: SessionsConfig,
    /// lanyard's `kubernetes:` section; empty when absent.
    pub kubernetes: KubernetesConfig,
    /// lanyard's `housekeeping:` section.
    pub housekeeping: HousekeepingConfig,
    /// Dex's `grpc:` section: the gRPC API.
    pub grpc: GrpcConfig,
    /// Settings accepted for Dex compatibility that have no effect in lanyard, and other
    /// things worth a log line at startup.
    pub warnings: Vec<ConfigError>,
}

impl Config {
    /// Expands `$VAR`s through `env`, parses and validates.
    pub fn from_yaml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        resolve::from_yaml_str(text, env)
    }

    /// Reads `path` and parses it with the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read config file {}: {e}", path.display()),
            }])
        })?;
        Self::from_yaml_str(&text, &|name| std::env::var(name).ok())
    }

    /// The embedded development config ([`DEV_CONFIG`]). It uses no variables.
    pub fn embedded_default() -> Result<Config, ConfigErrors> {
        Self::from_yaml_str(DEV_CONFIG, &|_| None)
    }

    /// The issuer's path without a trailing slash ("" at the root). Every endpoint lives
    /// under it, as in Dex: `{issuer_path}/auth`, `{issuer_path}/keys`, ...
    pub fn issuer_path(&self) -> String {
        self.issuer.path().trim_end_matches('/').to_string()
    }

    /// The issuer exactly as it appears in `iss` and discovery: no trailing slash.
    pub fn issuer_string(&self) -> String {
        self.issuer.as_str().trim_end_matches('/').to_string()
    }

    pub fn static_client(&self, id: &str) -> Option<&StaticClient> {
        self.static_clients.iter().find(|c| c.id == id)
    }

    pub fn connector(&self, id: &str) -> Option<&ConnectorConfig> {
        self.connectors.iter().find(|c| c.id == id)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("issuer", &self.issuer.as_str())
            .field("storage", &RedactedStorage(&self.storage))
            .field("web", &self.web)
            .field("telemetry", &self.telemetry)
            .field("logger", &self.logger)
            .field("expiry", &self.expiry)
            .field("oauth2", &self.oauth2)
            .field("static_clients", &self.static_clients)
            .field("enable_password_db", &self.enable_password_db)
            .field("static_passwords", &self.static_passwords)
            .field("connectors", &self.connectors)
            .field("frontend", &self.frontend)
            .field("keys", &self.keys)
            .field("kubernetes", &self.kubernetes)
            .field("housekeeping", &self.housekeeping)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Debug output of storage settings without the database password (which may also sit in
/// the connection string).
struct RedactedStorage<'a>(&'a StorageSettings);

impl fmt::Debug for RedactedStorage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            StorageSettings::Sqlite { file } => {
                f.debug_struct("Sqlite").field("file", file).finish()
            }
            StorageSettings::Memory => f.write_str("Memory"),
            StorageSettings::Postgres(pg) => f
                .debug_struct("Postgres")
                .field("url", &pg.url.as_ref().map(|_| "<redacted>"))
                .field("host", &pg.host)
                .field("port", &pg.port)
                .field("database", &pg.database)
                .field("user", &pg.user)
                .field("password", &pg.password.as_ref().map(|_| "<redacted>"))
                .field("ssl_mode", &pg.ssl_mode)
                .field("ssl_ca_file", &pg.ssl_ca_file)
                .field("max_open_conns", &pg.max_open_conns)
                .field("conn_timeout", &pg.conn_timeout)
                .finish(),
        }
    }
}

/// The result of `lanyard check-config --config FILE`: the text to print ("OK", or every
/// error one per line; warnings follow as `warning: ...` lines) and whether the file is valid.
pub fn check_config_report(path: &Path) -> (String, bool) {
    match Config::load(path) {
        Ok(config) => {
            let mut out = String::from("OK");
            for w in &config.warnings {
                out.push_str(&format!("\nwarning: {w}"));
            }
            (out, true)
        }
        Err(errors) => (errors.to_string(), false),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// `host:port` to serve plain HTTP on. A bare `:port` (Go's "all interfaces") is
    /// normalised to `0.0.0.0:port`.
    pub http: Option<String>,
    /// `host:port` to serve HTTPS on, with `tls_cert` and `tls_key`.
    pub https: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_min_version: Option<TlsVersion>,
    pub tls_max_version: Option<TlsVersion>,
    pub headers: WebHeaders,
    /// CORS origins: `*` or `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
    /// Extra request headers CORS allows.
    pub allowed_headers: Vec<String>,
    pub client_remote_ip: ClientRemoteIp,
    pub limits: ConnectionLimits,
}

/// How long clients may take and how many connections they may hold (lanyard-only keys of
/// `web`). The defaults bound what one slow client costs without hurting real ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `web.headerReadTimeout`: a request's head must arrive within this, counted from the
    /// moment the connection is ready for it (so it also ends idle HTTP/1 keep-alives).
    pub header_read: Duration,
    /// `web.tlsHandshakeTimeout`.
    pub tls_handshake: Duration,
    /// `web.requestBodyTimeout`: a request's whole body, else 408.
    pub request_body: Duration,
    /// `web.idleTimeout`: a connection with no request in flight for this long is closed.
    pub idle: Duration,
    /// `web.maxConnections`: more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read: Duration::from_secs(10),
            tls_handshake: Duration::from_secs(10),
            request_body: Duration::from_secs(30),
            idle: Duration::from_secs(120),
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Dex's `web.headers`: values for these security headers on every response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebHeaders {
    pub content_security_policy: Option<String>,
    pub x_frame_options: Option<String>,
    pub x_content_type_options: Option<String>,
    pub x_xss_protection: Option<String>,
    pub strict_transport_security: Option<String>,
}

impl WebHeaders {
    /// The configured headers as (name, value) pairs.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("Content-Security-Policy", &self.content_security_policy),
            ("X-Frame-Options", &self.x_frame_options),
            ("X-Content-Type-Options", &self.x_content_type_options),
            ("X-XSS-Protection", &self.x_xss_protection),
            ("Strict-Transport-Security", &self.strict_transport_security),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_deref().map(|v| (name, v)))
        .collect()
    }
}

/// Where the client's address comes from when lanyard sits behind proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRemoteIp {
    /// A header such as `X-Forwarded-For`, trusted only from `trusted_proxies`.
    pub header: Option<String>,
    pub trusted_proxies: Vec<IpCidr>,
}

/// An address range; a single address is a /32 (or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpCidr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpCidr {
    pub fn parse(s: &str) -> Option<IpCidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = prefix.unwrap_or(max);
        (prefix_len <= max).then_some(IpCidr { addr, prefix_len })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix_len, 32)
                    == masked(u32::from(*ip).into(), self.prefix_len, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix_len, 128)
                    == masked(u128::from(*ip), self.prefix_len, 128)
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// `host:port` for /metrics and health endpoints.
    pub http: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryConfig {
    /// How often signing keys rotate (Dex's meaning). `keys.rotation_period` is the value in
    /// effect; this is kept as written.
    pub signing_keys: Duration,
    pub id_tokens: Duration,
    /// How long a login may take from /auth to the code. 30 minutes, not Dex's 24 hours:
    /// every abandoned login (a closed tab, a bot hitting /auth) is a stored row until it
    /// expires, and a day of them piles up for nothing; no human needs a day to log in.
    pub auth_requests: Duration,
    pub device_requests: Duration,
    pub refresh_tokens: RefreshTokenExpiry,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenExpiry {
    /// A refresh token unused this long is dead. `None`: no idle limit.
    pub valid_if_not_used_for: Option<Duration>,
    /// A refresh token chain dies this long after the login. `None`: no limit.
    pub absolute_lifetime: Option<Duration>,
    /// How long the previous refresh token still works after rotation, so that a client
    /// retrying a request whose response was lost is not logged out.
    pub reuse_interval: Duration,
    pub disable_rotation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Config {
    pub response_types: Vec<ResponseType>,
    /// The grant types the server offers. When the config lists none, Dex's defaults:
    /// authorization_code, refresh_token, device_code, token-exchange, and password when
    /// `password_connector` is set.
    pub grant_types: Vec<GrantType>,
    pub skip_approval_screen: bool,
    pub always_show_login_screen: bool,
    /// The connector id the password grant checks credentials against.
    pub password_connector: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResponseType {
    Code,
    Token,
    IdToken,
}

impl ResponseType {
    pub const ALL: [ResponseType; 3] = [
        ResponseType::Code,
        ResponseType::Token,
        ResponseType::IdToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseType::Code => "code",
            ResponseType::Token => "token",
            ResponseType::IdToken => "id_token",
        }
    }

    pub fn parse(s: &str) -> Option<ResponseType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    DeviceCode,
    TokenExchange,
    ClientCredentials,
    Password,
}

impl GrantType {
    pub const ALL: [GrantType; 6] = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::DeviceCode,
        GrantType::TokenExchange,
        GrantType::ClientCredentials,
        GrantType::Password,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
            GrantType::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
        }
    }

    pub fn parse(s: &str) -> Option<GrantType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The `grant` label of the token metrics: the wire name, but short for token exchange.
    pub fn metrics_label(self) -> &'static str {
        match self {
            GrantType::TokenExchange => "token_exchange",
            other => other.as_str(),
        }
    }
}

/// A client from `staticClients`.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticClient {
    pub id: String,
    /// `None` only for public clients. Compare in constant time.
    pub secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub trusted_peers: Vec<String>,
    pub public: bool,
    /// Shown on the approval page; the id when the config gives no name.
    pub name: String,
    pub logo_url: Option<String>,
    /// lanyard extension. Empty: every grant type in `oauth2.grant_types`.
    pub grant_types: Vec<GrantType>,
    /// lanyard extension: where RP-initiated logout may return to.
    pub post_logout_redirect_uris: Vec<String>,
    /// lanyard extension. Empty: every connector.
    pub allowed_connectors: Vec<String>,
}

impl fmt::Debug for StaticClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticClient")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("redirect_uris", &self.redirect_uris)
            .field("trusted_peers", &self.trusted_peers)
            .field("public", &self.public)
            .field("name", &self.name)
            .field("logo_url", &self.logo_url)
            .field("grant_types", &self.grant_types)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .field("allowed_connectors", &self.allowed_connectors)
            .finish()
    }
}

/// A user from `staticPasswords`.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticPassword {
    /// As written; compare case-insensitively.
    pub email: String,
    /// A bcrypt hash (`$2a$`/`$2b$`/`$2y$`) or an argon2id PHC string, already decoded when
    /// the config gave it base64-encoded.
    pub hash: String,
    /// The email when the config gives no username.
    pub username: String,
    pub user_id: String,
    pub groups: Vec<String>,
}

impl StaticPassword {
    pub fn hash_kind(&self) -> PasswordHashKind {
        if self.hash.starts_with("$argon2id$") {
            PasswordHashKind::Argon2id
        } else {
            PasswordHashKind::Bcrypt
        }
    }
}

impl fmt::Debug for StaticPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticPassword")
            .field("email", &self.email)
            .field("hash", &"<redacted>")
            .field("username", &self.username)
            .field("user_id", &self.user_id)
            .field("groups", &self.groups)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordHashKind {
    Bcrypt,
    Argon2id,
}

/// lanyard's `keys:` section.
#[derive(Clone, PartialEq, Eq)]
pub struct KeysConfig {
    pub algorithm: SigningAlg,
    /// How long each key signs: `keys.rotationPeriod`, else `expiry.signingKeys`, else 6h.
    pub rotation_period: Duration,
    /// How long a key is in JWKS before it signs. At least 4 seconds (a warning below 2
    /// minutes), because verifiers cache JWKS, and replicas reload keys, every quarter of this.
    pub publish_ahead: Duration,
    /// How often each replica re-reads the signing keys from storage (and rotates when due):
    /// keys made by other replicas or `lanyard admin keys` show within this. At most a
    /// quarter of `publish_ahead`.
    pub poll_interval: Duration,
    /// The key-encryption key for private signing keys. `None`: not configured; the server
    /// decides (the dev config generates a key file).
    pub encryption_key: Option<[u8; 32]>,
}

impl fmt::Debug for KeysConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysConfig")
            .field("algorithm", &self.algorithm)
            .field("rotation_period", &self.rotation_period)
            .field("publish_ahead", &self.publish_ahead)
            .field("poll_interval", &self.poll_interval)
            .field(
                "encryption_key",
                &self.encryption_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// lanyard's `kubernetes:` section: the clusters whose API servers trust lanyard, and the
/// RBAC bindings lanyard renders for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub clusters: Vec<KubeCluster>,
    pub rbac: Vec<RbacBinding>,
    /// The CA of the issuer's TLS certificate, when it is not publicly trusted
    /// (`issuerCertificateAuthorityData` or `issuerCertificateAuthorityFile`): what renders
    /// for kubectl and kube-apiserver carries it.
    pub issuer_ca: Option<IssuerCa>,
}

/// The issuer's private CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerCa {
    /// CERTIFICATE blocks only, re-encoded.
    pub pem: String,
    /// The file it was read from, when it came from `issuerCertificateAuthorityFile`.
    pub file: Option<PathBuf>,
}

impl KubernetesConfig {
    pub fn cluster(&self, name: &str) -> Option<&KubeCluster> {
        self.clusters.iter().find(|c| c.name == name)
    }

    pub fn cluster_names(&self) -> Vec<&str> {
        self.clusters.iter().map(|c| c.name.as_str()).collect()
    }
}

/// An entry of `kubernetes.clusters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeCluster {
    /// Letters, digits, `.`, `_` and `-`: it names kubeconfig entries and files.
    pub name: String,
    /// Shown on pages; the name when the config gives none.
    pub display_name: String,
    /// The API server's https URL, as written.
    pub server: String,
    /// The API server's CA certificates as PEM (only CERTIFICATE blocks, re-encoded), from
    /// `certificateAuthorityData` (base64 of PEM, as in kubeconfig) or `certificateAuthorityFile`.
    pub certificate_authority_pem: String,
    /// A client in `staticClients`: the audience of the ID tokens this cluster accepts.
    pub client_id: String,
    /// The context's default namespace (default `default`).
    pub namespace: String,
    /// The kubeconfig context (default: the name).
    pub context_name: String,
    /// Default `email`.
    pub username_claim: String,
    /// Default `oidc:`. May be empty (no prefix). Never starts with `system:`.
    pub username_prefix: String,
    /// Default `groups`.
    pub groups_claim: String,
    /// Default `oidc:`. May be empty (no prefix). Never starts with `system:`.
    pub groups_prefix: String,
    /// The operator marked this cluster's client as handing its secret to users: the
    /// kubeconfig and login commands carry it.
    pub client_secret_for_users: bool,
}

/// An entry of `kubernetes.rbac`: members of `group` get `role` (in `namespace`, or
/// cluster-wide for a cluster role without a namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RbacBinding {
    /// As the upstream names it (e.g. GitHub's `acme:platform`), without the cluster's
    /// groups prefix.
    pub group: String,
    pub role: RbacRole,
    /// Always set for [`RbacRole::Role`].
    pub namespace: Option<String>,
    /// The clusters the binding is for; empty: every cluster.
    pub clusters: Vec<String>,
}

impl RbacBinding {
    pub fn applies_to(&self, cluster: &str) -> bool {
        self.clusters.is_empty() || self.clusters.iter().any(|c| c == cluster)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RbacRole {
    Role(String),
    ClusterRole(String),
}

impl RbacRole {
    pub fn name(&self) -> &str {
        match self {
            RbacRole::Role(n) | RbacRole::ClusterRole(n) => n,
        }
    }

    /// The `roleRef.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            RbacRole::Role(_) => "Role",
            RbacRole::ClusterRole(_) => "ClusterRole",
        }
    }
}

/// The signing algorithm is the keys module's own type: one name for one thing.
pub use crate::keys::SigningAlg;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_contains_addresses_in_range_only() {
        let net = IpCidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(&"10.1.200.3".parse().unwrap()));
        assert!(!net.contains(&"10.2.0.1".parse().unwrap()));
        assert!(!net.contains(&"::1".parse().unwrap()));
        let one = IpCidr::parse("192.168.1.1").unwrap();
        assert_eq!(one.prefix_len, 32);
        assert!(one.contains(&"192.168.1.1".parse().unwrap()));
        assert!(!one.contains(&"192.168.1.2".parse().unwrap()));
        let all = IpCidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(&"8.8.8.8".parse().unwrap()));
        let v6 = IpCidr::parse("fd00::/8").unwrap();
        assert!(v6.contains(&"fd12::1".parse().unwrap()));
        assert!(!v6.contains(&"fe80::1".parse().unwrap()));
        assert!(IpCidr::parse("10.0.0.0/33").is_none());
        assert!(IpCidr::parse("nope").is_none());
    }

    #[test]
    fn errors_display_one_per_line_with_path() {
        let errors = ConfigErrors(vec![
            ConfigError {
                path: "web.http".into(),
                message: "bad".into(),
            },
            ConfigError {
                path: String::new(),
                message: "whole file".into(),
            },
        ]);
        assert_eq!(errors.to_string(), "web.http: bad\nwhole file");
    }
}
