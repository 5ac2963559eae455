//! The TLS listener's side of the server (`[tls] listen`): the handshake, run inside the
//! connection's own task within `[tls] handshake_timeout_secs` (a client that stalls or
//! fails it costs its own connection only, never the accept loop), and the certificate's
//! reload on SIGHUP.
//!
//! The acceptor itself (TLS 1.2 at least, 1.3 preferred, ECDHE + AEAD, no renegotiation)
//! and the reload that keeps the old pair when the new one is bad are `crate::tls`'s;
//! here they meet the accept loop and the log. After the handshake the connection is an
//! ordinary [`super::session::Session`] over the TLS stream.
//!
//! May touch: the streams it is handed, and the certificate and key files it is given
//! (read on SIGHUP).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::tls::{CertPaths, ReloadableAcceptor};

/// The TLS listener `main.rs` bound, and what its connections are accepted with.
pub struct TlsListener {
    /// The bound socket.
    pub listener: TcpListener,
    /// The certificate in force (replaced by [`reload_on_sighup`]).
    pub acceptor: Arc<ReloadableAcceptor>,
    /// How long a new connection may take to finish its handshake.
    pub handshake_timeout: Duration,
}

/// A stream whose first bytes were already read (those a front end sent after its PROXY
/// header, which belong to the TLS ClientHello): it gives them back first, then reads on.
/// Writes go straight through.
pub struct Rewound<S> {
    first: Bytes,
    inner: S,
}

impl<S> Rewound<S> {
    /// `inner`, with `first` read before anything of it.
    pub fn new(first: Bytes, inner: S) -> Rewound<S> {
        Rewound { first, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewound<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.first.has_remaining() {
            let n = self.first.len().min(buf.remaining());
            let head = self.first.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewound<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Logs the certificate in force at start: its file, fingerprint (what players pin) and
/// end date.
pub fn log_loaded(acceptor: &ReloadableAcceptor) {
    let now = acceptor.current();
    info!(
        cert = %now.paths.cert.display(),
        fingerprint = %format_args!("sha256:{}", now.fingerprint),
        not_after = %now.not_after,
        "TLS certificate loaded"
    );
}

/// On each SIGHUP, loads the certificate and key from `paths` again (the operator
/// replaced the files, e.g. a renewal) and puts the pair in force for new connections;
/// connections already up keep theirs. A pair that cannot be used is refused with a log
/// line naming the file and what is wrong, and the pair in force stays.
///
/// The signal handler is installed when this function is called, before the returned
/// future first runs, so a SIGHUP sent right after cannot kill the process. Call it
/// inside a tokio runtime and spawn the future. It runs beside the log's own SIGHUP work
/// (`log_redact::reload_on_sighup`); each gets every signal.
pub fn reload_on_sighup(
    acceptor: Arc<ReloadableAcceptor>,
    paths: CertPaths,
    shutdown: CancellationToken,
) -> io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            // Reading two small files and checking a key: quick, but file I/O all the
            // same, so off the async workers.
            let (holder, p) = (acceptor.clone(), paths.clone());
            let reloaded = tokio::task::spawn_blocking(move || holder.reload(&p)).await;
            match reloaded {
                Ok(Ok(now)) => info!(
                    cert = %now.paths.cert.display(),
                    fingerprint = %format_args!("sha256:{}", now.fingerprint),
                    not_after = %now.not_after,
                    "SIGHUP: TLS certificate reloaded; new connections get it"
                ),
                Ok(Err(e)) => {
                    let kept = acceptor.current();
                    warn!(
                        error = %e,
                        kept = %format_args!("sha256:{}", kept.fingerprint),
                        "SIGHUP: new TLS certificate refused; the one in force stays"
                    );
                }
                Err(e) => warn!(
                    error = %e,
                    "SIGHUP: TLS certificate not reloaded; the one in force stays"
                ),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use espmail_test_macros::bounded;

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[bounded]
    #[tokio::test]
    async fn bytes_read_ahead_come_first_then_the_stream() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (mut client, server) = tokio::io::duplex(64);
            let mut s = Rewound::new(Bytes::from_static(b"\x16\x03\x01"), server);
            client.write_all(b"rest").await.unwrap();
            let mut first = [0u8; 2];
            s.read_exact(&mut first).await.unwrap();
            assert_eq!(
                &first, b"\x16\x03",
                "a small read takes part of what was read ahead"
            );
            let mut more = [0u8; 5];
            s.read_exact(&mut more).await.unwrap();
            assert_eq!(&more, b"\x01rest");
            s.write_all(b"back").await.unwrap();
            let mut back = [0u8; 4];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"back", "writes go straight through");
        })
        .await
        .unwrap();
    }
}
