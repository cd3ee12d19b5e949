//! The `oidc` connector's settings: Dex's keys, with the same meaning.

use std::fmt;

use serde::Deserialize;

use super::discovery::is_http_url;
use crate::upstream::read_root_ca;
use crate::upstream::truthy;
use crate::ConfigIssue;

/// `connectors[].config` of a `type: oidc` connector, key for key as Dex spells it.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "clientSecret")]
    pub client_secret: String,
    /// Must be lanyard's own `/callback` (Dex requires it to match too); empty: that URL.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    /// Scopes asked of the upstream besides `openid`; empty: `profile email`.
    pub scopes: Vec<String>,
    #[serde(rename = "getUserInfo")]
    pub get_user_info: bool,
    #[serde(rename = "userIDKey")]
    pub user_id_key: String,
    #[serde(rename = "userNameKey")]
    pub user_name_key: String,
    #[serde(rename = "insecureSkipEmailVerified")]
    pub insecure_skip_email_verified: bool,
    #[serde(rename = "insecureEnableGroups")]
    pub insecure_enable_groups: bool,
    #[serde(rename = "allowedGroups")]
    pub allowed_groups: Vec<String>,
    #[serde(rename = "claimMapping")]
    pub claim_mapping: ClaimMapping,
    #[serde(rename = "overrideClaimMapping")]
    pub override_claim_mapping: bool,
    /// The `prompt` sent with offline requests; absent: `consent`, as in Dex.
    #[serde(rename = "promptType")]
    pub prompt_type: Option<String>,
    #[serde(rename = "basicAuthUnsupported")]
    pub basic_auth_unsupported: Option<bool>,
    /// Extra CAs for the upstream's TLS: a file path, base64 of PEM, or PEM (as Dex reads them).
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
    /// `S256`, `plain`, or empty (S256 unless the upstream advertises only plain).
    #[serde(rename = "pkceChallenge")]
    pub pkce_challenge: String,
    #[serde(rename = "acrValues")]
    pub acr_values: Vec<String>,
    // lanyard-only keys (Dex has no access-token exchange to bind).
    /// Audiences, besides `clientID`, whose upstream access tokens token exchange accepts.
    #[serde(rename = "accessTokenAudiences")]
    pub access_token_audiences: Vec<String>,
    /// The upstream's RFC 7662 introspection endpoint; empty: discovery's
    /// `introspection_endpoint`.
    #[serde(rename = "introspectionEndpoint")]
    pub introspection_endpoint: String,
    // Dex keys lanyard does not implement; named so that the error says why, instead of
    // suggesting a similar key.
    #[serde(rename = "insecureSkipVerify")]
    pub insecure_skip_verify: Option<serde_json::Value>,
    #[serde(rename = "hostedDomains")]
    pub hosted_domains: Option<serde_json::Value>,
    #[serde(rename = "issuerAlias")]
    pub issuer_alias: Option<serde_json::Value>,
    #[serde(rename = "providerDiscoveryOverrides")]
    pub provider_discovery_overrides: Option<serde_json::Value>,
    #[serde(rename = "claimModifications")]
    pub claim_modifications: Option<serde_json::Value>,
}

/// Where to find claims the upstream names differently (used when the standard claim is
/// missing, or always with `overrideClaimMapping`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimMapping {
    pub preferred_username: String,
    pub email: String,
    pub groups: String,
}

impl fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// How the connector proves possession of the code to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PkceSetting {
    Auto,
    S256,
    Plain,
}

impl OidcConfig {
    /// Every problem with the settings, each under its key. Empty: usable.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out: Vec<ConfigIssue> = Vec::new();
        let mut bad = |key: &str, msg: String| out.push(ConfigIssue::error(key, msg));
        if self.issuer.is_empty() {
            bad("issuer", "missing required key `issuer`".into());
        } else {
            match url::Url::parse(&self.issuer) {
                Ok(u) if matches!(u.scheme(), "https" | "http") && u.host().is_some() => {
                    if u.query().is_some() || u.fragment().is_some() {
                        bad(
                            "issuer",
                            "an issuer URL has no query or fragment".to_string(),
                        );
                    }
                }
                _ => bad("issuer", format!("`{}` is not an http(s) URL", self.issuer)),
            }
        }
        // Without clientID the connector only verifies token-exchange subject tokens, as in
        // Dex; a secret without a client would be read and never used.
        if self.client_id.is_empty() {
            for (key, set) in [
                ("clientSecret", !self.client_secret.is_empty()),
                ("redirectURI", !self.redirect_uri.is_empty()),
                ("promptType", self.prompt_type.is_some()),
                ("pkceChallenge", !self.pkce_challenge.is_empty()),
                ("acrValues", !self.acr_values.is_empty()),
                (
                    "basicAuthUnsupported",
                    self.basic_auth_unsupported.is_some(),
                ),
                // Introspection authenticates as the client.
                (
                    "introspectionEndpoint",
                    !self.introspection_endpoint.is_empty(),
                ),
            ] {
                if set {
                    bad(
                        key,
                        "set without clientID; a connector without clientID signs nobody in and only verifies token-exchange subject tokens".into(),
                    );
                }
            }
        }
        if !self.redirect_uri.is_empty() && url::Url::parse(&self.redirect_uri).is_err() {
            bad(
                "redirectURI",
                format!("`{}` is not a URL", self.redirect_uri),
            );
        }
        if !self.introspection_endpoint.is_empty() && !is_http_url(&self.introspection_endpoint) {
            bad(
                "introspectionEndpoint",
                format!("`{}` is not an http(s) URL", self.introspection_endpoint),
            );
        }
        for (i, audience) in self.access_token_audiences.iter().enumerate() {
            if audience.trim().is_empty() {
                bad(
                    &format!("accessTokenAudiences[{i}]"),
                    "an audience is a non-empty string".into(),
                );
            }
        }
        // Access tokens are exchanged only with getUserInfo (userinfo says who the user is):
        // without it these keys would be read and never used.
        if !self.get_user_info {
            for (key, set) in [
                (
                    "accessTokenAudiences",
                    !self.access_token_audiences.is_empty(),
                ),
                (
                    "introspectionEndpoint",
                    !self.introspection_endpoint.is_empty(),
                ),
            ] {
                if set {
                    bad(
                        key,
                        "applies to access-token exchange, which needs `getUserInfo: true`".into(),
                    );
                }
            }
        }
        if self.pkce_setting().is_none() {
            bad(
                "pkceChallenge",
                format!(
                    "`{}` is not a PKCE method; use S256 (or plain, or leave it out)",
                    self.pkce_challenge
                ),
            );
        }
        for (i, ca) in self.root_cas.iter().enumerate() {
            if let Err(e) = read_root_ca(ca) {
                bad(&format!("rootCAs[{i}]"), e);
            }
        }
        if self.insecure_skip_verify.as_ref().is_some_and(truthy) {
            bad(
                "insecureSkipVerify",
                "lanyard never skips TLS verification; put the upstream's CA in rootCAs".into(),
            );
        }
        if self.hosted_domains.as_ref().is_some_and(truthy) {
            bad(
                "hostedDomains",
                "Dex removed hostedDomains from the oidc connector; use allowedGroups or the upstream's own policy".into(),
            );
        }
        for (key, value) in [
            ("issuerAlias", &self.issuer_alias),
            (
                "providerDiscoveryOverrides",
                &self.provider_discovery_overrides,
            ),
            ("claimModifications", &self.claim_modifications),
        ] {
            if value.as_ref().is_some_and(truthy) {
                bad(key, format!("lanyard does not support Dex's `{key}`"));
            }
        }
        out
    }

    pub(crate) fn pkce_setting(&self) -> Option<PkceSetting> {
        match self.pkce_challenge.as_str() {
            "" => Some(PkceSetting::Auto),
            "S256" => Some(PkceSetting::S256),
            "plain" => Some(PkceSetting::Plain),
            _ => None,
        }
    }

    /// The scopes sent upstream besides `openid` (which is always sent).
    pub(crate) fn upstream_scopes(&self) -> Vec<String> {
        if self.scopes.is_empty() {
            vec!["profile".into(), "email".into()]
        } else {
            self.scopes
                .iter()
                .filter(|s| s.as_str() != "openid" && !s.is_empty())
                .cloned()
                .collect()
        }
    }

    /// Whether the upstream is asked for email: then an answer without one is refused.
    pub(crate) fn wants_email(&self) -> bool {
        self.upstream_scopes().iter().any(|s| s == "email")
    }

    /// Client secret in the token request's body instead of Basic auth: when configured, or
    /// for Okta, which Dex knows refuses Basic auth.
    pub(crate) fn secret_in_body(&self) -> bool {
        self.basic_auth_unsupported.unwrap_or_else(|| {
            url::Url::parse(&self.issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .is_some_and(|h| {
                    ["okta.com", "oktapreview.com"]
                        .iter()
                        .any(|d| h == *d || h.ends_with(&format!(".{d}")))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> Result<OidcConfig, serde_json::Error> {
        serde_json::from_value(json)
    }

    #[test]
    fn reads_dex_keys_and_refuses_unknown_ones() {
        let c = parse(serde_json::json!({
            "issuer": "https://idp.example.com", "clientID": "a", "clientSecret": "s",
            "redirectURI": "https://l.example.com/callback", "scopes": ["groups"],
            "getUserInfo": true, "userIDKey": "oid", "userNameKey": "email",
            "insecureSkipEmailVerified": true, "insecureEnableGroups": true,
            "allowedGroups": ["ops"], "claimMapping": {"preferred_username": "upn", "email": "mail", "groups": "roles"},
            "promptType": "login", "basicAuthUnsupported": true, "rootCAs": [], "pkceChallenge": "S256"
        }))
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.claim_mapping.groups, "roles");
        assert!(parse(serde_json::json!({"issuer": "x", "clientId": "a"}))
            .unwrap_err()
            .to_string()
            .contains("unknown field `clientId`"));
    }

    #[test]
    fn problems_name_the_key() {
        let c = parse(serde_json::json!({
            "issuer": "ftp://x", "clientID": "a", "pkceChallenge": "S512", "insecureSkipVerify": true,
            "rootCAs": ["/nonexistent/ca.pem"]
        }))
        .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(
            keys,
            [
                "issuer",
                "pkceChallenge",
                "rootCAs[0]",
                "insecureSkipVerify"
            ]
        );
    }

    #[test]
    fn without_client_id_login_only_settings_are_refused() {
        let c = parse(serde_json::json!({
            "issuer": "https://gitlab.example.com", "scopes": ["openid"], "userNameKey": "sub",
        }))
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let c = parse(serde_json::json!({
            "issuer": "https://gitlab.example.com", "clientSecret": "s",
            "redirectURI": "https://login.example.com/callback", "promptType": "login",
            "pkceChallenge": "S256", "acrValues": ["x"], "basicAuthUnsupported": true,
            "getUserInfo": true, "introspectionEndpoint": "https://gitlab.example.com/introspect",
        }))
        .unwrap();
        let keys: Vec<String> = c.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(
            keys,
            [
                "clientSecret",
                "redirectURI",
                "promptType",
                "pkceChallenge",
                "acrValues",
                "basicAuthUnsupported",
                "introspectionEndpoint"
            ]
        );
    }

    #[test]
    fn access_token_settings_need_get_user_info_and_sound_values() {
        let c = parse(serde_json::json!({
            "issuer": "https://idp.example.com", "clientID": "a", "getUserInfo": true,
            "accessTokenAudiences": ["api://lanyard"],
            "introspectionEndpoint": "https://idp.example.com/oauth2/introspect"
        }))
        .unwrap();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        let c = parse(serde_json::json!({
            "issuer": "https://idp.example.com", "clientID": "a",
            "accessTokenAudiences": [""], "introspectionEndpoint": "ldap://x"
        }))
        .unwrap();
        let problems = c.validate();
        let keys: Vec<&str> = problems.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            keys,
            [
                "introspectionEndpoint",
                "accessTokenAudiences[0]",
                "accessTokenAudiences",
                "introspectionEndpoint"
            ],
            "{problems:?}"
        );
        assert!(problems[2].message.contains("getUserInfo"), "{problems:?}");
    }

    #[test]
    fn okta_gets_the_secret_in_the_body_unless_told_otherwise() {
        let mut c = OidcConfig {
            issuer: "https://acme.okta.com/oauth2/default".into(),
            ..Default::default()
        };
        assert!(c.secret_in_body());
        c.basic_auth_unsupported = Some(false);
        assert!(!c.secret_in_body());
        c.issuer = "https://notokta.com".into();
        c.basic_auth_unsupported = None;
        assert!(!c.secret_in_body());
    }

    #[test]
    fn debug_hides_the_client_secret() {
        let c = OidcConfig {
            client_secret: "SECRET".into(),
            ..Default::default()
        };
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
