//! What a Kubernetes cluster needs from lanyard, rendered from the config's `kubernetes:`
//! section: kubeconfigs, kube-apiserver flags and AuthenticationConfiguration, RBAC bindings
//! for upstream groups, and the commands the kubeconfig page shows. Pure functions: no I/O,
//! so the CLI, the web page and tests all get the same text.

mod apiserver;
mod kubeconfig;
mod rbac;
mod shell;

use crate::config::{KubeCluster, KubernetesConfig, RbacBinding};

pub use apiserver::{
    apiserver_flags, authentication_configuration, validate_authentication_configuration,
    AuthnConfigVersion, APISERVER_CA_FILE,
};
pub use kubeconfig::{kubeconfig, kubeconfig_user_name};
pub use rbac::{rbac_manifests, rbac_object_name};
pub use shell::{login_commands, posix_quote, powershell_quote, LoginCommands, ShellSnippets};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KubeError {
    #[error("no Kubernetes clusters are configured (add `kubernetes.clusters` to the config)")]
    NoClusters,
    #[error("no cluster is named `{name}`; configured clusters: {known}")]
    UnknownCluster { name: String, known: String },
    /// kube-apiserver allows one `jwt` entry per issuer URL, so every cluster in one
    /// AuthenticationConfiguration must map claims the same way.
    #[error(
        "clusters {} map claims differently (usernameClaim, usernamePrefix, groupsClaim, groupsPrefix), but kube-apiserver allows one jwt entry per issuer; render one cluster at a time (--cluster NAME)",
        .clusters.join(", ")
    )]
    ConflictingClaimMappings { clusters: Vec<String> },
    #[error("the AuthenticationConfiguration would be refused by kube-apiserver: {}", .0.join("; "))]
    InvalidAuthenticationConfiguration(Vec<String>),
}

/// The clusters a command works on: the one named, or all of them. Errors when none are
/// configured or the name is unknown (listing the names).
pub fn select_clusters<'a>(
    kubernetes: &'a KubernetesConfig,
    name: Option<&str>,
) -> Result<Vec<&'a KubeCluster>, KubeError> {
    if kubernetes.clusters.is_empty() {
        return Err(KubeError::NoClusters);
    }
    match name {
        None => Ok(kubernetes.clusters.iter().collect()),
        Some(name) => {
            kubernetes
                .cluster(name)
                .map(|c| vec![c])
                .ok_or_else(|| KubeError::UnknownCluster {
                    name: name.to_string(),
                    known: kubernetes.cluster_names().join(", "),
                })
        }
    }
}

/// Who a person is to `cluster`, as kube-apiserver will see them: the username and groups
/// with the cluster's prefixes, and the configured bindings that apply to them there.
/// `username_claim_value` is the value of the cluster's username claim in the ID token;
/// `groups` are the token's groups as the upstream names them.
pub fn view_for_user<'a>(
    cluster: &KubeCluster,
    rbac: &'a [RbacBinding],
    username_claim_value: &str,
    groups: &[String],
) -> (String, Vec<String>, Vec<&'a RbacBinding>) {
    let username = format!("{}{}", cluster.username_prefix, username_claim_value);
    let prefixed = groups
        .iter()
        .map(|g| format!("{}{}", cluster.groups_prefix, g))
        .collect();
    let bindings = rbac
        .iter()
        .filter(|b| b.applies_to(&cluster.name) && groups.contains(&b.group))
        .collect();
    (username, prefixed, bindings)
}

/// Serialising these plain structs (string keys, no maps with complex keys) cannot fail; a
/// YAML comment instead of a panic keeps the output a valid, if empty, document regardless.
fn to_yaml<T: serde::Serialize>(value: &T) -> String {
    let mut text = serde_yaml_ng::to_string(value)
        .unwrap_or_else(|e| format!("# lanyard could not render this document: {e}\n"));
    // The emitter leaves a trailing flow mapping (`preferences: {}`) without a newline;
    // documents are concatenated and printed, so each must end its last line.
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::config::{KubeCluster, RbacBinding, RbacRole};

    /// A syntactically real certificate (DER SEQUENCE) for rendering tests.
    pub fn test_ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["kube.example.com".to_string()])
            .unwrap()
            .cert
            .pem()
    }

    pub fn cluster(name: &str, client_id: &str) -> KubeCluster {
        KubeCluster {
            name: name.to_string(),
            display_name: format!("{name} cluster"),
            server: format!("https://{name}.k8s.example.com:6443"),
            certificate_authority_pem: crate::config::normalize_pem_certificates(&test_ca_pem())
                .unwrap(),
            client_id: client_id.to_string(),
            namespace: "default".to_string(),
            context_name: name.to_string(),
            username_claim: "email".to_string(),
            username_prefix: "oidc:".to_string(),
            groups_claim: "groups".to_string(),
            groups_prefix: "oidc:".to_string(),
            client_secret_for_users: false,
        }
    }

    pub fn binding(
        group: &str,
        role: RbacRole,
        ns: Option<&str>,
        clusters: &[&str],
    ) -> RbacBinding {
        RbacBinding {
            group: group.to_string(),
            role,
            namespace: ns.map(str::to_string),
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::config::RbacRole;

    #[test]
    fn select_clusters_picks_by_name_and_lists_names_when_unknown() {
        let k = KubernetesConfig {
            clusters: vec![cluster("prod", "kube"), cluster("staging", "kube-staging")],
            rbac: vec![],
            issuer_ca: None,
        };
        assert_eq!(select_clusters(&k, None).unwrap().len(), 2);
        assert_eq!(
            select_clusters(&k, Some("staging")).unwrap()[0].name,
            "staging"
        );
        let err = select_clusters(&k, Some("dev")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no cluster is named `dev`; configured clusters: prod, staging"
        );
        assert_eq!(
            select_clusters(&KubernetesConfig::default(), None).unwrap_err(),
            KubeError::NoClusters
        );
    }

    #[test]
    fn view_for_user_prefixes_names_and_finds_bindings_for_this_cluster_only() {
        let mut prod = cluster("prod", "kube");
        prod.groups_prefix = "gh:".to_string();
        let rbac = vec![
            binding(
                "acme:platform",
                RbacRole::ClusterRole("cluster-admin".into()),
                None,
                &[],
            ),
            binding(
                "acme:software-engineering",
                RbacRole::ClusterRole("edit".into()),
                Some("apps"),
                &["prod"],
            ),
            binding(
                "acme:sre",
                RbacRole::ClusterRole("view".into()),
                None,
                &["staging"],
            ),
            binding(
                "acme:other",
                RbacRole::ClusterRole("view".into()),
                None,
                &[],
            ),
        ];
        let groups = vec![
            "acme:platform".to_string(),
            "acme:software-engineering".to_string(),
            "acme:sre".to_string(),
        ];
        let (user, prefixed, bindings) = view_for_user(&prod, &rbac, "jane@example.com", &groups);
        assert_eq!(user, "oidc:jane@example.com");
        assert_eq!(
            prefixed,
            vec![
                "gh:acme:platform",
                "gh:acme:software-engineering",
                "gh:acme:sre"
            ]
        );
        let roles: Vec<&str> = bindings.iter().map(|b| b.role.name()).collect();
        assert_eq!(roles, vec!["cluster-admin", "edit"]);
    }
}
