//! `serve`'s TLS listener itself (issue 12; ESPMAIL.md §6): SIGHUP puts a new certificate
//! in force for new connections while a session on the old one keeps going, and a bad new
//! pair is refused with the old one kept; a client that opens TLS and stalls is dropped at
//! the handshake time limit without holding anyone else up; the plain-connection notice
//! goes to a player in the clear from another host, and to nobody else.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::SocketAddr;

use common::tls::{make_pair, start_tls_server, Pair};
use common::{connect_from, pw, round_trip, texts, TestServer, WAIT};
use espmail::talk::Client;
use espmail::tls::client::{Connector, Verify};
use espmail::tls::Fingerprint;
use espmail_test_macros::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NOTICE: &str = "Notice: this connection is not encrypted.";

/// A TLS connection to the server's TLS listener that accepts only `pin`, or why not.
async fn tls_to(
    addr: SocketAddr,
    pin: &Fingerprint,
) -> Result<Client<impl espmail::talk::Transport>, String> {
    let connector = Connector::new(&Verify::Pin(*pin), WAIT).map_err(|e| e.to_string())?;
    let stream = connector
        .connect(&addr.to_string())
        .await
        .map_err(|e| e.to_string())?;
    Ok(Client::from_stream(stream))
}

/// Logs `name` in over TLS pinned to `pin`, all the way into the Plaza.
async fn enter_tls(
    addr: SocketAddr,
    pin: &Fingerprint,
    name: &str,
) -> Client<impl espmail::talk::Transport> {
    let connector = Connector::new(&Verify::Pin(*pin), WAIT).unwrap();
    let stream = connector.connect(&addr.to_string()).await.unwrap();
    Client::handshake(stream, name, Some(&pw(name)))
        .await
        .unwrap()
        .into_plaza()
        .await
        .unwrap()
}

/// Copies `from`'s certificate and key over `to`'s files (what a renewal does).
fn replace_files(from: &Pair, to: &Pair) {
    std::fs::copy(&from.paths.cert, &to.paths.cert).unwrap();
    std::fs::copy(&from.paths.key, &to.paths.key).unwrap();
}

#[bounded]
#[tokio::test]
async fn sighup_puts_a_new_certificate_in_force_and_keeps_the_old_one_when_the_new_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_pair(dir.path(), "server", "localhost");
    let new = make_pair(dir.path(), "renewed", "localhost");
    let server = start_tls_server(&old, "", "", &[]);
    let addr = server.tls_addr();
    let mut alice = enter_tls(addr, &old.fingerprint, "Alice").await;

    // The renewal: new files at the configured paths, then SIGHUP.
    replace_files(&new, &old);
    server.signal("HUP");
    server.wait_for_log("SIGHUP: TLS certificate reloaded");
    // New connections get the new certificate (the old pin no longer matches)...
    let mut bob = enter_tls(addr, &new.fingerprint, "Bob").await;
    assert!(
        tls_to(addr, &old.fingerprint).await.is_err(),
        "the old certificate is still served to new connections"
    );
    // ...and Alice's session, on the old one, keeps going: she speaks, Bob hears.
    assert!(!alice.speak(b"still here").await.unwrap());
    bob.wait_text("still here").await.unwrap();

    // A bad pair (a key that is not a key) is refused; the renewed certificate stays.
    std::fs::write(&old.paths.key, b"not a key").unwrap();
    server.signal("HUP");
    server.wait_for_log("SIGHUP: new TLS certificate refused; the one in force stays");
    let _carol = enter_tls(addr, &new.fingerprint, "Carol").await;
    assert_eq!(
        server.log_count("SIGHUP: TLS certificate reloaded"),
        1,
        "{}",
        server.log()
    );
}

#[bounded]
#[tokio::test]
async fn a_stalled_handshake_is_dropped_at_the_time_limit_and_holds_nobody_up() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "server", "localhost");
    let server = start_tls_server(&pair, "", "handshake_timeout_secs = 1\n", &[]);
    let addr = server.tls_addr();
    // One client opens TCP to the TLS port and sends half a ClientHello, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let opened = std::time::Instant::now();
    // Meanwhile a player logs in over TLS as if nothing were wrong.
    let _alice = enter_tls(addr, &pair.fingerprint, "Alice").await;
    // The stalled one is closed by the server: its read ends (EOF or reset), in time.
    let mut buf = [0u8; 64];
    let ended = tokio::time::timeout(WAIT, stalled.read(&mut buf)).await;
    assert!(ended.is_ok(), "the stalled handshake was never dropped");
    assert!(
        opened.elapsed() >= std::time::Duration::from_millis(900),
        "dropped before its time limit ({:?})",
        opened.elapsed()
    );
    server.wait_for_log("no TLS session; connection closed");
}

/// A plain connection from the listed front end 127.0.0.2 carrying a PROXY v1 header for a
/// player at `player`, then `name`'s login line; all the way into the Plaza.
async fn enter_proxied(server: &TestServer, player: &str, name: &str) -> Client {
    let mut stream = connect_from("127.0.0.2", server.addr).await;
    stream
        .write_all(format!("PROXY TCP4 {player} 127.0.0.1 40000 1986\r\n").as_bytes())
        .await
        .unwrap();
    Client::handshake(stream, name, Some(&pw(name)))
        .await
        .unwrap()
        .into_plaza()
        .await
        .unwrap()
}

/// What `c` is shown up to the answer of a SPEAK sent now (the login lines come first).
async fn login_lines(c: &mut Client<impl espmail::talk::Transport>) -> Vec<String> {
    texts(&round_trip(c).await)
}

#[bounded]
#[tokio::test]
async fn the_plain_notice_goes_to_players_in_the_clear_from_elsewhere_only() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "server", "localhost");
    let front = "[server]\nproxy_from = [\"127.0.0.2\"]\n";
    let server = start_tls_server(&pair, front, "", &[]);
    // From another host (the PROXY header's address), in the clear: told.
    let mut far = enter_proxied(&server, "203.0.113.9", "Faraway").await;
    let lines = login_lines(&mut far).await;
    assert!(lines.iter().any(|l| l == NOTICE), "{lines:?}");
    // From this host, in the clear: the bytes never leave the machine.
    let mut near = Client::enter(&server.host(), "Nearby", Some(&pw("Nearby")))
        .await
        .unwrap();
    assert!(!login_lines(&mut near).await.iter().any(|l| l == NOTICE));
    // Over TLS: encrypted, so nothing to say.
    let mut secure = enter_tls(server.tls_addr(), &pair.fingerprint, "Secure").await;
    assert!(!login_lines(&mut secure).await.iter().any(|l| l == NOTICE));

    // plain_notice = false: nobody is told.
    let quiet = start_tls_server(&pair, front, "plain_notice = false\n", &[]);
    let mut far = enter_proxied(&quiet, "203.0.113.9", "Faraway").await;
    assert!(!login_lines(&mut far).await.iter().any(|l| l == NOTICE));
}

/// `espmail init --tls HOSTNAME` (issue 12): a self-signed pair (key 0600) at the default
/// paths, the fingerprint players pin (what `openssl x509 -fingerprint -sha256` prints),
/// kept as it is by a second run; a server given that pair is reached with that pin.
#[bounded]
#[tokio::test]
async fn init_tls_makes_a_pair_whose_fingerprint_players_pin() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let init = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_espmail"))
            .args(["init", "--tls", "localhost", "--data-dir"])
            .arg(&data)
            .env_remove("ESPMAIL_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = init();
    let pin_of = |text: &str| -> String {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("players pin: "))
            .unwrap_or_else(|| panic!("no pin in {text}"));
        line.trim().to_owned()
    };
    let pin = pin_of(&first);
    let cert = data.join("tls").join("server.crt");
    let key = data.join("tls").join("server.key");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&data.join("tls")), 0o700);
    // The fingerprint is openssl's own, colons and all.
    let openssl = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output()
        .unwrap();
    let theirs = String::from_utf8(openssl.stdout).unwrap();
    let theirs = theirs.trim().rsplit('=').next().unwrap().to_owned();
    assert_eq!(pin, format!("sha256:{theirs}"));
    // Run again: already set up, the pair kept, the same pin.
    let cert_bytes = std::fs::read(&cert).unwrap();
    let second = init();
    assert!(second.contains("already set up"), "{second}");
    assert!(second.contains("was kept"), "{second}");
    assert_eq!(pin_of(&second), pin);
    assert_eq!(std::fs::read(&cert).unwrap(), cert_bytes);

    // The server with that pair, reached by a player pinning it.
    let cfg = tmp.path().join("espmail.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
            cert, key
        ),
    )
    .unwrap();
    let server = TestServer::start_in(&data, &["--config", cfg.to_str().unwrap()]);
    let fingerprint = Fingerprint::parse_pin(&pin).unwrap();
    let _alice = enter_tls(server.tls_addr(), &fingerprint, "Alice").await;
}

/// A TLS connection counts under its address's cap from the moment it is accepted, its
/// handshake included: stalled handshakes from one address cannot take more than that
/// address's places, and another address is not held up.
#[bounded]
#[tokio::test]
async fn stalled_handshakes_count_under_their_addresss_cap() {
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "server", "localhost");
    let server = start_tls_server(
        &pair,
        "[server]\nmax_connections_per_address = 2\n",
        "handshake_timeout_secs = 30\n",
        &[],
    );
    let addr = server.tls_addr();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        stalled.push(connect_from("127.0.0.2", addr).await);
    }
    // The third from that address is closed at once, without a handshake.
    let mut third = connect_from("127.0.0.2", addr).await;
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(WAIT, third.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the third connection was not closed: {closed:?}"
    );
    // Another address (127.0.0.1) logs in over TLS meanwhile.
    let _alice = enter_tls(addr, &pair.fingerprint, "Alice").await;
    drop(stalled);
}
