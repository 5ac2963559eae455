//! Issue 10, M3's PROXY part: players behind a listed front end are counted by their own
//! address. A connection from an address in `[server] proxy_from` starts with a PROXY
//! header (v1 or v2); the login throttle, the per-address cap and the log's `peer` then
//! use the player's address. A header from an unlisted peer is never read; a listed front
//! end without one is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{connect_from, register, TestServer, WAIT};
use espmail::protocol::proxy::V2_SIGNATURE;
use espmail::talk::{Client, ClientError};
use espmail_test_macros::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FRONT_END: &str = "127.0.0.2";

/// A v1 header for a TCP client at `ip:port`.
fn v1(ip: &str, port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {ip} 127.0.0.1 {port} 1986\r\n").into_bytes()
}

/// A v2 header for a TCP client at `ip:port`.
fn v2(ip: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&ip);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&1986u16.to_be_bytes());
    h
}

/// A v2 LOCAL header: the front end speaks for itself (a health check).
fn v2_local() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0, 0]);
    h
}

/// A connection from `from` that starts with `header`, then the login line.
async fn through(
    server: &TestServer,
    from: &str,
    header: &[u8],
    name: &str,
    password: &str,
) -> Client {
    let mut stream = connect_from(from, server.addr).await;
    stream.write_all(header).await.unwrap();
    Client::handshake(stream, name, Some(password))
        .await
        .unwrap()
}

/// Logs in through the front end as `name`; `Ok` once alive, the refusal's text if not.
async fn login_through(
    server: &TestServer,
    header: &[u8],
    name: &str,
    password: &str,
) -> Result<Client, String> {
    let mut c = through(server, FRONT_END, header, name, password).await;
    match c.im_alive().await {
        Ok(()) => Ok(c),
        Err(ClientError::Refused(text)) => Err(text),
        Err(e) => panic!("{e}"),
    }
}

#[bounded]
#[tokio::test]
async fn the_throttle_counts_the_players_address_not_the_front_ends() {
    let server = TestServer::start_with_config("[server]\nproxy_from = [\"127.0.0.2\"]\n", &[]);
    register(&server, "Bob").await;
    register(&server, "Cyd").await;

    // Player A (v1 header) guesses Cyd's password five times.
    for i in 0..5u16 {
        let refused = login_through(&server, &v1("203.0.113.7", 4000 + i), "Cyd", "not-cyds").await;
        assert_eq!(refused.err().as_deref(), Some("Wrong name or password."));
    }
    // A's address is locked out now, even with Bob's right password...
    let a = login_through(&server, &v1("203.0.113.7", 4100), "Bob", "bob-password").await;
    assert!(a.is_err(), "A's address is throttled");
    let throttled = server.wait_for_log("login throttled");
    assert!(throttled.contains("peer=203.0.113.7"), "{throttled}");
    // ...while player B (v2 header), through the same front end, logs in.
    let mut b = login_through(&server, &v2([198, 51, 100, 9], 5000), "Bob", "bob-password")
        .await
        .expect("B is not locked out by A's guesses");
    b.describe().await.unwrap();
    b.here_i_am().await.unwrap();
    assert!(!b.speak(b"hello").await.unwrap());
    // The session's log names the player and the front end it came through.
    server.wait_for_log_count("entered the Plaza", 3);
    let log = server.log();
    let entered = log
        .lines()
        .find(|l| l.contains("entered the Plaza") && l.contains("peer=198.51.100.9:5000"))
        .unwrap_or_else(|| panic!("B's session is not under B's address:\n{log}"));
    assert!(entered.contains("via=127.0.0.2:"), "{entered}");
}

/// Whether the server ends `stream` without a word: the read sees the end, or a reset.
async fn ended(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[bounded]
#[tokio::test]
async fn the_per_address_cap_counts_players_behind_the_front_end() {
    let server = TestServer::start_with_config(
        "[server]\nproxy_from = [\"127.0.0.2\"]\nmax_connections_per_address = 2\n",
        &[],
    );
    // Two connections of player A, idle after their login line.
    let _a1 = through(
        &server,
        FRONT_END,
        &v1("203.0.113.7", 1),
        "Ann",
        "ann-password",
    )
    .await;
    let _a2 = through(
        &server,
        FRONT_END,
        &v1("203.0.113.7", 2),
        "Amy",
        "amy-password",
    )
    .await;
    server.wait_for_log_count("peer=203.0.113.7:", 2);
    // A third of A's is closed at once...
    let mut a3 = connect_from(FRONT_END, server.addr).await;
    a3.write_all(&v1("203.0.113.7", 3)).await.unwrap();
    assert!(ended(&mut a3).await, "A's third connection is refused");
    let refusal = server.wait_for_log("per-address connection limit reached");
    assert!(refusal.contains("peer=203.0.113.7:3"), "{refusal}");
    // ...while other players come through the same front end (its fourth and fifth).
    let mut b = login_through(&server, &v2([198, 51, 100, 9], 7), "Bob", "bob-password")
        .await
        .unwrap();
    b.describe().await.unwrap();
    let _c = login_through(&server, &v2([198, 51, 100, 10], 8), "Cyd", "cyd-password")
        .await
        .unwrap();
    // LOCAL: the front end speaking for itself counts as its own address.
    let _l1 = through(&server, FRONT_END, &v2_local(), "Lou", "lou-password").await;
    let _l2 = through(&server, FRONT_END, &v2_local(), "Lee", "lee-password").await;
    server.wait_for_log_count("peer=127.0.0.2:", 2);
    let mut l3 = connect_from(FRONT_END, server.addr).await;
    l3.write_all(&v2_local()).await.unwrap();
    assert!(
        ended(&mut l3).await,
        "the front end's own third connection is refused"
    );
}

#[bounded]
#[tokio::test]
async fn a_header_from_an_unlisted_peer_changes_nothing() {
    let server = TestServer::start_with_config("[server]\nproxy_from = [\"127.0.0.2\"]\n", &[]);
    // From 127.0.0.3, which is not listed: the header is a line before the login line,
    // skipped like any line that is not a login.
    let mut eve = through(
        &server,
        "127.0.0.3",
        &v1("203.0.113.7", 9),
        "Eve",
        "eve-password",
    )
    .await;
    eve.im_alive().await.unwrap();
    eve.describe().await.unwrap();
    eve.here_i_am().await.unwrap();
    let entered = server.wait_for_log("entered the Plaza");
    assert!(entered.contains("peer=127.0.0.3:"), "{entered}");
    assert!(!entered.contains("via="), "{entered}");
    assert!(!server.log().contains("203.0.113.7"), "{}", server.log());
}

#[bounded]
#[tokio::test]
async fn a_listed_front_end_without_a_header_is_refused() {
    let server = TestServer::start_with_config("[server]\nproxy_from = [\"127.0.0.2\"]\n", &[]);
    let mut stream = connect_from(FRONT_END, server.addr).await;
    stream
        .write_all(&espmail::talk::login_line("Ann", Some("ann-password")))
        .await
        .unwrap();
    assert!(ended(&mut stream).await, "refused");
    let line = server.wait_for_log("without a valid PROXY header; refused");
    assert!(line.contains("front_end=127.0.0.2:"), "{line}");
    assert!(line.contains("no PROXY header"), "{line}");
    // The front end's players with headers still get in.
    login_through(&server, &v1("203.0.113.7", 1), "Ann", "ann-password")
        .await
        .unwrap();
}
