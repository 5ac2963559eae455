//! The avatar accounts (DESIGN.md promise 6, ESPMAIL.md §1): the `accounts` table of the
//! vault's database, password hashes, and the login that checks them.
//!
//! The table lives in the mail database and is part of its one schema (`migrations/`,
//! `002_accounts.sql`, counted by the vault's `user_version`); [`Accounts`] opens it with
//! the same connection setup as the mail store ([`store::connect`]: WAL,
//! `synchronous=FULL`, `secure_delete`, the busy timeout) and the same keyfile check (the
//! vault's per-key check values in `key_check`).
//!
//! The database must not reveal anybody's name (DESIGN.md promise 2). So a row is found by
//! a keyed blind index (HMAC of the normalised name) and the display name is sealed with
//! AES-256-GCM, the index as associated data, so a sealed name moved to another row does
//! not open. Both keys are HMAC sub-keys of the *accounts key*, which is derived from one
//! keyfile key by [`crypto::accounts_key`] (HKDF under a label of its own, so accounts and
//! mail never share a key). Which keyfile key that is, is recorded in the vault's `meta`
//! table (`accounts_key`): the active key when the table is first opened, and whatever
//! [`Accounts::rekey`] moves it to during a key rotation (one transaction: every row and
//! the recorded id together).
//!
//! Password hashes are sealed too (issue 10 L1): the `scrypt$…` string is stored as
//! `sealed$<hex>`, AES-256-GCM under a third sub-key with the row's index as associated
//! data, so a stolen database without the keyfile gives an attacker no hash to guess
//! passwords against offline. (Sealing the hash, rather than an HMAC of the password before
//! scrypt, lets a key rotation move it to the new key without anyone's password.) A hash
//! stored in the clear by an older version is sealed at the first open, in one transaction.
//!
//! Upgrade from schema 1: before the accounts joined the vault's migrations, they kept
//! their own `accounts_meta` table (a schema version and a check value of the accounts
//! key). The first open by this version finds the keyfile key that check value names,
//! records its id in `meta` and drops `accounts_meta`, in one transaction; no row is
//! re-keyed.
//!
//! The parts: [`ScryptParams`] and hashing in `password.rs`; [`AccountsHandle`], the async
//! face sessions use (blocking work on the blocking pool), in `accounts_handle.rs`; the
//! failed-login slowdown ([`LoginThrottle`]) in `throttle.rs`. All are reached from here.
//!
//! May touch: the database file (its `accounts` table and its row of `meta`), openssl for
//! scrypt and random bytes, and [`crypto`] for HMAC and AES-256-GCM. No sockets.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use zeroize::Zeroizing;

pub use super::accounts_handle::Reservation;
pub use super::accounts_handle::{AccountsHandle, LoginOutcome};
pub use super::password::ScryptParams;
pub use super::throttle::{Kind, LoginThrottle, Outcome, ThrottleLimits};

use super::crypto::{self, CryptoError, Keyring};
use super::keyfile::KeyId;
use super::password::{hex, new_password_hash, unhex, StoredHash};
use super::store::{self, Limits, StoreError};
use crate::avatar::{
    clamp_min_password_len, ct_eq, AvatarName, NameError, Password, PasswordError,
    MIN_PASSWORD_LEN, NAME_MAX,
};

/// The `meta` row naming the keyfile key the accounts are keyed from.
const KEY_ID_META: &str = "accounts_key";
/// HMAC labels under the accounts key. Changing one makes every existing table unreadable.
const INDEX_LABEL: &[u8] = b"espmail accounts: name index v1";
const SEAL_LABEL: &[u8] = b"espmail accounts: sealed name v1";
const HASH_LABEL: &[u8] = b"espmail accounts: sealed password hash v1";
/// How a sealed hash starts in `pw_hash`; a clear one starts `scrypt$`.
const SEALED_HASH_PREFIX: &str = "sealed$";
/// The `meta` row set once the clear hashes of an older version have been sealed: from
/// then on a hash in the clear is not an old one but a planted one, and is refused.
const HASHES_SEALED_META: &str = "accounts_hashes_sealed";
/// Schema 1 only: the label of `accounts_meta`'s check value, read once by the upgrade.
const LEGACY_CHECK_LABEL: &[u8] = b"espmail accounts: key check v1";
/// Schema 1 only: the highest `accounts_meta` schema version there was.
const LEGACY_SCHEMA_VERSION: i64 = 1;

/// An avatar whose account exists: its name as first registered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Avatar {
    /// Name as first registered, and its normalised key.
    pub name: AvatarName,
}

/// The accounts key of one keyfile key (32 bytes, zeroed on drop): derived by
/// [`crypto::accounts_key`], the one derivation, through the keyring.
struct AccountsKey(Zeroizing<[u8; 32]>);

impl AccountsKey {
    /// The accounts key of keyfile key `key_id`; a key the keyfile lacks is
    /// [`AccountError::MissingKey`].
    fn of(keys: &Keyring, key_id: KeyId) -> Result<AccountsKey, AccountError> {
        match keys.accounts_key(key_id) {
            Ok(k) => Ok(AccountsKey(k)),
            Err(CryptoError::UnknownKey { key_id }) => Err(AccountError::MissingKey { key_id }),
            Err(e) => Err(e.into()),
        }
    }

    /// A sub-key for one use: HMAC under this key over that use's label.
    fn sub_key(&self, label: &[u8]) -> Result<Zeroizing<[u8; 32]>, AccountError> {
        Ok(Zeroizing::new(crypto::hmac_sha256(
            self.0.as_slice(),
            label,
        )?))
    }

    /// Schema 1's check value (hex of an HMAC under this key over its own label), as
    /// `accounts_meta` stored it: only the upgrade reads it.
    fn legacy_check_value(&self) -> Result<String, AccountError> {
        Ok(hex(self.sub_key(LEGACY_CHECK_LABEL)?.as_slice()))
    }
}

impl fmt::Debug for AccountsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountsKey(<secret>)")
    }
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
    /// A schema-1 table's check value fits none of the keyfile's keys (another keyfile).
    #[error("the account table was written with a different keyfile; use the keyfile this database was created with")]
    KeyMismatch,
    /// The accounts are keyed from a key the keyfile no longer holds.
    #[error("the avatar accounts need key {key_id}, which is not in the keyfile: restore the keyfile that still holds it")]
    MissingKey {
        /// The key id recorded for the accounts.
        key_id: KeyId,
    },
    /// A schema-1 `accounts_meta` table newer than schema 1 (never written by espmail).
    #[error("the account tables have version {found}, this espmail knows up to {LEGACY_SCHEMA_VERSION}; upgrade espmail")]
    SchemaTooNew {
        /// Version found.
        found: i64,
    },
    /// A row could not be read back.
    #[error("damaged account data: {0}")]
    Corrupt(&'static str),
    /// The vault refused: no database, wrong keyfile, a schema too new, disk or locking.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// Every password-hashing thread is busy and their queue is full.
    #[error("the password-hashing queue is full; try again in a few seconds")]
    Busy,
}

impl From<PasswordError> for AccountError {
    fn from(e: PasswordError) -> AccountError {
        match e {
            PasswordError::TooShort { min } => AccountError::PasswordTooShort { min },
            PasswordError::TooLong { max } => AccountError::PasswordTooLong { max },
        }
    }
}

/// Why a login failed. The player sees
/// [`WRONG_NAME_OR_PASSWORD`](crate::world::login::WRONG_NAME_OR_PASSWORD) for every
/// variant but [`AuthError::Throttled`], which is told how long to wait
/// ([`too_many_tries`](crate::world::login::too_many_tries)); the variants exist for the
/// log.
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
    /// The keyfile key the accounts key comes from (as `meta` records it).
    key_id: KeyId,
    index_key: Zeroizing<[u8; 32]>,
    seal_key: Zeroizing<[u8; 32]>,
    hash_key: Zeroizing<[u8; 32]>,
    pub(crate) params: ScryptParams,
    dummy: StoredHash,
    /// Shortest new password accepted (`[auth] min_password_len`).
    pub(crate) min_password_len: usize,
}

impl fmt::Debug for Accounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Accounts")
            .field("key_id", &self.key_id)
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
    /// Opens (creating if needed) the vault's database at `path` for its accounts: the
    /// mail store's connection setup and migrations, the keyfile (`keys`) checked against
    /// the database, then the accounts key of the keyfile key `meta` records (recording
    /// the active one, or upgrading a schema-1 table, on first open).
    pub fn open(path: &Path, keys: &Keyring, limits: &Limits) -> Result<Accounts, AccountError> {
        Accounts::open_with(path, keys, limits, ScryptParams::default())
    }

    /// Like [`Accounts::open`], hashing new passwords with `params`.
    pub fn open_with(
        path: &Path,
        keys: &Keyring,
        limits: &Limits,
        params: ScryptParams,
    ) -> Result<Accounts, AccountError> {
        params.check()?;
        let mut db = store::connect(path, limits, true)?;
        store::migrate(&mut db)?;
        store::check_keys(&mut db, keys)?;
        let key_id = settle_key_id(&mut db, keys)?;
        let key = AccountsKey::of(keys, key_id)?;
        // Unknown names are checked against this, so they cost what a real check costs.
        let mut random = Zeroizing::new([0u8; 24]);
        openssl::rand::rand_bytes(random.as_mut_slice())?;
        let dummy = StoredHash::new(&Password::new(random.to_vec()), params)?;
        let mut accounts = Accounts {
            db,
            key_id,
            index_key: key.sub_key(INDEX_LABEL)?,
            seal_key: key.sub_key(SEAL_LABEL)?,
            hash_key: key.sub_key(HASH_LABEL)?,
            params,
            dummy,
            min_password_len: MIN_PASSWORD_LEN,
        };
        accounts.seal_clear_hashes()?;
        accounts.pad_old_names()?;
        Ok(accounts)
    }

    /// Sets the shortest new password accepted (`[auth] min_password_len`; default
    /// [`MIN_PASSWORD_LEN`]). Clamped by [`clamp_min_password_len`], so that some password
    /// is always acceptable.
    pub fn with_min_password_len(mut self, min: usize) -> Accounts {
        self.min_password_len = clamp_min_password_len(min);
        self
    }

    /// The shortest new password accepted, in characters.
    pub fn min_password_len(&self) -> usize {
        self.min_password_len
    }

    /// The keyfile key the accounts are keyed from: the active key, except while a key
    /// rotation has not moved them yet.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Re-keys the accounts under keyfile key `to` (key rotation): every display name is
    /// re-sealed, every blind index recomputed, and the key id in `meta` replaced, in ONE
    /// transaction. A crash or error before the commit leaves the table entirely under
    /// the old key (SQLite rolls the transaction back), so the old key stays valid until
    /// the commit and the new one is valid from it on, never a mixture. On success this
    /// `Accounts` uses the new key.
    pub fn rekey(&mut self, keys: &Keyring, to: KeyId) -> Result<(), AccountError> {
        self.rekey_inner(keys, to, || Ok(()))
    }

    /// [`Accounts::rekey`] with a hook run just before the commit (tests inject a failure
    /// there, standing in for a crash).
    fn rekey_inner(
        &mut self,
        keys: &Keyring,
        to: KeyId,
        before_commit: impl FnOnce() -> Result<(), AccountError>,
    ) -> Result<(), AccountError> {
        // The keyring must be this database's, and its keys known to the vault's check,
        // before the accounts depend on one of them.
        store::check_keys(&mut self.db, keys)?;
        let new = AccountsKey::of(keys, to)?;
        let new_index_key = new.sub_key(INDEX_LABEL)?;
        let new_seal_key = new.sub_key(SEAL_LABEL)?;
        let new_hash_key = new.sub_key(HASH_LABEL)?;
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(Vec<u8>, Vec<u8>, Option<String>)> = {
            let mut stmt = tx.prepare("SELECT name_index, sealed_name, pw_hash FROM accounts")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        // Row by row in place: a new index equal to a not yet moved old index (as likely
        // as an HMAC collision) cannot overwrite a row, the primary key refuses it and
        // the whole transaction rolls back.
        for (old_index, sealed, hash) in &rows {
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
            let new_sealed = seal_name(&new_seal_key, &new_index, name.display())?;
            let new_hash = match hash {
                Some(h) => {
                    let hash = open_hash(&self.hash_key, old_index, h)?;
                    Some(seal_hash(&new_hash_key, &new_index, &hash)?)
                }
                None => None,
            };
            tx.execute(
                "UPDATE accounts SET name_index = ?1, sealed_name = ?2, pw_hash = ?3 \
                 WHERE name_index = ?4",
                params![new_index.to_vec(), new_sealed, new_hash, old_index],
            )?;
        }
        let changed = tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = ?2",
            params![to, KEY_ID_META],
        )?;
        if changed != 1 {
            return Err(AccountError::Corrupt("the accounts' key id is missing"));
        }
        before_commit()?;
        tx.commit()?;
        let from = std::mem::replace(&mut self.key_id, to);
        self.index_key = new_index_key;
        self.seal_key = new_seal_key;
        self.hash_key = new_hash_key;
        tracing::info!(accounts = rows.len(), from, to, "avatar accounts re-keyed");
        Ok(())
    }

    /// The blind index of a normalised name: HMAC under the index key.
    fn index(&self, key: &str) -> Result<Vec<u8>, AccountError> {
        Ok(crypto::hmac_sha256(self.index_key.as_slice(), key.as_bytes())?.to_vec())
    }

    /// `nonce | ciphertext | tag` of the display name. The index is the associated data:
    /// a sealed name moved to another row fails to open.
    fn seal(&self, index: &[u8], display: &str) -> Result<Vec<u8>, AccountError> {
        seal_name(&self.seal_key, index, display)
    }

    fn unseal(&self, index: &[u8], sealed: &[u8]) -> Result<AvatarName, AccountError> {
        unseal_with(&self.seal_key, index, sealed)
    }

    /// Rows written by an older version (issue 10 L2): names sealed unpadded are sealed
    /// again padded, and creation times are cut to their day, in one transaction. Found by
    /// size and by value, so it is done once and costs one scan at later opens.
    fn pad_old_names(&mut self) -> Result<(), AccountError> {
        let padded_len = self.seal(b"size", "x")?.len();
        let seal_key = self.seal_key.clone();
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(Vec<u8>, Vec<u8>)> = {
            let mut stmt = tx.prepare(
                "SELECT name_index, sealed_name FROM accounts WHERE length(sealed_name) != ?1",
            )?;
            let rows = stmt.query_map(params![padded_len], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (index, sealed) in &rows {
            let name = unseal_with(&seal_key, index, sealed)?;
            tx.execute(
                "UPDATE accounts SET sealed_name = ?1 WHERE name_index = ?2",
                params![seal_name(&seal_key, index, name.display())?, index],
            )?;
        }
        let days = tx.execute(
            "UPDATE accounts SET created = created - (created % 86400) WHERE created % 86400 != 0",
            [],
        )?;
        tx.commit()?;
        if !rows.is_empty() || days > 0 {
            tracing::info!(
                names = rows.len(),
                days,
                "avatar accounts upgraded: names padded to one size, creation times to the day"
            );
        }
        Ok(())
    }

    /// Seals every password hash an older version stored in the clear, in one
    /// transaction (a crash leaves them all as they were, and the next open tries again),
    /// and records that it was done: only once, so a clear hash written into the database
    /// later (by someone who can write it but has no keyfile) is never taken for an old
    /// one.
    fn seal_clear_hashes(&mut self) -> Result<(), AccountError> {
        let tx = self
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let done: Option<i64> = tx
            .query_row(
                "SELECT value FROM meta WHERE name = ?1",
                params![HASHES_SEALED_META],
                |r| r.get(0),
            )
            .optional()?;
        if done.is_some() {
            return Ok(());
        }
        let rows: Vec<(Vec<u8>, String)> = {
            let mut stmt = tx.prepare(
                "SELECT name_index, pw_hash FROM accounts WHERE pw_hash LIKE 'scrypt$%'",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<Result<_, _>>()?
        };
        for (index, clear) in &rows {
            let hash = StoredHash::decode(clear)?;
            tx.execute(
                "UPDATE accounts SET pw_hash = ?1 WHERE name_index = ?2",
                params![seal_hash(&self.hash_key, index, &hash)?, index],
            )?;
        }
        tx.execute(
            "INSERT INTO meta (name, value) VALUES (?1, 1)",
            params![HASHES_SEALED_META],
        )?;
        tx.commit()?;
        if !rows.is_empty() {
            tracing::info!(
                accounts = rows.len(),
                "password hashes sealed under the keyfile (they were stored in the clear)"
            );
        }
        Ok(())
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
        let hash = hash
            .as_deref()
            .map(|h| open_hash(&self.hash_key, &index, h))
            .transpose()?;
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
    /// returns the existing one; with whether it has a password.
    pub fn ensure_trusted(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<(Avatar, bool), AccountError> {
        let name = AvatarName::parse(name)?;
        match self.find(&name)? {
            Found::Avatar(a, hash) => Ok((a, hash.is_some())),
            Found::Unknown => match self.insert(&name, None, now) {
                Err(AccountError::NameTaken) => match self.find(&name)? {
                    Found::Avatar(a, hash) => Ok((a, hash.is_some())),
                    Found::Unknown => Err(AccountError::NoSuchAvatar),
                },
                other => other.map(|a| (a, false)),
            },
        }
    }

    pub(crate) fn insert(
        &self,
        name: &AvatarName,
        hash: Option<&StoredHash>,
        now: SystemTime,
    ) -> Result<Avatar, AccountError> {
        let index = self.index(name.key())?;
        let sealed = self.seal(&index, name.display())?;
        let hash = hash
            .map(|h| seal_hash(&self.hash_key, &index, h))
            .transpose()?;
        // The day is all `account list` shows; the second would only be metadata (L2).
        let created = day_start(unix_secs(now));
        let changed = self.db.execute(
            "INSERT OR IGNORE INTO accounts (name_index, sealed_name, pw_hash, created)
             VALUES (?1, ?2, ?3, ?4)",
            params![index, sealed, hash, created],
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

    pub(crate) fn store_hash(
        &self,
        name: &AvatarName,
        hash: &StoredHash,
    ) -> Result<(), AccountError> {
        let index = self.index(name.key())?;
        let changed = self.db.execute(
            "UPDATE accounts SET pw_hash = ?1 WHERE name_index = ?2",
            params![seal_hash(&self.hash_key, &index, hash)?, index],
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

    pub(crate) fn credentials(&self, name: &str) -> Result<Credentials, AccountError> {
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

/// `sealed$<hex>` of a hash's `scrypt$…` string, the row's index as associated data (a
/// sealed hash moved to another row does not open).
fn seal_hash(hash_key: &[u8; 32], index: &[u8], hash: &StoredHash) -> Result<String, AccountError> {
    let sealed = crypto::seal_with_key(hash_key, index, hash.encode().as_bytes())?;
    Ok(format!("{SEALED_HASH_PREFIX}{}", hex(&sealed)))
}

/// The hash in a sealed `pw_hash` value. One in the clear is refused: every clear hash of
/// an older version was sealed at the first open ([`Accounts::seal_clear_hashes`]).
fn open_hash(hash_key: &[u8; 32], index: &[u8], stored: &str) -> Result<StoredHash, AccountError> {
    const BAD: AccountError = AccountError::Corrupt("a sealed password hash does not open");
    const CLEAR: AccountError = AccountError::Corrupt(
        "a password hash is stored in the clear (written by something other than espmail); \
         set a new password with `espmail account passwd`",
    );
    let sealed = stored.strip_prefix(SEALED_HASH_PREFIX).ok_or(CLEAR)?;
    let sealed = unhex(sealed).ok_or(BAD)?;
    let plain = crypto::open_with_key_any_len(hash_key, index, &sealed).map_err(|_| BAD)?;
    let text = std::str::from_utf8(&plain).map_err(|_| BAD)?;
    StoredHash::decode(text)
}

/// A sealed name's plaintext: its length in one byte, the name, zeros up to
/// [`NAME_MAX`] (issue 10 L2), so every sealed name has the same size and a copy of the
/// database does not tell a 3-letter name from a 16-letter one. Names are ASCII, so the
/// byte count is the character count.
const PADDED_NAME_LEN: usize = 1 + NAME_MAX;

fn seal_name(seal_key: &[u8; 32], index: &[u8], display: &str) -> Result<Vec<u8>, AccountError> {
    let bytes = display.as_bytes();
    let len = u8::try_from(bytes.len())
        .ok()
        .filter(|n| usize::from(*n) <= NAME_MAX)
        .ok_or(AccountError::Corrupt(
            "an avatar name longer than names may be",
        ))?;
    let mut plain = Zeroizing::new([0u8; PADDED_NAME_LEN]);
    plain[0] = len;
    plain[1..=bytes.len()].copy_from_slice(bytes);
    Ok(crypto::seal_with_key(seal_key, index, plain.as_slice())?)
}

fn unseal_with(
    seal_key: &[u8; 32],
    index: &[u8],
    sealed: &[u8],
) -> Result<AvatarName, AccountError> {
    const BAD: AccountError = AccountError::Corrupt("a sealed avatar name does not open");
    let plain = crypto::open_with_key_any_len(seal_key, index, sealed).map_err(|_| BAD)?;
    // Padded (this version): a length byte, never a legal name character, then the name.
    // Unpadded (older versions): the name itself, at most NAME_MAX bytes.
    let name = match plain.split_first() {
        Some((&len, rest)) if plain.len() == PADDED_NAME_LEN => {
            rest.get(..usize::from(len)).ok_or(BAD)?
        }
        _ => &plain[..],
    };
    let text = std::str::from_utf8(name).map_err(|_| BAD)?;
    AvatarName::parse(text).map_err(|_| BAD)
}

/// What a password is checked against: the avatar's hash, or the dummy one.
pub(crate) struct Credentials {
    avatar: Option<Avatar>,
    hash: StoredHash,
    pub(crate) known: bool,
}

impl Credentials {
    pub(crate) fn check(self, password: &Password) -> Result<Avatar, AuthError> {
        // Always hash, so unknown names take as long as wrong passwords.
        let matches = self.hash.matches(password).map_err(AuthError::Store)?;
        match self.avatar {
            Some(avatar) if matches => Ok(avatar),
            _ => Err(AuthError::WrongNameOrPassword),
        }
    }
}

/// The first second of the (UTC) day `secs` falls in.
fn day_start(secs: i64) -> i64 {
    secs - secs.rem_euclid(86_400)
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The keyfile key the accounts are keyed from, as `meta` records it; on the first open
/// of a database, recorded: the key a schema-1 table's check value names (then its
/// `accounts_meta` is dropped, in the same transaction), else the active key.
fn settle_key_id(db: &mut Connection, keys: &Keyring) -> Result<KeyId, AccountError> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<KeyId> = tx
        .query_row(
            "SELECT value FROM meta WHERE name = ?1",
            params![KEY_ID_META],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(key_id) = stored {
        return Ok(key_id);
    }
    let legacy = legacy_key_id(&tx, keys)?;
    let key_id = legacy.unwrap_or_else(|| keys.active_id());
    tx.execute(
        "INSERT INTO meta (name, value) VALUES (?1, ?2)",
        params![KEY_ID_META, key_id],
    )?;
    tx.execute_batch("DROP TABLE IF EXISTS accounts_meta")?;
    tx.commit()?;
    if legacy.is_some() {
        tracing::info!(
            key_id,
            "avatar accounts upgraded: their key is now recorded by id, checked with the mail's"
        );
    }
    Ok(key_id)
}

/// Which of the keyfile's keys a schema-1 table's `accounts_meta` check value names; `None`
/// when there is no such table (or it never recorded a check).
fn legacy_key_id(tx: &Connection, keys: &Keyring) -> Result<Option<KeyId>, AccountError> {
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'accounts_meta')",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        return Ok(None);
    }
    let version: Option<String> = tx
        .query_row(
            "SELECT value FROM accounts_meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    match version.map(|v| v.parse::<i64>()) {
        Some(Ok(v)) if v > LEGACY_SCHEMA_VERSION => {
            return Err(AccountError::SchemaTooNew { found: v })
        }
        Some(Err(_)) => return Err(AccountError::Corrupt("unreadable schema version")),
        _ => {}
    }
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM accounts_meta WHERE key = 'key_check'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let Some(stored) = stored else {
        return Ok(None);
    };
    for key_id in keys.key_ids() {
        let check = AccountsKey::of(keys, key_id)?.legacy_check_value()?;
        if ct_eq(stored.as_bytes(), check.as_bytes()) {
            return Ok(Some(key_id));
        }
    }
    Err(AccountError::KeyMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::avatar::test_support::pw;
    use crate::espmail::keyfile::{Keyfile, Secret};
    use crate::espmail::password::FAST;

    #[test]
    fn accounts_and_mail_file_an_avatar_under_the_same_name_key() {
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
        let key = AccountsKey::of(&ring(&[(1, 7)], 1), 1).unwrap();
        assert_eq!(format!("{key:?}"), "AccountsKey(<secret>)");
    }

    /// A keyring of `(id, byte)` keys (each key's 32 bytes all `byte`), `active` active.
    fn ring(keys: &[(KeyId, u8)], active: KeyId) -> Keyring {
        let kf = Keyfile::from_keys(
            active,
            keys.iter()
                .map(|&(id, b)| (id, Secret::from_bytes([b; 32])))
                .collect(),
        )
        .unwrap();
        Keyring::new(&kf).unwrap()
    }

    fn open(db: &Path, keys: &Keyring) -> Result<Accounts, AccountError> {
        Accounts::open_with(db, keys, &Limits::default(), FAST)
    }

    /// The key id `meta` records, read as another program would.
    fn recorded_key_id(db: &Path) -> Option<KeyId> {
        let conn = Connection::open(db).unwrap();
        conn.query_row(
            "SELECT value FROM meta WHERE name = 'accounts_key'",
            [],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
    }

    /// Every row `sql` selects, read as another program would (a connection of its own).
    fn raw_rows<T>(
        db: &Path,
        sql: &str,
        row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Vec<T> {
        let conn = Connection::open(db).unwrap();
        let mut st = conn.prepare(sql).unwrap();
        let rows = st.query_map([], row).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    /// Every `pw_hash` as stored.
    fn stored_hashes(db: &Path) -> Vec<String> {
        raw_rows(
            db,
            "SELECT pw_hash FROM accounts WHERE pw_hash IS NOT NULL",
            |r| r.get(0),
        )
    }

    #[test]
    fn password_hashes_are_sealed_under_the_keyfile_and_a_planted_clear_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let keys = ring(&[(1, 1)], 1);
        let a = open(&db, &keys).unwrap();
        a.add("Bob", &pw("bob-password"), SystemTime::now())
            .unwrap();
        a.set_password("Bob", &pw("bob-password-2")).unwrap();
        // Nothing to run scrypt against without the keyfile: no salt, no parameters.
        let stored = stored_hashes(&db);
        assert_eq!(stored.len(), 1);
        assert!(
            stored[0].starts_with("sealed$") && !stored[0].contains("scrypt"),
            "{stored:?}"
        );
        assert!(a.verify("Bob", &pw("bob-password-2")).is_ok());
        // Someone who can write the database but has no keyfile plants a hash of their own
        // (in the clear, as an older version stored them): it is refused, not believed.
        let planted = StoredHash::new(&pw("eves-password"), FAST)
            .unwrap()
            .encode();
        let conn = Connection::open(&db).unwrap();
        conn.execute("UPDATE accounts SET pw_hash = ?1", params![planted])
            .unwrap();
        assert!(matches!(
            a.verify("Bob", &pw("eves-password")),
            Err(AuthError::Store(AccountError::Corrupt(_)))
        ));
        drop(a);
        let a = open(&db, &keys).unwrap();
        assert!(
            a.verify("Bob", &pw("eves-password")).is_err(),
            "a clear hash planted after the upgrade was adopted at a later open"
        );
        // A sealed hash moved to another row does not open there.
        let sealed_bob = stored[0].clone();
        a.add("Carol", &pw("carol-password"), SystemTime::now())
            .unwrap();
        conn.execute("UPDATE accounts SET pw_hash = ?1", params![sealed_bob])
            .unwrap();
        assert!(a.verify("Carol", &pw("bob-password-2")).is_err());
    }

    /// Every sealed name's size and every creation time, as stored.
    fn names_and_times(db: &Path) -> Vec<(usize, i64)> {
        raw_rows(
            db,
            "SELECT length(sealed_name), created FROM accounts",
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }

    #[test]
    fn sealed_names_have_one_size_and_times_only_their_day_and_old_rows_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let keys = ring(&[(1, 1)], 1);
        let a = open(&db, &keys).unwrap();
        let at = UNIX_EPOCH + Duration::from_secs(1_764_000_123);
        a.add("Al", &pw("al-password"), at).unwrap();
        a.add("Bartholomew-16ch", &pw("bart-password"), at).unwrap();
        let stored = names_and_times(&db);
        assert_eq!(
            stored[0].0, stored[1].0,
            "a name's length shows: {stored:?}"
        );
        assert!(stored.iter().all(|(_, t)| t % 86_400 == 0), "{stored:?}");
        // As an older version wrote them: the name unpadded, the exact second.
        let index = a.index("al").unwrap();
        let unpadded = crypto::seal_with_key(&a.seal_key, &index, b"Al").unwrap();
        let conn = Connection::open(&db).unwrap();
        conn.execute(
            "UPDATE accounts SET sealed_name = ?1, created = 1764000123 WHERE name_index = ?2",
            params![unpadded, index],
        )
        .unwrap();
        assert_eq!(a.lookup("al").unwrap().unwrap().name.display(), "Al");
        drop(a);
        let a = open(&db, &keys).unwrap();
        let stored = names_and_times(&db);
        assert_eq!(stored[0].0, stored[1].0, "not upgraded: {stored:?}");
        assert!(stored.iter().all(|(_, t)| t % 86_400 == 0), "{stored:?}");
        assert_eq!(a.lookup("AL").unwrap().unwrap().name.display(), "Al");
        assert!(a.verify("al", &pw("al-password")).is_ok());
    }

    #[test]
    fn hashes_an_older_version_stored_in_the_clear_are_sealed_at_the_first_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let keys = ring(&[(1, 1)], 1);
        let a = open(&db, &keys).unwrap();
        a.add("Bob", &pw("bob-password"), SystemTime::now())
            .unwrap();
        drop(a);
        // As the previous version left it: the hash in the clear, no record of sealing.
        let clear = StoredHash::new(&pw("bob-password"), FAST).unwrap().encode();
        let conn = Connection::open(&db).unwrap();
        conn.execute("UPDATE accounts SET pw_hash = ?1", params![clear])
            .unwrap();
        conn.execute(
            "DELETE FROM meta WHERE name = ?1",
            params![HASHES_SEALED_META],
        )
        .unwrap();
        let a = open(&db, &keys).unwrap();
        let stored = stored_hashes(&db);
        assert!(stored[0].starts_with("sealed$"), "{stored:?}");
        assert!(a.verify("Bob", &pw("bob-password")).is_ok());
        assert!(a.verify("Bob", &pw("bob-passwort")).is_err());
    }

    #[test]
    fn rekey_moves_every_row_and_the_key_id_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let old = ring(&[(1, 1)], 1);
        let both = ring(&[(1, 1), (2, 2)], 2);
        let mut a = open(&db, &old).unwrap();
        a.add("Bob", &pw("bob-password"), SystemTime::now())
            .unwrap();
        a.ensure_trusted("Front Ann", SystemTime::now()).unwrap();
        assert_eq!((a.key_id(), recorded_key_id(&db)), (1, Some(1)));
        a.rekey(&both, 2).unwrap();
        // The same handle keeps working under the new key.
        assert_eq!(a.key_id(), 2);
        assert_eq!(a.lookup("bob").unwrap().unwrap().name.display(), "Bob");
        assert!(a.verify("BOB", &pw("bob-password")).is_ok());
        drop(a);
        assert_eq!(recorded_key_id(&db), Some(2));
        // Key 2 alone opens them now; key 1 alone does not.
        let only_new = ring(&[(2, 2)], 2);
        let a = open(&db, &only_new).unwrap();
        let names: Vec<String> = a
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.name.display().to_owned())
            .collect();
        assert_eq!(names, ["Bob", "Front Ann"]);
        assert!(a.verify("Bob", &pw("bob-password")).is_ok());
        assert!(a.verify("Bob", &pw("bob-passworD")).is_err());
        drop(a);
        assert!(matches!(
            open(&db, &old),
            Err(AccountError::MissingKey { key_id: 2 })
        ));
        // Another keyfile altogether: the vault's check refuses it.
        assert!(matches!(
            open(&db, &ring(&[(2, 9)], 2)),
            Err(AccountError::Store(StoreError::KeyMismatch { key_id: 2 }))
        ));
    }

    #[test]
    fn rekey_interrupted_before_commit_leaves_the_old_key_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let both = ring(&[(1, 1), (2, 2)], 2);
        let mut a = open(&db, &ring(&[(1, 1)], 1)).unwrap();
        for n in ["Bob", "Cy", "Dee"] {
            a.add(n, &pw("long-password"), SystemTime::now()).unwrap();
        }
        let err = a
            .rekey_inner(&both, 2, || {
                Err(AccountError::Worker("injected crash".into()))
            })
            .unwrap_err();
        assert!(matches!(err, AccountError::Worker(_)), "{err}");
        // The handle still holds (and the file is still under) the old key.
        assert_eq!(a.key_id(), 1);
        assert!(a.verify("Cy", &pw("long-password")).is_ok());
        drop(a);
        assert_eq!(recorded_key_id(&db), Some(1));
        let mut a = open(&db, &both).unwrap();
        assert_eq!(a.key_id(), 1);
        assert_eq!(a.list().unwrap().len(), 3);
        for n in ["bob", "cy", "dee"] {
            assert!(a.verify(n, &pw("long-password")).is_ok(), "{n}");
        }
        // A panic midway (the process dying) rolls back the same way.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = a.rekey_inner(&both, 2, || panic!("crash"));
        }));
        assert!(caught.is_err());
        drop(a);
        let mut a = open(&db, &both).unwrap();
        assert!(a.verify("Dee", &pw("long-password")).is_ok());
        // And the rekey then goes through.
        a.rekey(&both, 2).unwrap();
        drop(a);
        let a = open(&db, &ring(&[(2, 2)], 2)).unwrap();
        assert!(a.verify("Dee", &pw("long-password")).is_ok());
    }

    /// Turns a schema-2 database back into what espmail wrote before the accounts joined
    /// the vault's migrations: user_version 1, no `meta` row, and an `accounts_meta` table
    /// with schema version 1 and the check value of the accounts key of keyfile key
    /// `check_of` (the rows themselves were always written as they are now).
    fn make_schema_1(db: &Path, keys: &Keyring, check_of: KeyId) {
        let check = AccountsKey::of(keys, check_of)
            .unwrap()
            .legacy_check_value()
            .unwrap();
        let conn = Connection::open(db).unwrap();
        conn.execute_batch(
            "DELETE FROM meta WHERE name = 'accounts_key';
             DROP INDEX mail_by_pair;
             ALTER TABLE mail DROP COLUMN pair;
             DROP TABLE delivered;
             PRAGMA user_version = 1;
             CREATE TABLE accounts_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
             INSERT INTO accounts_meta (key, value) VALUES ('schema_version', '1');",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO accounts_meta (key, value) VALUES ('key_check', ?1)",
            params![check],
        )
        .unwrap();
    }

    #[test]
    fn a_schema_1_table_is_adopted_under_the_key_its_check_names() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        // Written under key 1 while key 2 is already active (a rotation cut short).
        let both = ring(&[(1, 1), (2, 2)], 2);
        let a = open(&db, &ring(&[(1, 1)], 1)).unwrap();
        a.add("Bob", &pw("bob-password"), SystemTime::now())
            .unwrap();
        drop(a);
        make_schema_1(&db, &both, 1);
        let a = open(&db, &both).unwrap();
        assert_eq!(a.key_id(), 1, "the key the check named, not the active one");
        assert!(a.verify("bob", &pw("bob-password")).is_ok());
        drop(a);
        assert_eq!(recorded_key_id(&db), Some(1));
        let conn = Connection::open(&db).unwrap();
        let (version, legacy): (i64, bool) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'accounts_meta')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(version, store::MIGRATIONS.len() as i64);
        assert!(!legacy, "accounts_meta is dropped once its key is recorded");
    }

    #[test]
    fn a_schema_1_table_under_another_keyfile_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let mine = ring(&[(1, 1)], 1);
        open(&db, &mine)
            .unwrap()
            .add("Bob", &pw("bob-password"), SystemTime::now())
            .unwrap();
        // The check names a key of some other keyfile.
        make_schema_1(&db, &ring(&[(1, 5)], 1), 1);
        assert!(matches!(open(&db, &mine), Err(AccountError::KeyMismatch)));
        assert_eq!(recorded_key_id(&db), None, "nothing recorded");
        // An accounts_meta newer than schema 1 was never written by espmail: refused.
        let conn = Connection::open(&db).unwrap();
        conn.execute(
            "UPDATE accounts_meta SET value = '99' WHERE key = 'schema_version'",
            [],
        )
        .unwrap();
        assert!(matches!(
            open(&db, &mine),
            Err(AccountError::SchemaTooNew { found: 99 })
        ));
    }

    #[test]
    fn the_accounts_key_is_the_servers_derivation_and_differs_from_every_mail_key() {
        let keys = ring(&[(1, 3), (2, 4)], 2);
        let secret = Secret::from_bytes([3; 32]);
        let key = AccountsKey::of(&keys, 1).unwrap();
        assert_eq!(*key.0, *crypto::accounts_key(&secret).unwrap());
        assert_ne!(*key.0, *AccountsKey::of(&keys, 2).unwrap().0);
        assert_ne!(*key.0, *crypto::message_key(&secret, &[0; 32]).unwrap());
        assert_ne!(*key.0, crypto::key_check(&secret).unwrap());
        assert!(matches!(
            AccountsKey::of(&keys, 3),
            Err(AccountError::MissingKey { key_id: 3 })
        ));
    }
}
