//! `lanyard kube ...` through the real binary, against a config with two clusters and RBAC
//! bindings; and, when kubectl is installed, kubectl reading what lanyard writes and
//! running `lanyard login` against an HTTPS issuer with a private CA.

use crate::common;

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
            "--oidc-signing-algs=ES256",
        ]
    );
}

/// Adds `kubernetes.issuerCertificateAuthorityFile` (a fresh CA) to the fixture's config;
/// returns the CA's PEM and its file.
fn with_issuer_ca(f: &Fixture) -> (String, PathBuf) {
    let pem = rcgen::generate_simple_self_signed(vec!["login.example.com".to_string()])
        .unwrap()
        .cert
        .pem();
    let file = f.dir.path().join("issuer-ca.pem");
    std::fs::write(&file, &pem).unwrap();
    let text = std::fs::read_to_string(&f.config).unwrap().replace(
        "kubernetes:\n",
        &format!(
            "kubernetes:\n  issuerCertificateAuthorityFile: {}\n",
            file.display()
        ),
    );
    std::fs::write(&f.config, text).unwrap();
    (pem, file)
}

#[test]
fn apiserver_flags_name_a_ca_file_only_for_a_private_issuer_ca_and_say_what_to_copy() {
    let f = fixture();
    let public = lanyard(&f, &["apiserver-flags", "--cluster", "prod"]);
    assert!(!stdout_ok(&public).contains("--oidc-ca-file"));
    assert!(public.stderr.is_empty(), "{:?}", public.stderr);

    let (_, file) = with_issuer_ca(&f);
    let out = lanyard(&f, &["apiserver-flags", "--cluster", "prod"]);
    let lines: Vec<String> = stdout_ok(&out).lines().map(str::to_string).collect();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "--oidc-ca-file=/etc/kubernetes/pki/lanyard-ca.pem",
            "--oidc-signing-algs=ES256"
        ]
    );
    let hint = String::from_utf8(out.stderr).unwrap();
    assert!(
        hint.contains(&format!(
            "copy the issuer's CA, {} (kubernetes.issuerCertificateAuthorityFile), to /etc/kubernetes/pki/lanyard-ca.pem",
            file.display()
        )),
        "{hint}"
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
fn authn_config_takes_the_issuer_ca_from_the_config_and_the_flag_overrides_it() {
    let f = fixture();
    let ca_of = |out: &str| {
        let doc: Value = serde_yaml_ng::from_str(out).unwrap();
        assert!(kube::validate_authentication_configuration(&doc).is_empty());
        doc["jwt"][0]["issuer"]["certificateAuthority"]
            .as_str()
            .map(str::to_string)
    };
    let args = ["authn-config", "--cluster", "prod"];
    assert_eq!(ca_of(&stdout_ok(&lanyard(&f, &args))), None);
    let (pem, _) = with_issuer_ca(&f);
    assert_eq!(ca_of(&stdout_ok(&lanyard(&f, &args))), Some(pem));
    let other = f.dir.path().join("staging-ca.pem");
    let out = stdout_ok(&lanyard(
        &f,
        &[
            "authn-config",
            "--cluster",
            "prod",
            "--issuer-ca-file",
            other.to_str().unwrap(),
        ],
    ));
    assert_eq!(ca_of(&out), Some(f.ca_pem.clone()));
}

#[test]
fn kubeconfig_users_carry_the_private_issuer_ca_as_base64_pem() {
    let f = fixture();
    let (pem, _) = with_issuer_ca(&f);
    let doc: Value = serde_yaml_ng::from_str(&stdout_ok(&lanyard(&f, &["kubeconfig"]))).unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(&pem);
    for i in 0..2 {
        let args: Vec<&str> = doc["users"][i]["user"]["exec"]["args"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[5..7], ["--certificate-authority-data", data.as_str()]);
    }
}

#[test]
fn issuer_ca_data_is_base64_of_the_pem_like_the_clusters_ca() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.config).unwrap().replace(
        "kubernetes:\n",
        &format!(
            "kubernetes:\n  issuerCertificateAuthorityData: {}\n",
            base64::engine::general_purpose::STANDARD.encode(format!("# company CA\n{}", f.ca_pem))
        ),
    );
    let config = Config::from_yaml_str(&text, &|name| {
        (name == "KUBE_PROD_SECRET").then(|| SECRET.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.kubernetes.issuer_ca,
        Some(lanyard::config::IssuerCa {
            pem: f.ca_pem.clone(),
            file: None
        })
    );
}

#[test]
fn issuer_ca_settings_are_checked_with_their_path() {
    let f = fixture();
    let text = std::fs::read_to_string(&f.config).unwrap();
    for (setting, expected) in [
        (
            "issuerCertificateAuthorityFile: /nonexistent/ca.pem".to_string(),
            "kubernetes.issuerCertificateAuthorityFile: cannot read `/nonexistent/ca.pem`",
        ),
        (
            "issuerCertificateAuthorityData: bm90IGEgY2VydA==".to_string(),
            "kubernetes.issuerCertificateAuthorityData: the decoded PEM is not usable",
        ),
        (
            format!(
                "issuerCertificateAuthorityData: {}\n  issuerCertificateAuthorityFile: {}",
                base64::engine::general_purpose::STANDARD.encode(&f.ca_pem),
                f.dir.path().join("staging-ca.pem").display()
            ),
            "set either `issuerCertificateAuthorityData` or `issuerCertificateAuthorityFile`, not both",
        ),
    ] {
        std::fs::write(
            &f.config,
            text.replace("kubernetes:\n", &format!("kubernetes:\n  {setting}\n")),
        )
        .unwrap();
        let err = stderr_failed(&lanyard(&f, &["kubeconfig"]));
        assert!(err.contains(expected), "{setting}: {err}");
    }
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

/// kubectl, when this machine has it (CI must have it).
fn kubectl() -> Option<PathBuf> {
    let out = Command::new("which").arg("kubectl").output().ok()?;
    if !out.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl is not installed, and CI is set"
        );
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
    let commands = kube::login_commands(&config.issuer_string(), None, prod, secret.as_deref());

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

// ----- kubectl against an issuer with a private CA -------------------------------------

const ALICE: &str = "alice@example.com";
/// bcrypt of `password`.
const ALICE_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
const LOGIN_CLIENT: &str = "kubectl";
const LOGIN_SCOPES: &str = "openid email profile groups offline_access";
const LOOPBACK_REDIRECT: &str = "http://127.0.0.1:8000/callback";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `reqwest` client that trusts only `ca_pem` (and the public roots), keeps cookies and
/// does not follow redirects.
fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("hidden field") + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_string()
}

fn redirect_target(base: &str, r: &reqwest::Response) -> String {
    assert_eq!(r.status(), 303, "{}", r.url());
    let location = r.headers()["location"].to_str().unwrap();
    url::Url::parse(base)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}

/// Alice logs in through the issuer's pages and the code is redeemed, as `lanyard login`
/// would; returns the token response.
async fn log_in(issuer: &str, ca_pem: &str) -> serde_json::Value {
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let browser = client_trusting(ca_pem);
    let verifier = "a-verifier-that-is-long-enough-for-pkce-0123456789";
    let challenge = b64.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let r = browser
        .get(format!("{issuer}/auth"))
        .query(&[
            ("client_id", LOGIN_CLIENT),
            ("response_type", "code"),
            ("redirect_uri", LOOPBACK_REDIRECT),
            ("scope", LOGIN_SCOPES),
            ("state", "state-1"),
            ("nonce", "nonce-1"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    let login_url = redirect_target(issuer, &r);
    let html = browser
        .get(&login_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = browser
        .post(&login_url)
        .form(&[
            ("csrf", hidden_field(&html, "csrf").as_str()),
            ("login", ALICE),
            ("password", "password"),
        ])
        .send()
        .await
        .unwrap();
    let mut next = redirect_target(issuer, &r);
    if next.starts_with(issuer) {
        let html = browser
            .get(&next)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let r = browser
            .post(&next)
            .form(&[
                ("csrf", hidden_field(&html, "csrf").as_str()),
                ("approval", "approve"),
            ])
            .send()
            .await
            .unwrap();
        next = redirect_target(issuer, &r);
    }
    assert!(next.starts_with(LOOPBACK_REDIRECT), "{next}");
    let code = url::Url::parse(&next)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .expect("a code")
        .1
        .into_owned();
    let r = browser
        .post(format!("{issuer}/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", LOOPBACK_REDIRECT),
            ("client_id", LOGIN_CLIENT),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// What the stand-in API server saw: the usernames of requests whose ID token verified.
#[derive(Clone, Default)]
struct ApiLog(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

#[derive(Clone)]
struct ApiState {
    issuer: String,
    /// Trusts the issuer's CA, as kube-apiserver's --oidc-ca-file.
    http: reqwest::Client,
    log: ApiLog,
}

/// kube-apiserver's OIDC authenticator in small: the bearer ID token's signature checked
/// against the issuer's JWKS (found through discovery), and its issuer, audience and expiry.
async fn verify_id_token(state: &ApiState, headers: &axum::http::HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    let discovery: serde_json::Value = state
        .http
        .get(format!("{}/.well-known/openid-configuration", state.issuer))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let jwks: jsonwebtoken::jwk::JwkSet = state
        .http
        .get(discovery["jwks_uri"].as_str()?)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let header = jsonwebtoken::decode_header(token).ok()?;
    let jwk = jwks.find(header.kid.as_deref()?)?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).ok()?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_audience(&[LOGIN_CLIENT]);
    validation.set_issuer(&[&state.issuer]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .ok()?
        .claims;
    Some(format!("oidc:{}", claims["email"].as_str()?))
}

/// Answers kubectl's SelfSubjectReview (`kubectl auth whoami`) for a verified ID token.
async fn self_subject_review(
    axum::extract::State(state): axum::extract::State<ApiState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match verify_id_token(&state, &headers).await {
        Some(username) => {
            state.log.0.lock().unwrap().push(username.clone());
            (
                axum::http::StatusCode::CREATED,
                axum::Json(serde_json::json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "SelfSubjectReview",
                    "metadata": {"creationTimestamp": null},
                    "status": {"userInfo": {"username": username, "groups": ["system:authenticated"]}}
                })),
            )
                .into_response()
        }
        None => (
            axum::http::StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": "Unauthorized", "reason": "Unauthorized", "code": 401
            })),
        )
            .into_response(),
    }
}

/// The whole path a person with a company-CA issuer takes: a kubeconfig as `lanyard kube
/// kubeconfig` renders it, run by the real kubectl, whose exec plugin (the real `lanyard
/// login`) refreshes its cached session at the HTTPS issuer, and an HTTPS API server that
/// verifies the ID token against the issuer's JWKS. The issuer's CA is trusted first only
/// through the kubeconfig (`kubernetes.issuerCertificateAuthorityFile`), then only through
/// the system trust store (SSL_CERT_FILE), where a bundle without it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_in_to_a_private_ca_issuer_through_the_generated_kubeconfig() {
    let Some(kubectl) = kubectl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let issuer_ca = common::tls::PrivateCa::new("Company CA");
    let api_ca = common::tls::PrivateCa::new("Cluster CA");
    std::fs::write(path("issuer-ca.pem"), &issuer_ca.ca_pem).unwrap();
    std::fs::write(path("tls.crt"), &issuer_ca.cert_pem).unwrap();
    std::fs::write(path("tls.key"), &issuer_ca.key_pem).unwrap();
    std::fs::write(path("api-ca.pem"), &api_ca.ca_pem).unwrap();

    let api_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_server = format!(
        "https://127.0.0.1:{}",
        api_listener.local_addr().unwrap().port()
    );
    let (port, telemetry) = (free_port(), free_port());
    let issuer = format!("https://127.0.0.1:{port}");
    let config = |issuer_ca_setting: &str| {
        format!(
            r#"issuer: {issuer}
storage:
  type: memory
web:
  https: 127.0.0.1:{port}
  tlsCert: {tls_crt}
  tlsKey: {tls_key}
telemetry:
  http: 127.0.0.1:{telemetry}
logger:
  level: warn
oauth2:
  skipApprovalScreen: true
enablePasswordDB: true
staticPasswords:
- email: {ALICE}
  hash: "{ALICE_HASH}"
  username: alice
  userID: 08a8684b-db88-4b73-90a9-3cd1661f5466
staticClients:
- id: {LOGIN_CLIENT}
  name: kubectl
  public: true
  redirectURIs: ['{LOOPBACK_REDIRECT}']
kubernetes:
{issuer_ca_setting}  clusters:
  - name: onprem
    server: {api_server}
    certificateAuthorityFile: {api_ca}
    clientID: {LOGIN_CLIENT}
"#,
            tls_crt = path("tls.crt").display(),
            tls_key = path("tls.key").display(),
            api_ca = path("api-ca.pem").display(),
        )
    };
    std::fs::write(
        path("with-ca.yaml"),
        config(&format!(
            "  issuerCertificateAuthorityFile: {}\n",
            path("issuer-ca.pem").display()
        )),
    )
    .unwrap();
    std::fs::write(path("without-ca.yaml"), config("")).unwrap();

    let _issuer_process = tokio::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(path("with-ca.yaml"))
        .env_remove("LANYARD_CONFIG")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let log = ApiLog::default();
    let app = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            axum::routing::post(self_subject_review),
        )
        .with_state(ApiState {
            issuer: issuer.clone(),
            http: client_trusting(&issuer_ca.ca_pem),
            log: log.clone(),
        });
    let _api = api_ca.serve(api_listener, app);

    let probe = client_trusting(&issuer_ca.ca_pem);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !probe
        .get(format!("{issuer}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the issuer never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The person logged in before; the cached ID token has expired, so kubectl's run of the
    // plugin must reach the issuer over TLS to refresh it.
    let tokens = log_in(&issuer, &issuer_ca.ca_pem).await;
    let scopes: Vec<String> = LOGIN_SCOPES.split(' ').map(str::to_string).collect();
    let cache = lanyard::login::cache::Cache::new(
        path("xdg-cache").join("lanyard"),
        lanyard::login::cache::cache_key(&issuer, LOGIN_CLIENT, &scopes),
    );
    let expired_session = |refresh_token: String| lanyard::login::cache::CacheEntry {
        issuer: issuer.clone(),
        client_id: LOGIN_CLIENT.to_string(),
        id_token: tokens["id_token"].as_str().unwrap().to_string(),
        refresh_token: Some(refresh_token),
        expiry: 1,
    };
    let cached_refresh_token = || -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(cache.entry_path()).unwrap()).unwrap();
        v["refresh_token"].as_str().unwrap().to_string()
    };

    let kubeconfig = |config: &str, name: &str| {
        let out = Command::new(BIN)
            .args(["kube", "kubeconfig", "--config"])
            .arg(path(config))
            .env_remove("LANYARD_CONFIG")
            .output()
            .unwrap();
        std::fs::write(path(name), stdout_ok(&out)).unwrap();
        path(name)
    };
    let lanyard_dir = Path::new(BIN).parent().unwrap().to_path_buf();
    let kubectl_dir = kubectl.parent().unwrap().to_path_buf();
    let whoami = |kubeconfig: PathBuf, ssl_cert_file: Option<PathBuf>| {
        let kubectl = kubectl.clone();
        let mut c = Command::new(kubectl);
        c.args(["auth", "whoami", "-o", "json", "--kubeconfig"])
            .arg(kubeconfig)
            .env(
                "PATH",
                format!(
                    "{}:{}:/usr/bin:/bin",
                    lanyard_dir.display(),
                    kubectl_dir.display()
                ),
            )
            .env("HOME", path("home"))
            .env("XDG_CACHE_HOME", path("xdg-cache"))
            .env_remove("SSL_CERT_DIR")
            .env_remove("KUBECONFIG");
        match ssl_cert_file {
            Some(file) => c.env("SSL_CERT_FILE", file),
            None => c.env_remove("SSL_CERT_FILE"),
        };
        async move {
            tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap()
        }
    };
    let username_of = |out: &Output| -> String {
        let v: serde_json::Value = serde_json::from_str(&stdout_ok(out)).unwrap();
        v["status"]["userInfo"]["username"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // 1. The CA only in the generated kubeconfig.
    let with_ca = kubeconfig("with-ca.yaml", "kubeconfig-with-ca");
    assert!(std::fs::read_to_string(&with_ca)
        .unwrap()
        .contains("--certificate-authority-data"));
    let entry = expired_session(tokens["refresh_token"].as_str().unwrap().to_string());
    cache.lock().await.unwrap().write(&entry).unwrap();
    let before = cached_refresh_token();
    let out = whoami(with_ca, None).await;
    assert_eq!(username_of(&out), format!("oidc:{ALICE}"));
    assert_ne!(
        cached_refresh_token(),
        before,
        "the plugin refreshed at the issuer"
    );
    assert_eq!(
        log.0.lock().unwrap().len(),
        1,
        "the API server verified the token"
    );

    // 2. Nothing in the kubeconfig: a trust store without the CA fails on TLS, one with it
    // (among other CAs) works.
    let without_ca = kubeconfig("without-ca.yaml", "kubeconfig-without-ca");
    assert!(!std::fs::read_to_string(&without_ca)
        .unwrap()
        .contains("--certificate-authority"));
    let other = common::tls::PrivateCa::new("Unrelated CA");
    std::fs::write(path("bundle-without.pem"), &other.ca_pem).unwrap();
    std::fs::write(
        path("bundle-with.pem"),
        format!("{}{}", other.ca_pem, issuer_ca.ca_pem),
    )
    .unwrap();
    let entry = expired_session(cached_refresh_token());
    cache.lock().await.unwrap().write(&entry).unwrap();
    let out = whoami(without_ca.clone(), Some(path("bundle-without.pem"))).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains("--certificate-authority"), "{err}");
    let out = whoami(without_ca, Some(path("bundle-with.pem"))).await;
    assert_eq!(username_of(&out), format!("oidc:{ALICE}"));
    assert_eq!(log.0.lock().unwrap().len(), 2);
}
