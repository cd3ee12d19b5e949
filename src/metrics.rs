//! Prometheus metrics in text exposition format, kept without a metrics framework: a few
//! labelled counters and one histogram behind mutexes are all lanyard needs. Label values
//! are bounded: routes are matched patterns ("unmatched" otherwise), clients and connectors
//! come from configuration or storage, errors from the protocol's fixed codes.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::keys::{KeyManager, KeyState};

/// Storage errors seen anywhere (the error conversions count them; they hold no registry).
static STORAGE_ERRORS: AtomicU64 = AtomicU64::new(0);

pub fn count_storage_error() {
    STORAGE_ERRORS.fetch_add(1, Ordering::Relaxed);
}

const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Cumulative counts per bucket, as Prometheus expects them.
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// One route's requests by (method, status), and its latency histogram. A route sees few
/// methods and statuses, so a list searched in place beats a map keyed by owned strings,
/// which would allocate on every request.
#[derive(Default)]
struct RouteStats {
    requests: Vec<(String, u16, u64)>,
    latency: Histogram,
}

#[derive(Default)]
pub struct Metrics {
    /// By matched route; one lock for both of a request's counts.
    http: Mutex<BTreeMap<String, RouteStats>>,
    logins: Mutex<BTreeMap<(String, String), u64>>,
    /// By grant, then client: looked up by `&str`, without allocating per token.
    tokens_issued: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    token_errors: Mutex<BTreeMap<String, u64>>,
    config_reloads_ok: AtomicU64,
    config_reloads_failed: AtomicU64,
    /// The serving generation's connectors, in config order.
    connectors: Mutex<Vec<(String, Arc<ConnectorHealth>)>>,
}

/// Whether a connector can serve: shown on its login button, logged when it changes, and
/// exported as `lanyard_connector_up`.
#[derive(Debug, Default)]
pub struct ConnectorHealth {
    /// Why it cannot serve; `None` while it can.
    failure: Mutex<Option<String>>,
    /// It failed to open: nothing but a reload (or restart) that opens it again brings it back.
    open_failed: bool,
}

impl ConnectorHealth {
    pub fn up() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A connector that could not be opened (bad settings, unreadable files).
    pub fn failed_to_open(reason: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            failure: Mutex::new(Some(reason.into())),
            open_failed: true,
        })
    }

    pub fn is_up(&self) -> bool {
        self.failure().is_none()
    }

    pub fn failed_at_open(&self) -> bool {
        self.open_failed
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// The upstream answered; a connector that failed to open stays failed.
    pub fn reached(&self) {
        if self.open_failed {
            return;
        }
        if let Ok(mut f) = self.failure.lock() {
            *f = None;
        }
    }

    /// The upstream could not be reached; the next use tries again.
    pub fn unreachable(&self, reason: impl Into<String>) {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(reason.into());
        }
    }
}

fn bump<K: Ord>(map: &Mutex<BTreeMap<K, u64>>, key: K) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_insert(0) += 1;
    }
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let Ok(mut m) = self.http.lock() else {
            return;
        };
        if !m.contains_key(route) {
            m.insert(route.to_string(), RouteStats::default());
        }
        let Some(stats) = m.get_mut(route) else {
            return;
        };
        match stats
            .requests
            .iter_mut()
            .find(|(m, s, _)| m == method && *s == status)
        {
            Some((_, _, n)) => *n += 1,
            None => stats.requests.push((method.to_string(), status, 1)),
        }
        let h = &mut stats.latency;
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// A password login: `success`, `failure` (wrong credentials), `rate_limited` or `error`.
    pub fn record_login(&self, connector: &str, result: &str) {
        bump(&self.logins, (connector.to_string(), result.to_string()));
    }

    pub fn record_token(&self, grant: crate::config::GrantType, client: &str) {
        let Ok(mut m) = self.tokens_issued.lock() else {
            return;
        };
        let grant = grant.metrics_label();
        if !m.contains_key(grant) {
            m.insert(grant.to_string(), BTreeMap::new());
        }
        let Some(clients) = m.get_mut(grant) else {
            return;
        };
        match clients.get_mut(client) {
            Some(n) => *n += 1,
            None => {
                clients.insert(client.to_string(), 1);
            }
        }
    }

    pub fn record_token_error(&self, error: &str) {
        bump(&self.token_errors, error.to_string());
    }

    /// One config reload (SIGHUP or a changed file), applied or refused.
    pub fn record_config_reload(&self, success: bool) {
        let counter = if success {
            &self.config_reloads_ok
        } else {
            &self.config_reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The connectors a new generation serves with (replacing the previous generation's).
    pub fn track_connectors(&self, connectors: Vec<(String, Arc<ConnectorHealth>)>) {
        if let Ok(mut c) = self.connectors.lock() {
            *c = connectors;
        }
    }

    pub fn render(&self, keys: &KeyManager, now: i64) -> String {
        let mut out = String::new();
        header(
            &mut out,
            "lanyard_build_info",
            "gauge",
            "Build information.",
        );
        let _ = writeln!(
            out,
            "lanyard_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        header(
            &mut out,
            "lanyard_http_requests_total",
            "counter",
            "HTTP requests by matched route, method and status.",
        );
        if let Ok(m) = self.http.lock() {
            for (route, stats) in m.iter() {
                let mut requests: Vec<_> = stats.requests.iter().collect();
                requests.sort();
                for (method, status, n) in requests {
                    let _ = writeln!(
                    out,
                        "lanyard_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                        escape(route),
                        escape(method),
                        status,
                        n
                    );
                }
            }
        }
        header(
            &mut out,
            "lanyard_http_request_duration_seconds",
            "histogram",
            "HTTP request latency by matched route.",
        );
        if let Ok(m) = self.http.lock() {
            for (route, stats) in m.iter() {
                let h = &stats.latency;
                let route = escape(route);
                for (bound, n) in BUCKETS.iter().zip(h.buckets.iter()) {
                    let _ = writeln!(
                        out,
                        "lanyard_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "lanyard_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "lanyard_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "lanyard_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        header(
            &mut out,
            "lanyard_logins_total",
            "counter",
            "Password logins by connector and result.",
        );
        if let Ok(m) = self.logins.lock() {
            for ((connector, result), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lanyard_logins_total{{connector=\"{}\",result=\"{}\"}} {n}",
                    escape(connector),
                    escape(result)
                );
            }
        }
        header(
            &mut out,
            "lanyard_tokens_issued_total",
            "counter",
            "Token responses by grant type and client.",
        );
        if let Ok(m) = self.tokens_issued.lock() {
            for (grant, clients) in m.iter() {
                for (client, n) in clients {
                    let _ = writeln!(
                        out,
                        "lanyard_tokens_issued_total{{grant=\"{}\",client=\"{}\"}} {n}",
                        escape(grant),
                        escape(client)
                    );
                }
            }
        }
        header(
            &mut out,
            "lanyard_token_errors_total",
            "counter",
            "Token endpoint errors by OAuth error code.",
        );
        if let Ok(m) = self.token_errors.lock() {
            for (error, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "lanyard_token_errors_total{{error=\"{}\"}} {n}",
                    escape(error)
                );
            }
        }
        header(
            &mut out,
            "lanyard_storage_errors_total",
            "counter",
            "Storage operations that failed.",
        );
        let _ = writeln!(
            out,
            "lanyard_storage_errors_total {}",
            STORAGE_ERRORS.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "lanyard_signing_key_rotations_total",
            "counter",
            "Successor signing keys this process created (the first key is not a rotation).",
        );
        let _ = writeln!(
            out,
            "lanyard_signing_key_rotations_total {}",
            keys.rotations()
        );
        header(
            &mut out,
            "lanyard_signing_key_rotation_period_seconds",
            "gauge",
            "How long each signing key signs before its successor takes over (keys.rotationPeriod).",
        );
        let _ = writeln!(
            out,
            "lanyard_signing_key_rotation_period_seconds {}",
            keys.rotation_period().as_secs()
        );
        header(
            &mut out,
            "lanyard_config_reloads_total",
            "counter",
            "Config reloads by result: success (applied) or failure (refused; the previous config stays).",
        );
        for (result, counter) in [
            ("success", &self.config_reloads_ok),
            ("failure", &self.config_reloads_failed),
        ] {
            let _ = writeln!(
                out,
                "lanyard_config_reloads_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        header(
            &mut out,
            "lanyard_connector_up",
            "gauge",
            "1 when the connector can serve, 0 when it failed to open or its upstream was unreachable at last use.",
        );
        if let Ok(c) = self.connectors.lock() {
            for (id, health) in c.iter() {
                let _ = writeln!(
                    out,
                    "lanyard_connector_up{{connector=\"{}\"}} {}",
                    escape(id),
                    u8::from(health.is_up())
                );
            }
        }
        header(
            &mut out,
            "lanyard_signing_key_age_seconds",
            "gauge",
            "Seconds since the current signing key started signing.",
        );
        if let Some(k) = keys
            .key_statuses()
            .into_iter()
            .find(|k| k.state == KeyState::Signing)
        {
            let _ = writeln!(
                out,
                "lanyard_signing_key_age_seconds {}",
                (now - k.sign_from).max(0)
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
