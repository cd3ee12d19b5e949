//! The config snippets of Dex's documentation (copied unchanged into
//! tests/it/fixtures/dex/docs, one file per snippet, `<page>-<n>.yaml`) pass `lanyard
//! check-config`, the built binary, with only what a user would change: environment variables,
//! a placeholder filled in, and for a snippet that is a fragment, the rest of a config around
//! it (a preamble, or what the same page says goes with it). Snippets for what lanyard does not
//! do are listed with the reason and must be refused with it, never accepted.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_yaml_ng::{Mapping, Value};

use crate::common::process::BIN;

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/fixtures/dex/docs")
}

/// The least a config needs around a fragment (Dex requires the same three).
const PREAMBLE: &str = "\
issuer: http://127.0.0.1:5556/dex
storage:
  type: sqlite3
  config:
    file: dex.db
web:
  http: 127.0.0.1:5556
";

/// An LDAP connector for the pages' `userSearch:` and `groupSearch:` fragments to sit in.
const LDAP_CONNECTOR: &str = "\
type: ldap
id: ldap
name: LDAP
config:
  host: ldap.example.com:636
  userSearch:
    baseDN: cn=users,dc=example,dc=com
    username: uid
";

/// How the snippet becomes a whole config.
enum Around {
    /// It is one already.
    Nothing,
    /// Its top-level keys go into [`PREAMBLE`].
    Preamble,
    /// Its keys go into the `config` of [`LDAP_CONNECTOR`], in [`PREAMBLE`].
    LdapConnectorConfig,
    /// Its first connector's config keys replace those of the LDAP connector in Dex's
    /// examples/config-ad-kubelogin.yaml, as the guide tells the reader to do.
    AdKubeloginExample,
}

enum Expect {
    /// `check-config` says OK.
    Ok,
    /// Refused for a feature lanyard does not have: an error line has `error`.
    Refused {
        reason: &'static str,
        error: &'static str,
    },
    /// Not checked at all, with the reason.
    NotAConfig { reason: &'static str },
}

struct Snippet {
    file: &'static str,
    around: Around,
    /// What the page around the snippet supplies or a user fills in: top-level keys that
    /// replace the snippet's.
    user_keys: &'static str,
    /// A placeholder and what a user writes instead (`{fixtures}`: tests/it/fixtures/dex).
    fill_in: Option<(&'static str, &'static str)>,
    env: &'static [(&'static str, &'static str)],
    expect: Expect,
}

const fn ok(file: &'static str, around: Around) -> Snippet {
    Snippet {
        file,
        around,
        user_keys: "",
        fill_in: None,
        env: &[],
        expect: Expect::Ok,
    }
}

const fn refused(file: &'static str, reason: &'static str, error: &'static str) -> Snippet {
    Snippet {
        file,
        around: Around::Preamble,
        user_keys: "",
        fill_in: None,
        env: &[],
        expect: Expect::Refused { reason, error },
    }
}

const GITHUB_ENV: &[(&str, &str)] = &[
    ("GITHUB_CLIENT_ID", "0123456789abcdef0123"),
    ("GITHUB_CLIENT_SECRET", "github-client-secret"),
];
const GOOGLE_ENV: &[(&str, &str)] = &[
    ("GOOGLE_CLIENT_ID", "1234.apps.googleusercontent.com"),
    ("GOOGLE_CLIENT_SECRET", "google-client-secret"),
];

const GITLAB_ENV: &[(&str, &str)] = &[
    ("GITLAB_APPLICATION_ID", "0123456789abcdef"),
    ("GITLAB_CLIENT_SECRET", "gitlab-client-secret"),
];
const REDDIT_ENV: &[(&str, &str)] = &[
    ("REDDIT_CLIENT_ID", "reddit-client"),
    ("REDDIT_CLIENT_SECRET", "reddit-client-secret"),
];

const AUTHPROXY_ALLOW_LIST: &str =
    "authproxy believes identity headers only from the proxy's addresses, which lanyard requires in trustedProxies (docs/connectors/authproxy.md)";

const MICROSOFT_ENV: &[(&str, &str)] = &[
    (
        "MICROSOFT_APPLICATION_ID",
        "00000000-0000-0000-0000-000000000001",
    ),
    ("MICROSOFT_CLIENT_SECRET", "microsoft-client-secret"),
];

const SAML_PLACEHOLDERS: &str =
    "Dex's page leaves ssoURL and caData as placeholders to fill in from the IdP";
const NOT_PLANNED: &str = "a connector type no issue plans yet";
const STORAGE: &str = "a storage type lanyard refuses (use postgres; issue 19 keeps refusing it)";
const IMPLICIT: &str =
    "the implicit and hybrid flows, which RFC 9700 advises against (issue 19 keeps refusing them)";
const VAULT: &str =
    "the vault signer: lanyard keeps its signing keys in its storage, encrypted (docs/dex.md)";

/// Every file in tests/it/fixtures/dex/docs, with what is expected of it.
fn snippets() -> Vec<Snippet> {
    use Around::*;
    vec![
        // configuration/
        ok("api-1.yaml", Preamble),
        ok("custom-scopes-claims-clients-1.yaml", Preamble),
        Snippet {
            fill_in: Some(("  - ...\n", "  - http://localhost:8000\n")),
            ..ok("custom-scopes-claims-clients-2.yaml", Preamble)
        },
        ok("oauth2-1.yaml", Preamble),
        ok("oauth2-2.yaml", Preamble),
        ok("oauth2-3.yaml", Preamble),
        Snippet {
            // The connector the snippet names: the local one, from connectors/local.md.
            user_keys: "enablePasswordDB: true\n",
            ..ok("oauth2-4.yaml", Preamble)
        },
        refused(
            "oauth2-5.yaml",
            IMPLICIT,
            "oauth2.responseTypes[0]: response type `id_token` (the implicit and hybrid flows) is refused",
        ),
        refused("storage-1.yaml", STORAGE, "storage.type: storage type `etcd`"),
        refused(
            "storage-2.yaml",
            STORAGE,
            "storage.type: storage type `kubernetes`",
        ),
        ok("storage-3.yaml", Preamble),
        ok("storage-4.yaml", Preamble),
        refused("storage-5.yaml", STORAGE, "storage.type: storage type `mysql`"),
        ok("tokens-1.yaml", Preamble),
        refused("tokens-2.yaml", VAULT, "signer.type: the vault signer"),
        refused("tokens-3.yaml", VAULT, "signer.type: the vault signer"),
        // connectors/ lanyard has
        ok("local-1.yaml", Preamble),
        Snippet {
            // The page's first snippet, which this one follows.
            user_keys: "enablePasswordDB: true\n",
            ..ok("local-2.yaml", Preamble)
        },
        Snippet {
            // The snippet leaves storage to the reader (`storage:  # .. storage configuration`).
            user_keys: "storage:\n  type: sqlite3\n  config:\n    file: dex.db\nweb:\n  http: 127.0.0.1:8080\n",
            ..ok("local-3.yaml", Nothing)
        },
        Snippet {
            env: GITHUB_ENV,
            ..ok("github-1.yaml", Preamble)
        },
        Snippet {
            env: GITHUB_ENV,
            ..ok("github-2.yaml", Preamble)
        },
        ok("ldap-1.yaml", Preamble),
        ok("ldap-2.yaml", LdapConnectorConfig),
        ok("ldap-3.yaml", LdapConnectorConfig),
        ok("ldap-4.yaml", LdapConnectorConfig),
        ok("ldap-5.yaml", LdapConnectorConfig),
        ok("ldap-6.yaml", Preamble),
        ok("ldap-7.yaml", Preamble),
        ok("ldap-8.yaml", LdapConnectorConfig),
        Snippet {
            env: GOOGLE_ENV,
            ..ok("oidc-1.yaml", Preamble)
        },
        // connectors/
        ok("saml-1.yaml", Preamble),
        ok("saml-2.yaml", Preamble),
        Snippet {
            env: MICROSOFT_ENV,
            ..ok("microsoft-1.yaml", Preamble)
        },
        Snippet {
            env: MICROSOFT_ENV,
            ..ok("microsoft-2.yaml", Preamble)
        },
        Snippet {
            env: MICROSOFT_ENV,
            ..ok("microsoft-3.yaml", Preamble)
        },
        Snippet {
            env: MICROSOFT_ENV,
            ..ok("microsoft-4.yaml", Preamble)
        },
        Snippet {
            env: MICROSOFT_ENV,
            ..ok("microsoft-5.yaml", Preamble)
        },
        Snippet {
            env: GOOGLE_ENV,
            ..ok("google-1.yaml", Preamble)
        },
        Snippet {
            env: GITLAB_ENV,
            ..ok("gitlab-1.yaml", Preamble)
        },
        Snippet {
            env: REDDIT_ENV,
            ..ok("oauth-1.yaml", Preamble)
        },
        refused(
            "authproxy-1.yaml",
            AUTHPROXY_ALLOW_LIST,
            "connectors[0].config.trustedProxies: missing required key `trustedProxies`",
        ),
        refused(
            "authproxy-2.yaml",
            AUTHPROXY_ALLOW_LIST,
            "connectors[0].config.trustedProxies: missing required key `trustedProxies`",
        ),
        refused(
            "atlassian-crowd-1.yaml",
            NOT_PLANNED,
            "connector type `atlassian-crowd` is not supported",
        ),
        refused(
            "bitbucketcloud-1.yaml",
            NOT_PLANNED,
            "connector type `bitbucket-cloud` is not supported",
        ),
        refused(
            "gitea-1.yaml",
            NOT_PLANNED,
            "connector type `gitea` is not supported",
        ),
        refused(
            "keystone-1.yaml",
            NOT_PLANNED,
            "connector type `keystone` is not supported",
        ),
        refused(
            "linkedin-1.yaml",
            NOT_PLANNED,
            "connector type `linkedin` is not supported",
        ),
        refused(
            "openshift-1.yaml",
            NOT_PLANNED,
            "connector type `openshift` is not supported",
        ),
        // getting-started.md, guides/
        Snippet {
            expect: Expect::NotAConfig {
                reason: "gomplate syntax for Dex's container entrypoint, shown on a `secret:` \
                         key alone; lanyard does not run gomplate (docs/dex.md)",
            },
            ..ok("getting-started-1.yaml", Nothing)
        },
        ok("kubelogin-activedirectory-1.yaml", AdKubeloginExample),
        Snippet {
            fill_in: Some(("/path/to/custom/web", "{fixtures}/web")),
            ..ok("templates-1.yaml", Preamble)
        },
        ok("token-exchange-1.yaml", Nothing),
        ok("token-exchange-2.yaml", Nothing),
        ok("using-dex-1.yaml", Preamble),
        // development/
        refused(
            "oidc-certification-1.yaml",
            "mockCallback with a non-loopback issuer needs lanyard's \
             insecureAllowNonLoopbackIssuer (docs/connectors/mock.md; tested below)",
            "connectors[0].config.insecureAllowNonLoopbackIssuer: mockCallback signs anyone",
        ),
        refused(
            "integration-tests-1.yaml",
            SAML_PLACEHOLDERS,
            "connectors[0].config.ssoURL: `( \"Identity Provider Single Sign-On URL\" )` is not an absolute http(s) URL",
        ),
    ]
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn mapping(value: Value, what: &str) -> Mapping {
    match value {
        Value::Mapping(m) => m,
        Value::Null => Mapping::new(),
        other => panic!("{what} is not a mapping: {other:?}"),
    }
}

fn merge(into: &mut Mapping, from: Mapping) {
    for (k, v) in from {
        into.insert(k, v);
    }
}

/// The whole config a user would write for `snippet`.
fn config_for(snippet: &Snippet) -> Mapping {
    let mut text = std::fs::read_to_string(docs_dir().join(snippet.file)).unwrap();
    if let Some((placeholder, value)) = snippet.fill_in {
        assert!(
            text.contains(placeholder),
            "{}: no {placeholder:?}",
            snippet.file
        );
        let fixtures = docs_dir().parent().unwrap().display().to_string();
        text = text.replace(placeholder, &value.replace("{fixtures}", &fixtures));
    }
    let doc = mapping(
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", snippet.file)),
        snippet.file,
    );
    let preamble = || mapping(serde_yaml_ng::from_str(PREAMBLE).unwrap(), "preamble");
    let mut config = match snippet.around {
        Around::Nothing => doc,
        Around::Preamble => {
            let mut config = preamble();
            merge(&mut config, doc);
            config
        }
        Around::LdapConnectorConfig => {
            let mut connector: Value = serde_yaml_ng::from_str(LDAP_CONNECTOR).unwrap();
            merge(connector["config"].as_mapping_mut().unwrap(), doc);
            let mut config = preamble();
            config.insert("connectors".into(), Value::Sequence(vec![connector]));
            config
        }
        Around::AdKubeloginExample => {
            let example = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/it/fixtures/dex/examples/config-ad-kubelogin.yaml");
            let mut config = mapping(read_yaml(&example), "config-ad-kubelogin.yaml");
            let edits = doc["connectors"][0]["config"]
                .as_mapping()
                .expect("the guide's connector config")
                .clone();
            let connector = config
                .get_mut("connectors")
                .and_then(|c| c.get_mut(0))
                .and_then(|c| c.get_mut("config"))
                .and_then(Value::as_mapping_mut)
                .expect("the example's LDAP connector config");
            merge(connector, edits);
            config
        }
    };
    merge(
        &mut config,
        mapping(
            serde_yaml_ng::from_str(snippet.user_keys).unwrap(),
            "user_keys",
        ),
    );
    config
}

/// `lanyard check-config` on `config`, run in a fresh directory (relative paths such as
/// `file: dex.db` land there) with exactly `env`: whether it said OK, and its output.
fn check_config(config: &Mapping, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(config).unwrap()).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .current_dir(dir.path())
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

#[test]
fn every_dex_docs_snippet_for_a_supported_feature_passes_check_config() {
    let mut failures = Vec::new();
    for snippet in snippets() {
        if !matches!(snippet.expect, Expect::Ok) {
            continue;
        }
        let (ok, text) = check_config(&config_for(&snippet), snippet.env);
        if !ok {
            failures.push(format!("{}:\n{text}", snippet.file));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_dex_docs_snippet_for_a_missing_feature_is_refused_saying_why() {
    let mut failures = Vec::new();
    for snippet in snippets() {
        let Expect::Refused { reason, error } = snippet.expect else {
            continue;
        };
        let (ok, text) = check_config(&config_for(&snippet), snippet.env);
        if ok || !text.lines().any(|l| l.contains(error)) {
            failures.push(format!(
                "{} ({reason}): expected an error with {error:?}, got:\n{text}",
                snippet.file
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// No snippet file is left out of the table, and none is listed twice or without a file.
#[test]
fn every_dex_docs_snippet_file_is_listed_once() {
    let mut on_disk: Vec<String> = std::fs::read_dir(docs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = snippets().iter().map(|s| s.file.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk);
    for snippet in snippets() {
        if let Expect::NotAConfig { reason } = snippet.expect {
            eprintln!("not checked: {}: {reason}", snippet.file);
        }
    }
}

/// Dex's OpenID certification config, with the one setting lanyard asks for before it serves
/// the mock connector on a public issuer.
#[test]
fn dex_oidc_certification_config_passes_with_the_mock_connector_explicitly_allowed() {
    let mut config = config_for(&ok("oidc-certification-1.yaml", Around::Nothing));
    let connector = config
        .get_mut("connectors")
        .and_then(|c| c.get_mut(0))
        .and_then(Value::as_mapping_mut)
        .expect("the mockCallback connector");
    connector.insert(
        "config".into(),
        serde_yaml_ng::from_str("insecureAllowNonLoopbackIssuer: true").unwrap(),
    );
    let (ok, text) = check_config(&config, &[]);
    assert!(ok, "{text}");
}

/// The templates guide's `frontend.dir` as printed, a directory that does not exist: Dex does
/// not start with it, and neither does lanyard, so check-config says so.
#[test]
fn dex_templates_snippet_with_its_placeholder_directory_is_refused_naming_frontend_dir() {
    let (ok, text) = check_config(&config_for(&ok("templates-1.yaml", Around::Preamble)), &[]);
    assert!(!ok, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("frontend.dir:")
            && l.contains("/path/to/custom/web")
            && l.contains("not a readable directory")),
        "{text}"
    );
}
