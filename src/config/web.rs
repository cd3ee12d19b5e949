//! `web:`: the listeners, TLS, security headers, CORS, the client's address behind proxies,
//! and lanyard's connection limits.

use std::path::PathBuf;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_yaml_ng::Value;
use url::Url;

use super::listen::{self, ListenAddr};
use super::path::{index_path, key_path};
use super::raw::DurationText;
use super::resolve::{positive_duration, Ctx};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebConfig {
    /// Where to serve plain HTTP.
    pub http: Option<ListenAddr>,
    /// Where to serve HTTPS, with `tls_cert` and `tls_key`.
    pub https: Option<ListenAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_min_version: Option<TlsVersion>,
    pub tls_max_version: Option<TlsVersion>,
    pub headers: WebHeaders,
    /// CORS origins: `*` or `scheme://host[:port]`.
    pub allowed_origins: Vec<CorsOrigin>,
    /// Extra request headers CORS allows.
    pub allowed_headers: Vec<HeaderName>,
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

/// An entry of `web.allowedOrigins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigin {
    /// `*`: every origin.
    Any,
    /// `scheme://host[:port]`, serialized as browsers send it in `Origin`.
    Exact(HeaderValue),
}

/// Dex's `web.headers`: values for these security headers on every response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebHeaders {
    pub content_security_policy: Option<HeaderValue>,
    pub x_frame_options: Option<HeaderValue>,
    pub x_content_type_options: Option<HeaderValue>,
    pub x_xss_protection: Option<HeaderValue>,
    pub strict_transport_security: Option<HeaderValue>,
}

impl WebHeaders {
    /// The configured headers as (name, value) pairs.
    pub fn pairs(&self) -> Vec<(HeaderName, HeaderValue)> {
        [
            (
                header::CONTENT_SECURITY_POLICY,
                &self.content_security_policy,
            ),
            (header::X_FRAME_OPTIONS, &self.x_frame_options),
            (header::X_CONTENT_TYPE_OPTIONS, &self.x_content_type_options),
            (header::X_XSS_PROTECTION, &self.x_xss_protection),
            (
                header::STRICT_TRANSPORT_SECURITY,
                &self.strict_transport_security,
            ),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.clone().map(|v| (name, v)))
        .collect()
    }
}

/// Where the client's address comes from when lanyard sits behind proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRemoteIp {
    /// A header such as `X-Forwarded-For`, trusted only from `trusted_proxies`.
    pub header: Option<HeaderName>,
    pub trusted_proxies: Vec<IpCidr>,
}

pub use lanyard_connectors::cidr::IpCidr;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RawWeb {
    #[serde(default, deserialize_with = "listen::optional")]
    pub http: Option<ListenAddr>,
    #[serde(default, deserialize_with = "listen::optional")]
    pub https: Option<ListenAddr>,
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

/// A header value as the config may write it: visible ASCII, spaces and tabs (the `http`
/// crate would also take bytes above ASCII, which some clients mangle).
fn header_value(v: &str) -> Option<HeaderValue> {
    let ascii = v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    ascii.then(|| HeaderValue::from_str(v).ok()).flatten()
}

/// A header name: a non-empty HTTP token.
fn header_name(v: &str) -> Option<HeaderName> {
    HeaderName::try_from(v).ok()
}

/// Far above what one process can serve; a larger `web.maxConnections` is a typo.
const MAX_CONNECTIONS_CEILING: u64 = 1_000_000;

pub(super) fn resolve_web(value: Value, ctx: &mut Ctx) -> WebConfig {
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

    web.http = raw.http;
    web.https = raw.https;
    if web.http.is_none() && web.https.is_none() {
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
        let mut value = |name: &str, v: Option<String>| {
            let v = v.filter(|v| !v.is_empty())?;
            let parsed = header_value(&v);
            if parsed.is_none() {
                ctx.err(
                    key_path("web.headers", name),
                    "contains characters not allowed in an HTTP header",
                );
            }
            parsed
        };
        web.headers = WebHeaders {
            content_security_policy: value("Content-Security-Policy", h.content_security_policy),
            x_frame_options: value("X-Frame-Options", h.x_frame_options),
            x_content_type_options: value("X-Content-Type-Options", h.x_content_type_options),
            x_xss_protection: value("X-XSS-Protection", h.x_xss_protection),
            strict_transport_security: value(
                "Strict-Transport-Security",
                h.strict_transport_security,
            ),
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
            web.allowed_origins.push(CorsOrigin::Any);
            continue;
        }
        match Url::parse(&origin) {
            Ok(url)
                if (url.scheme() == "http" || url.scheme() == "https")
                    && url.path() == "/"
                    && url.query().is_none()
                    && url.fragment().is_none() =>
            {
                match HeaderValue::try_from(url.origin().ascii_serialization()) {
                    Ok(value) => web.allowed_origins.push(CorsOrigin::Exact(value)),
                    Err(_) => ctx.err(
                        path,
                        format!(
                            "`{origin}` is not an origin; expected `*` or scheme://host[:port]"
                        ),
                    ),
                }
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
        if let Some(name) = header_name(&header) {
            web.allowed_headers.push(name);
        } else {
            ctx.err(
                index_path("web.allowedHeaders", i),
                format!("`{header}` is not a valid header name"),
            );
        }
    }
    if let Some(rip) = raw.client_remote_ip {
        if let Some(header) = rip.header.filter(|h| !h.is_empty()) {
            if let Some(name) = header_name(&header) {
                web.client_remote_ip.header = Some(name);
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
