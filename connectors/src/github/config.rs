//! The `config` mapping of a `type: github` connector, with Dex's key names, and the checks
//! `lanyard check-config` and startup run on it.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::ConfigIssue;

/// Dex's GitHub connector settings. Every key is optional to serde so that a missing one is
/// reported by [`GithubConfig::check`] with its name instead of failing the whole mapping.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubConfig {
    #[serde(rename = "clientID")]
    pub client_id: Option<String>,
    #[serde(rename = "clientSecret")]
    pub client_secret: Option<String>,
    /// Must be lanyard's own `/callback` URL when given (GitHub checks it against the OAuth app).
    #[serde(rename = "redirectURI")]
    pub redirect_uri: Option<String>,
    /// Dex's legacy single organization; `orgs` replaces it.
    pub org: Option<String>,
    pub orgs: Option<Vec<GithubOrg>>,
    #[serde(rename = "loadAllGroups")]
    pub load_all_groups: Option<bool>,
    /// `name` (default), `slug` or `both`.
    #[serde(rename = "teamNameField")]
    pub team_name_field: Option<String>,
    #[serde(rename = "useLoginAsID")]
    pub use_login_as_id: Option<bool>,
    /// A GitHub Enterprise host (`github.example.com`, optionally with a port).
    #[serde(rename = "hostName")]
    pub host_name: Option<String>,
    /// A PEM file of CA certificates trusted for `hostName`, in addition to the public roots.
    #[serde(rename = "rootCA")]
    pub root_ca: Option<String>,
    #[serde(rename = "preferredEmailDomain")]
    pub preferred_email_domain: Option<String>,
}

/// One organization a user must belong to, optionally narrowed to some of its teams.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubOrg {
    pub name: Option<String>,
    pub teams: Option<Vec<String>>,
}

impl fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubConfig")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_uri", &self.redirect_uri)
            .field("org", &self.org)
            .field("orgs", &self.orgs)
            .field("load_all_groups", &self.load_all_groups)
            .field("team_name_field", &self.team_name_field)
            .field("use_login_as_id", &self.use_login_as_id)
            .field("host_name", &self.host_name)
            .field("root_ca", &self.root_ca)
            .field("preferred_email_domain", &self.preferred_email_domain)
            .finish()
    }
}

/// Which of a team's names become group names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeamNameField {
    #[default]
    Name,
    Slug,
    Both,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

impl GithubConfig {
    pub fn client_id(&self) -> &str {
        given(&self.client_id).unwrap_or_default()
    }

    pub fn client_secret(&self) -> &str {
        given(&self.client_secret).unwrap_or_default()
    }

    pub fn redirect_uri(&self) -> Option<&str> {
        given(&self.redirect_uri)
    }

    pub fn legacy_org(&self) -> Option<&str> {
        given(&self.org)
    }

    pub fn orgs(&self) -> &[GithubOrg] {
        self.orgs.as_deref().unwrap_or_default()
    }

    pub fn host_name(&self) -> Option<&str> {
        given(&self.host_name)
    }

    pub fn root_ca(&self) -> Option<&str> {
        given(&self.root_ca)
    }

    pub fn preferred_email_domain(&self) -> Option<&str> {
        given(&self.preferred_email_domain)
    }

    pub fn load_all_groups(&self) -> bool {
        self.load_all_groups.unwrap_or(false)
    }

    pub fn use_login_as_id(&self) -> bool {
        self.use_login_as_id.unwrap_or(false)
    }

    /// `None` when the value is not one Dex accepts (an empty value means the default).
    pub fn team_name_field(&self) -> Option<TeamNameField> {
        match self.team_name_field.as_deref().unwrap_or("") {
            "" | "name" => Some(TeamNameField::Name),
            "slug" => Some(TeamNameField::Slug),
            "both" => Some(TeamNameField::Both),
            _ => None,
        }
    }

    /// Everything wrong with the settings, each under the key it concerns. Files are not read
    /// here (the config may be checked on another machine); `rootCA` is read at startup.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if given(&self.client_id).is_none() {
            out.push(ConfigIssue::error(
                "clientID",
                "missing required key `clientID` (the GitHub OAuth app's client ID)",
            ));
        }
        if given(&self.client_secret).is_none() {
            out.push(ConfigIssue::error(
                "clientSecret",
                "missing required key `clientSecret` (the GitHub OAuth app's client secret)",
            ));
        }
        if let Some(uri) = self.redirect_uri() {
            let absolute = url::Url::parse(uri)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if absolute.is_none() {
                out.push(ConfigIssue::error(
                    "redirectURI",
                    format!("`{uri}` is not an absolute http(s) URL; it should be the issuer's URL followed by /callback"),
                ));
            }
        }
        self.check_orgs(&mut out);
        if self.team_name_field().is_none() {
            out.push(ConfigIssue::error(
                "teamNameField",
                format!(
                    "`{}` is not a team name field; use `name`, `slug` or `both`",
                    self.team_name_field.as_deref().unwrap_or_default()
                ),
            ));
        }
        if let Some(host) = self.host_name() {
            if !is_host_and_port(host) {
                out.push(ConfigIssue::error(
                    "hostName",
                    format!("`{host}` is not a host name: give the GitHub Enterprise host alone (with an optional :port), such as github.example.com, not a URL"),
                ));
            }
        }
        if self.root_ca().is_some() && self.host_name().is_none() {
            out.push(ConfigIssue::error(
                "rootCA",
                "needs `hostName`: a custom CA applies only to a GitHub Enterprise host",
            ));
        }
        if let Some(domain) = self.preferred_email_domain() {
            if domain.ends_with('*') {
                out.push(ConfigIssue::error(
                    "preferredEmailDomain",
                    format!("`{domain}` may not end with `*`; wildcards stand for whole labels before the last one, as in `*.example.com`"),
                ));
            } else if domain.contains('@') {
                out.push(ConfigIssue::error(
                    "preferredEmailDomain",
                    format!("`{domain}` is an email address; give only the domain"),
                ));
            }
        }
        out
    }

    fn check_orgs(&self, out: &mut Vec<ConfigIssue>) {
        let has_orgs = self.orgs.as_ref().is_some_and(|o| !o.is_empty());
        if let Some(org) = self.legacy_org() {
            if has_orgs {
                out.push(ConfigIssue::error(
                    "org",
                    "cannot be used together with `orgs`; list this organization under `orgs` instead",
                ));
            } else {
                out.push(ConfigIssue::warning(
                    "org",
                    format!("`org` is Dex's legacy setting; `orgs: [{{name: {org}}}]` replaces it (note that `orgs` prefixes team groups with the organization)"),
                ));
            }
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, org) in self.orgs().iter().enumerate() {
            let Some(name) = given(&org.name) else {
                out.push(ConfigIssue::error(
                    format!("orgs[{i}].name"),
                    "missing required key `name` (the organization's login)",
                ));
                continue;
            };
            if let Some(first) = seen.insert(name.to_ascii_lowercase(), i) {
                out.push(ConfigIssue::error(
                    format!("orgs[{i}].name"),
                    format!("organization `{name}` is listed twice (also orgs[{first}])"),
                ));
            }
            for (j, team) in org.teams.as_deref().unwrap_or_default().iter().enumerate() {
                if team.is_empty() {
                    out.push(ConfigIssue::error(
                        format!("orgs[{i}].teams[{j}]"),
                        "an empty team name matches no team",
                    ));
                }
            }
        }
        if self.load_all_groups() && (has_orgs || self.legacy_org().is_some()) {
            out.push(ConfigIssue::warning(
                "loadAllGroups",
                "has no effect when `orgs` or `org` is set: groups then come from the listed organizations only",
            ));
        }
    }
}

/// `host` or `host:port`, nothing else (no scheme, path, user or query).
fn is_host_and_port(value: &str) -> bool {
    if value.contains(['/', '?', '#', '@']) || value.chars().any(char::is_whitespace) {
        return false;
    }
    url::Url::parse(&format!("https://{value}/"))
        .is_ok_and(|u| u.host().is_some() && u.path() == "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> GithubConfig {
        serde_json::from_value(json).unwrap()
    }

    fn keys(issues: &[ConfigIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.path.as_str()).collect()
    }

    #[test]
    fn a_minimal_config_is_fine() {
        let c = parse(serde_json::json!({"clientID": "id", "clientSecret": "s"}));
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.team_name_field(), Some(TeamNameField::Name));
    }

    #[test]
    fn missing_credentials_are_named() {
        let issues = GithubConfig::default().validate();
        assert_eq!(keys(&issues), vec!["clientID", "clientSecret"]);
        assert!(issues.iter().all(|i| !i.warning));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_value::<GithubConfig>(
            serde_json::json!({"clientID": "a", "clientSecert": "b"}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("clientSecert"), "{err}");
        let err = serde_json::from_value::<GithubConfig>(
            serde_json::json!({"orgs": [{"name": "acme", "team": ["x"]}]}),
        )
        .unwrap_err();
        assert!(err.to_string().contains("team"), "{err}");
    }

    #[test]
    fn bad_values_are_reported_under_their_keys() {
        let c = parse(serde_json::json!({
            "clientID": "id", "clientSecret": "s",
            "org": "acme",
            "orgs": [{"name": "acme"}, {"teams": ["a"]}, {"name": "ACME", "teams": [""]}],
            "teamNameField": "login",
            "hostName": "https://github.example.com/",
            "preferredEmailDomain": "example.*",
            "redirectURI": "/callback",
        }));
        assert_eq!(
            keys(&c.validate()),
            vec![
                "redirectURI",
                "org",
                "orgs[1].name",
                "orgs[2].name",
                "orgs[2].teams[0]",
                "teamNameField",
                "hostName",
                "preferredEmailDomain"
            ]
        );
    }

    #[test]
    fn root_ca_needs_a_host_name_and_host_names_may_have_ports() {
        let c =
            parse(serde_json::json!({"clientID": "i", "clientSecret": "s", "rootCA": "/ca.pem"}));
        assert_eq!(keys(&c.validate()), vec!["rootCA"]);
        let c = parse(serde_json::json!({
            "clientID": "i", "clientSecret": "s", "rootCA": "/ca.pem", "hostName": "127.0.0.1:8443"
        }));
        assert!(c.validate().is_empty(), "{:?}", c.validate());
    }

    #[test]
    fn legacy_org_and_ignored_load_all_groups_are_warnings() {
        let c = parse(serde_json::json!({
            "clientID": "i", "clientSecret": "s", "org": "acme", "loadAllGroups": true
        }));
        let issues = c.validate();
        assert_eq!(keys(&issues), vec!["org", "loadAllGroups"]);
        assert!(issues.iter().all(|i| i.warning));
    }

    #[test]
    fn debug_never_prints_the_client_secret() {
        let c = parse(serde_json::json!({"clientID": "i", "clientSecret": "TOP-SECRET"}));
        let printed = format!("{c:?}");
        assert!(!printed.contains("TOP-SECRET"), "{printed}");
    }
}
