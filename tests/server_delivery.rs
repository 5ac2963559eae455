//! ESP Mail delivery at login against the real binary: the paced "Next ESP Mail" prompt
//! (Y, empty, N, no answer), and a second login of the recipient while a delivery is
//! under way (each message deleted exactly once, and only after the client that acked it;
//! an unacked one comes again, to the new session only).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use common::{alice_mails_bob, contains_bytes, pw, register, round_trip, texts, TestServer};
use espmail::talk::{Client, Event};
use espmail_test_macros::bounded;

const DELETED: &str = "delivered ESP Mail acked and deleted";

/// Bob connects and goes in; `ack_mail` false plays a client that acks its login frames
/// but none of what follows HERE_I_AM.
async fn bob_logs_in(server: &TestServer, ack_mail: bool) -> Client {
    let mut bob = Client::connect(&server.host(), "Bob", Some(&pw("Bob")))
        .await
        .unwrap();
    bob.im_alive().await.unwrap();
    bob.describe().await.unwrap();
    bob.auto_ack = ack_mail;
    bob.here_i_am().await.unwrap();
    bob
}

/// Events up to and including the next PROMPT_USER.
async fn until_prompt(c: &mut Client) -> Vec<Event> {
    c.collect_until(|e| matches!(e, Event::Prompt(_)))
        .await
        .unwrap()
}

/// Events left after the server closed the connection (bounded).
async fn until_closed(c: &mut Client) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        match c.next_event().await {
            Ok(e) => seen.push(e),
            Err(espmail::talk::ClientError::Timeout(_)) => panic!("not closed; saw {seen:?}"),
            Err(_) => return seen,
        }
    }
}

fn shows(events: &[Event], needle: &str) -> bool {
    events.iter().any(|e| {
        e.text()
            .is_some_and(|t| contains_bytes(t, needle.as_bytes()))
    })
}

/// Which of `mails` these events show.
fn shown<'a>(events: &[Event], mails: &[&'a str]) -> Vec<&'a str> {
    mails.iter().copied().filter(|m| shows(events, m)).collect()
}

/// The one message of `mails` these events show (paced delivery: one per step).
fn one_of<'a>(events: &[Event], mails: &[&'a str]) -> &'a str {
    match shown(events, mails)[..] {
        [m] => m,
        ref other => panic!("expected exactly one message, got {other:?} in {events:?}"),
    }
}

fn prompt_of(events: &[Event]) -> String {
    match events.last() {
        Some(Event::Prompt(p)) => String::from_utf8_lossy(p).into_owned(),
        other => panic!("expected a prompt last, got {other:?}"),
    }
}

/// Alice and Bob exist, and Alice leaves each of `mails` for the offline Bob, in order.
async fn bob_gets_mail(server: &TestServer, mails: &[&str]) {
    register(server, "Alice").await;
    register(server, "Bob").await;
    for m in mails {
        alice_mails_bob(server, m).await;
    }
}

/// Answers the `Next ESP Mail (LEFT left)?` prompt with `answer`; reads up to the next
/// prompt, which must count one fewer, and returns the one message of `candidates` shown
/// on the way.
async fn next_step<'a>(
    c: &mut Client,
    left: usize,
    answer: &[u8],
    candidates: &[&'a str],
) -> &'a str {
    let prompt = format!("Next ESP Mail ({left} left)? (Y/N) ");
    c.answer(prompt.as_bytes(), answer).await.unwrap();
    let seen = until_prompt(c).await;
    let m = one_of(&seen, candidates);
    assert_eq!(
        prompt_of(&seen),
        format!("Next ESP Mail ({} left)? (Y/N) ", left - 1)
    );
    m
}

/// The replaced first session: told it logged in elsewhere, then closed. Returns all it
/// was shown from now on.
async fn replaced(old: &mut Client) -> Vec<Event> {
    let mut rest = old
        .collect_until(|e| e.text() == Some(b"You have logged in elsewhere."))
        .await
        .unwrap();
    rest.extend(until_closed(old).await);
    rest
}

/// Waits for the `n`th delete, lets `c` leave, and checks no more were deleted.
async fn leave_after_deletes(server: &TestServer, mut c: Client, n: usize) {
    server.wait_for_log_count(DELETED, n);
    c.quit().await.unwrap();
    c.wait_closed().await.unwrap();
    assert_eq!(server.log_count(DELETED), n, "each message deleted once");
}

/// Alice leaves `mails` (two) for Bob under the default prompt timeout; the server then
/// restarts (SIGTERM, same data directory) with a 1 s one, so only the Next prompt has to
/// lapse. Bob logs in and is shown one message and "Next ESP Mail (1 left)?". Returns the
/// temporary directory (keep it), the server, Bob, and the message not yet shown.
async fn bob_at_a_lapsing_next_prompt<'a>(
    mails: &[&'a str],
) -> (tempfile::TempDir, TestServer, Client, &'a str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let short = tmp.path().join("short.toml");
    std::fs::write(&short, "[mail]\nprompt_timeout_secs = 1\n").unwrap();
    let mut server = TestServer::start_in(&dir, &[]);
    bob_gets_mail(&server, mails).await;
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let server = TestServer::start_in(&dir, &["--config", short.to_str().unwrap()]);
    let mut bob = bob_logs_in(&server, true).await;
    let seen = until_prompt(&mut bob).await;
    let first = one_of(&seen, mails);
    let second = mails.iter().copied().find(|m| *m != first).unwrap();
    assert_eq!(prompt_of(&seen), "Next ESP Mail (1 left)? (Y/N) ");
    (tmp, server, bob, second)
}

/// Logs Bob in and proves no mail is waiting.
async fn bob_has_no_mail(server: &TestServer) {
    let mut bob = bob_logs_in(server, true).await;
    let seen = round_trip(&mut bob).await;
    assert!(!shows(&seen, "ESP Mail"), "no ESP Mail expected: {seen:?}");
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
}

// Each step must show exactly one new message, and oldest first: Alice's messages here
// are all saved within a second or so, which the send time's nanoseconds still order.

#[bounded]
#[tokio::test]
async fn a_second_login_during_delivery_gets_the_unacked_mail_and_nothing_is_deleted_twice() {
    let server = TestServer::start(&[]);
    let mails = ["first-3c1a", "second-3c2b", "third-3c3c"];
    bob_gets_mail(&server, &mails).await;

    // The first session shows one message and holds at the Next prompt, unacked.
    let mut bob1 = bob_logs_in(&server, false).await;
    let seen1 = until_prompt(&mut bob1).await;
    assert!(texts(&seen1).contains(&"You have 3 ESP Mail (times UTC).".to_string()));
    let held = one_of(&seen1, &mails);
    assert_eq!(held, mails[0], "oldest first");
    assert_eq!(prompt_of(&seen1), "Next ESP Mail (2 left)? (Y/N) ");

    // A second login replaces it; the old one is told and closed, and gets no more mail.
    let mut bob2 = bob_logs_in(&server, true).await;
    let rest1 = replaced(&mut bob1).await;
    let others: Vec<&str> = mails.iter().copied().filter(|m| *m != held).collect();
    assert!(
        shown(&rest1, &others).is_empty(),
        "old session got more: {rest1:?}"
    );
    assert_eq!(server.log_count(DELETED), 0, "nothing was acked yet");

    // The new session gets all three (the held one again: never acked), one per prompt.
    let step1 = until_prompt(&mut bob2).await;
    assert!(texts(&step1).contains(&"You have 3 ESP Mail (times UTC).".to_string()));
    assert_eq!(
        one_of(&step1, &mails),
        held,
        "unacked mail comes again first"
    );
    assert_eq!(prompt_of(&step1), "Next ESP Mail (2 left)? (Y/N) ");
    let second = next_step(&mut bob2, 2, b"Y", &others).await;
    assert_eq!(second, mails[1], "oldest first");
    bob2.answer(b"Next ESP Mail (1 left)? (Y/N) ", b"")
        .await
        .unwrap();
    let last = others.iter().copied().find(|m| *m != second).unwrap();
    let mut step3 = bob2
        .collect_until(|e| e.text() == Some(last.as_bytes()))
        .await
        .unwrap();
    step3.extend(round_trip(&mut bob2).await); // reads (and answers) the Ping after it
    assert_eq!(shown(&step3, &mails), vec![last]);
    leave_after_deletes(&server, bob2, 3).await;
    bob_has_no_mail(&server).await;
}

#[bounded]
#[tokio::test]
async fn mail_acked_by_the_replaced_session_is_not_delivered_again() {
    let server = TestServer::start(&[]);
    let mails = ["one-77a1", "two-77a2", "three-77a3"];
    bob_gets_mail(&server, &mails).await;

    // The first session shows and acks one message, then holds at the prompt.
    let mut bob1 = bob_logs_in(&server, false).await;
    let seen1 = until_prompt(&mut bob1).await;
    let acked = one_of(&seen1, &mails);
    bob1.ack().await.unwrap();
    server.wait_for_log_count(DELETED, 1);

    let mut bob2 = bob_logs_in(&server, true).await;
    let rest1 = replaced(&mut bob1).await;
    let others: Vec<&str> = mails.iter().copied().filter(|m| *m != acked).collect();
    assert!(shown(&rest1, &others).is_empty(), "{rest1:?}");

    let mut seen2 = until_prompt(&mut bob2).await;
    assert!(texts(&seen2).contains(&"You have 2 ESP Mail (times UTC).".to_string()));
    let first = one_of(&seen2, &others);
    assert_eq!(prompt_of(&seen2), "Next ESP Mail (1 left)? (Y/N) ");
    bob2.answer(b"Next ESP Mail (1 left)? (Y/N) ", b"y")
        .await
        .unwrap();
    let last = others.iter().copied().find(|m| *m != first).unwrap();
    seen2.extend(
        bob2.collect_until(|e| e.text() == Some(last.as_bytes()))
            .await
            .unwrap(),
    );
    seen2.extend(round_trip(&mut bob2).await);
    assert!(!shows(&seen2, acked), "acked mail came again: {seen2:?}");
    leave_after_deletes(&server, bob2, 3).await;
    bob_has_no_mail(&server).await;
}

#[bounded]
#[tokio::test]
async fn empty_and_y_deliver_the_next_and_n_keeps_the_rest_for_later() {
    let server = TestServer::start(&[]);
    let mails = ["pace-1", "pace-2", "pace-3", "pace-4"];
    bob_gets_mail(&server, &mails).await;
    let mut left: Vec<&str> = mails.to_vec();

    let mut bob = bob_logs_in(&server, true).await;
    let seen = until_prompt(&mut bob).await;
    assert!(texts(&seen).contains(&"You have 4 ESP Mail (times UTC).".to_string()));
    let m = one_of(&seen, &mails); // paced: one message, then the prompt
    assert_eq!(m, mails[0], "oldest first");
    left.retain(|x| *x != m);
    assert_eq!(prompt_of(&seen), "Next ESP Mail (3 left)? (Y/N) ");

    // An empty answer delivers the next, and only it.
    let m = next_step(&mut bob, 3, b"", &mails).await;
    assert_eq!(m, mails[1], "oldest first");
    left.retain(|x| *x != m);

    // Y delivers the next.
    let m = next_step(&mut bob, 2, b"Y", &mails).await;
    assert_eq!(m, mails[2], "oldest first");
    left.retain(|x| *x != m);

    // N keeps the rest, and says so.
    bob.answer(b"Next ESP Mail (1 left)? (Y/N) ", b"N")
        .await
        .unwrap();
    let mut seen = bob
        .collect_until(|e| e.text() == Some(b"ESP Mail kept for later."))
        .await
        .unwrap();
    seen.extend(round_trip(&mut bob).await);
    assert!(
        shown(&seen, &mails).is_empty(),
        "N must keep the rest: {seen:?}"
    );
    leave_after_deletes(&server, bob, 3).await;

    // The next login gets the kept one, with no prompt after the last message.
    assert_eq!(left, [mails[3]]);
    let kept = mails[3];
    let mut bob = bob_logs_in(&server, true).await;
    let mut seen = bob
        .collect_until(|e| e.text() == Some(kept.as_bytes()))
        .await
        .unwrap();
    seen.extend(round_trip(&mut bob).await);
    assert!(texts(&seen).contains(&"You have 1 ESP Mail (times UTC).".to_string()));
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Prompt(_))),
        "no Next prompt after the last message: {seen:?}"
    );
    leave_after_deletes(&server, bob, 4).await;
    bob_has_no_mail(&server).await;
}

#[bounded]
#[tokio::test]
async fn no_answer_to_the_next_prompt_keeps_the_rest() {
    let mails = ["lapse-1", "lapse-2"];
    let (_tmp, server, mut bob, second) = bob_at_a_lapsing_next_prompt(&mails).await;
    // Bob says nothing; the prompt lapses and he is told the rest is kept (his screen
    // still shows the question). The rest stays stored.
    let mut seen = bob
        .collect_until(|e| e.text() == Some(b"ESP Mail kept for later."))
        .await
        .unwrap();
    seen.extend(round_trip(&mut bob).await);
    assert!(
        !shows(&seen, second),
        "lapsed prompt must keep the rest: {seen:?}"
    );
    // A late N is answered too: kept, said again; nothing is delivered.
    bob.answer(b"Next ESP Mail (1 left)? (Y/N) ", b"N")
        .await
        .unwrap();
    let seen = bob
        .collect_until(|e| e.text() == Some(b"ESP Mail kept for later."))
        .await
        .unwrap();
    assert!(!shows(&seen, second), "{seen:?}");
    leave_after_deletes(&server, bob, 1).await;

    let mut bob = bob_logs_in(&server, true).await;
    let seen = bob
        .collect_until(|e| e.text() == Some(second.as_bytes()))
        .await
        .unwrap();
    assert!(texts(&seen).contains(&"You have 1 ESP Mail (times UTC).".to_string()));
    round_trip(&mut bob).await;
    leave_after_deletes(&server, bob, 2).await;
    bob_has_no_mail(&server).await;
}

#[bounded]
#[tokio::test]
async fn a_late_yes_to_a_lapsed_next_prompt_still_delivers_the_next() {
    let mails = ["late-1", "late-2"];
    let (_tmp, server, mut bob, second) = bob_at_a_lapsing_next_prompt(&mails).await;
    bob.collect_until(|e| e.text() == Some(b"ESP Mail kept for later."))
        .await
        .unwrap();
    // The C64 still shows the question; Bob answers it late. The message is still
    // stored, so it comes anyway, and is deleted once acked.
    bob.answer(b"Next ESP Mail (1 left)? (Y/N) ", b"Y")
        .await
        .unwrap();
    bob.collect_until(|e| e.text() == Some(second.as_bytes()))
        .await
        .unwrap();
    leave_after_deletes(&server, bob, 2).await;
    bob_has_no_mail(&server).await;
}

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_acks_only_when_pinged_still_gets_its_mail_deleted() {
    // The C64 acks only when asked, so an ack answering a Ping must be enough to delete.
    // (The server Pings right after the last line; the link's 3 s stall timer would Ping
    // too, later, so this does not tell the two apart: it shows the Ping path works.)
    let server = TestServer::start(&[]);
    bob_gets_mail(&server, &["ping-me-0a1"]).await;

    let mut bob = bob_logs_in(&server, true).await;
    bob.ack_actions = false;
    bob.wait_text("ping-me-0a1").await.unwrap();
    // Bob sends nothing from now on (his own Actions would carry an ack); he only reads,
    // on a worker thread, answering Pings, while this thread waits for the delete.
    let (done, stop) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        tokio::select! {
            _ = bob.wait_for(|_| false) => {}
            _ = stop => {}
        }
        bob
    });
    server.wait_for_log(DELETED);
    done.send(()).unwrap();
    let mut bob = reader.await.unwrap();
    assert_eq!(server.log_count(DELETED), 1);
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
    bob_has_no_mail(&server).await;
}
