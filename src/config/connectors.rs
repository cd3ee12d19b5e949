//! `connectors:`: each entry's shape, and its `config` mapping parsed and checked once into the
//! connectors crate's typed settings, which the server opens as they are.

use std::collections::HashMap;

use lanyard_connectors::authproxy::AuthProxyConfig;
use lanyard_connectors::github::GithubConfig;
use lanyard_connectors::gitlab::GitlabConfig;
use lanyard_connectors::google::GoogleConfig;
use lanyard_connectors::microsoft::MicrosoftConfig;
use lanyard_connectors::mock::{
    is_loopback_issuer, MockCallbackConfig, MockPasswordConfig, ALLOW_NON_LOOPBACK_KEY,
};
use lanyard_connectors::oauth::OAuthConfig;
use lanyard_connectors::{ConfigIssue, LdapConfig, OidcConfig, SamlConfig};
use serde::Deserialize;
use serde_yaml_ng::Value;
use url::Url;

use super::path::{index_path, key_path};
use super::resolve::{list_at, Ctx};
use super::ConfigError;

/// Dex's switch for what a connector that fails to open does to the start: a Go boolean,
/// true (serve the others) by default.
pub const CONTINUE_ON_CONNECTOR_FAILURE_ENV: &str = "DEX_CONTINUE_ON_CONNECTOR_FAILURE";

/// The id under which the password database appears as a connector, as in Dex.
pub(super) const LOCAL_CONNECTOR_ID: &str = "local";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConnector {
    #[serde(rename = "type")]
    type_: Option<String>,
    id: Option<String>,
    name: Option<String>,
    config: Option<Value>,
}

/// The local connector reads the password database and has no settings of its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLocalConnector {}

/// An entry of `connectors`, its settings checked by the connector's own rules.
#[derive(Clone, Debug)]
pub struct ConnectorConfig {
    /// The type `settings` is of.
    pub type_: ConnectorType,
    pub id: String,
    /// The id when the config gives no name.
    pub name: String,
    /// The `config` mapping, typed; the server opens it. Its Debug output redacts secrets.
    pub settings: ConnectorSettings,
}

/// A connector's `config`, typed (Dex's `ConnectorConfig`, whose variants the server opens).
#[derive(Clone, Debug)]
pub enum ConnectorSettings {
    /// The password database (static passwords and stored ones).
    Local,
    Ldap(Box<LdapConfig>),
    Github(Box<GithubConfig>),
    Oidc(Box<OidcConfig>),
    Gitlab(Box<GitlabConfig>),
    /// A plain OAuth 2.0 provider with a userinfo endpoint.
    OAuth(Box<OAuthConfig>),
    /// An authenticating reverse proxy in front of lanyard.
    AuthProxy(Box<AuthProxyConfig>),
    Microsoft(Box<MicrosoftConfig>),
    Google(Box<GoogleConfig>),
    Saml(Box<SamlConfig>),
    /// Dex's development connectors (see docs/connectors/mock.md).
    MockCallback(MockCallbackConfig),
    MockPassword(Box<MockPasswordConfig>),
    /// Settings the connector's own rules refuse (a missing `baseDN`, an `issuer` that is no
    /// URL). Dex finds these only when it opens the connector, so, as in Dex, the server
    /// serves the other connectors without this one (unless
    /// `DEX_CONTINUE_ON_CONNECTOR_FAILURE=false`) and `check-config` reports them as errors.
    Invalid(Vec<ConfigError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectorType {
    Local,
    Ldap,
    Github,
    Oidc,
    Gitlab,
    OAuth,
    AuthProxy,
    Microsoft,
    Google,
    Saml,
    MockCallback,
    MockPassword,
}

impl ConnectorType {
    pub const ALL: [ConnectorType; 12] = [
        ConnectorType::Ldap,
        ConnectorType::Github,
        ConnectorType::Oidc,
        ConnectorType::Gitlab,
        ConnectorType::OAuth,
        ConnectorType::AuthProxy,
        ConnectorType::Microsoft,
        ConnectorType::Google,
        ConnectorType::Saml,
        ConnectorType::Local,
        ConnectorType::MockCallback,
        ConnectorType::MockPassword,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorType::Local => "local",
            ConnectorType::Ldap => "ldap",
            ConnectorType::Github => "github",
            ConnectorType::Oidc => "oidc",
            ConnectorType::Gitlab => "gitlab",
            ConnectorType::OAuth => "oauth",
            ConnectorType::AuthProxy => "authproxy",
            ConnectorType::Microsoft => "microsoft",
            ConnectorType::Google => "google",
            ConnectorType::Saml => "saml",
            ConnectorType::MockCallback => "mockCallback",
            ConnectorType::MockPassword => "mockPassword",
        }
    }

    pub fn parse(s: &str) -> Option<ConnectorType> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Whether the connector checks a username and password itself (password grant,
    /// `oauth2.passwordConnector`).
    pub fn checks_passwords(self) -> bool {
        matches!(
            self,
            ConnectorType::Local | ConnectorType::Ldap | ConnectorType::MockPassword
        )
    }
}

/// A connector the config declares, whether or not its settings are valid: what `oauth2` and
/// `staticClients` check their references against, so that one bad setting is reported once.
pub(super) struct DeclaredConnector {
    pub id: String,
    pub type_: ConnectorType,
}

/// Whether `id` names a connector: a declared one, or the password database.
pub(super) fn connector_exists(
    id: &str,
    declared: &[DeclaredConnector],
    enable_password_db: bool,
) -> bool {
    declared.iter().any(|c| c.id == id) || (enable_password_db && id == LOCAL_CONNECTOR_ID)
}

fn supported_connector_types() -> String {
    ConnectorType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The connectors whose settings are valid, and every declared one.
pub(super) fn resolve_connectors(
    value: Value,
    enable_password_db: bool,
    issuer: Option<&Url>,
    ctx: &mut Ctx,
) -> (Vec<ConnectorConfig>, Vec<DeclaredConnector>) {
    let mut out: Vec<ConnectorConfig> = Vec::new();
    let mut declared: Vec<DeclaredConnector> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, raw) in list_at::<RawConnector>(value, "connectors", ctx) {
        let path = index_path("connectors", i);
        let type_ = match raw.type_.as_deref().filter(|t| !t.is_empty()) {
            None => {
                ctx.err(
                    key_path(&path, "type"),
                    format!(
                        "missing required key `type` ({})",
                        supported_connector_types()
                    ),
                );
                None
            }
            Some(t) => {
                let parsed = ConnectorType::parse(t);
                if parsed.is_none() {
                    ctx.err(
                        key_path(&path, "type"),
                        format!(
                            "connector type `{t}` is not supported; supported types are {}",
                            supported_connector_types()
                        ),
                    );
                }
                parsed
            }
        };
        let id = match raw.id.filter(|id| !id.is_empty()) {
            Some(id) => {
                if let Some(first) = seen.get(&id) {
                    ctx.err(
                        key_path(&path, "id"),
                        format!("duplicate connector id `{id}` (also connectors[{first}])"),
                    );
                } else {
                    seen.insert(id.clone(), i);
                }
                Some(id)
            }
            None => {
                ctx.err(key_path(&path, "id"), "missing required key `id`");
                None
            }
        };
        if enable_password_db
            && id.as_deref() == Some(LOCAL_CONNECTOR_ID)
            && type_.is_some_and(|t| t != ConnectorType::Local)
        {
            ctx.err(
                key_path(&path, "id"),
                "connector id `local` is the password database's when enablePasswordDB is true",
            );
        }

        let config_path = key_path(&path, "config");
        let mut raw_config = raw.config.unwrap_or(Value::Null);
        ctx.expand(&mut raw_config, &config_path);
        let is_mapping = match &raw_config {
            Value::Null | Value::Mapping(_) => true,
            _ => {
                ctx.err(&config_path, "expected a mapping");
                false
            }
        };
        let settings = type_
            .and_then(|t| settings(t, raw_config, &config_path, ctx))
            .filter(|s| mock_allowed(s, issuer, &config_path, ctx));
        let (Some(type_), Some(id), true) = (type_, id, is_mapping) else {
            continue;
        };
        let name = raw
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.clone());
        declared.push(DeclaredConnector {
            id: id.clone(),
            type_,
        });
        if let Some(settings) = settings {
            out.push(ConnectorConfig {
                type_,
                id,
                name,
                settings,
            });
        }
    }
    (out, declared)
}

/// A connector kept in storage (created through Dex's gRPC API or `lanyard admin`), resolved
/// exactly as an entry of the file's `connectors` is: the same types, the same parsing and
/// the same checks, with errors under `config.<key>`. Its `config` is the JSON Dex stores and
/// is not expanded from the environment (Dex expands only the file). Returns the connector
/// and its warnings, or every error.
pub fn resolve_stored_connector(
    type_: &str,
    id: &str,
    name: &str,
    config: &serde_json::Value,
    issuer: &Url,
) -> Result<(ConnectorConfig, Vec<ConfigError>), Vec<ConfigError>> {
    let no_env = |_: &str| None;
    let mut ctx = Ctx::without_env(&no_env);
    let path = "config";
    let Some(parsed_type) = ConnectorType::parse(type_) else {
        ctx.err(
            "type",
            format!(
                "connector type `{type_}` is not supported; supported types are {}",
                supported_connector_types()
            ),
        );
        return Err(ctx.finish().0);
    };
    let raw = match config {
        serde_json::Value::Object(_) | serde_json::Value::Null => {
            serde_yaml_ng::to_value(config).unwrap_or(Value::Null)
        }
        _ => {
            ctx.err(path, "expected a JSON object");
            return Err(ctx.finish().0);
        }
    };
    let settings = settings(parsed_type, raw, path, &mut ctx)
        .filter(|s| mock_allowed(s, Some(issuer), path, &mut ctx));
    let settings = match settings {
        Some(ConnectorSettings::Invalid(errors)) => {
            ctx.errors.extend(errors);
            None
        }
        other => other,
    };
    let (errors, warnings) = ctx.finish();
    match settings {
        Some(settings) if errors.is_empty() => Ok((
            ConnectorConfig {
                type_: parsed_type,
                id: id.to_string(),
                name: name.to_string(),
                settings,
            },
            warnings,
        )),
        _ => Err(errors),
    }
}

/// A connector's `config` parsed into its type's settings and checked by the connector's own
/// rules (the same the connector applies when it is opened), each issue under its key.
fn settings(
    type_: ConnectorType,
    raw: Value,
    path: &str,
    ctx: &mut Ctx,
) -> Option<ConnectorSettings> {
    match type_ {
        ConnectorType::Local => ctx
            .de::<RawLocalConnector>(raw, path)
            .map(|_| ConnectorSettings::Local),
        ConnectorType::Ldap => {
            let ldap = ctx.de::<LdapConfig>(raw, path)?;
            checked(ldap.validate(), path, ctx, || {
                ConnectorSettings::Ldap(Box::new(ldap))
            })
        }
        ConnectorType::Github => {
            let github = ctx.de::<GithubConfig>(raw, path)?;
            checked(github.validate(), path, ctx, || {
                ConnectorSettings::Github(Box::new(github))
            })
        }
        ConnectorType::Oidc => {
            let oidc = ctx.de::<OidcConfig>(raw, path)?;
            checked(oidc.validate(), path, ctx, || {
                ConnectorSettings::Oidc(Box::new(oidc))
            })
        }
        ConnectorType::Gitlab => {
            let gitlab = ctx.de::<GitlabConfig>(raw, path)?;
            checked(gitlab.validate(), path, ctx, || {
                ConnectorSettings::Gitlab(Box::new(gitlab))
            })
        }
        ConnectorType::OAuth => {
            let oauth = ctx.de::<OAuthConfig>(raw, path)?;
            checked(oauth.validate(), path, ctx, || {
                ConnectorSettings::OAuth(Box::new(oauth))
            })
        }
        ConnectorType::AuthProxy => {
            let proxy = ctx.de::<AuthProxyConfig>(raw, path)?;
            checked(proxy.validate(), path, ctx, || {
                ConnectorSettings::AuthProxy(Box::new(proxy))
            })
        }
        ConnectorType::Microsoft => {
            let microsoft = ctx.de::<MicrosoftConfig>(raw, path)?;
            checked(microsoft.validate(), path, ctx, || {
                ConnectorSettings::Microsoft(Box::new(microsoft))
            })
        }
        ConnectorType::Google => {
            let google = ctx.de::<GoogleConfig>(raw, path)?;
            checked(google.validate(), path, ctx, || {
                ConnectorSettings::Google(Box::new(google))
            })
        }
        ConnectorType::Saml => {
            let saml = ctx.de::<SamlConfig>(raw, path)?;
            checked(saml.validate(), path, ctx, || {
                ConnectorSettings::Saml(Box::new(saml))
            })
        }
        ConnectorType::MockCallback => ctx
            .de::<MockCallbackConfig>(raw, path)
            .map(ConnectorSettings::MockCallback),
        ConnectorType::MockPassword => {
            let mock = ctx.de::<MockPasswordConfig>(raw, path)?;
            checked(mock.validate(), path, ctx, || {
                ConnectorSettings::MockPassword(Box::new(mock))
            })
        }
    }
}

/// Dex's mock connectors sign a fixed user in without checking anyone: allowed, loudly, on a
/// loopback issuer (Dex's development configs), refused elsewhere unless the connector's
/// config sets `insecureAllowNonLoopbackIssuer: true`.
fn mock_allowed(
    settings: &ConnectorSettings,
    issuer: Option<&Url>,
    path: &str,
    ctx: &mut Ctx,
) -> bool {
    let (what, allowed_anywhere) = match settings {
        ConnectorSettings::MockCallback(c) => (
            "mockCallback signs anyone who clicks its button in as Kilgore Trout",
            c.insecure_allow_non_loopback_issuer,
        ),
        ConnectorSettings::MockPassword(c) => (
            "mockPassword signs in as Kilgore Trout with the password written in the config",
            c.insecure_allow_non_loopback_issuer,
        ),
        _ => return true,
    };
    // An invalid issuer is reported on its own.
    let Some(issuer) = issuer else { return true };
    if is_loopback_issuer(issuer) || allowed_anywhere {
        ctx.warn(
            path,
            format!("DEVELOPMENT CONNECTOR: {what}; never use it where others can reach lanyard"),
        );
        true
    } else {
        ctx.err(
            key_path(path, ALLOW_NON_LOOPBACK_KEY),
            format!(
                "{what}, so it is refused with a non-loopback issuer ({issuer}); set {ALLOW_NON_LOOPBACK_KEY}: true in this connector's config only if that is really meant"
            ),
        );
        false
    }
}

/// The settings, or, when the connector's rules refuse them, [`ConnectorSettings::Invalid`]
/// with every refusal under its key; warnings go to the config's warnings either way.
fn checked(
    issues: Vec<ConfigIssue>,
    path: &str,
    ctx: &mut Ctx,
    settings: impl FnOnce() -> ConnectorSettings,
) -> Option<ConnectorSettings> {
    let mut refused = Vec::new();
    for issue in issues {
        let at = key_path(path, &issue.path);
        if issue.warning {
            ctx.warn(at, issue.message);
        } else {
            refused.push(ConfigError {
                path: at,
                message: issue.message,
            });
        }
    }
    Some(if refused.is_empty() {
        settings()
    } else {
        ConnectorSettings::Invalid(refused)
    })
}
