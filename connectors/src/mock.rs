//! Dex's development connectors `mockCallback` and `mockPassword`: they sign in one fixed
//! user (Dex's "Kilgore Trout") with no upstream at all. The server allows them only where
//! the config says so (see lanyard's docs/connectors/mock.md).

use std::fmt;

use async_trait::async_trait;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::{
    CallbackConnector, ConfigIssue, ConnectorError, Identity, PasswordConnector,
    PendingPasswordLogin, RefreshConnector, Scopes, UpstreamRedirect,
};

/// The fixed user, with the values Dex's mock connectors give it.
pub const MOCK_USER_ID: &str = "0-385-28089-0";
pub const MOCK_USERNAME: &str = "Kilgore Trout";
pub const MOCK_EMAIL: &str = "kilgore@kilgore.trout";
/// Only `mockCallback` puts its user in a group.
pub const MOCK_GROUP: &str = "authors";

/// The lanyard-only key both mock connectors take: without it they are refused unless the
/// issuer is a loopback URL.
pub const ALLOW_NON_LOOPBACK_KEY: &str = "insecureAllowNonLoopbackIssuer";

/// `connectors[].config` of `type: mockCallback` (Dex's has no keys).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockCallbackConfig {
    #[serde(rename = "insecureAllowNonLoopbackIssuer")]
    pub insecure_allow_non_loopback_issuer: bool,
}

/// `connectors[].config` of `type: mockPassword`.
#[derive(Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockPasswordConfig {
    pub username: String,
    pub password: String,
    #[serde(rename = "insecureAllowNonLoopbackIssuer")]
    pub insecure_allow_non_loopback_issuer: bool,
}

impl fmt::Debug for MockPasswordConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockPasswordConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "insecure_allow_non_loopback_issuer",
                &self.insecure_allow_non_loopback_issuer,
            )
            .finish()
    }
}

impl MockPasswordConfig {
    /// Dex refuses to open it without both.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        if self.username.is_empty() {
            out.push(ConfigIssue::error(
                "username",
                "missing required key `username`",
            ));
        }
        if self.password.is_empty() {
            out.push(ConfigIssue::error(
                "password",
                "missing required key `password`",
            ));
        }
        out
    }
}

/// Dex's `mockCallback`: the "upstream" sends the browser straight back to lanyard's
/// callback, which signs in the fixed user.
#[derive(Debug, Default)]
pub struct MockCallbackConnector;

impl MockCallbackConnector {
    fn identity() -> Identity {
        Identity {
            user_id: MOCK_USER_ID.into(),
            username: MOCK_USERNAME.into(),
            preferred_username: String::new(),
            email: MOCK_EMAIL.into(),
            email_verified: true,
            groups: vec![MOCK_GROUP.into()],
            connector_data: Some(b"foobar".to_vec()),
        }
    }
}

#[async_trait]
impl CallbackConnector for MockCallbackConnector {
    async fn login_url(
        &self,
        _scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        let mut url = url::Url::parse(callback_url)
            .map_err(|e| ConnectorError::Internal(format!("callback URL: {e}")))?;
        url.query_pairs_mut().append_pair("state", state);
        Ok(UpstreamRedirect {
            url: url.into(),
            pending: Vec::new(),
        })
    }

    async fn handle_callback(
        &self,
        _scopes: &Scopes,
        _callback_url: &str,
        _pending: &[u8],
        _query: &str,
    ) -> Result<Identity, ConnectorError> {
        Ok(Self::identity())
    }
}

#[async_trait]
impl RefreshConnector for MockCallbackConnector {
    async fn refresh(
        &self,
        _scopes: &Scopes,
        _identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        Ok(Self::identity())
    }
}

/// Dex's `mockPassword`: one username and password, from the config, sign in the fixed user.
pub struct MockPasswordConnector {
    username: String,
    password: String,
}

impl MockPasswordConnector {
    pub fn new(config: &MockPasswordConfig) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        Ok(Self {
            username: config.username.clone(),
            password: config.password.clone(),
        })
    }
}

struct PendingMockLogin<'a> {
    connector: &'a MockPasswordConnector,
    username: String,
}

#[async_trait]
impl PasswordConnector for MockPasswordConnector {
    fn prompt(&self) -> &str {
        // Dex's mock gives no prompt, and Dex's pages then say "Username".
        "Username"
    }

    async fn begin_login<'a>(
        &'a self,
        username: &str,
    ) -> Result<Box<dyn PendingPasswordLogin + 'a>, ConnectorError> {
        Ok(Box::new(PendingMockLogin {
            connector: self,
            username: username.to_string(),
        }))
    }
}

#[async_trait]
impl PendingPasswordLogin for PendingMockLogin<'_> {
    fn account_key(&self) -> &str {
        &self.username
    }

    async fn check(
        self: Box<Self>,
        _scopes: &Scopes,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        let name_ok = self
            .username
            .as_bytes()
            .ct_eq(self.connector.username.as_bytes());
        let password_ok = password
            .as_bytes()
            .ct_eq(self.connector.password.as_bytes());
        if !bool::from(name_ok & password_ok) {
            return Ok(None);
        }
        Ok(Some(Identity {
            user_id: MOCK_USER_ID.into(),
            username: MOCK_USERNAME.into(),
            preferred_username: String::new(),
            email: MOCK_EMAIL.into(),
            email_verified: true,
            groups: Vec::new(),
            connector_data: Some(br#"{"test": "true"}"#.to_vec()),
        }))
    }
}

#[async_trait]
impl RefreshConnector for MockPasswordConnector {
    /// As Dex's: the user stays who they were.
    async fn refresh(
        &self,
        _scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        Ok(identity.clone())
    }
}

/// Whether `issuer` names this machine only (`localhost`, 127.0.0.0/8, `::1`), where Dex's
/// development configs run the mock connectors.
pub fn is_loopback_issuer(issuer: &url::Url) -> bool {
    match issuer.host() {
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_issuers() {
        for yes in [
            "http://127.0.0.1:5556/dex",
            "http://localhost:5556",
            "http://[::1]:8080/",
            "http://127.1.2.3/",
        ] {
            assert!(is_loopback_issuer(&url::Url::parse(yes).unwrap()), "{yes}");
        }
        for no in [
            "https://login.example.com",
            "http://10.0.0.1/",
            "http://localhost.example.com/",
        ] {
            assert!(!is_loopback_issuer(&url::Url::parse(no).unwrap()), "{no}");
        }
    }

    #[tokio::test]
    async fn mock_password_takes_only_its_username_and_password() {
        let c = MockPasswordConnector::new(&MockPasswordConfig {
            username: "admin".into(),
            password: "password".into(),
            ..Default::default()
        })
        .unwrap();
        let scopes = Scopes::default();
        assert!(c.login(&scopes, "admin", "wrong").await.unwrap().is_none());
        assert!(c
            .login(&scopes, "other", "password")
            .await
            .unwrap()
            .is_none());
        let id = c
            .login(&scopes, "admin", "password")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(id.user_id, MOCK_USER_ID);
        assert_eq!(id.email, MOCK_EMAIL);
    }
}
