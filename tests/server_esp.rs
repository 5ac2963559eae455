//! Live ESP between two online avatars, and the ESP Mail refusals: `N`, no answer in
//! time, a full box, too many sends. Real binary, real protocol.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{contains_bytes, pw, register, round_trip, speech_reaches, TestServer};
use espmail::talk::{Client, Event};
use espmail_test_macros::bounded;

async fn enter(server: &TestServer, name: &str) -> Client {
    Client::enter(&server.host(), name, Some(&pw(name)))
        .await
        .unwrap()
}

/// Alice starts ESP to the offline Bob and types `text`; returns the prompt she got.
async fn offer(alice: &mut Client, text: &str) -> Vec<u8> {
    assert!(alice.speak(b"TO:Bob").await.unwrap());
    assert!(!alice.esp(text.as_bytes()).await.unwrap());
    let prompt = alice
        .wait_for(|e| matches!(e, Event::Prompt(_)))
        .await
        .unwrap();
    prompt.text().unwrap().to_vec()
}

fn said(events: &[Event], needle: &str) -> bool {
    events.iter().any(|e| {
        e.text()
            .is_some_and(|t| contains_bytes(t, needle.as_bytes()))
    })
}

#[bounded]
#[tokio::test]
async fn live_esp_reaches_the_recipient_and_echoes_to_the_sender() {
    let server = TestServer::start(&[]);
    let mut bob = enter(&server, "Bob").await;
    let mut alice = Client::connect(&server.host(), "Alice", Some("alice-password"))
        .await
        .unwrap();
    alice.im_alive().await.unwrap();
    // Alice's DESCRIBE lists every avatar present, each with its head: Bob and herself.
    let vector = alice.describe().await.unwrap();
    assert_eq!(espmail::talk::avatars_in(&vector), 2);
    alice.here_i_am().await.unwrap();
    // Bob sees Alice arrive (HEREIS) and appear (APPEAR).
    bob.wait_for(|e| matches!(e, Event::HereIs(_)))
        .await
        .unwrap();
    let alice_noid = alice.me;
    bob.wait_for(|e| *e == Event::Appear(alice_noid))
        .await
        .unwrap();

    assert!(alice.speak(b"TO:bob").await.unwrap(), "ESP mode on");
    let t = alice
        .wait_text("Transmitting thoughts to Bob...")
        .await
        .unwrap();
    assert_eq!(
        t,
        Event::Talk {
            speaker: alice.me,
            text: b"Transmitting thoughts to Bob...".to_vec()
        }
    );

    assert!(
        alice.esp(b"hello over there").await.unwrap(),
        "ESP mode stays on"
    );
    let echo = alice.wait_text("ESP:hello over there").await.unwrap();
    assert!(matches!(echo, Event::Talk { speaker, .. } if speaker == alice.me));

    let seen = bob
        .collect_until(|e| e.text() == Some(b"hello over there"))
        .await
        .unwrap();
    assert!(
        seen.contains(&Event::Talk {
            speaker: 0,
            text: b"ESP from Alice: ".to_vec()
        }),
        "{seen:?}"
    );
    assert!(seen.contains(&Event::Play {
        sound: 8,
        noid: bob.me
    }));

    // A short body is padded; an empty ESP ends ESP mode.
    assert!(alice.esp(b"ok").await.unwrap());
    bob.wait_for(|e| e.text() == Some(b" ok ")).await.unwrap();
    assert!(!alice.esp(b"").await.unwrap());
    alice.wait_text("ESP connection ended.").await.unwrap();

    // Plain speech reaches the others as SPEAK$ on the speaker's noid.
    speech_reaches(&mut alice, &mut bob, b"Hi all").await;

    // Unknown names and oneself cannot be contacted.
    assert!(!alice.speak(b"TO:Nobody").await.unwrap());
    alice.wait_text("Cannot contact Nobody.").await.unwrap();
    assert!(!alice.speak(b"TO:alice").await.unwrap());
    alice.wait_text("Cannot contact alice.").await.unwrap();

    // When Alice leaves, Bob sees GOAWAY for her avatar and her head.
    let gone = alice.me;
    alice.quit().await.unwrap();
    bob.wait_for(|e| *e == Event::GoAway(gone)).await.unwrap();
}

#[bounded]
#[tokio::test]
async fn declining_or_not_answering_stores_nothing() {
    let server = TestServer::start_with_config("[mail]\nprompt_timeout_secs = 1\n", &[]);
    register(&server, "Bob").await;
    let mut alice = enter(&server, "Alice").await;

    let prompt = offer(&mut alice, "not this one").await;
    assert_eq!(prompt, b"ESP Mail to Bob? (Y/N) ");
    alice.answer(&prompt, b"N").await.unwrap();
    alice.wait_text("ESP Mail not sent.").await.unwrap();

    // Unusable answers re-ask; the third gives up.
    let prompt = offer(&mut alice, "maybe").await;
    alice.answer(&prompt, b"what?").await.unwrap();
    alice
        .wait_for(|e| matches!(e, Event::Prompt(_)))
        .await
        .unwrap();
    alice.answer(&prompt, b"hmm").await.unwrap();
    alice
        .wait_for(|e| matches!(e, Event::Prompt(_)))
        .await
        .unwrap();
    alice.answer(&prompt, b"eh").await.unwrap();
    alice.wait_text("ESP Mail not sent.").await.unwrap();

    // No answer in time: the offer lapses and the sender is told (the C64 cannot take
    // the prompt back); a late Y saves nothing and is answered, never met with silence.
    let prompt = offer(&mut alice, "too late").await;
    alice
        .wait_text("No answer; ESP Mail not sent.")
        .await
        .unwrap();
    alice.answer(&prompt, b"Y").await.unwrap();
    alice
        .wait_text("Too late; ESP Mail not sent.")
        .await
        .unwrap();
    let seen = round_trip(&mut alice).await;
    assert!(!said(&seen, "saved"), "{seen:?}");
    // Only the first late answer is answered; a reply to no prompt at all is dropped
    // without a word and without a log line.
    alice.answer(&prompt, b"Y").await.unwrap();
    let seen = round_trip(&mut alice).await;
    assert!(!said(&seen, "Too late"), "{seen:?}");
    assert!(!server.log().contains("no prompt pending"));

    let (code, out, err) = server.cli(&["stats"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("messages waiting: 0"), "{out}");
}

#[bounded]
#[tokio::test]
async fn a_full_box_is_refused() {
    let server = TestServer::start_with_config("[mail]\nmax_per_recipient = 1\n", &[]);
    register(&server, "Bob").await;
    let mut alice = enter(&server, "Alice").await;
    let prompt = offer(&mut alice, "first").await;
    alice.answer(&prompt, b"y").await.unwrap();
    alice.wait_text("ESP Mail for Bob saved.").await.unwrap();
    let prompt = offer(&mut alice, "second").await;
    alice.answer(&prompt, b"yes").await.unwrap();
    alice
        .wait_text("Bob's ESP Mail box is full. Not sent.")
        .await
        .unwrap();
    let (_, out, _) = server.cli(&["stats"], "");
    assert!(out.contains("messages waiting: 1"), "{out}");
}

/// Issue 10 M4: one sender cannot fill a box alone. Eve saves her share
/// (`max_per_sender`), the next is refused in words, and Alice still gets through.
#[bounded]
#[tokio::test]
async fn one_sender_cannot_fill_a_box() {
    let server = TestServer::start_with_config(
        "[mail]\nmax_per_sender = 3\nsend_rate_per_minute = 100\n",
        &[],
    );
    register(&server, "Bob").await;
    let mut eve = enter(&server, "Eve").await;
    for i in 0..3 {
        let prompt = offer(&mut eve, &format!("spam {i}")).await;
        eve.answer(&prompt, b"Y").await.unwrap();
        eve.wait_text("ESP Mail for Bob saved.").await.unwrap();
    }
    let prompt = offer(&mut eve, "spam 3").await;
    eve.answer(&prompt, b"Y").await.unwrap();
    eve.wait_text("You have 3 ESP Mail waiting for Bob. Not sent.")
        .await
        .unwrap();
    let mut alice = enter(&server, "Alice").await;
    let prompt = offer(&mut alice, "hello Bob").await;
    alice.answer(&prompt, b"Y").await.unwrap();
    alice.wait_text("ESP Mail for Bob saved.").await.unwrap();
    let (_, out, _) = server.cli(&["stats"], "");
    assert!(out.contains("messages waiting: 4"), "{out}");
}

#[bounded]
#[tokio::test]
async fn too_many_sends_are_refused() {
    let server = TestServer::start_with_config("[mail]\nsend_rate_per_minute = 2\n", &[]);
    register(&server, "Bob").await;
    let mut alice = enter(&server, "Alice").await;
    for text in ["one", "two"] {
        let prompt = offer(&mut alice, text).await;
        alice.answer(&prompt, b"Y").await.unwrap();
        alice.wait_text("ESP Mail for Bob saved.").await.unwrap();
    }
    assert!(alice.speak(b"TO:Bob").await.unwrap());
    assert!(!alice.esp(b"three").await.unwrap());
    let t = alice.wait_text("Too much ESP Mail; wait ").await.unwrap();
    assert!(t.text().unwrap().ends_with(b" s."));
    let (_, out, _) = server.cli(&["stats"], "");
    assert!(out.contains("messages waiting: 2"), "{out}");
}

#[bounded]
#[tokio::test]
async fn esp_mail_to_someone_who_arrived_meanwhile_goes_live() {
    let server = TestServer::start(&[]);
    register(&server, "Bob").await;
    let mut alice = enter(&server, "Alice").await;
    let prompt = offer(&mut alice, "you are here now").await;
    let mut bob = enter(&server, "Bob").await;
    alice.answer(&prompt, b"Y").await.unwrap();
    alice
        .wait_text("Bob is here now; sent as ESP.")
        .await
        .unwrap();
    bob.wait_for(|e| e.text() == Some(b"you are here now"))
        .await
        .unwrap();
}

#[bounded]
#[tokio::test]
async fn paced_output_for_slow_links_still_carries_esp() {
    // 1,200 bytes a second: a 9600-baud C64 link's pace (0 in the other tests).
    let server = TestServer::start_with_config("[server]\nrate_limit_bytes_per_sec = 1200\n", &[]);
    let mut bob = enter(&server, "Bob").await;
    let mut alice = enter(&server, "Alice").await;
    assert!(alice.speak(b"TO:Bob").await.unwrap());
    assert!(alice.esp(b"slowly but surely").await.unwrap());
    bob.wait_for(|e| e.text() == Some(b"slowly but surely"))
        .await
        .unwrap();
}
