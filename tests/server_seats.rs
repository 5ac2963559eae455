//! Issue 10, M2: an unauthenticated connection holds no seat in the world, and no one
//! address fills the server. Refused connections never take noids; the few connections at
//! the in-world password prompt hold seats only under a cap of their own, and only for a
//! while; connections per address are capped, except for listed addresses.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{
    client_from, connect_from, enter_from, front_end_from, trusted_config, TestServer, WAIT,
};
use espmail::talk::ClientError;
use espmail_test_macros::bounded;
use futures_util::future::join_all;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The real C64's handshake probe (a bad CRC on purpose): link bytes, not a packet.
const PROBE: &[u8] = b"Z\x31\x42\x91\x40\x7f\x7e\x26\r";

#[bounded]
#[tokio::test]
async fn two_hundred_refused_connections_take_no_seat() {
    let server = TestServer::start_with_config(&trusted_config(&["127.0.0.2"]), &[]);
    // 200 connections from untrusted addresses: refused at their login line; each sends
    // the probe (so its link has started) but never a packet.
    let mut refused = Vec::new();
    for i in 0..200u32 {
        let local = format!("127.0.{}.{}", 1 + i / 200, 10 + i % 200);
        let mut c = client_from(&local, server.addr, &format!("Ghost {i}"), None).await;
        c.stream().write_all(PROBE).await.unwrap();
        refused.push(c);
    }
    server.wait_for_log_count("login refused", 200);

    // A real player, from the trusted front end, gets a seat: the first there is.
    let first = front_end_from("127.0.0.2", server.addr, "Ann").await;
    assert_eq!(first.me, 1, "noids 1 and 2: the refused hold none");

    // The refused now get their answer, and are closed.
    let answers = join_all(refused.iter_mut().map(|c| c.im_alive())).await;
    for answer in answers {
        match answer {
            Err(ClientError::Refused(text)) => assert_eq!(text, "Wrong name or password."),
            other => panic!("not refused: {other:?}"),
        }
    }
    for closed in join_all(refused.iter_mut().map(|c| c.wait_closed())).await {
        closed.unwrap();
    }
    let second = front_end_from("127.0.0.2", server.addr, "Ben").await;
    assert_eq!(second.me, 3);
}

#[bounded]
#[tokio::test]
async fn seats_at_the_password_prompt_are_few() {
    let server = TestServer::start_with_config("[server]\nmax_unauthenticated_seats = 2\n", &[]);
    common::register(&server, "Ann").await;
    // Two logins without a password (the real C64's): alive, drawn with a real noid.
    let mut ann = client_from("127.0.0.2", server.addr, "Ann", None).await;
    ann.im_alive().await.unwrap();
    ann.describe().await.unwrap();
    assert_ne!(ann.me, 0xff);
    let mut ben = client_from("127.0.0.3", server.addr, "Ben", None).await;
    ben.im_alive().await.unwrap();
    ben.describe().await.unwrap();
    assert_ne!(ben.me, 0xff);
    // The third has no seat to be asked in, and is told so.
    let mut cy = client_from("127.0.0.4", server.addr, "Cy", None).await;
    match cy.im_alive().await {
        Err(ClientError::Refused(text)) => {
            assert_eq!(text, "Too many logins at once; try again in a minute.")
        }
        other => panic!("not refused: {other:?}"),
    }
    cy.wait_closed().await.unwrap();
    // With a password in the line, nobody waits for a prompt: no cap.
    let _dee = enter_from("127.0.0.5", server.addr, "Dee", Some("dee-password")).await;

    // Ann answers her prompt: her seat is an avatar's like any other now, and a place at
    // the prompt is free again.
    ann.here_i_am().await.unwrap();
    let prompt = ann
        .wait_for(|e| matches!(e, espmail::talk::Event::Prompt(_)))
        .await
        .unwrap();
    assert_eq!(prompt.text().unwrap(), b"Password: ");
    ann.answer(b"Password: ", b"ann-password").await.unwrap();
    // Ann registering, Dee, and now Ann again.
    server.wait_for_log_count("entered the Plaza", 3);
    let mut eve = client_from("127.0.0.6", server.addr, "Eve", None).await;
    eve.im_alive().await.unwrap();
}

#[bounded]
#[tokio::test]
async fn a_seat_before_login_lapses() {
    let server = TestServer::start_with_config(
        "[server]\nmax_unauthenticated_seats = 1\nlogin_timeout_secs = 2\n",
        &[],
    );
    // Drawn, then silent: no HERE_I_AM, so never asked. The seat goes back.
    let mut idle = client_from("127.0.0.2", server.addr, "Ann", None).await;
    idle.im_alive().await.unwrap();
    idle.describe().await.unwrap();
    idle.wait_closed().await.unwrap();
    server.wait_for_log("no HERE_I_AM before the login timeout");
    let mut next = client_from("127.0.0.3", server.addr, "Ben", None).await;
    next.im_alive().await.unwrap();
}

/// Whether the server ends `stream` at once: the read sees the end (or a reset) before
/// anything else.
async fn refused_at_once(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[bounded]
#[tokio::test]
async fn one_address_gets_its_cap_of_connections_and_no_more() {
    let server = TestServer::start_with_config("[server]\nmax_connections_per_address = 3\n", &[]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", server.addr).await);
    }
    server.wait_for_log_count("peer=127.0.0.2:", 3);
    let mut fourth = connect_from("127.0.0.2", server.addr).await;
    assert!(
        refused_at_once(&mut fourth).await,
        "the fourth is closed at once"
    );
    server.wait_for_log("per-address connection limit reached");
    // Another address is not affected.
    let mut other = enter_from("127.0.0.3", server.addr, "Ben", Some("ben-password")).await;
    assert!(!other.speak(b"in").await.unwrap());
    // One of the three leaves: its place comes back.
    drop(held.pop());
    server.wait_for_log("disconnected");
    let mut again = enter_from("127.0.0.2", server.addr, "Ann", Some("ann-password")).await;
    assert!(!again.speak(b"in too").await.unwrap());
}
