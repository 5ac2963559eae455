//! The command line, as clap derive types: what the operator can type, and nothing else.
//!
//! No logic lives here; `main.rs` turns a parsed [`Cli`] into work. Exit codes are
//! 0 (done), 1 (failed) and 2 (usage: clap's own exit code for a bad command line).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// espmail: a Habitat-lineage world server with encrypted ESP Mail for offline avatars.
#[derive(Debug, Parser)]
#[command(name = "espmail", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: TopCommand,
}

/// Every subcommand: the world's ([`Command`]), then the ones about the program itself,
/// generated from these definitions (`src/cli_docs.rs`).
#[derive(Debug, Subcommand)]
pub enum TopCommand {
    /// The server, its operator commands and the text client.
    #[command(flatten)]
    World(Command),
    /// Print a shell completion script on stdout (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on stdout, or write every page to a directory.
    Man(ManArgs),
}

/// `espmail completions SHELL`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `espmail man [COMMAND...] [--out-dir DIR]`.
#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// The page of one command, e.g. `serve` or `account add` (default: espmail(1)).
    #[arg(value_name = "COMMAND", conflicts_with = "out_dir")]
    pub command: Vec<String>,
    /// Write every page (espmail.1, espmail-serve.1, ...) into DIR instead.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<std::path::PathBuf>,
}

/// The world's subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the world server (defaults: listen 127.0.0.1:1986, data in ./data).
    Serve(ServeArgs),
    /// Create the keyfile (mode 0600) and the database; never overwrites a keyfile (run
    /// again on a complete setup, it says so and exits 0). With --tls, a self-signed
    /// certificate too.
    Init(InitArgs),
    /// Check the config, keyfile, data directory and listen address without starting
    /// the server: one OK or FAIL line each (with the fix); exit 1 on any problem.
    Check(CheckArgs),
    /// Manage avatars: add, passwd, list, remove.
    Account(AccountArgs),
    /// Talk to a running server through its admin socket.
    Admin(AdminArgs),
    /// Offline counts: messages waiting, quarantined, oldest age, database size.
    Stats(DataArgs),
    /// Delete waiting ESP Mail older than a number of days.
    Purge(PurgeArgs),
    /// Re-encrypt waiting ESP Mail under a new keyfile key.
    RotateKey(RotateKeyArgs),
    /// Rows that failed to open: list them, or drop them (an operator's decision).
    Quarantine(QuarantineArgs),
    /// A text client that speaks the real protocol, to try the world without a C64.
    Talk(TalkArgs),
    /// On the player's machine: the old client connects here, the server is reached over TLS.
    Tunnel(TunnelArgs),
}

/// Where the configuration and the data live; shared by most subcommands.
#[derive(Debug, Clone, Default, Args)]
pub struct DataArgs {
    /// Configuration file (TOML); without it, /etc/espmail/espmail.toml when that exists,
    /// else the embedded defaults.
    #[arg(
        short,
        long,
        value_name = "FILE",
        global = true,
        env = "ESPMAIL_CONFIG"
    )]
    pub config: Option<PathBuf>,
    /// Data directory (database, and the keyfile unless the config puts it elsewhere).
    #[arg(long, value_name = "DIR", global = true, env = "ESPMAIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `espmail serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// Config file and data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Address to listen on (overrides the config file); port 0 picks a free port.
    #[arg(long, value_name = "ADDR", env = "ESPMAIL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Start with debug logging on (players are told at login).
    #[arg(short, long, conflicts_with = "quiet")]
    pub debug: bool,
    /// Log warnings and errors only.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `espmail init`.
#[derive(Debug, Clone, Default, Args)]
pub struct InitArgs {
    /// Config file and data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Also make a self-signed TLS certificate and key for this host name (or IP address)
    /// at [tls] cert and key (default DATA_DIR/tls/server.crt and server.key; key mode
    /// 0600), and print the fingerprint players pin. Existing files are kept.
    #[arg(long, value_name = "HOSTNAME")]
    pub tls: Option<String>,
}

/// `espmail check`.
#[derive(Debug, Clone, Default, Args)]
pub struct CheckArgs {
    /// Config file and data directory, as `serve` would be given them.
    #[command(flatten)]
    pub data: DataArgs,
    /// The address `serve --listen` would be given (overrides the config file).
    #[arg(long, value_name = "ADDR", env = "ESPMAIL_LISTEN")]
    pub listen: Option<SocketAddr>,
}

/// `espmail account …`.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// Config file and data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// The account operation.
    #[command(subcommand)]
    pub op: AccountOp,
}

/// What to do to an account.
#[derive(Debug, Subcommand)]
pub enum AccountOp {
    /// Create an avatar; the password is read from the terminal or stdin.
    Add {
        /// Avatar name: 1-16 of A-Z a-z 0-9 space - _ .
        name: String,
    },
    /// Set a new password for an avatar (read from the terminal or stdin).
    Passwd {
        /// Avatar name.
        name: String,
    },
    /// List avatars.
    List,
    /// Remove an avatar and its waiting ESP Mail.
    Remove {
        /// Avatar name.
        name: String,
    },
}

/// `espmail admin …`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Config file and data directory (to find the admin socket).
    #[command(flatten)]
    pub data: DataArgs,
    /// The admin socket (default: the config's logging.admin_socket, else DATA_DIR/admin.sock).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// The admin request.
    #[command(subcommand)]
    pub op: AdminOp,
}

/// Requests to a running server.
#[derive(Debug, Subcommand)]
pub enum AdminOp {
    /// Switch debug logging of the running server.
    Debug {
        /// on, off or status.
        #[arg(value_enum)]
        state: DebugSwitch,
    },
    /// Live counts from the running server.
    Stats,
}

/// `admin debug on|off|status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DebugSwitch {
    /// Switch debug logging on (connected avatars are told).
    On,
    /// Switch debug logging off.
    Off,
    /// Say whether debug logging is on.
    Status,
}

/// `espmail purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// Config file and data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Delete waiting ESP Mail older than this many days (default: the configured retention).
    #[arg(long, value_name = "DAYS")]
    pub older_than: Option<u32>,
}

/// `espmail rotate-key`.
#[derive(Debug, Args)]
pub struct RotateKeyArgs {
    /// Config file and data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// Also drop the old key once every message is re-encrypted.
    #[arg(long)]
    pub retire_old: bool,
}

/// `espmail quarantine …`.
#[derive(Debug, Args)]
pub struct QuarantineArgs {
    /// Config file and data directory.
    #[command(flatten)]
    pub data: DataArgs,
    /// The quarantine operation.
    #[command(subcommand)]
    pub op: QuarantineOp,
}

/// What to do with quarantined rows.
#[derive(Debug, Subcommand)]
pub enum QuarantineOp {
    /// Ids, key ids, days in quarantine and reason codes; never content.
    List,
    /// Delete quarantined rows for good: the ids `quarantine list` prints, or --all.
    Drop {
        /// Row ids (hex) to drop.
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<String>,
        /// Drop every quarantined row.
        #[arg(long)]
        all: bool,
    },
}

/// `espmail talk`.
#[derive(Debug, Args)]
#[command(
    after_help = "Type to talk; TO:NAME starts ESP to NAME (an empty line ends it); \
/help, /who and /quit stay on your screen (// says a line starting with /).\n\n\
Exit codes: 0 when you leave (/quit, Ctrl-D, Ctrl-C) or the server ends the session saying why \
(shutting down, logged in elsewhere); 1 when it cannot connect, the login is refused or the \
connection is lost; 2 for a bad command line, a name outside the rules included."
)]
pub struct TalkArgs {
    /// Server address, HOST:PORT.
    #[arg(value_name = "HOST:PORT")]
    pub server: String,
    /// Avatar name: 1-16 characters (A-Z a-z 0-9, space, '-', '_' and '.')
    #[arg(long, value_parser = crate::talk::ui::parse_name)]
    pub name: String,
    /// Password, to answer the server's password questions without asking (otherwise
    /// asked at the terminal, not shown). Prefer the environment to the command line.
    #[arg(long, env = "ESPMAIL_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Speak TLS to the server's TLS listener (`[tls] listen`), checked as --pin or --ca
    /// say (either implies --tls), else by the system's CAs and the host name.
    #[arg(long)]
    pub tls: bool,
    /// How the server's certificate is checked (with --tls).
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// How a TLS client (`tunnel`, `talk --tls`) checks the server: by default the system's CAs
/// and the host name.
#[derive(Debug, Clone, Default, Args)]
pub struct VerifyArgs {
    /// Trust exactly the certificate with this SHA-256 fingerprint (as the operator
    /// published it; colons optional, any case), e.g. for a self-signed server.
    #[arg(long, value_name = "sha256:HEX", conflicts_with = "ca")]
    pub pin: Option<crate::tls::Fingerprint>,
    /// Trust the CA certificates (or the server's self-signed certificate) in this PEM
    /// file instead of the system's; the host name is still checked.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

impl VerifyArgs {
    /// The library's verification setting.
    pub fn verify(self) -> crate::tls::Verify {
        use crate::tls::Verify;
        match (self.pin, self.ca) {
            (Some(pin), _) => Verify::Pin(pin),
            (None, Some(ca)) => Verify::CaFile(ca),
            (None, None) => Verify::SystemCas,
        }
    }

    /// Whether either option was given.
    pub fn is_set(&self) -> bool {
        self.pin.is_some() || self.ca.is_some()
    }
}

/// `espmail tunnel`.
#[derive(Debug, Args)]
pub struct TunnelArgs {
    /// The server's TLS listener, HOST:PORT.
    #[arg(value_name = "SERVER:PORT")]
    pub server: String,
    /// Where the old client connects (VICE: -rsdev1 127.0.0.1:1986). Loopback keeps it to
    /// this machine.
    #[arg(long, value_name = "ADDR", default_value_t = crate::tunnel::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// How the server's certificate is checked.
    #[command(flatten)]
    pub verify: VerifyArgs,
    /// Seconds allowed to reach the server and finish the TLS handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub connect_timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_takes_listen_and_data_dir() {
        let cli = Cli::try_parse_from([
            "espmail",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        let TopCommand::World(Command::Serve(args)) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(args.data.data_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn a_bad_address_is_a_usage_error() {
        let err = Cli::try_parse_from(["espmail", "serve", "--listen", "nowhere"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn debug_and_quiet_conflict() {
        let err = Cli::try_parse_from(["espmail", "serve", "-d", "-q"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn account_and_admin_parse() {
        let cli =
            Cli::try_parse_from(["espmail", "account", "add", "Bob", "--data-dir", "d"]).unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::World(Command::Account(AccountArgs { op: AccountOp::Add { ref name }, .. })) if name == "Bob"
        ));
        let cli = Cli::try_parse_from(["espmail", "admin", "debug", "on"]).unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::World(Command::Admin(AdminArgs {
                op: AdminOp::Debug {
                    state: DebugSwitch::On
                },
                ..
            }))
        ));
        let cli = Cli::try_parse_from(["espmail", "quarantine", "drop", "ab01", "cd02"]).unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::World(Command::Quarantine(QuarantineArgs { op: QuarantineOp::Drop { ref ids, all: false }, .. }))
                if ids == &["ab01", "cd02"]
        ));
        let cli = Cli::try_parse_from(["espmail", "quarantine", "drop", "--all"]).unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::World(Command::Quarantine(QuarantineArgs { op: QuarantineOp::Drop { ref ids, all: true }, .. }))
                if ids.is_empty()
        ));
        for bad in [
            &["quarantine", "drop"][..],
            &["quarantine", "drop", "ab", "--all"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("espmail").chain(bad.iter().copied()))
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        let cli = Cli::try_parse_from(["espmail", "tunnel", "w.example.org:1987"]).unwrap();
        let TopCommand::World(Command::Tunnel(t)) = cli.command else {
            panic!("not tunnel")
        };
        assert_eq!(t.listen, "127.0.0.1:1986".parse().unwrap());
        assert_eq!(
            (t.verify.pin, t.verify.ca, t.connect_timeout),
            (None, None, 10)
        );
        let pin = format!("sha256:{}", "ab".repeat(32));
        let cli = Cli::try_parse_from([
            "espmail",
            "tunnel",
            "h:1",
            "--pin",
            &pin,
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::World(Command::Tunnel(TunnelArgs {
                verify: VerifyArgs { pin: Some(fp), .. },
                ..
            })) if fp.as_bytes() == &[0xAB; 32]
        ));
        for bad in [
            &["tunnel", "h:1", "--pin", "sha256:abcd"][..],
            &["tunnel", "h:1", "--pin", &pin, "--ca", "ca.pem"],
            &["tunnel", "h:1", "--connect-timeout", "0"],
            &["tunnel"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("espmail").chain(bad.iter().copied()))
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
        let cli = Cli::try_parse_from(["espmail", "purge", "--older-than", "30"]).unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::World(Command::Purge(PurgeArgs {
                older_than: Some(30),
                ..
            }))
        ));
    }

    #[test]
    fn completions_and_man_parse() {
        let cli = Cli::try_parse_from(["espmail", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::Completions(CompletionsArgs {
                shell: clap_complete::Shell::Zsh
            })
        ));
        let err = Cli::try_parse_from(["espmail", "completions", "tcsh"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let cli = Cli::try_parse_from(["espmail", "man", "account", "add"]).unwrap();
        assert!(matches!(
            cli.command,
            TopCommand::Man(ManArgs { ref command, out_dir: None }) if command == &["account", "add"]
        ));
        let err =
            Cli::try_parse_from(["espmail", "man", "serve", "--out-dir", "/tmp/m"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
