//! The config's sections (`[server]`, `[data]`, `[auth]`, `[mail]`, `[logging]`, `[tls]`)
//! and every default, written once here (`impl Default` of each section).
//!
//! May touch: nothing (types and their defaults).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to accept players on. An IP address, not a host name.
    pub listen: SocketAddr,
    /// Connections served at once; one more is accepted and closed at once.
    pub max_connections: usize,
    /// Seconds a connection may take to log in. Generous: the real C64 launcher may sit
    /// silent for minutes before its login line (ESPMAIL.md §1).
    pub login_timeout_secs: u64,
    /// Seconds without any frame from a logged-in client before it is closed. Players
    /// idle in the Plaza for a long time, so this is an hour.
    pub idle_timeout_secs: u64,
    /// Messages queued for one connection before senders are told it is busy.
    pub outbox_len: usize,
    /// Pace output to each client at this many bytes per second, as a C64 modem link
    /// would (0 = no pacing).
    pub rate_limit_bytes_per_sec: u32,
    /// Bad frames and packets one connection may send before it is closed. Each costs a
    /// counter, not a log line; the real C64's handshake probe is not counted.
    pub max_bad_frames: u32,
    /// Connections from one address (one IPv6 /64) at once; one more is accepted and
    /// closed at once. Players behind one NAT share it.
    pub max_connections_per_address: usize,
    /// Addresses or networks the per-address cap does not apply to (e.g. a relay on this
    /// host that cannot send a PROXY header).
    pub connection_cap_exempt: Vec<AddrRange>,
    /// Connections that may hold a seat in the Plaza before they are authenticated: the
    /// real C64 sends no password in its login line, so it needs its avatar drawn to be
    /// asked for one in-world.
    pub max_unauthenticated_seats: usize,
    /// Front ends (relays, load balancers) whose connections start with a PROXY header
    /// (v1 or v2) naming the player's address; that address is then counted and logged
    /// instead of the front end's. A connection from them without one is refused.
    pub proxy_from: Vec<AddrRange>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1986),
            max_connections: 10_000,
            login_timeout_secs: 600,
            idle_timeout_secs: 3600,
            outbox_len: 512,
            rate_limit_bytes_per_sec: 0,
            // A working link (the C64 over TCP, or at 1200 baud with the odd CRC error)
            // sends a handful in a whole evening; a thousand is junk, about 10 KB of it.
            max_bad_frames: 1000,
            // A household or a club behind one NAT; far below the 127 seats of the Plaza.
            max_connections_per_address: 16,
            connection_cap_exempt: Vec::new(),
            // Logins at the in-world prompt at the same moment: a handful in a revival
            // world; the other 111 of the 127 seats stay for players who got in.
            max_unauthenticated_seats: 16,
            proxy_from: Vec::new(),
        }
    }
}

/// An IP address or a network, for the lists of addresses the server treats apart:
/// `"10.0.0.5"`, `"::1"`, or `"10.0.0.0/8"`, `"fd00::/8"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRange(ipnet::IpNet);

impl AddrRange {
    /// Whether `ip` is this address or inside this network. An IPv4 address reached over
    /// IPv6 (`::ffff:a.b.c.d`) counts as the IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl From<IpAddr> for AddrRange {
    fn from(ip: IpAddr) -> AddrRange {
        AddrRange(ipnet::IpNet::from(ip))
    }
}

impl std::str::FromStr for AddrRange {
    type Err = ipnet::AddrParseError;

    fn from_str(text: &str) -> Result<AddrRange, Self::Err> {
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(AddrRange::from(ip)),
            // `trunc` so that "10.0.0.5/8" means the network it names, 10.0.0.0/8.
            Err(_) => text.parse::<ipnet::IpNet>().map(|n| AddrRange(n.trunc())),
        }
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for AddrRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddrRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<AddrRange, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = AddrRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(NET_EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<AddrRange, E> {
                text.parse()
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(text), &self))
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// serde's "expected" for an [`AddrRange`], turned into words by [`expected_in_words`].
pub(super) const NET_EXPECTED: &str = "IP address or network";

/// A list for the settings summary: `a,b` or `none`.
pub(super) fn list_or_none<T: fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// The data directory: database, admin socket, and (by default) the keyfile.
    pub dir: PathBuf,
    /// The SQLite database. Default: `<dir>/espmail.db`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<PathBuf>,
    /// The keyfile. Default: `<dir>/keyfile`; a path outside the data directory is
    /// better, so a copy of the data directory alone does not hold the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyfile: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: PathBuf::from("./data"),
            database: None,
            keyfile: None,
        }
    }
}

impl DataConfig {
    /// The database path in effect.
    pub fn database_path(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| self.dir.join("espmail.db"))
    }

    /// The keyfile path in effect.
    pub fn keyfile_path(&self) -> PathBuf {
        self.keyfile
            .clone()
            .unwrap_or_else(|| self.dir.join("keyfile"))
    }

    /// Whether the keyfile sits inside the data directory, so that a backup of the data
    /// directory carries the key with the mail (`serve` warns about it).
    pub fn keyfile_inside_data_dir(&self) -> bool {
        self.keyfile_path().starts_with(&self.dir)
    }
}

/// How a connection is bound to an avatar (ESPMAIL.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The login line (or the password prompt) must carry the avatar's password.
    #[default]
    Password,
    /// Only peers in `trusted_peers` are believed about the name; all others are refused.
    Trusted,
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthMode::Password => "password",
            AuthMode::Trusted => "trusted",
        })
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `password` or `trusted`.
    pub mode: AuthMode,
    /// In `trusted` mode, the addresses of front ends that have already authenticated
    /// the user.
    pub trusted_peers: Vec<IpAddr>,
    /// In `trusted` mode, a file holding the secret the front end proves itself with: it
    /// sends it as `"front_end_secret"` in each login line (another process on a trusted
    /// host does not know it). Required with `mode = "trusted"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_secret_file: Option<PathBuf>,
    /// In `trusted` mode, whether the front end may log in avatars that have a password
    /// (made in `password` mode or with `account add`); off, they are refused.
    pub trusted_password_avatars: bool,
    /// In `password` mode, an unknown name with a long enough password creates the avatar.
    pub auto_register: bool,
    /// Shortest password accepted for a new avatar.
    pub min_password_len: usize,
    /// Threads that hash passwords (scrypt: 16 MiB and tens of milliseconds each);
    /// 0 = one per core. Bounds the memory logins can take: `hash_threads × 16 MiB`.
    pub hash_threads: usize,
}

impl AuthConfig {
    /// The number of hashing threads in effect (`hash_threads`, or one per core).
    pub fn hash_threads_in_effect(&self) -> usize {
        match self.hash_threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Password,
            trusted_peers: Vec::new(),
            trusted_secret_file: None,
            trusted_password_avatars: false,
            auto_register: true,
            min_password_len: 8,
            hash_threads: 0,
        }
    }
}

/// `[mail]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// Messages waiting for one recipient before further ones are refused.
    pub max_per_recipient: u32,
    /// Messages one sender may leave waiting for one recipient (so one sender cannot fill
    /// a box alone).
    pub max_per_sender: u32,
    /// Longest text stored, in bytes: the C64 speech cap (ESPMAIL.md §4).
    pub max_text_len: usize,
    /// Undelivered messages older than this many days are purged; at least 1 (every row
    /// carries its expiry day in the clear, so the purge needs no key).
    pub retention_days: u32,
    /// ESP Mail one sender may save per minute.
    pub send_rate_per_minute: u32,
    /// Seconds to answer the "ESP Mail to NAME? (Y/N)" and "Next ESP Mail" prompts.
    pub prompt_timeout_secs: u64,
}

pub use crate::limits::SPEECH_CAP;

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            max_per_recipient: 50,
            max_per_sender: 10,
            max_text_len: SPEECH_CAP,
            retention_days: 90,
            send_rate_per_minute: 10,
            prompt_timeout_secs: 120,
        }
    }
}

/// The log filter when neither the config file nor `RUST_LOG` sets one.
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing filter: `error`, `warn`, `info`, `debug`, `trace`, or directives such
    /// as `info,espmail::store=debug`. SIGHUP re-reads it. Unset: `RUST_LOG` if set,
    /// else [`DEFAULT_LOG_LEVEL`] (see [`LoggingConfig::starting_level`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// Also append logs to this file (created with mode 0600). Default: stderr only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The admin socket. Default: `<data dir>/admin.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
}

impl LoggingConfig {
    /// What [`crate::log_redact::init`] needs from this section.
    pub fn log_options(&self) -> crate::log_redact::LogOptions {
        crate::log_redact::LogOptions {
            level: self.level_or_default().to_owned(),
            file: self.file.clone(),
        }
    }

    /// `level` if set, else [`DEFAULT_LOG_LEVEL`].
    pub fn level_or_default(&self) -> &str {
        self.level.as_deref().unwrap_or(DEFAULT_LOG_LEVEL)
    }

    /// The filter `serve` starts with and SIGHUP returns to: `level` when the file sets
    /// it; else `rust_log` (the `RUST_LOG` variable, as Rust programs read it) when it is
    /// set and not empty; else [`DEFAULT_LOG_LEVEL`]. `RUST_LOG` is checked as strictly as
    /// the file's level, so a typo there is an error, not quiet logs.
    pub fn starting_level(&self, rust_log: Option<&str>) -> Result<String, ConfigError> {
        if let Some(level) = &self.level {
            return Ok(level.clone());
        }
        match rust_log.map(str::trim).filter(|v| !v.is_empty()) {
            Some(value) => match crate::log_redact::check_filter(value) {
                Ok(()) => Ok(value.to_owned()),
                Err(e) => Err(ConfigError::Env {
                    name: "RUST_LOG",
                    message: e.to_string(),
                }),
            },
            None => Ok(DEFAULT_LOG_LEVEL.to_owned()),
        }
    }
}

/// `[tls]`: a second listener that speaks TLS (for players behind `espmail tunnel`); the
/// plain listener stays. `serve` opens it beside the plain one; SIGHUP reloads the
/// certificate and key from these paths.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address and port of the TLS listener; none (the default) means no TLS listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The certificate (then any intermediates), PEM. Required with `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key, PEM, unencrypted (keep it mode 0600). Required
    /// with `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Tell players connected in the clear from another machine, at login, that their
    /// connection is not encrypted.
    pub plain_notice: bool,
    /// Seconds a new TLS connection may take to finish its handshake.
    pub handshake_timeout_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: None,
            cert: None,
            key: None,
            plain_notice: true,
            handshake_timeout_secs: 10,
        }
    }
}

/// Values from the command line, which beat the file (`serve --listen`, `--data-dir`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir DIR`. Paths left to their defaults (database, keyfile, admin socket)
    /// follow it; paths set explicitly in the file stay where the file put them.
    pub data_dir: Option<PathBuf>,
}
