//! `espmail talk` driven like a person at a terminal, against the real server: each line
//! is typed only once the answer to the previous one is on the screen, and every wait is
//! bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Instant;

use common::{TestServer, WAIT};

/// One `espmail talk` process: stdin piped (left open until dropped), stdout read line by
/// line, stderr kept.
struct Talk {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Option<JoinHandle<String>>,
    seen: Vec<String>,
}

impl Talk {
    /// `talk HOST --name NAME`, with `ESPMAIL_PASSWORD` set when `password` is given.
    fn start(server: &TestServer, name: &str, password: Option<&str>) -> Talk {
        Talk::start_at(&server.host(), name, password)
    }

    fn start_at(host: &str, name: &str, password: Option<&str>) -> Talk {
        Talk::start_with(host, name, password, &[])
    }

    /// `talk HOST --name NAME EXTRA…`.
    fn start_with(host: &str, name: &str, password: Option<&str>, extra: &[&str]) -> Talk {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_espmail"));
        cmd.args(["talk", host, "--name", name])
            .args(extra)
            .env_remove("ESPMAIL_PASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = password {
            cmd.env("ESPMAIL_PASSWORD", p);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Talk {
            child,
            stdin: Some(stdin),
            lines,
            stderr: Some(stderr),
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a screen line containing `needle`; returns it.
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "talk never showed {needle:?}; screen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every screen line from now up to and including the one containing `needle`.
    fn lines_until(&mut self, needle: &str) -> Vec<String> {
        let from = self.seen.len();
        self.expect(needle);
        self.seen[from..].to_vec()
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (bounded) for the process to end by itself, its standard input still open;
    /// returns the exit code, the rest of the screen and stderr.
    fn exits(&mut self) -> (i32, Vec<String>, String) {
        let deadline = Instant::now() + WAIT;
        let from = self.seen.len();
        // Standard output closing is the event: the process is gone.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("talk did not exit; screen:\n{}", self.seen.join("\n"))
                }
            }
        }
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (code, self.seen[from..].to_vec(), stderr)
    }

    /// Everything shown so far, for asserting what was never shown.
    fn screen(&self) -> String {
        self.seen.join("\n")
    }
}

impl Drop for Talk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` logs in with the password given and is in the Plaza.
fn enter(server: &TestServer, name: &str) -> Talk {
    let mut t = Talk::start(server, name, Some(&common::pw(name)));
    t.expect(&format!("-- In the Plaza as {name}."));
    t
}

#[test]
fn the_five_minute_tour_works_with_the_text_client() {
    // README "The server and a five-minute tour", line for line.
    let server = TestServer::start(&[]);
    let mut alice = Talk::start(&server, "Alice", None);
    alice.expect("-- Alice is a new avatar: choose a password to register it");
    alice.type_line("alice-password");
    alice.type_line("alice-password");
    alice.expect("-- You are registered as Alice.");
    alice
        .expect("-- In the Plaza as Alice. Type to talk; TO:NAME sends ESP; /help lists commands.");
    alice.expect("-- Nobody else is here.");

    let mut bob = Talk::start(&server, "Bob", None);
    bob.expect("-- Bob is a new avatar");
    bob.type_line("bob-password");
    bob.type_line("bob-password");
    bob.expect("-- You are registered as Bob.");
    bob.expect("-- Here with you: Avatar ");
    let arrived = alice.expect(" arrived.");
    let bob_is = arrived
        .trim_start_matches("-- ")
        .trim_end_matches(" arrived.")
        .to_string();
    bob.type_line("hello Alice");
    alice.expect(&format!("{bob_is}: hello Alice"));
    bob.type_line("/quit");
    bob.expect("-- Goodbye.");
    alice.expect(&format!("-- {bob_is} left."));

    alice.type_line("TO:Bob");
    alice.expect("* Bob is offline. Your ESP will be offered as ESP Mail.");
    alice.expect("-- ESP to Bob: what you type goes to Bob only; an empty line ends ESP.");
    alice.type_line("see you at the fountain");
    alice.expect("-- ESP ended: what you type goes to everyone here.");
    alice.expect("?? ESP Mail to Bob? (Y/N)");
    alice.type_line("Y");
    alice.expect("* ESP Mail for Bob saved.");

    let mut bob = Talk::start(&server, "Bob", None);
    bob.type_line("bob-password");
    bob.expect("-- In the Plaza as Bob.");
    bob.expect("* You have 1 ESP Mail (times UTC).");
    let mail = bob.expect("ESP Mail from Alice, ");
    assert!(
        mail.ends_with(": see you at the fountain"),
        "one line: {mail:?}"
    );
    server.wait_for_log("delivered ESP Mail acked and deleted");
    assert!(!bob.screen().contains("bob-password"));
}

#[test]
fn a_long_line_is_cut_to_what_the_world_shows_and_talk_stays_connected() {
    let server = TestServer::start(&[]);
    let mut alice = enter(&server, "Alice");
    let mut bob = enter(&server, "Bob");
    alice.expect(" arrived.");
    // 300 characters, each one escaped on the wire: the request goes split, the server
    // caps it, and one balloon holds 58 of them.
    alice.type_line(&"]".repeat(300));
    alice
        .expect("-- That line was too long for a balloon; only its first 58 characters were sent.");
    let heard = bob.expect("]]]");
    assert!(
        heard.ends_with(&format!(": {}", "]".repeat(58))),
        "Bob heard {heard:?}"
    );
    // 200 plain characters: the 114 the world takes.
    alice.type_line(&"a".repeat(200));
    alice.expect("only its first 114 characters were sent.");
    let heard = bob.expect("aaa");
    assert!(heard.ends_with(&format!(": {}", "a".repeat(114))));
    alice.type_line("still here");
    bob.expect(": still here");
    assert!(!alice.screen().contains("cannot send"));
}

#[test]
fn talk_says_goodbye_and_exits_at_once_when_the_server_shuts_down() {
    let server = TestServer::start(&[]);
    let mut alice = enter(&server, "Alice");
    server.signal("TERM");
    // Standard input stays open: talk must not wait for a key.
    let (code, screen, stderr) = alice.exits();
    let screen = screen.join("\n");
    assert!(
        screen.contains("* The server is shutting down. Goodbye."),
        "{screen}"
    );
    assert!(screen.contains("-- The server closed the connection."));
    assert_eq!(
        code, 0,
        "a server goodbye is an orderly end; stderr: {stderr}"
    );
}

#[test]
fn talk_exits_at_once_when_the_avatar_logs_in_elsewhere() {
    let server = TestServer::start(&[]);
    let mut first = enter(&server, "Alice");
    let _second = enter(&server, "Alice");
    let (code, screen, _) = first.exits();
    assert!(screen
        .iter()
        .any(|l| l == "* You have logged in elsewhere."));
    assert_eq!(code, 0);
}

#[test]
fn one_line_per_arrival_and_departure_and_server_lines_are_never_speech() {
    let server = TestServer::start(&[]);
    let mut alice = enter(&server, "Alice");
    alice.expect("-- Nobody else is here.");
    let mut bob = enter(&server, "Bob");
    let arrived = alice.expect(" arrived.");
    bob.type_line("/quit");
    let (code, _, _) = bob.exits();
    assert_eq!(code, 0);
    let left = alice.lines_until(" left.");
    // A marker after the departure: nothing else about Bob came before it.
    alice.type_line("/who");
    let after = alice.lines_until("-- Nobody else is here.");
    let about_leaving = left
        .iter()
        .chain(&after)
        .filter(|l| l.ends_with(" left."))
        .count();
    assert_eq!(about_leaving, 1, "{left:?} {after:?}");
    assert_eq!(alice.screen().matches(" arrived.").count(), 1, "{arrived}");

    alice.type_line("TO:Nobody");
    let line = alice.expect("Cannot contact Nobody.");
    assert_eq!(line, "* Cannot contact Nobody.");
}

#[test]
fn a_new_avatar_types_its_password_twice_and_it_is_never_shown() {
    let server = TestServer::start(&[]);
    let mut carol = Talk::start(&server, "Carol", None);
    carol.expect("-- Carol is a new avatar: choose a password to register it");
    // Two different answers: the server asks again, and talk relays the question.
    carol.type_line("first-secret-1");
    carol.type_line("other-secret-2");
    carol.type_line("carol-secret-3");
    carol.type_line("carol-secret-3");
    let before = carol.lines_until("-- You are registered as Carol.");
    assert!(
        !before.iter().any(|l| l.contains("In the Plaza")),
        "in the Plaza only once the world let Carol in: {before:?}"
    );
    carol.expect("-- In the Plaza as Carol.");
    carol.type_line("/quit");
    let (code, _, stderr) = carol.exits();
    assert_eq!(code, 0);
    for secret in ["first-secret-1", "other-secret-2", "carol-secret-3"] {
        assert!(!carol.screen().contains(secret), "{secret} shown");
        assert!(!stderr.contains(secret), "{secret} on stderr");
        assert!(!server.log().contains(secret), "{secret} logged");
    }
    // The password registered is the one typed twice.
    let mut again = Talk::start(&server, "Carol", Some("carol-secret-3"));
    again.expect("-- In the Plaza as Carol.");
    assert!(!again.screen().contains("registered"));
}

#[test]
fn a_refused_login_says_so_in_words() {
    let server = TestServer::start(&[]);
    drop(enter(&server, "Bob"));
    server.wait_for_log("disconnected");
    // The password given is wrong: no retry, one clear line.
    let mut wrong = Talk::start(&server, "Bob", Some("not-bobs-password"));
    let (code, screen, stderr) = wrong.exits();
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "espmail: the server did not take the password given: Wrong password."
    );
    assert!(!screen.iter().any(|l| l.contains("In the Plaza")));
    // Typed wrong three times: the server's own words. (A fresh server: the address
    // already spent three of its five attempts a minute above, and the login throttle
    // would rightly say "Too many tries" before the third wrong answer.)
    let server = TestServer::start(&[]);
    drop(enter(&server, "Bob"));
    server.wait_for_log("disconnected");
    let mut typed = Talk::start(&server, "Bob", None);
    for _ in 0..3 {
        typed.type_line("still-not-it");
    }
    let (code, _, stderr) = typed.exits();
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "espmail: the server refused the login: Wrong name or password."
    );
}

#[test]
fn slash_lines_stay_local_and_double_slash_says_one() {
    let server = TestServer::start(&[]);
    let mut alice = enter(&server, "Alice");
    let mut bob = enter(&server, "Bob");
    alice.expect(" arrived.");
    alice.type_line("/help");
    alice.expect("-- To say a line that starts with /, type it as //.");
    alice.type_line("/dance");
    alice.expect("-- /dance is not a command");
    alice.type_line("//me waves");
    alice.type_line("help");
    bob.expect(": /me waves");
    let heard = bob.lines_until(": help");
    assert_eq!(heard.len(), 1, "nothing else reached Bob: {heard:?}");
    assert!(!bob.screen().contains("dance"));
    alice.type_line("/quit");
    let (code, screen, _) = alice.exits();
    assert_eq!(code, 0);
    assert_eq!(screen.last().map(String::as_str), Some("-- Goodbye."));
    bob.expect(" left.");
}

#[test]
fn errors_are_said_once_in_plain_words() {
    // Nobody listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let host = format!("127.0.0.1:{port}");
    let mut t = Talk::start_at(&host, "Alice", Some("alice-password"));
    let (code, _, stderr) = t.exits();
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        format!("espmail: cannot connect to {host}: connection refused (is the server running?)")
    );
    // A name the world refuses is refused before connecting, as a usage error.
    let mut t = Talk::start_at(&host, "x y!", Some("whatever-pass"));
    let (code, _, stderr) = t.exits();
    assert_eq!(code, 2);
    assert!(
        stderr.contains(
            "the name 'x y!' cannot be used: names are 1 to 16 characters from A-Z a-z 0-9 space - _ ."
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches("cannot be used").count(), 1, "{stderr}");
}

#[test]
fn waiting_mail_and_its_question_come_after_the_plaza_line() {
    let server = TestServer::start(&[]);
    // Bob is registered, and Alice leaves him two ESP Mails (through the protocol client).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::time::timeout(WAIT, async {
            common::register(&server, "Bob").await;
            common::alice_mails_bob(&server, "first of two").await;
            common::alice_mails_bob(&server, "second of two").await;
        })
        .await
        .unwrap()
    });
    let mut bob = Talk::start(&server, "Bob", None);
    bob.type_line(&common::pw("Bob"));
    let shown = bob.lines_until("?? Next ESP Mail (1 left)? (Y/N)");
    let plaza = shown
        .iter()
        .position(|l| l.starts_with("-- In the Plaza as Bob."));
    let count = shown
        .iter()
        .position(|l| l == "* You have 2 ESP Mail (times UTC).");
    assert!(plaza.is_some() && plaza < count, "{shown:?}");
    assert!(
        shown.iter().any(|l| l.ends_with(": first of two")),
        "{shown:?}"
    );
    bob.type_line("Y");
    let second = bob.expect("ESP Mail from Alice, ");
    assert!(second.ends_with(": second of two"), "{second}");
}

#[test]
fn talk_is_not_a_trusted_front_end_even_on_its_host() {
    // Issue 10 M8: a process on the trusted host without the front end's secret (here
    // `talk`) is refused, in the server's words.
    let server = TestServer::start_with_config(&common::trusted_config(&["127.0.0.1"]), &[]);
    let mut t = Talk::start(&server, "Dora", None);
    let (code, screen, stderr) = t.exits();
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "espmail: the server refused the login: Wrong name or password."
    );
    assert!(!screen.iter().any(|l| l.contains("In the Plaza")));
}

#[test]
fn talk_speaks_tls_and_sends_nothing_to_a_server_that_fails_the_check() {
    use common::tls::{make_pair, Behind, TlsFront};
    let server = TestServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let pair = make_pair(dir.path(), "server", "localhost");
    let front = TlsFront::start(&pair.paths, Behind::Forward(server.addr));
    let mut bob = enter(&server, "Bob");

    // Pinned: the whole login goes inside TLS, and speech reaches a plain player.
    let pin = pair.fingerprint.to_pin();
    let mut alice = Talk::start_with(
        &front.addr.to_string(),
        "Alice",
        Some(&common::pw("Alice")),
        &["--tls", "--pin", &pin],
    );
    alice.expect("-- In the Plaza as Alice.");
    alice.type_line("hello from inside TLS");
    bob.expect("hello from inside TLS");
    assert_eq!(front.seen.now().forwarded, 1);

    // The wrong pin (which implies --tls): talk says why, with both fingerprints, and
    // exits 1; the server behind the front never sees a connection.
    let other = make_pair(dir.path(), "other", "localhost");
    let mut carol = Talk::start_with(
        &front.addr.to_string(),
        "Carol",
        Some(&common::pw("Carol")),
        &["--pin", &other.fingerprint.to_pin()],
    );
    let (code, screen, err) = carol.exits();
    assert_eq!(code, 1, "{err}");
    assert!(screen.is_empty(), "{screen:?}");
    assert!(err.contains(&other.fingerprint.to_string()), "{err}");
    assert!(err.contains(&pair.fingerprint.to_string()), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // A CA file that is not the server's issuer: refused the same way.
    let mut dave = Talk::start_with(
        &front.addr.to_string(),
        "Dave",
        Some(&common::pw("Dave")),
        &["--ca", other.paths.cert.to_str().unwrap()],
    );
    let (code, _, err) = dave.exits();
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("espmail: cannot connect to "), "{err}");
    assert_eq!(
        front.seen.now().forwarded,
        1,
        "no connection reached the server for a failed check"
    );
}
