//! The bottom layer for who a player is: avatar names and passwords, with the rules both
//! the world and the vault apply to them.
//!
//! - [`AvatarName`]: a legal name (ESPMAIL.md §1: 1–[`NAME_MAX`] characters of
//!   `A–Z a–z 0–9 space - _ .`), shown as first typed, compared by its [`normalise`]d key.
//!   The vault's blind indexes (mail and accounts) are computed from that same key, so
//!   there is exactly one normalisation in the crate.
//! - [`Password`]: what a player or operator typed, zeroed on drop and never printed; the
//!   rule for a new one ([`check_new_password`], [`MIN_PASSWORD_LEN`],
//!   [`MAX_PASSWORD_LEN`]); [`ct_eq`], the one constant-time comparison of secrets.
//! - [`log_name`]: how a name from the network may appear in a log.
//!
//! May touch: memory only; openssl for the constant-time comparison, and
//! [`crate::log_redact::Sensitive`] (beside every layer) for conversions. Imports nothing
//! above it.

use std::fmt;

use zeroize::Zeroizing;

use crate::log_redact::Sensitive;

/// Longest avatar name, in characters.
pub const NAME_MAX: usize = 16;
/// Shortest password accepted for a new avatar by default (`[auth] min_password_len`), in
/// characters.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longest password accepted (longer answers are refused, never truncated).
pub const MAX_PASSWORD_LEN: usize = 256;

/// The single normalisation used for every name comparison, accounts and mail alike: the
/// vault's blind indexes are computed from it, so a second definition could lose mail.
///
/// It trims and lowercases. Legal names are ASCII, where that is plain ASCII case folding;
/// for other strings Unicode lowercasing can turn a non-ASCII character into an ASCII one
/// (U+212A KELVIN SIGN → `k`), so nothing is looked up by `normalise` of an unchecked
/// string: lookups use the key of a parsed [`AvatarName`] (see [`name_key`]).
pub fn normalise(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Why a name is not a legal avatar name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// Nothing left after trimming.
    #[error("an avatar name needs at least one character")]
    Empty,
    /// Over [`NAME_MAX`] characters.
    #[error("an avatar name has at most {max} characters, this one has {len}")]
    TooLong {
        /// The limit.
        max: usize,
        /// The length given.
        len: usize,
    },
    /// A character outside `A-Z a-z 0-9 space - _ .`.
    #[error("an avatar name may use only A-Z, a-z, 0-9, space, '-', '_' and '.'")]
    BadCharacter,
}

/// A legal avatar name: shown as given (trimmed), compared by its normalised key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AvatarName {
    display: String,
    key: String,
}

impl AvatarName {
    /// Checks the name rules of ESPMAIL.md §1 on the trimmed input.
    pub fn parse(input: &str) -> Result<AvatarName, NameError> {
        let display = input.trim();
        let len = display.chars().count();
        if len == 0 {
            return Err(NameError::Empty);
        }
        if len > NAME_MAX {
            return Err(NameError::TooLong { max: NAME_MAX, len });
        }
        if !display
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.'))
        {
            return Err(NameError::BadCharacter);
        }
        Ok(AvatarName {
            display: display.to_string(),
            key: normalise(display),
        })
    }

    /// The name as the player typed it (or as first registered, once read back).
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The normalised name used for lookups.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Debug for AvatarName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names may be logged (ESPMAIL.md §5 "logs name avatars").
        write!(f, "{:?}", self.display)
    }
}

impl fmt::Display for AvatarName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

/// The lookup key of a name from the network: its normalised form when it is a legal
/// avatar name, else `None` (it can never match an avatar).
pub fn name_key(name: &str) -> Option<String> {
    AvatarName::parse(name).ok().map(|n| n.key)
}

/// How a name from the network appears in a log: the normalised name when it is legal,
/// else only its length (it could hold anything, newlines included).
pub fn log_name(name: &str) -> String {
    match AvatarName::parse(name) {
        Ok(n) => n.key,
        Err(_) => format!("<illegal name len={}>", name.len()),
    }
}

/// A password or typed password answer. Zeroed on drop; never printed.
///
/// One rule for every source (login line, in-world prompt, `espmail account` on a
/// terminal): the password is the bytes as typed, minus any trailing CR/LF (a line
/// terminator, which no client can type into a password). Nothing else is trimmed: leading
/// and trailing spaces are part of the password, so the same typed password gives the same
/// bytes whichever way it arrives.
#[derive(Clone)]
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Wraps raw bytes (a prompt answer or the login line's field), dropping only a
    /// trailing line terminator (any run of CR and LF at the end).
    pub fn new(bytes: Vec<u8>) -> Password {
        let mut bytes = Zeroizing::new(bytes);
        let keep = bytes
            .iter()
            .rposition(|b| !matches!(b, b'\r' | b'\n'))
            .map_or(0, |i| i + 1);
        // Only terminator bytes are dropped, and Zeroizing clears the whole capacity anyway.
        bytes.truncate(keep);
        Password(bytes)
    }

    /// The bytes, for hashing only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in characters (UTF-8 characters when the bytes are UTF-8, else bytes).
    pub fn char_len(&self) -> usize {
        std::str::from_utf8(&self.0).map_or(self.0.len(), |s| s.chars().count())
    }

    /// Whether two typed passwords are the same (a new password typed twice), compared in
    /// constant time.
    pub fn same_as(&self, other: &Password) -> bool {
        ct_eq(self.expose(), other.expose())
    }
}

/// Compared in constant time, like [`Password::same_as`].
impl PartialEq for Password {
    fn eq(&self, other: &Password) -> bool {
        self.same_as(other)
    }
}

impl Eq for Password {}

impl From<String> for Password {
    fn from(s: String) -> Password {
        Password::new(s.into_bytes())
    }
}

impl From<Sensitive<String>> for Password {
    fn from(s: Sensitive<String>) -> Password {
        Password::from(s.into_exposed())
    }
}

impl From<Sensitive<Vec<u8>>> for Password {
    fn from(s: Sensitive<Vec<u8>>) -> Password {
        Password::new(s.into_exposed())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No fingerprint: equal fingerprints would tell which avatars share a password.
        f.write_str("<password>")
    }
}

/// Why a new password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Under the minimum.
    #[error("a password needs at least {min} characters")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// Over [`MAX_PASSWORD_LEN`].
    #[error("a password has at most {max} characters")]
    TooLong {
        /// The maximum.
        max: usize,
    },
}

/// The rule for a new password, in one place: `espmail account add`/`passwd`, registration
/// at login and the in-world dialogue all ask this. `min_len` is the configured minimum
/// (`[auth] min_password_len`), clamped by [`clamp_min_password_len`]; the maximum is
/// always [`MAX_PASSWORD_LEN`]. Too long is checked first, so an over-long password is
/// never called too short whatever the minimum.
pub fn check_new_password(password: &Password, min_len: usize) -> Result<(), PasswordError> {
    let len = password.char_len();
    if len > MAX_PASSWORD_LEN {
        return Err(PasswordError::TooLong {
            max: MAX_PASSWORD_LEN,
        });
    }
    let min = clamp_min_password_len(min_len);
    if len < min {
        return Err(PasswordError::TooShort { min });
    }
    Ok(())
}

/// A configured minimum made usable: at least 1 (an empty password is no password) and at
/// most [`MAX_PASSWORD_LEN`] (above it nothing could ever be accepted).
pub fn clamp_min_password_len(min: usize) -> usize {
    min.clamp(1, MAX_PASSWORD_LEN)
}

/// Constant-time equality of secrets (passwords, hashes, check values). Only the lengths,
/// which are not secret here, are compared early: `openssl::memcmp::eq` itself panics on
/// different lengths.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && openssl::memcmp::eq(a, b)
}

/// What the unit tests of every layer that applies the password rule share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Password, MAX_PASSWORD_LEN};

    /// A password from a test string.
    pub(crate) fn pw(s: &str) -> Password {
        Password::from(s.to_string())
    }

    /// New passwords and whether the one rule (default minimum) accepts them: the store,
    /// the login and the in-world dialogue must all agree on each.
    pub(crate) fn new_password_cases() -> Vec<(String, bool)> {
        vec![
            ("1234567".into(), false),
            ("12345678".into(), true),
            ("ééééééé".into(), false),
            ("éééééééé".into(), true),
            ("x".repeat(MAX_PASSWORD_LEN), true),
            ("x".repeat(MAX_PASSWORD_LEN + 1), false),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{new_password_cases, pw};
    use super::*;

    #[test]
    fn name_rules() {
        let n = AvatarName::parse("  Bob Smith-2_x. ").unwrap();
        assert_eq!(n.display(), "Bob Smith-2_x.");
        assert_eq!(n.key(), "bob smith-2_x.");
        assert_eq!(AvatarName::parse("   "), Err(NameError::Empty));
        assert_eq!(AvatarName::parse(""), Err(NameError::Empty));
        assert_eq!(
            AvatarName::parse("abcdefghijklmnopq"),
            Err(NameError::TooLong { max: 16, len: 17 })
        );
        assert!(AvatarName::parse("abcdefghijklmnop").is_ok());
        for bad in ["bob!", "bób", "a\tb", "x:y", "\u{0}", "a/b"] {
            assert_eq!(
                AvatarName::parse(bad),
                Err(NameError::BadCharacter),
                "{bad:?}"
            );
        }
        assert_eq!(normalise("  BoB "), "bob");
        assert_eq!(
            AvatarName::parse("BOB").unwrap().key(),
            AvatarName::parse("bob").unwrap().key()
        );
    }

    #[test]
    fn odd_strings_never_yield_a_lookup_key() {
        // KELVIN SIGN lowercases to an ASCII k, but is no legal name: it cannot alias "ken".
        assert_eq!(normalise("\u{212A}en"), "ken");
        assert_eq!(name_key("\u{212A}en"), None);
        assert_eq!(name_key(" Ken "), Some("ken".to_string()));
    }

    #[test]
    fn password_never_prints() {
        let p = pw("correct horse");
        assert_eq!(format!("{p:?}"), "<password>");
        assert_eq!(p.char_len(), 13);
        assert_eq!(Password::new(vec![0xff; 3]).char_len(), 3);
        assert_eq!(pw("ééé").char_len(), 3);
    }

    #[test]
    fn passwords_lose_only_the_line_terminator() {
        for (raw, want) in [
            (&b"secret12"[..], &b"secret12"[..]),
            (b"secret12\n", b"secret12"),
            (b"secret12\r\n", b"secret12"),
            (b"secret12\r\r\n\n", b"secret12"),
            (b"  two words  ", b"  two words  "),
            (b"\tsecret12 \r\n", b"\tsecret12 "),
            (b"\r\nsecret12", b"\r\nsecret12"),
            (b"\r\n", b""),
            (b"", b""),
        ] {
            assert_eq!(Password::new(raw.to_vec()).expose(), want, "{raw:?}");
        }
        let typed = " my pass phrase ";
        let line = Password::from(Sensitive::new(typed.to_string()));
        assert_eq!(line.expose(), typed.as_bytes());
        let bytes = Password::from(Sensitive::new(typed.as_bytes().to_vec()));
        assert!(line.same_as(&bytes));
        assert!(!line.same_as(&pw(typed.trim())));
    }

    #[test]
    fn one_new_password_rule() {
        for (p, ok) in new_password_cases() {
            assert_eq!(
                check_new_password(&pw(&p), MIN_PASSWORD_LEN).is_ok(),
                ok,
                "{p}"
            );
        }
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
        assert!(ct_eq(b"", b""));
    }

    #[test]
    fn the_configured_minimum_is_the_rule() {
        for (min, short, long_enough) in [(4, "abc", "abcd"), (12, "12345678901", "123456789012")] {
            assert_eq!(
                check_new_password(&pw(short), min),
                Err(PasswordError::TooShort { min })
            );
            assert!(check_new_password(&pw(long_enough), min).is_ok());
        }
        // Out-of-range minimums are clamped, so some password is always acceptable.
        assert_eq!(clamp_min_password_len(0), 1);
        assert_eq!(clamp_min_password_len(10_000), MAX_PASSWORD_LEN);
        assert!(check_new_password(&pw(&"x".repeat(MAX_PASSWORD_LEN)), usize::MAX).is_ok());
    }

    #[test]
    fn a_too_long_password_is_never_called_too_short() {
        let long = "x".repeat(MAX_PASSWORD_LEN + 1);
        for min in [1, 8, 256, 1_000] {
            assert_eq!(
                check_new_password(&pw(&long), min),
                Err(PasswordError::TooLong {
                    max: MAX_PASSWORD_LEN
                })
            );
        }
    }

    #[test]
    fn log_name_shows_only_legal_names() {
        assert_eq!(log_name(" Bob "), "bob");
        assert_eq!(log_name("evil\nline"), "<illegal name len=9>");
    }
}
