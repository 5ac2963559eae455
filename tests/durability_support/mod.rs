//! Protocol steps shared by the durability tests (tests/durability_*.rs): offer an ESP
//! Mail and answer the prompt, and read a whole mailbox the way a player would.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

use std::collections::VecDeque;

use espmail::log_redact::Sensitive;
use espmail::protocol::messages::ClientRequest;
use espmail::talk::{Client, ClientError, Event};

/// The line after HERE_I_AM that says how much mail waits.
fn waiting_count(t: &[u8]) -> Option<usize> {
    let t = String::from_utf8_lossy(t);
    let n = t
        .strip_prefix("You have ")?
        .strip_suffix(" ESP Mail (times UTC).")?;
    n.parse().ok()
}

/// `from` (already in the Plaza) offers `text` to the offline `to` and answers `Y`;
/// returns the server's answer line ("ESP Mail for NAME saved." or a refusal).
pub async fn offer(c: &mut Client, to: &str, text: &str) -> Result<String, String> {
    let e = |e: ClientError| e.to_string();
    c.speak(format!("TO:{to}").as_bytes()).await.map_err(e)?;
    c.wait_text(&format!(
        "{to} is offline. Your ESP will be offered as ESP Mail."
    ))
    .await
    .map_err(e)?;
    c.esp(text.as_bytes()).await.map_err(e)?;
    let prompt = c
        .wait_for(|ev| matches!(ev, Event::Prompt(_)))
        .await
        .map_err(e)?;
    let prompt = prompt.text().unwrap_or_default().to_vec();
    if prompt != format!("ESP Mail to {to}? (Y/N) ").as_bytes() {
        return Err(format!(
            "unexpected prompt {:?}",
            String::from_utf8_lossy(&prompt)
        ));
    }
    answer_y(c, &prompt).await.map_err(e)
}

/// Answers `prompt` with `Y` and returns the server's "ESP Mail …" line that follows.
async fn answer_y(c: &mut Client, prompt: &[u8]) -> Result<String, ClientError> {
    c.answer(prompt, b"Y").await?;
    let answer = c
        .wait_for(
            |ev| matches!(ev, Event::Talk { speaker: 0, text } if text.starts_with(b"ESP Mail")),
        )
        .await?;
    Ok(String::from_utf8_lossy(answer.text().unwrap_or_default()).into_owned())
}

/// Everything said up to the reply to a SPEAK (the first mail lines come before it).
pub async fn probe(c: &mut Client) -> Result<Vec<Event>, ClientError> {
    let me = c.me;
    c.request(
        me,
        ClientRequest::Speak {
            audience: 0,
            text: Sensitive::new(b"probe".to_vec()),
        },
    )
    .await?;
    c.collect_until(|e| matches!(e, Event::Reply { noid, .. } if *noid == me))
        .await
}

/// Logs `name` in (trusted mode: no password) and reads every waiting message, answering
/// `Y` to each "Next ESP Mail" prompt. Returns (sender in the header, text) in delivery
/// order. The client acks everything, so the server deletes what it delivered.
pub async fn read_all(host: &str, name: &str) -> Vec<(String, String)> {
    let mut c = enter(host, name).await.unwrap();
    let mut pending: VecDeque<Event> = probe(&mut c).await.unwrap().into();
    let waiting = pending
        .iter()
        .filter_map(|e| e.text())
        .find_map(waiting_count)
        .unwrap_or(0);
    let mut out = Vec::new();
    let mut header: Option<String> = None;
    while out.len() < waiting {
        let e = match pending.pop_front() {
            Some(e) => e,
            None => c.next_event().await.unwrap(),
        };
        match &e {
            Event::Talk { speaker: 0, text } => {
                let t = String::from_utf8_lossy(text).into_owned();
                if let Some(from) = header.take() {
                    out.push((from, t));
                } else if let Some(rest) = t.strip_prefix("ESP Mail from ") {
                    header = Some(rest.split(", ").next().unwrap_or_default().to_string());
                }
            }
            Event::Prompt(p) if p.starts_with(b"Next ESP Mail (") => {
                let p = p.clone();
                c.answer(&p, b"Y").await.unwrap();
            }
            _ => {}
        }
    }
    // A round trip after the last line: the client has read (and acked) the Ping that
    // follows it, so the server deletes the last message too.
    probe(&mut c).await.unwrap();
    c.quit().await.unwrap();
    c.wait_closed().await.unwrap();
    out
}

/// `name` logs in through the trusted front end (its secret in the login line), all the
/// way into the Plaza.
pub async fn enter(host: &str, name: &str) -> Result<Client, ClientError> {
    Client::enter_via_front_end(host, name, crate::common::FRONT_END_SECRET).await
}

/// Logs in, and out again (trusted mode creates the avatar on first sight).
pub async fn visit(host: &str, name: &str) {
    let mut c = enter(host, name).await.unwrap();
    c.quit().await.unwrap();
    c.wait_closed().await.unwrap();
}

/// `PRAGMA integrity_check` on a read-only connection (the server is stopped).
pub fn integrity_check(db: &std::path::Path) -> String {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap()
}

/// Trusted front end on 127.0.0.1 (no scrypt per login) and mail limits high enough that
/// no refusal other than the one under test can happen. (`TestServer::start_with_config`
/// writes the secret file; [`enter`] sends the secret.)
pub const CONFIG: &str = r#"
[auth]
mode = "trusted"
trusted_peers = ["127.0.0.1"]
trusted_secret_file = "@FRONT_END_SECRET_FILE@"

[mail]
max_per_recipient = 100000
max_per_sender = 100000
send_rate_per_minute = 100000
"#;
