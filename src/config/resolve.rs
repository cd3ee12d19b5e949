//! From the parsed tree to a [`Config`]: the root dispatch to each section's file, and the
//! helpers sections share (the error context, durations, lists, literal-or-env values).

use std::collections::HashMap;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::connectors::resolve_connectors;
use super::de::{deserialize_at, unknown_key};
use super::duration::parse_go_duration;
use super::expiry::resolve_expiry;
use super::frontend::resolve_frontend;
use super::housekeeping::resolve_housekeeping;
use super::issuer::resolve_issuer;
use super::keys::resolve_keys;
use super::kubernetes::resolve_kubernetes;
use super::logger::resolve_logger;
use super::oauth2::resolve_oauth2;
use super::path::{index_path, key_path, key_to_string};
use super::raw::{DurationText, LenientBool, TOP_LEVEL_KEYS};
use super::sessions::resolve_sessions;
use super::signer::resolve_signer;
use super::static_clients::resolve_clients;
use super::static_passwords::resolve_passwords;
use super::storage::resolve_storage;
use super::telemetry::resolve_telemetry;
use super::web::resolve_web;
use super::*;

pub(super) struct Ctx<'a> {
    pub(super) errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// `DEX_EXPAND_ENV` is not false.
    expand_env: bool,
    /// Failed `$VAR` expansions, kept apart: the values they left behind are not checked.
    env_errors: Vec<ConfigError>,
}

impl Ctx<'_> {
    pub(super) fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn has_error_at(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }

    pub(super) fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn de<T: serde::de::DeserializeOwned + Default>(
        &mut self,
        value: Value,
        path: &str,
    ) -> Option<T> {
        deserialize_at(value, path, &mut self.errors, &mut self.warnings)
    }

    /// Expands `$VAR`s in the strings under `value` (found at `path`): called only where Dex
    /// expands (see [`env`]).
    pub(super) fn expand(&mut self, value: &mut Value, path: &str) {
        if self.expand_env {
            env::expand_tree(value, path, self.env, &mut self.env_errors);
        }
    }

    /// A value read from the environment variable named at `path`.
    pub(super) fn env_var(&mut self, name: &str, path: &str) -> Option<String> {
        let value = (self.env)(name);
        if value.is_none() {
            self.err(path, format!("environment variable `{name}` is not set"));
        }
        value
    }
}

impl<'a> Ctx<'a> {
    /// A context for settings that come from storage rather than the file (a connector
    /// created through Dex's API): nothing is expanded from the environment, as in Dex.
    pub(super) fn without_env(env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Ctx {
            errors: Vec::new(),
            warnings: Vec::new(),
            env,
            expand_env: false,
            env_errors: Vec::new(),
        }
    }

    /// The errors and the warnings.
    pub(super) fn finish(self) -> (Vec<ConfigError>, Vec<ConfigError>) {
        (self.errors, self.warnings)
    }
}

pub fn from_yaml_str(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let fail = |message: String| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message,
        }])
    };
    let mut root: Value =
        serde_yaml_ng::from_str(text).map_err(|e| fail(format!("invalid YAML: {e}")))?;
    root.apply_merge()
        .map_err(|e| fail(format!("invalid YAML merge key: {e}")))?;

    let expand_env = env::expansion_enabled(env).map_err(fail)?;
    let mut ctx = Ctx {
        errors: Vec::new(),
        warnings: Vec::new(),
        env,
        expand_env,
        env_errors: Vec::new(),
    };
    let config = resolve_root(root, &mut ctx);
    let env_errors = ctx.env_errors;

    // A value whose expansion failed still holds its `$VAR` text; whatever validation then
    // said about it is noise next to "variable not set".
    let failed: Vec<&str> = env_errors.iter().map(|e| e.path.as_str()).collect();
    let mut errors: Vec<ConfigError> = ctx
        .errors
        .into_iter()
        .filter(|e| !failed.iter().any(|f| is_same_or_under(&e.path, f)))
        .collect();
    let mut all = env_errors;
    all.append(&mut errors);

    match config {
        Some(config) if all.is_empty() => Ok(Config {
            warnings: ctx.warnings,
            ..config
        }),
        _ => Err(ConfigErrors(all)),
    }
}

fn is_same_or_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

fn resolve_root(root: Value, ctx: &mut Ctx) -> Option<Config> {
    let mapping = match root {
        Value::Mapping(m) => m,
        Value::Null => {
            ctx.err("", "the config file is empty");
            return None;
        }
        _ => {
            ctx.err("", "the config file must be a YAML mapping of settings");
            return None;
        }
    };

    let mut sections: HashMap<&'static str, Value> = HashMap::new();
    for (key, value) in mapping {
        let name = key_to_string(&key);
        let exact = TOP_LEVEL_KEYS.iter().find(|k| **k == name);
        // Dex reads keys ignoring case, as Go's encoding/json does.
        let known = exact.or_else(|| {
            TOP_LEVEL_KEYS
                .iter()
                .find(|k| k.to_lowercase() == name.to_lowercase())
        });
        match known {
            Some(known) if sections.contains_key(known) => ctx.err(
                &name,
                format!("`{known}` is set twice (keys match ignoring case, as in Dex); keep one `{known}`"),
            ),
            Some(known) => {
                if exact.is_none() {
                    ctx.warn(
                        &name,
                        format!("read as `{known}` (Dex matches keys ignoring case); write `{known}`"),
                    );
                }
                sections.insert(known, value);
            }
            None => ctx.errors.push(unknown_key(&name, &name, TOP_LEVEL_KEYS)),
        }
    }
    let mut take = |name: &str| sections.remove(name).unwrap_or(Value::Null);

    let issuer = resolve_issuer(take("issuer"), ctx);
    let storage = resolve_storage(take("storage"), ctx);
    let web = resolve_web(take("web"), ctx);
    let telemetry = resolve_telemetry(take("telemetry"), &web, ctx);
    let grpc = super::grpc::resolve_grpc(
        take("grpc"),
        &[
            web.http.as_ref(),
            web.https.as_ref(),
            telemetry.http.as_ref(),
        ],
        ctx,
    );
    let logger = resolve_logger(take("logger"), ctx);
    let expiry_value = take("expiry");
    let signing_keys_set = has_key(&expiry_value, "signingKeys");
    let expiry = resolve_expiry(expiry_value, ctx);
    let signer_rotation = resolve_signer(take("signer"), signing_keys_set, ctx);
    let enable_password_db = ctx
        .de::<Option<LenientBool>>(take("enablePasswordDB"), "enablePasswordDB")
        .flatten()
        .is_some_and(|b| b.0);
    let (connectors, declared) =
        resolve_connectors(take("connectors"), enable_password_db, issuer.as_ref(), ctx);
    let oauth2 = resolve_oauth2(take("oauth2"), &declared, enable_password_db, ctx);
    let static_clients = resolve_clients(
        take("staticClients"),
        &oauth2,
        &declared,
        enable_password_db,
        ctx,
    );
    let static_passwords = resolve_passwords(take("staticPasswords"), enable_password_db, ctx);
    let frontend = resolve_frontend(take("frontend"), ctx);
    // lanyard's own sections, which no Dex config holds: `$VAR`s expand in all of them.
    let mut own = |name: &str, ctx: &mut Ctx| {
        let mut value = take(name);
        ctx.expand(&mut value, name);
        value
    };
    let keys = resolve_keys(own("keys", ctx), &expiry, signer_rotation, ctx);
    let sessions = resolve_sessions(own("sessions", ctx), ctx);
    let kubernetes = resolve_kubernetes(own("kubernetes", ctx), &static_clients, ctx);
    let housekeeping = resolve_housekeeping(own("housekeeping", ctx), ctx);

    Some(Config {
        issuer: issuer?,
        storage: storage?,
        web,
        telemetry,
        logger,
        expiry,
        oauth2,
        static_clients,
        enable_password_db,
        static_passwords,
        connectors,
        frontend,
        keys,
        sessions,
        kubernetes,
        housekeeping,
        grpc,
        warnings: Vec::new(),
    })
}

/// Parses an optional Go duration; `None` when absent or invalid (the error is recorded).
pub(super) fn duration_at(
    value: Option<DurationText>,
    path: &str,
    ctx: &mut Ctx,
) -> Option<Duration> {
    let text = value.map(|v| v.0).filter(|v| !v.is_empty())?;
    match parse_go_duration(&text) {
        Ok(d) => Some(d),
        Err(e) => {
            ctx.err(path, format!("invalid duration `{text}`: {e}"));
            None
        }
    }
}

/// A duration that must be longer than zero; `default` when absent or invalid.
pub(super) fn positive_duration(
    value: Option<DurationText>,
    path: &str,
    default: Duration,
    ctx: &mut Ctx,
) -> Duration {
    match duration_at(value, path, ctx) {
        Some(d) if d.is_zero() => {
            ctx.err(path, "must be longer than 0");
            default
        }
        Some(d) => d,
        None => default,
    }
}

/// Whether the mapping `value` sets `key` (compared ignoring case, as Dex reads keys).
fn has_key(value: &Value, key: &str) -> bool {
    value.as_mapping().is_some_and(|m| {
        m.iter()
            .any(|(k, v)| !v.is_null() && key_to_string(k).eq_ignore_ascii_case(key))
    })
}

/// The elements of a list section, each deserialised on its own so that every bad entry is
/// reported. Returns (index, entry) pairs for the entries that parsed.
pub(super) fn list_at<T: serde::de::DeserializeOwned + Default>(
    value: Value,
    path: &str,
    ctx: &mut Ctx,
) -> Vec<(usize, T)> {
    match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = index_path(path, i);
                if !matches!(item, Value::Mapping(_)) {
                    ctx.err(item_path, "expected a mapping");
                    return None;
                }
                ctx.de::<T>(item, &item_path).map(|t| (i, t))
            })
            .collect(),
        _ => {
            ctx.err(path, "expected a list");
            Vec::new()
        }
    }
}

/// A value given literally (`key`) or through a variable (`key_env`); at most one of them.
pub(super) fn literal_or_env(
    literal: Option<String>,
    env_name: Option<String>,
    path: &str,
    key: &str,
    env_key: &str,
    ctx: &mut Ctx,
) -> Option<String> {
    let literal = literal.filter(|v| !v.is_empty());
    let env_name = env_name.filter(|v| !v.is_empty());
    match (literal, env_name) {
        (Some(_), Some(_)) => {
            ctx.err(path, format!("set either `{key}` or `{env_key}`, not both"));
            None
        }
        (Some(v), None) => Some(v),
        (None, Some(name)) => {
            let env_path = key_path(path, env_key);
            match ctx.env_var(&name, &env_path) {
                Some(v) if v.is_empty() => {
                    ctx.err(env_path, format!("environment variable `{name}` is empty"));
                    None
                }
                other => other,
            }
        }
        (None, None) => None,
    }
}
