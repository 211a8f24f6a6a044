//! Throttling sign-up and log-in so that an attacker is slowed down and the owner is not.
//!
//! Log-in counts *failures*, not attempts, under several keys, and each key backs off
//! exponentially once its free failures are used up (1 s, 2 s, 4 s … at most 15 minutes; a key
//! forgets after an hour without failures):
//! - per (email, client address): one address guessing one account's password;
//! - per client address: one address trying many accounts (credential stuffing);
//! - per (email, device): a browser that signed in to this account before carries a signed
//!   device cookie ([`DeviceCookie`], as OWASP recommends) and is counted on its own, so the
//!   owner's browser keeps its budget whatever others send, even from the same address.
//!
//! Nothing is counted per email alone: failures from many addresses never lock the owner out.
//! A password change counts its own failures per user ([`Throttle::check_password_change`]),
//! untouched by anyone's failed logins. Attempts (successful or not) are also limited per
//! address (sign-up and log-in, separately), which bounds the password hashing one address can
//! cause.
//!
//! **Global across instances.** Every count goes to a shared [`store::LimitStore`] (PostgreSQL,
//! or Redis with `FACEOFF_REDIS_URL`), so N instances allow what one does. The per-process
//! counters (governor, a map of failures) stay in front as a cheap first filter: what one
//! process alone already refuses is refused without a round trip (its counts are a subset of
//! the global ones, so it never refuses what the store would allow).
//!
//! **When the store is unreachable** (or slower than [`store::STORE_TIMEOUT`]), every limit here
//! *fails open to the per-process limit*: the request is judged by the first filter alone, the
//! error is logged and counted (`rate_limit_store_errors_total`). Failing closed would lock
//! every user out of signing up and logging in whenever Redis blinks; the per-process limits
//! still bound an attacker to N times the budget, and the password hash (argon2) still makes
//! each guess cost. With the PostgreSQL store an outage also stops the log-in itself.

pub mod store;

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use self::store::{LimitStore, StoreError};

/// Too many attempts: wait `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many attempts; try again in {retry_after} seconds")]
pub struct RateLimited {
    pub retry_after: u64,
}

pub use crate::config::ThrottleSettings;

/// The longest wait one key can impose.
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// A key forgets its failures after this long without one.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    EmailAddress(String, IpAddr),
    Address(IpAddr),
    EmailDevice(String, [u8; 16]),
    PasswordChange(Uuid),
}

impl Key {
    /// The key in the shared store (hashed there).
    fn stored(&self) -> String {
        match self {
            Key::EmailAddress(email, ip) => store::key("fail:email-address", &[email.as_bytes(), &ip_bytes(ip)]),
            Key::Address(ip) => store::key("fail:address", &[&ip_bytes(ip)]),
            Key::EmailDevice(email, device) => store::key("fail:email-device", &[email.as_bytes(), device]),
            Key::PasswordChange(user) => store::key("fail:password-change", &[user.as_bytes()]),
        }
    }
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Logs (and counts) a store error once the limit has fallen back to the per-process one.
fn store_failed(what: &str, err: &StoreError) {
    metrics::counter!("rate_limit_store_errors_total").increment(1);
    tracing::warn!("{what}: {err}; judged by this process's limit alone");
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    Signup,
    Login,
}

pub struct Throttle {
    settings: ThrottleSettings,
    store: LimitStore,
    attempts: DefaultKeyedRateLimiter<(Action, IpAddr)>,
    failures: Mutex<HashMap<Key, Failures>>,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle").field("settings", &self.settings).field("store", &self.store).finish_non_exhaustive()
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(ThrottleSettings::default())
    }
}

/// Who is trying to log in.
#[derive(Debug, Clone)]
pub struct LoginAttempt<'a> {
    /// Trimmed; compared case-insensitively.
    pub email: &'a str,
    pub address: IpAddr,
    /// The device id of a valid device cookie for this email, if the browser sent one.
    pub device: Option<[u8; 16]>,
}

impl Throttle {
    /// Counting in this process only (unit tests, tools).
    pub fn new(settings: ThrottleSettings) -> Self {
        Self::with_store(settings, LimitStore::local())
    }

    /// Counting in this process (first filter) and in the shared `store`.
    pub fn with_store(settings: ThrottleSettings, store: LimitStore) -> Self {
        let per_minute = NonZeroU32::new(settings.attempts_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        Throttle {
            settings,
            store,
            attempts: RateLimiter::keyed(Quota::per_minute(per_minute)),
            failures: Mutex::default(),
        }
    }

    async fn attempt(&self, action: Action, address: IpAddr) -> Result<(), RateLimited> {
        self.attempts
            .check_key(&(action, address))
            .map_err(|not_until| limited(not_until.wait_time_from(self.attempts.clock().now())))?;
        let per_minute = self.settings.attempts_per_minute.max(1);
        let kind = match action {
            Action::Signup => "attempt:signup",
            Action::Login => "attempt:login",
        };
        let key = store::key(kind, &[&ip_bytes(&address)]);
        match self.store.hit(&key, Duration::from_secs(60) / per_minute, per_minute).await {
            Ok(Some(hit)) if !hit.allowed => Err(limited(hit.wait)),
            Ok(_) => Ok(()),
            Err(err) => {
                store_failed("sign-up/log-in attempt limit", &err);
                Ok(())
            }
        }
    }

    /// Counts a sign-up attempt from `address`.
    pub async fn check_signup(&self, address: IpAddr) -> Result<(), RateLimited> {
        self.attempt(Action::Signup, address).await
    }

    fn keys(&self, attempt: &LoginAttempt<'_>) -> Vec<(Key, u32)> {
        let email = attempt.email.trim().to_lowercase();
        match attempt.device {
            // The owner's browser: its own budget, whatever others send from its address.
            Some(device) => vec![(Key::EmailDevice(email, device), self.settings.free_failures)],
            None => vec![
                (Key::EmailAddress(email, attempt.address), self.settings.free_failures),
                (Key::Address(attempt.address), self.settings.free_failures_per_address),
            ],
        }
    }

    /// Before checking a password: refused while any of the attempt's keys is backing off.
    pub async fn check_login(&self, attempt: &LoginAttempt<'_>) -> Result<(), RateLimited> {
        if attempt.device.is_none() {
            self.attempt(Action::Login, attempt.address).await?;
        }
        self.waiting(&self.keys(attempt)).await
    }

    /// A wrong password (or an unknown email).
    pub async fn login_failed(&self, attempt: &LoginAttempt<'_>) {
        self.fail(&self.keys(attempt)).await;
    }

    /// A successful log-in clears the failures of this email from this address or device (not
    /// those of the address: an attacker cannot clear them with an account of their own).
    pub async fn login_succeeded(&self, attempt: &LoginAttempt<'_>) {
        let keys: Vec<Key> =
            self.keys(attempt).into_iter().map(|(key, _)| key).filter(|key| !matches!(key, Key::Address(_))).collect();
        self.forget(&keys).await;
    }

    /// Before checking a signed-in user's current password (the password change).
    pub async fn check_password_change(&self, user: Uuid) -> Result<(), RateLimited> {
        self.waiting(&[(Key::PasswordChange(user), self.settings.free_failures)]).await
    }

    pub async fn password_change_failed(&self, user: Uuid) {
        self.fail(&[(Key::PasswordChange(user), self.settings.free_failures)]).await;
    }

    pub async fn password_change_succeeded(&self, user: Uuid) {
        self.forget(&[Key::PasswordChange(user)]).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Failures>> {
        self.failures.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long the longest-waiting key still waits, from (failures, time since the latest).
    fn longest_wait(&self, records: impl Iterator<Item = (u32, u32, Duration)>) -> Option<Duration> {
        records
            .filter_map(|(count, free, since_last)| {
                let wait = backoff(count, free, self.settings.base_backoff);
                (wait > since_last && since_last < FORGET_AFTER).then(|| wait - since_last)
            })
            .max()
    }

    async fn waiting(&self, keys: &[(Key, u32)]) -> Result<(), RateLimited> {
        // This process's failures first: a subset of the shared ones.
        let now = Instant::now();
        let local = {
            let failures = self.lock();
            self.longest_wait(keys.iter().filter_map(|(key, free)| {
                let f = failures.get(key)?;
                Some((f.count, *free, now.duration_since(f.last)))
            }))
        };
        if let Some(wait) = local {
            return Err(limited(wait));
        }
        let stored: Vec<String> = keys.iter().map(|(key, _)| key.stored()).collect();
        match self.store.failures(&stored).await {
            Ok(records) => {
                let shared = self.longest_wait(
                    keys.iter()
                        .zip(records)
                        .filter_map(|((_, free), record)| record.map(|r| (r.count, *free, r.since_last))),
                );
                match shared {
                    Some(wait) => Err(limited(wait)),
                    None => Ok(()),
                }
            }
            Err(err) => {
                store_failed("log-in backoff", &err);
                Ok(())
            }
        }
    }

    async fn fail(&self, keys: &[(Key, u32)]) {
        {
            let now = Instant::now();
            let mut failures = self.lock();
            for (key, _) in keys {
                let entry = failures.entry(key.clone()).or_insert(Failures { count: 0, last: now });
                if now.duration_since(entry.last) >= FORGET_AFTER {
                    entry.count = 0;
                }
                entry.count = entry.count.saturating_add(1);
                entry.last = now;
            }
        }
        let stored: Vec<String> = keys.iter().map(|(key, _)| key.stored()).collect();
        if let Err(err) = self.store.fail(&stored, FORGET_AFTER).await {
            store_failed("log-in backoff (recording a failure)", &err);
        }
    }

    async fn forget(&self, keys: &[Key]) {
        {
            let mut failures = self.lock();
            for key in keys {
                failures.remove(key);
            }
        }
        let stored: Vec<String> = keys.iter().map(Key::stored).collect();
        if let Err(err) = self.store.clear(&stored).await {
            store_failed("log-in backoff (clearing)", &err);
        }
    }

    /// Forgets what no longer limits anyone (call periodically), here and in the shared store.
    pub async fn retain_recent(&self) {
        self.attempts.retain_recent();
        let now = Instant::now();
        self.lock().retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        match self.store.purge_expired().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired rate-limit counters purged"),
            Err(err) => tracing::warn!("rate-limit counter cleanup: {err}"),
        }
    }
}

/// How long a key waits after its latest failure: nothing for the first `free` failures, then
/// `base` (1 s), twice that, four times … up to [`MAX_BACKOFF`].
fn backoff(count: u32, free: u32, base: Duration) -> Duration {
    if count < free {
        return Duration::ZERO;
    }
    let doublings = (count - free).min(20);
    base.saturating_mul(1u32 << doublings).min(MAX_BACKOFF)
}

fn limited(wait: Duration) -> RateLimited {
    // Round up: a client that waits exactly Retry-After seconds must get through.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    RateLimited { retry_after: secs.max(1) }
}

/// The signed device cookie a browser gets when it signs in: which account it signed in to and
/// a random device id, with an HMAC so nobody can make one for an account they never signed in
/// to (`faceoff_device`, HttpOnly, a year). It grants nothing but its own log-in budget.
pub struct DeviceCookie;

impl DeviceCookie {
    pub const NAME: &'static str = "faceoff_device";
    pub const MAX_AGE: time::Duration = time::Duration::days(365);

    fn mac(key: &[u8], device: &[u8; 16], email: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        mac.update(b"faceoff-device\0");
        mac.update(device);
        mac.update(email.trim().to_lowercase().as_bytes());
        mac
    }

    /// A new cookie value for a browser that just signed in as `email`.
    pub fn issue(key: &[u8], email: &str) -> String {
        let device: [u8; 16] = rand::random();
        let mut value = device.to_vec();
        value.extend_from_slice(&Self::mac(key, &device, email).finalize().into_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value)
    }

    /// The device id in `value`, if it is a cookie this site issued for `email`.
    pub fn verify(key: &[u8], value: &str, email: &str) -> Option<[u8; 16]> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value.trim()).ok()?;
        if bytes.len() != 48 {
            return None;
        }
        let device: [u8; 16] = bytes[..16].try_into().ok()?;
        Self::mac(key, &device, email).verify_slice(&bytes[16..]).ok()?;
        Some(device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(email: &str, address: [u8; 4], device: Option<[u8; 16]>) -> LoginAttempt<'_> {
        LoginAttempt { email, address: IpAddr::from(address), device }
    }

    fn throttle() -> Throttle {
        // A long first wait: a slow machine between two calls cannot outlast it.
        Throttle::new(ThrottleSettings {
            attempts_per_minute: 1000,
            free_failures: 5,
            free_failures_per_address: 20,
            base_backoff: Duration::from_secs(60),
        })
    }

    #[tokio::test]
    async fn failures_back_off_exponentially_per_email_and_address() {
        let t = throttle();
        let a = attempt("victim@example.com", [10, 0, 0, 1], None);
        for _ in 0..5 {
            t.check_login(&a).await.expect("free failures");
            t.login_failed(&a).await;
        }
        let first = t.check_login(&a).await.expect_err("backing off");
        assert!((59..=60).contains(&first.retry_after), "{first:?}");
        t.login_failed(&a).await;
        t.login_failed(&a).await;
        let third = t.check_login(&a).await.expect_err("backing off");
        assert!((239..=240).contains(&third.retry_after), "1, 2, 4 times the first wait: {third:?}");
        assert_eq!(backoff(6, 5, Duration::from_secs(1)), Duration::from_secs(2));
        assert_eq!(backoff(100, 5, Duration::from_secs(1)), MAX_BACKOFF);
    }

    #[tokio::test]
    async fn failures_from_many_addresses_never_lock_the_owner_out() {
        let t = throttle();
        for i in 0..50 {
            let a = attempt("victim@example.com", [10, 0, 1, i], None);
            t.check_login(&a).await.expect("each address has its own budget");
            t.login_failed(&a).await;
        }
        t.check_login(&attempt("Victim@Example.com", [192, 0, 2, 1], None))
            .await
            .expect("the owner, from a fresh address");
    }

    #[tokio::test]
    async fn a_device_keeps_its_own_budget_even_at_the_attackers_address() {
        let t = throttle();
        let shared = [10, 0, 0, 9];
        for _ in 0..30 {
            t.login_failed(&attempt("victim@example.com", shared, None)).await;
        }
        assert!(t.check_login(&attempt("victim@example.com", shared, None)).await.is_err());
        t.check_login(&attempt("victim@example.com", shared, Some([7; 16]))).await.expect("the owner's browser");
    }

    #[tokio::test]
    async fn one_address_trying_many_accounts_backs_off() {
        let t = throttle();
        for i in 0..20 {
            t.login_failed(&attempt(&format!("user{i}@example.com"), [10, 0, 0, 2], None)).await;
        }
        assert!(t.check_login(&attempt("fresh@example.com", [10, 0, 0, 2], None)).await.is_err());
        t.check_login(&attempt("fresh@example.com", [10, 0, 0, 3], None)).await.expect("another address");
    }

    #[tokio::test]
    async fn a_password_change_has_its_own_budget() {
        let t = throttle();
        let user = Uuid::new_v4();
        for i in 0..50 {
            t.login_failed(&attempt("victim@example.com", [10, 0, 2, i], None)).await;
        }
        t.check_password_change(user).await.expect("others' failed logins do not count");
        for _ in 0..5 {
            t.password_change_failed(user).await;
        }
        assert!(t.check_password_change(user).await.is_err(), "guessing from a borrowed session does");
    }

    #[test]
    fn device_cookies_are_signed_for_one_account() {
        let key = [3u8; 32];
        let value = DeviceCookie::issue(&key, "Ann@Example.com");
        assert!(DeviceCookie::verify(&key, &value, "ann@example.com").is_some());
        assert!(DeviceCookie::verify(&key, &value, "bob@example.com").is_none());
        assert!(DeviceCookie::verify(&[4u8; 32], &value, "ann@example.com").is_none());
        assert!(DeviceCookie::verify(&key, "garbage", "ann@example.com").is_none());
    }
}

/// Where a client stands against its API rate limit, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiQuota {
    /// Requests allowed per window (a minute).
    pub limit: u32,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the full limit is available again.
    pub reset: u64,
    /// Set when this request was refused: seconds until the next one is allowed.
    pub retry_after: Option<u64>,
}

type QuotaLimiter<K> = RateLimiter<
    K,
    governor::state::keyed::DefaultKeyedStateStore<K>,
    governor::clock::DefaultClock,
    governor::middleware::StateInformationMiddleware,
>;

/// The JSON API's request rate limits: `per_minute` requests per API key (a burst of the whole
/// minute's budget is allowed, then one request every `60 / per_minute` seconds), and the same
/// per client address for requests without a valid key. Counted in the shared store (global
/// across instances) behind a per-process governor limiter that refuses first what this
/// process alone already refuses. When the store is unreachable, the API *fails open to the
/// per-process limit* (see the module comment): refusing every API call because the limit
/// store is down would be an outage of the paid API, while the per-process limit still bounds
/// each client.
pub struct ApiLimits {
    per_minute: Option<NonZeroU32>,
    store: LimitStore,
    keys: QuotaLimiter<Uuid>,
    addresses: QuotaLimiter<IpAddr>,
}

impl std::fmt::Debug for ApiLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiLimits")
            .field("per_minute", &self.per_minute)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl ApiLimits {
    /// `None`: no limit (no headers either). Counting in this process only.
    pub fn new(per_minute: Option<NonZeroU32>) -> Self {
        Self::with_store(per_minute, LimitStore::local())
    }

    /// Counting in this process (first filter) and in the shared `store`.
    pub fn with_store(per_minute: Option<NonZeroU32>, store: LimitStore) -> Self {
        let quota = Quota::per_minute(per_minute.unwrap_or(NonZeroU32::MIN));
        ApiLimits {
            per_minute,
            store,
            keys: RateLimiter::keyed(quota).with_middleware(),
            addresses: RateLimiter::keyed(quota).with_middleware(),
        }
    }

    /// Counts a request made with the API key `key_id`.
    pub async fn check_key(&self, key_id: Uuid) -> Option<ApiQuota> {
        let per_minute = self.per_minute?;
        let local = Self::check(&self.keys, &key_id);
        Some(self.shared(local, per_minute, store::key("api:key", &[key_id.as_bytes()])).await)
    }

    /// Counts a request without a valid key from `address`.
    pub async fn check_address(&self, address: IpAddr) -> Option<ApiQuota> {
        let per_minute = self.per_minute?;
        let local = Self::check(&self.addresses, &address);
        Some(self.shared(local, per_minute, store::key("api:address", &[&ip_bytes(&address)])).await)
    }

    /// The global verdict, unless this process already refused.
    async fn shared(&self, local: ApiQuota, per_minute: NonZeroU32, key: String) -> ApiQuota {
        if local.retry_after.is_some() {
            return local;
        }
        let limit = per_minute.get();
        let interval = Duration::from_secs(60) / limit;
        match self.store.hit(&key, interval, limit).await {
            Ok(Some(hit)) => {
                let reset = hit.until_full.as_secs_f64().ceil() as u64;
                if hit.allowed {
                    let used = (hit.until_full.as_secs_f64() / interval.as_secs_f64()).ceil() as u32;
                    ApiQuota { limit, remaining: limit.saturating_sub(used), reset, retry_after: None }
                } else {
                    let retry_after = hit.wait.as_secs_f64().ceil().max(1.0) as u64;
                    ApiQuota { limit, remaining: 0, reset, retry_after: Some(retry_after) }
                }
            }
            Ok(None) => local,
            Err(err) => {
                store_failed("API rate limit", &err);
                local
            }
        }
    }

    fn check<K: Clone + std::hash::Hash + Eq>(limiter: &QuotaLimiter<K>, key: &K) -> ApiQuota {
        match limiter.check_key(key) {
            Ok(snapshot) => {
                let quota = snapshot.quota();
                let limit = quota.burst_size().get();
                let remaining = snapshot.remaining_burst_capacity();
                let refill = quota.replenish_interval() * limit.saturating_sub(remaining);
                ApiQuota { limit, remaining, reset: refill.as_secs_f64().ceil() as u64, retry_after: None }
            }
            Err(not_until) => {
                let quota = not_until.quota();
                let limit = quota.burst_size().get();
                let wait = not_until.wait_time_from(limiter.clock().now());
                let refill = quota.replenish_interval() * limit;
                ApiQuota {
                    limit,
                    remaining: 0,
                    reset: refill.as_secs_f64().ceil() as u64,
                    retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                }
            }
        }
    }

    /// Forgets clients that are back at their full limit (call periodically). The shared
    /// counters expire on their own (purged with the throttle's).
    pub fn retain_recent(&self) {
        self.keys.retain_recent();
        self.addresses.retain_recent();
    }
}

#[cfg(test)]
mod api_limit_tests {
    use super::*;

    #[tokio::test]
    async fn a_key_gets_its_budget_then_waits_and_others_are_not_affected() {
        let limits = ApiLimits::new(NonZeroU32::new(3));
        let key = Uuid::new_v4();
        let first = limits.check_key(key).await.expect("limited");
        assert_eq!((first.limit, first.remaining, first.retry_after), (3, 2, None));
        assert_eq!(first.reset, 20);
        limits.check_key(key).await;
        assert_eq!(limits.check_key(key).await.map(|q| q.remaining), Some(0));
        let refused = limits.check_key(key).await.expect("limited");
        assert!(refused.retry_after.is_some_and(|s| (1..=20).contains(&s)), "{refused:?}");
        assert_eq!(limits.check_key(Uuid::new_v4()).await.map(|q| q.remaining), Some(2), "per key");
        assert_eq!(ApiLimits::new(None).check_key(key).await, None, "off");
    }
}
