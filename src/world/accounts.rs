//! Binds a connection to an avatar (DESIGN.md promise 6, ESPMAIL.md §1): avatar names,
//! password hashing, the account table, the auth-mode decision, the in-world password
//! dialogue and the failed-login slowdown.
//!
//! May touch: the SQLite database file (its own `accounts` and `accounts_meta` tables only;
//! the mail schema and `PRAGMA user_version` belong to the vault), openssl for scrypt and
//! random bytes, and [`crate::espmail::crypto`] for HMAC and AES-256-GCM (one place in
//! the crate drives the cipher). No sockets. Blocking work (scrypt, SQLite) runs
//! behind [`AccountsHandle`] on the blocking pool, never on a tokio worker.
//!
//! The database must not reveal anybody's name (DESIGN.md promise 2), and the accounts
//! live in the same file as the mail. So a row is found by a keyed blind index (HMAC of
//! the normalised name) and the display name is sealed with AES-256-GCM; both keys come
//! from an [`AccountsKey`] that the server derives from the keyfile. A check value in
//! `accounts_meta` refuses a different key instead of failing row by row, and tells which
//! keyfile key the tables are under ([`Accounts::find_key`]); key rotation moves them to
//! a new key in one transaction ([`Accounts::rekey`]).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use zeroize::{Zeroize, Zeroizing};

use crate::avatar::{
    check_new_password, clamp_min_password_len, ct_eq, log_name, name_key, AvatarName, NameError,
    Password, PasswordError, MIN_PASSWORD_LEN,
};
use crate::espmail::crypto::{self, CryptoError};
use crate::rate::{wait_secs, SlidingWindow};

/// Schema version of the two account tables, kept in `accounts_meta` (not user_version).
const SCHEMA_VERSION: i64 = 1;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
/// HMAC labels under the accounts key. Changing one makes every existing table unreadable.
const INDEX_LABEL: &[u8] = b"espmail accounts: name index v1";
const SEAL_LABEL: &[u8] = b"espmail accounts: sealed name v1";
const CHECK_LABEL: &[u8] = b"espmail accounts: key check v1";
/// HKDF-Expand info (with the block counter 1) deriving the accounts key from a keyfile secret.
const DERIVE_INFO: &[u8] = b"espmail accounts key v1\x01";

/// An avatar whose account exists: its name as first registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Avatar {
    /// Name as first registered, and its normalised key.
    pub name: AvatarName,
}

/// The secret the account table is keyed with (32 bytes, zeroed on drop). The server
/// derives it from the keyfile, with an HKDF label of its own, so accounts and mail never
/// share a key.
pub struct AccountsKey(Zeroizing<[u8; 32]>);

impl AccountsKey {
    /// Wraps key bytes.
    pub fn new(bytes: [u8; 32]) -> AccountsKey {
        AccountsKey(Zeroizing::new(bytes))
    }

    /// Derives the accounts key from the keyfile's secret: HMAC-SHA256 under the secret
    /// over a label of its own (an HKDF-Expand of one block), so the key differs from
    /// every mail key derived from the same secret.
    pub fn derive_from(secret: &[u8]) -> Result<AccountsKey, AccountError> {
        let mut out = crypto::hmac_sha256(secret, DERIVE_INFO)?;
        let key = AccountsKey::new(out);
        out.zeroize();
        Ok(key)
    }

    /// A sub-key for one use: HMAC under this key over that use's label.
    fn sub_key(&self, label: &[u8]) -> Result<Zeroizing<[u8; 32]>, AccountError> {
        Ok(Zeroizing::new(crypto::hmac_sha256(
            self.0.as_slice(),
            label,
        )?))
    }

    /// The check value stored in `accounts_meta` for tables keyed with this key (hex of
    /// an HMAC under it over a label of its own): it tells which key a table is under
    /// without revealing the key.
    fn check_value(&self) -> Result<String, AccountError> {
        Ok(hex(self.sub_key(CHECK_LABEL)?.as_slice()))
    }

    /// A fresh random key (tests, and throwaway databases).
    pub fn random() -> Result<AccountsKey, AccountError> {
        let mut k = [0u8; 32];
        openssl::rand::rand_bytes(&mut k)?;
        let key = AccountsKey::new(k);
        k.zeroize();
        Ok(key)
    }
}

impl fmt::Debug for AccountsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountsKey(<secret>)")
    }
}

/// scrypt cost parameters, stored with every hash so they can be raised later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScryptParams {
    /// log2 of N.
    pub log_n: u8,
    /// Block size.
    pub r: u32,
    /// Parallelism.
    pub p: u32,
}

impl Default for ScryptParams {
    /// N = 2^14, r = 8, p = 1: 16 MiB per hash, tens of milliseconds on a small machine.
    fn default() -> ScryptParams {
        ScryptParams {
            log_n: 14,
            r: 8,
            p: 1,
        }
    }
}

impl ScryptParams {
    fn memory(&self) -> u64 {
        128u64
            .saturating_mul(1u64 << self.log_n.min(40))
            .saturating_mul(u64::from(self.r))
            .saturating_mul(u64::from(self.p))
    }

    fn check(&self) -> Result<(), AccountError> {
        // Refuse parameters that would make one login eat the machine (a tampered row).
        if !(1..=20).contains(&self.log_n) || self.r == 0 || self.p == 0 || self.p > 16 {
            return Err(AccountError::Corrupt("scrypt parameters out of range"));
        }
        if self.memory() > 1 << 30 {
            return Err(AccountError::Corrupt("scrypt parameters need over 1 GiB"));
        }
        Ok(())
    }
}

/// A stored password hash: `scrypt$<log_n>$<r>$<p>$<salt hex>$<hash hex>`.
#[derive(Clone, PartialEq, Eq)]
struct StoredHash {
    params: ScryptParams,
    salt: [u8; SALT_LEN],
    hash: [u8; HASH_LEN],
}

impl StoredHash {
    fn new(password: &Password, params: ScryptParams) -> Result<StoredHash, AccountError> {
        let mut salt = [0u8; SALT_LEN];
        openssl::rand::rand_bytes(&mut salt)?;
        let hash = scrypt(password, &salt, params)?;
        Ok(StoredHash { params, salt, hash })
    }

    /// Constant-time comparison of `password`'s hash with this one.
    fn matches(&self, password: &Password) -> Result<bool, AccountError> {
        let mut got = scrypt(password, &self.salt, self.params)?;
        let same = ct_eq(&got, &self.hash);
        got.zeroize();
        Ok(same)
    }

    fn encode(&self) -> String {
        format!(
            "scrypt${}${}${}${}${}",
            self.params.log_n,
            self.params.r,
            self.params.p,
            hex(&self.salt),
            hex(&self.hash)
        )
    }

    fn decode(s: &str) -> Result<StoredHash, AccountError> {
        const BAD: AccountError = AccountError::Corrupt("unreadable password hash");
        let parts: Vec<&str> = s.split('$').collect();
        let [kind, log_n, r, p, salt, hash] = parts.as_slice() else {
            return Err(BAD);
        };
        if *kind != "scrypt" {
            return Err(BAD);
        }
        let params = ScryptParams {
            log_n: log_n.parse().map_err(|_| BAD)?,
            r: r.parse().map_err(|_| BAD)?,
            p: p.parse().map_err(|_| BAD)?,
        };
        params.check()?;
        let salt = unhex(salt).and_then(|v| v.try_into().ok()).ok_or(BAD)?;
        let hash = unhex(hash).and_then(|v| v.try_into().ok()).ok_or(BAD)?;
        Ok(StoredHash { params, salt, hash })
    }
}

fn scrypt(
    password: &Password,
    salt: &[u8],
    params: ScryptParams,
) -> Result<[u8; HASH_LEN], AccountError> {
    params.check()?;
    let mut out = [0u8; HASH_LEN];
    openssl::pkcs5::scrypt(
        password.expose(),
        salt,
        1u64 << params.log_n,
        u64::from(params.r),
        u64::from(params.p),
        params.memory().saturating_mul(2),
        &mut out,
    )?;
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
        .collect()
}

/// What went wrong with the account store. Names appear; passwords never do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The name breaks the name rules.
    #[error("bad avatar name: {0}")]
    BadName(#[from] NameError),
    /// `add` for a name that is taken (case-insensitively).
    #[error("an avatar with that name already exists")]
    NameTaken,
    /// No avatar with that name.
    #[error("no avatar with that name")]
    NoSuchAvatar,
    /// A new password under the minimum.
    #[error("a password needs at least {min} characters")]
    PasswordTooShort {
        /// The minimum.
        min: usize,
    },
    /// A new password over the maximum.
    #[error("a password has at most {max} characters")]
    PasswordTooLong {
        /// The maximum.
        max: usize,
    },
    /// The database was keyed with another key (another keyfile).
    #[error("the account table was written with a different keyfile; use the keyfile this database was created with")]
    KeyMismatch,
    /// The account tables are newer than this program.
    #[error("the account tables have version {found}, this espmail knows up to {SCHEMA_VERSION}; upgrade espmail")]
    SchemaTooNew {
        /// Version found.
        found: i64,
    },
    /// A row could not be read back.
    #[error("damaged account data: {0}")]
    Corrupt(&'static str),
    /// SQLite failed (disk, locking, corruption).
    #[error("account database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// openssl failed (random bytes, scrypt).
    #[error("crypto library: {0}")]
    Crypto(#[from] openssl::error::ErrorStack),
    /// The crypto module failed (HMAC or cipher setup).
    #[error("crypto library: {0}")]
    Keying(#[from] CryptoError),
    /// The blocking task running the operation died.
    #[error("account worker failed: {0}")]
    Worker(String),
}

impl From<PasswordError> for AccountError {
    fn from(e: PasswordError) -> AccountError {
        match e {
            PasswordError::TooShort { min } => AccountError::PasswordTooShort { min },
            PasswordError::TooLong { max } => AccountError::PasswordTooLong { max },
        }
    }
}

/// Why a login failed. The player sees [`WRONG_NAME_OR_PASSWORD`] for every variant; the
/// variants exist for the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Unknown name or wrong password: deliberately one case.
    #[error("wrong name or password")]
    WrongNameOrPassword,
    /// Too many failed logins for this name or address.
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    Throttled {
        /// Seconds until another attempt is considered.
        retry_after_secs: u64,
    },
    /// The store failed; the login cannot be checked.
    #[error("cannot check the login: {0}")]
    Store(#[from] AccountError),
}

/// One account as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    /// Name as first registered.
    pub name: AvatarName,
    /// When it was created.
    pub created: SystemTime,
    /// Whether it can log in with a password (false for avatars created by a trusted
    /// front end).
    pub has_password: bool,
}

/// The account table, blocking. Use [`AccountsHandle`] from async code.
pub struct Accounts {
    db: Connection,
    index_key: Zeroizing<[u8; 32]>,
    seal_key: Zeroizing<[u8; 32]>,
    params: ScryptParams,
    dummy: StoredHash,
    /// Shortest new password accepted (`[auth] min_password_len`).
    min_password_len: usize,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("params", &self.params)
            .field("min_password_len", &self.min_password_len)
            .finish_non_exhaustive()
    }
}

enum Found {
    Avatar(Avatar, Option<StoredHash>),
    Unknown,
}

impl Accounts {
    /// Opens (creating if needed) the account tables in the database at `path`.
    pub fn open(path: &Path, key: &AccountsKey) -> Result<Accounts, AccountError> {
        Accounts::open_with(path, key, ScryptParams::default())
    }

    /// Like [`Accounts::open`], hashing new passwords with `params`.
    pub fn open_with(
        path: &Path,
        key: &AccountsKey,
        params: ScryptParams,
    ) -> Result<Accounts, AccountError> {
        params.check()?;
        let db = Connection::open(path)?;
        // Another connection (the vault's writer) shares the file: wait for its locks.
        db.busy_timeout(Duration::from_secs(10))?;
        // A removed account's sealed name and hash are zeroed on disk, like delivered mail.
        db.pragma_update(None, "secure_delete", "ON")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        // The vault runs the file in WAL mode; asking for it here too keeps the two
        // connections agreeing whichever opens the file first.
        let _mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        let index_key = key.sub_key(INDEX_LABEL)?;
        let seal_key = key.sub_key(SEAL_LABEL)?;
        let check = key.check_value()?;
        let mut accounts = Accounts {
            db,
            index_key,
            seal_key,
            params,
            dummy: StoredHash {
                params,
                salt: [0; SALT_LEN],
                hash: [0; HASH_LEN],
            },
            min_password_len: MIN_PASSWORD_LEN,
        };
        accounts.migrate(&check)?;
        // Unknown names are checked against this, so they cost what a real check costs.
        let mut random = Zeroizing::new([0u8; 24]);
        openssl::rand::rand_bytes(random.as_mut_slice())?;
        accounts.dummy = StoredHash::new(&Password::new(random.to_vec()), params)?;
        Ok(accounts)
    }

    /// Sets the shortest new password accepted (`[auth] min_password_len`; default
    /// [`MIN_PASSWORD_LEN`]). Clamped to 1..=[`MAX_PASSWORD_LEN`](crate::avatar::MAX_PASSWORD_LEN), so that some password
    /// is always acceptable.
    pub fn with_min_password_len(mut self, min: usize) -> Accounts {
        self.min_password_len = clamp_min_password_len(min);
        self
    }

    /// The shortest new password accepted, in characters.
    pub fn min_password_len(&self) -> usize {
        self.min_password_len
    }

    /// Which of `candidates` the account tables in the database at `path` are keyed
    /// with, found by the stored check value: `Ok(None)` when there is no database or it
    /// has no account tables yet (any key will do; [`Accounts::open`] records the one it
    /// is given), [`AccountError::KeyMismatch`] when none of them fits. Opens nothing
    /// for writing and creates nothing.
    pub fn find_key(
        path: &Path,
        candidates: &[&AccountsKey],
    ) -> Result<Option<usize>, AccountError> {
        if !path.exists() {
            return Ok(None);
        }
        // Read-write without CREATE: a WAL database may need its -shm file made, which a
        // read-only connection cannot do.
        let db = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        db.busy_timeout(Duration::from_secs(10))?;
        let has_meta: bool = db.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'accounts_meta')",
            [],
            |r| r.get(0),
        )?;
        if !has_meta {
            return Ok(None);
        }
        let stored: Option<String> = db
            .query_row(
                "SELECT value FROM accounts_meta WHERE key = 'key_check'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        for (i, key) in candidates.iter().enumerate() {
            if ct_eq(stored.as_bytes(), key.check_value()?.as_bytes()) {
                return Ok(Some(i));
            }
        }
        Err(AccountError::KeyMismatch)
    }

    /// Re-keys the account tables under `new` (key rotation): every display name is
    /// re-sealed, every blind index recomputed, and the check value replaced, in ONE
    /// transaction. A crash or error before the commit leaves the tables entirely under
    /// the old key (SQLite rolls the transaction back), so the old key stays valid until
    /// the commit and the new one is valid from it on, never a mixture. On success this
    /// `Accounts` uses the new key.
    pub fn rekey(&mut self, new: &AccountsKey) -> Result<(), AccountError> {
        self.rekey_inner(new, || Ok(()))
    }

    /// [`Accounts::rekey`] with a hook run just before the commit (tests inject a failure
    /// there, standing in for a crash).
    fn rekey_inner(
        &mut self,
        new: &AccountsKey,
        before_commit: impl FnOnce() -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        let new_index_key = new.sub_key(INDEX_LABEL)?;
        let new_seal_key = new.sub_key(SEAL_LABEL)?;
        let new_check = new.check_value()?;
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut stmt = tx.prepare("SELECT name_index, sealed_name FROM accounts")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        // Row by row in place: a new index equal to a not yet moved old index (as likely
        // as an HMAC collision) cannot overwrite a row, the primary key refuses it and
        // the whole transaction rolls back.
        for (old_index, sealed) in &rows {
            let name = unseal_with(&self.seal_key, old_index, sealed)?;
            // A row whose index does not match its own name would be unreachable under
            // the new key as well: refuse to carry damage over.
            let expected = crypto::hmac_sha256(self.index_key.as_slice(), name.key().as_bytes())?;
            if !ct_eq(&expected, old_index) {
                return Err(AccountError::Corrupt(
                    "an account row is filed under another name",
                ));
            }
            let new_index = crypto::hmac_sha256(new_index_key.as_slice(), name.key().as_bytes())?;
            let new_sealed =
                crypto::seal_with_key(&new_seal_key, &new_index, name.display().as_bytes())?;
            tx.execute(
                "UPDATE accounts SET name_index = ?1, sealed_name = ?2 WHERE name_index = ?3",
                params![new_index.to_vec(), new_sealed, old_index],
            )?;
        }
        let changed = tx.execute(
            "UPDATE accounts_meta SET value = ?1 WHERE key = 'key_check'",
            params![new_check],
        )?;
        if changed != 1 {
            return Err(AccountError::Corrupt("the account key check is missing"));
        }
        before_commit()?;
        tx.commit()?;
        self.index_key = new_index_key;
        self.seal_key = new_seal_key;
        tracing::info!(accounts = rows.len(), "avatar accounts re-keyed");
        Ok(())
    }

    fn migrate(&mut self, check: &str) -> Result<(), AccountError> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS accounts_meta (
                 key   TEXT PRIMARY KEY NOT NULL,
                 value TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS accounts (
                 name_index  BLOB PRIMARY KEY NOT NULL, -- HMAC of the normalised name
                 sealed_name BLOB NOT NULL,             -- AES-256-GCM: nonce | text | tag
                 pw_hash     TEXT,                      -- NULL: trusted front end only
                 created     INTEGER NOT NULL           -- unix seconds
             ) WITHOUT ROWID;",
        )?;
        let version: Option<String> = tx
            .query_row(
                "SELECT value FROM accounts_meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match version.map(|v| v.parse::<i64>()) {
            None => {
                tx.execute(
                    "INSERT INTO accounts_meta (key, value) VALUES ('schema_version', ?1)",
                    params![SCHEMA_VERSION.to_string()],
                )?;
            }
            Some(Ok(v)) if v > SCHEMA_VERSION => {
                return Err(AccountError::SchemaTooNew { found: v });
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => return Err(AccountError::Corrupt("unreadable schema version")),
        }
        let stored: Option<String> = tx
            .query_row(
                "SELECT value FROM accounts_meta WHERE key = 'key_check'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        match stored {
            None => {
                tx.execute(
                    "INSERT INTO accounts_meta (key, value) VALUES ('key_check', ?1)",
                    params![check],
                )?;
            }
            Some(s) if ct_eq(s.as_bytes(), check.as_bytes()) => {}
            Some(_) => return Err(AccountError::KeyMismatch),
        }
        tx.commit()?;
        Ok(())
    }

    /// The blind index of a normalised name: HMAC under the index key.
    fn index(&self, key: &str) -> Result<Vec<u8>, AccountError> {
        Ok(crypto::hmac_sha256(self.index_key.as_slice(), key.as_bytes())?.to_vec())
    }

    /// `nonce | ciphertext | tag` of the display name. The index is the associated data:
    /// a sealed name moved to another row fails to open.
    fn seal(&self, index: &[u8], display: &str) -> Result<Vec<u8>, AccountError> {
        Ok(crypto::seal_with_key(
            &self.seal_key,
            index,
            display.as_bytes(),
        )?)
    }

    fn unseal(&self, index: &[u8], sealed: &[u8]) -> Result<AvatarName, AccountError> {
        unseal_with(&self.seal_key, index, sealed)
    }

    fn find(&self, name: &AvatarName) -> Result<Found, AccountError> {
        let index = self.index(name.key())?;
        let row: Option<(Vec<u8>, Option<String>)> = self
            .db
            .query_row(
                "SELECT sealed_name, pw_hash FROM accounts WHERE name_index = ?1",
                params![index],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((sealed, hash)) = row else {
            return Ok(Found::Unknown);
        };
        let name = self.unseal(&index, &sealed)?;
        let hash = hash.as_deref().map(StoredHash::decode).transpose()?;
        Ok(Found::Avatar(Avatar { name }, hash))
    }

    /// The avatar called `name` (case-insensitively), if it exists.
    pub fn lookup(&self, name: &str) -> Result<Option<Avatar>, AccountError> {
        let Ok(name) = AvatarName::parse(name) else {
            return Ok(None);
        };
        Ok(match self.find(&name)? {
            Found::Avatar(a, _) => Some(a),
            Found::Unknown => None,
        })
    }

    /// Whether an avatar called `name` exists.
    pub fn exists(&self, name: &str) -> Result<bool, AccountError> {
        Ok(self.lookup(name)?.is_some())
    }

    /// Creates an avatar with a password.
    pub fn add(
        &self,
        name: &str,
        password: &Password,
        now: SystemTime,
    ) -> Result<Avatar, AccountError> {
        let name = AvatarName::parse(name)?;
        let hash = new_password_hash(password, self.params, self.min_password_len)?;
        self.insert(&name, Some(&hash), now)
    }

    /// Creates an avatar that only a trusted front end can log in as (no password), or
    /// returns the existing one.
    pub fn ensure_trusted(&self, name: &str, now: SystemTime) -> Result<Avatar, AccountError> {
        let name = AvatarName::parse(name)?;
        match self.find(&name)? {
            Found::Avatar(a, _) => Ok(a),
            Found::Unknown => match self.insert(&name, None, now) {
                Err(AccountError::NameTaken) => match self.find(&name)? {
                    Found::Avatar(a, _) => Ok(a),
                    Found::Unknown => Err(AccountError::NoSuchAvatar),
                },
                other => other,
            },
        }
    }

    fn insert(
        &self,
        name: &AvatarName,
        hash: Option<&StoredHash>,
        now: SystemTime,
    ) -> Result<Avatar, AccountError> {
        let index = self.index(name.key())?;
        let sealed = self.seal(&index, name.display())?;
        let created = unix_secs(now);
        let changed = self.db.execute(
            "INSERT OR IGNORE INTO accounts (name_index, sealed_name, pw_hash, created)
             VALUES (?1, ?2, ?3, ?4)",
            params![index, sealed, hash.map(StoredHash::encode), created],
        )?;
        if changed == 0 {
            return Err(AccountError::NameTaken);
        }
        Ok(Avatar { name: name.clone() })
    }

    /// Replaces an avatar's password.
    pub fn set_password(&self, name: &str, password: &Password) -> Result<(), AccountError> {
        let name = AvatarName::parse(name)?;
        let hash = new_password_hash(password, self.params, self.min_password_len)?;
        self.store_hash(&name, &hash)
    }

    fn store_hash(&self, name: &AvatarName, hash: &StoredHash) -> Result<(), AccountError> {
        let changed = self.db.execute(
            "UPDATE accounts SET pw_hash = ?1 WHERE name_index = ?2",
            params![hash.encode(), self.index(name.key())?],
        )?;
        if changed == 0 {
            return Err(AccountError::NoSuchAvatar);
        }
        Ok(())
    }

    /// Every avatar, sorted by normalised name.
    pub fn list(&self) -> Result<Vec<AccountInfo>, AccountError> {
        let mut stmt = self.db.prepare(
            "SELECT name_index, sealed_name, pw_hash IS NOT NULL, created FROM accounts",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (index, sealed, has_password, created) = row?;
            out.push(AccountInfo {
                name: self.unseal(&index, &sealed)?,
                created: UNIX_EPOCH + Duration::from_secs(u64::try_from(created).unwrap_or(0)),
                has_password,
            });
        }
        out.sort_by(|a, b| a.name.key().cmp(b.name.key()));
        Ok(out)
    }

    /// Removes an avatar; false if there was none. (Its mail is the vault's to delete.)
    pub fn remove(&self, name: &str) -> Result<bool, AccountError> {
        let name = AvatarName::parse(name)?;
        let changed = self.db.execute(
            "DELETE FROM accounts WHERE name_index = ?1",
            params![self.index(name.key())?],
        )?;
        Ok(changed > 0)
    }

    /// Checks a password. An unknown name, an avatar without a password and a wrong
    /// password give the same error after the same amount of hashing.
    pub fn verify(&self, name: &str, password: &Password) -> Result<Avatar, AuthError> {
        let creds = self.credentials(name)?;
        creds.check(password)
    }

    fn credentials(&self, name: &str) -> Result<Credentials, AccountError> {
        let found = match AvatarName::parse(name) {
            Ok(name) => self.find(&name)?,
            Err(_) => Found::Unknown,
        };
        Ok(match found {
            Found::Avatar(avatar, Some(hash)) => Credentials {
                avatar: Some(avatar),
                hash,
                known: true,
            },
            Found::Avatar(_, None) => Credentials {
                avatar: None,
                hash: self.dummy.clone(),
                known: true,
            },
            Found::Unknown => Credentials {
                avatar: None,
                hash: self.dummy.clone(),
                known: false,
            },
        })
    }
}

fn unseal_with(
    seal_key: &[u8; 32],
    index: &[u8],
    sealed: &[u8],
) -> Result<AvatarName, AccountError> {
    const BAD: AccountError = AccountError::Corrupt("a sealed avatar name does not open");
    let plain = crypto::open_with_key_any_len(seal_key, index, sealed).map_err(|_| BAD)?;
    let text = std::str::from_utf8(&plain).map_err(|_| BAD)?;
    AvatarName::parse(text).map_err(|_| BAD)
}

/// What a password is checked against: the avatar's hash, or the dummy one.
struct Credentials {
    avatar: Option<Avatar>,
    hash: StoredHash,
    known: bool,
}

impl Credentials {
    fn check(self, password: &Password) -> Result<Avatar, AuthError> {
        // Always hash, so unknown names take as long as wrong passwords.
        let matches = self.hash.matches(password).map_err(AuthError::Store)?;
        match self.avatar {
            Some(avatar) if matches => Ok(avatar),
            _ => Err(AuthError::WrongNameOrPassword),
        }
    }
}

fn password_acceptable(p: &Password, min_len: usize) -> bool {
    check_new_password(p, min_len).is_ok()
}

fn new_password_hash(
    password: &Password,
    params: ScryptParams,
    min_len: usize,
) -> Result<StoredHash, AccountError> {
    check_new_password(password, min_len)?;
    StoredHash::new(password, params)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Limits of the failed-login slowdown.
#[derive(Debug, Clone, Copy)]
pub struct ThrottleLimits {
    /// Failed attempts allowed per name, and per address, in `window`.
    pub failures: usize,
    /// The window.
    pub window: Duration,
    /// Names and addresses remembered at most (each).
    pub max_keys: usize,
}

impl Default for ThrottleLimits {
    fn default() -> ThrottleLimits {
        ThrottleLimits {
            failures: 5,
            window: Duration::from_secs(60),
            max_keys: 100_000,
        }
    }
}

/// Failed-login slowdown per name and per address (ESPMAIL.md §1).
#[derive(Debug)]
pub struct LoginThrottle {
    by_name: SlidingWindow<String>,
    by_addr: SlidingWindow<IpAddr>,
}

impl LoginThrottle {
    /// A throttle with these limits.
    pub fn new(limits: ThrottleLimits) -> LoginThrottle {
        LoginThrottle {
            by_name: SlidingWindow::new(limits.failures, limits.window, limits.max_keys),
            by_addr: SlidingWindow::new(limits.failures, limits.window, limits.max_keys),
        }
    }

    /// `Err(seconds to wait)` when this name or this address has failed too often lately.
    /// Names that break the name rules are counted only against the address (they can
    /// never log in, and must not fill the table with junk).
    pub fn check(&self, name: &str, peer: IpAddr, now: Instant) -> Result<(), u64> {
        let a = match name_key(name) {
            Some(k) => self.by_name.check(&k, now),
            None => Ok(()),
        };
        let b = self.by_addr.check(&peer, now);
        match (a, b) {
            (Ok(()), Ok(())) => Ok(()),
            (Err(x), Ok(())) | (Ok(()), Err(x)) => Err(wait_secs(x)),
            (Err(x), Err(y)) => Err(wait_secs(x.max(y))),
        }
    }

    /// Counts a failed attempt against the name and the address.
    pub fn failed(&mut self, name: &str, peer: IpAddr, now: Instant) {
        if let Some(k) = name_key(name) {
            self.by_name.record(&k, now);
        }
        self.by_addr.record(&peer, now);
    }

    /// Counts an auto-registration against the address, so one address cannot create
    /// avatars faster than it may fail logins.
    pub fn registered(&mut self, peer: IpAddr, now: Instant) {
        self.by_addr.record(&peer, now);
    }

    /// A successful login clears the name's count (not the address's: one address may be
    /// guessing many names).
    pub fn succeeded(&mut self, name: &str) {
        if let Some(k) = name_key(name) {
            self.by_name.forget(&k);
        }
    }
}

/// How a login went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The password matched an existing avatar.
    Existing(Avatar),
    /// The name was unknown and auto-registration created it.
    Registered(Avatar),
}

impl LoginOutcome {
    /// The avatar logged in.
    pub fn avatar(&self) -> &Avatar {
        match self {
            LoginOutcome::Existing(a) | LoginOutcome::Registered(a) => a,
        }
    }
}

struct HandleInner {
    db: Mutex<Accounts>,
    params: ScryptParams,
    /// The store's minimum, copied so a check never waits for the database lock.
    min_len: usize,
    /// scrypt needs 16 MiB and a core for tens of ms: a burst of logins must queue here
    /// rather than fill the blocking pool and the memory.
    hashing: tokio::sync::Semaphore,
    throttle: Mutex<LoginThrottle>,
}

/// The async face of [`Accounts`]: cheap to clone, shared by every session. Each call runs
/// on the blocking pool; scrypt runs outside the database lock, at most `hash_slots` at a
/// time.
#[derive(Clone)]
pub struct AccountsHandle {
    inner: Arc<HandleInner>,
}

impl fmt::Debug for AccountsHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountsHandle")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not lock every avatar out; the data stays consistent because
    // every critical section is a single call.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AccountsHandle {
    /// Wraps an open store. `hash_slots` bounds concurrent scrypt runs (the core count is
    /// a good value).
    pub fn new(accounts: Accounts, hash_slots: usize, limits: ThrottleLimits) -> AccountsHandle {
        let params = accounts.params;
        let min_len = accounts.min_password_len;
        AccountsHandle {
            inner: Arc::new(HandleInner {
                db: Mutex::new(accounts),
                params,
                min_len,
                hashing: tokio::sync::Semaphore::new(hash_slots.max(1)),
                throttle: Mutex::new(LoginThrottle::new(limits)),
            }),
        }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, AccountError>
    where
        T: Send + 'static,
        F: FnOnce(&HandleInner) -> Result<T, AccountError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| AccountError::Worker(e.to_string()))?
    }

    async fn hashing<T, F>(&self, f: F) -> Result<T, AccountError>
    where
        T: Send + 'static,
        F: FnOnce(&HandleInner) -> Result<T, AccountError> + Send + 'static,
    {
        let permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|e| AccountError::Worker(e.to_string()))?;
        let out = self.blocking(f).await;
        drop(permit);
        out
    }

    /// The shortest new password accepted (set with
    /// [`Accounts::with_min_password_len`] before wrapping the store); the session hands
    /// it to [`PasswordDialogue::start_with_min_len`].
    pub fn min_password_len(&self) -> usize {
        self.inner.min_len
    }

    /// The avatar called `name`, if any (no hashing).
    pub async fn lookup(&self, name: &str) -> Result<Option<Avatar>, AccountError> {
        let name = name.to_string();
        self.blocking(move |i| lock(&i.db).lookup(&name)).await
    }

    /// Creates an avatar with a password (`espmail account add`, in-world registration).
    pub async fn add(
        &self,
        name: &str,
        password: Password,
        now: SystemTime,
    ) -> Result<Avatar, AccountError> {
        let name = AvatarName::parse(name)?;
        self.hashing(move |i| {
            let hash = new_password_hash(&password, i.params, i.min_len)?;
            lock(&i.db).insert(&name, Some(&hash), now)
        })
        .await
    }

    /// Replaces a password (`espmail account passwd`).
    pub async fn set_password(&self, name: &str, password: Password) -> Result<(), AccountError> {
        let name = AvatarName::parse(name)?;
        self.hashing(move |i| {
            let hash = new_password_hash(&password, i.params, i.min_len)?;
            lock(&i.db).store_hash(&name, &hash)
        })
        .await
    }

    /// Every avatar (`espmail account list`).
    pub async fn list(&self) -> Result<Vec<AccountInfo>, AccountError> {
        self.blocking(|i| lock(&i.db).list()).await
    }

    /// Removes an avatar.
    pub async fn remove(&self, name: &str) -> Result<bool, AccountError> {
        let name = name.to_string();
        self.blocking(move |i| lock(&i.db).remove(&name)).await
    }

    /// The avatar a trusted front end names, created without a password on first sight.
    pub async fn ensure_trusted(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<Avatar, AccountError> {
        let name = name.to_string();
        self.blocking(move |i| lock(&i.db).ensure_trusted(&name, now))
            .await
    }

    /// Checks a password, without throttling or registration.
    pub async fn verify(&self, name: &str, password: Password) -> Result<Avatar, AuthError> {
        let name = name.to_string();
        let creds = self
            .blocking(move |i| lock(&i.db).credentials(&name))
            .await?;
        self.check(creds, password).await
    }

    async fn check(&self, creds: Credentials, password: Password) -> Result<Avatar, AuthError> {
        self.hashing(move |_| Ok(creds.check(&password)))
            .await
            .map_err(AuthError::Store)?
    }

    /// A password login as ESPMAIL.md §1 describes it: throttled per name and address;
    /// with `auto_register`, an unknown name with an acceptable new password (the
    /// configured minimum, [`AccountsHandle::min_password_len`], up to
    /// [`MAX_PASSWORD_LEN`](crate::avatar::MAX_PASSWORD_LEN) characters) creates the avatar. Failures are logged with the
    /// name and address, never the password.
    pub async fn login(
        &self,
        name: &str,
        password: Password,
        peer: IpAddr,
        auto_register: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Result<LoginOutcome, AuthError> {
        if let Err(retry_after_secs) = lock(&self.inner.throttle).check(name, peer, now) {
            tracing::warn!(avatar = %log_name(name), %peer, retry_after_secs, "login throttled");
            return Err(AuthError::Throttled { retry_after_secs });
        }
        let owned = name.to_string();
        let creds = self
            .blocking(move |i| lock(&i.db).credentials(&owned))
            .await?;
        let known = creds.known;
        let register =
            !known && auto_register && password_acceptable(&password, self.inner.min_len);
        let result = match self.check(creds, password.clone()).await {
            Ok(avatar) => Ok(LoginOutcome::Existing(avatar)),
            Err(AuthError::WrongNameOrPassword) if register => {
                match self.add(name, password, wall).await {
                    Ok(avatar) => {
                        tracing::info!(avatar = %avatar.name, "avatar registered at login");
                        Ok(LoginOutcome::Registered(avatar))
                    }
                    // Somebody registered it a moment ago: the password was not checked
                    // against theirs, so this is a failed login.
                    Err(AccountError::NameTaken | AccountError::BadName(_)) => {
                        Err(AuthError::WrongNameOrPassword)
                    }
                    Err(e) => Err(AuthError::Store(e)),
                }
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(LoginOutcome::Registered(_)) => lock(&self.inner.throttle).registered(peer, now),
            Ok(LoginOutcome::Existing(_)) => lock(&self.inner.throttle).succeeded(name),
            Err(AuthError::WrongNameOrPassword) => {
                lock(&self.inner.throttle).failed(name, peer, now);
                tracing::warn!(avatar = %log_name(name), %peer, "login failed");
            }
            Err(e) => {
                tracing::error!(avatar = %log_name(name), %peer, error = %e, "login could not be checked")
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avatar::MAX_PASSWORD_LEN;

    fn pw(s: &str) -> Password {
        Password::from(s.to_string())
    }

    const FAST: ScryptParams = ScryptParams {
        log_n: 8,
        r: 8,
        p: 1,
    };

    #[test]
    fn accounts_and_mail_file_an_avatar_under_the_same_name_key() {
        use crate::espmail::crypto;
        use crate::espmail::keyfile::{Keyfile, Secret};
        let kf = Keyfile::from_keys(1, vec![(1, Secret::from_bytes([3; 32]))]).unwrap();
        let ring = crypto::Keyring::new(&kf).unwrap();
        for typed in ["Bob", " bOB ", "Bob Smith-2_x.", "A.B", "ZZ top", "x"] {
            let name = AvatarName::parse(typed).unwrap();
            // Mail for the avatar is filed under the blind index of its account key.
            assert_eq!(
                ring.blinds(typed).unwrap(),
                vec![(1, ring.blind(1, name.key()).unwrap())],
                "{typed:?}"
            );
        }
    }

    #[test]
    fn the_accounts_key_never_prints() {
        assert!(!format!("{:?}", AccountsKey::new([7; 32])).contains('7'));
    }

    #[test]
    fn a_hash_matches_the_password_as_typed_and_nothing_trimmed() {
        let typed = " my pass phrase ";
        let h = StoredHash::new(&pw(typed), FAST).unwrap();
        assert!(h.matches(&pw(typed)).unwrap());
        assert!(!h.matches(&pw(typed.trim())).unwrap());
    }

    #[test]
    fn one_new_password_rule() {
        for (p, ok) in [
            ("1234567", false),
            ("12345678", true),
            ("ééééééé", false),
            ("éééééééé", true),
            (&"x".repeat(MAX_PASSWORD_LEN), true),
            (&"x".repeat(MAX_PASSWORD_LEN + 1), false),
        ] {
            assert_eq!(password_acceptable(&pw(p), MIN_PASSWORD_LEN), ok, "{p}");
            assert_eq!(
                new_password_hash(&pw(p), FAST, MIN_PASSWORD_LEN).is_ok(),
                ok,
                "{p}"
            );
        }
    }

    #[test]
    fn rekey_moves_every_row_and_the_check_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let old = AccountsKey::new([1; 32]);
        let new = AccountsKey::new([2; 32]);
        let mut a = Accounts::open_with(&db, &old, FAST).unwrap();
        a.add("Bob", &pw("bob-password"), SystemTime::now())
            .unwrap();
        a.ensure_trusted("Front Ann", SystemTime::now()).unwrap();
        assert_eq!(Accounts::find_key(&db, &[&new, &old]).unwrap(), Some(1));
        a.rekey(&new).unwrap();
        // The same handle keeps working under the new key.
        assert_eq!(a.lookup("bob").unwrap().unwrap().name.display(), "Bob");
        assert!(a.verify("BOB", &pw("bob-password")).is_ok());
        drop(a);
        assert_eq!(Accounts::find_key(&db, &[&old, &new]).unwrap(), Some(1));
        assert!(matches!(
            Accounts::open_with(&db, &old, FAST),
            Err(AccountError::KeyMismatch)
        ));
        let a = Accounts::open_with(&db, &new, FAST).unwrap();
        let names: Vec<String> = a
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.name.display().to_owned())
            .collect();
        assert_eq!(names, ["Bob", "Front Ann"]);
        assert!(a.verify("Bob", &pw("bob-password")).is_ok());
        assert!(a.verify("Bob", &pw("bob-passworD")).is_err());
        // No key fits: refused, not guessed.
        assert!(matches!(
            Accounts::find_key(&db, &[&old]),
            Err(AccountError::KeyMismatch)
        ));
        assert_eq!(
            Accounts::find_key(&dir.path().join("none.db"), &[&old]).unwrap(),
            None
        );
    }

    #[test]
    fn rekey_interrupted_before_commit_leaves_the_old_key_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let old = AccountsKey::new([1; 32]);
        let new = AccountsKey::new([2; 32]);
        let mut a = Accounts::open_with(&db, &old, FAST).unwrap();
        for n in ["Bob", "Cy", "Dee"] {
            a.add(n, &pw("long-password"), SystemTime::now()).unwrap();
        }
        let err = a
            .rekey_inner(&new, || Err(AccountError::Worker("injected crash".into())))
            .unwrap_err();
        assert!(matches!(err, AccountError::Worker(_)), "{err}");
        // The handle still holds (and the file is still under) the old key.
        assert!(a.verify("Cy", &pw("long-password")).is_ok());
        drop(a);
        assert_eq!(Accounts::find_key(&db, &[&new, &old]).unwrap(), Some(1));
        assert!(matches!(
            Accounts::open_with(&db, &new, FAST),
            Err(AccountError::KeyMismatch)
        ));
        let mut a = Accounts::open_with(&db, &old, FAST).unwrap();
        assert_eq!(a.list().unwrap().len(), 3);
        for n in ["bob", "cy", "dee"] {
            assert!(a.verify(n, &pw("long-password")).is_ok(), "{n}");
        }
        // A panic midway (the process dying) rolls back the same way.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = a.rekey_inner(&new, || panic!("crash"));
        }));
        assert!(caught.is_err());
        drop(a);
        let a = Accounts::open_with(&db, &old, FAST).unwrap();
        assert!(a.verify("Dee", &pw("long-password")).is_ok());
        // And the rekey then goes through.
        let mut a = a;
        a.rekey(&new).unwrap();
        drop(a);
        let a = Accounts::open_with(&db, &new, FAST).unwrap();
        assert!(a.verify("Dee", &pw("long-password")).is_ok());
    }

    #[test]
    fn hashes_are_salted_and_round_trip_their_params() {
        let a = StoredHash::new(&pw("same password"), FAST).unwrap();
        let b = StoredHash::new(&pw("same password"), FAST).unwrap();
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.hash, b.hash);
        assert!(a.matches(&pw("same password")).unwrap());
        assert!(!a.matches(&pw("same passworD")).unwrap());
        let enc = a.encode();
        assert!(enc.starts_with("scrypt$8$8$1$"));
        let back = StoredHash::decode(&enc).unwrap();
        assert!(back == a);
        assert!(back.matches(&pw("same password")).unwrap());
        for bad in [
            "",
            "bcrypt$8$8$1$00$00",
            "scrypt$8$8$1$zz$00",
            "scrypt$40$8$1$00000000000000000000000000000000$00",
            &enc[..enc.len() - 2],
        ] {
            assert!(StoredHash::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn default_params_are_memory_hard() {
        let p = ScryptParams::default();
        assert_eq!((p.log_n, p.r, p.p), (14, 8, 1));
        assert_eq!(p.memory(), 16 << 20);
        let h = StoredHash::new(&pw("a long password"), p).unwrap();
        assert!(h.matches(&pw("a long password")).unwrap());
    }

    #[test]
    fn throttle_per_name_and_per_address() {
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut t = LoginThrottle::new(ThrottleLimits::default());
        for i in 0..5 {
            assert_eq!(t.check("Bob", a, t0), Ok(()));
            t.failed("Bob", a, t0 + Duration::from_secs(i));
        }
        // Name throttled from any address, in any case.
        assert_eq!(t.check("BOB", b, t0 + Duration::from_secs(10)), Err(50));
        // Address throttled for any name.
        assert!(t.check("alice", a, t0 + Duration::from_secs(10)).is_err());
        assert_eq!(t.check("alice", b, t0 + Duration::from_secs(10)), Ok(()));
        assert_eq!(t.check("bob", b, t0 + Duration::from_secs(61)), Ok(()));
        // Success clears the name, not the address.
        t.succeeded("bob");
        assert_eq!(t.check("bob", b, t0 + Duration::from_secs(10)), Ok(()));
        assert!(t.check("carol", a, t0 + Duration::from_secs(10)).is_err());
        // Illegal names count against the address only.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let names_before = t.by_name.len();
        for _ in 0..5 {
            t.failed("no/such\nname", c, t0);
        }
        assert!(t.check("x", c, t0).is_err());
        assert_eq!(t.by_name.len(), names_before);
    }

    #[test]
    fn derived_keys_differ_by_secret_and_are_stable() {
        let a = AccountsKey::derive_from(b"secret one").unwrap();
        let b = AccountsKey::derive_from(b"secret one").unwrap();
        let c = AccountsKey::derive_from(b"secret two").unwrap();
        assert_eq!(*a.0, *b.0);
        assert_ne!(*a.0, *c.0);
        assert_ne!(&a.0[..10], b"secret one");
    }
}
