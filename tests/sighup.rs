//! SIGHUP re-reads the log level from the config file through the one `LogControl`; a
//! config with a typo is reported and leaves the filter alone. Signals are process-wide,
//! so this is its own test binary.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::path::Path;
use std::time::Duration;

use espmail::config::Config;
use espmail::log_redact::{self, Capture};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

const WAIT: Duration = Duration::from_secs(10);

fn hangup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_for_log(capture: &Capture, needle: &str, times: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while capture.contents().matches(needle).count() < times {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {needle:?} in:\n{}",
            capture.contents()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGHUP, then (bounded) the runtime debug switch changing; returns its new state.
async fn hangup_and_switch(rx: &mut tokio::sync::watch::Receiver<bool>) -> bool {
    hangup();
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .unwrap()
        .unwrap();
    *rx.borrow_and_update()
}

fn write_level(path: &Path, level: &str) {
    std::fs::write(path, format!("[logging]\nlevel = \"{level}\"\n")).unwrap();
}

#[bounded]
#[tokio::test]
async fn sighup_rereads_the_level_and_survives_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("espmail.toml");
    write_level(&config, "warn");

    let capture = Capture::new();
    let (dispatch, control) = log_redact::dispatch_with_writer("info", capture.clone()).unwrap();
    control.set_debug(true, "uid=1").unwrap();
    let mut rx = control.subscribe();
    rx.borrow_and_update();

    let shutdown = CancellationToken::new();
    let path = config.clone();
    let task = log_redact::reload_on_sighup(
        control.clone(),
        move || Config::read(&path).and_then(|c| c.logging.starting_level(None)),
        shutdown.clone(),
    )
    .unwrap();
    let task = tokio::spawn(task.with_subscriber(dispatch));

    assert!(
        !hangup_and_switch(&mut rx).await,
        "runtime debug ended by the reload"
    );
    assert_eq!(control.status().filter, "warn");

    std::fs::write(&config, "[logging]\nlevle = \"trace\"\n").unwrap();
    hangup();
    wait_for_log(&capture, "config not re-read", 1).await;
    assert!(
        capture.contents().contains("`levle`"),
        "{}",
        capture.contents()
    );
    assert_eq!(
        control.status().filter,
        "warn",
        "a bad file changes nothing"
    );

    write_level(&config, "debug");
    assert!(
        hangup_and_switch(&mut rx).await,
        "debug from the file: players must be told"
    );
    assert_eq!(control.status().filter, "debug");

    shutdown.cancel();
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
