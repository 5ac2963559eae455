//! The only place that owns player sockets: the accept loop, connection permits, and
//! graceful shutdown.
//!
//! [`run`] takes a listener that `main.rs` already bound (so the listening line can show
//! the real port), takes a permit before each accept, counts each connection under its
//! player's address ([`caps`]; a listed front end's connection first says that address in
//! a PROXY header), spawns one [`session`] task per connection inside its own tracing
//! span, and on shutdown stops accepting, lets every session finish what it must (an ESP
//! Mail save, a delivery's delete) and returns only when all of them have.
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
//! - `bad_input`: bad frames and packets counted by kind, logged at a bounded rate, and
//!   the limit after which the connection closes;
//! - [`caps`]: connections per address, and seats held before authentication;
//! - `proxied`: the PROXY header a listed front end sends first, naming the player's
//!   address;
//! - [`pace`]: the byte-rate and line-rate arithmetic.

mod bad_input;
pub mod caps;
mod delivery;
mod encrypted;
mod esp;
mod login;
mod outbound;
pub mod pace;
mod plaza;
mod proxied;
pub mod session;
#[cfg(test)]
mod testing;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{field, info, info_span, warn, Instrument};

use crate::admin::AdminStats;
use crate::avatar::Password;
use crate::config::{self, AddrRange, Config};
use crate::espmail::accounts::AccountsHandle;
use crate::espmail::MailHandle;
use crate::tls::ReloadableAcceptor;
use crate::world::esp::MailRate;
use crate::world::login::AuthMode;
use crate::world::Registry;
use caps::{AddressCaps, AddressSlot, SeatsBeforeLogin};
pub use encrypted::{log_loaded, reload_on_sighup, TlsListener};
use session::Push;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The player's address: the socket's peer, or the source a listed front end's PROXY
    /// header gave. Everything counted per address (the login throttle, the connection
    /// cap) and the log's `peer` use it.
    pub addr: SocketAddr,
    /// The listed front end the connection came through, if it did.
    pub via: Option<SocketAddr>,
}

impl Peer {
    /// A connection straight from `addr`.
    pub fn direct(addr: SocketAddr) -> Peer {
        Peer { addr, via: None }
    }

    /// The socket's own peer: the address trusted mode checks against `trusted_peers`.
    /// A PROXY header says where a player connects from, which is for counting; whether
    /// a name is believed stays with whoever is really on the other end of the socket.
    pub fn socket(&self) -> SocketAddr {
        self.via.unwrap_or(self.addr)
    }
}

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
    /// Bad frames and packets after which a connection is closed.
    pub max_bad_frames: u32,
    /// Tell players in the clear from another machine that their connection is not
    /// encrypted (`[tls] plain_notice`).
    pub plain_notice: bool,
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
            max_bad_frames: c.server.max_bad_frames,
            plain_notice: c.tls.plain_notice,
        }
    }
}

impl Default for Settings {
    /// The settings of the built-in config (its numbers are written once, in
    /// `config/sections.rs`).
    fn default() -> Self {
        Settings::from_config(&Config::default())
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
    /// What one address, and the connections not yet authenticated, may hold.
    pub guards: Guards,
}

/// What one address may hold, and what connections may hold before they authenticate
/// (DESIGN.md promise 10). Built once from the config; shared by the accept loop and the
/// sessions.
#[derive(Debug, Clone)]
pub struct Guards {
    /// Connections per address (`max_connections_per_address`, `connection_cap_exempt`).
    pub addresses: Arc<AddressCaps>,
    /// Seats in the Plaza held by connections at the in-world password prompt.
    pub seats_before_login: SeatsBeforeLogin,
    /// Front ends whose connections start with a PROXY header (`proxy_from`).
    pub proxy_from: Vec<AddrRange>,
    /// Connections refused for their address's cap so far (for logging at powers of two).
    pub refused_by_address: Arc<AtomicU64>,
    /// Connections from a listed front end refused for want of a valid header, so far.
    pub refused_front_end: Arc<AtomicU64>,
}

impl Guards {
    /// The guards a config asks for. In trusted mode the trusted front ends are exempt
    /// from the per-address cap as well: every player comes through them, so counting
    /// them as one address would cap the whole world.
    pub fn from_config(c: &Config) -> Guards {
        let mut exempt = c.server.connection_cap_exempt.clone();
        if c.auth.mode == config::AuthMode::Trusted {
            exempt.extend(c.auth.trusted_peers.iter().copied().map(AddrRange::from));
        }
        Guards {
            addresses: AddressCaps::new(c.server.max_connections_per_address, exempt),
            seats_before_login: SeatsBeforeLogin::new(c.server.max_unauthenticated_seats),
            proxy_from: c.server.proxy_from.clone(),
            refused_by_address: Arc::default(),
            refused_front_end: Arc::default(),
        }
    }

    /// Whether `ip` is a front end listed in `proxy_from`.
    pub fn is_front_end(&self, ip: IpAddr) -> bool {
        self.proxy_from.iter().any(|range| range.contains(ip))
    }
}

impl Default for Guards {
    /// The built-in config's.
    fn default() -> Self {
        Guards::from_config(&Config::default())
    }
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

/// The world's auth mode from the config's `[auth]` and, in trusted mode, the front end's
/// secret ([`crate::ops::secret::front_end_secret`]); without one (or an empty one) no
/// trusted login is ever believed.
pub fn auth_mode(c: &Config, front_end_secret: Option<Password>) -> AuthMode {
    match c.auth.mode {
        config::AuthMode::Password => AuthMode::Password {
            auto_register: c.auth.auto_register,
        },
        config::AuthMode::Trusted => AuthMode::Trusted {
            peers: c.auth.trusted_peers.clone(),
            secret: front_end_secret.unwrap_or_else(|| Password::new(Vec::new())),
            password_avatars: c.auth.trusted_password_avatars,
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

/// How a connection's bytes arrive: which listener accepted it.
#[derive(Clone)]
enum Transport {
    /// The plain listener: the bytes as the client sent them.
    Plain,
    /// The TLS listener: a handshake first, in the connection's own task.
    Tls {
        acceptor: Arc<ReloadableAcceptor>,
        timeout: Duration,
    },
}

/// Accept connections on `listener` (plain) and on `tls` (when the TLS listener is set
/// up) until `shutdown` is cancelled, then wait for every session to finish. Returns only
/// once no session is left.
///
/// Both listeners share everything: one count of connections (`max_connections`), the
/// per-address cap, and the PROXY header from a listed front end, which comes before the
/// TLS handshake (as HAProxy sends it when it passes TLS through). A TLS connection holds
/// its permit and its address's place during its handshake; the handshake runs in the
/// connection's task, so a client that stalls it costs that connection only.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsListener>,
    deps: Arc<Deps>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let permits = Arc::new(Semaphore::new(deps.settings.max_connections));
    let sessions = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    let mut refused: u64 = 0;
    let mut result = Ok(());
    let (tls_listener, tls_transport) = match tls {
        Some(t) => (
            Some(t.listener),
            Transport::Tls {
                acceptor: t.acceptor,
                timeout: t.handshake_timeout,
            },
        ),
        None => (None, Transport::Plain),
    };
    for conn in 1u64.. {
        // The permit is taken before the accept, so the count can never overshoot; when
        // none is left the connection is still accepted, and closed at once, so the peer
        // sees a clean refusal instead of hanging in the listen backlog.
        let permit = permits.clone().try_acquire_owned().ok();
        // Whichever listener has a connection first; when both do, select! picks at
        // random, so neither can starve the other.
        let (accepted, transport) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => (r, Transport::Plain),
            r = accept_opt(tls_listener.as_ref()) => (r, tls_transport.clone()),
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
        let Some(permit) = permit else {
            refused += 1;
            // Logged at powers of two so a flood cannot flood the log too.
            if refused.is_power_of_two() {
                warn!(%peer, refused, max = deps.settings.max_connections, "connection limit reached; refusing");
            }
            drop(stream);
            continue;
        };
        // A listed front end's connection starts with its PROXY header: read in the
        // connection's own task (the header may be slow; the accept loop must not wait),
        // then counted by the player's address.
        if deps.guards.is_front_end(peer.ip()) {
            let task = proxied_task(
                stream,
                peer,
                conn,
                deps.clone(),
                shutdown.clone(),
                permit,
                transport,
            );
            sessions.spawn(task);
            continue;
        }
        // Closed at once, like the global limit: one address cannot fill the server.
        let Some(slot) = take_address_slot(&deps, peer) else {
            drop(stream);
            continue;
        };
        let peer = Peer::direct(peer);
        let places = (permit, slot);
        sessions.spawn(connection_task(
            stream,
            peer,
            Bytes::new(),
            conn,
            deps.clone(),
            &shutdown,
            places,
            transport,
        ));
    }
    drop(listener);
    drop(tls_listener);
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

/// The next connection on `listener`, or never when there is none (the TLS listener when
/// it is off, in a `select!`).
async fn accept_opt(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A place under the player's address's cap, or `None` when it has its cap (logged at
/// powers of two, so a flood cannot flood the log too).
fn take_address_slot(deps: &Deps, peer: SocketAddr) -> Option<AddressSlot> {
    match deps.guards.addresses.take(peer.ip()) {
        Ok(slot) => Some(slot),
        Err(full) => {
            let refused = deps
                .guards
                .refused_by_address
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if refused.is_power_of_two() {
                warn!(%peer, refused, max = full.max, "per-address connection limit reached; refusing");
            }
            None
        }
    }
}

/// One connection, in its own span (`peer` is the player's address, `via` the front end
/// it came through, `tls` the version once a TLS handshake is done): the handshake first
/// for the TLS listener, then its session. The connection holds `places` throughout.
#[allow(clippy::too_many_arguments)] // one connection's whole context, passed once
fn connection_task(
    stream: TcpStream,
    peer: Peer,
    read_ahead: Bytes,
    conn: u64,
    deps: Arc<Deps>,
    shutdown: &CancellationToken,
    places: (OwnedSemaphorePermit, AddressSlot),
    transport: Transport,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // A root span: a proxied connection's session does not nest in the header's span.
    let span = info_span!(parent: None, "session", peer = %peer.addr, conn, via = field::Empty, tls = field::Empty, avatar = field::Empty);
    if let Some(front_end) = peer.via {
        span.record("via", field::display(front_end));
    }
    let shutdown = shutdown.child_token();
    async move {
        deps.connections.fetch_add(1, Ordering::Relaxed);
        match transport {
            Transport::Plain => {
                session::Session::new(stream, peer, deps.clone(), shutdown)
                    .with_read_ahead(read_ahead)
                    .run_logged(places)
                    .await
            }
            Transport::Tls { acceptor, timeout } => {
                // Bytes a front end sent after its PROXY header are the ClientHello's.
                let stream = encrypted::Rewound::new(read_ahead, stream);
                let handshake = tokio::select! {
                    _ = shutdown.cancelled() => None,
                    r = acceptor.accept(stream, timeout) => Some(r),
                };
                match handshake {
                    None => drop(places),
                    Some(Err(e)) => {
                        drop(places);
                        // One line per connection, as a plain connection's `connected`;
                        // openssl's reason or the time limit, never the client's bytes.
                        info!(error = %e, "no TLS session; connection closed");
                    }
                    Some(Ok(tls)) => {
                        tracing::Span::current()
                            .record("tls", field::display(tls.ssl().version_str()));
                        session::Session::new(tls, peer, deps.clone(), shutdown)
                            .encrypted()
                            .run_logged(places)
                            .await
                    }
                }
            }
        }
        deps.connections.fetch_sub(1, Ordering::Relaxed);
    }
    .instrument(span)
}

/// A connection from a listed front end: its PROXY header, then its connection as the
/// player's. Without a valid header it is refused: its player's address is unknown.
fn proxied_task(
    mut stream: TcpStream,
    front_end: SocketAddr,
    conn: u64,
    deps: Arc<Deps>,
    shutdown: CancellationToken,
    permit: OwnedSemaphorePermit,
    transport: Transport,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let span = info_span!("proxied", %front_end, conn);
    async move {
        let (header, read_ahead) = match proxied::read_header(&mut stream, proxied::HEADER_TIMEOUT, &shutdown).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                let refused = deps.guards.refused_front_end.fetch_add(1, Ordering::Relaxed) + 1;
                if refused.is_power_of_two() {
                    warn!(error = %e, refused, "connection from a front end listed in proxy_from without a valid PROXY header; refused");
                }
                return;
            }
        };
        // LOCAL (v2) and UNKNOWN (v1): the front end speaks for itself.
        let player = header.source.unwrap_or(front_end);
        let Some(slot) = take_address_slot(&deps, player) else {
            return;
        };
        let peer = Peer {
            addr: player,
            via: Some(front_end),
        };
        connection_task(stream, peer, read_ahead, conn, deps, &shutdown, (permit, slot), transport).await;
    }
    .instrument(span)
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
