//! The login throttle under attack (issue 10: H1, M3, M4, L4, M7; ESPMAIL.md §1): guesses
//! sent at once are counted before any is hashed, guesses from elsewhere never lock out a
//! player, in-world registration and the prompt's name lookup cost attempts like a login,
//! a throttled attempt is told how long to wait, and a burst of hashing leaves no memory
//! behind. Hosts are loopback addresses (127.0.0.2, ...), each its own address to the
//! server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::time::{Duration, Instant};

use common::{client_from, enter_from, TestServer, WAIT};
use espmail::talk::{ClientError, Event};
use espmail_test_macros::bounded;
use tokio::time::timeout;

/// No auto-registration (a wrong guess is only a wrong guess), two hashing threads, and
/// no per-address connection cap in the way: the throttle must hold on its own.
const CONFIG: &str = "[auth]\nauto_register = false\nhash_threads = 2\n\
                      [server]\nmax_connections_per_address = 1000\nmax_connections = 2000\n";

/// The attempts one address may make in a minute (ESPMAIL.md §1).
const PER_MINUTE: usize = 5;

fn add_account(server: &TestServer, name: &str, pw: &str) {
    let (code, out, err) = server.cli(&["account", "add", name], &format!("{pw}\n"));
    assert_eq!(code, 0, "account add {name}: {out} {err}");
}

/// The server's answer to a login line from `from`: `Ok` when let in, else its refusal.
async fn try_login(server: &TestServer, from: &str, name: &str, pw: &str) -> Result<(), String> {
    let mut c = client_from(from, server.addr, name, Some(pw)).await;
    match timeout(WAIT, c.im_alive())
        .await
        .expect("an answer in time")
    {
        Ok(()) => Ok(()),
        Err(ClientError::Refused(text)) => Err(text),
        Err(other) => panic!("expected an answer, got {other}"),
    }
}

fn is_too_many_tries(text: &str) -> bool {
    text.starts_with("Too many tries; wait ") && text.ends_with(" s.")
}

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_guesses_at_once_are_counted_before_they_are_hashed() {
    let server = TestServer::start_with_config(CONFIG, &[]);
    add_account(&server, "Bob", "bob-password");
    let server = std::sync::Arc::new(server);
    // 300 sockets from one address, each with a wrong password, all at once.
    let guesses: Vec<_> = (0..300)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(async move {
                try_login(&server, "127.0.0.2", "Bob", &format!("guess-{i}")).await
            })
        })
        .collect();
    // Meanwhile the real Bob logs in from his own address, and is let in at once.
    let started = Instant::now();
    let bob = timeout(
        Duration::from_secs(1),
        enter_from("127.0.0.3", server.addr, "Bob", Some("bob-password")),
    )
    .await;
    assert!(
        bob.is_ok(),
        "the right password from a clean address waited over a second ({:?})",
        started.elapsed()
    );
    let mut wrong = 0;
    let mut throttled = 0;
    for g in guesses {
        match g.await.unwrap() {
            Ok(()) => panic!("a wrong password was let in"),
            Err(t) if t == "Wrong name or password." => wrong += 1,
            Err(t) if is_too_many_tries(&t) => throttled += 1,
            Err(t) => panic!("unexpected refusal {t:?}"),
        }
    }
    assert!(wrong <= PER_MINUTE, "{wrong} guesses were checked");
    assert_eq!(wrong + throttled, 300);
    // The log agrees: one "login failed" line per password hashed and found wrong.
    assert!(
        server.log_count("login failed") <= PER_MINUTE,
        "{}",
        server.log()
    );
    // The attacker's right guess, sent last, is refused too: the address has used its tries.
    let last = try_login(&server, "127.0.0.2", "Bob", "bob-password").await;
    assert!(matches!(&last, Err(t) if is_too_many_tries(t)), "{last:?}");
}

#[bounded]
#[tokio::test]
async fn guesses_from_elsewhere_never_lock_out_the_player() {
    let server = TestServer::start_with_config(CONFIG, &[]);
    add_account(&server, "Bob", "bob-password");
    // Four hosts guess at Bob until each is throttled.
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for i in 0..PER_MINUTE {
            let r = try_login(&server, host, "Bob", &format!("nope-{i}")).await;
            assert_eq!(r, Err("Wrong name or password.".to_string()));
        }
        let r = try_login(&server, host, "Bob", "nope-again").await;
        assert!(matches!(&r, Err(t) if is_too_many_tries(t)), "{r:?}");
    }
    // Bob, from his own address, with his password, is let in.
    assert_eq!(
        try_login(&server, "127.0.0.6", "Bob", "bob-password").await,
        Ok(())
    );
}

#[bounded]
#[tokio::test]
async fn in_world_registration_and_the_name_lookup_cost_the_address_attempts() {
    // Auto-registration on: the in-world prompt registers unknown names.
    let server = TestServer::start_with_config("[auth]\nhash_threads = 2\n", &[]);
    for i in 0..PER_MINUTE {
        let mut c = enter_from("127.0.0.2", server.addr, &format!("Throwaway{i}"), None).await;
        let p = c.wait_for(|e| matches!(e, Event::Prompt(_))).await.unwrap();
        assert_eq!(
            p.text().unwrap(),
            b"New avatar. Choose a password: ",
            "attempt {i}"
        );
        c.answer(p.text().unwrap(), b"a-good-password")
            .await
            .unwrap();
        let p = c.wait_for(|e| matches!(e, Event::Prompt(_))).await.unwrap();
        assert_eq!(p.text().unwrap(), b"Again: ");
        c.answer(b"Again: ", b"a-good-password").await.unwrap();
        server.wait_for_log_count("new avatar registered in-world", i + 1);
        c.quit().await.unwrap();
    }
    // The sixth name is not even looked up: the prompt would tell a prober whether it
    // exists (L4), and registering it would make a sixth throwaway avatar (M4).
    let mut c = client_from("127.0.0.2", server.addr, "Throwaway9", None).await;
    match c.im_alive().await {
        Err(ClientError::Refused(said)) => assert!(is_too_many_tries(&said), "{said:?}"),
        other => panic!("the sixth was let in: {other:?}"),
    }
    // Another address may still register.
    let mut c = enter_from("127.0.0.3", server.addr, "Newcomer", None).await;
    let p = c.wait_for(|e| matches!(e, Event::Prompt(_))).await.unwrap();
    assert_eq!(p.text().unwrap(), b"New avatar. Choose a password: ");
}

#[bounded]
#[tokio::test]
async fn name_lookups_at_the_prompt_are_throttled_even_when_nobody_answers() {
    let server = TestServer::start_with_config(CONFIG, &[]);
    add_account(&server, "Bob", "bob-password");
    // A prober asks about names and hangs up at each prompt.
    for i in 0..PER_MINUTE {
        let mut c = enter_from("127.0.0.2", server.addr, &format!("Probe{i}"), None).await;
        c.wait_for(|e| matches!(e, Event::Prompt(_))).await.unwrap();
        drop(c);
    }
    // Refused before any seat or prompt: nothing tells whether Bob exists.
    let mut c = client_from("127.0.0.2", server.addr, "Bob", None).await;
    match c.im_alive().await {
        Err(ClientError::Refused(said)) => assert!(is_too_many_tries(&said), "{said:?}"),
        other => panic!("a sixth lookup was made: {other:?}"),
    }
    // The same name from another address gets its prompt.
    let mut c = enter_from("127.0.0.3", server.addr, "Bob", None).await;
    let p = c.wait_for(|e| matches!(e, Event::Prompt(_))).await.unwrap();
    assert_eq!(p.text().unwrap(), b"Password: ");
}

#[bounded(secs = 180)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_hashing_leaves_memory_within_the_bound() {
    let server = TestServer::start_with_config(CONFIG, &[]);
    add_account(&server, "Bob", "bob-password");
    // One login first, so the hashing threads and their first buffers exist.
    assert_eq!(
        try_login(&server, "127.0.0.2", "Bob", "bob-password").await,
        Ok(())
    );
    let before = server.rss_kib();
    // 500 wrong guesses from 100 addresses (each within its five a minute), 50 at a time,
    // each at its own name (past 100 failures at one name, its ceiling would stop them
    // before hashing): every one of them is hashed.
    let server = std::sync::Arc::new(server);
    let mut hashed = 0;
    for wave in 0..10 {
        let batch: Vec<_> = (0..50)
            .map(|j| {
                let server = server.clone();
                let n = wave * 50 + j;
                let host = format!("127.0.1.{}", 2 + n % 100);
                let name = format!("Guess{n}");
                tokio::spawn(async move { try_login(&server, &host, &name, "wrong-one").await })
            })
            .collect();
        for r in batch {
            match r.await.unwrap() {
                Err(t) if t == "Wrong name or password." => hashed += 1,
                Err(t) if is_too_many_tries(&t) => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert!(hashed >= 400, "only {hashed} of 500 were hashed");
    let after = server.rss_kib();
    eprintln!("RSS {before} KiB -> {after} KiB after {hashed} hashed attempts");
    // README: hashing holds at most hash_threads × 16 MiB (here 32 MiB); 48 MiB more for
    // the allocator's arenas and the connections' buffers (about 50 MiB in all measured).
    let bound_kib = (2 * 16 + 48) * 1024;
    assert!(
        after.saturating_sub(before) <= bound_kib,
        "RSS grew from {before} KiB to {after} KiB after {hashed} hashed attempts"
    );
}
