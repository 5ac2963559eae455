//! The vault fixture shared by the library-level vault tests (tests/vault*.rs) and the
//! offline CLI tests: a fresh key file and database in a temporary directory, and the
//! one way these tests damage a stored ciphertext.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

use std::path::PathBuf;

use espmail::espmail::crypto::MailId;
use espmail::espmail::keyfile;
use espmail::espmail::{Limits, MailHandle};
use espmail::log_redact::Sensitive;
use rusqlite::Connection;

/// A new key file and a database path in a temporary directory, removed on drop.
pub struct Vault {
    /// The temporary directory holding both (for a test's own extra files).
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub key: PathBuf,
}

impl Vault {
    pub fn new() -> Vault {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("mail.db");
        let key = dir.path().join("espmail.key");
        keyfile::create(&key).unwrap();
        Vault { dir, db, key }
    }

    pub fn open(&self, limits: Limits) -> MailHandle {
        MailHandle::open(&self.db, &self.key, limits).unwrap()
    }

    /// The database itself, behind the vault's back.
    pub fn raw(&self) -> Connection {
        Connection::open(&self.db).unwrap()
    }
}

/// Message text as the vault takes it.
pub fn text(s: &str) -> Sensitive<Vec<u8>> {
    Sensitive::new(s.as_bytes().to_vec())
}

/// XORs byte `at` of the stored ciphertext of `id` with `mask`, so the row no longer
/// authenticates; returns the ciphertext as it now stands.
pub fn flip_sealed_byte(raw: &Connection, id: &MailId, at: usize, mask: u8) -> Vec<u8> {
    let mut sealed: Vec<u8> = raw
        .query_row("SELECT sealed FROM mail WHERE id = ?1", [&id.0[..]], |r| {
            r.get(0)
        })
        .unwrap();
    sealed[at] ^= mask;
    raw.execute(
        "UPDATE mail SET sealed = ?1 WHERE id = ?2",
        rusqlite::params![sealed, &id.0[..]],
    )
    .unwrap();
    sealed
}
