//! GitLab (gitlab.com or a self-managed instance) as an upstream (`type: gitlab`): the OAuth
//! web flow, then `GET /api/v4/user` for who the user is and `GET /oauth/userinfo` (GitLab's
//! OpenID Connect userinfo, which lists the user's groups) for groups.
//!
//! Behaviour follows Dex's GitLab connector: the same keys, the same `user_id` (numeric id, or
//! the username with `useLoginAsID`), the same group names (full group paths, plus
//! `group:owner`/`group:maintainer`/`group:developer` with `getGroupsPermission`), so RBAC
//! bindings written for Dex keep matching.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::upstream::oauth_client::REQUEST_TIMEOUT;
use crate::upstream::{
    filter_groups, is_http_url, read_root_ca, FetchError, OAuthUpstream, Tokens, UpstreamSettings,
};
use crate::{
    CallbackConnector, ConfigIssue, ConnectorError, Identity, RefreshConnector, Scopes,
    UpstreamRedirect,
};

const DEFAULT_BASE_URL: &str = "https://gitlab.com";
const SCOPE_USER: &str = "read_user";
const SCOPE_OPENID: &str = "openid";
/// The userinfo claims GitLab adds for groups where the user has at least that role
/// (GitLab's OpenID Connect provider documentation, "Shared information").
const OWNER_CLAIM: &str = "https://gitlab.org/claims/groups/owner";
const MAINTAINER_CLAIM: &str = "https://gitlab.org/claims/groups/maintainer";
const DEVELOPER_CLAIM: &str = "https://gitlab.org/claims/groups/developer";

/// Dex's GitLab connector settings, key for key.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitlabConfig {
    /// A self-managed instance's root; empty: gitlab.com.
    #[serde(rename = "baseURL")]
    pub base_url: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "clientSecret")]
    pub client_secret: String,
    /// Must be lanyard's own `/callback` when given.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    /// Only users in one of these groups may sign in; their groups are narrowed to these.
    pub groups: Vec<String>,
    #[serde(rename = "useLoginAsID")]
    pub use_login_as_id: bool,
    #[serde(rename = "getGroupsPermission")]
    pub get_groups_permission: bool,
    /// CA certificates for a self-managed instance: base64 of PEM (Dex's `[]byte`), added to
    /// the public roots.
    #[serde(rename = "rootCAData")]
    pub root_ca_data: String,
}

impl fmt::Debug for GitlabConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitlabConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("groups", &self.groups)
            .field("use_login_as_id", &self.use_login_as_id)
            .field("get_groups_permission", &self.get_groups_permission)
            .field("root_ca_data", &(!self.root_ca_data.is_empty()))
            .finish()
    }
}

impl GitlabConfig {
    /// The instance's root, without a trailing slash.
    pub fn base_url(&self) -> &str {
        if self.base_url.is_empty() {
            DEFAULT_BASE_URL
        } else {
            self.base_url.trim_end_matches('/')
        }
    }

    /// Everything wrong with the settings, each under its key.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        for (key, value) in [
            ("clientID", &self.client_id),
            ("clientSecret", &self.client_secret),
        ] {
            if value.is_empty() {
                out.push(ConfigIssue::error(
                    key,
                    format!("missing required key `{key}`"),
                ));
            }
        }
        if !self.base_url.is_empty() && !is_http_url(&self.base_url) {
            out.push(ConfigIssue::error(
                "baseURL",
                format!(
                    "`{}` is not an http(s) URL such as https://gitlab.example.com",
                    self.base_url
                ),
            ));
        }
        if !self.root_ca_data.is_empty() {
            if let Err(e) = read_root_ca(&self.root_ca_data) {
                out.push(ConfigIssue::error("rootCAData", e));
            }
        }
        for (i, g) in self.groups.iter().enumerate() {
            if g.is_empty() {
                out.push(ConfigIssue::error(
                    format!("groups[{i}]"),
                    "empty group name",
                ));
            }
        }
        out
    }
}

/// What a session keeps for refresh (Dex's field names).
#[derive(Default, Serialize, Deserialize)]
struct ConnectorData {
    #[serde(rename = "accessToken", default)]
    access_token: String,
    #[serde(rename = "refreshToken", default)]
    refresh_token: String,
}

/// `GET /api/v4/user` (GitLab REST API, "Users API: Get the current user").
#[derive(Deserialize)]
struct GitlabUser {
    id: u64,
    #[serde(default)]
    name: String,
    username: String,
    #[serde(default)]
    email: String,
}

pub struct GitlabConnector {
    upstream: OAuthUpstream,
    base_url: String,
    groups: Vec<String>,
    use_login_as_id: bool,
    get_groups_permission: bool,
}

impl GitlabConnector {
    /// `callback_url` is lanyard's `/callback`; a configured `redirectURI` must equal it.
    pub fn new(config: &GitlabConfig, callback_url: &str) -> Result<Self, ConnectorError> {
        Self::with_timeout(config, callback_url, REQUEST_TIMEOUT)
    }

    /// Like [`new`](Self::new), with another bound on each request to GitLab.
    pub fn with_timeout(
        config: &GitlabConfig,
        callback_url: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        if !config.redirect_uri.is_empty() && config.redirect_uri != callback_url {
            return Err(ConnectorError::Config(format!(
                "redirectURI `{}` is not this server's callback URL `{callback_url}`; GitLab sends the browser back to redirectURI, so set it to the callback URL (or leave it out)",
                config.redirect_uri
            )));
        }
        let base_url = config.base_url().to_string();
        let root_cas: Vec<String> = if config.root_ca_data.is_empty() {
            Vec::new()
        } else {
            vec![config.root_ca_data.clone()]
        };
        let upstream = OAuthUpstream::new(
            &UpstreamSettings {
                name: "GitLab",
                client_id: &config.client_id,
                client_secret: &config.client_secret,
                authorization_url: &format!("{base_url}/oauth/authorize"),
                token_url: &format!("{base_url}/oauth/token"),
                redirect_uri: callback_url,
                root_cas: &root_cas,
            },
            timeout,
        )
        .map_err(|e| match e {
            ConnectorError::Config(m) => {
                ConnectorError::Config(m.replace("rootCAs[0]", "rootCAData"))
            }
            other => other,
        })?;
        Ok(Self {
            upstream,
            base_url,
            groups: config.groups.clone(),
            use_login_as_id: config.use_login_as_id,
            get_groups_permission: config.get_groups_permission,
        })
    }

    /// As in Dex: groups are read when the client asked for them or `groups` restricts who
    /// may sign in.
    fn groups_required(&self, scopes: &Scopes) -> bool {
        !self.groups.is_empty() || scopes.groups
    }

    /// `read_user`, and `openid` (for userinfo's groups) when groups are read.
    pub fn upstream_scopes(&self, scopes: &Scopes) -> Vec<String> {
        let mut out = vec![SCOPE_USER.to_string()];
        if self.groups_required(scopes) {
            out.push(SCOPE_OPENID.to_string());
        }
        out
    }

    /// Who the token's user is, with groups under the connector's rules. `Denied` when
    /// `groups` keeps the user out.
    async fn identity(&self, scopes: &Scopes, tokens: &Tokens) -> Result<Identity, Lookup> {
        let access_token = tokens.access_token.as_str();
        let user: GitlabUser = serde_json::from_value(
            self.upstream
                .get_json(&format!("{}/api/v4/user", self.base_url), access_token)
                .await?,
        )
        .map_err(|e| FetchError::Malformed {
            name: "GitLab",
            endpoint: "/api/v4/user".into(),
            reason: e.to_string(),
        })?;
        let groups = if self.groups_required(scopes) {
            let info = self
                .upstream
                .get_json(&format!("{}/oauth/userinfo", self.base_url), access_token)
                .await?;
            let all = user_groups(&info, self.get_groups_permission);
            if self.groups.is_empty() {
                all
            } else {
                let kept = filter_groups(&all, &self.groups);
                if kept.is_empty() {
                    return Err(Lookup::Denied(format!(
                        "the GitLab user `{}` is not in any of the required groups ({})",
                        user.username,
                        self.groups.join(", ")
                    )));
                }
                kept
            }
        } else {
            Vec::new()
        };
        let connector_data = if scopes.offline_access {
            Some(
                serde_json::to_vec(&ConnectorData {
                    access_token: access_token.to_string(),
                    refresh_token: tokens.refresh_token.clone().unwrap_or_default(),
                })
                .map_err(|e| Lookup::Internal(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(Identity {
            user_id: if self.use_login_as_id {
                user.username.clone()
            } else {
                user.id.to_string()
            },
            username: if user.name.is_empty() {
                user.email.clone()
            } else {
                user.name
            },
            preferred_username: user.username,
            email: user.email,
            email_verified: true,
            groups,
            connector_data,
        })
    }
}

/// Why no identity came of a token.
enum Lookup {
    Fetch(FetchError),
    Denied(String),
    Internal(String),
}

impl From<FetchError> for Lookup {
    fn from(e: FetchError) -> Self {
        Lookup::Fetch(e)
    }
}

/// The `groups` of GitLab's userinfo; with `permissions`, each group also as `group:role` for
/// the highest role GitLab lists for it or for a parent group (as Dex computes them).
fn user_groups(info: &Value, permissions: bool) -> Vec<String> {
    let list = |claim: &str| -> Vec<String> {
        info.get(claim)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let groups = list("groups");
    if !permissions {
        return groups;
    }
    let roles = [
        ("owner", list(OWNER_CLAIM)),
        ("maintainer", list(MAINTAINER_CLAIM)),
        ("developer", list(DEVELOPER_CLAIM)),
    ];
    // The group itself or a subgroup of it (`parent/child`).
    let covers = |granted: &str, group: &str| {
        group == granted
            || group
                .strip_prefix(granted)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let mut out = groups.clone();
    for group in &groups {
        if let Some((role, _)) = roles
            .iter()
            .find(|(_, granted)| granted.iter().any(|g| covers(g, group)))
        {
            out.push(format!("{group}:{role}"));
        }
    }
    out
}

#[async_trait]
impl CallbackConnector for GitlabConnector {
    async fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        self.upstream.check_callback(callback_url)?;
        Ok(UpstreamRedirect {
            url: self
                .upstream
                .authorize_url(state, &self.upstream_scopes(scopes)),
            pending: Vec::new(),
        })
    }

    async fn handle_callback(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        _pending: &[u8],
        query: &str,
    ) -> Result<Identity, ConnectorError> {
        let tokens = self
            .upstream
            .tokens_from_callback(callback_url, query)
            .await?;
        self.identity(scopes, &tokens).await.map_err(|e| match e {
            Lookup::Fetch(e) => e.at_login(),
            Lookup::Denied(reason) => ConnectorError::AccessDenied(reason),
            Lookup::Internal(reason) => ConnectorError::Internal(reason),
        })
    }
}

#[async_trait]
impl RefreshConnector for GitlabConnector {
    /// Redeems the kept refresh token (or, without one, reuses the access token, as Dex
    /// does) and reads the user and groups again.
    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        let data: ConnectorData = identity
            .connector_data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .unwrap_or_default();
        let tokens = self
            .upstream
            .tokens_for_refresh(data.access_token, data.refresh_token)
            .await?;
        self.identity(scopes, &tokens).await.map_err(|e| match e {
            Lookup::Fetch(e) => e.at_refresh(),
            Lookup::Denied(reason) => ConnectorError::SessionEnded(reason),
            Lookup::Internal(reason) => ConnectorError::Internal(reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn permissions_add_the_highest_role_also_for_subgroups() {
        let info = json!({
            "groups": ["acme", "acme/platform", "acme-other", "widgets", "solo"],
            OWNER_CLAIM: ["widgets"],
            MAINTAINER_CLAIM: ["acme"],
            DEVELOPER_CLAIM: ["acme/platform", "widgets"],
        });
        assert_eq!(
            user_groups(&info, true),
            vec![
                "acme",
                "acme/platform",
                "acme-other",
                "widgets",
                "solo",
                "acme:maintainer",
                "acme/platform:maintainer",
                "widgets:owner",
            ]
        );
        assert_eq!(
            user_groups(&info, false),
            vec!["acme", "acme/platform", "acme-other", "widgets", "solo"]
        );
    }

    #[test]
    fn missing_credentials_and_a_bad_base_url_are_named() {
        let config = GitlabConfig {
            base_url: "gitlab.example.com".into(),
            ..Default::default()
        };
        let issues: Vec<String> = config.validate().iter().map(|i| i.path.clone()).collect();
        assert_eq!(issues, vec!["clientID", "clientSecret", "baseURL"]);
        assert_eq!(GitlabConfig::default().base_url(), "https://gitlab.com");
    }
}
