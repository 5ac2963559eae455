//! Full disk (issue 5): when the store cannot grow, the sender is told
//! "ESP Mail could not be saved. Not sent.", the server stays up, and what was saved
//! before is intact and deliverable; once delivery frees space, saving works again.
//!
//! "Full" is SQLite's `max_page_count`, set through the test-only environment variable
//! `ESPMAIL_TEST_MAX_DB_PAGES` (see `espmail::espmail::store::TEST_MAX_PAGES_ENV`): a write
//! past it fails with SQLITE_FULL, the same error SQLite returns when the file system is
//! full, and it needs neither root nor a tmpfs, so CI runs it everywhere.
//!
//! This file holds one test on purpose: it sets the environment variable for the servers
//! it starts, which must not leak into another test of the same process.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod durability_support;

use espmail_test_macros::bounded;
use std::collections::HashMap;
use std::path::Path;

use common::TestServer;
use durability_support::{enter, integrity_check, offer, read_all, visit, CONFIG};
use espmail::espmail::store::TEST_MAX_PAGES_ENV;

const SAVED: &str = "ESP Mail for Bob saved.";
const FAILED: &str = "ESP Mail could not be saved. Not sent.";

/// Bob's mail, texts only (every sender here is Alice).
async fn bob_reads_all(host: &str) -> Vec<String> {
    read_all(host, "Bob")
        .await
        .into_iter()
        .map(|(from, text)| {
            assert_eq!(from, "Alice");
            text
        })
        .collect()
}

fn read_only(db: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// Stops the server cleanly (SIGTERM) and waits for it.
fn stop(server: &mut TestServer) {
    server.signal("TERM");
    let status = server.wait_exit();
    assert!(status.success(), "server exit: {status:?}");
}

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_refuses_new_mail_stays_up_and_keeps_what_it_saved() {
    std::env::remove_var(TEST_MAX_PAGES_ENV);
    let mut server = tokio::task::block_in_place(|| TestServer::start_with_config(CONFIG, &[]));
    let host = server.host();
    for name in ["Alice", "Bob"] {
        visit(&host, name).await;
    }

    // Saved while there is room.
    let mut saved: Vec<String> = Vec::new();
    let mut alice = enter(&host, "Alice").await.unwrap();
    for i in 0..3 {
        let text = format!("before-full {i} a5e1");
        assert_eq!(offer(&mut alice, "Bob", &text).await.unwrap(), SAVED);
        saved.push(text);
    }
    alice.quit().await.unwrap();
    alice.wait_closed().await.unwrap();

    // Fill "the disk": the next start may grow the database by only a few pages.
    tokio::task::block_in_place(|| stop(&mut server));
    let db = server.data_dir.join("espmail.db");
    let pages: i64 = read_only(&db)
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    std::env::set_var(TEST_MAX_PAGES_ENV, (pages + 3).to_string());
    let server = tokio::task::block_in_place(|| server.restart());
    server.wait_for_log("database size capped (test only)");
    let host = server.host();

    // Keep sending until the store is full; each answer is either saved or refused. A
    // fresh connection for each offer: the server lets one connection send only a burst
    // of 8 lines, then 2 a second, and each offer is two lines (TO: and ESP:).
    let mut refused = Vec::new();
    let mut alice = None;
    for i in 0..400 {
        let mut c = enter(&host, "Alice").await.unwrap();
        let text = format!("filling {i} 7c02");
        let answer = offer(&mut c, "Bob", &text).await.unwrap();
        match answer.as_str() {
            SAVED => saved.push(text),
            FAILED => {
                refused.push(text);
                alice = Some(c);
                break;
            }
            other => panic!("unexpected answer {other:?}"),
        }
        c.quit().await.unwrap();
        c.wait_closed().await.unwrap();
    }
    let mut alice = alice.expect("the store never filled up");
    // Still full, still answering, on the same connection.
    let again = "refused again 3b9d".to_string();
    assert_eq!(offer(&mut alice, "Bob", &again).await.unwrap(), FAILED);
    refused.push(again);
    alice.quit().await.unwrap();
    alice.wait_closed().await.unwrap();
    // The operator learns why (SQLite: "database or disk is full").
    let line = server.wait_for_log("ESP Mail could not be saved");
    assert!(line.contains("full"), "log line without the cause: {line}");

    // The server is up and what it saved is intact: Bob gets exactly the saved texts and
    // none of the refused ones. Deleting them needs no new pages. (Compared as sets: the
    // store orders by send time in whole seconds, so mail sent within one second may come
    // in either order.)
    let got = bob_reads_all(&host).await;
    let mut sorted_got = got.clone();
    sorted_got.sort();
    let mut sorted_saved = saved.clone();
    sorted_saved.sort();
    assert_eq!(
        sorted_got, sorted_saved,
        "delivered mail differs from what was saved"
    );
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for t in &got {
        *seen.entry(t.as_str()).or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1));
    for r in &refused {
        assert!(
            !seen.contains_key(r.as_str()),
            "refused {r:?} was delivered"
        );
    }
    assert!(
        bob_reads_all(&host).await.is_empty(),
        "mail left after reading"
    );

    // Delivery freed pages: the same capped store saves again.
    let mut alice = enter(&host, "Alice").await.unwrap();
    let after = "after-space-freed 90ee".to_string();
    assert_eq!(offer(&mut alice, "Bob", &after).await.unwrap(), SAVED);
    alice.quit().await.unwrap();
    alice.wait_closed().await.unwrap();
    assert_eq!(bob_reads_all(&host).await, vec![after]);

    // No text in the log, and the database is sound.
    let log = server.log();
    for t in saved.iter().chain(&refused) {
        assert!(!log.contains(t.as_str()), "message text in the log");
    }
    let mut server = server;
    tokio::task::block_in_place(|| stop(&mut server));
    std::env::remove_var(TEST_MAX_PAGES_ENV);
    assert_eq!(integrity_check(&db), "ok");
    eprintln!(
        "full store: {} saved ({} under a cap of {} pages), {} refused, all saved delivered",
        saved.len(),
        saved.len() - 3,
        pages + 3,
        refused.len()
    );
}
