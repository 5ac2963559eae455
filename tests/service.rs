//! `espmail serve` under a service manager, with the real binary: readiness over
//! `NOTIFY_SOCKET` (systemd's `Type=notify`), absolute paths in the settings it logs, and
//! the logging an operator's tools expect: `RUST_LOG` as the starting filter (players told
//! when it means debug) and the log file reopened on SIGHUP after logrotate moved it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use common::{Launch, TestServer, WAIT};
use espmail::log_redact::DEBUG_NOTICE;
use espmail::talk::Client;

/// How often a file written by the server is looked at again (stderr gets each line a
/// moment before the log file does); every such wait is bounded by [`WAIT`].
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// The next datagram on `sock` (bounded by its read timeout), as text.
fn next_datagram(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn ready_is_sent_on_notify_socket_when_listening_and_stopping_at_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut server = TestServer::start_with(
        &tmp.path().join("data"),
        &[],
        Launch {
            env: &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
            ..Launch::default()
        },
    );
    let ready = next_datagram(&sock);
    let lines: Vec<&str> = ready.lines().collect();
    assert!(lines.contains(&"READY=1"), "{ready:?}");
    assert!(
        lines.contains(&format!("STATUS=listening on {}", server.addr).as_str()),
        "{ready:?}"
    );
    // Ready means ready: a player can connect now.
    std::net::TcpStream::connect(server.addr).unwrap();

    server.signal("TERM");
    let stopping = next_datagram(&sock);
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(server.wait_exit().success());
}

#[test]
fn a_notify_socket_nobody_listens_on_does_not_stop_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let gone = tmp.path().join("nobody-here.sock");
    let server = TestServer::start_with(
        &tmp.path().join("data"),
        &[],
        Launch {
            env: &[("NOTIFY_SOCKET", gone.to_str().unwrap())],
            ..Launch::default()
        },
    );
    let line = server.wait_for_log("could not notify the service manager");
    assert!(line.contains("READY=1"), "{line}");
    std::net::TcpStream::connect(server.addr).unwrap();
}

#[test]
fn settings_show_absolute_paths_for_a_relative_data_dir_and_a_service_is_warned() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path().canonicalize().unwrap();
    let server = TestServer::start_with(
        Path::new("./rel"),
        &[],
        Launch {
            cwd: Some(&cwd),
            // As systemd sets it for every unit: a relative path there is worth a warning.
            env: &[("INVOCATION_ID", "0123456789abcdef")],
            ..Launch::default()
        },
    );
    let warning = server.wait_for_log("relative paths resolved against the working directory");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("keys=data.dir"), "{warning}");
    assert!(
        warning.contains(&format!("cwd={}", cwd.display())),
        "{warning}"
    );
    let line = server.wait_for_log("config data: ");
    let dir = cwd.join("rel");
    let expected = format!(
        "dir={} database={} keyfile={}",
        dir.display(),
        dir.join("espmail.db").display(),
        dir.join("keyfile").display()
    );
    assert!(line.contains(&expected), "{expected} not in {line}");
    let admin = server.wait_for_log("config logging: ");
    assert!(
        admin.contains(&format!(
            "admin_socket={}",
            dir.join("admin.sock").display()
        )),
        "{admin}"
    );
    assert!(dir.join("keyfile").is_file());
}

#[bounded]
#[tokio::test]
async fn rust_log_debug_turns_debug_on_and_players_are_told() {
    tokio::time::timeout(2 * WAIT, async {
        let tmp = tempfile::tempdir().unwrap();
        let server = TestServer::start_with(
            &tmp.path().join("data"),
            &[],
            Launch {
                env: &[("RUST_LOG", "debug")],
                ..Launch::default()
            },
        );
        server.wait_for_log("config logging: level=debug");
        let mut alice = Client::enter(&server.host(), "Alice", Some("alice-password"))
            .await
            .unwrap();
        alice.wait_text(DEBUG_NOTICE).await.unwrap();
        // Debug logging is really on: packets show as structure and fingerprint.
        server.wait_for_log("pkt=dir=");
        alice.quit().await.unwrap();

        // The file's level beats RUST_LOG: no debug, no notice.
        let tmp2 = tempfile::tempdir().unwrap();
        let cfg = tmp2.path().join("espmail.toml");
        std::fs::write(&cfg, "[logging]\nlevel = \"info\"\n").unwrap();
        let server = TestServer::start_with(
            &tmp2.path().join("data"),
            &["--config", cfg.to_str().unwrap()],
            Launch {
                env: &[("RUST_LOG", "debug")],
                ..Launch::default()
            },
        );
        server.wait_for_log("config logging: level=info");
        let mut bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
            .await
            .unwrap();
        let events = common::round_trip(&mut bob).await;
        assert!(
            !common::texts(&events).iter().any(|t| t == DEBUG_NOTICE),
            "{events:?}"
        );
    })
    .await
    .unwrap();
}

#[test]
fn sighup_reopens_the_log_file_after_logrotate_moved_it() {
    let tmp = tempfile::tempdir().unwrap();
    // The log directory does not exist yet: serve makes it, 0700, like the data directory.
    let log = tmp.path().join("logs/espmail.log");
    let cfg = tmp.path().join("espmail.toml");
    std::fs::write(&cfg, format!("[logging]\nfile = \"{}\"\n", log.display())).unwrap();
    let server = TestServer::start_with(
        &tmp.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
        Launch::default(),
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tmp.path().join("logs")), 0o700);
    assert_eq!(mode(&log), 0o600);
    server.wait_for_log("config logging: ");
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("config logging: "));

    // logrotate: move the file away, then SIGHUP.
    let rotated = tmp.path().join("logs/espmail.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    server.signal("HUP");
    server.wait_for_log("SIGHUP: log file reopened");
    // The reopen line is written to the new file; wait for it there (bounded).
    let deadline = std::time::Instant::now() + WAIT;
    let fresh = loop {
        if let Ok(text) = std::fs::read_to_string(&log) {
            if text.contains("log file reopened") {
                break text;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new log file at {}",
            log.display()
        );
        std::thread::sleep(POLL);
    };
    assert_eq!(mode(&log), 0o600, "the new file is private too");
    assert!(!fresh.contains("config logging: "), "{fresh}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("config logging: "), "{old}");
    assert!(!old.contains("log file reopened"), "{old}");
    // Later lines keep going to the new file.
    server.signal("HUP");
    server.wait_for_log_count("SIGHUP: log file reopened", 2);
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_to_string(&log)
        .unwrap()
        .matches("log file reopened")
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "second reopen not in the new file"
        );
        std::thread::sleep(POLL);
    }
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("log file reopened"));
}
