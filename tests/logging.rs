//! The runtime debug switch reaches every thread of the process: threads that already
//! logged (so tracing has cached each callsite's interest) start and stop writing debug
//! events when `LogControl` switches, with the process-wide subscriber installed by
//! `init_with_writer`, exactly as `serve` installs it.
//!
//! One test in this file: it owns the process's global subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use espmail::log_redact::{self, Capture};

const THREADS: usize = 4;

/// One callsite shared by every thread, so the interest cache is what is being tested.
fn probe(thread: usize, round: u32) {
    tracing::debug!(target: "espmail::probe", thread, round, "probe debug");
    tracing::info!(target: "espmail::probe", thread, round, "probe info");
}

fn has_line(log: &str, kind: &str, thread: usize, round: u32) -> bool {
    log.lines()
        .any(|l| l.contains(kind) && l.contains(&format!("thread={thread} round={round}")))
}

#[test]
fn runtime_switch_takes_effect_on_every_thread() {
    let capture = Capture::new();
    let control = log_redact::init_with_writer("info", capture.clone()).unwrap();
    // A second init in the same process is refused, not silently ignored.
    assert!(log_redact::init_with_writer("info", Capture::new()).is_err());

    let (done_tx, done_rx) = mpsc::channel::<usize>();
    let mut workers = Vec::new();
    for i in 0..THREADS {
        let (tx, rx) = mpsc::channel::<Option<u32>>();
        let done = done_tx.clone();
        let handle = thread::spawn(move || {
            while let Ok(Some(round)) = rx.recv() {
                probe(i, round);
                done.send(i).unwrap();
            }
        });
        workers.push((tx, handle));
    }
    let run_round = |round: u32| {
        for (tx, _) in &workers {
            tx.send(Some(round)).unwrap();
        }
        for _ in 0..THREADS {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    };

    run_round(0); // debug off: every callsite is now cached as "info only"
    control.set_debug(true, "uid=4242").unwrap();
    run_round(1);
    control.set_debug(false, "uid=4242").unwrap();
    run_round(2);
    control
        .set_filter("info,espmail::probe=debug", "test")
        .unwrap();
    run_round(3);
    control.reload_from_config("warn", "SIGHUP").unwrap();
    run_round(4);

    for (tx, handle) in workers {
        tx.send(None).unwrap();
        handle.join().unwrap();
    }

    let log = capture.contents();
    for t in 0..THREADS {
        assert!(
            has_line(&log, "probe info", t, 0),
            "thread {t} info, round 0:\n{log}"
        );
        assert!(
            !has_line(&log, "probe debug", t, 0),
            "thread {t} round 0:\n{log}"
        );
        assert!(
            has_line(&log, "probe debug", t, 1),
            "thread {t} round 1:\n{log}"
        );
        assert!(
            !has_line(&log, "probe debug", t, 2),
            "thread {t} round 2:\n{log}"
        );
        assert!(
            has_line(&log, "probe info", t, 2),
            "thread {t} info, round 2:\n{log}"
        );
        assert!(
            has_line(&log, "probe debug", t, 3),
            "thread {t} round 3:\n{log}"
        );
        assert!(
            !has_line(&log, "probe info", t, 4),
            "thread {t} warn, round 4:\n{log}"
        );
        assert!(
            !has_line(&log, "probe debug", t, 4),
            "thread {t} warn, round 4:\n{log}"
        );
    }
    // The switches were logged at info with who asked.
    assert!(
        log.contains("who=\"uid=4242\" action=\"debug on\""),
        "{log}"
    );
    assert!(
        log.contains("who=\"uid=4242\" action=\"debug off\""),
        "{log}"
    );
    assert!(log.contains("who=\"SIGHUP\""), "{log}");
}
