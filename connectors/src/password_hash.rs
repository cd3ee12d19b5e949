//! Password hashing off the async executor, with bounded concurrency.
//!
//! Verifies bcrypt (`$2a$`, `$2b$`, `$2y$`; what Dex's `staticPasswords` and password API use)
//! and argon2id PHC strings; creates argon2id at OWASP's parameters (m=19456 KiB, t=2, p=1).
//!
//! Every hash runs on `tokio::task::spawn_blocking` behind a semaphore: an argon2id hash holds
//! ~19 MiB and a core for tens of milliseconds, so an unbounded burst of logins would exhaust
//! memory and starve the blocking pool. The permit moves into the blocking closure, so a
//! request that is dropped mid-hash still holds its permit until the hash really finishes.
//!
//! Comparison is constant time by construction of the libraries: `bcrypt::verify` compares
//! digests with `subtle::ConstantTimeEq`, and argon2's `verify_password` compares
//! `password_hash::Output` values, whose `PartialEq` is constant time.
//!
//! bcrypt only reads the first 72 bytes of a password (Go's bcrypt, which Dex uses, behaves
//! the same), so verification truncates rather than rejecting long passwords; otherwise
//! hashes made by Dex for such passwords would stop working.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::password_hash::{self, PasswordHash, PasswordHasher as _};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::Semaphore;

/// Lowest bcrypt cost the bcrypt algorithm defines.
pub const MIN_BCRYPT_COST: u32 = 4;
/// Dex's upper bound ("high enough to ensure secure encryption, low enough to not put
/// unnecessary load"); a higher cost would tie a worker up for seconds per attempt.
pub const MAX_BCRYPT_COST: u32 = 16;
/// Upper bounds for argon2id hashes we agree to verify, so one bad stored hash cannot take
/// gigabytes of memory or minutes of CPU per login attempt.
pub const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;
pub const MAX_ARGON2_ITERATIONS: u32 = 32;
pub const MAX_ARGON2_PARALLELISM: u32 = 16;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Argon2idParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Argon2idParams {
    /// OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1.
    pub const OWASP: Self = Self {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    fn to_argon2(self) -> Result<Params, PasswordHashError> {
        if self.memory_kib > MAX_ARGON2_MEMORY_KIB
            || self.iterations > MAX_ARGON2_ITERATIONS
            || self.parallelism > MAX_ARGON2_PARALLELISM
        {
            return Err(PasswordHashError::CostTooHigh(format!(
                "argon2id m={} t={} p={} exceeds m<={MAX_ARGON2_MEMORY_KIB} t<={MAX_ARGON2_ITERATIONS} p<={MAX_ARGON2_PARALLELISM}",
                self.memory_kib, self.iterations, self.parallelism
            )));
        }
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| PasswordHashError::InvalidParams(e.to_string()))
    }

    fn argon2(self) -> Result<Argon2<'static>, PasswordHashError> {
        Ok(Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            self.to_argon2()?,
        ))
    }
}

impl Default for Argon2idParams {
    fn default() -> Self {
        Self::OWASP
    }
}

/// What a stored hash is, learned without hashing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashKind {
    Bcrypt { cost: u32 },
    Argon2id(Argon2idParams),
}

/// Errors never contain the hash or the password.
#[derive(Debug, thiserror::Error)]
pub enum PasswordHashError {
    #[error("unsupported password hash format: expected bcrypt ($2a$, $2b$, $2y$) or argon2id ($argon2id$)")]
    UnsupportedFormat,
    #[error("malformed {scheme} password hash: {reason}")]
    Malformed {
        scheme: &'static str,
        reason: String,
    },
    #[error("password hash cost out of range: {0}")]
    CostTooHigh(String),
    #[error("invalid argon2id parameters: {0}")]
    InvalidParams(String),
    #[error("hash pool size must be at least 1")]
    NoPermits,
    #[error("refusing to hash an empty password")]
    EmptyPassword,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("password hashing worker failed: {0}")]
    Worker(String),
}

impl PasswordHashError {
    /// True when the stored hash itself is unusable (as opposed to the pool failing).
    pub fn is_bad_hash(&self) -> bool {
        matches!(
            self,
            Self::UnsupportedFormat | Self::Malformed { .. } | Self::CostTooHigh(_)
        )
    }
}

const BCRYPT_ALPHABET: &[u8] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Classifies a stored hash and checks its parameters are within the bounds we verify.
/// Cheap; use it to validate config (e.g. Dex `staticPasswords`) at startup.
pub fn inspect(hash: &str) -> Result<HashKind, PasswordHashError> {
    let hash = hash.trim();
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        inspect_bcrypt(hash)
    } else if hash.starts_with("$argon2id$") {
        inspect_argon2id(hash)
    } else {
        Err(PasswordHashError::UnsupportedFormat)
    }
}

fn inspect_bcrypt(hash: &str) -> Result<HashKind, PasswordHashError> {
    let malformed = |reason: &str| PasswordHashError::Malformed {
        scheme: "bcrypt",
        reason: reason.to_owned(),
    };
    // "$2b$" + two-digit cost + "$" + 22 salt chars + 31 digest chars.
    let bytes = hash.as_bytes();
    if bytes.len() != 60 {
        return Err(malformed("expected 60 characters"));
    }
    if bytes[6] != b'$' {
        return Err(malformed("expected a two-digit cost"));
    }
    let cost: u32 = hash
        .get(4..6)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| malformed("expected a two-digit cost"))?;
    if !bytes[7..].iter().all(|b| BCRYPT_ALPHABET.contains(b)) {
        return Err(malformed("salt and digest are not bcrypt base64"));
    }
    if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
        return Err(PasswordHashError::CostTooHigh(format!(
            "bcrypt cost {cost} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST}"
        )));
    }
    Ok(HashKind::Bcrypt { cost })
}

fn parse_argon2id(hash: &str) -> Result<(PasswordHash<'_>, Argon2idParams), PasswordHashError> {
    let malformed = |reason: String| PasswordHashError::Malformed {
        scheme: "argon2id",
        reason,
    };
    // password_hash::Error's Display names the problem, never the input.
    let parsed = PasswordHash::new(hash).map_err(|e| malformed(e.to_string()))?;
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return Err(PasswordHashError::UnsupportedFormat);
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(malformed("missing salt or digest".to_owned()));
    }
    let params = Params::try_from(&parsed).map_err(|e| malformed(e.to_string()))?;
    let params = Argon2idParams {
        memory_kib: params.m_cost(),
        iterations: params.t_cost(),
        parallelism: params.p_cost(),
    };
    params.to_argon2()?;
    Ok((parsed, params))
}

fn inspect_argon2id(hash: &str) -> Result<HashKind, PasswordHashError> {
    parse_argon2id(hash).map(|(_, params)| HashKind::Argon2id(params))
}

fn verify_blocking(
    hash: &str,
    password: &[u8],
    memory: &WorkingMemory,
) -> Result<bool, PasswordHashError> {
    let hash = hash.trim();
    match inspect(hash)? {
        HashKind::Bcrypt { .. } => bcrypt::verify(password, hash).map_err(|e| {
            // Some bcrypt error texts embed the whole hash; keep only the kind.
            let reason = match e {
                bcrypt::BcryptError::InvalidBase64(_) => "salt or digest is not valid base64",
                bcrypt::BcryptError::InvalidSaltLen(_) => "salt has the wrong length",
                _ => "rejected by the bcrypt library",
            };
            PasswordHashError::Malformed {
                scheme: "bcrypt",
                reason: reason.to_owned(),
            }
        }),
        HashKind::Argon2id(_) => memory.with(|blocks| verify_argon2id(hash, password, blocks)),
    }
}

/// What `Argon2::verify_password` does, in working memory that outlives the call: the
/// parameters, version and salt encoded in the hash, and a constant-time comparison
/// (`password_hash::Output`'s `PartialEq`).
fn verify_argon2id(
    hash: &str,
    password: &[u8],
    blocks: &mut Vec<Block>,
) -> Result<bool, PasswordHashError> {
    let malformed = |reason: String| PasswordHashError::Malformed {
        scheme: "argon2id",
        reason,
    };
    let (parsed, _) = parse_argon2id(hash)?;
    let params = Params::try_from(&parsed).map_err(|e| malformed(e.to_string()))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| malformed(e.to_string()))?
        .unwrap_or_default();
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(malformed("missing salt or digest".to_owned()));
    };
    let mut salt_buf = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_buf)
        .map_err(|e| malformed(e.to_string()))?;
    if blocks.len() < params.block_count() {
        blocks.resize(params.block_count(), Block::new());
    }
    let argon2 = Argon2::new(Algorithm::Argon2id, version, params);
    let computed = password_hash::Output::init_with(expected.len(), |out| {
        Ok(argon2.hash_password_into_with_memory(password, salt, out, &mut blocks[..])?)
    })
    .map_err(|e| malformed(e.to_string()))?;
    Ok(computed == expected)
}

/// argon2id working memory (19 MiB per hash at OWASP's parameters), kept between hashes
/// while logins keep coming instead of allocated and freed each time: a fresh allocation
/// costs thousands of page faults per login, and glibc keeps freed blocks this large in
/// per-thread arenas, so the blocking pool's threads would each end up holding one. The
/// pool's permits bound how many exist; a hash with larger parameters than the pool's gets
/// memory of its own that is freed afterwards. When a verification finishes and no other is
/// waiting or running, every kept buffer is freed: after a burst of logins the process goes
/// back to its idle size. The blocks hold only one-way derivations of the password, as the
/// library's allocating path leaves them in freed memory too.
struct WorkingMemory {
    free: Mutex<Vec<Vec<Block>>>,
    keep_blocks: usize,
    /// Verifications waiting for a permit or running (see [`Demand`]).
    demand: AtomicUsize,
}

/// One verification's claim on [`WorkingMemory`], from before it waits for a permit until
/// after it has handed its buffer back.
struct Demand(Arc<WorkingMemory>);

impl Demand {
    fn new(memory: &Arc<WorkingMemory>) -> Self {
        memory.demand.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(memory))
    }
}

impl Drop for Demand {
    fn drop(&mut self) {
        // The last one out frees every kept buffer. Deciding this here, rather than when a
        // verification hands its buffer back, matters when two finish together: each would
        // still count the other and keep its buffer, and nobody would be left to free them.
        if self.0.demand.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.lock().clear();
        }
    }
}

impl WorkingMemory {
    fn new(params: Argon2idParams) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep_blocks: params.to_argon2().map_or(0, |p| p.block_count()),
            demand: AtomicUsize::new(0),
        }
    }

    /// Runs `work` in a kept buffer (or a new one), for a caller that holds a [`Demand`].
    fn with<T>(&self, work: impl FnOnce(&mut Vec<Block>) -> T) -> T {
        let mut blocks = self.lock().pop().unwrap_or_default();
        let out = work(&mut blocks);
        // Kept until the last `Demand` is dropped, which frees them all.
        if blocks.len() <= self.keep_blocks {
            self.lock().push(blocks);
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<Block>>> {
        // A list of buffers is valid whatever a panicking holder did.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn random_salt() -> password_hash::SaltString {
    password_hash::SaltString::generate(&mut rand::rngs::OsRng)
}

fn hash_argon2id_blocking(
    params: Argon2idParams,
    password: &[u8],
) -> Result<String, PasswordHashError> {
    let salt = random_salt();
    params
        .argon2()?
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordHashError::Hashing(e.to_string()))
}

#[derive(Default)]
struct Stats {
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    completed: AtomicU64,
}

struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn enter(stats: &'a Stats) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.completed.fetch_add(1, Ordering::SeqCst);
    }
}

/// The hash pool: verifies and creates password hashes on the blocking pool, at most
/// `max_concurrent` at a time. Share one per process (`Arc<PasswordHasher>`).
pub struct PasswordHasher {
    params: Argon2idParams,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    stats: Arc<Stats>,
    /// Hash that `verify_dummy` checks against: one of the costliest kind known; created on
    /// first use or by `learn_kinds`.
    dummy: Mutex<Option<Arc<str>>>,
    /// What one verification of each kind of hash costs here, smoothed (see [`Costs`]).
    costs: Arc<Mutex<Costs>>,
    memory: Arc<WorkingMemory>,
}

/// Verification time per kind of hash, an exponentially weighted mean of the measured work
/// (without the wait for a permit). It follows the machine's load, so the floor that failed
/// logins are held to ([`PasswordHasher::failure_floor`]) does too.
#[derive(Debug, Default)]
struct Costs(HashMap<HashKind, Duration>);

impl Costs {
    fn record(&mut self, kind: HashKind, took: Duration) {
        self.0
            .entry(kind)
            // One stall (a page-in, a descheduled thread) moves the mean by at most its
            // current value, not by the whole stall.
            .and_modify(|mean| *mean = (*mean * 7 + took.min(*mean * 2)) / 8)
            .or_insert(took);
    }

    fn costliest(&self) -> Option<(HashKind, Duration)> {
        self.0
            .iter()
            .max_by_key(|(_, cost)| **cost)
            .map(|(kind, cost)| (*kind, *cost))
    }
}

/// Failed logins wait until this multiple of the costliest verification has passed: high
/// enough that the slowest kind itself rarely finishes later (so its failures are held to
/// the floor as well, and all failures share one distribution), low enough to cost little.
const FLOOR_MARGIN: f64 = 1.25;

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("max_concurrent", &self.max_concurrent)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// OWASP argon2id parameters; one concurrent hash per CPU.
    pub fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::build(Argon2idParams::OWASP, cpus)
    }

    /// Custom parameters for new hashes (and the default dummy) and pool size.
    pub fn with_config(
        params: Argon2idParams,
        max_concurrent: usize,
    ) -> Result<Self, PasswordHashError> {
        params.to_argon2()?;
        if max_concurrent == 0 {
            return Err(PasswordHashError::NoPermits);
        }
        Ok(Self::build(params, max_concurrent))
    }

    fn build(params: Argon2idParams, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            params,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            stats: Arc::default(),
            dummy: Mutex::new(None),
            costs: Arc::default(),
            memory: Arc::new(WorkingMemory::new(params)),
        }
    }

    pub fn params(&self) -> Argon2idParams {
        self.params
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_concurrent
    }

    /// Hashes running right now (for metrics).
    pub fn in_flight(&self) -> usize {
        self.stats.in_flight.load(Ordering::SeqCst)
    }

    /// Most hashes that ever ran at once (for metrics; never exceeds `max_concurrent`).
    pub fn peak_in_flight(&self) -> usize {
        self.stats.peak.load(Ordering::SeqCst)
    }

    /// Hash computations finished since start (for metrics).
    pub fn completed(&self) -> u64 {
        self.stats.completed.load(Ordering::SeqCst)
    }

    async fn run<T, F>(&self, work: F) -> Result<T, PasswordHashError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| PasswordHashError::Worker("hash pool is closed".to_owned()))?;
        let stats = Arc::clone(&self.stats);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _in_flight = InFlight::enter(&stats);
            work()
        })
        .await
        .map_err(|e| PasswordHashError::Worker(e.to_string()))
    }

    /// Checks `password` against a stored bcrypt or argon2id hash. `Ok(false)` is a wrong
    /// password; `Err` means the hash is unusable (unknown format, malformed, cost out of
    /// range) or the pool failed.
    pub async fn verify(&self, hash: &str, password: &str) -> Result<bool, PasswordHashError> {
        // Reject unusable hashes before taking a permit or a thread.
        let kind = inspect(hash)?;
        self.verify_timed(kind, hash.into(), password).await
    }

    /// Verifies and records what the work cost for `kind`.
    async fn verify_timed(
        &self,
        kind: HashKind,
        hash: Arc<str>,
        password: &str,
    ) -> Result<bool, PasswordHashError> {
        let password = password.to_owned();
        let demand = Demand::new(&self.memory);
        let costs = Arc::clone(&self.costs);
        self.run(move || {
            let started = Instant::now();
            let verified = verify_blocking(&hash, password.as_bytes(), &demand.0);
            if verified.is_ok() {
                lock(&costs).record(kind, started.elapsed());
            }
            verified
        })
        .await?
    }

    /// How long a failed login should take at least: a margin over the costliest kind of
    /// hash known (configured, stored or seen), so that refusing an unknown user, or a wrong
    /// password of a cheaper kind, takes as long as refusing a user with the costliest kind.
    pub fn failure_floor(&self) -> Duration {
        lock(&self.costs)
            .costliest()
            .map_or(Duration::ZERO, |(_, cost)| cost.mul_f64(FLOOR_MARGIN))
    }

    /// Waits until [`PasswordHasher::failure_floor`] has passed since `started`.
    pub async fn hold_failure(&self, started: Instant) {
        tokio::time::sleep_until((started + self.failure_floor()).into()).await;
    }

    /// Learns the kinds of `hashes` (all users' stored hashes; unusable ones are skipped):
    /// each kind not seen yet is timed once on a throwaway hash, and `verify_dummy` then uses
    /// a hash of the costliest kind. Call at startup and when the users change.
    pub async fn learn_kinds<'a>(
        &self,
        hashes: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PasswordHashError> {
        let mut kinds: Vec<HashKind> = hashes.into_iter().filter_map(|h| inspect(h).ok()).collect();
        kinds.sort_by_key(|k| format!("{k:?}"));
        kinds.dedup();
        for kind in kinds {
            if lock(&self.costs).0.contains_key(&kind) {
                continue;
            }
            let dummy = self.throwaway_hash(kind).await?;
            // Timed twice: the first run also pays for first-touch memory.
            for _ in 0..2 {
                self.verify_timed(kind, Arc::clone(&dummy), "x").await?;
            }
            if lock(&self.costs).costliest().map(|(k, _)| k) == Some(kind) {
                *self.lock_dummy() = Some(dummy);
            }
        }
        Ok(())
    }

    /// Creates an argon2id PHC hash with this pool's parameters and a fresh random salt.
    pub async fn hash(&self, password: &str) -> Result<String, PasswordHashError> {
        if password.is_empty() {
            return Err(PasswordHashError::EmptyPassword);
        }
        let params = self.params;
        let password = password.to_owned();
        self.run(move || hash_argon2id_blocking(params, password.as_bytes()))
            .await?
    }

    /// Spends the time of one real verification and discards the result, so that an unknown
    /// user (or an empty password) costs the same as a wrong password.
    pub async fn verify_dummy(&self, password: &str) -> Result<(), PasswordHashError> {
        let dummy = self.dummy_hash().await?;
        let kind = inspect(&dummy)?;
        self.verify_timed(kind, dummy, password).await?;
        Ok(())
    }

    /// Creates the dummy hash now (and times it), so the first unknown-user attempt is not
    /// slower than the rest. Call once at startup.
    pub async fn warm_up(&self) -> Result<(), PasswordHashError> {
        let dummy = self.dummy_hash().await?;
        if lock(&self.costs).0.is_empty() {
            self.verify_dummy("x").await?;
        }
        drop(dummy);
        Ok(())
    }

    /// A hash of `kind` whose password is random and never kept: nothing can log in with it.
    async fn throwaway_hash(&self, kind: HashKind) -> Result<Arc<str>, PasswordHashError> {
        let secret = random_salt().as_str().to_owned();
        let hash = self
            .run(move || match kind {
                HashKind::Bcrypt { cost } => bcrypt::hash(secret.as_bytes(), cost)
                    .map_err(|e| PasswordHashError::Hashing(e.to_string())),
                HashKind::Argon2id(params) => hash_argon2id_blocking(params, secret.as_bytes()),
            })
            .await??;
        Ok(hash.into())
    }

    async fn dummy_hash(&self) -> Result<Arc<str>, PasswordHashError> {
        if let Some(existing) = self.lock_dummy().clone() {
            return Ok(existing);
        }
        let created = self.throwaway_hash(HashKind::Argon2id(self.params)).await?;
        // Two first callers may race; keep whichever landed first.
        Ok(Arc::clone(self.lock_dummy().get_or_insert(created)))
    }

    fn lock_dummy(&self) -> MutexGuard<'_, Option<Arc<str>>> {
        lock(&self.dummy)
    }
}

/// The values guarded here (an Option, a map of durations) are valid even if a holder
/// panicked.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Small argon2id parameters so debug-build tests stay fast; timing tests compare like
    /// with like, so the absolute cost does not matter.
    pub(crate) const FAST: Argon2idParams = Argon2idParams {
        memory_kib: 1024,
        iterations: 2,
        parallelism: 1,
    };

    pub(crate) fn fast_hasher(permits: usize) -> PasswordHasher {
        PasswordHasher::with_config(FAST, permits).unwrap()
    }

    const DEX_EXAMPLE_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

    #[tokio::test]
    async fn dex_documented_bcrypt_hash_verifies_password() {
        let h = fast_hasher(2);
        assert!(h.verify(DEX_EXAMPLE_HASH, "password").await.unwrap());
        assert!(!h.verify(DEX_EXAMPLE_HASH, "Password").await.unwrap());
        assert_eq!(
            inspect(DEX_EXAMPLE_HASH).unwrap(),
            HashKind::Bcrypt { cost: 10 }
        );
    }

    #[tokio::test]
    async fn bcrypt_cost_10_hashes_in_every_prefix_verify() {
        let h = fast_hasher(2);
        let made = bcrypt::hash("s3cret pass", 10).unwrap();
        assert!(made.starts_with("$2b$10$"));
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let variant = format!("{prefix}{}", &made[4..]);
            assert!(h.verify(&variant, "s3cret pass").await.unwrap(), "{prefix}");
            assert!(!h.verify(&variant, "s3cret pas").await.unwrap(), "{prefix}");
        }
    }

    /// Reused working memory must not leak one hash's state into the next: hashes of other
    /// parameters, versions and output lengths, made by the library's own allocating path,
    /// verify in any order through the same buffers.
    #[tokio::test]
    async fn reused_working_memory_verifies_hashes_of_any_parameters() {
        let h = fast_hasher(1);
        let make = |m: u32, t: u32, version: Version, out_len: usize, password: &str| {
            let params = Params::new(m, t, 1, Some(out_len)).unwrap();
            let salt = random_salt();
            Argon2::new(Algorithm::Argon2id, version, params)
                .hash_password(password.as_bytes(), &salt)
                .unwrap()
                .to_string()
        };
        let hashes = [
            (make(2048, 1, Version::V0x13, 32, "first"), "first"),
            (make(512, 3, Version::V0x13, 16, "second"), "second"),
            (make(1024, 2, Version::V0x10, 32, "third"), "third"),
            (make(4096, 1, Version::V0x13, 64, "fourth"), "fourth"),
        ];
        for round in 0..2 {
            for (hash, password) in &hashes {
                assert!(h.verify(hash, password).await.unwrap(), "{round} {hash}");
                assert!(!h.verify(hash, "wrong").await.unwrap(), "{round} {hash}");
            }
        }
        // The version takes part: without `v=` a hash reads as 0x13, as the library reads it.
        let (v13, _) = &hashes[0];
        assert!(h.verify(&v13.replace("v=19$", ""), "first").await.unwrap());
        let (v10, _) = &hashes[2];
        assert!(v10.contains("$v=16$"), "{v10}");
        assert!(!h.verify(&v10.replace("v=16$", ""), "third").await.unwrap());
        assert!(!h
            .verify(&v10.replace("v=16$", "v=19$"), "third")
            .await
            .unwrap());
    }

    #[test]
    fn working_memory_keeps_pool_sized_buffers_and_frees_larger_ones() {
        let memory = Arc::new(WorkingMemory::new(FAST));
        let pool_blocks = FAST.to_argon2().unwrap().block_count();
        // This verification, and another one waiting behind it.
        let (_this, _next) = (Demand::new(&memory), Demand::new(&memory));
        memory.with(|b| b.resize(pool_blocks, Block::new()));
        assert_eq!(
            memory.lock().len(),
            1,
            "a buffer of the pool's size is kept"
        );
        memory.with(|b| b.resize(pool_blocks * 4, Block::new()));
        assert_eq!(memory.lock().len(), 0, "a larger buffer is freed, not kept");
        memory.with(|b| assert!(b.is_empty(), "nothing was kept to hand out"));
        assert_eq!(memory.lock().len(), 1);
    }

    #[test]
    fn working_memory_is_freed_when_nobody_else_wants_it() {
        let memory = Arc::new(WorkingMemory::new(FAST));
        let pool_blocks = FAST.to_argon2().unwrap().block_count();
        let (first, second) = (Demand::new(&memory), Demand::new(&memory));
        memory.with(|b| b.resize(pool_blocks, Block::new()));
        drop(first);
        assert_eq!(memory.lock().len(), 1, "kept while another one waits");
        memory.with(|b| assert_eq!(b.len(), pool_blocks, "the kept buffer is reused"));
        drop(second);
        assert_eq!(
            memory.lock().len(),
            0,
            "the last one out frees every buffer"
        );
        assert_eq!(memory.demand.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn working_memory_is_freed_when_two_verifications_finish_together() {
        let memory = Arc::new(WorkingMemory::new(FAST));
        let pool_blocks = FAST.to_argon2().unwrap().block_count();
        let (first, second) = (Demand::new(&memory), Demand::new(&memory));
        // Both hand their buffers back while the other still counts as running.
        memory.with(|a| {
            memory.with(|b| b.resize(pool_blocks, Block::new()));
            a.resize(pool_blocks, Block::new());
        });
        assert_eq!(memory.lock().len(), 2);
        drop(first);
        drop(second);
        assert_eq!(memory.lock().len(), 0, "nothing is kept after the last one");
    }

    /// Through the pool: a burst of verifications keeps one buffer per permit at most, and
    /// none once the burst is over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verifications_free_working_memory_when_the_burst_ends() {
        let h = Arc::new(fast_hasher(2));
        let made = h.hash("pw").await.unwrap();
        let burst: Vec<_> = (0..8)
            .map(|_| {
                let (h, made) = (Arc::clone(&h), made.clone());
                tokio::spawn(async move { h.verify(&made, "pw").await })
            })
            .collect();
        for verified in burst {
            assert!(verified.await.unwrap().unwrap());
        }
        assert_eq!(h.memory.lock().len(), 0);
        assert_eq!(h.memory.demand.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn argon2id_round_trip_and_wrong_password() {
        let h = fast_hasher(2);
        let made = h.hash("correct horse").await.unwrap();
        assert!(made.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"), "{made}");
        assert!(h.verify(&made, "correct horse").await.unwrap());
        assert!(!h.verify(&made, "correct horse ").await.unwrap());
        assert!(!h.verify(&made, "").await.unwrap());
        let again = h.hash("correct horse").await.unwrap();
        assert_ne!(made, again, "each hash gets a fresh salt");
    }

    #[tokio::test]
    async fn default_hasher_uses_owasp_parameters() {
        let h = PasswordHasher::new();
        assert_eq!(h.params(), Argon2idParams::OWASP);
        assert!(h.max_concurrent() >= 1);
        let made = h.hash("pw").await.unwrap();
        assert!(
            made.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{made}"
        );
        assert_eq!(
            inspect(&made).unwrap(),
            HashKind::Argon2id(Argon2idParams::OWASP)
        );
        assert!(h.verify(&made, "pw").await.unwrap());
    }

    #[tokio::test]
    async fn garbage_hashes_are_errors_not_panics() {
        let h = fast_hasher(1);
        let valid_argon = h.hash("x").await.unwrap();
        let cases: Vec<String> = vec![
            String::new(),
            "plaintext".into(),
            "$".into(),
            "$2a$".into(),
            "$2a$10$".into(),
            "$2a$xx$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W".into(),
            "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4".into(),
            "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4!".into(),
            "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4é".into(),
            "$2a$31$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W".into(),
            "$2a$03$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W".into(),
            "$2x$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W".into(),
            "$argon2id$".into(),
            "$argon2id$v=19$m=1024,t=2,p=1$".into(),
            "$argon2id$v=19$m=1024,t=2,p=1$c2FsdHNhbHQ".into(),
            "$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA".into(),
            "$argon2id$v=19$m=1024,t=999,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA".into(),
            "$argon2i$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA".into(),
            "$argon2d$v=19$m=1024,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA".into(),
            valid_argon.replace("$argon2id$v=19$m=1024", "$argon2id$v=19$m=abc"),
            format!("{}!!", valid_argon),
            "$scrypt$ln=16,r=8,p=1$aM15713r3Xsvxbi31lqr1Q$nFNh2CVHVjNldFVKDHDlm4CbdRSCdEBsjjJxD+iCs5E".into(),
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".into(),
        ];
        for case in &cases {
            let err = h
                .verify(case, "password")
                .await
                .expect_err(&format!("accepted {case:?}"));
            assert!(err.is_bad_hash(), "{case:?}: {err}");
            assert!(inspect(case).is_err(), "{case:?}");
            assert!(
                !err.to_string().contains("2b2cU8CPhOTaGrs1"),
                "error leaks the hash: {err}"
            );
        }
    }

    #[tokio::test]
    async fn empty_password_is_not_hashed() {
        let h = fast_hasher(1);
        assert!(matches!(
            h.hash("").await,
            Err(PasswordHashError::EmptyPassword)
        ));
    }

    #[test]
    fn pool_configuration_is_validated() {
        assert!(matches!(
            PasswordHasher::with_config(FAST, 0),
            Err(PasswordHashError::NoPermits)
        ));
        let too_big = Argon2idParams {
            memory_kib: MAX_ARGON2_MEMORY_KIB + 1,
            ..FAST
        };
        assert!(PasswordHasher::with_config(too_big, 1).is_err());
        let too_small = Argon2idParams {
            memory_kib: 1,
            ..FAST
        };
        assert!(PasswordHasher::with_config(too_small, 1).is_err());
    }

    async fn peak_with(permits: usize, jobs: usize) -> usize {
        // Heavier than FAST so that overlapping jobs, if allowed, certainly overlap.
        let params = Argon2idParams {
            memory_kib: 8 * 1024,
            iterations: 3,
            parallelism: 1,
        };
        let h = Arc::new(PasswordHasher::with_config(params, permits).unwrap());
        let stored = h.hash("pw").await.unwrap();
        let mut tasks = Vec::new();
        for _ in 0..jobs {
            let h = Arc::clone(&h);
            let stored = stored.clone();
            tasks.push(tokio::spawn(async move { h.verify(&stored, "pw").await }));
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap());
        }
        assert_eq!(h.in_flight(), 0);
        h.peak_in_flight()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_permit_means_hashes_never_overlap() {
        assert_eq!(peak_with(1, 4).await, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_permits_allow_two_hashes_at_once_and_no_more() {
        // Proves the counter can observe overlap, so the one-permit test is meaningful.
        assert_eq!(peak_with(2, 6).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropped_request_keeps_its_permit_until_the_hash_finishes() {
        let params = Argon2idParams {
            memory_kib: 16 * 1024,
            iterations: 4,
            parallelism: 1,
        };
        let h = Arc::new(PasswordHasher::with_config(params, 1).unwrap());
        let stored = h.hash("pw").await.unwrap();
        let h2 = Arc::clone(&h);
        let s2 = stored.clone();
        let first = tokio::spawn(async move { h2.verify(&s2, "pw").await });
        // Let the first verify start, then abandon it.
        let started = Instant::now();
        while h.in_flight() == 0 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.abort();
        assert!(h.verify(&stored, "pw").await.unwrap());
        assert_eq!(h.peak_in_flight(), 1);
    }

    pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    #[tokio::test]
    async fn dummy_verify_costs_about_a_real_verify() {
        let h = fast_hasher(1);
        let stored = h.hash("right").await.unwrap();
        h.warm_up().await.unwrap();
        let (mut real, mut dummy) = (Vec::new(), Vec::new());
        // Interleaved, many rounds and a wide band: other tests hash on the same cores at the
        // same time, and the failure this guards against (no dummy work) reads as ~0.0.
        for _ in 0..15 {
            let t = Instant::now();
            assert!(!h.verify(&stored, "wrong").await.unwrap());
            real.push(t.elapsed());
            let t = Instant::now();
            h.verify_dummy("wrong").await.unwrap();
            dummy.push(t.elapsed());
        }
        let ratio = median(dummy).as_secs_f64() / median(real).as_secs_f64();
        assert!((0.33..=3.0).contains(&ratio), "dummy/real = {ratio}");
    }

    #[tokio::test]
    async fn dummy_takes_the_costliest_kind_learned() {
        let h = fast_hasher(2);
        h.learn_kinds([DEX_EXAMPLE_HASH, "nonsense"]).await.unwrap();
        let dummy = h.lock_dummy().clone().unwrap();
        assert!(dummy.starts_with("$2b$10$"), "{dummy}");
        // The dummy's password is random: the caller's password never matches it.
        assert!(!h.verify(&dummy, "password").await.unwrap());
        h.verify_dummy("password").await.unwrap();
        // FAST argon2id is far cheaper than bcrypt at cost 10: the bcrypt dummy stays.
        let argon = h.hash("pw").await.unwrap();
        h.learn_kinds([argon.as_str()]).await.unwrap();
        assert!(h.lock_dummy().clone().unwrap().starts_with("$2b$10$"));
        let bcrypt_cost = lock(&h.costs).0[&HashKind::Bcrypt { cost: 10 }];
        let floor = h.failure_floor();
        assert!(floor > bcrypt_cost, "{floor:?} vs bcrypt {bcrypt_cost:?}");
    }

    #[test]
    fn one_stall_moves_the_cost_estimate_only_a_little() {
        let kind = HashKind::Bcrypt { cost: 10 };
        let mut costs = Costs::default();
        costs.record(kind, Duration::from_millis(80));
        costs.record(kind, Duration::from_secs(5));
        assert_eq!(costs.0[&kind], Duration::from_millis(90));
    }
}
