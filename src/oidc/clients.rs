//! Client lookup: `staticClients` from the config first, then clients created through the
//! admin CLI (stored). Secrets are held only as SHA-256 digests and compared in constant time.

use std::collections::HashMap;

use crate::config::GrantType;
use crate::storage::{self, SharedStorage};

use super::secrets::{constant_time_eq, sha256_hex};

/// The internal client lanyard's kubeconfig page signs people in with (public, PKCE, never
/// shown an approval page: the user asked for lanyard's own page).
pub const KUBECONFIG_CLIENT: &str = "lanyard-kubeconfig";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    pub id: String,
    pub secret_sha256: Option<String>,
    pub redirect_uris: Vec<String>,
    pub public: bool,
    pub name: String,
    pub logo_url: Option<String>,
    pub trusted_peers: Vec<String>,
    pub grant_types: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allowed_connectors: Vec<String>,
}

impl ClientInfo {
    /// Whether `secret` is this client's secret. Public clients have none to check.
    pub fn secret_matches(&self, secret: &str) -> bool {
        match &self.secret_sha256 {
            Some(expected) => constant_time_eq(&sha256_hex(secret), expected),
            None => false,
        }
    }

    /// Whether this client may use `grant`. An empty list allows every grant but
    /// client_credentials, which hands out tokens without a user: only for clients that ask
    /// for it by name, and only with a secret.
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        let listed = self.grant_types.iter().any(|g| g == grant.as_str());
        match grant {
            GrantType::ClientCredentials => listed && !self.public,
            _ => self.grant_types.is_empty() || listed,
        }
    }

    /// The name shown on the approval page.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.id
        } else {
            &self.name
        }
    }
}

impl From<storage::Client> for ClientInfo {
    fn from(c: storage::Client) -> Self {
        Self {
            id: c.id,
            secret_sha256: c.secret_sha256,
            redirect_uris: c.redirect_uris,
            public: c.public,
            name: c.name,
            logo_url: c.logo_url,
            trusted_peers: c.trusted_peers,
            grant_types: c.grant_types,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            allowed_connectors: c.allowed_connectors,
        }
    }
}

pub struct ClientRegistry {
    static_clients: HashMap<String, ClientInfo>,
    storage: SharedStorage,
}

impl ClientRegistry {
    pub fn new(static_clients: Vec<ClientInfo>, storage: SharedStorage) -> Self {
        Self {
            static_clients: static_clients
                .into_iter()
                .map(|c| (c.id.clone(), c))
                .collect(),
            storage,
        }
    }

    pub async fn find(&self, id: &str) -> storage::Result<Option<ClientInfo>> {
        if let Some(c) = self.static_clients.get(id) {
            return Ok(Some(c.clone()));
        }
        Ok(self.storage.get_client(id).await?.map(ClientInfo::from))
    }
}
