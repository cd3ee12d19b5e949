//! A real browser (headless Chromium) signs in through lanyard's pages.

use crate::common;

use common::browser::Browser;
use common::server::*;
use fantoccini::Locator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_with_the_code_flow_and_pkce() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let req = AuthRequest::public();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(req.query())
        .finish();
    let c = &browser.client;
    c.goto(&s.url(&format!("/auth?{query}"))).await.unwrap();
    c.find(Locator::Id("login"))
        .await
        .unwrap()
        .send_keys("alice@example.com")
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(ALICE_PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Id("submit-login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Chromium sends `Origin: null` under `Referrer-Policy: no-referrer`; the post must pass.
    let approve = c
        .wait()
        .at_most(std::time::Duration::from_secs(10))
        .for_element(Locator::Id("approve"))
        .await;
    if approve.is_err() {
        panic!("no approval page: {}", c.source().await.unwrap());
    }
    c.find(Locator::Id("approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The redirect goes to the client's loopback URI, where nothing listens: read the URL.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let landed = loop {
        let url = c.current_url().await.unwrap().to_string();
        if url.starts_with(PUBLIC_REDIRECT) || std::time::Instant::now() > deadline {
            break url;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(landed.starts_with(PUBLIC_REDIRECT), "{landed}");
    let code = query_param(&landed, "code").expect("code");
    assert_eq!(query_param(&landed, "state").as_deref(), Some("state-123"));
    assert_eq!(s.redeem(&req, &code).await.status(), 200);
    browser.close().await;
}
