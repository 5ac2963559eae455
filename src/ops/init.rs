//! `espmail init`: a fresh data directory, keyfile and database (or, run again on a
//! complete setup, "already set up" and nothing changed)
//! ([`VaultPaths::create`](crate::espmail::open::VaultPaths::create)), and the words the
//! operator must read: back up the keyfile, apart from the database.
//!
//! May touch: the data directory, the keyfile and the database (all created through the
//! vault's start-up path).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::{load_config, mail_limits, vault_paths, OpsError};
use crate::cli::DataArgs;

/// `espmail init`: the data directory (0700), a new keyfile (0600) and the database with
/// its mail and account tables. On a complete setup (a keyfile that opens the database)
/// it says so and succeeds, changing nothing. Otherwise it refuses to overwrite a keyfile,
/// and refuses a database that already exists (its keyfile must be restored, not
/// replaced). On failure after the
/// keyfile was made, the new (still unused) keyfile and database are removed again, so
/// `init` can simply be run again.
pub fn init(args: &DataArgs, out: &mut dyn Write, note: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(args)?;
    let paths = vault_paths(&config);
    if std::fs::symlink_metadata(&paths.keyfile).is_ok() && paths.database.exists() {
        // A complete setup: done already, unless its keyfile does not open its database
        // (then the vault's refusal says what is wrong). Install scripts and configuration
        // management may run `init` on every run, so this is success, not an error.
        drop(paths.open(&mail_limits(&config))?);
        writeln!(
            out,
            "already set up: the keyfile {} opens the database {}; nothing was changed",
            paths.keyfile.display(),
            paths.database.display()
        )?;
        return Ok(());
    }
    let dir_created = paths.create(&mail_limits(&config))?;
    if !dir_created {
        if let Ok(meta) = std::fs::metadata(&paths.dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                writeln!(
                    note,
                    "espmail: note: the data directory {} has mode {mode:04o}; `chmod 700 {}` \
                     keeps other users away from the database",
                    paths.dir.display(),
                    paths.dir.display()
                )?;
            }
        }
    }
    writeln!(
        out,
        "created the keyfile {} (mode 0600)",
        paths.keyfile.display()
    )?;
    writeln!(out, "created the database {}", paths.database.display())?;
    writeln!(
        note,
        "espmail: !!! BACK UP THE KEYFILE NOW, and keep the copy apart from the database:\n\
         espmail: !!!   {}\n\
         espmail: !!! Without it, ESP Mail waiting in the database can never be read by \
         anyone: losing it makes waiting mail unreadable.",
        paths.keyfile.display()
    )?;
    if config.data.keyfile_inside_data_dir() {
        writeln!(
            note,
            "espmail: note: the keyfile is inside the data directory, so a copy of that \
             directory holds the key with the mail; consider [data] keyfile = a path outside it"
        )?;
    }
    Ok(())
}
