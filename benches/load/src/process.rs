//! The lanyard under test: its config, its process, and what /proc says about it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::flows::{CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, USERS};
use crate::http::Conn;

#[derive(Clone)]
pub enum Storage {
    Sqlite,
    /// A database URL; the database is created for the run and dropped after it.
    Postgres(String),
}

impl Storage {
    pub fn name(&self) -> &'static str {
        match self {
            Storage::Sqlite => "sqlite",
            Storage::Postgres(_) => "postgres",
        }
    }
}

pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub web: SocketAddr,
    pub telemetry: SocketAddr,
}

pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Writes the config a production deployment would run: JSON logs at info, one request
/// log line each, argon2id password hashes at OWASP's parameters, RS256 keys.
pub fn write_config(dir: &Path, storage: &Storage, password_hash: &str) -> anyhow::Result<Setup> {
    let web = free_port()?;
    let telemetry = free_port()?;
    let storage = match storage {
        Storage::Sqlite => format!(
            "  type: sqlite3\n  config:\n    file: {}\n",
            dir.join("lanyard.db").display()
        ),
        Storage::Postgres(url) => {
            format!("  type: postgres\n  config:\n    connectionString: {url}\n")
        }
    };
    let key: [u8; 32] = rand::random();
    let key = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(key)
    };
    let users: String = (0..USERS)
        .map(|i| {
            format!(
                "  - email: bench{i}@example.com\n    hash: \"{password_hash}\"\n    \
                 username: bench{i}\n    userID: bench-{i}\n    groups: [bench]\n"
            )
        })
        .collect();
    let config = format!(
        "issuer: http://{web}\n\
         storage:\n{storage}\
         web:\n  http: {web}\n  clientRemoteIP:\n    header: X-Forwarded-For\n    trustedProxies: ['127.0.0.1/32']\n\
         telemetry:\n  http: {telemetry}\n\
         logger:\n  level: info\n  format: json\n\
         oauth2:\n  skipApprovalScreen: true\n\
         staticClients:\n  - id: {CLIENT_ID}\n    name: Benchmark\n    secret: {CLIENT_SECRET}\n    \
         redirectURIs: [\"{REDIRECT_URI}\"]\n    \
         grantTypes: [authorization_code, refresh_token, client_credentials]\n\
         enablePasswordDB: true\n\
         staticPasswords:\n{users}\
         keys:\n  algorithm: RS256\n  encryptionKey: \"{key}\"\n"
    );
    let path = dir.join("config.yaml");
    std::fs::write(&path, config)?;
    Ok(Setup {
        dir: dir.to_path_buf(),
        config: path,
        web,
        telemetry,
    })
}

pub struct Server {
    child: Child,
    /// From spawn to the first 200 from /healthz/ready.
    pub ready_after: Duration,
}

impl Server {
    pub async fn start(binary: &Path, setup: &Setup) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(setup.dir.join("lanyard.log"))?;
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--config")
            .arg(&setup.config)
            .current_dir(&setup.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut probe = Conn::new(setup.telemetry);
        loop {
            if let Ok(reply) = probe.get("/healthz/ready", None).await {
                if reply.status == 200 {
                    break;
                }
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "lanyard exited with {status} before it was ready; see {}",
                    setup.dir.join("lanyard.log").display()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("lanyard was not ready after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let ready_after = started.elapsed();
        Ok(Self { child, ready_after })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait for the graceful exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()?;
        if !status.success() {
            self.child.kill()?;
        }
        self.child.wait()?;
        Ok(())
    }
}

/// Stops a process (SIGSTOP) until [`resume`]: it takes no CPU, and its timers wait.
pub fn pause(pid: u32) -> anyhow::Result<()> {
    signal(pid, "-STOP")
}

pub fn resume(pid: u32) -> anyhow::Result<()> {
    signal(pid, "-CONT")
}

fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(signal)
        .arg(pid.to_string())
        .status()?;
    if !status.success() {
        bail!("kill {signal} {pid}: {status}");
    }
    Ok(())
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory now, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The most resident memory the process has had, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// User + system CPU time of a process (Linux counts it in 1/100 s ticks).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The command name may hold spaces; the fields after it are fixed.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// CPU time of every PostgreSQL process on this machine (the server is local; its backends,
/// WAL writer and checkpointer all count).
pub fn postgres_cpu() -> Duration {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(cpu_time)
        .sum()
}

/// A database of its own for one run on the PostgreSQL server `url` points at.
pub struct Database {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Database {
    pub fn create(server_url: &str) -> anyhow::Result<Self> {
        // The URL may name a database; ours replaces it.
        let (scheme, rest) = server_url
            .split_once("://")
            .with_context(|| format!("{server_url} is not a postgres:// URL"))?;
        let host = rest.split(['/', '?']).next().unwrap_or(rest);
        let root = format!("{scheme}://{host}");
        // Two lanyards of one run (fresh and filled) may each have one at once.
        static CREATED: AtomicU32 = AtomicU32::new(0);
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let name = format!("lanyard_bench_{}_{n}", std::process::id());
        let admin_url = format!("{root}/postgres");
        psql(&admin_url, &format!("DROP DATABASE IF EXISTS {name}"))?;
        psql(&admin_url, &format!("CREATE DATABASE {name}"))?;
        Ok(Self {
            url: format!("{root}/{name}"),
            admin_url,
            name,
        })
    }
}

/// The storage a run uses: on PostgreSQL a database of its own, created now and dropped with
/// the returned [`Database`].
pub fn own_database(storage: &Storage) -> anyhow::Result<(Option<Database>, Storage)> {
    Ok(match storage {
        Storage::Postgres(server) => {
            let db = Database::create(server)?;
            let url = db.url.clone();
            (Some(db), Storage::Postgres(url))
        }
        Storage::Sqlite => (None, Storage::Sqlite),
    })
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql`; returns its rows, one a line, fields separated by `|`.
pub fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new("psql")
        .arg(url)
        .arg("-qAtc")
        .arg(sql)
        .output()
        .context("running psql (is the PostgreSQL client installed?)")?;
    if !out.status.success() {
        bail!(
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
