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
    parsed.data.database = None;
    parsed.data.keyfile = None;
    parsed.logging.admin_socket = None;
    assert_eq!(parsed, default);
}

#[test]
fn every_key_of_config_is_documented_in_its_section() {
    let mut full = Config::default();
    full.data.database = Some("x".into());
    full.data.keyfile = Some("x".into());
    full.logging.file = Some("x".into());
    full.logging.admin_socket = Some("x".into());
    full.tls.listen = Some("0.0.0.0:1987".parse().unwrap());
    full.tls.cert = Some("x".into());
    full.tls.key = Some("x".into());
    let value = toml::Value::try_from(&full).unwrap();
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
