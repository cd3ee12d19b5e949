//! The key manager: a cached, parsed view of the stored keys, and the rotation that replicas
//! agree on through the database.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::HeaderValue;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::crypto::{self, ParsedKey};
use super::signers::Signers;
use super::store::KeyStore;
use super::{jws, secs, KeyError, KeySettings, SigningAlg};
use crate::clock::{SharedClock, UnixTime};
use crate::storage::SigningKey;

/// The JWKS document, serialised once per key-set change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwks {
    /// `{"keys":[...]}` as served; shared by every response, not copied.
    pub body: Bytes,
    /// A strong ETag: the quoted base64url SHA-256 of `body`.
    pub etag: String,
    /// `etag` as a response header, checked once per key-set change instead of per response.
    pub etag_header: HeaderValue,
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

impl KeyState {
    /// As `lanyard admin keys list` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Upcoming => "published-ahead",
            KeyState::Signing => "signing",
            KeyState::Retired => "retired-published",
            KeyState::Expired => "expired",
        }
    }

    fn at(
        now: UnixTime,
        created_at: UnixTime,
        sign_from: UnixTime,
        publish_until: Option<UnixTime>,
        signing: bool,
    ) -> Self {
        let published = created_at <= now && publish_until.is_none_or(|until| now < until);
        if !published && created_at <= now {
            KeyState::Expired
        } else if signing {
            KeyState::Signing
        } else if sign_from > now {
            KeyState::Upcoming
        } else {
            KeyState::Retired
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where each stored key stands at `now`, in (sign_from, kid) order, read from the rows
/// alone: no key-encryption key needed.
pub fn key_statuses_of(
    rows: &[SigningKey],
    token_lifetime: Duration,
    now: UnixTime,
) -> Result<Vec<KeyStatus>, KeyError> {
    let until = publish_until(rows, secs(token_lifetime));
    let mut rows: Vec<&SigningKey> = rows.iter().collect();
    rows.sort_by(|a, b| (a.sign_from, &a.kid).cmp(&(b.sign_from, &b.kid)));
    let signing = signing_row(rows.iter().copied(), now).map(|r| r.kid.as_str());
    rows.iter()
        .map(|r| {
            let alg = SigningAlg::parse(&r.alg).ok_or_else(|| KeyError::Corrupt {
                kid: r.kid.clone(),
                reason: format!("unsupported algorithm {:?}", r.alg),
            })?;
            let publish_until = until.get(r.kid.as_str()).copied();
            Ok(KeyStatus {
                kid: r.kid.clone(),
                alg,
                created_at: r.created_at,
                sign_from: r.sign_from,
                publish_until,
                state: KeyState::at(
                    now,
                    r.created_at,
                    r.sign_from,
                    publish_until,
                    Some(r.kid.as_str()) == signing,
                ),
            })
        })
        .collect()
}

/// The row that signs at `now`: the greatest (sign_from, kid) with sign_from <= now, the
/// same choice [`KeyManager::sign`] makes.
fn signing_row<'a>(
    rows: impl Iterator<Item = &'a SigningKey>,
    now: UnixTime,
) -> Option<&'a SigningKey> {
    rows.filter(|r| r.sign_from <= now)
        .max_by(|a, b| (a.sign_from, &a.kid).cmp(&(b.sign_from, &b.kid)))
}

/// Stops publishing `kid` now by deleting it (with its private half); running replicas drop
/// it at their next poll. Refuses the key that signs now: something must sign tokens, so that
/// one goes through [`KeyManager::rotate_now`] with `retire_previous`. Needs no key-encryption
/// key. Returns the state the key was in.
pub async fn retire_key(
    store: &dyn KeyStore,
    token_lifetime: Duration,
    kid: &str,
    now: UnixTime,
) -> Result<KeyState, KeyError> {
    let rows = store.list_signing_keys().await?;
    let statuses = key_statuses_of(&rows, token_lifetime, now)?;
    let status = statuses
        .iter()
        .find(|s| s.kid == kid)
        .ok_or_else(|| KeyError::UnknownKid(kid.to_string()))?;
    if status.state == KeyState::Signing {
        return Err(KeyError::RetireSigning(kid.to_string()));
    }
    // False when a replica pruned it in the meantime: gone either way.
    store.delete_signing_key(kid).await?;
    tracing::warn!(kid, state = %status.state, "signing key retired: no longer published");
    Ok(status.state)
}

/// What [`KeyManager::rotate_now`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmergencyRotation {
    /// The key that signs from now on.
    pub created: String,
    /// The key that signed until now; published until its tokens expire unless retired.
    pub previous: Option<String>,
    /// The previous key, when it was retired in the same step.
    pub retired: Option<String>,
    /// Keys that were published ahead but had not signed anything; removed, because the new
    /// key takes their place in the timeline.
    pub discarded: Vec<String>,
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
    let etag_header = HeaderValue::from_str(&etag)
        .map_err(|e| KeyError::Crypto(format!("cannot make the JWKS ETag a header: {e}")))?;
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
    Ok((
        Jwks {
            body: Bytes::from(body),
            etag,
            etag_header,
        },
        from,
        until,
    ))
}

/// When each stored key stops being published: when the next key on the timeline (by
/// sign_from) starts signing, plus the token lifetime. That is its successor's sign_from in
/// a plain chain; when a key between them was retired (deleted), the next remaining key
/// bounds it, so no key is left published forever.
fn publish_until(rows: &[SigningKey], token_lifetime: i64) -> HashMap<&str, UnixTime> {
    let mut ordered: Vec<&SigningKey> = rows.iter().collect();
    ordered.sort_by(|a, b| (a.sign_from, &a.kid).cmp(&(b.sign_from, &b.kid)));
    ordered
        .windows(2)
        .map(|pair| {
            (
                pair[0].kid.as_str(),
                pair[1].sign_from.saturating_add(token_lifetime),
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
    /// The threads [`Self::sign_async`] signs on.
    signers: Signers,
    /// `Cache-Control` of the JWKS response, from [`Self::jwks_max_age`].
    jwks_cache_control: HeaderValue,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KeyManager {
    /// A key for `purpose` derived from the key-encryption key: the same in every replica
    /// that shares it, and useless for opening the signing keys.
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        crate::oidc::secrets::hmac_sha256(&self.settings.encryption_key, purpose.as_bytes())
    }

    /// Loads keys from storage, creates the first one if there is none (sign_from = now:
    /// nothing can have cached an older JWKS), and decrypts and parses them once into the cache.
    pub async fn start(
        store: Arc<dyn KeyStore>,
        clock: SharedClock,
        settings: KeySettings,
    ) -> Result<Arc<Self>, KeyError> {
        let manager = Self::open(store, clock, settings).await?;
        if manager.snapshot().entries.is_empty() {
            let fresh = manager
                .create_key(String::new(), |now| now, crypto::generate_on_every_core)
                .await?;
            manager.reload_with(fresh).await?;
        }
        Ok(Arc::new(manager))
    }

    /// Loads, decrypts and parses the stored keys without creating any: every stored key
    /// must open under the settings' key-encryption key.
    pub async fn open(
        store: Arc<dyn KeyStore>,
        clock: SharedClock,
        settings: KeySettings,
    ) -> Result<Self, KeyError> {
        settings.validate()?;
        let now = clock.now();
        let empty = Snapshot::new(Arc::from(Vec::new()), now)?;
        let max_age = Self::max_age_for(&settings).as_secs();
        let manager = KeyManager {
            jwks_cache_control: HeaderValue::from_str(&format!("public, max-age={max_age}"))
                .map_err(|e| {
                    KeyError::Crypto(format!("cannot make Cache-Control a header: {e}"))
                })?,
            store,
            clock,
            settings,
            state: RwLock::new(Arc::new(empty)),
            reload_lock: tokio::sync::Mutex::new(()),
            rotations: std::sync::atomic::AtomicU64::new(0),
            signers: Signers::default(),
        };
        manager.reload_with(None).await?;
        Ok(manager)
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
            match latest {
                // The first key signs at once: no verifier can hold an older JWKS.
                None => {
                    self.create_key(String::new(), |now| now, crypto::generate)
                        .await?
                }
                // Published at least publish_ahead before it signs, even after long downtime
                // (the predecessor keeps signing meanwhile).
                Some(l) => {
                    let scheduled = l
                        .sign_from
                        .saturating_add(secs(self.settings.rotation_period));
                    let ahead = secs(self.settings.publish_ahead);
                    self.create_key(
                        l.kid.clone(),
                        |now| scheduled.max(now.saturating_add(ahead)),
                        crypto::generate,
                    )
                    .await?
                }
            }
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

    /// An emergency rotation: a fresh key signs from now on, without the publish-ahead wait
    /// (verifiers that cached the JWKS reject its tokens until they fetch it again). The key
    /// that signed until now stays published until its tokens expire, or with
    /// `retire_previous` is deleted at once (a compromised key). Keys published ahead that
    /// never signed are removed: the new key takes their place in the timeline, and the
    /// next scheduled rotation follows it.
    pub async fn rotate_now(&self, retire_previous: bool) -> Result<EmergencyRotation, KeyError> {
        // A replica's scheduled rotation can insert a successor between our delete and our
        // insert; then the store refuses ours and we look again.
        const ATTEMPTS: usize = 5;
        for _ in 0..ATTEMPTS {
            let rows = self.store.list_signing_keys().await?;
            let now = self.clock.now();
            let previous = signing_row(rows.iter(), now);
            let mut discarded = Vec::new();
            for row in rows.iter().filter(|r| r.sign_from > now) {
                if self.store.delete_signing_key(&row.kid).await? {
                    discarded.push(row.kid.clone());
                }
            }
            let (successor_of, after) = match previous {
                None => (String::new(), 0),
                // A retired predecessor goes at once, so there is nothing to tie with; a kept
                // one must sign strictly earlier, or both would claim the same second.
                Some(p) if retire_previous => (p.kid.clone(), 0),
                Some(p) => (p.kid.clone(), p.sign_from.saturating_add(1)),
            };
            let Some(parsed) = self
                .create_key(successor_of, |now| now.max(after), crypto::generate)
                .await?
            else {
                continue;
            };
            let created = parsed.kid.clone();
            tracing::warn!(kid = %created, previous = ?previous.map(|p| &p.kid), "emergency rotation: a new signing key signs now");
            self.rotations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut retired = None;
            if let (true, Some(p)) = (retire_previous, previous) {
                if self.store.delete_signing_key(&p.kid).await? {
                    tracing::warn!(kid = %p.kid, "signing key retired: no longer published");
                    retired = Some(p.kid.clone());
                }
            }
            self.reload_with(Some(parsed)).await?;
            return Ok(EmergencyRotation {
                created,
                previous: previous.map(|p| p.kid.clone()),
                retired,
                discarded,
            });
        }
        Err(KeyError::Contended)
    }

    /// Reloads from storage (another replica may have rotated). Keys already parsed are
    /// reused by kid, never parsed again.
    pub async fn reload(&self) -> Result<(), KeyError> {
        self.reload_with(None).await
    }

    /// Signs a JWT with the key whose sign_from is the latest <= now. The header carries
    /// `alg`, `kid` and `typ: JWT`.
    pub fn sign(&self, claims: &Map<String, Value>) -> Result<String, KeyError> {
        jws::sign(&*self.signing_key()?, claims)
    }

    /// The key that signs now.
    fn signing_key(&self) -> Result<Arc<ParsedKey>, KeyError> {
        self.snapshot()
            .signing_entry(self.clock.now())
            .map(|e| e.parsed.clone())
            .ok_or(KeyError::NoSigningKey)
    }

    /// [`Self::sign`] on the signing threads (one per core, see [`Signers`]), for request
    /// handlers.
    pub async fn sign_async(&self, claims: Map<String, Value>) -> Result<String, KeyError> {
        let key = self.signing_key()?;
        let (done, signed) = tokio::sync::oneshot::channel();
        self.signers
            .run(move || {
                // The caller may have gone; its token is then not needed.
                let _ = done.send(jws::sign(&key, &claims));
            })
            .map_err(KeyError::Crypto)?;
        signed
            .await
            .map_err(|_| KeyError::Crypto("signing did not finish".into()))?
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
        Self::max_age_for(&self.settings)
    }

    fn max_age_for(settings: &KeySettings) -> Duration {
        (settings.publish_ahead / 4).min(Duration::from_secs(300))
    }

    /// `Cache-Control: public, max-age=` [`Self::jwks_max_age`], built once.
    pub fn jwks_cache_control(&self) -> &HeaderValue {
        &self.jwks_cache_control
    }

    pub fn algorithm(&self) -> SigningAlg {
        self.settings.algorithm
    }

    /// Seals a connector's data for storage under the key-encryption key.
    pub fn seal_connector_data(&self, connector_id: &str, data: &[u8]) -> Result<String, KeyError> {
        crypto::seal_connector_data(&self.settings.encryption_key, connector_id, data)
    }

    /// Opens connector data from storage, sealed or in the plain form of older rows.
    pub fn open_connector_data(
        &self,
        connector_id: &str,
        stored: &str,
    ) -> Result<Vec<u8>, KeyError> {
        crypto::open_connector_data(&self.settings.encryption_key, connector_id, stored)
    }

    /// The key-encryption key, for what seals stored connector configs outside the server
    /// (the API's and `lanyard admin`'s shared service layer).
    pub(crate) fn encryption_key(&self) -> &[u8; 32] {
        &self.settings.encryption_key
    }

    /// Seals a stored connector's config under the key-encryption key.
    pub fn seal_connector_config(
        &self,
        connector_id: &str,
        config: &[u8],
    ) -> Result<String, KeyError> {
        crypto::seal_connector_config(&self.settings.encryption_key, connector_id, config)
    }

    /// Opens a stored connector's config.
    pub fn open_connector_config(
        &self,
        connector_id: &str,
        stored: &str,
    ) -> Result<Vec<u8>, KeyError> {
        crypto::open_connector_config(&self.settings.encryption_key, connector_id, stored)
    }

    /// How many keys this process created since it started.
    pub fn rotations(&self) -> u64 {
        self.rotations.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long a key signs before its successor takes over.
    pub fn rotation_period(&self) -> Duration {
        self.settings.rotation_period
    }

    /// The kid `sign` would use now.
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
                state: KeyState::at(
                    now,
                    e.created_at,
                    e.sign_from,
                    e.publish_until,
                    Some(e.parsed.kid.as_str()) == signing,
                ),
            })
            .collect()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Generates a key that succeeds `successor_of` ("" for the first) and signs from
    /// `sign_from(now)`, and tries to store it. `None` when another replica stored a successor first.
    async fn create_key(
        &self,
        successor_of: String,
        sign_from: impl FnOnce(UnixTime) -> UnixTime,
        generate: crypto::Generator,
    ) -> Result<Option<Arc<ParsedKey>>, KeyError> {
        let alg = self.settings.algorithm;
        let der = tokio::task::spawn_blocking(move || generate(alg))
            .await
            .map_err(|e| KeyError::Crypto(format!("key generation did not finish: {e}")))??;
        // Read the clock after generating (an RSA key can take a while on a busy machine):
        // the key is published from about when it is stored, so publish-ahead is counted from
        // there, not from before the generation.
        let now = self.clock.now();
        let sign_from = sign_from(now);
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
