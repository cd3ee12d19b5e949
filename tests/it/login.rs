//! `lanyard login`, the kubectl credential plugin: the real binary as a subprocess against a
//! real lanyard issuer in this process, with the test playing the browser.

use crate::common;

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::server::*;
use lanyard::clock::{Clock, SystemClock};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");
const NOT_INTERACTIVE: &str = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false}}"#;
const DEFAULT_SCOPES: &str = "openid email profile groups offline_access";

/// One kubectl user's plugin setup: a cache directory and a fake browser that records the
/// URLs it was asked to open.
struct Plugin {
    dir: tempfile::TempDir,
    issuer: String,
}

impl Plugin {
    fn new(issuer: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("browser.sh");
        std::fs::write(
            &script,
            format!(
                "printf '%s\\n' \"$1\" >> '{}'\n",
                dir.path().join("urls").display()
            ),
        )
        .unwrap();
        Self {
            dir,
            issuer: issuer.to_string(),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args([
            "login",
            "--issuer",
            &self.issuer,
            "--client-id",
            PUBLIC_CLIENT,
        ])
        .arg("--cache-dir")
        .arg(self.cache_dir())
        .arg("--browser-command")
        .arg(format!(
            "sh {}",
            self.dir.path().join("browser.sh").display()
        ))
        .args(extra)
        .env_remove("KUBERNETES_EXEC_INFO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        c
    }

    fn non_interactive(&self, extra: &[&str]) -> Command {
        let mut c = self.command(extra);
        c.env("KUBERNETES_EXEC_INFO", NOT_INTERACTIVE);
        c
    }

    /// The URLs the fake browser was asked to open.
    fn browser_urls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("urls"))
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }

    fn cache_file(&self) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(self.cache_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        assert_eq!(files.len(), 1, "one cache entry: {files:?}");
        files[0].clone()
    }

    fn cache(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.cache_file()).unwrap()).unwrap()
    }

    fn edit_cache(&self, edit: impl FnOnce(&mut Value)) {
        let mut v = self.cache();
        edit(&mut v);
        std::fs::write(self.cache_file(), serde_json::to_vec(&v).unwrap()).unwrap();
    }

    /// Moves the cached ID token's expiry to 30s from now: inside the 60s refresh margin.
    fn make_stale(&self) {
        self.edit_cache(|v| v["expiry"] = (SystemClock.now() + 30).into());
    }
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("lanyard login finished")
        .unwrap()
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls until the fake browser has been asked to open a URL.
async fn wait_for_browser(p: &Plugin, already: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(url) = p.browser_urls().get(already) {
            return url.clone();
        }
        assert!(Instant::now() < deadline, "the browser was never opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays the browser from the plugin's /auth URL: login form, password, approval. Returns
/// the final redirect, to the plugin's loopback listener.
async fn browse_login(s: &TestServer, browser: &reqwest::Client, url: &str) -> String {
    let r = browser.get(url).send().await.unwrap();
    assert_eq!(r.status(), 303, "/auth accepts the plugin's request");
    let r = s.sign_in_from(browser, &r).await;
    assert_eq!(r.status(), 303, "login succeeds");
    approve_if_asked(s, browser, s.absolute(&location(&r))).await
}

async fn approve_if_asked(s: &TestServer, browser: &reqwest::Client, next: String) -> String {
    if !next.starts_with(&s.issuer) {
        return next;
    }
    let r = s.approve(browser, &next).await;
    assert_eq!(r.status(), 303);
    location(&r)
}

/// Runs `lanyard login --grant authcode` to completion, driving the browser part.
async fn loopback_login(s: &TestServer, p: &Plugin, mut cmd: Command) -> Output {
    let opened = p.browser_urls().len();
    let child = cmd.args(["--grant", "authcode"]).spawn().unwrap();
    let url = wait_for_browser(p, opened).await;
    assert!(url.starts_with(&s.url("/auth?")), "{url}");
    let redirect_uri = query_param(&url, "redirect_uri").unwrap();
    assert!(
        redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"),
        "{redirect_uri}"
    );
    assert_eq!(
        query_param(&url, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(query_param(&url, "scope").as_deref(), Some(DEFAULT_SCOPES));
    let browser = TestServer::new_browser();
    let callback = browse_login(s, &browser, &url).await;
    assert!(callback.starts_with(&redirect_uri), "{callback}");
    assert!(query_param(&callback, "iss").is_some(), "RFC 9207 iss");
    let page = reqwest::get(&callback).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("close this window"));
    finish(child).await
}

/// Asserts stdout is exactly one ExecCredential whose token is an ID token lanyard signed
/// for kubectl; returns the token and its claims.
async fn credential(s: &TestServer, out: &Output) -> (String, Value) {
    assert!(out.status.success(), "stderr: {}", stderr_of(out));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(text.lines().count(), 1, "one line on stdout: {text:?}");
    let v: Value = serde_json::from_str(&text).expect("stdout is only the JSON");
    assert_eq!(v["apiVersion"], "client.authentication.k8s.io/v1");
    assert_eq!(v["kind"], "ExecCredential");
    assert_eq!(v["status"].as_object().unwrap().len(), 2, "{v}");
    let token = v["status"]["token"].as_str().unwrap().to_string();

    let header = jsonwebtoken::decode_header(&token).unwrap();
    let jwks: Value = reqwest::get(s.url("/keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
    )
    .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[PUBLIC_CLIENT]);
    validation.set_issuer(&[&s.issuer]);
    let claims = jsonwebtoken::decode::<Value>(&token, &key, &validation)
        .expect("a valid ID token for kubectl")
        .claims;
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(
        v["status"]["expirationTimestamp"],
        lanyard::login::rfc3339(claims["exp"].as_i64().unwrap()).as_str(),
        "expirationTimestamp is the ID token's exp"
    );
    (token, claims)
}

fn refresh_token_of(p: &Plugin) -> String {
    p.cache()["refresh_token"].as_str().unwrap().to_string()
}

async fn server() -> TestServer {
    TestServer::start(Backend::Sqlite, "")
        .await
        .expect("SQLite server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_login_prints_one_exec_credential_and_caches_it_privately() {
    let s = server().await;
    let p = Plugin::new(&s.issuer);
    let out = loopback_login(&s, &p, p.command(&[])).await;
    let (token, _) = credential(&s, &out).await;
    assert!(
        !stderr_of(&out).contains(&token),
        "the token is never written to stderr"
    );

    let file = p.cache_file();
    use sha2::Digest;
    let key = hex::encode(sha2::Sha256::digest(format!(
        "{}\n{PUBLIC_CLIENT}\n{DEFAULT_SCOPES}",
        s.issuer
    )));
    assert_eq!(
        file.file_name().unwrap().to_str().unwrap(),
        format!("{key}.json")
    );
    assert!(p.cache_dir().join(format!("{key}.lock")).exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&p.cache_dir()), 0o700);
    let cache = p.cache();
    assert_eq!(cache["id_token"], token.as_str());
    assert!(cache["refresh_token"].is_string(), "offline_access");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_prints_the_credential_once_the_code_is_approved() {
    let s = server().await;
    // The server's clock follows real time, so that the plugin's real 5s polling interval
    // is not "too fast" for it.
    let clock = s.clock.clone();
    let ticker = tokio::spawn(async move {
        loop {
            clock.set(SystemClock.now());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let p = Plugin::new(&s.issuer);
    let mut child = p.command(&["--grant", "device"]).spawn().unwrap();
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<String>();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let stderr_task = tokio::spawn(async move {
        let mut all = String::new();
        while let Ok(Some(line)) = stderr.next_line().await {
            all.push_str(&line);
            all.push('\n');
            let _ = lines_tx.send(line);
        }
        all
    });
    let mut stdout = child.stdout.take().unwrap();
    let stdout_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        stdout.read_to_end(&mut buf).await.unwrap();
        buf
    });

    let user_code = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.recv().await {
            if let Some(code) = line.split("enter the code: ").nth(1) {
                return code.trim().to_string();
            }
        }
        panic!("stderr ended without a user code");
    })
    .await
    .expect("the user code is printed");
    assert_eq!(user_code.len(), 9, "{user_code}");

    let browser = TestServer::new_browser();
    let page = browser.get(s.url("/device")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csrf = hidden_field(&page.text().await.unwrap(), "csrf").expect("csrf on /device");
    let r = browser
        .post(s.url("/device"))
        .form(&[("user_code", user_code.as_str()), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the code is accepted");
    let r = s.sign_in_from(&browser, &r).await;
    assert_eq!(r.status(), 303);
    let approval = s.absolute(&location(&r));
    let r = s.approve(&browser, &approval).await;
    assert_eq!(r.status(), 200);

    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the plugin finishes after approval")
        .unwrap();
    let out = Output {
        status,
        stdout: stdout_task.await.unwrap(),
        stderr: stderr_task.await.unwrap().into_bytes(),
    };
    ticker.abort();
    credential(&s, &out).await;
    assert!(
        p.browser_urls().is_empty(),
        "the device grant opens no browser"
    );
    assert!(p.cache()["refresh_token"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_is_reused_without_a_login() {
    let s = server().await;
    let p = Plugin::new(&s.issuer);
    let (first, _) = credential(&s, &loopback_login(&s, &p, p.command(&[])).await).await;
    let refresh = refresh_token_of(&p);
    let tokens_before = s.count("access_tokens").await;

    let out = finish(p.command(&[]).spawn().unwrap()).await;
    let (second, _) = credential(&s, &out).await;
    assert_eq!(second, first);
    assert_eq!(p.browser_urls().len(), 1, "no second login");
    assert_eq!(refresh_token_of(&p), refresh, "no refresh");
    assert_eq!(
        s.count("access_tokens").await,
        tokens_before,
        "no token request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_near_expiry_is_refreshed_and_the_rotated_refresh_token_kept() {
    let s = server().await;
    let p = Plugin::new(&s.issuer);
    let (first, first_claims) = credential(&s, &loopback_login(&s, &p, p.command(&[])).await).await;
    let r0 = refresh_token_of(&p);
    let tokens_before = s.count("access_tokens").await;

    p.make_stale();
    s.clock.advance(5);
    let out = finish(p.non_interactive(&[]).spawn().unwrap()).await;
    let (second, claims) = credential(&s, &out).await;
    assert_ne!(second, first, "a new ID token");
    assert_eq!(claims["sub"], first_claims["sub"]);
    assert!(claims["iat"].as_i64() > first_claims["iat"].as_i64());
    let r1 = refresh_token_of(&p);
    assert_ne!(r1, r0, "the rotated refresh token is stored");
    assert_eq!(p.cache()["id_token"], second.as_str());
    assert_eq!(p.browser_urls().len(), 1, "no login");
    assert_eq!(
        s.count("access_tokens").await,
        tokens_before + 1,
        "one refresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_parallel_invocations_share_one_refresh() {
    let s = server().await;
    let p = Plugin::new(&s.issuer);
    let (first, _) = credential(&s, &loopback_login(&s, &p, p.command(&[])).await).await;
    let r0 = refresh_token_of(&p);
    let tokens_before = s.count("access_tokens").await;
    p.make_stale();
    s.clock.advance(5);

    let children: Vec<Child> = (0..10)
        .map(|_| p.non_interactive(&[]).spawn().unwrap())
        .collect();
    let mut tokens = Vec::new();
    for child in children {
        let (token, _) = credential(&s, &finish(child).await).await;
        tokens.push(token);
    }
    assert!(tokens.iter().all(|t| *t == tokens[0]), "all ten agree");
    assert_ne!(tokens[0], first, "and it is a refreshed token");
    assert_eq!(
        s.count("access_tokens").await,
        tokens_before + 1,
        "exactly one refresh reached the issuer"
    );
    let r1 = refresh_token_of(&p);
    assert_ne!(r1, r0);
    assert_eq!(p.browser_urls().len(), 1, "no login");

    // The stored successor is the family's live token: past the reuse interval it still
    // refreshes (a second rotation of r0 would have revoked the family).
    s.clock.advance(30);
    let r = reqwest::Client::new()
        .post(s.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", r1.as_str()),
            ("client_id", PUBLIC_CLIENT),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_interactive_without_a_cache_fails_with_a_clear_message() {
    let s = server().await;
    let p = Plugin::new(&s.issuer);
    let out = finish(p.non_interactive(&[]).spawn().unwrap()).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing on stdout");
    let err = stderr_of(&out);
    assert!(err.contains("non-interactively"), "{err}");
    assert!(err.contains("no cached token"), "{err}");
    assert!(p.browser_urls().is_empty(), "no login was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_logs_in_again_interactively_and_fails_clearly_otherwise() {
    let s = server().await;
    let p = Plugin::new(&s.issuer);
    let (first, _) = credential(&s, &loopback_login(&s, &p, p.command(&[])).await).await;

    p.make_stale();
    p.edit_cache(|v| v["refresh_token"] = "not-a-valid-refresh-token".into());
    let out = loopback_login(&s, &p, p.command(&[])).await;
    let (second, _) = credential(&s, &out).await;
    assert_ne!(second, first);
    assert!(
        stderr_of(&out).contains("invalid_grant"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(p.browser_urls().len(), 2, "a new login");

    p.make_stale();
    p.edit_cache(|v| v["refresh_token"] = "not-a-valid-refresh-token".into());
    let out = finish(p.non_interactive(&[]).spawn().unwrap()).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr_of(&out);
    assert!(err.contains("could not be refreshed"), "{err}");
    assert!(err.contains("invalid_grant"), "{err}");
    assert_eq!(p.browser_urls().len(), 2, "no login without a person");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_issuer_is_named_in_the_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    let p = Plugin::new(&issuer);
    let out = finish(p.command(&["--grant", "device"]).spawn().unwrap()).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("cannot reach the issuer at {issuer}")),
        "{err}"
    );
}

/// An https issuer with a private CA: without it the error says how to trust it; with
/// --certificate-authority, the plugin gets as far as showing a device code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_say_how_to_trust_the_ca_and_certificate_authority_fixes_them() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, telemetry) = (free(), free());
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: https://127.0.0.1:{port}\nstorage:\n  type: memory\nweb:\n  https: 127.0.0.1:{port}\n  tlsCert: {}\n  tlsKey: {}\ntelemetry:\n  http: 127.0.0.1:{telemetry}\nstaticClients:\n- id: {PUBLIC_CLIENT}\n  name: kubectl\n  public: true\n  redirectURIs: ['{PUBLIC_REDIRECT}']\n",
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let _server = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let issuer = format!("https://127.0.0.1:{port}");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !trusting
        .get(format!("{issuer}/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the https issuer never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let p = Plugin::new(&issuer);
    let out = finish(p.command(&["--grant", "device"]).spawn().unwrap()).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr_of(&out);
    assert!(err.contains("TLS"), "{err}");
    assert!(err.contains("--certificate-authority FILE"), "{err}");
    assert!(err.contains("SSL_CERT_FILE"), "{err}");

    let mut child = p
        .command(&["--grant", "device", "--certificate-authority"])
        .arg(&cert_file)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let shown = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            if line.contains("enter the code: ") {
                return true;
            }
            assert!(!line.contains("TLS"), "{line}");
        }
        false
    })
    .await
    .expect("the plugin got past TLS");
    assert!(shown, "a device code is shown once the CA is trusted");
    child.kill().await.unwrap();
}
