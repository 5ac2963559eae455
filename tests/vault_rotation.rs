//! Key rotation and offline commands beside a running server.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::time::SystemTime;

use espmail::espmail::keyfile;
use espmail::espmail::{offline, Limits, MailHandle, StoreError};

mod vault_support;
use vault_support::{text, Vault};

async fn fill(v: &Vault, n: usize) {
    let h = MailHandle::open(&v.db, &v.key, Limits::default()).unwrap();
    for i in 0..n {
        h.save(
            &format!("r{}", i % 3),
            "alice",
            text(&format!("m{i}")),
            SystemTime::now(),
        )
        .await
        .unwrap();
    }
    h.shutdown().await.unwrap();
}

async fn all_texts(v: &Vault) -> Vec<String> {
    let h = MailHandle::open(&v.db, &v.key, Limits::default()).unwrap();
    let mut out = Vec::new();
    for r in 0..3 {
        let mut mb = h.open_mailbox(&format!("r{r}")).await.unwrap();
        while let Some(m) = mb.next() {
            out.push(String::from_utf8(m.text.expose().clone()).unwrap());
        }
    }
    assert_eq!(h.stats().await.unwrap().quarantined, 0);
    h.shutdown().await.unwrap();
    out.sort();
    out
}

#[bounded]
#[tokio::test]
async fn rotation_reencrypts_everything_then_allows_retiring_the_old_key() {
    let v = Vault::new();
    fill(&v, 20).await;
    let before = all_texts(&v).await;
    assert_eq!(before.len(), 20);
    let old_secret = *keyfile::load(&v.key).unwrap().active().1.expose();

    // Stop after one batch of 7, as a crash between transactions would.
    let r = offline::rotate_steps(&v.db, &v.key, &Limits::default(), 7, Some(1)).unwrap();
    assert_eq!(
        (r.active, r.started, r.reencrypted, r.complete),
        (2, true, 7, false)
    );
    assert!(r.retirable.is_empty());
    // Mid-rotation the server works: mail under both keys is found and new mail uses key 2.
    assert_eq!(all_texts(&v).await, before);
    let s = offline::stats(&v.db, &Limits::default()).unwrap();
    assert_eq!(s.per_key, vec![(1, 13), (2, 7)]);
    match offline::retire(&v.db, &v.key, &Limits::default(), 1) {
        Err(StoreError::KeyInUse {
            key_id: 1,
            mail: 13,
            quarantined: 0,
        }) => {}
        other => panic!("retiring a key in use must be refused: {other:?}"),
    }

    // Running it again continues the same rotation (no third key) and finishes it.
    let r = offline::rotate(&v.db, &v.key, &Limits::default(), 7).unwrap();
    assert_eq!(
        (r.active, r.started, r.reencrypted, r.complete),
        (2, false, 13, true)
    );
    assert_eq!(r.retirable, vec![1]);
    let s = offline::stats(&v.db, &Limits::default()).unwrap();
    assert_eq!(s.per_key, vec![(2, 20)]);

    match offline::retire(&v.db, &v.key, &Limits::default(), 2) {
        Err(StoreError::Keyfile(msg)) => assert!(msg.contains("active"), "{msg}"),
        other => panic!("retiring the active key must be refused: {other:?}"),
    }
    offline::retire(&v.db, &v.key, &Limits::default(), 1).unwrap();
    let kf = keyfile::load(&v.key).unwrap();
    assert_eq!(kf.keys().map(|(id, _)| id).collect::<Vec<_>>(), vec![2]);
    assert_ne!(*kf.active().1.expose(), old_secret);
    assert_eq!(all_texts(&v).await, before);

    // The next rotation starts afresh with key 3.
    let r = offline::rotate(&v.db, &v.key, &Limits::default(), 100).unwrap();
    assert_eq!((r.active, r.started, r.reencrypted), (3, true, 20));
}

#[bounded]
#[tokio::test]
async fn a_keyfile_without_a_needed_key_is_refused() {
    let v = Vault::new();
    fill(&v, 4).await;
    offline::rotate_steps(&v.db, &v.key, &Limits::default(), 1, Some(1)).unwrap();
    // Drop key 1 from the keyfile by hand while 3 rows still need it.
    let mut kf = keyfile::load(&v.key).unwrap();
    kf.remove_key(1).unwrap();
    keyfile::save(&v.key, &kf).unwrap();
    match MailHandle::open(&v.db, &v.key, Limits::default()) {
        Err(e @ StoreError::MissingKey { key_id: 1, rows: 3 }) => {
            assert!(e.to_string().contains("restore"), "{e}")
        }
        other => panic!("expected MissingKey, got {other:?}"),
    }
}

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_commands_work_beside_a_running_server() {
    let v = Vault::new();
    let h = MailHandle::open(&v.db, &v.key, Limits::default()).unwrap();
    for i in 0..5 {
        h.save("bob", "alice", text(&format!("m{i}")), SystemTime::now())
            .await
            .unwrap();
    }
    // Stats and a deletion from "another process" (another connection) while the server runs.
    let (db, key) = (v.db.clone(), v.key.clone());
    let (stats, removed) = tokio::task::spawn_blocking(move || {
        let s = offline::stats(&db, &Limits::default()).unwrap();
        let n = offline::delete_all_for(&db, &key, &Limits::default(), "BOB").unwrap();
        (s, n)
    })
    .await
    .unwrap();
    assert_eq!(stats.waiting, 5);
    assert_eq!(removed, 5);
    // The server sees the change and keeps working.
    assert_eq!(h.count_waiting("bob").await.unwrap(), 0);
    h.save("bob", "alice", text("after"), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(h.count_waiting("bob").await.unwrap(), 1);
    h.shutdown().await.unwrap();
}

/// Issue 10 M4: one sender's share of a box (`max_per_sender`) is capped, other senders
/// still get in, and the count survives a key rotation (the pair index moves with the
/// row).
#[bounded]
#[tokio::test]
async fn one_senders_share_of_a_box_is_capped_across_a_rotation() {
    use espmail::espmail::SaveError;
    let v = Vault::new();
    let limits = Limits {
        max_per_sender: 3,
        ..Limits::default()
    };
    let h = MailHandle::open(&v.db, &v.key, limits.clone()).unwrap();
    for i in 0..3 {
        h.save("bob", "Eve", text(&format!("e{i}")), SystemTime::now())
            .await
            .unwrap();
    }
    // The same sender, however the name is typed, is refused; the box is untouched.
    match h.save("Bob", " eve ", text("e3"), SystemTime::now()).await {
        Err(SaveError::SenderCap { max: 3 }) => {}
        other => panic!("expected SenderCap, got {other:?}"),
    }
    assert_eq!(h.count_waiting("bob").await.unwrap(), 3);
    // Another sender, and the same sender to someone else, are not affected.
    h.save("bob", "Alice", text("a0"), SystemTime::now())
        .await
        .unwrap();
    h.save("carol", "Eve", text("e-carol"), SystemTime::now())
        .await
        .unwrap();
    h.shutdown().await.unwrap();

    let r = offline::rotate(&v.db, &v.key, &limits, 100).unwrap();
    assert!(r.complete);
    let h = MailHandle::open(&v.db, &v.key, limits).unwrap();
    assert!(matches!(
        h.save("bob", "Eve", text("e4"), SystemTime::now()).await,
        Err(SaveError::SenderCap { max: 3 })
    ));
    // Reading one of Eve's (the oldest comes first) frees a place for her.
    let mut mb = h.open_mailbox("bob").await.unwrap();
    let first = mb.next().unwrap();
    assert_eq!(first.sender, "Eve");
    mb.confirm(first.id).await.unwrap();
    drop(mb);
    h.save("bob", "Eve", text("e5"), SystemTime::now())
        .await
        .unwrap();
    h.shutdown().await.unwrap();
}
