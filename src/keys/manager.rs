//! The key manager: a cached, parsed view of the stored keys, and the rotation that replicas
//! agree on through the database.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::crypto::{self, ParsedKey};
use super::store::KeyStore;
use super::{jws, secs, KeyError, KeySettings, SigningAlg};
use crate::clock::{SharedClock, UnixTime};
use crate::storage::SigningKey;

/// The JWKS document, serialised once per key-set change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    /// `{"keys":[...]}` as served.
    pub body: Vec<u8>,
    /// A strong ETag: the quoted base64url SHA-256 of `body`.
    pub etag: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationOutcome {
    /// The kid this call created, if it won the race to create one.
    pub created: Option<String>,
    /// The kids this call deleted because their publish window had ended.
    pub pruned: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, signs later.
    Upcoming,
    /// The key that signs now.
    Signing,
    /// No longer signs; published until the tokens it signed have expired.
    Retired,
    /// Past its publish window; the next rotation deletes it.
    Expired,
}

/// One key as `lanyard keys` or metrics show it. No key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    pub kid: String,
    pub alg: SigningAlg,
    pub created_at: UnixTime,
    pub sign_from: UnixTime,
    /// `None` while the key has no successor.
    pub publish_until: Option<UnixTime>,
    pub state: KeyState,
}

/// A stored key with its place on the timeline and its parsed material.
struct Entry {
    created_at: UnixTime,
    sign_from: UnixTime,
    publish_until: Option<UnixTime>,
    parsed: Arc<ParsedKey>,
}

impl Entry {
    fn published_at(&self, t: UnixTime) -> bool {
        self.created_at <= t && self.publish_until.is_none_or(|until| t < until)
    }
}

struct Snapshot {
    /// Ascending by (sign_from, kid). Shared between snapshots that differ only in `jwks`.
    entries: Arc<[Entry]>,
    jwks: Arc<Jwks>,
    /// `jwks` is the published set for every time in [jwks_from, jwks_until).
    jwks_from: UnixTime,
    jwks_until: UnixTime,
}

impl Snapshot {
    fn new(entries: Arc<[Entry]>, now: UnixTime) -> Result<Self, KeyError> {
        let (jwks, jwks_from, jwks_until) = build_jwks(&entries, now)?;
        Ok(Snapshot {
            entries,
            jwks: Arc::new(jwks),
            jwks_from,
            jwks_until,
        })
    }

    /// The key with the greatest sign_from <= t.
    fn signing_entry(&self, t: UnixTime) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.sign_from <= t)
    }
}

fn build_jwks(entries: &[Entry], now: UnixTime) -> Result<(Jwks, UnixTime, UnixTime), KeyError> {
    let keys: Vec<Value> = entries
        .iter()
        .filter(|e| e.published_at(now))
        .map(|e| Value::Object(e.parsed.jwk.clone()))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "keys": keys }))
        .map_err(|e| KeyError::Crypto(format!("cannot serialise JWKS: {e}")))?;
    let etag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(Sha256::digest(&body)));
    // The published set only changes when a key appears or its window ends.
    let boundaries = entries
        .iter()
        .flat_map(|e| std::iter::once(e.created_at).chain(e.publish_until));
    let mut from = UnixTime::MIN;
    let mut until = UnixTime::MAX;
    for b in boundaries {
        if b <= now {
            from = from.max(b);
        } else {
            until = until.min(b);
        }
    }
    Ok((Jwks { body, etag }, from, until))
}

/// When each stored key stops being published: its successor's sign_from + token lifetime.
fn publish_until(rows: &[SigningKey], token_lifetime: i64) -> HashMap<&str, UnixTime> {
    rows.iter()
        .filter(|r| !r.successor_of.is_empty())
        .map(|r| {
            (
                r.successor_of.as_str(),
                r.sign_from.saturating_add(token_lifetime),
            )
        })
        .collect()
}

pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    clock: SharedClock,
    settings: KeySettings,
    state: RwLock<Arc<Snapshot>>,
    /// Serialises reloads so that an older read of the store never replaces a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    /// Keys this process created (for metrics).
    rotations: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KeyManager {
    /// Loads keys from storage, creates the first one if there is none (sign_from = now:
    /// nothing can have cached an older JWKS), and decrypts and parses them once into the cache.
    pub async fn start(
        store: Arc<dyn KeyStore>,
        clock: SharedClock,
        settings: KeySettings,
    ) -> Result<Arc<Self>, KeyError> {
        settings.validate()?;
        let now = clock.now();
        let empty = Snapshot::new(Arc::from(Vec::new()), now)?;
        let manager = KeyManager {
            store,
            clock,
            settings,
            state: RwLock::new(Arc::new(empty)),
            reload_lock: tokio::sync::Mutex::new(()),
            rotations: std::sync::atomic::AtomicU64::new(0),
        };
        let rows = manager.store.list_signing_keys().await?;
        let fresh = if rows.is_empty() {
            manager.create_key(None).await?
        } else {
            None
        };
        manager.reload_with(fresh).await?;
        Ok(Arc::new(manager))
    }

    /// Creates the successor when due, prunes keys past their publish window and reloads the
    /// cache. Safe to call from many replicas at once: the store lets exactly one successor in.
    pub async fn rotate_if_due(&self) -> Result<RotationOutcome, KeyError> {
        let rows = self.store.list_signing_keys().await?;
        let now = self.clock.now();
        let mut outcome = RotationOutcome::default();

        let latest = rows
            .iter()
            .max_by(|a, b| (a.sign_from, &a.kid).cmp(&(b.sign_from, &b.kid)));
        let due = match latest {
            None => true,
            Some(l) => {
                now >= l
                    .sign_from
                    .saturating_add(secs(self.settings.rotation_period))
                    .saturating_sub(secs(self.settings.publish_ahead))
            }
        };
        let fresh = if due {
            self.create_key(latest).await?
        } else {
            None
        };
        if let Some(parsed) = &fresh {
            tracing::info!(kid = %parsed.kid, alg = %parsed.alg, "created signing key");
            outcome.created = Some(parsed.kid.clone());
            self.rotations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }

        let until = publish_until(&rows, secs(self.settings.token_lifetime));
        for row in &rows {
            if until.get(row.kid.as_str()).is_some_and(|&u| now >= u)
                && self.store.delete_signing_key(&row.kid).await?
            {
                tracing::info!(kid = %row.kid, "deleted signing key past its publish window");
                outcome.pruned.push(row.kid.clone());
            }
        }

        self.reload_with(fresh).await?;
        Ok(outcome)
    }

    /// Reloads from storage (another replica may have rotated). Keys already parsed are
    /// reused by kid, never parsed again.
    pub async fn reload(&self) -> Result<(), KeyError> {
        self.reload_with(None).await
    }

    /// Signs a JWT with the key whose sign_from is the latest <= now. The header carries
    /// `alg`, `kid` and `typ: JWT`.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, KeyError> {
        let snapshot = self.snapshot();
        let entry = snapshot
            .signing_entry(self.clock.now())
            .ok_or(KeyError::NoSigningKey)?;
        jws::sign(&entry.parsed, claims)
    }

    /// Verifies a compact JWS against our published keys: the kid must be one of them and
    /// the header's alg must equal that key's algorithm. Returns the claims; `exp` and the
    /// other claims are the caller's to check (an expired id_token_hint is still valid).
    pub fn verify(&self, jwt: &str) -> Result<Map<String, Value>, KeyError> {
        let token = jws::parse(jwt)?;
        let snapshot = self.snapshot();
        let now = self.clock.now();
        let entry = snapshot
            .entries
            .iter()
            .find(|e| e.parsed.kid == token.kid && e.published_at(now))
            .ok_or(KeyError::InvalidToken("unknown kid"))?;
        token.verify(&entry.parsed)
    }

    /// The JWKS of every key published now (created_at <= now < publish_until).
    pub fn jwks(&self) -> Arc<Jwks> {
        let snapshot = self.snapshot();
        let now = self.clock.now();
        if snapshot.jwks_from <= now && now < snapshot.jwks_until {
            return snapshot.jwks.clone();
        }
        // Time has moved past a window boundary since the last reload: rebuild from the
        // parsed keys, without touching the store.
        match Snapshot::new(snapshot.entries.clone(), now) {
            Ok(next) => {
                let jwks = next.jwks.clone();
                let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
                // A reload in between carries a newer key set; keep that one.
                if Arc::ptr_eq(&state.entries, &snapshot.entries) {
                    *state = Arc::new(next);
                }
                jwks
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot rebuild JWKS; serving the previous one");
                snapshot.jwks.clone()
            }
        }
    }

    /// The JWKS Cache-Control max-age. kube-apiserver does not refetch keys before it runs
    /// out, so it is kept well below publish-ahead: a key is then in every cache before it signs.
    pub fn jwks_max_age(&self) -> Duration {
        (self.settings.publish_ahead / 4).min(Duration::from_secs(300))
    }

    /// How often [`run_rotation`] looks at the store. A key another replica created is in
    /// this replica's JWKS at most this long after it was stored; with the JWKS max-age on
    /// top, every verifier has it within half of publish-ahead, before it signs.
    pub fn reload_interval(&self) -> Duration {
        (self.settings.publish_ahead / 4).min(Duration::from_secs(30))
    }

    pub fn algorithm(&self) -> SigningAlg {
        self.settings.algorithm
    }

    /// The kid `sign` would use now.
    /// How many keys this process created since it started.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn signing_kid(&self) -> Option<String> {
        self.snapshot()
            .signing_entry(self.clock.now())
            .map(|e| e.parsed.kid.clone())
    }

    /// Every cached key and where it stands now, in sign_from order.
    pub fn key_statuses(&self) -> Vec<KeyStatus> {
        let snapshot = self.snapshot();
        let now = self.clock.now();
        let signing = snapshot.signing_entry(now).map(|e| e.parsed.kid.as_str());
        snapshot
            .entries
            .iter()
            .map(|e| KeyStatus {
                kid: e.parsed.kid.clone(),
                alg: e.parsed.alg,
                created_at: e.created_at,
                sign_from: e.sign_from,
                publish_until: e.publish_until,
                state: if !e.published_at(now) && e.created_at <= now {
                    KeyState::Expired
                } else if Some(e.parsed.kid.as_str()) == signing {
                    KeyState::Signing
                } else if e.sign_from > now {
                    KeyState::Upcoming
                } else {
                    KeyState::Retired
                },
            })
            .collect()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Generates a key that succeeds `predecessor` (or is the first) and tries to store it.
    /// `None` when another replica stored a successor first.
    async fn create_key(
        &self,
        predecessor: Option<&SigningKey>,
    ) -> Result<Option<Arc<ParsedKey>>, KeyError> {
        let alg = self.settings.algorithm;
        let der = tokio::task::spawn_blocking(move || crypto::generate(alg))
            .await
            .map_err(|e| KeyError::Crypto(format!("key generation did not finish: {e}")))??;
        // Read the clock after generating (an RSA key can take a while on a busy machine):
        // the key is published from about when it is stored, so publish-ahead is counted from
        // there, not from before the generation.
        let now = self.clock.now();
        let (successor_of, sign_from) = match predecessor {
            // The first key signs at once: no verifier can hold an older JWKS.
            None => (String::new(), now),
            // Published at least publish_ahead before it signs, even after long downtime
            // (the predecessor keeps signing meanwhile).
            Some(l) => (
                l.kid.clone(),
                l.sign_from
                    .saturating_add(secs(self.settings.rotation_period))
                    .max(now.saturating_add(secs(self.settings.publish_ahead))),
            ),
        };
        let kid = crypto::new_kid();
        let sealed = crypto::seal_private_key(&self.settings.encryption_key, &kid, &der)?;
        let parsed = ParsedKey::from_der(&kid, alg, &der, sealed.clone())?;
        let row = SigningKey {
            kid: kid.clone(),
            alg: alg.as_str().to_string(),
            public_jwk: serde_json::to_string(&parsed.jwk)
                .map_err(|e| KeyError::Crypto(format!("cannot serialise JWK: {e}")))?,
            private_key_enc: sealed,
            successor_of,
            created_at: now,
            sign_from,
        };
        if self.store.insert_signing_key(&row).await? {
            Ok(Some(Arc::new(parsed)))
        } else {
            tracing::debug!("another replica created the signing key first");
            Ok(None)
        }
    }

    async fn reload_with(&self, fresh: Option<Arc<ParsedKey>>) -> Result<(), KeyError> {
        let _guard = self.reload_lock.lock().await;
        let rows = self.store.list_signing_keys().await?;
        let current = self.snapshot();
        let mut known: HashMap<&str, &Arc<ParsedKey>> = current
            .entries
            .iter()
            .map(|e| (e.parsed.kid.as_str(), &e.parsed))
            .collect();
        if let Some(parsed) = &fresh {
            known.insert(parsed.kid.as_str(), parsed);
        }
        let until = publish_until(&rows, secs(self.settings.token_lifetime));

        let mut entries = Vec::with_capacity(rows.len());
        for row in &rows {
            let parsed = match known.get(row.kid.as_str()) {
                Some(p) if p.sealed == row.private_key_enc => Arc::clone(p),
                _ => Arc::new(self.parse_row(row)?),
            };
            entries.push(Entry {
                created_at: row.created_at,
                sign_from: row.sign_from,
                publish_until: until.get(row.kid.as_str()).copied(),
                parsed,
            });
        }
        entries.sort_by(|a, b| (a.sign_from, &a.parsed.kid).cmp(&(b.sign_from, &b.parsed.kid)));
        let next = Snapshot::new(Arc::from(entries), self.clock.now())?;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    fn parse_row(&self, row: &SigningKey) -> Result<ParsedKey, KeyError> {
        let alg = SigningAlg::parse(&row.alg).ok_or_else(|| KeyError::Corrupt {
            kid: row.kid.clone(),
            reason: format!("unsupported algorithm {:?}", row.alg),
        })?;
        let der = crypto::open_private_key(
            &self.settings.encryption_key,
            &row.kid,
            &row.private_key_enc,
        )?;
        ParsedKey::from_der(&row.kid, alg, &der, row.private_key_enc.clone())
    }
}

/// Calls `rotate_if_due` now and then every `every` until `shutdown` turns true (or its
/// sender is dropped). Errors are logged and retried at the next tick. `every` must be well
/// below publish-ahead: it bounds how late another replica learns of a new key.
pub async fn run_rotation(
    manager: Arc<KeyManager>,
    every: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = manager.rotate_if_due().await {
                    tracing::error!(error = %e, "signing key rotation failed; retrying at the next tick");
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::keys::MemoryKeyStore;

    fn parsed_by_kid(m: &KeyManager) -> HashMap<String, Arc<ParsedKey>> {
        m.snapshot()
            .entries
            .iter()
            .map(|e| (e.parsed.kid.clone(), e.parsed.clone()))
            .collect()
    }

    #[tokio::test]
    async fn reload_and_rotation_reuse_parsed_keys_instead_of_parsing_again() {
        let store: Arc<dyn KeyStore> = Arc::new(MemoryKeyStore::new());
        let clock = ManualClock::new(1_000);
        let settings = KeySettings {
            algorithm: SigningAlg::ES256,
            rotation_period: Duration::from_secs(100),
            publish_ahead: Duration::from_secs(10),
            token_lifetime: Duration::from_secs(30),
            encryption_key: [1; 32],
        };
        let m = KeyManager::start(store.clone(), Arc::new(clock.clone()), settings)
            .await
            .unwrap();
        let before = parsed_by_kid(&m);
        m.reload().await.unwrap();
        clock.set(1_090);
        let created = m.rotate_if_due().await.unwrap().created.unwrap();
        let after = parsed_by_kid(&m);
        assert_eq!(after.len(), 2);
        for (kid, parsed) in &before {
            assert!(Arc::ptr_eq(parsed, &after[kid]), "{kid} was parsed again");
        }

        // The key this replica created is cached from creation, not parsed from its row.
        let fresh = after[&created].clone();
        m.reload().await.unwrap();
        assert!(Arc::ptr_eq(&fresh, &parsed_by_kid(&m)[&created]));
    }
}
