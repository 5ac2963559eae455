//! The Habilink login preamble (WIRE.md §1.3.1, ESPMAIL.md §1): the text lines a client
//! sends before its Q-Link session, as a pure incremental parser.
//!
//! Feed it bytes as they arrive ([`Preamble::feed`]); it answers [`Step::NeedMore`] until
//! it has the login and the one extra line that follows it, then [`Step::Done`] with the
//! [`Login`] and the bytes after the preamble, which are the start of the Q-Link session.
//! It keeps no clock: the caller passes `now`, and calls [`Preamble::poll`] at
//! [`Preamble::next_deadline`] for the one-off `CONNECT` fallback. There is deliberately no
//! timeout here: the real C64 can sit silent for minutes, so the session applies a generous
//! login limit of its own.
//!
//! Memory is bounded by [`MAX_LINE`]; the buffer that held a line (and so perhaps a
//! password) is zeroed as soon as the line is parsed.
//!
//! May touch: serde_json, [`crate::log_redact`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;
use zeroize::Zeroize;

use crate::log_redact::Sensitive;

/// Longest line, terminator excluded, as bridge_v2's 512-byte line limit.
pub const MAX_LINE: usize = 512;

/// Lines without a login after which the client is refused (bridge_v2 gives up after 64).
pub const MAX_LINES_WITHOUT_LOGIN: u32 = 64;

/// Silence after which, with no login yet, [`CONNECT`] is written once.
pub const CONNECT_AFTER: Duration = Duration::from_secs(2);

/// `\r\rCONNECT\r`: a Hayes modem's result code, for a client that waits for one before
/// sending its login (bridge_v2 writes it once after 2 s without a login).
pub const CONNECT: &[u8] = b"\r\rCONNECT\r";

/// Longest avatar name (ESPMAIL.md §1).
pub const MAX_NAME_CHARS: usize = 16;

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// Why the preamble was refused. Lengths and counts only, never what was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PreambleError {
    /// A line ran past [`MAX_LINE`] bytes without a terminator.
    #[error("login line over {max} bytes")]
    LineTooLong {
        /// The limit.
        max: usize,
    },
    /// [`MAX_LINES_WITHOUT_LOGIN`] lines arrived and none carried a login.
    #[error("{lines} lines without a login")]
    NoLogin {
        /// Lines read.
        lines: u32,
    },
    /// The login's name is not 1–16 characters of `A–Z a–z 0–9 space - _ .`.
    #[error("avatar name of {chars} characters is not 1-16 of A-Z a-z 0-9 space - _ .")]
    BadName {
        /// Characters in the name offered.
        chars: usize,
    },
    /// The login carried a `password` that is not a JSON string.
    #[error("login password is not a JSON string")]
    BadPassword,
    /// The login carried a `front_end_secret` that is not a JSON string.
    #[error("login front_end_secret is not a JSON string")]
    BadFrontEndSecret,
    /// [`Preamble::feed`] was called again after [`Step::Done`]: the bytes belong to the
    /// Q-Link session.
    #[error("preamble already complete; these bytes belong to the Q-Link session")]
    Finished,
}

/// Who the client says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    /// The avatar name as sent (validated, case kept; matching is case-insensitive
    /// elsewhere).
    pub name: String,
    /// This server's addition to the login line; the real C64 sends none.
    pub password: Option<Sensitive<String>>,
    /// Another addition: the secret a trusted front end proves itself with
    /// (`"front_end_secret"`; `[auth] trusted_secret_file`).
    pub front_end_secret: Option<Sensitive<String>>,
    /// Whether the login line said `"op":"LOGIN"`, as the C64 launcher's does.
    pub op_login: bool,
}

/// Where the parser stands after some bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep feeding.
    NeedMore,
    /// The preamble is over.
    Done {
        /// The login.
        login: Login,
        /// Bytes after the preamble: the start of the Q-Link session (maybe empty).
        leftover: Bytes,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Looking for the login line.
    Login,
    /// Login found; reading the one line thrown away after it.
    Extra,
    /// The extra line ended at a lone terminator at the end of the input: the next byte
    /// may be its pair, which must not reach the Q-Link codec.
    Pair,
    /// Done; further bytes are the caller's.
    Finished,
}

/// The login line's fields we read. Everything else in the object is ignored.
#[derive(Deserialize)]
struct LoginLine {
    name: serde_json::Value,
    #[serde(default)]
    op: Option<serde_json::Value>,
    #[serde(default)]
    password: Option<serde_json::Value>,
    #[serde(default)]
    front_end_secret: Option<serde_json::Value>,
}

/// The incremental preamble parser. One per connection.
#[derive(Debug)]
pub struct Preamble {
    phase: Phase,
    /// The line being read, without its terminator.
    line: Vec<u8>,
    /// The terminator that ended the previous line, while the byte after it is unseen:
    /// if that byte is the other terminator, the two are one (CRLF or LFCR).
    pair_of: Option<u8>,
    lines_without_login: u32,
    login: Option<Login>,
    /// Start of the current silence: connection start or last byte received.
    quiet_since: Instant,
    connect_sent: bool,
}

impl Preamble {
    /// A parser for a connection accepted at `now`.
    pub fn new(now: Instant) -> Preamble {
        Preamble {
            phase: Phase::Login,
            line: Vec::new(),
            pair_of: None,
            lines_without_login: 0,
            login: None,
            quiet_since: now,
            connect_sent: false,
        }
    }

    /// Feeds bytes received at `now`.
    pub fn feed(&mut self, input: &[u8], now: Instant) -> Result<Step, PreambleError> {
        if self.phase == Phase::Finished {
            return Err(PreambleError::Finished);
        }
        if !input.is_empty() {
            self.quiet_since = now;
        }
        for (i, &b) in input.iter().enumerate() {
            if let Some(first) = self.pair_of.take() {
                if (first, b) == (CR, LF) || (first, b) == (LF, CR) {
                    if self.phase == Phase::Pair {
                        return self.finish(&input[i + 1..]);
                    }
                    continue;
                }
            }
            if self.phase == Phase::Pair {
                return self.finish(&input[i..]);
            }
            if b != CR && b != LF {
                if self.line.len() >= MAX_LINE {
                    self.line.zeroize();
                    return Err(PreambleError::LineTooLong { max: MAX_LINE });
                }
                self.line.push(b);
                continue;
            }
            self.pair_of = Some(b);
            match self.phase {
                Phase::Login => {
                    let parsed = parse_login(&self.line);
                    self.line.zeroize();
                    match parsed? {
                        Some(login) => {
                            self.login = Some(login);
                            self.phase = Phase::Extra;
                        }
                        None => {
                            self.lines_without_login += 1;
                            if self.lines_without_login >= MAX_LINES_WITHOUT_LOGIN {
                                return Err(PreambleError::NoLogin {
                                    lines: self.lines_without_login,
                                });
                            }
                        }
                    }
                }
                Phase::Extra => {
                    // Thrown away unread, as bridge_v2 does. A client that ends its login
                    // with a single terminator and sends no second line loses its first
                    // Q-Link frame here, as under bridge_v2 (§1.3.1).
                    self.line.zeroize();
                    self.phase = Phase::Pair;
                }
                Phase::Pair | Phase::Finished => {}
            }
        }
        Ok(Step::NeedMore)
    }

    /// The login, once its line has been read (before the preamble is over).
    pub fn login(&self) -> Option<&Login> {
        self.login.as_ref()
    }

    /// The timer hook: returns [`CONNECT`] once, when [`CONNECT_AFTER`] of silence has
    /// passed with no login line yet. The caller writes it and keeps reading.
    pub fn poll(&mut self, now: Instant) -> Option<&'static [u8]> {
        let due = self.next_deadline()?;
        if now < due {
            return None;
        }
        self.connect_sent = true;
        Some(CONNECT)
    }

    /// When [`Preamble::poll`] may next have something to write.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.connect_sent || self.phase != Phase::Login {
            return None;
        }
        self.quiet_since.checked_add(CONNECT_AFTER)
    }

    fn finish(&mut self, rest: &[u8]) -> Result<Step, PreambleError> {
        self.phase = Phase::Finished;
        match self.login.take() {
            Some(login) => Ok(Step::Done {
                login,
                leftover: Bytes::copy_from_slice(rest),
            }),
            // Unreachable by construction (Pair follows a login), but not worth a panic.
            None => Err(PreambleError::NoLogin {
                lines: self.lines_without_login,
            }),
        }
    }
}

/// Reads one line as a login, if it is one.
///
/// bridge_v2 takes the first line matching `"name":\s*"([^"]*)"`, whatever else it holds.
/// We take the first line that is a JSON object with a string `name`, unless it has an `op`
/// other than `LOGIN`. So the vectors' `{"name": "chip"}` without an op still logs in (as
/// under bridge_v2's Habilink handler), while a line that is not JSON, or is some other
/// request that happens to carry a name, does not. JSON escapes in the name are decoded.
fn parse_login(line: &[u8]) -> Result<Option<Login>, PreambleError> {
    let Ok(fields) = serde_json::from_slice::<LoginLine>(line) else {
        return Ok(None);
    };
    let serde_json::Value::String(name) = fields.name else {
        return Ok(None);
    };
    let op_login = match fields.op {
        None => false,
        Some(serde_json::Value::String(op)) if op == "LOGIN" => true,
        Some(_) => return Ok(None),
    };
    let password = match fields.password {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(password)) => Some(Sensitive::new(password)),
        Some(_) => return Err(PreambleError::BadPassword),
    };
    let front_end_secret = match fields.front_end_secret {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(secret)) => Some(Sensitive::new(secret)),
        Some(_) => return Err(PreambleError::BadFrontEndSecret),
    };
    check_name(&name)?;
    Ok(Some(Login {
        name,
        password,
        front_end_secret,
        op_login,
    }))
}

/// ESPMAIL.md §1: 1–16 characters from `A–Z a–z 0–9 space - _ .`.
pub fn check_name(name: &str) -> Result<(), PreambleError> {
    let chars = name.chars().count();
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.');
    if (1..=MAX_NAME_CHARS).contains(&chars) && name.chars().all(legal) {
        Ok(())
    } else {
        Err(PreambleError::BadName { chars })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: &[u8] = br#"{"to":"bridge","op":"LOGIN","name":"Bob","password":"correct horse"}"#;

    fn done(step: Step) -> (Login, Bytes) {
        match step {
            Step::Done { login, leftover } => (login, leftover),
            Step::NeedMore => panic!("preamble not done"),
        }
    }

    fn with(line: &[u8], tail: &[u8]) -> Vec<u8> {
        [line, tail].concat()
    }

    #[test]
    fn password_is_read_and_never_printed() {
        let now = Instant::now();
        let mut p = Preamble::new(now);
        let (login, rest) = done(p.feed(&with(LOGIN, b"\r\rZ"), now).unwrap());
        assert_eq!(login.name, "Bob");
        assert!(login.op_login);
        let password = login.password.clone().unwrap();
        assert_eq!(password.expose(), "correct horse");
        let shown = format!("{login:?} {password}");
        assert!(!shown.contains("correct"), "{shown}");
        assert_eq!(&rest[..], b"Z");
    }

    #[test]
    fn byte_at_a_time_matches_all_at_once() {
        for tail in [
            &b"\r\rZ\x01"[..],
            b"\n\nZ\x01",
            b"\r\n\n\rZ\x01",
            b"\rx\r\nZ\x01",
        ] {
            let input = with(LOGIN, tail);
            let now = Instant::now();
            let whole = done(Preamble::new(now).feed(&input, now).unwrap());
            let mut p = Preamble::new(now);
            let mut got = None;
            for (i, b) in input.iter().enumerate() {
                if let Step::Done { login, leftover } = p.feed(&[*b], now).unwrap() {
                    let rest = [&leftover[..], &input[i + 1..]].concat();
                    got = Some((login, Bytes::from(rest)));
                    break;
                }
            }
            assert_eq!(got, Some(whole.clone()), "{tail:?}");
            assert_eq!(&whole.1[..], b"Z\x01", "{tail:?}");
        }
    }

    #[test]
    fn waits_to_see_whether_a_lone_terminator_has_a_pair() {
        let now = Instant::now();
        let mut p = Preamble::new(now);
        assert_eq!(p.feed(&with(LOGIN, b"\r\r"), now), Ok(Step::NeedMore));
        assert_eq!(p.login().map(|l| l.name.as_str()), Some("Bob"));
        // The LF pairs with the CR that ended the extra line: it is not Q-Link data.
        let (_, rest) = done(p.feed(b"\nZ", now).unwrap());
        assert_eq!(&rest[..], b"Z");
        assert_eq!(p.feed(b"Z", now), Err(PreambleError::Finished));
    }

    #[test]
    fn line_limit_is_512_bytes() {
        let now = Instant::now();
        let mut fits = vec![b'x'; MAX_LINE];
        fits.push(b'\n');
        assert_eq!(Preamble::new(now).feed(&fits, now), Ok(Step::NeedMore));
        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(
            Preamble::new(now).feed(&long, now),
            Err(PreambleError::LineTooLong { max: MAX_LINE })
        );
    }

    #[test]
    fn gives_up_after_64_lines_without_login() {
        let now = Instant::now();
        let mut p = Preamble::new(now);
        assert_eq!(p.feed(&[b'\n'; 63], now), Ok(Step::NeedMore));
        assert_eq!(
            p.feed(b"{\"op\":\"SPEAK\",\"name\":\"x\"}\n", now),
            Err(PreambleError::NoLogin { lines: 64 })
        );
        // A CRLF pair is one terminator, so 63 pairs are 63 lines.
        let mut p = Preamble::new(now);
        assert_eq!(p.feed(&b"\r\n".repeat(63), now), Ok(Step::NeedMore));
        let (login, _) = done(p.feed(&with(LOGIN, b"\n\nZ"), now).unwrap());
        assert_eq!(login.name, "Bob");
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "seventeen chars!!", "a\"b", "tab\there", "ümlaut"] {
            let line = serde_json::json!({"op": "LOGIN", "name": bad}).to_string();
            let now = Instant::now();
            let err = Preamble::new(now).feed(&with(line.as_bytes(), b"\r"), now);
            assert!(matches!(err, Err(PreambleError::BadName { .. })), "{bad}");
        }
        for good in ["a", "Randy", "sixteen_chars-.1", "Mr. Bob"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn non_string_password_is_refused_and_other_ops_skipped() {
        let now = Instant::now();
        let err = Preamble::new(now).feed(b"{\"name\":\"bob\",\"password\":5}\n", now);
        assert_eq!(err, Err(PreambleError::BadPassword));
        let mut p = Preamble::new(now);
        let input = b"{\"op\":\"SPEAK\",\"name\":\"eve\"}\nnot json \"name\":\"mal\"\n{\"name\":\"bob\"}\n\nZ";
        let (login, rest) = done(p.feed(input, now).unwrap());
        assert_eq!((login.name.as_str(), login.op_login), ("bob", false));
        assert_eq!(&rest[..], b"Z");
    }

    #[test]
    fn connect_fallback_once_after_two_seconds_of_silence() {
        let t0 = Instant::now();
        let mut p = Preamble::new(t0);
        assert_eq!(p.poll(t0 + Duration::from_millis(1999)), None);
        // A byte resets the silence.
        assert_eq!(
            p.feed(b"{", t0 + Duration::from_secs(1)),
            Ok(Step::NeedMore)
        );
        assert_eq!(p.poll(t0 + Duration::from_millis(2999)), None);
        assert_eq!(p.poll(t0 + Duration::from_secs(3)), Some(CONNECT));
        assert_eq!(p.poll(t0 + Duration::from_secs(60)), None);
        assert_eq!(p.next_deadline(), None);
        assert_eq!(
            CONNECT,
            &[0x0d, 0x0d, 0x43, 0x4f, 0x4e, 0x4e, 0x45, 0x43, 0x54, 0x0d]
        );
        // After the login line, no CONNECT.
        let mut p = Preamble::new(t0);
        assert_eq!(p.feed(&with(LOGIN, b"\n"), t0), Ok(Step::NeedMore));
        assert_eq!(p.poll(t0 + Duration::from_secs(10)), None);
    }

    /// Feeds `input` in chunks cut at `cuts`; returns the outcome and the whole leftover
    /// (what the parser handed back plus the bytes after the chunk that finished it).
    fn feed_chunked(input: &[u8], cuts: &[usize]) -> (Result<Step, PreambleError>, usize) {
        let now = Instant::now();
        let mut p = Preamble::new(now);
        let mut at = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.push(input.len());
        bounds.sort_unstable();
        for end in bounds {
            let r = p.feed(&input[at..end], now);
            assert!(p.line.len() <= MAX_LINE);
            match r {
                Ok(Step::Done { login, leftover }) => {
                    let rest = [&leftover[..], &input[end..]].concat();
                    return (
                        Ok(Step::Done {
                            login,
                            leftover: rest.into(),
                        }),
                        p.lines_without_login as usize,
                    );
                }
                Err(e) => return (Err(e), p.lines_without_login as usize),
                Ok(Step::NeedMore) => at = end,
            }
        }
        (Ok(Step::NeedMore), p.lines_without_login as usize)
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_chunking_does_not_matter(
            input in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::prelude::any::<u8>(),
                    proptest::prelude::Just(b'\r'),
                    proptest::prelude::Just(b'\n'),
                ],
                0..1500,
            ),
            login_first in proptest::prelude::any::<bool>(),
            cuts in proptest::collection::vec(proptest::prelude::any::<usize>(), 0..8),
        ) {
            let input = if login_first { [LOGIN, b"\r", &input].concat() } else { input };
            let (whole, lines) = feed_chunked(&input, &[]);
            proptest::prop_assert!(lines <= MAX_LINES_WITHOUT_LOGIN as usize);
            let (chunked, _) = feed_chunked(&input, &cuts);
            proptest::prop_assert_eq!(&whole, &chunked);
            if let Ok(Step::Done { leftover, .. }) = &whole {
                proptest::prop_assert!(input.ends_with(leftover));
            }
            if login_first {
                // The login line always parses; only the extra line can still fail.
                let ok = matches!(whole, Ok(_) | Err(PreambleError::LineTooLong { .. }));
                proptest::prop_assert!(ok, "{:?}", whole);
            }
        }
    }
}
