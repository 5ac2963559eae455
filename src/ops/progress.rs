//! Progress of a long operator command (`rotate-key`, `purge`) on standard error: on a
//! terminal, one line redrawn in place (`re-encrypting: 2048/100000 (2%)`) and cleared at
//! the end, so the summary stands alone; otherwise (a log, a pipe, a cron mail) a plain
//! line at each tenth of a large job and nothing for a small one, so logs stay short.
//!
//! Hand-written rather than `indicatif`: a counter and a percentage are all these commands
//! have to show, and this keeps the output testable (any writer, the clock passed in).
//!
//! May touch: the writer it is given. Nothing else.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// Below this many rows a job is quick: no plain progress lines (a terminal still sees
/// its counter).
pub const PLAIN_MIN_ROWS: u64 = 10_000;

/// How often the terminal line is redrawn at most.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// One job's progress display.
pub struct Progress<'a> {
    out: &'a mut dyn Write,
    what: &'static str,
    terminal: bool,
    last_draw: Option<Instant>,
    /// The next tenth (1..=10) a plain line is due at.
    next_tenth: u64,
}

impl<'a> Progress<'a> {
    /// A display for `what` ("re-encrypting") on `out`, a terminal or not.
    pub fn new(out: &'a mut dyn Write, what: &'static str, terminal: bool) -> Progress<'a> {
        Progress {
            out,
            what,
            terminal,
            last_draw: None,
            next_tenth: 1,
        }
    }

    /// `done` rows of `total` are done, at `now`. Errors writing the display are ignored:
    /// progress is a courtesy, never a reason to stop the work.
    pub fn update(&mut self, done: u64, total: u64, now: Instant) {
        let _ = self.try_update(done, total.max(done), now);
    }

    fn try_update(&mut self, done: u64, total: u64, now: Instant) -> io::Result<()> {
        let pct = percent(done, total);
        if self.terminal {
            let due = self
                .last_draw
                .map_or(true, |t| now.duration_since(t) >= REDRAW_EVERY);
            if due || done == total {
                write!(self.out, "\r{}: {done}/{total} ({pct}%)\x1b[K", self.what)?;
                self.out.flush()?;
                self.last_draw = Some(now);
            }
            return Ok(());
        }
        if total < PLAIN_MIN_ROWS {
            return Ok(());
        }
        let tenths = done.saturating_mul(10) / total.max(1);
        if tenths >= self.next_tenth {
            writeln!(self.out, "espmail: {}: {done}/{total} ({pct}%)", self.what)?;
            self.next_tenth = tenths + 1;
        }
        Ok(())
    }

    /// The job is over: the terminal line is cleared (the summary follows on stdout).
    pub fn finish(&mut self) {
        if self.terminal && self.last_draw.is_some() {
            let _ = write!(self.out, "\r\x1b[K").and_then(|()| self.out.flush());
        }
    }
}

fn percent(done: u64, total: u64) -> u64 {
    done.saturating_mul(100).checked_div(total).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_terminal_a_large_job_gets_a_line_per_tenth() {
        let mut out = Vec::new();
        let t = Instant::now();
        let mut p = Progress::new(&mut out, "re-encrypting", false);
        for done in (0..=20_000).step_by(256).chain([20_000]) {
            p.update(done, 20_000, t);
        }
        p.finish();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10, "{text}");
        assert_eq!(lines[0], "espmail: re-encrypting: 2048/20000 (10%)");
        assert_eq!(lines[9], "espmail: re-encrypting: 20000/20000 (100%)");
        assert!(!text.contains('\r'), "{text}");
    }

    #[test]
    fn not_a_terminal_a_small_job_is_quiet() {
        let mut out = Vec::new();
        let mut p = Progress::new(&mut out, "purging", false);
        p.update(5, 10, Instant::now());
        p.update(10, 10, Instant::now());
        p.finish();
        assert!(out.is_empty());
    }

    #[test]
    fn on_a_terminal_one_line_is_redrawn_at_most_every_tenth_of_a_second_then_cleared() {
        let mut out = Vec::new();
        let t = Instant::now();
        let mut p = Progress::new(&mut out, "purging", true);
        p.update(1, 4, t);
        p.update(2, 4, t + Duration::from_millis(10)); // too soon: not drawn
        p.update(3, 4, t + Duration::from_millis(150));
        p.update(4, 4, t + Duration::from_millis(160)); // the end is always drawn
        p.finish();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\rpurging: 1/4 (25%)\x1b[K\rpurging: 3/4 (75%)\x1b[K\rpurging: 4/4 (100%)\x1b[K\r\x1b[K"
        );
    }

    #[test]
    fn nothing_drawn_nothing_cleared() {
        let mut out = Vec::new();
        Progress::new(&mut out, "purging", true).finish();
        assert!(out.is_empty());
    }
}
