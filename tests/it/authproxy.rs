//! The `authproxy` connector through a real lanyard server: identity headers are believed
//! from a `trustedProxies` address and refused from any other peer, whatever forwarded-for
//! headers claim. A second loopback address (127.0.0.2) stands for "anyone else".

use crate::common;

use std::net::IpAddr;

use common::connector_config::connector_errors;
use common::fake_oauth::id_claims;
use common::server::{query_param, AuthRequest, Backend, TestServer};
use common::upstream_login;
use lanyard::oidc::subject::encode_subject;
use serde_json::json;

const CONNECTOR: &str = "- type: authproxy\n  id: proxy\n  name: Corporate sign-in\n  config:\n    trustedProxies: [127.0.0.1/32]\n    staticGroups: [staff]\n";

async fn server() -> TestServer {
    TestServer::start(Backend::Sqlite, &format!("connectors:\n{CONNECTOR}"))
        .await
        .expect("SQLite server")
}

/// A browser whose connections come from `source`.
fn browser_from(source: &str) -> reqwest::Client {
    let source: IpAddr = source.parse().unwrap();
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(source)
        .build()
        .unwrap()
}

/// /auth naming the proxy connector → /auth/proxy → lanyard's /callback/proxy; returns that URL.
async fn to_callback(s: &TestServer, browser: &reqwest::Client, req: &AuthRequest) -> String {
    let callback = s.absolute(&upstream_login::start(s, browser, req, "proxy").await);
    assert!(
        callback.starts_with(&s.url("/callback/proxy?state=")),
        "{callback}"
    );
    callback
}

/// The proxy's request to the callback, with the identity headers it sets.
async fn callback_with_headers(
    browser: &reqwest::Client,
    callback: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = browser
        .get(callback)
        .header("X-Remote-User", "jane")
        .header("X-Remote-User-Email", "jane@example.com")
        .header("X-Remote-Group", "devs, ops");
    for (k, v) in extra {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_the_trusted_proxy_sign_in_with_their_groups() {
    let s = server().await;
    let req = AuthRequest::public();
    let b = browser_from("127.0.0.1");
    let callback = to_callback(&s, &b, &req).await;
    let resp = callback_with_headers(&b, &callback, &[]).await;
    let redirect = s.approve_if_asked(&b, &req, &resp).await;
    let code = query_param(&redirect, "code").expect("code");
    let resp = s.redeem(&req, &code).await;
    assert_eq!(resp.status(), 200);
    let claims = id_claims(&resp.json().await.unwrap());
    assert_eq!(claims["sub"], encode_subject("jane", "proxy"));
    assert_eq!(claims["email"], "jane@example.com");
    assert_eq!(claims["groups"], json!(["devs", "ops", "staff"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_headers_from_another_address_are_refused() {
    let s = server().await;
    let b = browser_from("127.0.0.2");
    let callback = to_callback(&s, &b, &AuthRequest::public()).await;
    // A forwarded-for header naming the proxy changes nothing: only the peer address counts.
    let resp = callback_with_headers(&b, &callback, &[("X-Forwarded-For", "127.0.0.1")]).await;
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains("came from 127.0.0.2, which is not a trusted authenticating proxy"),
        "{page}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_sets_no_user_header_fails_the_sign_in() {
    let s = server().await;
    let b = browser_from("127.0.0.1");
    let callback = to_callback(&s, &b, &AuthRequest::public()).await;
    let resp = b.get(&callback).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("Sign-in failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_on_the_shared_callback_are_not_believed() {
    let s = server().await;
    let b = browser_from("127.0.0.1");
    let callback = to_callback(&s, &b, &AuthRequest::public()).await;
    let shared = callback.replace("/callback/proxy?", "/callback?");
    let resp = callback_with_headers(&b, &shared, &[]).await;
    assert_eq!(resp.status(), 400);
}

#[test]
fn trusted_proxies_is_required_and_named_by_path() {
    let config = |c: &str| connector_errors(&format!("- type: authproxy\n  id: p\n  config:\n{c}"));
    let errors = config("    userHeader: X-Forwarded-User\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "connectors[0].config.trustedProxies");
    assert!(errors[0].1.contains("missing required key"), "{errors:?}");

    let errors = config("    trustedProxies: [10.0.0.0/8, proxy.local]\n    groups: [a]\n");
    let paths: Vec<&str> = errors.iter().map(|(p, _)| p.as_str()).collect();
    assert!(paths.contains(&"connectors[0].config.groups"), "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|(p, m)| p == "connectors[0].config.groups" && m.contains("staticGroups")),
        "Dex's key is staticGroups: {errors:?}"
    );
}
