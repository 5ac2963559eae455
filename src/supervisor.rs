//! What `serve` tells a service manager: systemd's readiness protocol (`Type=notify`).
//!
//! When started with `NOTIFY_SOCKET` in the environment (systemd sets it for
//! `Type=notify` units; podman's `--sdnotify` does too), `serve` sends `READY=1` once it
//! accepts connections (the moment it prints `espmail listening on ADDR`) and
//! `STOPPING=1` when it begins to shut down. Without the variable nothing is sent.
//! The datagram itself is the `sd-notify` crate's job (no unsafe code here).
//!
//! A failure to notify is logged, never fatal: the server works; at worst systemd times
//! the start out, and the log line says why.
//!
//! May touch: the `NOTIFY_SOCKET` datagram socket, and environment variables (read only).

use std::net::SocketAddr;
use std::path::Path;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Whether a service manager started this process: systemd sets `INVOCATION_ID` for every
/// unit it runs, and `NOTIFY_SOCKET` for notify units.
pub fn under_service_manager() -> bool {
    ["INVOCATION_ID", "NOTIFY_SOCKET"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Tells the service manager the server accepts connections on `local` (and TLS ones on
/// `tls`, when that listener is set up).
pub fn notify_ready(local: SocketAddr, tls: Option<SocketAddr>) {
    let mut status = format!("listening on {local}");
    if let Some(tls) = tls {
        status.push_str(&format!("; TLS on {tls}"));
    }
    send(
        &[NotifyState::Ready, NotifyState::Status(&status)],
        "READY=1",
    );
}

/// Tells the service manager the server is shutting down.
pub fn notify_stopping() {
    send(
        &[
            NotifyState::Stopping,
            NotifyState::Status("shutting down: sessions finish what they are saving"),
        ],
        "STOPPING=1",
    );
}

/// Sends `STOPPING=1` as soon as `shutdown` is cancelled (a signal, or the server ending).
pub async fn notify_stopping_on(shutdown: CancellationToken) {
    shutdown.cancelled().await;
    notify_stopping();
}

/// Warns, when a service manager started the server, about paths that were relative in
/// the configuration: they were resolved against the working directory `cwd` (for a
/// systemd unit, `WorkingDirectory=`, by default `/`), which is rarely what was meant.
pub fn warn_relative_paths(keys: &[&str], cwd: &Path) {
    if keys.is_empty() || !under_service_manager() {
        return;
    }
    tracing::warn!(
        keys = %keys.join(","),
        cwd = %cwd.display(),
        "relative paths resolved against the working directory of a service; \
         give absolute paths in the config file or on the command line"
    );
}

fn send(states: &[NotifyState<'_>], what: &'static str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    match sd_notify::notify(states) {
        Ok(()) => tracing::debug!(what, "service manager notified"),
        Err(e) => {
            tracing::warn!(error = %e, what, "could not notify the service manager (NOTIFY_SOCKET)")
        }
    }
}
