//! The Google connector against a fake Google (tests/it/common/fake_google.rs, which cites the
//! documentation it follows): sign-in through its OpenID Connect provider, groups from its
//! Directory API through a service account key, reached through lanyard's `issuer`,
//! `directoryURL` and `rootCAs`.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::connector_config::{assert_example_passes_check_config, connector_config_errors};
use common::fake_google::{DirectoryFault, FakeGoogle, GROUP_SCOPE, SERVICE_ACCOUNT};
use common::server::{claims_of, AuthRequest, Backend, TestServer};
use common::upstream_login::{callback_page, login, refresh};
use lanyard::oidc::subject::encode_subject;
use lanyard_connectors::google::{GoogleConfig, GoogleConnector};
use lanyard_connectors::{CallbackConnector, ConnectorError, Scopes};
use serde_json::{json, Value};

const JANE: &str = "108234567890123456789";
const BOB: &str = "108234567890000000000";

/// Jane at example.com in `sre@`, which is itself in `eng@`; Bob with a personal account.
fn fake() -> FakeGoogle {
    let fake = FakeGoogle::start();
    fake.add_user(JANE, "jane@example.com", "Jane Doe", Some("example.com"));
    fake.add_user(BOB, "bob@gmail.example", "Bob", None);
    fake.add_member("jane@example.com", "sre@example.com");
    fake.add_member("jane@example.com", "all@example.com");
    fake.add_member("sre@example.com", "eng@example.com");
    fake.add_member("bob@gmail.example", "fans@example.com");
    fake.sign_in(JANE);
    fake
}

async fn server(fake: &FakeGoogle, extra: Value) -> TestServer {
    TestServer::start(
        Backend::Sqlite,
        &format!("connectors:\n{}", fake.connector_yaml("google", extra)),
    )
    .await
    .expect("SQLite server")
}

fn authorize_url(fake: &FakeGoogle) -> String {
    format!("{}/o/oauth2/v2/auth?", fake.https.base)
}

async fn sign_in(s: &TestServer, fake: &FakeGoogle) -> Value {
    login(
        s,
        &fake.https.browser(),
        &AuthRequest::public(),
        "google",
        &authorize_url(fake),
    )
    .await
}

async fn page(s: &TestServer, fake: &FakeGoogle) -> (u16, String) {
    callback_page(s, &fake.https.browser(), "google", &authorize_url(fake)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_gives_transitive_directory_groups_paged() {
    let fake = fake();
    fake.state().page_size = 1;
    let s = server(
        &fake,
        json!({"hostedDomains": ["example.com"], "fetchTransitiveGroupMembership": true}),
    )
    .await;
    let tokens = sign_in(&s, &fake).await;
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(
        claims["groups"],
        json!(["sre@example.com", "eng@example.com", "all@example.com"])
    );
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(claims["name"], "Jane Doe");
    assert_eq!(claims["sub"], encode_subject(JANE, "google"));

    let asked = fake.state().last_authorize.clone();
    assert_eq!(asked["hd"], "example.com");
    assert_eq!(asked["access_type"], "offline");
    assert_eq!(asked["prompt"], "consent");
    assert_eq!(asked["scope"], "openid profile email");
    // The service account asked as the configured administrator, for the read-only scope.
    let assertion = fake.state().last_assertion.clone().expect("assertion");
    assert_eq!(assertion["iss"], SERVICE_ACCOUNT);
    assert_eq!(assertion["sub"], "admin@example.com");
    assert_eq!(assertion["scope"], GROUP_SCOPE);
    // Paged: jane's two groups took two pages, then sre@'s groups, eng@'s (none) and all@'s
    // (none) were listed.
    let log = fake.state().directory_log.clone();
    assert_eq!(
        log,
        [
            "userKey=jane@example.com pageToken=",
            "userKey=jane@example.com pageToken=1",
            "userKey=sre@example.com pageToken=",
            "userKey=eng@example.com pageToken=",
            "userKey=all@example.com pageToken=",
        ],
    );
    s.assert_connector_data_sealed("g-refresh-").await;

    // Without fetchTransitiveGroupMembership only direct groups.
    let s = server(&fake, json!({})).await;
    let claims = claims_of(sign_in(&s, &fake).await["id_token"].as_str().unwrap());
    assert_eq!(
        claims["groups"],
        json!(["sre@example.com", "all@example.com"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosted_domains_and_groups_refuse_outsiders() {
    let fake = fake();
    let s = server(&fake, json!({"hostedDomains": ["example.com"]})).await;
    fake.sign_in(BOB);
    let (status, body) = page(&s, &fake).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("not a Google Workspace account of example.com"),
        "{body}"
    );

    let s = server(
        &fake,
        json!({"groups": ["sre@example.com", "ops@example.com"]}),
    )
    .await;
    let (status, body) = page(&s, &fake).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("none of the groups allowed"), "{body}");
    fake.sign_in(JANE);
    let claims = claims_of(sign_in(&s, &fake).await["id_token"].as_str().unwrap());
    assert_eq!(
        claims["groups"],
        json!(["sre@example.com"]),
        "only listed groups"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rereads_groups_and_ends_when_out_of_them() {
    let fake = fake();
    let s = server(
        &fake,
        json!({"groups": ["sre@example.com", "oncall@example.com"]}),
    )
    .await;
    let tokens = sign_in(&s, &fake).await;
    fake.add_member("jane@example.com", "oncall@example.com");
    let (status, body) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims_of(body["id_token"].as_str().unwrap())["groups"],
        json!(["sre@example.com", "oncall@example.com"])
    );

    fake.remove_member("jane@example.com", "sre@example.com");
    fake.remove_member("jane@example.com", "oncall@example.com");
    let (status, body) = refresh(&s, body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_failures_give_a_clear_page() {
    let fake = fake();
    let s = server(&fake, json!({})).await;
    for fault in [
        DirectoryFault::Status(401),
        DirectoryFault::Status(403),
        DirectoryFault::Throttle(30),
        DirectoryFault::Status(500),
        // Beyond the connector's 15-second timeout.
        DirectoryFault::Hang(Duration::from_secs(17)),
    ] {
        fake.state().fault = Some(fault);
        let (status, body) = page(&s, &fake).await;
        assert_eq!(status, 502, "{fault:?}: {body}");
        assert!(body.contains("Sign-in unavailable"), "{fault:?}: {body}");
    }
    fake.state().fault = None;
    let (status, _) = page(&s, &fake).await;
    assert_eq!(status, 303, "works again");
    // A service account without delegation to act as the configured administrator (a new
    // server: the running one keeps its directory token until it expires).
    fake.state().delegated_admin = "someone-else@example.com".into();
    let s = server(&fake, json!({})).await;
    let (status, body) = page(&s, &fake).await;
    assert_eq!(status, 502, "{body}");
}

// ----- the connector on its own -----------------------------------------------------------

const CALLBACK: &str = "https://lanyard.example/callback";
const SCOPES: Scopes = Scopes {
    offline_access: true,
    groups: true,
};

async fn direct_sign_in(
    fake: &FakeGoogle,
    extra: Value,
) -> Result<lanyard_connectors::Identity, ConnectorError> {
    let mut config: GoogleConfig = serde_json::from_value(fake.connector_config(extra)).unwrap();
    config.redirect_uri = CALLBACK.into();
    let c = GoogleConnector::with_timeout(
        "google",
        &config,
        Arc::new(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        }),
        Duration::from_secs(1),
    )
    .unwrap();
    let redirect = c.login_url(&SCOPES, CALLBACK, "st").await.unwrap();
    let resp = fake
        .https
        .browser()
        .get(&redirect.url)
        .send()
        .await
        .unwrap();
    let back = common::server::location(&resp);
    let query = back.split_once('?').unwrap().1.to_string();
    c.handle_callback(&SCOPES, CALLBACK, &redirect.pending, &query)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_directory_refusal_says_what_happened() {
    let fake = fake();
    let cases: [(DirectoryFault, &str); 5] = [
        (
            DirectoryFault::Status(401),
            "refused the access token on /admin/directory/v1/groups (401): 401: Login Required.",
        ),
        (
            DirectoryFault::Status(403),
            "denied /admin/directory/v1/groups (403): 403: Not Authorized",
        ),
        (
            DirectoryFault::Throttle(12),
            "throttling requests to /admin/directory/v1/groups (429); retry after 12 seconds",
        ),
        (
            DirectoryFault::Status(503),
            "answered /admin/directory/v1/groups with 503 Service Unavailable: 503: Backend Error",
        ),
        (
            DirectoryFault::Hang(Duration::from_secs(3)),
            "did not answer /admin/directory/v1/groups within 1 seconds",
        ),
    ];
    for (fault, expected) in cases {
        fake.state().fault = Some(fault);
        let err = direct_sign_in(&fake, json!({})).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{fault:?}: {text}");
        assert!(!text.contains("ya29."), "no token in errors: {text}");
    }
    fake.state().fault = None;
    fake.state().delegated_admin = "other@example.com".into();
    let err = direct_sign_in(&fake, json!({})).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Config(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("may not act as admin@example.com (unauthorized_client"),
        "{err}"
    );

    // A domain without an administrator (and no `*`) cannot have its groups read.
    fake.state().delegated_admin = "admin@example.com".into();
    let err = direct_sign_in(
        &fake,
        json!({"domainToAdminEmail": {"example.org": "admin@example.org"}}),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("no entry for `example.com`"),
        "{err}"
    );
}

// ----- config -----------------------------------------------------------------------------

fn config_errors(connector_config: &str) -> Vec<(String, String)> {
    connector_config_errors("google", connector_config)
}

#[test]
fn check_config_names_each_bad_google_setting_by_path() {
    let errors = config_errors("    clientID: a\n    clientSecret: b\n    hostedDomain: x\n");
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "connectors[0].config.hostedDomain"
                && m.contains("did you mean `hostedDomains`")),
        "{errors:?}"
    );
    let errors = config_errors(
        "    clientID: a\n    clientSecret: b\n    groups: [ops@example.com]\n    domainToAdminEmail:\n      example.com: admin@example.com\n",
    );
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["connectors[0].config.domainToAdminEmail"],
        "{errors:?}"
    );
    assert!(
        errors[0].1.contains("needs `serviceAccountFilePath`"),
        "{errors:?}"
    );
    let errors =
        config_errors("    clientID: a\n    clientSecret: b\n    groups: [ops@example.com]\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "connectors[0].config.groups");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_service_account_key_stops_the_connector_naming_the_key() {
    let fake = fake();
    let mut config: GoogleConfig =
        serde_json::from_value(fake.connector_config(json!({}))).unwrap();
    config.service_account_file_path = "/nonexistent/sa.json".into();
    let err = GoogleConnector::new("google", &config, Arc::new(|| 0)).unwrap_err();
    assert!(
        err.to_string()
            .contains("serviceAccountFilePath: cannot read /nonexistent/sa.json"),
        "{err}"
    );
}

#[test]
fn the_google_example_passes_check_config() {
    assert_example_passes_check_config(
        "config/examples/google.yaml",
        &[
            ("GOOGLE_CLIENT_ID", "1234.apps.googleusercontent.com"),
            ("GOOGLE_CLIENT_SECRET", "google-secret"),
        ],
    );
}
