//! The whole ESP Mail story over the real protocol against the real binary: offer,
//! prompt, durable save, delivery at the next login, deletion only after the client's
//! ack, at-least-once delivery when the line drops, and a restart in between.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{alice_mails_bob, contains_bytes, register, round_trip, texts, TestServer};
use espmail::talk::{Client, Event};
use espmail_test_macros::bounded;

const BOB_PW: &str = "bob-password";

/// Bob logs in and reads everything up to the text `until`.
async fn bob_reads(server: &TestServer, until: &str, ack: bool) -> (Client, Vec<Event>) {
    let mut bob = Client::connect(&server.host(), "Bob", Some(BOB_PW))
        .await
        .unwrap();
    bob.auto_ack = ack;
    bob.im_alive().await.unwrap();
    bob.describe().await.unwrap();
    bob.here_i_am().await.unwrap();
    let needle = until.as_bytes().to_vec();
    let seen = bob
        .collect_until(|e| e.text().is_some_and(|t| contains_bytes(t, &needle)))
        .await
        .unwrap();
    (bob, seen)
}

/// Logs Bob in and proves no mail is waiting: everything the server says after
/// HERE_I_AM up to the reply of a later SPEAK (which comes after any mail lines).
async fn bob_has_no_mail(server: &TestServer) {
    let mut bob = Client::enter(&server.host(), "Bob", Some(BOB_PW))
        .await
        .unwrap();
    let seen = round_trip(&mut bob).await;
    assert!(
        !seen
            .iter()
            .any(|e| e.text().is_some_and(|t| contains_bytes(t, b"ESP Mail"))),
        "no ESP Mail expected, got {seen:?}"
    );
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
}

#[bounded]
#[tokio::test]
async fn esp_mail_is_offered_saved_delivered_acked_and_deleted() {
    let server = TestServer::start(&["-d"]); // debug logging on: the hardest case
    register(&server, "Alice").await;
    register(&server, "Bob").await;

    let canary = "canary-7f3a9c meet me by the fountain";
    alice_mails_bob(&server, canary).await;

    // Nothing readable on disk: not the text, not the names.
    for (path, bytes) in server.data_files() {
        for needle in [canary.as_bytes(), b"Alice", b"alice", b"Bob", b"bob"] {
            assert!(
                !contains_bytes(&bytes, needle),
                "{} contains {:?}",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }

    let (mut bob, seen) = bob_reads(&server, canary, true).await;
    let lines = texts(&seen);
    let notice = lines
        .iter()
        .position(|l| l == "Notice: debug logging is on. ESP text is never logged.")
        .expect("debug notice at login");
    let count = lines
        .iter()
        .position(|l| l == "You have 1 ESP Mail (times UTC).")
        .expect("mail count line");
    let header = lines
        .iter()
        .position(|l| l.starts_with("ESP Mail from Alice, ") && l.ends_with(':'))
        .expect("header with the sender's name");
    let body = lines.iter().position(|l| l == canary).expect("the text");
    assert!(
        notice < count && count < header && header < body,
        "{lines:?}"
    );

    // Bob's client acked (auto_ack answers the server's Ping): the message is deleted.
    server.wait_for_log("delivered ESP Mail acked and deleted");
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
    bob_has_no_mail(&server).await;

    assert!(
        !server.log().contains("canary-7f3a9c"),
        "message text reached the log"
    );
}

#[bounded]
#[tokio::test]
async fn mail_read_but_not_acked_comes_again_then_is_deleted() {
    let server = TestServer::start(&[]);
    register(&server, "Alice").await;
    register(&server, "Bob").await;
    let text = "at-least-once 41c2";
    alice_mails_bob(&server, text).await;

    // Bob's client shows the mail but never acks, then the line drops.
    let (bob, seen) = bob_reads(&server, text, false).await;
    assert!(texts(&seen).iter().any(|l| l == text));
    drop(bob);
    server.wait_for_log("disconnected");
    assert_eq!(server.log_count("delivered ESP Mail acked and deleted"), 0);

    // Next login: delivered again, acked this time, and then gone.
    let (mut bob, seen) = bob_reads(&server, text, true).await;
    assert!(texts(&seen).contains(&"You have 1 ESP Mail (times UTC).".to_string()));
    server.wait_for_log("delivered ESP Mail acked and deleted");
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
    bob_has_no_mail(&server).await;
}

#[bounded]
#[tokio::test]
async fn a_restart_between_sending_and_delivery_loses_nothing() {
    let server = TestServer::start(&[]);
    register(&server, "Alice").await;
    register(&server, "Bob").await;
    let text = "survives-a-crash 9d01";
    alice_mails_bob(&server, text).await;

    // SIGKILL: no graceful shutdown, then start again on the same data directory.
    let server = server.restart();
    let (mut bob, seen) = bob_reads(&server, text, true).await;
    assert!(texts(&seen)
        .iter()
        .any(|l| l.starts_with("ESP Mail from Alice, ")));
    server.wait_for_log("delivered ESP Mail acked and deleted");
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
    bob_has_no_mail(&server).await;
}
