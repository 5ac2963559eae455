//! The mail table's rows and the SQL that reads and writes them, run by the store (on the
//! writer thread, inside its batch transaction) and by the offline commands: insert with
//! the box limit, load and decrypt oldest first (quarantining what does not open),
//! confirm (delete on delivery), purge, quarantine listing and dropping, and the counts
//! `espmail stats` prints. The types they hand out ([`PendingMail`], [`Stats`],
//! [`QuarantinedRow`], …) never carry plain names and never print message text.
//!
//! May touch: the connection or transaction it is given; nothing else.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use tracing::{info, warn};

use super::crypto::{Blind, CryptoError, Keyring, MailId, SealedRow, BLIND_LEN, KEY_PART_LEN};
use super::error::{SaveError, StoreError};
use super::keyfile::KeyId;
use super::store::{day_of, Limits};
use crate::log_redact::Sensitive;

/// One message handed out at login: decrypted, not yet confirmed (so still stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMail {
    /// Its id, for [`Store::confirm`].
    pub id: MailId,
    /// Sender's name as they are shown.
    pub sender: String,
    /// When it was sent.
    pub sent: SystemTime,
    /// The text.
    pub text: Sensitive<Vec<u8>>,
}

/// Counts for operators: never names or text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages waiting.
    pub waiting: u64,
    /// Rows in quarantine.
    pub quarantined: u64,
    /// Age in whole days of the oldest waiting message, from its expiry day minus the
    /// current retention (day granularity: the send time itself is encrypted).
    pub oldest_age_days: Option<u64>,
    /// Database plus WAL size in bytes.
    pub db_bytes: u64,
    /// Messages delivered and deleted since the database was created.
    pub delivered: u64,
    /// Waiting messages per key id (a rotation is complete when only the active key has any).
    pub per_key: Vec<(KeyId, u64)>,
}

/// What one purge deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Purged {
    /// Waiting messages past their expiry day.
    pub mail: usize,
    /// Quarantined rows past the expiry day they kept from their mail row.
    pub quarantined: usize,
}

impl Purged {
    /// Rows deleted from both tables.
    pub fn total(&self) -> usize {
        self.mail + self.quarantined
    }
}

/// A row's stored id, in hex on screen. A quarantined row's id may have the wrong size (a
/// malformed row is one reason to quarantine it), so this is not a [`MailId`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId(pub Vec<u8>);

impl std::fmt::Display for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for RowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RowId({self})")
    }
}

impl std::str::FromStr for RowId {
    type Err = StoreError;

    /// Hex, as `espmail quarantine list` prints it (either case).
    fn from_str(s: &str) -> Result<RowId, StoreError> {
        let bad = || StoreError::BadRowId(s.to_owned());
        let s = s.trim();
        if s.is_empty() || s.len() % 2 != 0 || !s.is_ascii() {
            return Err(bad());
        }
        (0..s.len())
            .step_by(2)
            .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(RowId)
            .ok_or_else(bad)
    }
}

/// Why a row was quarantined, as a short code for operators. The store keeps the opening
/// error's text (no message content is in it); the code is read back from that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// The tag did not verify: wrong key, edited ciphertext, or a moved/swapped row.
    Authentication,
    /// The row names a key the keyfile does not hold.
    UnknownKey,
    /// A stored value had the wrong size, or the plaintext was not well formed.
    Malformed,
    /// A copy of a row already delivered and acked, put back into the store.
    Replayed,
    /// Anything else (e.g. the crypto library failed while opening it).
    Other,
}

/// The stored reason of a replayed row ([`ReasonCode::Replayed`]).
pub(super) const REPLAYED: &str = "already delivered once: a copy put back into the store";

impl ReasonCode {
    /// The code of an opening error.
    pub fn of(e: &CryptoError) -> ReasonCode {
        match e {
            CryptoError::Authentication => ReasonCode::Authentication,
            CryptoError::UnknownKey { .. } => ReasonCode::UnknownKey,
            CryptoError::Malformed(_) => ReasonCode::Malformed,
            _ => ReasonCode::Other,
        }
    }

    /// The code of a stored reason (the opening error's text, as the quarantine stores it).
    pub fn of_stored(reason: &str) -> ReasonCode {
        if reason == CryptoError::Authentication.to_string() {
            ReasonCode::Authentication
        } else if reason.starts_with("key ") && reason.ends_with(" is not in the keyfile") {
            ReasonCode::UnknownKey
        } else if reason.starts_with("stored message is malformed") {
            ReasonCode::Malformed
        } else if reason == REPLAYED {
            ReasonCode::Replayed
        } else {
            ReasonCode::Other
        }
    }

    /// The code as printed.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Authentication => "authentication",
            ReasonCode::UnknownKey => "unknown-key",
            ReasonCode::Malformed => "malformed",
            ReasonCode::Replayed => "replayed",
            ReasonCode::Other => "other",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One quarantined row as `espmail quarantine list` shows it: never names or text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantinedRow {
    /// The row's id (hex on screen; what `quarantine drop` takes).
    pub id: RowId,
    /// The key id the row claims to be sealed under.
    pub key_id: KeyId,
    /// Whole days since the row was quarantined.
    pub age_days: u64,
    /// The expiry day it kept from its mail row (days since 1970): retention purges it then.
    pub expiry_day: i64,
    /// Why it failed to open.
    pub reason: ReasonCode,
}

/// Which quarantined rows `quarantine drop` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuarantineSelect {
    /// Every quarantined row.
    All,
    /// These rows; every one must be in the quarantine.
    Ids(Vec<RowId>),
}

/// A raw row read from `mail`.
pub(super) struct RawRow {
    pub(super) id: Vec<u8>,
    blind: Vec<u8>,
    key_id: KeyId,
    key_part: Vec<u8>,
    sealed: Vec<u8>,
    expiry_day: i64,
}

impl RawRow {
    pub(super) fn sealed_row(&self) -> Result<SealedRow, CryptoError> {
        let bad = CryptoError::Malformed;
        Ok(SealedRow {
            id: MailId::from_slice(&self.id).ok_or(bad("id size"))?,
            blind: <[u8; BLIND_LEN]>::try_from(self.blind.as_slice())
                .map_err(|_| bad("blind index size"))?,
            key_id: self.key_id,
            key_part: <[u8; KEY_PART_LEN]>::try_from(self.key_part.as_slice())
                .map_err(|_| bad("key part size"))?,
            sealed: self.sealed.clone(),
            // Only a new row needs it (for the sender cap); opening does not.
            pair: None,
            expiry_day: Some(self.expiry_day),
        })
    }
}

pub(super) fn read_raw(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        id: r.get(0)?,
        blind: r.get(1)?,
        key_id: r.get(2)?,
        key_part: r.get(3)?,
        sealed: r.get(4)?,
        expiry_day: r.get(5)?,
    })
}

pub(super) fn count(conn: &Connection, blinds: &[(KeyId, Blind)]) -> Result<usize, StoreError> {
    let mut st =
        conn.prepare_cached("SELECT count(*) FROM mail WHERE blind = ?1 AND key_id = ?2")?;
    let mut n = 0usize;
    for (key_id, blind) in blinds {
        let c: i64 = st.query_row(params![&blind[..], key_id], |r| r.get(0))?;
        n += usize::try_from(c).unwrap_or(0);
    }
    Ok(n)
}

/// Messages one sender has waiting for one recipient (their pair index, under the key that
/// sealed the new row; rows from before a key rotation finished are not counted).
fn count_pair(conn: &Connection, key_id: KeyId, pair: &Blind) -> Result<usize, StoreError> {
    let mut st =
        conn.prepare_cached("SELECT count(*) FROM mail WHERE pair = ?1 AND key_id = ?2")?;
    let c: i64 = st.query_row(params![&pair[..], key_id], |r| r.get(0))?;
    Ok(usize::try_from(c).unwrap_or(0))
}

pub(super) fn insert(
    conn: &Connection,
    row: &SealedRow,
    expiry_day: i64,
    blinds: &[(KeyId, Blind)],
    limits: &Limits,
) -> Result<MailId, SaveError> {
    // Counted inside the transaction, after earlier jobs of the same batch: the limits hold
    // exactly even when many senders write to one recipient at once.
    // A row sealed by this version carries the day it was sealed for (bound into its
    // authentication): that is the day stored, whatever the caller passed.
    let expiry_day = row.expiry_day.unwrap_or(expiry_day);
    let max = limits.max_per_recipient;
    if count(conn, blinds)? >= max {
        return Err(SaveError::BoxFull { max });
    }
    if let Some(pair) = &row.pair {
        let max = limits.max_per_sender;
        if count_pair(conn, row.key_id, pair)? >= max {
            return Err(SaveError::SenderCap { max });
        }
    }
    let mut st = conn
        .prepare_cached(
            "INSERT INTO mail (id, blind, key_id, expiry_day, key_part, sealed, pair) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .map_err(StoreError::from)?;
    st.execute(params![
        &row.id.0[..],
        &row.blind[..],
        row.key_id,
        expiry_day,
        &row.key_part[..],
        &row.sealed,
        row.pair.as_ref().map(|p| p.to_vec())
    ])
    .map_err(StoreError::from)?;
    Ok(row.id)
}

pub(super) fn quarantine(
    conn: &Connection,
    id: &[u8],
    reason: &str,
    today: i64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO quarantine \
         (id, blind, key_id, expiry_day, key_part, sealed, reason, quarantined_day) \
         SELECT id, blind, key_id, expiry_day, key_part, sealed, ?2, ?3 FROM mail WHERE id = ?1",
        params![id, reason, today],
    )?;
    conn.execute("DELETE FROM mail WHERE id = ?1", params![id])?;
    let shown =
        MailId::from_slice(id).map_or_else(|| format!("{} bytes", id.len()), |m| m.to_string());
    // Logged once: the row leaves `mail` in this same transaction.
    warn!(id = %shown, %reason, "ESP Mail row failed to open; moved to quarantine");
    Ok(())
}

pub(super) fn load(
    conn: &Connection,
    keys: &Keyring,
    blinds: &[(KeyId, Blind)],
    today: i64,
) -> Result<Vec<PendingMail>, StoreError> {
    let mut raws = Vec::new();
    {
        let mut st = conn.prepare_cached(
            "SELECT id, blind, key_id, key_part, sealed, expiry_day FROM mail \
             WHERE blind = ?1 AND key_id = ?2",
        )?;
        for (key_id, blind) in blinds {
            let rows = st.query_map(params![&blind[..], key_id], read_raw)?;
            for r in rows {
                raws.push(r?);
            }
        }
    }
    let mut out = Vec::with_capacity(raws.len());
    let mut delivered_before =
        conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM delivered WHERE mark = ?1)")?;
    for raw in raws {
        // A row delivered and acked once, put back: a replay (an old backup's copy, or a
        // write by someone without the keyfile). It opens fine, so only this catches it.
        if let Some(id) = MailId::from_slice(&raw.id) {
            let mut replayed = false;
            for mark in keys.delivered_marks(&id)? {
                replayed |=
                    delivered_before.query_row(params![&mark[..]], |r| r.get::<_, bool>(0))?;
            }
            if replayed {
                quarantine(conn, &raw.id, REPLAYED, today)?;
                continue;
            }
        }
        match raw
            .sealed_row()
            .and_then(|row| keys.open(&row).map(|l| (row.id, l)))
        {
            Ok((id, letter)) => out.push((
                (letter.sent_secs, letter.sent_nanos),
                PendingMail {
                    id,
                    sender: letter.sender,
                    sent: UNIX_EPOCH + Duration::new(letter.sent_secs, letter.sent_nanos),
                    text: letter.text,
                },
            )),
            Err(e) => quarantine(conn, &raw.id, &e.to_string(), today)?,
        }
    }
    // Oldest first; the id breaks ties so the order is stable.
    out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.id.cmp(&b.1.id)));
    Ok(out.into_iter().map(|(_, p)| p).collect())
}

pub(super) fn confirm(conn: &Connection, keys: &Keyring, id: MailId) -> Result<bool, StoreError> {
    // Remembered until its expiry day, so a copy put back is not delivered again.
    let mark = keys.delivered_mark(&id)?;
    conn.execute(
        "INSERT OR IGNORE INTO delivered (mark, expiry_day) \
         SELECT ?2, expiry_day FROM mail WHERE id = ?1",
        params![&id.0[..], &mark[..]],
    )?;
    let n = conn.execute("DELETE FROM mail WHERE id = ?1", params![&id.0[..]])?;
    if n > 0 {
        conn.execute(
            "UPDATE meta SET value = value + 1 WHERE name = 'delivered'",
            [],
        )?;
    }
    Ok(n > 0)
}

pub(super) fn delete_all(
    conn: &Connection,
    blinds: &[(KeyId, Blind)],
) -> Result<usize, StoreError> {
    let mut n = 0;
    for (key_id, blind) in blinds {
        n += conn.execute(
            "DELETE FROM mail WHERE blind = ?1 AND key_id = ?2",
            params![&blind[..], key_id],
        )?;
    }
    Ok(n)
}

/// Retention for both tables: a quarantined row keeps the expiry day of the mail row it
/// came from, so it leaves when that mail would have (promise 7: counted and logged, not
/// kept forever for nobody).
pub(crate) fn purge(conn: &Connection, today: i64) -> Result<Purged, StoreError> {
    let mail = conn.execute("DELETE FROM mail WHERE expiry_day <= ?1", params![today])?;
    // A copy of a delivered row past this day would be purged itself: forget its id.
    conn.execute(
        "DELETE FROM delivered WHERE expiry_day <= ?1",
        params![today],
    )?;
    let quarantined = conn.execute(
        "DELETE FROM quarantine WHERE expiry_day <= ?1",
        params![today],
    )?;
    if quarantined > 0 {
        info!(
            quarantined,
            "quarantined ESP Mail rows past their expiry day deleted by retention"
        );
    }
    Ok(Purged { mail, quarantined })
}

/// Rows (mail, quarantine) past their expiry day on `today`: what a purge has to do.
pub(crate) fn expired_rows(conn: &Connection, today: i64) -> Result<(u64, u64), StoreError> {
    let count = |table: &str| -> Result<u64, StoreError> {
        Ok(conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE expiry_day <= ?1"),
            params![today],
            |r| r.get(0),
        )?)
    };
    Ok((count("mail")?, count("quarantine")?))
}

/// [`purge`] of at most `max_rows` rows (mail first, then quarantine), for an operator's
/// purge in bounded transactions; returns what it deleted (nothing: the purge is done).
pub(crate) fn purge_some(
    conn: &Connection,
    today: i64,
    max_rows: usize,
) -> Result<Purged, StoreError> {
    let max = i64::try_from(max_rows).unwrap_or(i64::MAX);
    let mail = conn.execute(
        "DELETE FROM mail WHERE id IN \
         (SELECT id FROM mail WHERE expiry_day <= ?1 LIMIT ?2)",
        params![today, max],
    )?;
    let left = i64::try_from(mail).map_or(0, |m| max.saturating_sub(m));
    let quarantined = if left > 0 {
        conn.execute(
            "DELETE FROM quarantine WHERE id IN \
             (SELECT id FROM quarantine WHERE expiry_day <= ?1 LIMIT ?2)",
            params![today, left],
        )?
    } else {
        0
    };
    Ok(Purged { mail, quarantined })
}

/// The quarantined rows, oldest quarantine first (then by id): never content.
pub(crate) fn quarantine_list(
    conn: &Connection,
    today: i64,
) -> Result<Vec<QuarantinedRow>, StoreError> {
    let mut st = conn.prepare(
        "SELECT id, key_id, quarantined_day, expiry_day, reason FROM quarantine \
         ORDER BY quarantined_day, id",
    )?;
    let rows = st.query_map([], |r| {
        let quarantined_day: i64 = r.get(2)?;
        let reason: String = r.get(4)?;
        Ok(QuarantinedRow {
            id: RowId(r.get(0)?),
            key_id: r.get(1)?,
            age_days: u64::try_from(today - quarantined_day).unwrap_or(0),
            expiry_day: r.get(3)?,
            reason: ReasonCode::of_stored(&reason),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes quarantined rows (an operator's decision); returns how many. Ids not in the
/// quarantine are an error and nothing is deleted, so a typo never half-applies.
pub(crate) fn quarantine_drop(
    conn: &Connection,
    which: &QuarantineSelect,
) -> Result<usize, StoreError> {
    let n = match which {
        QuarantineSelect::All => conn.execute("DELETE FROM quarantine", [])?,
        QuarantineSelect::Ids(ids) => {
            let mut st = conn.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?;
            let mut n = 0;
            for id in ids {
                let one = st.execute(params![&id.0])?;
                if one == 0 {
                    return Err(StoreError::NotQuarantined(id.clone()));
                }
                n += one;
            }
            n
        }
    };
    Ok(n)
}

pub(super) fn rows_under_key(conn: &Connection, key_id: KeyId) -> Result<(u64, u64), StoreError> {
    let mail: u64 = conn.query_row(
        "SELECT count(*) FROM mail WHERE key_id = ?1",
        params![key_id],
        |r| r.get(0),
    )?;
    let q: u64 = conn.query_row(
        "SELECT count(*) FROM quarantine WHERE key_id = ?1",
        params![key_id],
        |r| r.get(0),
    )?;
    Ok((mail, q))
}

/// Stats from any connection to the database (the offline `espmail stats` needs no keyfile).
pub fn stats(
    conn: &Connection,
    path: &Path,
    limits: &Limits,
    now: SystemTime,
) -> Result<Stats, StoreError> {
    let waiting: u64 = conn.query_row("SELECT count(*) FROM mail", [], |r| r.get(0))?;
    let quarantined: u64 = conn.query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))?;
    let delivered: u64 = conn
        .query_row("SELECT value FROM meta WHERE name = 'delivered'", [], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0);
    let min_expiry: Option<i64> =
        conn.query_row("SELECT min(expiry_day) FROM mail", [], |r| r.get(0))?;
    let oldest_age_days = min_expiry.map(|e| {
        let sent_day = e - i64::from(limits.retention_days);
        u64::try_from(day_of(now) - sent_day).unwrap_or(0)
    });
    let per_key: Vec<(KeyId, u64)> = {
        let mut st =
            conn.prepare("SELECT key_id, count(*) FROM mail GROUP BY key_id ORDER BY key_id")?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let file_len = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let db_bytes = file_len(path) + file_len(Path::new(&wal));
    Ok(Stats {
        waiting,
        quarantined,
        oldest_age_days,
        db_bytes,
        delivered,
        per_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_opening_error_reads_back_as_its_own_code() {
        let errors = [
            CryptoError::Authentication,
            CryptoError::UnknownKey { key_id: 7 },
            CryptoError::Malformed("id size"),
            CryptoError::Openssl("cipher"),
        ];
        for e in &errors {
            assert_eq!(
                ReasonCode::of_stored(&e.to_string()),
                ReasonCode::of(e),
                "{e}"
            );
        }
        let codes: HashSet<&str> = errors.iter().map(|e| ReasonCode::of(e).as_str()).collect();
        assert_eq!(codes.len(), errors.len());
        assert_eq!(ReasonCode::of_stored("something new"), ReasonCode::Other);
    }

    #[test]
    fn row_ids_print_and_parse_as_hex() {
        let id = RowId(vec![0x00, 0xab, 0x7f]);
        assert_eq!(id.to_string(), "00ab7f");
        assert_eq!("00AB7f".parse::<RowId>().unwrap(), id);
        for bad in ["", "abc", "zz", "0g", "é0"] {
            assert!(
                matches!(bad.parse::<RowId>(), Err(StoreError::BadRowId(_))),
                "{bad:?}"
            );
        }
    }
}
