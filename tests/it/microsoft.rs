//! The Microsoft connector against a fake Microsoft identity platform and Graph
//! (tests/it/common/fake_microsoft.rs, which cites the documentation it follows), reached over
//! HTTPS through `apiURL`/`graphURL` and trusted through `rootCAs`: end to end through a real
//! lanyard server, and directly where the connector's own answer is the point.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::connector_config::{assert_example_passes_check_config, connector_config_errors};
use common::fake_microsoft::{FakeMicrosoft, GraphFault, CLIENT_ID, TENANT};
use common::server::{claims_of, AuthRequest, Backend, TestServer};
use common::upstream_login::{callback_page, login, refresh};
use lanyard::oidc::subject::encode_subject;
use lanyard_connectors::microsoft::{MicrosoftConfig, MicrosoftConnector};
use lanyard_connectors::{CallbackConnector, ConnectorError, RefreshConnector, Scopes};
use serde_json::{json, Value};

const JANE: &str = "5f6a1c2e-0000-4000-8000-00000000jane";
const BOB: &str = "5f6a1c2e-0000-4000-8000-000000000bob";

/// Jane, in three groups (the last one only through a nested group: Graph's getMemberGroups
/// lists it all the same); Bob in one.
fn fake() -> FakeMicrosoft {
    let fake = FakeMicrosoft::start();
    fake.add_user(
        JANE,
        "Jane Doe",
        "Jane.Doe@Contoso.example",
        &[("g-1", "platform"), ("g-2", "sre"), ("g-3", "all-staff")],
    );
    fake.add_user(BOB, "Bob", "bob@contoso.example", &[("g-9", "sales")]);
    fake.sign_in(JANE);
    fake
}

async fn server(fake: &FakeMicrosoft, extra: Value) -> TestServer {
    TestServer::start(
        Backend::Sqlite,
        &format!("connectors:\n{}", fake.connector_yaml("microsoft", extra)),
    )
    .await
    .expect("SQLite server")
}

async fn sign_in(s: &TestServer, fake: &FakeMicrosoft) -> Value {
    login(
        s,
        &fake.https.browser(),
        &AuthRequest::public(),
        "microsoft",
        &format!("{}/{TENANT}/oauth2/v2.0/authorize?", fake.https.base),
    )
    .await
}

async fn page(s: &TestServer, fake: &FakeMicrosoft) -> (u16, String) {
    callback_page(
        s,
        &fake.https.browser(),
        "microsoft",
        &format!("{}/{TENANT}/oauth2/v2.0/authorize?", fake.https.base),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_gives_graph_groups_paged_and_a_dex_subject() {
    let fake = fake();
    // Two items a page: three groups take two pages of getMemberGroups and of getByIds.
    fake.state().page_size = 2;
    let s = server(&fake, json!({"emailToLowercase": true, "domainHint": "contoso.example", "promptType": "select_account"})).await;

    let tokens = sign_in(&s, &fake).await;
    let claims = claims_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["groups"], json!(["platform", "sre", "all-staff"]));
    assert_eq!(claims["email"], "jane.doe@contoso.example");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Jane Doe");
    assert_eq!(claims["sub"], encode_subject(JANE, "microsoft"));

    let asked = fake.state().last_authorize.clone();
    assert_eq!(asked["client_id"], CLIENT_ID);
    assert_eq!(
        asked["scope"],
        "user.read directory.read.all offline_access"
    );
    assert_eq!(asked["domain_hint"], "contoso.example");
    assert_eq!(asked["prompt"], "select_account");
    assert_eq!(asked["redirect_uri"], s.url("/callback"));
    let log = fake.state().graph_log.clone();
    let pages = |p: &str| log.iter().filter(|l| l.starts_with(p)).count();
    assert_eq!(pages("POST /v1.0/me/getMemberGroups"), 2, "{log:?}");
    assert_eq!(pages("POST /v1.0/directoryObjects/getByIds"), 2, "{log:?}");
    assert!(
        log[0].contains("$select=id,displayName,userPrincipalName"),
        "{log:?}"
    );
    assert!(log[1].contains(r#""securityEnabledOnly":false"#), "{log:?}");

    // The upstream tokens kept for refresh are sealed at rest.
    s.assert_connector_data_sealed("ms-refresh-").await;
    s.assert_connector_data_sealed("ms-access-").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_ids_and_the_allow_list_follow_dex() {
    let fake = fake();
    let s = server(
        &fake,
        json!({"groups": ["sre", "admins"], "useGroupsAsWhitelist": true}),
    )
    .await;
    let claims = claims_of(sign_in(&s, &fake).await["id_token"].as_str().unwrap());
    assert_eq!(claims["groups"], json!(["sre"]), "only listed groups");

    // Bob is in none of them: refused with a page that says so.
    fake.sign_in(BOB);
    let (status, body) = page(&s, &fake).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("none of the groups allowed"), "{body}");

    let s = server(&fake, json!({"groupNameFormat": "id", "groups": ["g-9"]})).await;
    fake.state().graph_log.clear();
    let claims = claims_of(sign_in(&s, &fake).await["id_token"].as_str().unwrap());
    assert_eq!(claims["groups"], json!(["g-9"]));
    assert!(
        !fake
            .state()
            .graph_log
            .iter()
            .any(|l| l.contains("getByIds")),
        "ids need no names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rereads_groups_and_renews_an_expired_access_token() {
    let fake = fake();
    let s = server(&fake, json!({"groups": ["platform", "sre"]})).await;
    let tokens = sign_in(&s, &fake).await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap().to_string();

    fake.set_groups(JANE, &[("g-2", "sre"), ("g-4", "oncall")]);
    let (status, body) = refresh(&s, &refresh_token).await;
    assert_eq!(status, 200, "{body}");
    let claims = claims_of(body["id_token"].as_str().unwrap());
    assert_eq!(claims["groups"], json!(["sre", "oncall"]));
    assert_eq!(
        fake.state().refresh_grants,
        0,
        "the access token still lasts"
    );

    // An access token at its end is renewed with the refresh token first.
    fake.state().expires_in = 0;
    let tokens = sign_in(&s, &fake).await;
    fake.set_groups(JANE, &[("g-1", "platform")]);
    let (status, body) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims_of(body["id_token"].as_str().unwrap())["groups"],
        json!(["platform"])
    );
    assert_eq!(fake.state().refresh_grants, 1);

    // Out of every allowed group: the session ends.
    fake.set_groups(JANE, &[("g-9", "sales")]);
    let (status, body) = refresh(&s, body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");

    // A revoked refresh token ends the session too.
    let tokens = {
        fake.set_groups(JANE, &[("g-1", "platform")]);
        sign_in(&s, &fake).await
    };
    fake.revoke_tokens_of(JANE);
    let (status, body) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_failures_give_a_clear_page() {
    let fake = fake();
    let s = server(&fake, json!({})).await;
    for fault in [
        GraphFault::Status(401),
        GraphFault::Status(403),
        GraphFault::Throttle(30),
        GraphFault::Status(500),
        GraphFault::Status(503),
        // Beyond the connector's 15-second timeout.
        GraphFault::Hang(Duration::from_secs(17)),
    ] {
        fake.state().fault = Some(fault);
        let (status, body) = page(&s, &fake).await;
        assert_eq!(status, 502, "{fault:?}: {body}");
        assert!(body.contains("Sign-in unavailable"), "{fault:?}: {body}");
    }
    fake.state().fault = None;
    let (status, _) = page(&s, &fake).await;
    assert_eq!(status, 303, "works again");

    // The person cancels at Microsoft.
    fake.state().deny = true;
    let (status, body) = page(&s, &fake).await;
    assert_eq!(status, 403, "{body}");
}

// ----- the connector on its own -----------------------------------------------------------

const CALLBACK: &str = "https://lanyard.example/callback";
const SCOPES: Scopes = Scopes {
    offline_access: true,
    groups: true,
};

fn connector(fake: &FakeMicrosoft, extra: Value, timeout: Duration) -> MicrosoftConnector {
    let config: MicrosoftConfig = serde_json::from_value(fake.connector_config(extra)).unwrap();
    MicrosoftConnector::with_timeout(&config, CALLBACK, Arc::new(|| 1_800_000_000), timeout)
        .unwrap()
}

async fn direct_sign_in(
    fake: &FakeMicrosoft,
    c: &MicrosoftConnector,
) -> Result<lanyard_connectors::Identity, ConnectorError> {
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
    c.handle_callback(&SCOPES, CALLBACK, &[], &query).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_graph_refusal_says_what_happened() {
    let fake = fake();
    let c = connector(&fake, json!({}), Duration::from_secs(1));
    let cases: [(GraphFault, &str); 5] = [
        (
            GraphFault::Status(401),
            "refused the access token on /v1.0/me (401): InvalidAuthenticationToken",
        ),
        (
            GraphFault::Status(403),
            "denied /v1.0/me (403): Authorization_RequestDenied: Insufficient privileges",
        ),
        (
            GraphFault::Throttle(17),
            "throttling requests to /v1.0/me (429); retry after 17 seconds",
        ),
        (
            GraphFault::Status(503),
            "answered /v1.0/me with 503 Service Unavailable: serviceNotAvailable",
        ),
        (
            GraphFault::Hang(Duration::from_secs(3)),
            "did not answer /v1.0/me within 1 seconds",
        ),
    ];
    for (fault, expected) in cases {
        fake.state().fault = Some(fault);
        let err = direct_sign_in(&fake, &c).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{fault:?}: {text}");
        assert!(!text.contains("ms-access-"), "no token in errors: {text}");
        let operator_fault = matches!(fault, GraphFault::Status(401 | 403));
        assert_eq!(
            matches!(err, ConnectorError::Config(_)),
            operator_fault,
            "{fault:?}: {err:?}"
        );
    }
    fake.state().fault = None;
    let identity = direct_sign_in(&fake, &c).await.unwrap();
    assert!(!format!("{identity:?}").contains("ms-access-"));

    // At refresh, Graph refusing the kept token ends the session; throttling does not.
    fake.state().fault = Some(GraphFault::Status(401));
    assert!(matches!(
        c.refresh(&SCOPES, &identity).await,
        Err(ConnectorError::SessionEnded(_))
    ));
    fake.state().fault = Some(GraphFault::Throttle(5));
    assert!(matches!(
        c.refresh(&SCOPES, &identity).await,
        Err(ConnectorError::Unavailable(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_away_from_graph_is_not_followed() {
    let fake = fake();
    fake.state().page_size = 1;
    // Graph's answers point at the fake's own address; a connector configured with another
    // spelling of Graph's origin (localhost) must refuse to send its token there.
    let localhost = fake.https.base.replace("127.0.0.1", "localhost");
    let c = connector(
        &fake,
        json!({"graphURL": localhost}),
        Duration::from_secs(5),
    );
    let err = direct_sign_in(&fake, &c).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("@odata.nextLink points away from graphURL"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_sign_in_service_is_unavailable() {
    let fake = fake();
    let c = connector(&fake, json!({}), Duration::from_secs(2));
    let redirect = c.login_url(&SCOPES, CALLBACK, "st").await.unwrap();
    let resp = fake
        .https
        .browser()
        .get(&redirect.url)
        .send()
        .await
        .unwrap();
    let back = common::server::location(&resp);
    drop(fake);
    let query = back.split_once('?').unwrap().1.to_string();
    let err = c
        .handle_callback(&SCOPES, CALLBACK, &[], &query)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectorError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("token endpoint"), "{err}");
}

// ----- config -----------------------------------------------------------------------------

fn config_errors(connector_config: &str) -> Vec<(String, String)> {
    connector_config_errors("microsoft", connector_config)
}

#[test]
fn check_config_names_each_bad_microsoft_setting_by_path() {
    let errors = config_errors("    clientID: a\n    clientSecert: b\n");
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "connectors[0].config.clientSecert"
                && m.contains("did you mean `clientSecret`")),
        "{errors:?}"
    );
    let errors = config_errors(
        "    clientID: a\n    groups: [admins]\n    groupNameFormat: mail\n    graphURL: graph.example\n",
    );
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "connectors[0].config.clientSecret",
            "connectors[0].config.graphURL",
            "connectors[0].config.groupNameFormat",
            "connectors[0].config.groups",
            "connectors[0].config.groupNameFormat",
        ],
        "{errors:?}"
    );
    assert!(errors[3]
        .1
        .contains("Microsoft Graph has no groups to read for tenant `common`"));
}

#[test]
fn the_microsoft_example_passes_check_config() {
    assert_example_passes_check_config(
        "config/examples/microsoft.yaml",
        &[
            ("ENTRA_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
            ("ENTRA_CLIENT_SECRET", "entra-secret"),
        ],
    );
}
