//! The canary tests (issue 4, DESIGN.md promise 5): the real server, logging everything,
//! while avatars log in with canary passwords (in the login line, at the in-world
//! `Password: ` prompt, and choosing one in-world), chat, ESP live, leave ESP Mail and
//! receive it at their next login. Every line the server wrote (stderr and the log file)
//! is then searched for every canary in every form a mistake could print it in; and the
//! structural lines an admin needs (packets by length and fingerprint, avatar names, the
//! switch and who asked) must be there, so the test cannot pass by logging nothing.
//!
//! Two runs: `[logging] level = "trace"` from the start (every target, every level), and
//! `info` with debug switched on at runtime through the admin socket.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{contains_bytes, TestServer};
use espmail::log_redact::{leak_forms, DEBUG_NOTICE};
use espmail::protocol::habitat;
use espmail::talk::{Client, Event};

/// The secrets of one run. Unique per run (pid and clock), so a leak cannot hide behind
/// text that happens to be in the log anyway, and no two runs share one.
struct Canaries {
    /// Alice's password, sent in the login line.
    alice_pw: String,
    /// Bob's password: in the login line when he registers, then typed at the prompt.
    bob_pw: String,
    /// Carol's password, chosen in-world (typed twice at the prompts).
    carol_pw: String,
    /// Said in the Plaza.
    chat: String,
    /// Sent as live ESP.
    esp: String,
    /// Left as ESP Mail and delivered at the next login.
    mail: String,
}

impl Canaries {
    fn new() -> Canaries {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let tag = format!("{:x}{:08x}", std::process::id(), nanos);
        Canaries {
            alice_pw: format!("Apw{tag}q"),
            bob_pw: format!("Bpw{tag}z"),
            carol_pw: format!("Cpw{tag}k"),
            // `]` is 0x5D, which the Habitat layer escapes: the escaped form differs from
            // the raw one and is searched for too.
            chat: format!("chat-canary {tag} by the ]fountain["),
            esp: format!("esp-canary {tag} \"quoted\" ]x"),
            mail: format!("mail-canary {tag} meet me ]at noon"),
        }
    }

    fn all(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("alice password", &self.alice_pw),
            ("bob password", &self.bob_pw),
            ("carol password", &self.carol_pw),
            ("chat text", &self.chat),
            ("live ESP text", &self.esp),
            ("ESP Mail text", &self.mail),
        ]
    }
}

/// Every form of `secret` a log line must never contain: [`leak_forms`] (raw,
/// Debug-quoted, escaped, hex packed and spaced, `\x..`, byte lists), plus the same for
/// its Habitat-escaped bytes (as they travel inside a frame payload) and for the ESP
/// `ESP:` prefix form. The Q-Link nibble encoding applies to the CRC only, never to
/// payload bytes, so it has no form of its own.
fn forms(secret: &str) -> Vec<String> {
    let mut out = leak_forms(secret.as_bytes());
    let escaped = habitat::escape(secret.as_bytes());
    if escaped != secret.as_bytes() {
        out.extend(leak_forms(&escaped));
    }
    // A tail long enough to be unique: a line cut at a buffer boundary would still show it.
    let tail = &secret[secret.len() / 2..];
    out.extend(
        leak_forms(tail.as_bytes())
            .into_iter()
            .filter(|f| f.len() >= 8),
    );
    out.sort();
    out.dedup();
    out
}

fn assert_no_leak(what: &str, log: &str, canaries: &Canaries) {
    let lower = log.to_lowercase();
    for (name, secret) in canaries.all() {
        for form in forms(secret) {
            let hit = log.contains(&form) || lower.contains(&form.to_lowercase());
            assert!(
                !hit,
                "{name} reached the {what} as {form:?}; lines:\n{}",
                log.lines()
                    .filter(|l| l.to_lowercase().contains(&form.to_lowercase()))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// The lines that must be there: packets in and out by length and fingerprint, and the
/// avatar names (in the session span).
fn assert_structure(what: &str, log: &str) {
    let packet_line = |dir: &str| {
        log.lines().any(|l| {
            l.contains(&format!("pkt=dir={dir} cmd=Action"))
                && l.contains(" len=")
                && has_fingerprint(l)
        })
    };
    assert!(
        packet_line("in"),
        "no inbound packet line in the {what}:\n{log}"
    );
    assert!(
        packet_line("out"),
        "no outbound packet line in the {what}:\n{log}"
    );
    for name in ["Alice", "Bob", "Carol"] {
        assert!(
            log.lines().any(|l| l.contains(&format!("avatar={name}"))
                || l.contains(&format!("avatar=\"{name}\""))),
            "avatar name {name} not in the {what}:\n{log}"
        );
    }
    // Issue 10 L2 (ESPMAIL.md §5): a line about one ESP Mail names one avatar (the
    // session's), with no length, no row id and no recipient, so no line says who wrote
    // to whom.
    for line in log
        .lines()
        .filter(|l| l.contains("ESP Mail saved") || l.contains("ESP Mail committed"))
    {
        assert!(
            !line.contains("to=") && !line.contains("len=") && !line.contains(" id="),
            "{line}"
        );
        let named = ["Alice", "Bob", "Carol"]
            .iter()
            .filter(|n| line.contains(*n))
            .count();
        assert!(named <= 1, "two avatars in one line: {line}");
    }
    for event in [
        "login line read",
        "entered the Plaza",
        ": speak len=",
        ": esp len=",
        "ESP Mail saved",
        "delivering ESP Mail",
        "delivered ESP Mail acked and deleted",
    ] {
        assert!(
            log.contains(event),
            "no {event:?} line in the {what}:\n{log}"
        );
    }
}

/// Whether a line carries `fp=` followed by 8 hex digits.
fn has_fingerprint(line: &str) -> bool {
    line.match_indices("fp=").any(|(i, _)| {
        let fp = line.get(i + 3..i + 11).unwrap_or("");
        fp.len() == 8 && fp.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

fn texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e.text())
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .collect()
}

/// Answers the next prompt, which must be `expected`, with `typed`.
async fn answer_prompt(c: &mut Client, expected: &str, typed: &str) {
    let p = c.wait_for(|e| matches!(e, Event::Prompt(_))).await.unwrap();
    assert_eq!(p.text().unwrap(), expected.as_bytes());
    c.answer(expected.as_bytes(), typed.as_bytes())
        .await
        .unwrap();
}

/// Logs in without a password in the login line and answers the in-world prompts; for a
/// new name that is choosing the password twice. Returns the client, in the Plaza, and
/// every event it saw after its own APPEAR up to the end of `until` (a text).
async fn enter_at_prompt(
    server: &TestServer,
    name: &str,
    pw: &str,
    new: bool,
    until: &str,
) -> (Client, Vec<Event>) {
    let mut c = Client::connect(&server.host(), name, None).await.unwrap();
    c.im_alive().await.unwrap();
    c.describe().await.unwrap();
    c.here_i_am().await.unwrap();
    if new {
        answer_prompt(&mut c, "New avatar. Choose a password: ", pw).await;
        answer_prompt(&mut c, "Again: ", pw).await;
    } else {
        answer_prompt(&mut c, "Password: ", pw).await;
    }
    let needle = until.as_bytes().to_vec();
    let seen = c
        .collect_until(|e| e.text().is_some_and(|t| contains_bytes(t, &needle)))
        .await
        .unwrap();
    (c, seen)
}

async fn leave(mut c: Client) {
    c.quit().await.unwrap();
    c.wait_closed().await.unwrap();
}

/// Everything the canary runs do, with debug logging on throughout.
async fn drive(server: &TestServer, k: &Canaries) {
    // Alice and Bob register with the password in the login line.
    let mut alice = Client::enter(&server.host(), "Alice", Some(&k.alice_pw))
        .await
        .unwrap();
    alice.wait_text(DEBUG_NOTICE).await.unwrap();
    let bob = Client::enter(&server.host(), "Bob", Some(&k.bob_pw))
        .await
        .unwrap();
    leave(bob).await;

    // Carol is new and chooses her password in-world; she lands in the Plaza told that
    // debug logging is on.
    let (mut carol, seen) = enter_at_prompt(server, "Carol", &k.carol_pw, true, DEBUG_NOTICE).await;
    assert!(texts(&seen).iter().any(|t| t == DEBUG_NOTICE), "{seen:?}");

    // Bob comes back, typing his password at the prompt.
    let (mut bob, _) = enter_at_prompt(server, "Bob", &k.bob_pw, false, DEBUG_NOTICE).await;

    // Chat: Alice speaks, Bob and Carol hear it.
    assert!(!alice.speak(k.chat.as_bytes()).await.unwrap());
    bob.wait_text(&k.chat).await.unwrap();
    carol.wait_text(&k.chat).await.unwrap();

    // Live ESP from Alice to Bob.
    assert!(alice.speak(b"TO:Bob").await.unwrap(), "ESP mode on");
    assert!(alice.esp(k.esp.as_bytes()).await.unwrap());
    bob.wait_text(&k.esp).await.unwrap();

    // Bob leaves; Alice's next ESP to him is offered as ESP Mail and saved.
    // Closed by the server only after it took Bob out of the Plaza.
    leave(bob).await;
    assert!(alice.speak(b"TO:Bob").await.unwrap());
    alice
        .wait_text("Bob is offline. Your ESP will be offered as ESP Mail.")
        .await
        .unwrap();
    assert!(!alice.esp(k.mail.as_bytes()).await.unwrap());
    answer_prompt(&mut alice, "ESP Mail to Bob? (Y/N) ", "Y").await;
    alice.wait_text("ESP Mail for Bob saved.").await.unwrap();

    // Bob's next login, at the prompt again: the notice, then his mail, acked and deleted.
    let (bob, seen) = enter_at_prompt(server, "Bob", &k.bob_pw, false, &k.mail).await;
    let lines = texts(&seen);
    let notice = lines.iter().position(|l| l == DEBUG_NOTICE);
    let count = lines
        .iter()
        .position(|l| l == "You have 1 ESP Mail (times UTC).");
    assert!(
        notice.is_some() && count.is_some() && notice < count,
        "{lines:?}"
    );
    server.wait_for_log("delivered ESP Mail acked and deleted");
    leave(bob).await;
    leave(carol).await;
    leave(alice).await;
}

/// A config that logs at `level`, also into `log_file`.
/// The real server on `dir/data`, logging at `level` to stderr and to `dir/espmail.log`
/// (returned: the file is searched too).
fn start_logging(dir: &Path, level: &str) -> (TestServer, PathBuf) {
    let log_file = dir.join("espmail.log");
    let cfg = dir.join("espmail.toml");
    std::fs::write(
        &cfg,
        format!(
            "[logging]\nlevel = \"{level}\"\nfile = \"{}\"\n",
            log_file.display()
        ),
    )
    .unwrap();
    let server = TestServer::start_in(&dir.join("data"), &["--config", cfg.to_str().unwrap()]);
    (server, log_file)
}

/// Stops the server (SIGTERM, so everything is flushed) and returns stderr and the log
/// file, after checking the file is owner-only.
fn stop_and_collect(mut server: TestServer, log_file: &Path) -> (String, String) {
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let stderr = server.log();
    let mode = std::fs::metadata(log_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "log file mode");
    let file = String::from_utf8_lossy(&std::fs::read(log_file).unwrap()).into_owned();
    (stderr, file)
}

/// One run with fresh [`Canaries`]: [`drive`], stop, and check stderr and the log file
/// for leaks and for the structural lines. Returns (stderr, file) for the run's own
/// checks.
async fn drive_stop_and_check(server: TestServer, log_file: &Path) -> (String, String) {
    let k = Canaries::new();
    drive(&server, &k).await;
    let (stderr, file) = stop_and_collect(server, log_file);
    for (what, log) in [("stderr", &stderr), ("log file", &file)] {
        assert_no_leak(what, log, &k);
        assert_structure(what, log);
    }
    (stderr, file)
}

#[bounded]
#[tokio::test]
async fn trace_for_everything_logs_structure_and_never_a_canary() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, log_file) = start_logging(tmp.path(), "trace");
    let (stderr, file) = drive_stop_and_check(server, &log_file).await;

    for (what, log) in [("stderr", &stderr), ("log file", &file)] {
        // At trace the Habitat layer is shown too, by its numbers.
        assert!(
            log.lines().any(|l| l.contains("hab=dir=in noid=")
                && l.contains(" req=")
                && has_fingerprint(l)),
            "no Habitat packet line in the {what}"
        );
        assert!(
            log.lines().any(|l| l.contains("hab=dir=out noid=")),
            "no outbound Habitat packet line in the {what}"
        );
    }
    // The file holds what stderr held (one subscriber writes both).
    assert!(file.contains("delivered ESP Mail acked and deleted"));
}

#[bounded]
#[tokio::test]
async fn debug_switched_on_through_the_admin_socket_never_logs_a_canary() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, log_file) = start_logging(tmp.path(), "info");
    // Nothing at debug yet: no packet lines before the switch.
    let mut early = Client::enter(&server.host(), "Early", Some("early-password"))
        .await
        .unwrap();
    assert_eq!(server.log_count("pkt=dir="), 0, "{}", server.log());

    let (code, out, err) = server.cli(&["admin", "debug", "on"], "");
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("debug logging is on"), "{out}");
    early.wait_text(DEBUG_NOTICE).await.unwrap();
    let uid = std::fs::metadata(&server.data_dir)
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    let switch = server.wait_for_log("action=\"debug on\"");
    assert!(switch.contains(&format!("who=\"uid={uid}\"")), "{switch}");
    leave(early).await;

    let (stderr, file) = drive_stop_and_check(server, &log_file).await;
    for (what, log) in [("stderr", &stderr), ("log file", &file)] {
        assert!(log.contains(&format!("who=\"uid={uid}\"")), "{what}");
        // Debug, not trace: the Habitat layer lines stay out.
        assert!(
            !log.contains("hab=dir="),
            "trace lines at debug in the {what}"
        );
    }
}

/// The session number (`conn=N` of the session span) a log line belongs to.
fn conn_of(line: &str) -> Option<u64> {
    let at = line.find(" conn=")? + " conn=".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Every fingerprint (`fp=` and 8 hex digits) on a line.
fn fingerprints(line: &str) -> Vec<String> {
    line.match_indices("fp=")
        .filter_map(|(i, _)| line.get(i + 3..i + 11))
        .filter(|fp| fp.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .collect()
}

/// The connection numbers of the sessions whose span names `avatar`.
fn sessions_of(log: &str, avatar: &str) -> Vec<u64> {
    let mut conns: Vec<u64> = log
        .lines()
        .filter(|l| {
            l.contains(&format!("avatar={avatar}")) || l.contains(&format!("avatar=\"{avatar}\""))
        })
        .filter_map(conn_of)
        .collect();
    conns.sort_unstable();
    conns.dedup();
    conns
}

/// Every fingerprint logged by session `conn`.
fn fingerprints_of(log: &str, conn: u64) -> Vec<String> {
    log.lines()
        .filter(|l| conn_of(l) == Some(conn))
        .flat_map(fingerprints)
        .collect()
}

/// The fingerprint on session `conn`'s `: speak len=` line.
fn speak_fingerprint(log: &str, conn: u64) -> String {
    let line = log
        .lines()
        .find(|l| conn_of(l) == Some(conn) && l.contains(": speak len="))
        .unwrap_or_else(|| panic!("no speak line in session {conn}:\n{log}"));
    fingerprints(line)
        .pop()
        .expect("a speak line has a fingerprint")
}

/// Inbound Action lines of session `conn` that carry no fingerprint (prompt replies).
fn unfingerprinted_actions(log: &str, conn: u64) -> usize {
    log.lines()
        .filter(|l| conn_of(l) == Some(conn) && l.contains("pkt=dir=in cmd=Action"))
        .filter(|l| fingerprints(l).is_empty())
        .count()
}

/// Issue 10, M5: fingerprints cannot confirm a guess. The same text said in two sessions
/// shows two fingerprints; a password typed at the in-world prompt shows none at all, so
/// another player who says the same bytes, or sends them as a prompt reply of their own,
/// finds nothing in the log to compare with; and no canary reaches the log in any form.
#[bounded]
#[tokio::test]
async fn fingerprints_are_per_session_and_a_typed_password_has_none() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(&tmp.path().join("data"), &["-d"]);
    let k = Canaries::new();
    // Carol's password exists before she types it in-world.
    let carol = Client::enter(&server.host(), "Carol", Some(&k.carol_pw))
        .await
        .unwrap();
    leave(carol).await;

    // Alice and Bob say the same words, each in a session of their own.
    let mut alice = Client::enter(&server.host(), "Alice", Some(&k.alice_pw))
        .await
        .unwrap();
    let mut bob = Client::enter(&server.host(), "Bob", Some(&k.bob_pw))
        .await
        .unwrap();
    assert!(!alice.speak(k.chat.as_bytes()).await.unwrap());
    assert!(!bob.speak(k.chat.as_bytes()).await.unwrap());

    // Carol types her password at the prompt; Mallory then tries it as speech and as a
    // prompt reply nobody asked for.
    let (carol, _) = enter_at_prompt(&server, "Carol", &k.carol_pw, false, DEBUG_NOTICE).await;
    let mut mallory = Client::enter(&server.host(), "Mallory", Some("mallory-password"))
        .await
        .unwrap();
    assert!(!mallory.speak(k.carol_pw.as_bytes()).await.unwrap());
    mallory
        .answer(b"Password: ", k.carol_pw.as_bytes())
        .await
        .unwrap();
    // Handled in order: the reply to this SPEAK comes after the prompt reply was read.
    assert!(!mallory.speak(b"done").await.unwrap());
    for c in [alice, bob, carol, mallory] {
        leave(c).await;
    }
    let mut server = server;
    server.signal("TERM");
    assert!(server.wait_exit().success());
    let log = server.log();

    assert_no_leak("log", &log, &k);
    let [a] = sessions_of(&log, "Alice")[..] else {
        panic!("one session of Alice:\n{log}")
    };
    let [b] = sessions_of(&log, "Bob")[..] else {
        panic!("one session of Bob:\n{log}")
    };
    assert_ne!(
        speak_fingerprint(&log, a),
        speak_fingerprint(&log, b),
        "the same words show the same fingerprint in two sessions"
    );
    let carols = sessions_of(&log, "Carol");
    assert_eq!(carols.len(), 2, "{log}");
    let [m] = sessions_of(&log, "Mallory")[..] else {
        panic!("one session of Mallory:\n{log}")
    };
    let mallory_fps = fingerprints_of(&log, m);
    assert!(mallory_fps.len() > 5, "Mallory's session is fingerprinted");
    for c in carols {
        let carol_fps = fingerprints_of(&log, c);
        assert!(!carol_fps.is_empty(), "Carol's session is fingerprinted");
        let common: Vec<&String> = carol_fps
            .iter()
            .filter(|fp| mallory_fps.contains(fp))
            .collect();
        assert!(
            common.is_empty(),
            "Carol's session and Mallory's share fingerprints {common:?}"
        );
    }
    // The typed password and Mallory's unsolicited reply: logged by length only.
    assert_eq!(unfingerprinted_actions(&log, carols_last(&log)), 1, "{log}");
    assert_eq!(unfingerprinted_actions(&log, m), 1, "{log}");
    assert!(!log.contains("prompt reply"), "{log}");
}

/// Carol's second session: the one that typed the password in-world.
fn carols_last(log: &str) -> u64 {
    *sessions_of(log, "Carol").last().unwrap()
}
