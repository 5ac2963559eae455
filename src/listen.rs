//! Binding the players' listening sockets (the plain one and, with `[tls] listen`, the TLS
//! one), with a refusal an operator can act on.
//!
//! "Address in use", "address not on this host" and "permission denied" need three
//! different fixes (stop the other server; pick an address this machine has; pick a port
//! of 1024 or more, or grant the capability), so each gets its own message instead of one
//! guess for all. Each message names the listener and the setting to change.
//!
//! May touch: the listening sockets it binds. Nothing else.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Which of the server's listeners a bind was for: the messages say where its address
/// comes from, so the operator knows what to edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The plain listener (`[server] listen`).
    Plain,
    /// The TLS listener (`[tls] listen`).
    Tls,
}

impl Listener {
    /// Where the address comes from.
    fn setting(self) -> &'static str {
        match self {
            Listener::Plain => "change --listen, ESPMAIL_LISTEN or [server] listen",
            Listener::Tls => "change [tls] listen",
        }
    }
}

impl fmt::Display for Listener {
    /// What follows "cannot listen" in a message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Listener::Plain => "",
            Listener::Tls => " for TLS",
        })
    }
}

/// Why the listening socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Another socket listens on that address and port (`EADDRINUSE`).
    #[error(
        "cannot listen{which} on {addr}: the port is already in use (is another server, or another \
         espmail, listening there? stop it, or {where_})",
        where_ = .which.setting()
    )]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
        /// Which listener.
        which: Listener,
    },
    /// The IP address belongs to no interface of this machine (`EADDRNOTAVAIL`).
    #[error(
        "cannot listen{which} on {addr}: {ip} is not an address of this host (use one of this \
         machine's addresses, 127.0.0.1 for this machine only, or 0.0.0.0 or [::] for all; \
         {where_})",
        ip = .addr.ip(),
        where_ = .which.setting()
    )]
    NotOnThisHost {
        /// The address asked for.
        addr: SocketAddr,
        /// Which listener.
        which: Listener,
    },
    /// A port below 1024 without the privilege to bind it (`EACCES`).
    #[error(
        "cannot listen{which} on {addr}: ports below 1024 need privileges (use a port of 1024 or \
         more, such as 1986, or grant CAP_NET_BIND_SERVICE, e.g. \
         AmbientCapabilities=CAP_NET_BIND_SERVICE in a systemd unit; {where_})",
        where_ = .which.setting()
    )]
    PrivilegedPort {
        /// The address asked for.
        addr: SocketAddr,
        /// Which listener.
        which: Listener,
    },
    /// Permission denied on an ordinary port: a security policy (SELinux, AppArmor, a
    /// systemd `SocketBindDeny=`) forbids it.
    #[error(
        "cannot listen{which} on {addr}: permission denied ({source}); a security policy on this \
         host forbids it, or {where_}",
        where_ = .which.setting()
    )]
    Denied {
        /// The address asked for.
        addr: SocketAddr,
        /// Which listener.
        which: Listener,
        /// What the system said.
        source: io::Error,
    },
    /// An IPv6 address on a host without IPv6 (`EAFNOSUPPORT`).
    #[error(
        "cannot listen{which} on {addr}: IPv6 is not available on this host (use an IPv4 address \
         such as 0.0.0.0:{port}; {where_})",
        port = .addr.port(),
        where_ = .which.setting()
    )]
    NoIpv6 {
        /// The address asked for.
        addr: SocketAddr,
        /// Which listener.
        which: Listener,
    },
    /// Anything else the system refused.
    #[error("cannot listen{which} on {addr}: {source} ({where_})",
        where_ = .which.setting()
    )]
    Other {
        /// The address asked for.
        addr: SocketAddr,
        /// Which listener.
        which: Listener,
        /// What the system said.
        source: io::Error,
    },
}

impl BindError {
    /// Names the cause of a failed bind of `addr` for the `which` listener.
    pub fn classify(addr: SocketAddr, which: Listener, source: io::Error) -> BindError {
        match source.kind() {
            io::ErrorKind::AddrInUse => BindError::InUse { addr, which },
            io::ErrorKind::AddrNotAvailable => BindError::NotOnThisHost { addr, which },
            io::ErrorKind::PermissionDenied if addr.port() != 0 && addr.port() < 1024 => {
                BindError::PrivilegedPort { addr, which }
            }
            io::ErrorKind::PermissionDenied => BindError::Denied {
                addr,
                which,
                source,
            },
            _ if source.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                BindError::NoIpv6 { addr, which }
            }
            _ => BindError::Other {
                addr,
                which,
                source,
            },
        }
    }
}

/// Binds `addr` for players on the plain listener, non-blocking (ready for tokio's
/// `TcpListener::from_std`).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    bind_for(addr, Listener::Plain)
}

/// Binds `addr` for the `which` listener, non-blocking.
pub fn bind_for(addr: SocketAddr, which: Listener) -> Result<TcpListener, BindError> {
    let listener = TcpListener::bind(addr).map_err(|e| BindError::classify(addr, which, e))?;
    listener
        .set_nonblocking(true)
        .map_err(|source| BindError::Other {
            addr,
            which,
            source,
        })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn message(addr: &str, errno: i32) -> String {
        message_for(addr, Listener::Plain, errno)
    }

    fn message_for(addr: &str, which: Listener, errno: i32) -> String {
        BindError::classify(
            addr.parse().unwrap(),
            which,
            io::Error::from_raw_os_error(errno),
        )
        .to_string()
    }

    #[test]
    fn each_cause_has_its_own_words() {
        let in_use = message("127.0.0.1:1986", libc::EADDRINUSE);
        assert!(in_use.contains("already in use"), "{in_use}");
        let absent = message("192.0.2.1:1986", libc::EADDRNOTAVAIL);
        assert!(
            absent.contains("192.0.2.1 is not an address of this host"),
            "{absent}"
        );
        let low = message("0.0.0.0:80", libc::EACCES);
        assert!(low.contains("ports below 1024 need privileges"), "{low}");
        assert!(low.contains("CAP_NET_BIND_SERVICE"), "{low}");
        let denied = message("0.0.0.0:1986", libc::EACCES);
        assert!(denied.contains("security policy"), "{denied}");
        let v6 = message("[::]:1986", libc::EAFNOSUPPORT);
        assert!(v6.contains("IPv6 is not available"), "{v6}");
        assert!(v6.contains("0.0.0.0:1986"), "{v6}");
        // Only a port in use is blamed on another server; every message says where to fix.
        for m in [&absent, &low, &denied, &v6] {
            assert!(!m.contains("another server"), "{m}");
        }
        for m in [&in_use, &absent, &low, &denied, &v6] {
            assert!(m.starts_with("cannot listen on "), "{m}");
            assert!(
                m.contains("--listen") && m.contains("[server] listen"),
                "{m}"
            );
        }
    }

    #[test]
    fn the_tls_listener_says_so_and_names_its_own_setting() {
        let in_use = message_for("0.0.0.0:1987", Listener::Tls, libc::EADDRINUSE);
        assert!(
            in_use.starts_with("cannot listen for TLS on 0.0.0.0:1987: the port is already in use"),
            "{in_use}"
        );
        assert!(in_use.contains("change [tls] listen"), "{in_use}");
        assert!(!in_use.contains("--listen"), "{in_use}");
        let low = message_for("0.0.0.0:443", Listener::Tls, libc::EACCES);
        assert!(low.contains("ports below 1024 need privileges"), "{low}");
        assert!(low.contains("[tls] listen"), "{low}");
    }

    #[test]
    fn a_port_in_use_is_found_for_real() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert!(matches!(bind(addr), Err(BindError::InUse { .. })));
        let ok = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        assert!(ok.local_addr().unwrap().port() != 0);
    }
}
