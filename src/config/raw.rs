//! The config as written: Dex's keys, spelled exactly as Dex spells them, every field optional
//! so that validation (not serde) decides what is required and can report all of it at once.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_yaml_ng::Value;

use super::duration::parse_go_duration;

/// The top-level keys lanyard knows, for "did you mean" on a misspelled one.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "issuer",
    "storage",
    "web",
    "telemetry",
    "grpc",
    "expiry",
    "logger",
    "oauth2",
    "frontend",
    "signer",
    "staticClients",
    "enablePasswordDB",
    "staticPasswords",
    "connectors",
    "keys",
    "sessions",
    "kubernetes",
    "housekeeping",
];

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawWeb {
    pub http: Option<String>,
    pub https: Option<String>,
    pub headers: Option<RawHeaders>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_min_version: Option<String>,
    pub tls_max_version: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_headers: Option<Vec<String>>,
    #[serde(rename = "clientRemoteIP")]
    pub client_remote_ip: Option<RawClientRemoteIp>,
    // lanyard-only: how long slow or idle clients may hold a connection.
    pub header_read_timeout: Option<DurationText>,
    pub tls_handshake_timeout: Option<DurationText>,
    pub request_body_timeout: Option<DurationText>,
    pub idle_timeout: Option<DurationText>,
    pub max_connections: Option<u64>,
}

/// Dex's `web.headers`: a fixed set of security headers, keyed by header name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    #[serde(rename = "Content-Security-Policy")]
    pub content_security_policy: Option<String>,
    #[serde(rename = "X-Frame-Options")]
    pub x_frame_options: Option<String>,
    #[serde(rename = "X-Content-Type-Options")]
    pub x_content_type_options: Option<String>,
    #[serde(rename = "X-XSS-Protection")]
    pub x_xss_protection: Option<String>,
    #[serde(rename = "Strict-Transport-Security")]
    pub strict_transport_security: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawClientRemoteIp {
    pub header: Option<String>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawTelemetry {
    pub http: Option<String>,
    pub enable_profiling: Option<LenientBool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawExpiry {
    pub signing_keys: Option<DurationText>,
    pub id_tokens: Option<DurationText>,
    pub auth_requests: Option<DurationText>,
    pub device_requests: Option<DurationText>,
    pub refresh_tokens: Option<RawRefreshTokens>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRefreshTokens {
    pub disable_rotation: Option<LenientBool>,
    pub reuse_interval: Option<DurationText>,
    pub absolute_lifetime: Option<DurationText>,
    pub valid_if_not_used_for: Option<DurationText>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawOAuth2 {
    pub response_types: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub skip_approval_screen: Option<LenientBool>,
    pub always_show_login_screen: Option<LenientBool>,
    pub password_connector: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStaticClient {
    pub id: Option<String>,
    pub id_env: Option<String>,
    pub secret: Option<String>,
    pub secret_env: Option<String>,
    #[serde(rename = "redirectURIs")]
    pub redirect_uris: Option<Vec<String>>,
    pub trusted_peers: Option<Vec<String>>,
    pub public: Option<LenientBool>,
    pub name: Option<String>,
    #[serde(rename = "logoURL")]
    pub logo_url: Option<String>,
    pub grant_types: Option<Vec<String>>,
    #[serde(rename = "postLogoutRedirectURIs")]
    pub post_logout_redirect_uris: Option<Vec<String>>,
    pub allowed_connectors: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawStaticPassword {
    pub email: Option<String>,
    pub hash: Option<String>,
    pub hash_from_env: Option<String>,
    pub username: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
    pub email_verified: Option<LenientBool>,
    #[serde(rename = "userID")]
    pub user_id: Option<String>,
    pub groups: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKeys {
    pub algorithm: Option<String>,
    pub rotation_period: Option<DurationText>,
    pub publish_ahead: Option<DurationText>,
    pub poll_interval: Option<DurationText>,
    pub encryption_key: Option<String>,
    pub encryption_key_file: Option<String>,
    pub encryption_key_env: Option<String>,
}

/// lanyard's `kubernetes:` section. The lists stay trees so that each entry is read (and
/// reported) on its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubernetes {
    pub clusters: Option<Value>,
    pub rbac: Option<Value>,
    pub issuer_certificate_authority_data: Option<String>,
    pub issuer_certificate_authority_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawKubeCluster {
    pub name: Option<String>,
    pub display_name: Option<String>,
    pub server: Option<String>,
    pub certificate_authority_data: Option<String>,
    pub certificate_authority_file: Option<String>,
    #[serde(rename = "clientID")]
    pub client_id: Option<String>,
    pub namespace: Option<String>,
    pub context_name: Option<String>,
    pub username_claim: Option<String>,
    pub username_prefix: Option<String>,
    pub groups_claim: Option<String>,
    pub groups_prefix: Option<String>,
    pub client_secret_for_users: Option<LenientBool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawRbacBinding {
    pub group: Option<String>,
    pub role: Option<String>,
    pub cluster_role: Option<String>,
    pub namespace: Option<String>,
    pub clusters: Option<Vec<String>>,
}

/// A non-negative integer written as a YAML number or as a string of digits: after
/// `port: $PGPORT` expands, the value is a string.
#[derive(Debug, Clone, Copy)]
pub struct LenientU64(pub u64);

impl<'de> Deserialize<'de> for LenientU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientU64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientU64, E> {
                Ok(LenientU64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientU64, E> {
                u64::try_from(v)
                    .map(LenientU64)
                    .map_err(|_| E::custom(format!("expected a non-negative integer, got {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientU64, E> {
                v.trim()
                    .parse()
                    .map(LenientU64)
                    .map_err(|_| E::custom(format!("expected a non-negative integer, got `{v}`")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean written as `true`/`false` or as those words in a string (after env expansion).
#[derive(Debug, Clone, Copy)]
pub struct LenientBool(pub bool);

impl<'de> Deserialize<'de> for LenientBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientBool;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<LenientBool, E> {
                Ok(LenientBool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientBool, E> {
                match v.trim() {
                    "true" | "True" | "TRUE" => Ok(LenientBool(true)),
                    "false" | "False" | "FALSE" => Ok(LenientBool(false)),
                    _ => Err(E::custom(format!("expected true or false, got `{v}`"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Dex writes these as integer seconds; a Go duration string ("30s") is accepted too.
#[derive(Debug, Clone, Copy)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds or a duration like 30s")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(|s| Seconds(Duration::from_secs(s)))
                    .map_err(|_| {
                        E::custom(format!(
                            "expected a non-negative number of seconds, got {v}"
                        ))
                    })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                let v = v.trim();
                if let Ok(secs) = v.parse::<u64>() {
                    return Ok(Seconds(Duration::from_secs(secs)));
                }
                parse_go_duration(v)
                    .map(Seconds)
                    .map_err(|e| E::custom(format!("invalid duration `{v}`: {e}")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as written. YAML reads `reuseInterval: 5` or `signingKeys: 0` as numbers; they
/// are kept as text so that the Go duration parser accepts "0" and explains "5" (no unit).
#[derive(Debug, Clone)]
pub struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration like 10m or 1h30m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}
