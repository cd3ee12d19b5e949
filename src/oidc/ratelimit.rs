//! Failed-attempt limiting with exponential backoff for password login and device user codes
//! (RFC 9700 hardening against online guessing; RFC 8628 §5.1 for user-code brute forcing).
//!
//! Password logins reserve their attempt before the hash is checked, so that a burst of
//! simultaneous guesses cannot be evaluated before the first failures are recorded:
//!
//! ```text
//! let attempt = PasswordAttempt::reserve(&limiter, &storage, acct, addr, now).await??;
//! match verify_password(..) {                       // Err(Retry) above → 429
//!     Ok(true) => attempt.succeeded(..),            // forgives the account, refunds the address
//!     Ok(false) => {}                               // the failure is already counted
//!     Err(_) => attempt.not_checked(..),            // refunds both
//! }
//! ```
//!
//! Device user codes check first and record failures afterwards (`check`, `record_failure`).
//!
//! [`RateLimiter`] state is in memory and per replica. With PostgreSQL storage the
//! password-login budget lives in the database instead (see [`PasswordAttempt`]), so every
//! replica draws on the same budget per account and per address.
//!
//! Time is an explicit `Instant` argument (not `crate::clock::Clock`, which has whole-second Unix
//! time) so lockouts are monotonic under wall-clock jumps and tests move time without sleeping.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::clock::UnixTime;
use crate::storage::{AttemptDecision, AttemptPolicy, SharedStorage, StorageError};

/// Keys longer than this are stored as their SHA-256 digest, so that `max_keys` bounds memory in
/// bytes too even when a key embeds an attacker-chosen string (a username of any length). 320
/// leaves room for a prefix plus the longest valid e-mail address (254 octets, RFC 5321).
const MAX_KEY_BYTES: usize = 320;

/// How many failures, how fast, and how long to lock out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitPolicy {
    /// The failure that reaches this count locks the key (0 behaves as 1).
    pub max_failures: u32,
    /// Failures are forgotten once this long passes without a new failure (after a lockout: this
    /// long after the lockout ends).
    pub window: Duration,
    /// The first lockout.
    pub base_lockout: Duration,
    /// Each failure after a lockout, before `window` has forgiven it, doubles the lockout up to this.
    pub max_lockout: Duration,
}

impl RateLimitPolicy {
    /// Password login: 5 failures per 15 minutes, then 30 s doubling to 15 minutes. A user who
    /// mistypes a few times is not slowed; a guesser gets about one try per 15 minutes per key.
    pub fn login() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            base_lockout: Duration::from_secs(30),
            max_lockout: Duration::from_secs(15 * 60),
        }
    }

    /// Device-flow user codes: 10 failures per 10 minutes, then 60 s doubling to 30 minutes.
    /// Typing a code off a screen fails more often than a password, but a user code has far less
    /// entropy than a password is assumed to, so the lockouts are longer.
    pub fn user_code() -> Self {
        Self {
            max_failures: 10,
            window: Duration::from_secs(10 * 60),
            base_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(30 * 60),
        }
    }

    /// The lockout applied at backoff `level` (1 = first lockout).
    fn lockout(&self, level: u32) -> Duration {
        let factor = 2u32.saturating_pow(level.saturating_sub(1));
        self.base_lockout
            .saturating_mul(factor)
            .min(self.max_lockout)
    }
}

/// The attempt is refused; try again after `after`. This is the longest lockout among the
/// checked keys, because the attempt is only allowed once every one of them is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed attempts; retry after {} s", self.retry_after_secs())]
pub struct Retry {
    pub after: Duration,
}

impl Retry {
    /// Whole seconds for a `Retry-After` header: rounded up, so a client that obeys it is not
    /// refused again for a fraction of a second, and at least 1, because `Retry-After: 0` invites
    /// an immediate retry storm.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self
            .after
            .as_secs()
            .saturating_add(u64::from(self.after.subsec_nanos() > 0));
        secs.max(1)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// Failures since the key was last fresh; only compared against the threshold at level 0.
    failures: u32,
    /// 0 = never locked since last forgiven; n = the n-th consecutive lockout.
    level: u32,
    /// The latest failure; a lockout starts here. Also the recency used for eviction.
    last_failure: Instant,
    /// Length of the current lockout; zero at level 0.
    lockout: Duration,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            level: 0,
            last_failure: now,
            lockout: Duration::ZERO,
        }
    }

    /// Durations are measured with `saturating_duration_since` because threads can report
    /// slightly out-of-order `now`s; an earlier `now` just reads as "no time has passed".
    fn remaining_lockout(&self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.last_failure);
        let remaining = self.lockout.saturating_sub(elapsed);
        (!remaining.is_zero()).then_some(remaining)
    }

    /// Nothing left to remember: not locked, and a full window of quiet since the last failure
    /// (or since the lockout ended). Such an entry is equivalent to no entry.
    fn is_spent(&self, now: Instant, policy: &RateLimitPolicy) -> bool {
        now.saturating_duration_since(self.last_failure)
            >= self.lockout.saturating_add(policy.window)
    }

    fn fail(&mut self, now: Instant, policy: &RateLimitPolicy) {
        if self.is_spent(now, policy) {
            *self = Entry::new(now);
        }
        self.last_failure = self.last_failure.max(now);
        self.failures = self.failures.saturating_add(1);
        if self.level > 0 {
            // Once a key has been locked, every further failure before it is forgiven is a new,
            // doubled lockout: a guesser gets one try per lockout instead of a fresh batch. This
            // includes failures that raced the lock (attempts that passed `check` concurrently),
            // since those were real guesses too.
            self.level = self.level.saturating_add(1);
            self.lockout = policy.lockout(self.level);
        } else if self.failures >= policy.max_failures.max(1) {
            self.level = 1;
            self.lockout = policy.lockout(1);
        }
    }
}

impl Entry {
    /// Takes back the failure an attempt reserved at `at` that turned out to be no guess (the
    /// password was right, or nothing was checked). A lockout that very attempt started or
    /// escalated is lifted again: the lockout before it had already ended, or the attempt
    /// would have been refused.
    fn refund(&mut self, at: Instant) {
        self.failures = self.failures.saturating_sub(1);
        if self.level > 0 && self.last_failure == at {
            self.level -= 1;
            self.lockout = Duration::ZERO;
        }
    }
}

/// A bounded, thread-safe map from key to failure state. See the module documentation.
#[derive(Debug)]
pub struct RateLimiter {
    policy: RateLimitPolicy,
    max_keys: usize,
    // `HashMap`'s default hasher is randomly keyed SipHash, so attacker-chosen keys cannot be
    // crafted to collide. The lock is held only for short, non-blocking map operations.
    entries: Mutex<HashMap<Box<str>, Entry>>,
}

impl RateLimiter {
    /// `max_keys` bounds the number of keys remembered (at least 1).
    pub fn new(policy: RateLimitPolicy, max_keys: usize) -> Self {
        Self {
            policy,
            max_keys: max_keys.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> &RateLimitPolicy {
        &self.policy
    }

    /// `Err` with the longest remaining lockout if any of `keys` is locked at `now`.
    pub fn check(&self, keys: &[&str], now: Instant) -> Result<(), Retry> {
        self.longest_lockout(&mut self.lock(), keys, now)
    }

    /// Counts one failed attempt against each distinct key.
    pub fn record_failure(&self, keys: &[&str], now: Instant) {
        self.fail_all(&mut self.lock(), keys, now);
    }

    fn longest_lockout(
        &self,
        entries: &mut HashMap<Box<str>, Entry>,
        keys: &[&str],
        now: Instant,
    ) -> Result<(), Retry> {
        let mut longest: Option<Duration> = None;
        for key in keys {
            let key = stored_key(key);
            let Some(entry) = entries.get(key.as_ref()) else {
                continue;
            };
            if entry.is_spent(now, &self.policy) {
                // Free memory early; a spent entry means the same as none.
                entries.remove(key.as_ref());
                continue;
            }
            if let Some(remaining) = entry.remaining_lockout(now) {
                longest = Some(longest.map_or(remaining, |l| l.max(remaining)));
            }
        }
        match longest {
            Some(after) => Err(Retry { after }),
            None => Ok(()),
        }
    }

    fn fail_all(&self, entries: &mut HashMap<Box<str>, Entry>, keys: &[&str], now: Instant) {
        for (i, key) in keys.iter().enumerate() {
            // A key listed twice is one attempt, not two.
            if keys[..i].contains(key) {
                continue;
            }
            let key = stored_key(key);
            if let Some(entry) = entries.get_mut(key.as_ref()) {
                entry.fail(now, &self.policy);
                continue;
            }
            if entries.len() >= self.max_keys {
                self.make_room(entries, now);
            }
            let mut entry = Entry::new(now);
            entry.fail(now, &self.policy);
            entries.insert(key.into_owned().into_boxed_str(), entry);
        }
    }

    /// Reserves one attempt: `Err` with the longest remaining lockout if any of `keys` is
    /// locked (nothing is counted then); otherwise counts the attempt as a failure against each
    /// distinct key before returning, in one critical section, so that concurrent attempts
    /// cannot all pass a check that none of them has counted yet. A success settles with
    /// [`RateLimiter::record_success`] and [`RateLimiter::refund`].
    pub fn try_attempt(&self, keys: &[&str], now: Instant) -> Result<(), Retry> {
        let mut entries = self.lock();
        self.longest_lockout(&mut entries, keys, now)?;
        self.fail_all(&mut entries, keys, now);
        Ok(())
    }

    /// Takes back the failure that [`RateLimiter::try_attempt`] at `at` counted against each
    /// of `keys`.
    pub fn refund(&self, keys: &[&str], at: Instant) {
        let mut entries = self.lock();
        for key in keys {
            if let Some(entry) = entries.get_mut(stored_key(key).as_ref()) {
                entry.refund(at);
            }
        }
    }

    /// Forgets `keys` entirely. The caller passes only keys a success vouches for (the account
    /// that just authenticated), not shared ones like a client address, or one valid login would
    /// wipe out a guesser's record on the same address.
    pub fn record_success(&self, keys: &[&str]) {
        let mut entries = self.lock();
        for key in keys {
            entries.remove(stored_key(key).as_ref());
        }
    }

    /// Keys currently remembered, for metrics.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Entry>> {
        // Nothing in a critical section can panic half-way through an update, so the map is
        // consistent even if another thread panicked while holding the lock.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called when the map is full. Spent entries go first (forgetting them changes nothing).
    /// If that is not enough, an eighth of the capacity is evicted at once, so a flood of new
    /// keys costs one O(n) pass per n/8 insertions rather than per insertion. Unlocked entries
    /// are evicted before locked ones, least recently failed first: a flood of one-off keys
    /// from rotating addresses must fill the whole map with *locked* keys before it can push out
    /// the lockout on the account it is guessing.
    fn make_room(&self, entries: &mut HashMap<Box<str>, Entry>, now: Instant) {
        entries.retain(|_, e| !e.is_spent(now, &self.policy));
        if entries.len() < self.max_keys {
            return;
        }
        let target = self.max_keys - (self.max_keys / 8).max(1);
        let evict = entries.len() - target;
        let mut ranked: Vec<(bool, Instant, &Box<str>)> = entries
            .iter()
            .map(|(k, e)| (e.remaining_lockout(now).is_some(), e.last_failure, k))
            .collect();
        ranked.select_nth_unstable_by(evict - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let victims: Vec<Box<str>> = ranked[..evict]
            .iter()
            .map(|(_, _, k)| (*k).clone())
            .collect();
        for key in victims {
            entries.remove(&key);
        }
    }
}

/// One password attempt, counted as a failure against its account and its client address
/// before the password is checked. Settle it with [`PasswordAttempt::succeeded`] or
/// [`PasswordAttempt::not_checked`]; a wrong password needs nothing more.
#[derive(Debug)]
pub struct PasswordAttempt {
    account: String,
    address: String,
    /// Where the budget lives: the database (shared by replicas) or this process.
    shared: bool,
    at: Instant,
    now: UnixTime,
}

impl PasswordAttempt {
    /// Reserves the attempt in the database when storage shares budgets (one round trip),
    /// else in `memory`. `Ok(Err(retry))`: a key is locked and nothing was counted.
    pub async fn reserve(
        memory: &RateLimiter,
        storage: &SharedStorage,
        account: String,
        address: String,
        now: UnixTime,
    ) -> Result<Result<Self, Retry>, StorageError> {
        let at = Instant::now();
        let policy = attempt_policy(memory.policy());
        let shared_keys = [shared_key(&account), shared_key(&address)];
        let shared = match storage
            .reserve_login_attempt(&shared_keys, &policy, now)
            .await?
        {
            Some(AttemptDecision::Reserved) => true,
            Some(AttemptDecision::Locked { until }) => {
                let secs = u64::try_from(until.saturating_sub(now)).unwrap_or(0);
                return Ok(Err(Retry {
                    after: Duration::from_secs(secs.max(1)),
                }));
            }
            None => {
                if let Err(retry) = memory.try_attempt(&[&account, &address], at) {
                    return Ok(Err(retry));
                }
                false
            }
        };
        Ok(Ok(Self {
            account,
            address,
            shared,
            at,
            now,
        }))
    }

    /// The password was right: the account is forgiven, and the address gets its failure back
    /// (a success vouches for this attempt only, not for others from the same address). In
    /// the database this runs after the login answers, so it adds no latency.
    pub fn succeeded(self, memory: &RateLimiter, storage: &SharedStorage) {
        if self.shared {
            let storage = storage.clone();
            let forgive = shared_key(&self.account);
            let refund = [shared_key(&self.address)];
            tokio::spawn(async move {
                if let Err(error) = storage
                    .settle_login_attempt(Some(&forgive), &refund, self.now)
                    .await
                {
                    tracing::warn!(%error, "could not forgive a successful login's attempt");
                }
            });
        } else {
            memory.record_success(&[&self.account]);
            memory.refund(&[&self.address], self.at);
        }
    }

    /// Nothing was checked (the connector failed): both keys get their failure back.
    pub async fn not_checked(self, memory: &RateLimiter, storage: &SharedStorage) {
        if self.shared {
            let refund = [shared_key(&self.account), shared_key(&self.address)];
            if let Err(error) = storage.settle_login_attempt(None, &refund, self.now).await {
                tracing::warn!(%error, "could not refund an unchecked login attempt");
            }
        } else {
            memory.refund(&[&self.account, &self.address], self.at);
        }
    }
}

fn attempt_policy(policy: &RateLimitPolicy) -> AttemptPolicy {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    AttemptPolicy {
        max_failures: i64::from(policy.max_failures.max(1)),
        window: secs(policy.window),
        base_lockout: secs(policy.base_lockout),
        max_lockout: secs(policy.max_lockout),
    }
}

/// What the database stores for a key: a digest, so no account name or address is kept.
fn shared_key(key: &str) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(b"lanyard login attempt v1\0")
            .chain_update(key.as_bytes())
            .finalize(),
    )
}

fn stored_key(key: &str) -> Cow<'_, str> {
    if key.len() <= MAX_KEY_BYTES {
        Cow::Borrowed(key)
    } else {
        // Distinct long keys stay distinct; a short key could only collide with a long one by
        // spelling out that long key's digest, which needs a SHA-256 preimage.
        Cow::Owned(format!(
            "sha256:{}",
            hex::encode(Sha256::digest(key.as_bytes()))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SEC: Duration = Duration::from_secs(1);

    fn policy() -> RateLimitPolicy {
        RateLimitPolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            base_lockout: Duration::from_secs(10),
            max_lockout: Duration::from_secs(50),
        }
    }

    fn fail(rl: &RateLimiter, keys: &[&str], now: Instant, times: u32) {
        for _ in 0..times {
            rl.record_failure(keys, now);
        }
    }

    #[test]
    fn failures_under_the_limit_pass() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        assert_eq!(rl.check(&["acct:a"], t0), Ok(()));
        fail(&rl, &["acct:a"], t0, 2);
        assert_eq!(rl.check(&["acct:a"], t0), Ok(()));
    }

    #[test]
    fn reaching_the_limit_locks_with_retry_after() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        fail(&rl, &["acct:a"], t0, 3);
        let retry = rl.check(&["acct:a"], t0 + 3 * SEC).unwrap_err();
        assert_eq!(retry.after, 7 * SEC);
        assert_eq!(retry.retry_after_secs(), 7);
        // Other keys are unaffected.
        assert_eq!(rl.check(&["acct:b"], t0), Ok(()));
        // The lockout ends exactly when it says.
        assert_eq!(rl.check(&["acct:a"], t0 + 10 * SEC), Ok(()));
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one_second() {
        let r = |after| Retry { after }.retry_after_secs();
        assert_eq!(r(Duration::from_millis(1)), 1);
        assert_eq!(r(Duration::ZERO), 1);
        assert_eq!(r(Duration::from_millis(1001)), 2);
        assert_eq!(r(Duration::from_secs(30)), 30);
        assert_eq!(r(Duration::MAX), u64::MAX);
        let shown = Retry {
            after: Duration::from_millis(6_500),
        }
        .to_string();
        assert_eq!(shown, "too many failed attempts; retry after 7 s");
    }

    #[test]
    fn each_failure_after_a_lockout_doubles_it_up_to_the_cap() {
        let rl = RateLimiter::new(policy(), 100);
        let mut now = Instant::now();
        fail(&rl, &["acct:a"], now, 3);
        let mut seen = Vec::new();
        for _ in 0..5 {
            let after = rl.check(&["acct:a"], now).unwrap_err().after;
            seen.push(after.as_secs());
            // Wait the lockout out, then fail once more.
            now += after;
            assert_eq!(rl.check(&["acct:a"], now), Ok(()));
            rl.record_failure(&["acct:a"], now);
        }
        assert_eq!(seen, vec![10, 20, 40, 50, 50]);
    }

    #[test]
    fn backoff_level_survives_huge_counts_without_overflow() {
        let p = RateLimitPolicy {
            max_lockout: Duration::MAX,
            ..policy()
        };
        assert_eq!(p.lockout(1), 10 * SEC);
        assert_eq!(
            p.lockout(40),
            Duration::from_secs(10).saturating_mul(u32::MAX)
        );
        assert_eq!(p.lockout(u32::MAX), p.lockout(40));
    }

    #[test]
    fn a_quiet_window_forgives_failures() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        fail(&rl, &["acct:a"], t0, 2);
        // A window after the last failure, the count starts over: two more failures don't lock.
        let t1 = t0 + 60 * SEC;
        fail(&rl, &["acct:a"], t1, 2);
        assert_eq!(rl.check(&["acct:a"], t1), Ok(()));
        // But failures inside the window accumulate.
        rl.record_failure(&["acct:a"], t1 + 59 * SEC);
        assert!(rl.check(&["acct:a"], t1 + 59 * SEC).is_err());
    }

    #[test]
    fn a_quiet_window_after_a_lockout_resets_the_backoff() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        fail(&rl, &["acct:a"], t0, 3); // locked 10 s
                                       // One failure just before lockout + window has passed: escalates.
        let t1 = t0 + 69 * SEC;
        rl.record_failure(&["acct:a"], t1);
        assert_eq!(rl.check(&["acct:a"], t1).unwrap_err().after, 20 * SEC);
        // A full window after that lockout ends, the key is fresh again: one failure is just one.
        let t2 = t1 + 20 * SEC + 60 * SEC;
        rl.record_failure(&["acct:a"], t2);
        assert_eq!(rl.check(&["acct:a"], t2), Ok(()));
        fail(&rl, &["acct:a"], t2, 2);
        assert_eq!(rl.check(&["acct:a"], t2).unwrap_err().after, 10 * SEC);
    }

    #[test]
    fn success_resets_only_the_given_keys() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        fail(&rl, &["acct:a", "addr:1"], t0, 3);
        assert!(rl.check(&["acct:a"], t0).is_err());
        rl.record_success(&["acct:a"]);
        assert_eq!(rl.check(&["acct:a"], t0), Ok(()));
        assert!(rl.check(&["addr:1"], t0).is_err());
        // The count starts from zero, not from where it was.
        fail(&rl, &["acct:a"], t0, 2);
        assert_eq!(rl.check(&["acct:a"], t0), Ok(()));
    }

    #[test]
    fn the_longest_lockout_among_keys_wins() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        fail(&rl, &["acct:a"], t0, 3); // 10 s from t0
        fail(&rl, &["addr:1"], t0, 3);
        rl.record_failure(&["addr:1"], t0 + 10 * SEC); // 20 s from t0+10
        fail(&rl, &["addr:2"], t0 + 5 * SEC, 3); // 10 s from t0+5
        let now = t0 + 12 * SEC;
        let keys = ["acct:a", "addr:2", "addr:1", "never-seen"];
        assert_eq!(rl.check(&keys, now).unwrap_err().after, 18 * SEC);
        // The order of keys does not matter.
        let reversed = ["never-seen", "addr:1", "addr:2", "acct:a"];
        assert_eq!(rl.check(&reversed, now).unwrap_err().after, 18 * SEC);
    }

    #[test]
    fn a_key_listed_twice_counts_once() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        fail(&rl, &["acct:a", "acct:a"], t0, 2);
        assert_eq!(rl.check(&["acct:a"], t0), Ok(()));
    }

    #[test]
    fn memory_stays_bounded_under_key_rotation() {
        let rl = RateLimiter::new(RateLimitPolicy::login(), 10_000);
        let t0 = Instant::now();
        let mut max_len = 0;
        for i in 0..100_000u32 {
            let key = format!("addr:{i}");
            rl.record_failure(&[&key], t0 + Duration::from_millis(u64::from(i)));
            max_len = max_len.max(rl.len());
        }
        assert!(max_len <= 10_000, "grew to {max_len}");
        // The newest keys are the ones remembered.
        assert!(rl.entries.lock().unwrap().contains_key("addr:99999"));
        assert!(!rl.entries.lock().unwrap().contains_key("addr:0"));
    }

    #[test]
    fn a_locked_key_survives_a_flood_of_new_keys() {
        let rl = RateLimiter::new(RateLimitPolicy::login(), 1_000);
        let t0 = Instant::now();
        fail(&rl, &["acct:victim"], t0, 5);
        for i in 0..20_000u32 {
            let key = format!("addr:{i}");
            rl.record_failure(&[&key], t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(rl.len() <= 1_000);
        assert!(rl.check(&["acct:victim"], t0 + 21 * SEC).is_err());
    }

    #[test]
    fn the_least_recently_failed_unlocked_key_is_evicted_first() {
        let rl = RateLimiter::new(policy(), 4);
        let t0 = Instant::now();
        for (i, k) in ["k0", "k1", "k2", "k3"].iter().enumerate() {
            rl.record_failure(&[k], t0 + (i as u32) * SEC);
        }
        // k0 fails again, so k1 is now the stalest.
        rl.record_failure(&["k0"], t0 + 5 * SEC);
        rl.record_failure(&["k4"], t0 + 6 * SEC);
        let map = rl.entries.lock().unwrap();
        assert_eq!(map.len(), 4);
        assert!(!map.contains_key("k1"));
        assert!(map.contains_key("k0"));
    }

    #[test]
    fn spent_entries_are_dropped_before_live_ones() {
        let rl = RateLimiter::new(policy(), 4);
        let t0 = Instant::now();
        rl.record_failure(&["old0"], t0);
        rl.record_failure(&["old1"], t0);
        rl.record_failure(&["live0"], t0 + 50 * SEC);
        rl.record_failure(&["live1"], t0 + 50 * SEC);
        // At t0+61 s both "old" entries are spent, so no live one needs to go.
        rl.record_failure(&["new"], t0 + 61 * SEC);
        let map = rl.entries.lock().unwrap();
        let mut keys: Vec<_> = map.keys().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, vec!["live0", "live1", "new"]);
    }

    #[test]
    fn check_drops_spent_entries() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        fail(&rl, &["acct:a"], t0, 3);
        assert_eq!(rl.len(), 1);
        assert_eq!(rl.check(&["acct:a"], t0 + 70 * SEC), Ok(()));
        assert!(rl.is_empty());
    }

    #[test]
    fn oversized_keys_are_stored_as_digests() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        let long = format!("acct:{}", "x".repeat(100_000));
        let other = format!("acct:{}y", "x".repeat(100_000));
        fail(&rl, &[&long], t0, 3);
        assert!(rl.check(&[&long], t0).is_err());
        assert_eq!(rl.check(&[&other], t0), Ok(()));
        let map = rl.entries.lock().unwrap();
        assert!(map.keys().all(|k| k.len() <= MAX_KEY_BYTES));
        drop(map);
        rl.record_success(&[&long]);
        assert!(rl.is_empty());
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_unlock() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now() + 1_000 * SEC;
        fail(&rl, &["acct:a"], t0, 3);
        let earlier = t0 - 5 * SEC;
        assert_eq!(rl.check(&["acct:a"], earlier).unwrap_err().after, 10 * SEC);
        rl.record_failure(&["acct:a"], earlier);
        assert_eq!(rl.check(&["acct:a"], t0).unwrap_err().after, 20 * SEC);
    }

    #[test]
    fn zero_limits_are_clamped_instead_of_misbehaving() {
        let p = RateLimitPolicy {
            max_failures: 0,
            ..policy()
        };
        let rl = RateLimiter::new(p, 0);
        let t0 = Instant::now();
        assert_eq!(rl.check(&["a"], t0), Ok(()));
        rl.record_failure(&["a"], t0);
        assert!(rl.check(&["a"], t0).is_err());
        rl.record_failure(&["b"], t0);
        assert_eq!(rl.len(), 1);
    }

    #[test]
    fn concurrent_attempts_get_no_more_than_the_budget() {
        let rl = Arc::new(RateLimiter::new(policy(), 1_000));
        let t0 = Instant::now();
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let (rl, barrier) = (Arc::clone(&rl), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    rl.try_attempt(&["acct:a", &format!("addr:{t}")], t0)
                        .is_ok()
                })
            })
            .collect();
        let allowed = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(allowed, 3, "max_failures attempts, however they race");
        // A refused attempt counted nothing against its address.
        let counted: u32 = (0..16)
            .filter_map(|t| {
                rl.lock()
                    .get(format!("addr:{t}").as_str())
                    .map(|e| e.failures)
            })
            .sum();
        assert_eq!(counted, 3);
    }

    #[test]
    fn a_refund_takes_back_the_attempt_and_the_lockout_it_started() {
        let rl = RateLimiter::new(policy(), 100);
        let t0 = Instant::now();
        for i in 0..2 {
            rl.try_attempt(&["addr:1"], t0 + i * SEC).unwrap();
        }
        // The third attempt locks; it was a success, so the address is as it was before.
        let t2 = t0 + 2 * SEC;
        rl.try_attempt(&["addr:1"], t2).unwrap();
        assert!(rl.check(&["addr:1"], t2).is_err());
        rl.refund(&["addr:1"], t2);
        assert_eq!(rl.check(&["addr:1"], t2), Ok(()));
        // Two failures are still on record: the next attempt locks again.
        rl.try_attempt(&["addr:1"], t2 + SEC).unwrap();
        assert!(rl.check(&["addr:1"], t2 + SEC).is_err());
        // A refund of an older attempt does not lift a lockout a later one started.
        rl.refund(&["addr:1"], t2);
        assert!(rl.check(&["addr:1"], t2 + SEC).is_err());
    }

    #[test]
    fn concurrent_failures_are_all_counted() {
        let p = RateLimitPolicy {
            max_failures: 8 * 500,
            ..policy()
        };
        let rl = Arc::new(RateLimiter::new(p, 1_000));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let rl = Arc::clone(&rl);
                std::thread::spawn(move || {
                    let own = format!("addr:{t}");
                    for _ in 0..500 {
                        rl.record_failure(&["acct:shared", &own], t0);
                        let _ = rl.check(&["acct:shared", &own], t0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let map = rl.entries.lock().unwrap();
        assert_eq!(map["acct:shared"].failures, 4_000);
        assert_eq!(map["acct:shared"].level, 1, "the 4000th failure locks");
        for t in 0..8 {
            assert_eq!(map[format!("addr:{t}").as_str()].failures, 500);
        }
    }
}
