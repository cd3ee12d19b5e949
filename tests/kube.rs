//! `lanyard kube ...` through the real binary, against a config with two clusters and RBAC
//! bindings; and, when kubectl is installed, kubectl reading what lanyard writes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use serde::Deserialize;
use serde_yaml_ng::Value;

use lanyard::config::Config;
use lanyard::kube;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");
const ISSUER: &str = "https://login.example.com/dex";

struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
    ca_pem: String,
}

/// Two clusters: `prod` (CA inline, its client's secret handed to users) and `staging` (CA
/// from a file, a public client, GitHub-style group prefix); RBAC for both and for one.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = rcgen::generate_simple_self_signed(vec!["kube.example.com".to_string()])
        .unwrap()
        .cert
        .pem();
    let ca_file = dir.path().join("staging-ca.pem");
    std::fs::write(&ca_file, &ca_pem).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"issuer: {ISSUER}
storage:
  type: memory
web:
  http: 127.0.0.1:5556
keys:
  algorithm: ES256
staticClients:
- id: kube-prod
  secretEnv: KUBE_PROD_SECRET
  redirectURIs: [http://localhost:8000]
- id: kube-staging
  public: true
  redirectURIs: [http://localhost:8000]
kubernetes:
  clusters:
  - name: prod
    displayName: Production
    server: https://prod.k8s.example.com:6443
    certificateAuthorityData: {}
    clientID: kube-prod
    clientSecretForUsers: true
    contextName: acme-prod
  - name: staging
    server: https://staging.k8s.example.com:6443
    certificateAuthorityFile: {}
    clientID: kube-staging
    namespace: apps
    groupsPrefix: "github:"
  rbac:
  - group: acme:platform
    clusterRole: cluster-admin
  - group: acme:software-engineering
    clusterRole: edit
    namespace: apps
    clusters: [staging]
"#,
            base64::engine::general_purpose::STANDARD.encode(&ca_pem),
            ca_file.display()
        ),
    )
    .unwrap();
    Fixture {
        dir,
        config,
        ca_pem,
    }
}

const SECRET: &str = "prod secret, with \"quotes\"";

fn lanyard(fixture: &Fixture, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("kube")
        .args(args)
        .arg("--config")
        .arg(&fixture.config)
        .env("KUBE_PROD_SECRET", SECRET)
        .env_remove("LANYARD_CONFIG")
        .current_dir(fixture.dir.path())
        .output()
        .unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr_failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn apiserver_flags_prints_one_flag_per_line_for_the_named_cluster() {
    let f = fixture();
    let out = stdout_ok(&lanyard(&f, &["apiserver-flags", "--cluster", "staging"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "--oidc-issuer-url=https://login.example.com/dex",
            "--oidc-client-id=kube-staging",
            "--oidc-username-claim=email",
            "--oidc-username-prefix=oidc:",
            "--oidc-groups-claim=groups",
            "--oidc-groups-prefix=github:",
            "--oidc-ca-file=/etc/kubernetes/pki/lanyard-ca.pem",
            "--oidc-signing-algs=ES256",
        ]
    );
}

#[test]
fn apiserver_flags_for_an_unknown_cluster_lists_the_names() {
    let f = fixture();
    let err = stderr_failed(&lanyard(&f, &["apiserver-flags", "--cluster", "dev"]));
    assert!(
        err.contains("no cluster is named `dev`; configured clusters: prod, staging"),
        "{err}"
    );
}

#[test]
fn authn_config_for_one_cluster_passes_the_api_server_rules() {
    let f = fixture();
    for (version, api) in [
        ("v1", "apiserver.config.k8s.io/v1"),
        ("v1beta1", "apiserver.config.k8s.io/v1beta1"),
    ] {
        let out = stdout_ok(&lanyard(
            &f,
            &["authn-config", "--version", version, "--cluster", "prod"],
        ));
        let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(
            kube::validate_authentication_configuration(&doc),
            Vec::<String>::new()
        );
        assert_eq!(doc["apiVersion"].as_str(), Some(api));
        assert_eq!(doc["jwt"][0]["issuer"]["url"], ISSUER);
        assert_eq!(
            doc["jwt"][0]["issuer"]["audiences"],
            serde_yaml_ng::from_str::<Value>("[kube-prod]").unwrap()
        );
    }
}

#[test]
fn authn_config_embeds_the_issuer_ca_when_given() {
    let f = fixture();
    let ca = f.dir.path().join("staging-ca.pem");
    let out = stdout_ok(&lanyard(
        &f,
        &[
            "authn-config",
            "--cluster",
            "prod",
            "--issuer-ca-file",
            ca.to_str().unwrap(),
        ],
    ));
    let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(
        doc["jwt"][0]["issuer"]["certificateAuthority"].as_str(),
        Some(f.ca_pem.as_str())
    );
    assert!(kube::validate_authentication_configuration(&doc).is_empty());
}

#[test]
fn authn_config_refuses_clusters_whose_mappings_differ() {
    let f = fixture();
    let err = stderr_failed(&lanyard(&f, &["authn-config"]));
    assert!(
        err.contains("clusters prod, staging map claims differently"),
        "{err}"
    );
    let err = stderr_failed(&lanyard(&f, &["authn-config", "--version", "v2"]));
    assert!(err.contains("expected v1 or v1beta1"), "{err}");
}

#[test]
fn rbac_splits_per_cluster_and_filters_by_cluster() {
    let f = fixture();
    let all = stdout_ok(&lanyard(&f, &["rbac"]));
    let docs = documents(&all);
    assert_eq!(docs.len(), 3);
    let comments: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("# cluster: "))
        .collect();
    assert_eq!(
        comments,
        vec![
            "# cluster: prod",
            "# cluster: staging",
            "# cluster: staging"
        ]
    );
    assert_eq!(docs[0]["subjects"][0]["name"], "oidc:acme:platform");
    assert_eq!(docs[1]["subjects"][0]["name"], "github:acme:platform");

    let staging = stdout_ok(&lanyard(&f, &["rbac", "--cluster", "staging"]));
    assert!(!staging.contains("# cluster:"));
    let docs = documents(&staging);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kind"], "ClusterRoleBinding");
    assert_eq!(
        docs[0]["metadata"]["name"],
        "lanyard-acme-platform-cluster-admin"
    );
    assert_eq!(docs[0]["roleRef"]["name"], "cluster-admin");
    assert_eq!(docs[1]["kind"], "RoleBinding");
    assert_eq!(docs[1]["metadata"]["namespace"], "apps");
    assert_eq!(
        docs[1]["metadata"]["name"],
        "lanyard-acme-software-engineering-edit"
    );
    assert_eq!(
        docs[1]["subjects"][0]["name"],
        "github:acme:software-engineering"
    );
}

#[test]
fn kubeconfig_has_both_clusters_with_cas_and_the_secret_only_where_marked() {
    let f = fixture();
    let out = stdout_ok(&lanyard(&f, &["kubeconfig"]));
    let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(doc["current-context"], "acme-prod");
    for i in 0..2 {
        let data = doc["clusters"][i]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap();
        assert_eq!(String::from_utf8(pem).unwrap(), f.ca_pem);
    }
    assert_eq!(doc["contexts"][1]["context"]["namespace"], "apps");
    let args = |i: usize| -> Vec<String> {
        doc["users"][i]["user"]["exec"]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        args(0),
        vec![
            "login",
            "--issuer",
            ISSUER,
            "--client-id",
            "kube-prod",
            "--client-secret",
            SECRET
        ]
    );
    assert_eq!(
        args(1),
        vec!["login", "--issuer", ISSUER, "--client-id", "kube-staging"]
    );

    let one = stdout_ok(&lanyard(&f, &["kubeconfig", "--cluster", "staging"]));
    let doc: Value = serde_yaml_ng::from_str(&one).unwrap();
    assert_eq!(doc["clusters"].as_sequence().unwrap().len(), 1);
    assert_eq!(doc["current-context"], "staging");
}

#[test]
fn kube_commands_without_clusters_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["kube", "kubeconfig"])
        .env_remove("LANYARD_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = stderr_failed(&out);
    assert!(
        err.contains("no Kubernetes clusters are configured"),
        "{err}"
    );
}

#[test]
fn kube_commands_report_config_errors_with_their_path() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.config)
        .unwrap()
        .replace("clientID: kube-staging", "clientID: kubectl");
    std::fs::write(&f.config, text).unwrap();
    let err = stderr_failed(&lanyard(&f, &["kubeconfig"]));
    assert!(
        err.contains("kubernetes.clusters[1].clientID: no static client has the id `kubectl`"),
        "{err}"
    );
}

// ----- kubectl ------------------------------------------------------------------------

/// kubectl, when this machine has it.
fn kubectl() -> Option<PathBuf> {
    let out = Command::new("which").arg("kubectl").output().ok()?;
    if !out.status.success() {
        eprintln!("kubectl is not installed; skipping the kubectl part");
        return None;
    }
    Some(PathBuf::from(String::from_utf8(out.stdout).ok()?.trim()))
}

fn kubectl_view(kubectl: &Path, kubeconfig: &Path) -> serde_json::Value {
    let out = Command::new(kubectl)
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl config view failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn kubectl_reads_the_kubeconfig() {
    let Some(kubectl) = kubectl() else { return };
    let f = fixture();
    let path = f.dir.path().join("kubeconfig");
    std::fs::write(&path, stdout_ok(&lanyard(&f, &["kubeconfig"]))).unwrap();
    let view = kubectl_view(&kubectl, &path);
    assert_eq!(view["current-context"], "acme-prod");
    assert_eq!(view["clusters"].as_array().unwrap().len(), 2);
    let exec = &view["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "lanyard");
    assert_eq!(exec["interactiveMode"], "IfAvailable");
    assert_eq!(exec["args"][6], SECRET);
    let data = view["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
        f.ca_pem.as_bytes()
    );
}

/// The page's POSIX snippets, run by sh against the real kubectl, set up the same cluster
/// as the rendered kubeconfig, and a user for each way of logging in.
#[test]
fn kubectl_runs_the_posix_login_commands() {
    let Some(kubectl) = kubectl() else { return };
    let f = fixture();
    let text = std::fs::read_to_string(&f.config).unwrap();
    let config = Config::from_yaml_str(&text, &|name| {
        (name == "KUBE_PROD_SECRET").then(|| SECRET.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let prod = config.kubernetes.cluster("prod").unwrap();
    let secret = config
        .static_client("kube-prod")
        .and_then(|c| c.secret.clone());
    let commands = kube::login_commands(&config.issuer_string(), prod, secret.as_deref());

    let rendered: Value = serde_yaml_ng::from_str(&stdout_ok(&lanyard(
        &f,
        &["kubeconfig", "--cluster", "prod"],
    )))
    .unwrap();
    let rendered_args: Vec<String> = rendered["users"][0]["user"]["exec"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();

    for (snippet, user) in [
        (&commands.lanyard.posix, "lanyard-prod"),
        (&commands.kubelogin.posix, "kubelogin-prod"),
        (&commands.oidc_auth_provider.posix, "oidc-prod"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let kubeconfig = work.path().join("config");
        let bin_dir = kubectl.parent().unwrap();
        let out = Command::new("sh")
            .arg("-c")
            .arg(snippet)
            .current_dir(work.path())
            .env("KUBECONFIG", &kubeconfig)
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{snippet}\nfailed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let view = kubectl_view(&kubectl, &kubeconfig);
        assert_eq!(view["current-context"], "acme-prod", "{view:#}");
        let cluster = &view["clusters"][0];
        assert_eq!(cluster["name"], "prod");
        assert_eq!(
            cluster["cluster"]["server"],
            "https://prod.k8s.example.com:6443"
        );
        assert!(cluster["cluster"].get("insecure-skip-tls-verify").is_none());
        let data = cluster["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
            prod.certificate_authority_pem.as_bytes()
        );
        assert_eq!(view["contexts"][0]["context"]["user"], user);
        assert_eq!(view["contexts"][0]["context"]["namespace"], "default");
        assert_eq!(view["users"][0]["name"], user);
        let entry = &view["users"][0]["user"];
        match user {
            "lanyard-prod" => {
                assert_eq!(entry["exec"]["command"], "lanyard");
                assert_eq!(
                    entry["exec"]["apiVersion"],
                    "client.authentication.k8s.io/v1"
                );
                assert_eq!(entry["exec"]["interactiveMode"], "IfAvailable");
                assert_eq!(entry["exec"]["provideClusterInfo"], false);
                let args: Vec<&str> = entry["exec"]["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                assert_eq!(args, rendered_args);
            }
            "kubelogin-prod" => {
                assert_eq!(entry["exec"]["command"], "kubectl");
                assert_eq!(entry["exec"]["interactiveMode"], "IfAvailable");
                let args: Vec<&str> = entry["exec"]["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                let secret_arg = format!("--oidc-client-secret={SECRET}");
                assert_eq!(
                    args,
                    vec![
                        "oidc-login",
                        "get-token",
                        "--oidc-issuer-url=https://login.example.com/dex",
                        "--oidc-client-id=kube-prod",
                        secret_arg.as_str(),
                        "--oidc-extra-scope=email",
                        "--oidc-extra-scope=groups",
                        "--oidc-extra-scope=offline_access",
                    ]
                );
            }
            _ => {
                let provider = &entry["auth-provider"];
                assert_eq!(provider["name"], "oidc");
                assert_eq!(provider["config"]["idp-issuer-url"], ISSUER);
                assert_eq!(provider["config"]["client-id"], "kube-prod");
                assert_eq!(provider["config"]["client-secret"], SECRET);
                assert_eq!(provider["config"]["id-token"], "<ID_TOKEN>");
                assert_eq!(provider["config"]["refresh-token"], "<REFRESH_TOKEN>");
            }
        }
    }
}
