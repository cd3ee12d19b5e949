//! A real lanyard server on a loopback port, against real SQLite or PostgreSQL, and a
//! browser-like client that walks the login pages.

use std::sync::Arc;

use lanyard::clock::{Clock, ManualClock, SystemClock};
use lanyard::config::Config;
use lanyard::oidc::Provider;
use lanyard::server::app::{self, BuildOptions, Listener};
use reqwest::redirect::Policy;
use tokio::sync::oneshot;

use super::postgres::{fresh_database, TestDatabase};

/// Dex's documented example hash; the password is "password".
pub const ALICE_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
pub const ALICE_PASSWORD: &str = "password";
pub const ALICE_USER_ID: &str = "08a8684b-db88-4b73-90a9-3cd1661f5466";
pub const PUBLIC_CLIENT: &str = "kubectl";
pub const PUBLIC_REDIRECT: &str = "http://127.0.0.1:8000/callback";
pub const WEB_CLIENT: &str = "web";
pub const WEB_SECRET: &str = "web-secret-with-enough-entropy";
pub const WEB_REDIRECT: &str = "https://app.example.com/callback";
pub const WEB_LOGGED_OUT: &str = "https://app.example.com/signed-out";
pub const PEER_CLIENT: &str = "peer-api";
pub const PEER_SECRET: &str = "peer-secret-with-enough-entropy";
pub const ROBOT_CLIENT: &str = "robot";
pub const ROBOT_SECRET: &str = "robot-secret-with-enough-entropy";
/// `web:` settings that make the server take the client address from `X-Forwarded-For` sent
/// from 127.0.0.1, so a test can be many clients.
pub const TRUST_LOCAL_PROXY: &str =
    "  clientRemoteIP:\n    header: X-Forwarded-For\n    trustedProxies: ['127.0.0.1/32']\n";
pub const ENCRYPTION_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// A loopback port that was free a moment ago, for a server the test starts itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestServer {
    pub site: Site,
    pub issuer: String,
    /// The server's clock: tests move it to expire things.
    pub clock: ManualClock,
    /// Where to reach the database directly, to check what was (not) written.
    pub database_url: String,
    /// The telemetry listener's base URL, when the builder asked for one.
    pub telemetry: Option<String>,
    pub provider: Arc<Provider>,
    /// A client that keeps cookies and does not follow redirects, like a careful browser.
    pub browser: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    _db: Option<TestDatabase>,
}

/// What a test server starts with; [`TestServer::builder`] makes one. YAML fragments are added
/// to a base config that has alice's static password and the kubectl, web, peer and robot
/// clients.
pub struct TestServerBuilder {
    storage: StorageChoice,
    listener: Option<tokio::net::TcpListener>,
    telemetry: bool,
    issuer_path: String,
    web: String,
    config: String,
}

enum StorageChoice {
    /// A database of its own.
    Fresh(Backend),
    /// The PostgreSQL database of a running server (a second replica of its deployment).
    Shared { database_url: String },
}

impl TestServerBuilder {
    /// What follows host and port in the issuer URL, e.g. "/dex".
    pub fn issuer_path(mut self, path: &str) -> Self {
        self.issuer_path = path.to_string();
        self
    }

    /// YAML indented under `web:` (two spaces), after the listen address.
    pub fn web(mut self, yaml: &str) -> Self {
        self.web.push_str(yaml);
        self
    }

    /// Top-level YAML after the base config (connectors, expiry, oauth2, …).
    pub fn config(mut self, yaml: &str) -> Self {
        self.config.push_str(yaml);
        self
    }

    /// Serves the telemetry endpoints too, on a port of their own ([`TestServer::telemetry`]).
    pub fn telemetry(mut self) -> Self {
        self.telemetry = true;
        self
    }

    /// Serves on a listener bound beforehand, for a server whose URL another server's config
    /// must name before it starts.
    pub fn listener(mut self, listener: tokio::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Starts the server; `None` when it needs a fresh PostgreSQL database and PostgreSQL is
    /// unreachable outside CI.
    pub async fn start(self) -> Option<TestServer> {
        let listener = match self.listener {
            Some(listener) => listener,
            None => tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        };
        let telemetry = match self.telemetry {
            true => Some(
                tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind telemetry"),
            ),
            false => None,
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let (storage_yaml, database_url, db) = match self.storage {
            StorageChoice::Fresh(Backend::Sqlite) => {
                let file = dir.path().join("lanyard.db");
                (
                    format!(
                        "storage:\n  type: sqlite3\n  config:\n    file: {}\n",
                        file.display()
                    ),
                    format!("sqlite://{}", file.display()),
                    None,
                )
            }
            StorageChoice::Fresh(Backend::Postgres) => {
                let db = fresh_database().await?;
                (
                    postgres_storage_yaml(db.url()),
                    db.url().to_string(),
                    Some(db),
                )
            }
            StorageChoice::Shared { database_url } => {
                (postgres_storage_yaml(&database_url), database_url, None)
            }
        };
        Some(
            TestServer::launch(
                (listener, telemetry),
                dir,
                (storage_yaml, database_url, db),
                &self.issuer_path,
                &self.web,
                &self.config,
            )
            .await,
        )
    }
}

fn postgres_storage_yaml(url: &str) -> String {
    format!("storage:\n  type: postgres\n  config:\n    connectionString: {url}\n")
}

impl TestServer {
    pub fn builder(backend: Backend) -> TestServerBuilder {
        TestServerBuilder {
            storage: StorageChoice::Fresh(backend),
            listener: None,
            telemetry: false,
            issuer_path: String::new(),
            web: String::new(),
            config: String::new(),
        }
    }

    /// Another server on this one's PostgreSQL database: a second replica of the deployment.
    pub fn replica(&self) -> TestServerBuilder {
        assert!(
            self.database_url.starts_with("postgres"),
            "replicas share a PostgreSQL database"
        );
        TestServerBuilder {
            storage: StorageChoice::Shared {
                database_url: self.database_url.clone(),
            },
            ..Self::builder(Backend::Postgres)
        }
    }

    /// Starts a server; `None` when the backend is Postgres and it is unreachable outside CI.
    pub async fn start(backend: Backend, extra_yaml: &str) -> Option<TestServer> {
        Self::builder(backend).config(extra_yaml).start().await
    }

    async fn launch(
        (listener, telemetry): (tokio::net::TcpListener, Option<tokio::net::TcpListener>),
        dir: tempfile::TempDir,
        (storage_yaml, database_url, db): (String, String, Option<TestDatabase>),
        issuer_path: &str,
        web_extra: &str,
        extra_yaml: &str,
    ) -> TestServer {
        let port = listener.local_addr().expect("addr").port();
        let issuer = format!("http://127.0.0.1:{port}{issuer_path}");
        let yaml = format!(
            r#"issuer: {issuer}
{storage_yaml}web:
  http: 127.0.0.1:{port}
{web_extra}logger:
  level: warn
keys:
  encryptionKey: {ENCRYPTION_KEY}
enablePasswordDB: true
staticPasswords:
- email: alice@example.com
  hash: "{ALICE_HASH}"
  username: alice
  userID: {ALICE_USER_ID}
  groups: [devs, ops]
staticClients:
- id: {PUBLIC_CLIENT}
  name: kubectl
  public: true
  redirectURIs: ['{PUBLIC_REDIRECT}']
- id: {WEB_CLIENT}
  name: Web App
  secret: {WEB_SECRET}
  redirectURIs: ['{WEB_REDIRECT}']
  postLogoutRedirectURIs: ['{WEB_LOGGED_OUT}']
- id: {PEER_CLIENT}
  name: Peer API
  secret: {PEER_SECRET}
  redirectURIs: ['https://peer.example.com/callback']
  trustedPeers: ['{PUBLIC_CLIENT}']
- id: {ROBOT_CLIENT}
  name: Deploy robot
  secret: {ROBOT_SECRET}
  grantTypes: [client_credentials]
{extra_yaml}"#
        );
        let config = Config::from_yaml_str(&yaml, &|k| std::env::var(k).ok())
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n---\n{yaml}"));
        let clock = ManualClock::new(SystemClock.now());
        let mut options = BuildOptions::new(false);
        options.data_dir = dir.path().to_path_buf();
        options.clock = Arc::new(clock.clone());
        let built = app::build(&config, options).await.expect("build app");
        let provider = built.provider.clone();
        let telemetry_url = telemetry
            .as_ref()
            .map(|l| format!("http://{}", l.local_addr().expect("telemetry addr")));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = built
                .run_on(vec![Listener::Http(listener)], telemetry, async {
                    let _ = stopped.await;
                })
                .await;
        });
        let browser = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .expect("client");
        TestServer {
            site: Site::new(issuer.clone()),
            issuer,
            clock,
            database_url,
            telemetry: telemetry_url,
            provider,
            browser,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
            _db: db,
        }
    }

    /// A fresh browser (no cookies) for the same server.
    pub fn new_browser() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .expect("client")
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::ops::Deref for TestServer {
    type Target = Site;
    fn deref(&self) -> &Site {
        &self.site
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The parameters of one /auth request.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: String,
    pub state: String,
    pub nonce: String,
    pub code_verifier: Option<String>,
}

impl AuthRequest {
    pub fn public() -> Self {
        Self {
            client_id: PUBLIC_CLIENT.into(),
            redirect_uri: PUBLIC_REDIRECT.into(),
            scope: "openid email profile groups offline_access".into(),
            state: "state-123".into(),
            nonce: "nonce-456".into(),
            code_verifier: Some(pkce_verifier()),
        }
    }

    pub fn confidential() -> Self {
        Self {
            client_id: WEB_CLIENT.into(),
            redirect_uri: WEB_REDIRECT.into(),
            code_verifier: None,
            ..Self::public()
        }
    }

    pub fn query(&self) -> Vec<(String, String)> {
        let mut q = vec![
            ("client_id".to_string(), self.client_id.clone()),
            ("redirect_uri".to_string(), self.redirect_uri.clone()),
            ("response_type".to_string(), "code".to_string()),
            ("scope".to_string(), self.scope.clone()),
            ("state".to_string(), self.state.clone()),
            ("nonce".to_string(), self.nonce.clone()),
        ];
        if let Some(v) = &self.code_verifier {
            q.push(("code_challenge".into(), pkce_challenge(v)));
            q.push(("code_challenge_method".into(), "S256".into()));
        }
        q
    }
}

pub fn pkce_verifier() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// The value of a hidden form field.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

pub fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no Location header; status {}", resp.status()))
}

pub fn query_param(url: &str, name: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    parsed
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The claims of a JWT (an ID token), read without checking its signature.
pub fn claims_of(id_token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = id_token.split('.').nth(1).expect("payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    serde_json::from_slice(&bytes).expect("claims")
}

/// A running issuer seen from outside: its URL and the login pages' flow.
pub struct Site {
    pub issuer: String,
}

impl Site {
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    pub fn absolute(&self, location: &str) -> String {
        if location.starts_with("http") {
            location.to_string()
        } else {
            format!(
                "http://{}{}",
                self.issuer
                    .trim_start_matches("http://")
                    .split('/')
                    .next()
                    .unwrap_or(""),
                location
            )
        }
    }

    /// GET /auth with the request's query, in `browser`; the answer is not followed.
    pub async fn authorize(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
    ) -> reqwest::Response {
        browser
            .get(self.url("/auth"))
            .query(&req.query())
            .send()
            .await
            .expect("auth")
    }

    /// The HTML of the page at `url` (absolute), fetched in `browser`.
    pub async fn page_html(&self, browser: &reqwest::Client, url: &str) -> String {
        browser
            .get(url)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html")
    }

    /// GET /auth and follow to the login form; returns the form page URL and its HTML.
    pub async fn open_login(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
    ) -> (String, String) {
        let resp = self.authorize(browser, req).await;
        assert_eq!(
            resp.status(),
            303,
            "/auth should redirect to the login form"
        );
        let login_url = self.absolute(&location(&resp));
        let page = browser.get(&login_url).send().await.expect("login page");
        assert_eq!(page.status(), 200);
        (login_url, page.text().await.expect("html"))
    }

    /// Submits the password form; returns the response (303 on success).
    pub async fn submit_login(
        &self,
        browser: &reqwest::Client,
        login_url: &str,
        html: &str,
        login: &str,
        password: &str,
    ) -> reqwest::Response {
        post_login_form(browser.post(login_url), html, login, password).await
    }

    /// [`Site::submit_login`] as if from `client_addr`, forwarded by a proxy on 127.0.0.1
    /// (for servers started with [`TRUST_LOCAL_PROXY`]).
    #[allow(clippy::too_many_arguments)]
    pub async fn submit_login_from(
        &self,
        browser: &reqwest::Client,
        login_url: &str,
        html: &str,
        login: &str,
        password: &str,
        client_addr: &str,
    ) -> reqwest::Response {
        let post = browser
            .post(login_url)
            .header("x-forwarded-for", client_addr);
        post_login_form(post, html, login, password).await
    }

    /// Follows `redirect` (an answer from /auth or /device) to the login form and signs alice
    /// in there; returns the form post's answer.
    pub async fn sign_in_from(
        &self,
        browser: &reqwest::Client,
        redirect: &reqwest::Response,
    ) -> reqwest::Response {
        let login_url = self.absolute(&location(redirect));
        let html = self.page_html(browser, &login_url).await;
        self.submit_alice(browser, &login_url, &html).await
    }

    /// [`Site::submit_login`] with alice's email and password.
    pub async fn submit_alice(
        &self,
        browser: &reqwest::Client,
        login_url: &str,
        html: &str,
    ) -> reqwest::Response {
        self.submit_login(
            browser,
            login_url,
            html,
            "alice@example.com",
            ALICE_PASSWORD,
        )
        .await
    }

    /// Approves on the approval page at `url` (absolute): reads its form's CSRF token and
    /// posts `approve`; returns the answer (303 to the client, or 200 for a device).
    pub async fn approve(&self, browser: &reqwest::Client, url: &str) -> reqwest::Response {
        let page = browser.get(url).send().await.expect("approval page");
        assert_eq!(page.status(), 200, "the approval page is shown");
        let html = page.text().await.expect("html");
        let csrf = hidden_field(&html, "csrf").expect("csrf on the approval page");
        browser
            .post(url)
            .form(&[("csrf", csrf.as_str()), ("approval", "approve")])
            .send()
            .await
            .expect("approve")
    }

    /// Logs alice in and approves; returns the final redirect to the client.
    pub async fn login_and_approve(&self, browser: &reqwest::Client, req: &AuthRequest) -> String {
        self.login_and_approve_as(browser, req, "alice@example.com", ALICE_PASSWORD)
            .await
    }

    /// Logs a user in and approves; returns the final redirect to the client.
    pub async fn login_and_approve_as(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
        login: &str,
        password: &str,
    ) -> String {
        let (login_url, html) = self.open_login(browser, req).await;
        let resp = self
            .submit_login(browser, &login_url, &html, login, password)
            .await;
        self.approve_if_asked(browser, req, &resp).await
    }

    /// `resp` is the answer to a completed login (a password form post, or an upstream's
    /// redirect back to /callback): approves if the approval page is shown; returns the final
    /// redirect to the client.
    pub async fn approve_if_asked(
        &self,
        browser: &reqwest::Client,
        req: &AuthRequest,
        resp: &reqwest::Response,
    ) -> String {
        assert_eq!(resp.status(), 303, "login should succeed");
        let next = self.absolute(&location(resp));
        if next.starts_with(&req.redirect_uri) {
            return next;
        }
        let resp = self.approve(browser, &next).await;
        assert_eq!(resp.status(), 303);
        location(&resp)
    }

    /// The whole browser part of the flow: returns the code.
    pub async fn code_for(&self, req: &AuthRequest) -> String {
        self.code_for_as(req, "alice@example.com", ALICE_PASSWORD)
            .await
    }

    pub async fn code_for_as(&self, req: &AuthRequest, login: &str, password: &str) -> String {
        let browser = TestServer::new_browser();
        let redirect = self
            .login_and_approve_as(&browser, req, login, password)
            .await;
        assert!(
            redirect.starts_with(&req.redirect_uri),
            "unexpected redirect {redirect}"
        );
        query_param(&redirect, "code").expect("code in redirect")
    }

    /// POSTs to /token with the code (public clients by PKCE, confidential by Basic auth).
    pub async fn redeem(&self, req: &AuthRequest, code: &str) -> reqwest::Response {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.to_string()),
            ("redirect_uri", req.redirect_uri.clone()),
        ];
        let client = reqwest::Client::new();
        let mut post = client.post(self.url("/token"));
        if req.client_id == WEB_CLIENT {
            post = post.basic_auth(WEB_CLIENT, Some(WEB_SECRET));
        } else {
            form.push(("client_id", req.client_id.clone()));
        }
        if let Some(v) = &req.code_verifier {
            form.push(("code_verifier", v.clone()));
        }
        post.form(&form).send().await.expect("token request")
    }
}

/// Posts the password form `html` showed, with its CSRF token.
async fn post_login_form(
    post: reqwest::RequestBuilder,
    html: &str,
    login: &str,
    password: &str,
) -> reqwest::Response {
    let csrf = hidden_field(html, "csrf").expect("csrf field");
    post.form(&[
        ("csrf", csrf.as_str()),
        ("login", login),
        ("password", password),
    ])
    .send()
    .await
    .expect("post login")
}

impl TestServer {
    /// The non-null text values `sql` selects, read straight from the database.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        use sqlx::Connection;
        let rows: Vec<Option<String>> = if self.database_url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("sqlite");
            sqlx::query_scalar(sql).fetch_all(&mut c).await.expect(sql)
        } else {
            let mut c = sqlx::PgConnection::connect(&self.database_url)
                .await
                .expect("pg");
            sqlx::query_scalar(sql).fetch_all(&mut c).await.expect(sql)
        };
        rows.into_iter().flatten().collect()
    }

    /// Runs one statement with one text argument (`$1`) straight on the database.
    pub async fn execute(&self, sql: &str, arg: &str) {
        use sqlx::Connection;
        if self.database_url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("sqlite");
            sqlx::query(sql).bind(arg).execute(&mut c).await.expect(sql);
        } else {
            let mut c = sqlx::PgConnection::connect(&self.database_url)
                .await
                .expect("pg");
            sqlx::query(sql).bind(arg).execute(&mut c).await.expect(sql);
        }
    }

    /// Every stored text that carries connector data: grants, sign-in sessions and the logins
    /// recorded on auth requests.
    pub async fn stored_connector_data(&self) -> Vec<String> {
        let mut all = self
            .texts("SELECT connector_data FROM grants WHERE connector_data IS NOT NULL")
            .await;
        all.extend(
            self.texts("SELECT connector_data FROM sessions WHERE connector_data IS NOT NULL")
                .await,
        );
        all.extend(
            self.texts("SELECT login FROM auth_requests WHERE login IS NOT NULL")
                .await,
        );
        all
    }

    /// Asserts that connector data is stored, all of it sealed, and that `secret` (an upstream
    /// token) shows nowhere in it, neither as text nor in base64 (connector data's old form).
    pub async fn assert_connector_data_sealed(&self, secret: &str) {
        use base64::Engine;
        let grants = self
            .texts("SELECT connector_data FROM grants WHERE connector_data IS NOT NULL")
            .await;
        assert!(!grants.is_empty(), "the grant keeps connector data");
        for g in &grants {
            assert!(g.starts_with("kek1."), "not sealed: {g:.40}");
        }
        for text in self.stored_connector_data().await {
            assert!(
                !text.contains(secret),
                "an upstream token is stored in plain text"
            );
            for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c))) {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(word) {
                    assert!(
                        !String::from_utf8_lossy(&bytes).contains(secret),
                        "an upstream token is stored in base64"
                    );
                }
            }
        }
    }

    /// Rewrites every grant's connector data in the plain base64 form rows had before
    /// connector data was encrypted.
    pub async fn store_connector_data_in_plaintext(&self, connector: &str) {
        use base64::Engine;
        let grants = self
            .texts("SELECT connector_data FROM grants WHERE connector_data IS NOT NULL")
            .await;
        assert_eq!(grants.len(), 1, "one grant");
        let plain = self
            .provider
            .keys
            .open_connector_data(connector, &grants[0])
            .expect("opens");
        self.execute(
            "UPDATE grants SET connector_data = $1",
            &base64::engine::general_purpose::STANDARD.encode(plain),
        )
        .await;
    }

    /// Rows in `table`, read straight from the database (not through lanyard's storage code).
    pub async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        if self.database_url.starts_with("sqlite:") {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&self.database_url)
                .await
                .expect("sqlite");
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&mut c)
                .await
                .expect("count")
        } else {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&self.database_url)
                .await
                .expect("pg");
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&mut c)
                .await
                .expect("count")
        }
    }
}
