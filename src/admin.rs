//! The admin socket: a Unix socket, owner-only (mode 0600), through which `espmail admin`
//! switches debug logging of the running server and reads its counters.
//!
//! Who may ask is decided by the file system: only the server's user can open the
//! socket, so there is no password to leak and no request from anyone else to refuse.
//! The peer's uid (`SO_PEERCRED`) still goes into the info log line of every switch.
//!
//! The protocol is one request line, one answer line:
//!
//! | request        | answer                                             |
//! |----------------|----------------------------------------------------|
//! | `debug on`     | `ok: debug logging is on (filter "debug")`         |
//! | `debug off`    | `ok: debug logging is off (filter "info")`         |
//! | `debug status` | `debug logging is on|off (filter "…")`             |
//! | `stats`        | the server's one-line counters                     |
//! | `help`         | the list of requests                               |
//! | anything else  | `error: …` (the connection stays usable)           |
//!
//! Requests are bounded ([`MAX_LINE`] bytes; a longer one is answered and the connection
//! closed), so are connections ([`MAX_CONNECTIONS`] at once; more get `error: busy`) and
//! idle time ([`IDLE_TIMEOUT`]). Nothing a client sends can affect the server beyond the
//! requests above.
//!
//! Wiring it up in `serve` (with the SIGHUP reload and the world's notice beside it):
//!
//! ```no_run
//! # async fn wire(config_file: Option<std::path::PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
//! use espmail::{admin, config::Config, log_redact};
//! use tokio_util::sync::CancellationToken;
//!
//! let config = Config::load(config_file.as_deref(), &Default::default())?;
//! let control = log_redact::init(&config.logging.log_options())?;
//! let shutdown = CancellationToken::new();
//!
//! let socket = admin::AdminSocket::bind(&config.admin_socket_path())?;
//! let stats = admin::stats_fn(|| "connections=0 mail_waiting=0".to_owned());
//! tokio::spawn(socket.serve(control.clone(), stats, shutdown.clone()));
//!
//! let reread = move || match &config_file {
//!     Some(path) => Config::read(path).and_then(|c| c.logging.starting_level(None)),
//!     None => Ok(Config::default().logging.level_or_default().to_owned()),
//! };
//! tokio::spawn(log_redact::reload_on_sighup(control.clone(), reread, shutdown.clone())?);
//!
//! // The world: tell every connected avatar when debug logging goes on.
//! let mut debug = control.subscribe();
//! while debug.changed().await.is_ok() {
//!     if *debug.borrow_and_update() {
//!         // send log_redact::DEBUG_NOTICE to everyone online
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! May touch: the admin socket file, [`LogControl`], the stats callback. Nothing else.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::instrument::WithSubscriber;
use tracing::{debug, info, warn};

use crate::log_redact::LogControl;

/// Longest request line accepted, in bytes (the longest real one is 12).
pub const MAX_LINE: usize = 256;
/// Admin connections served at once.
pub const MAX_CONNECTIONS: usize = 4;
/// An admin connection silent this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the client waits for the server's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer line the client reads.
const MAX_ANSWER: usize = 4096;

const COMMANDS: &str = "requests: debug on, debug off, debug status, stats";

/// Why the admin socket could not be served or asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Nothing listens at the socket path.
    #[error(
        "no espmail server is running at {} (is it started? is --data-dir right?)",
        path.display()
    )]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
    },
    /// Another server answers on the socket path: refuse to start a second one.
    #[error(
        "another espmail server is already running: its admin socket {} answers \
         (stop it first, or give this one another data directory)",
        path.display()
    )]
    AlreadyRunning {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket sits at the socket path.
    #[error(
        "{} exists and is not a socket; move it away or set logging.admin_socket \
         to another path",
        path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// The socket exists but this user may not open it.
    #[error(
        "permission denied on admin socket {}: run this as the user the server runs as",
        path.display()
    )]
    PermissionDenied {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be created.
    #[error("cannot create admin socket {}: {source}", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Talking over the socket failed.
    #[error("admin socket {}: {source}", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The server did not answer in time.
    #[error("the server at {} did not answer within {} s", path.display(), CLIENT_TIMEOUT.as_secs())]
    Timeout {
        /// The socket path.
        path: PathBuf,
    },
    /// The server closed the connection without answering.
    #[error("the server at {} closed the connection without answering", path.display())]
    NoAnswer {
        /// The socket path.
        path: PathBuf,
    },
    /// The server answered with an `error: …` line.
    #[error("{answer}")]
    Rejected {
        /// The server's line.
        answer: String,
    },
    /// The request is not one line, or too long.
    #[error("a request is one line of at most {MAX_LINE} bytes")]
    BadRequest,
}

/// The server's counters for `stats`. The server implements this; the admin socket
/// only calls it. The answer must be one line with counts only, never names or text.
pub trait AdminStats: Send + Sync {
    /// One line of counters, e.g. `connections=3 online=2 mail_waiting=7`.
    fn stats_line(&self) -> BoxFuture<'_, String>;
}

/// Adapts a plain closure into [`AdminStats`], for counters that need no waiting.
pub struct FnStats<F>(pub F);

impl<F> AdminStats for FnStats<F>
where
    F: Fn() -> String + Send + Sync,
{
    fn stats_line(&self) -> BoxFuture<'_, String> {
        let line = (self.0)();
        Box::pin(async move { line })
    }
}

/// `Arc<dyn AdminStats>` from a closure.
pub fn stats_fn<F>(f: F) -> Arc<dyn AdminStats>
where
    F: Fn() -> String + Send + Sync + 'static,
{
    Arc::new(FnStats(f))
}

/// A bound admin socket, mode 0600, ready to [`serve`](AdminSocket::serve).
#[derive(Debug)]
pub struct AdminSocket {
    /// Kept as a std listener until `serve` runs inside the runtime, so `bind` works
    /// (and cannot panic) outside one.
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created, so shutdown removes only ours.
    id: (u64, u64),
}

impl AdminSocket {
    /// Creates the socket at `path` with mode 0600. A socket file left by a server that
    /// is gone is replaced; if a server answers there, this fails with
    /// [`AdminError::AlreadyRunning`].
    pub fn bind(path: &Path) -> Result<AdminSocket, AdminError> {
        remove_if_stale(path)?;
        let bind_err = |source: io::Error| AdminError::Bind {
            path: path.to_owned(),
            source,
        };
        // The socket is made in a fresh 0700 directory, narrowed to 0600 there, then
        // linked into place: at no moment can another user reach it, without touching
        // the process-wide umask (other threads may be creating files) and without
        // unsafe code. `hard_link` (unlike rename) refuses to replace a path that a
        // second server created meanwhile.
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        static SERIAL: AtomicU32 = AtomicU32::new(0);
        let tmp_dir = parent.join(format!(
            ".admin-{}-{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp_dir)
            .map_err(bind_err)?;
        let tmp_sock = tmp_dir.join("s");
        let result = (|| {
            let std_listener = std::os::unix::net::UnixListener::bind(&tmp_sock)?;
            std::fs::set_permissions(&tmp_sock, std::fs::Permissions::from_mode(0o600))?;
            std::fs::hard_link(&tmp_sock, path)?;
            std_listener.set_nonblocking(true)?;
            Ok::<_, io::Error>(std_listener)
        })();
        // Best effort: the directory is private and empty-able; leftovers are harmless.
        let _ = std::fs::remove_file(&tmp_sock);
        let _ = std::fs::remove_dir(&tmp_dir);
        let std_listener = result.map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                AdminError::AlreadyRunning {
                    path: path.to_owned(),
                }
            } else {
                bind_err(e)
            }
        })?;
        let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
        Ok(AdminSocket {
            listener: std_listener,
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers requests until `shutdown` is cancelled, then waits for open admin
    /// connections to finish (they are cancelled too) and removes the socket file.
    pub async fn serve(
        self,
        control: LogControl,
        stats: Arc<dyn AdminStats>,
        shutdown: CancellationToken,
    ) {
        let AdminSocket { listener, path, id } = self;
        let listener = match UnixListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "admin socket not served");
                remove_if_ours(&path, id);
                return;
            }
        };
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let tasks = TaskTracker::new();
        info!(path = %path.display(), "admin socket listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "admin socket accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            };
            let who = match stream.peer_cred() {
                Ok(cred) => format!("uid={}", cred.uid()),
                Err(_) => "uid=unknown".to_owned(),
            };
            match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let conn = Connection {
                        control: control.clone(),
                        stats: stats.clone(),
                        who,
                        shutdown: shutdown.clone(),
                    };
                    // A connection logs through the subscriber this task runs under:
                    // the global one in the server, a test's own in tests.
                    tasks.spawn(
                        async move {
                            conn.run(stream).await;
                            drop(permit);
                        }
                        .with_current_subscriber(),
                    );
                }
                Err(_) => {
                    debug!(who, "admin connection refused: too many open");
                    tasks.spawn(async move {
                        let mut stream = stream;
                        let line = format!(
                            "error: busy: {MAX_CONNECTIONS} admin connections are open; \
                             try again\n"
                        );
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            stream.write_all(line.as_bytes()),
                        )
                        .await;
                    });
                }
            }
        }
        tasks.close();
        tasks.wait().await;
        remove_if_ours(&path, id);
        info!(path = %path.display(), "admin socket closed");
    }
}

/// Removes the socket file if it is still the one we created (not a successor's).
fn remove_if_ours(path: &Path, id: (u64, u64)) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if (meta.dev(), meta.ino()) == id {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Removes a socket file nobody answers on; refuses if someone does, or if the path is
/// not a socket.
fn remove_if_stale(path: &Path) -> Result<(), AdminError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(AdminError::Bind {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(AdminError::NotASocket {
            path: path.to_owned(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(AdminError::AlreadyRunning {
            path: path.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            info!(path = %path.display(), "removing stale admin socket");
            std::fs::remove_file(path).map_err(|source| AdminError::Bind {
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(AdminError::Bind {
            path: path.to_owned(),
            source,
        }),
    }
}

struct Connection {
    control: LogControl,
    stats: Arc<dyn AdminStats>,
    who: String,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, stream: UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut buf = Vec::new();
            // The line, its newline, and one byte more to tell "too long" apart.
            let limited = (&mut read).take(MAX_LINE as u64 + 2);
            let got = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = tokio::time::timeout(IDLE_TIMEOUT, read_line(limited, &mut buf)) => r,
            };
            let (answer, close) = match got {
                Err(_) => (
                    format!("error: idle for {} s; closing", IDLE_TIMEOUT.as_secs()),
                    true,
                ),
                Ok(Err(_)) | Ok(Ok(0)) => return,
                Ok(Ok(_)) if buf.strip_suffix(b"\n").unwrap_or(&buf).len() > MAX_LINE => (
                    format!("error: request longer than {MAX_LINE} bytes; closing"),
                    true,
                ),
                Ok(Ok(_)) => match std::str::from_utf8(&buf) {
                    Ok(line) => (self.answer(line.trim()).await, false),
                    Err(_) => (format!("error: request is not text; {COMMANDS}"), false),
                },
            };
            let mut line = answer.replace(['\n', '\r'], " ");
            line.push('\n');
            let sent = tokio::time::timeout(IDLE_TIMEOUT, write.write_all(line.as_bytes())).await;
            if close || !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
    }

    async fn answer(&self, request: &str) -> String {
        let words: Vec<String> = request
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let switch = |on: bool| match self.control.set_debug(on, &self.who) {
            Ok(status) => format!("ok: {status}"),
            Err(e) => format!("error: {e}"),
        };
        match words.as_slice() {
            ["debug", "on"] => switch(true),
            ["debug", "off"] => switch(false),
            ["debug"] | ["debug", "status"] => self.control.status().to_string(),
            ["stats"] => {
                info!(who = %self.who, "admin stats");
                self.stats.stats_line().await
            }
            ["help"] => COMMANDS.to_owned(),
            [] => format!("error: empty request; {COMMANDS}"),
            _ => {
                // The request is from the server's own user, but is still kept short
                // and escaped so an odd byte cannot break the one-line answer.
                let shown: String = request.chars().take(40).collect();
                debug!(who = %self.who, len = request.len(), "unknown admin request");
                format!(
                    "error: unknown request \"{}\"; {COMMANDS}",
                    shown.escape_default()
                )
            }
        }
    }
}

/// Reads up to and including `\n` (or to EOF / the reader's limit).
async fn read_line<R>(mut reader: R, buf: &mut Vec<u8>) -> io::Result<usize>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    reader.read_until(b'\n', buf).await
}

/// Sends one request to the server at `socket` and returns its answer line (without the
/// newline). An `error: …` answer is returned as [`AdminError::Rejected`]; no server at
/// the path is [`AdminError::NotRunning`].
pub async fn request(socket: &Path, line: &str) -> Result<String, AdminError> {
    if line.contains(['\n', '\r']) || line.len() > MAX_LINE {
        return Err(AdminError::BadRequest);
    }
    let io_err = |source: io::Error| AdminError::Io {
        path: socket.to_owned(),
        source,
    };
    let stream = match UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => {
            return Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    AdminError::NotRunning {
                        path: socket.to_owned(),
                    }
                }
                io::ErrorKind::PermissionDenied => AdminError::PermissionDenied {
                    path: socket.to_owned(),
                },
                _ => io_err(e),
            })
        }
    };
    let exchange = async {
        let (read, mut write) = stream.into_split();
        write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(io_err)?;
        let mut buf = Vec::new();
        let mut limited = BufReader::new(read).take(MAX_ANSWER as u64);
        limited.read_until(b'\n', &mut buf).await.map_err(io_err)?;
        Ok::<_, AdminError>(buf)
    };
    let buf = tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| AdminError::Timeout {
            path: socket.to_owned(),
        })??;
    if buf.is_empty() {
        return Err(AdminError::NoAnswer {
            path: socket.to_owned(),
        });
    }
    let answer = String::from_utf8_lossy(&buf).trim_end().to_owned();
    if answer.starts_with("error:") {
        return Err(AdminError::Rejected { answer });
    }
    Ok(answer)
}
