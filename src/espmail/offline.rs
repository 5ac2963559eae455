//! Synchronous entry points for CLI commands: `espmail stats`, `purge`, `rotate`,
//! `account remove`, `quarantine list|drop`. Each opens the database itself, does its
//! work in short transactions and returns.
//!
//! They are meant for a stopped server, but stay safe beside a running one: both sides use
//! WAL mode and a busy timeout, so a command waits for the server's brief write transactions
//! (and the server for the command's), readers never block, and every change is one
//! transaction. `rotate` should still be run with the server stopped: the server keeps
//! sealing new mail under the key it started with, so the rotation would not finish — but
//! nothing is lost, because retiring refuses while any row still needs the old key.
//!
//! May touch: the database and the keyfile.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::TransactionBehavior;
use tracing::info;

use super::crypto::Keyring;
use super::keyfile::{self, KeyId};
use super::store::{
    self, connect, Limits, Purged, QuarantineSelect, QuarantinedRow, Stats, Store, StoreError,
};

/// Counts for `espmail stats`. Needs no keyfile (nothing in the counts is secret).
pub fn stats(db_path: &Path, limits: &Limits) -> Result<Stats, StoreError> {
    let conn = connect(db_path, limits, false)?;
    store::stats(&conn, db_path, limits, SystemTime::now())
}

/// Rows deleted per transaction by [`purge_in_batches`] as `espmail purge` runs it: a
/// running server's writer never waits long, and progress can be shown between batches.
pub const PURGE_BATCH: usize = 1024;

/// `espmail purge`: deletes mail, and quarantined rows, past their expiry day. Needs no
/// keyfile (the expiry day is the one clear-text date in a row, for this purpose).
pub fn purge(db_path: &Path, limits: &Limits, now: SystemTime) -> Result<Purged, StoreError> {
    purge_in_batches(db_path, limits, now, PURGE_BATCH, &mut |_, _| {})
}

/// [`purge`] in transactions of at most `batch_rows` rows, calling `progress(done,
/// total)` after each (total: the rows past their expiry day when it began). Each batch
/// commits on its own; a purge cut short is finished by running it again. The counts are
/// the rows this run deleted.
pub fn purge_in_batches(
    db_path: &Path,
    limits: &Limits,
    now: SystemTime,
    batch_rows: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Purged, StoreError> {
    let mut conn = connect(db_path, limits, false)?;
    let today = store::day_of(now);
    let (mail, quarantined) = store::expired_rows(&conn, today)?;
    let total = mail + quarantined;
    let mut n = Purged::default();
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let step = store::purge_some(&tx, today, batch_rows.max(1))?;
        tx.commit()?;
        if step.total() == 0 {
            break;
        }
        n.mail += step.mail;
        n.quarantined += step.quarantined;
        progress(u64::try_from(n.total()).unwrap_or(u64::MAX), total);
    }
    if n.quarantined > 0 {
        info!(
            quarantined = n.quarantined,
            "quarantined ESP Mail rows past their expiry day deleted by retention"
        );
    }
    if n.total() > 0 {
        checkpoint(&conn);
    }
    Ok(n)
}

/// `espmail quarantine list`: the quarantined rows, without the keyfile (ids, key ids,
/// ages, reason codes; never content).
pub fn quarantine_list(
    db_path: &Path,
    limits: &Limits,
    now: SystemTime,
) -> Result<Vec<QuarantinedRow>, StoreError> {
    let conn = connect(db_path, limits, false)?;
    store::quarantine_list(&conn, store::day_of(now))
}

/// `espmail quarantine drop ID…|--all`: the operator's decision to delete quarantined
/// rows, in one transaction, logged at info with the count. Needs no keyfile: nothing is
/// opened. Safe beside a running server (it only ever adds to the quarantine).
pub fn quarantine_drop(
    db_path: &Path,
    limits: &Limits,
    which: &QuarantineSelect,
) -> Result<usize, StoreError> {
    let mut conn = connect(db_path, limits, false)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = store::quarantine_drop(&tx, which)?;
    tx.commit()?;
    info!(
        dropped = n,
        "quarantined ESP Mail rows dropped by the operator"
    );
    if n > 0 {
        checkpoint(&conn);
    }
    Ok(n)
}

/// Pushes deleted pages out of the WAL. Best effort: a running server's reader may hold
/// it back; the server checkpoints again later.
fn checkpoint(conn: &rusqlite::Connection) {
    let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
}

/// `espmail check`: whether `keys` (the loaded keyfile) are the keys this database was
/// made with, and hold every key a stored row needs; writes nothing (no migration, no new
/// check values), so it is safe beside a running server and before an upgrade.
pub fn verify_keyfile(db_path: &Path, keys: &Keyring, limits: &Limits) -> Result<(), StoreError> {
    let conn = connect(db_path, limits, false)?;
    store::schema_not_newer(&conn)?;
    store::verify_keys(&conn, keys)
}

/// Opens the store with the keyfile at `keyfile_path` (offline use).
pub fn open(db_path: &Path, keyfile_path: &Path, limits: &Limits) -> Result<Store, StoreError> {
    if !db_path.exists() {
        return Err(StoreError::NoDatabase(db_path.to_path_buf()));
    }
    let kf = keyfile::load(keyfile_path)?;
    Store::open(db_path, Arc::new(Keyring::new(&kf)?), limits.clone())
}

/// `account remove`: deletes every message waiting for `recipient`; returns how many.
pub fn delete_all_for(
    db_path: &Path,
    keyfile_path: &Path,
    limits: &Limits,
    recipient: &str,
) -> Result<usize, StoreError> {
    let mut store = open(db_path, keyfile_path, limits)?;
    let blinds = store.keys().blinds(recipient)?;
    store.delete_all_for(&blinds)
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// The key that seals mail now.
    pub active: KeyId,
    /// Whether this run made that key (false: it finished an earlier run).
    pub started: bool,
    /// Rows re-encrypted by this run (quarantined rows are not among them).
    pub reencrypted: usize,
    /// Rows this run found it could not open: moved to quarantine, not re-encrypted.
    pub quarantined: usize,
    /// Whether every row is now under the active key.
    pub complete: bool,
    /// Old keys no row needs any more: `espmail rotate --retire ID` may remove them.
    pub retirable: Vec<KeyId>,
    /// Old keys no waiting message needs but quarantined rows still name, with their count:
    /// they retire only after `espmail quarantine drop` (or retention) removes those rows.
    pub held_by_quarantine: Vec<(KeyId, u64)>,
}

/// `espmail rotate`: makes a new active key (only when the keyfile holds a single key;
/// otherwise it finishes the rotation already under way), then re-encrypts every row in
/// transactions of at most `batch_rows`. Restartable at any point: the keyfile is replaced
/// atomically before any row uses the new key, and each batch commits on its own.
pub fn rotate(
    db_path: &Path,
    keyfile_path: &Path,
    limits: &Limits,
    batch_rows: usize,
) -> Result<RotateReport, StoreError> {
    rotate_steps(db_path, keyfile_path, limits, batch_rows, None)
}

/// [`rotate`], stopping after at most `max_steps` batches when given (tests use it to stop
/// midway, as a crash would).
pub fn rotate_steps(
    db_path: &Path,
    keyfile_path: &Path,
    limits: &Limits,
    batch_rows: usize,
    max_steps: Option<usize>,
) -> Result<RotateReport, StoreError> {
    rotate_with_progress(
        db_path,
        keyfile_path,
        limits,
        batch_rows,
        max_steps,
        &mut |_, _| {},
    )
}

/// [`rotate_steps`], calling `progress(done, total)` after each batch: rows taken off the
/// old keys so far (re-encrypted or quarantined), of those waiting when it began.
pub fn rotate_with_progress(
    db_path: &Path,
    keyfile_path: &Path,
    limits: &Limits,
    batch_rows: usize,
    max_steps: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RotateReport, StoreError> {
    if !db_path.exists() {
        return Err(StoreError::NoDatabase(db_path.to_path_buf()));
    }
    let mut kf = keyfile::load(keyfile_path)?;
    // Check the keyfile against the database before changing anything.
    drop(Store::open(
        db_path,
        Arc::new(Keyring::new(&kf)?),
        limits.clone(),
    )?);
    let started = kf.keys().count() == 1;
    if started {
        let id = kf.add_active_key()?;
        // Durable before any row is sealed under it: a crash from here on leaves a keyfile
        // that holds both keys.
        keyfile::save(keyfile_path, &kf)?;
        info!(key_id = id, "new active ESP Mail key");
    }
    let mut store = Store::open(db_path, Arc::new(Keyring::new(&kf)?), limits.clone())?;
    let total = store.rows_to_reencrypt()?;
    let mut reencrypted = 0;
    let mut quarantined = 0;
    let mut steps = 0;
    let complete = loop {
        if max_steps.is_some_and(|m| steps >= m) {
            break false;
        }
        let n = store.reencrypt_step(batch_rows.max(1))?;
        steps += 1;
        reencrypted += n.reencrypted;
        quarantined += n.quarantined;
        if n.handled() == 0 {
            break true;
        }
        progress(
            u64::try_from(reencrypted + quarantined).unwrap_or(u64::MAX),
            total,
        );
    };
    let active = kf.active_id();
    let mut retirable = Vec::new();
    let mut held_by_quarantine = Vec::new();
    for (id, _) in kf.keys() {
        if id == active {
            continue;
        }
        match store.rows_under_key(id)? {
            (0, 0) => retirable.push(id),
            (0, q) => held_by_quarantine.push((id, q)),
            _ => {}
        }
    }
    info!(
        reencrypted,
        quarantined, complete, "ESP Mail key rotation step done"
    );
    Ok(RotateReport {
        active,
        started,
        reencrypted,
        quarantined,
        complete,
        retirable,
        held_by_quarantine,
    })
}

/// `espmail rotate --retire ID`: removes an old key from the keyfile, refusing while any
/// row (mail or quarantine) still needs it.
pub fn retire(
    db_path: &Path,
    keyfile_path: &Path,
    limits: &Limits,
    key_id: KeyId,
) -> Result<(), StoreError> {
    let mut kf = keyfile::load(keyfile_path)?;
    if key_id == kf.active_id() {
        return Err(keyfile::KeyfileError::RetireActive { key_id }.into());
    }
    let mut store = Store::open(db_path, Arc::new(Keyring::new(&kf)?), limits.clone())?;
    let (mail, quarantined) = store.rows_under_key(key_id)?;
    if mail + quarantined > 0 {
        return Err(StoreError::KeyInUse {
            key_id,
            mail,
            quarantined,
        });
    }
    kf.remove_key(key_id)?;
    keyfile::save(keyfile_path, &kf)?;
    store.forget_key(key_id)?;
    info!(key_id, "ESP Mail key retired");
    Ok(())
}
