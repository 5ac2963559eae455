//! A data directory written before the accounts joined the vault's schema (schema 1:
//! `accounts_meta` beside the mail tables, `user_version` 1) opens with this build and
//! loses nothing: every avatar, every waiting ESP Mail, the quarantined row; and nothing
//! is re-keyed: the keyfile is not touched and the accounts stay under the key they had.
//!
//! The fixture `tests/fixtures/upgrade-v1/` was written by the espmail binary of commit
//! ef7ddb2 through [`make_upgrade_v1_fixture`] (see the fixture's README).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{contains_bytes, leave_esp_mail, round_trip, texts, Launch, TestServer};
use espmail::avatar::Password;
use espmail::espmail::keyfile;
use espmail::espmail::open::VaultPaths;
use espmail::espmail::Limits;
use espmail::talk::Client;

const ANN_PW: &str = "ann-password";
const BOB_PW: &str = "bob-password";
/// Cy registered at login (auto-registration), not with `espmail account add`.
const CY_PW: &str = "cy-password";
/// Waiting for Bob since before the upgrade.
const FOR_BOB: &str = "kept across the upgrade";
/// Waiting for Ann since before the upgrade.
const FOR_ANN: &str = "and this one for Ann";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade-v1")
}

/// A copy of the fixture in a temporary data directory, with the modes espmail insists
/// on (git keeps no file modes but the executable bit).
fn data_dir_from_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for name in ["keyfile", "espmail.db"] {
        std::fs::copy(fixture().join(name), dir.join(name)).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (tmp, dir)
}

/// Runs this build's `espmail ARGS --data-dir DIR`; returns (exit code, stdout, stderr).
fn espmail(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = common::run_with_stdin(
        Command::new(env!("CARGO_BIN_EXE_espmail"))
            .args(args)
            .arg("--data-dir")
            .arg(dir),
        "",
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One query's single value, read as another program would.
fn query_i64(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

const HAS_ACCOUNTS_META: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'accounts_meta')";

/// `name` logs in to `server` with `password`, reads everything up to the reply of a SPEAK
/// (mail lines come before it) and leaves; returns the text lines.
async fn logs_in_and_reads(server: &TestServer, name: &str, password: &str) -> Vec<String> {
    let mut c = Client::enter(&server.host(), name, Some(password))
        .await
        .unwrap();
    let seen = texts(&round_trip(&mut c).await);
    c.quit().await.unwrap();
    c.wait_closed().await.unwrap();
    seen
}

#[test]
fn the_fixture_is_a_schema_1_data_directory() {
    let db = fixture().join("espmail.db");
    assert_eq!(query_i64(&db, "PRAGMA user_version"), 1);
    assert_eq!(query_i64(&db, HAS_ACCOUNTS_META), 1);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM accounts"), 3);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM mail"), 2);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM quarantine"), 1);
    // Folded at the old server's SIGTERM: nothing of it lives only in a -wal file.
    assert!(!fixture().join("espmail.db-wal").exists());
}

#[bounded]
#[tokio::test]
async fn a_schema_1_data_directory_opens_with_nothing_lost_and_nothing_rekeyed() {
    tokio::time::timeout(common::WAIT * 6, async {
        let (_tmp, dir) = data_dir_from_fixture();
        let db = dir.join("espmail.db");
        let keyfile_before = std::fs::read(dir.join("keyfile")).unwrap();
        let active_before = keyfile::load(&dir.join("keyfile")).unwrap().active_id();

        // The operator's view, keyfile-free: everything still waits, the quarantine kept.
        let (code, out, err) = espmail(&dir, &["stats"]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("messages waiting: 2\n"), "{out}");
        assert!(out.contains("quarantined: 1\n"), "{out}");
        assert!(
            out.contains(&format!("waiting under key {active_before}: 2")),
            "{out}"
        );

        // The accounts, through the keyfile: both avatars, as registered.
        let (code, out, err) = espmail(&dir, &["account", "list"]);
        assert_eq!(code, 0, "{err}");
        let names: Vec<&str> = out
            .lines()
            .map(|l| l.split("  created").next().unwrap())
            .collect();
        assert_eq!(names, ["Ann", "Bob", "Cy"], "{out}");
        // That first keyed open upgraded the schema, recording the key the old check named.
        assert_eq!(
            query_i64(&db, "PRAGMA user_version"),
            espmail::espmail::store::MIGRATIONS.len() as i64
        );
        assert_eq!(query_i64(&db, HAS_ACCOUNTS_META), 0);
        assert_eq!(
            query_i64(&db, "SELECT value FROM meta WHERE name = 'accounts_key'"),
            i64::from(active_before)
        );

        // The library opens the same way and checks the old passwords.
        let paths = VaultPaths {
            dir: dir.clone(),
            database: db.clone(),
            keyfile: dir.join("keyfile"),
        };
        let vault = paths.open(&Limits::default()).unwrap();
        assert_eq!(vault.accounts.key_id(), active_before);
        for (name, password) in [("ann", ANN_PW), ("BOB", BOB_PW), ("Cy", CY_PW)] {
            vault
                .accounts
                .verify(name, &Password::from(password.to_owned()))
                .unwrap();
        }
        assert!(vault
            .accounts
            .verify("bob", &Password::from(ANN_PW.to_owned()))
            .is_err());
        drop(vault);

        // The real server: each avatar logs in with its old password and gets its mail.
        let server = TestServer::start_in(&dir, &[]);
        let bob = logs_in_and_reads(&server, "Bob", BOB_PW).await;
        assert!(
            bob.contains(&"You have 1 ESP Mail (times UTC).".to_string()),
            "{bob:?}"
        );
        assert!(
            bob.iter().any(|l| l.starts_with("ESP Mail from Cy, ")),
            "{bob:?}"
        );
        assert!(bob.contains(&FOR_BOB.to_string()), "{bob:?}");
        let ann = logs_in_and_reads(&server, "Ann", ANN_PW).await;
        assert!(ann.contains(&FOR_ANN.to_string()), "{ann:?}");
        drop(server);

        // The quarantined row is still set aside, never delivered, never dropped.
        let (code, out, err) = espmail(&dir, &["quarantine", "list"]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.contains("reason authentication"), "{out}");
        // Nothing re-keyed: the keyfile is byte for byte what it was.
        assert_eq!(std::fs::read(dir.join("keyfile")).unwrap(), keyfile_before);
    })
    .await
    .expect("the upgrade test finished in time");
}

/// Writes the fixture with an older espmail binary: `ESPMAIL_OLD_BIN=/path/to/espmail
/// ESPMAIL_FIXTURE_OUT=tests/fixtures/upgrade-v1 cargo test --test upgrade -- --ignored`.
/// Ann and Bob are added with `espmail account add`. Through the old server, Ann leaves
/// Bob an ESP Mail; with the server stopped, one byte of its ciphertext is flipped, so
/// Bob's next login quarantines it. Then Cy registers at login and leaves one ESP Mail for
/// each of them, and SIGTERM stops the server (folding the WAL into the database).
#[bounded]
#[tokio::test]
#[ignore = "writes the fixture; needs ESPMAIL_OLD_BIN and ESPMAIL_FIXTURE_OUT"]
async fn make_upgrade_v1_fixture() {
    let old = PathBuf::from(std::env::var("ESPMAIL_OLD_BIN").unwrap());
    let out = PathBuf::from(std::env::var("ESPMAIL_FIXTURE_OUT").unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let old_cli = |args: &[&str], stdin: &str| {
        let mut cmd = Command::new(&old);
        let o = common::run_with_stdin(cmd.args(args).arg("--data-dir").arg(&dir), stdin);
        assert!(o.status.success(), "{args:?}: {o:?}");
    };
    old_cli(&["init"], "");
    old_cli(&["account", "add", "Ann"], &format!("{ANN_PW}\n"));
    old_cli(&["account", "add", "Bob"], &format!("{BOB_PW}\n"));
    let launch = Launch {
        program: Some(&old),
        ..Launch::default()
    };

    let mut server = TestServer::start_with(&dir, &[], launch);
    let mut ann = Client::enter(&server.host(), "Ann", Some(ANN_PW))
        .await
        .unwrap();
    leave_esp_mail(&mut ann, "Bob", b"this one is damaged on disk").await;
    ann.quit().await.unwrap();
    ann.wait_closed().await.unwrap();
    server.signal("TERM");
    assert!(server.wait_exit().success());

    // One ciphertext byte of the only row, after its nonce: it no longer authenticates.
    {
        let conn = rusqlite::Connection::open(dir.join("espmail.db")).unwrap();
        let (id, mut sealed): (Vec<u8>, Vec<u8>) = conn
            .query_row("SELECT id, sealed FROM mail", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        sealed[20] ^= 0x01;
        conn.execute(
            "UPDATE mail SET sealed = ?1 WHERE id = ?2",
            rusqlite::params![sealed, id],
        )
        .unwrap();
    }

    let mut server = TestServer::start_with(&dir, &[], launch);
    // Bob's login finds the damaged row: quarantined, not shown.
    let bob = logs_in_and_reads(&server, "Bob", BOB_PW).await;
    assert!(
        !bob.iter()
            .any(|l| contains_bytes(l.as_bytes(), b"ESP Mail from")),
        "{bob:?}"
    );
    let mut cy = Client::enter(&server.host(), "Cy", Some(CY_PW))
        .await
        .unwrap();
    leave_esp_mail(&mut cy, "Bob", FOR_BOB.as_bytes()).await;
    leave_esp_mail(&mut cy, "Ann", FOR_ANN.as_bytes()).await;
    cy.quit().await.unwrap();
    cy.wait_closed().await.unwrap();
    server.signal("TERM");
    assert!(server.wait_exit().success());

    std::fs::create_dir_all(&out).unwrap();
    for name in ["keyfile", "espmail.db"] {
        std::fs::copy(dir.join(name), out.join(name)).unwrap();
    }
}
