//! The server's end of TLS: an acceptor built from a certificate + key pair, a holder that
//! swaps in a new pair on reload (SIGHUP) and keeps the old one when the new one is bad,
//! and the handshake with a time limit, so a client that opens TLS and stalls costs its
//! own connection only.
//!
//! May touch: the two PEM files it is given, and the stream it is handed. It never opens
//! or accepts a socket itself (the server's accept loop does, with its permits and
//! per-address limits) and never logs: it returns what happened and the caller decides.

use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ssl::{Ssl, SslAcceptor, SslMethod, SslOptions, SslVersion};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_openssl::SslStream;

use super::files::{read_certificates, read_private_key, CertPaths};
use super::{Fingerprint, PemKind, TlsError, TLS12_CIPHERS};

/// A usable acceptor and what the operator may want to see about it.
pub struct LoadedCert {
    /// The acceptor for new connections.
    pub acceptor: SslAcceptor,
    /// The files it came from.
    pub paths: CertPaths,
    /// The SHA-256 fingerprint of the server's certificate (what players pin).
    pub fingerprint: Fingerprint,
    /// The certificate's notAfter date, as openssl prints it.
    pub not_after: String,
}

impl std::fmt::Debug for LoadedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedCert")
            .field("paths", &self.paths)
            .field("fingerprint", &self.fingerprint)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Builds an acceptor from PEM files: TLS 1.2 at least (1.3 is chosen whenever the client
/// has it: openssl picks the highest version both ends speak), ECDHE + AEAD ciphers only,
/// renegotiation and compression off. Refuses, with the reason in words, a file that
/// cannot be read, is not PEM, a key that does not match the certificate, and a
/// certificate that has expired or is not valid yet (every client would refuse those, so
/// the operator hears about it once, now, instead of from each player).
pub fn load_acceptor(paths: &CertPaths) -> Result<LoadedCert, TlsError> {
    let mut chain = read_certificates(&paths.cert, PemKind::Certificate)?.into_iter();
    let Some(leaf) = chain.next() else {
        return Err(TlsError::BadPem {
            what: PemKind::Certificate,
            path: paths.cert.clone(),
            detail: "no certificate in it".to_owned(),
        });
    };
    let key = read_private_key(&paths.key)?;
    if !leaf.public_key()?.public_eq(&key) {
        return Err(TlsError::KeyMismatch {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
        });
    }
    let now = Asn1Time::days_from_now(0)?;
    if leaf.not_after() < now {
        return Err(TlsError::CertExpired {
            path: paths.cert.clone(),
            not_after: leaf.not_after().to_string(),
        });
    }
    if leaf.not_before() > now {
        return Err(TlsError::CertNotYetValid {
            path: paths.cert.clone(),
            not_before: leaf.not_before().to_string(),
        });
    }

    // Mozilla's intermediate profile is the well-kept baseline; on top of it: no TLS
    // below 1.2 (set as a version floor, not only as options), only the ECDHE suites,
    // and no renegotiation, which the old protocol never needs and which has been a
    // source of attacks.
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_cipher_list(TLS12_CIPHERS)?;
    b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_COMPRESSION);
    b.set_certificate(&leaf)?;
    for extra in chain {
        b.add_extra_chain_cert(extra)?;
    }
    b.set_private_key(&key)?;
    b.check_private_key()?;
    Ok(LoadedCert {
        acceptor: b.build(),
        paths: paths.clone(),
        fingerprint: Fingerprint::of(&leaf)?,
        not_after: leaf.not_after().to_string(),
    })
}

/// The acceptor in force, replaceable while connections are being accepted: a reload
/// affects only handshakes that start after it, and connections already up keep going.
#[derive(Debug)]
pub struct ReloadableAcceptor {
    current: RwLock<Arc<LoadedCert>>,
}

impl ReloadableAcceptor {
    /// Loads the first pair; an error here should stop the server from starting.
    pub fn load(paths: &CertPaths) -> Result<ReloadableAcceptor, TlsError> {
        Ok(ReloadableAcceptor {
            current: RwLock::new(Arc::new(load_acceptor(paths)?)),
        })
    }

    /// Loads `paths` and, only if that succeeds, puts it in force. On error the pair in
    /// force stays, untouched; the error says why the new one was refused.
    pub fn reload(&self, paths: &CertPaths) -> Result<Arc<LoadedCert>, TlsError> {
        let new = Arc::new(load_acceptor(paths)?);
        // A panic while holding the lock cannot leave the Arc half-written, so a
        // poisoned lock still holds a whole acceptor.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = new.clone();
        Ok(new)
    }

    /// The pair in force now.
    pub fn current(&self) -> Arc<LoadedCert> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The TLS handshake on `stream` with the acceptor in force, within `timeout`.
    pub async fn accept<S>(&self, stream: S, timeout: Duration) -> Result<SslStream<S>, AcceptError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let loaded = self.current();
        accept(&loaded.acceptor, stream, timeout).await
    }
}

/// Why a client's handshake did not complete. Costs that connection only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcceptError {
    /// The client did not finish the handshake in time (it stalled, or is not TLS and
    /// waits for the server to speak first).
    #[error("TLS handshake not finished within {} s", after.as_secs_f32())]
    Timeout {
        /// The time allowed.
        after: Duration,
    },
    /// The handshake failed: not TLS, no common version or cipher, or the client hung up.
    #[error("TLS handshake failed: {detail}")]
    Handshake {
        /// openssl's reasons or the socket's error.
        detail: String,
    },
}

/// Runs the server side of the handshake on `stream` within `timeout`.
pub async fn accept<S>(
    acceptor: &SslAcceptor,
    stream: S,
    timeout: Duration,
) -> Result<SslStream<S>, AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed = |detail: String| AcceptError::Handshake { detail };
    let ssl = Ssl::new(acceptor.context()).map_err(|e| failed(super::openssl_reason(&e)))?;
    let mut tls = SslStream::new(ssl, stream).map_err(|e| failed(super::openssl_reason(&e)))?;
    match tokio::time::timeout(timeout, Pin::new(&mut tls).accept()).await {
        Err(_) => Err(AcceptError::Timeout { after: timeout }),
        Ok(Err(e)) => Err(failed(super::ssl_error_reason(&e))),
        Ok(Ok(())) => Ok(tls),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::tls::{generate_self_signed, generate_self_signed_between, write_new_pair};
    use espmail_test_macros::bounded;
    use std::path::Path;
    use tokio::io::AsyncWriteExt;

    fn pair(dir: &Path, name: &str, host: &str) -> (CertPaths, Fingerprint) {
        let paths = CertPaths {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        let made = generate_self_signed(host, 30).unwrap();
        write_new_pair(&paths, &made.cert_pem, &made.key_pem).unwrap();
        (paths, made.fingerprint)
    }

    #[test]
    fn a_good_pair_loads_and_shows_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (paths, fp) = pair(dir.path(), "a", "localhost");
        let loaded = load_acceptor(&paths).unwrap();
        assert_eq!(loaded.fingerprint, fp);
        assert!(!loaded.not_after.is_empty());
    }

    #[test]
    fn bad_files_are_refused_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = pair(dir.path(), "a", "localhost");
        let (b, _) = pair(dir.path(), "b", "localhost");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"this is not a certificate\n").unwrap();
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.pem");
        let encrypted = dir.path().join("enc.key");
        std::fs::write(
            &encrypted,
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();

        let with = |cert: &Path, key: &Path| {
            load_acceptor(&CertPaths {
                cert: cert.to_owned(),
                key: key.to_owned(),
            })
            .unwrap_err()
        };
        let err = with(&a.cert, &b.key);
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("does not belong"), "{err}");
        let err = with(&garbage, &a.key);
        assert!(
            matches!(
                err,
                TlsError::NotPem {
                    what: PemKind::Certificate,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        let err = with(&a.cert, &garbage);
        assert!(
            matches!(
                err,
                TlsError::NotPem {
                    what: PemKind::Key,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = with(&broken, &a.key);
        assert!(matches!(err, TlsError::BadPem { .. }), "{err:?}");
        let err = with(&missing, &a.key);
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = with(&a.cert, &encrypted);
        assert!(matches!(err, TlsError::EncryptedKey { .. }), "{err:?}");
        // The certificate file given as the key: it has PEM, but no key.
        let err = with(&a.cert, &a.cert);
        assert!(
            matches!(
                err,
                TlsError::BadPem {
                    what: PemKind::Key,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn expired_and_future_certificates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let now = i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap();
        for (name, from, to) in [
            ("old", now - 20 * 86_400, now - 86_400),
            ("future", now + 86_400, now + 20 * 86_400),
        ] {
            let made = generate_self_signed_between("localhost", from, to).unwrap();
            let paths = CertPaths {
                cert: dir.path().join(format!("{name}.crt")),
                key: dir.path().join(format!("{name}.key")),
            };
            write_new_pair(&paths, &made.cert_pem, &made.key_pem).unwrap();
            let err = load_acceptor(&paths).unwrap_err();
            match name {
                "old" => assert!(matches!(err, TlsError::CertExpired { .. }), "{err:?}"),
                _ => assert!(matches!(err, TlsError::CertNotYetValid { .. }), "{err:?}"),
            }
        }
    }

    #[test]
    fn reload_keeps_the_old_pair_when_the_new_one_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (a, fp_a) = pair(dir.path(), "a", "localhost");
        let (b, fp_b) = pair(dir.path(), "b", "localhost");
        let holder = ReloadableAcceptor::load(&a).unwrap();
        assert_eq!(holder.current().fingerprint, fp_a);
        let mismatched = CertPaths {
            cert: b.cert.clone(),
            key: a.key.clone(),
        };
        assert!(matches!(
            holder.reload(&mismatched),
            Err(TlsError::KeyMismatch { .. })
        ));
        assert_eq!(holder.current().fingerprint, fp_a, "old pair kept");
        assert_eq!(holder.current().paths, a);
        assert_eq!(holder.reload(&b).unwrap().fingerprint, fp_b);
        assert_eq!(holder.current().fingerprint, fp_b);
    }

    #[bounded]
    #[tokio::test]
    async fn a_stalled_handshake_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = pair(dir.path(), "a", "localhost");
        let holder = ReloadableAcceptor::load(&a).unwrap();
        let (_client, server) = tokio::io::duplex(4096); // connected, never says a word
        let limit = Duration::from_millis(300);
        let err = tokio::time::timeout(Duration::from_secs(10), holder.accept(server, limit))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, AcceptError::Timeout { after } if after == limit));
        assert!(err.to_string().contains("0.3 s"), "{err}");
    }

    #[bounded]
    #[tokio::test]
    async fn plain_bytes_fail_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = pair(dir.path(), "a", "localhost");
        let holder = ReloadableAcceptor::load(&a).unwrap();
        let (mut client, server) = tokio::io::duplex(4096);
        client
            .write_all(b"{\"to\":\"bridge\",\"op\":\"LOGIN\"}\r\r")
            .await
            .unwrap();
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            holder.accept(server, Duration::from_secs(5)),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, AcceptError::Handshake { .. }), "{err:?}");
    }
}
