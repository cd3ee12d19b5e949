//! The LDAP connector (Dex's `ldap`): finds the user with a search as a service account,
//! checks the password by binding as the user's entry, and reads groups with further
//! searches, following nested groups when configured.

mod config;
pub mod dn;
pub mod escape;
mod pool;
mod tls;

use std::collections::HashSet;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ldap3::SearchEntry;
use serde::{Deserialize, Serialize};

pub use config::{GroupSearch, LdapConfig, UserMatcher, UserSearch, UsernameAttrs};
pub use dn::{Dn, DnError};
pub use escape::{escape_dn_value, escape_filter_value};
pub use pool::LdapLimits;

use config::Settings;
use pool::{describe, Conn, Pool, PoolOptions};

use crate::{
    ConnectorError, Identity, PasswordConnector, PendingPasswordLogin, RefreshConnector, Scopes,
};

/// LDAP result code `noSuchObject`: the search base does not exist.
const NO_SUCH_OBJECT: u32 = 32;
/// LDAP result code `sizeLimitExceeded`.
const SIZE_LIMIT_EXCEEDED: u32 = 4;

pub struct LdapConnector {
    config: LdapConfig,
    settings: Settings,
    prompt: String,
    pool: Pool,
}

/// What a refresh needs to find the same entry again.
#[derive(Serialize, Deserialize)]
struct RefreshData {
    /// The username as typed at login.
    username: String,
    /// The entry it named then.
    dn: String,
}

enum UserLookup {
    NotFound,
    Found(Box<SearchEntry>),
}

impl LdapConnector {
    pub fn new(config: LdapConfig) -> Result<Self, ConnectorError> {
        Self::with_limits(config, LdapLimits::default())
    }

    /// Reads the TLS files and prepares the pool; nothing is sent to the server yet.
    pub fn with_limits(config: LdapConfig, limits: LdapLimits) -> Result<Self, ConnectorError> {
        let settings = config.settings().map_err(|issues| {
            ConnectorError::Config(
                issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let tls = tls::client_config(&config, &settings)?;
        let scheme = if config.insecure_no_ssl || config.start_tls {
            "ldap"
        } else {
            "ldaps"
        };
        let host = if settings.address.host.contains(':') {
            format!("[{}]", settings.address.host)
        } else {
            settings.address.host.clone()
        };
        let pool = Pool::new(PoolOptions {
            url: format!("{scheme}://{host}:{}", settings.address.port),
            tls,
            start_tls: config.start_tls && !config.insecure_no_ssl,
            skip_verify: config.insecure_skip_verify,
            service: (!config.bind_dn.is_empty())
                .then(|| (config.bind_dn.clone(), config.bind_pw.clone())),
            limits,
        });
        let prompt = if config.username_prompt.is_empty() {
            "Username".to_string()
        } else {
            config.username_prompt.clone()
        };
        Ok(Self {
            config,
            settings,
            prompt,
            pool,
        })
    }

    /// The attributes a user search asks for.
    fn user_attributes(&self) -> Vec<String> {
        let us = &self.config.user_search;
        let mut attrs: Vec<String> = Vec::new();
        let wanted = [&self.settings.id_attr, &self.settings.email_attr]
            .into_iter()
            .chain(us.username.0.iter())
            .chain(self.settings.matchers.iter().map(|m| &m.user_attr))
            .chain([&us.name_attr, &us.preferred_username_attr]);
        for a in wanted {
            if !a.is_empty()
                && !a.eq_ignore_ascii_case("dn")
                && !attrs.iter().any(|b| b.eq_ignore_ascii_case(a))
            {
                attrs.push(a.clone());
            }
        }
        attrs
    }

    fn user_filter(&self, username: &str) -> String {
        let value = escape_filter_value(username);
        let attrs = &self.config.user_search.username.0;
        let matches: String = attrs.iter().map(|a| format!("({a}={value})")).collect();
        let by_name = if attrs.len() == 1 {
            matches
        } else {
            format!("(|{matches})")
        };
        and_filter(&self.config.user_search.filter, &by_name)
    }

    async fn find_user(
        &self,
        conn: &mut Conn<'_>,
        username: &str,
    ) -> Result<UserLookup, ConnectorError> {
        let us = &self.config.user_search;
        let filter = self.user_filter(username);
        let (mut entries, result) = conn
            .search(
                &us.base_dn,
                self.settings.user_scope.to_ldap3(),
                &filter,
                &self.user_attributes(),
            )
            .await?;
        match result.rc {
            0 | SIZE_LIMIT_EXCEEDED => {}
            NO_SUCH_OBJECT => {
                return Err(ConnectorError::Config(format!(
                    "userSearch.baseDN {} does not exist on the server",
                    us.base_dn
                )))
            }
            _ => {
                return Err(ConnectorError::Unavailable(format!(
                    "user search failed: {}",
                    describe(&result)
                )))
            }
        }
        match entries.len() {
            0 => {
                tracing::debug!(%filter, "LDAP user search found no entry");
                Ok(UserLookup::NotFound)
            }
            1 if result.rc == 0 => Ok(UserLookup::Found(Box::new(entries.remove(0)))),
            n => {
                // Logging in as whichever came first could log in the wrong person.
                tracing::error!(%filter, entries = n, "LDAP user search matched more than one entry; refusing the login");
                Err(ConnectorError::Config(format!(
                    "the username matches {n} or more directory entries; userSearch must identify exactly one"
                )))
            }
        }
    }

    fn identity_from_entry(&self, entry: &SearchEntry) -> Result<Identity, ConnectorError> {
        let us = &self.config.user_search;
        let mut missing = Vec::new();
        let mut get = |attr: &str| -> String {
            match first_value(entry, attr) {
                Some(v) => v,
                None => {
                    missing.push(attr.to_string());
                    String::new()
                }
            }
        };
        let user_id = get(&self.settings.id_attr);
        let username = if us.name_attr.is_empty() {
            String::new()
        } else {
            get(&us.name_attr)
        };
        let preferred_username = if us.preferred_username_attr.is_empty() {
            String::new()
        } else {
            get(&us.preferred_username_attr)
        };
        let email = if us.email_suffix.is_empty() {
            get(&self.settings.email_attr)
        } else {
            format!("{username}@{}", us.email_suffix)
        };
        if !missing.is_empty() {
            return Err(ConnectorError::Config(format!(
                "LDAP entry {} lacks the attribute(s) {} that userSearch maps to claims",
                entry.dn,
                missing.join(", ")
            )));
        }
        Ok(Identity {
            user_id,
            username,
            preferred_username,
            email,
            // Like Dex: the directory is the authority on its users' addresses.
            email_verified: true,
            groups: Vec::new(),
            connector_data: None,
        })
    }

    /// Group names for `user`, nested groups included, each name once.
    async fn groups(
        &self,
        conn: &mut Conn<'_>,
        user: &SearchEntry,
    ) -> Result<Vec<String>, ConnectorError> {
        let gs = &self.config.group_search;
        if gs.base_dn.is_empty() {
            return Ok(Vec::new());
        }
        let max_depth = self.pool.limits().max_group_depth;
        let mut names: Vec<String> = Vec::new();
        let mut visited: HashSet<String> = HashSet::new();
        for matcher in &self.settings.matchers {
            let mut level = Vec::new();
            for value in all_values(user, &matcher.user_attr) {
                level.extend(self.query_groups(conn, &matcher.group_attr, &value).await?);
            }
            let recursive = !matcher.recursion_group_attr.is_empty();
            let mut depth = 0;
            while !level.is_empty() {
                let mut parents = Vec::new();
                for group in level {
                    // Keyed by the parsed DN, so a cycle ends however its members are spelled.
                    let key = Dn::parse(&group.dn)
                        .map(|d| d.to_string())
                        .unwrap_or_else(|_| group.dn.clone());
                    if !visited.insert(key) {
                        continue;
                    }
                    let name = first_value(&group, &gs.name_attr).ok_or_else(|| {
                        ConnectorError::Config(format!(
                            "LDAP group {} has no {} (groupSearch.nameAttr)",
                            group.dn, gs.name_attr
                        ))
                    })?;
                    if !names.contains(&name) {
                        names.push(name);
                    }
                    if recursive {
                        let found = self
                            .query_groups(conn, &matcher.recursion_group_attr, &group.dn)
                            .await?;
                        if depth < max_depth {
                            parents.extend(found);
                        } else if !found.is_empty() {
                            tracing::warn!(group = %group.dn, max_depth, "nested LDAP groups go deeper than the limit; parents beyond it are left out");
                        }
                    }
                }
                depth += 1;
                level = parents;
            }
        }
        Ok(names)
    }

    async fn query_groups(
        &self,
        conn: &mut Conn<'_>,
        attr: &str,
        value: &str,
    ) -> Result<Vec<SearchEntry>, ConnectorError> {
        let gs = &self.config.group_search;
        let filter = and_filter(
            &gs.filter,
            &format!("({attr}={})", escape_filter_value(value)),
        );
        let (entries, result) = conn
            .search(
                &gs.base_dn,
                self.settings.group_scope.to_ldap3(),
                &filter,
                std::slice::from_ref(&gs.name_attr),
            )
            .await?;
        match result.rc {
            0 => Ok(entries),
            NO_SUCH_OBJECT => {
                tracing::warn!(base = %gs.base_dn, "groupSearch.baseDN does not exist; no groups");
                Ok(Vec::new())
            }
            SIZE_LIMIT_EXCEEDED => {
                tracing::warn!(%filter, "LDAP group search hit the server's size limit; some groups are left out");
                Ok(entries)
            }
            _ => Err(ConnectorError::Unavailable(format!(
                "group search failed: {}",
                describe(&result)
            ))),
        }
    }
}

/// `username` as an LDAP server compares it under a case-ignoring matching rule (RFC 4518
/// string preparation): control characters and every kind of space (NBSP, tab) are spaces,
/// invisible format characters are dropped, NFKC, case folded, and spaces insignificant, so
/// surrounding ones vanish and inner runs count as one.
fn ldap_match_key(username: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mapped: String = username
        .chars()
        .filter_map(|c| match c {
            // RFC 4518 §2.2: mapped to nothing.
            '\u{00AD}'
            | '\u{034F}'
            | '\u{1806}'
            | '\u{180B}'..='\u{180D}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}' => None,
            c if c.is_whitespace() || c.is_control() => Some(' '),
            c => Some(c),
        })
        .collect();
    let folded = mapped.nfkc().collect::<String>().to_lowercase();
    folded
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[async_trait]
impl PasswordConnector for LdapConnector {
    fn prompt(&self) -> &str {
        &self.prompt
    }

    /// Runs the user search (as the service account, no password involved) and keys the
    /// account on the entry's DN, so that every name the search resolves to the same entry
    /// (uid or either of two mail values) shares one budget.
    async fn begin_login<'a>(
        &'a self,
        username: &str,
    ) -> Result<Box<dyn PendingPasswordLogin + 'a>, ConnectorError> {
        let unknown = || {
            Box::new(PendingLdapLogin {
                connector: self,
                found: None,
                username: String::new(),
                account_key: format!("name:{}", ldap_match_key(username)),
            })
        };
        if username.is_empty() {
            return Ok(unknown());
        }
        let mut conn = self.pool.get().await?;
        let entry = match self.find_user(&mut conn, username).await? {
            UserLookup::NotFound => return Ok(unknown()),
            UserLookup::Found(entry) => entry,
        };
        // The normalised DN, so that a server spelling it differently from one search to the
        // next still keys one account.
        let dn = Dn::parse(&entry.dn).map_or_else(|_| entry.dn.to_lowercase(), |dn| dn.to_string());
        Ok(Box::new(PendingLdapLogin {
            connector: self,
            found: Some((conn, entry)),
            username: username.to_string(),
            account_key: format!("dn:{dn}"),
        }))
    }

    /// An empty password is refused before any connection is made (the two-step path refuses
    /// it before the bind).
    async fn login(
        &self,
        scopes: &Scopes,
        username: &str,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        if password.is_empty() {
            return Ok(None);
        }
        self.begin_login(username)
            .await?
            .check(scopes, password)
            .await
    }
}

/// An LDAP login between the user search and the bind; it keeps the connection the search ran on.
struct PendingLdapLogin<'a> {
    connector: &'a LdapConnector,
    found: Option<(Conn<'a>, Box<SearchEntry>)>,
    /// The name as typed, kept for refresh.
    username: String,
    account_key: String,
}

#[async_trait]
impl PendingPasswordLogin for PendingLdapLogin<'_> {
    fn account_key(&self) -> &str {
        &self.account_key
    }

    async fn check(
        self: Box<Self>,
        scopes: &Scopes,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        // Checked before the bind: an empty password would make the user bind an anonymous
        // bind, which many servers answer with success.
        let Some((mut conn, entry)) = self.found.filter(|_| !password.is_empty()) else {
            return Ok(None);
        };
        let connector = self.connector;
        if !conn.check_password(&entry.dn, password).await? {
            tracing::info!(dn = %entry.dn, "LDAP bind refused the password");
            return Ok(None);
        }
        let mut identity = connector.identity_from_entry(&entry)?;
        if scopes.groups {
            identity.groups = connector.groups(&mut conn, &entry).await?;
        }
        let data = RefreshData {
            username: self.username,
            dn: entry.dn.clone(),
        };
        identity.connector_data =
            Some(serde_json::to_vec(&data).map_err(|e| ConnectorError::Internal(e.to_string()))?);
        Ok(Some(identity))
    }
}

#[async_trait]
impl RefreshConnector for LdapConnector {
    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        let data: RefreshData = identity
            .connector_data
            .as_deref()
            .and_then(|d| serde_json::from_slice(d).ok())
            .ok_or_else(|| {
                ConnectorError::SessionEnded("the session has no LDAP entry to re-check".into())
            })?;
        let mut conn = self.pool.get().await?;
        let entry = match self.find_user(&mut conn, &data.username).await? {
            UserLookup::NotFound => {
                return Err(ConnectorError::SessionEnded(format!(
                    "LDAP entry {} is gone or no longer matches userSearch",
                    data.dn
                )))
            }
            UserLookup::Found(entry) => entry,
        };
        if !Dn::same_entry(&entry.dn, &data.dn) {
            return Err(ConnectorError::SessionEnded(format!(
                "the username now names {} instead of {}",
                entry.dn, data.dn
            )));
        }
        let mut fresh = self.identity_from_entry(&entry)?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::SessionEnded(format!(
                "LDAP entry {} has a different {} now",
                entry.dn, self.settings.id_attr
            )));
        }
        if scopes.groups {
            fresh.groups = self.groups(&mut conn, &entry).await?;
        }
        fresh.connector_data = identity.connector_data.clone();
        Ok(fresh)
    }
}

/// `(&extra own)`, or `own` alone when there is no extra filter.
fn and_filter(extra: &str, own: &str) -> String {
    if extra.is_empty() {
        own.to_string()
    } else {
        format!("(&{extra}{own})")
    }
}

/// Every value of `attr` (matched case-insensitively); `DN` means the entry's DN when the
/// entry has no attribute of that name, as in Dex. Values that are not UTF-8 (binary
/// attributes such as objectGUID) come as standard base64.
fn all_values(entry: &SearchEntry, attr: &str) -> Vec<String> {
    if let Some((_, values)) = entry
        .attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attr))
    {
        return values.clone();
    }
    if let Some((_, values)) = entry
        .bin_attrs
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(attr))
    {
        return values.iter().map(|v| STANDARD.encode(v)).collect();
    }
    if attr.eq_ignore_ascii_case("dn") {
        return vec![entry.dn.clone()];
    }
    Vec::new()
}

fn first_value(entry: &SearchEntry, attr: &str) -> Option<String> {
    all_values(entry, attr)
        .into_iter()
        .next()
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn connector(extra: serde_json::Value) -> LdapConnector {
        let mut config = serde_json::json!({
            "host": "127.0.0.1:1",
            "insecureNoSSL": true,
            "bindDN": "cn=svc,dc=x",
            "bindPW": "pw",
            "userSearch": {"baseDN": "ou=people,dc=x", "username": "uid", "nameAttr": "cn"},
        });
        if let (Some(base), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        LdapConnector::new(LdapConfig::from_json(&config).unwrap()).unwrap()
    }

    fn entry(dn: &str, attrs: &[(&str, &[&str])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
            bin_attrs: HashMap::new(),
        }
    }

    #[test]
    fn user_filter_escapes_the_username_and_ands_the_configured_filter() {
        let c = connector(serde_json::json!({}));
        assert_eq!(c.user_filter("*)(uid=*"), r"(uid=\2a\29\28uid=\2a)");
        let c = connector(serde_json::json!({
            "userSearch": {"baseDN": "ou=people,dc=x", "username": ["uid", "mail"],
                           "filter": "(objectClass=person)"}
        }));
        assert_eq!(
            c.user_filter("admin)(|(password=*"),
            r"(&(objectClass=person)(|(uid=admin\29\28|\28password=\2a)(mail=admin\29\28|\28password=\2a)))"
        );
    }

    #[test]
    fn identity_maps_attributes_like_dex() {
        let c = connector(serde_json::json!({
            "userSearch": {"baseDN": "ou=people,dc=x", "username": "uid", "idAttr": "DN",
                           "nameAttr": "cn", "preferredUsernameAttr": "uid"}
        }));
        let e = entry(
            "uid=jane,ou=people,dc=x",
            &[
                ("CN", &["Jane Doe"]),
                ("uid", &["jane"]),
                ("mail", &["jane@x", "j@x"]),
            ],
        );
        let id = c.identity_from_entry(&e).unwrap();
        assert_eq!(id.user_id, "uid=jane,ou=people,dc=x", "DN as the id");
        assert_eq!(
            id.username, "Jane Doe",
            "attribute names match case-insensitively"
        );
        assert_eq!(id.preferred_username, "jane");
        assert_eq!(id.email, "jane@x", "the first of several values");
        assert!(id.email_verified);

        let c = connector(serde_json::json!({
            "userSearch": {"baseDN": "ou=people,dc=x", "username": "uid", "nameAttr": "uid",
                           "emailSuffix": "corp.example"}
        }));
        let e = entry("uid=jane,ou=people,dc=x", &[("uid", &["jane"])]);
        assert_eq!(
            c.identity_from_entry(&e).unwrap().email,
            "jane@corp.example"
        );
    }

    #[test]
    fn missing_mapped_attributes_fail_the_login() {
        let c = connector(serde_json::json!({}));
        let e = entry("uid=jane,ou=people,dc=x", &[("uid", &["jane"])]);
        let err = c.identity_from_entry(&e).unwrap_err().to_string();
        assert!(err.contains("cn, mail"), "{err}");
    }

    #[tokio::test]
    async fn empty_password_is_refused_without_contacting_the_server() {
        // Port 1 on loopback refuses connections: any network attempt would be an error.
        let c = connector(serde_json::json!({}));
        let scopes = Scopes::default();
        assert!(c.login(&scopes, "jane", "").await.unwrap().is_none());
        assert!(c.login(&scopes, "", "pw").await.unwrap().is_none());
        let err = c.login(&scopes, "jane", "pw").await.unwrap_err();
        assert!(matches!(err, ConnectorError::Unavailable(_)), "{err:?}");
    }

    #[test]
    fn match_key_ignores_what_ldap_matching_ignores() {
        for typed in [
            "jane",
            " jane",
            "jane\t",
            "\u{00A0}JANE\u{00A0}",
            "ja\u{200B}ne",
            "\u{FF4A}\u{FF41}\u{FF4E}\u{FF45}",
        ] {
            assert_eq!(ldap_match_key(typed), "jane", "{typed:?}");
        }
        assert_eq!(ldap_match_key("  Jane   Doe "), "jane doe");
        assert_ne!(ldap_match_key("jane"), ldap_match_key("jane2"));
    }

    #[test]
    fn prompt_defaults_to_username() {
        assert_eq!(connector(serde_json::json!({})).prompt(), "Username");
        assert_eq!(
            connector(serde_json::json!({"usernamePrompt": "Corp ID"})).prompt(),
            "Corp ID"
        );
    }
}
