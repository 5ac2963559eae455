//! The only place that owns player sockets: the accept loop, connection permits, and
//! graceful shutdown.
//!
//! [`run`] takes a listener that `main.rs` already bound (so the listening line can show
//! the real port), takes a permit before each accept, spawns one [`session`] task per
//! connection inside its own tracing span, and on shutdown stops accepting, lets every
//! session finish what it must (an ESP Mail save, a delivery's delete) and returns only
//! when all of them have.
//!
//! One connection is one [`session::Session`], generic over its stream; its parts each
//! have one job and are tested without a socket:
//!
//! - `session`: the task: reads, dispatches, owns the select loop, the connection's phase
//!   and the one prompt timer;
//! - `login`: the login line, how it is believed, the in-world password dialogue;
//! - `plaza`: the seat and presence in the world, drawing the region, pushes between
//!   sessions;
//! - `esp`: ESP intents as protocol messages, ESP Mail saves, the line rate;
//! - `delivery`: waiting mail at login: the lease, the pacing, ack → delete;
//! - `outbound`: the packet queue, the link window, mail tags and the Ping after them,
//!   the stuck-client limit;
//! - [`pace`]: the byte-rate and line-rate arithmetic.

mod delivery;
mod esp;
mod login;
mod outbound;
pub mod pace;
mod plaza;
pub mod session;
#[cfg(test)]
mod testing;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{field, info, info_span, warn, Instrument};

use crate::admin::AdminStats;
use crate::config::{self, Config};
use crate::espmail::accounts::AccountsHandle;
use crate::espmail::MailHandle;
use crate::world::esp::MailRate;
use crate::world::login::AuthMode;
use crate::world::Registry;
use session::Push;

/// The numbers the accept loop and sessions live by. `main.rs` fills them from the config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// At most this many connections at once; more are refused (closed at once).
    pub max_connections: usize,
    /// How long a connection may take to send its login line. The real C64 can sit silent
    /// for minutes first (WIRE.md 1.3.5), so this is long.
    pub login_timeout: Duration,
    /// A logged-in connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Outbound bytes per second per connection; 0 = no cap. The C64 runs at 1200 baud.
    pub out_bytes_per_sec: u32,
    /// Messages queued for one session before it counts as stuck and is disconnected.
    pub outbox_len: usize,
    /// How long a prompt (ESP Mail offer, next-mail question) waits for an answer.
    pub prompt_timeout: Duration,
}

impl Settings {
    /// The settings a config gives.
    pub fn from_config(c: &Config) -> Settings {
        Settings {
            max_connections: c.server.max_connections,
            login_timeout: Duration::from_secs(c.server.login_timeout_secs),
            idle_timeout: Duration::from_secs(c.server.idle_timeout_secs),
            out_bytes_per_sec: c.server.rate_limit_bytes_per_sec,
            outbox_len: c.server.outbox_len,
            prompt_timeout: Duration::from_secs(c.mail.prompt_timeout_secs),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_connections: 10_000,
            login_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(1800),
            out_bytes_per_sec: 0,
            outbox_len: 64,
            prompt_timeout: Duration::from_secs(120),
        }
    }
}

/// Everything a session needs from the rest of the process, shared by all of them.
pub struct Deps {
    /// Limits and timeouts.
    pub settings: Settings,
    /// Who is online in the Plaza, and their outboxes.
    pub registry: Arc<Registry<Push>>,
    /// Avatars and their passwords.
    pub accounts: AccountsHandle,
    /// How logins are believed.
    pub auth_mode: AuthMode,
    /// The ESP Mail vault.
    pub mail: MailHandle,
    /// The ESP Mail send rate, per sender, shared by all sessions.
    pub mail_rate: MailRate,
    /// Whether debug logging is on (sessions tell their avatar when it goes on).
    pub debug: Option<tokio::sync::watch::Receiver<bool>>,
    /// Connections open now.
    pub connections: AtomicUsize,
}

impl Deps {
    /// Whether an unknown name may create its avatar.
    pub fn auto_register(&self) -> bool {
        matches!(
            self.auth_mode,
            AuthMode::Password {
                auto_register: true
            }
        )
    }
}

/// The world's auth mode from the config's `[auth]`.
pub fn auth_mode(c: &Config) -> AuthMode {
    match c.auth.mode {
        config::AuthMode::Password => AuthMode::Password {
            auto_register: c.auth.auto_register,
        },
        config::AuthMode::Trusted => AuthMode::Trusted {
            peers: c.auth.trusted_peers.clone(),
        },
    }
}

/// The admin socket's `stats` line: counts only, never names or text.
pub struct ServerStats(pub Arc<Deps>);

impl AdminStats for ServerStats {
    fn stats_line(&self) -> BoxFuture<'_, String> {
        Box::pin(async move {
            let d = &self.0;
            let mail = match d.mail.stats().await {
                Ok(s) => format!(
                    "mail_waiting={} quarantined={} delivered={} db_bytes={}",
                    s.waiting, s.quarantined, s.delivered, s.db_bytes
                ),
                Err(e) => format!("mail=unavailable ({e})"),
            };
            format!(
                "connections={} online={} {mail}",
                d.connections.load(Ordering::Relaxed),
                d.registry.count(),
            )
        })
    }
}

/// Why the server stopped other than by being asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listening socket failed in a way that retrying will not fix.
    #[error("accepting connections failed: {0}")]
    Accept(#[source] io::Error),
}

/// Accept connections on `listener` until `shutdown` is cancelled, then wait for every
/// session to finish. Returns only once no session is left.
pub async fn run(
    listener: TcpListener,
    deps: Arc<Deps>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let permits = Arc::new(Semaphore::new(deps.settings.max_connections));
    let sessions = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    let mut refused: u64 = 0;
    let mut result = Ok(());
    for conn in 1u64.. {
        // The permit is taken before the accept, so the count can never overshoot; when
        // none is left the connection is still accepted, and closed at once, so the peer
        // sees a clean refusal instead of hanging in the listen backlog.
        let permit = permits.clone().try_acquire_owned().ok();
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(e) if is_transient(&e) => {
                // Out of file descriptors or a connection reset before accept: wait a
                // little so sessions can end, then try again, instead of spinning.
                warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            Err(e) => {
                result = Err(ServerError::Accept(e));
                break;
            }
        };
        // A slot may have come free while we waited in accept: a permit taken before the
        // wait would otherwise refuse a connection the server has room for.
        let permit = permit.or_else(|| permits.clone().try_acquire_owned().ok());
        match permit {
            Some(permit) => spawn_session(&sessions, stream, peer, conn, &deps, &shutdown, permit),
            None => {
                refused += 1;
                // Logged at powers of two so a flood cannot flood the log too.
                if refused.is_power_of_two() {
                    warn!(%peer, refused, max = deps.settings.max_connections, "connection limit reached; refusing");
                }
                drop(stream);
            }
        }
    }
    drop(listener);
    info!(
        active = sessions.len(),
        "no longer accepting; waiting for sessions to finish"
    );
    shutdown.cancel();
    sessions.close();
    sessions.wait().await;
    info!("all sessions finished");
    result
}

fn spawn_session(
    sessions: &TaskTracker,
    stream: TcpStream,
    peer: SocketAddr,
    conn: u64,
    deps: &Arc<Deps>,
    shutdown: &CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let span = info_span!("session", %peer, conn, avatar = field::Empty);
    let session = session::Session::new(stream, peer, deps.clone(), shutdown.child_token());
    let deps = deps.clone();
    deps.connections.fetch_add(1, Ordering::Relaxed);
    sessions.spawn(
        async move {
            session.run_logged(permit).await;
            deps.connections.fetch_sub(1, Ordering::Relaxed);
        }
        .instrument(span),
    );
}

/// Sleeps until `at`, or forever when there is nothing to wait for (a timer that may be
/// off, in a `select!`).
async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Accept errors that say "not now" rather than "never".
fn is_transient(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}
