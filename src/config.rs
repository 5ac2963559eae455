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
use std::path::{Path, PathBuf};

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
        }
    }
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

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing filter: `error`, `warn`, `info`, `debug`, `trace`, or directives such
    /// as `info,espmail::store=debug`. SIGHUP re-reads it.
    pub level: String,
    /// Also append logs to this file (created with mode 0600). Default: stderr only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// The admin socket. Default: `<data dir>/admin.sock`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_socket: Option<PathBuf>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_owned(),
            file: None,
            admin_socket: None,
        }
    }
}

impl LoggingConfig {
    /// What [`crate::log_redact::init`] needs from this section.
    pub fn log_options(&self) -> crate::log_redact::LogOptions {
        crate::log_redact::LogOptions {
            level: self.level.clone(),
            file: self.file.clone(),
        }
    }
}

/// `[tls]`: a second listener that speaks TLS (for players behind `espmail tunnel`); the
/// plain listener stays. Parsed and checked now; `serve` does not open this listener
/// yet (it is wired into the server in the next step).
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
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
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
        if let Err(e) = crate::log_redact::check_filter(&self.logging.level) {
            return invalid("logging.level", &e.to_string());
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
             outbox_len={} rate_limit={}\n\
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
            self.logging.level,
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

/// Turns toml's multi-line error into one line naming the file, line, column and table.
fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
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
        .map(|s| s.trim().to_owned());
    ConfigError::Parse {
        path: path.to_owned(),
        line,
        column,
        section,
        message: e.message().trim().to_owned(),
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
