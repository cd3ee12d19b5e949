//! The fault suite: the real `lanyard` binary against real databases while things break.
//!
//! - PostgreSQL stops (a crash, then a fast shutdown) under load: token requests get 503
//!   `temporarily_unavailable` within `storage.config.connectionTimeout` (2s here) plus slack,
//!   discovery and JWKS are served from memory, /healthz/ready stays 200 and says the storage
//!   is unreachable, and lanyard recovers without a restart.
//! - `kill -9` during key rotations and refreshes: no key lost or duplicated, no refresh
//!   family forked.
//! - Two processes on one database with rotations forced: every token verifies against the
//!   JWKS of both.
//! - SIGTERM under load: in-flight requests finish, new connections are refused, exit 0
//!   within the grace period.
//! - 100,000 abandoned logins: rows and memory stay bounded and housekeeping removes them.
//!
//! The tests run one at a time (they load the machine, and their timing bounds assume they
//! have it): each holds [`SERIAL`].

use crate::common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::postgres::fresh_database;
use common::process::{signal, wait_exit, wait_ready, Running};
use common::server::free_port;
use common::server::{
    hidden_field, query_param, AuthRequest, Site, ALICE_HASH, ALICE_PASSWORD, ALICE_USER_ID,
    ENCRYPTION_KEY, PUBLIC_CLIENT, PUBLIC_REDIRECT, ROBOT_CLIENT, ROBOT_SECRET, TRUST_LOCAL_PROXY,
    WEB_CLIENT, WEB_REDIRECT, WEB_SECRET,
};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

static SERIAL: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(|| tokio::sync::Mutex::new(()));

// ---------------------------------------------------------------------------------------
// A lanyard process

/// The parts of a config that differ between tests.
#[derive(Default)]
struct Conf<'a> {
    /// The whole `storage:` section.
    storage: &'a str,
    /// Lines under `keys:` (indented by two spaces).
    keys: &'a str,
    /// Lines under `expiry:`.
    expiry: &'a str,
    /// More top-level YAML.
    extra: &'a str,
    /// Lines under `web:` (indented by two spaces).
    web: &'a str,
    /// More `staticPasswords` entries.
    users: &'a str,
    /// `logger.level`; default info.
    log_level: Option<&'a str>,
}

fn config_yaml(port: u16, telemetry: u16, c: &Conf) -> String {
    format!(
        r#"issuer: http://127.0.0.1:{port}
{storage}web:
  http: 127.0.0.1:{port}
{web}telemetry:
  http: 127.0.0.1:{telemetry}
logger:
  level: {log_level}
keys:
  encryptionKey: {ENCRYPTION_KEY}
{keys}expiry:
{expiry}oauth2:
  skipApprovalScreen: true
enablePasswordDB: true
staticPasswords:
- email: alice@example.com
  hash: "{ALICE_HASH}"
  username: alice
  userID: {ALICE_USER_ID}
  groups: [devs]
{users}staticClients:
- id: {PUBLIC_CLIENT}
  name: kubectl
  public: true
  redirectURIs: ['{PUBLIC_REDIRECT}']
- id: {WEB_CLIENT}
  name: Web App
  secret: {WEB_SECRET}
  redirectURIs: ['{WEB_REDIRECT}']
- id: {ROBOT_CLIENT}
  name: Deploy robot
  secret: {ROBOT_SECRET}
  grantTypes: [client_credentials]
{extra}"#,
        storage = c.storage,
        keys = c.keys,
        expiry = c.expiry,
        extra = c.extra,
        web = c.web,
        users = c.users,
        log_level = c.log_level.unwrap_or("info"),
    )
}

/// A running `lanyard serve` whose log goes to a file (printed when the test fails).
struct Lanyard {
    process: Running,
    site: Site,
    port: u16,
    telemetry: u16,
    config: PathBuf,
    log: PathBuf,
}

impl Lanyard {
    /// Writes `<name>.yaml` into `dir`, starts lanyard on free ports and waits until it serves.
    async fn start(dir: &Path, name: &str, conf: &Conf<'_>) -> Lanyard {
        let (port, telemetry) = (free_port(), free_port());
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, config_yaml(port, telemetry, conf)).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut lanyard = Lanyard {
            process: spawn(&config, &log),
            site: Site::new(format!("http://127.0.0.1:{port}")),
            port,
            telemetry,
            config,
            log,
        };
        lanyard.wait_ready().await;
        lanyard
    }

    async fn wait_ready(&mut self) {
        wait_ready(&self.site.url("/healthz")).await;
        assert!(
            self.process.try_wait().unwrap().is_none(),
            "lanyard exited during start"
        );
    }

    /// Starts the same config again (after a kill) and waits until it serves.
    async fn restart(&mut self) {
        assert!(self.process.try_wait().unwrap().is_some(), "still running");
        self.process = spawn(&self.config, &self.log);
        self.wait_ready().await;
    }

    fn kill9(&mut self) {
        self.process.kill().unwrap();
        self.process.wait().unwrap();
    }

    fn pid(&self) -> u32 {
        self.process.id()
    }

    fn alive(&mut self) -> bool {
        self.process.try_wait().unwrap().is_none()
    }

    /// Resident memory (VmRSS) in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// User and system CPU time so far.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ is 100 on Linux.
        Duration::from_millis(ticks * 10)
    }

    fn telemetry_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.telemetry)
    }
}

impl Drop for Lanyard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {}:", self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn spawn(config: &Path, log: &Path) -> Running {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(config.parent().unwrap())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

// ---------------------------------------------------------------------------------------
// Tokens and keys seen from outside

/// A client for the protocol endpoints; every request has a hard limit, so a hang fails the
/// test instead of stalling it.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The key lanyard stores an access or refresh token under.
fn token_key(token: &str) -> String {
    lanyard::oidc::secrets::secret_token_key(token)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Signs alice in with the public client and redeems the code: a new refresh family.
async fn login(site: &Site) -> Value {
    let req = AuthRequest::public();
    let code = site.code_for(&req).await;
    let r = site.redeem(&req, &code).await;
    assert_eq!(r.status(), 200);
    let tokens: Value = r.json().await.unwrap();
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    tokens
}

/// A new refresh family: its first refresh token.
async fn new_family(site: &Site) -> String {
    login(site).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// One answer from /token.
struct TokenAnswer {
    status: u16,
    body: Value,
    started: Instant,
    took: Duration,
}

impl TokenAnswer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }
    fn field(&self, name: &str) -> Option<String> {
        self.body[name].as_str().map(str::to_string)
    }
}

async fn post_token(
    http: &reqwest::Client,
    site: &Site,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> Result<TokenAnswer, reqwest::Error> {
    let started = Instant::now();
    let mut post = http.post(site.url("/token")).form(form);
    if let Some((id, secret)) = basic {
        post = post.basic_auth(id, Some(secret));
    }
    let r = post.send().await?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Ok(TokenAnswer {
        status,
        body,
        started,
        took: started.elapsed(),
    })
}

async fn refresh(
    http: &reqwest::Client,
    site: &Site,
    token: &str,
) -> Result<TokenAnswer, reqwest::Error> {
    post_token(
        http,
        site,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", PUBLIC_CLIENT),
        ],
        None,
    )
    .await
}

fn kid_of(jwt: &str) -> String {
    jsonwebtoken::decode_header(jwt)
        .unwrap()
        .kid
        .expect("ID tokens carry a kid")
}

/// Verifies an RS256 JWT's signature (and expiry) with the JWK of its kid in `jwks`.
fn verify(jwt: &str, jwks: &Value) -> Result<(), String> {
    let kid = kid_of(jwt);
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let key = jsonwebtoken::DecodingKey::from_rsa_components(
        jwk["n"].as_str().unwrap(),
        jwk["e"].as_str().unwrap(),
    )
    .map_err(|e| e.to_string())?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map(|_| ())
        .map_err(|e| format!("kid {kid}: {e}"))
}

/// GET /keys: the document and its max-age.
async fn jwks(http: &reqwest::Client, site: &Site) -> (Value, Duration) {
    let r = http.get(site.url("/keys")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let max_age = r
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("max-age=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("JWKS has a max-age");
    (r.json().await.unwrap(), Duration::from_secs(max_age))
}

fn kids(jwks: &Value) -> HashSet<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// The `storage:` section for a database on the machine's PostgreSQL. TLS is off: on
/// loopback it would only add CPU time (a debug build's rustls is slow) to what is measured.
fn postgres_storage(url: &str) -> String {
    format!("storage:\n  type: postgres\n  config:\n    connectionString: {url}?sslmode=disable\n")
}

fn sqlite_storage(file: &Path) -> String {
    format!(
        "storage:\n  type: sqlite3\n  config:\n    file: {}\n",
        file.display()
    )
}

// ---------------------------------------------------------------------------------------
// The database, read directly

async fn pg(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap()
}

#[derive(Debug, Clone)]
struct KeyRow {
    kid: String,
    successor_of: String,
    created_at: i64,
    sign_from: i64,
}

async fn key_rows(url: &str) -> Vec<KeyRow> {
    let mut c = pg(url).await;
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT kid, successor_of, created_at, sign_from FROM signing_keys ORDER BY sign_from, kid",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(kid, successor_of, created_at, sign_from)| KeyRow {
            kid,
            successor_of,
            created_at,
            sign_from,
        })
        .collect()
}

/// Nothing is pruned in these tests (ID tokens live an hour), so the stored keys must form
/// one chain from the first key: each the successor of the one before, published at least
/// `publish_ahead` before it signs, signing at least `rotation` after its predecessor.
fn assert_one_key_chain(rows: &[KeyRow], rotation: i64, publish_ahead: i64) {
    assert!(!rows.is_empty());
    assert_eq!(rows[0].successor_of, "", "the first key has no predecessor");
    for pair in rows.windows(2) {
        let (before, key) = (&pair[0], &pair[1]);
        assert_eq!(
            key.successor_of, before.kid,
            "keys do not form one chain: {rows:#?}"
        );
        assert!(key.sign_from >= before.sign_from + rotation, "{rows:#?}");
        assert!(
            key.sign_from >= key.created_at + publish_ahead,
            "{} signs before it was published for publishAhead: {rows:#?}",
            key.kid
        );
    }
    let unique: HashSet<&str> = rows.iter().map(|r| r.kid.as_str()).collect();
    assert_eq!(unique.len(), rows.len(), "a kid is stored twice");
}

/// Refresh families with more than one usable token: must be none.
async fn forked_families(url: &str) -> Vec<(String, i64)> {
    let mut c = pg(url).await;
    sqlx::query_as(
        "SELECT r.grant_id, COUNT(*) FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id \
         WHERE r.rotated_at IS NULL AND g.revoked_at IS NULL \
         GROUP BY r.grant_id HAVING COUNT(*) > 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

/// (grant id, rotated?, grant revoked?) of a refresh token.
async fn refresh_row(url: &str, token: &str) -> Option<(String, bool, bool)> {
    let mut c = pg(url).await;
    sqlx::query_as(
        "SELECT r.grant_id, r.rotated_at IS NOT NULL, g.revoked_at IS NOT NULL \
         FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.token_hash = $1",
    )
    .bind(token_key(token))
    .fetch_optional(&mut c)
    .await
    .unwrap()
}

/// Rows in `table` of a `sqlite://` or `postgres://` database.
async fn count_rows(url: &str, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(&sql).fetch_one(&mut c).await.unwrap()
    } else {
        let mut c = pg(url).await;
        sqlx::query_scalar(&sql).fetch_one(&mut c).await.unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// A PostgreSQL server of the test's own, to stop and start

/// The newest `/usr/lib/postgresql/<version>/bin` that has initdb, pg_ctl and postgres.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|b| bin.join(b).is_file())
                .then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// A PostgreSQL server in a temporary directory on a free port, with its socket in the same
/// directory: the machine's shared server is never stopped. As root it runs as `postgres`
/// (the server refuses to run as root).
struct DedicatedPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl DedicatedPostgres {
    /// `None` (skip) when the server binaries are missing, unless CI is set.
    fn start() -> Option<Self> {
        let Some(bin) = postgres_bin_dir() else {
            if std::env::var_os("CI").is_some() {
                panic!("no PostgreSQL server binaries under /usr/lib/postgresql and CI is set");
            }
            eprintln!("skipping: no PostgreSQL server binaries under /usr/lib/postgresql");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let uid = Command::new("id").arg("-u").output().unwrap();
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the data directory to postgres");
        }
        let pg = DedicatedPostgres {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        pg.pg_ctl_start();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // The postgres user may not be allowed into the test's working directory.
        c.current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.command(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            // fsync off: the test crashes the server process, not the machine, so the page
            // cache survives and recovery is right without it, and much faster.
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=40 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data();
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
    }

    /// `pg_ctl stop -m <mode>`: `immediate` is a crash (recovery on the next start), `fast`
    /// disconnects everyone and shuts down cleanly.
    fn stop(&self, mode: &str) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", mode, "-w", "stop"],
        );
    }

    fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for DedicatedPostgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .command("pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
    }
}

// ---------------------------------------------------------------------------------------
// 1. PostgreSQL stops under load

/// What one load request saw.
#[derive(Debug, Clone)]
struct Seen {
    what: &'static str,
    status: u16,
    error: String,
    started: Instant,
    finished: Instant,
    /// For a refresh: the token presented.
    presented: Option<String>,
    access: Option<String>,
    refresh: Option<String>,
}

/// How long a token request may take while PostgreSQL is down: the pool's acquire timeout
/// (`connectionTimeout: 2`) plus slack for a loaded 2-core machine.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
const OUTAGE_ANSWER_LIMIT: Duration = Duration::from_secs(2 + 6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gets_fast_503s_keeps_keys_served_and_recovers_without_restart() {
    let _serial = SERIAL.lock().await;
    let Some(pg_server) = tokio::task::spawn_blocking(DedicatedPostgres::start)
        .await
        .unwrap()
    else {
        return;
    };
    let mut admin = pg(&pg_server.admin_url()).await;
    sqlx::query("CREATE DATABASE lanyard")
        .execute(&mut admin)
        .await
        .unwrap();
    drop(admin);
    let db = pg_server.url("lanyard");
    let dir = tempfile::tempdir().unwrap();
    let storage = format!(
        "storage:\n  type: postgres\n  config:\n    host: 127.0.0.1\n    port: {}\n    \
         database: lanyard\n    user: postgres\n    ssl:\n      mode: disable\n    \
         connectionTimeout: {}\n",
        pg_server.port,
        CONNECTION_TIMEOUT.as_secs()
    );
    let mut lanyard = Lanyard::start(
        dir.path(),
        "lanyard",
        &Conf {
            storage: &storage,
            ..Conf::default()
        },
    )
    .await;
    let pid = lanyard.pid();
    let site = Site::new(lanyard.site.issuer.clone());
    let http = http();

    let discovery_before = http
        .get(site.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let jwks_before = http
        .get(site.url("/keys"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    // Codes to redeem while the database is down (one per outage), and refresh families.
    let req = AuthRequest::public();
    let codes = [site.code_for(&req).await, site.code_for(&req).await];
    let mut families = Vec::new();
    for _ in 0..3 {
        families.push(new_family(&site).await);
    }

    // Little to replay after the crash: the database was created and migrated before this.
    sqlx::query("CHECKPOINT")
        .execute(&mut pg(&db).await)
        .await
        .unwrap();

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for family in families {
        let (seen, stop, http) = (seen.clone(), stop.clone(), http.clone());
        let site = Site::new(site.issuer.clone());
        workers.push(tokio::spawn(async move {
            let mut current = family;
            while !stop.load(Ordering::Relaxed) {
                let a = refresh(&http, &site, &current)
                    .await
                    .expect("lanyard answers while PostgreSQL is down");
                let s = Seen {
                    what: "refresh",
                    status: a.status,
                    error: a.error().to_string(),
                    started: a.started,
                    finished: a.started + a.took,
                    presented: Some(current.clone()),
                    access: a.field("access_token"),
                    refresh: a.field("refresh_token"),
                };
                seen.lock().unwrap().push(s.clone());
                match a.status {
                    200 => current = s.refresh.unwrap(),
                    // The family ended (checked below); nothing more to do with it.
                    400 => return,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    {
        let (seen, stop, http) = (seen.clone(), stop.clone(), http.clone());
        let site = Site::new(site.issuer.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let a = post_token(
                    &http,
                    &site,
                    &[("grant_type", "client_credentials")],
                    Some((ROBOT_CLIENT, ROBOT_SECRET)),
                )
                .await
                .expect("lanyard answers while PostgreSQL is down");
                seen.lock().unwrap().push(Seen {
                    what: "client_credentials",
                    status: a.status,
                    error: a.error().to_string(),
                    started: a.started,
                    finished: a.started + a.took,
                    presented: None,
                    access: a.field("access_token"),
                    refresh: None,
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // Discovery and JWKS: always 200, fast, and the same bytes as before.
    let served: Arc<Mutex<Vec<(u16, Duration, bool)>>> = Arc::default();
    {
        let (served, stop, http) = (served.clone(), stop.clone(), http.clone());
        let site = Site::new(site.issuer.clone());
        let expected = [discovery_before.clone(), jwks_before.clone()];
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for (path, expected) in ["/.well-known/openid-configuration", "/keys"]
                    .iter()
                    .zip(&expected)
                {
                    let t = Instant::now();
                    let r = http.get(site.url(path)).send().await.unwrap();
                    let status = r.status().as_u16();
                    let same = r.bytes().await.unwrap() == *expected;
                    served.lock().unwrap().push((status, t.elapsed(), same));
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }

    let mut outages = Vec::new();
    let mut redeemed_during_outage = Vec::new();
    for (round, mode) in ["immediate", "fast"].iter().enumerate() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stopping = Instant::now();
        let pg_ref = &pg_server;
        tokio::task::block_in_place(|| pg_ref.stop(mode));
        let down = Instant::now();
        println!(
            "PostgreSQL stopped ({mode}) in {:?}",
            down.duration_since(stopping)
        );

        // At the same time: a code redeemed now is not spent (the redemption could not be
        // recorded), a login cannot start (an error page), and the process stays ready (every
        // replica shares the database; it still serves discovery and JWKS) while its
        // readiness body and metrics say the storage is unreachable.
        let code = &codes[round];
        let t = Instant::now();
        let auth_query = AuthRequest::public().query();
        let ready_url = lanyard.telemetry_url("/healthz/ready");
        let (redemption, page, ready) = tokio::join!(
            async {
                let r = site.redeem(&req, code).await;
                let took = t.elapsed();
                (r.status(), r.json::<Value>().await.unwrap(), took)
            },
            async {
                let r = http
                    .get(site.url("/auth"))
                    .query(&auth_query)
                    .send()
                    .await
                    .unwrap();
                (r.status(), t.elapsed())
            },
            async {
                let r = reqwest::get(&ready_url).await.unwrap();
                (r.status(), r.text().await.unwrap())
            },
        );
        assert_eq!(redemption.0, 503, "redeeming a code with the database down");
        assert_eq!(redemption.1["error"], "temporarily_unavailable");
        assert!(
            redemption.2 <= OUTAGE_ANSWER_LIMIT,
            "a redemption took {:?}",
            redemption.2
        );
        redeemed_during_outage.push(redemption.2);
        assert_eq!(page.0, 503, "/auth with the database down");
        assert!(page.1 <= OUTAGE_ANSWER_LIMIT, "/auth took {:?}", page.1);
        assert_eq!(
            ready.0, 200,
            "ready while the database is down: {}",
            ready.1
        );
        assert!(ready.1.contains("storage unreachable"), "{}", ready.1);
        let metrics = reqwest::get(lanyard.telemetry_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let storage_errors = metrics
            .lines()
            .find_map(|l| l.strip_prefix("lanyard_storage_errors_total "))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .expect("lanyard_storage_errors_total is exported");
        assert!(
            storage_errors > 0,
            "storage errors counted: {storage_errors}"
        );

        // Long enough that every worker has met the dead pool, more than once.
        tokio::time::sleep(CONNECTION_TIMEOUT * 2).await;
        let up_from = Instant::now();
        tokio::task::block_in_place(|| pg_ref.pg_ctl_start());
        println!("PostgreSQL started again in {:?}", up_from.elapsed());
        outages.push((down, up_from));

        // Recovery, in the same process: a refresh that started after the restart succeeds.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let recovered = seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| s.status == 200 && s.started > up_from);
            if recovered {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no token was issued within 60s of PostgreSQL's return"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "recovered {:?} after PostgreSQL started again",
            up_from.elapsed()
        );
        assert!(lanyard.alive(), "lanyard kept running");
        assert_eq!(lanyard.pid(), pid);
        let ready = reqwest::get(lanyard.telemetry_url("/healthz/ready"))
            .await
            .unwrap();
        assert_eq!(ready.status(), 200);
        assert_eq!(ready.text().await.unwrap().trim(), "ok", "storage is back");

        // The code from the outage works now, once.
        let r = site.redeem(&req, code).await;
        assert_eq!(r.status(), 200, "the code was not spent by the failed try");
        let r = site.redeem(&req, code).await;
        assert_eq!(r.status(), 400, "a code works once");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    // A whole new login works too.
    login(&site).await;

    let seen = seen.lock().unwrap().clone();
    let in_outage = |s: &Seen| {
        outages
            .iter()
            .any(|(down, up)| s.started >= *down && s.finished <= *up)
    };
    let outage_answers: Vec<&Seen> = seen.iter().filter(|s| in_outage(s)).collect();
    assert!(
        outage_answers.len() >= 4,
        "the load ran through the outages"
    );
    for s in &outage_answers {
        assert_eq!(
            (s.status, s.error.as_str()),
            (503, "temporarily_unavailable"),
            "{} during an outage",
            s.what
        );
    }
    let slowest = seen.iter().map(|s| s.finished - s.started).max().unwrap();
    let mut conn = pg(&db).await;
    let mut successors: HashMap<&str, HashSet<&str>> = HashMap::new();
    for s in &seen {
        assert!(
            s.finished - s.started <= OUTAGE_ANSWER_LIMIT,
            "a {} took {:?}",
            s.what,
            s.finished - s.started
        );
        match s.status {
            200 => {
                // Every token handed out is on record.
                let access: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM access_tokens WHERE token_hash = $1")
                        .bind(token_key(s.access.as_deref().unwrap()))
                        .fetch_one(&mut conn)
                        .await
                        .unwrap();
                assert_eq!(access, 1, "an access token was issued but not recorded");
                if let Some(refresh) = &s.refresh {
                    let stored: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM refresh_tokens WHERE token_hash = $1",
                    )
                    .bind(token_key(refresh))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                    assert_eq!(stored, 1, "a refresh token was issued but not recorded");
                    successors
                        .entry(s.presented.as_deref().unwrap())
                        .or_default()
                        .insert(refresh);
                }
            }
            503 => assert_eq!(s.error, "temporarily_unavailable"),
            400 => {
                // Only a rotation whose answer was lost (its commit raced the crash) ends a
                // family: the token presented must be on record as rotated.
                let row = refresh_row(&db, s.presented.as_deref().unwrap()).await;
                assert!(
                    matches!(row, Some((_, true, _))),
                    "a refresh was refused without a recorded rotation: {} {}",
                    s.status,
                    s.error
                );
            }
            other => panic!("{} answered {other} {}", s.what, s.error),
        }
    }
    for (presented, next) in &successors {
        assert_eq!(
            next.len(),
            1,
            "refresh token {:.8}… yielded two different successors",
            presented
        );
    }
    assert!(forked_families(&db).await.is_empty());

    let served = served.lock().unwrap().clone();
    let slowest_served = served.iter().map(|s| s.1).max().unwrap();
    assert!(served.len() > 20);
    for (status, took, same) in &served {
        assert_eq!(*status, 200, "discovery and JWKS are served from memory");
        assert!(*same, "discovery and JWKS did not change");
        assert!(
            *took < Duration::from_secs(2),
            "discovery or JWKS took {took:?}"
        );
    }
    println!(
        "token answers: {} ({} during outages); slowest {slowest:?}; redemptions during \
         outages {redeemed_during_outage:?}; discovery/JWKS answers {} (slowest {slowest_served:?})",
        seen.len(),
        outage_answers.len(),
        served.len()
    );
}

// ---------------------------------------------------------------------------------------
// 2. kill -9 during key rotation and refreshes

/// Short periods so that rotations happen every few seconds: a key signs for 5s and its
/// successor is published 4s before it takes over.
const ROTATION: i64 = 5;
const PUBLISH_AHEAD: i64 = 4;
const FAST_KEYS: &str = "  rotationPeriod: 5s\n  publishAhead: 4s\n";

/// A refresh family as the client knows it.
#[derive(Debug, Clone)]
struct Family {
    /// The last refresh token lanyard handed out (as far as the client knows).
    current: String,
    /// The token that was exchanged for `current`.
    previous: Option<String>,
}

/// What the refresh workers collected: ID tokens by kid.
type Signed = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

/// Refreshes `family` in a loop until lanyard stops answering (it is killed) or `stop`.
fn refresh_worker(
    http: reqwest::Client,
    site: Site,
    family: Arc<Mutex<Family>>,
    signed: Signed,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut done = 0;
        while !stop.load(Ordering::Relaxed) {
            let current = family.lock().unwrap().current.clone();
            let Ok(a) = refresh(&http, &site, &current).await else {
                return done;
            };
            match a.status {
                200 => {
                    let mut f = family.lock().unwrap();
                    f.previous = Some(current);
                    f.current = a.field("refresh_token").unwrap();
                    let id_token = a.field("id_token").unwrap();
                    let mut signed = signed.lock().unwrap();
                    let list = signed.entry(kid_of(&id_token)).or_default();
                    // A few per key are enough to prove the key verifies what it signed.
                    if list.len() < 4 {
                        list.push(id_token);
                    }
                    done += 1;
                }
                status => panic!("refresh answered {status}: {}", a.body),
            }
        }
        done
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_rotations_and_refreshes_loses_no_key_and_forks_no_family() {
    let _serial = SERIAL.lock().await;
    let Some(db) = fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = postgres_storage(db.url());
    let mut lanyard = Lanyard::start(
        dir.path(),
        "lanyard",
        &Conf {
            storage: &storage,
            keys: FAST_KEYS,
            expiry: "  idTokens: 1h\n  refreshTokens:\n    reuseInterval: 1s\n",
            ..Conf::default()
        },
    )
    .await;
    let http = http();
    let site = Site::new(lanyard.site.issuer.clone());
    let mut families = Vec::new();
    for _ in 0..4 {
        families.push(Arc::new(Mutex::new(Family {
            current: new_family(&site).await,
            previous: None,
        })));
    }
    let signed: Signed = Arc::default();
    let mut published_ever: HashSet<String> = HashSet::new();
    let mut refreshes = 0;
    let mut kills = Vec::new();
    // Families ended because the kill lost a rotation's answer, and old tokens tried.
    let (mut lost_answers, mut replays) = (0, 0);
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = families
            .iter()
            .map(|f| {
                refresh_worker(
                    http.clone(),
                    Site::new(site.issuer.clone()),
                    f.clone(),
                    signed.clone(),
                    stop.clone(),
                )
            })
            .collect();

        // The next rotation is due publishAhead before the newest key's turn ends.
        let rows = key_rows(db.url()).await;
        let newest = rows.iter().map(|r| r.sign_from).max().unwrap();
        let due = (newest + ROTATION - PUBLISH_AHEAD) as f64;
        let wait = (due - unix_now()).max(0.0);
        let keys_before = rows.len();
        let how = if round % 2 == 0 {
            // At a random moment of the second in which the rotation task picks it up:
            // generating, storing or reloading the key, or just before.
            let jitter = rand::random::<f64>() * 1.2;
            tokio::time::sleep(Duration::from_secs_f64(wait + jitter)).await;
            format!("{jitter:.2}s after the rotation was due")
        } else {
            // The moment the new key is stored: before the process has reloaded, published
            // or signed with it.
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut c = pg(db.url()).await;
            loop {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM signing_keys")
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
                if n as usize > keys_before {
                    break;
                }
                assert!(Instant::now() < deadline, "no rotation happened");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            "as soon as the new key was stored".to_string()
        };
        // Keys the process published before it dies must survive it.
        lanyard.kill9();
        let killed = Instant::now();
        kills.push(how);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            refreshes += w.await.unwrap();
        }

        let rows = key_rows(db.url()).await;
        assert_one_key_chain(&rows, ROTATION, PUBLISH_AHEAD);
        assert!(
            forked_families(db.url()).await.is_empty(),
            "a refresh family has two live tokens after kill -9"
        );

        lanyard.restart().await;
        let (keys, _) = jwks(&http, &site).await;
        let published = kids(&keys);
        let stored: HashSet<String> = rows.iter().map(|r| r.kid.clone()).collect();
        assert!(
            stored.is_subset(
                &key_rows(db.url())
                    .await
                    .iter()
                    .map(|r| r.kid.clone())
                    .collect()
            ),
            "a stored key disappeared on restart"
        );
        for kid in &stored {
            assert!(published.contains(kid), "stored key {kid} is not published");
        }
        assert!(
            published_ever.is_subset(&published),
            "a key published before the kill is gone"
        );
        published_ever.extend(published.iter().cloned());
        for (kid, tokens) in signed.lock().unwrap().iter() {
            for token in tokens {
                verify(token, &keys)
                    .unwrap_or_else(|e| panic!("a token signed by {kid} no longer verifies: {e}"));
            }
        }

        // Past the reuse interval, present what the client holds. The token it got last
        // works, unless the kill lost the answer of a rotation that was recorded: then it is
        // a replay and the family ends.
        let settle = Duration::from_millis(2500).saturating_sub(killed.elapsed());
        tokio::time::sleep(settle).await;
        let mut candidate = None;
        for (slot, family) in families.iter().enumerate() {
            let Family { current, previous } = family.lock().unwrap().clone();
            let a = refresh(&http, &site, &current).await.unwrap();
            if a.status == 200 {
                *family.lock().unwrap() = Family {
                    current: a.field("refresh_token").unwrap(),
                    previous: Some(current),
                };
                if let (None, Some(previous)) = (&candidate, previous) {
                    candidate = Some((slot, previous));
                }
            } else {
                assert_eq!((a.status, a.error()), (400, "invalid_grant"));
                let (_, rotated, revoked) = refresh_row(db.url(), &current).await.unwrap();
                assert!(rotated, "refused a refresh token that was never rotated");
                assert!(revoked, "the ended family's grant is revoked");
                lost_answers += 1;
                family.lock().unwrap().current = new_family(&site).await;
                family.lock().unwrap().previous = None;
            }
        }
        // Both the old and the new token of one family: the old one must not work, and
        // presenting it ends the family, the new token included.
        let (slot, old, new) = match candidate {
            Some((slot, old)) => (
                Some(slot),
                old,
                families[slot].lock().unwrap().current.clone(),
            ),
            None => {
                // Every family lost an answer: make one with an old token.
                let old = new_family(&site).await;
                let a = refresh(&http, &site, &old).await.unwrap();
                assert_eq!(a.status, 200);
                tokio::time::sleep(Duration::from_millis(2100)).await;
                (None, old, a.field("refresh_token").unwrap())
            }
        };
        let a = refresh(&http, &site, &old).await.unwrap();
        assert_eq!(
            a.status, 400,
            "an old refresh token worked after the restart"
        );
        let a = refresh(&http, &site, &new).await.unwrap();
        assert_eq!(
            a.status, 400,
            "the family outlived a replay of its old token"
        );
        assert!(refresh_row(db.url(), &new).await.unwrap().2);
        replays += 1;
        if let Some(slot) = slot {
            *families[slot].lock().unwrap() = Family {
                current: new_family(&site).await,
                previous: None,
            };
        }
        assert!(forked_families(db.url()).await.is_empty());
    }
    let rows = key_rows(db.url()).await;
    assert_one_key_chain(&rows, ROTATION, PUBLISH_AHEAD);
    let signing_kids = signed.lock().unwrap().len();
    println!(
        "{ROUNDS} kills ({kills:?}); {refreshes} refreshes; {lost_answers} families ended by \
         a lost rotation answer, {replays} by presenting the old token; {} keys stored, \
         {signing_kids} of them signed tokens",
        rows.len()
    );
    assert!(
        rows.len() > ROUNDS,
        "keys rotated through the kills: {rows:#?}"
    );
    assert!(signing_kids >= 3);
    assert_eq!(
        replays, ROUNDS,
        "an old token was tried after every restart"
    );
}

// ---------------------------------------------------------------------------------------
// 3. Two processes, one database

/// A JWKS as one process served it.
struct Snapshot {
    process: usize,
    fetched: Instant,
    kids: HashSet<String>,
    body: Value,
}

/// An ID token and when the client had it.
struct Minted {
    process: usize,
    received: Instant,
    jwt: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_rotating_on_one_database_verify_each_others_tokens() {
    let _serial = SERIAL.lock().await;
    let Some(db) = fresh_database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let storage = postgres_storage(db.url());
    // A key signs for 6s and is published 5s before: the JWKS max-age and the reload
    // interval are a quarter of that (1s, 1.25s).
    let conf = Conf {
        storage: &storage,
        keys: "  rotationPeriod: 6s\n  publishAhead: 5s\n",
        expiry: "  idTokens: 1h\n",
        ..Conf::default()
    };
    let a = Lanyard::start(dir.path(), "a", &conf).await;
    let b = Lanyard::start(dir.path(), "b", &conf).await;
    let sites = [
        Site::new(a.site.issuer.clone()),
        Site::new(b.site.issuer.clone()),
    ];
    let http = http();
    let (_, max_age) = jwks(&http, &sites[0]).await;
    assert_eq!(max_age, Duration::from_secs(1));

    let minted: Arc<Mutex<Vec<Minted>>> = Arc::default();
    let snapshots: Arc<Mutex<Vec<Snapshot>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (process, site) in sites.iter().enumerate() {
        for _ in 0..2 {
            let mut current = new_family(site).await;
            let (minted, stop, http) = (minted.clone(), stop.clone(), http.clone());
            let site = Site::new(site.issuer.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let a = refresh(&http, &site, &current).await.unwrap();
                    assert_eq!(a.status, 200, "{}", a.body);
                    current = a.field("refresh_token").unwrap();
                    minted.lock().unwrap().push(Minted {
                        process,
                        received: Instant::now(),
                        jwt: a.field("id_token").unwrap(),
                    });
                }
            }));
        }
        let (snapshots, stop, http) = (snapshots.clone(), stop.clone(), http.clone());
        let site = Site::new(site.issuer.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let fetched = Instant::now();
                let (body, _) = jwks(&http, &site).await;
                snapshots.lock().unwrap().push(Snapshot {
                    process,
                    fetched,
                    kids: kids(&body),
                    body,
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    // After the load: one last look at both.
    for (process, site) in sites.iter().enumerate() {
        let fetched = Instant::now();
        let (body, _) = jwks(&http, site).await;
        snapshots.lock().unwrap().push(Snapshot {
            process,
            fetched,
            kids: kids(&body),
            body,
        });
    }

    let minted = std::mem::take(&mut *minted.lock().unwrap());
    let snapshots = std::mem::take(&mut *snapshots.lock().unwrap());
    // Each kid's JWK, as each process published it.
    let mut jwk_of: HashMap<(usize, String), Value> = HashMap::new();
    for s in snapshots.iter() {
        for k in s.body["keys"].as_array().unwrap() {
            jwk_of.insert(
                (s.process, k["kid"].as_str().unwrap().to_string()),
                serde_json::json!({ "keys": [k] }),
            );
        }
    }
    let mut kids_by_process: [HashSet<String>; 2] = Default::default();
    for m in minted.iter() {
        let kid = kid_of(&m.jwt);
        kids_by_process[m.process].insert(kid.clone());
        // Every JWKS fetched since (max-age before) the token was issued, from either
        // process, lists its key: a verifier caching within max-age is never caught out.
        for s in snapshots.iter() {
            if s.fetched + max_age >= m.received {
                let offset = if s.fetched >= m.received {
                    (s.fetched - m.received).as_secs_f64()
                } else {
                    -(m.received - s.fetched).as_secs_f64()
                };
                assert!(
                    s.kids.contains(&kid),
                    "a token from process {} (kid {kid}) is not in process {}'s JWKS fetched \
                     {offset:+.3}s after the token arrived",
                    m.process,
                    s.process,
                );
            }
        }
        for process in 0..2 {
            let jwks = &jwk_of[&(process, kid.clone())];
            verify(&m.jwt, jwks).unwrap_or_else(|e| {
                panic!(
                    "process {process}'s JWKS does not verify a token from {}: {e}",
                    m.process
                )
            });
        }
    }
    let rows = key_rows(db.url()).await;
    assert_one_key_chain(&rows, 6, 5);
    println!(
        "{} tokens from two processes ({} and {} kids), {} JWKS fetches, {} keys stored",
        minted.len(),
        kids_by_process[0].len(),
        kids_by_process[1].len(),
        snapshots.len(),
        rows.len()
    );
    // Rotations were forced: each process signed across at least one, and between them
    // across at least two.
    for (process, kids) in kids_by_process.iter().enumerate() {
        assert!(
            kids.len() >= 2,
            "process {process} signed with {} keys",
            kids.len()
        );
    }
    let all: HashSet<&String> = kids_by_process.iter().flatten().collect();
    assert!(all.len() >= 3, "{} keys signed in all", all.len());
    drop((a, b));
}

// ---------------------------------------------------------------------------------------
// 4. SIGTERM under load

/// The grace period lanyard gives in-flight requests (`lanyard::server::SHUTDOWN_GRACE`).
const GRACE: Duration = lanyard::server::SHUTDOWN_GRACE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_logins_finish_refuses_new_connections_and_exits_0() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = sqlite_storage(&dir.path().join("lanyard.db"));
    // Browsers at the password form. Their posts are the in-flight load: each one waits for
    // a password hash, and the hashing pool runs one per core. Each is another person from
    // another address (through a trusted proxy): attempts in flight count against their
    // account's and address's budget until they are checked, so one person's 24 simultaneous
    // logins would mostly be refused before shutdown is even tested.
    const LOGINS: usize = 24;
    let users: String = (1..=LOGINS)
        .map(|i| {
            format!(
                "- email: user{i}@example.com\n  hash: \"{ALICE_HASH}\"\n  username: user{i}\n  userID: user-{i}\n"
            )
        })
        .collect();
    let mut lanyard = Lanyard::start(
        dir.path(),
        "lanyard",
        &Conf {
            storage: &storage,
            web: TRUST_LOCAL_PROXY,
            users: &users,
            ..Conf::default()
        },
    )
    .await;
    let site = Site::new(lanyard.site.issuer.clone());

    let req = AuthRequest::public();
    let mut forms = Vec::new();
    for i in 1..=LOGINS {
        let browser = common::server::TestServer::new_browser();
        let (url, html) = site.open_login(&browser, &req).await;
        forms.push((i, browser, url, hidden_field(&html, "csrf").unwrap()));
    }
    let posts: Vec<_> = forms
        .into_iter()
        .map(|(i, browser, url, csrf)| {
            tokio::spawn(async move {
                let r = browser
                    .post(&url)
                    .header("x-forwarded-for", format!("192.0.2.{i}"))
                    .form(&[
                        ("csrf", csrf.as_str()),
                        ("login", format!("user{i}@example.com").as_str()),
                        ("password", ALICE_PASSWORD),
                    ])
                    .send()
                    .await
                    .expect("an in-flight login got an answer");
                (r.status().as_u16(), r.headers().get("location").cloned())
            })
        })
        .collect();
    // A request on a fresh connection that is answered after the posts were sent: the
    // server has taken up the posts' connections (accepting is in order).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    assert_eq!(
        fresh
            .get(site.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let unfinished = posts.iter().filter(|p| !p.is_finished()).count();

    signal(&lanyard.process, "TERM");
    let signalled = Instant::now();
    // New connections are refused while the in-flight logins are still being served.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", lanyard.port).parse().unwrap();
    let refused_at = loop {
        let attempt =
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                .await;
        if let Ok(Err(e)) = attempt {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
            break signalled.elapsed();
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "still accepting connections 5s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let alive_when_refused = lanyard.alive();
    let still_in_flight = posts.iter().filter(|p| !p.is_finished()).count();

    let mut codes = Vec::new();
    for p in posts {
        let (status, location) = p.await.unwrap();
        assert_eq!(status, 303, "an in-flight login failed during shutdown");
        let location = location.unwrap().to_str().unwrap().to_string();
        assert!(location.starts_with(PUBLIC_REDIRECT), "{location}");
        codes.push(query_param(&location, "code").expect("a code"));
    }
    let status = tokio::task::block_in_place(|| wait_exit(&mut lanyard.process, GRACE * 2))
        .expect("lanyard exited");
    let exited = signalled.elapsed();
    println!(
        "{unfinished}/{LOGINS} logins unfinished at SIGTERM; refused new connections after \
         {refused_at:?} with {still_in_flight} still in flight; exited {status} after {exited:?}"
    );
    assert!(status.success(), "exit status {status}");
    assert!(exited <= GRACE, "exited after {exited:?}");
    assert!(
        alive_when_refused && still_in_flight > 0,
        "new connections must be refused while in-flight requests are still being served"
    );
    assert!(unfinished >= LOGINS / 4, "the logins were in flight");

    // What the finished logins wrote was committed: every code works after a restart.
    lanyard.restart().await;
    for code in &codes {
        let r = site.redeem(&req, code).await;
        assert_eq!(r.status(), 200);
    }
}

// ---------------------------------------------------------------------------------------
// 5. 100,000 abandoned logins

/// Completed requests per second since the start of the load.
struct Completions {
    start: Instant,
    per_second: Vec<AtomicU64>,
}

impl Completions {
    fn new() -> Self {
        Completions {
            start: Instant::now(),
            per_second: (0..3600).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    fn record(&self) {
        let s = self.start.elapsed().as_secs() as usize;
        self.per_second[s.min(3599)].fetch_add(1, Ordering::Relaxed);
    }
    /// Requests completed in whole seconds overlapping [from, to].
    fn between(&self, from: Instant, to: Instant) -> u64 {
        let a = from.saturating_duration_since(self.start).as_secs() as usize;
        let b = to.saturating_duration_since(self.start).as_secs() as usize;
        (a..=b.min(3599))
            .map(|s| self.per_second[s].load(Ordering::Relaxed))
            .sum()
    }
}

/// GET `path` over one keep-alive connection, again and again, until `next` reaches `total`.
/// A hand-written HTTP/1.1 client: in a debug build a full client would cost more than the
/// server it measures.
async fn keep_alive_gets(
    port: u16,
    path: String,
    next: Arc<AtomicUsize>,
    total: usize,
    done: Arc<Completions>,
) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.set_nodelay(true).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut buf = Vec::with_capacity(4096);
    while next.fetch_add(1, Ordering::Relaxed) < total {
        stream.write_all(request.as_bytes()).await.unwrap();
        buf.clear();
        let header_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "lanyard closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 303"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .expect("a content-length");
        while buf.len() < header_end + length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "lanyard closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        done.record();
    }
}

/// Logins older than this are expired, and housekeeping runs this often.
const AUTH_REQUEST_EXPIRY: Duration = Duration::from_secs(15);
const HOUSEKEEPING: Duration = Duration::from_secs(2);
/// Resident memory may grow by at most this much over the 100,000 logins.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_abandoned_logins_stay_bounded_and_are_swept() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lanyard.db");
    let db = format!("sqlite://{}?mode=ro", file.display());
    let storage = sqlite_storage(&file);
    let extra = format!("housekeeping:\n  interval: {}s\n", HOUSEKEEPING.as_secs());
    let expiry = format!("  authRequests: {}s\n", AUTH_REQUEST_EXPIRY.as_secs());
    let lanyard = Lanyard::start(
        dir.path(),
        "lanyard",
        &Conf {
            storage: &storage,
            expiry: &expiry,
            extra: &extra,
            // One log line per request would dominate the CPU time measured here.
            log_level: Some("warn"),
            ..Conf::default()
        },
    )
    .await;
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(AuthRequest::confidential().query())
        .finish();
    let path = format!("/auth?{query}");

    const TOTAL: usize = 100_000;
    const CONNECTIONS: usize = 16;
    const WARM_UP: usize = 2_000;
    let run = |count: usize, done: Arc<Completions>| {
        let next = Arc::new(AtomicUsize::new(0));
        (0..CONNECTIONS)
            .map(|_| {
                tokio::spawn(keep_alive_gets(
                    lanyard.port,
                    path.clone(),
                    next.clone(),
                    count,
                    done.clone(),
                ))
            })
            .collect::<Vec<_>>()
    };
    // Warm up (connection pools, caches), then take the baseline.
    let done = Arc::new(Completions::new());
    for t in run(WARM_UP, done.clone()) {
        t.await.unwrap();
    }
    let rss_before = lanyard.rss_kib();
    let cpu_before = lanyard.cpu();

    let load_start = Instant::now();
    let load = run(TOTAL, done.clone());
    let mut rss_peak = rss_before;
    let mut rows_peak = 0;
    let mut samples = 0;
    // Rows still present may only be logins younger than expiry + housekeeping interval
    // (plus slack for a sweep in progress), and those in flight.
    let window = AUTH_REQUEST_EXPIRY + HOUSEKEEPING + Duration::from_secs(5);
    while !load.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss_peak = rss_peak.max(lanyard.rss_kib());
        let asked = Instant::now();
        let rows = count_rows(&db, "auth_requests").await;
        let answered = Instant::now();
        rows_peak = rows_peak.max(rows);
        samples += 1;
        let young = done.between(asked.checked_sub(window).unwrap_or(done.start), answered);
        assert!(
            rows as u64 <= young + CONNECTIONS as u64,
            "{rows} logins stored; only {young} are younger than {window:?}: housekeeping falls behind"
        );
    }
    for t in load {
        t.await.unwrap();
    }
    let took = load_start.elapsed();
    let cpu = lanyard.cpu() - cpu_before;
    let rss_after = lanyard.rss_kib();
    rss_peak = rss_peak.max(rss_after);
    let rows_after_load = count_rows(&db, "auth_requests").await;

    // Once all have expired, housekeeping removes every one of them.
    let deadline = Instant::now() + window + Duration::from_secs(30);
    let left = loop {
        let left = count_rows(&db, "auth_requests").await;
        if left == 0 || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let swept_after = load_start.elapsed() - took;
    let rss_end = lanyard.rss_kib();
    println!(
        "{TOTAL} abandoned logins in {took:.1?} ({:.0}/s over {CONNECTIONS} connections, \
         lanyard CPU {cpu:.1?}); \
         auth_requests rows: peak {rows_peak} over {samples} samples, {rows_after_load} at the \
         end of the load, {left} {swept_after:.1?} later; VmRSS: {} KiB after warm-up, peak {} KiB \
         (+{} KiB, limit +{RSS_GROWTH_LIMIT_KIB} KiB), {} KiB after the sweep",
        TOTAL as f64 / took.as_secs_f64(),
        rss_before,
        rss_peak,
        rss_peak - rss_before,
        rss_end
    );
    assert_eq!(
        done.between(done.start, Instant::now()),
        (WARM_UP + TOTAL) as u64,
        "every login was answered with a redirect to the login form"
    );
    assert_eq!(left, 0, "housekeeping removed every expired login");
    assert!(
        rss_peak - rss_before <= RSS_GROWTH_LIMIT_KIB,
        "memory grew by {} KiB",
        rss_peak - rss_before
    );
    assert!(samples >= 3, "the row count was watched during the load");
}
