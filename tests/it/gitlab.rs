//! The GitLab connector against a fake self-managed GitLab (tests/it/common/fake_oauth.rs,
//! which follows GitLab's OAuth 2.0, Users API and OpenID Connect provider documentation),
//! reached over HTTPS through `baseURL` and trusted through `rootCAData`: end to end through a
//! real lanyard server, and directly where the connector's own answer is the point.

use crate::common;

use std::time::Duration;

use common::connector_config::{
    assert_example_passes_check_config, connector_errors, indented_config,
};
use common::fake_oauth::{id_claims, Failure, FakeAccount, FakeOAuth, CLIENT_ID, CLIENT_SECRET};
use common::server::{AuthRequest, TestServer};
use common::upstream_login::{self, refresh};
use lanyard::oidc::subject::encode_subject;
use lanyard_connectors::gitlab::{GitlabConfig, GitlabConnector};
use lanyard_connectors::{CallbackConnector, ConnectorError, RefreshConnector, Scopes};
use serde_json::{json, Value};

const JANE_ID: u64 = 4242;

fn jane() -> FakeAccount {
    FakeAccount::new(JANE_ID, "jane", "Jane Doe").in_groups(&["acme", "acme/platform"])
}

/// The connector's `config:` (YAML at the level of `clientID`), pointing at the fake.
fn connector_yaml(fake: &FakeOAuth, extra: &str) -> String {
    let mut yaml = format!(
        "- type: gitlab\n  id: gitlab\n  name: GitLab\n  config:\n    baseURL: {}\n    clientID: {CLIENT_ID}\n    clientSecret: {CLIENT_SECRET}\n    rootCAData: {}\n",
        fake.base,
        fake.ca_base64()
    );
    yaml.push_str(&indented_config(extra));
    yaml
}

/// A fake GitLab where `account` is signed in, and a lanyard server using it.
async fn gitlab_with(account: FakeAccount, extra: &str) -> (FakeOAuth, TestServer) {
    FakeOAuth::with_lanyard(account, |fake| connector_yaml(fake, extra)).await
}

// ----- end to end -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_ends_in_an_id_token_with_gitlab_groups_roles_and_a_dex_subject() {
    let mut account = jane();
    account.maintainer_of = vec!["acme".into()];
    let (fake, s) = gitlab_with(account, "getGroupsPermission: true\n").await;
    let tokens = fake.login(&s, &AuthRequest::public(), "gitlab").await;
    let claims = id_claims(&tokens);
    assert_eq!(
        claims["groups"],
        json!([
            "acme",
            "acme/platform",
            "acme:maintainer",
            "acme/platform:maintainer"
        ])
    );
    assert_eq!(
        claims["sub"],
        encode_subject(&JANE_ID.to_string(), "gitlab")
    );
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Jane Doe");
    assert_eq!(claims["preferred_username"], "jane");
    // Groups come from userinfo, so `openid` is asked for with `read_user`.
    assert_eq!(
        fake.state().last_authorize.get("scope").map(String::as_str),
        Some("read_user openid")
    );
    // The upstream tokens kept for refresh are sealed at rest.
    for token in fake.live_tokens() {
        s.assert_connector_data_sealed(&token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_login_as_id_makes_the_username_the_subject() {
    let (fake, s) = gitlab_with(jane(), "useLoginAsID: true\n").await;
    let claims = id_claims(&fake.login(&s, &AuthRequest::public(), "gitlab").await);
    assert_eq!(claims["sub"], encode_subject("jane", "gitlab"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_groups_allow_list_narrows_groups_and_refuses_a_user_outside_it() {
    let (fake, s) = gitlab_with(jane(), "groups:\n- acme/platform\n- ops\n").await;
    let claims = id_claims(&fake.login(&s, &AuthRequest::public(), "gitlab").await);
    assert_eq!(claims["groups"], json!(["acme/platform"]));

    fake.set_groups("jane", &["acme", "widgets"]);
    let (status, page) = fake.callback_page(&s, "gitlab").await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("`jane` is not in any of the required groups (acme&#x2f;platform, ops)"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reads_the_groups_again_and_a_revoked_grant_ends_the_session() {
    let (fake, s) = gitlab_with(jane(), "").await;
    let tokens = fake.login(&s, &AuthRequest::public(), "gitlab").await;
    assert_eq!(
        id_claims(&tokens)["groups"],
        json!(["acme", "acme/platform"])
    );

    fake.set_groups("jane", &["acme", "acme/sre"]);
    let (status, refreshed) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    let claims = id_claims(&refreshed);
    assert_eq!(claims["groups"], json!(["acme", "acme/sre"]));
    assert_eq!(
        claims["sub"],
        encode_subject(&JANE_ID.to_string(), "gitlab")
    );

    // GitLab no longer honours the refresh token (the user revoked the application).
    fake.revoke_all_tokens();
    let (status, body) = refresh(&s, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_give_a_clear_page_and_the_server_keeps_serving() {
    let (fake, s) = gitlab_with(jane(), "").await;
    for (failure, status, fragment) in [
        (Failure::Status(401), 502, "Sign-in unavailable"),
        (
            Failure::Status(403),
            403,
            // The page escapes the endpoint's slashes.
            "(403 Forbidden)",
        ),
        (Failure::RateLimited("30"), 502, "Sign-in unavailable"),
        (Failure::Status(500), 502, "Sign-in unavailable"),
        (Failure::Status(503), 502, "Sign-in unavailable"),
    ] {
        fake.fail_api(Some(failure.clone()));
        let (got, page) = fake.callback_page(&s, "gitlab").await;
        assert_eq!(got, status, "{failure:?}: {page}");
        assert!(page.contains(fragment), "{failure:?}: {page}");
    }
    fake.fail_api(None);
    let claims = id_claims(&fake.login(&s, &AuthRequest::public(), "gitlab").await);
    assert_eq!(claims["groups"], json!(["acme", "acme/platform"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_at_gitlab_is_access_denied() {
    let (fake, s) = gitlab_with(jane(), "").await;
    fake.state().deny = true;
    let (status, page) = fake.callback_page(&s, "gitlab").await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains("GitLab did not authorize the sign-in"),
        "{page}"
    );
}

// ----- the connector on its own -----------------------------------------------------------

const CALLBACK: &str = "https://lanyard.example/callback";
const SCOPES: Scopes = Scopes {
    offline_access: true,
    groups: true,
};

fn config(fake: &FakeOAuth, extra: Value) -> GitlabConfig {
    let mut config = json!({
        "baseURL": fake.base, "clientID": CLIENT_ID, "clientSecret": CLIENT_SECRET,
        "rootCAData": fake.ca_base64(),
    });
    if let (Some(map), Value::Object(extra)) = (config.as_object_mut(), extra) {
        map.extend(extra);
    }
    serde_json::from_value(config).unwrap()
}

/// Sends a "browser" to the connector's login URL at the fake; returns the callback's query.
async fn callback_query(fake: &FakeOAuth, connector: &GitlabConnector) -> String {
    upstream_login::callback_query(connector, &SCOPES, &fake.browser(), CALLBACK).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gitlab_that_does_not_answer_in_time_is_unavailable_naming_the_endpoint() {
    let fake = FakeOAuth::start().await;
    fake.sign_in(jane());
    let connector =
        GitlabConnector::with_timeout(&config(&fake, json!({})), CALLBACK, Duration::from_secs(1))
            .unwrap();
    let query = callback_query(&fake, &connector).await;
    fake.fail_api(Some(Failure::Hang(Duration::from_secs(5))));
    let err = connector
        .handle_callback(&SCOPES, CALLBACK, &[], &query)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Unavailable(m) if m.contains("GitLab did not answer /api/v4/user in time")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_names_retry_after() {
    let fake = FakeOAuth::start().await;
    fake.sign_in(jane());
    let connector = GitlabConnector::new(&config(&fake, json!({})), CALLBACK).unwrap();
    let query = callback_query(&fake, &connector).await;
    fake.fail_api(Some(Failure::RateLimited("42")));
    let err = connector
        .handle_callback(&SCOPES, CALLBACK, &[], &query)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Unavailable(m) if m.contains("429 Too Many Requests, retry after 42")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_gitlab_is_not_trusted() {
    let fake = FakeOAuth::start().await;
    fake.sign_in(jane());
    let mut settings = config(&fake, json!({}));
    settings.root_ca_data.clear();
    let connector = GitlabConnector::new(&settings, CALLBACK).unwrap();
    let query = callback_query(&fake, &connector).await;
    let err = connector
        .handle_callback(&SCOPES, CALLBACK, &[], &query)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Unavailable(m) if m.contains("cannot reach GitLab's token endpoint")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_only_an_access_token_refreshes_with_it_as_in_dex() {
    let fake = FakeOAuth::start().await;
    fake.sign_in(jane());
    let connector = GitlabConnector::new(&config(&fake, json!({})), CALLBACK).unwrap();
    let query = callback_query(&fake, &connector).await;
    let mut identity = connector
        .handle_callback(&SCOPES, CALLBACK, &[], &query)
        .await
        .unwrap();
    let access_token = fake
        .live_tokens()
        .into_iter()
        .find(|t| t.starts_with("gl-access-"))
        .unwrap();
    identity.connector_data = Some(
        json!({ "accessToken": access_token })
            .to_string()
            .into_bytes(),
    );

    fake.set_groups("jane", &["widgets"]);
    let fresh = connector.refresh(&SCOPES, &identity).await.unwrap();
    assert_eq!(fresh.groups, vec!["widgets"]);
    assert_eq!(fresh.user_id, JANE_ID.to_string());

    fake.revoke_all_tokens();
    let err = connector.refresh(&SCOPES, &identity).await.unwrap_err();
    assert!(matches!(err, ConnectorError::SessionEnded(_)), "{err:?}");
    identity.connector_data = None;
    let err = connector.refresh(&SCOPES, &identity).await.unwrap_err();
    assert!(
        matches!(&err, ConnectorError::SessionEnded(m) if m.contains("no token of GitLab")),
        "{err:?}"
    );
}

// ----- configuration --------------------------------------------------------------------------

#[test]
fn check_config_names_each_bad_gitlab_setting_by_path() {
    let errors = connector_errors("- type: gitlab\n  id: gl\n  config:\n    clientSecert: x\n");
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "connectors[0].config.clientSecert"
                && m.contains("did you mean `clientSecret`")),
        "{errors:?}"
    );
    let errors = connector_errors(
        "- type: gitlab\n  id: gl\n  config:\n    baseURL: gitlab.example.com\n    rootCAData: bm90IGEgY2VydA==\n",
    );
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "connectors[0].config.clientID",
            "connectors[0].config.clientSecret",
            "connectors[0].config.baseURL",
            "connectors[0].config.rootCAData",
        ],
        "{errors:?}"
    );
}

#[test]
fn the_gitlab_example_passes_check_config() {
    assert_example_passes_check_config(
        "config/examples/gitlab.yaml",
        &[
            ("GITLAB_CLIENT_ID", "0123456789abcdef"),
            ("GITLAB_CLIENT_SECRET", "gloas-0123456789abcdef"),
        ],
    );
}
