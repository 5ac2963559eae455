//! Which config file is in force: the search order every command follows.
//!
//! 1. `--config FILE`, or `ESPMAIL_CONFIG` (clap reads the variable into the same flag);
//! 2. the system config [`SYSTEM_CONFIG`], when it exists;
//! 3. the embedded defaults.
//!
//! An operator on a packaged install can then type `espmail account list` without
//! `--config` each time, and still reach the server's data. A system file that exists
//! but cannot be read is *chosen* (and its reading fails with the system's words), never
//! passed over for the defaults: running on defaults the operator did not mean, with
//! another data directory, is worse than a clear refusal.

use std::fmt;
use std::path::{Path, PathBuf};

/// The config file every command reads when neither `--config` nor `ESPMAIL_CONFIG` names
/// one, if it exists.
pub const SYSTEM_CONFIG: &str = "/etc/espmail/espmail.toml";

/// Where the configuration in force comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// Named by `--config FILE` or `ESPMAIL_CONFIG`.
    Given(PathBuf),
    /// Found at the system path ([`SYSTEM_CONFIG`]; a test's stand-in in tests).
    System(PathBuf),
    /// No file: the embedded defaults. `looked_at` is the system path that was tried.
    Defaults {
        /// The system path that does not exist.
        looked_at: PathBuf,
    },
}

impl ConfigSource {
    /// The search order: `given` (the `--config` / `ESPMAIL_CONFIG` value) wins; else
    /// `system` when anything is there (or it cannot be told that nothing is, e.g. its
    /// directory is not searchable: reading it will then say why); else the defaults. The
    /// only I/O is one `stat` of `system`; tests pass a temporary path for it.
    pub fn locate(given: Option<&Path>, system: &Path) -> ConfigSource {
        if let Some(path) = given {
            return ConfigSource::Given(path.to_path_buf());
        }
        match system.try_exists() {
            Ok(false) => ConfigSource::Defaults {
                looked_at: system.to_path_buf(),
            },
            Ok(true) | Err(_) => ConfigSource::System(system.to_path_buf()),
        }
    }

    /// [`ConfigSource::locate`] with the real system path.
    pub fn find(given: Option<&Path>) -> ConfigSource {
        ConfigSource::locate(given, Path::new(SYSTEM_CONFIG))
    }

    /// The file to read, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Given(p) | ConfigSource::System(p) => Some(p),
            ConfigSource::Defaults { .. } => None,
        }
    }
}

impl fmt::Display for ConfigSource {
    /// For a log line or a note: which file, and why that one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Given(p) => {
                write!(
                    f,
                    "config file {} (--config or ESPMAIL_CONFIG)",
                    p.display()
                )
            }
            ConfigSource::System(p) => write!(
                f,
                "config file {} (the system config; --config or ESPMAIL_CONFIG names another)",
                p.display()
            ),
            ConfigSource::Defaults { looked_at } => write!(
                f,
                "the built-in defaults (no --config, no ESPMAIL_CONFIG, no {})",
                looked_at.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_file_wins_even_when_the_system_one_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let system = tmp.path().join("espmail.toml");
        std::fs::write(&system, "").unwrap();
        let given = tmp.path().join("mine.toml"); // need not exist: reading it will say so
        assert_eq!(
            ConfigSource::locate(Some(&given), &system),
            ConfigSource::Given(given.clone())
        );
        assert_eq!(
            ConfigSource::locate(Some(&given), &system).path(),
            Some(given.as_path())
        );
    }

    #[test]
    fn the_system_file_is_used_when_it_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let system = tmp.path().join("espmail.toml");
        std::fs::write(&system, "").unwrap();
        let found = ConfigSource::locate(None, &system);
        assert_eq!(found, ConfigSource::System(system.clone()));
        assert_eq!(found.path(), Some(system.as_path()));
        assert!(found.to_string().contains("the system config"), "{found}");
    }

    #[test]
    fn without_either_the_defaults_are_used_and_say_where_they_looked() {
        let tmp = tempfile::tempdir().unwrap();
        let system = tmp.path().join("etc").join("espmail.toml");
        let found = ConfigSource::locate(None, &system);
        assert_eq!(
            found,
            ConfigSource::Defaults {
                looked_at: system.clone()
            }
        );
        assert_eq!(found.path(), None);
        let words = found.to_string();
        assert!(words.starts_with("the built-in defaults"), "{words}");
        assert!(words.contains(&system.display().to_string()), "{words}");
    }

    #[test]
    fn the_real_system_path_is_etc_espmail() {
        assert_eq!(SYSTEM_CONFIG, "/etc/espmail/espmail.toml");
        let given = Path::new("x.toml");
        assert_eq!(
            ConfigSource::find(Some(given)),
            ConfigSource::Given(given.into())
        );
    }
}
