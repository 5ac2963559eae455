//! The login throttle (ESPMAIL.md §1, DESIGN.md promise 10): how many password guesses an
//! address may make, counted so that neither concurrency nor many addresses get around it
//! and nobody can lock a player out from elsewhere.
//!
//! - **Attempts in flight count.** An attempt is *reserved* ([`LoginThrottle::begin`])
//!   before any hashing, under the throttle's lock, and counts against its address from
//!   that moment; when it ends ([`LoginThrottle::end`]) a success gives its place back, a
//!   failure keeps it. So N sockets sending N guesses at once get no more than the limit.
//!   The caller lets at most [`ThrottleLimits::in_flight_per_address`] of them be hashed
//!   at a time (the others wait their turn: a household behind one address logging in
//!   together is slowed, not refused); [`LoginThrottle::in_flight`] counts them.
//! - **Per address, progressively.** At most [`ThrottleLimits::per_address`] attempts in
//!   [`ThrottleLimits::window`] and [`ThrottleLimits::per_address_long`] in
//!   [`ThrottleLimits::long_window`]: an address that keeps failing waits longer and
//!   longer. Behind a listed front end the address is the player's own (PROXY header).
//! - **Per name, without lockouts.** Wrong guesses at a name from other addresses never
//!   stop the right password from an address that has not been failing. Only past a high
//!   ceiling of failures at one name ([`ThrottleLimits::per_name_ceiling`]), a sign of many
//!   addresses guessing together, is the name closed to addresses that have themselves
//!   failed lately; an address with a clean record still gets its try. Reaching the
//!   ceiling is logged once per window.
//! - **Lookups count.** The in-world prompt tells a known name ("Password: ") from a new
//!   one, so looking a name up there costs an attempt too ([`Kind::Lookup`]); it is given
//!   back when that login succeeds.
//!
//! Pure and in memory: the caller passes the time in; nothing is stored, so a restart
//! forgets every count. Memory is bounded by [`ThrottleLimits::max_keys`].
//!
//! May touch: nothing outside memory (it logs the ceiling, by name, never a password).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::avatar::{log_name, name_key};
use crate::rate::{wait_secs, SlidingWindow};

/// The throttle's numbers. The defaults are the product's; `[auth]` in the config does not
/// expose them (one less way to misconfigure a security limit).
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Attempts one address may make in `window` (failed, or still being checked).
    pub per_address: usize,
    /// The short window.
    pub window: Duration,
    /// Attempts one address may make in `long_window`: the progressive part.
    pub per_address_long: usize,
    /// The long window (also the per-name ceiling's).
    pub long_window: Duration,
    /// Failed attempts at one name, from all addresses, in `long_window`, past which only
    /// addresses with no failure of their own in `long_window` may try that name.
    pub per_name_ceiling: usize,
    /// Password checks one address may have running at once.
    pub in_flight_per_address: usize,
    /// Names and addresses remembered at most (each).
    pub max_keys: usize,
}

impl Default for ThrottleLimits {
    fn default() -> ThrottleLimits {
        ThrottleLimits {
            per_address: 5,
            window: Duration::from_secs(60),
            per_address_long: 30,
            long_window: Duration::from_secs(3600),
            per_name_ceiling: 100,
            in_flight_per_address: 2,
            max_keys: 100_000,
        }
    }
}

/// What an attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A password is checked (or a new one hashed): it counts against the name too, and
    /// is one of the address's checks in flight.
    Check,
    /// The in-world prompt looks a name up (known or new): it counts against the address.
    Lookup,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The right password: the attempt gives its place back.
    Success,
    /// A new avatar was registered: it costs the address, not the name.
    Registered,
    /// A wrong password, an unknown name, or a lookup that led nowhere: it keeps its place.
    Failure,
    /// The store failed, not the player: nothing is counted.
    Inconclusive,
}

/// A reserved attempt, to be handed back to [`LoginThrottle::end`].
#[derive(Debug)]
pub struct Ticket {
    name: Option<String>,
    addr: IpAddr,
    at: Instant,
    kind: Kind,
}

/// The login throttle's counts (see the module doc).
#[derive(Debug)]
pub struct LoginThrottle {
    limits: ThrottleLimits,
    by_addr: SlidingWindow<IpAddr>,
    by_addr_long: SlidingWindow<IpAddr>,
    by_name: SlidingWindow<String>,
    /// Names whose ceiling was logged in the current long window.
    ceiling_logged: SlidingWindow<String>,
    in_flight: HashMap<IpAddr, usize>,
}

impl LoginThrottle {
    /// A throttle with these limits.
    pub fn new(limits: ThrottleLimits) -> LoginThrottle {
        let keys = limits.max_keys;
        LoginThrottle {
            limits,
            by_addr: SlidingWindow::new(limits.per_address, limits.window, keys),
            by_addr_long: SlidingWindow::new(limits.per_address_long, limits.long_window, keys),
            by_name: SlidingWindow::new(limits.per_name_ceiling, limits.long_window, keys),
            ceiling_logged: SlidingWindow::new(1, limits.long_window, keys),
            in_flight: HashMap::new(),
        }
    }

    /// Reserves an attempt at `name` from `addr`, or says how many seconds to wait. A name
    /// that breaks the name rules counts against the address only (it can never log in,
    /// and must not fill the table with junk).
    pub fn begin(
        &mut self,
        name: &str,
        addr: IpAddr,
        kind: Kind,
        now: Instant,
    ) -> Result<Ticket, u64> {
        let short = self.by_addr.check(&addr, now);
        let long = self.by_addr_long.check(&addr, now);
        if let Some(wait) = [short, long].into_iter().filter_map(Result::err).max() {
            return Err(wait_secs(wait));
        }
        let key = name_key(name);
        if let (Some(k), Kind::Check) = (&key, kind) {
            if let Err(wait) = self.by_name.check(k, now) {
                if self.ceiling_logged.try_acquire(k, now).is_ok() {
                    tracing::warn!(
                        avatar = %log_name(name),
                        ceiling = self.limits.per_name_ceiling,
                        "login ceiling reached: many failed guesses at this name; addresses \
                         that have been failing may not try it until the guesses age out"
                    );
                }
                // A clean address still gets its try: the ceiling is against guessers.
                if self.by_addr_long.count(&addr, now) > 0 {
                    return Err(wait_secs(wait));
                }
            }
        }
        self.by_addr.record(&addr, now);
        self.by_addr_long.record(&addr, now);
        let name = match kind {
            Kind::Check => key.inspect(|k| self.by_name.record(k, now)),
            Kind::Lookup => None,
        };
        if kind == Kind::Check {
            *self.in_flight.entry(addr).or_insert(0) += 1;
        }
        Ok(Ticket {
            name,
            addr,
            at: now,
            kind,
        })
    }

    /// Ends a reserved attempt.
    pub fn end(&mut self, ticket: Ticket, outcome: Outcome) {
        let Ticket {
            name,
            addr,
            at,
            kind,
        } = ticket;
        if kind == Kind::Check {
            if let Some(n) = self.in_flight.get_mut(&addr) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.in_flight.remove(&addr);
                }
            }
        }
        let give_back_addr = matches!(outcome, Outcome::Success | Outcome::Inconclusive);
        let give_back_name = !matches!(outcome, Outcome::Failure);
        if give_back_addr {
            self.by_addr.unrecord(&addr, at);
            self.by_addr_long.unrecord(&addr, at);
        }
        if let (true, Some(k)) = (give_back_name, &name) {
            self.by_name.unrecord(k, at);
        }
    }

    /// Checks running now for `addr` (for tests and the admin's stats).
    pub fn in_flight(&self, addr: IpAddr) -> usize {
        self.in_flight.get(&addr).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn attempts_in_flight_count_before_their_outcome() {
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        let mut t = LoginThrottle::new(ThrottleLimits::default());
        // Many guesses at once: each is reserved (and counted) before any is checked, so
        // the sixth is refused while the first five are still in flight.
        let held: Vec<_> = (0..5)
            .map(|_| t.begin("Bob", a, Kind::Check, t0).unwrap())
            .collect();
        assert_eq!(t.in_flight(a), 5);
        assert_eq!(t.begin("Bob", a, Kind::Check, t0).unwrap_err(), 60);
        for x in held {
            t.end(x, Outcome::Failure);
        }
        let wait = t.begin("Bob", a, Kind::Check, secs(t0, 10)).unwrap_err();
        assert_eq!(wait, 50);
        assert_eq!(t.in_flight(a), 0);
        // Another address is not affected, and so not locked out of Bob.
        let ok = t
            .begin("Bob", ip("10.0.0.2"), Kind::Check, secs(t0, 10))
            .unwrap();
        t.end(ok, Outcome::Success);
    }

    #[test]
    fn a_success_gives_its_place_back_and_a_registration_costs_the_address_only() {
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        let mut t = LoginThrottle::new(ThrottleLimits::default());
        // A household logging in again and again is never throttled.
        for i in 0..50 {
            let x = t.begin("Bob", a, Kind::Check, secs(t0, i)).unwrap();
            t.end(x, Outcome::Success);
        }
        // Registrations count against the address: five a minute.
        for i in 0..5 {
            let x = t
                .begin(&format!("new{i}"), a, Kind::Check, secs(t0, 60))
                .unwrap();
            t.end(x, Outcome::Registered);
        }
        assert!(t.begin("new5", a, Kind::Check, secs(t0, 61)).is_err());
        // A store error counts for nobody.
        let b = ip("10.0.0.2");
        for _ in 0..10 {
            let x = t.begin("Bob", b, Kind::Check, t0).unwrap();
            t.end(x, Outcome::Inconclusive);
        }
        assert_eq!(t.by_addr.count(&b, t0), 0);
    }

    #[test]
    fn a_persistent_guesser_waits_longer_and_longer() {
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        let mut t = LoginThrottle::new(ThrottleLimits::default());
        let mut at = t0;
        let mut made = 0;
        // Guessing as fast as allowed for an hour: 30 guesses, not 5 × 60.
        while at < secs(t0, 3600) {
            match t.begin("Bob", a, Kind::Check, at) {
                Ok(x) => {
                    t.end(x, Outcome::Failure);
                    made += 1;
                }
                Err(wait) => at += Duration::from_secs(wait),
            }
        }
        assert_eq!(made, 30);
        assert!(t.begin("Bob", a, Kind::Check, secs(t0, 3000)).unwrap_err() > 60);
    }

    #[test]
    fn guesses_from_elsewhere_never_lock_out_a_clean_address() {
        let t0 = Instant::now();
        let limits = ThrottleLimits {
            per_name_ceiling: 20,
            ..ThrottleLimits::default()
        };
        let mut t = LoginThrottle::new(limits);
        // Many addresses guess at Bob, five each: far past the ceiling.
        for host in 1..=10u8 {
            let addr = IpAddr::from([10, 0, 0, host]);
            for _ in 0..5 {
                if let Ok(x) = t.begin("bob", addr, Kind::Check, t0) {
                    t.end(x, Outcome::Failure);
                }
            }
        }
        assert_eq!(t.by_name.count(&"bob".to_string(), t0), 20);
        // A failing address may not try Bob now, even after its own short window…
        let failing = IpAddr::from([10, 0, 0, 1]);
        assert!(t.begin("Bob", failing, Kind::Check, secs(t0, 120)).is_err());
        // …nor could one that failed at another name…
        let other = ip("10.0.1.1");
        let x = t.begin("Carol", other, Kind::Check, t0).unwrap();
        t.end(x, Outcome::Failure);
        assert!(t.begin("Bob", other, Kind::Check, secs(t0, 1)).is_err());
        // …but the player, from an address that has not been failing, gets in at once.
        let player = ip("192.0.2.7");
        let x = t.begin("Bob", player, Kind::Check, secs(t0, 1)).unwrap();
        t.end(x, Outcome::Success);
    }

    #[test]
    fn lookups_count_against_the_address_only_and_illegal_names_never_reach_the_name_table() {
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        let mut t = LoginThrottle::new(ThrottleLimits::default());
        for i in 0..5 {
            let x = t.begin(&format!("probe{i}"), a, Kind::Lookup, t0).unwrap();
            assert_eq!(t.in_flight(a), 0, "a lookup hashes nothing");
            t.end(x, Outcome::Failure);
        }
        assert!(t.begin("probe5", a, Kind::Lookup, t0).is_err());
        assert!(t.by_name.is_empty());
        let b = ip("10.0.0.2");
        for _ in 0..5 {
            let x = t.begin("no/such\nname", b, Kind::Check, t0).unwrap();
            t.end(x, Outcome::Failure);
        }
        assert!(t.begin("x", b, Kind::Check, t0).is_err());
        assert!(t.by_name.is_empty());
    }
}
