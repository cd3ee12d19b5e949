//! The `config` mapping of a `type: saml` connector, with Dex's key names, and the checks
//! `lanyard check-config` and startup run on it.

use serde::Deserialize;

use crate::ConfigIssue;

/// Dex's SAML connector settings. Every key is optional to serde so that a missing one is
/// reported by [`SamlConfig::validate`] with its name instead of failing the whole mapping.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// The IdP's single sign-on URL (its HTTP-Redirect binding endpoint).
    #[serde(rename = "ssoURL")]
    pub sso_url: Option<String>,
    /// A PEM file of the certificates whose keys may sign responses.
    pub ca: Option<String>,
    /// The same PEM, base64-encoded in the config (Dex's `[]byte` in JSON).
    #[serde(rename = "caData")]
    pub ca_data: Option<String>,
    /// lanyard's SAML entity ID: the Issuer of its requests and the Audience it accepts.
    #[serde(rename = "entityIssuer")]
    pub entity_issuer: Option<String>,
    /// The IdP's entity ID; when set, responses and assertions must name it as Issuer.
    #[serde(rename = "ssoIssuer")]
    pub sso_issuer: Option<String>,
    /// The assertion consumer service URL: lanyard's `/callback`.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: Option<String>,
    #[serde(rename = "usernameAttr")]
    pub username_attr: Option<String>,
    #[serde(rename = "emailAttr")]
    pub email_attr: Option<String>,
    #[serde(rename = "groupsAttr")]
    pub groups_attr: Option<String>,
    #[serde(rename = "groupsDelim")]
    pub groups_delim: Option<String>,
    #[serde(rename = "allowedGroups")]
    pub allowed_groups: Option<Vec<String>>,
    #[serde(rename = "filterGroups")]
    pub filter_groups: Option<bool>,
    #[serde(rename = "nameIDPolicyFormat")]
    pub name_id_policy_format: Option<String>,
    /// Parsed only to refuse `true` with the reason (see [`SamlConfig::validate`]).
    #[serde(rename = "insecureSkipSignatureValidation")]
    pub insecure_skip_signature_validation: Option<bool>,
}

/// NameID formats a request may ask for, as Dex lists them; the config may name one by its
/// last URN component (`emailAddress`).
const NAME_ID_FORMATS: [&str; 9] = [
    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:WindowsDomainQualifiedName",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:encrypted",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:entity",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:kerberos",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
];

/// Dex's default NameID format.
pub const DEFAULT_NAME_ID_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent";

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

impl SamlConfig {
    pub fn sso_url(&self) -> Option<&str> {
        given(&self.sso_url)
    }

    pub fn redirect_uri(&self) -> Option<&str> {
        given(&self.redirect_uri)
    }

    pub fn entity_issuer(&self) -> Option<&str> {
        given(&self.entity_issuer)
    }

    pub fn sso_issuer(&self) -> Option<&str> {
        given(&self.sso_issuer)
    }

    pub fn groups_attr(&self) -> Option<&str> {
        given(&self.groups_attr)
    }

    pub fn groups_delim(&self) -> Option<&str> {
        given(&self.groups_delim)
    }

    pub fn allowed_groups(&self) -> &[String] {
        self.allowed_groups.as_deref().unwrap_or_default()
    }

    /// The full NameID format URN, or `None` when the configured one is unknown.
    pub fn name_id_format(&self) -> Option<&'static str> {
        match given(&self.name_id_policy_format) {
            None => Some(DEFAULT_NAME_ID_FORMAT),
            Some(f) => NAME_ID_FORMATS
                .into_iter()
                .find(|full| *full == f || full.rsplit(':').next() == Some(f)),
        }
    }

    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        for (key, value, what) in [
            ("ssoURL", &self.sso_url, "the IdP's single sign-on URL"),
            (
                "redirectURI",
                &self.redirect_uri,
                "lanyard's callback URL, the issuer followed by /callback",
            ),
            (
                "usernameAttr",
                &self.username_attr,
                "the assertion attribute holding the user name",
            ),
            (
                "emailAttr",
                &self.email_attr,
                "the assertion attribute holding the email address",
            ),
        ] {
            if given(value).is_none() {
                out.push(ConfigIssue::error(
                    key,
                    format!("missing required key `{key}` ({what})"),
                ));
            }
        }
        for (key, value) in [
            ("ssoURL", self.sso_url()),
            ("redirectURI", self.redirect_uri()),
        ] {
            let Some(value) = value else { continue };
            let absolute = url::Url::parse(value)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if absolute.is_none() {
                out.push(ConfigIssue::error(
                    key,
                    format!("`{value}` is not an absolute http(s) URL"),
                ));
            }
        }
        if self.insecure_skip_signature_validation == Some(true) {
            out.push(ConfigIssue::error(
                "insecureSkipSignatureValidation",
                "is refused: without signature validation anyone can post a response naming any user and sign in as them; give the IdP's signing certificate in `ca` or `caData`",
            ));
        }
        match (given(&self.ca), given(&self.ca_data)) {
            (Some(_), Some(_)) => out.push(ConfigIssue::error(
                "caData",
                "give either `ca` or `caData`, not both",
            )),
            (None, None) => out.push(ConfigIssue::error(
                "ca",
                "missing required key `ca` or `caData` (the IdP's signing certificate, which verifies every response)",
            )),
            _ => {}
        }
        if self.name_id_format().is_none() {
            out.push(ConfigIssue::error(
                "nameIDPolicyFormat",
                format!(
                    "`{}` is not a NameID format; use one of {} (or its last component, such as `persistent`)",
                    self.name_id_policy_format.as_deref().unwrap_or_default(),
                    NAME_ID_FORMATS.join(", ")
                ),
            ));
        }
        if self.groups_delim().is_some() && self.groups_attr().is_none() {
            out.push(ConfigIssue::error(
                "groupsDelim",
                "needs `groupsAttr`: it splits that attribute's value",
            ));
        }
        if self.filter_groups == Some(true) && self.allowed_groups().is_empty() {
            out.push(ConfigIssue::warning(
                "filterGroups",
                "has no effect without `allowedGroups`",
            ));
        }
        if !self.allowed_groups().is_empty() && self.groups_attr().is_none() {
            out.push(ConfigIssue::error(
                "allowedGroups",
                "needs `groupsAttr`: without it no user is in any group, so nobody could sign in",
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> SamlConfig {
        SamlConfig {
            sso_url: Some("https://idp.example.com/sso".into()),
            ca: Some("/etc/lanyard/idp.pem".into()),
            redirect_uri: Some("https://lanyard.example.com/callback".into()),
            username_attr: Some("name".into()),
            email_attr: Some("email".into()),
            ..SamlConfig::default()
        }
    }

    fn errors(c: &SamlConfig) -> Vec<String> {
        c.validate()
            .into_iter()
            .filter(|i| !i.warning)
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn minimal_config_is_valid() {
        assert!(errors(&minimal()).is_empty(), "{:?}", errors(&minimal()));
    }

    #[test]
    fn skipping_signature_validation_is_refused_with_the_reason() {
        let c = SamlConfig {
            insecure_skip_signature_validation: Some(true),
            ..minimal()
        };
        let e = errors(&c);
        assert!(
            e.iter()
                .any(|m| m.starts_with("insecureSkipSignatureValidation:")
                    && m.contains("sign in as them")),
            "{e:?}"
        );
    }

    #[test]
    fn missing_keys_and_bad_values_are_named() {
        let e = errors(&SamlConfig::default());
        for key in ["ssoURL", "redirectURI", "usernameAttr", "emailAttr", "ca"] {
            assert!(
                e.iter().any(|m| m.starts_with(&format!("{key}:"))),
                "{key}: {e:?}"
            );
        }
        let c = SamlConfig {
            name_id_policy_format: Some("nonsense".into()),
            ca_data: Some("x".into()),
            ..minimal()
        };
        let e = errors(&c);
        assert!(
            e.iter().any(|m| m.starts_with("nameIDPolicyFormat:")),
            "{e:?}"
        );
        assert!(e.iter().any(|m| m.starts_with("caData:")), "{e:?}");
    }

    #[test]
    fn name_id_format_takes_the_short_form() {
        let c = SamlConfig {
            name_id_policy_format: Some("emailAddress".into()),
            ..minimal()
        };
        assert_eq!(
            c.name_id_format(),
            Some("urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress")
        );
        assert_eq!(minimal().name_id_format(), Some(DEFAULT_NAME_ID_FORMAT));
    }
}
