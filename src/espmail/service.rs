//! [`MailHandle`]: the async face of ESP Mail that sessions use.
//!
//! ```text
//! session ── save / count_waiting / open_mailbox / confirm ──> MailHandle
//!                 (encrypts on the caller's task: microseconds of CPU)
//!                         │ bounded channel (senders wait when it is full)
//!                 writer thread: batch → one transaction → one fsync → answers
//! ```
//!
//! - [`MailHandle::open`] opens the database, checks the keyfile (refusing a mismatch) and
//!   starts the writer thread. It does blocking I/O: call it at startup, before serving, or
//!   inside `spawn_blocking`.
//! - [`MailHandle::save`] returns `Ok(id)` only after the batch holding the message has been
//!   committed with `synchronous=FULL`: that is when the sender may be told "saved".
//!   Refusals are distinct: [`SaveError::BoxFull`], [`SaveError::TextTooLong`],
//!   [`SaveError::BadName`], and [`SaveError::Store`] for "could not be saved".
//! - [`MailHandle::open_mailbox`] at login returns a [`Mailbox`]: the avatar's messages,
//!   decrypted, oldest first, still stored until each is [`confirm`](Mailbox::confirm)ed.
//!   **One live mailbox per avatar**: the mailbox is a lease. A second `open_mailbox` for the
//!   same avatar (e.g. the avatar logged in again elsewhere) waits until the first mailbox
//!   is dropped, at most [`Limits::lease_wait_ms`], then gets [`StoreError::MailboxBusy`]. So
//!   two sessions never hand out the same message; whatever the first did not confirm is
//!   loaded again by the second. Leases live in this process: one server per database.
//! - [`MailHandle::shutdown`] finishes every job queued before it (committing and answering)
//!   and stops the writer; graceful shutdown awaits it. Later calls get [`StoreError::Closed`].
//!
//! Nothing here blocks a tokio worker on SQLite: all database work runs on the writer thread.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::crypto::{self, Keyring, Letter, MailId};
use super::keyfile::{self, Keyfile};
use super::store::{
    day_of, run_writer, Job, Limits, PendingMail, Purged, SaveError, Stats, Store, StoreError,
};
use crate::avatar::normalise;
use crate::log_redact::Sensitive;

struct Inner {
    jobs: mpsc::Sender<Job>,
    keys: Arc<Keyring>,
    limits: Limits,
    leases: Mutex<HashSet<String>>,
    lease_freed: Notify,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The ESP Mail service. Cheap to clone; every clone talks to the same writer thread.
#[derive(Clone)]
pub struct MailHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MailHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailHandle")
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

impl MailHandle {
    /// Loads the keyfile at `keyfile_path` and opens the store (see [`MailHandle::with_keyfile`]).
    pub fn open(db_path: &Path, keyfile_path: &Path, limits: Limits) -> Result<Self, StoreError> {
        let keyfile = keyfile::load(keyfile_path)?;
        Self::with_keyfile(db_path, &keyfile, limits)
    }

    /// Opens (creating if needed) the database with an already loaded keyfile, refuses a
    /// keyfile that does not match it, and starts the writer thread. Blocking.
    pub fn with_keyfile(
        db_path: &Path,
        keyfile: &Keyfile,
        limits: Limits,
    ) -> Result<Self, StoreError> {
        let keys = Arc::new(Keyring::new(keyfile)?);
        let store = Store::open(db_path, Arc::clone(&keys), limits.clone())?;
        let (tx, rx) = mpsc::channel(limits.queue_len);
        // The writer logs where its opener logs (a thread does not inherit the subscriber).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let writer = std::thread::Builder::new()
            .name("espmail-writer".into())
            .spawn(move || tracing::dispatcher::with_default(&dispatch, || run_writer(store, rx)))
            .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        info!(db = %db_path.display(), active_key = keys.active_id(), "ESP Mail store open");
        Ok(MailHandle {
            inner: Arc::new(Inner {
                jobs: tx,
                keys,
                limits,
                leases: Mutex::new(HashSet::new()),
                lease_freed: Notify::new(),
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        // Waits (without blocking the thread) while the bounded queue is full.
        self.inner
            .jobs
            .send(make(tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Encrypts and durably stores one message. Returns only after the commit (the moment to
    /// tell the sender "saved"); on any error nothing was stored.
    pub async fn save(
        &self,
        recipient: &str,
        sender: &str,
        text: Sensitive<Vec<u8>>,
        now: SystemTime,
    ) -> Result<MailId, SaveError> {
        let max = self.inner.limits.max_text_len;
        if text.len() > max {
            return Err(SaveError::TextTooLong {
                len: text.len(),
                max,
            });
        }
        let recipient = normalise(recipient);
        let sender = sender.trim().to_string();
        for name in [&recipient, &sender] {
            if name.is_empty() || name.len() > crypto::MAX_NAME_LEN {
                return Err(SaveError::BadName);
            }
        }
        let keys = &self.inner.keys;
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let expiry_day = day_of(now) + i64::from(self.inner.limits.retention_days);
        let blinds = keys.blinds(&recipient).map_err(StoreError::from)?;
        let letter = Letter {
            sender,
            recipient,
            sent_secs: since.as_secs(),
            sent_nanos: since.subsec_nanos(),
            text,
        };
        // Sealing costs a few microseconds of CPU: done here so that on a multi-core machine
        // it runs beside the writer, which then only inserts and commits.
        let row = MailId::random()
            .and_then(|id| keys.seal(id, &letter, expiry_day))
            .map_err(StoreError::from)?;
        drop(letter);
        let id = self
            .call(|reply| Job::Save {
                row: Box::new(row),
                expiry_day,
                blinds,
                reply,
            })
            .await??;
        // No id and no length: an id ties this line to the row (and so to its recipient's
        // blind index), a length to the text (ESPMAIL.md §5).
        debug!("ESP Mail committed");
        Ok(id)
    }

    /// How many messages wait for `recipient` (for "You have N ESP Mail" and box-full
    /// pre-checks; the limit itself is enforced again inside the save's transaction).
    pub async fn count_waiting(&self, recipient: &str) -> Result<usize, StoreError> {
        let blinds = self.inner.keys.blinds(recipient)?;
        self.call(|reply| Job::Count { blinds, reply }).await?
    }

    /// Takes the recipient's mailbox lease and loads their mail, oldest first. See the
    /// module doc for what a second call for the same avatar does.
    pub async fn open_mailbox(&self, recipient: &str) -> Result<Mailbox, StoreError> {
        let name = normalise(recipient);
        let lease = self.lease(name.clone()).await?;
        let blinds = self.inner.keys.blinds(&name)?;
        let now = SystemTime::now();
        let items = self
            .call(|reply| Job::Load { blinds, now, reply })
            .await??;
        debug!(count = items.len(), "mailbox opened");
        Ok(Mailbox {
            items: items.into(),
            handle: self.clone(),
            _lease: lease,
        })
    }

    async fn lease(&self, name: String) -> Result<Lease, StoreError> {
        let deadline = Instant::now() + Duration::from_millis(self.inner.limits.lease_wait_ms);
        loop {
            // Registered before looking, so a release between the look and the wait is seen.
            let freed = self.inner.lease_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut held = self
                    .inner
                    .leases
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if held.insert(name.clone()) {
                    return Ok(Lease {
                        inner: Arc::clone(&self.inner),
                        name,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(StoreError::MailboxBusy);
            }
        }
    }

    /// Deletes a delivered message and counts the delivery, in one transaction. `Ok(false)`
    /// when it was already gone (e.g. purged meanwhile).
    pub async fn confirm(&self, id: MailId) -> Result<bool, StoreError> {
        self.call(|reply| Job::Confirm { id, reply }).await?
    }

    /// Counts for operators (no names, no text).
    pub async fn stats(&self) -> Result<Stats, StoreError> {
        let now = SystemTime::now();
        self.call(|reply| Job::Stats { now, reply }).await?
    }

    /// Deletes messages and quarantined rows past their expiry day; says how many.
    pub async fn purge_expired(&self, now: SystemTime) -> Result<Purged, StoreError> {
        self.call(|reply| Job::Purge { now, reply }).await?
    }

    /// Deletes every message waiting for `recipient` (`account remove`); returns how many.
    pub async fn delete_all_for(&self, recipient: &str) -> Result<usize, StoreError> {
        let blinds = self.inner.keys.blinds(recipient)?;
        self.call(|reply| Job::DeleteAll { blinds, reply }).await?
    }

    /// Finishes every job queued before this call, checkpoints the WAL and stops the
    /// writer. Idempotent; afterwards every call gets [`StoreError::Closed`].
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let r = match self.call(|reply| Job::Shutdown { reply }).await {
            Ok(r) => r,
            Err(StoreError::Closed) => Ok(()),
            Err(e) => Err(e),
        };
        let writer = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = writer {
            // The writer has answered and is returning; joining cannot take long, but it is
            // still a blocking call, so not on a worker.
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
        r
    }

    /// Spawns the retention task: purges expired mail now and then every `every`, until
    /// `stop` is cancelled. Errors are logged and retried at the next tick.
    pub fn spawn_purge_task(
        &self,
        every: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let handle = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match handle.purge_expired(SystemTime::now()).await {
                    Ok(n) if n.total() == 0 => {}
                    Ok(n) => info!(
                        purged = n.mail,
                        quarantined_purged = n.quarantined,
                        "expired ESP Mail deleted"
                    ),
                    Err(StoreError::Closed) => return,
                    Err(e) => warn!(error = %e, "ESP Mail purge failed; will retry"),
                }
            }
        })
    }
}

/// The lease on one avatar's mailbox; released when dropped.
struct Lease {
    inner: Arc<Inner>,
    name: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.name);
        self.inner.lease_freed.notify_waiters();
    }
}

/// One avatar's waiting mail, handed out at login. While it lives, no other session can
/// open this avatar's mailbox. Messages stay stored until confirmed; dropping the mailbox
/// keeps every unconfirmed one for the next login.
pub struct Mailbox {
    items: VecDeque<PendingMail>,
    handle: MailHandle,
    _lease: Lease,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("remaining", &self.items.len())
            .finish_non_exhaustive()
    }
}

impl Mailbox {
    /// Messages not yet taken with [`Mailbox::next`].
    pub fn remaining(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is left to take.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The oldest message not yet taken, without taking it.
    pub fn peek(&self) -> Option<&PendingMail> {
        self.items.front()
    }

    /// Takes the oldest message to deliver it. It stays stored until [`Mailbox::confirm`].
    #[allow(clippy::should_implement_trait)] // async-free, but not an Iterator on purpose
    pub fn next(&mut self) -> Option<PendingMail> {
        self.items.pop_front()
    }

    /// Deletes a delivered message (after the client acknowledged it). See
    /// [`MailHandle::confirm`].
    pub async fn confirm(&self, id: MailId) -> Result<bool, StoreError> {
        self.handle.confirm(id).await
    }
}
