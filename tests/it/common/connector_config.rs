//! A connector's config as tests write it: the errors `check-config` finds (in process, for
//! the errors and their YAML paths), examples run through the real binary's `check-config`,
//! and entries pointing at a fake upstream.

use serde_json::{json, Value};

/// The settings every config needs, with memory storage; `connectors:` goes after it.
pub const MINIMAL_CONFIG: &str =
    "issuer: http://127.0.0.1:5556\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\n";

/// (path, message) of every error `connectors` (YAML list items) gets, config errors and the
/// connectors' own refusals alike.
pub fn connector_errors(connectors: &str) -> Vec<(String, String)> {
    let yaml = format!("{MINIMAL_CONFIG}connectors:\n{connectors}");
    let errors = match lanyard::config::Config::from_yaml_str(&yaml, &|_| None) {
        Ok(config) => config.connector_errors(),
        Err(errors) => errors.0,
    };
    errors.into_iter().map(|e| (e.path, e.message)).collect()
}

/// The errors (path, message) of a config whose only connector is `type_` with the `config:`
/// mapping `config_yaml` (indented four spaces).
pub fn connector_config_errors(type_: &str, config_yaml: &str) -> Vec<(String, String)> {
    connector_errors(&format!(
        "- type: {type_}\n  id: upstream\n  config:\n{config_yaml}"
    ))
}

/// `extra` (YAML at the level of a connector's `clientID`) indented under `config:`.
pub fn indented_config(extra: &str) -> String {
    extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// `lanyard check-config` accepts the example at `path` with `env` set, without warnings.
pub fn assert_example_passes_check_config(path: &str, env: &[(&str, &str)]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["check-config", "--config", path])
        .env(
            "LANYARD_ENCRYPTION_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .envs(env.iter().copied())
        .output()
        .expect("run lanyard check-config");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "OK", "no warnings either");
}

/// `base` with the keys of `extra` added or replaced.
pub fn merged(mut base: Value, extra: Value) -> Value {
    if let (Some(map), Value::Object(extra)) = (base.as_object_mut(), extra) {
        map.extend(extra);
    }
    base
}

/// A `connectors:` list (YAML) with one entry.
pub fn connector_entry_yaml(type_: &str, id: &str, name: &str, config: Value) -> String {
    let entry = json!([{"type": type_, "id": id, "name": name, "config": config}]);
    serde_yaml_ng::to_string(&entry).expect("yaml")
}
