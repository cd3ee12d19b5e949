//! Config reload in the real binary: SIGHUP and `--watch-config` apply a new file without
//! dropping a request; a broken file changes nothing; settings that need a restart are named.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{signal, wait_ready, Log, Running, BIN};
use common::server::*;

const LEAVING_SECRET: &str = "leaving-secret-with-enough-entropy";
const ROTATING_OLD: &str = "rotating-secret-1-with-enough-entropy";
const ROTATING_NEW: &str = "rotating-secret-2-with-enough-entropy";
const JOINING_SECRET: &str = "joining-secret-with-enough-entropy";

/// A client_credentials client entry for `staticClients`.
fn robot(id: &str, secret: &str) -> String {
    format!("- id: {id}\n  secret: {secret}\n  grantTypes: [client_credentials]\n")
}

struct Server {
    process: Running,
    log: Log,
    site: Site,
    config: PathBuf,
    port: u16,
    telemetry: u16,
    db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// `lanyard serve` on a config with alice, the public client kubectl, the robot client and
    /// `clients` (more `staticClients` entries) and `extra` (more top-level YAML).
    async fn start(clients: &str, extra: &str, args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (port, telemetry) = (free_port(), free_port());
        let db = dir.path().join("lanyard.db");
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, config_yaml(port, telemetry, &db, clients, extra)).unwrap();
        let mut process = Running(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&config)
                .args(args)
                .env_remove("RUST_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let log = Log::capture(&mut process);
        let site = Site::new(format!("http://127.0.0.1:{port}"));
        wait_ready(&site.url("/healthz")).await;
        Server {
            process,
            log,
            site,
            config,
            port,
            telemetry,
            db,
            _dir: dir,
        }
    }

    /// The config this server started from, with other `clients` and `extra`.
    fn config_with(&self, clients: &str, extra: &str) -> String {
        config_yaml(self.port, self.telemetry, &self.db, clients, extra)
    }

    /// Replaces the config file the way a careful operator (or Kubernetes) does: the new
    /// content appears at once.
    fn rewrite(&self, text: &str) {
        let next = self.config.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, &self.config).unwrap();
    }

    fn hangup(&self) {
        signal(&self.process, "HUP");
    }

    /// The status of a client_credentials token request.
    async fn client_credentials(&self, id: &str, secret: &str) -> u16 {
        reqwest::Client::new()
            .post(self.site.url("/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.telemetry))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn assert_reload_counts(&self, metrics: &str, success: u32, failure: u32) {
        for (result, n) in [("success", success), ("failure", failure)] {
            let line = format!("lanyard_config_reloads_total{{result=\"{result}\"}} {n}\n");
            assert!(metrics.contains(&line), "missing {line}in:\n{metrics}");
        }
    }
}

fn config_yaml(port: u16, telemetry: u16, db: &Path, clients: &str, extra: &str) -> String {
    format!(
        r#"issuer: http://127.0.0.1:{port}
storage:
  type: sqlite3
  config:
    file: {db}
web:
  http: 127.0.0.1:{port}
telemetry:
  http: 127.0.0.1:{telemetry}
logger:
  level: info
keys:
  encryptionKey: {ENCRYPTION_KEY}
oauth2:
  skipApprovalScreen: true
enablePasswordDB: true
staticPasswords:
- email: alice@example.com
  hash: "{ALICE_HASH}"
  username: alice
  userID: {ALICE_USER_ID}
  groups: [devs]
staticClients:
- id: {PUBLIC_CLIENT}
  public: true
  redirectURIs: ['{PUBLIC_REDIRECT}']
{robot}{clients}{extra}"#,
        db = db.display(),
        robot = robot(ROBOT_CLIENT, ROBOT_SECRET),
    )
}

/// What one load task saw: requests that succeeded, and a description of each failure.
#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
}

#[derive(Clone, Copy)]
enum Load {
    /// client_credentials for the robot client, whose entry never changes.
    Token,
    Discovery,
    /// A whole authorization code login with kubectl and alice, then the code redeemed.
    Login,
}

async fn load(site: Arc<Site>, what: Load, stop: Arc<AtomicBool>) -> Tally {
    let http = reqwest::Client::new();
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let outcome = match what {
            Load::Token => http
                .post(site.url("/token"))
                .basic_auth(ROBOT_CLIENT, Some(ROBOT_SECRET))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .map(|r| r.status().as_u16()),
            Load::Discovery => http
                .get(site.url("/.well-known/openid-configuration"))
                .send()
                .await
                .map(|r| r.status().as_u16()),
            Load::Login => {
                // The helpers assert every step of the flow; a failed step ends the task
                // with a panic, which the test reports.
                let req = AuthRequest::public();
                let code = site.code_for(&req).await;
                Ok(site.redeem(&req, &code).await.status().as_u16())
            }
        };
        match outcome {
            Ok(200) => tally.ok += 1,
            other => tally.failures.push(format!("{other:?}")),
        }
    }
    tally
}

/// Several tasks keep tokens, discovery and logins going while the file changes and SIGHUP
/// arrives four times. Clients present in both generations never see a failure; the new
/// client works from the first reload on, the removed one and the old secret stop working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_fail_no_request_of_a_client_that_stays() {
    let before = format!(
        "{}{}",
        robot("leaving", LEAVING_SECRET),
        robot("rotating", ROTATING_OLD)
    );
    let after = format!(
        "{}{}",
        robot("rotating", ROTATING_NEW),
        robot("joining", JOINING_SECRET)
    );
    let s = Server::start(&before, "", &[]).await;
    assert_eq!(s.client_credentials("leaving", LEAVING_SECRET).await, 200);
    assert_eq!(s.client_credentials("rotating", ROTATING_OLD).await, 200);
    assert_eq!(s.client_credentials("joining", JOINING_SECRET).await, 401);

    let stop = Arc::new(AtomicBool::new(false));
    let site = Arc::new(Site::new(s.site.issuer.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for what in [
        Load::Token,
        Load::Token,
        Load::Token,
        Load::Discovery,
        Load::Login,
    ] {
        tasks.spawn(load(site.clone(), what, stop.clone()));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    s.rewrite(&s.config_with(&after, ""));
    s.hangup();
    s.log.wait_for("config reloaded", 1).await;
    assert_eq!(s.client_credentials("joining", JOINING_SECRET).await, 200);
    assert_eq!(s.client_credentials("leaving", LEAVING_SECRET).await, 401);
    assert_eq!(s.client_credentials("rotating", ROTATING_OLD).await, 401);
    assert_eq!(s.client_credentials("rotating", ROTATING_NEW).await, 200);

    for n in 2..=4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        s.hangup();
        s.log.wait_for("config reloaded", n).await;
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    while let Some(done) = tasks.join_next().await {
        let tally = done.expect("a load task failed a step of its flow");
        assert!(tally.failures.is_empty(), "failed requests: {tally:?}");
        assert!(tally.ok > 0, "a load task got nothing done");
        served += tally.ok;
    }
    assert!(served > 20, "too little load to mean anything: {served}");
    s.assert_reload_counts(&s.metrics().await, 4, 0);
    assert_eq!(s.client_credentials("joining", JOINING_SECRET).await, 200);
}

/// What `lanyard check-config` says about `path`, one error per line.
fn check_config_errors(path: &Path) -> Vec<String> {
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the file was meant to be invalid");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A file that is not YAML, then one with errors in its content: each is refused with the
/// errors check-config prints, and the server goes on with the config it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_with_its_errors_and_the_old_one_keeps_serving() {
    let s = Server::start("", "", &[]).await;
    let mut failures = 0;
    let unknown_key = format!(
        "{}- id: typo\n  secrett: x\n",
        robot("joining", JOINING_SECRET)
    );
    for broken in [
        "issuer: [\n".to_string(),
        s.config_with(&unknown_key, "expiry:\n  idTokens: soon\n"),
    ] {
        s.rewrite(&broken);
        let errors = check_config_errors(&s.config);
        assert!(!errors.is_empty());
        s.hangup();
        failures += 1;
        s.log.wait_for("config reload failed", failures).await;
        let log = s.log.text();
        for error in &errors {
            assert!(log.contains(error.as_str()), "{error:?} not logged:\n{log}");
        }
        assert_eq!(s.client_credentials(ROBOT_CLIENT, ROBOT_SECRET).await, 200);
        assert_eq!(s.client_credentials("joining", JOINING_SECRET).await, 401);
    }
    let log = s.log.text();
    assert!(log.contains("secrett") && log.contains("idTokens"), "{log}");
    assert_eq!(s.log.count("config reloaded"), 0);
    s.assert_reload_counts(&s.metrics().await, 0, 2);

    // Fixed, the same file applies.
    s.rewrite(&s.config_with(&robot("joining", JOINING_SECRET), ""));
    s.hangup();
    s.log.wait_for("config reloaded", 1).await;
    assert_eq!(s.client_credentials("joining", JOINING_SECRET).await, 200);
}

fn kubernetes(clusters: &[(&str, &str)]) -> String {
    use base64::Engine;
    let cert = rcgen::generate_simple_self_signed(vec!["kubernetes".to_string()]).unwrap();
    let ca = base64::engine::general_purpose::STANDARD.encode(cert.cert.pem());
    let mut yaml = "kubernetes:\n  clusters:\n".to_string();
    for (name, display) in clusters {
        yaml.push_str(&format!(
            "  - name: {name}\n    displayName: {display}\n    server: https://{name}.k8s.example.com:6443\n    certificateAuthorityData: {ca}\n    clientID: {PUBLIC_CLIENT}\n"
        ));
    }
    yaml
}

/// The kubeconfig page shows the clusters of the config in effect: a cluster added to the
/// file appears after SIGHUP, one removed disappears, and the signed-in session carries over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubeconfig_page_shows_the_kubernetes_section_of_the_reloaded_config() {
    let s = Server::start("", &kubernetes(&[("prod", "Production East")]), &[]).await;
    let browser = TestServer::new_browser();
    let page = browser.get(s.site.url("/kubeconfig")).send().await.unwrap();
    assert_eq!(page.status(), 303, "an unknown browser signs in first");
    let auth = browser
        .get(s.site.absolute(&location(&page)))
        .send()
        .await
        .unwrap();
    let back = s.site.sign_in_from(&browser, &auth).await;
    assert_eq!(back.status(), 303);
    let kubeconfig = |browser: reqwest::Client| {
        let url = s.site.url("/kubeconfig");
        async move {
            let r = browser.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let html = kubeconfig(browser.clone()).await;
    assert!(html.contains("Production East"), "{html}");
    assert!(!html.contains("Staging West"));

    s.rewrite(&s.config_with("", &kubernetes(&[("staging", "Staging West")])));
    s.hangup();
    s.log.wait_for("config reloaded", 1).await;
    let html = kubeconfig(browser).await;
    assert!(html.contains("Staging West"), "{html}");
    assert!(!html.contains("Production East"), "{html}");
}

/// `--watch-config` notices a changed file without a signal. Settings that need a restart
/// are named in a warning and keep their running values; the rest applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_applies_on_change_and_names_settings_that_need_a_restart() {
    let s = Server::start("", "", &["--watch-config"]).await;
    let other_port = free_port();
    let changed = s
        .config_with(&robot("joining", JOINING_SECRET), "")
        .replace(
            &format!("http: 127.0.0.1:{}\n", s.port),
            &format!("http: 127.0.0.1:{other_port}\n"),
        )
        .replace("level: info", "level: debug");
    s.rewrite(&changed);
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.client_credentials("joining", JOINING_SECRET).await != 200 {
        assert!(
            Instant::now() < deadline,
            "never reloaded:\n{}",
            s.log.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.log.wait_for("need a restart", 1).await;
    let warning = s
        .log
        .text()
        .lines()
        .find(|l| l.contains("need a restart"))
        .unwrap()
        .to_string();
    assert!(warning.contains("web, logger"), "{warning}");
    assert!(!warning.contains("staticClients"), "{warning}");
    // Still on the old port, not the new one.
    assert!(reqwest::get(s.site.url("/healthz")).await.is_ok());
    assert!(
        reqwest::get(format!("http://127.0.0.1:{other_port}/healthz"))
            .await
            .is_err()
    );
    // An unchanged file is not reloaded again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(s.log.count("config reloaded"), 1);
}
