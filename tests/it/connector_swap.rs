//! Moving a deployment from one upstream to another is a config change: the real binary runs on
//! one SQLite database with an LDAP connector, is restarted with a GitHub connector instead,
//! then with LDAP again. Each login works, each `sub` is Dex's encoding of (upstream user id,
//! connector id) and stays the same for the same connector, and a session from a connector that
//! left the config cannot be refreshed.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::fake_github::{FakeGithub, FakeUser};
use common::process::{terminate, wait_ready, Running, BIN};
use common::server::{
    claims_of, free_port, query_param, AuthRequest, Site, ENCRYPTION_KEY, PUBLIC_CLIENT,
    PUBLIC_REDIRECT,
};
use common::slapd::{self, Slapd, GROUPS, PEOPLE, SERVICE_DN, SERVICE_PW};
use lanyard::oidc::subject::encode_subject;
use reqwest::redirect::Policy;
use serde_json::{json, Value};

const GITHUB_ID: u64 = 4242;

fn ldap_connector(slapd: &Slapd) -> String {
    format!(
        r#"- type: ldap
  id: ldap
  name: Corp directory
  config:
    host: "{host}"
    insecureNoSSL: true
    bindDN: "{SERVICE_DN}"
    bindPW: "{SERVICE_PW}"
    userSearch:
      baseDN: "{PEOPLE}"
      filter: "(objectClass=inetOrgPerson)"
      username: uid
      idAttr: uid
      emailAttr: mail
      nameAttr: cn
    groupSearch:
      baseDN: "{GROUPS}"
      filter: "(objectClass=groupOfNames)"
      userMatchers:
      - userAttr: DN
        groupAttr: member
      nameAttr: cn
"#,
        host = slapd.host()
    )
}

/// One lanyard process on `port` with the database in `dir`; only `connectors` differs
/// between starts.
fn start(dir: &Path, port: u16, connectors: &str) -> Running {
    let config = dir.join("lanyard.yaml");
    std::fs::write(
        &config,
        format!(
            r#"issuer: http://127.0.0.1:{port}
storage:
  type: sqlite3
  config:
    file: {db}
web:
  http: 127.0.0.1:{port}
logger:
  level: warn
keys:
  encryptionKey: {ENCRYPTION_KEY}
oauth2:
  skipApprovalScreen: true
staticClients:
- id: {PUBLIC_CLIENT}
  name: kubectl
  public: true
  redirectURIs: ['{PUBLIC_REDIRECT}']
connectors:
{connectors}"#,
            db = dir.join("lanyard.db").display(),
        ),
    )
    .unwrap();
    Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("LANYARD_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// The token response after the login that `callback` (the redirect back to the client)
/// carries a code for.
async fn redeem(site: &Site, req: &AuthRequest, redirect: &str) -> Value {
    assert!(redirect.starts_with(&req.redirect_uri), "{redirect}");
    let code = query_param(redirect, "code").expect("code");
    let resp = site.redeem(req, &code).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn ldap_login(site: &Site) -> Value {
    let req = AuthRequest::public();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap();
    let user = slapd::jane();
    let redirect = site
        .login_and_approve_as(&browser, &req, user.uid, user.password)
        .await;
    redeem(site, &req, &redirect).await
}

async fn github_login(site: &Site, fake: &FakeGithub) -> Value {
    let req = AuthRequest::public();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(fake.ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    // The only connector: /auth goes straight to it, and it straight to GitHub.
    let mut resp = browser
        .get(site.url("/auth"))
        .query(&req.query())
        .send()
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(resp.status().is_redirection(), "{}", resp.status());
        let next = site.absolute(&common::server::location(&resp));
        if next.starts_with(&site.url("/callback")) {
            break;
        }
        resp = browser.get(&next).send().await.unwrap();
    }
    let callback = site.absolute(&common::server::location(&resp));
    assert!(callback.starts_with(&site.url("/callback?")), "{callback}");
    let resp = browser.get(&callback).send().await.unwrap();
    let redirect = site.approve_if_asked(&browser, &req, &resp).await;
    redeem(site, &req, &redirect).await
}

async fn refresh(site: &Site, refresh_token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(site.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_to_github_and_back_is_a_config_change_with_stable_dex_subjects() {
    let Some(slapd) = Slapd::start() else {
        return;
    };
    let fake = FakeGithub::start().await;
    fake.add_user(
        FakeUser::new(GITHUB_ID, "jane")
            .named("Jane Doe")
            .in_team("acme", "platform")
            .with_emails(&[("jane@acme.example", true, true)]),
    );
    fake.sign_in("jane");
    let github = fake.connector_yaml("github", "orgs:\n- name: acme\n  teams: [platform]\n");

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let site = Site::new(format!("http://127.0.0.1:{port}"));
    let ready = site.url("/healthz");

    // LDAP.
    let mut lanyard = start(dir.path(), port, &ldap_connector(&slapd));
    wait_ready(&ready).await;
    let from_ldap = ldap_login(&site).await;
    let first = claims_of(from_ldap["id_token"].as_str().unwrap());
    assert_eq!(first["sub"], encode_subject("jane", "ldap"));
    assert_eq!(first["email"], "jane@example.org");
    let ldap_refresh = from_ldap["refresh_token"].as_str().unwrap().to_string();
    assert!(terminate(&mut lanyard).success());

    // GitHub instead: only the config changed.
    let mut lanyard = start(dir.path(), port, &github);
    wait_ready(&ready).await;
    let from_github = github_login(&site, &fake).await;
    let claims = claims_of(from_github["id_token"].as_str().unwrap());
    assert_eq!(
        claims["sub"],
        encode_subject(&GITHUB_ID.to_string(), "github")
    );
    assert_eq!(claims["groups"], json!(["acme:platform"]));
    assert_eq!(claims["email"], "jane@acme.example");
    let (status, body) = refresh(&site, &ldap_refresh).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "a session from a connector that left the config is not refreshed: {body}"
    );
    assert!(terminate(&mut lanyard).success());

    // LDAP again: the same person gets the same subject as the first time.
    let mut lanyard = start(dir.path(), port, &ldap_connector(&slapd));
    wait_ready(&ready).await;
    let again = claims_of(ldap_login(&site).await["id_token"].as_str().unwrap());
    assert_eq!(again["sub"], first["sub"]);
    assert_eq!(again["groups"], first["groups"]);
    // The first LDAP session is the connector's again: it re-checks jane and goes on.
    let (status, body) = refresh(&site, &ldap_refresh).await;
    assert_eq!(status, 200, "{body}");
    assert!(terminate(&mut lanyard).success());
}

/// config/examples/multi.yaml (GitHub, LDAP, Okta and a CI issuer side by side) is a valid
/// config once its variables are set.
#[test]
fn the_multi_connector_example_passes_check_config() {
    use base64::Engine;
    let ca = rcgen::generate_simple_self_signed(vec!["example-ca".into()])
        .unwrap()
        .cert
        .pem();
    let out = Command::new(BIN)
        .args(["check-config", "--config", "config/examples/multi.yaml"])
        .env("POSTGRES_PASSWORD", "pw")
        .env("LANYARD_ENCRYPTION_KEY", ENCRYPTION_KEY)
        .env("GITHUB_CLIENT_ID", "github-id")
        .env("GITHUB_CLIENT_SECRET", "github-secret")
        .env("LDAP_BIND_PASSWORD", "bind-pw")
        .env("OKTA_CLIENT_ID", "okta-id")
        .env("OKTA_CLIENT_SECRET", "okta-secret")
        .env("KUBERNETES_CLIENT_SECRET", "kubernetes-secret")
        .env(
            "PRODUCTION_CA_DATA",
            base64::engine::general_purpose::STANDARD.encode(ca),
        )
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), "OK");
}
