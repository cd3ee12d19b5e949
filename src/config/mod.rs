//! The YAML model: Dex v2.x's `config.yaml` schema plus lanyard's own top-level sections (`keys:`,
//! `sessions:`, `kubernetes:`).
//!
//! Loading goes: YAML → tree → section-by-section deserialisation into raw structs that deny
//! unknown keys, with `$VAR` expansion where Dex expands (see [`env`]) → semantic validation. Every problem found is reported, each with its YAML path, so that one run of
//! `lanyard check-config` shows everything that needs fixing.

mod connectors;
mod de;
pub mod duration;
pub mod env;
mod expiry;
mod frontend;
mod grpc;
mod housekeeping;
mod issuer;
mod keys;
mod kubernetes;
mod listen;
mod logger;
mod oauth2;
mod path;
mod raw;
mod resolve;
mod sessions;
mod signer;
mod static_clients;
mod static_passwords;
mod storage;
mod telemetry;
mod web;

use std::fmt;
use std::path::Path;

use url::Url;

use crate::storage::StorageSettings;

pub use connectors::{
    resolve_stored_connector, ConnectorConfig, ConnectorSettings, ConnectorType,
    CONTINUE_ON_CONNECTOR_FAILURE_ENV,
};
pub use duration::{format_duration, parse_go_duration, DurationError};
pub use expiry::{ExpiryConfig, RefreshTokenExpiry};
pub use frontend::FrontendConfig;
pub use grpc::{GrpcConfig, GrpcTls, CONNECTORS_CRUD_FLAG};
pub use housekeeping::HousekeepingConfig;
pub use keys::KeysConfig;
pub use kubernetes::{
    normalize_pem_certificates, IssuerCa, KubeCluster, KubernetesConfig, RbacBinding, RbacRole,
};
pub use listen::ListenAddr;
pub use logger::{LogFormat, LogLevel, LoggerConfig};
pub use oauth2::{GrantType, OAuth2Config, ResponseType};
pub use sessions::SessionsConfig;
pub use static_clients::{check_redirect_uri, StaticClient};
pub use static_passwords::{PasswordHashKind, StaticPassword};
pub use telemetry::TelemetryConfig;
pub use web::{
    ClientRemoteIp, ConnectionLimits, CorsOrigin, IpCidr, TlsVersion, WebConfig, WebHeaders,
};

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
    /// What the connectors' own rules refuse ([`ConnectorSettings::Invalid`]): not errors of
    /// the config as a whole, since Dex would start without those connectors.
    pub fn connector_errors(&self) -> Vec<ConfigError> {
        self.connectors
            .iter()
            .filter_map(|c| match &c.settings {
                ConnectorSettings::Invalid(errors) => Some(errors.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// What `check-config` judges: [`from_yaml_str`](Self::from_yaml_str)'s errors, or, for
    /// a config that loads, what its connectors' own rules refuse.
    pub fn check_yaml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
        let config = Self::from_yaml_str(text, env)?;
        match config.connector_errors() {
            refused if refused.is_empty() => Ok(config),
            refused => Err(ConfigErrors(refused)),
        }
    }

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
        Ok(config) if !config.connector_errors().is_empty() => {
            let mut out = ConfigErrors(config.connector_errors()).to_string();
            out.push_str(&format!(
                "\n(`lanyard serve` starts without these connectors, as Dex does, unless \
                 {}=false)",
                CONTINUE_ON_CONNECTOR_FAILURE_ENV
            ));
            (out, false)
        }
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

/// The signing algorithm is the keys module's own type: one name for one thing.
pub use crate::keys::SigningAlg;

#[cfg(test)]
mod tests {
    use super::*;

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
