//! Scopes: which lanyard understands, and whether a client may ask for them.

use std::fmt;
use std::ops::Deref;

use lanyard_connectors::Scopes as ConnectorScopes;

use super::claims::AUDIENCE_SCOPE_PREFIX;
use super::{ClientInfo, Provider};

pub const OPENID: &str = "openid";
pub const OFFLINE_ACCESS: &str = "offline_access";
pub const GROUPS: &str = "groups";

/// Scopes lanyard understands at /auth. `audience:server:client_id:` is a prefix.
pub const SUPPORTED_SCOPES: &[&str] = &[
    OPENID,
    "email",
    "profile",
    GROUPS,
    OFFLINE_ACCESS,
    "federated:id",
];

/// Whether /auth (and client_credentials) accept a scope.
pub fn scope_supported(scope: &str) -> bool {
    SUPPORTED_SCOPES.contains(&scope)
        || scope
            .strip_prefix(AUDIENCE_SCOPE_PREFIX)
            .is_some_and(|peer| !peer.is_empty())
}

/// A `scope` parameter (RFC 6749 §3.3): space-separated, in the order given, empty parts
/// dropped. Reads as a slice of scopes; displays joined by spaces, as the parameter travels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(Vec<String>);

impl Scopes {
    pub fn parse(raw: &str) -> Self {
        Self(
            raw.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn contains(&self, scope: &str) -> bool {
        has(&self.0, scope)
    }

    /// Adds `scope` in front unless it is there already.
    pub fn require(&mut self, scope: &str) {
        if !self.contains(scope) {
            self.0.insert(0, scope.to_string());
        }
    }

    pub fn into_vec(self) -> Vec<String> {
        self.0
    }
}

impl Deref for Scopes {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl From<Vec<String>> for Scopes {
    fn from(scopes: Vec<String>) -> Self {
        Self(scopes)
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

/// Whether a list of scopes (a parsed request's or a stored grant's) holds `scope`.
pub fn has(scopes: &[String], scope: &str) -> bool {
    scopes.iter().any(|s| s == scope)
}

/// What a connector needs to know of the scopes: whether to fetch groups, whether the login
/// must be refreshable.
pub fn connector_scopes(scopes: &[String]) -> ConnectorScopes {
    ConnectorScopes {
        offline_access: has(scopes, OFFLINE_ACCESS),
        groups: has(scopes, GROUPS),
    }
}

impl Provider {
    /// Checks scopes: `openid` required, each one known, peers trusting the client.
    pub(crate) async fn check_scopes_for(
        &self,
        client: &ClientInfo,
        scopes: &[String],
    ) -> Result<(), String> {
        if !has(scopes, OPENID) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_spaces_keep_order_and_join_back() {
        let mut scopes = Scopes::parse(" email  groups ");
        assert_eq!(&*scopes, ["email", "groups"]);
        assert!(scopes.contains(GROUPS) && !scopes.contains(OPENID));
        scopes.require(OPENID);
        scopes.require(OPENID);
        assert_eq!(scopes.to_string(), "openid email groups");
        assert!(Scopes::parse("").is_empty());
    }
}
