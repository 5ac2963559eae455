//! Crash tests (promise 7): a child process (this test binary, re-executed) writes mail with
//! many concurrent senders and is killed with SIGKILL at a random moment, round after round.
//! Every message whose "saved" the child reported before the kill must be present and
//! decrypt afterwards, and the database must pass `PRAGMA integrity_check`. A second test
//! kills a key rotation midway and checks it finishes and loses nothing.
//!
//! Rounds: 20 by default (CI); set `ESPMAIL_CRASH_ROUNDS=500` for a longer run by hand.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use espmail::espmail::crypto::{Keyring, Letter, MailId};
use espmail::espmail::keyfile;
use espmail::espmail::store::Store;
use espmail::espmail::{offline, Limits, MailHandle};
use espmail::log_redact::Sensitive;

const CHILD_DIR: &str = "ESPMAIL_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "ESPMAIL_CRASH_CHILD_ROUND";
const SENDERS: usize = 64;

fn limits() -> Limits {
    Limits {
        max_per_recipient: 1_000_000,
        max_per_sender: usize::MAX,
        ..Limits::default()
    }
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u64::from_le_bytes(b) % n.max(1)
}

/// Prints one whole line with one write (atomic on a pipe: < PIPE_BUF bytes).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes()).unwrap();
    out.flush().unwrap();
}

/// Starts this test binary again as a child running `test_name`, with stdout piped to a
/// reader thread that forwards each line.
fn spawn_child(test_name: &str, dir: &Path, round: usize) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            test_name,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits (bounded) for `count` lines starting with `prefix`, collecting every line seen.
fn wait_for(rx: &mpsc::Receiver<String>, prefix: &str, count: u64, seen: &mut Vec<String>) {
    let mut n = 0;
    while n < count {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                // libtest may print "test NAME ... " before the child's first line.
                n += u64::from(line.contains(prefix));
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return, // child ended on its own
            Err(e) => panic!("child silent for 60 s waiting for {prefix}: {e}"),
        }
    }
}

/// Kills with SIGKILL, then reads everything the child wrote before it died.
fn kill_and_drain(mut child: Child, rx: mpsc::Receiver<String>, seen: &mut Vec<String>) {
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        seen.push(line);
    }
}

fn open_store(dir: &Path) -> Store {
    let kf = keyfile::load(&dir.join("key")).unwrap();
    Store::open(
        &dir.join("mail.db"),
        Arc::new(Keyring::new(&kf).unwrap()),
        limits(),
    )
    .unwrap()
}

fn integrity_ok(store: &Store) {
    let r: String = store
        .connection()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, "ok");
}

/// Child side of the write crash test: many concurrent senders, one line per "saved".
#[test]
#[ignore = "child process of crash_during_group_commit_loses_nothing_reported_saved"]
fn crash_child_writer() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("run by the crash test"));
    let round: usize = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let h = MailHandle::open(&dir.join("mail.db"), &dir.join("key"), limits()).unwrap();
        report("READY");
        let mut tasks = Vec::new();
        for s in 0..SENDERS {
            let h = h.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let to = format!("r{s}");
                    let text = format!("round{round}-sender{s}-msg{i}");
                    let id = h
                        .save(
                            &to,
                            "crasher",
                            Sensitive::new(text.clone().into_bytes()),
                            SystemTime::now(),
                        )
                        .await
                        .unwrap();
                    report(&format!("SAVED {} {to} {text}", id));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn crash_during_group_commit_loses_nothing_reported_saved() {
    let rounds: usize = std::env::var("ESPMAIL_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    keyfile::create(&dir.join("key")).unwrap();
    // id → (recipient, text) of every message reported saved, over all rounds.
    let mut saved: HashMap<String, (String, String)> = HashMap::new();
    for round in 0..rounds {
        let (child, rx) = spawn_child("crash_child_writer", dir, round);
        let mut seen = Vec::new();
        wait_for(&rx, "READY", 1, &mut seen);
        // A random moment: after 0 to 400 reported saves (with 64 senders in flight, the
        // writer is anywhere in a batch: collecting, inserting, committing, answering).
        wait_for(&rx, "SAVED ", random_below(401), &mut seen);
        kill_and_drain(child, rx, &mut seen);
        let before = saved.len();
        for line in &seen {
            let Some(at) = line.find("SAVED ") else {
                continue;
            };
            let mut w = line[at..].splitn(4, ' ');
            if let (Some("SAVED"), Some(id), Some(to), Some(text)) =
                (w.next(), w.next(), w.next(), w.next())
            {
                saved.insert(id.to_string(), (to.to_string(), text.to_string()));
            }
        }
        assert!(
            saved.len() >= before,
            "round {round}: saved set cannot shrink"
        );

        let mut store = open_store(dir);
        integrity_ok(&store);
        let mut found: HashMap<String, (String, String)> = HashMap::new();
        for s in 0..SENDERS {
            let to = format!("r{s}");
            let blinds = store.keys().blinds(&to).unwrap();
            for m in store.load(&blinds, SystemTime::now()).unwrap() {
                let text = String::from_utf8(m.text.expose().clone()).unwrap();
                assert_eq!(m.sender, "crasher");
                found.insert(m.id.to_string(), (to.clone(), text));
            }
        }
        for (id, want) in &saved {
            assert_eq!(
                found.get(id),
                Some(want),
                "round {round}: message {id} was reported saved but is missing or wrong"
            );
        }
        let stats = store.stats(SystemTime::now()).unwrap();
        assert_eq!(
            stats.quarantined, 0,
            "round {round}: a row failed to decrypt"
        );
        println!(
            "round {round}: {} reported saved so far, {} stored",
            saved.len(),
            found.len()
        );
    }
    assert!(!saved.is_empty(), "the child never reported a save");
}

/// Child side of the rotation crash test: rotate one small batch at a time.
#[test]
#[ignore = "child process of crash_during_rotation_is_restartable"]
fn crash_child_rotator() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("run by the crash test"));
    report("READY");
    loop {
        let r = offline::rotate_steps(
            &dir.join("mail.db"),
            &dir.join("key"),
            &limits(),
            3,
            Some(1),
        )
        .unwrap();
        report(&format!("STEP {}", r.reencrypted));
        if r.complete {
            report("DONE");
            return;
        }
    }
}

#[test]
fn crash_during_rotation_is_restartable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("key");
    let db = dir.join("mail.db");
    keyfile::create(&key).unwrap();
    // 60 messages under key 1, sealed directly through the store.
    let mut want: HashMap<MailId, String> = HashMap::new();
    {
        let mut store = open_store(dir);
        let keys = Arc::clone(store.keys());
        for i in 0..60 {
            let to = format!("r{}", i % 4);
            let text = format!("rotating {i}");
            let letter = Letter {
                sender: "alice".into(),
                recipient: to.clone(),
                sent_secs: 1_700_000_000 + i,
                sent_nanos: 0,
                text: Sensitive::new(text.clone().into_bytes()),
            };
            let row = keys
                .seal(MailId::random().unwrap(), &letter, 999_999)
                .unwrap();
            store
                .save_one(&row, 999_999, &keys.blinds(&to).unwrap())
                .unwrap();
            want.insert(row.id, text);
        }
    }
    let mut finished = false;
    for round in 0..8 {
        let (child, rx) = spawn_child("crash_child_rotator", dir, round);
        let mut seen = Vec::new();
        wait_for(&rx, "READY", 1, &mut seen);
        wait_for(&rx, "STEP ", random_below(6), &mut seen);
        kill_and_drain(child, rx, &mut seen);
        finished |= seen.iter().any(|l| l.ends_with("DONE"));
        // Whatever state the kill left: keyfile loads, database is whole, all mail opens.
        let mut store = open_store(dir);
        integrity_ok(&store);
        assert_eq!(store.stats(SystemTime::now()).unwrap().waiting, 60);
        assert_eq!(store.stats(SystemTime::now()).unwrap().quarantined, 0);
        let mut got = HashMap::new();
        for r in 0..4 {
            let blinds = store.keys().blinds(&format!("r{r}")).unwrap();
            for m in store.load(&blinds, SystemTime::now()).unwrap() {
                got.insert(m.id, String::from_utf8(m.text.expose().clone()).unwrap());
            }
        }
        assert_eq!(got, want, "round {round}");
        if finished {
            break;
        }
    }
    // Finish (or confirm finished), then retire the old key.
    let report = offline::rotate(&db, &key, &limits(), 1000).unwrap();
    assert!(report.complete);
    assert_eq!(
        report.active, 2,
        "exactly one new key, however many restarts"
    );
    assert_eq!(report.retirable, vec![1]);
    offline::retire(&db, &key, &limits(), 1).unwrap();
    let kf = keyfile::load(&key).unwrap();
    assert_eq!(kf.keys().map(|(id, _)| id).collect::<Vec<_>>(), vec![2]);
    let store = open_store(dir);
    assert_eq!(
        store.stats(SystemTime::now()).unwrap().per_key,
        vec![(2, 60)]
    );
    println!("rotation finished in the child: {finished}");
}
