//! The OAuth 2.0 / OpenID Connect surface beyond the code flow, over real HTTP on SQLite and
//! PostgreSQL: refresh rotation, device grant, revocation, introspection, client credentials,
//! sessions and prompts, logout, form_post, cross-client trust.

use crate::common;

use common::server::*;
use serde_json::Value;

on_both!(
    refresh_rotates_and_a_retry_inside_the_reuse_interval_gets_the_same_successor,
    a_rotated_token_reused_later_revokes_the_whole_family,
    concurrent_refreshes_inside_the_interval_share_one_successor,
    every_login_is_its_own_session,
    refresh_asks_the_connector_again,
    idle_and_absolute_refresh_lifetimes_are_enforced,
    device_flow_from_code_to_tokens,
    device_flow_denied_and_expired,
    revocation_ends_the_family_and_only_for_its_client,
    introspection_answers_only_authenticated_owners_and_trusted_peers,
    client_credentials_only_for_clients_that_list_it,
    a_sign_in_session_spares_the_password_for_a_second_client,
    sessions_codes_and_logins_are_keyed_by_time_and_earlier_ones_still_work,
    prompts_max_age_and_id_token_hint,
    logout_ends_the_session_and_redirects_only_to_registered_uris,
    form_post_answers_with_a_self_submitting_form,
    cross_client_audience_needs_trusted_peers,
    a_refresh_may_narrow_the_scope_and_ask_for_the_original_again,
    a_narrowed_access_token_reads_only_its_scopes_at_userinfo_and_introspection,
);

async fn server(b: Backend) -> Option<TestServer> {
    TestServer::start(b, "").await
}

async fn json(r: reqwest::Response) -> Value {
    r.json().await.expect("json")
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Logs in and redeems: the token response.
async fn tokens(s: &TestServer, req: &AuthRequest) -> Value {
    let code = s.code_for(req).await;
    let r = s.redeem(req, &code).await;
    assert_eq!(r.status(), 200);
    json(r).await
}

async fn refresh(s: &TestServer, client: &str, token: &str) -> reqwest::Response {
    let mut post = http().post(s.url("/token"));
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    match client {
        WEB_CLIENT => post = post.basic_auth(WEB_CLIENT, Some(WEB_SECRET)),
        _ => form.push(("client_id", client)),
    }
    post.form(&form).send().await.expect("refresh")
}

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body = json(r).await;
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

async fn userinfo_status(s: &TestServer, access: &str) -> u16 {
    http()
        .get(s.url("/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn refresh_rotates_and_a_retry_inside_the_reuse_interval_gets_the_same_successor(b: Backend) {
    let Some(s) = server(b).await else { return };
    let first = tokens(&s, &AuthRequest::public()).await;
    let r0 = first["refresh_token"]
        .as_str()
        .expect("offline_access gives a refresh token");
    let first_claims = claims_of(first["id_token"].as_str().unwrap());

    s.clock.advance(60);
    let second = json(refresh(&s, PUBLIC_CLIENT, r0).await).await;
    let r1 = second["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    assert_ne!(r1, r0, "rotation hands out a new token");
    let claims = claims_of(
        second["id_token"]
            .as_str()
            .expect("a fresh id_token on refresh"),
    );
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    assert!(claims["iat"].as_i64() > first_claims["iat"].as_i64());

    // A retry of the old token inside the reuse interval (parallel kubectl) gets the same successor.
    s.clock.advance(2);
    let retry = json(refresh(&s, PUBLIC_CLIENT, r0).await).await;
    assert_eq!(retry["refresh_token"].as_str(), Some(r1.as_str()));
    assert!(retry["id_token"].is_string());
    // And the successor works.
    let third = refresh(&s, PUBLIC_CLIENT, &r1).await;
    assert_eq!(third.status(), 200);
    // Another client cannot use it.
    let stolen = refresh(
        &s,
        WEB_CLIENT,
        json(third).await["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(error_of(stolen).await, (400, "invalid_grant".into()));
}

async fn a_rotated_token_reused_later_revokes_the_whole_family(b: Backend) {
    let Some(s) = server(b).await else { return };
    let first = tokens(&s, &AuthRequest::public()).await;
    let r0 = first["refresh_token"].as_str().unwrap();
    let second = json(refresh(&s, PUBLIC_CLIENT, r0).await).await;
    let r1 = second["refresh_token"].as_str().unwrap();
    let access = second["access_token"].as_str().unwrap();
    assert_eq!(userinfo_status(&s, access).await, 200);

    s.clock.advance(6); // past the default 5 s reuse interval
    assert_eq!(
        error_of(refresh(&s, PUBLIC_CLIENT, r0).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        error_of(refresh(&s, PUBLIC_CLIENT, r1).await).await,
        (400, "invalid_grant".into()),
        "the family is dead"
    );
    assert_eq!(
        userinfo_status(&s, access).await,
        401,
        "its access tokens too"
    );
}

async fn concurrent_refreshes_inside_the_interval_share_one_successor(b: Backend) {
    let Some(s) = server(b).await else { return };
    let first = tokens(&s, &AuthRequest::public()).await;
    let r0 = first["refresh_token"].as_str().unwrap();
    let answers =
        futures_util::future::join_all((0..6).map(|_| refresh(&s, PUBLIC_CLIENT, r0))).await;
    let mut successors = Vec::new();
    for a in answers {
        assert_eq!(a.status(), 200);
        successors.push(json(a).await["refresh_token"].as_str().unwrap().to_string());
    }
    successors.dedup();
    assert_eq!(
        successors.len(),
        1,
        "every parallel refresh got the same successor"
    );
}

async fn every_login_is_its_own_session(b: Backend) {
    let Some(s) = server(b).await else { return };
    let laptop = tokens(&s, &AuthRequest::public()).await;
    let ci = tokens(&s, &AuthRequest::public()).await;
    assert_eq!(
        refresh(&s, PUBLIC_CLIENT, laptop["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(
        refresh(&s, PUBLIC_CLIENT, ci["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
}

async fn refresh_asks_the_connector_again(b: Backend) {
    let Some(s) = server(b).await else { return };
    use lanyard::storage::Password;
    let hasher = lanyard_connectors::PasswordHasher::new();
    let now = lanyard::clock::Clock::now(&s.clock);
    let mut bob = Password {
        email: "bob@example.com".into(),
        hash: hasher.hash("bob-password-1").await.unwrap(),
        username: "bob".into(),
        user_id: "bob-id".into(),
        groups: vec!["devs".into()],
        created_at: now,
        updated_at: now,
    };
    s.provider.storage.create_password(&bob).await.unwrap();
    let req = AuthRequest::public();
    let code = s
        .code_for_as(&req, "bob@example.com", "bob-password-1")
        .await;
    let first = json(s.redeem(&req, &code).await).await;
    assert_eq!(
        claims_of(first["id_token"].as_str().unwrap())["groups"],
        serde_json::json!(["devs"])
    );

    bob.groups = vec!["devs".into(), "oncall".into()];
    s.provider.storage.update_password(&bob).await.unwrap();
    let second =
        json(refresh(&s, PUBLIC_CLIENT, first["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!(
        claims_of(second["id_token"].as_str().unwrap())["groups"],
        serde_json::json!(["devs", "oncall"]),
        "changed groups show"
    );

    bob.hash = hasher.hash("bob-password-2").await.unwrap();
    s.provider.storage.update_password(&bob).await.unwrap();
    let r = refresh(&s, PUBLIC_CLIENT, second["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        error_of(r).await,
        (400, "invalid_grant".into()),
        "a changed password ends the session"
    );

    // A deleted user's session ends too.
    let code = s
        .code_for_as(&req, "bob@example.com", "bob-password-2")
        .await;
    let third = json(s.redeem(&req, &code).await).await;
    s.provider
        .storage
        .delete_password("bob@example.com")
        .await
        .unwrap();
    let r = refresh(&s, PUBLIC_CLIENT, third["refresh_token"].as_str().unwrap()).await;
    assert_eq!(error_of(r).await, (400, "invalid_grant".into()));
}

async fn idle_and_absolute_refresh_lifetimes_are_enforced(b: Backend) {
    let Some(s) = TestServer::start(
        b,
        "expiry:\n  refreshTokens:\n    validIfNotUsedFor: 1h\n    absoluteLifetime: 3h\n",
    )
    .await
    else {
        return;
    };
    let first = tokens(&s, &AuthRequest::public()).await;
    s.clock.advance(3601);
    let r = refresh(&s, PUBLIC_CLIENT, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        error_of(r).await,
        (400, "invalid_grant".into()),
        "idle too long"
    );

    let first = tokens(&s, &AuthRequest::public()).await;
    let mut token = first["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..5 {
        s.clock.advance(50 * 60);
        let r = refresh(&s, PUBLIC_CLIENT, &token).await;
        if r.status() != 200 {
            assert_eq!(error_of(r).await, (400, "invalid_grant".into()));
            return;
        }
        token = json(r).await["refresh_token"].as_str().unwrap().to_string();
    }
    panic!("the family outlived its absolute lifetime");
}

async fn device_authorize(s: &TestServer, scope: &str) -> Value {
    let r = http()
        .post(s.url("/device/code"))
        .form(&[("client_id", PUBLIC_CLIENT), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r).await
}

async fn poll(s: &TestServer, device_code: &str) -> reqwest::Response {
    http()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap()
}

/// Opens /device and returns the form's CSRF token.
async fn device_csrf(s: &TestServer, browser: &reqwest::Client) -> String {
    let page = browser.get(s.url("/device")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    hidden_field(&page.text().await.unwrap(), "csrf").expect("csrf on /device")
}

/// Types the user code at /device in a browser and signs in; returns the browser and the
/// approval page URL.
async fn enter_user_code(s: &TestServer, code: &str) -> (reqwest::Client, String) {
    let browser = TestServer::new_browser();
    let csrf = device_csrf(s, &browser).await;
    let r = browser
        .post(s.url("/device"))
        .form(&[("user_code", code), ("csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a valid code starts a login");
    let r = s.sign_in_from(&browser, &r).await;
    assert_eq!(r.status(), 303);
    (browser, s.absolute(&location(&r)))
}

async fn device_flow_from_code_to_tokens(b: Backend) {
    let Some(s) = server(b).await else { return };
    let discovery = json(
        http()
            .get(s.url("/.well-known/openid-configuration"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        discovery["device_authorization_endpoint"],
        s.url("/device/code").as_str()
    );

    let auth = device_authorize(&s, "openid email groups offline_access").await;
    let user_code = auth["user_code"].as_str().unwrap();
    assert_eq!(user_code.len(), 9);
    assert_eq!(&user_code[4..5], "-");
    assert!(user_code
        .replace('-', "")
        .bytes()
        .all(|c| b"BCDFGHJKLMNPQRSTVWXZ".contains(&c)));
    assert_eq!(auth["verification_uri"], s.url("/device").as_str());
    assert!(auth["verification_uri_complete"]
        .as_str()
        .unwrap()
        .contains("user_code="));
    assert_eq!(auth["interval"], 5);
    let device_code = auth["device_code"].as_str().unwrap();

    assert_eq!(
        error_of(poll(&s, device_code).await).await,
        (400, "authorization_pending".into())
    );
    assert_eq!(
        error_of(poll(&s, device_code).await).await,
        (400, "slow_down".into()),
        "polled at once"
    );
    s.clock.advance(11);

    // Case and dash do not matter.
    let typed = user_code.replace('-', "").to_lowercase();
    let (browser, approval) = enter_user_code(&s, &typed).await;
    let r = s.approve(&browser, &approval).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Device signed in"));

    let r = poll(&s, device_code).await;
    assert_eq!(r.status(), 200);
    let t = json(r).await;
    assert!(t["refresh_token"].is_string());
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["aud"], PUBLIC_CLIENT);
    assert_eq!(
        userinfo_status(&s, t["access_token"].as_str().unwrap()).await,
        200
    );
    s.clock.advance(11);
    assert_eq!(
        error_of(poll(&s, device_code).await).await,
        (400, "invalid_grant".into()),
        "redeemed once"
    );
}

async fn device_flow_denied_and_expired(b: Backend) {
    let Some(s) = server(b).await else { return };
    let auth = device_authorize(&s, "openid").await;
    let (browser, approval) = enter_user_code(&s, auth["user_code"].as_str().unwrap()).await;
    let html = s.page_html(&browser, &approval).await;
    let csrf = hidden_field(&html, "csrf").unwrap();
    browser
        .post(&approval)
        .form(&[("csrf", csrf.as_str()), ("approval", "deny")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(poll(&s, auth["device_code"].as_str().unwrap()).await).await,
        (400, "access_denied".into())
    );

    let auth = device_authorize(&s, "openid").await;
    s.clock.advance(5 * 60 + 1);
    assert_eq!(
        error_of(poll(&s, auth["device_code"].as_str().unwrap()).await).await,
        (400, "expired_token".into())
    );
    // An expired code cannot be entered either.
    let browser = TestServer::new_browser();
    let csrf = device_csrf(&s, &browser).await;
    let r = browser
        .post(s.url("/device"))
        .form(&[
            ("user_code", auth["user_code"].as_str().unwrap()),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The form needs its CSRF token.
    let r = browser
        .post(s.url("/device"))
        .form(&[("user_code", "BCDF-GHJK"), ("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Guessing codes is rate limited per address.
    let mut limited = false;
    for _ in 0..15 {
        let r = browser
            .post(s.url("/device"))
            .form(&[("user_code", "BCDF-GHJK"), ("csrf", &csrf)])
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
            limited = true;
            break;
        }
        assert_eq!(r.status(), 400);
    }
    assert!(limited, "wrong user codes hit the limit");
}

async fn revoke(s: &TestServer, client: (&str, Option<&str>), token: &str) -> reqwest::Response {
    let mut post = http().post(s.url("/token/revoke"));
    let mut form = vec![("token", token)];
    match client.1 {
        Some(secret) => post = post.basic_auth(client.0, Some(secret)),
        None => form.push(("client_id", client.0)),
    }
    post.form(&form).send().await.unwrap()
}

async fn revocation_ends_the_family_and_only_for_its_client(b: Backend) {
    let Some(s) = server(b).await else { return };
    let t = tokens(&s, &AuthRequest::public()).await;
    let refresh_token = t["refresh_token"].as_str().unwrap();
    let access = t["access_token"].as_str().unwrap();

    // Another client's attempt is answered 200 and changes nothing.
    assert_eq!(
        revoke(&s, (WEB_CLIENT, Some(WEB_SECRET)), refresh_token)
            .await
            .status(),
        200
    );
    assert_eq!(userinfo_status(&s, access).await, 200);
    // Unknown tokens get 200; bad client credentials do not.
    assert_eq!(
        revoke(&s, (PUBLIC_CLIENT, None), "no-such-token")
            .await
            .status(),
        200
    );
    assert_eq!(
        revoke(&s, (WEB_CLIENT, Some("wrong")), refresh_token)
            .await
            .status(),
        401
    );

    assert_eq!(
        revoke(&s, (PUBLIC_CLIENT, None), refresh_token)
            .await
            .status(),
        200
    );
    assert_eq!(
        error_of(refresh(&s, PUBLIC_CLIENT, refresh_token).await).await,
        (400, "invalid_grant".into())
    );
    assert_eq!(
        userinfo_status(&s, access).await,
        401,
        "the family's access tokens die with it"
    );

    // Revoking one access token leaves the rest of the grant alone.
    let t = tokens(&s, &AuthRequest::public()).await;
    assert_eq!(
        revoke(
            &s,
            (PUBLIC_CLIENT, None),
            t["access_token"].as_str().unwrap()
        )
        .await
        .status(),
        200
    );
    assert_eq!(
        userinfo_status(&s, t["access_token"].as_str().unwrap()).await,
        401
    );
    assert_eq!(
        refresh(&s, PUBLIC_CLIENT, t["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );

    // A login without offline_access has only its access token: revoking it leaves nothing
    // of the login behind (no sweep would find its grant later).
    let grants = || async { s.texts("SELECT id FROM grants ORDER BY id").await };
    let before = grants().await;
    let access_only = AuthRequest {
        scope: "openid email".into(),
        ..AuthRequest::public()
    };
    let t = tokens(&s, &access_only).await;
    assert!(t.get("refresh_token").is_none(), "{t}");
    assert_eq!(grants().await.len(), before.len() + 1);
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(
        revoke(&s, (PUBLIC_CLIENT, None), access).await.status(),
        200
    );
    assert_eq!(userinfo_status(&s, access).await, 401);
    assert_eq!(grants().await, before);
}

async fn introspect(
    s: &TestServer,
    client: (&str, Option<&str>),
    token: &str,
) -> reqwest::Response {
    let mut post = http().post(s.url("/token/introspect"));
    let mut form = vec![("token", token)];
    match client.1 {
        Some(secret) => post = post.basic_auth(client.0, Some(secret)),
        None => form.push(("client_id", client.0)),
    }
    post.form(&form).send().await.unwrap()
}

async fn introspection_answers_only_authenticated_owners_and_trusted_peers(b: Backend) {
    let Some(s) = server(b).await else { return };
    let t = tokens(&s, &AuthRequest::confidential()).await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(
        introspect(&s, (PUBLIC_CLIENT, None), access).await.status(),
        401,
        "public clients cannot authenticate"
    );
    let own = json(introspect(&s, (WEB_CLIENT, Some(WEB_SECRET)), access).await).await;
    assert_eq!(own["active"], true);
    assert_eq!(own["client_id"], WEB_CLIENT);
    assert_eq!(own["email"], "alice@example.com");
    assert!(own["exp"].as_i64().is_some());
    let other = json(introspect(&s, (PEER_CLIENT, Some(PEER_SECRET)), access).await).await;
    assert_eq!(
        other,
        serde_json::json!({"active": false}),
        "another client learns nothing"
    );
    let refresh_info = json(
        introspect(
            &s,
            (WEB_CLIENT, Some(WEB_SECRET)),
            t["refresh_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(refresh_info["active"], true);
    assert_eq!(refresh_info["token_type"], "refresh_token");
    assert_eq!(
        json(introspect(&s, (WEB_CLIENT, Some(WEB_SECRET)), "garbage").await).await,
        serde_json::json!({"active": false})
    );

    // A plain kubectl token is not peer-api's business...
    let t = tokens(&s, &AuthRequest::public()).await;
    let hidden = json(
        introspect(
            &s,
            (PEER_CLIENT, Some(PEER_SECRET)),
            t["access_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(hidden["active"], false);
    // ...but one issued for peer-api's audience is.
    let mut req = AuthRequest::public();
    req.scope = format!("openid email offline_access audience:server:client_id:{PEER_CLIENT}");
    let t = tokens(&s, &req).await;
    let seen = json(
        introspect(
            &s,
            (PEER_CLIENT, Some(PEER_SECRET)),
            t["access_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(seen["active"], true);
    revoke(
        &s,
        (PUBLIC_CLIENT, None),
        t["refresh_token"].as_str().unwrap(),
    )
    .await;
    let gone = json(
        introspect(
            &s,
            (PEER_CLIENT, Some(PEER_SECRET)),
            t["access_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(gone["active"], false);
}

async fn client_credentials_only_for_clients_that_list_it(b: Backend) {
    let Some(s) = server(b).await else { return };
    let r = http()
        .post(s.url("/token"))
        .basic_auth(ROBOT_CLIENT, Some(ROBOT_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = json(r).await;
    assert!(t["id_token"].is_null() && t["refresh_token"].is_null());
    let info = json(
        introspect(
            &s,
            (ROBOT_CLIENT, Some(ROBOT_SECRET)),
            t["access_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], ROBOT_CLIENT, "the subject is the client");

    let r = http()
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "unauthorized_client".into()));
    let r = http()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await, (400, "unauthorized_client".into()));
}

/// Runs /auth in `browser` and returns where it sent the browser.
async fn auth_step(
    s: &TestServer,
    browser: &reqwest::Client,
    query: &[(String, String)],
) -> String {
    let r = browser
        .get(s.url("/auth"))
        .query(query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    s.absolute(&location(&r))
}

fn with(mut q: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    q.retain(|(k, _)| k != key);
    q.push((key.into(), value.into()));
    q
}

async fn a_sign_in_session_spares_the_password_for_a_second_client(b: Backend) {
    let Some(s) = server(b).await else { return };
    let browser = TestServer::new_browser();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let r = s.submit_alice(&browser, &login_url, &html).await;
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("lanyard_session="))
        .expect("session cookie");
    assert!(
        session.contains("HttpOnly") && session.contains("SameSite=Lax"),
        "{session}"
    );

    // The second client's login goes straight to approval.
    let next = auth_step(&s, &browser, &AuthRequest::confidential().query()).await;
    assert!(next.contains("/approval?req="), "{next}");
    // A fresh browser has no session.
    let next = auth_step(
        &s,
        &TestServer::new_browser(),
        &AuthRequest::confidential().query(),
    )
    .await;
    assert!(next.contains("/auth/local?req="), "{next}");
}

/// Session cookies and authorization codes begin with their issue time and are stored under
/// that time and their digest, and logins' ids begin with the time, so new rows sort after
/// the ones before. A session cookie or a code of the earlier form (43 random characters,
/// stored under its digest alone) still works after an upgrade.
async fn sessions_codes_and_logins_are_keyed_by_time_and_earlier_ones_still_work(b: Backend) {
    use lanyard::oidc::secrets::{random_token, secret_token_key, sha256_hex};
    let Some(s) = server(b).await else { return };
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let (login_url, html) = s.open_login(&browser, &AuthRequest::public()).await;
    let login = s.texts("SELECT id FROM auth_requests").await;
    assert_eq!(login.len(), 1);
    common::assert_begins_with_now(&login[0]);
    assert!(login_url.contains(&login[0]), "{login_url}");
    let r = s.submit_alice(&browser, &login_url, &html).await;
    let set_cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("lanyard_session="))
        .expect("session cookie")
        .to_string();
    let cookie = set_cookie["lanyard_session=".len()..]
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(cookie.len(), 51);
    let key = secret_token_key(&cookie);
    common::assert_begins_with_now(&key);
    assert_eq!(s.texts("SELECT id FROM sessions").await, [key.as_str()]);

    // The session's row as an earlier lanyard stored it, and the browser's cookie to match.
    let old_cookie = random_token(32);
    s.execute(
        &format!(
            "UPDATE sessions SET id = '{}' WHERE id = $1",
            sha256_hex(&old_cookie)
        ),
        &key,
    )
    .await;
    jar.add_cookie_str(
        &set_cookie.replace(&cookie, &old_cookie),
        &reqwest::Url::parse(&s.issuer).unwrap(),
    );
    // The second client's login goes straight to approval: the earlier cookie signs in.
    let next = auth_step(&s, &browser, &AuthRequest::confidential().query()).await;
    assert!(next.contains("/approval?req="), "{next}");
    // The new form's cookie no longer names a session: the rows were moved.
    let other = TestServer::new_browser();
    let r = other
        .get(s.url("/auth"))
        .header("cookie", format!("lanyard_session={cookie}"))
        .query(&AuthRequest::confidential().query())
        .send()
        .await
        .unwrap();
    assert!(s.absolute(&location(&r)).contains("/auth/local?req="));

    // A code: stored under its time and digest; one of the earlier form still redeems.
    let req = AuthRequest::confidential();
    let code = s.code_for(&req).await;
    assert_eq!(code.len(), 51);
    let code_key = secret_token_key(&code);
    common::assert_begins_with_now(&code_key);
    let old_code = random_token(32);
    s.execute(
        &format!(
            "UPDATE auth_codes SET code_hash = '{}' WHERE code_hash = $1",
            sha256_hex(&old_code)
        ),
        &code_key,
    )
    .await;
    assert_eq!(
        s.redeem(&req, &code).await.status(),
        400,
        "the row was moved"
    );
    assert_eq!(s.redeem(&req, &old_code).await.status(), 200);
}

async fn prompts_max_age_and_id_token_hint(b: Backend) {
    let Some(s) = TestServer::start(b, "oauth2:\n  skipApprovalScreen: true\n").await else {
        return;
    };
    let browser = TestServer::new_browser();
    let req = AuthRequest::public();
    let redirect = s.login_and_approve(&browser, &req).await;
    let code = query_param(&redirect, "code").unwrap();
    let t = json(s.redeem(&req, &code).await).await;
    let id_token = t["id_token"].as_str().unwrap().to_string();

    // prompt=none with a session: a code at once.
    let to = auth_step(&s, &browser, &with(req.query(), "prompt", "none")).await;
    assert!(query_param(&to, "code").is_some(), "{to}");
    // prompt=none without one: login_required, no page.
    let to = auth_step(
        &s,
        &TestServer::new_browser(),
        &with(req.query(), "prompt", "none"),
    )
    .await;
    assert_eq!(query_param(&to, "error").as_deref(), Some("login_required"));
    // prompt=login shows the form despite the session.
    let to = auth_step(&s, &browser, &with(req.query(), "prompt", "login")).await;
    assert!(to.contains("/auth/local?req="), "{to}");
    // prompt=consent shows the approval page.
    let to = auth_step(&s, &browser, &with(req.query(), "prompt", "consent")).await;
    assert!(to.contains("/approval?req="), "{to}");
    // max_age older than the login forces a new one.
    s.clock.advance(120);
    let to = auth_step(&s, &browser, &with(req.query(), "max_age", "60")).await;
    assert!(to.contains("/auth/local?req="), "{to}");
    let to = auth_step(
        &s,
        &browser,
        &with(with(req.query(), "max_age", "60"), "prompt", "none"),
    )
    .await;
    assert_eq!(query_param(&to, "error").as_deref(), Some("login_required"));
    // A valid hint for the signed-in user works; a forged one is refused.
    let to = auth_step(
        &s,
        &browser,
        &with(
            with(req.query(), "id_token_hint", &id_token),
            "prompt",
            "none",
        ),
    )
    .await;
    assert!(query_param(&to, "code").is_some(), "{to}");
    let mut parts: Vec<&str> = id_token.split('.').collect();
    let forged_header = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    };
    parts[0] = &forged_header;
    let none_alg = format!("{}.{}.", parts[0], parts[1]);
    let to = auth_step(&s, &browser, &with(req.query(), "id_token_hint", &none_alg)).await;
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
    // An expired hint fails too.
    s.clock.advance(25 * 3600);
    let to = auth_step(&s, &browser, &with(req.query(), "id_token_hint", &id_token)).await;
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("invalid_request")
    );
}

async fn logout_ends_the_session_and_redirects_only_to_registered_uris(b: Backend) {
    let Some(s) = TestServer::start(b, "oauth2:\n  skipApprovalScreen: true\n").await else {
        return;
    };
    let browser = TestServer::new_browser();
    let req = AuthRequest::confidential();
    let redirect = s.login_and_approve(&browser, &req).await;
    let t = json(
        s.redeem(&req, &query_param(&redirect, "code").unwrap())
            .await,
    )
    .await;
    let id_token = t["id_token"].as_str().unwrap();

    // An unregistered post-logout URI is refused with a page.
    let r = browser
        .get(s.url("/logout"))
        .query(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://evil.example.com/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.headers().get("location").is_none());

    let r = browser
        .get(s.url("/logout"))
        .query(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", WEB_LOGGED_OUT),
            ("state", "bye"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{WEB_LOGGED_OUT}?state=bye"));
    let to = auth_step(&s, &browser, &with(req.query(), "prompt", "none")).await;
    assert_eq!(
        query_param(&to, "error").as_deref(),
        Some("login_required"),
        "the session is over"
    );

    // Without a hint the user confirms with a form first.
    let browser = TestServer::new_browser();
    s.login_and_approve(&browser, &req).await;
    let page = browser.get(s.url("/logout")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = hidden_field(&html, "csrf").unwrap();
    let r = browser
        .post(s.url("/logout"))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a forged confirmation is refused");
    let to = auth_step(&s, &browser, &with(req.query(), "prompt", "none")).await;
    assert!(query_param(&to, "code").is_some(), "still signed in");
    let r = browser
        .post(s.url("/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Signed out"));
    let to = auth_step(&s, &browser, &with(req.query(), "prompt", "none")).await;
    assert_eq!(query_param(&to, "error").as_deref(), Some("login_required"));
}

async fn form_post_answers_with_a_self_submitting_form(b: Backend) {
    let Some(s) = TestServer::start(b, "oauth2:\n  skipApprovalScreen: true\n").await else {
        return;
    };
    let browser = TestServer::new_browser();
    let req = AuthRequest::public();
    let q = with(req.query(), "response_mode", "form_post");
    let r = browser.get(s.url("/auth")).query(&q).send().await.unwrap();
    let r = s.sign_in_from(&browser, &r).await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = r.text().await.unwrap();
    // Templates escape `/` as `&#x2f;`, which the browser reads back as `/`.
    let html = html.replace("&#x2f;", "/");
    assert!(
        html.contains(&format!("action=\"{PUBLIC_REDIRECT}\"")),
        "{html}"
    );
    let code = hidden_field(&html, "code").expect("code field");
    assert_eq!(hidden_field(&html, "state").as_deref(), Some("state-123"));
    assert!(hidden_field(&html, "iss").is_some());
    assert!(html.contains("<noscript>"), "works without JavaScript");
    let nonce = csp
        .split("'nonce-")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("script nonce");
    assert!(html.contains(&format!("nonce=\"{nonce}\"")));
    assert!(csp.contains("frame-ancestors 'none'"));
    assert_eq!(s.redeem(&req, &code).await.status(), 200);

    // Errors use the same mode.
    let q = with(
        with(req.query(), "response_mode", "form_post"),
        "scope",
        "email",
    );
    let r = browser.get(s.url("/auth")).query(&q).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert_eq!(
        hidden_field(&html, "error").as_deref(),
        Some("invalid_scope")
    );
}

async fn cross_client_audience_needs_trusted_peers(b: Backend) {
    let Some(s) = server(b).await else { return };
    let mut req = AuthRequest::public();
    req.scope = format!("openid email audience:server:client_id:{PEER_CLIENT}");
    let t = tokens(&s, &req).await;
    let claims = claims_of(t["id_token"].as_str().unwrap());
    assert_eq!(
        claims["aud"],
        serde_json::json!([PUBLIC_CLIENT, PEER_CLIENT])
    );
    assert_eq!(claims["azp"], PUBLIC_CLIENT);

    // web does not list kubectl as a trusted peer.
    let browser = TestServer::new_browser();
    let q = with(
        req.query(),
        "scope",
        &format!("openid audience:server:client_id:{WEB_CLIENT}"),
    );
    let to = auth_step(&s, &browser, &q).await;
    assert_eq!(query_param(&to, "error").as_deref(), Some("invalid_scope"));
}

async fn refresh_with_scope(s: &TestServer, token: &str, scope: &str) -> reqwest::Response {
    http()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", PUBLIC_CLIENT),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("refresh")
}

/// A refresh by the confidential client that asks for `scope`: its token response.
async fn web_refresh_with_scope(s: &TestServer, token: &str, scope: &str) -> Value {
    let r = http()
        .post(s.url("/token"))
        .basic_auth(WEB_CLIENT, Some(WEB_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("scope", scope),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(r.status(), 200);
    json(r).await
}

async fn userinfo(s: &TestServer, access: &Value) -> Value {
    let r = http()
        .get(s.url("/userinfo"))
        .bearer_auth(access.as_str().expect("an access token"))
        .send()
        .await
        .expect("userinfo");
    assert_eq!(r.status(), 200);
    json(r).await
}

async fn a_refresh_may_narrow_the_scope_and_ask_for_the_original_again(b: Backend) {
    let Some(s) = server(b).await else { return };
    let first = tokens(&s, &AuthRequest::public()).await;
    assert!(claims_of(first["id_token"].as_str().unwrap())["groups"].is_array());
    let r0 = first["refresh_token"].as_str().unwrap();

    // Wider than granted: refused, and the token still works.
    let wider = refresh_with_scope(&s, r0, "openid email federated:id").await;
    assert_eq!(error_of(wider).await, (400, "invalid_scope".into()));

    // Narrower: the response and the ID token carry only what was asked for.
    let narrow = json(refresh_with_scope(&s, r0, "openid offline_access email").await).await;
    assert_eq!(narrow["scope"], "openid email offline_access", "{narrow}");
    let claims = claims_of(narrow["id_token"].as_str().unwrap());
    assert!(claims.get("groups").is_none(), "{claims:?}");
    assert!(claims.get("name").is_none(), "{claims:?}");
    assert_eq!(claims["email"], "alice@example.com");

    // The grant keeps its scopes: the next refresh may ask for all of them again.
    let again =
        json(refresh(&s, PUBLIC_CLIENT, narrow["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!(
        again["scope"], "openid email profile groups offline_access",
        "{again}"
    );
    let claims = claims_of(again["id_token"].as_str().unwrap());
    assert!(claims["groups"].is_array(), "{claims:?}");
}

async fn a_narrowed_access_token_reads_only_its_scopes_at_userinfo_and_introspection(b: Backend) {
    let Some(s) = server(b).await else { return };
    let first = tokens(&s, &AuthRequest::confidential()).await;
    let full = userinfo(&s, &first["access_token"]).await;
    assert!(full["groups"].is_array(), "{full}");
    let r0 = first["refresh_token"].as_str().unwrap();

    // Without groups and profile: the new access token reads only what is left.
    let narrow = web_refresh_with_scope(&s, r0, "openid offline_access email").await;
    let info = userinfo(&s, &narrow["access_token"]).await;
    assert!(info.get("groups").is_none(), "{info}");
    assert!(info.get("name").is_none(), "{info}");
    assert_eq!(info["email"], "alice@example.com");
    let seen = json(
        introspect(
            &s,
            (WEB_CLIENT, Some(WEB_SECRET)),
            narrow["access_token"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["scope"], "openid email offline_access", "{seen}");
    assert!(seen.get("groups").is_none(), "{seen}");

    // A retry of the same token inside the reuse interval, narrower still: no email either.
    let retry = web_refresh_with_scope(&s, r0, "openid").await;
    assert_eq!(retry["refresh_token"], narrow["refresh_token"]);
    let info = userinfo(&s, &retry["access_token"]).await;
    assert!(info.get("email").is_none(), "{info}");
    assert!(info.get("sub").is_some(), "{info}");

    // The chain asks for the full scope again: that token reads groups again, while the
    // narrowed one still does not.
    let again = web_refresh_with_scope(
        &s,
        narrow["refresh_token"].as_str().unwrap(),
        "openid email profile groups offline_access",
    )
    .await;
    let info = userinfo(&s, &again["access_token"]).await;
    assert!(info["groups"].is_array(), "{info}");
    assert_eq!(info["name"], full["name"]);
    let info = userinfo(&s, &narrow["access_token"]).await;
    assert!(info.get("groups").is_none(), "{info}");
}
