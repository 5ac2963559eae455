//! `espmail tunnel` as the player runs it (the real binary), in front of the real `espmail
//! serve`'s TLS listener. The whole ESP Mail story works through it, and a relay between
//! the two sees no password and no text in any form; a server that fails the check (wrong
//! pin, wrong host, unknown CA, expired, refused, stalled) gets none of the player's bytes
//! and the tunnel says why. A stand-in TLS front built with the library's acceptor stays
//! only where the real server cannot play the part: an echo (to push bytes both ways)
//! and a server still running a certificate that has expired (`serve` refuses to load
//! one).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::time::Duration;

use common::tls::{
    make_pair, make_pair_between, now_unix, start_tls_server, Behind, Recorder, Relay, TestTunnel,
    TlsFront,
};
use common::{contains_bytes, leave_esp_mail, pw, texts, TestServer, WAIT};
use espmail::log_redact::leak_forms;
use espmail::talk::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn enter(via: &TestTunnel, name: &str) -> Client {
    Client::enter(&via.host(), name, Some(&pw(name)))
        .await
        .unwrap()
}

/// The old client's first bytes: the login line with the password in it.
const LOGIN: &[u8] =
    b"{\"to\":\"bridge\",\"op\":\"LOGIN\",\"name\":\"Alice\",\"password\":\"alice-password\"}\r\r";

/// An old client connects to the tunnel and sends its login line; the tunnel closes it
/// (the server failed the check) without a byte in return.
async fn refused_client(tunnel: &TestTunnel) {
    let mut c = TcpStream::connect(tunnel.addr).await.unwrap();
    c.write_all(LOGIN).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, c.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the tunnel did not close the connection");
    assert!(buf.is_empty(), "the tunnel answered {buf:?}");
}

/// Sessions the server ran over TLS (its `connected` lines carry the TLS version), and
/// handshakes that failed.
fn tls_sessions(server: &TestServer) -> (usize, usize) {
    let log = server.log();
    let sessions = log
        .lines()
        .filter(|l| l.contains("tls=TLSv1.3}") && l.ends_with(" connected"))
        .count();
    (sessions, log.matches("no TLS session").count())
}

#[bounded]
#[tokio::test]
async fn the_esp_mail_story_works_through_the_tunnel_and_the_wire_shows_none_of_it() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let pair = make_pair(dir.path(), "server", "localhost");
        let server = start_tls_server(&pair, "", "", &[]);
        // What anyone on the network between the player's machine and the server sees.
        let wire = Relay::start(server.tls_addr());
        let tunnel = TestTunnel::start(
            &wire.addr.to_string(),
            &["--pin", &pair.fingerprint.to_pin()],
        );

        let mut bob = enter(&tunnel, "Bob").await;
        bob.quit().await.unwrap();
        bob.wait_closed().await.unwrap();
        drop(bob); // the old client hangs up: the tunnel passes the close on
        let canary = "canary-51d0 through the tunnel";
        let mut alice = enter(&tunnel, "Alice").await;
        leave_esp_mail(&mut alice, "Bob", canary.as_bytes()).await;
        alice.quit().await.unwrap();
        alice.wait_closed().await.unwrap();
        drop(alice);

        let mut bob = Client::connect(&tunnel.host(), "Bob", Some(&pw("Bob")))
            .await
            .unwrap();
        bob.im_alive().await.unwrap();
        bob.describe().await.unwrap();
        bob.here_i_am().await.unwrap();
        let seen = bob
            .collect_until(|e| e.text() == Some(canary.as_bytes()))
            .await
            .unwrap();
        let lines = texts(&seen);
        assert!(
            lines.iter().any(|l| l.starts_with("ESP Mail from Alice, ")),
            "{seen:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("not encrypted")),
            "a player over TLS is not told the connection is in the clear: {lines:?}"
        );
        server.wait_for_log("delivered ESP Mail acked and deleted");
        bob.quit().await.unwrap();
        bob.wait_closed().await.unwrap();
        drop(bob);

        // All three sessions ran over TLS 1.3 on the server's own listener.
        server.wait_for_log_count(" disconnected", 3);
        assert_eq!(tls_sessions(&server), (3, 0), "{}", server.log());
        tunnel.wait_for_lines(" closed (", 3);
        let log = tunnel.log();
        assert_eq!(
            log.matches("(TLSv1.3, pinned certificate)").count(),
            3,
            "{log}"
        );
        assert!(
            !log.contains("canary"),
            "relayed bytes on the console: {log}"
        );
        assert!(
            !log.contains("password"),
            "relayed bytes on the console: {log}"
        );

        // The wire: three TLS connections with real traffic each way, and no secret in
        // any form (as it is, quoted, escaped, hex, a byte list) in either direction.
        let relayed = wire.seen.wait_until("three relays ended", |r| r.done == 3);
        assert_eq!(relayed.up.len(), 3);
        for (up, down) in relayed.up.iter().zip(&relayed.down) {
            assert_eq!(up.first(), Some(&0x16), "each starts with a TLS handshake");
            assert_eq!(down.first(), Some(&0x16));
            assert!(
                up.len() > LOGIN.len() && down.len() > 200,
                "{} {}",
                up.len(),
                down.len()
            );
        }
        let (alice_pw, bob_pw) = (pw("Alice"), pw("Bob"));
        let secrets: [&[u8]; 6] = [
            canary.as_bytes(),
            b"canary-51d0",
            alice_pw.as_bytes(),
            bob_pw.as_bytes(),
            b"LOGIN",
            b"ESP Mail",
        ];
        for secret in secrets {
            for form in leak_forms(secret) {
                for bytes in relayed.all() {
                    assert!(
                        !contains_bytes(bytes, form.as_bytes()),
                        "{form:?} crossed the wire in the clear"
                    );
                }
            }
        }
    })
    .await
    .unwrap();
}

#[bounded]
#[tokio::test]
async fn several_players_share_one_tunnel_at_once() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let pair = make_pair(dir.path(), "server", "127.0.0.1");
        let server = start_tls_server(&pair, "", "", &[]);
        // --ca with the server's own certificate, and its IP address as the host name.
        let tunnel = TestTunnel::start(
            &server.tls_addr().to_string(),
            &["--ca", pair.paths.cert.to_str().unwrap()],
        );
        let names = ["Ann", "Ben", "Cat", "Dan"];
        let mut clients = futures_util::future::join_all(names.map(|n| enter(&tunnel, n))).await;
        // All four are in the Plaza together: live ESP from the first reaches the last.
        let last = names[3];
        assert!(clients[0]
            .speak(format!("TO:{last}").as_bytes())
            .await
            .unwrap());
        assert!(clients[0].esp(b"hello through one tunnel").await.unwrap());
        clients[3]
            .wait_for(|e| e.text() == Some(b"hello through one tunnel"))
            .await
            .unwrap();
        for mut c in clients {
            c.quit().await.unwrap();
            c.wait_closed().await.unwrap();
        }
        server.wait_for_log_count(" disconnected", 4);
        assert_eq!(tls_sessions(&server), (4, 0), "{}", server.log());
        tunnel.wait_for_lines("certificate checked against --ca", 4);
    })
    .await
    .unwrap();
}

#[bounded]
#[tokio::test]
async fn bytes_flow_both_ways_with_half_close_and_backpressure() {
    tokio::time::timeout(Duration::from_secs(120), async {
        let dir = tempfile::tempdir().unwrap();
        let pair = make_pair(dir.path(), "server", "localhost");
        let front = TlsFront::start(&pair.paths, Behind::Echo);
        let tunnel = TestTunnel::start(
            &front.addr.to_string(),
            &[
                "--pin",
                &format!("sha256:{}", pair.fingerprint.to_string().replace(':', "")),
            ],
        );
        // 4 MiB is far more than the socket buffers and the relay's own buffers hold,
        // so it passes only if each side waits for the other instead of dropping bytes.
        let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
        let c = TcpStream::connect(tunnel.addr).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap(); // half-close: the echo must still come back whole
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "the echo differs from what was sent");
        tunnel.wait_for_line(&format!(
            "({} bytes sent, {} bytes received)",
            data.len(),
            data.len()
        ));
    })
    .await
    .unwrap();
}

/// The server saw `n` handshakes fail, and not one session began: none of the player's
/// bytes reached it.
fn only_failed_handshakes(server: &TestServer, n: usize) {
    server.wait_for_log_count("no TLS session", n);
    let log = server.log();
    assert_eq!(log.matches(" connected").count(), 0, "{log}");
    assert!(!log.contains("login line"), "{log}");
}

/// A wrong pin: the server sees a failed handshake and no session, and the tunnel prints
/// both fingerprints.
#[bounded]
#[tokio::test]
async fn a_wrong_pin_sends_nothing_and_shows_both_fingerprints() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let real = make_pair(dir.path(), "real", "localhost");
        let other = make_pair(dir.path(), "other", "localhost");
        let server = start_tls_server(&real, "", "", &[]);
        let tunnel = TestTunnel::start(
            &server.tls_addr().to_string(),
            &["--pin", &other.fingerprint.to_pin().to_lowercase()],
        );
        refused_client(&tunnel).await;
        let line = tunnel.wait_for_line("wrong certificate");
        assert!(
            line.contains(&format!("expected sha256:{}", other.fingerprint)),
            "{line}"
        );
        assert!(
            line.contains(&format!("got sha256:{}", real.fingerprint)),
            "{line}"
        );
        assert!(line.contains("nothing was sent"), "{line}");
        only_failed_handshakes(&server, 1);
    })
    .await
    .unwrap();
}

/// With --ca, a certificate for another host, or one that has expired, is refused; so is
/// one no trusted CA signed.
#[bounded]
#[tokio::test]
async fn wrong_host_expired_and_unknown_ca_send_nothing_and_say_why() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let now = now_unix();
        let wrong_host = make_pair(dir.path(), "wrong-host", "127.0.0.2");
        let server = start_tls_server(&wrong_host, "", "", &[]);
        for (case, ca, needle) in [
            (
                "wrong host",
                Some(&wrong_host),
                "is for 127.0.0.2, not for 127.0.0.1",
            ),
            ("unknown CA", None, "not signed by a CA trusted here"),
        ] {
            let args: Vec<&str> = match ca {
                Some(p) => vec!["--ca", p.paths.cert.to_str().unwrap()],
                None => vec![],
            };
            let tunnel = TestTunnel::start(&server.tls_addr().to_string(), &args);
            refused_client(&tunnel).await;
            let line = tunnel.wait_for_line("nothing was sent");
            assert!(line.contains(needle), "{case}: {line}");
            if case == "unknown CA" {
                assert!(
                    line.contains(&format!("showed sha256:{}", wrong_host.fingerprint)),
                    "{line}"
                );
            }
        }
        only_failed_handshakes(&server, 2);

        // `serve` refuses to load an expired certificate, so a server whose certificate
        // ran out while it was running is played by the stand-in front, forced to use one.
        let expired = make_pair_between(
            dir.path(),
            "expired",
            "127.0.0.1",
            now - 40 * 86_400,
            now - 86_400,
        );
        let behind = Recorder::start();
        let front = TlsFront::start_unchecked(&expired.paths, Behind::Forward(behind.addr));
        let tunnel = TestTunnel::start(
            &front.addr.to_string(),
            &["--ca", expired.paths.cert.to_str().unwrap()],
        );
        refused_client(&tunnel).await;
        let line = tunnel.wait_for_line("nothing was sent");
        assert!(line.contains("certificate expired on"), "{line}");
        front.seen.wait_until("expired", |c| !c.failures.is_empty());
        assert_eq!(front.seen.now().handshakes, 0);
        assert_eq!(behind.seen.now().connections, 0);
    })
    .await
    .unwrap();
}

/// A server that accepts TCP and never answers the handshake: the tunnel gives up at
/// --connect-timeout, and the only bytes the server got are the TLS ClientHello.
#[bounded]
#[tokio::test]
async fn a_stalled_server_times_out_and_sees_only_the_client_hello() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let stalled = Recorder::start();
        let tunnel = TestTunnel::start(
            &stalled.addr.to_string(),
            &[
                "--pin",
                &format!("sha256:{}", "00".repeat(32)),
                "--connect-timeout",
                "1",
            ],
        );
        refused_client(&tunnel).await;
        let line = tunnel.wait_for_line("did not finish the TLS handshake within 1 s");
        assert!(line.contains("nothing was sent"), "{line}");
        let got = stalled.seen.now();
        assert_eq!(got.connections, 1);
        assert_eq!(got.bytes.first(), Some(&0x16), "a TLS handshake record");
        assert!(!contains_bytes(&got.bytes, b"alice-password"));
        assert!(!contains_bytes(&got.bytes, b"LOGIN"));
    })
    .await
    .unwrap();
}

#[bounded]
#[tokio::test]
async fn a_closed_port_is_reported_as_refused() {
    tokio::time::timeout(Duration::from_secs(60), async {
        // Bind and drop: a port that was free a moment ago and has no listener now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let tunnel = TestTunnel::start(
            &format!("127.0.0.1:{port}"),
            &["--pin", &format!("sha256:{}", "00".repeat(32))],
        );
        refused_client(&tunnel).await;
        let line = tunnel.wait_for_line("refused the connection");
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    })
    .await
    .unwrap();
}

#[test]
fn bad_start_options_fail_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, [0x30, 0x82, 0x01, 0x00]).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let pin = format!("sha256:{}", "00".repeat(32));
    let bare = "00".repeat(32);
    for (args, code, needle) in [
        (
            vec!["h:1", "--ca", not_pem.to_str().unwrap()],
            1,
            "not in PEM format",
        ),
        (
            vec!["h:1", "--ca", "/nonexistent/ca.pem"],
            1,
            "/nonexistent/ca.pem",
        ),
        (vec!["no-port", "--pin", &pin], 1, "HOST:PORT"),
        (
            vec!["h:1", "--pin", &pin, "--listen", &taken],
            1,
            "cannot listen on",
        ),
        (vec!["h:1", "--pin", "sha256:00:11"], 2, "64 hex digits"),
        (vec!["h:1", "--pin", &bare], 2, "starts with \"sha256:\""),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_espmail"))
            .arg("tunnel")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("listening on"), "{args:?}: {err}");
    }
}

/// The recorded C64 session (tests/vectors, `c64_recorded`) through `espmail tunnel` into
/// the TLS listener gets byte for byte the answers it gets on the plain listener
/// (tests/server_c64.rs replays the same on the plain one): the tunnel and TLS change
/// nothing a 1988 client can see. Trusted mode: the tunnel's connection comes from this
/// host, as the C64's front end would.
#[bounded]
#[tokio::test]
async fn the_recorded_c64_session_through_the_tunnel_is_answered_as_on_the_plain_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "server", "localhost");
    let server = start_tls_server(&pair, &common::trusted_config(&["127.0.0.1"]), "", &[]);
    let tunnel = TestTunnel::start(
        &server.tls_addr().to_string(),
        &["--pin", &pair.fingerprint.to_pin()],
    );
    let stream = TcpStream::connect(tunnel.addr).await.unwrap();
    common::c64::replay_recorded_session(stream).await;
    assert_eq!(server.log_count("bad input"), 0, "{}", server.log());
    assert_eq!(tls_sessions(&server).0, 1, "{}", server.log());
}
