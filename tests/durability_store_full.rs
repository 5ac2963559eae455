//! Full disk under concurrent load, at the store (issue 5): the group-commit writer runs
//! many saves in one transaction. When one of them meets a full disk, SQLite undoes the
//! whole transaction by itself; every save in that batch must then be told "not saved",
//! and none of them may be stored anyway. Checked: the set of texts in the store is
//! exactly the set of saves that were told "saved" — no loss, no ghost.
//!
//! "Full" is `ESPMAIL_TEST_MAX_DB_PAGES` (SQLite's `max_page_count`, see
//! `espmail::espmail::store::TEST_MAX_PAGES_ENV`). One test in this file on purpose: it
//! sets that variable for its process.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::collections::HashSet;
use std::time::SystemTime;

use espmail::espmail::keyfile;
use espmail::espmail::service::MailHandle;
use espmail::espmail::store::{Limits, SaveError, StoreError, TEST_MAX_PAGES_ENV};
use espmail::log_redact::Sensitive;

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_meets_a_full_disk_stores_nothing_it_was_told_not_to() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mail.db");
    let key = dir.path().join("keyfile");
    keyfile::create(&key).unwrap();
    let limits = Limits {
        max_per_recipient: 1_000_000,
        // Many saves from one sender: the per-sender cap is not under test.
        max_per_sender: usize::MAX,
        ..Limits::default()
    };

    // Create the database, note its size, and let it grow by only a few pages.
    MailHandle::open(&db, &key, limits.clone())
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let pages: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    std::env::set_var(TEST_MAX_PAGES_ENV, (pages + 40).to_string());
    let h = MailHandle::open(&db, &key, limits.clone()).unwrap();

    // Waves of concurrent saves, so the writer commits many per transaction, until a
    // whole wave is refused.
    let mut told_saved = HashSet::new();
    let mut told_full = 0usize;
    let mut other_errors = Vec::new();
    for wave in 0..100 {
        let tasks: Vec<_> = (0..48)
            .map(|i| {
                let h = h.clone();
                let t = format!("wave {wave} msg {i}");
                tokio::spawn(async move {
                    let r = h
                        .save(
                            "bob",
                            "alice",
                            Sensitive::new(t.clone().into_bytes()),
                            SystemTime::now(),
                        )
                        .await;
                    (t, r)
                })
            })
            .collect();
        let mut refused_in_wave = 0;
        for task in tasks {
            let (t, r) = task.await.unwrap();
            match r {
                Ok(_) => {
                    told_saved.insert(t);
                }
                Err(SaveError::Store(StoreError::DiskFull)) => {
                    told_full += 1;
                    refused_in_wave += 1;
                }
                Err(e) => {
                    other_errors.push(e.to_string());
                    refused_in_wave += 1;
                }
            }
        }
        if refused_in_wave == 48 {
            break;
        }
    }
    assert!(
        told_full + other_errors.len() > 0,
        "the store never filled up"
    );
    h.shutdown().await.unwrap();
    drop(h);
    std::env::remove_var(TEST_MAX_PAGES_ENV);

    // What is stored is exactly what was told "saved".
    let h = MailHandle::open(&db, &key, limits).unwrap();
    let mut mailbox = h.open_mailbox("bob").await.unwrap();
    let mut stored = HashSet::new();
    while let Some(m) = mailbox.next() {
        stored.insert(String::from_utf8_lossy(m.text.expose()).into_owned());
    }
    let ghosts: Vec<_> = stored.difference(&told_saved).collect();
    let lost: Vec<_> = told_saved.difference(&stored).collect();
    assert!(
        ghosts.is_empty(),
        "{} stored although told not saved (e.g. {:?}); other errors: {:?}",
        ghosts.len(),
        ghosts.first(),
        other_errors.first()
    );
    assert!(lost.is_empty(), "told saved but not stored: {lost:?}");
    assert!(
        other_errors.is_empty(),
        "a full disk should read as DiskFull, got {other_errors:?}"
    );
    eprintln!(
        "store full: {} saved, {} refused as disk full, stored == saved",
        told_saved.len(),
        told_full
    );
}
