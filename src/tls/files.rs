//! PEM files on disk: reading a certificate chain, a private key or a CA bundle with errors
//! that name the file and what is wrong with it, and writing a new certificate + key pair
//! (the key mode 0600, neither file ever overwritten).
//!
//! May touch: the files it is given, nothing else. No sockets.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use zeroize::Zeroizing;

use super::{PemKind, TlsError};

/// Where a server's certificate (chain) and private key live, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The certificate, then any intermediate certificates, PEM.
    pub cert: PathBuf,
    /// The private key for the first certificate, PEM, unencrypted.
    pub key: PathBuf,
}

fn read(path: &Path, what: PemKind) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Reads one or more PEM certificates (a server chain, leaf first, or a CA bundle).
pub fn read_certificates(path: &Path, what: PemKind) -> Result<Vec<X509>, TlsError> {
    let bytes = read(path, what)?;
    if !contains(&bytes, b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    let certs = X509::stack_from_pem(&bytes).map_err(|e| TlsError::BadPem {
        what,
        path: path.to_owned(),
        detail: super::openssl_reason(&e),
    })?;
    if certs.is_empty() {
        return Err(TlsError::BadPem {
            what,
            path: path.to_owned(),
            detail: "no \"-----BEGIN CERTIFICATE-----\" block in it".to_owned(),
        });
    }
    Ok(certs)
}

/// Reads an unencrypted PEM private key. The file's bytes are zeroed once parsed.
pub fn read_private_key(path: &Path) -> Result<PKey<Private>, TlsError> {
    let what = PemKind::Key;
    let bytes = Zeroizing::new(read(path, what)?);
    if !contains(&bytes, b"-----BEGIN ") {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    if contains(&bytes, b"ENCRYPTED") {
        return Err(TlsError::EncryptedKey {
            path: path.to_owned(),
        });
    }
    PKey::private_key_from_pem(&bytes).map_err(|e| TlsError::BadPem {
        what,
        path: path.to_owned(),
        detail: super::openssl_reason(&e),
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Writes a new certificate (mode 0644) and private key (mode 0600) as PEM. Refuses, and
/// writes nothing, if either file exists: an existing key may be the only copy of one
/// that players have pinned.
pub fn write_new_pair(paths: &CertPaths, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
    for path in [&paths.key, &paths.cert] {
        if path.symlink_metadata().is_ok() {
            return Err(TlsError::Exists { path: path.clone() });
        }
    }
    // The key first: if anything fails after it, the half-written pair is removed, so a
    // retry starts clean.
    write_new(&paths.key, key_pem, 0o600)?;
    if let Err(e) = write_new(&paths.cert, cert_pem, 0o644) {
        let _ = std::fs::remove_file(&paths.key);
        return Err(e);
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let write_err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    // create_new: the check above is only for a clear message; this is what guarantees
    // that an existing file (or one created meanwhile) is never replaced.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                TlsError::Exists {
                    path: path.to_owned(),
                }
            } else {
                write_err(source)
            }
        })?;
    file.write_all(bytes).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    Ok(())
}
