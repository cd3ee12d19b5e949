//! The GitHub connector against a fake GitHub Enterprise host (tests/it/common/fake_github.rs),
//! reached over HTTPS through `hostName` and trusted through `rootCA`: end to end through a
//! real lanyard server with a browser-like client, and directly where the connector's own
//! answer is the point.

use crate::common;

use std::time::{Duration, Instant};

use common::connector_config::{connector_errors, MINIMAL_CONFIG};
use common::fake_github::{FakeGithub, FakeUser, RateLimit, CLIENT_ID};
use common::server::{query_param, AuthRequest, Backend, TestServer};
use common::upstream_login::{self, refresh};
use lanyard::config::Config;
use lanyard::oidc::subject::encode_subject;
use lanyard_connectors::github::{GithubConfig, GithubConnector, GithubEndpoints};
use lanyard_connectors::{CallbackConnector, ConnectorError, Identity, RefreshConnector, Scopes};
use serde_json::{json, Value};

const JANE_ID: u64 = 4242;

/// A lanyard server whose connector `github` points at the fake; `extra` is more connector
/// config (YAML at the level of `clientID`).
async fn server_with(fake: &FakeGithub, extra: &str) -> TestServer {
    TestServer::start(
        Backend::Sqlite,
        &format!("connectors:\n{}", fake.connector_yaml("github", extra)),
    )
    .await
    .expect("SQLite server")
}

/// Where lanyard must send the browser: the fake's authorize page.
fn authorize_page(fake: &FakeGithub) -> String {
    format!("https://{}/login/oauth/authorize?", fake.host)
}

/// lanyard's /auth (naming the github connector) → /auth/github → GitHub's authorize page;
/// returns where GitHub sends the browser back (lanyard's /callback with code and state).
async fn to_github(
    s: &TestServer,
    fake: &FakeGithub,
    browser: &reqwest::Client,
    req: &AuthRequest,
) -> String {
    upstream_login::to_upstream(s, browser, req, "github", &authorize_page(fake))
        .await
        .0
}

/// The whole login through GitHub, then the code redeemed: the token response.
async fn login(s: &TestServer, fake: &FakeGithub, req: &AuthRequest) -> Value {
    upstream_login::login(s, &fake.browser(), req, "github", &authorize_page(fake)).await
}

/// The login through GitHub up to lanyard's answer to the callback: (status, page).
async fn callback_page(s: &TestServer, fake: &FakeGithub) -> (u16, String) {
    upstream_login::callback_page(s, &fake.browser(), "github", &authorize_page(fake)).await
}

fn claims_of(tokens: &Value) -> Value {
    use base64::Engine;
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let payload = id_token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("claims")
}

fn jane() -> FakeUser {
    FakeUser::new(JANE_ID, "jane").named("Jane Doe")
}

/// A fake GitHub where `user` (jane) is signed in, and a lanyard server using it with `extra`
/// connector config.
async fn jane_at_github(user: FakeUser, extra: &str) -> (FakeGithub, TestServer) {
    let fake = FakeGithub::start().await;
    fake.add_user(user);
    fake.sign_in("jane");
    let s = server_with(&fake, extra).await;
    (fake, s)
}

// ----- end to end -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_a_listed_team_gets_org_team_groups_and_a_dex_subject() {
    let (fake, s) = jane_at_github(
        jane()
            .in_team("acme", "platform")
            .in_team("acme", "web")
            .in_team("widgets", "platform")
            .with_emails(&[
                ("jane@home.example", true, false),
                ("jane@acme.example", true, true),
            ]),
        "orgs:\n- name: acme\n  teams: [platform, sre]\n",
    )
    .await;

    let claims = claims_of(&login(&s, &fake, &AuthRequest::public()).await);
    assert_eq!(claims["groups"], json!(["acme:platform"]));
    assert_eq!(claims["email"], "jane@acme.example");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Jane Doe");
    assert_eq!(claims["preferred_username"], "jane");
    assert_eq!(
        claims["sub"],
        encode_subject(&JANE_ID.to_string(), "github"),
        "Dex's subject: the numeric GitHub id and the connector id"
    );

    let asked = fake.state().last_authorize.clone();
    assert_eq!(asked["client_id"], CLIENT_ID);
    assert_eq!(asked["scope"], "user:email read:org");
    assert_eq!(asked["redirect_uri"], s.url("/callback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_as_id_and_a_missing_name_follow_dex() {
    let (fake, s) = jane_at_github(
        FakeUser::new(JANE_ID, "jane").in_org("acme"),
        "useLoginAsID: true\norgs:\n- name: acme\n",
    )
    .await;
    let claims = claims_of(&login(&s, &fake, &AuthRequest::public()).await);
    assert_eq!(claims["sub"], encode_subject("jane", "github"));
    assert_eq!(claims["name"], "jane", "no display name: the login");
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(
        claims["groups"],
        json!([]),
        "a member of an org without teams listed gets in, with no team groups"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_all_groups_lists_every_org_and_team() {
    let (fake, s) = jane_at_github(
        jane()
            .in_team("acme", "platform")
            .in_team("acme", "web")
            .in_org("widgets")
            .in_team("gizmos", "ops"),
        "loadAllGroups: true\n",
    )
    .await;
    let claims = claims_of(&login(&s, &fake, &AuthRequest::public()).await);
    assert_eq!(
        claims["groups"],
        json!([
            "acme",
            "acme:platform",
            "acme:web",
            "widgets",
            "gizmos",
            "gizmos:ops"
        ])
    );
    assert_eq!(fake.state().last_authorize["scope"], "user:email read:org");

    // Without the groups scope nothing about organizations is asked of GitHub.
    let mut req = AuthRequest::public();
    req.scope = "openid email profile".into();
    let claims = claims_of(&login(&s, &fake, &req).await);
    assert!(claims.get("groups").is_none(), "{claims}");
    assert_eq!(fake.state().last_authorize["scope"], "user:email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_name_field_picks_slugs_or_both() {
    let (fake, s) = jane_at_github(
        jane()
            .in_team("acme", "Site Reliability")
            .in_team("acme", "Web"),
        "teamNameField: slug\norgs:\n- name: acme\n  teams: [site-reliability]\n",
    )
    .await;
    let claims = claims_of(&login(&s, &fake, &AuthRequest::public()).await);
    assert_eq!(claims["groups"], json!(["acme:site-reliability"]));
    s.stop().await;

    let s = server_with(&fake, "teamNameField: both\nloadAllGroups: true\n").await;
    let claims = claims_of(&login(&s, &fake, &AuthRequest::public()).await);
    assert_eq!(
        claims["groups"],
        json!([
            "acme",
            "acme:Site Reliability",
            "acme:site-reliability",
            "acme:Web",
            "acme:web"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_in_150_teams_gets_them_all_over_two_pages() {
    let mut user = jane();
    for i in 0..150 {
        user = user.in_team("acme", &format!("team-{i:03}"));
    }
    let (fake, s) = jane_at_github(user, "orgs:\n- name: acme\n").await;
    let claims = claims_of(&login(&s, &fake, &AuthRequest::public()).await);
    let groups: Vec<&str> = claims["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(groups.len(), 150);
    assert_eq!(groups[0], "acme:team-000");
    assert_eq!(groups[149], "acme:team-149");
    let team_requests: Vec<String> = fake
        .api_log()
        .into_iter()
        .filter(|r| r.starts_with("/api/v3/user/teams"))
        .collect();
    assert_eq!(
        team_requests,
        vec![
            "/api/v3/user/teams?per_page=100",
            "/api/v3/user/teams?page=2&per_page=100"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_outside_the_listed_orgs_is_refused_with_the_reason() {
    let fake = FakeGithub::start().await;
    // In acme, but not in a listed team; not in widgets at all.
    fake.add_user(jane().in_team("acme", "web").in_team("other", "platform"));
    fake.sign_in("jane");
    let s = server_with(
        &fake,
        "orgs:\n- name: acme\n  teams: [platform, sre]\n- name: widgets\n",
    )
    .await;
    let (status, page) = callback_page(&s, &fake).await;
    assert_eq!(status, 403);
    assert!(
        page.contains("is not a member of team `platform` or `sre` of organization `acme`, or of organization `widgets`"),
        "{page}"
    );
    assert_eq!(s.count("grants").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_a_primary_email_is_refused_with_the_reason() {
    let (fake, s) = jane_at_github(
        jane()
            .in_org("acme")
            .with_emails(&[("jane@old.example", false, false)]),
        "orgs:\n- name: acme\n",
    )
    .await;
    let (status, page) = callback_page(&s, &fake).await;
    assert_eq!(status, 403);
    assert!(
        page.contains("has no verified primary email address"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_github_gives_a_sign_in_unavailable_page_at_once() {
    let (fake, s) = jane_at_github(jane().in_org("acme"), "orgs:\n- name: acme\n").await;
    let b = fake.browser();
    let callback = to_github(&s, &fake, &b, &AuthRequest::public()).await;
    fake.state().rate_limit = Some(RateLimit::Primary);
    let started = Instant::now();
    let resp = b.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for the limit to reset: {:?}",
        started.elapsed()
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("Sign-in unavailable"), "{page}");
    assert_eq!(
        fake.api_log(),
        vec!["/api/v3/user"],
        "one refused request, no retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_foreign_state_on_the_callback_is_refused() {
    let (fake, s) = jane_at_github(jane().in_org("acme"), "orgs:\n- name: acme\n").await;
    let b = fake.browser();
    let req = AuthRequest::public();
    let callback = to_github(&s, &fake, &b, &req).await;
    let state = query_param(&callback, "state").expect("state");
    let code = query_param(&callback, "code").expect("code");
    let (login_id, _) = state.split_once('.').expect("login.secret");

    let forged = [
        format!("code={code}&state={login_id}.forged-secret"),
        format!("code={code}&state=someone-else.{}", "x".repeat(43)),
        format!("code={code}"),
    ];
    for query in &forged {
        let resp = b
            .get(s.url(&format!("/callback?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{query}");
    }
    // The real state from a browser that did not start the login.
    let resp = fake.browser().get(&callback).send().await.unwrap();
    assert_eq!(
        resp.status(),
        403,
        "the login is bound to the browser that started it"
    );
    assert_eq!(
        fake.tokens_issued(),
        0,
        "no refused callback spent the code"
    );

    // The browser that started it still completes.
    let resp = b.get(&callback).send().await.unwrap();
    let redirect = s.approve_if_asked(&b, &req, &resp).await;
    assert!(query_param(&redirect, "code").is_some(), "{redirect}");
    assert_eq!(fake.tokens_issued(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declining_at_github_shows_why() {
    let (fake, s) = jane_at_github(jane().in_org("acme"), "orgs:\n- name: acme\n").await;
    fake.state().deny = true;
    let b = fake.browser();
    let callback = to_github(&s, &fake, &b, &AuthRequest::public()).await;
    assert!(callback.contains("error=access_denied"), "{callback}");
    let resp = b.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("GitHub did not authorize the sign-in"),
        "{page}"
    );
    assert!(page.contains("The user has denied your application access."));
    assert_eq!(fake.tokens_issued(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reads_the_teams_again() {
    let (fake, s) =
        jane_at_github(jane().in_team("acme", "platform"), "orgs:\n- name: acme\n").await;
    let tokens = login(&s, &fake, &AuthRequest::public()).await;
    assert_eq!(claims_of(&tokens)["groups"], json!(["acme:platform"]));

    fake.set_teams("jane", &[("acme", "sre"), ("acme", "oncall")]);
    let (status, refreshed) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    let claims = claims_of(&refreshed);
    assert_eq!(claims["groups"], json!(["acme:sre", "acme:oncall"]));
    assert_eq!(
        claims["sub"],
        encode_subject(&JANE_ID.to_string(), "github")
    );

    // Leaving the organization ends the session at the next refresh.
    fake.leave_org("jane", "acme");
    let (status, body) = refresh(&s, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
}

async fn the_github_token_is_stored_encrypted_and_old_plaintext_rows_still_refresh(
    backend: Backend,
) {
    let fake = FakeGithub::start().await;
    fake.add_user(jane().in_team("acme", "platform"));
    fake.sign_in("jane");
    let Some(s) = TestServer::start(
        backend,
        &format!(
            "connectors:\n{}",
            fake.connector_yaml("github", "orgs:\n- name: acme\n")
        ),
    )
    .await
    else {
        return;
    };
    let tokens = login(&s, &fake, &AuthRequest::public()).await;
    let github_token = fake.live_tokens().pop().expect("GitHub issued a token");
    s.assert_connector_data_sealed(&github_token).await;

    let (status, refreshed) = refresh(&s, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{refreshed}");
    s.assert_connector_data_sealed(&github_token).await;

    // A grant stored before connector data was encrypted still refreshes, and is sealed after.
    s.store_connector_data_in_plaintext("github").await;
    let (status, again) = refresh(&s, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(claims_of(&again)["groups"], json!(["acme:platform"]));
    s.assert_connector_data_sealed(&github_token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_token_is_stored_encrypted_on_sqlite() {
    the_github_token_is_stored_encrypted_and_old_plaintext_rows_still_refresh(Backend::Sqlite)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_github_token_is_stored_encrypted_on_postgres() {
    the_github_token_is_stored_encrypted_and_old_plaintext_rows_still_refresh(Backend::Postgres)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_github_token_ends_the_session() {
    let (fake, s) =
        jane_at_github(jane().in_team("acme", "platform"), "orgs:\n- name: acme\n").await;
    let tokens = login(&s, &fake, &AuthRequest::public()).await;
    let refresh_token = tokens["refresh_token"].as_str().unwrap();

    fake.revoke_tokens_of("jane");
    let (status, body) = refresh(&s, refresh_token).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    // The grant is revoked, not just this attempt.
    let (status, _) = refresh(&s, refresh_token).await;
    assert_eq!(status, 400);
}

// ----- the connector on its own -----------------------------------------------------------

const CALLBACK: &str = "https://lanyard.example/callback";

fn connector(fake: &FakeGithub, extra: Value) -> GithubConnector {
    let config: GithubConfig = serde_json::from_value(fake.connector_config(extra)).unwrap();
    GithubConnector::new(&config, CALLBACK).unwrap()
}

/// The fake's github.com-like behaviour: same server, but addresses need GitHub's verification.
fn github_com_connector(fake: &FakeGithub) -> GithubConnector {
    let config: GithubConfig = serde_json::from_value(fake.connector_config(json!({}))).unwrap();
    GithubConnector::with_endpoints(
        &config,
        CALLBACK,
        GithubEndpoints {
            enterprise: false,
            ..GithubEndpoints::enterprise(&fake.host)
        },
    )
    .unwrap()
}

const SCOPES: Scopes = Scopes {
    offline_access: true,
    groups: true,
};

/// Sends a "browser" to the connector's login URL at the fake; returns the callback's query.
async fn callback_query(fake: &FakeGithub, connector: &GithubConnector) -> String {
    upstream_login::callback_query(connector, &SCOPES, &fake.browser(), CALLBACK).await
}

async fn sign_in(
    fake: &FakeGithub,
    connector: &GithubConnector,
) -> Result<Identity, ConnectorError> {
    let query = callback_query(fake, connector).await;
    connector
        .handle_callback(&SCOPES, CALLBACK, &[], &query)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_errors_name_the_limit_and_when_it_resets() {
    let fake = FakeGithub::start().await;
    fake.add_user(jane());
    fake.sign_in("jane");
    let c = connector(&fake, json!({}));

    fake.state().rate_limit = Some(RateLimit::Primary);
    let Err(ConnectorError::Unavailable(reason)) = sign_in(&fake, &c).await else {
        panic!("expected Unavailable");
    };
    assert!(reason.contains("rate limit exceeded on /user"), "{reason}");
    assert!(reason.contains("all 5000 requests"), "{reason}");
    assert!(
        reason.contains("resets at 2030-03-17 17:46:40 UTC"),
        "{reason}"
    );

    fake.state().rate_limit = Some(RateLimit::Secondary);
    let Err(ConnectorError::Unavailable(reason)) = sign_in(&fake, &c).await else {
        panic!("expected Unavailable");
    };
    assert!(reason.contains("rate limit"), "{reason}");
    assert!(reason.contains("retry after 60 seconds"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_github_com_an_unverified_primary_address_does_not_count() {
    let fake = FakeGithub::start().await;
    fake.add_user(jane().with_emails(&[
        ("jane@unverified.example", false, true),
        ("jane@other.example", true, false),
    ]));
    fake.sign_in("jane");

    let Err(ConnectorError::AccessDenied(reason)) =
        sign_in(&fake, &github_com_connector(&fake)).await
    else {
        panic!("expected AccessDenied");
    };
    assert!(reason.contains("no verified primary email"), "{reason}");

    // GitHub Enterprise Server cannot verify addresses; there the primary one is used (Dex).
    let identity = sign_in(&fake, &connector(&fake, json!({}))).await.unwrap();
    assert_eq!(identity.email, "jane@unverified.example");

    // A preferred domain picks a verified address there first.
    let c = connector(&fake, json!({"preferredEmailDomain": "*.example"}));
    let identity = sign_in(&fake, &c).await.unwrap();
    assert_eq!(identity.email, "jane@unverified.example", "first match");
    let c = connector(&fake, json!({"preferredEmailDomain": "other.example"}));
    assert_eq!(
        sign_in(&fake, &c).await.unwrap().email,
        "jane@other.example"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_code_is_a_bad_callback_and_the_token_is_kept_for_refresh() {
    let fake = FakeGithub::start().await;
    fake.add_user(jane().in_team("acme", "platform"));
    fake.sign_in("jane");
    let c = connector(&fake, json!({"orgs": [{"name": "acme"}]}));
    let query = callback_query(&fake, &c).await;
    let identity = c
        .handle_callback(&SCOPES, CALLBACK, &[], &query)
        .await
        .unwrap();
    assert_eq!(identity.user_id, JANE_ID.to_string());
    assert!(
        !format!("{identity:?}").contains("gho_"),
        "the upstream token never shows in Debug"
    );

    let Err(ConnectorError::BadCallback(reason)) =
        c.handle_callback(&SCOPES, CALLBACK, &[], &query).await
    else {
        panic!("a code works once");
    };
    assert!(reason.contains("bad_verification_code"), "{reason}");

    // Refresh uses the kept token and keeps the user id.
    fake.set_teams("jane", &[("acme", "sre")]);
    let fresh = c.refresh(&SCOPES, &identity).await.unwrap();
    assert_eq!(fresh.groups, vec!["acme:sre"]);
    assert_eq!(fresh.user_id, identity.user_id);

    let no_token = Identity {
        connector_data: None,
        ..identity
    };
    assert!(matches!(
        c.refresh(&SCOPES, &no_token).await,
        Err(ConnectorError::SessionEnded(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_org_requires_membership_and_gives_bare_team_names() {
    let fake = FakeGithub::start().await;
    fake.add_user(jane().in_team("acme", "platform").in_team("other", "x"));
    fake.add_user(FakeUser::new(7, "bob").in_org("other"));
    let c = connector(&fake, json!({"org": "acme"}));
    fake.sign_in("jane");
    assert_eq!(sign_in(&fake, &c).await.unwrap().groups, vec!["platform"]);
    fake.sign_in("bob");
    let Err(ConnectorError::AccessDenied(reason)) = sign_in(&fake, &c).await else {
        panic!("bob is not in acme");
    };
    assert!(reason.contains("organization `acme`"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_must_be_the_configured_redirect_uri() {
    let fake = FakeGithub::start().await;
    let config: GithubConfig = serde_json::from_value(
        fake.connector_config(json!({"redirectURI": "https://elsewhere.example/callback"})),
    )
    .unwrap();
    let Err(ConnectorError::Config(reason)) = GithubConnector::new(&config, CALLBACK) else {
        panic!("a redirectURI that is not lanyard's callback is refused at start");
    };
    assert!(
        reason.contains("https://elsewhere.example/callback"),
        "{reason}"
    );
}

// ----- configuration --------------------------------------------------------------------------

fn has_error(errors: &[(String, String)], path: &str, fragment: &str) -> bool {
    errors
        .iter()
        .any(|(p, m)| p == path && m.contains(fragment))
}

#[test]
fn check_config_names_each_bad_github_setting_by_path() {
    let errors = connector_errors("- type: github\n  id: gh\n  config:\n    clientSecert: x\n");
    assert!(
        has_error(
            &errors,
            "connectors[0].config.clientSecert",
            "did you mean `clientSecret`"
        ),
        "{errors:?}"
    );

    let errors = connector_errors(
        "- type: github\n  id: gh\n  config:\n    orgs:\n    - teams: [a]\n    teamNameField: login\n    hostName: https://github.example.com\n    rootCA: /ca.pem\n",
    );
    for (path, fragment) in [
        (
            "connectors[0].config.clientID",
            "missing required key `clientID`",
        ),
        (
            "connectors[0].config.clientSecret",
            "missing required key `clientSecret`",
        ),
        (
            "connectors[0].config.orgs[0].name",
            "missing required key `name`",
        ),
        (
            "connectors[0].config.teamNameField",
            "use `name`, `slug` or `both`",
        ),
        ("connectors[0].config.hostName", "not a host name"),
    ] {
        assert!(has_error(&errors, path, fragment), "{path}: {errors:?}");
    }
    assert_eq!(errors.len(), 5, "{errors:?}");
}

#[test]
fn check_config_warns_about_the_legacy_org() {
    let yaml = format!(
        "{MINIMAL_CONFIG}connectors:\n- type: github\n  id: gh\n  config:\n    clientID: a\n    clientSecret: b\n    org: acme\n"
    );
    let config = Config::from_yaml_str(&yaml, &|_| None).unwrap();
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.path == "connectors[0].config.org" && w.message.contains("orgs")),
        "{:?}",
        config.warnings
    );
}

#[test]
fn the_github_example_passes_check_config() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["check-config", "--config", "config/examples/github.yaml"])
        .env("GITHUB_CLIENT_ID", "Iv1.0123456789abcdef")
        .env(
            "GITHUB_CLIENT_SECRET",
            "0123456789abcdef0123456789abcdef01234567",
        )
        .env(
            "LANYARD_ENCRYPTION_KEY",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), "OK", "no warnings either");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_root_ca_stops_the_server_at_start_naming_the_connector() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "{MINIMAL_CONFIG}connectors:\n- type: github\n  id: corp-github\n  config:\n    clientID: a\n    clientSecret: b\n    hostName: github.example.com\n    rootCA: {}\n",
        dir.path().join("missing.pem").display()
    );
    let config = Config::from_yaml_str(&yaml, &|_| None).unwrap();
    let mut options = lanyard::server::app::BuildOptions::new(false);
    options.data_dir = dir.path().to_path_buf();
    let Err(err) = lanyard::server::app::build(&config, options).await else {
        panic!("the server must not start");
    };
    let text = err.to_string();
    assert!(text.contains("corp-github"), "{text}");
    assert!(text.contains("rootCA: cannot read"), "{text}");
}
