//! The operator commands, run as the real binary in temporary directories: `init`,
//! `account …`, `stats`, `purge`, `rotate-key`, `admin …`, and their failures (one clear
//! stderr line, exit 1; usage errors exit 2). Mail is seeded and read back through the
//! library's own `MailHandle`, exactly as the server stores it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod vault_support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use espmail::avatar::Password;
use espmail::config::Config;
use espmail::espmail::accounts::Accounts;
use espmail::espmail::crypto::MailId;
use espmail::espmail::keyfile;
use espmail::espmail::MailHandle;
use espmail::log_redact::Sensitive;
use espmail::ops;
use vault_support::flip_sealed_byte;

const DAY: Duration = Duration::from_secs(86_400);

/// One run of `espmail ARGS` with `stdin` piped in.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Run {
        assert_eq!(self.code, 0, "expected success: {self:?}");
        self
    }

    /// Failed with exit 1 and exactly one stderr line, which is returned.
    fn failed_one_line(&self) -> String {
        assert_eq!(self.code, 1, "expected exit 1: {self:?}");
        let lines: Vec<&str> = self.stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "expected one stderr line: {self:?}");
        assert!(lines[0].starts_with("espmail: "), "{self:?}");
        lines[0].to_owned()
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn espmail(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut input = child.stdin.take().unwrap();
        // The command may exit before reading (e.g. a refused name): ignore a broken pipe.
        let _ = input.write_all(stdin.as_bytes());
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

/// `espmail ARGS --data-dir DIR`.
fn in_dir(dir: &Path, args: &[&str], stdin: &str) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.push("--data-dir");
    all.push(dir.to_str().unwrap());
    espmail(&all, stdin)
}

/// A fresh temporary directory with `espmail init` done in `<tmp>/data`.
fn initialised() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    in_dir(&dir, &["init"], "").ok();
    (tmp, dir)
}

fn config_for(dir: &Path) -> Config {
    ops::load_config(&espmail::cli::DataArgs {
        config: None,
        data_dir: Some(dir.to_path_buf()),
    })
    .unwrap()
}

/// The accounts of `dir`, opened through the vault's one start-up path, as the server and
/// every command open them.
fn accounts_of(dir: &Path) -> Accounts {
    let c = config_for(dir);
    ops::vault_paths(&c)
        .open(&ops::mail_limits(&c))
        .unwrap()
        .accounts
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The mail vault of `dir`, opened as the server opens it (paths and limits from its
/// configuration).
fn mail_handle(dir: &Path) -> MailHandle {
    let c = config_for(dir);
    MailHandle::open(
        &c.data.database_path(),
        &c.data.keyfile_path(),
        ops::mail_limits(&c),
    )
    .unwrap()
}

/// Saves ESP Mail as the server does: (recipient, sender, text, sent at); returns the
/// ids, in order.
fn seed(dir: &Path, mail: &[(&str, &str, &str, SystemTime)]) -> Vec<MailId> {
    let handle = mail_handle(dir);
    rt().block_on(async {
        let mut ids = Vec::new();
        for (to, from, text, at) in mail {
            let id = handle
                .save(to, from, Sensitive::new(text.as_bytes().to_vec()), *at)
                .await
                .unwrap();
            ids.push(id);
        }
        handle.shutdown().await.unwrap();
        ids
    })
}

/// The texts waiting for `recipient`, oldest first, read (not confirmed) through the
/// library with the keyfile now on disk.
fn waiting_texts(dir: &Path, recipient: &str) -> Vec<String> {
    let handle = mail_handle(dir);
    rt().block_on(async {
        let mut mailbox = handle.open_mailbox(recipient).await.unwrap();
        let mut texts = Vec::new();
        while let Some(m) = mailbox.next() {
            texts.push(String::from_utf8(m.text.expose().clone()).unwrap());
        }
        drop(mailbox);
        handle.shutdown().await.unwrap();
        texts
    })
}

/// `name` logs in to the real server at `host` with `password`, and leaves.
fn logs_in(host: &str, name: &str, password: &str) {
    rt().block_on(async {
        let mut c = espmail::talk::Client::enter(host, name, Some(password))
            .await
            .unwrap();
        c.quit().await.unwrap();
        c.wait_closed().await.unwrap();
    });
}

/// `name` cannot log in to the real server at `host` with `password`.
fn refused(host: &str, name: &str, password: &str, why: &str) {
    let result = rt().block_on(espmail::talk::Client::enter(host, name, Some(password)));
    assert!(result.is_err(), "{why}");
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_private_keyfile_and_database_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a").join("data");
    let run = in_dir(&dir, &["init"], "");
    run.ok();
    let keyfile_path = dir.join("keyfile");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&keyfile_path), 0o600);
    assert!(dir.join("espmail.db").is_file());
    assert!(
        run.stderr.contains("BACK UP THE KEYFILE") && run.stderr.contains("unreadable"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(keyfile_path.to_str().unwrap()),
        "{run:?}"
    );
    // The keyfile loads, and its key opens the database it made.
    assert_eq!(accounts_of(&dir).key_id(), 1);

    // Run again on the complete setup: success, and nothing changed.
    let before = std::fs::read(&keyfile_path).unwrap();
    let db_before = std::fs::read(dir.join("espmail.db")).unwrap();
    let again = in_dir(&dir, &["init"], "");
    again.ok();
    assert!(
        again.stdout.starts_with("already set up: the keyfile ")
            && again.stdout.contains("nothing was changed"),
        "{again:?}"
    );
    assert!(again.stderr.is_empty(), "no new backup warning: {again:?}");
    assert_eq!(std::fs::read(&keyfile_path).unwrap(), before);
    assert_eq!(std::fs::read(dir.join("espmail.db")).unwrap(), db_before);

    // A keyfile without its database is not a complete setup: never overwritten.
    std::fs::remove_file(dir.join("espmail.db")).unwrap();
    let line = in_dir(&dir, &["init"], "").failed_one_line();
    assert!(
        line.contains("a keyfile already exists at") && line.contains("refusing to overwrite"),
        "{line}"
    );
    assert_eq!(std::fs::read(&keyfile_path).unwrap(), before);
}

#[test]
fn init_on_a_setup_whose_keyfile_does_not_match_fails() {
    let (tmp, dir) = initialised();
    let other = tmp.path().join("other");
    in_dir(&other, &["init"], "").ok();
    std::fs::copy(other.join("keyfile"), dir.join("keyfile")).unwrap();
    let line = in_dir(&dir, &["init"], "").failed_one_line();
    assert!(line.contains("does not match"), "{line}");
    assert!(!line.contains("already set up"), "{line}");
}

#[test]
fn init_refuses_a_database_whose_keyfile_is_missing() {
    let (_tmp, dir) = initialised();
    std::fs::remove_file(dir.join("keyfile")).unwrap();
    let line = in_dir(&dir, &["init"], "").failed_one_line();
    assert!(line.contains("already exists") && line.contains("restore the keyfile"));
    assert!(
        !dir.join("keyfile").exists(),
        "no new keyfile beside old mail"
    );
}

#[test]
fn account_add_list_passwd_remove_round_trip() {
    let (_tmp, dir) = initialised();
    in_dir(&dir, &["account", "add", "Bob"], "first-password\n").ok();
    in_dir(&dir, &["account", "add", "Carol Ann"], "carols-secret\n").ok();
    let list = in_dir(&dir, &["account", "list"], "");
    list.ok();
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{list:?}");
    assert!(lines[0].starts_with("Bob  created 20"), "{list:?}");
    assert!(lines[1].starts_with("Carol Ann  created 20"), "{list:?}");
    assert!(lines[0].ends_with(" UTC"), "{list:?}");
    assert!(!list.stdout.contains("first-password") && !list.stdout.contains("carols"));

    // The password really is stored, and passwd really changes it (case-insensitive name).
    in_dir(&dir, &["account", "passwd", "bob"], "second-password\n").ok();
    let accounts = accounts_of(&dir);
    assert!(accounts
        .verify("Bob", &Password::from("second-password".to_owned()))
        .is_ok());
    assert!(accounts
        .verify("Bob", &Password::from("first-password".to_owned()))
        .is_err());
    drop(accounts);

    let run = in_dir(&dir, &["account", "remove", "BOB"], "");
    run.ok();
    assert!(run.stdout.contains("removed the avatar Bob"), "{run:?}");
    let list = in_dir(&dir, &["account", "list"], "");
    assert_eq!(list.ok().stdout.lines().count(), 1);
    assert!(!list.stdout.contains("Bob"));
}

#[test]
fn account_errors_are_one_clear_line() {
    let (_tmp, dir) = initialised();
    let line = in_dir(&dir, &["account", "add", "B@d!"], "password123\n").failed_one_line();
    assert!(
        line.contains("bad avatar name") && line.contains("A-Z"),
        "{line}"
    );
    let line = in_dir(
        &dir,
        &["account", "add", "Seventeen-chars-x"],
        "password123\n",
    )
    .failed_one_line();
    assert!(line.contains("at most 16"), "{line}");
    let line = in_dir(&dir, &["account", "add", "Dan"], "short\n").failed_one_line();
    assert!(line.contains("at least 8 characters"), "{line}");
    let line = in_dir(&dir, &["account", "add", "Dan"], "").failed_one_line();
    assert!(line.contains("no password was given"), "{line}");
    in_dir(&dir, &["account", "add", "Dan"], "password123\n").ok();
    let line = in_dir(&dir, &["account", "add", "dan"], "password123\n").failed_one_line();
    assert!(line.contains("already exists"), "{line}");
    for op in ["passwd", "remove"] {
        let line = in_dir(&dir, &["account", op, "Nobody"], "password123\n").failed_one_line();
        assert!(line.contains("no avatar called Nobody"), "{line}");
    }
    // Nothing above created an avatar but Dan.
    let list = in_dir(&dir, &["account", "list"], "");
    assert_eq!(list.ok().stdout.lines().count(), 1, "{list:?}");
}

#[test]
fn remove_deletes_the_avatars_waiting_mail_and_says_how_many() {
    let (_tmp, dir) = initialised();
    in_dir(&dir, &["account", "add", "Bob"], "password123\n").ok();
    let now = SystemTime::now();
    seed(
        &dir,
        &[
            ("Bob", "Ann", "one", now),
            ("bob", "Ann", "two", now),
            (" BOB ", "Cy", "three", now),
            ("Carol", "Ann", "for carol", now),
        ],
    );
    let run = in_dir(&dir, &["account", "remove", "Bob"], "");
    run.ok();
    assert!(
        run.stdout
            .contains("removed the avatar Bob and 3 waiting ESP Mail"),
        "{run:?}"
    );
    assert!(waiting_texts(&dir, "bob").is_empty());
    assert_eq!(waiting_texts(&dir, "carol"), vec!["for carol"]);
}

#[test]
fn stats_prints_counts_and_never_names_or_text() {
    let (_tmp, dir) = initialised();
    let now = SystemTime::now();
    seed(
        &dir,
        &[
            ("Zebulon", "Quixotica", "canary-text-one", now - 10 * DAY),
            ("Zebulon", "Quixotica", "canary-text-two", now),
        ],
    );
    let run = in_dir(&dir, &["stats"], "");
    run.ok();
    for want in [
        "server: stopped",
        "messages waiting: 2",
        "quarantined: 0",
        "oldest waiting: 10 days",
        "database size: ",
    ] {
        assert!(run.stdout.contains(want), "{want} missing: {run:?}");
    }
    let all = format!("{}{}", run.stdout, run.stderr).to_lowercase();
    for secret in ["zebulon", "quixotica", "canary"] {
        assert!(!all.contains(secret), "{secret} shown: {run:?}");
    }
}

#[test]
fn stats_without_a_database_says_to_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let line = in_dir(&tmp.path().join("none"), &["stats"], "").failed_one_line();
    assert!(
        line.contains("no mail database") && line.contains("espmail init"),
        "{line}"
    );
}

#[test]
fn purge_removes_only_old_mail() {
    let (_tmp, dir) = initialised();
    let now = SystemTime::now();
    seed(
        &dir,
        &[
            ("Bob", "Ann", "old one", now - 40 * DAY),
            ("Bob", "Ann", "old two", now - 31 * DAY),
            ("Bob", "Ann", "recent", now - 2 * DAY),
            ("Bob", "Ann", "today", now),
        ],
    );
    // The configured retention (90 days) finds nothing to purge.
    let run = in_dir(&dir, &["purge"], "");
    assert!(run.ok().stdout.contains("purged 0 "), "{run:?}");
    let run = in_dir(&dir, &["purge", "--older-than", "30"], "");
    assert!(run.ok().stdout.contains("purged 2 "), "{run:?}");
    assert!(run.stdout.contains("server stopped"), "{run:?}");
    assert_eq!(waiting_texts(&dir, "bob"), vec!["recent", "today"]);
    let line = in_dir(&dir, &["purge", "--older-than", "0"], "").failed_one_line();
    assert!(line.contains("at least 1 day"), "{line}");
    assert_eq!(waiting_texts(&dir, "bob").len(), 2);
}

#[test]
fn rotate_key_keeps_mail_readable_and_accounts_working() {
    let (_tmp, dir) = initialised();
    in_dir(&dir, &["account", "add", "Bob"], "password123\n").ok();
    let now = SystemTime::now();
    seed(
        &dir,
        &[
            ("Bob", "Ann", "before rotation", now - DAY),
            ("Bob", "Cy", "second", now),
        ],
    );
    let keyfile_path = dir.join("keyfile");
    let run = in_dir(&dir, &["rotate-key"], "");
    run.ok();
    assert!(run.stdout.contains("new active key 2"), "{run:?}");
    assert!(run.stdout.contains("re-encrypted 2 "), "{run:?}");
    let kf = keyfile::load(&keyfile_path).unwrap();
    assert_eq!(kf.active_id(), 2);
    assert_eq!(mode(&keyfile_path), 0o600);

    // Every message now sits under the new key and still opens.
    let stats = in_dir(&dir, &["stats"], "");
    assert!(
        stats.ok().stdout.contains("waiting under key 2: 2"),
        "{stats:?}"
    );
    assert!(!stats.stdout.contains("under key 1"), "{stats:?}");
    assert_eq!(
        waiting_texts(&dir, "Bob"),
        vec!["before rotation", "second"]
    );
    assert!(in_dir(&dir, &["account", "list"], "")
        .ok()
        .stdout
        .starts_with("Bob  created"));

    // The accounts moved to key 2 with the mail, so key 1 is no longer needed by anything.
    assert!(
        run.stdout
            .contains("moved the avatar accounts from key 1 to key 2"),
        "{run:?}"
    );
    assert!(run.stdout.contains("key 1 is no longer needed"), "{run:?}");
    let run = in_dir(&dir, &["rotate-key", "--retire-old"], "");
    run.ok();
    assert!(run.stdout.contains("retired key 1"), "{run:?}");
    assert!(!run.stdout.contains("moved the avatar accounts"), "{run:?}");
    let kf = keyfile::load(&keyfile_path).unwrap();
    assert!(kf.get(1).is_none() && kf.active_id() == 2);
    assert_eq!(kf.keys().count(), 1);

    // With key 1 gone: mail still opens, the accounts still open and check passwords
    // (library), and the commands still work (binary).
    assert_eq!(
        waiting_texts(&dir, "bob"),
        vec!["before rotation", "second"]
    );
    let accounts = accounts_of(&dir);
    assert_eq!(accounts.key_id(), 2);
    assert!(accounts
        .verify("bob", &Password::from("password123".to_owned()))
        .is_ok());
    assert!(accounts
        .verify("bob", &Password::from("password124".to_owned()))
        .is_err());
    drop(accounts);
    assert!(in_dir(&dir, &["account", "list"], "")
        .ok()
        .stdout
        .starts_with("Bob  created"));
    in_dir(&dir, &["account", "passwd", "Bob"], "another-password\n").ok();

    // And Bob logs in to the real server, which derives the accounts key the same way.
    let server = common::TestServer::start_in(&dir, &[]);
    let host = server.host();
    logs_in(&host, "Bob", "another-password");
    refused(
        &host,
        "Bob",
        "password123",
        "the old password must not let Bob in",
    );
    drop(server);
    assert_eq!(waiting_texts(&dir, "bob").len(), 2);
}

/// A rotation cut short after the mail moved but before the accounts did (as a crash
/// before the accounts' transaction commits leaves it): everything keeps working under
/// the old key, and `rotate-key --retire-old` finishes the move and then retires it.
#[test]
fn rotate_key_finishes_an_accounts_move_cut_short() {
    let (_tmp, dir) = initialised();
    in_dir(&dir, &["account", "add", "Bob"], "password123\n").ok();
    seed(&dir, &[("Bob", "Ann", "kept", SystemTime::now())]);
    let c = config_for(&dir);
    let report = espmail::espmail::offline::rotate(
        &c.data.database_path(),
        &c.data.keyfile_path(),
        &ops::mail_limits(&c),
        ops::ROTATE_BATCH,
    )
    .unwrap();
    assert!(report.complete && report.active == 2 && report.retirable == vec![1]);
    assert_eq!(accounts_of(&dir).key_id(), 1);

    // Meanwhile the accounts work as before, under key 1.
    in_dir(&dir, &["account", "add", "Cy"], "cy-password\n").ok();
    let list = in_dir(&dir, &["account", "list"], "");
    assert_eq!(list.ok().stdout.lines().count(), 2, "{list:?}");

    let run = in_dir(&dir, &["rotate-key", "--retire-old"], "");
    run.ok();
    assert!(
        run.stdout.contains("finishing the rotation to key 2"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("moved the avatar accounts from key 1 to key 2"),
        "{run:?}"
    );
    assert!(run.stdout.contains("retired key 1"), "{run:?}");
    let kf = keyfile::load(&c.data.keyfile_path()).unwrap();
    assert!(kf.get(1).is_none());
    let accounts = accounts_of(&dir);
    assert_eq!(accounts.key_id(), 2);
    for (name, pw) in [("Bob", "password123"), ("Cy", "cy-password")] {
        assert!(
            accounts
                .verify(name, &Password::from(pw.to_owned()))
                .is_ok(),
            "{name}"
        );
    }
    assert_eq!(waiting_texts(&dir, "bob"), vec!["kept"]);
}

#[test]
fn commands_against_a_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    in_dir(&dir, &["init"], "").ok();
    seed(&dir, &[("Bob", "Ann", "old", SystemTime::now() - 50 * DAY)]);
    let mut server = common::TestServer::start_in(&dir, &[]);

    let line = in_dir(&dir, &["rotate-key"], "").failed_one_line();
    assert!(
        line.contains("the server is running") && line.contains("stop it first"),
        "{line}"
    );
    assert_eq!(keyfile::load(&dir.join("keyfile")).unwrap().active_id(), 1);

    let run = in_dir(&dir, &["admin", "debug", "status"], "");
    assert!(run.ok().stdout.contains("debug logging is off"), "{run:?}");
    let run = in_dir(&dir, &["admin", "debug", "on"], "");
    assert!(run.ok().stdout.contains("debug logging is on"), "{run:?}");
    in_dir(&dir, &["admin", "debug", "off"], "").ok();
    let run = in_dir(&dir, &["admin", "stats"], "");
    assert!(!run.ok().stdout.trim().is_empty(), "{run:?}");

    // Purge and stats work beside it, through SQLite's locking, and say so.
    let run = in_dir(&dir, &["purge", "--older-than", "30"], "");
    assert!(run.ok().stdout.contains("purged 1 "), "{run:?}");
    assert!(run.stdout.contains("server running"), "{run:?}");
    let run = in_dir(&dir, &["stats"], "");
    assert!(run.ok().stdout.contains("server: running"), "{run:?}");
    assert!(run.stdout.contains("messages waiting: 0"), "{run:?}");

    // Stopped (even by SIGKILL, leaving a stale socket file): rotate-key goes ahead.
    server.kill();
    in_dir(&dir, &["rotate-key"], "").ok();
    assert_eq!(keyfile::load(&dir.join("keyfile")).unwrap().active_id(), 2);
}

#[test]
fn admin_without_a_server_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [&["admin", "debug", "on"][..], &["admin", "stats"][..]] {
        let line = in_dir(tmp.path(), args, "").failed_one_line();
        assert!(line.contains("no espmail server is running"), "{line}");
    }
    let sock = tmp.path().join("elsewhere.sock");
    let line = espmail(
        &[
            "admin",
            "--socket",
            sock.to_str().unwrap(),
            "debug",
            "status",
        ],
        "",
    )
    .failed_one_line();
    assert!(line.contains("elsewhere.sock"), "{line}");
}

#[test]
fn wrong_missing_or_example_keyfile_is_one_clear_line() {
    let (_tmp, dir) = initialised();
    let (_tmp2, other) = initialised();
    in_dir(&dir, &["account", "add", "Bob"], "password123\n").ok();
    seed(&dir, &[("Bob", "Ann", "kept safe", SystemTime::now())]);
    let keyfile_path = dir.join("keyfile");
    let real = std::fs::read(&keyfile_path).unwrap();

    // Another installation's keyfile.
    std::fs::copy(other.join("keyfile"), &keyfile_path).unwrap();
    for args in [&["account", "list"][..], &["rotate-key"][..]] {
        let line = in_dir(&dir, args, "").failed_one_line();
        assert!(
            line.contains("different keyfile") || line.contains("does not match"),
            "{line}"
        );
    }
    let line = in_dir(&dir, &["account", "remove", "Bob"], "").failed_one_line();
    assert!(line.contains("keyfile"), "{line}");

    // No keyfile.
    std::fs::remove_file(&keyfile_path).unwrap();
    let line = in_dir(&dir, &["account", "list"], "").failed_one_line();
    assert!(
        line.contains("does not exist") && line.contains("espmail init"),
        "{line}"
    );

    // The published example.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("keyfile.example");
    std::fs::copy(example, &keyfile_path).unwrap();
    std::fs::set_permissions(&keyfile_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let line = in_dir(&dir, &["rotate-key"], "").failed_one_line();
    assert!(line.contains("published example key"), "{line}");

    // With the real keyfile back, nothing was lost.
    std::fs::write(&keyfile_path, real).unwrap();
    std::fs::set_permissions(&keyfile_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(waiting_texts(&dir, "Bob"), vec!["kept safe"]);
    assert_eq!(keyfile::load(&keyfile_path).unwrap().active_id(), 1);
}

#[test]
fn a_config_typo_is_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("espmail.toml");
    std::fs::write(&config, "[mail]\nretention_dayz = 30\n").unwrap();
    let c = config.to_str().unwrap();
    for args in [
        &["stats", "--config", c][..],
        &["init", "--config", c][..],
        &["account", "list", "--config", c][..],
        &["admin", "stats", "--config", c][..],
    ] {
        let line = espmail(args, "").failed_one_line();
        assert!(
            line.contains("espmail.toml")
                && line.contains("line 2")
                && line.contains("retention_dayz"),
            "{line}"
        );
    }
    assert!(!tmp.path().join("data").exists(), "init made nothing");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["bogus"][..],
        &["account"][..],
        &["account", "add"][..],
        &["admin", "debug", "maybe"][..],
        &["purge", "--older-than", "ten"][..],
        &["rotate-key", "--retire"][..],
    ] {
        let run = espmail(args, "");
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(!run.stderr.is_empty(), "{args:?}");
    }
    for cmd in ["init", "account", "admin", "stats", "purge", "rotate-key"] {
        let run = espmail(&[cmd, "--help"], "");
        assert_eq!(run.code, 0, "{cmd} --help: {run:?}");
        assert!(run.stdout.contains("Usage"), "{run:?}");
    }
}

#[test]
fn avatars_made_offline_log_in_to_the_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    in_dir(&dir, &["init"], "").ok();
    in_dir(&dir, &["account", "add", "Bob"], "bob-password-1\n").ok();
    let server = common::TestServer::start_in(&dir, &[]);
    let host = server.host();
    logs_in(&host, "Bob", "bob-password-1");
    refused(
        &host,
        "Bob",
        "wrong-password",
        "a wrong password must not let Bob in",
    );
    // A password changed beside the running server counts at the next login.
    in_dir(&dir, &["account", "passwd", "Bob"], "bob-password-2\n").ok();
    logs_in(&host, "Bob", "bob-password-2");
}

#[test]
fn a_damaged_database_is_one_clear_line() {
    let (_tmp, dir) = initialised();
    let db = dir.join("espmail.db");
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    for args in [&["stats"][..], &["purge"][..], &["account", "list"][..]] {
        let line = in_dir(&dir, args, "").failed_one_line();
        assert!(
            line.contains("damaged") && line.contains("restore it from a backup"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn init_follows_the_config_and_puts_the_keyfile_outside_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("espmail.toml");
    let data = tmp.path().join("srv");
    let key = tmp.path().join("keys").join("espmail.key");
    std::fs::write(
        &config,
        format!(
            "[data]\ndir = {:?}\nkeyfile = {:?}\n",
            data.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let run = espmail(&["init", "--config", c], "");
    run.ok();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(key.parent().unwrap()), 0o700);
    assert!(data.join("espmail.db").is_file());
    assert!(!data.join("keyfile").exists());
    assert!(!run.stderr.contains("inside the data directory"), "{run:?}");
    // Later commands find both through the same config.
    espmail(&["account", "add", "Eve", "--config", c], "eve-password\n").ok();
    let run = espmail(&["stats", "--config", c], "");
    assert!(run.ok().stdout.contains("messages waiting: 0"), "{run:?}");
}

#[test]
fn account_add_and_passwd_follow_the_configured_minimum() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("espmail.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\ndir = {:?}\n\n[auth]\nmin_password_len = 12\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    espmail(&["init", "--config", c], "").ok();
    // 11 characters: enough by default, not under this config.
    let line =
        espmail(&["account", "add", "Ann", "--config", c], "elevenchars\n").failed_one_line();
    assert!(line.contains("at least 12 characters"), "{line}");
    espmail(&["account", "add", "Ann", "--config", c], "twelve chars\n").ok();
    let line =
        espmail(&["account", "passwd", "Ann", "--config", c], "short pass\n").failed_one_line();
    assert!(line.contains("at least 12 characters"), "{line}");
    // Too long is called too long, never too short.
    let long = format!("{}\n", "x".repeat(257));
    let line = espmail(&["account", "passwd", "Ann", "--config", c], &long).failed_one_line();
    assert!(line.contains("at most 256 characters"), "{line}");

    // A minimum under the default is honoured as well.
    std::fs::write(
        &config,
        format!(
            "[data]\ndir = {:?}\n\n[auth]\nmin_password_len = 4\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    espmail(&["account", "add", "Bo", "--config", c], "four\n").ok();
    let list = espmail(&["account", "list", "--config", c], "");
    assert_eq!(list.ok().stdout.lines().count(), 2, "{list:?}");
}

/// Runs `espmail ARGS` on a pseudo-terminal (util-linux `script`), answering each prompt
/// once it has appeared. Returns the exit code and everything the terminal showed.
fn on_a_terminal(args: &[&str], answers: &[(&str, &str)]) -> (i32, String) {
    use std::io::Read;
    use std::sync::mpsc;
    let cmd = std::iter::once(env!("CARGO_BIN_EXE_espmail"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("util-linux `script` is needed for the terminal test");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut shown = Vec::new();
    let mut stdin = child.stdin.take().unwrap();
    for (prompt, answer) in answers {
        let deadline = std::time::Instant::now() + common::WAIT;
        while !String::from_utf8_lossy(&shown).ends_with(prompt) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => shown.extend_from_slice(&bytes),
                Err(_) => panic!(
                    "no prompt {prompt:?}; shown: {:?}",
                    String::from_utf8_lossy(&shown)
                ),
            }
        }
        stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
    // Collect the rest until the terminal closes (bounded).
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(bytes) => shown.extend_from_slice(&bytes),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("the command did not finish"),
        }
    }
    drop(stdin);
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, String::from_utf8_lossy(&shown).into_owned())
}

#[test]
fn on_a_terminal_the_password_is_asked_twice_and_never_echoed() {
    let (_tmp, dir) = initialised();
    let d = dir.to_str().unwrap();
    let (code, shown) = on_a_terminal(
        &["account", "add", "Bob", "--data-dir", d],
        &[
            ("New password for Bob: ", "typed-secret-1"),
            ("Again: ", "typed-secret-1"),
        ],
    );
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("added the avatar Bob"), "{shown}");
    assert!(!shown.contains("typed-secret"), "password echoed: {shown}");

    let (code, shown) = on_a_terminal(
        &["account", "passwd", "Bob", "--data-dir", d],
        &[
            ("New password for Bob: ", "typed-secret-2"),
            ("Again: ", "typed-secret-3"),
        ],
    );
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains("the two passwords differ"), "{shown}");
    assert!(!shown.contains("typed-secret"), "password echoed: {shown}");

    // The mismatch changed nothing: the first password still works.
    let accounts = accounts_of(&dir);
    assert!(accounts
        .verify("Bob", &Password::from("typed-secret-1".to_owned()))
        .is_ok());
}

#[test]
fn rotate_key_finishes_a_rotation_cut_short() {
    let (_tmp, dir) = initialised();
    let now = SystemTime::now();
    let texts = ["a", "b", "c", "d", "e"];
    let mail: Vec<_> = texts.iter().map(|t| ("Bob", "Ann", *t, now)).collect();
    seed(&dir, &mail);
    // A rotation that stopped after one batch of one row, as a crash would leave it.
    let c = config_for(&dir);
    let report = espmail::espmail::offline::rotate_steps(
        &c.data.database_path(),
        &c.data.keyfile_path(),
        &ops::mail_limits(&c),
        1,
        Some(1),
    )
    .unwrap();
    assert!(!report.complete && report.reencrypted == 1);

    let run = in_dir(&dir, &["rotate-key"], "");
    run.ok();
    assert!(
        run.stdout.contains("finishing the rotation to key 2"),
        "{run:?}"
    );
    assert!(run.stdout.contains("re-encrypted 4 "), "{run:?}");
    let stats = in_dir(&dir, &["stats"], "");
    assert!(
        stats.ok().stdout.contains("waiting under key 2: 5"),
        "{stats:?}"
    );
    let mut got = waiting_texts(&dir, "bob");
    got.sort();
    assert_eq!(got, texts);
}

/// The server's writer keeps saving while `purge`, `stats` and `account remove` run beside
/// it: every save succeeds and survives, and each command removes exactly its own targets.
#[test]
fn maintenance_beside_a_busy_writer_loses_nothing() {
    let (_tmp, dir) = initialised();
    in_dir(&dir, &["account", "add", "Bob"], "password123\n").ok();
    let now = SystemTime::now();
    seed(
        &dir,
        &[
            ("Bob", "Ann", "bob 1", now),
            ("Bob", "Ann", "bob 2", now),
            ("Old", "Ann", "stale", now - 60 * DAY),
        ],
    );
    // The same writer thread the server runs, saving continuously from another thread.
    let handle = mail_handle(&dir);
    // Eight senders save until every command has finished, so each command runs beside
    // the writer's batches. Each returns the (recipient, text) pairs it was told are saved.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let handle = handle.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            rt().block_on(async {
                let mut senders = Vec::new();
                for t in 0..8usize {
                    let handle = handle.clone();
                    let done = done.clone();
                    senders.push(tokio::spawn(async move {
                        let mut saved = Vec::new();
                        while saved.len() < 5 || !done.load(std::sync::atomic::Ordering::SeqCst) {
                            // Every 40 saves a sender moves on to a fresh set of 100
                            // boxes, so no box nears the 50-per-box limit however long
                            // the commands take (no timing assumption).
                            let k = saved.len();
                            let to = format!("reader{}-{}", (t * 7 + k) % 100, k / 40);
                            let text = format!("note {t}-{k}");
                            handle
                                .save(
                                    &to,
                                    "Sender",
                                    Sensitive::new(text.clone().into_bytes()),
                                    SystemTime::now(),
                                )
                                .await
                                .unwrap();
                            saved.push((to, text));
                        }
                        saved
                    }));
                }
                let mut all = Vec::new();
                for s in senders {
                    all.extend(s.await.unwrap());
                }
                all
            })
        })
    };
    let purged = in_dir(&dir, &["purge", "--older-than", "30"], "");
    assert!(purged.ok().stdout.contains("purged 1 "), "{purged:?}");
    in_dir(&dir, &["stats"], "").ok();
    let removed = in_dir(&dir, &["account", "remove", "Bob"], "");
    assert!(
        removed.ok().stdout.contains("and 2 waiting ESP Mail"),
        "{removed:?}"
    );
    in_dir(&dir, &["stats"], "").ok();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let saved = writer.join().unwrap();
    eprintln!("{} ESP Mail saved beside the commands", saved.len());
    rt().block_on(handle.shutdown()).unwrap();

    let stats = in_dir(&dir, &["stats"], "");
    assert!(
        stats
            .ok()
            .stdout
            .contains(&format!("messages waiting: {}\n", saved.len())),
        "{} saved: {stats:?}",
        saved.len()
    );
    for r in [0, 1, 37, 99] {
        let name = format!("reader{r}-0");
        let mut got = waiting_texts(&dir, &name);
        got.sort();
        let mut want: Vec<String> = saved
            .iter()
            .filter(|(to, _)| *to == name)
            .map(|(_, text)| text.clone())
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
}

/// Saves bob's mail as the server does and flips a ciphertext byte of every message whose
/// text starts with "bad", so it can no longer open. Returns the ids, in order, as hex.
fn seed_with_damage(dir: &Path, mail: &[(&str, SystemTime)]) -> Vec<String> {
    let for_bob: Vec<(&str, &str, &str, SystemTime)> = mail
        .iter()
        .map(|(text, at)| ("Bob", "Ann", *text, *at))
        .collect();
    let ids = seed(dir, &for_bob);
    let db = config_for(dir).data.database_path();
    let raw = rusqlite::Connection::open(&db).unwrap();
    for ((text, _), id) in mail.iter().zip(&ids) {
        if text.starts_with("bad") {
            flip_sealed_byte(&raw, id, 40, 0x01);
        }
    }
    ids.iter().map(ToString::to_string).collect()
}

#[test]
fn quarantine_list_and_drop_unblock_retiring_the_old_key() {
    let (_tmp, dir) = initialised();
    in_dir(&dir, &["account", "add", "Bob"], "password123\n").ok();
    let now = SystemTime::now();
    let ids = seed_with_damage(
        &dir,
        &[
            ("good", now),
            ("bad secret one", now),
            ("bad secret two", now),
        ],
    );
    let run = in_dir(&dir, &["quarantine", "list"], "");
    assert_eq!(run.ok().stdout, "", "{run:?}");
    assert!(run.stderr.contains("no quarantined rows"), "{run:?}");

    // The rotation quarantines the two damaged rows under key 1; retiring key 1 is refused
    // with the count and the commands that resolve it, and key 1 stays.
    let line = in_dir(&dir, &["rotate-key", "--retire-old"], "").failed_one_line();
    assert!(line.contains("key 1 was not retired"), "{line}");
    assert!(line.contains("2 quarantined rows"), "{line}");
    assert!(line.contains("`espmail quarantine list`"), "{line}");
    assert!(line.contains("`espmail quarantine drop --all`"), "{line}");
    let keyfile_path = dir.join("keyfile");
    assert!(keyfile::load(&keyfile_path).unwrap().get(1).is_some());
    let run = in_dir(&dir, &["stats"], "");
    assert!(run.ok().stdout.contains("quarantined: 2"), "{run:?}");
    // Without --retire-old it is a note, not a failure.
    let run = in_dir(&dir, &["rotate-key"], "");
    assert!(
        run.ok()
            .stdout
            .contains("key 1 stays in the keyfile: 2 quarantined rows"),
        "{run:?}"
    );

    // The list: one line a row, id, key, age, reason; no text.
    let run = in_dir(&dir, &["quarantine", "list"], "");
    let lines: Vec<&str> = run.ok().stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    for id in &ids[1..] {
        let line = lines.iter().find(|l| l.starts_with(id.as_str())).unwrap();
        assert!(
            line.contains("key 1")
                && line.contains("quarantined 0 days ago")
                && line.contains("reason authentication")
                && line.contains("purged in 90 days"),
            "{line}"
        );
    }
    assert!(!run.stdout.contains(&ids[0]), "{run:?}");
    assert!(!run.stdout.contains("secret"), "{run:?}");

    // Drop: bad ids are one clear line and drop nothing; then one by id, then the rest.
    let line = in_dir(&dir, &["quarantine", "drop", "xyz"], "").failed_one_line();
    assert!(line.contains("not a row id"), "{line}");
    let line = in_dir(&dir, &["quarantine", "drop", &ids[1], &ids[0]], "").failed_one_line();
    assert!(
        line.contains(&format!("no quarantined row has the id {}", ids[0])),
        "{line}"
    );
    let run = in_dir(&dir, &["quarantine", "drop", &ids[1].to_uppercase()], "");
    assert!(
        run.ok().stdout.contains("dropped 1 quarantined rows"),
        "{run:?}"
    );
    let run = in_dir(&dir, &["quarantine", "list"], "");
    assert_eq!(run.ok().stdout.lines().count(), 1, "{run:?}");
    assert!(run.stdout.starts_with(&ids[2]), "{run:?}");
    assert_eq!(in_dir(&dir, &["quarantine", "drop"], "").code, 2);

    // Beside a running server too (the server only ever adds to the quarantine).
    let server = common::TestServer::start_in(&dir, &[]);
    let run = in_dir(&dir, &["quarantine", "drop", "--all"], "");
    assert!(
        run.ok().stdout.contains("dropped 1 quarantined rows"),
        "{run:?}"
    );
    drop(server);

    let run = in_dir(&dir, &["rotate-key", "--retire-old"], "");
    assert!(run.ok().stdout.contains("retired key 1"), "{run:?}");
    assert!(keyfile::load(&keyfile_path).unwrap().get(1).is_none());
    assert_eq!(waiting_texts(&dir, "bob"), vec!["good"]);
}

#[test]
fn purge_removes_quarantined_rows_past_their_expiry_day_and_says_how_many() {
    let (_tmp, dir) = initialised();
    let now = SystemTime::now();
    seed_with_damage(
        &dir,
        &[
            ("bad old", now - 100 * DAY),
            ("bad young", now - 10 * DAY),
            ("good young", now - 10 * DAY),
        ],
    );
    // Bob's login (through the library) moves the damaged rows to quarantine.
    assert_eq!(waiting_texts(&dir, "bob"), vec!["good young"]);
    let run = in_dir(&dir, &["stats"], "");
    assert!(run.ok().stdout.contains("quarantined: 2"), "{run:?}");

    let run = in_dir(&dir, &["purge"], "");
    assert!(run.ok().stdout.contains("purged 0 ESP Mail"), "{run:?}");
    assert!(run.stdout.contains("purged 1 quarantined rows"), "{run:?}");
    let run = in_dir(&dir, &["quarantine", "list"], "");
    assert!(
        run.ok().stdout.contains("purged in 80 days"),
        "the young row stays: {run:?}"
    );
    let run = in_dir(&dir, &["purge", "--older-than", "5"], "");
    assert!(run.ok().stdout.contains("purged 1 ESP Mail"), "{run:?}");
    assert!(run.stdout.contains("purged 1 quarantined rows"), "{run:?}");
    let run = in_dir(&dir, &["stats"], "");
    assert!(run.ok().stdout.contains("quarantined: 0"), "{run:?}");
    assert!(run.stdout.contains("messages waiting: 0"), "{run:?}");
}

// --- Which config file: --config / ESPMAIL_CONFIG, else /etc/espmail/espmail.toml, else
// the defaults (the order itself is unit-tested in src/config/source.rs with a temporary
// stand-in for /etc; these run the binary).

#[test]
fn espmail_config_is_found_without_any_flag() {
    let (tmp, dir) = initialised();
    let cfg = tmp.path().join("espmail.toml");
    std::fs::write(
        &cfg,
        format!("[data]\ndir = \"{}\"\n", dir.to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .arg("stats")
        .env("ESPMAIL_CONFIG", &cfg)
        .env_remove("ESPMAIL_DATA_DIR")
        .current_dir(tmp.path()) // ./data here is not the data: only the file can find it
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("messages waiting: 0"), "{stdout}");
}

#[test]
fn serve_logs_which_config_it_uses() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("espmail.toml");
    std::fs::write(&cfg, "[mail]\nretention_days = 7\n").unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let server = common::TestServer::start_with(
        &tmp.path().join("data"),
        &[],
        common::Launch {
            env: &[("ESPMAIL_CONFIG", cfg_s)],
            ..Default::default()
        },
    );
    server.wait_for_log(&format!(
        "config from config file {cfg_s} (--config or ESPMAIL_CONFIG)"
    ));
    drop(server);
    if !Path::new(espmail::config::SYSTEM_CONFIG).exists() {
        let server = common::TestServer::start(&[]);
        server.wait_for_log("config from the built-in defaults (no --config, no ESPMAIL_CONFIG");
    }
}

// --- Honest summaries: rotate-key and purge count only what they did.

#[test]
fn rotate_key_does_not_count_a_quarantined_row_as_re_encrypted() {
    let (_tmp, dir) = initialised();
    let now = SystemTime::now();
    seed_with_damage(
        &dir,
        &[
            ("good one", now),
            ("bad one", now),
            ("good two", now),
            ("good three", now),
        ],
    );
    let run = in_dir(&dir, &["rotate-key"], "");
    run.ok();
    assert!(
        run.stdout
            .contains("re-encrypted 3 waiting ESP Mail under key 2"),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("quarantined 1 rows that could not be opened (not re-encrypted;"),
        "{run:?}"
    );
    // Not a terminal, a small job: no progress lines, only the summary.
    assert!(!run.stderr.contains("re-encrypting"), "{run:?}");
    let stats = in_dir(&dir, &["stats"], "");
    assert!(stats.ok().stdout.contains("quarantined: 1"), "{stats:?}");
    assert!(stats.stdout.contains("waiting under key 2: 3"), "{stats:?}");
    // Run again: nothing left to do, and it says so in numbers.
    let again = in_dir(&dir, &["rotate-key"], "");
    assert!(again.ok().stdout.contains("re-encrypted 0 "), "{again:?}");
    assert!(
        !again.stdout.contains("could not be opened"),
        "nothing newly quarantined: {again:?}"
    );
}

#[test]
fn rotation_and_purge_report_progress_in_batches_and_exact_counts() {
    let (_tmp, dir) = initialised();
    let now = SystemTime::now();
    let mut mail: Vec<(&str, &str, &str, SystemTime)> = vec![("Bob", "Ann", "fresh", now); 4];
    mail.extend(vec![("Bob", "Ann", "old", now - 100 * DAY); 5]);
    seed(&dir, &mail);
    let c = config_for(&dir);
    let limits = ops::mail_limits(&c);
    let (db, kf) = (c.data.database_path(), c.data.keyfile_path());

    let mut seen = Vec::new();
    let report = espmail::espmail::offline::rotate_with_progress(
        &db,
        &kf,
        &limits,
        4,
        None,
        &mut |done, total| seen.push((done, total)),
    )
    .unwrap();
    assert_eq!((report.reencrypted, report.quarantined), (9, 0));
    assert_eq!(seen, vec![(4, 9), (8, 9), (9, 9)]);

    let mut seen = Vec::new();
    let purged = espmail::espmail::offline::purge_in_batches(&db, &limits, now, 2, &mut |d, t| {
        seen.push((d, t))
    })
    .unwrap();
    assert_eq!((purged.mail, purged.quarantined), (5, 0));
    assert_eq!(seen, vec![(2, 5), (4, 5), (5, 5)]);
    // A second purge finds nothing, and counts nothing.
    let again = espmail::espmail::offline::purge_in_batches(&db, &limits, now, 2, &mut |_, _| {
        panic!("no batch to report")
    })
    .unwrap();
    assert_eq!(again.total(), 0);
    assert_eq!(waiting_texts(&dir, "bob"), vec!["fresh"; 4]);
}
