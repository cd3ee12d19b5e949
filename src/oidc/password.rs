//! Checking a username and password through a connector: the one path that lanyard's login
//! form and the password grant (RFC 6749 §4.3) share, so both draw on the same guessing
//! budget per account and per client address and hide the same things by timing.

use std::sync::Arc;

use lanyard_connectors::{ConnectorError, Identity, PasswordConnector, Scopes};

use crate::storage::StorageError;

use super::ratelimit::{PasswordAttempt, Retry};
use super::Provider;

/// What a password check decided.
#[derive(Debug)]
pub enum PasswordCheck {
    Accepted(Identity),
    /// Wrong username or password (indistinguishable by design).
    Rejected,
    /// Too many failures for this account or address; nothing was checked.
    RateLimited(Retry),
}

/// A password check that could not decide.
#[derive(Debug, thiserror::Error)]
pub enum PasswordCheckError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Provider {
    /// Checks `password` for `username` at connector `connector_id`. `client_addr` is the
    /// address the per-address budget counts against. Counts the outcome in the login
    /// metrics (connector errors are counted by the caller, which decides what they mean).
    pub(crate) async fn check_password(
        &self,
        connector_id: &str,
        connector: &Arc<dyn PasswordConnector>,
        scopes: &Scopes,
        username: &str,
        password: &str,
        client_addr: &str,
    ) -> Result<PasswordCheck, PasswordCheckError> {
        // The connector resolves the name first (no password checked), so that the budget is
        // per account however it was named; then the attempt counts, per account and per
        // address, before any hashing is spent.
        let pending = connector.begin_login(username).await?;
        let account_key = format!("acct:{connector_id}:{}", pending.account_key());
        let attempt = match PasswordAttempt::reserve(
            &self.login_limiter,
            &self.storage,
            account_key,
            format!("addr:{client_addr}"),
            self.now(),
        )
        .await?
        {
            Ok(attempt) => attempt,
            Err(retry) => {
                pending.abandon().await;
                self.metrics.record_login(connector_id, "rate_limited");
                return Ok(PasswordCheck::RateLimited(retry));
            }
        };
        match pending.check(scopes, password).await {
            Ok(Some(identity)) => {
                attempt.succeeded(&self.login_limiter, &self.storage);
                self.metrics.record_login(connector_id, "success");
                Ok(PasswordCheck::Accepted(identity))
            }
            Ok(None) => {
                self.metrics.record_login(connector_id, "failure");
                Ok(PasswordCheck::Rejected)
            }
            Err(err) => {
                attempt
                    .not_checked(&self.login_limiter, &self.storage)
                    .await;
                Err(err.into())
            }
        }
    }
}
