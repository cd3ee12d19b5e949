//! An authenticating reverse proxy as the upstream (`type: authproxy`): the proxy signs the
//! user in and passes who they are in request headers; lanyard believes those headers.
//!
//! Behaviour follows Dex's `authproxy` connector: the same header keys and defaults
//! (`X-Remote-User`, `X-Remote-User-Id`, `X-Remote-User-Name`, `X-Remote-User-Email`,
//! `X-Remote-Group` split on `,`) and `staticGroups` added to every user. The login goes to
//! `/callback/<connector id>`, which the proxy must protect.
//!
//! Believing headers is only safe when they can only have come from the proxy, so lanyard
//! requires `trustedProxies` (a lanyard-only key: the proxy's source addresses or CIDR ranges)
//! and refuses the headers from any other peer address. Dex has no such check.

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
use http::HeaderMap;
use serde::Deserialize;

use crate::cidr::IpCidr;
use crate::{CallbackConnector, ConfigIssue, ConnectorError, Identity, Scopes, UpstreamRedirect};

/// The lanyard-only key that lists the proxy's addresses.
pub const TRUSTED_PROXIES_KEY: &str = "trustedProxies";

/// Dex's `authproxy` settings, plus `trustedProxies`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthProxyConfig {
    #[serde(rename = "userIDHeader")]
    pub user_id_header: String,
    #[serde(rename = "userHeader")]
    pub user_header: String,
    #[serde(rename = "userNameHeader")]
    pub user_name_header: String,
    #[serde(rename = "emailHeader")]
    pub email_header: String,
    #[serde(rename = "groupHeader")]
    pub group_header: String,
    #[serde(rename = "groupHeaderSeparator")]
    pub group_header_separator: String,
    /// Groups every user of this connector gets (Dex's `staticGroups`).
    #[serde(rename = "staticGroups")]
    pub static_groups: Vec<String>,
    /// The addresses (or CIDR ranges) the proxy connects to lanyard from. Required.
    #[serde(rename = "trustedProxies")]
    pub trusted_proxies: Option<Vec<String>>,
}

impl fmt::Debug for AuthProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthProxyConfig")
            .field("user_header", &self.user_header)
            .field("group_header", &self.group_header)
            .field("static_groups", &self.static_groups)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl AuthProxyConfig {
    /// Everything wrong with the settings, each under its key.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        match &self.trusted_proxies {
            None => out.push(ConfigIssue::error(
                TRUSTED_PROXIES_KEY,
                "missing required key `trustedProxies`: list the addresses or CIDR ranges the authenticating proxy connects from (lanyard refuses identity headers from anyone else; see docs/connectors/authproxy.md)",
            )),
            Some(list) if list.is_empty() => out.push(ConfigIssue::error(
                TRUSTED_PROXIES_KEY,
                "must list at least one address or CIDR range of the authenticating proxy",
            )),
            Some(list) => {
                for (i, entry) in list.iter().enumerate() {
                    match IpCidr::parse(entry.trim()) {
                        None => out.push(ConfigIssue::error(
                            format!("{TRUSTED_PROXIES_KEY}[{i}]"),
                            format!("`{entry}` is not an IP address or CIDR range"),
                        )),
                        Some(net) if net.prefix_len == 0 => out.push(ConfigIssue::error(
                            format!("{TRUSTED_PROXIES_KEY}[{i}]"),
                            format!("`{entry}` trusts every address, so anyone could send the identity headers; list the proxy's addresses"),
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        for (key, value) in [
            ("userIDHeader", &self.user_id_header),
            ("userHeader", &self.user_header),
            ("userNameHeader", &self.user_name_header),
            ("emailHeader", &self.email_header),
            ("groupHeader", &self.group_header),
        ] {
            if !value.is_empty() && http::HeaderName::from_bytes(value.as_bytes()).is_err() {
                out.push(ConfigIssue::error(
                    key,
                    format!("`{value}` is not a valid HTTP header name"),
                ));
            }
        }
        out
    }
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value.to_string()
    }
}

pub struct AuthProxyConnector {
    id: String,
    trusted: Vec<IpCidr>,
    user_id_header: String,
    user_header: String,
    user_name_header: String,
    email_header: String,
    group_header: String,
    separator: String,
    static_groups: Vec<String>,
}

impl AuthProxyConnector {
    /// `id` is the connector's id: the login goes to `/callback/<id>`.
    pub fn new(id: &str, config: &AuthProxyConfig) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        let trusted = config
            .trusted_proxies
            .iter()
            .flatten()
            .filter_map(|e| IpCidr::parse(e.trim()))
            .collect();
        Ok(Self {
            id: id.to_string(),
            trusted,
            user_id_header: or_default(&config.user_id_header, "X-Remote-User-Id"),
            user_header: or_default(&config.user_header, "X-Remote-User"),
            user_name_header: or_default(&config.user_name_header, "X-Remote-User-Name"),
            email_header: or_default(&config.email_header, "X-Remote-User-Email"),
            group_header: or_default(&config.group_header, "X-Remote-Group"),
            separator: or_default(&config.group_header_separator, ","),
            static_groups: config.static_groups.clone(),
        })
    }

    fn trusts(&self, peer: IpAddr) -> bool {
        // A dual-stack listener shows IPv4 peers as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        self.trusted.iter().any(|net| net.contains(&peer))
    }
}

/// A header's value as text; absent, empty or not visible ASCII/UTF-8 counts as absent.
fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

#[async_trait]
impl CallbackConnector for AuthProxyConnector {
    /// lanyard's own `/callback/<id>`, behind the proxy, with the state.
    async fn login_url(
        &self,
        _scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        let mut url = url::Url::parse(callback_url)
            .map_err(|e| ConnectorError::Config(format!("callback URL {callback_url}: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| ConnectorError::Config(format!("callback URL {callback_url}")))?
            .push(&self.id);
        url.query_pairs_mut().append_pair("state", state);
        Ok(UpstreamRedirect {
            url: url.to_string(),
            pending: Vec::new(),
        })
    }

    /// The shared `/callback` carries no headers to believe.
    async fn handle_callback(
        &self,
        _scopes: &Scopes,
        _callback_url: &str,
        _pending: &[u8],
        _query: &str,
    ) -> Result<Identity, ConnectorError> {
        Err(ConnectorError::BadCallback(format!(
            "an authproxy login returns to /callback/{}, not /callback",
            self.id
        )))
    }

    async fn handle_proxied_callback(
        &self,
        _scopes: &Scopes,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<Identity, ConnectorError> {
        if !self.trusts(peer) {
            return Err(ConnectorError::AccessDenied(format!(
                "the sign-in request came from {}, which is not a trusted authenticating proxy (trustedProxies), so its identity headers are ignored",
                peer.to_canonical()
            )));
        }
        let user = header(headers, &self.user_header).ok_or_else(|| {
            ConnectorError::BadCallback(format!(
                "the proxy did not set the required header {}",
                self.user_header
            ))
        })?;
        let mut groups: Vec<String> = header(headers, &self.group_header)
            .map(|v| {
                v.split(self.separator.as_str())
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        groups.extend(self.static_groups.iter().cloned());
        Ok(Identity {
            user_id: header(headers, &self.user_id_header).unwrap_or_else(|| user.clone()),
            preferred_username: header(headers, &self.user_name_header)
                .unwrap_or_else(|| user.clone()),
            email: header(headers, &self.email_header).unwrap_or_else(|| user.clone()),
            email_verified: true,
            username: user,
            groups,
            connector_data: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn connector(config: serde_json::Value) -> AuthProxyConnector {
        AuthProxyConnector::new("proxy", &serde_json::from_value(config).unwrap()).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[tokio::test]
    async fn dex_headers_and_static_groups_from_a_trusted_proxy() {
        let c = connector(json!({"trustedProxies": ["10.0.0.0/24"], "staticGroups": ["all"]}));
        let id = c
            .handle_proxied_callback(
                &Scopes::default(),
                "::ffff:10.0.0.7".parse().unwrap(),
                &headers(&[
                    ("x-remote-user", "jane"),
                    ("x-remote-group", " devs, ops ,"),
                ]),
            )
            .await
            .unwrap();
        assert_eq!(id.user_id, "jane");
        assert_eq!(id.email, "jane");
        assert_eq!(id.preferred_username, "jane");
        assert_eq!(id.groups, vec!["devs", "ops", "all"]);
    }

    #[tokio::test]
    async fn headers_from_another_address_are_refused() {
        let c = connector(json!({"trustedProxies": ["10.0.0.1"]}));
        let err = c
            .handle_proxied_callback(
                &Scopes::default(),
                "10.0.0.2".parse().unwrap(),
                &headers(&[("x-remote-user", "jane")]),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ConnectorError::AccessDenied(m) if m.contains("10.0.0.2")),
            "{err:?}"
        );
    }

    #[test]
    fn trusted_proxies_is_required_and_checked() {
        let paths = |v| {
            serde_json::from_value::<AuthProxyConfig>(v)
                .unwrap()
                .validate()
                .into_iter()
                .map(|i| i.path)
                .collect::<Vec<_>>()
        };
        assert_eq!(paths(json!({})), vec!["trustedProxies"]);
        assert_eq!(
            paths(
                json!({"trustedProxies": ["10.0.0.1", "nope", "0.0.0.0/0"], "userHeader": "a b"})
            ),
            vec!["trustedProxies[1]", "trustedProxies[2]", "userHeader"]
        );
    }
}
