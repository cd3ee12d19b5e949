//! The table's scenarios against one lanyard, or against two at once (a fresh and a filled
//! database) taking turns: the machine's speed drifts by more than the 20% the filled
//! database may cost, so figures minutes apart cannot tell the data from the drift, while
//! turns of a few seconds, in the order ABBA, see both sides through the same drift.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::flows::{self, Client, Session};
use crate::load::{self, Figures};
use crate::process::{self, Server, Storage};
use crate::{fill, Code, Options, Report};
use crate::{CLIENT_CREDENTIALS, CODE, DISCOVERY, JWKS, LOGIN, REFRESH};

const SCENARIOS: [&str; 6] = [DISCOVERY, JWKS, CLIENT_CREDENTIALS, LOGIN, CODE, REFRESH];

/// One lanyard under measurement, and what its scenarios leave for the next ones.
struct Side {
    storage: &'static str,
    /// Dropped (with the database) when the side is.
    _database: Option<process::Database>,
    dir: PathBuf,
    server: Server,
    addr: SocketAddr,
    ready_fresh: Duration,
    ready_restart: Duration,
    idle_rss_kib: u64,
    filled_in: Option<Duration>,
    rows: Vec<(&'static str, Figures)>,
    /// Signed-in browsers, from the logins.
    sessions: Vec<Session>,
    /// Refresh tokens from redeemed codes.
    redeemed: Vec<String>,
    /// The refreshing workers' tokens, carried from turn to turn.
    refreshing: Option<Vec<String>>,
}

impl Side {
    async fn start(
        opts: &Options,
        storage: Storage,
        password_hash: &str,
        fill: Option<fill::Fill>,
    ) -> anyhow::Result<Side> {
        let name = storage.name();
        let tag = if fill.is_some() { "filled" } else { "fresh" };
        let dir =
            std::env::temp_dir().join(format!("lanyard-bench-{}-{name}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (database, storage) = process::own_database(&storage)?;
        let setup = process::write_config(&dir, &storage, password_hash)?;
        eprintln!("[{name} {tag}] first start (creates the schema and the first key)");
        let first = Server::start(&opts.lanyard, &setup).await?;
        let ready_fresh = first.ready_after;
        first.stop()?;
        let filled_in = match fill {
            Some(f) => {
                eprintln!(
                    "[{name} {tag}] filling the database ({} rows)",
                    f.counts().total()
                );
                Some(f.apply(&opts.lanyard, &setup, &storage, password_hash)?)
            }
            None => None,
        };
        let server = Server::start(&opts.lanyard, &setup).await?;
        let ready_restart = server.ready_after;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let idle_rss_kib = process::rss_kib(server.pid());
        Ok(Side {
            storage: name,
            _database: database,
            dir,
            addr: setup.web,
            server,
            ready_fresh,
            ready_restart,
            idle_rss_kib,
            filled_in,
            rows: Vec::new(),
            sessions: Vec::new(),
            redeemed: Vec::new(),
            refreshing: None,
        })
    }

    fn label(&self) -> String {
        let tag = if self.filled_in.is_some() {
            "filled"
        } else {
            "fresh"
        };
        format!("{} {tag}", self.storage)
    }

    /// Adds one turn's figures to the scenario's.
    fn record(&mut self, scenario: &'static str, figures: Figures) {
        match self.rows.iter_mut().find(|(n, _)| *n == scenario) {
            Some((_, total)) => total.add(figures),
            None => self.rows.push((scenario, figures)),
        }
    }

    fn finish(self) -> anyhow::Result<Report> {
        let pid = self.server.pid();
        let end_rss_kib = process::rss_kib(pid);
        let peak_rss_kib = process::peak_rss_kib(pid);
        self.server.stop()?;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(Report {
            storage: self.storage,
            ready_fresh: self.ready_fresh,
            ready_restart: self.ready_restart,
            idle_rss_kib: self.idle_rss_kib,
            end_rss_kib,
            peak_rss_kib,
            rows: self.rows,
            filled_in: self.filled_in,
        })
    }
}

/// Every scenario against one lanyard on a fresh database.
pub async fn bench(
    opts: &Options,
    storage: Storage,
    password_hash: &str,
) -> anyhow::Result<Report> {
    let mut sides = [Side::start(opts, storage, password_hash, None).await?];
    take_turns(opts, &mut sides, 1).await?;
    let [side] = sides;
    side.finish()
}

/// Every scenario against a lanyard on a fresh database and one on a filled database, in
/// `--turns` turns each: (fresh, filled).
pub async fn bench_fresh_and_filled(
    opts: &Options,
    storage: Storage,
    password_hash: &str,
    fill: fill::Fill,
) -> anyhow::Result<(Report, Report)> {
    let fresh = Side::start(opts, storage.clone(), password_hash, None).await?;
    // The one waiting its turn is stopped (SIGSTOP): its timers (housekeeping) fire in its
    // own turns, never on the other's clock.
    process::pause(fresh.server.pid())?;
    let filled = Side::start(opts, storage, password_hash, Some(fill)).await?;
    process::pause(filled.server.pid())?;
    let mut sides = [fresh, filled];
    take_turns(opts, &mut sides, opts.turns).await?;
    let [fresh, filled] = sides;
    Ok((fresh.finish()?, filled.finish()?))
}

/// Each scenario in `turns` (at least 1) turns per side, a side's turn `seconds / turns`
/// long: with two sides, in the order ABBA, so that a drift that is steady over the scenario
/// falls on both.
async fn take_turns(opts: &Options, sides: &mut [Side], turns: u32) -> anyhow::Result<()> {
    let client = Arc::new(Client::new());
    let turn = Duration::from_secs(opts.seconds) / turns;
    let taking_turns = sides.len() > 1;
    for scenario in SCENARIOS {
        for round in 0..turns {
            let mut order: Vec<usize> = (0..sides.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let side = &mut sides[i];
                let pid = side.server.pid();
                eprintln!("[{}] {scenario}", side.label());
                if taking_turns {
                    process::resume(pid)?;
                }
                let figures = run_scenario(opts, &client, side, scenario, turn).await;
                if taking_turns {
                    process::pause(pid)?;
                }
                side.record(scenario, figures?);
            }
        }
    }
    for side in sides.iter() {
        if taking_turns {
            process::resume(side.server.pid())?;
        }
    }
    Ok(())
}

/// One turn of one scenario: `turn` of load (the codes' redemption: until every code made in
/// the turn is redeemed).
async fn run_scenario(
    opts: &Options,
    client: &Arc<Client>,
    side: &mut Side,
    scenario: &'static str,
    turn: Duration,
) -> anyhow::Result<Figures> {
    let (addr, pid, name) = (side.addr, side.server.pid(), side.label());
    let connections = opts.connections;
    let figures = match scenario {
        DISCOVERY | JWKS => {
            let path = if scenario == DISCOVERY {
                "/.well-known/openid-configuration"
            } else {
                "/keys"
            };
            let (f, _) = load::run(
                addr,
                pid,
                vec![(); connections],
                Some(turn),
                move |mut c, s| async move {
                    let r = flows::get_ok(&mut c, path).await.map(|()| true);
                    (c, s, r)
                },
            )
            .await;
            f
        }
        CLIENT_CREDENTIALS => {
            let cl = client.clone();
            let (f, _) = load::run(
                addr,
                pid,
                vec![(); connections],
                Some(turn),
                move |mut c, s| {
                    let cl = cl.clone();
                    async move {
                        let r = flows::client_credentials(&mut c, &cl).await.map(|()| true);
                        (c, s, r)
                    }
                },
            )
            .await;
            f
        }
        LOGIN => {
            let cl = client.clone();
            let (f, done) = load::run(
                addr,
                pid,
                (0..opts.login_connections)
                    .map(|person| (person, Vec::<Session>::new()))
                    .collect(),
                Some(turn),
                move |mut c, (person, mut done)| {
                    let cl = cl.clone();
                    async move {
                        let r = flows::password_login(&mut c, &cl, person).await.map(|s| {
                            done.push(s);
                            true
                        });
                        (c, (person, done), r)
                    }
                },
            )
            .await;
            side.sessions.extend(done.into_iter().flat_map(|(_, s)| s));
            if side.sessions.is_empty() {
                bail!(
                    "[{name}] no password login succeeded: {}",
                    f.first_error.clone().unwrap_or_default()
                );
            }
            f
        }
        CODE => {
            // Codes come from signed-in browsers (no password), made before the clock starts
            // so that only their redemption is timed.
            let browsers: Vec<(crate::http::Jar, Vec<Code>)> = side
                .sessions
                .iter()
                .take(connections)
                .map(|s| (s.jar.clone(), Vec::new()))
                .collect();
            let (made, browsers) = load::run(
                addr,
                pid,
                browsers,
                Some(turn / 2),
                |mut c, (mut jar, mut codes)| async move {
                    let r = flows::code_from_session(&mut c, &mut jar)
                        .await
                        .map(|code| {
                            codes.push(code);
                            true
                        });
                    (c, (jar, codes), r)
                },
            )
            .await;
            if made.ok == 0 {
                bail!(
                    "[{name}] no code was made: {}",
                    made.first_error.unwrap_or_default()
                );
            }
            let codes: Vec<Code> = browsers.into_iter().flat_map(|(_, c)| c).collect();
            let per_worker = codes.len().div_ceil(connections);
            let queues: Vec<(Vec<Code>, Vec<String>)> = codes
                .chunks(per_worker.max(1))
                .map(|c| (c.to_vec(), Vec::new()))
                .collect();
            let cl = client.clone();
            let (f, redeemed) = load::run(
                addr,
                pid,
                queues,
                None,
                move |mut c, (mut queue, mut refresh)| {
                    let cl = cl.clone();
                    async move {
                        let Some((code, verifier)) = queue.pop() else {
                            return (c, (queue, refresh), Ok(false));
                        };
                        let r = flows::redeem(&mut c, &cl, &code, &verifier)
                            .await
                            .and_then(|t| {
                                let rt = t["refresh_token"].as_str().context("no refresh_token")?;
                                refresh.push(rt.to_string());
                                Ok(true)
                            });
                        (c, (queue, refresh), r)
                    }
                },
            )
            .await;
            side.redeemed
                .extend(redeemed.into_iter().flat_map(|(_, r)| r));
            f
        }
        REFRESH => {
            let tokens = match side.refreshing.take() {
                Some(tokens) => tokens,
                None => side
                    .redeemed
                    .drain(..)
                    .chain(side.sessions.iter().map(|s| s.refresh_token.clone()))
                    .take(connections)
                    .collect(),
            };
            let cl = client.clone();
            let (f, tokens) = load::run(addr, pid, tokens, Some(turn), move |mut c, mut token| {
                let cl = cl.clone();
                async move {
                    let r = flows::refresh(&mut c, &cl, &mut token).await.map(|()| true);
                    (c, token, r)
                }
            })
            .await;
            side.refreshing = Some(tokens);
            f
        }
        other => bail!("no scenario {other}"),
    };
    Ok(figures)
}
