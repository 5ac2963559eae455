//! Quarantined ESP Mail through the library: retention purges it at the expiry day it
//! kept, operators list it (never content) and drop it, and a key that only quarantined
//! rows still name is refused retirement with a message that says how to resolve it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use espmail_test_macros::bounded;
use std::time::{Duration, SystemTime};

use espmail::espmail::crypto::MailId;
use espmail::espmail::keyfile;
use espmail::espmail::store::day_of;
use espmail::espmail::{offline, Limits, Purged, QuarantineSelect, ReasonCode, RowId, StoreError};
use rusqlite::Connection;

mod vault_support;
use vault_support::{flip_sealed_byte, text, Vault};

const DAY: u64 = 86_400;

/// The quarantine table's ids, in order.
fn quarantine_ids(v: &Vault) -> Vec<Vec<u8>> {
    let raw = v.raw();
    let mut st = raw
        .prepare("SELECT id FROM quarantine ORDER BY id")
        .unwrap();
    let ids = st
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<Vec<u8>>, _>>()
        .unwrap();
    ids
}

/// Saves `(text, sent)` for bob, tampers with those whose text starts with "bad", and
/// logs bob in once so the tampered rows move to quarantine. Returns the ids in order.
async fn seed_and_quarantine(v: &Vault, mail: &[(&str, SystemTime)]) -> Vec<MailId> {
    let h = v.open(Limits::default());
    let mut ids = Vec::new();
    for (t, sent) in mail {
        ids.push(h.save("bob", "alice", text(t), *sent).await.unwrap());
    }
    h.shutdown().await.unwrap();
    for ((t, _), id) in mail.iter().zip(&ids) {
        if t.starts_with("bad") {
            flip_sealed_byte(&v.raw(), id, 40, 0x01);
        }
    }
    let h = v.open(Limits::default());
    drop(h.open_mailbox("bob").await.unwrap());
    h.shutdown().await.unwrap();
    ids
}

#[bounded]
#[tokio::test]
async fn retention_purges_quarantined_rows_at_the_expiry_day_they_kept() {
    let v = Vault::new();
    let now = SystemTime::now();
    let ids = seed_and_quarantine(
        &v,
        &[
            ("bad old", now - Duration::from_secs(100 * DAY)),
            ("bad young", now - Duration::from_secs(10 * DAY)),
            ("good young", now - Duration::from_secs(10 * DAY)),
        ],
    )
    .await;
    let s = offline::stats(&v.db, &Limits::default()).unwrap();
    assert_eq!((s.waiting, s.quarantined), (1, 2));
    // The quarantined rows kept their mail's expiry day (send day + 90).
    let listed = offline::quarantine_list(&v.db, &Limits::default(), now).unwrap();
    let expiry_of = |id: &MailId| {
        listed
            .iter()
            .find(|r| r.id.0 == id.0)
            .map(|r| r.expiry_day)
            .unwrap()
    };
    assert_eq!(
        expiry_of(&ids[0]),
        day_of(now - Duration::from_secs(100 * DAY)) + 90
    );
    assert_eq!(
        expiry_of(&ids[1]),
        day_of(now - Duration::from_secs(10 * DAY)) + 90
    );

    // The server's retention task path: only the old quarantined row goes.
    let h = v.open(Limits::default());
    assert_eq!(
        h.purge_expired(now).await.unwrap(),
        Purged {
            mail: 0,
            quarantined: 1
        }
    );
    assert_eq!(
        h.purge_expired(now).await.unwrap(),
        Purged::default(),
        "nothing twice"
    );
    h.shutdown().await.unwrap();
    assert_eq!(quarantine_ids(&v), vec![ids[1].0.to_vec()]);

    // The offline `espmail purge` path, 81 days on: the young quarantined row and the
    // young mail both reach their expiry day.
    let later = now + Duration::from_secs(81 * DAY);
    assert_eq!(
        offline::purge(&v.db, &Limits::default(), later).unwrap(),
        Purged {
            mail: 1,
            quarantined: 1
        }
    );
    let s = offline::stats(&v.db, &Limits::default()).unwrap();
    assert_eq!((s.waiting, s.quarantined), (0, 0));
}

#[bounded]
#[tokio::test]
async fn operators_list_and_drop_quarantined_rows_without_seeing_content() {
    let v = Vault::new();
    let now = SystemTime::now();
    let ids = seed_and_quarantine(
        &v,
        &[
            ("bad secret one", now),
            ("bad secret two", now),
            ("bad secret three", now),
            ("good", now),
        ],
    )
    .await;
    // One row quarantined five days ago: its age shows in whole days.
    let raw = Connection::open(&v.db).unwrap();
    raw.execute(
        "UPDATE quarantine SET quarantined_day = quarantined_day - 5 WHERE id = ?1",
        [&ids[2].0[..]],
    )
    .unwrap();
    drop(raw);

    let limits = Limits::default();
    let listed = offline::quarantine_list(&v.db, &limits, now).unwrap();
    assert_eq!(listed.len(), 3);
    // Oldest quarantine first.
    assert_eq!(listed[0].id.0, ids[2].0.to_vec());
    assert_eq!(listed[0].age_days, 5);
    assert!(listed[1..].iter().all(|r| r.age_days == 0));
    assert!(listed
        .iter()
        .all(|r| r.key_id == 1 && r.reason == ReasonCode::Authentication));
    let shown = format!("{listed:?}");
    assert!(!shown.contains("secret"), "{shown}");

    // An unknown id is refused and nothing is dropped, even beside a good one.
    let unknown: RowId = "00112233".parse().unwrap();
    let err = offline::quarantine_drop(
        &v.db,
        &limits,
        &QuarantineSelect::Ids(vec![listed[1].id.clone(), unknown.clone()]),
    )
    .unwrap_err();
    assert!(matches!(&err, StoreError::NotQuarantined(id) if *id == unknown));
    assert!(err.to_string().contains("espmail quarantine list"), "{err}");
    assert_eq!(quarantine_ids(&v).len(), 3);
    // The waiting mail's id is not a quarantined row either.
    assert!(matches!(
        offline::quarantine_drop(
            &v.db,
            &limits,
            &QuarantineSelect::Ids(vec![RowId(ids[3].0.to_vec())])
        ),
        Err(StoreError::NotQuarantined(_))
    ));

    // Drop one by id, then the rest; the good mail is untouched.
    assert_eq!(
        offline::quarantine_drop(
            &v.db,
            &limits,
            &QuarantineSelect::Ids(vec![listed[0].id.clone()])
        )
        .unwrap(),
        1
    );
    assert_eq!(quarantine_ids(&v).len(), 2);
    assert!(!quarantine_ids(&v).contains(&ids[2].0.to_vec()));
    assert_eq!(
        offline::quarantine_drop(&v.db, &limits, &QuarantineSelect::All).unwrap(),
        2
    );
    assert_eq!(
        offline::quarantine_drop(&v.db, &limits, &QuarantineSelect::All).unwrap(),
        0
    );
    let s = offline::stats(&v.db, &limits).unwrap();
    assert_eq!((s.waiting, s.quarantined), (1, 0));
    let h = v.open(Limits::default());
    let mut mb = h.open_mailbox("bob").await.unwrap();
    assert_eq!(mb.next().unwrap().text.expose().as_slice(), b"good");
    drop(mb);
    h.shutdown().await.unwrap();
}

#[bounded]
#[tokio::test]
async fn quarantined_rows_hold_an_old_key_until_the_operator_drops_them() {
    let v = Vault::new();
    let now = SystemTime::now();
    seed_and_quarantine(&v, &[("good", now), ("bad one", now), ("bad two", now)]).await;
    let limits = Limits::default();
    let report = offline::rotate(&v.db, &v.key, &limits, 16).unwrap();
    assert!(report.complete);
    assert_eq!(report.active, 2);
    assert!(report.retirable.is_empty(), "{report:?}");
    assert_eq!(report.held_by_quarantine, vec![(1, 2)]);

    let err = offline::retire(&v.db, &v.key, &limits, 1).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::KeyInUse {
                key_id: 1,
                mail: 0,
                quarantined: 2
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("2 quarantined rows"), "{msg}");
    assert!(msg.contains("espmail quarantine drop --all"), "{msg}");
    assert!(keyfile::load(&v.key).unwrap().get(1).is_some());

    assert_eq!(
        offline::quarantine_drop(&v.db, &limits, &QuarantineSelect::All).unwrap(),
        2
    );
    let report = offline::rotate(&v.db, &v.key, &limits, 16).unwrap();
    assert_eq!(
        (report.retirable.clone(), report.held_by_quarantine.clone()),
        (vec![1], vec![])
    );
    offline::retire(&v.db, &v.key, &limits, 1).unwrap();
    assert!(keyfile::load(&v.key).unwrap().get(1).is_none());
    let h = v.open(Limits::default());
    let mut mb = h.open_mailbox("bob").await.unwrap();
    assert_eq!(mb.next().unwrap().text.expose().as_slice(), b"good");
    drop(mb);
    h.shutdown().await.unwrap();
}

/// Every column of bob's mail rows, as someone with a copy of the database holds them.
fn copy_rows(v: &Vault) -> Vec<Vec<rusqlite::types::Value>> {
    let raw = v.raw();
    let mut st = raw
        .prepare("SELECT id, blind, key_id, expiry_day, key_part, sealed, pair FROM mail")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            (0..7).map(|i| r.get(i)).collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    rows
}

/// Issue 10 L3: a delivered row put back (from an old copy of the database) is not
/// delivered again but quarantined as "replayed"; and a row's expiry day cannot be moved
/// (it is bound into the row's authentication).
#[bounded]
#[tokio::test]
async fn a_replayed_row_is_quarantined_and_an_expiry_day_cannot_be_moved() {
    let v = Vault::new();
    let h = v.open(Limits::default());
    h.save("bob", "alice", text("read once"), SystemTime::now())
        .await
        .unwrap();
    let copy = copy_rows(&v);
    assert_eq!(copy.len(), 1);
    // Bob reads it and acks: it is deleted.
    let mut mb = h.open_mailbox("bob").await.unwrap();
    let m = mb.next().unwrap();
    mb.confirm(m.id).await.unwrap();
    drop(mb);
    assert_eq!(h.count_waiting("bob").await.unwrap(), 0);
    // The old copy is put back, byte for byte.
    v.raw()
        .execute(
            "INSERT INTO mail (id, blind, key_id, expiry_day, key_part, sealed, pair) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params_from_iter(copy[0].iter()),
        )
        .unwrap();
    let mb = h.open_mailbox("bob").await.unwrap();
    assert_eq!(mb.remaining(), 0, "a replayed row was delivered again");
    drop(mb);
    let listed = offline::quarantine_list(&v.db, &Limits::default(), SystemTime::now()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reason, ReasonCode::Replayed);
    assert_eq!(listed[0].reason.to_string(), "replayed");

    // A new row whose expiry day is moved on (to keep it past retention) no longer opens.
    h.save("bob", "alice", text("expires"), SystemTime::now())
        .await
        .unwrap();
    v.raw()
        .execute("UPDATE mail SET expiry_day = expiry_day + 1000", [])
        .unwrap();
    let mb = h.open_mailbox("bob").await.unwrap();
    assert_eq!(mb.remaining(), 0);
    drop(mb);
    let listed = offline::quarantine_list(&v.db, &Limits::default(), SystemTime::now()).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .any(|r| r.reason == ReasonCode::Authentication));
    h.shutdown().await.unwrap();
}
