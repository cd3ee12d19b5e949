//! Google (Workspace and personal accounts) as an upstream (`type: google`): sign-in through
//! Google's OpenID Connect provider, verified by the `oidc` connector's code, and groups from
//! the Admin SDK Directory API read by a service account.
//!
//! Behaviour follows Dex's Google connector: the same settings, `user_id` = the ID token's
//! `sub`, the hosted domain checked on its `hd` claim, groups as their email addresses. One
//! difference, a refusal: Dex checks `groups` only when the client asks for the groups scope;
//! lanyard checks it on every login and refresh.

mod config;
mod directory;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::oidc::{Now, OidcConfig, OidcConnector};
use crate::upstream::api::{self, REQUEST_TIMEOUT};
use crate::{
    CallbackConnector, ConfigIssue, ConnectorError, Identity, RefreshConnector, Scopes,
    UpstreamRedirect,
};
use directory::Directory;

pub use config::{GoogleConfig, ANY_DOMAIN, GOOGLE_DIRECTORY_URL, GOOGLE_ISSUER};

pub struct GoogleConnector {
    oidc: OidcConnector,
    hosted_domains: Vec<String>,
    groups: Vec<String>,
    directory: Option<Directory>,
}

impl std::fmt::Debug for GoogleConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleConnector")
            .field("oidc", &self.oidc)
            .field("hosted_domains", &self.hosted_domains)
            .finish_non_exhaustive()
    }
}

/// Why the claims make no identity.
enum Refusal {
    Denied(String),
    Failed(ConnectorError),
}

impl GoogleConnector {
    /// Checks the settings and reads the service account key; contacts nobody.
    pub fn new(id: &str, config: &GoogleConfig, now: Now) -> Result<Self, ConnectorError> {
        Self::with_timeout(id, config, now, REQUEST_TIMEOUT)
    }

    /// Like [`new`](Self::new) with another timeout for Directory API calls.
    pub fn with_timeout(
        id: &str,
        config: &GoogleConfig,
        now: Now,
        timeout: Duration,
    ) -> Result<Self, ConnectorError> {
        ConfigIssue::refuse(config.validate())?;
        let oidc_config = OidcConfig {
            issuer: config.issuer().to_string(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            redirect_uri: config.redirect_uri.clone(),
            scopes: config.scopes.clone(),
            prompt_type: Some(
                config
                    .prompt_type
                    .clone()
                    .unwrap_or_else(|| "consent".into()),
            ),
            root_cas: config.root_cas.clone(),
            ..Default::default()
        };
        // Dex's hint to Google's account chooser: the one domain, or any Workspace domain.
        let hint = match config.hosted_domains.as_slice() {
            [] => Vec::new(),
            [one] => vec![("hd".to_string(), one.clone())],
            _ => vec![("hd".to_string(), "*".to_string())],
        };
        let oidc = OidcConnector::new(id, oidc_config, now.clone())?.with_auth_params(hint);
        let directory = if config.reads_groups() {
            Some(Directory::open(
                &config.service_account_file_path,
                config.directory_url(),
                config.admin_emails(),
                config.fetch_transitive_group_membership,
                api::client(&config.root_cas, timeout)?,
                timeout,
                now,
            )?)
        } else {
            None
        };
        Ok(Self {
            oidc,
            hosted_domains: config.hosted_domains.clone(),
            groups: config.groups.clone(),
            directory,
        })
    }

    pub fn id(&self) -> &str {
        self.oidc.id()
    }

    /// Fetches Google's discovery document and keys, unless that already worked.
    pub async fn discover(&self) -> Result<(), ConnectorError> {
        self.oidc.discover().await
    }

    /// The identity the verified claims describe, under the connector's rules.
    async fn identity(
        &self,
        scopes: &Scopes,
        claims: &Map<String, Value>,
        refresh_token: Option<String>,
    ) -> Result<Identity, Refusal> {
        let text = |key: &str| {
            claims
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let sub = text("sub");
        if sub.is_empty() {
            return Err(Refusal::Failed(ConnectorError::BadCallback(
                "Google's ID token has no subject".into(),
            )));
        }
        let email = text("email");
        if !self.hosted_domains.is_empty() {
            let hd = text("hd");
            if !self.hosted_domains.contains(&hd) {
                return Err(Refusal::Denied(if hd.is_empty() {
                    format!(
                        "`{email}` is not a Google Workspace account of {}",
                        self.hosted_domains.join(", ")
                    )
                } else {
                    format!(
                        "the Google Workspace domain `{hd}` is not one of {}",
                        self.hosted_domains.join(", ")
                    )
                }));
            }
        }
        let mut groups = Vec::new();
        if let Some(directory) = &self.directory {
            if scopes.groups || !self.groups.is_empty() {
                groups = directory
                    .groups_of(&email)
                    .await
                    .map_err(|e| Refusal::Failed(e.into_connector_error()))?;
            }
            if !self.groups.is_empty() {
                groups.retain(|g| self.groups.contains(g));
                if groups.is_empty() {
                    return Err(Refusal::Denied(format!(
                        "`{email}` is in none of the groups allowed to sign in ({})",
                        self.groups.join(", ")
                    )));
                }
            }
        }
        Ok(Identity {
            user_id: sub,
            username: text("name"),
            preferred_username: String::new(),
            email,
            email_verified: claims
                .get("email_verified")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            groups,
            // Dex's form: the refresh token itself.
            connector_data: refresh_token.map(String::into_bytes),
        })
    }
}

#[async_trait]
impl CallbackConnector for GoogleConnector {
    async fn login_url(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        state: &str,
    ) -> Result<UpstreamRedirect, ConnectorError> {
        self.oidc.login_url(scopes, callback_url, state).await
    }

    async fn handle_callback(
        &self,
        scopes: &Scopes,
        callback_url: &str,
        pending: &[u8],
        query: &str,
    ) -> Result<Identity, ConnectorError> {
        let (claims, refresh_token) = self
            .oidc
            .callback_claims(callback_url, pending, query)
            .await?;
        self.identity(scopes, &claims, refresh_token)
            .await
            .map_err(|r| match r {
                Refusal::Denied(reason) => ConnectorError::AccessDenied(reason),
                Refusal::Failed(e) => e,
            })
    }
}

#[async_trait]
impl RefreshConnector for GoogleConnector {
    /// Redeems the kept refresh token for a new ID token and reads groups again; the subject
    /// must stay the same, and a user no longer in the hosted domain or an allowed group ends
    /// the session.
    async fn refresh(
        &self,
        scopes: &Scopes,
        identity: &Identity,
    ) -> Result<Identity, ConnectorError> {
        let refresh_token = identity
            .connector_data
            .as_deref()
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ConnectorError::SessionEnded(
                    "no Google refresh token is stored with this session".into(),
                )
            })?;
        let (claims, kept) = self.oidc.refresh_claims(refresh_token).await?;
        if claims.get("sub").and_then(Value::as_str) != Some(identity.user_id.as_str()) {
            return Err(ConnectorError::SessionEnded(
                "Google refreshed the session of another subject".into(),
            ));
        }
        self.identity(scopes, &claims, Some(kept))
            .await
            .map_err(|r| match r {
                Refusal::Denied(reason) => ConnectorError::SessionEnded(reason),
                Refusal::Failed(e) => e,
            })
    }
}
