//! `staticClients:`: the OAuth clients written in the config, and the one rule for redirect
//! URIs.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde_yaml_ng::Value;
use url::Url;

use super::connectors::{connector_exists, DeclaredConnector};
use super::oauth2::{GrantType, OAuth2Config};
use super::path::{index_path, key_path};
use super::raw::LenientBool;
use super::resolve::{list_at, literal_or_env, Ctx};

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

/// The out-of-band redirect URI Dex accepts for clients that show the code to the user.
const OOB_REDIRECT_URI: &str = "urn:ietf:wg:oauth:2.0:oob";

/// Dex's device flow ends at the issuer's own `/device/callback`, and Dex configs register
/// it on device clients in exactly this relative form.
const DEVICE_CALLBACK_URI: &str = "/device/callback";

/// `/device/callback` under some path of plain segments (`/dex/device/callback`): which path
/// is the issuer's is checked where the URI is used.
fn is_device_callback_path(uri: &str) -> bool {
    uri.strip_suffix(DEVICE_CALLBACK_URI).is_some_and(|prefix| {
        prefix.is_empty()
            || (prefix.starts_with('/')
                && prefix[1..].split('/').all(|segment| {
                    !segment.is_empty()
                        && segment != "."
                        && segment != ".."
                        && segment
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
                }))
    })
}

/// Whether a client may register `uri` as a redirect (or post-logout redirect) URI: the one
/// rule for staticClients, `lanyard admin clients` and every redirect lanyard sends.
/// Browsers run `javascript:`, `data:` and `vbscript:` URLs in lanyard's origin and `file:`
/// reaches the user's disk, so only http(s) and the private-use schemes of native apps
/// (RFC 8252 §7.1: a reverse domain name, which has a dot) can be registered.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    if uri == OOB_REDIRECT_URI || is_device_callback_path(uri) {
        return Ok(());
    }
    if uri.starts_with('/') {
        return Err(format!(
            "`{uri}` is not an absolute URL; the only issuer-relative redirect URI is Dex's \
             device callback, {DEVICE_CALLBACK_URI} or the issuer's path followed by it"
        ));
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

pub(super) fn resolve_clients(
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(check_redirect_uri("/dex/device/callback").is_ok());
        assert!(check_redirect_uri("/a/b-c/device/callback").is_ok());
        for refused in [
            "//evil.example/device/callback",
            "/\\evil.example/device/callback",
            "/../device/callback",
            "/dex//device/callback",
            "/dex/device/callback/",
            "dex/device/callback",
        ] {
            assert!(check_redirect_uri(refused).is_err(), "{refused}");
        }
        assert!(check_redirect_uri("/callback").is_err());
        assert!(check_redirect_uri("https://app.example/cb#frag").is_err());
    }
}
