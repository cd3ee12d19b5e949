//! The `config` mapping of a `type: ldap` connector, with Dex's keys and meanings.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use super::dn::Dn;
use crate::ConfigIssue;

/// Dex's `ldap` connector config. Unknown keys are errors.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LdapConfig {
    /// `host` or `host:port`; without a port, 389 for `insecureNoSSL`/`startTLS`, else 636.
    pub host: String,
    /// Plain LDAP, no TLS at all.
    #[serde(rename = "insecureNoSSL")]
    pub insecure_no_ssl: bool,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// Connect in plain text, then upgrade with the StartTLS operation.
    #[serde(rename = "startTLS")]
    pub start_tls: bool,
    /// Path to PEM CA certificates to trust instead of the system's.
    #[serde(rename = "rootCA")]
    pub root_ca: String,
    /// Base64 of PEM CA certificates (takes precedence over `rootCA`, as in Dex).
    #[serde(rename = "rootCAData")]
    pub root_ca_data: String,
    /// Path to a PEM client certificate, for servers that ask for one.
    pub client_cert: String,
    /// Path to the PEM private key of `clientCert`.
    pub client_key: String,
    /// Service account the searches run as; empty (with `bindPW`) for anonymous searches.
    #[serde(rename = "bindDN")]
    pub bind_dn: String,
    #[serde(rename = "bindPW")]
    pub bind_pw: String,
    /// Label of the login form's username field; "Username" when empty.
    pub username_prompt: String,
    pub user_search: UserSearch,
    pub group_search: GroupSearch,
}

impl fmt::Debug for LdapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapConfig")
            .field("host", &self.host)
            .field("insecure_no_ssl", &self.insecure_no_ssl)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("start_tls", &self.start_tls)
            .field("root_ca", &self.root_ca)
            .field(
                "root_ca_data",
                &format_args!("<{} chars>", self.root_ca_data.len()),
            )
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("bind_dn", &self.bind_dn)
            .field("bind_pw", &"<redacted>")
            .field("username_prompt", &self.username_prompt)
            .field("user_search", &self.user_search)
            .field("group_search", &self.group_search)
            .finish()
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UserSearch {
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    /// Extra filter ANDed with the username match, e.g. `(objectClass=person)`.
    pub filter: String,
    /// Attribute(s) the typed username must equal; several are ORed.
    pub username: UsernameAttrs,
    /// `sub` (default) or `one`.
    pub scope: String,
    /// Becomes the user id (and so the token's `sub`); `uid` when empty. `DN` means the DN.
    pub id_attr: String,
    /// `mail` when empty.
    pub email_attr: String,
    pub name_attr: String,
    pub preferred_username_attr: String,
    /// When set, the email is `<nameAttr value>@<emailSuffix>`.
    pub email_suffix: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GroupSearch {
    /// Empty: no group lookups.
    #[serde(rename = "baseDN")]
    pub base_dn: String,
    pub filter: String,
    pub scope: String,
    pub user_matchers: Vec<UserMatcher>,
    /// Becomes the group's name in the `groups` claim.
    pub name_attr: String,
    /// Dex's older single-matcher keys, used when `userMatchers` is empty.
    pub user_attr: String,
    pub group_attr: String,
    pub recursion_group_attr: String,
}

/// A group contains the user when the group's `groupAttr` equals the user's `userAttr`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UserMatcher {
    pub user_attr: String,
    pub group_attr: String,
    /// Groups whose `recursionGroupAttr` holds this group's DN are parents, followed too.
    pub recursion_group_attr: String,
}

/// `userSearch.username`: one attribute name or a list of them (Dex takes both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsernameAttrs(pub Vec<String>);

impl<'de> Deserialize<'de> for UsernameAttrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UsernameAttrs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an attribute name or a list of attribute names")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<UsernameAttrs, E> {
                Ok(UsernameAttrs(if s.is_empty() {
                    Vec::new()
                } else {
                    vec![s.to_string()]
                }))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UsernameAttrs, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(UsernameAttrs(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// Search scope: Dex allows `sub` (the default) and `one`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Sub,
    One,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "" | "sub" => Some(Scope::Sub),
            "one" => Some(Scope::One),
            _ => None,
        }
    }

    pub(crate) fn to_ldap3(self) -> ldap3::Scope {
        match self {
            Scope::Sub => ldap3::Scope::Subtree,
            Scope::One => ldap3::Scope::OneLevel,
        }
    }
}

/// Where to connect: host name (or IP) and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

/// The checked settings the connector runs with (defaults applied, legacy keys folded in).
#[derive(Clone, Debug)]
pub struct Settings {
    pub address: HostPort,
    pub user_scope: Scope,
    pub group_scope: Scope,
    pub id_attr: String,
    pub email_attr: String,
    pub matchers: Vec<UserMatcher>,
    pub root_ca_pem: Option<Vec<u8>>,
}

impl LdapConfig {
    /// Parses a connector's `config` (JSON, as the server keeps it) and checks it; every
    /// problem is reported with the key path it is at.
    pub fn from_json(value: &serde_json::Value) -> Result<LdapConfig, Vec<ConfigIssue>> {
        let config: LdapConfig = if value.is_null() {
            LdapConfig::default()
        } else {
            serde_path_to_error::deserialize(value).map_err(|e| {
                vec![ConfigIssue::error(
                    e.path().to_string(),
                    e.inner().to_string(),
                )]
            })?
        };
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(issues)
        }
    }

    /// Every semantic problem (missing keys, bad values, contradictions).
    pub fn validate(&self) -> Vec<ConfigIssue> {
        match self.settings() {
            Ok(_) => Vec::new(),
            Err(issues) => issues,
        }
    }

    /// The settings to run with, or every problem found.
    pub fn settings(&self) -> Result<Settings, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut issue =
            |path: &str, message: String| issues.push(ConfigIssue::error(path, message));

        if self.insecure_no_ssl && self.start_tls {
            issue(
                "startTLS",
                "contradicts insecureNoSSL: true (which would connect without TLS); remove one"
                    .into(),
            );
        }
        let default_port = if self.insecure_no_ssl || self.start_tls {
            389
        } else {
            636
        };
        let address = if self.host.is_empty() {
            issue(
                "host",
                "missing (the LDAP server, host or host:port)".into(),
            );
            None
        } else {
            match parse_host(&self.host, default_port) {
                Ok(a) => Some(a),
                Err(e) => {
                    issue("host", e);
                    None
                }
            }
        };

        let root_ca_pem = if self.root_ca_data.is_empty() {
            None
        } else {
            match STANDARD.decode(self.root_ca_data.trim()) {
                Ok(pem) => {
                    if super::tls::certificates_in(&pem).is_empty() {
                        issue(
                            "rootCAData",
                            "holds no PEM certificate (expected base64 of a PEM file)".into(),
                        );
                    }
                    Some(pem)
                }
                Err(_) => {
                    issue(
                        "rootCAData",
                        "is not valid base64 (expected base64 of a PEM file)".into(),
                    );
                    None
                }
            }
        };
        match (self.client_cert.is_empty(), self.client_key.is_empty()) {
            (false, true) => issue("clientKey", "missing (clientCert is set)".into()),
            (true, false) => issue("clientCert", "missing (clientKey is set)".into()),
            _ => {}
        }

        // An empty password makes a simple bind anonymous, which many servers report as a
        // success: a service account with an empty password would silently search anonymously.
        match (self.bind_dn.is_empty(), self.bind_pw.is_empty()) {
            (false, true) => issue(
                "bindPW",
                "missing (bindDN is set; leave both empty for anonymous searches)".into(),
            ),
            (true, false) => issue("bindDN", "missing (bindPW is set)".into()),
            (false, false) => check_dn(&mut issue, "bindDN", &self.bind_dn),
            (true, true) => {}
        }

        let us = &self.user_search;
        if us.base_dn.is_empty() {
            issue(
                "userSearch.baseDN",
                "missing (the DN under which users are searched)".into(),
            );
        } else {
            check_dn(&mut issue, "userSearch.baseDN", &us.base_dn);
        }
        check_filter(&mut issue, "userSearch.filter", &us.filter);
        if us.username.0.is_empty() {
            issue(
                "userSearch.username",
                "missing (the attribute, or list of attributes, the typed username must match)"
                    .into(),
            );
        }
        for (i, attr) in us.username.0.iter().enumerate() {
            let path = if us.username.0.len() == 1 {
                "userSearch.username".to_string()
            } else {
                format!("userSearch.username[{i}]")
            };
            check_attr(&mut issue, &path, attr);
        }
        let user_scope = scope(&mut issue, "userSearch.scope", &us.scope);
        let id_attr = or_default(&us.id_attr, "uid");
        let email_attr = or_default(&us.email_attr, "mail");
        check_attr(&mut issue, "userSearch.idAttr", &id_attr);
        check_attr(&mut issue, "userSearch.emailAttr", &email_attr);
        for (path, attr) in [
            ("userSearch.nameAttr", &us.name_attr),
            (
                "userSearch.preferredUsernameAttr",
                &us.preferred_username_attr,
            ),
        ] {
            if !attr.is_empty() {
                check_attr(&mut issue, path, attr);
            }
        }
        if us.email_suffix.starts_with('@') {
            issue(
                "userSearch.emailSuffix",
                "must not start with `@` (write example.com, not @example.com)".into(),
            );
        }

        let gs = &self.group_search;
        let group_scope = scope(&mut issue, "groupSearch.scope", &gs.scope);
        check_filter(&mut issue, "groupSearch.filter", &gs.filter);
        // Dex's rule: the list wins when its first entry names a user attribute.
        let use_list = gs
            .user_matchers
            .first()
            .is_some_and(|m| !m.user_attr.is_empty());
        let matchers: Vec<UserMatcher> = if use_list {
            gs.user_matchers.clone()
        } else if gs.user_attr.is_empty() && gs.group_attr.is_empty() {
            Vec::new()
        } else {
            vec![UserMatcher {
                user_attr: gs.user_attr.clone(),
                group_attr: gs.group_attr.clone(),
                recursion_group_attr: gs.recursion_group_attr.clone(),
            }]
        };
        if !gs.base_dn.is_empty() {
            check_dn(&mut issue, "groupSearch.baseDN", &gs.base_dn);
            if gs.name_attr.is_empty() {
                issue(
                    "groupSearch.nameAttr",
                    "missing (the group attribute that becomes the group's name, e.g. cn)".into(),
                );
            } else {
                check_attr(&mut issue, "groupSearch.nameAttr", &gs.name_attr);
            }
            if matchers.is_empty() {
                issue(
                    "groupSearch.userMatchers",
                    "missing (at least one {userAttr, groupAttr} pair that links users to groups)"
                        .into(),
                );
            }
            for (i, m) in matchers.iter().enumerate() {
                let base = if use_list {
                    format!("groupSearch.userMatchers[{i}]")
                } else {
                    "groupSearch".to_string()
                };
                for (key, attr) in [("userAttr", &m.user_attr), ("groupAttr", &m.group_attr)] {
                    let path = format!("{base}.{key}");
                    if attr.is_empty() {
                        issue(&path, "missing".into());
                    } else {
                        check_attr(&mut issue, &path, attr);
                    }
                }
                if !m.recursion_group_attr.is_empty() {
                    check_attr(
                        &mut issue,
                        &format!("{base}.recursionGroupAttr"),
                        &m.recursion_group_attr,
                    );
                }
            }
        }

        match (address, user_scope, group_scope) {
            (Some(address), Some(user_scope), Some(group_scope)) if issues.is_empty() => {
                Ok(Settings {
                    address,
                    user_scope,
                    group_scope,
                    id_attr,
                    email_attr,
                    matchers,
                    root_ca_pem,
                })
            }
            _ => Err(issues),
        }
    }
}

fn or_default(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value.to_string()
    }
}

fn scope(issue: &mut impl FnMut(&str, String), path: &str, value: &str) -> Option<Scope> {
    let parsed = Scope::parse(value);
    if parsed.is_none() {
        issue(path, format!("unknown scope `{value}`; use sub or one"));
    }
    parsed
}

fn check_dn(issue: &mut impl FnMut(&str, String), path: &str, value: &str) {
    if let Err(e) = Dn::parse(value) {
        issue(path, e.to_string());
    }
}

fn check_filter(issue: &mut impl FnMut(&str, String), path: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    // It is ANDed with lanyard's own assertion, so it must be one parenthesised filter.
    if !value.starts_with('(') || ldap3::parse_filter(value).is_err() {
        issue(
            path,
            format!("`{value}` is not an LDAP filter (expected e.g. (objectClass=person))"),
        );
    }
}

/// Attribute names are pasted into filters as they are, so only plain descriptions
/// (`mail`, `userPrincipalName`, `cn;lang-en`) and numeric OIDs are accepted.
fn check_attr(issue: &mut impl FnMut(&str, String), path: &str, value: &str) {
    if !is_attribute_description(value) {
        issue(path, format!("`{value}` is not an LDAP attribute name"));
    }
}

fn is_attribute_description(value: &str) -> bool {
    let mut parts = value.split(';');
    let Some(attr) = parts.next() else {
        return false;
    };
    let descr = attr.starts_with(|c: char| c.is_ascii_alphabetic())
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !attr.is_empty()
        && attr
            .split('.')
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    (descr || oid)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn parse_host(value: &str, default_port: u16) -> Result<HostPort, String> {
    if value.contains("://") {
        return Err(format!(
            "`{value}` must be host or host:port, without a scheme (TLS is chosen by insecureNoSSL and startTLS)"
        ));
    }
    let bad = || format!("`{value}` is not host or host:port");
    let port_of = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
    if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        host.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        let port = match after {
            "" => default_port,
            _ => port_of(after.strip_prefix(':').ok_or_else(bad)?)?,
        };
        return Ok(HostPort {
            host: host.to_string(),
            port,
        });
    }
    if value.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(HostPort {
            host: value.to_string(),
            port: default_port,
        });
    }
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, port_of(port)?),
        None => (value, default_port),
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid {
        return Err(bad());
    }
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal() -> serde_json::Value {
        json!({
            "host": "ldap.example.com",
            "bindDN": "cn=svc,dc=example,dc=com",
            "bindPW": "pw",
            "userSearch": {"baseDN": "ou=people,dc=example,dc=com", "username": "uid"},
        })
    }

    fn issues(value: serde_json::Value) -> Vec<String> {
        match LdapConfig::from_json(&value) {
            Ok(_) => Vec::new(),
            Err(issues) => issues.iter().map(ToString::to_string).collect(),
        }
    }

    fn with(
        mut base: serde_json::Value,
        path: &[&str],
        value: serde_json::Value,
    ) -> serde_json::Value {
        let mut at = &mut base;
        for key in &path[..path.len() - 1] {
            at = &mut at[*key];
        }
        at[path[path.len() - 1]] = value;
        base
    }

    #[test]
    fn minimal_config_gets_dex_defaults() {
        let c = LdapConfig::from_json(&minimal()).unwrap();
        let s = c.settings().unwrap();
        assert_eq!(
            s.address,
            HostPort {
                host: "ldap.example.com".into(),
                port: 636
            }
        );
        assert_eq!(s.id_attr, "uid");
        assert_eq!(s.email_attr, "mail");
        assert_eq!(s.user_scope, Scope::Sub);
        assert!(s.matchers.is_empty());
        assert_eq!(c.user_search.username.0, vec!["uid"]);
    }

    #[test]
    fn every_dex_key_is_accepted() {
        let full = json!({
            "host": "ldap.example.com:3269",
            "insecureNoSSL": false,
            "insecureSkipVerify": false,
            "startTLS": true,
            "rootCA": "/etc/ca.pem",
            "rootCAData": "",
            "clientCert": "/etc/c.pem",
            "clientKey": "/etc/k.pem",
            "bindDN": "cn=svc,dc=example,dc=com",
            "bindPW": "pw",
            "usernamePrompt": "Corp ID",
            "userSearch": {
                "baseDN": "ou=people,dc=example,dc=com",
                "filter": "(objectClass=person)",
                "username": ["uid", "mail"],
                "scope": "one",
                "idAttr": "DN",
                "emailAttr": "mail",
                "nameAttr": "cn",
                "preferredUsernameAttr": "uid",
                "emailSuffix": "example.com"
            },
            "groupSearch": {
                "baseDN": "ou=groups,dc=example,dc=com",
                "filter": "(objectClass=groupOfNames)",
                "scope": "sub",
                "userMatchers": [
                    {"userAttr": "DN", "groupAttr": "member", "recursionGroupAttr": "member"},
                    {"userAttr": "uid", "groupAttr": "memberUid"}
                ],
                "nameAttr": "cn"
            }
        });
        let c = LdapConfig::from_json(&full).unwrap();
        let s = c.settings().unwrap();
        assert_eq!(s.address.port, 3269);
        assert_eq!(s.user_scope, Scope::One);
        assert_eq!(s.matchers.len(), 2);
        assert_eq!(s.matchers[0].recursion_group_attr, "member");
        assert_eq!(c.user_search.username.0, vec!["uid", "mail"]);
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        assert_eq!(
            issues(with(minimal(), &["userSearch", "baseDn"], json!("x")))[0]
                .split(':')
                .next(),
            Some("userSearch.baseDn")
        );
        let e = issues(with(minimal(), &["kerberos"], json!({})));
        assert!(e[0].starts_with("kerberos: unknown field"), "{e:?}");
    }

    #[test]
    fn missing_required_keys_name_their_paths() {
        let e = issues(json!({}));
        assert!(e.iter().any(|e| e.starts_with("host: missing")), "{e:?}");
        assert!(
            e.iter()
                .any(|e| e.starts_with("userSearch.baseDN: missing")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|e| e.starts_with("userSearch.username: missing")),
            "{e:?}"
        );
    }

    #[test]
    fn bad_values_are_reported_at_their_keys() {
        let cases = [
            (with(minimal(), &["host"], json!("ldaps://x")), "host: "),
            (with(minimal(), &["host"], json!("x:99999")), "host: "),
            (with(minimal(), &["bindPW"], json!("")), "bindPW: missing"),
            (
                with(minimal(), &["userSearch", "scope"], json!("base")),
                "userSearch.scope: unknown scope `base`",
            ),
            (
                with(
                    minimal(),
                    &["userSearch", "filter"],
                    json!("objectClass=person"),
                ),
                "userSearch.filter: ",
            ),
            (
                with(
                    minimal(),
                    &["userSearch", "baseDN"],
                    json!("ou=people,,dc=x"),
                ),
                "userSearch.baseDN: not a valid DN",
            ),
            (
                with(
                    minimal(),
                    &["userSearch", "username"],
                    json!(["uid", "mail)(x"]),
                ),
                "userSearch.username[1]: ",
            ),
            (
                with(
                    minimal(),
                    &["userSearch", "emailSuffix"],
                    json!("@example.com"),
                ),
                "userSearch.emailSuffix: ",
            ),
            (
                with(minimal(), &["rootCAData"], json!("%%%")),
                "rootCAData: is not valid base64",
            ),
            (
                with(
                    minimal(),
                    &["rootCAData"],
                    json!(STANDARD.encode("no pem here")),
                ),
                "rootCAData: holds no PEM certificate",
            ),
            (
                with(minimal(), &["clientCert"], json!("/c.pem")),
                "clientKey: missing",
            ),
            (
                with(
                    with(minimal(), &["insecureNoSSL"], json!(true)),
                    &["startTLS"],
                    json!(true),
                ),
                "startTLS: contradicts",
            ),
            (
                with(minimal(), &["groupSearch"], json!({"baseDN": "ou=g,dc=x"})),
                "groupSearch.nameAttr: missing",
            ),
            (
                with(
                    minimal(),
                    &["groupSearch"],
                    json!({"baseDN": "ou=g,dc=x", "nameAttr": "cn"}),
                ),
                "groupSearch.userMatchers: missing",
            ),
            (
                with(
                    minimal(),
                    &["groupSearch"],
                    json!({"baseDN": "ou=g,dc=x", "nameAttr": "cn", "userMatchers": [{"userAttr": "DN"}]}),
                ),
                "groupSearch.userMatchers[0].groupAttr: missing",
            ),
            (
                with(minimal(), &["insecureNoSSL"], json!("yes")),
                "insecureNoSSL: invalid type",
            ),
        ];
        for (config, expected) in cases {
            let e = issues(config.clone());
            assert!(
                e.iter().any(|e| e.starts_with(expected)),
                "expected {expected:?} for {config}, got {e:?}"
            );
        }
    }

    #[test]
    fn legacy_group_keys_become_one_matcher() {
        let c = LdapConfig::from_json(&with(
            minimal(),
            &["groupSearch"],
            json!({"baseDN": "ou=g,dc=x", "nameAttr": "cn", "userAttr": "DN", "groupAttr": "member"}),
        ))
        .unwrap();
        assert_eq!(
            c.settings().unwrap().matchers,
            vec![UserMatcher {
                user_attr: "DN".into(),
                group_attr: "member".into(),
                recursion_group_attr: String::new()
            }]
        );
    }

    #[test]
    fn ports_default_by_transport() {
        let port = |v: serde_json::Value| {
            LdapConfig::from_json(&v)
                .unwrap()
                .settings()
                .unwrap()
                .address
                .port
        };
        assert_eq!(port(minimal()), 636);
        assert_eq!(port(with(minimal(), &["insecureNoSSL"], json!(true))), 389);
        assert_eq!(port(with(minimal(), &["startTLS"], json!(true))), 389);
        assert_eq!(parse_host("[::1]:1636", 636).unwrap().host, "::1");
        assert_eq!(parse_host("::1", 636).unwrap().port, 636);
        assert_eq!(parse_host("10.0.0.1:10389", 636).unwrap().port, 10389);
    }

    #[test]
    fn debug_never_prints_the_bind_password() {
        let c =
            LdapConfig::from_json(&with(minimal(), &["bindPW"], json!("hunter2-SECRET"))).unwrap();
        let printed = format!("{c:?}");
        assert!(!printed.contains("SECRET"), "{printed}");
    }
}
