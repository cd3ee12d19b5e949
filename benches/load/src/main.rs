//! `lanyard-load`: starts a release lanyard on SQLite and on PostgreSQL, drives each endpoint
//! from a closed loop of keep-alive connections, measures the machine's own RSA and argon2id
//! limits in the same run, and prints one table. `benches/run.sh` builds and calls it.

mod fill;
mod flows;
mod http;
mod limits;
mod load;
mod process;
mod replicas;
mod scenarios;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use load::Figures;
use process::Storage;

const USAGE: &str = "usage: lanyard-load [--lanyard PATH] [--postgres URL | --no-postgres] \
[--no-sqlite] [--seconds N] [--connections N] [--login-connections N] [--fill] [--fill-rows N] \
[--turns N] [--housekeeping] [--replicas 1,2,3 [--replica-backlog ROWS]] [--smoke]\n\
  --fill          also run every scenario on a database filled to a realistic size first, \
and print filled against fresh; the two lanyards take turns, --turns each per scenario \
(default 4), the one waiting stopped\n\
  --fill-rows N   grants and refresh tokens in the filled database (default 1000000; a tenth \
as many users, a hundredth as many clients); also the expired rows of --housekeeping\n\
  --housekeeping  p99 of logins and refreshes while housekeeping deletes --fill-rows expired \
rows, beside the same load once it is done\n\
  --replicas      instead of the table, 1, 2 and 3 lanyards on one PostgreSQL database \
(see docs/scaling.md); --replica-backlog writes expired rows for their housekeeping to sweep\n\
  --smoke  one second per scenario and per limit, --fill and --housekeeping with 2000 rows, \
2 replicas; exit 1 if any request failed (for CI: it proves the command works, its figures \
mean nothing)";

struct Options {
    lanyard: PathBuf,
    /// Whether SQLite is measured (`--no-sqlite`: PostgreSQL only).
    sqlite: bool,
    postgres: Option<String>,
    seconds: u64,
    connections: usize,
    login_connections: usize,
    /// How long each machine limit is measured.
    limit_seconds: u32,
    /// Fail when a request failed.
    smoke: bool,
    /// Replica counts for `replicas::run`; empty: the usual table.
    replicas: Vec<usize>,
    replica_backlog: u64,
    /// Rows of `--fill` and `--housekeeping`.
    fill_rows: u64,
    fill: bool,
    /// Turns each of the fresh and the filled lanyard takes per scenario of `--fill`.
    turns: u32,
    housekeeping: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut lanyard = std::env::current_exe()?
        .parent()
        .context("the generator's own directory")?
        .join("lanyard");
    let mut postgres = std::env::var("DATABASE_URL").ok();
    let mut sqlite = true;
    let mut seconds = 5;
    let mut connections = 32;
    let mut login_connections = 8;
    let mut smoke = false;
    let mut replicas = Vec::new();
    let mut replica_backlog = 0;
    let (mut fill, mut housekeeping, mut fill_rows) = (false, false, None);
    let mut turns = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--lanyard" => lanyard = PathBuf::from(value("--lanyard")?),
            "--postgres" => postgres = Some(value("--postgres")?),
            "--no-postgres" => postgres = None,
            "--no-sqlite" => sqlite = false,
            "--smoke" => {
                smoke = true;
                seconds = 1;
            }
            "--fill" => fill = true,
            "--housekeeping" => housekeeping = true,
            "--fill-rows" => {
                fill_rows = Some(value("--fill-rows")?.parse().context("--fill-rows")?)
            }
            "--turns" => turns = Some(value("--turns")?.parse().context("--turns")?),
            "--seconds" => seconds = value("--seconds")?.parse().context("--seconds")?,
            "--connections" => {
                connections = value("--connections")?.parse().context("--connections")?
            }
            "--login-connections" => {
                login_connections = value("--login-connections")?
                    .parse()
                    .context("--login-connections")?;
            }
            "--replicas" => {
                replicas = value("--replicas")?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().map(|n| n.max(1)))
                    .collect::<Result<_, _>>()
                    .context("--replicas takes counts such as 1,2,3")?;
            }
            "--replica-backlog" => {
                replica_backlog = value("--replica-backlog")?
                    .parse()
                    .context("--replica-backlog")?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    // lanyard runs in a directory of its own, so a relative path would not find it.
    let lanyard = std::fs::canonicalize(&lanyard).with_context(|| {
        format!(
            "{} does not exist; build it with `cargo build --release`",
            lanyard.display()
        )
    })?;
    if !sqlite && postgres.is_none() {
        bail!("--no-sqlite leaves nothing to measure without DATABASE_URL or --postgres");
    }
    Ok(Options {
        lanyard,
        sqlite,
        postgres,
        seconds,
        connections: connections.max(1),
        login_connections: login_connections.max(1),
        limit_seconds: if smoke { 1 } else { 3 },
        smoke,
        replicas,
        replica_backlog,
        fill_rows: fill_rows.unwrap_or(if smoke { 2000 } else { 1_000_000 }),
        fill: fill || smoke,
        turns: turns.unwrap_or(if smoke { 2 } else { 4 }).max(1),
        housekeeping: housekeeping || smoke,
    })
}

impl Options {
    /// The databases measured, SQLite first.
    fn storages(&self) -> impl Iterator<Item = Storage> {
        let sqlite = self.sqlite.then_some(Storage::Sqlite);
        sqlite
            .into_iter()
            .chain(self.postgres.clone().map(Storage::Postgres))
    }
}

struct Report {
    storage: &'static str,
    ready_fresh: Duration,
    ready_restart: Duration,
    idle_rss_kib: u64,
    end_rss_kib: u64,
    peak_rss_kib: u64,
    rows: Vec<(&'static str, Figures)>,
    /// How long filling the database took, on a filled run.
    filled_in: Option<Duration>,
}

impl Report {
    fn rate(&self, scenario: &str) -> f64 {
        self.rows
            .iter()
            .find(|(n, _)| *n == scenario)
            .map_or(0.0, |(_, f)| f.rate())
    }

    /// lanyard's CPU time per request of a scenario.
    fn cpu(&self, scenario: &str) -> Duration {
        self.rows
            .iter()
            .find(|(n, _)| *n == scenario)
            .map_or(Duration::ZERO, |(_, f)| f.server_cpu_per_request())
    }
}

/// An authorization code and the PKCE verifier that redeems it.
type Code = (String, String);

const DISCOVERY: &str = "discovery";
const JWKS: &str = "jwks";
const CLIENT_CREDENTIALS: &str = "client_credentials";
const LOGIN: &str = "password login";
const CODE: &str = "authorization_code";
const REFRESH: &str = "refresh_token";

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.0}us", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// CPU per request to a tenth of a microsecond, for the verdicts: `ms` rounds 10.4 us to
/// "10us", which beside "(<= 10us): MISSED" reads as a contradiction.
fn us(d: Duration) -> String {
    format!("{:.1}us", d.as_secs_f64() * 1e6)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn print(opts: &Options, rsa: f64, argon: (f64, f64), cores: usize, reports: &[Report]) {
    let (argon_core, argon_parallel) = argon;
    println!();
    println!(
        "lanyard benchmark: {cores} cores, {} s per scenario, {} connections ({} for logins), {}",
        opts.seconds,
        opts.connections,
        opts.login_connections,
        opts.lanyard.display()
    );
    println!();
    print!("{:<20}", "scenario");
    for r in reports {
        print!(
            " | {:>42}",
            format!("{} req/s   p50   p99 cpu/req  load/req", r.storage)
        );
    }
    println!();
    println!("{}", "-".repeat(20 + reports.len() * 45));
    let names: Vec<&str> = reports
        .first()
        .map(|r| r.rows.iter().map(|(n, _)| *n).collect())
        .unwrap_or_default();
    for name in names {
        print!("{name:<20}");
        for r in reports {
            match r.rows.iter().find(|(n, _)| *n == name) {
                Some((_, f)) => print!(
                    " | {:>10.0} {:>7} {:>7} {:>7} {:>9}",
                    f.rate(),
                    ms(f.percentile(50.0)),
                    ms(f.percentile(99.0)),
                    ms(f.server_cpu_per_request()),
                    ms(f.generator_cpu_per_request())
                ),
                None => print!(" | {:>42}", "-"),
            }
        }
        println!();
    }
    for r in reports {
        for (name, f) in &r.rows {
            if f.errors > 0 {
                println!(
                    "  {} {name}: {} errors, first: {}",
                    r.storage,
                    f.errors,
                    f.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
    println!();
    for r in reports {
        println!(
            "{:<9} ready {} (fresh database, first key) / {} (restart); resident memory {} idle, {} after the load, {} peak",
            r.storage,
            ms(r.ready_fresh),
            ms(r.ready_restart),
            mib(r.idle_rss_kib),
            mib(r.end_rss_kib),
            mib(r.peak_rss_kib)
        );
    }
    let argon_limit = argon_core * cores as f64;
    println!();
    println!("machine limits, measured in this run:");
    println!("  RSA-2048 signatures/s on one core (openssl speed rsa2048): {rsa:.0}");
    println!(
        "  argon2id m={} t={} p={} hashes/s: {argon_core:.1} per core, so a limit of {argon_limit:.1} on {cores} cores \
         ({argon_parallel:.1} measured with {cores} threads hashing at once)",
        limits::ARGON2.memory_kib,
        limits::ARGON2.iterations,
        limits::ARGON2.parallelism
    );
    println!();
    println!("targets:");
    for r in reports {
        let refresh = r.rate(REFRESH) / rsa * 100.0;
        println!(
            "  {:<9} refresh_token {:>6.0}/s = {refresh:>4.0}% of one core's RSA-2048 rate (>= 100%): {}",
            r.storage,
            r.rate(REFRESH),
            verdict(refresh >= 100.0)
        );
        let login = r.rate(LOGIN) / argon_limit * 100.0;
        println!(
            "  {:<9} password logins {:>5.1}/s = {login:>4.0}% of the argon2id limit (>= 80%): {}",
            r.storage,
            r.rate(LOGIN),
            verdict(login >= 80.0)
        );
        for s in [DISCOVERY, JWKS] {
            println!(
                "  {:<9} {s} {:.0}/s (>= 30000): {}; cpu/req {} (<= 10us): {}",
                r.storage,
                r.rate(s),
                verdict(r.rate(s) >= 30_000.0),
                us(r.cpu(s)),
                verdict(r.cpu(s) <= Duration::from_micros(10))
            );
        }
        println!(
            "  {:<9} client_credentials cpu/req {} (<= 80us): {}",
            r.storage,
            us(r.cpu(CLIENT_CREDENTIALS)),
            verdict(r.cpu(CLIENT_CREDENTIALS) <= Duration::from_micros(80))
        );
        println!(
            "  {:<9} idle {} (<= 20 MiB): {}; under load {} peak (<= 64 MiB): {}",
            r.storage,
            mib(r.idle_rss_kib),
            verdict(r.idle_rss_kib <= 20 * 1024),
            mib(r.peak_rss_kib),
            verdict(r.peak_rss_kib <= 64 * 1024)
        );
        if r.storage == "sqlite" {
            println!(
                "  {:<9} client_credentials {:.0}/s (>= 10000): {}; ready {} (<= 200ms): {}",
                r.storage,
                r.rate(CLIENT_CREDENTIALS),
                verdict(r.rate(CLIENT_CREDENTIALS) >= 10_000.0),
                ms(r.ready_restart.max(r.ready_fresh)),
                verdict(r.ready_restart.max(r.ready_fresh) <= Duration::from_millis(200))
            );
        }
    }
}

// One thread: the generator takes at most one of the cores it shares with lanyard.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let opts = options()?;
    if !opts.replicas.is_empty() && !opts.smoke {
        return replicas_only(&opts).await;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("measuring this machine's limits (openssl speed rsa2048, argon2id)");
    let limit_time = Duration::from_secs(u64::from(opts.limit_seconds));
    let rsa = limits::openssl_rsa2048_signs_per_sec(opts.limit_seconds)?;
    let argon_core = limits::argon2id_per_core(limit_time)?;
    let argon_parallel = limits::argon2id_parallel(cores, limit_time)?;
    let password_hash = limits::argon2id_hash(flows::PASSWORD)?;

    let storages = opts.storages();
    if opts.postgres.is_none() {
        eprintln!("no DATABASE_URL or --postgres: PostgreSQL skipped");
    }
    let (mut reports, mut filled) = (Vec::new(), Vec::new());
    for storage in storages {
        if opts.fill {
            let fill = fill::Fill::Steady {
                rows: opts.fill_rows,
            };
            let (fresh, full) =
                scenarios::bench_fresh_and_filled(&opts, storage, &password_hash, fill).await?;
            reports.push(fresh);
            filled.push(full);
        } else {
            reports.push(scenarios::bench(&opts, storage, &password_hash).await?);
        }
    }
    let more = fill::extra_runs(&opts, &password_hash, filled).await?;
    print(&opts, rsa, (argon_core, argon_parallel), cores, &reports);
    more.print(&reports);
    if opts.smoke {
        println!("(a smoke run: it checks that every request succeeded, not the figures)");
        let mut failed: Vec<String> = reports
            .iter()
            .chain(&more.filled)
            .flat_map(|r| {
                r.rows
                    .iter()
                    .filter(|(_, f)| f.errors > 0 || f.ok == 0)
                    .map(move |(n, f)| {
                        format!("{} {n}: {} ok, {} errors", r.storage, f.ok, f.errors)
                    })
            })
            .collect();
        failed.extend(more.failures());
        if !failed.is_empty() {
            bail!("requests failed: {}", failed.join("; "));
        }
        if let Some(url) = &opts.postgres {
            let plan = replicas::Plan::smoke();
            replicas::run_and_print(&opts.lanyard, url, &password_hash, &plan, true).await?;
        }
    }
    Ok(())
}

async fn replicas_only(opts: &Options) -> anyhow::Result<()> {
    let url = opts
        .postgres
        .as_deref()
        .context("--replicas needs PostgreSQL: DATABASE_URL or --postgres")?;
    let plan = replicas::Plan {
        counts: opts.replicas.clone(),
        seconds: Duration::from_secs(opts.seconds),
        connections: opts.connections,
        backlog: opts.replica_backlog,
        logins: opts.login_connections,
    };
    let password_hash = limits::argon2id_hash(flows::PASSWORD)?;
    replicas::run_and_print(&opts.lanyard, url, &password_hash, &plan, false).await
}
