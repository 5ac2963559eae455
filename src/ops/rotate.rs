//! `espmail rotate-key [--retire-old]`: a new active key for the mail and the accounts
//! together, with the server stopped. The mail moves in restartable batches
//! ([`crate::espmail::offline::rotate`]), the accounts in one transaction
//! ([`crate::espmail::accounts::Accounts::rekey`]); old keys retire only once nothing needs them.
//!
//! May touch: the keyfile (adds and retires keys), the database (re-encrypts), the admin
//! socket (to make sure no server is running).

use std::io::Write;

use std::time::Instant;

use super::{load_config, mail_limits, require_stopped, vault_paths, OpsError, Progress};
use crate::cli::RotateKeyArgs;
use crate::espmail::offline;
use crate::espmail::open::Vault;

/// Mail rows re-encrypted per transaction by `rotate-key`: small enough that a running
/// reader never waits long, large enough that a big database rotates in few commits.
pub const ROTATE_BATCH: usize = 256;

/// `espmail rotate-key [--retire-old]`: refuses while the server runs; otherwise adds a new
/// active key to the keyfile (or finishes a rotation already under way), re-encrypts
/// every waiting message under it in restartable batches, and moves the avatar accounts
/// to it (`Accounts::rekey`, one transaction). `--retire-old` then removes the old keys
/// that neither a message nor the accounts need.
///
/// Crash safety: the keyfile gains the new key before anything uses it; the accounts move
/// in one transaction, so until it commits they stay under the old key, which is still in
/// the keyfile (it is retired only after the move) and is found again by the accounts'
/// recorded key id. Running the command again finishes whatever was cut short.
pub fn rotate_key(
    args: RotateKeyArgs,
    out: &mut dyn Write,
    progress: &mut Progress<'_>,
) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let paths = vault_paths(&config);
    let db = paths.existing_database()?;
    require_stopped(&config, "rotate-key")?;
    let kp = &paths.keyfile;
    let limits = mail_limits(&config);
    // Refuse a keyfile that does not open the accounts before changing anything.
    drop(paths.open(&limits)?);
    let report = offline::rotate_with_progress(db, kp, &limits, ROTATE_BATCH, None, &mut |d, t| {
        progress.update(d, t, Instant::now())
    });
    progress.finish();
    let report = report?;
    if report.started {
        writeln!(
            out,
            "new active key {} added to {}",
            report.active,
            kp.display()
        )?;
    } else {
        writeln!(
            out,
            "finishing the rotation to key {} already under way",
            report.active
        )?;
    }
    writeln!(
        out,
        "re-encrypted {} waiting ESP Mail under key {}",
        report.reencrypted, report.active
    )?;
    if report.quarantined > 0 {
        writeln!(
            out,
            "quarantined {} rows that could not be opened (not re-encrypted;              `espmail quarantine list` shows them)",
            report.quarantined
        )?;
    }
    // The keyfile as the rotation left it: the new key active, the old one still there.
    let Vault { keys, mut accounts } = paths.open(&limits)?;
    let accounts_id = accounts.key_id();
    if accounts_id != report.active {
        accounts.rekey(&keys, report.active)?;
        writeln!(
            out,
            "moved the avatar accounts from key {accounts_id} to key {}",
            report.active
        )?;
    }
    // What the database says now, not what was meant: only a key it does not name retires.
    let accounts_id = accounts.key_id();
    drop(accounts);
    drop(keys);
    let mut kept = None;
    for id in &report.retirable {
        if *id == accounts_id {
            kept = Some(*id);
        } else if args.retire_old {
            offline::retire(db, kp, &limits, *id)?;
            writeln!(out, "retired key {id}")?;
        } else {
            writeln!(
                out,
                "key {id} is no longer needed: `espmail rotate-key --retire-old` removes it"
            )?;
        }
    }
    if let Some(key_id) = kept {
        if args.retire_old {
            return Err(OpsError::AccountsKeyInUse {
                key_id,
                active: report.active,
            });
        }
        writeln!(
            out,
            "key {key_id} stays in the keyfile: the avatar accounts are still keyed from it"
        )?;
    }
    writeln!(
        out,
        "back up the keyfile {} again now: the old copy cannot read mail sealed under key {}",
        kp.display(),
        report.active
    )?;
    for &(key_id, rows) in &report.held_by_quarantine {
        if args.retire_old {
            // Nothing was retired for this key: fail and say what resolves it, never pass
            // over it quietly (after the backup reminder, which holds either way).
            return Err(OpsError::QuarantineHoldsKey { key_id, rows });
        }
        writeln!(
            out,
            "key {key_id} stays in the keyfile: {rows} quarantined rows are under it \
             (`espmail quarantine list` shows them)"
        )?;
    }
    Ok(())
}
