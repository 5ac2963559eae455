//! The one start-up path into the vault, for `serve` and every operator command: where
//! the data directory, the database and the keyfile are ([`VaultPaths`]), and opening
//! them in the order that keeps mail safe.
//!
//! - [`VaultPaths::serve`]: the data directory (made 0700 when missing; an existing one
//!   keeps its mode), the keyfile (loaded; made only when there is no database yet, never
//!   beside existing data), then the mail store's writer and the accounts, both checked
//!   against it.
//! - [`VaultPaths::create`]: `espmail init`: a new keyfile and database; refuses to
//!   overwrite either, and removes a half-made setup again.
//! - [`VaultPaths::existing_database`]: commands that need no key (`stats`, `purge`,
//!   `quarantine`): the database must exist, nothing is created.
//! - [`VaultPaths::open`]: commands that need the keys (`account`, `rotate-key`): the
//!   database must exist, the keyfile is loaded and the accounts opened, which refuses a
//!   keyfile that does not match.
//!
//! Every refusal is one [`OpenError`] that names the problem and the fix.
//!
//! May touch: the data directory and the keyfile's directory (created 0700), the keyfile
//! (load; create), the database (through [`super::store`], [`super::service`] and
//! [`super::accounts`]). No config: the command layer hands over paths and limits.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::accounts::{AccountError, Accounts};
use super::crypto::{CryptoError, Keyring};
use super::keyfile::{self, Keyfile, KeyfileError};
use super::service::MailHandle;
use super::store::{Limits, Store, StoreError};
use crate::private_dir;

/// Why the vault could not be opened or made. Each message is one line that names the
/// problem and what to do about it; key bytes never appear.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The keyfile is missing, damaged, too open, or the published example.
    #[error(transparent)]
    Keyfile(#[from] KeyfileError),
    /// The mail database refused (wrong keyfile, damaged, locked, disk full, …).
    #[error(transparent)]
    Store(StoreError),
    /// The avatar accounts could not be opened (a schema-1 table under another keyfile, …).
    #[error("avatar accounts: {0}")]
    Account(AccountError),
    /// `init` found a keyfile where it would create one.
    #[error(
        "a keyfile already exists at {}; refusing to overwrite it (mail sealed under it would \
         become unreadable): if you really mean to start over, move it away yourself first",
        path.display()
    )]
    KeyfileExists {
        /// The keyfile path.
        path: PathBuf,
    },
    /// `init` found a database without a keyfile beside it.
    #[error(
        "a mail database already exists at {}, but no keyfile: `espmail init` is for a fresh \
         setup; restore the keyfile from its backup to {} instead",
        database.display(), keyfile.display()
    )]
    DatabaseExists {
        /// The database path.
        database: PathBuf,
        /// Where its keyfile belongs.
        keyfile: PathBuf,
    },
    /// The keyfile is missing but the database already holds data sealed under it.
    #[error(
        "the keyfile {} is missing, but the database {} was made with one: restore the \
         keyfile from its backup (a new key cannot read the mail waiting there); espmail will \
         not make a new one over existing data",
        keyfile.display(), database.display()
    )]
    KeyfileLost {
        /// Where the keyfile belongs.
        keyfile: PathBuf,
        /// The database that needs it.
        database: PathBuf,
    },
    /// A directory could not be created.
    #[error("cannot create the directory {}: {cause} (check the path and its permissions)", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        cause: io::Error,
    },
    /// No database at the configured path.
    #[error(
        "no mail database at {}: run `espmail init` first, or point --data-dir / --config at \
         the server's data",
        path.display()
    )]
    NoDatabase {
        /// The database path.
        path: PathBuf,
    },
}

impl From<StoreError> for OpenError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoDatabase(path) => OpenError::NoDatabase { path },
            other => OpenError::Store(other),
        }
    }
}

impl From<AccountError> for OpenError {
    fn from(e: AccountError) -> Self {
        match e {
            // The accounts live in the mail database: the store's reading of SQLite errors
            // (damaged, read-only, disk full, locked) says what to do.
            AccountError::Sqlite(e) => OpenError::Store(StoreError::from(e)),
            AccountError::Store(e) => OpenError::from(e),
            other => OpenError::Account(other),
        }
    }
}

impl From<CryptoError> for OpenError {
    fn from(e: CryptoError) -> Self {
        OpenError::Store(StoreError::from(e))
    }
}

/// Where the vault lives: `[data]` of the configuration, paths as the operator gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultPaths {
    /// The data directory (the database, and by default the keyfile and admin socket).
    pub dir: PathBuf,
    /// The database.
    pub database: PathBuf,
    /// The keyfile (better outside the data directory).
    pub keyfile: PathBuf,
}

/// What `serve` runs on: the store's writer and the accounts, under one checked keyfile.
#[derive(Debug)]
pub struct Served {
    /// The mail store's async face (its writer thread is running).
    pub mail: MailHandle,
    /// The account table (wrap it in an `AccountsHandle`).
    pub accounts: Accounts,
    /// Whether the keyfile was made just now (the caller must then say loudly to back it
    /// up, apart from the database).
    pub new_keyfile: bool,
}

/// An existing vault opened for an operator command: its keys, checked against the
/// database, and its accounts.
#[derive(Debug)]
pub struct Vault {
    /// The keyfile's keys.
    pub keys: Arc<Keyring>,
    /// The account table.
    pub accounts: Accounts,
}

impl VaultPaths {
    /// For `serve`: creates the data directory when missing (0700; an existing one is left
    /// as the operator made it, see [`crate::private_dir::open_to_others`]),
    /// loads the keyfile or makes one for a fresh start ([`VaultPaths::load_or_create_keyfile`]),
    /// opens (creating if needed) the database and starts the store's writer, then opens
    /// the accounts. A keyfile that does not match the database is refused before anything
    /// is written.
    pub fn serve(&self, limits: &Limits) -> Result<Served, OpenError> {
        create_dir(&self.dir)?;
        let (kf, new_keyfile) = self.load_or_create_keyfile()?;
        let mail = MailHandle::with_keyfile(&self.database, &kf, limits.clone())?;
        let accounts = Accounts::open(&self.database, &Keyring::new(&kf)?, limits)?;
        Ok(Served {
            mail,
            accounts,
            new_keyfile,
        })
    }

    /// The keyfile for `serve`: loaded when it exists; made (with its directory, 0700)
    /// when this is a first start, i.e. there is no database yet. A missing keyfile beside
    /// an existing database is [`OpenError::KeyfileLost`]: a new key would not read the
    /// mail, and a fresh keyfile left behind would hide the real problem at the next
    /// start. The flag says whether a keyfile was made.
    pub fn load_or_create_keyfile(&self) -> Result<(Keyfile, bool), OpenError> {
        match keyfile::load(&self.keyfile) {
            Ok(kf) => return Ok((kf, false)),
            Err(KeyfileError::Missing { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if self.database.exists() {
            return Err(OpenError::KeyfileLost {
                keyfile: self.keyfile.clone(),
                database: self.database.clone(),
            });
        }
        self.create_keyfile_dir()?;
        Ok((keyfile::create(&self.keyfile)?, true))
    }

    /// For `espmail init`: the data directory (0700), a new keyfile (0600) and the
    /// database with its mail and account tables. Refuses to overwrite a keyfile, and
    /// refuses a database that already exists (its keyfile must be restored, not
    /// replaced). On failure after the keyfile was made, the new (still unused) keyfile and
    /// database are removed again, so `init` can simply be run again. Returns whether the
    /// data directory was made (an existing one is left as it is).
    pub fn create(&self, limits: &Limits) -> Result<bool, OpenError> {
        if std::fs::symlink_metadata(&self.keyfile).is_ok() {
            return Err(OpenError::KeyfileExists {
                path: self.keyfile.clone(),
            });
        }
        if self.database.exists() {
            return Err(OpenError::DatabaseExists {
                database: self.database.clone(),
                keyfile: self.keyfile.clone(),
            });
        }
        let dir_created = create_dir(&self.dir)?;
        self.create_keyfile_dir()?;
        let kf = keyfile::create(&self.keyfile).map_err(|e| match e {
            KeyfileError::AlreadyExists { path } => OpenError::KeyfileExists { path },
            other => OpenError::Keyfile(other),
        })?;
        if let Err(e) = create_database(&self.database, &kf, limits) {
            // Nothing was ever sealed under this key: removing it loses nothing and lets
            // the operator fix the cause and run `init` again.
            let _ = std::fs::remove_file(&self.keyfile);
            for suffix in ["", "-wal", "-shm"] {
                let mut p = self.database.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
            return Err(e);
        }
        Ok(dir_created)
    }

    /// For commands that need no key: the database, which must exist (operator commands
    /// never create one).
    pub fn existing_database(&self) -> Result<&Path, OpenError> {
        if self.database.exists() {
            Ok(&self.database)
        } else {
            Err(OpenError::NoDatabase {
                path: self.database.clone(),
            })
        }
    }

    /// For commands that need the keys: the existing database, the keyfile loaded and
    /// checked against it, and the accounts opened under the key they are recorded with.
    pub fn open(&self, limits: &Limits) -> Result<Vault, OpenError> {
        let db = self.existing_database()?;
        let kf = keyfile::load(&self.keyfile)?;
        let keys = Arc::new(Keyring::new(&kf)?);
        drop(kf);
        let accounts = Accounts::open(db, &keys, limits)?;
        Ok(Vault { keys, accounts })
    }

    fn create_keyfile_dir(&self) -> Result<(), OpenError> {
        if let Some(parent) = self.keyfile.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir(parent)?;
        }
        Ok(())
    }
}

/// [`private_dir::create`] with the error in words.
fn create_dir(dir: &Path) -> Result<bool, OpenError> {
    private_dir::create(dir).map_err(|cause| OpenError::CreateDir {
        path: dir.to_path_buf(),
        cause,
    })
}

/// A new database: the mail tables (and the keyfile's check values), then the accounts.
fn create_database(db: &Path, kf: &Keyfile, limits: &Limits) -> Result<(), OpenError> {
    let keys = Arc::new(Keyring::new(kf)?);
    drop(Store::open(db, Arc::clone(&keys), limits.clone())?);
    drop(Accounts::open(db, &keys, limits)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(tmp: &Path) -> VaultPaths {
        VaultPaths {
            dir: tmp.join("data"),
            database: tmp.join("data").join("espmail.db"),
            keyfile: tmp.join("keys").join("k"),
        }
    }

    #[test]
    fn serve_makes_a_keyfile_only_for_a_fresh_database() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        let (made, created) = p.load_or_create_keyfile().unwrap();
        assert!(created);
        let (again, created) = p.load_or_create_keyfile().unwrap();
        assert!(!created);
        assert_eq!(made.active().1.expose(), again.active().1.expose());
        // A database exists and its keyfile is gone: refused, and nothing made.
        std::fs::create_dir_all(&p.dir).unwrap();
        create_database(&p.database, &made, &Limits::default()).unwrap();
        std::fs::remove_file(&p.keyfile).unwrap();
        let err = p.load_or_create_keyfile().unwrap_err();
        assert!(matches!(err, OpenError::KeyfileLost { .. }), "{err}");
        assert!(err.to_string().contains("restore"), "{err}");
        assert!(!p.keyfile.exists());
        assert!(matches!(
            p.serve(&Limits::default()),
            Err(OpenError::KeyfileLost { .. })
        ));
        assert!(!p.keyfile.exists());
    }

    #[test]
    fn create_then_open_and_serve_agree_on_the_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        let limits = Limits::default();
        assert!(matches!(p.open(&limits), Err(OpenError::NoDatabase { .. })));
        assert!(matches!(
            p.existing_database(),
            Err(OpenError::NoDatabase { .. })
        ));
        assert!(p.create(&limits).unwrap(), "the data directory was made");
        assert!(matches!(
            p.create(&limits),
            Err(OpenError::KeyfileExists { .. })
        ));
        let vault = p.open(&limits).unwrap();
        assert_eq!(vault.accounts.key_id(), vault.keys.active_id());
        drop(vault);
        let served = p.serve(&limits).unwrap();
        assert!(!served.new_keyfile);
        drop(served);
        // Another keyfile for the same database: refused by the vault's key check.
        std::fs::remove_file(&p.keyfile).unwrap();
        keyfile::create(&p.keyfile).unwrap();
        let err = p.open(&limits).unwrap_err();
        assert!(
            matches!(err, OpenError::Store(StoreError::KeyMismatch { .. })),
            "{err}"
        );
        assert!(matches!(
            p.serve(&limits),
            Err(OpenError::Store(StoreError::KeyMismatch { .. }))
        ));
    }
}
