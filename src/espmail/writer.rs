//! The writer thread: the one place mail is written while the server runs. It owns the
//! store's write connection and is fed by a *bounded* channel of [`Job`]s; it takes
//! whatever is waiting (up to `Limits::max_batch`), runs it in one transaction (each job in
//! its own savepoint where one refusal must cost only that job), commits once (one fsync
//! for the whole batch: group commit) and only then answers each caller, so "saved" is
//! said only after the row is durable. At shutdown it closes its queue and answers every
//! job still in it "closed", so no caller waits for ever.
//!
//! May touch: the [`Store`] it is given (its connection), the job channel. No tokio
//! runtime: it uses the channel's blocking side on its own thread.

use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::crypto::{Blind, MailId, SealedRow};
use super::error::{SaveError, StoreError};
use super::keyfile::KeyId;
use super::rows::{
    confirm, count, delete_all, insert, load, purge, stats, PendingMail, Purged, Stats,
};
use super::store::{day_of, Store};

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
                    let r = insert(&tx, &row, expiry_day, &blinds, &limits);
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
                    let r = run_job(&mut tx, |c| confirm(c, &keys, id));
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
    use std::time::Duration;

    use super::super::crypto::Keyring;
    use super::super::store::Limits;

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
}
