//! From the parsed tree to a [`Config`]: semantic checks, defaults, and every error at once.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use serde_yaml_ng::Value;
use url::Url;

use super::connectors::{connector_exists, resolve_connectors, DeclaredConnector};
use super::de::{deserialize_at, unknown_key};
use super::duration::{format_duration, parse_go_duration};
use super::frontend::resolve_frontend;
use super::housekeeping::resolve_housekeeping;
use super::issuer::resolve_issuer;
use super::logger::resolve_logger;
use super::path::{index_path, key_path, key_to_string};
use super::raw::*;
use super::sessions::resolve_sessions;
use super::*;
use crate::storage::PostgresSettings;

const DEFAULT_SIGNING_KEYS: Duration = Duration::from_secs(6 * 3600);
const DEFAULT_ID_TOKENS: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_AUTH_REQUESTS: Duration = Duration::from_secs(30 * 60);
const DEFAULT_DEVICE_REQUESTS: Duration = Duration::from_secs(5 * 60);
const DEFAULT_REUSE_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_PUBLISH_AHEAD: Duration = Duration::from_secs(15 * 60);
/// How often each replica re-reads the signing keys by default (or a quarter of
/// `publishAhead`, when that is shorter).
const DEFAULT_KEY_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// JWKS responses are cached, and replicas reload keys, every quarter of `publishAhead`, so
/// below this the JWKS would not be cacheable at all (max-age 0).
const MIN_PUBLISH_AHEAD: Duration = Duration::from_secs(4);
/// Below this, verifiers that ignore Cache-Control and keep a JWKS for a fixed few minutes
/// may meet a key before they have fetched it: allowed (tests, short-lived setups), with a
/// warning.
const RECOMMENDED_PUBLISH_AHEAD: Duration = Duration::from_secs(2 * 60);

pub(super) struct Ctx<'a> {
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn has_error_at(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }

    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn de<T: serde::de::DeserializeOwned + Default>(
        &mut self,
        value: Value,
        path: &str,
    ) -> Option<T> {
        deserialize_at(value, path, &mut self.errors)
    }

    /// A value read from the environment variable named at `path`.
    fn env_var(&mut self, name: &str, path: &str) -> Option<String> {
        let value = (self.env)(name);
        if value.is_none() {
            self.err(path, format!("environment variable `{name}` is not set"));
        }
        value
    }
}

pub fn from_yaml_str(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message,
        }])
    };
    let mut root: Value =
        serde_yaml_ng::from_str(text).map_err(|e| fail(format!("invalid YAML: {e}")))?;
    root.apply_merge()
        .map_err(|e| fail(format!("invalid YAML merge key: {e}")))?;

    let mut env_errors = Vec::new();
    env::expand_tree(&mut root, "", env, &mut env_errors);

    let mut ctx = Ctx {
        errors: Vec::new(),
        warnings: Vec::new(),
        env,
    };
    let config = resolve_root(root, &mut ctx);

    // A value whose expansion failed still holds its `$VAR` text; whatever validation then
    // said about it is noise next to "variable not set".
    let failed: Vec<&str> = env_errors.iter().map(|e| e.path.as_str()).collect();
    let mut errors: Vec<ConfigError> = ctx
        .errors
        .into_iter()
        .filter(|e| !failed.iter().any(|f| is_same_or_under(&e.path, f)))
        .collect();
    let mut all = env_errors.clone();
    all.append(&mut errors);

    match config {
        Some(config) if all.is_empty() => Ok(Config {
            warnings: ctx.warnings,
            ..config
        }),
        _ => Err(ConfigErrors(all)),
    }
}

fn is_same_or_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn resolve_root(root: Value, ctx: &mut Ctx) -> Option<Config> {
    let mapping = match root {
        Value::Mapping(m) => m,
        Value::Null => {
            ctx.err("", "the config file is empty");
            return None;
        }
        _ => {
            ctx.err("", "the config file must be a YAML mapping of settings");
            return None;
        }
    };

    let mut sections: HashMap<&'static str, Value> = HashMap::new();
    for (key, value) in mapping {
        let name = key_to_string(&key);
        match TOP_LEVEL_KEYS.iter().find(|k| **k == name) {
            Some(known) => {
                sections.insert(known, value);
            }
            None => ctx.errors.push(unknown_key(&name, &name, TOP_LEVEL_KEYS)),
        }
    }
    let mut take = |name: &str| sections.remove(name).unwrap_or(Value::Null);

    let issuer = resolve_issuer(take("issuer"), ctx);
    let storage = resolve_storage(take("storage"), ctx);
    let web = resolve_web(take("web"), ctx);
    let telemetry = resolve_telemetry(take("telemetry"), &web, ctx);
    let grpc = super::grpc::resolve_grpc(
        take("grpc"),
        &[
            web.http.as_ref(),
            web.https.as_ref(),
            telemetry.http.as_ref(),
        ],
        ctx,
    );
    let logger = resolve_logger(take("logger"), ctx);
    let expiry = resolve_expiry(take("expiry"), ctx);
    let enable_password_db = ctx
        .de::<Option<LenientBool>>(take("enablePasswordDB"), "enablePasswordDB")
        .flatten()
        .is_some_and(|b| b.0);
    let (connectors, declared) = resolve_connectors(take("connectors"), enable_password_db, ctx);
    let oauth2 = resolve_oauth2(take("oauth2"), &declared, enable_password_db, ctx);
    let static_clients = resolve_clients(
        take("staticClients"),
        &oauth2,
        &declared,
        enable_password_db,
        ctx,
    );
    let static_passwords = resolve_passwords(take("staticPasswords"), enable_password_db, ctx);
    let frontend = resolve_frontend(take("frontend"), ctx);
    let keys = resolve_keys(take("keys"), &expiry, ctx);
    let sessions = resolve_sessions(take("sessions"), ctx);
    let kubernetes = resolve_kubernetes(take("kubernetes"), &static_clients, ctx);
    let housekeeping = resolve_housekeeping(take("housekeeping"), ctx);

    Some(Config {
        issuer: issuer?,
        storage: storage?,
        web,
        telemetry,
        logger,
        expiry,
        oauth2,
        static_clients,
        enable_password_db,
        static_passwords,
        connectors,
        frontend,
        keys,
        sessions,
        kubernetes,
        housekeeping,
        grpc,
        warnings: Vec::new(),
    })
}

// ---------------------------------------------------------------------------------------
// storage

fn resolve_storage(value: Value, ctx: &mut Ctx) -> Option<StorageSettings> {
    if value.is_null() {
        ctx.err(
            "storage",
            "missing required key `storage` (type sqlite3, postgres or memory)",
        );
        return None;
    }
    let raw: RawStorage = ctx.de(value, "storage")?;
    let config = raw.config.unwrap_or(Value::Null);
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
    if raw.conn_max_lifetime.is_some() {
        ctx.warn(
            key_path(base, "connMaxLifetime"),
            "ignored by lanyard's connection pool",
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

// ---------------------------------------------------------------------------------------
// web, telemetry, logger

/// Checks a `host:port` listen address; returns it normalised.
pub(super) fn listen_addr(text: &str) -> Result<String, String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_string());
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not a host:port address"));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("`{text}` has an invalid port"));
    }
    if host.is_empty() {
        return Ok(format!("0.0.0.0:{port}"));
    }
    if host.contains(':') {
        return Err(format!(
            "`{text}` is not a host:port address (put IPv6 addresses in brackets: [::1]:5556)"
        ));
    }
    let valid_host = host.split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !valid_host {
        return Err(format!("`{text}` has an invalid host"));
    }
    Ok(text.to_string())
}

pub(super) fn parse_tls_version(
    value: Option<String>,
    path: &str,
    ctx: &mut Ctx,
) -> Option<TlsVersion> {
    let v = value.filter(|v| !v.is_empty())?;
    match v.as_str() {
        "1.2" => Some(TlsVersion::Tls12),
        "1.3" => Some(TlsVersion::Tls13),
        _ => {
            ctx.err(
                path,
                format!("unknown TLS version `{v}`; expected 1.2 or 1.3"),
            );
            None
        }
    }
}

fn is_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

fn is_header_name(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Far above what one process can serve; a larger `web.maxConnections` is a typo.
const MAX_CONNECTIONS_CEILING: u64 = 1_000_000;

fn resolve_web(value: Value, ctx: &mut Ctx) -> WebConfig {
    let mut web = WebConfig {
        http: None,
        https: None,
        tls_cert: None,
        tls_key: None,
        tls_min_version: None,
        tls_max_version: None,
        headers: WebHeaders::default(),
        allowed_origins: Vec::new(),
        allowed_headers: Vec::new(),
        client_remote_ip: ClientRemoteIp::default(),
        limits: ConnectionLimits::default(),
    };
    // A section that did not parse has already been reported; checking its defaults would
    // only add noise such as "set web.http" next to "unknown key `htpp`".
    let Some(raw) = ctx.de::<RawWeb>(value, "web") else {
        return web;
    };

    for (key, addr, slot) in [
        ("http", raw.http, &mut web.http),
        ("https", raw.https, &mut web.https),
    ] {
        if let Some(addr) = addr.filter(|a| !a.is_empty()) {
            match listen_addr(&addr) {
                Ok(a) => *slot = Some(a),
                Err(e) => ctx.err(key_path("web", key), e),
            }
        }
    }
    if web.http.is_none()
        && web.https.is_none()
        && !ctx.errors.iter().any(|e| e.path.starts_with("web.http"))
    {
        ctx.err(
            "web",
            "set `web.http` or `web.https` (a host:port to listen on, e.g. 0.0.0.0:5556)",
        );
    }
    if web.http.is_some() && web.http == web.https {
        ctx.err("web.https", "must differ from web.http");
    }
    web.tls_cert = raw.tls_cert.filter(|s| !s.is_empty()).map(PathBuf::from);
    web.tls_key = raw.tls_key.filter(|s| !s.is_empty()).map(PathBuf::from);
    if web.https.is_some() {
        if web.tls_cert.is_none() {
            ctx.err("web.tlsCert", "required when web.https is set");
        }
        if web.tls_key.is_none() {
            ctx.err("web.tlsKey", "required when web.https is set");
        }
    }
    let defaults = ConnectionLimits::default();
    web.limits = ConnectionLimits {
        header_read: positive_duration(
            raw.header_read_timeout,
            "web.headerReadTimeout",
            defaults.header_read,
            ctx,
        ),
        tls_handshake: positive_duration(
            raw.tls_handshake_timeout,
            "web.tlsHandshakeTimeout",
            defaults.tls_handshake,
            ctx,
        ),
        request_body: positive_duration(
            raw.request_body_timeout,
            "web.requestBodyTimeout",
            defaults.request_body,
            ctx,
        ),
        idle: positive_duration(raw.idle_timeout, "web.idleTimeout", defaults.idle, ctx),
        max_connections: match raw.max_connections {
            None => defaults.max_connections,
            Some(n) if (1..=MAX_CONNECTIONS_CEILING).contains(&n) => n as usize,
            Some(_) => {
                ctx.err(
                    "web.maxConnections",
                    format!("must be between 1 and {MAX_CONNECTIONS_CEILING}"),
                );
                defaults.max_connections
            }
        },
    };
    web.tls_min_version = parse_tls_version(raw.tls_min_version, "web.tlsMinVersion", ctx);
    web.tls_max_version = parse_tls_version(raw.tls_max_version, "web.tlsMaxVersion", ctx);
    if let (Some(min), Some(max)) = (web.tls_min_version, web.tls_max_version) {
        if min > max {
            ctx.err("web.tlsMinVersion", "must not be above web.tlsMaxVersion");
        }
    }

    if let Some(h) = raw.headers {
        for (name, value) in [
            ("Content-Security-Policy", &h.content_security_policy),
            ("X-Frame-Options", &h.x_frame_options),
            ("X-Content-Type-Options", &h.x_content_type_options),
            ("X-XSS-Protection", &h.x_xss_protection),
            ("Strict-Transport-Security", &h.strict_transport_security),
        ] {
            if value.as_deref().is_some_and(|v| !is_header_value(v)) {
                ctx.err(
                    key_path("web.headers", name),
                    "contains characters not allowed in an HTTP header",
                );
            }
        }
        let keep = |v: Option<String>| v.filter(|v| !v.is_empty());
        web.headers = WebHeaders {
            content_security_policy: keep(h.content_security_policy),
            x_frame_options: keep(h.x_frame_options),
            x_content_type_options: keep(h.x_content_type_options),
            x_xss_protection: keep(h.x_xss_protection),
            strict_transport_security: keep(h.strict_transport_security),
        };
    }

    for (i, origin) in raw
        .allowed_origins
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = index_path("web.allowedOrigins", i);
        if origin == "*" {
            web.allowed_origins.push(origin);
            continue;
        }
        match Url::parse(&origin) {
            Ok(url)
                if (url.scheme() == "http" || url.scheme() == "https")
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none() =>
            {
                web.allowed_origins.push(url.origin().ascii_serialization());
            }
            _ => ctx.err(
                path,
                format!("`{origin}` is not an origin; expected `*` or scheme://host[:port]"),
            ),
        }
    }
    for (i, header) in raw
        .allowed_headers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if is_header_name(&header) {
            web.allowed_headers.push(header);
        } else {
            ctx.err(
                index_path("web.allowedHeaders", i),
                format!("`{header}` is not a valid header name"),
            );
        }
    }
    if let Some(rip) = raw.client_remote_ip {
        if let Some(header) = rip.header.filter(|h| !h.is_empty()) {
            if is_header_name(&header) {
                web.client_remote_ip.header = Some(header);
            } else {
                ctx.err(
                    "web.clientRemoteIP.header",
                    format!("`{header}` is not a valid header name"),
                );
            }
        }
        for (i, proxy) in rip
            .trusted_proxies
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match IpCidr::parse(&proxy) {
                Some(net) => web.client_remote_ip.trusted_proxies.push(net),
                None => ctx.err(
                    index_path("web.clientRemoteIP.trustedProxies", i),
                    format!("`{proxy}` is not an IP address or CIDR range"),
                ),
            }
        }
    }
    web
}

fn resolve_telemetry(value: Value, web: &WebConfig, ctx: &mut Ctx) -> TelemetryConfig {
    let raw: RawTelemetry = ctx.de(value, "telemetry").unwrap_or_default();
    let mut telemetry = TelemetryConfig::default();
    if let Some(addr) = raw.http.filter(|a| !a.is_empty()) {
        match listen_addr(&addr) {
            Ok(a) if Some(&a) == web.http.as_ref() || Some(&a) == web.https.as_ref() => ctx.err(
                "telemetry.http",
                "must differ from the web listen addresses",
            ),
            Ok(a) => telemetry.http = Some(a),
            Err(e) => ctx.err("telemetry.http", e),
        }
    }
    if raw.enable_profiling.is_some_and(|b| b.0) {
        ctx.warn(
            "telemetry.enableProfiling",
            "ignored: lanyard has no profiling endpoints",
        );
    }
    telemetry
}

// ---------------------------------------------------------------------------------------
// expiry, keys

/// Parses an optional Go duration; `None` when absent or invalid (the error is recorded).
pub(super) fn duration_at(
    value: Option<DurationText>,
    path: &str,
    ctx: &mut Ctx,
) -> Option<Duration> {
    let text = value.map(|v| v.0).filter(|v| !v.is_empty())?;
    match parse_go_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            ctx.err(path, format!("invalid duration `{text}`: {e}"));
            None
        }
    }
}

/// A duration that must be longer than zero; `default` when absent or invalid.
pub(super) fn positive_duration(
    value: Option<DurationText>,
    path: &str,
    default: Duration,
    ctx: &mut Ctx,
) -> Duration {
    match duration_at(value, path, ctx) {
        Some(d) if d.is_zero() => {
            ctx.err(path, "must be longer than 0");
            default
        }
        Some(d) => d,
        None => default,
    }
}

fn resolve_expiry(value: Value, ctx: &mut Ctx) -> ExpiryConfig {
    let raw: RawExpiry = ctx.de(value, "expiry").unwrap_or_default();
    let refresh = raw.refresh_tokens.unwrap_or_default();
    let mut optional_limit =
        |value: Option<DurationText>, path: &str| match duration_at(value, path, ctx) {
            Some(d) if d.is_zero() => {
                ctx.err(path, "must be longer than 0 (leave it out for no limit)");
                None
            }
            other => other,
        };
    let valid_if_not_used_for = optional_limit(
        refresh.valid_if_not_used_for,
        "expiry.refreshTokens.validIfNotUsedFor",
    );
    let absolute_lifetime = optional_limit(
        refresh.absolute_lifetime,
        "expiry.refreshTokens.absoluteLifetime",
    );
    ExpiryConfig {
        signing_keys: positive_duration(
            raw.signing_keys,
            "expiry.signingKeys",
            DEFAULT_SIGNING_KEYS,
            ctx,
        ),
        id_tokens: positive_duration(raw.id_tokens, "expiry.idTokens", DEFAULT_ID_TOKENS, ctx),
        auth_requests: positive_duration(
            raw.auth_requests,
            "expiry.authRequests",
            DEFAULT_AUTH_REQUESTS,
            ctx,
        ),
        device_requests: positive_duration(
            raw.device_requests,
            "expiry.deviceRequests",
            DEFAULT_DEVICE_REQUESTS,
            ctx,
        ),
        refresh_tokens: RefreshTokenExpiry {
            valid_if_not_used_for,
            absolute_lifetime,
            reuse_interval: duration_at(
                refresh.reuse_interval,
                "expiry.refreshTokens.reuseInterval",
                ctx,
            )
            .unwrap_or(DEFAULT_REUSE_INTERVAL),
            disable_rotation: refresh.disable_rotation.is_some_and(|b| b.0),
        },
    }
}

/// A 32-byte key written as hex (64 digits) or base64 (standard or URL-safe, padded or not).
/// Errors never quote the input: it is a secret.
pub(crate) fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| "invalid hex".to_string())?
    } else {
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
            .ok_or_else(|| "is neither base64 nor 64 hex digits".to_string())?
    };
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "decodes to {} bytes; it must be exactly 32 (e.g. `openssl rand -base64 32`)",
            bytes.len()
        )
    })
}

fn resolve_keys(value: Value, expiry: &ExpiryConfig, ctx: &mut Ctx) -> KeysConfig {
    let raw: RawKeys = ctx.de(value, "keys").unwrap_or_default();
    let algorithm = match raw.algorithm.filter(|a| !a.is_empty()).as_deref() {
        None | Some("RS256") => SigningAlg::RS256,
        Some("ES256") => SigningAlg::ES256,
        Some(other) => {
            ctx.err(
                "keys.algorithm",
                format!("unknown signing algorithm `{other}`; expected RS256 or ES256"),
            );
            SigningAlg::RS256
        }
    };
    let rotation_period = positive_duration(
        raw.rotation_period,
        "keys.rotationPeriod",
        expiry.signing_keys,
        ctx,
    );
    let publish_ahead = match duration_at(raw.publish_ahead, "keys.publishAhead", ctx) {
        Some(d) if d < MIN_PUBLISH_AHEAD => {
            ctx.err(
                "keys.publishAhead",
                format!(
                    "{} is too short; it must be at least {} because verifiers cache the JWKS for part of it",
                    format_duration(d),
                    format_duration(MIN_PUBLISH_AHEAD)
                ),
            );
            DEFAULT_PUBLISH_AHEAD
        }
        Some(d) if d < RECOMMENDED_PUBLISH_AHEAD => {
            ctx.warn(
                "keys.publishAhead",
                format!(
                    "{} is shorter than {}: a verifier that keeps the JWKS for a fixed few minutes, whatever its Cache-Control says, may see a token signed by a key it has not fetched yet",
                    format_duration(d),
                    format_duration(RECOMMENDED_PUBLISH_AHEAD)
                ),
            );
            d
        }
        Some(d) => d,
        None => DEFAULT_PUBLISH_AHEAD,
    };
    if publish_ahead >= rotation_period {
        ctx.err(
            "keys.publishAhead",
            format!(
                "{} must be shorter than the rotation period ({})",
                format_duration(publish_ahead),
                format_duration(rotation_period)
            ),
        );
    }

    // A replica learns of a key another one (or `lanyard admin keys`) created only when it
    // polls, and it must know a key before verifiers fetch JWKS ahead of its first token.
    let poll_interval = positive_duration(
        raw.poll_interval,
        "keys.pollInterval",
        DEFAULT_KEY_POLL_INTERVAL.min(publish_ahead / 4),
        ctx,
    );
    if poll_interval > publish_ahead / 4 {
        ctx.err(
            "keys.pollInterval",
            format!(
                "{} is too long; it must be at most a quarter of publishAhead ({})",
                format_duration(poll_interval),
                format_duration(publish_ahead)
            ),
        );
    }

    let sources: Vec<&str> = [
        ("encryptionKey", &raw.encryption_key),
        ("encryptionKeyFile", &raw.encryption_key_file),
        ("encryptionKeyEnv", &raw.encryption_key_env),
    ]
    .iter()
    .filter(|(_, v)| v.as_deref().is_some_and(|v| !v.is_empty()))
    .map(|(k, _)| *k)
    .collect();
    let mut encryption_key = None;
    if sources.len() > 1 {
        ctx.err(
            "keys",
            format!(
                "set only one of encryptionKey, encryptionKeyFile, encryptionKeyEnv (found {})",
                sources.join(", ")
            ),
        );
    } else if let Some(source) = sources.first() {
        let path = key_path("keys", source);
        let text = match *source {
            "encryptionKey" => raw.encryption_key,
            "encryptionKeyFile" => {
                raw.encryption_key_file
                    .and_then(|file| match std::fs::read_to_string(&file) {
                        Ok(t) => Some(t),
                        Err(e) => {
                            ctx.err(&path, format!("cannot read `{file}`: {e}"));
                            None
                        }
                    })
            }
            _ => raw
                .encryption_key_env
                .and_then(|name| ctx.env_var(&name, &path)),
        };
        if let Some(text) = text {
            match decode_key(&text) {
                Ok(key) => encryption_key = Some(key),
                Err(e) => ctx.err(
                    &path,
                    format!("the key-encryption key must be 32 bytes as base64 or hex: it {e}"),
                ),
            }
        }
    }

    KeysConfig {
        algorithm,
        rotation_period,
        publish_ahead,
        poll_interval,
        encryption_key,
    }
}

// ---------------------------------------------------------------------------------------
// connectors, oauth2

/// The elements of a list section, each deserialised on its own so that every bad entry is
/// reported. Returns (index, entry) pairs for the entries that parsed.
pub(super) fn list_at<T: serde::de::DeserializeOwned + Default>(
    value: Value,
    path: &str,
    ctx: &mut Ctx,
) -> Vec<(usize, T)> {
    match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = index_path(path, i);
                if !matches!(item, Value::Mapping(_)) {
                    ctx.err(item_path, "expected a mapping");
                    return None;
                }
                ctx.de::<T>(item, &item_path).map(|t| (i, t))
            })
            .collect(),
        _ => {
            ctx.err(path, "expected a list");
            Vec::new()
        }
    }
}

fn resolve_oauth2(
    value: Value,
    connectors: &[DeclaredConnector],
    enable_password_db: bool,
    ctx: &mut Ctx,
) -> OAuth2Config {
    let raw: RawOAuth2 = ctx.de(value, "oauth2").unwrap_or_default();

    let password_connector = raw.password_connector.filter(|p| !p.is_empty());
    if let Some(id) = &password_connector {
        match connectors.iter().find(|c| &c.id == id) {
            Some(c) if !c.type_.checks_passwords() => ctx.err(
                "oauth2.passwordConnector",
                format!(
                    "connector `{id}` is of type {}, which cannot check passwords (use a local or ldap connector)",
                    c.type_.as_str()
                ),
            ),
            Some(_) => {}
            None if connector_exists(id, connectors, enable_password_db) => {}
            None => ctx.err(
                "oauth2.passwordConnector",
                format!("no connector has the id `{id}`"),
            ),
        }
    }

    let mut response_types = Vec::new();
    for (i, t) in raw
        .response_types
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        match ResponseType::parse(&t) {
            Some(rt) if !response_types.contains(&rt) => response_types.push(rt),
            Some(_) => {}
            None => ctx.err(
                index_path("oauth2.responseTypes", i),
                format!("unknown response type `{t}`; expected one of code, token, id_token"),
            ),
        }
    }
    if response_types.is_empty() {
        response_types.push(ResponseType::Code);
    }

    let mut grant_types = Vec::new();
    let listed = raw.grant_types.unwrap_or_default();
    for (i, g) in listed.iter().enumerate() {
        let path = index_path("oauth2.grantTypes", i);
        match GrantType::parse(g) {
            Some(GrantType::Password) if password_connector.is_none() => ctx.err(
                path,
                "grant type `password` needs oauth2.passwordConnector (the connector that checks the passwords)",
            ),
            Some(gt) if !grant_types.contains(&gt) => grant_types.push(gt),
            Some(_) => {}
            None if g == "implicit" => ctx.err(
                path,
                "grant type `implicit` is not supported by lanyard; use authorization_code (with PKCE for browser apps)",
            ),
            None => ctx.err(
                path,
                format!(
                    "unknown grant type `{g}`; expected one of {}",
                    GrantType::ALL.map(|g| g.as_str()).join(", ")
                ),
            ),
        }
    }
    if listed.is_empty() {
        grant_types = vec![
            GrantType::AuthorizationCode,
            GrantType::RefreshToken,
            GrantType::DeviceCode,
            GrantType::TokenExchange,
            // Harmless by default: a client must still list it in its own grantTypes.
            GrantType::ClientCredentials,
        ];
        if password_connector.is_some() {
            grant_types.push(GrantType::Password);
        }
    }

    OAuth2Config {
        response_types,
        grant_types,
        skip_approval_screen: raw.skip_approval_screen.is_some_and(|b| b.0),
        always_show_login_screen: raw.always_show_login_screen.is_some_and(|b| b.0),
        password_connector,
    }
}

// ---------------------------------------------------------------------------------------
// staticClients

/// The out-of-band redirect URI Dex accepts for clients that show the code to the user.
const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Dex's device flow ends at the issuer's own `/device/callback`, and Dex configs register
/// it on device clients in exactly this relative form.
const DEVICE_CALLBACK_URI: &str = "/device/callback";

/// Whether a client may register `uri` as a redirect (or post-logout redirect) URI: the one
/// rule for staticClients, `lanyard admin clients` and every redirect lanyard sends.
/// Browsers run `javascript:`, `data:` and `vbscript:` URLs in lanyard's origin and `file:`
/// reaches the user's disk, so only http(s) and the private-use schemes of native apps
/// (RFC 8252 §7.1: a reverse domain name, which has a dot) can be registered.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri == OOB_REDIRECT_URI || uri == DEVICE_CALLBACK_URI {
        return Ok(());
    }
    let url = Url::parse(uri).map_err(|e| format!("`{uri}` is not an absolute URL: {e}"))?;
    if url.fragment().is_some() {
        return Err(format!("`{uri}` must not contain a fragment (#...)"));
    }
    match url.scheme() {
        "http" | "https" => Ok(()),
        scheme if scheme.contains('.') => Ok(()),
        scheme => Err(format!(
            "`{uri}` has the scheme `{scheme}:`; a redirect URI must be http(s) or a native \
             app's private-use scheme, a reverse domain name such as com.example.app:/callback \
             (RFC 8252 §7.1)"
        )),
    }
}

/// A value given literally (`key`) or through a variable (`key_env`); at most one of them.
fn literal_or_env(
    literal: Option<String>,
    env_name: Option<String>,
    path: &str,
    key: &str,
    env_key: &str,
    ctx: &mut Ctx,
) -> Option<String> {
    let literal = literal.filter(|v| !v.is_empty());
    let env_name = env_name.filter(|v| !v.is_empty());
    match (literal, env_name) {
        (Some(_), Some(_)) => {
            ctx.err(path, format!("set either `{key}` or `{env_key}`, not both"));
            None
        }
        (Some(v), None) => Some(v),
        (None, Some(name)) => {
            let env_path = key_path(path, env_key);
            match ctx.env_var(&name, &env_path) {
                Some(v) if v.is_empty() => {
                    ctx.err(env_path, format!("environment variable `{name}` is empty"));
                    None
                }
                other => other,
            }
        }
        (None, None) => None,
    }
}

fn resolve_clients(
    value: Value,
    oauth2: &OAuth2Config,
    connectors: &[DeclaredConnector],
    enable_password_db: bool,
    ctx: &mut Ctx,
) -> Vec<StaticClient> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in list_at::<RawStaticClient>(value, "staticClients", ctx) {
        let path = index_path("staticClients", i);
        let before = ctx.errors.len();
        let id_given = raw.id.as_deref().is_some_and(|v| !v.is_empty())
            || raw.id_env.as_deref().is_some_and(|v| !v.is_empty());
        let id = literal_or_env(raw.id, raw.id_env, &path, "id", "idEnv", ctx);
        if !id_given {
            ctx.err(
                key_path(&path, "id"),
                "missing required key `id` (or `idEnv`)",
            );
        }
        if let Some(id) = &id {
            if let Some(first) = seen.get(id) {
                ctx.err(
                    key_path(&path, "id"),
                    format!("duplicate client id `{id}` (also staticClients[{first}])"),
                );
            } else {
                seen.insert(id.clone(), i);
            }
        }
        let public = raw.public.is_some_and(|b| b.0);
        let secret_given = raw.secret.as_deref().is_some_and(|v| !v.is_empty())
            || raw.secret_env.as_deref().is_some_and(|v| !v.is_empty());
        let secret = literal_or_env(
            raw.secret,
            raw.secret_env,
            &path,
            "secret",
            "secretEnv",
            ctx,
        );
        if !public && !secret_given {
            ctx.err(
                key_path(&path, "secret"),
                "a client that is not public needs `secret` or `secretEnv` (or set `public: true`)",
            );
        }

        let mut uris = |list: Option<Vec<String>>, key: &str| -> Vec<String> {
            let list = list.unwrap_or_default();
            for (j, uri) in list.iter().enumerate() {
                if let Err(e) = check_redirect_uri(uri) {
                    let client = id.as_deref().unwrap_or_default();
                    ctx.err(
                        index_path(&key_path(&path, key), j),
                        format!("client `{client}`: {e}"),
                    );
                }
            }
            list
        };
        let redirect_uris = uris(raw.redirect_uris, "redirectURIs");
        let post_logout_redirect_uris =
            uris(raw.post_logout_redirect_uris, "postLogoutRedirectURIs");

        let logo_url = raw.logo_url.filter(|u| !u.is_empty());
        if let Some(logo) = &logo_url {
            if Url::parse(logo).is_err() {
                ctx.err(
                    key_path(&path, "logoURL"),
                    format!("`{logo}` is not an absolute URL"),
                );
            }
        }

        let mut grant_types = Vec::new();
        for (j, g) in raw.grant_types.unwrap_or_default().iter().enumerate() {
            let gpath = index_path(&key_path(&path, "grantTypes"), j);
            match GrantType::parse(g) {
                Some(gt) if !oauth2.grant_types.contains(&gt) => ctx.err(
                    gpath,
                    format!("grant type `{g}` is not enabled in oauth2.grantTypes"),
                ),
                Some(gt) if !grant_types.contains(&gt) => grant_types.push(gt),
                Some(_) => {}
                None => ctx.err(
                    gpath,
                    format!(
                        "unknown grant type `{g}`; expected one of {}",
                        GrantType::ALL.map(|g| g.as_str()).join(", ")
                    ),
                ),
            }
        }

        let allowed_connectors = raw.allowed_connectors.unwrap_or_default();
        for (j, c) in allowed_connectors.iter().enumerate() {
            if !connector_exists(c, connectors, enable_password_db) {
                ctx.err(
                    index_path(&key_path(&path, "allowedConnectors"), j),
                    format!("no connector has the id `{c}`"),
                );
            }
        }

        if ctx.errors.len() != before {
            continue;
        }
        let Some(id) = id else { continue };
        out.push(StaticClient {
            name: raw
                .name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| id.clone()),
            id,
            secret,
            redirect_uris,
            trusted_peers: raw.trusted_peers.unwrap_or_default(),
            public,
            logo_url,
            grant_types,
            post_logout_redirect_uris,
            allowed_connectors,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// staticPasswords

const BCRYPT_ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `$2a$10$` + 53 characters of bcrypt's base64: 22 of salt, 31 of hash.
fn is_bcrypt(h: &str) -> bool {
    let b = h.as_bytes();
    b.len() == 60
        && (h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$"))
        && b[4].is_ascii_digit()
        && b[5].is_ascii_digit()
        && (4..=31).contains(&((b[4] - b'0') * 10 + (b[5] - b'0')))
        && b[6] == b'$'
        && b[7..].iter().all(|c| BCRYPT_ALPHABET.contains(c))
}

/// `$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>` (PHC string format; `v=` optional).
fn is_argon2id(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    if parts.len() < 5 || !parts[0].is_empty() || parts[1] != "argon2id" {
        return false;
    }
    let mut i = 2;
    if let Some(v) = parts[i].strip_prefix("v=") {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        i += 1;
    }
    if parts.len() != i + 3 {
        return false;
    }
    let mut have = BTreeMap::new();
    for param in parts[i].split(',') {
        let Some((k, v)) = param.split_once('=') else {
            return false;
        };
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        have.insert(k, v);
    }
    let b64 = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    };
    ["m", "t", "p"].iter().all(|k| have.contains_key(k)) && b64(parts[i + 1]) && b64(parts[i + 2])
}

/// The hash in the form the password checker takes. Dex also accepts a bcrypt hash that was
/// base64-encoded (older Dex docs told people to encode it), so that is decoded here.
pub(crate) fn normalize_hash(h: &str) -> Result<String, String> {
    let h = h.trim();
    if is_bcrypt(h) || is_argon2id(h) {
        return Ok(h.to_string());
    }
    if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(h) {
        if let Ok(text) = String::from_utf8(decoded) {
            if is_bcrypt(&text) || is_argon2id(&text) {
                return Ok(text);
            }
        }
    }
    Err("not a bcrypt hash ($2a$, $2b$ or $2y$, 60 characters), an argon2id PHC string ($argon2id$...), or base64 of one".to_string())
}

fn resolve_passwords(value: Value, enable_password_db: bool, ctx: &mut Ctx) -> Vec<StaticPassword> {
    let given =
        !matches!(&value, Value::Null) && !matches!(&value, Value::Sequence(s) if s.is_empty());
    if given && !enable_password_db {
        ctx.err(
            "staticPasswords",
            "static passwords need `enablePasswordDB: true`",
        );
    }
    let mut out = Vec::new();
    let mut emails: HashMap<String, usize> = HashMap::new();
    let mut user_ids: HashMap<String, usize> = HashMap::new();
    for (i, raw) in list_at::<RawStaticPassword>(value, "staticPasswords", ctx) {
        let path = index_path("staticPasswords", i);
        let before = ctx.errors.len();
        let email = raw.email.filter(|e| !e.is_empty());
        match &email {
            None => ctx.err(key_path(&path, "email"), "missing required key `email`"),
            Some(email) => {
                if let Some(first) = emails.get(&email.to_lowercase()) {
                    ctx.err(
                        key_path(&path, "email"),
                        format!("duplicate email `{email}` (also staticPasswords[{first}]; emails are compared ignoring case)"),
                    );
                } else {
                    emails.insert(email.to_lowercase(), i);
                }
            }
        }
        let user_id = raw.user_id.filter(|u| !u.is_empty());
        match &user_id {
            None => ctx.err(
                key_path(&path, "userID"),
                "missing required key `userID` (it becomes the user's subject in tokens)",
            ),
            Some(uid) => {
                if let Some(first) = user_ids.get(uid) {
                    ctx.err(
                        key_path(&path, "userID"),
                        format!("duplicate userID `{uid}` (also staticPasswords[{first}])"),
                    );
                } else {
                    user_ids.insert(uid.clone(), i);
                }
            }
        }
        let hash_given = raw.hash.as_deref().is_some_and(|v| !v.is_empty())
            || raw.hash_from_env.as_deref().is_some_and(|v| !v.is_empty());
        let from_env = raw.hash.as_deref().is_none_or(str::is_empty);
        let hash = literal_or_env(
            raw.hash,
            raw.hash_from_env,
            &path,
            "hash",
            "hashFromEnv",
            ctx,
        );
        if !hash_given {
            ctx.err(
                key_path(&path, "hash"),
                "missing required key `hash` (or `hashFromEnv`)",
            );
        }
        let hash = hash.and_then(|h| match normalize_hash(&h) {
            Ok(h) => Some(h),
            Err(e) => {
                let at = key_path(&path, if from_env { "hashFromEnv" } else { "hash" });
                ctx.err(at, e);
                None
            }
        });
        if ctx.errors.len() != before {
            continue;
        }
        let (Some(email), Some(user_id), Some(hash)) = (email, user_id, hash) else {
            continue;
        };
        out.push(StaticPassword {
            username: raw
                .username
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| email.clone()),
            email,
            hash,
            user_id,
            groups: raw.groups.unwrap_or_default(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// kubernetes

const DEFAULT_KUBE_NAMESPACE: &str = "default";
const DEFAULT_USERNAME_CLAIM: &str = "email";
const DEFAULT_GROUPS_CLAIM: &str = "groups";
/// kube-apiserver requires a prefix whenever a claim is mapped (AuthenticationConfiguration),
/// and a prefix keeps lanyard's users and groups apart from every other authenticator's.
const DEFAULT_KUBE_PREFIX: &str = "oidc:";

/// Kubernetes reserves `system:` for its own users and groups.
const RESERVED_KUBE_PREFIX: &str = "system:";

fn resolve_kubernetes(value: Value, clients: &[StaticClient], ctx: &mut Ctx) -> KubernetesConfig {
    let Some(raw) = ctx.de::<RawKubernetes>(value, "kubernetes") else {
        return KubernetesConfig::default();
    };
    let (clusters, names) =
        resolve_kube_clusters(raw.clusters.unwrap_or(Value::Null), clients, ctx);
    let rbac = resolve_rbac(raw.rbac.unwrap_or(Value::Null), &names, ctx);
    if !rbac.is_empty() && names.is_empty() {
        ctx.warn(
            "kubernetes.rbac",
            "no kubernetes.clusters are configured, so these bindings apply nowhere",
        );
    }
    let issuer_ca_file = raw
        .issuer_certificate_authority_file
        .clone()
        .filter(|f| !f.is_empty());
    let issuer_ca_pem = pem_data_or_file(
        raw.issuer_certificate_authority_data.as_deref(),
        issuer_ca_file.as_deref(),
        "kubernetes",
        (
            "issuerCertificateAuthorityData",
            "issuerCertificateAuthorityFile",
        ),
        ctx,
    )
    .flatten();
    KubernetesConfig {
        clusters,
        rbac,
        issuer_ca: issuer_ca_pem.map(|pem| IssuerCa {
            pem,
            file: issuer_ca_file.map(PathBuf::from),
        }),
    }
}

/// Names that become kubeconfig entries, file names and `--cluster` arguments.
fn is_cluster_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// A DNS-1123 label, as Kubernetes requires of namespace names.
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn names_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The certificates in a PEM text, each re-encoded in 64-column lines; anything outside the
/// blocks (comments, "Bag Attributes") is dropped. Errors when there is no certificate, a
/// block does not decode, or a block is not a certificate (a private key pasted by mistake
/// must not end up in every kubeconfig).
pub fn normalize_pem_certificates(text: &str) -> Result<String, String> {
    use base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    let mut block: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        match &mut block {
            None => {
                if let Some(label) = line
                    .strip_prefix("-----BEGIN ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    block = Some((label.to_string(), String::new()));
                }
            }
            Some((label, body)) => {
                if let Some(end) = line
                    .strip_prefix("-----END ")
                    .and_then(|l| l.strip_suffix("-----"))
                {
                    if end != label {
                        return Err(format!("PEM block `{label}` ends with `END {end}`"));
                    }
                    if label != "CERTIFICATE" {
                        return Err(format!(
                            "contains a `{label}` PEM block; only CERTIFICATE blocks belong here"
                        ));
                    }
                    let der = STANDARD
                        .decode(body.as_bytes())
                        .map_err(|_| "a CERTIFICATE block is not valid base64".to_string())?;
                    // Every X.509 certificate is a DER SEQUENCE.
                    if der.len() < 16 || der[0] != 0x30 {
                        return Err("a CERTIFICATE block does not hold a certificate".to_string());
                    }
                    out.push_str("-----BEGIN CERTIFICATE-----\n");
                    let encoded = STANDARD.encode(&der);
                    for chunk in encoded.as_bytes().chunks(64) {
                        out.push_str(&String::from_utf8_lossy(chunk));
                        out.push('\n');
                    }
                    out.push_str("-----END CERTIFICATE-----\n");
                    block = None;
                } else {
                    body.push_str(line);
                }
            }
        }
    }
    if let Some((label, _)) = block {
        return Err(format!("PEM block `{label}` has no END line"));
    }
    if out.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) found".to_string());
    }
    Ok(out)
}

/// The cluster's CA from exactly one of `certificateAuthorityData` and
/// `certificateAuthorityFile`, as normalised PEM.
fn kube_cluster_ca(raw: &RawKubeCluster, path: &str, ctx: &mut Ctx) -> Option<String> {
    let ca = pem_data_or_file(
        raw.certificate_authority_data.as_deref(),
        raw.certificate_authority_file.as_deref(),
        path,
        ("certificateAuthorityData", "certificateAuthorityFile"),
        ctx,
    )?;
    if ca.is_none() {
        ctx.err(
            key_path(path, "certificateAuthorityData"),
            "missing required key `certificateAuthorityData` (or `certificateAuthorityFile`): kubeconfigs always carry the API server's CA",
        );
    }
    ca
}

/// CA certificates from at most one of two keys (`keys`: the data key, base64 of the PEM as
/// in a kubeconfig, and the file key, a PEM file read at load), as normalised PEM.
/// `None` when the value is in error (recorded), `Some(None)` when neither key is set.
fn pem_data_or_file(
    data: Option<&str>,
    file: Option<&str>,
    path: &str,
    (data_key, file_key): (&str, &str),
    ctx: &mut Ctx,
) -> Option<Option<String>> {
    let data = data.filter(|s| !s.is_empty());
    let file = file.filter(|s| !s.is_empty());
    match (data, file) {
        (Some(_), Some(_)) => {
            ctx.err(
                path,
                format!("set either `{data_key}` or `{file_key}`, not both"),
            );
            None
        }
        (None, None) => Some(None),
        (Some(data), None) => {
            let at = key_path(path, data_key);
            if data.trim_start().starts_with("-----BEGIN") {
                ctx.err(
                    at,
                    format!("expected base64 of the PEM, as in a kubeconfig's certificate-authority-data (or put the PEM in a file and use {file_key})"),
                );
                return None;
            }
            let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            let Some(pem) = pem else {
                ctx.err(at, "is not base64 of a PEM certificate");
                return None;
            };
            match normalize_pem_certificates(&pem) {
                Ok(pem) => Some(Some(pem)),
                Err(e) => {
                    ctx.err(at, format!("the decoded PEM is not usable: {e}"));
                    None
                }
            }
        }
        (None, Some(file)) => {
            let at = key_path(path, file_key);
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) => {
                    ctx.err(at, format!("cannot read `{file}`: {e}"));
                    return None;
                }
            };
            match normalize_pem_certificates(&text) {
                Ok(pem) => Some(Some(pem)),
                Err(e) => {
                    ctx.err(at, format!("`{file}` is not a PEM certificate file: {e}"));
                    None
                }
            }
        }
    }
}

fn kube_server(server: Option<String>, path: &str, ctx: &mut Ctx) -> Option<String> {
    let at = key_path(path, "server");
    let Some(server) = server.filter(|s| !s.is_empty()) else {
        ctx.err(
            at,
            "missing required key `server` (the API server's https URL)",
        );
        return None;
    };
    let problem = match Url::parse(&server) {
        Err(e) => Some(format!("`{server}` is not a valid URL: {e}")),
        Ok(url) if url.scheme() != "https" => Some(format!(
            "`{server}` must be an https URL: kube-apiserver serves TLS, and tokens must not travel in clear"
        )),
        Ok(url) if url.host().is_none() => Some(format!("`{server}` has no host")),
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            Some("the server URL must not contain credentials".to_string())
        }
        Ok(url) if url.query().is_some() || url.fragment().is_some() => Some(format!(
            "`{server}` must not have a query or fragment"
        )),
        Ok(_) => None,
    };
    match problem {
        Some(message) => {
            ctx.err(at, message);
            None
        }
        None => Some(server),
    }
}

/// A claim name; `default` when absent.
fn kube_claim(value: Option<String>, default: &str) -> String {
    value
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A prefix: `oidc:` when absent; an explicit empty string means no prefix.
fn kube_prefix(value: Option<String>, path: &str, key: &str, ctx: &mut Ctx) -> String {
    let prefix = value.unwrap_or_else(|| DEFAULT_KUBE_PREFIX.to_string());
    if prefix.starts_with(RESERVED_KUBE_PREFIX) {
        ctx.err(
            key_path(path, key),
            format!("must not start with `{RESERVED_KUBE_PREFIX}`: Kubernetes reserves it, and lanyard's AuthenticationConfiguration refuses such names"),
        );
    }
    prefix
}

/// Returns the clusters that resolved, and every name written (so that RBAC entries naming a
/// cluster that has some other error are not reported twice).
fn resolve_kube_clusters(
    value: Value,
    clients: &[StaticClient],
    ctx: &mut Ctx,
) -> (Vec<KubeCluster>, Vec<String>) {
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut seen_names: HashMap<String, usize> = HashMap::new();
    let mut seen_contexts: HashMap<String, usize> = HashMap::new();
    for (i, raw) in list_at::<RawKubeCluster>(value, "kubernetes.clusters", ctx) {
        let path = index_path("kubernetes.clusters", i);
        let before = ctx.errors.len();

        let name = raw.name.clone().filter(|n| !n.is_empty());
        match &name {
            None => ctx.err(key_path(&path, "name"), "missing required key `name`"),
            Some(name) => {
                names.push(name.clone());
                if !is_cluster_name(name) {
                    ctx.err(
                        key_path(&path, "name"),
                        format!("`{name}` is not a valid cluster name: use letters, digits, `.`, `_` and `-`, starting with a letter or digit"),
                    );
                }
                if let Some(first) = seen_names.get(name) {
                    ctx.err(
                        key_path(&path, "name"),
                        format!(
                            "duplicate cluster name `{name}` (also kubernetes.clusters[{first}])"
                        ),
                    );
                } else {
                    seen_names.insert(name.clone(), i);
                }
            }
        }

        let server = kube_server(raw.server.clone(), &path, ctx);
        let ca = kube_cluster_ca(&raw, &path, ctx);

        let client_secret_for_users = raw.client_secret_for_users.is_some_and(|b| b.0);
        let client_id = raw.client_id.filter(|c| !c.is_empty());
        match &client_id {
            None => ctx.err(
                key_path(&path, "clientID"),
                "missing required key `clientID` (the static client whose ID tokens this cluster accepts)",
            ),
            Some(id) => match clients.iter().find(|c| &c.id == id) {
                None => {
                    let ids: Vec<String> = clients.iter().map(|c| c.id.clone()).collect();
                    ctx.err(
                        key_path(&path, "clientID"),
                        format!(
                            "no static client has the id `{id}`; staticClients: {}",
                            names_list(&ids)
                        ),
                    );
                }
                Some(client) if client_secret_for_users && client.secret.is_none() => ctx.err(
                    key_path(&path, "clientSecretForUsers"),
                    format!("client `{id}` is public: it has no secret to hand to users"),
                ),
                Some(_) => {}
            },
        }

        let namespace = kube_claim(raw.namespace, DEFAULT_KUBE_NAMESPACE);
        if !is_dns_label(&namespace) {
            ctx.err(
                key_path(&path, "namespace"),
                format!("`{namespace}` is not a valid namespace name (lowercase letters, digits and `-`, at most 63)"),
            );
        }
        let context_name = raw
            .context_name
            .filter(|c| !c.is_empty())
            .or_else(|| name.clone());
        if let Some(context) = &context_name {
            if let Some(first) = seen_contexts.get(context) {
                ctx.err(
                    key_path(&path, "contextName"),
                    format!(
                        "duplicate context name `{context}` (also kubernetes.clusters[{first}])"
                    ),
                );
            } else {
                seen_contexts.insert(context.clone(), i);
            }
        }
        let username_claim = kube_claim(raw.username_claim, DEFAULT_USERNAME_CLAIM);
        let groups_claim = kube_claim(raw.groups_claim, DEFAULT_GROUPS_CLAIM);
        let username_prefix = kube_prefix(raw.username_prefix, &path, "usernamePrefix", ctx);
        let groups_prefix = kube_prefix(raw.groups_prefix, &path, "groupsPrefix", ctx);

        if ctx.errors.len() != before {
            continue;
        }
        let (Some(name), Some(server), Some(ca), Some(client_id), Some(context_name)) =
            (name, server, ca, client_id, context_name)
        else {
            continue;
        };
        out.push(KubeCluster {
            display_name: raw
                .display_name
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| name.clone()),
            name,
            server,
            certificate_authority_pem: ca,
            client_id,
            namespace,
            context_name,
            username_claim,
            username_prefix,
            groups_claim,
            groups_prefix,
            client_secret_for_users,
        });
    }
    (out, names)
}

/// Role names are path segments in the Kubernetes API.
fn is_role_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('%')
}

fn resolve_rbac(value: Value, cluster_names: &[String], ctx: &mut Ctx) -> Vec<RbacBinding> {
    let mut out: Vec<(usize, RbacBinding)> = Vec::new();
    for (i, raw) in list_at::<RawRbacBinding>(value, "kubernetes.rbac", ctx) {
        let path = index_path("kubernetes.rbac", i);
        let before = ctx.errors.len();
        let group = raw.group.filter(|g| !g.is_empty());
        if group.is_none() {
            ctx.err(
                key_path(&path, "group"),
                "missing required key `group` (the upstream group, e.g. a GitHub team `acme:platform`)",
            );
        }
        let namespace = raw.namespace.filter(|n| !n.is_empty());
        if let Some(ns) = &namespace {
            if !is_dns_label(ns) {
                ctx.err(
                    key_path(&path, "namespace"),
                    format!("`{ns}` is not a valid namespace name (lowercase letters, digits and `-`, at most 63)"),
                );
            }
        }
        let role = match (
            raw.role.filter(|r| !r.is_empty()),
            raw.cluster_role.filter(|r| !r.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                ctx.err(&path, "set either `role` or `clusterRole`, not both");
                None
            }
            (None, None) => {
                ctx.err(
                    key_path(&path, "clusterRole"),
                    "missing required key `clusterRole` (or `role` with `namespace`)",
                );
                None
            }
            (Some(role), None) => {
                if namespace.is_none() {
                    ctx.err(
                        key_path(&path, "namespace"),
                        "required with `role`: a Role lives in one namespace (bind a `clusterRole` for the whole cluster)",
                    );
                }
                Some(RbacRole::Role(role))
            }
            (None, Some(role)) => Some(RbacRole::ClusterRole(role)),
        };
        if let Some(role) = &role {
            if !is_role_name(role.name()) {
                let key = match role {
                    RbacRole::Role(_) => "role",
                    RbacRole::ClusterRole(_) => "clusterRole",
                };
                ctx.err(
                    key_path(&path, key),
                    format!("`{}` is not a valid role name", role.name()),
                );
            }
        }
        let clusters = raw.clusters.unwrap_or_default();
        for (j, c) in clusters.iter().enumerate() {
            if !cluster_names.contains(c) {
                ctx.err(
                    index_path(&key_path(&path, "clusters"), j),
                    format!(
                        "no cluster is named `{c}`; kubernetes.clusters: {}",
                        names_list(cluster_names)
                    ),
                );
            }
        }
        if ctx.errors.len() != before {
            continue;
        }
        let (Some(group), Some(role)) = (group, role) else {
            continue;
        };
        let mut sorted = clusters.clone();
        sorted.sort();
        sorted.dedup();
        let binding = RbacBinding {
            group,
            role,
            namespace,
            clusters: sorted,
        };
        if let Some((first, _)) = out.iter().find(|(_, b)| *b == binding) {
            ctx.err(
                &path,
                format!("duplicate binding (also kubernetes.rbac[{first}])"),
            );
            continue;
        }
        out.push((i, binding));
    }
    out.into_iter().map(|(_, b)| b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BCRYPT: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

    fn cert_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["k.example.com".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    #[test]
    fn pem_certificates_are_kept_and_everything_else_dropped() {
        let (a, b) = (cert_pem(), cert_pem());
        let text = format!(
            "subject=CN=a\r\n{}\nBag Attributes\n{b}",
            a.replace('\n', "\r\n")
        );
        assert_eq!(
            normalize_pem_certificates(&text).unwrap(),
            format!("{a}{b}")
        );
    }

    #[test]
    fn pem_without_a_certificate_or_with_broken_blocks_is_refused() {
        let a = cert_pem();
        assert!(normalize_pem_certificates("")
            .unwrap_err()
            .contains("no PEM certificate"));
        let unterminated = a.replace("-----END CERTIFICATE-----\n", "");
        assert!(normalize_pem_certificates(&unterminated)
            .unwrap_err()
            .contains("no END line"));
        let mismatched = a.replace("END CERTIFICATE", "END X509 CRL");
        assert!(normalize_pem_certificates(&mismatched)
            .unwrap_err()
            .contains("ends with"));
        let key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n";
        let with_key = format!("{a}{key}");
        assert!(normalize_pem_certificates(&with_key)
            .unwrap_err()
            .contains("`EC PRIVATE KEY`"));
        let garbled = a.replacen("MII", "!!!", 1);
        assert!(normalize_pem_certificates(&garbled)
            .unwrap_err()
            .contains("not valid base64"));
    }

    #[test]
    fn bcrypt_shape() {
        assert!(is_bcrypt(BCRYPT));
        assert!(is_bcrypt(&BCRYPT.replace("$2a$", "$2y$")));
        assert!(!is_bcrypt(&BCRYPT.replace("$2a$", "$2x$")));
        assert!(!is_bcrypt(&BCRYPT[..59]));
        assert!(!is_bcrypt(&BCRYPT.replace("$10$", "$99$")));
        assert!(!is_bcrypt(&BCRYPT.replace('W', "!")));
    }

    #[test]
    fn argon2id_shape() {
        let h = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
        assert!(is_argon2id(h));
        assert!(is_argon2id(&h.replace("v=19$", "")));
        assert!(!is_argon2id(&h.replace("argon2id", "argon2i")));
        assert!(!is_argon2id(&h.replace("m=19456,", "")));
        assert!(!is_argon2id("$argon2id$v=19$m=1,t=1,p=1$salt"));
    }

    #[test]
    fn base64_encoded_bcrypt_is_decoded() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(BCRYPT);
        assert_eq!(normalize_hash(&encoded).unwrap(), BCRYPT);
        assert!(normalize_hash("aGVsbG8=").is_err());
        assert!(normalize_hash("password").is_err());
    }

    #[test]
    fn key_decoding_accepts_hex_and_base64_of_32_bytes() {
        let key = [7u8; 32];
        assert_eq!(decode_key(&hex::encode(key)).unwrap(), key);
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        assert_eq!(decode_key(&b64).unwrap(), key);
        assert_eq!(decode_key(&format!("{b64}\n")).unwrap(), key);
        let url_nopad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xffu8; 32]);
        assert_eq!(decode_key(&url_nopad).unwrap(), [0xff; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        assert!(decode_key(&short).unwrap_err().contains("16 bytes"));
        assert!(decode_key("not base64 !!").is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr("127.0.0.1:5556").unwrap(), "127.0.0.1:5556");
        assert_eq!(listen_addr("[::1]:5556").unwrap(), "[::1]:5556");
        assert_eq!(listen_addr(":5556").unwrap(), "0.0.0.0:5556");
        assert_eq!(listen_addr("localhost:80").unwrap(), "localhost:80");
        assert!(listen_addr("5556").is_err());
        assert!(listen_addr("host:99999").is_err());
        assert!(listen_addr("::1:5556").is_err());
        assert!(listen_addr("bad host:1").is_err());
    }

    #[test]
    fn redirect_uris() {
        assert!(check_redirect_uri("https://app.example/cb").is_ok());
        assert!(check_redirect_uri("com.example.app:/callback").is_ok());
        for refused in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "file:///etc/passwd",
            "myapp:/cb",
        ] {
            let err = check_redirect_uri(refused).unwrap_err();
            assert!(err.contains(refused), "{err}");
            assert!(err.contains("RFC 8252"), "{err}");
        }
        assert!(check_redirect_uri("http://127.0.0.1:5555/callback").is_ok());
        assert!(check_redirect_uri("urn:ietf:wg:oauth:2.0:oob").is_ok());
        assert!(check_redirect_uri("/device/callback").is_ok());
        assert!(check_redirect_uri("/callback").is_err());
        assert!(check_redirect_uri("https://app.example/cb#frag").is_err());
    }
}
