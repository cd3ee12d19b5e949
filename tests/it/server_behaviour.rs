//! Serving details: issuer paths, JWKS caching, bearer errors, headers, health.

use crate::common;

use common::server::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_live_under_the_issuer_path_like_dex() {
    let s = TestServer::builder(Backend::Sqlite)
        .issuer_path("/dex")
        .start()
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
    let s = TestServer::builder(Backend::Sqlite)
        .issuer_path("/dex")
        .config(&kube)
        .start()
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
    // RFC 9110 §15.4.5: a 304 carries the headers a 200 would have for caching.
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(r.headers()["cache-control"].to_str().unwrap(), cache);
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

// ---------------------------------------------------------------------------------------
// Slow and idle clients, the connection cap, HTTPS-only headers and cookies, request ids

use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `host:port` of a test server.
fn addr_of(s: &TestServer) -> String {
    let url = url::Url::parse(&s.issuer).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
}

/// Reads until the server closes the connection, sending `trickle` every 300 ms meanwhile;
/// what the server sent, or `None` if it still had not closed after `within`.
async fn closed_within(
    stream: &mut TcpStream,
    within: Duration,
    trickle: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Some(bytes) = trickle {
            // A write to a connection the server closed fails: that is the close we wait for.
            if stream.write_all(bytes).await.is_err() {
                return Some(received);
            }
        }
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_sent_slowly_are_cut_off() {
    let s = TestServer::builder(Backend::Sqlite)
        .web("  headerReadTimeout: 1s\n  idleTimeout: 1m\n")
        .start()
        .await
        .unwrap();
    let mut c = TcpStream::connect(addr_of(&s)).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = closed_within(&mut c, Duration::from_secs(5), Some(b"X-Slow: 1\r\n")).await;
    assert!(
        closed.is_some(),
        "a header line every 300 ms kept the connection"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_on_http1_and_http2() {
    let s = TestServer::builder(Backend::Sqlite)
        .web("  idleTimeout: 1s\n  headerReadTimeout: 1m\n")
        .start()
        .await
        .unwrap();
    // HTTP/1.1: one request, then nothing.
    let mut c = TcpStream::connect(addr_of(&s)).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = closed_within(&mut c, Duration::from_secs(5), None)
        .await
        .expect("an idle HTTP/1.1 connection stayed open");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    // HTTP/2 (prior knowledge): the preface and settings, then no request; pings are
    // answered, as a live client would. The server says goodbye (GOAWAY) and closes.
    let mut c = TcpStream::connect(addr_of(&s)).await.unwrap();
    c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut received = Vec::new();
    let mut types = Vec::new();
    let mut closed = false;
    while Instant::now() < deadline && !closed {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => closed = true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        while received.len() >= 9 {
            let len = u32::from_be_bytes([0, received[0], received[1], received[2]]) as usize;
            if received.len() < 9 + len {
                break;
            }
            let frame: Vec<u8> = received.drain(..9 + len).collect();
            let (kind, flags) = (frame[3], frame[4]);
            types.push(kind);
            const SETTINGS: u8 = 4;
            const PING: u8 = 6;
            let ack = match kind {
                SETTINGS if flags & 1 == 0 => Some(vec![0, 0, 0, SETTINGS, 1, 0, 0, 0, 0]),
                PING if flags & 1 == 0 => {
                    let mut a = frame.clone();
                    a[4] = 1;
                    Some(a)
                }
                _ => None,
            };
            if let Some(a) = ack {
                let _ = c.write_all(&a).await;
            }
        }
    }
    assert!(
        closed,
        "an idle HTTP/2 connection stayed open: frame types {types:?}"
    );
    const GOAWAY: u8 = 7;
    assert!(types.contains(&GOAWAY), "frame types {types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_request_body_gets_408_and_its_connection_closed() {
    let s = TestServer::builder(Backend::Sqlite)
        .web("  requestBodyTimeout: 1s\n")
        .start()
        .await
        .unwrap();
    let mut c = TcpStream::connect(addr_of(&s)).await.unwrap();
    c.write_all(
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
Content-Length: 100\r\n\r\ngrant_type=",
    )
    .await
    .unwrap();
    let answer = closed_within(&mut c, Duration::from_secs(5), Some(b"a"))
        .await
        .expect("a body trickling at a byte per 300 ms kept the connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // A body that arrives in time is served as before.
    let r = reqwest::Client::new()
        .post(s.url("/token"))
        .form(&[("grant_type", "client_credentials")])
        .basic_auth(ROBOT_CLIENT, Some(ROBOT_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let s = TestServer::builder(Backend::Sqlite)
        .web("  maxConnections: 2\n")
        .start()
        .await
        .unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let answered = |mut c: TcpStream| async move {
        c.write_all(request).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_millis(700), c.read(&mut buf))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(0);
        (buf[..n].starts_with(b"HTTP/1.1 200"), c)
    };
    let (first_ok, first) = answered(TcpStream::connect(addr_of(&s)).await.unwrap()).await;
    let (second_ok, _second) = answered(TcpStream::connect(addr_of(&s)).await.unwrap()).await;
    assert!(first_ok && second_ok);
    // Both stay open (keep-alive): a third is not served...
    let mut third = TcpStream::connect(addr_of(&s)).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 512];
    assert!(
        tokio::time::timeout(Duration::from_millis(700), third.read(&mut buf))
            .await
            .is_err(),
        "a third connection was served beyond maxConnections: 2"
    );
    // ...until one of the first two closes.
    drop(first);
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .expect("the waiting connection was served once another closed")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_client_request_ids_are_replaced() {
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let echoed = |id: String| {
        let url = s.url("/healthz");
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .header("x-request-id", id.as_str())
                .send()
                .await
                .unwrap();
            r.headers()["x-request-id"].to_str().unwrap().to_string()
        }
    };
    let good = "trace-1.2:3_ABC";
    assert_eq!(echoed(good.into()).await, good);
    for bad in [
        "a b".to_string(),
        "x\"} forged=\"1".to_string(),
        "tab\there".to_string(),
        "k".repeat(129),
    ] {
        let id = echoed(bad.clone()).await;
        assert_ne!(id, bad);
        assert!(
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c)),
            "{id:?}"
        );
    }
}

/// A server with an https issuer on a TLS listener (memory storage), and a client that
/// trusts its certificate and keeps cookies. `web_extra` is YAML under `web:`.
struct HttpsServer {
    issuer: String,
    client: reqwest::Client,
    port: u16,
    cert_der: Vec<u8>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl HttpsServer {
    async fn start(issuer_path: &str, web_extra: &str) -> HttpsServer {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert_file = dir.path().join("tls.crt");
        let key_file = dir.path().join("tls.key");
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
        let port = free_port();
        let issuer = format!("https://localhost:{port}{issuer_path}");
        let yaml = format!(
            "issuer: {issuer}\nstorage:\n  type: memory\nweb:\n  https: 127.0.0.1:{port}\n  \
tlsCert: {}\n  tlsKey: {}\n{web_extra}logger:\n  level: warn\nenablePasswordDB: true\n\
staticClients:\n- id: {PUBLIC_CLIENT}\n  name: kubectl\n  public: true\n  redirectURIs: ['{PUBLIC_REDIRECT}']\n",
            cert_file.display(),
            key_file.display()
        );
        let config = lanyard::config::Config::from_yaml_str(&yaml, &|_| None).unwrap();
        let mut options = lanyard::server::app::BuildOptions::new(false);
        options.data_dir = dir.path().to_path_buf();
        let built = lanyard::server::app::build(&config, options).await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = built
                .run_on(Vec::new(), None, async {
                    let _ = stopped.await;
                })
                .await;
        });
        let client = reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap(),
            )
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .get(format!("{issuer}/healthz"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "HTTPS never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        HttpsServer {
            issuer,
            client,
            port,
            cert_der: cert.cert.der().to_vec(),
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// A TLS connection (no HTTP yet) offering only `versions`.
    async fn tls_connect(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone().into()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await
    }

    /// The login cookie /auth sets.
    async fn login_cookie(&self) -> String {
        let r = self
            .client
            .get(format!("{}/auth", self.issuer))
            .query(&AuthRequest::public().query())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        r.headers()["set-cookie"].to_str().unwrap().to_string()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_connection_that_never_sends_a_request_is_cut_off() {
    let s = HttpsServer::start("", "  headerReadTimeout: 1s\n  idleTimeout: 1m\n").await;
    let mut tls = s
        .tls_connect(rustls::DEFAULT_VERSIONS)
        .await
        .expect("TLS handshake");
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a TLS connection without a request stayed open: {closed:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_comes_is_cut_off() {
    let s = HttpsServer::start("", "  tlsHandshakeTimeout: 1s\n").await;
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut c, Duration::from_secs(5), None)
            .await
            .is_some(),
        "a connection that never started its TLS handshake stayed open"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_cookies_are_prefixed_and_responses_carry_hsts() {
    let root = HttpsServer::start("", "").await;
    let cookie = root.login_cookie().await;
    assert!(cookie.starts_with("__Host-lanyard_login="), "{cookie}");
    assert!(
        cookie.contains("; Path=/;") && cookie.contains("; Secure") && !cookie.contains("Domain"),
        "{cookie}"
    );
    let r = root
        .client
        .get(format!("{}/healthz", root.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");

    // Under a path the cookie cannot be __Host-; web.headers overrides HSTS, as in Dex.
    let pathed = HttpsServer::start(
        "/dex",
        "  headers:\n    Strict-Transport-Security: max-age=600; includeSubDomains\n",
    )
    .await;
    let cookie = pathed.login_cookie().await;
    assert!(cookie.starts_with("__Secure-lanyard_login="), "{cookie}");
    assert!(cookie.contains("; Path=/dex/;"), "{cookie}");
    let r = pathed
        .client
        .get(format!("{}/healthz", pathed.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=600; includeSubDomains"
    );

    // Over plain http neither applies.
    let s = TestServer::start(Backend::Sqlite, "").await.unwrap();
    let r = reqwest::get(s.url("/healthz")).await.unwrap();
    assert!(r.headers().get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_outside_web_tls_min_and_max_version_are_refused() {
    let s = HttpsServer::start("", "  tlsMinVersion: \"1.3\"\n").await;
    assert!(s.tls_connect(&[&rustls::version::TLS12]).await.is_err());
    assert!(s.tls_connect(&[&rustls::version::TLS13]).await.is_ok());
    let s = HttpsServer::start("", "  tlsMaxVersion: \"1.2\"\n").await;
    assert!(s.tls_connect(&[&rustls::version::TLS13]).await.is_err());
    assert!(s.tls_connect(&[&rustls::version::TLS12]).await.is_ok());
}

/// A plain GET of discovery or JWKS is answered before the router (`server::polled`); the same
/// GET with a body goes through the router and its layers. Both must give the same status,
/// headers and body, the request id sent echoed by both, and both must be counted under the
/// route in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polled_routes_answer_exactly_as_the_router_does() {
    for issuer_path in ["", "/dex"] {
        let s = TestServer::builder(Backend::Sqlite)
            .issuer_path(issuer_path)
            .telemetry()
            .start()
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let etag = http
            .get(s.url("/keys"))
            .send()
            .await
            .unwrap()
            .headers()
            .get("etag")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let cases = [
            ("/keys", None),
            ("/keys", Some(etag.as_str())),
            ("/keys", Some("\"another\"")),
            ("/.well-known/openid-configuration", None),
        ];
        for (path, if_none_match) in cases {
            let answer = |routed: bool| {
                let mut get = http.get(s.url(path)).header("x-request-id", "same-id.1");
                if let Some(tag) = if_none_match {
                    get = get.header("if-none-match", tag);
                }
                if routed {
                    get = get.body("x");
                }
                async move {
                    let r = get.send().await.unwrap();
                    let status = r.status();
                    let mut headers: Vec<(String, String)> = r
                        .headers()
                        .iter()
                        .filter(|(name, _)| *name != "date")
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                        .collect();
                    headers.sort();
                    (status, headers, r.bytes().await.unwrap())
                }
            };
            let polled = answer(false).await;
            let routed = answer(true).await;
            assert_eq!(polled, routed, "{issuer_path}{path} {if_none_match:?}");
            let expected = if if_none_match == Some(etag.as_str()) {
                304
            } else {
                200
            };
            assert_eq!(polled.0, expected, "{issuer_path}{path} {if_none_match:?}");
            assert!(polled
                .1
                .contains(&("x-request-id".into(), "same-id.1".into())));
            assert!(polled.1.iter().any(|(n, _)| n == "content-security-policy"));
        }
        let metrics = reqwest::get(format!("{}/metrics", s.telemetry.as_deref().unwrap()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for (route, status, count) in [
            ("/keys", 200, 5),
            ("/keys", 304, 2),
            ("/.well-known/openid-configuration", 200, 2),
        ] {
            let line = format!(
                "lanyard_http_requests_total{{route=\"{issuer_path}{route}\",method=\"GET\",status=\"{status}\"}} {count}"
            );
            assert!(metrics.contains(&line), "{line} in\n{metrics}");
        }
    }
}
