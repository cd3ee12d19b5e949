//! The config model against whole YAML files: Dex compatibility, every error class with its
//! path and message, defaults, and the check-config report.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use lanyard::config::{
    check_config_report, Config, ConfigErrors, ConnectorSettings, ConnectorType, CorsOrigin,
    GrantType, ListenAddr, LogFormat, LogLevel, PasswordHashKind, RbacRole, SigningAlg, DEV_CONFIG,
};
use lanyard::storage::StorageSettings;
use lanyard_connectors::LdapConfig;

const BCRYPT: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

/// A valid config that tests extend with extra top-level sections.
const BASE: &str = r#"
issuer: http://127.0.0.1:5556/dex
storage:
  type: memory
web:
  http: 127.0.0.1:5556
"#;

fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_yaml_str(text, &move |name| vars.get(name).cloned())
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with(text, &[])
}

/// The config's errors, or, for a config that loads, what its connectors' own rules refuse
/// (what `check-config` reports; `serve` starts without those connectors).
fn errors(text: &str) -> ConfigErrors {
    match parse(text) {
        Ok(config) if !config.connector_errors().is_empty() => {
            ConfigErrors(config.connector_errors())
        }
        Ok(config) => panic!("expected errors, got {config:?}"),
        Err(e) => e,
    }
}

/// Asserts that exactly one error sits at `path` and that its message contains `needle`.
fn assert_error(errors: &ConfigErrors, path: &str, needle: &str) {
    let at: Vec<_> = errors.0.iter().filter(|e| e.path == path).collect();
    assert!(
        at.len() == 1 && at[0].message.contains(needle),
        "wanted one error at `{path}` containing {needle:?}; got:\n{errors}"
    );
}

/// A listen address as it is logged and reported.
fn shown(addr: &Option<ListenAddr>) -> Option<String> {
    addr.as_ref().map(ToString::to_string)
}

fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// Modelled on Dex's examples/config-dev.yaml, with the mock connector replaced by `local`, and
/// its `frontend.dir` (`web/`, relative to Dex's checkout) the copy of Dex's `web/` among the
/// fixtures: the directory must exist.
const DEX_CONFIG_DEV: &str = concat!(
    r#"
# The base path of dex and the external name of the OpenID Connect service.
issuer: http://127.0.0.1:5556/dex

storage:
  type: sqlite3
  config:
    file: var/sqlite/dex.db

web:
  http: 0.0.0.0:5556
  headers:
    X-Frame-Options: "DENY"
    X-Content-Type-Options: "nosniff"
    X-XSS-Protection: "1; mode=block"
    Content-Security-Policy: "default-src 'self'"
    Strict-Transport-Security: "max-age=31536000; includeSubDomains"

frontend:
  issuer: dex
  logoURL: theme/logo.png
  dir: "#,
    env!("CARGO_MANIFEST_DIR"),
    r#"/tests/it/fixtures/dex/web/
  theme: light

telemetry:
  http: 0.0.0.0:5558

expiry:
  deviceRequests: "5m"
  signingKeys: "6h"
  idTokens: "24h"
  refreshTokens:
    reuseInterval: "3s"
    validIfNotUsedFor: "2160h" # 90 days
    absoluteLifetime: "3960h" # 165 days

logger:
  level: "debug"
  format: "text" # can also be "json"

oauth2:
  responseTypes: [ "code" ]
  skipApprovalScreen: false
  alwaysShowLoginScreen: false
  passwordConnector: local

staticClients:
- id: example-app
  redirectURIs:
  - 'http://127.0.0.1:5555/callback'
  name: 'Example App'
  secret: ZXhhbXBsZS1hcHAtc2VjcmV0
- id: example-device-client
  redirectURIs:
    - /device/callback
  name: 'Static Client for Device Flow'
  public: true

connectors:
- type: local
  id: local
  name: Email

enablePasswordDB: true

staticPasswords:
- email: "admin@example.com"
  # bcrypt hash of the string "password": $(echo password | htpasswd -BinC 10 admin | cut -d: -f2)
  hash: "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W"
  username: "admin"
  userID: "08a8684b-db88-4b73-90a9-3cd1661f5466"
"#
);

#[test]
fn dex_v2_example_config_parses_unchanged() {
    let c = parse(DEX_CONFIG_DEV).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.issuer_string(), "http://127.0.0.1:5556/dex");
    assert_eq!(c.issuer_path(), "/dex");
    assert_eq!(
        c.storage,
        StorageSettings::Sqlite {
            file: "var/sqlite/dex.db".into()
        }
    );
    assert_eq!(shown(&c.web.http).as_deref(), Some("0.0.0.0:5556"));
    assert_eq!(
        c.web.headers.x_frame_options.as_ref().map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
    assert_eq!(c.web.headers.pairs().len(), 5);
    assert_eq!(shown(&c.telemetry.http).as_deref(), Some("0.0.0.0:5558"));
    assert_eq!(c.logger.level, LogLevel::Debug);
    assert_eq!(c.logger.format, LogFormat::Text);
    assert_eq!(c.sessions.lifetime, Duration::from_secs(24 * 3600));
    assert_eq!(c.housekeeping.interval, Duration::from_secs(60));
    assert_eq!(
        c.expiry.refresh_tokens.reuse_interval,
        Duration::from_secs(3)
    );
    assert_eq!(
        c.expiry.refresh_tokens.valid_if_not_used_for,
        Some(Duration::from_secs(2160 * 3600))
    );
    assert_eq!(c.oauth2.password_connector.as_deref(), Some("local"));
    assert!(c.oauth2.grant_types.contains(&GrantType::Password));

    let app = c.static_client("example-app").expect("example-app");
    assert_eq!(app.secret.as_deref(), Some("ZXhhbXBsZS1hcHAtc2VjcmV0"));
    assert_eq!(app.name, "Example App");
    assert!(!app.public);
    assert_eq!(app.redirect_uris, vec!["http://127.0.0.1:5555/callback"]);
    let device = c
        .static_client("example-device-client")
        .expect("device client");
    assert!(device.public && device.secret.is_none());

    assert!(c.enable_password_db);
    assert_eq!(c.static_passwords.len(), 1);
    let admin = &c.static_passwords[0];
    assert_eq!(admin.email, "admin@example.com");
    assert_eq!(admin.hash, BCRYPT);
    assert_eq!(admin.hash_kind(), PasswordHashKind::Bcrypt);
    assert_eq!(admin.username, "admin");
    assert_eq!(admin.user_id, "08a8684b-db88-4b73-90a9-3cd1661f5466");

    assert_eq!(c.connectors.len(), 1);
    assert_eq!(c.connectors[0].type_, ConnectorType::Local);
    assert_eq!(c.connectors[0].name, "Email");
    assert_eq!(c.frontend.issuer.as_deref(), Some("dex"));
    assert_eq!(c.frontend.theme.as_deref(), Some("light"));
}

#[test]
fn embedded_dev_config_has_the_documented_values() {
    let c = Config::embedded_default().unwrap_or_else(|e| panic!("{e}"));
    assert!(Config::from_yaml_str(DEV_CONFIG, &|_| None).is_ok());
    assert_eq!(c.issuer_string(), "http://127.0.0.1:5556");
    assert_eq!(c.issuer_path(), "");
    assert_eq!(
        c.storage,
        StorageSettings::Sqlite {
            file: "lanyard-data/lanyard.db".into()
        }
    );
    assert_eq!(shown(&c.web.http).as_deref(), Some("127.0.0.1:5556"));
    assert_eq!(shown(&c.telemetry.http).as_deref(), Some("127.0.0.1:5558"));
    assert!(c.enable_password_db);
    assert!(c.static_passwords.is_empty());
    assert!(!c.oauth2.skip_approval_screen);
    assert_eq!(c.keys.encryption_key, None);
    let app = c.static_client("example-app").expect("example-app");
    assert!(app.public);
    assert_eq!(app.name, "Example App");
    assert_eq!(app.redirect_uris, vec!["http://127.0.0.1:5555/callback"]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn basic_example_parses_with_its_variables() {
    let text = std::fs::read_to_string("config/examples/basic.yaml").unwrap();
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let c = parse_with(
        &text,
        &[
            ("POSTGRES_PASSWORD", "pg-secret"),
            ("KUBE_LOGIN_SECRET", "client-secret"),
            ("LANYARD_ENCRYPTION_KEY", key),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let StorageSettings::Postgres(pg) = &c.storage else {
        panic!("expected postgres, got {:?}", c.storage)
    };
    assert_eq!(pg.password.as_deref(), Some("pg-secret"));
    assert_eq!(pg.port, Some(5432));
    assert_eq!(pg.ssl_mode.as_deref(), Some("verify-full"));
    assert_eq!(
        c.static_client("kube-login").unwrap().secret.as_deref(),
        Some("client-secret")
    );
    let expected: Vec<u8> = (0u8..32).collect();
    assert_eq!(c.keys.encryption_key.map(|k| k.to_vec()), Some(expected));
    assert_eq!(c.static_passwords[0].hash, BCRYPT);
    assert_eq!(c.static_passwords[0].groups, vec!["cluster-admins"]);
}

#[test]
fn defaults_apply_when_sections_are_absent() {
    let c = parse(BASE).unwrap();
    assert_eq!(c.expiry.signing_keys, Duration::from_secs(6 * 3600));
    assert_eq!(c.expiry.id_tokens, Duration::from_secs(24 * 3600));
    assert_eq!(c.expiry.auth_requests, Duration::from_secs(30 * 60));
    assert_eq!(c.expiry.device_requests, Duration::from_secs(5 * 60));
    assert_eq!(
        c.expiry.refresh_tokens.reuse_interval,
        Duration::from_secs(5)
    );
    assert_eq!(c.expiry.refresh_tokens.valid_if_not_used_for, None);
    assert_eq!(c.expiry.refresh_tokens.absolute_lifetime, None);
    assert!(!c.expiry.refresh_tokens.disable_rotation);
    assert_eq!(c.logger.level, LogLevel::Info);
    assert_eq!(c.logger.format, LogFormat::Text);
    assert_eq!(c.keys.algorithm, SigningAlg::RS256);
    assert_eq!(c.keys.rotation_period, Duration::from_secs(6 * 3600));
    assert_eq!(c.keys.publish_ahead, Duration::from_secs(15 * 60));
    assert_eq!(c.keys.poll_interval, Duration::from_secs(30));
    assert_eq!(c.oauth2.response_types.len(), 1);
    assert_eq!(
        c.oauth2.grant_types,
        vec![
            GrantType::AuthorizationCode,
            GrantType::RefreshToken,
            GrantType::DeviceCode,
            GrantType::TokenExchange,
            GrantType::ClientCredentials,
        ]
    );
    assert!(!c.enable_password_db);
}

#[test]
fn rotation_period_comes_from_keys_then_expiry() {
    let c = parse(&with_base("expiry:\n  signingKeys: 12h\n")).unwrap();
    assert_eq!(c.keys.rotation_period, Duration::from_secs(12 * 3600));
    let c = parse(&with_base(
        "expiry:\n  signingKeys: 12h\nkeys:\n  rotationPeriod: 3h\n",
    ))
    .unwrap();
    assert_eq!(c.keys.rotation_period, Duration::from_secs(3 * 3600));
}

#[test]
fn dex_local_signer_sets_the_rotation_period_over_expiry_signing_keys() {
    let c = parse_with(
        &with_base("signer:\n  type: local\n  config:\n    keysRotationPeriod: $ROTATE\n"),
        &[("ROTATE", "2h")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.keys.rotation_period, Duration::from_secs(2 * 3600));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // As in Dex, the signer wins over expiry.signingKeys, with a warning.
    let c = parse(&with_base(
        "expiry:\n  signingKeys: 12h\nsigner:\n  type: local\n  config:\n    keysRotationPeriod: 3h\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.keys.rotation_period, Duration::from_secs(3 * 3600));
    assert!(warning_at(&c, "expiry.signingKeys").contains("signer.config.keysRotationPeriod"));
}

#[test]
fn signer_settings_lanyard_cannot_honour_are_refused_naming_the_equivalent() {
    let e = errors(&with_base(
        "signer:\n  type: vault\n  config:\n    addr: https://vault:8200\n    keyName: dex\n",
    ));
    assert_error(&e, "signer.type", "keys.encryptionKey");
    let e = errors(&with_base("signer:\n  type: hsm\n"));
    assert_error(&e, "signer.type", "unknown signer type `hsm`");
    let e = errors(&with_base("signer:\n  type: local\n"));
    assert_error(
        &e,
        "signer.config.keysRotationPeriod",
        "missing required key `keysRotationPeriod`",
    );
    let e = errors(&with_base(
        "signer:\n  type: local\n  config:\n    keysRotationPeriod: 1h\n    rotate: true\n",
    ));
    assert_error(&e, "signer.config.rotate", "unknown key");
    let e = errors(&with_base(
        "signer:\n  type: local\n  config:\n    keysRotationPeriod: soon\n",
    ));
    assert_error(&e, "signer.config.keysRotationPeriod", "invalid duration");
    // Two places for one setting: refused rather than one silently winning.
    let e = errors(&with_base(
        "signer:\n  type: local\n  config:\n    keysRotationPeriod: 1h\nkeys:\n  rotationPeriod: 2h\n",
    ));
    assert_error(&e, "keys.rotationPeriod", "not both");
}

#[test]
fn issuer_trailing_slash_is_trimmed() {
    let c = parse(&BASE.replace("/dex", "/dex/")).unwrap();
    assert_eq!(c.issuer_string(), "http://127.0.0.1:5556/dex");
    assert_eq!(c.issuer_path(), "/dex");
    let c = parse(&BASE.replace("/dex", "/")).unwrap();
    assert_eq!(c.issuer_string(), "http://127.0.0.1:5556");
    assert_eq!(c.issuer_path(), "");
}

// ----- unknown keys -------------------------------------------------------------------

#[test]
fn unknown_nested_key_names_path_and_suggests_dex_spelling() {
    let e = errors(&with_base(
        "staticClients:\n- id: a\n  public: true\n  redirectURLs: [http://x/cb]\n",
    ));
    assert_error(
        &e,
        "staticClients[0].redirectURLs",
        "unknown key `redirectURLs`; did you mean `redirectURIs`?",
    );
}

/// The warning at `path`, which must be the only one there.
fn warning_at<'a>(c: &'a Config, path: &str) -> &'a str {
    let at: Vec<_> = c.warnings.iter().filter(|w| w.path == path).collect();
    assert!(
        at.len() == 1,
        "wanted one warning at `{path}`; got {:?}",
        c.warnings
    );
    &at[0].message
}

#[test]
fn keys_matching_ignoring_case_are_read_with_a_warning_naming_the_canonical_key() {
    // Go's encoding/json matches keys ignoring case, so Dex reads all of these.
    let c = parse(
        "Issuer: http://127.0.0.1:5556/dex\nstorage:\n  Type: postgres\n  config:\n    Host: db.internal\n    SSL:\n      Mode: require\nWeb:\n  HTTP: 127.0.0.1:5556\n  headers:\n    x-frame-options: DENY\nstaticClients:\n- ID: app\n  secret: s\n  redirectUris: [https://a.example/cb]\nconnectors:\n- type: oidc\n  id: corp\n  config:\n    issuer: https://idp.example.com\n    clientId: x\n    clientSecret: y\n    redirectURI: http://127.0.0.1:5556/dex/callback\n    ClaimMapping:\n      Preferred_Username: upn\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.issuer_string(), "http://127.0.0.1:5556/dex");
    let StorageSettings::Postgres(pg) = &c.storage else {
        panic!("{:?}", c.storage)
    };
    assert_eq!(pg.host.as_deref(), Some("db.internal"));
    assert_eq!(pg.ssl_mode.as_deref(), Some("require"));
    assert_eq!(shown(&c.web.http).as_deref(), Some("127.0.0.1:5556"));
    assert_eq!(
        c.web.headers.x_frame_options.as_ref().map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
    assert_eq!(
        c.static_client("app").unwrap().redirect_uris,
        vec!["https://a.example/cb"]
    );
    let lanyard::config::ConnectorSettings::Oidc(oidc) = &c.connector("corp").unwrap().settings
    else {
        panic!()
    };
    assert_eq!(oidc.client_id, "x");
    assert_eq!(oidc.claim_mapping.preferred_username, "upn");
    for (path, canonical) in [
        ("Issuer", "issuer"),
        ("storage.Type", "type"),
        ("storage.config.Host", "host"),
        ("storage.config.SSL", "ssl"),
        ("storage.config.ssl.Mode", "mode"),
        ("Web", "web"),
        ("web.HTTP", "http"),
        ("web.headers.x-frame-options", "X-Frame-Options"),
        ("staticClients[0].ID", "id"),
        ("staticClients[0].redirectUris", "redirectURIs"),
        ("connectors[0].config.clientId", "clientID"),
        ("connectors[0].config.ClaimMapping", "claimMapping"),
        (
            "connectors[0].config.claimMapping.Preferred_Username",
            "preferred_username",
        ),
    ] {
        let w = warning_at(&c, path);
        assert!(w.contains(&format!("read as `{canonical}`")), "{path}: {w}");
    }
}

#[test]
fn a_key_given_twice_in_different_case_is_an_error() {
    let e = errors(&with_base(
        "staticClients:\n- id: app\n  ID: other\n  secret: s\n  redirectURIs: [https://a.example/cb]\n",
    ));
    assert_error(&e, "staticClients[0].ID", "keep only `id`");
    let e = errors(&with_base("Web:\n  http: 127.0.0.1:5557\n"));
    assert_error(&e, "Web", "`web` is set twice");
}

#[test]
fn numbers_and_booleans_where_text_is_expected_are_read_as_text() {
    // Dex's YAML-to-JSON step turns them into strings for string fields.
    let c = parse(&format!(
        "{BASE}  tlsMinVersion: 1.2\n  tlsMaxVersion: 1.3\nstaticClients:\n- id: 42\n  secret: 123456\n  name: true\n  redirectURIs: [https://a.example/cb]\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.web.tls_min_version,
        Some(lanyard::config::TlsVersion::Tls12)
    );
    assert_eq!(
        c.web.tls_max_version,
        Some(lanyard::config::TlsVersion::Tls13)
    );
    let app = c.static_client("42").unwrap();
    assert_eq!(app.secret.as_deref(), Some("123456"));
    assert_eq!(app.name, "true");
    // The TLS versions are documented unquoted by Dex; elsewhere a number is worth a warning.
    assert!(!c.warnings.iter().any(|w| w.path.starts_with("web.")));
    assert!(warning_at(&c, "staticClients[0].secret").contains("quote the value"));
    let e = errors(&format!("{BASE}  tlsMinVersion: 1.1\n"));
    assert_error(&e, "web.tlsMinVersion", "unknown TLS version `1.1`");
}

#[test]
fn unknown_key_in_web_suggests_closest() {
    let e = errors(&BASE.replace("  http:", "  htp:"));
    assert_error(&e, "web.htp", "did you mean `http`?");
}

#[test]
fn unknown_top_level_key_suggests_closest() {
    let e = errors(&with_base("staticClient: []\n"));
    assert_error(&e, "staticClient", "did you mean `staticClients`?");
    let e = errors(&with_base("kubernets: {}\n"));
    assert_error(&e, "kubernets", "did you mean `kubernetes`?");
}

#[test]
fn unknown_key_without_close_match_lists_the_valid_keys() {
    let e = errors(&with_base("logger:\n  colour: red\n"));
    assert_error(&e, "logger.colour", "expected one of `level`, `format`");
}

#[test]
fn wrong_type_names_the_path() {
    let e = errors(&with_base("oauth2:\n  responseTypes: code\n"));
    assert_error(&e, "oauth2.responseTypes", "invalid type");
    let e = errors(&with_base("enablePasswordDB: maybe\n"));
    assert_error(&e, "enablePasswordDB", "expected true or false");
}

// ----- environment ------------------------------------------------------------------------

/// A Dex config with an LDAP connector whose `config` is `ldap_config` (indented by 4).
fn with_ldap(ldap_config: &str) -> String {
    with_base(&format!(
        "connectors:\n- type: ldap\n  id: ldap\n  name: LDAP\n  config:\n    host: ldap.example.com:636\n    bindDN: cn=admin,dc=example,dc=com\n    userSearch:\n      baseDN: ou=people,dc=example,dc=com\n      username: uid\n{ldap_config}"
    ))
}

fn ldap_settings(c: &Config) -> &LdapConfig {
    match &c.connector("ldap").unwrap().settings {
        ConnectorSettings::Ldap(ldap) => ldap,
        other => panic!("expected ldap settings, got {other:?}"),
    }
}

fn ldap_bind_pw(c: &Config) -> String {
    ldap_settings(c).bind_pw.clone()
}

#[test]
fn missing_env_var_is_named_with_its_path() {
    let e = parse_with(
        &with_ldap("    bindPW: ${LDAP_PW}\n    rootCA: $CA_FILE\n"),
        &[("CA_FILE", "/etc/ca.pem")],
    )
    .unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_error(
        &e,
        "connectors[0].config.bindPW",
        "environment variable `LDAP_PW` is not set",
    );
}

#[test]
fn unset_env_var_in_an_optional_connector_field_is_an_error_and_empty_is_allowed() {
    // Dex would substitute "" silently; lanyard refuses, and an empty variable says "empty".
    let text = with_ldap("    bindPW: pw\n    rootCA: $LDAP_CA\n");
    let e = parse_with(&text, &[]).unwrap_err();
    assert_error(
        &e,
        "connectors[0].config.rootCA",
        "environment variable `LDAP_CA` is not set",
    );
    let c = parse_with(&text, &[("LDAP_CA", "")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ldap_settings(&c).root_ca, "");
}

#[test]
fn env_vars_expand_in_storage_and_connector_config() {
    let c = parse_with(
        "issuer: https://login.example.com/dex\nstorage:\n  type: postgres\n  config:\n    host: $PGHOST\n    port: $PGPORT\n    password: ${PGPASS}\nweb:\n  http: 127.0.0.1:5556\nconnectors:\n- type: github\n  id: github\n  name: GitHub\n  config:\n    clientID: $GH_ID\n    clientSecret: ${GH_SECRET}\n    redirectURI: https://login.example.com/dex/callback\n    orgs:\n    - name: $GH_ORG\n      teams: [$GH_TEAM]\n",
        &[
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGPASS", "pw"),
            ("GH_ID", "id-1"),
            ("GH_SECRET", "gh-s3cret"),
            ("GH_ORG", "acme"),
            ("GH_TEAM", "platform"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let StorageSettings::Postgres(pg) = &c.storage else {
        panic!()
    };
    assert_eq!(pg.host.as_deref(), Some("db.internal"));
    assert_eq!(pg.port, Some(6543));
    assert_eq!(pg.password.as_deref(), Some("pw"));
    let ConnectorSettings::Github(gh) = &c.connector("github").unwrap().settings else {
        panic!("expected github settings")
    };
    assert_eq!(gh.client_id.as_deref(), Some("id-1"));
    assert_eq!(gh.client_secret.as_deref(), Some("gh-s3cret"));
    let orgs = gh.orgs.as_deref().unwrap_or_default();
    assert_eq!(orgs[0].name.as_deref(), Some("acme"));
    assert_eq!(
        orgs[0].teams.as_deref(),
        Some(&["platform".to_string()][..])
    );
}

#[test]
fn a_dollar_outside_dex_expansion_places_stays_literal() {
    // Dex expands only storage, connector and signer configs; everywhere else `$` is text.
    let c = parse(
        "issuer: http://127.0.0.1:5556/dex\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\nfrontend:\n  issuer: $BRAND\n  extra:\n    motto: ${MOTTO}\nstaticClients:\n- id: app\n  name: $APP\n  secret: s3cr$t-value\n  redirectURIs: [https://a.example/cb]\nenablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  username: $USER\n  hash: \"$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let app = c.static_client("app").unwrap();
    assert_eq!(app.secret.as_deref(), Some("s3cr$t-value"));
    assert_eq!(app.name, "$APP");
    assert_eq!(c.frontend.issuer.as_deref(), Some("$BRAND"));
    assert_eq!(c.frontend.extra["motto"], "${MOTTO}");
    assert_eq!(c.static_passwords[0].username, "$USER");
}

#[test]
fn double_dollar_is_a_literal_dollar_where_expansion_happens() {
    let c = parse(&with_ldap("    bindPW: pa$$word\n")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ldap_bind_pw(&c), "pa$word");
    // Where nothing expands, `$$` is two dollars, as in Dex.
    let c = parse(&with_base(
        "staticClients:\n- id: app\n  secret: pa$$word\n  redirectURIs: [https://a.example/cb]\n",
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.static_client("app").unwrap().secret.as_deref(),
        Some("pa$$word")
    );
}

#[test]
fn dex_expand_env_false_turns_expansion_off() {
    let text = with_ldap("    bindPW: pa$word\n");
    let e = parse_with(&text, &[]).unwrap_err();
    assert_error(
        &e,
        "connectors[0].config.bindPW",
        "environment variable `word` is not set",
    );
    let c = parse_with(&text, &[("DEX_EXPAND_ENV", "false")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ldap_bind_pw(&c), "pa$word");
    let c = parse_with(&text, &[("DEX_EXPAND_ENV", "true"), ("word", "ss")])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ldap_bind_pw(&c), "pass");
    let e = parse_with(&text, &[("DEX_EXPAND_ENV", "nope")]).unwrap_err();
    assert!(e.to_string().contains("DEX_EXPAND_ENV"), "{e}");
}

#[test]
fn lanyards_own_sections_expand_env_vars() {
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let c = parse_with(
        &with_base("keys:\n  encryptionKey: $KEK\n"),
        &[("KEK", key)],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.keys.encryption_key.unwrap()[1], 1);
    let e = parse(&with_base("keys:\n  encryptionKey: $KEK\n")).unwrap_err();
    assert_error(
        &e,
        "keys.encryptionKey",
        "environment variable `KEK` is not set",
    );
}

#[test]
fn env_values_cannot_inject_yaml() {
    let c = parse_with(
        &with_ldap("    bindPW: $PW\n"),
        &[("PW", "pw\nissuer: https://evil.example")],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ldap_bind_pw(&c), "pw\nissuer: https://evil.example");
    assert_eq!(c.issuer_string(), "http://127.0.0.1:5556/dex");
}

#[test]
fn password_hash_is_never_expanded() {
    // The salt starts with a letter, so `$N9qo...` would read as a variable if expanded.
    let hash = "$2y$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";
    assert_eq!(hash.len(), 60);
    let c = parse(&with_base(&format!(
        "enablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: \"{hash}\"\n"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.static_passwords[0].hash, hash);
}

#[test]
fn client_id_and_secret_come_from_env() {
    let text = with_base(
        "staticClients:\n- idEnv: APP_ID\n  secretEnv: APP_SECRET\n  redirectURIs: [https://a.example/cb]\n",
    );
    let c = parse_with(&text, &[("APP_ID", "app"), ("APP_SECRET", "s3cret")]).unwrap();
    assert_eq!(
        c.static_client("app").unwrap().secret.as_deref(),
        Some("s3cret")
    );
    let e = parse_with(&text, &[("APP_ID", "app")]).unwrap_err();
    assert_error(
        &e,
        "staticClients[0].secretEnv",
        "environment variable `APP_SECRET` is not set",
    );
}

// ----- storage ------------------------------------------------------------------------------

#[test]
fn mysql_storage_is_rejected_with_postgres_suggested() {
    let e = errors(&BASE.replace("type: memory", "type: mysql"));
    assert_error(
        &e,
        "storage.type",
        "lanyard supports sqlite3, postgres and memory",
    );
    assert_error(&e, "storage.type", "use postgres for production");
}

#[test]
fn unknown_storage_type_lists_valid_ones() {
    let e = errors(&BASE.replace("type: memory", "type: mongo"));
    assert_error(
        &e,
        "storage.type",
        "unknown storage type `mongo`; expected one of sqlite3, postgres, memory",
    );
}

#[test]
fn postgres_rejects_unknown_keys_and_bad_ssl_mode() {
    let e = errors(&BASE.replace("type: memory", "type: postgres\n  config:\n    hots: db\n"));
    assert_error(&e, "storage.config.hots", "did you mean `host`?");
    let e = errors(&BASE.replace(
        "type: memory",
        "type: postgres\n  config:\n    ssl:\n      mode: sometimes\n",
    ));
    assert_error(
        &e,
        "storage.config.ssl.mode",
        "unknown SSL mode `sometimes`",
    );
}

#[test]
fn sqlite_needs_a_file() {
    let e = errors(&BASE.replace("type: memory", "type: sqlite3"));
    assert_error(&e, "storage.config.file", "missing required key `file`");
}

// ----- values -------------------------------------------------------------------------------

#[test]
fn bad_duration_names_path_and_value() {
    let e = errors(&with_base("expiry:\n  idTokens: 10 minutes\n"));
    assert_error(&e, "expiry.idTokens", "invalid duration `10 minutes`");
    let e = errors(&with_base(
        "expiry:\n  refreshTokens:\n    reuseInterval: 5\n",
    ));
    assert_error(
        &e,
        "expiry.refreshTokens.reuseInterval",
        "invalid duration `5`: missing unit",
    );
}

#[test]
fn bad_issuer_url_is_reported() {
    let e = errors(&BASE.replace("http://127.0.0.1:5556/dex", "127.0.0.1:5556/dex"));
    assert_error(&e, "issuer", "is not a valid URL");
    let e = errors(&BASE.replace("http://127.0.0.1:5556/dex", "https://a.example/?x=1"));
    assert_error(&e, "issuer", "must not have a query");
    let e = errors(&BASE.replace("http://127.0.0.1:5556/dex", "ldap://a.example"));
    assert_error(&e, "issuer", "must be an https (or http) URL");
}

#[test]
fn bad_enum_values_are_reported() {
    let e = errors(&with_base("logger:\n  format: yaml\n"));
    assert_error(
        &e,
        "logger.format",
        "unknown log format `yaml`; expected text or json",
    );
    let e = errors(&with_base("keys:\n  algorithm: HS256\n"));
    assert_error(
        &e,
        "keys.algorithm",
        "unknown signing algorithm `HS256`; expected RS256 or ES256",
    );
    let e = errors(&with_base(
        "oauth2:\n  grantTypes: [authorization_code, magic]\n",
    ));
    assert_error(&e, "oauth2.grantTypes[1]", "unknown grant type `magic`");
}

const WEB_BASE: &str =
    "issuer: http://127.0.0.1:5556/dex\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\n";

#[test]
fn web_origins_and_header_names_resolve_typed_and_normalised() {
    let c = parse(&format!(
        "{WEB_BASE}  allowedOrigins: ['*', 'https://Dash.Example.com:443/', 'http://127.0.0.1:8000']\n  allowedHeaders: [X-Tenant]\n  clientRemoteIP:\n    header: X-Real-IP\n  headers:\n    X-Frame-Options: DENY\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.web.allowed_origins,
        vec![
            CorsOrigin::Any,
            CorsOrigin::Exact(HeaderValue::from_static("https://dash.example.com")),
            CorsOrigin::Exact(HeaderValue::from_static("http://127.0.0.1:8000")),
        ]
    );
    assert_eq!(
        c.web.allowed_headers,
        vec![HeaderName::from_static("x-tenant")]
    );
    assert_eq!(
        c.web.client_remote_ip.header,
        Some(HeaderName::from_static("x-real-ip"))
    );
    assert_eq!(
        c.web.headers.pairs(),
        vec![(
            HeaderName::from_static("x-frame-options"),
            HeaderValue::from_static("DENY")
        )]
    );
}

#[test]
fn bad_web_origins_header_names_and_values_name_their_path() {
    let e = errors(&format!(
        "{WEB_BASE}  allowedOrigins: ['https://a.example/path', 'a.example']\n  allowedHeaders: [ok, 'bad header']\n  clientRemoteIP:\n    header: 'X:Y'\n  headers:\n    X-Frame-Options: \"d\\u00e9ny\"\n    Content-Security-Policy: \"a\\nb\"\n"
    ));
    assert_error(
        &e,
        "web.allowedOrigins[0]",
        "`https://a.example/path` is not an origin; expected `*` or scheme://host[:port]",
    );
    assert_error(&e, "web.allowedOrigins[1]", "`a.example` is not an origin");
    assert_error(
        &e,
        "web.allowedHeaders[1]",
        "`bad header` is not a valid header name",
    );
    assert_error(
        &e,
        "web.clientRemoteIP.header",
        "`X:Y` is not a valid header name",
    );
    // Bytes above ASCII would pass the http crate's check; the config refuses them.
    assert_error(
        &e,
        "web.headers.X-Frame-Options",
        "contains characters not allowed in an HTTP header",
    );
    assert_error(
        &e,
        "web.headers.Content-Security-Policy",
        "contains characters not allowed in an HTTP header",
    );
    assert_eq!(e.0.len(), 6, "{e}");
}

#[test]
fn web_needs_a_listen_address_and_https_needs_certs() {
    let e = errors("issuer: https://a.example\nstorage:\n  type: memory\n");
    assert_error(&e, "web", "set `web.http` or `web.https`");
    let e = errors(&BASE.replace("http: 127.0.0.1:5556", "https: 127.0.0.1:5554"));
    assert_error(&e, "web.tlsCert", "required when web.https is set");
    assert_error(&e, "web.tlsKey", "required when web.https is set");
    let e = errors(&BASE.replace("127.0.0.1:5556\n", "localhost\n"));
    assert_error(&e, "web.http", "not a host:port");
}

/// Every listen address is read as Dex's `net.Listen` reads it, and one it would not bind is
/// refused at load, named by its key, with nothing else reported about its section.
#[test]
fn listen_addresses_are_typed_at_load_and_bad_ones_name_their_key() {
    for (written, read) in [
        (":5556", "0.0.0.0:5556"),
        ("localhost:5556", "localhost:5556"),
        ("\"[::1]:5556\"", "[::1]:5556"),
        ("0.0.0.0:5556", "0.0.0.0:5556"),
    ] {
        let c = parse(&BASE.replace("127.0.0.1:5556\n", &format!("{written}\n")))
            .unwrap_or_else(|e| panic!("{written}: {e}"));
        assert_eq!(shown(&c.web.http).as_deref(), Some(read));
    }
    let c = parse(&BASE.replace("web:\n", "web:\n  https: \"\"\n")).expect("empty is absent");
    assert!(c.web.https.is_none());

    for (yaml, path, needle) in [
        (
            BASE.replace("127.0.0.1:5556\n", "5556\n"),
            "web.http",
            "not a host:port",
        ),
        (
            BASE.replace("web:\n", "web:\n  https: 127.0.0.1:99999\n"),
            "web.https",
            "invalid port",
        ),
        (
            with_base("telemetry:\n  http: metrics host:5558\n"),
            "telemetry.http",
            "invalid host",
        ),
        (
            with_base("grpc:\n  addr: ::1:5557\n"),
            "grpc.addr",
            "put IPv6 addresses in brackets",
        ),
    ] {
        let e = errors(&yaml);
        assert_error(&e, path, needle);
        assert_eq!(e.0.len(), 1, "{e}");
    }
}

#[test]
fn connection_limits_default_and_bad_values_name_their_path() {
    let limits = parse(BASE).unwrap().web.limits;
    assert_eq!(limits.header_read, Duration::from_secs(10));
    assert_eq!(limits.tls_handshake, Duration::from_secs(10));
    assert_eq!(limits.request_body, Duration::from_secs(30));
    assert_eq!(limits.idle, Duration::from_secs(120));
    assert_eq!(limits.max_connections, 4096);
    let set = parse(&BASE.replace(
        "web:\n",
        "web:\n  headerReadTimeout: 5s\n  tlsHandshakeTimeout: 3s\n  requestBodyTimeout: 1m\n  \
idleTimeout: 30s\n  maxConnections: 100\n",
    ))
    .unwrap()
    .web
    .limits;
    assert_eq!(set.header_read, Duration::from_secs(5));
    assert_eq!(set.tls_handshake, Duration::from_secs(3));
    assert_eq!(set.request_body, Duration::from_secs(60));
    assert_eq!(set.idle, Duration::from_secs(30));
    assert_eq!(set.max_connections, 100);
    let e = errors(&BASE.replace(
        "web:\n",
        "web:\n  headerReadTimeout: 0s\n  tlsHandshakeTimeout: soon\n  maxConnections: 0\n",
    ));
    assert_error(&e, "web.headerReadTimeout", "longer than 0");
    assert_error(&e, "web.tlsHandshakeTimeout", "invalid duration");
    assert_error(&e, "web.maxConnections", "between 1 and");
    let e = errors(&BASE.replace("web:\n", "web:\n  idleTimout: 1s\n"));
    assert!(e.to_string().contains("idleTimeout"), "{e}");
}

#[test]
fn grpc_section_is_dexs() {
    let c = parse(&with_base(
        "grpc:\n  addr: 127.0.0.1:5557\n  reflection: true\n  tlsCert: /c.pem\n  tlsKey: /k.pem\n  tlsClientCA: /ca.pem\n  tlsMinVersion: \"1.3\"\n",
    ))
    .expect("valid");
    assert_eq!(shown(&c.grpc.addr).as_deref(), Some("127.0.0.1:5557"));
    assert!(c.grpc.reflection);
    let tls = c.grpc.tls.expect("tls");
    assert_eq!(
        tls.client_ca.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    assert!(parse(BASE).expect("valid").grpc.addr.is_none());
}

#[test]
fn grpc_without_client_certificates_is_refused_beyond_loopback() {
    let e = errors(&with_base("grpc:\n  addr: 0.0.0.0:5557\n"));
    assert_error(&e, "grpc.addr", "grpc.tlsClientCA");
    let e = errors(&with_base(
        "grpc:\n  addr: 0.0.0.0:5557\n  tlsCert: /c.pem\n  tlsKey: /k.pem\n",
    ));
    assert_error(&e, "grpc.addr", "allowInsecureRemote");
    parse(&with_base(
        "grpc:\n  addr: 0.0.0.0:5557\n  allowInsecureRemote: true\n",
    ))
    .expect("allowed explicitly");
    parse(&with_base(
        "grpc:\n  addr: 0.0.0.0:5557\n  tlsCert: /c.pem\n  tlsKey: /k.pem\n  tlsClientCA: /ca.pem\n",
    ))
    .expect("mutual TLS");
}

#[test]
fn grpc_tls_settings_are_checked_as_dex_checks_them() {
    let e = errors(&with_base(
        "grpc:\n  addr: 127.0.0.1:5557\n  tlsCert: /c.pem\n",
    ));
    assert_error(&e, "grpc.tlsKey", "required when grpc.tlsCert is set");
    let e = errors(&with_base(
        "grpc:\n  addr: 127.0.0.1:5557\n  tlsClientCA: /ca.pem\n",
    ));
    assert_error(&e, "grpc.tlsClientCA", "needs grpc.tlsCert");
    let e = errors(&with_base("grpc:\n  tlsCert: /c.pem\n  tlsKey: /k.pem\n"));
    assert_error(&e, "grpc.addr", "required");
    let e = errors(&with_base(
        "grpc:\n  addr: 127.0.0.1:5557\n  tlsMinVersion: \"1.1\"\n",
    ));
    assert_error(&e, "grpc.tlsMinVersion", "");
    let e = errors(&with_base(
        "grpc:\n  addr: 127.0.0.1:5557\n  reflecton: true\n",
    ));
    assert!(e.to_string().contains("reflection"), "{e}");
}

#[test]
fn dex_connector_crud_flag_is_read_as_dex_reads_it_and_refused_when_not_a_boolean() {
    let base = with_base("grpc:\n  addr: 127.0.0.1:5557\n");
    for (value, on) in [
        ("true", true),
        ("1", true),
        ("T", true),
        ("false", false),
        ("", false),
    ] {
        let config = parse_with(&base, &[("DEX_API_CONNECTORS_CRUD", value)]).expect("loads");
        assert_eq!(config.grpc.connectors_crud, on, "{value:?}");
    }
    assert!(!parse_with(&base, &[]).expect("loads").grpc.connectors_crud);
    let e = parse_with(&base, &[("DEX_API_CONNECTORS_CRUD", "yes")]).expect_err("refused");
    assert_error(&e, "grpc", "DEX_API_CONNECTORS_CRUD");
}

// ----- clients ------------------------------------------------------------------------------

#[test]
fn duplicate_client_ids_are_reported() {
    let e = errors(&with_base(
        "staticClients:\n- id: app\n  public: true\n- id: app\n  public: true\n",
    ));
    assert_error(
        &e,
        "staticClients[1].id",
        "duplicate client id `app` (also staticClients[0])",
    );
}

#[test]
fn non_public_client_without_secret_is_rejected() {
    let e = errors(&with_base(
        "staticClients:\n- id: app\n  redirectURIs: [https://a.example/cb]\n",
    ));
    assert_error(
        &e,
        "staticClients[0].secret",
        "a client that is not public needs `secret` or `secretEnv`",
    );
}

#[test]
fn redirect_uris_must_be_absolute_without_fragment() {
    let e = errors(&with_base(
        "staticClients:\n- id: app\n  public: true\n  redirectURIs: [https://a.example/cb, callback, 'https://a.example/#x', 'com.example.app:/cb', 'urn:ietf:wg:oauth:2.0:oob']\n",
    ));
    assert_error(
        &e,
        "staticClients[0].redirectURIs[1]",
        "not an absolute URL",
    );
    assert_error(
        &e,
        "staticClients[0].redirectURIs[2]",
        "must not contain a fragment",
    );
    assert_eq!(e.0.len(), 2, "{e}");
}

#[test]
fn redirect_uris_with_script_or_file_schemes_are_refused_naming_client_and_uri() {
    let e = errors(&with_base(
        "staticClients:\n- id: evil-app\n  public: true\n  redirectURIs: ['javascript:alert(1)', 'data:text/html,hi', 'vbscript:msgbox(1)', 'file:///etc/passwd', 'myapp:/cb', 'http://127.0.0.1:5555/cb']\n  postLogoutRedirectURIs: ['javascript:alert(2)']\n",
    ));
    for (i, uri) in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
        "myapp:/cb",
    ]
    .iter()
    .enumerate()
    {
        let path = format!("staticClients[0].redirectURIs[{i}]");
        assert_error(&e, &path, "client `evil-app`");
        assert_error(&e, &path, uri);
        assert_error(&e, &path, "com.example.app:/callback");
    }
    assert_error(
        &e,
        "staticClients[0].postLogoutRedirectURIs[0]",
        "javascript:alert(2)",
    );
    assert_eq!(e.0.len(), 6, "{e}");
}

#[test]
fn client_grant_types_and_connectors_must_exist() {
    let e = errors(&with_base(
        "staticClients:\n- id: app\n  public: true\n  grantTypes: [password]\n  allowedConnectors: [github]\n",
    ));
    assert_error(
        &e,
        "staticClients[0].grantTypes[0]",
        "not enabled in oauth2.grantTypes",
    );
    assert_error(
        &e,
        "staticClients[0].allowedConnectors[0]",
        "no connector has the id `github`",
    );
}

// ----- passwords ----------------------------------------------------------------------------

#[test]
fn static_password_profile_keys_of_dex_are_read() {
    let c = parse(&with_base(&format!(
        "enablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: \"{BCRYPT}\"\n  username: jane\n  name: Jane Doe\n  preferredUsername: jdoe\n  emailVerified: false\n- email: b@example.com\n  userID: u2\n  hash: \"{BCRYPT}\"\n"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    let jane = &c.static_passwords[0];
    assert_eq!(jane.name.as_deref(), Some("Jane Doe"));
    assert_eq!(jane.preferred_username.as_deref(), Some("jdoe"));
    assert_eq!(jane.email_verified, Some(false));
    let b = &c.static_passwords[1];
    assert_eq!(
        (
            b.name.as_deref(),
            b.preferred_username.as_deref(),
            b.email_verified
        ),
        (None, None, None)
    );
    let e = errors(&with_base(&format!(
        "enablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: \"{BCRYPT}\"\n  emailVerified: perhaps\n"
    )));
    assert_error(
        &e,
        "staticPasswords[0].emailVerified",
        "expected true or false",
    );
}

#[test]
fn bad_password_hash_is_rejected() {
    let e = errors(&with_base(
        "enablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: password\n",
    ));
    assert_error(&e, "staticPasswords[0].hash", "not a bcrypt hash");
}

#[test]
fn base64_encoded_bcrypt_hash_is_accepted_like_dex() {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(BCRYPT);
    let c = parse(&with_base(&format!(
        "enablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: {encoded}\n"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.static_passwords[0].hash, BCRYPT);
    assert_eq!(c.static_passwords[0].username, "a@example.com");
}

#[test]
fn argon2id_hash_is_accepted() {
    let h = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";
    let c = parse(&with_base(&format!(
        "enablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: '{h}'\n"
    )))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.static_passwords[0].hash_kind(),
        PasswordHashKind::Argon2id
    );
}

#[test]
fn hash_from_env_is_read_and_validated() {
    let text = with_base(
        "enablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hashFromEnv: ADMIN_HASH\n",
    );
    let c = parse_with(&text, &[("ADMIN_HASH", BCRYPT)]).unwrap();
    assert_eq!(c.static_passwords[0].hash, BCRYPT);
    let e = parse_with(&text, &[("ADMIN_HASH", "nope")]).unwrap_err();
    assert_error(&e, "staticPasswords[0].hashFromEnv", "not a bcrypt hash");
}

#[test]
fn duplicate_emails_differing_in_case_are_rejected() {
    let e = errors(&with_base(&format!(
        "enablePasswordDB: true\nstaticPasswords:\n- email: Admin@Example.com\n  userID: u1\n  hash: \"{BCRYPT}\"\n- email: admin@example.com\n  userID: u2\n  hash: \"{BCRYPT}\"\n"
    )));
    assert_error(
        &e,
        "staticPasswords[1].email",
        "duplicate email `admin@example.com`",
    );
}

#[test]
fn static_passwords_need_the_password_db() {
    let e = errors(&with_base(&format!(
        "staticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: \"{BCRYPT}\"\n"
    )));
    assert_error(&e, "staticPasswords", "need `enablePasswordDB: true`");
}

// ----- connectors ---------------------------------------------------------------------------

#[test]
fn unsupported_connector_type_lists_supported_ones() {
    let e = errors(&with_base(
        "connectors:\n- type: keystone\n  id: corp\n  name: Corp\n",
    ));
    assert_error(
        &e,
        "connectors[0].type",
        "connector type `keystone` is not supported; supported types are ldap, github, oidc, gitlab, oauth, authproxy, microsoft, google, saml, local",
    );
}

#[test]
fn connector_config_that_is_not_a_mapping_or_has_a_null_key_is_refused() {
    let e = errors(&with_base(
        "connectors:\n- type: github\n  id: github\n  config: [clientID]\n",
    ));
    assert!(e.has("connectors[0].config", "expected a mapping"), "{e}");
    let e = errors(&with_base(
        "connectors:\n- type: github\n  id: github\n  config:\n    ~: x\n    clientID: abc\n    clientSecret: def\n",
    ));
    assert_error(&e, "connectors[0].config", "invalid type");
}

#[test]
fn github_connector_config_resolves_into_typed_settings() {
    let c = parse(&with_base(
        "connectors:\n- type: github\n  id: github\n  name: GitHub\n  config:\n    clientID: abc\n    clientSecret: def\n    orgs:\n    - name: acme\n",
    ))
    .unwrap();
    let gh = c.connector("github").unwrap();
    assert_eq!(gh.type_, ConnectorType::Github);
    let ConnectorSettings::Github(github) = &gh.settings else {
        panic!("expected github settings, got {:?}", gh.settings)
    };
    assert_eq!(github.client_id.as_deref(), Some("abc"));
    let orgs = github.orgs.as_deref().unwrap_or_default();
    assert_eq!(orgs.len(), 1);
    assert_eq!(orgs[0].name.as_deref(), Some("acme"));
}

#[test]
fn duplicate_connector_ids_and_local_config_keys_are_rejected() {
    let e = errors(&with_base(
        "connectors:\n- type: oidc\n  id: corp\n- type: ldap\n  id: corp\n- type: local\n  id: local\n  config:\n    foo: bar\n",
    ));
    assert_error(&e, "connectors[1].id", "duplicate connector id `corp`");
    assert_error(&e, "connectors[2].config.foo", "unknown key `foo`");
}

#[test]
fn password_connector_must_check_passwords() {
    let e = errors(&with_base(
        "connectors:\n- type: github\n  id: gh\noauth2:\n  passwordConnector: gh\n",
    ));
    assert_error(&e, "oauth2.passwordConnector", "cannot check passwords");
    let e = errors(&with_base("oauth2:\n  grantTypes: [password]\n"));
    assert_error(&e, "oauth2.grantTypes[0]", "needs oauth2.passwordConnector");
}

// ----- keys ---------------------------------------------------------------------------------

#[test]
fn encryption_key_of_wrong_length_is_rejected_without_echoing_it() {
    let e = errors(&with_base("keys:\n  encryptionKey: c2hvcnQta2V5\n"));
    assert_error(
        &e,
        "keys.encryptionKey",
        "decodes to 9 bytes; it must be exactly 32",
    );
    assert!(!e.to_string().contains("c2hvcnQta2V5"));
}

#[test]
fn encryption_key_from_hex_file_and_env() {
    let hex_key = "00".repeat(31) + "ff";
    let c = parse(&with_base(&format!(
        "keys:\n  encryptionKey: \"{hex_key}\"\n"
    )))
    .unwrap();
    assert_eq!(c.keys.encryption_key.unwrap()[31], 0xff);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kek");
    std::fs::write(&file, format!("{hex_key}\n")).unwrap();
    let c = parse(&with_base(&format!(
        "keys:\n  encryptionKeyFile: {}\n",
        file.display()
    )))
    .unwrap();
    assert_eq!(c.keys.encryption_key.unwrap()[31], 0xff);

    let text = with_base("keys:\n  encryptionKeyEnv: KEK\n");
    let c = parse_with(&text, &[("KEK", &hex_key)]).unwrap();
    assert_eq!(c.keys.encryption_key.unwrap()[31], 0xff);
    let e = parse(&text).unwrap_err();
    assert_error(
        &e,
        "keys.encryptionKeyEnv",
        "environment variable `KEK` is not set",
    );
}

#[test]
fn only_one_encryption_key_source_is_allowed() {
    let e = errors(&with_base(
        "keys:\n  encryptionKeyEnv: KEK\n  encryptionKeyFile: /tmp/kek\n",
    ));
    assert_error(&e, "keys", "set only one of");
}

#[test]
fn publish_ahead_has_a_floor_and_must_be_below_rotation() {
    let e = errors(&with_base("keys:\n  publishAhead: 3s\n"));
    assert_error(
        &e,
        "keys.publishAhead",
        "3s is too short; it must be at least 4s",
    );
    // Short windows (tests, forced rotations) are allowed, with a warning below 2m.
    let c = parse(&with_base(
        "keys:\n  rotationPeriod: 10s\n  publishAhead: 4s\n",
    ))
    .unwrap();
    assert_eq!(c.keys.publish_ahead, Duration::from_secs(4));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.path == "keys.publishAhead" && w.message.contains("shorter than 2m")),
        "{:?}",
        c.warnings
    );
    let c = parse(&with_base("keys:\n  publishAhead: 2m\n")).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let e = errors(&with_base(
        "keys:\n  rotationPeriod: 10m\n  publishAhead: 10m\n",
    ));
    assert_error(
        &e,
        "keys.publishAhead",
        "must be shorter than the rotation period",
    );
}

#[test]
fn key_poll_interval_must_stay_well_below_publish_ahead() {
    let e = errors(&with_base(
        "keys:\n  publishAhead: 2m\n  pollInterval: 31s\n",
    ));
    assert_error(
        &e,
        "keys.pollInterval",
        "31s is too long; it must be at most a quarter of publishAhead (2m)",
    );
    let e = errors(&with_base("keys:\n  pollInterval: 0s\n"));
    assert_error(&e, "keys.pollInterval", "must be longer than 0");
    let c = Config::from_yaml_str(&with_base("keys:\n  pollInterval: 1s\n"), &|_| None).unwrap();
    assert_eq!(c.keys.poll_interval, Duration::from_secs(1));
}

#[test]
fn housekeeping_interval_is_a_positive_duration() {
    let c = parse(&with_base("housekeeping:\n  interval: 5s\n")).unwrap();
    assert_eq!(c.housekeeping.interval, Duration::from_secs(5));
    let e = errors(&with_base("housekeeping:\n  interval: 0s\n"));
    assert_error(&e, "housekeeping.interval", "must be longer than 0");
    let e = errors(&with_base("housekeeping:\n  every: 5s\n"));
    assert_error(&e, "housekeeping.every", "interval");
}

// ----- several at once, and the report ----------------------------------------------------

#[test]
fn several_errors_are_reported_together() {
    let text = r#"
issuer: not a url
storage:
  type: etcd
web:
  htpp: 127.0.0.1:5556
logger:
  format: xml
expiry:
  idTokens: forever
staticClients:
- id: a
- id: b
  public: true
  redirectURLs: []
keys:
  algorithm: PS256
"#;
    let e = errors(text);
    assert_error(&e, "issuer", "not a valid URL");
    assert_error(&e, "storage.type", "`etcd` is not supported");
    assert_error(&e, "web.htpp", "did you mean `http`?");
    assert_error(&e, "logger.format", "`xml`");
    assert_error(&e, "expiry.idTokens", "`forever`");
    assert_error(&e, "staticClients[0].secret", "not public");
    assert_error(
        &e,
        "staticClients[1].redirectURLs",
        "did you mean `redirectURIs`?",
    );
    assert_error(&e, "keys.algorithm", "`PS256`");
    assert_eq!(e.to_string().lines().count(), e.0.len());
}

#[test]
fn invalid_yaml_and_empty_files_are_reported() {
    let e = errors("issuer: [unclosed\n");
    assert!(e.0[0].message.starts_with("invalid YAML"), "{e}");
    let e = errors("");
    assert_error(&e, "", "empty");
}

#[test]
fn check_config_report_prints_ok_or_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, BASE).unwrap();
    assert_eq!(check_config_report(&good), ("OK".to_string(), true));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        BASE.replace("type: memory", "type: mysql") + "logger:\n  level: loud\n",
    )
    .unwrap();
    let (text, ok) = check_config_report(&bad);
    assert!(!ok);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines.iter().any(|l| l.starts_with("storage.type: ")));
    assert!(lines.iter().any(|l| l.starts_with("logger.level: ")));

    let (text, ok) = check_config_report(&dir.path().join("missing.yaml"));
    assert!(!ok);
    assert!(text.contains("cannot read config file"));
}

#[test]
fn debug_output_redacts_secrets() {
    let text = with_base(&format!(
        "staticClients:\n- id: app\n  secret: very-secret-value\nenablePasswordDB: true\nstaticPasswords:\n- email: a@example.com\n  userID: u1\n  hash: \"{BCRYPT}\"\nkeys:\n  encryptionKey: \"{}\"\n",
        "ab".repeat(32)
    ));
    let c = parse(&text).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("very-secret-value"));
    assert!(!debug.contains(BCRYPT));
    assert!(!debug.contains("171, 171"));
}

#[test]
fn a_section_that_does_not_parse_adds_no_follow_up_errors() {
    let e = errors(&BASE.replace("  http:", "  htpp:"));
    assert_eq!(e.0.len(), 1, "{e}");
    assert_error(&e, "web.htpp", "did you mean `http`?");
}

#[test]
fn type_errors_speak_yaml_not_rust() {
    let e = errors(&with_base("frontend: plain\n"));
    assert_error(&e, "frontend", "expected a mapping");
    assert!(!e.to_string().contains("Raw"), "{e}");
}

#[test]
fn accepted_but_ineffective_dex_settings_are_warnings_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    std::fs::write(
        &file,
        with_base("telemetry:\n  http: 127.0.0.1:5558\n  enableProfiling: true\n"),
    )
    .unwrap();
    let (text, ok) = check_config_report(&file);
    assert!(ok);
    assert_eq!(
        text,
        "OK\nwarning: telemetry.enableProfiling: ignored: lanyard has no profiling endpoints"
    );
}

#[test]
fn postgres_password_is_redacted_from_debug_output() {
    let c = parse(&BASE.replace(
        "type: memory",
        "type: postgres\n  config:\n    password: hunter2-pg\n    connectionString: postgres://u:hunter3@db/x\n",
    ))
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("hunter2-pg") && !debug.contains("hunter3"),
        "{debug}"
    );
}

// ----- kubernetes ---------------------------------------------------------------------

/// One certificate per test run, so that configs can be compared and edited by text.
fn test_ca_pem() -> String {
    static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        rcgen::generate_simple_self_signed(vec!["kube.example.com".to_string()])
            .unwrap()
            .cert
            .pem()
    })
    .clone()
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A base config with two clients (one confidential, one public) and `kubernetes:` text.
fn with_kube(kubernetes: &str) -> String {
    with_base(&format!(
        r#"
staticClients:
- id: kube
  secret: kube-secret
  redirectURIs: [http://localhost:8000]
- id: kube-public
  public: true
  redirectURIs: [http://localhost:8000]
kubernetes:
{kubernetes}"#
    ))
}

fn one_cluster(extra: &str) -> String {
    with_kube(&format!(
        "  clusters:\n  - name: prod\n    server: https://prod.example.com:6443\n    certificateAuthorityData: {}\n    clientID: kube\n{extra}",
        b64(&test_ca_pem())
    ))
}

#[test]
fn kubernetes_clusters_and_rbac_resolve_with_defaults() {
    let pem = test_ca_pem();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, format!("# the staging CA\n{pem}")).unwrap();
    let text = with_kube(&format!(
        r#"  clusters:
  - name: prod
    server: https://prod.example.com:6443
    certificateAuthorityData: {}
    clientID: kube
  - name: staging
    displayName: Staging
    server: https://staging.example.com
    certificateAuthorityFile: {}
    clientID: kube-public
    namespace: apps
    contextName: acme-staging
    usernameClaim: sub
    usernamePrefix: ""
    groupsClaim: teams
    groupsPrefix: "gh:"
    clientSecretForUsers: false
  rbac:
  - group: acme:platform
    clusterRole: cluster-admin
  - group: acme:software-engineering
    clusterRole: edit
    namespace: apps
  - group: acme:software-engineering
    role: deployer
    namespace: apps
    clusters: [staging]
"#,
        b64(&pem),
        ca_file.display()
    ));
    let c = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let k = &c.kubernetes;
    assert_eq!(k.cluster_names(), vec!["prod", "staging"]);

    let prod = k.cluster("prod").unwrap();
    assert_eq!(prod.display_name, "prod");
    assert_eq!(prod.server, "https://prod.example.com:6443");
    assert_eq!(prod.certificate_authority_pem, pem.replace("\r\n", "\n"));
    assert_eq!(prod.client_id, "kube");
    assert_eq!(prod.namespace, "default");
    assert_eq!(prod.context_name, "prod");
    assert_eq!(prod.username_claim, "email");
    assert_eq!(prod.username_prefix, "oidc:");
    assert_eq!(prod.groups_claim, "groups");
    assert_eq!(prod.groups_prefix, "oidc:");
    assert!(!prod.client_secret_for_users);

    let staging = k.cluster("staging").unwrap();
    assert_eq!(staging.display_name, "Staging");
    // The file's comment line is dropped; the certificate is the same.
    assert_eq!(
        staging.certificate_authority_pem,
        prod.certificate_authority_pem
    );
    assert_eq!(staging.namespace, "apps");
    assert_eq!(staging.context_name, "acme-staging");
    assert_eq!(staging.username_claim, "sub");
    assert_eq!(staging.username_prefix, "");
    assert_eq!(staging.groups_claim, "teams");
    assert_eq!(staging.groups_prefix, "gh:");

    assert_eq!(k.rbac.len(), 3);
    assert_eq!(k.rbac[0].group, "acme:platform");
    assert_eq!(
        k.rbac[0].role,
        RbacRole::ClusterRole("cluster-admin".into())
    );
    assert_eq!(k.rbac[0].namespace, None);
    assert!(k.rbac[0].applies_to("prod") && k.rbac[0].applies_to("staging"));
    assert_eq!(k.rbac[1].namespace.as_deref(), Some("apps"));
    assert_eq!(k.rbac[2].role, RbacRole::Role("deployer".into()));
    assert!(k.rbac[2].applies_to("staging") && !k.rbac[2].applies_to("prod"));
}

#[test]
fn kubernetes_is_empty_when_absent() {
    let c = parse(BASE).unwrap();
    assert!(c.kubernetes.clusters.is_empty());
    assert!(c.kubernetes.rbac.is_empty());
}

#[test]
fn kubernetes_cluster_client_must_be_a_static_client() {
    let e = errors(&one_cluster("").replace("clientID: kube\n", "clientID: kubectl\n"));
    assert_error(
        &e,
        "kubernetes.clusters[0].clientID",
        "no static client has the id `kubectl`; staticClients: `kube`, `kube-public`",
    );
}

#[test]
fn kubernetes_server_must_be_https() {
    let e = errors(&one_cluster("").replace(
        "https://prod.example.com:6443",
        "http://prod.example.com:6443",
    ));
    assert_error(&e, "kubernetes.clusters[0].server", "must be an https URL");
    let e = errors(&one_cluster("").replace("https://prod.example.com:6443", "prod.example.com"));
    assert_error(&e, "kubernetes.clusters[0].server", "not a valid URL");
}

#[test]
fn kubernetes_ca_data_must_be_base64_of_a_pem_certificate() {
    let good = b64(&test_ca_pem());
    let cases = [
        (
            "not base64 !!".to_string(),
            "not base64 of a PEM certificate",
        ),
        (b64("hello"), "no PEM certificate"),
        (
            b64("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"),
            "only CERTIFICATE blocks",
        ),
        (
            b64("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            "does not hold a certificate",
        ),
        (
            "'-----BEGIN CERTIFICATE-----'".to_string(),
            "expected base64 of the PEM",
        ),
    ];
    for (data, needle) in cases {
        let e = errors(&one_cluster("").replace(&good, &data));
        assert_error(
            &e,
            "kubernetes.clusters[0].certificateAuthorityData",
            needle,
        );
    }
}

#[test]
fn kubernetes_ca_file_must_be_readable_pem() {
    let good = format!("certificateAuthorityData: {}", b64(&test_ca_pem()));
    let e =
        errors(&one_cluster("").replace(&good, "certificateAuthorityFile: /nonexistent/ca.pem"));
    assert_error(
        &e,
        "kubernetes.clusters[0].certificateAuthorityFile",
        "cannot read `/nonexistent/ca.pem`",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, "not a certificate").unwrap();
    let e = errors(&one_cluster("").replace(
        &good,
        &format!("certificateAuthorityFile: {}", file.display()),
    ));
    assert_error(
        &e,
        "kubernetes.clusters[0].certificateAuthorityFile",
        "is not a PEM certificate file",
    );
    let e = errors(&one_cluster("    certificateAuthorityFile: /x.pem\n"));
    assert_error(&e, "kubernetes.clusters[0]", "not both");
    let e = errors(&one_cluster("").replace(&format!("    {good}\n"), ""));
    assert_error(
        &e,
        "kubernetes.clusters[0].certificateAuthorityData",
        "missing required key `certificateAuthorityData`",
    );
}

#[test]
fn kubernetes_unknown_cluster_key_suggests_the_closest() {
    let e = errors(&one_cluster("    clientIdd: kube\n"));
    assert_error(
        &e,
        "kubernetes.clusters[0].clientIdd",
        "did you mean `clientID`?",
    );
    let e = errors(&one_cluster("  rbacs: []\n"));
    assert_error(&e, "kubernetes.rbacs", "did you mean `rbac`?");
}

#[test]
fn kubernetes_cluster_names_and_contexts_are_unique_and_plain() {
    let text = one_cluster("");
    let second = text[text.find("  - name: prod").unwrap()..].to_string();
    let e = errors(&format!("{text}{second}"));
    assert_error(
        &e,
        "kubernetes.clusters[1].name",
        "duplicate cluster name `prod`",
    );
    let e = errors(&text.replace("name: prod", "name: prod/eu"));
    assert_error(
        &e,
        "kubernetes.clusters[0].name",
        "not a valid cluster name",
    );
    let e = errors(&format!(
        "{text}{}",
        second.replace("name: prod", "name: other\n    contextName: prod")
    ));
    assert_error(
        &e,
        "kubernetes.clusters[1].contextName",
        "duplicate context name `prod`",
    );
}

#[test]
fn kubernetes_client_secret_for_users_needs_a_confidential_client() {
    let e = errors(
        &one_cluster("    clientSecretForUsers: true\n")
            .replace("clientID: kube\n", "clientID: kube-public\n"),
    );
    assert_error(
        &e,
        "kubernetes.clusters[0].clientSecretForUsers",
        "client `kube-public` is public",
    );
    let c = parse(&one_cluster("    clientSecretForUsers: true\n")).unwrap();
    assert!(c.kubernetes.clusters[0].client_secret_for_users);
}

#[test]
fn kubernetes_prefixes_may_be_empty_but_not_system() {
    let e = errors(&one_cluster("    usernamePrefix: 'system:'\n"));
    assert_error(
        &e,
        "kubernetes.clusters[0].usernamePrefix",
        "must not start with `system:`",
    );
    let e = errors(&one_cluster("    groupsPrefix: 'system:masters-'\n"));
    assert_error(
        &e,
        "kubernetes.clusters[0].groupsPrefix",
        "must not start with `system:`",
    );
    let e = errors(&one_cluster("    namespace: Apps\n"));
    assert_error(
        &e,
        "kubernetes.clusters[0].namespace",
        "not a valid namespace",
    );
}

#[test]
fn kubernetes_rbac_role_needs_a_namespace_and_exactly_one_role_kind() {
    let e = errors(&one_cluster(
        "  rbac:\n  - group: acme:dev\n    role: deployer\n",
    ));
    assert_error(&e, "kubernetes.rbac[0].namespace", "required with `role`");
    let e = errors(&one_cluster(
        "  rbac:\n  - group: acme:dev\n    role: deployer\n    clusterRole: edit\n    namespace: apps\n",
    ));
    assert_error(
        &e,
        "kubernetes.rbac[0]",
        "set either `role` or `clusterRole`, not both",
    );
    let e = errors(&one_cluster("  rbac:\n  - group: acme:dev\n"));
    assert_error(
        &e,
        "kubernetes.rbac[0].clusterRole",
        "missing required key `clusterRole`",
    );
    let e = errors(&one_cluster("  rbac:\n  - clusterRole: view\n"));
    assert_error(
        &e,
        "kubernetes.rbac[0].group",
        "missing required key `group`",
    );
}

#[test]
fn kubernetes_rbac_clusters_must_name_configured_clusters() {
    let e = errors(&one_cluster(
        "  rbac:\n  - group: acme:dev\n    clusterRole: view\n    clusters: [prod, staging]\n",
    ));
    assert_error(
        &e,
        "kubernetes.rbac[0].clusters[1]",
        "no cluster is named `staging`; kubernetes.clusters: `prod`",
    );
    let e = errors(&one_cluster(
        "  rbac:\n  - group: acme:dev\n    clusterRole: view\n  - group: acme:dev\n    clusterRole: view\n",
    ));
    assert_error(
        &e,
        "kubernetes.rbac[1]",
        "duplicate binding (also kubernetes.rbac[0])",
    );
}

// ----- a Dex config through the real binary -------------------------------------------------

mod dex_config_runs {
    use std::process::{Command, Stdio};

    use crate::common::process::{terminate, wait_ready, Log, Running, BIN};
    use crate::common::server::{
        claims_of, free_port, query_param, AuthRequest, Site, ALICE_HASH, ALICE_PASSWORD,
        ENCRYPTION_KEY, WEB_CLIENT, WEB_REDIRECT,
    };

    /// A client secret with a `$` in it, which Dex never expands.
    const SECRET: &str = "s3cr$t-value";

    /// Dex spellings lanyard used to refuse: keys in another case, `signer:`, an unquoted
    /// `tlsMinVersion`, the v2.45 profile keys of static passwords, `$VAR`s in the storage and
    /// signer configs and a literal `$` in a client secret.
    fn dex_config(port: u16) -> String {
        format!(
            r#"Issuer: http://127.0.0.1:{port}/dex
storage:
  type: sqlite3
  config:
    file: ${{DATA_DIR}}/dex.db
web:
  HTTP: 127.0.0.1:{port}
  tlsMinVersion: 1.2
logger:
  level: warn
signer:
  type: local
  config:
    keysRotationPeriod: $ROTATION
keys:
  encryptionKey: {ENCRYPTION_KEY}
oauth2:
  skipApprovalScreen: true
staticClients:
- id: {WEB_CLIENT}
  name: Web
  secret: {SECRET}
  redirectURIs: ['{WEB_REDIRECT}']
enablePasswordDB: true
staticPasswords:
- email: jane@example.com
  hash: "{ALICE_HASH}"
  username: jane
  name: Jane Doe
  preferredUsername: jdoe
  emailVerified: false
  userID: u-jane
- email: bob@example.com
  hash: "{ALICE_HASH}"
  username: bob
  userID: u-bob
"#
        )
    }

    fn command(args: &[&str], config: &std::path::Path, dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--config")
            .arg(config)
            .env_remove("LANYARD_CONFIG")
            .env_remove("DEX_EXPAND_ENV")
            .env("DATA_DIR", dir)
            .env("ROTATION", "3h");
        cmd
    }

    async fn token(site: &Site, form: &[(&str, &str)]) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(site.url("/token"))
            .basic_auth(WEB_CLIENT, Some(SECRET))
            .form(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        resp.json().await.unwrap()
    }

    async fn login(site: &Site, email: &str) -> serde_json::Value {
        let req = AuthRequest::confidential();
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let redirect = site
            .login_and_approve_as(&browser, &req, email, ALICE_PASSWORD)
            .await;
        let code = query_param(&redirect, "code").expect("code");
        token(
            site,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", WEB_REDIRECT),
            ],
        )
        .await
    }

    #[test]
    fn check_config_accepts_it_and_prints_the_case_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, dex_config(5556)).unwrap();
        let out = command(&["check-config"], &config, dir.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.starts_with("OK"), "{text}");
        assert!(text.contains("warning: Issuer: read as `issuer`"), "{text}");
        assert!(text.contains("warning: web.HTTP: read as `http`"), "{text}");
        assert_eq!(text.matches("warning:").count(), 2, "{text}");
        // Without the variables the signer and storage name them.
        let out = command(&["check-config"], &config, dir.path())
            .env_remove("ROTATION")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success());
        assert!(
            text.contains(
                "signer.config.keysRotationPeriod: environment variable `ROTATION` is not set"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn it_serves_and_static_password_profiles_reach_the_id_token() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, dex_config(port)).unwrap();
        let mut child = command(&["serve"], &config, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Log::capture(&mut child);
        let mut lanyard = Running(child);
        let site = Site::new(format!("http://127.0.0.1:{port}/dex"));
        wait_ready(&site.url("/.well-known/openid-configuration")).await;
        // serve logs what check-config prints as warnings.
        log.wait_for("read as `http`", 1).await;

        // The `$` in the secret is literal: Basic auth with it works.
        let tokens = login(&site, "jane@example.com").await;
        let jane = claims_of(tokens["id_token"].as_str().unwrap());
        assert_eq!(jane["name"], "Jane Doe");
        assert_eq!(jane["preferred_username"], "jdoe");
        assert_eq!(jane["email"], "jane@example.com");
        assert_eq!(jane["email_verified"], false);

        // A refresh re-reads the user, as Dex's password connector does.
        let refresh = tokens["refresh_token"].as_str().unwrap();
        let refreshed = token(
            &site,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
        let again = claims_of(refreshed["id_token"].as_str().unwrap());
        assert_eq!(again["name"], "Jane Doe");
        assert_eq!(again["preferred_username"], "jdoe");
        assert_eq!(again["email_verified"], false);

        // Without the keys, Dex's defaults: the username names the user, email verified.
        let bob = claims_of(
            login(&site, "bob@example.com").await["id_token"]
                .as_str()
                .unwrap(),
        );
        assert_eq!(bob["name"], "bob");
        assert_eq!(bob["preferred_username"], "bob");
        assert_eq!(bob["email_verified"], true);
        assert!(terminate(&mut lanyard).success());
    }
}
