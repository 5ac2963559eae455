//! The trusted front end's secret (`[auth] trusted_secret_file`, issue 10 M8): read once
//! at `serve` start, checked for length and for who may read it, and handed to the world's
//! [`AuthMode::Trusted`](crate::world::login::AuthMode) as a [`Password`] (zeroed on drop,
//! never printed).
//!
//! May touch: that one file, read only.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::avatar::Password;
use crate::config::{AuthMode, Config};

/// Shortest secret accepted: guessing it must be out of the question, since a front end's
/// address is all that stands beside it.
pub const MIN_SECRET_LEN: usize = 16;

/// Why the front end's secret cannot be used. Each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file cannot be read.
    #[error("cannot read the front end's secret {}: {cause} (check [auth] trusted_secret_file)", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// The secret is shorter than [`MIN_SECRET_LEN`].
    #[error(
        "the front end's secret in {} is {len} characters; use {MIN_SECRET_LEN} or more \
         (e.g. `openssl rand -hex 32 > {}`)",
        path.display(),
        path.display()
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length, without the trailing newline.
        len: usize,
    },
    /// Everybody on the machine may read the file.
    #[error(
        "the front end's secret {} can be read by every user on this machine (mode {mode:o}); \
         run `chmod 640 {}` (readable by espmail and the front end's group only)",
        path.display(),
        path.display()
    )]
    WorldReadable {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The secret a trusted front end must send, when `[auth] mode = "trusted"`; `None` in
/// password mode (the file is not read).
pub fn front_end_secret(config: &Config) -> Result<Option<Password>, SecretError> {
    match (&config.auth.mode, &config.auth.trusted_secret_file) {
        (AuthMode::Trusted, Some(path)) => read(path).map(Some),
        // The config's check requires the file in trusted mode.
        _ => Ok(None),
    }
}

fn read(path: &Path) -> Result<Password, SecretError> {
    let err = |cause| SecretError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let mode = std::fs::metadata(path).map_err(err)?.permissions().mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(SecretError::WorldReadable {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(err)?);
    // Editors and `echo` end the file with a newline; it is not part of the secret.
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    if bytes.len() < MIN_SECRET_LEN {
        return Err(SecretError::TooShort {
            path: path.to_path_buf(),
            len: bytes.len(),
        });
    }
    Ok(Password::new(bytes.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let p = dir.join("front-end.secret");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn trusted(path: PathBuf) -> Config {
        let mut c = Config::default();
        c.auth.mode = AuthMode::Trusted;
        c.auth.trusted_peers = vec![[127, 0, 0, 1].into()];
        c.auth.trusted_secret_file = Some(path);
        c
    }

    #[test]
    fn the_secret_is_read_without_its_newline_and_only_in_trusted_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "0123456789abcdef0123\n", 0o640);
        let secret = front_end_secret(&trusted(p.clone())).unwrap().unwrap();
        assert_eq!(secret.expose(), b"0123456789abcdef0123");
        let mut password_mode = trusted(p);
        password_mode.auth.mode = AuthMode::Password;
        assert!(front_end_secret(&password_mode).unwrap().is_none());
    }

    #[test]
    fn a_short_world_readable_or_missing_secret_is_refused_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let short = write(dir.path(), "short\n", 0o600);
        let e = front_end_secret(&trusted(short)).unwrap_err().to_string();
        assert!(e.contains("is 5 characters; use 16 or more"), "{e}");
        let open = write(dir.path(), "0123456789abcdef0123", 0o644);
        let e = front_end_secret(&trusted(open)).unwrap_err().to_string();
        assert!(
            e.contains("can be read by every user") && e.contains("chmod 640"),
            "{e}"
        );
        let missing = dir.path().join("nowhere");
        let e = front_end_secret(&trusted(missing)).unwrap_err().to_string();
        assert!(e.starts_with("cannot read the front end's secret"), "{e}");
    }
}
