//! Forensic test (promises 2 and 4): scan the raw bytes of the database, `-wal` and `-shm`
//! files. No canary text and no name ever appears; after delivery and confirmation, nothing
//! of the deleted rows (ciphertexts, key parts, ids) remains anywhere in the files.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use espmail::espmail::keyfile;
use espmail::espmail::{Limits, MailHandle};
use espmail::log_redact::Sensitive;

fn files_of(db: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    ["", "-wal", "-shm", "-journal"]
        .iter()
        .filter_map(|suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            let p = PathBuf::from(p);
            std::fs::read(&p).ok().map(|bytes| (p, bytes))
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Fails naming the file and what was found there.
fn assert_absent(db: &Path, needles: &[(String, Vec<u8>)], when: &str) {
    let files = files_of(db);
    assert!(!files.is_empty());
    for (path, bytes) in &files {
        for (what, needle) in needles {
            assert!(
                !find(bytes, needle),
                "{when}: {what} found in {} ({} bytes)",
                path.display(),
                bytes.len()
            );
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[bounded]
#[tokio::test]
async fn nothing_said_no_name_and_nothing_deleted_remains_in_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mail.db");
    let key = dir.path().join("espmail.key");
    keyfile::create(&key).unwrap();
    let mut r = [0u8; 8];
    openssl::rand::rand_bytes(&mut r).unwrap();
    let canary = format!("CANARY{}", hex(&r));
    let sender = "Zorblaxian";
    let recipients = ["Quuxington", "Frobnitzia", "Wibblethorpe"];
    let keeper = "Keepsakeson"; // mail that stays, so the files keep live pages too

    let h = MailHandle::open(&db, &key, Limits::default()).unwrap();
    for i in 0..30 {
        let to = recipients[i % recipients.len()];
        let t = format!("{canary} message {i} for {to}");
        h.save(
            to,
            sender,
            Sensitive::new(t.into_bytes()),
            SystemTime::now(),
        )
        .await
        .unwrap();
    }
    for i in 0..5 {
        let t = format!("kept {i} KEEPSAKE{}", hex(&r));
        h.save(
            keeper,
            sender,
            Sensitive::new(t.into_bytes()),
            SystemTime::now(),
        )
        .await
        .unwrap();
    }

    // Names and text in every spelling a careless implementation might store.
    let mut secrets: Vec<(String, Vec<u8>)> = vec![
        ("canary text".into(), canary.as_bytes().to_vec()),
        (
            "keepsake text".into(),
            format!("KEEPSAKE{}", hex(&r)).into_bytes(),
        ),
        ("sender name".into(), sender.as_bytes().to_vec()),
        ("sender name".into(), sender.to_lowercase().into_bytes()),
    ];
    for name in recipients.iter().chain([&keeper]) {
        secrets.push(("recipient name".into(), name.as_bytes().to_vec()));
        secrets.push(("recipient name".into(), name.to_lowercase().into_bytes()));
    }
    assert_absent(&db, &secrets, "while stored");

    // What the rows hold, read before delivery, to look for after deletion.
    let mut doomed: Vec<(String, Vec<u8>)> = Vec::new();
    {
        let raw = rusqlite::Connection::open(&db).unwrap();
        let mut st = raw
            .prepare("SELECT id, key_part, sealed FROM mail")
            .unwrap();
        let rows: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), 35);
        let keeper_blinds = h.count_waiting(keeper).await.unwrap();
        assert_eq!(keeper_blinds, 5);
        let kept_ids: Vec<Vec<u8>> = {
            let kf = keyfile::load(&key).unwrap();
            let ring = espmail::espmail::crypto::Keyring::new(&kf).unwrap();
            let (_, b) = ring.blinds(keeper).unwrap()[0];
            let mut st = raw.prepare("SELECT id FROM mail WHERE blind = ?1").unwrap();
            st.query_map([&b[..]], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(kept_ids.len(), 5);
        for (id, key_part, sealed) in rows {
            if kept_ids.contains(&id) {
                continue;
            }
            doomed.push((format!("key part of {}", hex(&id)), key_part));
            // The whole sealed value and every 24-byte piece of it (a partial survivor).
            for (n, chunk) in sealed.chunks(24).enumerate() {
                doomed.push((
                    format!("ciphertext chunk {n} of {}", hex(&id)),
                    chunk.to_vec(),
                ));
            }
            doomed.push((format!("id {}", hex(&id)), id));
        }
        assert_eq!(doomed.len(), 30 * (1 + 23 + 1));
    }

    for name in recipients {
        let mut mb = h.open_mailbox(name).await.unwrap();
        assert_eq!(mb.remaining(), 10);
        while let Some(m) = mb.next() {
            assert!(m.text.expose().starts_with(canary.as_bytes()));
            assert!(mb.confirm(m.id).await.unwrap());
        }
    }
    // One more round trip: the writer has finished the batch (and its checkpoint) before
    // answering this.
    let s = h.stats().await.unwrap();
    assert_eq!((s.waiting, s.delivered), (5, 30));

    // Server still running: database, WAL and shared-memory files are all present.
    assert_absent(&db, &secrets, "after delivery, server running");
    assert_absent(&db, &doomed, "after delivery, server running");

    h.shutdown().await.unwrap();
    assert_absent(&db, &secrets, "after shutdown");
    assert_absent(&db, &doomed, "after shutdown");

    // The kept mail is intact.
    let h = MailHandle::open(&db, &key, Limits::default()).unwrap();
    let mb = h.open_mailbox(keeper).await.unwrap();
    assert_eq!(mb.remaining(), 5);
    drop(mb);
    h.shutdown().await.unwrap();
}
