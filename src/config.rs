//! The server's settings: one strict TOML file (`config/espmail.toml` documents every key
//! with its default), embedded defaults, and command-line overrides, in that order of
//! weakness: flags > file > defaults.
//!
//! Strict on purpose: an operator who typed `lisen` instead of `listen` learns it at
//! startup, with the file, line and the keys that are allowed, instead of running on a
//! default they did not mean. Every table uses `deny_unknown_fields` (and no `flatten`,
//! which would silently disable it). [`Config::default`] holds each number once.
//!
//! May touch: the config file (read only). Nothing else.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything `espmail serve` can be told. Sections mirror the TOML tables.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the listening socket and what the network may push against.
    pub server: ServerConfig,
    /// `[data]`: where the database and the keyfile live.
    pub data: DataConfig,
    /// `[auth]`: who is believed about their avatar name.
    pub auth: AuthConfig,
    /// `[mail]`: ESP Mail limits.
    pub mail: MailConfig,
    /// `[logging]`: level, optional file, admin socket.
    pub logging: LoggingConfig,
    /// `[tls]`: the TLS listener beside the plain one.
    pub tls: TlsConfig,
}

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
const NET_EXPECTED: &str = "IP address or network";

/// A list for the settings summary: `a,b` or `none`.
fn list_or_none<T: fmt::Display>(items: &[T]) -> String {
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
    /// In `password` mode, an unknown name with a long enough password creates the avatar.
    pub auto_register: bool,
    /// Shortest password accepted for a new avatar.
    pub min_password_len: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Password,
            trusted_peers: Vec::new(),
            auto_register: true,
            min_password_len: 8,
        }
    }
}

/// `[mail]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    /// Messages waiting for one recipient before further ones are refused.
    pub max_per_recipient: u32,
    /// Longest text stored, in bytes: the C64 speech cap (ESPMAIL.md §4).
    pub max_text_len: usize,
    /// Undelivered messages older than this many days are purged (0 = kept forever).
    pub retention_days: u32,
    /// ESP Mail one sender may save per minute.
    pub send_rate_per_minute: u32,
    /// Seconds to answer the "ESP Mail to NAME? (Y/N)" and "Next ESP Mail" prompts.
    pub prompt_timeout_secs: u64,
}

/// The C64's speech balloon holds at most this many bytes (ESPMAIL.md §4).
pub const SPEECH_CAP: usize = 114;

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            max_per_recipient: 50,
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

/// Why a configuration could not be used. Each message names the file and what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    // The system's words are in the message, so `cause` is not a `source`: a chain printed
    // with `{:#}` would say them twice.
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        cause: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong kind.
    #[error("config file {}, line {line}, column {column}{}: {message}", path.display(), section_suffix(.section))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending key or value.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The `[table]` the line is in, when there is one.
        section: Option<String>,
        /// What is wrong, with the allowed keys or values.
        message: String,
    },
    /// An environment variable read as configuration has a value that cannot be used.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable, e.g. `RUST_LOG`.
        name: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// Parsed, but a value is out of its allowed range or contradicts another.
    #[error("{}{key}: {message}", origin_prefix(.path))]
    Invalid {
        /// The file, when the value came from one.
        path: Option<PathBuf>,
        /// The key, as `section.key`.
        key: &'static str,
        /// What is allowed.
        message: String,
    },
}

fn section_suffix(section: &Option<String>) -> String {
    match section {
        Some(s) => format!(" (in [{s}])"),
        None => String::new(),
    }
}

fn origin_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("config file {}: ", p.display()),
        None => "config: ".to_owned(),
    }
}

impl Config {
    /// Reads and checks a config file. Keys left out take their defaults.
    pub fn read(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // Through serde_path_to_error, so a value of the wrong kind is reported with its key.
        let config: Config = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| parse_error(text, path, &e.path().to_string(), e.inner()))?;
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { key, message, .. } => ConfigError::Invalid {
                path: Some(path.to_owned()),
                key,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// The file if one is given, else the defaults; then the flags on top, then checked.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(p) => Config::read(p)?,
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate().map_err(|e| match (e, path) {
            (ConfigError::Invalid { key, message, .. }, Some(p)) => ConfigError::Invalid {
                path: Some(p.to_owned()),
                key,
                message,
            },
            (other, _) => other,
        })?;
        Ok(config)
    }

    /// Applies command-line values over whatever the file said.
    pub fn apply(&mut self, overrides: &Overrides) {
        if let Some(listen) = overrides.listen {
            self.server.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            self.data.dir = dir.clone();
        }
    }

    /// Cross-field and range checks that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                path: None,
                key,
                message: message.to_owned(),
            })
        };
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.server.login_timeout_secs == 0 {
            return invalid("server.login_timeout_secs", "must be at least 1");
        }
        if self.server.idle_timeout_secs == 0 {
            return invalid("server.idle_timeout_secs", "must be at least 1");
        }
        if self.server.outbox_len == 0 {
            return invalid("server.outbox_len", "must be at least 1");
        }
        if self.server.max_bad_frames == 0 {
            return invalid("server.max_bad_frames", "must be at least 1");
        }
        if self.server.max_connections_per_address == 0 {
            return invalid("server.max_connections_per_address", "must be at least 1");
        }
        if self.server.max_unauthenticated_seats == 0 {
            return invalid(
                "server.max_unauthenticated_seats",
                "must be at least 1 (a C64 logging in without a password needs a seat to be \
                 asked for it)",
            );
        }
        if self.auth.mode == AuthMode::Trusted && self.auth.trusted_peers.is_empty() {
            return invalid(
                "auth.trusted_peers",
                "mode = \"trusted\" refuses every peer not listed here, so list at least \
                 one address (e.g. trusted_peers = [\"127.0.0.1\"]) or use mode = \"password\"",
            );
        }
        if !(1..=256).contains(&self.auth.min_password_len) {
            return invalid(
                "auth.min_password_len",
                "must be between 1 and 256 (the longest password accepted)",
            );
        }
        if self.mail.max_per_recipient == 0 {
            return invalid("mail.max_per_recipient", "must be at least 1");
        }
        if !(1..=SPEECH_CAP).contains(&self.mail.max_text_len) {
            return invalid(
                "mail.max_text_len",
                &format!("must be between 1 and {SPEECH_CAP} (the C64 speech balloon)"),
            );
        }
        if self.mail.retention_days == 0 {
            // Every stored row carries an expiry day (it is the only clear-text date), so
            // "keep forever" has no representation: ask for a number instead.
            return invalid(
                "mail.retention_days",
                "must be at least 1 (undelivered mail is kept at most this many days)",
            );
        }
        if self.mail.send_rate_per_minute == 0 {
            return invalid("mail.send_rate_per_minute", "must be at least 1");
        }
        if self.mail.prompt_timeout_secs == 0 {
            return invalid("mail.prompt_timeout_secs", "must be at least 1");
        }
        if let Some(level) = &self.logging.level {
            if let Err(e) = crate::log_redact::check_filter(level) {
                return invalid("logging.level", &e.to_string());
            }
        }
        if let Some(listen) = self.tls.listen {
            if self.tls.cert.is_none() {
                return invalid(
                    "tls.cert",
                    "a TLS listener needs a certificate: set cert (PEM) and key, e.g. the \
                     pair `espmail init --tls HOSTNAME` makes",
                );
            }
            if self.tls.key.is_none() {
                return invalid(
                    "tls.key",
                    "a TLS listener needs the certificate's private key (PEM)",
                );
            }
            if listen == self.server.listen && listen.port() != 0 {
                return invalid(
                    "tls.listen",
                    "must differ from server.listen: the plain listener stays, on its own port",
                );
            }
        }
        if self.tls.handshake_timeout_secs == 0 {
            return invalid("tls.handshake_timeout_secs", "must be at least 1");
        }
        Ok(())
    }

    /// Makes every configured path absolute against `cwd` (the working directory), so that
    /// what `serve` prints and opens does not depend on where a service manager started it.
    /// `.` components are dropped; `..` and symbolic links are left as they are. Returns the
    /// keys whose value was relative (paths derived from `data.dir` follow it).
    pub fn make_paths_absolute(&mut self, cwd: &Path) -> Vec<&'static str> {
        let mut relative = Vec::new();
        let mut fix = |key: &'static str, path: &mut PathBuf| {
            if path.is_relative() {
                relative.push(key);
            }
            *path = cwd
                .join(&*path)
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect();
        };
        fix("data.dir", &mut self.data.dir);
        if let Some(p) = &mut self.data.database {
            fix("data.database", p);
        }
        if let Some(p) = &mut self.data.keyfile {
            fix("data.keyfile", p);
        }
        if let Some(p) = &mut self.logging.file {
            fix("logging.file", p);
        }
        if let Some(p) = &mut self.logging.admin_socket {
            fix("logging.admin_socket", p);
        }
        // Read again at each SIGHUP, so they must not depend on the directory either.
        if let Some(p) = &mut self.tls.cert {
            fix("tls.cert", p);
        }
        if let Some(p) = &mut self.tls.key {
            fix("tls.key", p);
        }
        relative
    }

    /// The defaults with every optional key set (to `"x"`, or the default level), so that
    /// serializing it names every key there is: for tests that walk all keys.
    #[doc(hidden)]
    pub fn with_every_key() -> Config {
        let mut full = Config::default();
        full.data.database = Some("x".into());
        full.data.keyfile = Some("x".into());
        full.logging.level = Some(DEFAULT_LOG_LEVEL.into());
        full.logging.file = Some("x".into());
        full.logging.admin_socket = Some("x".into());
        full.tls.listen = Some(SocketAddr::from(([0, 0, 0, 0], 1987)));
        full.tls.cert = Some("x".into());
        full.tls.key = Some("x".into());
        full
    }

    /// The admin socket path in effect.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.logging
            .admin_socket
            .clone()
            .unwrap_or_else(|| self.data.dir.join("admin.sock"))
    }

    /// The effective settings that are not secret, as a few lines for `serve` to print at
    /// startup. Paths are shown (they are not secrets); key bytes never exist here.
    pub fn summary(&self) -> String {
        let s = &self.server;
        let m = &self.mail;
        let a = &self.auth;
        let peers = if a.trusted_peers.is_empty() {
            "none".to_owned()
        } else {
            a.trusted_peers
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "server: listen={} max_connections={} login_timeout={}s idle_timeout={}s \
             outbox_len={} rate_limit={} max_bad_frames={} max_connections_per_address={} \
             connection_cap_exempt={} max_unauthenticated_seats={} proxy_from={}\n\
             data: dir={} database={} keyfile={}\n\
             auth: mode={} trusted_peers={} auto_register={} min_password_len={}\n\
             mail: max_per_recipient={} max_text_len={} retention_days={} \
             send_rate_per_minute={} prompt_timeout={}s\n\
             logging: level={} file={} admin_socket={}\n\
             tls: {}",
            s.listen,
            s.max_connections,
            s.login_timeout_secs,
            s.idle_timeout_secs,
            s.outbox_len,
            match s.rate_limit_bytes_per_sec {
                0 => "off".to_owned(),
                n => format!("{n}B/s"),
            },
            s.max_bad_frames,
            s.max_connections_per_address,
            list_or_none(&s.connection_cap_exempt),
            s.max_unauthenticated_seats,
            list_or_none(&s.proxy_from),
            self.data.dir.display(),
            self.data.database_path().display(),
            self.data.keyfile_path().display(),
            a.mode,
            peers,
            a.auto_register,
            a.min_password_len,
            m.max_per_recipient,
            m.max_text_len,
            m.retention_days,
            m.send_rate_per_minute,
            m.prompt_timeout_secs,
            self.logging.level_or_default(),
            self.logging
                .file
                .as_ref()
                .map_or_else(|| "stderr only".to_owned(), |p| p.display().to_string()),
            self.admin_socket_path().display(),
            self.tls_summary(),
        )
    }

    fn tls_summary(&self) -> String {
        let t = &self.tls;
        let shown = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("none".to_owned(), |p| p.display().to_string())
        };
        match t.listen {
            None => format!("listen=off plain_notice={}", t.plain_notice),
            Some(l) => format!(
                "listen={l} cert={} key={} plain_notice={} handshake_timeout={}s",
                shown(&t.cert),
                shown(&t.key),
                t.plain_notice,
                t.handshake_timeout_secs
            ),
        }
    }
}

/// Turns toml's multi-line error into one line naming the file, line, column and table,
/// with serde's wording put into words an operator reads (see [`in_words`]). `key` is the
/// dotted path of the value that failed (`mail.retention_days`), empty at the top.
fn parse_error(text: &str, path: &Path, key: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map_or(0, |r| r.start).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .and_then(|l| l.strip_prefix('['))
        .and_then(|l| l.split(']').next())
        .map(|s| s.trim().to_owned())
        // The error may point inside the header itself (`[mial]`): no table yet.
        .filter(|s| !s.is_empty());
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        message: in_words(e.message().trim(), key, section.as_deref()),
        section,
    }
}

/// What `listen` must look like (serde says "socket address").
const LISTEN_WORDS: &str = "an IP address and port, such as 127.0.0.1:1986 or [::]:1986 \
                            (host names are not accepted)";

/// What each of `trusted_peers` must look like (serde says "IP address").
const PEER_WORDS: &str = "an IP address in quotes, such as \"127.0.0.1\" or \"::1\" \
                          (host names are not accepted)";

/// What each entry of an address list must look like ([`AddrRange`]).
const NET_WORDS: &str = "an IP address or network in quotes, such as \"10.0.0.5\", \
                         \"10.0.0.0/8\" or \"::1\" (host names are not accepted)";

/// serde's messages name Rust types ("expected u32", "expected socket address") and use
/// Rust words ("variant", "field"); an operator editing a TOML file should read what the
/// value must be, in words: "retention_days must be a whole number from 0 to 4294967295,
/// not \"ninety\"". Messages of other shapes (TOML syntax errors) pass through.
fn in_words(message: &str, key: &str, section: Option<&str>) -> String {
    // The key as the operator wrote it: the section is named separately ("in [mail]").
    let name = match key.rsplit_once('.') {
        Some((_, last)) => last,
        None if key.is_empty() || key == "?" => "this value",
        None => key,
    };
    match message {
        "invalid socket address syntax" => return format!("{name} must be {LISTEN_WORDS}"),
        "invalid IP address syntax" => return format!("{name} must be {PEER_WORDS}"),
        // toml's words for a non-string where a choice of words (an enum) belongs.
        "wanted string or table" => {
            let choices = match name {
                "mode" => "\"password\" or \"trusted\"",
                _ => "one of the words config/espmail.toml lists for it, in quotes",
            };
            return format!("{name} must be {choices}");
        }
        _ => {}
    }
    let kinds = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.rsplit_once(", expected "));
    if let Some((found, expected)) = kinds {
        return format!(
            "{name} must be {}, not {}",
            expected_in_words(expected),
            found_in_words(found)
        );
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        if let Some((found, allowed)) = rest.split_once(", expected ") {
            let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
            return format!("{name} must be {allowed}, not {found}");
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let (found, allowed) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let allowed = allowed.strip_prefix("one of ").unwrap_or(allowed);
        // The path ends in the unknown key itself: a top-level one is a section.
        let table = key.rsplit_once('.').map(|(table, _)| table);
        return match table {
            None => format!("unknown section {found} (the sections are {allowed})"),
            // Already named by the `(in [table])` of the message.
            Some(t) if Some(t) == section => {
                format!("unknown key {found} (the keys allowed here are {allowed})")
            }
            Some(t) => {
                format!("unknown key {found} in [{t}] (the keys allowed there are {allowed})")
            }
        };
    }
    message.to_owned()
}

/// serde's name for what was expected, in words.
fn expected_in_words(expected: &str) -> String {
    let words = match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        // TOML integers stop at 2^63-1, so only negative numbers can miss these.
        "u64" | "u128" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "a boolean" => "true or false",
        "a string" => "text in quotes",
        "path string" => "a path in quotes",
        "a sequence" => "a list in brackets, such as [\"127.0.0.1\"]",
        "socket address" => LISTEN_WORDS,
        "IP address" => PEER_WORDS,
        NET_EXPECTED => NET_WORDS,
        "enum AuthMode" => "\"password\" or \"trusted\"",
        other if other.starts_with("struct ") => "a section (a table)",
        other => other,
    };
    words.to_owned()
}

/// serde's description of the value found, in words.
fn found_in_words(found: &str) -> String {
    let quoted = |kind: &str| {
        found
            .strip_prefix(kind)
            .and_then(|v| v.strip_prefix(" `"))
            .and_then(|v| v.strip_suffix('`'))
            .map(str::to_owned)
    };
    if let Some(v) = quoted("integer")
        .or_else(|| quoted("floating point"))
        .or_else(|| quoted("boolean"))
    {
        return v;
    }
    if let Some(text) = found.strip_prefix("string ") {
        return text.to_owned();
    }
    match found {
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_key_file_line_and_section() {
        let err = parse("[server]\nmax_connections = 5\nlisen = \"0.0.0.0:1\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("test.toml"), "{shown}");
        assert!(shown.contains("line 3"), "{shown}");
        assert!(shown.contains("`lisen`"), "{shown}");
        assert!(shown.contains("[server]"), "{shown}");
        assert!(shown.contains("`listen`"), "allowed keys listed: {shown}");
        assert!(!shown.contains('\n'), "one line: {shown}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let err = parse("[mial]\nmax_per_recipient = 3\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("`mial`"), "{shown}");
        assert!(shown.contains("line 1"), "{shown}");
    }

    #[test]
    fn bad_auth_mode_says_what_is_allowed() {
        let err = parse("[auth]\nmode = \"passwd\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("line 2"), "{shown}");
        assert!(shown.contains("`password`"), "{shown}");
        assert!(shown.contains("`trusted`"), "{shown}");
    }

    #[test]
    fn wrong_type_is_reported_with_line() {
        let err = parse("\n\n[mail]\nretention_days = \"ninety\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("line 4"), "{shown}");
        assert!(shown.contains("[mail]"), "{shown}");
    }

    /// Words of serde's and Rust's that an operator editing TOML should never meet.
    const RUST_WORDS: [&str; 27] = [
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "usize",
        "i8",
        "i16",
        "i32",
        "i64",
        "isize",
        "f32",
        "f64",
        "String",
        "PathBuf",
        "SocketAddr",
        "IpAddr",
        "Vec",
        "Option",
        "struct",
        "enum",
        "variant",
        "sequence",
        "syntax",
        "wanted",
        "invalid",
        "field",
    ];

    fn rust_words_in(message: &str) -> Vec<&'static str> {
        let tokens: Vec<&str> = message
            .split(|c: char| !c.is_ascii_alphanumeric())
            .collect();
        RUST_WORDS
            .iter()
            .copied()
            .filter(|w| tokens.contains(w))
            .collect()
    }

    #[test]
    fn every_type_error_is_in_words_and_names_its_key() {
        let value = toml::Value::try_from(Config::with_every_key()).unwrap();
        let wrong = [
            "\"text\"",
            "\"\"",
            "-1",
            "1.5",
            "true",
            "99999999999",
            "[1]",
            "[\"a\", 2]",
            "{ a = 1 }",
            "1979-05-27",
        ];
        let mut refused = 0;
        for (section, keys) in value.as_table().unwrap() {
            for bad in &wrong {
                // serde lets a list fill a table's keys in order (`mail = [1]`): not a
                // type error, so nothing to word here.
                let Err(err) = parse(&format!("{section} = {bad}\n")) else {
                    continue;
                };
                let err = err.to_string();
                assert!(rust_words_in(&err).is_empty(), "{section} = {bad}: {err}");
                assert!(err.contains(section.as_str()), "{section} = {bad}: {err}");
            }
            for key in keys.as_table().unwrap().keys() {
                for bad in &wrong {
                    let Err(err) = parse(&format!("[{section}]\n{key} = {bad}\n")) else {
                        continue; // e.g. a path may be any text
                    };
                    let err = err.to_string();
                    refused += 1;
                    assert!(
                        rust_words_in(&err).is_empty(),
                        "[{section}] {key} = {bad}: {:?} in {err}",
                        rust_words_in(&err)
                    );
                    assert!(
                        err.contains(key.as_str()),
                        "[{section}] {key} = {bad}: {err}"
                    );
                }
            }
        }
        assert!(refused > 100, "only {refused} refusals checked");
    }

    #[test]
    fn numbers_say_whole_number_and_the_range() {
        let err = parse("[mail]\nretention_days = \"ninety\"\n").unwrap_err();
        assert!(
            err.to_string().ends_with(
                "retention_days must be a whole number from 0 to 4294967295, not \"ninety\""
            ),
            "{err}"
        );
        let err = parse("[server]\nmax_connections = -3\n").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("max_connections must be a whole number, 0 or more, not -3"),
            "{err}"
        );
        let err = parse("[auth]\nauto_register = 1\n").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("auto_register must be true or false, not 1"),
            "{err}"
        );
    }

    #[test]
    fn listen_and_peers_give_an_example_and_refuse_host_names() {
        let err = parse("[server]\nlisten = \"localhost:1986\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains(
                "listen must be an IP address and port, such as 127.0.0.1:1986 or [::]:1986 \
                 (host names are not accepted)"
            ),
            "{shown}"
        );
        assert!(shown.contains("line 2"), "{shown}");
        let err = parse("[server]\nlisten = 1986\n").unwrap_err();
        assert!(err.to_string().contains("such as 127.0.0.1:1986"), "{err}");
        let err = parse("[auth]\ntrusted_peers = [\"127.0.0.1\", \"gw.example\"]\n").unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.contains("trusted_peers[1] must be an IP address in quotes"),
            "{shown}"
        );
        assert!(shown.contains("host names are not accepted"), "{shown}");
        let ok = parse("[server]\nlisten = \"[::]:1986\"\n").unwrap();
        assert!(ok.server.listen.is_ipv6());
    }

    #[test]
    fn unknown_sections_and_words_are_named() {
        let err = parse("[mial]\n").unwrap_err().to_string();
        assert!(err.contains("unknown section `mial`"), "{err}");
        assert!(!err.contains("(in ["), "no table yet: {err}");
        let err = parse("[auth]\nmode = 5\n").unwrap_err().to_string();
        assert!(
            err.ends_with("mode must be \"password\" or \"trusted\""),
            "{err}"
        );
    }

    #[test]
    fn starting_level_is_the_file_then_rust_log_then_info() {
        let none = LoggingConfig::default();
        assert_eq!(none.starting_level(None).unwrap(), "info");
        assert_eq!(none.starting_level(Some("  ")).unwrap(), "info");
        assert_eq!(none.starting_level(Some("debug")).unwrap(), "debug");
        assert_eq!(
            none.starting_level(Some("info,espmail::store=debug"))
                .unwrap(),
            "info,espmail::store=debug"
        );
        let err = none.starting_level(Some("inof")).unwrap_err().to_string();
        assert!(
            err.starts_with("environment variable RUST_LOG: log filter \"inof\""),
            "{err}"
        );
        let file = parse("[logging]\nlevel = \"warn\"\n").unwrap().logging;
        assert_eq!(file.starting_level(Some("debug")).unwrap(), "warn");
        assert_eq!(file.starting_level(Some("inof")).unwrap(), "warn");
    }

    #[test]
    fn paths_are_made_absolute_against_the_working_directory() {
        let mut c = parse(
            "[data]\nkeyfile = \"/etc/espmail/keyfile\"\ndatabase = \"db/espmail.db\"\n\
             [logging]\nfile = \"./log/espmail.log\"\n\
             [tls]\nlisten = \"0.0.0.0:1987\"\ncert = \"tls/server.crt\"\nkey = \"/etc/espmail/tls.key\"\n",
        )
        .unwrap();
        let relative = c.make_paths_absolute(Path::new("/srv/world"));
        assert_eq!(
            relative,
            ["data.dir", "data.database", "logging.file", "tls.cert"]
        );
        assert_eq!(
            c.tls.cert.as_deref(),
            Some(Path::new("/srv/world/tls/server.crt"))
        );
        assert_eq!(
            c.tls.key.as_deref(),
            Some(Path::new("/etc/espmail/tls.key"))
        );
        assert_eq!(c.data.dir, PathBuf::from("/srv/world/data"));
        assert_eq!(
            c.data.database_path(),
            PathBuf::from("/srv/world/db/espmail.db")
        );
        assert_eq!(c.data.keyfile_path(), PathBuf::from("/etc/espmail/keyfile"));
        assert_eq!(
            c.admin_socket_path(),
            PathBuf::from("/srv/world/data/admin.sock")
        );
        assert_eq!(
            c.logging.file.as_deref(),
            Some(Path::new("/srv/world/log/espmail.log"))
        );
        assert!(c
            .summary()
            .contains("dir=/srv/world/data database=/srv/world/db/espmail.db"));
        assert!(c.make_paths_absolute(Path::new("/elsewhere")).is_empty());
        assert_eq!(c.data.dir, PathBuf::from("/srv/world/data"));
    }

    #[test]
    fn address_lists_take_addresses_and_networks_in_words() {
        let c = parse(
            "[server]\nconnection_cap_exempt = [\"127.0.0.1\", \"10.1.2.3/8\", \"fd00::/8\", \"::1\"]\n",
        )
        .unwrap();
        let shown: Vec<String> = c
            .server
            .connection_cap_exempt
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["127.0.0.1", "10.0.0.0/8", "fd00::/8", "::1"]);
        let net = c.server.connection_cap_exempt[1];
        assert!(net.contains("10.200.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(c.server.connection_cap_exempt[0].contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(c
            .summary()
            .contains("connection_cap_exempt=127.0.0.1,10.0.0.0/8,fd00::/8,::1"));

        let err = parse("[server]\nconnection_cap_exempt = [\"gw.example\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("connection_cap_exempt[0] must be an IP address or network in quotes"),
            "{err}"
        );
        assert!(err.contains("not \"gw.example\""), "{err}");
        for bad in [
            "max_connections_per_address",
            "max_unauthenticated_seats",
            "max_bad_frames",
        ] {
            let err = parse(&format!("[server]\n{bad} = 0\n")).unwrap_err();
            assert!(err.to_string().contains(&format!("server.{bad}")), "{err}");
        }
    }

    #[test]
    fn trusted_mode_without_peers_is_refused() {
        let err = parse("[auth]\nmode = \"trusted\"\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("auth.trusted_peers"), "{shown}");
        assert!(shown.contains("test.toml"), "{shown}");
        let ok = parse("[auth]\nmode = \"trusted\"\ntrusted_peers = [\"127.0.0.1\"]\n").unwrap();
        assert_eq!(ok.auth.mode, AuthMode::Trusted);
        assert_eq!(ok.auth.trusted_peers, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }

    #[test]
    fn text_len_over_speech_cap_is_refused() {
        let err = parse("[mail]\nmax_text_len = 200\n").unwrap_err();
        assert!(err.to_string().contains("114"), "{err}");
        assert_eq!(
            parse("[mail]\nmax_text_len = 99\n")
                .unwrap()
                .mail
                .max_text_len,
            99
        );
    }

    #[test]
    fn limits_the_vault_and_accounts_cannot_honour_are_refused() {
        let err = parse("[mail]\nretention_days = 0\n").unwrap_err();
        assert!(err.to_string().contains("mail.retention_days"), "{err}");
        for bad in [0, 257] {
            let err = parse(&format!("[auth]\nmin_password_len = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("auth.min_password_len"), "{err}");
        }
        assert_eq!(
            parse("[auth]\nmin_password_len = 256\n")
                .unwrap()
                .auth
                .min_password_len,
            256
        );
    }

    #[test]
    fn bad_log_level_is_refused() {
        for bad in ["loud=", "inof", "espmail=verbose", "=debug"] {
            let err = parse(&format!("[logging]\nlevel = \"{bad}\"\n")).unwrap_err();
            assert!(err.to_string().contains("logging.level"), "{err}");
        }
        assert!(parse("[logging]\nlevel = \"DEBUG\"\n").is_ok());
        assert!(parse("[logging]\nlevel = \"info,espmail::store=debug\"\n").is_ok());
    }

    #[test]
    fn tls_listener_needs_cert_and_key_and_its_own_port() {
        let c = parse("").unwrap();
        assert_eq!(c.tls.listen, None, "off unless asked for");
        assert!(c.tls.plain_notice);
        assert_eq!(c.tls.handshake_timeout_secs, 10);
        let err = parse("[tls]\nlisten = \"0.0.0.0:1987\"\n").unwrap_err();
        assert!(err.to_string().contains("tls.cert"), "{err}");
        let err = parse("[tls]\nlisten = \"0.0.0.0:1987\"\ncert = \"c.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("tls.key"), "{err}");
        let err = parse(
            "[server]\nlisten = \"0.0.0.0:1987\"\n[tls]\nlisten = \"0.0.0.0:1987\"\n\
             cert = \"c.pem\"\nkey = \"k.pem\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tls.listen"), "{err}");
        let err = parse("[tls]\nhandshake_timeout_secs = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("tls.handshake_timeout_secs"),
            "{err}"
        );
        let err = parse("[tls]\ncertificate = \"c.pem\"\n").unwrap_err();
        assert!(err.to_string().contains("`certificate`"), "{err}");
        let ok = parse(
            "[tls]\nlisten = \"0.0.0.0:1987\"\ncert = \"/etc/espmail/tls.crt\"\n\
             key = \"/etc/espmail/tls.key\"\nplain_notice = false\n",
        )
        .unwrap();
        assert_eq!(ok.tls.listen, Some("0.0.0.0:1987".parse().unwrap()));
        assert_eq!(ok.tls.key, Some(PathBuf::from("/etc/espmail/tls.key")));
        assert!(!ok.tls.plain_notice);
        assert!(ok
            .summary()
            .contains("tls: listen=0.0.0.0:1987 cert=/etc/espmail/tls.crt"));
        assert!(Config::default().summary().contains("tls: listen=off"));
    }

    #[test]
    fn flags_beat_file_and_derived_paths_follow_data_dir() {
        let mut c = parse(
            "[server]\nlisten = \"127.0.0.1:2000\"\n[data]\ndir = \"/srv/a\"\nkeyfile = \"/etc/espmail/key\"\n",
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 2000);
        c.apply(&Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: Some(PathBuf::from("/srv/b")),
        });
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.data.database_path(), PathBuf::from("/srv/b/espmail.db"));
        assert_eq!(c.admin_socket_path(), PathBuf::from("/srv/b/admin.sock"));
        // Set explicitly in the file: stays.
        assert_eq!(c.data.keyfile_path(), PathBuf::from("/etc/espmail/key"));
        assert!(!c.data.keyfile_inside_data_dir());
        assert!(Config::default().data.keyfile_inside_data_dir());
    }

    #[test]
    fn load_without_file_uses_defaults_and_flags() {
        let c = Config::load(
            None,
            &Overrides {
                listen: None,
                data_dir: Some(PathBuf::from("d")),
            },
        )
        .unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.data.keyfile_path(), PathBuf::from("d/keyfile"));
    }

    #[test]
    fn summary_shows_effective_settings() {
        let s = Config::default().summary();
        for part in [
            "listen=127.0.0.1:1986",
            "database=./data/espmail.db",
            "keyfile=./data/keyfile",
            "mode=password",
            "max_per_recipient=50",
            "level=info",
            "admin_socket=./data/admin.sock",
        ] {
            assert!(s.contains(part), "{part} missing from {s}");
        }
    }
}
