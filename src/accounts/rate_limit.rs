//! Rate limits on sign-up and log-in: at most 10 attempts a minute per client IP (see
//! `web::client_ip`) and per email address (each action counted separately), kept in memory per
//! process with `governor`.
//! Several app instances each allow their own 10; that bounds guessing well enough without a
//! shared store.

use std::{net::IpAddr, num::NonZeroU32, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

/// Attempts allowed per minute, per IP and per email.
pub const PER_MINUTE: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Signup,
    Login,
}

pub struct AuthLimits {
    by_ip: DefaultKeyedRateLimiter<(Action, IpAddr)>,
    by_email: DefaultKeyedRateLimiter<(Action, String)>,
}

impl std::fmt::Debug for AuthLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLimits").finish_non_exhaustive()
    }
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self::per_minute(PER_MINUTE)
    }
}

impl AuthLimits {
    pub fn per_minute(n: u32) -> Self {
        let quota = Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN));
        AuthLimits { by_ip: RateLimiter::keyed(quota), by_email: RateLimiter::keyed(quota) }
    }

    /// Counts one attempt from `ip` for `email` (normalised: trimmed, lower-cased); a blocked
    /// attempt is [`RateLimited`] with the seconds to wait.
    pub fn check(&self, action: Action, ip: IpAddr, email: &str) -> Result<(), RateLimited> {
        let by_ip = self.by_ip.check_key(&(action, ip)).map_err(|n| n.wait_time_from(self.by_ip.clock().now()));
        let email = email.trim().to_lowercase();
        let by_email = if email.is_empty() {
            Ok(())
        } else {
            self.by_email.check_key(&(action, email)).map_err(|n| n.wait_time_from(self.by_email.clock().now()))
        };
        match (by_ip, by_email) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(wait), Ok(())) | (Ok(()), Err(wait)) => Err(limited(wait)),
            (Err(a), Err(b)) => Err(limited(a.max(b))),
        }
    }

    /// Forgets keys whose limits have fully replenished (call periodically).
    pub fn retain_recent(&self) {
        self.by_ip.retain_recent();
        self.by_email.retain_recent();
    }
}

/// Too many attempts: wait `retry_after` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many attempts; try again in {retry_after} seconds")]
pub struct RateLimited {
    pub retry_after: u64,
}

fn limited(wait: Duration) -> RateLimited {
    // Round up: a client that waits exactly Retry-After seconds must get through.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    RateLimited { retry_after: secs.max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_a_minute_per_ip_and_per_email() {
        let limits = AuthLimits::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        for i in 0..10 {
            limits.check(Action::Login, ip, &format!("u{i}@example.com")).expect("under the limit");
        }
        match limits.check(Action::Login, ip, "other@example.com") {
            Err(RateLimited { retry_after }) => assert!((1..=60).contains(&retry_after)),
            other => panic!("expected a rate limit, got {other:?}"),
        }
        // Sign-up is counted separately, and so is another IP.
        limits.check(Action::Signup, ip, "x@example.com").expect("other action");
        // One email from many IPs: limited by the email.
        for i in 0..10 {
            limits.check(Action::Signup, [10, 0, 1, i].into(), " Victim@Example.com").expect("under the limit");
        }
        assert!(limits.check(Action::Signup, [10, 0, 2, 1].into(), "victim@example.com").is_err());
    }
}
