//! The server's settings: one strict TOML file (`config/espmail.toml` documents every key
//! with its default), embedded defaults, and command-line overrides, in that order of
//! weakness: flags > file > defaults.
//!
//! Strict on purpose: an operator who typed `lisen` instead of `listen` learns it at
//! startup, with the file, line and the keys that are allowed, instead of running on a
//! default they did not mean. Every table uses `deny_unknown_fields` (and no `flatten`,
//! which would silently disable it). [`Config::default`] holds each number once.
//!
//! Which file is read (`--config` / `ESPMAIL_CONFIG`, else [`SYSTEM_CONFIG`] when it
//! exists, else the defaults) is decided in `source`. The sections and their defaults are
//! in `sections`; how a serde or toml error becomes words an operator can act on ("a whole
//! number", an example address) is in `words`.
//!
//! May touch: the config file (read only; a `stat` of the system path). Nothing else.

use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

mod sections;
mod source;
mod words;

use sections::list_or_none;
pub use sections::*;
pub use source::{ConfigSource, SYSTEM_CONFIG};
use words::parse_error;

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
        if self.auth.mode == AuthMode::Trusted && self.auth.trusted_secret_file.is_none() {
            return invalid(
                "auth.trusted_secret_file",
                "mode = \"trusted\" needs a secret the front end proves itself with (any \
                 process on a trusted host could otherwise name any avatar): put 32 random \
                 characters in a file only espmail and the front end can read, e.g. \
                 `openssl rand -hex 32 > /etc/espmail/front-end.secret`, and set \
                 trusted_secret_file to it",
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
        if self.mail.max_per_sender == 0 {
            return invalid("mail.max_per_sender", "must be at least 1");
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
        if let Some(p) = &mut self.auth.trusted_secret_file {
            fix("auth.trusted_secret_file", p);
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
             auth: mode={} trusted_peers={} trusted_secret_file={} \
             trusted_password_avatars={} auto_register={} min_password_len={} \
             hash_threads={}\n\
             mail: max_per_recipient={} max_per_sender={} max_text_len={} retention_days={} \
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
            a.trusted_secret_file
                .as_deref()
                .map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
            a.trusted_password_avatars,
            a.auto_register,
            a.min_password_len,
            a.hash_threads_in_effect(),
            m.max_per_recipient,
            m.max_per_sender,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

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
        let err =
            parse("[auth]\nmode = \"trusted\"\ntrusted_peers = [\"127.0.0.1\"]\n").unwrap_err();
        assert!(
            err.to_string().contains("auth.trusted_secret_file"),
            "{err}"
        );
        let ok = parse(
            "[auth]\nmode = \"trusted\"\ntrusted_peers = [\"127.0.0.1\"]\n\
             trusted_secret_file = \"/etc/espmail/front-end.secret\"\n",
        )
        .unwrap();
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
