//! Closed-loop load: N connections, each sending its next request as soon as the last one is
//! answered, for a fixed time or until a fixed amount of work is done.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::http::Conn;

/// What one scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Sorted, in microseconds.
    latencies: Vec<u32>,
    /// lanyard's CPU time (user + system) over the scenario.
    pub server_cpu: Duration,
    /// The generator's own CPU time over the scenario: what the load took from the cores.
    pub generator_cpu: Duration,
    /// The local PostgreSQL server's CPU time over the scenario (all its processes: on a run
    /// on SQLite, what else used it).
    pub postgres_cpu: Duration,
}

impl Figures {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        Duration::from_micros(u64::from(
            self.latencies[rank.min(self.latencies.len() - 1)],
        ))
    }

    /// Adds the figures of another turn of the same scenario.
    pub fn add(&mut self, turn: Figures) {
        self.ok += turn.ok;
        self.errors += turn.errors;
        if self.first_error.is_none() {
            self.first_error = turn.first_error;
        }
        self.elapsed += turn.elapsed;
        self.latencies.extend(turn.latencies);
        self.latencies.sort_unstable();
        self.server_cpu += turn.server_cpu;
        self.generator_cpu += turn.generator_cpu;
        self.postgres_cpu += turn.postgres_cpu;
    }

    /// lanyard's CPU time per successful request.
    pub fn server_cpu_per_request(&self) -> Duration {
        self.per_request(self.server_cpu)
    }

    /// PostgreSQL's CPU time per successful request.
    pub fn postgres_cpu_per_request(&self) -> Duration {
        self.per_request(self.postgres_cpu)
    }

    /// The generator's CPU time per successful request.
    pub fn generator_cpu_per_request(&self) -> Duration {
        self.per_request(self.generator_cpu)
    }

    fn per_request(&self, cpu: Duration) -> Duration {
        if self.ok == 0 {
            return Duration::ZERO;
        }
        cpu / u32::try_from(self.ok).unwrap_or(u32::MAX)
    }
}

/// Runs `connections` workers; each owns a state from `states` and calls `step` until
/// `deadline` passes or `step` answers `Ok(false)` (its work is done); returns the figures
/// and the workers' final states.
pub async fn run<S, F, Fut>(
    addr: SocketAddr,
    pid: u32,
    states: Vec<S>,
    deadline: Option<Duration>,
    step: F,
) -> (Figures, Vec<S>)
where
    S: Send + 'static,
    F: Fn(Conn, S) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = (Conn, S, anyhow::Result<bool>)> + Send,
{
    let cpu_before = crate::process::cpu_time(pid);
    let own_before = crate::process::cpu_time(std::process::id());
    let postgres_before = crate::process::postgres_cpu();
    let started = Instant::now();
    let end = deadline.map(|d| started + d);
    let mut workers = Vec::new();
    for state in states {
        let step = step.clone();
        workers.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut state = state;
            let mut figures = Figures::default();
            loop {
                if end.is_some_and(|e| Instant::now() >= e) {
                    break;
                }
                let t = Instant::now();
                let (c, s, outcome) = step(conn, state).await;
                conn = c;
                state = s;
                match outcome {
                    Ok(true) => {
                        figures.ok += 1;
                        let us = t.elapsed().as_micros();
                        figures
                            .latencies
                            .push(u32::try_from(us).unwrap_or(u32::MAX));
                    }
                    Ok(false) => break,
                    Err(e) => {
                        figures.errors += 1;
                        figures.first_error.get_or_insert_with(|| format!("{e:#}"));
                        // A broken worker (a lost refresh token) must not spin.
                        if figures.errors > 100 {
                            break;
                        }
                    }
                }
            }
            (figures, state)
        }));
    }
    let mut total = Figures::default();
    let mut states = Vec::new();
    for w in workers {
        if let Ok((f, state)) = w.await {
            states.push(state);
            total.ok += f.ok;
            total.errors += f.errors;
            if total.first_error.is_none() {
                total.first_error = f.first_error;
            }
            total.latencies.extend(f.latencies);
        }
    }
    total.elapsed = started.elapsed();
    total.server_cpu = crate::process::cpu_time(pid).saturating_sub(cpu_before);
    total.generator_cpu = crate::process::cpu_time(std::process::id()).saturating_sub(own_before);
    total.postgres_cpu = crate::process::postgres_cpu().saturating_sub(postgres_before);
    total.latencies.sort_unstable();
    (total, states)
}
