//! Directories only their owner may enter (mode 0700): the data directory, the keyfile's
//! directory and the log file's directory are all made here, the same way. An existing
//! directory is never changed; [`open_to_others`] says when it is open to other users.
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
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(true)
}

/// The mode of an existing directory when users other than its owner may enter or read it
/// (group or others have any permission), for a warning: the operator made it so, and
/// may have reasons (a backup group), so it is not changed behind their back.
pub fn open_to_others(dir: &Path) -> io::Result<Option<u32>> {
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    Ok((mode & 0o077 != 0).then_some(mode))
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
        assert_eq!(open_to_others(&shared).unwrap(), Some(0o755));
        assert_eq!(open_to_others(&deep).unwrap(), None);
    }
}
