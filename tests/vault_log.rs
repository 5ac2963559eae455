//! Promise 5 for the vault: no message text and no key reaches the log, at any level,
//! including the quarantine path on the writer thread. Alone in its binary: tracing's
//! per-callsite interest cache makes a scoped subscriber unreliable beside other tests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use espmail::espmail::keyfile;
use espmail::espmail::{Limits, MailHandle};
use espmail::log_redact::Sensitive;

fn text(s: &str) -> Sensitive<Vec<u8>> {
    Sensitive::new(s.as_bytes().to_vec())
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[bounded]
#[tokio::test]
async fn no_text_or_key_reaches_the_log_even_at_trace() {
    let cap = Captured::default();
    let writer = cap.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mail.db");
    let key = dir.path().join("key");
    keyfile::create(&key).unwrap();
    let h = MailHandle::open(&db, &key, Limits::default()).unwrap();
    let id = h
        .save("bob", "alice", text("CANARYLOGTEXT one"), SystemTime::now())
        .await
        .unwrap();
    h.save("bob", "alice", text("CANARYLOGTEXT two"), SystemTime::now())
        .await
        .unwrap();
    h.shutdown().await.unwrap();
    // Damage one row so the quarantine path logs too.
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE mail SET sealed = zeroblob(540) WHERE id != ?1",
            [&id.0[..]],
        )
        .unwrap();
    let h = MailHandle::open(&db, &key, Limits::default()).unwrap();
    let mut mb = h.open_mailbox("bob").await.unwrap();
    let m = mb.next().unwrap();
    assert_eq!(m.text.expose().as_slice(), b"CANARYLOGTEXT one");
    mb.confirm(m.id).await.unwrap();
    drop(mb);
    h.shutdown().await.unwrap();

    let log = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("quarantine"),
        "the quarantine is logged: {log}"
    );
    assert!(
        log.contains("ESP Mail committed"),
        "saves are logged at debug: {log}"
    );
    assert!(
        !log.contains("CANARYLOGTEXT"),
        "message text reached the log: {log}"
    );
    let kf = keyfile::load(&key).unwrap();
    let hex: String = kf
        .active()
        .1
        .expose()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(!log.contains(&hex), "key reached the log");
}
