//! Protocol behaviours Dex configs rely on, against a started lanyard over real HTTP: the
//! password grant, public clients without redirect URIs (kubelogin's loopback defaults and
//! the out-of-band page), Dex's device callback redirect URI, `web.allowedHeaders`,
//! `frontend.extra` and telemetry's `/healthz`.

use crate::common;

use common::server::*;
use serde_json::Value;

const PASSWORD_CONNECTOR: &str = "oauth2:\n  passwordConnector: local\n";

/// POST /token with the password grant as the confidential web client.
async fn password_grant(s: &TestServer, username: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
            ("scope", "openid email groups offline_access"),
            ("nonce", "n-0S6_WzA2Mj"),
        ])
        .send()
        .await
        .expect("token request")
}

async fn discovery(s: &TestServer) -> Value {
    reqwest::get(s.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn grant_types_supported(doc: &Value) -> Vec<String> {
    doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap().to_string())
        .collect()
}

/// Verifies an RS256 JWT's signature, issuer and audience against the server's JWKS.
async fn verify_against_jwks(s: &TestServer, jwt: &str, audience: &str) -> Value {
    let jwks: Value = reqwest::get(s.url("/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = jsonwebtoken::decode_header(jwt).unwrap().kid.expect("kid");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[s.issuer.as_str()]);
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .expect("the ID token verifies against JWKS")
        .claims
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant_issues_an_id_token_that_verifies_and_a_refresh_token_that_works() {
    let s = TestServer::start(Backend::Sqlite, PASSWORD_CONNECTOR)
        .await
        .unwrap();
    assert!(
        grant_types_supported(&discovery(&s).await).contains(&"password".to_string()),
        "discovery advertises the password grant"
    );
    let r = password_grant(&s, "alice@example.com", ALICE_PASSWORD).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    let claims = verify_against_jwks(&s, t["id_token"].as_str().unwrap(), WEB_CLIENT).await;
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["devs", "ops"]));
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert!(claims["at_hash"].is_string());
    assert_eq!(t["token_type"], "Bearer");

    let refresh = t["refresh_token"]
        .as_str()
        .expect("offline_access gets a refresh token");
    let r = reqwest::Client::new()
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refreshed: Value = r.json().await.unwrap();
    let again = verify_against_jwks(&s, refreshed["id_token"].as_str().unwrap(), WEB_CLIENT).await;
    assert_eq!(again["sub"], claims["sub"]);

    // A public client authenticates by its id alone, as in Dex.
    let r = reqwest::Client::new()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "password"),
            ("client_id", PUBLIC_CLIENT),
            ("username", "alice@example.com"),
            ("password", ALICE_PASSWORD),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert!(
        t.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant_refuses_a_wrong_password_and_a_bad_client() {
    let s = TestServer::start(Backend::Sqlite, PASSWORD_CONNECTOR)
        .await
        .unwrap();
    let r = password_grant(&s, "alice@example.com", "not-her-password").await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "access_denied");
    let r = password_grant(&s, "nobody@example.com", ALICE_PASSWORD).await;
    assert_eq!(r.status(), 401, "an unknown user reads as a wrong password");

    let r = reqwest::Client::new()
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some("wrong-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice@example.com"),
            ("password", ALICE_PASSWORD),
            ("scope", "openid"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    let r = reqwest::Client::new()
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice@example.com"),
            ("password", ALICE_PASSWORD),
            ("scope", "email"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "openid is required, as in Dex");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant_and_login_form_share_one_guessing_budget() {
    let s = TestServer::start(Backend::Sqlite, PASSWORD_CONNECTOR)
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    for _ in 0..3 {
        let r = s
            .submit_login(&browser, &login_url, &html, "alice@example.com", "wrong")
            .await;
        assert_eq!(r.status(), 401);
    }
    for _ in 0..2 {
        let r = password_grant(&s, "alice@example.com", "wrong").await;
        assert_eq!(r.status(), 401);
    }
    // The budget is spent: even the right password waits, at the grant and at the form.
    let r = password_grant(&s, "alice@example.com", ALICE_PASSWORD).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = s.submit_alice(&browser, &login_url, &html).await;
    assert_eq!(r.status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_grant_is_off_without_a_password_connector_or_when_not_listed() {
    for config in [
        "",
        "oauth2:\n  passwordConnector: local\n  grantTypes: [authorization_code, refresh_token, client_credentials]\n",
    ] {
        let s = TestServer::start(Backend::Sqlite, config).await.unwrap();
        assert!(
            !grant_types_supported(&discovery(&s).await).contains(&"password".to_string()),
            "{config:?}: discovery does not advertise the password grant"
        );
        let r = password_grant(&s, "alice@example.com", ALICE_PASSWORD).await;
        assert_eq!(r.status(), 400, "{config:?}");
        assert_eq!(
            r.json::<Value>().await.unwrap()["error"],
            "unsupported_grant_type"
        );
    }
}

/// Public and confidential clients without redirect URIs, after the base config's clients.
const NATIVE_CLIENTS: &str = "- id: kubelogin
  name: kubelogin
  public: true
- id: headless
  name: Headless
  secret: headless-secret-with-enough-entropy
";

fn native_request(redirect_uri: &str) -> AuthRequest {
    AuthRequest {
        client_id: "kubelogin".into(),
        redirect_uri: redirect_uri.into(),
        ..AuthRequest::public()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelogin_default_redirect_uris_reach_the_login_page_and_complete_the_flow() {
    let s = TestServer::start(Backend::Sqlite, NATIVE_CLIENTS)
        .await
        .unwrap();
    for redirect_uri in ["http://localhost:8000", "http://localhost:18000"] {
        let req = native_request(redirect_uri);
        let code = s.code_for(&req).await;
        let r = s.redeem(&req, &code).await;
        assert_eq!(r.status(), 200, "{redirect_uri}");
        let t: Value = r.json().await.unwrap();
        let claims = verify_against_jwks(&s, t["id_token"].as_str().unwrap(), "kubelogin").await;
        assert_eq!(claims["email"], "alice@example.com");
    }
    // Any loopback address, port and path, as in Dex.
    let req = native_request("http://127.0.0.1:38000/oauth/done");
    let code = s.code_for(&req).await;
    assert_eq!(s.redeem(&req, &code).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_out_of_band_redirect_uri_shows_the_code_on_a_page() {
    let s = TestServer::start(
        Backend::Sqlite,
        &format!("{NATIVE_CLIENTS}oauth2:\n  skipApprovalScreen: true\n"),
    )
    .await
    .unwrap();
    let req = native_request("urn:ietf:wg:oauth:2.0:oob");
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &req).await;
    let r = s.submit_alice(&browser, &login_url, &html).await;
    assert_eq!(r.status(), 200, "the code is shown, not redirected");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    let marker = "id=\"code\" name=\"code\" value=\"";
    let start = page.find(marker).expect("the code is on the page") + marker.len();
    let code = &page[start..start + page[start..].find('"').unwrap()];
    let r = s.redeem(&req, code).await;
    assert_eq!(r.status(), 200);

    // Tokens in the front channel have nowhere to go.
    let mut query = req.query();
    query.retain(|(k, _)| k != "response_type");
    query.push(("response_type".into(), "id_token".into()));
    let r = browser
        .get(s.url("/auth"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_with_redirect_uris_and_confidential_clients_still_need_an_exact_match() {
    let s = TestServer::start(Backend::Sqlite, NATIVE_CLIENTS)
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    for (client, redirect_uri) in [
        // kubectl registered http://127.0.0.1:8000/callback.
        (PUBLIC_CLIENT, "http://localhost:8000"),
        (PUBLIC_CLIENT, "http://127.0.0.1:8000/other"),
        (PUBLIC_CLIENT, "urn:ietf:wg:oauth:2.0:oob"),
        (WEB_CLIENT, "http://localhost:8000"),
        (WEB_CLIENT, "urn:ietf:wg:oauth:2.0:oob"),
        ("headless", "http://localhost:8000"),
        ("headless", "urn:ietf:wg:oauth:2.0:oob"),
        ("kubelogin", "https://localhost:8000"),
        ("kubelogin", "http://app.example.com:8000/cb"),
    ] {
        let req = AuthRequest {
            client_id: client.into(),
            redirect_uri: redirect_uri.into(),
            ..AuthRequest::public()
        };
        let r = s.authorize(&browser, &req).await;
        assert_eq!(r.status(), 400, "{client} must not use {redirect_uri}");
        assert!(r.headers().get("location").is_none());
    }
}

/// The device clients of Dex's example configs (`examples/config-dev.yaml`), under an issuer
/// at `/dex`.
const DEX_DEVICE_CLIENTS: &str = "- id: example-app
  redirectURIs:
  - 'http://127.0.0.1:5555/callback'
  - '/dex/device/callback'
  name: 'Example App'
  secret: ZXhhbXBsZS1hcHAtc2VjcmV0
- id: example-device-client
  redirectURIs:
    - /device/callback
  name: 'Static Client for Device Flow'
  public: true
";

/// POST /device/code as `client` (with its secret, if any); returns the answer.
async fn device_code(s: &TestServer, client: &str, secret: Option<&str>) -> Value {
    let mut post = reqwest::Client::new().post(s.url("/device/code"));
    let mut form = vec![("scope", "openid email offline_access")];
    match secret {
        Some(secret) => post = post.basic_auth(client, Some(secret)),
        None => form.push(("client_id", client)),
    }
    let r = post.form(&form).send().await.unwrap();
    assert_eq!(r.status(), 200, "{client} may use the device flow");
    r.json().await.unwrap()
}

/// Polls /token once for the device code.
async fn poll_device(
    s: &TestServer,
    client: &str,
    secret: Option<&str>,
    device_code: &str,
) -> reqwest::Response {
    let mut post = reqwest::Client::new().post(s.url("/token"));
    let mut form = vec![
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", device_code),
    ];
    match secret {
        Some(secret) => post = post.basic_auth(client, Some(secret)),
        None => form.push(("client_id", client)),
    }
    post.form(&form).send().await.unwrap()
}

/// From the answer that starts a device login (/device or /auth): signs alice in, approves,
/// and checks the "device signed in" page.
async fn sign_in_device(s: &TestServer, browser: &reqwest::Client, start: &reqwest::Response) {
    assert_eq!(start.status(), 303, "the device login starts");
    let r = s.sign_in_from(browser, start).await;
    assert_eq!(r.status(), 303);
    let approval = s.absolute(&location(&r));
    let r = s.approve(browser, &approval).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Device signed in"));
}

const EXAMPLE_APP_SECRET: &str = "ZXhhbXBsZS1hcHAtc2VjcmV0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dex_example_device_clients_load_and_complete_the_device_flow() {
    let s = TestServer::builder(Backend::Sqlite)
        .issuer_path("/dex")
        .config(DEX_DEVICE_CLIENTS)
        .start()
        .await
        .expect("Dex's issuer-relative device callback URIs are accepted");
    for (client, secret) in [
        ("example-app", Some(EXAMPLE_APP_SECRET)),
        ("example-device-client", None),
    ] {
        let auth = device_code(&s, client, secret).await;
        let browser = TestServer::new_browser();
        let page = browser.get(s.url("/device")).send().await.unwrap();
        let csrf = hidden_field(&page.text().await.unwrap(), "csrf").unwrap();
        let r = browser
            .post(s.url("/device"))
            .form(&[
                ("user_code", auth["user_code"].as_str().unwrap()),
                ("csrf", csrf.as_str()),
            ])
            .send()
            .await
            .unwrap();
        sign_in_device(&s, &browser, &r).await;
        let r = poll_device(&s, client, secret, auth["device_code"].as_str().unwrap()).await;
        assert_eq!(r.status(), 200, "{client}");
        let t: Value = r.json().await.unwrap();
        let claims = verify_against_jwks(&s, t["id_token"].as_str().unwrap(), client).await;
        assert_eq!(claims["email"], "alice@example.com");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dex_device_callback_redirect_uri_signs_the_device_in_through_auth() {
    let s = TestServer::builder(Backend::Sqlite)
        .issuer_path("/dex")
        .config(&format!("{DEX_DEVICE_CLIENTS}{NATIVE_CLIENTS}"))
        .start()
        .await
        .unwrap();
    // As Dex's device page sends the browser on: the user code travels as `state`; clients
    // registered the callback with or without the issuer's path, or (public) none at all.
    for (client, secret, redirect_uri) in [
        ("example-device-client", None, "/device/callback"),
        ("example-app", Some(EXAMPLE_APP_SECRET), "/device/callback"),
        (
            "example-app",
            Some(EXAMPLE_APP_SECRET),
            "/dex/device/callback",
        ),
        ("kubelogin", None, "/device/callback"),
    ] {
        let auth = device_code(&s, client, secret).await;
        let browser = TestServer::new_browser();
        let r = browser
            .get(s.url("/auth"))
            .query(&[
                ("client_id", client),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
                ("scope", "openid email offline_access"),
                ("state", auth["user_code"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap();
        sign_in_device(&s, &browser, &r).await;
        let r = poll_device(&s, client, secret, auth["device_code"].as_str().unwrap()).await;
        assert_eq!(r.status(), 200, "{client} via {redirect_uri}");
    }

    let auth = device_code(&s, "example-device-client", None).await;
    let user_code = auth["user_code"].as_str().unwrap();
    let browser = TestServer::new_browser();
    for (client, state) in [
        // Not a pending user code.
        ("example-device-client", "BCDF-GHJK"),
        // Someone else's device.
        ("example-app", user_code),
        // A client that registered other redirect URIs.
        (PUBLIC_CLIENT, user_code),
        (WEB_CLIENT, user_code),
    ] {
        let r = browser
            .get(s.url("/auth"))
            .query(&[
                ("client_id", client),
                ("redirect_uri", "/device/callback"),
                ("response_type", "code"),
                ("scope", "openid"),
                ("state", state),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{client} with {state}");
        assert!(r.headers().get("location").is_none());
    }
}

/// A CORS preflight for POST /token from `origin` asking for `headers`; returns the
/// `Access-Control-Allow-Headers` it got, lowercased.
async fn preflight_allowed_headers(s: &TestServer, origin: &str, headers: &str) -> String {
    let r = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, s.url("/token"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", headers)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "preflight answered {}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], origin);
    r.headers()
        .get("access-control-allow-headers")
        .map(|v| v.to_str().unwrap().to_ascii_lowercase())
        .unwrap_or_default()
}

fn lists(allowed: &str, header: &str) -> bool {
    allowed.split(',').any(|h| h.trim() == header)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_allow_the_configured_headers() {
    const ORIGIN: &str = "https://dash.example.com";
    let s = TestServer::builder(Backend::Sqlite).web("  allowedOrigins: ['https://dash.example.com']\n  allowedHeaders: ['X-Requested-With', 'X-Tenant']\n").start()
    .await
    .unwrap();
    let allowed = preflight_allowed_headers(&s, ORIGIN, "x-tenant, x-requested-with").await;
    assert!(lists(&allowed, "x-tenant"), "{allowed}");
    assert!(lists(&allowed, "x-requested-with"), "{allowed}");
    assert!(
        !lists(&allowed, "authorization"),
        "the list replaces Dex's default: {allowed}"
    );

    // Dex's default when none are configured: Authorization.
    let s = TestServer::builder(Backend::Sqlite)
        .web("  allowedOrigins: ['https://dash.example.com']\n")
        .start()
        .await
        .unwrap();
    let allowed = preflight_allowed_headers(&s, ORIGIN, "authorization").await;
    assert!(lists(&allowed, "authorization"), "{allowed}");
    assert!(!lists(&allowed, "x-tenant"), "{allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_extra_values_reach_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("error.html"),
        "{% extends \"base.html\" %}{% block content %}<p id=\"support\">{{ extra.support }}</p>\
         <p id=\"dex\">{{ extra(\"motd\") }}</p><p id=\"unset\">[{{ extra(\"unset\") }}]</p>\
         {% endblock %}",
    )
    .unwrap();
    let s = TestServer::start(
        Backend::Sqlite,
        &format!(
            "frontend:\n  dir: {}\n  extra:\n    support: 'Ask in #platform'\n    motd: '<b>maintenance</b>'\n",
            dir.path().display()
        ),
    )
    .await
    .unwrap();
    // /auth without a client renders the error page.
    let r = reqwest::get(s.url("/auth")).await.unwrap();
    assert_eq!(r.status(), 400);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("<p id=\"support\">Ask in #platform</p>"),
        "{html}"
    );
    assert!(
        html.contains("<p id=\"dex\">&lt;b&gt;maintenance&lt;&#x2f;b&gt;</p>"),
        "escaped: {html}"
    );
    assert!(html.contains("<p id=\"unset\">[]</p>"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_serves_dex_s_healthz_json() {
    let s = TestServer::builder(Backend::Sqlite)
        .telemetry()
        .start()
        .await
        .unwrap();
    let telemetry = s.telemetry.clone().unwrap();
    let r = reqwest::get(format!("{telemetry}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let checks: Value = r.json().await.unwrap();
    assert!(checks["storage"]["timestamp"].is_string(), "{checks}");
    assert!(checks["storage"].get("error").is_none(), "{checks}");
    let r = reqwest::get(format!("{telemetry}/healthz?type=short"))
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"storage": "PASS", "signingKey": "PASS"})
    );
    // The Kubernetes-style checks stay as they were.
    let r = reqwest::get(format!("{telemetry}/healthz/live"))
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");

    // Before its key may sign, the process has nothing to sign with: a failing check is 503.
    let now = lanyard::clock::Clock::now(&s.clock);
    s.clock.set(now - 7 * 24 * 3600);
    let r = reqwest::get(format!("{telemetry}/healthz?type=short"))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.unwrap()["signingKey"], "FAIL");
}
