//! The durable ESP Mail store: sole owner of the SQLite connection that writes mail.
//!
//! - **Settings**: WAL journal, `synchronous=FULL` (a commit is on disk when it returns),
//!   `secure_delete=ON` (freed pages and deleted cells are zeroed), a busy timeout so the
//!   running server and an offline `espmail` command wait for each other instead of failing.
//! - **Schema**: `migrations/NNN_*.sql`, applied in one transaction, tracked in `user_version`.
//! - **Group commit** ([`run_writer`]): one thread owns the write connection and is fed by a
//!   *bounded* channel. It takes whatever is waiting (up to [`Limits::max_batch`]), runs it in
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

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::crypto::{
    self, Blind, CryptoError, Keyring, MailId, SealedRow, BLIND_LEN, KEY_PART_LEN, MAX_TEXT_LEN,
};
use super::keyfile::{KeyId, KeyfileError};
use crate::log_redact::Sensitive;

/// Schema migrations, in order; `user_version` counts those applied.
pub const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_init.sql"),
    include_str!("../../migrations/002_accounts.sql"),
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
            max_text_len: 114,
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

/// One message handed out at login: decrypted, not yet confirmed (so still stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMail {
    /// Its id, for [`Store::confirm`].
    pub id: MailId,
    /// Sender's name as they are shown.
    pub sender: String,
    /// When it was sent.
    pub sent: SystemTime,
    /// The text.
    pub text: Sensitive<Vec<u8>>,
}

/// Counts for operators: never names or text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages waiting.
    pub waiting: u64,
    /// Rows in quarantine.
    pub quarantined: u64,
    /// Age in whole days of the oldest waiting message, from its expiry day minus the
    /// current retention (day granularity: the send time itself is encrypted).
    pub oldest_age_days: Option<u64>,
    /// Database plus WAL size in bytes.
    pub db_bytes: u64,
    /// Messages delivered and deleted since the database was created.
    pub delivered: u64,
    /// Waiting messages per key id (a rotation is complete when only the active key has any).
    pub per_key: Vec<(KeyId, u64)>,
}

/// What one purge deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Waiting messages past their expiry day.
    pub mail: usize,
    /// Quarantined rows past the expiry day they kept from their mail row.
    pub quarantined: usize,
}

impl Purged {
    /// Rows deleted from both tables.
    pub fn total(&self) -> usize {
        self.mail + self.quarantined
    }
}

/// A row's stored id, in hex on screen. A quarantined row's id may have the wrong size (a
/// malformed row is one reason to quarantine it), so this is not a [`MailId`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId(pub Vec<u8>);

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowId({self})")
    }
}

impl std::str::FromStr for RowId {
    type Err = StoreError;

    /// Hex, as `espmail quarantine list` prints it (either case).
    fn from_str(s: &str) -> Result<RowId, StoreError> {
        let bad = || StoreError::BadRowId(s.to_owned());
        let s = s.trim();
        if s.is_empty() || s.len() % 2 != 0 || !s.is_ascii() {
            return Err(bad());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(RowId)
            .ok_or_else(bad)
    }
}

/// Why a row was quarantined, as a short code for operators. The store keeps the opening
/// error's text (no message content is in it); the code is read back from that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// The tag did not verify: wrong key, edited ciphertext, or a moved/swapped row.
    Authentication,
    /// The row names a key the keyfile does not hold.
    UnknownKey,
    /// A stored value had the wrong size, or the plaintext was not well formed.
    Malformed,
    /// Anything else (e.g. the crypto library failed while opening it).
    Other,
}

impl ReasonCode {
    /// The code of an opening error.
    pub fn of(e: &CryptoError) -> ReasonCode {
        match e {
            CryptoError::Authentication => ReasonCode::Authentication,
            CryptoError::UnknownKey { .. } => ReasonCode::UnknownKey,
            CryptoError::Malformed(_) => ReasonCode::Malformed,
            _ => ReasonCode::Other,
        }
    }

    /// The code of a stored reason (the opening error's text, as the quarantine stores it).
    pub fn of_stored(reason: &str) -> ReasonCode {
        if reason == CryptoError::Authentication.to_string() {
            ReasonCode::Authentication
        } else if reason.starts_with("key ") && reason.ends_with(" is not in the keyfile") {
            ReasonCode::UnknownKey
        } else if reason.starts_with("stored message is malformed") {
            ReasonCode::Malformed
        } else {
            ReasonCode::Other
        }
    }

    /// The code as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Authentication => "authentication",
            ReasonCode::UnknownKey => "unknown-key",
            ReasonCode::Malformed => "malformed",
            ReasonCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One quarantined row as `espmail quarantine list` shows it: never names or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRow {
    /// The row's id (hex on screen; what `quarantine drop` takes).
    pub id: RowId,
    /// The key id the row claims to be sealed under.
    pub key_id: KeyId,
    /// Whole days since the row was quarantined.
    pub age_days: u64,
    /// The expiry day it kept from its mail row (days since 1970): retention purges it then.
    pub expiry_day: i64,
    /// Why it failed to open.
    pub reason: ReasonCode,
}

/// Which quarantined rows `quarantine drop` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineSelect {
    /// Every quarantined row.
    All,
    /// These rows; every one must be in the quarantine.
    Ids(Vec<RowId>),
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

/// The durable store: one connection plus the keys. Used by the writer thread and,
/// directly and synchronously, by offline commands on a stopped server.
pub struct Store {
    conn: Connection,
    keys: Arc<Keyring>,
    limits: Limits,
    path: PathBuf,
    deletions_since_checkpoint: usize,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A raw row read from `mail`.
struct RawRow {
    id: Vec<u8>,
    blind: Vec<u8>,
    key_id: KeyId,
    key_part: Vec<u8>,
    sealed: Vec<u8>,
}

impl RawRow {
    fn sealed_row(&self) -> Result<SealedRow, CryptoError> {
        let bad = CryptoError::Malformed;
        Ok(SealedRow {
            id: MailId::from_slice(&self.id).ok_or(bad("id size"))?,
            blind: <[u8; BLIND_LEN]>::try_from(self.blind.as_slice())
                .map_err(|_| bad("blind index size"))?,
            key_id: self.key_id,
            key_part: <[u8; KEY_PART_LEN]>::try_from(self.key_part.as_slice())
                .map_err(|_| bad("key part size"))?,
            sealed: self.sealed.clone(),
        })
    }
}

fn read_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        id: r.get(0)?,
        blind: r.get(1)?,
        key_id: r.get(2)?,
        key_part: r.get(3)?,
        sealed: r.get(4)?,
    })
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
        let id = insert(&tx, row, expiry_day, blinds, self.limits.max_per_recipient)?;
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
            insert(&tx, row, *expiry, blinds, self.limits.max_per_recipient)?;
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
        let gone = confirm(&tx, id)?;
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

    /// One bounded step of a key rotation: re-encrypts up to `max_rows` rows not under the
    /// active key, in one transaction (a crash loses at most this step, which is simply
    /// done again). Rows that fail to open go to quarantine. Returns rows handled; 0 means
    /// the rotation is complete.
    pub fn reencrypt_step(&mut self, max_rows: usize) -> Result<usize, StoreError> {
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
        for (raw, _expiry) in &raws {
            let opened = raw
                .sealed_row()
                .and_then(|row| Ok((row.id, self.keys.open(&row)?)));
            match opened {
                Ok((id, letter)) => {
                    let new = self.keys.seal(id, &letter)?;
                    tx.execute(
                        "UPDATE mail SET blind = ?1, key_id = ?2, key_part = ?3, sealed = ?4 \
                         WHERE id = ?5",
                        params![
                            &new.blind[..],
                            new.key_id,
                            &new.key_part[..],
                            new.sealed,
                            raw.id
                        ],
                    )?;
                }
                Err(e) => quarantine(&tx, &raw.id, &e, today)?,
            }
        }
        tx.commit()?;
        // The old ciphertexts were overwritten in place; push them out of the WAL too.
        self.after_deletions(raws.len(), true);
        Ok(raws.len())
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
    fn after_deletions(&mut self, deleted: usize, idle: bool) {
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

fn count(conn: &Connection, blinds: &[(KeyId, Blind)]) -> Result<usize, StoreError> {
    let mut st =
        conn.prepare_cached("SELECT count(*) FROM mail WHERE blind = ?1 AND key_id = ?2")?;
    let mut n = 0usize;
    for (key_id, blind) in blinds {
        let c: i64 = st.query_row(params![&blind[..], key_id], |r| r.get(0))?;
        n += usize::try_from(c).unwrap_or(0);
    }
    Ok(n)
}

fn insert(
    conn: &Connection,
    row: &SealedRow,
    expiry_day: i64,
    blinds: &[(KeyId, Blind)],
    max: usize,
) -> Result<MailId, SaveError> {
    // Counted inside the transaction, after earlier jobs of the same batch: the limit holds
    // exactly even when many senders write to one recipient at once.
    if count(conn, blinds)? >= max {
        return Err(SaveError::BoxFull { max });
    }
    let mut st = conn
        .prepare_cached(
            "INSERT INTO mail (id, blind, key_id, expiry_day, key_part, sealed) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(StoreError::from)?;
    st.execute(params![
        &row.id.0[..],
        &row.blind[..],
        row.key_id,
        expiry_day,
        &row.key_part[..],
        &row.sealed
    ])
    .map_err(StoreError::from)?;
    Ok(row.id)
}

fn quarantine(
    conn: &Connection,
    id: &[u8],
    why: &CryptoError,
    today: i64,
) -> Result<(), StoreError> {
    let reason = why.to_string();
    conn.execute(
        "INSERT OR REPLACE INTO quarantine \
         (id, blind, key_id, expiry_day, key_part, sealed, reason, quarantined_day) \
         SELECT id, blind, key_id, expiry_day, key_part, sealed, ?2, ?3 FROM mail WHERE id = ?1",
        params![id, reason, today],
    )?;
    conn.execute("DELETE FROM mail WHERE id = ?1", params![id])?;
    let shown =
        MailId::from_slice(id).map_or_else(|| format!("{} bytes", id.len()), |m| m.to_string());
    // Logged once: the row leaves `mail` in this same transaction.
    warn!(id = %shown, %reason, "ESP Mail row failed to open; moved to quarantine");
    Ok(())
}

fn load(
    conn: &Connection,
    keys: &Keyring,
    blinds: &[(KeyId, Blind)],
    today: i64,
) -> Result<Vec<PendingMail>, StoreError> {
    let mut raws = Vec::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT id, blind, key_id, key_part, sealed FROM mail WHERE blind = ?1 AND key_id = ?2",
        )?;
        for (key_id, blind) in blinds {
            let rows = st.query_map(params![&blind[..], key_id], read_raw)?;
            for r in rows {
                raws.push(r?);
            }
        }
    }
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        match raw
            .sealed_row()
            .and_then(|row| keys.open(&row).map(|l| (row.id, l)))
        {
            Ok((id, letter)) => out.push((
                (letter.sent_secs, letter.sent_nanos),
                PendingMail {
                    id,
                    sender: letter.sender,
                    sent: UNIX_EPOCH + Duration::new(letter.sent_secs, letter.sent_nanos),
                    text: letter.text,
                },
            )),
            Err(e) => quarantine(conn, &raw.id, &e, today)?,
        }
    }
    // Oldest first; the id breaks ties so the order is stable.
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

fn confirm(conn: &Connection, id: MailId) -> Result<bool, StoreError> {
    let n = conn.execute("DELETE FROM mail WHERE id = ?1", params![&id.0[..]])?;
    if n > 0 {
        conn.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'delivered'",
            [],
        )?;
    }
    Ok(n > 0)
}

fn delete_all(conn: &Connection, blinds: &[(KeyId, Blind)]) -> Result<usize, StoreError> {
    let mut n = 0;
    for (key_id, blind) in blinds {
        n += conn.execute(
            "DELETE FROM mail WHERE blind = ?1 AND key_id = ?2",
            params![&blind[..], key_id],
        )?;
    }
    Ok(n)
}

/// Retention for both tables: a quarantined row keeps the expiry day of the mail row it
/// came from, so it leaves when that mail would have (promise 7: counted and logged, not
/// kept forever for nobody).
pub(crate) fn purge(conn: &Connection, today: i64) -> Result<Purged, StoreError> {
    let mail = conn.execute("DELETE FROM mail WHERE expiry_day <= ?1", params![today])?;
    let quarantined = conn.execute(
        "DELETE FROM quarantine WHERE expiry_day <= ?1",
        params![today],
    )?;
    if quarantined > 0 {
        info!(
            quarantined,
            "quarantined ESP Mail rows past their expiry day deleted by retention"
        );
    }
    Ok(Purged { mail, quarantined })
}

/// The quarantined rows, oldest quarantine first (then by id): never content.
pub(crate) fn quarantine_list(
    conn: &Connection,
    today: i64,
) -> Result<Vec<QuarantinedRow>, StoreError> {
    let mut st = conn.prepare(
        "SELECT id, key_id, quarantined_day, expiry_day, reason FROM quarantine \
         ORDER BY quarantined_day, id",
    )?;
    let rows = st.query_map([], |r| {
        let quarantined_day: i64 = r.get(2)?;
        let reason: String = r.get(4)?;
        Ok(QuarantinedRow {
            id: RowId(r.get(0)?),
            key_id: r.get(1)?,
            age_days: u64::try_from(today - quarantined_day).unwrap_or(0),
            expiry_day: r.get(3)?,
            reason: ReasonCode::of_stored(&reason),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes quarantined rows (an operator's decision); returns how many. Ids not in the
/// quarantine are an error and nothing is deleted, so a typo never half-applies.
pub(crate) fn quarantine_drop(
    conn: &Connection,
    which: &QuarantineSelect,
) -> Result<usize, StoreError> {
    let n = match which {
        QuarantineSelect::All => conn.execute("DELETE FROM quarantine", [])?,
        QuarantineSelect::Ids(ids) => {
            let mut st = conn.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?;
            let mut n = 0;
            for id in ids {
                let one = st.execute(params![&id.0])?;
                if one == 0 {
                    return Err(StoreError::NotQuarantined(id.clone()));
                }
                n += one;
            }
            n
        }
    };
    Ok(n)
}

fn rows_under_key(conn: &Connection, key_id: KeyId) -> Result<(u64, u64), StoreError> {
    let mail: u64 = conn.query_row(
        "SELECT count(*) FROM mail WHERE key_id = ?1",
        params![key_id],
        |r| r.get(0),
    )?;
    let q: u64 = conn.query_row(
        "SELECT count(*) FROM quarantine WHERE key_id = ?1",
        params![key_id],
        |r| r.get(0),
    )?;
    Ok((mail, q))
}

/// Stats from any connection to the database (the offline `espmail stats` needs no keyfile).
pub fn stats(
    conn: &Connection,
    path: &Path,
    limits: &Limits,
    now: SystemTime,
) -> Result<Stats, StoreError> {
    let waiting: u64 = conn.query_row("SELECT count(*) FROM mail", [], |r| r.get(0))?;
    let quarantined: u64 = conn.query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))?;
    let delivered: u64 = conn
        .query_row("SELECT value FROM meta WHERE name = 'delivered'", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0);
    let min_expiry: Option<i64> =
        conn.query_row("SELECT min(expiry_day) FROM mail", [], |r| r.get(0))?;
    let oldest_age_days = min_expiry.map(|e| {
        let sent_day = e - i64::from(limits.retention_days);
        u64::try_from(day_of(now) - sent_day).unwrap_or(0)
    });
    let per_key: Vec<(KeyId, u64)> = {
        let mut st =
            conn.prepare("SELECT key_id, count(*) FROM mail GROUP BY key_id ORDER BY key_id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let file_len = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let db_bytes = file_len(path) + file_len(Path::new(&wal));
    Ok(Stats {
        waiting,
        quarantined,
        oldest_age_days,
        db_bytes,
        delivered,
        per_key,
    })
}

/// A job for the writer thread. Each carries the sender half of its answer.
pub(crate) enum Job {
    Save {
        row: Box<SealedRow>,
        expiry_day: i64,
        blinds: Vec<(KeyId, Blind)>,
        reply: oneshot::Sender<Result<MailId, SaveError>>,
    },
    Count {
        blinds: Vec<(KeyId, Blind)>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Load {
        blinds: Vec<(KeyId, Blind)>,
        now: SystemTime,
        reply: oneshot::Sender<Result<Vec<PendingMail>, StoreError>>,
    },
    Confirm {
        id: MailId,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    DeleteAll {
        blinds: Vec<(KeyId, Blind)>,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    Purge {
        now: SystemTime,
        reply: oneshot::Sender<Result<Purged, StoreError>>,
    },
    Stats {
        now: SystemTime,
        reply: oneshot::Sender<Result<Stats, StoreError>>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A job's answer, held until its batch has committed.
enum Answer {
    Save(
        oneshot::Sender<Result<MailId, SaveError>>,
        Result<MailId, SaveError>,
    ),
    Count(
        oneshot::Sender<Result<usize, StoreError>>,
        Result<usize, StoreError>,
    ),
    Load(
        oneshot::Sender<Result<Vec<PendingMail>, StoreError>>,
        Result<Vec<PendingMail>, StoreError>,
    ),
    Confirm(
        oneshot::Sender<Result<bool, StoreError>>,
        Result<bool, StoreError>,
    ),
    Stats(
        oneshot::Sender<Result<Stats, StoreError>>,
        Result<Stats, StoreError>,
    ),
    Purge(
        oneshot::Sender<Result<Purged, StoreError>>,
        Result<Purged, StoreError>,
    ),
}

impl Answer {
    /// Sends the answer, or `failed` instead when the batch did not commit. A caller that
    /// went away (dropped its future) simply does not hear it.
    fn send(self, failed: Option<&StoreError>) {
        match self {
            Answer::Save(tx, r) => {
                let _ = tx.send(match failed {
                    Some(e) => Err(SaveError::Store(e.clone())),
                    None => r,
                });
            }
            Answer::Count(tx, r) => {
                let _ = tx.send(failed.map_or(r, |e| Err(e.clone())));
            }
            Answer::Load(tx, r) => {
                let _ = tx.send(failed.map_or(r, |e| Err(e.clone())));
            }
            Answer::Confirm(tx, r) => {
                let _ = tx.send(failed.map_or(r, |e| Err(e.clone())));
            }
            Answer::Stats(tx, r) => {
                let _ = tx.send(failed.map_or(r, |e| Err(e.clone())));
            }
            Answer::Purge(tx, r) => {
                let _ = tx.send(failed.map_or(r, |e| Err(e.clone())));
            }
        }
    }
}

/// Runs one job inside a savepoint of the batch's transaction: a refusal or an error rolls
/// back this job only.
fn run_job<T, E>(
    tx: &mut rusqlite::Transaction<'_>,
    f: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    let sp = tx.savepoint().map_err(|e| E::from(StoreError::from(e)))?;
    let r = f(&sp);
    if r.is_ok() {
        sp.commit().map_err(|e| E::from(StoreError::from(e)))?;
    }
    // On error the savepoint rolls back when dropped.
    r
}

/// The writer thread's loop: batch, one transaction, one commit, then answer. Returns when
/// a `Shutdown` job is done or every sender is gone (after finishing what was queued).
pub(crate) fn run_writer(mut store: Store, mut rx: mpsc::Receiver<Job>) {
    let max_batch = store.limits.max_batch;
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    loop {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (shutdown, deleted) = run_batch(&mut store, &mut batch);
        // Checkpoint now if nothing else is waiting; under load, every CHECKPOINT_EVERY.
        store.after_deletions(deleted, rx.is_empty());
        if let Some(reply) = shutdown {
            // Everything queued before the shutdown job has been committed and answered.
            let r = store.checkpoint_truncate().map(drop);
            close_and_refuse(&mut rx);
            let _ = reply.send(r);
            info!("ESP Mail writer stopped");
            return;
        }
    }
    let _ = store.checkpoint_truncate();
    info!("ESP Mail writer stopped (no handles left)");
}

/// Closes the queue and answers every job still in it "closed". Dropping the receiver is
/// not enough: tokio drains the channel once on drop, but a sender that already held a
/// permit can push its job after that drain, and the job (with the oneshot its caller
/// awaits) would then sit in the channel for as long as any handle lives, so that
/// caller's `.await` would never return. After `close`, no new permit is granted, and
/// receiving until `None` reaches every job a permit holder can still push.
fn close_and_refuse(rx: &mut mpsc::Receiver<Job>) {
    rx.close();
    while let Some(job) = rx.blocking_recv() {
        refuse(job, &StoreError::Closed);
    }
}

/// Runs a batch in one transaction and answers every job after the commit. Returns the
/// reply of a shutdown job, if the batch held one (jobs after it are refused as closed),
/// and the number of rows deleted.
fn run_batch(
    store: &mut Store,
    batch: &mut Vec<Job>,
) -> (Option<oneshot::Sender<Result<(), StoreError>>>, usize) {
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let mut shutdown = None;
    let mut deleted = 0usize;
    let keys = Arc::clone(&store.keys);
    let max = store.limits.max_per_recipient;
    let path = store.path.clone();
    let limits = store.limits.clone();
    let outcome = (|| -> Result<(), StoreError> {
        let mut tx = store
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Set when SQLite undid the whole transaction by itself (it does so on a full
        // disk, I/O errors and out-of-memory): the statements after that would run in
        // autocommit mode, each committed on its own, and their callers, told "not
        // saved" when the batch's commit then fails, would find the mail stored anyway.
        let mut undone: Option<StoreError> = None;
        for job in batch.drain(..) {
            if shutdown.is_some() {
                refuse(job, &StoreError::Closed);
                continue;
            }
            if let Some(e) = &undone {
                match job {
                    // Still stops the writer once this batch is answered.
                    Job::Shutdown { reply } => shutdown = Some(reply),
                    job => refuse(job, e),
                }
                continue;
            }
            match job {
                Job::Save {
                    row,
                    expiry_day,
                    blinds,
                    reply,
                } => {
                    // No savepoint: the count is a read and the INSERT one statement, which
                    // SQLite undoes by itself if it fails. Saves are the hot path, and a
                    // savepoint per job costs a statement-journal write each.
                    let r = insert(&tx, &row, expiry_day, &blinds, max);
                    if tx.is_autocommit() {
                        undone = Some(match &r {
                            Err(SaveError::Store(e)) => e.clone(),
                            _ => StoreError::Database("the batch was rolled back".into()),
                        });
                    }
                    answers.push(Answer::Save(reply, r));
                }
                Job::Count { blinds, reply } => {
                    answers.push(Answer::Count(reply, count(&tx, &blinds)));
                }
                Job::Load { blinds, now, reply } => {
                    let r = run_job(&mut tx, |c| load(c, &keys, &blinds, day_of(now)));
                    answers.push(Answer::Load(reply, r));
                }
                Job::Confirm { id, reply } => {
                    let r = run_job(&mut tx, |c| confirm(c, id));
                    deleted += usize::from(matches!(r, Ok(true)));
                    answers.push(Answer::Confirm(reply, r));
                }
                Job::DeleteAll { blinds, reply } => {
                    let r = run_job(&mut tx, |c| delete_all(c, &blinds));
                    deleted += r.as_ref().map_or(0, |n| *n);
                    answers.push(Answer::Count(reply, r));
                }
                Job::Purge { now, reply } => {
                    let r = run_job(&mut tx, |c| purge(c, day_of(now)));
                    deleted += r.as_ref().map_or(0, Purged::total);
                    answers.push(Answer::Purge(reply, r));
                }
                Job::Stats { now, reply } => {
                    answers.push(Answer::Stats(reply, stats(&tx, &path, &limits, now)));
                }
                Job::Shutdown { reply } => shutdown = Some(reply),
            }
            if undone.is_none() && tx.is_autocommit() {
                undone = Some(StoreError::Database("the batch was rolled back".into()));
            }
        }
        if let Some(e) = undone {
            // Nothing of this batch is stored: every job in it hears this error.
            return Err(e);
        }
        // The one fsync for the whole batch: nobody hears "saved" before it returns.
        tx.commit()?;
        Ok(())
    })();
    match &outcome {
        Ok(()) => {
            for a in answers {
                a.send(None);
            }
            (shutdown, deleted)
        }
        Err(e) => {
            warn!(error = %e, jobs = answers.len() + batch.len(), "ESP Mail batch did not commit");
            for a in answers {
                a.send(Some(e));
            }
            // Jobs not reached (the transaction could not even begin) get the same answer.
            for job in batch.drain(..) {
                if let Job::Shutdown { reply } = job {
                    shutdown = Some(reply);
                } else {
                    refuse(job, e);
                }
            }
            (shutdown, 0)
        }
    }
}

fn refuse(job: Job, e: &StoreError) {
    let closed = e.clone();
    match job {
        Job::Save { reply, .. } => {
            let _ = reply.send(Err(SaveError::Store(closed)));
        }
        Job::Count { reply, .. } | Job::DeleteAll { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
        Job::Purge { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
        Job::Load { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
        Job::Confirm { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
        Job::Stats { reply, .. } => {
            let _ = reply.send(Err(closed));
        }
        Job::Shutdown { reply } => {
            let _ = reply.send(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_opening_error_reads_back_as_its_own_code() {
        let errors = [
            CryptoError::Authentication,
            CryptoError::UnknownKey { key_id: 7 },
            CryptoError::Malformed("id size"),
            CryptoError::Openssl("cipher"),
        ];
        for e in &errors {
            assert_eq!(
                ReasonCode::of_stored(&e.to_string()),
                ReasonCode::of(e),
                "{e}"
            );
        }
        let codes: HashSet<&str> = errors.iter().map(|e| ReasonCode::of(e).as_str()).collect();
        assert_eq!(codes.len(), errors.len());
        assert_eq!(ReasonCode::of_stored("something new"), ReasonCode::Other);
    }

    #[test]
    fn row_ids_print_and_parse_as_hex() {
        let id = RowId(vec![0x00, 0xab, 0x7f]);
        assert_eq!(id.to_string(), "00ab7f");
        assert_eq!("00AB7f".parse::<RowId>().unwrap(), id);
        for bad in ["", "abc", "zz", "0g", "é0"] {
            assert!(
                matches!(bad.parse::<RowId>(), Err(StoreError::BadRowId(_))),
                "{bad:?}"
            );
        }
    }

    /// R1 (issue 10), deterministically: a sender holding a queue permit while the writer
    /// stops still gets an answer. Dropping the receiver instead (as before) leaves the
    /// job in the channel and this test's wait times out.
    #[test]
    fn a_job_pushed_with_a_permit_held_across_shutdown_is_answered_closed() {
        let dir = tempfile::tempdir().unwrap();
        let keyfile = crate::espmail::keyfile::Keyfile::generate().unwrap();
        let keys = Arc::new(Keyring::new(&keyfile).unwrap());
        let store = Store::open(&dir.path().join("m.db"), keys, Limits::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (tx, rx) = mpsc::channel(4);
            let permit = tx.reserve().await.unwrap();
            let (stop_tx, stop_rx) = oneshot::channel();
            tx.send(Job::Shutdown { reply: stop_tx }).await.unwrap();
            let writer = std::thread::spawn(move || run_writer(store, rx));
            // The writer has taken the shutdown job and closed the queue.
            let closed = async {
                while !tx.is_closed() {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), closed)
                .await
                .expect("the writer never closed its queue");
            let (count_tx, count_rx) = oneshot::channel();
            permit.send(Job::Count {
                blinds: Vec::new(),
                reply: count_tx,
            });
            let answer = tokio::time::timeout(Duration::from_secs(10), count_rx)
                .await
                .expect("a job pushed with a held permit was never answered");
            assert!(matches!(answer, Ok(Err(StoreError::Closed))), "{answer:?}");
            stop_rx.await.unwrap().unwrap();
            writer.join().unwrap();
        });
    }

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
