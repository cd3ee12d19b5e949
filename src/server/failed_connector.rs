//! Connectors that failed to open, and whether lanyard starts without them (Dex's
//! `DEX_CONTINUE_ON_CONNECTOR_FAILURE`).

use async_trait::async_trait;
use lanyard_connectors::{
    CallbackConnector, ConnectorError, Identity, PasswordConnector, PendingPasswordLogin,
    RefreshConnector, Scopes, SubjectIdentity, TokenIdentityConnector, UpstreamRedirect,
};

/// The environment variable Dex reads (a Go boolean; unset or unparsable: the default).
pub use crate::config::CONTINUE_ON_CONNECTOR_FAILURE_ENV as CONTINUE_ENV;

/// What a connector that fails to open does to the start (or the reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorFailures {
    /// Serve without it (Dex's default), unless every connector failed.
    Continue,
    /// Refuse to start (or to reload).
    Stop,
}

impl ConnectorFailures {
    /// Dex's feature flag as Dex reads it: Go's `strconv.ParseBool` (`1`, `t`, `true`, `TRUE`,
    /// `True`, `0`, `f`, ...); an empty or unparsable value means the default, continue.
    pub fn from_env_value(value: Option<&str>) -> (Self, Option<String>) {
        let Some(raw) = value.filter(|v| !v.is_empty()) else {
            return (Self::Continue, None);
        };
        match raw {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => (Self::Continue, None),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => (Self::Stop, None),
            other => (
                Self::Continue,
                Some(format!(
                    "{CONTINUE_ENV}={other:?} is not a boolean; continuing on connector failure, the default"
                )),
            ),
        }
    }
}

/// Stands in for a connector that failed to open: every use fails as unavailable, so a
/// login through it, a refresh of a session it started and a token exchange through it all
/// get an error, never an identity.
pub(super) struct FailedConnector {
    pub reason: String,
}

impl FailedConnector {
    fn error(&self) -> ConnectorError {
        ConnectorError::Unavailable(format!("the connector failed to open: {}", self.reason))
    }
}

#[async_trait]
impl PasswordConnector for FailedConnector {
    fn prompt(&self) -> &str {
        "Username"
    }

    async fn begin_login<'a>(
        &'a self,
        _username: &str,
    ) -> Result<Box<dyn PendingPasswordLogin + 'a>, ConnectorError> {
        Err(self.error())
    }
}

#[async_trait]
impl CallbackConnector for FailedConnector {
    async fn login_url(
        &self,
        _scopes: &Scopes,
        _callback_url: &str,
        _state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        Err(self.error())
    }

    async fn handle_callback(
        &self,
        _scopes: &Scopes,
        _callback_url: &str,
        _pending: &[u8],
        _query: &str,
    ) -> Result<Identity, ConnectorError> {
        Err(self.error())
    }
}

#[async_trait]
impl RefreshConnector for FailedConnector {
    async fn refresh(
        &self,
        _scopes: &Scopes,
        _identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        Err(self.error())
    }
}

#[async_trait]
impl TokenIdentityConnector for FailedConnector {
    async fn token_identity(
        &self,
        _scopes: &Scopes,
        _subject_token_type: &str,
        _subject_token: &str,
    ) -> Result<SubjectIdentity, ConnectorError> {
        Err(self.error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_reads_as_go_parses_booleans_and_defaults_to_continue() {
        for v in [
            None,
            Some(""),
            Some("1"),
            Some("true"),
            Some("True"),
            Some("t"),
        ] {
            assert_eq!(
                ConnectorFailures::from_env_value(v).0,
                ConnectorFailures::Continue
            );
        }
        for v in ["0", "false", "FALSE", "f", "F"] {
            assert_eq!(
                ConnectorFailures::from_env_value(Some(v)).0,
                ConnectorFailures::Stop
            );
        }
        let (policy, warning) = ConnectorFailures::from_env_value(Some("yes"));
        assert_eq!(policy, ConnectorFailures::Continue);
        assert!(warning.unwrap().contains("not a boolean"));
    }
}
