//! What can go wrong in the vault's store, in words an operator can act on: [`StoreError`]
//! for the store itself and [`SaveError`] for one ESP Mail save (box full, too long, or the
//! store's own error). Cloneable, so one failed commit can answer every caller of its batch.
//!
//! May touch: nothing (pure types and their conversions).

use std::path::PathBuf;

use rusqlite::ErrorCode;

use super::crypto::{self, CryptoError};
use super::keyfile::{KeyId, KeyfileError};
use super::rows::RowId;

/// Why the store could not do what was asked. Cloneable: one failed commit answers every
/// caller of its batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The disk is full. What was committed before stays.
    #[error(
        "the disk holding the mail database is full: free some space (mail already saved is safe)"
    )]
    DiskFull,
    /// The database or its directory is read-only.
    #[error("the mail database is read-only (file permissions or a read-only mount): mail cannot be saved or deleted until it is writable")]
    ReadOnly,
    /// Another connection held a lock longer than the busy timeout.
    #[error("the mail database stayed locked by another process: try again when it is done")]
    Busy,
    /// The database file is damaged.
    #[error("the mail database is damaged ({0}): restore it from a backup")]
    Corrupt(String),
    /// The database file cannot be opened or the disk failed.
    #[error("mail database I/O failed: {0}")]
    Io(String),
    /// Any other SQLite error.
    #[error("mail database error: {0}")]
    Database(String),
    /// No database at the path (offline commands never create one).
    #[error("no mail database at {0}")]
    NoDatabase(PathBuf),
    /// The keyfile is not the one this database was made with.
    #[error("the keyfile does not match this mail database (key {key_id} differs): start with the keyfile created for this database (restore it from its backup); another keyfile cannot read the stored mail, so espmail will not start with it")]
    KeyMismatch {
        /// The key id whose check value differs (or the active key when none is known).
        key_id: KeyId,
    },
    /// Some rows need a key the keyfile no longer holds.
    #[error("{rows} stored messages need key {key_id}, which is not in the keyfile: restore the keyfile that still holds it")]
    MissingKey {
        /// The key id.
        key_id: KeyId,
        /// Rows (mail and quarantine) that need it.
        rows: u64,
    },
    /// Retiring a key that rows still use.
    #[error("{}", key_in_use_message(*key_id, *mail, *quarantined))]
    KeyInUse {
        /// The key id.
        key_id: KeyId,
        /// Mail rows under it.
        mail: u64,
        /// Quarantined rows under it.
        quarantined: u64,
    },
    /// `quarantine drop` named a row that is not in the quarantine.
    #[error("no quarantined row has the id {0} (`espmail quarantine list` shows them); nothing was dropped")]
    NotQuarantined(RowId),
    /// `quarantine drop` got an id that is not hex.
    #[error(
        "{0:?} is not a row id: give the hex id exactly as `espmail quarantine list` prints it"
    )]
    BadRowId(String),
    /// The database was written by a newer espmail.
    #[error("the mail database has schema version {found}, newer than this espmail knows ({known}): upgrade espmail")]
    SchemaTooNew {
        /// `user_version` found.
        found: i64,
        /// Migrations this build has.
        known: usize,
    },
    /// A limit is out of range.
    #[error("bad ESP Mail limit: {0}")]
    BadLimit(&'static str),
    /// The keyfile could not be used.
    #[error("{0}")]
    Keyfile(String),
    /// Encryption failed for a reason other than a bad row (e.g. the random generator).
    #[error("encryption failed: {0}")]
    Crypto(#[from] CryptoError),
    /// The writer has shut down (server stopping) or died.
    #[error("the mail store is shut down")]
    Closed,
    /// Another session holds this avatar's mailbox and did not release it in time.
    #[error("the mailbox is in use by another session")]
    MailboxBusy,
}

/// The words for [`StoreError::KeyInUse`]: waiting mail is finished by the rotation;
/// quarantined rows never open again, so only an operator's `quarantine drop` (or their
/// expiry day) removes them, and the message says so.
fn key_in_use_message(key_id: KeyId, mail: u64, quarantined: u64) -> String {
    let mut m = format!("key {key_id} was not retired:");
    if mail > 0 {
        m += &format!(
            " it still seals {mail} waiting messages (run `espmail rotate-key` to the end first)"
        );
    }
    if quarantined > 0 {
        if mail > 0 {
            m += ";";
        }
        m += &format!(
            " {quarantined} quarantined rows are under it; they failed to open and will never \
             be delivered: `espmail quarantine list` shows them, `espmail quarantine drop --all` \
             (or `drop ID`) removes them, then run `espmail rotate-key --retire-old` again"
        );
    }
    m
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull,
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy,
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(e.to_string())
            }
            Some(ErrorCode::CannotOpen | ErrorCode::SystemIoFailure) => {
                StoreError::Io(e.to_string())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

impl From<KeyfileError> for StoreError {
    fn from(e: KeyfileError) -> Self {
        StoreError::Keyfile(e.to_string())
    }
}

/// Why a message was not saved: each refusal distinct, so the server can answer with the
/// words of ESPMAIL.md (box full, too long, "could not be saved").
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// The recipient already has `max` messages waiting.
    #[error("the recipient's ESP Mail box is full ({max} messages)")]
    BoxFull {
        /// The limit.
        max: usize,
    },
    /// The sender already has `max` messages waiting for this recipient.
    #[error("the sender already has {max} ESP Mail waiting for this recipient")]
    SenderCap {
        /// The limit.
        max: usize,
    },
    /// The text is longer than the limit.
    #[error("text of {len} bytes is over the {max}-byte limit")]
    TextTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A name is empty or too long.
    #[error("a name must be 1 to {} bytes", crypto::MAX_NAME_LEN)]
    BadName,
    /// The store could not save it (disk full, read-only, shut down, ...).
    #[error("ESP Mail could not be saved: {0}")]
    Store(#[from] StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_in_use_names_the_quarantine_commands_only_when_they_help() {
        let q = StoreError::KeyInUse {
            key_id: 1,
            mail: 0,
            quarantined: 3,
        }
        .to_string();
        assert!(q.contains("3 quarantined rows"), "{q}");
        assert!(q.contains("espmail quarantine drop --all"), "{q}");
        assert!(!q.contains("waiting"), "{q}");
        let m = StoreError::KeyInUse {
            key_id: 1,
            mail: 2,
            quarantined: 0,
        }
        .to_string();
        assert!(m.contains("2 waiting messages"), "{m}");
        assert!(!m.contains("quarantine"), "{m}");
    }
}
