//! Graceful shutdown while ESP Mail saves are pending: SIGTERM right after many senders
//! answered `Y`. Whatever a sender was told "saved" must be there after a restart on the
//! same data directory, and nothing appears that was not sent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::collections::BTreeSet;

use common::{contains_bytes, round_trip, trusted_config, TestServer, FRONT_END_SECRET};
use espmail::talk::{Client, ClientError, Event};

/// Trusted front end on loopback: logins cost no scrypt, so many senders are quick.
const SENDERS: usize = 20;

/// Everything Bob is shown at login, answering `Y` to every Next prompt; returns the
/// message texts that start with `prefix`.
async fn bob_reads_all(server: &TestServer, prefix: &str) -> Vec<String> {
    let mut bob = Client::enter_via_front_end(&server.host(), "Bob", FRONT_END_SECRET)
        .await
        .unwrap();
    // The mail count line, if any, comes before the reply to a SPEAK sent now.
    let seen = round_trip(&mut bob).await;
    let waiting: usize = seen
        .iter()
        .filter_map(|e| e.text())
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .find_map(|l| {
            l.strip_prefix("You have ")
                .and_then(|r| r.strip_suffix(" ESP Mail (times UTC)."))
                .map(|n| n.parse().unwrap())
        })
        .unwrap_or(0);
    let is_mail = |e: &Event| e.text().is_some_and(|t| t.starts_with(prefix.as_bytes()));
    let mut got: Vec<String> = Vec::new();
    let mut prompts_answered = 0;
    let mut pending: std::collections::VecDeque<Event> = seen.into();
    while got.len() < waiting || !pending.is_empty() {
        let e = match pending.pop_front() {
            Some(e) => e,
            None => bob
                .wait_for(|e| is_mail(e) || matches!(e, Event::Prompt(_)))
                .await
                .unwrap(),
        };
        match e {
            Event::Prompt(p) => {
                bob.answer(&p, b"Y").await.unwrap();
                prompts_answered += 1;
            }
            e if is_mail(&e) => got.push(
                String::from_utf8_lossy(e.text().unwrap())
                    .trim_end()
                    .to_string(),
            ),
            _ => {}
        }
    }
    assert_eq!(
        prompts_answered,
        waiting.saturating_sub(1),
        "one Next prompt between messages"
    );
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
    got
}

#[bounded]
#[tokio::test]
async fn sigterm_during_saves_keeps_every_mail_the_sender_saw_saved() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let cfg = tmp.path().join("espmail.toml");
    let secret = tmp.path().join("front-end.secret");
    common::write_private(&secret, FRONT_END_SECRET);
    let toml =
        trusted_config(&["127.0.0.1"]).replace("@FRONT_END_SECRET_FILE@", secret.to_str().unwrap());
    std::fs::write(&cfg, toml).unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let mut server = TestServer::start_in(&dir, &args);

    // Bob exists and is offline.
    let mut bob = Client::enter_via_front_end(&server.host(), "Bob", FRONT_END_SECRET)
        .await
        .unwrap();
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();

    // Every sender stands at the "ESP Mail to Bob?" prompt.
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let mut s =
            Client::enter_via_front_end(&server.host(), &format!("Sender{i}"), FRONT_END_SECRET)
                .await
                .unwrap();
        assert!(s.speak(b"TO:Bob").await.unwrap());
        assert!(!s.esp(format!("bye-{i:02}").as_bytes()).await.unwrap());
        let p = s.wait_for(|e| matches!(e, Event::Prompt(_))).await.unwrap();
        assert_eq!(p.text().unwrap(), b"ESP Mail to Bob? (Y/N) ");
        senders.push(s);
    }

    // All answer Y, and SIGTERM follows at once: some saves are still pending then.
    for s in senders.iter_mut() {
        s.answer(b"ESP Mail to Bob? (Y/N) ", b"Y").await.unwrap();
    }
    server.signal("TERM");

    // Each sender sees "saved" or the connection closing, never anything else about it.
    let mut saved = BTreeSet::new();
    for (i, s) in senders.iter_mut().enumerate() {
        loop {
            match s.next_event().await {
                Ok(e) => {
                    let t = e.text().unwrap_or_default();
                    if t == b"ESP Mail for Bob saved." {
                        saved.insert(format!("bye-{i:02}"));
                    }
                    assert!(
                        !contains_bytes(t, b"could not") && !contains_bytes(t, b"Not sent"),
                        "sender {i} was refused: {e:?}"
                    );
                }
                Err(ClientError::Timeout(_)) => panic!("sender {i}: server did not close"),
                Err(_) => break,
            }
        }
    }
    assert!(
        server.wait_exit().success(),
        "graceful shutdown exits 0; log:\n{}",
        server.log()
    );
    assert!(server.log().contains("all sessions finished"));
    drop(server);

    // After the restart, every "saved" is delivered; nothing unsent appears.
    let server = TestServer::start_in(&dir, &args);
    let got = bob_reads_all(&server, "bye-").await;
    let got_set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), got_set.len(), "a message came twice: {got:?}");
    for m in &saved {
        assert!(got_set.contains(m), "{m} was reported saved but is gone");
    }
    // And the other way: a save that committed was reported. (Before the server closed
    // its side gracefully, its reset made the peer's kernel drop the "saved" line.)
    assert_eq!(saved, got_set, "every stored mail was reported saved");
    for m in &got_set {
        let i: usize = m.trim_start_matches("bye-").parse().unwrap();
        assert!(i < SENDERS, "{m} was never sent");
    }
    eprintln!(
        "saved seen by senders: {}, delivered after restart: {}",
        saved.len(),
        got.len()
    );
}

#[bounded]
#[tokio::test]
async fn avatars_in_the_world_are_told_before_the_server_closes() {
    let mut server = TestServer::start(&[]);
    let mut bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();
    server.signal("TERM");
    let seen = bob
        .collect_until(|e| e.text() == Some(espmail::server::session::SHUTTING_DOWN.as_bytes()))
        .await
        .unwrap();
    assert!(matches!(seen.last(), Some(Event::Talk { speaker: 0, .. })));
    bob.wait_closed().await.unwrap();
    assert!(server.wait_exit().success());
    assert!(server.log().contains("closed for shutdown"));
}
