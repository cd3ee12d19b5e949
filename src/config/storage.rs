//! `storage:`: where lanyard keeps its state (SQLite, PostgreSQL or memory).

use std::path::PathBuf;

use serde::Deserialize;
use serde_yaml_ng::Value;
use url::Url;

use super::path::key_path;
use super::raw::{LenientU64, Seconds};
use super::resolve::Ctx;
use crate::storage::{PostgresSettings, StorageSettings};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStorage {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub config: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawSqlite {
    pub file: Option<String>,
}

/// `type: memory` takes no settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawMemory {}

/// Dex's `NetworkDB` + `SSL` keys, plus lanyard's `connectionString`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPostgres {
    pub host: Option<String>,
    pub port: Option<LenientU64>,
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub ssl: Option<RawPostgresSsl>,
    pub connection_string: Option<String>,
    pub max_open_conns: Option<LenientU64>,
    pub max_idle_conns: Option<LenientU64>,
    pub conn_max_lifetime: Option<Seconds>,
    pub connection_timeout: Option<Seconds>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawPostgresSsl {
    pub mode: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

pub(super) fn resolve_storage(value: Value, ctx: &mut Ctx) -> Option<StorageSettings> {
    if value.is_null() {
        ctx.err(
            "storage",
            "missing required key `storage` (type sqlite3, postgres or memory)",
        );
        return None;
    }
    let raw: RawStorage = ctx.de(value, "storage")?;
    let mut config = raw.config.unwrap_or(Value::Null);
    ctx.expand(&mut config, "storage.config");
    let Some(type_) = raw.type_ else {
        ctx.err(
            "storage.type",
            "missing required key `type` (sqlite3, postgres or memory)",
        );
        return None;
    };
    match type_.as_str() {
        "sqlite3" => {
            let raw: RawSqlite = ctx.de(config, "storage.config")?;
            match raw.file.filter(|f| !f.is_empty()) {
                Some(file) => Some(StorageSettings::Sqlite {
                    file: PathBuf::from(file),
                }),
                None => {
                    ctx.err(
                        "storage.config.file",
                        "missing required key `file` (the SQLite database file)",
                    );
                    None
                }
            }
        }
        "memory" => {
            let _: RawMemory = ctx.de(config, "storage.config")?;
            Some(StorageSettings::Memory)
        }
        "postgres" => {
            let raw: RawPostgres = ctx.de(config, "storage.config")?;
            resolve_postgres(raw, ctx).map(StorageSettings::Postgres)
        }
        "mysql" | "etcd" | "kubernetes" => {
            ctx.err(
                "storage.type",
                format!(
                    "storage type `{type_}` is not supported: lanyard supports sqlite3, postgres and memory; use postgres for production"
                ),
            );
            None
        }
        other => {
            ctx.err(
                "storage.type",
                format!(
                    "unknown storage type `{other}`; expected one of sqlite3, postgres, memory"
                ),
            );
            None
        }
    }
}

const SSL_MODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

fn resolve_postgres(raw: RawPostgres, ctx: &mut Ctx) -> Option<PostgresSettings> {
    let base = "storage.config";
    let before = ctx.errors.len();
    let mut pg = PostgresSettings {
        url: None,
        host: raw.host.filter(|s| !s.is_empty()),
        port: None,
        database: raw.database.filter(|s| !s.is_empty()),
        user: raw.user.filter(|s| !s.is_empty()),
        password: raw.password.filter(|s| !s.is_empty()),
        ssl_mode: None,
        ssl_ca_file: None,
        max_open_conns: None,
        conn_timeout: raw.connection_timeout.map(|s| s.0).filter(|d| !d.is_zero()),
        // Dex treats 0 as "not set".
        conn_max_lifetime: raw.conn_max_lifetime.map(|s| s.0).filter(|d| !d.is_zero()),
    };
    if let Some(LenientU64(port)) = raw.port {
        match u16::try_from(port) {
            // Dex treats 0 as "not set".
            Ok(0) => {}
            Ok(p) => pg.port = Some(p),
            Err(_) => ctx.err(
                key_path(base, "port"),
                format!("port {port} is out of range (1-65535)"),
            ),
        }
    }
    if let Some(dsn) = raw.connection_string.filter(|s| !s.is_empty()) {
        let path = key_path(base, "connectionString");
        if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
            // The error from the URL parser could quote the password; keep it out.
            if Url::parse(&dsn).is_err() {
                ctx.err(path, "not a valid postgres:// URL");
            }
        } else if !dsn.contains('=') {
            ctx.err(
                path,
                "expected a postgres:// URL or a key=value connection string",
            );
        }
        pg.url = Some(dsn);
    }
    if let Some(LenientU64(n)) = raw.max_open_conns {
        match u32::try_from(n) {
            Ok(0) => {}
            Ok(n) => pg.max_open_conns = Some(n),
            Err(_) => ctx.err(key_path(base, "maxOpenConns"), "too large"),
        }
    }
    if raw.max_idle_conns.is_some() {
        ctx.warn(
            key_path(base, "maxIdleConns"),
            "ignored: lanyard's pool keeps idle connections up to maxOpenConns",
        );
    }
    if let Some(ssl) = raw.ssl {
        let ssl_path = key_path(base, "ssl");
        if let Some(mode) = ssl.mode.filter(|m| !m.is_empty()) {
            if SSL_MODES.contains(&mode.as_str()) {
                pg.ssl_mode = Some(mode);
            } else {
                ctx.err(
                    key_path(&ssl_path, "mode"),
                    format!(
                        "unknown SSL mode `{mode}`; expected one of {}",
                        SSL_MODES.join(", ")
                    ),
                );
            }
        }
        pg.ssl_ca_file = ssl.ca_file.filter(|s| !s.is_empty()).map(PathBuf::from);
        for (key, value) in [("certFile", &ssl.cert_file), ("keyFile", &ssl.key_file)] {
            if value.as_deref().is_some_and(|v| !v.is_empty()) {
                ctx.err(
                    key_path(&ssl_path, key),
                    "client certificate authentication to PostgreSQL is not supported yet; use a password",
                );
            }
        }
    }
    (ctx.errors.len() == before).then_some(pg)
}
