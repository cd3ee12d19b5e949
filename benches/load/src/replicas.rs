//! `--replicas 1,2,3`: lanyard as several processes on one PostgreSQL database, as a
//! deployment with replicas runs it. For each replica count it makes a fresh database, starts
//! that many lanyards with one config (one issuer, one `keys.encryptionKey`, so they share the
//! signing keys) each on its own port, and drives client_credentials and refresh_token with
//! every connection pinned to one replica and the connections spread evenly. Meanwhile a
//! sampler reads pg_stat_activity and pg_locks ten times a second: a hot row that every
//! request updates shows as backends waiting on `Lock` events. After each scenario it reads
//! what PostgreSQL wrote (WAL bytes) and its CPU time, and after the last
//! replica count the bytes per row of each table and index, for the capacity plan in
//! docs/scaling.md.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::flows::{self, Client, Session};
use crate::load::{self, Figures};
use crate::process::{self, free_port, psql, Database, Server, Setup, Storage};

pub struct Plan {
    /// How many lanyards to run at once, one run each.
    pub counts: Vec<usize>,
    pub seconds: Duration,
    /// Spread over the replicas: replica `i` gets connections `i`, `i + n`, ...
    pub connections: usize,
    /// Expired auth requests written before each scenario, so that every replica's
    /// housekeeping (every second here) sweeps them while the load runs.
    pub backlog: u64,
    /// Password logins timed for their writes (each costs an argon2id hash).
    pub logins: usize,
}

impl Plan {
    /// Two replicas for half a second per scenario: the smoke run proves the mode works.
    pub fn smoke() -> Self {
        Self {
            counts: vec![2],
            seconds: Duration::from_millis(500),
            connections: 4,
            backlog: 100,
            logins: 1,
        }
    }
}

/// Runs `plan` and prints its tables; with `strict`, a failed request is an error.
pub async fn run_and_print(
    lanyard: &Path,
    server_url: &str,
    password_hash: &str,
    plan: &Plan,
    strict: bool,
) -> anyhow::Result<()> {
    let reports = run(lanyard, server_url, password_hash, plan).await?;
    print(plan, &reports);
    let failed = failures(&reports);
    if !failed.is_empty() {
        let failed = failed.join("; ");
        if strict {
            bail!("requests failed: {failed}");
        }
        println!("requests failed: {failed}");
    }
    Ok(())
}

/// One scenario at one replica count.
pub struct Scenario {
    pub name: &'static str,
    pub per_replica: Vec<Figures>,
    pub db: DbDelta,
    pub waits: Waits,
}

impl Scenario {
    fn ok(&self) -> u64 {
        self.per_replica.iter().map(|f| f.ok).sum()
    }

    fn rate(&self) -> f64 {
        self.per_replica.iter().map(Figures::rate).sum()
    }
}

pub struct CountReport {
    pub replicas: usize,
    /// The writes of `Plan::logins` password logins and of the code logins that made the
    /// refresh tokens.
    pub logins: Vec<(&'static str, u64, DbDelta)>,
    pub scenarios: Vec<Scenario>,
    /// Rows, heap and index bytes of each table after the run.
    pub sizes: Vec<TableSize>,
}

async fn run(
    lanyard: &Path,
    server_url: &str,
    password_hash: &str,
    plan: &Plan,
) -> anyhow::Result<Vec<CountReport>> {
    let mut reports = Vec::new();
    for &n in &plan.counts {
        let dir = std::env::temp_dir().join(format!("lanyard-replicas-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let report = run_count(lanyard, server_url, password_hash, plan, n, &dir).await?;
        let _ = std::fs::remove_dir_all(&dir);
        reports.push(report);
    }
    Ok(reports)
}

const CLIENT_CREDENTIALS: &str = "client_credentials";
const REFRESH: &str = "refresh_token";

async fn run_count(
    lanyard: &Path,
    server_url: &str,
    password_hash: &str,
    plan: &Plan,
    n: usize,
    dir: &Path,
) -> anyhow::Result<CountReport> {
    let connections = plan.connections.max(n);
    let database = Database::create(server_url)?;
    let url = database.url.clone();
    let setups = replica_setups(dir, &url, password_hash, n.max(1), plan.backlog > 0)?;
    eprintln!("[{n} replicas] starting");
    let mut servers = Vec::new();
    // The first creates the schema and the first key; the others find them.
    for setup in &setups {
        servers.push(Server::start(lanyard, setup).await?);
    }
    let pids: Vec<u32> = servers.iter().map(Server::pid).collect();
    let addrs: Vec<SocketAddr> = setups.iter().map(|s| s.web).collect();
    let client = Arc::new(Client::new());

    // Sessions and refresh tokens, made on the first replica (any would do: they share
    // the database), counting what each kind of login writes.
    let mut logins = Vec::new();
    let mut conn = crate::http::Conn::new(addrs[0]);
    let before = DbStats::read(&url)?;
    let mut sessions: Vec<Session> = Vec::new();
    for person in 0..plan.logins.max(1) {
        sessions.push(flows::password_login(&mut conn, &client, person).await?);
    }
    logins.push((
        "password login",
        sessions.len() as u64,
        before.delta_to(&url)?,
    ));
    let before = DbStats::read(&url)?;
    let mut tokens: Vec<String> = sessions.iter().map(|s| s.refresh_token.clone()).collect();
    let made = connections.saturating_sub(tokens.len());
    for i in 0..made {
        let session = &mut sessions[i % plan.logins.max(1)];
        let (code, verifier) = flows::code_from_session(&mut conn, &mut session.jar).await?;
        let t = flows::redeem(&mut conn, &client, &code, &verifier).await?;
        tokens.push(
            t["refresh_token"]
                .as_str()
                .context("no refresh_token")?
                .to_string(),
        );
    }
    logins.push((
        "code login (signed in)",
        made as u64,
        before.delta_to(&url)?,
    ));

    let mut scenarios = Vec::new();
    for name in [CLIENT_CREDENTIALS, REFRESH] {
        if plan.backlog > 0 {
            psql(
                &url,
                &format!(
                    "INSERT INTO auth_requests (id, client_id, params, csrf_token, browser_binding, \
                     created_at, expires_at) SELECT '{name}-' || i, 'bench', '{{}}', '', '', 0, 1 \
                     FROM generate_series(1, {}) AS i",
                    plan.backlog
                ),
            )?;
        }
        eprintln!("[{n} replicas] {name}");
        let sampler = Sampler::start(&url, &dir.join(format!("waits-{name}.txt")))?;
        let before = DbStats::read(&url)?;
        let mut handles = Vec::new();
        for (replica, (&addr, &pid)) in addrs.iter().zip(&pids).enumerate() {
            let pinned = (replica..connections).step_by(n.max(1));
            let secs = Some(plan.seconds);
            let cl = client.clone();
            handles.push(match name {
                CLIENT_CREDENTIALS => tokio::spawn(async move {
                    let states = pinned.map(|_| ()).collect();
                    load::run(addr, pid, states, secs, move |mut c, s| {
                        let cl = cl.clone();
                        async move {
                            let r = flows::client_credentials(&mut c, &cl).await.map(|()| true);
                            (c, s, r)
                        }
                    })
                    .await
                    .0
                }),
                _ => {
                    let mine: Vec<String> = pinned.filter_map(|i| tokens.get(i).cloned()).collect();
                    tokio::spawn(async move {
                        load::run(addr, pid, mine, secs, move |mut c, mut token| {
                            let cl = cl.clone();
                            async move {
                                let r =
                                    flows::refresh(&mut c, &cl, &mut token).await.map(|()| true);
                                (c, token, r)
                            }
                        })
                        .await
                        .0
                    })
                }
            });
        }
        let mut per_replica = Vec::new();
        for h in handles {
            per_replica.push(h.await.context("a replica's load task")?);
        }
        let db = before.delta_to(&url)?;
        let waits = sampler.stop()?;
        scenarios.push(Scenario {
            name,
            per_replica,
            db,
            waits,
        });
    }
    let sizes = table_sizes(&url)?;
    for s in servers {
        s.stop()?;
    }
    drop(database);
    Ok(CountReport {
        replicas: n,
        logins,
        scenarios,
        sizes,
    })
}

/// One config per replica, the same but for the listening ports: one issuer, one key.
fn replica_setups(
    dir: &Path,
    url: &str,
    password_hash: &str,
    n: usize,
    backlog: bool,
) -> anyhow::Result<Vec<Setup>> {
    let first_dir = dir.join("replica-1");
    std::fs::create_dir_all(&first_dir)?;
    let first = process::write_config(
        &first_dir,
        &Storage::Postgres(url.to_string()),
        password_hash,
    )?;
    let mut text = std::fs::read_to_string(&first.config)?;
    if backlog && !text.contains("\nhousekeeping:") {
        // Every replica sweeps on its own timer; a short one makes the sweeps overlap.
        text.push_str("housekeeping:\n  interval: 1s\n");
        std::fs::write(&first.config, &text)?;
    }
    let web = format!("web:\n  http: {}\n", first.web);
    let telemetry = format!("telemetry:\n  http: {}\n", first.telemetry);
    if !text.contains(&web) || !text.contains(&telemetry) {
        bail!("the benchmark's config no longer lists its ports as this module expects");
    }
    let mut setups = vec![first];
    for i in 2..=n {
        let dir = dir.join(format!("replica-{i}"));
        std::fs::create_dir_all(&dir)?;
        let (w, t) = (free_port()?, free_port()?);
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            text.replace(&web, &format!("web:\n  http: {w}\n"))
                .replace(&telemetry, &format!("telemetry:\n  http: {t}\n")),
        )?;
        setups.push(Setup {
            dir,
            config,
            web: w,
            telemetry: t,
        });
    }
    Ok(setups)
}

/// What PostgreSQL has written so far, and its CPU time. (Its row and transaction counters
/// are not used: an idle backend reports them seconds later.)
struct DbStats {
    wal: u64,
    cpu: Duration,
}

#[derive(Clone, Copy, Default)]
pub struct DbDelta {
    pub wal_bytes: u64,
    pub cpu: Duration,
}

impl DbStats {
    fn read(url: &str) -> anyhow::Result<Self> {
        let out = psql(url, "SELECT pg_current_wal_lsn() - '0/0'")?;
        let wal = out
            .trim()
            .parse::<f64>()
            .with_context(|| format!("pg_current_wal_lsn said {out:?}"))?;
        Ok(Self {
            wal: wal as u64,
            cpu: process::postgres_cpu(),
        })
    }

    fn delta_to(&self, url: &str) -> anyhow::Result<DbDelta> {
        let after = Self::read(url)?;
        Ok(DbDelta {
            wal_bytes: after.wal.saturating_sub(self.wal),
            cpu: after.cpu.saturating_sub(self.cpu),
        })
    }
}

/// What the sampler saw: PostgreSQL's active backends by wait event, and lock waits by
/// the statement that waited.
#[derive(Default)]
pub struct Waits {
    pub samples: u64,
    /// (wait event, backend-samples), most first; "CPU" is an active backend not waiting.
    pub events: Vec<(String, u64)>,
    /// (statement, backend-samples) of backends waiting on a heavyweight lock.
    pub locked: Vec<(String, u64)>,
}

impl Waits {
    fn active(&self) -> u64 {
        self.events.iter().map(|(_, c)| c).sum()
    }
}

/// psql repeating one query every 100 ms (`\watch`) into a file.
struct Sampler {
    child: Child,
    /// Held open: at the end of its input psql would exit.
    stdin: Option<std::process::ChildStdin>,
    out: PathBuf,
}

const SAMPLE: &str = "SELECT 's', '', 1 UNION ALL \
    SELECT 'a', coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) \
    FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' \
    AND pid <> pg_backend_pid() GROUP BY 2 UNION ALL \
    SELECT 'l', left(regexp_replace(query, '\\s+', ' ', 'g'), 70), count(*) \
    FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
    GROUP BY 2";

impl Sampler {
    fn start(url: &str, out: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::create(out)?;
        let mut child = Command::new("psql")
            .args([url, "-qAtX", "-F", "|"])
            .stdin(Stdio::piped())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("starting psql")?;
        let mut stdin = child.stdin.take().context("psql's stdin")?;
        writeln!(stdin, "{SAMPLE}\n\\watch 0.1")?;
        Ok(Self {
            child,
            stdin: Some(stdin),
            out: out.to_path_buf(),
        })
    }

    fn stop(mut self) -> anyhow::Result<Waits> {
        // SIGINT ends the watch; psql then reads the end of its input and exits, writing out
        // what it buffered (a SIGKILL would lose it).
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        drop(self.stdin.take());
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out)?;
        let mut waits = Waits::default();
        let mut events = std::collections::BTreeMap::<String, u64>::new();
        let mut locked = std::collections::BTreeMap::<String, u64>::new();
        for line in text.lines() {
            let mut f = line.splitn(3, '|');
            let (Some(kind), Some(what), Some(count)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let Ok(count) = count.trim().parse::<u64>() else {
                continue;
            };
            match kind {
                "s" => waits.samples += 1,
                "a" => *events.entry(what.to_string()).or_default() += count,
                "l" => *locked.entry(what.to_string()).or_default() += count,
                _ => {}
            }
        }
        let most_first = |m: std::collections::BTreeMap<String, u64>| {
            let mut v: Vec<_> = m.into_iter().collect();
            v.sort_by_key(|entry| std::cmp::Reverse(entry.1));
            v
        };
        waits.events = most_first(events);
        waits.locked = most_first(locked);
        Ok(waits)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub struct TableSize {
    pub table: String,
    pub rows: u64,
    pub heap: u64,
    /// (index, bytes)
    pub indexes: Vec<(String, u64)>,
}

fn table_sizes(url: &str) -> anyhow::Result<Vec<TableSize>> {
    let out = psql(
        url,
        "SELECT c.relname, (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n \
         FROM %I', c.relname), false, true, '')))[1]::text, pg_relation_size(c.oid), \
         coalesce((SELECT string_agg(i.relname || '=' || pg_relation_size(i.oid), ',' \
         ORDER BY i.relname) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         WHERE x.indrelid = c.oid), '') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname",
    )?;
    let mut sizes = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let [table, rows, heap, indexes] = f[..] else {
            continue;
        };
        sizes.push(TableSize {
            table: table.to_string(),
            rows: rows.parse().unwrap_or(0),
            heap: heap.parse().unwrap_or(0),
            indexes: indexes
                .split(',')
                .filter_map(|i| i.split_once('='))
                .map(|(name, b)| (name.to_string(), b.parse().unwrap_or(0)))
                .collect(),
        });
    }
    Ok(sizes)
}

fn us(d: Duration) -> String {
    format!("{:.0}us", d.as_secs_f64() * 1e6)
}

fn per(total: u64, n: u64) -> f64 {
    total as f64 / n.max(1) as f64
}

fn pct(part: u64, whole: u64) -> f64 {
    part as f64 * 100.0 / whole.max(1) as f64
}

fn print(plan: &Plan, reports: &[CountReport]) {
    println!();
    println!(
        "replicas on one PostgreSQL database: {} s per scenario, {} connections spread over the \
         replicas{}",
        plan.seconds.as_secs_f64(),
        plan.connections,
        if plan.backlog > 0 {
            format!(
                ", {} expired auth requests to sweep per scenario, housekeeping every 1 s",
                plan.backlog
            )
        } else {
            String::new()
        }
    );
    println!();
    println!(
        "{:<19} {:>8} {:>8} {:>7} {:>7} {:>8} | {:>10} {:>9}",
        "scenario", "replicas", "req/s", "p50", "p99", "cpu/req", "pg cpu/req", "WAL B/req"
    );
    println!("{}", "-".repeat(86));
    for name in [CLIENT_CREDENTIALS, REFRESH] {
        for r in reports {
            let Some(s) = r.scenarios.iter().find(|s| s.name == name) else {
                continue;
            };
            for (i, f) in s.per_replica.iter().enumerate() {
                println!(
                    "{:<19} {:>8} {:>8.0} {:>7} {:>7} {:>8} |",
                    if i == 0 { name } else { "" },
                    format!("{}/{}", i + 1, r.replicas),
                    f.rate(),
                    us(f.percentile(50.0)),
                    us(f.percentile(99.0)),
                    us(f.server_cpu_per_request()),
                );
            }
            let ok = s.ok();
            let lanyard_cpu: Duration = s.per_replica.iter().map(|f| f.server_cpu).sum();
            let worst_p99 = s
                .per_replica
                .iter()
                .map(|f| f.percentile(99.0))
                .max()
                .unwrap_or_default();
            println!(
                "{:<19} {:>8} {:>8.0} {:>7} {:>7} {:>8} | {:>10} {:>9.0}",
                "",
                "total",
                s.rate(),
                "",
                us(worst_p99),
                us(lanyard_cpu / u32::try_from(ok.max(1)).unwrap_or(u32::MAX)),
                us(s.db.cpu / u32::try_from(ok.max(1)).unwrap_or(u32::MAX)),
                per(s.db.wal_bytes, ok),
            );
        }
    }
    println!();
    println!("PostgreSQL's active backends while the load ran (sampled every 100 ms):");
    for r in reports {
        for s in &r.scenarios {
            let active = s.waits.active();
            let events: Vec<String> = s
                .waits
                .events
                .iter()
                .take(6)
                .map(|(e, c)| format!("{e} {:.0}%", pct(*c, active)))
                .collect();
            println!(
                "  {} replicas, {:<18} {:>4.1} active on average over {} samples: {}",
                r.replicas,
                s.name,
                per(active, s.waits.samples),
                s.waits.samples,
                events.join(", ")
            );
            for (statement, c) in s.waits.locked.iter().take(3) {
                println!("      waiting on a lock in {c} backend-samples: {statement}");
            }
        }
    }
    println!();
    println!("writes per login (first replica, before the load):");
    if let Some(r) = reports.first() {
        for (what, n, d) in &r.logins {
            println!(
                "  {what:<24} {n:>4} logins: {:>6.0} WAL bytes each",
                per(d.wal_bytes, *n)
            );
        }
    }
    if let Some(r) = reports.last() {
        println!();
        println!(
            "tables after the {}-replica run (bytes per row):",
            r.replicas
        );
        for t in r.sizes.iter().filter(|t| t.rows > 0) {
            let indexes: Vec<String> = t
                .indexes
                .iter()
                .map(|(i, b)| format!("{i} {:.0}", per(*b, t.rows)))
                .collect();
            println!(
                "  {:<16} {:>7} rows, heap {:>5.0}; {}",
                t.table,
                t.rows,
                per(t.heap, t.rows),
                indexes.join(", ")
            );
        }
    }
}

/// A line per scenario where a request failed or none succeeded.
fn failures(reports: &[CountReport]) -> Vec<String> {
    reports
        .iter()
        .flat_map(|r| {
            r.scenarios.iter().flat_map(move |s| {
                s.per_replica
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.errors > 0 || f.ok == 0)
                    .map(move |(i, f)| {
                        format!(
                            "{} replicas, replica {} {}: {} ok, {} errors, first: {}",
                            r.replicas,
                            i + 1,
                            s.name,
                            f.ok,
                            f.errors,
                            f.first_error.as_deref().unwrap_or("-")
                        )
                    })
            })
        })
        .collect()
}
