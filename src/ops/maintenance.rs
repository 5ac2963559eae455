//! `espmail stats`, `purge` and `quarantine list|drop`: upkeep of the stored mail that
//! needs no keyfile (counts, expiry days and row ids are in the clear for this purpose)
//! and runs beside a running server (each says whether one is running where it matters).
//!
//! May touch: the database (through [`crate::espmail::offline`]), the admin socket (to
//! ask whether a server is running).

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{load_config, mail_limits, state_note, vault_paths, OpsError, Progress};
use crate::cli::{DataArgs, PurgeArgs, QuarantineArgs, QuarantineOp};
use crate::espmail::offline;
use crate::espmail::store::{day_of, QuarantineSelect, RowId};

const SECS_PER_DAY: u64 = 86_400;

/// `espmail stats`: counts from the database, without the keyfile; never names or text.
pub fn stats(args: &DataArgs, out: &mut dyn Write) -> Result<(), OpsError> {
    let config = load_config(args)?;
    let db = vault_paths(&config).existing_database()?.to_path_buf();
    let s = offline::stats(&db, &mail_limits(&config))?;
    writeln!(out, "server: {}", state_note(&config))?;
    writeln!(out, "messages waiting: {}", s.waiting)?;
    writeln!(out, "quarantined: {}", s.quarantined)?;
    match s.oldest_age_days {
        Some(d) => writeln!(out, "oldest waiting: {d} days")?,
        None => writeln!(out, "oldest waiting: none")?,
    }
    writeln!(
        out,
        "database size: {} bytes ({:.1} MiB)",
        s.db_bytes,
        s.db_bytes as f64 / (1024.0 * 1024.0)
    )?;
    writeln!(out, "delivered since creation: {}", s.delivered)?;
    for (key_id, n) in &s.per_key {
        writeln!(out, "waiting under key {key_id}: {n}")?;
    }
    Ok(())
}

/// The moment to hand [`offline::purge`] so that it deletes mail that has waited `days` whole
/// days or more. A row keeps only its expiry day (send day + retention; the send time itself
/// is encrypted), and `offline::purge(t)` deletes rows whose expiry day is at most t's day;
/// so t = now + (retention - days). This assumes the retention has not changed since the
/// mail was saved, as `stats`' oldest age does.
pub fn purge_cutoff(now: SystemTime, retention_days: u32, days: u32) -> SystemTime {
    let shift = |d: u32| Duration::from_secs(u64::from(d) * SECS_PER_DAY);
    if retention_days >= days {
        now.checked_add(shift(retention_days - days)).unwrap_or(now)
    } else {
        // Nothing can be older than the epoch: a cutoff before it purges nothing.
        now.checked_sub(shift(days - retention_days))
            .map_or(UNIX_EPOCH, |t| t.max(UNIX_EPOCH))
    }
}

/// `espmail purge [--older-than DAYS]`: deletes waiting mail that has waited DAYS whole
/// days or more (default: the configured retention). Safe beside a running server (short
/// transactions of [`offline::PURGE_BATCH`] rows through SQLite's locking); says which
/// case it ran in, and how many rows it deleted. Progress goes to `progress`.
pub fn purge(
    args: PurgeArgs,
    out: &mut dyn Write,
    progress: &mut Progress<'_>,
) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let retention = config.mail.retention_days;
    let days = match args.older_than {
        Some(0) => return Err(OpsError::BadAge),
        Some(d) => d,
        None => retention,
    };
    let db = vault_paths(&config).existing_database()?.to_path_buf();
    let state = state_note(&config);
    let cutoff = purge_cutoff(SystemTime::now(), retention, days);
    let n = offline::purge_in_batches(
        &db,
        &mail_limits(&config),
        cutoff,
        offline::PURGE_BATCH,
        &mut |d, t| progress.update(d, t, Instant::now()),
    );
    progress.finish();
    let n = n?;
    writeln!(
        out,
        "purged {} ESP Mail that waited {days} days or more (server {state})",
        n.mail
    )?;
    writeln!(
        out,
        "purged {} quarantined rows whose mail waited {days} days or more",
        n.quarantined
    )?;
    Ok(())
}

/// `espmail quarantine list|drop`: the rows that failed to open. `list` prints one line a
/// row (id, key id, days in quarantine, reason code, days until retention purges it; never
/// content); `drop` deletes the rows named (or all), the operator's decision, and says how
/// many. Both need no keyfile and run beside a running server.
pub fn quarantine(
    args: QuarantineArgs,
    out: &mut dyn Write,
    note: &mut dyn Write,
) -> Result<(), OpsError> {
    let config = load_config(&args.data)?;
    let db = vault_paths(&config).existing_database()?.to_path_buf();
    let limits = mail_limits(&config);
    match args.op {
        QuarantineOp::List => {
            let now = SystemTime::now();
            let rows = offline::quarantine_list(&db, &limits, now)?;
            if rows.is_empty() {
                writeln!(note, "no quarantined rows")?;
            }
            let today = day_of(now);
            for r in rows {
                let left = u64::try_from(r.expiry_day - today).unwrap_or(0);
                writeln!(
                    out,
                    "{}  key {}  quarantined {} days ago  reason {}  purged in {left} days",
                    r.id, r.key_id, r.age_days, r.reason
                )?;
            }
        }
        QuarantineOp::Drop { ids, all } => {
            let which = if all {
                QuarantineSelect::All
            } else {
                QuarantineSelect::Ids(
                    ids.iter()
                        .map(|s| s.parse::<RowId>())
                        .collect::<Result<_, _>>()?,
                )
            };
            let n = offline::quarantine_drop(&db, &limits, &which)?;
            writeln!(out, "dropped {n} quarantined rows")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_cutoff_shifts_by_retention_minus_age() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000 * SECS_PER_DAY);
        let day = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() / SECS_PER_DAY;
        assert_eq!(day(purge_cutoff(now, 90, 90)), 1_000);
        assert_eq!(day(purge_cutoff(now, 90, 30)), 1_060);
        assert_eq!(day(purge_cutoff(now, 30, 90)), 940);
        assert_eq!(purge_cutoff(now, 0, 5_000), UNIX_EPOCH);
    }
}
