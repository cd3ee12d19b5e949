//! The generic `oauth` connector against a fake OAuth 2.0 provider with a userinfo endpoint
//! (tests/it/common/fake_oauth.rs: RFC 6749's authorization-code and refresh grants, and a
//! userinfo JSON in the keys Dex's `oauth` connector reads by default), over HTTPS trusted
//! through `rootCAs`.

use crate::common;

use std::time::Duration;

use common::connector_config::{
    assert_example_passes_check_config, connector_errors, indented_config,
};
use common::fake_oauth::{id_claims, Failure, FakeAccount, FakeOAuth, CLIENT_ID, CLIENT_SECRET};
use common::server::{AuthRequest, TestServer};
use common::upstream_login::{self, refresh};
use lanyard::oidc::subject::encode_subject;
use lanyard_connectors::oauth::{OAuthConfig, OAuthConnector};
use lanyard_connectors::{CallbackConnector, ConnectorError, Scopes};
use serde_json::json;

const JANE_ID: u64 = 77;

fn jane() -> FakeAccount {
    FakeAccount::new(JANE_ID, "jane", "Jane Doe").in_groups(&["acme", "ops"])
}

fn connector_yaml(fake: &FakeOAuth, extra: &str) -> String {
    let mut yaml = format!(
        "- type: oauth\n  id: corp\n  name: Corp SSO\n  config:\n    clientID: {CLIENT_ID}\n    clientSecret: {CLIENT_SECRET}\n    authorizationURL: {base}/oauth/authorize\n    tokenURL: {base}/oauth/token\n    userInfoURL: {base}/userinfo\n    scopes: [profile]\n    rootCAs: [{ca}]\n",
        base = fake.base,
        ca = fake.ca_file.display()
    );
    yaml.push_str(&indented_config(extra));
    yaml
}

async fn provider_with(account: FakeAccount, extra: &str) -> (FakeOAuth, TestServer) {
    FakeOAuth::with_lanyard(account, |fake| connector_yaml(fake, extra)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_maps_userinfo_with_dex_defaults_into_the_id_token() {
    let (fake, s) = provider_with(jane(), "").await;
    let tokens = fake.login(&s, &AuthRequest::public(), "corp").await;
    let claims = id_claims(&tokens);
    assert_eq!(claims["sub"], encode_subject(&JANE_ID.to_string(), "corp"));
    assert_eq!(claims["name"], "Jane Doe");
    assert_eq!(claims["preferred_username"], "jane");
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["groups"], json!(["acme", "ops"]));
    assert_eq!(
        fake.state().last_authorize.get("scope").map(String::as_str),
        Some("profile")
    );
    for token in fake.live_tokens() {
        s.assert_connector_data_sealed(&token).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_mapping_picks_the_userinfo_keys() {
    let (fake, s) = provider_with(
        jane(),
        "userIDKey: preferred_username\nclaimMapping:\n  userNameKey: email\n  groupsKey: none\n",
    )
    .await;
    let claims = id_claims(&fake.login(&s, &AuthRequest::public(), "corp").await);
    assert_eq!(claims["sub"], encode_subject("jane", "corp"));
    assert_eq!(claims["name"], "jane@example.com");
    assert!(
        claims.get("groups").is_none_or(|g| g == &json!([])),
        "{claims}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reads_userinfo_again_and_a_revoked_grant_ends_the_session() {
    let (fake, s) = provider_with(jane(), "").await;
    let tokens = fake.login(&s, &AuthRequest::public(), "corp").await;
    fake.set_groups("jane", &["acme", "sre"]);
    let (status, refreshed) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(id_claims(&refreshed)["groups"], json!(["acme", "sre"]));

    fake.revoke_all_tokens();
    let (status, body) = refresh(&s, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_give_a_clear_page_and_the_server_keeps_serving() {
    let (fake, s) = provider_with(jane(), "").await;
    for (failure, status, fragment) in [
        (Failure::Status(401), 502, "Sign-in unavailable"),
        (Failure::Status(403), 403, "(403 Forbidden)"),
        (Failure::RateLimited("120"), 502, "Sign-in unavailable"),
        (Failure::Status(500), 502, "Sign-in unavailable"),
        (Failure::Status(502), 502, "Sign-in unavailable"),
    ] {
        fake.fail_api(Some(failure.clone()));
        let (got, page) = fake.callback_page(&s, "corp").await;
        assert_eq!(got, status, "{failure:?}: {page}");
        assert!(page.contains(fragment), "{failure:?}: {page}");
    }
    fake.fail_api(None);
    let claims = id_claims(&fake.login(&s, &AuthRequest::public(), "corp").await);
    assert_eq!(claims["groups"], json!(["acme", "ops"]));
}

const CALLBACK: &str = "https://lanyard.example/callback";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_does_not_answer_in_time_is_unavailable() {
    let fake = FakeOAuth::start().await;
    fake.sign_in(jane());
    let config: OAuthConfig = serde_json::from_value(json!({
        "clientID": CLIENT_ID, "clientSecret": CLIENT_SECRET,
        "authorizationURL": format!("{}/oauth/authorize", fake.base),
        "tokenURL": format!("{}/oauth/token", fake.base),
        "userInfoURL": format!("{}/userinfo", fake.base),
        "rootCAs": [fake.ca_pem],
    }))
    .unwrap();
    let connector =
        OAuthConnector::with_timeout(&config, CALLBACK, Duration::from_secs(1)).unwrap();
    let scopes = Scopes {
        offline_access: true,
        groups: true,
    };
    let query =
        upstream_login::callback_query(&connector, &scopes, &fake.browser(), CALLBACK).await;
    fake.fail_api(Some(Failure::Hang(Duration::from_secs(5))));
    let err = connector
        .handle_callback(&scopes, CALLBACK, &[], &query)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectorError::Unavailable(m) if m.contains("the OAuth provider did not answer /userinfo in time")),
        "{err:?}"
    );
}

// ----- configuration --------------------------------------------------------------------------

#[test]
fn check_config_refuses_insecure_skip_verify_and_names_paths() {
    let errors = connector_errors(
        "- type: oauth\n  id: o\n  config:\n    clientID: a\n    authorizationURL: https://p.example/auth\n    tokenURL: https://p.example/token\n    userInfoURL: https://p.example/me\n    insecureSkipVerify: true\n",
    );
    let got: Vec<(&str, bool)> = errors
        .iter()
        .map(|(p, m)| (p.as_str(), m.contains("never skips TLS verification")))
        .collect();
    assert!(
        got.contains(&("connectors[0].config.insecureSkipVerify", true)),
        "{errors:?}"
    );
    // Dex has userIDKey at the top level, not under claimMapping.
    let errors = connector_errors(
        "- type: oauth\n  id: o\n  config:\n    claimMapping:\n      userIDKey: sub\n",
    );
    assert!(
        errors
            .iter()
            .any(|(p, _)| p == "connectors[0].config.claimMapping.userIDKey"),
        "{errors:?}"
    );
    let errors = connector_errors("- type: oauth\n  id: o\n  config:\n    clientID: a\n");
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "connectors[0].config.authorizationURL",
            "connectors[0].config.tokenURL",
            "connectors[0].config.userInfoURL",
        ]
    );
}

#[test]
fn the_oauth_example_passes_check_config() {
    assert_example_passes_check_config(
        "config/examples/oauth.yaml",
        &[
            ("OAUTH_CLIENT_ID", "lanyard"),
            ("OAUTH_CLIENT_SECRET", "0123456789abcdef"),
        ],
    );
}
