//! The authorization code flow over real HTTP, on SQLite and on PostgreSQL.

use crate::common;

use common::server::*;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

on_both!(
    code_flow_with_pkce_issues_an_id_token_an_independent_verifier_accepts,
    confidential_client_authenticates_with_basic_or_post,
    code_works_once_and_its_replay_revokes_what_it_issued,
    concurrent_redemptions_of_one_code_issue_once,
    expired_code_is_rejected,
    refused_token_requests_write_nothing_and_leave_the_code_usable,
    bad_clients_and_redirects_get_a_page_never_a_redirect,
    errors_after_redirect_validation_go_back_with_state_and_iss,
    wrong_password_shows_the_form_again_and_issues_nothing,
    login_posts_need_csrf_same_origin_and_the_starting_browser,
    denying_approval_returns_access_denied,
    tokens_of_the_earlier_form_keep_working_and_new_ones_sort_by_issue_time,
);

async fn server(backend: Backend) -> Option<TestServer> {
    TestServer::start(backend, "").await
}

async fn json(resp: reqwest::Response) -> Value {
    resp.json().await.expect("json body")
}

/// Verifies an ID token with `jsonwebtoken` against the served JWKS: code independent of
/// the code that signed it.
async fn verify_id_token(s: &TestServer, token: &str, audience: &str) -> Value {
    let header = decode_header(token).expect("header");
    assert_eq!(header.alg, Algorithm::RS256);
    let kid = header.kid.expect("kid in header");
    let jwks = json(reqwest::get(s.url("/keys")).await.expect("jwks")).await;
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("signing key published");
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().expect("n"),
        jwk["e"].as_str().expect("e"),
    )
    .expect("rsa key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[s.issuer.as_str()]);
    decode::<Value>(token, &key, &validation)
        .expect("valid ID token")
        .claims
}

async fn code_flow_with_pkce_issues_an_id_token_an_independent_verifier_accepts(b: Backend) {
    let Some(s) = server(b).await else { return };
    let discovery = json(
        reqwest::get(s.url("/.well-known/openid-configuration"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(discovery["issuer"], s.issuer.as_str());
    assert_eq!(discovery["token_endpoint"], s.url("/token").as_str());
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        true
    );

    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    let resp = s.redeem(&req, &code).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body = json(resp).await;
    assert_eq!(body["token_type"], "Bearer");
    let access_token = body["access_token"].as_str().expect("access token");
    assert_eq!(
        access_token.matches('.').count(),
        0,
        "access tokens are opaque"
    );
    let claims = verify_id_token(
        &s,
        body["id_token"].as_str().expect("id_token"),
        PUBLIC_CLIENT,
    )
    .await;

    // Dex's encoding of (userID, "local"), so Dex-era RBAC bindings keep matching.
    assert_eq!(
        claims["sub"],
        "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs"
    );
    assert_eq!(claims["aud"], PUBLIC_CLIENT);
    assert_eq!(claims["azp"], PUBLIC_CLIENT);
    assert_eq!(claims["nonce"], "nonce-456");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["groups"], serde_json::json!(["devs", "ops"]));
    assert!(claims["auth_time"].as_i64().is_some());
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 24 * 3600, "Dex's default idTokens expiry");
    {
        use base64::Engine;
        use sha2::Digest;
        let digest = sha2::Sha256::digest(access_token.as_bytes());
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
        assert_eq!(claims["at_hash"], expected.as_str());
    }

    let info = reqwest::Client::new()
        .get(s.url("/userinfo"))
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(info.status(), 200);
    let info = json(info).await;
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["email"], "alice@example.com");
}

async fn confidential_client_authenticates_with_basic_or_post(b: Backend) {
    let Some(s) = server(b).await else { return };
    let req = AuthRequest::confidential();
    let code = s.code_for(&req).await;
    let resp = s.redeem(&req, &code).await;
    assert_eq!(resp.status(), 200, "client_secret_basic");
    let claims = verify_id_token(
        &s,
        json(resp).await["id_token"].as_str().unwrap(),
        WEB_CLIENT,
    )
    .await;
    assert_eq!(claims["aud"], WEB_CLIENT);

    let code = s.code_for(&req).await;
    let resp = reqwest::Client::new()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("client_id", WEB_CLIENT),
            ("client_secret", WEB_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "client_secret_post");
}

async fn code_works_once_and_its_replay_revokes_what_it_issued(b: Backend) {
    let Some(s) = server(b).await else { return };
    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    let first = json(s.redeem(&req, &code).await).await;
    let access = first["access_token"].as_str().unwrap().to_string();
    let userinfo = |t: String| {
        let url = s.url("/userinfo");
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(userinfo(access.clone()).await, 200);

    let second = s.redeem(&req, &code).await;
    assert_eq!(second.status(), 400);
    assert_eq!(json(second).await["error"], "invalid_grant");
    assert_eq!(
        userinfo(access).await,
        401,
        "the replay revoked the first redemption's token"
    );
}

async fn concurrent_redemptions_of_one_code_issue_once(b: Backend) {
    let Some(s) = server(b).await else { return };
    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    let attempts = futures_util::future::join_all((0..8).map(|_| s.redeem(&req, &code))).await;
    let ok = attempts.iter().filter(|r| r.status() == 200).count();
    assert_eq!(ok, 1, "exactly one redemption wins");
    assert_eq!(s.count("grants").await, 1);
}

async fn expired_code_is_rejected(b: Backend) {
    let Some(s) = server(b).await else { return };
    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    s.clock.advance(10 * 60 + 1);
    let resp = s.redeem(&req, &code).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(json(resp).await["error"], "invalid_grant");
    assert_eq!(s.count("grants").await, 0);
}

async fn token_error(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body = json(resp).await;
    assert!(
        body["error_description"].is_string(),
        "error_description present: {body}"
    );
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

async fn refused_token_requests_write_nothing_and_leave_the_code_usable(b: Backend) {
    let Some(s) = server(b).await else { return };
    let http = reqwest::Client::new();
    let req = AuthRequest::public();
    let code = s.code_for(&req).await;
    let verifier = req.code_verifier.clone().unwrap();
    let post = |form: Vec<(&'static str, String)>| http.post(s.url("/token")).form(&form).send();
    let base = |extra: Vec<(&'static str, String)>| {
        let mut f = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.clone()),
            ("redirect_uri", PUBLIC_REDIRECT.to_string()),
            ("client_id", PUBLIC_CLIENT.to_string()),
        ];
        f.extend(extra);
        f
    };

    // Wrong content type.
    let r = http
        .post(s.url("/token"))
        .json(&serde_json::json!({"grant_type": "authorization_code", "code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_request".into()));
    // Oversized body. The server answers 413 without reading it all and closes that
    // connection, so it gets a client of its own (a pooled connection would be dead).
    let r = reqwest::Client::new()
        .post(s.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=authorization_code&pad={}",
            "a".repeat(200 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Malformed: a parameter twice.
    let r = http
        .post(s.url("/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=authorization_code&code={code}&code={code}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_request".into()));
    // Missing and unknown grant types.
    let r = post(vec![("code", code.clone())]).await.unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_request".into()));
    let r = post(vec![
        ("grant_type", "password".into()),
        ("client_id", PUBLIC_CLIENT.into()),
    ])
    .await
    .unwrap();
    assert_eq!(token_error(r).await, (400, "unsupported_grant_type".into()));
    // Bad PKCE verifiers: wrong, missing, too short.
    let r = post(base(vec![("code_verifier", pkce_verifier())]))
        .await
        .unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_grant".into()));
    let r = post(base(vec![])).await.unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_grant".into()));
    let r = post(base(vec![("code_verifier", "short".into())]))
        .await
        .unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_grant".into()));
    // Wrong redirect_uri.
    let mut f = base(vec![("code_verifier", verifier.clone())]);
    f[2].1 = "http://127.0.0.1:9999/callback".into();
    let r = post(f).await.unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_grant".into()));
    // Another client presenting the code, with its correct secret.
    let r = http
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", PUBLIC_REDIRECT),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_grant".into()));
    // Wrong client secret and unknown client: 401 with a challenge.
    let r = http
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some("wrong"))
        .form(&[("grant_type", "authorization_code"), ("code", &code)])
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("www-authenticate").is_some());
    assert_eq!(token_error(r).await, (401, "invalid_client".into()));
    let r = post(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code.clone()),
        ("client_id", "nobody".into()),
    ])
    .await
    .unwrap();
    assert_eq!(token_error(r).await, (401, "invalid_client".into()));

    assert_eq!(
        s.count("grants").await,
        0,
        "no refused request created a grant"
    );
    assert_eq!(
        s.count("access_tokens").await,
        0,
        "no refused request issued a token"
    );
    let r = post(base(vec![("code_verifier", verifier)])).await.unwrap();
    assert_eq!(r.status(), 200, "the code survived every refused attempt");

    // A code_verifier for a request that sent no challenge is a downgrade attempt.
    let conf = AuthRequest::confidential();
    let code = s.code_for(&conf).await;
    let r = http
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", &pkce_verifier()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token_error(r).await, (400, "invalid_grant".into()));
}

async fn bad_clients_and_redirects_get_a_page_never_a_redirect(b: Backend) {
    let Some(s) = server(b).await else { return };
    let browser = TestServer::new_browser();
    let mut cases = Vec::new();
    let mut unknown = AuthRequest::public();
    unknown.client_id = "nobody".into();
    cases.push(unknown);
    for bad in [
        "http://127.0.0.1:8000/callback/",
        "http://127.0.0.1:8000/Callback",
        "http://localhost:8000/callback",
        "https://evil.example.com/callback",
        "http://127.0.0.1:8000/callback?x=1",
        "http://127.0.0.1:8000/callback#frag",
        "http://127.0.0.1:8000/callback/..;/",
        "http://127.0.0.1:8000/callback/extra",
        "http://evil.example.com@127.0.0.1:8000/callback",
        "http://127.0.0.1:8000@evil.example.com/callback",
        "https://127.0.0.1:8000/callback",
        "http://127.0.0.2:8000/callback",
        "javascript:alert(1)",
        "data:text/html,hello",
    ] {
        let mut r = AuthRequest::public();
        r.redirect_uri = bad.into();
        cases.push(r);
    }
    let mut no_redirect = AuthRequest::public();
    no_redirect.redirect_uri = String::new();
    cases.push(no_redirect);
    for req in cases {
        let resp = browser
            .get(s.url("/auth"))
            .query(&req.query())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            400,
            "client {} redirect {}",
            req.client_id,
            req.redirect_uri
        );
        assert!(resp.headers().get("location").is_none());
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("frame-ancestors 'none'"));
        let html = resp.text().await.unwrap();
        assert!(!html.contains("javascript:alert"), "input is not reflected");
    }
    assert_eq!(s.count("auth_requests").await, 0);
}

async fn errors_after_redirect_validation_go_back_with_state_and_iss(b: Backend) {
    let Some(s) = server(b).await else { return };
    let browser = TestServer::new_browser();
    let cases: Vec<(Mutation, &str)> = vec![
        (Box::new(|q| set(q, "scope", "email")), "invalid_scope"),
        (
            Box::new(|q| set(q, "scope", "openid bogus")),
            "invalid_scope",
        ),
        (
            Box::new(|q| set(q, "response_type", "bogus")),
            "unsupported_response_type",
        ),
        (
            Box::new(|q| set(q, "code_challenge_method", "plain")),
            "invalid_request",
        ),
        (
            Box::new(|q| q.retain(|(k, _)| !k.starts_with("code_challenge"))),
            "invalid_request",
        ),
        (Box::new(|q| set(q, "prompt", "none")), "login_required"),
    ];
    for (mutate, expected) in cases {
        let mut q = AuthRequest::public().query();
        mutate(&mut q);
        let resp = browser.get(s.url("/auth")).query(&q).send().await.unwrap();
        assert_eq!(resp.status(), 303);
        let to = location(&resp);
        assert!(to.starts_with(PUBLIC_REDIRECT), "{to}");
        assert_eq!(query_param(&to, "error").as_deref(), Some(expected), "{to}");
        assert_eq!(query_param(&to, "state").as_deref(), Some("state-123"));
        assert_eq!(query_param(&to, "iss").as_deref(), Some(s.issuer.as_str()));
    }
    assert_eq!(s.count("auth_requests").await, 0);
}

type Query = Vec<(String, String)>;
type Mutation = Box<dyn Fn(&mut Query)>;

fn set(q: &mut Query, key: &str, value: &str) {
    q.retain(|(k, _)| k != key);
    q.push((key.to_string(), value.to_string()));
}

async fn wrong_password_shows_the_form_again_and_issues_nothing(b: Backend) {
    let Some(s) = server(b).await else { return };
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let resp = s
        .submit_login(&browser, &login_url, &html, "alice@example.com", "wrong")
        .await;
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("Invalid"));
    let resp = s
        .submit_login(
            &browser,
            &login_url,
            &html,
            "nobody@example.com",
            "password",
        )
        .await;
    assert_eq!(resp.status(), 401);
    assert_eq!(s.count("auth_codes").await, 0);
    // The same login still succeeds afterwards.
    let resp = s
        .submit_login(&browser, &login_url, &html, "alice", ALICE_PASSWORD)
        .await;
    assert_eq!(resp.status(), 303);
}

async fn login_posts_need_csrf_same_origin_and_the_starting_browser(b: Backend) {
    let Some(s) = server(b).await else { return };
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let form = |csrf: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("login".to_string(), "alice@example.com".to_string()),
            ("password".to_string(), ALICE_PASSWORD.to_string()),
        ]
    };
    let csrf = hidden_field(&html, "csrf").unwrap();
    let r = browser
        .post(&login_url)
        .form(&form("forged"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "wrong CSRF token");
    let r = browser
        .post(&login_url)
        .form(&form(""))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "missing CSRF token");
    let r = browser
        .post(&login_url)
        .header("origin", "https://evil.example.com")
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-origin post");
    let r = browser
        .post(&login_url)
        .header("sec-fetch-site", "cross-site")
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "cross-site fetch metadata");
    let other = TestServer::new_browser();
    let r = other
        .post(&login_url)
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a browser that did not start the login");
    assert_eq!(s.count("auth_codes").await, 0);
    let r = browser
        .post(&login_url)
        .form(&form(&csrf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

async fn denying_approval_returns_access_denied(b: Backend) {
    let Some(s) = server(b).await else { return };
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let r = s
        .submit_login(
            &browser,
            &login_url,
            &html,
            "alice@example.com",
            ALICE_PASSWORD,
        )
        .await;
    let approval_url = format!(
        "{}{}",
        s.issuer,
        location(&r).trim_start_matches(&s.provider.settings.base_path())
    );
    let page = browser
        .get(&approval_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = hidden_field(&page, "csrf").unwrap();
    let r = browser
        .post(&approval_url)
        .form(&[("csrf", csrf.as_str()), ("approval", "deny")])
        .send()
        .await
        .unwrap();
    let to = location(&r);
    assert_eq!(query_param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&to, "state").as_deref(), Some("state-123"));
    assert_eq!(query_param(&to, "iss").as_deref(), Some(s.issuer.as_str()));
    assert_eq!(s.count("auth_codes").await, 0);
}

/// Access and refresh tokens issued before tokens began with their issue time (43 random
/// characters, stored under their digest alone) still work after an upgrade: /userinfo takes
/// the access token, a refresh rotates the refresh token into one of the new form, and the
/// new one's stored key begins with its issue time.
async fn tokens_of_the_earlier_form_keep_working_and_new_ones_sort_by_issue_time(b: Backend) {
    use lanyard::oidc::secrets::{random_token, secret_token_key, sha256_hex};
    let Some(s) = server(b).await else { return };
    let req = AuthRequest::confidential();
    let code = s.code_for(&req).await;
    let issued = json(s.redeem(&req, &code).await).await;
    let access = issued["access_token"].as_str().unwrap();
    let refresh = issued["refresh_token"].as_str().unwrap();
    assert_eq!((access.len(), refresh.len()), (51, 51));
    let key = secret_token_key(refresh);
    assert_eq!(
        s.texts("SELECT token_hash FROM refresh_tokens").await,
        [key.as_str()]
    );
    common::assert_begins_with_now(&key);

    // The same rows, as an earlier lanyard stored them.
    let (old_access, old_refresh) = (random_token(32), random_token(32));
    s.execute(
        &format!(
            "UPDATE access_tokens SET token_hash = '{}' WHERE token_hash = $1",
            sha256_hex(&old_access)
        ),
        &secret_token_key(access),
    )
    .await;
    s.execute(
        &format!(
            "UPDATE refresh_tokens SET token_hash = '{}' WHERE token_hash = $1",
            sha256_hex(&old_refresh)
        ),
        &key,
    )
    .await;
    let http = reqwest::Client::new();
    let userinfo = |t: String| {
        let url = s.url("/userinfo");
        let http = http.clone();
        async move { http.get(url).bearer_auth(t).send().await.unwrap().status() }
    };
    assert_eq!(userinfo(old_access.clone()).await, 200);
    assert_eq!(
        userinfo(access.to_string()).await,
        401,
        "the rows were moved"
    );

    let rotated = http
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &old_refresh),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), 200);
    let rotated = json(rotated).await;
    let successor = rotated["refresh_token"].as_str().unwrap();
    assert_eq!(successor.len(), 51);
    let successor_key = secret_token_key(successor);
    assert!(successor_key > key, "{successor_key} sorts after {key}");
    let stored = s
        .texts("SELECT successor_hash FROM refresh_tokens WHERE successor_hash IS NOT NULL")
        .await;
    assert_eq!(stored, [successor_key]);
    assert_eq!(
        userinfo(rotated["access_token"].as_str().unwrap().to_string()).await,
        200
    );

    // Revoking the earlier-form access token finds it too.
    let revoke = http
        .post(s.url("/token/revoke"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[("token", old_access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    assert_eq!(userinfo(old_access).await, 401);
}
