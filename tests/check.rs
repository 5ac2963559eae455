//! `espmail check`, run as the real binary: a fresh `init` checks out (exit 0, every line
//! `OK`), and each broken case gets its `FAIL <what>: <problem>; <fix>` line and exit 1,
//! without a server being started. Every run gives `--listen` (port 0 unless the address
//! is the point), so no test depends on port 1986 being free on the machine.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One `espmail check` run: exit code, stdout lines, stderr.
#[derive(Debug)]
struct Checked {
    code: i32,
    lines: Vec<String>,
    stderr: String,
}

impl Checked {
    /// The one line starting with `prefix`.
    fn line(&self, prefix: &str) -> &str {
        let found: Vec<&String> = self
            .lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .collect();
        assert_eq!(found.len(), 1, "one line starting {prefix:?} in {self:#?}");
        found[0]
    }

    fn failed(&self, n: usize) -> &Checked {
        assert_eq!(self.code, 1, "{self:#?}");
        let fails = self.lines.iter().filter(|l| l.starts_with("FAIL ")).count();
        assert_eq!(fails, n, "{self:#?}");
        assert!(
            self.stderr.contains(&format!("check found {n} problem")),
            "{self:#?}"
        );
        self
    }
}

fn check_in(dir: &Path, args: &[&str]) -> Checked {
    let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .arg("check")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("ESPMAIL_CONFIG")
        .env_remove("ESPMAIL_LISTEN")
        .env_remove("ESPMAIL_DATA_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    Checked {
        code: out.status.code().unwrap_or(-1),
        lines: stdout.lines().map(str::to_owned).collect(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// `check` on port 0: the address is never the problem.
fn check(dir: &Path) -> Checked {
    check_in(dir, &["--listen", "127.0.0.1:0"])
}

fn init(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args(["init", "--data-dir", dir.to_str().unwrap()])
        .env_remove("ESPMAIL_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A temporary directory with `init` done in `<tmp>/data`.
fn initialised() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    init(&dir);
    (tmp, dir)
}

#[test]
fn a_fresh_init_checks_out() {
    let (_tmp, dir) = initialised();
    let c = check(&dir);
    assert_eq!(c.code, 0, "{c:#?}");
    assert!(c.stderr.is_empty(), "{c:#?}");
    assert!(c.lines.iter().all(|l| l.starts_with("OK  ")), "{c:#?}");
    c.line("OK  config: ");
    assert!(c.line("OK  data directory").contains("mode 0700"), "{c:#?}");
    assert!(c.line("OK  keyfile /").contains("mode 0600"), "{c:#?}");
    c.line("OK  keyfile matches the database");
    c.line("OK  listen address 127.0.0.1:0");
    assert_eq!(c.lines.len(), 5, "{c:#?}");
}

#[test]
fn a_bad_config_value_is_named_with_its_file_and_line() {
    let (tmp, dir) = initialised();
    let cfg = tmp.path().join("espmail.toml");
    std::fs::write(&cfg, "[mail]\nretention_days = \"ninety\"\n").unwrap();
    let c = check_in(
        &dir,
        &["--listen", "127.0.0.1:0", "--config", cfg.to_str().unwrap()],
    );
    c.failed(1);
    let line = c.line("FAIL config: ");
    assert!(
        line.contains(&format!("config file {}, line 2", cfg.display())),
        "{line}"
    );
    assert!(line.contains("a whole number"), "{line}");
    assert!(line.contains("; correct it"), "{line}");
    assert_eq!(c.lines.len(), 1, "nothing else can be checked: {c:#?}");
}

#[test]
fn a_keyfile_others_can_read_is_refused_with_chmod() {
    let (_tmp, dir) = initialised();
    let kf = dir.join("keyfile");
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = check(&dir);
    c.failed(1);
    let line = c.line("FAIL keyfile /");
    assert!(
        line.contains("has mode 0644, readable by other users"),
        "{line}"
    );
    assert!(
        line.contains(&format!("; run `chmod 600 {}`", kf.display())),
        "{line}"
    );
}

#[test]
fn a_missing_keyfile_beside_a_database_must_be_restored() {
    let (_tmp, dir) = initialised();
    std::fs::remove_file(dir.join("keyfile")).unwrap();
    let c = check(&dir);
    c.failed(1);
    let line = c.line("FAIL keyfile /");
    assert!(line.contains("missing, but the database"), "{line}");
    assert!(line.contains("; restore it from its backup"), "{line}");
    // Nothing was made in its place.
    assert!(!dir.join("keyfile").exists());
}

#[test]
fn no_setup_at_all_points_at_init() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let c = check(&dir);
    c.failed(1);
    assert!(
        c.line("OK  data directory").contains("does not exist yet"),
        "{c:#?}"
    );
    assert!(
        c.line("FAIL keyfile /").contains("run `espmail init`"),
        "{c:#?}"
    );
    assert!(!dir.exists(), "check creates nothing");
}

#[test]
fn the_example_keyfile_is_refused() {
    let (_tmp, dir) = initialised();
    let kf = dir.join("keyfile");
    std::fs::remove_file(&kf).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("keyfile.example"),
        &kf,
    )
    .unwrap();
    std::fs::set_permissions(&kf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = check(&dir);
    c.failed(1);
    let line = c.line("FAIL keyfile /");
    assert!(line.contains("published example key"), "{line}");
}

#[test]
fn a_keyfile_of_another_database_does_not_match() {
    let (tmp, dir) = initialised();
    let other = tmp.path().join("other");
    init(&other);
    std::fs::copy(other.join("keyfile"), dir.join("keyfile")).unwrap();
    let db_before = std::fs::read(dir.join("espmail.db")).unwrap();
    let c = check(&dir);
    c.failed(1);
    c.line("OK  keyfile /");
    let line = c.line("FAIL keyfile matches the database");
    assert!(line.contains("made with another keyfile"), "{line}");
    assert!(
        line.contains("; put back the keyfile made for this database"),
        "{line}"
    );
    assert_eq!(
        std::fs::read(dir.join("espmail.db")).unwrap(),
        db_before,
        "check writes nothing"
    );
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

#[test]
fn a_data_directory_this_user_cannot_write_is_refused() {
    if running_as_root() {
        eprintln!("skipped: root may write to any directory");
        return;
    }
    let (_tmp, dir) = initialised();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    let c = check(&dir);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    c.failed(1);
    let line = c.line("FAIL data directory");
    assert!(line.contains("this user cannot write to it"), "{line}");
    assert!(line.contains("chown"), "{line}");
}

#[test]
fn a_data_directory_open_to_others_is_refused_with_chmod() {
    let (_tmp, dir) = initialised();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = check(&dir);
    c.failed(1);
    let line = c.line("FAIL data directory");
    assert!(line.contains("has mode 0755"), "{line}");
    assert!(
        line.contains(&format!("`chmod 700 {}`", dir.display())),
        "{line}"
    );
}

#[test]
fn an_address_not_on_this_host_is_said_so() {
    let (_tmp, dir) = initialised();
    let c = check_in(&dir, &["--listen", "192.0.2.1:1986"]);
    c.failed(1);
    let line = c.line("FAIL listen address 192.0.2.1:1986: ");
    assert!(
        line.contains("192.0.2.1 is not an address of this host; use one of this machine's"),
        "{line}"
    );
    assert!(!line.contains("another server"), "{line}");
}

#[test]
fn a_port_in_use_is_said_so() {
    let (_tmp, dir) = initialised();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let c = check_in(&dir, &["--listen", &addr]);
    c.failed(1);
    let line = c.line(&format!("FAIL listen address {addr}: "));
    assert!(line.contains("the port is already in use; "), "{line}");
}

#[test]
fn beside_its_running_server_everything_is_ok() {
    let server = common::TestServer::start(&[]);
    let addr = server.addr.to_string();
    let (code, stdout, stderr) = server.cli(&["check", "--listen", &addr], "");
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "OK  listen address {addr} (in use: the espmail server running on this data"
        )),
        "{stdout}"
    );
}

/// Issue 10 M8: in trusted mode, the front end's secret file is checked as `serve` reads
/// it: readable by every user (or too short) is a FAIL with its fix; a good one is OK.
#[test]
fn the_front_ends_secret_is_checked_in_trusted_mode() {
    let (tmp, dir) = initialised();
    let secret = tmp.path().join("front-end.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = tmp.path().join("espmail.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nmode = \"trusted\"\ntrusted_peers = [\"127.0.0.1\"]\n\
             trusted_secret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    let args = ["--listen", "127.0.0.1:0", "--config", cfg.to_str().unwrap()];
    let c = check_in(&dir, &args);
    c.failed(1);
    let line = c.line("FAIL front end's secret ");
    assert!(line.contains("chmod 640"), "{line}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    let c = check_in(&dir, &args);
    assert_eq!(c.code, 0, "{c:#?}");
    c.line("OK  front end's secret ");
}
