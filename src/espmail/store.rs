//! The durable ESP Mail store: sole owner of the SQLite connection that writes mail.
//!
//! - **Settings**: WAL journal, `synchronous=FULL` (a commit is on disk when it returns),
//!   `secure_delete=ON` (freed pages and deleted cells are zeroed), a busy timeout so the
//!   running server and an offline `espmail` command wait for each other instead of failing.
//! - **Schema**: `migrations/NNN_*.sql`, applied in one transaction, tracked in `user_version`.
//! - **Group commit** (the `writer` module, [`run_writer`]): one thread owns the write
//!   connection and is fed by a *bounded* channel. It takes whatever is waiting (up to [`Limits::max_batch`]), runs it in
//!   one transaction (each job in its own savepoint, so one refusal costs only that job),
//!   commits once (one fsync for the whole batch) and only then answers each caller. A caller
//!   told "saved" is therefore told so after its row is durable (promise 7).
//! - **Deliver and delete**: [`Store::load`] decrypts a recipient's mail oldest first and
//!   moves any row that fails to open to the `quarantine` table (logged once, by id;
//!   never delivered; it keeps its expiry day, so the retention purge removes it then,
//!   and an operator may list it or drop it sooner with `espmail quarantine`);
//!   [`Store::confirm`] deletes one message and bumps the delivery counter in one
//!   transaction. After deletions the WAL is checkpointed with `TRUNCATE` as soon as the
//!   writer is idle (or every [`CHECKPOINT_EVERY`] deletions under load), so the old pages
//!   holding deleted ciphertexts do not linger in the `-wal` file.
//! - **Keys**: [`Store::open`] refuses a keyfile that does not match the database (key-check
//!   values in `key_check`) or that lacks a key some row still needs.
//!
//! Running server and offline commands: both open the same file in WAL mode with a busy
//! timeout. Readers (e.g. `espmail stats`) never block the server; an offline writer
//! (`purge`, `rotate`, `account remove`) waits for the server's short write transactions
//! and vice versa; SQLite's locks make the two safe together. A TRUNCATE checkpoint that a
//! reader blocks is simply retried after the next batch.
//!
//! May touch: the database file and its `-wal`/`-shm` files. No sockets, no tokio runtime
//! (the writer thread only uses the channel's blocking side).

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, TransactionBehavior};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::crypto::{Blind, Keyring, MailId, SealedRow, MAX_TEXT_LEN};
use super::keyfile::KeyId;
use super::rows::{
    confirm, count, delete_all, insert, load, quarantine, read_raw, rows_under_key, RawRow,
};

pub use super::error::{SaveError, StoreError};
pub(crate) use super::rows::{expired_rows, purge, purge_some, quarantine_drop, quarantine_list};
pub use super::rows::{
    stats, PendingMail, Purged, QuarantineSelect, QuarantinedRow, ReasonCode, RowId, Stats,
};
pub(crate) use super::writer::{run_writer, Job};

/// What one step of a key rotation did with the rows it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reencrypted {
    /// Rows now sealed under the active key.
    pub reencrypted: usize,
    /// Rows that failed to open and went to quarantine (not re-encrypted).
    pub quarantined: usize,
}

impl Reencrypted {
    /// Rows taken off the old key either way; 0 means nothing was left to do.
    pub fn handled(&self) -> usize {
        self.reencrypted + self.quarantined
    }
}

/// Schema migrations, in order; `user_version` counts those applied.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_init.sql"),
    include_str!("../../migrations/002_accounts.sql"),
    include_str!("../../migrations/003_sender_cap.sql"),
    include_str!("../../migrations/004_delivered.sql"),
];

/// Under steady load, checkpoint (TRUNCATE) at least after this many deletions.
pub const CHECKPOINT_EVERY: usize = 256;

const SECS_PER_DAY: u64 = 86_400;

/// A recipient's blind indexes under every key of the keyring.
pub type RecipientBlinds = Vec<(KeyId, Blind)>;

/// The store's limits. `config/espmail.toml` may set each; the defaults are the product's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Messages waiting for one recipient before "box is full" (ESPMAIL.md §3).
    pub max_per_recipient: usize,
    /// Messages one sender may leave waiting for one recipient.
    pub max_per_sender: usize,
    /// Longest text accepted, in bytes (the 114-byte speech cap; at most 400).
    pub max_text_len: usize,
    /// Days a message waits before the purge deletes it unread.
    pub retention_days: u32,
    /// Jobs the writer's channel holds before senders wait (bounded on purpose).
    pub queue_len: usize,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
    /// How long a second `open_mailbox` for the same avatar waits for the first to end.
    pub lease_wait_ms: u64,
    /// How long SQLite waits for a lock held by another connection (e.g. an offline command).
    pub busy_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_per_recipient: 50,
            max_per_sender: 10,
            max_text_len: crate::limits::SPEECH_CAP,
            retention_days: 90,
            queue_len: 4096,
            max_batch: 1024,
            lease_wait_ms: 10_000,
            busy_timeout_ms: 5_000,
        }
    }
}

impl Limits {
    /// Checks that the limits make sense together.
    pub fn check(&self) -> Result<(), StoreError> {
        let bad = |what| Err(StoreError::BadLimit(what));
        if self.max_per_recipient == 0 {
            return bad("max_per_recipient must be at least 1");
        }
        if self.max_per_sender == 0 {
            return bad("max_per_sender must be at least 1");
        }
        if self.max_text_len == 0 || self.max_text_len > MAX_TEXT_LEN {
            return bad("max_text_len must be between 1 and 400");
        }
        if self.retention_days == 0 {
            return bad("retention_days must be at least 1");
        }
        if self.queue_len == 0 || self.max_batch == 0 {
            return bad("queue_len and max_batch must be at least 1");
        }
        Ok(())
    }
}

/// Days since the epoch (UTC) of a time; times before 1970 count as day 0.
pub fn day_of(t: SystemTime) -> i64 {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs / SECS_PER_DAY).unwrap_or(i64::MAX)
}

/// Opens (creating if asked) and configures a connection: WAL, FULL sync, secure delete,
/// busy timeout.
pub fn connect(path: &Path, limits: &Limits, create: bool) -> Result<Connection, StoreError> {
    let existed = path.exists();
    if !create && !existed {
        return Err(StoreError::NoDatabase(path.to_path_buf()));
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    if !existed {
        // The database reveals nothing without the keyfile, but there is no reason to let
        // other users copy it either. SQLite gives -wal and -shm the same mode.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
    }
    conn.busy_timeout(Duration::from_millis(limits.busy_timeout_ms))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "the filesystem refused WAL mode (journal_mode is {mode})"
        )));
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA secure_delete=ON;")?;
    let secure: i64 = conn.query_row("PRAGMA secure_delete", [], |r| r.get(0))?;
    if secure != 1 {
        return Err(StoreError::Database(
            "secure_delete could not be enabled".into(),
        ));
    }
    Ok(conn)
}

/// Test-only environment variable: caps the mail connection's database size at this many
/// pages (`PRAGMA max_page_count`), so tests can fill "the disk" without root or a tmpfs
/// (issue 5, tests/durability_disk.rs). Deliberately not a config key: an operator never
/// wants it. Writes past the cap fail with SQLITE_FULL, exactly as on a full disk; SQLite
/// never sets the cap below the current size, so it can only refuse growth, never lose rows.
pub const TEST_MAX_PAGES_ENV: &str = "ESPMAIL_TEST_MAX_DB_PAGES";

fn cap_pages_for_tests(conn: &Connection) -> Result<(), StoreError> {
    let Some(pages) = std::env::var(TEST_MAX_PAGES_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
    else {
        return Ok(());
    };
    // A pragma takes no bound parameters; `pages` is a parsed u32, so formatting is safe.
    let now: i64 = conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
        r.get(0)
    })?;
    warn!(
        max_pages = now,
        "{TEST_MAX_PAGES_ENV} is set: database size capped (test only)"
    );
    Ok(())
}

/// Applies the migrations not yet applied, in one transaction.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let at: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let at_usize = usize::try_from(at).unwrap_or(usize::MAX);
    if at_usize > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: at,
            known: MIGRATIONS.len(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(at_usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    Ok(tx.commit()?)
}

/// Checks the keyfile against the database's key-check values, and records check values
/// for keys the database has not seen yet (a rotation's new key).
pub(crate) fn check_keys(conn: &mut Connection, keys: &Keyring) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    verify_keys(&tx, keys)?;
    for id in keys.key_ids() {
        if let Some(check) = keys.check_value(id) {
            tx.execute(
                "INSERT OR IGNORE INTO key_check (key_id, check_value) VALUES (?1, ?2)",
                params![id, &check[..]],
            )?;
        }
    }
    Ok(tx.commit()?)
}

/// The reading half of [`check_keys`], which writes nothing (`espmail check`): the keyfile
/// matches the database's key-check values, and holds every key a stored row needs.
pub(crate) fn verify_keys(tx: &Connection, keys: &Keyring) -> Result<(), StoreError> {
    let known: Vec<(KeyId, Vec<u8>)> = {
        let mut st = tx.prepare("SELECT key_id, check_value FROM key_check")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut matched = false;
    for id in keys.key_ids() {
        if let Some((_, stored)) = known.iter().find(|(k, _)| *k == id) {
            if keys.check_value(id).as_ref().map(|c| &c[..]) != Some(stored.as_slice()) {
                return Err(StoreError::KeyMismatch { key_id: id });
            }
            matched = true;
        }
    }
    if !known.is_empty() && !matched {
        return Err(StoreError::KeyMismatch {
            key_id: keys.active_id(),
        });
    }
    let ids: HashSet<KeyId> = keys.key_ids().collect();
    for table in ["mail", "quarantine"] {
        let sql = format!("SELECT key_id, count(*) FROM {table} GROUP BY key_id");
        let mut st = tx.prepare(&sql)?;
        let used: Vec<(KeyId, u64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if let Some((key_id, rows)) = used.into_iter().find(|(k, _)| !ids.contains(k)) {
            return Err(StoreError::MissingKey { key_id, rows });
        }
    }
    Ok(())
}

/// Refuses a database written by a newer espmail (more migrations than this build knows),
/// without changing anything.
pub(crate) fn schema_not_newer(conn: &Connection) -> Result<(), StoreError> {
    let at: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if usize::try_from(at).unwrap_or(usize::MAX) > MIGRATIONS.len() {
        return Err(StoreError::SchemaTooNew {
            found: at,
            known: MIGRATIONS.len(),
        });
    }
    Ok(())
}

/// The durable store: one connection plus the keys. Used by the writer thread and,
/// directly and synchronously, by offline commands on a stopped server.
pub struct Store {
    pub(super) conn: Connection,
    pub(super) keys: Arc<Keyring>,
    pub(super) limits: Limits,
    pub(super) path: PathBuf,
    deletions_since_checkpoint: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the database, applies migrations and checks the keyfile.
    /// Refuses a keyfile that does not match.
    pub fn open(path: &Path, keys: Arc<Keyring>, limits: Limits) -> Result<Store, StoreError> {
        limits.check()?;
        let mut conn = connect(path, &limits, true)?;
        migrate(&mut conn)?;
        check_keys(&mut conn, &keys)?;
        cap_pages_for_tests(&conn)?;
        Ok(Store {
            conn,
            keys,
            limits,
            path: path.to_path_buf(),
            deletions_since_checkpoint: 0,
        })
    }

    /// The keys this store was opened with.
    pub fn keys(&self) -> &Arc<Keyring> {
        &self.keys
    }

    /// The limits this store was opened with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Direct access for tests and tools (e.g. `PRAGMA integrity_check`).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Saves one sealed row in its own transaction (offline use and the benchmark's
    /// one-fsync-per-message baseline; the server goes through the writer).
    pub fn save_one(
        &mut self,
        row: &SealedRow,
        expiry_day: i64,
        blinds: &[(KeyId, Blind)],
    ) -> Result<MailId, SaveError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let id = insert(&tx, row, expiry_day, blinds, &self.limits)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(id)
    }

    /// Saves many rows in one transaction (the benchmark's ceiling).
    pub fn save_many(
        &mut self,
        rows: &[(SealedRow, i64, RecipientBlinds)],
    ) -> Result<(), SaveError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        for (row, expiry, blinds) in rows {
            insert(&tx, row, *expiry, blinds, &self.limits)?;
        }
        tx.commit().map_err(StoreError::from)?;
        Ok(())
    }

    /// Messages waiting for a recipient (given by blind indexes under every key).
    pub fn count(&self, blinds: &[(KeyId, Blind)]) -> Result<usize, StoreError> {
        count(&self.conn, blinds)
    }

    /// A recipient's messages, decrypted, oldest first; rows that fail to open are
    /// quarantined in the same transaction.
    pub fn load(
        &mut self,
        blinds: &[(KeyId, Blind)],
        now: SystemTime,
    ) -> Result<Vec<PendingMail>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = load(&tx, &self.keys, blinds, day_of(now))?;
        tx.commit()?;
        Ok(out)
    }

    /// Deletes one delivered message and counts the delivery, in one transaction. `false`
    /// when it was already gone.
    pub fn confirm(&mut self, id: MailId) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let gone = confirm(&tx, &self.keys, id)?;
        tx.commit()?;
        self.after_deletions(usize::from(gone), true);
        Ok(gone)
    }

    /// Deletes every message for a recipient (`account remove`); returns how many.
    pub fn delete_all_for(&mut self, blinds: &[(KeyId, Blind)]) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = delete_all(&tx, blinds)?;
        tx.commit()?;
        self.after_deletions(n, true);
        Ok(n)
    }

    /// Deletes messages and quarantined rows whose expiry day has come; says how many.
    pub fn purge_expired(&mut self, now: SystemTime) -> Result<Purged, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = purge(&tx, day_of(now))?;
        tx.commit()?;
        self.after_deletions(n.total(), true);
        Ok(n)
    }

    /// The quarantined rows (ids, key ids, ages, reason codes; never content).
    pub fn quarantine_list(&self, now: SystemTime) -> Result<Vec<QuarantinedRow>, StoreError> {
        quarantine_list(&self.conn, day_of(now))
    }

    /// Deletes quarantined rows, in one transaction; returns how many. An id not in the
    /// quarantine deletes nothing and is [`StoreError::NotQuarantined`].
    pub fn quarantine_drop(&mut self, which: &QuarantineSelect) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = quarantine_drop(&tx, which)?;
        tx.commit()?;
        info!(
            dropped = n,
            "quarantined ESP Mail rows dropped by the operator"
        );
        self.after_deletions(n, true);
        Ok(n)
    }

    /// Counts for operators.
    pub fn stats(&self, now: SystemTime) -> Result<Stats, StoreError> {
        stats(&self.conn, &self.path, &self.limits, now)
    }

    /// Rows (mail, quarantine) sealed under a key.
    pub fn rows_under_key(&self, key_id: KeyId) -> Result<(u64, u64), StoreError> {
        rows_under_key(&self.conn, key_id)
    }

    /// Waiting messages not yet under the active key: what a rotation has left to do.
    pub fn rows_to_reencrypt(&self) -> Result<u64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM mail WHERE key_id != ?1",
            params![self.keys.active_id()],
            |r| r.get(0),
        )?)
    }

    /// One bounded step of a key rotation: re-encrypts up to `max_rows` rows not under the
    /// active key, in one transaction (a crash loses at most this step, which is simply
    /// done again). Rows that fail to open go to quarantine instead, and are counted apart:
    /// they were not re-encrypted. A step that handled no row means the rotation is
    /// complete.
    pub fn reencrypt_step(&mut self, max_rows: usize) -> Result<Reencrypted, StoreError> {
        let active = self.keys.active_id();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let raws: Vec<(RawRow, i64)> = {
            let mut st = tx.prepare(
                "SELECT id, blind, key_id, key_part, sealed, expiry_day FROM mail \
                 WHERE key_id != ?1 LIMIT ?2",
            )?;
            let rows = st.query_map(
                params![active, i64::try_from(max_rows).unwrap_or(i64::MAX)],
                |r| Ok((read_raw(r)?, r.get(5)?)),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        let today = day_of(SystemTime::now());
        let mut done = Reencrypted::default();
        for (raw, expiry) in &raws {
            let opened = raw
                .sealed_row()
                .and_then(|row| Ok((row.id, self.keys.open(&row)?)));
            match opened {
                Ok((id, letter)) => {
                    let new = self.keys.seal(id, &letter, *expiry)?;
                    tx.execute(
                        "UPDATE mail SET blind = ?1, key_id = ?2, key_part = ?3, sealed = ?4, \
                         pair = ?5 WHERE id = ?6",
                        params![
                            &new.blind[..],
                            new.key_id,
                            &new.key_part[..],
                            new.sealed,
                            new.pair.as_ref().map(|p| p.to_vec()),
                            raw.id
                        ],
                    )?;
                    done.reencrypted += 1;
                }
                Err(e) => {
                    quarantine(&tx, &raw.id, &e.to_string(), today)?;
                    done.quarantined += 1;
                }
            }
        }
        tx.commit()?;
        // The old ciphertexts were overwritten in place; push them out of the WAL too.
        self.after_deletions(raws.len(), true);
        Ok(done)
    }

    /// Forgets a retired key's check value (after the keyfile no longer holds it).
    pub fn forget_key(&mut self, key_id: KeyId) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM key_check WHERE key_id = ?1", params![key_id])?;
        Ok(())
    }

    /// Checkpoints the WAL into the database and truncates it to zero bytes. Returns
    /// whether it completed (a reader elsewhere can hold it back; it is retried later).
    pub fn checkpoint_truncate(&mut self) -> Result<bool, StoreError> {
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        Ok(busy == 0)
    }

    /// Counts deletions and checkpoints when due: at once when the writer is idle,
    /// otherwise every [`CHECKPOINT_EVERY`] deletions.
    pub(super) fn after_deletions(&mut self, deleted: usize, idle: bool) {
        self.deletions_since_checkpoint += deleted;
        if self.deletions_since_checkpoint == 0 {
            return;
        }
        if idle || self.deletions_since_checkpoint >= CHECKPOINT_EVERY {
            match self.checkpoint_truncate() {
                Ok(true) => self.deletions_since_checkpoint = 0,
                Ok(false) => debug!("WAL checkpoint held back by a reader; will retry"),
                Err(e) => warn!(error = %e, "WAL checkpoint failed; will retry"),
            }
        }
    }
}
