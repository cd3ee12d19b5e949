//! Any OAuth 2.0 provider with a userinfo endpoint but no OpenID Connect (`type: oauth`):
//! the authorization-code flow, then the userinfo JSON read through Dex's claim mapping.
//!
//! Behaviour follows Dex's `oauth` connector: the same keys and defaults (`userIDKey: id`,
//! `user_name`, `preferred_username`, `email`, `email_verified`, `groups`), groups from
//! userinfo (strings, or objects with a `name`) and from the access token when it is a JWT.
//! Unlike Dex, a refresh reads userinfo again (with the upstream's refresh token when it gave
//! one), so changed groups reach the next ID token and a revoked token ends the session.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::upstream::oauth_client::REQUEST_TIMEOUT;
use crate::upstream::{
    is_http_url, read_root_ca, truthy, FetchError, OAuthUpstream, Tokens, UpstreamSettings,
};
use crate::{
    CallbackConnector, ConfigIssue, ConnectorError, Identity, RefreshConnector, Scopes,
    UpstreamRedirect,
};

/// Dex's `oauth` connector settings, key for key.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "clientSecret")]
    pub client_secret: String,
    /// Must be lanyard's own `/callback` when given.
    #[serde(rename = "redirectURI")]
    pub redirect_uri: String,
    #[serde(rename = "tokenURL")]
    pub token_url: String,
    #[serde(rename = "authorizationURL")]
    pub authorization_url: String,
    #[serde(rename = "userInfoURL")]
    pub user_info_url: String,
    pub scopes: Vec<String>,
    /// Extra CAs: a file, base64 of PEM, or PEM (as Dex reads them).
    #[serde(rename = "rootCAs")]
    pub root_cas: Vec<String>,
    /// Refused: lanyard never skips TLS verification.
    #[serde(rename = "insecureSkipVerify")]
    pub insecure_skip_verify: Option<Value>,
    /// The userinfo key of the user's id; empty: `id`.
    #[serde(rename = "userIDKey")]
    pub user_id_key: String,
    #[serde(rename = "claimMapping")]
    pub claim_mapping: OAuthClaimMapping,
}

/// Which userinfo keys hold the other claims; each empty one takes Dex's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthClaimMapping {
    #[serde(rename = "userNameKey")]
    pub user_name_key: String,
    #[serde(rename = "preferredUsernameKey")]
    pub preferred_username_key: String,
    #[serde(rename = "groupsKey")]
    pub groups_key: String,
    #[serde(rename = "emailKey")]
    pub email_key: String,
    #[serde(rename = "emailVerifiedKey")]
    pub email_verified_key: String,
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("redirect_uri", &self.redirect_uri)
            .field("token_url", &self.token_url)
            .field("authorization_url", &self.authorization_url)
            .field("user_info_url", &self.user_info_url)
            .field("scopes", &self.scopes)
            .field("root_cas", &self.root_cas.len())
            .field("user_id_key", &self.user_id_key)
            .field("claim_mapping", &self.claim_mapping)
            .finish()
    }
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

impl OAuthConfig {
    /// Everything wrong with the settings, each under its key.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if self.client_id.is_empty() {
            out.push(ConfigIssue::error(
                "clientID",
                "missing required key `clientID`",
            ));
        }
        for (key, value) in [
            ("authorizationURL", &self.authorization_url),
            ("tokenURL", &self.token_url),
            ("userInfoURL", &self.user_info_url),
        ] {
            if value.is_empty() {
                out.push(ConfigIssue::error(
                    key,
                    format!("missing required key `{key}`"),
                ));
                continue;
            }
            if !is_http_url(value) {
                out.push(ConfigIssue::error(
                    key,
                    format!("`{value}` is not an http(s) URL"),
                ));
            }
        }
        for (i, ca) in self.root_cas.iter().enumerate() {
            if let Err(e) = read_root_ca(ca) {
                out.push(ConfigIssue::error(format!("rootCAs[{i}]"), e));
            }
        }
        if self.insecure_skip_verify.as_ref().is_some_and(truthy) {
            out.push(ConfigIssue::error(
                "insecureSkipVerify",
                "lanyard never skips TLS verification; put the provider's CA in rootCAs",
            ));
        }
        out
    }

    fn keys(&self) -> ClaimKeys {
        let m = &self.claim_mapping;
        ClaimKeys {
            user_id: or_default(&self.user_id_key, "id").to_string(),
            user_name: or_default(&m.user_name_key, "user_name").to_string(),
            preferred_username: or_default(&m.preferred_username_key, "preferred_username")
                .to_string(),
            groups: or_default(&m.groups_key, "groups").to_string(),
            email: or_default(&m.email_key, "email").to_string(),
            email_verified: or_default(&m.email_verified_key, "email_verified").to_string(),
        }
    }
}

/// The userinfo keys claims are read from, defaults applied.
struct ClaimKeys {
    user_id: String,
    user_name: String,
    preferred_username: String,
    groups: String,
    email: String,
    email_verified: String,
}

/// What a session keeps for refresh. `AccessToken` is Dex's field name.
#[derive(Default, Serialize, Deserialize)]
struct ConnectorData {
    #[serde(rename = "AccessToken", default)]
    access_token: String,
    #[serde(
        rename = "refreshToken",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    refresh_token: String,
}

pub struct OAuthConnector {
    upstream: OAuthUpstream,
    user_info_url: String,
    scopes: Vec<String>,
    keys: ClaimKeys,
}

impl OAuthConnector {
    /// `callback_url` is lanyard's `/callback`; a configured `redirectURI` must equal it.
    pub fn new(config: &OAuthConfig, callback_url: &str) -> Result<Self, ConnectorError> {
        Self::with_timeout(config, callback_url, REQUEST_TIMEOUT)
    }

    /// Like [`new`](Self::new), with another bound on each request to the provider.
    pub fn with_timeout(
        config: &OAuthConfig,
        callback_url: &str,
        timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        if !config.redirect_uri.is_empty() && config.redirect_uri != callback_url {
            return Err(ConnectorError::Config(format!(
                "redirectURI `{}` is not this server's callback URL `{callback_url}`; set it to the callback URL (or leave it out)",
                config.redirect_uri
            )));
        }
        let upstream = OAuthUpstream::new(
            &UpstreamSettings {
                name: "the OAuth provider",
                client_id: &config.client_id,
                client_secret: &config.client_secret,
                authorization_url: &config.authorization_url,
                token_url: &config.token_url,
                redirect_uri: callback_url,
                root_cas: &config.root_cas,
            },
            timeout,
        )?;
        Ok(Self {
            upstream,
            user_info_url: config.user_info_url.clone(),
            scopes: config.scopes.clone(),
            keys: config.keys(),
        })
    }

    /// Reads userinfo with the token and maps it (see [`identity_from_userinfo`]).
    async fn identity(&self, scopes: &Scopes, tokens: &Tokens) -> Result<Identity, Lookup> {
        let access_token = tokens.access_token.as_str();
        let info = match self
            .upstream
            .get_json(&self.user_info_url, access_token)
            .await?
        {
            Value::Object(map) => map,
            _ => {
                return Err(Lookup::Unusable(
                    "the provider's userinfo is not a JSON object".into(),
                ))
            }
        };
        let mut identity = identity_from_userinfo(&self.keys, &info, scopes, access_token)
            .map_err(Lookup::Unusable)?;
        if scopes.offline_access {
            identity.connector_data = Some(
                serde_json::to_vec(&ConnectorData {
                    access_token: access_token.to_string(),
                    refresh_token: tokens.refresh_token.clone().unwrap_or_default(),
                })
                .map_err(|e| Lookup::Unusable(e.to_string()))?,
            );
        }
        Ok(identity)
    }
}

enum Lookup {
    Fetch(FetchError),
    /// The answer lacks what the mapping needs (the operator's to fix).
    Unusable(String),
}

impl From<FetchError> for Lookup {
    fn from(e: FetchError) -> Self {
        Lookup::Fetch(e)
    }
}

/// Dex's mapping: the id must be a string or a number; the other claims are taken when they
/// have the right type and are empty otherwise; groups only when the client asked for them.
fn identity_from_userinfo(
    keys: &ClaimKeys,
    info: &Map<String, Value>,
    scopes: &Scopes,
    access_token: &str,
) -> Result<Identity, String> {
    let user_id = match info.get(&keys.user_id) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(format!(
                "the userinfo claim `{}` (userIDKey) should be a string or number, got {}",
                keys.user_id,
                json_type(other)
            ))
        }
        None => {
            return Err(format!(
                "the provider's userinfo has no `{}` claim (userIDKey)",
                keys.user_id
            ))
        }
    };
    let text = |key: &str| {
        info.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut groups = Vec::new();
    if scopes.groups {
        add_groups(&mut groups, info.get(&keys.groups));
        if let Some(claims) = jwt_claims(access_token) {
            add_groups(&mut groups, claims.get(&keys.groups));
        }
    }
    Ok(Identity {
        user_id,
        username: text(&keys.user_name),
        preferred_username: text(&keys.preferred_username),
        email: text(&keys.email),
        email_verified: info
            .get(&keys.email_verified)
            .and_then(Value::as_bool)
            .unwrap_or(false),
        groups,
        connector_data: None,
    })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "an empty string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Adds each group name of a groups claim (strings, or objects with a `name`), once.
fn add_groups(groups: &mut Vec<String>, claim: Option<&Value>) {
    let Some(Value::Array(items)) = claim else {
        return;
    };
    for item in items {
        let name = match item {
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => o.get("name").and_then(Value::as_str),
            _ => None,
        };
        if let Some(name) = name {
            if !groups.iter().any(|g| g == name) {
                groups.push(name.to_string());
            }
        }
    }
}

/// The payload of an access token that is a JWT. It came straight from the token endpoint
/// over TLS (as Dex reads it), so its signature is not what vouches for it.
fn jwt_claims(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_, payload) = (parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[async_trait]
impl CallbackConnector for OAuthConnector {
    async fn login_url(
        &self,
        _scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        self.upstream.check_callback(callback_url)?;
        Ok(UpstreamRedirect {
            url: self.upstream.authorize_url(state, &self.scopes),
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
            Lookup::Unusable(reason) => ConnectorError::Config(reason),
        })
    }
}

#[async_trait]
impl RefreshConnector for OAuthConnector {
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
        let fresh = self.identity(scopes, &tokens).await.map_err(|e| match e {
            Lookup::Fetch(e) => e.at_refresh(),
            Lookup::Unusable(reason) => ConnectorError::SessionEnded(reason),
        })?;
        if fresh.user_id != identity.user_id {
            return Err(ConnectorError::SessionEnded(
                "the provider's userinfo now names another user".into(),
            ));
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GROUPS: Scopes = Scopes {
        offline_access: false,
        groups: true,
    };

    fn keys(config: Value) -> ClaimKeys {
        serde_json::from_value::<OAuthConfig>(config)
            .unwrap()
            .keys()
    }

    fn info(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn dex_defaults_read_id_user_name_and_groups() {
        let id = identity_from_userinfo(
            &keys(json!({})),
            &info(json!({
                "id": 42, "user_name": "Jane", "preferred_username": "jane",
                "email": "jane@example.com", "email_verified": true,
                "groups": ["devs", {"name": "ops"}, 7],
            })),
            &GROUPS,
            "opaque",
        )
        .unwrap();
        assert_eq!(id.user_id, "42");
        assert_eq!(id.username, "Jane");
        assert_eq!(id.preferred_username, "jane");
        assert!(id.email_verified);
        assert_eq!(id.groups, vec!["devs", "ops"]);
    }

    #[test]
    fn mapped_keys_and_groups_from_a_jwt_access_token() {
        let k = keys(json!({"userIDKey": "sub", "claimMapping": {
            "userNameKey": "name", "groupsKey": "roles", "emailVerifiedKey": "verified"}}));
        let token = format!(
            "h.{}.s",
            URL_SAFE_NO_PAD.encode(br#"{"roles":["from-token","a"]}"#)
        );
        let id = identity_from_userinfo(
            &k,
            &info(json!({"sub": "u-1", "name": "Jane", "roles": ["a"], "verified": "yes"})),
            &GROUPS,
            &token,
        )
        .unwrap();
        assert_eq!(id.user_id, "u-1");
        assert_eq!(id.username, "Jane");
        assert!(!id.email_verified, "a non-boolean does not verify");
        assert_eq!(id.groups, vec!["a", "from-token"]);
        // Without the groups scope no groups are read.
        let none =
            identity_from_userinfo(&k, &info(json!({"sub": "u"})), &Scopes::default(), &token)
                .unwrap();
        assert!(none.groups.is_empty());
    }

    #[test]
    fn a_missing_or_odd_user_id_is_named() {
        let k = keys(json!({}));
        let err =
            identity_from_userinfo(&k, &info(json!({"name": "x"})), &GROUPS, "t").unwrap_err();
        assert!(err.contains("no `id` claim (userIDKey)"), "{err}");
        let err = identity_from_userinfo(&k, &info(json!({"id": [1]})), &GROUPS, "t").unwrap_err();
        assert!(err.contains("string or number, got a list"), "{err}");
    }

    #[test]
    fn insecure_skip_verify_and_missing_urls_are_refused() {
        let config: OAuthConfig = serde_json::from_value(json!({
            "clientID": "c", "authorizationURL": "https://p.example/auth",
            "tokenURL": "ftp://p.example/token", "insecureSkipVerify": true,
        }))
        .unwrap();
        let paths: Vec<String> = config.validate().iter().map(|i| i.path.clone()).collect();
        assert_eq!(paths, vec!["tokenURL", "userInfoURL", "insecureSkipVerify"]);
    }
}
