//! Bad input from one connection is counted, not echoed line by line (ESPMAIL.md §5,
//! DESIGN.md promise 10): a flood of bad frames costs a counter and a few log lines, never
//! a line per frame, and a connection that sends nothing but junk is closed.
//!
//! [`BadInput`] is one session's tally by [`BadKind`]. It decides what is logged: the
//! first bad input of the session (with its reason, at info), then at most one line per
//! [`LOG_EVERY`] with the counts so far, and, through [`BadInput::finish`], one summary
//! when the session ends. Once the session has sent its limit (`[server] max_bad_frames`)
//! it says so, and the session closes.
//!
//! What is *not* bad input, so neither counted nor logged above debug: the real C64's
//! deliberate bad-CRC handshake probe and its `SG` flow-control hello (WIRE.md 1.3.5), and
//! requests this server does not implement (a player clicking another avatar sends them;
//! they are legal protocol).
//!
//! May touch: the log (through tracing), and the clock it is handed.

use std::fmt;
use std::time::{Duration, Instant};

use tracing::info;

/// At most one "bad input continues" line per session in this time.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// What was wrong with one piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKind {
    /// A frame the codec refused: garbage, a bad CRC, over the size limit, no sync byte.
    Frame,
    /// An Action whose payload is not a Habitat packet.
    Packet,
    /// A split request that does not fit together.
    Split,
    /// A Habitat packet that is not a well-formed request.
    Request,
    /// Speech on a noid that is not the sender's own, or before the region was described.
    NotOwned,
}

impl BadKind {
    const ALL: [BadKind; 5] = [
        BadKind::Frame,
        BadKind::Packet,
        BadKind::Split,
        BadKind::Request,
        BadKind::NotOwned,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The word used in log fields.
    pub fn name(self) -> &'static str {
        match self {
            BadKind::Frame => "frame",
            BadKind::Packet => "packet",
            BadKind::Split => "split",
            BadKind::Request => "request",
            BadKind::NotOwned => "not_owned",
        }
    }
}

impl fmt::Display for BadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Counts by kind, shown as `frame=N packet=N split=N request=N not_owned=N`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u64; 5]);

impl Counts {
    /// How many of `kind`.
    pub fn of(&self, kind: BadKind) -> u64 {
        self.0[kind.index()]
    }

    /// All kinds together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in BadKind::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", kind.name(), self.of(*kind))?;
        }
        Ok(())
    }
}

/// What [`BadInput::record`] says to do about one bad input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Carry on; the input costs itself only.
    Continue,
    /// The session has sent its limit of bad input: close it.
    Close,
}

/// One session's bad input.
#[derive(Debug)]
pub struct BadInput {
    counts: Counts,
    /// Close once the total reaches this (at least 1).
    max: u64,
    /// When the last line about bad input was written; `None` before the first.
    logged_at: Option<Instant>,
    /// Bad input since that line.
    since_logged: u64,
}

impl BadInput {
    /// A session's tally; it closes after `max` bad inputs (0 is taken as 1).
    pub fn new(max: u32) -> BadInput {
        BadInput {
            counts: Counts::default(),
            max: u64::from(max.max(1)),
            logged_at: None,
            since_logged: 0,
        }
    }

    /// The counts so far.
    #[cfg(test)]
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Counts one bad input of `kind`, for `why` (a reason in words, never the bytes), and
    /// logs it if the rate allows.
    pub fn record(&mut self, kind: BadKind, why: &dyn fmt::Display, now: Instant) -> Verdict {
        self.counts.0[kind.index()] += 1;
        self.since_logged += 1;
        match self.logged_at {
            None => {
                info!(%kind, error = %why, "bad input from this connection; more is counted, not logged");
                self.logged_at = Some(now);
                self.since_logged = 0;
            }
            Some(at) if now.duration_since(at) >= LOG_EVERY => {
                info!(counts = %self.counts, new = self.since_logged, "bad input continues");
                self.logged_at = Some(now);
                self.since_logged = 0;
            }
            Some(_) => {}
        }
        if self.counts.total() >= self.max {
            Verdict::Close
        } else {
            Verdict::Continue
        }
    }

    /// Whether the limit has been reached.
    pub fn exhausted(&self) -> bool {
        self.counts.total() >= self.max
    }

    /// The session's summary line, when there was any bad input after the first line.
    pub fn finish(&self) {
        let total = self.counts.total();
        if self.exhausted() {
            info!(counts = %self.counts, max = self.max, "closed: too much bad input");
        } else if total > 1 {
            info!(counts = %self.counts, "bad input this session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_closes_at_the_limit() {
        let now = Instant::now();
        let mut bad = BadInput::new(3);
        assert_eq!(bad.record(BadKind::Frame, &"crc", now), Verdict::Continue);
        assert_eq!(
            bad.record(BadKind::NotOwned, &"noid", now),
            Verdict::Continue
        );
        assert!(!bad.exhausted());
        assert_eq!(bad.record(BadKind::Frame, &"crc", now), Verdict::Close);
        assert!(bad.exhausted());
        assert_eq!(bad.counts().of(BadKind::Frame), 2);
        assert_eq!(bad.counts().total(), 3);
        assert_eq!(
            bad.counts().to_string(),
            "frame=2 packet=0 split=0 request=0 not_owned=1"
        );
    }

    #[test]
    fn logs_the_first_then_once_per_interval() {
        let start = Instant::now();
        let mut bad = BadInput::new(u32::MAX);
        bad.record(BadKind::Packet, &"short", start);
        assert_eq!(bad.logged_at, Some(start), "the first is logged");
        for i in 1..1000u64 {
            bad.record(BadKind::Frame, &"junk", start + Duration::from_millis(i));
        }
        assert_eq!(
            bad.logged_at,
            Some(start),
            "nothing more within the interval"
        );
        assert_eq!(bad.since_logged, 999);
        let later = start + LOG_EVERY;
        bad.record(BadKind::Frame, &"junk", later);
        assert_eq!(bad.logged_at, Some(later), "one line after the interval");
        assert_eq!(bad.since_logged, 0);
    }

    #[test]
    fn a_limit_of_zero_still_allows_nothing_twice() {
        let mut bad = BadInput::new(0);
        assert_eq!(
            bad.record(BadKind::Split, &"x", Instant::now()),
            Verdict::Close
        );
    }
}
