//! The password-hashing pool: a fixed set of long-lived threads that run every scrypt
//! (logins, registrations, password changes), fed by a bounded queue.
//!
//! scrypt takes 16 MiB and a core for tens of milliseconds. On tokio's blocking pool a
//! burst of logins used to start a thread per attempt, and each thread's 16 MiB stayed in
//! its glibc arena after the burst (RSS 46 → 525 MB after 280 attempts, for good). Here
//! the number of threads is fixed, so the memory scrypt can hold is bounded by
//! `threads × 16 MiB` (plus what the queued jobs hold: a password each), and a full queue
//! is refused at once instead of growing.
//!
//! May touch: its own threads and whatever the jobs it is given touch.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Every thread is busy and the queue is full: try again shortly.
    #[error("the password-hashing queue is full ({queue} waiting)")]
    Busy {
        /// The queue's length.
        queue: usize,
    },
    /// The pool's threads are gone (the job panicked, or the pool was shut down).
    #[error("the password-hashing threads are gone")]
    Gone,
}

/// The pool (see the module doc). Dropping the last handle lets its threads finish.
pub struct HashPool {
    jobs: SyncSender<Job>,
    threads: usize,
    queue: usize,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.threads)
            .field("queue", &self.queue)
            .finish()
    }
}

impl HashPool {
    /// Starts `threads` hashing threads (at least one) behind a queue of `queue` jobs.
    pub fn new(threads: usize, queue: usize) -> std::io::Result<Arc<HashPool>> {
        let threads = threads.max(1);
        let queue = queue.max(1);
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        // The threads log where their opener logs (a thread does not inherit the
        // subscriber).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        for n in 0..threads {
            let rx = Arc::clone(&rx);
            let dispatch = dispatch.clone();
            std::thread::Builder::new()
                .name(format!("espmail-hash-{n}"))
                .spawn(move || tracing::dispatcher::with_default(&dispatch, || work(&rx)))?;
        }
        Ok(Arc::new(HashPool {
            jobs: tx,
            threads,
            queue,
        }))
    }

    /// The number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` on a pool thread and waits (without blocking the caller's thread) for its
    /// result. Refused at once with [`PoolError::Busy`] when the queue is full.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(PoolError::Busy { queue: self.queue }),
            Err(TrySendError::Disconnected(_)) => return Err(PoolError::Gone),
        }
        rx.await.map_err(|_| PoolError::Gone)
    }
}

/// One thread's loop: take a job, run it, until every sender is gone.
fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, so the threads take jobs
        // one at a time and run them side by side.
        let job = match rx.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A job that panics must not take the thread with it: the pool would shrink for
        // good. Its caller hears `Gone` (its result sender is dropped).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use espmail_test_macros::bounded;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Waits (bounded) until `done` says so.
    async fn until(what: &str, done: impl Fn() -> bool) {
        let wait = async {
            while !done() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("{what} never happened"));
    }

    #[bounded]
    #[tokio::test]
    async fn jobs_run_on_at_most_the_pools_threads_and_a_full_queue_is_refused() {
        use futures_util::FutureExt;
        let pool = HashPool::new(2, 3).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let job = || {
            let (running, most, finished, release) = (
                Arc::clone(&running),
                Arc::clone(&most),
                Arc::clone(&finished),
                Arc::clone(&release_rx),
            );
            move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = release
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10));
                running.fetch_sub(1, Ordering::SeqCst);
                finished.fetch_add(1, Ordering::SeqCst);
            }
        };
        // Polled once: each job is queued (its caller then stops waiting for it).
        for _ in 0..2 {
            assert!(pool.run(job()).now_or_never().is_none());
        }
        until("both threads busy", || running.load(Ordering::SeqCst) == 2).await;
        for _ in 0..3 {
            assert!(pool.run(job()).now_or_never().is_none());
        }
        assert_eq!(
            pool.run(|| ()).now_or_never(),
            Some(Err(PoolError::Busy { queue: 3 })),
            "a full queue is refused at once"
        );
        for _ in 0..5 {
            release_tx.send(()).unwrap();
        }
        until("every job finished", || {
            finished.load(Ordering::SeqCst) == 5
        })
        .await;
        assert_eq!(
            most.load(Ordering::SeqCst),
            2,
            "never more than the pool's threads"
        );
    }

    #[bounded]
    #[tokio::test]
    async fn a_panicking_job_costs_only_itself() {
        let pool = HashPool::new(1, 4).unwrap();
        assert_eq!(
            pool.run(|| panic!("boom")).await.unwrap_err(),
            PoolError::Gone
        );
        assert_eq!(
            pool.run(|| 41 + 1).await.unwrap(),
            42,
            "the thread lives on"
        );
    }
}
