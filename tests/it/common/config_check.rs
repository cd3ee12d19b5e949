//! Checking connector configs the way `lanyard check-config` does: in process, for the errors
//! and their YAML paths, and through the binary, for the shipped examples.

use lanyard::config::Config;

const BASE: &str =
    "issuer: http://127.0.0.1:5556\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\n";

/// (path, message) of every error `connectors` (YAML list items) gets, config errors and the
/// connectors' own refusals alike.
pub fn connector_errors(connectors: &str) -> Vec<(String, String)> {
    let yaml = format!("{BASE}connectors:\n{connectors}");
    let errors = match Config::from_yaml_str(&yaml, &|_| None) {
        Ok(config) => config.connector_errors(),
        Err(errors) => errors.0,
    };
    errors.into_iter().map(|e| (e.path, e.message)).collect()
}

/// `extra` (YAML at the level of a connector's `clientID`) indented under `config:`.
pub fn indented_config(extra: &str) -> String {
    extra
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// Runs `lanyard check-config` on the example `file` with `env` (plus an encryption key) and
/// asserts it says just OK.
pub fn assert_example_passes_check_config(file: &str, env: &[(&str, &str)]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["check-config", "--config", file])
        .envs(env.iter().copied())
        .env(
            "LANYARD_ENCRYPTION_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
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
