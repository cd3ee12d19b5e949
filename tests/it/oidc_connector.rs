//! The generic OIDC connector against real upstreams: one lanyard federated to a second
//! lanyard over HTTP (login, groups, refresh, key rotation, an upstream that is down, refusals),
//! and against a fake upstream that answers with crafted ID tokens.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::federation::{
    alice_downstream_sub, bind, downstream_yaml, issuer, jwt_claims, jwt_header, unsigned,
    upstream_yaml, Federation, Forger, Setup, CONNECTOR, DOWNSTREAM_CLIENT, DOWNSTREAM_PATH,
    UPSTREAM_PATH,
};
use common::server::{
    location, query_param, AuthRequest, Backend, TestServer, WEB_CLIENT, WEB_SECRET,
};
use lanyard::clock::Clock;
use lanyard::storage::GrantFilter;
use lanyard_connectors::{CallbackConnector, ConnectorError, OidcConfig, OidcConnector, Scopes};
use serde_json::{json, Value};

on_both!(
    federated_login_carries_the_upstream_identity,
    the_upstream_refresh_token_is_stored_encrypted_and_old_plaintext_rows_still_refresh,
);

async fn refresh(server: &TestServer, refresh_token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .send()
        .await
        .expect("refresh")
}

async fn federated_login_carries_the_upstream_identity(backend: Backend) {
    let Some(f) = Federation::start(backend, Setup::default()).await else {
        return;
    };
    let browser = TestServer::new_browser();
    let req = Federation::request();
    let upstream_auth = f.upstream_auth_url(&browser, &req).await;
    // The downstream asks the upstream as its own client, with a nonce and PKCE (S256).
    assert_eq!(
        query_param(&upstream_auth, "client_id").as_deref(),
        Some(DOWNSTREAM_CLIENT)
    );
    assert_eq!(
        query_param(&upstream_auth, "redirect_uri"),
        Some(f.callback())
    );
    assert_eq!(
        query_param(&upstream_auth, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(query_param(&upstream_auth, "nonce").is_some_and(|n| n.len() >= 16));
    let scope = query_param(&upstream_auth, "scope").unwrap();
    for s in ["openid", "profile", "email", "groups", "offline_access"] {
        assert!(scope.split(' ').any(|x| x == s), "{s} in {scope}");
    }

    let tokens = f.tokens(&req).await;
    let claims = jwt_claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["iss"], f.downstream.issuer.as_str());
    assert_eq!(claims["sub"], alice_downstream_sub().as_str());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["groups"], json!(["devs", "ops"]));
    assert!(tokens["refresh_token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_asks_the_upstream_and_ends_when_it_refuses() {
    let f = Federation::start(Backend::Sqlite, Setup::default())
        .await
        .unwrap();
    let req = Federation::request();
    let tokens = f.tokens(&req).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    // The upstream refresh token rotates on the way: counted at the upstream.
    let upstream_refresh_rows = f.upstream.count("refresh_tokens").await;

    let resp = refresh(&f.downstream, rt).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let claims = jwt_claims(body["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], alice_downstream_sub().as_str());
    assert_eq!(claims["groups"], json!(["devs", "ops"]));
    assert!(
        f.upstream.count("refresh_tokens").await > upstream_refresh_rows,
        "the downstream refresh used the upstream refresh token"
    );

    // The upstream revokes the downstream's access: the next refresh ends the session.
    let revoked = f
        .upstream
        .provider
        .storage
        .revoke_access(&GrantFilter {
            client_id: Some(DOWNSTREAM_CLIENT.into()),
            now: f.upstream.clock.now(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(revoked.grants >= 1);
    let resp = refresh(&f.downstream, body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "invalid_grant", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_key_rotation_is_followed_at_refresh_and_login() {
    let f = Federation::start(Backend::Sqlite, Setup::default())
        .await
        .unwrap();
    let req = Federation::request();
    let tokens = f.tokens(&req).await;
    let old_kid = f.upstream.provider.keys.signing_kid().unwrap();

    // A rotation period later the upstream signs with a key the downstream has never seen.
    // (Both clocks move: the downstream refuses tokens dated ahead of its own time.)
    f.upstream.clock.advance(6 * 3600);
    f.downstream.clock.advance(6 * 3600);
    let created = f
        .upstream
        .provider
        .keys
        .rotate_if_due()
        .await
        .unwrap()
        .created;
    // The successor signs once it has been published for publishAhead.
    f.upstream.clock.advance(15 * 60);
    f.downstream.clock.advance(15 * 60);
    let new_kid = f.upstream.provider.keys.signing_kid().unwrap();
    assert_eq!(created.as_deref(), Some(new_kid.as_str()));
    assert_ne!(old_kid, new_kid);

    // Refresh: the upstream's new ID token names the new key; the downstream refetches.
    let resp = refresh(&f.downstream, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    // A new login verifies too.
    let tokens = f.tokens(&req).await;
    assert_eq!(
        jwt_claims(tokens["id_token"].as_str().unwrap())["sub"],
        alice_downstream_sub().as_str()
    );
    let fresh = f.upstream_id_token("openid").await;
    assert_eq!(jwt_header(&fresh)["kid"], new_kid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_is_down_fails_its_logins_quickly_and_nothing_else() {
    let (down_listener, down_port) = bind().await;
    // A port with nothing behind it: connections are refused.
    let (up_listener, up_port) = bind().await;
    drop(up_listener);
    let down_issuer = issuer(down_port, DOWNSTREAM_PATH);
    let up_issuer = issuer(up_port, UPSTREAM_PATH);
    let downstream = TestServer::builder(Backend::Sqlite)
        .listener(down_listener)
        .issuer_path(DOWNSTREAM_PATH)
        .config(&downstream_yaml(&up_issuer, &down_issuer, Setup::default()))
        .start()
        .await
        .expect("the server starts although its upstream is down");

    let browser = TestServer::new_browser();
    let mut query = AuthRequest::confidential().query();
    query.push(("connector_id".into(), CONNECTOR.into()));
    let resp = browser
        .get(downstream.url("/auth"))
        .query(&query)
        .send()
        .await
        .unwrap();
    let connector = downstream.absolute(&location(&resp));
    let started = Instant::now();
    let resp = browser.get(&connector).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    assert_eq!(resp.status(), 502);
    let page = resp.text().await.unwrap();
    assert!(page.contains("Sign-in unavailable"), "{page}");
    assert!(!page.contains(&up_issuer), "the cause is logged, not shown");

    // Everything else keeps working: discovery, and the password connector.
    let resp = reqwest::get(downstream.url("/.well-known/openid-configuration"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let req = AuthRequest::confidential();
    let mut query = req.query();
    query.push(("connector_id".into(), "local".into()));
    let resp = browser
        .get(downstream.url("/auth"))
        .query(&query)
        .send()
        .await
        .unwrap();
    let resp = downstream.sign_in_from(&browser, &resp).await;
    assert_eq!(
        resp.status(),
        303,
        "password login works beside the broken connector"
    );
    let next = common::federation::approve(&browser, &downstream.absolute(&location(&resp))).await;
    let code = query_param(&next, "code").expect("code");
    assert_eq!(downstream.redeem(&req, &code).await.status(), 200);

    // The upstream comes up: the next login discovers it and works.
    let up_listener = tokio::net::TcpListener::bind(("127.0.0.1", up_port))
        .await
        .expect("rebind the upstream's port");
    let upstream = TestServer::builder(Backend::Sqlite)
        .listener(up_listener)
        .issuer_path(UPSTREAM_PATH)
        .config(&upstream_yaml(&down_issuer))
        .start()
        .await
        .unwrap();
    let f = Federation {
        upstream,
        downstream,
    };
    let tokens = f.tokens(&Federation::request()).await;
    assert_eq!(
        jwt_claims(tokens["id_token"].as_str().unwrap())["sub"],
        alice_downstream_sub().as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_changed_on_the_way_is_refused_and_records_nothing() {
    let f = Federation::start(Backend::Sqlite, Setup::default())
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    let resp = f
        .through_upstream(&browser, &Federation::request(), |url| {
            let mut u = url::Url::parse(&url).unwrap();
            let pairs: Vec<(String, String)> = u
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "nonce" {
                        "attacker-nonce".into()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            u.query_pairs_mut().clear().extend_pairs(pairs);
            u.to_string()
        })
        .await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("Sign-in failed"));
    assert_eq!(f.downstream.count("grants").await, 0);
    assert_eq!(f.downstream.count("auth_codes").await, 0);
    assert_eq!(f.downstream.count("sessions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_groups_refuse_with_a_page_naming_them() {
    let f = Federation::start(
        Backend::Sqlite,
        Setup {
            connector: "    allowedGroups: [admins, sre]\n",
            ..Setup::default()
        },
    )
    .await
    .unwrap();
    let browser = TestServer::new_browser();
    let resp = f
        .through_upstream(&browser, &Federation::request(), |u| u)
        .await;
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.unwrap();
    assert!(page.contains("admins, sre"), "{page}");
    assert_eq!(f.downstream.count("auth_codes").await, 0);
    assert_eq!(f.downstream.count("sessions").await, 0);

    // One matching group lets alice in, with only the allowed groups in her token.
    let f = Federation::start(
        Backend::Sqlite,
        Setup {
            connector: "    allowedGroups: [ops, sre]\n",
            ..Setup::default()
        },
    )
    .await
    .unwrap();
    let tokens = f.tokens(&Federation::request()).await;
    assert_eq!(
        jwt_claims(tokens["id_token"].as_str().unwrap())["groups"],
        json!(["ops"])
    );
}

/// A fake upstream: discovery and keys of its own, and a token endpoint that answers with
/// whatever ID token the test put in `next`, recording the request's form.
struct FakeUpstream {
    issuer: String,
    forger: Forger,
    next: Arc<Mutex<String>>,
    last_form: Arc<Mutex<Vec<(String, String)>>>,
}

async fn fake_upstream() -> FakeUpstream {
    use axum::routing::{get, post};
    let (listener, port) = bind().await;
    let issuer = format!("http://127.0.0.1:{port}");
    let forger = Forger::new("fake-key");
    let next = Arc::new(Mutex::new(String::new()));
    let last_form = Arc::new(Mutex::new(Vec::new()));
    let discovery = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/keys"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let jwks = forger.jwks();
    let (token, form) = (next.clone(), last_form.clone());
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route("/keys", get(move || async move { axum::Json(jwks) }))
        .route(
            "/token",
            post(move |body: String| async move {
                *form.lock().unwrap() = url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
                let id_token = token.lock().unwrap().clone();
                axum::Json(json!({
                    "access_token": "upstream-access", "token_type": "Bearer",
                    "expires_in": 300, "id_token": id_token
                }))
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    FakeUpstream {
        issuer,
        forger,
        next,
        last_form,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_misaddressed_upstream_id_tokens_are_refused_at_the_callback() {
    let fake = fake_upstream().await;
    let now = 1_900_000_000i64;
    let config: OidcConfig = serde_json::from_value(json!({
        "issuer": fake.issuer, "clientID": "rp", "clientSecret": "rp-secret",
        "insecureEnableGroups": true,
    }))
    .unwrap();
    let connector = OidcConnector::new("fake", config, Arc::new(move || now)).unwrap();
    let scopes = Scopes::default();
    let callback = "http://127.0.0.1:9/callback";

    let stranger = Forger::new(&fake.forger.kid);
    type Forge<'a> = Box<dyn Fn(&FakeUpstream, &Value) -> String + 'a>;
    type Edit<'a> = Box<dyn Fn(&mut Value) + 'a>;
    let good = |nonce: &str| {
        json!({
            "iss": fake.issuer, "aud": "rp", "sub": "u-1", "name": "Uma",
            "email": "uma@example.com", "email_verified": true, "groups": ["g"],
            "iat": now, "exp": now + 300, "nonce": nonce,
        })
    };
    let cases: Vec<(&str, Edit, Forge, Option<&str>)> = vec![
        (
            "valid",
            Box::new(|_| {}),
            Box::new(|f, c| f.forger.sign(c)),
            None,
        ),
        (
            "nonce mismatch",
            Box::new(|c| c["nonce"] = json!("another")),
            Box::new(|f, c| f.forger.sign(c)),
            Some("nonce"),
        ),
        (
            "no nonce",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
            Box::new(|f, c| f.forger.sign(c)),
            Some("nonce"),
        ),
        (
            "wrong audience",
            Box::new(|c| c["aud"] = json!("someone-else")),
            Box::new(|f, c| f.forger.sign(c)),
            Some("audience"),
        ),
        (
            "an untrusted extra audience",
            Box::new(|c| c["aud"] = json!(["rp", "someone-else"])),
            Box::new(|f, c| f.forger.sign(c)),
            Some("audience"),
        ),
        (
            "wrong issuer",
            Box::new(|c| c["iss"] = json!("https://evil.example.com")),
            Box::new(|f, c| f.forger.sign(c)),
            Some("ssuer"),
        ),
        (
            "expired",
            Box::new(|c| c["exp"] = json!(now - 1)),
            Box::new(|f, c| f.forger.sign(c)),
            Some("expired"),
        ),
        (
            "signed by a stranger's key under the upstream's kid",
            Box::new(|_| {}),
            Box::new(move |_, c| stranger.sign(c)),
            Some("ignature"),
        ),
        (
            "unsigned (alg none)",
            Box::new(|_| {}),
            Box::new(|_, c| unsigned(c)),
            Some(""),
        ),
    ];
    for (name, edit, forge, refused) in cases {
        let redirect = connector.login_url(&scopes, callback, "st").await.unwrap();
        let nonce = query_param(&redirect.url, "nonce").unwrap();
        let challenge = query_param(&redirect.url, "code_challenge").unwrap();
        let mut claims = good(&nonce);
        edit(&mut claims);
        *fake.next.lock().unwrap() = forge(&fake, &claims);
        let result = connector
            .handle_callback(&scopes, callback, &redirect.pending, "code=c1&state=st")
            .await;
        match (refused, result) {
            (None, Ok(identity)) => {
                assert_eq!(identity.user_id, "u-1", "{name}");
                assert_eq!(identity.groups, ["g"], "{name}");
                // The code went back with the PKCE verifier of this login's challenge.
                let form = fake.last_form.lock().unwrap().clone();
                let verifier = form
                    .iter()
                    .find(|(k, _)| k == "code_verifier")
                    .map(|(_, v)| v.clone())
                    .expect("code_verifier sent");
                assert_eq!(common::server::pkce_challenge(&verifier), challenge);
            }
            (Some(hint), Err(ConnectorError::BadCallback(msg))) => {
                assert!(msg.contains(hint), "{name}: {msg}");
            }
            (expected, other) => panic!("{name}: expected refusal {expected:?}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_settings_are_checked_with_paths_and_a_mismatched_redirect_stops_the_start() {
    let yaml = r#"issuer: http://127.0.0.1:5556/dex
storage:
  type: memory
web:
  http: 127.0.0.1:5556
connectors:
- type: oidc
  id: corp
  config:
    issuer: not-a-url
    clientIDD: x
    pkceChallenge: S512
"#;
    let errors = lanyard::config::Config::check_yaml_str(yaml, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains(
            "connectors[0].config.clientIDD: unknown key `clientIDD`; did you mean `clientID`?"
        ),
        "{errors}"
    );

    let yaml = yaml.replace("clientIDD: x", "clientID: x");
    let errors = lanyard::config::Config::check_yaml_str(&yaml, &|_| None)
        .unwrap_err()
        .to_string();
    assert!(errors.contains("connectors[0].config.issuer"), "{errors}");
    assert!(
        errors.contains("connectors[0].config.pkceChallenge"),
        "{errors}"
    );

    let yaml = yaml
        .replace("not-a-url", "https://idp.example.com")
        .replace("S512", "S256")
        .replace(
            "clientID: x",
            "clientID: x\n    redirectURI: https://elsewhere.example.com/callback",
        );
    let config = lanyard::config::Config::check_yaml_str(&yaml, &|_| None).unwrap();
    let mut options = lanyard::server::app::BuildOptions::new(false);
    let dir = tempfile::tempdir().unwrap();
    options.data_dir = dir.path().to_path_buf();
    options.connector_failures = lanyard::server::failed_connector::ConnectorFailures::Stop;
    let err = lanyard::server::app::build(&config, options)
        .await
        .err()
        .expect("a redirectURI that is not lanyard's callback stops the start")
        .to_string();
    assert!(err.starts_with("connector corp: redirectURI"), "{err}");
    assert!(err.contains("http://127.0.0.1:5556/dex/callback"), "{err}");
}

#[test]
fn the_okta_example_passes_check_config() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanyard"))
        .args(["check-config", "--config", "config/examples/okta.yaml"])
        .env("POSTGRES_PASSWORD", "pg")
        .env("OKTA_CLIENT_ID", "0oa1example")
        .env("OKTA_CLIENT_SECRET", "okta-secret")
        .env("KUBERNETES_CLIENT_SECRET", "kube-secret")
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
    assert!(stdout.contains("OK"));
}

async fn the_upstream_refresh_token_is_stored_encrypted_and_old_plaintext_rows_still_refresh(
    backend: Backend,
) {
    let Some(f) = Federation::start(backend, Setup::default()).await else {
        return;
    };
    let tokens = f.tokens(&Federation::request()).await;
    // What the connector keeps, opened with the downstream's key-encryption key.
    let upstream_refresh = |s: &TestServer, stored: &str| -> String {
        let plain = s
            .provider
            .keys
            .open_connector_data(CONNECTOR, stored)
            .expect("connector data opens");
        let data: Value = serde_json::from_slice(&plain).expect("json");
        data["refresh_token"]
            .as_str()
            .expect("an upstream refresh token")
            .to_string()
    };
    let stored = f
        .downstream
        .texts("SELECT connector_data FROM grants")
        .await;
    let secret = upstream_refresh(&f.downstream, &stored[0]);
    f.downstream.assert_connector_data_sealed(&secret).await;

    let resp = refresh(&f.downstream, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let stored = f
        .downstream
        .texts("SELECT connector_data FROM grants")
        .await;
    let rotated = upstream_refresh(&f.downstream, &stored[0]);
    assert_ne!(rotated, secret, "the upstream rotated its refresh token");
    f.downstream.assert_connector_data_sealed(&rotated).await;

    // A grant stored before connector data was encrypted still refreshes at the upstream.
    f.downstream
        .store_connector_data_in_plaintext(CONNECTOR)
        .await;
    let resp = refresh(&f.downstream, body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let claims = jwt_claims(body["id_token"].as_str().unwrap());
    assert_eq!(claims["sub"], alice_downstream_sub().as_str());
    let stored = f
        .downstream
        .texts("SELECT connector_data FROM grants")
        .await;
    let again = upstream_refresh(&f.downstream, &stored[0]);
    f.downstream.assert_connector_data_sealed(&again).await;
}
