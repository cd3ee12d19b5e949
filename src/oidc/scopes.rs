//! Scopes: which lanyard understands, and whether a client may ask for them.

use lanyard_connectors::Scopes as ConnectorScopes;

use super::claims::AUDIENCE_SCOPE_PREFIX;
use super::{scope_supported, ClientInfo, Provider};

pub fn scopes_of(scopes: &[String]) -> ConnectorScopes {
    ConnectorScopes {
        offline_access: scopes.iter().any(|s| s == "offline_access"),
        groups: scopes.iter().any(|s| s == "groups"),
    }
}

impl Provider {
    /// Checks scopes: `openid` required, each one known, peers trusting the client.
    pub(crate) async fn check_scopes_for(
        &self,
        client: &ClientInfo,
        scopes: &[String],
    ) -> Result<(), String> {
        if !scopes.iter().any(|s| s == "openid") {
            return Err("the openid scope is required".into());
        }
        let unknown: Vec<&str> = scopes
            .iter()
            .map(String::as_str)
            .filter(|s| !scope_supported(s))
            .collect();
        if !unknown.is_empty() {
            return Err(format!("unrecognized scope(s): {}", unknown.join(" ")));
        }
        for peer in scopes
            .iter()
            .filter_map(|s| s.strip_prefix(AUDIENCE_SCOPE_PREFIX))
        {
            if peer == client.id {
                continue;
            }
            let trusted = match self.clients.find(peer).await {
                Ok(Some(p)) => p.trusted_peers.iter().any(|t| t == &client.id),
                _ => false,
            };
            if !trusted {
                return Err(format!(
                    "client {peer} does not list this client in its trustedPeers"
                ));
            }
        }
        Ok(())
    }
}
