//! [`AccountsHandle`], the async face of the account table that sessions and the server
//! share. Table reads and writes run on tokio's blocking pool, never on a worker; every
//! scrypt runs on the fixed [`HashPool`] (so a burst of logins queues, or is refused when
//! the queue is full, instead of starting threads whose memory stays behind).
//!
//! [`AccountsHandle::login`] is the whole password login: a reservation in the login
//! throttle (made before any hashing, so attempts in flight count), the check, and the
//! auto-registration. [`AccountsHandle::lookup_for_prompt`] and
//! [`AccountsHandle::register`] are the in-world prompt's throttled lookup and
//! registration.
//!
//! May touch: the [`Accounts`] it wraps (SQLite, scrypt) through the blocking pool and the
//! hashing pool, the login throttle's counts, and the log (names and addresses, never
//! passwords).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::accounts::{AccountError, AccountInfo, Accounts, AuthError, Avatar, Credentials};
use super::hash_pool::{HashPool, PoolError};
use super::password::{new_password_hash, password_acceptable, ScryptParams};
use super::throttle::{Kind, LoginThrottle, Outcome, ThrottleLimits, Ticket};
use crate::avatar::{log_name, AvatarName, Password};

/// Jobs waiting for a hashing thread before further logins are refused ("Too many tries;
/// wait N s."): a few seconds of work at the default cost, per thread.
const HASH_QUEUE_PER_THREAD: usize = 32;
/// The wait a player is told when the hashing queue is full.
const BUSY_WAIT_SECS: u64 = 5;

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
    /// scrypt needs 16 MiB and a core for tens of ms: it runs on these threads only.
    pool: Arc<HashPool>,
    throttle: Arc<Mutex<LoginThrottle>>,
    gates: Arc<AddressGates>,
}

/// Lets at most `per_address` password checks from one address be hashed at a time; the
/// others wait their turn (a household behind one address is slowed, not refused; an
/// attacker's reserved guesses cannot take the whole hashing pool). An address's entry
/// lives while a check holds or awaits it.
struct AddressGates {
    per_address: usize,
    gates: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// A place among an address's checks being hashed; given back when dropped.
struct GatePass {
    gates: Arc<AddressGates>,
    addr: IpAddr,
    permit: Option<OwnedSemaphorePermit>,
}

impl AddressGates {
    async fn enter(self: &Arc<Self>, addr: IpAddr) -> GatePass {
        let gate = Arc::clone(
            lock(&self.gates)
                .entry(addr)
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_address.max(1)))),
        );
        // The semaphore is never closed, so acquiring only fails if it were; a pass
        // without a permit then simply does not limit (the throttle's counts still do).
        let mut pass = GatePass {
            gates: Arc::clone(self),
            addr,
            permit: None,
        };
        pass.permit = gate.acquire_owned().await.ok();
        pass
    }

    #[cfg(test)]
    fn addresses(&self) -> usize {
        lock(&self.gates).len()
    }
}

impl Drop for GatePass {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut gates = lock(&self.gates.gates);
        // Only the map's own handle left: nobody holds or awaits this address's gate.
        if gates
            .get(&self.addr)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(&self.addr);
        }
    }
}

/// A reserved login attempt (see [`super::throttle`]). It ends as a failure unless told
/// otherwise, so an attempt whose session went away mid-check still counts, and its place
/// among the address's checks in flight is always given back.
pub struct Reservation {
    throttle: Arc<Mutex<LoginThrottle>>,
    ticket: Option<Ticket>,
}

impl Reservation {
    /// Ends the attempt with this outcome.
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(t) = self.ticket.take() {
            lock(&self.throttle).end(t, outcome);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            lock(&self.throttle).end(t, Outcome::Failure);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reservation")
    }
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
    /// Wraps an open store and starts its hashing pool: `hash_threads` threads (the core
    /// count is a good value; scrypt memory is bounded by `hash_threads × 16 MiB`).
    pub fn new(
        accounts: Accounts,
        hash_threads: usize,
        limits: ThrottleLimits,
    ) -> Result<AccountsHandle, AccountError> {
        let params = accounts.params;
        let min_len = accounts.min_password_len;
        let threads = hash_threads.max(1);
        let pool = HashPool::new(threads, threads * HASH_QUEUE_PER_THREAD).map_err(|e| {
            AccountError::Worker(format!("cannot start the password-hashing threads: {e}"))
        })?;
        Ok(AccountsHandle {
            inner: Arc::new(HandleInner {
                db: Mutex::new(accounts),
                params,
                min_len,
                pool,
                throttle: Arc::new(Mutex::new(LoginThrottle::new(limits))),
                gates: Arc::new(AddressGates {
                    per_address: limits.in_flight_per_address,
                    gates: Mutex::new(HashMap::new()),
                }),
            }),
        })
    }

    /// The number of password-hashing threads.
    pub fn hash_threads(&self) -> usize {
        self.inner.pool.threads()
    }

    /// Reserves an attempt at `name` from `peer` in the login throttle, or says how many
    /// seconds to wait ([`AuthError::Throttled`], logged with the name and address).
    pub fn reserve(
        &self,
        name: &str,
        peer: IpAddr,
        kind: Kind,
        now: Instant,
    ) -> Result<Reservation, AuthError> {
        match lock(&self.inner.throttle).begin(name, peer, kind, now) {
            Ok(ticket) => Ok(Reservation {
                throttle: Arc::clone(&self.inner.throttle),
                ticket: Some(ticket),
            }),
            Err(retry_after_secs) => {
                tracing::warn!(avatar = %log_name(name), %peer, retry_after_secs, "login throttled");
                Err(AuthError::Throttled { retry_after_secs })
            }
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

    /// Runs `f` (which hashes) on the hashing pool.
    async fn hashing<T, F>(&self, f: F) -> Result<T, HashingError>
    where
        T: Send + 'static,
        F: FnOnce(&HandleInner) -> Result<T, AccountError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match self.inner.pool.run(move || f(&inner)).await {
            Ok(r) => r.map_err(HashingError::Account),
            Err(PoolError::Busy { queue }) => {
                tracing::warn!(queue, "password-hashing queue full; a login is refused");
                Err(HashingError::Busy)
            }
            Err(e) => Err(HashingError::Account(AccountError::Worker(e.to_string()))),
        }
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
        .map_err(HashingError::into_account)
    }

    /// Replaces a password (`espmail account passwd`).
    pub async fn set_password(&self, name: &str, password: Password) -> Result<(), AccountError> {
        let name = AvatarName::parse(name)?;
        self.hashing(move |i| {
            let hash = new_password_hash(&password, i.params, i.min_len)?;
            lock(&i.db).store_hash(&name, &hash)
        })
        .await
        .map_err(HashingError::into_account)
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

    /// The avatar a trusted front end names, created without a password on first sight,
    /// and whether it has a password.
    pub async fn ensure_trusted(
        &self,
        name: &str,
        now: SystemTime,
    ) -> Result<(Avatar, bool), AccountError> {
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
            .map_err(HashingError::into_auth)?
    }

    /// A password login as ESPMAIL.md §1 describes it: a reservation in the login
    /// throttle first (attempts in flight count; see [`super::throttle`]); with
    /// `auto_register`, an unknown name with an acceptable new password (the configured
    /// minimum, [`AccountsHandle::min_password_len`], up to
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
        let reservation = self.reserve(name, peer, Kind::Check, now)?;
        let _turn = self.inner.gates.enter(peer).await;
        let owned = name.to_string();
        let creds = match self
            .blocking(move |i| lock(&i.db).credentials(&owned))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                reservation.finish(Outcome::Inconclusive);
                return Err(AuthError::Store(e));
            }
        };
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
                    Err(AccountError::Busy) => Err(AuthError::Throttled {
                        retry_after_secs: BUSY_WAIT_SECS,
                    }),
                    Err(e) => Err(AuthError::Store(e)),
                }
            }
            Err(e) => Err(e),
        };
        let outcome = match &result {
            Ok(LoginOutcome::Registered(_)) => Outcome::Registered,
            Ok(LoginOutcome::Existing(_)) => Outcome::Success,
            Err(AuthError::WrongNameOrPassword) => {
                tracing::warn!(avatar = %log_name(name), %peer, "login failed");
                Outcome::Failure
            }
            Err(AuthError::Throttled { .. }) => Outcome::Inconclusive,
            Err(e) => {
                tracing::error!(avatar = %log_name(name), %peer, error = %e, "login could not be checked");
                Outcome::Inconclusive
            }
        };
        reservation.finish(outcome);
        result
    }

    /// The in-world prompt's lookup: whether `name` has an avatar (it picks "Password: "
    /// or "New avatar. Choose a password: ", so it tells a prober whether a name exists).
    /// It is reserved in the throttle like a login attempt, and the reservation returned
    /// is held for the dialogue: it is given back when the dialogue ends in a login
    /// ([`Outcome::Success`] or [`Outcome::Registered`]), and counts as a failure if it
    /// does not.
    pub async fn lookup_for_prompt(
        &self,
        name: &str,
        peer: IpAddr,
        now: Instant,
    ) -> Result<(bool, Reservation), AuthError> {
        let reservation = self.reserve(name, peer, Kind::Lookup, now)?;
        match self.lookup(name).await {
            Ok(found) => Ok((found.is_some(), reservation)),
            Err(e) => {
                reservation.finish(Outcome::Inconclusive);
                Err(AuthError::Store(e))
            }
        }
    }

    /// In-world registration (the prompt's "New avatar. Choose a password:"), throttled
    /// like the login line's auto-registration: it costs the address one attempt.
    pub async fn register(
        &self,
        name: &str,
        password: Password,
        peer: IpAddr,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Avatar, AuthError> {
        let reservation = self.reserve(name, peer, Kind::Check, now)?;
        let _turn = self.inner.gates.enter(peer).await;
        let added = self.add(name, password, wall).await;
        match added {
            Ok(avatar) => {
                reservation.finish(Outcome::Registered);
                Ok(avatar)
            }
            Err(AccountError::NameTaken | AccountError::BadName(_)) => {
                reservation.finish(Outcome::Failure);
                Err(AuthError::WrongNameOrPassword)
            }
            Err(AccountError::Busy) => {
                reservation.finish(Outcome::Inconclusive);
                Err(AuthError::Throttled {
                    retry_after_secs: BUSY_WAIT_SECS,
                })
            }
            Err(e) => {
                reservation.finish(Outcome::Inconclusive);
                Err(AuthError::Store(e))
            }
        }
    }
}

/// How a hashing job failed: the pool was full, or the job's own error.
enum HashingError {
    Busy,
    Account(AccountError),
}

impl HashingError {
    fn into_account(self) -> AccountError {
        match self {
            HashingError::Busy => AccountError::Busy,
            HashingError::Account(e) => e,
        }
    }

    fn into_auth(self) -> AuthError {
        match self {
            HashingError::Busy => AuthError::Throttled {
                retry_after_secs: BUSY_WAIT_SECS,
            },
            HashingError::Account(e) => AuthError::Store(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn an_address_has_two_checks_hashed_at_once_and_the_third_waits_its_turn() {
        let gates = Arc::new(AddressGates {
            per_address: 2,
            gates: Mutex::new(HashMap::new()),
        });
        let a: IpAddr = [10, 0, 0, 1].into();
        let first = gates.enter(a).now_or_never().expect("a free place");
        let second = gates.enter(a).now_or_never().expect("a free place");
        let mut third = Box::pin(gates.enter(a));
        assert!((&mut third).now_or_never().is_none(), "the third waits");
        // Another address is not held up by this one.
        let other = gates.enter([10, 0, 0, 2].into()).now_or_never();
        assert!(other.is_some());
        drop(other);
        drop(first);
        let third = third.now_or_never().expect("a place was given back");
        drop((second, third));
        assert_eq!(gates.addresses(), 0, "no entry outlives its checks");
    }
}
