//! `espmail talk` driven like a person at a terminal: each line is typed only once the
//! server's answer to the previous one is on the screen.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};

use common::{TestServer, WAIT};

struct Talk {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Talk {
    fn start(server: &TestServer, name: &str, password: &str) -> Talk {
        let mut child = Command::new(env!("CARGO_BIN_EXE_espmail"))
            .args(["talk", &server.host(), "--name", name])
            .env("ESPMAIL_PASSWORD", password)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Talk {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a screen line containing `needle`.
    fn expect(&mut self, needle: &str) {
        loop {
            match self.lines.recv_timeout(WAIT) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "talk never showed {needle:?}; screen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Talk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_five_minute_tour_works_with_the_text_client() {
    let server = TestServer::start(&[]);
    // Bob registers, then leaves.
    let mut bob = Talk::start(&server, "Bob", "bob-password");
    bob.expect("-- in the Plaza as Bob");
    drop(bob);
    server.wait_for_log("disconnected");

    let mut alice = Talk::start(&server, "Alice", "alice-password");
    alice.expect("-- in the Plaza as Alice");
    alice.type_line("TO:Bob");
    alice.expect("Bob is offline. Your ESP will be offered as ESP Mail.");
    alice.expect("-- ESP mode on");
    alice.type_line("see you at the fountain");
    alice.expect("?? ESP Mail to Bob? (Y/N)");
    alice.type_line("Y");
    alice.expect("ESP Mail for Bob saved.");

    let mut bob = Talk::start(&server, "Bob", "bob-password");
    bob.expect("You have 1 ESP Mail (times UTC).");
    bob.expect("ESP Mail from Alice, ");
    bob.expect("see you at the fountain");
    server.wait_for_log("delivered ESP Mail acked and deleted");
}
