//! The shipped `config/espmail.toml`: it parses, it equals the built-in defaults, every
//! key it documents shows the default value, every key of `Config` is documented, and an
//! extra key is refused with its name and line.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};

use espmail::config::{Config, ConfigError};

fn shipped_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/espmail.toml")
}

fn shipped() -> String {
    std::fs::read_to_string(shipped_path()).unwrap()
}

/// `# key = value` lines are the documented defaults; `# e.g. key = …` are examples.
fn is_default_line(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("# ") else {
        return false;
    };
    let Some((key, _)) = rest.split_once(" = ") else {
        return false;
    };
    !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

fn uncommented() -> String {
    shipped()
        .lines()
        .map(|l| if is_default_line(l) { &l[2..] } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_file_as_is_equals_defaults() {
    assert_eq!(Config::read(&shipped_path()).unwrap(), Config::default());
}

#[test]
fn every_documented_default_is_the_real_default() {
    let text = uncommented();
    let count = shipped().lines().filter(|l| is_default_line(l)).count();
    assert!(count >= 20, "only {count} documented keys");
    let mut parsed = Config::parse(&text, Path::new("uncommented.toml")).unwrap();
    let default = Config::default();
    // Paths whose default is derived from the data directory are written out in the
    // file; they must resolve to the same place.
    assert_eq!(parsed.data.database_path(), default.data.database_path());
    assert_eq!(parsed.data.keyfile_path(), default.data.keyfile_path());
    assert_eq!(parsed.admin_socket_path(), default.admin_socket_path());
    // The level's default is written out too (unset means RUST_LOG, then this).
    assert_eq!(
        parsed.logging.level_or_default(),
        default.logging.level_or_default()
    );
    parsed.data.database = None;
    parsed.data.keyfile = None;
    parsed.logging.admin_socket = None;
    parsed.logging.level = None;
    assert_eq!(parsed, default);
}

#[test]
fn every_key_of_config_is_documented_in_its_section() {
    let value = toml::Value::try_from(Config::with_every_key()).unwrap();
    let text = shipped();
    let tables = value.as_table().unwrap();
    assert_eq!(tables.len(), 6);
    for (section, keys) in tables {
        let start = text
            .find(&format!("\n[{section}]\n"))
            .unwrap_or_else(|| panic!("no [{section}] in the shipped file"));
        let end = text[start + 1..]
            .find("\n[")
            .map_or(text.len(), |e| start + 1 + e);
        let body = &text[start..end];
        for key in keys.as_table().unwrap().keys() {
            assert!(
                body.contains(&format!("\n# {key} = "))
                    || body.contains(&format!("\n# e.g. {key} = ")),
                "[{section}] {key} is not documented in config/espmail.toml"
            );
        }
    }
}

#[test]
fn extra_key_in_shipped_file_is_refused_with_name_and_line() {
    let mut text = shipped();
    let mail = text.find("[mail]\n").unwrap() + "[mail]\n".len();
    text.insert_str(mail, "max_per_recipent = 5\n");
    let line = text[..mail].matches('\n').count() + 1;
    let err = Config::parse(&text, Path::new("/etc/espmail.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("`max_per_recipent`"), "{shown}");
    assert!(shown.contains(&format!("line {line},")), "{shown}");
    assert!(shown.contains("/etc/espmail.toml"), "{shown}");
    assert!(shown.contains("[mail]"), "{shown}");
}

#[test]
fn missing_file_names_the_path() {
    let err = Config::read(Path::new("/nonexistent/espmail.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().contains("/nonexistent/espmail.toml"),
        "{err}"
    );
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The systemd unit, its config and its tmpfiles snippet agree: the config the unit passes
/// parses, every path in it is absolute, the database is in the unit's StateDirectory,
/// the admin socket in its RuntimeDirectory, and the keyfile outside the data directory,
/// in a directory tmpfiles makes for the service user alone.
#[test]
fn the_systemd_files_agree_with_each_other() {
    let unit = repo_file("dist/systemd/espmail.service");
    let tmpfiles = repo_file("dist/systemd/espmail.tmpfiles");
    let text = repo_file("dist/systemd/espmail.toml");
    let c = Config::parse(&text, Path::new("dist/systemd/espmail.toml")).unwrap();
    assert!(unit
        .contains("\nExecStart=/usr/local/bin/espmail serve --config /etc/espmail/espmail.toml\n"));
    assert!(
        unit.contains("\nType=notify\n"),
        "readiness through sd_notify"
    );
    assert!(unit.contains("\nExecReload=/bin/kill -HUP $MAINPID\n"));
    assert!(unit.contains("\nStateDirectory=espmail\n"));
    assert!(unit.contains("\nRuntimeDirectory=espmail\n"));
    assert!(unit.contains("\nProtectSystem=strict\n"));
    assert_eq!(c.data.dir, PathBuf::from("/var/lib/espmail"));
    assert_eq!(
        c.admin_socket_path(),
        PathBuf::from("/run/espmail/admin.sock")
    );
    let keyfile = c.data.keyfile_path();
    assert!(!c.data.keyfile_inside_data_dir(), "{}", keyfile.display());
    let key_dir = keyfile.parent().unwrap().display().to_string();
    assert!(
        tmpfiles
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..]
                == ["d", key_dir.as_str(), "0700", "espmail", "espmail", "-"]),
        "tmpfiles makes {key_dir}"
    );
    for path in [c.data.dir.clone(), c.data.database_path(), keyfile] {
        assert!(path.is_absolute(), "{}", path.display());
    }
}

/// The image's config and the Dockerfile agree: the data directory is the volume and
/// ESPMAIL_DATA_DIR, and the keyfile is a mounted secret outside it.
#[test]
fn the_container_files_agree_with_each_other() {
    let dockerfile = repo_file("Dockerfile");
    let text = repo_file("dist/container/espmail.toml");
    let c = Config::parse(&text, Path::new("dist/container/espmail.toml")).unwrap();
    assert!(dockerfile.contains("COPY dist/container/espmail.toml /etc/espmail/espmail.toml"));
    assert!(dockerfile.contains("ESPMAIL_CONFIG=/etc/espmail/espmail.toml"));
    let dir = c.data.dir.display().to_string();
    assert!(
        dockerfile.contains(&format!("ESPMAIL_DATA_DIR={dir}")),
        "{dir}"
    );
    assert!(dockerfile.contains(&format!("VOLUME [\"{dir}\"]")), "{dir}");
    assert!(dockerfile.contains("ESPMAIL_LISTEN=0.0.0.0:1986"));
    assert!(dockerfile.contains("\nUSER espmail\n"), "not root");
    assert_eq!(
        c.data.keyfile_path(),
        PathBuf::from("/run/secrets/espmail-keyfile")
    );
    assert!(!c.data.keyfile_inside_data_dir());
    let ignore = repo_file(".dockerignore");
    for never in ["target", "data", "secrets", "**/keyfile", "**/*.db"] {
        assert!(
            ignore.lines().any(|l| l == never),
            "{never} not in .dockerignore"
        );
    }
}

/// `[auth]` as the server reads it: the one mapping from the flat TOML shape to the
/// world's richer mode (`server::auth_mode`).
#[test]
fn auth_mode_from_config() {
    use espmail::config::{AuthConfig, AuthMode as Flat};
    use espmail::server::auth_mode;
    use espmail::world::login::AuthMode;
    let secret = || espmail::avatar::Password::new(b"front-end-secret-16".to_vec());
    let with = |auth: AuthConfig| {
        auth_mode(
            &Config {
                auth,
                ..Config::default()
            },
            Some(secret()),
        )
    };
    assert_eq!(with(AuthConfig::default()), AuthMode::default());
    let off = AuthConfig {
        auto_register: false,
        ..AuthConfig::default()
    };
    assert_eq!(
        with(off),
        AuthMode::Password {
            auto_register: false
        }
    );
    let peers: Vec<std::net::IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    let trusted = AuthConfig {
        mode: Flat::Trusted,
        trusted_peers: peers.clone(),
        trusted_password_avatars: true,
        ..AuthConfig::default()
    };
    assert_eq!(
        with(trusted),
        AuthMode::Trusted {
            peers,
            secret: secret(),
            password_avatars: true
        }
    );
}
