//! Serving details: issuer paths, JWKS caching, bearer errors, headers, health.

mod common;

use common::server::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_live_under_the_issuer_path_like_dex() {
    let s = TestServer::start_with_path(Backend::Sqlite, "/dex", "")
        .await
        .unwrap();
    assert!(s.issuer.ends_with("/dex"));
    let d: serde_json::Value = reqwest::get(s.url("/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], s.issuer.as_str());
    assert_eq!(d["authorization_endpoint"], s.url("/auth").as_str());
    assert_eq!(d["jwks_uri"], s.url("/keys").as_str());
    let root = s.issuer.trim_end_matches("/dex").to_string();
    assert_eq!(
        reqwest::get(format!("{root}/keys")).await.unwrap().status(),
        404
    );
    // The full flow works under the path.
    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    assert_eq!(s.redeem(&req, &code).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_with_or_without_trailing_slash_and_the_host_root_lead_to_the_kubeconfig_page() {
    use base64::Engine;
    let ca = rcgen::generate_simple_self_signed(vec!["kubernetes".to_string()])
        .unwrap()
        .cert
        .pem();
    let kube = format!(
        "kubernetes:\n  clusters:\n  - name: prod\n    server: https://prod.example.com:6443\n    \
         certificateAuthorityData: {}\n    clientID: {PUBLIC_CLIENT}\n",
        base64::engine::general_purpose::STANDARD.encode(ca)
    );
    let s = TestServer::start_with_path(Backend::Sqlite, "/dex", &kube)
        .await
        .unwrap();
    let root = s.issuer.trim_end_matches("/dex").to_string();
    let browser = TestServer::new_browser();
    for url in [
        s.issuer.clone(),
        format!("{}/", s.issuer),
        format!("{root}/"),
    ] {
        let r = browser.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 303, "{url}");
        assert_eq!(location(&r), "/dex/kubeconfig", "{url}");
    }
    // Only the root itself: other paths outside the issuer's stay unknown.
    let r = browser
        .get(format!("{root}/kubeconfig"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_approval_screen_redirects_straight_after_login() {
    let s = TestServer::start(Backend::Sqlite, "oauth2:\n  skipApprovalScreen: true\n")
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    let req = AuthRequest::public();
    let (login_url, html) = s.open_login(&browser, &req).await;
    let r = s
        .submit_login(
            &browser,
            &login_url,
            &html,
            "alice@example.com",
            ALICE_PASSWORD,
        )
        .await;
    let to = location(&r);
    assert!(to.starts_with(PUBLIC_REDIRECT), "{to}");
    assert!(query_param(&to, "code").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_show_login_screen_lists_connectors_even_when_there_is_one() {
    let s = TestServer::start(Backend::Sqlite, "oauth2:\n  alwaysShowLoginScreen: true\n")
        .await
        .unwrap();
    let browser = TestServer::new_browser();
    let r = browser
        .get(s.url("/auth"))
        .query(&AuthRequest::public().query())
        .send()
        .await
        .unwrap();
    let to = location(&r);
    assert!(to.starts_with("/login?req="), "{to}");
    let html = browser
        .get(s.absolute(&to))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/auth/local?req="), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_is_cached_for_less_than_publish_ahead_and_supports_etags() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let r = reqwest::get(s.url("/keys")).await.unwrap();
    assert_eq!(r.status(), 200);
    let cache = r.headers()["cache-control"].to_str().unwrap().to_string();
    let max_age: u64 = cache
        .split(',')
        .find_map(|p| p.trim().strip_prefix("max-age="))
        .expect("max-age")
        .parse()
        .unwrap();
    assert!(
        max_age > 0 && max_age < 15 * 60 / 2,
        "max-age {max_age} well below publishAhead"
    );
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body: serde_json::Value = r.json().await.unwrap();
    for key in body["keys"].as_array().unwrap() {
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(key.get(private).is_none(), "JWKS leaks {private}");
        }
    }
    let r = reqwest::Client::new()
        .get(s.url("/keys"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_requires_a_valid_bearer_token() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let http = reqwest::Client::new();
    let r = http.get(s.url("/userinfo")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let r = http
        .get(s.url("/userinfo"))
        .bearer_auth("not-a-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("error=\"invalid_token\""));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_pages_carry_security_headers_and_request_ids() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let browser = TestServer::new_browser();
    let r = browser
        .get(s.url("/auth"))
        .query(&AuthRequest::public().query())
        .send()
        .await
        .unwrap();
    let page = browser
        .get(format!("{}{}", s.issuer, location(&r)))
        .send()
        .await
        .unwrap();
    let h = page.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert_eq!(h["cache-control"], "no-store");
    assert!(h.get("x-request-id").is_some());
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert_eq!(reqwest::get(s.url("/healthz")).await.unwrap().status(), 200);
    let css = reqwest::get(s.url("/static/style.css")).await.unwrap();
    assert_eq!(css.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_during_token_issuance_answers_503_not_200() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    // Make the database refuse writes: the redemption cannot be recorded, so nothing is issued.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&s.database_url)
            .await
            .unwrap();
        sqlx::query("CREATE TRIGGER refuse_grants BEFORE INSERT ON grants BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let r = s.redeem(&req, &code).await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body.get("access_token").is_none());
    assert_eq!(s.count("access_tokens").await, 0);
    assert_eq!(s.count("grants").await, 0);
    // The failed write rolled back: once storage recovers, the code still works, once.
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&s.database_url)
            .await
            .unwrap();
        sqlx::query("DROP TRIGGER refuse_grants")
            .execute(&mut c)
            .await
            .unwrap();
    }
    assert_eq!(s.redeem(&req, &code).await.status(), 200);
    assert_eq!(s.redeem(&req, &code).await.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_during_a_storage_failure_answers_503_not_200() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    let tokens: serde_json::Value = s.redeem(&req, &code).await.json().await.unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&s.database_url)
            .await
            .unwrap();
        sqlx::query("CREATE TRIGGER refuse_revocation BEFORE UPDATE ON grants BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let r = reqwest::Client::new()
        .post(s.url("/token/revoke"))
        .form(&[("token", refresh), ("client_id", PUBLIC_CLIENT)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "a revocation that did not happen is never reported as done"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_only_while_the_process_has_no_signing_key() {
    use lanyard::clock::ManualClock;
    use lanyard::server::app::{build, BuildOptions};
    use tower::ServiceExt;

    const T0: i64 = 1_800_000_000;
    let yaml = format!(
        "issuer: https://login.example.com\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:0\n\
         keys:\n  encryptionKey: {ENCRYPTION_KEY}\n"
    );
    let config = lanyard::config::Config::from_yaml_str(&yaml, &|_| None).unwrap();
    let clock = ManualClock::new(T0);
    let app = build(
        &config,
        BuildOptions {
            clock: std::sync::Arc::new(clock.clone()),
            ..BuildOptions::new(false)
        },
    )
    .await
    .unwrap();
    let ready = |router: axum::Router| async move {
        let r = router
            .oneshot(
                axum::http::Request::get("/healthz/ready")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
        (status, String::from_utf8_lossy(&body).trim().to_string())
    };
    let router = lanyard::server::telemetry_router(app.provider.clone(), app.metrics.clone());
    assert_eq!(ready(router.clone()).await, (200, "ok".to_string()));
    // Before its only key may sign, the process has nothing to sign with.
    clock.set(T0 - 60);
    let (status, body) = ready(router).await;
    assert_eq!(status, 503);
    assert!(body.contains("no signing key"), "{body}");
}
