//! The real `lanyard` binary: the embedded default, check-config, logs, TLS and shutdown.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{terminate, wait_ready, Running, BIN};
use common::server::*;

/// `lanyard serve` with no config: port 5556, SQLite under ./lanyard-data, an admin whose
/// password is printed once, and the example-app client, all working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_default_serves_a_working_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Running(
        Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env_remove("LANYARD_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut password = None;
    let mut line = String::new();
    while password.is_none() && stdout.read_line(&mut line).unwrap() > 0 {
        if let Some(rest) = line.split("with password ").nth(1) {
            password = Some(rest.trim().to_string());
        }
        line.clear();
    }
    let password = password.expect("the admin password is printed on first start");
    let issuer = "http://127.0.0.1:5556";
    wait_ready(&format!("{issuer}/healthz")).await;
    assert!(dir.path().join("lanyard-data/lanyard.db").exists());
    // What lanyard creates is the owner's alone: the data directory, the database with its
    // WAL and shared-memory files, and the generated key-encryption key.
    assert_eq!(mode_of(&dir.path().join("lanyard-data")), 0o700);
    for file in [
        "lanyard.db",
        "lanyard.db-wal",
        "lanyard.db-shm",
        "encryption-key",
    ] {
        assert_eq!(
            mode_of(&dir.path().join("lanyard-data").join(file)),
            0o600,
            "{file}"
        );
    }
    assert_eq!(
        reqwest::get("http://127.0.0.1:5558/healthz/ready")
            .await
            .unwrap()
            .status(),
        200
    );

    // Log in with example-app exactly as Dex's example app would.
    let site = Site::new(issuer);
    let req = AuthRequest {
        client_id: "example-app".into(),
        redirect_uri: "http://127.0.0.1:5555/callback".into(),
        scope: "openid email groups".into(),
        ..AuthRequest::public()
    };
    let code = site.code_for_as(&req, "admin@example.com", &password).await;
    let r = site.redeem(&req, &code).await;
    assert_eq!(r.status(), 200);
    let tokens: serde_json::Value = r.json().await.unwrap();
    assert!(tokens["id_token"].is_string());
    let metrics = reqwest::get("http://127.0.0.1:5558/metrics")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "lanyard_http_requests_total{route=\"/token\",method=\"POST\",status=\"200\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("lanyard_build_info"));
    // A scan of unknown paths must not mint a label per path.
    let _ = reqwest::get(format!("{issuer}/wp-admin/setup.php"))
        .await
        .unwrap();
    let metrics = reqwest::get("http://127.0.0.1:5558/metrics")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "lanyard_logins_total{connector=\"local\",result=\"success\"} 1",
        "lanyard_tokens_issued_total{grant=\"authorization_code\",client=\"example-app\"} 1",
        "lanyard_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "lanyard_http_request_duration_seconds_count{route=\"/token\"} 1",
        "lanyard_storage_errors_total 0",
        "lanyard_signing_key_rotations_total 0",
        "lanyard_signing_key_age_seconds ",
        // The embedded default's keys.rotationPeriod: 6h.
        "lanyard_signing_key_rotation_period_seconds 21600",
        "lanyard_config_reloads_total{result=\"success\"} 0",
        "lanyard_config_reloads_total{result=\"failure\"} 0",
    ] {
        assert!(metrics.contains(expected), "missing {expected}\n{metrics}");
    }
    assert!(!metrics.contains("wp-admin"));

    // SIGHUP reloads a config file; the embedded default has none, and must not die of it.
    common::process::signal(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP ended the server"
    );
    wait_ready(&format!("{issuer}/healthz")).await;

    let status = terminate(&mut child);
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("development"),
        "warns that the generated key is for development"
    );
    assert!(stderr.contains("nothing to reload"), "{stderr}");
    for secret in [
        password.as_str(),
        code.as_str(),
        tokens["access_token"].as_str().unwrap(),
        tokens["id_token"].as_str().unwrap(),
    ] {
        assert!(!stderr.contains(secret), "a secret reached the log");
    }

    // Second start: the password is not printed again and the data is reused.
    let mut child = Running(
        Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{issuer}/healthz")).await;
    terminate(&mut child);
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        !out.contains("with password"),
        "the password is shown once only"
    );
}

/// Debug logging through a whole flow never prints a password, code, token or client secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_hold_no_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"issuer: {issuer}
storage:
  type: sqlite3
  config:
    file: {db}
web:
  http: 127.0.0.1:{port}
logger:
  level: debug
  format: json
keys:
  encryptionKey: {ENCRYPTION_KEY}
enablePasswordDB: true
staticPasswords:
- email: alice@example.com
  hash: "{ALICE_HASH}"
  username: alice
  userID: {ALICE_USER_ID}
staticClients:
- id: {WEB_CLIENT}
  secret: {WEB_SECRET}
  redirectURIs: ['{WEB_REDIRECT}']
"#,
            db = dir.path().join("l.db").display()
        ),
    )
    .unwrap();
    let mut child = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("{issuer}/healthz")).await;
    let site = Site::new(issuer.clone());
    let req = AuthRequest::confidential();
    let browser = TestServer::new_browser();
    let (login_url, html) = site.open_login(&browser, &req).await;
    let csrf = hidden_field(&html, "csrf").unwrap();
    let resp = site
        .submit_login(
            &browser,
            &login_url,
            &html,
            "alice@example.com",
            ALICE_PASSWORD,
        )
        .await;
    assert_eq!(resp.status(), 303);
    let code = site.code_for(&req).await;
    let r = site.redeem(&req, &code).await;
    let tokens: serde_json::Value = r.json().await.unwrap();
    terminate(&mut child);
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.contains("\"request_id\""),
        "JSON logs carry request ids"
    );
    for secret in [
        ALICE_PASSWORD,
        WEB_SECRET,
        csrf.as_str(),
        code.as_str(),
        tokens["access_token"].as_str().unwrap(),
        tokens["id_token"].as_str().unwrap(),
    ] {
        assert!(
            !logs.contains(secret),
            "secret {secret:.6}… reached the log"
        );
    }
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn a_database_file_others_can_read_is_warned_about_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/sub/m.db");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: http://127.0.0.1:5556\nstorage:\n  type: sqlite3\n  config:\n    file: {}\nweb:\n  http: 127.0.0.1:5556\n",
            db.display()
        ),
    )
    .unwrap();
    let migrate = || {
        let out = Command::new(BIN)
            .args(["migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = migrate();
    assert!(!stderr.contains("readable by group or others"), "{stderr}");
    assert_eq!(mode_of(&dir.path().join("data")), 0o700);
    assert_eq!(mode_of(&dir.path().join("data/sub")), 0o700);
    assert_eq!(mode_of(&db), 0o600);

    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = migrate();
    assert!(
        stderr.contains("readable by group or others") && stderr.contains("m.db"),
        "{stderr}"
    );
    // A file that exists keeps the mode its owner gave it.
    assert_eq!(mode_of(&db), 0o644);
}

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("m.db");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: http://127.0.0.1:5556\nstorage:\n  type: sqlite3\n  config:\n    file: {}\nweb:\n  http: 127.0.0.1:5556\n",
            db.display()
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let out = Command::new(BIN)
            .args(["migrate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(db.exists());
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "issuer: http://x\nstorage:\n  type: etcd\n").unwrap();
    let out = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("storage.type"));
}

#[test]
fn check_config_prints_ok_or_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "issuer: http://127.0.0.1:5556\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:5556\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "issuer: not a url\nstorage:\n  type: mysql\nweb:\n  htp: 127.0.0.1:5556\ntelemetry:\n  http: 127.0.0.1:65536\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("storage.type"), "{text}");
    assert!(text.contains("postgres"), "{text}");
    assert!(
        text.contains("telemetry.http: `127.0.0.1:65536` has an invalid port"),
        "{text}"
    );
}

/// `web.https` with a certificate: the issuer answers over TLS (rustls), on a host name as Dex
/// listens on one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: https://localhost:{port}\nstorage:\n  type: memory\nweb:\n  https: localhost:{port}\n  tlsCert: {}\n  tlsKey: {}\n",
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    let mut child = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/.well-known/openid-configuration");
    let deadline = Instant::now() + Duration::from_secs(30);
    let doc: serde_json::Value = loop {
        match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => break r.json().await.unwrap(),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("HTTPS never answered: {other:?}"),
        }
    };
    assert_eq!(doc["issuer"], format!("https://localhost:{port}"));
    assert!(terminate(&mut child).success());
}

/// A server on memory storage logging JSON at `level`, with the proxies it trusts for
/// `X-Forwarded-For`; its issuer and log.
async fn logging_server(
    level: &str,
    trusted_proxies: &str,
) -> (String, Running, common::process::Log, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let issuer = format!("http://127.0.0.1:{port}");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: {issuer}\nstorage:\n  type: memory\nweb:\n  http: 127.0.0.1:{port}\n  clientRemoteIP:\n    header: X-Forwarded-For\n    trustedProxies: [{trusted_proxies}]\nlogger:\n  level: {level}\n  format: json\n"
        ),
    )
    .unwrap();
    let mut child = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = common::process::Log::capture(&mut child);
    wait_ready(&format!("{issuer}/healthz")).await;
    (issuer, child, log, dir)
}

/// The JSON log lines of a server's whole log.
fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

/// The JSON request line of one request to a server run with `trusted_proxies` under
/// `web.clientRemoteIP`: its `span` object (where every line of the request has its
/// fields), and the whole log.
async fn request_span_behind(
    trusted_proxies: &str,
    request_id: &str,
) -> (serde_json::Value, String) {
    let (issuer, mut child, log, _dir) = logging_server("info", trusted_proxies).await;
    let r = reqwest::Client::new()
        .get(format!("{issuer}/userinfo"))
        .header("X-Request-Id", request_id)
        // A client that claims to be someone else, behind a proxy that adds 203.0.113.7.
        .header("X-Forwarded-For", "198.51.100.66, 203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], request_id);
    log.wait_for(request_id, 1).await;
    terminate(&mut child);
    let text = log.text();
    let line = json_lines(&text)
        .into_iter()
        .find(|l| l["message"] == "request" && l["span"]["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no request line for {request_id}:\n{text}"));
    (line["span"].clone(), text)
}

/// Request lines name the client: the forwarded address when the peer is a trusted proxy
/// (the nearest hop no trusted proxy vouches for), the TCP peer otherwise, never a header
/// anyone can send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_carry_the_client_address_and_trust_forwarding_only_from_proxies() {
    let (span, _) = request_span_behind("127.0.0.1/32", "req-via-proxy").await;
    assert_eq!(span["client_addr"], "203.0.113.7", "{span}");
    assert_eq!(span["route"], "/userinfo");

    let (span, log) = request_span_behind("10.0.0.0/8", "req-direct").await;
    assert_eq!(span["client_addr"], "127.0.0.1", "{span}");
    assert!(
        !log.contains("203.0.113.7") && !log.contains("198.51.100.66"),
        "{log}"
    );
}

/// Discovery and JWKS, which kube-apiserver and every relying party poll, get their request
/// line at debug, not info; the token endpoint's is at info. Both keep their request ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_jwks_are_logged_at_debug_and_the_token_endpoint_at_info() {
    for level in ["info", "debug"] {
        let (issuer, mut child, log, _dir) = logging_server(level, "127.0.0.1/32").await;
        let http = reqwest::Client::new();
        for (path, id) in [
            ("/keys", format!("keys-{level}")),
            (
                "/.well-known/openid-configuration",
                format!("discovery-{level}"),
            ),
        ] {
            let r = http
                .get(format!("{issuer}{path}"))
                .header("X-Request-Id", &id)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["x-request-id"], id.as_str());
        }
        // Without a request id, one is made and sent back.
        let r = http.get(format!("{issuer}/keys")).send().await.unwrap();
        let made = r.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(made.len(), 36, "{made}");
        let token_id = format!("token-{level}");
        let r = http
            .post(format!("{issuer}/token"))
            .header("X-Request-Id", &token_id)
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(status >= 400, "{status}");
        log.wait_for(&token_id, 1).await;
        terminate(&mut child);
        let text = log.text();
        let request_line = |id: &str| {
            json_lines(&text)
                .into_iter()
                .find(|l| l["message"] == "request" && l["span"]["request_id"] == id)
        };
        let token = request_line(&token_id).unwrap_or_else(|| panic!("no /token line:\n{text}"));
        assert_eq!(token["level"], "INFO", "{token}");
        assert_eq!(token["status"], status, "{token}");
        for id in [format!("keys-{level}"), format!("discovery-{level}"), made] {
            match (level, request_line(&id)) {
                ("info", None) => {}
                ("debug", Some(line)) => assert_eq!(line["level"], "DEBUG", "{line}"),
                (_, line) => panic!("at {level}, the line of {id}: {line:?}\n{text}"),
            }
        }
    }
}

/// A storage failure is logged once, on a line that carries the request's id, and counted
/// once, whichever layer (the token endpoint's JSON error or the browser flow's page) met it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_failure_is_logged_once_with_its_request_id_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (port, telemetry) = (free_port(), free_port());
    let issuer = format!("http://127.0.0.1:{port}");
    let db = dir.path().join("lanyard.db");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "issuer: {issuer}\nstorage:\n  type: sqlite3\n  config:\n    file: {}\n\
             web:\n  http: 127.0.0.1:{port}\ntelemetry:\n  http: 127.0.0.1:{telemetry}\n\
             logger:\n  level: info\n  format: json\nstaticClients:\n- id: cli\n  name: CLI\n  \
             public: true\n  redirectURIs: ['http://127.0.0.1:5555/callback']\nenablePasswordDB: true\n",
            db.display()
        ),
    )
    .unwrap();
    let mut child = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = common::process::Log::capture(&mut child);
    wait_ready(&format!("{issuer}/healthz")).await;

    // The tables a code redemption and a login start write to are gone.
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&db);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    for table in ["auth_codes", "auth_requests"] {
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = http
        .post(format!("{issuer}/token"))
        .header("X-Request-Id", "req-storage-token")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", "a-code-that-cannot-be-looked-up"),
            ("client_id", "cli"),
            ("redirect_uri", "http://127.0.0.1:5555/callback"),
            ("code_verifier", &pkce_verifier()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 503);
    let body: serde_json::Value = token.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    let request = AuthRequest {
        client_id: "cli".into(),
        redirect_uri: "http://127.0.0.1:5555/callback".into(),
        ..AuthRequest::public()
    };
    let page = http
        .get(format!("{issuer}/auth"))
        .header("X-Request-Id", "req-storage-page")
        .query(&request.query())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 503, "{:?}", page.headers().get("location"));

    for id in ["req-storage-token", "req-storage-page"] {
        log.wait_for(id, 2).await;
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{telemetry}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    terminate(&mut child);
    assert!(
        metrics.contains("lanyard_storage_errors_total 2\n"),
        "two failed requests, two storage errors:\n{metrics}"
    );
    let text = log.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for id in ["req-storage-token", "req-storage-page"] {
        let faults: Vec<_> = lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id && l["level"] == "ERROR")
            .collect();
        assert_eq!(faults.len(), 1, "one error line for {id}:\n{text}");
        assert!(
            faults[0].to_string().contains("no such table"),
            "the line says what failed: {}",
            faults[0]
        );
    }
}
