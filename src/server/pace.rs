//! The per-connection outbound byte-rate cap, as pure arithmetic: time is passed in.
//!
//! A C64 on a 1200-baud modem link drops bytes that arrive faster than it drains its
//! input buffer, so the server spaces its bytes evenly, as bridge_v2 does (WIRE.md 1.1:
//! `rate/10` bytes per second from a token bucket of capacity 1). A rate of 0 turns the
//! cap off (loopback tests, modern clients).

use std::time::{Duration, Instant};

/// When the next bytes of one connection may go out.
#[derive(Debug, Clone)]
pub struct Pacer {
    bytes_per_sec: u32,
    /// The moment the previous write's last byte is "on the wire" at the capped rate.
    free_at: Option<Instant>,
}

impl Pacer {
    /// A pacer for `bytes_per_sec` (0 = no cap).
    pub fn new(bytes_per_sec: u32) -> Pacer {
        Pacer {
            bytes_per_sec,
            free_at: None,
        }
    }

    /// Whether the cap is on.
    pub fn is_on(&self) -> bool {
        self.bytes_per_sec > 0
    }

    /// Account for `len` bytes about to be written at `now`; returns how long to wait
    /// before writing them. Idle time is not saved up: the bucket holds one byte, so a
    /// burst after a quiet minute is paced like any other.
    pub fn reserve(&mut self, len: usize, now: Instant) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        let start = match self.free_at {
            Some(t) if t > now => t,
            _ => now,
        };
        let wait = start - now;
        let nanos = (len as u128 * 1_000_000_000) / u128::from(self.bytes_per_sec);
        let busy = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.free_at = Some(start + busy);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_waits() {
        let mut p = Pacer::new(0);
        let now = Instant::now();
        assert!(!p.is_on());
        for _ in 0..100 {
            assert_eq!(p.reserve(1000, now), Duration::ZERO);
        }
    }

    #[test]
    fn back_to_back_writes_are_spaced_at_the_rate() {
        let mut p = Pacer::new(120);
        let now = Instant::now();
        assert_eq!(p.reserve(12, now), Duration::ZERO);
        // 12 bytes at 120 B/s take 100 ms; the next write waits for them.
        assert_eq!(p.reserve(12, now), Duration::from_millis(100));
        assert_eq!(p.reserve(1, now), Duration::from_millis(200));
    }

    #[test]
    fn idle_time_is_not_saved_up() {
        let mut p = Pacer::new(100);
        let t0 = Instant::now();
        assert_eq!(p.reserve(10, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.reserve(10, later), Duration::ZERO);
        assert_eq!(p.reserve(10, later), Duration::from_millis(100));
    }
}

/// How many lines (SPEAK or ESP) one connection may send: a burst of `burst`, then `per_sec`
/// a second. A person types far slower; a flood would otherwise fill the recipients'
/// bounded outboxes and get *them* disconnected as slow readers.
#[derive(Debug, Clone)]
pub struct LineBucket {
    burst: f64,
    per_sec: f64,
    tokens: f64,
    at: Option<Instant>,
}

impl LineBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_sec: u32) -> LineBucket {
        LineBucket {
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            tokens: f64::from(burst),
            at: None,
        }
    }

    /// Takes one line's token at `now`; false when the line must be dropped.
    pub fn take(&mut self, now: Instant) -> bool {
        if let Some(at) = self.at {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = LineBucket::new(3, 2);
        let t0 = Instant::now();
        assert!(b.take(t0) && b.take(t0) && b.take(t0));
        assert!(!b.take(t0), "burst spent");
        assert!(!b.take(t0 + Duration::from_millis(400)));
        assert!(b.take(t0 + Duration::from_millis(1000)), "refilled at 2/s");
        // Long idle refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!(b.take(later) && b.take(later) && b.take(later));
        assert!(!b.take(later));
    }
}
