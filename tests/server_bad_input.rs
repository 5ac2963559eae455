//! Bad input never panics and never costs another avatar anything: garbage, bad CRCs,
//! oversized frames, frames before the login line, requests on noids not owned, SPEAK
//! before DESCRIBE, prompt replies with no prompt, and 10,000 ESP lines in a burst. And it
//! costs a counter, not a log line (issue 10, M1): a megabyte of junk grows the log by a
//! few lines and gets its connection closed, before or after a refused login.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{contains_bytes, speech_reaches, TestServer, WAIT};
use espmail::log_redact::Sensitive;
use espmail::protocol::frame::{Command, Frame};
use espmail::protocol::messages::ClientRequest;
use espmail::talk::{Client, ClientError};
use tokio::io::AsyncWriteExt;

/// Bob and Mallory, both in the Plaza.
async fn bob_and_mallory(server: &TestServer) -> (Client, Client) {
    let bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();
    let m = Client::enter(&server.host(), "Mallory", Some("mallory-password"))
        .await
        .unwrap();
    (bob, m)
}

/// Bob is still connected and served: a SPEAK gets its reply.
async fn still_served(bob: &mut Client) {
    assert!(!bob.speak(b"still here").await.unwrap());
}

#[bounded]
#[tokio::test]
async fn garbage_and_broken_frames_cost_only_themselves() {
    let server = TestServer::start(&[]);
    let (mut bob, mut m) = bob_and_mallory(&server).await;

    // Garbage, a bad CRC (answered with a NAK, the link stays up), an oversized frame.
    m.stream()
        .write_all(b"\x00\xff garbage \x0d")
        .await
        .unwrap();
    m.stream()
        .write_all(b"Z\x31\x42\x91\x40\x7f\x7e\x26\x0d")
        .await
        .unwrap();
    let mut big = vec![b'Z'; 400];
    big.push(0x0d);
    m.stream().write_all(&big).await.unwrap();
    // A Habitat payload that is not a packet, and a SPEAK on a noid Mallory does not own.
    m.send_action(Bytes::from_static(b"U")).await.unwrap();
    m.request(
        bob.me,
        ClientRequest::Speak {
            audience: 0,
            text: Sensitive::new(b"I am Bob".to_vec()),
        },
    )
    .await
    .unwrap();
    // A prompt reply with no prompt pending: dropped without a word and without a log
    // line (unsolicited replies must not be a way to write to the log).
    m.answer(b"ESP Mail to Bob? (Y/N) ", b"Y").await.unwrap();

    // Mallory's own session still works (so the reply above has been handled), and Bob
    // never heard "I am Bob".
    speech_reaches(&mut m, &mut bob, b"after the noise").await;
    still_served(&mut bob).await;
    // The first bad input is named; the rest is counted, and summed up at the end. The
    // bad CRC above is the C64's own handshake probe: not bad input.
    server.wait_for_log("bad input from this connection; more is counted, not logged");
    m.quit().await.unwrap();
    m.wait_closed().await.unwrap();
    let summary = server.wait_for_log("bad input this session");
    assert!(
        summary.contains("counts=frame=2 packet=1 split=0 request=0 not_owned=1"),
        "{summary}"
    );
    let log = server.log();
    assert!(!log.contains("panicked"));
    assert!(!log.contains("prompt reply"), "{log}");
    assert_eq!(server.log_count("bad input"), 2, "{log}");
}

#[bounded]
#[tokio::test]
async fn requests_before_login_or_describe_are_ignored() {
    let server = TestServer::start(&[]);
    let mut bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();

    // Q-Link frames before any login line: no name, so no session; the server stays up.
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    raw.write_all(b"Z\x11\x42\xb1\x42\x11\x10\x20U\xe0\x00\x03200\x00\x0d")
        .await
        .unwrap();
    raw.write_all(&[b'x'; 600]).await.unwrap();
    raw.write_all(b"\r").await.unwrap();
    server.wait_for_log("bad login preamble");

    // SPEAK before DESCRIBE: ignored (the region was never described).
    let mut early = Client::connect(&server.host(), "Early", Some("early-password"))
        .await
        .unwrap();
    early.im_alive().await.unwrap();
    early
        .request(
            1,
            ClientRequest::Speak {
                audience: 0,
                text: Sensitive::new(b"too soon".to_vec()),
            },
        )
        .await
        .unwrap();
    // Counted, and the session goes on: it answers DESCRIBE.
    server.wait_for_log("kind=not_owned");
    early.describe().await.unwrap();
    still_served(&mut bob).await;
}

#[bounded]
#[tokio::test]
async fn a_burst_of_ten_thousand_esp_lines_does_not_cost_the_recipient() {
    let server = TestServer::start(&[]);
    let (mut bob, mut m) = bob_and_mallory(&server).await;
    assert!(m.speak(b"TO:Bob").await.unwrap());
    // Fire 10,000 ESP requests without reading anything back.
    let me = m.me;
    for i in 0..10_000u32 {
        let text = format!("ESP:flood {i}");
        let sent = m
            .request(
                me,
                ClientRequest::Esp {
                    audience: 0,
                    text: Sensitive::new(text.into_bytes()),
                },
            )
            .await;
        if sent.is_err() {
            break; // the server may close a sender that never reads its replies
        }
    }
    // Bob got some of it, stays connected and served, and was never counted slow.
    bob.wait_text("flood 0").await.unwrap();
    still_served(&mut bob).await;
    assert!(!server.log().contains("disconnecting slow session"));
    server.wait_for_log("lines coming too fast; dropping them");
    let flood_lines = {
        let mut n = 0;
        bob.wait = std::time::Duration::from_millis(300);
        while let Ok(e) = bob.next_event().await {
            if e.text().is_some_and(|t| contains_bytes(t, b"flood")) {
                n += 1;
            }
        }
        n
    };
    assert!(
        flood_lines < 100,
        "the flood was not throttled: {flood_lines}"
    );
}

/// One round of mixed junk, about 450 bytes: garbage, a bad CRC (not the C64's probe), a
/// frame too short, an oversized one, and a well-formed Action whose payload is not a
/// Habitat packet.
fn junk_round(i: u32) -> Vec<u8> {
    let mut out = b"\x00\xff garbage \x0d".to_vec();
    out.extend_from_slice(b"Z\x41\x42\x43\x44\x11\x10\x20U\xe0\x00\x07hi\x0d");
    out.extend_from_slice(b"Z\x0d");
    out.extend_from_slice(&[b'Z'; 300]);
    out.push(0x0d);
    let frame = Frame {
        send: 0x11 + (i % 0x30) as u8,
        recv: 0x10,
        cmd: Command::ACTION,
        payload: Bytes::from_static(b"\x55\xe0"),
    };
    out.extend_from_slice(&frame.to_bytes());
    out.push(0x0d);
    out
}

/// Writes junk rounds to `c` until `limit` bytes were sent or the server closed the
/// connection; true when it closed. Keeps going for at most `WAIT`.
async fn flood(c: &mut Client, limit: usize) -> bool {
    let start = Instant::now();
    let mut sent = 0;
    let mut round = 0;
    while sent < limit && start.elapsed() < WAIT {
        let junk = junk_round(round);
        round += 1;
        if c.stream().write_all(&junk).await.is_err() {
            return true;
        }
        sent += junk.len();
    }
    false
}

/// Whether the server closes `c` (reads end, or writes fail) while junk keeps coming, a
/// round every 20 ms, for at most `WAIT`.
async fn closed_while_flooding(c: &mut Client) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let start = Instant::now();
    let mut round = 0;
    while start.elapsed() < WAIT {
        tick.tick().await;
        if c.stream().write_all(&junk_round(round)).await.is_err() {
            return true;
        }
        round += 1;
    }
    false
}

#[bounded]
#[tokio::test]
async fn a_megabyte_of_junk_costs_a_few_log_lines_and_the_connection() {
    const MB: usize = 1 << 20;
    let server = TestServer::start(&[]);
    let mut bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();

    // In the Plaza: malformed packets and speech on Bob's noid, then a megabyte of junk.
    let mut m = Client::enter(&server.host(), "Mallory", Some("mallory-password"))
        .await
        .unwrap();
    let before = server.log().lines().count();
    for _ in 0..100 {
        m.send_action(Bytes::from_static(b"U")).await.unwrap();
        let speech = ClientRequest::Speak {
            audience: 0,
            text: Sensitive::new(b"I am Bob".to_vec()),
        };
        m.request(bob.me, speech).await.unwrap();
    }
    let closed = flood(&mut m, MB).await || m.wait_closed().await.is_ok();
    assert!(closed, "a connection sending only junk is closed");
    server.wait_for_log("closed: too much bad input");
    still_served(&mut bob).await;

    // Refused (the login line is read once the link's first bytes follow it), then junk
    // before its answer: the same.
    let mut r = Client::connect(&server.host(), "Bob", Some("wrong-password"))
        .await
        .unwrap();
    assert!(flood(&mut r, MB).await || r.wait_closed().await.is_ok());
    server.wait_for_log_count("login refused", 1);
    server.wait_for_log_count("closed: too much bad input", 2);

    // Refused and answered: junk afterwards is not even counted, and it does not keep
    // the connection open past the refusal's linger.
    let mut a = Client::connect(&server.host(), "Bob", Some("wrong-password-2"))
        .await
        .unwrap();
    match a.im_alive().await {
        Err(ClientError::Refused(text)) => assert_eq!(text, "Wrong name or password."),
        other => panic!("not refused: {other:?}"),
    }
    // (The megabyte may outlast the linger on a busy machine: then it is closed already.)
    let _ = flood(&mut a, MB).await;
    assert!(
        closed_while_flooding(&mut a).await,
        "the refusal closes anyway"
    );

    still_served(&mut bob).await;
    let grew = server.log().lines().count() - before;
    // Per connection: connected, the login refusal (two lines), the first bad input, the
    // close for too much of it, disconnected; three connections of junk in all.
    assert!(
        grew <= 20,
        "the log grew by {grew} lines:\n{}",
        server.log()
    );
    assert_eq!(server.log_count("bad input from this connection"), 2);
}
