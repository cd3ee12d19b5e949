//! The `config` mapping of a `type: microsoft` connector, with Dex's key names, and the checks
//! `lanyard check-config` and startup run on it.

use std::fmt;

use serde::Deserialize;

use crate::upstream::check_client_settings;
use crate::ConfigIssue;

/// Microsoft's sign-in service and Graph, as Dex defaults them.
pub const DEFAULT_API_URL: &str = "https://login.microsoftonline.com";
pub const DEFAULT_GRAPH_URL: &str = "https://graph.microsoft.com";

/// Tenants that are no single organization: Graph has no directory groups for them.
const SHARED_TENANTS: [&str; 3] = ["common", "organizations", "consumers"];

/// Dex's Microsoft connector settings, plus lanyard's `rootCAs`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MicrosoftConfig {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "clientSecret")]
    pub client_secret: String,
    /// Must be lanyard's own `/callback` when given; empty: that URL.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    /// `common` (default), `organizations`, `consumers`, or a tenant's id or domain.
    pub tenant: String,
    /// Only security groups (Graph's `securityEnabledOnly`).
    #[serde(rename = "onlySecurityGroups")]
    pub only_security_groups: bool,
    /// Groups a user must be in (one of) to sign in.
    pub groups: Vec<String>,
    /// `name` (default) or `id`.
    #[serde(rename = "groupNameFormat")]
    pub group_name_format: String,
    /// Only the listed `groups` go into the token, not every group of the user.
    #[serde(rename = "useGroupsAsWhitelist")]
    pub use_groups_as_whitelist: bool,
    #[serde(rename = "emailToLowercase")]
    pub email_to_lowercase: bool,
    /// The sign-in service's root (national clouds); empty: Microsoft's global one.
    #[serde(rename = "apiURL")]
    pub api_url: String,
    /// Microsoft Graph's root (national clouds); empty: the global Graph.
    #[serde(rename = "graphURL")]
    pub graph_url: String,
    /// The `prompt` parameter of the authorization request (`login`, `consent`, ...).
    #[serde(rename = "promptType")]
    pub prompt_type: String,
    /// The `domain_hint` parameter of the authorization request.
    #[serde(rename = "domainHint")]
    pub domain_hint: String,
    /// Scopes asked of Microsoft; empty: `user.read`.
    pub scopes: Vec<String>,
    /// lanyard-only: extra CAs for the sign-in service and Graph (a TLS-inspecting egress
    /// proxy, a private cloud): a file path, base64 of PEM, or PEM, as the `oidc` connector's.
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
}

impl fmt::Debug for MicrosoftConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MicrosoftConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("tenant", &self.tenant)
            .field("groups", &self.groups)
            .field("api_url", &self.api_url)
            .field("graph_url", &self.graph_url)
            .finish_non_exhaustive()
    }
}

/// Whether groups are named by display name or object id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupNameFormat {
    Name,
    Id,
}

impl MicrosoftConfig {
    pub fn tenant(&self) -> &str {
        if self.tenant.is_empty() {
            "common"
        } else {
            &self.tenant
        }
    }

    /// Graph answers group questions only inside one organization's directory (Dex's rule).
    pub fn is_org_tenant(&self) -> bool {
        !SHARED_TENANTS.contains(&self.tenant())
    }

    pub fn api_url(&self) -> &str {
        if self.api_url.is_empty() {
            DEFAULT_API_URL
        } else {
            self.api_url.trim_end_matches('/')
        }
    }

    pub fn graph_url(&self) -> &str {
        if self.graph_url.is_empty() {
            DEFAULT_GRAPH_URL
        } else {
            self.graph_url.trim_end_matches('/')
        }
    }

    /// `None` when the value is not one Dex accepts.
    pub fn group_name_format(&self) -> Option<GroupNameFormat> {
        match self.group_name_format.as_str() {
            "" | "name" => Some(GroupNameFormat::Name),
            "id" => Some(GroupNameFormat::Id),
            _ => None,
        }
    }

    /// Everything wrong with the settings, each under its key. Files are not read here.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = check_client_settings(
            "app registration",
            (&self.client_id, &self.client_secret),
            &self.redirect_uri,
            &[("apiURL", &self.api_url), ("graphURL", &self.graph_url)],
            &self.root_cas,
        );
        let mut bad = |key: &str, msg: String| out.push(ConfigIssue::error(key, msg));
        let tenant_ok = self
            .tenant()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !tenant_ok {
            bad(
                "tenant",
                format!(
                    "`{}` is not a tenant: use common, organizations, consumers, a tenant id or a verified domain",
                    self.tenant
                ),
            );
        }
        if self.group_name_format().is_none() {
            bad(
                "groupNameFormat",
                format!(
                    "`{}` is not a group name format; use `name` or `id`",
                    self.group_name_format
                ),
            );
        }
        // Dex reads groups only for a single tenant and otherwise drops these settings without
        // a word, so that a `groups` allow-list would let everyone in: refused instead.
        if tenant_ok && !self.is_org_tenant() {
            for (key, set) in [
                ("groups", !self.groups.is_empty()),
                ("onlySecurityGroups", self.only_security_groups),
                ("useGroupsAsWhitelist", self.use_groups_as_whitelist),
                ("groupNameFormat", !self.group_name_format.is_empty()),
            ] {
                if set {
                    bad(
                        key,
                        format!(
                            "needs `tenant` to name one organization (its id or domain): Microsoft Graph has no groups to read for tenant `{}`",
                            self.tenant()
                        ),
                    );
                }
            }
        }
        if self.use_groups_as_whitelist && self.groups.is_empty() {
            bad(
                "useGroupsAsWhitelist",
                "needs `groups`: it keeps only the listed groups in the token".into(),
            );
        }
        for (i, group) in self.groups.iter().enumerate() {
            if group.is_empty() {
                bad(
                    &format!("groups[{i}]"),
                    "a group is a non-empty name".into(),
                );
            }
        }
        for (key, value) in [
            ("promptType", &self.prompt_type),
            ("domainHint", &self.domain_hint),
        ] {
            if value.chars().any(char::is_control) {
                bad(key, "must not contain control characters".into());
            }
        }
        for (i, scope) in self.scopes.iter().enumerate() {
            if scope.is_empty() || scope.contains(char::is_whitespace) {
                bad(
                    &format!("scopes[{i}]"),
                    format!("`{scope}` is not a scope (one word, no spaces)"),
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> MicrosoftConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn dex_keys_parse_and_unknown_ones_are_refused() {
        let c = parse(serde_json::json!({
            "clientID": "a", "clientSecret": "s", "redirectURI": "https://l.example/callback",
            "tenant": "3f1c-22", "onlySecurityGroups": true, "groups": ["ops"],
            "groupNameFormat": "id", "useGroupsAsWhitelist": true, "emailToLowercase": true,
            "apiURL": "https://login.microsoftonline.us", "graphURL": "https://graph.microsoft.us",
            "promptType": "consent", "domainHint": "example.com", "scopes": ["user.read"]
        }));
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.group_name_format(), Some(GroupNameFormat::Id));
        let err = serde_json::from_value::<MicrosoftConfig>(serde_json::json!({"tenantID": "x"}))
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown field `tenantID`"),
            "{err}"
        );
    }

    #[test]
    fn group_settings_need_a_single_tenant() {
        let c = parse(serde_json::json!({
            "clientID": "a", "clientSecret": "s", "groups": ["ops"], "groupNameFormat": "name"
        }));
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(keys, ["groups", "groupNameFormat"]);
    }

    #[test]
    fn problems_name_their_key() {
        let c = parse(serde_json::json!({
            "tenant": "a/b", "groupNameFormat": "mail", "graphURL": "graph", "scopes": ["a b"],
            "useGroupsAsWhitelist": true
        }));
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(
            keys,
            [
                "clientID",
                "clientSecret",
                "graphURL",
                "tenant",
                "groupNameFormat",
                "useGroupsAsWhitelist",
                "scopes[0]"
            ]
        );
        assert!(
            !format!("{:?}", parse(serde_json::json!({"clientSecret": "SECRET"})))
                .contains("SECRET")
        );
    }
}
