//! Directories only their owner may enter (mode 0700): the data directory, the keyfile's
//! directory and the log file's directory are all made here, the same way.
//!
//! May touch: the file system at the path given (mkdir, chmod); imports nothing from the
//! crate, so every layer may use it (logging included).

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and any missing parents with mode 0700. `Ok(false)` when it already
/// exists (it is left as it is: it may be a shared directory such as `/var/log`).
pub fn create(dir: &Path) -> io::Result<bool> {
    if dir.is_dir() {
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // The mode given to mkdir is narrowed by the umask but never widened; set it anyway so
    // the result does not depend on the umask.
    restrict(dir)?;
    Ok(true)
}

/// Sets an existing directory's mode to 0700.
pub fn restrict(dir: &Path) -> io::Result<()> {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn makes_missing_directories_private_and_leaves_existing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a").join("b");
        assert!(create(&deep).unwrap());
        assert_eq!(mode(&deep), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700, "parents too");
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!create(&shared).unwrap());
        assert_eq!(mode(&shared), 0o755, "an existing directory is not changed");
        restrict(&shared).unwrap();
        assert_eq!(mode(&shared), 0o700);
    }
}
