//! The one place that decides how anything sensitive (message text, prompt replies,
//! passwords, login lines, key material, raw packet bytes) appears in logs
//! (DESIGN.md, promise 5).
//!
//! Sensitive values travel in [`Sensitive`], whose `Debug` and `Display` print only a
//! length. The content leaves only through [`Sensitive::expose`]: there is no `Deref`, no
//! `Serialize`, no `AsRef`; and it is wiped from memory when the value is dropped
//! ([`Wipe`]).
//!
//! Debug logs stay useful through keyed [`Fingerprint`]s: a short HMAC under a key drawn
//! at random **for each session** ([`Fingerprinter::random`], one per connection). The
//! same bytes give the same fingerprint within one session, so an admin can follow one
//! player's text through it; the same bytes in another session give another fingerprint,
//! so nobody can confirm a guess by sending it from a session of their own and comparing.
//! Prompt answers and passwords get no fingerprint at all: the caller passes no
//! fingerprinter for them, and the summaries then show a length only.
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

use bytes::Bytes;
use zeroize::Zeroize;

/// A value that must never reach a log as it is, wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive<T: Wipe>(T);

impl<T: Wipe> Sensitive<T> {
    /// Wraps a value.
    pub fn new(value: T) -> Self {
        Sensitive(value)
    }

    /// The content, for the code that must act on it (compare, encrypt, send to the
    /// client). Never pass the result to a log macro.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// Unwraps the value, for the code that must own it (and wipe it, or hand it to a
    /// type that does).
    pub fn into_exposed(mut self) -> T {
        std::mem::take(&mut self.0)
    }
}

impl<T: Wipe + AsRef<[u8]>> Sensitive<T> {
    /// Length in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.as_ref().len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_empty()
    }
}

impl<T: Wipe> Drop for Sensitive<T> {
    fn drop(&mut self) {
        self.0.wipe();
    }
}

impl<T: Wipe + AsRef<[u8]>> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A length only: a fingerprint here would be keyed for the whole process, and so
        // comparable across sessions (see the module doc).
        write!(f, "<redacted len={}>", self.len())
    }
}

impl<T: Wipe + AsRef<[u8]>> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl<T: Wipe> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Sensitive(value)
    }
}

/// What [`Sensitive`] can hold: a value that can overwrite its own bytes before they are
/// freed (`zeroize` does the writing, so the compiler cannot drop it as a dead store).
///
/// A local trait rather than `zeroize::Zeroize` itself, because [`Bytes`] cannot be
/// `Zeroize`: its memory may be shared with other handles. A `Bytes` is wiped when this
/// handle is the only one left; a shared one is left to its other holders (see
/// [`Wipe for Bytes`](#impl-Wipe-for-Bytes)).
pub trait Wipe: Default {
    /// Overwrites the bytes this value owns with zeros.
    fn wipe(&mut self);
}

impl Wipe for Vec<u8> {
    fn wipe(&mut self) {
        self.zeroize();
    }
}

impl Wipe for String {
    fn wipe(&mut self) {
        self.zeroize();
    }
}

impl Wipe for Bytes {
    /// Wipes the bytes when this is their only handle (a buffer the server built and
    /// owns alone). A `Bytes` that shares its memory (a slice of the socket's read
    /// buffer, a packet also held by the link's resend window) is left as it is: the
    /// other handle still needs the bytes, and the memory goes with the last of them.
    fn wipe(&mut self) {
        let taken = std::mem::take(self);
        if let Ok(mut unique) = taken.try_into_mut() {
            unique[..].zeroize();
        }
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

/// Computes fingerprints under one key. Each session makes its own
/// ([`Fingerprinter::random`]), so fingerprints never compare across sessions; there is
/// no process-wide one.
pub struct Fingerprinter {
    /// `None` when no key could be had: every fingerprint is then `00000000`, which tells
    /// an admin nothing but, unlike a guessable fallback key, cannot reveal short texts.
    /// The raw key, not an openssl key object: every session holds one, and an HMAC
    /// `PKey` costs over a kilobyte of heap each, while fingerprints are computed only
    /// when debug logging asks for them.
    key: Option<zeroize::Zeroizing<Vec<u8>>>,
}

impl Fingerprinter {
    /// A fingerprinter under a fresh random key (see the `key` field for what happens if
    /// the system's random source fails; it does not on Linux).
    pub fn random() -> Fingerprinter {
        let mut key = zeroize::Zeroizing::new(vec![0u8; 32]);
        match openssl::rand::rand_bytes(&mut key) {
            Ok(()) => Fingerprinter { key: Some(key) },
            Err(_) => Fingerprinter { key: None },
        }
    }

    /// A fingerprinter under a given key (HMAC takes a key of any length).
    pub fn with_key(key: &[u8]) -> Fingerprinter {
        Fingerprinter {
            key: Some(zeroize::Zeroizing::new(key.to_vec())),
        }
    }

    /// The fingerprint of `data` (`00000000` if there is no key or the HMAC fails).
    pub fn fingerprint(&self, data: &[u8]) -> Fingerprint {
        let mut out = [0u8; 4];
        let mac = self
            .key
            .as_ref()
            .and_then(|key| {
                let key = PKey::hmac(key).ok()?;
                let mut s = Signer::new(MessageDigest::sha256(), &key).ok()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_show_only_the_length() {
        let secret = Sensitive::new(b"meet me by the fountain".to_vec());
        for shown in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{:#?}", Some(&secret)),
        ] {
            assert!(shown.contains("<redacted len=23>"), "{shown}");
            assert!(!shown.contains("fountain"), "{shown}");
            assert!(!shown.contains("fp="), "no fingerprint: {shown}");
        }
    }

    #[test]
    fn the_content_survives_into_exposed_and_a_shared_buffer_is_left_to_its_holders() {
        let owned = Sensitive::new("sesame".to_string());
        assert_eq!(owned.into_exposed(), "sesame");

        // A packet also held elsewhere (the link's window, the read buffer): wiping this
        // handle must not change what the other one reads.
        let shared = Bytes::from(b"meet me".to_vec());
        let other = shared.clone();
        drop(Sensitive::new(shared));
        assert_eq!(&other[..], b"meet me");

        let mut text = b"meet me".to_vec();
        text.wipe();
        assert!(text.is_empty());
        let mut alone = Bytes::from(b"meet me".to_vec());
        alone.wipe();
        assert!(alone.is_empty());
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
