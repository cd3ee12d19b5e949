//! The kubeconfig page: who you are as each cluster will see you, and how to get there.

use serde::Serialize;

use crate::config::{KubernetesConfig, RbacRole};
use crate::kube::{login_commands, view_for_user, LoginCommands};
use crate::oidc::claims::subject_of;
use crate::storage::UserClaims;

pub use crate::oidc::clients::KUBECONFIG_CLIENT;

/// One cluster as the signed-in user sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub display_name: String,
    pub server: String,
    pub username: String,
    pub groups: Vec<String>,
    /// "cluster-admin (cluster-wide)", "edit in namespace apps", …
    pub bindings: Vec<String>,
    pub commands: LoginCommands,
    /// The legacy auth provider's command carries real tokens (made on request).
    pub has_legacy_tokens: bool,
}

/// The value of `claim` for this user, as the API server would read it from the ID token.
fn claim_value(claims: &UserClaims, connector_id: &str, claim: &str) -> String {
    match claim {
        "email" => claims.email.clone(),
        "sub" => subject_of(&claims.user_id, connector_id),
        "preferred_username" => claims.preferred_username.clone(),
        "name" => claims.username.clone(),
        _ => claims.email.clone(),
    }
}

pub fn cluster_views(
    issuer: &str,
    kube: &KubernetesConfig,
    claims: &UserClaims,
    connector_id: &str,
    secret_for: &dyn Fn(&str) -> Option<String>,
) -> Vec<ClusterView> {
    let issuer_ca = kube.issuer_ca.as_ref().map(|ca| ca.pem.as_str());
    kube.clusters
        .iter()
        .map(|c| {
            let value = claim_value(claims, connector_id, &c.username_claim);
            let (username, groups, bindings) = view_for_user(c, &kube.rbac, &value, &claims.groups);
            let secret = if c.client_secret_for_users {
                secret_for(&c.client_id)
            } else {
                None
            };
            ClusterView {
                name: c.name.clone(),
                display_name: c.display_name.clone(),
                server: c.server.clone(),
                username,
                groups,
                bindings: bindings
                    .iter()
                    .map(|b| match (&b.role, &b.namespace) {
                        (RbacRole::ClusterRole(r), None) => {
                            format!("{r} (cluster-wide), via {}", b.group)
                        }
                        (RbacRole::ClusterRole(r), Some(ns)) | (RbacRole::Role(r), Some(ns)) => {
                            format!("{r} in namespace {ns}, via {}", b.group)
                        }
                        (RbacRole::Role(r), None) => format!("{r}, via {}", b.group),
                    })
                    .collect(),
                commands: login_commands(issuer, issuer_ca, c, secret.as_deref()),
                has_legacy_tokens: false,
            }
        })
        .collect()
}
