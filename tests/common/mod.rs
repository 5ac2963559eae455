//! The one test harness: the real `espmail` binary on 127.0.0.1:0 with a temporary data
//! directory, and a small client that speaks the real protocol over TCP.
//!
//! No fixed ports and no sleeps: the server is ready when it prints
//! `espmail listening on ADDR`; every wait is for a condition, with a bounded timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What the tests' trusted front ends send as `"front_end_secret"`.
pub const FRONT_END_SECRET: &str = "integration-test-front-end-secret";

/// Writes `text` to a new file only its owner may read (as a secret must be).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// `[auth]` in trusted mode for these front-end addresses (e.g. `"127.0.0.1"`), with the
/// secret file [`TestServer::start_with_config`] writes.
pub fn trusted_config(peers: &[&str]) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "[auth]\nmode = \"trusted\"\ntrusted_peers = [{}]\n\
         trusted_secret_file = \"@FRONT_END_SECRET_FILE@\"\n",
        peers.join(", ")
    )
}

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub mod c64;
pub mod tls;

/// Everything the server wrote on stderr so far, and a bell rung on each new line.
#[derive(Default)]
struct Captured {
    state: Mutex<Log>,
    bell: Condvar,
}

impl Captured {
    /// A thread that reads `stderr` line by line into a new capture until it closes.
    fn spawn(stderr: std::process::ChildStderr) -> Arc<Captured> {
        let captured = Arc::new(Captured::default());
        let sink = captured.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        sink.state
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .text
                            .push_str(&line);
                        sink.bell.notify_all();
                    }
                }
            }
            sink.state.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
            sink.bell.notify_all();
        });
        captured
    }

    /// Everything captured so far.
    fn text(&self) -> String {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .text
            .clone()
    }

    /// Wait (bounded) until `check` finds what it looks for in the text so far, waking
    /// at each new line. Past the deadline, or once the process has exited without it,
    /// panics with `failure(text)`.
    fn wait_until<T>(
        &self,
        mut check: impl FnMut(&Log) -> Option<T>,
        failure: impl Fn(&str) -> String,
    ) -> T {
        let deadline = Instant::now() + WAIT;
        let mut log = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(found) = check(&log) {
                return found;
            }
            let now = Instant::now();
            if now >= deadline || log.closed {
                panic!("{}", failure(&log.text));
            }
            log = self.bell.wait_timeout(log, deadline - now).unwrap().0;
        }
    }
}

#[derive(Default)]
struct Log {
    text: String,
    /// stderr reached its end: the server exited.
    closed: bool,
}

/// What [`TestServer::start_with`] adds to the server's process.
#[derive(Default, Clone, Copy)]
pub struct Launch<'a> {
    /// Extra environment variables (`RUST_LOG`, `NOTIFY_SOCKET`).
    pub env: &'a [(&'a str, &'a str)],
    /// The working directory (default: the test's).
    pub cwd: Option<&'a Path>,
    /// Another `espmail` binary to run (default: the one this build made); the upgrade
    /// fixture was written by an older build through this.
    pub program: Option<&'a Path>,
}

/// A running `espmail serve`. Drop kills it.
pub struct TestServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    captured: Arc<Captured>,
    /// Kept alive for the server's lifetime unless the test brought its own directory.
    _tmp: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    args: Vec<String>,
}

impl TestServer {
    /// Start on a fresh temporary data directory, with extra `serve` arguments.
    pub fn start(extra: &[&str]) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut s = TestServer::start_in(&dir, extra);
        s._tmp = Some(tmp);
        s
    }

    /// Start with a config file holding `toml` (the data directory still comes from the
    /// command line).
    /// `@FRONT_END_SECRET_FILE@` in `toml` becomes a file holding [`FRONT_END_SECRET`]
    /// (see [`trusted_config`]).
    pub fn start_with_config(toml: &str, extra: &[&str]) -> TestServer {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("espmail.toml");
        let secret = tmp.path().join("front-end.secret");
        write_private(&secret, FRONT_END_SECRET);
        let toml = toml.replace("@FRONT_END_SECRET_FILE@", secret.to_str().unwrap());
        std::fs::write(&cfg, toml).unwrap();
        let dir = tmp.path().join("data");
        let mut args = vec!["--config", cfg.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut s = TestServer::start_in(&dir, &args);
        s._tmp = Some(tmp);
        s
    }

    /// Runs another `espmail` command on this server's data directory (and config, if
    /// any), feeding `stdin`; returns (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_espmail"));
        cmd.args(args).arg("--data-dir").arg(&self.data_dir);
        if let Some(i) = self.args.iter().position(|a| a == "--config") {
            cmd.arg("--config").arg(&self.args[i + 1]);
        }
        let out = run_with_stdin(&mut cmd, stdin);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The address as `HOST:PORT` for the protocol client.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Start on a given data directory (e.g. again after a kill).
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_with(data_dir, extra, Launch::default())
    }

    /// Start on a given data directory (relative to `launch.cwd`, if given) with what
    /// `launch` adds to the process. `RUST_LOG` is removed first, so the caller's never
    /// leaks in.
    pub fn start_with(data_dir: &Path, extra: &[&str], launch: Launch<'_>) -> TestServer {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let program = launch
            .program
            .unwrap_or(Path::new(env!("CARGO_BIN_EXE_espmail")));
        let mut cmd = Command::new(program);
        if let Some(cwd) = launch.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(&args)
            .env_remove("RUST_LOG")
            .envs(launch.env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start espmail serve");
        let captured = Captured::spawn(child.stderr.take().unwrap());
        let mut server = TestServer {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            captured,
            _tmp: None,
            data_dir: launch
                .cwd
                .map_or_else(|| data_dir.to_path_buf(), |cwd| cwd.join(data_dir)),
            args,
        };
        let line = server.wait_for_log("espmail listening on ");
        let rest = line
            .split("espmail listening on ")
            .nth(1)
            .unwrap()
            .trim()
            .to_string();
        server.addr = rest
            .parse()
            .unwrap_or_else(|_| panic!("bad address in {line:?}"));
        server
    }

    /// The TLS listener's address, from the `espmail listening for TLS on ADDR` line that
    /// follows the plain one (bounded wait).
    pub fn tls_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("espmail listening for TLS on ");
        let rest = line.split("espmail listening for TLS on ").nth(1).unwrap();
        rest.trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad address in {line:?}"))
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.captured.text()
    }

    /// Wait (bounded) until `check` finds what it looks for in the log so far.
    fn wait_until<T>(
        &self,
        check: impl FnMut(&Log) -> Option<T>,
        failure: impl Fn(&str) -> String,
    ) -> T {
        self.captured.wait_until(check, failure)
    }

    /// Wait (bounded) until a log line contains `needle`; return that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_until(
            |log| {
                log.text
                    .lines()
                    .find(|l| l.contains(needle))
                    .map(str::to_string)
            },
            |text| format!("server never logged {needle:?}; log so far:\n{text}"),
        )
    }

    /// Count of log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Wait (bounded) until at least `n` log lines contain `needle`; returns the count.
    pub fn wait_for_log_count(&self, needle: &str, n: usize) -> usize {
        let count = |log: &Log| log.text.lines().filter(|l| l.contains(needle)).count();
        self.wait_until(
            |log| Some(count(log)).filter(|c| *c >= n),
            |text| {
                let seen = text.lines().filter(|l| l.contains(needle)).count();
                format!("server logged {needle:?} {seen} times, not {n}; log so far:\n{text}")
            },
        )
    }

    /// The server's resident memory in KiB, as Linux reports it (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }

    /// Send a signal by name (TERM, INT, KILL) through kill(1); the crate forbids unsafe.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Wait (bounded) for the server to exit, and return how it exited. The server's
    /// stderr closing is the event; the process is reaped right after.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_until(
            |log| log.closed.then_some(()),
            |text| format!("server did not exit; log:\n{text}"),
        );
        self.child.as_mut().unwrap().wait().unwrap()
    }

    /// SIGKILL the server (a crash) and wait until it is gone; the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill and start again on the same data directory with the same arguments.
    pub fn restart(mut self) -> TestServer {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(|s| s.as_str()).collect();
        let mut next = TestServer::start_in(&self.data_dir, &args);
        next._tmp = self._tmp.take();
        next
    }

    /// Every file under the data directory, with its bytes (for "no plaintext on disk").
    pub fn data_files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.data_dir.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path, bytes));
                }
            }
        }
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to its end with `stdin` as its input and its stdout and stderr captured.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Whether `hay` contains `needle` as bytes.
pub fn contains_bytes(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// The usual test password of `name`: its lowercase form and `-password`.
pub fn pw(name: &str) -> String {
    format!("{}-password", name.to_lowercase())
}

/// Logs `name` in with [`pw`] (auto_register makes the avatar) and leaves at once.
pub async fn register(server: &TestServer, name: &str) {
    let mut c = espmail::talk::Client::enter(&server.host(), name, Some(&pw(name)))
        .await
        .unwrap();
    c.quit().await.unwrap();
    c.wait_closed().await.unwrap();
}

/// The text lines among `events`, lossily decoded.
pub fn texts(events: &[espmail::talk::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e.text())
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect()
}

/// Everything `c` is told up to and including the reply to a SPEAK sent now. Whatever
/// the server queued before (the debug notice, mail lines, a Ping) is among the events.
pub async fn round_trip<S: espmail::talk::Transport>(
    c: &mut espmail::talk::Client<S>,
) -> Vec<espmail::talk::Event> {
    use espmail::talk::Event;
    let me = c.me;
    c.request(
        me,
        espmail::protocol::messages::ClientRequest::Speak {
            audience: 0,
            text: espmail::log_redact::Sensitive::new(b"ping".to_vec()),
        },
    )
    .await
    .unwrap();
    c.collect_until(|e| matches!(e, Event::Reply { noid, .. } if *noid == me))
        .await
        .unwrap()
}

/// `sender` (online) leaves `text` as ESP Mail for the offline `to`: `TO:` keeps ESP on,
/// the server says `to` is offline, the ESP line ends ESP mode and brings the
/// `ESP Mail to ...? (Y/N) ` prompt, `Y` saves it and the sender is told so.
pub async fn leave_esp_mail(sender: &mut espmail::talk::Client, to: &str, text: &[u8]) {
    use espmail::talk::Event;
    assert!(
        sender.speak(format!("TO:{to}").as_bytes()).await.unwrap(),
        "TO:{to} keeps ESP on"
    );
    sender
        .wait_text(&format!(
            "{to} is offline. Your ESP will be offered as ESP Mail."
        ))
        .await
        .unwrap();
    assert!(
        !sender.esp(text).await.unwrap(),
        "ESP to an offline avatar ends ESP mode before the prompt"
    );
    let question = format!("ESP Mail to {to}? (Y/N) ");
    let prompt = sender
        .wait_for(|e| matches!(e, Event::Prompt(_)))
        .await
        .unwrap();
    assert_eq!(prompt.text().unwrap(), question.as_bytes());
    sender.answer(question.as_bytes(), b"Y").await.unwrap();
    sender
        .wait_text(&format!("ESP Mail for {to} saved."))
        .await
        .unwrap();
}

/// Alice (a fresh session, so her line bucket is full) leaves `text` as ESP Mail for the
/// offline Bob ([`leave_esp_mail`]) and leaves.
pub async fn alice_mails_bob(server: &TestServer, text: &str) {
    let mut alice = espmail::talk::Client::enter(&server.host(), "Alice", Some(&pw("Alice")))
        .await
        .unwrap();
    leave_esp_mail(&mut alice, "Bob", text.as_bytes()).await;
    alice.quit().await.unwrap();
    alice.wait_closed().await.unwrap();
}

/// `speaker` says `text` in the Plaza (ESP mode off); `listener` hears it as a SPEAK on
/// the speaker's noid.
pub async fn speech_reaches(
    speaker: &mut espmail::talk::Client,
    listener: &mut espmail::talk::Client,
    text: &[u8],
) {
    use espmail::talk::Event;
    assert!(!speaker.speak(text).await.unwrap());
    let sp = listener
        .wait_for(|e| matches!(e, Event::Speak { .. }))
        .await
        .unwrap();
    assert_eq!(
        sp,
        Event::Speak {
            noid: speaker.me,
            text: text.to_vec()
        }
    );
}

/// A TCP connection to `server` from the loopback address `local` (127.0.0.2, 127.0.0.3,
/// ... stand in for other hosts).
pub async fn connect_from(local: &str, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(local.parse().unwrap(), 0))
        .unwrap();
    socket.connect(server).await.unwrap()
}

/// The protocol client on a connection from `local`, its login line sent.
pub async fn client_from(
    local: &str,
    server: SocketAddr,
    name: &str,
    password: Option<&str>,
) -> espmail::talk::Client {
    let stream = connect_from(local, server).await;
    espmail::talk::Client::handshake(stream, name, password)
        .await
        .unwrap()
}

/// A trusted front end at `local` logging `name` in (its secret in the login line), all
/// the way into the Plaza.
pub async fn front_end_from(local: &str, server: SocketAddr, name: &str) -> espmail::talk::Client {
    use tokio::io::AsyncWriteExt;
    let mut stream = connect_from(local, server).await;
    stream
        .write_all(&espmail::talk::front_end_login_line(name, FRONT_END_SECRET))
        .await
        .unwrap();
    espmail::talk::Client::from_stream(stream)
        .into_plaza()
        .await
        .unwrap()
}

/// [`client_from`], then all the way into the Plaza (IM_ALIVE, DESCRIBE, HERE_I_AM).
pub async fn enter_from(
    local: &str,
    server: SocketAddr,
    name: &str,
    password: Option<&str>,
) -> espmail::talk::Client {
    client_from(local, server, name, password)
        .await
        .into_plaza()
        .await
        .unwrap()
}
