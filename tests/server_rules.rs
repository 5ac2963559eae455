//! Issue 7's remaining rules against the real binary: the trusted auth mode end to end
//! (a front end allowed, another address refused and never given mail), requests on
//! noids the avatar does not own, and the outbound rate cap actually pacing bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use espmail_test_macros::bounded;
use std::time::{Duration, Instant};

use common::{contains_bytes, leave_esp_mail, trusted_config, TestServer, FRONT_END_SECRET};
use espmail::log_redact::Sensitive;
use espmail::protocol::messages::ClientRequest;
use espmail::talk::{Client, ClientError, Event};
use tokio::io::AsyncWriteExt;

/// A Habilink login line (no password, as a trusted front end sends it, with its secret)
/// from `source`.
async fn connect_from(source: &str, server: &TestServer, name: &str) -> Client {
    connect_with(source, server, name, Some(FRONT_END_SECRET)).await
}

/// A login line from `source` with this front-end secret, or none.
async fn connect_with(
    source: &str,
    server: &TestServer,
    name: &str,
    secret: Option<&str>,
) -> Client {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let mut line = serde_json::json!({"to": "bridge", "op": "LOGIN", "name": name});
    if let Some(s) = secret {
        line["front_end_secret"] = serde_json::Value::from(s);
    }
    let mut bytes = line.to_string().into_bytes();
    bytes.extend_from_slice(b"\r\r");
    stream.write_all(&bytes).await.unwrap();
    Client::from_stream(stream)
}

#[bounded]
#[tokio::test]
async fn trusted_mode_believes_the_listed_front_end_and_refuses_any_other_address() {
    // 127.0.0.2 is loopback too (Linux routes all of 127/8 locally), but not listed.
    let server = TestServer::start_with_config(&trusted_config(&["127.0.0.1"]), &[]);

    // Through the trusted front end: no password needed; Alice mails the offline Bob.
    let mut bob = connect_from("127.0.0.1", &server, "Bob").await;
    bob.im_alive().await.unwrap();
    bob.describe().await.unwrap();
    bob.here_i_am().await.unwrap();
    bob.quit().await.unwrap();
    bob.wait_closed().await.unwrap();
    let mut alice = connect_from("127.0.0.1", &server, "Alice").await;
    alice.im_alive().await.unwrap();
    alice.describe().await.unwrap();
    alice.here_i_am().await.unwrap();
    leave_esp_mail(&mut alice, "Bob", b"trusted-mail-5e1").await;

    // Another address claiming to be Bob: refused at IM_ALIVE, closed, and no mail.
    let mut fake = connect_from("127.0.0.2", &server, "Bob").await;
    match fake.im_alive().await {
        Err(ClientError::Refused(text)) => assert_eq!(text, "Wrong name or password."),
        other => panic!("untrusted peer not refused: {other:?}"),
    }
    fake.wait_closed().await.unwrap();
    let mut rest = Vec::new();
    while let Ok(e) = fake.next_event().await {
        rest.push(e);
    }
    assert!(
        !rest
            .iter()
            .any(|e| e.text().is_some_and(|t| contains_bytes(t, b"trusted-mail"))),
        "mail reached an untrusted connection: {rest:?}"
    );
    server.wait_for_log("login refused");

    // The real Bob, through the front end, gets it.
    let mut bob = connect_from("127.0.0.1", &server, "Bob").await;
    bob.im_alive().await.unwrap();
    bob.describe().await.unwrap();
    bob.here_i_am().await.unwrap();
    bob.wait_for(|e| e.text() == Some(b"trusted-mail-5e1"))
        .await
        .unwrap();
    server.wait_for_log("delivered ESP Mail acked and deleted");
}

/// Issue 10 M8: an address is not proof enough. Another process on the front end's host
/// (same address, no secret or a wrong one) is refused, and so is a front end naming an
/// avatar that has a password, unless the operator allows it.
#[bounded]
#[tokio::test]
async fn a_trusted_host_is_not_enough_without_the_front_ends_secret() {
    let server = TestServer::start_with_config(&trusted_config(&["127.0.0.1"]), &[]);
    for secret in [None, Some("a-guessed-secret-123")] {
        let mut eve = connect_with("127.0.0.1", &server, "Bob", secret).await;
        match eve.im_alive().await {
            Err(ClientError::Refused(text)) => assert_eq!(text, "Wrong name or password."),
            other => panic!("a login without the secret was believed: {other:?}"),
        }
    }
    server.wait_for_log_count(
        "trusted login refused: the login line from a trusted address",
        2,
    );
    assert!(
        !server.log().contains("a-guessed-secret-123"),
        "a secret reached the log"
    );

    // Carol has a password (made by the operator): the front end cannot log her in...
    let (code, out, err) = server.cli(&["account", "add", "Carol"], "carols-password\n");
    assert_eq!(code, 0, "{out} {err}");
    let mut carol = connect_from("127.0.0.1", &server, "Carol").await;
    assert!(matches!(
        carol.im_alive().await,
        Err(ClientError::Refused(_))
    ));
    server.wait_for_log("trusted login refused: this avatar has a password");
    // ...unless the operator says it may.
    let allowed = TestServer::start_with_config(
        &format!(
            "{}trusted_password_avatars = true\n",
            trusted_config(&["127.0.0.1"])
        ),
        &[],
    );
    let (code, out, err) = allowed.cli(&["account", "add", "Carol"], "carols-password\n");
    assert_eq!(code, 0, "{out} {err}");
    let mut carol = connect_from("127.0.0.1", &allowed, "Carol").await;
    carol.im_alive().await.unwrap();
}

#[test]
fn trusted_mode_without_a_secret_file_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("espmail.toml");
    std::fs::write(
        &cfg,
        "[auth]\nmode = \"trusted\"\ntrusted_peers = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_espmail"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.trusted_secret_file"), "{err}");
    assert!(err.contains("openssl rand -hex 32"), "{err}");
    assert!(!tmp.path().join("data").exists(), "nothing was created");
}

#[bounded]
#[tokio::test]
async fn requests_on_another_avatars_noid_are_ignored() {
    let server = TestServer::start(&[]);
    let mut bob = Client::enter(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();
    let mut eve = Client::enter(&server.host(), "Eve", Some("eve-password"))
        .await
        .unwrap();
    assert_ne!(bob.me, eve.me);

    // Eve speaks and ESPs "as Bob" (on his noid): nothing happens for anyone.
    let bob_noid = bob.me;
    eve.request(
        bob_noid,
        ClientRequest::Speak {
            audience: 0,
            text: Sensitive::new(b"forged words".to_vec()),
        },
    )
    .await
    .unwrap();
    eve.request(
        bob_noid,
        ClientRequest::Esp {
            audience: 0,
            text: Sensitive::new(b"ESP:forged esp".to_vec()),
        },
    )
    .await
    .unwrap();
    // Then on her own noid: this one Bob hears, from her.
    assert!(!eve.speak(b"honest words").await.unwrap());
    let seen = bob
        .collect_until(|e| matches!(e, Event::Speak { text, .. } if text == b"honest words"))
        .await
        .unwrap();
    assert!(
        matches!(seen.last(), Some(Event::Speak { noid, .. }) if *noid == eve.me),
        "{seen:?}"
    );
    assert!(
        !seen
            .iter()
            .any(|e| e.text().is_some_and(|t| contains_bytes(t, b"forged"))),
        "a forged request reached Bob: {seen:?}"
    );
    // Counted as bad input: the first named, both in the summary when Eve leaves.
    server.wait_for_log("kind=not_owned");
    eve.quit().await.unwrap();
    eve.wait_closed().await.unwrap();
    let summary = server.wait_for_log("bad input this session");
    assert!(summary.contains("not_owned=2"), "{summary}");
}

#[bounded]
#[tokio::test]
async fn the_outbound_rate_cap_spaces_the_bytes() {
    const RATE: f64 = 50.0; // bytes a second, far below a C64 modem, so it shows
    let server = TestServer::start_with_config("[server]\nrate_limit_bytes_per_sec = 50\n", &[]);
    let mut bob = Client::connect(&server.host(), "Bob", Some("bob-password"))
        .await
        .unwrap();
    bob.wait = Duration::from_secs(60);
    bob.im_alive().await.unwrap();

    // The DESCRIBE reply and then the APPEAR go out through the cap: the APPEAR cannot
    // leave before the reply's bytes have, at RATE. Counted low: the vector plus its
    // 4-byte Habitat header, no Q-Link framing or escapes.
    let asked = Instant::now();
    let vector = bob.describe().await.unwrap();
    bob.here_i_am().await.unwrap();
    let took = asked.elapsed();
    let floor = Duration::from_secs_f64((vector.len() + 4) as f64 / RATE);
    assert!(
        took >= floor,
        "{} bytes at {RATE} B/s need {floor:?}, took {took:?}",
        vector.len() + 4
    );
}
