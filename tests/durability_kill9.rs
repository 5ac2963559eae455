//! Evidence that nothing accepted is lost (issue 5): the real `espmail serve` under
//! continuous ESP Mail load from many senders over the real protocol, killed with SIGKILL
//! at random moments and restarted on the same data directory, again and again.
//!
//! Every sender records each text it starts to offer ("attempted"; it answers `Y` to
//! every prompt) and each text for which it saw "ESP Mail for NAME saved." ("saved"). At the end the recipients log in and
//! read everything. The promise checked:
//! * every saved text is delivered exactly once, to its recipient, from its sender;
//! * nothing else appears: every delivered text is one that was attempted, and none
//!   twice (an attempted text whose "saved" was cut off by the kill may or may not have
//!   been committed; either is honest, a duplicate or a stranger is not);
//! * after delivery nothing is waiting, and `PRAGMA integrity_check` says `ok`.
//!
//! CI runs 20 cycles; `ESPMAIL_KILL9_CYCLES=200 cargo test --test durability_kill9 --
//! --nocapture` runs longer, `ESPMAIL_KILL9_SEED=N` replays a run's kill moments.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod durability_support;

use espmail_test_macros::bounded;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use durability_support::{enter, integrity_check, offer, read_all, visit, CONFIG};
use tokio::sync::Notify;

const SENDERS: usize = 8;
const RECIPIENTS: [&str; 3] = ["Rcpt0", "Rcpt1", "Rcpt2"];

/// A small xorshift generator: the kill moments only need to be spread, and replayable
/// from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the senders saw, shared by all of them.
#[derive(Default)]
struct Ledger {
    /// Text → (sender, recipient), recorded before the offer starts.
    attempted: HashMap<String, (String, String)>,
    /// Texts whose "saved" line arrived.
    saved: HashSet<String>,
    /// Anything a sender saw that it should not have while the server was up.
    problems: Vec<String>,
}

struct Shared {
    ledger: Mutex<Ledger>,
    /// Rung on every "saved".
    bell: Notify,
    /// Set just before the kill: errors after it are the crash, not a bug.
    killing: AtomicBool,
    /// Next message number, unique over the whole run.
    counter: AtomicU64,
}

impl Shared {
    fn saved_count(&self) -> usize {
        self.ledger.lock().unwrap().saved.len()
    }
}

/// One sender: logs in and sends ESP Mail to offline recipients until the connection
/// dies. Returns when the server is gone.
async fn sender(host: String, name: String, seed: u64, shared: Arc<Shared>) {
    let result = send_loop(&host, &name, seed, &shared).await;
    if let Err(e) = result {
        if !shared.killing.load(Ordering::SeqCst) {
            shared
                .ledger
                .lock()
                .unwrap()
                .problems
                .push(format!("{name}: {e} while the server was up"));
        }
    }
}

async fn send_loop(host: &str, name: &str, seed: u64, shared: &Shared) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let mut c = enter(host, name).await.map_err(|e| e.to_string())?;
    for round in 1u64.. {
        // The server lets one connection send a burst of 8 lines, then 2 a second; an
        // offer is two lines (TO: and ESP:). A fresh connection every 3 offers keeps every
        // line welcome, so a sender is never silently slowed.
        if round % 3 == 0 {
            c.quit().await.map_err(|e| e.to_string())?;
            c.wait_closed().await.map_err(|e| e.to_string())?;
            c = enter(host, name).await.map_err(|e| e.to_string())?;
        }
        let to = RECIPIENTS[rng.below(RECIPIENTS.len() as u64) as usize];
        let n = shared.counter.fetch_add(1, Ordering::SeqCst);
        // Unique and legal speech bytes; short enough for one balloon.
        let text = format!("k9 {name} to {to} m{n} x{:08x}", rng.next() as u32);
        // Recorded before the offer starts: from here on it may be committed.
        shared
            .ledger
            .lock()
            .unwrap()
            .attempted
            .insert(text.clone(), (name.to_string(), to.to_string()));
        let answer = offer(&mut c, to, &text).await?;
        if answer != format!("ESP Mail for {to} saved.") {
            return Err(format!("answer {answer:?} instead of saved"));
        }
        shared.ledger.lock().unwrap().saved.insert(text);
        shared.bell.notify_waiters();
    }
    Ok(())
}

/// Blocking work (starting or killing the server) from inside the runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[bounded]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_saved_and_invents_nothing() {
    let cycles = env_u64("ESPMAIL_KILL9_CYCLES").unwrap_or(20).max(1);
    let seed = env_u64("ESPMAIL_KILL9_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("kill-9 harness: {cycles} cycles, {SENDERS} senders, seed {seed}");
    let mut rng = Rng(seed | 1);
    let started = Instant::now();

    let mut server = blocking(|| TestServer::start_with_config(CONFIG, &[]));
    // The recipients must be known avatars to be offered ESP Mail: one login each.
    for r in RECIPIENTS {
        visit(&server.host(), r).await;
    }

    let shared = Arc::new(Shared {
        ledger: Mutex::new(Ledger::default()),
        bell: Notify::new(),
        killing: AtomicBool::new(false),
        counter: AtomicU64::new(0),
    });

    for cycle in 0..cycles {
        shared.killing.store(false, Ordering::SeqCst);
        let host = server.host();
        let tasks: Vec<_> = (0..SENDERS)
            .map(|i| {
                tokio::spawn(sender(
                    host.clone(),
                    format!("Sndr{i}"),
                    rng.next(),
                    shared.clone(),
                ))
            })
            .collect();

        // The kill moment: after a random number of new "saved" (1 to 3 per sender), plus
        // a random 0–20 ms, so the kill lands anywhere in a save: before the commit,
        // inside it, or between the commit and the "saved" line.
        let target = shared.saved_count() + 1 + rng.below(3 * SENDERS as u64) as usize;
        let deadline = Instant::now() + common::WAIT;
        while shared.saved_count() < target {
            let rung = shared.bell.notified();
            if shared.saved_count() >= target {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "cycle {cycle}: no progress; problems {:?}\nlog:\n{}",
                shared.ledger.lock().unwrap().problems,
                server.log()
            );
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), rung).await;
        }
        let jitter = rng.below(21);
        if jitter > 0 {
            tokio::time::sleep(Duration::from_millis(jitter)).await;
        }
        shared.killing.store(true, Ordering::SeqCst);
        blocking(|| server.kill());
        for t in tasks {
            t.await.unwrap();
        }
        let problems = shared.ledger.lock().unwrap().problems.clone();
        assert!(problems.is_empty(), "cycle {cycle}: {problems:?}");
        server = blocking(|| server.restart());
    }

    // Everyone reads everything.
    let mut delivered: HashMap<String, usize> = HashMap::new();
    let mut strangers = Vec::new();
    let (attempted, saved) = {
        let l = shared.ledger.lock().unwrap();
        (l.attempted.clone(), l.saved.clone())
    };
    for r in RECIPIENTS {
        for (from, text) in read_all(&server.host(), r).await {
            match attempted.get(&text) {
                Some((s, to)) if s == &from && to == r => {}
                _ => strangers.push(format!("{r} got {text:?} from {from}")),
            }
            *delivered.entry(text).or_default() += 1;
        }
    }
    assert!(
        strangers.is_empty(),
        "unknown or misrouted mail: {strangers:?}"
    );
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let lost: Vec<_> = saved
        .iter()
        .filter(|t| !delivered.contains_key(*t))
        .collect();
    assert!(lost.is_empty(), "saved but never delivered: {lost:?}");

    // Nothing is left: a second login finds no mail, and the offline count agrees.
    for r in RECIPIENTS {
        assert!(
            read_all(&server.host(), r).await.is_empty(),
            "{r} still has mail after reading it all"
        );
    }
    let (code, out, err) = server.cli(&["stats"], "");
    assert_eq!(code, 0, "stats failed: {err}");
    assert!(
        out.lines().any(|l| l.trim() == "messages waiting: 0"),
        "stats after delivery:\n{out}"
    );

    server.signal("TERM");
    let status = blocking(|| server.wait_exit());
    assert!(status.success(), "server exit: {status:?}");
    let db = server.data_dir.join("espmail.db");
    assert_eq!(integrity_check(&db), "ok");

    let unconfirmed_committed = delivered.len() - saved.len();
    eprintln!(
        "kill-9 harness: {cycles} cycles in {:.1} s; {} attempted, {} saved (seen by \
         senders), {} delivered exactly once ({} of them committed but killed before the \
         sender saw \"saved\"), {} attempted and not committed, 0 lost, 0 duplicates, \
         integrity ok",
        started.elapsed().as_secs_f64(),
        attempted.len(),
        saved.len(),
        delivered.len(),
        unconfirmed_committed,
        attempted.len() - delivered.len(),
    );
}
