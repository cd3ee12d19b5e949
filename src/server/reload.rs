//! Config reload while serving: SIGHUP, or a change of the config file with `--watch-config`.
//!
//! A reload builds a whole new generation (static clients and passwords, connectors, the
//! `kubernetes` section, protocol settings, pages) from the new file and swaps it in at once;
//! requests in flight finish on the generation they started with. Storage, signing keys,
//! listeners, metrics and rate limiters are shared by every generation. A file that does not
//! validate changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lanyard_connectors::PasswordHasher;
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Mutex};

use super::app::{generation, learn_hash_kinds, AppError};
use super::failed_connector::ConnectorFailures;
use super::Live;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::SharedStorage;

/// Where the running config came from, and whether to watch it.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// `None` for the embedded default: there is nothing to reload.
    pub path: Option<PathBuf>,
    /// Look at the file this often and reload when its content changed.
    pub watch: Option<Duration>,
}

/// Applies new configs to a running server. Clones share one server.
#[derive(Clone)]
pub struct Reloader {
    inner: Arc<Inner>,
}

struct Inner {
    live: Live,
    storage: SharedStorage,
    hasher: Arc<PasswordHasher>,
    metrics: Arc<Metrics>,
    connector_failures: ConnectorFailures,
    /// The config in effect. Held across a whole reload, so reloads never interleave.
    running: Mutex<Config>,
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Changed settings that only a restart applies; their running values were kept.
    pub restart_needed: Vec<&'static str>,
}

impl Reloader {
    pub(super) fn new(
        running: Config,
        live: Live,
        storage: SharedStorage,
        hasher: Arc<PasswordHasher>,
        metrics: Arc<Metrics>,
        connector_failures: ConnectorFailures,
    ) -> Self {
        Reloader {
            inner: Arc::new(Inner {
                live,
                storage,
                hasher,
                metrics,
                connector_failures,
                running: Mutex::new(running),
            }),
        }
    }

    /// A copy of the config in effect (it waits for a reload under way).
    pub async fn running_config(&self) -> Config {
        self.inner.running.lock().await.clone()
    }

    /// Reads, validates and applies `path`. Every outcome is logged and counted; a file
    /// that does not validate is refused with the errors `check-config` prints, and the
    /// running config stays.
    pub async fn reload_file(&self, path: &Path, reason: &str) -> bool {
        let file = path.display().to_string();
        let next = match Config::load(path) {
            Ok(next) => next,
            Err(errors) => {
                self.inner.metrics.record_config_reload(false);
                for e in &errors.0 {
                    tracing::error!(file = %file, error = %e, "config reload refused: invalid config");
                }
                tracing::error!(file = %file, reason, errors = errors.0.len(), "config reload failed; still serving the previous config");
                return false;
            }
        };
        match self.apply(next).await {
            Ok(done) => {
                if !done.restart_needed.is_empty() {
                    tracing::warn!(file = %file, settings = %done.restart_needed.join(", "), "config reload: these changed settings need a restart and keep their running values");
                }
                true
            }
            Err(e) => {
                tracing::error!(file = %file, reason, error = %e, "config reload failed; still serving the previous config");
                false
            }
        }
    }

    /// Applies a validated config: requests that start from now on use it. Settings only a
    /// restart can change keep their running values (see [`Reloaded::restart_needed`]).
    pub async fn apply(&self, mut next: Config) -> Result<Reloaded, AppError> {
        let inner = &self.inner;
        let mut running = inner.running.lock().await;
        let restart_needed = keep_restart_only(&running, &mut next);
        let result = self.build_and_swap(&running, &next).await;
        inner.metrics.record_config_reload(result.is_ok());
        result?;
        tracing::info!(
            static_clients = next.static_clients.len(),
            static_passwords = next.static_passwords.len(),
            connectors = next.connectors.len(),
            clusters = next.kubernetes.clusters.len(),
            "config reloaded"
        );
        *running = next;
        Ok(Reloaded { restart_needed })
    }

    async fn build_and_swap(&self, running: &Config, next: &Config) -> Result<(), AppError> {
        let inner = &self.inner;
        if next.static_passwords != running.static_passwords {
            learn_hash_kinds(&inner.hasher, next, &inner.storage).await?;
        }
        let current = inner.live.current();
        let clock = current.provider.clock.clone();
        let state = generation(
            next,
            &inner.storage,
            &inner.hasher,
            &clock,
            inner.connector_failures,
            |s, c, k| current.provider.reconfigured(s, c, k),
        )?;
        inner.live.replace(state);
        Ok(())
    }
}

/// Settings a running server cannot change (they shape listeners, storage, keys, the logger
/// or the routes). Where `next` changes one, it gets the running value back, and its name is
/// returned.
fn keep_restart_only(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:tt)+) => {
            if running.$($field)+ != next.$($field)+ {
                changed.push($name);
                next.$($field)+ = running.$($field)+.clone();
            }
        };
    }
    keep!("issuer", issuer);
    keep!("storage", storage);
    keep!("web", web);
    keep!("telemetry", telemetry);
    keep!("grpc", grpc);
    keep!("logger", logger);
    keep!("keys", keys);
    // Both feed the signing keys' timeline.
    keep!("expiry.idTokens", expiry.id_tokens);
    keep!("expiry.signingKeys", expiry.signing_keys);
    changed
}

/// The config file's content digest; `None` while it cannot be read.
fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

/// Reloads on SIGHUP and, with `source.watch`, when the file's content changes, until `stop`
/// turns true.
pub async fn watch_config(
    reloader: Reloader,
    source: ConfigSource,
    mut stop: watch::Receiver<bool>,
) {
    let mut hangup = Hangup::install();
    let mut seen = source.path.as_deref().and_then(fingerprint);
    let mut ticker = tokio::time::interval(source.watch.unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reason = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = hangup.recv() => "SIGHUP",
            _ = ticker.tick(), if source.watch.is_some() => {
                let now = source.path.as_deref().and_then(fingerprint);
                if now == seen {
                    continue;
                }
                "the config file changed"
            }
        };
        let Some(path) = &source.path else {
            tracing::info!(
                reason,
                "nothing to reload: running the embedded default config"
            );
            continue;
        };
        tracing::info!(file = %path.display(), reason, "reloading the config");
        // Taken before reading, so a write during the reload is seen at the next tick.
        seen = fingerprint(path);
        reloader.reload_file(path, reason).await;
    }
}

/// SIGHUP, where there is such a thing. Installing it also stops SIGHUP from ending the
/// process, which is its default.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; config reload on SIGHUP is off");
                    None
                }
            };
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await
    }
}
