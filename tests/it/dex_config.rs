//! Dex v2.45.1's own example configs (copied unchanged into tests/it/fixtures/dex) pass
//! `lanyard check-config`, the built binary, with only what a user would change: environment
//! variables, and for the Kubernetes manifest, taking `config.yaml` out of its ConfigMap.
//! The one config with a storage type lanyard refuses is ignored with the reason, and checked
//! with PostgreSQL in its place.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::process::BIN;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/dex")
        .join(name)
}

/// `lanyard check-config` on `config` with exactly `env` in the environment: its output and
/// whether it said OK.
fn check_config(config: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(config)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run lanyard check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.starts_with("OK"), text)
}

fn assert_ok(name: &str, env: &[(&str, &str)]) {
    let (ok, text) = check_config(&fixture(name), env);
    assert!(ok, "{name}:\n{text}");
}

#[test]
fn dex_config_yaml_dist_passes() {
    assert_ok("config.yaml.dist", &[]);
}

#[test]
fn dex_ldap_example_passes() {
    assert_ok("examples/ldap/config-ldap.yaml", &[]);
}

#[test]
fn dex_active_directory_kubelogin_example_passes() {
    assert_ok("examples/config-ad-kubelogin.yaml", &[]);
}

#[test]
fn dex_config_dev_yaml_passes() {
    assert_ok("config.dev.yaml", &[]);
}

#[test]
fn dex_examples_config_dev_yaml_passes() {
    assert_ok("examples/config-dev.yaml", &[]);
}

#[test]
fn dex_grpc_client_example_passes() {
    assert_ok("examples/grpc-client/config.yaml", &[]);
}

/// `config.yaml` of the ConfigMap in Dex's Kubernetes manifest, as a user deploying lanyard
/// instead would take it.
fn k8s_config(dir: &Path) -> PathBuf {
    use serde::Deserialize;
    let manifest = std::fs::read_to_string(fixture("examples/k8s/dex.yaml")).unwrap();
    let config = serde_yaml_ng::Deserializer::from_str(&manifest)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect("manifest document"))
        .find(|doc| doc["kind"].as_str() == Some("ConfigMap"))
        .and_then(|doc| doc["data"]["config.yaml"].as_str().map(str::to_string))
        .expect("a ConfigMap with config.yaml");
    let path = dir.join("config.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

const K8S_ENV: &[(&str, &str)] = &[
    ("GITHUB_CLIENT_ID", "0123456789abcdef0123"),
    ("GITHUB_CLIENT_SECRET", "github-client-secret"),
];

#[test]
#[ignore = "storage.type kubernetes is refused (use postgres): see the two tests below"]
fn dex_kubernetes_example_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = check_config(&k8s_config(dir.path()), K8S_ENV);
    assert!(ok, "{text}");
}

/// The manifest's config with the one change a user moving to lanyard makes: PostgreSQL for
/// the refused `kubernetes` storage. Everything else is read as Dex reads it.
#[test]
fn dex_kubernetes_example_passes_with_postgres_storage_instead() {
    let dir = tempfile::tempdir().unwrap();
    let path = k8s_config(dir.path());
    let mut doc: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let storage = serde_yaml_ng::from_str(
        "type: postgres\nconfig:\n  host: db.example.com\n  database: dex\n  user: dex\n  password: $DB_PASSWORD\n  ssl:\n    mode: verify-full\n",
    )
    .unwrap();
    doc.insert("storage".into(), storage);
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let mut env = K8S_ENV.to_vec();
    env.push(("DB_PASSWORD", "db-password"));
    let (ok, text) = check_config(&path, &env);
    assert!(ok, "{text}");
}

#[test]
fn dex_kubernetes_example_is_refused_for_its_storage_saying_what_to_use_instead() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = check_config(&k8s_config(dir.path()), K8S_ENV);
    assert!(!ok, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("storage.type:")
            && l.contains("`kubernetes` is not supported")
            && l.contains("use postgres")),
        "{text}"
    );
}
