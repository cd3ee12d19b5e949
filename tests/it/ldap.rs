//! The LDAP connector against a real OpenLDAP slapd (tests/it/common/slapd.rs): first the
//! connector alone, then through the real server's login form and token endpoint.

use crate::common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::server::*;
use common::slapd::*;
use lanyard_connectors::{
    ConnectorError, Identity, LdapConfig, LdapConnector, LdapLimits, PasswordConnector,
    RefreshConnector, Scopes,
};
use serde_json::{json, Value};

const ALL: Scopes = Scopes {
    offline_access: true,
    groups: true,
};

fn limits() -> LdapLimits {
    LdapLimits {
        connect_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(1),
        max_connections: 4,
        ..LdapLimits::default()
    }
}

/// The connector config the tests use: plain LDAP, users by uid or mail, groups by DN
/// membership (nested) and by posix memberUid.
fn config(slapd: &Slapd) -> Value {
    json!({
        "host": slapd.host(),
        "insecureNoSSL": true,
        "bindDN": SERVICE_DN,
        "bindPW": SERVICE_PW,
        "userSearch": {
            "baseDN": PEOPLE,
            "filter": "(objectClass=inetOrgPerson)",
            "username": ["uid", "mail"],
            "idAttr": "uid",
            "emailAttr": "mail",
            "nameAttr": "cn",
            "preferredUsernameAttr": "uid"
        },
        "groupSearch": {
            "baseDN": GROUPS,
            "filter": "(|(objectClass=groupOfNames)(objectClass=posixGroup))",
            "userMatchers": [
                {"userAttr": "DN", "groupAttr": "member", "recursionGroupAttr": "member"},
                {"userAttr": "uid", "groupAttr": "memberUid"}
            ],
            "nameAttr": "cn"
        }
    })
}

fn connector_with(value: &Value, limits: LdapLimits) -> LdapConnector {
    let config = LdapConfig::from_json(value).unwrap_or_else(|e| panic!("{e:?}"));
    LdapConnector::with_limits(config, limits).expect("connector")
}

fn connector(slapd: &Slapd) -> LdapConnector {
    connector_with(&config(slapd), limits())
}

async fn login(c: &LdapConnector, user: &str, password: &str) -> Option<Identity> {
    c.login(&ALL, user, password)
        .await
        .unwrap_or_else(|e| panic!("login {user:?}: {e}"))
}

fn sorted(groups: &[String]) -> Vec<&str> {
    let mut g: Vec<&str> = groups.iter().map(String::as_str).collect();
    g.sort_unstable();
    g
}

// ----- the connector against slapd ----------------------------------------------------------

#[tokio::test]
async fn users_with_special_characters_log_in_with_their_own_password() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    for user in [jane(), john(), obrien(), juergen(), star(), admin()] {
        let id = login(&c, user.uid, user.password)
            .await
            .unwrap_or_else(|| panic!("{} should log in", user.uid));
        assert_eq!(id.user_id, user.uid, "idAttr uid is the user id");
        assert_eq!(id.preferred_username, user.uid);
        assert!(id.email_verified);
        // Somebody else's password never works.
        let other = if user.uid == "admin" { jane() } else { admin() };
        assert!(login(&c, user.uid, other.password).await.is_none());
    }
    let john = login(&c, "jsmith", john().password).await.unwrap();
    assert_eq!(john.username, "Smith, John");
    assert_eq!(john.email, "john.smith@example.org");
    let juergen = login(&c, "jürgen", juergen().password).await.unwrap();
    assert_eq!(juergen.username, "Jürgen Groß");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_both_a_plain_no() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    assert!(login(&c, "jane", "wrong").await.is_none());
    assert!(login(&c, "nobody", "jane-password").await.is_none());
    assert!(
        login(&c, "Jane", jane().password).await.is_some(),
        "uid matches case-insensitively on the server"
    );
}

#[tokio::test]
async fn filter_injection_attempts_log_nobody_in() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    let attempts = [
        "*",
        "*)(uid=*",
        "*)(|(uid=*",
        "admin)(|(password=*",
        "admin)(|(userPassword=*",
        "admin*",
        "adm*n",
        "*admin",
        "jane)(uid=admin",
        "admin)(objectClass=*",
        "a*",
        r"\2a",
        "admin\0",
        "*@example.org",
    ];
    for attempt in attempts {
        for password in [admin().password, jane().password, "*", "x"] {
            let result = c.login(&ALL, attempt, password).await;
            assert!(
                matches!(result, Ok(None)),
                "{attempt:?} / {password:?} must be a wrong login, got {result:?}"
            );
        }
    }
    // The user whose uid really is full of filter syntax still gets in.
    assert!(login(&c, star().uid, star().password).await.is_some());
}

#[tokio::test]
async fn an_empty_password_is_refused_for_a_real_user() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    assert!(login(&c, "jane", "").await.is_none());
    assert!(login(&c, "jane", jane().password).await.is_some());
}

#[tokio::test]
async fn a_user_with_two_mail_values_logs_in_by_either_and_gets_the_first() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    for name in ["multi", "first@example.org", "second@example.org"] {
        let id = login(&c, name, multi().password)
            .await
            .unwrap_or_else(|| panic!("{name}"));
        assert_eq!(id.user_id, "multi");
        assert_eq!(id.email, "first@example.org");
    }
}

#[tokio::test]
async fn a_username_matching_two_entries_is_an_error_not_a_login() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    let result = c.login(&ALL, "twin@example.org", "twin-password").await;
    assert!(
        matches!(result, Err(ConnectorError::Config(_))),
        "{result:?}"
    );
    assert!(login(&c, "twin1", "twin-password").await.is_some());
}

#[tokio::test]
async fn nested_groups_are_followed_and_cycles_end() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    let jane = login(&c, "jane", jane().password).await.unwrap();
    assert_eq!(
        sorted(&jane.groups),
        ["all-staff", "developers", "engineering", "posix-ops"]
    );
    let john = login(&c, "jsmith", john().password).await.unwrap();
    assert_eq!(
        sorted(&john.groups),
        ["all-staff", "developers", "engineering"]
    );
    // jürgen is in "Team, Blue", whose DN needs escaping in the next level's filter.
    let juergen = login(&c, "jürgen", juergen().password).await.unwrap();
    assert_eq!(
        sorted(&juergen.groups),
        ["Team, Blue", "all-staff", "developers", "engineering"]
    );
    let pat = login(&c, "o'brien", obrien().password).await.unwrap();
    assert_eq!(sorted(&pat.groups), ["cycle-a", "cycle-b"]);
    // The cycle ends because it is detected, not because of the depth limit.
    let unlimited = connector_with(
        &config(&slapd),
        LdapLimits {
            max_group_depth: 100_000,
            ..limits()
        },
    );
    let cyclic = tokio::time::timeout(
        Duration::from_secs(10),
        login(&unlimited, "o'brien", obrien().password),
    )
    .await
    .expect("a cycle must not loop")
    .unwrap();
    assert_eq!(sorted(&cyclic.groups), ["cycle-a", "cycle-b"]);
    let admin = login(&c, "admin", admin().password).await.unwrap();
    assert_eq!(admin.groups, ["admins"]);
    let multi = login(&c, "multi", multi().password).await.unwrap();
    assert!(multi.groups.is_empty());
}

#[tokio::test]
async fn nesting_deeper_than_the_limit_is_cut_off() {
    let Some(slapd) = Slapd::start() else { return };
    let full = login(&connector(&slapd), star().uid, star().password)
        .await
        .unwrap();
    assert_eq!(
        sorted(&full.groups),
        ["chain-0", "chain-1", "chain-2", "chain-3", "chain-4", "chain-5"]
    );
    let shallow = connector_with(
        &config(&slapd),
        LdapLimits {
            max_group_depth: 2,
            ..limits()
        },
    );
    let cut = login(&shallow, star().uid, star().password).await.unwrap();
    assert_eq!(sorted(&cut.groups), ["chain-0", "chain-1", "chain-2"]);
}

#[tokio::test]
async fn groups_are_not_read_unless_the_groups_scope_is_asked_for() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    let id = c
        .login(&Scopes::default(), "jane", jane().password)
        .await
        .unwrap()
        .unwrap();
    assert!(id.groups.is_empty());
}

#[tokio::test]
async fn searches_run_as_the_service_account_after_a_user_bind() {
    // One connection, reused: had it stayed bound as the user (who may read nothing, see
    // the ACL), the next search would find nobody.
    let Some(slapd) = Slapd::start() else { return };
    let c = connector_with(
        &config(&slapd),
        LdapLimits {
            max_connections: 1,
            ..limits()
        },
    );
    assert!(login(&c, "jane", jane().password).await.is_some());
    assert!(login(&c, "jane", "wrong").await.is_none());
    let admin = login(&c, "admin", admin().password).await.unwrap();
    assert_eq!(admin.groups, ["admins"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_logins_share_a_bounded_pool() {
    let Some(slapd) = Slapd::start() else { return };
    let c = std::sync::Arc::new(connector_with(
        &config(&slapd),
        LdapLimits {
            max_connections: 2,
            operation_timeout: Duration::from_secs(5),
            ..limits()
        },
    ));
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let (user, pw) = if i % 2 == 0 {
                    ("jane", jane().password)
                } else {
                    ("admin", admin().password)
                };
                c.login(&ALL, user, pw).await
            })
        })
        .collect();
    for t in tasks {
        let id = t.await.unwrap().unwrap().expect("login");
        assert!(!id.groups.is_empty());
    }
}

#[tokio::test]
async fn a_wrong_service_password_is_an_error() {
    let Some(slapd) = Slapd::start() else { return };
    let mut cfg = config(&slapd);
    cfg["bindPW"] = json!("not-the-password");
    let c = connector_with(&cfg, limits());
    let result = c.login(&ALL, "jane", jane().password).await;
    assert!(
        matches!(result, Err(ConnectorError::Config(_))),
        "{result:?}"
    );
}

// ----- refresh ------------------------------------------------------------------------------

/// slapd, the connector, and jane's identity from a login.
async fn jane_logged_in() -> Option<(Slapd, LdapConnector, Identity)> {
    let slapd = Slapd::start()?;
    let c = connector(&slapd);
    let id = login(&c, "jane", jane().password)
        .await
        .expect("jane logs in");
    Some((slapd, c, id))
}

async fn assert_session_ended(c: &LdapConnector, id: &Identity) {
    let result = c.refresh(&ALL, id).await;
    assert!(
        matches!(result, Err(ConnectorError::SessionEnded(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn refresh_rereads_groups_from_the_directory() {
    let Some((slapd, c, first)) = jane_logged_in().await else {
        return;
    };
    assert!(!first.groups.contains(&"admins".to_string()));

    slapd.add_member(&group_dn("admins"), &jane().dn);
    slapd.remove_member(&group_dn("developers"), &jane().dn);
    let again = c.refresh(&ALL, &first).await.expect("refresh");
    assert_eq!(again.user_id, "jane");
    assert_eq!(sorted(&again.groups), ["admins", "posix-ops"]);
    assert_eq!(again.connector_data, first.connector_data);
}

#[tokio::test]
async fn refresh_of_a_deleted_user_ends_the_session() {
    let Some((slapd, c, id)) = jane_logged_in().await else {
        return;
    };
    slapd.delete(&jane().dn);
    assert_session_ended(&c, &id).await;
}

#[tokio::test]
async fn refresh_requires_the_same_entry_not_just_the_same_username() {
    let Some((slapd, c, id)) = jane_logged_in().await else {
        return;
    };
    slapd.delete(&jane().dn);
    // Someone else now has uid jane, at another DN.
    slapd.modify(&format!(
        "dn: cn=Jane Impostor,{PEOPLE}\nchangetype: add\nobjectClass: inetOrgPerson\ncn: Jane Impostor\nsn: Impostor\nuid: jane\nmail: impostor@example.org\nuserPassword: x\n"
    ));
    assert_session_ended(&c, &id).await;
}

#[tokio::test]
async fn refresh_accepts_the_stored_dn_spelled_differently() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    let mut id = login(&c, "jsmith", john().password).await.unwrap();
    let data: Value = serde_json::from_slice(id.connector_data.as_ref().unwrap()).unwrap();
    let respelled = r"CN=smith\2c  JOHN, OU=People, DC=Example, DC=Org";
    assert_ne!(data["dn"], respelled);
    id.connector_data =
        Some(serde_json::to_vec(&json!({"username": data["username"], "dn": respelled})).unwrap());
    let again = c
        .refresh(&ALL, &id)
        .await
        .expect("same entry, other spelling");
    assert_eq!(again.user_id, "jsmith");
}

// ----- unavailable servers ------------------------------------------------------------------

#[tokio::test]
async fn a_server_that_is_down_is_unavailable_at_once() {
    let Some(mut slapd) = Slapd::start() else {
        return;
    };
    let c = connector(&slapd);
    assert!(login(&c, "jane", jane().password).await.is_some());
    slapd.kill();
    let start = Instant::now();
    let result = c.login(&ALL, "jane", jane().password).await;
    assert!(
        matches!(result, Err(ConnectorError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_stopped_server_times_out_and_the_pool_recovers() {
    let Some(slapd) = Slapd::start() else { return };
    let c = connector(&slapd);
    assert!(login(&c, "jane", jane().password).await.is_some());
    slapd.pause();
    for tls in [false, true] {
        let c = if tls {
            let mut cfg = config(&slapd);
            cfg["host"] = json!(slapd.tls_host());
            cfg["insecureNoSSL"] = json!(false);
            cfg["rootCA"] = json!(slapd.ca_file.display().to_string());
            connector_with(&cfg, limits())
        } else {
            connector(&slapd)
        };
        let start = Instant::now();
        let result = c.login(&ALL, "jane", jane().password).await;
        assert!(
            matches!(result, Err(ConnectorError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    }
    // The pooled connection that timed out is not reused once the server is back.
    let start = Instant::now();
    let result = c.login(&ALL, "jane", jane().password).await;
    assert!(
        matches!(result, Err(ConnectorError::Unavailable(_))),
        "{result:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(4));
    slapd.resume();
    assert!(login(&c, "jane", jane().password).await.is_some());
}

// ----- TLS ----------------------------------------------------------------------------------

fn tls_config(slapd: &Slapd, extra: Value) -> Value {
    let mut cfg = config(slapd);
    cfg["host"] = json!(slapd.tls_host());
    cfg["insecureNoSSL"] = json!(false);
    if let (Some(cfg), Some(extra)) = (cfg.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            cfg.insert(k.clone(), v.clone());
        }
    }
    cfg
}

#[tokio::test]
async fn ldaps_verifies_the_server_against_root_ca_or_root_ca_data() {
    let Some(slapd) = Slapd::start() else { return };
    let ca_file = slapd.ca_file.display().to_string();
    let ca_data = base64::engine::general_purpose::STANDARD.encode(&slapd.ca_pem);
    for extra in [
        json!({"rootCA": ca_file}),
        json!({"rootCAData": ca_data}),
        json!({"insecureSkipVerify": true}),
        json!({"rootCA": ca_file, "host": format!("127.0.0.1:{}", slapd.tls_port)}),
        json!({"rootCA": ca_file, "host": slapd.host(), "startTLS": true}),
    ] {
        let c = connector_with(&tls_config(&slapd, extra.clone()), limits());
        let id = login(&c, "jane", jane().password).await;
        assert!(id.is_some(), "{extra}");
    }
}

#[tokio::test]
async fn ldaps_refuses_a_server_its_roots_do_not_vouch_for() {
    let Some(slapd) = Slapd::start() else { return };
    // The system roots do not include the test CA; neither does a different CA.
    let other_ca = rcgen::generate_simple_self_signed(vec!["other".to_string()])
        .unwrap()
        .cert
        .pem();
    let other_file = slapd.dir().join("other-ca.pem");
    std::fs::write(&other_file, other_ca).unwrap();
    for extra in [
        json!({}),
        json!({"rootCA": other_file.display().to_string()}),
        json!({"rootCA": other_file.display().to_string(), "host": slapd.host(), "startTLS": true}),
    ] {
        let built = LdapConfig::from_json(&tls_config(&slapd, extra.clone()))
            .map_err(|e| format!("{e:?}"))
            .and_then(|cfg| LdapConnector::with_limits(cfg, limits()).map_err(|e| e.to_string()));
        let Ok(c) = built else {
            // No system CAs at all on this machine: refusing to build is refusing too.
            continue;
        };
        let result = c.login(&ALL, "jane", jane().password).await;
        assert!(
            matches!(result, Err(ConnectorError::Unavailable(_))),
            "{extra}: {result:?}"
        );
    }
}

#[tokio::test]
async fn client_certificate_files_are_loaded_and_checked() {
    let Some(slapd) = Slapd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["lanyard".to_string()]).unwrap();
    let cert = dir.path().join("client.pem");
    let key = dir.path().join("client.key");
    std::fs::write(&cert, client.cert.pem()).unwrap();
    std::fs::write(&key, client.key_pair.serialize_pem()).unwrap();
    let ca_file = slapd.ca_file.display().to_string();
    let c = connector_with(
        &tls_config(
            &slapd,
            json!({"rootCA": ca_file, "clientCert": cert.display().to_string(), "clientKey": key.display().to_string()}),
        ),
        limits(),
    );
    assert!(login(&c, "jane", jane().password).await.is_some());

    let other = rcgen::generate_simple_self_signed(vec!["x".to_string()]).unwrap();
    std::fs::write(&key, other.key_pair.serialize_pem()).unwrap();
    let cfg = LdapConfig::from_json(&tls_config(
        &slapd,
        json!({"rootCA": ca_file, "clientCert": cert.display().to_string(), "clientKey": key.display().to_string()}),
    ))
    .unwrap();
    let err = LdapConnector::with_limits(cfg, limits())
        .err()
        .expect("mismatched key");
    assert!(err.to_string().contains("clientKey"), "{err}");
}

// ----- through the server -------------------------------------------------------------------

const CONNECTOR_ID: &str = "corp";

fn server_yaml(slapd: &Slapd, host: &str) -> String {
    format!(
        r#"oauth2:
  skipApprovalScreen: true
connectors:
- type: ldap
  id: {CONNECTOR_ID}
  name: Corp directory
  config:
    host: "{host}"
    insecureNoSSL: true
    bindDN: "{SERVICE_DN}"
    bindPW: "{SERVICE_PW}"
    usernamePrompt: Corp username
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
        recursionGroupAttr: member
      nameAttr: cn
"#,
        host = if host.is_empty() {
            slapd.host()
        } else {
            host.to_string()
        }
    )
}

/// /auth for the LDAP connector, up to its login form.
async fn open_ldap_form(
    s: &TestServer,
    browser: &reqwest::Client,
    req: &AuthRequest,
) -> (String, String) {
    let mut query = req.query();
    query.push(("connector_id".into(), CONNECTOR_ID.into()));
    let resp = browser
        .get(s.url("/auth"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let form_url = s.absolute(&location(&resp));
    let page = browser.get(&form_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    (form_url, page.text().await.unwrap())
}

/// Logs in through the form and redeems the code: the token response.
async fn ldap_tokens(s: &TestServer, user: &str, password: &str) -> Value {
    let req = AuthRequest::public();
    let browser = TestServer::new_browser();
    let (form_url, html) = open_ldap_form(s, &browser, &req).await;
    assert!(
        html.contains("Corp username"),
        "usernamePrompt labels the field"
    );
    let resp = s
        .submit_login(&browser, &form_url, &html, user, password)
        .await;
    assert_eq!(resp.status(), 303, "login should succeed");
    let redirect = location(&resp);
    assert!(redirect.starts_with(&req.redirect_uri), "{redirect}");
    let code = query_param(&redirect, "code").expect("code");
    let resp = s.redeem(&req, &code).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Dex's `sub`: base64url(protobuf {1: user id, 2: connector id}).
fn dex_sub(user_id: &str, connector_id: &str) -> String {
    let mut buf = vec![0x0a, user_id.len() as u8];
    buf.extend_from_slice(user_id.as_bytes());
    buf.extend_from_slice(&[0x12, connector_id.len() as u8]);
    buf.extend_from_slice(connector_id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

async fn refresh(s: &TestServer, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_form_id_token_carries_ldap_groups_and_a_dex_compatible_sub() {
    let Some(slapd) = Slapd::start() else { return };
    let Some(s) = TestServer::start(Backend::Sqlite, &server_yaml(&slapd, "")).await else {
        return;
    };
    let tokens = ldap_tokens(&s, "jürgen", juergen().password).await;
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], dex_sub("jürgen", CONNECTOR_ID));
    assert_eq!(claims["email"], "juergen@example.org");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Jürgen Groß");
    let mut groups: Vec<&str> = claims["groups"]
        .as_array()
        .expect("groups claim")
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    groups.sort_unstable();
    assert_eq!(
        groups,
        ["Team, Blue", "all-staff", "developers", "engineering"]
    );

    // A wrong password shows the form again; an injection attempt too.
    let browser = TestServer::new_browser();
    for (user, pw) in [
        ("jane", "wrong"),
        ("*)(uid=*", jane().password),
        ("admin)(|(password=*", "x"),
    ] {
        let (form_url, html) = open_ldap_form(&s, &browser, &AuthRequest::public()).await;
        let resp = s.submit_login(&browser, &form_url, &html, user, pw).await;
        assert_eq!(resp.status(), 401, "{user}: refused, no redirect");
        assert!(
            resp.text().await.unwrap().contains("Corp username"),
            "{user}: the form again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_through_the_server_rereads_groups_and_ends_for_a_deleted_user() {
    let Some(slapd) = Slapd::start() else { return };
    let Some(s) = TestServer::start(Backend::Sqlite, &server_yaml(&slapd, "")).await else {
        return;
    };
    let tokens = ldap_tokens(&s, "jane", jane().password).await;
    let groups = &claims_of(tokens["id_token"].as_str().unwrap())["groups"];
    assert!(
        !groups.as_array().unwrap().contains(&json!("admins")),
        "{groups}"
    );

    slapd.add_member(&group_dn("admins"), &jane().dn);
    let resp = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
    let refreshed: Value = resp.json().await.unwrap();
    let groups = &claims_of(refreshed["id_token"].as_str().unwrap())["groups"];
    assert!(
        groups.as_array().unwrap().contains(&json!("admins")),
        "{groups}"
    );

    slapd.delete(&jane().dn);
    let resp = refresh(&s, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_dead_directory_gives_the_error_page_quickly() {
    let Some(mut slapd) = Slapd::start() else {
        return;
    };
    let Some(s) = TestServer::start(Backend::Sqlite, &server_yaml(&slapd, "")).await else {
        return;
    };
    let browser = TestServer::new_browser();
    let (form_url, html) = open_ldap_form(&s, &browser, &AuthRequest::public()).await;

    slapd.pause();
    let start = Instant::now();
    let resp = s
        .submit_login(&browser, &form_url, &html, "jane", jane().password)
        .await;
    let took = start.elapsed();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("Sign-in unavailable"));
    // The server's limits: 5 s to connect, 5 s per operation.
    assert!(took < Duration::from_secs(12), "{took:?}");

    slapd.kill();
    let (form_url, html) = open_ldap_form(&s, &browser, &AuthRequest::public()).await;
    let start = Instant::now();
    let resp = s
        .submit_login(&browser, &form_url, &html, "jane", jane().password)
        .await;
    assert_eq!(resp.status(), 502);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

// ----- configuration ------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

fn check_config(yaml: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const BASE: &str =
    "issuer: https://login.example.com\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\n";

#[test]
fn check_config_names_the_key_path_of_ldap_problems() {
    let yaml = format!(
        "{BASE}connectors:\n- type: local\n  id: other\n- type: ldap\n  id: corp\n  name: Corp\n  config:\n    host: ldap.example.com\n    bindDN: cn=svc,dc=example,dc=com\n    bindPW: pw\n    userSearch:\n      username: uid\n      scpoe: sub\n    groupSearch:\n      baseDN: ou=groups,dc=example,dc=com\n"
    );
    let (ok, text) = check_config(&yaml, &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("connectors[1].config.userSearch.scpoe: unknown key `scpoe`"),
        "{text}"
    );
    assert!(text.contains("scope"), "suggests the closest key: {text}");

    let yaml = format!(
        "{BASE}connectors:\n- type: local\n  id: other\n- type: ldap\n  id: corp\n  config:\n    host: ldap.example.com\n    userSearch:\n      username: uid\n    groupSearch:\n      baseDN: ou=groups,dc=example,dc=com\n"
    );
    let (ok, text) = check_config(&yaml, &[]);
    assert!(!ok, "{text}");
    for expected in [
        "connectors[1].config.userSearch.baseDN: missing",
        "connectors[1].config.groupSearch.nameAttr: missing",
        "connectors[1].config.groupSearch.userMatchers: missing",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
}

#[test]
fn the_ldap_example_passes_check_config() {
    let yaml = std::fs::read_to_string("config/examples/ldap.yaml").unwrap();
    let (ok, text) = check_config(
        &yaml,
        &[
            ("LDAP_BIND_PASSWORD", "service-secret"),
            ("KUBE_LOGIN_SECRET", "client-secret"),
            (
                "LANYARD_ENCRYPTION_KEY",
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            ),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("OK"), "{text}");
}

#[tokio::test]
async fn a_connector_whose_files_are_unreadable_fails_at_start_naming_it() {
    let yaml = format!(
        "{BASE}keys:\n  encryptionKey: {ENCRYPTION_KEY}\nconnectors:\n- type: ldap\n  id: corp\n  config:\n    host: ldap.example.com\n    rootCA: /nonexistent/ca.pem\n    userSearch:\n      baseDN: ou=people,dc=example,dc=com\n      username: uid\n"
    );
    let config = lanyard::config::Config::from_yaml_str(&yaml, &|_| None).expect("valid config");
    let dir = tempfile::tempdir().unwrap();
    let mut options = lanyard::server::app::BuildOptions::new(false);
    options.data_dir = dir.path().to_path_buf();
    let err = match lanyard::server::app::build(&config, options).await {
        Ok(_) => panic!("the build should fail"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(
            "connector corp: connectors[0].config.rootCA: cannot read /nonexistent/ca.pem"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_ldap_account_stays_locked_however_its_name_is_typed() {
    let Some(slapd) = Slapd::start() else { return };
    let Some(s) = TestServer::builder(Backend::Sqlite)
        .web(TRUST_LOCAL_PROXY)
        .config(&server_yaml(&slapd, ""))
        .start()
        .await
    else {
        return;
    };
    let browser = TestServer::new_browser();
    let variants = [" jane", "JANE ", "  Jane  "];
    // The directory ignores surrounding spaces and case: each variant is jane.
    for (i, typed) in variants.iter().enumerate() {
        // A browser of its own each time: a signed-in one would skip the form.
        let browser = TestServer::new_browser();
        let (form_url, html) = open_ldap_form(&s, &browser, &AuthRequest::public()).await;
        let r = s
            .submit_login_from(
                &browser,
                &form_url,
                &html,
                typed,
                jane().password,
                &format!("10.0.0.{i}"),
            )
            .await;
        assert_eq!(r.status(), 303, "{typed:?} logs jane in");
    }
    let (form_url, html) = open_ldap_form(&s, &browser, &AuthRequest::public()).await;
    for i in 0..5 {
        let r = s
            .submit_login_from(
                &browser,
                &form_url,
                &html,
                "jane",
                "wrong",
                &format!("10.0.1.{i}"),
            )
            .await;
        assert_eq!(r.status(), 401);
    }
    for (i, typed) in variants.iter().enumerate() {
        let r = s
            .submit_login_from(
                &browser,
                &form_url,
                &html,
                typed,
                jane().password,
                &format!("10.0.2.{i}"),
            )
            .await;
        assert_eq!(r.status(), 429, "{typed:?} got past jane's lockout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_of_one_ldap_entry_shares_one_budget() {
    let Some(slapd) = Slapd::start() else { return };
    let Some(s) = TestServer::builder(Backend::Sqlite)
        .web(TRUST_LOCAL_PROXY)
        .config(&server_yaml(&slapd, "").replace("username: uid", "username: [uid, mail]"))
        .start()
        .await
    else {
        return;
    };
    let browser = TestServer::new_browser();
    let (form_url, html) = open_ldap_form(&s, &browser, &AuthRequest::public()).await;
    // The user search finds the one entry by its uid or by either mail value.
    let names = ["multi", "first@example.org", "second@example.org"];
    let mut checked = 0;
    for i in 0..6 * names.len() {
        let r = s
            .submit_login_from(
                &browser,
                &form_url,
                &html,
                names[i % names.len()],
                "wrong",
                &format!("10.0.3.{i}"),
            )
            .await;
        assert!([401, 429].contains(&r.status().as_u16()), "{r:?}");
        checked += usize::from(r.status() == 401);
    }
    assert_eq!(checked, 5, "guesses checked across the entry's names");
    // The right password waits out the lockout under any of the names.
    for name in names {
        let r = s
            .submit_login_from(
                &browser,
                &form_url,
                &html,
                name,
                multi().password,
                "10.0.4.1",
            )
            .await;
        assert_eq!(r.status(), 429, "{name:?} got past the entry's lockout");
    }
}
