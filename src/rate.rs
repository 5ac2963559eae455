//! Sliding-window rate limits keyed by name or address, in the bottom layer so that one
//! implementation serves both users: the ESP Mail send rate (ESPMAIL.md §3, in
//! [`crate::world::esp`]) and the failed-login slowdown (§1, the login throttle beside the
//! accounts).
//!
//! Pure: time is passed in as an [`Instant`], so tests move it by hand. Memory is bounded:
//! each key keeps at most `limit` timestamps, and the number of keys is capped; when the
//! cap is reached, keys whose window has passed are dropped first, then the key that was
//! touched least recently.
//!
//! May touch: nothing outside memory; imports nothing from the crate.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// At most `limit` events per key in any `window`.
#[derive(Debug)]
pub struct SlidingWindow<K> {
    limit: usize,
    window: Duration,
    max_keys: usize,
    keys: HashMap<K, Events>,
}

#[derive(Debug)]
struct Events {
    times: VecDeque<Instant>,
    last_touch: Instant,
}

impl<K: Hash + Eq + Clone> SlidingWindow<K> {
    /// A limiter allowing `limit` events per `window` for each key, remembering at most
    /// `max_keys` keys. A `limit` of 0 is treated as 1 (a limiter that refuses everything
    /// would lock every avatar out).
    pub fn new(limit: usize, window: Duration, max_keys: usize) -> SlidingWindow<K> {
        SlidingWindow {
            limit: limit.max(1),
            window,
            max_keys: max_keys.max(1),
            keys: HashMap::new(),
        }
    }

    /// `Ok(())` when one more event for `key` at `now` is within the limit, otherwise how
    /// long to wait until it would be. Does not record anything.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let Some(events) = self.keys.get(key) else {
            return Ok(());
        };
        let live: Vec<&Instant> = events
            .times
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.window)
            .collect();
        if live.len() < self.limit {
            return Ok(());
        }
        // The oldest event still in the window decides when a slot frees up.
        let oldest = live.len() - self.limit;
        let wait = live
            .get(oldest)
            .map(|t| (**t + self.window).saturating_duration_since(now))
            .unwrap_or(Duration::ZERO);
        Err(wait.max(Duration::from_millis(1)))
    }

    /// Records an event for `key` at `now` (whether or not it was within the limit).
    pub fn record(&mut self, key: &K, now: Instant) {
        if !self.keys.contains_key(key) && self.keys.len() >= self.max_keys {
            self.evict(now);
        }
        let events = self.keys.entry(key.clone()).or_insert_with(|| Events {
            times: VecDeque::new(),
            last_touch: now,
        });
        events.last_touch = now;
        while events
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            events.times.pop_front();
        }
        events.times.push_back(now);
        // Only the newest `limit` events can matter for `check`.
        while events.times.len() > self.limit {
            events.times.pop_front();
        }
    }

    /// Checks, and records the event only when it is within the limit.
    pub fn try_acquire(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        self.check(key, now)?;
        self.record(key, now);
        Ok(())
    }

    /// Events for `key` still inside the window at `now` (at most the limit: older ones
    /// are not kept).
    pub fn count(&self, key: &K, now: Instant) -> usize {
        self.keys.get(key).map_or(0, |e| {
            e.times
                .iter()
                .filter(|t| now.saturating_duration_since(**t) < self.window)
                .count()
        })
    }

    /// Takes back one event recorded at `at` for `key` (a reservation that turned out not
    /// to count, such as a login attempt that succeeded). Nothing happens when that event
    /// is no longer kept.
    pub fn unrecord(&mut self, key: &K, at: Instant) {
        if let Some(events) = self.keys.get_mut(key) {
            if let Some(pos) = events.times.iter().rposition(|t| *t == at) {
                events.times.remove(pos);
            }
            if events.times.is_empty() {
                self.keys.remove(key);
            }
        }
    }

    /// Forgets `key` (e.g. after a successful login).
    pub fn forget(&mut self, key: &K) {
        self.keys.remove(key);
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        let window = self.window;
        self.keys.retain(|_, e| {
            e.times
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < window)
        });
        if self.keys.len() >= self.max_keys {
            let oldest = self
                .keys
                .iter()
                .min_by_key(|(_, e)| e.last_touch)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.keys.remove(&k);
            }
        }
    }
}

/// Whole seconds to tell a player to wait, rounded up, at least 1.
pub fn wait_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_limit_then_refuses_until_the_oldest_expires() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(3, Duration::from_secs(60), 100);
        for i in 0..3 {
            assert_eq!(
                w.try_acquire(&"a", t0 + Duration::from_secs(i * 10)),
                Ok(())
            );
        }
        let wait = w
            .try_acquire(&"a", t0 + Duration::from_secs(30))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(30)); // the first expires at t0+60
        assert_eq!(wait_secs(wait), 30);
        // Another key is not affected.
        assert_eq!(w.check(&"b", t0 + Duration::from_secs(30)), Ok(()));
        // Once the first event leaves the window there is room again.
        assert_eq!(w.try_acquire(&"a", t0 + Duration::from_secs(60)), Ok(()));
        assert!(w.check(&"a", t0 + Duration::from_secs(61)).is_err());
    }

    #[test]
    fn refused_attempts_are_not_counted_by_try_acquire() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(1, Duration::from_secs(10), 10);
        w.try_acquire(&1, t0).unwrap();
        for s in 1..10 {
            assert!(w.try_acquire(&1, t0 + Duration::from_secs(s)).is_err());
        }
        assert_eq!(w.try_acquire(&1, t0 + Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn memory_is_bounded_and_stale_keys_go_first() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(2, Duration::from_secs(60), 3);
        w.record(&"old", t0);
        w.record(&"b", t0 + Duration::from_secs(100));
        w.record(&"c", t0 + Duration::from_secs(101));
        w.record(&"d", t0 + Duration::from_secs(102));
        assert_eq!(w.len(), 3);
        assert!(!w.keys.contains_key("old"));
        // All live: the least recently touched is evicted.
        w.record(&"e", t0 + Duration::from_secs(103));
        assert_eq!(w.len(), 3);
        assert!(!w.keys.contains_key("b"));
        for i in 0..1000u32 {
            w.record(&"x", t0 + Duration::from_millis(u64::from(i)));
        }
        assert!(w.keys.get("x").map(|e| e.times.len()) <= Some(2));
    }

    #[test]
    fn a_reservation_taken_back_frees_its_place() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(2, Duration::from_secs(60), 10);
        w.record(&"a", t0);
        w.record(&"a", t0 + Duration::from_secs(1));
        assert_eq!(w.count(&"a", t0 + Duration::from_secs(2)), 2);
        assert!(w.check(&"a", t0 + Duration::from_secs(2)).is_err());
        w.unrecord(&"a", t0 + Duration::from_secs(1));
        assert_eq!(w.count(&"a", t0 + Duration::from_secs(2)), 1);
        assert_eq!(w.check(&"a", t0 + Duration::from_secs(2)), Ok(()));
        // An event not kept (or never recorded) changes nothing; the last one gone, the
        // key is forgotten.
        w.unrecord(&"a", t0 + Duration::from_secs(9));
        assert_eq!(w.count(&"a", t0 + Duration::from_secs(2)), 1);
        w.unrecord(&"a", t0);
        assert!(w.is_empty());
        assert_eq!(w.count(&"a", t0 + Duration::from_secs(120)), 0);
    }

    #[test]
    fn wait_secs_rounds_up() {
        assert_eq!(wait_secs(Duration::from_millis(1)), 1);
        assert_eq!(wait_secs(Duration::from_millis(1001)), 2);
        assert_eq!(wait_secs(Duration::ZERO), 1);
    }
}
