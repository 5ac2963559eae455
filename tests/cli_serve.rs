//! `espmail serve` refusing to start: a wrong or example keyfile, a damaged database, a
//! config typo, a bad `RUST_LOG`, a port in use, an address not on this host. Each ends with one clear `espmail: …` line on stderr that
//! names the problem and the fix, and exit code 1; nothing listens.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Runs `espmail serve ARGS` and waits (bounded) for it to exit on its own.
fn serve_fails(args: &[&str]) -> String {
    serve_fails_env(args, &[])
}

/// [`serve_fails`] with extra environment variables.
fn serve_fails_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .arg("serve")
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server exiting closes its stderr: read to the end, bounded.
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    let Ok(stderr) = rx.recv_timeout(Duration::from_secs(20)) else {
        let _ = child.kill();
        panic!("serve {args:?} did not exit");
    };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("espmail listening on"),
        "{args:?} must not start: {stderr}"
    );
    let last = stderr.trim_end().lines().last().unwrap_or("").to_owned();
    assert!(last.starts_with("espmail: "), "{args:?}: {stderr}");
    last
}

fn init(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args(["init", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn data_args(dir: &Path) -> Vec<String> {
    vec![
        "--data-dir".into(),
        dir.to_str().unwrap().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ]
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_keyfile_from_another_installation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    init(&a);
    init(&b);
    std::fs::copy(b.join("keyfile"), a.join("keyfile")).unwrap();
    let line = serve_fails(&strs(&data_args(&a)));
    assert!(
        line.contains("keyfile does not match") && line.contains("restore it from its backup"),
        "{line}"
    );
}

#[test]
fn the_example_keyfile_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    init(&dir);
    let keyfile = dir.join("keyfile");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("keyfile.example"),
        &keyfile,
    )
    .unwrap();
    std::fs::set_permissions(&keyfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let line = serve_fails(&strs(&data_args(&dir)));
    assert!(
        line.contains("published example key") && line.contains("espmail init"),
        "{line}"
    );
}

#[test]
fn a_keyfile_readable_by_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    init(&dir);
    std::fs::set_permissions(dir.join("keyfile"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = serve_fails(&strs(&data_args(&dir)));
    assert!(line.contains("chmod 600"), "{line}");
}

#[test]
fn a_damaged_database_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    init(&dir);
    std::fs::write(dir.join("espmail.db"), vec![0x5a; 8192]).unwrap();
    let line = serve_fails(&strs(&data_args(&dir)));
    assert!(
        line.contains("damaged") && line.contains("restore it from a backup"),
        "{line}"
    );
}

#[test]
fn a_config_typo_names_file_line_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("espmail.toml");
    std::fs::write(
        &config,
        "[server]\nmax_connections = 5\nlisen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let line = serve_fails(&["--config", config.to_str().unwrap()]);
    assert!(
        line.contains("espmail.toml")
            && line.contains("line 3")
            && line.contains("`lisen`")
            && line.contains("`listen`"),
        "{line}"
    );
    // A bad value says what is allowed.
    std::fs::write(&config, "[auth]\nmode = \"passwd\"\n").unwrap();
    let line = serve_fails(&["--config", config.to_str().unwrap()]);
    assert!(
        line.contains("`password`") && line.contains("`trusted`"),
        "{line}"
    );
}

#[test]
fn a_port_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let line = serve_fails(&[
        "--data-dir",
        tmp.path().join("d").to_str().unwrap(),
        "--listen",
        &addr,
    ]);
    assert!(
        line.contains(&format!(
            "cannot listen on {addr}: the port is already in use"
        )) && line.contains("another server")
            && line.contains("change --listen"),
        "{line}"
    );
}

#[test]
fn an_address_not_on_this_host_is_not_blamed_on_another_server() {
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): no host has it, so bind fails with
    // EADDRNOTAVAIL. Binding sends nothing on any network.
    let tmp = tempfile::tempdir().unwrap();
    let line = serve_fails(&[
        "--data-dir",
        tmp.path().join("d").to_str().unwrap(),
        "--listen",
        "192.0.2.1:1986",
    ]);
    assert!(
        line.contains("cannot listen on 192.0.2.1:1986: 192.0.2.1 is not an address of this host")
            && line.contains("0.0.0.0")
            && line.contains("change --listen"),
        "{line}"
    );
    assert!(!line.contains("another server"), "{line}");
    assert!(
        !tmp.path().join("d").exists(),
        "nothing is created before the bind succeeds"
    );
}

#[test]
fn a_bad_rust_log_is_refused_like_a_bad_level() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    let args = data_args(&dir);
    let line = serve_fails_env(&strs(&args), &[("RUST_LOG", "inof")]);
    assert!(
        line.contains("environment variable RUST_LOG: log filter \"inof\" is not valid"),
        "{line}"
    );
}

#[test]
fn a_host_name_in_the_config_gets_an_example() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("espmail.toml");
    std::fs::write(&config, "[server]\nlisten = \"localhost:1986\"\n").unwrap();
    let line = serve_fails(&["--config", config.to_str().unwrap()]);
    assert!(
        line.contains("line 2")
            && line.contains(
                "listen must be an IP address and port, such as 127.0.0.1:1986 or [::]:1986 \
                 (host names are not accepted)"
            ),
        "{line}"
    );
}

#[test]
fn a_missing_config_file_is_named_and_the_cause_said_once() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nowhere.toml");
    let line = serve_fails(&["--config", missing.to_str().unwrap()]);
    assert!(
        line.contains(&format!("cannot read config file {}", missing.display())),
        "{line}"
    );
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}
