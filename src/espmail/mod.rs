//! The vault: everything stored and every key. ESP Mail (what is stored for an offline
//! avatar, how it is encrypted, how it is delivered once and then deleted for good;
//! DESIGN.md, promises 1–4 and 7) and the avatar accounts (promise 6) share one database,
//! one schema (`migrations/`, counted by `user_version`), one connection setup and one
//! keyfile check.
//!
//! The flow: a session offers ESP Mail → [`MailHandle::save`] encrypts and durably stores
//! it (answering only after the commit) → at the recipient's login
//! [`MailHandle::open_mailbox`] loads and decrypts it → the session delivers it → the
//! message is deleted with [`Mailbox::confirm`] once the client acknowledged it.
//!
//! - [`keyfile`]: the setup-time key part, outside the database; zeroed on drop.
//! - [`crypto`]: pure: HKDF + AES-256-GCM via openssl, padding, blind index, key check.
//! - [`store`]: the SQLite connection setup (WAL, full sync, secure delete), migrations,
//!   key checks, limits and the blocking `Store` (rotation steps included); its rows' SQL
//!   lives in `rows` (quarantine listed, dropped by the operator, purged at its expiry
//!   day), the writer thread (group commit) in `writer`, its errors in `error`.
//! - [`service`]: [`MailHandle`], the async face sessions use.
//! - [`accounts`]: the `accounts` table (blind name index, sealed names, scrypt hashes),
//!   the accounts key's id in `meta`, [`accounts::AccountsHandle`] (the async face, the
//!   login with its failed-login slowdown) and the upgrade of schema-1 account tables.
//! - [`open`]: the one start-up path: data directory, keyfile and database for `serve`
//!   and every operator command; refuses a new keyfile beside existing data.
//! - [`offline`]: synchronous entry points for CLI commands (`stats`, `purge`, `rotate`,
//!   `account remove`, `quarantine list|drop`), safe beside a running server (WAL + busy timeout).

pub mod accounts;
mod accounts_handle;
pub mod crypto;
mod error;
mod hash_pool;
pub mod keyfile;
pub mod offline;
pub mod open;
mod password;
mod rows;
pub mod sealed;
pub mod service;
pub mod store;
mod throttle;
mod writer;

pub use crypto::MailId;
pub use service::{MailHandle, Mailbox};
pub use store::{Limits, PendingMail, SaveError, Stats, StoreError};
pub use store::{Purged, QuarantineSelect, QuarantinedRow, ReasonCode, RowId};
