//! The one place that decides how anything sensitive (message text, prompt replies,
//! passwords, login lines, key material, raw packet bytes) appears in logs
//! (DESIGN.md, promise 5).
//!
//! Sensitive values travel in [`Sensitive`], whose `Debug` and `Display` print only a
//! length and a keyed [`Fingerprint`]: a short HMAC under a key drawn at random when the
//! process starts. The same bytes give the same fingerprint within one run, so an admin
//! can correlate log lines, but a fingerprint cannot be reversed, and cannot be matched
//! against another run's. The content leaves only through [`Sensitive::expose`]: there is
//! no `Deref`, no `Serialize`, no `AsRef`.
//!
//! Beside the types, the module sets up logging itself:
//!
//! - [`layer`]: the subscriber, with one reloadable top-level filter ([`init`]);
//! - [`control`]: [`LogControl`], the one handle that switches debug logging at runtime
//!   and tells the world when it goes on ([`DEBUG_NOTICE`]);
//! - [`packet()`]/[`habitat()`]: packets as log values, by structure and fingerprint.
//!
//! May touch: openssl (HMAC, random bytes), the tracing subscriber, stderr and the log
//! file. Nothing else.

use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

pub mod control;
pub mod layer;
mod packet;

pub use control::{check_filter, reload_on_sighup, LogControl, LogStatus, DEBUG_NOTICE};
pub use layer::{
    dispatch_with_writer, init, init_with_writer, leak_forms, Capture, LogFile, LogOptions,
};
pub use packet::{habitat, packet, Dir, HabitatSummary, PacketSummary};

/// Why logging could not be set up or switched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A log level or filter that cannot be used.
    #[error(
        "log filter \"{directive}\" is not valid: {reason} (use error, warn, info, debug, \
         trace, or directives such as \"info,espmail::store=debug\")"
    )]
    BadFilter {
        /// The filter as given.
        directive: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The log file could not be opened.
    #[error("cannot open log file {}: {source}", path.display())]
    LogFile {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// Logging was already set up in this process.
    #[error("logging is already set up in this process: {0}")]
    AlreadyInitialized(String),
    /// The subscriber the filter belonged to is gone.
    #[error("cannot change the log filter: {0}")]
    Reload(String),
}

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// A value that must never reach a log as it is.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Sensitive(value)
    }

    /// The content, for the code that must act on it (compare, encrypt, send to the
    /// client). Never pass the result to a log macro.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value, for the code that must own it.
    pub fn into_exposed(self) -> T {
        self.0
    }
}

impl<T: AsRef<[u8]>> Sensitive<T> {
    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.as_ref().len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_empty()
    }

    /// The keyed fingerprint under this process's key (safe to log).
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprinter::process().fingerprint(self.0.as_ref())
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted len={} fp={}>", self.len(), self.fingerprint())
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Sensitive(value)
    }
}

/// The first four bytes of an HMAC-SHA256, shown as 8 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 4]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Computes fingerprints under one key. The process has one ([`Fingerprinter::process`]);
/// tests make their own to show that keys matter.
pub struct Fingerprinter {
    /// `None` when no key could be had: every fingerprint is then `00000000`, which tells
    /// an admin nothing but, unlike a guessable fallback key, cannot reveal short texts.
    key: Option<PKey<openssl::pkey::Private>>,
}

impl Fingerprinter {
    /// A fingerprinter under a fresh random key (see the `key` field for what happens if
    /// the system's random source fails; it does not on Linux).
    pub fn random() -> Fingerprinter {
        let mut key = [0u8; 32];
        let fingerprinter = match openssl::rand::rand_bytes(&mut key) {
            Ok(()) => Fingerprinter::with_key(&key),
            Err(_) => Fingerprinter { key: None },
        };
        key.fill(0);
        fingerprinter
    }

    /// A fingerprinter under a given key.
    pub fn with_key(key: &[u8]) -> Fingerprinter {
        // openssl accepts an HMAC key of any length; a refusal leaves fingerprints blank.
        Fingerprinter {
            key: PKey::hmac(key).ok(),
        }
    }

    /// The fingerprinter of this process, with its key drawn at first use.
    pub fn process() -> &'static Fingerprinter {
        static PROCESS: OnceLock<Fingerprinter> = OnceLock::new();
        PROCESS.get_or_init(Fingerprinter::random)
    }

    /// The fingerprint of `data` (`00000000` if there is no key or the HMAC fails).
    pub fn fingerprint(&self, data: &[u8]) -> Fingerprint {
        let mut out = [0u8; 4];
        let mac = self
            .key
            .as_ref()
            .and_then(|key| {
                let mut s = Signer::new(MessageDigest::sha256(), key).ok()?;
                s.update(data).ok()?;
                s.sign_to_vec().ok()
            })
            .unwrap_or_default();
        for (o, m) in out.iter_mut().zip(mac) {
            *o = m;
        }
        Fingerprint(out)
    }
}

/// Fingerprint of arbitrary bytes under the process key, for values that are not held in
/// a [`Sensitive`] (e.g. a raw packet about to be logged by its structure).
pub fn fingerprint(data: &[u8]) -> Fingerprint {
    Fingerprinter::process().fingerprint(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_show_only_length_and_fingerprint() {
        let secret = Sensitive::new(b"meet me by the fountain".to_vec());
        for shown in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{:#?}", Some(&secret)),
        ] {
            assert!(!shown.contains("fountain"), "{shown}");
            assert!(shown.contains("len=23"), "{shown}");
            assert!(shown.contains(&secret.fingerprint().to_string()), "{shown}");
        }
    }

    #[test]
    fn without_a_key_fingerprints_are_blank_never_guessable() {
        let blank = Fingerprinter { key: None };
        assert_eq!(blank.fingerprint(b"hello").to_string(), "00000000");
        assert_eq!(blank.fingerprint(b"other").to_string(), "00000000");
    }

    #[test]
    fn fingerprint_is_stable_under_one_key_and_differs_across_keys() {
        let a = Fingerprinter::with_key(b"key one");
        let b = Fingerprinter::with_key(b"key two");
        assert_eq!(a.fingerprint(b"hello"), a.fingerprint(b"hello"));
        assert_ne!(a.fingerprint(b"hello"), a.fingerprint(b"hellp"));
        assert_ne!(a.fingerprint(b"hello"), b.fingerprint(b"hello"));
        assert_eq!(a.fingerprint(b"hello").to_string().len(), 8);
    }
}
