//! The load generator still works (issue 10, M2): it logs every avatar in from one
//! address, which its server config exempts from the per-address cap, as an operator would
//! exempt a front end. Small numbers: figures belong in BENCHMARKS.md, not here.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::process::{Command, Stdio};

/// Runs the load generator with small numbers (and `extra`), bounded; its report.
fn run_load(extra: &[&str]) -> String {
    let child = Command::new(env!("CARGO_BIN_EXE_espmail-load"))
        .args(["--avatars", "300", "--senders", "50", "--esp-rate", "100"])
        .args(extra)
        .args([
            "--secs",
            "1",
            "--mail-senders",
            "20",
            "--login-concurrency",
            "50",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Bounded: killed if it has not finished in a few waits' time.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(6 * common::WAIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("espmail-load did not finish");
        }
    };
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{report}");
    report
}

#[test]
fn the_load_generator_logs_every_avatar_in_from_one_address() {
    let report = run_load(&[]);
    assert!(
        report.contains("logged in 300/300 avatars (plain)"),
        "{report}"
    );
    assert!(
        report.contains("connections still up after the run: 300/300"),
        "{report}"
    );
}

/// Issue 12: `--tls` puts every avatar on the server's TLS listener (pinned), and the whole
/// run (live ESP, ESP Mail saves) works there.
#[test]
fn the_load_generator_runs_over_tls() {
    let report = run_load(&["--tls"]);
    assert!(
        report.contains("logged in 300/300 avatars (TLS)"),
        "{report}"
    );
    assert!(
        report.contains("connections still up after the run: 300/300"),
        "{report}"
    );
}
