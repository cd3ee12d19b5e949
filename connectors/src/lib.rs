//! Upstream identity connectors for lanyard.
//!
//! A connector turns something the user presents (a password, or a redirect back from an
//! upstream identity provider) into an [`Identity`]. The server decides which connectors
//! exist from config; this crate knows nothing about the server.

use std::fmt;
use std::net::IpAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub mod authproxy;
pub mod cidr;
pub mod github;
pub mod gitlab;
pub mod google;
pub mod ldap;
pub mod local;
pub mod microsoft;
pub mod mock;
pub mod oauth;
pub mod oidc;
pub mod password_hash;
pub mod saml;
mod upstream;

pub use ldap::{LdapConfig, LdapConnector, LdapLimits};
pub use local::{LocalConnector, LocalProfile, LocalUser, LocalUserDirectory, StaticUserDirectory};
pub use oidc::{OidcConfig, OidcConnector};
pub use password_hash::{Argon2idParams, HashKind, PasswordHashError, PasswordHasher};
pub use saml::{SamlConfig, SamlConnector};

/// Who the upstream says the user is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Stable upstream identifier; together with the connector id it forms the Dex-compatible `sub`.
    pub user_id: String,
    pub username: String,
    #[serde(default)]
    pub preferred_username: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Opaque state the connector needs again at refresh (it may hold upstream tokens, so it is
    /// never printed). Serialized as standard base64 to keep stored rows compact.
    #[serde(default, with = "opt_base64")]
    pub connector_data: Option<Vec<u8>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("preferred_username", &self.preferred_username)
            .field("email", &self.email)
            .field("email_verified", &self.email_verified)
            .field("groups", &self.groups)
            .field(
                "connector_data",
                &self
                    .connector_data
                    .as_ref()
                    .map(|d| format!("<{} bytes redacted>", d.len())),
            )
            .finish()
    }
}

/// The scopes of the request that matter to connectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scopes {
    /// A refresh token will be issued, so the connector should keep what it needs to refresh.
    pub offline_access: bool,
    /// The client asked for the `groups` claim; connectors may skip group lookups otherwise.
    pub groups: bool,
}

/// One problem (or, with `warning`, merely something worth saying) in a connector's `config`
/// mapping. `path` is relative to that mapping, e.g. `userSearch.baseDN` or `orgs[1].name`;
/// the server's config prefixes it with `connectors[i].config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
    /// A warning leaves the config usable.
    pub warning: bool,
}

impl ConfigIssue {
    pub fn error(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            warning: false,
        }
    }

    pub fn warning(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            warning: true,
        }
    }

    /// The errors of `issues` as one [`ConnectorError::Config`], or `Ok` when there are none.
    pub fn refuse(issues: Vec<ConfigIssue>) -> Result<(), ConnectorError> {
        let errors: Vec<String> = issues
            .iter()
            .filter(|i| !i.warning)
            .map(ToString::to_string)
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConnectorError::Config(errors.join("; ")))
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a connector could not produce an identity.
///
/// A wrong username or password is not an error (see [`PasswordConnector::login`]).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The upstream could not be reached or answered with a server error; retrying may help.
    #[error("upstream identity provider unavailable: {0}")]
    Unavailable(String),
    /// The upstream no longer vouches for the user (deleted, disabled, password changed);
    /// the caller must end the session and revoke its refresh token.
    #[error("upstream session ended: {0}")]
    SessionEnded(String),
    /// The connector's configuration is wrong; an operator has to fix it.
    #[error("connector misconfigured: {0}")]
    Config(String),
    /// The upstream's redirect back was malformed, had a wrong `state`, or carried an error.
    #[error("invalid callback from upstream: {0}")]
    BadCallback(String),
    /// The upstream authenticated the user but the user may not log in (for example not in a
    /// required organization or group).
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// A token presented to the connector is forged, expired, for someone else, or of a type
    /// the connector does not take.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A bug or an unexpected local failure.
    #[error("internal connector error: {0}")]
    Internal(String),
}

/// A connector that checks a username and password itself (local passwords, LDAP).
///
/// A login has two steps so that the caller can count a guess against the account before any
/// password is checked: [`PasswordConnector::begin_login`] finds the account the name
/// resolves to, the caller reserves an attempt against its
/// [`PendingPasswordLogin::account_key`], then [`PendingPasswordLogin::check`] checks the password.
#[async_trait]
pub trait PasswordConnector: Send + Sync {
    /// Label for the login form's first field ("Email address" / "Username").
    fn prompt(&self) -> &str;

    /// Finds the account `username` names, without checking any password.
    async fn begin_login<'a>(
        &'a self,
        username: &str,
    ) -> Result<Box<dyn PendingPasswordLogin + 'a>, ConnectorError>;

    /// Both steps at once, for callers that limit nothing. `Ok(None)` means wrong username or
    /// password; the two are indistinguishable to the caller by design, in result and, as far
    /// as the connector can manage, in time.
    async fn login(
        &self,
        scopes: &Scopes,
        username: &str,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError> {
        self.begin_login(username)
            .await?
            .check(scopes, password)
            .await
    }
}

/// A password login whose account is known but whose password is not checked yet.
#[async_trait]
pub trait PendingPasswordLogin: Send {
    /// The account the name resolved to: every name that logs in as the same account (another
    /// spelling, the username instead of the email) gives the same key, so that a guessing
    /// budget cannot be multiplied by re-typing the name. A name that resolves to no account
    /// keys on its normalised spelling, never on anything an existing account's key could be.
    fn account_key(&self) -> &str;

    /// Checks the password. `Ok(None)` means wrong username or password (see
    /// [`PasswordConnector::login`]).
    async fn check(
        self: Box<Self>,
        scopes: &Scopes,
        password: &str,
    ) -> Result<Option<Identity>, ConnectorError>;

    /// The caller refuses the attempt without checking the password (too many failures). A
    /// connector that hides by timing whether the name exists holds this refusal as long as a
    /// failed check, since finding the account took a different time for known and unknown names.
    async fn abandon(self: Box<Self>) {}
}

/// Where to send the browser for an upstream login, and what the connector needs to remember
/// until the browser comes back (a nonce, a PKCE verifier). The server keeps `pending` with
/// the login request and hands it to [`CallbackConnector::handle_callback`] unchanged.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamRedirect {
    pub url: String,
    pub pending: Vec<u8>,
}

impl fmt::Debug for UpstreamRedirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamRedirect")
            .field("url", &self.url)
            .field(
                "pending",
                &format!("<{} bytes redacted>", self.pending.len()),
            )
            .finish()
    }
}

/// A connector that sends the browser to an upstream and handles the redirect back
/// (GitHub, generic OIDC).
#[async_trait]
pub trait CallbackConnector: Send + Sync {
    /// Where to send the browser; `state` must come back in the callback (the server checks it
    /// before calling [`CallbackConnector::handle_callback`]).
    async fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError>;

    /// Handles the upstream's redirect back; `query` is the raw query string (without `?`) and
    /// `pending` what [`CallbackConnector::login_url`] asked the server to keep.
    async fn handle_callback(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        pending: &[u8],
        query: &str,
    ) -> Result<Identity, ConnectorError>;

    /// For a connector whose upstream is in front of lanyard (`authproxy`): the identity the
    /// request to `/callback/<connector id>` carries in its `headers`, which arrived from the
    /// address `peer` (the connection's, never a forwarded-for header). Other connectors
    /// take no such request.
    async fn handle_proxied_callback(
        &self,
        _scopes: &Scopes,
        _peer: IpAddr,
        _headers: &http::HeaderMap,
    ) -> Result<Identity, ConnectorError> {
        Err(ConnectorError::BadCallback(
            "this sign-in method does not return to /callback/<connector id>".into(),
        ))
    }

    /// SAML service provider metadata for an IdP administrator to import; `None` for
    /// connectors that are no SAML service provider.
    fn service_provider_metadata(&self) -> Option<String> {
        None
    }
}

/// Who a verified subject token names, and until when the upstream vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectIdentity {
    pub identity: Identity,
    /// The subject token's expiry (seconds since the Unix epoch): nothing issued in exchange
    /// for it may outlive it.
    pub expires_at: i64,
}

/// A connector that can vouch for a token the upstream issued on its own, without a browser:
/// the subject token of an OAuth 2.0 token exchange (RFC 8693), such as a CI system's ID token.
#[async_trait]
pub trait TokenIdentityConnector: Send + Sync {
    /// Verifies `subject_token` (of RFC 8693 type `subject_token_type`) and returns who it names.
    /// A token that does not verify, or that the upstream did not issue for this connector's
    /// client, is [`ConnectorError::InvalidToken`].
    async fn token_identity(
        &self,
        scopes: &Scopes,
        subject_token_type: &str,
        subject_token: &str,
    ) -> Result<SubjectIdentity, ConnectorError>;
}

/// A connector that can re-check the user when a refresh token is used.
#[async_trait]
pub trait RefreshConnector: Send + Sync {
    /// Re-queries upstream on token refresh and returns the current identity.
    /// `Err(ConnectorError::SessionEnded(..))` ends the session.
    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError>;
}

mod opt_base64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let encoded: Option<String> = Option::deserialize(d)?;
        encoded
            .map(|e| {
                STANDARD
                    .decode(e.as_bytes())
                    .map_err(|err| serde::de::Error::custom(format!("connector_data: {err}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn sample() -> Identity {
        Identity {
            user_id: "u1".into(),
            username: "jane".into(),
            preferred_username: "jane".into(),
            email: "jane@example.com".into(),
            email_verified: true,
            groups: vec!["admins".into()],
            connector_data: Some(b"upstream-refresh-token-SECRET".to_vec()),
        }
    }

    #[test]
    fn identity_debug_never_prints_connector_data() {
        let printed = format!("{:?}", sample());
        assert!(!printed.contains("SECRET"), "{printed}");
        assert!(printed.contains("29 bytes redacted"), "{printed}");
        assert!(printed.contains("jane@example.com"));
    }

    #[test]
    fn identity_round_trips_through_json_with_base64_connector_data() {
        let id = sample();
        let json = serde_json::to_string(&id).unwrap();
        assert!(json.contains("\"connector_data\":\"dXBzdHJlYW0t"), "{json}");
        let back: Identity = serde_json::from_str(&json).unwrap();
        assert_eq!(back, id);

        let minimal: Identity = serde_json::from_str(r#"{"user_id":"u","username":"n"}"#).unwrap();
        assert_eq!(minimal.connector_data, None);
        assert!(minimal.groups.is_empty());
    }

    #[test]
    fn connector_traits_are_object_safe() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn PasswordConnector>();
        assert_send_sync::<dyn CallbackConnector>();
        assert_send_sync::<dyn RefreshConnector>();
        assert_send_sync::<dyn TokenIdentityConnector>();
        let _: Option<Arc<dyn PasswordConnector>> = None;
        let _: Option<Arc<dyn CallbackConnector>> = None;
        let _: Option<Arc<dyn RefreshConnector>> = None;
    }
}
