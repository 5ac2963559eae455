//! Authentication (DESIGN.md promise 6): unknown names and wrong passwords get the same
//! refusal; a login line without a password gets the in-world prompt, stays hidden and
//! gets no mail until it answers right; mail never reaches an unauthenticated connection.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{contains_bytes, leave_esp_mail, TestServer};
use espmail::talk::{Client, ClientError, Event};
use espmail_test_macros::bounded;

const CONFIG: &str = "[auth]\nauto_register = false\n";

fn add_account(server: &TestServer, name: &str, pw: &str) {
    let (code, out, err) = server.cli(&["account", "add", name], &format!("{pw}\n"));
    assert_eq!(code, 0, "account add {name}: {out} {err}");
}

fn mail_text(events: &[Event]) -> bool {
    events.iter().any(|e| {
        e.text()
            .is_some_and(|t| contains_bytes(t, b"ESP Mail") || contains_bytes(t, b"secret plans"))
    })
}

async fn refused(server: &TestServer, name: &str, pw: Option<&str>) -> String {
    let mut c = Client::connect(&server.host(), name, pw).await.unwrap();
    let err = c.im_alive().await.unwrap_err();
    // Nothing else comes: the connection closes without any mail line.
    let mut rest = Vec::new();
    while let Ok(e) = c.next_event().await {
        rest.push(e);
    }
    assert!(!mail_text(&rest), "{rest:?}");
    match err {
        ClientError::Refused(text) => text,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[bounded]
#[tokio::test]
async fn wrong_password_and_unknown_name_look_the_same() {
    let server = TestServer::start_with_config(CONFIG, &[]);
    add_account(&server, "Alice", "alice-password");
    add_account(&server, "Bob", "bob-password");
    let (code, out, _) = server.cli(&["account", "list"], "");
    assert_eq!(code, 0);
    assert!(out.contains("Alice") && out.contains("Bob"), "{out}");

    let wrong = refused(&server, "Bob", Some("not-bobs-password")).await;
    let unknown = refused(&server, "Carol", Some("carol-password")).await;
    assert_eq!(wrong, "Wrong name or password.");
    assert_eq!(wrong, unknown);
    // Refused logins are logged with the name, never the password.
    assert!(!server.log().contains("not-bobs-password"));
}

#[bounded]
#[tokio::test]
async fn no_password_in_the_login_line_gets_the_prompt_and_no_mail_until_answered() {
    let server = TestServer::start_with_config(CONFIG, &[]);
    add_account(&server, "Alice", "alice-password");
    add_account(&server, "Bob", "bob-password");

    // Alice leaves mail for Bob.
    let mut alice = Client::enter(&server.host(), "Alice", Some("alice-password"))
        .await
        .unwrap();
    leave_esp_mail(&mut alice, "Bob", b"secret plans").await;

    // Bob's client sends only the name, as the real C64 launcher does.
    let mut bob = Client::connect(&server.host(), "bob", None).await.unwrap();
    bob.im_alive().await.unwrap();
    bob.describe().await.unwrap();
    bob.here_i_am().await.unwrap();
    let seen = bob
        .collect_until(|e| matches!(e, Event::Prompt(_)))
        .await
        .unwrap();
    assert!(!mail_text(&seen), "mail before authentication: {seen:?}");
    assert_eq!(seen.last().unwrap().text().unwrap(), b"Password: ");

    // While hidden, Bob is not in the Plaza: Alice cannot ESP him live.
    assert!(alice.speak(b"TO:Bob").await.unwrap());
    alice
        .wait_text("Bob is offline. Your ESP will be offered as ESP Mail.")
        .await
        .unwrap();

    bob.answer(b"Password: ", b"guess").await.unwrap();
    let seen = bob
        .collect_until(|e| matches!(e, Event::Prompt(_)))
        .await
        .unwrap();
    assert!(!mail_text(&seen), "mail after a wrong answer: {seen:?}");
    assert_eq!(
        seen.last().unwrap().text().unwrap(),
        b"Wrong password. Password: "
    );

    bob.answer(b"Wrong password. Password: ", b"bob-password")
        .await
        .unwrap();
    bob.wait_text("You have 1 ESP Mail (times UTC).")
        .await
        .unwrap();
    bob.wait_text("secret plans").await.unwrap();
    assert!(
        !server.log().contains("bob-password"),
        "a password reached the log"
    );
}

#[bounded]
#[tokio::test]
async fn three_wrong_answers_close_the_connection() {
    let server = TestServer::start_with_config(CONFIG, &[]);
    add_account(&server, "Bob", "bob-password");
    let mut bob = Client::connect(&server.host(), "Bob", None).await.unwrap();
    bob.im_alive().await.unwrap();
    bob.describe().await.unwrap();
    bob.here_i_am().await.unwrap();
    let mut prompt = b"Password: ".to_vec();
    for _ in 0..3 {
        let p = bob
            .wait_for(|e| matches!(e, Event::Prompt(_)))
            .await
            .unwrap();
        prompt = p.text().unwrap().to_vec();
        bob.answer(&prompt, b"nope").await.unwrap();
    }
    assert_eq!(prompt, b"Wrong password. Password: ");
    bob.wait_text("Wrong name or password.").await.unwrap();
    bob.wait_closed().await.unwrap();
}

#[bounded]
#[tokio::test]
async fn a_second_login_replaces_the_first() {
    let server = TestServer::start(&[]);
    let mut first = Client::enter(&server.host(), "Dana", Some("dana-password"))
        .await
        .unwrap();
    let _second = Client::enter(&server.host(), "dana", Some("dana-password"))
        .await
        .unwrap();
    first
        .wait_text("You have logged in elsewhere.")
        .await
        .unwrap();
    first.wait_closed().await.unwrap();
}
