//! The `config` mapping of a `type: google` connector, with Dex's key names, and the checks
//! `lanyard check-config` and startup run on it.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::upstream::check_client_settings;
use crate::ConfigIssue;

/// Google's OpenID Connect issuer, as Dex fixes it.
pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
/// The root of Google's Admin SDK Directory API.
pub const GOOGLE_DIRECTORY_URL: &str = "https://admin.googleapis.com";
/// `domainToAdminEmail`'s key for every other domain.
pub const ANY_DOMAIN: &str = "*";

/// Dex's Google connector settings, plus lanyard's `issuer`, `directoryURL` and `rootCAs`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoogleConfig {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "clientSecret")]
    pub client_secret: String,
    /// Must be lanyard's own `/callback` when given; empty: that URL.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    /// Scopes besides `openid`; empty: `profile email`.
    pub scopes: Vec<String>,
    /// Google Workspace domains whose users may sign in (the ID token's `hd` claim).
    #[serde(rename = "hostedDomains")]
    pub hosted_domains: Vec<String>,
    /// Groups (by email address) a user must be in (one of) to sign in.
    pub groups: Vec<String>,
    /// The JSON key file of the service account that reads groups.
    #[serde(rename = "serviceAccountFilePath")]
    pub service_account_file_path: String,
    /// Dex's deprecated form of `domainToAdminEmail: {"*": ...}`.
    #[serde(rename = "adminEmail")]
    pub admin_email: String,
    /// For each user domain (or `*`), the Workspace administrator the service account acts as.
    #[serde(rename = "domainToAdminEmail")]
    pub domain_to_admin_email: BTreeMap<String, String>,
    #[serde(rename = "fetchTransitiveGroupMembership")]
    pub fetch_transitive_group_membership: bool,
    /// The `prompt` sent with offline requests; absent: `consent`, as in Dex.
    #[serde(rename = "promptType")]
    pub prompt_type: Option<String>,
    // lanyard-only: Dex hard-codes Google's endpoints. These exist so that a deployment behind
    // an egress proxy with its own CA, and lanyard's own tests, can reach a stand-in.
    /// The OpenID Connect issuer; empty: `https://accounts.google.com`.
    pub issuer: String,
    /// The Directory API root; empty: `https://admin.googleapis.com`.
    #[serde(rename = "directoryURL")]
    pub directory_url: String,
    /// Extra CAs for Google's endpoints: a file path, base64 of PEM, or PEM.
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
}

impl fmt::Debug for GoogleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("hosted_domains", &self.hosted_domains)
            .field("groups", &self.groups)
            .field("service_account_file_path", &self.service_account_file_path)
            .field("domain_to_admin_email", &self.admin_emails())
            .finish_non_exhaustive()
    }
}

impl GoogleConfig {
    pub fn issuer(&self) -> &str {
        if self.issuer.is_empty() {
            GOOGLE_ISSUER
        } else {
            &self.issuer
        }
    }

    pub fn directory_url(&self) -> &str {
        if self.directory_url.is_empty() {
            GOOGLE_DIRECTORY_URL
        } else {
            self.directory_url.trim_end_matches('/')
        }
    }

    /// `domainToAdminEmail` with the deprecated `adminEmail` as its `*` entry.
    pub fn admin_emails(&self) -> BTreeMap<String, String> {
        let mut out = self.domain_to_admin_email.clone();
        if !self.admin_email.is_empty() {
            out.entry(ANY_DOMAIN.to_string())
                .or_insert_with(|| self.admin_email.clone());
        }
        out
    }

    /// Whether groups are read from the Directory API.
    pub fn reads_groups(&self) -> bool {
        !self.admin_emails().is_empty()
    }

    /// Everything wrong with the settings, each under its key. Files are read at startup.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = check_client_settings(
            "OAuth client",
            (&self.client_id, &self.client_secret),
            &self.redirect_uri,
            &[
                ("issuer", &self.issuer),
                ("directoryURL", &self.directory_url),
            ],
            &self.root_cas,
        );
        let mut bad = |key: &str, msg: String| out.push(ConfigIssue::error(key, msg));
        for (i, domain) in self.hosted_domains.iter().enumerate() {
            if domain.is_empty() || domain.contains(['@', '/', ' ']) {
                bad(
                    &format!("hostedDomains[{i}]"),
                    format!("`{domain}` is not a domain name"),
                );
            }
        }
        if !self.admin_email.is_empty() && self.domain_to_admin_email.contains_key(ANY_DOMAIN) {
            bad(
                "adminEmail",
                "set together with `domainToAdminEmail.*`; keep only `domainToAdminEmail` (adminEmail is its deprecated `*` entry)".into(),
            );
        }
        for (domain, email) in &self.domain_to_admin_email {
            if !email.contains('@') {
                bad(
                    &format!("domainToAdminEmail.{domain}"),
                    format!("`{email}` is not an email address"),
                );
            }
        }
        let reads_groups = self.reads_groups();
        if !self.service_account_file_path.is_empty() && !reads_groups {
            bad(
                "serviceAccountFilePath",
                "needs `domainToAdminEmail`: the service account reads groups as a Workspace administrator".into(),
            );
        }
        if reads_groups && self.service_account_file_path.is_empty() {
            let key = if self.domain_to_admin_email.is_empty() {
                "adminEmail"
            } else {
                "domainToAdminEmail"
            };
            bad(
                key,
                "needs `serviceAccountFilePath`: lanyard reads groups with a service account key file (it does not use Google's application default credentials)".into(),
            );
        }
        for (key, set) in [
            ("groups", !self.groups.is_empty()),
            (
                "fetchTransitiveGroupMembership",
                self.fetch_transitive_group_membership,
            ),
        ] {
            if set && !reads_groups {
                bad(
                    key,
                    "needs `serviceAccountFilePath` and `domainToAdminEmail`: groups come from the Directory API".into(),
                );
            }
        }
        if let Some(prompt) = &self.prompt_type {
            if prompt.chars().any(char::is_control) {
                bad("promptType", "must not contain control characters".into());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> GoogleConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn dex_keys_parse_and_the_deprecated_admin_email_is_the_wildcard() {
        let c = parse(serde_json::json!({
            "clientID": "a", "clientSecret": "s", "redirectURI": "https://l.example/callback",
            "scopes": ["profile", "email"], "hostedDomains": ["example.com"],
            "groups": ["ops@example.com"], "serviceAccountFilePath": "/etc/sa.json",
            "adminEmail": "admin@example.com", "domainToAdminEmail": {"example.org": "a@example.org"},
            "fetchTransitiveGroupMembership": true, "promptType": ""
        }));
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.admin_emails()["*"], "admin@example.com");
        assert_eq!(c.issuer(), GOOGLE_ISSUER);
        assert!(
            serde_json::from_value::<GoogleConfig>(serde_json::json!({"hostedDomain": "x"}))
                .unwrap_err()
                .to_string()
                .contains("unknown field `hostedDomain`")
        );
    }

    #[test]
    fn group_settings_without_a_directory_are_refused() {
        let c = parse(serde_json::json!({
            "clientID": "a", "clientSecret": "s", "groups": ["ops@example.com"],
            "fetchTransitiveGroupMembership": true, "serviceAccountFilePath": "/sa.json",
            "hostedDomains": ["a@b"]
        }));
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(
            keys,
            [
                "hostedDomains[0]",
                "serviceAccountFilePath",
                "groups",
                "fetchTransitiveGroupMembership"
            ]
        );
        let c = parse(serde_json::json!({
            "clientID": "a", "clientSecret": "s", "domainToAdminEmail": {"*": "admin"}
        }));
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(keys, ["domainToAdminEmail.*", "domainToAdminEmail"]);
    }
}
