//! The operator's commands other than `serve` and `talk`: `init`, `account …`, `admin …`,
//! `stats`, `purge`, `rotate-key` and `quarantine …`. Each loads the configuration (flags > file >
//! defaults), does its work through the library's own APIs ([`crate::espmail::keyfile`],
//! [`crate::espmail::offline`], [`crate::espmail::accounts`], [`crate::admin::request`]) and
//! prints a few plain lines. Every failure is one [`OpsError`] whose message names the
//! problem and the fix; `main` prints it on one stderr line and exits 1.
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
//! (through the espmail and accounts modules), the admin socket (as a client), stdin and
//! the terminal's echo flag (via `stty`, for password prompts).

use std::io::{self, BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::admin::{self, AdminError};
use crate::avatar::{self, AvatarName, NameError, Password};
use crate::cli::{
    AccountArgs, AccountOp, AdminArgs, AdminOp, Command, DataArgs, DebugSwitch, PurgeArgs,
    QuarantineArgs, QuarantineOp, RotateKeyArgs,
};
use crate::config::{Config, ConfigError, Overrides};
use crate::espmail::accounts::{AccountError, Accounts, Avatar};
use crate::espmail::crypto::{self, Keyring};
use crate::espmail::keyfile::{self, KeyId, Keyfile, KeyfileError};
use crate::espmail::offline;
use crate::espmail::store::{Limits, QuarantineSelect, RowId, Store, StoreError};

/// Mail rows re-encrypted per transaction by `rotate-key`: small enough that a running
/// reader never waits long, large enough that a big database rotates in few commits.
pub const ROTATE_BATCH: usize = 256;

const SECS_PER_DAY: u64 = 86_400;

/// Why an operator command failed. Each message is one line that names the problem and
/// what to do about it; names of avatars appear (the operator typed them), passwords and
/// key bytes never do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The config file is missing, has a typo or a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keyfile is missing, damaged, too open, or the published example.
    #[error(transparent)]
    Keyfile(#[from] KeyfileError),
    /// The mail database refused (wrong keyfile, damaged, locked, disk full, …).
    #[error(transparent)]
    Store(StoreError),
    /// The admin socket could not be asked (no server running, permissions, …).
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The avatar accounts could not be used (wrong keyfile, damaged, …).
    #[error("avatar accounts: {0}")]
    Account(AccountError),
    /// `init` found a keyfile where it would create one.
    #[error(
        "a keyfile already exists at {}; refusing to overwrite it (mail sealed under it would \
         become unreadable): if you really mean to start over, move it away yourself first",
        path.display()
    )]
    KeyfileExists {
        /// The keyfile path.
        path: PathBuf,
    },
    /// `init` found a database without a keyfile beside it.
    #[error(
        "a mail database already exists at {}, but no keyfile: `espmail init` is for a fresh \
         setup; restore the keyfile from its backup to {} instead",
        database.display(), keyfile.display()
    )]
    DatabaseExists {
        /// The database path.
        database: PathBuf,
        /// Where its keyfile belongs.
        keyfile: PathBuf,
    },
    /// The keyfile is missing but the database already holds data sealed under it.
    #[error(
        "the keyfile {} is missing, but the database {} was made with one: restore the \
         keyfile from its backup (a new key cannot read the mail waiting there); espmail will \
         not make a new one over existing data",
        keyfile.display(), database.display()
    )]
    KeyfileLost {
        /// Where the keyfile belongs.
        keyfile: PathBuf,
        /// The database that needs it.
        database: PathBuf,
    },
    /// A directory could not be created.
    #[error("cannot create the directory {}: {cause} (check the path and its permissions)", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        cause: io::Error,
    },
    /// No database at the configured path.
    #[error(
        "no mail database at {}: run `espmail init` first, or point --data-dir / --config at \
         the server's data",
        path.display()
    )]
    NoDatabase {
        /// The database path.
        path: PathBuf,
    },
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
        "cannot switch off terminal echo (is `stty` installed?), so the password was not \
         asked: pipe it as one line on stdin instead"
    )]
    EchoStaysOn,
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
    /// `serve` and `talk` are not operator commands of this module.
    #[error("`{0}` is not handled by the operator commands")]
    NotOps(&'static str),
}

impl From<StoreError> for OpsError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoDatabase(path) => OpsError::NoDatabase { path },
            other => OpsError::Store(other),
        }
    }
}

impl From<AccountError> for OpsError {
    fn from(e: AccountError) -> Self {
        match e {
            // The accounts live in the mail database's file: the store's reading of SQLite
            // errors (damaged, read-only, disk full, locked) says what to do.
            AccountError::Sqlite(e) => OpsError::Store(StoreError::from(e)),
            AccountError::Store(e) => OpsError::from(e),
            AccountError::PasswordTooShort { min } => OpsError::PasswordTooShort { min },
            AccountError::PasswordTooLong { max } => OpsError::PasswordTooLong { max },
            other => OpsError::Account(other),
        }
    }
}

impl From<crypto::CryptoError> for OpsError {
    fn from(e: crypto::CryptoError) -> Self {
        OpsError::Store(StoreError::from(e))
    }
}

/// Where a password comes from: the terminal, or a test's script.
pub trait PasswordSource {
    /// Reads one password. `confirm`: a new password, asked twice when a person types it.
    fn read_password(&mut self, prompt: &str, confirm: bool) -> Result<Password, OpsError>;
}

/// Passwords from the process's stdin: on a terminal, prompted on stderr without echo (and
/// asked twice for a new one); otherwise one line of stdin (scripts, tests).
#[derive(Debug, Default)]
pub struct StdinPasswords;

impl PasswordSource for StdinPasswords {
    fn read_password(&mut self, prompt: &str, confirm: bool) -> Result<Password, OpsError> {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return read_line_password(&mut stdin.lock());
        }
        let first = prompt_no_echo(prompt)?;
        if confirm {
            let again = prompt_no_echo("Again: ")?;
            if !first.same_as(&again) {
                return Err(OpsError::PasswordMismatch);
            }
        }
        Ok(first)
    }
}

/// Reads one line as a password (without its line end). EOF before any byte is an error.
pub fn read_line_password(input: &mut dyn BufRead) -> Result<Password, OpsError> {
    let mut line = zeroize::Zeroizing::new(Vec::new());
    let n = input
        .read_until(b'\n', &mut line)
        .map_err(OpsError::PasswordRead)?;
    if n == 0 {
        return Err(OpsError::NoPassword);
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Password::new(line.to_vec()))
}

/// Turns terminal echo back on when dropped, so an error or early return cannot leave the
/// operator's terminal silent.
struct EchoOff;

impl EchoOff {
    /// Fails rather than let a password show on the screen.
    fn new() -> Result<EchoOff, OpsError> {
        // `stty` keeps this free of unsafe termios calls; it acts on the inherited stdin.
        match std::process::Command::new("stty").arg("-echo").status() {
            Ok(status) if status.success() => Ok(EchoOff),
            _ => Err(OpsError::EchoStaysOn),
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        let _ = std::process::Command::new("stty").arg("echo").status();
    }
}

fn prompt_no_echo(prompt: &str) -> Result<Password, OpsError> {
    let mut err = io::stderr();
    // Echo goes off before the prompt shows, so nothing typed after seeing it is echoed.
    let echo = EchoOff::new()?;
    write!(err, "{prompt}")?;
    err.flush()?;
    let pw = read_line_password(&mut io::stdin().lock());
    drop(echo);
    writeln!(err)?;
    pw
}

/// Runs an operator command with the process's stdout, stderr and stdin.
pub fn run(command: Command) -> Result<(), OpsError> {
    let stdout = io::stdout();
    let stderr = io::stderr();
    run_with(
        command,
        &mut stdout.lock(),
        &mut stderr.lock(),
        &mut StdinPasswords,
    )
}

/// Runs an operator command: results on `out`, warnings and notes on `note`.
pub fn run_with(
    command: Command,
    out: &mut dyn Write,
    note: &mut dyn Write,
    passwords: &mut dyn PasswordSource,
) -> Result<(), OpsError> {
    match command {
        Command::Init(args) => init(&args, out, note),
        Command::Account(args) => account(args, out, note, passwords),
        Command::Admin(args) => admin(args, out),
        Command::Stats(args) => stats(&args, out),
        Command::Purge(args) => purge(args, out),
        Command::RotateKey(args) => rotate_key(args, out),
        Command::Quarantine(args) => quarantine(args, out, note),
        Command::Serve(_) => Err(OpsError::NotOps("serve")),
        Command::Talk(_) => Err(OpsError::NotOps("talk")),
        Command::Tunnel(_) => Err(OpsError::NotOps("tunnel")),
    }
}

/// The configuration for a command: the `--config` file or the defaults, `--data-dir` on top.
pub fn load_config(data: &DataArgs) -> Result<Config, OpsError> {
    let overrides = Overrides {
        listen: None,
        data_dir: data.data_dir.clone(),
    };
    Ok(Config::load(data.config.as_deref(), &overrides)?)
}

/// The store limits a configuration asks for (the same mapping `serve` uses).
pub fn mail_limits(config: &Config) -> Limits {
    Limits {
        max_per_recipient: usize::try_from(config.mail.max_per_recipient).unwrap_or(usize::MAX),
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

fn runtime() -> Result<tokio::runtime::Runtime, OpsError> {
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
    match rt.block_on(admin::request(&path, "debug status")) {
        Ok(_) | Err(AdminError::Rejected { .. }) => Ok(ServerState::Running),
        Err(AdminError::NotRunning { .. }) => Ok(ServerState::Stopped),
        Err(other) => Err(other),
    }
}

fn require_stopped(config: &Config, command: &'static str) -> Result<(), OpsError> {
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
fn state_note(config: &Config) -> &'static str {
    match server_state(config) {
        Ok(s) => s.describe(),
        Err(_) => "unknown (its admin socket did not answer)",
    }
}

fn require_database(config: &Config) -> Result<PathBuf, OpsError> {
    let db = config.data.database_path();
    if db.exists() {
        Ok(db)
    } else {
        Err(OpsError::NoDatabase { path: db })
    }
}

/// The keyfile for `serve`: loaded when it exists; made (with its directory, 0700) when
/// this is a first start, i.e. there is no database yet. A missing keyfile beside an
/// existing database is [`OpsError::KeyfileLost`]: a new key would not read the mail, and
/// a fresh keyfile left behind would hide the real problem at the next start. The flag
/// says whether a keyfile was made (the caller must then warn loudly to back it up).
pub fn load_or_create_keyfile(config: &Config) -> Result<(Keyfile, bool), OpsError> {
    let kp = config.data.keyfile_path();
    match keyfile::load(&kp) {
        Ok(kf) => return Ok((kf, false)),
        Err(KeyfileError::Missing { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let db = config.data.database_path();
    if db.exists() {
        return Err(OpsError::KeyfileLost {
            keyfile: kp,
            database: db,
        });
    }
    if let Some(parent) = kp.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    Ok((keyfile::create(&kp)?, true))
}

/// Creates `dir` (and missing parents) with mode 0700. Returns whether it was created.
fn create_private_dir(dir: &Path) -> Result<bool, OpsError> {
    crate::private_dir::create(dir).map_err(|cause| OpsError::CreateDir {
        path: dir.to_path_buf(),
        cause,
    })
}

/// `espmail init`: the data directory (0700), a new keyfile (0600) and the database with
/// its mail and account tables. Refuses to overwrite a keyfile, and refuses a database that
/// already exists (its keyfile must be restored, not replaced). On failure after the
/// keyfile was made, the new (still unused) keyfile and database are removed again, so
/// `init` can simply be run again.
pub fn init(args: &DataArgs, out: &mut dyn Write, note: &mut dyn Write) -> Result<(), OpsError> {
    use std::os::unix::fs::PermissionsExt;
    let config = load_config(args)?;
    let dir = config.data.dir.clone();
    let db = config.data.database_path();
    let kp = config.data.keyfile_path();
    if std::fs::symlink_metadata(&kp).is_ok() {
        return Err(OpsError::KeyfileExists { path: kp });
    }
    if db.exists() {
        return Err(OpsError::DatabaseExists {
            database: db,
            keyfile: kp,
        });
    }
    if !create_private_dir(&dir)? {
        if let Ok(meta) = std::fs::metadata(&dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                writeln!(
                    note,
                    "espmail: note: the data directory {} has mode {mode:04o}; `chmod 700 {}` \
                     keeps other users away from the database",
                    dir.display(),
                    dir.display()
                )?;
            }
        }
    }
    if let Some(parent) = kp.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(parent)?;
    }
    let kf = keyfile::create(&kp).map_err(|e| match e {
        KeyfileError::AlreadyExists { path } => OpsError::KeyfileExists { path },
        other => OpsError::Keyfile(other),
    })?;
    if let Err(e) = create_database(&db, &kf, &config) {
        // Nothing was ever sealed under this key: removing it loses nothing and lets the
        // operator fix the cause and run `init` again.
        let _ = std::fs::remove_file(&kp);
        for suffix in ["", "-wal", "-shm"] {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
        return Err(e);
    }
    drop(kf);
    writeln!(out, "created the keyfile {} (mode 0600)", kp.display())?;
    writeln!(out, "created the database {}", db.display())?;
    writeln!(
        note,
        "espmail: !!! BACK UP THE KEYFILE NOW, and keep the copy apart from the database:\n\
         espmail: !!!   {}\n\
         espmail: !!! Without it, ESP Mail waiting in the database can never be read by \
         anyone: losing it makes waiting mail unreadable.",
        kp.display()
    )?;
    if config.data.keyfile_inside_data_dir() {
        writeln!(
            note,
            "espmail: note: the keyfile is inside the data directory, so a copy of that \
             directory holds the key with the mail; consider [data] keyfile = a path outside it"
        )?;
    }
    Ok(())
}

fn create_database(db: &Path, kf: &Keyfile, config: &Config) -> Result<(), OpsError> {
    let keys = Arc::new(Keyring::new(kf)?);
    let limits = mail_limits(config);
    drop(Store::open(db, Arc::clone(&keys), limits.clone())?);
    drop(Accounts::open(db, &keys, &limits)?);
    Ok(())
}

fn open_accounts(config: &Config) -> Result<Accounts, OpsError> {
    let db = require_database(config)?;
    let kf = keyfile::load(&config.data.keyfile_path())?;
    Ok(
        Accounts::open(&db, &Keyring::new(&kf)?, &mail_limits(config))?
            .with_min_password_len(config.auth.min_password_len),
    )
}

fn parse_name(name: &str) -> Result<AvatarName, OpsError> {
    AvatarName::parse(name).map_err(|reason| OpsError::BadName {
        name: name.to_owned(),
        reason,
    })
}

fn new_password(
    config: &Config,
    passwords: &mut dyn PasswordSource,
    prompt: &str,
) -> Result<Password, OpsError> {
    let pw = passwords.read_password(prompt, true)?;
    // The world's one rule, with the configured minimum (the store checks it again).
    avatar::check_new_password(&pw, config.auth.min_password_len).map_err(AccountError::from)?;
    Ok(pw)
}

/// `espmail account add|passwd|list|remove`.
pub fn account(
    args: AccountArgs,
    out: &mut dyn Write,
    note: &mut dyn Write,
    passwords: &mut dyn PasswordSource,
) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    // Each arm checks the name before opening anything, so a typo costs no password typing.
    match args.op {
        AccountOp::Add { name } => {
            let name = parse_name(&name)?;
            let accounts = open_accounts(&config)?;
            if accounts.exists(name.display())? {
                return Err(OpsError::NameTaken {
                    name: name.display().to_owned(),
                });
            }
            let pw = new_password(
                &config,
                passwords,
                &format!("New password for {}: ", name.display()),
            )?;
            match accounts.add(name.display(), &pw, SystemTime::now()) {
                Err(AccountError::NameTaken) => {
                    return Err(OpsError::NameTaken {
                        name: name.display().to_owned(),
                    })
                }
                other => other?,
            };
            writeln!(out, "added the avatar {}", name.display())?;
        }
        AccountOp::Passwd { name } => {
            let name = parse_name(&name)?;
            let accounts = open_accounts(&config)?;
            let avatar = lookup(&accounts, &name)?;
            let pw = new_password(
                &config,
                passwords,
                &format!("New password for {}: ", avatar.name.display()),
            )?;
            match accounts.set_password(name.display(), &pw) {
                Err(AccountError::NoSuchAvatar) => {
                    return Err(OpsError::NoSuchAvatar {
                        name: name.display().to_owned(),
                    })
                }
                other => other?,
            };
            writeln!(out, "changed the password of {}", avatar.name.display())?;
        }
        AccountOp::List => {
            let list = open_accounts(&config)?.list()?;
            if list.is_empty() {
                writeln!(
                    note,
                    "no avatars yet (`espmail account add NAME` creates one)"
                )?;
            }
            for info in list {
                let how = if info.has_password {
                    ""
                } else {
                    "  (no password: trusted front end only)"
                };
                writeln!(
                    out,
                    "{}  created {}{how}",
                    info.name.display(),
                    crate::utc::utc_minute(info.created)
                )?;
            }
        }
        AccountOp::Remove { name } => {
            let name = parse_name(&name)?;
            let accounts = open_accounts(&config)?;
            let avatar = lookup(&accounts, &name)?;
            let db = config.data.database_path();
            let kp = config.data.keyfile_path();
            let limits = mail_limits(&config);
            // Mail first: an avatar removed with mail still waiting would leave that mail
            // for whoever registers the name next. Again after the removal, for any mail a
            // running server saved in between.
            let mut deleted = offline::delete_all_for(&db, &kp, &limits, name.key())?;
            accounts.remove(name.display())?;
            deleted += offline::delete_all_for(&db, &kp, &limits, name.key())?;
            writeln!(
                out,
                "removed the avatar {} and {deleted} waiting ESP Mail",
                avatar.name.display()
            )?;
        }
    }
    Ok(())
}

fn lookup(accounts: &Accounts, name: &AvatarName) -> Result<Avatar, OpsError> {
    accounts
        .lookup(name.display())?
        .ok_or_else(|| OpsError::NoSuchAvatar {
            name: name.display().to_owned(),
        })
}

/// `espmail admin debug on|off|status`, `espmail admin stats`: one request to the running
/// server's admin socket; its answer is printed.
pub fn admin(args: AdminArgs, out: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let line = match args.op {
        AdminOp::Debug {
            state: DebugSwitch::On,
        } => "debug on",
        AdminOp::Debug {
            state: DebugSwitch::Off,
        } => "debug off",
        AdminOp::Debug {
            state: DebugSwitch::Status,
        } => "debug status",
        AdminOp::Stats => "stats",
    };
    let socket = args.socket.unwrap_or_else(|| config.admin_socket_path());
    let answer = runtime()?.block_on(admin::request(&socket, line))?;
    writeln!(out, "{answer}")?;
    Ok(())
}

/// `espmail stats`: counts from the database, without the keyfile; never names or text.
pub fn stats(args: &DataArgs, out: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(args)?;
    let db = require_database(&config)?;
    let s = offline::stats(&db, &mail_limits(&config))?;
    writeln!(out, "server: {}", state_note(&config))?;
    writeln!(out, "messages waiting: {}", s.waiting)?;
    writeln!(out, "quarantined: {}", s.quarantined)?;
    match s.oldest_age_days {
        Some(d) => writeln!(out, "oldest waiting: {d} days")?,
        None => writeln!(out, "oldest waiting: none")?,
    }
    writeln!(
        out,
        "database size: {} bytes ({:.1} MiB)",
        s.db_bytes,
        s.db_bytes as f64 / (1024.0 * 1024.0)
    )?;
    writeln!(out, "delivered since creation: {}", s.delivered)?;
    for (key_id, n) in &s.per_key {
        writeln!(out, "waiting under key {key_id}: {n}")?;
    }
    Ok(())
}

/// The moment to hand [`offline::purge`] so that it deletes mail that has waited `days` whole
/// days or more. A row keeps only its expiry day (send day + retention; the send time itself
/// is encrypted), and `offline::purge(t)` deletes rows whose expiry day is at most t's day;
/// so t = now + (retention - days). This assumes the retention has not changed since the
/// mail was saved, as `stats`' oldest age does.
pub fn purge_cutoff(now: SystemTime, retention_days: u32, days: u32) -> SystemTime {
    let shift = |d: u32| Duration::from_secs(u64::from(d) * SECS_PER_DAY);
    if retention_days >= days {
        now.checked_add(shift(retention_days - days)).unwrap_or(now)
    } else {
        // Nothing can be older than the epoch: a cutoff before it purges nothing.
        now.checked_sub(shift(days - retention_days))
            .map_or(UNIX_EPOCH, |t| t.max(UNIX_EPOCH))
    }
}

/// `espmail purge [--older-than DAYS]`: deletes waiting mail that has waited DAYS whole
/// days or more (default: the configured retention). Safe beside a running server (one
/// transaction through SQLite's locking); says which case it ran in.
pub fn purge(args: PurgeArgs, out: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let retention = config.mail.retention_days;
    let days = match args.older_than {
        Some(0) => return Err(OpsError::BadAge),
        Some(d) => d,
        None => retention,
    };
    let db = require_database(&config)?;
    let state = state_note(&config);
    let cutoff = purge_cutoff(SystemTime::now(), retention, days);
    let n = offline::purge(&db, &mail_limits(&config), cutoff)?;
    writeln!(
        out,
        "purged {} ESP Mail that waited {days} days or more (server {state})",
        n.mail
    )?;
    writeln!(
        out,
        "purged {} quarantined rows whose mail waited {days} days or more",
        n.quarantined
    )?;
    Ok(())
}

/// `espmail quarantine list|drop`: the rows that failed to open. `list` prints one line a
/// row (id, key id, days in quarantine, reason code, days until retention purges it; never
/// content); `drop` deletes the rows named (or all), the operator's decision, and says how
/// many. Both need no keyfile and run beside a running server.
pub fn quarantine(
    args: QuarantineArgs,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let db = require_database(&config)?;
    let limits = mail_limits(&config);
    match args.op {
        QuarantineOp::List => {
            let now = SystemTime::now();
            let rows = offline::quarantine_list(&db, &limits, now)?;
            if rows.is_empty() {
                writeln!(note, "no quarantined rows")?;
            }
            let today = crate::espmail::store::day_of(now);
            for r in rows {
                let left = u64::try_from(r.expiry_day - today).unwrap_or(0);
                writeln!(
                    out,
                    "{}  key {}  quarantined {} days ago  reason {}  purged in {left} days",
                    r.id, r.key_id, r.age_days, r.reason
                )?;
            }
        }
        QuarantineOp::Drop { ids, all } => {
            let which = if all {
                QuarantineSelect::All
            } else {
                QuarantineSelect::Ids(
                    ids.iter()
                        .map(|s| s.parse::<RowId>())
                        .collect::<Result<_, _>>()?,
                )
            };
            let n = offline::quarantine_drop(&db, &limits, &which)?;
            writeln!(out, "dropped {n} quarantined rows")?;
        }
    }
    Ok(())
}

/// `espmail rotate-key [--retire-old]`: refuses while the server runs; otherwise adds a new
/// active key to the keyfile (or finishes a rotation already under way), re-encrypts
/// every waiting message under it in restartable batches, and moves the avatar accounts
/// to it ([`Accounts::rekey`], one transaction). `--retire-old` then removes the old keys
/// that neither a message nor the accounts need.
///
/// Crash safety: the keyfile gains the new key before anything uses it; the accounts move
/// in one transaction, so until it commits they stay under the old key, which is still in
/// the keyfile (it is retired only after the move) and is found again by the accounts'
/// recorded key id. Running the command again finishes whatever was cut short.
pub fn rotate_key(args: RotateKeyArgs, out: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let db = require_database(&config)?;
    require_stopped(&config, "rotate-key")?;
    let kp = config.data.keyfile_path();
    let limits = mail_limits(&config);
    // Refuse a keyfile that does not open the accounts before changing anything.
    drop(open_accounts(&config)?);
    let report = offline::rotate(&db, &kp, &limits, ROTATE_BATCH)?;
    if report.started {
        writeln!(
            out,
            "new active key {} added to {}",
            report.active,
            kp.display()
        )?;
    } else {
        writeln!(
            out,
            "finishing the rotation to key {} already under way",
            report.active
        )?;
    }
    writeln!(
        out,
        "re-encrypted {} waiting ESP Mail under key {}",
        report.reencrypted, report.active
    )?;
    let kf = keyfile::load(&kp)?;
    let keys = Keyring::new(&kf)?;
    drop(kf);
    let mut accounts = Accounts::open(&db, &keys, &limits)?;
    let accounts_id = accounts.key_id();
    if accounts_id != report.active {
        accounts.rekey(&keys, report.active)?;
        writeln!(
            out,
            "moved the avatar accounts from key {accounts_id} to key {}",
            report.active
        )?;
    }
    // What the database says now, not what was meant: only a key it does not name retires.
    let accounts_id = accounts.key_id();
    drop(accounts);
    drop(keys);
    let mut kept = None;
    for id in &report.retirable {
        if *id == accounts_id {
            kept = Some(*id);
        } else if args.retire_old {
            offline::retire(&db, &kp, &limits, *id)?;
            writeln!(out, "retired key {id}")?;
        } else {
            writeln!(
                out,
                "key {id} is no longer needed: `espmail rotate-key --retire-old` removes it"
            )?;
        }
    }
    if let Some(key_id) = kept {
        if args.retire_old {
            return Err(OpsError::AccountsKeyInUse {
                key_id,
                active: report.active,
            });
        }
        writeln!(
            out,
            "key {key_id} stays in the keyfile: the avatar accounts are still keyed from it"
        )?;
    }
    writeln!(
        out,
        "back up the keyfile {} again now: the old copy cannot read mail sealed under key {}",
        kp.display(),
        report.active
    )?;
    for &(key_id, rows) in &report.held_by_quarantine {
        if args.retire_old {
            // Nothing was retired for this key: fail and say what resolves it, never pass
            // over it quietly (after the backup reminder, which holds either way).
            return Err(OpsError::QuarantineHoldsKey { key_id, rows });
        }
        writeln!(
            out,
            "key {key_id} stays in the keyfile: {rows} quarantined rows are under it \
             (`espmail quarantine list` shows them)"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_cutoff_shifts_by_retention_minus_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000 * SECS_PER_DAY);
        let day = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() / SECS_PER_DAY;
        assert_eq!(day(purge_cutoff(now, 90, 90)), 1_000);
        assert_eq!(day(purge_cutoff(now, 90, 30)), 1_060);
        assert_eq!(day(purge_cutoff(now, 30, 90)), 940);
        assert_eq!(purge_cutoff(now, 0, 5_000), UNIX_EPOCH);
    }

    #[test]
    fn line_passwords_drop_the_line_end_and_refuse_eof() {
        let mut input: &[u8] = b"hunter2hunter2\r\nsecond\n";
        assert_eq!(
            read_line_password(&mut input).unwrap().expose(),
            b"hunter2hunter2"
        );
        assert_eq!(read_line_password(&mut input).unwrap().expose(), b"second");
        assert!(matches!(
            read_line_password(&mut input),
            Err(OpsError::NoPassword)
        ));
    }

    #[test]
    fn serve_makes_a_keyfile_only_for_a_fresh_database() {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.data.dir = tmp.path().join("data");
        config.data.keyfile = Some(tmp.path().join("keys").join("k"));
        let (made, created) = load_or_create_keyfile(&config).unwrap();
        assert!(created);
        let (again, created) = load_or_create_keyfile(&config).unwrap();
        assert!(!created);
        assert_eq!(made.active().1.expose(), again.active().1.expose());
        // A database exists and its keyfile is gone: refused, and nothing made.
        std::fs::create_dir_all(&config.data.dir).unwrap();
        create_database(&config.data.database_path(), &made, &config).unwrap();
        std::fs::remove_file(config.data.keyfile_path()).unwrap();
        let err = load_or_create_keyfile(&config).unwrap_err();
        assert!(matches!(err, OpsError::KeyfileLost { .. }), "{err}");
        assert!(err.to_string().contains("restore"), "{err}");
        assert!(!config.data.keyfile_path().exists());
    }

    #[test]
    fn the_accounts_key_follows_the_table_through_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let limits = Limits::default();
        let mut kf = Keyfile::generate().unwrap();
        // A fresh table: the active key.
        let mut accounts = Accounts::open(&db, &Keyring::new(&kf).unwrap(), &limits).unwrap();
        assert_eq!(accounts.key_id(), 1);
        accounts
            .add(
                "Bob",
                &Password::from("password123".to_string()),
                SystemTime::now(),
            )
            .unwrap();
        // A new active key: the table is still under key 1, and that is what opens.
        kf.add_active_key().unwrap();
        let keys = Keyring::new(&kf).unwrap();
        assert_eq!(Accounts::open(&db, &keys, &limits).unwrap().key_id(), 1);
        // Moved to key 2: now key 2 is recorded, and the table opens without key 1.
        accounts.rekey(&keys, 2).unwrap();
        drop(accounts);
        kf.remove_key(1).unwrap();
        let accounts = Accounts::open(&db, &Keyring::new(&kf).unwrap(), &limits).unwrap();
        assert_eq!(accounts.key_id(), 2);
        assert!(accounts.exists("bob").unwrap());
        drop(accounts);
        // Another keyfile altogether: refused by the vault's key check.
        let other = Keyring::new(&Keyfile::generate().unwrap()).unwrap();
        let err = OpsError::from(Accounts::open(&db, &other, &limits).unwrap_err());
        assert!(
            matches!(err, OpsError::Store(StoreError::KeyMismatch { .. })),
            "{err}"
        );
    }
}
