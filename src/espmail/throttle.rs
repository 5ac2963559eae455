//! The failed-login slowdown (ESPMAIL.md §1): failed attempts counted per name and per
//! address in a sliding window ([`crate::rate::SlidingWindow`], the same limiter as the
//! ESP Mail send rate), and auto-registrations counted per address.
//! [`super::accounts::AccountsHandle::login`] asks it before any hashing and tells it how
//! each attempt went.
//!
//! Pure and in memory: the caller passes the time in; nothing is stored, so a restart
//! forgets every count.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::avatar::name_key;
use crate::rate::{wait_secs, SlidingWindow};

/// Limits of the failed-login slowdown.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failed attempts allowed per name, and per address, in `window`.
    pub failures: usize,
    /// The window.
    pub window: Duration,
    /// Names and addresses remembered at most (each).
    pub max_keys: usize,
}

impl Default for ThrottleLimits {
    fn default() -> ThrottleLimits {
        ThrottleLimits {
            failures: 5,
            window: Duration::from_secs(60),
            max_keys: 100_000,
        }
    }
}

/// Failed-login slowdown per name and per address (ESPMAIL.md §1).
#[derive(Debug)]
pub struct LoginThrottle {
    by_name: SlidingWindow<String>,
    by_addr: SlidingWindow<IpAddr>,
}

impl LoginThrottle {
    /// A throttle with these limits.
    pub fn new(limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle {
            by_name: SlidingWindow::new(limits.failures, limits.window, limits.max_keys),
            by_addr: SlidingWindow::new(limits.failures, limits.window, limits.max_keys),
        }
    }

    /// `Err(seconds to wait)` when this name or this address has failed too often lately.
    /// Names that break the name rules are counted only against the address (they can
    /// never log in, and must not fill the table with junk).
    pub fn check(&self, name: &str, peer: IpAddr, now: Instant) -> Result<(), u64> {
        let a = match name_key(name) {
            Some(k) => self.by_name.check(&k, now),
            None => Ok(()),
        };
        let b = self.by_addr.check(&peer, now);
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(x), Ok(())) | (Ok(()), Err(x)) => Err(wait_secs(x)),
            (Err(x), Err(y)) => Err(wait_secs(x.max(y))),
        }
    }

    /// Counts a failed attempt against the name and the address.
    pub fn failed(&mut self, name: &str, peer: IpAddr, now: Instant) {
        if let Some(k) = name_key(name) {
            self.by_name.record(&k, now);
        }
        self.by_addr.record(&peer, now);
    }

    /// Counts an auto-registration against the address, so one address cannot create
    /// avatars faster than it may fail logins.
    pub fn registered(&mut self, peer: IpAddr, now: Instant) {
        self.by_addr.record(&peer, now);
    }

    /// A successful login clears the name's count (not the address's: one address may be
    /// guessing many names).
    pub fn succeeded(&mut self, name: &str) {
        if let Some(k) = name_key(name) {
            self.by_name.forget(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_per_name_and_per_address() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t = LoginThrottle::new(ThrottleLimits::default());
        for i in 0..5 {
            assert_eq!(t.check("Bob", a, t0), Ok(()));
            t.failed("Bob", a, t0 + Duration::from_secs(i));
        }
        // Name throttled from any address, in any case.
        assert_eq!(t.check("BOB", b, t0 + Duration::from_secs(10)), Err(50));
        // Address throttled for any name.
        assert!(t.check("alice", a, t0 + Duration::from_secs(10)).is_err());
        assert_eq!(t.check("alice", b, t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(t.check("bob", b, t0 + Duration::from_secs(61)), Ok(()));
        // Success clears the name, not the address.
        t.succeeded("bob");
        assert_eq!(t.check("bob", b, t0 + Duration::from_secs(10)), Ok(()));
        assert!(t.check("carol", a, t0 + Duration::from_secs(10)).is_err());
        // Illegal names count against the address only.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let names_before = t.by_name.len();
        for _ in 0..5 {
            t.failed("no/such\nname", c, t0);
        }
        assert!(t.check("x", c, t0).is_err());
        assert_eq!(t.by_name.len(), names_before);
    }
}
