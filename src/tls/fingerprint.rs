//! SHA-256 certificate fingerprints: computing them, showing them the way
//! `openssl x509 -fingerprint -sha256` does, and parsing the `--pin sha256:HEX` a player
//! types.
//!
//! Pure: no files, no sockets. The parser is strict (exactly one accepted shape, with or
//! without colons) so a pin that was mangled in copying is refused with the reason instead
//! of silently meaning something else; it is fuzzed (`fuzz/fuzz_targets/pin.rs`).

use std::fmt;
use std::str::FromStr;

use openssl::hash::MessageDigest;
use openssl::x509::X509Ref;

/// Bytes in a SHA-256 digest.
pub const FINGERPRINT_LEN: usize = 32;

/// The SHA-256 digest of a certificate's DER bytes: what a player pins.
///
/// Displays as colon-separated uppercase hex pairs (`AB:CD:…`), exactly as
/// `openssl x509 -noout -fingerprint -sha256` prints it after `Fingerprint=`.
/// Not a secret: a certificate is sent to anyone who connects.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; FINGERPRINT_LEN]);

/// Why a pin was refused: what the player typed is never echoed whole, only described.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// The pin does not start with `sha256:`.
    #[error(
        "a pin starts with \"sha256:\" followed by the certificate's SHA-256 fingerprint \
         (64 hex digits, colons allowed)"
    )]
    NoPrefix,
    /// A character that is neither a hex digit nor a colon between pairs.
    #[error("character {position} of the fingerprint is not a hex digit")]
    NotHex {
        /// 1-based position after `sha256:`.
        position: usize,
    },
    /// Colons are used, but not one between every pair of hex digits.
    #[error(
        "colons in a fingerprint go between every pair of hex digits (AB:CD:…), \
         or are left out altogether"
    )]
    MisplacedColon,
    /// Too few or too many hex digits.
    #[error("a SHA-256 fingerprint has 64 hex digits; this one has {digits}")]
    WrongLength {
        /// How many hex digits were given.
        digits: usize,
    },
}

impl Fingerprint {
    /// Wraps digest bytes.
    pub fn from_bytes(bytes: [u8; FINGERPRINT_LEN]) -> Fingerprint {
        Fingerprint(bytes)
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }

    /// The SHA-256 fingerprint of `cert` (of its DER encoding).
    pub fn of(cert: &X509Ref) -> Result<Fingerprint, openssl::error::ErrorStack> {
        let digest = cert.digest(MessageDigest::sha256())?;
        let mut out = [0u8; FINGERPRINT_LEN];
        // A SHA-256 digest is 32 bytes; copy what there is rather than trusting a length.
        for (o, b) in out.iter_mut().zip(digest.iter()) {
            *o = *b;
        }
        Ok(Fingerprint(out))
    }

    /// The pin a player types: `sha256:` and the colon-separated fingerprint.
    pub fn to_pin(&self) -> String {
        format!("sha256:{self}")
    }

    /// Parses a pin: `sha256:` (any case) then 64 hex digits (any case), either all
    /// together or as 32 colon-separated pairs. Surrounding whitespace is ignored (it
    /// comes with copy and paste); nothing else is.
    pub fn parse_pin(pin: &str) -> Result<Fingerprint, PinError> {
        let pin = pin.trim();
        let hex = pin
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("sha256:"))
            .and_then(|_| pin.get(7..))
            .ok_or(PinError::NoPrefix)?;
        Fingerprint::parse_hex(hex)
    }

    /// Parses the fingerprint alone (no `sha256:`), with or without colons.
    pub fn parse_hex(hex: &str) -> Result<Fingerprint, PinError> {
        let bytes = hex.as_bytes();
        let with_colons = bytes.contains(&b':');
        let mut out = [0u8; FINGERPRINT_LEN];
        let mut digits = 0usize;
        for (i, &c) in bytes.iter().enumerate() {
            if c == b':' {
                // In the colon form, every third character (and only those) is a colon.
                if i % 3 != 2 {
                    return Err(PinError::MisplacedColon);
                }
                continue;
            }
            if with_colons && i % 3 == 2 {
                return Err(PinError::MisplacedColon);
            }
            let value = hex_value(c).ok_or(PinError::NotHex { position: i + 1 })?;
            if let Some(byte) = out.get_mut(digits / 2) {
                *byte = (*byte << 4) | value;
            }
            digits += 1;
        }
        if with_colons && bytes.last() == Some(&b':') {
            return Err(PinError::MisplacedColon);
        }
        if digits != 2 * FINGERPRINT_LEN {
            return Err(PinError::WrongLength { digits });
        }
        Ok(Fingerprint(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = PinError;

    /// The `--pin` form, `sha256:HEX`.
    fn from_str(s: &str) -> Result<Fingerprint, PinError> {
        Fingerprint::parse_pin(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const COLONS: &str = "1F:4A:00:9B:C2:D3:E4:F5:06:17:28:39:4A:5B:6C:7D:\
                          8E:9F:A0:B1:C2:D3:E4:F5:06:17:28:39:4A:5B:6C:FF";

    fn sample() -> Fingerprint {
        Fingerprint::parse_hex(&COLONS.replace(' ', "")).unwrap()
    }

    #[test]
    fn shows_as_openssl_does() {
        let fp = sample();
        assert_eq!(fp.to_string(), COLONS.replace(' ', ""));
        assert_eq!(fp.as_bytes()[0], 0x1F);
        assert_eq!(fp.as_bytes()[31], 0xFF);
        assert_eq!(fp.to_pin(), format!("sha256:{}", COLONS.replace(' ', "")));
    }

    #[test]
    fn pins_parse_with_or_without_colons_in_any_case() {
        let colons = COLONS.replace(' ', "");
        let bare = colons.replace(':', "");
        for pin in [
            format!("sha256:{colons}"),
            format!("sha256:{bare}"),
            format!("SHA256:{}", bare.to_lowercase()),
            format!("Sha256:{}", colons.to_lowercase()),
            format!("  sha256:{colons}\n"),
        ] {
            assert_eq!(Fingerprint::parse_pin(&pin), Ok(sample()), "{pin}");
            assert_eq!(pin.parse::<Fingerprint>(), Ok(sample()), "{pin}");
        }
    }

    #[test]
    fn malformed_pins_are_refused_with_the_reason() {
        let colons = COLONS.replace(' ', "");
        let bare = colons.replace(':', "");
        let cases: Vec<(String, PinError)> = vec![
            (colons.clone(), PinError::NoPrefix),
            (format!("sha1:{bare}"), PinError::NoPrefix),
            (format!("sha256 {bare}"), PinError::NoPrefix),
            (String::new(), PinError::NoPrefix),
            ("sha256".to_owned(), PinError::NoPrefix),
            ("sha256:".to_owned(), PinError::WrongLength { digits: 0 }),
            (
                format!("sha256:{}", &bare[..62]),
                PinError::WrongLength { digits: 62 },
            ),
            (
                format!("sha256:{bare}00"),
                PinError::WrongLength { digits: 66 },
            ),
            (
                format!("sha256:{}", &colons[..colons.len() - 3]),
                PinError::WrongLength { digits: 62 },
            ),
            (format!("sha256:{colons}:"), PinError::MisplacedColon),
            (format!("sha256::{colons}"), PinError::MisplacedColon),
            (
                format!("sha256:{}", colons.replacen(':', "::", 1)),
                PinError::MisplacedColon,
            ),
            (
                format!("sha256:1F4A:{}", &colons[6..]),
                PinError::MisplacedColon,
            ),
            (
                format!("sha256:{}", bare.replacen('F', "G", 1)),
                PinError::NotHex { position: 2 },
            ),
            (
                format!("sha256:{}", bare.replacen('4', " ", 1)),
                PinError::NotHex { position: 3 },
            ),
            (
                format!("sha256:{}é", &bare[..63]),
                PinError::NotHex { position: 64 },
            ),
        ];
        for (pin, want) in cases {
            assert_eq!(Fingerprint::parse_pin(&pin), Err(want.clone()), "{pin:?}");
            // Each reason reads as a sentence a player can act on.
            assert!(want.to_string().len() > 20);
        }
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(bytes in any::<[u8; 32]>()) {
            let fp = Fingerprint::from_bytes(bytes);
            prop_assert_eq!(Fingerprint::parse_pin(&fp.to_pin()), Ok(fp));
            let bare = format!("sha256:{}", fp.to_string().replace(':', "").to_lowercase());
            prop_assert_eq!(Fingerprint::parse_pin(&bare), Ok(fp));
        }

        #[test]
        fn parsing_anything_never_panics(s in "\\PC{0,120}") {
            let _ = Fingerprint::parse_pin(&s);
            let _ = Fingerprint::parse_hex(&s);
        }
    }
}
