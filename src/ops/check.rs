//! `espmail check` (as `postfix check` or `prosodyctl check`): what `serve` would refuse or
//! regret, found without starting it. One line per item, `OK  <what>` or
//! `FAIL <what>: <problem>; <fix>`, then exit 0 when every item is OK and 1 otherwise.
//!
//! The items, in the order `serve` meets them: the config (found as every command finds
//! it, parsed and validated), the data directory (exists or can be made, writable, mode),
//! the keyfile (exists, not readable by the group or others, well formed, not the
//! published example), the keyfile against the database (the database's key-check
//! values; nothing is written, no migration runs), and the listen addresses (bound for a
//! moment and released; with `[tls]`, the certificate and key too).
//!
//! Safe beside a running server: nothing is created or changed; a listen address held by
//! the server running on this same data is reported as such, not as a problem.
//!
//! May touch: the config file, the keyfile and the database (read only), the data
//! directory and its parents (`stat`, `access`), the listening sockets (bound, then
//! closed), the admin socket (to ask whether a server runs).

use std::fmt::Display;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::fs::Access;

use super::{mail_limits, server_state, OpsError, ServerState};
use crate::cli::CheckArgs;
use crate::config::{Config, ConfigSource, Overrides};
use crate::espmail::crypto::Keyring;
use crate::espmail::keyfile::{self, KeyfileError};
use crate::espmail::offline;
use crate::espmail::store::StoreError;
use crate::listen::{self, BindError, Listener};
use crate::tls::{CertPaths, ReloadableAcceptor};

/// The lines written so far, and how many failed.
struct Report<'a> {
    out: &'a mut dyn Write,
    failed: usize,
}

impl Report<'_> {
    fn ok(&mut self, what: impl Display) -> io::Result<()> {
        writeln!(self.out, "OK  {what}")
    }

    /// A failed item; `fix` empty when `problem` already says what to do.
    fn fail(&mut self, what: impl Display, problem: impl Display, fix: &str) -> io::Result<()> {
        self.failed += 1;
        if fix.is_empty() {
            writeln!(self.out, "FAIL {what}: {problem}")
        } else {
            writeln!(self.out, "FAIL {what}: {problem}; {fix}")
        }
    }
}

/// `espmail check`: every item on `out`; [`OpsError::CheckFailed`] when any failed.
pub fn check(args: &CheckArgs, out: &mut dyn Write) -> Result<(), OpsError> {
    let mut report = Report { out, failed: 0 };
    let source = ConfigSource::find(args.data.config.as_deref());
    let overrides = Overrides {
        listen: args.listen,
        data_dir: args.data.data_dir.clone(),
    };
    let mut config = match Config::load(source.path(), &overrides) {
        Ok(config) => {
            report.ok(format_args!("config: {source}"))?;
            config
        }
        Err(e) => {
            report.fail(
                "config",
                e,
                "correct it (config/espmail.toml documents every key and its default), then \
                 run `espmail check` again; the other items need the config and were not checked",
            )?;
            return Err(OpsError::CheckFailed {
                failed: report.failed,
            });
        }
    };
    // The paths as `serve` uses them: absolute against the working directory.
    if let Ok(cwd) = std::env::current_dir() {
        config.make_paths_absolute(&cwd);
    }
    data_dir(&config, &mut report)?;
    keyfile_and_database(&config, &mut report)?;
    let running = matches!(server_state(&config), Ok(ServerState::Running));
    listen_address(config.server.listen, Listener::Plain, running, &mut report)?;
    if let Some(addr) = config.tls.listen {
        listen_address(addr, Listener::Tls, running, &mut report)?;
        tls_pair(&config, &mut report)?;
    }
    front_end_secret(&config, &mut report)?;
    match report.failed {
        0 => Ok(()),
        failed => Err(OpsError::CheckFailed { failed }),
    }
}

/// Whether this process may create files in `dir` (write and search permission; a
/// read-only file system counts as no).
fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, Access::WRITE_OK | Access::EXEC_OK).is_ok()
}

fn data_dir(config: &Config, report: &mut Report<'_>) -> io::Result<()> {
    let dir = &config.data.dir;
    let what = format_args!("data directory {}", dir.display());
    let meta = match std::fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The nearest parent that exists decides whether it can be made.
            let parent = dir.ancestors().skip(1).find(|p| p.exists());
            return match parent {
                Some(p) if p.is_dir() && writable(p) => report.ok(format_args!(
                    "{what} (does not exist yet; `espmail init` or the first `serve` makes it, \
                     mode 0700)"
                )),
                Some(p) => report.fail(
                    what,
                    format_args!(
                        "does not exist, and {} is not a directory this user may write to",
                        p.display()
                    ),
                    &format!(
                        "create it as root for the server's user: `install -d -m 700 -o USER {}`, \
                         or set [data] dir / --data-dir to a place that user owns",
                        dir.display()
                    ),
                ),
                None => report.fail(
                    what,
                    "does not exist, and no parent of it does",
                    "set [data] dir / --data-dir to a directory on this machine",
                ),
            };
        }
        Err(e) => {
            return report.fail(
                what,
                e,
                "check the path and the permissions of the directories above it",
            )
        }
    };
    if !meta.is_dir() {
        return report.fail(
            what,
            "is not a directory",
            "set [data] dir / --data-dir to a directory (it holds the database)",
        );
    }
    if !writable(dir) {
        return report.fail(
            what,
            "this user cannot write to it (the database and its journal are written there)",
            &format!(
                "run espmail as the user that owns it, or give it to that user: `chown USER {}`",
                dir.display()
            ),
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return report.fail(
            what,
            format_args!("has mode {mode:04o}, open to other users"),
            &format!(
                "run `chmod 700 {}` (serve leaves an existing directory's mode as it is, and \
                 only warns)",
                dir.display()
            ),
        );
    }
    report.ok(format_args!("{what} (mode {mode:04o}, writable)"))
}

fn keyfile_and_database(config: &Config, report: &mut Report<'_>) -> io::Result<()> {
    let path = config.data.keyfile_path();
    let db = config.data.database_path();
    let what = format_args!("keyfile {}", path.display());
    let has_db = db.exists();
    let kf =
        match keyfile::load(&path) {
            Ok(kf) => kf,
            Err(KeyfileError::Missing { .. }) if has_db => {
                return report.fail(
                what,
                format_args!("missing, but the database {} was made with one", db.display()),
                "restore it from its backup, mode 0600 (a new key cannot read the mail waiting \
                 there, so espmail will not make one)",
            );
            }
            Err(KeyfileError::Missing { .. }) => {
                return report.fail(
                    what,
                    "does not exist",
                    "run `espmail init` (it makes the keyfile and the database, and tells you to \
                 back the keyfile up)",
                );
            }
            Err(KeyfileError::Permissions { mode, .. }) => {
                return report.fail(
                    what,
                    format_args!("has mode {mode:04o}, readable by other users"),
                    &format!(
                        "run `chmod 600 {}` (and consider the key exposed if others could read it)",
                        path.display()
                    ),
                );
            }
            Err(KeyfileError::ExampleKey { .. }) => {
                return report.fail(
                    what,
                    "holds the published example key, which protects nothing",
                    "move it away and make a real one with `espmail init` (a database made with \
                 it must be moved away too)",
                );
            }
            Err(e) => {
                return report.fail(what, e, "restore the keyfile from its backup");
            }
        };
    let mode = std::fs::metadata(&path).map_or(0o600, |m| m.permissions().mode() & 0o777);
    report.ok(format_args!(
        "{what} (mode {mode:04o}, {} key(s), active key {})",
        kf.keys().count(),
        kf.active_id()
    ))?;
    let what = format_args!("keyfile matches the database {}", db.display());
    if !has_db {
        return report.ok(format_args!(
            "{what} (no database yet: `espmail init` or the first `serve` makes it)"
        ));
    }
    let keys = match Keyring::new(&kf) {
        Ok(keys) => keys,
        Err(e) => return report.fail(what, e, "restore the keyfile from its backup"),
    };
    drop(kf);
    match offline::verify_keyfile(&db, &keys, &mail_limits(config)) {
        Ok(()) => report.ok(what),
        Err(StoreError::KeyMismatch { key_id }) => report.fail(
            what,
            format_args!(
                "it does not: the database was made with another keyfile (key {key_id} differs)"
            ),
            &format!(
                "put back the keyfile made for this database (from its backup) at {}; another \
                 keyfile cannot read the stored mail",
                config.data.keyfile_path().display()
            ),
        ),
        Err(StoreError::MissingKey { key_id, rows }) => report.fail(
            what,
            format_args!("{rows} stored messages need key {key_id}, which the keyfile lacks"),
            "restore the keyfile that still holds it (from the backup made before the last \
             `rotate-key --retire-old`)",
        ),
        Err(e) => report.fail(
            what,
            e,
            "see above; `espmail stats` opens the database the same way",
        ),
    }
}

fn listen_address(
    addr: SocketAddr,
    which: Listener,
    server_running: bool,
    report: &mut Report<'_>,
) -> io::Result<()> {
    let what = match which {
        Listener::Plain => format!("listen address {addr}"),
        Listener::Tls => format!("TLS listen address {addr}"),
    };
    match listen::bind_for(addr, which) {
        Ok(socket) => {
            drop(socket);
            report.ok(format_args!("{what} (free to listen on)"))
        }
        Err(BindError::InUse { .. }) if server_running => report.ok(format_args!(
            "{what} (in use: the espmail server running on this data listens there)"
        )),
        Err(e) => {
            // The bind errors carry their fix in words already (listen.rs); here they are
            // split at the fix so the line reads like the others.
            let text = e.to_string();
            let (problem, fix) = split_fix(&text);
            report.fail(what, problem, fix)
        }
    }
}

/// "cannot listen on A: PROBLEM (FIX)" → ("PROBLEM", "FIX"); a message of another shape
/// is all problem (it says its fix in its own words).
fn split_fix(text: &str) -> (&str, &str) {
    let body = text.split_once(": ").map_or(text, |(_, rest)| rest);
    match (body.rfind(" ("), body.strip_suffix(')')) {
        (Some(i), Some(inner)) => (&body[..i], &inner[i + 2..]),
        _ => (body, ""),
    }
}

/// In trusted mode, the front end's secret file as `serve` reads it (issue 10 M8).
fn front_end_secret(config: &Config, report: &mut Report<'_>) -> io::Result<()> {
    let Some(path) = &config.auth.trusted_secret_file else {
        return Ok(()); // password mode, or the config's own check already refused it
    };
    let what = format_args!("front end's secret {}", path.display());
    match super::secret::front_end_secret(config) {
        Ok(_) => report.ok(what),
        Err(e) => report.fail(
            what,
            e,
            "see [auth] trusted_secret_file in config/espmail.toml",
        ),
    }
}

fn tls_pair(config: &Config, report: &mut Report<'_>) -> io::Result<()> {
    let (Some(cert), Some(key)) = (&config.tls.cert, &config.tls.key) else {
        return Ok(()); // the config's own check requires both with [tls] listen
    };
    let paths = CertPaths {
        cert: cert.clone(),
        key: key.clone(),
    };
    let what = format_args!(
        "TLS certificate {} and key {}",
        cert.display(),
        key.display()
    );
    match ReloadableAcceptor::load(&paths) {
        Ok(_) => report.ok(what),
        Err(e) => report.fail(
            what,
            e,
            "fix or replace the pair named by [tls] cert and key",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_messages_split_into_problem_and_fix() {
        let e = BindError::classify(
            "192.0.2.1:1986".parse().unwrap(),
            Listener::Plain,
            io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
        )
        .to_string();
        let (problem, fix) = split_fix(&e);
        assert_eq!(problem, "192.0.2.1 is not an address of this host");
        assert!(
            fix.starts_with("use one of this machine's addresses"),
            "{fix}"
        );
        assert!(fix.ends_with("[server] listen"), "{fix}");
        let e = BindError::classify(
            "127.0.0.1:1986".parse().unwrap(),
            Listener::Plain,
            io::Error::from_raw_os_error(libc::EADDRINUSE),
        )
        .to_string();
        let (problem, fix) = split_fix(&e);
        assert_eq!(problem, "the port is already in use");
        assert!(fix.contains("another server"), "{fix}");
        assert_eq!(split_fix("no parenthesis"), ("no parenthesis", ""));
        let e = BindError::classify(
            "127.0.0.1:1986".parse().unwrap(),
            Listener::Plain,
            io::Error::from_raw_os_error(libc::EINVAL),
        )
        .to_string();
        let (problem, fix) = split_fix(&e);
        assert!(problem.ends_with("(os error 22)"), "{problem}");
        assert!(fix.starts_with("change --listen"), "{fix}");
    }
}
