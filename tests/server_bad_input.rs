//! Bad input never panics and never costs another avatar anything: garbage, bad CRCs,
//! oversized frames, frames before the login line, requests on noids not owned, SPEAK
//! before DESCRIBE, prompt replies with no prompt, and 10,000 ESP lines in a burst.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bytes::Bytes;
use common::{contains_bytes, speech_reaches, TestServer};
use espmail::log_redact::Sensitive;
use espmail::protocol::messages::ClientRequest;
use espmail::talk::Client;
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
    server.wait_for_log("request on a noid this avatar does not own ignored");

    // Mallory's own session still works (so the reply above has been handled), and Bob
    // never heard "I am Bob".
    speech_reaches(&mut m, &mut bob, b"after the noise").await;
    still_served(&mut bob).await;
    let log = server.log();
    assert!(!log.contains("panicked"));
    assert!(!log.contains("prompt reply"), "{log}");
}

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
    server.wait_for_log("request on a noid this avatar does not own ignored");
    still_served(&mut bob).await;
}

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
