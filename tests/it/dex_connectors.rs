//! Connectors as Dex runs them: one that fails to open leaves the others serving (Dex's
//! continue-on-connector-failure default), an `oidc` connector without `clientID` only
//! verifies token-exchange subject tokens, and Dex's development connectors `mockCallback`
//! and `mockPassword` sign in their fixed user on a loopback issuer only.

use crate::common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::federation::{bind, jwt_claims, Forger};
use common::process::{terminate, wait_exit, wait_ready, Log, Running, BIN};
use common::server::{
    free_port, hidden_field, location, query_param, AuthRequest, Backend, TestServer,
};
use lanyard::clock::Clock;
use serde_json::{json, Value};

/// An `oidc` connector that passes `check-config` but cannot open: its redirectURI is not
/// lanyard's callback.
const BROKEN_OIDC: &str = r#"- type: oidc
  id: broken
  name: Broken SSO
  config:
    issuer: https://idp.example.com
    clientID: lanyard
    clientSecret: s3cret
    redirectURI: https://elsewhere.example.com/callback
"#;

/// `GET /auth` for `req` through `connector`; returns the login page URL it leads to.
async fn auth_via(server: &TestServer, req: &AuthRequest, connector: &str) -> String {
    let mut query = req.query();
    query.push(("connector_id".into(), connector.into()));
    let resp = server
        .browser
        .get(server.url("/auth"))
        .query(&query)
        .send()
        .await
        .expect("auth");
    assert_eq!(resp.status(), 303, "/auth for {connector}");
    server.site.absolute(&location(&resp))
}

fn metrics(server: &TestServer) -> String {
    server
        .provider
        .metrics
        .render(&server.provider.keys, server.clock.now())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_fails_to_open_is_marked_unavailable_answers_503_and_the_others_serve() {
    let server = TestServer::start(Backend::Sqlite, &format!("connectors:\n{BROKEN_OIDC}"))
        .await
        .unwrap();
    let req = AuthRequest::public();

    // The chooser lists both; the broken one says it is unavailable.
    let resp = server.site.authorize(&server.browser, &req).await;
    assert_eq!(resp.status(), 303);
    let chooser = server.site.absolute(&location(&resp));
    assert!(chooser.contains("/login?req="), "{chooser}");
    let html = server.site.page_html(&server.browser, &chooser).await;
    assert!(html.contains("Broken SSO is unavailable"), "{html}");
    assert!(html.contains("Sign in with Email"), "{html}");
    assert!(!html.contains("Email is unavailable"), "{html}");

    // Choosing it: a clear 503 page, not a crash.
    let req_id = query_param(&chooser, "req").unwrap();
    let page = server
        .browser
        .get(server.url(&format!("/auth/broken?req={req_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503);
    let text = page.text().await.unwrap();
    assert!(text.contains("Broken SSO is unavailable"), "{text}");
    assert!(
        !text.contains("elsewhere.example.com"),
        "no settings on the page: {text}"
    );

    // The password database still signs alice in.
    let login_url = auth_via(&server, &req, "local").await;
    let html = server.site.page_html(&server.browser, &login_url).await;
    let resp = server
        .site
        .submit_alice(&server.browser, &login_url, &html)
        .await;
    let redirect = server
        .site
        .approve_if_asked(&server.browser, &req, &resp)
        .await;
    let code = query_param(&redirect, "code").expect("code");
    assert_eq!(server.site.redeem(&req, &code).await.status(), 200);

    let m = metrics(&server);
    assert!(
        m.contains("lanyard_connector_up{connector=\"broken\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("lanyard_connector_up{connector=\"local\"} 1"),
        "{m}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connector_fails_to_open_lanyard_does_not_start() {
    let yaml = format!(
        "issuer: http://127.0.0.1:5556/dex\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\nconnectors:\n{BROKEN_OIDC}"
    );
    let config = lanyard::config::Config::from_yaml_str(&yaml, &|_| None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = lanyard::server::app::BuildOptions::new(false);
    options.data_dir = dir.path().to_path_buf();
    let err = lanyard::server::app::build(&config, options)
        .await
        .err()
        .expect("no connector opened")
        .to_string();
    assert!(
        err.contains("every connector failed to open (1/1)"),
        "{err}"
    );
    assert!(err.contains("connector broken: redirectURI"), "{err}");
}

fn serve_config(dir: &std::path::Path, port: u16, telemetry: u16) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: http://127.0.0.1:{port}\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:{port}\ntelemetry:\n  http: 127.0.0.1:{telemetry}\nlogger:\n  level: info\nenablePasswordDB: true\nconnectors:\n{BROKEN_OIDC}"
        ),
    )
    .unwrap();
    config
}

/// The real binary: by default it logs the failure, serves, and exports the connector as
/// down; with `DEX_CONTINUE_ON_CONNECTOR_FAILURE=false` the same config stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_logs_and_exports_a_failed_connector_and_stops_only_when_dex_would() {
    let dir = tempfile::tempdir().unwrap();
    let (port, telemetry) = (free_port(), free_port());
    let config = serve_config(dir.path(), port, telemetry);
    serves_without_it_unless_told_to_stop(
        &config,
        (port, telemetry),
        "broken",
        "connector broken: redirectURI",
    )
    .await;
}

/// `lanyard serve` on `config` (listening on `ports`: web, telemetry), whose connector `id`
/// fails to open: by default it logs the failure, serves, and exports the connector as down
/// beside the password database; with `DEX_CONTINUE_ON_CONNECTOR_FAILURE=false` it stops,
/// logging `reason`.
async fn serves_without_it_unless_told_to_stop(
    config: &std::path::Path,
    (port, telemetry): (u16, u16),
    id: &str,
    reason: &str,
) {
    let serve = |continue_on_failure: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(config.parent().unwrap())
            .env_remove("RUST_LOG")
            .env_remove("DEX_CONTINUE_ON_CONNECTOR_FAILURE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(value) = continue_on_failure {
            command.env("DEX_CONTINUE_ON_CONNECTOR_FAILURE", value);
        }
        Running(command.spawn().unwrap())
    };
    let mut child = serve(None);
    let log = Log::capture(&mut child);
    wait_ready(&format!("http://127.0.0.1:{port}/healthz")).await;
    log.wait_for("failed to open connector", 1).await;
    assert!(log.text().contains(reason), "{}", log.text());
    let m = reqwest::get(format!("http://127.0.0.1:{telemetry}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(&format!("lanyard_connector_up{{connector=\"{id}\"}} 0")),
        "{m}"
    );
    assert!(
        m.contains("lanyard_connector_up{connector=\"local\"} 1"),
        "{m}"
    );
    terminate(&mut child);

    let mut child = serve(Some("false"));
    let log = Log::capture(&mut child);
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("it stops by itself");
    assert!(!status.success());
    // The reader thread may still be draining the pipe.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(log.text().contains(reason), "{}", log.text());
}

/// A refresh token whose connector no longer opens gets an error, never a token. Two
/// replicas share the database: the first signs in through `dev`, the second has a `dev`
/// that fails to open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_whose_connector_failed_to_open_gets_an_error_never_a_token() {
    let mock = "connectors:\n- type: mockPassword\n  id: dev\n  name: Dev\n  config:\n    username: admin\n    password: dev-password\n";
    let Some(first) = TestServer::start(Backend::Postgres, mock).await else {
        return;
    };
    let req = AuthRequest::public();
    let login_url = auth_via(&first, &req, "dev").await;
    let html = first.site.page_html(&first.browser, &login_url).await;
    let resp = first
        .site
        .submit_login(&first.browser, &login_url, &html, "admin", "dev-password")
        .await;
    let redirect = first
        .site
        .approve_if_asked(&first.browser, &req, &resp)
        .await;
    let code = query_param(&redirect, "code").unwrap();
    let tokens: Value = first.site.redeem(&req, &code).await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().expect("refresh token");

    let broken = BROKEN_OIDC.replace("id: broken", "id: dev");
    let second = first
        .replica()
        .config(&format!("connectors:\n{broken}"))
        .start()
        .await
        .expect("a replica needs no database of its own");
    let resp = reqwest::Client::new()
        .post(second.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", req.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(
        status.is_client_error() || status.is_server_error(),
        "{status} {body}"
    );
    assert!(
        body.get("id_token").is_none() && body.get("access_token").is_none(),
        "{body}"
    );
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    // The same refresh token still works where the connector opens.
    let resp = reqwest::Client::new()
        .post(first.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", req.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    second.stop().await;
    first.stop().await;
}

/// An upstream issuer with discovery and keys only: enough to verify subject tokens.
async fn keys_only_upstream() -> (String, Forger) {
    let (listener, _) = bind().await;
    keys_only_upstream_on(listener)
}

fn keys_only_upstream_on(listener: tokio::net::TcpListener) -> (String, Forger) {
    use axum::routing::get;
    let port = listener.local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}");
    let forger = Forger::new("ci-key");
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "jwks_uri": format!("{issuer}/keys"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let jwks = forger.jwks();
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route("/keys", get(move || async move { axum::Json(jwks) }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (issuer, forger)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oidc_connector_without_client_id_signs_nobody_in_and_verifies_subject_tokens_for_lanyard(
) {
    let (upstream, forger) = keys_only_upstream().await;
    let server = TestServer::start(
        Backend::Sqlite,
        &format!(
            r#"- id: ci-deploy
  name: CI
  public: true
  grantTypes: [urn:ietf:params:oauth:grant-type:token-exchange]
  allowedConnectors: [ci]
connectors:
- type: oidc
  id: ci
  name: CI tokens
  config:
    issuer: {upstream}
    scopes: [openid]
    userNameKey: sub
"#
        ),
    )
    .await
    .unwrap();

    // No login button: the password database is the only way in, so /auth goes straight there.
    let req = AuthRequest::public();
    let resp = server.site.authorize(&server.browser, &req).await;
    assert_eq!(resp.status(), 303);
    let next = location(&resp);
    assert!(next.contains("/auth/local?req="), "{next}");
    let req_id = query_param(&server.site.absolute(&next), "req").unwrap();
    let page = server
        .browser
        .get(server.url(&format!("/auth/ci?req={req_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);

    let now = server.clock.now();
    let token_for = |aud: Value| {
        forger.sign(&json!({
            "iss": upstream, "sub": "project_path:group/app:ref:main", "aud": aud,
            "iat": now, "exp": now + 300,
        }))
    };
    let exchange = |subject: String| {
        let url = server.url("/token");
        async move {
            reqwest::Client::new()
                .post(url)
                .form(&[
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ),
                    ("client_id", "ci-deploy"),
                    ("connector_id", "ci"),
                    ("subject_token", subject.as_str()),
                    (
                        "subject_token_type",
                        "urn:ietf:params:oauth:token-type:id_token",
                    ),
                    (
                        "requested_token_type",
                        "urn:ietf:params:oauth:token-type:id_token",
                    ),
                    ("scope", "openid profile"),
                ])
                .send()
                .await
                .unwrap()
        }
    };

    // For lanyard (its issuer as the audience): exchanged.
    let resp = exchange(token_for(json!(server.issuer))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let claims = jwt_claims(body["access_token"].as_str().unwrap());
    assert_eq!(claims["aud"], "ci-deploy");
    assert_eq!(claims["name"], "project_path:group/app:ref:main");

    // Minted for anyone else (Dex would accept these): refused.
    for aud in [
        json!("some-other-app"),
        json!([server.issuer, "some-other-app"]),
    ] {
        let resp = exchange(token_for(aud.clone())).await;
        assert_eq!(resp.status(), 400, "{aud}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{aud}: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .contains("audience"),
            "{body}"
        );
    }
    server.stop().await;
}

/// An `oidc` upstream that cannot be reached at start shows as unavailable (on its button and
/// in the metric) but is still tried when chosen, and is back once a login reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_oidc_upstream_shows_unavailable_until_a_login_reaches_it() {
    let port = free_port();
    let server = TestServer::start(
        Backend::Sqlite,
        &format!(
            "connectors:\n- type: oidc\n  id: corp\n  name: Corp SSO\n  config:\n    issuer: http://127.0.0.1:{port}\n    clientID: lanyard\n    clientSecret: s3cret\n"
        ),
    )
    .await
    .unwrap();
    let down = "lanyard_connector_up{connector=\"corp\"} 0";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !metrics(&server).contains(down) {
        assert!(std::time::Instant::now() < deadline, "{}", metrics(&server));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let req = AuthRequest::public();
    let resp = server.site.authorize(&server.browser, &req).await;
    let chooser = server.site.absolute(&location(&resp));
    let html = server.site.page_html(&server.browser, &chooser).await;
    assert!(html.contains("Corp SSO is unavailable"), "{html}");

    // Still down: choosing it tries the upstream and says it is unavailable.
    let login = auth_via(&server, &req, "corp").await;
    assert_eq!(
        server.browser.get(&login).send().await.unwrap().status(),
        502
    );

    // The upstream comes up: the next login reaches it and the connector is up again.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (issuer, _forger) = keys_only_upstream_on(listener);
    let login = auth_via(&server, &req, "corp").await;
    let resp = server.browser.get(&login).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    assert!(
        location(&resp).starts_with(&format!("{issuer}/auth?")),
        "{}",
        location(&resp)
    );
    let m = metrics(&server);
    assert!(
        m.contains("lanyard_connector_up{connector=\"corp\"} 1"),
        "{m}"
    );
    let html = server.site.page_html(&server.browser, &chooser).await;
    assert!(!html.contains("is unavailable"), "{html}");
    server.stop().await;
}

#[test]
fn an_oidc_connector_without_client_id_takes_no_client_secret() {
    let yaml = "issuer: http://127.0.0.1:5556/dex\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\nconnectors:\n- type: oidc\n  id: ci\n  config:\n    issuer: https://gitlab.example.com\n    clientSecret: orphan\n";
    let errors = lanyard::config::Config::check_yaml_str(yaml, &|_| None).unwrap_err();
    assert!(
        errors.has("connectors[0].config.clientSecret", "without clientID"),
        "{errors}"
    );
    let yaml = yaml.replace("    clientSecret: orphan\n", "");
    assert!(lanyard::config::Config::check_yaml_str(&yaml, &|_| None).is_ok());
}

/// Dex's mock user.
const KILGORE_ID: &str = "0-385-28089-0";
const KILGORE_EMAIL: &str = "kilgore@kilgore.trout";

async fn id_token_claims(server: &TestServer, req: &AuthRequest, redirect: &str) -> Value {
    let code = query_param(redirect, "code").expect("code");
    let tokens: Value = server.site.redeem(req, &code).await.json().await.unwrap();
    jwt_claims(tokens["id_token"].as_str().expect("id token")).into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_callback_signs_in_kilgore_trout_as_dex_does() {
    // Dex's config.dev.yaml's connector, as written there.
    let server = TestServer::start(
        Backend::Sqlite,
        "connectors:\n- type: mockCallback\n  id: mock\n  name: Example\n",
    )
    .await
    .unwrap();
    let req = AuthRequest::public();
    let login = auth_via(&server, &req, "mock").await;
    let resp = server.browser.get(&login).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let callback = location(&resp);
    assert!(
        callback.starts_with(&format!("{}/callback?state=", server.issuer)),
        "{callback}"
    );
    let resp = server.browser.get(&callback).send().await.unwrap();
    let redirect = server
        .site
        .approve_if_asked(&server.browser, &req, &resp)
        .await;
    let claims = id_token_claims(&server, &req, &redirect).await;
    assert_eq!(claims["email"], KILGORE_EMAIL);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Kilgore Trout");
    assert_eq!(claims["groups"], json!(["authors"]));
    assert_eq!(
        claims["sub"],
        lanyard::oidc::subject::encode_subject(KILGORE_ID, "mock")
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_password_signs_in_kilgore_trout_with_its_configured_password_only() {
    let server = TestServer::start(
        Backend::Sqlite,
        "connectors:\n- type: mockPassword\n  id: mockpw\n  name: Mock password\n  config:\n    username: admin\n    password: dev-password\n",
    )
    .await
    .unwrap();
    let req = AuthRequest::public();
    let login_url = auth_via(&server, &req, "mockpw").await;
    let html = server.site.page_html(&server.browser, &login_url).await;
    assert!(hidden_field(&html, "csrf").is_some(), "{html}");
    let wrong = server
        .site
        .submit_login(&server.browser, &login_url, &html, "admin", "nope")
        .await;
    assert_ne!(wrong.status(), 303);
    let html = wrong.text().await.unwrap();
    let resp = server
        .site
        .submit_login(&server.browser, &login_url, &html, "admin", "dev-password")
        .await;
    let redirect = server
        .site
        .approve_if_asked(&server.browser, &req, &resp)
        .await;
    let claims = id_token_claims(&server, &req, &redirect).await;
    assert_eq!(claims["email"], KILGORE_EMAIL);
    assert_eq!(
        claims["sub"],
        lanyard::oidc::subject::encode_subject(KILGORE_ID, "mockpw")
    );
    server.stop().await;
}

#[test]
fn mock_connectors_are_refused_on_a_non_loopback_issuer_unless_explicitly_allowed() {
    let config = |issuer: &str, extra: &str| {
        format!(
            "issuer: {issuer}\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\nconnectors:\n- type: mockCallback\n  id: mock\n{extra}- type: mockPassword\n  id: pw\n  config:\n    username: admin\n    password: p\n"
        )
    };
    let parse = |yaml: String| lanyard::config::Config::from_yaml_str(&yaml, &|_| None);

    let loopback = parse(config("http://127.0.0.1:5556/dex", "")).unwrap();
    let warnings: Vec<String> = loopback.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("connectors[0].config") && w.contains("DEVELOPMENT CONNECTOR")),
        "{warnings:?}"
    );
    assert!(parse(config("http://localhost:5556/dex", "")).is_ok());

    let errors = parse(config("https://login.example.com", "")).unwrap_err();
    for i in 0..2 {
        assert!(
            errors.has(
                &format!("connectors[{i}].config.insecureAllowNonLoopbackIssuer"),
                "non-loopback issuer"
            ),
            "{errors}"
        );
    }

    let allowed = config(
        "https://login.example.com",
        "  config:\n    insecureAllowNonLoopbackIssuer: true\n",
    )
    .replace(
        "password: p\n",
        "password: p\n    insecureAllowNonLoopbackIssuer: true\n",
    );
    let config = parse(allowed).unwrap();
    assert_eq!(
        config
            .warnings
            .iter()
            .filter(|w| w.message.contains("DEVELOPMENT CONNECTOR"))
            .count(),
        2
    );
}

#[test]
fn mock_password_needs_a_username_and_a_password_as_in_dex() {
    let yaml = "issuer: http://127.0.0.1:5556/dex\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\nconnectors:\n- type: mockPassword\n  id: pw\n";
    let errors = lanyard::config::Config::check_yaml_str(yaml, &|_| None).unwrap_err();
    assert!(
        errors.has("connectors[0].config.username", "missing"),
        "{errors}"
    );
    assert!(
        errors.has("connectors[0].config.password", "missing"),
        "{errors}"
    );
}

/// Settings a connector's own rules refuse (an LDAP connector without its user search), which
/// Dex finds only when it opens the connector: `check-config` names them, and `serve` starts
/// without that connector, as Dex does, unless `DEX_CONTINUE_ON_CONNECTOR_FAILURE=false`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_with_settings_its_rules_refuse_fails_alone_as_in_dex() {
    let dir = tempfile::tempdir().unwrap();
    let (port, telemetry) = (free_port(), free_port());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: http://127.0.0.1:{port}\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:{port}\ntelemetry:\n  http: 127.0.0.1:{telemetry}\nlogger:\n  level: info\nenablePasswordDB: true\nconnectors:\n- type: ldap\n  id: corp\n  name: Corp\n  config:\n    host: ldap.example.com:636\n"
        ),
    )
    .unwrap();

    let check = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout).to_string()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "{report}");
    assert!(
        report.contains("connectors[0].config.userSearch"),
        "the refused key is named: {report}"
    );
    assert!(
        report.contains("starts without these connectors"),
        "{report}"
    );

    serves_without_it_unless_told_to_stop(
        &config,
        (port, telemetry),
        "corp",
        "connectors[0].config.userSearch",
    )
    .await;
}
