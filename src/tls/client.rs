//! The client's end of TLS (`espmail tunnel`, and `espmail talk --tls`): connect to a
//! server, finish the handshake, and verify the server's certificate, all before the
//! caller gets a stream, so not one byte of the player's can go to a server that failed
//! the check.
//!
//! Three ways to trust a server ([`Verify`]): the system's CAs and the host name (as a
//! browser does), a given CA file and the host name, or a pinned SHA-256 fingerprint
//! (exactly that certificate, whoever signed it: for a self-signed server). Each failure
//! comes back as a [`TlsError`] that says what failed: refused, timeout, the wrong
//! certificate (both fingerprints), expired, the wrong host name, an unknown CA.
//!
//! May touch: the network (one TCP connection per call) and, once at construction, the
//! CA file it is given.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ssl::{SslConnector, SslMethod, SslOptions, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509Ref, X509StoreContextRef};
use openssl_sys as ffi;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_openssl::SslStream;

use super::files::read_certificates;
use super::{Fingerprint, PemKind, TlsError, TLS12_CIPHERS};

/// How long `connect` waits for the TCP connection and the handshake together, unless told.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server's certificate is checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Verify {
    /// Signed by a CA this machine trusts, and issued for the host name connected to.
    #[default]
    SystemCas,
    /// Signed by a CA in this PEM file (a self-signed server's own certificate works),
    /// and issued for the host name connected to. The system's CAs are not used.
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint, whoever signed it and
    /// whatever host it names; it must still be within its validity dates.
    Pin(Fingerprint),
}

/// A client context, built once (the CA file is read here) and used for every connection.
pub struct Connector {
    ctx: SslConnector,
    verify: Verify,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("verify", &self.verify)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Connects to `server` (HOST:PORT) and verifies it as `verify` says, within
/// [`DEFAULT_CONNECT_TIMEOUT`]. For many connections, build a [`Connector`] once.
pub async fn connect(server: &str, verify: &Verify) -> Result<SslStream<TcpStream>, TlsError> {
    Connector::new(verify, DEFAULT_CONNECT_TIMEOUT)?
        .connect(server)
        .await
}

/// What the verification callback saw, for the error message once the handshake failed.
#[derive(Default)]
struct Seen {
    /// The server's own certificate.
    leaf: Option<Fingerprint>,
    /// The names and addresses the server's certificate holds.
    leaf_names: String,
    /// The first verification error.
    first_error: Option<Complaint>,
}

/// One verification error, as the callback saw it.
struct Complaint {
    /// openssl's `X509_V_ERR_*` code.
    code: i32,
    /// openssl's words for it.
    words: &'static str,
    /// 0 for the server's own certificate, more for those above it in the chain.
    depth: u32,
    /// The validity dates of the certificate it was about.
    not_before: String,
    not_after: String,
}

impl Complaint {
    fn about(cert: &X509Ref, code: i32, words: &'static str, depth: u32) -> Complaint {
        Complaint {
            code,
            words,
            depth,
            not_before: cert.not_before().to_string(),
            not_after: cert.not_after().to_string(),
        }
    }
}

impl Connector {
    /// Builds the context: TLS 1.2 at least, modern ciphers, no renegotiation, and the
    /// trust `verify` asks for (reading the CA file now, so a bad one is reported before
    /// any player connects).
    pub fn new(verify: &Verify, timeout: Duration) -> Result<Connector, TlsError> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        b.set_cipher_list(TLS12_CIPHERS)?;
        b.set_options(SslOptions::NO_RENEGOTIATION | SslOptions::NO_COMPRESSION);
        if let Verify::CaFile(path) = verify {
            // A fresh store replaces the system's: with --ca, only that CA is trusted.
            let mut store = X509StoreBuilder::new()?;
            for cert in read_certificates(path, PemKind::CaFile)? {
                store.add_cert(cert)?;
            }
            b.set_cert_store(store.build());
        }
        Ok(Connector {
            ctx: b.build(),
            verify: verify.clone(),
            timeout,
        })
    }

    /// How the server is checked.
    pub fn verify(&self) -> &Verify {
        &self.verify
    }

    /// Connects to `server` (HOST:PORT, `[v6]:PORT`), completes the handshake and the
    /// verification, and only then returns the stream.
    pub async fn connect(&self, server: &str) -> Result<SslStream<TcpStream>, TlsError> {
        let (host, port) = split_server(server)?;
        let deadline = Instant::now() + self.timeout;
        let timed_out = |stage| TlsError::Timeout {
            server: server.to_owned(),
            stage,
            after: self.timeout,
        };
        let tcp = timeout_at(deadline, tcp_connect(server, host, port))
            .await
            .map_err(|_| timed_out("accept the connection"))??;
        // The relayed protocol is small frames both ways; Nagle would only add delay.
        let _ = tcp.set_nodelay(true);

        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut config = self.ctx.configure()?;
        if matches!(self.verify, Verify::Pin(_)) {
            // A pin names one certificate: the host name is not what is trusted.
            config.set_verify_hostname(false);
        }
        let mut ssl = config.into_ssl(host)?;
        let record = seen.clone();
        match self.verify {
            Verify::Pin(expected) => ssl.set_verify_callback(SslVerifyMode::PEER, move |_, ctx| {
                check_pin(expected, ctx, &record)
            }),
            _ => ssl.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
                note(ok, ctx, &record);
                ok
            }),
        }
        let mut tls = SslStream::new(ssl, tcp)?;
        let handshake = timeout_at(deadline, Pin::new(&mut tls).connect()).await;
        let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
        match handshake {
            Err(_) => return Err(timed_out("finish the TLS handshake")),
            Ok(Err(e)) => return Err(self.explain(server, host, seen, &e)),
            Ok(Ok(())) => {}
        }
        // Belt and braces for the pin: the certificate the session ended up with is the
        // pinned one (the callback already refused any other).
        if let Verify::Pin(expected) = self.verify {
            let got = match tls.ssl().peer_certificate() {
                Some(cert) => Fingerprint::of(&cert)?,
                None => {
                    return Err(TlsError::Handshake {
                        server: server.to_owned(),
                        detail: "the server showed no certificate".to_owned(),
                    })
                }
            };
            if got != expected {
                return Err(TlsError::WrongCertificate {
                    server: server.to_owned(),
                    expected,
                    got,
                });
            }
        }
        Ok(tls)
    }

    /// Turns a failed handshake and what the callback saw into the reason in words.
    fn explain(&self, server: &str, host: &str, seen: Seen, e: &openssl::ssl::Error) -> TlsError {
        let server = server.to_owned();
        if let (Verify::Pin(expected), Some(got)) = (&self.verify, seen.leaf) {
            if got != *expected {
                return TlsError::WrongCertificate {
                    server,
                    expected: *expected,
                    got,
                };
            }
        }
        let Some(Complaint {
            code,
            words,
            depth,
            not_before,
            not_after,
        }) = seen.first_error
        else {
            return TlsError::Handshake {
                server,
                detail: super::ssl_error_reason(e),
            };
        };
        let which = if depth == 0 {
            ""
        } else {
            "chain (a certificate above the server's own) "
        };
        match code {
            ffi::X509_V_ERR_CERT_HAS_EXPIRED => TlsError::Expired {
                server,
                which,
                not_after,
            },
            ffi::X509_V_ERR_CERT_NOT_YET_VALID => TlsError::NotYetValid {
                server,
                which,
                not_before,
            },
            ffi::X509_V_ERR_HOSTNAME_MISMATCH | ffi::X509_V_ERR_IP_ADDRESS_MISMATCH => {
                TlsError::HostMismatch {
                    server,
                    host: host.to_owned(),
                    names: seen.leaf_names,
                }
            }
            ffi::X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
            | ffi::X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
            | ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
            | ffi::X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
            | ffi::X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
            | ffi::X509_V_ERR_CERT_UNTRUSTED => TlsError::UnknownCa {
                server,
                detail: words,
                got: seen.leaf,
            },
            _ => TlsError::CertRefused {
                server,
                detail: words,
            },
        }
    }
}

/// Splits `HOST:PORT` or `[V6]:PORT`; the host comes back without brackets.
pub fn split_server(server: &str) -> Result<(&str, u16), TlsError> {
    let bad = |reason| TlsError::BadServer {
        server: server.to_owned(),
        reason,
    };
    let (host, port) = if let Some(rest) = server.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| bad("an IPv6 address is written [ADDRESS]:PORT"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("the part in brackets is not an IPv6 address"));
        }
        (host, port)
    } else {
        let (host, port) = server
            .rsplit_once(':')
            .ok_or_else(|| bad("give it as HOST:PORT, e.g. world.example.org:1987"))?;
        if host.contains(':') {
            return Err(bad("an IPv6 address is written [ADDRESS]:PORT"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(bad("the host is missing (HOST:PORT)"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('+') => Ok((host, p)),
        _ => Err(bad("the port is a number from 1 to 65535")),
    }
}

async fn tcp_connect(server: &str, host: &str, port: u16) -> Result<TcpStream, TlsError> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| TlsError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => TlsError::Refused {
            server: server.to_owned(),
        },
        Some(source) => TlsError::Connect {
            server: server.to_owned(),
            source,
        },
        None => TlsError::Resolve {
            host: host.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address found"),
        },
    })
}

/// In CA modes: openssl decides; remember the leaf and the first complaint for the message.
fn note(ok: bool, ctx: &mut X509StoreContextRef, seen: &Mutex<Seen>) {
    let depth = ctx.error_depth();
    let error = ctx.error();
    let Some(cert) = ctx.current_cert() else {
        return;
    };
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    if seen.leaf.is_none() {
        // The chain being checked starts with the server's own certificate, whichever
        // depth the callback is about.
        let leaf = ctx
            .chain()
            .and_then(|chain| chain.get(0))
            .or((depth == 0).then_some(cert));
        if let Some(leaf) = leaf {
            seen.leaf = Fingerprint::of(leaf).ok();
            seen.leaf_names = names_of(leaf);
        }
    }
    if !ok && seen.first_error.is_none() {
        seen.first_error = Some(Complaint::about(
            cert,
            error.as_raw(),
            error.error_string(),
            depth,
        ));
    }
}

/// In pin mode: the chain above the server's certificate does not matter; the server's
/// own certificate must be the pinned one and within its dates.
fn check_pin(expected: Fingerprint, ctx: &mut X509StoreContextRef, seen: &Mutex<Seen>) -> bool {
    if ctx.error_depth() != 0 {
        return true;
    }
    let Some(cert) = ctx.current_cert() else {
        return false;
    };
    let Ok(got) = Fingerprint::of(cert) else {
        return false;
    };
    let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
    seen.leaf = Some(got);
    if got != expected {
        return false;
    }
    match dates_problem(cert) {
        None => true,
        Some((code, words)) => {
            seen.first_error = Some(Complaint::about(cert, code, words, 0));
            false
        }
    }
}

/// Whether `cert` is outside its validity dates now (a clock that cannot be read counts
/// as outside: refusing is the safe side).
fn dates_problem(cert: &X509Ref) -> Option<(i32, &'static str)> {
    let Ok(now) = Asn1Time::days_from_now(0) else {
        return Some((
            ffi::X509_V_ERR_CERT_HAS_EXPIRED,
            "the clock could not be read",
        ));
    };
    if cert.not_after() < now {
        Some((ffi::X509_V_ERR_CERT_HAS_EXPIRED, "certificate has expired"))
    } else if cert.not_before() > now {
        Some((
            ffi::X509_V_ERR_CERT_NOT_YET_VALID,
            "certificate is not yet valid",
        ))
    } else {
        None
    }
}

/// The subjectAltName entries (DNS names and IP addresses), for "is for X, not for Y".
fn names_of(cert: &X509Ref) -> String {
    let mut names = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in sans.iter() {
            if let Some(dns) = san.dnsname() {
                names.push(dns.to_owned());
            } else if let Some(ip) = san.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).map(|b| std::net::IpAddr::from(b).to_string()),
                    16 => <[u8; 16]>::try_from(ip).map(|b| std::net::IpAddr::from(b).to_string()),
                    _ => Ok("an unreadable address".to_owned()),
                };
                names.extend(ip.ok());
            }
        }
    }
    if names.is_empty() {
        "no host name".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn server_addresses_split_strictly() {
        assert_eq!(
            split_server("world.example.org:1987").unwrap(),
            ("world.example.org", 1987)
        );
        assert_eq!(split_server("127.0.0.1:1").unwrap(), ("127.0.0.1", 1));
        assert_eq!(split_server("[::1]:443").unwrap(), ("::1", 443));
        for bad in [
            "world.example.org",
            ":1987",
            "host:0",
            "host:65536",
            "host:+5",
            "host:",
            "::1:443",
            "[::1]443",
            "[nothost]:443",
            "",
        ] {
            let err = split_server(bad).unwrap_err();
            assert!(matches!(err, TlsError::BadServer { .. }), "{bad}: {err:?}");
        }
    }
}
