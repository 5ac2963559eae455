//! Connections from a listed front end (`[server] proxy_from`): the PROXY header (HAProxy's
//! v1 or v2, parsed by [`crate::protocol::proxy`]) is read before the login preamble and
//! says which address the player really connects from.
//!
//! Only these connections are read for a header: from anyone else, header-like bytes are
//! just bytes before the login line. A listed front end must send one at once: without it
//! (or with a broken one, or none within [`HEADER_TIMEOUT`]) the connection is refused,
//! since its player's address is unknown. The read is bounded by the parser's limits
//! (a v1 line of 107 bytes, a v2 header of 1040).
//!
//! May touch: the stream it is handed, before the login preamble.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::protocol::proxy::{self, ProxyError, ProxyHeader, V2_MAX_LEN};

/// How long a listed front end has for its header: it writes it as it connects, so this
/// is short.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a connection from a listed front end is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Nothing, or not all of a header, in time.
    #[error("no PROXY header in time (a front end sends it as it connects)")]
    Timeout,
    /// The front end closed the connection first.
    #[error("the connection closed before a PROXY header")]
    Closed,
    /// The bytes are not a header this server accepts.
    #[error(transparent)]
    Bad(#[from] ProxyError),
    /// The socket failed.
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY header at the start of `stream`, waiting at most `timeout` (the server
/// gives [`HEADER_TIMEOUT`]). Returns the header and the bytes read after it (the start of
/// the login preamble); `None` when the server is shutting down.
pub async fn read_header<S>(
    stream: &mut S,
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<(ProxyHeader, Bytes)>, HeaderError>
where
    S: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        let n = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep_until(deadline) => return Err(HeaderError::Timeout),
            n = stream.read(&mut chunk) => n?,
        };
        if n == 0 {
            return Err(HeaderError::Closed);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if let Some((header, used)) = proxy::parse(&buf)? {
            let rest = Bytes::copy_from_slice(buf.get(used..).unwrap_or_default());
            return Ok(Some((header, rest)));
        }
        // The parser refuses anything longer than a header; this only keeps the bound
        // obvious here.
        if buf.len() > V2_MAX_LEN {
            return Err(HeaderError::Bad(ProxyError::V2TooLong {
                len: buf.len(),
                max: V2_MAX_LEN,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use espmail_test_macros::bounded;

    use super::*;
    use tokio::io::AsyncWriteExt;

    const WAIT: Duration = Duration::from_secs(20);

    #[bounded]
    #[tokio::test]
    async fn a_header_in_pieces_then_the_login_line() {
        tokio::time::timeout(WAIT, async {
            let (mut client, mut server) = tokio::io::duplex(8);
            let writer = tokio::spawn(async move {
                client
                    .write_all(b"PROXY TCP4 203.0.113.7 10.0.0.1 40000 1986\r\n{\"name\"")
                    .await
                    .unwrap();
                client
            });
            let token = CancellationToken::new();
            let (header, rest) = read_header(&mut server, WAIT, &token)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(header.source, Some("203.0.113.7:40000".parse().unwrap()));
            let mut rest = rest.to_vec();
            drop(writer.await.unwrap());
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"{\"name\"", "nothing after the header is lost");
        })
        .await
        .expect("bounded");
    }

    #[bounded]
    #[tokio::test]
    async fn no_header_is_refused_at_the_first_byte() {
        tokio::time::timeout(WAIT, async {
            let (mut client, mut server) = tokio::io::duplex(64);
            client.write_all(b"{\"to\":\"bridge\"}\r\r").await.unwrap();
            let token = CancellationToken::new();
            let err = read_header(&mut server, WAIT, &token).await.unwrap_err();
            assert!(
                matches!(err, HeaderError::Bad(ProxyError::Missing)),
                "{err}"
            );
            drop(client);
            let (client, mut server) = tokio::io::duplex(64);
            drop(client);
            assert!(matches!(
                read_header(&mut server, WAIT, &token).await,
                Err(HeaderError::Closed)
            ));
        })
        .await
        .expect("bounded");
    }

    #[bounded]
    #[tokio::test]
    async fn silence_times_out() {
        let (_client, mut server) = tokio::io::duplex(64);
        let token = CancellationToken::new();
        let short = Duration::from_millis(50);
        let err = read_header(&mut server, short, &token).await.unwrap_err();
        assert!(matches!(err, HeaderError::Timeout));
    }
}
