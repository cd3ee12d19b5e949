//! RBAC bindings that give upstream groups (a GitHub team, an LDAP group) Kubernetes roles.

use std::collections::HashSet;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::to_yaml;
use crate::config::{KubeCluster, RbacBinding, RbacRole};

const RBAC_API_VERSION: &str = "rbac.authorization.k8s.io/v1";
const RBAC_API_GROUP: &str = "rbac.authorization.k8s.io";
/// The longest DNS-1123 subdomain, the form object names take.
const MAX_NAME: usize = 253;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Binding {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    subjects: Vec<Subject>,
    role_ref: RoleRef,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    labels: Labels,
}

#[derive(Serialize)]
struct Labels {
    #[serde(rename = "app.kubernetes.io/managed-by")]
    managed_by: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Subject {
    kind: &'static str,
    api_group: &'static str,
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoleRef {
    api_group: &'static str,
    kind: &'static str,
    name: String,
}

/// `s` lowercased with every run of characters outside `[a-z0-9.]` turned into one `-`, and
/// each dot-separated label trimmed of `-`, so that the result fits a DNS-1123 subdomain.
fn sanitize(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.split('.')
        .map(|label| label.trim_matches('-'))
        .filter(|label| !label.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..4])
}

/// `base-suffix`, with `base` cut so that the whole fits [`MAX_NAME`] and still ends in a
/// letter or digit.
fn with_suffix(base: &str, suffix: &str) -> String {
    let room = MAX_NAME - suffix.len() - 1;
    let cut = if base.len() > room {
        &base[..room]
    } else {
        base
    };
    let cut = cut.trim_end_matches(['-', '.']);
    format!("{cut}-{suffix}")
}

/// The object name for `binding`: `lanyard-<group>-<role>`, sanitised to a DNS-1123
/// subdomain. Names that had to be shortened get a hash of the binding, so they stay
/// distinct.
pub fn rbac_object_name(binding: &RbacBinding) -> String {
    // Each part is a valid subdomain (or empty) on its own, so joining them with `-` keeps
    // the whole one, and the `lanyard-` at the front survives whatever the group holds.
    let name = [
        "lanyard".to_string(),
        sanitize(&binding.group),
        sanitize(binding.role.name()),
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect::<Vec<_>>()
    .join("-");
    if name.len() <= MAX_NAME {
        return name;
    }
    with_suffix(&name, &binding_hash(binding))
}

fn binding_hash(binding: &RbacBinding) -> String {
    short_hash(&[
        binding.role.kind(),
        binding.namespace.as_deref().unwrap_or(""),
        &binding.group,
        binding.role.name(),
    ])
}

/// The documents for one cluster, in the order of `bindings`.
fn cluster_documents(bindings: &[RbacBinding], cluster: &KubeCluster) -> Vec<String> {
    let mut taken: HashSet<(&'static str, Option<String>, String)> = HashSet::new();
    bindings
        .iter()
        .filter(|b| b.applies_to(&cluster.name))
        .map(|b| {
            let kind = if b.namespace.is_some() {
                "RoleBinding"
            } else {
                "ClusterRoleBinding"
            };
            let mut name = rbac_object_name(b);
            // Two groups can sanitise to one name (`a:b`, `a_b`); the later one is told apart
            // by a hash rather than silently replacing the earlier binding.
            if !taken.insert((kind, b.namespace.clone(), name.clone())) {
                name = with_suffix(&name, &binding_hash(b));
                taken.insert((kind, b.namespace.clone(), name.clone()));
            }
            to_yaml(&Binding {
                api_version: RBAC_API_VERSION,
                kind,
                metadata: Metadata {
                    name,
                    namespace: b.namespace.clone(),
                    labels: Labels {
                        managed_by: "lanyard",
                    },
                },
                subjects: vec![Subject {
                    kind: "Group",
                    api_group: RBAC_API_GROUP,
                    name: format!("{}{}", cluster.groups_prefix, b.group),
                }],
                role_ref: RoleRef {
                    api_group: RBAC_API_GROUP,
                    kind: match b.role {
                        RbacRole::Role(_) => "Role",
                        RbacRole::ClusterRole(_) => "ClusterRole",
                    },
                    name: b.role.name().to_string(),
                },
            })
        })
        .collect()
}

/// Multi-document YAML of `rbac.authorization.k8s.io/v1` ClusterRoleBindings (a cluster
/// role without a namespace) and RoleBindings (with one) for `bindings`, whose subjects are
/// the groups as each cluster sees them (with its `groupsPrefix`).
///
/// When every cluster gets the same documents they appear once. Otherwise (the clusters'
/// prefixes differ, or bindings are limited to some clusters) each cluster gets its own set,
/// every document preceded by a `# cluster: NAME` line: apply each set to its own cluster,
/// or pass one cluster at a time. Empty when no binding applies.
pub fn rbac_manifests(bindings: &[RbacBinding], clusters: &[&KubeCluster]) -> String {
    let sets: Vec<(&KubeCluster, Vec<String>)> = clusters
        .iter()
        .map(|c| (*c, cluster_documents(bindings, c)))
        .collect();
    let uniform = sets.windows(2).all(|w| w[0].1 == w[1].1);
    let docs: Vec<String> = if uniform {
        sets.into_iter().next().map(|(_, d)| d).unwrap_or_default()
    } else {
        sets.into_iter()
            .flat_map(|(c, docs)| {
                docs.into_iter()
                    .map(move |d| format!("# cluster: {}\n{d}", c.name))
            })
            .collect()
    };
    docs.join("---\n")
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_yaml_ng::Value;

    use super::*;
    use crate::kube::test_support::{binding, cluster};

    fn documents(text: &str) -> Vec<Value> {
        serde_yaml_ng::Deserializer::from_str(text)
            .map(|d| Value::deserialize(d).unwrap())
            .collect()
    }

    fn example_bindings() -> Vec<RbacBinding> {
        vec![
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
                &[],
            ),
            binding(
                "acme:software-engineering",
                RbacRole::Role("deployer".into()),
                Some("apps"),
                &[],
            ),
        ]
    }

    #[test]
    fn cluster_roles_bind_cluster_wide_and_namespaced_roles_bind_in_their_namespace() {
        let prod = cluster("prod", "kube");
        let text = rbac_manifests(&example_bindings(), &[&prod]);
        assert!(!text.contains("# cluster:"));
        let docs = documents(&text);
        assert_eq!(docs.len(), 3);

        let admin = &docs[0];
        assert_eq!(admin["apiVersion"], "rbac.authorization.k8s.io/v1");
        assert_eq!(admin["kind"], "ClusterRoleBinding");
        assert_eq!(
            admin["metadata"]["name"],
            "lanyard-acme-platform-cluster-admin"
        );
        assert!(admin["metadata"].get("namespace").is_none());
        assert_eq!(
            admin["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "lanyard"
        );
        assert_eq!(admin["roleRef"]["kind"], "ClusterRole");
        assert_eq!(admin["roleRef"]["name"], "cluster-admin");
        assert_eq!(admin["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
        let subject = &admin["subjects"][0];
        assert_eq!(subject["kind"], "Group");
        assert_eq!(subject["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(subject["name"], "oidc:acme:platform");

        let edit = &docs[1];
        assert_eq!(edit["kind"], "RoleBinding");
        assert_eq!(edit["metadata"]["namespace"], "apps");
        assert_eq!(
            edit["metadata"]["name"],
            "lanyard-acme-software-engineering-edit"
        );
        assert_eq!(edit["roleRef"]["kind"], "ClusterRole");

        let deployer = &docs[2];
        assert_eq!(deployer["kind"], "RoleBinding");
        assert_eq!(deployer["roleRef"]["kind"], "Role");
        assert_eq!(deployer["roleRef"]["name"], "deployer");
    }

    #[test]
    fn identical_clusters_share_one_set_and_differing_prefixes_split_per_cluster() {
        let prod = cluster("prod", "kube");
        let staging = cluster("staging", "kube-staging");
        let same = rbac_manifests(&example_bindings(), &[&prod, &staging]);
        assert_eq!(documents(&same).len(), 3);
        assert!(!same.contains("# cluster:"));

        let mut gh = cluster("gh", "kube-gh");
        gh.groups_prefix = "github:".to_string();
        let split = rbac_manifests(&example_bindings(), &[&prod, &gh]);
        let docs = documents(&split);
        assert_eq!(docs.len(), 6);
        assert_eq!(docs[0]["subjects"][0]["name"], "oidc:acme:platform");
        assert_eq!(docs[3]["subjects"][0]["name"], "github:acme:platform");
        let comments: Vec<&str> = split
            .lines()
            .filter(|l| l.starts_with("# cluster: "))
            .collect();
        assert_eq!(comments.len(), 6);
        assert_eq!(comments[0], "# cluster: prod");
        assert_eq!(comments[3], "# cluster: gh");
    }

    #[test]
    fn bindings_limited_to_some_clusters_appear_only_there() {
        let prod = cluster("prod", "kube");
        let staging = cluster("staging", "kube-staging");
        let bindings = vec![
            binding(
                "acme:platform",
                RbacRole::ClusterRole("cluster-admin".into()),
                None,
                &[],
            ),
            binding(
                "acme:sre",
                RbacRole::ClusterRole("view".into()),
                None,
                &["staging"],
            ),
        ];
        assert_eq!(documents(&rbac_manifests(&bindings, &[&prod])).len(), 1);
        let staging_only = rbac_manifests(&bindings, &[&staging]);
        assert_eq!(documents(&staging_only).len(), 2);
        let both = rbac_manifests(&bindings, &[&prod, &staging]);
        assert!(both.starts_with("# cluster: prod\n"));
        assert_eq!(documents(&both).len(), 3);
        assert!(rbac_manifests(&[], &[&prod]).is_empty());
    }

    fn is_dns_subdomain(s: &str) -> bool {
        s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    #[test]
    fn names_are_dns_1123_subdomains() {
        let long = "x".repeat(400);
        for group in [
            "acme:platform",
            "Acme Corp/Platform Team",
            "cn=admins,ou=groups,dc=example,dc=org",
            "-.weird..group-.",
            "Ärzte",
            long.as_str(),
        ] {
            let b = binding(
                group,
                RbacRole::ClusterRole("system:aggregate-to-edit".into()),
                None,
                &[],
            );
            let name = rbac_object_name(&b);
            assert!(is_dns_subdomain(&name), "{group:?} -> {name:?}");
            assert!(name.starts_with("lanyard-"), "{name}");
        }
        let b = binding(
            "Acme Corp/Platform Team",
            RbacRole::ClusterRole("edit".into()),
            None,
            &[],
        );
        assert_eq!(rbac_object_name(&b), "lanyard-acme-corp-platform-team-edit");
    }

    #[test]
    fn groups_that_sanitise_alike_get_distinct_names() {
        let prod = cluster("prod", "kube");
        let bindings = vec![
            binding("acme:ops", RbacRole::ClusterRole("view".into()), None, &[]),
            binding("acme_ops", RbacRole::ClusterRole("view".into()), None, &[]),
        ];
        let docs = documents(&rbac_manifests(&bindings, &[&prod]));
        let a = docs[0]["metadata"]["name"].as_str().unwrap();
        let b = docs[1]["metadata"]["name"].as_str().unwrap();
        assert_eq!(a, "lanyard-acme-ops-view");
        assert_ne!(a, b);
        assert!(is_dns_subdomain(b), "{b}");
        assert_eq!(docs[1]["subjects"][0]["name"], "oidc:acme_ops");
    }
}
