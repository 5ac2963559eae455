//! The admin socket, over a real Unix socket in a temporary directory: permissions,
//! the debug switch round trip (and the watch the world listens to), stats, garbage,
//! limits, stale sockets, a second server, shutdown, and the client's errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use espmail::admin::{self, AdminError, AdminSocket, MAX_CONNECTIONS, MAX_LINE};
use espmail::log_redact::LogControl;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Running {
    _dir: tempfile::TempDir,
    path: PathBuf,
    control: LogControl,
    stats_calls: Arc<AtomicUsize>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let control = LogControl::standalone("info").unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let stats = admin::stats_fn(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        format!("connections=3 mail_waiting=7 stats_calls={n}")
    });
    let socket = AdminSocket::bind(&path).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(socket.serve(control.clone(), stats, shutdown.clone()));
    Running {
        _dir: dir,
        path,
        control,
        stats_calls: calls,
        shutdown,
        task,
    }
}

async fn stop(r: Running) -> PathBuf {
    r.shutdown.cancel();
    tokio::time::timeout(WAIT, r.task).await.unwrap().unwrap();
    r.path
}

/// A raw connection, to send what the client library never would.
struct Raw {
    read: BufReader<tokio::net::unix::OwnedReadHalf>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Raw {
    async fn connect(path: &Path) -> Raw {
        let (read, write) = UnixStream::connect(path).await.unwrap().into_split();
        Raw {
            read: BufReader::new(read),
            write,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    /// The next answer line; None if the server closed the connection.
    async fn line(&mut self) -> Option<String> {
        let mut s = String::new();
        let n = tokio::time::timeout(WAIT, self.read.read_line(&mut s))
            .await
            .unwrap()
            .unwrap();
        (n > 0).then_some(s)
    }
}

#[bounded]
#[tokio::test]
async fn socket_is_owner_only() {
    let r = start();
    let meta = std::fs::symlink_metadata(&r.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // No leftovers from the private directory the socket was made in.
    let names: Vec<_> = std::fs::read_dir(r.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("admin.sock")]);
    stop(r).await;
}

#[bounded]
#[tokio::test]
async fn debug_on_off_status_round_trip_and_watch_fires() {
    let r = start();
    let mut rx = r.control.subscribe();
    assert_eq!(
        admin::request(&r.path, "debug status").await.unwrap(),
        "debug logging is off (filter \"info\")"
    );
    assert_eq!(
        admin::request(&r.path, "debug on").await.unwrap(),
        "ok: debug logging is on (filter \"debug\")"
    );
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*rx.borrow_and_update());
    assert!(r.control.is_debug());
    assert_eq!(
        admin::request(&r.path, "debug status").await.unwrap(),
        "debug logging is on (filter \"debug\")"
    );
    assert_eq!(
        admin::request(&r.path, "  DEBUG   off ").await.unwrap(),
        "ok: debug logging is off (filter \"info\")"
    );
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(!*rx.borrow_and_update());
    assert!(!r.control.is_debug());
    stop(r).await;
}

#[bounded]
#[tokio::test]
async fn stats_come_from_the_callback() {
    let r = start();
    let a = admin::request(&r.path, "stats").await.unwrap();
    assert_eq!(a, "connections=3 mail_waiting=7 stats_calls=1");
    let b = admin::request(&r.path, "stats").await.unwrap();
    assert!(b.ends_with("stats_calls=2"), "{b}");
    assert_eq!(r.stats_calls.load(Ordering::SeqCst), 2);
    stop(r).await;
}

#[bounded]
#[tokio::test]
async fn garbage_gets_an_error_line_and_the_connection_keeps_serving() {
    let r = start();
    let mut c = Raw::connect(&r.path).await;
    c.send(b"make me admin\n").await;
    let a = c.line().await.unwrap();
    assert!(
        a.starts_with("error: unknown request \"make me admin\""),
        "{a}"
    );
    assert!(a.contains("debug on"), "the error lists the requests: {a}");
    c.send(b"\xff\xfe\x00\x01\n").await;
    assert!(c
        .line()
        .await
        .unwrap()
        .starts_with("error: request is not text"));
    c.send(b"\n").await;
    assert!(c.line().await.unwrap().starts_with("error: empty request"));
    c.send(b"debug sideways\r\n").await;
    assert!(c
        .line()
        .await
        .unwrap()
        .starts_with("error: unknown request"));
    // Same connection, still serving.
    c.send(b"debug status\r\n").await;
    assert_eq!(
        c.line().await.unwrap(),
        "debug logging is off (filter \"info\")\n"
    );
    assert!(!r.control.is_debug(), "garbage switched nothing");
    // Client library: an error line is an error.
    let err = admin::request(&r.path, "frobnicate").await.unwrap_err();
    assert!(matches!(err, AdminError::Rejected { .. }), "{err:?}");
    stop(r).await;
}

#[bounded]
#[tokio::test]
async fn an_overlong_line_is_answered_and_closed_and_the_server_goes_on() {
    let r = start();
    let mut c = Raw::connect(&r.path).await;
    c.send(&vec![b'a'; MAX_LINE * 4]).await;
    let a = c.line().await.unwrap();
    assert!(a.starts_with("error: request longer than"), "{a}");
    assert_eq!(c.line().await, None, "closed after the error");
    // A line of exactly MAX_LINE bytes is still a request (an unknown one).
    let mut c = Raw::connect(&r.path).await;
    let mut exact = vec![b'b'; MAX_LINE];
    exact.push(b'\n');
    c.send(&exact).await;
    assert!(c
        .line()
        .await
        .unwrap()
        .starts_with("error: unknown request"));
    assert_eq!(
        admin::request(&r.path, "debug on").await.unwrap(),
        "ok: debug logging is on (filter \"debug\")"
    );
    stop(r).await;
}

#[bounded]
#[tokio::test]
async fn connections_are_bounded() {
    let r = start();
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut c = Raw::connect(&r.path).await;
        // A round trip proves each one holds a permit.
        c.send(b"help\n").await;
        assert!(c.line().await.unwrap().starts_with("requests:"));
        held.push(c);
    }
    let err = admin::request(&r.path, "debug status").await.unwrap_err();
    match err {
        AdminError::Rejected { answer } => assert!(answer.starts_with("error: busy"), "{answer}"),
        other => panic!("expected busy, got {other:?}"),
    }
    held.pop();
    // The server notices the hang-up on its own; retry until the permit is back.
    let mut answer = None;
    for _ in 0..200 {
        match admin::request(&r.path, "debug status").await {
            Ok(a) => {
                answer = Some(a);
                break;
            }
            Err(AdminError::Rejected { .. }) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(answer.unwrap(), "debug logging is off (filter \"info\")");
    stop(r).await;
}

#[bounded]
#[tokio::test]
async fn shutdown_removes_the_socket_and_the_client_says_no_server() {
    let r = start();
    let path = stop(r).await;
    assert!(!path.exists());
    let err = admin::request(&path, "debug status").await.unwrap_err();
    assert!(matches!(err, AdminError::NotRunning { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!(
            "no espmail server is running at {}",
            path.display()
        )),
        "{shown}"
    );
    assert!(shown.contains("--data-dir"), "{shown}");
}

#[bounded]
#[tokio::test]
async fn stale_socket_is_replaced_but_a_live_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    // A socket file nobody listens on: what a killed server leaves.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let err = admin::request(&path, "debug status").await.unwrap_err();
    assert!(matches!(err, AdminError::NotRunning { .. }), "{err:?}");

    let first = AdminSocket::bind(&path).unwrap();
    let control = LogControl::standalone("info").unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(first.serve(
        control,
        admin::stats_fn(|| "x=1".to_owned()),
        shutdown.clone(),
    ));
    admin::request(&path, "debug status").await.unwrap();

    let err = AdminSocket::bind(&path).unwrap_err();
    assert!(matches!(err, AdminError::AlreadyRunning { .. }), "{err:?}");
    assert!(err.to_string().contains("already running"), "{err}");
    // The refused second server did not disturb the first.
    assert_eq!(admin::request(&path, "stats").await.unwrap(), "x=1");

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

#[bounded]
#[tokio::test]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    std::fs::write(&path, b"precious").unwrap();
    let err = AdminSocket::bind(&path).unwrap_err();
    assert!(matches!(err, AdminError::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[bounded]
#[tokio::test]
async fn client_refuses_multi_line_requests() {
    let err = admin::request(Path::new("/nonexistent/admin.sock"), "debug on\nstats")
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::BadRequest), "{err:?}");
}

#[bounded]
#[tokio::test]
async fn the_switch_is_logged_at_info_with_the_peer_uid() {
    use std::os::unix::fs::MetadataExt;
    use tracing::instrument::WithSubscriber;

    let dir = tempfile::tempdir().unwrap();
    let uid = std::fs::metadata(dir.path()).unwrap().uid();
    let path = dir.path().join("admin.sock");
    let capture = espmail::log_redact::Capture::new();
    let (dispatch, control) =
        espmail::log_redact::dispatch_with_writer("info", capture.clone()).unwrap();
    let socket = AdminSocket::bind(&path).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        socket
            .serve(control, admin::stats_fn(String::new), shutdown.clone())
            .with_subscriber(dispatch),
    );
    admin::request(&path, "debug on").await.unwrap();
    admin::request(&path, "debug off").await.unwrap();
    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    let log = capture.contents();
    for action in ["debug on", "debug off"] {
        assert!(
            log.lines().any(|l| l.contains(" INFO ")
                && l.contains(&format!("who=\"uid={uid}\""))
                && l.contains(&format!("action=\"{action}\""))),
            "{action} not logged with uid={uid}:\n{log}"
        );
    }
}

#[test]
fn bind_works_before_the_runtime_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let socket = AdminSocket::bind(&path).unwrap();
    assert_eq!(socket.path(), path);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let control = LogControl::standalone("info").unwrap();
        let task = tokio::spawn(socket.serve(
            control,
            admin::stats_fn(|| "ok=1".to_owned()),
            shutdown.clone(),
        ));
        assert_eq!(admin::request(&path, "stats").await.unwrap(), "ok=1");
        shutdown.cancel();
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    });
}
