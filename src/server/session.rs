//! One connection: its socket, its Q-Link link state and its avatar, in one task.
//!
//! Being built: for now a session holds the connection until the peer hangs up, the
//! login timeout passes or the server shuts down.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Deps;

/// Why a session ended other than by the peer hanging up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
}

/// One connection's task.
pub struct Session {
    stream: TcpStream,
    peer: SocketAddr,
    deps: Arc<Deps>,
    shutdown: CancellationToken,
}

impl Session {
    /// A session for an accepted connection.
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        deps: Arc<Deps>,
        shutdown: CancellationToken,
    ) -> Session {
        Session {
            stream,
            peer,
            deps,
            shutdown,
        }
    }

    /// Run to the end and log how it ended; errors end only this session.
    pub async fn run_logged(self) {
        let peer = self.peer;
        info!(%peer, "connected");
        match self.run().await {
            Ok(()) => info!("disconnected"),
            Err(e) => info!(error = %e, "session ended"),
        }
    }

    async fn run(mut self) -> Result<(), SessionError> {
        let deadline = Instant::now() + self.deps.settings.login_timeout;
        let mut buf = [0u8; 512];
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = sleep_until(deadline) => return Ok(()),
                n = self.stream.read(&mut buf) => {
                    let n = n?;
                    if n == 0 {
                        return Ok(());
                    }
                    debug!(len = n, "bytes before the protocol exists");
                }
            }
        }
    }
}
