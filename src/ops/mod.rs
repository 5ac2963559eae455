//! The operator's commands other than `serve`, `talk` and `tunnel`: `init`, `check`,
//! `account …`, `admin …`, `stats`, `purge`, `rotate-key` and `quarantine …`. Each loads the
//! configuration (flags > file > defaults; the file is `--config` / `ESPMAIL_CONFIG`, else
//! `/etc/espmail/espmail.toml` when it exists: [`config_source`]), reaches the vault through its one start-up
//! path ([`crate::espmail::open`]), does its work through the library's own APIs
//! ([`crate::espmail::offline`], [`crate::espmail::accounts`], [`crate::admin::request`])
//! and prints a few plain lines. Every failure is one [`OpsError`] whose message names the
//! problem and the fix; `main` prints it on one stderr line and exits 1.
//!
//! One file per concern: [`init`](mod@init), [`check`](mod@check), [`account`](mod@account)
//! (and the password prompts in [`passwords`]), [`maintenance`] (`stats`, `purge`,
//! `quarantine`), [`rotate`] and [`admin`](mod@admin), with [`progress`] for the long
//! ones; this file dispatches and holds what they share.
//!
//! **A running server.** The commands that care ask the admin socket whether a server is
//! running on the same data ([`server_state`]):
//!
//! - `stats` and `purge` run either way and say which; `account …` and `quarantine …`
//!   run either way (the server only ever adds to the quarantine). They
//!   share the database with the server safely: both sides use WAL mode and a busy
//!   timeout, every change is one short transaction, and readers never block the server.
//! - `rotate-key`: refuses while the server runs ("the server is running; stop it first").
//!   The server keeps sealing new mail under the key it started with and does not see a new
//!   one, so a rotation beside it would never finish and mail re-encrypted under the new
//!   key would be invisible to it until a restart.
//!
//! The check finds a server that uses the same admin socket path, i.e. the same config and
//! data directory; that is how both are meant to be run.
//!
//! May touch: the data directory (creates it), the keyfile (create, rotate), the database
//! (through the vault's modules), the admin socket (as a client), stdin and the terminal's
//! echo flag (through [`crate::terminal`], for password prompts).

pub mod account;
pub mod admin;
pub mod check;
pub mod init;
pub mod maintenance;
pub mod passwords;
pub mod progress;
pub mod rotate;
pub mod secret;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

pub use account::account;
pub use admin::admin;
pub use check::check;
pub use init::init;
pub use maintenance::{purge, purge_cutoff, quarantine, stats};
pub use passwords::{read_line_password, PasswordSource, StdinPasswords};
pub use progress::Progress;
pub use rotate::{rotate_key, ROTATE_BATCH};

use crate::admin::AdminError;
use crate::avatar::NameError;
use crate::cli::{
    AccountArgs, AdminArgs, Command, DataArgs, InitArgs, PurgeArgs, QuarantineArgs, RotateKeyArgs,
    ServeArgs,
};
use crate::config::{Config, ConfigError, ConfigSource, Overrides};
use crate::espmail::accounts::AccountError;
use crate::espmail::crypto::CryptoError;
use crate::espmail::keyfile::KeyId;
use crate::espmail::open::{OpenError, VaultPaths};
use crate::espmail::store::{Limits, StoreError};

/// Why an operator command failed. Each message is one line that names the problem and
/// what to do about it; names of avatars appear (the operator typed them), passwords and
/// key bytes never do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The config file is missing, has a typo or a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The vault could not be opened, or refused what was asked (no database, wrong
    /// keyfile, damaged, locked, disk full, …).
    #[error(transparent)]
    Vault(#[from] OpenError),
    /// A TLS certificate or key could not be made, written or read.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The admin socket could not be asked (no server running, permissions, …).
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// A command that must not run beside the server found it running.
    #[error(
        "the server is running (its admin socket {} answers); stop it first, then run \
         `espmail {command}` again",
        path.display()
    )]
    ServerRunning {
        /// The admin socket path.
        path: PathBuf,
        /// The command refused.
        command: &'static str,
    },
    /// The admin socket exists but could not be asked whether a server runs.
    #[error(
        "cannot tell whether the server is running ({cause}); stop it, then run \
         `espmail {command}` again"
    )]
    ServerStateUnknown {
        /// Why not.
        cause: AdminError,
        /// The command refused.
        command: &'static str,
    },
    /// The avatar name breaks the name rules.
    #[error("bad avatar name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Which rule.
        reason: NameError,
    },
    /// `account add` for a taken name.
    #[error(
        "an avatar called {name} already exists (`espmail account passwd {name}` changes its \
         password)"
    )]
    NameTaken {
        /// The name given.
        name: String,
    },
    /// No avatar with that name.
    #[error("no avatar called {name} (`espmail account list` shows them)")]
    NoSuchAvatar {
        /// The name given.
        name: String,
    },
    /// The new password is too short.
    #[error("a password needs at least {min} characters; nothing was changed")]
    PasswordTooShort {
        /// The minimum.
        min: usize,
    },
    /// The new password is too long.
    #[error("a password has at most {max} characters; nothing was changed")]
    PasswordTooLong {
        /// The maximum.
        max: usize,
    },
    /// The two typed passwords differ.
    #[error("the two passwords differ; nothing was changed")]
    PasswordMismatch,
    /// stdin ended before a password line.
    #[error("no password was given: type it at the prompt, or pipe it as one line on stdin")]
    NoPassword,
    /// Terminal echo could not be switched off for the password prompt.
    #[error(
        "cannot switch off terminal echo ({0}), so the password was not asked: pipe it as \
         one line on stdin instead"
    )]
    EchoStaysOn(io::Error),
    /// Reading the password failed.
    #[error("cannot read the password: {0}")]
    PasswordRead(io::Error),
    /// `purge --older-than 0`.
    #[error("--older-than must be at least 1 day (it counts whole days a message has waited)")]
    BadAge,
    /// `rotate-key --retire-old` would remove the key the account tables are keyed from
    /// (their move to the active key did not happen; a safety net, `rotate-key` moves them
    /// before retiring anything).
    #[error(
        "key {key_id} was not retired: the avatar accounts are still keyed from it (their \
         move to key {active} did not finish); nothing was lost: run `espmail rotate-key \
         --retire-old` again"
    )]
    AccountsKeyInUse {
        /// The key kept.
        key_id: KeyId,
        /// The active key.
        active: KeyId,
    },
    /// `rotate-key --retire-old` kept an old key because quarantined rows name it.
    #[error(
        "key {key_id} was not retired: {rows} quarantined rows are sealed under it (they \
         failed to open and will never be delivered); `espmail quarantine list` shows them, \
         `espmail quarantine drop --all` (or `drop ID`) removes them for good; then run \
         `espmail rotate-key --retire-old` again"
    )]
    QuarantineHoldsKey {
        /// The key kept.
        key_id: KeyId,
        /// Quarantined rows under it.
        rows: u64,
    },
    /// The async runtime for the admin client could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    /// Writing the command's output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
    /// `espmail check` found problems (its FAIL lines, on the output, say what to do).
    #[error(
        "check found {failed} problem{}: the FAIL lines say what to do",
        if *failed == 1 { "" } else { "s" }
    )]
    CheckFailed {
        /// How many items failed.
        failed: usize,
    },
    /// `serve` and `talk` are not operator commands of this module.
    #[error("`{0}` is not handled by the operator commands")]
    NotOps(&'static str),
}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> Self {
        OpsError::Vault(e.into())
    }
}

impl From<AccountError> for OpsError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::PasswordTooShort { min } => OpsError::PasswordTooShort { min },
            AccountError::PasswordTooLong { max } => OpsError::PasswordTooLong { max },
            other => OpsError::Vault(other.into()),
        }
    }
}

impl From<CryptoError> for OpsError {
    fn from(e: CryptoError) -> Self {
        OpsError::Vault(e.into())
    }
}

/// Runs an operator command with the process's stdout, stderr and stdin.
pub fn run(command: Command) -> Result<(), OpsError> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let note_is_terminal = stderr.is_terminal();
    run_with(
        command,
        &mut stdout.lock(),
        &mut stderr.lock(),
        note_is_terminal,
        &mut StdinPasswords,
    )
}

/// Runs an operator command: results on `out`, warnings, notes and progress on `note`
/// (a progress line redrawn in place when `note_is_terminal`, plain lines otherwise). A
/// config file found at the system path (not named on the command line) is named on
/// `note` first, so the operator knows which data the command works on.
pub fn run_with(
    command: Command,
    out: &mut dyn Write,
    note: &mut dyn Write,
    note_is_terminal: bool,
    passwords: &mut dyn PasswordSource,
) -> Result<(), OpsError> {
    if let Some(source @ ConfigSource::System(_)) = data_args(&command).map(config_source) {
        writeln!(note, "espmail: using the {source}")?;
    }
    match command {
        Command::Init(args) => {
            init(&args.data, out, note)?;
            match &args.tls {
                Some(host) => init::tls(&args.data, host, out),
                None => Ok(()),
            }
        }
        Command::Check(args) => check(&args, out),
        Command::Account(args) => account(args, out, note, passwords),
        Command::Admin(args) => admin(args, out),
        Command::Stats(args) => stats(&args, out),
        Command::Purge(args) => purge(
            args,
            out,
            &mut Progress::new(note, "purging", note_is_terminal),
        ),
        Command::RotateKey(args) => rotate_key(
            args,
            out,
            &mut Progress::new(note, "re-encrypting", note_is_terminal),
        ),
        Command::Quarantine(args) => quarantine(args, out, note),
        Command::Serve(_) => Err(OpsError::NotOps("serve")),
        Command::Talk(_) => Err(OpsError::NotOps("talk")),
        Command::Tunnel(_) => Err(OpsError::NotOps("tunnel")),
    }
}

/// The config and data arguments of a command that has them.
fn data_args(command: &Command) -> Option<&DataArgs> {
    match command {
        Command::Init(InitArgs { data, .. }) | Command::Stats(data) => Some(data),
        Command::Account(AccountArgs { data, .. })
        | Command::Admin(AdminArgs { data, .. })
        | Command::Purge(PurgeArgs { data, .. })
        | Command::RotateKey(RotateKeyArgs { data, .. })
        | Command::Quarantine(QuarantineArgs { data, .. })
        | Command::Serve(ServeArgs { data, .. }) => Some(data),
        // `check` names the config it found on its first line.
        Command::Check(_) | Command::Talk(_) | Command::Tunnel(_) => None,
    }
}

/// Which config file a command reads: `--config FILE` / `ESPMAIL_CONFIG`, else
/// [`crate::config::SYSTEM_CONFIG`] when it exists, else the embedded defaults.
pub fn config_source(data: &DataArgs) -> ConfigSource {
    ConfigSource::find(data.config.as_deref())
}

/// The configuration for a command, found as [`config_source`] says, `--data-dir` on top.
pub fn load_config(data: &DataArgs) -> Result<Config, OpsError> {
    load_config_from(&config_source(data), data)
}

/// The configuration from `source`, `--data-dir` on top.
pub fn load_config_from(source: &ConfigSource, data: &DataArgs) -> Result<Config, OpsError> {
    let overrides = Overrides {
        listen: None,
        data_dir: data.data_dir.clone(),
    };
    Ok(Config::load(source.path(), &overrides)?)
}

/// Where a configuration keeps the vault (the same mapping `serve` uses).
pub fn vault_paths(config: &Config) -> VaultPaths {
    VaultPaths {
        dir: config.data.dir.clone(),
        database: config.data.database_path(),
        keyfile: config.data.keyfile_path(),
    }
}

/// The store limits a configuration asks for (the same mapping `serve` uses).
pub fn mail_limits(config: &Config) -> Limits {
    Limits {
        max_per_recipient: usize::try_from(config.mail.max_per_recipient).unwrap_or(usize::MAX),
        max_per_sender: usize::try_from(config.mail.max_per_sender).unwrap_or(usize::MAX),
        max_text_len: config.mail.max_text_len,
        retention_days: config.mail.retention_days,
        ..Limits::default()
    }
}

/// Whether a server is running on this configuration's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Nothing answers on the admin socket.
    Stopped,
    /// A server answers on the admin socket.
    Running,
}

impl ServerState {
    fn describe(self) -> &'static str {
        match self {
            ServerState::Stopped => "stopped",
            ServerState::Running => "running",
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, OpsError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(OpsError::Runtime)
}

/// Asks the admin socket whether a server runs: no socket file, or a stale one nobody
/// listens on, is [`ServerState::Stopped`]; any answer is [`ServerState::Running`]. A
/// socket that exists but cannot be asked (permissions, no answer) is an error, so that
/// a caller needing a stopped server stays safe.
pub fn server_state(config: &Config) -> Result<ServerState, AdminError> {
    let path = config.admin_socket_path();
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(ServerState::Stopped);
    }
    let rt = runtime().map_err(|_| AdminError::NoAnswer { path: path.clone() })?;
    match rt.block_on(crate::admin::request(&path, "debug status")) {
        Ok(_) | Err(AdminError::Rejected { .. }) => Ok(ServerState::Running),
        Err(AdminError::NotRunning { .. }) => Ok(ServerState::Stopped),
        Err(other) => Err(other),
    }
}

pub(crate) fn require_stopped(config: &Config, command: &'static str) -> Result<(), OpsError> {
    match server_state(config) {
        Ok(ServerState::Stopped) => Ok(()),
        Ok(ServerState::Running) => Err(OpsError::ServerRunning {
            path: config.admin_socket_path(),
            command,
        }),
        Err(cause) => Err(OpsError::ServerStateUnknown { cause, command }),
    }
}

/// The server state for a note; a socket that cannot be asked reads as "running?" (the
/// commands using this are safe either way).
pub(crate) fn state_note(config: &Config) -> &'static str {
    match server_state(config) {
        Ok(s) => s.describe(),
        Err(_) => "unknown (its admin socket did not answer)",
    }
}
