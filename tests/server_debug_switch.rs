//! The runtime debug switch on the real server (issue 4): SIGHUP re-reads the level from
//! the config file; a login while debug logging is on is told so after HERE_I_AM, before
//! its mail, and not while it is off; the admin socket is owner-only, round-trips
//! `debug on|off|status`, answers garbage with an error line while players go on playing,
//! and `espmail admin` finds it by `--socket` and says plainly when no server runs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{alice_mails_bob, contains_bytes, register, round_trip, texts, TestServer, WAIT};
use espmail::log_redact::DEBUG_NOTICE;
use espmail::talk::Client;

const MAIL_COUNT: &str = "You have 1 ESP Mail (times UTC).";

fn write_config(path: &Path, level: &str, extra: &str) {
    std::fs::write(path, format!("[logging]\nlevel = \"{level}\"\n{extra}")).unwrap();
}

/// A server on its own directory with a config file the test may rewrite.
fn start_with_file(dir: &Path, level: &str, extra: &str) -> (TestServer, PathBuf) {
    let cfg = dir.join("espmail.toml");
    write_config(&cfg, level, extra);
    let server = TestServer::start_in(&dir.join("data"), &["--config", cfg.to_str().unwrap()]);
    (server, cfg)
}

/// `espmail admin debug status` by the socket path alone (a SIGHUP test breaks the
/// config file on purpose, and `admin` reads it too).
fn status(server: &TestServer) -> String {
    let sock = server.data_dir.join("admin.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args([
            "admin",
            "--socket",
            sock.to_str().unwrap(),
            "debug",
            "status",
        ])
        .output()
        .unwrap();
    let (code, out, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 0, "{out} {err}");
    out
}

async fn leave(mut c: Client) {
    c.quit().await.unwrap();
    c.wait_closed().await.unwrap();
}

#[bounded]
#[tokio::test]
async fn sighup_rereads_the_level_from_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, cfg) = start_with_file(tmp.path(), "info", "");
    let mut alice = Client::enter(&server.host(), "Alice", Some("alice-password"))
        .await
        .unwrap();
    assert!(status(&server).contains("debug logging is off"));
    assert_eq!(server.log_count("pkt=dir="), 0);

    // The file now says debug: SIGHUP puts it in force, players are told.
    write_config(&cfg, "debug", "");
    server.signal("HUP");
    alice.wait_text(DEBUG_NOTICE).await.unwrap();
    let line = server.wait_for_log("who=\"SIGHUP\" action=\"reload from config\"");
    assert!(line.contains("filter=debug"), "{line}");
    assert!(status(&server).contains("debug logging is on (filter \"debug\")"));
    round_trip(&mut alice).await;
    server.wait_for_log("pkt=dir=in cmd=Action");

    // A typo in the file: reported, nothing changes, the server goes on.
    std::fs::write(&cfg, "[logging]\nlevle = \"trace\"\n").unwrap();
    server.signal("HUP");
    let line = server.wait_for_log("SIGHUP: config not re-read; log filter unchanged");
    assert!(line.contains("levle"), "{line}");
    assert!(status(&server).contains("(filter \"debug\")"));

    // Back to warn: the debug lines stop (the switch is logged before it goes quiet).
    write_config(&cfg, "warn", "");
    server.signal("HUP");
    server.wait_for_log("filter=warn");
    assert!(status(&server).contains("debug logging is off (filter \"warn\")"));
    let before = server.log_count("pkt=dir=");
    round_trip(&mut alice).await;
    // A warn line written after the round trip: once it is read, every line the
    // session wrote during the round trip has been read too (one pipe, in order).
    std::fs::write(&cfg, "[logging]\nleve1 = \"debug\"\n").unwrap();
    server.signal("HUP");
    server.wait_for_log("`leve1`");
    assert_eq!(server.log_count("pkt=dir="), before, "{}", server.log());
    leave(alice).await;
}

#[bounded]
#[tokio::test]
async fn sighup_without_a_config_file_keeps_the_filter_and_the_server() {
    let server = TestServer::start(&["--debug"]);
    server.signal("HUP");
    let line = server.wait_for_log("SIGHUP: config not re-read");
    assert!(line.contains("without --config"), "{line}");
    assert!(status(&server).contains("debug logging is on"));
    let c = Client::enter(&server.host(), "Dana", Some("dana-password"))
        .await
        .unwrap();
    leave(c).await;
}

/// Alice leaves one ESP Mail for Bob (both registered by logging in).
async fn mail_for_bob(server: &TestServer, text: &str) {
    register(server, "Bob").await;
    alice_mails_bob(server, text).await;
}

/// Bob logs in, reads up to the mail text and acks it (it is deleted).
async fn bob_reads_mail(server: &TestServer, text: &str) -> Vec<String> {
    let mut bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();
    let needle = text.as_bytes().to_vec();
    let seen = bob
        .collect_until(|e| e.text().is_some_and(|t| contains_bytes(t, &needle)))
        .await
        .unwrap_or_else(|e| panic!("no mail ({e}); server log:\n{}", server.log()));
    server.wait_for_log("delivered ESP Mail acked and deleted");
    leave(bob).await;
    texts(&seen)
}

/// Whether a fresh login of `name` hears the notice: everything it is told after its
/// APPEAR up to the reply of a SPEAK (the notice, when sent, is queued at HERE_I_AM).
async fn login_hears_notice(server: &TestServer, name: &str) -> usize {
    let pw = format!("{}-password", name.to_lowercase());
    let mut c = Client::enter(&server.host(), name, Some(&pw))
        .await
        .unwrap();
    let seen = round_trip(&mut c).await;
    leave(c).await;
    texts(&seen).iter().filter(|l| *l == DEBUG_NOTICE).count()
}

fn switch(server: &TestServer, on_off: &str) {
    let (code, out, err) = server.cli(&["admin", "debug", on_off], "");
    assert_eq!(code, 0, "{out} {err}");
}

#[bounded]
#[tokio::test]
async fn a_login_is_told_while_debug_is_on_before_its_mail_and_not_while_off() {
    let server = TestServer::start(&[]);
    mail_for_bob(&server, "notice-order 5e1").await;

    // Off: a login hears nothing of it.
    assert_eq!(login_hears_notice(&server, "Carol").await, 0);

    // On: Bob hears the notice right after HERE_I_AM, before "You have 1 ESP Mail".
    switch(&server, "on");
    let lines = bob_reads_mail(&server, "notice-order 5e1").await;
    let notice = lines.iter().position(|l| l == DEBUG_NOTICE);
    let count = lines.iter().position(|l| l == MAIL_COUNT);
    assert!(
        notice.is_some() && count.is_some() && notice < count,
        "{lines:?}"
    );
    assert_eq!(notice, Some(0), "the notice is the first line: {lines:?}");
    assert_eq!(login_hears_notice(&server, "Carol").await, 1);

    // Off again: not any more. On again: a connected avatar is told at the switch, and
    // a login after it once, at login.
    switch(&server, "off");
    assert_eq!(login_hears_notice(&server, "Carol").await, 0);
    let mut dana = Client::enter(&server.host(), "Dana", Some("dana-password"))
        .await
        .unwrap();
    switch(&server, "on");
    dana.wait_text(DEBUG_NOTICE).await.unwrap();
    assert_eq!(login_hears_notice(&server, "Carol").await, 1);
    leave(dana).await;
}

/// One request line to the admin socket, one answer line back.
fn ask(conn: &mut BufReader<UnixStream>, line: &[u8]) -> String {
    conn.get_mut().write_all(line).unwrap();
    let mut answer = String::new();
    conn.read_line(&mut answer).unwrap();
    answer
}

#[bounded]
#[tokio::test]
async fn the_admin_socket_of_the_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("elsewhere.sock");
    let (mut server, _cfg) = start_with_file(
        tmp.path(),
        "info",
        &format!("admin_socket = \"{}\"\n", sock.display()),
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin socket mode");

    // Round trip through the command, finding the socket by --socket alone.
    let admin = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
            .arg("admin")
            .arg("--socket")
            .arg(&sock)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (args, expect) in [
        (&["debug", "status"][..], "debug logging is off"),
        (&["debug", "on"][..], "ok: debug logging is on"),
        (&["debug", "status"][..], "debug logging is on"),
        (&["debug", "off"][..], "ok: debug logging is off"),
        (
            &["debug", "status"][..],
            "debug logging is off (filter \"info\")",
        ),
    ] {
        let (code, out, err) = admin(args);
        assert_eq!(code, 0, "{args:?}: {out} {err}");
        assert!(out.contains(expect), "{args:?}: {out}");
    }
    // And by the config file's admin_socket.
    let (code, out, _) = server.cli(&["admin", "stats"], "");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("connections="), "{out}");

    // Garbage through the real socket: an error line, the connection still answers, and
    // players go on playing.
    let mut alice = Client::enter(&server.host(), "Alice", Some("alice-password"))
        .await
        .unwrap();
    let mut conn = BufReader::new(UnixStream::connect(&sock).unwrap());
    conn.get_mut().set_read_timeout(Some(WAIT)).unwrap();
    for garbage in [
        &b"frobnicate\n"[..],
        b"debug sideways\n",
        b"\xff\xfe\x00\n",
        b"\n",
    ] {
        let answer = ask(&mut conn, garbage);
        assert!(answer.starts_with("error:"), "{garbage:?}: {answer:?}");
    }
    assert!(ask(&mut conn, b"debug status\n").contains("debug logging is off"));
    drop(conn);
    let mut bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();
    assert!(!alice.speak(b"still here").await.unwrap());
    bob.wait_text("still here").await.unwrap();
    assert!(
        !status_via(&admin).contains("debug logging is on"),
        "garbage switched it"
    );
    leave(bob).await;
    leave(alice).await;

    // Stopped: the socket is gone and the command says so plainly, exiting non-zero.
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let (code, out, err) = admin(&["debug", "status"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("no espmail server is running"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one plain line: {err}");
}

fn status_via(admin: &impl Fn(&[&str]) -> (i32, String, String)) -> String {
    let (code, out, err) = admin(&["debug", "status"]);
    assert_eq!(code, 0, "{out} {err}");
    out
}
