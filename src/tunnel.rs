//! `espmail tunnel`, run by the player on their own machine: the old client (the C64
//! emulator's RS-232, VICE `-rsdev1 127.0.0.1:1986`, or a 1999 client) connects to it in
//! plain TCP on loopback, and it carries every byte on to the server inside TLS.
//!
//! For each local connection, in its own task: connect to the server, finish the TLS
//! handshake and verify the certificate ([`crate::tls::Connector`]), and only then relay
//! bytes both ways (`copy_bidirectional`: bounded buffers, so a slow side slows the other
//! instead of filling memory; a half-close on one side is passed on while the other
//! direction keeps flowing). Until verification has succeeded the player's bytes are not
//! even read: they wait in this machine's socket buffer, so a server that fails the check
//! gets none of them.
//!
//! Console output is this command's interface: one line when ready (`espmail tunnel
//! listening on ADDR -> SERVER`), one per connection made, closed, or failed (with the
//! reason). Never a relayed byte.
//!
//! May touch: its listening socket, the connections it accepts and makes, the CA file
//! (once, at start), stderr. Imports `tls` only; not `cli` (main.rs turns the command line
//! into [`TunnelOptions`]).
#![allow(clippy::print_stderr)] // the lines on stderr are what the player sees

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::tls::{client::split_server, Connector, TlsError, Verify};

/// Where the tunnel listens unless told: the port the old clients were set up for, on
/// loopback so only this machine can use it.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1986);

/// What `espmail tunnel` was asked to do.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// The server's TLS listener, HOST:PORT.
    pub server: String,
    /// Where the old client connects.
    pub listen: SocketAddr,
    /// How the server's certificate is checked.
    pub verify: Verify,
    /// Time allowed to connect to the server and finish the handshake.
    pub connect_timeout: Duration,
}

/// Why the tunnel could not start or stopped. A failure of one connection is not one of
/// these: it is reported on its own line and costs that connection only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunnelError {
    /// The server address or the CA file is not usable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listening address is taken or not ours.
    #[error(
        "cannot listen on {addr}: {source} (is another tunnel or server using it? \
         choose another with --listen)"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: std::io::Error,
    },
    /// Signals could not be watched.
    #[error("cannot watch for Ctrl-C: {0}")]
    Signals(std::io::Error),
}

/// A bound tunnel, ready to accept the old client.
#[derive(Debug)]
pub struct Tunnel {
    listener: TcpListener,
    connector: Arc<Connector>,
    server: Arc<str>,
}

impl Tunnel {
    /// Checks the server address, reads the CA file if any, and binds the local address.
    pub async fn bind(options: &TunnelOptions) -> Result<Tunnel, TunnelError> {
        split_server(&options.server)?;
        let connector = Connector::new(&options.verify, options.connect_timeout)?;
        let listener =
            TcpListener::bind(options.listen)
                .await
                .map_err(|source| TunnelError::Bind {
                    addr: options.listen,
                    source,
                })?;
        Ok(Tunnel {
            listener,
            connector: Arc::new(connector),
            server: options.server.as_str().into(),
        })
    }

    /// The address the old client should connect to (the real port, even for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts old clients until `shutdown`, each relayed in its own task. Connections
    /// still open when it returns end with the runtime.
    pub async fn serve(self, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                a = self.listener.accept() => a,
            };
            match accepted {
                Ok((local, peer)) => {
                    let connector = self.connector.clone();
                    let server = self.server.clone();
                    tokio::spawn(relay(local, peer, connector, server));
                }
                Err(e) => {
                    // Out of file descriptors, mostly: say so, and give the system a
                    // moment instead of spinning on the same error.
                    eprintln!("espmail tunnel: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// `espmail tunnel`: bind, print the ready line, relay until Ctrl-C or SIGTERM.
pub async fn run(options: TunnelOptions) -> Result<(), TunnelError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(TunnelError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(TunnelError::Signals)?;
    let tunnel = Tunnel::bind(&options).await?;
    let local = tunnel.local_addr().map_err(|source| TunnelError::Bind {
        addr: options.listen,
        source,
    })?;
    if !local.ip().is_loopback() {
        eprintln!(
            "espmail tunnel: warning: {local} is not a loopback address: anyone who can \
             reach it can use this tunnel, and their bytes cross the network to it unencrypted"
        );
    }
    eprintln!("espmail tunnel listening on {local} -> {}", options.server);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    tunnel.serve(shutdown).await;
    Ok(())
}

/// One old client: verify the server first, then relay until both sides are done.
async fn relay(
    mut local: TcpStream,
    peer: SocketAddr,
    connector: Arc<Connector>,
    server: Arc<str>,
) {
    let _ = local.set_nodelay(true);
    let mut remote = match connector.connect(&server).await {
        Ok(remote) => remote,
        Err(e) => {
            // Dropping `local` closes it; nothing it sent was read, so nothing was sent.
            eprintln!("espmail tunnel: {peer}: {e}; nothing was sent, connection closed");
            return;
        }
    };
    let how = match connector.verify() {
        Verify::Pin(_) => "pinned certificate",
        Verify::CaFile(_) => "certificate checked against --ca",
        Verify::SystemCas => "certificate checked against the system's CAs",
    };
    eprintln!(
        "espmail tunnel: {peer} connected to {server} ({}, {how})",
        remote.ssl().version_str()
    );
    match tokio::io::copy_bidirectional(&mut local, &mut remote).await {
        Ok((up, down)) => {
            eprintln!("espmail tunnel: {peer} closed ({up} bytes sent, {down} bytes received)")
        }
        Err(e) => eprintln!("espmail tunnel: {peer}: connection to {server} ended: {e}"),
    }
}
