//! The browser flow through a lanyard server to an upstream callback connector and back, for
//! tests of connectors whose upstream is a fake HTTPS host: /auth → /auth/<connector> → the
//! upstream's authorize page → lanyard's /callback → (approval) → code → tokens.

use lanyard_connectors::{CallbackConnector, Scopes};
use reqwest::Client;
use serde_json::Value;

use super::server::{location, query_param, AuthRequest, TestServer, PUBLIC_CLIENT};

/// lanyard's /auth naming `connector_id` → /auth/<connector_id>: where lanyard sends the
/// browser (as sent, possibly relative).
pub async fn start(
    s: &TestServer,
    browser: &Client,
    req: &AuthRequest,
    connector_id: &str,
) -> String {
    let mut query = req.query();
    query.push(("connector_id".into(), connector_id.into()));
    let resp = browser
        .get(s.url("/auth"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let resp = browser
        .get(s.absolute(&location(&resp)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "lanyard sends the browser on");
    location(&resp)
}

/// Follows the flow to where the upstream sends the browser back (lanyard's /callback with
/// code and state); asserts that the browser was sent to a URL starting with `upstream`.
/// Returns that callback URL and the upstream authorize URL.
pub async fn to_upstream(
    s: &TestServer,
    browser: &Client,
    req: &AuthRequest,
    connector_id: &str,
    upstream: &str,
) -> (String, String) {
    let authorize = start(s, browser, req, connector_id).await;
    assert!(authorize.starts_with(upstream), "{authorize}");
    let resp = browser.get(&authorize).send().await.unwrap();
    // 302 or 303, as the fake upstream chooses.
    assert!(
        resp.status().is_redirection(),
        "the upstream sends the browser back: {}",
        resp.status()
    );
    let callback = location(&resp);
    assert!(callback.starts_with(&s.url("/callback?")), "{callback}");
    (callback, authorize)
}

/// The whole login, then the code redeemed: the token response.
pub async fn login(
    s: &TestServer,
    browser: &Client,
    req: &AuthRequest,
    connector_id: &str,
    upstream: &str,
) -> Value {
    let (callback, _) = to_upstream(s, browser, req, connector_id, upstream).await;
    let resp = browser.get(&callback).send().await.unwrap();
    let redirect = s.approve_if_asked(browser, req, &resp).await;
    let code = query_param(&redirect, "code").expect("code");
    let resp = s.redeem(req, &code).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The login up to lanyard's answer to the callback: (status, page).
pub async fn callback_page(
    s: &TestServer,
    browser: &Client,
    connector_id: &str,
    upstream: &str,
) -> (u16, String) {
    let (callback, _) =
        to_upstream(s, browser, &AuthRequest::public(), connector_id, upstream).await;
    let resp = browser.get(&callback).send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A refresh-token grant for the public client: (status, body).
pub async fn refresh(s: &TestServer, refresh_token: &str) -> (u16, Value) {
    let resp = Client::new()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// A browser sent straight to `connector`'s login URL (no lanyard server in between) for
/// `callback_url`: the query the upstream sends it back with (code and state, or an error).
pub async fn callback_query(
    connector: &dyn CallbackConnector,
    scopes: &Scopes,
    browser: &Client,
    callback_url: &str,
) -> String {
    let redirect = connector
        .login_url(scopes, callback_url, "the-state")
        .await
        .unwrap();
    let resp = browser.get(&redirect.url).send().await.unwrap();
    let back = location(&resp);
    assert!(back.starts_with(callback_url), "{back}");
    back.split_once('?').unwrap().1.to_string()
}
