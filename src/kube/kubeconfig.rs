//! A kubeconfig whose users log in through `lanyard login` (kubectl's exec credential plugin).

use base64::Engine as _;
use serde::Serialize;

use super::to_yaml;
use crate::config::KubeCluster;

/// The exec plugin API every supported kubectl speaks (`v1beta1` is older, not safer).
pub(crate) const EXEC_API_VERSION: &str = "client.authentication.k8s.io/v1";

/// kubectl's "install this first" message when `lanyard` is not on PATH.
const INSTALL_HINT: &str = "This kubeconfig logs in with `lanyard login`; install the lanyard binary and put it on your PATH.";

#[derive(Serialize)]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<NamedCluster>,
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context")]
    current_context: String,
    users: Vec<NamedUser>,
    preferences: serde_yaml_ng::Mapping,
}

#[derive(Serialize)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Serialize)]
struct ClusterEntry {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Serialize)]
struct ContextEntry {
    cluster: String,
    user: String,
    namespace: String,
}

#[derive(Serialize)]
struct NamedUser {
    name: String,
    user: UserEntry,
}

#[derive(Serialize)]
struct UserEntry {
    exec: ExecConfig,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExecConfig {
    api_version: &'static str,
    command: &'static str,
    args: Vec<String>,
    install_hint: &'static str,
    interactive_mode: &'static str,
    provide_cluster_info: bool,
}

/// The kubeconfig user entry for `cluster` (`lanyard-<name>`), so that a kubeconfig merged
/// with others keeps one user per cluster.
pub fn kubeconfig_user_name(cluster: &KubeCluster) -> String {
    format!("lanyard-{}", cluster.name)
}

/// base64 of PEM, as kubeconfigs, kubelogin and kubectl's oidc auth provider take CAs inline.
pub(crate) fn pem_data(pem: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem.as_bytes())
}

/// The arguments of `lanyard login` for `cluster`: the issuer's private CA inline when there
/// is one (the kubeconfig must work on any machine, where no file of lanyard's host exists);
/// the client secret only when the operator marked the cluster's client as handing its
/// secret to users.
pub(crate) fn login_args(
    issuer: &str,
    issuer_ca_pem: Option<&str>,
    cluster: &KubeCluster,
    secret: Option<&str>,
) -> Vec<String> {
    let mut args = vec![
        "login".to_string(),
        "--issuer".to_string(),
        issuer.to_string(),
        "--client-id".to_string(),
        cluster.client_id.clone(),
    ];
    if let Some(pem) = issuer_ca_pem {
        args.push("--certificate-authority-data".to_string());
        args.push(pem_data(pem));
    }
    if let Some(secret) = secret.filter(|_| cluster.client_secret_for_users) {
        args.push("--client-secret".to_string());
        args.push(secret.to_string());
    }
    args
}

/// A kubeconfig for `clusters`: each cluster's CA embedded (never
/// `insecure-skip-tls-verify`), one context per cluster (`contextName`, default namespace
/// `namespace`), and one user per cluster that runs `lanyard login` as kubectl's exec
/// credential plugin. `secrets` gives a client's secret by client id; it is asked only for
/// clusters with `clientSecretForUsers`. `issuer_ca_pem` is the CA of the issuer's TLS
/// certificate when it is private. The current context is the first cluster's.
pub fn kubeconfig(
    issuer: &str,
    issuer_ca_pem: Option<&str>,
    clusters: &[&KubeCluster],
    secrets: &dyn Fn(&str) -> Option<String>,
) -> String {
    let doc = Kubeconfig {
        api_version: "v1",
        kind: "Config",
        clusters: clusters
            .iter()
            .map(|c| NamedCluster {
                name: c.name.clone(),
                cluster: ClusterEntry {
                    server: c.server.clone(),
                    certificate_authority_data: pem_data(&c.certificate_authority_pem),
                },
            })
            .collect(),
        contexts: clusters
            .iter()
            .map(|c| NamedContext {
                name: c.context_name.clone(),
                context: ContextEntry {
                    cluster: c.name.clone(),
                    user: kubeconfig_user_name(c),
                    namespace: c.namespace.clone(),
                },
            })
            .collect(),
        current_context: clusters
            .first()
            .map(|c| c.context_name.clone())
            .unwrap_or_default(),
        users: clusters
            .iter()
            .map(|c| {
                let secret = if c.client_secret_for_users {
                    secrets(&c.client_id)
                } else {
                    None
                };
                NamedUser {
                    name: kubeconfig_user_name(c),
                    user: UserEntry {
                        exec: ExecConfig {
                            api_version: EXEC_API_VERSION,
                            command: "lanyard",
                            args: login_args(issuer, issuer_ca_pem, c, secret.as_deref()),
                            install_hint: INSTALL_HINT,
                            interactive_mode: "IfAvailable",
                            provide_cluster_info: false,
                        },
                    },
                }
            })
            .collect(),
        preferences: serde_yaml_ng::Mapping::new(),
    };
    to_yaml(&doc)
}

#[cfg(test)]
mod tests {
    use serde_yaml_ng::Value;

    use super::*;
    use crate::kube::test_support::cluster;

    const ISSUER: &str = "https://login.example.com/dex";

    fn render(clusters: &[&KubeCluster]) -> Value {
        let text = kubeconfig(ISSUER, None, clusters, &|id| {
            Some(format!("secret-of-{id}"))
        });
        serde_yaml_ng::from_str(&text).unwrap()
    }

    fn strs(v: &Value) -> Vec<&str> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect()
    }

    #[test]
    fn every_cluster_gets_its_ca_embedded_and_never_skips_tls_verification() {
        let prod = cluster("prod", "kube");
        let staging = cluster("staging", "kube-staging");
        let doc = render(&[&prod, &staging]);
        assert_eq!(doc["apiVersion"], "v1");
        assert_eq!(doc["kind"], "Config");
        let clusters = doc["clusters"].as_sequence().unwrap();
        assert_eq!(clusters.len(), 2);
        for (entry, c) in clusters.iter().zip([&prod, &staging]) {
            assert_eq!(entry["name"].as_str(), Some(c.name.as_str()));
            assert_eq!(entry["cluster"]["server"].as_str(), Some(c.server.as_str()));
            let data = entry["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap();
            let pem = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap();
            assert_eq!(String::from_utf8(pem).unwrap(), c.certificate_authority_pem);
            assert!(entry["cluster"].get("insecure-skip-tls-verify").is_none());
        }
    }

    #[test]
    fn contexts_use_context_name_and_namespace_and_the_first_is_current() {
        let mut prod = cluster("prod", "kube");
        prod.context_name = "acme-prod".to_string();
        prod.namespace = "apps".to_string();
        let staging = cluster("staging", "kube-staging");
        let doc = render(&[&prod, &staging]);
        let contexts = doc["contexts"].as_sequence().unwrap();
        assert_eq!(contexts[0]["name"], "acme-prod");
        assert_eq!(contexts[0]["context"]["cluster"], "prod");
        assert_eq!(contexts[0]["context"]["user"], "lanyard-prod");
        assert_eq!(contexts[0]["context"]["namespace"], "apps");
        assert_eq!(contexts[1]["name"], "staging");
        assert_eq!(contexts[1]["context"]["namespace"], "default");
        assert_eq!(doc["current-context"], "acme-prod");
    }

    #[test]
    fn users_run_lanyard_login_as_an_interactive_exec_plugin() {
        let prod = cluster("prod", "kube");
        let doc = render(&[&prod]);
        let user = &doc["users"][0];
        assert_eq!(user["name"], "lanyard-prod");
        let exec = &user["user"]["exec"];
        assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
        assert_eq!(exec["command"], "lanyard");
        assert_eq!(
            strs(&exec["args"]),
            vec!["login", "--issuer", ISSUER, "--client-id", "kube"]
        );
        assert_eq!(exec["interactiveMode"], "IfAvailable");
        assert_eq!(exec["provideClusterInfo"], false);
    }

    #[test]
    fn a_private_issuer_ca_goes_into_every_users_login_arguments_as_base64_pem() {
        let prod = cluster("prod", "kube");
        let mut staging = cluster("staging", "kube-staging");
        staging.client_secret_for_users = true;
        let ca = crate::kube::test_support::test_ca_pem();
        let text = kubeconfig(ISSUER, Some(&ca), &[&prod, &staging], &|_| {
            Some("s".to_string())
        });
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        let data = base64::engine::general_purpose::STANDARD.encode(&ca);
        assert_eq!(
            strs(&doc["users"][0]["user"]["exec"]["args"]),
            vec![
                "login",
                "--issuer",
                ISSUER,
                "--client-id",
                "kube",
                "--certificate-authority-data",
                &data
            ]
        );
        assert_eq!(
            strs(&doc["users"][1]["user"]["exec"]["args"])[5..],
            [
                "--certificate-authority-data",
                &data,
                "--client-secret",
                "s"
            ]
        );
    }

    #[test]
    fn client_secret_is_included_only_for_clusters_that_hand_it_to_users() {
        let prod = cluster("prod", "kube");
        let mut staging = cluster("staging", "kube-staging");
        staging.client_secret_for_users = true;
        let asked = std::cell::RefCell::new(Vec::new());
        let text = kubeconfig(ISSUER, None, &[&prod, &staging], &|id| {
            asked.borrow_mut().push(id.to_string());
            Some(format!("secret-of-{id}"))
        });
        assert_eq!(*asked.borrow(), vec!["kube-staging"]);
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert!(!strs(&doc["users"][0]["user"]["exec"]["args"]).contains(&"--client-secret"));
        assert_eq!(
            strs(&doc["users"][1]["user"]["exec"]["args"])[5..],
            ["--client-secret", "secret-of-kube-staging"]
        );
        assert!(!text.contains("secret-of-kube\n"));
    }
}
