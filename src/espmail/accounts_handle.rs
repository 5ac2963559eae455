//! [`AccountsHandle`], the async face of the account table that sessions and the server
//! share: each call runs on tokio's blocking pool, never on a worker; scrypt runs outside
//! the table's lock and at most `hash_slots` at a time, so a burst of logins queues
//! instead of filling the pool and the memory. [`AccountsHandle::login`] is the whole
//! password login: throttle, check, auto-registration.
//!
//! May touch: the [`Accounts`] it wraps (SQLite, scrypt) through the blocking pool, the
//! login throttle's counts, and the log (names and addresses, never passwords).

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use super::accounts::{AccountError, AccountInfo, Accounts, AuthError, Avatar, Credentials};
use super::password::{new_password_hash, password_acceptable, ScryptParams};
use super::throttle::{LoginThrottle, ThrottleLimits};
use crate::avatar::{log_name, AvatarName, Password};

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
    /// it to the world's `PasswordDialogue::start_with_min_len`.
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
    /// [`MAX_PASSWORD_LEN`](crate::avatar::MAX_PASSWORD_LEN) characters) creates the
    /// avatar. Failures are logged with the name and address, never the password.
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
