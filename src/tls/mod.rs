//! TLS for clients from the 1990s: the old clients speak plain TCP and cannot change, so
//! the server offers TLS and the player's machine runs `espmail tunnel` (TLS to the server,
//! plain TCP to the client on loopback). This module holds both ends, through openssl
//! (`tokio-openssl` for the async streams):
//!
//! - [`fingerprint`]: pure: SHA-256 certificate fingerprints, shown as openssl shows them,
//!   and the strict `sha256:HEX` pin parser.
//! - [`files`]: PEM files: reading a certificate chain, a key or a CA bundle with errors
//!   in words; writing a new pair (key 0600, nothing ever overwritten).
//! - [`selfsigned`]: a self-signed EC P-256 certificate for a host name, and its
//!   fingerprint (for `espmail init --tls HOSTNAME`).
//! - [`server`]: the acceptor built from a cert + key (TLS 1.2 minimum, modern ciphers,
//!   no renegotiation, no compression), a holder that reloads it and keeps the old one
//!   when the new pair is bad, and the bounded handshake `accept`.
//! - [`client`]: [`Verify`] (system CAs + host name, a CA file + host name, or a pinned
//!   fingerprint) and [`Connector::connect`], which returns a stream only once the
//!   handshake and the verification have succeeded.
//!
//! What this module may touch: the PEM files it is given and the sockets it is handed
//! or asked to open. It knows nothing of the game protocol, the world or the store, and
//! imports nothing else of the crate.

pub mod client;
pub mod files;
pub mod fingerprint;
pub mod selfsigned;
pub mod server;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use client::{connect, Connector, Verify, DEFAULT_CONNECT_TIMEOUT};
pub use files::{read_certificates, read_private_key, write_new_pair, CertPaths};
pub use fingerprint::{Fingerprint, PinError};
pub use selfsigned::{generate_self_signed, generate_self_signed_between, SelfSigned};
pub use server::{accept, load_acceptor, AcceptError, LoadedCert, ReloadableAcceptor};

/// TLS 1.2 cipher suites offered and accepted: forward-secret ECDHE with AEAD ciphers
/// only (Mozilla's "intermediate" list without the finite-field DHE suites). TLS 1.3
/// suites are all AEAD and keep openssl's defaults.
pub const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
     ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
     ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// Which kind of PEM file an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemKind {
    /// The server's certificate (chain).
    Certificate,
    /// The server's private key.
    Key,
    /// A CA bundle given to the tunnel with `--ca`.
    CaFile,
}

impl fmt::Display for PemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PemKind::Certificate => "certificate",
            PemKind::Key => "private key",
            PemKind::CaFile => "CA",
        })
    }
}

/// Why TLS could not be set up, or a server could not be reached and trusted. Every
/// message names the file or the server and what to do; none carries a secret (keys are
/// never shown, and certificates and fingerprints are public).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        /// Which file.
        what: PemKind,
        /// Its path.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The file is not PEM at all (no `-----BEGIN` line), e.g. DER or the wrong file.
    #[error(
        "the {what} file {} is not in PEM format (no \"-----BEGIN\" line); \
         convert a DER file with `openssl x509 -inform der` or `openssl pkey -inform der`",
        path.display()
    )]
    NotPem {
        /// Which file.
        what: PemKind,
        /// Its path.
        path: PathBuf,
    },
    /// The file has PEM blocks, but not the right ones or not valid ones.
    #[error("the {what} file {} could not be read as PEM: {detail}", path.display())]
    BadPem {
        /// Which file.
        what: PemKind,
        /// Its path.
        path: PathBuf,
        /// What openssl found wrong.
        detail: String,
    },
    /// The key is protected by a passphrase, which a server cannot type at startup.
    #[error(
        "the private key file {} is encrypted with a passphrase; espmail needs it \
         unencrypted (keep the file mode 0600): `openssl pkey -in KEY -out NEW_KEY`",
        path.display()
    )]
    EncryptedKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key is not the one the certificate was issued for.
    #[error(
        "the private key {} does not belong to the certificate {} (their public keys \
         differ); give the key the certificate was made for",
        key.display(), cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate has expired: every verifying client would refuse it, so it is
    /// refused at load instead of at each player's handshake.
    #[error(
        "the certificate {} expired on {not_after}, and every client would refuse it; \
         renew it, or make a new one (`espmail init --tls HOSTNAME`; players then pin \
         the new fingerprint)",
        path.display()
    )]
    CertExpired {
        /// The certificate file.
        path: PathBuf,
        /// Its notAfter date, as openssl prints it.
        not_after: String,
    },
    /// The certificate's validity starts in the future.
    #[error(
        "the certificate {} is not valid before {not_before}, and every client would \
         refuse it until then; check this machine's clock",
        path.display()
    )]
    CertNotYetValid {
        /// The certificate file.
        path: PathBuf,
        /// Its notBefore date.
        not_before: String,
    },
    /// openssl could not build a context (out of memory, a cipher list it lacks).
    #[error("openssl could not set up TLS: {}", openssl_reason(.0))]
    Setup(#[from] openssl::error::ErrorStack),

    /// The server was not given as HOST:PORT.
    #[error("{server:?} is not a server address: {reason}")]
    BadServer {
        /// What was given.
        server: String,
        /// What is expected.
        reason: &'static str,
    },
    /// The host name did not resolve.
    #[error("cannot find the server {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        source: std::io::Error,
    },
    /// Nothing listens on that port (or a firewall says so).
    #[error("{server} refused the connection (is its TLS listener running on that port?)")]
    Refused {
        /// HOST:PORT.
        server: String,
    },
    /// Another TCP-level failure (unreachable network, reset).
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// HOST:PORT.
        server: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// No connection, or no finished handshake, within the time allowed.
    #[error("{server} did not {stage} within {} s", after.as_secs_f32())]
    Timeout {
        /// HOST:PORT.
        server: String,
        /// "accept the connection" or "finish the TLS handshake".
        stage: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// The pinned fingerprint does not match the certificate the server showed.
    #[error(
        "{server} presented the wrong certificate: expected sha256:{expected}, got \
         sha256:{got} (if the operator says they changed the certificate, pin the new \
         fingerprint they publish)"
    )]
    WrongCertificate {
        /// HOST:PORT.
        server: String,
        /// The pin.
        expected: Fingerprint,
        /// What the server showed.
        got: Fingerprint,
    },
    /// The server's certificate (or one in its chain) has expired.
    #[error("{server}'s certificate {which}expired on {not_after}")]
    Expired {
        /// HOST:PORT.
        server: String,
        /// Empty for the server's own certificate, else which one in the chain.
        which: &'static str,
        /// The notAfter date.
        not_after: String,
    },
    /// The server's certificate (or one in its chain) is not valid yet.
    #[error("{server}'s certificate {which}is not valid before {not_before} (check this machine's clock)")]
    NotYetValid {
        /// HOST:PORT.
        server: String,
        /// Empty for the server's own certificate, else which one in the chain.
        which: &'static str,
        /// The notBefore date.
        not_before: String,
    },
    /// The certificate does not name the host that was asked for.
    #[error("{server}'s certificate is for {names}, not for {host} (wrong host name)")]
    HostMismatch {
        /// HOST:PORT.
        server: String,
        /// The host asked for.
        host: String,
        /// The names and addresses the certificate holds.
        names: String,
    },
    /// The certificate does not lead to a CA that is trusted here.
    #[error(
        "{server}'s certificate is not signed by a CA trusted here ({detail}); for a \
         self-signed server use --pin sha256:… with the fingerprint the operator \
         published, or --ca with its certificate{}", showed(.got)
    )]
    UnknownCa {
        /// HOST:PORT.
        server: String,
        /// openssl's words for it.
        detail: &'static str,
        /// The fingerprint of what the server showed, when it got that far.
        got: Option<Fingerprint>,
    },
    /// Any other reason the certificate was refused.
    #[error("{server}'s certificate was refused: {detail}")]
    CertRefused {
        /// HOST:PORT.
        server: String,
        /// openssl's words for it.
        detail: &'static str,
    },
    /// The handshake failed for a reason other than the certificate.
    #[error("TLS handshake with {server} failed: {detail}")]
    Handshake {
        /// HOST:PORT.
        server: String,
        /// What went wrong.
        detail: String,
    },

    /// `init --tls` was given something that is not a host name or address.
    #[error("{name:?} cannot be a certificate's host name: {reason}")]
    InvalidHostName {
        /// What was given.
        name: String,
        /// What is allowed.
        reason: &'static str,
    },
    /// A certificate or key file is already there.
    #[error(
        "{} already exists; espmail never overwrites a certificate or key (players may \
         have pinned it): move it away first",
        path.display()
    )]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A new certificate or key could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

fn showed(got: &Option<Fingerprint>) -> String {
    got.map_or_else(String::new, |fp| {
        format!(" (the server showed sha256:{fp})")
    })
}

/// openssl's reasons, without its error codes and library names ("error:0A00010B:SSL
/// routines::wrong version number" becomes "wrong version number").
pub(crate) fn openssl_reason(stack: &openssl::error::ErrorStack) -> String {
    let reasons: Vec<String> = stack
        .errors()
        .iter()
        .map(|e| {
            e.reason()
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string())
        })
        .collect();
    if reasons.is_empty() {
        "unknown openssl error".to_owned()
    } else {
        reasons.join("; ")
    }
}

/// The words for a failed handshake: openssl's reasons, the socket's error, or the peer
/// having hung up.
pub(crate) fn ssl_error_reason(e: &openssl::ssl::Error) -> String {
    if let Some(io) = e.io_error() {
        return io.to_string();
    }
    match e.ssl_error() {
        Some(stack) if !stack.errors().is_empty() => openssl_reason(stack),
        _ => "the other side closed the connection".to_owned(),
    }
}
