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
